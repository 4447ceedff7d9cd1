/* Faults: a trainer killed mid-job (exact resume elsewhere), the broker
 * killed with jobs queued and running (nothing lost), and a job whose
 * trainers keep dying (failed after max_attempts, with the reason). */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker_harness.h"
#include "proto.h"
#include "store.h"

#define EPOCHS 150

struct epoch_count {
    int n;
    int64_t epochs[EPOCHS + 1];
};

static int count_fn(void *ctx, const struct store_metric *m)
{
    struct epoch_count *c = ctx;
    c->n++;
    if (m->epoch >= 1 && m->epoch <= EPOCHS) c->epochs[m->epoch]++;
    return 0;
}

static void test_trainer_killed_resumes_exactly(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 20000, 16, 3, 11, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");

    /* The reference: the same spec, uninterrupted. */
    int64_t ref = h_submit(h, h_train_spec(data, 16, 3, EPOCHS, 5));
    h_wait_terminal(h, ref, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");

    int64_t id = h_submit(h, h_train_spec(data, 16, 3, EPOCHS, 5));
    h_wait_epoch(h, id, 3, 60);
    h_proc_kill(h, t1, SIGKILL);
    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");

    json_t *job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "t2");
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 2);
    json_decref(job);

    size_t na, nb;
    int64_t ea, eb;
    float *a = h_final_params(h, ref, &na, &ea);
    float *b = h_final_params(h, id, &nb, &eb);
    assert_int_equal(ea, EPOCHS);
    assert_int_equal(eb, EPOCHS);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a); /* bit for bit, one thread */
    free(a);
    free(b);

    /* Every epoch's metrics exactly once. */
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct epoch_count cnt = {0};
    assert_int_equal(store_metrics_foreach(s, id, "train_loss", count_fn, &cnt), 0);
    store_close(&s);
    assert_int_equal(cnt.n, EPOCHS);
    for (int e = 1; e <= EPOCHS; e++)
        assert_int_equal(cnt.epochs[e], 1);
}

static void test_broker_killed_loses_nothing(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 3000, 16, 3, 12, data, sizeof data);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    int64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = h_submit(h, h_train_spec(data, 16, 3, 150, (uint64_t)i));
    h_wait_epoch(h, ids[0], 2, 60);
    h_broker_kill(h, SIGKILL);
    /* Acknowledged jobs are on disk: one running, three queued. */
    h_broker_start(h, NULL);
    for (int i = 0; i < 4; i++) {
        h_wait_terminal(h, ids[i], 120, st, sizeof st);
        assert_string_equal(st, "succeeded");
    }
    /* The running one was re-announced by its trainer and kept, not rerun. */
    json_t *job = h_job(h, ids[0]);
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
    json_decref(job);
    size_t n;
    int64_t epoch;
    float *p = h_final_params(h, ids[0], &n, &epoch);
    assert_int_equal(epoch, 150);
    free(p);
}

static void test_broker_killed_trainer_gone(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 3000, 16, 3, 13, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    int64_t id = h_submit(h, h_train_spec(data, 16, 3, 150, 1));
    h_wait_epoch(h, id, 2, 60);
    h_broker_kill(h, SIGKILL);
    h_proc_kill(h, t1, SIGKILL);
    /* Restarted with its trainer gone: requeued after the liveness window. */
    h_broker_start(h, NULL);
    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");
    json_t *job = h_job(h, id);
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 2);
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "t2");
    json_decref(job);
}

static void test_max_attempts(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 6000, 16, 3, 14, data, sizeof data);
    h_broker_start(h, NULL);
    json_t *spec = h_train_spec(data, 16, 3, 1000, 1);
    json_object_set_new(spec, "max_attempts", json_integer(2));
    int64_t id = h_submit(h, spec);
    for (int k = 0; k < 2; k++) {
        char name[16];
        snprintf(name, sizeof name, "doomed%d", k);
        pid_t t = h_trainer_start(h, name);
        h_wait_epoch(h, id, 1, 60);
        h_proc_kill(h, t, SIGKILL);
        if (k == 0) {
            /* back on the queue before the next trainer comes */
            double until = h_now() + 10;
            do
                h_status(h, id, st, sizeof st, NULL);
            while (strcmp(st, "queued") && h_now() < until);
            assert_string_equal(st, "queued");
        }
    }
    h_wait_terminal(h, id, 30, st, sizeof st);
    assert_string_equal(st, "failed");
    json_t *job = h_job(h, id);
    const char *error = json_string_value(json_object_get(job, "error"));
    assert_non_null(error);
    assert_non_null(strstr(error, "went silent"));
    assert_non_null(strstr(error, "gave up after 2 attempts"));
    json_decref(job);
}

static void test_trainer_sigterm_hands_back(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 3000, 16, 3, 15, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    int64_t id = h_submit(h, h_train_spec(data, 16, 3, 150, 1));
    h_wait_epoch(h, id, 2, 60);
    /* A trainer stopped by systemd hands its job back at once. */
    h_proc_kill(h, t1, SIGTERM);
    h_status(h, id, st, sizeof st, NULL);
    assert_string_equal(st, "queued");
    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");
    json_t *job = h_job(h, id);
    assert_string_equal(json_string_value(json_object_get(job, "trainer")), "t2");
    json_decref(job);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trainer_killed_resumes_exactly, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_killed_loses_nothing, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_killed_trainer_gone, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_max_attempts, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_trainer_sigterm_hands_back, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
