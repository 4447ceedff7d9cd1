# store (issue 3): the API, the kill-the-writer test, the history commands' output.
mlq_add_test(test_store SOURCES test_store.c LIBS mlq_store PkgConfig::SQLITE TIMEOUT 120)
mlq_add_test(test_store_crash SOURCES test_store_crash.c LIBS mlq_store PkgConfig::SQLITE
             TIMEOUT 120)
