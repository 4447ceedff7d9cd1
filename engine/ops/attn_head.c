/* One attention head of one sample in AVX-512 registers (kernels.h): the
 * scores, softmax, P v and their gradients as two register-blocked loops,
 * where the per-block sgemm calls spent more on calls and packing than on
 * the multiply-adds (16% of a Transformer step for 9% of its flops).
 *
 * Causal rows are cut at 16 keys: row i of P holds its softmax over keys
 * [0, i + 1) and zeros up to keys_of(i), the end of its 16-key group, so
 * that the loops read whole zero-padded groups and never the masked keys
 * beyond. */
#include "kernels.h"
#include "op.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#define AH_TARGET __attribute__((target("avx512f")))
#define AH_INLINE static inline __attribute__((always_inline)) AH_TARGET

static bool sgemm_only; /* op_set_attention_sgemm */

void op_set_attention_sgemm(bool on)
{
    sgemm_only = on;
}

bool attn_head_fast(void)
{
#if defined(__x86_64__) && !defined(__clang__)
    return !sgemm_only && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* T keys rounded up to whole 16-key groups: a transposed row's length. */
static int keys_padded(int T)
{
    return (T + 15) / 16 * 16;
}

size_t attn_head_scratch_floats(int T, int D)
{
    return (size_t)D * (size_t)keys_padded(T) + 2 * (size_t)T * D;
}

/* Keys row i reads: its 16-key group's end (causal), or all T. */
static int keys_of(int i, int T, bool causal)
{
    int n = (i + 16) / 16 * 16;
    return causal && n < T ? n : T;
}

/* bt (D, Tp) = b (T, D) transposed (rows of b at stride ldb), the keys
 * past T zero. */
static void transpose_padded(float *bt, const float *b, int T, int D, int ldb)
{
    int Tp = keys_padded(T);
    /* b's rows in order: they lie 3E floats apart (copy_rows) */
    for (int j = 0; j < T; j++)
        for (int d = 0; d < D; d++)
            bt[(size_t)d * Tp + j] = b[(size_t)j * ldb + d];
    for (int d = 0; d < D; d++)
        for (int j = T; j < Tp; j++)
            bt[(size_t)d * Tp + j] = 0.0f;
}

/* c (T, D) = the rows of b at stride ldb, contiguous: a head's rows of
 * qkv lie 3E floats apart, which maps them onto a few L1 sets, and the
 * loops below read every one of them per row block. */
static void copy_rows(float *c, const float *b, int T, int D, int ldb)
{
    for (int j = 0; j < T; j++)
        memcpy(c + (size_t)j * D, b + (size_t)j * ldb, (size_t)D * sizeof *c);
}

static __mmask16 tail_mask(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : (__mmask16)0;
}

#define RK_ROWS 4

/* s (R rows at stride lds, G groups of 16 keys from key j0) = alpha a bt:
 * a (R, D) at stride lda, bt (D, Tp); keys at or past n not stored. */
AH_INLINE void rows_keys_block(float *s, int lds, const float *a, int lda, const float *bt, int Tp,
                               int D, int j0, int n, float alpha, const int R, const int G)
{
    __m512 acc[RK_ROWS][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            acc[r][g] = _mm512_setzero_ps();
    }
    for (int d = 0; d < D; d++) {
        const float *b = bt + (size_t)d * Tp + j0;
        __m512 bv[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            bv[g] = _mm512_loadu_ps(b + 16 * g);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 av = _mm512_set1_ps(a[(size_t)r * lda + d]);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_fmadd_ps(av, bv[g], acc[r][g]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            _mm512_mask_storeu_ps(s + (size_t)r * lds + j0 + 16 * g, tail_mask(n - j0 - 16 * g),
                                  _mm512_mul_ps(acc[r][g], al));
    }
}

/* Rows [i0, i0 + R) of s (T, T) = alpha a bt over keys [0, keys_of(last
 * row)): R <= RK_ROWS. */
AH_INLINE void rows_keys(float *s, const float *a, int lda, const float *bt, int T, int D, int i0,
                         bool causal, float alpha, const int R)
{
    int Tp = keys_padded(T), n = keys_of(i0 + R - 1, T, causal);
    int j0 = 0;
    for (; j0 + 64 <= n; j0 += 64)
        rows_keys_block(s + (size_t)i0 * T, T, a + (size_t)i0 * lda, lda, bt, Tp, D, j0, n, alpha,
                        R, 4);
    switch ((n - j0 + 15) / 16) {
    case 3:
        rows_keys_block(s + (size_t)i0 * T, T, a + (size_t)i0 * lda, lda, bt, Tp, D, j0, n, alpha,
                        R, 3);
        break;
    case 2:
        rows_keys_block(s + (size_t)i0 * T, T, a + (size_t)i0 * lda, lda, bt, Tp, D, j0, n, alpha,
                        R, 2);
        break;
    case 1:
        rows_keys_block(s + (size_t)i0 * T, T, a + (size_t)i0 * lda, lda, bt, Tp, D, j0, n, alpha,
                        R, 1);
        break;
    default:
        break;
    }
}

/* s (T, T) = alpha a bt, a (T, D) at stride lda, row by row over the keys
 * it reads (keys_of). */
AH_TARGET static void scores(float *s, const float *a, int lda, const float *bt, int T, int D,
                             bool causal, float alpha)
{
    int i0 = 0;
    for (; i0 + RK_ROWS <= T; i0 += RK_ROWS)
        rows_keys(s, a, lda, bt, T, D, i0, causal, alpha, RK_ROWS);
    switch (T - i0) {
    case 3:
        rows_keys(s, a, lda, bt, T, D, i0, causal, alpha, 3);
        break;
    case 2:
        rows_keys(s, a, lda, bt, T, D, i0, causal, alpha, 2);
        break;
    case 1:
        rows_keys(s, a, lda, bt, T, D, i0, causal, alpha, 1);
        break;
    default:
        break;
    }
}

#define RF_ROWS 8

/* c (R rows at stride ldc, features [f0, f0 + 16 G) of D) = sum over k in
 * [k0, k1) of a(r, k) b(k, :), a(r, k) = a[r ars + k aks], b rows at
 * stride ldb: stored, not added. */
AH_INLINE void rows_feats_block(float *c, int ldc, const float *a, int ars, int aks, const float *b,
                                int ldb, int k0, int k1, int f0, int D, const int R, const int G)
{
    __m512 acc[RF_ROWS][2];
    __mmask16 m[2];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
        m[g] = tail_mask(D - f0 - 16 * g);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            acc[r][g] = _mm512_setzero_ps();
    }
    for (int k = k0; k < k1; k++) {
        const float *br = b + (size_t)k * ldb + f0;
        __m512 bv[2];
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            bv[g] = _mm512_maskz_loadu_ps(m[g], br + 16 * g);
        const float *ak = a + (size_t)k * aks;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 av = _mm512_set1_ps(ak[(size_t)r * ars]);
#pragma GCC unroll 2
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_fmadd_ps(av, bv[g], acc[r][g]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            _mm512_mask_storeu_ps(c + (size_t)r * ldc + f0 + 16 * g, m[g], acc[r][g]);
    }
}

AH_INLINE void rows_feats_r(float *c, int ldc, const float *a, int ars, int aks, const float *b,
                            int ldb, int k0, int k1, int D, const int R)
{
    int f0 = 0;
    for (; f0 + 32 <= D; f0 += 32)
        rows_feats_block(c, ldc, a, ars, aks, b, ldb, k0, k1, f0, D, R, 2);
    if (f0 + 16 < D)
        rows_feats_block(c, ldc, a, ars, aks, b, ldb, k0, k1, f0, D, R, 2);
    else if (f0 < D)
        rows_feats_block(c, ldc, a, ars, aks, b, ldb, k0, k1, f0, D, R, 1);
}

/* Rows [i0, i0 + R) of c, R <= RF_ROWS (a and c at row i0). */
AH_TARGET static void rows_feats(float *c, int ldc, const float *a, int ars, int aks,
                                 const float *b, int ldb, int k0, int k1, int D, int R)
{
    switch (R) {
    case 8:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 8);
        break;
    case 7:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 7);
        break;
    case 6:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 6);
        break;
    case 5:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 5);
        break;
    case 4:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 4);
        break;
    case 3:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 3);
        break;
    case 2:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 2);
        break;
    default:
        rows_feats_r(c, ldc, a, ars, aks, b, ldb, k0, k1, D, 1);
        break;
    }
}

/* c (T, D) = p b: row i sums over the keys it reads; the zeros past its
 * own keys make a block's common bound exact. */
static void probs_times(float *c, int ldc, const float *p, const float *b, int ldb, int T, int D,
                        bool causal)
{
    for (int i0 = 0; i0 < T; i0 += RF_ROWS) {
        int R = T - i0 < RF_ROWS ? T - i0 : RF_ROWS;
        int k1 = causal ? i0 + R : T;
        rows_feats(c + (size_t)i0 * ldc, ldc, p + (size_t)i0 * T, T, 1, b, ldb, 0, k1, D, R);
    }
}

/* c (T, D) = p^T b: key j sums over the queries that read it. */
static void probs_t_times(float *c, int ldc, const float *p, const float *b, int ldb, int T, int D,
                          bool causal)
{
    for (int j0 = 0; j0 < T; j0 += RF_ROWS) {
        int R = T - j0 < RF_ROWS ? T - j0 : RF_ROWS;
        rows_feats(c + (size_t)j0 * ldc, ldc, p + j0, 1, T, b, ldb, causal ? j0 : 0, T, D, R);
    }
}

/* e^x for x <= 0 by vm_expf's method (Cephes' polynomial, Cody and
 * Waite's two-part ln 2) in a register, with FMA; below -87.3 (and -inf)
 * 0, NaN NaN. */
AH_INLINE __m512 exp512(__m512 x)
{
    __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ),
                                   _mm512_scalef_ps(p, n));
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x); /* NaN stays */
}

/* Each row of P replaced by its softmax over keys [0, i + 1) (causal) or
 * all T, zeros to keys_of(i). In registers with the row's max and sum
 * reduced once: the rows are short (72 keys on average at T 128), and
 * the generic loops spent more on a row's set-up and reductions than on
 * its exps. */
AH_TARGET static void softmax_rows_padded(float *P, int T, bool causal)
{
    __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < T; i++) {
        float *row = P + (size_t)i * T;
        int m = causal ? i + 1 : T, n = keys_of(i, T, causal);
        __m512 mx = ninf;
        for (int t = 0; t < m; t += 16)
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tail_mask(m - t), row + t));
        __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
        for (int t = 0; t < n; t += 16) {
            __m512 x = _mm512_mask_loadu_ps(ninf, tail_mask(m - t), row + t);
            __m512 e = exp512(_mm512_sub_ps(x, mv));
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(row + t, tail_mask(n - t), e);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (int t = 0; t < n; t += 16)
            _mm512_mask_storeu_ps(
                row + t, tail_mask(n - t),
                _mm512_mul_ps(_mm512_maskz_loadu_ps(tail_mask(n - t), row + t), inv));
    }
}

/* dP (T, T) replaced by dS = P (dP - rowdot(P, dP)) scale over each row's
 * keys. */
AH_TARGET static void softmax_back_rows(float *dP, const float *P, int T, bool causal, float scale)
{
    __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < T; i++) {
        const float *pr = P + (size_t)i * T;
        float *dr = dP + (size_t)i * T;
        int n = keys_of(i, T, causal);
        __m512 acc = _mm512_setzero_ps();
        for (int t = 0; t < n; t += 16) {
            __mmask16 k = tail_mask(n - t);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, pr + t),
                                  _mm512_maskz_loadu_ps(k, dr + t), acc);
        }
        __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
        for (int t = 0; t < n; t += 16) {
            __mmask16 k = tail_mask(n - t);
            __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dr + t), dot);
            _mm512_mask_storeu_ps(
                dr + t, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, pr + t), d), sc));
        }
    }
}

void attn_head_forward(float *P, float *o, int ldo, const float *q, const float *k, const float *v,
                       int ld, int T, int D, float scale, bool causal, float *scratch)
{
    float *bt = scratch, *vc = bt + (size_t)D * keys_padded(T);
    transpose_padded(bt, k, T, D, ld);
    copy_rows(vc, v, T, D, ld);
    scores(P, q, ld, bt, T, D, causal, scale);
    softmax_rows_padded(P, T, causal);
    probs_times(o, ldo, P, vc, D, T, D, causal);
}

void attn_head_backward(float *dq, float *dk, float *dv, float *dP, const float *P, const float *dO,
                        int ldo, const float *q, const float *k, const float *v, int ld, int T,
                        int D, float scale, bool causal, float *scratch)
{
    float *bt = scratch, *kc = bt + (size_t)D * keys_padded(T), *qc = kc + (size_t)T * D;
    probs_t_times(dv, ld, P, dO, ldo, T, D, causal);
    transpose_padded(bt, v, T, D, ld);
    copy_rows(kc, k, T, D, ld);
    copy_rows(qc, q, T, D, ld);
    scores(dP, dO, ldo, bt, T, D, causal, 1.0f);
    softmax_back_rows(dP, P, T, causal, scale);
    probs_times(dq, ld, dP, kc, D, T, D, causal);
    probs_t_times(dk, ld, dP, qc, D, T, D, causal);
}
