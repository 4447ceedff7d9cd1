# The importers of mlq dataset (cli/import.c) on hostile files.
mlq_add_test(test_import SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_import.c
  LIBS mlq_import mlq_testutil PkgConfig::ZLIB TIMEOUT 60)
add_dependencies(test_import mlq)
