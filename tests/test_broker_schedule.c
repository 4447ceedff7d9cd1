/* Schedules and early stopping through real mlq-broker and mlq-trainer
 * processes: the lr recorded each epoch in the store is the schedule's; a
 * trainer killed mid-run under reduce_on_plateau resumes on another one
 * and ends with the uninterrupted run's weights; early stopping ends a run
 * as a success with its note and keeps the best epoch's checkpoint; bad
 * schedules are refused by mlq submit (exit 2, the field named, nothing
 * queued) and by the broker. */
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "broker_harness.h"
#include "proto.h"
#include "schedule.h"
#include "spec.h"
#include "store.h"

struct lrs {
    int n;
    double lr[64];
    int64_t epoch[64];
};

static int lr_fn(void *ctx, const struct store_metric *m)
{
    struct lrs *l = ctx;
    if (l->n < 64) {
        l->lr[l->n] = m->value;
        l->epoch[l->n++] = m->epoch;
    }
    return 0;
}

static void read_lrs(struct harness *h, int64_t id, struct lrs *l)
{
    struct store *s;
    char err[256];
    memset(l, 0, sizeof *l);
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    assert_int_equal(store_metrics_foreach(s, id, "lr", lr_fn, l), 0);
    store_close(&s);
}

/* h_train_spec with "optimizer" replaced by this JSON text. */
static json_t *spec_with_optimizer(const char *data, int d, int epochs, uint64_t seed,
                                   const char *optimizer)
{
    json_t *spec = h_train_spec(data, d, 3, epochs, seed);
    json_t *o = json_loads(optimizer, 0, NULL);
    assert_non_null(o);
    json_object_set_new(spec, "optimizer", o);
    return spec;
}

static void test_cosine_lr_recorded(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 256, 8, 3, 1, data, sizeof data);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    const char *opt = "{\"name\": \"adam\", \"lr\": 0.01, \"schedule\": {\"type\": \"cosine\", "
                      "\"t_max\": 5, \"eta_min\": 0.001}}";
    int64_t id = h_submit(h, spec_with_optimizer(data, 8, 6, 7, opt));
    h_wait_terminal(h, id, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");

    struct lrs l;
    read_lrs(h, id, &l);
    assert_int_equal(l.n, 6);
    /* What torch's CosineAnnealingLR gives (tests/test_schedule.c checks
     * this arithmetic against torch itself). */
    struct mlq_spec s;
    char err[512];
    json_t *doc = spec_with_optimizer(data, 8, 6, 7, opt);
    assert_int_equal(spec_from_json(doc, &s, err, sizeof err), 0);
    json_decref(doc);
    struct schedule_state ss;
    schedule_init(&ss, &s.optimizer.schedule, s.optimizer.lr);
    for (int e = 0; e < 6; e++) {
        assert_int_equal(l.epoch[e], e + 1);
        if (l.lr[e] != ss.lr)
            fail_msg("epoch %d: lr %.17g, the schedule's %.17g", e + 1, l.lr[e], ss.lr);
        schedule_step(&ss, &s.optimizer.schedule, 0);
    }
    assert_true(l.lr[0] == 0.01);
    assert_true(l.lr[5] == 0.001); /* eta_min at t_max */
    assert_true(l.lr[2] < l.lr[1] && l.lr[1] < l.lr[0]);

    /* mlq show lists the final lr among the metrics. */
    char idtxt[32], out[600];
    snprintf(idtxt, sizeof idtxt, "%lld", (long long)id);
    snprintf(out, sizeof out, "%s/show.out", h->dir);
    const char *argv[] = {MLQ_BINARY_DIR "/cli/mlq", "show", idtxt, "--db", h->db, "--json", NULL};
    assert_int_equal(h_run(h, argv, out), 0);
    json_t *shown = json_load_file(out, 0, NULL);
    assert_non_null(shown);
    json_t *lr = json_object_get(json_object_get(shown, "metrics"), "lr");
    assert_non_null(lr);
    json_decref(shown);
}

/* reduce_on_plateau with a patience of 1 on a loss that keeps falling
 * slowly (threshold 0.5: only big falls count), killed after epoch 3. */
static void test_plateau_killed_resumes_exactly(void **state)
{
    struct harness *h = *state;
    char data[512], st[32];
    h_dataset(h, "train.h5", 20000, 16, 3, 11, data, sizeof data);
    h_broker_start(h, NULL);
    pid_t t1 = h_trainer_start(h, "t1");
    const char *opt = "{\"name\": \"adam\", \"lr\": 0.01, \"schedule\": {\"type\": "
                      "\"reduce_on_plateau\", \"metric\": \"train_loss\", \"patience\": 1, "
                      "\"factor\": 0.5, \"threshold\": 0.5, \"cooldown\": 1}}";
    enum { EPOCHS = 40 };
    int64_t ref = h_submit(h, spec_with_optimizer(data, 16, EPOCHS, 5, opt));
    h_wait_terminal(h, ref, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");

    int64_t id = h_submit(h, spec_with_optimizer(data, 16, EPOCHS, 5, opt));
    h_wait_epoch(h, id, 3, 60);
    h_proc_kill(h, t1, SIGKILL);
    h_trainer_start(h, "t2");
    h_wait_terminal(h, id, 120, st, sizeof st);
    assert_string_equal(st, "succeeded");
    json_t *job = h_job(h, id);
    assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 2);
    json_decref(job);

    size_t na, nb;
    int64_t ea, eb;
    float *a = h_final_params(h, ref, &na, &ea);
    float *b = h_final_params(h, id, &nb, &eb);
    assert_int_equal(ea, EPOCHS);
    assert_int_equal(eb, EPOCHS);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
    struct lrs la, lb;
    read_lrs(h, ref, &la);
    read_lrs(h, id, &lb);
    assert_int_equal(la.n, EPOCHS);
    assert_int_equal(lb.n, EPOCHS);
    int changes = 0;
    for (int e = 0; e < EPOCHS; e++) {
        assert_true(la.lr[e] == lb.lr[e]);
        changes += e > 0 && la.lr[e] != la.lr[e - 1];
    }
    assert_true(changes >= 2); /* the plateau schedule did reduce the lr */
}

static void test_early_stopping_ends_run(void **state)
{
    struct harness *h = *state;
    char data[512], val[512], st[32];
    h_dataset(h, "train.h5", 256, 8, 3, 1, data, sizeof data);
    h_dataset(h, "val.h5", 64, 8, 3, 2, val, sizeof val);
    h_broker_start(h, NULL);
    h_trainer_start(h, "t1");
    json_t *spec = h_train_spec(data, 8, 3, 50, 3);
    json_object_set_new(spec, "validation", json_pack("{ss}", "path", val));
    json_object_set_new(spec, "checkpoint_every", json_integer(10));
    /* only epoch 1 improves by more than min_delta: stops after 1 + 2 */
    json_object_set_new(spec, "early_stopping",
                        json_pack("{ss ss si sf}", "metric", "val_loss", "mode", "min", "patience",
                                  2, "min_delta", 1e9));
    int64_t id = h_submit(h, spec);
    h_wait_terminal(h, id, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");
    json_t *job = h_job(h, id);
    json_t *result = json_object_get(job, "result");
    assert_int_equal(json_integer_value(json_object_get(result, "epochs")), 3);
    assert_true(json_is_true(json_object_get(result, "stopped_early")));
    assert_int_equal(json_integer_value(json_object_get(result, "best_epoch")), 1);
    const char *note = json_string_value(json_object_get(result, "note"));
    assert_non_null(note);
    assert_non_null(strstr(note, "stopped early after epoch 3 of 50"));
    json_decref(job);
    /* mlq show prints the note. */
    char idtxt[32], out[600], text[8192];
    snprintf(idtxt, sizeof idtxt, "%lld", (long long)id);
    snprintf(out, sizeof out, "%s/show.out", h->dir);
    const char *argv[] = {MLQ_BINARY_DIR "/cli/mlq", "show", idtxt, "--db", h->db, NULL};
    assert_int_equal(h_run(h, argv, out), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_non_null(strstr(text, "note       stopped early after epoch 3 of 50"));

    /* The best epoch's checkpoint is kept beside the last. */
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct store_checkpoint c;
    assert_int_equal(store_checkpoint_get(s, id, STORE_CKPT_EPOCH, 1, &c), 0);
    store_checkpoint_free(&c);
    assert_int_equal(store_checkpoint_get(s, id, STORE_CKPT_LAST, 0, &c), 0);
    assert_int_equal(c.epoch, 3);
    store_checkpoint_free(&c);
    struct lrs l;
    store_close(&s);
    read_lrs(h, id, &l);
    assert_int_equal(l.n, 3);
}

/* mlq submit of spec text: exit status, stderr into out. */
static int submit_text(struct harness *h, const char *json, char *out, size_t outlen)
{
    char path[600], cmd[2048];
    snprintf(path, sizeof path, "%s/bad.json", h->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "MLQ_TIMEOUT_MS=5000 %s/cli/mlq submit --spec %s --broker %s 2>&1",
             MLQ_BINARY_DIR, path, h->endpoint);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_bad_schedules_refused(void **state)
{
    struct harness *h = *state;
    char data[512], spec[2048], out[4096];
    h_dataset(h, "train.h5", 64, 8, 3, 1, data, sizeof data);
    h_broker_start(h, NULL);
    static const struct {
        const char *optimizer, *extra, *want;
    } bad[] = {
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"cosine\"}}", "",
         "optimizer.schedule.t_max: required"},
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"cosine\", \"t_max\": -2}}", "",
         "optimizer.schedule.t_max: must be between 1"},
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"warmup\"}}", "",
         "optimizer.schedule.type: must be one of"},
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"step\", \"step_size\": 2, \"gama\": "
         "0.5}}",
         "", "optimizer.schedule.gama: unknown field"},
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"reduce_on_plateau\"}}", "",
         "optimizer.schedule.metric: val_loss needs validation data"},
        {"{\"name\": \"adam\", \"schedule\": {\"type\": \"sequential\", \"milestones\": [], "
         "\"schedules\": [{\"type\": \"linear\"}, {\"type\": \"cosine\", \"t_max\": 3}]}}",
         "", "optimizer.schedule.milestones: needs 1 increasing epochs"},
        {"\"adam\"", ", \"early_stopping\": {\"patience\": 3}",
         "early_stopping.metric: val_loss needs validation data"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(spec, sizeof spec,
                 "{\"dataset\": \"%s\", \"model\": {\"layers\": [8, 4, 3]}, \"optimizer\": %s%s}",
                 data, bad[i].optimizer, bad[i].extra);
        int code = submit_text(h, spec, out, sizeof out);
        if (code != 2) fail_msg("%s: exit %d, not 2: %s", spec, code, out);
        if (!strstr(out, bad[i].want))
            fail_msg("%s: said \"%s\", wanted \"%s\"", spec, out, bad[i].want);
        /* The broker refuses it too, whoever sends it. */
        bool is_error = false;
        json_t *r = h_call(h, PROTO_SUBMIT, json_pack("{s:o}", "spec", json_loads(spec, 0, NULL)),
                           &is_error);
        assert_non_null(r);
        assert_true(is_error);
        assert_string_equal(json_string_value(json_object_get(r, "code")), "bad_spec");
        json_decref(r);
    }
    /* Nothing was queued. */
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct store_job j;
    assert_int_not_equal(store_job_get(s, 1, &j), 0);
    store_close(&s);
    /* A good one is taken. */
    snprintf(spec, sizeof spec,
             "{\"dataset\": \"%s\", \"model\": {\"layers\": [8, 4, 3]}, \"optimizer\": {\"name\": "
             "\"adam\", \"schedule\": {\"type\": \"cosine\", \"t_max\": 3}}}",
             data);
    assert_int_equal(submit_text(h, spec, out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cosine_lr_recorded, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_early_stopping_ends_run, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_schedules_refused, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_plateau_killed_resumes_exactly, h_setup, h_teardown),
    };
    return cmocka_run_group_tests_name("broker_schedule", tests, NULL, NULL);
}
