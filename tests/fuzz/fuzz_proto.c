/* The wire protocol's receiving side (common/proto.c: proto_recv and the body
 * getters), fed any multipart message.
 *
 * Input: one flag byte, then the frames separated by FRAME_SEP. Flag bit 0:
 * read as a ROUTER peer does (the first frame is the identity). The frames go
 * through a real ZeroMQ socket pair, as a peer's would.
 * Invariants: a malformed message is refused with a reason and fully drained;
 * an accepted one has a known command and an object body, and sent again with
 * proto_send it is accepted again, equal. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "fuzz_util.h"
#include "proto.h"

#define FRAME_SEP "\0|"
#define FRAME_SEP_LEN 2
#define MAX_FRAMES 8 /* more than proto_recv accepts, to reach its limit */

static void *ctx, *tx, *rx;

static void setup(void)
{
    ctx = zmq_ctx_new();
    tx = zmq_socket(ctx, ZMQ_PAIR);
    rx = zmq_socket(ctx, ZMQ_PAIR);
    if (!ctx || !tx || !rx || proto_socket_setup(tx, 0) != 0 || proto_socket_setup(rx, 0) != 0 ||
        zmq_bind(rx, "inproc://fuzz-proto") != 0 || zmq_connect(tx, "inproc://fuzz-proto") != 0) {
        fprintf(stderr, "fuzz_proto: socket set-up: %s\n", zmq_strerror(errno));
        abort();
    }
}

/* The getters the broker and trainer use on every message body. */
static void read_fields(const json_t *body)
{
    static const char *const keys[] = {"job",          "id",   "epoch",      "step",    "attempt",
                                       "heartbeat_ms", "name", "host",       "version", "state",
                                       "error",        "code", "request_id", "reason",  "instance"};
    char err[128];
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        int64_t v;
        const char *s;
        if (proto_get_int(body, keys[i], &v, err, sizeof err) != 0)
            FUZZ_CHECK(strstr(err, keys[i]), "proto_get_int's message does not name %s: %s",
                       keys[i], err);
        if (proto_get_str(body, keys[i], &s, err, sizeof err) == 0)
            FUZZ_CHECK(s != NULL, "proto_get_str gave NULL for %s", keys[i]);
    }
}

/* libFuzzer's timer (SIGALRM) interrupts reads and sends now and then: a
 * message is retried whole, as mlq's callers do on -EINTR. */
static int recv_whole(bool router, struct proto_msg *m, int flags, char *err, size_t errlen)
{
    int rc;
    while ((rc = proto_recv(rx, router, m, flags, err, errlen)) == -EINTR)
        ;
    return rc;
}

static void check_drained(void)
{
    struct proto_msg m;
    char err[256];
    int rc = recv_whole(false, &m, ZMQ_DONTWAIT, err, sizeof err);
    FUZZ_CHECK(rc == -EAGAIN, "a frame was left on the socket after a message (rc %d)", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) setup();
    if (size < 1) return 0;
    bool router = data[0] & 1;
    const uint8_t *p = data + 1, *end = data + size;

    /* Split into frames; the last frame runs to the end of the input. */
    const uint8_t *frame[MAX_FRAMES];
    size_t len[MAX_FRAMES];
    int n = 0;
    while (n < MAX_FRAMES) {
        const uint8_t *sep = memmem(p, (size_t)(end - p), FRAME_SEP, FRAME_SEP_LEN);
        frame[n] = p;
        if (!sep || n == MAX_FRAMES - 1) {
            len[n++] = (size_t)(end - p);
            break;
        }
        len[n++] = (size_t)(sep - p);
        p = sep + FRAME_SEP_LEN;
    }
    for (int i = 0; i < n; i++)
        while (zmq_send(tx, frame[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "fuzz_proto: zmq_send: %s\n", zmq_strerror(errno));
            abort();
        }

    struct proto_msg m;
    char err[256] = "";
    int rc = recv_whole(router, &m, 0, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO, "proto_recv returned %d (%s)", rc, strerror(-rc));
    check_drained();
    fuzz_note("%s", rc ? err : "accepted");
    if (rc != 0) {
        FUZZ_CHECK(err[0] != '\0', "a malformed message was refused without a reason");
        FUZZ_CHECK(m.body == NULL && m.bin == NULL, "a refused message kept its pieces");
        return 0;
    }
    FUZZ_CHECK(proto_known_command(m.cmd), "accepted unknown command %s", m.cmd);
    /* The binary infer commands carry a fixed header instead of a JSON body. */
    bool binary = strcmp(m.cmd, PROTO_INFER_BIN) == 0 || strcmp(m.cmd, PROTO_INFERRED_BIN) == 0 ||
                  strcmp(m.cmd, PROTO_ANSWER_BIN) == 0;
    FUZZ_CHECK(binary || json_is_object(m.body), "%s: the body is not an object", m.cmd);
    FUZZ_CHECK(!router || (m.ident_len > 0 && m.ident_len <= PROTO_MAX_IDENT),
               "identity of %zu bytes", m.ident_len);
    read_fields(m.body);

    /* What mlq accepted, mlq sends again as a message it accepts. */
    while ((rc = proto_send(tx, router ? m.ident : NULL, m.ident_len, m.cmd, m.body, m.bin,
                            m.bin_len, 0)) == -EINTR)
        ;
    FUZZ_CHECK(rc == 0, "proto_send of an accepted %s failed: %d", m.cmd, rc);
    struct proto_msg again;
    rc = recv_whole(router, &again, 0, err, sizeof err);
    FUZZ_CHECK(rc == 0, "%s sent again is refused: %s", m.cmd, err);
    FUZZ_CHECK(strcmp(again.cmd, m.cmd) == 0, "command %s came back as %s", m.cmd, again.cmd);
    FUZZ_CHECK(binary ? !again.body == !m.body : json_equal(again.body, m.body),
               "%s: the body changed in a round trip", m.cmd);
    FUZZ_CHECK(again.bin_len == m.bin_len && (!m.bin_len || !memcmp(again.bin, m.bin, m.bin_len)),
               "%s: the binary frame changed in a round trip", m.cmd);
    proto_msg_clear(&again);
    proto_msg_clear(&m);
    return 0;
}
