/* Batch norm: nn.BatchNorm1d ((B, C), S = 1) and nn.BatchNorm2d ((B, C, S)
 * with S = H W), per channel over the B S values of that channel.
 *
 * Sums end in double (torch's CPU kernel accumulates float in double), over
 * float partial sums of one plane each in SSE registers, so the statistics
 * agree with torch's to float rounding at memory speed.
 * Each call handles the channels [c0, c1): channels are independent, so
 * threads split by channel with no reduction and the same bits. */
#include "kernels.h"

#include <emmintrin.h>
#include <math.h>
#include <string.h>

#include "op.h"

/* Sums over one plane in four SSE accumulators (16 float lanes, no chain
 * of dependent adds), the lanes then added in double. A lane sums S / 16
 * values of the plane, which keeps it near float's rounding. */
static double lanes_sum(__m128 a, __m128 b, __m128 c, __m128 d)
{
    float l[4];
    _mm_storeu_ps(l, _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d)));
    return ((double)l[0] + l[1]) + ((double)l[2] + l[3]);
}

/* Sum of x - p: about a pivot p near the values (the plane's first), the
 * float lanes add deviations, not magnitudes, and keep their digits on a
 * channel far from 0. */
static double plane_sum_about(const float *restrict x, float p, int S)
{
    __m128 pv = _mm_set1_ps(p), a = _mm_setzero_ps(), b = a, c = a, d = a;
    int i = 0;
    for (; i + 16 <= S; i += 16) {
        a = _mm_add_ps(a, _mm_sub_ps(_mm_loadu_ps(x + i), pv));
        b = _mm_add_ps(b, _mm_sub_ps(_mm_loadu_ps(x + i + 4), pv));
        c = _mm_add_ps(c, _mm_sub_ps(_mm_loadu_ps(x + i + 8), pv));
        d = _mm_add_ps(d, _mm_sub_ps(_mm_loadu_ps(x + i + 12), pv));
    }
    double sum = lanes_sum(a, b, c, d);
    for (; i < S; i++)
        sum += (double)x[i] - p;
    return sum;
}

/* Sum of (x - m)^2. */
static double plane_sqdev(const float *restrict x, float m, int S)
{
    __m128 mv = _mm_set1_ps(m), a = _mm_setzero_ps(), b = a, c = a, d = a;
    int i = 0;
    for (; i + 16 <= S; i += 16) {
        __m128 e = _mm_sub_ps(_mm_loadu_ps(x + i), mv), f = _mm_sub_ps(_mm_loadu_ps(x + i + 4), mv);
        __m128 g = _mm_sub_ps(_mm_loadu_ps(x + i + 8), mv);
        __m128 h = _mm_sub_ps(_mm_loadu_ps(x + i + 12), mv);
        a = _mm_add_ps(a, _mm_mul_ps(e, e));
        b = _mm_add_ps(b, _mm_mul_ps(f, f));
        c = _mm_add_ps(c, _mm_mul_ps(g, g));
        d = _mm_add_ps(d, _mm_mul_ps(h, h));
    }
    double sum = lanes_sum(a, b, c, d);
    for (; i < S; i++) {
        double e = (double)x[i] - m;
        sum += e * e;
    }
    return sum;
}

/* The plane's mean and its sum of squared deviations from that mean.
 * The second pass reads the plane again while it is in L1 (3 KB for 28x28),
 * so the channel's statistics cost one pass over memory; the planes are
 * then combined exactly (Chan et al.), which is as accurate as two passes
 * over the whole channel. */
static void plane_moments(const float *restrict x, int S, double *mean, double *m2)
{
    *mean = x[0] + plane_sum_about(x, x[0], S) / S;
    float mf = (float)*mean;
    double shift = *mean - mf; /* the float mean's rounding, put back */
    *m2 = plane_sqdev(x, mf, S) - S * shift * shift;
    if (*m2 < 0.0) *m2 = 0.0;
}

/* Sum of dy and of dy (x - m). */
static void plane_dy_dot(const float *restrict dy, const float *restrict x, float m, int S,
                         double *sum, double *dot)
{
    __m128 mv = _mm_set1_ps(m), s0 = _mm_setzero_ps(), s1 = s0, d0 = s0, d1 = s0;
    int i = 0;
    for (; i + 8 <= S; i += 8) {
        __m128 ya = _mm_loadu_ps(dy + i), yb = _mm_loadu_ps(dy + i + 4);
        s0 = _mm_add_ps(s0, ya);
        s1 = _mm_add_ps(s1, yb);
        d0 = _mm_add_ps(d0, _mm_mul_ps(ya, _mm_sub_ps(_mm_loadu_ps(x + i), mv)));
        d1 = _mm_add_ps(d1, _mm_mul_ps(yb, _mm_sub_ps(_mm_loadu_ps(x + i + 4), mv)));
    }
    __m128 z = _mm_setzero_ps();
    double sv = lanes_sum(s0, s1, z, z), dv = lanes_sum(d0, d1, z, z);
    for (; i < S; i++) {
        sv += dy[i];
        dv += (double)dy[i] * ((double)x[i] - m);
    }
    *sum += sv;
    *dot += dv;
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
            /* Deviations from the mean, combined plane by plane: no
             * cancellation as in E[x^2] - E[x]^2. */
            double na = 0.0, sq = 0.0;
            mu = 0.0;
            for (int s = 0; s < B; s++) {
                double mean_b, m2_b;
                plane_moments(&AT(in, s, c, 0), S, &mean_b, &m2_b);
                double delta = mean_b - mu, nn = na + S;
                mu += delta * S / nn;
                sq += m2_b + delta * delta * na * S / nn;
                na = nn;
            }
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
 * num_batches_tracked (one float, counting training forward passes as
 * torch's int64 does, exactly up to 2^24); saved: the mean and invstd (C
 * each) that forward normalised with. ---- */

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

static int bn_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int C = bn_channels(n);
    t[0] = (struct op_tensor){"weight", OP_PARAM, 1, {C}};
    t[1] = (struct op_tensor){"bias", OP_PARAM, 1, {C}};
    t[2] = (struct op_tensor){"running_mean", OP_STATE, 1, {C}};
    t[3] = (struct op_tensor){"running_var", OP_STATE, 1, {C}};
    t[4] = (struct op_tensor){"num_batches_tracked", OP_STATE, 0, {0}};
    return 5;
}

static void bn_op_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)r;
    int C = bn_channels(n);
    batchnorm_init(param, param + C, state, state + C, C);
    state[2 * C] = 0.0f;
}

static size_t bn_saved(const struct op_node *n, int B)
{
    (void)B;
    return 2 * (size_t)bn_channels(n);
}

/* Statistics span the batch, so the team splits by channel: each
 * channel's sums run whole on one thread, the same on any team. */
static void bn_forward_range(const struct op_call *c, int c0, int c1, float *scratch, void *ctx)
{
    (void)scratch, (void)ctx;
    const struct op_node *n = c->node;
    int C = bn_channels(n);
    batchnorm_forward(c->out, c->saved, c->saved + C, c->state, c->state + C, c->in[0], c->param,
                      c->param + C, c->B, C, bn_spatial(n), c0, c1, c->training, n->a.momentum,
                      n->a.eps);
}

static void bn_op_forward(const struct op_call *c)
{
    const struct op_node *n = c->node;
    int C = bn_channels(n);
    op_for_range(c, C, 1, 1, bn_forward_range, NULL);
    if (c->training) c->state[2 * C] += 1.0f;
}

static void bn_backward_range(const struct op_call *c, int c0, int c1, float *scratch, void *ctx)
{
    (void)scratch, (void)ctx;
    const struct op_node *n = c->node;
    int C = bn_channels(n);
    batchnorm_backward(c->din[0], c->grad, c->grad + C, c->dout, c->in[0], c->saved, c->saved + C,
                       c->param, c->B, C, bn_spatial(n), c0, c1, c->training);
}

static void bn_op_backward(const struct op_call *c)
{
    op_for_range(c, bn_channels(c->node), 1, 1, bn_backward_range, NULL);
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
