/* A trainer's upload of a predict output (trainer/upload.h) against a fake
 * broker: a ROUTER that keeps the pushed bytes and answers as the protocol
 * says, with the faults a real broker meets: a dropped reply, a push it lost
 * (not_found, as after a restart), a refusal, a resumed push. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "fake_broker.h"
#include "proto.h"
#include "sha256.h"
#include "testutil.h"
#include "upload.h"

#define CHUNK DATASET_CHUNK_BYTES
#define NBYTES (3 * CHUNK + 1000) /* four chunks, the last one short */

struct server {
    unsigned char *got;  /* the bytes received, in order */
    int64_t end;         /* how many */
    int64_t start_at;    /* PUT's offset: a push the broker kept part of */
    bool have;           /* PUT answers have=true */
    int drop_chunk_once; /* the chunk at this offset gets no reply once, -1 none */
    bool lose_once;      /* the second chunk is answered not_found once */
    const char *refuse;  /* an ERROR code for PUT, or NULL */
    int puts, chunks, ends;
    int max_ahead; /* the most bytes sent beyond end */
    bool done;
};

struct fixture {
    char *dir;
    char path[4096];
    unsigned char *data;
    char sha[65];
    struct fake_broker fb;
    struct server srv;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = testutil_tmpdir("upload");
    snprintf(f->path, sizeof f->path, "%s/job-7.h5", f->dir);
    f->data = malloc(NBYTES);
    testutil_noise(f->data, NBYTES);
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(f->data, 1, NBYTES, fp), NBYTES);
    fclose(fp);
    unsigned char d[SHA256_BYTES];
    sha256_buf(f->data, NBYTES, d);
    sha256_hex(d, f->sha);
    f->srv = (struct server){.got = calloc(1, NBYTES), .drop_chunk_once = -1};
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
    free(f->srv.got);
    free(f);
    return 0;
}

static void ok(void *router, const struct proto_msg *m, json_t *body)
{
    proto_send(router, m->ident, m->ident_len, PROTO_OK, body, NULL, 0, 0);
    json_decref(body);
}

/* Answers one message of the push as the broker would (and as the faults say). */
static void serve_one(struct server *s, const char *sha, void *router, struct proto_msg *m)
{
    assert_int_equal(json_integer_value(json_object_get(m->body, "job")), 7);
    if (strcmp(m->cmd, PROTO_DATASET_PUT) == 0) {
        s->puts++;
        assert_string_equal(json_string_value(json_object_get(m->body, "name")), "predict-7");
        assert_int_equal(json_integer_value(json_object_get(m->body, "size")), NBYTES);
        if (s->refuse) {
            proto_send_error(router, m->ident, m->ident_len, s->refuse, "no room for %s", "it");
            return;
        }
        if (s->start_at > s->end) s->end = s->start_at; /* kept from an earlier push */
        ok(router, m,
           json_pack("{s:s, s:I, s:b}", "sha256", sha, "offset",
                     (json_int_t)(s->have ? NBYTES : s->end), "have", s->have));
    } else if (strcmp(m->cmd, PROTO_DATASET_CHUNK) == 0) {
        s->chunks++;
        int64_t off = json_integer_value(json_object_get(m->body, "offset"));
        int64_t ahead = off + (int64_t)m->bin_len - s->end;
        if (ahead > s->max_ahead) s->max_ahead = (int)ahead;
        if (off == s->drop_chunk_once) {
            s->drop_chunk_once = -1;
            return;
        }
        if (s->lose_once && off == CHUNK) {
            s->lose_once = false;
            s->end = 0; /* the broker forgot the push */
            proto_send_error(router, m->ident, m->ident_len, "not_found", "no push of %s", sha);
            return;
        }
        if (off != s->end) {
            proto_send_error(router, m->ident, m->ident_len, "bad_offset", "at %lld",
                             (long long)s->end);
            return;
        }
        memcpy(s->got + off, m->bin, m->bin_len);
        s->end += (int64_t)m->bin_len;
        ok(router, m, json_pack("{s:s, s:I}", "sha256", sha, "offset", (json_int_t)s->end));
    } else {
        assert_string_equal(m->cmd, PROTO_DATASET_END);
        s->ends++;
        assert_int_equal(s->have ? NBYTES : s->end, NBYTES);
        s->done = true;
        ok(router, m,
           json_pack("{s:s, s:s, s:I}", "name", "predict-7", "sha256", sha, "size",
                     (json_int_t)NBYTES));
    }
}

/* Runs u to its end (or limit seconds), as the I/O thread does. */
static enum upload_state drive(struct fixture *f, struct upload *u, double limit)
{
    double until = fake_broker_now() + limit;
    upload_pump(u, f->fb.dealer, fake_broker_now());
    while (u->state == UPLOAD_RUNNING && fake_broker_now() < until) {
        zmq_pollitem_t it[2] = {{.socket = f->fb.router, .events = ZMQ_POLLIN},
                                {.socket = f->fb.dealer, .events = ZMQ_POLLIN}};
        zmq_poll(it, 2, 20);
        struct proto_msg m;
        char err[256];
        while (proto_recv(f->fb.router, true, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
            serve_one(&f->srv, f->sha, f->fb.router, &m);
            proto_msg_clear(&m);
        }
        while (u->state == UPLOAD_RUNNING &&
               proto_recv(f->fb.dealer, false, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
            assert_true(upload_wants(u, &m));
            upload_on_message(u, &m, f->fb.dealer, fake_broker_now());
            proto_msg_clear(&m);
        }
        upload_pump(u, f->fb.dealer, fake_broker_now());
    }
    return u->state;
}

static void open_upload(struct fixture *f, struct upload *u)
{
    if (upload_open(u, f->path, "predict-7", f->sha, NBYTES, 7) != UPLOAD_RUNNING)
        fail_msg("%s", u->err);
    u->resend_s = 0.3;
}

static void test_whole_push(void **state)
{
    struct fixture *f = *state;
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_DONE);
    assert_true(f->srv.done);
    assert_memory_equal(f->srv.got, f->data, NBYTES);
    assert_int_equal(f->srv.puts, 1);
    assert_int_equal(f->srv.chunks, 4);
    assert_int_equal(u.sent, NBYTES);
    assert_true(f->srv.max_ahead <= DATASET_WINDOW * CHUNK);
    upload_close(&u);
}

static void test_broker_has_it(void **state)
{
    struct fixture *f = *state;
    f->srv.have = true;
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_DONE);
    assert_int_equal(f->srv.chunks, 0);
    assert_int_equal(f->srv.ends, 1);
    upload_close(&u);
}

static void test_resumes_where_the_broker_is(void **state)
{
    struct fixture *f = *state;
    memcpy(f->srv.got, f->data, 2 * CHUNK);
    f->srv.start_at = 2 * CHUNK;
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_DONE);
    assert_int_equal(u.sent, NBYTES - 2 * CHUNK);
    assert_memory_equal(f->srv.got, f->data, NBYTES);
    upload_close(&u);
}

/* A reply lost: the upload asks again after resend_s and goes on. */
static void test_dropped_reply(void **state)
{
    struct fixture *f = *state;
    f->srv.drop_chunk_once = 3 * CHUNK; /* the last chunk: nothing after it to notice */
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_DONE);
    assert_int_equal(f->srv.puts, 2);
    assert_memory_equal(f->srv.got, f->data, NBYTES);
    upload_close(&u);
}

/* The broker lost the push (a restart): a new PUT, from where it stands. */
static void test_lost_push(void **state)
{
    struct fixture *f = *state;
    f->srv.lose_once = true;
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_DONE);
    assert_true(f->srv.puts >= 2);
    assert_memory_equal(f->srv.got, f->data, NBYTES);
    upload_close(&u);
}

static void test_refused(void **state)
{
    struct fixture *f = *state;
    f->srv.refuse = "no_space";
    struct upload u;
    open_upload(f, &u);
    assert_int_equal(drive(f, &u, 10), UPLOAD_FAILED);
    assert_non_null(strstr(u.err, "refused the output: no room for it"));
    assert_int_equal(f->srv.chunks, 0);
    upload_close(&u);
}

/* A broker that never answers: the upload gives up, it does not hang. */
static void test_silent_broker(void **state)
{
    struct fixture *f = *state;
    struct upload u;
    open_upload(f, &u);
    u.resend_s = 0.05;
    upload_pump(&u, f->fb.dealer, fake_broker_now());
    double until = fake_broker_now() + 5;
    while (u.state == UPLOAD_RUNNING && fake_broker_now() < until) {
        usleep(20000);
        upload_pump(&u, f->fb.dealer, fake_broker_now());
    }
    assert_int_equal(u.state, UPLOAD_FAILED);
    assert_non_null(strstr(u.err, "did not take the output"));
    upload_close(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_whole_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_has_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resumes_where_the_broker_is, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_broker, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
