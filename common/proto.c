#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

static const char *const known_commands[] = {
    PROTO_SUBMIT,      PROTO_CANCEL, PROTO_STATUS,  PROTO_QUEUE,     PROTO_WORKERS,
    PROTO_OK,          PROTO_ERROR,  PROTO_HELLO,   PROTO_HEARTBEAT, PROTO_METRICS,
    PROTO_CHECKPOINT,  PROTO_DONE,   PROTO_WELCOME, PROTO_JOB,       PROTO_ACK,
    PROTO_DROP,        PROTO_WHO,    PROTO_WHOAMI,  PROTO_DEPLOY,    PROTO_UNDEPLOY,
    PROTO_DEPLOYMENTS, PROTO_INFER,  PROTO_SERVE,   PROTO_UNSERVE,   PROTO_SERVING,
    PROTO_INFERRED,    PROTO_SWEEP,  PROTO_TAG,     PROTO_NOTE,      NULL,
};

bool proto_known_command(const char *cmd)
{
    for (const char *const *c = known_commands; *c; c++)
        if (strcmp(*c, cmd) == 0) return true;
    return false;
}

void proto_msg_clear(struct proto_msg *m)
{
    if (!m) return;
    json_decref(m->body);
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

int proto_send_text(void *sock, const void *ident, size_t ident_len, const char *cmd,
                    const char *text, const void *bin, size_t bin_len, int flags)
{
    int rc = 0;
    int more = ZMQ_SNDMORE | flags;
    if (ident && (rc = send_frame(sock, ident, ident_len, more, true)) != 0) return rc;
    /* After the first frame is queued the rest cannot block on HWM. */
    if ((rc = send_frame(sock, PROTO_HEADER, 4, more, !ident)) != 0) return rc;
    if ((rc = send_frame(sock, cmd, strlen(cmd), more, false)) != 0) return rc;
    if ((rc = send_frame(sock, text, strlen(text), bin ? more : flags, false)) != 0) return rc;
    if (bin) rc = send_frame(sock, bin, bin_len, flags, false);
    return rc;
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
