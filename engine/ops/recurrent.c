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
 * its input's, dh, dc (B, H); forward's R (B, G) and the biases b (2 G). */
struct rnn_scratch {
    float *da, *dr, *dy[2], *dh, *dc, *r, *b;
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
    v.b = v.r + (size_t)d->B * d->G;
    return v;
}

static size_t rnn_scratch(const struct op_node *n, int B)
{
    struct rnn_dims d = rnn_dims(n, B);
    size_t TB = (size_t)d.T * B, F = d.H > d.I ? d.H : d.I;
    return TB * ((d.lstm ? 1 : 2) * (size_t)d.G + 2 * F) + (size_t)B * (2 * d.H + d.G) + 2 * d.G;
}

/* ---- threads ---- */

/* A step is cut over the team by hidden units, in runs fixed by H alone
 * (op_for_range: at least RNN_MIN_UNITS units, multiples of 16): a run
 * computes the gate pre-activations of its units (one gemm per gate block
 * over their W_hh rows), then their cells and hidden states, and the
 * backward step likewise its units' columns of dh = dA W_hh and its gates'
 * gradients. A step needs every unit of the step before, so each step is
 * one team job and nothing else waits. */
#define RNN_MIN_UNITS 64

/* The per-row kernels below are inlined with `first` a constant, so that
 * each of their loops is a straight line GCC vectorises (vmath.h); the
 * previous step's row is not read at the first step. Each handles the n
 * units of a run: g and the gate rows point at the run's first unit, gate
 * blocks H apart. */
#define RNN_INLINE static inline __attribute__((always_inline))

/* ---- forward ---- */

/* One row of an lstm step: g (G) W_ih x + W_hh h, replaced by the
 * activated gates; bs (G) b_ih + b_hh; c, y (H) the cell and the hidden
 * state; cp (H) the previous cell. */
RNN_INLINE void lstm_row(float *restrict g, const float *restrict bs, float *restrict c,
                         float *restrict y, const float *restrict cp, int H, int n, bool first)
{
    for (int j = 0; j < n; j++) {
        float i = vm_sigmoidf(g[j] + bs[j]), f = vm_sigmoidf(g[H + j] + bs[H + j]);
        float gg = vm_tanhf(g[2 * H + j] + bs[2 * H + j]);
        float o = vm_sigmoidf(g[3 * H + j] + bs[3 * H + j]);
        float cv = first ? i * gg : i * gg + f * cp[j];
        g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
        c[j] = cv;
        y[j] = o * vm_tanhf(cv);
    }
}

/* One row of a gru step: g (G) W_ih x, replaced by r, z, n; bi, bh (G)
 * b_ih, b_hh; rr (G) W_hh h (not read at the first step, where h is 0);
 * s (H) receives W_hn h + b_hn; y (H) the hidden state, hp (H) the
 * previous one. */
RNN_INLINE void gru_row(float *restrict g, const float *restrict bi, const float *restrict bh,
                        const float *restrict rr, float *restrict s, float *restrict y,
                        const float *restrict hp, int H, int n, bool first)
{
    for (int j = 0; j < n; j++) {
        float qr = first ? bh[j] : rr[j] + bh[j], qz = first ? bh[H + j] : rr[H + j] + bh[H + j];
        float qn = first ? bh[2 * H + j] : rr[2 * H + j] + bh[2 * H + j];
        float rg = vm_sigmoidf((g[j] + bi[j]) + qr);
        float z = vm_sigmoidf((g[H + j] + bi[H + j]) + qz);
        float nv = vm_tanhf((g[2 * H + j] + bi[2 * H + j]) + rg * qn);
        g[j] = rg, g[H + j] = z, g[2 * H + j] = nv;
        s[j] = qn;
        y[j] = first ? (1.0f - z) * nv : (1.0f - z) * nv + z * hp[j];
    }
}

/* One step of a layer, for the team's runs of units. */
struct rnn_step_job {
    const struct rnn_dims *d;
    struct rnn_params p;
    const float *b; /* lstm: (G) b_ih + b_hh; gru: (2 G) b_ih, b_hh; zeros without bias */
    float *a;       /* (B, G) the step's gates: W_ih x on entry */
    float *r;       /* gru: (B, G) the recurrent projection */
    float *s, *y;   /* (B, H) the step's cells (or W_hn h + b_hn) and hidden states */
    const float *s_prev, *y_prev; /* the previous step's, NULL at the first */
};

/* m (B, G)'s gate columns of units [j0, j1) = beta m + y_prev (B, H)
 * W_hh's rows of those units, one gemm per gate block. */
static void rnn_recur_gemm(const struct rnn_dims *d, const float *w_hh, const float *y_prev,
                           float beta, float *m, int j0, int j1)
{
    int H = d->H, G = d->G;
    for (int k = 0; k < G / H; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->B, j1 - j0, H, 1.0f, y_prev, H,
                    w_hh + ((size_t)k * H + j0) * H, H, beta, m + (size_t)k * H + j0, G);
}

VM_CLONES static void rnn_step_units(const struct op_call *c, int j0, int j1, float *scratch,
                                     void *ctx)
{
    (void)c, (void)scratch;
    const struct rnn_step_job *j = ctx;
    const struct rnn_dims *d = j->d;
    int H = d->H, G = d->G, n = j1 - j0;
    /* lstm: the recurrent projection adds into the gates, the biases
     * follow in the row; gru keeps W_hh h apart (r scales its n rows) */
    if (j->y_prev)
        rnn_recur_gemm(d, j->p.w_hh, j->y_prev, d->lstm ? 1.0f : 0.0f, d->lstm ? j->a : j->r, j0,
                       j1);
    const float *b = j->b + j0, *bh = j->b + G + j0;
    for (int r = 0; r < d->B; r++) {
        size_t ag = (size_t)r * G + j0, ah = (size_t)r * H + j0;
        if (d->lstm && j->s_prev)
            lstm_row(j->a + ag, b, j->s + ah, j->y + ah, j->s_prev + ah, H, n, false);
        else if (d->lstm)
            lstm_row(j->a + ag, b, j->s + ah, j->y + ah, NULL, H, n, true);
        else if (j->y_prev)
            gru_row(j->a + ag, b, bh, j->r + ag, j->s + ah, j->y + ah, j->y_prev + ah, H, n, false);
        else
            gru_row(j->a + ag, b, bh, NULL, j->s + ah, j->y + ah, NULL, H, n, true);
    }
}

static void rnn_forward(const struct op_call *c)
{
    struct rnn_dims d = rnn_dims(c->node, c->B);
    struct rnn_saved sv = saved_views(&d, c->saved);
    struct rnn_scratch sc = scratch_views(&d, c->scratch);
    int B = d.B, T = d.T, H = d.H, G = d.G;
    size_t TB = (size_t)T * B, BH = (size_t)B * H;
    seq_to_time_major(sv.x, c->in[0], B, T, d.I);
    for (int l = 0; l < d.L; l++) {
        struct rnn_params p = layer_params(&d, c->param, l);
        const float *x = l ? sv.y[l - 1] : sv.x;
        int I = layer_in(&d, l);
        float *a = sv.a[l];
        seq_gemm(c, false, true, (int)TB, G, I, 1.0f, x, I, p.w_ih, I, 0.0f, a, G);
        /* lstm: b_ih + b_hh; gru: b_ih, b_hh; added in each step's rows */
        for (int g = 0; g < G; g++)
            if (!d.bias)
                sc.b[g] = sc.b[G + g] = 0.0f;
            else if (d.lstm)
                sc.b[g] = p.b_ih[g] + p.b_hh[g];
            else
                sc.b[g] = p.b_ih[g], sc.b[G + g] = p.b_hh[g];
        struct rnn_step_job j = {.d = &d, .p = p, .b = sc.b, .r = sc.r};
        for (int t = 0; t < T; t++) {
            j.a = a + (size_t)t * B * G;
            j.y = sv.y[l] + (size_t)t * BH, j.s = sv.s[l] + (size_t)t * BH;
            j.y_prev = t ? j.y - BH : NULL, j.s_prev = t ? j.s - BH : NULL;
            op_for_range(c, H, 16, RNN_MIN_UNITS, rnn_step_units, &j);
        }
    }
    const float *top = sv.y[d.L - 1];
    if (c->node->a.sequence)
        seq_to_batch_major(c->out, top, B, T, H);
    else
        memcpy(c->out, top + (size_t)(T - 1) * BH, BH * sizeof *c->out);
}

/* ---- backward ---- */

/* One row back through an lstm step: g (G) the activated gates, c, cp
 * (H) the cell and the previous one, dh (H) the hidden state's whole
 * gradient, dc (H) the cell's from the step after (replaced by the
 * previous step's); dg (G) receives the gates' pre-activation gradients. */
RNN_INLINE void lstm_row_back(float *restrict dg, const float *restrict g, const float *restrict c,
                              const float *restrict cp, const float *restrict dh,
                              float *restrict dc, int H, int n, bool first)
{
    for (int j = 0; j < n; j++) {
        float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        float tc = vm_tanhf(c[j]);
        float dcv = dc[j] + dh[j] * o * (1.0f - tc * tc);
        float di = dcv * gg, df = first ? 0.0f : dcv * cp[j], dgg = dcv * i;
        float d_o = dh[j] * tc;
        dg[j] = di * i * (1.0f - i);
        dg[H + j] = df * f * (1.0f - f);
        dg[2 * H + j] = dgg * (1.0f - gg * gg);
        dg[3 * H + j] = d_o * o * (1.0f - o);
        dc[j] = dcv * f;
    }
}

/* One row back through a gru step: g (G) r, z, n; s (H) W_hn h + b_hn; hp
 * (H) the previous hidden state; dh (H) the hidden state's whole gradient,
 * replaced by the direct part of the previous one's (z dh); dg, dq (G)
 * receive the input and the recurrent projections' gradients. */
RNN_INLINE void gru_row_back(float *restrict dg, float *restrict dq, const float *restrict g,
                             const float *restrict s, const float *restrict hp, float *restrict dh,
                             int H, int n, bool first)
{
    for (int j = 0; j < n; j++) {
        float rg = g[j], z = g[H + j], nv = g[2 * H + j];
        float dy = dh[j], hpv = first ? 0.0f : hp[j];
        float dn = dy * (1.0f - z) * (1.0f - nv * nv);
        float dz = dy * (hpv - nv) * z * (1.0f - z);
        float drg = dn * s[j] * rg * (1.0f - rg);
        dg[j] = drg, dg[H + j] = dz, dg[2 * H + j] = dn;
        dq[j] = drg, dq[H + j] = dz, dq[2 * H + j] = dn * rg;
        dh[j] = dy * z;
    }
}

/* One step back of a layer, for the team's runs of units. */
struct rnn_back_job {
    const struct rnn_dims *d;
    const float *w_hh;
    const float *dr_next;         /* (B, G) the next step's recurrent gradients, NULL at the last */
    const float *dy;              /* (B, H) the step's output gradient, or NULL: none */
    float *da, *dr;               /* (B, G) the step's gate and gru's recurrent gradients */
    const float *a, *s;           /* the step's saved gates and cells (or W_hn h + b_hn) */
    const float *s_prev, *y_prev; /* the previous step's, NULL at the first */
    float *dh, *dc;               /* (B, H) */
};

VM_CLONES static void rnn_back_units(const struct op_call *c, int j0, int j1, float *scratch,
                                     void *ctx)
{
    (void)c, (void)scratch;
    const struct rnn_back_job *j = ctx;
    const struct rnn_dims *d = j->d;
    int B = d->B, H = d->H, G = d->G, n = j1 - j0;
    /* dh = what the next step sent (lstm: dA W_hh, the next cell's share
     * is in dc; gru: dR W_hh added to the direct part z dh) + this step's
     * output gradient */
    if (j->dr_next)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n, G, 1.0f, j->dr_next, G,
                    j->w_hh + j0, H, d->lstm ? 0.0f : 1.0f, j->dh + j0, H);
    for (int b = 0; j->dy && b < B; b++) {
        float *restrict dh = j->dh + (size_t)b * H;
        const float *restrict dy = j->dy + (size_t)b * H;
        for (int u = j0; u < j1; u++)
            dh[u] += dy[u];
    }
    for (int b = 0; b < B; b++) {
        size_t ag = (size_t)b * G + j0, ah = (size_t)b * H + j0;
        if (d->lstm && j->s_prev)
            lstm_row_back(j->da + ag, j->a + ag, j->s + ah, j->s_prev + ah, j->dh + ah, j->dc + ah,
                          H, n, false);
        else if (d->lstm)
            lstm_row_back(j->da + ag, j->a + ag, j->s + ah, NULL, j->dh + ah, j->dc + ah, H, n,
                          true);
        else if (j->y_prev)
            gru_row_back(j->da + ag, j->dr + ag, j->a + ag, j->s + ah, j->y_prev + ah, j->dh + ah,
                         H, n, false);
        else
            gru_row_back(j->da + ag, j->dr + ag, j->a + ag, j->s + ah, NULL, j->dh + ah, H, n,
                         true);
    }
}

struct colsum_job {
    float *db;
    const float *dm;
    size_t R;
    int ld;
    float *db_too; /* gets the same sums, or NULL */
};

#define RNN_COLSUM_CHUNK 256

/* db[lo, hi) += column sums of dm; with db_too, the sums are made from 0
 * a chunk of columns at a time and added to both (from a zeroed gradient,
 * the bits of summing into each) */
static void colsum_range(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    const struct colsum_job *j = ctx;
    if (!j->db_too) {
        seq_colsum(j->db, j->dm, j->R, j->ld, lo, hi);
        return;
    }
    for (int n0 = lo; n0 < hi; n0 += RNN_COLSUM_CHUNK) {
        int w = hi - n0 < RNN_COLSUM_CHUNK ? hi - n0 : RNN_COLSUM_CHUNK;
        float sum[RNN_COLSUM_CHUNK] = {0};
        seq_colsum(sum, j->dm + n0, j->R, j->ld, 0, w);
        for (int k = 0; k < w; k++) {
            j->db[n0 + k] += sum[k];
            j->db_too[n0 + k] += sum[k];
        }
    }
}

static void rnn_backward(const struct op_call *c)
{
    struct rnn_dims d = rnn_dims(c->node, c->B);
    struct rnn_saved sv = saved_views(&d, c->saved);
    struct rnn_scratch sc = scratch_views(&d, c->scratch);
    int B = d.B, T = d.T, H = d.H, G = d.G;
    size_t TB = (size_t)T * B, BH = (size_t)B * H;
    /* dY of the top layer, time-major; only its last step's when the
     * output is the last step */
    float *dy = sc.dy[0];
    bool last_only = !c->node->a.sequence;
    if (last_only)
        memcpy(dy + (size_t)(T - 1) * BH, c->dout, BH * sizeof *dy);
    else
        seq_to_time_major(dy, c->dout, B, T, H);
    for (int l = d.L - 1; l >= 0; l--) {
        struct rnn_params p = layer_params(&d, c->param, l);
        struct rnn_params gp = layer_params(&d, c->grad, l);
        const float *x = l ? sv.y[l - 1] : sv.x;
        int I = layer_in(&d, l);
        float *dr = d.lstm ? sc.da : sc.dr; /* the recurrent projection's gradients */
        memset(sc.dh, 0, BH * sizeof *sc.dh);
        memset(sc.dc, 0, BH * sizeof *sc.dc);
        struct rnn_back_job j = {.d = &d, .w_hh = p.w_hh, .dh = sc.dh, .dc = sc.dc};
        for (int t = T - 1; t >= 0; t--) {
            size_t at = (size_t)t * B * G, ht = (size_t)t * BH;
            j.dr_next = t < T - 1 ? dr + at + (size_t)B * G : NULL;
            j.dy = last_only && t < T - 1 ? NULL : dy + ht;
            j.da = sc.da + at, j.dr = sc.dr + at;
            j.a = sv.a[l] + at, j.s = sv.s[l] + ht;
            j.s_prev = t ? j.s - BH : NULL, j.y_prev = t ? sv.y[l] + ht - BH : NULL;
            op_for_range(c, H, 16, RNN_MIN_UNITS, rnn_back_units, &j);
        }
        seq_gemm(c, true, false, G, I, (int)TB, 1.0f, sc.da, G, x, I, 1.0f, gp.w_ih, I);
        if (T > 1)
            seq_gemm(c, true, false, G, H, (int)(TB - (size_t)B), 1.0f, dr + (size_t)B * G, G,
                     sv.y[l], H, 1.0f, gp.w_hh, H);
        if (d.bias && d.lstm) {
            /* both biases' gradients are dA's column sums: summed once */
            struct colsum_job ci = {gp.b_ih, sc.da, TB, G, gp.b_hh};
            op_for_range(c, G, 16, 128, colsum_range, &ci);
        } else if (d.bias) {
            struct colsum_job ci = {gp.b_ih, sc.da, TB, G, NULL}, ch = {gp.b_hh, dr, TB, G, NULL};
            op_for_range(c, G, 16, 128, colsum_range, &ci);
            op_for_range(c, G, 16, 128, colsum_range, &ch);
        }
        float *dx = sc.dy[(d.L - 1 - l + 1) % 2];
        if (l == 0 && !c->din[0]) break;
        seq_gemm(c, false, false, (int)TB, I, G, 1.0f, sc.da, G, p.w_ih, I, 0.0f, dx, I);
        if (l == 0) seq_to_batch_major(c->din[0], dx, B, T, d.I);
        dy = dx;
        last_only = false;
    }
}

/* The same cases for both kinds. */
static const struct op_test rnn_tests[] = {
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

/* lstm and gru differ only in their gates (rnn_dims.lstm). */
#define RNN_OP(name)                                                                               \
    const struct op_def op_##name = {                                                              \
        .type = #name,                                                                             \
        .abbrev = #name,                                                                           \
        .n_inputs = 1,                                                                             \
        .fields = rnn_fields,                                                                      \
        .infer = rnn_infer,                                                                        \
        .tensors = rnn_tensors,                                                                    \
        .init = rnn_init,                                                                          \
        .saved = rnn_saved,                                                                        \
        .scratch = rnn_scratch,                                                                    \
        .forward = rnn_forward,                                                                    \
        .backward = rnn_backward,                                                                  \
        .tests = rnn_tests,                                                                        \
        .n_tests = sizeof rnn_tests / sizeof rnn_tests[0],                                         \
    }

RNN_OP(lstm);
RNN_OP(gru);
