/* Pooling: nn.MaxPool2d, nn.AvgPool2d and global average pooling over the
 * (B C) planes of an NCHW tensor; dimensions as in kernels.h.
 *
 * Max pooling's backward finds each window's maximum again from the input
 * instead of saving indices at forward: the input is kept for backward
 * anyway, so this costs one more read of it and no buffer. The common
 * 2x2 stride 2 unpadded window has its own loop (LeNet's pools). */
#include "kernels.h"

#include <emmintrin.h>
#include <math.h>
#include <string.h>

#include "op.h"

/* The window of output (oh, ow) clipped to the plane: rows [*h0, *h1),
 * columns [*w0, *w1). */
static void window(int oh, int ow, int H, int W, int KH, int KW, int stride, int pad, int *h0,
                   int *h1, int *w0, int *w1)
{
    int hs = oh * stride - pad, ws = ow * stride - pad;
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = hs + KH < H ? hs + KH : H;
    *w1 = ws + KW < W ? ws + KW : W;
}

/* Index in the plane of the window's maximum: the first in row-major order,
 * or the first NaN, as torch's CPU kernel (val > max || isnan(val)). */
static int window_argmax(const float *plane, int W, int h0, int h1, int w0, int w1)
{
    int best = h0 * W + w0;
    float mx = plane[best];
    if (isnan(mx)) return best;
    for (int h = h0; h < h1; h++)
        for (int w = w0; w < w1; w++) {
            float v = plane[h * W + w];
            if (v > mx || isnan(v)) {
                mx = v;
                best = h * W + w;
                if (isnan(v)) return best;
            }
        }
    return best;
}

/* A candidate v replaces the window's maximum m when larger, or when it is
 * the first NaN (once m is NaN it stays): window_argmax's rule, as masks. */
static inline __m128 takes(__m128 m, __m128 v)
{
    __m128 wins = _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v));
    return _mm_andnot_ps(_mm_cmpunord_ps(m, m), wins);
}

static inline __m128 blend_ps(__m128 mask, __m128 a, __m128 b)
{
    return _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b));
}

/* One output row of a 2x2 stride-2 max pool from input rows r0 and r1.
 * Forward (out set): out[ow] = the window's maximum. Backward (g0, g1, d
 * set): stores d[ow] at the window's maximum in rows g0/g1 and 0 at the
 * other three, so a row needs no zeroing first. Four windows at a time in
 * SSE2 selects: which of four noisy values wins is a coin toss that a
 * branch would mispredict. */
static void pool2x2_row(float *out, float *g0, float *g1, const float *r0, const float *r1,
                        const float *d, int OW)
{
    int ow = 0;
    for (; ow + 4 <= OW; ow += 4) {
        __m128 x0 = _mm_loadu_ps(r0 + 2 * ow), x1 = _mm_loadu_ps(r0 + 2 * ow + 4);
        __m128 y0 = _mm_loadu_ps(r1 + 2 * ow), y1 = _mm_loadu_ps(r1 + 2 * ow + 4);
        __m128 a = _mm_shuffle_ps(x0, x1, _MM_SHUFFLE(2, 0, 2, 0)); /* top left */
        __m128 b = _mm_shuffle_ps(x0, x1, _MM_SHUFFLE(3, 1, 3, 1)); /* top right */
        __m128 c = _mm_shuffle_ps(y0, y1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 e = _mm_shuffle_ps(y0, y1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128 m = a;
        __m128 tb = takes(m, b);
        m = blend_ps(tb, b, m);
        __m128 tc = takes(m, c);
        m = blend_ps(tc, c, m);
        __m128 te = takes(m, e);
        m = blend_ps(te, e, m);
        if (out) {
            _mm_storeu_ps(out + ow, m);
            continue;
        }
        /* The winner is the last candidate that took over. */
        __m128 v = _mm_loadu_ps(d + ow);
        __m128 we = te, wc = _mm_andnot_ps(te, tc);
        __m128 wb = _mm_andnot_ps(_mm_or_ps(te, tc), tb);
        __m128 wa = _mm_andnot_ps(_mm_or_ps(_mm_or_ps(te, tc), tb), v);
        __m128 gb = _mm_and_ps(wb, v), gc = _mm_and_ps(wc, v), ge = _mm_and_ps(we, v);
        _mm_storeu_ps(g0 + 2 * ow, _mm_unpacklo_ps(wa, gb));
        _mm_storeu_ps(g0 + 2 * ow + 4, _mm_unpackhi_ps(wa, gb));
        _mm_storeu_ps(g1 + 2 * ow, _mm_unpacklo_ps(gc, ge));
        _mm_storeu_ps(g1 + 2 * ow + 4, _mm_unpackhi_ps(gc, ge));
    }
    /* The last windows one at a time, with the same selects in lane 0. */
    for (; ow < OW; ow++) {
        __m128 a = _mm_load_ss(r0 + 2 * ow), b = _mm_load_ss(r0 + 2 * ow + 1);
        __m128 c = _mm_load_ss(r1 + 2 * ow), e = _mm_load_ss(r1 + 2 * ow + 1);
        __m128 m = a;
        __m128 tb = takes(m, b);
        m = blend_ps(tb, b, m);
        __m128 tc = takes(m, c);
        m = blend_ps(tc, c, m);
        __m128 te = takes(m, e);
        m = blend_ps(te, e, m);
        if (out) {
            _mm_store_ss(out + ow, m);
            continue;
        }
        __m128 v = _mm_load_ss(d + ow);
        __m128 wc = _mm_andnot_ps(te, tc), wb = _mm_andnot_ps(_mm_or_ps(te, tc), tb);
        _mm_store_ss(g0 + 2 * ow, _mm_andnot_ps(_mm_or_ps(_mm_or_ps(te, tc), tb), v));
        _mm_store_ss(g0 + 2 * ow + 1, _mm_and_ps(wb, v));
        _mm_store_ss(g1 + 2 * ow, _mm_and_ps(wc, v));
        _mm_store_ss(g1 + 2 * ow + 1, _mm_and_ps(te, v));
    }
}

static int is_2x2(int H, int W, int KH, int KW, int stride, int pad)
{
    (void)H;
    (void)W;
    return KH == 2 && KW == 2 && stride == 2 && pad == 0;
}

void maxpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int KH, int KW,
                       int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    size_t planes = (size_t)B * C;
    if (is_2x2(H, W, KH, KW, stride, pad)) {
        for (size_t q = 0; q < planes; q++)
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = in + q * H * W + (size_t)(2 * oh) * W;
                pool2x2_row(out + q * OH * OW + (size_t)oh * OW, NULL, NULL, r0, r0 + W, NULL, OW);
            }
        return;
    }
    for (size_t q = 0; q < planes; q++) {
        const float *plane = in + q * H * W;
        float *o = out + q * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0, h1, w0, w1;
                window(oh, ow, H, W, KH, KW, stride, pad, &h0, &h1, &w0, &w1);
                o[(size_t)oh * OW + ow] = plane[window_argmax(plane, W, h0, h1, w0, w1)];
            }
    }
}

void maxpool2d_backward(float *din, const float *dout, const float *in, int B, int C, int H, int W,
                        int KH, int KW, int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    size_t planes = (size_t)B * C;
    /* The 2x2 path stores every input its windows cover; an odd last row
     * or column belongs to no window. */
    if (!is_2x2(H, W, KH, KW, stride, pad) || H % 2 || W % 2)
        memset(din, 0, planes * H * W * sizeof *din);
    for (size_t q = 0; q < planes; q++) {
        const float *plane = in + q * H * W;
        const float *d = dout + q * OH * OW;
        float *g = din + q * H * W;
        if (is_2x2(H, W, KH, KW, stride, pad)) {
            for (int oh = 0; oh < OH; oh++) {
                size_t r0 = (size_t)(2 * oh) * W;
                pool2x2_row(NULL, g + r0, g + r0 + W, plane + r0, plane + r0 + W,
                            d + (size_t)oh * OW, OW);
            }
            continue;
        }
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0, h1, w0, w1;
                window(oh, ow, H, W, KH, KW, stride, pad, &h0, &h1, &w0, &w1);
                g[window_argmax(plane, W, h0, h1, w0, w1)] += d[(size_t)oh * OW + ow];
            }
    }
}

void avgpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int KH, int KW,
                       int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    size_t planes = (size_t)B * C;
    float scale = 1.0f / (float)(KH * KW);
    for (size_t q = 0; q < planes; q++) {
        const float *plane = in + q * H * W;
        float *o = out + q * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0, h1, w0, w1;
                window(oh, ow, H, W, KH, KW, stride, pad, &h0, &h1, &w0, &w1);
                float sum = 0.0f;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        sum += plane[h * W + w];
                o[(size_t)oh * OW + ow] = sum * scale;
            }
    }
}

void avgpool2d_backward(float *din, const float *dout, int B, int C, int H, int W, int KH, int KW,
                        int stride, int pad)
{
    int OH = conv2d_out_size(H, KH, stride, pad), OW = conv2d_out_size(W, KW, stride, pad);
    size_t planes = (size_t)B * C;
    float scale = 1.0f / (float)(KH * KW);
    memset(din, 0, planes * H * W * sizeof *din);
    for (size_t q = 0; q < planes; q++) {
        const float *d = dout + q * OH * OW;
        float *g = din + q * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0, h1, w0, w1;
                window(oh, ow, H, W, KH, KW, stride, pad, &h0, &h1, &w0, &w1);
                float v = d[(size_t)oh * OW + ow] * scale;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        g[h * W + w] += v;
            }
    }
}

void global_avgpool_forward(float *out, const float *in, int B, int C, int S)
{
    size_t planes = (size_t)B * C;
    for (size_t q = 0; q < planes; q++) {
        const float *plane = in + q * S;
        float sum = 0.0f;
        for (int i = 0; i < S; i++)
            sum += plane[i];
        out[q] = sum / (float)S;
    }
}

void global_avgpool_backward(float *din, const float *dout, int B, int C, int S)
{
    size_t planes = (size_t)B * C;
    for (size_t q = 0; q < planes; q++) {
        float v = dout[q] / (float)S;
        float *g = din + q * S;
        for (int i = 0; i < S; i++)
            g[i] = v;
    }
}

/* ---- the ops: nn.MaxPool2d, nn.AvgPool2d (kernel, stride = kernel,
 * padding), nn.AdaptiveAvgPool2d(1) ---- */

static int pool_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                      size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 3)
        return op_err(err, errlen, "needs (C, H, W) inputs, got %s", shape_str(in, s, sizeof s));
    if (a->stride == OP_UNSET) a->stride = a->kernel;
    if (a->kernel < 1) return op_err(err, errlen, "kernel must be at least 1, got %d", a->kernel);
    if (a->stride < 1) return op_err(err, errlen, "stride must be at least 1, got %d", a->stride);
    if (a->padding < 0)
        return op_err(err, errlen, "padding must not be negative, got %d", a->padding);
    /* torch: a window must not lie wholly in the padding. */
    if (2 * a->padding > a->kernel)
        return op_err(err, errlen, "padding %d is more than half the kernel %d", a->padding,
                      a->kernel);
    int H = in->d[1], W = in->d[2], p = a->padding;
    if (a->kernel > H + 2 * p || a->kernel > W + 2 * p)
        return op_err(err, errlen, "kernel %d is larger than the padded input %dx%d of %s",
                      a->kernel, H + 2 * p, W + 2 * p, shape_str(in, s, sizeof s));
    *out = (struct shape){3,
                          {in->d[0], conv2d_out_size(H, a->kernel, a->stride, p),
                           conv2d_out_size(W, a->kernel, a->stride, p)}};
    return 0;
}

#define POOL_DIMS(c)                                                                               \
    (c)->B, (c)->node->in[0].d[0], (c)->node->in[0].d[1], (c)->node->in[0].d[2],                   \
        (c)->node->a.kernel, (c)->node->a.kernel, (c)->node->a.stride, (c)->node->a.padding

static void maxpool_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    maxpool2d_forward(c->out, c->in[0], POOL_DIMS(c));
}

static void maxpool_backward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    maxpool2d_backward(c->din[0], c->dout, c->in[0], POOL_DIMS(c));
}

static void avgpool_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    avgpool2d_forward(c->out, c->in[0], POOL_DIMS(c));
}

static void avgpool_backward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    avgpool2d_backward(c->din[0], c->dout, POOL_DIMS(c));
}

/* Samples are independent: the team splits the batch. */
static void maxpool_op_forward(const struct op_call *c)
{
    op_for_samples(c, false, maxpool_forward_part, NULL);
}

static void maxpool_op_backward(const struct op_call *c)
{
    if (c->din[0]) op_for_samples(c, false, maxpool_backward_part, NULL);
}

static void avgpool_op_forward(const struct op_call *c)
{
    op_for_samples(c, false, avgpool_forward_part, NULL);
}

static void avgpool_op_backward(const struct op_call *c)
{
    if (c->din[0]) op_for_samples(c, false, avgpool_backward_part, NULL);
}

static const char *const pool_fields[] = {"kernel", "stride", "padding", NULL};

#define POOL(k, s, p)                                                                              \
    {                                                                                              \
        .kernel = k, .stride = s, .padding = p                                                     \
    }
/* Inputs in [-1, 1] (tests/test_ops_grad.c's seed): the maximum of a window
 * must lead its runner-up by more than the difference step, or the
 * numeric gradient splits between them. These shapes lead by 0.0067 or
 * more (checked once over that seed's values; tests/test_ops_kernels.c
 * checks other shapes on inputs spaced apart by construction). */
static const struct op_test maxpool_tests[] = {
    {"2x2, four windows a row (vector path) and odd sizes",
     POOL(2, OP_UNSET, 0),
     {{3, {2, 8, 11}}},
     1,
     false,
     0},
    {"2x2, odd input", POOL(2, OP_UNSET, 0), {{3, {2, 5, 3}}}, 1, false, 0},
    {"3x3 stride 2 pad 1", POOL(3, 2, 1), {{3, {3, 6, 7}}}, 2, false, 0},
    {"3x3 stride 1 pad 1", POOL(3, 1, 1), {{3, {2, 7, 7}}}, 1, false, 0},
};
static const struct op_test avgpool_tests[] = {
    {"2x2", POOL(2, OP_UNSET, 0), {{3, {3, 6, 8}}}, 2, false, 0},
    {"3x3 stride 2 pad 1", POOL(3, 2, 1), {{3, {2, 7, 5}}}, 2, false, 0},
    {"3x3 stride 1 pad 1", POOL(3, 1, 1), {{3, {2, 5, 6}}}, 1, false, 0},
};
#undef POOL

const struct op_def op_maxpool = {
    .type = "maxpool",
    .abbrev = "pool",
    .n_inputs = 1,
    .fields = pool_fields,
    .infer = pool_infer,
    .forward = maxpool_op_forward,
    .backward = maxpool_op_backward,
    .tests = maxpool_tests,
    .n_tests = sizeof maxpool_tests / sizeof maxpool_tests[0],
};

const struct op_def op_avgpool = {
    .type = "avgpool",
    .abbrev = "avgpool",
    .n_inputs = 1,
    .fields = pool_fields,
    .infer = pool_infer,
    .forward = avgpool_op_forward,
    .backward = avgpool_op_backward,
    .tests = avgpool_tests,
    .n_tests = sizeof avgpool_tests / sizeof avgpool_tests[0],
};

/* (C, H, W) -> (C, 1, 1), as nn.AdaptiveAvgPool2d(1): a flatten follows. */
static int gap_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                     size_t errlen)
{
    (void)a;
    char s[SHAPE_STR_MAX];
    if (in->n != 3)
        return op_err(err, errlen, "needs (C, H, W) inputs, got %s", shape_str(in, s, sizeof s));
    *out = (struct shape){3, {in->d[0], 1, 1}};
    return 0;
}

static void gap_forward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    const struct shape *in = &c->node->in[0];
    global_avgpool_forward(c->out, c->in[0], c->B, in->d[0], in->d[1] * in->d[2]);
}

static void gap_backward_part(const struct op_call *c, int slice, void *ctx)
{
    (void)slice, (void)ctx;
    const struct shape *in = &c->node->in[0];
    global_avgpool_backward(c->din[0], c->dout, c->B, in->d[0], in->d[1] * in->d[2]);
}

static void gap_op_forward(const struct op_call *c)
{
    op_for_samples(c, false, gap_forward_part, NULL);
}

static void gap_op_backward(const struct op_call *c)
{
    if (c->din[0]) op_for_samples(c, false, gap_backward_part, NULL);
}

static const struct op_test gap_tests[] = {
    {"(3, 4, 5)", {0}, {{3, {3, 4, 5}}}, 2, false, 0},
    {"(2, 1, 1)", {0}, {{3, {2, 1, 1}}}, 3, false, 0},
};

const struct op_def op_global_avgpool = {
    .type = "global_avgpool",
    .abbrev = "gap",
    .n_inputs = 1,
    .infer = gap_infer,
    .forward = gap_op_forward,
    .backward = gap_op_backward,
    .tests = gap_tests,
    .n_tests = sizeof gap_tests / sizeof gap_tests[0],
};
