/* What a job reports when its checkpoint is odd (issue 9, defect 8), through
 * real mlq-broker and mlq-trainer processes:
 * - eval of a checkpoint whose weights are NaN, or whose finite weights make
 *   the outputs overflow, fails saying so (it used to say "cannot build the
 *   eval result", an out-of-memory message);
 * - a train job resumed from a checkpoint at (or past) its last epoch
 *   reports that epoch and the metrics it had, standalone and under a
 *   broker (it used to report succeeded with epochs 0 and train_loss 0). */
#include <math.h>
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
#include "checkpoint.h"
#include "store.h"

#define D 8
#define CLASSES 3

/* Trains a 2-epoch run to the end under the broker; returns its id and its
 * final train_loss from the job's result. */
static int64_t train_run_to_end(struct harness *h, char *data, size_t len, double *train_loss)
{
    h_dataset(h, "data.h5", 256, D, CLASSES, 1, data, len);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    int64_t id = h_submit(h, h_train_spec(data, D, CLASSES, 2, 7));
    char state[32];
    h_wait_terminal(h, id, 60, state, sizeof state);
    assert_string_equal(state, "succeeded");
    json_t *job = h_job(h, id);
    json_t *result = json_object_get(job, "result");
    assert_int_equal(json_integer_value(json_object_get(result, "epochs")), 2);
    *train_loss = json_real_value(json_object_get(result, "train_loss"));
    assert_true(*train_loss > 0);
    json_decref(job);
    return id;
}

/* Puts run's last checkpoint again as epoch `epoch` under run `to`, every
 * weight replaced by `weight` unless it is 0 (the CRC stays valid: the
 * trainer, not the store, must notice). */
static void put_checkpoint(struct harness *h, int64_t from, int64_t to, int64_t epoch, float weight)
{
    struct store *s;
    char err[512];
    assert_int_equal(store_open(&s, h->db, 0, err, sizeof err), 0);
    struct store_checkpoint ck = {0};
    assert_int_equal(store_checkpoint_get(s, from, STORE_CKPT_LAST, 0, &ck), 0);
    struct checkpoint c;
    assert_int_equal(checkpoint_decode(ck.blob, ck.size, &c, err, sizeof err), 0);
    if (weight != 0)
        for (size_t i = 0; i < c.n_params; i++)
            c.params[i] = weight;
    c.epoch = epoch;
    void *blob;
    size_t blen;
    assert_int_equal(checkpoint_encode(&c, &blob, &blen), 0);
    assert_int_equal(store_checkpoint_put(s, to, epoch, c.step + epoch, blob, blen, NAN, NULL), 0);
    free(blob);
    checkpoint_free(&c);
    store_checkpoint_free(&ck);
    store_close(&s);
}

static void expect_eval_error(struct harness *h, int64_t run, const char *data, const char *want)
{
    int64_t id = h_submit(h, json_pack("{s:s, s:I, s:{s:s}}", "kind", "eval", "run",
                                       (json_int_t)run, "dataset", "path", data));
    char state[32];
    h_wait_terminal(h, id, 30, state, sizeof state);
    json_t *job = h_job(h, id);
    const char *error = json_string_value(json_object_get(job, "error"));
    print_message("eval %lld: %s: %s\n", (long long)id, state, error ? error : "(none)");
    assert_string_equal(state, "failed");
    assert_non_null(error);
    assert_non_null(strstr(error, want));
    assert_null(strstr(error, "cannot build"));
    json_decref(job);
}

static void test_eval_of_non_finite_weights_says_so(void **state)
{
    struct harness *h = *state;
    char data[512];
    double loss;
    int64_t run = train_run_to_end(h, data, sizeof data, &loss);
    h_broker_kill(h, SIGTERM);
    put_checkpoint(h, run, run, 3, NAN);
    h_broker_start(h, NULL);
    expect_eval_error(h, run, data, "non-finite weights");

    /* Finite but huge: the outputs overflow. */
    h_broker_kill(h, SIGTERM);
    put_checkpoint(h, run, run, 4, 1e30f);
    h_broker_start(h, NULL);
    expect_eval_error(h, run, data, "outputs");
}

/* The broker's start-up recovery requeues a job left running; its last
 * checkpoint is at its last epoch (the trainer died between that checkpoint
 * and DONE), so the trainer has nothing left to train. */
static void test_resume_at_last_epoch_reports_its_metrics(void **state)
{
    struct harness *h = *state;
    char data[512];
    double loss;
    int64_t run = train_run_to_end(h, data, sizeof data, &loss);
    h_broker_kill(h, SIGTERM);

    struct store *s;
    char err[512];
    assert_int_equal(store_open(&s, h->db, 0, err, sizeof err), 0);
    struct store_job j = {0};
    assert_int_equal(store_job_get(s, run, &j), 0);
    struct mlq_spec spec;
    assert_int_equal(spec_parse(j.spec_json, &spec, err, sizeof err), 0);
    store_job_free(&j);
    int64_t again;
    assert_int_equal(store_job_submit_spec(s, &spec, NULL, &again, NULL), 0);
    assert_int_equal(store_job_set_running(s, again, "gone"), 0);
    store_close(&s);
    put_checkpoint(h, run, again, 2, 0);

    h_broker_start(h, NULL);
    char st[32];
    h_wait_terminal(h, again, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    json_t *job = h_job(h, again);
    json_t *result = json_object_get(job, "result");
    char *text = json_dumps(result, JSON_COMPACT);
    print_message("resumed at its last epoch: %s (the run ended with train_loss %.9g)\n", text,
                  loss);
    free(text);
    assert_int_equal(json_integer_value(json_object_get(result, "epochs")), 2);
    assert_true(fabs(json_real_value(json_object_get(result, "train_loss")) - loss) <= 1e-6 * loss);
    json_decref(job);
}

/* Runs a shell command, its stdout into out (the summary is the last line). */
static void run_standalone(struct harness *h, const char *args, char *last, size_t len)
{
    char cmd[2048], out[600];
    snprintf(out, sizeof out, "%s/standalone.out", h->dir);
    snprintf(cmd, sizeof cmd, "%s/trainer/mlq-trainer --standalone %s > %s 2>> %s/standalone.log",
             MLQ_BINARY_DIR, args, out, h->dir);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char line[4096];
    last[0] = '\0';
    while (fgets(line, sizeof line, f))
        snprintf(last, len, "%s", line);
    fclose(f);
}

static void summary(const char *line, int64_t *epochs, double *train_loss)
{
    json_t *o = json_loads(line, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "summary")));
    assert_string_equal(json_string_value(json_object_get(o, "state")), "succeeded");
    *epochs = json_integer_value(json_object_get(o, "epochs"));
    json_t *l = json_object_get(o, "train_loss");
    *train_loss = json_is_number(l) ? json_number_value(l) : NAN;
    json_decref(o);
}

static void test_standalone_resume_at_or_past_the_end(void **state)
{
    struct harness *h = *state;
    char data[512], spec[600], spec1[600], args[2048], line[4096];
    h_dataset(h, "data.h5", 256, D, CLASSES, 1, data, sizeof data);
    json_t *doc = h_train_spec(data, D, CLASSES, 2, 7);
    snprintf(spec, sizeof spec, "%s/spec.json", h->dir);
    assert_int_equal(json_dump_file(doc, spec, 0), 0);
    json_object_set_new(doc, "epochs", json_integer(1));
    snprintf(spec1, sizeof spec1, "%s/spec1.json", h->dir);
    assert_int_equal(json_dump_file(doc, spec1, 0), 0);
    json_decref(doc);

    snprintf(args, sizeof args, "%s --checkpoint-dir %s/ckpt", spec, h->dir);
    run_standalone(h, args, line, sizeof line);
    int64_t epochs;
    double loss, resumed_loss;
    summary(line, &epochs, &loss);
    assert_int_equal(epochs, 2);

    /* At its last epoch, and past it (the spec now asks for one epoch). */
    const char *specs[] = {spec, spec1};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "%s --resume %s/ckpt/last.ckpt", specs[i], h->dir);
        run_standalone(h, args, line, sizeof line);
        print_message("resume with %s: %s", specs[i], line);
        summary(line, &epochs, &resumed_loss);
        assert_int_equal(epochs, 2);
        assert_true(fabs(resumed_loss - loss) <= 1e-6 * loss);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_eval_of_non_finite_weights_says_so, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_resume_at_last_epoch_reports_its_metrics, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_standalone_resume_at_or_past_the_end, h_setup,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
