/* What runs produce: metrics, checkpoints and events; and the trainers the
 * broker knows. */
#include "store_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

/* ---- metrics --------------------------------------------------------------------- */

static int metric_bind_step(struct store *s, int64_t run, const struct store_metric *m)
{
    size_t klen = m->key ? strlen(m->key) : 0;
    if (klen == 0 || klen >= STORE_KEY_MAX)
        return store_fail(s, -EINVAL, "%s: metric key must be 1..%d bytes", s->path,
                          STORE_KEY_MAX - 1);
    sqlite3_stmt *st = store_stmt(s, ST_METRIC_PUT);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, m->key, (int)klen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, m->step);
    sqlite3_bind_int64(st, 4, m->epoch);
    if (isfinite(m->value))
        sqlite3_bind_double(st, 5, m->value);
    else
        sqlite3_bind_null(st, 5); /* SQLite has no NaN; a diverged loss reads back as NAN */
    sqlite3_bind_double(st, 6, m->time > 0 ? m->time : s->now());
    int ret = store_step_done(s, st, "insert metric");
    if (ret == -EINVAL) store_fail(s, -ENOENT, "no run %lld in %s", (long long)run, s->path);
    return ret == -EINVAL ? -ENOENT : ret;
}

int store_metrics_put(struct store *s, int64_t run, const struct store_metric *m, size_t n)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++)
        ret = metric_bind_step(s, run, &m[i]);
    return store_write_end(s, tok, ret);
}

int store_metric_put(struct store *s, int64_t run, const char *key, int64_t step, int64_t epoch,
                     double value, double time)
{
    struct store_metric m = {
        .key = key, .step = step, .epoch = epoch, .value = value, .time = time};
    return store_metrics_put(s, run, &m, 1);
}

static void metric_from_row(sqlite3_stmt *st, struct store_metric *m)
{
    m->key = (const char *)sqlite3_column_text(st, 0);
    m->step = sqlite3_column_int64(st, 1);
    m->epoch = sqlite3_column_int64(st, 2);
    m->value = sqlite3_column_type(st, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 3);
    m->time = sqlite3_column_double(st, 4);
}

static int walk_metrics(struct store *s, sqlite3_stmt *st, store_metric_fn fn, void *ctx)
{
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_metric m;
        metric_from_row(st, &m);
        ret = fn(ctx, &m);
        if (ret != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "read metrics");
    sqlite3_reset(st);
    return ret;
}

int store_metrics_foreach(struct store *s, int64_t run, const char *key, store_metric_fn fn,
                          void *ctx)
{
    sqlite3_stmt *st = store_stmt(s, key ? ST_METRICS_KEY : ST_METRICS_ALL);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    if (key) sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    return walk_metrics(s, st, fn, ctx);
}

int store_metrics_since(struct store *s, int64_t run, int64_t after_epoch, store_metric_fn fn,
                        void *ctx)
{
    sqlite3_stmt *st = store_stmt(s, ST_METRICS_SINCE);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_int64(st, 2, after_epoch);
    return walk_metrics(s, st, fn, ctx);
}

void store_metrics_free(struct store_metric *m, size_t n)
{
    if (!m) return;
    for (size_t i = 0; i < n; i++)
        free((char *)m[i].key);
    free(m);
}

int store_metrics_final(struct store *s, int64_t run, struct store_metric **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(s, ST_METRICS_FINAL);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    struct store_metric *m = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct store_metric *q = realloc(m, ncap * sizeof *q);
            if (!q) {
                ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
                break;
            }
            m = q;
            cap = ncap;
        }
        metric_from_row(st, &m[len]);
        m[len].key = strdup(m[len].key ? m[len].key : "");
        if (!m[len].key) {
            ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
            break;
        }
        len++;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "final metrics");
    sqlite3_reset(st);
    if (ret < 0) {
        store_metrics_free(m, len);
        return ret;
    }
    *out = m;
    *n = len;
    return 0;
}

/* ---- checkpoints ------------------------------------------------------------------- */

void store_checkpoint_free(struct store_checkpoint *c)
{
    if (!c) return;
    free(c->blob);
    c->blob = NULL;
}

void store_checkpoints_free(struct store_checkpoint *c, size_t n)
{
    if (!c) return;
    for (size_t i = 0; i < n; i++)
        store_checkpoint_free(&c[i]);
    free(c);
}

static uint32_t crc_of(const void *blob, size_t len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    const unsigned char *p = blob;
    while (len > 0) { /* zlib takes uInt lengths */
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = crc32(crc, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return (uint32_t)crc;
}

int store_checkpoints_prune(struct store *s, int64_t run, int keep_last)
{
    if (keep_last <= 0) return 0;
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_CKPT_PRUNE);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_int(st, 2, keep_last);
        ret = store_step_done(s, st, "prune checkpoints");
    }
    return store_write_end(s, tok, ret);
}

int store_checkpoint_put(struct store *s, int64_t run, int64_t epoch, int64_t step,
                         const void *blob, size_t len, double metric, int64_t *id)
{
    if (!blob || len == 0 || len > (size_t)INT32_MAX)
        return store_fail(s, -EINVAL, "%s: checkpoint of %zu bytes", s->path, len);
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_CKPT_PUT);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_int64(st, 2, epoch);
        sqlite3_bind_int64(st, 3, step);
        sqlite3_bind_int64(st, 4, crc_of(blob, len));
        sqlite3_bind_int64(st, 5, (sqlite3_int64)len);
        sqlite3_bind_double(st, 6, s->now());
        if (isfinite(metric))
            sqlite3_bind_double(st, 7, metric);
        else
            sqlite3_bind_null(st, 7);
        sqlite3_bind_blob(st, 8, blob, (int)len, SQLITE_STATIC);
        ret = store_step_done(s, st, "insert checkpoint");
        if (ret == -EINVAL)
            ret = store_fail(s, -ENOENT, "no run %lld in %s", (long long)run, s->path);
    }
    int64_t new_id = sqlite3_last_insert_rowid(s->db);
    if (ret == 0) ret = store_checkpoints_prune(s, run, s->keep_last);
    ret = store_write_end(s, tok, ret);
    if (ret == 0 && id) *id = new_id;
    return ret;
}

static void ckpt_meta_from_row(sqlite3_stmt *st, struct store_checkpoint *c)
{
    memset(c, 0, sizeof *c);
    c->id = sqlite3_column_int64(st, 0);
    c->run = sqlite3_column_int64(st, 1);
    c->epoch = sqlite3_column_int64(st, 2);
    c->step = sqlite3_column_int64(st, 3);
    c->crc32 = (uint32_t)sqlite3_column_int64(st, 4);
    c->size = (size_t)sqlite3_column_int64(st, 5);
    c->time = sqlite3_column_double(st, 6);
    c->has_metric = sqlite3_column_type(st, 7) != SQLITE_NULL;
    c->metric = c->has_metric ? sqlite3_column_double(st, 7) : NAN;
}

int store_checkpoint_get(struct store *s, int64_t run, enum store_ckpt_which which, int64_t epoch,
                         struct store_checkpoint *out)
{
    memset(out, 0, sizeof *out);
    enum stmt_id id = which == STORE_CKPT_BEST    ? ST_CKPT_BEST
                      : which == STORE_CKPT_EPOCH ? ST_CKPT_EPOCH
                                                  : ST_CKPT_LAST;
    sqlite3_stmt *st = store_stmt(s, id);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    if (which == STORE_CKPT_EPOCH) sqlite3_bind_int64(st, 2, epoch);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_DONE) {
        ret = which == STORE_CKPT_EPOCH
                  ? store_fail(s, -ENOENT, "run %lld has no checkpoint of epoch %lld",
                               (long long)run, (long long)epoch)
                  : store_fail(s, -ENOENT, "run %lld has no checkpoint", (long long)run);
    } else if (rc != SQLITE_ROW) {
        ret = store_fail_sql(s, rc, "read checkpoint");
    } else {
        ckpt_meta_from_row(st, out);
        const void *b = sqlite3_column_blob(st, 8);
        size_t len = (size_t)sqlite3_column_bytes(st, 8);
        if (len != out->size || !b) {
            ret =
                store_fail(s, -EBADMSG, "%s: checkpoint %lld of run %lld: %zu bytes, expected %zu",
                           s->path, (long long)out->id, (long long)run, len, out->size);
        } else if (crc_of(b, len) != out->crc32) {
            ret = store_fail(s, -EBADMSG, "%s: checkpoint %lld of run %lld: checksum mismatch",
                             s->path, (long long)out->id, (long long)run);
        } else if (!(out->blob = malloc(len))) {
            ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
        } else {
            memcpy(out->blob, b, len);
        }
    }
    sqlite3_reset(st);
    return ret;
}

int store_ckpt_which_parse(const char *text, enum store_ckpt_which *which, int64_t *epoch)
{
    *epoch = 0;
    if (strcmp(text, "last") == 0) {
        *which = STORE_CKPT_LAST;
        return 0;
    }
    if (strcmp(text, "best") == 0) {
        *which = STORE_CKPT_BEST;
        return 0;
    }
    char *end;
    errno = 0;
    long long e = strtoll(text, &end, 10);
    if (errno || end == text || *end || e < 0) return -EINVAL;
    *which = STORE_CKPT_EPOCH;
    *epoch = e;
    return 0;
}

int store_checkpoints_list(struct store *s, int64_t run, struct store_checkpoint **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(s, ST_CKPT_LIST);
    if (!st) return -EIO;
    sqlite3_bind_int64(st, 1, run);
    struct store_checkpoint *c = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct store_checkpoint *q = realloc(c, ncap * sizeof *q);
            if (!q) {
                ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
                break;
            }
            c = q;
            cap = ncap;
        }
        ckpt_meta_from_row(st, &c[len++]);
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "list checkpoints");
    sqlite3_reset(st);
    if (ret < 0) {
        store_checkpoints_free(c, len);
        return ret;
    }
    *out = c;
    *n = len;
    return 0;
}

int store_checkpoint_delete(struct store *s, int64_t id)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_CKPT_DELETE);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        ret = store_step_done(s, st, "delete checkpoint");
        if (ret == 0 && sqlite3_changes(s->db) == 0)
            ret = store_fail(s, -ENOENT, "no checkpoint %lld in %s", (long long)id, s->path);
    }
    return store_write_end(s, tok, ret);
}

/* ---- events ------------------------------------------------------------------------ */

int store_event_add(struct store *s, int64_t run, const char *level, const char *message)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_EVENT_ADD);
    int ret = -EIO;
    if (st) {
        if (run > 0)
            sqlite3_bind_int64(st, 1, run);
        else
            sqlite3_bind_null(st, 1);
        sqlite3_bind_double(st, 2, s->now());
        sqlite3_bind_text(st, 3, level ? level : "info", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, message ? message : "", -1, SQLITE_STATIC);
        ret = store_step_done(s, st, "insert event");
        if (ret == -EINVAL)
            ret = store_fail(s, -ENOENT, "no run %lld in %s", (long long)run, s->path);
    }
    return store_write_end(s, tok, ret);
}

int store_events_foreach(struct store *s, int64_t run, store_event_fn fn, void *ctx)
{
    sqlite3_stmt *st = store_stmt(s, ST_EVENTS_RUN);
    if (!st) return -EIO;
    if (run > 0)
        sqlite3_bind_int64(st, 1, run);
    else
        sqlite3_bind_null(st, 1);
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_event e = {
            .run = sqlite3_column_int64(st, 0),
            .time = sqlite3_column_double(st, 1),
            .level = (const char *)sqlite3_column_text(st, 2),
            .message = (const char *)sqlite3_column_text(st, 3),
        };
        ret = fn(ctx, &e);
        if (ret != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "read events");
    sqlite3_reset(st);
    return ret;
}

/* ---- trainers ------------------------------------------------------------------------ */

int store_trainer_upsert(struct store *s, const struct store_trainer *t)
{
    if (!t->name[0]) return store_fail(s, -EINVAL, "%s: trainer without a name", s->path);
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_TRAINER_UPSERT);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, t->host, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, t->state, -1, SQLITE_STATIC);
        if (t->job > 0)
            sqlite3_bind_int64(st, 4, t->job);
        else
            sqlite3_bind_null(st, 4);
        store_bind_time(st, 5, t->last_heartbeat);
        sqlite3_bind_text(st, 6, t->version, -1, SQLITE_STATIC);
        store_bind_text_or_null(st, 7, t->capabilities);
        ret = store_step_done(s, st, "upsert trainer");
    }
    /* Any peer can say HELLO under a new name: without a bound every one
     * would leave a row for ever. */
    if (ret == 0 && (st = store_stmt(s, ST_TRAINERS_PRUNE)) != NULL) {
        sqlite3_bind_int(st, 1, STORE_TRAINERS_KEEP);
        ret = store_step_done(s, st, "prune trainers");
    }
    return store_write_end(s, tok, ret);
}

int store_trainer_delete(struct store *s, const char *name)
{
    int tok = store_write_begin(s);
    if (tok < 0) return tok;
    sqlite3_stmt *st = store_stmt(s, ST_TRAINER_DELETE);
    int ret = -EIO;
    if (st) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        ret = store_step_done(s, st, "delete trainer");
        if (ret == 0 && sqlite3_changes(s->db) == 0)
            ret = store_fail(s, -ENOENT, "no trainer %s in %s", name, s->path);
    }
    return store_write_end(s, tok, ret);
}

void store_trainers_free(struct store_trainer *t, size_t n)
{
    if (!t) return;
    for (size_t i = 0; i < n; i++)
        free(t[i].capabilities);
    free(t);
}

int store_trainers_list(struct store *s, struct store_trainer **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(s, ST_TRAINERS_LIST);
    if (!st) return -EIO;
    struct store_trainer *t = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct store_trainer *q = realloc(t, ncap * sizeof *q);
            if (!q) {
                ret = store_fail(s, -ENOMEM, "%s: out of memory", s->path);
                break;
            }
            t = q;
            cap = ncap;
        }
        struct store_trainer *x = &t[len++];
        memset(x, 0, sizeof *x);
        store_col_copy(st, 0, x->name, sizeof x->name);
        store_col_copy(st, 1, x->host, sizeof x->host);
        store_col_copy(st, 2, x->state, sizeof x->state);
        x->job = sqlite3_column_int64(st, 3);
        x->last_heartbeat = store_col_time(st, 4);
        store_col_copy(st, 5, x->version, sizeof x->version);
        x->capabilities = store_col_strdup(st, 6);
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = store_fail_sql(s, rc, "list trainers");
    sqlite3_reset(st);
    if (ret < 0) {
        store_trainers_free(t, len);
        return ret;
    }
    *out = t;
    *n = len;
    return 0;
}
