/* Deployments: the models served online (docs/serving.md). A handful of rows
 * written by a person's command, never on the hot path: each statement is
 * prepared per call instead of joining the store's statement cache. */
#include "store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPLOY_COLS                                                                                \
    "name, run, checkpoint, replicas, max_batch, max_delay_us, generation, owner, created, "       \
    "updated"

static int prepare(struct store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? 0 : store_fail_sql(s, rc, "prepare");
}

static void read_row(sqlite3_stmt *st, struct store_deployment *d)
{
    memset(d, 0, sizeof *d);
    store_col_copy(st, 0, d->name, sizeof d->name);
    d->run = sqlite3_column_int64(st, 1);
    store_col_copy(st, 2, d->checkpoint, sizeof d->checkpoint);
    d->replicas = sqlite3_column_int(st, 3);
    d->max_batch = sqlite3_column_int(st, 4);
    d->max_delay_us = sqlite3_column_int(st, 5);
    d->generation = sqlite3_column_int64(st, 6);
    store_col_copy(st, 7, d->owner, sizeof d->owner);
    d->created = sqlite3_column_double(st, 8);
    d->updated = sqlite3_column_double(st, 9);
}

int store_deployment_put(struct store *s, struct store_deployment *d)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: read-only", s->path);
    int token = store_write_begin(s);
    if (token < 0) return token;
    sqlite3_stmt *st = NULL;
    int rc = prepare(s,
                     "INSERT INTO deployments(" DEPLOY_COLS ") "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?8) "
                     "ON CONFLICT(name) DO UPDATE SET run = excluded.run, "
                     "checkpoint = excluded.checkpoint, replicas = excluded.replicas, "
                     "max_batch = excluded.max_batch, max_delay_us = excluded.max_delay_us, "
                     "generation = generation + 1, updated = excluded.updated "
                     "RETURNING generation, created",
                     &st);
    if (!rc) {
        double now = store_now(s);
        sqlite3_bind_text(st, 1, d->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, d->run);
        sqlite3_bind_text(st, 3, d->checkpoint, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, d->replicas);
        sqlite3_bind_int(st, 5, d->max_batch);
        sqlite3_bind_int(st, 6, d->max_delay_us);
        store_bind_text_or_null(st, 7, d->owner[0] ? d->owner : NULL);
        sqlite3_bind_double(st, 8, now);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            d->generation = sqlite3_column_int64(st, 0);
            d->created = sqlite3_column_double(st, 1);
            d->updated = now;
            step = sqlite3_step(st);
        }
        if (step != SQLITE_DONE) rc = store_fail_sql(s, step, "deployment put");
    }
    sqlite3_finalize(st);
    return store_write_end(s, token, rc);
}

int store_deployment_get(struct store *s, const char *name, struct store_deployment *d)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, "SELECT " DEPLOY_COLS " FROM deployments WHERE name = ?1", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        read_row(st, d);
    else if (step == SQLITE_DONE)
        rc = store_fail(s, -ENOENT, "deployment %s: no such deployment", name);
    else
        rc = store_fail_sql(s, step, "deployment get");
    sqlite3_finalize(st);
    return rc;
}

int store_deployment_delete(struct store *s, const char *name)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: read-only", s->path);
    int token = store_write_begin(s);
    if (token < 0) return token;
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, "DELETE FROM deployments WHERE name = ?1", &st);
    if (!rc) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step != SQLITE_DONE)
            rc = store_fail_sql(s, step, "deployment delete");
        else if (sqlite3_changes(s->db) == 0)
            rc = store_fail(s, -ENOENT, "deployment %s: no such deployment", name);
    }
    sqlite3_finalize(st);
    /* Nothing deleted is not a failed write: keep the transaction. */
    return store_write_end(s, token, rc == -ENOENT ? 0 : rc) ?: rc;
}

int store_deployments_list(struct store *s, struct store_deployment **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, "SELECT " DEPLOY_COLS " FROM deployments ORDER BY name", &st);
    if (rc) return rc;
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t c = cap ? 2 * cap : 8;
            struct store_deployment *d = realloc(*out, c * sizeof *d);
            if (!d) {
                rc = store_fail(s, -ENOMEM, "out of memory");
                break;
            }
            *out = d;
            cap = c;
        }
        read_row(st, &(*out)[(*n)++]);
    }
    if (!rc && step != SQLITE_DONE) rc = store_fail_sql(s, step, "deployments list");
    sqlite3_finalize(st);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}
