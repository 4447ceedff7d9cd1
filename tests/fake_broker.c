#include "fake_broker.h"

#include <string.h>
#include <time.h>

#include <zmq.h>

#include "proto.h"

#define FAKE_BROKER_ENDPOINT "inproc://fake-broker"

int fake_broker_open(struct fake_broker *b)
{
    memset(b, 0, sizeof *b);
    if (!(b->ctx = zmq_ctx_new())) return -1;
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    b->dealer = zmq_socket(b->ctx, ZMQ_DEALER);
    if (!b->router || !b->dealer || proto_socket_setup(b->router, 0) != 0 ||
        proto_socket_setup(b->dealer, 0) != 0 || zmq_bind(b->router, FAKE_BROKER_ENDPOINT) != 0 ||
        zmq_connect(b->dealer, FAKE_BROKER_ENDPOINT) != 0) {
        fake_broker_close(b);
        return -1;
    }
    return 0;
}

void fake_broker_close(struct fake_broker *b)
{
    if (b->router) zmq_close(b->router);
    if (b->dealer) zmq_close(b->dealer);
    if (b->ctx) zmq_ctx_term(b->ctx);
    memset(b, 0, sizeof *b);
}

double fake_broker_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
