# Serving (issue 13): deploy, infer, rollover and a replica killed under load,
# against real mlq-broker, mlq-trainer and mlq processes.
mlq_add_test(test_serve SOURCES test_serve.c broker_harness.c
             LIBS mlq_client mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                  Threads::Threads
             TIMEOUT 240)
add_dependencies(test_serve mlq-broker mlq-trainer mlq)
