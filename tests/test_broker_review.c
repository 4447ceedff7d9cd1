/* Review of the job system's failure paths: replies the broker's ROUTER can
 * drop (CANCEL, WELCOME, JOB, ACK), a trainer speaking about a job that is
 * not its own, malformed trainer messages. A fake trainer (a DEALER speaking
 * the protocol) plays the lost messages against a real mlq-broker; a fake
 * broker (a ROUTER) plays the unacknowledged DONE against a real mlq-trainer. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "broker_harness.h"
#include "proto.h"

/* Sockets still open when an assertion fails: closed in teardown, or the
 * context's termination would wait for them for ever. */
static void *open_socks[8];

static void *sock_open(struct harness *h, int type)
{
    void *s = zmq_socket(h->zctx, type);
    assert_non_null(s);
    assert_int_equal(proto_socket_setup(s, 0), 0);
    for (size_t i = 0; i < 8; i++)
        if (!open_socks[i]) {
            open_socks[i] = s;
            return s;
        }
    fail_msg("too many sockets");
    return NULL;
}

static void sock_close(void *s)
{
    for (size_t i = 0; i < 8; i++)
        if (open_socks[i] == s) open_socks[i] = NULL;
    zmq_close(s);
}

static int teardown(void **state)
{
    for (size_t i = 0; i < 8; i++)
        if (open_socks[i]) {
            zmq_close(open_socks[i]);
            open_socks[i] = NULL;
        }
    return h_teardown(state);
}

/* A fake trainer: HELLO once, then heartbeats naming hb_job every 100 ms. */
struct fake {
    void *sock;
    int64_t hb_job;
    double last_hb;
};

static void fake_send(struct fake *f, const char *cmd, json_t *body)
{
    assert_int_equal(proto_send(f->sock, NULL, 0, cmd, body, NULL, 0, 0), 0);
    json_decref(body);
}

/* Waits up to timeout_s for a message with command cmd (others are skipped),
 * heartbeating meanwhile. Returns its body, or NULL on timeout. */
static json_t *fake_expect(struct fake *f, const char *cmd, double timeout_s)
{
    double until = h_now() + timeout_s;
    while (h_now() < until) {
        if (h_now() - f->last_hb >= 0.1) {
            fake_send(f, PROTO_HEARTBEAT, json_pack("{s:I}", "job", (json_int_t)f->hb_job));
            f->last_hb = h_now();
        }
        zmq_pollitem_t it = {.socket = f->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(f->sock, false, &m, 0, err, sizeof err), 0);
        if (strcmp(m.cmd, cmd) == 0) {
            json_t *body = json_incref(m.body);
            proto_msg_clear(&m);
            return body;
        }
        proto_msg_clear(&m);
    }
    return NULL;
}

static void fake_open(struct harness *h, struct fake *f, const char *name)
{
    memset(f, 0, sizeof *f);
    f->sock = sock_open(h, ZMQ_DEALER);
    assert_int_equal(zmq_connect(f->sock, h->endpoint), 0);
    fake_send(f, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", name, "host", "test", "version", "0"));
    json_t *w = fake_expect(f, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);
}

static void fake_close(struct fake *f)
{
    sock_close(f->sock);
}

static int64_t int_of(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void assert_state(struct harness *h, int64_t id, const char *want)
{
    char st[32];
    h_status(h, id, st, sizeof st, NULL);
    assert_string_equal(st, want);
}

/* The fake gets a job; returns its id. */
static int64_t fake_take_job(struct harness *h, struct fake *f, const char *data)
{
    int64_t id = h_submit(h, h_train_spec(data, 4, 2, 1, 1));
    json_t *job = fake_expect(f, PROTO_JOB, 5);
    assert_non_null(job);
    assert_int_equal(int_of(job, "job"), id);
    json_decref(job);
    return id;
}

/* A broker, a small dataset and one fake trainer "fake" that has taken a
 * job; returns the job's id. */
static int64_t broker_with_busy_fake(struct harness *h, struct fake *f)
{
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    fake_open(h, f, "fake");
    return fake_take_job(h, f, data);
}

/* A CANCEL the ROUTER dropped (or the trainer missed) is sent again until the
 * trainer answers: else the job runs to its end despite the cancel. */
static void test_cancel_resent(void **state)
{
    struct harness *h = *state;
    struct fake f;
    int64_t id = broker_with_busy_fake(h, &f);
    f.hb_job = id;

    json_t *r = h_call(h, PROTO_CANCEL, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "cancelling");
    json_decref(r);
    json_t *c = fake_expect(&f, PROTO_CANCEL, 5);
    assert_non_null(c); /* the first one: "lost" */
    json_decref(c);
    c = fake_expect(&f, PROTO_CANCEL, 3);
    assert_non_null(c);
    assert_int_equal(int_of(c, "job"), id);
    json_decref(c);

    fake_send(&f, PROTO_DONE, json_pack("{s:I, s:s}", "job", (json_int_t)id, "state", "cancelled"));
    json_t *ack = fake_expect(&f, PROTO_ACK, 5);
    assert_non_null(ack);
    json_decref(ack);
    assert_state(h, id, "cancelled");
    fake_close(&f);
}

/* A JOB the trainer never got is sent again when its heartbeats say it holds
 * nothing, but not once the job has been cancelled: then it is cancelled. */
static void test_lost_job_not_resent_after_cancel(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    struct fake f;
    fake_open(h, &f, "fake");
    int64_t id = fake_take_job(h, &f, data); /* "lost": hb_job stays 0 */

    json_t *r = h_call(h, PROTO_CANCEL, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_decref(r);
    json_t *again = fake_expect(&f, PROTO_JOB, 2);
    assert_null(again);
    assert_state(h, id, "cancelled");
    fake_close(&f);
}

/* HELLO repeated on the same connection (the WELCOME and JOB were dropped):
 * the trainer never had the job, so it is sent again, no attempt counted. */
static void test_hello_repeated_keeps_job(void **state)
{
    struct harness *h = *state;
    struct fake f;
    int64_t id = broker_with_busy_fake(h, &f);

    fake_send(&f, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", "fake", "host", "test", "version", "0"));
    json_t *job = fake_expect(&f, PROTO_JOB, 5);
    assert_non_null(job);
    assert_int_equal(int_of(job, "job"), id);
    assert_int_equal(int_of(job, "attempt"), 1);
    json_decref(job);
    json_t *j = h_job(h, id);
    assert_int_equal(int_of(j, "attempts"), 1);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    fake_close(&f);
}

/* A trainer speaking about another trainer's job is told to drop it, and the
 * job is untouched. */
static void test_other_trainers_job(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    struct fake a, b;
    fake_open(h, &a, "a");
    int64_t id = fake_take_job(h, &a, data);
    a.hb_job = id;
    fake_open(h, &b, "b");

    fake_send(&b, PROTO_METRICS,
              json_pack("{s:I, s:i, s:i, s:{s:f}}", "job", (json_int_t)id, "epoch", 1, "step", 1,
                        "values", "train_loss", 0.5));
    json_t *d = fake_expect(&b, PROTO_DROP, 5);
    assert_non_null(d);
    assert_int_equal(int_of(d, "job"), id);
    json_decref(d);
    fake_send(&b, PROTO_DONE, json_pack("{s:I, s:s}", "job", (json_int_t)id, "state", "succeeded"));
    d = fake_expect(&b, PROTO_DROP, 5);
    assert_non_null(d);
    json_decref(d);

    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_t *job = json_object_get(r, "job");
    assert_string_equal(json_string_value(json_object_get(job, "state")), "running");
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "a");
    assert_int_equal(json_object_size(json_object_get(r, "metrics")), 0);
    json_decref(r);
    fake_close(&a);
    fake_close(&b);
}

/* Trainer messages with fields of every wrong type and size: dropped, the
 * broker goes on serving and the job is untouched. */
static void test_malformed_trainer_messages(void **state)
{
    struct harness *h = *state;
    struct fake f;
    int64_t id = broker_with_busy_fake(h, &f);
    f.hb_job = id;
    char buf[256];
    const char *bodies[][2] = {
        {PROTO_METRICS, "{\"job\":%lld,\"epoch\":1,\"step\":1,\"values\":[1]}"},
        {PROTO_METRICS, "{\"job\":%lld,\"epoch\":\"1\",\"step\":1,\"values\":{}}"},
        {PROTO_METRICS, "{\"job\":%lld,\"epoch\":-9223372036854775808,\"step\":1,"
                        "\"values\":{\"\":1,\"x\":null,\"y\":1e308}}"},
        {PROTO_CHECKPOINT, "{\"job\":%lld,\"epoch\":1,\"step\":1}"},
        {PROTO_DONE, "{\"job\":%lld,\"state\":7}"},
        {PROTO_DONE, "{\"job\":-1,\"state\":\"succeeded\"%.0lld}"},
        {PROTO_HEARTBEAT, "{\"job\":\"%lld\"}"},
        {PROTO_HEARTBEAT, "{\"job\":9223372036854775807%.0lld}"},
        {PROTO_METRICS, "{\"job\":99999999999999999999%.0lld}"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        snprintf(buf, sizeof buf, bodies[i][1], (long long)id);
        const char *frames[] = {PROTO_HEADER, bodies[i][0], buf};
        for (int k = 0; k < 3; k++)
            zmq_send(f.sock, frames[k], strlen(frames[k]), k < 2 ? ZMQ_SNDMORE : 0);
    }
    /* A HELLO whose fields have the wrong types from another peer. */
    void *s = sock_open(h, ZMQ_DEALER);
    assert_int_equal(zmq_connect(s, h->endpoint), 0);
    const char *hellos[] = {"{\"name\":5}", "{\"name\":\"x\",\"host\":[],\"job\":-5}",
                            "{\"name\":\"y\",\"job\":1e400}"};
    for (size_t i = 0; i < 3; i++) {
        const char *frames[] = {PROTO_HEADER, PROTO_HELLO, hellos[i]};
        for (int k = 0; k < 3; k++)
            zmq_send(s, frames[k], strlen(frames[k]), k < 2 ? ZMQ_SNDMORE : 0);
    }
    json_t *none = fake_expect(&f, PROTO_ACK, 1);
    assert_null(none);
    sock_close(s);

    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_t *job = json_object_get(r, "job");
    assert_string_equal(json_string_value(json_object_get(job, "state")), "running");
    json_decref(r);
    assert_int_equal(kill(h->broker, 0), 0);
    fake_close(&f);
}

/* A fake broker that never acknowledges: the trainer sends its DONE again
 * until the ACK comes (a DONE lost on the way would else leave the job
 * running for ever while the trainer heartbeats it). */
static void test_trainer_resends_done(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    void *r = sock_open(h, ZMQ_ROUTER);
    assert_int_equal(zmq_bind(r, h->endpoint), 0);
    h_trainer_start(h, "t");

    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len = 0;
    int dones = 0, acked_dones = 0;
    bool acked = false;
    double last_hb = 0, until = h_now() + 20, ack_at = 0;
    while (h_now() < until) {
        if (ident_len && h_now() - last_hb >= 0.1) {
            proto_send(r, ident, ident_len, PROTO_HEARTBEAT, NULL, NULL, 0, 0);
            last_hb = h_now();
        }
        if (acked && h_now() - ack_at > 1.0) break;
        zmq_pollitem_t it = {.socket = r, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(r, true, &m, 0, err, sizeof err), 0);
        if (strcmp(m.cmd, PROTO_HELLO) == 0 && !ident_len) {
            memcpy(ident, m.ident, m.ident_len);
            ident_len = m.ident_len;
            json_t *w = json_pack("{s:i, s:i}", "heartbeat_ms", 100, "liveness", 3);
            proto_send(r, ident, ident_len, PROTO_WELCOME, w, NULL, 0, 0);
            json_decref(w);
            json_t *job = json_pack("{s:i, s:i, s:o}", "job", 7, "attempt", 1, "spec",
                                    h_train_spec(data, 4, 2, 1, 1));
            proto_send(r, ident, ident_len, PROTO_JOB, job, NULL, 0, 0);
            json_decref(job);
        } else if (strcmp(m.cmd, PROTO_DONE) == 0) {
            assert_int_equal(int_of(m.body, "job"), 7);
            assert_string_equal(json_string_value(json_object_get(m.body, "state")), "succeeded");
            if (acked)
                acked_dones++;
            else if (++dones == 3) {
                json_t *ack = json_pack("{s:i}", "job", 7);
                proto_send(r, ident, ident_len, PROTO_ACK, ack, NULL, 0, 0);
                json_decref(ack);
                acked = true;
                ack_at = h_now();
            }
        }
        proto_msg_clear(&m);
    }
    assert_true(acked);
    assert_true(acked_dones <= 1); /* one may have crossed the ACK */
    sock_close(r);
}

/* Two live trainer processes under one name would both run its job: the
 * second is refused until the first goes silent; a reconnect of the same
 * process (same instance) is not. */
static void test_name_in_use(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    struct fake a = {.sock = sock_open(h, ZMQ_DEALER)}, b = {.sock = sock_open(h, ZMQ_DEALER)};
    assert_int_equal(zmq_connect(a.sock, h->endpoint), 0);
    assert_int_equal(zmq_connect(b.sock, h->endpoint), 0);
    fake_send(&a, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", "dup", "host", "a", "instance", "a-1"));
    json_t *w = fake_expect(&a, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);

    fake_send(&b, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", "dup", "host", "b", "instance", "b-1"));
    json_t *e = fake_expect(&b, PROTO_ERROR, 5);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "name_in_use");
    json_decref(e);

    /* The same process on a new socket is a reconnect, not a namesake. */
    struct fake a2 = {.sock = sock_open(h, ZMQ_DEALER)};
    assert_int_equal(zmq_connect(a2.sock, h->endpoint), 0);
    fake_send(&a2, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", "dup", "host", "a", "instance", "a-1"));
    w = fake_expect(&a2, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);

    /* Once the first goes silent past the liveness window, the name is free. */
    fake_close(&a);
    fake_close(&a2);
    usleep(1500 * 1000);
    fake_send(&b, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", "dup", "host", "b", "instance", "b-1"));
    w = fake_expect(&b, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);
    fake_close(&b);
}

/* A fake trainer process (instance) named name on a new connection, its
 * HELLO sent. */
static void fake_connect(struct harness *h, struct fake *f, const char *name, const char *instance)
{
    memset(f, 0, sizeof *f);
    f->sock = sock_open(h, ZMQ_DEALER);
    assert_int_equal(zmq_connect(f->sock, h->endpoint), 0);
    fake_send(f, PROTO_HELLO,
              json_pack("{s:s, s:s, s:s}", "name", name, "host", "test", "instance", instance));
}

static void expect_job(struct fake *f, int64_t id, int64_t attempt)
{
    json_t *job = fake_expect(f, PROTO_JOB, 5);
    assert_non_null(job);
    assert_int_equal(int_of(job, "job"), id);
    assert_int_equal(int_of(job, "attempt"), attempt);
    json_decref(job);
}

/* The same trainer process on a new connection (its I/O thread reconnected)
 * that announces no job never got its JOB: sent again, no attempt counted. */
static void test_reconnect_without_job_keeps_attempt(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    struct fake a, a2, b;
    fake_connect(h, &a, "re", "re-1");
    json_t *w = fake_expect(&a, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);
    int64_t id = h_submit(h, h_train_spec(data, 4, 2, 1, 1));
    expect_job(&a, id, 1);
    fake_close(&a); /* as if the JOB were lost with the connection */

    fake_connect(h, &a2, "re", "re-1");
    expect_job(&a2, id, 1);
    json_t *j = h_job(h, id);
    assert_int_equal(int_of(j, "attempts"), 1);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
    assert_string_equal(json_string_value(json_object_get(j, "trainer")), "re");
    json_decref(j);

    /* Another process under the name, once the first is silent, restarted
       without the job: that one is lost and counts. */
    fake_close(&a2);
    usleep(1500 * 1000);
    fake_connect(h, &b, "re", "re-2");
    expect_job(&b, id, 2);
    fake_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cancel_resent, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_job_not_resent_after_cancel, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_repeated_keeps_job, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_in_use, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_without_job_keeps_attempt, h_setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_other_trainers_job, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_trainer_messages, h_setup, teardown),
        cmocka_unit_test_setup_teardown(test_trainer_resends_done, h_setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
