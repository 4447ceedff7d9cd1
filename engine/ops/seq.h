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
#include "vmath.h" /* vm_sigmoidf, vm_tanhf for the gates */

/* Runs of at least this many rows or columns per gemm: smaller ones pack
 * the other operand again for too little work. */
#define SEQ_GEMM_MIN_RUN 128

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, cut over c's team along
 * the larger of M and N in runs that depend on (M, N) alone (op_for_range),
 * so any team gives the same bits. */
void seq_gemm(const struct op_call *c, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *Bm, int ldb, float beta, float *C, int ldc);

/* db[n] += dy[r ld + n] for n in [lo, hi), over rows r = 0 .. R - 1 in
 * row order (the bits of the plain double loop), the sums held in
 * registers a block of columns at a time. */
void seq_colsum(float *db, const float *dy, size_t R, int ld, int lo, int hi);

/* dst (T, B, F) = src (B, T, F) transposed in its first two axes; and back. */
void seq_to_time_major(float *dst, const float *src, int B, int T, int F);
void seq_to_batch_major(float *dst, const float *src, int B, int T, int F);

#endif
