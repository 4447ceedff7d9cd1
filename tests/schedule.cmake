# Learning-rate schedules: PyTorch parity (tests/parity/schedule_fixtures.json,
# regenerate with gen_schedule_fixtures.py), spec validation, early stopping
# and exact resume through the training loop.
mlq_add_test(test_schedule SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_schedule.c
             LIBS mlq_schedule mlq_common)
