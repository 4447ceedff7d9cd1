/* The layer ops' kernels (engine/ops/kernels.h): every forward/backward pair
 * against central finite differences, and against PyTorch 1.13 through
 * tests/parity/ops_fixtures.json (written by tests/parity/gen_ops_fixtures.py;
 * this test needs no torch).
 *
 * Finite differences: the loss is L = sum(out * dout) for a random dout, in
 * double over float forwards; an entry passes when |numeric - analytic| <=
 * FD_ABS + FD_REL * max(|numeric|, |analytic|). The step h is 1e-2 for the
 * kernels that are linear in what is perturbed (conv2d, average pooling,
 * dropout: the difference is exact but for rounding) and 1e-3 otherwise;
 * max pooling and the kinked activations get inputs at least 50 h away from
 * a kink. The same check verifies the gradient conventions: parameter
 * gradients accumulate (they start at 1, not 0) and din is stored (it
 * starts as garbage).
 *
 * PyTorch: |ours - torch| <= TORCH_ABS + TORCH_REL * |torch| for every
 * output and gradient (float32 on both sides, different summation orders);
 * the worst error of each case is printed. */
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

#include "loss.h"
#include "ops/kernels.h"
#include "rng.h"

#define FD_ABS 2e-4
#define FD_REL 1e-2
#define TORCH_ABS 1e-5
#define TORCH_REL 1e-4
#define FIXTURES MLQ_SOURCE_DIR "/tests/parity/ops_fixtures.json"

static json_t *fixtures;

static float *alloc_floats(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void fill_normal(float *x, size_t n, struct rng *r, float scale)
{
    for (size_t i = 0; i < n; i++) {
        /* Sum of four uniforms: close enough to a normal for test data. */
        float u = rng_uniform(r) + rng_uniform(r) + rng_uniform(r) + rng_uniform(r) - 2.0f;
        x[i] = u * scale * 1.7f;
    }
}

/* ---- finite differences ---- */

/* One kernel under test: forward(in, par) -> out and its backward. cfg holds
 * the dimensions, named per kernel below. */
struct fd_case {
    const char *name;
    size_t n_in, n_par, n_out;
    void (*forward)(const struct fd_case *c, const float *in, const float *par, float *out);
    /* din stored, dpar accumulated */
    void (*backward)(const struct fd_case *c, const float *in, const float *par, const float *dout,
                     float *din, float *dpar);
    /* optional: input values (default: normal) */
    void (*make_input)(const struct fd_case *c, float *in, struct rng *r);
    float h;
    int cfg[12];
    float slope;
};

static double loss_of(const struct fd_case *c, const float *in, const float *par, const float *dout,
                      float *out)
{
    c->forward(c, in, par, out);
    double L = 0.0;
    for (size_t i = 0; i < c->n_out; i++)
        L += (double)out[i] * dout[i];
    return L;
}

static void check_one(const char *what, const struct fd_case *c, size_t i, double numeric,
                      double analytic, double *worst)
{
    double err = fabs(numeric - analytic);
    double tol = FD_ABS + FD_REL * fmax(fabs(numeric), fabs(analytic));
    if (err > tol)
        fail_msg("%s: d%s[%zu]: numeric %.6g, analytic %.6g", c->name, what, i, numeric, analytic);
    if (err > *worst) *worst = err;
}

/* Perturbs v[i] by +-h and returns the central difference of the loss. */
static double central(const struct fd_case *c, float *v, size_t i, float *in, float *par,
                      const float *dout, float *out)
{
    float keep = v[i];
    v[i] = keep + c->h;
    double lp = loss_of(c, in, par, dout, out);
    v[i] = keep - c->h;
    double lm = loss_of(c, in, par, dout, out);
    v[i] = keep;
    return (lp - lm) / (2.0 * (double)c->h);
}

static void fd_check(const struct fd_case *c)
{
    struct rng r;
    rng_seed(&r, 42);
    float *in = alloc_floats(c->n_in), *par = alloc_floats(c->n_par);
    float *out = alloc_floats(c->n_out), *dout = alloc_floats(c->n_out);
    float *din = alloc_floats(c->n_in), *dpar = alloc_floats(c->n_par);
    if (c->make_input)
        c->make_input(c, in, &r);
    else
        fill_normal(in, c->n_in, &r, 1.0f);
    fill_normal(par, c->n_par, &r, 0.5f);
    fill_normal(dout, c->n_out, &r, 1.0f);
    for (size_t i = 0; i < c->n_in; i++)
        din[i] = 12345.0f; /* stored, not accumulated: must vanish */
    for (size_t i = 0; i < c->n_par; i++)
        dpar[i] = 1.0f; /* accumulated: 1 + gradient */
    c->forward(c, in, par, out);
    c->backward(c, in, par, dout, din, dpar);

    double worst = 0.0;
    for (size_t i = 0; i < c->n_in; i++)
        check_one("in", c, i, central(c, in, i, in, par, dout, out), din[i], &worst);
    for (size_t i = 0; i < c->n_par; i++)
        check_one("par", c, i, central(c, par, i, in, par, dout, out), (double)dpar[i] - 1.0,
                  &worst);
    printf("  %-34s %zu inputs, %zu params, max |err| %.2e\n", c->name, c->n_in, c->n_par, worst);
    free(in);
    free(par);
    free(out);
    free(dout);
    free(din);
    free(dpar);
}

/* conv2d: cfg = B, C, H, W, O, KH, KW, stride, pad, bias; par = w then b. */
enum { CB, CC, CH, CW, CO, CKH, CKW, CS, CP, CBIAS };

static void conv_fwd(const struct fd_case *c, const float *in, const float *par, float *out)
{
    const int *k = c->cfg;
    size_t nw = (size_t)k[CO] * k[CC] * k[CKH] * k[CKW];
    float *col = alloc_floats(conv2d_col_floats(k[CC], k[CH], k[CW], k[CKH], k[CKW], k[CS], k[CP]));
    conv2d_forward(out, in, par, k[CBIAS] ? par + nw : NULL, col, k[CB], k[CC], k[CH], k[CW], k[CO],
                   k[CKH], k[CKW], k[CS], k[CP]);
    free(col);
}

static void conv_bwd(const struct fd_case *c, const float *in, const float *par, const float *dout,
                     float *din, float *dpar)
{
    const int *k = c->cfg;
    size_t nw = (size_t)k[CO] * k[CC] * k[CKH] * k[CKW];
    float *col = alloc_floats(conv2d_col_floats(k[CC], k[CH], k[CW], k[CKH], k[CKW], k[CS], k[CP]));
    conv2d_backward(din, dpar, k[CBIAS] ? dpar + nw : NULL, dout, in, par, col, k[CB], k[CC], k[CH],
                    k[CW], k[CO], k[CKH], k[CKW], k[CS], k[CP]);
    free(col);
}

static struct fd_case conv_case(const char *name, int B, int C, int H, int W, int O, int KH, int KW,
                                int stride, int pad, int bias)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    assert_true(OH > 0 && OW > 0);
    struct fd_case c = {.name = name,
                        .n_in = (size_t)B * C * H * W,
                        .n_par = (size_t)O * C * KH * KW + (bias ? (size_t)O : 0),
                        .n_out = (size_t)B * O * OH * OW,
                        .forward = conv_fwd,
                        .backward = conv_bwd,
                        .h = 1e-2f,
                        .cfg = {B, C, H, W, O, KH, KW, stride, pad, bias}};
    return c;
}

static void test_fd_conv2d(void **state)
{
    (void)state;
    struct fd_case cases[] = {
        conv_case("conv2d 3x3 pad 1", 2, 3, 6, 5, 4, 3, 3, 1, 1, 1),
        conv_case("conv2d 3x2 stride 2 pad 1", 2, 2, 7, 6, 3, 3, 2, 2, 1, 1),
        conv_case("conv2d 1x1 direct", 2, 4, 3, 5, 3, 1, 1, 1, 0, 1),
        conv_case("conv2d 1x1 stride 2 pad 1", 2, 3, 5, 4, 2, 1, 1, 2, 1, 1),
        conv_case("conv2d 5x5 stride 2 pad 2 no bias", 1, 2, 8, 7, 2, 5, 5, 2, 2, 0),
        conv_case("conv2d 2x2 stride 3", 2, 2, 8, 7, 2, 2, 2, 3, 0, 1),
        conv_case("conv2d kernel = input", 2, 2, 3, 4, 3, 3, 4, 1, 0, 1),
        conv_case("conv2d 3x3 pad 2", 1, 2, 4, 5, 2, 3, 3, 1, 2, 1),
        /* stride 1, output as wide as the input: the flat-copy im2col */
        conv_case("conv2d 5x3 pad 1 (same width)", 2, 2, 7, 6, 3, 5, 3, 1, 1, 1),
        conv_case("conv2d 5x5 pad 2 (same size)", 1, 2, 6, 5, 2, 5, 5, 1, 2, 1),
        conv_case("conv2d 3x3 pad 1 on one column", 2, 2, 4, 1, 2, 3, 3, 1, 1, 1),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fd_check(&cases[i]);
}

/* pooling: cfg = B, C, H, W, K, stride, pad, kind (0 max, 1 avg, 2 global). */
enum { PB, PC, PH, PW, PK, PS, PP, PKIND };

static void pool_fwd(const struct fd_case *c, const float *in, const float *par, float *out)
{
    const int *k = c->cfg;
    if (k[PKIND] == 0)
        maxpool2d_forward(out, in, k[PB], k[PC], k[PH], k[PW], k[PK], k[PK], k[PS], k[PP]);
    else if (k[PKIND] == 1)
        avgpool2d_forward(out, in, k[PB], k[PC], k[PH], k[PW], k[PK], k[PK], k[PS], k[PP]);
    else
        global_avgpool_forward(out, in, k[PB], k[PC], k[PH] * k[PW]);
}

static void pool_bwd(const struct fd_case *c, const float *in, const float *par, const float *dout,
                     float *din, float *dpar)
{
    const int *k = c->cfg;
    if (k[PKIND] == 0)
        maxpool2d_backward(din, dout, in, k[PB], k[PC], k[PH], k[PW], k[PK], k[PK], k[PS], k[PP]);
    else if (k[PKIND] == 1)
        avgpool2d_backward(din, dout, k[PB], k[PC], k[PH], k[PW], k[PK], k[PK], k[PS], k[PP]);
    else
        global_avgpool_backward(din, dout, k[PB], k[PC], k[PH] * k[PW]);
}

/* Distinct values 0.05 apart in shuffled order: +-h never changes a max. */
static void spaced_input(const struct fd_case *c, float *in, struct rng *r)
{
    uint32_t *idx = malloc(c->n_in * sizeof *idx);
    assert_non_null(idx);
    for (size_t i = 0; i < c->n_in; i++)
        idx[i] = (uint32_t)i;
    rng_shuffle(r, idx, c->n_in);
    for (size_t i = 0; i < c->n_in; i++)
        in[i] = 0.05f * ((float)idx[i] - (float)c->n_in / 2);
    free(idx);
}

static struct fd_case pool_case(const char *name, int kind, int B, int C, int H, int W, int K,
                                int stride, int pad)
{
    int OH = kind == 2 ? 1 : conv2d_out_size(H, K, stride, pad);
    int OW = kind == 2 ? 1 : conv2d_out_size(W, K, stride, pad);
    struct fd_case c = {.name = name,
                        .n_in = (size_t)B * C * H * W,
                        .n_out = (size_t)B * C * OH * OW,
                        .forward = pool_fwd,
                        .backward = pool_bwd,
                        .make_input = kind == 0 ? spaced_input : NULL,
                        .h = kind == 0 ? 1e-3f : 1e-2f,
                        .cfg = {B, C, H, W, K, stride, pad, kind}};
    return c;
}

static void test_fd_pool(void **state)
{
    (void)state;
    struct fd_case cases[] = {
        pool_case("maxpool 2x2", 0, 2, 3, 6, 8, 2, 2, 0),
        pool_case("maxpool 2x2 odd input", 0, 1, 2, 7, 5, 2, 2, 0),
        pool_case("maxpool 3x3 stride 2 pad 1", 0, 2, 2, 7, 5, 3, 2, 1),
        pool_case("maxpool 3x3 stride 1 pad 1", 0, 1, 2, 5, 6, 3, 1, 1),
        pool_case("avgpool 2x2", 1, 2, 3, 6, 8, 2, 2, 0),
        pool_case("avgpool 3x3 stride 2 pad 1", 1, 2, 2, 7, 5, 3, 2, 1),
        pool_case("global avgpool", 2, 2, 3, 4, 5, 0, 0, 0),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fd_check(&cases[i]);
}

/* batch norm: cfg = B, C, S, training; par = gamma then beta. The running
 * statistics are fixed (evaluation) or copied per call (training), so every
 * forward of the difference sees the same ones. */
enum { BB, BC, BS, BTRAIN };

static void bn_fwd(const struct fd_case *c, const float *in, const float *par, float *out)
{
    const int *k = c->cfg;
    int C = k[BC];
    float *rm = alloc_floats((size_t)C), *rv = alloc_floats((size_t)C);
    float *mean = alloc_floats((size_t)C), *invstd = alloc_floats((size_t)C);
    for (int i = 0; i < C; i++) {
        rm[i] = 0.1f * (float)i - 0.2f;
        rv[i] = 0.5f + 0.25f * (float)i;
    }
    batchnorm_forward(out, mean, invstd, rm, rv, in, par, par + C, k[BB], C, k[BS], 0, C, k[BTRAIN],
                      BATCHNORM_MOMENTUM, BATCHNORM_EPS);
    free(rm);
    free(rv);
    free(mean);
    free(invstd);
}

static void bn_bwd(const struct fd_case *c, const float *in, const float *par, const float *dout,
                   float *din, float *dpar)
{
    const int *k = c->cfg;
    int C = k[BC];
    float *rm = alloc_floats((size_t)C), *rv = alloc_floats((size_t)C);
    float *mean = alloc_floats((size_t)C), *invstd = alloc_floats((size_t)C);
    float *scratch = alloc_floats(c->n_out);
    for (int i = 0; i < C; i++) {
        rm[i] = 0.1f * (float)i - 0.2f;
        rv[i] = 0.5f + 0.25f * (float)i;
    }
    batchnorm_forward(scratch, mean, invstd, rm, rv, in, par, par + C, k[BB], C, k[BS], 0, C,
                      k[BTRAIN], BATCHNORM_MOMENTUM, BATCHNORM_EPS);
    batchnorm_backward(din, dpar, dpar + C, dout, in, mean, invstd, par, k[BB], C, k[BS], 0, C,
                       k[BTRAIN]);
    free(rm);
    free(rv);
    free(mean);
    free(invstd);
    free(scratch);
}

static struct fd_case bn_case(const char *name, int B, int C, int S, int training)
{
    struct fd_case c = {.name = name,
                        .n_in = (size_t)B * C * S,
                        .n_par = 2 * (size_t)C,
                        .n_out = (size_t)B * C * S,
                        .forward = bn_fwd,
                        .backward = bn_bwd,
                        .h = 1e-3f,
                        .cfg = {B, C, S, training}};
    return c;
}

static void test_fd_batchnorm(void **state)
{
    (void)state;
    struct fd_case cases[] = {
        bn_case("batchnorm2d train", 3, 3, 10, 1),
        bn_case("batchnorm2d eval", 3, 3, 10, 0),
        bn_case("batchnorm1d train", 8, 4, 1, 1),
        bn_case("batchnorm1d eval", 8, 4, 1, 0),
        bn_case("batchnorm2d train, batch of 1", 1, 2, 12, 1),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fd_check(&cases[i]);
}

/* activations and dropout: cfg = op (or -1 for dropout, p = slope). */
static void act_fwd(const struct fd_case *c, const float *in, const float *par, float *out)
{
    if (c->cfg[0] < 0)
        dropout_forward(out, in, c->n_in, c->slope, 77, 5);
    else
        act_forward(out, in, c->n_in, (enum act_op)c->cfg[0], c->slope);
}

static void act_bwd(const struct fd_case *c, const float *in, const float *par, const float *dout,
                    float *din, float *dpar)
{
    if (c->cfg[0] < 0) {
        dropout_backward(din, dout, c->n_in, c->slope, 77, 5);
        return;
    }
    float *out = alloc_floats(c->n_in);
    act_forward(out, in, c->n_in, (enum act_op)c->cfg[0], c->slope);
    act_backward(din, dout, in, out, c->n_in, (enum act_op)c->cfg[0], c->slope);
    free(out);
}

/* Normal values, pushed at least 0.05 away from relu's kink at 0. */
static void away_from_zero(const struct fd_case *c, float *in, struct rng *r)
{
    fill_normal(in, c->n_in, r, 2.0f);
    for (size_t i = 0; i < c->n_in; i++)
        in[i] += in[i] >= 0.0f ? 0.05f : -0.05f;
}

static struct fd_case act_case(const char *name, int op, float slope, int kinked)
{
    struct fd_case c = {.name = name,
                        .n_in = 96,
                        .n_out = 96,
                        .forward = act_fwd,
                        .backward = act_bwd,
                        .make_input = kinked ? away_from_zero : NULL,
                        .h = op < 0 ? 1e-2f : 1e-3f,
                        .cfg = {op},
                        .slope = slope};
    return c;
}

static void test_fd_activation_dropout(void **state)
{
    (void)state;
    struct fd_case cases[] = {
        act_case("relu", ACT_OP_RELU, 0.0f, 1),
        act_case("leaky_relu 0.01", ACT_OP_LEAKY_RELU, 0.01f, 1),
        act_case("leaky_relu 0.3", ACT_OP_LEAKY_RELU, 0.3f, 1),
        act_case("sigmoid", ACT_OP_SIGMOID, 0.0f, 0),
        act_case("tanh", ACT_OP_TANH, 0.0f, 0),
        act_case("gelu", ACT_OP_GELU, 0.0f, 0),
        act_case("gelu tanh", ACT_OP_GELU_TANH, 0.0f, 0),
        act_case("dropout 0.3", -1, 0.3f, 0),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        fd_check(&cases[i]);
}

/* ---- properties finite differences do not see ---- */

/* A batch split among threads (pointer offsets, own dw/db each, summed in
 * order) gives the one-call result: the same out and din bits, dw within
 * rounding. */
static void test_conv2d_split_by_samples(void **state)
{
    (void)state;
    int B = 5, C = 3, H = 9, W = 8, O = 4, KH = 3, KW = 3, stride = 1, pad = 1;
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * O * OH * OW, nw = (size_t)O * C * 9;
    struct rng r;
    rng_seed(&r, 7);
    float *in = alloc_floats(n_in), *w = alloc_floats(nw), *b = alloc_floats((size_t)O);
    float *dout = alloc_floats(n_out), *out1 = alloc_floats(n_out), *out2 = alloc_floats(n_out);
    float *din1 = alloc_floats(n_in), *din2 = alloc_floats(n_in);
    float *dw1 = alloc_floats(nw), *db1 = alloc_floats((size_t)O);
    float *dwa = alloc_floats(nw), *dba = alloc_floats((size_t)O);
    float *dwb = alloc_floats(nw), *dbb = alloc_floats((size_t)O);
    float *col = alloc_floats(conv2d_col_floats(C, H, W, KH, KW, stride, pad));
    fill_normal(in, n_in, &r, 1.0f);
    fill_normal(dout, n_out, &r, 1.0f);
    conv2d_init(w, b, C, O, KH, KW, &r);

    conv2d_forward(out1, in, w, b, col, B, C, H, W, O, KH, KW, stride, pad);
    conv2d_backward(din1, dw1, db1, dout, in, w, col, B, C, H, W, O, KH, KW, stride, pad);
    int split = 2;
    size_t in_s = (size_t)C * H * W, out_s = (size_t)O * OH * OW;
    conv2d_forward(out2, in, w, b, col, split, C, H, W, O, KH, KW, stride, pad);
    conv2d_forward(out2 + split * out_s, in + split * in_s, w, b, col, B - split, C, H, W, O, KH,
                   KW, stride, pad);
    conv2d_backward(din2, dwa, dba, dout, in, w, col, split, C, H, W, O, KH, KW, stride, pad);
    conv2d_backward(din2 + split * in_s, dwb, dbb, dout + split * out_s, in + split * in_s, w, col,
                    B - split, C, H, W, O, KH, KW, stride, pad);
    assert_memory_equal(out1, out2, n_out * sizeof *out1);
    assert_memory_equal(din1, din2, n_in * sizeof *din1);
    for (size_t i = 0; i < nw; i++)
        assert_true(fabsf(dw1[i] - (dwa[i] + dwb[i])) <= 1e-5f * (1.0f + fabsf(dw1[i])));
    for (int o = 0; o < O; o++)
        assert_true(fabsf(db1[o] - (dba[o] + dbb[o])) <= 1e-5f * (1.0f + fabsf(db1[o])));
    float *bufs[] = {in, w, b, dout, out1, out2, din1, din2, dw1, db1, dwa, dba, dwb, dbb, col};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
}

/* Channel ranges give the bits of one call over all channels. */
static void test_batchnorm_split_by_channels(void **state)
{
    (void)state;
    int B = 4, C = 5, S = 33;
    size_t n = (size_t)B * C * S;
    struct rng r;
    rng_seed(&r, 9);
    float *in = alloc_floats(n), *dout = alloc_floats(n), *g = alloc_floats((size_t)C);
    float *bt = alloc_floats((size_t)C);
    float *out[2], *din[2], *rm[2], *rv[2], *mean[2], *is[2], *dg[2], *db[2];
    fill_normal(in, n, &r, 2.0f);
    fill_normal(dout, n, &r, 1.0f);
    fill_normal(g, (size_t)C, &r, 1.0f);
    fill_normal(bt, (size_t)C, &r, 1.0f);
    for (int k = 0; k < 2; k++) {
        out[k] = alloc_floats(n);
        din[k] = alloc_floats(n);
        rm[k] = alloc_floats((size_t)C);
        rv[k] = alloc_floats((size_t)C);
        mean[k] = alloc_floats((size_t)C);
        is[k] = alloc_floats((size_t)C);
        dg[k] = alloc_floats((size_t)C);
        db[k] = alloc_floats((size_t)C);
        batchnorm_init(NULL, NULL, rm[k], rv[k], C);
    }
    batchnorm_forward(out[0], mean[0], is[0], rm[0], rv[0], in, g, bt, B, C, S, 0, C, 1, 0.1f,
                      1e-5f);
    batchnorm_backward(din[0], dg[0], db[0], dout, in, mean[0], is[0], g, B, C, S, 0, C, 1);
    for (int c0 = 0; c0 < C; c0 += 2) {
        int c1 = c0 + 2 < C ? c0 + 2 : C;
        batchnorm_forward(out[1], mean[1], is[1], rm[1], rv[1], in, g, bt, B, C, S, c0, c1, 1, 0.1f,
                          1e-5f);
        batchnorm_backward(din[1], dg[1], db[1], dout, in, mean[1], is[1], g, B, C, S, c0, c1, 1);
    }
    assert_memory_equal(out[0], out[1], n * sizeof(float));
    assert_memory_equal(din[0], din[1], n * sizeof(float));
    assert_memory_equal(rm[0], rm[1], (size_t)C * sizeof(float));
    assert_memory_equal(rv[0], rv[1], (size_t)C * sizeof(float));
    assert_memory_equal(dg[0], dg[1], (size_t)C * sizeof(float));
    assert_memory_equal(db[0], db[1], (size_t)C * sizeof(float));
    for (int k = 0; k < 2; k++) {
        float *bufs[] = {out[k], din[k], rm[k], rv[k], mean[k], is[k], dg[k], db[k]};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            free(bufs[i]);
    }
    free(in);
    free(dout);
    free(g);
    free(bt);
}

/* The mask: the kept fraction is 1 - p, backward applies forward's mask, a
 * range [first, first + n) draws what the whole tensor does there, another
 * key draws another mask, and p = 0 is the identity. */
static void test_dropout_mask(void **state)
{
    (void)state;
    size_t n = 200000;
    float *x = alloc_floats(n), *y = alloc_floats(n), *d = alloc_floats(n), *part = alloc_floats(n);
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f + (float)(i % 7);
    const float ps[] = {0.1f, 0.25f, 0.5f, 0.9f};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        float p = ps[k];
        dropout_forward(y, x, n, p, 1234, 0);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            int keep = dropout_keeps(p, 1234, i);
            kept += (size_t)keep;
            assert_true(keep ? y[i] == x[i] * (float)(1.0 / (1.0 - p)) : y[i] == 0.0f);
        }
        double frac = (double)kept / (double)n, sd = sqrt(p * (1.0 - p) / (double)n);
        if (fabs(frac - (1.0 - p)) > 5.0 * sd) fail_msg("p %g: kept %.4f", p, frac);
        dropout_backward(d, x, n, p, 1234, 0);
        assert_memory_equal(d, y, n * sizeof *d);
        dropout_forward(part, x + 1000, 5000, p, 1234, 1000);
        assert_memory_equal(part, y + 1000, 5000 * sizeof *part);
        /* an odd start and length: a range that splits a pair of elements */
        dropout_forward(part, x + 1001, 4998, p, 1234, 1001);
        assert_memory_equal(part, y + 1001, 4998 * sizeof *part);
        dropout_forward(part, x + 7, 1, p, 1234, 7);
        assert_memory_equal(part, y + 7, sizeof *part);
        dropout_forward(part, x, n, p, 1235, 0);
        size_t same = 0;
        for (size_t i = 0; i < n; i++)
            same += (part[i] == 0.0f) == (y[i] == 0.0f);
        assert_true(same < n - n / 20); /* another key, another mask */
    }
    dropout_forward(y, x, n, 0.0f, 99, 0);
    assert_memory_equal(y, x, n * sizeof *y);
    /* In place. */
    memcpy(y, x, n * sizeof *y);
    dropout_forward(y, y, n, 0.5f, 5, 0);
    dropout_forward(part, x, n, 0.5f, 5, 0);
    assert_memory_equal(y, part, n * sizeof *y);
    free(x);
    free(y);
    free(d);
    free(part);
}

/* NaN is the maximum of its window and takes the gradient, the first NaN if
 * there are two (torch: val > max || isnan(val)); on the vectorised 2x2
 * path (four windows at a time), its scalar tail, and the general path. */
static void test_maxpool_nan(void **state)
{
    (void)state;
    const int Ws[] = {10, 10, 6};
    const int ks[] = {2, 2, 3};
    for (int k = 0; k < 3; k++) {
        int H = 6, W = Ws[k], K = ks[k], S = K == 2 ? 2 : 3;
        int OH = conv2d_out_size(H, K, S, 0), OW = conv2d_out_size(W, K, S, 0);
        float in[60], din[60], out[30], dout[30];
        for (int i = 0; i < H * W; i++)
            in[i] = (float)(i % 5);
        for (int i = 0; i < OH * OW; i++)
            dout[i] = 1.0f + (float)i;
        /* window (0, 0) gets a NaN after its maximum; window (0, last) two */
        in[W + 1] = NAN;
        int last = (OW - 1) * S;
        in[last + 1] = NAN;
        in[W + last] = NAN;
        if (k == 1) {
            in[0] = 100.0f; /* k 1: the NaN still wins against a larger value */
        }
        maxpool2d_forward(out, in, 1, 1, H, W, K, K, S, 0);
        maxpool2d_backward(din, dout, in, 1, 1, H, W, K, K, S, 0);
        assert_true(isnan(out[0]) && isnan(out[OW - 1]));
        assert_true(din[W + 1] == dout[0] && din[0] == 0.0f);
        assert_true(din[last + 1] == dout[OW - 1] && din[W + last] == 0.0f);
        for (int i = 1; i < OW - 1; i++)
            assert_false(isnan(out[i]));
    }
}

/* A channel far from zero (1000 + noise of 0.01): the variance must come
 * from deviations, not from E[x^2] - E[x]^2, which loses every digit here.
 * Against a double-precision reference of the same floats. */
static void test_batchnorm_offset_channel(void **state)
{
    (void)state;
    enum { B = 5, C = 2, S = 37 };
    static float in[B * C * S], out[B * C * S];
    struct rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < B * C * S; i++)
        in[i] = 1000.0f + 0.01f * (rng_uniform(&r) - 0.5f) + (float)(i % 3) * 0.001f;
    float mean[C], is[C], rm[C], rv[C];
    batchnorm_init(NULL, NULL, rm, rv, C);
    batchnorm_forward(out, mean, is, rm, rv, in, NULL, NULL, B, C, S, 0, C, 1, 0.1f, 1e-5f);
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0, n = (double)B * S;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < S; i++)
                sum += in[(b * C + c) * S + i];
        double mu = sum / n;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < S; i++) {
                double d = in[(b * C + c) * S + i] - mu;
                sq += d * d;
            }
        double want_is = 1.0 / sqrt(sq / n + 1e-5);
        double want_rv = 0.9 + 0.1 * sq / (n - 1.0);
        if (fabs(is[c] - want_is) > 1e-5 * want_is || fabs(rv[c] - want_rv) > 1e-6)
            fail_msg("channel %d: invstd %.9g (want %.9g), running_var %.9g (want %.9g)", c, is[c],
                     want_is, rv[c], want_rv);
        assert_true(fabs(mean[c] - mu) <= 1e-4);
    }
}

static void test_batchnorm_init(void **state)
{
    (void)state;
    float g[3], b[3], rm[3], rv[3];
    memset(g, 0xff, sizeof g);
    batchnorm_init(g, b, rm, rv, 3);
    for (int c = 0; c < 3; c++) {
        assert_true(g[c] == 1.0f && b[c] == 0.0f && rm[c] == 0.0f && rv[c] == 1.0f);
    }
}

/* act_forward_deriv: act_forward's values and a derivative that gives
 * act_backward's gradients (bit for bit for both gelus, which the
 * transformer block uses), over values either side of 0 and 0 itself. */
static void test_act_forward_deriv(void **state)
{
    (void)state;
    enum { N = 67 };
    const enum act_op ops[] = {ACT_OP_RELU, ACT_OP_LEAKY_RELU, ACT_OP_SIGMOID,
                               ACT_OP_TANH, ACT_OP_GELU,       ACT_OP_GELU_TANH};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        float x[N], d[N], out[N], ref[N], dout[N], din[N];
        for (int i = 0; i < N; i++) {
            x[i] = d[i] = (float)(i - N / 2) * 0.173f;
            dout[i] = 1.0f + 0.01f * (float)i;
        }
        act_forward(ref, x, N, ops[k], 0.05f);
        act_backward(din, dout, x, ref, N, ops[k], 0.05f);
        act_forward_deriv(out, d, N, ops[k], 0.05f);
        int gelu = ops[k] == ACT_OP_GELU || ops[k] == ACT_OP_GELU_TANH;
        for (int i = 0; i < N; i++) {
            assert_memory_equal(&out[i], &ref[i], sizeof out[i]);
            float g = dout[i] * d[i];
            if (gelu)
                assert_memory_equal(&g, &din[i], sizeof g);
            else
                assert_true(fabsf(g - din[i]) <= 1e-6f * (1.0f + fabsf(din[i])));
        }
    }
}

static void test_conv2d_out_size(void **state)
{
    (void)state;
    assert_int_equal(conv2d_out_size(28, 3, 1, 1), 28);
    assert_int_equal(conv2d_out_size(28, 2, 2, 0), 14);
    assert_int_equal(conv2d_out_size(7, 3, 2, 1), 4);
    assert_int_equal(conv2d_out_size(2, 3, 1, 0), 0); /* kernel over the input */
    assert_int_equal(conv2d_out_size(5, 3, 0, 0), 0); /* stride 0 */
    assert_int_equal(conv2d_out_size(5, 3, 1, -1), 0);
    assert_int_equal(conv2d_out_size(5, 0, 1, 0), 0);
    assert_int_equal(conv2d_col_floats(32, 14, 14, 3, 3, 1, 1), (size_t)32 * 9 * 196);
    assert_int_equal(conv2d_col_floats(32, 14, 14, 1, 1, 1, 0), 0);
}

/* ---- PyTorch fixtures ---- */

static float *floats_of(json_t *c, const char *key, size_t n)
{
    json_t *arr = json_object_get(c, key);
    if (!json_is_array(arr)) fail_msg("fixture: no array %s", key);
    if (json_array_size(arr) != n)
        fail_msg("fixture: %s has %zu values, want %zu", key, json_array_size(arr), n);
    float *out = alloc_floats(n);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)json_number_value(json_array_get(arr, i));
    return out;
}

static int int_of(json_t *c, const char *key)
{
    json_t *v = json_object_get(c, key);
    if (!json_is_integer(v)) fail_msg("fixture: no integer %s", key);
    return (int)json_integer_value(v);
}

/* Fails unless ours matches torch's key within the stated tolerance;
 * returns the worst absolute error. */
static double compare(const char *name, const char *what, json_t *c, const char *key,
                      const float *ours, size_t n)
{
    float *ref = floats_of(c, key, n);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)ours[i] - ref[i]);
        if (!(err <= TORCH_ABS + TORCH_REL * fabs(ref[i])))
            fail_msg("%s: %s[%zu]: ours %.9g, torch %.9g", name, what, i, ours[i], ref[i]);
        if (err > worst) worst = err;
    }
    free(ref);
    return worst;
}

static size_t prod(json_t *c, const char *key)
{
    json_t *shape = json_object_get(c, key);
    size_t n = 1;
    for (size_t i = 0; i < json_array_size(shape); i++)
        n *= (size_t)json_integer_value(json_array_get(shape, i));
    return n;
}

static double torch_conv2d(json_t *c, const char *name)
{
    int B = int_of(c, "B"), C = int_of(c, "C"), H = int_of(c, "H"), W = int_of(c, "W");
    int O = int_of(c, "O"), KH = int_of(c, "KH"), KW = int_of(c, "KW");
    int stride = int_of(c, "stride"), pad = int_of(c, "pad");
    int bias = json_is_true(json_object_get(c, "has_bias"));
    size_t n_in = (size_t)B * C * H * W, n_out = prod(c, "out_shape"), nw = (size_t)O * C * KH * KW;
    assert_int_equal(n_out, (size_t)B * O * conv2d_out_size(H, KH, stride, pad) *
                                conv2d_out_size(W, KW, stride, pad));
    float *in = floats_of(c, "in", n_in), *w = floats_of(c, "weight", nw);
    float *b = bias ? floats_of(c, "bias", (size_t)O) : NULL;
    float *dout = floats_of(c, "dout", n_out);
    float *out = alloc_floats(n_out), *din = alloc_floats(n_in), *dw = alloc_floats(nw);
    float *db = alloc_floats((size_t)O);
    float *col = alloc_floats(conv2d_col_floats(C, H, W, KH, KW, stride, pad));
    conv2d_forward(out, in, w, b, col, B, C, H, W, O, KH, KW, stride, pad);
    conv2d_backward(din, dw, bias ? db : NULL, dout, in, w, col, B, C, H, W, O, KH, KW, stride,
                    pad);
    double worst = compare(name, "out", c, "out", out, n_out);
    worst = fmax(worst, compare(name, "din", c, "din", din, n_in));
    worst = fmax(worst, compare(name, "dweight", c, "dweight", dw, nw));
    if (bias) worst = fmax(worst, compare(name, "dbias", c, "dbias", db, (size_t)O));
    float *bufs[] = {in, w, b, dout, out, din, dw, db, col};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    return worst;
}

static double torch_pool(json_t *c, const char *name, const char *op)
{
    int B = int_of(c, "B"), C = int_of(c, "C"), H = int_of(c, "H"), W = int_of(c, "W");
    size_t n_in = (size_t)B * C * H * W, n_out = prod(c, "out_shape");
    float *in = floats_of(c, "in", n_in), *dout = floats_of(c, "dout", n_out);
    float *out = alloc_floats(n_out), *din = alloc_floats(n_in);
    if (strcmp(op, "global_avgpool") == 0) {
        assert_int_equal(n_out, (size_t)B * C);
        global_avgpool_forward(out, in, B, C, H * W);
        global_avgpool_backward(din, dout, B, C, H * W);
    } else {
        int KH = int_of(c, "KH"), KW = int_of(c, "KW"), s = int_of(c, "stride"),
            p = int_of(c, "pad");
        assert_int_equal(n_out, (size_t)B * C * conv2d_out_size(H, KH, s, p) *
                                    conv2d_out_size(W, KW, s, p));
        if (strcmp(op, "maxpool") == 0) {
            maxpool2d_forward(out, in, B, C, H, W, KH, KW, s, p);
            maxpool2d_backward(din, dout, in, B, C, H, W, KH, KW, s, p);
        } else {
            avgpool2d_forward(out, in, B, C, H, W, KH, KW, s, p);
            avgpool2d_backward(din, dout, B, C, H, W, KH, KW, s, p);
        }
    }
    double worst = compare(name, "out", c, "out", out, n_out);
    worst = fmax(worst, compare(name, "din", c, "din", din, n_in));
    free(in);
    free(dout);
    free(out);
    free(din);
    return worst;
}

static double torch_batchnorm(json_t *c, const char *name)
{
    int B = int_of(c, "B"), C = int_of(c, "C"), S = int_of(c, "S");
    int training = json_is_true(json_object_get(c, "training"));
    float momentum = (float)json_number_value(json_object_get(c, "momentum"));
    float eps = (float)json_number_value(json_object_get(c, "eps"));
    assert_true(momentum == BATCHNORM_MOMENTUM && eps == BATCHNORM_EPS);
    size_t n = (size_t)B * C * S;
    float *in = floats_of(c, "in", n), *dout = floats_of(c, "dout", n);
    float *g = floats_of(c, "weight", (size_t)C), *bt = floats_of(c, "bias", (size_t)C);
    float *rm = floats_of(c, "running_mean", (size_t)C);
    float *rv = floats_of(c, "running_var", (size_t)C);
    float *out = alloc_floats(n), *din = alloc_floats(n), *mean = alloc_floats((size_t)C);
    float *is = alloc_floats((size_t)C), *dg = alloc_floats((size_t)C);
    float *db = alloc_floats((size_t)C);
    batchnorm_forward(out, mean, is, rm, rv, in, g, bt, B, C, S, 0, C, training, momentum, eps);
    batchnorm_backward(din, dg, db, dout, in, mean, is, g, B, C, S, 0, C, training);
    /* One call is one batch: the caller's count, which torch keeps too. */
    assert_int_equal(int_of(c, "num_batches_tracked"), training ? 1 : 0);
    double worst = compare(name, "out", c, "out", out, n);
    worst = fmax(worst, compare(name, "din", c, "din", din, n));
    worst = fmax(worst, compare(name, "dweight", c, "dweight", dg, (size_t)C));
    worst = fmax(worst, compare(name, "dbias", c, "dbias", db, (size_t)C));
    worst = fmax(worst, compare(name, "running_mean", c, "running_mean_after", rm, (size_t)C));
    worst = fmax(worst, compare(name, "running_var", c, "running_var_after", rv, (size_t)C));
    float *bufs[] = {in, dout, g, bt, rm, rv, out, din, mean, is, dg, db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    return worst;
}

static double torch_activation(json_t *c, const char *name, enum act_op op)
{
    size_t n = prod(c, "in_shape");
    float slope = (float)json_number_value(json_object_get(c, "slope"));
    float *in = floats_of(c, "in", n), *dout = floats_of(c, "dout", n);
    float *out = alloc_floats(n), *din = alloc_floats(n);
    act_forward(out, in, n, op, slope);
    act_backward(din, dout, in, out, n, op, slope);
    double worst = compare(name, "out", c, "out", out, n);
    worst = fmax(worst, compare(name, "din", c, "din", din, n));
    free(in);
    free(dout);
    free(out);
    free(din);
    return worst;
}

static double torch_dropout(json_t *c, const char *name)
{
    float p = (float)json_number_value(json_object_get(c, "p"));
    float scale = (float)json_number_value(json_object_get(c, "scale"));
    float one = 1.0f, y = 0.0f;
    size_t i = 0;
    while (!dropout_keeps(p, 3, i))
        i++;
    dropout_forward(&y, &one, 1, p, 3, i);
    if (y != scale) fail_msg("%s: scale %.9g, torch %.9g", name, y, scale);
    return 0.0;
}

/* The fused softmax cross-entropy head (engine/loss.h) against
 * nn.CrossEntropyLoss(label_smoothing): the mean loss and d loss / d z. */
static double torch_cross_entropy(json_t *c, const char *name)
{
    int B = int_of(c, "B"), K = int_of(c, "K");
    float smoothing = (float)json_number_value(json_object_get(c, "label_smoothing"));
    float *z = floats_of(c, "z", (size_t)B * K), *p = alloc_floats((size_t)B * K);
    float *dz = alloc_floats((size_t)B * K);
    int32_t *y = calloc((size_t)B, sizeof *y);
    assert_non_null(y);
    json_t *ys = json_object_get(c, "y");
    for (int r = 0; r < B; r++)
        y[r] = (int32_t)json_integer_value(json_array_get(ys, (size_t)r));
    loss_outputs(p, z, B, K, NET_LOSS_CROSS_ENTROPY, NET_OUT_LOGITS);
    double loss = loss_value(z, p, y, NULL, B, K, NET_LOSS_CROSS_ENTROPY, smoothing);
    double ref = json_number_value(json_object_get(c, "loss"));
    if (!(fabs(loss - ref) <= TORCH_ABS + TORCH_REL * fabs(ref)))
        fail_msg("%s: loss %.9g, torch %.9g", name, loss, ref);
    loss_grad(dz, p, y, NULL, B, K, NET_LOSS_CROSS_ENTROPY, NET_OUT_LOGITS, smoothing);
    double worst = compare(name, "dz", c, "dz", dz, (size_t)B * K);
    free(z);
    free(p);
    free(dz);
    free(y);
    return fmax(worst, fabs(loss - ref));
}

static double torch_conv2d_init(json_t *c, const char *name)
{
    int C = int_of(c, "C"), O = int_of(c, "O"), KH = int_of(c, "KH"), KW = int_of(c, "KW");
    size_t nw = (size_t)O * C * KH * KW;
    float *w = alloc_floats(nw), *b = alloc_floats((size_t)O);
    struct rng r;
    rng_seed(&r, 1);
    conv2d_init(w, b, C, O, KH, KW, &r);
    double bound = 1.0 / sqrt((double)C * KH * KW), max_w = 0, max_b = 0, sq = 0, sum = 0;
    for (size_t i = 0; i < nw; i++) {
        max_w = fmax(max_w, fabs(w[i]));
        sum += w[i];
        sq += (double)w[i] * w[i];
    }
    for (int o = 0; o < O; o++)
        max_b = fmax(max_b, fabs(b[o]));
    double sd = sqrt(sq / nw - (sum / nw) * (sum / nw));
    double t_max = json_number_value(json_object_get(c, "max_abs_weight"));
    double t_sd = json_number_value(json_object_get(c, "std_weight"));
    double t_max_b = json_number_value(json_object_get(c, "max_abs_bias"));
    /* Same support U(-bound, bound) as torch, same spread. */
    if (max_w > bound || max_w < 0.99 * t_max || t_max > bound * 1.0001)
        fail_msg("%s: max |w| %.6f, torch %.6f, bound %.6f", name, max_w, t_max, bound);
    if (fabs(sd - t_sd) > 0.03 * t_sd) fail_msg("%s: std %.6f, torch %.6f", name, sd, t_sd);
    if (max_b > bound || t_max_b > bound * 1.0001) fail_msg("%s: bias over the bound", name);
    free(w);
    free(b);
    return 0.0;
}

static void torch_case(void **state)
{
    json_t *c = *state;
    const char *op = json_string_value(json_object_get(c, "op"));
    char name[64];
    snprintf(name, sizeof name, "%s #%d", op,
             (int)(intptr_t)json_integer_value(json_object_get(c, "_index")));
    static const struct {
        const char *name;
        enum act_op op;
    } acts[] = {{"relu", ACT_OP_RELU},       {"leaky_relu", ACT_OP_LEAKY_RELU},
                {"sigmoid", ACT_OP_SIGMOID}, {"tanh", ACT_OP_TANH},
                {"gelu", ACT_OP_GELU},       {"gelu_tanh", ACT_OP_GELU_TANH}};
    double worst = -1.0;
    if (strcmp(op, "conv2d") == 0)
        worst = torch_conv2d(c, name);
    else if (strcmp(op, "maxpool") == 0 || strcmp(op, "avgpool") == 0 ||
             strcmp(op, "global_avgpool") == 0)
        worst = torch_pool(c, name, op);
    else if (strncmp(op, "batchnorm", 9) == 0)
        worst = torch_batchnorm(c, name);
    else if (strcmp(op, "dropout") == 0)
        worst = torch_dropout(c, name);
    else if (strcmp(op, "conv2d_init") == 0)
        worst = torch_conv2d_init(c, name);
    else if (strcmp(op, "cross_entropy") == 0)
        worst = torch_cross_entropy(c, name);
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(op, acts[i].name) == 0) worst = torch_activation(c, name, acts[i].op);
    if (worst < 0.0) fail_msg("%s: unknown op in the fixtures", name);
    printf("  torch %-22s max |ours - torch| %.2e\n", name, worst);
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
    size_t n_cases = json_array_size(cases);
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_fd_conv2d),
        cmocka_unit_test(test_fd_pool),
        cmocka_unit_test(test_fd_batchnorm),
        cmocka_unit_test(test_fd_activation_dropout),
        cmocka_unit_test(test_conv2d_split_by_samples),
        cmocka_unit_test(test_batchnorm_split_by_channels),
        cmocka_unit_test(test_dropout_mask),
        cmocka_unit_test(test_maxpool_nan),
        cmocka_unit_test(test_batchnorm_offset_channel),
        cmocka_unit_test(test_batchnorm_init),
        cmocka_unit_test(test_act_forward_deriv),
        cmocka_unit_test(test_conv2d_out_size),
    };
    size_t n_fixed = sizeof fixed / sizeof fixed[0];
    if (n_cases < 30) {
        fprintf(stderr, "%s: %zu cases, expected the full set\n", FIXTURES, n_cases);
        json_decref(fixtures);
        return 1;
    }
    struct CMUnitTest *tests = calloc(n_fixed + n_cases, sizeof *tests);
    char(*names)[48] = calloc(n_cases, sizeof *names);
    if (!tests || !names) return 1;
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < n_cases; i++) {
        json_t *c = json_array_get(cases, i);
        json_object_set_new(c, "_index", json_integer((json_int_t)i));
        snprintf(names[i], sizeof names[i], "torch %s #%zu",
                 json_string_value(json_object_get(c, "op")), i);
        tests[n_fixed + i].name = names[i];
        tests[n_fixed + i].test_func = torch_case;
        tests[n_fixed + i].initial_state = c;
    }
    int rc = _cmocka_run_group_tests("ops_kernels", tests, n_fixed + n_cases, NULL, NULL);
    free(tests);
    free(names);
    json_decref(fixtures);
    return rc;
}
