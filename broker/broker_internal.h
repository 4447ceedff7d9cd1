/* The broker's state, shared by its files: broker.c (loop, outbox, commit),
 * trainers.c (registry and liveness), dispatch.c (queue to trainers, requeue,
 * start-up recovery), handlers.c (one function per command). */
#ifndef MLQ_BROKER_INTERNAL_H
#define MLQ_BROKER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "broker.h"
#include "datasets.h"
#include "keys.h"
#include "log.h"
#include "proto.h"
#include "store.h"

struct trainer {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    char name[STORE_NAME_MAX];
    char host[STORE_NAME_MAX];
    char version[32];
    char instance[72];  /* the trainer process's HELLO "instance", "" if none */
    char *capabilities; /* JSON text, owned */
    int64_t job;        /* 0 = idle */
    double dispatched;  /* monotonic seconds when job was sent */
    bool cancel_sent;
    double cancel_at; /* monotonic seconds when CANCEL was last sent */
    double last_seen; /* monotonic seconds */
    double last_sent;
    double since; /* wall clock of HELLO */
    /* Serving (serve.c): the deployment this trainer is a replica of. */
    struct serve_dep *serve_dep; /* NULL: not a replica */
    int64_t serve_gen;           /* the generation of the last SERVE sent to it */
    bool serve_ready;            /* it holds a model (of serve_ready_gen) */
    int64_t serve_ready_gen;
    int serve_inflight; /* requests sent to it and not answered */
    bool infer_bin;     /* its HELLO's capabilities say "infer_bin": INFER_BIN, not INFER */
    /* The deployment and generation it could not load (tried again on it
     * only after the deployment's backoff); never dereferenced. */
    const struct serve_dep *serve_refused;
    int64_t serve_refused_gen;
};

/* A running job found at start-up, waiting for its trainer to re-announce it. */
struct orphan {
    int64_t job;
    double deadline;
};

/* A reply held until the pass's transaction is committed. */
struct outmsg {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    char cmd[PROTO_CMD_MAX];
    json_t *body; /* owned, or NULL when text is set */
    char *text;   /* owned: the body already encoded (hot replies skip jansson) */
    void *bin;    /* owned, or NULL */
    size_t bin_len;
};

/* A key the broker accepts: its owner's name and role. */
struct principal {
    char z85[KEYS_Z85_LEN + 1];
    char name[KEYS_NAME_MAX];
    enum keys_role role;
};

struct auth_stamp {
    unsigned long long ino;
    long long sec, nsec;
    bool missing;
};

struct auth {
    bool curve; /* false: plaintext, every peer is trusted */
    void *zap;  /* REP on inproc://zeromq.zap.01 */
    char public_z85[KEYS_Z85_LEN + 1];
    char users_dir[4096], trainers_dir[4096];
    struct auth_stamp users_stamp, trainers_stamp;
    struct principal *keys;
    size_t n_keys;
    bool loaded;
    double last_scan, next_check;
    struct log_limit zap_log;
};

struct broker {
    struct broker_opts opts;
    char endpoint[1024];
    struct store *store;
    int lock_fd; /* flock on DB.lock, held for the broker's life; -1 = none */
    void *zctx;
    void *router;
    struct auth auth;
    /* The sender of the message being handled: NULL in plaintext. */
    const struct principal *who;

    struct trainer *trainers;
    size_t n_trainers, cap_trainers;
    struct serve *serve;                  /* serve.c */
    char datasets_dir[DATASETS_PATH_MAX]; /* datasets.c: the store of pushed datasets */
    struct datasets *datasets;            /* datasets.c: pushes and objects open */
    struct orphan *orphans;
    size_t n_orphans;
    struct outmsg *out;
    size_t n_out, cap_out;

    /* Group commit across passes: a pass whose replies are only ACKs and
     * heartbeats keeps its transaction open until commit_by, so that a DONE
     * shares the fsync of the SUBMIT that usually follows it. */
    bool urgent; /* the outbox holds a reply someone waits for */
    /* A dataset chunk was written or read in this pass: end the pass after
     * it, so that a transfer's hashing and I/O delay the next dispatch,
     * heartbeat or reply by one chunk's work at most (datasets.c). */
    bool yield_pass;
    double commit_by; /* monotonic deadline of the held transaction, 0 = none */

    double interval; /* heartbeat seconds */
    double expiry;   /* interval * liveness */
    bool stopping;
    int store_error; /* first failed write or commit; ends the loop */

    double deps_next; /* monotonic time of the next --after check (sweep.c) */

    /* dispatch_run found no job to start at store_changes() == idle_changes:
     * until the store changes (or idle_until) it would find none again. */
    bool queue_idle;
    int64_t idle_changes;
    double idle_until;

    /* Lines a peer can cause at will, each source rate-limited. */
    struct log_limit drop_log; /* malformed messages dropped */
    struct log_limit peer_log; /* trainers connecting, told to drop a job */
};

double broker_mono(void);

/* broker.c */
int broker_write(struct broker *b); /* opens the pass's transaction if needed */
void broker_store_failed(struct broker *b, const char *what);
void broker_reply(struct broker *b, const unsigned char *ident, size_t ident_len, const char *cmd,
                  json_t *body, void *bin, size_t bin_len); /* steals body, bin */
/* The same with the body as JSON text, printf-style (one object). */
void broker_reply_textf(struct broker *b, const unsigned char *ident, size_t ident_len,
                        const char *cmd, void *bin, size_t bin_len, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
void broker_reply_error(struct broker *b, const struct proto_msg *m, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void broker_drop_log(struct broker *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line about a peer's connection or its job that any peer can cause (HELLO,
 * DROP): rate-limited, so that a flood of HELLOs cannot fill the log. */
#define broker_peer_log(b, level, ...) log_limited(&(b)->peer_log, (level), __VA_ARGS__)

/* handlers.c */
int broker_request_id(struct broker *b, const struct proto_msg *m, const char **request_id);

/* trainers.c */
struct trainer *trainers_find(struct broker *b, const unsigned char *ident, size_t len);
struct trainer *trainers_find_name(struct broker *b, const char *name);
struct trainer *trainers_find_job(struct broker *b, int64_t job);
struct trainer *trainers_add(struct broker *b, const unsigned char *ident, size_t len);
void trainers_remove(struct broker *b, struct trainer *t);
void trainers_save(struct broker *b, const struct trainer *t, const char *state);
/* Trainers silent past the expiry lose their job; returns the next deadline. */
double trainers_tick(struct broker *b, double now);
void trainers_free(struct broker *b);

/* dispatch.c */
int dispatch_recover(struct broker *b); /* start-up: running jobs become orphans */
void dispatch_run(struct broker *b);    /* queued jobs to idle trainers */
/* Sends t's job again: its heartbeat says it never got it (a reply can be
 * dropped when the trainer's queue is full). */
void dispatch_resend(struct broker *b, struct trainer *t);
/* A job's trainer is gone: requeue it, or fail it past max_attempts, or
 * cancel it if a cancel was requested. */
void dispatch_lost(struct broker *b, int64_t job, const char *reason);
bool dispatch_take_orphan(struct broker *b, int64_t job);
double dispatch_tick(struct broker *b, double now); /* orphans past their deadline */

/* auth.c */
/* Loads the broker's key and the accepted keys, binds the ZAP handler and
 * makes the ROUTER a CURVE server (before it binds); in plaintext checks
 * that the bind is local or insecure. 0 or -errno with err. */
int auth_open(struct broker *b, char *err, size_t errlen);
void auth_close(struct broker *b);
void auth_handle_zap(struct broker *b); /* answers the waiting ZAP requests */
void auth_tick(struct broker *b, double now);
/* The accepted key with this Z85 text, or NULL (unknown or revoked). */
const struct principal *auth_lookup(struct broker *b, const char *z85);

/* serve.c: deployments and infer requests (docs/serving.md). */
struct serve_dep;
int serve_open(struct broker *b, char *err, size_t errlen); /* loads the deployments */
void serve_close(struct broker *b);
bool serve_is_client_command(const char *cmd);  /* DEPLOY, UNDEPLOY, DEPLOYMENTS, INFER */
bool serve_is_trainer_command(const char *cmd); /* SERVING, INFERRED */
void serve_client_message(struct broker *b, struct proto_msg *m);
void serve_trainer_message(struct broker *b, struct trainer *t, struct proto_msg *m);
/* A HELLO's "serving" ({"deployment", "generation"} or NULL). */
void serve_hello(struct broker *b, struct trainer *t, const json_t *serving);
/* Before t leaves the registry: its unanswered requests go to another replica. */
void serve_trainer_removed(struct broker *b, struct trainer *t);
/* Placement and deadlines; returns the next deadline. */
double serve_tick(struct broker *b, double now);
void serve_flush(struct broker *b); /* this pass's INFER messages to the replicas */
void serve_kick(struct broker *b);  /* placement looks again at the next tick */
/* WORKERS: the deployment t serves, if the sender may see it, else null. */
json_t *serve_replica_of(struct broker *b, const struct trainer *t);

/* datasets.c: pushed datasets (docs/datasets.md, "Pushed datasets"). */
struct datasets;
int datasets_open(struct broker *b, char *err, size_t errlen);
void datasets_close(struct broker *b); /* accepts one never opened */
/* DATASET_PUT, DATASET_CHUNK, DATASET_END, DATASETS, DATASET_RM. */
bool datasets_is_client_command(const char *cmd);
/* Those and FETCH (from a client or a trainer). */
void datasets_client_message(struct broker *b, struct proto_msg *m);
void datasets_trainer_message(struct broker *b, struct trainer *t,
                              struct proto_msg *m); /* DATASET */
/* A spec's (JSON) dataset and validation by name get the name's sha256; a
 * given sha256 must be a pushed dataset's. 0, or -EINVAL with the bad_spec
 * text in err, or another -errno (store) with err. */
int datasets_resolve_spec(struct broker *b, json_t *spec, char *err, size_t errlen);
/* Idle pushes and objects closed, removed names' objects deleted (in a pass
 * that has not written yet: the removal is committed); returns the next
 * deadline. */
double datasets_tick(struct broker *b, double now);

/* handlers.c */
void handlers_dispatch(struct broker *b, struct proto_msg *m);

/* sweep.c: sweeps, experiments, tags, notes, --after (docs/sweeps.md) */
bool sweep_is_client_command(const char *cmd);                   /* SWEEP, TAG, NOTE */
bool sweep_dispatch(struct broker *b, struct proto_msg *m);      /* false: not a sweep command */
bool sweep_handle_cancel(struct broker *b, struct proto_msg *m); /* CANCEL {"sweep"} */
/* A SUBMIT's (or SWEEP's) "experiment", "tags" and "after": 0, or -errno with
 * the reply's code and text. */
int sweep_meta_check(struct broker *b, struct proto_msg *m, char *err, size_t errlen,
                     const char **code);
const char *sweep_meta_experiment(const struct proto_msg *m);
int sweep_meta_apply(struct broker *b, const struct proto_msg *m, int64_t job); /* tags, after */
/* After a trial's METRICS are stored: ASHA or the median rule at this epoch. */
void sweep_on_metrics(struct broker *b, struct trainer *t, int64_t job, int64_t epoch,
                      const json_t *values);
double sweep_tick(struct broker *b, double now); /* queued jobs whose --after failed */
/* QUEUE's "sweeps": the sender's sweeps with trials queued or running, newest first. */
json_t *sweep_queue_json(struct broker *b);

#endif
