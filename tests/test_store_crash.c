/* Kill the writer: a child writes jobs with their metrics and checkpoint in
 * one transaction each, with synchronous=FULL, and is SIGKILLed at random
 * moments. After every kill the database must pass integrity_check and hold
 * only whole transactions. */
#include "test_store_util.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "store.h"

#define N_METRICS 20
#define BLOB_BYTES 8192
#define ITERATIONS 20

static const char *SPEC = "{\"kind\":\"train\",\"optimizer\":{\"name\":\"adam\",\"lr\":0.001}}";

/* Never returns: writes until killed. */
static void writer(const char *path)
{
    char err[512];
    struct store *s;
    if (store_open(&s, path, STORE_CREATE, err, sizeof err) != 0) {
        fprintf(stderr, "writer: %s\n", err);
        _exit(10);
    }
    static unsigned char blob[BLOB_BYTES];
    for (uint32_t round = 0;; round++) {
        memset(blob, (int)(round & 0xff), sizeof blob);
        if (store_begin(s) != 0) _exit(11);
        int64_t id;
        struct store_new_job nj = {.kind = JOB_TRAIN, .spec_json = SPEC, .name = "crash"};
        int ret = store_job_submit(s, &nj, &id);
        struct store_metric m[N_METRICS];
        for (int i = 0; i < N_METRICS && ret == 0; i++)
            m[i] = (struct store_metric){.key = i % 2 ? "val_loss" : "train_loss",
                                         .step = i,
                                         .epoch = i / 2,
                                         .value = (double)id};
        if (ret == 0) ret = store_metrics_put(s, id, m, N_METRICS);
        if (ret == 0) ret = store_checkpoint_put(s, id, 1, 1, blob, sizeof blob, 0.5, NULL);
        if (ret == 0) ret = store_event_add(s, id, "info", "written whole");
        if (ret == 0) ret = store_commit(s);
        /* A second, separate transaction: a state change of its own. */
        if (ret == 0) ret = store_job_set_running(s, id, "crash-writer");
        if (ret != 0) {
            fprintf(stderr, "writer: %s\n", store_errmsg(s));
            _exit(12);
        }
    }
}

static void check_whole(const char *path, long long *jobs_seen, long long *queued_seen)
{
    char err[512] = "";
    struct store *s = NULL;
    int ret = store_open(&s, path, 0, err, sizeof err);
    if (ret != 0) fail_msg("reopen after kill: %s", err);
    if (store_integrity_check(s) != 0) fail_msg("%s", store_errmsg(s));
    store_close(&s);
    /* Every job has all its metrics, params, its checkpoint and event. */
    assert_int_equal(raw_int(path, "SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM "
                                   "metrics m WHERE m.run = j.id) != 20"),
                     0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM "
                                   "params p WHERE p.run = j.id) != 3"),
                     0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 "
                                   "FROM checkpoints c WHERE c.run = j.id)"),
                     0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 "
                                   "FROM events e WHERE e.run = j.id)"),
                     0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM metrics WHERE value != run"), 0);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM final_metrics"),
                     2 * raw_int(path, "SELECT count(*) FROM jobs"));
    /* Committed rows never go away: the count only grows. */
    long long jobs = raw_int(path, "SELECT count(*) FROM jobs");
    assert_true(jobs >= *jobs_seen);
    *jobs_seen = jobs;
    /* Each kill leaves at most one job without its second transaction. */
    long long queued = raw_int(path, "SELECT count(*) FROM jobs WHERE state = 'queued'");
    assert_true(queued <= *queued_seen + 1);
    *queued_seen = queued;
}

static void test_kill_the_writer(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmpdir_make(dir, sizeof dir);
    assert_true(dir[0]);
    snprintf(path, sizeof path, "%s/crash.db", dir);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("# seed %u\n", seed);
    srand(seed);
    long long jobs_seen = 0, queued_seen = 0;
    for (int it = 0; it < ITERATIONS; it++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) writer(path);
        /* 2..60 ms: sometimes mid-open or mid-migration, mostly mid-write. */
        struct timespec ts = {0, (2 + rand() % 59) * 1000000L};
        nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) fail_msg("writer exited by itself with %d", WEXITSTATUS(status));
        if (access(path, F_OK) == 0) check_whole(path, &jobs_seen, &queued_seen);
    }
    printf("# %lld whole jobs written across %d kills\n", jobs_seen, ITERATIONS);
    assert_true(jobs_seen > 0);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill_the_writer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
