/* Parity with PyTorch 1.13: replays the cases of tests/parity/fixtures.json
 * (written by tests/parity/gen_fixtures.py) through mlq's net and optimizers,
 * from torch's initial weights, and compares the loss before every step and
 * every parameter after the last one.
 *
 * Tolerance: |ours - torch| <= 1e-5 + 1e-4 * |torch|, both in float32 with
 * different summation orders (BLAS, torch's kernels). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "net.h"
#include "optim.h"
#include "spec_model.h"

#define TOL_ABS 1e-5
#define TOL_REL 1e-4
#define FIXTURES MLQ_SOURCE_DIR "/tests/parity/fixtures.json"

static json_t *fixtures;

/* Reads a JSON array of numbers into a new float array of exactly n. */
static float *floats_of(json_t *arr, size_t n)
{
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), n);
    float *out = malloc(n * sizeof *out);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)json_number_value(json_array_get(arr, i));
    return out;
}

static int close_enough(double ours, double ref)
{
    return fabs(ours - ref) <= TOL_ABS + TOL_REL * fabs(ref);
}

static void run_case(void **state)
{
    json_t *c = *state;
    const char *name = json_string_value(json_object_get(c, "name"));
    char err[256];
    struct mlq_spec spec;
    spec_defaults(&spec);
    if (spec_from_json(json_object_get(c, "spec"), &spec, err, sizeof err) != 0)
        fail_msg("%s: spec: %s", name, err);

    int rows = (int)json_integer_value(json_object_get(fixtures, "rows"));
    int batch = (int)json_integer_value(json_object_get(c, "batch"));
    int steps = (int)json_integer_value(json_object_get(c, "steps"));
    json_t *data = json_object_get(json_object_get(fixtures, "data"),
                                   json_string_value(json_object_get(c, "data")));
    int I0 = spec.layers[0], K = spec.layers[spec.n_layers];
    assert_true(rows > 0 && batch > 0 && rows % batch == 0 && steps > 0);

    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net_reserve(&net, batch), 0);
    struct optim opt;
    assert_int_equal(spec_model_optim_create(&opt, &spec.optimizer, net.n_params), 0);

    json_t *init = json_object_get(json_object_get(fixtures, "init"),
                                   json_string_value(json_object_get(c, "net")));
    float *p0 = floats_of(init, net.n_params);
    memcpy(net.params, p0, net.n_params * sizeof *p0);
    free(p0);

    float *x = floats_of(json_object_get(data, "x"), (size_t)rows * I0);
    float *y = NULL;
    int32_t *yc = NULL;
    if (spec.loss == LOSS_CROSS_ENTROPY) {
        json_t *ya = json_object_get(data, "y_class");
        assert_int_equal(json_array_size(ya), rows);
        yc = malloc((size_t)rows * sizeof *yc);
        assert_non_null(yc);
        for (int i = 0; i < rows; i++)
            yc[i] = (int32_t)json_integer_value(json_array_get(ya, i));
    } else {
        y = floats_of(json_object_get(data, "y"), (size_t)rows * K);
    }

    json_t *losses = json_object_get(c, "losses");
    json_t *data_losses = json_object_get(c, "data_losses");
    assert_int_equal(json_array_size(losses), steps);
    double worst_loss = 0;
    for (int s = 0; s < steps; s++) {
        int lo = (s * batch) % rows;
        const float *xb = x + (size_t)lo * I0;
        const int32_t *ycb = yc ? yc + lo : NULL;
        const float *yb = y ? y + (size_t)lo * K : NULL;
        net_zero_grad(&net);
        net_forward(&net, xb, batch);
        double loss = net_loss(&net, ycb, yb, batch);
        net_backward(&net, xb, ycb, yb, batch);
        double total = loss + net_penalty(&net, spec.l1, spec.l2);
        optim_step(&opt, net.params, net.grads, spec.optimizer.lr);

        double ref = json_number_value(json_array_get(losses, s));
        double ref_data = json_number_value(json_array_get(data_losses, s));
        if (!close_enough(loss, ref_data) || !close_enough(total, ref))
            fail_msg("%s: step %d: loss %.8g (data %.8g), torch %.8g (data %.8g)", name, s, total,
                     loss, ref, ref_data);
        worst_loss = fmax(worst_loss, fabs(total - ref));
    }

    float *final = floats_of(json_object_get(c, "final"), net.n_params);
    double worst = 0;
    for (size_t i = 0; i < net.n_params; i++) {
        if (!close_enough(net.params[i], final[i]))
            fail_msg("%s: param %zu after %d steps: %.9g, torch %.9g", name, i, steps,
                     net.params[i], final[i]);
        worst = fmax(worst, fabs((double)net.params[i] - final[i]));
    }
    /* Training must have moved the weights, or the comparison proves little. */
    float *start = floats_of(init, net.n_params);
    double moved = 0;
    for (size_t i = 0; i < net.n_params; i++)
        moved = fmax(moved, fabs((double) final[i] - start[i]));
    assert_true(moved > 1e-3);
    printf("  %-20s max |dloss| %.2e, max |dparam| %.2e (moved %.3f)\n", name, worst_loss, worst,
           moved);

    free(start);
    free(final);
    free(x);
    free(y);
    free(yc);
    optim_destroy(&opt);
    net_destroy(&net);
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
    if (n == 0) {
        fprintf(stderr, "%s: no cases\n", FIXTURES);
        json_decref(fixtures);
        return 1;
    }
    struct CMUnitTest *tests = calloc(n, sizeof *tests);
    if (!tests) return 1;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i);
        tests[i].name = json_string_value(json_object_get(c, "name"));
        tests[i].test_func = run_case;
        tests[i].initial_state = c;
    }
    int rc = _cmocka_run_group_tests("parity", tests, n, NULL, NULL);
    free(tests);
    json_decref(fixtures);
    return rc;
}
