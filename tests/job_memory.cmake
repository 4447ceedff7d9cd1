# A job's memory is bounded (issue 9, defect 5): the estimate against the
# engine's allocations, and real trainers refusing what exceeds their limit.
mlq_add_test(test_job_memory SOURCES test_job_memory.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common mlq_testutil PkgConfig::ZMQ PkgConfig::HDF5
             TIMEOUT 240)
add_dependencies(test_job_memory mlq-broker mlq-trainer mlq)
