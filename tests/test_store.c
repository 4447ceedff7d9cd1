/* The store's API: schema and migrations, the job queue, params, metrics,
 * checkpoints and retention, events, trainers, run listing, rm and gc. */
#include "test_store_util.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "store.h"

struct fx {
    char dir[512];
    char db[600];
    struct store *s;
};

static double fake_time = 1700000000.0;
static double fake_clock(void)
{
    return fake_time;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    tmpdir_make(f->dir, sizeof f->dir);
    assert_true(f->dir[0]);
    snprintf(f->db, sizeof f->db, "%s/sub/dir/mlq.db", f->dir);
    char err[512] = "";
    int ret = store_open(&f->s, f->db, STORE_CREATE, err, sizeof err);
    if (ret != 0) fail_msg("store_open: %s", err);
    fake_time = 1700000000.0;
    store_set_clock(f->s, fake_clock);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(&f->s);
    assert_null(f->s);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static int64_t submit(struct store *s, enum job_kind kind, int priority, const char *name,
                      const char *spec_json)
{
    struct store_new_job nj = {
        .kind = kind, .spec_json = spec_json, .priority = priority, .name = name};
    int64_t id = 0;
    assert_int_equal(store_job_submit(s, &nj, &id), 0);
    assert_true(id > 0);
    return id;
}

static const char *SPEC_ADAM =
    "{\"kind\":\"train\",\"optimizer\":{\"name\":\"adam\",\"lr\":0.001,\"weight_decay\":0.5},"
    "\"model\":{\"layers\":[784,128,64,10]},\"epochs\":3,\"batch_size\":64,"
    "\"dataset\":{\"path\":\"a.h5\"},\"shuffle\":true}";
static const char *SPEC_SGD = "{\"kind\":\"train\",\"optimizer\":{\"name\":\"sgd\",\"lr\":0.1}}";

/* ---- open, schema, migration ------------------------------------------------------- */

static void test_create_sets_schema(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    store_close(&f->s);
    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int(f->db, "PRAGMA auto_vacuum"), 2); /* incremental */
    assert_int_equal(raw_int(f->db, "PRAGMA application_id"), 0x6d6c7131);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_missing_db_not_created(void **state)
{
    struct fx *f = *state;
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/nope.db", f->dir);
    struct store *s = (struct store *)1;
    assert_int_equal(store_open(&s, path, STORE_READONLY, err, sizeof err), -ENOENT);
    assert_null(s);
    assert_non_null(strstr(err, path));
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), -ENOENT);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_v0_empty_file_migrated(void **state)
{
    struct fx *f = *state;
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/empty.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    struct store *s = NULL;
    /* A read-only open cannot migrate: a clear refusal, nothing written. */
    assert_int_equal(store_open(&s, path, STORE_READONLY, err, sizeof err), -EROFS);
    assert_non_null(strstr(err, "upgrade"));
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), 0);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    int64_t id = submit(s, JOB_TRAIN, 0, "x", SPEC_SGD);
    assert_int_equal(id, 1);
    store_close(&s);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int(path, "PRAGMA auto_vacuum"), 2);
}

/* A version-1 file (params a table of rows) keeps its runs and their params,
 * now read from the spec, and gains request ids. */
static void test_v1_params_table_migrated(void **state)
{
    struct fx *f = *state;
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/v1.db", f->dir);
    assert_int_equal(
        raw_exec(path,
                 "PRAGMA application_id = 0x6d6c7131;"
                 "CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT "
                 "NULL, priority INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
                 " max_attempts INTEGER NOT NULL DEFAULT 3, name TEXT NOT NULL DEFAULT '', spec "
                 "TEXT NOT NULL, trainer TEXT, run INTEGER REFERENCES jobs(id) ON DELETE SET "
                 "NULL, cancel_requested INTEGER NOT NULL DEFAULT 0, submitted REAL NOT NULL, "
                 "started REAL, finished REAL, error TEXT, result TEXT);"
                 "CREATE TABLE params (run INTEGER NOT NULL REFERENCES jobs(id) ON DELETE "
                 "CASCADE, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run, key)) "
                 "WITHOUT ROWID;"
                 "INSERT INTO jobs(id, kind, state, spec, submitted) VALUES (7, 'train', "
                 "'succeeded', '{\"optimizer\":{\"betas\":[0.90000000000000002,0.999],"
                 "\"lr\":3.0000000000000001e-5,\"nesterov\":false},\"epochs\":2,"
                 "\"batch_size\":32}', 1.0);"
                 "INSERT INTO params VALUES (7, 'optimizer.lr', '3e-05');"
                 "PRAGMA user_version = 1;"),
        SQLITE_OK);
    struct store *s = NULL;
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), 0);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    struct store_param *p;
    size_t n;
    assert_int_equal(store_params_list(s, 7, &p, &n), 0);
    assert_int_equal(n, 5);
    const char *want[][2] = {{"batch_size", "32"},
                             {"epochs", "2"},
                             {"optimizer.betas", "[0.9,0.999]"},
                             {"optimizer.lr", "3e-05"},
                             {"optimizer.nesterov", "false"}};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(p[i].key, want[i][0]);
        assert_string_equal(p[i].value, want[i][1]);
    }
    store_params_free(p, n);
    struct mlq_spec spec;
    spec_defaults(&spec);
    int64_t id;
    assert_int_equal(store_job_submit_spec(s, &spec, "r-1", &id, NULL), 0);
    assert_int_equal(id, 8);
    store_close(&s);
}

static void test_future_version_refused(void **state)
{
    struct fx *f = *state;
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/future.db", f->dir);
    assert_int_equal(raw_exec(path, "CREATE TABLE jobs(x); PRAGMA user_version = 99;"), SQLITE_OK);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    struct store *s = NULL;
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), -ENOTSUP);
    assert_null(s);
    assert_non_null(strstr(err, "99"));
    assert_non_null(strstr(err, "newer"));
    assert_int_equal(store_open(&s, path, STORE_READONLY, err, sizeof err), -ENOTSUP);
    /* Nothing written: same size, still version 99, not switched to WAL. */
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_size, after.st_size);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 99);
    char wal[720];
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_equal(access(wal, F_OK), -1);
}

static void test_corrupt_and_foreign_files(void **state)
{
    struct fx *f = *state;
    char path[700], err[512] = "";
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, fp);
    fclose(fp);
    struct store *s = NULL;
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "not an mlq database"));
    assert_null(s);

    snprintf(path, sizeof path, "%s/foreign.db", f->dir);
    assert_int_equal(raw_exec(path, "CREATE TABLE t(x)"), SQLITE_OK);
    assert_int_equal(store_open(&s, path, 0, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "not an mlq database"));
    assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_schema"), 1);
}

static void test_readonly(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 0, "r", SPEC_SGD);
    assert_int_equal(store_metric_put(f->s, id, "loss", 1, 1, 0.5, 0), 0);
    store_close(&f->s);
    /* A read-only file in a read-only directory with no -wal or -shm file (a
       backup on read-only media) still answers queries. Root ignores modes,
       so the check runs in a child that drops to nobody. */
    assert_int_equal(chmod(f->db, 0444), 0);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sub/dir", f->dir);
    assert_int_equal(chmod(dir, 0555), 0);
    snprintf(dir, sizeof dir, "%s/sub", f->dir);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(chmod(f->dir, 0755), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0)) _exit(3);
        char cerr[512] = "";
        struct store *cs = NULL;
        if (store_open(&cs, f->db, STORE_READONLY, cerr, sizeof cerr) != 0) {
            fprintf(stderr, "child: %s\n", cerr);
            _exit(1);
        }
        struct store_job cj;
        int r = store_job_get(cs, id, &cj);
        if (r == 0)
            store_job_free(&cj);
        else
            fprintf(stderr, "child: %s\n", store_errmsg(cs));
        store_close(&cs);
        _exit(r == 0 ? 0 : 2);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    snprintf(dir, sizeof dir, "%s/sub/dir", f->dir);

    char err[512] = "";
    struct store *s = NULL;
    int ret = store_open(&s, f->db, STORE_READONLY, err, sizeof err);
    if (ret != 0) fail_msg("read-only open: %s", err);
    struct store_job j;
    assert_int_equal(store_job_get(s, id, &j), 0);
    assert_string_equal(j.name, "r");
    store_job_free(&j);
    struct store_metric *m;
    size_t n;
    assert_int_equal(store_metrics_final(s, id, &m, &n), 0);
    assert_int_equal(n, 1);
    store_metrics_free(m, n);
    /* Writes refuse cleanly. */
    int64_t id2;
    struct store_new_job nj = {.kind = JOB_TRAIN, .spec_json = SPEC_SGD};
    assert_int_equal(store_job_submit(s, &nj, &id2), -EROFS);
    assert_int_equal(store_begin(s), -EROFS);
    assert_int_equal(store_metric_put(s, id, "loss", 2, 2, 0.4, 0), -EROFS);
    store_close(&s);
    chmod(dir, 0755);
    chmod(f->db, 0644);
    assert_int_equal(store_open(&f->s, f->db, 0, err, sizeof err), 0);
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void test_submit_and_params(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 5, "first", SPEC_ADAM);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, id, &j), 0);
    assert_int_equal(j.id, id);
    assert_int_equal(j.kind, JOB_TRAIN);
    assert_int_equal(j.state, STORE_QUEUED);
    assert_int_equal(j.priority, 5);
    assert_int_equal(j.attempts, 0);
    assert_int_equal(j.max_attempts, 3);
    assert_string_equal(j.name, "first");
    assert_string_equal(j.spec_json, SPEC_ADAM);
    assert_true(j.submitted == fake_time);
    assert_true(j.started == 0 && j.finished == 0);
    assert_null(j.error);
    store_job_free(&j);

    struct store_param *p;
    size_t n;
    assert_int_equal(store_params_list(f->s, id, &p, &n), 0);
    assert_int_equal(n, 9);
    const char *want[][2] = {{"batch_size", "64"},
                             {"dataset.path", "a.h5"},
                             {"epochs", "3"},
                             {"kind", "train"},
                             {"model.layers", "[784,128,64,10]"},
                             {"optimizer.lr", "0.001"},
                             {"optimizer.name", "adam"},
                             {"optimizer.weight_decay", "0.5"},
                             {"shuffle", "true"}};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(p[i].key, want[i][0]);
        assert_string_equal(p[i].value, want[i][1]);
    }
    store_params_free(p, n);

    struct store_new_job bad = {.kind = JOB_TRAIN, .spec_json = "[1,2]"};
    int64_t bid;
    assert_int_equal(store_job_submit(f->s, &bad, &bid), -EINVAL);
    assert_int_equal(store_job_get(f->s, 999, &j), -ENOENT);
    assert_non_null(strstr(store_errmsg(f->s), "999"));
}

/* A repeated submission with its request id is the same job, once; the
 * same id with another spec is refused; no id makes a new job each time. */
static void test_submit_request_id(void **state)
{
    struct fx *f = *state;
    struct mlq_spec spec;
    spec_defaults(&spec);
    snprintf(spec.dataset.path, sizeof spec.dataset.path, "train.h5");
    int64_t a, b, c, d;
    bool existed = true;
    assert_int_equal(store_job_submit_spec(f->s, &spec, "req-1", &a, &existed), 0);
    assert_false(existed);
    assert_int_equal(store_job_submit_spec(f->s, &spec, "req-1", &b, &existed), 0);
    assert_true(existed);
    assert_int_equal(b, a);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, a, &j), 0);
    assert_string_equal(j.request_id, "req-1");
    store_job_free(&j);
    assert_int_equal(store_job_submit_spec(f->s, &spec, NULL, &c, &existed), 0);
    assert_false(existed);
    assert_int_equal(store_job_submit_spec(f->s, &spec, NULL, &d, NULL), 0);
    assert_true(c != a && d != c);
    spec.epochs = 99;
    assert_int_equal(store_job_submit_spec(f->s, &spec, "req-1", &b, &existed), -EEXIST);
    assert_non_null(strstr(store_errmsg(f->s), "req-1"));
    assert_int_equal(store_job_submit_spec(f->s, &spec, "", &b, NULL), -EINVAL);
    int64_t counts[STORE_N_STATES] = {0};
    assert_int_equal(store_job_count_by_state(f->s, counts), 0);
    assert_int_equal(counts[STORE_QUEUED], 3);
}

static void test_submit_spec(void **state)
{
    struct fx *f = *state;
    struct mlq_spec spec;
    spec_defaults(&spec);
    snprintf(spec.name, sizeof spec.name, "from-spec");
    snprintf(spec.dataset.path, sizeof spec.dataset.path, "train.h5");
    spec.priority = 7;
    spec.max_attempts = 5;
    int64_t id;
    assert_int_equal(store_job_submit_spec(f->s, &spec, NULL, &id, NULL), 0);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, id, &j), 0);
    assert_string_equal(j.name, "from-spec");
    assert_int_equal(j.priority, 7);
    assert_int_equal(j.max_attempts, 5);
    struct mlq_spec back;
    char err[256];
    if (spec_parse(j.spec_json, &back, err, sizeof err) != 0)
        fail_msg("canonical spec does not parse: %s", err);
    assert_int_equal(back.layers[1], 128);
    store_job_free(&j);
    struct store_run_filter rf = {.state = -1,
                                  .kind = -1,
                                  .n_where = 1,
                                  .where_key = {"model.layers"},
                                  .where_value = {"[784,128,64,10]"}};
    struct store_job *runs;
    size_t n;
    assert_int_equal(store_runs_list(f->s, &rf, &runs, &n), 0);
    assert_int_equal(n, 1);
    store_jobs_free(&runs, n);
}

static void test_queue_order_and_states(void **state)
{
    struct fx *f = *state;
    int64_t a = submit(f->s, JOB_TRAIN, 0, "a", SPEC_SGD);
    int64_t b = submit(f->s, JOB_TRAIN, 9, "b", SPEC_SGD);
    int64_t c = submit(f->s, JOB_TRAIN, 9, "c", SPEC_SGD);
    int64_t d = submit(f->s, JOB_TRAIN, 0, "d", SPEC_SGD);
    struct store_job j;
    int64_t order[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(store_job_next_queued(f->s, &j), 0);
        order[i] = j.id;
        store_job_free(&j);
        fake_time += 1;
        assert_int_equal(store_job_set_running(f->s, order[i], "t1"), 0);
    }
    assert_int_equal(order[0], b);
    assert_int_equal(order[1], c);
    assert_int_equal(order[2], a);
    assert_int_equal(order[3], d);
    assert_int_equal(store_job_next_queued(f->s, &j), -ENOENT);

    assert_int_equal(store_job_get(f->s, b, &j), 0);
    assert_int_equal(j.state, STORE_RUNNING);
    assert_int_equal(j.attempts, 1);
    assert_string_equal(j.trainer, "t1");
    assert_true(j.started > 0);
    store_job_free(&j);

    /* Requeue keeps attempts; the next dispatch adds one. */
    assert_int_equal(store_job_requeue(f->s, b, "trainer t1 went silent"), 0);
    assert_int_equal(store_job_get(f->s, b, &j), 0);
    assert_int_equal(j.state, STORE_QUEUED);
    assert_int_equal(j.attempts, 1);
    assert_string_equal(j.trainer, "");
    store_job_free(&j);
    assert_int_equal(store_job_set_running(f->s, b, "t2"), 0);
    assert_int_equal(store_job_get(f->s, b, &j), 0);
    assert_int_equal(j.attempts, 2);
    assert_string_equal(j.trainer, "t2");
    store_job_free(&j);

    assert_int_equal(store_job_request_cancel(f->s, c), 0);
    assert_int_equal(store_job_get(f->s, c, &j), 0);
    assert_true(j.cancel_requested);
    store_job_free(&j);

    fake_time += 10;
    assert_int_equal(store_job_set_succeeded(f->s, a), 0);
    assert_int_equal(store_job_set_failed(f->s, b, "NaN loss"), 0);
    assert_int_equal(store_job_set_cancelled(f->s, c, NULL), 0);
    assert_int_equal(store_job_set_result(f->s, a, "{\"accuracy\":0.9}"), 0);
    assert_int_equal(store_job_get(f->s, b, &j), 0);
    assert_int_equal(j.state, STORE_FAILED);
    assert_string_equal(j.error, "NaN loss");
    assert_true(j.finished == fake_time);
    store_job_free(&j);
    assert_int_equal(store_job_get(f->s, a, &j), 0);
    assert_string_equal(j.result_json, "{\"accuracy\":0.9}");
    store_job_free(&j);

    int64_t *ids;
    size_t n;
    assert_int_equal(store_job_ids_by_state(f->s, STORE_RUNNING, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], d);
    free(ids);
    int64_t counts[STORE_N_STATES];
    assert_int_equal(store_job_count_by_state(f->s, counts), 0);
    assert_int_equal(counts[STORE_SUCCEEDED], 1);
    assert_int_equal(counts[STORE_FAILED], 1);
    assert_int_equal(counts[STORE_CANCELLED], 1);
    assert_int_equal(counts[STORE_RUNNING], 1);
    assert_int_equal(counts[STORE_QUEUED], 0);

    assert_int_equal(store_job_set_running(f->s, 12345, "t"), -ENOENT);
    assert_int_equal(store_job_requeue(f->s, 12345, "x"), -ENOENT);
}

static int collect_event(void *ctx, const struct store_event *e)
{
    char *buf = ctx;
    strncat(buf, e->level, 63);
    strncat(buf, ":", 2);
    strncat(buf, e->message, 200);
    strncat(buf, ";", 2);
    return 0;
}

static void test_events_and_trainers(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 0, "e", SPEC_SGD);
    assert_int_equal(store_event_add(f->s, id, "info", "started"), 0);
    assert_int_equal(store_job_set_running(f->s, id, "t1"), 0);
    assert_int_equal(store_job_requeue(f->s, id, "silent"), 0);
    assert_int_equal(store_event_add(f->s, 0, "info", "broker up"), 0);
    assert_int_equal(store_event_add(f->s, 4242, "info", "x"), -ENOENT);
    char buf[1024] = "";
    assert_int_equal(store_events_foreach(f->s, id, collect_event, buf), 0);
    assert_string_equal(buf, "info:started;warn:requeued: silent;");
    buf[0] = '\0';
    assert_int_equal(store_events_foreach(f->s, 0, collect_event, buf), 0);
    assert_string_equal(buf, "info:broker up;");

    struct store_trainer t = {.name = "t1",
                              .host = "h1",
                              .state = "busy",
                              .job = id,
                              .last_heartbeat = 5.5,
                              .version = "0.1.0",
                              .capabilities = "{\"threads\":4}"};
    assert_int_equal(store_trainer_upsert(f->s, &t), 0);
    snprintf(t.state, sizeof t.state, "idle");
    t.job = 0;
    assert_int_equal(store_trainer_upsert(f->s, &t), 0);
    struct store_trainer u = {.name = "a0", .state = "gone"};
    assert_int_equal(store_trainer_upsert(f->s, &u), 0);
    struct store_trainer *list;
    size_t n;
    assert_int_equal(store_trainers_list(f->s, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "a0");
    assert_string_equal(list[1].name, "t1");
    assert_string_equal(list[1].state, "idle");
    assert_int_equal(list[1].job, 0);
    assert_true(list[1].last_heartbeat == 5.5);
    assert_string_equal(list[1].capabilities, "{\"threads\":4}");
    assert_null(list[0].capabilities);
    store_trainers_free(list, n);
    assert_int_equal(store_trainer_delete(f->s, "a0"), 0);
    assert_int_equal(store_trainer_delete(f->s, "a0"), -ENOENT);
}

static void test_transactions(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_begin(f->s), 0);
    assert_true(store_in_transaction(f->s));
    assert_int_equal(store_begin(f->s), -EINVAL);
    int64_t a = submit(f->s, JOB_TRAIN, 0, "a", SPEC_ADAM);
    assert_int_equal(store_rollback(f->s), 0);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, a, &j), -ENOENT);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM params"), 0);

    assert_int_equal(store_begin(f->s), 0);
    int64_t b = submit(f->s, JOB_TRAIN, 0, "b", SPEC_ADAM);
    /* A failing call inside leaves the transaction and earlier calls intact. */
    assert_int_equal(store_metric_put(f->s, 999, "loss", 1, 1, 1.0, 0), -ENOENT);
    assert_int_equal(store_metric_put(f->s, b, "loss", 1, 1, 1.0, 0), 0);
    /* Not visible to another connection before commit. */
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(store_commit(f->s), 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 1);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM metrics"), 1);
    assert_int_equal(store_commit(f->s), -EINVAL);
}

/* ---- metrics --------------------------------------------------------------------------- */

struct collected {
    int n;
    char keys[32][32];
    int64_t steps[32];
    double values[32];
};

static int collect_metric(void *ctx, const struct store_metric *m)
{
    struct collected *c = ctx;
    if (c->n == 32) return 1;
    snprintf(c->keys[c->n], sizeof c->keys[0], "%s", m->key);
    c->steps[c->n] = m->step;
    c->values[c->n] = m->value;
    c->n++;
    return 0;
}

static void test_metrics_idempotent(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 0, "m", SPEC_SGD);
    for (int e = 1; e <= 3; e++) {
        assert_int_equal(store_metric_put(f->s, id, "train_loss", e * 100, e, 1.0 / e, 0), 0);
        assert_int_equal(store_metric_put(f->s, id, "val_loss", e * 100, e, 2.0 / e, 0), 0);
    }
    /* Sent twice (a resumed run replays its last epoch): stored once. */
    assert_int_equal(store_metric_put(f->s, id, "val_loss", 200, 2, 1.0, 0), 0);
    struct store_metric batch[2] = {{.key = "val_loss", .step = 300, .epoch = 3, .value = 0.5},
                                    {.key = "val_loss", .step = 300, .epoch = 3, .value = 0.5}};
    assert_int_equal(store_metrics_put(f->s, id, batch, 2), 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM metrics"), 6);

    struct collected c = {0};
    assert_int_equal(store_metrics_foreach(f->s, id, "val_loss", collect_metric, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.steps[0], 100);
    assert_int_equal(c.steps[2], 300);
    assert_true(c.values[1] == 1.0);
    assert_true(c.values[2] == 0.5);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_metrics_foreach(f->s, id, NULL, collect_metric, &c), 0);
    assert_int_equal(c.n, 6);
    assert_string_equal(c.keys[0], "train_loss");
    assert_string_equal(c.keys[5], "val_loss");

    /* Final metrics: last step per key, even when an older step arrives late. */
    assert_int_equal(store_metric_put(f->s, id, "train_loss", 50, 0, 9.0, 0), 0);
    struct store_metric *m;
    size_t n;
    assert_int_equal(store_metrics_final(f->s, id, &m, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].key, "train_loss");
    assert_int_equal(m[0].step, 300);
    assert_true(fabs(m[0].value - 1.0 / 3) < 1e-12);
    assert_string_equal(m[1].key, "val_loss");
    assert_true(m[1].value == 0.5);
    store_metrics_free(m, n);

    /* NaN survives as NaN; bad keys and unknown runs are refused. */
    assert_int_equal(store_metric_put(f->s, id, "nan_loss", 1, 1, NAN, 0), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_metrics_foreach(f->s, id, "nan_loss", collect_metric, &c), 0);
    assert_true(isnan(c.values[0]));
    assert_int_equal(store_metric_put(f->s, id, "", 1, 1, 1, 0), -EINVAL);
    assert_int_equal(store_metric_put(f->s, 777, "x", 1, 1, 1, 0), -ENOENT);
    /* A callback's non-zero return stops the walk and comes back. */
    struct collected full = {.n = 32};
    assert_int_equal(store_metrics_foreach(f->s, id, NULL, collect_metric, &full), 1);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static void test_checkpoints_retention(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 0, "c", SPEC_SGD);
    /* Losses per epoch: the best is epoch 2. */
    const double loss[] = {0.9, 0.2, 0.5, 0.4, 0.6, 0.7};
    for (int e = 1; e <= 6; e++) {
        char blob[64];
        snprintf(blob, sizeof blob, "checkpoint of epoch %d", e);
        int64_t cid;
        assert_int_equal(
            store_checkpoint_put(f->s, id, e, e * 10, blob, strlen(blob) + 1, loss[e - 1], &cid),
            0);
        assert_true(cid > 0);
    }
    struct store_checkpoint *list;
    size_t n;
    assert_int_equal(store_checkpoints_list(f->s, id, &list, &n), 0);
    assert_int_equal(n, 4); /* last 3 + the best */
    int64_t epochs[4];
    for (size_t i = 0; i < n; i++) {
        epochs[i] = list[i].epoch;
        assert_null(list[i].blob);
        assert_true(list[i].size > 0);
    }
    assert_int_equal(epochs[0], 2);
    assert_int_equal(epochs[1], 4);
    assert_int_equal(epochs[2], 5);
    assert_int_equal(epochs[3], 6);
    store_checkpoints_free(list, n);

    struct store_checkpoint c;
    assert_int_equal(store_checkpoint_get(f->s, id, STORE_CKPT_LAST, 0, &c), 0);
    assert_int_equal(c.epoch, 6);
    assert_string_equal((char *)c.blob, "checkpoint of epoch 6");
    store_checkpoint_free(&c);
    assert_int_equal(store_checkpoint_get(f->s, id, STORE_CKPT_BEST, 0, &c), 0);
    assert_int_equal(c.epoch, 2);
    assert_true(c.has_metric && c.metric == 0.2);
    int64_t best_id = c.id;
    store_checkpoint_free(&c);
    assert_int_equal(store_checkpoint_get(f->s, id, STORE_CKPT_EPOCH, 5, &c), 0);
    assert_string_equal((char *)c.blob, "checkpoint of epoch 5");
    store_checkpoint_free(&c);
    assert_int_equal(store_checkpoint_get(f->s, id, STORE_CKPT_EPOCH, 1, &c), -ENOENT);

    /* A flipped byte is caught by the checksum. */
    char sql[200];
    snprintf(sql, sizeof sql,
             "UPDATE checkpoints SET blob = CAST('Checkpoint of epoch 2' || x'00' AS BLOB) "
             "WHERE id = %lld",
             (long long)best_id);
    assert_int_equal(raw_exec(f->db, sql), SQLITE_OK);
    assert_int_equal(store_checkpoint_get(f->s, id, STORE_CKPT_BEST, 0, &c), -EBADMSG);
    assert_non_null(strstr(store_errmsg(f->s), "checksum"));

    /* Retention 0 keeps everything; an explicit prune applies a limit now. */
    store_set_retention(f->s, 0);
    for (int e = 7; e <= 9; e++)
        assert_int_equal(store_checkpoint_put(f->s, id, e, e * 10, "x", 1, NAN, NULL), 0);
    assert_int_equal(store_checkpoints_list(f->s, id, &list, &n), 0);
    assert_int_equal(n, 7);
    store_checkpoints_free(list, n);
    assert_int_equal(store_checkpoints_prune(f->s, id, 1), 0);
    assert_int_equal(store_checkpoints_list(f->s, id, &list, &n), 0);
    assert_int_equal(n, 2); /* epoch 9 and the best */
    assert_int_equal(list[0].epoch, 2);
    assert_int_equal(list[1].epoch, 9);
    assert_int_equal(store_checkpoint_delete(f->s, list[1].id), 0);
    assert_int_equal(store_checkpoint_delete(f->s, list[1].id), -ENOENT);
    store_checkpoints_free(list, n);

    enum store_ckpt_which w;
    int64_t ep;
    assert_int_equal(store_ckpt_which_parse("best", &w, &ep), 0);
    assert_int_equal(w, STORE_CKPT_BEST);
    assert_int_equal(store_ckpt_which_parse("12", &w, &ep), 0);
    assert_int_equal(w, STORE_CKPT_EPOCH);
    assert_int_equal(ep, 12);
    assert_int_equal(store_ckpt_which_parse("1x", &w, &ep), -EINVAL);
    assert_int_equal(store_checkpoint_put(f->s, 4242, 1, 1, "x", 1, NAN, NULL), -ENOENT);
}

/* ---- listing, rm, gc ------------------------------------------------------------------------ */

static void test_runs_list_filters(void **state)
{
    struct fx *f = *state;
    int64_t a = submit(f->s, JOB_TRAIN, 0, "a", SPEC_ADAM);
    int64_t b = submit(f->s, JOB_TRAIN, 0, "b", SPEC_SGD);
    int64_t c = submit(f->s, JOB_TRAIN, 0, "c", SPEC_ADAM);
    struct store_new_job ev = {
        .kind = JOB_EVAL, .spec_json = "{\"kind\":\"eval\",\"run\":1}", .run = a};
    int64_t e;
    assert_int_equal(store_job_submit(f->s, &ev, &e), 0);
    assert_int_equal(store_job_set_running(f->s, a, "t"), 0);
    assert_int_equal(store_job_set_succeeded(f->s, a), 0);
    assert_int_equal(store_metric_put(f->s, a, "val_loss", 1, 1, 0.3, 0), 0);
    assert_int_equal(store_metric_put(f->s, b, "val_loss", 1, 1, 0.1, 0), 0);
    assert_int_equal(store_metric_put(f->s, c, "val_loss", 1, 1, 0.2, 0), 0);

    struct store_run_filter rf = {.state = -1, .kind = -1};
    struct store_job *r;
    size_t n;
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(r[0].id, e); /* newest first */
    assert_int_equal(r[0].run, a);
    assert_null(r[0].spec_json);
    store_jobs_free(&r, n);

    rf.kind = JOB_TRAIN;
    rf.limit = 2;
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].id, c);
    assert_int_equal(r[1].id, b);
    store_jobs_free(&r, n);

    rf.limit = 0;
    rf.state = STORE_SUCCEEDED;
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].id, a);
    store_jobs_free(&r, n);

    rf.state = -1;
    rf.n_where = 1;
    rf.where_key[0] = "optimizer.name";
    rf.where_value[0] = "adam";
    rf.sort_metric = "val_loss";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].id, c); /* 0.2 before 0.3 */
    assert_int_equal(r[1].id, a);
    store_jobs_free(&r, n);

    rf.sort_desc = true;
    rf.n_where = 2;
    rf.where_key[1] = "optimizer.lr";
    rf.where_value[1] = "0.001";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].id, a);
    store_jobs_free(&r, n);

    /* Numbers compare as numbers, other values as the params view shows them. */
    rf.where_value[1] = "1e-3";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    store_jobs_free(&r, n);
    rf.where_value[1] = "0.0011";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 0);
    store_jobs_free(&r, n);
    rf.n_where = 1;
    rf.where_key[0] = "model.layers";
    rf.where_value[0] = "[784,128,64,10]";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    store_jobs_free(&r, n);
    rf.where_key[0] = "shuffle";
    rf.where_value[0] = "true";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    store_jobs_free(&r, n);
    rf.where_key[0] = "batch_size";
    rf.where_value[0] = "64";
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 2);
    store_jobs_free(&r, n);
    const char *bad_keys[] = {"optimizer.lr') OR 1=1 --", "optimizer..lr", "optimizer.", ""};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        rf.where_key[0] = bad_keys[i];
        assert_int_equal(store_runs_list(f->s, &rf, &r, &n), -EINVAL);
        assert_non_null(strstr(store_errmsg(f->s), "not a param key"));
    }
    rf.n_where = 2;
    rf.where_key[0] = "optimizer.name";
    rf.where_value[0] = "adam";

    /* Runs without the sort metric come last. */
    rf.n_where = 0;
    rf.kind = -1;
    rf.sort_desc = false;
    assert_int_equal(store_runs_list(f->s, &rf, &r, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(r[0].id, b);
    assert_int_equal(r[3].id, e);
    store_jobs_free(&r, n);
}

static void test_rm_cascades(void **state)
{
    struct fx *f = *state;
    int64_t a = submit(f->s, JOB_TRAIN, 0, "a", SPEC_ADAM);
    int64_t keep = submit(f->s, JOB_TRAIN, 0, "keep", SPEC_ADAM);
    struct store_new_job ev = {.kind = JOB_EVAL, .spec_json = "{}", .run = a};
    int64_t e;
    assert_int_equal(store_job_submit(f->s, &ev, &e), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_metric_put(f->s, a, "loss", i, i, 1, 0), 0);
        assert_int_equal(store_metric_put(f->s, keep, "loss", i, i, 1, 0), 0);
    }
    assert_int_equal(store_checkpoint_put(f->s, a, 1, 1, "blob", 4, 0.5, NULL), 0);
    assert_int_equal(store_event_add(f->s, a, "info", "hi"), 0);
    assert_int_equal(store_run_delete(f->s, a), 0);
    assert_int_equal(store_run_delete(f->s, a), -ENOENT);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM params WHERE run = %lld", (long long)a);
    assert_int_equal(raw_int(f->db, sql), 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM metrics"), 3);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM final_metrics"), 1);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM checkpoints"), 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM events"), 0);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, e, &j), 0);
    assert_int_equal(j.run, 0);
    store_job_free(&j);
    assert_int_equal(store_integrity_check(f->s), 0);
}

static void test_gc(void **state)
{
    struct fx *f = *state;
    /* 6 finished runs a day apart with a 256 KiB checkpoint each, 1 queued, 1 running. */
    static char blob[256 * 1024];
    memset(blob, 'x', sizeof blob);
    int64_t ids[6];
    for (int i = 0; i < 6; i++) {
        ids[i] = submit(f->s, JOB_TRAIN, 0, "old", SPEC_SGD);
        assert_int_equal(store_job_set_running(f->s, ids[i], "t"), 0);
        assert_int_equal(store_checkpoint_put(f->s, ids[i], 1, 1, blob, sizeof blob, 1, NULL), 0);
        assert_int_equal(store_job_set_succeeded(f->s, ids[i]), 0);
        fake_time += 86400;
    }
    int64_t queued = submit(f->s, JOB_TRAIN, 0, "q", SPEC_SGD);
    int64_t running = submit(f->s, JOB_TRAIN, 0, "r", SPEC_SGD);
    assert_int_equal(store_job_set_running(f->s, running, "t"), 0);
    (void)queued;

    int64_t deleted;
    struct store_gc_opts dry = {.keep = -1, .older_than = 2.5 * 86400, .dry_run = true};
    assert_int_equal(store_gc(f->s, &dry, &deleted), 0);
    assert_int_equal(deleted, 4); /* finished 6, 5, 4, 3 days ago */
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 8);

    long long pages_before = raw_int(f->db, "PRAGMA page_count");
    struct store_gc_opts o = {.keep = -1, .older_than = 2.5 * 86400};
    assert_int_equal(store_gc(f->s, &o, &deleted), 0);
    assert_int_equal(deleted, 4);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 4);
    assert_int_equal(raw_int(f->db, "PRAGMA freelist_count"), 0);
    assert_true(raw_int(f->db, "PRAGMA page_count") < pages_before - 200);

    struct store_gc_opts keep1 = {.keep = 1};
    assert_int_equal(store_gc(f->s, &keep1, &deleted), 0);
    assert_int_equal(deleted, 1);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, ids[5], &j), 0); /* the newest finished stays */
    store_job_free(&j);
    assert_int_equal(store_job_get(f->s, ids[4], &j), -ENOENT);
    /* Nothing left to collect: zero deleted, no error. */
    struct store_gc_opts keep100 = {.keep = 100};
    assert_int_equal(store_gc(f->s, &keep100, &deleted), 0);
    assert_int_equal(deleted, 0);
    int64_t counts[STORE_N_STATES];
    assert_int_equal(store_job_count_by_state(f->s, counts), 0);
    assert_int_equal(counts[STORE_QUEUED], 1);
    assert_int_equal(counts[STORE_RUNNING], 1);
    assert_int_equal(store_integrity_check(f->s), 0);
}

/* ---- pushed datasets (schema 6) -------------------------------------------------------- */

static const char SHA_A[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char SHA_B[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* A version-5 file (made by taking this version's tables away again, the
 * schema's own ALTER TABLE DROP COLUMN) keeps its runs, with no dataset hash,
 * and gains the datasets table. */
static void test_v5_gains_datasets(void **state)
{
    struct fx *f = *state;
    int64_t id = submit(f->s, JOB_TRAIN, 0, "old", SPEC_ADAM);
    store_close(&f->s);
    assert_int_equal(raw_exec(f->db, "DROP INDEX jobs_dataset_sha256;"
                                     "ALTER TABLE jobs DROP COLUMN dataset_sha256;"
                                     "DROP TABLE datasets;"
                                     "PRAGMA user_version = 5;"),
                     SQLITE_OK);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_schema WHERE name = 'datasets'"),
                     0);
    char err[512] = "";
    struct store *ro = NULL;
    assert_int_equal(store_open(&ro, f->db, STORE_READONLY, err, sizeof err), -EROFS);
    assert_int_equal(store_open(&f->s, f->db, 0, err, sizeof err), 0);
    assert_int_equal(store_schema_version(f->s), 6);
    struct store_job j;
    assert_int_equal(store_job_get(f->s, id, &j), 0);
    assert_string_equal(j.name, "old");
    assert_null(j.dataset_sha256);
    store_job_free(&j);
    assert_int_equal(store_set_run_dataset(f->s, id, SHA_A), 0);
    assert_int_equal(store_job_get(f->s, id, &j), 0);
    assert_string_equal(j.dataset_sha256, SHA_A);
    store_job_free(&j);
    struct store_dataset d = {.name = "fmnist", .size = 5};
    memcpy(d.sha256, SHA_A, 65);
    assert_int_equal(store_dataset_put(f->s, &d), 0);
    assert_int_equal(raw_int(f->db, "SELECT size FROM datasets WHERE name = 'fmnist'"), 5);
}

static void test_datasets(void **state)
{
    struct fx *f = *state;
    struct store_dataset d = {.name = "train", .size = 100, .owner = "alice"}, got;
    memcpy(d.sha256, SHA_A, 65);
    assert_int_equal(store_dataset_put(f->s, &d), 0);
    snprintf(d.name, sizeof d.name, "also-a");
    d.owner[0] = '\0';
    fake_time += 10;
    assert_int_equal(store_dataset_put(f->s, &d), 0);
    assert_int_equal(store_dataset_get(f->s, "train", &got), 0);
    assert_string_equal(got.sha256, SHA_A);
    assert_int_equal(got.size, 100);
    assert_string_equal(got.owner, "alice");
    assert_true(got.pushed == 1700000000.0);
    assert_int_equal(store_dataset_get(f->s, "nope", &got), -ENOENT);
    assert_int_equal(store_dataset_by_sha(f->s, SHA_A, &got), 0);
    assert_string_equal(got.name, "also-a"); /* the first by name */
    assert_int_equal(store_dataset_by_sha(f->s, SHA_B, &got), -ENOENT);
    /* Bad hashes and names never reach the table. */
    struct store_dataset bad = d;
    bad.sha256[3] = 'G';
    assert_int_equal(store_dataset_put(f->s, &bad), -EINVAL);
    bad = d;
    bad.name[0] = '\0';
    assert_int_equal(store_dataset_put(f->s, &bad), -EINVAL);

    /* Runs: one that read A (its trainer said so), one queued that names A,
     * one running that validates on A, one finished whose spec names B. */
    int64_t r1 = submit(f->s, JOB_TRAIN, 0, "r1", SPEC_SGD);
    assert_int_equal(store_set_run_dataset(f->s, r1, SHA_A), 0);
    assert_int_equal(store_set_run_dataset(f->s, r1, "short"), -EINVAL);
    assert_int_equal(store_set_run_dataset(f->s, 999, SHA_A), -ENOENT);
    char spec[512];
    snprintf(spec, sizeof spec, "{\"kind\":\"train\",\"dataset\":{\"sha256\":\"%s\"}}", SHA_A);
    int64_t r2 = submit(f->s, JOB_TRAIN, 0, "r2", spec);
    snprintf(spec, sizeof spec,
             "{\"kind\":\"train\",\"dataset\":{\"path\":\"x.h5\"},\"validation\":{\"sha256\":"
             "\"%s\"}}",
             SHA_A);
    int64_t r3 = submit(f->s, JOB_TRAIN, 0, "r3", spec);
    assert_int_equal(store_job_set_running(f->s, r3, "t1"), 0);
    snprintf(spec, sizeof spec, "{\"kind\":\"train\",\"dataset\":{\"sha256\":\"%s\"}}", SHA_B);
    int64_t r4 = submit(f->s, JOB_TRAIN, 0, "r4", spec);
    assert_int_equal(store_job_set_running(f->s, r4, "t1"), 0);
    assert_int_equal(store_job_set_succeeded(f->s, r4), 0);
    (void)r2;

    int64_t *ids;
    size_t n;
    assert_int_equal(store_dataset_users(f->s, SHA_A, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], r2);
    assert_int_equal(ids[1], r3);
    free(ids);
    assert_int_equal(store_dataset_users(f->s, SHA_B, &ids, &n), 0);
    assert_int_equal(n, 0); /* r4 is finished: it needs nothing any more */
    free(ids);

    struct store_dataset *v;
    assert_int_equal(store_datasets_list(f->s, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "also-a");
    assert_string_equal(v[1].name, "train");
    assert_int_equal(v[1].runs, 3);
    free(v);

    /* The name moves to other bytes (push --replace). */
    memcpy(d.sha256, SHA_B, 65);
    snprintf(d.name, sizeof d.name, "train");
    d.size = 7;
    assert_int_equal(store_dataset_put(f->s, &d), 0);
    assert_int_equal(store_dataset_get(f->s, "train", &got), 0);
    assert_string_equal(got.sha256, SHA_B);
    assert_int_equal(got.size, 7);
    assert_int_equal(store_dataset_delete(f->s, "train"), 0);
    assert_int_equal(store_dataset_delete(f->s, "train"), -ENOENT);
    assert_int_equal(store_dataset_get(f->s, "train", &got), -ENOENT);
    assert_int_equal(store_datasets_list(f->s, &v, &n), 0);
    assert_int_equal(n, 1);
    free(v);
}

static void test_default_path(void **state)
{
    (void)state;
    char buf[256];
    setenv("MLQ_DB", "/x/y.db", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/x/y.db");
    unsetenv("MLQ_DB");
    setenv("XDG_DATA_HOME", "/data", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/data/mlq/mlq.db");
    setenv("XDG_DATA_HOME", "relative", 1);
    setenv("HOME", "/home/u", 1);
    assert_int_equal(store_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/home/u/.local/share/mlq/mlq.db");
    assert_int_equal(store_default_path(buf, 8), -ENAMETOOLONG);
    unsetenv("XDG_DATA_HOME");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_sets_schema),
        T(test_missing_db_not_created),
        T(test_v0_empty_file_migrated),
        T(test_v1_params_table_migrated),
        T(test_future_version_refused),
        T(test_corrupt_and_foreign_files),
        T(test_readonly),
        T(test_submit_and_params),
        T(test_submit_request_id),
        T(test_submit_spec),
        T(test_queue_order_and_states),
        T(test_events_and_trainers),
        T(test_transactions),
        T(test_metrics_idempotent),
        T(test_checkpoints_retention),
        T(test_runs_list_filters),
        T(test_rm_cascades),
        T(test_gc),
        T(test_v5_gains_datasets),
        T(test_datasets),
        T(test_default_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
