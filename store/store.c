/* The store: opening, the schema and its migrations, the statement cache,
 * transactions. Jobs live in store_jobs.c, metrics, checkpoints, events and
 * trainers in store_data.c. */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* 'mlq1' in PRAGMA application_id marks our files for file(1) and for us. */
#define STORE_APPLICATION_ID 0x6d6c7131
#define STORE_BUSY_TIMEOUT_MS 10000

/* migrations[v] takes a database from version v to v + 1. Append only: a
 * released migration is never edited, so every older file upgrades the same. */
static const char *const migrations[] = {
    /* 0 -> 1: the first schema (docs/schema.md). */
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL CHECK (kind IN ('train','eval','predict')),"
    "  state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts INTEGER NOT NULL DEFAULT 3,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  spec TEXT NOT NULL,"
    "  trainer TEXT,"
    "  run INTEGER REFERENCES jobs(id) ON DELETE SET NULL,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  submitted REAL NOT NULL,"
    "  started REAL,"
    "  finished REAL,"
    "  error TEXT,"
    "  result TEXT"
    ");"
    "CREATE INDEX jobs_queue ON jobs(state, priority DESC, id);"
    "CREATE INDEX jobs_run ON jobs(run) WHERE run IS NOT NULL;"
    "CREATE TABLE params ("
    "  run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run, key)"
    ") WITHOUT ROWID;"
    "CREATE TABLE metrics ("
    "  run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  value REAL,"
    "  time REAL NOT NULL,"
    "  PRIMARY KEY (run, key, step)"
    ") WITHOUT ROWID;"
    "CREATE TABLE final_metrics ("
    "  run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  value REAL,"
    "  time REAL NOT NULL,"
    "  PRIMARY KEY (run, key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX final_metrics_key_value ON final_metrics(key, value);"
    /* final_metrics follows metrics even for rows written with sqlite3. */
    "CREATE TRIGGER metrics_final_insert AFTER INSERT ON metrics BEGIN"
    "  INSERT INTO final_metrics(run, key, step, epoch, value, time)"
    "  VALUES (NEW.run, NEW.key, NEW.step, NEW.epoch, NEW.value, NEW.time)"
    "  ON CONFLICT(run, key) DO UPDATE SET step = excluded.step, epoch = excluded.epoch,"
    "    value = excluded.value, time = excluded.time WHERE excluded.step >= final_metrics.step;"
    "END;"
    "CREATE TRIGGER metrics_final_update AFTER UPDATE ON metrics BEGIN"
    "  INSERT INTO final_metrics(run, key, step, epoch, value, time)"
    "  VALUES (NEW.run, NEW.key, NEW.step, NEW.epoch, NEW.value, NEW.time)"
    "  ON CONFLICT(run, key) DO UPDATE SET step = excluded.step, epoch = excluded.epoch,"
    "    value = excluded.value, time = excluded.time WHERE excluded.step >= final_metrics.step;"
    "END;"
    "CREATE TABLE checkpoints ("
    "  id INTEGER PRIMARY KEY,"
    "  run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  epoch INTEGER NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  crc32 INTEGER NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  time REAL NOT NULL,"
    "  metric REAL,"
    "  blob BLOB NOT NULL," /* last, so listing the other columns skips its pages */
    "  UNIQUE (run, epoch, step)"
    ");"
    "CREATE INDEX checkpoints_run_step ON checkpoints(run, step);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  run INTEGER REFERENCES jobs(id) ON DELETE CASCADE,"
    "  time REAL NOT NULL,"
    "  level TEXT NOT NULL,"
    "  message TEXT NOT NULL"
    ");"
    "CREATE INDEX events_run ON events(run, id);"
    "CREATE TABLE trainers ("
    "  name TEXT PRIMARY KEY,"
    "  host TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL DEFAULT '',"
    "  job INTEGER REFERENCES jobs(id) ON DELETE SET NULL,"
    "  last_heartbeat REAL,"
    "  version TEXT NOT NULL DEFAULT '',"
    "  capabilities TEXT"
    ");",
    /* 1 -> 2: params become a view over jobs.spec (nothing to write per
       submission: ~25 rows a job were a third of the broker's work), and a
       submission may carry a request id that makes its retry idempotent. */
    "DROP TABLE params;"
    "CREATE VIEW params(run, key, value) AS"
    /* The key from path and key: SQLite quotes a fullkey's segments that
       hold anything but letters and digits ($."batch_size"). */
    "  SELECT j.id,"
    "    CASE WHEN t.path = '$' THEN t.key"
    "      ELSE replace(substr(t.path, 3), '\"', '') || '.' || t.key END,"
    "    CASE t.type"
    "      WHEN 'real' THEN printf('%.15g', t.atom)"
    "      WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'"
    "      WHEN 'array' THEN '[' || coalesce((SELECT group_concat("
    "        CASE e.type"
    "          WHEN 'real' THEN printf('%.15g', e.atom)"
    "          WHEN 'text' THEN json_quote(e.atom)"
    "          WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'"
    "          WHEN 'integer' THEN e.atom"
    "          ELSE e.value END, ',') FROM json_each(t.value) e), '') || ']'"
    "      ELSE t.atom END"
    "  FROM jobs j, json_tree(j.spec) t"
    "  WHERE t.type <> 'object' AND instr(t.fullkey, '[') = 0;"
    "ALTER TABLE jobs ADD COLUMN request_id TEXT;"
    "CREATE UNIQUE INDEX jobs_request_id ON jobs(request_id) WHERE request_id IS NOT NULL;",
    /* 2 -> 3: a job's owner, the name of the key that submitted it (issue 11);
       NULL for jobs submitted without keys. */
    "ALTER TABLE jobs ADD COLUMN owner TEXT;",
    /* 3 -> 4: deployments, the models served online (issue 13, docs/serving.md).
       Only these are durable; infer requests never touch the database. */
    "CREATE TABLE deployments ("
    "  name TEXT PRIMARY KEY,"
    "  run INTEGER NOT NULL,"
    "  checkpoint TEXT NOT NULL DEFAULT 'last',"
    "  replicas INTEGER NOT NULL DEFAULT 1 CHECK (replicas >= 1),"
    "  max_batch INTEGER NOT NULL DEFAULT 64 CHECK (max_batch >= 1),"
    "  max_delay_us INTEGER NOT NULL DEFAULT 0 CHECK (max_delay_us >= 0),"
    "  generation INTEGER NOT NULL DEFAULT 1,"
    "  owner TEXT,"
    "  created REAL NOT NULL,"
    "  updated REAL NOT NULL"
    ");",
    /* 4 -> 5: sweeps with their trials and scheduler decisions, the state
       `stopped` of a trial stopped early, experiments, tags and --after
       dependencies (issue 12, docs/sweeps.md). The state's CHECK is widened
       in place (SQLite's documented procedure for changing a CHECK
       constraint; no row is rewritten, and a rebuild of jobs would have to
       copy every column other migrations add). */
    "PRAGMA writable_schema = ON;"
    "UPDATE sqlite_schema SET sql = replace(sql, '''cancelled''))', "
    "  '''cancelled'',''stopped''))') WHERE type = 'table' AND name = 'jobs';"
    "PRAGMA writable_schema = RESET;"
    "CREATE TABLE sweeps ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  experiment TEXT,"
    "  owner TEXT,"
    "  spec TEXT NOT NULL,"
    "  space TEXT NOT NULL,"
    "  seed INTEGER NOT NULL,"
    "  n_trials INTEGER NOT NULL,"
    "  max_parallel INTEGER NOT NULL DEFAULT 0,"
    "  scheduler TEXT NOT NULL CHECK (scheduler IN ('none','asha','median')),"
    "  metric TEXT NOT NULL,"
    "  mode TEXT NOT NULL CHECK (mode IN ('min','max')),"
    "  max_t INTEGER NOT NULL,"
    "  grace_period INTEGER NOT NULL,"
    "  reduction_factor INTEGER NOT NULL,"
    "  min_samples INTEGER NOT NULL,"
    "  cancelled INTEGER NOT NULL DEFAULT 0,"
    "  submitted REAL NOT NULL,"
    "  request_id TEXT"
    ");"
    "CREATE UNIQUE INDEX sweeps_request_id ON sweeps(request_id) WHERE request_id IS NOT NULL;"
    "ALTER TABLE jobs ADD COLUMN sweep INTEGER REFERENCES sweeps(id) ON DELETE SET NULL;"
    "ALTER TABLE jobs ADD COLUMN experiment TEXT;"
    "CREATE INDEX jobs_sweep ON jobs(sweep, state) WHERE sweep IS NOT NULL;"
    "CREATE INDEX jobs_experiment ON jobs(experiment) WHERE experiment IS NOT NULL;"
    "CREATE TABLE sweep_trials ("
    "  sweep INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,"
    "  trial INTEGER NOT NULL,"
    "  job INTEGER UNIQUE REFERENCES jobs(id) ON DELETE SET NULL,"
    "  params TEXT NOT NULL,"
    "  PRIMARY KEY (sweep, trial)"
    ");"
    "CREATE TABLE sweep_decisions ("
    "  sweep INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,"
    "  rung INTEGER NOT NULL,"
    "  trial INTEGER NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  value REAL,"
    "  decision TEXT NOT NULL CHECK (decision IN ('continue','stop')),"
    "  time REAL NOT NULL,"
    "  PRIMARY KEY (sweep, rung, trial)"
    ") WITHOUT ROWID;"
    "CREATE TABLE tags ("
    "  run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run, key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX tags_key_value ON tags(key, value);"
    "CREATE TABLE job_deps ("
    "  job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  after INTEGER NOT NULL,"
    "  PRIMARY KEY (job, after)"
    ") WITHOUT ROWID;"
    "CREATE INDEX job_deps_after ON job_deps(after);",
    /* 5 -> 6: pushed datasets (issue 16, docs/datasets.md): the names over the
       broker's content-addressed objects, and the hash of the data each run
       read (NULL for runs before it and until its trainer reports it). */
    "CREATE TABLE datasets ("
    "  name TEXT PRIMARY KEY,"
    "  sha256 TEXT NOT NULL CHECK (length(sha256) = 64),"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  pushed REAL NOT NULL,"
    "  owner TEXT"
    ");"
    "CREATE INDEX datasets_sha256 ON datasets(sha256);"
    "ALTER TABLE jobs ADD COLUMN dataset_sha256 TEXT;"
    "CREATE INDEX jobs_dataset_sha256 ON jobs(dataset_sha256) WHERE dataset_sha256 IS NOT NULL;",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))
_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION, "one migration per schema version");

#define JOB_COLS                                                                                   \
    "id, kind, state, priority, attempts, max_attempts, name, trainer, run, cancel_requested, "    \
    "submitted, started, finished, spec, error, result, request_id, owner, sweep, experiment, "    \
    "dataset_sha256"
#define CKPT_META_COLS "id, run, epoch, step, crc32, size, time, metric"
#define TERMINAL "('succeeded','failed','cancelled','stopped')"
/* A queued job the broker may dispatch now. Skipped: a trial whose sweep runs
   max_parallel trials already, and a job whose --after jobs have not all
   succeeded. */
#define JOB_STARTABLE                                                                              \
    "(sweep IS NULL OR NOT EXISTS (SELECT 1 FROM sweeps w WHERE w.id = jobs.sweep AND "            \
    "w.max_parallel > 0 AND (SELECT count(*) FROM jobs r WHERE r.sweep = w.id AND r.state = "      \
    "'running') >= w.max_parallel)) AND NOT EXISTS (SELECT 1 FROM job_deps d LEFT JOIN jobs p "    \
    "ON p.id = d.after WHERE d.job = jobs.id AND p.state IS NOT 'succeeded')"

static const char *const stmt_sql[ST_N] = {
    [ST_JOB_INSERT] = "INSERT INTO jobs(kind, state, priority, max_attempts, name, spec, run, "
                      "submitted, request_id, owner, sweep, experiment) "
                      "VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_JOB_BY_REQUEST] = "SELECT id, spec, owner FROM jobs WHERE request_id = ?1",
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [ST_JOB_NEXT] = "SELECT " JOB_COLS " FROM jobs WHERE state = 'queued' AND " JOB_STARTABLE
                    " ORDER BY priority DESC, id LIMIT 1",
    /* The startable jobs ST_JOB_NEXT would pick before job ?1 of priority ?2. */
    [ST_JOB_AHEAD] = "SELECT count(*) FROM jobs WHERE state = 'queued' AND (priority > ?2 OR "
                     "(priority = ?2 AND id < ?1)) AND " JOB_STARTABLE,
    [ST_JOB_IDS_BY_STATE] = "SELECT id FROM jobs WHERE state = ?1 ORDER BY id",
    [ST_JOB_COUNT] = "SELECT state, count(*) FROM jobs GROUP BY state",
    [ST_JOB_RUNNING] = "UPDATE jobs SET state = 'running', trainer = ?2, attempts = attempts + 1, "
                       "started = ?3, finished = NULL WHERE id = ?1",
    /* A trial its scheduler stopped ends `stopped` (with the scheduler's
       reason) whether its trainer confirms the stop or finishes first. */
    [ST_JOB_FINISH] = "UPDATE jobs SET state = CASE WHEN cancel_requested = 2 AND ?2 IN "
                      "('succeeded','cancelled') THEN 'stopped' ELSE ?2 END, error = CASE WHEN "
                      "cancel_requested = 2 AND ?2 IN ('succeeded','cancelled') THEN error ELSE ?3 "
                      "END, finished = ?4 WHERE id = ?1",
    [ST_JOB_REQUEUE] = "UPDATE jobs SET state = 'queued', trainer = NULL, started = NULL, "
                       "cancel_requested = 0 WHERE id = ?1",
    [ST_JOB_CANCEL_REQ] =
        "UPDATE jobs SET cancel_requested = max(cancel_requested, 1) WHERE id = ?1",
    /* Queued jobs one of whose --after jobs ended otherwise or is gone (the
       broker asks every pass: one probe of an index while nothing waits). */
    [ST_DEPS_BROKEN] = "SELECT d.job, d.after, p.state FROM job_deps d JOIN jobs j ON j.id = d.job "
                       "LEFT JOIN jobs p ON p.id = d.after WHERE j.state = 'queued' AND "
                       "(p.id IS NULL OR p.state IN ('failed','cancelled','stopped')) "
                       "ORDER BY d.job, d.after",
    [ST_JOB_STOP_REQ] = "UPDATE jobs SET cancel_requested = 2, error = ?2 WHERE id = ?1",
    [ST_JOB_RESULT] = "UPDATE jobs SET result = ?2 WHERE id = ?1",
    [ST_JOB_DELETE] = "DELETE FROM jobs WHERE id = ?1",
    [ST_PARAMS_LIST] = "SELECT key, value FROM params WHERE run = ?1 ORDER BY key",
    [ST_METRIC_PUT] = "INSERT INTO metrics(run, key, step, epoch, value, time) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(run, key, step) DO UPDATE SET "
                      "epoch = excluded.epoch, value = excluded.value, time = excluded.time",
    [ST_METRICS_ALL] = "SELECT key, step, epoch, value, time FROM metrics WHERE run = ?1 "
                       "ORDER BY key, step",
    [ST_METRICS_KEY] = "SELECT key, step, epoch, value, time FROM metrics "
                       "WHERE run = ?1 AND key = ?2 ORDER BY step",
    [ST_METRICS_SINCE] = "SELECT key, max(step), epoch, value, time FROM metrics "
                         "WHERE run = ?1 AND epoch > ?2 GROUP BY epoch, key ORDER BY epoch, key",
    [ST_METRICS_FINAL] = "SELECT key, step, epoch, value, time FROM final_metrics "
                         "WHERE run = ?1 ORDER BY key",
    [ST_CKPT_PUT] = "INSERT OR REPLACE INTO checkpoints(run, epoch, step, crc32, size, time, "
                    "metric, blob) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_CKPT_LAST] = "SELECT " CKPT_META_COLS ", blob FROM checkpoints WHERE run = ?1 "
                     "ORDER BY step DESC, id DESC LIMIT 1",
    [ST_CKPT_BEST] = "SELECT " CKPT_META_COLS ", blob FROM checkpoints WHERE run = ?1 "
                     "ORDER BY metric IS NULL, metric, step DESC LIMIT 1",
    [ST_CKPT_EPOCH] = "SELECT " CKPT_META_COLS ", blob FROM checkpoints WHERE run = ?1 "
                      "AND epoch = ?2 ORDER BY step DESC LIMIT 1",
    [ST_CKPT_LIST] = "SELECT " CKPT_META_COLS " FROM checkpoints WHERE run = ?1 ORDER BY step, id",
    [ST_CKPT_DELETE] = "DELETE FROM checkpoints WHERE id = ?1",
    /* Everything but the newest ?2 and the best (lowest metric, latest on ties). */
    [ST_CKPT_PRUNE] = "DELETE FROM checkpoints WHERE run = ?1 AND id NOT IN ("
                      "  SELECT id FROM checkpoints WHERE run = ?1 ORDER BY step DESC, id DESC "
                      "  LIMIT ?2) AND id NOT IN ("
                      "  SELECT id FROM checkpoints WHERE run = ?1 AND metric IS NOT NULL "
                      "  ORDER BY metric, step DESC LIMIT 1)",
    [ST_EVENT_ADD] = "INSERT INTO events(run, time, level, message) VALUES (?1, ?2, ?3, ?4)",
    [ST_EVENTS_RUN] = "SELECT run, time, level, message FROM events WHERE run IS ?1 ORDER BY id",
    [ST_TRAINER_UPSERT] =
        "INSERT INTO trainers(name, host, state, job, last_heartbeat, version, capabilities) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(name) DO UPDATE SET host = excluded.host, "
        "state = excluded.state, job = excluded.job, last_heartbeat = excluded.last_heartbeat, "
        "version = excluded.version, capabilities = excluded.capabilities",
    [ST_TRAINER_DELETE] = "DELETE FROM trainers WHERE name = ?1",
    [ST_TRAINERS_PRUNE] =
        "DELETE FROM trainers WHERE name IN (SELECT name FROM trainers WHERE job IS NULL AND "
        "name NOT IN (SELECT trainer FROM jobs WHERE state = 'running' AND trainer IS NOT NULL) "
        "ORDER BY last_heartbeat DESC, name LIMIT -1 OFFSET ?1)",
    [ST_TRAINERS_LIST] = "SELECT name, host, state, job, last_heartbeat, version, capabilities "
                         "FROM trainers ORDER BY name",
    [ST_GC_SELECT_OLD] = "SELECT id FROM jobs WHERE state IN " TERMINAL " AND finished < ?1",
    [ST_GC_SELECT_BEYOND] =
        "SELECT id FROM jobs WHERE state IN " TERMINAL " ORDER BY id DESC LIMIT -1 OFFSET ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_SAVEPOINT] = "SAVEPOINT store_write",
    [ST_RELEASE] = "RELEASE store_write",
};

static double clock_default(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int errno_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
        return -EINVAL;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_FULL:
        return -ENOSPC;
    default:
        return -EIO;
    }
}

int store_fail(struct store *s, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return err;
}

int store_fail_sql(struct store *s, int rc, const char *what)
{
    int err = errno_of(rc);
    if (err == 0) err = -EIO;
    return store_fail(s, err, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

const char *store_errmsg(const struct store *s)
{
    return s ? s->errmsg : "no store";
}

int store_schema_version(const struct store *s)
{
    return s->version;
}

sqlite3_stmt *store_stmt(struct store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->stmt[id];
    if (!st) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmt[id], NULL);
        if (rc != SQLITE_OK) {
            store_fail_sql(s, rc, "prepare");
            return NULL;
        }
        return s->stmt[id];
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

int store_step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : store_fail_sql(s, rc, what);
    sqlite3_reset(st);
    return ret;
}

sqlite3_stmt *store_prepare(struct store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        store_fail_sql(s, rc, "prepare");
        return NULL;
    }
    return st;
}

int store_step_finalize(struct store *s, sqlite3_stmt *st, const char *what)
{
    int ret = store_step_done(s, st, what);
    sqlite3_finalize(st);
    return ret;
}

int store_grow(struct store *s, void **p, size_t *cap, size_t len, size_t size, size_t first)
{
    if (len < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : first;
    void *q = ncap <= SIZE_MAX / size ? realloc(*p, ncap * size) : NULL;
    if (!q) return store_fail(s, -ENOMEM, "%s: out of memory", s->path);
    *p = q;
    *cap = ncap;
    return 0;
}

int store_collect_ids(struct store *s, sqlite3_stmt *st, int64_t **ids, size_t *n, size_t *cap,
                      const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int ret = store_grow(s, (void **)ids, cap, *n, sizeof **ids, 64);
        if (ret) return ret;
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    return rc == SQLITE_DONE ? 0 : store_fail_sql(s, rc, what);
}

int store_collect_pairs(struct store *s, sqlite3_stmt *st, struct store_param **out, size_t *n,
                        const char *what)
{
    struct store_param *p = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&p, &cap, len, sizeof *p, 32)) != 0) break;
        p[len].key = store_col_strdup(st, 0);
        p[len].value = store_col_strdup(st, 1);
        if (!p[len++].key || !p[len - 1].value) {
            ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
            break;
        }
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, what);
    if (ret) {
        store_params_free(p, len);
        return ret;
    }
    *out = p;
    *n = len;
    return 0;
}

static int exec(struct store *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : store_fail_sql(s, rc, what);
}

/* exec() of a cached statement: sqlite3_exec prepares its SQL every call. */
static int exec_stmt(struct store *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = store_stmt(s, id);
    if (!st) return -EIO;
    return store_step_done(s, st, what);
}

int store_begin(struct store *s)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: opened read-only", s->path);
    if (!sqlite3_get_autocommit(s->db))
        return store_fail(s, -EINVAL, "%s: a transaction is already open", s->path);
    return exec_stmt(s, ST_BEGIN, "begin");
}

int store_commit(struct store *s)
{
    if (sqlite3_get_autocommit(s->db))
        return store_fail(s, -EINVAL, "%s: no transaction to commit", s->path);
    int ret = exec_stmt(s, ST_COMMIT, "commit");
    if (ret < 0 && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

int store_rollback(struct store *s)
{
    if (sqlite3_get_autocommit(s->db)) return 0;
    return exec(s, "ROLLBACK", "rollback");
}

bool store_in_transaction(const struct store *s)
{
    return !sqlite3_get_autocommit(s->db);
}

enum { WRITE_OWN_TX = 1, WRITE_SAVEPOINT = 2 };

int store_write_begin(struct store *s)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: opened read-only", s->path);
    if (sqlite3_get_autocommit(s->db)) {
        int ret = exec_stmt(s, ST_BEGIN, "begin");
        return ret < 0 ? ret : WRITE_OWN_TX;
    }
    int ret = exec_stmt(s, ST_SAVEPOINT, "savepoint");
    return ret < 0 ? ret : WRITE_SAVEPOINT;
}

int store_write_end(struct store *s, int token, int rc)
{
    if (token == WRITE_OWN_TX) {
        if (rc == 0) return store_commit(s);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (rc == 0) return exec_stmt(s, ST_RELEASE, "release savepoint");
    sqlite3_exec(s->db, "ROLLBACK TO store_write; RELEASE store_write", NULL, NULL, NULL);
    return rc;
}

char *store_col_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}

void store_col_copy(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

double store_col_time(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? 0 : sqlite3_column_double(st, col);
}

void store_bind_time(sqlite3_stmt *st, int col, double t)
{
    if (t > 0)
        sqlite3_bind_double(st, col, t);
    else
        sqlite3_bind_null(st, col);
}

void store_bind_text_or_null(sqlite3_stmt *st, int col, const char *text)
{
    if (text)
        sqlite3_bind_text(st, col, text, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, col);
}

void store_set_clock(struct store *s, double (*now)(void))
{
    s->now = now ? now : clock_default;
}

double store_now(const struct store *s)
{
    return s->now();
}

void store_set_retention(struct store *s, int keep_last)
{
    s->keep_last = keep_last < 0 ? 0 : keep_last;
}

/* ---- opening --------------------------------------------------------------- */

static int pragma_int(struct store *s, const char *sql, int *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return store_fail_sql(s, rc, sql);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    int ret = rc == SQLITE_ROW ? 0 : store_fail_sql(s, rc, sql);
    sqlite3_finalize(st);
    return ret;
}

int store_make_parent(const char *path)
{
    char dir[1024];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return -ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) return -errno;
    return 0;
}

/* A new database file is made 0640 before SQLite opens it (SQLite's own
 * default is 0644, world-readable); its -wal and -shm files copy its mode. */
static int create_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) return errno == EEXIST ? 0 : -errno;
    close(fd);
    return 0;
}

static int migrate(struct store *s)
{
    if (s->version == 0) {
        /* auto_vacuum can only be chosen before the first table exists. */
        int ret = exec(s, "PRAGMA auto_vacuum = INCREMENTAL", "auto_vacuum");
        if (ret < 0) return ret;
    }
    int ret = exec(s, "BEGIN IMMEDIATE", "begin migration");
    if (ret < 0) return ret;
    /* Re-read under the write lock: another process may have migrated. */
    ret = pragma_int(s, "PRAGMA user_version", &s->version);
    for (int v = s->version; ret == 0 && v < STORE_SCHEMA_VERSION; v++) {
        char sql[96];
        ret = exec(s, migrations[v], "migration");
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if (ret == 0) ret = exec(s, sql, "set user_version");
        if (ret == 0 && v == 0) {
            snprintf(sql, sizeof sql, "PRAGMA application_id = %d", STORE_APPLICATION_ID);
            ret = exec(s, sql, "set application_id");
        }
    }
    if (ret < 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return ret;
    }
    ret = exec(s, "COMMIT", "commit migration");
    if (ret == 0) s->version = STORE_SCHEMA_VERSION;
    return ret;
}

/* Reads the header fields and decides whether we can use this file. Nothing
 * is written here. */
static int check_file(struct store *s)
{
    int version = 0, app = 0, tables = 0;
    int ret = pragma_int(s, "PRAGMA user_version", &version);
    if (ret == 0) ret = pragma_int(s, "PRAGMA application_id", &app);
    if (ret == 0) ret = pragma_int(s, "SELECT count(*) FROM sqlite_schema", &tables);
    if (ret < 0) {
        int code = sqlite3_errcode(s->db);
        if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
            return store_fail(s, -EINVAL, "%s: not an mlq database or corrupt (%s)", s->path,
                              sqlite3_errmsg(s->db));
        return ret;
    }
    if (app != 0 && app != STORE_APPLICATION_ID)
        return store_fail(s, -EINVAL, "%s: not an mlq database (application_id 0x%x)", s->path,
                          (unsigned)app);
    if (version == 0 && tables > 0)
        return store_fail(s, -EINVAL, "%s: not an mlq database (it has tables but no mlq schema)",
                          s->path);
    if (version > STORE_SCHEMA_VERSION)
        return store_fail(s, -ENOTSUP,
                          "%s: schema version %d is newer than this mlq knows (%d); upgrade mlq",
                          s->path, version, STORE_SCHEMA_VERSION);
    s->version = version;
    return 0;
}

static int open_db(struct store *s, int flags, bool immutable)
{
    int oflags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    oflags |= (flags & STORE_READONLY) ? SQLITE_OPEN_READONLY
                                       : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    /* A URI so that no file name is ever parsed as options: escape %, ? and #. */
    char uri[3 * sizeof s->path + 16] = "file:";
    size_t o = strlen(uri);
    for (const char *p = s->path; *p; p++) {
        if (*p == '%' || *p == '?' || *p == '#')
            o += (size_t)sprintf(uri + o, "%%%02X", (unsigned char)*p);
        else
            uri[o++] = *p;
    }
    uri[o] = '\0';
    if (immutable) strcat(uri, "?immutable=1");
    int rc = sqlite3_open_v2(uri, &s->db, oflags, NULL);
    if (rc != SQLITE_OK)
        return store_fail(s, errno_of(rc), "%s: cannot open: %s", s->path,
                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(s->db, 1);
    return 0;
}

int store_open(struct store **out, const char *path, int flags, char *err, size_t errlen)
{
    *out = NULL;
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    s->now = clock_default;
    s->keep_last = STORE_KEEP_LAST_DEFAULT;
    s->readonly = flags & STORE_READONLY;
    int ret = 0;
    if (snprintf(s->path, sizeof s->path, "%s", path) >= (int)sizeof s->path) {
        ret = store_fail(s, -ENAMETOOLONG, "%s: path too long", path);
        goto fail;
    }

    struct stat sb;
    if (stat(path, &sb) < 0) {
        if (errno != ENOENT || !(flags & STORE_CREATE) || s->readonly) {
            ret = store_fail(s, -errno, "%s: no database here (%s)", path, strerror(errno));
            goto fail;
        }
        ret = store_make_parent(path);
        if (ret < 0) {
            store_fail(s, ret, "%s: cannot create its directory: %s", path, strerror(-ret));
            goto fail;
        }
        ret = create_file(path);
        if (ret < 0) {
            store_fail(s, ret, "%s: cannot create: %s", path, strerror(-ret));
            goto fail;
        }
    } else if (!S_ISREG(sb.st_mode)) {
        ret = store_fail(s, -EINVAL, "%s: not a regular file", path);
        goto fail;
    }

    ret = open_db(s, flags, false);
    if (ret < 0) goto fail;
    ret = check_file(s);
    if (ret < 0 && s->readonly &&
        ((sqlite3_errcode(s->db) & 0xff) == SQLITE_READONLY ||
         (sqlite3_errcode(s->db) & 0xff) == SQLITE_CANTOPEN)) {
        /* A WAL file on read-only media: no -shm can be created, so no writer
           can be active either; read it as immutable. */
        sqlite3_close_v2(s->db);
        s->db = NULL;
        ret = open_db(s, flags, true);
        if (ret == 0) ret = check_file(s);
    }
    if (ret < 0) goto fail;

    if (s->readonly) {
        if (s->version < STORE_SCHEMA_VERSION) {
            ret = store_fail(s, -EROFS,
                             "%s: schema version %d needs an upgrade to %d, which a read-only "
                             "open cannot do; open it once read-write (e.g. with the broker)",
                             path, s->version, STORE_SCHEMA_VERSION);
            goto fail;
        }
    } else {
        ret = exec(s, "PRAGMA foreign_keys = ON", "foreign_keys");
        if (ret == 0 && s->version < STORE_SCHEMA_VERSION) ret = migrate(s);
        if (ret == 0) ret = exec(s, "PRAGMA journal_mode = WAL", "journal_mode");
        /* Savepoints inside a caller's transaction (the broker's pass) keep a
           statement journal; past 64 KiB SQLite spills it to a temp file: an
           open, an unlink and a write per page on every pass. */
        if (ret == 0) ret = exec(s, "PRAGMA temp_store = MEMORY", "temp_store");
        if (ret == 0)
            ret = exec(s,
                       (flags & STORE_SYNC_NORMAL) ? "PRAGMA synchronous = NORMAL"
                                                   : "PRAGMA synchronous = FULL",
                       "synchronous");
        if (ret < 0) goto fail;
    }
    s->errmsg[0] = '\0';
    *out = s;
    return 0;

fail:
    snprintf(err, errlen, "%s", s->errmsg);
    store_close(&s);
    return ret;
}

void store_close(struct store **sp)
{
    if (!sp || !*sp) return;
    struct store *s = *sp;
    for (int i = 0; i < ST_N; i++)
        sqlite3_finalize(s->stmt[i]);
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    free(s);
    *sp = NULL;
}

int store_default_path(char *buf, size_t len)
{
    const char *env = getenv("MLQ_DB");
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(buf, len, "%s", env);
    else if (xdg && *xdg == '/') /* the XDG spec says to ignore relative paths */
        n = snprintf(buf, len, "%s/mlq/mlq.db", xdg);
    else if (home && *home)
        n = snprintf(buf, len, "%s/.local/share/mlq/mlq.db", home);
    else {
        if (len) buf[0] = '\0';
        return -ENOENT;
    }
    if (n < 0 || (size_t)n >= len) {
        if (len) buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int store_integrity_check(struct store *s)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc != SQLITE_OK) return store_fail_sql(s, rc, "integrity_check");
    rc = sqlite3_step(st);
    int ret = 0;
    if (rc != SQLITE_ROW)
        ret = store_fail_sql(s, rc, "integrity_check");
    else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        ret = store_fail(s, -EIO, "%s: integrity check: %s", s->path,
                         (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (ret == 0) {
        /* Foreign keys too: a dangling row is a partial write we missed. */
        rc = sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &st, NULL);
        if (rc != SQLITE_OK) return store_fail_sql(s, rc, "foreign_key_check");
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            ret = store_fail(s, -EIO, "%s: foreign key check: table %s has dangling rows", s->path,
                             (const char *)sqlite3_column_text(st, 0));
        else if (rc != SQLITE_DONE)
            ret = store_fail_sql(s, rc, "foreign_key_check");
        sqlite3_finalize(st);
    }
    return ret;
}

int store_vacuum(struct store *s)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: opened read-only", s->path);
    if (store_in_transaction(s))
        return store_fail(s, -EINVAL, "%s: vacuum inside a transaction", s->path);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA incremental_vacuum", -1, &st, NULL);
    if (rc != SQLITE_OK) return store_fail_sql(s, rc, "incremental_vacuum");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return store_fail_sql(s, rc, "incremental_vacuum");
    /* Give the freed pages back to the file system now, not at the next checkpoint. */
    rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) return store_fail_sql(s, rc, "wal checkpoint");
    return 0;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct store *)arg)->wal_pages = frames;
    return SQLITE_OK;
}

void store_wal_manual(struct store *s)
{
    sqlite3_wal_hook(s->db, wal_hook, s); /* replaces the automatic checkpoint */
}

int store_wal_pages(const struct store *s)
{
    return s->wal_pages;
}

int64_t store_changes(const struct store *s)
{
    return (int64_t)sqlite3_total_changes64(s->db);
}

int store_wal_checkpoint(struct store *s)
{
    if (store_in_transaction(s))
        return store_fail(s, -EINVAL, "%s: checkpoint inside a transaction", s->path);
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) return store_fail_sql(s, rc, "wal checkpoint");
    /* Fully copied: the next commit starts the WAL over. */
    s->wal_pages = rc == SQLITE_OK && done == log ? 0 : log - done;
    return 0;
}

/* ---- names ----------------------------------------------------------------- */

static const char *const state_names[STORE_N_STATES] = {"queued", "running",   "succeeded",
                                                        "failed", "cancelled", "stopped"};

const char *store_state_name(enum store_state st)
{
    return (unsigned)st < STORE_N_STATES ? state_names[st] : "unknown";
}

int store_state_parse(const char *name, enum store_state *out)
{
    for (int i = 0; i < STORE_N_STATES; i++)
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum store_state)i;
            return 0;
        }
    return -EINVAL;
}

int store_kind_parse(const char *name, enum job_kind *out)
{
    static const enum job_kind kinds[] = {JOB_TRAIN, JOB_EVAL, JOB_PREDICT};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(name, spec_kind_name(kinds[i])) == 0) {
            *out = kinds[i];
            return 0;
        }
    return -EINVAL;
}

bool store_state_terminal(enum store_state st)
{
    return st == STORE_SUCCEEDED || st == STORE_FAILED || st == STORE_CANCELLED ||
           st == STORE_STOPPED;
}
