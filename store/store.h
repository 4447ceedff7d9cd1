/* The store: mlq's run history and job queue in one SQLite file.
 *
 * It owns the schema (docs/schema.md), its migrations (PRAGMA user_version)
 * and every SQL statement of the project; nothing else talks SQL. The broker
 * opens it read-write, the cli read-only, `mlq-trainer --standalone` read-write.
 *
 * Conventions:
 * - Functions return 0 or a negative errno: -ENOENT (no such row), -EINVAL
 *   (bad argument), -EROFS (write on a read-only store), -EBUSY (locked past
 *   the busy timeout), -EIO (any other SQLite failure), -ENOMEM. The text of
 *   the last failure is store_errmsg(s); store_open takes a buffer instead.
 * - Times are unix epoch seconds as double (fractions kept); 0 means "not yet"
 *   (NULL in the database).
 * - A run IS a job: run ids are job ids (jobs.id, INTEGER PRIMARY KEY, >= 1).
 * - Every write outside store_begin/store_commit is its own transaction; inside
 *   one, it joins it (multi-statement calls use a savepoint, so a failing call
 *   leaves nothing half-written).
 * - Strings in returned structs are owned by the struct; free them with the
 *   matching *_free function. Arrays returned through **out are owned by the
 *   caller and freed with the function named next to them. */
#ifndef MLQ_STORE_H
#define MLQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h" /* enum job_kind, struct mlq_spec */

#define STORE_SCHEMA_VERSION 6
#define STORE_SERVICE_PATH "/var/lib/mlq/mlq.db" /* the services' database */
#define STORE_KEEP_LAST_DEFAULT 3                /* checkpoints kept per run, plus the best */
#define STORE_NAME_MAX 128
#define STORE_KEY_MAX 128

struct store;

/* ---- open and close ------------------------------------------------------ */

enum store_open_flags {
    STORE_READONLY = 1 << 0,    /* SQLITE_OPEN_READONLY; every write returns -EROFS */
    STORE_CREATE = 1 << 1,      /* create the file (and its directory) if missing */
    STORE_SYNC_NORMAL = 1 << 2, /* synchronous=NORMAL instead of FULL (faster, may lose
                                   the last commits on power loss, never corrupts) */
};

/* Opens (and with STORE_CREATE creates) the database at path, migrating the
 * schema forward when writable. Errors, with a message naming the file:
 * -ENOENT no such file (and no STORE_CREATE), -ENOTSUP a schema newer than this
 * binary knows (nothing written), -EINVAL not an mlq database or corrupt,
 * -EROFS a read-only store needs a migration, -EIO other SQLite failures. */
int store_open(struct store **out, const char *path, int flags, char *err, size_t errlen);
/* mkdir -p of the directory of the database at path (0 or -errno); the
 * database's own directory is made 0750, so that history read straight
 * from the file follows its group (docs/security.md). store_open with
 * STORE_CREATE calls it; the broker too, before it locks DB.lock there. */
int store_make_parent(const char *path);
/* Accepts NULL and *s == NULL; sets *s to NULL. Rolls back an open transaction. */
void store_close(struct store **s);

/* The message of the last failed call on s (never NULL). */
const char *store_errmsg(const struct store *s);
/* The schema version of the open file (after migration). */
int store_schema_version(const struct store *s);

/* Where the history commands look: $MLQ_DB if set, else
 * $XDG_DATA_HOME/mlq/mlq.db, else $HOME/.local/share/mlq/mlq.db.
 * Returns 0, or -ENAMETOOLONG / -ENOENT (no HOME) with buf set to "". */
int store_default_path(char *buf, size_t len);

/* Test seam: the clock used for submitted/started/finished and event times
 * (default: gettimeofday). NULL restores the default. */
void store_set_clock(struct store *s, double (*now)(void));
double store_now(const struct store *s);

/* ---- transactions (group commit) ------------------------------------------ */

/* BEGIN IMMEDIATE: takes the write lock now, so a later statement cannot fail
 * with SQLITE_BUSY half-way. Not nestable: -EINVAL if one is open. */
int store_begin(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s); /* no-op if none is open */
bool store_in_transaction(const struct store *s);

/* ---- jobs (= runs) --------------------------------------------------------- */

enum store_state {
    STORE_QUEUED,
    STORE_RUNNING,
    STORE_SUCCEEDED,
    STORE_FAILED,
    STORE_CANCELLED,
    STORE_STOPPED, /* a sweep's scheduler stopped the trial early (docs/sweeps.md) */
};
#define STORE_N_STATES 6

const char *store_state_name(enum store_state st);              /* "queued", "running", ... */
int store_state_parse(const char *name, enum store_state *out); /* 0 or -EINVAL */
int store_kind_parse(const char *name, enum job_kind *out);     /* "train"|"eval"|"predict" */
bool store_state_terminal(enum store_state st); /* succeeded, failed, cancelled, stopped */

struct store_job {
    int64_t id;
    enum job_kind kind;
    enum store_state state;
    int priority;                 /* higher first */
    int attempts;                 /* dispatches so far */
    int max_attempts;             /* dispatches before it fails */
    char name[STORE_NAME_MAX];    /* label, may be "" */
    char trainer[STORE_NAME_MAX]; /* trainer running it or that ran it last, may be "" */
    int64_t run;                  /* eval/predict: the train run used; 0 otherwise */
    bool cancel_requested;
    double submitted, started, finished; /* 0 = not yet */
    char *spec_json;                     /* canonical spec; NULL in store_runs_list results */
    char *error;                         /* failure or cancel reason, or NULL */
    char *result_json;                   /* eval metrics / predict summary, or NULL */
    char *request_id;                    /* its submission's (docs/jobs.md), or NULL */
    char *owner;                         /* the submitting key's name, or NULL (no keys) */
    int64_t sweep;                       /* the sweep it is a trial of, 0 = none */
    char *experiment;                    /* --experiment, or NULL */
    bool stop_requested;                 /* its sweep's scheduler decided to stop it */
    char *dataset_sha256; /* the hash of the data it read (its trainer's DATASET), or NULL */
};
void store_job_free(struct store_job *job);              /* frees the strings, not job */
void store_jobs_free(struct store_job **jobs, size_t n); /* frees an array and its strings */

struct store_new_job {
    enum job_kind kind;
    const char *spec_json; /* stored as given */
    int priority;
    int max_attempts;       /* <= 0: 3 */
    const char *name;       /* may be NULL */
    int64_t run;            /* eval/predict: the run referred to; 0 = none */
    const char *owner;      /* the submitting key's name; NULL = none */
    int64_t sweep;          /* the sweep it is a trial of; 0 = none */
    const char *experiment; /* NULL = none */
};

#define STORE_REQUEST_ID_MAX 128 /* = PROTO_REQUEST_ID_MAX */

/* Inserts a queued job as given; its params (the view) come from spec_json.
 * -EINVAL if spec_json is not a JSON object. *id receives the new id. */
int store_job_submit(struct store *s, const struct store_new_job *nj, int64_t *id);
/* Same, from a validated spec: canonical JSON (spec_to_json) with kind, name,
 * priority, max_attempts and run taken from it. With a request_id (1 to
 * STORE_REQUEST_ID_MAX characters, or NULL) a submission that repeats an
 * earlier one with the same id and spec inserts nothing: *id is the earlier
 * job and *existed (may be NULL) true; the same id with another spec is
 * -EEXIST. */
int store_job_submit_spec(struct store *s, const struct mlq_spec *spec, const char *request_id,
                          int64_t *id, bool *existed);
/* Same, recording owner (the submitting key's name, NULL = none) on the
 * job. A request id repeated by another owner is -EEXIST ("taken"), so that
 * it tells nothing about the other's job. */
int store_job_submit_owned(struct store *s, const struct mlq_spec *spec, const char *request_id,
                           const char *owner, int64_t *id, bool *existed);

/* Same, with the job's other fields from meta (owner, sweep, experiment;
 * its kind, spec and queue fields are ignored: they come from spec). */
int store_job_submit_meta(struct store *s, const struct mlq_spec *spec, const char *request_id,
                          const struct store_new_job *meta, int64_t *id, bool *existed);

/* Fills *job (free with store_job_free). -ENOENT if there is no such id. */
int store_job_get(struct store *s, int64_t id, struct store_job *job);
/* The queued job to dispatch next: highest priority, then lowest id.
 * -ENOENT when the queue is empty. */
int store_job_next_queued(struct store *s, struct store_job *job);
/* Into *n: the queued jobs that store_job_next_queued would give before
 * queued job id of priority `priority`, as the queue stands: those it may
 * dispatch now (dependencies met, sweep under max_parallel) of a higher
 * priority, or of the same and a lower id. */
int store_job_queue_ahead(struct store *s, int64_t id, int priority, int64_t *n);
/* Ids of the jobs in a state, ascending (the broker's start-up recovery).
 * *ids is malloc'd (free()), NULL when *n == 0. */
int store_job_ids_by_state(struct store *s, enum store_state st, int64_t **ids, size_t *n);
int store_job_count_by_state(struct store *s, int64_t counts[STORE_N_STATES]);

/* State changes. Each returns -ENOENT for an unknown id. */
/* queued -> running: sets trainer, attempts + 1, started = now. */
int store_job_set_running(struct store *s, int64_t id, const char *trainer);
/* -> succeeded / failed(reason) / cancelled(reason may be NULL); finished = now. */
int store_job_set_succeeded(struct store *s, int64_t id);
int store_job_set_failed(struct store *s, int64_t id, const char *reason);
int store_job_set_cancelled(struct store *s, int64_t id, const char *reason);
/* running -> queued, keeping attempts (the next dispatch adds one); clears
 * trainer and started; the reason goes to the run's events. */
int store_job_requeue(struct store *s, int64_t id, const char *reason);
/* Marks a running job for cancellation (the broker tells its trainer). */
int store_job_request_cancel(struct store *s, int64_t id);
/* Marks a running sweep trial to be stopped by its scheduler, with the reason
 * as its error: however it ends next (its trainer's cancel or success, or the
 * trainer lost), it ends `stopped`, unless it failed. */
int store_job_request_stop(struct store *s, int64_t id, const char *reason);
/* Stores a job's result document (JSON text; eval: loss, accuracy,
 * per-class accuracy, confusion matrix; predict: a summary). */
int store_job_set_result(struct store *s, int64_t id, const char *result_json);

/* ---- params (the spec flattened) -------------------------------------------- */

struct store_param {
    char *key;   /* "optimizer.lr" */
    char *value; /* "0.001" */
};
/* All params of a run, ordered by key. Free with store_params_free. */
int store_params_list(struct store *s, int64_t run, struct store_param **out, size_t *n);
void store_params_free(struct store_param *p, size_t n);

/* ---- metrics ---------------------------------------------------------------- */

struct store_metric {
    const char *key; /* "train_loss", "val_loss", "val_accuracy", ... */
    int64_t step;    /* optimizer steps; the unique position of the value */
    int64_t epoch;
    double value;
    double time;
};

/* Inserts or replaces (run, key, step): a metric sent twice is stored once.
 * time 0 = now. Keys are 1..STORE_KEY_MAX-1 bytes. */
int store_metric_put(struct store *s, int64_t run, const char *key, int64_t step, int64_t epoch,
                     double value, double time);
/* Many at once, in one transaction (or the caller's). */
int store_metrics_put(struct store *s, int64_t run, const struct store_metric *m, size_t n);

/* Calls fn for each metric of run (of key only, if key != NULL), ordered by
 * key then step. m and its key are valid during the call only. A non-zero
 * return from fn stops the walk and is returned. */
typedef int (*store_metric_fn)(void *ctx, const struct store_metric *m);
int store_metrics_foreach(struct store *s, int64_t run, const char *key, store_metric_fn fn,
                          void *ctx);
/* The last value of each key in each epoch after after_epoch, ordered by
 * epoch then key (what `mlq wait` prints a line of per epoch); fn as above. */
int store_metrics_since(struct store *s, int64_t run, int64_t after_epoch, store_metric_fn fn,
                        void *ctx);
/* The last step of each key of a run, ordered by key (kept in table
 * final_metrics by a trigger, so this is one index lookup per key).
 * Free with store_metrics_free. */
int store_metrics_final(struct store *s, int64_t run, struct store_metric **out, size_t *n);
void store_metrics_free(struct store_metric *m, size_t n); /* frees the keys too */

/* ---- checkpoints ------------------------------------------------------------ */

struct store_checkpoint {
    int64_t id;
    int64_t run;
    int64_t epoch;
    int64_t step;
    uint32_t crc32; /* zlib crc32 of the blob */
    size_t size;    /* bytes */
    double time;
    bool has_metric;
    double metric; /* lower is better (validation loss); for "best" */
    void *blob;    /* owned; NULL in store_checkpoints_list results */
};
void store_checkpoint_free(struct store_checkpoint *c); /* frees the blob, not c */

/* Checkpoints kept per run when a new one is put: the last keep_last plus
 * the best. 0 keeps all. Default STORE_KEEP_LAST_DEFAULT. */
void store_set_retention(struct store *s, int keep_last);

/* Stores a checkpoint (crc32 computed here), then prunes the run's older
 * ones by the retention setting; one transaction. A second put for the same
 * (run, epoch, step) replaces the first. metric: NAN when there is none. */
int store_checkpoint_put(struct store *s, int64_t run, int64_t epoch, int64_t step,
                         const void *blob, size_t len, double metric, int64_t *id);

enum store_ckpt_which {
    STORE_CKPT_LAST, /* highest step */
    STORE_CKPT_BEST, /* lowest metric (ties: latest); falls back to last if none has one */
    STORE_CKPT_EPOCH /* the one of a given epoch (latest step of it) */
};
/* Loads one checkpoint with its blob, verifying its size and checksum:
 * -EBADMSG ("checksum mismatch") when the stored bytes are damaged, which is
 * bad data, not a failed store (-EIO). -ENOENT if there is none. */
int store_checkpoint_get(struct store *s, int64_t run, enum store_ckpt_which which, int64_t epoch,
                         struct store_checkpoint *out);
/* Parses "last", "best" or an epoch number. 0 or -EINVAL. */
int store_ckpt_which_parse(const char *text, enum store_ckpt_which *which, int64_t *epoch);
/* A run's checkpoints without blobs, by step ascending. Free: store_checkpoints_free. */
int store_checkpoints_list(struct store *s, int64_t run, struct store_checkpoint **out, size_t *n);
void store_checkpoints_free(struct store_checkpoint *c, size_t n);
int store_checkpoint_delete(struct store *s, int64_t id);
/* Applies retention to one run now: keep the last keep_last and the best. */
int store_checkpoints_prune(struct store *s, int64_t run, int keep_last);

/* ---- events ------------------------------------------------------------------ */

struct store_event {
    int64_t run; /* 0 for events of no run */
    double time;
    const char *level; /* "info", "warn", "error" */
    const char *message;
};
/* run 0: an event of no run (broker start, trainer seen). time = now. */
int store_event_add(struct store *s, int64_t run, const char *level, const char *message);
typedef int (*store_event_fn)(void *ctx, const struct store_event *e);
/* A run's events in time order; fields valid during the call only. */
int store_events_foreach(struct store *s, int64_t run, store_event_fn fn, void *ctx);

/* ---- trainers ----------------------------------------------------------------- */

struct store_trainer {
    char name[STORE_NAME_MAX];
    char host[STORE_NAME_MAX];
    char state[16]; /* "idle", "busy", "gone" (the broker's words) */
    int64_t job;    /* 0 = none */
    double last_heartbeat;
    char version[32];
    char *capabilities; /* JSON text or NULL; owned */
};
/* Rows kept of trainers that hold no job (none in the row, none running
 * under their name): past it, the ones heard from longest ago are deleted;
 * rows of trainers holding a job always stay. */
#define STORE_TRAINERS_KEEP 256
/* Inserts or updates by name (capabilities copied), then applies
 * STORE_TRAINERS_KEEP. */
int store_trainer_upsert(struct store *s, const struct store_trainer *t);
int store_trainer_delete(struct store *s, const char *name);
/* All trainers by name. Free with store_trainers_free. */
int store_trainers_list(struct store *s, struct store_trainer **out, size_t *n);
void store_trainers_free(struct store_trainer *t, size_t n);

/* ---- deployments (store_deploy.c, docs/serving.md) ------------------------------ */

#define STORE_DEPLOY_NAME_MAX 64

struct store_deployment {
    char name[STORE_DEPLOY_NAME_MAX];
    int64_t run;
    char checkpoint[32]; /* "last", "best" or an epoch */
    int replicas, max_batch, max_delay_us;
    int64_t generation;         /* 1 at the first deploy, +1 at each rollover */
    char owner[STORE_NAME_MAX]; /* "" without keys */
    double created, updated;
};
/* Inserts d, or rolls an existing deployment of that name over: its run,
 * checkpoint and settings become d's and its generation goes up by one.
 * d->generation is set to the stored one. */
int store_deployment_put(struct store *s, struct store_deployment *d);
/* -ENOENT if there is none of that name. */
int store_deployment_get(struct store *s, const char *name, struct store_deployment *d);
int store_deployment_delete(struct store *s, const char *name); /* -ENOENT if none */
/* All deployments by name; free() the array. */
int store_deployments_list(struct store *s, struct store_deployment **out, size_t *n);

/* ---- pushed datasets (store_datasets.c, docs/datasets.md) ----------------------- */

/* The names of the broker's dataset objects. The objects themselves are files
 * under broker.datasets_dir, addressed by their SHA-256 (broker/datasets.h);
 * a name says which object it means now, a run's dataset_sha256 which
 * bytes it read. A few rows written by a person's command: statements are
 * prepared per call. */
#define STORE_DATASET_NAME_MAX 129 /* a name of up to 128 bytes (spec_dataset_name_valid) */

struct store_dataset {
    char name[STORE_DATASET_NAME_MAX];
    char sha256[65];            /* 64 lower-case hex digits */
    int64_t size;               /* bytes */
    double pushed;              /* when the name was (last) given to this object */
    char owner[STORE_NAME_MAX]; /* the pushing key's name, "" without keys */
    int64_t runs;               /* store_datasets_list: runs that read it or whose spec names it */
};
/* Gives d->name to the object d->sha256 (a new name, or one moved to other
 * bytes); pushed is now. */
int store_dataset_put(struct store *s, const struct store_dataset *d);
/* -ENOENT if no such name. */
int store_dataset_get(struct store *s, const char *name, struct store_dataset *d);
/* The first name (in name order) of the object sha, -ENOENT if none. */
int store_dataset_by_sha(struct store *s, const char *sha, struct store_dataset *d);
int store_dataset_delete(struct store *s, const char *name); /* -ENOENT if none */
/* Every name by name, with its runs; free() the array. */
int store_datasets_list(struct store *s, struct store_dataset **out, size_t *n);
/* Queued and running jobs whose spec names the object sha (as its dataset
 * or validation set), ids ascending; free() *ids. */
int store_dataset_users(struct store *s, const char *sha, int64_t **ids, size_t *n);
/* Records the hash of the data run read (jobs.dataset_sha256; the trainer's
 * DATASET message). -ENOENT for no such run, -EINVAL for a hash that is not
 * 64 lower-case hex digits. */
int store_set_run_dataset(struct store *s, int64_t run, const char *sha256);

/* ---- run listing (mlq runs) ----------------------------------------------------- */

#define STORE_WHERE_MAX 8

enum store_where_op {
    STORE_OP_EQ,
    STORE_OP_NE,
    STORE_OP_LT,
    STORE_OP_LE,
    STORE_OP_GT,
    STORE_OP_GE
};
/* Splits "KEY<=VALUE" (=, !=, <, <=, >, >=) at its operator: key and value
 * point into buf (a copy of text); 0 or -EINVAL. */
int store_where_parse(const char *text, char *buf, size_t len, const char **key,
                      enum store_where_op *op, const char **value);

struct store_run_filter {
    int state;     /* enum store_state, or -1 for any */
    int kind;      /* enum job_kind, or -1 for any */
    int64_t limit; /* 0 = no limit */
    /* params equal to a value, ANDed: where_key[i] = where_value[i]
       (keys as in params: "optimizer.name"). */
    int n_where;
    const char *where_key[STORE_WHERE_MAX];
    const char *where_value[STORE_WHERE_MAX];
    /* NULL: newest first. Else by this final metric, ascending (descending with
       sort_desc); runs without the metric come last. */
    const char *sort_metric;
    bool sort_desc;
    /* where_op[i] compares where_key[i] with where_value[i] (0, the default,
       is equality). A key "metrics.K" compares the run's final metric K
       numerically; any other key is a param. A key that no run has is
       -EINVAL with a message naming it. */
    enum store_where_op where_op[STORE_WHERE_MAX];
    const char *experiment; /* only runs of this experiment; NULL = any */
    int64_t sweep;          /* only trials of this sweep; 0 = any */
    int n_tags;             /* tags that must all be set to their values */
    const char *tag_key[STORE_WHERE_MAX];
    const char *tag_value[STORE_WHERE_MAX];
};
/* Runs matching f (spec_json and result_json left NULL). Free: store_jobs_free. */
int store_runs_list(struct store *s, const struct store_run_filter *f, struct store_job **out,
                    size_t *n);

/* ---- deletion ------------------------------------------------------------------- */

/* Deletes a run with its params, metrics, checkpoints and events (ON DELETE
 * CASCADE); eval/predict jobs that referred to it keep run = 0. -ENOENT if
 * missing. Callers refuse non-terminal runs themselves (the broker owns them). */
int store_run_delete(struct store *s, int64_t id);

struct store_gc_opts {
    int64_t keep;      /* keep the newest `keep` terminal runs; < 0 = no count limit */
    double older_than; /* seconds; delete terminal runs finished before now - older_than;
                          <= 0 = no age limit */
    bool dry_run;      /* count only */
};
/* Deletes terminal runs (succeeded, failed, cancelled) that match either
 * limit, then reclaims free pages (incremental_vacuum). Queued and running
 * jobs are never touched. *deleted: runs deleted (or that would be). */
int store_gc(struct store *s, const struct store_gc_opts *o, int64_t *deleted);
/* Reclaims all free pages now (PRAGMA incremental_vacuum). */
int store_vacuum(struct store *s);

/* WAL checkpoints under the caller's control, for a writer (the broker) that
 * wants them out of its commits: after store_wal_manual(s) commits no longer
 * checkpoint on their own (SQLite's default does, every 1000 pages, inside the
 * commit); store_wal_pages says how many pages the WAL holds since the last
 * checkpoint and store_wal_checkpoint copies them into the database (PASSIVE:
 * never waits for readers; outside a transaction). */
void store_wal_manual(struct store *s);
int store_wal_pages(const struct store *s);
int store_wal_checkpoint(struct store *s);
/* Rows this connection has inserted, updated or deleted since it opened
 * (rolled-back changes too): a reader of its own writes can tell from two
 * equal counts that nothing changed in between. */
int64_t store_changes(const struct store *s);

/* ---- tags, notes, dependencies (store_sweeps.c) ----------------------------------- */

#define STORE_TAG_MAX 256 /* bytes of a tag key or value */
/* Sets (or replaces) tag key=value on a run. -ENOENT for no such run,
 * -EINVAL for an empty key or one over STORE_TAG_MAX. */
int store_tag_set(struct store *s, int64_t run, const char *key, const char *value);
/* A run's tags by key (store_params_free). */
int store_tags_list(struct store *s, int64_t run, struct store_param **out, size_t *n);
/* A note on a run: an event of level "note". -ENOENT for no such run. */
int store_note_add(struct store *s, int64_t run, const char *text);
/* job starts only once `after` has succeeded (mlq submit --after). */
int store_dep_add(struct store *s, int64_t job, int64_t after);
/* The jobs a job waits for, ascending. *ids malloc'd (free()). */
int store_deps_list(struct store *s, int64_t job, int64_t **ids, size_t *n);
/* Fails every queued job one of whose --after jobs ended otherwise than
 * succeeded (or no longer exists), saying which; *n (may be NULL) counts
 * them. One pass: the broker calls it again after each change. */
int store_deps_fail_broken(struct store *s, size_t *n);

/* ---- sweeps (store_sweeps.c, docs/sweeps.md) ------------------------------------------- */

enum store_sched { STORE_SCHED_NONE, STORE_SCHED_ASHA, STORE_SCHED_MEDIAN };
const char *store_sched_name(enum store_sched k);               /* "none", "asha", "median" */
int store_sched_parse(const char *name, enum store_sched *out); /* 0 or -EINVAL */

struct store_sweep {
    int64_t id;
    char name[STORE_NAME_MAX];
    char *experiment; /* or NULL */
    char *owner;      /* or NULL */
    char *spec_json;  /* the base spec (canonical) */
    char *space_json; /* the search space (docs/sweeps.md) */
    uint64_t seed;    /* random search draws from it */
    int n_trials;
    int max_parallel; /* running trials at most; 0 = no cap */
    enum store_sched scheduler;
    char metric[STORE_KEY_MAX]; /* e.g. "val_loss" */
    bool mode_max;              /* "max": higher is better */
    int max_t;                  /* epochs of a full trial (ASHA's max_t) */
    int grace_period;           /* ASHA: first rung; median: epochs before any stop */
    int reduction_factor;       /* ASHA */
    int min_samples;            /* median: other trials needed at an epoch */
    bool cancelled;
    double submitted;
    /* Read only (derived from its trials): */
    char state[16];                 /* "running", "finished", "cancelled" */
    int64_t counts[STORE_N_STATES]; /* its trials by state */
    double finished;                /* the last trial's end once none is left; 0 = not yet */
    char *request_id;               /* or NULL */
};
void store_sweep_free(struct store_sweep *sw); /* the strings, not sw */
void store_sweeps_free(struct store_sweep **sw, size_t n);

/* One trial to create: its full spec (canonical JSON) and the values drawn
 * for it ({"optimizer.lr": 0.003, ...}). */
struct store_new_trial {
    const char *spec_json;
    const char *params_json;
    int priority;
    int max_attempts;
    const char *name;
};
/* Creates the sweep row and its trials, each an ordinary queued train job
 * tagged with the sweep, in one write (sw's id, derived fields ignored).
 * request_id as for store_job_submit_spec: a repeat with the same id and the
 * same spec and space makes nothing new (*existed true, *id the first one);
 * another sweep under the id is -EEXIST. */
int store_sweep_create(struct store *s, const struct store_sweep *sw,
                       const struct store_new_trial *trials, size_t n, const char *request_id,
                       int64_t *id, bool *existed);
int store_sweep_get(struct store *s, int64_t id, struct store_sweep *out); /* -ENOENT */
/* All sweeps, newest first (limit 0 = all). Free: store_sweeps_free. */
int store_sweeps_list(struct store *s, int64_t limit, struct store_sweep **out, size_t *n);
int store_sweep_set_cancelled(struct store *s, int64_t id);
/* Deletes a sweep with its trials and decisions. keep_runs false: its
 * trial runs go too, as store_run_delete deletes them; true: they stay as
 * ordinary runs (jobs.sweep NULL; experiment, tags, params and metrics
 * kept). *runs (malloc'd, ascending, may be NULL) gets the trial runs
 * either way. One write section; -ENOENT if there is no such sweep.
 * Callers refuse sweeps with live trials themselves (the broker owns them). */
int store_sweep_delete(struct store *s, int64_t id, bool keep_runs, int64_t **runs, size_t *n);

struct store_trial {
    int64_t sweep;
    int trial;         /* 0-based, in the order the space yields them */
    int64_t job;       /* its job (= run); 0 if the run was deleted */
    char *params_json; /* the values drawn for it */
    enum store_state state;
    int64_t epochs; /* epochs it reported */
    int rung;       /* ASHA: rungs passed (continued from); median: epochs judged */
    bool has_best;
    double best; /* its best value of the sweep's metric */
    char *error; /* why it stopped or failed, or NULL */
};
/* A sweep's trials, the best first (by the sweep's metric and mode; trials
 * without a value last, then by trial number). Free: store_trials_free. */
int store_sweep_trials(struct store *s, int64_t id, struct store_trial **out, size_t *n);
void store_trials_free(struct store_trial *t, size_t n);

/* Scheduler decisions, one per (sweep, rung, trial): ASHA's rung k is at
 * epoch grace_period * reduction_factor^k; the median rule's rung is the
 * epoch itself. value NAN: the trial reported no finite value. */
struct store_decision {
    int rung;
    int64_t epoch;
    int trial;
    bool has_value;
    double value;
    bool stop;
};
/* The decision already taken for this trial at this rung: 0 (filled),
 * -ENOENT none yet. */
int store_decision_get(struct store *s, int64_t sweep, int rung, int trial,
                       struct store_decision *out);
int store_decision_put(struct store *s, int64_t sweep, const struct store_decision *d);
/* The values recorded at a rung by trials other than `trial` (NAN for a
 * trial without a finite value). *vals malloc'd (free()). */
int store_rung_values(struct store *s, int64_t sweep, int rung, int trial, double **vals,
                      size_t *n);
/* The trial number of a job, and its sweep: -ENOENT if it is no trial. */
int store_trial_of_job(struct store *s, int64_t job, int64_t *sweep, int *trial);
/* The non-terminal trial jobs of a sweep, ascending. *ids malloc'd. */
int store_sweep_live_jobs(struct store *s, int64_t sweep, int64_t **ids, size_t *n);

/* PRAGMA integrity_check; 0 if "ok", else -EIO with the first problem. */
int store_integrity_check(struct store *s);

#endif
