/* The wire protocol (common/proto.c) against signals: fuzz_proto found that
 * an EINTR while reading a message's later frames returned mid-message, so
 * the next proto_recv parsed the rest as a message of its own (refused, or on
 * a ROUTER, with a frame taken as the identity); sending had the same flaw,
 * the next message's frames joining the interrupted one's. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <cmocka.h>
#include <zmq.h>

#include "proto.h"

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Messages of four frames (header, command, JSON, a blob) through an inproc
 * pair, as between the trainer's threads, while a timer interrupts every
 * 20 us: each arrives whole, or the read (or send) is refused before its
 * first frame (-EINTR, nothing consumed or queued) and the next one gets it
 * whole. */
static void test_signals_do_not_split_messages(void **state)
{
    (void)state;
    /* ZeroMQ's I/O thread inherits the blocked mask: the alarms land here. */
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &alrm, NULL), 0);
    void *ctx = zmq_ctx_new();
    void *tx = zmq_socket(ctx, ZMQ_PAIR), *rx = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(rx, "inproc://test-proto"), 0);
    assert_int_equal(zmq_connect(tx, "inproc://test-proto"), 0);
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: EINTR */
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &alrm, NULL), 0);
    struct itimerval every = {.it_interval = {0, 20}, .it_value = {0, 20}};
    assert_int_equal(setitimer(ITIMER_REAL, &every, NULL), 0);

    const char blob[] = "checkpoint bytes";
    long sent = 0, interrupted = 0, bad = 0;
    char first_bad[512] = "";
    double end = now() + 3;
    while (now() < end && sent < 400000) {
        char text[64];
        snprintf(text, sizeof text, "{\"job\":%ld}", sent);
        int rc;
        while ((rc = proto_send_text(tx, NULL, 0, PROTO_JOB, text, blob, sizeof blob, 0)) == -EINTR)
            interrupted++;
        assert_int_equal(rc, 0);
        sent++;
        for (;;) {
            struct proto_msg m;
            char err[256];
            rc = proto_recv(rx, false, &m, 0, err, sizeof err);
            if (rc == -EINTR) {
                interrupted++;
                continue;
            }
            int64_t job = -1;
            if (rc == 0) proto_get_int(m.body, "job", &job, err, sizeof err);
            if (rc != 0 || job != sent - 1 || m.bin_len != sizeof blob) {
                if (!bad++)
                    snprintf(first_bad, sizeof first_bad, "message %ld: rc %d: %s", sent - 1, rc,
                             rc ? err : "wrong content");
            }
            proto_msg_clear(&m);
            /* A split message leaves its tail queued: read it out as well. */
            if (rc == 0 ||
                zmq_poll(&(zmq_pollitem_t){.socket = rx, .events = ZMQ_POLLIN}, 1, 0) <= 0)
                break;
        }
    }
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    print_message(
        "%ld messages, %ld alarms, %ld reads interrupted before a message's first frame\n", sent,
        (long)alarms, interrupted);
    if (bad) fail_msg("%ld of %ld messages split by a signal; first: %s", bad, sent, first_bad);
    assert_true(alarms > 1000);
    zmq_close(tx);
    zmq_close(rx);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals_do_not_split_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
