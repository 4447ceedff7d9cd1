# The trainer's dataset cache and its fetch against a fake broker (issue 16).
mlq_add_test(test_dscache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dscache.c
             LIBS mlq_dscache mlq_common mlq_testutil TIMEOUT 60)
mlq_add_test(test_fetch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fetch.c ${CMAKE_CURRENT_LIST_DIR}/fake_broker.c
             LIBS mlq_dscache mlq_common mlq_testutil PkgConfig::ZMQ TIMEOUT 120)
# A real mlq-trainer against a fake broker that injects faults.
mlq_add_test(test_trainer_fetch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_trainer_fetch.c
             ${CMAKE_CURRENT_LIST_DIR}/broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5 TIMEOUT 180)
add_dependencies(test_trainer_fetch mlq-trainer mlq-broker mlq)
# A predict output's upload against a fake broker that injects faults.
mlq_add_test(test_upload SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_upload.c ${CMAKE_CURRENT_LIST_DIR}/fake_broker.c
             LIBS mlq_dscache mlq_common mlq_testutil PkgConfig::ZMQ TIMEOUT 60)
