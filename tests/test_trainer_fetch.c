/* A real mlq-trainer given jobs on pushed datasets by a fake broker (a
 * ROUTER in this process that answers HELLO, HEARTBEAT and FETCH): the job
 * is held while the dataset is fetched (heartbeats go on, a dropped reply
 * is asked again after 10 s, a corrupt chunk at once), DATASET says what it
 * trained on, the second job moves no bytes, a corrupt cache is fetched
 * again, an unknown dataset and one larger than the cache fail the job with
 * the reason, a trainer killed mid-fetch resumes from its part. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "broker_harness.h"
#include "proto.h"
#include "sha256.h"

#define CHUNK DATASET_CHUNK_BYTES
#define MAXCHUNKS 16

struct fake {
    struct harness *h;
    void *router;
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    unsigned char *data; /* the pushed dataset */
    size_t len;
    char sha[65];
    int requests[MAXCHUNKS];
    int first_index;
    int corrupt_once, drop_once; /* chunk indices, -1 none */
    int stall_from;              /* chunks from here get no reply, -1 none */
    int heartbeats;              /* HEARTBEATs naming the held job */
    int64_t held_job;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fake_reset(struct fake *f)
{
    memset(f->requests, 0, sizeof f->requests);
    f->first_index = f->corrupt_once = f->drop_once = f->stall_from = -1;
    f->heartbeats = 0;
}

static void reply(struct fake *f, const char *cmd, json_t *body, const void *bin, size_t len)
{
    assert_int_equal(proto_send(f->router, f->ident, f->ident_len, cmd, body, bin, len, 0), 0);
    json_decref(body);
}

static void serve_fetch(struct fake *f, struct proto_msg *m)
{
    const char *sha = json_string_value(json_object_get(m->body, "sha256"));
    int64_t i = json_integer_value(json_object_get(m->body, "index"));
    int64_t chunks = ((int64_t)f->len + CHUNK - 1) / CHUNK;
    if (!sha || strcmp(sha, f->sha) != 0 || i < 0 || i >= chunks) {
        proto_send_error(f->router, f->ident, f->ident_len, "not_found", "no dataset %s",
                         sha ? sha : "?");
        return;
    }
    if (f->first_index < 0) f->first_index = (int)i;
    f->requests[i]++;
    if ((i == f->drop_once && f->requests[i] == 1) || (f->stall_from >= 0 && i >= f->stall_from))
        return;
    size_t off = (size_t)i * CHUNK, n = f->len - off < CHUNK ? f->len - off : CHUNK;
    unsigned char *copy = malloc(n), d[SHA256_BYTES];
    char hex[65];
    memcpy(copy, f->data + off, n);
    sha256_buf(copy, n, d);
    sha256_hex(d, hex);
    if (i == f->corrupt_once && f->requests[i] == 1) copy[0] ^= 1;
    reply(f, PROTO_CHUNK,
          json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "sha256", sha, "index", (json_int_t)i,
                    "offset", (json_int_t)off, "size", (json_int_t)f->len, "chunks",
                    (json_int_t)chunks, "chunk_sha256", hex),
          copy, n);
    free(copy);
}

/* Answers the trainer until it sends want (DATASET, DONE, FETCH...) or
 * timeout_s passes; returns its body (caller decrefs) or NULL. */
static json_t *fake_until(struct fake *f, const char *want, double timeout_s)
{
    double until = mono() + timeout_s;
    while (mono() < until) {
        zmq_pollitem_t it = {.socket = f->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        struct proto_msg m;
        char err[256];
        if (proto_recv(f->router, true, &m, ZMQ_DONTWAIT, err, sizeof err) != 0) continue;
        memcpy(f->ident, m.ident, m.ident_len);
        f->ident_len = m.ident_len;
        json_t *out = NULL;
        if (strcmp(m.cmd, PROTO_HELLO) == 0) {
            reply(f, PROTO_WELCOME, json_pack("{s:i, s:i}", "heartbeat_ms", 100, "liveness", 10),
                  NULL, 0);
        } else if (strcmp(m.cmd, PROTO_HEARTBEAT) == 0) {
            if (f->held_job && json_integer_value(json_object_get(m.body, "job")) == f->held_job)
                f->heartbeats++;
            reply(f, PROTO_HEARTBEAT, json_object(), NULL, 0);
        } else if (strcmp(m.cmd, PROTO_FETCH) == 0) {
            assert_int_equal(json_integer_value(json_object_get(m.body, "job")), f->held_job);
            serve_fetch(f, &m);
        } else if (strcmp(m.cmd, PROTO_DONE) == 0) {
            reply(f, PROTO_ACK, json_pack("{s:O}", "job", json_object_get(m.body, "job")), NULL, 0);
        }
        if (strcmp(m.cmd, want) == 0) out = json_incref(m.body);
        proto_msg_clear(&m);
        if (out) return out;
    }
    return NULL;
}

/* Serves the trainer until it sends want, within timeout_s, or fails. */
static void expect_msg(struct fake *f, const char *want, double timeout_s)
{
    json_t *body = fake_until(f, want, timeout_s);
    if (!body) fail_msg("no %s within %.0f s", want, timeout_s);
    json_decref(body);
}

static void send_job(struct fake *f, int64_t job, const char *sha)
{
    char path[600];
    snprintf(path, sizeof path, "%s/unused.h5", f->h->dir);
    json_t *spec = h_train_spec(path, 8, 3, 1, 7);
    json_object_set_new(spec, "dataset", json_pack("{s:s, s:s}", "name", "blobs", "sha256", sha));
    f->held_job = job;
    reply(f, PROTO_JOB,
          json_pack("{s:I, s:i, s:o}", "job", (json_int_t)job, "attempt", 1, "spec", spec), NULL,
          0);
}

/* The DONE of job: its state, and its error into err. */
static void expect_done(struct fake *f, int64_t job, const char *state, char *err, size_t len,
                        double timeout_s)
{
    json_t *done = fake_until(f, PROTO_DONE, timeout_s);
    if (!done) fail_msg("no DONE for job %lld", (long long)job);
    assert_int_equal(json_integer_value(json_object_get(done, "job")), job);
    const char *e = json_string_value(json_object_get(done, "error"));
    if (strcmp(json_string_value(json_object_get(done, "state")), state) != 0)
        fail_msg("job %lld: %s (%s), wanted %s", (long long)job,
                 json_string_value(json_object_get(done, "state")), e ? e : "", state);
    snprintf(err, len, "%s", e ? e : "");
    json_decref(done);
}

static void expect_dataset(struct fake *f, int64_t job, int64_t fetched)
{
    json_t *ds = fake_until(f, PROTO_DATASET, 30);
    if (!ds) fail_msg("no DATASET for job %lld", (long long)job);
    assert_int_equal(json_integer_value(json_object_get(ds, "job")), job);
    assert_string_equal(json_string_value(json_object_get(ds, "sha256")), f->sha);
    assert_int_equal(json_integer_value(json_object_get(ds, "size")), (int64_t)f->len);
    assert_int_equal(json_integer_value(json_object_get(ds, "fetched_bytes")), fetched);
    json_decref(ds);
}

static void load(struct fake *f, const char *path)
{
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    f->len = (size_t)ftell(in);
    rewind(in);
    f->data = malloc(f->len);
    assert_int_equal(fread(f->data, 1, f->len, in), f->len);
    fclose(in);
    unsigned char d[SHA256_BYTES];
    sha256_buf(f->data, f->len, d);
    sha256_hex(d, f->sha);
}

static pid_t start_trainer(struct fake *f, const char *cache_mb)
{
    char cache[600];
    snprintf(cache, sizeof cache, "%s/cache", f->h->dir);
    const char *extra[] = {"--dataset-cache-dir", cache, "--dataset-cache-mb", cache_mb, NULL};
    return h_trainer_start_extra(f->h, "t1", extra);
}

static void fake_open(struct fake *f, struct harness *h)
{
    memset(f, 0, sizeof *f);
    f->h = h;
    fake_reset(f);
    char data[600];
    /* 100000 rows of 8 floats and a label: 3.6 MB, four chunks. */
    h_dataset(h, "blobs.h5", 100000, 8, 3, 1, data, sizeof data);
    load(f, data);
    assert_true(f->len > 3 * CHUNK);
    f->router = zmq_socket(h->zctx, ZMQ_ROUTER);
    proto_socket_setup(f->router, 0);
    assert_int_equal(zmq_bind(f->router, h->endpoint), 0);
}

static void fake_close(struct fake *f)
{
    zmq_close(f->router);
    free(f->data);
}

static void test_fetch_train_and_cache(void **state)
{
    struct harness *h = *state;
    struct fake f;
    fake_open(&f, h);
    start_trainer(&f, "100");
    expect_msg(&f, PROTO_HELLO, 10);
    json_decref(fake_until(&f, PROTO_HEARTBEAT, 5));

    /* First job: fetched, chunk 1 corrupt once, chunk 2's reply dropped. */
    f.corrupt_once = 1;
    f.drop_once = 2;
    double t0 = mono();
    send_job(&f, 7, f.sha);
    expect_dataset(&f, 7, (int64_t)f.len);
    assert_true(mono() - t0 >= 9.5); /* the dropped reply waited for its resend */
    assert_true(f.heartbeats >= 20); /* 10 s held: heartbeats went on, naming the job */
    assert_int_equal(f.requests[0], 1);
    assert_int_equal(f.requests[1], 2);
    assert_int_equal(f.requests[2], 2);
    char err[1024];
    expect_done(&f, 7, "succeeded", err, sizeof err, 60);
    char obj[700];
    snprintf(obj, sizeof obj, "%s/cache/objects/%s", h->dir, f.sha);
    assert_int_equal(access(obj, R_OK), 0);

    /* Second job: cached, no FETCH, nothing moved. */
    fake_reset(&f);
    send_job(&f, 8, f.sha);
    expect_dataset(&f, 8, 0);
    expect_done(&f, 8, "succeeded", err, sizeof err, 60);
    assert_int_equal(f.first_index, -1);

    /* A flipped byte in the cache: found before training, fetched again. */
    chmod(obj, 0644);
    FILE *io = fopen(obj, "r+b");
    assert_non_null(io);
    fseek(io, 1000, SEEK_SET);
    int byte = fgetc(io);
    fseek(io, 1000, SEEK_SET);
    fputc(byte ^ 0x5a, io);
    fclose(io);
    fake_reset(&f);
    send_job(&f, 9, f.sha);
    expect_dataset(&f, 9, (int64_t)f.len);
    expect_done(&f, 9, "succeeded", err, sizeof err, 60);
    assert_int_equal(f.first_index, 0);

    /* Unknown to the broker: the job fails saying so. */
    char other[65];
    memset(other, 'f', 64);
    other[64] = '\0';
    send_job(&f, 10, other);
    expect_done(&f, 10, "failed", err, sizeof err, 30);
    assert_non_null(strstr(err, "the broker has no such dataset"));
    fake_close(&f);
}

static void test_larger_than_the_cache(void **state)
{
    struct harness *h = *state;
    struct fake f;
    fake_open(&f, h);
    start_trainer(&f, "2");
    expect_msg(&f, PROTO_HELLO, 10);
    send_job(&f, 11, f.sha);
    char err[1024], want[300];
    expect_done(&f, 11, "failed", err, sizeof err, 30);
    snprintf(want, sizeof want,
             "dataset %s is 4 MB, more than this trainer's dataset cache holds "
             "(trainer.dataset_cache_mb = 2)",
             f.sha);
    assert_string_equal(err, want);
    fake_close(&f);
}

/* Killed with two chunks in its part: the next trainer asks from chunk 1
 * (the last whole one is asked again), not 0, and trains. */
static void test_killed_mid_fetch_resumes(void **state)
{
    struct harness *h = *state;
    struct fake f;
    fake_open(&f, h);
    pid_t pid = start_trainer(&f, "100");
    expect_msg(&f, PROTO_HELLO, 10);
    f.stall_from = 2;
    send_job(&f, 12, f.sha);
    char part[700];
    snprintf(part, sizeof part, "%s/cache/partial/%s.part", h->dir, f.sha);
    struct stat st = {0};
    double until = mono() + 10;
    while (mono() < until && (stat(part, &st) != 0 || st.st_size < 2 * CHUNK))
        json_decref(fake_until(&f, "NONE", 0.1));
    assert_int_equal(st.st_size, 2 * CHUNK);
    h_proc_kill(h, pid, SIGKILL);

    fake_reset(&f);
    start_trainer(&f, "100");
    expect_msg(&f, PROTO_HELLO, 10);
    send_job(&f, 12, f.sha);
    expect_dataset(&f, 12, (int64_t)f.len - CHUNK);
    assert_int_equal(f.first_index, 1);
    assert_int_equal(f.requests[0], 0);
    char err[1024];
    expect_done(&f, 12, "succeeded", err, sizeof err, 60);
    fake_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fetch_train_and_cache, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_larger_than_the_cache, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_killed_mid_fetch_resumes, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
