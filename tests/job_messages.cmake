# What jobs report about odd checkpoints (issue 9, defect 8): real broker and trainers.
mlq_add_test(test_job_messages SOURCES test_job_messages.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5 TIMEOUT 180)
add_dependencies(test_job_messages mlq-broker mlq-trainer mlq)
