# The wire protocol's receiving side (common/proto.c).
mlq_add_test(test_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_proto.c
  LIBS mlq_common PkgConfig::ZMQ Threads::Threads TIMEOUT 60)
