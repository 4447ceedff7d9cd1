/* Hostile input and faults against a real mlq-broker (issue 9): a checkpoint
 * damaged in the database, peers that forge a trainer's name, floods of
 * HELLOs. The broker must fail what is bad, keep what is good, and go on
 * serving. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zmq.h>

#include "broker_harness.h"
#include "proto.h"
#include "store.h"

/* Flips one byte in the middle of the blob of a run's latest checkpoint, as
 * a bad disk sector or a careless hand would, behind the broker's back.
 * Returns the epoch of that checkpoint. */
static int64_t damage_last_checkpoint(struct harness *h, int64_t run)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(h->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, epoch, blob FROM checkpoints WHERE run = ? "
                                        "ORDER BY step DESC LIMIT 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, run);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t id = sqlite3_column_int64(st, 0), epoch = sqlite3_column_int64(st, 1);
    int len = sqlite3_column_bytes(st, 2);
    assert_true(len > 100);
    unsigned char *blob = malloc((size_t)len);
    assert_non_null(blob);
    memcpy(blob, sqlite3_column_blob(st, 2), (size_t)len);
    sqlite3_finalize(st);
    blob[len / 2] ^= 0x01;
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE checkpoints SET blob = ? WHERE id = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(st, 1, blob, len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, id);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(blob);
    return epoch;
}

static void assert_broker_alive(struct harness *h)
{
    int status;
    assert_int_equal(waitpid(h->broker, &status, WNOHANG), 0);
    json_t *r = h_call(h, PROTO_QUEUE, json_object(), NULL);
    assert_non_null(r);
    json_decref(r);
}

static const char *str_of(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* An eval of a damaged checkpoint fails with the reason; the broker stays up
 * and the next queued job runs. */
static void test_damaged_checkpoint_fails_eval(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "d.h5", 200, 4, 2, 1, data, sizeof data);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t");
    int64_t run = h_submit(h, h_train_spec(data, 4, 2, 3, 1));
    h_wait_terminal(h, run, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    damage_last_checkpoint(h, run);

    int64_t ev =
        h_submit(h, json_pack("{s:s, s:I, s:{s:s}, s:s}", "kind", "eval", "run", (json_int_t)run,
                              "dataset", "path", data, "checkpoint", "last"));
    int64_t next = h_submit(h, h_train_spec(data, 4, 2, 1, 2));
    h_wait_terminal(h, ev, 30, st, sizeof st);
    assert_string_equal(st, "failed");
    json_t *job = h_job(h, ev);
    const char *error = str_of(job, "error");
    if (!strstr(error, "damaged") || !strstr(error, "checksum mismatch"))
        fail_msg("eval error: %s", error);
    json_decref(job);
    h_wait_terminal(h, next, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_broker_alive(h);
}

#define RESUME_EPOCHS 150

struct event_find {
    const char *needle;
    int found;
};

static int find_event(void *ctx, const struct store_event *e)
{
    struct event_find *f = ctx;
    if (strstr(e->message, f->needle)) f->found++;
    return 0;
}

/* A train job whose latest checkpoint is damaged resumes from the one before
 * it, says so in its events, and still ends with the uninterrupted run's
 * weights. */
static void test_damaged_checkpoint_resumes_earlier(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 3000, 16, 3, 11, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    int64_t ref = h_submit(h, h_train_spec(data, 16, 3, RESUME_EPOCHS, 5));
    h_wait_terminal(h, ref, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");

    int64_t id = h_submit(h, h_train_spec(data, 16, 3, RESUME_EPOCHS, 5));
    h_wait_epoch(h, id, 3, 60);
    h_proc_kill(h, t1, SIGKILL);
    double until = h_now() + 10;
    do
        h_status(h, id, st, sizeof st, NULL);
    while (strcmp(st, "queued") != 0 && h_now() < until);
    assert_string_equal(st, "queued");
    int64_t bad = damage_last_checkpoint(h, id);

    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");
    assert_broker_alive(h);

    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    char needle[64];
    snprintf(needle, sizeof needle, "resuming from epoch %lld", (long long)bad - 1);
    struct event_find f = {.needle = needle};
    assert_int_equal(store_events_foreach(s, id, find_event, &f), 0);
    struct event_find g = {.needle = "checksum mismatch"};
    assert_int_equal(store_events_foreach(s, id, find_event, &g), 0);
    store_close(&s);
    if (!f.found || !g.found) fail_msg("no event says: damaged checkpoint, %s", needle);

    size_t na, nb;
    int64_t ea, eb;
    float *a = h_final_params(h, ref, &na, &ea);
    float *b = h_final_params(h, id, &nb, &eb);
    assert_int_equal(eb, RESUME_EPOCHS);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_damaged_checkpoint_fails_eval, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_checkpoint_resumes_earlier, h_setup,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
