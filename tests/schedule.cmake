# Learning-rate schedules: PyTorch parity (tests/parity/schedule_fixtures.json,
# regenerate with gen_schedule_fixtures.py), spec validation, early stopping
# and exact resume through the training loop.
mlq_add_test(test_schedule SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_schedule.c
             LIBS mlq_schedule mlq_common)
# The same through real mlq-broker and mlq-trainer processes and mlq submit.
mlq_add_test(test_broker_schedule SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_broker_schedule.c
             ${CMAKE_CURRENT_LIST_DIR}/broker_harness.c
             LIBS mlq_schedule mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
             TIMEOUT 300)
add_dependencies(test_broker_schedule mlq-broker mlq-trainer mlq)
