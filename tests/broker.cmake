# broker (issue 4): real mlq-broker and mlq-trainer processes on ipc:// endpoints.
set(MLQ_BROKER_TEST_LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5)
mlq_add_test(test_broker SOURCES test_broker.c broker_harness.c
             LIBS ${MLQ_BROKER_TEST_LIBS} TIMEOUT 300)
mlq_add_test(test_broker_faults SOURCES test_broker_faults.c broker_harness.c
             LIBS ${MLQ_BROKER_TEST_LIBS} TIMEOUT 300)
# The tests run the programs: build them first.
add_dependencies(test_broker mlq-broker mlq-trainer mlq)
add_dependencies(test_broker_faults mlq-broker mlq-trainer mlq)
