/* Parity with PyTorch 1.13 of whole convolutional models through the engine's
 * model API: issue 10's LeNet and conv+BN recipes, scaled down
 * (tests/parity/cnn_fixtures.json, written by gen_cnn_fixtures.py; this test
 * needs no torch), each trained from torch's initial weights for 5 steps of
 * SGD and of Adam on batches of 8 (the conv+BN recipe under Adam without
 * conv biases, see the generator). Compared: the loss before every step, the
 * parameters and batch norm's running statistics after the last step, and
 * the evaluation-mode logits of all rows after it (batch norm from its
 * running statistics).
 *
 * Tolerance: |ours - torch| <= 1e-5 + 1e-4 |torch| (float32 both sides,
 * different summation orders, five steps of compounding). */
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "model.h"
#include "optim.h"

#define TOL_ABS 1e-5
#define TOL_REL 1e-4
#define FIXTURES MLQ_SOURCE_DIR "/tests/parity/cnn_fixtures.json"

static json_t *fixtures;

static float *floats_of(json_t *arr, size_t n, const char *what)
{
    if (!json_is_array(arr) || json_array_size(arr) != n)
        fail_msg("fixture: %s has %zu values, want %zu", what, json_array_size(arr), n);
    float *out = malloc((n ? n : 1) * sizeof *out);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)json_number_value(json_array_get(arr, i));
    return out;
}

static double compare(const char *name, const char *what, const float *ours, json_t *ref_arr,
                      size_t n)
{
    float *ref = floats_of(ref_arr, n, what);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)ours[i] - ref[i]);
        if (!(err <= TOL_ABS + TOL_REL * fabs(ref[i])))
            fail_msg("%s: %s[%zu]: ours %.9g, torch %.9g", name, what, i, ours[i], ref[i]);
        worst = fmax(worst, err);
    }
    free(ref);
    return worst;
}

static void add_layer(struct model_desc *d, const char *type, int out, int kernel, int padding,
                      bool bias)
{
    struct model_layer *l = &d->layer[d->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->type, sizeof l->type, "%s", type);
    op_attrs_defaults(&l->a);
    l->a.out = out;
    l->a.kernel = kernel;
    l->a.padding = padding;
    l->a.bias = bias;
}

/* The generator's nn.Sequential, layer for layer. */
static void recipe(struct model_desc *d, int bn, bool conv_bias)
{
    memset(d, 0, sizeof *d);
    d->input = (struct shape){3, {1, 12, 12}};
    d->loss = NET_LOSS_CROSS_ENTROPY;
    d->output = NET_OUT_LOGITS;
    add_layer(d, "conv2d", 4, 3, 1, conv_bias);
    if (bn) add_layer(d, "batchnorm", 0, 0, 0, true);
    add_layer(d, "relu", 0, 0, 0, true);
    add_layer(d, "maxpool", 0, 2, 0, true);
    add_layer(d, "conv2d", 8, 3, 1, conv_bias);
    if (bn) add_layer(d, "batchnorm", 0, 0, 0, true);
    add_layer(d, "relu", 0, 0, 0, true);
    add_layer(d, "maxpool", 0, 2, 0, true);
    add_layer(d, "flatten", 0, 0, 0, true);
    add_layer(d, "dense", 16, 0, 0, true);
    add_layer(d, "relu", 0, 0, 0, true);
    add_layer(d, "dense", 10, 0, 0, true);
}

static void run_case(void **state)
{
    json_t *c = *state;
    const char *name = json_string_value(json_object_get(c, "name"));
    int bn = strcmp(json_string_value(json_object_get(c, "model")), "bn") == 0;
    int adam = strcmp(json_string_value(json_object_get(c, "optimizer")), "adam") == 0;
    int steps = (int)json_integer_value(json_object_get(fixtures, "steps"));
    int batch = (int)json_integer_value(json_object_get(fixtures, "batch"));
    int rows = (int)json_integer_value(json_object_get(fixtures, "rows"));
    assert_true(steps > 0 && batch > 0 && rows >= batch);

    static struct model_desc d;
    recipe(&d, bn, json_is_true(json_object_get(c, "conv_bias")));
    struct model m;
    char err[256];
    if (model_create(&m, &d, err, sizeof err)) fail_msg("%s: %s", name, err);
    assert_null(m.net); /* the layered path, not the dense stack */
    assert_int_equal(model_reserve(&m, rows), 0);
    float *p0 = floats_of(json_object_get(c, "init"), m.n_params, "init");
    memcpy(m.params, p0, m.n_params * sizeof *p0);
    free(p0);
    /* PyTorch's initial running statistics, as model_init would set them. */
    for (int i = 0; i < m.tensors.n; i++) {
        const struct tensor *t = &m.tensors.t[i];
        if (t->kind != OP_STATE) continue;
        float v = strstr(t->name, "running_var") ? 1.0f : 0.0f;
        for (size_t k = 0; k < t->size; k++)
            m.state[t->offset + k] = v;
    }

    struct optim_config cfg = {.rule = adam ? OPTIM_ADAM : OPTIM_SGD,
                               .lr = json_number_value(json_object_get(c, "lr")),
                               .beta1 = 0.9,
                               .beta2 = 0.999,
                               .eps = 1e-8};
    struct optim opt;
    assert_int_equal(optim_create(&opt, &cfg, m.n_params), 0);

    size_t in = 12 * 12;
    float *x = floats_of(json_object_get(fixtures, "x"), (size_t)rows * in, "x");
    json_t *ya = json_object_get(fixtures, "y");
    int32_t *y = malloc((size_t)rows * sizeof *y);
    assert_non_null(y);
    for (int i = 0; i < rows; i++)
        y[i] = (int32_t)json_integer_value(json_array_get(ya, i));

    json_t *losses = json_object_get(c, "losses");
    double worst_loss = 0.0;
    struct rng r;
    rng_seed(&r, 1);
    for (int s = 0; s < steps; s++) {
        int lo = (s * batch) % rows;
        model_zero_grad(&m);
        model_forward(&m, x + (size_t)lo * in, batch, true, &r);
        double loss = model_loss(&m, y + lo, NULL, batch);
        double ref = json_number_value(json_array_get(losses, s));
        if (!(fabs(loss - ref) <= TOL_ABS + TOL_REL * fabs(ref)))
            fail_msg("%s: loss before step %d: %.8g, torch %.8g", name, s, loss, ref);
        worst_loss = fmax(worst_loss, fabs(loss - ref));
        model_backward(&m, x + (size_t)lo * in, y + lo, NULL, batch);
        optim_step(&opt, m.params, m.grads, cfg.lr);
    }
    double wp = compare(name, "param", m.params, json_object_get(c, "final"), m.n_params);
    /* The running statistics in table order (the fixture's order), read by
     * name so that more state (num_batches_tracked) does not shift them. */
    float *stats = calloc(m.n_state ? m.n_state : 1, sizeof *stats);
    assert_non_null(stats);
    size_t n_stats = 0;
    for (int i = 0; i < m.tensors.n; i++) {
        const struct tensor *t = &m.tensors.t[i];
        if (t->kind != OP_STATE) continue;
        if (strstr(t->name, "num_batches_tracked")) {
            assert_true(m.state[t->offset] == (float)steps);
            continue;
        }
        memcpy(stats + n_stats, m.state + t->offset, t->size * sizeof *stats);
        n_stats += t->size;
    }
    double ws = compare(name, "running stat", stats, json_object_get(c, "state"), n_stats);
    free(stats);
    model_forward(&m, x, rows, false, NULL);
    double wl = compare(name, "eval logit", model_logits(&m), json_object_get(c, "eval_logits"),
                        (size_t)rows * 10);
    printf("  %-10s max |dloss| %.1e, |dparam| %.1e, |dstat| %.1e, |dlogit| %.1e\n", name,
           worst_loss, wp, ws, wl);
    free(x);
    free(y);
    optim_destroy(&opt);
    model_destroy(&m);
}

int main(void)
{
    json_error_t jerr;
    fixtures = json_load_file(FIXTURES, 0, &jerr);
    if (!fixtures) {
        fprintf(stderr, "%s:%d: %s\n", FIXTURES, jerr.line, jerr.text);
        return 1;
    }
    json_t *cases = json_object_get(fixtures, "cases");
    size_t n = json_array_size(cases);
    if (n != 4) {
        fprintf(stderr, "%s: %zu cases, want 4\n", FIXTURES, n);
        json_decref(fixtures);
        return 1;
    }
    struct CMUnitTest tests[4];
    memset(tests, 0, sizeof tests);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i);
        tests[i].name = json_string_value(json_object_get(c, "name"));
        tests[i].test_func = run_case;
        tests[i].initial_state = c;
    }
    int rc = _cmocka_run_group_tests("cnn_parity", tests, n, NULL, NULL);
    json_decref(fixtures);
    return rc;
}
