/* conv2d: nn.Conv2d lowered onto sgemm, one sample at a time.
 *
 * Dimensions as in kernels.h; K = C KH KW (a column of the lowered input),
 * P = OH OW (output positions of one plane).
 *
 * Per sample, im2col writes col (K, P) and out_b (O, P) = w (O, K) col: the
 * output lands in NCHW with no transpose, and col (K P floats, 225 KB for
 * LeNet's second conv) stays in L2 between im2col and the gemm. One gemm
 * over the whole batch would need either a (K, B P) col of megabytes or an
 * (O, B P) output to transpose, and measures no faster than 64 x 196 x 288
 * per sample (docs/benchmarks.md). Backward redoes im2col rather than
 * keeping every sample's col: the copy is cheap next to the two gemms and
 * keeps memory at one col per thread. A 1x1 kernel at stride 1 without
 * padding is already its own col: the gemms read the input directly. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

int conv2d_out_size(int in, int k, int stride, int pad)
{
    if (in < 1 || k < 1 || stride < 1 || pad < 0 || in + 2 * pad < k) return 0;
    return (in + 2 * pad - k) / stride + 1;
}

static int conv2d_is_direct(int KH, int KW, int stride, int pad)
{
    return KH == 1 && KW == 1 && stride == 1 && pad == 0;
}

size_t conv2d_col_floats(int C, int H, int W, int KH, int KW, int stride, int pad)
{
    if (conv2d_is_direct(KH, KW, stride, pad)) return 0;
    size_t OH = (size_t)conv2d_out_size(H, KH, stride, pad);
    size_t OW = (size_t)conv2d_out_size(W, KW, stride, pad);
    return (size_t)C * (size_t)KH * (size_t)KW * OH * OW;
}

/* The output columns ow whose input column ow stride - pad + kw lies in
 * [0, W): [*lo, *hi). */
static void valid_cols(int W, int OW, int kw, int stride, int pad, int *lo, int *hi)
{
    int off = kw - pad; /* iw = ow stride + off */
    int l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int h = W - off <= 0 ? 0 : (W - off + stride - 1) / stride;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col (K, P) from one sample's in (C, H, W); zeros where the window hangs
 * over the padding. */
static void im2col(float *restrict col, const float *restrict in, int C, int H, int W, int KH,
                   int KW, int stride, int pad, int OH, int OW)
{
    for (int c = 0; c < C; c++) {
        const float *plane = in + (size_t)c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++) {
                int lo, hi;
                valid_cols(W, OW, kw, stride, pad, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    float *restrict dst = col + (size_t)oh * OW;
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, (size_t)OW * sizeof *dst);
                        continue;
                    }
                    /* Row ih of the plane; input column of ow: ow stride + off. */
                    const float *src = plane + (size_t)ih * W;
                    int off = kw - pad;
                    for (int ow = 0; ow < lo; ow++)
                        dst[ow] = 0.0f;
                    if (stride == 1)
                        memcpy(dst + lo, src + lo + off, (size_t)(hi - lo) * sizeof *dst);
                    else
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] = src[ow * stride + off];
                    for (int ow = hi; ow < OW; ow++)
                        dst[ow] = 0.0f;
                }
                col += (size_t)OH * OW;
            }
        }
    }
}

/* din (C, H, W) += the columns of col (K, P) folded back onto the input:
 * the adjoint of im2col. */
static void col2im(float *restrict din, const float *restrict col, int C, int H, int W, int KH,
                   int KW, int stride, int pad, int OH, int OW)
{
    for (int c = 0; c < C; c++) {
        float *plane = din + (size_t)c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++) {
                int lo, hi;
                valid_cols(W, OW, kw, stride, pad, &lo, &hi);
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *restrict src = col + (size_t)oh * OW;
                    float *restrict dst = plane + (size_t)ih * W;
                    int off = kw - pad;
                    if (stride == 1)
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow + off] += src[ow];
                    else
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow * stride + off] += src[ow];
                }
                col += (size_t)OH * OW;
            }
        }
    }
}

void conv2d_forward(float *out, const float *in, const float *w, const float *b, float *col, int B,
                    int C, int H, int W, int O, int KH, int KW, int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    int K = C * KH * KW, P = OH * OW;
    int direct = conv2d_is_direct(KH, KW, stride, pad);
    for (int s = 0; s < B; s++) {
        const float *in_s = in + (size_t)s * C * H * W;
        float *out_s = out + (size_t)s * O * P;
        if (b)
            for (int o = 0; o < O; o++)
                for (int p = 0; p < P; p++)
                    out_s[(size_t)o * P + p] = b[o];
        const float *lowered = in_s;
        if (!direct) {
            im2col(col, in_s, C, H, W, KH, KW, stride, pad, OH, OW);
            lowered = col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, P, K, 1.0f, w, K, lowered, P,
                    b ? 1.0f : 0.0f, out_s, P);
    }
}

void conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, float *col, int B, int C, int H, int W, int O, int KH, int KW,
                     int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    int K = C * KH * KW, P = OH * OW;
    int direct = conv2d_is_direct(KH, KW, stride, pad);
    for (int s = 0; s < B; s++) {
        const float *in_s = in + (size_t)s * C * H * W;
        const float *dout_s = dout + (size_t)s * O * P;
        if (db)
            for (int o = 0; o < O; o++) {
                const float *row = dout_s + (size_t)o * P;
                float sum = 0.0f;
                for (int p = 0; p < P; p++)
                    sum += row[p];
                db[o] += sum;
            }
        const float *lowered = in_s;
        if (!direct) {
            im2col(col, in_s, C, H, W, KH, KW, stride, pad, OH, OW);
            lowered = col;
        }
        /* dw (O, K) += dout_s (O, P) col^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, O, K, P, 1.0f, dout_s, P, lowered, P,
                    1.0f, dw, K);
        if (!din) continue;
        float *din_s = din + (size_t)s * C * H * W;
        if (direct) {
            /* din_s (C, P) = w^T (C, O) dout_s (O, P) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, O, 1.0f, w, K, dout_s, P,
                        0.0f, din_s, P);
            continue;
        }
        /* col has served dw: it now takes dcol (K, P) = w^T dout_s. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, O, 1.0f, w, K, dout_s, P, 0.0f,
                    col, P);
        memset(din_s, 0, (size_t)C * H * W * sizeof *din_s);
        col2im(din_s, col, C, H, W, KH, KW, stride, pad, OH, OW);
    }
}

void conv2d_init(float *w, float *b, int C, int O, int KH, int KW, struct rng *r)
{
    float bound = 1.0f / sqrtf((float)C * (float)KH * (float)KW);
    size_t nw = (size_t)O * C * KH * KW;
    for (size_t i = 0; i < nw; i++)
        w[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
    if (b)
        for (int o = 0; o < O; o++)
            b[o] = (2.0f * rng_uniform(r) - 1.0f) * bound;
}
