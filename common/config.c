#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "space.h"

enum config_type { T_STR, T_INT, T_SYNC, T_LEVEL, T_ENDPOINT };

/* One row per key, in the order of enum config_key. */
static const struct config_keydef {
    const char *name;
    const char *env;   /* MLQ_ + name upper-cased, dots as underscores */
    const char *alias; /* short environment name, or NULL */
    enum config_type type;
    size_t off;  /* offsetof the field in struct config */
    size_t size; /* T_STR: the field's size */
    int min, max;
    bool empty_ok;
} keys[CONFIG_NKEYS] = {
    [CONFIG_BROKER_ENDPOINT] = {"broker.endpoint", "MLQ_BROKER_ENDPOINT", "MLQ_BROKER", T_ENDPOINT,
                                offsetof(struct config, broker_endpoint), CONFIG_STR_MAX},
    [CONFIG_BROKER_BIND] = {"broker.bind", "MLQ_BROKER_BIND", NULL, T_ENDPOINT,
                            offsetof(struct config, broker_bind), CONFIG_STR_MAX},
    [CONFIG_DB_PATH] = {"db.path", "MLQ_DB_PATH", "MLQ_DB", T_STR, offsetof(struct config, db_path),
                        CONFIG_STR_MAX, .empty_ok = true},
    [CONFIG_DB_SYNC] = {"db.sync", "MLQ_DB_SYNC", NULL, T_SYNC, offsetof(struct config, db_sync),
                        sizeof(((struct config *)0)->db_sync)},
    [CONFIG_DATA_ROOT] = {"data.root", "MLQ_DATA_ROOT", NULL, T_STR,
                          offsetof(struct config, data_root), CONFIG_STR_MAX},
    [CONFIG_LOG_LEVEL] = {"log.level", "MLQ_LOG_LEVEL", NULL, T_LEVEL,
                          offsetof(struct config, log_level)},
    [CONFIG_HEARTBEAT_INTERVAL_MS] = {"heartbeat.interval_ms", "MLQ_HEARTBEAT_INTERVAL_MS", NULL,
                                      T_INT, offsetof(struct config, heartbeat_interval_ms), 0, 10,
                                      3600000},
    [CONFIG_HEARTBEAT_LIVENESS] = {"heartbeat.liveness", "MLQ_HEARTBEAT_LIVENESS", NULL, T_INT,
                                   offsetof(struct config, heartbeat_liveness), 0, 1, 1000},
    [CONFIG_TRAINER_THREADS] = {"trainer.threads", "MLQ_TRAINER_THREADS", NULL, T_INT,
                                offsetof(struct config, trainer_threads), 0, 0, 4096},
    [CONFIG_TRAINER_MEMORY_BUDGET_MB] = {"trainer.memory_budget_mb", "MLQ_TRAINER_MEMORY_BUDGET_MB",
                                         NULL, T_INT,
                                         offsetof(struct config, trainer_memory_budget_mb), 0, 1,
                                         INT_MAX},
    [CONFIG_TRAINER_NAME] = {"trainer.name", "MLQ_TRAINER_NAME", NULL, T_STR,
                             offsetof(struct config, trainer_name),
                             sizeof(((struct config *)0)->trainer_name)},
    [CONFIG_CHECKPOINT_KEEP] = {"checkpoint.keep", "MLQ_CHECKPOINT_KEEP", NULL, T_INT,
                                offsetof(struct config, checkpoint_keep), 0, 0, 1000000},
    [CONFIG_SERVE_DEADLINE_MS] = {"serve.deadline_ms", "MLQ_SERVE_DEADLINE_MS", NULL, T_INT,
                                  offsetof(struct config, serve_deadline_ms), 0, 1, 600000},
#define KEY_PATH(id, name, env, field)                                                             \
    [id] = {                                                                                       \
        name, env, NULL, T_STR, offsetof(struct config, field), CONFIG_STR_MAX, .empty_ok = true}
    KEY_PATH(CONFIG_BROKER_SECRET_KEY, "broker.secret_key", "MLQ_BROKER_SECRET_KEY",
             broker_secret_key),
    KEY_PATH(CONFIG_BROKER_USERS_DIR, "broker.users_dir", "MLQ_BROKER_USERS_DIR", broker_users_dir),
    KEY_PATH(CONFIG_BROKER_TRAINERS_DIR, "broker.trainers_dir", "MLQ_BROKER_TRAINERS_DIR",
             broker_trainers_dir),
    KEY_PATH(CONFIG_BROKER_PUBLIC_KEY, "broker.public_key", "MLQ_BROKER_PUBLIC_KEY",
             broker_public_key),
    KEY_PATH(CONFIG_CLIENT_SECRET_KEY, "client.secret_key", "MLQ_CLIENT_SECRET_KEY",
             client_secret_key),
    KEY_PATH(CONFIG_TRAINER_SECRET_KEY, "trainer.secret_key", "MLQ_TRAINER_SECRET_KEY",
             trainer_secret_key),
    KEY_PATH(CONFIG_TRAINER_DATA_ROOTS, "trainer.data_roots", "MLQ_TRAINER_DATA_ROOTS",
             trainer_data_roots),
    KEY_PATH(CONFIG_TRAINER_OUTPUTS_DIR, "trainer.outputs_dir", "MLQ_TRAINER_OUTPUTS_DIR",
             trainer_outputs_dir),
    KEY_PATH(CONFIG_BROKER_DATASETS_DIR, "broker.datasets_dir", "MLQ_BROKER_DATASETS_DIR",
             broker_datasets_dir),
    [CONFIG_TRAINER_DATASET_CACHE_DIR] = {"trainer.dataset_cache_dir",
                                          "MLQ_TRAINER_DATASET_CACHE_DIR", NULL, T_STR,
                                          offsetof(struct config, trainer_dataset_cache_dir),
                                          CONFIG_STR_MAX},
#undef KEY_PATH
    [CONFIG_TRAINER_DATASET_CACHE_MB] = {"trainer.dataset_cache_mb", "MLQ_TRAINER_DATASET_CACHE_MB",
                                         NULL, T_INT,
                                         offsetof(struct config, trainer_dataset_cache_mb), 0, 1,
                                         INT_MAX},
    [CONFIG_SWEEP_MAX_TRIALS] = {"sweep.max_trials", "MLQ_SWEEP_MAX_TRIALS", NULL, T_INT,
                                 offsetof(struct config, sweep_max_trials), 0, 1,
                                 SPACE_MAX_TRIALS_CAP},
};

static const char *level_names[] = {[LOG_LVL_ERROR] = "error",
                                    [LOG_LVL_WARN] = "warn",
                                    [LOG_LVL_INFO] = "info",
                                    [LOG_LVL_DEBUG] = "debug"};

const char *config_key_name(enum config_key k)
{
    return (unsigned)k < CONFIG_NKEYS ? keys[k].name : NULL;
}

const char *config_key_env(enum config_key k)
{
    return (unsigned)k < CONFIG_NKEYS ? keys[k].env : NULL;
}

const char *config_source_name(enum config_source src)
{
    switch (src) {
    case CONFIG_SRC_DEFAULT:
        return "default";
    case CONFIG_SRC_FILE:
        return "file";
    case CONFIG_SRC_ENV:
        return "env";
    case CONFIG_SRC_FLAG:
        return "flag";
    case CONFIG_SRC_UP:
        return "up";
    }
    return "?";
}

static int find_key(const char *name)
{
    for (int k = 0; k < CONFIG_NKEYS; k++)
        if (strcmp(keys[k].name, name) == 0) return k;
    return -1;
}

void config_init(struct config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->broker_endpoint, sizeof c->broker_endpoint, "tcp://127.0.0.1:5555");
    snprintf(c->broker_bind, sizeof c->broker_bind, "tcp://127.0.0.1:5555");
    snprintf(c->db_sync, sizeof c->db_sync, "full");
    /* Under systemd (StateDirectory=mlq) the database and the datasets live in
     * the service's state directory; for a person, the store picks the path
     * ("") and relative dataset paths are relative to where they are. */
    const char *state = getenv("STATE_DIRECTORY");
    if (state && *state) {
        int n = (int)strcspn(state, ":");
        snprintf(c->db_path, sizeof c->db_path, "%.*s/mlq.db", n, state);
        snprintf(c->data_root, sizeof c->data_root, "%.*s/datasets", n, state);
        snprintf(c->trainer_outputs_dir, sizeof c->trainer_outputs_dir, "%.*s/outputs", n, state);
        /* Not datasets/: that is data.root here, and the broker's store
         * (broker.datasets_dir) when it runs on the same host. */
        snprintf(c->trainer_dataset_cache_dir, sizeof c->trainer_dataset_cache_dir,
                 "%.*s/dataset-cache", n, state);
        /* The package makes the services' keys (scripts/deb/postinst): where
           they are, the services use them. */
        if (access(CONFIG_SERVICE_KEYS "/broker.key_secret", F_OK) == 0)
            snprintf(c->broker_secret_key, sizeof c->broker_secret_key, "%s",
                     CONFIG_SERVICE_KEYS "/broker.key_secret");
        if (access(CONFIG_SERVICE_KEYS "/trainer.key_secret", F_OK) == 0)
            snprintf(c->trainer_secret_key, sizeof c->trainer_secret_key, "%s",
                     CONFIG_SERVICE_KEYS "/trainer.key_secret");
    } else {
        snprintf(c->data_root, sizeof c->data_root, ".");
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (xdg && xdg[0] == '/')
            snprintf(c->trainer_dataset_cache_dir, sizeof c->trainer_dataset_cache_dir,
                     "%s/mlq/datasets", xdg);
        else
            snprintf(c->trainer_dataset_cache_dir, sizeof c->trainer_dataset_cache_dir,
                     "%s/.cache/mlq/datasets", home && home[0] ? home : "/tmp");
    }
    c->log_level = LOG_LVL_INFO;
    c->heartbeat_interval_ms = 1000;
    c->heartbeat_liveness = 3;
    c->trainer_threads = 0;
    c->trainer_memory_budget_mb = 1024;
    c->trainer_dataset_cache_mb = 10240;
    char host[128];
    if (gethostname(host, sizeof host) < 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(c->trainer_name, sizeof c->trainer_name, "%s-%ld", host, (long)getpid());
    c->checkpoint_keep = 3;
    c->serve_deadline_ms = 5000;
    c->sweep_max_trials = SPACE_MAX_TRIALS;
}

/* Validates text for key k and stores it; the message names only the key and
 * the reason, callers prefix the place. */
static int set_value(struct config *c, int k, const char *text, char *err, size_t errlen)
{
    const struct config_keydef *d = &keys[k];
    char *field = (char *)c + d->off;

    if (!*text && !d->empty_ok) {
        snprintf(err, errlen, "%s: empty value", d->name);
        return -EINVAL;
    }
    switch (d->type) {
    case T_ENDPOINT:
        if (!strstr(text, "://")) {
            snprintf(err, errlen,
                     "%s: '%s' is not an endpoint; write tcp://HOST:PORT or ipc:///PATH", d->name,
                     text);
            return -EINVAL;
        }
        /* fall through */
    case T_STR:
        if (strlen(text) >= d->size) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", d->name, d->size - 1);
            return -EINVAL;
        }
        memcpy(field, text, strlen(text) + 1);
        return 0;
    case T_SYNC:
        if (strcmp(text, "full") != 0 && strcmp(text, "normal") != 0) {
            snprintf(err, errlen, "%s: '%s' is not 'full' or 'normal'", d->name, text);
            return -EINVAL;
        }
        memcpy(field, text, strlen(text) + 1);
        return 0;
    case T_LEVEL: {
        enum log_level level;
        if (log_parse_level(text, &level) < 0) {
            snprintf(err, errlen, "%s: '%s' is not error, warn, info or debug", d->name, text);
            return -EINVAL;
        }
        memcpy(field, &level, sizeof level);
        return 0;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (errno || end == text || *end || v < d->min || v > d->max) {
            snprintf(err, errlen, "%s: '%s' is not an integer from %d to %d", d->name, text, d->min,
                     d->max);
            return -EINVAL;
        }
        int iv = (int)v;
        memcpy(field, &iv, sizeof iv);
        return 0;
    }
    }
    return -EINVAL;
}

int config_set(struct config *c, const char *key, const char *value, enum config_source src,
               char *err, size_t errlen)
{
    int k = find_key(key);
    if (k < 0) {
        snprintf(err, errlen, "unknown configuration key '%s' (run 'mlq config' for the list)",
                 key);
        return -ENOENT;
    }
    int rc = set_value(c, k, value, err, errlen);
    if (rc < 0) return rc;
    c->origin[k] = (struct config_origin){.src = src};
    return 0;
}

int config_get(const struct config *c, const char *key, char *buf, size_t len)
{
    int k = find_key(key);
    if (k < 0) return -ENOENT;
    const char *field = (const char *)c + keys[k].off;
    switch (keys[k].type) {
    case T_INT: {
        int v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, len, "%d", v);
        break;
    }
    case T_LEVEL: {
        enum log_level level;
        memcpy(&level, field, sizeof level);
        snprintf(buf, len, "%s", level_names[level]);
        break;
    }
    default:
        snprintf(buf, len, "%s", field);
    }
    return 0;
}

int config_source(const struct config *c, const char *key)
{
    int k = find_key(key);
    return k < 0 ? -1 : (int)c->origin[k].src;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static int load_file(struct config *c, const char *path, bool must_exist, char *err, size_t errlen)
{
    if (strlen(path) >= sizeof c->file) {
        snprintf(err, errlen, "%.64s...: config file path too long", path);
        return -ENAMETOOLONG;
    }
    snprintf(c->file, sizeof c->file, "%s", path);
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        if (e == ENOENT && !must_exist) return 0;
        snprintf(err, errlen, "%s: cannot open the config file: %s", path, strerror(e));
        return -e;
    }
    c->file_found = true;

    int rc = 0, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    char msg[CONFIG_STR_MAX + 128];
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        /* '#' starts a comment at the start of a line or after blank space,
         * so that values may still contain '#'. */
        for (char *p = line; *p; p++) {
            if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
                *p = '\0';
                break;
            }
        }
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = -EINVAL;
            goto out;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        int k = find_key(key);
        if (k < 0) {
            snprintf(err, errlen, "%s:%d: unknown key '%s' (docs/configuration.md lists them)",
                     path, lineno, key);
            rc = -EINVAL;
            goto out;
        }
        if (set_value(c, k, value, msg, sizeof msg) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            rc = -EINVAL;
            goto out;
        }
        c->origin[k] = (struct config_origin){.src = CONFIG_SRC_FILE, .line = lineno};
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -EIO;
    }
out:
    free(line);
    fclose(f);
    return rc;
}

static int load_env(struct config *c, char *err, size_t errlen)
{
    char msg[CONFIG_STR_MAX + 128];
    for (int k = 0; k < CONFIG_NKEYS; k++) {
        /* The alias first, so the long name wins when both are set. */
        const char *names[2] = {keys[k].alias, keys[k].env};
        for (int i = 0; i < 2; i++) {
            const char *v = names[i] ? getenv(names[i]) : NULL;
            if (!v || !*v) continue;
            if (set_value(c, k, v, msg, sizeof msg) < 0) {
                snprintf(err, errlen, "environment %s: %s", names[i], msg);
                return -EINVAL;
            }
            c->origin[k] = (struct config_origin){.src = CONFIG_SRC_ENV, .env = names[i]};
        }
    }
    return 0;
}

int config_load(struct config *c, const char *file, char *err, size_t errlen)
{
    config_init(c);
    const char *named = file ? file : getenv("MLQ_CONFIG");
    if (named && !*named) named = NULL;
    int rc = load_file(c, named ? named : CONFIG_DEFAULT_FILE, named != NULL, err, errlen);
    if (rc < 0) return rc;
    return load_env(c, err, errlen);
}

static void describe_origin(const struct config *c, int k, char *buf, size_t len)
{
    const struct config_origin *o = &c->origin[k];
    switch (o->src) {
    case CONFIG_SRC_FILE:
        snprintf(buf, len, "%s:%d", c->file, o->line);
        break;
    case CONFIG_SRC_ENV:
        snprintf(buf, len, "%s", o->env ? o->env : "environment");
        break;
    case CONFIG_SRC_UP:
        snprintf(buf, len, "%s (mlq up, pid %ld)", c->up_file, c->up_pid);
        break;
    case CONFIG_SRC_DEFAULT:
        if (k == CONFIG_DB_PATH && !c->db_path[0])
            snprintf(buf, len, "(empty: the store's default path)");
        else if (k == CONFIG_DATA_ROOT && strcmp(c->data_root, ".") == 0)
            snprintf(buf, len, "(the current directory)");
        else
            buf[0] = '\0';
        break;
    default:
        buf[0] = '\0';
    }
}

static int dump_json(const struct config *c, FILE *out)
{
    int rc = -EIO;
    json_t *root = json_object(), *values = json_object();
    if (!root || !values) goto out;
    json_object_set_new(root, "file", c->file[0] ? json_string(c->file) : json_null());
    json_object_set_new(root, "file_found", json_boolean(c->file_found));
    for (int k = 0; k < CONFIG_NKEYS; k++) {
        char value[CONFIG_STR_MAX], where[CONFIG_STR_MAX + 32];
        config_get(c, keys[k].name, value, sizeof value);
        describe_origin(c, k, where, sizeof where);
        json_t *v =
            keys[k].type == T_INT ? json_integer(strtol(value, NULL, 10)) : json_string(value);
        json_t *entry = json_pack("{s:o, s:s, s:s}", "value", v, "source",
                                  config_source_name(c->origin[k].src), "where", where);
        if (!entry || json_object_set_new(values, keys[k].name, entry) < 0) goto out;
    }
    json_object_set(root, "values", values);
    if (json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) goto out;
    fputc('\n', out);
    rc = 0;
out:
    json_decref(values);
    json_decref(root);
    return rc;
}

int config_dump(const struct config *c, FILE *out, bool json)
{
    if (json) return dump_json(c, out);
    fprintf(out, "# config file: %s%s\n", c->file[0] ? c->file : "(none)",
            c->file_found ? "" : " (not found; defaults apply)");
    for (int k = 0; k < CONFIG_NKEYS; k++) {
        char value[CONFIG_STR_MAX], where[CONFIG_STR_MAX + 32];
        config_get(c, keys[k].name, value, sizeof value);
        describe_origin(c, k, where, sizeof where);
        fprintf(out, "%-25s = %-24s # %s%s%s\n", keys[k].name, value,
                config_source_name(c->origin[k].src), where[0] ? " " : "", where);
    }
    return ferror(out) ? -EIO : 0;
}

int config_load_with_flags(struct config *c, const char *file,
                           const char *const flags[CONFIG_NKEYS], char *err, size_t errlen)
{
    int rc = config_load(c, file, err, errlen);
    for (int k = 0; rc == 0 && k < CONFIG_NKEYS; k++)
        if (flags[k])
            rc = config_set(c, config_key_name((enum config_key)k), flags[k], CONFIG_SRC_FLAG, err,
                            errlen);
    return rc;
}
