# One broker per database (issue 9): two real mlq-broker processes on one file.
mlq_add_test(test_broker_lock SOURCES test_broker_lock.c broker_harness.c
             LIBS mlq_broker_lib mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
             TIMEOUT 300)
add_dependencies(test_broker_lock mlq-broker mlq-trainer mlq)
