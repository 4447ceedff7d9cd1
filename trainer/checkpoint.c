#include "checkpoint.h"
#include "errmsg.h"

#include <errno.h>
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

int checkpoint_encode(const struct checkpoint *c, void **blob, size_t *len)
{
    size_t spec_len = c->spec_json ? strlen(c->spec_json) : 0;
    size_t header = 4 + spec_len + FIXED_HEADER_BYTES + METRICS_BYTES;
    size_t total = sizeof magic + 4 + 4 + header + 4 * (c->n_params + c->n_optim) + 4;
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
    put_floats(&w, c->params, c->n_params);
    put_floats(&w, c->optim_state, c->n_optim);
    put_u32(&w, (uint32_t)crc32(0L, buf, (uInt)(w.p - buf)));
    *blob = buf;
    *len = total;
    return 0;
}

int checkpoint_decode(const void *blob, size_t len, struct checkpoint *c, char *err, size_t errlen)
{
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
    }
    /* Later versions may append header fields: skip to the body. */
    if (r.short_read || body > r.end || r.p > body) goto malformed;
    r.p = body;
    if (n_params > (uint64_t)(r.end - r.p) / 4 ||
        n_optim > (uint64_t)(r.end - r.p) / 4 - n_params ||
        (uint64_t)(r.end - r.p) != 4 * (n_params + n_optim))
        goto malformed;
    c->n_params = n_params;
    c->n_optim = n_optim;
    c->params = malloc(4 * (n_params ? n_params : 1));
    c->optim_state = malloc(4 * (n_optim ? n_optim : 1));
    if (!c->params || !c->optim_state) {
        checkpoint_free(c);
        return -ENOMEM;
    }
    get_floats(&r, c->params, n_params);
    get_floats(&r, c->optim_state, n_optim);
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
