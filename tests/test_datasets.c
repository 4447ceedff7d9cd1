/* Pushed datasets against a real mlq-broker, over the wire (issue 16,
 * docs/protocol.md "Pushed datasets"): a push chunk by chunk and FETCH of
 * every chunk with its hash; hostile pushes (bad fields, types, sizes,
 * names that are paths, chunks out of order or of the wrong length, bytes
 * that are not HDF5 or not the hash) refused with their codes, nothing
 * partial visible; a trainer's DATASET recorded on its job. The broker keeps
 * answering throughout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "broker_harness.h"
#include "chunk_sum.h"
#include "keys.h"
#include "proto.h"
#include "sha256.h"
#include "store.h"

#define CHUNK DATASET_CHUNK_BYTES

struct peer {
    void *sock;
};

static void peer_open(struct harness *h, struct peer *p)
{
    p->sock = zmq_socket(h->zctx, ZMQ_DEALER);
    assert_non_null(p->sock);
    assert_int_equal(proto_socket_setup(p->sock, 0), 0);
    assert_int_equal(zmq_connect(p->sock, h->endpoint), 0);
}

/* The same under CURVE as own, the broker's key pinned. */
static void peer_open_as(struct harness *h, struct peer *p, const struct keys_cert *own)
{
    p->sock = zmq_socket(h->zctx, ZMQ_DEALER);
    assert_non_null(p->sock);
    assert_int_equal(proto_socket_setup(p->sock, 0), 0);
    char err[256];
    assert_int_equal(keys_client_setup(p->sock, own, h->keys.broker.public_z85, err, sizeof err),
                     0);
    assert_int_equal(zmq_connect(p->sock, h->endpoint), 0);
}

static void peer_close(struct peer *p)
{
    zmq_close(p->sock);
}

/* Sends cmd (body stolen, may be NULL) and returns the next reply, whose
 * command goes to cmd_out (OK, ERROR, CHUNK...); NULL after 5 s. */
static json_t *recv_one(struct peer *p, char cmd_out[PROTO_CMD_MAX], void **bin_out,
                        size_t *bin_len);

static json_t *ask(struct peer *p, const char *cmd, json_t *body, const void *bin, size_t len,
                   char cmd_out[PROTO_CMD_MAX], void **bin_out, size_t *bin_len)
{
    assert_int_equal(proto_send(p->sock, NULL, 0, cmd, body, bin, len, 0), 0);
    json_decref(body);
    return recv_one(p, cmd_out, bin_out, bin_len);
}

/* The next message (NULL after 5 s). */
static json_t *recv_one(struct peer *p, char cmd_out[PROTO_CMD_MAX], void **bin_out,
                        size_t *bin_len)
{
    zmq_pollitem_t it = {.socket = p->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, 5000) != 1) return NULL;
    struct proto_msg m;
    char err[256];
    assert_int_equal(proto_recv(p->sock, false, &m, 0, err, sizeof err), 0);
    snprintf(cmd_out, PROTO_CMD_MAX, "%s", m.cmd);
    if (bin_out) {
        *bin_out = m.bin;
        *bin_len = m.bin_len;
        m.bin = NULL;
    }
    json_t *r = json_incref(m.body);
    proto_msg_clear(&m);
    return r;
}

/* The reply's ERROR code (the test fails on OK). */
static void expect_error(struct peer *p, const char *cmd, json_t *body, const void *bin, size_t len,
                         const char *code)
{
    char c[PROTO_CMD_MAX];
    json_t *r = ask(p, cmd, body, bin, len, c, NULL, NULL);
    assert_non_null(r);
    if (strcmp(c, PROTO_ERROR) != 0 ||
        strcmp(json_string_value(json_object_get(r, "code")), code) != 0) {
        char *t = json_dumps(r, 0);
        fail_msg("%s: expected ERROR %s, got %s %s", cmd, code, c, t);
    }
    json_decref(r);
}

static json_t *expect_ok(struct peer *p, const char *cmd, json_t *body, const void *bin, size_t len)
{
    char c[PROTO_CMD_MAX];
    json_t *r = ask(p, cmd, body, bin, len, c, NULL, NULL);
    assert_non_null(r);
    if (strcmp(c, PROTO_OK) != 0) {
        char *t = json_dumps(r, 0);
        fail_msg("%s: expected OK, got %s %s", cmd, c, t);
    }
    return r;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void hex_of(const void *buf, size_t len, char hex[65])
{
    unsigned char d[SHA256_BYTES];
    assert_int_equal(sha256_buf(buf, len, d), 0);
    sha256_hex(d, hex);
}

/* Pushes buf (len) as name chunk by chunk; returns END's reply. */
static json_t *push(struct peer *p, const char *name, const unsigned char *buf, size_t len,
                    const char *sha)
{
    json_t *r = expect_ok(
        p, PROTO_DATASET_PUT,
        json_pack("{s:s, s:s, s:I}", "name", name, "sha256", sha, "size", (json_int_t)len), NULL,
        0);
    int64_t off = json_integer_value(json_object_get(r, "offset"));
    json_decref(r);
    while ((size_t)off < len) {
        size_t n = len - (size_t)off < CHUNK ? len - (size_t)off : CHUNK;
        r = expect_ok(p, PROTO_DATASET_CHUNK,
                      json_pack("{s:s, s:I}", "sha256", sha, "offset", (json_int_t)off), buf + off,
                      n);
        assert_int_equal(json_integer_value(json_object_get(r, "offset")), off + (int64_t)n);
        json_decref(r);
        off += (int64_t)n;
    }
    char c[PROTO_CMD_MAX];
    return ask(p, PROTO_DATASET_END, json_pack("{s:s, s:s}", "sha256", sha, "name", name), NULL, 0,
               c, NULL, NULL);
}

static bool exists(struct harness *h, const char *sub, const char *sha, const char *suffix)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/datasets/%s/%s%s", h->dir, sub, sha, suffix);
    return access(path, F_OK) == 0;
}

/* FETCH chunk i of sha, saying "sum" when sum is set: its bytes, offset,
 * the file's size and chunks, and one sum, field (chunk_xxh128 or
 * chunk_sha256), that matches the bytes and not a damaged copy of them. */
static void fetch_checked(struct peer *p, const char *sha, int64_t i, const unsigned char *buf,
                          size_t len, const char *sum, const char *field)
{
    char c[PROTO_CMD_MAX];
    void *bin;
    size_t blen;
    json_t *q = json_pack("{s:s, s:I}", "sha256", sha, "index", (json_int_t)i);
    if (sum) json_object_set_new(q, "sum", json_string(sum));
    json_t *r = ask(p, PROTO_FETCH, q, NULL, 0, c, &bin, &blen);
    assert_non_null(r);
    assert_string_equal(c, PROTO_CHUNK);
    size_t want = i == 0 ? CHUNK : len - CHUNK;
    assert_int_equal(blen, want);
    assert_memory_equal(bin, buf + i * CHUNK, want);
    assert_int_equal(json_integer_value(json_object_get(r, "offset")), i * CHUNK);
    assert_int_equal(json_integer_value(json_object_get(r, "size")), (json_int_t)len);
    assert_int_equal(json_integer_value(json_object_get(r, "chunks")), 2);
    assert_non_null(json_object_get(r, field));
    assert_int_equal(json_object_size(r), 6); /* one sum, not both */
    assert_true(chunk_matches(r, bin, blen));
    ((unsigned char *)bin)[blen / 2] ^= 1;
    assert_false(chunk_matches(r, bin, blen));
    free(bin);
    json_decref(r);
}

/* A two-chunk dataset pushed over the wire, listed, and fetched back chunk
 * by chunk with each chunk's sum, offset and the file's size: SHA-256 for a
 * fetcher that asks no other (an older one), XXH3-128 for one that does. */
static void test_push_and_fetch(void **state)
{
    struct harness *h = *state;
    char data[512], sha[65];
    h_dataset(h, "two.h5", 70000, 4, 3, 1, data, sizeof data); /* > 1 MiB of float32 */
    size_t len;
    unsigned char *buf = read_all(data, &len);
    assert_true(len > CHUNK && len < 2 * CHUNK);
    hex_of(buf, len, sha);
    h_broker_start(h, NULL);
    struct peer p;
    peer_open(h, &p);
    json_t *r = push(&p, "two", buf, len, sha);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "sha256")), sha);
    assert_int_equal(json_integer_value(json_object_get(r, "size")), (json_int_t)len);
    json_decref(r);
    assert_true(exists(h, "objects", sha, ""));
    assert_false(exists(h, "uploads", sha, ".part"));

    r = expect_ok(&p, PROTO_DATASETS, json_object(), NULL, 0);
    json_t *d = json_array_get(json_object_get(r, "datasets"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "two");
    assert_int_equal(json_integer_value(json_object_get(d, "size")), (json_int_t)len);
    json_decref(r);

    for (int64_t i = 0; i < 2; i++) /* a fetcher that asks for no other sum */
        fetch_checked(&p, sha, i, buf, len, NULL, "chunk_sha256");
    expect_error(&p, PROTO_FETCH, json_pack("{s:s, s:i}", "sha256", sha, "index", 2), NULL, 0,
                 "not_found");
    /* A fetcher that takes XXH3-128 sums gets the index's; the index is one
     * sum of 16 bytes per chunk. */
    assert_true(exists(h, "objects", sha, ".xxh128"));
    assert_false(exists(h, "objects", sha, ".chunks"));
    for (int64_t i = 0; i < 2; i++)
        fetch_checked(&p, sha, i, buf, len, CHUNK_SUM_NAME, "chunk_xxh128");
    /* An object an older broker stored, with a SHA-256 index: its sums go
     * out as chunk_sha256 whatever the fetcher takes, and still match. */
    char idx[1024];
    snprintf(idx, sizeof idx, "%s/datasets/objects/%s.xxh128", h->dir, sha);
    struct stat st;
    assert_int_equal(stat(idx, &st), 0);
    assert_int_equal(st.st_size, 2 * 16);
    peer_close(&p);
    h_broker_kill(h, SIGTERM); /* it holds the index of an open object */
    unlink(idx);
    snprintf(idx, sizeof idx, "%s/datasets/objects/%s.chunks", h->dir, sha);
    FILE *f = fopen(idx, "wb");
    assert_non_null(f);
    for (int64_t i = 0; i < 2; i++) {
        unsigned char sum[SHA256_BYTES];
        assert_int_equal(sha256_buf(buf + i * CHUNK, i == 0 ? CHUNK : len - CHUNK, sum), 0);
        assert_int_equal(fwrite(sum, 1, sizeof sum, f), sizeof sum);
    }
    assert_int_equal(fclose(f), 0);
    h_broker_start(h, NULL);
    peer_open(h, &p);
    for (int64_t i = 0; i < 2; i++)
        fetch_checked(&p, sha, i, buf, len, CHUNK_SUM_NAME, "chunk_sha256");
    /* A second push of the same bytes: have, and END names it at once. */
    r = expect_ok(
        &p, PROTO_DATASET_PUT,
        json_pack("{s:s, s:s, s:I}", "name", "again", "sha256", sha, "size", (json_int_t)len), NULL,
        0);
    assert_true(json_is_true(json_object_get(r, "have")));
    json_decref(r);
    json_decref(expect_ok(&p, PROTO_DATASET_END,
                          json_pack("{s:s, s:s}", "sha256", sha, "name", "again"), NULL, 0));
    peer_close(&p);
    free(buf);
}

/* A .part an earlier broker left (one whole chunk and a torn piece of the
 * next) is resumed at the chunk's end; the rest sent at once, before the
 * broker has read the part back, still makes the exact object. */
static void test_resume_after_restart(void **state)
{
    struct harness *h = *state;
    char data[512], sha[65], path[1024];
    h_dataset(h, "two.h5", 70000, 4, 3, 1, data, sizeof data);
    size_t len;
    unsigned char *buf = read_all(data, &len);
    hex_of(buf, len, sha);
    snprintf(path, sizeof path, "%s/datasets", h->dir);
    mkdir(path, 0750);
    snprintf(path, sizeof path, "%s/datasets/uploads", h->dir);
    mkdir(path, 0750);
    snprintf(path, sizeof path, "%s/datasets/uploads/%s.part", h->dir, sha);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, CHUNK + 1000, f), CHUNK + 1000);
    fclose(f);
    h_broker_start(h, NULL);
    struct peer p;
    peer_open(h, &p);
    json_t *r = expect_ok(
        &p, PROTO_DATASET_PUT,
        json_pack("{s:s, s:s, s:I}", "name", "two", "sha256", sha, "size", (json_int_t)len), NULL,
        0);
    assert_int_equal(json_integer_value(json_object_get(r, "offset")), CHUNK);
    assert_false(json_is_true(json_object_get(r, "have")));
    json_decref(r);
    json_t *c = json_pack("{s:s, s:i}", "sha256", sha, "offset", CHUNK);
    json_t *e = json_pack("{s:s, s:s}", "sha256", sha, "name", "two");
    assert_int_equal(
        proto_send(p.sock, NULL, 0, PROTO_DATASET_CHUNK, c, buf + CHUNK, len - CHUNK, 0), 0);
    assert_int_equal(proto_send(p.sock, NULL, 0, PROTO_DATASET_END, e, NULL, 0, 0), 0);
    json_decref(c);
    json_decref(e);
    json_t *end = NULL;
    for (int i = 0; i < 2; i++) { /* the chunk's OK, then END's */
        char cmd[PROTO_CMD_MAX];
        json_decref(end);
        end = recv_one(&p, cmd, NULL, NULL);
        assert_non_null(end);
        if (strcmp(cmd, PROTO_OK) != 0) fail_msg("expected OK, got %s", cmd);
        if (json_object_get(end, "size")) break;
    }
    assert_int_equal(json_integer_value(json_object_get(end, "size")), (json_int_t)len);
    json_decref(end);
    size_t olen;
    snprintf(path, sizeof path, "%s/datasets/objects/%s", h->dir, sha);
    unsigned char *obj = read_all(path, &olen);
    assert_int_equal(olen, len);
    assert_memory_equal(obj, buf, len);
    free(obj);
    /* The index of the chunk read back from the part is right too. */
    for (int64_t i = 0; i < 2; i++)
        fetch_checked(&p, sha, i, buf, len, CHUNK_SUM_NAME, "chunk_xxh128");
    peer_close(&p);
    free(buf);
}

/* Every kind of bad push is refused with its code; none leaves an object. */
static void test_hostile_pushes(void **state)
{
    struct harness *h = *state;
    char data[512], sha[65];
    h_dataset(h, "small.h5", 200, 4, 2, 1, data, sizeof data);
    size_t len;
    unsigned char *buf = read_all(data, &len);
    hex_of(buf, len, sha);
    h_broker_start(h, NULL);
    struct peer p;
    peer_open(h, &p);
    const char *P = PROTO_DATASET_PUT;
    expect_error(&p, P, json_object(), NULL, 0, "bad_request");
    expect_error(&p, P, json_pack("{s:s, s:s, s:s}", "name", "a", "sha256", sha, "size", "12"),
                 NULL, 0, "bad_request");
    expect_error(&p, P, json_pack("{s:i, s:s, s:i}", "name", 7, "sha256", sha, "size", 12), NULL, 0,
                 "bad_request");
    const char *names[] = {"../etc", "a/b", ".hidden", "-x", "", "a b", "x\\y"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        expect_error(&p, P,
                     json_pack("{s:s, s:s, s:i}", "name", names[i], "sha256", sha, "size", 12),
                     NULL, 0, "bad_request");
    /* 128 bytes is the longest name (the spec's rule): 129 is refused. */
    char long_name[130];
    memset(long_name, 'n', 129);
    long_name[129] = '\0';
    expect_error(&p, P, json_pack("{s:s, s:s, s:i}", "name", long_name, "sha256", sha, "size", 12),
                 NULL, 0, "bad_request");
    expect_error(
        &p, P, json_pack("{s:s, s:s, s:i}", "name", "a", "sha256", "../../etc/passwd", "size", 12),
        NULL, 0, "bad_request");
    char upper[65];
    for (int i = 0; i < 64; i++)
        upper[i] = 'A';
    upper[64] = '\0';
    expect_error(&p, P, json_pack("{s:s, s:s, s:i}", "name", "a", "sha256", upper, "size", 12),
                 NULL, 0, "bad_request");
    expect_error(&p, P, json_pack("{s:s, s:s, s:i}", "name", "a", "sha256", sha, "size", 0), NULL,
                 0, "too_large");
    expect_error(&p, P, json_pack("{s:s, s:s, s:i}", "name", "a", "sha256", sha, "size", -5), NULL,
                 0, "too_large");
    expect_error(
        &p, P,
        json_pack("{s:s, s:s, s:I}", "name", "a", "sha256", sha, "size", (json_int_t)INT64_MAX),
        NULL, 0, "too_large");
    expect_error(
        &p, P,
        json_pack("{s:s, s:s, s:I}", "name", "a", "sha256", sha, "size", (json_int_t)1 << 39), NULL,
        0, "no_space"); /* 512 GiB: more than this disk has free */
    expect_error(
        &p, P,
        json_pack("{s:s, s:s, s:i, s:s}", "name", "a", "sha256", sha, "size", 12, "replace", "yes"),
        NULL, 0, "bad_request");

    /* Chunks: of no push, out of order, of the wrong length, without bytes. */
    const char *C = PROTO_DATASET_CHUNK;
    expect_error(&p, C, json_pack("{s:s, s:i}", "sha256", sha, "offset", 0), buf, len, "not_found");
    json_decref(expect_ok(
        &p, P,
        json_pack("{s:s, s:s, s:I}", "name", "small", "sha256", sha, "size", (json_int_t)len), NULL,
        0));
    expect_error(&p, C, json_pack("{s:s, s:i}", "sha256", sha, "offset", 1048576), buf, len,
                 "bad_offset");
    expect_error(&p, C, json_pack("{s:s, s:i}", "sha256", sha, "offset", -1), buf, len,
                 "bad_offset");
    expect_error(&p, C, json_pack("{s:s, s:s}", "sha256", sha, "offset", "0"), buf, len,
                 "bad_request");
    expect_error(&p, C, json_pack("{s:s, s:i}", "sha256", sha, "offset", 0), buf, len - 1,
                 "bad_request");
    expect_error(&p, C, json_pack("{s:s, s:i}", "sha256", sha, "offset", 0), NULL, 0,
                 "bad_request");
    expect_error(&p, PROTO_DATASET_END, json_pack("{s:s, s:s}", "sha256", sha, "name", "small"),
                 NULL, 0, "bad_request"); /* not all bytes */
    assert_false(exists(h, "objects", sha, ""));

    /* Bytes that are not HDF5, under their own true hash. */
    unsigned char *noise = malloc(len);
    assert_non_null(noise);
    for (size_t i = 0; i < len; i++)
        noise[i] = (unsigned char)(i * 7 + 3);
    char nsha[65];
    hex_of(noise, len, nsha);
    json_t *r = push(&p, "noise", noise, len, nsha);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "bad_dataset");
    json_decref(r);
    assert_false(exists(h, "objects", nsha, ""));
    assert_false(exists(h, "uploads", nsha, ".part"));

    /* The dataset's bytes under another hash. */
    r = push(&p, "liar", buf, len, nsha);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "hash_mismatch");
    json_decref(r);
    assert_false(exists(h, "objects", nsha, ""));

    /* FETCH and RM of what is not there, in every wrong shape. */
    expect_error(&p, PROTO_FETCH, json_pack("{s:s, s:i}", "sha256", nsha, "index", 0), NULL, 0,
                 "not_found");
    expect_error(&p, PROTO_FETCH, json_pack("{s:s, s:i}", "sha256", "../x", "index", 0), NULL, 0,
                 "not_found");
    expect_error(&p, PROTO_FETCH, json_pack("{s:s, s:s}", "sha256", sha, "index", "0"), NULL, 0,
                 "bad_request");
    expect_error(&p, PROTO_FETCH, json_pack("{s:i}", "index", 0), NULL, 0, "bad_request");
    expect_error(&p, PROTO_DATASET_RM, json_pack("{s:s}", "name", "../../mlq.db"), NULL, 0,
                 "not_found");
    expect_error(&p, PROTO_DATASET_RM, json_pack("{s:i}", "name", 3), NULL, 0, "bad_request");

    /* A JSON frame that is not JSON is dropped; the broker goes on. */
    zmq_send(p.sock, PROTO_HEADER, 4, ZMQ_SNDMORE);
    zmq_send(p.sock, PROTO_DATASET_PUT, strlen(PROTO_DATASET_PUT), ZMQ_SNDMORE);
    zmq_send(p.sock, "{not json", 9, 0);

    /* The honest push still goes through afterwards, from the part's start. */
    r = push(&p, "small", buf, len, sha);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "sha256")), sha);
    json_decref(r);
    assert_true(exists(h, "objects", sha, ""));
    r = expect_ok(&p, PROTO_DATASETS, json_object(), NULL, 0);
    assert_int_equal(json_array_size(json_object_get(r, "datasets")), 1);
    json_decref(r);
    peer_close(&p);
    free(noise);
    free(buf);
}

/* A trainer's DATASET is recorded on its own job only; a spec naming the
 * dataset resolves to its hash, and rm is refused while the job runs. */
static void test_trainer_dataset_recorded(void **state)
{
    struct harness *h = *state;
    char data[512], sha[65];
    h_dataset(h, "d.h5", 200, 4, 2, 1, data, sizeof data);
    size_t len;
    unsigned char *buf = read_all(data, &len);
    hex_of(buf, len, sha);
    h_broker_start(h, NULL);
    struct peer p, t;
    peer_open(h, &p);
    json_decref(push(&p, "d", buf, len, sha));

    peer_open(h, &t);
    char c[PROTO_CMD_MAX];
    json_t *w = ask(&t, PROTO_HELLO,
                    json_pack("{s:s, s:s, s:s}", "name", "fake", "host", "test", "version", "0"),
                    NULL, 0, c, NULL, NULL);
    assert_non_null(w);
    assert_string_equal(c, PROTO_WELCOME);
    json_decref(w);
    json_t *spec = h_train_spec(data, 4, 2, 1, 1);
    json_object_set_new(spec, "dataset", json_pack("{s:s}", "name", "d"));
    int64_t id = h_submit(h, spec);
    json_t *job = NULL;
    for (int i = 0; i < 50 && !job; i++) {
        zmq_pollitem_t it = {.socket = t.sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 100) != 1) continue;
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(t.sock, false, &m, 0, err, sizeof err), 0);
        if (strcmp(m.cmd, PROTO_JOB) == 0) job = json_incref(m.body);
        proto_msg_clear(&m);
    }
    assert_non_null(job);
    json_t *jd = json_object_get(json_object_get(job, "spec"), "dataset");
    assert_string_equal(json_string_value(json_object_get(jd, "sha256")), sha);
    assert_string_equal(json_string_value(json_object_get(jd, "name")), "d");
    json_decref(job);
    expect_error(&p, PROTO_DATASET_RM, json_pack("{s:s}", "name", "d"), NULL, 0, "in_use");

    /* Another job's id, a bad hash: ignored; its own job: recorded. */
    char other[65];
    memset(other, 'a', 64);
    other[64] = '\0';
    json_t *bad[2] = {json_pack("{s:I, s:s}", "job", (json_int_t)id + 5, "sha256", other),
                      json_pack("{s:I, s:s}", "job", (json_int_t)id, "sha256", "ZZ")};
    for (int i = 0; i < 2; i++) {
        proto_send(t.sock, NULL, 0, PROTO_DATASET, bad[i], NULL, 0, 0);
        json_decref(bad[i]);
    }
    json_t *ds = json_pack("{s:I, s:s, s:I, s:i}", "job", (json_int_t)id, "sha256", sha, "size",
                           (json_int_t)len, "fetched_bytes", 0);
    proto_send(t.sock, NULL, 0, PROTO_DATASET, ds, NULL, 0, 0);
    json_decref(ds);
    char got[65] = "";
    for (int i = 0; i < 50 && !got[0]; i++) {
        struct store *s;
        char err[256];
        if (store_open(&s, h->db, STORE_READONLY, err, sizeof err) == 0) {
            struct store_job j;
            if (store_job_get(s, id, &j) == 0) {
                if (j.dataset_sha256) snprintf(got, sizeof got, "%s", j.dataset_sha256);
                store_job_free(&j);
            }
            store_close(&s);
        }
        if (!got[0]) usleep(100000);
    }
    assert_string_equal(got, sha);
    peer_close(&t);
    peer_close(&p);
    free(buf);
}

/* Under keys each role speaks its own commands: a trainer may not push or
 * list, but fetches; a user pushes, fetches, and removes only its own
 * datasets (an admin any). */
static void test_roles_under_keys(void **state)
{
    struct harness *h = *state;
    char data[512], sha[65];
    h_dataset(h, "d.h5", 200, 4, 2, 1, data, sizeof data);
    size_t len;
    unsigned char *buf = read_all(data, &len);
    hex_of(buf, len, sha);
    struct keys_cert alice, bob, admin, trainer;
    h_keys_init(h);
    h_key_make(h, &alice, "alice", KEYS_ROLE_USER, true);
    h_key_make(h, &bob, "bob", KEYS_ROLE_USER, true);
    h_key_make(h, &admin, "root", KEYS_ROLE_ADMIN, true);
    h_key_make(h, &trainer, "t1", KEYS_ROLE_TRAINER, true);
    h_broker_start_keys(h, &alice, NULL);
    struct peer a, bo, ad, t;
    peer_open_as(h, &a, &alice);
    peer_open_as(h, &bo, &bob);
    peer_open_as(h, &ad, &admin);
    peer_open_as(h, &t, &trainer);
    json_t *r = push(&a, "mine", buf, len, sha);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "sha256")), sha);
    json_decref(r);
    r = expect_ok(&bo, PROTO_DATASETS, json_object(), NULL, 0);
    json_t *d = json_array_get(json_object_get(r, "datasets"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "owner")), "alice");
    json_decref(r);

    expect_error(&t, PROTO_DATASET_PUT,
                 json_pack("{s:s, s:s, s:I}", "name", "t", "sha256", sha, "size", (json_int_t)len),
                 NULL, 0, "forbidden");
    expect_error(&t, PROTO_DATASETS, json_object(), NULL, 0, "forbidden");
    char c[PROTO_CMD_MAX];
    void *bin;
    size_t blen;
    r = ask(&t, PROTO_FETCH, json_pack("{s:s, s:i}", "sha256", sha, "index", 0), NULL, 0, c, &bin,
            &blen);
    assert_non_null(r);
    assert_string_equal(c, PROTO_CHUNK);
    assert_int_equal(blen, len);
    free(bin);
    json_decref(r);

    /* Bob's push of the same bytes under alice's name changes nothing; he may not move it. */
    json_decref(push(&bo, "mine", buf, len, sha));
    r = expect_ok(&bo, PROTO_DATASETS, json_object(), NULL, 0);
    d = json_array_get(json_object_get(r, "datasets"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "owner")), "alice");
    json_decref(r);
    char other[512], osha[65];
    h_dataset(h, "e.h5", 300, 4, 2, 2, other, sizeof other);
    size_t olen;
    unsigned char *obuf = read_all(other, &olen);
    hex_of(obuf, olen, osha);
    expect_error(&bo, PROTO_DATASET_PUT,
                 json_pack("{s:s, s:s, s:I, s:b}", "name", "mine", "sha256", osha, "size",
                           (json_int_t)olen, "replace", 1),
                 NULL, 0, "forbidden");
    free(obuf);
    expect_error(&bo, PROTO_DATASET_RM, json_pack("{s:s}", "name", "mine"), NULL, 0, "forbidden");
    json_decref(expect_ok(&ad, PROTO_DATASET_RM, json_pack("{s:s}", "name", "mine"), NULL, 0));
    peer_close(&a);
    peer_close(&bo);
    peer_close(&ad);
    peer_close(&t);
    free(buf);
}

/* A sweep whose space varies dataset.name: each trial means its own name's
 * bytes; a trial naming no dataset refuses the sweep. */
static void test_sweep_over_names(void **state)
{
    struct harness *h = *state;
    char pa[512], pb[512], sa[65], sb[65];
    h_dataset(h, "a.h5", 200, 4, 2, 1, pa, sizeof pa);
    h_dataset(h, "b.h5", 300, 4, 2, 2, pb, sizeof pb);
    size_t la, lb;
    unsigned char *ba = read_all(pa, &la), *bb = read_all(pb, &lb);
    hex_of(ba, la, sa);
    hex_of(bb, lb, sb);
    h_broker_start(h, NULL);
    struct peer p;
    peer_open(h, &p);
    json_decref(push(&p, "a", ba, la, sa));
    json_decref(push(&p, "b", bb, lb, sb));
    json_t *spec = h_train_spec(pa, 4, 2, 1, 1);
    json_object_set_new(spec, "dataset", json_pack("{s:s}", "name", "a"));
    json_t *r = expect_ok(&p, PROTO_SWEEP,
                          json_pack("{s:O, s:{s:[s,s]}, s:{s:s, s:s}}", "spec", spec, "space",
                                    "dataset.name", "a", "b", "sweep", "metric", "train_loss",
                                    "scheduler", "none"),
                          NULL, 0);
    assert_int_equal(json_integer_value(json_object_get(r, "trials")), 2);
    json_decref(r);
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    bool seen_a = false, seen_b = false;
    for (int64_t id = 1; id <= 2; id++) {
        struct store_job j;
        assert_int_equal(store_job_get(s, id, &j), 0);
        json_t *doc = json_loads(j.spec_json, 0, NULL);
        json_t *d = json_object_get(doc, "dataset");
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *sha = json_string_value(json_object_get(d, "sha256"));
        assert_non_null(name);
        assert_non_null(sha);
        assert_string_equal(sha, strcmp(name, "a") == 0 ? sa : sb);
        seen_a |= strcmp(name, "a") == 0;
        seen_b |= strcmp(name, "b") == 0;
        json_decref(doc);
        store_job_free(&j);
    }
    store_close(&s);
    assert_true(seen_a && seen_b);
    expect_error(&p, PROTO_SWEEP,
                 json_pack("{s:O, s:{s:[s,s]}, s:{s:s, s:s}}", "spec", spec, "space",
                           "dataset.name", "a", "nothing", "sweep", "metric", "train_loss",
                           "scheduler", "none"),
                 NULL, 0, "bad_spec");
    json_decref(spec);
    peer_close(&p);
    free(ba);
    free(bb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_push_and_fetch, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_restart, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_pushes, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_trainer_dataset_recorded, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_roles_under_keys, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_over_names, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
