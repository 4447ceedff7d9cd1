/* What the sequence ops (embedding, lstm, gru, ...) share: a gemm cut over
 * the call's team, and the transposes between the (B, T, F) layout of the
 * model's buffers and the (T, B, F) layout the recurrences run in (one
 * step's rows contiguous, so a step is one gemm).
 *
 * Dimensions: B samples, T steps, F features. */
#ifndef MLQ_OPS_SEQ_H
#define MLQ_OPS_SEQ_H

#include <cblas.h>
#undef I /* complex.h's, from cblas.h */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "op.h"

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, cut over c's team along
 * the larger of M and N in runs that depend on (M, N) alone (op_for_range),
 * so any team gives the same bits. */
void seq_gemm(const struct op_call *c, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *Bm, int ldb, float beta, float *C, int ldc);

/* dst (T, B, F) = src (B, T, F) transposed in its first two axes; and back. */
void seq_to_time_major(float *dst, const float *src, int B, int T, int F);
void seq_to_batch_major(float *dst, const float *src, int B, int T, int F);

static inline float seq_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* tanh through expf: (1 - e) / (1 + e) with e = exp(-2|x|), the sign put
 * back. Within 2 ulp of 1 of tanhf (absolute error under 1.2e-7), and a
 * third of its cost: glibc's tanhf goes through expm1f, which took a third
 * of an LSTM step. */
static inline float seq_tanh(float x)
{
    float e = expf(-2.0f * fabsf(x));
    return copysignf((1.0f - e) / (1.0f + e), x);
}

#endif
