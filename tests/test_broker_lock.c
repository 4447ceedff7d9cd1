/* One broker per database (issue 9): a second mlq-broker on the same
 * database refuses to start, names the one that holds it and leaves its
 * running job alone; after the holder is killed with SIGKILL a new broker
 * starts at once (the kernel released the lock). Real broker processes and
 * a fake trainer holding a job. */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "broker.h"
#include "broker_harness.h"
#include "proto.h"

/* Runs a second mlq-broker on the harness's database, bound elsewhere, with
 * its output in dir/second.log. Returns its exit status; fails the test if
 * it is still running after timeout_s (it started instead of refusing). */
static int second_broker(struct harness *h, double timeout_s, char *log, size_t len)
{
    char bind[600];
    snprintf(bind, sizeof bind, "ipc://%s/second.sock", h->dir);
    snprintf(log, len, "%s/second.log", h->dir);
    const char *argv[] = {MLQ_BINARY_DIR "/broker/mlq-broker",
                          "--db",
                          h->db,
                          "--bind",
                          bind,
                          "--heartbeat-ms",
                          "100",
                          "--liveness",
                          "3",
                          NULL};
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    double until = h_now() + timeout_s;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (h_now() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("a second mlq-broker started on %s (log %s)", h->db, log);
        }
        usleep(20 * 1000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Waits up to 5 s for a message with command cmd on a DEALER; its body. */
static json_t *expect(void *sock, const char *cmd)
{
    double until = h_now() + 5;
    while (h_now() < until) {
        zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 50) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(sock, false, &m, 0, err, sizeof err), 0);
        json_t *body = strcmp(m.cmd, cmd) == 0 ? json_incref(m.body) : NULL;
        proto_msg_clear(&m);
        if (body) return body;
    }
    fail_msg("no %s", cmd);
    return NULL;
}

static void test_second_broker_refused(void **state)
{
    struct harness *h = *state;
    char data[512], log[600], text[4096];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    /* A trainer that holds its job without a heartbeat for 30 s: the job
       stays running whatever the machine's load. */
    const char *slow[] = {"--heartbeat-ms", "1000", "--liveness", "30", NULL};
    h_broker_start(h, slow);
    void *fctx = zmq_ctx_new(); /* its own: a failed assertion must not hang teardown */
    assert_non_null(fctx);
    void *fake = zmq_socket(fctx, ZMQ_DEALER);
    assert_non_null(fake);
    assert_int_equal(proto_socket_setup(fake, 0), 0);
    assert_int_equal(zmq_connect(fake, h->endpoint), 0);
    json_t *hello = json_pack("{s:s, s:s, s:s}", "name", "fake", "host", "test", "instance", "f-1");
    assert_int_equal(proto_send(fake, NULL, 0, PROTO_HELLO, hello, NULL, 0, 0), 0);
    json_decref(hello);
    json_decref(expect(fake, PROTO_WELCOME));
    int64_t id = h_submit(h, h_train_spec(data, 4, 2, 1, 1));
    json_decref(expect(fake, PROTO_JOB));

    int status = second_broker(h, 10, log, sizeof log);
    zmq_close(fake);
    zmq_ctx_term(fctx);
    assert_int_equal(status, BROKER_EXIT_DB_HELD);
    slurp(log, text, sizeof text);
    char want[1200];
    snprintf(want, sizeof want, "database %s is held by mlq-broker pid %ld (bind %s)", h->db,
             (long)h->broker, h->endpoint);
    if (!strstr(text, want)) fail_msg("the refusal does not say \"%s\":\n%s", want, text);

    /* The holder's running job was not touched: no requeue, no second run. */
    json_t *job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "fake");
    json_decref(job);

    /* A holder killed outright leaves no stale lock: a new broker starts at
       once (h_broker_start waits for its answer) and keeps the job. */
    h_broker_kill(h, SIGKILL);
    h_broker_start(h, NULL);
    job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "state")), "running");
    json_decref(job);
}

/* A first start where the database's directory does not exist yet (a
 * fresh home: no ~/.local/share/mlq): the broker makes it, 0750, takes its
 * lock there and serves. */
static void test_first_start_makes_the_directory(void **state)
{
    struct harness *h = *state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fresh/share/mlq", h->dir);
    snprintf(h->db, sizeof h->db, "%s/mlq.db", dir);
    h_broker_start(h, NULL);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0750);
    char lock[600];
    snprintf(lock, sizeof lock, "%s.lock", h->db);
    assert_int_equal(access(lock, F_OK), 0);
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    int64_t id = h_submit(h, h_train_spec(data, 4, 2, 1, 1));
    json_t *job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "state")), "queued");
    json_decref(job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_start_makes_the_directory, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_second_broker_refused, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
