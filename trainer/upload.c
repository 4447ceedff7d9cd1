#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "log.h"

#define CHUNK ((int64_t)DATASET_CHUNK_BYTES)

__attribute__((format(printf, 2, 3))) static enum upload_state fail(struct upload *u,
                                                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->err, sizeof u->err, fmt, ap);
    va_end(ap);
    u->state = UPLOAD_FAILED;
    log_warn("job %lld: %s", (long long)u->job, u->err);
    return u->state;
}

enum upload_state upload_open(struct upload *u, const char *path, const char *name, const char *sha,
                              int64_t size, int64_t job)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    u->job = job;
    u->size = size;
    u->resend_s = UPLOAD_RESEND_S;
    u->state = UPLOAD_RUNNING;
    u->phase = UPLOAD_PUT;
    if (!path || !name || !sha) return fail(u, "the worker named no output file");
    snprintf(u->path, sizeof u->path, "%s", path);
    snprintf(u->name, sizeof u->name, "%s", name);
    snprintf(u->sha, sizeof u->sha, "%s", sha);
    if (!sha256_hex_valid(sha)) return fail(u, "%s: no SHA-256", path);
    if (size < 1) return fail(u, "%s: empty", path);
    u->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (u->fd < 0) return fail(u, "%s: %s", path, strerror(errno));
    u->buf = malloc(CHUNK);
    if (!u->buf) return fail(u, "out of memory");
    return u->state;
}

void upload_close(struct upload *u)
{
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    free(u->buf);
    u->buf = NULL;
}

/* Where the push stands is asked again: the broker answers with its offset. */
static void resync(struct upload *u, const char *why)
{
    if (++u->resyncs > UPLOAD_RESYNC_MAX) {
        fail(u, "the broker did not take the output (%s), even after asking again", why);
        return;
    }
    log_info("job %lld: output %s: %s, asking the broker where the push stands", (long long)u->job,
             u->name, why);
    u->phase = UPLOAD_PUT;
    u->asked = false;
}

static int send_put(struct upload *u, void *sock)
{
    json_t *b = json_pack("{s:I, s:s, s:s, s:I}", "job", (json_int_t)u->job, "name", u->name,
                          "sha256", u->sha, "size", (json_int_t)u->size);
    int rc = b ? proto_send(sock, NULL, 0, PROTO_DATASET_PUT, b, NULL, 0, ZMQ_DONTWAIT) : -ENOMEM;
    json_decref(b);
    return rc;
}

static int send_end(struct upload *u, void *sock)
{
    json_t *b =
        json_pack("{s:I, s:s, s:s}", "job", (json_int_t)u->job, "name", u->name, "sha256", u->sha);
    int rc = b ? proto_send(sock, NULL, 0, PROTO_DATASET_END, b, NULL, 0, ZMQ_DONTWAIT) : -ENOMEM;
    json_decref(b);
    return rc;
}

/* 0 sent, 1 the socket is full (try later), or -errno (failed). */
static int send_chunk(struct upload *u, void *sock)
{
    size_t len = (size_t)(u->size - u->next < CHUNK ? u->size - u->next : CHUNK);
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(u->fd, u->buf + got, len - got, u->next + (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fail(u, "%s: %s", u->path, n < 0 ? strerror(errno) : "shorter than it was");
            return -EIO;
        }
        got += (size_t)n;
    }
    char text[200];
    snprintf(text, sizeof text, "{\"job\":%lld,\"sha256\":\"%s\",\"offset\":%lld}",
             (long long)u->job, u->sha, (long long)u->next);
    int rc = proto_send_text(sock, NULL, 0, PROTO_DATASET_CHUNK, text, u->buf, len, ZMQ_DONTWAIT);
    if (rc) return 1;
    u->next += (int64_t)len;
    u->sent += (int64_t)len;
    return 0;
}

/* END fsyncs the whole file on the broker: it may take a while. */
static double wait_s(const struct upload *u)
{
    return u->phase == UPLOAD_END ? u->resend_s + 60.0 + (double)(u->size >> 20) / 20.0
                                  : u->resend_s;
}

void upload_pump(struct upload *u, void *sock, double now)
{
    if (u->state != UPLOAD_RUNNING) return;
    bool waiting = u->phase == UPLOAD_CHUNKS ? u->next > u->acked : u->asked;
    if (waiting && now - u->asked_at > wait_s(u)) resync(u, "no answer");
    if (u->state != UPLOAD_RUNNING) return;
    if (u->phase == UPLOAD_PUT && !u->asked) {
        if (send_put(u, sock) == 0) {
            u->asked = true;
            u->asked_at = now;
        }
    } else if (u->phase == UPLOAD_CHUNKS) {
        if (u->next == u->acked) u->asked_at = now; /* the window opens now */
        while (u->next < u->size && u->next - u->acked < DATASET_WINDOW * CHUNK)
            if (send_chunk(u, sock) != 0) break;
    } else if (u->phase == UPLOAD_END && !u->asked) {
        if (send_end(u, sock) == 0) {
            u->asked = true;
            u->asked_at = now;
        }
    }
}

void upload_reset(struct upload *u)
{
    if (u->state != UPLOAD_RUNNING) return;
    u->phase = UPLOAD_PUT;
    u->asked = false;
}

bool upload_wants(const struct upload *u, const struct proto_msg *m)
{
    if (u->state != UPLOAD_RUNNING) return false;
    if (strcmp(m->cmd, PROTO_OK) == 0) {
        const char *sha = json_string_value(json_object_get(m->body, "sha256"));
        return sha && strcmp(sha, u->sha) == 0;
    }
    const char *code = json_string_value(json_object_get(m->body, "code"));
    return strcmp(m->cmd, PROTO_ERROR) == 0 && !(code && strcmp(code, "name_in_use") == 0);
}

enum upload_state upload_on_message(struct upload *u, const struct proto_msg *m, void *sock,
                                    double now)
{
    json_t *off = json_object_get(m->body, "offset");
    int64_t at = json_is_integer(off) ? json_integer_value(off) : -1;
    if (strcmp(m->cmd, PROTO_ERROR) == 0) {
        const char *code = json_string_value(json_object_get(m->body, "code"));
        const char *text = json_string_value(json_object_get(m->body, "error"));
        bool lost = code && (strcmp(code, "bad_offset") == 0 || strcmp(code, "not_found") == 0);
        /* Chunks sent before a new PUT are answered with these: stale. */
        if (lost && !(u->phase == UPLOAD_PUT && u->asked))
            resync(u, code);
        else if (!lost)
            return fail(u, "the broker refused the output: %s",
                        text ? text : (code ? code : "no reason given"));
    } else if (json_object_get(m->body, "have")) { /* DATASET_PUT's answer */
        if (u->phase == UPLOAD_PUT) {
            if (at < 0 || at > u->size) return fail(u, "bad DATASET_PUT answer from the broker");
            bool have = json_is_true(json_object_get(m->body, "have"));
            u->acked = u->next = have ? u->size : at;
            u->phase = u->acked == u->size ? UPLOAD_END : UPLOAD_CHUNKS;
            u->asked = false;
            u->asked_at = now;
        }
    } else if (json_object_get(m->body, "size")) { /* DATASET_END's */
        if (u->phase == UPLOAD_END) {
            u->state = UPLOAD_DONE;
            return u->state;
        }
    } else if (u->phase == UPLOAD_CHUNKS && at > u->acked && at <= u->next) { /* a chunk's */
        u->acked = at;
        u->asked_at = now;
        if (u->acked == u->size) {
            u->phase = UPLOAD_END;
            u->asked = false;
        }
    }
    if (u->state == UPLOAD_RUNNING) upload_pump(u, sock, now);
    return u->state;
}
