# services (issue 5): configuration and systemd notification.
mlq_add_test(test_config SOURCES test_config.c LIBS mlq_common TIMEOUT 30)
mlq_add_test(test_notify SOURCES test_notify.c LIBS mlq_common TIMEOUT 30)
# The real daemons' notifications (READY, STATUS, WATCHDOG, STOPPING).
mlq_add_test(test_service_notify SOURCES test_service_notify.c LIBS mlq_testutil TIMEOUT 60)
add_dependencies(test_service_notify mlq-broker mlq-trainer)
