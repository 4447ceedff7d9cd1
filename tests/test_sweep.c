/* Sweeps through real mlq-broker, mlq-trainer and mlq processes on a small
 * subset of Fashion-MNIST (issue 12, docs/sweeps.md): ASHA and the median
 * rule stop trials from the metrics the trainers stream, every decision
 * recorded once and consistent with the trial's end; --max-parallel caps
 * the running trials; the same seed yields the same trials; mlq cancel
 * --sweep ends a sweep; 20 kill -9s of the broker mid-sweep leave every
 * trial in one terminal state, every epoch's metrics once and no decision
 * lost or taken twice; bad spaces and settings are refused (exit 2,
 * nothing queued) and the broker survives hostile SWEEP messages and
 * diverging trials; sweep.max_trials in the config file limits a sweep;
 * mlq top shows stopped trials and the sweeps with trials left; mlq sweep
 * rm refuses a sweep with live trials and deletes one with or without its
 * trial runs. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zlib.h>

#include "broker_harness.h"
#include "proto.h"
#include "store.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"

/* ---- fixtures ------------------------------------------------------------------------ */

/* The first n images of Fashion-MNIST's training set as an IDX pair, then
 * HDF5 through mlq dataset import-idx. Without the dataset (set
 * MLQ_FASHION_MNIST), a synthetic one of the same shape. */
static void fmnist(struct harness *h, int n, char *path, size_t len)
{
    const char *dir = getenv("MLQ_FASHION_MNIST");
    if (!dir) dir = "/usr/share/datasets/fashion-mnist";
    char src[2][512], dst[2][512];
    snprintf(src[0], sizeof src[0], "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(src[1], sizeof src[1], "%s/train-labels-idx1-ubyte.gz", dir);
    snprintf(dst[0], sizeof dst[0], "%s/fm-images", h->dir);
    snprintf(dst[1], sizeof dst[1], "%s/fm-labels", h->dir);
    snprintf(path, len, "%s/fmnist.h5", h->dir);
    if (access(src[0], R_OK) != 0 || access(src[1], R_OK) != 0) {
        fprintf(stderr, "no Fashion-MNIST in %s: a synthetic dataset instead\n", dir);
        h_dataset(h, "fmnist.h5", n, 784, 10, 5, path, len);
        return;
    }
    for (int f = 0; f < 2; f++) {
        gzFile in = gzopen(src[f], "rb");
        assert_non_null(in);
        size_t hdr = f == 0 ? 16 : 8, item = f == 0 ? 784 : 1;
        unsigned char head[16];
        assert_int_equal(gzread(in, head, (unsigned)hdr), (int)hdr);
        head[4] = (unsigned char)(n >> 24);
        head[5] = (unsigned char)(n >> 16);
        head[6] = (unsigned char)(n >> 8);
        head[7] = (unsigned char)n;
        size_t bytes = (size_t)n * item;
        unsigned char *buf = malloc(bytes);
        assert_non_null(buf);
        assert_int_equal(gzread(in, buf, (unsigned)bytes), (int)bytes);
        gzclose(in);
        FILE *out = fopen(dst[f], "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(head, 1, hdr, out), hdr);
        assert_int_equal(fwrite(buf, 1, bytes, out), bytes);
        fclose(out);
        free(buf);
    }
    const char *argv[] = {MLQ, "dataset", "import-idx", dst[0], dst[1], "--output", path, NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/import.out", h->dir);
    assert_int_equal(h_run(h, argv, log), 0);
}

/* Writes text to dir/name and returns the path in buf. */
static const char *write_file(struct harness *h, const char *name, const char *text, char *buf,
                              size_t len)
{
    snprintf(buf, len, "%s/%s", h->dir, name);
    FILE *f = fopen(buf, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return buf;
}

/* A spec file over data: a small MLP with 20% held out for validation. */
static const char *spec_file(struct harness *h, const char *data, int epochs, int width,
                             int max_attempts, char *buf, size_t len)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"dataset\": {\"path\": \"%s\"}, \"validation_split\": 0.2, \"model\": "
             "{\"layers\": [784, %d, 10]}, \"optimizer\": {\"name\": \"adam\", \"lr\": 0.001}, "
             "\"batch_size\": 32, \"epochs\": %d, \"seed\": 3, \"threads\": 1, "
             "\"max_attempts\": %d}",
             data, width, epochs, max_attempts);
    return write_file(h, "spec.json", text, buf, len);
}

/* Runs mlq with MLQ_BROKER and MLQ_DB set to the harness's; stdout into
 * dir/out.txt (read it with out_text or out_json). Returns the exit status. */
static int mlq_run(struct harness *h, const char *const *args)
{
    const char *argv[48] = {MLQ};
    int n = 1;
    for (int i = 0; args[i] && n < 47; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    setenv("MLQ_BROKER", h->endpoint, 1);
    setenv("MLQ_DB", h->db, 1);
    char out[600];
    snprintf(out, sizeof out, "%s/out.txt", h->dir);
    return h_run(h, argv, out);
}

/* mlq's last output as text, in buf. */
static const char *out_text(struct harness *h, char *buf, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/out.txt", h->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static json_t *out_json(struct harness *h)
{
    char path[600];
    snprintf(path, sizeof path, "%s/out.txt", h->dir);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) fail_msg("mlq's output is not JSON: %s", e.text);
    return j;
}

static sqlite3 *db_open(struct harness *h)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(h->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int64_t db_int(struct harness *h, const char *sql)
{
    sqlite3 *db = db_open(h);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Runs mlq (a submit or sweep with --json), which must exit 0; the "id" it printed. */
static int64_t submit(struct harness *h, const char *const *args)
{
    assert_int_equal(mlq_run(h, args), 0);
    json_t *r = out_json(h);
    int64_t id = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    assert_true(id > 0);
    return id;
}

/* The number of a sweep's trial jobs in the states of the SQL list states. */
static int64_t sweep_jobs(struct harness *h, int64_t sweep, const char *states)
{
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM jobs WHERE sweep = %lld AND state IN (%s)",
             (long long)sweep, states);
    return db_int(h, q);
}

static void wait_sweep(struct harness *h, int64_t id, double timeout_s)
{
    double until = h_now() + timeout_s;
    while (h_now() < until) {
        if (sweep_jobs(h, id, "'queued','running'") == 0) return;
        usleep(200 * 1000);
    }
    fail_msg("sweep %lld did not finish in %.0f s (see %s)", (long long)id, timeout_s, h->dir);
}

/* What every sweep must satisfy, however it was interrupted: one job per
 * trial, each ended; a trial ends `stopped` exactly when its scheduler
 * decided to stop it, and nothing was decided for it after that; the first
 * result at each rung went on (ASHA); every stop had a better result before
 * it at its rung; each trial's metrics hold every epoch it reached, once. */
static void check_invariants(struct harness *h, int64_t sweep, int trials, bool asha)
{
    sqlite3 *db = db_open(h);
    sqlite3_stmt *st;
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT count(*), count(DISTINCT t.job), sum(j.state IN "
             "('succeeded','stopped')) FROM sweep_trials t JOIN jobs j ON j.id = t.job WHERE "
             "t.sweep = %lld",
             (long long)sweep);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), trials);
    assert_int_equal(sqlite3_column_int(st, 1), trials);
    assert_int_equal(sqlite3_column_int(st, 2), trials); /* none failed, none left */
    sqlite3_finalize(st);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM jobs WHERE sweep = %lld", (long long)sweep);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), trials); /* no trial made twice */
    sqlite3_finalize(st);

    /* stopped <=> a stop decision; no decision after a stop. */
    snprintf(sql, sizeof sql,
             "SELECT t.trial, j.state, (SELECT count(*) FROM sweep_decisions d WHERE d.sweep = "
             "t.sweep AND d.trial = t.trial AND d.decision = 'stop'), (SELECT count(*) FROM "
             "sweep_decisions d WHERE d.sweep = t.sweep AND d.trial = t.trial AND d.rung > "
             "(SELECT min(rung) FROM sweep_decisions e WHERE e.sweep = t.sweep AND e.trial = "
             "t.trial AND e.decision = 'stop')) FROM sweep_trials t JOIN jobs j ON j.id = t.job "
             "WHERE t.sweep = %lld",
             (long long)sweep);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 1);
        int stops = sqlite3_column_int(st, 2);
        if ((strcmp(state, "stopped") == 0) != (stops == 1))
            fail_msg("trial %d: state %s with %d stop decisions", sqlite3_column_int(st, 0), state,
                     stops);
        assert_int_equal(sqlite3_column_int(st, 3), 0);
    }
    sqlite3_finalize(st);

    if (asha) {
        /* The first result at each rung goes on; a stop had a better one
           before it (lower val_loss). */
        snprintf(sql, sizeof sql,
                 "SELECT d.rung, d.trial, d.decision, d.value, (SELECT count(*) FROM "
                 "sweep_decisions e WHERE e.sweep = d.sweep AND e.rung = d.rung AND e.time < "
                 "d.time), (SELECT count(*) FROM sweep_decisions e WHERE e.sweep = d.sweep AND "
                 "e.rung = d.rung AND e.time < d.time AND e.value < coalesce(d.value, 1e300)) "
                 "FROM sweep_decisions d WHERE d.sweep = %lld",
                 (long long)sweep);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            bool stop = strcmp((const char *)sqlite3_column_text(st, 2), "stop") == 0;
            if (sqlite3_column_int(st, 4) == 0 && stop)
                fail_msg("rung %d: the first result (trial %d) was stopped",
                         sqlite3_column_int(st, 0), sqlite3_column_int(st, 1));
            if (stop && sqlite3_column_int(st, 5) == 0)
                fail_msg("rung %d: trial %d stopped with no better result before it",
                         sqlite3_column_int(st, 0), sqlite3_column_int(st, 1));
        }
        sqlite3_finalize(st);
    }

    /* Every epoch once: epochs 1..last of val_loss, no gap. */
    snprintf(sql, sizeof sql,
             "SELECT t.job, count(m.epoch), count(DISTINCT m.epoch), max(m.epoch), min(m.epoch) "
             "FROM sweep_trials t JOIN metrics m ON m.run = t.job AND m.key = 'val_loss' WHERE "
             "t.sweep = %lld GROUP BY t.job",
             (long long)sweep);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        int cnt = sqlite3_column_int(st, 1), distinct = sqlite3_column_int(st, 2);
        int max = sqlite3_column_int(st, 3), min = sqlite3_column_int(st, 4);
        if (cnt != distinct || cnt != max || min != 1)
            fail_msg("job %lld: %d val_loss rows, %d epochs, %d..%d",
                     (long long)sqlite3_column_int64(st, 0), cnt, distinct, min, max);
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, trials);
    sqlite3_close(db);
}

/* ---- ASHA, show, the same seed, cancel --sweep ---------------------------------------- */

static void test_asha_sweep(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], space[600];
    fmnist(h, 1500, data, sizeof data);
    spec_file(h, data, 9, 32, 3, spec, sizeof spec);
    write_file(h, "space.json",
               "{\"optimizer.lr\": {\"loguniform\": [1e-4, 3e-2]}, \"batch_size\": [32, 64]}",
               space, sizeof space);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    h_trainer_start(h, "t2");
    const char *args[] = {"sweep",       spec,       "--space",
                          space,         "--trials", "5",
                          "--scheduler", "asha",     "--reduction-factor",
                          "3",           "--seed",   "11",
                          "--name",      "lr-bs",    "--experiment",
                          "fm",          "--tag",    "team=a",
                          "--json",      NULL};
    int64_t id = submit(h, args);
    wait_sweep(h, id, 50);
    check_invariants(h, id, 10, true);
    int64_t stopped = sweep_jobs(h, id, "'stopped'");
    assert_true(stopped >= 1 && stopped <= 9); /* ASHA stopped some, not all */
    char q[256];
    /* A stopped trial keeps its checkpoints. */
    snprintf(q, sizeof q,
             "SELECT count(*) FROM jobs j WHERE sweep = %lld AND state = 'stopped' AND NOT EXISTS "
             "(SELECT 1 FROM checkpoints c WHERE c.run = j.id)",
             (long long)id);
    assert_int_equal(db_int(h, q), 0);

    /* mlq sweep show: the best trial first, its params, rung and state. */
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    const char *show[] = {"sweep", "show", ids, "--json", NULL};
    assert_int_equal(mlq_run(h, show), 0);
    json_t *r = out_json(h);
    json_t *tl = json_object_get(r, "trial_list");
    assert_int_equal(json_array_size(tl), 10);
    assert_string_equal(json_string_value(json_object_get(r, "scheduler")), "asha");
    assert_string_equal(json_string_value(json_object_get(r, "state")), "finished");
    assert_string_equal(json_string_value(json_object_get(r, "experiment")), "fm");
    double best = json_number_value(json_object_get(json_array_get(tl, 0), "best"));
    for (size_t i = 1; i < json_array_size(tl); i++) {
        json_t *t = json_array_get(tl, i);
        assert_true(best <= json_number_value(json_object_get(t, "best")));
        assert_non_null(json_object_get(json_object_get(t, "params"), "optimizer.lr"));
    }
    json_decref(r);
    const char *csv[] = {"sweep", "show", ids, "--csv", NULL};
    assert_int_equal(mlq_run(h, csv), 0);
    const char *list[] = {"sweep", "list", "--json", NULL};
    assert_int_equal(mlq_run(h, list), 0);
    r = out_json(h);
    assert_int_equal(json_array_size(json_object_get(r, "sweeps")), 1);
    json_decref(r);

    /* Trials are runs of the sweep, its experiment and its tags. */
    const char *runs[] = {"runs",   "--sweep", ids, "--experiment", "fm", "--tag",
                          "team=a", "--json",  NULL};
    assert_int_equal(mlq_run(h, runs), 0);
    r = out_json(h);
    assert_int_equal(json_array_size(r), 10);
    json_decref(r);
    /* mlq compare of the sweep: every trial, best first. */
    const char *cmp[] = {"compare", "--sweep", ids, "--json", NULL};
    assert_int_equal(mlq_run(h, cmp), 0);
    r = out_json(h);
    assert_int_equal(json_array_size(json_object_get(r, "runs")), 10);
    json_decref(r);

    /* The same seed yields the same trials; cancel --sweep ends them all. */
    const char *again[] = {"sweep",  spec, "--space",        space, "--trials", "5",
                           "--seed", "11", "--max-parallel", "1",   "--json",   NULL};
    int64_t id2 = submit(h, again);
    snprintf(ids, sizeof ids, "%lld", (long long)id2);
    const char *cancel[] = {"cancel", "--sweep", ids, "--json", NULL};
    assert_int_equal(mlq_run(h, cancel), 0);
    char same[512];
    snprintf(same, sizeof same,
             "SELECT count(*) FROM sweep_trials a JOIN sweep_trials b ON a.trial = b.trial AND "
             "a.params = b.params WHERE a.sweep = %lld AND b.sweep = %lld",
             (long long)id, (long long)id2);
    assert_int_equal(db_int(h, same), 10);
    wait_sweep(h, id2, 20);
    int64_t ended = sweep_jobs(h, id2, "'cancelled','stopped'");
    assert_int_equal(ended + sweep_jobs(h, id2, "'succeeded'"), 10);
    assert_true(ended >= 9); /* one trial at most may have finished first */
    const char *show2[] = {"sweep", "show", ids, "--json", NULL};
    assert_int_equal(mlq_run(h, show2), 0);
    r = out_json(h);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "cancelled");
    json_decref(r);
}

/* ---- the median rule and --max-parallel ------------------------------------------------ */

static void test_median_max_parallel(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], space[600];
    fmnist(h, 1000, data, sizeof data);
    spec_file(h, data, 4, 16, 3, spec, sizeof spec);
    write_file(h, "space.json", "{\"optimizer.lr\": [0.003, 0.0001, 0.00003, 0.00001]}", space,
               sizeof space);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    h_trainer_start(h, "t2");
    const char *args[] = {"sweep",         spec, "--space",        space, "--scheduler", "median",
                          "--min-samples", "1",  "--max-parallel", "1",   "--json",      NULL};
    int64_t id = submit(h, args);
    wait_sweep(h, id, 40);
    check_invariants(h, id, 4, false);
    /* One trial at a time although two trainers were idle. */
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM jobs a JOIN jobs b ON a.id < b.id AND a.started < b.finished "
             "AND b.started < a.finished WHERE a.sweep = %lld AND b.sweep = %lld",
             (long long)id, (long long)id);
    assert_int_equal(db_int(h, q), 0);
    /* In order, each trial is judged against the ones before it: the
       first goes on at every epoch, and a much lower learning rate is
       worse than their median by epoch 1 and stopped there. */
    snprintf(q, sizeof q,
             "SELECT count(*) FROM sweep_decisions WHERE sweep = %lld AND decision = 'stop'",
             (long long)id);
    assert_true(db_int(h, q) >= 1);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM sweep_decisions WHERE sweep = %lld AND trial = 0 AND decision "
             "= 'continue'",
             (long long)id);
    assert_int_equal(db_int(h, q), 3); /* epochs 1..3 judged, 4 is the last */
}

/* ---- 20 kill -9s of the broker mid-sweep ------------------------------------------------- */

static void test_broker_kill9(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], space[600];
    fmnist(h, 2000, data, sizeof data);
    spec_file(h, data, 12, 64, 100, spec, sizeof spec);
    write_file(h, "space.json",
               "{\"optimizer.lr\": {\"loguniform\": [1e-5, 1e-2]}, \"batch_size\": [16, 32]}",
               space, sizeof space);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    pid_t t2 = h_trainer_start(h, "t2");
    const char *args[] = {
        "sweep",          spec, "--space", space, "--trials", "10", "--reduction-factor", "2",
        "--grace-period", "2",  "--seed",  "5",   "--json",   NULL};
    int64_t id = submit(h, args);
    const char *epochs = "SELECT count(*) FROM metrics WHERE key = 'train_loss'";
    /* The trainers train only in windows of 30 to 70 ms between kills
       (SIGSTOP while the broker is killed and restarted): 20 windows are
       some 50 epochs of two trainers on a quiet machine, fewer on a loaded
       or sanitized one, and the sweep has about 100, so every kill lands
       mid-sweep however fast the machine. */
    int kills = 0;
    unsigned r = 12345;
    while (kills < 20) {
        r = r * 1103515245u + 12345u;
        usleep((useconds_t)(30 + (r >> 16) % 40) * 1000);
        kill(t1, SIGSTOP);
        kill(t2, SIGSTOP);
        h_broker_kill(h, SIGKILL);
        kills++;
        h_broker_start(h, NULL);
        kill(t1, SIGCONT);
        kill(t2, SIGCONT);
        if (sweep_jobs(h, id, "'queued','running'") == 0) break;
    }
    int64_t seen = db_int(h, epochs);
    fprintf(stderr, "broker killed %d times mid-sweep, %lld epochs recorded by then\n", kills,
            (long long)seen);
    assert_int_equal(kills, 20); /* the sweep outlasted them */
    wait_sweep(h, id, 100);      /* a sanitized build is slower */
    check_invariants(h, id, 20, true);
}

/* ---- the trial limit as a config key, mlq top, mlq sweep rm ---------------------------- */

static void test_rm_top(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], space[600], text[8192], q[256];
    fmnist(h, 600, data, sizeof data);
    spec_file(h, data, 4, 16, 3, spec, sizeof spec);
    write_file(h, "space.json", "{\"optimizer.lr\": {\"loguniform\": [1e-5, 0.3]}}", space,
               sizeof space);
    /* sweep.max_trials from the config file: 9 trials are refused, 8 not. */
    FILE *cf = fopen(h->config, "a");
    assert_non_null(cf);
    fputs("sweep.max_trials = 8\n", cf);
    fclose(cf);
    h_broker_start(h, NULL);
    const char *nine[] = {"sweep", spec, "--space", space, "--trials", "9", "--json", NULL};
    assert_int_equal(mlq_run(h, nine), 2);
    assert_int_equal(db_int(h, "SELECT count(*) FROM jobs"), 0);
    const char *args[] = {
        "sweep",  spec, "--space", space, "--trials", "8", "--seed", "2", "--reduction-factor", "2",
        "--name", "lr", "--json",  NULL};
    int64_t a = submit(h, args);
    char as[24];
    snprintf(as, sizeof as, "%lld", (long long)a);

    /* No trainer yet: top lists the sweep, all queued; rm refuses it. */
    const char *top[] = {"top", "--once", NULL};
    assert_int_equal(mlq_run(h, top), 0);
    out_text(h, text, sizeof text);
    if (!strstr(text, "SWEEPS") || !strstr(text, "8 trials: 0 running, 8 queued, 0 stopped"))
        fail_msg("mlq top --once: no queued sweep in\n%s", text);
    const char *rm_live[] = {"sweep", "rm", as, NULL};
    assert_int_equal(mlq_run(h, rm_live), 1);
    assert_int_equal(db_int(h, "SELECT count(*) FROM sweeps"), 1);
    assert_int_equal(sweep_jobs(h, a, "'queued'"), 8);

    /* One trainer runs them in order: ASHA stops some; top counts them. */
    h_trainer_start(h, "t1");
    wait_sweep(h, a, 60);
    int64_t stopped = sweep_jobs(h, a, "'stopped'");
    assert_true(stopped >= 1);
    assert_int_equal(mlq_run(h, top), 0);
    out_text(h, text, sizeof text);
    char want[64];
    snprintf(want, sizeof want, "cancelled, %lld stopped", (long long)stopped);
    if (!strstr(text, want)) fail_msg("mlq top --once: no \"%s\" in\n%s", want, text);
    if (strstr(text, "SWEEPS")) fail_msg("mlq top --once: a finished sweep listed\n%s", text);

    /* rm --keep-runs: the sweep goes, its trials stay as ordinary runs. */
    const char *b_args[] = {"sweep",   spec, "--space",     space,  "--trials", "2",
                            "--max-t", "1",  "--scheduler", "none", "--json",   NULL};
    int64_t b = submit(h, b_args);
    wait_sweep(h, b, 30);
    char bs[24];
    snprintf(bs, sizeof bs, "%lld", (long long)b);
    snprintf(q, sizeof q, "SELECT min(id) FROM jobs WHERE sweep = %lld", (long long)b);
    int64_t b_run = db_int(h, q);
    const char *rm_keep[] = {"sweep", "rm", bs, "--keep-runs", "--json", NULL};
    assert_int_equal(mlq_run(h, rm_keep), 0);
    json_t *r = out_json(h);
    assert_int_equal(json_integer_value(json_object_get(r, "removed")), b);
    assert_int_equal(json_array_size(json_object_get(r, "runs")), 2);
    assert_true(json_is_true(json_object_get(r, "runs_kept")));
    json_decref(r);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM jobs WHERE id = %lld AND sweep IS NULL AND state = "
             "'succeeded' AND EXISTS (SELECT 1 FROM metrics WHERE run = %lld)",
             (long long)b_run, (long long)b_run);
    assert_int_equal(db_int(h, q), 1);
    snprintf(q, sizeof q, "SELECT count(*) FROM sweep_trials WHERE sweep = %lld", (long long)b);
    assert_int_equal(db_int(h, q), 0);

    /* rm: the sweep, its decisions and its trial runs with their metrics. */
    const char *rm[] = {"sweep", "rm", as, NULL};
    assert_int_equal(mlq_run(h, rm), 0);
    assert_int_equal(db_int(h, "SELECT count(*) FROM sweeps"), 0);
    assert_int_equal(db_int(h, "SELECT count(*) FROM sweep_decisions"), 0);
    assert_int_equal(db_int(h, "SELECT count(*) FROM jobs"), 2); /* sweep b's runs */
    snprintf(q, sizeof q, "SELECT count(*) FROM metrics WHERE run NOT IN (SELECT id FROM jobs)");
    assert_int_equal(db_int(h, q), 0);
    assert_int_equal(mlq_run(h, rm), 5); /* gone */
    const char *show[] = {"sweep", "show", as, NULL};
    assert_int_equal(mlq_run(h, show), 5);
    /* The broker carries on. */
    r = h_call(h, PROTO_QUEUE, json_object(), NULL);
    assert_non_null(r);
    assert_int_equal(json_array_size(json_object_get(r, "sweeps")), 0);
    json_decref(r);
}

/* ---- bad input ------------------------------------------------------------------------------ */

static void expect_refused(struct harness *h, const char *spec, const char *space_text,
                           const char *const *more)
{
    char space[600];
    write_file(h, "bad-space.json", space_text, space, sizeof space);
    const char *args[24] = {"sweep", spec, "--space", space};
    int n = 4;
    for (int i = 0; more && more[i]; i++)
        args[n++] = more[i];
    args[n] = NULL;
    int rc = mlq_run(h, args);
    if (rc != 2) fail_msg("mlq sweep with space %s: exit %d, not 2", space_text, rc);
    assert_int_equal(db_int(h, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(db_int(h, "SELECT count(*) FROM sweeps"), 0);
}

static void test_bad_input(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], nsp[600];
    fmnist(h, 300, data, sizeof data);
    spec_file(h, data, 3, 8, 3, spec, sizeof spec);
    const char *limit[] = {"--sweep-max-trials", "50", NULL};
    h_broker_start(h, limit);
    const char *lr = "{\"optimizer.lr\": [0.01, 0.001]}";
    expect_refused(h, spec, "{\"optimizer.learning_rate\": [0.1]}", NULL);
    expect_refused(h, spec, "{\"optimizer.lr\": {\"choice\": []}}", NULL);
    expect_refused(h, spec, "{\"optimizer.lr\": []}", NULL);
    expect_refused(h, spec, "{\"optimizer.lr\": {\"uniform\": [0.1, 0.01]}}", NULL);
    expect_refused(h, spec, "{\"optimizer.lr\": {\"loguniform\": [0, 0.1]}}", NULL);
    expect_refused(h, spec, "{\"optimizer.lr\": {\"normal\": [0, 1]}}", NULL);
    expect_refused(h, spec, "{\"batch_size\": [4, 0]}", NULL); /* a trial with batch_size 0 */
    expect_refused(h, spec, "[1, 2]", NULL);
    expect_refused(h, spec, "{}", NULL);
    const char *zero[] = {"--trials", "0", NULL};
    expect_refused(h, spec, lr, zero);
    const char *metric[] = {"--metric", "bleu", NULL};
    expect_refused(h, spec, lr, metric);
    const char *sched[] = {"--scheduler", "hyperband", NULL};
    expect_refused(h, spec, lr, sched);
    /* A grid past the broker's --sweep-max-trials (the cli's own check
       allows more): the broker refuses, still exit 2. */
    expect_refused(h, spec,
                   "{\"optimizer.lr\": [1, 2, 3, 4, 5, 6, 7, 8], \"batch_size\": [1, 2, 3, 4, "
                   "5, 6, 7, 8]}",
                   NULL);
    /* A grid of 4096^3: counted without overflow, refused. */
    char huge[40000];
    size_t o = (size_t)snprintf(huge, sizeof huge, "{");
    const char *fields[] = {"seed", "epochs", "batch_size"};
    for (int f = 0; f < 3; f++) {
        o += (size_t)snprintf(huge + o, sizeof huge - o, "%s\"%s\": [", f ? ", " : "", fields[f]);
        for (int i = 1; i <= 2048; i++)
            o += (size_t)snprintf(huge + o, sizeof huge - o, "%s%d", i > 1 ? "," : "", i);
        o += (size_t)snprintf(huge + o, sizeof huge - o, "]");
    }
    snprintf(huge + o, sizeof huge - o, "}");
    expect_refused(h, spec, huge, NULL);
    /* A validation metric on a spec without validation data. */
    write_file(h, "noval.json",
               "{\"dataset\": {\"path\": \"/nonexistent.h5\"}, \"model\": {\"layers\": [784, 8, "
               "10]}, \"epochs\": 3}",
               nsp, sizeof nsp);
    expect_refused(h, nsp, lr, NULL);
    /* --after a job that does not exist. */
    const char *after[] = {"submit", "--spec", spec, "--after", "4242", NULL};
    assert_int_equal(mlq_run(h, after), 2);
    assert_int_equal(db_int(h, "SELECT count(*) FROM jobs"), 0);
    /* Unknown sweeps. */
    const char *show[] = {"sweep", "show", "99", NULL};
    assert_int_equal(mlq_run(h, show), 5);
    const char *cancel[] = {"cancel", "--sweep", "99", NULL};
    assert_int_equal(mlq_run(h, cancel), 5);

    /* Hostile SWEEPs straight to the broker: ERROR, never a crash. */
    const char *bodies[] = {
        "{}",
        "{\"spec\": 1, \"space\": {}}",
        "{\"spec\": {}, \"space\": []}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"seed\": [1]}, \"sweep\": {\"trials\": \"x\"}}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"seed\": [1]}, \"sweep\": {\"grace_period\": "
        "-1}}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"seed\": {\"int\": [1e300, 2e300]}}}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"model.layers\": {\"choice\": [[4, 0]]}}}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"seed\": [1]}, \"tags\": [1]}",
        "{\"spec\": {\"dataset\": {\"path\": \"x.h5\"}, \"model\": {\"layers\": [4, 2]}, "
        "\"validation_split\": 0.2}, \"space\": {\"seed\": [1]}, \"after\": [\"a\"]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        bool is_error = false;
        json_t *r = h_call(h, PROTO_SWEEP, json_loads(bodies[i], 0, NULL), &is_error);
        if (!r || !is_error) fail_msg("SWEEP %s was not refused", bodies[i]);
        json_decref(r);
    }
    bool is_error = true;
    json_t *r = h_call(h, PROTO_CANCEL, json_pack("{s:s}", "sweep", "x"), &is_error);
    assert_non_null(r);
    assert_true(is_error);
    json_decref(r);
    assert_int_equal(db_int(h, "SELECT count(*) FROM jobs"), 0);

    /* Diverging trials (NaN and infinite losses) end; the broker lives on. */
    h_trainer_start(h, "t1");
    char dtext[1200], dspec[600], dspace[600];
    snprintf(dtext, sizeof dtext,
             "{\"dataset\": {\"path\": \"%s\"}, \"validation_split\": 0.2, \"model\": "
             "{\"layers\": [784, 8, 10]}, \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.01}, "
             "\"batch_size\": 32, \"epochs\": 3, \"threads\": 1}",
             data);
    write_file(h, "dspec.json", dtext, dspec, sizeof dspec);
    write_file(h, "dspace.json", "{\"optimizer.lr\": [1e30, 0.01, 1e30, 1e30]}", dspace,
               sizeof dspace);
    const char *div[] = {"sweep", dspec,    "--space", dspace, "--reduction-factor",
                         "2",     "--json", NULL};
    int64_t id = submit(h, div);
    wait_sweep(h, id, 40);
    assert_int_equal(sweep_jobs(h, id, "'succeeded','stopped','failed'"), 4);
    r = h_call(h, PROTO_QUEUE, json_object(), NULL);
    assert_non_null(r); /* still answering */
    json_decref(r);
}

/* ---- experiments, tags, notes, --where, compare, --after --------------------------------- */

static size_t runs_count(struct harness *h, const char *const *args)
{
    assert_int_equal(mlq_run(h, args), 0);
    json_t *r = out_json(h);
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

static void test_groups(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], bad[600];
    fmnist(h, 300, data, sizeof data);
    spec_file(h, data, 2, 8, 3, spec, sizeof spec);
    write_file(h, "bad.json",
               "{\"dataset\": {\"path\": \"missing-on-the-trainer.h5\"}, \"model\": "
               "{\"layers\": [784, 8, 10]}, \"epochs\": 2}",
               bad, sizeof bad);
    h_broker_start(h, NULL);
    const char *a_args[] = {"submit",   "--spec", spec,        "--experiment", "exp1", "--tag",
                            "owner=me", "--tag",  "kind=base", "--json",       NULL};
    int64_t a = submit(h, a_args);
    char as[24], fs[24];
    snprintf(as, sizeof as, "%lld", (long long)a);
    const char *b_args[] = {"submit", "--spec",  spec, "--lr",   "0.01", "--experiment",
                            "exp1",   "--after", as,   "--json", NULL};
    int64_t b = submit(h, b_args);
    const char *f_args[] = {"submit", "--spec", bad, "--max-attempts", "1", "--json", NULL};
    int64_t f = submit(h, f_args);
    snprintf(fs, sizeof fs, "%lld", (long long)f);
    char after2[64];
    snprintf(after2, sizeof after2, "%s,%s", as, fs);
    const char *c_args[] = {"submit", "--spec", spec, "--after", after2, "--json", NULL};
    int64_t c = submit(h, c_args);
    h_trainer_start(h, "t1");
    char st[32];
    h_wait_terminal(h, a, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
    h_wait_terminal(h, b, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
    h_wait_terminal(h, f, 30, st, sizeof st);
    assert_string_equal(st, "failed");
    h_wait_terminal(h, c, 30, st, sizeof st);
    assert_string_equal(st, "failed");
    json_t *cj = h_job(h, c);
    const char *why = json_string_value(json_object_get(cj, "error"));
    assert_non_null(why);
    assert_non_null(strstr(why, "--after"));
    assert_non_null(strstr(why, fs));
    json_decref(cj);
    char q[256];
    snprintf(q, sizeof q,
             "SELECT (SELECT started FROM jobs WHERE id = %lld) >= (SELECT finished FROM jobs "
             "WHERE id = %lld)",
             (long long)b, (long long)a);
    assert_int_equal(db_int(h, q), 1); /* B started only once A had succeeded */
    snprintf(q, sizeof q, "SELECT attempts FROM jobs WHERE id = %lld", (long long)c);
    assert_int_equal(db_int(h, q), 0); /* C never ran */

    /* mlq tag and mlq note afterwards. */
    const char *tag[] = {"tag", as, "stage=done", "owner=you", NULL};
    assert_int_equal(mlq_run(h, tag), 0);
    const char *note[] = {"note", as, "the", "baseline", NULL};
    assert_int_equal(mlq_run(h, note), 0);
    const char *tag_missing[] = {"tag", "9999", "k=v", NULL};
    assert_int_equal(mlq_run(h, tag_missing), 5);
    const char *tag_bad[] = {"tag", as, "novalue", NULL};
    assert_int_equal(mlq_run(h, tag_bad), 2);
    snprintf(q, sizeof q, "SELECT count(*) FROM tags WHERE run = %lld", (long long)a);
    assert_int_equal(db_int(h, q), 3);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM events WHERE run = %lld AND level = 'note' AND message = 'the "
             "baseline'",
             (long long)a);
    assert_int_equal(db_int(h, q), 1);

    /* mlq runs by experiment, tag and comparisons. */
    const char *r1[] = {"runs", "--experiment", "exp1", "--json", NULL};
    assert_int_equal(runs_count(h, r1), 2);
    const char *r2[] = {"runs", "--tag", "owner=you", "--tag", "stage=done", "--json", NULL};
    assert_int_equal(runs_count(h, r2), 1);
    const char *r3[] = {"runs", "--experiment", "exp1", "--where", "optimizer.lr>0.005", "--json",
                        NULL};
    assert_int_equal(runs_count(h, r3), 1);
    const char *r4[] = {"runs",   "--where", "params.optimizer.lr!=0.01", "--experiment", "exp1",
                        "--json", NULL};
    assert_int_equal(runs_count(h, r4), 1);
    const char *r5[] = {"runs", "--where", "metrics.val_loss<100", "--json", NULL};
    assert_int_equal(runs_count(h, r5), 2);
    const char *r6[] = {"runs", "--where", "metrics.val_loss>=100", "--json", NULL};
    assert_int_equal(runs_count(h, r6), 0);
    const char *r7[] = {"runs",           "--where", "epochs<=2", "--where",
                        "batch_size>=32", "--json",  NULL};
    assert_int_equal(runs_count(h, r7), 4);
    const char *u1[] = {"runs", "--where", "metrics.bleu<1", NULL};
    assert_int_equal(mlq_run(h, u1), 2);
    const char *u2[] = {"runs", "--where", "optimizer.learning_rate=1", NULL};
    assert_int_equal(mlq_run(h, u2), 2);
    const char *u3[] = {"runs", "--where", "metrics.val_loss<abc", NULL};
    assert_int_equal(mlq_run(h, u3), 2);
    /* The error names the key (the store's message is what mlq prints). */
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct store_run_filter flt = {.state = -1, .kind = -1, .n_where = 1};
    flt.where_key[0] = "optimizer.learning_rate";
    flt.where_value[0] = "1";
    struct store_job *jobs = NULL;
    size_t n = 0;
    assert_int_equal(store_runs_list(s, &flt, &jobs, &n), -EINVAL);
    assert_non_null(strstr(store_errmsg(s), "optimizer.learning_rate"));
    store_close(&s);

    /* mlq compare of an experiment, and of it with another run. */
    const char *cmp[] = {"compare", "--experiment", "exp1", "--json", NULL};
    assert_int_equal(mlq_run(h, cmp), 0);
    json_t *r = out_json(h);
    assert_int_equal(json_array_size(json_object_get(r, "runs")), 2);
    json_decref(r);
    const char *cmp2[] = {"compare", fs, "--experiment", "exp1", "--json", NULL};
    assert_int_equal(mlq_run(h, cmp2), 0);
    r = out_json(h);
    assert_int_equal(json_array_size(json_object_get(r, "runs")), 3);
    json_decref(r);
    const char *cmp3[] = {"compare", "--experiment", "nope", NULL};
    assert_int_equal(mlq_run(h, cmp3), 5);
}

/* argv[1]: run only the test of that name (one CTest entry each). */
int main(int argc, char **argv)
{
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_input, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_asha_sweep, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_median_max_parallel, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_kill9, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_groups, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_rm_top, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
