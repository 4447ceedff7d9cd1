mlq_add_test(test_spec SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_spec.c LIBS mlq_common)
