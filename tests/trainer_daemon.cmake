# mlq-trainer's daemon mode reads its settings from the configuration (issue 5).
mlq_add_test(test_trainer_daemon SOURCES test_trainer_daemon.c
             LIBS mlq_common PkgConfig::ZMQ PkgConfig::JANSSON TIMEOUT 60)
add_dependencies(test_trainer_daemon mlq-trainer)
