/* Dense network forward/backward over one parameter buffer.
 *
 * Dimensions: B = batch rows, I = inputs of a layer, O = outputs of a layer,
 * K = outputs of the network, L = number of layers, P = parameters.
 * All matrices are row-major; a batch is (B, I) with one example per row. */
#include "net.h"

#include <cblas.h>
/* cblas.h pulls in complex.h; I is our input width, not sqrt(-1). */
#undef I
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int net_create(struct net *net, const struct mlq_spec *spec)
{
    memset(net, 0, sizeof *net);
    if (spec->n_layers < 1 || spec->n_layers > SPEC_MAX_LAYERS) return -EINVAL;
    net->n_layers = spec->n_layers;
    net->activation = spec->activation;
    net->leaky_slope = (float)spec->leaky_slope;
    net->output = spec->output;
    net->loss = spec->loss;

    size_t P = 0;
    for (int l = 0; l < net->n_layers; l++) {
        int I = spec->layers[l], O = spec->layers[l + 1];
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

/* OpenBLAS's gemm has a fixed cost that dominates at one row; gemv and ger
 * are several times faster there (see docs/engine.md). */
static void dense_forward(float *restrict z, const float *restrict x, const float *restrict w,
                          const float *restrict b, int B, int I, int O)
{
    for (int r = 0; r < B; r++)
        memcpy(z + (size_t)r * O, b, (size_t)O * sizeof *z);
    if (B == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, O, I, 1.0f, w, I, x, 1, 1.0f, z, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, O, I, 1.0f, x, I, w, I, 1.0f, z, O);
}

/* Accumulates dw (O, I) += dz^T x and db (O) += column sums of dz (B, O).
 * dx (B, I), scratch, is overwritten with dz w; NULL skips it (first layer). */
static void dense_backward(float *restrict dx, float *restrict dw, float *restrict db,
                           const float *restrict dz, const float *restrict x,
                           const float *restrict w, int B, int I, int O)
{
    if (B == 1)
        cblas_sger(CblasRowMajor, O, I, 1.0f, dz, 1, x, 1, dw, I);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, B, 1.0f, dz, O, x, I, 1.0f, dw,
                    I);
    for (int r = 0; r < B; r++) {
        const float *row = dz + (size_t)r * O;
        for (int o = 0; o < O; o++)
            db[o] += row[o];
    }
    if (!dx) return;
    if (B == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, O, I, 1.0f, w, I, dz, 1, 0.0f, dx, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, I, O, 1.0f, dz, O, w, I, 0.0f, dx,
                    I);
}

/* ---- element-wise: one switch per call, plain loops inside ---- */

static void activation_forward(float *restrict a, const float *restrict z, size_t n,
                               enum activation act, float slope)
{
    switch (act) {
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            a[i] = z[i] > 0.0f ? z[i] : 0.0f;
        break;
    case ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            a[i] = z[i] > 0.0f ? z[i] : z[i] * slope;
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            a[i] = 1.0f / (1.0f + expf(-z[i]));
        break;
    case ACT_TANH:
        for (size_t i = 0; i < n; i++)
            a[i] = tanhf(z[i]);
        break;
    }
}

/* d (n) *= f'(z), using a = f(z) where that is cheaper. */
static void activation_backward(float *restrict d, const float *restrict z, const float *restrict a,
                                size_t n, enum activation act, float slope)
{
    switch (act) {
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            d[i] = z[i] > 0.0f ? d[i] : 0.0f;
        break;
    case ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            d[i] = z[i] > 0.0f ? d[i] : d[i] * slope;
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            d[i] *= a[i] * (1.0f - a[i]);
        break;
    case ACT_TANH:
        for (size_t i = 0; i < n; i++)
            d[i] *= 1.0f - a[i] * a[i];
        break;
    }
}

/* Row-wise softmax, shifted by the row max so exp never overflows. */
static void softmax_rows(float *restrict p, const float *restrict z, int B, int K)
{
    for (int r = 0; r < B; r++) {
        const float *zr = z + (size_t)r * K;
        float *pr = p + (size_t)r * K;
        float mx = zr[0];
        for (int k = 1; k < K; k++)
            mx = zr[k] > mx ? zr[k] : mx;
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            pr[k] = expf(zr[k] - mx);
            sum += pr[k];
        }
        float inv = 1.0f / sum;
        for (int k = 0; k < K; k++)
            pr[k] *= inv;
    }
}

static int net_outputs(const struct net *net)
{
    return net->layer[net->n_layers - 1].out;
}

void net_forward(struct net *net, const float *x, int B)
{
    const float *in = x;
    int L = net->n_layers;
    for (int l = 0; l < L; l++) {
        const struct net_layer *ly = &net->layer[l];
        float *z = layer_z(net, l), *a = layer_a(net, l);
        size_t n = (size_t)B * (size_t)ly->out;
        dense_forward(z, in, ly->w, ly->b, B, ly->in, ly->out);
        if (l < L - 1)
            activation_forward(a, z, n, net->activation, net->leaky_slope);
        else if (net->loss == LOSS_CROSS_ENTROPY)
            softmax_rows(a, z, B, ly->out);
        else if (net->output == OUT_SIGMOID)
            activation_forward(a, z, n, ACT_SIGMOID, 0.0f);
        else
            memcpy(a, z, n * sizeof *a);
        in = a;
    }
}

double net_loss(const struct net *net, const int32_t *y_class, const float *y, int B)
{
    int K = net_outputs(net);
    double total = 0.0;
    if (net->loss == LOSS_CROSS_ENTROPY) {
        /* From the logits in double: -log softmax = logsumexp(z) - z_y. */
        const float *z = layer_z(net, net->n_layers - 1);
        for (int r = 0; r < B; r++) {
            const float *zr = z + (size_t)r * K;
            if (y_class[r] < 0 || y_class[r] >= K) return NAN;
            double mx = zr[0];
            for (int k = 1; k < K; k++)
                mx = zr[k] > mx ? zr[k] : mx;
            double sum = 0.0;
            for (int k = 0; k < K; k++)
                sum += exp((double)zr[k] - mx);
            total += log(sum) + mx - (double)zr[y_class[r]];
        }
        return total / B;
    }
    size_t n = (size_t)B * (size_t)K;
    for (size_t i = 0; i < n; i++) {
        double d = (double)net->probs[i] - (double)y[i];
        total += d * d;
    }
    return total / (double)n;
}

/* d (B, K) = d(mean loss)/d(last layer's z). */
static void output_grad(const struct net *net, float *restrict d, const int32_t *y_class,
                        const float *y, int B)
{
    int K = net_outputs(net);
    size_t n = (size_t)B * (size_t)K;
    const float *restrict p = net->probs;
    if (net->loss == LOSS_CROSS_ENTROPY) {
        /* Fused softmax + cross-entropy: (p - onehot(y)) / B. */
        float scale = 1.0f / (float)B;
        for (size_t i = 0; i < n; i++)
            d[i] = p[i] * scale;
        for (int r = 0; r < B; r++)
            if (y_class[r] >= 0 && y_class[r] < K) /* the loader rejects others */
                d[(size_t)r * K + y_class[r]] -= scale;
        return;
    }
    float scale = 2.0f / (float)n;
    for (size_t i = 0; i < n; i++)
        d[i] = (p[i] - y[i]) * scale;
    if (net->output == OUT_SIGMOID)
        for (size_t i = 0; i < n; i++)
            d[i] *= p[i] * (1.0f - p[i]);
}

void net_backward(struct net *net, const float *x, const int32_t *y_class, const float *y, int B)
{
    int L = net->n_layers;
    size_t half = 0;
    for (int l = 0; l < L; l++)
        if ((size_t)net->layer[l].out > half) half = (size_t)net->layer[l].out;
    half *= (size_t)net->max_batch;
    float *d = net->dacts, *dn = net->dacts + half;

    output_grad(net, d, y_class, y, B);
    for (int l = L - 1; l >= 0; l--) {
        struct net_layer *ly = &net->layer[l];
        const float *in = l ? layer_a(net, l - 1) : x;
        dense_backward(l ? dn : NULL, ly->dw, ly->db, d, in, ly->w, B, ly->in, ly->out);
        if (l) {
            activation_backward(dn, layer_z(net, l - 1), in, (size_t)B * (size_t)ly->in,
                                net->activation, net->leaky_slope);
            float *t = d;
            d = dn;
            dn = t;
        }
    }
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

int net_correct(const struct net *net, const int32_t *y_class, int B)
{
    /* Arg max of the logits: softmax is monotone but may round two apart
     * logits to the same probability. First maximum wins, as torch.argmax. */
    int K = net_outputs(net);
    const float *z = layer_z(net, net->n_layers - 1);
    int correct = 0;
    for (int r = 0; r < B; r++) {
        const float *zr = z + (size_t)r * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (zr[k] > zr[best]) best = k;
        correct += best == y_class[r];
    }
    return correct;
}
