/* mlq-trainer without --standalone is the daemon and takes its settings from
 * the configuration: a ROUTER socket of our own stands in for the broker, at
 * the endpoint that only the config file names, and reads the trainer's HELLO. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include "proto.h"

struct fixture {
    char dir[64];
    char conf[128];
    char endpoint[128];
    void *zctx, *router;
    pid_t trainer;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/mlq-test-trainer-daemon-XXXXXX");
    if (!f || !mkdtemp(f->dir)) return -1;
    snprintf(f->conf, sizeof f->conf, "%s/mlq.conf", f->dir);
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/broker.sock", f->dir);
    FILE *c = fopen(f->conf, "w");
    if (!c) return -1;
    fprintf(c, "broker.endpoint = %s\ntrainer.name = from-config\nheartbeat.interval_ms = 50\n",
            f->endpoint);
    fclose(c);
    f->zctx = zmq_ctx_new();
    f->router = zmq_socket(f->zctx, ZMQ_ROUTER);
    if (!f->router || proto_socket_setup(f->router, 0) != 0 ||
        zmq_bind(f->router, f->endpoint) != 0)
        return -1;
    unsetenv("MLQ_BROKER");
    unsetenv("MLQ_BROKER_ENDPOINT");
    unsetenv("MLQ_TRAINER_NAME");
    unsetenv("NOTIFY_SOCKET");
    setenv("MLQ_CONFIG", f->conf, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->trainer > 0) {
        kill(f->trainer, SIGTERM);
        waitpid(f->trainer, NULL, 0);
    }
    zmq_close(f->router);
    zmq_ctx_term(f->zctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", f->dir);
    unsetenv("MLQ_CONFIG");
    free(f);
    return 0;
}

/* Starts mlq-trainer with extra (NULL-terminated) flags, its log in the dir. */
static void start_trainer(struct fixture *f, const char *const *extra)
{
    const char *argv[8] = {MLQ_BINARY_DIR "/trainer/mlq-trainer"};
    int n = 1;
    for (int i = 0; extra && extra[i] && n < 7; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char log[128];
    snprintf(log, sizeof log, "%s/trainer.log", f->dir);
    f->trainer = fork();
    assert_true(f->trainer >= 0);
    if (f->trainer == 0) {
        if (!freopen(log, "w", stderr)) _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
}

/* The name in the first HELLO that arrives within 10 s ("" if none). */
static void hello_name(struct fixture *f, char *name, size_t len)
{
    name[0] = '\0';
    zmq_pollitem_t it = {.socket = f->router, .events = ZMQ_POLLIN};
    for (int i = 0; i < 100 && !name[0]; i++) {
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        struct proto_msg m;
        char err[256];
        if (proto_recv(f->router, true, &m, ZMQ_DONTWAIT, err, sizeof err) != 0) continue;
        const char *s;
        if (strcmp(m.cmd, PROTO_HELLO) == 0 &&
            proto_get_str(m.body, "name", &s, err, sizeof err) == 0)
            snprintf(name, len, "%s", s);
        proto_msg_clear(&m);
    }
}

static void test_endpoint_and_name_from_config(void **state)
{
    struct fixture *f = *state;
    start_trainer(f, NULL);
    char name[256];
    hello_name(f, name, sizeof name);
    assert_string_equal(name, "from-config");
}

static void test_flag_overrides_config(void **state)
{
    struct fixture *f = *state;
    const char *extra[] = {"--name", "from-flag", NULL};
    start_trainer(f, extra);
    char name[256];
    hello_name(f, name, sizeof name);
    assert_string_equal(name, "from-flag");
}

static void test_bad_config_is_usage_error(void **state)
{
    struct fixture *f = *state;
    FILE *c = fopen(f->conf, "a");
    assert_non_null(c);
    fprintf(c, "heartbeat.interval_ms = fast\n");
    fclose(c);
    start_trainer(f, NULL);
    int st;
    assert_int_equal(waitpid(f->trainer, &st, 0), f->trainer);
    f->trainer = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_endpoint_and_name_from_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_overrides_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config_is_usage_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
