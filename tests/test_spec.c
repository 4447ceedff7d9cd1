/* The job spec: defaults, every field, and the errors users see. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spec.h"

static void parse_ok(const char *json, struct mlq_spec *s)
{
    char err[512] = "";
    int rc = spec_parse(json, s, err, sizeof err);
    if (rc) fail_msg("unexpected error: %s", err);
}

static void parse_fails(const char *json, const char *needle)
{
    struct mlq_spec s;
    char err[512] = "";
    assert_int_not_equal(spec_parse(json, &s, err, sizeof err), 0);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_defaults_are_the_seed_mlp(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"dataset\": \"train.h5\"}", &s);
    assert_int_equal(s.kind, JOB_TRAIN);
    assert_int_equal(s.n_layers, 3);
    assert_int_equal(s.layers[0], 784);
    assert_int_equal(s.layers[3], 10);
    assert_int_equal(s.optimizer.name, OPT_SGD);
    assert_true(s.optimizer.lr == 0.01);
    assert_int_equal(s.batch_size, 64);
    assert_string_equal(s.dataset.path, "train.h5");
    assert_string_equal(s.dataset.x, "X");
    assert_string_equal(s.dataset.y, "y");
    assert_true(s.dataset.scale);
}

/* The output follows the loss unless given (issue 14: --loss mse alone
 * trained logits, which predict read as class scores). */
static void test_output_follows_the_loss(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"dataset\": \"t.h5\"}", &s);
    assert_int_equal(s.output, OUT_LOGITS);
    parse_ok("{\"dataset\": \"t.h5\", \"loss\": \"mse\"}", &s);
    assert_int_equal(s.output, OUT_LINEAR);
    parse_ok("{\"dataset\": \"t.h5\", \"loss\": \"mse\", \"model\": {\"layers\": [4, 2]}}", &s);
    assert_int_equal(s.output, OUT_LINEAR);
    parse_ok("{\"dataset\": \"t.h5\", \"loss\": \"mse\", \"model\": {\"output\": \"sigmoid\"}}",
             &s);
    assert_int_equal(s.output, OUT_SIGMOID);
    /* a stored spec says its output: an old run of mse with logits stays so */
    parse_ok("{\"dataset\": \"t.h5\", \"loss\": \"mse\", \"model\": {\"output\": \"logits\"}}", &s);
    assert_int_equal(s.output, OUT_LOGITS);
}

static void test_optimizer_defaults_follow_torch(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"dataset\": \"t.h5\", \"optimizer\": \"adam\"}", &s);
    assert_true(s.optimizer.lr == 0.001 && s.optimizer.beta1 == 0.9 && s.optimizer.beta2 == 0.999);
    assert_true(s.optimizer.eps == 1e-8 && s.optimizer.weight_decay == 0);
    parse_ok("{\"dataset\": \"t.h5\", \"optimizer\": {\"name\": \"adamw\"}}", &s);
    assert_true(s.optimizer.weight_decay == 0.01);
    parse_ok("{\"dataset\": \"t.h5\", \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.1}}", &s);
    assert_true(s.optimizer.eps == 1e-10 && s.optimizer.lr == 0.1);
    parse_ok("{\"dataset\": \"t.h5\", \"optimizer\": {\"name\": \"sgd\", \"momentum\": 0.9, "
             "\"nesterov\": true}}",
             &s);
    assert_true(s.optimizer.nesterov && s.optimizer.momentum == 0.9);
}

static void test_full_train_spec(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"kind\": \"train\", \"name\": \"x\", \"dataset\": {\"path\": \"a.h5\", \"x\": "
             "\"inputs\", \"y\": \"labels\", \"scale\": false}, \"validation\": {\"path\": "
             "\"b.h5\"}, \"model\": {\"layers\": [4, 8, 3], \"activation\": \"tanh\", "
             "\"output\": \"softmax\"}, \"loss\": \"cross_entropy\", \"optimizer\": {\"name\": "
             "\"rmsprop\", \"alpha\": 0.9}, \"regularization\": {\"l1\": 0.001, \"l2\": 0.01}, "
             "\"batch_size\": 1, \"epochs\": 3, \"seed\": 7, \"threads\": 2, "
             "\"checkpoint_every\": 0, \"shuffle\": false, \"priority\": 5, \"max_attempts\": 2}",
             &s);
    assert_string_equal(s.dataset.x, "inputs");
    assert_false(s.dataset.scale);
    assert_true(s.has_validation);
    assert_string_equal(s.validation.path, "b.h5");
    assert_int_equal(s.n_layers, 2);
    assert_int_equal(s.activation, ACT_TANH);
    assert_int_equal(s.output, OUT_SOFTMAX);
    assert_int_equal(s.optimizer.name, OPT_RMSPROP);
    assert_true(s.optimizer.alpha == 0.9);
    assert_true(s.l1 == 0.001 && s.l2 == 0.01);
    assert_int_equal(s.batch_size, 1);
    assert_int_equal(s.seed, 7);
    assert_int_equal(s.priority, 5);
    assert_int_equal(s.max_attempts, 2);
    assert_false(s.shuffle);
}

static void test_round_trip_through_canonical_json(void **state)
{
    (void)state;
    struct mlq_spec a, b;
    parse_ok("{\"dataset\": \"a.h5\", \"validation_split\": 0.1, \"model\": {\"layers\": [3, 5, "
             "2], \"activation\": \"leaky_relu\", \"leaky_slope\": 0.2}, \"optimizer\": "
             "{\"name\": \"adam\", \"betas\": [0.8, 0.99]}, \"seed\": 123456789012, "
             "\"label_smoothing\": 0.1}",
             &a);
    json_t *doc = spec_to_json(&a);
    char err[256];
    assert_int_equal(spec_from_json(doc, &b, err, sizeof err), 0);
    json_decref(doc);
    assert_int_equal(b.n_layers, 2);
    assert_int_equal(b.layers[1], 5);
    assert_true(b.leaky_slope == 0.2);
    assert_true(b.optimizer.beta1 == 0.8 && b.optimizer.beta2 == 0.99);
    assert_true(b.validation_split == 0.1);
    assert_true(b.seed == 123456789012ULL);
    assert_true(b.label_smoothing == 0.1);
}

static void test_eval_and_predict(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"kind\": \"eval\", \"run\": 3, \"dataset\": \"t.h5\", \"checkpoint\": \"best\"}",
             &s);
    assert_int_equal(s.kind, JOB_EVAL);
    assert_int_equal(s.run, 3);
    assert_string_equal(s.checkpoint, "best");
    parse_ok("{\"kind\": \"predict\", \"run\": 3, \"input\": \"in.h5\", \"output\": \"o.h5\", "
             "\"checkpoint\": 4}",
             &s);
    assert_string_equal(s.dataset.path, "in.h5");
    assert_string_equal(s.output_path, "o.h5");
    assert_string_equal(s.checkpoint, "4");
}

static void test_errors_name_the_field(void **state)
{
    (void)state;
    parse_fails("not json", "invalid JSON");
    parse_fails("[1]", "must be a JSON object");
    parse_fails("{}", "dataset.path: required");
    parse_fails("{\"dataset\": \"a\", \"epochz\": 3}", "epochz: unknown field");
    parse_fails("{\"dataset\": \"a\", \"model\": {\"layers\": [784, 0, 10]}}", "model.layers[1]");
    parse_fails("{\"dataset\": \"a\", \"model\": {\"layers\": [784]}}", "model.layers");
    parse_fails("{\"dataset\": \"a\", \"model\": {\"activation\": \"gelu\"}}",
                "model.activation: must be one of relu");
    parse_fails("{\"dataset\": \"a\", \"optimizer\": \"adamax\"}", "optimizer.name");
    parse_fails("{\"dataset\": \"a\", \"optimizer\": {\"lr\": -1}}", "optimizer.lr");
    parse_fails("{\"dataset\": \"a\", \"optimizer\": {\"name\": \"sgd\", \"nesterov\": true}}",
                "nesterov");
    parse_fails("{\"dataset\": \"a\", \"batch_size\": 0}", "batch_size");
    parse_fails("{\"dataset\": \"a\", \"model\": {\"layers\": [65536, 65536, 65536, 10]}}",
                "parameters is more than");
    parse_fails("{\"dataset\": \"a\", \"epochs\": 1.5}", "epochs: must be an integer");
    parse_fails("{\"dataset\": \"a\", \"regularization\": {\"l2\": -0.1}}", "regularization");
    parse_fails("{\"dataset\": \"a\", \"loss\": \"mse\", \"model\": {\"output\": \"softmax\"}}",
                "model.output");
    parse_fails("{\"dataset\": \"a\", \"model\": {\"layers\": [4, 1]}}", "at least 2 outputs");
    parse_fails("{\"kind\": \"eval\", \"dataset\": \"a\"}", "run: required");
    parse_fails("{\"kind\": \"predict\", \"run\": 1, \"input\": \"a\"}", "output: required");
    parse_fails("{\"kind\": \"eval\", \"run\": 1, \"dataset\": \"a\", \"checkpoint\": \"x\"}",
                "checkpoint");
    parse_fails("{\"dataset\": \"a\", \"validation_split\": 1.0}", "validation_split");
    parse_fails("{\"dataset\": \"a\", \"label_smoothing\": 1.0}", "label_smoothing: must be in");
    parse_fails("{\"dataset\": \"a\", \"label_smoothing\": -0.1}", "label_smoothing");
    parse_fails("{\"dataset\": \"a\", \"loss\": \"mse\", \"label_smoothing\": 0.1}",
                "needs loss cross_entropy");
    parse_fails("{\"dataset\": \"a\", \"seed\": 1, \"seed\": 2}", "duplicate");
}

#define SHA_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

/* A pushed dataset by name, by hash, or both (what the broker stores after
 * resolving the name); never together with a path. */
static void test_pushed_datasets(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"dataset\": {\"name\": \"fmnist-train\"}, \"validation\": {\"sha256\": \"" SHA_A
             "\", \"x\": \"images\"}}",
             &s);
    assert_string_equal(s.dataset.name, "fmnist-train");
    assert_string_equal(s.dataset.sha256, "");
    assert_string_equal(s.dataset.path, "");
    assert_true(spec_dataset_pushed(&s.dataset));
    assert_string_equal(s.validation.sha256, SHA_A);
    assert_string_equal(s.validation.x, "images");

    /* The canonical form keeps what was given and adds no path. */
    json_t *j = spec_to_json(&s);
    json_t *d = json_object_get(j, "dataset"), *v = json_object_get(j, "validation");
    assert_string_equal(json_string_value(json_object_get(d, "name")), "fmnist-train");
    assert_null(json_object_get(d, "path"));
    assert_null(json_object_get(d, "sha256"));
    assert_string_equal(json_string_value(json_object_get(v, "sha256")), SHA_A);
    assert_null(json_object_get(v, "path"));
    struct mlq_spec back;
    char err[512] = "";
    if (spec_from_json(j, &back, err, sizeof err)) fail_msg("round trip: %s", err);
    json_decref(j);
    assert_string_equal(back.dataset.name, "fmnist-train");
    assert_string_equal(back.validation.sha256, SHA_A);

    parse_ok("{\"dataset\": {\"name\": \"a.b_c-1\", \"sha256\": \"" SHA_A "\"}}", &s);
    assert_string_equal(s.dataset.name, "a.b_c-1");
    assert_string_equal(s.dataset.sha256, SHA_A);
    parse_ok("{\"kind\": \"predict\", \"run\": 1, \"input\": {\"name\": \"rows\"}, "
             "\"output\": \"o.h5\"}",
             &s);
    assert_string_equal(s.dataset.name, "rows");

    parse_fails("{\"dataset\": {\"path\": \"a.h5\", \"name\": \"a\"}}",
                "dataset: give either path or a pushed dataset");
    parse_fails("{\"dataset\": {\"path\": \"a.h5\", \"sha256\": \"" SHA_A "\"}}", "either path");
    parse_fails("{\"dataset\": {\"name\": \"../etc/passwd\"}}", "dataset.name: 1 to 128");
    parse_fails("{\"dataset\": {\"name\": \"-x\"}}", "dataset.name");
    parse_fails("{\"dataset\": {\"name\": \"\"}}", "dataset.name");
    parse_fails("{\"dataset\": \"a\", \"validation\": {\"sha256\": \"abc\"}}",
                "validation.sha256: must be 64 lower-case hex digits");
    parse_fails(
        "{\"dataset\": {\"sha256\": \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C"
        "15B0F00A08\"}}",
        "dataset.sha256");
    parse_fails("{\"dataset\": {\"x\": \"X\"}}", "dataset.path: required (or name, or sha256)");

    char name[200];
    memset(name, 'a', 128);
    name[128] = '\0';
    assert_true(spec_dataset_name_valid(name));
    name[128] = 'a';
    name[129] = '\0';
    assert_false(spec_dataset_name_valid(name));
    assert_false(spec_dataset_name_valid("a/b"));
    assert_false(spec_dataset_name_valid(".hidden"));
}

static void test_load_names_the_file(void **state)
{
    (void)state;
    struct mlq_spec s;
    char err[512];
    assert_int_not_equal(spec_load("/nonexistent/job.json", &s, err, sizeof err), 0);
    assert_non_null(strstr(err, "/nonexistent/job.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_seed_mlp),
        cmocka_unit_test(test_optimizer_defaults_follow_torch),
        cmocka_unit_test(test_output_follows_the_loss),
        cmocka_unit_test(test_full_train_spec),
        cmocka_unit_test(test_round_trip_through_canonical_json),
        cmocka_unit_test(test_eval_and_predict),
        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_pushed_datasets),
        cmocka_unit_test(test_load_names_the_file),
    };
    return cmocka_run_group_tests_name("spec", tests, NULL, NULL);
}
