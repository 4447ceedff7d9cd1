/* Optimizers: each update rule against a double-precision transcription of
 * torch.optim 1.13's (single-tensor) code, over several steps with changing
 * gradients, plus the properties that tell the rules apart.
 * Tolerance: |float - double| <= 1e-6 + 1e-5 * |double| per parameter. */
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

#include "optim.h"
#include "rng.h"
#include "spec_model.h"

#define N 1003 /* odd, so vectorised loops run their scalar tail too */
#define STEPS 6

static struct spec_optimizer cfg_of(enum optim_kind name, double lr)
{
    /* The spec's defaults for this optimizer, as a parsed job would have. */
    struct mlq_spec spec;
    spec_defaults(&spec);
    char doc[128], err[256];
    snprintf(doc, sizeof doc,
             "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"optimizer\":\"%s\"}",
             spec_optim_name(name));
    if (spec_parse(doc, &spec, err, sizeof err) != 0) fail_msg("spec: %s", err);
    spec.optimizer.lr = lr;
    return spec.optimizer;
}

/* torch.optim 1.13 in double: one step over n parameters. */
struct ref {
    double p[N], m[N], v[N];
    int64_t t;
};

static void ref_step(struct ref *r, const struct spec_optimizer *c, const float *g32, double lr)
{
    r->t++;
    for (int i = 0; i < N; i++) {
        double g = g32[i], p = r->p[i];
        switch (c->name) {
        case OPT_GD:
        case OPT_SGD:
            g += c->weight_decay * p;
            if (c->momentum != 0) {
                r->m[i] = r->t == 1 ? g : c->momentum * r->m[i] + (1 - c->dampening) * g;
                g = c->nesterov ? g + c->momentum * r->m[i] : r->m[i];
            }
            p -= lr * g;
            break;
        case OPT_ADAM:
        case OPT_ADAMW:
            if (c->name == OPT_ADAMW)
                p *= 1 - lr * c->weight_decay;
            else
                g += c->weight_decay * p;
            r->m[i] = c->beta1 * r->m[i] + (1 - c->beta1) * g;
            r->v[i] = c->beta2 * r->v[i] + (1 - c->beta2) * g * g;
            p -= lr / (1 - pow(c->beta1, r->t)) * r->m[i] /
                 (sqrt(r->v[i]) / sqrt(1 - pow(c->beta2, r->t)) + c->eps);
            break;
        case OPT_RMSPROP:
            g += c->weight_decay * p;
            r->m[i] = c->alpha * r->m[i] + (1 - c->alpha) * g * g;
            if (c->momentum > 0) {
                r->v[i] = c->momentum * r->v[i] + g / (sqrt(r->m[i]) + c->eps);
                p -= lr * r->v[i];
            } else {
                p -= lr * g / (sqrt(r->m[i]) + c->eps);
            }
            break;
        case OPT_ADAGRAD:
            g += c->weight_decay * p;
            if (r->t == 1) r->v[i] = c->initial_accumulator;
            r->v[i] += g * g;
            p -= lr / (1 + (r->t - 1) * c->lr_decay) * g / (sqrt(r->v[i]) + c->eps);
            break;
        }
        r->p[i] = p;
    }
}

static void check_against_reference(const struct spec_optimizer *c)
{
    struct rng rg;
    rng_seed(&rg, 99);
    float *p = malloc(N * sizeof *p), *g = malloc(N * sizeof *g);
    struct ref *r = calloc(1, sizeof *r);
    assert_non_null(p);
    assert_non_null(g);
    assert_non_null(r);
    for (int i = 0; i < N; i++)
        r->p[i] = p[i] = 2 * rng_uniform(&rg) - 1;
    struct optim opt;
    assert_int_equal(spec_model_optim_create(&opt, c, N), 0);
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < N; i++)
            g[i] = (2 * rng_uniform(&rg) - 1) * (i % 7 == 0 ? 1e-3f : 1.0f);
        optim_step(&opt, p, g, c->lr);
        ref_step(r, c, g, c->lr);
        for (int i = 0; i < N; i++)
            if (fabs(p[i] - r->p[i]) > 1e-6 + 1e-5 * fabs(r->p[i]))
                fail_msg("%s step %d param %d: %.9g, reference %.9g", spec_optim_name(c->name),
                         s + 1, i, p[i], r->p[i]);
    }
    assert_int_equal(opt.step, STEPS);
    optim_destroy(&opt);
    optim_destroy(&opt); /* idempotent */
    free(p);
    free(g);
    free(r);
}

static void test_sgd_rules(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_SGD, 0.1);
    check_against_reference(&c);
    c.weight_decay = 0.01;
    check_against_reference(&c);
    c.momentum = 0.9;
    check_against_reference(&c);
    c.dampening = 0.5;
    check_against_reference(&c);
    c.dampening = 0;
    c.nesterov = true;
    check_against_reference(&c);
    struct spec_optimizer gd = cfg_of(OPT_GD, 0.5);
    check_against_reference(&gd);
}

static void test_adam_rules(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_ADAM, 0.001);
    check_against_reference(&c);
    c.weight_decay = 0.1;
    c.beta1 = 0.8;
    c.beta2 = 0.95;
    check_against_reference(&c);
    struct spec_optimizer w = cfg_of(OPT_ADAMW, 0.01);
    assert_float_equal(w.weight_decay, 0.01, 0); /* torch's AdamW default */
    check_against_reference(&w);
}

static void test_rmsprop_adagrad_rules(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_RMSPROP, 0.01);
    check_against_reference(&c);
    c.momentum = 0.7;
    c.weight_decay = 0.05;
    c.alpha = 0.9;
    check_against_reference(&c);
    struct spec_optimizer a = cfg_of(OPT_ADAGRAD, 0.1);
    check_against_reference(&a);
    a.lr_decay = 0.1;
    a.initial_accumulator = 0.5;
    a.weight_decay = 0.01;
    check_against_reference(&a);
}

/* Bias correction makes Adam's first step lr * g/|g| in size (Kingma & Ba);
 * the uncorrected formula would move by lr * (1-b1)/sqrt(1-b2) ~ 3.2 lr. */
static void test_adam_first_step(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_ADAM, 0.001);
    struct optim opt;
    assert_int_equal(spec_model_optim_create(&opt, &c, 3), 0);
    float p[3] = {1, 1, 1};
    const float g[3] = {5, -0.01f, 100};
    optim_step(&opt, p, g, c.lr);
    assert_float_equal(p[0], 1 - 0.001, 1e-6);
    assert_float_equal(p[1], 1 + 0.001, 1e-6);
    assert_float_equal(p[2], 1 - 0.001, 1e-6);
    optim_destroy(&opt);
}

/* AdamW decays the weights themselves: with zero gradients Adam's update is
 * zero and only p *= 1 - lr*wd remains; Adam's L2 would move nothing here
 * but a gradient. */
static void test_adamw_decoupled(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_ADAMW, 0.01);
    c.weight_decay = 0.5;
    struct optim opt;
    assert_int_equal(spec_model_optim_create(&opt, &c, 2), 0);
    float p[2] = {2, -4};
    const float g[2] = {0, 0};
    optim_step(&opt, p, g, c.lr);
    assert_float_equal(p[0], 2 * (1 - 0.005), 1e-7);
    assert_float_equal(p[1], -4 * (1 - 0.005), 1e-7);
    optim_destroy(&opt);

    /* Adam with the same weight_decay puts it in the gradient: first step
     * moves by lr in the direction of -sign(wd*p). */
    c.name = OPT_ADAM;
    assert_int_equal(spec_model_optim_create(&opt, &c, 2), 0);
    p[0] = 2;
    p[1] = -4;
    optim_step(&opt, p, g, c.lr);
    assert_float_equal(p[0], 2 - 0.01, 1e-6);
    assert_float_equal(p[1], -4 + 0.01, 1e-6);
    optim_destroy(&opt);
}

/* torch's momentum buffer starts as the first gradient, not dampened. */
static void test_sgd_first_step_undampened(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_SGD, 1.0);
    c.momentum = 0.9;
    c.dampening = 0.5;
    struct optim opt;
    assert_int_equal(spec_model_optim_create(&opt, &c, 1), 0);
    assert_false(opt.has_momentum_buffer);
    float p[1] = {0};
    const float g[1] = {1};
    optim_step(&opt, p, g, 1.0);
    assert_true(opt.has_momentum_buffer);
    assert_float_equal(p[0], -1.0, 0);
    optim_step(&opt, p, g, 1.0); /* buf = 0.9*1 + 0.5*1 */
    assert_float_equal(p[0], -1.0 - 1.4, 1e-6);
    optim_destroy(&opt);
}

static void test_state_sizes(void **state)
{
    struct optim opt;
    struct spec_optimizer c = cfg_of(OPT_SGD, 0.1);
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 0);
    assert_null(opt.m);
    optim_destroy(&opt);
    c.momentum = 0.9;
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 10);
    optim_destroy(&opt);
    c = cfg_of(OPT_ADAM, 0.1);
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 20);
    optim_destroy(&opt);
    c = cfg_of(OPT_RMSPROP, 0.1);
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 10);
    optim_destroy(&opt);
    c.momentum = 0.5;
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 20);
    optim_destroy(&opt);
    c = cfg_of(OPT_ADAGRAD, 0.1);
    c.initial_accumulator = 0.25;
    assert_int_equal(spec_model_optim_create(&opt, &c, 10), 0);
    assert_int_equal(optim_state_floats(&opt), 10);
    assert_float_equal(opt.v[9], 0.25, 0);
    optim_destroy(&opt);
}

/* Same inputs, same bits. */
static void test_deterministic(void **state)
{
    struct spec_optimizer c = cfg_of(OPT_ADAMW, 0.01);
    float p1[N], p2[N], g[N];
    struct rng rg;
    rng_seed(&rg, 5);
    for (int i = 0; i < N; i++) {
        p1[i] = p2[i] = rng_uniform(&rg);
        g[i] = rng_uniform(&rg) - 0.5f;
    }
    struct optim a, b;
    assert_int_equal(spec_model_optim_create(&a, &c, N), 0);
    assert_int_equal(spec_model_optim_create(&b, &c, N), 0);
    for (int s = 0; s < 3; s++) {
        optim_step(&a, p1, g, c.lr);
        optim_step(&b, p2, g, c.lr);
    }
    assert_memory_equal(p1, p2, sizeof p1);
    assert_memory_equal(a.m, b.m, N * sizeof(float));
    assert_memory_equal(a.v, b.v, N * sizeof(float));
    optim_destroy(&a);
    optim_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_rules),
        cmocka_unit_test(test_adam_rules),
        cmocka_unit_test(test_rmsprop_adagrad_rules),
        cmocka_unit_test(test_adam_first_step),
        cmocka_unit_test(test_adamw_decoupled),
        cmocka_unit_test(test_sgd_first_step_undampened),
        cmocka_unit_test(test_state_sizes),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
