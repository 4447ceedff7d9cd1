# Hostile and unsupported HDF5 files through the reader, `mlq dataset info`,
# the standalone trainer and a trainer daemon under a real broker (issue 9).
mlq_add_test(test_dataset_hostile SOURCES test_dataset_hostile.c broker_harness.c
             LIBS mlq_runner mlq_dataset mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                  PkgConfig::ZLIB PkgConfig::JANSSON TIMEOUT 300)
add_dependencies(test_dataset_hostile mlq-broker mlq-trainer mlq)
