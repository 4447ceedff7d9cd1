/* A trainer as a serving replica (docs/serving.md): the model of a SERVE
 * message kept loaded, infer requests batched into forward passes.
 *
 * Runs in the worker thread on its inproc pair (worker.c): the I/O thread
 * passes SERVE, UNSERVE and INFER on from the broker and sends SERVING and
 * INFERRED back. A forward pass runs when the queue holds max_batch rows or
 * its oldest request has waited max_delay_us (0: whatever has arrived when
 * the model is free), whichever comes first. Requests are answered in the
 * order they came, so a SERVE of a new generation (a rollover) answers the
 * requests before it with the old model and those after it with the new. */
#ifndef MLQ_SERVE_H
#define MLQ_SERVE_H

#include "proto.h"

/* Serves the SERVE message first (its blob is the checkpoint). Returns 0
 * after an UNSERVE; 1 with *next set (the caller's to clear) when a message
 * that is not for serving came (a JOB, or the worker's quit); -1 when the
 * pair fails. */
int serve_run(void *pair, struct proto_msg *first, struct proto_msg *next);
/* Answers an INFER or INFER_BIN with an error for all its requests (an
 * INFERRED or INFERRED_BIN the broker turns into errors for their clients). */
void serve_refuse(void *pair, const struct proto_msg *m, const char *why);

#endif
