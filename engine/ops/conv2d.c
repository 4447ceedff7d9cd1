/* conv2d: nn.Conv2d lowered onto sgemm, one sample at a time; the op
 * splits a batch by samples over the team (each thread its own col).
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

#include "op.h"

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

/* Sum of a row in 8 float lanes: one running sum would be a chain of
 * dependent adds (4 cycles each) that does not vectorise. */
static float row_sum(const float *restrict x, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += x[i + j];
    float sum = 0.0f;
    for (; i < n; i++)
        sum += x[i];
    for (int j = 0; j < 8; j++)
        sum += acc[j];
    return sum;
}

/* At stride 1 with "same" padding (OW == W), row (c, kh, kw) of col is the
 * plane shifted by (kh - pad) rows and (kw - pad) columns: one flat copy of
 * the rows that exist, then the columns that wrapped around from the
 * neighbouring row are zeroed. A dozen-float copy per output row (4,000 a
 * sample in LeNet's second conv) becomes one per kernel position. The
 * output rows whose input row exists: [*oh0, *oh1). */
static int is_same_width(int W, int OW, int stride)
{
    return stride == 1 && OW == W;
}

static void valid_rows(int H, int OH, int kh, int pad, int *oh0, int *oh1)
{
    int dh = kh - pad; /* ih = oh + dh */
    *oh0 = dh < 0 ? -dh : 0;
    *oh1 = H - dh < OH ? H - dh : OH;
    if (*oh1 < *oh0) *oh1 = *oh0;
}

static void im2col_same(float *restrict col, const float *restrict in, int C, int H, int W, int KH,
                        int KW, int pad, int OH)
{
    int OW = W;
    size_t P = (size_t)OH * OW;
    for (int c = 0; c < C; c++) {
        const float *plane = in + (size_t)c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            int oh0, oh1;
            valid_rows(H, OH, kh, pad, &oh0, &oh1);
            for (int kw = 0; kw < KW; kw++, col += P) {
                int off = kw - pad;
                memset(col, 0, (size_t)oh0 * OW * sizeof *col);
                memset(col + (size_t)oh1 * OW, 0, (size_t)(OH - oh1) * OW * sizeof *col);
                if (oh1 == oh0) continue;
                /* dst[i] = plane[i + shift] for i in the valid rows, clipped
                 * to the plane (the clipped ends are wrapped columns). */
                long shift = (long)(kh - pad) * W + off;
                long i0 = (long)oh0 * OW, i1 = (long)oh1 * OW;
                long s0 = i0 + shift < 0 ? -shift : i0;
                long s1 = i1 + shift > (long)H * W ? (long)H * W - shift : i1;
                memcpy(col + s0, plane + s0 + shift, (size_t)(s1 - s0) * sizeof *col);
                for (long i = i0; i < s0; i++)
                    col[i] = 0.0f;
                for (long i = s1; i < i1; i++)
                    col[i] = 0.0f;
                for (int oh = oh0; oh < oh1; oh++) {
                    float *row = col + (size_t)oh * OW;
                    for (int ow = 0; ow < -off; ow++)
                        row[ow] = 0.0f;
                    for (int ow = OW - off; ow < OW; ow++)
                        row[ow] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint: din (C, H, W) += col folded back; the wrapped columns of
 * col (padding) are zeroed first so that one flat add per kernel position
 * does the rest. col is scratch and is changed. */
static void col2im_same(float *restrict din, float *restrict col, int C, int H, int W, int KH,
                        int KW, int pad, int OH)
{
    int OW = W;
    size_t P = (size_t)OH * OW;
    for (int c = 0; c < C; c++) {
        float *plane = din + (size_t)c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            int oh0, oh1;
            valid_rows(H, OH, kh, pad, &oh0, &oh1);
            for (int kw = 0; kw < KW; kw++, col += P) {
                if (oh1 == oh0) continue;
                int off = kw - pad;
                for (int oh = oh0; oh < oh1; oh++) {
                    float *row = col + (size_t)oh * OW;
                    for (int ow = 0; ow < -off; ow++)
                        row[ow] = 0.0f;
                    for (int ow = OW - off; ow < OW; ow++)
                        row[ow] = 0.0f;
                }
                long shift = (long)(kh - pad) * W + off;
                long i0 = (long)oh0 * OW, i1 = (long)oh1 * OW;
                long s0 = i0 + shift < 0 ? -shift : i0;
                long s1 = i1 + shift > (long)H * W ? (long)H * W - shift : i1;
                for (long i = s0; i < s1; i++)
                    plane[i + shift] += col[i];
            }
        }
    }
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

static void lower(float *col, const float *in, int C, int H, int W, int KH, int KW, int stride,
                  int pad, int OH, int OW)
{
    if (is_same_width(W, OW, stride))
        im2col_same(col, in, C, H, W, KH, KW, pad, OH);
    else
        im2col(col, in, C, H, W, KH, KW, stride, pad, OH, OW);
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
            lower(col, in_s, C, H, W, KH, KW, stride, pad, OH, OW);
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
            for (int o = 0; o < O; o++)
                db[o] += row_sum(dout_s + (size_t)o * P, P);
        const float *lowered = in_s;
        if (!direct) {
            lower(col, in_s, C, H, W, KH, KW, stride, pad, OH, OW);
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
        if (is_same_width(W, OW, stride))
            col2im_same(din_s, col, C, H, W, KH, KW, pad, OH);
        else
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

/* ---- the op: nn.Conv2d(C, out, kernel, stride, padding, bias) ---- */

static int conv2d_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                        size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 3)
        return op_err(err, errlen, "needs (C, H, W) inputs, got %s", shape_str(in, s, sizeof s));
    if (a->stride == OP_UNSET) a->stride = 1;
    if (a->out < 1) return op_err(err, errlen, "out must be at least 1, got %d", a->out);
    if (a->kernel < 1) return op_err(err, errlen, "kernel must be at least 1, got %d", a->kernel);
    if (a->stride < 1) return op_err(err, errlen, "stride must be at least 1, got %d", a->stride);
    if (a->padding < 0)
        return op_err(err, errlen, "padding must not be negative, got %d", a->padding);
    int H = in->d[1], W = in->d[2], p = a->padding;
    if (a->kernel > H + 2 * p || a->kernel > W + 2 * p)
        return op_err(err, errlen, "kernel %d is larger than the padded input %dx%d of %s",
                      a->kernel, H + 2 * p, W + 2 * p, shape_str(in, s, sizeof s));
    *out = (struct shape){3,
                          {a->out, conv2d_out_size(H, a->kernel, a->stride, p),
                           conv2d_out_size(W, a->kernel, a->stride, p)}};
    return 0;
}

static int conv2d_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int O = n->out.d[0], C = n->in[0].d[0], k = n->a.kernel;
    t[0] = (struct op_tensor){"weight", OP_PARAM, 4, {O, C, k, k}};
    if (!n->a.bias) return 1;
    t[1] = (struct op_tensor){"bias", OP_PARAM, 1, {O}};
    return 2;
}

static void conv2d_op_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    int O = n->out.d[0], C = n->in[0].d[0], k = n->a.kernel;
    conv2d_init(param, n->a.bias ? param + (size_t)O * C * k * k : NULL, C, O, k, k, r);
}

/* One sample's col per thread: the kernel lowers a sample at a time. */
static size_t conv2d_scratch(const struct op_node *n, int B)
{
    (void)B;
    const struct shape *in = &n->in[0];
    return conv2d_col_floats(in->d[0], in->d[1], in->d[2], n->a.kernel, n->a.kernel, n->a.stride,
                             n->a.padding);
}

static size_t conv2d_n_param(const struct op_node *n)
{
    size_t O = (size_t)n->out.d[0], k = (size_t)n->a.kernel;
    return O * (size_t)n->in[0].d[0] * k * k + (n->a.bias ? O : 0);
}

/* Backward sums the weight gradient over samples: each run of samples
 * keeps its own sum, added in run order (op_sum_partials). One run needs
 * none: it adds into grad directly. */
static size_t conv2d_partials(const struct op_node *n, int B)
{
    int slices = op_sample_slices(B);
    return slices > 1 ? (size_t)slices * conv2d_n_param(n) : 0;
}

static void conv2d_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    const struct op_node *n = c->node;
    int O = n->out.d[0], C = n->in[0].d[0], k = n->a.kernel;
    const float *b = n->a.bias ? c->param + (size_t)O * C * k * k : NULL;
    conv2d_forward(c->out, c->in[0], c->param, b, c->scratch, c->B, C, n->in[0].d[1], n->in[0].d[2],
                   O, k, k, n->a.stride, n->a.padding);
}

static void conv2d_op_forward(const struct op_call *c)
{
    op_for_samples(c, false, conv2d_forward_part, NULL);
}

static void conv2d_backward_part(const struct op_call *c, int slice, void *ctx)
{
    const struct op_node *n = c->node;
    int O = n->out.d[0], C = n->in[0].d[0], k = n->a.kernel;
    float *g = c->grad;
    if (*(const int *)ctx > 1) {
        size_t np = conv2d_n_param(n);
        g = c->partials + (size_t)slice * np;
        memset(g, 0, np * sizeof *g);
    }
    float *db = n->a.bias ? g + (size_t)O * C * k * k : NULL;
    conv2d_backward(c->din[0], g, db, c->dout, c->in[0], c->param, c->scratch, c->B, C,
                    n->in[0].d[1], n->in[0].d[2], O, k, k, n->a.stride, n->a.padding);
}

static void conv2d_op_backward(const struct op_call *c)
{
    int slices = op_sample_slices(c->B);
    op_for_samples(c, true, conv2d_backward_part, &slices);
    if (slices > 1) op_sum_partials(c, c->grad, c->partials, slices, conv2d_n_param(c->node));
}

static const char *const conv2d_fields[] = {"out", "kernel", "stride", "padding", "bias", NULL};

#define CONV(o, k, s, p, b)                                                                        \
    {                                                                                              \
        .out = o, .kernel = k, .stride = s, .padding = p, .bias = b                                \
    }
static const struct op_test conv2d_tests[] = {
    {"3x3 pad 1", CONV(4, 3, 1, 1, true), {{3, {3, 6, 5}}}, 2, false, 0},
    {"3x3 stride 2 pad 1", CONV(3, 3, 2, 1, true), {{3, {2, 7, 6}}}, 2, false, 0},
    {"1x1 (direct gemm)", CONV(3, 1, 1, 0, true), {{3, {4, 3, 5}}}, 2, false, 0},
    {"1x1 stride 2 pad 1", CONV(2, 1, 2, 1, true), {{3, {3, 5, 4}}}, 2, false, 0},
    {"5x5 stride 2 pad 2, no bias", CONV(2, 5, 2, 2, false), {{3, {2, 8, 7}}}, 1, false, 0},
    {"2x2 stride 3", CONV(2, 2, 3, 0, true), {{3, {2, 8, 7}}}, 2, false, 0},
    {"kernel as large as the input", CONV(3, 4, 1, 0, true), {{3, {2, 4, 4}}}, 2, false, 0},
    {"one sample, stride unset", CONV(2, 3, OP_UNSET, 2, true), {{3, {1, 4, 5}}}, 1, false, 0},
};
#undef CONV

const struct op_def op_conv2d = {
    .type = "conv2d",
    .abbrev = "conv",
    .n_inputs = 1,
    .fields = conv2d_fields,
    .infer = conv2d_infer,
    .tensors = conv2d_tensors,
    .init = conv2d_op_init,
    .scratch = conv2d_scratch,
    .partials = conv2d_partials,
    .forward = conv2d_op_forward,
    .backward = conv2d_op_backward,
    .tests = conv2d_tests,
    .n_tests = sizeof conv2d_tests / sizeof conv2d_tests[0],
};
