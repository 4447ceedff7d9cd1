/* Sweeps (their trials and scheduler decisions), tags, notes and --after
 * dependencies: the tables of schema version 5 (docs/schema.md,
 * docs/sweeps.md). The broker writes them; the cli reads them. */
#include "store_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int job_exists(struct store *s, int64_t run)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT 1 FROM jobs WHERE id = ?1");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW ? 0
              : rc == SQLITE_DONE
                  ? store_fail(s, -ENOENT, "no run %lld in %s", (long long)run, s->path)
                  : store_fail_sql(s, rc, "look up run");
    sqlite3_finalize(st);
    return ret;
}

/* ---- --where ------------------------------------------------------------------ */

int store_where_parse(const char *text, char *buf, size_t len, const char **key,
                      enum store_where_op *op, const char **value)
{
    if (!text || snprintf(buf, len, "%s", text) >= (int)len) return -EINVAL;
    char *p = strpbrk(buf, "=!<>");
    if (!p || p == buf) return -EINVAL;
    size_t oplen = 1;
    if (p[0] == '!' && p[1] == '=') {
        *op = STORE_OP_NE;
        oplen = 2;
    } else if (p[0] == '<' && p[1] == '=') {
        *op = STORE_OP_LE;
        oplen = 2;
    } else if (p[0] == '>' && p[1] == '=') {
        *op = STORE_OP_GE;
        oplen = 2;
    } else if (p[0] == '<') {
        *op = STORE_OP_LT;
    } else if (p[0] == '>') {
        *op = STORE_OP_GT;
    } else if (p[0] == '=') {
        *op = STORE_OP_EQ;
        if (p[1] == '=') oplen = 2; /* "==" reads as "=" */
    } else {
        return -EINVAL;
    }
    *value = p + oplen;
    *p = '\0';
    *key = buf;
    return 0;
}

/* ---- tags and notes ---------------------------------------------------------------- */

int store_tag_set(struct store *s, int64_t run, const char *key, const char *value)
{
    if (!key || !key[0] || strlen(key) > STORE_TAG_MAX || !value || strlen(value) > STORE_TAG_MAX)
        return store_fail(s, -EINVAL,
                          "a tag is KEY=VALUE, the key 1 to %d bytes, the value at most %d",
                          STORE_TAG_MAX, STORE_TAG_MAX);
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    int ret = job_exists(s, run);
    if (ret == 0) {
        sqlite3_stmt *st =
            store_prepare(s, "INSERT INTO tags(run, key, value) VALUES (?1, ?2, ?3) "
                             "ON CONFLICT(run, key) DO UPDATE SET value = excluded.value");
        ret = -EIO;
        if (st) {
            sqlite3_bind_int64(st, 1, run);
            sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, value, -1, SQLITE_STATIC);
            ret = store_step_finalize(s, st, "set tag");
        }
    }
    return store_write_end(s, tok, ret);
}

int store_tags_list(struct store *s, int64_t run, struct store_param **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_prepare(s, "SELECT key, value FROM tags WHERE run = ?1 ORDER BY key");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    int ret = store_collect_pairs(s, st, out, n, "list tags");
    sqlite3_finalize(st);
    return ret;
}

int store_note_add(struct store *s, int64_t run, const char *text)
{
    if (!text || !text[0]) return store_fail(s, -EINVAL, "a note needs some text");
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    int ret = job_exists(s, run);
    if (ret == 0) ret = store_event_add(s, run, "note", text);
    return store_write_end(s, tok, ret);
}

/* ---- dependencies ------------------------------------------------------------------ */

int store_dep_add(struct store *s, int64_t job, int64_t after)
{
    sqlite3_stmt *st =
        store_prepare(s, "INSERT OR IGNORE INTO job_deps(job, after) VALUES (?1, ?2)");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, after);
    int tok = store_write_begin(s);
    if (tok < 0) {
        sqlite3_finalize(st);
        return tok;
    }
    return store_write_end(s, tok, store_step_finalize(s, st, "add dependency"));
}

/* The ids st selects, st finalized. */
static int ids_query(struct store *s, sqlite3_stmt *st, int64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    int ret = store_collect_ids(s, st, ids, n, &cap, "list ids");
    sqlite3_finalize(st);
    if (ret) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return ret;
}

int store_deps_list(struct store *s, int64_t job, int64_t **ids, size_t *n)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT after FROM job_deps WHERE job = ?1 ORDER BY after");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, job);
    return ids_query(s, st, ids, n);
}

int store_deps_fail_broken(struct store *s, size_t *n_failed)
{
    if (n_failed) *n_failed = 0;
    sqlite3_stmt *st = store_stmt(s, ST_DEPS_BROKEN);
    if (!st) return -EIO;
    struct broken {
        int64_t job, after;
        char state[16];
    } *v = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&v, &cap, len, sizeof *v, 8)) != 0) break;
        v[len].job = sqlite3_column_int64(st, 0);
        v[len].after = sqlite3_column_int64(st, 1);
        store_col_copy(st, 2, v[len].state, sizeof v[len].state);
        len++;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "broken dependencies");
    sqlite3_reset(st);
    int64_t last = 0;
    for (size_t i = 0; ret == 0 && i < len; i++) {
        if (v[i].job == last) continue; /* one reason is enough */
        last = v[i].job;
        char why[256];
        if (v[i].state[0])
            snprintf(why, sizeof why, "job %lld, which it runs --after, ended %s",
                     (long long)v[i].after, v[i].state);
        else
            snprintf(why, sizeof why, "job %lld, which it runs --after, no longer exists",
                     (long long)v[i].after);
        ret = store_job_set_failed(s, v[i].job, why);
        if (ret == 0 && n_failed) (*n_failed)++;
    }
    free(v);
    return ret;
}

/* ---- sweeps ------------------------------------------------------------------------ */

static const char *const sched_names[] = {"none", "asha", "median"};

const char *store_sched_name(enum store_sched k)
{
    return (unsigned)k < 3 ? sched_names[k] : "unknown";
}

int store_sched_parse(const char *name, enum store_sched *out)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, sched_names[i]) == 0) {
            *out = (enum store_sched)i;
            return 0;
        }
    return -EINVAL;
}

void store_sweep_free(struct store_sweep *sw)
{
    if (!sw) return;
    free(sw->experiment);
    free(sw->owner);
    free(sw->spec_json);
    free(sw->space_json);
    free(sw->request_id);
    sw->experiment = sw->owner = sw->spec_json = sw->space_json = sw->request_id = NULL;
}

void store_sweeps_free(struct store_sweep **sw, size_t n)
{
    if (!sw || !*sw) return;
    for (size_t i = 0; i < n; i++)
        store_sweep_free(&(*sw)[i]);
    free(*sw);
    *sw = NULL;
}

#define SWEEP_COLS                                                                                 \
    "id, name, experiment, owner, spec, space, seed, n_trials, max_parallel, scheduler, metric, "  \
    "mode, max_t, grace_period, reduction_factor, min_samples, cancelled, submitted, request_id"

static int sweep_from_row(sqlite3_stmt *st, struct store_sweep *sw)
{
    memset(sw, 0, sizeof *sw);
    sw->id = sqlite3_column_int64(st, 0);
    store_col_copy(st, 1, sw->name, sizeof sw->name);
    sw->experiment = store_col_strdup(st, 2);
    sw->owner = store_col_strdup(st, 3);
    sw->spec_json = store_col_strdup(st, 4);
    sw->space_json = store_col_strdup(st, 5);
    sw->seed = (uint64_t)sqlite3_column_int64(st, 6);
    sw->n_trials = sqlite3_column_int(st, 7);
    sw->max_parallel = sqlite3_column_int(st, 8);
    const char *sched = (const char *)sqlite3_column_text(st, 9);
    if (store_sched_parse(sched, &sw->scheduler) != 0) return -EIO;
    store_col_copy(st, 10, sw->metric, sizeof sw->metric);
    const char *mode = (const char *)sqlite3_column_text(st, 11);
    sw->mode_max = mode && strcmp(mode, "max") == 0;
    sw->max_t = sqlite3_column_int(st, 12);
    sw->grace_period = sqlite3_column_int(st, 13);
    sw->reduction_factor = sqlite3_column_int(st, 14);
    sw->min_samples = sqlite3_column_int(st, 15);
    sw->cancelled = sqlite3_column_int(st, 16) != 0;
    sw->submitted = store_col_time(st, 17);
    sw->request_id = store_col_strdup(st, 18);
    return 0;
}

/* The derived fields: trial counts by state, state, finished. */
static int sweep_derive(struct store *s, struct store_sweep *sw)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT state, count(*), max(finished) FROM jobs WHERE sweep = ?1 "
                         "GROUP BY state");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, sw->id);
    int rc;
    int64_t live = 0;
    double last = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum store_state state;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name || store_state_parse(name, &state) != 0) continue;
        sw->counts[state] = sqlite3_column_int64(st, 1);
        if (!store_state_terminal(state)) live += sw->counts[state];
        double f = store_col_time(st, 2);
        if (f > last) last = f;
    }
    int ret = rc == SQLITE_DONE ? 0 : store_fail_sql(s, rc, "sweep trials");
    sqlite3_finalize(st);
    snprintf(sw->state, sizeof sw->state, "%s",
             sw->cancelled ? "cancelled"
             : live        ? "running"
                           : "finished");
    sw->finished = live ? 0 : last;
    return ret;
}

static int sweep_by_request(struct store *s, const char *request_id, const char *spec,
                            const char *space, const char *owner, int64_t *id)
{
    sqlite3_stmt *st =
        store_prepare(s, "SELECT id, spec, space, owner FROM sweeps WHERE request_id = ?1");
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, request_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        const char *had_spec = (const char *)sqlite3_column_text(st, 1);
        const char *had_space = (const char *)sqlite3_column_text(st, 2);
        const char *had = (const char *)sqlite3_column_text(st, 3);
        bool same_owner = had && owner ? strcmp(had, owner) == 0 : !had && !owner;
        if (!same_owner)
            ret = store_fail(s, -EEXIST, "request id %s is taken", request_id);
        else if (had_spec && had_space && strcmp(had_spec, spec) == 0 &&
                 strcmp(had_space, space) == 0)
            ret = 0;
        else
            ret = store_fail(s, -EEXIST,
                             "request id %s was used for sweep %lld, with a different spec or "
                             "space",
                             request_id, (long long)*id);
    } else {
        ret = rc == SQLITE_DONE ? -ENOENT : store_fail_sql(s, rc, "look up request id");
    }
    sqlite3_finalize(st);
    return ret;
}

int store_sweep_create(struct store *s, const struct store_sweep *sw,
                       const struct store_new_trial *trials, size_t n, const char *request_id,
                       int64_t *id, bool *existed)
{
    if (existed) *existed = false;
    if (!sw->spec_json || !sw->space_json || n == 0)
        return store_fail(s, -EINVAL, "a sweep needs a spec, a space and trials");
    if (request_id && (!request_id[0] || strlen(request_id) > STORE_REQUEST_ID_MAX))
        return store_fail(s, -EINVAL, "a request id has 1 to %d characters", STORE_REQUEST_ID_MAX);
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    int ret = request_id
                  ? sweep_by_request(s, request_id, sw->spec_json, sw->space_json, sw->owner, id)
                  : -ENOENT;
    if (ret == 0) {
        if (existed) *existed = true;
        return store_write_end(s, tok, 0);
    }
    if (ret != -ENOENT) return store_write_end(s, tok, ret);
    sqlite3_stmt *st = store_prepare(
        s, "INSERT INTO sweeps(name, experiment, owner, spec, space, seed, n_trials, "
           "max_parallel, scheduler, metric, mode, max_t, grace_period, reduction_factor, "
           "min_samples, submitted, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
           "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)");
    ret = -EIO;
    if (st) {
        sqlite3_bind_text(st, 1, sw->name, -1, SQLITE_STATIC);
        store_bind_text_or_null(st, 2, sw->experiment);
        store_bind_text_or_null(st, 3, sw->owner);
        sqlite3_bind_text(st, 4, sw->spec_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, sw->space_json, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)sw->seed);
        sqlite3_bind_int(st, 7, (int)n);
        sqlite3_bind_int(st, 8, sw->max_parallel);
        sqlite3_bind_text(st, 9, store_sched_name(sw->scheduler), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 10, sw->metric, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11, sw->mode_max ? "max" : "min", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 12, sw->max_t);
        sqlite3_bind_int(st, 13, sw->grace_period);
        sqlite3_bind_int(st, 14, sw->reduction_factor);
        sqlite3_bind_int(st, 15, sw->min_samples);
        sqlite3_bind_double(st, 16, s->now());
        store_bind_text_or_null(st, 17, request_id);
        ret = store_step_finalize(s, st, "insert sweep");
    }
    int64_t sweep = sqlite3_last_insert_rowid(s->db);
    sqlite3_stmt *ti = ret ? NULL
                           : store_prepare(s, "INSERT INTO sweep_trials(sweep, trial, job, params) "
                                              "VALUES (?1, ?2, ?3, ?4)");
    if (ret == 0 && !ti) ret = -EIO;
    for (size_t i = 0; ret == 0 && i < n; i++) {
        struct store_new_job nj = {
            .kind = JOB_TRAIN,
            .spec_json = trials[i].spec_json,
            .priority = trials[i].priority,
            .max_attempts = trials[i].max_attempts,
            .name = trials[i].name,
            .owner = sw->owner,
            .sweep = sweep,
            .experiment = sw->experiment,
        };
        int64_t job;
        ret = store_insert_job(s, &nj, NULL, &job);
        if (ret) break;
        sqlite3_reset(ti);
        sqlite3_bind_int64(ti, 1, sweep);
        sqlite3_bind_int(ti, 2, (int)i);
        sqlite3_bind_int64(ti, 3, job);
        sqlite3_bind_text(ti, 4, trials[i].params_json ? trials[i].params_json : "{}", -1,
                          SQLITE_STATIC);
        int rc = sqlite3_step(ti);
        if (rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "insert trial");
    }
    sqlite3_finalize(ti);
    ret = store_write_end(s, tok, ret);
    if (ret == 0) *id = sweep;
    return ret;
}

int store_sweep_get(struct store *s, int64_t id, struct store_sweep *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = store_prepare(s, "SELECT " SWEEP_COLS " FROM sweeps WHERE id = ?1");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW)
        ret = sweep_from_row(st, out) == 0
                  ? 0
                  : store_fail(s, -EIO, "%s: sweep %lld: bad scheduler", s->path, (long long)id);
    else if (rc == SQLITE_DONE)
        ret = store_fail(s, -ENOENT, "no sweep %lld in %s", (long long)id, s->path);
    else
        ret = store_fail_sql(s, rc, "get sweep");
    sqlite3_finalize(st);
    if (ret == 0) ret = sweep_derive(s, out);
    if (ret) store_sweep_free(out);
    return ret;
}

int store_sweeps_list(struct store *s, int64_t limit, struct store_sweep **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st =
        store_prepare(s, "SELECT " SWEEP_COLS " FROM sweeps ORDER BY id DESC LIMIT ?1");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, limit > 0 ? limit : -1);
    struct store_sweep *v = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&v, &cap, len, sizeof *v, 16)) != 0) break;
        if (sweep_from_row(st, &v[len]) != 0) {
            store_sweep_free(&v[len]);
            ret = store_fail(s, -EIO, "%s: a sweep with a bad scheduler", s->path);
            break;
        }
        len++;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "list sweeps");
    sqlite3_finalize(st);
    for (size_t i = 0; ret == 0 && i < len; i++)
        ret = sweep_derive(s, &v[i]);
    if (ret) {
        store_sweeps_free(&v, len);
        return ret;
    }
    *out = v;
    *n = len;
    return 0;
}

int store_sweep_set_cancelled(struct store *s, int64_t id)
{
    sqlite3_stmt *st = store_prepare(s, "UPDATE sweeps SET cancelled = 1 WHERE id = ?1");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, id);
    int tok = store_write_begin(s);
    if (tok < 0) {
        sqlite3_finalize(st);
        return tok;
    }
    int ret = store_step_finalize(s, st, "cancel sweep");
    if (ret == 0 && sqlite3_changes(s->db) == 0)
        ret = store_fail(s, -ENOENT, "no sweep %lld in %s", (long long)id, s->path);
    return store_write_end(s, tok, ret);
}

int store_sweep_delete(struct store *s, int64_t id, bool keep_runs, int64_t **runs, size_t *n)
{
    *runs = NULL;
    *n = 0;
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_prepare(s, "SELECT id FROM jobs WHERE sweep = ?1 ORDER BY id");
    int ret = st ? 0 : -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        ret = ids_query(s, st, runs, n);
    }
    for (size_t i = 0; ret == 0 && !keep_runs && i < *n; i++)
        ret = store_run_delete(s, (*runs)[i]);
    st = ret ? NULL : store_prepare(s, "DELETE FROM sweeps WHERE id = ?1");
    if (ret == 0 && !st) ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        ret = store_step_finalize(s, st, "delete sweep");
        if (ret == 0 && sqlite3_changes(s->db) == 0)
            ret = store_fail(s, -ENOENT, "no sweep %lld in %s", (long long)id, s->path);
    }
    ret = store_write_end(s, tok, ret);
    if (ret) {
        free(*runs);
        *runs = NULL;
        *n = 0;
    }
    return ret;
}

void store_trials_free(struct store_trial *t, size_t n)
{
    if (!t) return;
    for (size_t i = 0; i < n; i++) {
        free(t[i].params_json);
        free(t[i].error);
    }
    free(t);
}

static bool trial_mode_max; /* the sort's direction (qsort has no context) */

static int trial_cmp(const void *a, const void *b)
{
    const struct store_trial *x = a, *y = b;
    if (x->has_best != y->has_best) return x->has_best ? -1 : 1;
    if (x->has_best && x->best != y->best) return (x->best < y->best) != trial_mode_max ? -1 : 1;
    return x->trial - y->trial;
}

int store_sweep_trials(struct store *s, int64_t id, struct store_trial **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct store_sweep sw;
    int ret = store_sweep_get(s, id, &sw);
    if (ret) return ret;
    sqlite3_stmt *st = store_prepare(
        s,
        "SELECT t.trial, t.job, t.params, j.state, j.error,"
        " (SELECT max(epoch) FROM final_metrics f WHERE f.run = t.job),"
        " (SELECT max(rung) FROM sweep_decisions d WHERE d.sweep = t.sweep AND d.trial = t.trial),"
        " CASE WHEN ?2 THEN (SELECT max(value) FROM metrics m WHERE m.run = t.job AND m.key = ?3)"
        " ELSE (SELECT min(value) FROM metrics m WHERE m.run = t.job AND m.key = ?3) END"
        " FROM sweep_trials t LEFT JOIN jobs j ON j.id = t.job WHERE t.sweep = ?1"
        " ORDER BY t.trial");
    if (!st) {
        store_sweep_free(&sw);
        return -EIO;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, sw.mode_max);
    sqlite3_bind_text(st, 3, sw.metric, -1, SQLITE_TRANSIENT);
    struct store_trial *v = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&v, &cap, len, sizeof *v, 16)) != 0) break;
        struct store_trial *t = &v[len++];
        memset(t, 0, sizeof *t);
        t->sweep = id;
        t->trial = sqlite3_column_int(st, 0);
        t->job = sqlite3_column_int64(st, 1);
        t->params_json = store_col_strdup(st, 2);
        const char *state = (const char *)sqlite3_column_text(st, 3);
        if (!state || store_state_parse(state, &t->state) != 0) t->state = STORE_CANCELLED;
        t->error = store_col_strdup(st, 4);
        t->epochs = sqlite3_column_int64(st, 5);
        t->rung = sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 6);
        t->has_best = sqlite3_column_type(st, 7) != SQLITE_NULL;
        t->best = t->has_best ? sqlite3_column_double(st, 7) : NAN;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "list trials");
    sqlite3_finalize(st);
    if (ret) {
        store_trials_free(v, len);
        store_sweep_free(&sw);
        return ret;
    }
    trial_mode_max = sw.mode_max;
    if (len) qsort(v, len, sizeof *v, trial_cmp);
    store_sweep_free(&sw);
    *out = v;
    *n = len;
    return 0;
}

int store_decision_get(struct store *s, int64_t sweep, int rung, int trial,
                       struct store_decision *out)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT epoch, value, decision FROM sweep_decisions WHERE "
                                        "sweep = ?1 AND rung = ?2 AND trial = ?3");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, sweep);
    sqlite3_bind_int(st, 2, rung);
    sqlite3_bind_int(st, 3, trial);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        out->rung = rung;
        out->trial = trial;
        out->epoch = sqlite3_column_int64(st, 0);
        out->has_value = sqlite3_column_type(st, 1) != SQLITE_NULL;
        out->value = out->has_value ? sqlite3_column_double(st, 1) : NAN;
        const char *d = (const char *)sqlite3_column_text(st, 2);
        out->stop = d && strcmp(d, "stop") == 0;
    } else {
        ret = rc == SQLITE_DONE ? -ENOENT : store_fail_sql(s, rc, "get decision");
    }
    sqlite3_finalize(st);
    return ret;
}

int store_decision_put(struct store *s, int64_t sweep, const struct store_decision *d)
{
    sqlite3_stmt *st =
        store_prepare(s, "INSERT INTO sweep_decisions(sweep, rung, trial, epoch, value, "
                         "decision, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, sweep);
    sqlite3_bind_int(st, 2, d->rung);
    sqlite3_bind_int(st, 3, d->trial);
    sqlite3_bind_int64(st, 4, d->epoch);
    if (d->has_value && isfinite(d->value))
        sqlite3_bind_double(st, 5, d->value);
    else
        sqlite3_bind_null(st, 5);
    sqlite3_bind_text(st, 6, d->stop ? "stop" : "continue", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 7, s->now());
    int tok = store_write_begin(s);
    if (tok < 0) {
        sqlite3_finalize(st);
        return tok;
    }
    return store_write_end(s, tok, store_step_finalize(s, st, "record decision"));
}

int store_rung_values(struct store *s, int64_t sweep, int rung, int trial, double **vals, size_t *n)
{
    *vals = NULL;
    *n = 0;
    sqlite3_stmt *st = store_prepare(s, "SELECT value FROM sweep_decisions WHERE sweep = ?1 AND "
                                        "rung = ?2 AND trial <> ?3 ORDER BY trial");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, sweep);
    sqlite3_bind_int(st, 2, rung);
    sqlite3_bind_int(st, 3, trial);
    double *v = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((ret = store_grow(s, (void **)&v, &cap, len, sizeof *v, 16)) != 0) break;
        v[len++] = sqlite3_column_type(st, 0) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 0);
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "rung values");
    sqlite3_finalize(st);
    if (ret) {
        free(v);
        return ret;
    }
    *vals = v;
    *n = len;
    return 0;
}

int store_trial_of_job(struct store *s, int64_t job, int64_t *sweep, int *trial)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT sweep, trial FROM sweep_trials WHERE job = ?1");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, job);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        *sweep = sqlite3_column_int64(st, 0);
        *trial = sqlite3_column_int(st, 1);
    } else {
        ret = rc == SQLITE_DONE ? -ENOENT : store_fail_sql(s, rc, "trial of job");
    }
    sqlite3_finalize(st);
    return ret;
}

int store_sweep_live_jobs(struct store *s, int64_t sweep, int64_t **ids, size_t *n)
{
    sqlite3_stmt *st = store_prepare(s, "SELECT id FROM jobs WHERE sweep = ?1 AND state IN "
                                        "('queued','running') ORDER BY id");
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, sweep);
    return ids_query(s, st, ids, n);
}
