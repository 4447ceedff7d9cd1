/* The in-process end of a fake broker for tests of one side of the
 * dataset transfer (test_fetch.c, test_upload.c): a ROUTER the test
 * answers from and a DEALER for the code under test, over inproc, and a
 * monotonic clock for their pump calls. */
#ifndef MLQ_FAKE_BROKER_H
#define MLQ_FAKE_BROKER_H

struct fake_broker {
    void *ctx, *router, *dealer;
};

/* 0, or -1 with nothing left open. */
int fake_broker_open(struct fake_broker *b);
void fake_broker_close(struct fake_broker *b);
/* Seconds on CLOCK_MONOTONIC. */
double fake_broker_now(void);

#endif
