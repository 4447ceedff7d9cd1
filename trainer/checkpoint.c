#include "checkpoint.h"
#include "errmsg.h"
#include "tensor.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

static const char magic[8] = "MLQCKPT";

/* ---- little-endian writer and reader over a byte buffer ---- */

struct writer {
    unsigned char *p;
};

static void put_u32(struct writer *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}

static void put_u64(struct writer *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}

static void put_f64(struct writer *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(w, v);
}

static void put_floats(struct writer *w, const float *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &f[i], sizeof v);
        put_u32(w, v);
    }
}

struct reader {
    const unsigned char *p, *end;
    int short_read;
};

static uint64_t get_bytes_le(struct reader *r, int n)
{
    if (r->end - r->p < n) {
        r->short_read = 1;
        r->p = r->end;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return v;
}

static uint32_t get_u32(struct reader *r)
{
    return (uint32_t)get_bytes_le(r, 4);
}

static uint64_t get_u64(struct reader *r)
{
    return get_bytes_le(r, 8);
}

static double get_f64(struct reader *r)
{
    uint64_t v = get_u64(r);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static void get_floats(struct reader *r, float *f, size_t n)
{
    for (size_t i = 0; i < n && !r->short_read; i++) {
        uint32_t v = get_u32(r);
        memcpy(&f[i], &v, sizeof v);
    }
}

/* Fixed part of the header after the spec text: 3 + 4 + 1 + 1 + 2 words,
 * then the last epoch's metrics (4 words), which older checkpoints lack. */
#define FIXED_HEADER_BYTES (3 * 8 + 4 * 8 + 8 + 8 + 2 * 8)
#define METRICS_BYTES (4 * 8)
/* Version 2 after the metrics: u64 state floats, u32 tensors, then per
 * tensor u8 kind, u8 ndim, u16 name length, the name, ndim u64 dims and a
 * u64 offset. */
#define TENSOR_BYTES(t) (4 + strlen((t)->name) + 8 * (size_t)(t)->ndim + 8)
/* The run state after the table: u32 its length, then 9 words (f64 lr,
 * i64 last epoch, i64 phase epoch, f64 best, i64 bad epochs, i64 cooldown,
 * f64 early stopping's best, i64 its wait, i64 its best epoch) and since
 * max_seconds a tenth (f64 seconds trained). A reader takes the words it
 * knows and skips the rest; the first 9 are the least a record has. */
#define RUN_STATE_MIN_BYTES (9 * 8)
#define RUN_STATE_BYTES (10 * 8)

int checkpoint_encode(const struct checkpoint *c, void **blob, size_t *len)
{
    size_t spec_len = c->spec_json ? strlen(c->spec_json) : 0;
    size_t table = 8 + 4;
    for (int i = 0; i < c->n_tensors; i++)
        table += TENSOR_BYTES(&c->tensors[i]);
    if (c->has_run_state) table += 4 + RUN_STATE_BYTES;
    size_t header = 4 + spec_len + FIXED_HEADER_BYTES + METRICS_BYTES + table;
    size_t total = sizeof magic + 4 + 4 + header + 4 * (c->n_params + c->n_optim + c->n_state) + 4;
    if (spec_len > UINT32_MAX || header > UINT32_MAX) return -E2BIG;
    unsigned char *buf = malloc(total);
    if (!buf) return -ENOMEM;
    struct writer w = {buf};
    memcpy(w.p, magic, sizeof magic);
    w.p += sizeof magic;
    put_u32(&w, CHECKPOINT_VERSION);
    put_u32(&w, (uint32_t)header);
    put_u32(&w, (uint32_t)spec_len);
    memcpy(w.p, c->spec_json, spec_len);
    w.p += spec_len;
    put_u64(&w, (uint64_t)c->epoch);
    put_u64(&w, (uint64_t)c->step);
    put_u64(&w, (uint64_t)c->epoch_rows);
    for (int i = 0; i < 4; i++)
        put_u64(&w, c->rng.s[i]);
    put_u64(&w, (uint64_t)c->optim_step);
    put_f64(&w, c->best_metric);
    put_u64(&w, c->n_params);
    put_u64(&w, c->n_optim);
    put_f64(&w, c->train_loss);
    put_f64(&w, c->train_accuracy);
    put_f64(&w, c->val_loss);
    put_f64(&w, c->val_accuracy);
    put_u64(&w, c->n_state);
    put_u32(&w, (uint32_t)c->n_tensors);
    for (int i = 0; i < c->n_tensors; i++) {
        const struct checkpoint_tensor *t = &c->tensors[i];
        size_t n = strlen(t->name);
        *w.p++ = (unsigned char)t->kind;
        *w.p++ = (unsigned char)t->ndim;
        *w.p++ = (unsigned char)(n & 0xff);
        *w.p++ = (unsigned char)(n >> 8);
        memcpy(w.p, t->name, n);
        w.p += n;
        for (int d = 0; d < t->ndim; d++)
            put_u64(&w, (uint64_t)t->shape[d]);
        put_u64(&w, t->offset);
    }
    if (c->has_run_state) {
        put_u32(&w, RUN_STATE_BYTES);
        put_f64(&w, c->sched_lr);
        put_u64(&w, (uint64_t)c->sched_last_epoch);
        put_u64(&w, (uint64_t)c->sched_phase_epoch);
        put_f64(&w, c->sched_best);
        put_u64(&w, (uint64_t)c->sched_bad_epochs);
        put_u64(&w, (uint64_t)c->sched_cooldown);
        put_f64(&w, c->es_best);
        put_u64(&w, (uint64_t)c->es_wait);
        put_u64(&w, (uint64_t)c->es_best_epoch);
        put_f64(&w, c->trained_seconds);
    }
    put_floats(&w, c->params, c->n_params);
    put_floats(&w, c->optim_state, c->n_optim);
    put_floats(&w, c->state, c->n_state);
    put_u32(&w, (uint32_t)crc32(0L, buf, (uInt)(w.p - buf)));
    *blob = buf;
    *len = total;
    return 0;
}

/* Version 2's state size and tensor table, which must end by `body`. */
static int read_table(struct reader *r, const unsigned char *body, struct checkpoint *c,
                      uint64_t *n_state)
{
    *n_state = get_u64(r);
    uint32_t n = get_u32(r);
    if (r->short_read || n > CHECKPOINT_MAX_TENSORS) return -EINVAL;
    c->tensors = calloc(n ? n : 1, sizeof *c->tensors);
    if (!c->tensors) return -ENOMEM;
    c->n_tensors = (int)n;
    for (uint32_t i = 0; i < n; i++) {
        struct checkpoint_tensor *t = &c->tensors[i];
        if (body - r->p < 4) return -EINVAL;
        t->kind = r->p[0];
        t->ndim = r->p[1];
        size_t len = (size_t)r->p[2] | (size_t)r->p[3] << 8;
        r->p += 4;
        if (t->kind > 1 || t->ndim > 4 || len == 0 || len >= CHECKPOINT_NAME_MAX ||
            (size_t)(body - r->p) < len)
            return -EINVAL;
        memcpy(t->name, r->p, len);
        t->name[len] = '\0';
        if (memchr(t->name, '\0', len)) return -EINVAL;
        r->p += len;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v = get_u64(r);
            if (v == 0 || v > ((uint64_t)1 << 32)) return -EINVAL;
            t->shape[d] = (int64_t)v;
        }
        t->offset = get_u64(r);
        if (r->short_read || r->p > body) return -EINVAL;
    }
    return 0;
}

int checkpoint_decode(const void *blob, size_t len, struct checkpoint *c, char *err, size_t errlen)
{
    int rc;
    memset(c, 0, sizeof *c);
    const unsigned char *buf = blob;
    if (len < sizeof magic + 12 || memcmp(buf, magic, sizeof magic) != 0)
        return errmsg(err, errlen, -EINVAL, "not an mlq checkpoint (bad magic)");
    uint32_t stored_crc = (uint32_t)buf[len - 4] | (uint32_t)buf[len - 3] << 8 |
                          (uint32_t)buf[len - 2] << 16 | (uint32_t)buf[len - 1] << 24;
    if (crc32(0L, buf, (uInt)(len - 4)) != stored_crc)
        return errmsg(err, errlen, -EINVAL, "checkpoint checksum mismatch (corrupt or truncated)");

    struct reader r = {buf + sizeof magic, buf + len - 4, 0};
    uint32_t version = get_u32(&r);
    if (version == 0 || version > CHECKPOINT_VERSION)
        return errmsg(err, errlen, -EINVAL,
                      "checkpoint version %u is not supported (this mlq reads up to %u)", version,
                      CHECKPOINT_VERSION);
    uint32_t header = get_u32(&r);
    /* Every bound below is the body's start: it must lie inside the blob. */
    if (header > (size_t)(r.end - r.p))
        return errmsg(err, errlen, -EINVAL, "checkpoint header is malformed");
    const unsigned char *body = r.p + header;
    uint32_t spec_len = get_u32(&r);
    if (header < 4 + FIXED_HEADER_BYTES || spec_len > header - 4 - FIXED_HEADER_BYTES ||
        (size_t)(r.end - r.p) < spec_len)
        return errmsg(err, errlen, -EINVAL, "checkpoint header is malformed");
    c->spec_json = malloc(spec_len + 1);
    if (!c->spec_json) return -ENOMEM;
    memcpy(c->spec_json, r.p, spec_len);
    c->spec_json[spec_len] = '\0';
    r.p += spec_len;
    c->epoch = (int64_t)get_u64(&r);
    c->step = (int64_t)get_u64(&r);
    c->epoch_rows = (int64_t)get_u64(&r);
    for (int i = 0; i < 4; i++)
        c->rng.s[i] = get_u64(&r);
    c->optim_step = (int64_t)get_u64(&r);
    c->best_metric = get_f64(&r);
    uint64_t n_params = get_u64(&r), n_optim = get_u64(&r);
    c->train_loss = c->train_accuracy = c->val_loss = c->val_accuracy = NAN;
    if (!r.short_read && body >= r.p && body - r.p >= METRICS_BYTES) {
        c->train_loss = get_f64(&r);
        c->train_accuracy = get_f64(&r);
        c->val_loss = get_f64(&r);
        c->val_accuracy = get_f64(&r);
    } else if (version >= 2) {
        goto malformed;
    }
    uint64_t n_state = 0;
    if (version >= 2 && (rc = read_table(&r, body, c, &n_state))) goto malformed;
    if (version >= 2 && !r.short_read && r.p <= body && body - r.p >= 4) {
        uint32_t n = get_u32(&r);
        if ((n && n < RUN_STATE_MIN_BYTES) || n > (size_t)(body - r.p)) goto malformed;
        const unsigned char *next = r.p + n;
        c->has_run_state = n > 0; /* 0: none, with fields appended after it */
        if (c->has_run_state) {
            c->sched_lr = get_f64(&r);
            c->sched_last_epoch = (int64_t)get_u64(&r);
            c->sched_phase_epoch = (int64_t)get_u64(&r);
            c->sched_best = get_f64(&r);
            c->sched_bad_epochs = (int64_t)get_u64(&r);
            c->sched_cooldown = (int64_t)get_u64(&r);
            c->es_best = get_f64(&r);
            c->es_wait = (int64_t)get_u64(&r);
            c->es_best_epoch = (int64_t)get_u64(&r);
            c->trained_seconds = n >= RUN_STATE_BYTES ? get_f64(&r) : 0;
        }
        r.p = next;
    }
    /* Later versions may append header fields: skip to the body. */
    if (r.short_read || body > r.end || r.p > body) goto malformed;
    r.p = body;
    uint64_t avail = (uint64_t)(r.end - r.p) / 4;
    if (n_params > avail || n_optim > avail - n_params || n_state > avail - n_params - n_optim ||
        (uint64_t)(r.end - r.p) != 4 * (n_params + n_optim + n_state))
        goto malformed;
    for (int i = 0; i < c->n_tensors; i++) {
        const struct checkpoint_tensor *t = &c->tensors[i];
        uint64_t size = 1; /* four dimensions of up to 2^32 overflow 64 bits */
        for (int d = 0; d < t->ndim; d++)
            if (__builtin_mul_overflow(size, (uint64_t)t->shape[d], &size)) goto malformed;
        uint64_t of = t->kind == 0 ? n_params : n_state;
        if (t->offset > of || size > of - t->offset) goto malformed;
    }
    c->n_params = n_params;
    c->n_optim = n_optim;
    c->n_state = n_state;
    c->params = malloc(4 * (n_params ? n_params : 1));
    c->optim_state = malloc(4 * (n_optim ? n_optim : 1));
    c->state = malloc(4 * (n_state ? n_state : 1));
    if (!c->params || !c->optim_state || !c->state) {
        checkpoint_free(c);
        return -ENOMEM;
    }
    get_floats(&r, c->params, n_params);
    get_floats(&r, c->optim_state, n_optim);
    get_floats(&r, c->state, n_state);
    if (r.short_read) goto malformed;
    return 0;
malformed:
    checkpoint_free(c);
    return errmsg(err, errlen, -EINVAL,
                  "checkpoint body is malformed (sizes disagree with the header)");
}

void checkpoint_free(struct checkpoint *c)
{
    free(c->spec_json);
    free(c->params);
    free(c->optim_state);
    free(c->state);
    free(c->tensors);
    memset(c, 0, sizeof *c);
}

int checkpoint_read_file(const char *path, void **blob, size_t *len, char *err, size_t errlen)
{
    *blob = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        snprintf(err, errlen, "%s: empty or unreadable", path);
        return -EINVAL;
    }
    unsigned char *buf = malloc((size_t)st.st_size);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            snprintf(err, errlen, "%s: read failed: %s", path, strerror(e));
            return -e;
        }
        got += (size_t)n;
    }
    close(fd);
    *blob = buf;
    *len = got;
    return 0;
}

int checkpoint_set_tensors(struct checkpoint *c, const struct tensor_table *tt)
{
    c->n_tensors = 0;
    c->tensors = calloc(tt->n ? (size_t)tt->n : 1, sizeof *c->tensors);
    if (!c->tensors) return -ENOMEM;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        struct checkpoint_tensor *o = &c->tensors[i];
        if (strlen(t->name) >= sizeof o->name) return -ENAMETOOLONG;
        strcpy(o->name, t->name);
        o->kind = t->kind == OP_PARAM ? 0 : 1;
        o->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            o->shape[d] = t->shape[d];
        o->offset = t->offset;
    }
    c->n_tensors = tt->n;
    return 0;
}

/* "parameter (4, 1, 2, 2)", "state ()". */
static const char *tensor_desc(int kind, int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "%s (", kind == 0 ? "parameter" : "state");
    for (int d = 0; d < ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < len) snprintf(buf + at, len - at, ")");
    return buf;
}

/* The index of name in c's table, trying `hint` (the same index) first, or -1. */
static int find_tensor(const struct checkpoint *c, const char *name, int hint)
{
    if (hint < c->n_tensors && strcmp(c->tensors[hint].name, name) == 0) return hint;
    for (int i = 0; i < c->n_tensors; i++)
        if (strcmp(c->tensors[i].name, name) == 0) return i;
    return -1;
}

/* Checks that c's table holds every tensor of tt, with the same kind and
 * shape, and nothing else, but for the batch counts it may lack. */
static int match_tensors(const struct checkpoint *c, const struct tensor_table *tt, char *err,
                         size_t errlen)
{
    int filled = 0;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        int j = find_tensor(c, t->name, i);
        if (j < 0) {
            if (tensor_is_batch_count(t)) {
                filled++;
                continue;
            }
            return errmsg(err, errlen, -EINVAL, "the checkpoint has no tensor %s (another model)",
                          t->name);
        }
        const struct checkpoint_tensor *a = &c->tensors[j];
        int kind = t->kind == OP_PARAM ? 0 : 1;
        bool same = a->kind == kind && a->ndim == t->ndim;
        for (int d = 0; same && d < a->ndim; d++)
            same = a->shape[d] == t->shape[d];
        if (!same) {
            char x[128], y[128];
            int64_t shape[4];
            for (int d = 0; d < t->ndim; d++)
                shape[d] = t->shape[d];
            return errmsg(err, errlen, -EINVAL,
                          "the checkpoint's tensor %s is a %s, the model's a %s (another model)",
                          t->name, tensor_desc(a->kind, a->ndim, a->shape, x, sizeof x),
                          tensor_desc(kind, t->ndim, shape, y, sizeof y));
        }
    }
    if (c->n_tensors == tt->n - filled) return 0;
    for (int i = 0; i < c->n_tensors; i++)
        if (!tensor_find(tt, c->tensors[i].name))
            return errmsg(err, errlen, -EINVAL,
                          "the checkpoint's tensor %s is not in the model (another model)",
                          c->tensors[i].name);
    /* Every name is the model's: some name is there twice. */
    return errmsg(err, errlen, -EINVAL, "the checkpoint has %d tensors, the model %d", c->n_tensors,
                  tt->n);
}

int checkpoint_load_tensors(const struct checkpoint *c, const struct tensor_table *tt,
                            float *params, float *const *optim, int n_optim, float *state,
                            char *err, size_t errlen)
{
    if (c->n_params != tt->n_params || (!c->n_tensors && c->n_state != tt->n_state))
        return errmsg(err, errlen, -EINVAL,
                      "it holds %zu parameters and %zu state values, the model needs %zu and %zu",
                      c->n_params, c->n_state, tt->n_params, tt->n_state);
    if (n_optim < 0 || (size_t)n_optim * c->n_params > c->n_optim)
        return errmsg(err, errlen, -EINVAL,
                      "it holds %zu optimizer values, the optimizer needs %zu", c->n_optim,
                      (size_t)(n_optim < 0 ? 0 : n_optim) * c->n_params);
    size_t P = c->n_params;
    if (!c->n_tensors) { /* version 1 (or a model without tensors): the same layout */
        if (P) memcpy(params, c->params, sizeof(float) * P);
        for (int k = 0; k < n_optim; k++)
            memcpy(optim[k], c->optim_state + (size_t)k * P, sizeof(float) * P);
        if (c->n_state) memcpy(state, c->state, sizeof(float) * c->n_state);
        return 0;
    }
    int rc = match_tensors(c, tt, err, errlen);
    if (rc) return rc;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        int j = find_tensor(c, t->name, i);
        if (j < 0) { /* a batch count an older mlq did not keep */
            state[t->offset] = (float)c->step;
            continue;
        }
        size_t from = (size_t)c->tensors[j].offset, n = sizeof(float) * t->size;
        if (t->kind != OP_PARAM) {
            memcpy(state + t->offset, c->state + from, n);
            continue;
        }
        memcpy(params + t->offset, c->params + from, n);
        for (int k = 0; k < n_optim; k++)
            memcpy(optim[k] + t->offset, c->optim_state + (size_t)k * P + from, n);
    }
    return 0;
}
