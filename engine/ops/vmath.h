/* exp and erf in plain float arithmetic, without a call, so that GCC
 * vectorises the loops that use them (the gates of an LSTM step, a
 * softmax row, GELU); a loop calling libm's expf or erff runs one element
 * at a time, and those calls were a fifth of an LSTM step and of a
 * Transformer block.
 *
 * No FMA and no table: every lane and the scalar tail compute the same
 * operations in the same order, so a vectorised loop gives the bits of a
 * scalar one, whatever its alignment or length. */
#ifndef MLQ_OPS_VMATH_H
#define MLQ_OPS_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* On a function whose loops use these: an AVX-512 copy (16 lanes) and an
 * AVX2 one (8), chosen at load time by what the CPU has. The engine builds
 * with -ffp-contract=off (AVX-512F brings FMA, AVX2 alone does not), so
 * every copy rounds alike: an LSTM's gate loops took 30% fewer cycles in
 * the AVX-512 copy on Zen 4 than in the AVX2 one, with the same bits. */
#if defined(__clang__)
/* clang 14 (Debian 12's, for the fuzz build) emits no resolvers for them. */
#define VM_CLONES
#else
#define VM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

/* e^x within 2 ulp of 1 of expf (Cephes' polynomial on the reduced
 * argument, Cody and Waite's two-part ln 2). x below -87.3 gives 0, above
 * 88.3 infinity, NaN NaN. */
static inline float vm_expf(float x)
{
    /* one unconditional compare each: a compare that runs only when
     * another failed may trap (-ftrapping-math) and stops if-conversion */
    float xc = x < -87.3f ? -87.3f : x;
    xc = xc > 88.3f ? 88.3f : xc;
    /* n = round(x / ln 2): adding 1.5 2^23 rounds to an integer */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < -87.3f ? 0.0f : y;
    return x > 88.3f ? (float)INFINITY : y;
}

/* erf(x) as PyTorch's vectorised CPU kernels compute it (Abramowitz and
 * Stegun 7.1.26, |error| < 1.5e-7): 1 - t (a1 + a2 t + ... + a5 t^4)
 * e^(-x^2), t = 1 / (1 + p |x|), the sign put back. e2 receives e^(-x^2),
 * which GELU's derivative needs too. */
static inline float vm_erff_e(float x, float *e2)
{
    float ax = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float r = 1.061405429f;
    r = r * t + -1.453152027f;
    r = r * t + 1.421413741f;
    r = r * t + -0.284496736f;
    r = r * t + 0.254829592f;
    float e = vm_expf(-(x * x));
    *e2 = e;
    float v = 1.0f - e * t * r;
    return x < 0.0f ? -v : v;
}

static inline float vm_erff(float x)
{
    float e;
    return vm_erff_e(x, &e);
}

static inline float vm_sigmoidf(float x)
{
    return 1.0f / (1.0f + vm_expf(-x));
}

/* tanh as (1 - e) / (1 + e) with e = e^(-2|x|), the sign put back: within
 * 2 ulp of 1 of tanhf (absolute error under 1.2e-7). */
static inline float vm_tanhf(float x)
{
    float e = vm_expf(-2.0f * fabsf(x));
    return copysignf((1.0f - e) / (1.0f + e), x);
}

/* Reductions in VM_LANES partial sums, lane k taking the elements k, k +
 * VM_LANES, ... (so a vectorised loop needs no reassociation), added
 * pairwise at the end: a fixed order for any alignment, team or copy, and
 * a sum of n elements rounds like one of n / VM_LANES. A single running
 * sum is one add at a time, 4 cycles each. */
#define VM_LANES 16

static inline float vm_lanes_total(float acc[VM_LANES])
{
    for (int w = VM_LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0];
}

/* x[0] + ... + x[n - 1] */
static inline float vm_sum(const float *restrict x, int n)
{
    float acc[VM_LANES] = {0};
    int e = 0;
    for (; e + VM_LANES <= n; e += VM_LANES)
        for (int k = 0; k < VM_LANES; k++)
            acc[k] += x[e + k];
    for (int k = 0; e + k < n; k++)
        acc[k] += x[e + k];
    return vm_lanes_total(acc);
}

/* a[0] b[0] + ... + a[n - 1] b[n - 1] */
static inline float vm_dot(const float *restrict a, const float *restrict b, int n)
{
    float acc[VM_LANES] = {0};
    int e = 0;
    for (; e + VM_LANES <= n; e += VM_LANES)
        for (int k = 0; k < VM_LANES; k++)
            acc[k] += a[e + k] * b[e + k];
    for (int k = 0; e + k < n; k++)
        acc[k] += a[e + k] * b[e + k];
    return vm_lanes_total(acc);
}

/* the largest of x[0 .. n - 1], n >= 1 (a NaN is passed over unless it
 * is x[0], as a running `x > m ? x : m` does) */
static inline float vm_max(const float *restrict x, int n)
{
    float acc[VM_LANES];
    for (int k = 0; k < VM_LANES; k++)
        acc[k] = x[0];
    int e = 0;
    for (; e + VM_LANES <= n; e += VM_LANES)
        for (int k = 0; k < VM_LANES; k++)
            acc[k] = x[e + k] > acc[k] ? x[e + k] : acc[k];
    for (int k = 0; e + k < n; k++)
        acc[k] = x[e + k] > acc[k] ? x[e + k] : acc[k];
    float m = acc[0];
    for (int k = 1; k < VM_LANES; k++)
        m = acc[k] > m ? acc[k] : m;
    return m;
}

#endif
