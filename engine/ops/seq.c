/* The sequence ops' shared pieces (seq.h). */
#include "seq.h"

#include <math.h>
#include <string.h>

struct gemm_job {
    bool trans_a, trans_b, by_rows;
    int M, N, K;
    float alpha, beta;
    const float *A, *B;
    int lda, ldb, ldc;
    float *C;
};

static void gemm_range(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    const struct gemm_job *j = ctx;
    enum CBLAS_TRANSPOSE ta = j->trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = j->trans_b ? CblasTrans : CblasNoTrans;
    if (j->by_rows) {
        const float *a = j->trans_a ? j->A + lo : j->A + (size_t)lo * j->lda;
        cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, j->N, j->K, j->alpha, a, j->lda, j->B, j->ldb,
                    j->beta, j->C + (size_t)lo * j->ldc, j->ldc);
    } else {
        const float *b = j->trans_b ? j->B + (size_t)lo * j->ldb : j->B + lo;
        cblas_sgemm(CblasRowMajor, ta, tb, j->M, hi - lo, j->K, j->alpha, j->A, j->lda, b, j->ldb,
                    j->beta, j->C + lo, j->ldc);
    }
}

void seq_gemm(const struct op_call *c, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *Bm, int ldb, float beta, float *C, int ldc)
{
    if (M < 1 || N < 1) return;
    struct gemm_job j = {trans_a, trans_b, M > N, M, N, K, alpha, beta, A, Bm, lda, ldb, ldc, C};
    if (K < 1) { /* an empty sum: C = beta C */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                C[(size_t)m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[(size_t)m * ldc + n];
        return;
    }
    /* under 4 runs of SEQ_GEMM_MIN_RUN, runs of half that: a 128 x 128
     * weight gradient was one run (one thread of a team busy), 384 x 128
     * three (two threads busy 2 : 1) */
    int total = j.by_rows ? M : N;
    int min_run = total < 4 * SEQ_GEMM_MIN_RUN ? SEQ_GEMM_MIN_RUN / 2 : SEQ_GEMM_MIN_RUN;
    op_for_range(c, total, 16, min_run, gemm_range, &j);
}

void seq_to_time_major(float *dst, const float *src, int B, int T, int F)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)t * B + b) * F, src + ((size_t)b * T + t) * F,
                   (size_t)F * sizeof *dst);
}

void seq_to_batch_major(float *dst, const float *src, int B, int T, int F)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)b * T + t) * F, src + ((size_t)t * B + b) * F,
                   (size_t)F * sizeof *dst);
}

/* Columns summed per pass over the rows: 8 AVX registers. */
#define SEQ_COLSUM_BLOCK 64

VM_CLONES void seq_colsum(float *db, const float *dy, size_t R, int ld, int lo, int hi)
{
    int n0 = lo;
    for (; n0 + SEQ_COLSUM_BLOCK <= hi; n0 += SEQ_COLSUM_BLOCK) {
        float acc[SEQ_COLSUM_BLOCK];
        memcpy(acc, db + n0, sizeof acc);
        for (size_t r = 0; r < R; r++) {
            const float *restrict d = dy + r * (size_t)ld + n0;
            for (int k = 0; k < SEQ_COLSUM_BLOCK; k++)
                acc[k] += d[k];
        }
        memcpy(db + n0, acc, sizeof acc);
    }
    if (n0 == hi) return;
    float acc[SEQ_COLSUM_BLOCK];
    int w = hi - n0;
    memcpy(acc, db + n0, (size_t)w * sizeof *acc);
    for (size_t r = 0; r < R; r++) {
        const float *restrict d = dy + r * (size_t)ld + n0;
        for (int k = 0; k < w; k++)
            acc[k] += d[k];
    }
    memcpy(db + n0, acc, (size_t)w * sizeof *acc);
}
