/* The numerical kernels of the layer ops: forward/backward pairs over raw
 * pointers and explicit dimensions, single-threaded, no allocation.
 *
 * Dimensions, named once: B = samples, C = input channels (or features),
 * H, W = input height and width, O = output channels, KH, KW = kernel
 * height and width, OH, OW = output height and width, S = spatial size of
 * one channel (H * W; 1 for 1d). Layout NCHW, row-major: element (b, c, h, w)
 * of a (B, C, H, W) tensor is at ((b * C + c) * H + h) * W + w.
 *
 * Gradient conventions, the same for every kernel:
 *   - parameter gradients (dw, db, dgamma, dbeta) are accumulated (+=);
 *     zeroing them is the caller's;
 *   - the input gradient din is stored (=), never accumulated: a node whose
 *     output feeds two others sums the two upstream gradients before calling
 *     backward. din may be NULL where the kernel says so (the network's
 *     first layer needs no input gradient).
 *
 * Threads: every kernel works on the rows or channels it is given, so a
 * caller splits a batch among threads by offsetting the pointers (samples)
 * or by a channel range (batch norm); nothing is shared but the read-only
 * inputs. Only conv2d's dw/db sum over samples: each thread accumulates into
 * its own copy and the caller adds the copies in a fixed order. */
#ifndef MLQ_OPS_KERNELS_H
#define MLQ_OPS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* ---- conv2d: nn.Conv2d (dilation 1, groups 1) ----
 * w (O, C, KH, KW), b (O) or NULL, in (B, C, H, W), out (B, O, OH, OW) with
 * OH = (H + 2 pad - KH) / stride + 1 and OW likewise. Lowered onto sgemm
 * per sample through im2col into col (conv2d_col_floats floats; the 1x1,
 * stride 1, pad 0 case needs none and col may be NULL). */
int conv2d_out_size(int in, int k, int stride, int pad); /* < 1 when invalid */
size_t conv2d_col_floats(int C, int H, int W, int KH, int KW, int stride, int pad);
void conv2d_forward(float *out, const float *in, const float *w, const float *b, float *col, int B,
                    int C, int H, int W, int O, int KH, int KW, int stride, int pad);
/* dw += dL/dw, db += dL/db (db may be NULL: no bias), din = dL/din (may be
 * NULL). col is the same scratch as forward's; in is forward's input. */
void conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, float *col, int B, int C, int H, int W, int O, int KH, int KW,
                     int stride, int pad);
/* PyTorch's init: kaiming_uniform_(a = sqrt 5) for w, i.e. U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)) with fan_in = C KH KW, and the same bound for b (may be
 * NULL); drawn from r, w row-major before b, as net_init draws a dense layer. */
void conv2d_init(float *w, float *b, int C, int O, int KH, int KW, struct rng *r);

/* ---- pooling over (B * C) planes of (H, W): nn.MaxPool2d, nn.AvgPool2d
 * (ceil_mode false, count_include_pad true: every window divides by KH KW),
 * nn.AdaptiveAvgPool2d(1). Output planes (OH, OW) as conv2d_out_size. ---- */
void maxpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int KH, int KW,
                       int stride, int pad);
/* din = the gradient routed to each window's first maximum (a NaN counts as
 * the maximum, as in torch), found again from in rather than saved. */
void maxpool2d_backward(float *din, const float *dout, const float *in, int B, int C, int H, int W,
                        int KH, int KW, int stride, int pad);
void avgpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int KH, int KW,
                       int stride, int pad);
void avgpool2d_backward(float *din, const float *dout, int B, int C, int H, int W, int KH, int KW,
                        int stride, int pad);
/* out (B, C) = the mean of each (S) plane; din = dout / S broadcast. */
void global_avgpool_forward(float *out, const float *in, int B, int C, int S);
void global_avgpool_backward(float *din, const float *dout, int B, int C, int S);

/* ---- batch norm: nn.BatchNorm1d (S = 1, in (B, C)) and nn.BatchNorm2d
 * (in (B, C, S)), over the channels [c0, c1) only, so that threads can
 * split by channel with no reduction. ----
 * Training: normalises with the batch mean and biased variance (B S values
 * per channel, sums in double), and updates running_mean/running_var (C)
 * with momentum: r = (1 - momentum) r + momentum x, the variance unbiased
 * (B S / (B S - 1)); with a single value per channel (B S = 1, which
 * torch refuses) the running statistics stay as they were. Evaluation:
 * normalises with the running statistics and changes nothing. Either way mean and invstd (C)
 * receive what was used, for backward. gamma/beta (C) may be NULL (affine false). The count
 * num_batches_tracked is the caller's (one per call, not per channel). */
#define BATCHNORM_MOMENTUM 0.1f
#define BATCHNORM_EPS 1e-5f
void batchnorm_forward(float *out, float *mean, float *invstd, float *running_mean,
                       float *running_var, const float *in, const float *gamma, const float *beta,
                       int B, int C, int S, int c0, int c1, int training, float momentum,
                       float eps);
/* dgamma/dbeta (+=, may be NULL), din (=, may be NULL). training must be the
 * forward's: in evaluation the statistics are constants. */
void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *invstd, const float *gamma, int B, int C,
                        int S, int c0, int c1, int training);
/* weight 1, bias 0, running mean 0, running variance 1. */
void batchnorm_init(float *gamma, float *beta, float *running_mean, float *running_var, int C);

/* ---- dropout: nn.Dropout in training (evaluation is the identity) ----
 * Element i of the tensor is kept with probability 1 - p and scaled by
 * 1 / (1 - p); whether it is kept is a pure function of (key, first + i),
 * so backward draws the same mask again instead of saving it, a thread
 * that does elements [first, first + n) draws what one thread would, and a
 * run that saves the RNG the key came from (one key per forward) redraws
 * the same masks on resume. out may equal in, din may equal dout. */
void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t key, size_t first);
void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t key, size_t first);
/* 1 when element index is kept (the mask the two calls above apply). */
int dropout_keeps(float p, uint64_t key, size_t index);

/* ---- activations, element-wise over n values ---- */
enum act_op {
    ACT_OP_RELU,
    ACT_OP_LEAKY_RELU, /* slope for x < 0, nn.LeakyReLU's negative_slope (0.01) */
    ACT_OP_SIGMOID,
    ACT_OP_TANH,
    ACT_OP_GELU,      /* exact: x Phi(x), with erf */
    ACT_OP_GELU_TANH, /* approximate='tanh' */
};
/* out may equal in. */
void act_forward(float *out, const float *in, size_t n, enum act_op op, float slope);
/* din = dout f'(x). relu, leaky_relu and both gelus read in (x); sigmoid
 * and tanh read out (f(x)); the other may be NULL (relu and leaky_relu with
 * slope >= 0 may be given out as in: the sign is the same, so an in-place
 * forward still has a backward). din may equal dout. The
 * derivative at 0 is torch's: 0 for relu, slope for leaky_relu. */
void act_backward(float *din, const float *dout, const float *in, const float *out, size_t n,
                  enum act_op op, float slope);
/* out = f(x) and x replaced by f'(x), for a backward that is then dout
 * f'(x), one multiply: GELU's erf (or tanh) computed once per element
 * instead of in both passes. For the gelus dout f'(x) has act_backward's
 * bits. */
void act_forward_deriv(float *out, float *x, size_t n, enum act_op op, float slope);

/* ---- one head of self-attention, one sample (ops/attn_head.c) ----
 * q, k, v (T, D) at row stride ld (a head's columns of qkv), P (T, T), o
 * and dO (T, D) at stride ldo. Forward: P = softmax(q k^T scale) (causal:
 * row i over keys [0, i + 1), zeros after them up to its 16-key group's
 * end; the rest of the row unused), o = P v. Backward (P from forward): dq,
 * dk, dv (stored, at stride ld) and dP (T, T) its scratch. scratch is
 * attn_head_scratch_floats(T, D) floats. AVX-512 only: callers
 * check attn_head_fast() and use sgemm otherwise. */
bool attn_head_fast(void);
size_t attn_head_scratch_floats(int T, int D);
void attn_head_forward(float *P, float *o, int ldo, const float *q, const float *k, const float *v,
                       int ld, int T, int D, float scale, bool causal, float *scratch);
void attn_head_backward(float *dq, float *dk, float *dv, float *dP, const float *P, const float *dO,
                        int ldo, const float *q, const float *k, const float *v, int ld, int T,
                        int D, float scale, bool causal, float *scratch);

#endif
