/* mlq-broker and mlq-trainer tell systemd the truth: a datagram socket of our
 * own stands in for systemd's NOTIFY_SOCKET, the real programs run as
 * children, and we read READY=1, STATUS=, WATCHDOG=1 and STOPPING=1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

struct fixture {
    char *dir;
    char endpoint[600];
    char config[600];
};

/* A bound datagram socket at dir/name; its path goes to the child's env. */
static int notify_socket(const char *dir, const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", dir, name);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return -1;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
    return fd;
}

static pid_t spawn(char *const argv[], const char *notify_path, const char *config)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("NOTIFY_SOCKET", notify_path, 1);
        setenv("WATCHDOG_USEC", "400000", 1); /* pings every 200 ms */
        unsetenv("WATCHDOG_PID");
        setenv("MLQ_CONFIG", config, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Reads datagrams until one contains want (or the time is up). */
static bool expect(int fd, const char *want, double seconds)
{
    double end = now() + seconds;
    char buf[4096];
    while (now() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = '\0';
        if (strstr(buf, want)) return true;
    }
    return false;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = testutil_tmpdir("notify");
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/broker.sock", f->dir);
    snprintf(f->config, sizeof f->config, "%s/mlq.conf", f->dir);
    if (!f->dir || testutil_write_file(f->config, "") != 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    testutil_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static int wait_exit(pid_t pid, double seconds)
{
    double end = now() + seconds;
    int status;
    while (now() < end) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void test_broker_and_trainer_notify_systemd(void **state)
{
    struct fixture *f = *state;
    char broker_sock[600], trainer_sock[600], db[600];
    int bfd = notify_socket(f->dir, "broker.notify", broker_sock, sizeof broker_sock);
    int tfd = notify_socket(f->dir, "trainer.notify", trainer_sock, sizeof trainer_sock);
    assert_true(bfd >= 0 && tfd >= 0);
    snprintf(db, sizeof db, "%s/mlq.db", f->dir);

    char *broker_argv[] = {MLQ_BINARY_DIR "/broker/mlq-broker",
                           "--db",
                           db,
                           "--bind",
                           f->endpoint,
                           "--heartbeat-ms",
                           "100",
                           NULL};
    pid_t broker = spawn(broker_argv, broker_sock, f->config);
    assert_true(broker > 0);
    assert_true(expect(bfd, "READY=1", 10));
    assert_true(expect(bfd, "STATUS=", 5));
    assert_true(expect(bfd, "WATCHDOG=1", 5));

    char *trainer_argv[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer",
                            "--broker",
                            f->endpoint,
                            "--name",
                            "notified",
                            "--heartbeat-ms",
                            "100",
                            NULL};
    pid_t trainer = spawn(trainer_argv, trainer_sock, f->config);
    assert_true(trainer > 0);
    assert_true(expect(tfd, "READY=1", 10));
    assert_true(expect(tfd, "WATCHDOG=1", 5));
    /* Pings keep coming while idle, not just once. */
    assert_true(expect(tfd, "WATCHDOG=1", 5));
    assert_true(expect(bfd, "WATCHDOG=1", 5));

    kill(trainer, SIGTERM);
    assert_true(expect(tfd, "STOPPING=1", 10));
    assert_int_equal(wait_exit(trainer, 10), 0);
    kill(broker, SIGTERM);
    assert_true(expect(bfd, "STOPPING=1", 10));
    assert_int_equal(wait_exit(broker, 10), 0);
    close(bfd);
    close(tfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broker_and_trainer_notify_systemd),
    };
    return cmocka_run_group_tests_name("service_notify", tests, setup, teardown);
}
