#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

static const char *const known_commands[] = {
    PROTO_SUBMIT,       PROTO_CANCEL,     PROTO_STATUS,  PROTO_QUEUE,     PROTO_WORKERS,
    PROTO_OK,           PROTO_ERROR,      PROTO_HELLO,   PROTO_HEARTBEAT, PROTO_METRICS,
    PROTO_CHECKPOINT,   PROTO_DONE,       PROTO_WELCOME, PROTO_JOB,       PROTO_ACK,
    PROTO_DROP,         PROTO_WHO,        PROTO_WHOAMI,  PROTO_DEPLOY,    PROTO_UNDEPLOY,
    PROTO_DEPLOYMENTS,  PROTO_INFER,      PROTO_SERVE,   PROTO_UNSERVE,   PROTO_SERVING,
    PROTO_INFERRED,     PROTO_SWEEP,      PROTO_TAG,     PROTO_NOTE,      PROTO_INFER_BIN,
    PROTO_INFERRED_BIN, PROTO_ANSWER_BIN, NULL,
};
/* Pushed datasets and their transfer (docs/datasets.md). */
static const char *const dataset_commands[] = {
    PROTO_DATASET_PUT, PROTO_DATASET_CHUNK, PROTO_DATASET_END, PROTO_DATASETS, PROTO_DATASET_RM,
    PROTO_FETCH,       PROTO_CHUNK,         PROTO_DATASET,     NULL,
};

bool proto_is_binary(const char *cmd)
{
    return strcmp(cmd, PROTO_INFER_BIN) == 0 || strcmp(cmd, PROTO_INFERRED_BIN) == 0 ||
           strcmp(cmd, PROTO_ANSWER_BIN) == 0;
}

bool proto_known_command(const char *cmd)
{
    for (const char *const *c = known_commands; *c; c++)
        if (strcmp(*c, cmd) == 0) return true;
    for (const char *const *c = dataset_commands; *c; c++)
        if (strcmp(*c, cmd) == 0) return true;
    return false;
}

void proto_msg_clear(struct proto_msg *m)
{
    if (!m) return;
    json_decref(m->body);
    free(m->hdr);
    free(m->bin);
    memset(m, 0, sizeof *m);
}

int proto_socket_setup(void *sock, int linger_ms)
{
    int64_t max = PROTO_MAX_MSG;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0) return -errno;
    if (zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0) return -errno;
    return 0;
}

/* A signal (EINTR) before a message's first frame leaves nothing behind and
 * goes back to the caller. After it, the message is partly queued or partly
 * read, and its other frames are already there to take (ZeroMQ delivers and
 * accepts a message whole): giving up would join the rest to the next
 * message, so the later frames are retried. */
static int send_frame(void *sock, const void *data, size_t len, int flags, bool first)
{
    int rc;
    while ((rc = zmq_send(sock, data, len, flags)) < 0 && errno == EINTR && !first)
        ;
    return rc < 0 ? -errno : 0;
}

static int recv_frame(zmq_msg_t *f, void *sock, int flags, bool first)
{
    int rc;
    while ((rc = zmq_msg_recv(f, sock, flags)) < 0 && errno == EINTR && !first)
        ;
    return rc < 0 ? -errno : 0;
}

int proto_send_bin(void *sock, const void *ident, size_t ident_len, const char *cmd,
                   const void *hdr, size_t hdr_len, const void *bin, size_t bin_len, int flags)
{
    int rc = 0;
    int more = ZMQ_SNDMORE | flags;
    if (ident && (rc = send_frame(sock, ident, ident_len, more, true)) != 0) return rc;
    /* After the first frame is queued the rest cannot block on HWM. */
    if ((rc = send_frame(sock, PROTO_HEADER, 4, more, !ident)) != 0) return rc;
    if ((rc = send_frame(sock, cmd, strlen(cmd), more, false)) != 0) return rc;
    if ((rc = send_frame(sock, hdr, hdr_len, bin ? more : flags, false)) != 0) return rc;
    if (bin) rc = send_frame(sock, bin, bin_len, flags, false);
    return rc;
}

int proto_send_text_borrowed(void *sock, const void *ident, size_t ident_len, const char *cmd,
                             const char *text, void *bin, size_t bin_len,
                             void (*release)(void *bin, void *hint), void *hint, int flags)
{
    zmq_msg_t f;
    if (zmq_msg_init_data(&f, bin, bin_len, release, hint) != 0) {
        int e = errno;
        release(bin, hint);
        return -e;
    }
    int rc = 0;
    int more = ZMQ_SNDMORE | flags;
    if (ident && (rc = send_frame(sock, ident, ident_len, more, true)) != 0) goto out;
    if ((rc = send_frame(sock, PROTO_HEADER, 4, more, !ident)) != 0) goto out;
    if ((rc = send_frame(sock, cmd, strlen(cmd), more, false)) != 0) goto out;
    if ((rc = send_frame(sock, text, strlen(text), more, false)) != 0) goto out;
    while ((rc = zmq_msg_send(&f, sock, flags)) < 0 && errno == EINTR)
        ;
    rc = rc < 0 ? -errno : 0;
out:
    zmq_msg_close(&f); /* after a send, a no-op; else release runs here */
    return rc;
}

int proto_send_text(void *sock, const void *ident, size_t ident_len, const char *cmd,
                    const char *text, const void *bin, size_t bin_len, int flags)
{
    return proto_send_bin(sock, ident, ident_len, cmd, text, strlen(text), bin, bin_len, flags);
}

int proto_send(void *sock, const void *ident, size_t ident_len, const char *cmd, const json_t *body,
               const void *bin, size_t bin_len, int flags)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : strdup("{}");
    if (!text) return -ENOMEM;
    int rc = proto_send_text(sock, ident, ident_len, cmd, text, bin, bin_len, flags);
    free(text);
    return rc;
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EPROTO;
}

/* Reads the remaining frames of a message so that the next read starts clean. */
static void drain(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (recv_frame(&f, sock, 0, false) < 0) {
            zmq_msg_close(&f);
            return;
        }
        zmq_msg_close(&f);
    }
}

static bool valid_cmd_text(const char *p, size_t len)
{
    if (len == 0 || len >= PROTO_CMD_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_')) return false;
    return true;
}

int proto_recv(void *sock, bool router, struct proto_msg *m, int flags, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    zmq_msg_t f[6];
    int n = 0, rc = 0;
    for (;;) {
        if (n == 6) {
            drain(sock);
            rc = bad(err, errlen, "more than %d frames", router ? 5 : 4);
            goto out;
        }
        zmq_msg_init(&f[n]);
        if ((rc = recv_frame(&f[n], sock, n == 0 ? flags : 0, n == 0)) != 0) {
            zmq_msg_close(&f[n]);
            if (n > 0) drain(sock); /* a frame that cannot be read: drop the message */
            goto out;
        }
        n++;
        if (!zmq_msg_more(&f[n - 1])) break;
    }
    int i = 0;
    if (router) {
        size_t len = zmq_msg_size(&f[0]);
        if (len == 0 || len > PROTO_MAX_IDENT) {
            rc = bad(err, errlen, "bad identity frame");
            goto out;
        }
        memcpy(m->ident, zmq_msg_data(&f[0]), len);
        m->ident_len = len;
        /* The identity frame is the ROUTER's own; the peer's metadata rides on
           the frames it sent. */
        const char *user = n > 1 ? zmq_msg_gets(&f[1], "User-Id") : NULL;
        if (user) snprintf(m->user, sizeof m->user, "%s", user);
        i = 1;
    }
    int parts = n - i;
    if (parts < 3 || parts > 4) {
        rc = bad(err, errlen, "%d frames, expected 3 or 4", parts);
        goto out;
    }
    if (zmq_msg_size(&f[i]) != 4 || memcmp(zmq_msg_data(&f[i]), PROTO_HEADER, 4) != 0) {
        rc = bad(err, errlen, "not an %s message (wrong protocol or version)", PROTO_HEADER);
        goto out;
    }
    const char *cmd = zmq_msg_data(&f[i + 1]);
    size_t cmd_len = zmq_msg_size(&f[i + 1]);
    if (!valid_cmd_text(cmd, cmd_len)) {
        rc = bad(err, errlen, "malformed command frame");
        goto out;
    }
    memcpy(m->cmd, cmd, cmd_len);
    m->cmd[cmd_len] = '\0';
    if (!proto_known_command(m->cmd)) {
        rc = bad(err, errlen, "unknown command %s", m->cmd);
        goto out;
    }
    size_t json_len = zmq_msg_size(&f[i + 2]);
    if (json_len > PROTO_MAX_JSON) {
        rc = bad(err, errlen, "%s: JSON frame of %zu bytes is too large", m->cmd, json_len);
        goto out;
    }
    if (proto_is_binary(m->cmd)) {
        /* Its decoder (proto_*_decode) checks the layout. */
        m->hdr_len = json_len;
        m->hdr = malloc(json_len ? json_len : 1);
        if (!m->hdr) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(m->hdr, zmq_msg_data(&f[i + 2]), json_len);
        goto binary;
    }
    json_error_t jerr;
    m->body = json_loadb(zmq_msg_data(&f[i + 2]), json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!m->body) {
        rc = bad(err, errlen, "%s: bad JSON: %s", m->cmd, jerr.text);
        goto out;
    }
    if (!json_is_object(m->body)) {
        rc = bad(err, errlen, "%s: JSON body is not an object", m->cmd);
        goto out;
    }
binary:
    if (parts == 4) {
        m->bin_len = zmq_msg_size(&f[i + 3]);
        m->bin = malloc(m->bin_len ? m->bin_len : 1);
        if (!m->bin) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(m->bin, zmq_msg_data(&f[i + 3]), m->bin_len);
    }
out:
    for (int k = 0; k < n; k++)
        zmq_msg_close(&f[k]);
    if (rc) proto_msg_clear(m);
    return rc;
}

int proto_get_int(const json_t *body, const char *key, int64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "field \"%s\" must be an integer", key);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

int proto_get_str(const json_t *body, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v)) {
        snprintf(err, errlen, "field \"%s\" must be a string", key);
        return -EINVAL;
    }
    *out = json_string_value(v);
    return 0;
}

int proto_send_error(void *sock, const void *ident, size_t ident_len, const char *code,
                     const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_t *b = json_pack("{s:s, s:s}", "error", text, "code", code);
    if (!b) return -ENOMEM;
    int rc = proto_send(sock, ident, ident_len, PROTO_ERROR, b, NULL, 0, ZMQ_DONTWAIT);
    json_decref(b);
    return rc;
}

/* ---- binary infer headers ------------------------------------------------------------ */

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void proto_put_i32(void *p, int32_t v)
{
    put32(p, (uint32_t)v);
}

int32_t proto_get_i32(const void *p)
{
    return (int32_t)get32(p);
}

void proto_rec_put(void *p, uint64_t seq, uint32_t rows)
{
    put64(p, seq);
    put32((unsigned char *)p + 8, rows);
    put32((unsigned char *)p + 12, 0);
}

void proto_rec_get(const void *p, uint64_t *seq, uint32_t *rows)
{
    *seq = get64(p);
    *rows = get32((const unsigned char *)p + 8);
}

/* The version and the header's length; -EPROTO otherwise. */
static int bin_check(const unsigned char *p, size_t len, size_t fixed, const char *what, char *err,
                     size_t errlen)
{
    if (len < fixed)
        return bad(err, errlen, "%s: a header of %zu bytes, at least %zu expected", what, len,
                   fixed);
    if (get16(p) != PROTO_BIN_VERSION)
        return bad(err, errlen, "%s: header version %u, this mlq speaks %d", what, get16(p),
                   PROTO_BIN_VERSION);
    return 0;
}

int proto_infer_req_encode(void *buf, size_t cap, const struct proto_infer_req *r)
{
    size_t n = strlen(r->deployment);
    if (n == 0 || n > PROTO_BIN_NAME_MAX || cap < PROTO_INFER_REQ_FIXED + n) return -EINVAL;
    unsigned char *p = buf;
    put16(p, PROTO_BIN_VERSION);
    put16(p + 2, r->has_id ? PROTO_BIN_HAS_ID : 0);
    put32(p + 4, r->rows);
    put64(p + 8, (uint64_t)r->id);
    put32(p + 16, r->deadline_ms);
    put16(p + 20, (uint16_t)n);
    put16(p + 22, 0);
    memcpy(p + PROTO_INFER_REQ_FIXED, r->deployment, n);
    return (int)(PROTO_INFER_REQ_FIXED + n);
}

int proto_infer_req_decode(const void *hdr, size_t len, struct proto_infer_req *r, char *err,
                           size_t errlen)
{
    const unsigned char *p = hdr;
    int rc = bin_check(p, len, PROTO_INFER_REQ_FIXED, PROTO_INFER_BIN, err, errlen);
    if (rc) return rc;
    size_t n = get16(p + 20);
    if (n == 0 || n > PROTO_BIN_NAME_MAX || len != PROTO_INFER_REQ_FIXED + n)
        return bad(err, errlen, "%s: a deployment name of %zu bytes in a header of %zu",
                   PROTO_INFER_BIN, n, len);
    r->has_id = get16(p + 2) & PROTO_BIN_HAS_ID;
    r->rows = get32(p + 4);
    r->id = (int64_t)get64(p + 8);
    r->deadline_ms = get32(p + 16);
    memcpy(r->deployment, p + PROTO_INFER_REQ_FIXED, n);
    r->deployment[n] = '\0';
    if (memchr(r->deployment, '\0', n))
        return bad(err, errlen, "%s: a NUL in the deployment name", PROTO_INFER_BIN);
    return 0;
}

void proto_answer_encode(void *buf, const struct proto_answer *a)
{
    unsigned char *p = buf;
    uint32_t lat;
    memcpy(&lat, &a->latency_us, sizeof lat);
    put16(p, PROTO_BIN_VERSION);
    put16(p + 2,
          (uint16_t)((a->has_id ? PROTO_BIN_HAS_ID : 0) | (a->classes ? PROTO_BIN_CLASSES : 0)));
    put32(p + 4, a->rows);
    put64(p + 8, (uint64_t)a->id);
    put64(p + 16, (uint64_t)a->run);
    put64(p + 24, (uint64_t)a->epoch);
    put64(p + 32, (uint64_t)a->generation);
    put32(p + 40, a->outputs);
    put32(p + 44, a->batch);
    put32(p + 48, lat);
    put32(p + 52, 0);
}

int proto_answer_decode(const void *hdr, size_t len, struct proto_answer *a, char *err,
                        size_t errlen)
{
    const unsigned char *p = hdr;
    int rc = bin_check(p, len, PROTO_ANSWER_FIXED, PROTO_ANSWER_BIN, err, errlen);
    if (rc) return rc;
    uint16_t flags = get16(p + 2);
    a->has_id = flags & PROTO_BIN_HAS_ID;
    a->classes = flags & PROTO_BIN_CLASSES;
    a->rows = get32(p + 4);
    a->id = (int64_t)get64(p + 8);
    a->run = (int64_t)get64(p + 16);
    a->epoch = (int64_t)get64(p + 24);
    a->generation = (int64_t)get64(p + 32);
    a->outputs = get32(p + 40);
    a->batch = get32(p + 44);
    uint32_t lat = get32(p + 48);
    memcpy(&a->latency_us, &lat, sizeof lat);
    size_t want = PROTO_ANSWER_FIXED + (a->classes ? 4 * (size_t)a->rows : 0);
    if (len != want)
        return bad(err, errlen, "%s: %u rows%s need a header of %zu bytes, it has %zu",
                   PROTO_ANSWER_BIN, a->rows, a->classes ? " with class ids" : "", want, len);
    a->class_ids = a->classes ? p + PROTO_ANSWER_FIXED : NULL;
    return 0;
}

void proto_batch_encode(void *buf, const struct proto_batch *b, bool inferred)
{
    unsigned char *p = buf;
    put16(p, PROTO_BIN_VERSION);
    put16(p + 2, b->flags);
    put32(p + 4, b->n);
    if (!inferred) return;
    put64(p + 8, (uint64_t)b->generation);
    put64(p + 16, (uint64_t)b->run);
    put64(p + 24, (uint64_t)b->epoch);
    put32(p + 32, b->outputs);
    put32(p + 36, b->forwards);
}

int proto_batch_decode(const void *hdr, size_t len, bool inferred, struct proto_batch *b, char *err,
                       size_t errlen)
{
    const unsigned char *p = hdr;
    const char *what = inferred ? PROTO_INFERRED_BIN : PROTO_INFER_BIN;
    size_t fixed = inferred ? PROTO_INFERRED_FIXED : PROTO_BATCH_FIXED;
    int rc = bin_check(p, len, fixed, what, err, errlen);
    if (rc) return rc;
    memset(b, 0, sizeof *b);
    b->flags = get16(p + 2);
    b->n = get32(p + 4);
    if (inferred) {
        b->generation = (int64_t)get64(p + 8);
        b->run = (int64_t)get64(p + 16);
        b->epoch = (int64_t)get64(p + 24);
        b->outputs = get32(p + 32);
        b->forwards = get32(p + 36);
    }
    if (b->n == 0 || (len - fixed) / PROTO_BIN_REC < b->n)
        return bad(err, errlen, "%s: %u requests in a header of %zu bytes", what, b->n, len);
    b->recs = p + fixed;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t seq;
        uint32_t rows;
        proto_rec_get(b->recs + (size_t)i * PROTO_BIN_REC, &seq, &rows);
        if (rows == 0) return bad(err, errlen, "%s: a request of 0 rows", what);
        b->rows += rows;
    }
    size_t at = fixed + (size_t)b->n * PROTO_BIN_REC;
    if (inferred && (b->flags & PROTO_BIN_CLASSES) && !(b->flags & PROTO_BIN_ERROR)) {
        if ((len - at) / 4 < b->rows)
            return bad(err, errlen, "%s: %llu rows but no class id for each", what,
                       (unsigned long long)b->rows);
        b->class_ids = p + at;
        at += 4 * (size_t)b->rows;
    }
    if (inferred && (b->flags & PROTO_BIN_ERROR)) {
        b->error = (const char *)p + at;
        b->error_len = len - at;
        at = len;
    }
    if (at != len) return bad(err, errlen, "%s: %zu bytes after the header", what, len - at);
    return 0;
}
