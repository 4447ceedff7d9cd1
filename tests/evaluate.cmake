# Eval and predict jobs (trainer/evaluate.h): trains a toy network, then checks metrics and outputs.
mlq_add_test(test_evaluate SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_evaluate.c
             LIBS mlq_runner PkgConfig::HDF5 PkgConfig::JANSSON TIMEOUT 120)
