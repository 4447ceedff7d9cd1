# Hostile input and faults against the real mlq-broker (issue 9): damaged
# checkpoints, forged trainer names, floods of HELLOs.
mlq_add_test(test_broker_hostile SOURCES test_broker_hostile.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                  PkgConfig::SQLITE TIMEOUT 300)
add_dependencies(test_broker_hostile mlq-broker mlq-trainer mlq)
