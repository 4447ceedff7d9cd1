/* Private to the store: the handle, the statement cache and write helpers
 * shared by store.c, store_jobs.c and store_data.c. */
#ifndef MLQ_STORE_INTERNAL_H
#define MLQ_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

/* Every statement the store runs, prepared once on first use. */
enum stmt_id {
    ST_JOB_INSERT,
    ST_JOB_BY_REQUEST,
    ST_JOB_GET,
    ST_JOB_NEXT,
    ST_JOB_AHEAD,
    ST_JOB_IDS_BY_STATE,
    ST_JOB_COUNT,
    ST_JOB_RUNNING,
    ST_JOB_FINISH,
    ST_JOB_REQUEUE,
    ST_JOB_CANCEL_REQ,
    ST_JOB_STOP_REQ,
    ST_DEPS_BROKEN,
    ST_JOB_RESULT,
    ST_JOB_DELETE,
    ST_PARAMS_LIST,
    ST_METRIC_PUT,
    ST_METRICS_ALL,
    ST_METRICS_KEY,
    ST_METRICS_SINCE,
    ST_METRICS_FINAL,
    ST_CKPT_PUT,
    ST_CKPT_LAST,
    ST_CKPT_BEST,
    ST_CKPT_EPOCH,
    ST_CKPT_LIST,
    ST_CKPT_DELETE,
    ST_CKPT_PRUNE,
    ST_EVENT_ADD,
    ST_EVENTS_RUN,
    ST_TRAINER_UPSERT,
    ST_TRAINER_DELETE,
    ST_TRAINERS_PRUNE,
    ST_TRAINERS_LIST,
    ST_GC_SELECT_OLD,
    ST_GC_SELECT_BEYOND,
    ST_BEGIN, /* the transaction statements: prepared once, not per call */
    ST_COMMIT,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_N
};

struct store {
    sqlite3 *db;
    char path[1024];
    bool readonly;
    int keep_last;
    int version;
    double (*now)(void);
    sqlite3_stmt *stmt[ST_N];
    int wal_pages; /* frames in the WAL after the last commit (store_wal_manual) */
    char errmsg[512];
};

/* The prepared statement id, reset and with bindings cleared; NULL on
 * failure (message set). */
sqlite3_stmt *store_stmt(struct store *s, enum stmt_id id);
/* Records a failure: "what: sqlite message" and returns the mapped -errno. */
int store_fail_sql(struct store *s, int rc, const char *what);
int store_fail(struct store *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs a statement to completion (no rows expected). */
int store_step_done(struct store *s, sqlite3_stmt *st, const char *what);

/* An uncached statement, for calls that run once per epoch at most or from
 * the cli: the caller finalizes it. NULL on failure (message set). */
sqlite3_stmt *store_prepare(struct store *s, const char *sql);
/* store_step_done, then finalizes st (one of store_prepare's). */
int store_step_finalize(struct store *s, sqlite3_stmt *st, const char *what);
/* Room for one more element of size bytes in *p, which holds len of *cap:
 * doubles *cap (first the first time). 0 or -ENOMEM, message set; *p is
 * unchanged on failure. */
int store_grow(struct store *s, void **p, size_t *cap, size_t len, size_t size, size_t first);
/* Steps st to its end, appending column 0 of every row to *ids (*n of
 * *cap); neither resets nor finalizes st. 0 or -errno, message set (what
 * names the query); *ids stays the caller's to free either way. */
int store_collect_ids(struct store *s, sqlite3_stmt *st, int64_t **ids, size_t *n, size_t *cap,
                      const char *what);
/* Steps st to its end, its columns 0 and 1 as key/value pairs into *out
 * and *n (free with store_params_free); neither resets nor finalizes st. On
 * failure nothing is returned and the message is set. */
int store_collect_pairs(struct store *s, sqlite3_stmt *st, struct store_param **out, size_t *n,
                        const char *what);

/* A write section: own transaction when none is open, else a savepoint.
 * store_write_begin returns a token >= 0 or a negative errno; end commits
 * (rc == 0) or rolls back (rc < 0) and returns rc or the commit's error. */
int store_write_begin(struct store *s);
int store_write_end(struct store *s, int token, int rc);

/* Inserts a queued job (store_jobs.c); nj's sweep and experiment included. */
int store_insert_job(struct store *s, const struct store_new_job *nj, const char *request_id,
                     int64_t *id);

/* Text column as a malloc'd copy or NULL. */
char *store_col_strdup(sqlite3_stmt *st, int col);
void store_col_copy(sqlite3_stmt *st, int col, char *dst, size_t cap);
double store_col_time(sqlite3_stmt *st, int col);          /* NULL -> 0 */
void store_bind_time(sqlite3_stmt *st, int col, double t); /* 0 -> NULL */
void store_bind_text_or_null(sqlite3_stmt *st, int col, const char *text);

#endif
