/* sd_notify messages: a datagram socket of our own stands in for systemd. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

struct fixture {
    char dir[64];
    char path[100]; /* fits sun_path */
    int fd;
};

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/mlq-test-notify-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/notify", f->dir);
    f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&sa, sizeof sa) < 0) return -1;
    setenv("NOTIFY_SOCKET", f->path, 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    notify_clock_usec = fake_clock;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    return 0;
}

/* The next datagram, or "" if none arrives within a short wait. */
static const char *next_message(struct fixture *f, char *buf, size_t len)
{
    struct pollfd p = {.fd = f->fd, .events = POLLIN};
    buf[0] = '\0';
    if (poll(&p, 1, 200) == 1) {
        ssize_t n = recv(f->fd, buf, len - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
    }
    return buf;
}

static void enable_watchdog(const char *usec)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_USEC", usec, 1);
    setenv("WATCHDOG_PID", pid, 1);
}

static void test_ready_status_stopping(void **state)
{
    struct fixture *f = *state;
    char buf[512];
    assert_int_equal(notify_ready(), 1);
    assert_string_equal(next_message(f, buf, sizeof buf), "READY=1");
    assert_int_equal(notify_status("%d queued, %d trainers", 3, 2), 1);
    assert_string_equal(next_message(f, buf, sizeof buf), "STATUS=3 queued, 2 trainers");
    assert_int_equal(notify_stopping(), 1);
    assert_string_equal(next_message(f, buf, sizeof buf), "STOPPING=1");
}

static void test_watchdog_rate_limited(void **state)
{
    struct fixture *f = *state;
    char buf[512];
    enable_watchdog("2000000");
    assert_int_equal(notify_watchdog_usec(), 2000000);

    fake_now = 10000000;
    assert_int_equal(notify_watchdog(), 1);
    assert_string_equal(next_message(f, buf, sizeof buf), "WATCHDOG=1");
    /* Within half the interval: nothing on the wire. */
    fake_now += 999999;
    assert_int_equal(notify_watchdog(), 0);
    assert_string_equal(next_message(f, buf, sizeof buf), "");
    fake_now += 1;
    assert_int_equal(notify_watchdog(), 1);
    assert_string_equal(next_message(f, buf, sizeof buf), "WATCHDOG=1");
}

static void test_watchdog_off(void **state)
{
    struct fixture *f = *state;
    char buf[512];
    /* No WatchdogSec=: nothing to feed. */
    fake_now += 100000000;
    assert_int_equal(notify_watchdog_usec(), 0);
    assert_int_equal(notify_watchdog(), 0);
    /* A watchdog meant for another process (our parent) is not ours. */
    setenv("WATCHDOG_USEC", "2000000", 1);
    setenv("WATCHDOG_PID", "1", 1);
    assert_int_equal(notify_watchdog_usec(), 0);
    assert_int_equal(notify_watchdog(), 0);
    assert_string_equal(next_message(f, buf, sizeof buf), "");
}

static void test_no_socket_is_noop(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    enable_watchdog("2000000");
    fake_now += 100000000;
    assert_int_equal(notify_ready(), 0);
    assert_int_equal(notify_status("x"), 0);
    assert_int_equal(notify_watchdog(), 0);
    assert_int_equal(notify_stopping(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_status_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_socket_is_noop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
