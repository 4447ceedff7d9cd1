/* Serving: deployments, their replicas and the infer requests routed to them
 * (docs/serving.md).
 *
 * Only deployments are durable (the deployments table). An infer request
 * lives in a slot of the in-flight table from its arrival to its answer: it
 * never touches the database and its reply never waits for a commit (it is
 * sent at once, not through the outbox). Requests that arrive in one pass of
 * the event loop and go to the same replica leave in one INFER message at the
 * end of the pass (serve_flush), so that a busy broker sends one message per
 * replica per pass instead of one per request; the replica batches what it
 * holds (max_batch rows, max_delay_us) and answers one INFERRED per forward
 * pass, which the broker splits into one reply per client.
 *
 * A request keeps its rows until it is answered: a replica that dies (or
 * reconnects) has its unanswered requests sent again to another replica (an
 * infer request is idempotent). A request past its deadline is answered with
 * ERROR timeout; a late answer from a replica finds no slot and is dropped. */
#define _GNU_SOURCE
#include "broker_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "checkpoint.h"
#include "log.h"
#include "spec.h"
#include "spec_model.h"

#define SERVE_SLOT_BITS 20
#define SERVE_MAX_INFLIGHT (1 << SERVE_SLOT_BITS) /* requests held at once */
#define SERVE_MAX_REQUEST_BYTES (16 << 20)        /* float32 inputs of one request */
#define SERVE_DEADLINE_MS 5000                    /* a request's default deadline */
#define SERVE_DEADLINE_MAX_MS 600000
#define SERVE_LAT_RING 4096   /* latencies kept per deployment for the percentiles */
#define SERVE_BATCH_REQS 1024 /* requests in one INFER message to a replica */
#define SERVE_MAX_REPLICAS 64
#define SERVE_MAX_BATCH 65536
#define SERVE_MAX_DELAY_US 1000000
#define SERVE_RETRY_S 1.0      /* first retry of a model no trainer could load */
#define SERVE_RETRY_MAX_S 60.0 /* the longest wait between retries */

struct serve_dep {
    struct store_deployment row;
    void *blob; /* the checkpoint, sent with each SERVE */
    size_t blob_len;
    int64_t epoch;
    int D, K;
    bool ce, scale;
    int steps;        /* T of a last layer (T, K) (a language model), else 1 */
    int vocab;        /* its embedding's, when it reads token ids (rows: ids, then -1s), else 0 */
    char error[1024]; /* why it cannot be served at all (its checkpoint); "" if it can */
    /* The last trainer that could not load this generation, and why: the
     * deployment is placed again on another trainer at once, and on any
     * (that one too) from retry_at, with a backoff that doubles. */
    char load_error[1024];
    double retry_at, backoff;
    /* Counters since the broker started (not durable, docs/serving.md). */
    uint64_t requests, rows, errors, forwards, forward_rows, resent;
    float lat_us[SERVE_LAT_RING];
    uint64_t lat_n;
    struct serve_dep *next;
};

enum slot_state { SLOT_FREE, SLOT_PENDING, SLOT_SENT };

struct slot {
    uint64_t seq; /* (counter << SERVE_SLOT_BITS) | index */
    enum slot_state state;
    struct serve_dep *dep;
    unsigned char client[PROTO_MAX_IDENT];
    size_t client_len;
    unsigned char replica[PROTO_MAX_IDENT];
    size_t replica_len;
    bool has_id;
    bool bin; /* asked with INFER_BIN: answered with ANSWER_BIN */
    int64_t id;
    int rows;
    float *x; /* (rows, D), kept for a resend */
    double t0, deadline;
};

/* One INFER message being built for a replica in this pass. */
struct outbatch {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    bool binary; /* INFER_BIN: text holds the binary header (the replica says infer_bin) */
    char *text;  /* the JSON list of requests, or the binary header */
    size_t text_len, text_cap;
    unsigned char *bin;
    size_t bin_len, bin_cap;
    int n;
};

struct serve {
    struct serve_dep *deps;
    struct slot *slots;
    size_t n_slots, cap_slots;
    size_t *free_list;
    size_t n_free;
    uint64_t counter;
    size_t n_pending;
    int deadline_ms; /* of a request that names none (serve.deadline_ms) */
    double next_expiry;
    struct outbatch *out;
    size_t n_out, cap_out;
    bool place;        /* placement needs a look now */
    double next_place; /* and looks every 100 ms anyway (trainers come, jobs end) */
    struct log_limit log;
};

/* ---- helpers ------------------------------------------------------------------- */

static struct serve_dep *dep_find(struct broker *b, const char *name)
{
    for (struct serve_dep *d = b->serve->deps; d; d = d->next)
        if (strcmp(d->row.name, name) == 0) return d;
    return NULL;
}

static bool may_use(const struct broker *b, const struct serve_dep *d)
{
    if (!b->who || b->who->role == KEYS_ROLE_ADMIN) return true;
    return strcmp(d->row.owner, b->who->name) == 0;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= STORE_DEPLOY_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* A direct send (not through the outbox): infer traffic never waits for a
 * commit. A peer that is gone or whose queue is full loses the message. */
static void send_now_bin(struct broker *b, const unsigned char *ident, size_t len, const char *cmd,
                         const void *hdr, size_t hdr_len, const void *bin, size_t bin_len)
{
    int rc = proto_send_bin(b->router, ident, len, cmd, hdr, hdr_len, bin, bin_len, ZMQ_DONTWAIT);
    if (rc && rc != -EHOSTUNREACH && rc != -EAGAIN)
        log_limited(&b->serve->log, LOG_LVL_WARN, "send %s: %s", cmd, zmq_strerror(-rc));
    struct trainer *t = trainers_find(b, ident, len);
    if (t) t->last_sent = broker_mono();
}

static void send_now(struct broker *b, const unsigned char *ident, size_t len, const char *cmd,
                     const char *text, const void *bin, size_t bin_len)
{
    send_now_bin(b, ident, len, cmd, text, strlen(text), bin, bin_len);
}

static void send_errorf(struct broker *b, const unsigned char *ident, size_t len, bool has_id,
                        int64_t id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void send_errorf(struct broker *b, const unsigned char *ident, size_t len, bool has_id,
                        int64_t id, const char *code, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s}", "error", text, "code", code);
    if (has_id) json_object_set_new(o, "id", json_integer(id));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s) send_now(b, ident, len, PROTO_ERROR, s, NULL, 0);
    free(s);
    json_decref(o);
}

/* ---- deployments ---------------------------------------------------------------- */

static void dep_free(struct serve_dep *d)
{
    if (!d) return;
    free(d->blob);
    free(d);
}

/* Fetches the deployment's checkpoint and learns its model's sizes. A
 * deployment that cannot be served (no such checkpoint, a damaged one,
 * non-finite weights) gets its reason in d->error and -EINVAL; other
 * errors are the store's. */
static int dep_load(struct broker *b, struct serve_dep *d)
{
    d->error[0] = '\0';
    free(d->blob);
    d->blob = NULL;
    enum store_ckpt_which which;
    int64_t epoch = 0;
    if (store_ckpt_which_parse(d->row.checkpoint, &which, &epoch) != 0) {
        snprintf(d->error, sizeof d->error, "checkpoint \"%s\" is not last, best or an epoch",
                 d->row.checkpoint);
        return -EINVAL;
    }
    struct store_checkpoint sc = {0};
    int rc = store_checkpoint_get(b->store, d->row.run, which, epoch, &sc);
    if (rc == -ENOENT || rc == -EBADMSG) {
        snprintf(d->error, sizeof d->error, "run %lld: checkpoint %s %s", (long long)d->row.run,
                 d->row.checkpoint, rc == -ENOENT ? "does not exist" : "is damaged");
        return -EINVAL;
    }
    if (rc) return rc;
    struct checkpoint c;
    char why[512];
    if (checkpoint_decode(sc.blob, sc.size, &c, why, sizeof why) != 0) {
        snprintf(d->error, sizeof d->error, "run %lld: corrupt checkpoint: %.400s",
                 (long long)d->row.run, why);
        store_checkpoint_free(&sc);
        return -EINVAL;
    }
    struct mlq_spec spec;
    struct model_sizes sz;
    bool checked = false;
    rc = -EINVAL;
    if (!c.spec_json || spec_parse(c.spec_json, &spec, why, sizeof why) != 0)
        snprintf(d->error, sizeof d->error, "run %lld: the checkpoint's spec is invalid",
                 (long long)d->row.run);
    else if (spec_model_check(&spec, NULL, 1, &sz, &checked, why, sizeof why) != 0 || !checked)
        snprintf(d->error, sizeof d->error, "run %lld: the checkpoint's model has no known size",
                 (long long)d->row.run);
    else if (c.n_params != sz.n_params)
        snprintf(d->error, sizeof d->error,
                 "run %lld: the checkpoint holds %zu parameters, its model has %zu",
                 (long long)d->row.run, c.n_params, sz.n_params);
    else
        rc = 0;
    for (size_t i = 0; !rc && i < c.n_params; i++)
        if (!isfinite(c.params[i])) {
            snprintf(d->error, sizeof d->error,
                     "run %lld: the checkpoint of epoch %lld holds non-finite weights: use "
                     "another (--checkpoint EPOCH)",
                     (long long)d->row.run, (long long)c.epoch);
            rc = -EINVAL;
        }
    if (!rc) {
        d->D = (int)sz.inputs;
        d->K = sz.outputs;
        d->ce = spec.loss == LOSS_CROSS_ENTROPY;
        d->scale = spec.dataset.scale;
        d->steps = sz.steps > 1 ? sz.steps : 1;
        d->vocab = spec.typed && spec.n_nodes > 0 && strcmp(spec.node[0].type, "embedding") == 0
                       ? spec.node[0].vocab
                       : 0;
        d->epoch = c.epoch;
        d->blob = sc.blob;
        d->blob_len = sc.size;
        sc.blob = NULL;
    }
    checkpoint_free(&c);
    store_checkpoint_free(&sc);
    return rc;
}

int serve_open(struct broker *b, char *err, size_t errlen)
{
    b->serve = calloc(1, sizeof *b->serve);
    if (!b->serve) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->serve->log = (struct log_limit)LOG_LIMIT_INIT("lines about serving not logged", 10);
    b->serve->next_expiry = INFINITY;
    b->serve->deadline_ms =
        b->opts.serve_deadline_ms > 0 ? b->opts.serve_deadline_ms : SERVE_DEADLINE_MS;
    struct store_deployment *rows = NULL;
    size_t n = 0;
    int rc = store_deployments_list(b->store, &rows, &n);
    if (rc) {
        snprintf(err, errlen, "deployments: %s", store_errmsg(b->store));
        return rc;
    }
    for (size_t i = n; i-- > 0;) {
        struct serve_dep *d = calloc(1, sizeof *d);
        if (!d) {
            rc = -ENOMEM;
            break;
        }
        d->row = rows[i];
        rc = dep_load(b, d);
        if (rc == -EINVAL) {
            log_warn("deployment %s cannot be served: %s", d->row.name, d->error);
            rc = 0;
        } else if (rc) {
            snprintf(err, errlen, "deployment %s: %s", d->row.name, store_errmsg(b->store));
            dep_free(d);
            break;
        }
        d->next = b->serve->deps;
        b->serve->deps = d;
    }
    free(rows);
    if (n) log_info("%zu deployment%s to place on trainers", n, n == 1 ? "" : "s");
    b->serve->place = true;
    return rc;
}

void serve_close(struct broker *b)
{
    struct serve *s = b->serve;
    if (!s) return;
    for (struct serve_dep *d = s->deps, *next; d; d = next) {
        next = d->next;
        dep_free(d);
    }
    for (size_t i = 0; i < s->n_slots; i++)
        free(s->slots[i].x);
    free(s->slots);
    free(s->free_list);
    for (size_t i = 0; i < s->cap_out; i++) {
        free(s->out[i].text);
        free(s->out[i].bin);
    }
    free(s->out);
    free(s);
    b->serve = NULL;
}

/* ---- slots ---------------------------------------------------------------------- */

static struct slot *slot_new(struct serve *s)
{
    size_t i;
    if (s->n_free) {
        i = s->free_list[--s->n_free];
    } else {
        if (s->n_slots == SERVE_MAX_INFLIGHT) return NULL;
        if (s->n_slots == s->cap_slots) {
            size_t cap = s->cap_slots ? 2 * s->cap_slots : 256;
            struct slot *sl = realloc(s->slots, cap * sizeof *sl);
            if (!sl) return NULL;
            s->slots = sl;
            size_t *fl = realloc(s->free_list, cap * sizeof *fl);
            if (!fl) return NULL;
            s->free_list = fl;
            s->cap_slots = cap;
        }
        i = s->n_slots++;
        s->slots[i].x = NULL;
    }
    struct slot *sl = &s->slots[i];
    float *x = sl->x;
    memset(sl, 0, sizeof *sl);
    sl->x = x;
    sl->seq = (++s->counter << SERVE_SLOT_BITS) | i;
    return sl;
}

static void slot_free(struct serve *s, struct slot *sl)
{
    if (sl->state == SLOT_PENDING) s->n_pending--;
    sl->state = SLOT_FREE;
    free(sl->x);
    sl->x = NULL;
    s->free_list[s->n_free++] = (size_t)(sl - s->slots);
}

static struct slot *slot_of(struct serve *s, uint64_t seq)
{
    size_t i = (size_t)(seq & (SERVE_MAX_INFLIGHT - 1));
    if (i >= s->n_slots || s->slots[i].state == SLOT_FREE || s->slots[i].seq != seq) return NULL;
    return &s->slots[i];
}

/* ---- routing -------------------------------------------------------------------- */

/* The least loaded replica of d that holds a model, or NULL. */
static struct trainer *pick_replica(struct broker *b, const struct serve_dep *d)
{
    struct trainer *best = NULL;
    for (size_t i = 0; i < b->n_trainers; i++) {
        struct trainer *t = &b->trainers[i];
        if (t->serve_dep != d || !t->serve_ready) continue;
        if (!best || t->serve_inflight < best->serve_inflight) best = t;
    }
    return best;
}

static int grow(void **buf, size_t *cap, size_t need)
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

static struct outbatch *outbatch_for(struct serve *s, const struct trainer *t)
{
    for (size_t i = 0; i < s->n_out; i++)
        if (s->out[i].ident_len == t->ident_len &&
            memcmp(s->out[i].ident, t->ident, t->ident_len) == 0 && s->out[i].n < SERVE_BATCH_REQS)
            return &s->out[i];
    if (s->n_out == s->cap_out) {
        size_t cap = s->cap_out ? 2 * s->cap_out : 8;
        struct outbatch *o = realloc(s->out, cap * sizeof *o);
        if (!o) return NULL;
        memset(o + s->cap_out, 0, (cap - s->cap_out) * sizeof *o);
        s->out = o;
        s->cap_out = cap;
    }
    struct outbatch *o = &s->out[s->n_out++];
    memcpy(o->ident, t->ident, t->ident_len);
    o->ident_len = t->ident_len;
    o->binary = t->infer_bin;
    o->text_len = o->binary ? PROTO_BATCH_FIXED : 0; /* the head is written at the flush */
    o->bin_len = 0;
    o->n = 0;
    return o;
}

/* Adds the request to its replica's INFER of this pass. */
static int route(struct broker *b, struct slot *sl, struct trainer *t)
{
    struct serve *s = b->serve;
    struct outbatch *o = outbatch_for(s, t);
    size_t xbytes = (size_t)sl->rows * (size_t)sl->dep->D * sizeof(float);
    if (!o || grow((void **)&o->text, &o->text_cap, o->text_len + 64) ||
        grow((void **)&o->bin, &o->bin_cap, o->bin_len + xbytes))
        return -ENOMEM;
    if (o->binary) {
        proto_rec_put(o->text + o->text_len, sl->seq, (uint32_t)sl->rows);
        o->text_len += PROTO_BIN_REC;
    } else {
        o->text_len += (size_t)snprintf(o->text + o->text_len, 64, "%s[%llu,%d]", o->n ? "," : "",
                                        (unsigned long long)sl->seq, sl->rows);
    }
    memcpy(o->bin + o->bin_len, sl->x, xbytes);
    o->bin_len += xbytes;
    o->n++;
    if (sl->state == SLOT_PENDING) s->n_pending--;
    sl->state = SLOT_SENT;
    memcpy(sl->replica, t->ident, t->ident_len);
    sl->replica_len = t->ident_len;
    t->serve_inflight++;
    return 0;
}

static void make_pending(struct serve *s, struct slot *sl)
{
    if (sl->state != SLOT_PENDING) s->n_pending++;
    sl->state = SLOT_PENDING;
    sl->replica_len = 0;
}

void serve_flush(struct broker *b)
{
    struct serve *s = b->serve;
    for (size_t i = 0; i < s->n_out; i++) {
        struct outbatch *o = &s->out[i];
        if (!o->n) continue;
        if (o->binary) {
            proto_batch_encode(o->text, &(struct proto_batch){.n = (uint32_t)o->n}, false);
            send_now_bin(b, o->ident, o->ident_len, PROTO_INFER_BIN, o->text, o->text_len, o->bin,
                         o->bin_len);
            continue;
        }
        char *text = NULL;
        if (asprintf(&text, "{\"reqs\":[%.*s]}", (int)o->text_len, o->text) < 0) continue;
        send_now(b, o->ident, o->ident_len, PROTO_INFER, text, o->bin, o->bin_len);
        free(text);
    }
    s->n_out = 0;
}

static void route_pending(struct broker *b)
{
    struct serve *s = b->serve;
    for (size_t i = 0; s->n_pending && i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_PENDING) continue;
        struct trainer *t = pick_replica(b, sl->dep);
        if (t && route(b, sl, t) != 0) break;
    }
}

/* ---- client commands ------------------------------------------------------------ */

static int cmp_float(const void *x, const void *y)
{
    float a = *(const float *)x, c = *(const float *)y;
    return a < c ? -1 : a > c;
}

static json_t *dep_json(struct broker *b, const struct serve_dep *d)
{
    json_t *names = json_array();
    int ready = 0, placed = 0;
    for (size_t i = 0; i < b->n_trainers; i++) {
        const struct trainer *t = &b->trainers[i];
        if (t->serve_dep != d) continue;
        placed++;
        bool current = t->serve_ready && t->serve_ready_gen == d->row.generation;
        if (current) ready++;
        json_array_append_new(names, json_pack("{s:s, s:s, s:i, s:I}", "trainer", t->name, "state",
                                               current ? "ready" : "loading", "inflight",
                                               t->serve_inflight, "generation",
                                               (json_int_t)t->serve_ready_gen));
    }
    json_t *lat = json_object();
    size_t n = d->lat_n < SERVE_LAT_RING ? (size_t)d->lat_n : SERVE_LAT_RING;
    if (n) {
        float *v = malloc(n * sizeof *v);
        if (v) {
            memcpy(v, d->lat_us, n * sizeof *v);
            qsort(v, n, sizeof *v, cmp_float);
            json_object_set_new(lat, "p50_us", json_real(v[(size_t)(0.50 * (double)(n - 1))]));
            json_object_set_new(lat, "p90_us", json_real(v[(size_t)(0.90 * (double)(n - 1))]));
            json_object_set_new(lat, "p99_us", json_real(v[(size_t)(0.99 * (double)(n - 1))]));
            json_object_set_new(lat, "n", json_integer((json_int_t)n));
            free(v);
        }
    }
    /* failed: nothing serves it and the last try could not load it (it is
     * tried again, docs/serving.md), or its checkpoint cannot be served. */
    const char *state = d->error[0] || (!ready && d->load_error[0]) ? "failed"
                        : ready >= d->row.replicas                  ? "ready"
                        : ready                                     ? "degraded"
                                                                    : "placing";
    json_t *o = json_pack(
        "{s:s, s:I, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:o}",
        "name", d->row.name, "run", (json_int_t)d->row.run, "checkpoint", d->row.checkpoint,
        "epoch", (json_int_t)d->epoch, "generation", (json_int_t)d->row.generation, "replicas",
        d->row.replicas, "ready", ready, "max_batch", d->row.max_batch, "max_delay_us",
        d->row.max_delay_us, "state", state, "replica_list", names, "requests",
        (json_int_t)d->requests, "rows", (json_int_t)d->rows, "errors", (json_int_t)d->errors,
        "forwards", (json_int_t)d->forwards, "resent", (json_int_t)d->resent, "latency", lat);
    if (!o) return NULL;
    json_object_set_new(o, "placed", json_integer(placed));
    json_object_set_new(o, "inputs", json_integer(d->D));
    json_object_set_new(o, "outputs", json_integer(d->K));
    json_object_set_new(o, "loss", json_string(d->ce ? "cross_entropy" : "mse"));
    json_object_set_new(o, "scale", json_boolean(d->scale));
    json_object_set_new(o, "steps", json_integer(d->steps));
    if (d->vocab) json_object_set_new(o, "vocab", json_integer(d->vocab));
    json_object_set_new(o, "rows_per_forward",
                        d->forwards ? json_real((double)d->forward_rows / (double)d->forwards)
                                    : json_null());
    json_object_set_new(o, "owner", d->row.owner[0] ? json_string(d->row.owner) : json_null());
    json_object_set_new(o, "created", json_real(d->row.created));
    json_object_set_new(o, "updated", json_real(d->row.updated));
    if (d->error[0]) {
        json_object_set_new(o, "error", json_string(d->error));
    } else if (d->load_error[0]) {
        double in = d->retry_at - broker_mono();
        char text[1200];
        snprintf(text, sizeof text,
                 "%s; tried again on a trainer that connects, or on any in %.0f s", d->load_error,
                 in > 0 ? in : 0);
        json_object_set_new(o, "error", json_string(text));
    }
    return o;
}

static int int_field(json_t *body, const char *key, int def, int lo, int hi, int *out)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -EINVAL;
    *out = (int)json_integer_value(v);
    return 0;
}

static void on_deploy(struct broker *b, struct proto_msg *m)
{
    const char *name = json_string_value(json_object_get(m->body, "name"));
    json_t *runv = json_object_get(m->body, "run");
    const char *ckpt = json_string_value(json_object_get(m->body, "checkpoint"));
    struct store_deployment row = {0};
    if (!name || !valid_name(name)) {
        broker_reply_error(b, m, "bad_request",
                           "DEPLOY: \"name\" is 1 to %d letters, digits, '-', '_' or '.'",
                           STORE_DEPLOY_NAME_MAX - 1);
        return;
    }
    if (!json_is_integer(runv) || json_integer_value(runv) <= 0) {
        broker_reply_error(b, m, "bad_request", "DEPLOY: \"run\" is a run id");
        return;
    }
    if (int_field(m->body, "replicas", 1, 1, SERVE_MAX_REPLICAS, &row.replicas) ||
        int_field(m->body, "max_batch", 64, 1, SERVE_MAX_BATCH, &row.max_batch) ||
        int_field(m->body, "max_delay_us", 0, 0, SERVE_MAX_DELAY_US, &row.max_delay_us)) {
        broker_reply_error(b, m, "bad_request",
                           "DEPLOY: \"replicas\" is 1 to %d, \"max_batch\" 1 to %d, "
                           "\"max_delay_us\" 0 to %d",
                           SERVE_MAX_REPLICAS, SERVE_MAX_BATCH, SERVE_MAX_DELAY_US);
        return;
    }
    snprintf(row.name, sizeof row.name, "%s", name);
    snprintf(row.checkpoint, sizeof row.checkpoint, "%s", ckpt ? ckpt : "last");
    enum store_ckpt_which which;
    int64_t epoch;
    if (strlen(ckpt ? ckpt : "last") >= sizeof row.checkpoint ||
        store_ckpt_which_parse(row.checkpoint, &which, &epoch) != 0) {
        broker_reply_error(b, m, "bad_request", "DEPLOY: \"checkpoint\" is last, best or an epoch");
        return;
    }
    row.run = json_integer_value(runv);
    struct store_job run;
    int rc = store_job_get(b->store, row.run, &run);
    bool visible = rc == 0 && (!b->who || b->who->role == KEYS_ROLE_ADMIN ||
                               (run.owner && strcmp(run.owner, b->who->name) == 0));
    bool train = rc == 0 && run.kind == JOB_TRAIN;
    if (rc == 0) store_job_free(&run);
    if (rc == -ENOENT || (rc == 0 && !visible)) {
        broker_reply_error(b, m, "not_found", "run %lld: no such run", (long long)row.run);
        return;
    }
    if (rc) {
        broker_reply_error(b, m, "store", "run %lld: %s", (long long)row.run,
                           store_errmsg(b->store));
        return;
    }
    if (!train) {
        broker_reply_error(b, m, "bad_request", "run %lld is not a train job", (long long)row.run);
        return;
    }
    struct serve_dep *old = dep_find(b, name);
    if (old && !may_use(b, old)) {
        broker_reply_error(b, m, "conflict",
                           "deployment %s belongs to another user: choose another name", name);
        return;
    }
    if (b->stopping) {
        broker_reply_error(b, m, "stopping", "the broker is stopping");
        return;
    }
    /* Check the model before anything is written: a deployment that cannot
     * be served is refused, and a rollover to it leaves the old one serving. */
    struct serve_dep *d = calloc(1, sizeof *d);
    if (!d) {
        broker_reply_error(b, m, "store", "out of memory");
        return;
    }
    d->row = row;
    rc = dep_load(b, d);
    if (rc) {
        if (rc == -EINVAL)
            broker_reply_error(b, m, "bad_request", "cannot deploy: %s", d->error);
        else
            broker_reply_error(b, m, "store", "cannot deploy: %s", store_errmsg(b->store));
        dep_free(d);
        return;
    }
    snprintf(d->row.owner, sizeof d->row.owner, "%s",
             old      ? old->row.owner
             : b->who ? b->who->name
                      : "");
    if (broker_write(b) || store_deployment_put(b->store, &d->row) != 0) {
        if (!b->store_error) broker_store_failed(b, "deployment put");
        dep_free(d);
        return;
    }
    bool rolled = old != NULL;
    if (old) {
        /* The same struct stays (replicas and in-flight requests point at
         * it); its model and settings become the new ones. */
        free(old->blob);
        struct store_deployment r = d->row;
        old->row = r;
        old->blob = d->blob;
        old->blob_len = d->blob_len;
        old->epoch = d->epoch;
        old->D = d->D;
        old->K = d->K;
        old->ce = d->ce;
        old->scale = d->scale;
        old->error[0] = '\0';
        old->load_error[0] = '\0';
        old->backoff = 0;
        d->blob = NULL;
        dep_free(d);
        d = old;
    } else {
        d->next = b->serve->deps;
        b->serve->deps = d;
    }
    b->serve->place = true;
    log_info("deployment %s: run %lld checkpoint %s (epoch %lld), generation %lld, %d replica%s",
             d->row.name, (long long)d->row.run, d->row.checkpoint, (long long)d->epoch,
             (long long)d->row.generation, d->row.replicas, d->row.replicas == 1 ? "" : "s");
    json_t *o = dep_json(b, d);
    json_object_set_new(o, "rolled_over", json_boolean(rolled));
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, o, NULL, 0);
}

static void fail_requests(struct broker *b, struct serve_dep *d, bool pending_only,
                          const char *code, const char *why)
{
    struct serve *s = b->serve;
    for (size_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state == SLOT_FREE || sl->dep != d) continue;
        if (pending_only && sl->state != SLOT_PENDING) continue;
        send_errorf(b, sl->client, sl->client_len, sl->has_id, sl->id, code, "%s", why);
        d->errors++;
        slot_free(s, sl);
    }
}

static void on_undeploy(struct broker *b, struct proto_msg *m)
{
    const char *name = json_string_value(json_object_get(m->body, "name"));
    struct serve_dep *d = name ? dep_find(b, name) : NULL;
    if (!name) {
        broker_reply_error(b, m, "bad_request", "UNDEPLOY needs a \"name\"");
        return;
    }
    if (!d || !may_use(b, d)) {
        broker_reply_error(b, m, "not_found", "deployment %s: no such deployment", name);
        return;
    }
    if (broker_write(b)) return;
    int rc = store_deployment_delete(b->store, name);
    if (rc && rc != -ENOENT) {
        broker_store_failed(b, "deployment delete");
        return;
    }
    /* Answers on their way still reach their clients (slots keep the
     * deployment); requests not yet sent cannot be answered any more. */
    char why[160];
    snprintf(why, sizeof why, "deployment %s was undeployed", name);
    fail_requests(b, d, false, "not_found", why);
    for (size_t i = 0; i < b->n_trainers; i++) {
        struct trainer *t = &b->trainers[i];
        if (t->serve_refused == d) t->serve_refused = NULL; /* d is freed below */
        if (t->serve_dep != d) continue;
        broker_reply(b, t->ident, t->ident_len, PROTO_UNSERVE,
                     json_pack("{s:s}", "deployment", name), NULL, 0);
        t->serve_dep = NULL;
        t->serve_ready = false;
        t->serve_inflight = 0;
    }
    struct serve_dep **p = &b->serve->deps;
    while (*p != d)
        p = &(*p)->next;
    *p = d->next;
    log_info("deployment %s undeployed", name);
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, json_pack("{s:s}", "name", name), NULL, 0);
    dep_free(d);
}

static void on_deployments(struct broker *b, struct proto_msg *m)
{
    const char *name = json_string_value(json_object_get(m->body, "name"));
    json_t *list = json_array();
    for (struct serve_dep *d = b->serve->deps; d; d = d->next)
        if (may_use(b, d) && (!name || strcmp(name, d->row.name) == 0))
            json_array_append_new(list, dep_json(b, d));
    if (name && json_array_size(list) == 0) {
        json_decref(list);
        broker_reply_error(b, m, "not_found", "deployment %s: no such deployment", name);
        return;
    }
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, json_pack("{s:o}", "deployments", list), NULL,
                 0);
}

/* An infer request as INFER or INFER_BIN gave it. */
struct infer_in {
    const char *name;
    int64_t rows;
    bool has_id, bin;
    int64_t id;
    int deadline_ms;
};

/* Checks one request, holds it in a slot and routes it (its rows taken
 * from m). Errors go to the client at once, JSON ERROR in both forms. */
static void admit(struct broker *b, struct proto_msg *m, const struct infer_in *in)
{
    struct serve *s = b->serve;
#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        send_errorf(b, m->ident, m->ident_len, in->has_id, in->id, code, __VA_ARGS__);             \
        return;                                                                                    \
    } while (0)
    const char *name = in->name;
    struct serve_dep *d = dep_find(b, name);
    if (!d || !may_use(b, d)) FAIL("not_found", "deployment %.100s: no such deployment", name);
    int64_t rows = in->rows;
    if (rows < 1) FAIL("bad_request", "INFER: \"rows\" is the number of rows, at least 1");
    /* rows first: a huge count must not overflow the product. */
    int64_t need =
        rows > SERVE_MAX_REQUEST_BYTES ? INT64_MAX : rows * (int64_t)d->D * (int64_t)sizeof(float);
    if (need > SERVE_MAX_REQUEST_BYTES)
        FAIL("too_large",
             "INFER: %lld rows of %d inputs are more than one request may hold (%d bytes of "
             "float32); send them in smaller requests",
             (long long)rows, d->D, SERVE_MAX_REQUEST_BYTES);
    if (!m->bin || (int64_t)m->bin_len != need)
        FAIL("bad_request",
             "INFER: deployment %s takes %d inputs per row: %lld rows are %lld bytes of float32, "
             "the request has %zu",
             name, d->D, (long long)rows, (long long)need, m->bin ? m->bin_len : 0);
    const float *x = m->bin;
    for (int64_t i = 0; i < rows * d->D; i++)
        if (!isfinite(x[i]))
            FAIL("bad_input", "INFER: row %lld, input %lld is %s: inputs must be finite",
                 (long long)(i / d->D), (long long)(i % d->D), isnan(x[i]) ? "NaN" : "infinite");
    if (d->steps > 1 && d->vocab) {
        /* A language model's row: a window of 1 to T token ids, its unused
         * tail -1 (docs/serving.md). */
        for (int64_t r = 0; r < rows; r++) {
            const float *row = x + r * d->D;
            int w = 0;
            while (w < d->D && row[w] != -1.0f)
                w++;
            for (int i = 0; i < d->D; i++) {
                bool ok = i < w ? row[i] >= 0.0f && row[i] < (float)d->vocab &&
                                      row[i] == (float)(int)row[i]
                                : row[i] == -1.0f;
                if (!ok)
                    FAIL("bad_input",
                         "INFER: row %lld, input %d is %g: deployment %s reads windows of up to "
                         "%d token ids, whole numbers in [0, %d), followed by -1s",
                         (long long)r, i, (double)row[i], name, d->D, d->vocab);
            }
            if (w == 0)
                FAIL("bad_input", "INFER: row %lld holds no token id (all -1)", (long long)r);
        }
    }
    if (in->deadline_ms < 1 || in->deadline_ms > SERVE_DEADLINE_MAX_MS)
        FAIL("bad_request", "INFER: \"deadline_ms\" is 1 to %d", SERVE_DEADLINE_MAX_MS);
    if (d->error[0]) FAIL("unavailable", "deployment %s cannot be served: %s", name, d->error);
    struct trainer *t = pick_replica(b, d);
    if (!t && d->load_error[0])
        FAIL("unavailable", "deployment %s cannot be served now: %s", name, d->load_error);
    if (b->stopping) FAIL("stopping", "the broker is stopping");
    struct slot *sl = slot_new(s);
    if (!sl)
        FAIL("overloaded", "the broker holds %d requests already: try again", SERVE_MAX_INFLIGHT);
#undef FAIL
    sl->dep = d;
    memcpy(sl->client, m->ident, m->ident_len);
    sl->client_len = m->ident_len;
    sl->has_id = in->has_id;
    sl->bin = in->bin;
    sl->id = in->id;
    sl->rows = (int)rows;
    sl->x = m->bin; /* taken */
    m->bin = NULL;
    sl->t0 = broker_mono();
    sl->deadline = sl->t0 + in->deadline_ms / 1000.0;
    if (sl->deadline < s->next_expiry) s->next_expiry = sl->deadline;
    d->requests++;
    d->rows += (uint64_t)rows;
    if (!t || route(b, sl, t) != 0) make_pending(s, sl);
}

static void on_infer(struct broker *b, struct proto_msg *m)
{
    json_t *idv = json_object_get(m->body, "id");
    struct infer_in in = {.has_id = json_is_integer(idv)};
    in.id = in.has_id ? json_integer_value(idv) : 0;
    in.name = json_string_value(json_object_get(m->body, "deployment"));
    json_t *rowsv = json_object_get(m->body, "rows");
    if (!in.name) {
        send_errorf(b, m->ident, m->ident_len, in.has_id, in.id, "bad_request",
                    "INFER needs a \"deployment\" name");
        return;
    }
    in.rows = json_is_integer(rowsv) ? json_integer_value(rowsv) : 0;
    if (int_field(m->body, "deadline_ms", b->serve->deadline_ms, 1, SERVE_DEADLINE_MAX_MS,
                  &in.deadline_ms))
        in.deadline_ms = 0; /* refused by admit */
    admit(b, m, &in);
}

static void on_infer_bin(struct broker *b, struct proto_msg *m)
{
    struct proto_infer_req r;
    char why[256];
    if (proto_infer_req_decode(m->hdr, m->hdr_len, &r, why, sizeof why) != 0) {
        send_errorf(b, m->ident, m->ident_len, false, 0, "bad_request", "%s", why);
        return;
    }
    struct infer_in in = {.name = r.deployment,
                          .rows = r.rows,
                          .has_id = r.has_id,
                          .bin = true,
                          .id = r.id,
                          .deadline_ms = b->serve->deadline_ms};
    if (r.deadline_ms) /* 0: the default; past the maximum: refused by admit */
        in.deadline_ms = r.deadline_ms > SERVE_DEADLINE_MAX_MS ? 0 : (int)r.deadline_ms;
    admit(b, m, &in);
}

bool serve_is_client_command(const char *c)
{
    return strcmp(c, PROTO_INFER) == 0 || strcmp(c, PROTO_INFER_BIN) == 0 ||
           strcmp(c, PROTO_DEPLOY) == 0 || strcmp(c, PROTO_UNDEPLOY) == 0 ||
           strcmp(c, PROTO_DEPLOYMENTS) == 0;
}

bool serve_is_trainer_command(const char *c)
{
    return strcmp(c, PROTO_INFERRED) == 0 || strcmp(c, PROTO_INFERRED_BIN) == 0 ||
           strcmp(c, PROTO_SERVING) == 0;
}

void serve_client_message(struct broker *b, struct proto_msg *m)
{
    const char *c = m->cmd;
    if (strcmp(c, PROTO_INFER_BIN) == 0)
        on_infer_bin(b, m);
    else if (strcmp(c, PROTO_INFER) == 0)
        on_infer(b, m);
    else if (strcmp(c, PROTO_DEPLOY) == 0)
        on_deploy(b, m);
    else if (strcmp(c, PROTO_UNDEPLOY) == 0)
        on_undeploy(b, m);
    else if (strcmp(c, PROTO_DEPLOYMENTS) == 0)
        on_deployments(b, m);
}

/* ---- replicas ------------------------------------------------------------------- */

static void send_serve(struct broker *b, struct trainer *t, struct serve_dep *d)
{
    void *blob = malloc(d->blob_len);
    if (!blob) return;
    memcpy(blob, d->blob, d->blob_len);
    broker_reply(b, t->ident, t->ident_len, PROTO_SERVE,
                 json_pack("{s:s, s:I, s:I, s:i, s:i}", "deployment", d->row.name, "generation",
                           (json_int_t)d->row.generation, "run", (json_int_t)d->row.run,
                           "max_batch", d->row.max_batch, "max_delay_us", d->row.max_delay_us),
                 blob, d->blob_len);
    t->serve_dep = d;
    t->serve_gen = d->row.generation;
}

static void on_serving(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    const char *name = json_string_value(json_object_get(m->body, "deployment"));
    json_t *gv = json_object_get(m->body, "generation");
    json_t *ok = json_object_get(m->body, "ok");
    if (!name || !json_is_integer(gv) || !json_is_boolean(ok)) {
        broker_drop_log(b, "SERVING from %s without deployment, generation or ok", t->name);
        return;
    }
    struct serve_dep *d = t->serve_dep;
    if (!d || strcmp(d->row.name, name) != 0) return; /* undeployed meanwhile */
    int64_t gen = json_integer_value(gv);
    if (json_is_true(ok)) {
        t->serve_ready = true;
        t->serve_ready_gen = gen;
        if (gen == d->row.generation) {
            d->load_error[0] = '\0';
            d->backoff = 0;
        }
        log_info("deployment %s: trainer %s serves generation %lld", name, t->name, (long long)gen);
        route_pending(b);
        return;
    }
    const char *why = json_string_value(json_object_get(m->body, "error"));
    log_warn("deployment %s: trainer %s cannot load generation %lld: %s", name, t->name,
             (long long)gen, why ? why : "no reason given");
    if (gen == d->row.generation && !t->serve_ready) {
        /* It holds no model: it is no replica. Another trainer (another
         * version, more memory) may load it: placed again at once on any
         * other idle trainer, and on this one after a backoff. What waits
         * for it fails now if nothing else serves it. */
        snprintf(d->load_error, sizeof d->load_error, "trainer %.100s cannot load it: %.400s",
                 t->name, why ? why : "no reason given");
        d->backoff = d->backoff > 0 ? fmin(2 * d->backoff, SERVE_RETRY_MAX_S) : SERVE_RETRY_S;
        d->retry_at = broker_mono() + d->backoff;
        t->serve_dep = NULL;
        t->serve_refused = d;
        t->serve_refused_gen = gen;
        b->serve->place = true;
        if (!pick_replica(b, d)) fail_requests(b, d, true, "unavailable", d->load_error);
    }
}

/* Answers sl with its rows of one forward pass: out holds them (rows x K),
 * and its class ids start at row `at` of pb's. */
static void answer(struct broker *b, struct slot *sl, const struct proto_batch *pb,
                   const float *out, size_t at)
{
    struct serve_dep *d = sl->dep;
    double lat_us = (broker_mono() - sl->t0) * 1e6;
    d->lat_us[d->lat_n++ % SERVE_LAT_RING] = (float)lat_us;
    int K = (int)pb->outputs;
    size_t out_len = (size_t)sl->rows * (size_t)K * sizeof(float);
    const unsigned char *cls = pb->class_ids ? (const unsigned char *)pb->class_ids + 4 * at : NULL;
    if (sl->bin) {
        struct proto_answer a = {.has_id = sl->has_id,
                                 .classes = cls != NULL,
                                 .id = sl->id,
                                 .run = pb->run,
                                 .epoch = pb->epoch,
                                 .generation = pb->generation,
                                 .rows = (uint32_t)sl->rows,
                                 .outputs = (uint32_t)K,
                                 .batch = (uint32_t)pb->rows,
                                 .latency_us = (float)lat_us};
        size_t len = PROTO_ANSWER_FIXED + (cls ? 4 * (size_t)sl->rows : 0);
        unsigned char small[PROTO_ANSWER_FIXED + 4 * 64];
        unsigned char *hdr = len <= sizeof small ? small : malloc(len);
        if (!hdr) return;
        proto_answer_encode(hdr, &a);
        if (cls) memcpy(hdr + PROTO_ANSWER_FIXED, cls, 4 * (size_t)sl->rows); /* int32 LE as sent */
        send_now_bin(b, sl->client, sl->client_len, PROTO_ANSWER_BIN, hdr, len, out, out_len);
        if (hdr != small) free(hdr);
        return;
    }
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (!f) return;
    fputc('{', f);
    if (sl->has_id) fprintf(f, "\"id\":%lld,", (long long)sl->id);
    fprintf(f,
            "\"deployment\":\"%s\",\"run\":%lld,\"epoch\":%lld,\"generation\":%lld,"
            "\"rows\":%d,\"outputs\":%d,\"loss\":\"%s\",\"batch\":%llu,\"latency_us\":%.1f",
            d->row.name, (long long)pb->run, (long long)pb->epoch, (long long)pb->generation,
            sl->rows, K, cls ? "cross_entropy" : "mse", (unsigned long long)pb->rows, lat_us);
    if (cls) {
        fputs(",\"classes\":[", f);
        for (int r = 0; r < sl->rows; r++)
            fprintf(f, "%s%d", r ? "," : "", (int)proto_get_i32(cls + 4 * (size_t)r));
        fputc(']', f);
    }
    fputc('}', f);
    if (fclose(f) == 0) send_now(b, sl->client, sl->client_len, PROTO_OK, text, out, out_len);
    free(text);
}

/* One forward pass's answers (INFERRED or INFERRED_BIN, as pb): each
 * request still held for this replica is answered, the rest ignored. */
static void inferred_apply(struct broker *b, struct trainer *t, const struct proto_batch *pb,
                           const struct proto_msg *m)
{
    struct serve *s = b->serve;
    int K = (int)pb->outputs;
    bool error = pb->error != NULL;
    if (!error && (K < 1 || pb->rows > SERVE_MAX_REQUEST_BYTES ||
                   (uint64_t)m->bin_len != pb->rows * (uint64_t)K * sizeof(float))) {
        broker_drop_log(b, "INFERRED from %s: outputs do not match the rows", t->name);
        return;
    }
    size_t row_at = 0;
    struct serve_dep *counted = NULL;
    for (uint32_t i = 0; i < pb->n; i++) {
        uint64_t seq;
        uint32_t rows;
        proto_rec_get(pb->recs + (size_t)i * PROTO_BIN_REC, &seq, &rows);
        struct slot *sl = slot_of(s, seq);
        size_t at = row_at;
        row_at += rows;
        /* Answered already (by another replica after a resend), past its
         * deadline, or not this replica's: nothing to do. */
        if (!sl || sl->state != SLOT_SENT || sl->replica_len != t->ident_len ||
            memcmp(sl->replica, t->ident, t->ident_len) != 0 || (uint32_t)sl->rows != rows)
            continue;
        if (t->serve_inflight > 0) t->serve_inflight--;
        if (!counted) counted = sl->dep;
        if (error) {
            send_errorf(b, sl->client, sl->client_len, sl->has_id, sl->id, "bad_input", "%.*s",
                        (int)(pb->error_len > 800 ? 800 : pb->error_len), pb->error);
            sl->dep->errors++;
        } else {
            answer(b, sl, pb, (const float *)m->bin + at * (size_t)K, at);
        }
        slot_free(s, sl);
    }
    if (counted && !error) {
        counted->forwards += pb->forwards ? pb->forwards : 1;
        counted->forward_rows += pb->rows;
    }
}

static void on_inferred_bin(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    struct proto_batch pb;
    char why[256];
    if (proto_batch_decode(m->hdr, m->hdr_len, true, &pb, why, sizeof why) != 0) {
        broker_drop_log(b, "INFERRED_BIN from %s: %s", t->name, why);
        return;
    }
    inferred_apply(b, t, &pb, m);
}

/* The JSON form (a trainer without infer_bin), read into a binary one. */
static void on_inferred(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    json_t *reqs = json_object_get(m->body, "reqs");
    json_t *kv = json_object_get(m->body, "outputs");
    json_t *gv = json_object_get(m->body, "generation");
    const char *err = json_string_value(json_object_get(m->body, "error"));
    if (!json_is_array(reqs) || json_array_size(reqs) == 0 ||
        json_array_size(reqs) > SERVE_MAX_INFLIGHT ||
        (!err && (!json_is_integer(kv) || !json_is_integer(gv)))) {
        broker_drop_log(b, "INFERRED from %s without reqs, outputs or generation", t->name);
        return;
    }
    json_t *classes = json_object_get(m->body, "classes");
    json_t *fw = json_object_get(m->body, "forwards");
    struct proto_batch pb = {
        .n = (uint32_t)json_array_size(reqs),
        .generation = json_integer_value(gv),
        .run = json_integer_value(json_object_get(m->body, "run")),
        .epoch = json_integer_value(json_object_get(m->body, "epoch")),
        .outputs = (uint32_t)(json_integer_value(kv) > 0 && json_integer_value(kv) < INT32_MAX
                                  ? json_integer_value(kv)
                                  : 0),
        .forwards = json_is_integer(fw) && json_integer_value(fw) > 0
                        ? (uint32_t)json_integer_value(fw)
                        : 1,
        .error = err,
        .error_len = err ? strlen(err) : 0};
    unsigned char *recs = malloc((size_t)pb.n * PROTO_BIN_REC);
    unsigned char *cls = NULL;
    if (!recs) return;
    size_t i;
    json_t *e;
    json_array_foreach(reqs, i, e)
    {
        int64_t r = json_integer_value(json_array_get(e, 1));
        if (r < 1 || r > SERVE_MAX_REQUEST_BYTES) {
            broker_drop_log(b, "INFERRED from %s: a request of %lld rows", t->name, (long long)r);
            goto out;
        }
        proto_rec_put(recs + i * PROTO_BIN_REC, (uint64_t)json_integer_value(json_array_get(e, 0)),
                      (uint32_t)r);
        pb.rows += (uint64_t)r;
    }
    pb.recs = recs;
    if (!err && json_is_array(classes)) {
        if (json_array_size(classes) != pb.rows) {
            broker_drop_log(b, "INFERRED from %s: outputs do not match the rows", t->name);
            goto out;
        }
        cls = malloc(4 * pb.rows);
        if (!cls) goto out;
        json_array_foreach(classes, i, e)
            proto_put_i32(cls + 4 * i, (int32_t)json_integer_value(e));
        pb.class_ids = cls;
    }
    inferred_apply(b, t, &pb, m);
out:
    free(recs);
    free(cls);
}

void serve_trainer_message(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    if (strcmp(m->cmd, PROTO_INFERRED_BIN) == 0)
        on_inferred_bin(b, t, m);
    else if (strcmp(m->cmd, PROTO_INFERRED) == 0)
        on_inferred(b, t, m);
    else
        on_serving(b, t, m);
}

void serve_hello(struct broker *b, struct trainer *t, const json_t *serving)
{
    const char *name = json_string_value(json_object_get(serving, "deployment"));
    json_t *gv = json_object_get(serving, "generation");
    if (!name) return;
    struct serve_dep *d = dep_find(b, name);
    if (d && json_is_integer(gv) && !d->error[0]) {
        /* A replica that outlived a broker restart (or reconnected) keeps
         * its model: it serves again at once, and a newer generation is
         * sent to it by the placement. */
        t->serve_dep = d;
        t->serve_gen = json_integer_value(gv);
        t->serve_ready = true;
        t->serve_ready_gen = t->serve_gen;
        b->serve->place = true;
        route_pending(b);
    } else {
        broker_reply(b, t->ident, t->ident_len, PROTO_UNSERVE,
                     json_pack("{s:s}", "deployment", name), NULL, 0);
    }
}

void serve_trainer_removed(struct broker *b, struct trainer *t)
{
    struct serve *s = b->serve;
    if (!s || !t->serve_dep) return;
    struct serve_dep *d = t->serve_dep;
    size_t resent = 0;
    t->serve_dep = NULL;
    for (size_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_SENT || sl->replica_len != t->ident_len ||
            memcmp(sl->replica, t->ident, t->ident_len) != 0)
            continue;
        make_pending(s, sl);
        sl->dep->resent++;
        resent++;
    }
    if (resent)
        log_warn("deployment %s: replica %s lost with %zu request%s in flight: sending them to "
                 "another replica",
                 d->row.name, t->name, resent, resent == 1 ? "" : "s");
    s->place = true;
}

/* Replicas wanted against replicas placed: idle trainers become replicas,
 * replicas of an older generation get the new model, extra ones are given
 * back. */
static void place(struct broker *b)
{
    for (struct serve_dep *d = b->serve->deps; d; d = d->next) {
        int placed = 0;
        for (size_t i = 0; i < b->n_trainers; i++) {
            struct trainer *t = &b->trainers[i];
            if (t->serve_dep != d) continue;
            if (placed >= d->row.replicas) {
                broker_reply(b, t->ident, t->ident_len, PROTO_UNSERVE,
                             json_pack("{s:s}", "deployment", d->row.name), NULL, 0);
                t->serve_dep = NULL;
                t->serve_ready = false;
                t->serve_inflight = 0;
                continue;
            }
            placed++;
            if (t->serve_gen != d->row.generation && !d->error[0]) send_serve(b, t, d);
        }
        if (d->error[0]) continue;
        bool retry = broker_mono() >= d->retry_at;
        for (size_t i = 0; placed < d->row.replicas && i < b->n_trainers; i++) {
            struct trainer *t = &b->trainers[i];
            if (t->job || t->serve_dep || !t->name[0]) continue;
            if (!retry && t->serve_refused == d && t->serve_refused_gen == d->row.generation)
                continue; /* it could not load this one: others first */
            t->serve_ready = false;
            t->serve_inflight = 0;
            log_info("deployment %s: placing a replica on trainer %s", d->row.name, t->name);
            send_serve(b, t, d);
            placed++;
        }
    }
}

double serve_tick(struct broker *b, double now)
{
    struct serve *s = b->serve;
    if ((s->place || now >= s->next_place) && !b->stopping) {
        s->place = false;
        s->next_place = now + 0.1;
        place(b);
    }
    if (s->n_pending) route_pending(b);
    if (now >= s->next_expiry) {
        s->next_expiry = INFINITY;
        for (size_t i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            if (sl->state == SLOT_FREE) continue;
            if (now < sl->deadline) {
                if (sl->deadline < s->next_expiry) s->next_expiry = sl->deadline;
                continue;
            }
            int ms = (int)((sl->deadline - sl->t0) * 1000.0 + 0.5);
            send_errorf(b, sl->client, sl->client_len, sl->has_id, sl->id, "timeout",
                        "deployment %s: no answer within the deadline (%d ms): %s",
                        sl->dep->row.name, ms,
                        sl->state == SLOT_PENDING ? "no replica is serving it"
                                                  : "its replica is slow or gone");
            if (sl->state == SLOT_SENT) {
                struct trainer *t = trainers_find(b, sl->replica, sl->replica_len);
                if (t && t->serve_inflight > 0) t->serve_inflight--;
            }
            sl->dep->errors++;
            slot_free(s, sl);
        }
    }
    return s->next_expiry;
}

/* Placement looks again whenever a trainer comes or goes, or a job ends. */
void serve_kick(struct broker *b)
{
    if (b->serve) b->serve->place = true;
}

json_t *serve_replica_of(struct broker *b, const struct trainer *t)
{
    if (!t->serve_dep || !may_use(b, t->serve_dep)) return json_null();
    return json_string(t->serve_dep->row.name);
}
