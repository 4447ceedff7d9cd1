/* Pushed datasets: names over the broker's content-addressed objects
 * (docs/datasets.md, "Pushed datasets"), and the hash each run read. */
#include "store_internal.h"

#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATASET_COLS "name, sha256, size, pushed, owner"
/* A job's spec names an object as its dataset or validation set. */
#define SPEC_NAMES_SHA(j, p)                                                                       \
    "(json_extract(" j ".spec, '$.dataset.sha256') = " p " OR json_extract(" j                     \
    ".spec, '$.validation.sha256') = " p ")"

static void read_row(sqlite3_stmt *st, struct store_dataset *d)
{
    memset(d, 0, sizeof *d);
    store_col_copy(st, 0, d->name, sizeof d->name);
    store_col_copy(st, 1, d->sha256, sizeof d->sha256);
    d->size = sqlite3_column_int64(st, 2);
    d->pushed = sqlite3_column_double(st, 3);
    store_col_copy(st, 4, d->owner, sizeof d->owner);
}

int store_dataset_put(struct store *s, const struct store_dataset *d)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: read-only", s->path);
    if (!d->name[0] || !sha256_hex_valid(d->sha256) || d->size < 0)
        return store_fail(s, -EINVAL, "dataset: bad name, hash or size");
    int token = store_write_begin(s);
    if (token < 0) return token;
    sqlite3_stmt *st = store_prepare(s, "INSERT INTO datasets(" DATASET_COLS ") "
                                        "VALUES (?1, ?2, ?3, ?4, ?5) "
                                        "ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, "
                                        "size = excluded.size, pushed = excluded.pushed, "
                                        "owner = excluded.owner");
    int rc = -EIO;
    if (st) {
        sqlite3_bind_text(st, 1, d->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, d->sha256, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, d->size);
        sqlite3_bind_double(st, 4, store_now(s));
        store_bind_text_or_null(st, 5, d->owner[0] ? d->owner : NULL);
        rc = store_step_finalize(s, st, "dataset put");
    }
    return store_write_end(s, token, rc);
}

static int get_one(struct store *s, const char *sql, const char *key, struct store_dataset *d,
                   const char *what)
{
    sqlite3_stmt *st = store_prepare(s, sql);
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = 0, step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        read_row(st, d);
    else if (step == SQLITE_DONE)
        rc = store_fail(s, -ENOENT, "dataset %s: no such dataset", key);
    else
        rc = store_fail_sql(s, step, what);
    sqlite3_finalize(st);
    return rc;
}

int store_dataset_get(struct store *s, const char *name, struct store_dataset *d)
{
    return get_one(s, "SELECT " DATASET_COLS " FROM datasets WHERE name = ?1", name, d,
                   "dataset get");
}

int store_dataset_by_sha(struct store *s, const char *sha, struct store_dataset *d)
{
    return get_one(s,
                   "SELECT " DATASET_COLS " FROM datasets WHERE sha256 = ?1 ORDER BY name LIMIT 1",
                   sha, d, "dataset by hash");
}

int store_dataset_delete(struct store *s, const char *name)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: read-only", s->path);
    int token = store_write_begin(s);
    if (token < 0) return token;
    sqlite3_stmt *st = store_prepare(s, "DELETE FROM datasets WHERE name = ?1");
    int rc = -EIO;
    if (st) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = store_step_finalize(s, st, "dataset delete");
        if (rc == 0 && sqlite3_changes(s->db) == 0)
            rc = store_fail(s, -ENOENT, "dataset %s: no such dataset", name);
    }
    /* Nothing deleted is not a failed write: keep the transaction. */
    return store_write_end(s, token, rc == -ENOENT ? 0 : rc) ?: rc;
}

int store_datasets_list(struct store *s, struct store_dataset **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st =
        store_prepare(s, "SELECT d.name, d.sha256, d.size, d.pushed, d.owner, "
                         "(SELECT count(*) FROM jobs j WHERE j.dataset_sha256 = d.sha256 OR "
                         "(j.dataset_sha256 IS NULL AND " SPEC_NAMES_SHA(
                             "j", "d.sha256") ")) "
                                              "FROM datasets d ORDER BY d.name");
    if (!st) return -EIO;
    struct store_dataset *v = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if ((rc = store_grow(s, (void **)&v, &cap, len, sizeof *v, 16)) != 0) break;
        read_row(st, &v[len]);
        v[len++].runs = sqlite3_column_int64(st, 5);
    }
    if (!rc && step != SQLITE_DONE) rc = store_fail_sql(s, step, "datasets list");
    sqlite3_finalize(st);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

int store_dataset_users(struct store *s, const char *sha, int64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st = store_prepare(s, "SELECT id FROM jobs WHERE state IN ('queued','running') "
                                        "AND " SPEC_NAMES_SHA("jobs", "?1") " ORDER BY id");
    if (!st) return -EIO;
    sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
    size_t cap = 0;
    int rc = store_collect_ids(s, st, ids, n, &cap, "dataset users");
    sqlite3_finalize(st);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

int store_set_run_dataset(struct store *s, int64_t run, const char *sha256)
{
    if (s->readonly) return store_fail(s, -EROFS, "%s: read-only", s->path);
    if (!sha256_hex_valid(sha256))
        return store_fail(s, -EINVAL, "run %lld: bad dataset hash", (long long)run);
    int token = store_write_begin(s);
    if (token < 0) return token;
    sqlite3_stmt *st = store_prepare(s, "UPDATE jobs SET dataset_sha256 = ?2 WHERE id = ?1");
    int rc = -EIO;
    if (st) {
        sqlite3_bind_int64(st, 1, run);
        sqlite3_bind_text(st, 2, sha256, -1, SQLITE_STATIC);
        rc = store_step_finalize(s, st, "set run dataset");
        if (rc == 0 && sqlite3_changes(s->db) == 0)
            rc = store_fail(s, -ENOENT, "run %lld: no such run", (long long)run);
    }
    return store_write_end(s, token, rc == -ENOENT ? 0 : rc) ?: rc;
}
