/* flatten: nn.Flatten. (C, H, W) -> (C H W), the same floats in the same
 * order (NCHW row-major), so forward and backward are copies. */
#include <string.h>

#include "op.h"

static int flatten_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                         size_t errlen)
{
    (void)a, (void)err, (void)errlen;
    *out = (struct shape){1, {(int)shape_size(in)}};
    return 0;
}

static void flatten_forward(const struct op_call *c)
{
    memcpy(c->out, c->in[0], (size_t)c->B * shape_size(&c->node->out) * sizeof *c->out);
}

static void flatten_backward(const struct op_call *c)
{
    if (c->din[0])
        memcpy(c->din[0], c->dout, (size_t)c->B * shape_size(&c->node->out) * sizeof *c->dout);
}

static const struct op_test flatten_tests[] = {
    {"(2, 3, 4)", {0}, {{3, {2, 3, 4}}}, 3, false, 0},
    {"(5)", {0}, {{1, {5}}}, 2, false, 0},
};

const struct op_def op_flatten = {
    .type = "flatten",
    .abbrev = NULL, /* not worth a word in a one-line description */
    .n_inputs = 1,
    .infer = flatten_infer,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .tests = flatten_tests,
    .n_tests = sizeof flatten_tests / sizeof flatten_tests[0],
};
