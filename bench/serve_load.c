/* The load generator of bench/serve_bench.sh (docs/benchmarks.md, "Serving"):
 * N closed-loop clients in one thread, each a DEALER socket with one request
 * in flight, one row per request, for a given time; latency measured at the
 * client from send to answer. Two targets, driven alike:
 *   --mlq ENDPOINT --deployment NAME   INFER_BIN through an mlq-broker (--json: INFER,
 *                                       the JSON form of the request and its answer)
 *   --raw ENDPOINT                      the peer: one frame of float32 in, one out
 * Prints one JSON line: clients, requests, errors, seconds, rps, p50_us,
 * p90_us, p99_us, max_us, and for mlq the mean rows per forward pass seen in
 * the answers ("batch"). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "proto.h"

#define MAX_CLIENTS 1024

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void send_one(void *sock, bool raw, bool json, const char *body, const void *hdr,
                     size_t hlen, const float *row, int dim)
{
    size_t len = (size_t)dim * sizeof *row;
    if (raw)
        zmq_send(sock, row, len, 0);
    else if (json)
        proto_send_text(sock, NULL, 0, PROTO_INFER, body, row, len, 0);
    else
        proto_send_bin(sock, NULL, 0, PROTO_INFER_BIN, hdr, hlen, row, len, 0);
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *deployment = NULL;
    bool raw = false, json = false;
    int clients = 1, dim = 784;
    double seconds = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--mlq") && v)
            endpoint = argv[++i];
        else if (!strcmp(a, "--raw") && v)
            endpoint = argv[++i], raw = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--deployment") && v)
            deployment = argv[++i];
        else if (!strcmp(a, "--clients") && v)
            clients = atoi(argv[++i]);
        else if (!strcmp(a, "--dim") && v)
            dim = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            seconds = atof(argv[++i]);
        else if (!strcmp(a, "--warmup") && v)
            warmup = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: serve_load (--mlq E --deployment N [--json] | --raw E) "
                            "[--clients N] [--dim D] [--seconds S] [--warmup S]\n");
            return 2;
        }
    }
    if (!endpoint || (!raw && !deployment) || clients < 1 || clients > MAX_CLIENTS || dim < 1) {
        fprintf(stderr, "serve_load: give an endpoint (and --deployment for mlq)\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void **socks = calloc((size_t)clients, sizeof *socks);
    zmq_pollitem_t *items = calloc((size_t)clients, sizeof *items);
    double *sent = calloc((size_t)clients, sizeof *sent);
    size_t cap = 1 << 20, n_lat = 0;
    double *lat = malloc(cap * sizeof *lat);
    float *row = malloc((size_t)dim * sizeof *row);
    for (int k = 0; k < dim; k++)
        row[k] = (float)((k * 37) % 255) / 255.0f;
    char body[256];
    snprintf(body, sizeof body, "{\"deployment\":\"%s\",\"rows\":1,\"deadline_ms\":30000}",
             deployment ? deployment : "");
    unsigned char hdr[PROTO_INFER_REQ_FIXED + PROTO_BIN_NAME_MAX];
    struct proto_infer_req ir = {.rows = 1, .deadline_ms = 30000};
    snprintf(ir.deployment, sizeof ir.deployment, "%s", deployment ? deployment : "");
    int hlen = raw ? 0 : proto_infer_req_encode(hdr, sizeof hdr, &ir);
    if (hlen < 0) {
        fprintf(stderr, "serve_load: a deployment name is 1 to %d bytes\n", PROTO_BIN_NAME_MAX);
        return 2;
    }
    long errors = 0, requests = 0;
    double batch_sum = 0;
    long batch_n = 0;
    char first_error[512] = "";
    for (int i = 0; i < clients; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(socks[i], endpoint);
        items[i] = (zmq_pollitem_t){.socket = socks[i], .events = ZMQ_POLLIN};
    }
    double t_start = mono(), t_measure = t_start + warmup, t_end = t_measure + seconds;
    for (int i = 0; i < clients; i++) {
        sent[i] = mono();
        send_one(socks[i], raw, json, body, hdr, (size_t)hlen, row, dim);
    }
    int outstanding = clients;
    bool stopping = false;
    while (outstanding > 0) {
        int n = zmq_poll(items, clients, 30000);
        if (n <= 0) {
            errors += outstanding; /* 30 s without an answer */
            break;
        }
        double now = mono();
        if (!stopping && now >= t_end) stopping = true;
        for (int i = 0; i < clients; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            bool ok = true;
            if (raw) {
                zmq_msg_t m;
                zmq_msg_init(&m);
                ok = zmq_msg_recv(&m, socks[i], 0) > 0;
                zmq_msg_close(&m);
            } else {
                struct proto_msg m;
                char err[256];
                struct proto_answer a;
                ok = proto_recv(socks[i], false, &m, 0, err, sizeof err) == 0 &&
                     (json ? strcmp(m.cmd, PROTO_OK) == 0
                           : strcmp(m.cmd, PROTO_ANSWER_BIN) == 0 &&
                                 proto_answer_decode(m.hdr, m.hdr_len, &a, err, sizeof err) == 0);
                if (!ok && !first_error[0] && m.body)
                    snprintf(first_error, sizeof first_error, "%s",
                             json_string_value(json_object_get(m.body, "error")));
                if (ok) {
                    batch_sum += json ? (double)json_integer_value(json_object_get(m.body, "batch"))
                                      : (double)a.batch;
                    batch_n++;
                }
                proto_msg_clear(&m);
            }
            if (sent[i] >= t_measure && sent[i] < t_end) {
                requests++;
                if (!ok) errors++;
                if (ok && n_lat < cap) lat[n_lat++] = (now - sent[i]) * 1e6;
            } else if (!ok) {
                errors++;
            }
            if (stopping) {
                outstanding--;
                continue;
            }
            sent[i] = mono();
            send_one(socks[i], raw, json, body, hdr, (size_t)hlen, row, dim);
        }
    }
    qsort(lat, n_lat, sizeof *lat, cmp_double);
#define PCT(p) (n_lat ? lat[(size_t)((p) * (double)(n_lat - 1))] : NAN)
    printf("{\"target\":\"%s\",\"clients\":%d,\"requests\":%ld,\"errors\":%ld,\"seconds\":%.2f,"
           "\"rps\":%.0f,\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f",
           raw ? "peer" : "mlq", clients, requests, errors, seconds, (double)n_lat / seconds,
           PCT(0.50), PCT(0.90), PCT(0.99), n_lat ? lat[n_lat - 1] : NAN);
    if (!raw) printf(",\"batch\":%.1f", batch_n ? batch_sum / (double)batch_n : 0.0);
    if (first_error[0]) {
        json_t *s = json_string(first_error);
        char *t = json_dumps(s, JSON_ENCODE_ANY);
        printf(",\"first_error\":%s", t);
        free(t);
        json_decref(s);
    }
    printf("}\n");
    for (int i = 0; i < clients; i++)
        zmq_close(socks[i]);
    zmq_ctx_term(ctx);
    free(socks);
    free(items);
    free(sent);
    free(lat);
    free(row);
    return errors ? 1 : 0;
}
