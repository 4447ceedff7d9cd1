# The training fast paths (stored gradients, fused SGD, threads, background
# task, uint8 scaling) against the plain paths they replace.
mlq_add_test(test_net_paths SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_net_paths.c
  LIBS mlq_engine mlq_spec_model mlq_dataset mlq_testutil PkgConfig::HDF5)
