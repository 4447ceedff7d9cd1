/* The recipes in examples/ are specs a user submits as they are: each one
 * parses, passes the model checks cli, broker and trainer apply, and builds
 * the model docs/spec.md describes (parameter counts of the layered ones). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spec.h"
#include "spec_model.h"

static void check(const char *name, struct mlq_spec *s, struct model_sizes *sz)
{
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/examples/%s", MLQ_SOURCE_DIR, name);
    if (spec_load(path, s, err, sizeof err)) fail_msg("%s", err);
    bool checked = false;
    if (spec_model_check(s, NULL, s->batch_size, sz, &checked, err, sizeof err))
        fail_msg("%s: %s", name, err);
    assert_true(checked);
    assert_int_equal(s->kind, JOB_TRAIN);
    if (strncmp(name, "char-", 5) == 0) { /* language models on fortunes (docs/datasets.md) */
        assert_string_equal(s->dataset.path, "data/fortunes.h5");
        assert_string_equal(s->validation.path, "data/fortunes.h5");
        assert_string_equal(s->validation.x, "X_val");
        assert_false(s->dataset.scale); /* token ids, not pixels */
        return;
    }
    assert_string_equal(s->dataset.path, "data/fashion-mnist-train.h5");
    assert_string_equal(s->validation.path, "data/fashion-mnist-test.h5");
}

static void test_every_example_validates(void **state)
{
    (void)state;
    DIR *d = opendir(MLQ_SOURCE_DIR "/examples");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        struct mlq_spec s;
        struct model_sizes sz;
        check(e->d_name, &s, &sz);
        print_message("%s: %zu parameters\n", e->d_name, sz.n_params);
        n++;
    }
    closedir(d);
    assert_true(n >= 7);
}

static void test_recipes(void **state)
{
    (void)state;
    struct mlq_spec s;
    struct model_sizes sz;
    /* conv 1->32 and 32->64 (3x3, bias), dense 3136->128->10. */
    const size_t lenet = (9 * 32 + 32) + (32 * 9 * 64 + 64) + (3136 * 128 + 128) + (128 * 10 + 10);
    check("lenet.json", &s, &sz);
    assert_int_equal(sz.n_params, lenet);
    assert_true(s.optimizer.name == OPT_ADAM && s.optimizer.lr == 0.001);
    assert_int_equal(s.batch_size, 64);
    assert_int_equal(s.epochs, 5);
    assert_false(s.augment.crop || s.augment.flip);
    /* The same and a gamma and beta per channel of each batch norm. */
    check("conv-bn.json", &s, &sz);
    assert_int_equal(sz.n_params, lenet + 2 * (32 + 64));
    assert_true(sz.n_state >= 2 * (32 + 64)); /* running means and variances */
    assert_false(s.augment.crop || s.augment.flip);
    check("conv-bn-aug.json", &s, &sz);
    assert_int_equal(sz.n_params, lenet + 2 * (32 + 64));
    assert_true(s.augment.crop && s.augment.flip);
    check("resnet-small.json", &s, &sz);
    assert_true(s.augment.crop && s.augment.flip);
    assert_true(s.label_smoothing == 0.1);
    /* stem conv 1->32, conv 32->64, a residual block of two 64->64 convs
     * (3x3, no conv bias), four batch norms, dense 3136->128->10. */
    const size_t resnet = 9 * 32 + 32 * 9 * 64 + 2 * (64 * 9 * 64) + 2 * (32 + 3 * 64) +
                          (3136 * 128 + 128) + (128 * 10 + 10);
    assert_int_equal(sz.n_params, resnet);
    assert_int_equal(sz.outputs, 10);
    /* nn.LSTM(28, 128): 4 gates of (28 + 128) weights and two biases; dense 128->10. */
    check("lstm-fmnist.json", &s, &sz);
    assert_int_equal(sz.n_params, 4 * 128 * (28 + 128 + 2) + 128 * 10 + 10);
    assert_int_equal(sz.steps, 1);
    /* embedding 256x128, positions 128x128, 4 blocks of 12 E^2 + 13 E, final
     * norm, head 128->256 at each of 128 steps. */
    const size_t E = 128, block = 12 * E * E + 13 * E;
    check("char-transformer.json", &s, &sz);
    assert_int_equal(sz.n_params, 256 * E + 128 * E + 4 * block + 2 * E + 256 * E + 256);
    assert_int_equal(sz.steps, 128);
    assert_int_equal(sz.outputs, 256);
    check("char-lstm.json", &s, &sz);
    assert_int_equal(sz.steps, 128);
    /* patches: conv 1->64 4x4 stride 4 (49 of them), their positions, 4
     * blocks of width 64, final norm, mean over the patches, dense 64->10. */
    const size_t D = 64, vblock = 12 * D * D + 13 * D;
    check("vit-small.json", &s, &sz);
    assert_int_equal(sz.n_params, (16 * D + D) + 49 * D + 4 * vblock + 2 * D + D * 10 + 10);
    assert_int_equal(sz.steps, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_example_validates),
        cmocka_unit_test(test_recipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
