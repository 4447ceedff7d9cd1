/* lstm and gru: nn.LSTM and nn.GRU with batch_first=True, h0 = c0 = 0,
 * one or more layers (num_layers), dropout 0, unidirectional. Input
 * (T, I) -> output (T, H) every step (sequence true, PyTorch's output) or
 * (H) the last step of the last layer (sequence false: h_n[-1], which is
 * output[:, -1]). Backward runs through time.
 *
 * PyTorch's gate order and formulas, per layer and step (x the layer's
 * input at the step, h the previous hidden state):
 *   lstm: [i f g o] = W_ih x + b_ih + W_hh h + b_hh; i, f, o sigmoid,
 *         g tanh; c = f c + i g; h = o tanh(c).
 *   gru:  [r z] = sigmoid(W_ih x + b_ih + W_hh h + b_hh) (their rows),
 *         n = tanh(W_in x + b_in + r (W_hn h + b_hn)); h = (1 - z) n + z h.
 * Tensors per layer k, state_dict's names: weight_ih_lk (G, I_k),
 * weight_hh_lk (G, H), bias_ih_lk (G), bias_hh_lk (G) (bias true); all
 * U(-1/sqrt(H), 1/sqrt(H)) drawn in that order, as reset_parameters.
 *
 * Inside, every buffer is time-major (T, B, .): a step's rows are
 * contiguous, so the input projection of all steps is one gemm, a step's
 * recurrent projection one more, and the weight gradients one gemm each
 * over all steps.
 *
 * Dimensions: B samples, T steps, I input features, H hidden, L layers,
 * G gate rows (4 H for lstm, 3 H for gru). */
#include <math.h>
#include <string.h>

#include "op.h"
#include "seq.h"

#define RNN_MAX_LAYERS 4 /* 4 tensors each: OP_MAX_TENSORS */

extern const struct op_def op_lstm, op_gru;

static const char *const rnn_names[RNN_MAX_LAYERS][4] = {
    {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"},
    {"weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"},
    {"weight_ih_l2", "weight_hh_l2", "bias_ih_l2", "bias_hh_l2"},
    {"weight_ih_l3", "weight_hh_l3", "bias_ih_l3", "bias_hh_l3"},
};

struct rnn_dims {
    int B, T, I, H, L, G;
    bool lstm, bias;
};

static struct rnn_dims rnn_dims(const struct op_node *n, int B)
{
    struct rnn_dims d = {B, n->in[0].d[0],     n->in[0].d[1], n->a.out, n->a.num_layers,
                         0, n->op == &op_lstm, n->a.bias};
    d.G = (d.lstm ? 4 : 3) * d.H;
    return d;
}

static int layer_in(const struct rnn_dims *d, int l)
{
    return l == 0 ? d->I : d->H;
}

static int rnn_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                     size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 2)
        return op_err(err, errlen, "needs a sequence (T, features), got %s%s",
                      shape_str(in, s, sizeof s),
                      in->n == 3 ? ": to read images row by row give model.input [H, W] (rows "
                                   "as steps) for one-channel images"
                                 : "");
    if (a->out < 1)
        return op_err(err, errlen, "out (hidden size) must be at least 1, got %d", a->out);
    if (a->num_layers < 1 || a->num_layers > RNN_MAX_LAYERS)
        return op_err(err, errlen, "num_layers must be 1 to %d, got %d", RNN_MAX_LAYERS,
                      a->num_layers);
    *out = a->sequence ? (struct shape){2, {in->d[0], a->out}} : (struct shape){1, {a->out}};
    return 0;
}

static int rnn_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    struct rnn_dims d = rnn_dims(n, 1);
    int k = 0;
    for (int l = 0; l < d.L; l++) {
        t[k++] = (struct op_tensor){rnn_names[l][0], OP_PARAM, 2, {d.G, layer_in(&d, l)}};
        t[k++] = (struct op_tensor){rnn_names[l][1], OP_PARAM, 2, {d.G, d.H}};
        if (!d.bias) continue;
        t[k++] = (struct op_tensor){rnn_names[l][2], OP_PARAM, 1, {d.G}};
        t[k++] = (struct op_tensor){rnn_names[l][3], OP_PARAM, 1, {d.G}};
    }
    return k;
}

/* A layer's parameters inside the node's slice. */
struct rnn_params {
    float *w_ih; /* (G, I_l) */
    float *w_hh; /* (G, H) */
    float *b_ih; /* (G) or NULL */
    float *b_hh; /* (G) or NULL */
};

static struct rnn_params layer_params(const struct rnn_dims *d, float *base, int l)
{
    float *p = base;
    for (int k = 0; k < l; k++)
        p += (size_t)d->G * (layer_in(d, k) + d->H + (d->bias ? 2 : 0));
    struct rnn_params r;
    r.w_ih = p;
    r.w_hh = r.w_ih + (size_t)d->G * layer_in(d, l);
    r.b_ih = d->bias ? r.w_hh + (size_t)d->G * d->H : NULL;
    r.b_hh = d->bias ? r.b_ih + d->G : NULL;
    return r;
}

static void rnn_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    struct rnn_dims d = rnn_dims(n, 1);
    float bound = 1.0f / sqrtf((float)d.H);
    size_t total = 0;
    for (int l = 0; l < d.L; l++)
        total += (size_t)d.G * (layer_in(&d, l) + d.H + (d.bias ? 2 : 0));
    op_uniform(param, total, bound, r);
}

/* What forward keeps, per layer: A (T, B, G) the activated gates, S (T, B,
 * H) lstm's cells or gru's W_hn h + b_hn, Y (T, B, H) the hidden states;
 * before them X (T, B, I) the input, time-major. */
struct rnn_saved {
    float *x;
    float *a[RNN_MAX_LAYERS], *s[RNN_MAX_LAYERS], *y[RNN_MAX_LAYERS];
};

static struct rnn_saved saved_views(const struct rnn_dims *d, float *base)
{
    struct rnn_saved v;
    size_t TB = (size_t)d->T * d->B;
    v.x = base;
    float *p = base + TB * d->I;
    for (int l = 0; l < d->L; l++) {
        v.a[l] = p;
        v.s[l] = v.a[l] + TB * d->G;
        v.y[l] = v.s[l] + TB * d->H;
        p = v.y[l] + TB * d->H;
    }
    return v;
}

static size_t rnn_saved(const struct op_node *n, int B)
{
    struct rnn_dims d = rnn_dims(n, B);
    return (size_t)d.T * B * (d.I + (size_t)d.L * (d.G + 2 * d.H));
}

/* Backward's buffers: dA (T, B, G) gate gradients, dR (T, B, G) gru's
 * recurrent ones, dY0, dY1 (T, B, max(H, I)) a layer's output gradient and
 * its input's, dh, dc (B, H); forward's R (B, G). */
struct rnn_scratch {
    float *da, *dr, *dy[2], *dh, *dc, *r;
};

static struct rnn_scratch scratch_views(const struct rnn_dims *d, float *base)
{
    struct rnn_scratch v;
    size_t TB = (size_t)d->T * d->B, F = d->H > d->I ? d->H : d->I;
    v.da = base;
    v.dr = v.da + TB * d->G;
    v.dy[0] = v.dr + (d->lstm ? 0 : TB * d->G);
    v.dy[1] = v.dy[0] + TB * F;
    v.dh = v.dy[1] + TB * F;
    v.dc = v.dh + (size_t)d->B * d->H;
    v.r = v.dc + (size_t)d->B * d->H;
    return v;
}

static size_t rnn_scratch(const struct op_node *n, int B)
{
    struct rnn_dims d = rnn_dims(n, B);
    size_t TB = (size_t)d.T * B, F = d.H > d.I ? d.H : d.I;
    return TB * ((d.lstm ? 1 : 2) * (size_t)d.G + 2 * F) + (size_t)B * (2 * d.H + d.G);
}

/* ---- forward ---- */

static void lstm_step(const struct rnn_dims *d, float *a, float *cell, float *h,
                      const float *cell_prev)
{
    int B = d->B, H = d->H, G = d->G;
    for (int b = 0; b < B; b++) {
        float *g = a + (size_t)b * G;
        float *c = cell + (size_t)b * H, *y = h + (size_t)b * H;
        const float *cp = cell_prev ? cell_prev + (size_t)b * H : NULL;
        for (int j = 0; j < H; j++) {
            float i = seq_sigmoid(g[j]), f = seq_sigmoid(g[H + j]);
            float gg = seq_tanh(g[2 * H + j]), o = seq_sigmoid(g[3 * H + j]);
            float cv = i * gg + (cp ? f * cp[j] : 0.0f);
            g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
            c[j] = cv;
            y[j] = o * seq_tanh(cv);
        }
    }
}

/* a holds W_ih x + b_ih, r holds W_hh h + b_hh (B, G). */
static void gru_step(const struct rnn_dims *d, float *a, const float *r, float *hn, float *h,
                     const float *h_prev)
{
    int B = d->B, H = d->H, G = d->G;
    for (int b = 0; b < B; b++) {
        float *g = a + (size_t)b * G;
        const float *rr = r + (size_t)b * G;
        float *s = hn + (size_t)b * H, *y = h + (size_t)b * H;
        const float *hp = h_prev ? h_prev + (size_t)b * H : NULL;
        for (int j = 0; j < H; j++) {
            float rg = seq_sigmoid(g[j] + rr[j]), z = seq_sigmoid(g[H + j] + rr[H + j]);
            float nv = seq_tanh(g[2 * H + j] + rg * rr[2 * H + j]);
            g[j] = rg, g[H + j] = z, g[2 * H + j] = nv;
            s[j] = rr[2 * H + j];
            y[j] = (1.0f - z) * nv + (hp ? z * hp[j] : 0.0f);
        }
    }
}

static void rnn_forward(const struct op_call *c)
{
    struct rnn_dims d = rnn_dims(c->node, c->B);
    struct rnn_saved sv = saved_views(&d, c->saved);
    struct rnn_scratch sc = scratch_views(&d, c->scratch);
    int B = d.B, T = d.T, H = d.H, G = d.G;
    size_t TB = (size_t)T * B;
    seq_to_time_major(sv.x, c->in[0], B, T, d.I);
    for (int l = 0; l < d.L; l++) {
        struct rnn_params p = layer_params(&d, c->param, l);
        const float *x = l ? sv.y[l - 1] : sv.x;
        int I = layer_in(&d, l);
        float *a = sv.a[l];
        float beta = 0.0f;
        if (d.bias) {
            for (size_t r = 0; r < TB; r++)
                for (int g = 0; g < G; g++)
                    a[r * G + g] = p.b_ih[g] + (d.lstm ? p.b_hh[g] : 0.0f);
            beta = 1.0f;
        }
        seq_gemm(c, false, true, (int)TB, G, I, 1.0f, x, I, p.w_ih, I, beta, a, G);
        for (int t = 0; t < T; t++) {
            float *at = a + (size_t)t * B * G;
            float *yt = sv.y[l] + (size_t)t * B * H, *st = sv.s[l] + (size_t)t * B * H;
            const float *yp = t ? yt - (size_t)B * H : NULL;
            if (d.lstm) {
                if (t) seq_gemm(c, false, true, B, G, H, 1.0f, yp, H, p.w_hh, H, 1.0f, at, G);
                lstm_step(&d, at, st, yt, t ? st - (size_t)B * H : NULL);
                continue;
            }
            for (int b = 0; b < B; b++)
                for (int g = 0; g < G; g++)
                    sc.r[(size_t)b * G + g] = d.bias ? p.b_hh[g] : 0.0f;
            if (t) seq_gemm(c, false, true, B, G, H, 1.0f, yp, H, p.w_hh, H, 1.0f, sc.r, G);
            gru_step(&d, at, sc.r, st, yt, yp);
        }
    }
    const float *top = sv.y[d.L - 1];
    if (c->node->a.sequence)
        seq_to_batch_major(c->out, top, B, T, H);
    else
        memcpy(c->out, top + (size_t)(T - 1) * B * H, (size_t)B * H * sizeof *c->out);
}

/* ---- backward ---- */

/* One step back through an lstm layer: dh (B, H) the hidden state's whole
 * gradient, dc (B, H) the cell's from the step after (updated to the
 * previous step's); da (B, G) the gates' pre-activation gradients. */
static void lstm_step_back(const struct rnn_dims *d, float *da, const float *a, const float *cell,
                           const float *cell_prev, const float *dh, float *dc)
{
    int B = d->B, H = d->H, G = d->G;
    for (int b = 0; b < B; b++) {
        const float *g = a + (size_t)b * G;
        float *dg = da + (size_t)b * G;
        const float *cv = cell + (size_t)b * H, *cp = cell_prev ? cell_prev + (size_t)b * H : NULL;
        const float *dhb = dh + (size_t)b * H;
        float *dcb = dc + (size_t)b * H;
        for (int j = 0; j < H; j++) {
            float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
            float tc = seq_tanh(cv[j]);
            float dcv = dcb[j] + dhb[j] * o * (1.0f - tc * tc);
            float di = dcv * gg, df = cp ? dcv * cp[j] : 0.0f, dgg = dcv * i;
            float d_o = dhb[j] * tc;
            dg[j] = di * i * (1.0f - i);
            dg[H + j] = df * f * (1.0f - f);
            dg[2 * H + j] = dgg * (1.0f - gg * gg);
            dg[3 * H + j] = d_o * o * (1.0f - o);
            dcb[j] = dcv * f;
        }
    }
}

/* One step back through a gru layer: da (B, G) the input projection's
 * gradients, dr (B, G) the recurrent one's; dh (B, H) becomes the direct
 * part of the previous hidden state's gradient (z dh). */
static void gru_step_back(const struct rnn_dims *d, float *da, float *dr, const float *a,
                          const float *hn, const float *h_prev, float *dh)
{
    int B = d->B, H = d->H, G = d->G;
    for (int b = 0; b < B; b++) {
        const float *g = a + (size_t)b * G, *s = hn + (size_t)b * H;
        const float *hp = h_prev ? h_prev + (size_t)b * H : NULL;
        float *dg = da + (size_t)b * G, *dq = dr + (size_t)b * G, *dhb = dh + (size_t)b * H;
        for (int j = 0; j < H; j++) {
            float rg = g[j], z = g[H + j], nv = g[2 * H + j];
            float dy = dhb[j], hpv = hp ? hp[j] : 0.0f;
            float dn = dy * (1.0f - z) * (1.0f - nv * nv);
            float dz = dy * (hpv - nv) * z * (1.0f - z);
            float drg = dn * s[j] * rg * (1.0f - rg);
            dg[j] = drg, dg[H + j] = dz, dg[2 * H + j] = dn;
            dq[j] = drg, dq[H + j] = dz, dq[2 * H + j] = dn * rg;
            dhb[j] = dy * z;
        }
    }
}

/* db (G) += the column sums of d (rows, G), in row order. */
static void bias_grad(float *restrict db, const float *restrict dv, size_t rows, int G)
{
    for (size_t r = 0; r < rows; r++)
        for (int g = 0; g < G; g++)
            db[g] += dv[r * G + g];
}

static void rnn_backward(const struct op_call *c)
{
    struct rnn_dims d = rnn_dims(c->node, c->B);
    struct rnn_saved sv = saved_views(&d, c->saved);
    struct rnn_scratch sc = scratch_views(&d, c->scratch);
    int B = d.B, T = d.T, H = d.H, G = d.G;
    size_t TB = (size_t)T * B, BH = (size_t)B * H;
    /* dY of the top layer, time-major. */
    float *dy = sc.dy[0];
    if (c->node->a.sequence) {
        seq_to_time_major(dy, c->dout, B, T, H);
    } else {
        memset(dy, 0, TB * H * sizeof *dy);
        memcpy(dy + (size_t)(T - 1) * BH, c->dout, BH * sizeof *dy);
    }
    for (int l = d.L - 1; l >= 0; l--) {
        struct rnn_params p = layer_params(&d, c->param, l);
        struct rnn_params gp = layer_params(&d, c->grad, l);
        const float *x = l ? sv.y[l - 1] : sv.x;
        int I = layer_in(&d, l);
        float *dr = d.lstm ? sc.da : sc.dr; /* the recurrent projection's gradients */
        memset(sc.dh, 0, BH * sizeof *sc.dh);
        memset(sc.dc, 0, BH * sizeof *sc.dc);
        for (int t = T - 1; t >= 0; t--) {
            size_t at = (size_t)t * B * G, ht = (size_t)t * BH;
            /* dh = this step's output gradient + what the next step sent */
            for (size_t k = 0; k < BH; k++)
                sc.dh[k] += dy[ht + k];
            if (d.lstm) {
                lstm_step_back(&d, sc.da + at, sv.a[l] + at, sv.s[l] + ht,
                               t ? sv.s[l] + ht - BH : NULL, sc.dh, sc.dc);
                if (t)
                    seq_gemm(c, false, false, B, H, G, 1.0f, sc.da + at, G, p.w_hh, H, 0.0f, sc.dh,
                             H);
            } else {
                gru_step_back(&d, sc.da + at, sc.dr + at, sv.a[l] + at, sv.s[l] + ht,
                              t ? sv.y[l] + ht - BH : NULL, sc.dh);
                if (t)
                    seq_gemm(c, false, false, B, H, G, 1.0f, sc.dr + at, G, p.w_hh, H, 1.0f, sc.dh,
                             H);
            }
        }
        seq_gemm(c, true, false, G, I, (int)TB, 1.0f, sc.da, G, x, I, 1.0f, gp.w_ih, I);
        if (T > 1)
            seq_gemm(c, true, false, G, H, (int)(TB - (size_t)B), 1.0f, dr + (size_t)B * G, G,
                     sv.y[l], H, 1.0f, gp.w_hh, H);
        if (d.bias) {
            bias_grad(gp.b_ih, sc.da, TB, G);
            bias_grad(gp.b_hh, dr, TB, G);
        }
        float *dx = sc.dy[(d.L - 1 - l + 1) % 2];
        if (l == 0 && !c->din[0]) break;
        seq_gemm(c, false, false, (int)TB, I, G, 1.0f, sc.da, G, p.w_ih, I, 0.0f, dx, I);
        if (l == 0) seq_to_batch_major(c->din[0], dx, B, T, d.I);
        dy = dx;
    }
}

static const struct op_test lstm_tests[] = {
    {"1 layer, sequence",
     {.out = 4, .num_layers = 1, .bias = true, .sequence = true},
     {{2, {3, 3}}},
     2,
     false,
     0},
    {"2 layers, last step",
     {.out = 3, .num_layers = 2, .bias = true, .sequence = false},
     {{2, {4, 2}}},
     3,
     false,
     0},
    {"no bias, one step",
     {.out = 5, .num_layers = 1, .bias = false, .sequence = true},
     {{2, {1, 6}}},
     2,
     false,
     0},
};

static const struct op_test gru_tests[] = {
    {"1 layer, sequence",
     {.out = 4, .num_layers = 1, .bias = true, .sequence = true},
     {{2, {3, 3}}},
     2,
     false,
     0},
    {"2 layers, last step",
     {.out = 3, .num_layers = 2, .bias = true, .sequence = false},
     {{2, {4, 2}}},
     3,
     false,
     0},
    {"no bias, one step",
     {.out = 5, .num_layers = 1, .bias = false, .sequence = true},
     {{2, {1, 6}}},
     2,
     false,
     0},
};

static const char *const rnn_fields[] = {"out", "num_layers", "bias", "sequence", NULL};

const struct op_def op_lstm = {
    .type = "lstm",
    .abbrev = "lstm",
    .n_inputs = 1,
    .fields = rnn_fields,
    .infer = rnn_infer,
    .tensors = rnn_tensors,
    .init = rnn_init,
    .saved = rnn_saved,
    .scratch = rnn_scratch,
    .forward = rnn_forward,
    .backward = rnn_backward,
    .tests = lstm_tests,
    .n_tests = sizeof lstm_tests / sizeof lstm_tests[0],
};

const struct op_def op_gru = {
    .type = "gru",
    .abbrev = "gru",
    .n_inputs = 1,
    .fields = rnn_fields,
    .infer = rnn_infer,
    .tensors = rnn_tensors,
    .init = rnn_init,
    .saved = rnn_saved,
    .scratch = rnn_scratch,
    .forward = rnn_forward,
    .backward = rnn_backward,
    .tests = gru_tests,
    .n_tests = sizeof gru_tests / sizeof gru_tests[0],
};
