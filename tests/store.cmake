# store (issue 3): the API, the kill-the-writer test, the history commands' output.
mlq_add_test(test_store SOURCES test_store.c LIBS mlq_store PkgConfig::SQLITE TIMEOUT 120)
mlq_add_test(test_store_crash SOURCES test_store_crash.c LIBS mlq_store PkgConfig::SQLITE
             TIMEOUT 120)
# Runs the built mlq against a database filled through the store API.
mlq_add_test(test_store_cli SOURCES test_store_cli.c
             LIBS mlq_store mlq_checkpoint PkgConfig::SQLITE PkgConfig::HDF5 PkgConfig::JANSSON
             TIMEOUT 120)
add_dependencies(test_store_cli mlq)
