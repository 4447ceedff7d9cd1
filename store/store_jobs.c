/* Jobs (= runs): the queue the broker drives, their params, the run listing
 * of `mlq runs`, deletion and garbage collection. */
#include "store_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Column order of JOB_COLS in store.c. */
enum {
    C_ID,
    C_KIND,
    C_STATE,
    C_PRIORITY,
    C_ATTEMPTS,
    C_MAX_ATTEMPTS,
    C_NAME,
    C_TRAINER,
    C_RUN,
    C_CANCEL,
    C_SUBMITTED,
    C_STARTED,
    C_FINISHED,
    C_SPEC,
    C_ERROR,
    C_RESULT,
    C_REQUEST_ID,
    C_OWNER,
    C_SWEEP,
    C_EXPERIMENT,
    C_DATASET_SHA256
};

static int job_from_row(sqlite3_stmt *st, struct store_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = sqlite3_column_int64(st, C_ID);
    const char *kind = (const char *)sqlite3_column_text(st, C_KIND);
    const char *state = (const char *)sqlite3_column_text(st, C_STATE);
    if (!kind || store_kind_parse(kind, &j->kind) < 0 || !state ||
        store_state_parse(state, &j->state) < 0)
        return -EIO;
    j->priority = sqlite3_column_int(st, C_PRIORITY);
    j->attempts = sqlite3_column_int(st, C_ATTEMPTS);
    j->max_attempts = sqlite3_column_int(st, C_MAX_ATTEMPTS);
    store_col_copy(st, C_NAME, j->name, sizeof j->name);
    store_col_copy(st, C_TRAINER, j->trainer, sizeof j->trainer);
    j->run = sqlite3_column_int64(st, C_RUN);
    j->cancel_requested = sqlite3_column_int(st, C_CANCEL) != 0;
    j->stop_requested = sqlite3_column_int(st, C_CANCEL) == 2;
    j->submitted = store_col_time(st, C_SUBMITTED);
    j->started = store_col_time(st, C_STARTED);
    j->finished = store_col_time(st, C_FINISHED);
    j->spec_json = store_col_strdup(st, C_SPEC);
    j->error = store_col_strdup(st, C_ERROR);
    j->result_json = store_col_strdup(st, C_RESULT);
    j->request_id = store_col_strdup(st, C_REQUEST_ID);
    j->owner = store_col_strdup(st, C_OWNER);
    j->sweep = sqlite3_column_int64(st, C_SWEEP);
    j->experiment = store_col_strdup(st, C_EXPERIMENT);
    j->dataset_sha256 = store_col_strdup(st, C_DATASET_SHA256);
    return 0;
}

void store_job_free(struct store_job *j)
{
    if (!j) return;
    free(j->spec_json);
    free(j->error);
    free(j->result_json);
    free(j->request_id);
    free(j->owner);
    free(j->experiment);
    free(j->dataset_sha256);
    j->spec_json = j->error = j->result_json = j->request_id = j->owner = j->experiment = NULL;
    j->dataset_sha256 = NULL;
}

void store_jobs_free(struct store_job **jobs, size_t n)
{
    if (!jobs || !*jobs) return;
    for (size_t i = 0; i < n; i++)
        store_job_free(&(*jobs)[i]);
    free(*jobs);
    *jobs = NULL;
}

/* ---- submit ------------------------------------------------------------------ */

/* The job row; its params are a view over the spec (docs/schema.md). */
int store_insert_job(struct store *s, const struct store_new_job *nj, const char *request_id,
                     int64_t *id)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    int ret = -EIO;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_INSERT);
    if (st) {
        sqlite3_bind_text(st, 1, spec_kind_name(nj->kind), -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, nj->priority);
        sqlite3_bind_int(st, 3, nj->max_attempts > 0 ? nj->max_attempts : 3);
        sqlite3_bind_text(st, 4, nj->name ? nj->name : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, nj->spec_json, -1, SQLITE_STATIC);
        if (nj->run > 0)
            sqlite3_bind_int64(st, 6, nj->run);
        else
            sqlite3_bind_null(st, 6);
        sqlite3_bind_double(st, 7, s->now());
        if (request_id)
            sqlite3_bind_text(st, 8, request_id, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 8);
        if (nj->owner)
            sqlite3_bind_text(st, 9, nj->owner, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 9);
        if (nj->sweep > 0) sqlite3_bind_int64(st, 10, nj->sweep);
        store_bind_text_or_null(st, 11, nj->experiment);
        ret = store_step_done(s, st, "insert job");
    }
    int64_t new_id = sqlite3_last_insert_rowid(s->db);
    ret = store_write_end(s, tok, ret);
    if (ret == 0) *id = new_id;
    return ret;
}

int store_job_submit(struct store *s, const struct store_new_job *nj, int64_t *id)
{
    json_error_t jerr;
    json_t *doc = json_loads(nj->spec_json ? nj->spec_json : "", 0, &jerr);
    bool object = json_is_object(doc);
    json_decref(doc);
    if (!object)
        return store_fail(s, -EINVAL, "%s: spec is not a JSON object (%s)", s->path, jerr.text);
    return store_insert_job(s, nj, NULL, id);
}

/* The job an earlier submission with request_id made: 0 and *id, -ENOENT, or
 * -EEXIST when its spec differs from spec_json. */
static int find_request(struct store *s, const char *request_id, const char *spec_json,
                        const char *owner, int64_t *id)
{
    sqlite3_stmt *st = store_stmt(s, ST_JOB_BY_REQUEST);
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        const char *spec = (const char *)sqlite3_column_text(st, 1);
        const char *had = (const char *)sqlite3_column_text(st, 2);
        bool same_owner = had && owner ? strcmp(had, owner) == 0 : !had && !owner;
        ret = !same_owner ? store_fail(s, -EEXIST, "request id %s is taken", request_id)
              : spec && strcmp(spec, spec_json) == 0
                  ? 0
                  : store_fail(s, -EEXIST,
                               "request id %s was used for job %lld, with a different spec",
                               request_id, (long long)*id);
    } else if (rc == SQLITE_DONE) {
        ret = -ENOENT;
    } else {
        ret = store_fail_sql(s, rc, "look up request id");
    }
    sqlite3_reset(st);
    return ret;
}

int store_job_submit_spec(struct store *s, const struct mlq_spec *spec, const char *request_id,
                          int64_t *id, bool *existed)
{
    return store_job_submit_owned(s, spec, request_id, NULL, id, existed);
}

int store_job_submit_owned(struct store *s, const struct mlq_spec *spec, const char *request_id,
                           const char *owner, int64_t *id, bool *existed)
{
    struct store_new_job meta = {.owner = owner};
    return store_job_submit_meta(s, spec, request_id, &meta, id, existed);
}

int store_job_submit_meta(struct store *s, const struct mlq_spec *spec, const char *request_id,
                          const struct store_new_job *meta, int64_t *id, bool *existed)
{
    const char *owner = meta ? meta->owner : NULL;
    if (existed) *existed = false;
    if (request_id && (!request_id[0] || strlen(request_id) > STORE_REQUEST_ID_MAX))
        return store_fail(s, -EINVAL, "a request id has 1 to %d characters", STORE_REQUEST_ID_MAX);
    json_t *doc = spec_to_json(spec);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) return store_fail(s, -ENOMEM, "%s: cannot encode the spec", s->path);
    int ret = request_id ? find_request(s, request_id, text, owner, id) : -ENOENT;
    if (ret == 0 && existed) *existed = true;
    if (ret == -ENOENT) {
        struct store_new_job nj = {
            .kind = spec->kind,
            .spec_json = text,
            .priority = spec->priority,
            .max_attempts = spec->max_attempts,
            .name = spec->name,
            .run = spec->kind == JOB_TRAIN ? 0 : spec->run,
            .owner = owner,
            .sweep = meta ? meta->sweep : 0,
            .experiment = meta ? meta->experiment : NULL,
        };
        ret = store_insert_job(s, &nj, request_id, id);
    }
    free(text);
    return ret;
}

/* ---- reading ------------------------------------------------------------------ */

static int read_one_job(struct store *s, sqlite3_stmt *st, struct store_job *job, const char *what)
{
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW) {
        ret = job_from_row(st, job);
        if (ret < 0) store_fail(s, ret, "%s: %s: bad kind or state in row", s->path, what);
    } else if (rc == SQLITE_DONE)
        ret = store_fail(s, -ENOENT, "%s: %s: not found", s->path, what);
    else
        ret = store_fail_sql(s, rc, what);
    sqlite3_reset(st);
    return ret;
}

int store_job_get(struct store *s, int64_t id, struct store_job *job)
{
    sqlite3_stmt *st = store_stmt(s, ST_JOB_GET);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, id);
    int ret = read_one_job(s, st, job, "job");
    if (ret == -ENOENT) store_fail(s, -ENOENT, "no run %lld in %s", (long long)id, s->path);
    return ret;
}

int store_job_next_queued(struct store *s, struct store_job *job)
{
    sqlite3_stmt *st = store_stmt(s, ST_JOB_NEXT);
    if (!st) return -EIO;
    return read_one_job(s, st, job, "next queued job");
}

int store_job_queue_ahead(struct store *s, int64_t id, int priority, int64_t *n)
{
    sqlite3_stmt *st = store_stmt(s, ST_JOB_AHEAD);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, priority);
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : store_fail_sql(s, rc, "jobs ahead in the queue");
}

int store_job_ids_by_state(struct store *s, enum store_state state, int64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_IDS_BY_STATE);
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, store_state_name(state), -1, SQLITE_STATIC);
    size_t cap = 0;
    int ret = store_collect_ids(s, st, ids, n, &cap, "jobs by state");
    sqlite3_reset(st);
    if (ret) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return ret;
}

int store_job_count_by_state(struct store *s, int64_t counts[STORE_N_STATES])
{
    memset(counts, 0, STORE_N_STATES * sizeof counts[0]);
    sqlite3_stmt *st = store_stmt(s, ST_JOB_COUNT);
    if (!st) return -EIO;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum store_state state;
        if (store_state_parse((const char *)sqlite3_column_text(st, 0), &state) == 0)
            counts[state] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : store_fail_sql(s, rc, "count jobs");
}

/* ---- state changes ------------------------------------------------------------- */

/* Runs an UPDATE of one job in its own write section: -ENOENT when no row changed. */
static int update_job(struct store *s, sqlite3_stmt *st, int64_t id, const char *what)
{
    int ret = store_step_done(s, st, what);
    if (ret == 0 && sqlite3_changes(s->db) == 0)
        ret = store_fail(s, -ENOENT, "no run %lld in %s", (long long)id, s->path);
    return ret;
}

int store_job_set_running(struct store *s, int64_t id, const char *trainer)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_RUNNING);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        store_bind_text_or_null(st, 2, trainer);
        sqlite3_bind_double(st, 3, s->now());
        ret = update_job(s, st, id, "set running");
    }
    return store_write_end(s, tok, ret);
}

static int finish(struct store *s, int64_t id, enum store_state state, const char *reason)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_FINISH);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, store_state_name(state), -1, SQLITE_STATIC);
        store_bind_text_or_null(st, 3, reason);
        sqlite3_bind_double(st, 4, s->now());
        ret = update_job(s, st, id, "finish job");
    }
    return store_write_end(s, tok, ret);
}

int store_job_set_succeeded(struct store *s, int64_t id)
{
    return finish(s, id, STORE_SUCCEEDED, NULL);
}

int store_job_set_failed(struct store *s, int64_t id, const char *reason)
{
    return finish(s, id, STORE_FAILED, reason ? reason : "failed");
}

int store_job_set_cancelled(struct store *s, int64_t id, const char *reason)
{
    return finish(s, id, STORE_CANCELLED, reason);
}

int store_job_requeue(struct store *s, int64_t id, const char *reason)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_REQUEUE);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        ret = update_job(s, st, id, "requeue");
    }
    if (ret == 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "requeued: %s", reason ? reason : "no reason given");
        ret = store_event_add(s, id, "warn", msg);
    }
    return store_write_end(s, tok, ret);
}

int store_job_request_cancel(struct store *s, int64_t id)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_CANCEL_REQ);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        ret = update_job(s, st, id, "request cancel");
    }
    return store_write_end(s, tok, ret);
}

int store_job_request_stop(struct store *s, int64_t id, const char *reason)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_STOP_REQ);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        store_bind_text_or_null(st, 2, reason);
        ret = update_job(s, st, id, "request stop");
    }
    return store_write_end(s, tok, ret);
}

int store_job_set_result(struct store *s, int64_t id, const char *result_json)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_JOB_RESULT);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        store_bind_text_or_null(st, 2, result_json);
        ret = update_job(s, st, id, "set result");
    }
    return store_write_end(s, tok, ret);
}

/* ---- params ------------------------------------------------------------------------ */

void store_params_free(struct store_param *p, size_t n)
{
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        free(p[i].key);
        free(p[i].value);
    }
    free(p);
}

int store_params_list(struct store *s, int64_t run, struct store_param **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(s, ST_PARAMS_LIST);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    int ret = store_collect_pairs(s, st, out, n, "list params");
    sqlite3_reset(st);
    return ret;
}

/* ---- run listing --------------------------------------------------------------------- */

/* Keys as the params view names them; nothing that would change the JSON
   path a --where key becomes. */
static bool param_key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || key[0] == '.' || key[n - 1] == '.' || strstr(key, "..")) return false;
    for (const char *c = key; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.') return false;
    return true;
}

/* A decimal number (strtod would also take hex, "inf" and "nan"). */
static bool parse_number(const char *text, double *x)
{
    if (strpbrk(text, "xXiInN")) return false;
    char *end;
    errno = 0;
    *x = strtod(text, &end);
    return end != text && *end == '\0' && errno == 0 && isfinite(*x);
}

static const char *const op_sql[] = {"=", "<>", "<", "<=", ">", ">="};

/* A --where key no run has is an error naming it, not an empty list (a
 * typo would otherwise look like "no such runs"). An empty store knows no
 * keys and is not asked. */
static int where_key_known(struct store *s, const char *key)
{
    bool metric = strncmp(key, "metrics.", 8) == 0;
    const char *sql = metric ? "SELECT EXISTS (SELECT 1 FROM final_metrics WHERE key = ?1), "
                               "EXISTS (SELECT 1 FROM jobs)"
                             : "SELECT EXISTS (SELECT 1 FROM jobs WHERE json_type(spec, '$.' || "
                               "?1) IS NOT NULL), EXISTS (SELECT 1 FROM jobs)";
    sqlite3_stmt *st = store_prepare(s, sql);
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, metric ? key + 8 : key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc != SQLITE_ROW)
        ret = store_fail_sql(s, rc, "key check");
    else if (!sqlite3_column_int(st, 0) && sqlite3_column_int(st, 1))
        ret = store_fail(s, -EINVAL,
                         metric ? "--where %s: no run has the metric %s (metrics are e.g. "
                                  "metrics.val_loss)"
                                : "--where %s: no run has the param %s (params are spec "
                                  "fields, e.g. optimizer.lr)",
                         key, metric ? key + 8 : key);
    sqlite3_finalize(st);
    return ret;
}

int store_runs_list(struct store *s, const struct store_run_filter *f, struct store_job **out,
                    size_t *n)
{
    *out = NULL;
    *n = 0;
    if (f->n_where < 0 || f->n_where > STORE_WHERE_MAX)
        return store_fail(s, -EINVAL, "at most %d --where filters", STORE_WHERE_MAX);
    if (f->n_tags < 0 || f->n_tags > STORE_WHERE_MAX)
        return store_fail(s, -EINVAL, "at most %d --tag filters", STORE_WHERE_MAX);
    for (int i = 0; i < f->n_where; i++) {
        if (!param_key_ok(f->where_key[i]))
            return store_fail(s, -EINVAL,
                              "%s: not a param key (letters, digits, '_' and '.', e.g. "
                              "optimizer.lr)",
                              f->where_key[i]);
        double x;
        bool metric = strncmp(f->where_key[i], "metrics.", 8) == 0;
        if (metric && !parse_number(f->where_value[i], &x))
            return store_fail(s, -EINVAL, "%s: a metric compares with a number, not '%s'",
                              f->where_key[i], f->where_value[i]);
        int rc = where_key_known(s, f->where_key[i]);
        if (rc < 0) return rc;
    }
    /* Composed from constant fragments only; every user value is bound. */
    char sql[8192];
    size_t o = 0;
    o += (size_t)snprintf(sql + o, sizeof sql - o,
                          "SELECT j.id, j.kind, j.state, j.priority, j.attempts, j.max_attempts, "
                          "j.name, j.trainer, j.run, j.cancel_requested, j.submitted, j.started, "
                          "j.finished, NULL, j.error, NULL, NULL, j.owner, j.sweep, j.experiment, "
                          "j.dataset_sha256 "
                          "FROM jobs j");
    if (f->sort_metric)
        o += (size_t)snprintf(sql + o, sizeof sql - o,
                              " LEFT JOIN final_metrics fm ON fm.run = j.id AND fm.key = ?1");
    o += (size_t)snprintf(sql + o, sizeof sql - o,
                          " WHERE (?2 IS NULL OR j.state = ?2)"
                          " AND (?3 IS NULL OR j.kind = ?3)"
                          " AND (?5 IS NULL OR j.experiment = ?5)"
                          " AND (?6 IS NULL OR j.sweep = ?6)");
    for (int i = 0; i < f->n_tags; i++)
        o += (size_t)snprintf(sql + o, sizeof sql - o,
                              " AND EXISTS (SELECT 1 FROM tags t WHERE t.run = j.id"
                              " AND t.key = ?%d AND t.value = ?%d)",
                              40 + 2 * i, 41 + 2 * i);
    /* A param equals the value as the params view writes it, or, for a
       number, numerically: --where optimizer.lr=3e-5 finds 3e-05. */
    for (int i = 0; i < f->n_where; i++) {
        unsigned op = (unsigned)f->where_op[i];
        const char *o_sql = op < sizeof op_sql / sizeof op_sql[0] ? op_sql[op] : "=";
        if (strncmp(f->where_key[i], "metrics.", 8) == 0)
            o += (size_t)snprintf(sql + o, sizeof sql - o,
                                  " AND EXISTS (SELECT 1 FROM final_metrics w WHERE w.run = j.id"
                                  " AND w.key = substr(?%1$d, 9) AND w.value %2$s ?%3$d)",
                                  10 + 3 * i, o_sql, 12 + 3 * i);
        else
            o += (size_t)snprintf(
                sql + o, sizeof sql - o,
                " AND CASE json_type(j.spec, '$.' || ?%1$d)"
                " WHEN 'text' THEN json_extract(j.spec, '$.' || ?%1$d) %4$s ?%2$d"
                " WHEN 'integer' THEN json_extract(j.spec, '$.' || ?%1$d) %4$s ?%3$d"
                " WHEN 'real' THEN json_extract(j.spec, '$.' || ?%1$d) %4$s ?%3$d"
                " ELSE EXISTS (SELECT 1 FROM params p WHERE p.run = j.id"
                " AND p.key = ?%1$d AND p.value %4$s ?%2$d) END",
                10 + 3 * i, 11 + 3 * i, 12 + 3 * i, o_sql);
    }
    if (f->sort_metric)
        o += (size_t)snprintf(sql + o, sizeof sql - o,
                              " ORDER BY fm.value IS NULL, fm.value %s,"
                              " j.id DESC",
                              f->sort_desc ? "DESC" : "ASC");
    else
        o += (size_t)snprintf(sql + o, sizeof sql - o, " ORDER BY j.id DESC");
    snprintf(sql + o, sizeof sql - o, " LIMIT ?4");

    sqlite3_stmt *st = store_prepare(s, sql);
    if (!st) return -EIO;
    int rc;
    if (f->sort_metric) sqlite3_bind_text(st, 1, f->sort_metric, -1, SQLITE_STATIC);
    if (f->state >= 0)
        sqlite3_bind_text(st, 2, store_state_name((enum store_state)f->state), -1, SQLITE_STATIC);
    if (f->kind >= 0)
        sqlite3_bind_text(st, 3, spec_kind_name((enum job_kind)f->kind), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, f->limit > 0 ? f->limit : -1);
    if (f->experiment) sqlite3_bind_text(st, 5, f->experiment, -1, SQLITE_STATIC);
    if (f->sweep > 0) sqlite3_bind_int64(st, 6, f->sweep);
    for (int i = 0; i < f->n_tags; i++) {
        sqlite3_bind_text(st, 40 + 2 * i, f->tag_key[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 41 + 2 * i, f->tag_value[i] ? f->tag_value[i] : "", -1,
                          SQLITE_STATIC);
    }
    for (int i = 0; i < f->n_where; i++) {
        sqlite3_bind_text(st, 10 + 3 * i, f->where_key[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11 + 3 * i, f->where_value[i], -1, SQLITE_STATIC);
        double x;
        if (parse_number(f->where_value[i], &x)) sqlite3_bind_double(st, 12 + 3 * i, x);
    }

    struct store_job *jobs = NULL;
    size_t len = 0, cap = 0;
    int ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&jobs, &cap, len, sizeof *jobs, 64)) != 0) break;
        if (job_from_row(st, &jobs[len]) < 0) {
            ret = store_fail(s, -EIO, "%s: run %lld: bad kind or state", s->path,
                             (long long)sqlite3_column_int64(st, 0));
            break;
        }
        len++;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "run listing");
    sqlite3_finalize(st);
    if (ret < 0) {
        store_jobs_free(&jobs, len);
        return ret;
    }
    *out = jobs;
    *n = len;
    return 0;
}

/* ---- deletion ------------------------------------------------------------------------- */

static int delete_run(struct store *s, int64_t id)
{
    sqlite3_stmt *st = store_stmt(s, ST_JOB_DELETE);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, id);
    return update_job(s, st, id, "delete run");
}

int store_run_delete(struct store *s, int64_t id)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    return store_write_end(s, tok, delete_run(s, id));
}

/* Appends the ids a GC query selects to *ids (deduplicated later by delete). */
static int collect_ids(struct store *s, sqlite3_stmt *st, int64_t **ids, size_t *n, size_t *cap)
{
    int ret = store_collect_ids(s, st, ids, n, cap, "gc select");
    sqlite3_reset(st);
    return ret;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int store_gc(struct store *s, const struct store_gc_opts *o, int64_t *deleted)
{
    *deleted = 0;
    if (!o->dry_run && s->readonly) return store_fail(s, -EROFS, "%s: opened read-only", s->path);
    if (!o->dry_run && store_in_transaction(s))
        return store_fail(s, -EINVAL, "%s: gc inside a transaction", s->path);
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    int ret = 0;
    if (o->older_than > 0) {
        sqlite3_stmt *st = store_stmt(s, ST_GC_SELECT_OLD);
        if (!st) return -EIO;
        sqlite3_bind_double(st, 1, s->now() - o->older_than);
        ret = collect_ids(s, st, &ids, &n, &cap);
    }
    if (ret == 0 && o->keep >= 0) {
        sqlite3_stmt *st = store_stmt(s, ST_GC_SELECT_BEYOND);
        if (!st)
            ret = -EIO;
        else {
            sqlite3_bind_int64(st, 1, o->keep);
            ret = collect_ids(s, st, &ids, &n, &cap);
        }
    }
    if (ret < 0 || n == 0 || o->dry_run) {
        /* Both queries may pick the same run: count distinct ids. */
        if (n) qsort(ids, n, sizeof *ids, cmp_id); /* ids is NULL when n == 0 */
        for (size_t i = 0; i < n; i++)
            *deleted += i == 0 || ids[i] != ids[i - 1];
        free(ids);
        return ret;
    }
    int tok = store_write_begin(s);
    if (tok < 0) {
        free(ids);
        return tok;
    }
    for (size_t i = 0; i < n && ret == 0; i++) {
        int r = delete_run(s, ids[i]);
        if (r == 0)
            (*deleted)++;
        else if (r != -ENOENT) /* already deleted: both queries picked it */
            ret = r;
    }
    free(ids);
    ret = store_write_end(s, tok, ret);
    if (ret == 0) ret = store_vacuum(s);
    return ret;
}
