# Pushed datasets over the wire against the real mlq-broker (issue 16): a
# push and its FETCH, hostile pushes, a trainer's DATASET.
mlq_add_test(test_datasets SOURCES test_datasets.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                  PkgConfig::SQLITE TIMEOUT 120)
add_dependencies(test_datasets mlq-broker mlq-trainer mlq)
