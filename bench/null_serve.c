/* The ceiling of bench/serve_bench.sh (docs/benchmarks.md, "Serving"): a
 * server that does nothing but answer. A ZeroMQ ROUTER loop in C that sends
 * each request's identity back with K float32 zeros, the peer's framing
 * (bench/torch_serve.py) without a model or Python. Driven by serve_load
 * --raw, its requests/s is what the load generator and ZeroMQ's transport
 * leave of this machine for any server: no server can do more here.
 * usage: null_serve ENDPOINT [K (default 10)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: null_serve ENDPOINT [OUTPUTS]\n");
        return 2;
    }
    int k = argc == 3 ? atoi(argv[2]) : 10;
    if (k < 1 || k > 4096) {
        fprintf(stderr, "null_serve: OUTPUTS is 1 to 4096\n");
        return 2;
    }
    float *answer = calloc((size_t)k, sizeof *answer);
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    if (!answer || !sock || zmq_bind(sock, argv[1]) != 0) {
        fprintf(stderr, "null_serve: %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    printf("null_serve: listening on %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        zmq_msg_t id, payload;
        zmq_msg_init(&id);
        zmq_msg_init(&payload);
        if (zmq_msg_recv(&id, sock, 0) < 0) break;
        int more = zmq_msg_more(&id);
        while (more) { /* the payload (and anything after it, dropped) */
            if (zmq_msg_recv(&payload, sock, 0) < 0) break;
            more = zmq_msg_more(&payload);
        }
        if (zmq_msg_send(&id, sock, ZMQ_SNDMORE) < 0 ||
            zmq_send(sock, answer, (size_t)k * sizeof *answer, 0) < 0)
            fprintf(stderr, "null_serve: send: %s\n", zmq_strerror(zmq_errno()));
        zmq_msg_close(&id);
        zmq_msg_close(&payload);
    }
    fprintf(stderr, "null_serve: recv: %s\n", zmq_strerror(zmq_errno()));
    zmq_close(sock);
    zmq_ctx_term(ctx);
    free(answer);
    return 1;
}
