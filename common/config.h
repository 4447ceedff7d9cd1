/* Configuration shared by mlq, mlq-broker and mlq-trainer.
 *
 * Each value comes from, in increasing precedence: its built-in default, the
 * config file (/etc/mlq/mlq.conf, or the file named by MLQ_CONFIG), the
 * environment (MLQ_ + the key upper-cased with dots as underscores, plus the
 * aliases MLQ_BROKER and MLQ_DB), and command-line flags (config_set). The
 * keys, defaults and file format are documented in docs/configuration.md.
 *
 * Typical use in a program's main():
 *
 *     struct config cfg;
 *     char err[512];
 *     if (config_load(&cfg, NULL, err, sizeof err) < 0) { fprintf(stderr, "%s\n", err); ... }
 *     if (broker_flag && config_set(&cfg, "broker.endpoint", broker_flag, CONFIG_SRC_FLAG,
 *                                   err, sizeof err) < 0) ...
 *     connect_to(cfg.broker_endpoint);
 */
#ifndef MLQ_CONFIG_H
#define MLQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_DEFAULT_FILE "/etc/mlq/mlq.conf"
#define CONFIG_SERVICE_KEYS "/etc/mlq" /* the services' keys (docs/security.md) */
#define CONFIG_STR_MAX 1024            /* longest string value, NUL included */

enum config_source {
    CONFIG_SRC_DEFAULT = 0,
    CONFIG_SRC_FILE,
    CONFIG_SRC_ENV,
    CONFIG_SRC_FLAG,
    /* A running mlq up's broker.endpoint and db.path (common/up_state.h):
     * above the defaults only, below the file, environment and flags. */
    CONFIG_SRC_UP,
};

enum config_key {
    CONFIG_BROKER_ENDPOINT,
    CONFIG_BROKER_BIND,
    CONFIG_DB_PATH,
    CONFIG_DB_SYNC,
    CONFIG_DATA_ROOT,
    CONFIG_LOG_LEVEL,
    CONFIG_HEARTBEAT_INTERVAL_MS,
    CONFIG_HEARTBEAT_LIVENESS,
    CONFIG_TRAINER_THREADS,
    CONFIG_TRAINER_MEMORY_BUDGET_MB,
    CONFIG_TRAINER_NAME,
    CONFIG_CHECKPOINT_KEEP,
    CONFIG_BROKER_SECRET_KEY,
    CONFIG_BROKER_USERS_DIR,
    CONFIG_BROKER_TRAINERS_DIR,
    CONFIG_BROKER_PUBLIC_KEY,
    CONFIG_CLIENT_SECRET_KEY,
    CONFIG_TRAINER_SECRET_KEY,
    CONFIG_TRAINER_DATA_ROOTS,
    CONFIG_TRAINER_OUTPUTS_DIR,
    CONFIG_SERVE_DEADLINE_MS,
    CONFIG_SWEEP_MAX_TRIALS,
    CONFIG_BROKER_DATASETS_DIR,
    CONFIG_TRAINER_DATASET_CACHE_DIR,
    CONFIG_TRAINER_DATASET_CACHE_MB,
    CONFIG_NKEYS
};

/* Where one value came from. */
struct config_origin {
    enum config_source src;
    int line;        /* CONFIG_SRC_FILE: line in config.file */
    const char *env; /* CONFIG_SRC_ENV: the variable's name (static) */
};

/* The effective configuration: plain fields, owned by the struct (no close). */
struct config {
    char broker_endpoint[CONFIG_STR_MAX]; /* where clients and trainers connect */
    char broker_bind[CONFIG_STR_MAX];     /* where the broker listens */
    char db_path[CONFIG_STR_MAX];         /* "" = the store's default path */
    char db_sync[8];                      /* "full" or "normal" */
    char data_root[CONFIG_STR_MAX];       /* base of relative dataset paths */
    enum log_level log_level;
    int heartbeat_interval_ms;
    int heartbeat_liveness; /* missed heartbeats before a peer is dead */
    int trainer_threads;    /* 0 = auto */
    int trainer_memory_budget_mb;
    char trainer_name[256];
    int checkpoint_keep;   /* checkpoints kept per run; 0 = all */
    int serve_deadline_ms; /* an infer request's deadline when it names none (docs/serving.md) */
    int sweep_max_trials;  /* trials one sweep may have (the broker's limit) */
    /* CurveZMQ (docs/security.md); "" = unset. */
    char broker_secret_key[CONFIG_STR_MAX];   /* the broker's own key file: CURVE on */
    char broker_users_dir[CONFIG_STR_MAX];    /* users' public keys ("": next to the secret) */
    char broker_trainers_dir[CONFIG_STR_MAX]; /* trainers' public keys (the same) */
    char broker_public_key[CONFIG_STR_MAX];   /* clients pin it: Z85 text or a file */
    char client_secret_key[CONFIG_STR_MAX];   /* mlq's key ("": ~/.config/mlq/mlq.key_secret) */
    char trainer_secret_key[CONFIG_STR_MAX];  /* mlq-trainer's key */
    char trainer_data_roots[CONFIG_STR_MAX];  /* more dataset roots, ':'-separated */
    char trainer_outputs_dir[CONFIG_STR_MAX]; /* predict outputs: only new files under it */
    char broker_datasets_dir[CONFIG_STR_MAX]; /* pushed datasets ("": datasets/ beside the db) */
    char trainer_dataset_cache_dir[CONFIG_STR_MAX]; /* fetched datasets (trainer/dscache.h) */
    int trainer_dataset_cache_mb;                   /* its size limit */

    char file[CONFIG_STR_MAX];    /* the config file consulted ("" = none) */
    bool file_found;              /* false when the default file does not exist */
    char up_file[CONFIG_STR_MAX]; /* the mlq up state applied (up_state_apply), "" = none */
    long up_pid;                  /* that mlq up's process */
    struct config_origin origin[CONFIG_NKEYS];
};

/* Fills every field with its default; all sources become CONFIG_SRC_DEFAULT.
 * Under systemd with StateDirectory= ($STATE_DIRECTORY set) db.path defaults
 * to $STATE_DIRECTORY/mlq.db, data.root to $STATE_DIRECTORY/datasets,
 * trainer.outputs_dir to $STATE_DIRECTORY/outputs,
 * trainer.dataset_cache_dir to $STATE_DIRECTORY/dataset-cache (else
 * $XDG_CACHE_HOME/mlq/datasets or ~/.cache/mlq/datasets), and broker.secret_key and
 * trainer.secret_key to /etc/mlq/broker.key_secret and trainer.key_secret
 * where those files exist. */
void config_init(struct config *c);

/* config_init, then the file, then the environment. file NULL means MLQ_CONFIG
 * if set, else CONFIG_DEFAULT_FILE; a missing default file is not an error, a
 * missing named file is. Returns 0, or -errno with err naming file:line and the
 * reason (unknown key, bad value, unreadable file) or the variable. */
int config_load(struct config *c, const char *file, char *err, size_t errlen);

/* config_load, then flags[k] (when not NULL) for each key k as
 * CONFIG_SRC_FLAG: what a program's main does with its command line. */
int config_load_with_flags(struct config *c, const char *file,
                           const char *const flags[CONFIG_NKEYS], char *err, size_t errlen);
/* Sets one key from its text form, validated as in the file, and records src
 * (use CONFIG_SRC_FLAG for command-line flags). Returns 0 or -EINVAL/-ENOENT
 * (unknown key) with a message in err. */
int config_set(struct config *c, const char *key, const char *value, enum config_source src,
               char *err, size_t errlen);

/* The text form of a key's value into buf. Returns 0 or -ENOENT (unknown key). */
int config_get(const struct config *c, const char *key, char *buf, size_t len);

/* Where a key's value came from; -1 for an unknown key. */
int config_source(const struct config *c, const char *key);
/* "default", "file", "env", "flag" or "up". */
const char *config_source_name(enum config_source src);

/* Key names, in documentation order, and their environment variables. */
const char *config_key_name(enum config_key k);
const char *config_key_env(enum config_key k);

/* Every key with its value and origin: aligned "key = value  # origin" lines,
 * or with json one object {"file": ..., "file_found": ..., "values": {key:
 * {"value", "source", "where"}}}. Returns 0 or -EIO. */
int config_dump(const struct config *c, FILE *out, bool json);

#endif
