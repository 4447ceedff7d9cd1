/* add: the residual sum out = in[0] + in[1] of a branch and its shortcut
 * (identity, or a projection when the shapes differ), the same shape. */
#include <string.h>

#include "op.h"

static int add_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                     size_t errlen)
{
    (void)a;
    char s0[SHAPE_STR_MAX], s1[SHAPE_STR_MAX];
    if (!shape_equal(&in[0], &in[1]))
        return op_err(err, errlen,
                      "the branch's output %s differs from the shortcut's %s: give the block a "
                      "projection",
                      shape_str(&in[0], s0, sizeof s0), shape_str(&in[1], s1, sizeof s1));
    *out = in[0];
    return 0;
}

static void add_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    size_t n = (size_t)c->B * shape_size(&c->node->out);
    const float *restrict x = c->in[0], *restrict y = c->in[1];
    float *restrict z = c->out;
    for (size_t i = 0; i < n; i++)
        z[i] = x[i] + y[i];
}

static void add_forward(const struct op_call *c)
{
    op_for_samples(c, false, add_forward_part, NULL);
}

static void add_backward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    size_t n = (size_t)c->B * shape_size(&c->node->out);
    for (int i = 0; i < 2; i++)
        if (c->din[i]) memcpy(c->din[i], c->dout, n * sizeof *c->dout);
}

static void add_backward(const struct op_call *c)
{
    op_for_samples(c, false, add_backward_part, NULL);
}

static const struct op_test add_tests[] = {
    {"(3, 2, 2) + (3, 2, 2)", {0}, {{3, {3, 2, 2}}, {3, {3, 2, 2}}}, 2, false, 0},
    {"(4) + (4)", {0}, {{1, {4}}, {1, {4}}}, 3, false, 0},
};

const struct op_def op_add = {
    .type = "add",
    .abbrev = "add",
    .n_inputs = 2,
    .infer = add_infer,
    .forward = add_forward,
    .backward = add_backward,
    .tests = add_tests,
    .n_tests = sizeof add_tests / sizeof add_tests[0],
};
