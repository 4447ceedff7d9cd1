#include "loss.h"

#include <math.h>
#include <string.h>

#include "ops/vmath.h"

/* Row-wise softmax, shifted by the row max so exp never overflows; exp,
 * max and sum vectorised (vmath.h: a character model's 256-way head at
 * every step called expf 1M times a batch). */
VM_CLONES static void softmax_rows(float *restrict p, const float *restrict z, int B, int K)
{
    for (int r = 0; r < B; r++) {
        const float *zr = z + (size_t)r * K;
        float *pr = p + (size_t)r * K;
        float mx = vm_max(zr, K);
        for (int k = 0; k < K; k++)
            pr[k] = vm_expf(zr[k] - mx);
        float inv = 1.0f / vm_sum(pr, K);
        for (int k = 0; k < K; k++)
            pr[k] *= inv;
    }
}

void loss_outputs(float *p, const float *z, int B, int K, enum net_loss loss,
                  enum net_output output)
{
    size_t n = (size_t)B * (size_t)K;
    if (loss == NET_LOSS_CROSS_ENTROPY)
        softmax_rows(p, z, B, K);
    else if (output == NET_OUT_SIGMOID)
        for (size_t i = 0; i < n; i++)
            p[i] = 1.0f / (1.0f + expf(-z[i]));
    else if (p != z)
        memcpy(p, z, n * sizeof *p);
}

double loss_value(const float *z, const float *p, const int32_t *y_class, const float *y, int B,
                  int K, enum net_loss loss, float smoothing)
{
    double total = 0.0;
    if (loss == NET_LOSS_CROSS_ENTROPY) {
        /* From the logits in double: -log softmax = logsumexp(z) - z_y; with
         * smoothing, that mixed with the mean over k of logsumexp(z) - z_k. */
        double eps = smoothing;
        for (int r = 0; r < B; r++) {
            const float *zr = z + (size_t)r * K;
            if (y_class[r] < 0 || y_class[r] >= K) return NAN;
            double mx = zr[0], zsum = 0.0;
            for (int k = 1; k < K; k++)
                mx = zr[k] > mx ? zr[k] : mx;
            double sum = 0.0;
            for (int k = 0; k < K; k++) {
                sum += exp((double)zr[k] - mx);
                zsum += zr[k];
            }
            double lse = log(sum) + mx;
            total += (1.0 - eps) * (lse - (double)zr[y_class[r]]);
            if (eps > 0) total += eps * (lse - zsum / K);
        }
        return total / B;
    }
    size_t n = (size_t)B * (size_t)K;
    for (size_t i = 0; i < n; i++) {
        double d = (double)p[i] - (double)y[i];
        total += d * d;
    }
    return total / (double)n;
}

void loss_grad(float *restrict d, const float *restrict p, const int32_t *y_class, const float *y,
               int B, int K, enum net_loss loss, enum net_output output, float smoothing)
{
    size_t n = (size_t)B * (size_t)K;
    if (loss == NET_LOSS_CROSS_ENTROPY) {
        /* Fused softmax + cross-entropy: (p - target) / B, target =
         * (1 - smoothing) onehot(y) + smoothing / K. */
        float scale = 1.0f / (float)B;
        float uniform = smoothing / (float)K * scale, hit = (1.0f - smoothing) * scale;
        for (size_t i = 0; i < n; i++)
            d[i] = p[i] * scale - uniform;
        for (int r = 0; r < B; r++)
            if (y_class[r] >= 0 && y_class[r] < K) /* the loader rejects others */
                d[(size_t)r * K + y_class[r]] -= hit;
        return;
    }
    float scale = 2.0f / (float)n;
    for (size_t i = 0; i < n; i++)
        d[i] = (p[i] - y[i]) * scale;
    if (output == NET_OUT_SIGMOID)
        for (size_t i = 0; i < n; i++)
            d[i] *= p[i] * (1.0f - p[i]);
}

int loss_correct(const float *z, const int32_t *y_class, int B, int K)
{
    /* Arg max of the logits: softmax is monotone but may round two apart
     * logits to the same probability. */
    int correct = 0;
    for (int r = 0; r < B; r++) {
        const float *zr = z + (size_t)r * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (zr[k] > zr[best]) best = k;
        correct += best == y_class[r];
    }
    return correct;
}
