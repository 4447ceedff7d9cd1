/* Typed layers in the job spec (common/spec.c) and the model checks that
 * need the engine (trainer/spec_model.c): what cli, broker and trainer
 * refuse, with messages that name the layer, its type and the shapes; the
 * list of widths still valid; typed specs round-trip through spec_to_json. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "op.h"
#include "spec.h"
#include "spec_model.h"

/* A train spec around a model object. */
static int check(const char *model, const char *extra, char *err, size_t errlen)
{
    char json[4096];
    snprintf(json, sizeof json, "{\"dataset\": \"/d.h5\", \"model\": %s%s}", model,
             extra ? extra : "");
    struct mlq_spec s;
    int rc = spec_parse(json, &s, err, errlen);
    if (!rc) rc = spec_model_check(&s, NULL, s.batch_size, NULL, NULL, err, errlen);
    return rc;
}

static void expect_ok(const char *model)
{
    char err[512] = "";
    if (check(model, NULL, err, sizeof err)) fail_msg("%s: refused: %s", model, err);
}

static void expect_refused(const char *model, const char *extra, const char *want)
{
    char err[512] = "";
    int rc = check(model, extra, err, sizeof err);
    if (rc != -EINVAL) fail_msg("%s: accepted (rc %d), wanted \"%s\"", model, rc, want);
    if (!strstr(err, want)) fail_msg("%s: error \"%s\" lacks \"%s\"", model, err, want);
}

static void test_widths_still_valid(void **state)
{
    (void)state;
    expect_ok("{\"layers\": [784, 128, 64, 10]}");
    expect_ok("{\"layers\": [4, 3], \"activation\": \"tanh\"}");
}

static void test_typed_layers_parse_and_round_trip(void **state)
{
    (void)state;
    const char *json =
        "{\"dataset\": \"/d.h5\", \"model\": {\"input\": [1, 4, 4], \"layers\": ["
        "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 8, \"bias\": false},"
        "{\"type\": \"residual\", \"layers\": [{\"type\": \"dense\", \"out\": 8}],"
        " \"shortcut\": [{\"type\": \"dense\", \"out\": 8}]},"
        "{\"type\": \"dense\", \"out\": 3}]}}";
    struct mlq_spec s, back;
    char err[512] = "";
    if (spec_parse(json, &s, err, sizeof err)) fail_msg("%s", err);
    assert_true(s.typed);
    assert_int_equal(s.n_layers, 0);
    assert_int_equal(s.n_nodes, 6);
    assert_string_equal(s.node[2].type, "residual");
    assert_int_equal(s.node[2].branch_span, 1);
    assert_int_equal(s.node[2].span, 2);
    assert_false(s.node[1].bias);
    assert_int_equal(s.input_rank, 3);
    if (spec_model_check(&s, NULL, 64, NULL, NULL, err, sizeof err)) fail_msg("%s", err);

    json_t *doc = spec_to_json(&s);
    assert_int_equal(spec_from_json(doc, &back, err, sizeof err), 0);
    json_t *again = spec_to_json(&back);
    assert_true(json_equal(doc, again));
    json_decref(doc);
    json_decref(again);

    /* Translated: the block is its branch, its shortcut and an add, named as
     * the state_dict of an equivalent nested nn.Sequential. */
    struct model_desc *d = malloc(sizeof *d);
    assert_non_null(d);
    assert_int_equal(spec_model_desc(&s, NULL, d, err, sizeof err), 0);
    assert_int_equal(d->n_layers, 6);
    assert_string_equal(d->layer[2].name, "2.branch.0");
    assert_string_equal(d->layer[3].name, "2.shortcut.0");
    assert_string_equal(d->layer[4].type, "add");
    assert_int_equal(d->layer[4].in[0], 2);
    assert_int_equal(d->layer[4].in[1], 3);
    assert_int_equal(d->layer[3].in[0], 1);
    assert_string_equal(d->layer[5].name, "3");
    free(d);
}

static void test_bad_layers_refused(void **state)
{
    (void)state;
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"dens\", \"out\": 3}]}", NULL,
                   "layer 0: unknown type \"dens\"");
    expect_refused(
        "{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"out\": 3, \"kernel\": 3}]}", NULL,
        "layer 0 (dense): unknown field kernel");
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"width\": 3}]}", NULL,
                   "model.layers[0].width: unknown field");
    expect_refused("{\"layers\": [{\"type\": \"dropout\", \"p\": 1.0}]}", NULL,
                   "model.layers[0].p: must be in [0, 1), got 1");
    expect_refused("{\"layers\": [{\"type\": \"dropout\", \"p\": -0.1}]}", NULL,
                   "model.layers[0].p: must be in [0, 1)");
    expect_refused("{\"layers\": [{\"type\": \"conv2d\", \"out\": 4, \"kernel\": 0}]}", NULL,
                   "model.layers[0].kernel: must be between 1 and");
    expect_refused("{\"layers\": [{\"type\": \"maxpool\", \"kernel\": 2, \"stride\": 0}]}", NULL,
                   "model.layers[0].stride: must be between 1 and");
    expect_refused("{\"layers\": [{\"type\": \"conv2d\", \"out\": 4, \"kernel\": 3, "
                   "\"padding\": -1}]}",
                   NULL, "model.layers[0].padding: must be between 0 and");
    expect_refused("{\"input\": [2, 3, 3], \"layers\": [{\"type\": \"dense\", \"out\": 3}]}", NULL,
                   "layer 0 (dense): needs flat inputs (features), got (2, 3, 3)");
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"out\": 5}, "
                   "{\"type\": \"residual\", \"layers\": [{\"type\": \"dense\", \"out\": 6}]}, "
                   "{\"type\": \"dense\", \"out\": 2}]}",
                   NULL,
                   "layer 1 (add): the branch's output (6) differs from the shortcut's (5): give "
                   "the block a projection");
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"residual\", \"out\": 3, "
                   "\"layers\": [{\"type\": \"dense\", \"out\": 4}]}]}",
                   NULL, "a residual block takes only layers and shortcut");
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"out\": 3, \"layers\": "
                   "[]}]}",
                   NULL, "model.layers[0].layers: only a residual block has one");
    expect_refused("{\"layers\": [4, 3], \"input\": [4]}", NULL, "model.input: only with typed");
    expect_refused("{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"out\": 1}]}", NULL,
                   "cross_entropy needs at least 2 outputs");
}

/* Too many parameters, and a checkpoint larger than one protocol message:
 * refused when the spec is validated, not after training. */
static void test_size_limits(void **state)
{
    (void)state;
    /* 65536 x 65536 weights: 2^32 parameters. */
    expect_refused("{\"layers\": [65536, 65536, 10]}", NULL, "parameters is more than the");
    /* 2^26 parameters fit the limit, but with Adam's two moments the
     * checkpoint is 768 MiB. */
    expect_refused("{\"layers\": [8192, 8191, 2]}", ", \"optimizer\": \"adam\"",
                   "more than the 256 MiB of one protocol message");
    expect_ok("{\"layers\": [8192, 4096, 2]}");
}

/* How a dataset's X is read as an input shape. */
static void test_dataset_shapes(void **state)
{
    (void)state;
    int64_t flat[] = {100, 784}, hw[] = {100, 28, 28}, chw[] = {100, 3, 32, 32};
    struct shape s = spec_model_dataset_shape(2, flat);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.d[0], 784);
    s = spec_model_dataset_shape(3, hw);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.d[0], 1);
    assert_int_equal(s.d[2], 28);
    s = spec_model_dataset_shape(4, chw);
    assert_int_equal(s.d[0], 3);
    assert_int_equal(s.d[1], 32);

    /* model.input against the data: (N, H, W, 1) holds the same floats as
     * (N, 1, H, W); other disagreements are refused with both shapes. */
    struct mlq_spec spec;
    char err[512] = "";
    assert_int_equal(
        spec_parse("{\"dataset\": \"/d.h5\", \"model\": {\"input\": [1, 28, 28], \"layers\": "
                   "[{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 10}]}}",
                   &spec, err, sizeof err),
        0);
    struct shape hw1 = {3, {28, 28, 1}}, other = {3, {3, 28, 28}};
    assert_int_equal(spec_model_check(&spec, &hw1, 64, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(spec_model_check(&spec, &other, 64, NULL, NULL, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "model.input (1, 28, 28) does not match the dataset's samples "
                                "(3, 28, 28)"));
}

static void test_one_line(void **state)
{
    (void)state;
    struct mlq_spec s;
    char err[512], line[256];
    assert_int_equal(
        spec_parse("{\"dataset\": \"/d.h5\", \"model\": {\"layers\": ["
                   "{\"type\": \"conv2d\", \"out\": 32, \"kernel\": 3, \"padding\": 1}, "
                   "{\"type\": \"batchnorm\"}, {\"type\": \"relu\"}, {\"type\": \"maxpool\", "
                   "\"kernel\": 2}, {\"type\": \"conv2d\", \"out\": 64, \"kernel\": 3, "
                   "\"padding\": 1}, {\"type\": \"batchnorm\"}, {\"type\": \"relu\"}, "
                   "{\"type\": \"maxpool\", \"kernel\": 2}, {\"type\": \"flatten\"}, "
                   "{\"type\": \"dense\", \"out\": 128}, {\"type\": \"relu\"}, "
                   "{\"type\": \"dropout\", \"p\": 0.25}, {\"type\": \"dense\", \"out\": 10}]}}",
                   &s, err, sizeof err),
        0);
    assert_string_equal(spec_model_describe(&s, line, sizeof line),
                        "conv32-bn-pool-conv64-bn-pool-fc128-fc10");
    assert_int_equal(
        spec_parse(
            "{\"dataset\": \"/d.h5\", \"model\": {\"layers\": ["
            "{\"type\": \"conv2d\", \"out\": 16, \"kernel\": 3}, {\"type\": \"residual\", "
            "\"layers\": [{\"type\": \"conv2d\", \"out\": 16, \"kernel\": 3, \"padding\": 1}, "
            "{\"type\": \"batchnorm\"}], \"shortcut\": [{\"type\": \"batchnorm\"}]}, "
            "{\"type\": \"global_avgpool\"}, {\"type\": \"flatten\"}, {\"type\": \"dense\", "
            "\"out\": 10}]}}",
            &s, err, sizeof err),
        0);
    assert_string_equal(spec_model_describe(&s, line, sizeof line),
                        "conv16-res(conv16-bn|bn)-gap-fc10");
    assert_int_equal(spec_parse("{\"dataset\": \"/d.h5\", \"model\": {\"layers\": [784, 128, 10]}}",
                                &s, err, sizeof err),
                     0);
    assert_string_equal(spec_model_describe(&s, line, sizeof line), "784-128-10");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_widths_still_valid),
        cmocka_unit_test(test_typed_layers_parse_and_round_trip),
        cmocka_unit_test(test_bad_layers_refused),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_dataset_shapes),
        cmocka_unit_test(test_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
