/* Activations as element-wise kernels, with torch's formulas (CPU, float):
 * relu, leaky_relu, sigmoid 1 / (1 + e^-x), tanh, gelu exact
 * x (1 + erf(x / sqrt 2)) / 2 and gelu with approximate='tanh'. One switch
 * per call, plain loops inside. GELU's erf and tanh are vmath.h's: the
 * loops vectorise, and erf is the approximation torch's own vectorised
 * kernel uses. */
#include "kernels.h"

#include <math.h>

#include "op.h"
#include "vmath.h"

#define GELU_SQRT1_2 0.70710678118654752440f
/* gelu': exp(-x^2 / 2) / sqrt(2 pi) */
#define GELU_PDF_SCALE 0.39894228040143267794f
/* gelu tanh: sqrt(2 / pi) and the cubic's coefficient */
#define GELU_BETA 0.79788456080286535588f
#define GELU_KAPPA 0.044715f

VM_CLONES void act_forward(float *out, const float *in, size_t n, enum act_op op, float slope)
{
    switch (op) {
    case ACT_OP_RELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x > 0.0f ? x : 0.0f;
        }
        break;
    case ACT_OP_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x > 0.0f ? x : x * slope;
        }
        break;
    case ACT_OP_SIGMOID:
        for (size_t i = 0; i < n; i++)
            out[i] = 1.0f / (1.0f + expf(-in[i]));
        break;
    case ACT_OP_TANH:
        for (size_t i = 0; i < n; i++)
            out[i] = tanhf(in[i]);
        break;
    case ACT_OP_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x * 0.5f * (1.0f + vm_erff(x * GELU_SQRT1_2));
        }
        break;
    case ACT_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float inner = GELU_BETA * (x + GELU_KAPPA * x * x * x);
            out[i] = 0.5f * x * (1.0f + vm_tanhf(inner));
        }
        break;
    }
}

VM_CLONES void act_backward(float *din, const float *dout, const float *in, const float *out,
                            size_t n, enum act_op op, float slope)
{
    switch (op) {
    /* dout is loaded whatever the sign so that the selects become blends:
     * a branch on the sign of noisy activations mispredicts half the time. */
    case ACT_OP_RELU:
        for (size_t i = 0; i < n; i++) {
            float d = dout[i];
            din[i] = in[i] > 0.0f ? d : 0.0f;
        }
        break;
    case ACT_OP_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) {
            float d = dout[i];
            din[i] = in[i] > 0.0f ? d : d * slope;
        }
        break;
    case ACT_OP_SIGMOID:
        for (size_t i = 0; i < n; i++)
            din[i] = dout[i] * (1.0f - out[i]) * out[i];
        break;
    case ACT_OP_TANH:
        for (size_t i = 0; i < n; i++)
            din[i] = dout[i] * (1.0f - out[i] * out[i]);
        break;
    case ACT_OP_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float e; /* e^(-x^2 / 2), erf's and the density's */
            float cdf = 0.5f * (1.0f + vm_erff_e(x * GELU_SQRT1_2, &e));
            float pdf = e * GELU_PDF_SCALE;
            din[i] = dout[i] * (cdf + x * pdf);
        }
        break;
    case ACT_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float x_sq = x * x;
            float inner = GELU_BETA * (x + GELU_KAPPA * x_sq * x);
            float t = vm_tanhf(inner);
            float left = 0.5f * x, right = 1.0f + t;
            float left_derivative = 0.5f * right;
            float right_derivative =
                left * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x_sq);
            din[i] = dout[i] * (left_derivative + right_derivative);
        }
        break;
    }
}

/* ---- the ops: nn.ReLU, nn.LeakyReLU(negative_slope), nn.Sigmoid,
 * nn.Tanh, nn.GELU(approximate), one row each; any shape in, the same out.
 * Backward reads the op's input and output, both kept by the model. ---- */

extern const struct op_def op_relu, op_leaky_relu, op_sigmoid, op_tanh, op_gelu;

static enum act_op act_of(const struct op_node *n)
{
    if (n->op == &op_leaky_relu) return ACT_OP_LEAKY_RELU;
    if (n->op == &op_sigmoid) return ACT_OP_SIGMOID;
    if (n->op == &op_tanh) return ACT_OP_TANH;
    if (n->op == &op_gelu) return n->a.approximate ? ACT_OP_GELU_TANH : ACT_OP_GELU;
    return ACT_OP_RELU;
}

static int act_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                     size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    *out = *in;
    return 0;
}

static void act_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    const struct op_node *n = c->node;
    act_forward(c->out, c->in[0], (size_t)c->B * shape_size(&n->out), act_of(n),
                n->a.negative_slope);
}

static void act_op_forward(const struct op_call *c)
{
    op_for_samples(c, false, act_forward_part, NULL);
}

static void act_backward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    const struct op_node *n = c->node;
    act_backward(c->din[0], c->dout, c->in[0], c->out, (size_t)c->B * shape_size(&n->out),
                 act_of(n), n->a.negative_slope);
}

static void act_op_backward(const struct op_call *c)
{
    if (c->din[0]) op_for_samples(c, false, act_backward_part, NULL);
}

static const char *const leaky_fields[] = {"negative_slope", NULL};
static const char *const gelu_fields[] = {"approximate", NULL};

/* The difference step (1e-3) across relu's kink at 0 would be wrong by
 * design; these inputs (the test's seed) have no value that near 0. */
static const struct op_test relu_tests[] = {
    {"(2, 3, 3)", {0}, {{3, {2, 3, 3}}}, 2, false, 0},
    {"(7)", {0}, {{1, {7}}}, 3, false, 0},
};
static const struct op_test leaky_tests[] = {
    {"slope 0.01", {.negative_slope = 0.01f}, {{3, {2, 3, 3}}}, 2, false, 0},
    {"slope 0.3", {.negative_slope = 0.3f}, {{1, {7}}}, 3, false, 0},
};
static const struct op_test smooth_tests[] = {
    {"(2, 3, 3)", {0}, {{3, {2, 3, 3}}}, 2, false, 0},
    {"(7)", {0}, {{1, {7}}}, 3, false, 0},
};
static const struct op_test gelu_tests[] = {
    {"exact", {.approximate = false}, {{3, {2, 3, 3}}}, 2, false, 0},
    {"tanh", {.approximate = true}, {{1, {7}}}, 3, false, 0},
};

#define ACT_OP(name, fields_, tests_)                                                              \
    const struct op_def op_##name = {                                                              \
        .type = #name,                                                                             \
        .abbrev = NULL, /* the one-line description names the weighted layers */                   \
        .n_inputs = 1,                                                                             \
        .fields = fields_,                                                                         \
        .infer = act_infer,                                                                        \
        .forward = act_op_forward,                                                                 \
        .backward = act_op_backward,                                                               \
        .tests = tests_,                                                                           \
        .n_tests = sizeof tests_ / sizeof tests_[0],                                               \
    }

ACT_OP(relu, NULL, relu_tests);
ACT_OP(leaky_relu, leaky_fields, leaky_tests);
ACT_OP(sigmoid, NULL, smooth_tests);
ACT_OP(tanh, NULL, smooth_tests);
ACT_OP(gelu, gelu_fields, gelu_tests);

VM_CLONES void act_forward_deriv(float *restrict out, float *restrict x, size_t n, enum act_op op,
                                 float slope)
{
    switch (op) {
    case ACT_OP_RELU:
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            out[i] = v > 0.0f ? v : 0.0f;
            x[i] = v > 0.0f ? 1.0f : 0.0f;
        }
        break;
    case ACT_OP_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            out[i] = v > 0.0f ? v : v * slope;
            x[i] = v > 0.0f ? 1.0f : slope;
        }
        break;
    case ACT_OP_SIGMOID:
        for (size_t i = 0; i < n; i++) {
            float y = 1.0f / (1.0f + expf(-x[i]));
            out[i] = y;
            x[i] = (1.0f - y) * y;
        }
        break;
    case ACT_OP_TANH:
        for (size_t i = 0; i < n; i++) {
            float y = tanhf(x[i]);
            out[i] = y;
            x[i] = 1.0f - y * y;
        }
        break;
    case ACT_OP_GELU: /* act_forward's value, act_backward's derivative */
        for (size_t i = 0; i < n; i++) {
            float v = x[i], e;
            float erf = vm_erff_e(v * GELU_SQRT1_2, &e);
            out[i] = v * 0.5f * (1.0f + erf);
            x[i] = 0.5f * (1.0f + erf) + v * (e * GELU_PDF_SCALE);
        }
        break;
    case ACT_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) { /* the two passes' inner differ in rounding */
            float v = x[i], x_sq = v * v;
            out[i] = 0.5f * v * (1.0f + vm_tanhf(GELU_BETA * (v + GELU_KAPPA * v * v * v)));
            float t = vm_tanhf(GELU_BETA * (v + GELU_KAPPA * x_sq * v));
            float left = 0.5f * v, right = 1.0f + t;
            x[i] = 0.5f * right +
                   left * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x_sq);
        }
        break;
    }
}
