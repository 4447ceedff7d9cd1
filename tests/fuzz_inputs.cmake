# Inputs the fuzz targets (tests/fuzz) found, replayed through mlq's readers.
mlq_add_test(test_fuzz_inputs SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fuzz_inputs.c
  LIBS mlq_dataset mlq_checkpoint mlq_testutil PkgConfig::ZLIB TIMEOUT 120)
add_dependencies(test_fuzz_inputs mlq)
