/* Serving (issue 13, docs/serving.md) against real processes: mlq-broker,
 * mlq-trainer replicas, the SQLite store, HDF5 files, mlq and libmlq.
 *
 *   deploy + infer give exactly what predict gives, through mlq and libmlq
 *   hostile requests get clear errors; the broker and the replica live on
 *   a rollover under load fails no request, and old and new both answer
 *   a replica killed under load fails no request and is replaced
 *   a broker restart re-places the deployment from the database
 *   a request that cannot be answered in time gets ERROR timeout */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <jansson.h>
#include <zmq.h>

#include "broker_harness.h"
#include "keys.h"
#include "mlq.h"
#include "proto.h"

#define D 8
#define K 3

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A trained run on a fresh dataset; returns its id. */
static int64_t train_run(struct harness *h, const char *name, int epochs, uint64_t seed)
{
    char path[512];
    h_dataset(h, name, 300, D, K, seed, path, sizeof path);
    int64_t id = h_submit(h, h_train_spec(path, D, K, epochs, seed));
    char state[32];
    h_wait_terminal(h, id, 50, state, sizeof state);
    assert_string_equal(state, "succeeded");
    return id;
}

static json_t *call_ok(struct harness *h, const char *cmd, json_t *body)
{
    bool is_error = true;
    json_t *r = h_call(h, cmd, body, &is_error);
    assert_non_null(r);
    if (is_error) fail_msg("%s: %s", cmd, json_string_value(json_object_get(r, "error")));
    return r;
}

/* DEPLOY, then polls DEPLOYMENTS until `ready` replicas serve its generation. */
static json_t *deploy(struct harness *h, const char *name, int64_t run, int replicas, int ready)
{
    json_t *r = call_ok(
        h, PROTO_DEPLOY,
        json_pack("{s:s, s:I, s:i}", "name", name, "run", (json_int_t)run, "replicas", replicas));
    json_int_t gen = json_integer_value(json_object_get(r, "generation"));
    json_decref(r);
    double until = h_now() + 20;
    while (h_now() < until) {
        json_t *l = call_ok(h, PROTO_DEPLOYMENTS, json_pack("{s:s}", "name", name));
        json_t *d = json_array_get(json_object_get(l, "deployments"), 0);
        if (json_integer_value(json_object_get(d, "generation")) == gen &&
            json_integer_value(json_object_get(d, "ready")) >= ready)
            return l;
        json_decref(l);
        sleep_ms(50);
    }
    fail_msg("deployment %s: %d replicas not ready in 20 s; see %s/broker.log", name, ready,
             h->dir);
    return NULL;
}

static void *h5_read(const char *path, const char *name, hid_t type, size_t elem, size_t *n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    *n = (size_t)H5Sget_simple_extent_npoints(s);
    void *buf = malloc(*n * elem);
    assert_true(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(f);
    return buf;
}

/* ---- deploy and infer = predict -------------------------------------------------- */

static void test_infer_matches_predict(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    h_trainer_start(h, "t2");
    int64_t run = train_run(h, "train.h5", 3, 11);
    char input[512], pred[600], inf[600], json_out[600];
    h_dataset(h, "new.h5", 40, D, K, 12, input, sizeof input);
    snprintf(pred, sizeof pred, "%s/pred.h5", h->dir);
    snprintf(inf, sizeof inf, "%s/inf.h5", h->dir);
    snprintf(json_out, sizeof json_out, "%s/infer.json", h->dir);
    json_t *spec = json_pack("{s:s, s:I, s:{s:s}, s:s}", "kind", "predict", "run", (json_int_t)run,
                             "input", "path", input, "output", pred);
    int64_t pj = h_submit(h, spec);
    char st[32];
    h_wait_terminal(h, pj, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");

    /* mlq deploy waits for its replica; mlq infer writes predict's file. */
    char runs[32];
    snprintf(runs, sizeof runs, "%lld", (long long)run);
    const char *dep[] = {
        MLQ_BINARY_DIR "/cli/mlq", "deploy", runs, "--name", "fm", "--broker", h->endpoint, NULL};
    assert_int_equal(h_run(h, dep, NULL), 0);
    const char *infer[] = {MLQ_BINARY_DIR "/cli/mlq",
                           "infer",
                           "fm",
                           "--input",
                           input,
                           "--output",
                           inf,
                           "--broker",
                           h->endpoint,
                           NULL};
    assert_int_equal(h_run(h, infer, NULL), 0);
    size_t n1, n2, m1, m2;
    int32_t *p1 = h5_read(pred, "predictions", H5T_NATIVE_INT32, 4, &n1);
    int32_t *p2 = h5_read(inf, "predictions", H5T_NATIVE_INT32, 4, &n2);
    float *q1 = h5_read(pred, "probabilities", H5T_NATIVE_FLOAT, 4, &m1);
    float *q2 = h5_read(inf, "probabilities", H5T_NATIVE_FLOAT, 4, &m2);
    assert_int_equal(n1, 40);
    assert_int_equal(n2, 40);
    assert_int_equal(m1, 40 * K);
    assert_int_equal(m2, 40 * K);
    assert_memory_equal(p1, p2, n1 * 4);
    assert_memory_equal(q1, q2, m1 * 4); /* the same bits: one forward pass per batch */

    /* libmlq, one row at a time: the same answers. */
    struct mlq_client *c;
    char err[512];
    assert_int_equal(mlq_client_open(&c, h->endpoint, err, sizeof err), 0);
    float *x = malloc(40 * D * sizeof *x);
    {
        size_t nx;
        float *all = h5_read(input, "X", H5T_NATIVE_FLOAT, 4, &nx);
        assert_int_equal(nx, 40 * D);
        memcpy(x, all, nx * sizeof *x);
        free(all);
    }
    for (int r = 0; r < 40; r++) {
        float out[K];
        int cls;
        struct mlq_infer_info info;
        assert_int_equal(mlq_infer(c, "fm", x + r * D, 1, D, out, K, &cls, &info, err, sizeof err),
                         0);
        /* One row per forward pass: OpenBLAS may round a 1-row product
         * otherwise than a 40-row one (docs/serving.md). */
        assert_int_equal(cls, p1[r]);
        for (int k = 0; k < K; k++)
            assert_true(fabsf(out[k] - q1[r * K + k]) <= 1e-6f);
        assert_int_equal(info.run, run);
        assert_int_equal(info.generation, 1);
        assert_int_equal(info.outputs, K);
        assert_true(info.classification);
    }
    /* mlq infer --json with rows on standard input. */
    char rows_path[600];
    snprintf(rows_path, sizeof rows_path, "%s/rows.json", h->dir);
    FILE *f = fopen(rows_path, "w");
    fprintf(f, "[");
    for (int r = 0; r < 3; r++) {
        fprintf(f, "%s[", r ? "," : "");
        for (int k = 0; k < D; k++)
            fprintf(f, "%s%.9g", k ? "," : "", x[r * D + k]);
        fprintf(f, "]");
    }
    fprintf(f, "]\n");
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/cli/mlq infer fm --json --broker %s < %s > %s", MLQ_BINARY_DIR,
             h->endpoint, rows_path, json_out);
    assert_int_equal(system(cmd), 0);
    json_t *o = json_load_file(json_out, 0, NULL);
    assert_non_null(o);
    json_t *preds = json_object_get(o, "predictions");
    assert_int_equal(json_array_size(preds), 3);
    for (int r = 0; r < 3; r++)
        assert_int_equal(json_integer_value(json_array_get(preds, (size_t)r)), p1[r]);
    json_decref(o);

    /* The counters; the replica is not given jobs; undeploy. */
    json_t *l = call_ok(h, PROTO_DEPLOYMENTS, json_object());
    json_t *d0 = json_array_get(json_object_get(l, "deployments"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "name")), "fm");
    assert_true(json_integer_value(json_object_get(d0, "requests")) >= 42);
    assert_int_equal(json_integer_value(json_object_get(d0, "errors")), 0);
    assert_true(json_is_number(json_object_get(json_object_get(d0, "latency"), "p99_us")));
    json_decref(l);
    json_t *w = call_ok(h, PROTO_WORKERS, json_object());
    int serving = 0;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(w, "trainers"), i, t) serving +=
        json_is_string(json_object_get(t, "serving"));
    assert_int_equal(serving, 1);
    json_decref(w);
    /* A job still runs on the other trainer meanwhile. */
    int64_t run2 = train_run(h, "train2.h5", 1, 13);
    assert_true(run2 > run);

    json_decref(call_ok(h, PROTO_UNDEPLOY, json_pack("{s:s}", "name", "fm")));
    float out[K];
    assert_int_equal(mlq_infer(c, "fm", x, 1, D, out, K, NULL, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "no such deployment"));
    const char *gone[] = {
        MLQ_BINARY_DIR "/cli/mlq", "infer", "fm", "--input", input, "--broker", h->endpoint, NULL};
    assert_int_equal(h_run(h, gone, "/dev/null"), 5);
    mlq_client_close(&c);
    free(x);
    free(p1);
    free(p2);
    free(q1);
    free(q2);
}

/* ---- hostile input ----------------------------------------------------------------- */

/* Sends raw frames on a fresh socket; returns the reply's frames 1 and 2
 * (command, body) or NULL (no reply in 1 s). */
static json_t *raw(struct harness *h, char *cmd_out, int nframes, ...)
{
    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, h->endpoint), 0);
    va_list ap;
    va_start(ap, nframes);
    for (int i = 0; i < nframes; i++) {
        const void *p = va_arg(ap, const void *);
        size_t len = va_arg(ap, size_t);
        zmq_send(s, p, len, i < nframes - 1 ? ZMQ_SNDMORE : 0);
    }
    va_end(ap);
    json_t *out = NULL;
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, 1000) == 1) {
        struct proto_msg m;
        char err[256];
        if (proto_recv(s, false, &m, 0, err, sizeof err) == 0) {
            snprintf(cmd_out, PROTO_CMD_MAX, "%s", m.cmd);
            out = json_incref(m.body);
            proto_msg_clear(&m);
        }
    }
    zmq_close(s);
    return out;
}

static void expect_error(json_t *r, const char *cmd, const char *code, const char *words)
{
    assert_non_null(r);
    assert_string_equal(cmd, PROTO_ERROR);
    assert_string_equal(json_string_value(json_object_get(r, "code")), code);
    const char *text = json_string_value(json_object_get(r, "error"));
    if (!strstr(text, words)) fail_msg("\"%s\" does not say \"%s\"", text, words);
    json_decref(r);
}

#define S(x) (x), strlen(x)

/* An INFER_BIN header for deployment name, rows and id (docs/protocol.md). */
static size_t bin_req(unsigned char *hdr, const char *name, uint32_t rows, int64_t id)
{
    struct proto_infer_req r = {.has_id = true, .id = id, .rows = rows, .deadline_ms = 5000};
    snprintf(r.deployment, sizeof r.deployment, "%s", name);
    int n = proto_infer_req_encode(hdr, PROTO_INFER_REQ_FIXED + PROTO_BIN_NAME_MAX, &r);
    assert_true(n > 0);
    return (size_t)n;
}

/* Sends INFER_BIN frames; returns the reply's command into cmd_out and, for
 * ANSWER_BIN, its decoded header into *a and outputs into out (K floats);
 * for ERROR its body (caller json_decref), else NULL. */
static json_t *raw_bin(struct harness *h, char *cmd_out, const void *hdr, size_t hdr_len,
                       const void *rows, size_t rows_len, struct proto_answer *a, float *out)
{
    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, h->endpoint), 0);
    assert_int_equal(proto_send_bin(s, NULL, 0, PROTO_INFER_BIN, hdr, hdr_len, rows, rows_len, 0),
                     0);
    json_t *body = NULL;
    cmd_out[0] = '\0';
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, 2000) == 1) {
        struct proto_msg m;
        char err[256];
        assert_int_equal(proto_recv(s, false, &m, 0, err, sizeof err), 0);
        snprintf(cmd_out, PROTO_CMD_MAX, "%s", m.cmd);
        if (strcmp(m.cmd, PROTO_ANSWER_BIN) == 0) {
            assert_int_equal(proto_answer_decode(m.hdr, m.hdr_len, a, err, sizeof err), 0);
            assert_int_equal(m.bin_len, a->rows * a->outputs * sizeof(float));
            memcpy(out, m.bin, m.bin_len);
            a->class_ids = NULL; /* points into m */
        } else {
            body = json_incref(m.body);
        }
        proto_msg_clear(&m);
    }
    zmq_close(s);
    return body;
}

static void test_hostile_requests(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    int64_t run = train_run(h, "train.h5", 1, 21);
    json_decref(deploy(h, "m", run, 1, 1));
    char cmd[PROTO_CMD_MAX] = "";
    float row[D] = {0}, two[2 * D] = {0};
    char body[256];

    /* NaN, infinity, the wrong width, no rows, too many rows. */
    row[3] = NAN;
    snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":1,\"id\":5}");
    json_t *r = raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 5);
    expect_error(r, cmd, "bad_input", "row 0, input 3 is NaN");
    row[3] = INFINITY;
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd, "bad_input",
                 "infinite");
    row[3] = 0;
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), two, sizeof two), cmd,
                 "bad_request", "takes 8 inputs per row");
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("INFER"), S(body)), cmd, "bad_request",
                 "takes 8 inputs per row");
    snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":0}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd,
                 "bad_request", "rows");
    snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":9000000000000}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd, "too_large",
                 "smaller requests");
    snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":1000000}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd, "too_large",
                 "smaller requests");
    /* An unknown deployment, a missing name, a bad deadline. */
    snprintf(body, sizeof body, "{\"deployment\":\"nope\",\"rows\":1}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd, "not_found",
                 "deployment nope: no such deployment");
    snprintf(body, sizeof body, "{\"rows\":1}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd,
                 "bad_request", "deployment");
    snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":1,\"deadline_ms\":-4}");
    expect_error(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S(body), row, sizeof row), cmd,
                 "bad_request", "deadline_ms");
    /* Deployments that cannot be: no such run, a bad name, a checkpoint
     * that does not exist, a run that is not a train job. */
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("DEPLOY"), S("{\"name\":\"x\",\"run\":999}")), cmd,
                 "not_found", "run 999: no such run");
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("DEPLOY"), S("{\"name\":\"a b\",\"run\":1}")), cmd,
                 "bad_request", "name");
    snprintf(body, sizeof body, "{\"name\":\"x\",\"run\":%lld,\"checkpoint\":\"77\"}",
             (long long)run);
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("DEPLOY"), S(body)), cmd, "bad_request",
                 "checkpoint 77 does not exist");
    snprintf(body, sizeof body, "{\"name\":\"x\",\"run\":%lld,\"replicas\":0}", (long long)run);
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("DEPLOY"), S(body)), cmd, "bad_request", "replicas");
    expect_error(raw(h, cmd, 3, S("MLQ1"), S("UNDEPLOY"), S("{\"name\":\"zz\"}")), cmd, "not_found",
                 "no such deployment");
    /* The binary form (INFER_BIN): the same answers as INFER, and the same
     * errors for the same mistakes; a header that does not decode is a
     * bad_request that says why. */
    {
        unsigned char hdr[PROTO_INFER_REQ_FIXED + PROTO_BIN_NAME_MAX];
        struct proto_answer a;
        float bout[2 * K], jout[K];
        size_t hl = bin_req(hdr, "m", 1, 77);
        json_t *e = raw_bin(h, cmd, hdr, hl, row, sizeof row, &a, bout);
        assert_null(e);
        assert_string_equal(cmd, PROTO_ANSWER_BIN);
        assert_true(a.has_id && a.id == 77);
        assert_int_equal(a.rows, 1);
        assert_int_equal(a.outputs, K);
        assert_true(a.classes);
        assert_int_equal(a.run, run);
        assert_int_equal(a.generation, 1);
        snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":1,\"id\":78}");
        void *js = zmq_socket(h->zctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(js, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(js, h->endpoint);
        proto_send_text(js, NULL, 0, PROTO_INFER, body, row, sizeof row, 0);
        struct proto_msg jm;
        char jerr[256];
        assert_int_equal(proto_recv(js, false, &jm, 0, jerr, sizeof jerr), 0);
        assert_string_equal(jm.cmd, PROTO_OK);
        assert_int_equal(jm.bin_len, sizeof jout);
        memcpy(jout, jm.bin, sizeof jout);
        proto_msg_clear(&jm);
        zmq_close(js);
        assert_memory_equal(bout, jout, sizeof jout); /* one row, one forward pass each */
        row[2] = NAN;
        expect_error(raw_bin(h, cmd, hdr, hl, row, sizeof row, &a, bout), cmd, "bad_input",
                     "row 0, input 2 is NaN");
        row[2] = 0;
        expect_error(raw_bin(h, cmd, hdr, hl, two, sizeof two, &a, bout), cmd, "bad_request",
                     "takes 8 inputs per row");
        hl = bin_req(hdr, "nope", 1, 79);
        expect_error(raw_bin(h, cmd, hdr, hl, row, sizeof row, &a, bout), cmd, "not_found",
                     "deployment nope: no such deployment");
        hl = bin_req(hdr, "m", 0, 80);
        expect_error(raw_bin(h, cmd, hdr, hl, row, sizeof row, &a, bout), cmd, "bad_request",
                     "rows");
        hl = bin_req(hdr, "m", 1, 81);
        hdr[0] = 9; /* version 9 */
        expect_error(raw_bin(h, cmd, hdr, hl, row, sizeof row, &a, bout), cmd, "bad_request",
                     "header version 9");
        hdr[0] = 1;
        expect_error(raw_bin(h, cmd, hdr, 10, row, sizeof row, &a, bout), cmd, "bad_request",
                     "at least 24 expected");
        expect_error(raw_bin(h, cmd, hdr, hl - 1, row, sizeof row, &a, bout), cmd, "bad_request",
                     "deployment name");
        /* A replica's forged INFERRED_BIN from a client: WHO, nothing answered. */
        unsigned char forged[PROTO_INFERRED_FIXED + PROTO_BIN_REC];
        proto_batch_encode(forged, &(struct proto_batch){.n = 1, .outputs = K, .generation = 1},
                           true);
        proto_rec_put(forged + PROTO_INFERRED_FIXED, 1048577, 1);
        void *fs = zmq_socket(h->zctx, ZMQ_DEALER);
        zmq_setsockopt(fs, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(fs, h->endpoint);
        proto_send_bin(fs, NULL, 0, PROTO_INFERRED_BIN, forged, sizeof forged, bout,
                       K * sizeof(float), 0);
        assert_int_equal(proto_recv(fs, false, &jm, 0, jerr, sizeof jerr), 0);
        assert_string_equal(jm.cmd, PROTO_WHO);
        proto_msg_clear(&jm);
        zmq_close(fs);
    }
    /* Garbage gets nothing (dropped and logged), and kills nothing. */
    assert_null(raw(h, cmd, 1, S("garbage")));
    assert_null(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S("not json"), row, sizeof row));
    assert_null(raw(h, cmd, 4, S("MLQ1"), S("INFER"), S("[1,2]"), row, sizeof row));
    /* A client posing as a replica is asked who it is; nothing is answered. */
    json_t *who =
        raw(h, cmd, 4, S("MLQ1"), S("INFERRED"),
            S("{\"reqs\":[[1048577,1]],\"outputs\":3,\"generation\":1}"), row, 3 * sizeof(float));
    assert_non_null(who);
    assert_string_equal(cmd, PROTO_WHO);
    json_decref(who);
    /* Clients that vanish before their answers. */
    for (int i = 0; i < 20; i++) {
        void *s = zmq_socket(h->zctx, ZMQ_DEALER);
        zmq_connect(s, h->endpoint);
        snprintf(body, sizeof body, "{\"deployment\":\"m\",\"rows\":1}");
        zmq_send(s, "MLQ1", 4, ZMQ_SNDMORE);
        zmq_send(s, "INFER", 5, ZMQ_SNDMORE);
        zmq_send(s, body, strlen(body), ZMQ_SNDMORE);
        zmq_send(s, row, sizeof row, 0);
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);
    }
    /* After all that, a good request is answered, by the same processes. */
    struct mlq_client *c;
    char err[512];
    assert_int_equal(mlq_client_open(&c, h->endpoint, err, sizeof err), 0);
    float out[K];
    int cls = -1;
    assert_int_equal(mlq_infer(c, "m", row, 1, D, out, K, &cls, NULL, err, sizeof err), 0);
    assert_true(cls >= 0 && cls < K);
    assert_int_equal(mlq_infer(c, "m", row, 1, D - 1, out, K, NULL, NULL, err, sizeof err),
                     -EINVAL);
    assert_int_equal(kill(h->broker, 0), 0);
    assert_int_equal(kill(h->procs[0].pid, 0), 0);
    mlq_client_close(&c);
}

/* ---- a deployment no trainer can load, then one can ------------------------------ */

/* Reads `mlq CMD...` standard output into buf (NUL-terminated). */
static void mlq_out(struct harness *h, const char *const *argv, char *buf, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/mlq-out.txt", h->dir);
    assert_int_equal(h_run(h, argv, path), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_failed_deployment_recovers(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    int64_t run = train_run(h, "train.h5", 1, 31);
    h_proc_kill(h, t1, SIGTERM);
    /* A trainer whose memory budget (1 MiB) the model does not fit. */
    const char *small[] = {"--memory-budget-mb", "1", NULL};
    h_trainer_start_extra(h, "small", small);
    h_wait_trainers(h, 1, 20);
    json_decref(
        call_ok(h, PROTO_DEPLOY, json_pack("{s:s, s:I}", "name", "m", "run", (json_int_t)run)));
    json_t *d = NULL;
    double until = h_now() + 20;
    for (; h_now() < until; sleep_ms(50)) {
        json_t *l = call_ok(h, PROTO_DEPLOYMENTS, json_pack("{s:s}", "name", "m"));
        d = json_incref(json_array_get(json_object_get(l, "deployments"), 0));
        json_decref(l);
        if (strcmp(json_string_value(json_object_get(d, "state")), "failed") == 0) break;
        json_decref(d);
        d = NULL;
    }
    assert_non_null(d);
    const char *why = json_string_value(json_object_get(d, "error"));
    if (!why || !strstr(why, "trainer small cannot load it") || !strstr(why, "tried again"))
        fail_msg("deployment error: %s", why ? why : "(none)");
    json_decref(d);
    /* Its requests fail at once, saying why. */
    struct mlq_client *c;
    char err[512];
    assert_int_equal(mlq_client_open(&c, h->endpoint, err, sizeof err), 0);
    float row[D] = {0}, out[K];
    assert_int_equal(mlq_infer(c, "m", row, 1, D, out, K, NULL, NULL, err, sizeof err), -EAGAIN);
    assert_non_null(strstr(err, "cannot load it"));
    /* A trainer that can load it connects: the deployment is placed on it
     * and serves; the error is gone. */
    h_trainer_start(h, "big");
    int cls = -1;
    until = h_now() + 20;
    int rc;
    while ((rc = mlq_infer(c, "m", row, 1, D, out, K, &cls, NULL, err, sizeof err)) != 0 &&
           h_now() < until)
        sleep_ms(50);
    if (rc) fail_msg("no answer after a trainer that fits connected: %s", err);
    assert_true(cls >= 0 && cls < K);
    json_t *l = call_ok(h, PROTO_DEPLOYMENTS, json_pack("{s:s}", "name", "m"));
    d = json_array_get(json_object_get(l, "deployments"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "state")), "ready");
    assert_null(json_object_get(d, "error"));
    json_decref(l);
    /* mlq workers shows which trainer serves what. */
    char text[4096];
    const char *workers[] = {MLQ_BINARY_DIR "/cli/mlq", "workers", "--broker", h->endpoint, NULL};
    mlq_out(h, workers, text, sizeof text);
    if (!strstr(text, "SERVING")) fail_msg("no SERVING column:\n%s", text);
    char *big = strstr(text, "\nbig ");
    assert_non_null(big);
    char *eol = strchr(big + 1, '\n');
    if (eol) *eol = '\0';
    if (!strstr(big, " m ")) fail_msg("trainer big does not show deployment m: %s", big);
    mlq_client_close(&c);
}

/* ---- load: rollover and a replica killed ------------------------------------------- */

struct load {
    const char *endpoint, *deployment;
    int clients;
    volatile int stop;
    long ok, errors;
    long gens[8];
    char first_error[512];
};

/* Closed loop: each client sends one row, waits for its answer, sends again. */
static void *load_thread(void *arg)
{
    struct load *l = arg;
    void *ctx = zmq_ctx_new();
    void *socks[64];
    zmq_pollitem_t items[64];
    float row[D] = {1, 0, 0, 0, 0, 0, 0, 0};
    char body[128];
    snprintf(body, sizeof body, "{\"deployment\":\"%s\",\"rows\":1,\"deadline_ms\":20000}",
             l->deployment);
    /* Every other client speaks INFER_BIN: both forms through the same
     * replicas, rollovers and deaths. */
    unsigned char hdr[PROTO_INFER_REQ_FIXED + PROTO_BIN_NAME_MAX];
    struct proto_infer_req ir = {.rows = 1, .deadline_ms = 20000};
    snprintf(ir.deployment, sizeof ir.deployment, "%s", l->deployment);
    size_t hl = (size_t)proto_infer_req_encode(hdr, sizeof hdr, &ir);
#define SEND(i)                                                                                    \
    ((i) % 2 ? proto_send_bin(socks[i], NULL, 0, PROTO_INFER_BIN, hdr, hl, row, sizeof row, 0)     \
             : proto_send_text(socks[i], NULL, 0, PROTO_INFER, body, row, sizeof row, 0))
    for (int i = 0; i < l->clients; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(socks[i], l->endpoint);
        items[i] = (zmq_pollitem_t){.socket = socks[i], .events = ZMQ_POLLIN};
        SEND(i);
    }
    int outstanding = l->clients;
    while (outstanding > 0) {
        int n = zmq_poll(items, l->clients, 25000);
        if (n <= 0) break; /* 25 s without an answer: the rest counts as lost */
        for (int i = 0; i < l->clients; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            struct proto_msg m;
            char err[256];
            if (proto_recv(socks[i], false, &m, 0, err, sizeof err) != 0) continue;
            struct proto_answer a;
            if (strcmp(m.cmd, PROTO_OK) == 0 ||
                (strcmp(m.cmd, PROTO_ANSWER_BIN) == 0 &&
                 proto_answer_decode(m.hdr, m.hdr_len, &a, err, sizeof err) == 0)) {
                l->ok++;
                json_int_t g = m.body ? json_integer_value(json_object_get(m.body, "generation"))
                                      : a.generation;
                if (g >= 0 && g < 8) l->gens[g]++;
            } else {
                if (!l->errors++)
                    snprintf(l->first_error, sizeof l->first_error, "%s",
                             json_string_value(json_object_get(m.body, "error")));
            }
            proto_msg_clear(&m);
            if (l->stop)
                outstanding--;
            else
                SEND(i);
        }
    }
#undef SEND
    l->errors += outstanding; /* never answered */
    for (int i = 0; i < l->clients; i++)
        zmq_close(socks[i]);
    zmq_ctx_term(ctx);
    return NULL;
}

static void test_rollover_under_load(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    h_trainer_start(h, "t2");
    int64_t a = train_run(h, "a.h5", 1, 31);
    int64_t b = train_run(h, "b.h5", 2, 32);
    json_decref(deploy(h, "m", a, 2, 2));
    struct load l = {.endpoint = h->endpoint, .deployment = "m", .clients = 8};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, load_thread, &l), 0);
    sleep_ms(1000);
    long before = l.ok;
    json_t *d = deploy(h, "m", b, 2, 2); /* generation 2 on both replicas */
    json_decref(d);
    long at_rollover = l.ok;
    sleep_ms(1000);
    l.stop = 1;
    pthread_join(th, NULL);
    if (l.errors) fail_msg("%ld requests failed: %s", l.errors, l.first_error);
    assert_true(before > 50);
    assert_true(l.gens[1] >= before);
    assert_true(l.gens[2] > 50);     /* the new model answers */
    assert_true(l.ok > at_rollover); /* and the load went on */
    assert_int_equal(l.gens[1] + l.gens[2], l.ok);
    json_t *r = call_ok(h, PROTO_DEPLOYMENTS, json_pack("{s:s}", "name", "m"));
    json_t *d0 = json_array_get(json_object_get(r, "deployments"), 0);
    assert_int_equal(json_integer_value(json_object_get(d0, "run")), b);
    assert_int_equal(json_integer_value(json_object_get(d0, "generation")), 2);
    assert_int_equal(json_integer_value(json_object_get(d0, "errors")), 0);
    json_decref(r);
}

static void test_replica_killed_under_load(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    h_trainer_start(h, "t2");
    int64_t a = train_run(h, "a.h5", 1, 41);
    json_t *d = deploy(h, "m", a, 2, 2);
    json_decref(d);
    struct load l = {.endpoint = h->endpoint, .deployment = "m", .clients = 16};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, load_thread, &l), 0);
    sleep_ms(800);
    long before = l.ok;
    h_proc_kill(h, t1, SIGKILL); /* with requests in flight */
    h_trainer_start(h, "t3");    /* an idle trainer takes its place */
    sleep_ms(2500);
    long after = l.ok;
    l.stop = 1;
    pthread_join(th, NULL);
    if (l.errors) fail_msg("%ld requests failed: %s", l.errors, l.first_error);
    assert_true(before > 50);
    assert_true(after > before + 50);
    json_t *r = deploy(h, "m", a, 2, 2); /* the same run again: generation 2, both ready */
    json_t *d0 = json_array_get(json_object_get(r, "deployments"), 0);
    size_t i;
    json_t *rep;
    bool t3 = false;
    json_array_foreach(json_object_get(d0, "replica_list"), i, rep) t3 |=
        strcmp(json_string_value(json_object_get(rep, "trainer")), "t3") == 0;
    assert_true(t3);
    json_decref(r);
}

/* ---- restart and deadlines ---------------------------------------------------------- */

static void test_broker_restart_and_deadline(void **state)
{
    struct harness *h = *state;
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    int64_t a = train_run(h, "a.h5", 1, 51);
    json_decref(deploy(h, "m", a, 1, 1));
    h_broker_kill(h, SIGKILL);
    h_broker_start(h, NULL);
    /* The replica comes back with its model (HELLO "serving"), or is
     * placed again from the database: either way it answers. */
    struct mlq_client *c;
    char err[512];
    assert_int_equal(mlq_client_open(&c, h->endpoint, err, sizeof err), 0);
    mlq_client_set_timeout(c, 10000);
    float row[D] = {0}, out[K];
    struct mlq_infer_info info;
    int rc = mlq_infer(c, "m", row, 1, D, out, K, NULL, &info, err, sizeof err);
    if (rc) fail_msg("after a broker restart: %s", err);
    assert_int_equal(info.run, a);

    /* Its only trainer is m's replica: a second deployment cannot be
     * placed, and its requests time out with a clear error. */
    json_t *r =
        call_ok(h, PROTO_DEPLOY, json_pack("{s:s, s:I}", "name", "m2", "run", (json_int_t)a));
    json_decref(r);
    mlq_client_set_timeout(c, 400);
    double t0 = h_now();
    rc = mlq_infer(c, "m2", row, 1, D, out, K, NULL, NULL, err, sizeof err);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_non_null(strstr(err, "no replica is serving it"));
    assert_true(h_now() - t0 < 3);
    /* The first still answers at once. */
    mlq_client_set_timeout(c, 5000);
    assert_int_equal(mlq_infer(c, "m", row, 1, D, out, K, NULL, NULL, err, sizeof err), 0);
    mlq_client_close(&c);
}

/* ---- CURVE: the wire as the rest of mlq's ------------------------------------------- */

static void make_key(struct keys_cert *c, const char *name, enum keys_role role, const char *prefix,
                     const char *dir)
{
    char err[512], path[900];
    assert_int_equal(keys_generate(c, name, role, err, sizeof err), 0);
    if (keys_save(c, prefix, false, err, sizeof err) != 0) fail_msg("%s", err);
    if (dir) {
        snprintf(path, sizeof path, "%s/%s.key", dir, name);
        if (keys_save_public(c, path, true, err, sizeof err) != 0) fail_msg("%s", err);
    }
}

/* libmlq as a user with this key (by the configuration's environment). */
static int infer_as(struct harness *h, const char *secret, const char *broker_z85, const char *name,
                    char *err, size_t errlen)
{
    setenv("MLQ_CLIENT_SECRET_KEY", secret, 1);
    setenv("MLQ_BROKER_PUBLIC_KEY", broker_z85, 1);
    struct mlq_client *c;
    int rc = mlq_client_open(&c, h->endpoint, err, errlen);
    unsetenv("MLQ_CLIENT_SECRET_KEY");
    unsetenv("MLQ_BROKER_PUBLIC_KEY");
    if (rc) return rc;
    mlq_client_set_timeout(c, 1500);
    float row[D] = {1}, out[K];
    rc = mlq_infer(c, name, row, 1, D, out, K, NULL, NULL, err, errlen);
    mlq_client_close(&c);
    return rc;
}

static void test_curve(void **state)
{
    struct harness *h = *state;
    char etc[600], users[700], trainers[700], prefix[800], secret[900];
    snprintf(etc, sizeof etc, "%s/etc", h->dir);
    snprintf(users, sizeof users, "%s/users", etc);
    snprintf(trainers, sizeof trainers, "%s/trainers", etc);
    assert_int_equal(mkdir(etc, 0755), 0);
    assert_int_equal(mkdir(users, 0755), 0);
    assert_int_equal(mkdir(trainers, 0755), 0);
    struct keys_cert broker, alice, bob, trainer;
    snprintf(prefix, sizeof prefix, "%s/broker", etc);
    make_key(&broker, "broker", KEYS_ROLE_BROKER, prefix, NULL);
    char alice_p[800], bob_p[800], t_p[800];
    snprintf(alice_p, sizeof alice_p, "%s/alice", h->dir);
    snprintf(bob_p, sizeof bob_p, "%s/bob", h->dir);
    snprintf(t_p, sizeof t_p, "%s/t1", h->dir);
    make_key(&alice, "alice", KEYS_ROLE_USER, alice_p, users);
    make_key(&bob, "bob", KEYS_ROLE_USER, bob_p, users);
    make_key(&trainer, "t1", KEYS_ROLE_TRAINER, t_p, trainers);
    snprintf(secret, sizeof secret, "%s.key_secret", prefix);
    h_use_key(h, &alice, broker.public_z85);
    const char *bextra[] = {"--secret-key", secret, NULL};
    h_broker_start(h, bextra);
    char tsecret[900];
    snprintf(tsecret, sizeof tsecret, "%s.key_secret", t_p);
    const char *textra[] = {"--secret-key", tsecret, "--broker-key", broker.public_z85, NULL};
    h_trainer_start_extra(h, "t1", textra);
    h_trainer_start_extra(h, "t2", textra);
    int64_t run = train_run(h, "a.h5", 1, 61);
    json_decref(deploy(h, "mine", run, 1, 1));
    char err[512], as[900];
    snprintf(as, sizeof as, "%s.key_secret", alice_p);
    int rc = infer_as(h, as, broker.public_z85, "mine", err, sizeof err);
    if (rc) fail_msg("alice's own deployment: %s", err);
    /* Another user: no such deployment, the words of a missing one. */
    snprintf(as, sizeof as, "%s.key_secret", bob_p);
    assert_int_equal(infer_as(h, as, broker.public_z85, "mine", err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "deployment mine: no such deployment"));
    /* A trainer's key may not infer; nor a plaintext client at all. */
    snprintf(as, sizeof as, "%s.key_secret", t_p);
    assert_int_equal(infer_as(h, as, broker.public_z85, "mine", err, sizeof err), -EACCES);
    struct mlq_client *c;
    assert_int_equal(mlq_client_open(&c, h->endpoint, err, sizeof err), 0);
    mlq_client_set_timeout(c, 300);
    float row[D] = {1}, out[K];
    assert_int_equal(mlq_infer(c, "mine", row, 1, D, out, K, NULL, NULL, err, sizeof err),
                     -ETIMEDOUT);
    mlq_client_close(&c);
    /* Bob cannot roll alice's deployment over, nor undeploy it. */
    h_use_key(h, &bob, broker.public_z85);
    bool is_error = false;
    json_t *r = h_call(h, PROTO_UNDEPLOY, json_pack("{s:s}", "name", "mine"), &is_error);
    assert_true(r && is_error);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "not_found");
    json_decref(r);
    h_use_key(h, NULL, NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_infer_matches_predict, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_requests, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_failed_deployment_recovers, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_rollover_under_load, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_replica_killed_under_load, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_restart_and_deadline, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_curve, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
