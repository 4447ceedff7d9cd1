/* An LD_PRELOAD library that makes zmq_connect to a network endpoint return
 * only after $MLQ_CONNECT_DELAY_MS, with the socket caught up on what its I/O
 * thread did meanwhile (the connection, and the handshake done or failed):
 * so a test can see what a client does when its first send comes after the
 * broker refused it, as happens to a client starved of CPU. tests/
 * test_security.c runs mlq under it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int zmq_connect(void *sock, const char *addr)
{
    static int (*real)(void *, const char *);
    static int (*get_option)(void *, int, void *, size_t *);
    if (!real) {
        real = (int (*)(void *, const char *))dlsym(RTLD_NEXT, "zmq_connect");
        get_option = (int (*)(void *, int, void *, size_t *))dlsym(RTLD_NEXT, "zmq_getsockopt");
    }
    int rc = real(sock, addr);
    const char *ms = getenv("MLQ_CONNECT_DELAY_MS");
    if (rc != 0 || !ms || strncmp(addr, "inproc://", 9) == 0) return rc;
    long delay = atol(ms);
    /* Reading ZMQ_EVENTS makes the socket take its I/O thread's news. A
     * refused connection's end takes a few rounds of it. */
    for (long t = 0; t < delay; t += 10) {
        int events;
        size_t len = sizeof events;
        get_option(sock, ZMQ_EVENTS, &events, &len);
        nap_ms(10);
    }
    return rc;
}
