/* mlq-trainer --broker: the trainer as a daemon taking jobs from a broker.
 *
 * Two threads. The I/O thread (the caller of worker_main) owns the DEALER
 * socket to the broker: it says HELLO, keeps heartbeats flowing both ways,
 * passes cancel requests on, and reconnects with backoff when the broker goes
 * silent, announcing the job it still runs so that the job is neither lost nor
 * run twice. The worker thread runs one job at a time (train_run, eval_run,
 * predict_run). They talk over an inproc PAIR socket with the same frames as
 * the wire (docs/protocol.md). The I/O thread keeps the running job's metrics,
 * latest checkpoint and result until the broker acknowledges the job, so
 * nothing is lost across a reconnect (metrics are stored idempotently). */
#ifndef MLQ_WORKER_H
#define MLQ_WORKER_H

#include <signal.h>

#include "keys.h"

struct worker_opts {
    const char *endpoint;  /* the broker, tcp://... or ipc://... */
    const char *name;      /* NULL: hostname-pid */
    int threads;           /* BLAS threads for jobs whose spec says 0; 0: every core */
    int heartbeat_ms;      /* <= 0: 1000 */
    int liveness;          /* <= 0: 3 */
    int memory_budget_mb;  /* trainer.memory_budget_mb: one job's limit (job_memory.h); 0 none */
    const char *data_root; /* base of relative dataset paths in specs; NULL or "": none */
    /* Confinement (docs/security.md): with a data_root other than "." or
     * data_roots set, dataset files must resolve under one of them; with
     * outputs_dir set, predict outputs are new files under it. */
    const char *data_roots;  /* more roots, ':'-separated; NULL or "": none */
    const char *outputs_dir; /* NULL or "": outputs anywhere, as the trainer's user may write */
    const char *dataset_cache_dir;  /* fetched pushed datasets (dscache.h) */
    int dataset_cache_mb;           /* its limit; <= 0: 10240 */
    const struct keys_client *keys; /* CURVE to the broker (keys.h); NULL or !curve: plaintext */
};

/* Runs until SIGTERM/SIGINT (handlers installed here) or *stop. A job still
 * running then is interrupted and handed back to the broker for requeueing.
 * Returns the process exit code: 0, or 1 when the sockets cannot be set up. */
int worker_main(const struct worker_opts *opts);

#endif
