/* A trainer's fetch of a pushed dataset (trainer/fetch.h) against a fake
 * broker: a ROUTER answering FETCH from a file, with the faults a real
 * broker does not make on purpose: a corrupt chunk, a dropped reply, an
 * unknown dataset, a wrong index, a kill in the middle. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "chunk_sum.h"
#include "dscache.h"
#include "fetch.h"
#include "fake_broker.h"
#include "proto.h"
#include "sha256.h"
#include "testutil.h"

#define CHUNK DATASET_CHUNK_BYTES
#define NBYTES (5 * CHUNK + CHUNK / 2) /* six chunks, the last one short */
#define NCHUNKS 6

struct server {
    const unsigned char *data; /* what it serves */
    size_t len;
    char sha[65];      /* what it answers to */
    int corrupt_once;  /* chunk whose first reply has a flipped byte, -1 none */
    int corrupt_every; /* chunk always corrupted, -1 none */
    bool sha256_sums;  /* answers as an older broker: chunk_sha256 */
    int drop_once;     /* chunk whose first FETCH gets no reply, -1 none */
    bool not_found;    /* ERROR not_found to everything */
    bool io_error;     /* ERROR io (the broker cannot read the object) */
    int requests[NCHUNKS + 1];
    int first_index; /* of the first FETCH */
    int max_ahead;   /* the most chunks asked for beyond the first not delivered */
    bool delivered[NCHUNKS];
};

struct fixture {
    char *dir;
    struct dscache cache;
    struct fake_broker fb;
    unsigned char *data;
    char sha[65];
    struct server srv;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = testutil_tmpdir("fetch");
    char err[256];
    if (dscache_open(&f->cache, f->dir, 100, err, sizeof err) != 0) fail_msg("%s", err);
    f->data = malloc(NBYTES);
    testutil_noise(f->data, NBYTES);
    unsigned char d[SHA256_BYTES];
    sha256_buf(f->data, NBYTES, d);
    sha256_hex(d, f->sha);
    f->srv = (struct server){.data = f->data,
                             .len = NBYTES,
                             .corrupt_once = -1,
                             .corrupt_every = -1,
                             .drop_once = -1,
                             .first_index = -1};
    memcpy(f->srv.sha, f->sha, sizeof f->sha);
    assert_int_equal(fake_broker_open(&f->fb), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fake_broker_close(&f->fb);
    testutil_rmtree(f->dir);
    free(f->dir);
    free(f->data);
    free(f);
    return 0;
}

/* Answers one FETCH as the protocol says (and as the faults say). */
static void serve_one(struct server *s, void *router, struct proto_msg *m)
{
    assert_string_equal(m->cmd, PROTO_FETCH);
    const char *sha = json_string_value(json_object_get(m->body, "sha256"));
    int64_t index = json_integer_value(json_object_get(m->body, "index"));
    assert_non_null(sha);
    assert_int_equal(json_integer_value(json_object_get(m->body, "job")), 42);
    int64_t chunks = ((int64_t)s->len + CHUNK - 1) / CHUNK;
    if (s->not_found || strcmp(sha, s->sha) != 0 || index < 0 || index >= chunks) {
        proto_send_error(router, m->ident, m->ident_len, "not_found", "no dataset %s", sha);
        return;
    }
    if (s->io_error) {
        proto_send_error(router, m->ident, m->ident_len, "io", "dataset %.12s: cannot read", sha);
        return;
    }
    if (s->first_index < 0) s->first_index = (int)index;
    s->requests[index]++;
    int lowest = 0;
    while (lowest < NCHUNKS && s->delivered[lowest])
        lowest++;
    if (index - lowest + 1 > s->max_ahead) s->max_ahead = (int)(index - lowest + 1);
    if (index == s->drop_once && s->requests[index] == 1) return;
    size_t off = (size_t)index * CHUNK, n = s->len - off < CHUNK ? s->len - off : CHUNK;
    /* The trainer takes XXH3-128 sums, as the broker sends them. */
    const char *sum = json_string_value(json_object_get(m->body, "sum"));
    assert_non_null(sum);
    assert_string_equal(sum, CHUNK_SUM_NAME);
    unsigned char *copy = malloc(n), d[SHA256_BYTES];
    char hex[65];
    memcpy(copy, s->data + off, n);
    if (s->sha256_sums) {
        sha256_buf(copy, n, d);
        sha256_hex(d, hex);
    } else {
        chunk_sum(copy, n, d);
        chunk_sum_hex(d, hex);
    }
    bool corrupt =
        index == s->corrupt_every || (index == s->corrupt_once && s->requests[index] == 1);
    if (corrupt)
        copy[n / 2] ^= 0x40;
    else
        s->delivered[index] = true;
    json_t *b =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "sha256", sha, "index", (json_int_t)index,
                  "offset", (json_int_t)off, "size", (json_int_t)s->len, "chunks",
                  (json_int_t)chunks, s->sha256_sums ? "chunk_sha256" : "chunk_xxh128", hex);
    assert_int_equal(proto_send(router, m->ident, m->ident_len, PROTO_CHUNK, b, copy, n, 0), 0);
    json_decref(b);
    free(copy);
}

/* Runs f until it ends or stop_after chunks are written (0: no stop). */
static enum fetch_state run(struct fixture *fx, struct fetch *f, int64_t stop_after)
{
    double until = fake_broker_now() + 20;
    while (f->state == FETCH_RUNNING && fake_broker_now() < until) {
        if (stop_after && f->written >= stop_after) break;
        fetch_pump(f, fx->fb.dealer, fake_broker_now());
        zmq_pollitem_t it[2] = {{.socket = fx->fb.router, .events = ZMQ_POLLIN},
                                {.socket = fx->fb.dealer, .events = ZMQ_POLLIN}};
        zmq_poll(it, 2, 50);
        struct proto_msg m;
        char err[256];
        while (proto_recv(fx->fb.router, true, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
            serve_one(&fx->srv, fx->fb.router, &m);
            proto_msg_clear(&m);
        }
        while (f->state == FETCH_RUNNING && !(stop_after && f->written >= stop_after) &&
               proto_recv(fx->fb.dealer, false, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
            assert_true(fetch_wants(f, &m));
            fetch_on_message(f, &m, fx->fb.dealer, fake_broker_now());
            proto_msg_clear(&m);
        }
    }
    return f->state;
}

static void assert_cached(struct fixture *fx)
{
    char path[DSCACHE_PATH_MAX], err[512] = "";
    int64_t size = 0;
    assert_int_equal(dscache_lookup(&fx->cache, fx->sha, true, path, &size, err, sizeof err), 1);
    assert_int_equal(size, NBYTES);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    char part[DSCACHE_PATH_MAX];
    dscache_part_path(&fx->cache, fx->sha, part);
    assert_int_not_equal(access(part, F_OK), 0);
}

/* A broker whose object has a SHA-256 index (stored by an older one): its
 * chunk_sha256 sums are checked, and a corrupt chunk asked for again. */
static void test_fetch_from_older_broker(void **state)
{
    struct fixture *fx = *state;
    fx->srv.sha256_sums = true;
    fx->srv.corrupt_once = 1;
    struct fetch f;
    char err[512] = "";
    if (fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err) != 0) fail_msg("%s", err);
    enum fetch_state st = run(fx, &f, 0);
    if (st != FETCH_DONE) fail_msg("fetch: %s", f.err);
    assert_int_equal(fx->srv.requests[1], 2);
    assert_int_equal(f.rejected, 1);
    fetch_close(&f);
    assert_cached(fx);
}

/* A corrupt chunk is asked for again, a dropped reply is asked for again
 * after resend_s, never more than the window is out, and the file that
 * lands in objects/ is whole and verified. */
static void test_fetch_with_faults(void **state)
{
    struct fixture *fx = *state;
    fx->srv.corrupt_once = 2;
    fx->srv.drop_once = 4;
    struct fetch f;
    char err[512] = "";
    if (fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err) != 0) fail_msg("%s", err);
    f.resend_s = 0.3;
    double t0 = fake_broker_now();
    enum fetch_state st = run(fx, &f, 0);
    if (st != FETCH_DONE) fail_msg("fetch: %s", f.err);
    assert_true(fake_broker_now() - t0 >= 0.3); /* the dropped one waited for its resend */
    assert_int_equal(fx->srv.requests[0], 1);
    assert_int_equal(fx->srv.requests[2], 2);
    assert_int_equal(fx->srv.requests[4], 2);
    assert_int_equal(fx->srv.requests[5], 1);
    assert_int_equal(f.rejected, 1);
    assert_int_equal(f.resends, 1);
    assert_int_equal(f.fetched, NBYTES);
    assert_true(fx->srv.max_ahead <= DATASET_WINDOW);
    fetch_close(&f);
    assert_cached(fx);
}

/* Killed after three chunks: the part keeps a verified prefix; the next
 * fetch asks from the last whole chunk of it, not from 0, and a torn tail
 * is cut off. */
static void test_resume_after_a_kill(void **state)
{
    struct fixture *fx = *state;
    struct fetch f;
    char err[512] = "";
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    assert_int_equal(run(fx, &f, 3), FETCH_RUNNING);
    int64_t written = f.written;
    fetch_close(&f); /* the kill: no cleanup beyond what the kernel does */
    char part[DSCACHE_PATH_MAX];
    dscache_part_path(&fx->cache, fx->sha, part);
    struct stat st;
    assert_int_equal(stat(part, &st), 0);
    assert_int_equal(st.st_size, written * CHUNK);
    /* Half a chunk more, as a write torn by the kill leaves it. */
    FILE *out = fopen(part, "ab");
    assert_non_null(out);
    fwrite(fx->data + written * CHUNK, 1, CHUNK / 2, out);
    fclose(out);

    memset(&fx->srv.requests, 0, sizeof fx->srv.requests);
    fx->srv.first_index = -1;
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    assert_int_equal(f.resumed, (written - 1) * CHUNK);
    if (run(fx, &f, 0) != FETCH_DONE) fail_msg("resumed fetch: %s", f.err);
    assert_int_equal(fx->srv.first_index, written - 1);
    assert_int_equal(fx->srv.requests[0], 0);
    assert_int_equal(f.fetched, NBYTES - (written - 1) * CHUNK);
    fetch_close(&f);
    assert_cached(fx);
}

static void test_not_found(void **state)
{
    struct fixture *fx = *state;
    fx->srv.not_found = true;
    struct fetch f;
    char err[512] = "", part[DSCACHE_PATH_MAX];
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    assert_int_equal(run(fx, &f, 0), FETCH_FAILED);
    assert_non_null(strstr(f.err, "the broker has no such dataset"));
    assert_non_null(strstr(f.err, fx->sha));
    fetch_close(&f);
    dscache_part_path(&fx->cache, fx->sha, part);
    assert_int_not_equal(access(part, F_OK), 0);
}

/* The broker cannot read its copy: the job fails saying so; an ERROR that
 * is not a FETCH's (another trainer holds our name) is not the fetch's. */
static void test_broker_io_error(void **state)
{
    struct fixture *fx = *state;
    fx->srv.io_error = true;
    struct fetch f;
    char err[512] = "";
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    struct proto_msg other = {.cmd = PROTO_ERROR};
    other.body = json_pack("{s:s, s:s}", "code", "name_in_use", "error", "t1 is taken");
    assert_false(fetch_wants(&f, &other));
    json_decref(other.body);
    assert_int_equal(run(fx, &f, 0), FETCH_FAILED);
    assert_non_null(strstr(f.err, "the broker refused the fetch (io)"));
    fetch_close(&f);
}

static void test_larger_than_the_cache(void **state)
{
    struct fixture *fx = *state;
    char err[512] = "";
    assert_int_equal(dscache_open(&fx->cache, fx->dir, 2, err, sizeof err), 0);
    struct fetch f;
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    assert_int_equal(run(fx, &f, 0), FETCH_FAILED);
    char want[300];
    snprintf(want, sizeof want,
             "dataset %s is 6 MB, more than this trainer's dataset cache holds "
             "(trainer.dataset_cache_mb = 2)",
             fx->sha);
    assert_string_equal(f.err, want);
    assert_int_equal(fx->srv.requests[0], 1); /* one chunk to learn the size, no more */
    fetch_close(&f);
}

/* A chunk corrupt on every reply: a few tries, then a clear failure. */
static void test_always_corrupt(void **state)
{
    struct fixture *fx = *state;
    fx->srv.corrupt_every = 1;
    struct fetch f;
    char err[512] = "";
    assert_int_equal(fetch_open(&f, &fx->cache, fx->sha, 42, err, sizeof err), 0);
    assert_int_equal(run(fx, &f, 0), FETCH_FAILED);
    assert_non_null(strstr(f.err, "chunk 1 failed its hash 5 times"));
    assert_int_equal(fx->srv.requests[1], FETCH_MAX_BAD);
    fetch_close(&f);
}

/* Chunks that match the broker's index but a whole that does not match
 * the name: never cached. */
static void test_whole_hash_mismatch(void **state)
{
    struct fixture *fx = *state;
    memset(fx->srv.sha, 'a', 64);
    struct fetch f;
    char err[512] = "", path[DSCACHE_PATH_MAX];
    assert_int_equal(fetch_open(&f, &fx->cache, fx->srv.sha, 42, err, sizeof err), 0);
    assert_int_equal(run(fx, &f, 0), FETCH_FAILED);
    assert_non_null(strstr(f.err, "hashes to"));
    fetch_close(&f);
    int64_t size;
    assert_int_equal(dscache_lookup(&fx->cache, fx->srv.sha, false, path, &size, err, sizeof err),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fetch_with_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_from_older_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_a_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_io_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_larger_than_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_always_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_hash_mismatch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
