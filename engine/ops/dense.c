/* dense: nn.Linear. x (B, I) -> z (B, O) = x w^T + b; w (O, I), b (O); a
 * sequence (T, I) -> (T, O), every step alike (B T rows).
 * Dimensions: B samples, I inputs, O outputs. (A model that is only a stack
 * of dense layers runs through engine/net.c's threaded fast paths instead;
 * this op is the same layer inside any other model.) */
#include <cblas.h>
#undef I /* complex.h's, from cblas.h */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "op.h"

static int dense_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                       size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 1 && in->n != 2)
        return op_err(err, errlen,
                      "needs flat inputs (features), got %s: add a flatten layer (a sequence "
                      "(T, features) is taken too, step by step)",
                      shape_str(in, s, sizeof s));
    if (a->out < 1) return op_err(err, errlen, "out must be at least 1, got %d", a->out);
    *out = in->n == 2 ? (struct shape){2, {in->d[0], a->out}} : (struct shape){1, {a->out}};
    return 0;
}

static int dense_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int O = n->a.out, I = n->in[0].d[n->in[0].n - 1];
    t[0] = (struct op_tensor){"weight", OP_PARAM, 2, {O, I}};
    if (!n->a.bias) return 1;
    t[1] = (struct op_tensor){"bias", OP_PARAM, 1, {O}};
    return 2;
}

/* nn.Linear.reset_parameters: kaiming_uniform_(a = sqrt 5) gives
 * U(-1/sqrt(I), 1/sqrt(I)) for w, and b takes the same bound. */
static void dense_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    int O = n->a.out, I = n->in[0].d[n->in[0].n - 1];
    float bound = 1.0f / sqrtf((float)I);
    op_uniform(param, (size_t)O * I, bound, r);
    if (n->a.bias) op_uniform(param + (size_t)O * I, (size_t)O, bound, r);
}

/* The team splits each gemm by its output columns, in runs of at least
 * DENSE_MIN_RUN (a cut by rows packs the other operand once per run, and
 * costs 2 to 8 times more on one thread: docs/engine.md, "Threads"). */
#define DENSE_MIN_RUN 64

/* z[:, o0:o1] = x w[o0:o1]^T + b[o0:o1] */
static void dense_forward_range(const struct op_call *c, int o0, int o1, float *scratch, void *ctx)
{
    (void)scratch, (void)ctx;
    const struct shape *in = &c->node->in[0];
    int B = c->B * (in->n == 2 ? in->d[0] : 1), O = c->node->a.out, I = in->d[in->n - 1];
    const float *w = c->param, *b = c->node->a.bias ? c->param + (size_t)O * I : NULL;
    float beta = 0.0f;
    if (b) {
        for (int r = 0; r < B; r++)
            memcpy(c->out + (size_t)r * O + o0, b + o0, (size_t)(o1 - o0) * sizeof *b);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, o1 - o0, I, 1.0f, c->in[0], I,
                w + (size_t)o0 * I, I, beta, c->out + o0, O);
}

static void dense_forward(const struct op_call *c)
{
    op_for_range(c, c->node->a.out, 16, DENSE_MIN_RUN, dense_forward_range, NULL);
}

/* din[:, i0:i1] = dz w[:, i0:i1] and dw[:, i0:i1] += dz^T x[:, i0:i1] */
static void dense_backward_range(const struct op_call *c, int i0, int i1, float *scratch, void *ctx)
{
    (void)scratch, (void)ctx;
    const struct shape *in = &c->node->in[0];
    int B = c->B * (in->n == 2 ? in->d[0] : 1), O = c->node->a.out, I = in->d[in->n - 1];
    if (c->din[0])
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, i1 - i0, O, 1.0f, c->dout, O,
                    c->param + i0, I, 0.0f, c->din[0] + i0, I);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, i1 - i0, B, 1.0f, c->dout, O,
                c->in[0] + i0, I, 1.0f, c->grad + i0, I);
}

static void dense_backward(const struct op_call *c)
{
    const struct shape *in = &c->node->in[0];
    int B = c->B * (in->n == 2 ? in->d[0] : 1), O = c->node->a.out, I = in->d[in->n - 1];
    op_for_range(c, I, 16, DENSE_MIN_RUN, dense_backward_range, NULL);
    if (!c->node->a.bias) return;
    float *db = c->grad + (size_t)O * I;
    for (int r = 0; r < B; r++)
        for (int o = 0; o < O; o++)
            db[o] += c->dout[(size_t)r * O + o];
}

static const struct op_test dense_tests[] = {
    {"3 -> 4", {.out = 4, .bias = true}, {{1, {3}}}, 5, false, 0},
    {"7 -> 2, no bias", {.out = 2, .bias = false}, {{1, {7}}}, 3, false, 0},
    {"one sample", {.out = 5, .bias = true}, {{1, {6}}}, 1, false, 0},
    {"per step (4, 3) -> (4, 2)", {.out = 2, .bias = true}, {{2, {4, 3}}}, 3, false, 0},
};

static const char *const dense_fields[] = {"out", "bias", NULL};

const struct op_def op_dense = {
    .type = "dense",
    .abbrev = "fc",
    .n_inputs = 1,
    .fields = dense_fields,
    .infer = dense_infer,
    .tensors = dense_tensors,
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
    .tests = dense_tests,
    .n_tests = sizeof dense_tests / sizeof dense_tests[0],
};
