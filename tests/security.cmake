# security (issue 11): CURVE, the ZAP handler and key roles, with real
# mlq-broker, mlq-trainer and mlq processes.
mlq_add_test(test_security SOURCES test_security.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5 TIMEOUT 300)
add_dependencies(test_security mlq-broker mlq-trainer mlq)
