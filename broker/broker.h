/* mlq-broker as a library: the durable job queue behind a ROUTER socket.
 *
 * One event loop (zmq_poll) whose timeout is the next deadline (a heartbeat
 * to send, a trainer or a restarted broker's running job to give up on). It is
 * the only writer of the store; the changes of one loop pass are committed in
 * one transaction before any reply of that pass leaves (durable before
 * acknowledged). docs/protocol.md describes the messages. */
#ifndef MLQ_BROKER_H
#define MLQ_BROKER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#define BROKER_DEFAULT_BIND "tcp://127.0.0.1:5555"
#define BROKER_HEARTBEAT_MS 1000
#define BROKER_LIVENESS 3
/* mlq-broker's exit status when another broker holds the database (mlq up
 * does not restart it; the unit has RestartPreventExitStatus=). */
#define BROKER_EXIT_DB_HELD 7

struct broker_opts {
    const char *db_path;   /* required */
    const char *bind;      /* NULL: BROKER_DEFAULT_BIND */
    int heartbeat_ms;      /* <= 0: BROKER_HEARTBEAT_MS */
    int liveness;          /* missed heartbeats before a trainer is dead; <= 0: BROKER_LIVENESS */
    int checkpoint_keep;   /* checkpoints kept per run (plus the best); < 0: store default */
    int sync_normal;       /* non-zero: synchronous=NORMAL (faster, not power-loss safe) */
    long long max_message; /* bytes in one frame (ZMQ_MAXMSGSIZE); <= 0: PROTO_MAX_MSG */
    /* CURVE (docs/security.md): the broker's secret key file, NULL or "" for
     * plaintext, which only a local bind or insecure allows. */
    const char *secret_key;
    const char *users_dir;      /* NULL or "": "users" next to secret_key */
    const char *trainers_dir;   /* NULL or "": "trainers" next to secret_key */
    bool insecure;              /* plaintext on a non-local bind, said in so many words */
    long long sweep_max_trials; /* trials of one sweep at most; <= 0: SPACE_MAX_TRIALS */
    int serve_deadline_ms;      /* an infer request's deadline if it names none; <= 0: 5000 */
    const char *datasets_dir;   /* pushed datasets; NULL or "": datasets/ beside db_path */
};

struct broker;

/* Locks the database (DB.lock), opens the store (creating it) and binds the
 * socket. 0 or -errno with a message in err naming the file or endpoint;
 * -EBUSY only when another broker holds the database (err names its pid and
 * bind address); -EPERM for a security setting it refuses (a plaintext
 * bind that is not local without insecure, a key or key directory that
 * cannot be read, a libzmq without CURVE or older than 4.3.2). */
int broker_open(struct broker **out, const struct broker_opts *opts, char *err, size_t errlen);
/* Runs until *stop becomes non-zero (a signal handler sets it), then settles:
 * no new dispatch, the open transaction committed. Returns 0, or -errno when
 * the store failed (the caller exits non-zero and a restart recovers). */
int broker_run(struct broker *b, volatile sig_atomic_t *stop);
/* Accepts NULL and *b == NULL; closes the socket and the store. */
void broker_close(struct broker **b);

/* The endpoint actually bound (tcp://127.0.0.1:PORT when bound to port 0). */
const char *broker_endpoint(const struct broker *b);

#endif
