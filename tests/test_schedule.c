/* Learning-rate schedules: every sequence of tests/parity/schedule_fixtures.json
 * (written by PyTorch 1.13's torch.optim.lr_scheduler) equals mlq's, bit for
 * bit; a schedule continues exactly from a copy of its state (what a
 * checkpoint holds); the spec refuses bad schedules and early_stopping
 * settings with a message naming the field. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "schedule.h"
#include "spec.h"

static json_t *load_fixtures(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(MLQ_SOURCE_DIR "/tests/parity/schedule_fixtures.json", 0, &jerr);
    if (!doc) fail_msg("schedule_fixtures.json: %s (line %d)", jerr.text, jerr.line);
    return doc;
}

/* A train spec with this optimizer lr and schedule (borrowed). */
static void spec_with(json_t *schedule, double lr, struct mlq_spec *s)
{
    json_t *doc = json_pack("{ss sf s{ss sf sO}}", "dataset", "x.h5", "validation_split", 0.1,
                            "optimizer", "name", "adam", "lr", lr, "schedule", schedule);
    char err[512];
    if (spec_from_json(doc, s, err, sizeof err)) fail_msg("spec: %s", err);
    json_decref(doc);
}

static void check_case(json_t *c, const struct spec_schedule *sc, double lr)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    json_t *lrs = json_object_get(c, "lrs"), *metrics = json_object_get(c, "metrics");
    size_t n = json_array_size(lrs);
    assert_true(n > 0);
    struct schedule_state st, copy;
    schedule_init(&st, sc, lr);
    for (size_t i = 0; i < n; i++) {
        double want = json_real_value(json_array_get(lrs, i));
        if (st.lr != want)
            fail_msg("%s: lr before step %zu is %.17g, torch's %.17g", name, i, st.lr, want);
        double m = metrics ? json_number_value(json_array_get(metrics, i)) : NAN;
        if (i == n / 2) copy = st; /* a resume from here must go on the same */
        schedule_step(&st, sc, m);
    }
    /* From the copy taken halfway, the same tail. */
    for (size_t i = n / 2; i < n; i++) {
        double want = json_real_value(json_array_get(lrs, i));
        if (copy.lr != want)
            fail_msg("%s, resumed at step %zu: lr before step %zu is %.17g, torch's %.17g", name,
                     n / 2, i, copy.lr, want);
        schedule_step(&copy, sc, metrics ? json_number_value(json_array_get(metrics, i)) : NAN);
    }
}

static void test_torch_parity(void **state)
{
    (void)state;
    json_t *doc = load_fixtures();
    json_t *cases = json_object_get(doc, "cases");
    assert_true(json_array_size(cases) >= 15);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        double lr = json_real_value(json_object_get(c, "lr"));
        struct mlq_spec s;
        spec_with(json_object_get(c, "schedule"), lr, &s);
        assert_true(s.optimizer.schedule.n_phases >= 1);
        check_case(c, &s.optimizer.schedule, lr);
        /* The canonical spec (what the run and its checkpoints keep) gives
         * the same schedule. */
        json_t *canon = spec_to_json(&s);
        struct mlq_spec back;
        char err[512];
        if (spec_from_json(canon, &back, err, sizeof err)) fail_msg("round trip: %s", err);
        json_decref(canon);
        check_case(c, &back.optimizer.schedule, lr);
    }
    json_decref(doc);
}

/* No schedule: the lr never moves, and the canonical spec has no schedule
 * (runs from before schedules keep their params). */
static void test_no_schedule(void **state)
{
    (void)state;
    struct mlq_spec s;
    char err[256];
    assert_int_equal(spec_parse("{\"dataset\": \"x.h5\", \"optimizer\": {\"name\": \"sgd\", "
                                "\"lr\": 0.05}}",
                                &s, err, sizeof err),
                     0);
    assert_int_equal(s.optimizer.schedule.n_phases, 0);
    assert_false(s.early_stopping.on);
    struct schedule_state st;
    schedule_init(&st, &s.optimizer.schedule, 0.05);
    for (int i = 0; i < 10; i++) {
        assert_true(st.lr == 0.05);
        schedule_step(&st, &s.optimizer.schedule, 1.0);
    }
    json_t *doc = spec_to_json(&s);
    assert_null(json_object_get(json_object_get(doc, "optimizer"), "schedule"));
    assert_null(json_object_get(doc, "early_stopping"));
    json_decref(doc);
}

/* Each bad spec is refused with a message that contains want. */
static void refused(const char *json, const char *want)
{
    struct mlq_spec s;
    char err[512] = "";
    int rc = spec_parse(json, &s, err, sizeof err);
    if (rc == 0) fail_msg("accepted: %s", json);
    if (!strstr(err, want)) fail_msg("%s\n  said \"%s\", wanted \"%s\"", json, err, want);
}

#define OPT(sched)                                                                                 \
    "{\"dataset\": \"x.h5\", \"optimizer\": {\"name\": \"adam\", \"schedule\": " sched "}}"
#define OPTV(sched)                                                                                \
    "{\"dataset\": \"x.h5\", \"validation_split\": 0.2, \"optimizer\": {\"name\": \"adam\", "      \
    "\"schedule\": " sched "}}"

static void test_bad_schedules(void **state)
{
    (void)state;
    refused(OPT("\"cosine\""), "optimizer.schedule: must be an object");
    refused(OPT("{\"t_max\": 3}"), "optimizer.schedule.type: required");
    refused(OPT("{\"type\": \"cosin\"}"), "optimizer.schedule.type: must be one of");
    refused(OPT("{\"type\": \"cosine\"}"), "optimizer.schedule.t_max: required");
    refused(OPT("{\"type\": \"cosine\", \"t_max\": 0}"),
            "optimizer.schedule.t_max: must be between");
    refused(OPT("{\"type\": \"cosine\", \"t_max\": 1.5}"),
            "optimizer.schedule.t_max: must be an integer");
    refused(OPT("{\"type\": \"cosine\", \"t_max\": 5, \"eta_min\": -1}"),
            "optimizer.schedule.eta_min");
    refused(OPT("{\"type\": \"cosine\", \"t_max\": 5, \"gamma\": 0.5}"),
            "optimizer.schedule.gamma: unknown field");
    refused(OPT("{\"type\": \"step\"}"), "optimizer.schedule.step_size: required");
    refused(OPT("{\"type\": \"step\", \"step_size\": 2, \"gamma\": 0}"),
            "optimizer.schedule.gamma: must be positive");
    refused(OPT("{\"type\": \"exponential\"}"), "optimizer.schedule.gamma: required");
    refused(OPT("{\"type\": \"multistep\", \"milestones\": [5, 3]}"),
            "optimizer.schedule.milestones[1]: must be greater");
    refused(OPT("{\"type\": \"multistep\", \"milestones\": 5}"), "optimizer.schedule.milestones");
    refused(OPT("{\"type\": \"linear\", \"start_factor\": 0}"),
            "optimizer.schedule.start_factor: must be in (0, 1]");
    refused(OPT("{\"type\": \"linear\", \"end_factor\": 2}"), "optimizer.schedule.end_factor");
    refused(OPT("{\"type\": \"cosine\", \"t_max\": 5, \"interval\": \"batch\"}"),
            "optimizer.schedule.interval: must be one of epoch, step");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"factor\": 1}"),
            "optimizer.schedule.factor: must be in (0, 1)");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"mode\": \"up\"}"),
            "optimizer.schedule.mode: must be one of min, max");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"metric\": \"val_los\"}"),
            "optimizer.schedule.metric: must be one of");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"threshold_mode\": \"x\"}"),
            "optimizer.schedule.threshold_mode");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"patience\": -1}"),
            "optimizer.schedule.patience");
    refused(OPTV("{\"type\": \"reduce_on_plateau\", \"interval\": \"step\"}"),
            "optimizer.schedule.interval: reduce_on_plateau steps once per epoch");
    refused(OPT("{\"type\": \"reduce_on_plateau\"}"),
            "optimizer.schedule.metric: val_loss needs validation data");
    refused(OPT("{\"type\": \"sequential\", \"schedules\": [{\"type\": \"linear\"}]}"),
            "optimizer.schedule.schedules: a sequential schedule needs a list of 2");
    refused(OPT("{\"type\": \"sequential\", \"schedules\": [{\"type\": \"linear\"}, {\"type\": "
                "\"cosine\", \"t_max\": 4}]}"),
            "optimizer.schedule.milestones: needs 1 increasing epochs");
    refused(OPT("{\"type\": \"sequential\", \"milestones\": [0], \"schedules\": [{\"type\": "
                "\"linear\"}, {\"type\": \"cosine\", \"t_max\": 4}]}"),
            "optimizer.schedule.milestones[0]: must be a positive integer");
    refused(OPT("{\"type\": \"sequential\", \"milestones\": [3], \"schedules\": [{\"type\": "
                "\"linear\"}, {\"type\": \"cosine\"}]}"),
            "optimizer.schedule.schedules[1].t_max: required");
    refused(OPT("{\"type\": \"sequential\", \"milestones\": [3], \"schedules\": [{\"type\": "
                "\"linear\", \"interval\": \"step\"}, {\"type\": \"cosine\", \"t_max\": 4}]}"),
            "optimizer.schedule.schedules[0].interval: give it on the sequential schedule");
    refused(OPTV("{\"type\": \"sequential\", \"milestones\": [3], \"schedules\": [{\"type\": "
                 "\"linear\"}, {\"type\": \"reduce_on_plateau\"}]}"),
            "optimizer.schedule.schedules[1].type: reduce_on_plateau cannot be part");
    refused(OPT("{\"type\": \"sequential\", \"milestones\": [3], \"schedules\": [{\"type\": "
                "\"linear\"}, {\"type\": \"sequential\"}]}"),
            "optimizer.schedule.schedules[1].type: must be one of");

    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"loss\": \"mse\", \"model\": "
            "{\"layers\": [4, 1], \"output\": \"linear\"}, \"early_stopping\": {\"metric\": "
            "\"val_accuracy\"}}",
            "early_stopping.metric: val_accuracy is measured with cross_entropy only");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"loss\": \"mse\", \"model\": "
            "{\"layers\": [4, 1], \"output\": \"linear\"}, \"optimizer\": {\"name\": \"sgd\", "
            "\"schedule\": {\"type\": \"reduce_on_plateau\", \"metric\": \"train_accuracy\"}}}",
            "optimizer.schedule.metric: train_accuracy is measured with cross_entropy only");
    refused("{\"dataset\": \"x.h5\", \"early_stopping\": {\"patience\": 3}}",
            "early_stopping.metric: val_loss needs validation data");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": "
            "{\"patience\": 0}}",
            "early_stopping.patience: must be between 1");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": "
            "{\"min_delta\": -0.1}}",
            "early_stopping.min_delta: must be >= 0");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": "
            "{\"metric\": \"accuracy\"}}",
            "early_stopping.metric: must be one of");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": "
            "{\"mode\": \"lowest\"}}",
            "early_stopping.mode: must be one of min, max");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": "
            "{\"patiense\": 3}}",
            "early_stopping.patiense: unknown field");
    refused("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, \"early_stopping\": 3}",
            "early_stopping: must be an object");
}

/* The forms that are accepted, with their defaults. */
static void test_good_specs(void **state)
{
    (void)state;
    struct mlq_spec s;
    char err[512];
    assert_int_equal(spec_parse(OPT("{\"type\": \"CosineAnnealingLR\", \"t_max\": 12, "
                                    "\"interval\": \"step\"}"),
                                &s, err, sizeof err),
                     0);
    assert_int_equal(s.optimizer.schedule.phase[0].kind, SCHED_COSINE);
    assert_true(s.optimizer.schedule.per_step);
    assert_int_equal(spec_parse("{\"dataset\": \"x.h5\", \"validation_split\": 0.1, "
                                "\"early_stopping\": {\"metric\": \"val_accuracy\"}}",
                                &s, err, sizeof err),
                     0);
    assert_true(s.early_stopping.on);
    assert_true(s.early_stopping.mode_max); /* an accuracy rises */
    assert_int_equal(s.early_stopping.patience, 3);
    assert_int_equal(spec_parse("{\"dataset\": \"x.h5\", \"early_stopping\": {\"metric\": "
                                "\"train_loss\", \"patience\": 2, \"min_delta\": 0.01}}",
                                &s, err, sizeof err),
                     0);
    assert_false(s.early_stopping.mode_max);
    json_t *doc = spec_to_json(&s);
    json_t *es = json_object_get(doc, "early_stopping");
    assert_string_equal(json_string_value(json_object_get(es, "metric")), "train_loss");
    assert_int_equal(json_integer_value(json_object_get(es, "patience")), 2);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_parity),
        cmocka_unit_test(test_no_schedule),
        cmocka_unit_test(test_bad_schedules),
        cmocka_unit_test(test_good_specs),
    };
    return cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
}
