/* Between images, sequences and heads:
 *   to_sequence: (C, H, W) -> (H W, C), the positions of a feature map as
 *     steps of C features: a vision Transformer's patch embedding is a
 *     conv2d with kernel = stride = the patch, then this (torch:
 *     x.flatten(2).transpose(1, 2));
 *   seq_mean: (T, F) -> (F), the mean over time (a sequence head; torch:
 *     x.mean(1)).
 * Dimensions: B samples, C channels, S = H W positions, T steps, F
 * features. */
#include <string.h>

#include "op.h"

static int to_seq_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                        size_t errlen)
{
    (void)a;
    char s[SHAPE_STR_MAX];
    if (in->n != 3)
        return op_err(err, errlen, "needs a feature map (C, H, W), got %s",
                      shape_str(in, s, sizeof s));
    *out = (struct shape){2, {in->d[1] * in->d[2], in->d[0]}};
    return 0;
}

static void to_seq_forward(const struct op_call *c)
{
    int C = c->node->in[0].d[0], S = c->node->in[0].d[1] * c->node->in[0].d[2];
    for (int b = 0; b < c->B; b++) {
        const float *x = c->in[0] + (size_t)b * C * S;
        float *y = c->out + (size_t)b * C * S;
        for (int ch = 0; ch < C; ch++)
            for (int p = 0; p < S; p++)
                y[(size_t)p * C + ch] = x[(size_t)ch * S + p];
    }
}

static void to_seq_backward(const struct op_call *c)
{
    if (!c->din[0]) return;
    int C = c->node->in[0].d[0], S = c->node->in[0].d[1] * c->node->in[0].d[2];
    for (int b = 0; b < c->B; b++) {
        const float *dy = c->dout + (size_t)b * C * S;
        float *dx = c->din[0] + (size_t)b * C * S;
        for (int ch = 0; ch < C; ch++)
            for (int p = 0; p < S; p++)
                dx[(size_t)ch * S + p] = dy[(size_t)p * C + ch];
    }
}

static const struct op_test to_seq_tests[] = {
    {"(3, 2, 4)", {0}, {{3, {3, 2, 4}}}, 2, false, 0},
    {"(1, 3, 3)", {0}, {{3, {1, 3, 3}}}, 3, false, 0},
};

const struct op_def op_to_sequence = {
    .type = "to_sequence",
    .abbrev = NULL,
    .n_inputs = 1,
    .infer = to_seq_infer,
    .forward = to_seq_forward,
    .backward = to_seq_backward,
    .tests = to_seq_tests,
    .n_tests = sizeof to_seq_tests / sizeof to_seq_tests[0],
};

static int mean_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                      size_t errlen)
{
    (void)a;
    char s[SHAPE_STR_MAX];
    if (in->n != 2)
        return op_err(err, errlen, "needs a sequence (T, features), got %s",
                      shape_str(in, s, sizeof s));
    *out = (struct shape){1, {in->d[1]}};
    return 0;
}

static void mean_forward(const struct op_call *c)
{
    int T = c->node->in[0].d[0], F = c->node->in[0].d[1];
    float inv = 1.0f / (float)T;
    for (int b = 0; b < c->B; b++) {
        const float *x = c->in[0] + (size_t)b * T * F;
        float *y = c->out + (size_t)b * F;
        memset(y, 0, (size_t)F * sizeof *y);
        for (int t = 0; t < T; t++)
            for (int f = 0; f < F; f++)
                y[f] += x[(size_t)t * F + f];
        for (int f = 0; f < F; f++)
            y[f] *= inv;
    }
}

static void mean_backward(const struct op_call *c)
{
    if (!c->din[0]) return;
    int T = c->node->in[0].d[0], F = c->node->in[0].d[1];
    float inv = 1.0f / (float)T;
    for (int b = 0; b < c->B; b++) {
        const float *dy = c->dout + (size_t)b * F;
        float *dx = c->din[0] + (size_t)b * T * F;
        for (int t = 0; t < T; t++)
            for (int f = 0; f < F; f++)
                dx[(size_t)t * F + f] = dy[f] * inv;
    }
}

static const struct op_test mean_tests[] = {
    {"(5, 3)", {0}, {{2, {5, 3}}}, 2, false, 0},
    {"(1, 4)", {0}, {{2, {1, 4}}}, 3, false, 0},
};

const struct op_def op_seq_mean = {
    .type = "seq_mean",
    .abbrev = NULL,
    .n_inputs = 1,
    .infer = mean_infer,
    .forward = mean_forward,
    .backward = mean_backward,
    .tests = mean_tests,
    .n_tests = sizeof mean_tests / sizeof mean_tests[0],
};
