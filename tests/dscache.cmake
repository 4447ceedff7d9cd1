# The trainer's dataset cache and its fetch against a fake broker (issue 16).
mlq_add_test(test_dscache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dscache.c
             LIBS mlq_dscache mlq_common mlq_testutil TIMEOUT 60)
mlq_add_test(test_fetch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fetch.c
             LIBS mlq_dscache mlq_common mlq_testutil PkgConfig::ZMQ TIMEOUT 120)
