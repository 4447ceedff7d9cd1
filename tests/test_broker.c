/* The broker and trainers as real processes: train, eval and predict end to
 * end, priorities, cancel, bad specs, and garbage on the broker's socket. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zmq.h>

#include "broker_harness.h"
#include "proto.h"
#include "store.h"

static void test_train_eval_predict(void **state)
{
    struct harness *h = *state;
    char data[512], state_word[32];
    h_dataset(h, "train.h5", 512, 8, 3, 1, data, sizeof data);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");

    int64_t id = h_submit(h, h_train_spec(data, 8, 3, 4, 7));
    h_wait_terminal(h, id, 60, state_word, sizeof state_word);
    assert_string_equal(state_word, "succeeded");
    json_t *job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "t1");
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
    json_decref(job);

    /* Every epoch's metrics are in the store, once. */
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct store_metric *fm;
    size_t n;
    assert_int_equal(store_metrics_final(s, id, &fm, &n), 0);
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(fm[i].key, "train_loss")) {
            seen = true;
            assert_int_equal(fm[i].epoch, 4);
        }
    assert_true(seen);
    store_metrics_free(fm, n);
    struct store_checkpoint c;
    assert_int_equal(store_checkpoint_get(s, id, STORE_CKPT_LAST, 0, &c), 0);
    assert_int_equal(c.epoch, 4);
    store_checkpoint_free(&c);
    store_close(&s);

    /* eval: loss, accuracy and a confusion matrix, stored with the job. */
    int64_t ev = h_submit(h, json_pack("{s:s, s:I, s:{s:s}}", "kind", "eval", "run", (json_int_t)id,
                                       "dataset", "path", data));
    h_wait_terminal(h, ev, 30, state_word, sizeof state_word);
    assert_string_equal(state_word, "succeeded");
    job = h_job(h, ev);
    json_t *result = json_object_get(job, "result");
    assert_true(json_is_number(json_object_get(result, "accuracy")));
    assert_int_equal(json_array_size(json_object_get(result, "confusion_matrix")), 3);
    json_decref(job);

    /* predict: an HDF5 file with one prediction per row. */
    char out[600];
    snprintf(out, sizeof out, "%s/pred.h5", h->dir);
    int64_t pr = h_submit(h, json_pack("{s:s, s:I, s:{s:s}, s:s}", "kind", "predict", "run",
                                       (json_int_t)id, "input", "path", data, "output", out));
    h_wait_terminal(h, pr, 30, state_word, sizeof state_word);
    assert_string_equal(state_word, "succeeded");
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, "predictions", H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t sp = H5Dget_space(d);
    assert_int_equal(H5Sget_simple_extent_npoints(sp), 512);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);

    /* An eval of a run that does not exist is refused at submit. */
    bool is_error = false;
    json_t *r = h_call(h, PROTO_SUBMIT,
                       json_pack("{s:{s:s, s:i, s:{s:s}}}", "spec", "kind", "eval", "run", 999,
                                 "dataset", "path", data),
                       &is_error);
    assert_non_null(r);
    assert_true(is_error);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "not_found");
    json_decref(r);
}

static int cmp_started(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    double sx = json_number_value(json_object_get(x, "started"));
    double sy = json_number_value(json_object_get(y, "started"));
    return sx < sy ? -1 : sx > sy;
}

static void test_priorities(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 256, 8, 3, 2, data, sizeof data);
    h_broker_start(h, NULL);
    /* Queued before any trainer exists, so the order is the broker's alone. */
    static const int prio[6] = {0, 5, 1, 5, 9, 0};
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        json_t *spec = h_train_spec(data, 8, 3, 2, (uint64_t)i);
        json_object_set_new(spec, "priority", json_integer(prio[i]));
        ids[i] = h_submit(h, spec);
    }
    json_t *r = h_call(h, PROTO_QUEUE, json_object(), NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "counts"), "queued")),
                     6);
    json_decref(r);
    h_trainer_start(h, "a");
    h_trainer_start(h, "b");
    json_t *jobs[6];
    for (int i = 0; i < 6; i++) {
        h_wait_terminal(h, ids[i], 60, st, sizeof st);
        assert_string_equal(st, "succeeded");
        jobs[i] = h_job(h, ids[i]);
    }
    qsort(jobs, 6, sizeof jobs[0], cmp_started);
    /* Dispatch order: priority 9, 5, 5, 1, 0, 0, ids ascending within one. */
    static const int want[6] = {4, 1, 3, 2, 0, 5};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(json_integer_value(json_object_get(jobs[i], "id")), ids[want[i]]);
        json_decref(jobs[i]);
    }
    /* Both trainers did some work. */
    r = h_call(h, PROTO_WORKERS, json_object(), NULL);
    assert_int_equal(json_array_size(json_object_get(r, "trainers")), 2);
    json_decref(r);
}

/* STATUS's queue_ahead of a queued job; -1 when the reply has none. */
static int64_t queue_ahead(struct harness *h, int64_t id)
{
    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_t *a = json_object_get(r, "queue_ahead");
    int64_t n = json_is_integer(a) ? json_integer_value(a) : -1;
    json_decref(r);
    return n;
}

/* A queued job's place in the queue is the broker's dispatch order
 * (priority, then id), counting only the jobs it could dispatch now: not
 * one that waits for its --after jobs. */
static void test_queue_ahead(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 256, 8, 3, 2, data, sizeof data);
    h_broker_start(h, NULL);
    static const int prio[6] = {0, 5, 1, 5, 9, 0};
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        json_t *spec = h_train_spec(data, 8, 3, 2, (uint64_t)i);
        json_object_set_new(spec, "priority", json_integer(prio[i]));
        ids[i] = h_submit(h, spec);
    }
    /* Dispatch order 4, 1, 3, 2, 0, 5 (test_priorities): each one's place. */
    static const int64_t place[6] = {4, 1, 3, 2, 0, 5};
    for (int i = 0; i < 6; i++)
        assert_int_equal(queue_ahead(h, ids[i]), place[i]);
    /* A job of the highest priority that waits for job 6 is ahead of none
     * of them, and not counted ahead of any: it cannot be dispatched. */
    json_t *spec = h_train_spec(data, 8, 3, 2, 9);
    json_object_set_new(spec, "priority", json_integer(20));
    bool is_error = false;
    json_t *r = h_call(h, PROTO_SUBMIT,
                       json_pack("{s:o, s:s, s:[I]}", "spec", spec, "request_id", "dep", "after",
                                 (json_int_t)ids[5]),
                       &is_error);
    assert_non_null(r);
    assert_false(is_error);
    int64_t dep = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    assert_int_equal(queue_ahead(h, dep), 0);
    assert_int_equal(queue_ahead(h, ids[4]), 0);
    assert_int_equal(queue_ahead(h, ids[5]), 5);
    /* A cancelled job is no longer ahead of anyone, nor has a place. */
    r = h_call(h, PROTO_CANCEL, json_pack("{s:I}", "id", (json_int_t)ids[1]), NULL);
    json_decref(r);
    assert_int_equal(queue_ahead(h, ids[1]), -1);
    assert_int_equal(queue_ahead(h, ids[3]), 1);
    assert_int_equal(queue_ahead(h, ids[5]), 4);
    /* Every job run: a finished one has no place. */
    h_trainer_start(h, "a");
    h_wait_terminal(h, dep, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_int_equal(queue_ahead(h, ids[0]), -1);
    assert_int_equal(queue_ahead(h, dep), -1);
}

static void test_cancel(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 4000, 16, 3, 3, data, sizeof data);
    h_broker_start(h, NULL);
    int64_t queued = h_submit(h, h_train_spec(data, 16, 3, 2, 1));
    json_t *r = h_call(h, PROTO_CANCEL, json_pack("{s:I}", "id", (json_int_t)queued), NULL);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "cancelled");
    json_decref(r);
    h_status(h, queued, st, sizeof st, NULL);
    assert_string_equal(st, "cancelled");

    h_trainer_start(h, "t1");
    int64_t running = h_submit(h, h_train_spec(data, 16, 3, 1000, 1));
    h_wait_epoch(h, running, 1, 30);
    r = h_call(h, PROTO_CANCEL, json_pack("{s:I}", "id", (json_int_t)running), NULL);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "cancelling");
    json_decref(r);
    h_wait_terminal(h, running, 20, st, sizeof st);
    assert_string_equal(st, "cancelled");

    /* The trainer is free again: the next job runs. */
    int64_t next = h_submit(h, h_train_spec(data, 16, 3, 1, 1));
    h_wait_terminal(h, next, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
}

static void test_bad_specs(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 64, 8, 3, 4, data, sizeof data);

    /* The cli refuses before sending anything: no broker runs yet. */
    const char *argv[] = {MLQ_BINARY_DIR "/cli/mlq",
                          "submit",
                          "--dataset",
                          data,
                          "--layers",
                          "8,0,3",
                          "--broker",
                          h->endpoint,
                          NULL};
    assert_int_equal(h_run(h, argv, NULL), 2);
    const char *argv2[] = {MLQ_BINARY_DIR "/cli/mlq",
                           "submit",
                           "--dataset",
                           data,
                           "--optimizer",
                           "adamm",
                           "--broker",
                           h->endpoint,
                           NULL};
    assert_int_equal(h_run(h, argv2, NULL), 2);
    /* And says the broker is unreachable with exit 6. */
    setenv("MLQ_TIMEOUT_MS", "300", 1);
    const char *argv3[] = {MLQ_BINARY_DIR "/cli/mlq", "queue", "--broker", h->endpoint, NULL};
    assert_int_equal(h_run(h, argv3, NULL), 6);
    unsetenv("MLQ_TIMEOUT_MS");

    h_broker_start(h, NULL);
    /* Sent raw, the broker refuses it with a clear error. */
    bool is_error = false;
    json_t *r = h_call(h, PROTO_SUBMIT,
                       json_pack("{s:{s:s, s:{s:s}, s:{s:[i,i]}, s:s}}", "spec", "kind", "train",
                                 "dataset", "path", data, "model", "layers", 8, 0, "lossy", "x"),
                       &is_error);
    assert_true(is_error);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "bad_spec");
    assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "bad spec"));
    json_decref(r);
    r = h_call(h, PROTO_SUBMIT, json_pack("{s:s}", "spec", "not an object"), &is_error);
    assert_true(is_error);
    json_decref(r);

    /* The trainer refuses a bad spec too: play broker to it on our own socket. */
    char ep[400];
    snprintf(ep, sizeof ep, "ipc://%.300s/fake.sock", h->dir);
    void *router = zmq_socket(h->zctx, ZMQ_ROUTER);
    assert_int_equal(proto_socket_setup(router, 0), 0);
    assert_int_equal(zmq_bind(router, ep), 0);
    const char *targv[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer",
                           "--broker",
                           ep,
                           "--name",
                           "fake",
                           "--heartbeat-ms",
                           "100",
                           NULL};
    char saved[512];
    snprintf(saved, sizeof saved, "%s", h->endpoint);
    snprintf(h->endpoint, sizeof h->endpoint, "%s", ep);
    pid_t t = h_trainer_start(h, "fake-target");
    snprintf(h->endpoint, sizeof h->endpoint, "%s", saved);
    (void)targv;
    struct proto_msg m;
    char err[256];
    bool done = false;
    double until = h_now() + 20;
    while (!done && h_now() < until) {
        zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) != 1) continue;
        assert_int_equal(proto_recv(router, true, &m, 0, err, sizeof err), 0);
        if (!strcmp(m.cmd, PROTO_HELLO)) {
            proto_send(router, m.ident, m.ident_len, PROTO_WELCOME, NULL, NULL, 0, 0);
            json_t *job = json_pack("{s:i, s:i, s:{s:s, s:s}}", "job", 42, "attempt", 1, "spec",
                                    "kind", "train", "optimizer", "nope");
            proto_send(router, m.ident, m.ident_len, PROTO_JOB, job, NULL, 0, 0);
            json_decref(job);
        } else if (!strcmp(m.cmd, PROTO_DONE)) {
            assert_int_equal(json_integer_value(json_object_get(m.body, "job")), 42);
            assert_string_equal(json_string_value(json_object_get(m.body, "state")), "failed");
            assert_non_null(
                strstr(json_string_value(json_object_get(m.body, "error")), "bad spec"));
            done = true;
        }
        proto_msg_clear(&m);
    }
    assert_true(done);
    h_proc_kill(h, t, SIGKILL);
    zmq_close(router);

    /* The broker still serves. */
    h_trainer_start(h, "t1");
    int64_t id = h_submit(h, h_train_spec(data, 8, 3, 1, 1));
    h_wait_terminal(h, id, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
}

/* A SUBMIT repeated with its request id is one job; the cli resends its
 * SUBMIT under one request id while no answer comes. */
static void test_submit_request_id(void **state)
{
    struct harness *h = *state;
    char data[512], spec_path[600], out_path[600];
    h_dataset(h, "train.h5", 64, 8, 3, 4, data, sizeof data);
    h_broker_start(h, NULL);

    bool is_error = true;
    json_t *r =
        h_call(h, PROTO_SUBMIT,
               json_pack("{s:o, s:s}", "spec", h_train_spec(data, 8, 3, 1, 1), "request_id", "r-1"),
               &is_error);
    assert_false(is_error);
    json_int_t a = json_integer_value(json_object_get(r, "id"));
    assert_null(json_object_get(r, "existed"));
    json_decref(r);
    r = h_call(h, PROTO_SUBMIT,
               json_pack("{s:o, s:s}", "spec", h_train_spec(data, 8, 3, 1, 1), "request_id", "r-1"),
               &is_error);
    assert_false(is_error);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), a);
    assert_true(json_is_true(json_object_get(r, "existed")));
    json_decref(r);
    r = h_call(h, PROTO_SUBMIT,
               json_pack("{s:o, s:s}", "spec", h_train_spec(data, 8, 3, 2, 1), "request_id", "r-1"),
               &is_error);
    assert_true(is_error);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "conflict");
    json_decref(r);
    r = h_call(h, PROTO_SUBMIT,
               json_pack("{s:o, s:i}", "spec", h_train_spec(data, 8, 3, 1, 1), "request_id", 5),
               &is_error);
    assert_true(is_error);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "bad_request");
    json_decref(r);

    /* The cli sends again while unanswered, under the same request id: play
       a broker whose first reply was lost (it died between its commit and
       its reply). */
    char ep[400];
    snprintf(ep, sizeof ep, "ipc://%.300s/fake-broker.sock", h->dir);
    void *router = zmq_socket(h->zctx, ZMQ_ROUTER);
    assert_int_equal(proto_socket_setup(router, 0), 0);
    assert_int_equal(zmq_bind(router, ep), 0);
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", h->dir);
    snprintf(out_path, sizeof out_path, "%s/submit.out", h->dir);
    json_t *spec = h_train_spec(data, 8, 3, 3, 1);
    assert_int_equal(json_dump_file(spec, spec_path, 0), 0);
    json_decref(spec);
    pid_t cli = fork();
    assert_true(cli >= 0);
    if (cli == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0) _exit(127);
        setenv("MLQ_TIMEOUT_MS", "10000", 1);
        execl(MLQ_BINARY_DIR "/cli/mlq", "mlq", "submit", "--spec", spec_path, "--broker", ep,
              (char *)NULL);
        _exit(127);
    }
    char first[PROTO_REQUEST_ID_MAX + 1] = "";
    int sends = 0;
    double until = h_now() + 8;
    while (sends < 2 && h_now() < until) {
        zmq_pollitem_t it = {.socket = router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(router, true, &m, 0, err, sizeof err), 0);
        assert_string_equal(m.cmd, PROTO_SUBMIT);
        const char *rid = json_string_value(json_object_get(m.body, "request_id"));
        assert_non_null(rid);
        if (sends++ == 0) {
            snprintf(first, sizeof first, "%s", rid); /* and no reply */
        } else {
            assert_string_equal(rid, first);
            proto_send_text(router, m.ident, m.ident_len, PROTO_OK, "{\"id\":77,\"existed\":true}",
                            NULL, 0, 0);
        }
        proto_msg_clear(&m);
    }
    assert_int_equal(sends, 2);
    int status;
    assert_int_equal(waitpid(cli, &status, 0), cli);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    FILE *f = fopen(out_path, "r");
    assert_non_null(f);
    long long b = 0;
    assert_int_equal(fscanf(f, "%lld", &b), 1);
    fclose(f);
    assert_int_equal(b, 77);
    zmq_close(router);
}

static void send_frames(void *sock, const char *const *frames, int n)
{
    for (int i = 0; i < n; i++)
        zmq_send(sock, frames[i], strlen(frames[i]), i < n - 1 ? ZMQ_SNDMORE : 0);
}

static void test_garbage(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 64, 8, 3, 5, data, sizeof data);
    const char *extra[] = {"--max-message", "1048576", NULL};
    h_broker_start(h, extra);
    h_trainer_start(h, "t1");

    /* Raw bytes on the socket itself: not even ZMTP. */
    char path[100];
    snprintf(path, sizeof path, "%.80s/broker.sock", h->dir);
    uint64_t s = 12345;
    for (int k = 0; k < 20; k++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        memcpy(addr.sun_path, path, strlen(path) + 1);
        assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        unsigned char buf[4096];
        for (size_t i = 0; i < sizeof buf; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (unsigned char)(s >> 33);
        }
        if (write(fd, buf, sizeof buf) < 0) {
            /* the broker may hang up first: that is fine */
        }
        close(fd);
    }

    /* Well-framed ZeroMQ messages that are not mlq messages. */
    void *d = zmq_socket(h->zctx, ZMQ_DEALER);
    assert_int_equal(proto_socket_setup(d, 0), 0);
    assert_int_equal(zmq_connect(d, h->endpoint), 0);
    const char *bad1[] = {"hello"};
    const char *bad2[] = {"MLQ2", "SUBMIT", "{}"};
    const char *bad3[] = {"MLQ1", "FROB", "{}"};
    const char *bad4[] = {"MLQ1", "SUBMIT", "{not json"};
    const char *bad5[] = {"MLQ1", "SUBMIT", "[1,2]"};
    const char *bad6[] = {"MLQ1", "submit!", "{}"};
    const char *bad7[] = {"MLQ1", "SUBMIT", "{}", "a", "b"};
    const char *bad8[] = {"MLQ1", "DONE", "{\"job\": \"x\"}"};
    const char *bad9[] = {"MLQ1", "OK", "{}"};
    send_frames(d, bad1, 1);
    send_frames(d, bad2, 3);
    send_frames(d, bad3, 3);
    send_frames(d, bad4, 3);
    send_frames(d, bad5, 3);
    send_frames(d, bad6, 3);
    send_frames(d, bad7, 5);
    send_frames(d, bad8, 3);
    send_frames(d, bad9, 3);
    /* Oversized: past --max-message the broker drops the connection. */
    size_t big = 2u << 20;
    char *blob = malloc(big);
    assert_non_null(blob);
    memset(blob, 'x', big);
    zmq_send(d, "MLQ1", 4, ZMQ_SNDMORE);
    zmq_send(d, "SUBMIT", 6, ZMQ_SNDMORE);
    zmq_send(d, "{}", 2, ZMQ_SNDMORE);
    zmq_send(d, blob, big, 0);
    free(blob);
    zmq_close(d);

    /* It goes on serving: a later submit runs. */
    int64_t id = h_submit(h, h_train_spec(data, 8, 3, 1, 1));
    h_wait_terminal(h, id, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_int_equal(kill(h->broker, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_train_eval_predict, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_priorities, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_queue_ahead, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_specs, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_garbage, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_submit_request_id, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
