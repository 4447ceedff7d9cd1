/* Hostile input and faults against a real mlq-broker (issue 9): a checkpoint
 * damaged in the database, peers that forge a trainer's name, checkpoints
 * that no resume could use, floods of HELLOs. The broker must fail what is bad, keep what is good,
 * and go on serving. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zmq.h>

#include "broker_harness.h"
#include "checkpoint.h"
#include "proto.h"
#include "store.h"

/* Flips one byte in the middle of the blob of a run's latest checkpoint, as
 * a bad disk sector or a careless hand would, behind the broker's back.
 * Returns the epoch of that checkpoint. */
static int64_t damage_last_checkpoint(struct harness *h, int64_t run)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(h->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, epoch, blob FROM checkpoints WHERE run = ? "
                                        "ORDER BY step DESC LIMIT 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, run);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t id = sqlite3_column_int64(st, 0), epoch = sqlite3_column_int64(st, 1);
    int len = sqlite3_column_bytes(st, 2);
    assert_true(len > 100);
    unsigned char *blob = malloc((size_t)len);
    assert_non_null(blob);
    memcpy(blob, sqlite3_column_blob(st, 2), (size_t)len);
    sqlite3_finalize(st);
    blob[len / 2] ^= 0x01;
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE checkpoints SET blob = ? WHERE id = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(st, 1, blob, len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, id);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(blob);
    return epoch;
}

static void assert_broker_alive(struct harness *h)
{
    int status;
    assert_int_equal(waitpid(h->broker, &status, WNOHANG), 0);
    json_t *r = h_call(h, PROTO_QUEUE, json_object(), NULL);
    assert_non_null(r);
    json_decref(r);
}

static const char *str_of(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* A peer speaking the trainer protocol on a DEALER, in a ZeroMQ context of
 * its own: a failed assertion leaves its socket open, and terminating the
 * harness's context would then wait for ever. */
struct peer {
    void *ctx, *sock;
};

static void peer_open(struct harness *h, struct peer *p)
{
    p->ctx = zmq_ctx_new();
    assert_non_null(p->ctx);
    p->sock = zmq_socket(p->ctx, ZMQ_DEALER);
    assert_non_null(p->sock);
    assert_int_equal(proto_socket_setup(p->sock, 0), 0);
    assert_int_equal(zmq_connect(p->sock, h->endpoint), 0);
}

static void peer_close(struct peer *p)
{
    zmq_close(p->sock);
    zmq_ctx_term(p->ctx);
    memset(p, 0, sizeof *p);
}

/* Sends cmd with body (stolen) and an optional blob. */
static void peer_send(struct peer *p, const char *cmd, json_t *body, const void *bin, size_t len)
{
    assert_int_equal(proto_send(p->sock, NULL, 0, cmd, body, bin, len, 0), 0);
    json_decref(body);
}

/* The body of the next message with command cmd within timeout_s (others
 * are skipped), or NULL. */
static json_t *peer_expect(struct peer *p, const char *cmd, double timeout_s)
{
    double until = h_now() + timeout_s;
    while (h_now() < until) {
        zmq_pollitem_t it = {.socket = p->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(p->sock, false, &m, 0, err, sizeof err), 0);
        json_t *body = strcmp(m.cmd, cmd) == 0 ? json_incref(m.body) : NULL;
        proto_msg_clear(&m);
        if (body) return body;
    }
    return NULL;
}

/* HELLO as name (instance NULL: none, as a forger would send), announcing
 * job (0: none). */
static void peer_hello(struct peer *p, const char *name, const char *instance, int64_t job)
{
    json_t *hello = json_pack("{s:s, s:s, s:s}", "name", name, "host", "test", "version", "0");
    if (instance) json_object_set_new(hello, "instance", json_string(instance));
    if (job) json_object_set_new(hello, "job", json_integer(job));
    peer_send(p, PROTO_HELLO, hello, NULL, 0);
}

/* A peer registered as name/instance that has taken a newly submitted job
 * on dataset data; returns the job's id. */
static int64_t peer_take_job(struct harness *h, struct peer *p, const char *name,
                             const char *instance, const char *data)
{
    peer_open(h, p);
    peer_hello(p, name, instance, 0);
    json_t *w = peer_expect(p, PROTO_WELCOME, 5);
    assert_non_null(w);
    json_decref(w);
    int64_t id = h_submit(h, h_train_spec(data, 4, 2, 1, 1));
    json_t *job = peer_expect(p, PROTO_JOB, 5);
    assert_non_null(job);
    assert_int_equal(json_integer_value(json_object_get(job, "job")), id);
    json_decref(job);
    return id;
}

/* An eval of a damaged checkpoint fails with the reason; the broker stays up
 * and the next queued job runs. */
static void test_damaged_checkpoint_fails_eval(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "d.h5", 200, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t");
    int64_t run = h_submit(h, h_train_spec(data, 4, 2, 3, 1));
    h_wait_terminal(h, run, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    damage_last_checkpoint(h, run);

    int64_t ev =
        h_submit(h, json_pack("{s:s, s:I, s:{s:s}, s:s}", "kind", "eval", "run", (json_int_t)run,
                              "dataset", "path", data, "checkpoint", "last"));
    int64_t next = h_submit(h, h_train_spec(data, 4, 2, 1, 2));
    h_wait_terminal(h, ev, 30, st, sizeof st);
    assert_string_equal(st, "failed");
    json_t *job = h_job(h, ev);
    const char *error = str_of(job, "error");
    if (!strstr(error, "damaged") || !strstr(error, "checksum mismatch"))
        fail_msg("eval error: %s", error);
    json_decref(job);
    h_wait_terminal(h, next, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_broker_alive(h);
}

#define RESUME_EPOCHS 150

struct event_find {
    const char *needle;
    int found;
};

static int find_event(void *ctx, const struct store_event *e)
{
    struct event_find *f = ctx;
    if (strstr(e->message, f->needle)) f->found++;
    return 0;
}

/* A train job whose latest checkpoint is damaged resumes from the one before
 * it, says so in its events, and still ends with the uninterrupted run's
 * weights. (20,000 rows: the job must still be running when the test kills
 * its trainer after epoch 3; at 3,000 a quiet machine could finish first.) */
static void test_damaged_checkpoint_resumes_earlier(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 20000, 16, 3, 11, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    int64_t ref = h_submit(h, h_train_spec(data, 16, 3, RESUME_EPOCHS, 5));
    h_wait_terminal(h, ref, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");

    int64_t id = h_submit(h, h_train_spec(data, 16, 3, RESUME_EPOCHS, 5));
    h_wait_epoch(h, id, 3, 60);
    h_proc_kill(h, t1, SIGKILL);
    double until = h_now() + 10;
    do
        h_status(h, id, st, sizeof st, NULL);
    while (strcmp(st, "queued") != 0 && h_now() < until);
    assert_string_equal(st, "queued");
    int64_t bad = damage_last_checkpoint(h, id);

    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_broker_alive(h);

    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    char needle[64];
    snprintf(needle, sizeof needle, "resuming from epoch %lld", (long long)bad - 1);
    struct event_find f = {.needle = needle};
    assert_int_equal(store_events_foreach(s, id, find_event, &f), 0);
    struct event_find g = {.needle = "checksum mismatch"};
    assert_int_equal(store_events_foreach(s, id, find_event, &g), 0);
    store_close(&s);
    if (!f.found || !g.found) fail_msg("no event says: damaged checkpoint, %s", needle);

    size_t na, nb;
    int64_t ea, eb;
    float *a = h_final_params(h, ref, &na, &ea);
    float *b = h_final_params(h, id, &nb, &eb);
    assert_int_equal(eb, RESUME_EPOCHS);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
}

/* Lines of dir/name.log containing needle. */
static int log_lines(struct harness *h, const char *name, const char *needle)
{
    char path[600], line[4096];
    snprintf(path, sizeof path, "%s/%s.log", h->dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static int64_t trainer_rows(struct harness *h)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(h->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM trainers", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static int64_t workers_count(struct harness *h)
{
    json_t *r = h_call(h, PROTO_WORKERS, json_object(), NULL);
    int64_t n = r ? (int64_t)json_array_size(json_object_get(r, "trainers")) : -1;
    json_decref(r);
    return n;
}

#define FLOOD 2500
#define FLOOD_BATCH 100

/* 2,500 HELLOs, each from a new connection under a new name: the trainers
 * table keeps its bound (plus the trainer that holds a job) and the log
 * a bounded number of lines about them. */
static void test_hello_flood_bounded(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    /* Trainers stay registered for the whole flood (600 s liveness), the one
       holding a job without heartbeats. */
    const char *slow[] = {"--heartbeat-ms", "1000", "--liveness", "600", NULL};
    h_broker_start(h, slow);
    struct peer holder;
    int64_t id = peer_take_job(h, &holder, "holder", "holder-1", data);

    /* A context of its own: a failed assertion leaves its sockets open, and
       terminating the harness's would then wait for ever. */
    void *fctx = zmq_ctx_new();
    assert_non_null(fctx);
    double start = h_now();
    for (int b = 0; b < FLOOD / FLOOD_BATCH; b++) {
        void *socks[FLOOD_BATCH];
        for (int i = 0; i < FLOOD_BATCH; i++) {
            socks[i] = zmq_socket(fctx, ZMQ_DEALER);
            assert_non_null(socks[i]);
            assert_int_equal(proto_socket_setup(socks[i], 0), 0);
            assert_int_equal(zmq_connect(socks[i], h->endpoint), 0);
            char name[32], instance[32];
            snprintf(name, sizeof name, "flood-%d", b * FLOOD_BATCH + i);
            snprintf(instance, sizeof instance, "i-%d", b * FLOOD_BATCH + i);
            json_t *hello = json_pack("{s:s, s:s, s:s, s:s}", "name", name, "host", "attacker",
                                      "instance", instance, "version", "0");
            assert_int_equal(proto_send(socks[i], NULL, 0, PROTO_HELLO, hello, NULL, 0, 0), 0);
            json_decref(hello);
        }
        /* Each HELLO registered before the next batch: the closed sockets'
           descriptors are released once their message is out. */
        double until = h_now() + 30;
        while (workers_count(h) < (b + 1) * FLOOD_BATCH + 1 && h_now() < until)
            usleep(100 * 1000);
        for (int i = 0; i < FLOOD_BATCH; i++)
            zmq_close(socks[i]);
    }
    zmq_ctx_term(fctx);
    assert_int_equal(workers_count(h), FLOOD + 1);
    double elapsed = h_now() - start;

    int64_t rows = trainer_rows(h);
    if (rows > STORE_TRAINERS_KEEP + 1)
        fail_msg("%lld trainer rows after %d HELLOs (bound %d)", (long long)rows, FLOOD,
                 STORE_TRAINERS_KEEP);
    /* At most 10 lines a second about trainers connecting, and a count. */
    int lines = log_lines(h, "broker", "connected") + log_lines(h, "broker", "not logged");
    int bound = 11 * ((int)elapsed + 2);
    if (lines > bound)
        fail_msg("%d log lines about %d HELLOs in %.1f s (bound %d)", lines, FLOOD, elapsed, bound);

    /* The trainer that holds a job keeps its row and its job. */
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open_v2(h->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT count(*) FROM trainers WHERE name = 'holder'", -1, &q, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
    json_t *job = h_job(h, id);
    assert_string_equal(str_of(job, "state"), "running");
    assert_string_equal(str_of(job, "trainer"), "holder");
    json_decref(job);
    peer_close(&holder);
    assert_broker_alive(h);
}

/* A broker endpoint that sends garbage: the trainer drops every message and
 * logs a bounded number of lines about them. */
static void test_trainer_drop_log_bounded(void **state)
{
    struct harness *h = *state;
    void *r = zmq_socket(h->zctx, ZMQ_ROUTER);
    assert_non_null(r);
    assert_int_equal(proto_socket_setup(r, 0), 0);
    assert_int_equal(zmq_bind(r, h->endpoint), 0);
    h_trainer_start(h, "t");
    zmq_pollitem_t it = {.socket = r, .events = ZMQ_POLLIN};
    assert_int_equal(zmq_poll(&it, 1, 10000), 1);
    struct proto_msg m;
    char err[256];
    assert_int_equal(proto_recv(r, true, &m, 0, err, sizeof err), 0);
    assert_string_equal(m.cmd, PROTO_HELLO);

    double start = h_now();
    for (int i = 0; i < FLOOD; i++) {
        const char *frames[] = {"MLQ2", "JOB", "{}"};
        zmq_send(r, m.ident, m.ident_len, ZMQ_SNDMORE);
        for (int k = 0; k < 3; k++)
            zmq_send(r, frames[k], strlen(frames[k]), k < 2 ? ZMQ_SNDMORE : 0);
    }
    proto_msg_clear(&m);
    /* Let the trainer read them all (it reconnects after 0.3 s of silence
       from a real broker: a garbled message is not one). */
    usleep(1500 * 1000);
    double elapsed = h_now() - start;
    int lines = log_lines(h, "t", "dropped a message") + log_lines(h, "t", "more malformed");
    int bound = 11 * ((int)elapsed + 2);
    if (lines > bound)
        fail_msg("the trainer logged %d lines about %d garbled messages in %.1f s (bound %d)",
                 lines, FLOOD, elapsed, bound);
    assert_true(lines >= 1);
    zmq_close(r);
}

static int64_t count_rows(struct harness *h, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(h->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A peer that says HELLO under a running trainer's name is refused unless
 * it is that trainer's process (same instance): with the job id and no
 * instance it used to take the job and have a forged DONE recorded; without
 * a job, four of them made the job fail. The holder goes on; a reconnect of
 * its own process on a new connection still adopts the job. */
static void test_forged_hello_takes_nothing(void **state)
{
    struct harness *h = *state;
    char data[512], sql[200];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    const char *slow[] = {"--heartbeat-ms", "1000", "--liveness", "30", NULL};
    h_broker_start(h, slow);
    struct peer victim, forger;
    int64_t id = peer_take_job(h, &victim, "victim", "victim-1", data);

    peer_open(h, &forger);
    const char *instances[] = {NULL, "", "victim-2"};
    for (size_t i = 0; i < 3; i++) {
        peer_hello(&forger, "victim", instances[i], id);
        json_t *e = peer_expect(&forger, PROTO_ERROR, 5);
        if (!e)
            fail_msg("a HELLO as victim with instance %s was not refused",
                     instances[i] ? instances[i] : "(none)");
        assert_string_equal(str_of(e, "code"), "name_in_use");
        json_decref(e);
    }
    peer_send(&forger, PROTO_METRICS,
              json_pack("{s:I, s:i, s:i, s:{s:f}}", "job", (json_int_t)id, "epoch", 1, "step", 1,
                        "values", "train_loss", 0.001),
              NULL, 0);
    peer_send(&forger, PROTO_CHECKPOINT,
              json_pack("{s:I, s:i, s:i}", "job", (json_int_t)id, "epoch", 1, "step", 1), "forged",
              6);
    peer_send(&forger, PROTO_DONE,
              json_pack("{s:I, s:s, s:{s:f}}", "job", (json_int_t)id, "state", "succeeded",
                        "result", "accuracy", 1.0),
              NULL, 0);
    json_t *who = peer_expect(&forger, PROTO_WHO, 5);
    assert_non_null(who); /* the broker does not know this connection */
    json_decref(who);
    for (int i = 0; i < 4; i++) { /* without the job: each was an attempt lost */
        peer_hello(&forger, "victim", NULL, 0);
        json_t *e = peer_expect(&forger, PROTO_ERROR, 5);
        assert_non_null(e);
        json_decref(e);
    }
    peer_close(&forger);

    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_t *job = json_object_get(r, "job");
    assert_string_equal(str_of(job, "state"), "running");
    assert_string_equal(str_of(job, "trainer"), "victim");
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
    assert_null(json_object_get(job, "result"));
    assert_int_equal(json_object_size(json_object_get(r, "metrics")), 0);
    json_decref(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE run = %lld", (long long)id);
    assert_int_equal(count_rows(h, sql), 0);

    /* The victim's own process on a new connection (its I/O thread
       reconnected) adopts the job and finishes it. */
    peer_close(&victim);
    peer_open(h, &victim);
    peer_hello(&victim, "victim", "victim-1", id);
    json_t *w = peer_expect(&victim, PROTO_WELCOME, 5);
    assert_non_null(w);
    assert_int_equal(json_integer_value(json_object_get(w, "adopt")), id);
    json_decref(w);
    peer_send(&victim, PROTO_DONE,
              json_pack("{s:I, s:s, s:{s:f}}", "job", (json_int_t)id, "state", "succeeded",
                        "result", "accuracy", 0.5),
              NULL, 0);
    json_t *ack = peer_expect(&victim, PROTO_ACK, 5);
    assert_non_null(ack);
    json_decref(ack);
    peer_close(&victim);
    job = h_job(h, id);
    assert_string_equal(str_of(job, "state"), "succeeded");
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
    json_decref(job);
}

/* After a broker restart a running job waits for its trainer to announce
 * it: a peer under another name that announces it is told to drop it (it
 * used to adopt any waiting job), and the trainer it was given to gets it. */
static void test_orphan_claimed_only_by_its_trainer(void **state)
{
    struct harness *h = *state;
    char data[512];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    const char *slow[] = {"--heartbeat-ms", "1000", "--liveness", "30", NULL};
    h_broker_start(h, slow);
    struct peer victim, forger;
    int64_t id = peer_take_job(h, &victim, "victim", "victim-1", data);
    peer_close(&victim);
    h_broker_kill(h, SIGKILL);
    h_broker_start(h, slow);

    peer_open(h, &forger);
    peer_hello(&forger, "forger", "forger-1", id);
    json_t *d = peer_expect(&forger, PROTO_DROP, 5);
    assert_non_null(d);
    assert_int_equal(json_integer_value(json_object_get(d, "job")), id);
    json_decref(d);
    peer_send(&forger, PROTO_DONE,
              json_pack("{s:I, s:s}", "job", (json_int_t)id, "state", "succeeded"), NULL, 0);
    d = peer_expect(&forger, PROTO_DROP, 5);
    assert_non_null(d);
    json_decref(d);
    peer_close(&forger);
    json_t *job = h_job(h, id);
    assert_string_equal(str_of(job, "state"), "running");
    assert_string_equal(str_of(job, "trainer"), "victim");
    json_decref(job);

    peer_open(h, &victim);
    peer_hello(&victim, "victim", "victim-1", id);
    json_t *w = peer_expect(&victim, PROTO_WELCOME, 5);
    assert_non_null(w);
    assert_int_equal(json_integer_value(json_object_get(w, "adopt")), id);
    json_decref(w);
    peer_close(&victim);
}

/* A checkpoint blob of the given sizes, in the real format. */
static void *make_checkpoint(size_t n_params, size_t n_optim, size_t *len)
{
    float *p = calloc(n_params + 1, sizeof *p), *o = calloc(n_optim + 1, sizeof *o);
    assert_non_null(p);
    assert_non_null(o);
    struct checkpoint c = {.spec_json = "{}",
                           .epoch = 1,
                           .step = 1,
                           .n_params = n_params,
                           .params = p,
                           .n_optim = n_optim,
                           .optim_state = o};
    void *blob;
    assert_int_equal(checkpoint_encode(&c, &blob, len), 0);
    free(p);
    free(o);
    return blob;
}

/* The trainer holding a job may only store checkpoints a resume can use:
 * garbage, a bad checksum and sizes that are not its model's are refused
 * (and said so in the run's events); a right one is stored. */
static void test_bad_checkpoint_refused(void **state)
{
    struct harness *h = *state;
    char data[512], sql[200];
    h_dataset(h, "d.h5", 16, 4, 2, 1, data, sizeof data);
    const char *slow[] = {"--heartbeat-ms", "1000", "--liveness", "30", NULL};
    h_broker_start(h, slow);
    struct peer t;
    int64_t id = peer_take_job(h, &t, "t", "t-1", data); /* layers 4,32,2, adam */
    const size_t P = 4 * 32 + 32 + 32 * 2 + 2;

    size_t len_wrong, len_right, len_bad_crc;
    void *wrong = make_checkpoint(P - 2, 2 * (P - 2), &len_wrong);
    void *bad_crc = make_checkpoint(P, 2 * P, &len_bad_crc);
    ((unsigned char *)bad_crc)[len_bad_crc / 2] ^= 0x40;
    void *right = make_checkpoint(P, 2 * P, &len_right);
    struct {
        const void *blob;
        size_t len;
    } blobs[] = {{"not a checkpoint at all", 23},
                 {wrong, len_wrong},
                 {bad_crc, len_bad_crc},
                 {right, len_right}};
    for (int i = 0; i < 4; i++)
        peer_send(
            &t, PROTO_CHECKPOINT,
            json_pack("{s:I, s:i, s:i}", "job", (json_int_t)id, "epoch", i + 1, "step", i + 1),
            blobs[i].blob, blobs[i].len);
    free(wrong);
    free(bad_crc);
    free(right);

    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE run = %lld", (long long)id);
    double until = h_now() + 5;
    while (count_rows(h, sql) == 0 && h_now() < until)
        usleep(20 * 1000);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE run = %lld AND epoch = 4",
             (long long)id);
    assert_int_equal(count_rows(h, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM checkpoints WHERE run = %lld", (long long)id);
    assert_int_equal(count_rows(h, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM events WHERE run = %lld AND message LIKE '%%refused%%'",
             (long long)id);
    assert_int_equal(count_rows(h, sql), 3);
    json_t *job = h_job(h, id);
    assert_string_equal(str_of(job, "state"), "running");
    json_decref(job);
    peer_close(&t);
    assert_broker_alive(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_damaged_checkpoint_fails_eval, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_checkpoint_resumes_earlier, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_forged_hello_takes_nothing, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_checkpoint_refused, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_orphan_claimed_only_by_its_trainer, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_hello_flood_bounded, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_trainer_drop_log_bounded, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
