/* Batch norm: nn.BatchNorm1d ((B, C), S = 1) and nn.BatchNorm2d ((B, C, S)
 * with S = H W), per channel over the B S values of that channel.
 *
 * Sums end in double (torch's CPU kernel accumulates float in double), over
 * float partial sums of one plane each, so the statistics agree with
 * torch's to float rounding and the loops still vectorise.
 * Each call handles the channels [c0, c1): channels are independent, so
 * threads split by channel with no reduction and the same bits. */
#include "kernels.h"

#include <math.h>
#include <string.h>

#include "op.h"

/* Sums of one plane: 16 float lanes (vectorised, no latency chain), the
 * lanes and then the planes added in double. A plane's float partial sums
 * cover S / 16 values each, which keeps them near float's rounding. */
#define LANES 16

static double plane_sum(const float *restrict x, int S)
{
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= S; i += LANES)
        for (int j = 0; j < LANES; j++)
            acc[j] += x[i + j];
    double sum = 0.0;
    for (; i < S; i++)
        sum += x[i];
    for (int j = 0; j < LANES; j++)
        sum += acc[j];
    return sum;
}

/* Sum of (x - m)^2. */
static double plane_sqdev(const float *restrict x, float m, int S)
{
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= S; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float d = x[i + j] - m;
            acc[j] += d * d;
        }
    double sum = 0.0;
    for (; i < S; i++) {
        double d = (double)x[i] - m;
        sum += d * d;
    }
    for (int j = 0; j < LANES; j++)
        sum += acc[j];
    return sum;
}

/* Sum of dy and of dy (x - m). */
static void plane_dy_dot(const float *restrict dy, const float *restrict x, float m, int S,
                         double *sum, double *dot)
{
    float as[LANES] = {0}, ad[LANES] = {0};
    int i = 0;
    for (; i + LANES <= S; i += LANES)
        for (int j = 0; j < LANES; j++) {
            as[j] += dy[i + j];
            ad[j] += dy[i + j] * (x[i + j] - m);
        }
    double s = 0.0, d = 0.0;
    for (; i < S; i++) {
        s += dy[i];
        d += (double)dy[i] * ((double)x[i] - m);
    }
    for (int j = 0; j < LANES; j++) {
        s += as[j];
        d += ad[j];
    }
    *sum += s;
    *dot += d;
}

/* The value at (sample s, channel c, position i). */
#define AT(x, s, c, i) ((x)[((size_t)(s)*C + (size_t)(c)) * S + (size_t)(i)])

void batchnorm_forward(float *out, float *mean, float *invstd, float *running_mean,
                       float *running_var, const float *in, const float *gamma, const float *beta,
                       int B, int C, int S, int c0, int c1, int training, float momentum, float eps)
{
    double n = (double)B * S;
    for (int c = c0; c < c1; c++) {
        double mu, var;
        if (training) {
            double sum = 0.0;
            for (int s = 0; s < B; s++)
                sum += plane_sum(&AT(in, s, c, 0), S);
            mu = sum / n;
            /* Deviations from the float mean: the two-pass variance, which
             * does not cancel as E[x^2] - E[x]^2 would. */
            float mf = (float)mu;
            double sq = 0.0;
            for (int s = 0; s < B; s++)
                sq += plane_sqdev(&AT(in, s, c, 0), mf, S);
            double shift = mu - mf; /* the mean's rounding, put back */
            sq -= n * shift * shift;
            if (sq < 0.0) sq = 0.0;
            var = sq / n;
            /* torch refuses to train on one value per channel (no unbiased
             * variance); here such a batch (a last batch of one sample in
             * BatchNorm1d) leaves the running statistics as they were
             * rather than storing a NaN that evaluation would then use. */
            if (n > 1.0) {
                double unbiased = sq / (n - 1.0);
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
        } else {
            mu = running_mean[c];
            var = running_var[c];
        }
        float is = (float)(1.0 / sqrt(var + eps));
        float m = (float)mu;
        mean[c] = m;
        invstd[c] = is;
        float g = gamma ? gamma[c] : 1.0f, bt = beta ? beta[c] : 0.0f;
        /* out = (x - mean) invstd gamma + beta, as torch: one scale, one shift. */
        float scale = is * g, shift = bt - m * scale;
        for (int s = 0; s < B; s++) {
            const float *x = &AT(in, s, c, 0);
            float *y = &AT(out, s, c, 0);
            for (int i = 0; i < S; i++)
                y[i] = x[i] * scale + shift;
        }
    }
}

void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *invstd, const float *gamma, int B, int C,
                        int S, int c0, int c1, int training)
{
    double n = (double)B * S;
    for (int c = c0; c < c1; c++) {
        float m = mean[c];
        double sum = 0.0, dot = 0.0; /* sum dy, sum dy (x - mean) */
        for (int s = 0; s < B; s++)
            plane_dy_dot(&AT(dout, s, c, 0), &AT(in, s, c, 0), m, S, &sum, &dot);
        float is = invstd[c];
        if (dgamma) dgamma[c] += (float)(dot * is);
        if (dbeta) dbeta[c] += (float)sum;
        if (!din) continue;
        float g = gamma ? gamma[c] : 1.0f;
        float wis = g * is;
        if (!training) {
            for (int s = 0; s < B; s++) {
                const float *dy = &AT(dout, s, c, 0);
                float *dx = &AT(din, s, c, 0);
                for (int i = 0; i < S; i++)
                    dx[i] = dy[i] * wis;
            }
            continue;
        }
        /* din = (dy - mean(dy) - (x - mean) invstd^2 mean(dy (x - mean))) gamma invstd */
        float grad_mean = (float)(sum / n);
        float proj = (float)(dot * (double)is * is / n);
        for (int s = 0; s < B; s++) {
            const float *x = &AT(in, s, c, 0);
            const float *dy = &AT(dout, s, c, 0);
            float *dx = &AT(din, s, c, 0);
            for (int i = 0; i < S; i++)
                dx[i] = (dy[i] - grad_mean - (x[i] - m) * proj) * wis;
        }
    }
}

void batchnorm_init(float *gamma, float *beta, float *running_mean, float *running_var, int C)
{
    for (int c = 0; c < C; c++) {
        if (gamma) gamma[c] = 1.0f;
        if (beta) beta[c] = 0.0f;
        running_mean[c] = 0.0f;
        running_var[c] = 1.0f;
    }
}

/* ---- the op: nn.BatchNorm1d on (F) inputs, nn.BatchNorm2d on (C, H, W);
 * params weight (C), bias (C); state running_mean (C), running_var (C),
 * num_batches_tracked (one float, counting training batches as torch's
 * int64 does, exactly up to 2^24; see BN_COUNTS_BATCHES); saved: the mean and invstd (C each) that
 * forward normalised with. ---- */

static int bn_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                    size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 1 && in->n != 3)
        return op_err(err, errlen, "needs (F) or (C, H, W) inputs, got %s",
                      shape_str(in, s, sizeof s));
    if (!(a->momentum >= 0.0f && a->momentum <= 1.0f))
        return op_err(err, errlen, "momentum must be in [0, 1], got %g", (double)a->momentum);
    if (!(a->eps > 0.0f))
        return op_err(err, errlen, "eps must be positive, got %g", (double)a->eps);
    *out = *in;
    return 0;
}

static int bn_channels(const struct op_node *n)
{
    return n->in[0].d[0];
}

static int bn_spatial(const struct op_node *n)
{
    return n->in[0].n == 3 ? n->in[0].d[1] * n->in[0].d[2] : 1;
}

/* torch's state_dict has five tensors per batch norm; num_batches_tracked
 * joins the table once op.h allows five tensors a node (it allows four). */
#define BN_COUNTS_BATCHES (OP_MAX_TENSORS >= 5)

static int bn_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int C = bn_channels(n);
    t[0] = (struct op_tensor){"weight", OP_PARAM, 1, {C}};
    t[1] = (struct op_tensor){"bias", OP_PARAM, 1, {C}};
    t[2] = (struct op_tensor){"running_mean", OP_STATE, 1, {C}};
    t[3] = (struct op_tensor){"running_var", OP_STATE, 1, {C}};
#if BN_COUNTS_BATCHES
    t[4] = (struct op_tensor){"num_batches_tracked", OP_STATE, 0, {0}};
    return 5;
#else
    return 4;
#endif
}

static void bn_op_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)r;
    int C = bn_channels(n);
    batchnorm_init(param, param + C, state, state + C, C);
    if (BN_COUNTS_BATCHES) state[2 * C] = 0.0f;
}

static size_t bn_saved(const struct op_node *n, int B)
{
    (void)B;
    return 2 * (size_t)bn_channels(n);
}

static void bn_op_forward(const struct op_call *c)
{
    const struct op_node *n = c->node;
    int C = bn_channels(n);
    batchnorm_forward(c->out, c->saved, c->saved + C, c->state, c->state + C, c->in[0], c->param,
                      c->param + C, c->B, C, bn_spatial(n), 0, C, c->training, n->a.momentum,
                      n->a.eps);
    if (BN_COUNTS_BATCHES && c->training) c->state[2 * C] += 1.0f;
}

static void bn_op_backward(const struct op_call *c)
{
    const struct op_node *n = c->node;
    int C = bn_channels(n);
    batchnorm_backward(c->din[0], c->grad, c->grad + C, c->dout, c->in[0], c->saved, c->saved + C,
                       c->param, c->B, C, bn_spatial(n), 0, C, c->training);
}

static const char *const bn_fields[] = {"momentum", "eps", NULL};

#define BN                                                                                         \
    {                                                                                              \
        .momentum = 0.1f, .eps = 1e-5f                                                             \
    }
static const struct op_test bn_tests[] = {
    {"2d, training", BN, {{3, {3, 4, 3}}}, 3, false, 0},
    {"2d, evaluation", BN, {{3, {3, 4, 3}}}, 3, true, 0},
    {"2d, one sample, training", BN, {{3, {2, 3, 4}}}, 1, false, 0},
    {"1d, training", BN, {{1, {4}}}, 6, false, 0},
    {"1d, evaluation", BN, {{1, {4}}}, 6, true, 0},
};
#undef BN

const struct op_def op_batchnorm = {
    .type = "batchnorm",
    .abbrev = "bn",
    .n_inputs = 1,
    .fields = bn_fields,
    .infer = bn_infer,
    .tensors = bn_tensors,
    .init = bn_op_init,
    .saved = bn_saved,
    .forward = bn_op_forward,
    .backward = bn_op_backward,
    .tests = bn_tests,
    .n_tests = sizeof bn_tests / sizeof bn_tests[0],
};
