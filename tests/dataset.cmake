# The dataset reader and `mlq dataset` (the CLI cases run the built mlq).
mlq_add_test(test_dataset SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_dataset.c
  LIBS mlq_dataset PkgConfig::HDF5 PkgConfig::ZLIB PkgConfig::JANSSON TIMEOUT 120)
add_dependencies(test_dataset mlq)
