/* Finite-difference gradient check of every registered op, by construction:
 * for each row of the op table (engine/ops/registry.c) and each of the row's
 * own test cases, backward's input and parameter gradients of
 * L = sum(out * R), R fixed and random, against central differences of L
 * computed in double. Registering an op without test cases fails here.
 * Then the fused heads, the model's graph (a residual add whose input feeds
 * two nodes) and its shape errors. */
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

#include "loss.h"
#include "model.h"
#include "op.h"
#include "rng.h"
#include "team.h"

#define H 1e-3f
#define TOL_ABS 2e-3
#define TOL_REL 1e-2
#define TEAM_THREADS 3 /* more threads than most cases have samples */

static float *alloc_floats(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void fill_uniform(float *x, size_t n, float lo, float hi, struct rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * rng_uniform(r);
}

struct harness {
    struct op_node node;
    int B;
    bool training;
    size_t n_in[OP_MAX_INPUTS], n_out, n_param, n_state, n_saved, n_scratch, n_partials;
    float *in[OP_MAX_INPUTS], *out, *param, *grad, *state, *state0, *saved, *scratch, *partials, *r;
    struct team *team; /* NULL: the caller alone */
    float *din[OP_MAX_INPUTS];
    struct rng rng0; /* the RNG every forward starts from: the same dropout mask */
};

static void harness_free(struct harness *h)
{
    for (int j = 0; j < OP_MAX_INPUTS; j++) {
        free(h->in[j]);
        free(h->din[j]);
    }
    free(h->out);
    free(h->param);
    free(h->grad);
    free(h->state);
    free(h->state0);
    free(h->saved);
    free(h->scratch);
    free(h->partials);
    free(h->r);
}

static void harness_setup(struct harness *h, const struct op_def *op, const struct op_test *t)
{
    memset(h, 0, sizeof *h);
    h->node.op = op;
    h->node.a = t->a;
    h->node.n_in = op->n_inputs;
    h->B = t->B;
    h->training = !t->eval;
    for (int j = 0; j < op->n_inputs; j++)
        h->node.in[j] = t->in[j];
    char err[256] = "";
    if (op->infer(&h->node.a, h->node.in, &h->node.out, err, sizeof err))
        fail_msg("%s, %s: infer failed: %s", op->type, t->name, err);
    struct op_tensor ts[OP_MAX_TENSORS];
    int nt = op->tensors ? op->tensors(&h->node, ts) : 0;
    for (int k = 0; k < nt; k++) {
        size_t n = 1;
        for (int d = 0; d < ts[k].ndim; d++)
            n *= (size_t)ts[k].shape[d];
        *(ts[k].kind == OP_PARAM ? &h->n_param : &h->n_state) += n;
    }
    h->n_out = (size_t)h->B * shape_size(&h->node.out);
    h->n_saved = op->saved ? op->saved(&h->node, h->B) : 0;
    h->n_scratch = op->scratch ? op->scratch(&h->node, h->B) : 0;
    h->n_partials = op->partials ? op->partials(&h->node, h->B) : 0;
    struct rng r;
    rng_seed(&r, 2024);
    for (int j = 0; j < op->n_inputs; j++) {
        h->n_in[j] = (size_t)h->B * shape_size(&h->node.in[j]);
        h->in[j] = alloc_floats(h->n_in[j]);
        h->din[j] = alloc_floats(h->n_in[j]);
        fill_uniform(h->in[j], h->n_in[j], -1.0f, 1.0f, &r);
        if (j == 0 && op->takes_ids) /* token ids: every id of the table, then any */
            for (size_t i = 0; i < h->n_in[j]; i++)
                h->in[j][i] =
                    (float)(i < (size_t)t->a.vocab ? i : rng_below(&r, (uint64_t)t->a.vocab));
    }
    h->out = alloc_floats(h->n_out);
    h->r = alloc_floats(h->n_out);
    fill_uniform(h->r, h->n_out, -1.0f, 1.0f, &r);
    h->param = alloc_floats(h->n_param);
    h->grad = alloc_floats(h->n_param);
    h->state = alloc_floats(h->n_state);
    h->state0 = alloc_floats(h->n_state);
    h->saved = alloc_floats(h->n_saved);
    h->scratch = alloc_floats(h->n_scratch * TEAM_THREADS);
    h->partials = alloc_floats(h->n_partials);
    if (op->init) op->init(&h->node, h->param, h->state, &r);
    /* Away from the init's special values (batch norm's 1 and 0), so that a
     * gradient that ignores a parameter does not pass by luck. */
    for (size_t i = 0; i < h->n_param; i++)
        h->param[i] += 0.3f * (2.0f * rng_uniform(&r) - 1.0f);
    for (size_t i = 0; i < h->n_state; i++)
        h->state[i] += 0.2f * rng_uniform(&r);
    memcpy(h->state0, h->state, h->n_state * sizeof *h->state);
    rng_seed(&h->rng0, 77);
}

static struct op_call harness_call(struct harness *h, struct rng *r)
{
    struct op_call c = {.node = &h->node,
                        .B = h->B,
                        .training = h->training,
                        .rng = r,
                        .out = h->out,
                        .param = h->n_param ? h->param : NULL,
                        .grad = h->n_param ? h->grad : NULL,
                        .state = h->n_state ? h->state : NULL,
                        .saved = h->saved,
                        .scratch = h->scratch,
                        .scratch_stride = h->n_scratch,
                        .partials = h->partials,
                        .team = h->team,
                        .dout = h->r};
    for (int j = 0; j < h->node.n_in; j++) {
        c.in[j] = h->in[j];
        c.din[j] = h->din[j];
    }
    return c;
}

/* L = sum(out * R) after one forward from the saved state and RNG. */
static double harness_loss(struct harness *h)
{
    memcpy(h->state, h->state0, h->n_state * sizeof *h->state);
    struct rng r = h->rng0;
    struct op_call c = harness_call(h, &r);
    h->node.op->forward(&c);
    double L = 0.0;
    for (size_t i = 0; i < h->n_out; i++)
        L += (double)h->out[i] * (double)h->r[i];
    return L;
}

static void check_close(const char *what, const char *op, const char *tcase, size_t i, double num,
                        double ana, double tol_abs)
{
    double scale = fmax(fabs(num), fabs(ana));
    if (!(fabs(num - ana) <= tol_abs + TOL_REL * scale))
        fail_msg("%s, %s: d%s[%zu]: numeric %.6g, backward %.6g", op, tcase, what, i, num, ana);
}

static void check_case(const struct op_def *op, const struct op_test *t)
{
    struct harness h;
    harness_setup(&h, op, t);
    double tol = t->tol > 0 ? t->tol : TOL_ABS;

    /* Analytic: stale gradients that backward must add to, stale input
     * gradients that it must overwrite. */
    harness_loss(&h);
    for (size_t i = 0; i < h.n_param; i++)
        h.grad[i] = 0.5f;
    for (int j = 0; j < op->n_inputs; j++)
        for (size_t i = 0; i < h.n_in[j]; i++)
            h.din[j][i] = 1e3f;
    struct rng r = h.rng0;
    struct op_call c = harness_call(&h, &r);
    op->backward(&c);

    for (int j = 0; j < op->n_inputs; j++)
        for (size_t i = 0; i < h.n_in[j]; i++) {
            if (j == 0 && op->takes_ids) { /* ids: no gradient, and none stale */
                if (h.din[j][i] != 0.0f)
                    fail_msg("%s, %s: din0[%zu] of a token id is %g, not 0", op->type, t->name, i,
                             (double)h.din[j][i]);
                continue;
            }
            float keep = h.in[j][i];
            h.in[j][i] = keep + H;
            double up = harness_loss(&h);
            h.in[j][i] = keep - H;
            double down = harness_loss(&h);
            h.in[j][i] = keep;
            char what[16];
            snprintf(what, sizeof what, "in%d", j);
            check_close(what, op->type, t->name, i, (up - down) / (2.0 * H), h.din[j][i], tol);
        }
    for (size_t i = 0; i < h.n_param; i++) {
        float keep = h.param[i];
        h.param[i] = keep + H;
        double up = harness_loss(&h);
        h.param[i] = keep - H;
        double down = harness_loss(&h);
        h.param[i] = keep;
        check_close("param", op->type, t->name, i, (up - down) / (2.0 * H), (double)h.grad[i] - 0.5,
                    tol);
    }
    harness_free(&h);
}

static void test_every_op(void **state)
{
    (void)state;
    int n;
    const struct op_def *const *ops = op_all(&n);
    assert_true(n > 0);
    for (int k = 0; k < n; k++) {
        const struct op_def *op = ops[k];
        if (op->n_tests < 1) fail_msg("op %s is registered without test cases", op->type);
        assert_ptr_equal(op_find(op->type), op);
        assert_non_null(op->infer);
        assert_non_null(op->forward);
        assert_non_null(op->backward);
        for (int t = 0; t < op->n_tests; t++)
            check_case(op, &op->tests[t]);
        printf("ok %s: %d case%s\n", op->type, op->n_tests, op->n_tests == 1 ? "" : "s");
    }
}

/* The forward output of one case, copied out (the caller frees it). */
static float *forward_output(const struct op_def *op, const struct op_test *t, size_t *n)
{
    struct harness h;
    harness_setup(&h, op, t);
    struct rng r = h.rng0;
    struct op_call c = harness_call(&h, &r);
    op->forward(&c);
    float *out = malloc(h.n_out * sizeof *out);
    assert_non_null(out);
    memcpy(out, h.out, h.n_out * sizeof *out);
    *n = h.n_out;
    harness_free(&h);
    return out;
}

/* The attention ops again with their heads through sgemm: on a CPU with
 * AVX-512 test_every_op checked ops/attn_head.c's kernel, and this the
 * path every other CPU takes. There the two paths round differently (FMA
 * and their own summation orders), so the same bits would mean that the
 * seam switched nothing. */
static void test_attention_sgemm_path(void **state)
{
    (void)state;
    static const char *const types[] = {"attention", "transformer"};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        const struct op_def *op = op_find(types[k]);
        assert_non_null(op);
        size_t n_fast, n_sgemm;
        float *fast = forward_output(op, &op->tests[0], &n_fast);
        op_set_attention_sgemm(true);
        float *sgemm = forward_output(op, &op->tests[0], &n_sgemm);
        for (int t = 0; t < op->n_tests; t++)
            check_case(op, &op->tests[t]);
        op_set_attention_sgemm(false);
        assert_int_equal(n_fast, n_sgemm);
#if defined(__x86_64__) && !defined(__clang__)
        if (__builtin_cpu_supports("avx512f") && !memcmp(fast, sgemm, n_fast * sizeof *fast))
            fail_msg("%s: the same bits with and without the head kernel", op->type);
#endif
        free(fast);
        free(sgemm);
    }
}

/* ---- threads: any team gives the same bits ---- */

/* Forward and backward of one case, alone and on a team that splits even
 * this small a call: outputs, state, input and parameter gradients must be
 * the same bits (op.h: a slice's result never depends on the team). */
static void check_case_threads(const struct op_def *op, const struct op_test *t, struct team *team)
{
    struct harness h[2];
    for (int k = 0; k < 2; k++) {
        harness_setup(&h[k], op, t);
        h[k].team = k ? team : NULL;
        for (size_t i = 0; i < h[k].n_param; i++)
            h[k].grad[i] = 0.25f;
        struct rng r = h[k].rng0;
        struct op_call c = harness_call(&h[k], &r);
        op->forward(&c);
        op->backward(&c);
    }
    const char *tc = t->name;
    if (memcmp(h[0].out, h[1].out, h[0].n_out * sizeof(float)))
        fail_msg("%s, %s: forward differs on %d threads", op->type, tc, TEAM_THREADS);
    if (h[0].n_state && memcmp(h[0].state, h[1].state, h[0].n_state * sizeof(float)))
        fail_msg("%s, %s: state differs on %d threads", op->type, tc, TEAM_THREADS);
    if (h[0].n_param && memcmp(h[0].grad, h[1].grad, h[0].n_param * sizeof(float)))
        fail_msg("%s, %s: parameter gradients differ on %d threads", op->type, tc, TEAM_THREADS);
    for (int j = 0; j < op->n_inputs; j++)
        if (memcmp(h[0].din[j], h[1].din[j], h[0].n_in[j] * sizeof(float)))
            fail_msg("%s, %s: input gradient %d differs on %d threads", op->type, tc, j,
                     TEAM_THREADS);
    harness_free(&h[0]);
    harness_free(&h[1]);
}

static void test_every_op_threads(void **state)
{
    (void)state;
    struct team *team;
    assert_int_equal(team_create(&team, TEAM_THREADS), 0);
    op_set_split_threshold(1);
    int n;
    const struct op_def *const *ops = op_all(&n);
    for (int k = 0; k < n; k++)
        for (int t = 0; t < ops[k]->n_tests; t++)
            check_case_threads(ops[k], &ops[k]->tests[t], team);
    op_set_split_threshold(1 << 15);
    team_destroy(&team);
}

/* ---- the fused heads ---- */

static void check_head(enum net_loss loss, enum net_output output, float smoothing)
{
    enum { B = 3, K = 4 };
    struct rng r;
    rng_seed(&r, 5);
    float z[B * K], p[B * K], d[B * K], y[B * K];
    int32_t yc[B] = {0, 3, 1};
    fill_uniform(z, B * K, -2.0f, 2.0f, &r);
    fill_uniform(y, B * K, 0.0f, 1.0f, &r);
    bool ce = loss == NET_LOSS_CROSS_ENTROPY;
    loss_outputs(p, z, B, K, loss, output);
    loss_grad(d, p, ce ? yc : NULL, ce ? NULL : y, B, K, loss, output, smoothing);
    for (int i = 0; i < B * K; i++) {
        float keep = z[i];
        z[i] = keep + H;
        loss_outputs(p, z, B, K, loss, output);
        double up = loss_value(z, p, ce ? yc : NULL, ce ? NULL : y, B, K, loss, smoothing);
        z[i] = keep - H;
        loss_outputs(p, z, B, K, loss, output);
        double down = loss_value(z, p, ce ? yc : NULL, ce ? NULL : y, B, K, loss, smoothing);
        z[i] = keep;
        check_close("z", ce ? "cross_entropy" : "mse", output == NET_OUT_SIGMOID ? "sigmoid" : "",
                    (size_t)i, (up - down) / (2.0 * H), d[i], 2e-4);
    }
}

static void test_heads(void **state)
{
    (void)state;
    check_head(NET_LOSS_CROSS_ENTROPY, NET_OUT_LOGITS, 0.0f);
    check_head(NET_LOSS_CROSS_ENTROPY, NET_OUT_LOGITS, 0.1f);
    check_head(NET_LOSS_MSE, NET_OUT_LINEAR, 0.0f);
    check_head(NET_LOSS_MSE, NET_OUT_SIGMOID, 0.0f);
}

/* ---- the model's graph ---- */

static struct model_layer layer(const char *type, int out)
{
    struct model_layer l;
    memset(&l, 0, sizeof l);
    snprintf(l.type, sizeof l.type, "%s", type);
    op_attrs_defaults(&l.a);
    l.a.out = out;
    return l;
}

/* input (2, 2, 2) -> flatten (8) -> dense 6 -> dense 6 -> add(2, 1) ->
 * dense 3: the first dense's output feeds the second and the add, so its
 * gradient is the sum of two. */
static void residual_desc(struct model_desc *d)
{
    memset(d, 0, sizeof *d);
    d->input = (struct shape){3, {2, 2, 2}};
    d->layer[0] = layer("flatten", 0);
    d->layer[1] = layer("dense", 6);
    d->layer[2] = layer("dense", 6);
    d->layer[3] = layer("add", 0);
    d->layer[3].n_in = 2;
    d->layer[3].in[0] = 2;
    d->layer[3].in[1] = 1;
    d->layer[4] = layer("dense", 3);
    d->n_layers = 5;
    d->loss = NET_LOSS_CROSS_ENTROPY;
    d->output = NET_OUT_LOGITS;
}

static double model_total(struct model *m, const float *x, const int32_t *y, int B)
{
    model_forward(m, x, B, true, NULL);
    return model_loss(m, y, NULL, B);
}

static void test_model_residual_gradients(void **state)
{
    (void)state;
    enum { B = 4 };
    struct model_desc d;
    residual_desc(&d);
    struct model m;
    char err[256] = "";
    assert_int_equal(model_create(&m, &d, err, sizeof err), 0);
    assert_null(m.net);
    assert_int_equal(model_reserve(&m, B), 0);
    struct rng r;
    rng_seed(&r, 9);
    model_init(&m, &r);
    assert_int_equal(m.tensors.n, 6);
    assert_string_equal(m.tensors.t[0].name, "1.weight");
    assert_string_equal(m.tensors.t[5].name, "4.bias");
    assert_int_equal(m.n_params, 6 * 8 + 6 + 6 * 6 + 6 + 3 * 6 + 3);

    float x[B * 8];
    int32_t y[B] = {0, 2, 1, 2};
    fill_uniform(x, B * 8, -1.0f, 1.0f, &r);
    model_total(&m, x, y, B);
    model_zero_grad(&m);
    model_backward(&m, x, y, NULL, B);
    float *ana = alloc_floats(m.n_params);
    memcpy(ana, m.grads, m.n_params * sizeof *ana);
    for (size_t i = 0; i < m.n_params; i++) {
        float keep = m.params[i];
        m.params[i] = keep + H;
        double up = model_total(&m, x, y, B);
        m.params[i] = keep - H;
        double down = model_total(&m, x, y, B);
        m.params[i] = keep;
        check_close("param", "model", "residual", i, (up - down) / (2.0 * H), ana[i], 2e-4);
    }
    free(ana);
    model_destroy(&m);
}

/* A stack of dense layers runs through struct net, with the same table. */
/* A conv + batch norm + pool + residual + dropout model large enough for
 * the default cuts: two steps on one thread and on two give the same bits
 * (gradients, running statistics, logits). */
static void threads_desc(struct model_desc *d)
{
    memset(d, 0, sizeof *d);
    d->input = (struct shape){3, {1, 14, 14}};
    int n = 0;
    d->layer[n] = layer("conv2d", 8);
    d->layer[n].a.kernel = 3;
    d->layer[n++].a.padding = 1;
    d->layer[n++] = layer("batchnorm", 0);
    d->layer[n++] = layer("relu", 0);
    d->layer[n] = layer("conv2d", 8);
    d->layer[n].a.kernel = 3;
    d->layer[n++].a.padding = 1;
    d->layer[n] = layer("add", 0); /* conv + the relu before it */
    d->layer[n].n_in = 2;
    d->layer[n].in[0] = n - 1;
    d->layer[n].in[1] = n - 2;
    n++;
    d->layer[n] = layer("maxpool", 0);
    d->layer[n++].a.kernel = 2;
    d->layer[n++] = layer("flatten", 0);
    d->layer[n] = layer("dropout", 0);
    d->layer[n++].a.p = 0.25f;
    d->layer[n++] = layer("dense", 32);
    d->layer[n++] = layer("gelu", 0);
    d->layer[n++] = layer("dense", 10);
    d->n_layers = n;
    d->loss = NET_LOSS_CROSS_ENTROPY;
}

/* Two training steps of d on one thread and on `threads`, then an
 * evaluation: gradients, weights, state and logits must be the same bits. */
static void check_model_threads(const struct model_desc *d, int B, int threads)
{
    struct model m[2];
    char err[256];
    assert_int_equal(model_create(&m[0], d, err, sizeof err), 0);
    size_t D = shape_size(&m[0].input);
    float *x = alloc_floats((size_t)B * D);
    int32_t *y = calloc((size_t)B, sizeof *y);
    assert_non_null(y);
    struct rng r;
    rng_seed(&r, 5);
    fill_uniform(x, (size_t)B * D, 0.0f, 1.0f, &r);
    int K = m[0].K;
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)(rng_next(&r) % (uint64_t)K);
    for (int k = 0; k < 2; k++) {
        if (k) assert_int_equal(model_create(&m[k], d, err, sizeof err), 0);
        assert_int_equal(model_reserve(&m[k], B), 0);
        assert_int_equal(model_set_threads(&m[k], k ? threads : 1), 0);
        assert_int_equal(model_threads(&m[k]), k ? threads : 1);
        struct rng init;
        rng_seed(&init, 11);
        model_init(&m[k], &init);
        struct rng drop;
        rng_seed(&drop, 12);
        for (int step = 0; step < 2; step++) {
            model_forward(&m[k], x, B, true, &drop);
            model_zero_grad(&m[k]);
            model_backward(&m[k], x, y, NULL, B);
            for (size_t i = 0; i < m[k].n_params; i++) /* a plain SGD step */
                m[k].params[i] -= 0.1f * m[k].grads[i];
        }
        model_forward(&m[k], x, B, false, NULL);
    }
    assert_memory_equal(m[0].grads, m[1].grads, m[0].n_params * sizeof(float));
    assert_memory_equal(m[0].params, m[1].params, m[0].n_params * sizeof(float));
    if (m[0].n_state) assert_memory_equal(m[0].state, m[1].state, m[0].n_state * sizeof(float));
    assert_memory_equal(model_logits(&m[0]), model_logits(&m[1]), (size_t)B * K * sizeof(float));
    for (int k = 0; k < 2; k++)
        model_destroy(&m[k]);
    free(x);
    free(y);
}

static void test_model_threads_same_bits(void **state)
{
    (void)state;
    static struct model_desc d;
    threads_desc(&d);
    check_model_threads(&d, 48, 2);
}

/* Recurrences wide enough that a step is cut by hidden units (runs of 64
 * or more): a 2-layer LSTM over every step, then a GRU's last step, on one
 * thread and on two and three. */
static void test_model_rnn_threads_same_bits(void **state)
{
    (void)state;
    static struct model_desc d;
    memset(&d, 0, sizeof d);
    d.input = (struct shape){2, {6, 10}};
    d.layer[0] = layer("lstm", 128);
    d.layer[0].a.num_layers = 2;
    d.layer[1] = layer("gru", 192);
    d.layer[1].a.sequence = false;
    d.layer[2] = layer("dense", 5);
    d.n_layers = 3;
    d.loss = NET_LOSS_CROSS_ENTROPY;
    check_model_threads(&d, 20, 2);
    check_model_threads(&d, 20, 3);
}

static void test_model_dense_stack(void **state)
{
    (void)state;
    struct model_desc d;
    memset(&d, 0, sizeof d);
    d.input = (struct shape){1, {5}};
    d.layer[0] = layer("dense", 4);
    d.layer[1] = layer("relu", 0);
    d.layer[2] = layer("dense", 3);
    d.n_layers = 3;
    struct model m;
    char err[256] = "";
    assert_int_equal(model_create(&m, &d, err, sizeof err), 0);
    assert_non_null(m.net);
    assert_ptr_equal(m.params, m.net->params);
    assert_int_equal(m.tensors.n, 4);
    assert_string_equal(m.tensors.t[2].name, "2.weight");
    assert_int_equal(m.tensors.t[2].offset, 4 * 5 + 4);
    assert_ptr_equal(m.params + m.tensors.t[2].offset, m.net->layer[1].w);
    model_destroy(&m);
}

static void expect_error(struct model_desc *d, const char *want)
{
    char err[256] = "";
    int rc = model_check(d, 8, NULL, err, sizeof err);
    assert_int_equal(rc, -EINVAL);
    if (!strstr(err, want)) fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void test_model_errors(void **state)
{
    (void)state;
    struct model_desc d;
    residual_desc(&d);
    d.layer[2].a.out = 5; /* the branch now differs from the shortcut */
    expect_error(&d, "layer 3 (add): the branch's output (5) differs from the shortcut's (6)");

    residual_desc(&d);
    d.layer[0] = layer("dense", 4); /* dense on (2, 2, 2) */
    expect_error(&d, "layer 0 (dense): needs flat inputs (features), got (2, 2, 2)");

    residual_desc(&d);
    snprintf(d.layer[4].type, sizeof d.layer[4].type, "dens");
    expect_error(&d, "layer 4: unknown type \"dens\"");

    residual_desc(&d);
    d.n_layers = 1; /* a flatten alone ends on (8): a valid, if useless, model */
    struct model_sizes sz;
    char err[256];
    assert_int_equal(model_check(&d, 8, &sz, err, sizeof err), 0);
    assert_int_equal(sz.outputs, 8);
    assert_int_equal(sz.n_params, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op),
        cmocka_unit_test(test_attention_sgemm_path),
        cmocka_unit_test(test_every_op_threads),
        cmocka_unit_test(test_heads),
        cmocka_unit_test(test_model_residual_gradients),
        cmocka_unit_test(test_model_threads_same_bits),
        cmocka_unit_test(test_model_rnn_threads_same_bits),
        cmocka_unit_test(test_model_dense_stack),
        cmocka_unit_test(test_model_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
