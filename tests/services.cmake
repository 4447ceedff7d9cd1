# services (issue 5): configuration and systemd notification.
mlq_add_test(test_config SOURCES test_config.c LIBS mlq_common TIMEOUT 30)
mlq_add_test(test_notify SOURCES test_notify.c LIBS mlq_common TIMEOUT 30)
