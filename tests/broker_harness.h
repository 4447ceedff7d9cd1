/* Integration-test harness for the broker: a temp dir, real mlq-broker and
 * mlq-trainer processes on an ipc:// endpoint in it, small HDF5 datasets made
 * with the HDF5 C API, and a protocol client. */
#ifndef MLQ_BROKER_HARNESS_H
#define MLQ_BROKER_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "keys.h"

#define H_HEARTBEAT_MS 100
/* Heartbeats a peer may miss before it is dead: 1 s at 100 ms. Three (the
 * default) let a trainer on a loaded 2-core machine (a parallel ctest, a
 * sanitizer build, a dataset reader's fork) be declared dead and its job
 * counted a second attempt. */
#define H_LIVENESS "10"
#define H_MAX_PROCS 16

struct h_proc {
    pid_t pid;
    char name[64];
};

/* CurveZMQ for a test (docs/security.md): the broker's key pair at
 * DIR/etc/broker, with its users/ and trainers/ directories. */
struct h_keys {
    struct keys_cert broker;
    char secret[600];   /* DIR/etc/broker.key_secret */
    char users[600];    /* DIR/etc/users */
    char trainers[600]; /* DIR/etc/trainers */
};

struct harness {
    char dir[256];
    char db[512];
    char endpoint[512];
    char config[512];
    void *zctx;
    pid_t broker;
    struct h_proc procs[H_MAX_PROCS]; /* trainers and other children */
    int n_procs;
    /* h_call's key: CURVE to the broker when has_key (h_use_key). */
    bool has_key;
    struct keys_cert key;
    char broker_z85[KEYS_Z85_LEN + 1];
    bool keys_made; /* h_keys_init */
    struct h_keys keys;
};

/* Creates the temp dir (removed by h_free) and sets MLQ_CONFIG to an empty file. */
struct harness *h_new(void);
void h_free(struct harness **h);
/* cmocka group fixtures over h_new and h_free. */
int h_setup(void **state);
int h_teardown(void **state);

/* Writes dir/name: X float32 (n, d), y int32 class ids (n) from a fixed rule. */
void h_dataset(struct harness *h, const char *name, int n, int d, int classes, uint64_t seed,
               char *path, size_t len);

/* Starts mlq-broker with the harness's db and endpoint and waits until it
 * answers. extra: NULL-terminated extra arguments, or NULL. */
void h_broker_start(struct harness *h, const char *const *extra);
void h_broker_kill(struct harness *h, int sig); /* and reap */
/* Starts mlq-trainer --broker; returns its pid. */
pid_t h_trainer_start(struct harness *h, const char *name);
/* The same with extra arguments (NULL-terminated), e.g. --secret-key FILE. */
pid_t h_trainer_start_extra(struct harness *h, const char *name, const char *const *extra);
/* h_call (and everything over it) speaks CURVE with own's keys, pinned to
 * broker_z85; own NULL: plaintext again. */
void h_use_key(struct harness *h, const struct keys_cert *own, const char *broker_z85);
void h_proc_kill(struct harness *h, pid_t pid, int sig); /* and reap */

/* Makes the broker's key and directories (h->keys), once. */
void h_keys_init(struct harness *h);
/* A fresh key pair name with role, written to DIR/name.key and
 * DIR/name.key_secret; accept: its public key also goes into the broker's
 * users' (user, admin) or trainers' (trainer) directory. */
void h_key_make(struct harness *h, struct keys_cert *out, const char *name, enum keys_role role,
                bool accept);
/* Copies c's public key into the directory of its role (as a broker's
 * admin would): NAME.key in users/ or trainers/. */
void h_key_accept(struct harness *h, const struct keys_cert *c);
/* The broker with its key (h_keys_init first): h_call then speaks CURVE as
 * `as` (NULL: plaintext, which the broker will not answer). extra as for
 * h_broker_start. */
void h_broker_start_keys(struct harness *h, const struct keys_cert *as, const char *const *extra);
/* A trainer with the key pair DIR/key_name (h_key_make) and the broker's
 * key pinned. */
pid_t h_trainer_start_keys(struct harness *h, const char *name, const char *key_name);

/* Sends cmd with body (stolen) and returns the reply body (OK or ERROR, with
 * *is_error set), or NULL on a 5 s timeout. */
json_t *h_call(struct harness *h, const char *cmd, json_t *body, bool *is_error);
/* The same from a new connection with own's keys pinned to server_z85 (own
 * NULL: plaintext), NULL when no reply came in timeout_ms. */
json_t *h_call_as(struct harness *h, const struct keys_cert *own, const char *server_z85,
                  const char *cmd, json_t *body, int timeout_ms, bool *is_error);
/* The job object of STATUS for id (caller json_decref). */
json_t *h_job(struct harness *h, int64_t id);
/* SUBMIT of spec (stolen); returns the id, fails the test on an error reply. */
int64_t h_submit(struct harness *h, json_t *spec);
/* The job's state word ("queued", ...) into buf; its epoch of train_loss in *epoch. */
void h_status(struct harness *h, int64_t id, char *state, size_t len, int64_t *epoch);
/* Polls until the job reaches a terminal state (fails the test after timeout_s). */
void h_wait_terminal(struct harness *h, int64_t id, double timeout_s, char *state, size_t len);
/* Polls until the job is running with at least min_epoch epochs reported. */
void h_wait_epoch(struct harness *h, int64_t id, int64_t min_epoch, double timeout_s);
/* Polls until n trainers are connected. */
void h_wait_trainers(struct harness *h, int n, double timeout_s);

/* A small train spec on dataset path. */
json_t *h_train_spec(const char *path, int d, int classes, int epochs, uint64_t seed);

/* The parameters of a run's last checkpoint (caller frees), their count and
 * its epoch, read from the harness's database. */
float *h_final_params(struct harness *h, int64_t run, size_t *n, int64_t *epoch);

/* Runs a program to completion; returns its exit status (-1 if signalled).
 * out_file (if not NULL) gets its stdout; h_run_all's gets stderr too. */
int h_run(struct harness *h, const char *const *argv, const char *out_file);
int h_run_all(struct harness *h, const char *const *argv, const char *out_file);

double h_now(void);

#endif
