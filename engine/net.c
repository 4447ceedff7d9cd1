/* Dense network forward/backward over one parameter buffer.
 *
 * Dimensions: B = batch rows, I = inputs of a layer, O = outputs of a layer,
 * K = outputs of the network, L = number of layers, P = parameters.
 * All matrices are row-major; a batch is (B, I) with one example per row. */
#include "net.h"
#include "loss.h"
#include "team.h"

#include <cblas.h>
/* cblas.h pulls in complex.h; I is our input width, not sqrt(-1). */
#undef I
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static void net_team_stop(struct net *net);

/* Activation buffers of layer l: z (B, O_l) then a (B, O_l), placed for
 * max_batch rows so that every batch size up to it uses the same offsets. */
static float *layer_z(const struct net *net, int l)
{
    size_t off = 0;
    for (int j = 0; j < l; j++)
        off += 2 * (size_t)net->max_batch * (size_t)net->layer[j].out;
    return net->acts + off;
}

static float *layer_a(const struct net *net, int l)
{
    return layer_z(net, l) + (size_t)net->max_batch * (size_t)net->layer[l].out;
}

int net_create(struct net *net, const struct net_config *cfg)
{
    memset(net, 0, sizeof *net);
    if (cfg->n_layers < 1 || cfg->n_layers > NET_MAX_LAYERS) return -EINVAL;
    net->n_layers = cfg->n_layers;
    net->activation = cfg->activation;
    net->leaky_slope = cfg->leaky_slope;
    net->output = cfg->output;
    net->loss = cfg->loss;
    net->label_smoothing = cfg->label_smoothing;
    net->n_threads = 1;

    size_t P = 0;
    for (int l = 0; l < net->n_layers; l++) {
        int I = cfg->sizes[l], O = cfg->sizes[l + 1];
        if (I < 1 || O < 1) return -EINVAL;
        net->layer[l].in = I;
        net->layer[l].out = O;
        P += (size_t)O * (size_t)I + (size_t)O;
    }
    net->n_params = P;
    net->params = calloc(P, sizeof *net->params);
    net->grads = calloc(P, sizeof *net->grads);
    if (!net->params || !net->grads) {
        net_destroy(net);
        return -ENOMEM;
    }
    size_t off = 0;
    for (int l = 0; l < net->n_layers; l++) {
        struct net_layer *ly = &net->layer[l];
        size_t nw = (size_t)ly->out * (size_t)ly->in;
        ly->w = net->params + off;
        ly->dw = net->grads + off;
        ly->b = net->params + off + nw;
        ly->db = net->grads + off + nw;
        off += nw + (size_t)ly->out;
    }
    return 0;
}

void net_destroy(struct net *net)
{
    if (!net) return;
    net_team_stop(net);
    free(net->params);
    free(net->grads);
    free(net->acts);
    free(net->dacts);
    memset(net, 0, sizeof *net);
}

int net_reserve(struct net *net, int B)
{
    if (B < 1) return -EINVAL;
    if (B <= net->max_batch) return 0;
    size_t n_acts = 0, max_o = 1;
    for (int l = 0; l < net->n_layers; l++) {
        n_acts += 2 * (size_t)B * (size_t)net->layer[l].out;
        if ((size_t)net->layer[l].out > max_o) max_o = (size_t)net->layer[l].out;
    }
    float *acts = calloc(n_acts, sizeof *acts);
    float *dacts = calloc(2 * (size_t)B * max_o, sizeof *dacts);
    if (!acts || !dacts) {
        free(acts);
        free(dacts);
        return -ENOMEM;
    }
    free(net->acts);
    free(net->dacts);
    net->acts = acts;
    net->dacts = dacts;
    net->max_batch = B;
    /* The output values are the last layer's a: no copy needed. */
    net->probs = layer_a(net, net->n_layers - 1);
    return 0;
}

void net_init(struct net *net, struct rng *r)
{
    for (int l = 0; l < net->n_layers; l++) {
        struct net_layer *ly = &net->layer[l];
        float bound = 1.0f / sqrtf((float)ly->in);
        size_t nw = (size_t)ly->out * (size_t)ly->in;
        for (size_t i = 0; i < nw; i++)
            ly->w[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
        for (int i = 0; i < ly->out; i++)
            ly->b[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
    }
}

/* ---- dense layer: z = x w^T + b ---- */

/* Each dense call works on a slice of its outputs' columns, [c0, c1), so
 * that threads can share a layer with no reduction: a thread's slice of z,
 * dx, dw and w is its own, and every element is computed by the same BLAS
 * call shape whatever the number of threads. */

/* OpenBLAS's gemm has a fixed cost that dominates at one row; gemv and ger
 * are several times faster there (see docs/engine.md). */
static void dense_forward(float *restrict z, const float *restrict x, const float *restrict w,
                          const float *restrict b, int B, int I, int O, int c0, int c1)
{
    int n = c1 - c0;
    for (int r = 0; r < B; r++)
        memcpy(z + (size_t)r * O + c0, b + c0, (size_t)n * sizeof *z);
    if (B == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, I, 1.0f, w + (size_t)c0 * I, I, x, 1, 1.0f,
                    z + c0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, I, 1.0f, x, I,
                    w + (size_t)c0 * I, I, 1.0f, z + c0, O);
}

/* dx[:, c0:c1] (B, I) = dz w[:, c0:c1], scratch for the layer below. */
static void dense_backward_dx(float *restrict dx, const float *restrict dz, const float *restrict w,
                              int B, int I, int O, int c0, int c1)
{
    if (B == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, O, c1 - c0, 1.0f, w + c0, I, dz, 1, 0.0f, dx + c0,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, c1 - c0, O, 1.0f, dz, O, w + c0,
                    I, 0.0f, dx + c0, I);
}

/* What backward does with d(loss)/dw: add it to the gradient, store it, or
 * (plain SGD) subtract lr times it from the weights themselves. */
enum grad_mode { GRAD_ADD, GRAD_SET, GRAD_SGD };

/* t[:, c0:c1] (O, I) = alpha dz^T x[:, c0:c1] + beta t[:, c0:c1]. */
static void dense_backward_dw(float *restrict t, const float *restrict dz, const float *restrict x,
                              int B, int I, int O, int c0, int c1, float alpha, float beta)
{
    int n = c1 - c0;
    if (B == 1 && beta == 0.0f) {
        /* ger only accumulates; an outer product that stores is a plain loop. */
        for (int o = 0; o < O; o++) {
            float *restrict row = t + (size_t)o * I + c0;
            float d = alpha * dz[o];
            for (int i = 0; i < n; i++)
                row[i] = d * x[c0 + i];
        }
    } else if (B == 1) {
        cblas_sger(CblasRowMajor, O, n, alpha, dz, 1, x + c0, 1, t + c0, I);
    } else {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, n, B, alpha, dz, O, x + c0, I, beta,
                    t + c0, I);
    }
}

/* db (O) from the column sums of dz (B, O), rows in order. In SGD mode db is
 * scratch and b takes the step. */
static void dense_backward_db(float *restrict db, float *restrict b, const float *restrict dz,
                              int B, int O, enum grad_mode mode, float lr)
{
    int r0 = 0;
    if (mode != GRAD_ADD) {
        memcpy(db, dz, (size_t)O * sizeof *db);
        r0 = 1;
    }
    for (int r = r0; r < B; r++) {
        const float *row = dz + (size_t)r * O;
        for (int o = 0; o < O; o++)
            db[o] += row[o];
    }
    if (mode == GRAD_SGD)
        for (int o = 0; o < O; o++)
            b[o] -= lr * db[o];
}

/* ---- element-wise: one switch per call, plain loops inside ---- */

static void activation_forward(float *restrict a, const float *restrict z, size_t n,
                               enum net_activation act, float slope)
{
    switch (act) {
    case NET_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            a[i] = z[i] > 0.0f ? z[i] : 0.0f;
        break;
    case NET_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            a[i] = z[i] > 0.0f ? z[i] : z[i] * slope;
        break;
    case NET_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            a[i] = 1.0f / (1.0f + expf(-z[i]));
        break;
    case NET_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            a[i] = tanhf(z[i]);
        break;
    }
}

/* d (n) *= f'(z), using a = f(z) where that is cheaper. */
static void activation_backward(float *restrict d, const float *restrict z, const float *restrict a,
                                size_t n, enum net_activation act, float slope)
{
    switch (act) {
    case NET_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            d[i] = z[i] > 0.0f ? d[i] : 0.0f;
        break;
    case NET_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            d[i] = z[i] > 0.0f ? d[i] : d[i] * slope;
        break;
    case NET_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            d[i] *= a[i] * (1.0f - a[i]);
        break;
    case NET_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            d[i] *= 1.0f - a[i] * a[i];
        break;
    }
}

static int net_outputs(const struct net *net)
{
    return net->layer[net->n_layers - 1].out;
}

/* ---- threads: a layer's columns cut into slices for the team ----
 *
 * A large enough layer is cut into column slices, a few per thread, claimed
 * by whichever thread is running (team.h): a busy or descheduled worker just
 * takes fewer. The cut depends only on the layer, the batch and the number
 * of threads, so the same n gives the same bits; each slice is one
 * single-threaded BLAS call. */

/* Below this many multiply-adds a layer runs on the caller alone: the
 * hand-over costs more than the split saves (784-128-64-10: only layers 1
 * and 2 are split). */
#define NET_SPLIT_MIN_WORK (INT64_C(1) << 18)
/* Column slices are multiples of 16 floats (a cache line). */
#define NET_SLICE_ALIGN 16
/* Two slices per thread: a slow worker (a shared core) leaves the caller
 * three of four instead of waiting for half the layer; each more costs a
 * pass packing the gemm's other operand (docs/engine.md, "Threads"). */
#define NET_SLICES_PER_THREAD 2

struct layer_job {
    struct net *net;
    int l; /* the layer */
    int B;
    const float *in; /* (B, I) */
    const float *dz; /* backward: (B, O) */
    float *dx;       /* backward: (B, I), or NULL for the first layer */
    enum grad_mode mode;
    float lr;
    void (*part)(const struct layer_job *j, int c0, int c1, int index);
    int width;  /* columns to split: O forward, I backward */
    int slices; /* of width, each a multiple of NET_SLICE_ALIGN */
};

static void layer_slice(void *ctx, int slice, int thread)
{
    (void)thread;
    const struct layer_job *j = ctx;
    int c0, c1;
    team_split(j->width, j->slices, NET_SLICE_ALIGN, slice, &c0, &c1);
    j->part(j, c0, c1, slice);
}

/* Runs j on the team when it is worth it, else on the calling thread. */
static void layer_run(struct net *net, struct layer_job *j)
{
    const struct net_layer *ly = &net->layer[j->l];
    int64_t work = (int64_t)j->B * ly->in * ly->out;
    if (!net->team || work < NET_SPLIT_MIN_WORK || j->width < 2 * NET_SLICE_ALIGN) {
        j->part(j, 0, j->width, 0);
        return;
    }
    j->slices = team_slices(j->width, net->n_threads * NET_SLICES_PER_THREAD, NET_SLICE_ALIGN);
    team_for(net->team, j->slices, layer_slice, j);
}

static void net_team_stop(struct net *net)
{
    team_destroy(&net->team);
    net->n_threads = 1;
}

int net_set_threads(struct net *net, int n)
{
    if (n < 1 || n > NET_MAX_THREADS) return -EINVAL;
    net_team_stop(net);
    int rc = team_create(&net->team, n);
    if (rc) return rc;
    net->n_threads = n;
    return 0;
}

int net_task_start(struct net *net, void (*fn)(void *ctx), void *ctx)
{
    return team_task_start(net->team, fn, ctx);
}

void net_task_wait(struct net *net)
{
    team_task_wait(net->team);
}

/* Applies the activation to the columns [c0, c1) of the B rows of z. */
static void activation_forward_cols(float *a, const float *z, int B, int O, int c0, int c1,
                                    enum net_activation act, float slope)
{
    for (int r = 0; r < B; r++)
        activation_forward(a + (size_t)r * O + c0, z + (size_t)r * O + c0, (size_t)(c1 - c0), act,
                           slope);
}

static void forward_part(const struct layer_job *j, int c0, int c1, int index)
{
    (void)index;
    const struct net *net = j->net;
    const struct net_layer *ly = &net->layer[j->l];
    float *z = layer_z(net, j->l);
    dense_forward(z, j->in, ly->w, ly->b, j->B, ly->in, ly->out, c0, c1);
    if (j->l < net->n_layers - 1)
        activation_forward_cols(layer_a(net, j->l), z, j->B, ly->out, c0, c1, net->activation,
                                net->leaky_slope);
}

void net_forward(struct net *net, const float *x, int B)
{
    const float *in = x;
    int L = net->n_layers;
    for (int l = 0; l < L; l++) {
        const struct net_layer *ly = &net->layer[l];
        struct layer_job j = {
            .net = net, .l = l, .B = B, .in = in, .part = forward_part, .width = ly->out};
        layer_run(net, &j);
        float *a = layer_a(net, l);
        in = a;
        if (l < L - 1) continue; /* the activation ran with the layer */
        loss_outputs(a, layer_z(net, l), B, ly->out, net->loss, net->output);
    }
}

double net_loss(const struct net *net, const int32_t *y_class, const float *y, int B)
{
    return loss_value(layer_z(net, net->n_layers - 1), net->probs, y_class, y, B, net_outputs(net),
                      net->loss, net->label_smoothing);
}

/* One row (B == 1), plain SGD: w -= lr * (dz x^T), the same rounding as
 * storing the gradient and stepping. A zero dz[o] (a ReLU that was off)
 * leaves row o as it is, so it is skipped. */
static void sgd_outer_cols(float *restrict w, const float *restrict dz, const float *restrict x,
                           int O, int I, int c0, int c1, float lr)
{
    for (int o = 0; o < O; o++) {
        float d = dz[o];
        if (d == 0.0f) continue;
        float *restrict wr = w + (size_t)o * I;
        for (int i = c0; i < c1; i++)
            wr[i] -= lr * (d * x[i]);
    }
}

static void backward_part(const struct layer_job *j, int c0, int c1, int index)
{
    const struct net *net = j->net;
    const struct net_layer *ly = &net->layer[j->l];
    int B = j->B, I = ly->in, O = ly->out;
    if (j->dx) {
        /* Before the weights of these columns change (SGD mode). */
        dense_backward_dx(j->dx, j->dz, ly->w, B, I, O, c0, c1);
        const float *z = layer_z(net, j->l - 1);
        for (int r = 0; r < B; r++) {
            size_t at = (size_t)r * I + (size_t)c0;
            activation_backward(j->dx + at, z + at, j->in + at, (size_t)(c1 - c0), net->activation,
                                net->leaky_slope);
        }
    }
    if (j->mode == GRAD_SGD && B == 1)
        sgd_outer_cols(ly->w, j->dz, j->in, O, I, c0, c1, j->lr);
    else if (j->mode == GRAD_SGD) /* the step folded into the gemm: w += -lr dz^T x */
        dense_backward_dw(ly->w, j->dz, j->in, B, I, O, c0, c1, -j->lr, 1.0f);
    else
        dense_backward_dw(ly->dw, j->dz, j->in, B, I, O, c0, c1, 1.0f,
                          j->mode == GRAD_ADD ? 1.0f : 0.0f);
    if (index == 0) dense_backward_db(ly->db, ly->b, j->dz, B, O, j->mode, j->lr);
}

static void backward(struct net *net, const float *x, const int32_t *y_class, const float *y, int B,
                     enum grad_mode mode, float lr)
{
    int L = net->n_layers;
    size_t half = 0;
    for (int l = 0; l < L; l++)
        if ((size_t)net->layer[l].out > half) half = (size_t)net->layer[l].out;
    half *= (size_t)net->max_batch;
    float *d = net->dacts, *dn = net->dacts + half;

    loss_grad(d, net->probs, y_class, y, B, net_outputs(net), net->loss, net->output,
              net->label_smoothing);
    for (int l = L - 1; l >= 0; l--) {
        struct net_layer *ly = &net->layer[l];
        struct layer_job j = {.net = net,
                              .l = l,
                              .B = B,
                              .in = l ? layer_a(net, l - 1) : x,
                              .dz = d,
                              .dx = l ? dn : NULL,
                              .mode = mode,
                              .lr = lr,
                              .part = backward_part,
                              .width = ly->in};
        layer_run(net, &j);
        float *t = d;
        d = dn;
        dn = t;
    }
}

void net_backward(struct net *net, const float *x, const int32_t *y_class, const float *y, int B)
{
    backward(net, x, y_class, y, B, GRAD_ADD, 0.0f);
}

void net_backward_set(struct net *net, const float *x, const int32_t *y_class, const float *y,
                      int B)
{
    backward(net, x, y_class, y, B, GRAD_SET, 0.0f);
}

void net_backward_sgd(struct net *net, const float *x, const int32_t *y_class, const float *y,
                      int B, float lr)
{
    backward(net, x, y_class, y, B, GRAD_SGD, lr);
}

void net_zero_grad(struct net *net)
{
    memset(net->grads, 0, net->n_params * sizeof *net->grads);
}

static void penalty_grad(float *restrict dw, const float *restrict w, size_t n, float l1, float l2)
{
    if (l1 != 0.0f)
        for (size_t i = 0; i < n; i++)
            dw[i] += w[i] > 0.0f ? l1 : (w[i] < 0.0f ? -l1 : 0.0f);
    if (l2 != 0.0f)
        for (size_t i = 0; i < n; i++)
            dw[i] += l2 * w[i];
}

double net_penalty(struct net *net, double l1, double l2)
{
    if (l1 == 0.0 && l2 == 0.0) return 0.0;
    double sum_abs = 0.0, sum_sq = 0.0;
    for (int l = 0; l < net->n_layers; l++) {
        struct net_layer *ly = &net->layer[l];
        size_t n = (size_t)ly->out * (size_t)ly->in;
        for (size_t i = 0; i < n; i++) {
            double w = ly->w[i];
            sum_abs += fabs(w);
            sum_sq += w * w;
        }
        penalty_grad(ly->dw, ly->w, n, (float)l1, (float)l2);
    }
    return l1 * sum_abs + 0.5 * l2 * sum_sq;
}

const float *net_logits(const struct net *net)
{
    return layer_z(net, net->n_layers - 1);
}

int net_correct(const struct net *net, const int32_t *y_class, int B)
{
    return loss_correct(layer_z(net, net->n_layers - 1), y_class, B, net_outputs(net));
}
