/* The network: finite-difference gradient checks for every activation,
 * output kind, loss and penalty, plus forward values worked out by hand and
 * the RNG behind initialisation.
 *
 * Gradient check: central differences of the double loss that net_loss and
 * net_penalty return, on float parameters, step h = 1e-3 (the step actually
 * taken in float is used as denominator). The float forward pass carries
 * about 1e-7 relative noise, so an entry passes when
 * |numeric - analytic| <= 2e-4 + 1e-2 * max(|numeric|, |analytic|). */
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

#include "net.h"
#include "rng.h"
#include "spec_model.h"

#define FD_H 1e-3f
#define FD_ABS 2e-4
#define FD_REL 1e-2

struct case_cfg {
    int n_layers;
    int layers[8];
    enum activation act;
    float slope;
    enum output_kind out;
    enum loss_kind loss;
    int B;
    double l1, l2;
};

static void make_spec(struct mlq_spec *spec, const struct case_cfg *c)
{
    spec_defaults(spec);
    spec->n_layers = c->n_layers;
    memcpy(spec->layers, c->layers, sizeof c->layers);
    spec->activation = c->act;
    spec->leaky_slope = c->slope;
    spec->output = c->out;
    spec->loss = c->loss;
}

static double total_loss(struct net *net, const float *x, const int32_t *yc, const float *y, int B,
                         double l1, double l2)
{
    net_forward(net, x, B);
    double loss = net_loss(net, yc, y, B);
    /* net_penalty also adds to grads, which the check does not read here. */
    return loss + net_penalty(net, l1, l2);
}

static void check_gradients(const struct case_cfg *c)
{
    struct mlq_spec spec;
    make_spec(&spec, c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net_reserve(&net, c->B), 0);
    struct rng r;
    rng_seed(&r, 1234);
    net_init(&net, &r);
    /* Biases of nn.Linear's size keep ReLU units mostly alive; scale the
     * weights up a little so the loss is not flat. */
    for (size_t i = 0; i < net.n_params; i++)
        net.params[i] *= 1.5f;

    int I0 = c->layers[0], K = c->layers[c->n_layers];
    float *x = malloc(sizeof(float) * (size_t)c->B * I0);
    float *y = malloc(sizeof(float) * (size_t)c->B * K);
    int32_t *yc = malloc(sizeof(int32_t) * (size_t)c->B);
    double *ana = malloc(sizeof(double) * net.n_params);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(yc);
    assert_non_null(ana);
    for (int i = 0; i < c->B * I0; i++)
        x[i] = 2.0f * rng_uniform(&r) - 1.0f;
    for (int i = 0; i < c->B * K; i++)
        y[i] = c->out == OUT_SIGMOID ? rng_uniform(&r) : 2.0f * rng_uniform(&r) - 1.0f;
    for (int i = 0; i < c->B; i++)
        yc[i] = (int32_t)rng_below(&r, (uint64_t)K);
    const int32_t *ycp = c->loss == LOSS_CROSS_ENTROPY ? yc : NULL;
    const float *yp = c->loss == LOSS_MSE ? y : NULL;

    net_zero_grad(&net);
    net_forward(&net, x, c->B);
    net_backward(&net, x, ycp, yp, c->B);
    net_penalty(&net, c->l1, c->l2);
    for (size_t i = 0; i < net.n_params; i++)
        ana[i] = net.grads[i];

    int checked = 0, nonzero = 0;
    for (size_t i = 0; i < net.n_params; i++) {
        float p = net.params[i];
        /* |w| has a kink at 0; keep L1's finite differences off it. */
        if (c->l1 != 0.0 && fabsf(p) < 2 * FD_H) continue;
        float hp = p + FD_H, hm = p - FD_H;
        net.params[i] = hp;
        double lp = total_loss(&net, x, ycp, yp, c->B, c->l1, c->l2);
        net.params[i] = hm;
        double lm = total_loss(&net, x, ycp, yp, c->B, c->l1, c->l2);
        net.params[i] = p;
        double num = (lp - lm) / ((double)hp - (double)hm);
        double tol = FD_ABS + FD_REL * fmax(fabs(num), fabs(ana[i]));
        if (fabs(num - ana[i]) > tol)
            fail_msg("param %zu: numeric %.7g analytic %.7g (layers %d, act %s, out %s, loss %s)",
                     i, num, ana[i], c->n_layers, spec_activation_name(c->act),
                     spec_output_name(c->out), spec_loss_name(c->loss));
        checked++;
        nonzero += fabs(ana[i]) > 1e-3;
    }
    /* A check over all-zero gradients would prove nothing. */
    assert_true(checked > (int)net.n_params / 2);
    assert_true(nonzero > checked / 4);

    free(x);
    free(y);
    free(yc);
    free(ana);
    net_destroy(&net);
}

#define NET3                                                                                       \
    3,                                                                                             \
    {                                                                                              \
        6, 8, 7, 4                                                                                 \
    }

static void test_grad_relu(void **state)
{
    struct case_cfg c = {NET3, ACT_RELU, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_sigmoid(void **state)
{
    struct case_cfg c = {NET3, ACT_SIGMOID, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_tanh(void **state)
{
    struct case_cfg c = {NET3, ACT_TANH, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_leaky_relu(void **state)
{
    struct case_cfg c = {NET3, ACT_LEAKY_RELU, 0.1f, OUT_LOGITS, LOSS_CROSS_ENTROPY, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_softmax_output(void **state)
{
    struct case_cfg c = {NET3, ACT_TANH, 0, OUT_SOFTMAX, LOSS_CROSS_ENTROPY, 4, 0, 0};
    check_gradients(&c);
}

static void test_grad_mse_linear(void **state)
{
    struct case_cfg c = {NET3, ACT_TANH, 0, OUT_LINEAR, LOSS_MSE, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_mse_logits(void **state)
{
    struct case_cfg c = {NET3, ACT_RELU, 0, OUT_LOGITS, LOSS_MSE, 3, 0, 0};
    check_gradients(&c);
}

static void test_grad_mse_sigmoid(void **state)
{
    struct case_cfg c = {NET3, ACT_SIGMOID, 0, OUT_SIGMOID, LOSS_MSE, 5, 0, 0};
    check_gradients(&c);
}

static void test_grad_batch_one(void **state)
{
    /* One row takes the gemv/ger path instead of gemm. */
    struct case_cfg ce = {NET3, ACT_TANH, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 1, 0, 0};
    check_gradients(&ce);
    struct case_cfg mse = {NET3, ACT_SIGMOID, 0, OUT_SIGMOID, LOSS_MSE, 1, 0, 0};
    check_gradients(&mse);
}

static void test_grad_l1(void **state)
{
    struct case_cfg c = {NET3, ACT_TANH, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 4, 0.05, 0};
    check_gradients(&c);
}

static void test_grad_l2(void **state)
{
    struct case_cfg c = {NET3, ACT_SIGMOID, 0, OUT_LINEAR, LOSS_MSE, 4, 0, 0.3};
    check_gradients(&c);
}

static void test_grad_l1_l2(void **state)
{
    struct case_cfg c = {NET3, ACT_LEAKY_RELU, 0.2f, OUT_LOGITS, LOSS_CROSS_ENTROPY, 4, 0.02, 0.1};
    check_gradients(&c);
}

static void test_grad_single_layer(void **state)
{
    struct case_cfg ce = {1, {9, 5}, ACT_RELU, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 6, 0, 0};
    check_gradients(&ce);
    struct case_cfg mse = {1, {9, 2}, ACT_RELU, 0, OUT_SIGMOID, LOSS_MSE, 6, 0, 0};
    check_gradients(&mse);
}

static void test_grad_deep(void **state)
{
    struct case_cfg c = {5, {7, 9, 6, 8, 5, 3}, ACT_TANH, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 4, 0,
                         0};
    check_gradients(&c);
}

/* Forward, loss and gradients on a 2-2 net small enough to work by hand. */
static void test_forward_by_hand(void **state)
{
    struct mlq_spec spec;
    struct case_cfg c = {1, {2, 2}, ACT_RELU, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 1, 0, 0};
    make_spec(&spec, &c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net.n_params, 6);
    assert_int_equal(net_reserve(&net, 2), 0);
    /* w (2, 2) row-major then b (2), as nn.Linear. */
    const float p[6] = {1, 2, 3, 4, 0.5f, -0.5f};
    memcpy(net.params, p, sizeof p);
    const float x[4] = {1, 0, 0, 1};
    const int32_t y[2] = {0, 1};
    net_forward(&net, x, 2);
    /* z row 0 = (1.5, 2.5), row 1 = (2.5, 3.5): softmax of a gap of 1. */
    double p1 = 1.0 / (1.0 + exp(-1.0));
    assert_float_equal(net.probs[0], 1 - p1, 1e-6);
    assert_float_equal(net.probs[1], p1, 1e-6);
    assert_float_equal(net.probs[2], 1 - p1, 1e-6);
    assert_float_equal(net.probs[3], p1, 1e-6);
    double expect = (-log(1 - p1) - log(p1)) / 2;
    assert_float_equal(net_loss(&net, y, NULL, 2), expect, 1e-6);
    assert_int_equal(net_correct(&net, y, 2), 1);

    net_zero_grad(&net);
    net_backward(&net, x, y, NULL, 2);
    /* dz = (p - onehot)/2; dw = dz^T x; db = column sums of dz. */
    double d00 = (1 - p1 - 1) / 2, d01 = p1 / 2, d10 = (1 - p1) / 2, d11 = (p1 - 1) / 2;
    assert_float_equal(net.grads[0], d00, 1e-6);
    assert_float_equal(net.grads[1], d10, 1e-6);
    assert_float_equal(net.grads[2], d01, 1e-6);
    assert_float_equal(net.grads[3], d11, 1e-6);
    assert_float_equal(net.grads[4], d00 + d10, 1e-6);
    assert_float_equal(net.grads[5], d01 + d11, 1e-6);
    /* backward accumulates */
    net_backward(&net, x, y, NULL, 2);
    assert_float_equal(net.grads[0], 2 * d00, 1e-6);

    /* Penalties: weights only. */
    net_zero_grad(&net);
    double pen = net_penalty(&net, 0.1, 0.2);
    assert_float_equal(pen, 0.1 * 10 + 0.1 * 30, 1e-9);
    assert_float_equal(net.grads[0], 0.1 + 0.2 * 1, 1e-6);
    assert_float_equal(net.grads[3], 0.1 + 0.2 * 4, 1e-6);
    assert_true(net.grads[4] == 0.0f && net.grads[5] == 0.0f);
    net_destroy(&net);
}

/* Huge logits must not overflow: softmax and loss shift by the max. */
static void test_softmax_stable(void **state)
{
    struct mlq_spec spec;
    struct case_cfg c = {1, {1, 3}, ACT_RELU, 0, OUT_SOFTMAX, LOSS_CROSS_ENTROPY, 1, 0, 0};
    make_spec(&spec, &c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net_reserve(&net, 1), 0);
    const float p[6] = {0, 0, 0, 1000, 999, -1000};
    memcpy(net.params, p, sizeof p);
    const float x[1] = {1};
    const int32_t y[1] = {1};
    net_forward(&net, x, 1);
    assert_true(isfinite(net.probs[0]) && isfinite(net.probs[1]));
    assert_float_equal(net.probs[0] + net.probs[1] + net.probs[2], 1.0, 1e-6);
    assert_float_equal(net_loss(&net, y, NULL, 1), 1.0 + log1p(exp(-1.0)), 1e-6);
    net_destroy(&net);
}

/* MSE is the mean over all B*K elements, through the sigmoid output. */
static void test_mse_value(void **state)
{
    struct mlq_spec spec;
    struct case_cfg c = {1, {1, 2}, ACT_RELU, 0, OUT_SIGMOID, LOSS_MSE, 1, 0, 0};
    make_spec(&spec, &c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net_reserve(&net, 2), 0);
    const float p[4] = {0, 0, 0, 0}; /* every output sigmoid(0) = 0.5 */
    memcpy(net.params, p, sizeof p);
    const float x[2] = {3, -2};
    const float y[4] = {1, 0, 0.5f, 0.25f};
    net_forward(&net, x, 2);
    assert_float_equal(net_loss(&net, NULL, y, 2), (0.25 + 0.25 + 0 + 0.0625) / 4, 1e-7);
    net_destroy(&net);
}

/* net_reserve can grow, and a larger buffer gives the same results. */
static void test_reserve_grow(void **state)
{
    struct mlq_spec spec;
    struct case_cfg c = {2, {4, 5, 3}, ACT_RELU, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 1, 0, 0};
    make_spec(&spec, &c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    assert_int_equal(net_reserve(&net, 2), 0);
    struct rng r;
    rng_seed(&r, 7);
    net_init(&net, &r);
    const float x[8] = {0.1f, -0.2f, 0.3f, 0.4f, 1, 0, -1, 0.5f};
    net_forward(&net, x, 2);
    float before[6];
    memcpy(before, net.probs, sizeof before);
    assert_int_equal(net_reserve(&net, 100), 0);
    assert_int_equal(net.max_batch, 100);
    net_forward(&net, x, 2);
    assert_memory_equal(before, net.probs, sizeof before);
    assert_int_equal(net_reserve(&net, 0), -EINVAL);
    net_destroy(&net);
    net_destroy(&net); /* idempotent */
}

/* nn.Linear's init: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases. */
static void test_init_distribution(void **state)
{
    struct mlq_spec spec;
    struct case_cfg c = {2, {100, 400, 25}, ACT_RELU, 0, OUT_LOGITS, LOSS_CROSS_ENTROPY, 1, 0, 0};
    make_spec(&spec, &c);
    struct net net;
    assert_int_equal(spec_model_net_create(&net, &spec), 0);
    struct rng r;
    rng_seed(&r, 42);
    net_init(&net, &r);
    for (int l = 0; l < 2; l++) {
        struct net_layer *ly = &net.layer[l];
        double bound = 1.0 / sqrt(ly->in), sum = 0, sq = 0, mx = 0;
        size_t n = (size_t)ly->in * ly->out;
        for (size_t i = 0; i < n; i++) {
            assert_true(fabs(ly->w[i]) <= bound);
            sum += ly->w[i];
            sq += (double)ly->w[i] * ly->w[i];
            mx = fmax(mx, fabs(ly->w[i]));
        }
        for (int i = 0; i < ly->out; i++)
            assert_true(fabs(ly->b[i]) <= bound);
        /* U(-a, a): mean 0, variance a^2/3, and it reaches near a. */
        assert_true(fabs(sum / n) < 0.02 * bound);
        assert_float_equal(sq / n, bound * bound / 3, 0.03 * bound * bound / 3);
        assert_true(mx > 0.99 * bound);
    }
    /* Same seed, same weights; another seed, other weights. */
    struct net again;
    assert_int_equal(spec_model_net_create(&again, &spec), 0);
    rng_seed(&r, 42);
    net_init(&again, &r);
    assert_memory_equal(net.params, again.params, net.n_params * sizeof(float));
    rng_seed(&r, 43);
    net_init(&again, &r);
    assert_true(memcmp(net.params, again.params, net.n_params * sizeof(float)) != 0);
    net_destroy(&again);
    net_destroy(&net);
}

static void test_rng(void **state)
{
    struct rng a, b;
    rng_seed(&a, 0);
    rng_seed(&b, 0);
    assert_true(a.s[0] | a.s[1] | a.s[2] | a.s[3]); /* seed 0 still mixes */
    for (int i = 0; i < 100; i++)
        assert_true(rng_next(&a) == rng_next(&b));
    /* A saved state continues the same stream. */
    struct rng saved = a;
    uint64_t next = rng_next(&a);
    assert_true(rng_next(&saved) == next);

    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) {
        float u = rng_uniform(&a);
        assert_true(u >= 0.0f && u < 1.0f);
        uint64_t k = rng_below(&a, 7);
        assert_true(k < 7);
        hist[k]++;
    }
    for (int k = 0; k < 7; k++)
        assert_in_range(hist[k], 9500, 10500);
    assert_true(rng_below(&a, 1) == 0);

    uint32_t idx[50], seen[50] = {0};
    for (uint32_t i = 0; i < 50; i++)
        idx[i] = i;
    rng_shuffle(&a, idx, 50);
    int moved = 0;
    for (uint32_t i = 0; i < 50; i++) {
        seen[idx[i]]++;
        moved += idx[i] != i;
    }
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > 25);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_relu),
        cmocka_unit_test(test_grad_sigmoid),
        cmocka_unit_test(test_grad_tanh),
        cmocka_unit_test(test_grad_leaky_relu),
        cmocka_unit_test(test_grad_softmax_output),
        cmocka_unit_test(test_grad_mse_linear),
        cmocka_unit_test(test_grad_mse_logits),
        cmocka_unit_test(test_grad_mse_sigmoid),
        cmocka_unit_test(test_grad_batch_one),
        cmocka_unit_test(test_grad_l1),
        cmocka_unit_test(test_grad_l2),
        cmocka_unit_test(test_grad_l1_l2),
        cmocka_unit_test(test_grad_single_layer),
        cmocka_unit_test(test_grad_deep),
        cmocka_unit_test(test_forward_by_hand),
        cmocka_unit_test(test_softmax_stable),
        cmocka_unit_test(test_mse_value),
        cmocka_unit_test(test_reserve_grow),
        cmocka_unit_test(test_init_distribution),
        cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
