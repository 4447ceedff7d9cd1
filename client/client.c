/* libmlq (mlq.h): one DEALER socket to the broker, requests answered in turn. */
#include "mlq.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "config.h"
#include "keys.h"
#include "proto.h"
#include "up_state.h"

#define DEFAULT_TIMEOUT_MS 5000
#define WAIT_POLL_MS 200
#define GRACE_MS 1000

struct mlq_client {
    void *ctx, *sock;
    char endpoint[CONFIG_STR_MAX];
    int timeout_ms;
    int deadline_ms; /* of infer requests: timeout_ms, or serve.deadline_ms by default */
    int64_t next_id; /* INFER ids, to match answers to requests */
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int mlq_client_open(struct mlq_client **out, const char *endpoint, char *err, size_t errlen)
{
    *out = NULL;
    struct config cfg;
    if (config_load(&cfg, NULL, err, errlen) != 0) return -EINVAL;
    up_state_apply(&cfg); /* a running mlq up's endpoint, as mlq finds it */
    char dir[4096], def[4200] = "";
    if (keys_user_dir(dir, sizeof dir) == 0)
        snprintf(def, sizeof def, "%s/mlq%s", dir, KEYS_SECRET_EXT);
    struct keys_client kc;
    if (keys_client_resolve(&kc, cfg.client_secret_key, def[0] ? def : NULL, cfg.broker_public_key,
                            err, errlen) != 0)
        return -EINVAL;
    struct mlq_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint ? endpoint : cfg.broker_endpoint);
    const char *t = getenv("MLQ_TIMEOUT_MS");
    c->timeout_ms = t && atoi(t) > 0 ? atoi(t) : DEFAULT_TIMEOUT_MS;
    c->deadline_ms = t && atoi(t) > 0 ? atoi(t) : cfg.serve_deadline_ms;
    c->next_id = 1;
    int rc = 0;
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->sock) {
        rc = -errno;
        snprintf(err, errlen, "cannot make a ZeroMQ socket: %s", zmq_strerror(errno));
    } else if ((rc = proto_socket_setup(c->sock, 0)) != 0) {
        snprintf(err, errlen, "socket options: %s", zmq_strerror(-rc));
    } else if (kc.curve && (rc = keys_client_setup(c->sock, &kc.own, kc.broker_z85, err, errlen))) {
        /* err says which key */
    } else if (zmq_connect(c->sock, c->endpoint) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot use broker endpoint %s: %s", c->endpoint,
                 zmq_strerror(errno));
    }
    if (rc) {
        mlq_client_close(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void mlq_client_close(struct mlq_client **pc)
{
    if (!pc || !*pc) return;
    struct mlq_client *c = *pc;
    if (c->sock) zmq_close(c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    free(c);
    *pc = NULL;
}

void mlq_client_set_timeout(struct mlq_client *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    c->deadline_ms = c->timeout_ms;
}

static int errno_of_code(const char *code)
{
    if (!code) return -EIO;
    if (strcmp(code, "not_found") == 0) return -ENOENT;
    if (strcmp(code, "bad_request") == 0 || strcmp(code, "bad_spec") == 0 ||
        strcmp(code, "bad_input") == 0)
        return -EINVAL;
    if (strcmp(code, "too_large") == 0) return -EFBIG;
    if (strcmp(code, "timeout") == 0) return -ETIMEDOUT;
    if (strcmp(code, "forbidden") == 0) return -EACCES;
    if (strcmp(code, "overloaded") == 0 || strcmp(code, "stopping") == 0 ||
        strcmp(code, "unavailable") == 0)
        return -EAGAIN;
    return -EIO;
}

/* Sends one request and receives its answer: the reply whose "id" is id
 * when id > 0 (older answers, to requests that timed out, are skipped). */
static int call(struct mlq_client *c, const char *cmd, json_t *body, const void *hdr,
                size_t hdr_len, const void *bin, size_t bin_len, int64_t id,
                struct proto_msg *reply, char *err, size_t errlen)
{
    /* An infer request carries the timeout as its deadline: the broker's
     * own "timeout" answer, which says why, gets a second to arrive. */
    bool infer = strcmp(cmd, PROTO_INFER) == 0 || strcmp(cmd, PROTO_INFER_BIN) == 0;
    int wait_ms = infer ? c->deadline_ms + GRACE_MS : c->timeout_ms;
    memset(reply, 0, sizeof *reply);
    int rc = hdr ? proto_send_bin(c->sock, NULL, 0, cmd, hdr, hdr_len, bin, bin_len, 0)
                 : proto_send(c->sock, NULL, 0, cmd, body, bin, bin_len, 0);
    if (rc) {
        snprintf(err, errlen, "cannot send %s to %s: %s", cmd, c->endpoint, zmq_strerror(-rc));
        return rc;
    }
    double until = mono() + wait_ms / 1000.0;
    for (;;) {
        int ms = (int)((until - mono()) * 1000.0);
        zmq_pollitem_t it = {.socket = c->sock, .events = ZMQ_POLLIN};
        int n = ms > 0 ? zmq_poll(&it, 1, ms) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen,
                     "no answer from the broker at %s within %d ms: is mlq-broker running?",
                     c->endpoint, wait_ms);
            return -ETIMEDOUT;
        }
        char why[256];
        rc = proto_recv(c->sock, false, reply, 0, why, sizeof why);
        if (rc == -EPROTO) continue; /* not an mlq message: ignore it */
        if (rc) {
            snprintf(err, errlen, "receive from %s: %s", c->endpoint, zmq_strerror(-rc));
            return rc;
        }
        if (strcmp(reply->cmd, PROTO_ANSWER_BIN) == 0) {
            struct proto_answer a;
            if (proto_answer_decode(reply->hdr, reply->hdr_len, &a, why, sizeof why) != 0 ||
                (id > 0 && (!a.has_id || a.id != id))) {
                proto_msg_clear(reply); /* malformed, or an answer to an earlier request */
                continue;
            }
            break;
        }
        json_t *rid = json_object_get(reply->body, "id");
        /* An ERROR without an id is about this request too: the broker
         * refused it before reading it (a key's role, a stopping broker). */
        bool anonymous_error = !rid && strcmp(reply->cmd, PROTO_ERROR) == 0;
        if (id > 0 && !anonymous_error &&
            (!json_is_integer(rid) || json_integer_value(rid) != id)) {
            proto_msg_clear(reply); /* an answer to an earlier request that timed out */
            continue;
        }
        break;
    }
    if (strcmp(reply->cmd, PROTO_OK) == 0 || strcmp(reply->cmd, PROTO_ANSWER_BIN) == 0) return 0;
    const char *text = json_string_value(json_object_get(reply->body, "error"));
    const char *code = json_string_value(json_object_get(reply->body, "code"));
    snprintf(err, errlen, "%s", text ? text : "the broker refused the request");
    rc = errno_of_code(code);
    proto_msg_clear(reply);
    return rc;
}

int mlq_request(struct mlq_client *c, const char *cmd, const char *body_json, const void *bin,
                size_t bin_len, char **reply, void **reply_bin, size_t *reply_bin_len, char *err,
                size_t errlen)
{
    if (reply) *reply = NULL;
    if (reply_bin) *reply_bin = NULL;
    if (reply_bin_len) *reply_bin_len = 0;
    json_error_t je;
    json_t *body = json_loads(body_json ? body_json : "{}", 0, &je);
    if (!json_is_object(body)) {
        json_decref(body);
        snprintf(err, errlen, "the body is not a JSON object: %s", je.text);
        return -EINVAL;
    }
    if (!proto_known_command(cmd)) {
        json_decref(body);
        snprintf(err, errlen, "%s is not a command of the protocol", cmd);
        return -EINVAL;
    }
    struct proto_msg m;
    int rc = call(c, cmd, body, NULL, 0, bin, bin_len, 0, &m, err, errlen);
    json_decref(body);
    if (rc) return rc;
    if (reply) *reply = json_dumps(m.body, JSON_COMPACT);
    if (reply_bin) {
        *reply_bin = m.bin;
        m.bin = NULL;
    }
    if (reply_bin_len) *reply_bin_len = m.bin_len;
    proto_msg_clear(&m);
    return 0;
}

int mlq_submit(struct mlq_client *c, const char *spec_json, int64_t *id, char *err, size_t errlen)
{
    json_error_t je;
    json_t *spec = json_loads(spec_json, 0, &je);
    if (!json_is_object(spec)) {
        json_decref(spec);
        snprintf(err, errlen, "the spec is not a JSON object: %s", je.text);
        return -EINVAL;
    }
    /* A request id makes a resend after a lost answer safe. */
    char rid[64];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(rid, sizeof rid, "libmlq-%ld-%lx-%lx-%lld", (long)getpid(), (unsigned long)now.tv_sec,
             (unsigned long)now.tv_nsec, (long long)c->next_id++);
    json_t *body = json_pack("{s:o, s:s}", "spec", spec, "request_id", rid);
    struct proto_msg m;
    int rc = call(c, PROTO_SUBMIT, body, NULL, 0, NULL, 0, 0, &m, err, errlen);
    json_decref(body);
    if (rc) return rc;
    *id = json_integer_value(json_object_get(m.body, "id"));
    proto_msg_clear(&m);
    return 0;
}

int mlq_wait(struct mlq_client *c, int64_t id, int timeout_ms, char *state, size_t state_len,
             char *err, size_t errlen)
{
    double until = timeout_ms > 0 ? mono() + timeout_ms / 1000.0 : 0;
    if (state_len) state[0] = '\0';
    for (;;) {
        struct proto_msg m;
        json_t *body = json_pack("{s:I}", "id", (json_int_t)id);
        int rc = call(c, PROTO_STATUS, body, NULL, 0, NULL, 0, 0, &m, err, errlen);
        json_decref(body);
        if (rc) return rc;
        const char *s = json_string_value(json_object_get(json_object_get(m.body, "job"), "state"));
        if (state_len) snprintf(state, state_len, "%s", s ? s : "");
        bool done = s && (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
                          strcmp(s, "cancelled") == 0);
        proto_msg_clear(&m);
        if (done) return 0;
        if (until && mono() >= until) {
            snprintf(err, errlen, "job %lld did not end within %d ms", (long long)id, timeout_ms);
            return -ETIMEDOUT;
        }
        struct timespec ts = {.tv_nsec = WAIT_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int mlq_cancel(struct mlq_client *c, int64_t id, char *err, size_t errlen)
{
    struct proto_msg m;
    json_t *body = json_pack("{s:I}", "id", (json_int_t)id);
    int rc = call(c, PROTO_CANCEL, body, NULL, 0, NULL, 0, 0, &m, err, errlen);
    json_decref(body);
    if (!rc) proto_msg_clear(&m);
    return rc;
}

int mlq_infer(struct mlq_client *c, const char *deployment, const float *x, int rows, int cols,
              float *out, size_t out_cap, int *classes, struct mlq_infer_info *info, char *err,
              size_t errlen)
{
    if (rows < 1 || cols < 1) {
        snprintf(err, errlen, "mlq_infer: rows and cols must be at least 1");
        return -EINVAL;
    }
    int64_t id = c->next_id++;
    /* INFER_BIN (docs/protocol.md): no JSON to write here or to read at
     * the broker, and none in the answer. */
    struct proto_infer_req r = {
        .has_id = true, .id = id, .rows = (uint32_t)rows, .deadline_ms = (uint32_t)c->deadline_ms};
    if (strlen(deployment) > PROTO_BIN_NAME_MAX) {
        snprintf(err, errlen, "deployment %.100s: no such deployment (names are at most %d bytes)",
                 deployment, PROTO_BIN_NAME_MAX);
        return -ENOENT;
    }
    snprintf(r.deployment, sizeof r.deployment, "%s", deployment);
    unsigned char hdr[PROTO_INFER_REQ_FIXED + PROTO_BIN_NAME_MAX];
    int hlen = proto_infer_req_encode(hdr, sizeof hdr, &r);
    if (hlen < 0) {
        snprintf(err, errlen, "mlq_infer: a deployment name is 1 to %d bytes", PROTO_BIN_NAME_MAX);
        return -EINVAL;
    }
    struct proto_msg m;
    int rc = call(c, PROTO_INFER_BIN, NULL, hdr, (size_t)hlen, x,
                  (size_t)rows * (size_t)cols * sizeof(float), id, &m, err, errlen);
    if (rc) return rc;
    struct proto_answer a;
    char why[256];
    if (proto_answer_decode(m.hdr, m.hdr_len, &a, why, sizeof why) != 0) { /* checked in call */
        proto_msg_clear(&m);
        snprintf(err, errlen, "the broker's answer: %s", why);
        return -EPROTO;
    }
    int K = (int)a.outputs;
    size_t need = (size_t)rows * (size_t)(K > 0 ? K : 0);
    if (K < 1 || a.rows != (uint32_t)rows || m.bin_len != need * sizeof(float)) {
        snprintf(err, errlen, "the broker's answer holds %zu bytes for %d rows of %d outputs",
                 m.bin_len, rows, K);
        rc = -EPROTO;
    } else if (need > out_cap) {
        snprintf(err, errlen, "mlq_infer: %d rows of %d outputs need %zu floats, out holds %zu",
                 rows, K, need, out_cap);
        rc = -ENOBUFS;
    } else {
        memcpy(out, m.bin, m.bin_len);
        for (int i = 0; classes && i < rows; i++)
            classes[i] =
                a.classes ? (int)proto_get_i32((const unsigned char *)a.class_ids + 4 * (size_t)i)
                          : -1;
        if (info) {
            info->run = a.run;
            info->epoch = a.epoch;
            info->generation = a.generation;
            info->outputs = K;
            info->batch = (int)a.batch;
            info->classification = a.classes;
            info->latency_us = a.latency_us;
        }
    }
    proto_msg_clear(&m);
    return rc;
}
