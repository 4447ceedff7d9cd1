#define _GNU_SOURCE /* open_memstream */
#include "serve.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "blas.h"
#include "checkpoint.h"
#include "job_memory.h"
#include "log.h"
#include "model.h"
#include "spec.h"
#include "spec_model.h"

#define IDLE_POLL_MS 1000
#define MAX_BATCH_CAP 65536

/* The model being served. */
struct served {
    char deployment[64];
    int64_t generation, run, epoch;
    int max_batch, max_delay_us;
    struct model model;
    bool loaded;
    int D, K;
    bool ce;
    /* A last layer (T, K) answers each row at one position: for a model
     * that reads token ids, the window's last id (a row is up to T ids, the
     * unused tail -1: docs/serving.md, "Language models"), else step T - 1. */
    int steps; /* T, 1 for other models */
    bool ids;
    int *pos; /* (max_batch) each row's position, when steps > 1 */
};

struct req {
    uint64_t seq;
    int rows;
    double t; /* arrival */
};

/* Requests waiting for a forward pass; their rows contiguous in x. */
struct queue {
    struct req *reqs;
    size_t n, cap;
    float *x; /* (rows, D) */
    size_t rows, cap_rows;
    double oldest; /* arrival of reqs[0] */
    bool bin;      /* the last INFER was INFER_BIN: answer INFERRED_BIN */
    /* The answer being built, kept between passes. */
    unsigned char *hdr;
    size_t cap_hdr;
    float *out; /* (rows, K) */
    size_t cap_out;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void served_free(struct served *s)
{
    if (s->loaded) model_destroy(&s->model);
    s->loaded = false;
    free(s->pos);
    s->pos = NULL;
}

/* Loads the SERVE message's checkpoint into s. 0 or -errno with err. */
static int served_load(struct served *s, const struct proto_msg *m, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(m->body, "deployment"));
    json_t *mb = json_object_get(m->body, "max_batch"),
           *md = json_object_get(m->body, "max_delay_us");
    memset(s, 0, sizeof *s);
    snprintf(s->deployment, sizeof s->deployment, "%s", name ? name : "");
    s->generation = json_integer_value(json_object_get(m->body, "generation"));
    s->run = json_integer_value(json_object_get(m->body, "run"));
    s->max_batch = json_is_integer(mb) ? (int)json_integer_value(mb) : 64;
    s->max_delay_us = json_is_integer(md) ? (int)json_integer_value(md) : 0;
    if (!name || s->max_batch < 1 || s->max_batch > MAX_BATCH_CAP || s->max_delay_us < 0) {
        snprintf(err, errlen, "SERVE without a deployment or with a bad max_batch/max_delay_us");
        return -EINVAL;
    }
    if (!m->bin) {
        snprintf(err, errlen, "SERVE without a checkpoint");
        return -EINVAL;
    }
    struct checkpoint c;
    struct mlq_spec spec;
    char why[512];
    int rc = checkpoint_decode(m->bin, m->bin_len, &c, why, sizeof why);
    if (rc) {
        snprintf(err, errlen, "corrupt checkpoint: %s", why);
        return rc;
    }
    if ((rc = spec_parse(c.spec_json, &spec, why, sizeof why)) != 0)
        snprintf(err, errlen, "the checkpoint's spec is invalid: %s", why);
    else if ((rc = spec_model_create(&s->model, &spec, NULL, why, sizeof why)) != 0)
        snprintf(err, errlen, "cannot rebuild the model: %s", why);
    if (rc) {
        checkpoint_free(&c);
        return rc;
    }
    s->loaded = true;
    /* What predict on max_batch rows would take, against this trainer's
     * budget (trainer.memory_budget_mb): a model too large here is refused,
     * and the broker places it on another trainer. */
    struct mlq_spec predict = spec;
    predict.kind = JOB_PREDICT;
    struct job_memory_job mj = {.spec = &predict, .model = &spec, .checkpoint_bytes = m->bin_len};
    mj.data.rows = s->max_batch;
    mj.data.row_bytes = (int64_t)shape_size(&s->model.input) * (int64_t)sizeof(float);
    mj.data.x_rank = s->model.input.n + 1;
    mj.data.x_dims[0] = s->max_batch;
    for (int i = 0; i < s->model.input.n && i < 3; i++)
        mj.data.x_dims[i + 1] = s->model.input.d[i];
    struct job_memory mem;
    if (job_memory_plan(&mj, &mem, why, sizeof why) == -ENOMEM) {
        snprintf(err, errlen, "%s", why);
        rc = -ENOMEM;
    } else if ((rc = checkpoint_load_tensors(&c, &s->model.tensors, s->model.params, NULL, 0,
                                             s->model.state, why, sizeof why)) != 0)
        snprintf(err, errlen, "corrupt checkpoint: %s", why);
    else if ((rc = model_reserve(&s->model, s->max_batch)) != 0)
        snprintf(err, errlen, "cannot allocate the network for %d rows", s->max_batch);
    s->epoch = c.epoch;
    s->D = (int)shape_size(&s->model.input);
    s->K = s->model.K;
    s->ce = spec.loss == LOSS_CROSS_ENTROPY;
    s->steps = s->model.steps > 1 ? s->model.steps : 1;
    s->ids = !s->model.net && s->model.n_nodes > 0 && s->model.node[0].op.op->takes_ids;
    if (!rc && s->steps > 1 && !(s->pos = malloc((size_t)s->max_batch * sizeof *s->pos))) {
        snprintf(err, errlen, "out of memory for %d rows", s->max_batch);
        rc = -ENOMEM;
    }
    checkpoint_free(&c);
    if (rc) served_free(s);
    return rc;
}

/* Each row's answering position into s->pos; a window of ids shorter than
 * T (its tail -1, which the broker checked) is read at its last id, with
 * the tail set to 0 as a generate job pads it (a causal model's position
 * sees nothing after it, so the answer is the job's). */
static void window_positions(struct served *s, float *x, int B)
{
    int T = s->steps;
    for (int r = 0; r < B; r++) {
        float *row = x + (size_t)r * (size_t)s->D;
        int w = T;
        if (s->ids) {
            for (w = 0; w < T && row[w] >= 0.0f; w++)
                ;
            for (int i = w; i < T; i++)
                row[i] = 0.0f;
        }
        s->pos[r] = w > 0 ? w - 1 : 0;
    }
}

static int argmax(const float *p, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        if (p[k] > p[best]) best = k;
    return best;
}

static void send_text(void *pair, const char *cmd, const char *text, const void *bin, size_t len)
{
    int rc = proto_send_text(pair, NULL, 0, cmd, text, bin, len, 0);
    if (rc) log_warn("serve: send %s: %s", cmd, zmq_strerror(-rc));
}

/* INFERRED (or INFERRED_BIN) with an error for the requests of one INFER
 * (INFER_BIN) message. */
static void refuse(void *pair, const struct proto_msg *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(void *pair, const struct proto_msg *m, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (m->hdr) {
        /* Its records as they came (a header that does not decode gets none:
         * the broker's deadline answers those). */
        struct proto_batch pb;
        char err[256];
        if (proto_batch_decode(m->hdr, m->hdr_len, false, &pb, err, sizeof err) != 0) {
            log_warn("serve: %s", err);
            return;
        }
        size_t recs = (size_t)pb.n * PROTO_BIN_REC, wl = strlen(why);
        unsigned char *h = malloc(PROTO_INFERRED_FIXED + recs + wl);
        if (!h) return;
        proto_batch_encode(h, &(struct proto_batch){.flags = PROTO_BIN_ERROR, .n = pb.n}, true);
        memcpy(h + PROTO_INFERRED_FIXED, pb.recs, recs);
        memcpy(h + PROTO_INFERRED_FIXED + recs, why, wl);
        int rc = proto_send_bin(pair, NULL, 0, PROTO_INFERRED_BIN, h,
                                PROTO_INFERRED_FIXED + recs + wl, NULL, 0, 0);
        if (rc) log_warn("serve: send %s: %s", PROTO_INFERRED_BIN, zmq_strerror(-rc));
        free(h);
        return;
    }
    json_t *reqs = json_object_get(m->body, "reqs");
    if (!json_is_array(reqs)) return;
    json_t *o = json_pack("{s:O, s:s}", "reqs", reqs, "error", why);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text) send_text(pair, PROTO_INFERRED, text, NULL, 0);
    free(text);
    json_decref(o);
}

void serve_refuse(void *pair, const struct proto_msg *m, const char *why)
{
    refuse(pair, m, "%s", why);
}

static int reserve(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    void *p = realloc(*buf, c);
    if (!p) return -ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

/* The answer of one pass as INFERRED_BIN: head, records, class ids. */
static void send_inferred_bin(void *pair, const struct served *s, struct queue *q, size_t n,
                              size_t rows, int fw)
{
    size_t len = PROTO_INFERRED_FIXED + n * PROTO_BIN_REC + (s->ce ? 4 * rows : 0);
    if (reserve((void **)&q->hdr, &q->cap_hdr, len) != 0) {
        log_error("serve: out of memory for %zu rows", rows);
        return;
    }
    struct proto_batch pb = {.flags = s->ce ? PROTO_BIN_CLASSES : 0,
                             .n = (uint32_t)n,
                             .generation = s->generation,
                             .run = s->run,
                             .epoch = s->epoch,
                             .outputs = (uint32_t)s->K,
                             .forwards = (uint32_t)fw};
    proto_batch_encode(q->hdr, &pb, true);
    unsigned char *p = q->hdr + PROTO_INFERRED_FIXED;
    for (size_t i = 0; i < n; i++, p += PROTO_BIN_REC)
        proto_rec_put(p, q->reqs[i].seq, (uint32_t)q->reqs[i].rows);
    for (size_t r = 0; s->ce && r < rows; r++, p += 4)
        proto_put_i32(p, argmax(q->out + r * (size_t)s->K, s->K));
    int rc = proto_send_bin(pair, NULL, 0, PROTO_INFERRED_BIN, q->hdr, len, q->out,
                            sizeof(float) * rows * (size_t)s->K, 0);
    if (rc) log_warn("serve: send %s: %s", PROTO_INFERRED_BIN, zmq_strerror(-rc));
}

/* Runs the first n requests of the queue (rows of them) and answers them in
 * one INFERRED; a request of more than max_batch rows runs in chunks. */
static void forward(void *pair, struct served *s, struct queue *q, size_t n, size_t rows,
                    uint64_t *forwards)
{
    if (reserve((void **)&q->out, &q->cap_out, sizeof(float) * rows * (size_t)s->K) != 0) {
        log_error("serve: out of memory for %zu rows", rows);
        return;
    }
    float *out = q->out;
    int fw = 0;
    for (size_t at = 0; at < rows; fw++) {
        int B = (int)(rows - at < (size_t)s->max_batch ? rows - at : (size_t)s->max_batch);
        float *x = q->x + at * (size_t)s->D;
        size_t K = (size_t)s->K;
        if (s->steps > 1) window_positions(s, x, B);
        model_forward(&s->model, x, B, false, NULL);
        if (s->steps > 1)
            for (int r = 0; r < B; r++)
                memcpy(out + (at + (size_t)r) * K,
                       s->model.probs + ((size_t)r * (size_t)s->steps + (size_t)s->pos[r]) * K,
                       sizeof(float) * K);
        else
            memcpy(out + at * K, s->model.probs, sizeof(float) * (size_t)B * K);
        at += (size_t)B;
    }
    *forwards += (uint64_t)fw;
    if (q->bin) {
        send_inferred_bin(pair, s, q, n, rows, fw);
        goto done;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        log_error("serve: out of memory for %zu rows", rows);
        goto done;
    }
    fputs("{\"reqs\":[", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s[%llu,%d]", i ? "," : "", (unsigned long long)q->reqs[i].seq,
                q->reqs[i].rows);
    fprintf(f,
            "],\"deployment\":\"%s\",\"generation\":%lld,\"run\":%lld,\"epoch\":%lld,"
            "\"outputs\":%d,\"forwards\":%d",
            s->deployment, (long long)s->generation, (long long)s->run, (long long)s->epoch, s->K,
            fw);
    if (s->ce) {
        fputs(",\"classes\":[", f);
        for (size_t r = 0; r < rows; r++)
            fprintf(f, "%s%d", r ? "," : "", argmax(out + r * (size_t)s->K, s->K));
        fputc(']', f);
    }
    fputc('}', f);
    fclose(f);
    send_text(pair, PROTO_INFERRED, text, out, sizeof(float) * rows * (size_t)s->K);
    free(text);
done:
    /* The rest moves to the front. */
    memmove(q->reqs, q->reqs + n, (q->n - n) * sizeof *q->reqs);
    q->n -= n;
    memmove(q->x, q->x + rows * (size_t)s->D, (q->rows - rows) * (size_t)s->D * sizeof(float));
    q->rows -= rows;
    if (q->n) q->oldest = q->reqs[0].t;
}

/* One forward pass over the requests at the head: whole requests up to
 * max_batch rows (at least one request). */
static void forward_head(void *pair, struct served *s, struct queue *q, uint64_t *forwards)
{
    size_t n = 0, rows = 0;
    while (n < q->n && (n == 0 || rows + (size_t)q->reqs[n].rows <= (size_t)s->max_batch))
        rows += (size_t)q->reqs[n++].rows;
    forward(pair, s, q, n, rows, forwards);
}

static void flush_all(void *pair, struct served *s, struct queue *q, uint64_t *forwards)
{
    while (q->n && s->loaded)
        forward_head(pair, s, q, forwards);
}

/* Queues n requests (seq[i], rows[i] through get) whose rows are m's
 * binary frame, or refuses them whole. */
static void queue_reqs(void *pair, struct served *s, struct queue *q, const struct proto_msg *m,
                       size_t n, size_t total,
                       void (*get)(const void *list, size_t i, uint64_t *seq, uint32_t *rows),
                       const void *list)
{
    if (!s->loaded) {
        refuse(pair, m, "this replica holds no model");
        return;
    }
    if (m->bin_len != total * (size_t)s->D * sizeof(float)) {
        refuse(pair, m, "%zu rows of %d inputs need %zu bytes, the message has %zu", total, s->D,
               total * (size_t)s->D * sizeof(float), m->bin_len);
        return;
    }
    const float *x = m->bin;
    for (size_t k = 0; k < total * (size_t)s->D; k++)
        if (!isfinite(x[k])) {
            refuse(pair, m, "row %zu holds a non-finite input", k / (size_t)s->D);
            return;
        }
    if (q->n + n > q->cap) {
        size_t cap = q->cap ? q->cap : 64;
        while (cap < q->n + n)
            cap *= 2;
        struct req *r = realloc(q->reqs, cap * sizeof *r);
        if (!r) goto oom;
        q->reqs = r;
        q->cap = cap;
    }
    if (q->rows + total > q->cap_rows) {
        size_t cap = q->cap_rows ? q->cap_rows : 256;
        while (cap < q->rows + total)
            cap *= 2;
        float *nx = realloc(q->x, cap * (size_t)s->D * sizeof(float));
        if (!nx) goto oom;
        q->x = nx;
        q->cap_rows = cap;
    }
    double now = mono();
    if (q->n == 0) q->oldest = now;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq;
        uint32_t rows;
        get(list, i, &seq, &rows);
        q->reqs[q->n++] = (struct req){.seq = seq, .rows = (int)rows, .t = now};
    }
    memcpy(q->x + q->rows * (size_t)s->D, x, m->bin_len);
    q->rows += total;
    return;
oom:
    refuse(pair, m, "the replica is out of memory");
}

static void json_req(const void *list, size_t i, uint64_t *seq, uint32_t *rows)
{
    json_t *e = json_array_get((const json_t *)list, i);
    *seq = (uint64_t)json_integer_value(json_array_get(e, 0));
    *rows = (uint32_t)json_integer_value(json_array_get(e, 1));
}

static void bin_req(const void *list, size_t i, uint64_t *seq, uint32_t *rows)
{
    proto_rec_get((const unsigned char *)list + i * PROTO_BIN_REC, seq, rows);
}

/* Queues the requests of one INFER message, or refuses them whole. */
static void take_infer(void *pair, struct served *s, struct queue *q, const struct proto_msg *m)
{
    json_t *reqs = json_object_get(m->body, "reqs");
    if (!json_is_array(reqs) || json_array_size(reqs) == 0) return;
    size_t total = 0, i;
    json_t *e;
    json_array_foreach(reqs, i, e)
    {
        json_t *r = json_array_get(e, 1);
        if (!json_is_integer(json_array_get(e, 0)) || !json_is_integer(r) ||
            json_integer_value(r) < 1 || json_integer_value(r) > (1 << 24)) {
            refuse(pair, m, "malformed INFER request list");
            return;
        }
        total += (size_t)json_integer_value(r);
    }
    q->bin = false;
    queue_reqs(pair, s, q, m, json_array_size(reqs), total, json_req, reqs);
}

/* The same for INFER_BIN. */
static void take_infer_bin(void *pair, struct served *s, struct queue *q, const struct proto_msg *m)
{
    struct proto_batch pb;
    char err[256];
    if (proto_batch_decode(m->hdr, m->hdr_len, false, &pb, err, sizeof err) != 0) {
        log_warn("serve: %s", err); /* no records to answer: the broker's deadline does */
        return;
    }
    if (pb.rows > (1 << 24)) {
        refuse(pair, m, "malformed INFER_BIN request list");
        return;
    }
    q->bin = true;
    queue_reqs(pair, s, q, m, pb.n, (size_t)pb.rows, bin_req, pb.recs);
}

/* SERVE: load the new model; on failure the old one (if any) stays. */
static void take_serve(void *pair, struct served *s, struct queue *q, const struct proto_msg *m,
                       uint64_t *forwards)
{
    flush_all(pair, s, q, forwards);
    struct served next;
    char err[1024] = "";
    int rc = served_load(&next, m, err, sizeof err);
    json_t *o = json_pack("{s:s, s:I, s:b}", "deployment", next.deployment, "generation",
                          (json_int_t)next.generation, "ok", rc == 0);
    if (rc) {
        json_object_set_new(o, "error", json_string(err));
        log_warn("deployment %s generation %lld: %s", next.deployment, (long long)next.generation,
                 err);
    } else {
        if (s->D != next.D) {
            /* The queue is empty (answered above); its buffer was sized
             * for the old width. */
            free(q->x);
            q->x = NULL;
            q->cap_rows = 0;
        }
        served_free(s);
        *s = next;
        log_info("serving deployment %s generation %lld (run %lld, epoch %lld): %d inputs, %d "
                 "outputs, batches of up to %d rows, %d us delay",
                 s->deployment, (long long)s->generation, (long long)s->run, (long long)s->epoch,
                 s->D, s->K, s->max_batch, s->max_delay_us);
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text) send_text(pair, PROTO_SERVING, text, NULL, 0);
    free(text);
    json_decref(o);
}

int serve_run(void *pair, struct proto_msg *first, struct proto_msg *next)
{
    struct served s = {0};
    struct queue q = {0};
    uint64_t forwards = 0;
    int ret = -1;
    blas_set_threads(1); /* latency: a replica is one core; more replicas scale out */
    take_serve(pair, &s, &q, first, &forwards);
    for (;;) {
        long timeout = IDLE_POLL_MS;
        if (q.n) {
            double wait = q.oldest + s.max_delay_us * 1e-6 - mono();
            timeout = wait > 0 ? (long)(wait * 1000.0) : 0;
            if (wait > 0 && timeout == 0) timeout = 1; /* below a millisecond: zmq_poll's unit */
        }
        zmq_pollitem_t it = {.socket = pair, .events = ZMQ_POLLIN};
        int n = q.n && s.max_delay_us == 0 ? 1 : zmq_poll(&it, 1, timeout);
        if (n < 0 && errno != EINTR) break;
        /* Everything that has arrived, until a batch is full. */
        for (;;) {
            if (q.rows >= (size_t)s.max_batch) break;
            struct proto_msg m;
            char err[256];
            int rc = proto_recv(pair, false, &m, ZMQ_DONTWAIT, err, sizeof err);
            if (rc == -EAGAIN || rc == -EINTR) break;
            if (rc == -EPROTO) {
                log_warn("serve: %s", err);
                continue;
            }
            if (rc) goto out;
            if (strcmp(m.cmd, PROTO_INFER_BIN) == 0) {
                take_infer_bin(pair, &s, &q, &m);
            } else if (strcmp(m.cmd, PROTO_INFER) == 0) {
                take_infer(pair, &s, &q, &m);
            } else if (strcmp(m.cmd, PROTO_SERVE) == 0) {
                take_serve(pair, &s, &q, &m, &forwards);
            } else if (strcmp(m.cmd, PROTO_UNSERVE) == 0) {
                flush_all(pair, &s, &q, &forwards);
                log_info("deployment %s: no longer served here", s.deployment);
                proto_msg_clear(&m);
                ret = 0;
                goto out;
            } else {
                flush_all(pair, &s, &q, &forwards);
                *next = m;
                ret = 1;
                goto out;
            }
            proto_msg_clear(&m);
        }
        while (q.n && (q.rows >= (size_t)s.max_batch || mono() >= q.oldest + s.max_delay_us * 1e-6))
            forward_head(pair, &s, &q, &forwards);
    }
out:
    served_free(&s);
    free(q.reqs);
    free(q.x);
    free(q.hdr);
    free(q.out);
    return ret;
}
