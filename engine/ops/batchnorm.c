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
            /* torch: running_var uses the unbiased variance; with one value
             * that is inf/nan, which torch stores as well. */
            double unbiased = n > 1.0 ? sq / (n - 1.0) : NAN;
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
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
