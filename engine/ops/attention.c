/* layernorm, attention and transformer: nn.LayerNorm over the last
 * dimension, nn.MultiheadAttention as self-attention (query = key = value,
 * batch_first=True, dropout 0) with an optional causal mask, and GPT-2's
 * pre-norm block, x + attn(ln_1(x)) then x + mlp(ln_2(x)) with mlp =
 * Linear(E, 4E), GELU, Linear(4E, E).
 *
 * Attention, per sample and head h of D = E / H features: [q k v] = x
 * W_in^T + b_in (in_proj_weight (3E, E), in_proj_bias (3E)), scores
 * q k^T / sqrt(D), with the causal mask a step sees itself and earlier steps
 * only (torch's attn_mask = triu(ones(T, T), 1)), softmax over keys,
 * o = P v, heads side by side, y = o W_out^T + b_out (out_proj.weight (E,
 * E), out_proj.bias (E)). Initialisation as _reset_parameters: xavier_uniform_
 * for in_proj_weight, kaiming_uniform_(a = sqrt 5) for out_proj.weight,
 * zero biases.
 *
 * Dimensions: B samples, T steps, E width, H heads, D = E / H, R = B T rows
 * (a (F) input to layernorm is one row). */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "op.h"
#include "seq.h"

extern const struct op_def op_layernorm, op_attention, op_transformer;

/* ---- layer norm over rows of E: y = (x - mean) rstd w + b ---- */

struct ln_job {
    float *y, *mean, *rstd, *dx, *dw, *db;
    const float *x, *w, *b, *dy;
    int R, E;
    float eps;
    const float *res; /* backward: dx = res + the gradient, or NULL */
    float *part;      /* backward: (runs, 2E) dw, db of each row run, or NULL */
};

/* Row runs of layer norm: op_for_range(c, R, 1, LN_MIN_ROWS, ...). */
#define LN_MIN_ROWS 16

/* (x[0] - m)^2 + ... + (x[n - 1] - m)^2, in vm_sum's lanes */
static inline float ln_sq_dev_sum(const float *restrict x, float m, int n)
{
    float acc[VM_LANES] = {0};
    int e = 0;
    for (; e + VM_LANES <= n; e += VM_LANES)
        for (int k = 0; k < VM_LANES; k++)
            acc[k] += (x[e + k] - m) * (x[e + k] - m);
    for (int k = 0; e + k < n; k++)
        acc[k] += (x[e + k] - m) * (x[e + k] - m);
    return vm_lanes_total(acc);
}

/* Mean and biased variance in float, two passes, as torch's float kernel
 * (its sums are float too); in lanes the row's passes vectorise (they were
 * one double add at a time, 5.5% of a Transformer step). */
VM_CLONES static void ln_forward_rows(const struct op_call *c, int lo, int hi, float *scratch,
                                      void *ctx)
{
    (void)c, (void)scratch;
    const struct ln_job *j = ctx;
    int E = j->E;
    const float *restrict w = j->w, *restrict b = j->b;
    for (int r = lo; r < hi; r++) {
        const float *restrict x = j->x + (size_t)r * E;
        float *restrict y = j->y + (size_t)r * E;
        float m = vm_sum(x, E) / (float)E;
        float rstd = 1.0f / sqrtf(ln_sq_dev_sum(x, m, E) / (float)E + j->eps);
        if (w && b)
            for (int e = 0; e < E; e++)
                y[e] = (x[e] - m) * rstd * w[e] + b[e];
        else
            for (int e = 0; e < E; e++)
                y[e] = (x[e] - m) * rstd * (w ? w[e] : 1.0f) + (b ? b[e] : 0.0f);
        j->mean[r] = m;
        j->rstd[r] = rstd;
    }
}

static void ln_forward(const struct op_call *c, float *y, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int R, int E, float eps)
{
    struct ln_job j = {
        .y = y, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .E = E, .eps = eps};
    op_for_range(c, R, 1, LN_MIN_ROWS, ln_forward_rows, &j);
}

/* sa = sum of g, sb = sum of g xhat over a row, g = dy w, xhat = (x - m)
 * rs, in vm_sum's lanes */
static inline void ln_row_sums(const float *restrict dy, const float *restrict w,
                               const float *restrict x, float m, float rs, int n, float *sa,
                               float *sb)
{
    float aa[VM_LANES] = {0}, ab[VM_LANES] = {0};
    int e = 0;
    for (; e + VM_LANES <= n; e += VM_LANES)
        for (int k = 0; k < VM_LANES; k++) {
            float g = dy[e + k] * (w ? w[e + k] : 1.0f);
            aa[k] += g;
            ab[k] += g * (x[e + k] - m) * rs;
        }
    for (int k = 0; e + k < n; k++) {
        float g = dy[e + k] * (w ? w[e + k] : 1.0f);
        aa[k] += g;
        ab[k] += g * (x[e + k] - m) * rs;
    }
    *sa = vm_lanes_total(aa);
    *sb = vm_lanes_total(ab);
}

/* A row's dx (= res + the gradient, res may be NULL) and its terms of dw,
 * db added to pw, pb; w is set (ln_backward). */
static inline void ln_row_back_sums(float *restrict dx, float *restrict pw, float *restrict pb,
                                    const float *restrict res, const float *restrict dy,
                                    const float *restrict w, const float *restrict x, float m,
                                    float rs, float ma, float mb, int n)
{
    for (int e = 0; e < n; e++) {
        float xh = (x[e] - m) * rs, v = rs * (dy[e] * w[e] - ma - xh * mb);
        dx[e] = res ? res[e] + v : v;
        pw[e] += dy[e] * xh;
        pb[e] += dy[e];
    }
}

VM_CLONES static void ln_backward_rows(const struct op_call *c, int lo, int hi, float *scratch,
                                       void *ctx)
{
    (void)c, (void)scratch;
    const struct ln_job *j = ctx;
    int E = j->E;
    const float *restrict w = j->w;
    /* the run's own sums of dw, db over its rows, while the rows are read */
    float *pw = NULL, *pb = NULL;
    if (j->part) {
        pw = j->part + (size_t)op_range_index(j->R, 1, LN_MIN_ROWS, lo) * 2 * E;
        pb = pw + E;
        memset(pw, 0, (size_t)2 * E * sizeof *pw);
    }
    for (int r = lo; r < hi; r++) {
        const float *restrict x = j->x + (size_t)r * E, *restrict dy = j->dy + (size_t)r * E;
        float *restrict dx = j->dx + (size_t)r * E;
        const float *restrict res = j->res ? j->res + (size_t)r * E : NULL;
        float m = j->mean[r], rs = j->rstd[r], a, bsum; /* sums of dxhat, of dxhat xhat */
        ln_row_sums(dy, w, x, m, rs, E, &a, &bsum);
        float ma = a / (float)E, mb = bsum / (float)E;
        if (pw)
            ln_row_back_sums(dx, pw, pb, res, dy, w, x, m, rs, ma, mb, E);
        else
            for (int e = 0; e < E; e++) {
                float g = dy[e] * (w ? w[e] : 1.0f);
                float v = rs * (g - ma - (x[e] - m) * rs * mb);
                dx[e] = res ? res[e] + v : v;
            }
    }
}

/* dw, db (E) += over all R rows in row order; each run owns its columns,
 * summed a block at a time in registers. */
#define LN_COL_BLOCK 32

VM_CLONES static void ln_backward_cols(const struct op_call *c, int lo, int hi, float *scratch,
                                       void *ctx)
{
    (void)c, (void)scratch;
    const struct ln_job *j = ctx;
    int E = j->E;
    for (int e0 = lo; e0 < hi; e0 += LN_COL_BLOCK) {
        int w = hi - e0 < LN_COL_BLOCK ? hi - e0 : LN_COL_BLOCK;
        float aw[LN_COL_BLOCK] = {0}, ab[LN_COL_BLOCK] = {0};
        if (j->dw) memcpy(aw, j->dw + e0, (size_t)w * sizeof *aw);
        if (j->db) memcpy(ab, j->db + e0, (size_t)w * sizeof *ab);
        for (int r = 0; r < j->R; r++) {
            const float *restrict x = j->x + (size_t)r * E + e0;
            const float *restrict dy = j->dy + (size_t)r * E + e0;
            float m = j->mean[r], rs = j->rstd[r];
            if (w == LN_COL_BLOCK) /* a constant trip count: unrolled, in registers */
                for (int k = 0; k < LN_COL_BLOCK; k++) {
                    aw[k] += dy[k] * (x[k] - m) * rs;
                    ab[k] += dy[k];
                }
            else
                for (int k = 0; k < w; k++) {
                    aw[k] += dy[k] * (x[k] - m) * rs;
                    ab[k] += dy[k];
                }
        }
        if (j->dw) memcpy(j->dw + e0, aw, (size_t)w * sizeof *aw);
        if (j->db) memcpy(j->db + e0, ab, (size_t)w * sizeof *ab);
    }
}

/* Floats of ln_backward's partials: (runs, 2E). */
static size_t ln_partials_floats(int E)
{
    return (size_t)OP_RANGE_RUNS * 2 * E;
}

/* dx = res + d/dx (res may be NULL; dx may be NULL: only dw, db). With dx,
 * db = dw + E and partials (ln_partials_floats), each row run sums its
 * rows' dw, db as it computes dx, and the runs' sums are added in run
 * order: no second pass over x and dy. */
static void ln_backward(const struct op_call *c, float *dx, const float *res, float *dw, float *db,
                        const float *dy, const float *x, const float *mean, const float *rstd,
                        const float *w, int R, int E, float *partials)
{
    struct ln_job j = {.mean = (float *)mean,
                       .rstd = (float *)rstd,
                       .dx = dx,
                       .dw = dw,
                       .db = db,
                       .x = x,
                       .w = w,
                       .dy = dy,
                       .R = R,
                       .E = E,
                       .res = res};
    if (dx && dw && db == dw + E && partials && w) {
        j.part = partials;
        op_for_range(c, R, 1, LN_MIN_ROWS, ln_backward_rows, &j);
        op_sum_partials(c, dw, partials, op_range_runs(R, 1, LN_MIN_ROWS), (size_t)2 * E);
        return;
    }
    if (dw || db) op_for_range(c, E, 16, 16, ln_backward_cols, &j);
    if (dx) op_for_range(c, R, 1, LN_MIN_ROWS, ln_backward_rows, &j);
}

static int ln_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                    size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 1 && in->n != 2)
        return op_err(err, errlen, "needs features (F) or a sequence (T, features), got %s",
                      shape_str(in, s, sizeof s));
    if (!(a->eps > 0)) return op_err(err, errlen, "eps must be positive, got %g", (double)a->eps);
    *out = *in;
    return 0;
}

static int ln_width(const struct op_node *n)
{
    return n->in[0].d[n->in[0].n - 1];
}

static int ln_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int E = ln_width(n);
    t[0] = (struct op_tensor){"weight", OP_PARAM, 1, {E}};
    t[1] = (struct op_tensor){"bias", OP_PARAM, 1, {E}};
    return 2;
}

static void ln_init_params(float *w, float *b, int E)
{
    for (int e = 0; e < E; e++) {
        w[e] = 1.0f;
        b[e] = 0.0f;
    }
}

static void ln_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state, (void)r;
    int E = ln_width(n);
    ln_init_params(param, param + E, E);
}

static int ln_rows_of(const struct op_node *n, int B)
{
    return B * (n->in[0].n == 2 ? n->in[0].d[0] : 1);
}

/* saved: mean and rstd per row */
static size_t ln_saved(const struct op_node *n, int B)
{
    return 2 * (size_t)ln_rows_of(n, B);
}

static void ln_op_forward(const struct op_call *c)
{
    int R = ln_rows_of(c->node, c->B), E = ln_width(c->node);
    ln_forward(c, c->out, c->saved, c->saved + R, c->in[0], c->param, c->param + E, R, E,
               c->node->a.eps);
}

static void ln_op_backward(const struct op_call *c)
{
    int R = ln_rows_of(c->node, c->B), E = ln_width(c->node);
    ln_backward(c, c->din[0], NULL, c->grad, c->grad + E, c->dout, c->in[0], c->saved, c->saved + R,
                c->param, R, E, c->partials);
}

static size_t ln_partials(const struct op_node *n, int B)
{
    (void)B;
    return ln_partials_floats(ln_width(n));
}

static const struct op_test ln_tests[] = {
    {"(4, 6)", {.eps = 1e-5f}, {{2, {4, 6}}}, 2, false, 0},
    {"(20) eps 0.1", {.eps = 0.1f}, {{1, {20}}}, 3, false, 0},
};

static const char *const ln_fields[] = {"eps", NULL};

const struct op_def op_layernorm = {
    .type = "layernorm",
    .abbrev = "ln",
    .n_inputs = 1,
    .fields = ln_fields,
    .infer = ln_infer,
    .tensors = ln_tensors,
    .init = ln_init,
    .saved = ln_saved,
    .partials = ln_partials,
    .forward = ln_op_forward,
    .backward = ln_op_backward,
    .tests = ln_tests,
    .n_tests = sizeof ln_tests / sizeof ln_tests[0],
};

/* ---- multi-head self-attention ---- */

struct attn_dims {
    int B, T, E, H, D;
    bool causal, bias;
};

/* The attention's parameters inside a slice. */
struct attn_params {
    float *w_in;  /* (3E, E) */
    float *b_in;  /* (3E) or NULL */
    float *w_out; /* (E, E) */
    float *b_out; /* (E) or NULL */
};

static size_t attn_param_floats(int E, bool bias)
{
    return (size_t)4 * E * E + (bias ? (size_t)4 * E : 0);
}

static struct attn_params attn_params(float *p, int E, bool bias)
{
    struct attn_params a;
    a.w_in = p;
    a.b_in = bias ? p + (size_t)3 * E * E : NULL;
    a.w_out = p + (size_t)3 * E * E + (bias ? (size_t)3 * E : 0);
    a.b_out = bias ? a.w_out + (size_t)E * E : NULL;
    return a;
}

static void attn_init_params(float *p, int E, bool bias, struct rng *r)
{
    struct attn_params a = attn_params(p, E, bias);
    op_uniform(a.w_in, (size_t)3 * E * E, sqrtf(6.0f / (float)(E + 3 * E)), r);
    if (bias) memset(a.b_in, 0, (size_t)3 * E * sizeof *a.b_in);
    op_uniform(a.w_out, (size_t)E * E, 1.0f / sqrtf((float)E), r);
    if (bias) memset(a.b_out, 0, (size_t)E * sizeof *a.b_out);
}

/* What forward keeps, per sample: qkv (T, 3E), P (H, T, T) the attention
 * weights, o (T, E) the heads' outputs side by side. */
static size_t attn_saved_per_sample(int T, int E, int H)
{
    return (size_t)T * (3 * (size_t)E + (size_t)H * T + E);
}

struct attn_job {
    struct attn_dims d;
    float *qkv, *p, *o;   /* saved, all samples */
    float *dqkv, *dout_o; /* backward: (B, T, 3E), (B, T, E) */
    size_t thread_off;    /* floats into a thread's scratch of its attn_thread_floats */
    float *b_part;        /* backward: (runs, 3E) each sample run's column sums of dqkv, or NULL */
};

/* With the causal mask, queries go in blocks of this many rows: block
 * [i0, i1) needs the keys [0, i1) only, so the scores, P v and their
 * gradients skip the masked upper triangle but for the diagonal blocks
 * (at T = 128, 10 of 16 blocks). Entries of P right of a row block's keys
 * are never written or read. */
#define ATTN_CAUSAL_ROWS 32

/* Rows [i0, i1) of P (T, T), over their first n columns: each replaced by
 * its softmax, over its first i + 1 entries when causal (the rest of the n
 * set to 0). */
VM_CLONES static void attn_softmax(float *P, int T, int i0, int i1, int n, bool causal)
{
    for (int i = i0; i < i1; i++) {
        float *row = P + (size_t)i * T;
        int m = causal ? i + 1 : n;
        float mx = vm_max(row, m);
        for (int t = 0; t < m; t++) /* apart from the sum: it vectorises */
            row[t] = vm_expf(row[t] - mx);
        float inv = 1.0f / vm_sum(row, m);
        for (int t = 0; t < m; t++)
            row[t] *= inv;
        for (int t = m; t < n; t++)
            row[t] = 0.0f;
    }
}

static int attn_block_rows(const struct attn_dims *d)
{
    return d->causal ? ATTN_CAUSAL_ROWS : d->T;
}

/* The keys a row block [i0, ...) attends to: [0, n). */
static int attn_block_keys(const struct attn_dims *d, int i0)
{
    int n = i0 + attn_block_rows(d);
    return n < d->T ? n : d->T;
}

static void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *Bm, int ldb, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, Bm, ldb, 0.0f, C, ldc);
}

static void attn_core_forward(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c;
    const struct attn_job *j = ctx;
    const struct attn_dims *d = &j->d;
    int T = d->T, E = d->E, H = d->H, D = d->D, QB = attn_block_rows(d);
    float scale = 1.0f / sqrtf((float)D);
    float *bt = scratch && attn_head_fast() ? scratch + j->thread_off + (size_t)T * T : NULL;
    for (int b = lo; b < hi; b++) {
        const float *qkv = j->qkv + (size_t)b * T * 3 * E;
        float *o = j->o + (size_t)b * T * E;
        for (int h = 0; h < H; h++) {
            float *P = j->p + ((size_t)b * H + h) * T * T;
            const float *q = qkv + h * D, *k = qkv + E + h * D, *v = qkv + 2 * E + h * D;
            if (bt) {
                attn_head_forward(P, o + h * D, E, q, k, v, 3 * E, T, D, scale, d->causal, bt);
                continue;
            }
            for (int i0 = 0; i0 < T; i0 += QB) {
                int i1 = i0 + QB < T ? i0 + QB : T, n = attn_block_keys(d, i0);
                size_t qr = (size_t)i0 * 3 * E;
                gemm(false, true, i1 - i0, n, D, scale, q + qr, 3 * E, k, 3 * E, P + (size_t)i0 * T,
                     T);
                attn_softmax(P, T, i0, i1, n, d->causal);
                gemm(false, false, i1 - i0, D, n, 1.0f, P + (size_t)i0 * T, T, v, 3 * E,
                     o + (size_t)i0 * E + h * D, E);
            }
        }
    }
}

VM_CLONES static void attn_core_backward(const struct op_call *c, int lo, int hi, float *scratch,
                                         void *ctx)
{
    (void)c;
    const struct attn_job *j = ctx;
    const struct attn_dims *d = &j->d;
    int T = d->T, E = d->E, H = d->H, D = d->D, QB = attn_block_rows(d);
    float scale = 1.0f / sqrtf((float)D);
    float *dP = scratch + j->thread_off; /* (T, T), this thread's */
    float *bt = attn_head_fast() ? dP + (size_t)T * T : NULL;
    /* in_proj_bias's gradient, the run's column sums of dqkv, each sample's
     * summed while it is in cache */
    float *bp = j->b_part ? j->b_part + (size_t)op_range_index(d->B, 1, 1, lo) * 3 * E : NULL;
    if (bp) memset(bp, 0, (size_t)3 * E * sizeof *bp);
    for (int b = lo; b < hi; b++) {
        const float *qkv = j->qkv + (size_t)b * T * 3 * E;
        const float *dO = j->dout_o + (size_t)b * T * E;
        float *dqkv = j->dqkv + (size_t)b * T * 3 * E;
        for (int h = 0; h < H; h++) {
            const float *P = j->p + ((size_t)b * H + h) * T * T;
            const float *q = qkv + h * D, *k = qkv + E + h * D, *v = qkv + 2 * E + h * D;
            const float *dOh = dO + h * D;
            float *dq = dqkv + h * D, *dk = dqkv + E + h * D, *dv = dqkv + 2 * E + h * D;
            if (bt) {
                attn_head_backward(dq, dk, dv, dP, P, dOh, E, q, k, v, 3 * E, T, D, scale,
                                   d->causal, bt);
                continue;
            }
            /* by query blocks: dP = dO v^T, then dS = P (dP - rowdot) scale
             * in place, dq = dS k */
            for (int i0 = 0; i0 < T; i0 += QB) {
                int i1 = i0 + QB < T ? i0 + QB : T, n = attn_block_keys(d, i0);
                float *dPb = dP + (size_t)i0 * T;
                gemm(false, true, i1 - i0, n, D, 1.0f, dOh + (size_t)i0 * E, E, v, 3 * E, dPb, T);
                for (int i = i0; i < i1; i++) {
                    const float *pr = P + (size_t)i * T;
                    float *dr = dP + (size_t)i * T;
                    float dot = vm_dot(pr, dr, n);
                    for (int t = 0; t < n; t++)
                        dr[t] = pr[t] * (dr[t] - dot) * scale;
                }
                gemm(false, false, i1 - i0, D, n, 1.0f, dPb, T, k, 3 * E, dq + (size_t)i0 * 3 * E,
                     3 * E);
            }
            /* by key blocks [j0, j1): the queries from j0 on see them
             * (all queries without the mask): dv = P^T dO, dk = dS^T q */
            for (int j0 = 0; j0 < T; j0 += QB) {
                int j1 = j0 + QB < T ? j0 + QB : T, r0 = d->causal ? j0 : 0;
                size_t at = (size_t)r0 * T + j0;
                gemm(true, false, j1 - j0, D, T - r0, 1.0f, P + at, T, dOh + (size_t)r0 * E, E,
                     dv + (size_t)j0 * 3 * E, 3 * E);
                gemm(true, false, j1 - j0, D, T - r0, 1.0f, dP + at, T, q + (size_t)r0 * 3 * E,
                     3 * E, dk + (size_t)j0 * 3 * E, 3 * E);
            }
        }
        if (bp) seq_colsum(bp, dqkv, (size_t)T, 3 * E, 0, 3 * E);
    }
}

/* A linear layer's rows and what is done to them around the gemm, so that
 * a run of rows is one slice: fill with the bias plus a residual, the gemm
 * adding to it, then (backward) multiply by an activation's derivative, or
 * put the activation of the rows in a second buffer. */
struct lin_job {
    float *y;               /* (R, N) */
    const float *x, *w, *b; /* x (R, K); w (N, K) forward, (N, K) backward too; b (N) */
    const float *res;       /* (R, N): forward y = x w^T + b + res, or NULL */
    float *act_y;           /* (R, N): forward act_y = act(y) and y = act'(y), or NULL */
    const float *act_d;     /* (R, N): backward y *= act_d (forward's act'), or NULL */
    enum act_op act;
    int R, K, N;
    bool backward; /* y = x w (x (R, K) is dy, w (K, N)), else y = x w^T + b */
    float *part;   /* backward by rows: (runs, N) the column sums of each run's y, or NULL */
};

/* Forward: rows [lo, hi) of y = b + res (either may be NULL), the C the
 * gemm adds to (the residual there saves a pass over y after it). Returns
 * the gemm's beta. */
static float lin_fill(const struct lin_job *j, int lo, int hi)
{
    if (!j->b && !j->res) return 0.0f;
    int N = j->N;
    for (int r = lo; r < hi; r++) {
        float *restrict y = j->y + (size_t)r * N;
        const float *restrict b = j->b, *restrict res = j->res ? j->res + (size_t)r * N : NULL;
        if (b && res)
            for (int n = 0; n < N; n++)
                y[n] = b[n] + res[n];
        else
            memcpy(y, b ? b : res, (size_t)N * sizeof *y);
    }
    return 1.0f;
}

static void lin_after(const struct lin_job *j, int lo, int hi)
{
    size_t o = (size_t)lo * j->N, n = (size_t)(hi - lo) * j->N;
    if (j->act_y) act_forward_deriv(j->act_y + o, j->y + o, n, j->act, 0.0f);
    if (j->act_d) {
        float *restrict y = j->y + o;
        const float *restrict d = j->act_d + o;
        for (size_t i = 0; i < n; i++)
            y[i] *= d[i];
    }
}

static void lin_rows(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    const struct lin_job *j = ctx;
    float *y = j->y + (size_t)lo * j->N;
    if (j->backward) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, j->N, j->K, 1.0f,
                    j->x + (size_t)lo * j->K, j->K, j->w, j->N, 0.0f, y, j->N);
    } else {
        float beta = lin_fill(j, lo, hi);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, j->N, j->K, 1.0f,
                    j->x + (size_t)lo * j->K, j->K, j->w, j->K, beta, y, j->N);
    }
    lin_after(j, lo, hi);
    if (j->part) { /* while the rows are in cache */
        float *p = j->part + (size_t)op_range_index(j->R, 16, SEQ_GEMM_MIN_RUN, lo) * j->N;
        memset(p, 0, (size_t)j->N * sizeof *p);
        seq_colsum(p, y, (size_t)(hi - lo), j->N, 0, j->N);
    }
}

static void lin_after_rows(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    lin_after(ctx, lo, hi);
}

/* The gemm of j over the team: by rows as seq_gemm cuts it when R is the
 * larger dimension (the fill and what follows in the same slice), else
 * seq_gemm's column runs and then the rows' after-work. */
static void lin_run(const struct op_call *c, struct lin_job *j)
{
    if (j->R > j->N) {
        op_for_range(c, j->R, 16, SEQ_GEMM_MIN_RUN, lin_rows, j);
        return;
    }
    if (j->backward) {
        seq_gemm(c, false, false, j->R, j->N, j->K, 1.0f, j->x, j->K, j->w, j->N, 0.0f, j->y, j->N);
    } else {
        float beta = lin_fill(j, 0, j->R);
        seq_gemm(c, false, true, j->R, j->N, j->K, 1.0f, j->x, j->K, j->w, j->K, beta, j->y, j->N);
    }
    if (j->act_y || j->act_d) op_for_range(c, j->R, 1, 16, lin_after_rows, j);
}

/* y (R, N) = x (R, K) w^T + b, w (N, K), over the team, plus res (may be
 * NULL); when act_y is not NULL, act_y = act(y) and y is replaced by
 * act'(y), what the backward multiplies by. */
static void linear_forward(const struct op_call *c, float *y, const float *x, const float *w,
                           const float *b, int R, int K, int N, const float *res, float *act_y,
                           enum act_op act)
{
    struct lin_job j = {.y = y,
                        .x = x,
                        .w = w,
                        .b = b,
                        .res = res,
                        .act_y = act_y,
                        .act = act,
                        .R = R,
                        .K = K,
                        .N = N};
    lin_run(c, &j);
}

struct colsum_job {
    float *db;
    const float *dy;
    int R, N;
};

static void colsum_range(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    const struct colsum_job *j = ctx;
    seq_colsum(j->db, j->dy, (size_t)j->R, j->N, lo, hi);
}

static void colsum_rows(const struct op_call *c, float *db, const float *dy, int R, int N)
{
    struct colsum_job j = {db, dy, R, N};
    op_for_range(c, N, 16, 64, colsum_range, &j);
}

/* Floats of linear_backward's partials for dx (R, K): (runs, K). */
static size_t lin_partials_floats(int K)
{
    return (size_t)OP_RANGE_RUNS * K;
}

struct wgrad_job {
    float *dw;
    const float *dy, *x;
    int R, K, N;
};

/* Runs [lo, hi) of dw (N, K) += dy^T x along its larger dimension. */
static void wgrad_range(const struct op_call *c, int lo, int hi, float *scratch, void *ctx)
{
    (void)c, (void)scratch;
    const struct wgrad_job *j = ctx;
    if (j->N > j->K)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, j->K, j->R, 1.0f, j->dy + lo,
                    j->N, j->x, j->K, 1.0f, j->dw + (size_t)lo * j->K, j->K);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->N, hi - lo, j->R, 1.0f, j->dy, j->N,
                    j->x + lo, j->K, 1.0f, j->dw + lo, j->K);
}

/* dx (R, K) = dy w (or += with accumulate; dx may be NULL), then, when
 * act_d is not NULL, dx *= act_d (the activation's derivative that
 * linear_forward left); dw += dy^T x, db += column sums of dy (may be
 * NULL). dx_db (may be NULL) += the column sums of dx: the bias
 * gradient of the layer before, summed by each row run of dx as it is
 * written (c->partials, lin_partials_floats) rather than in a pass of its
 * own. */
static void linear_backward(const struct op_call *c, float *dx, float *dw, float *db, float *dx_db,
                            const float *dy, const float *x, const float *w, int R, int K, int N,
                            bool accumulate, const float *act_d)
{
    if (dx && !accumulate && R > K) {
        /* One team job: dw in two halves, then dx's row runs and db's
         * columns, which share the threads with no wait in between. dw
         * over all R rows ran at 84-89 GFLOPS on one thread whole or in
         * halves, 75-80 in runs of 64 or 128 (OpenBLAS packs both operands
         * of each run). */
        struct wgrad_job wj = {dw, dy, x, R, K, N};
        struct lin_job xj = {
            .y = dx, .x = dy, .w = w, .act_d = act_d, .R = R, .K = N, .N = K, .backward = true};
        struct colsum_job cj = {db, dy, R, N};
        int wn = N > K ? N : K;
        if (dx_db) xj.part = c->partials;
        struct op_range_task t[3] = {{wn, 16, wn / 2, wgrad_range, &wj},
                                     {R, 16, SEQ_GEMM_MIN_RUN, lin_rows, &xj},
                                     {N, 16, 64, colsum_range, &cj}};
        op_for_ranges(c, t, db ? 3 : 2);
        if (dx_db)
            op_sum_partials(c, dx_db, xj.part, op_range_runs(R, 16, SEQ_GEMM_MIN_RUN), (size_t)K);
        return;
    }
    if (dx && !accumulate) {
        struct lin_job j = {
            .y = dx, .x = dy, .w = w, .act_d = act_d, .R = R, .K = N, .N = K, .backward = true};
        bool by_rows = R > K; /* lin_run's row runs */
        if (dx_db && by_rows) j.part = c->partials;
        lin_run(c, &j);
        if (j.part)
            op_sum_partials(c, dx_db, j.part, op_range_runs(R, 16, SEQ_GEMM_MIN_RUN), (size_t)K);
        else if (dx_db)
            colsum_rows(c, dx_db, dx, R, K);
    } else if (dx) {
        seq_gemm(c, false, false, R, K, N, 1.0f, dy, N, w, K, 1.0f, dx, K);
        if (dx_db) colsum_rows(c, dx_db, dx, R, K);
    }
    seq_gemm(c, true, false, N, K, R, 1.0f, dy, N, x, K, 1.0f, dw, K);
    if (db) colsum_rows(c, db, dy, R, N);
}

/* Self-attention of x (B, T, E) into y, plus res (B, T, E) when not NULL
 * (a residual); sv: qkv, P, o for B samples; each thread's scratch at
 * thread_off (attn_thread_floats). */
static void attn_forward(const struct op_call *c, const struct attn_dims *d, float *y,
                         const float *x, float *param, float *sv, const float *res,
                         size_t thread_off)
{
    struct attn_params p = attn_params(param, d->E, d->bias);
    int R = d->B * d->T, E = d->E;
    struct attn_job j = {.d = *d};
    j.qkv = sv;
    j.p = j.qkv + (size_t)R * 3 * E;
    j.o = j.p + (size_t)d->B * d->H * d->T * d->T;
    j.thread_off = thread_off;
    linear_forward(c, j.qkv, x, p.w_in, p.b_in, R, E, 3 * E, NULL, NULL, ACT_OP_RELU);
    op_for_range(c, d->B, 1, 1, attn_core_forward, &j);
    linear_forward(c, y, j.o, p.w_out, p.b_out, R, E, E, res, NULL, ACT_OP_RELU);
}

/* Each thread's own scratch of the core: dP (T, T), then the head
 * kernel's. */
static size_t attn_thread_floats(const struct attn_dims *d)
{
    return (size_t)d->T * d->T + attn_head_scratch_floats(d->T, d->D);
}

/* What attn_backward's scratch holds before the threads' own parts:
 * dqkv (B, T, 3E) and do (B, T, E). */
static size_t attn_shared_floats(const struct attn_dims *d)
{
    return (size_t)d->B * d->T * 4 * d->E;
}

/* Scratch of attn_backward: attn_shared_floats, then per thread
 * attn_thread_floats at thread_off = attn_shared_floats. */
static size_t attn_scratch_floats(const struct attn_dims *d)
{
    return attn_shared_floats(d) + attn_thread_floats(d);
}

static void attn_backward(const struct op_call *c, const struct attn_dims *d, float *dx,
                          bool accumulate, const float *dy, const float *x, float *param,
                          float *grad, float *sv, float *scratch, size_t thread_off)
{
    struct attn_params p = attn_params(param, d->E, d->bias);
    struct attn_params g = attn_params(grad, d->E, d->bias);
    int R = d->B * d->T, E = d->E;
    struct attn_job j = {.d = *d};
    j.qkv = sv;
    j.p = j.qkv + (size_t)R * 3 * E;
    j.o = j.p + (size_t)d->B * d->H * d->T * d->T;
    j.dqkv = scratch;
    j.dout_o = j.dqkv + (size_t)R * 3 * E;
    j.thread_off = thread_off;
    j.b_part = g.b_in ? c->partials : NULL;
    linear_backward(c, j.dout_o, g.w_out, g.b_out, NULL, dy, j.o, p.w_out, R, E, E, false, NULL);
    op_for_range(c, d->B, 1, 1, attn_core_backward, &j);
    if (j.b_part) op_sum_partials(c, g.b_in, j.b_part, op_range_runs(d->B, 1, 1), (size_t)3 * E);
    linear_backward(c, dx, g.w_in, NULL, NULL, j.dqkv, x, p.w_in, R, E, 3 * E, accumulate, NULL);
}

/* Floats of attn_backward's partials: (runs, 3E). */
static size_t attn_partials_floats(int E)
{
    return (size_t)OP_RANGE_RUNS * 3 * E;
}

static int attn_check(const struct op_attrs *a, const struct shape *in, char *err, size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 2)
        return op_err(err, errlen, "needs a sequence (T, features), got %s",
                      shape_str(in, s, sizeof s));
    if (a->heads < 1) return op_err(err, errlen, "heads must be at least 1, got %d", a->heads);
    if (in->d[1] % a->heads)
        return op_err(err, errlen, "%d heads do not divide the width %d", a->heads, in->d[1]);
    return 0;
}

static int attn_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                      size_t errlen)
{
    int rc = attn_check(a, in, err, errlen);
    if (rc) return rc;
    *out = *in;
    return 0;
}

static struct attn_dims attn_dims_of(const struct op_node *n, int B)
{
    struct attn_dims d = {B, n->in[0].d[0], n->in[0].d[1], n->a.heads, 0, n->a.causal, n->a.bias};
    d.D = d.E / d.H;
    return d;
}

static int attn_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int E = n->in[0].d[1], k = 0;
    t[k++] = (struct op_tensor){"in_proj_weight", OP_PARAM, 2, {3 * E, E}};
    if (n->a.bias) t[k++] = (struct op_tensor){"in_proj_bias", OP_PARAM, 1, {3 * E}};
    t[k++] = (struct op_tensor){"out_proj.weight", OP_PARAM, 2, {E, E}};
    if (n->a.bias) t[k++] = (struct op_tensor){"out_proj.bias", OP_PARAM, 1, {E}};
    return k;
}

static void attn_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    attn_init_params(param, n->in[0].d[1], n->a.bias, r);
}

static size_t attn_saved(const struct op_node *n, int B)
{
    return (size_t)B * attn_saved_per_sample(n->in[0].d[0], n->in[0].d[1], n->a.heads);
}

static size_t attn_scratch(const struct op_node *n, int B)
{
    struct attn_dims d = attn_dims_of(n, B);
    return attn_scratch_floats(&d);
}

static size_t attn_partials(const struct op_node *n, int B)
{
    (void)B;
    return attn_partials_floats(n->in[0].d[1]);
}

static void attn_op_forward(const struct op_call *c)
{
    struct attn_dims d = attn_dims_of(c->node, c->B);
    attn_forward(c, &d, c->out, c->in[0], c->param, c->saved, NULL, attn_shared_floats(&d));
}

static void attn_op_backward(const struct op_call *c)
{
    struct attn_dims d = attn_dims_of(c->node, c->B);
    attn_backward(c, &d, c->din[0], false, c->dout, c->in[0], c->param, c->grad, c->saved,
                  c->scratch, attn_shared_floats(&d));
}

static const struct op_test attn_tests[] = {
    {"2 heads, (5, 4)", {.heads = 2, .bias = true}, {{2, {5, 4}}}, 2, false, 0},
    {"causal, 3 heads, (4, 6)",
     {.heads = 3, .causal = true, .bias = true},
     {{2, {4, 6}}},
     3,
     false,
     0},
    {"one head, no bias", {.heads = 1, .bias = false}, {{2, {3, 4}}}, 2, false, 0},
    {"causal, 2 heads, (37, 4): two query blocks",
     {.heads = 2, .causal = true, .bias = true},
     {{2, {37, 4}}},
     2,
     false,
     0},
    /* the head kernel's tails: 20 features, 37 and 21 steps */
    {"causal, 1 head, (37, 20)",
     {.heads = 1, .causal = true, .bias = true},
     {{2, {37, 20}}},
     2,
     false,
     0},
    {"1 head, (21, 32)", {.heads = 1, .bias = true}, {{2, {21, 32}}}, 1, false, 0},
};

static const char *const attn_fields[] = {"heads", "causal", "bias", NULL};

const struct op_def op_attention = {
    .type = "attention",
    .abbrev = "attn",
    .n_inputs = 1,
    .fields = attn_fields,
    .infer = attn_infer,
    .tensors = attn_tensors,
    .init = attn_init,
    .saved = attn_saved,
    .scratch = attn_scratch,
    .partials = attn_partials,
    .forward = attn_op_forward,
    .backward = attn_op_backward,
    .tests = attn_tests,
    .n_tests = sizeof attn_tests / sizeof attn_tests[0],
};

/* ---- transformer: GPT-2's pre-norm block ----
 * h1 = ln_1(x), x2 = x + attn(h1), h2 = ln_2(x2), u = h2 W_1^T + b_1 (4E),
 * g = gelu(u), out = x2 + g W_2^T + b_2. Tensors ln_1.*, attn.* (as the
 * attention op's), ln_2.*, mlp.0.* and mlp.2.* (nn.Sequential(Linear,
 * GELU, Linear)). gelu exact, or the tanh approximation (approximate). */

struct block_params {
    float *ln1_w, *ln1_b, *attn, *ln2_w, *ln2_b, *w1, *b1, *w2, *b2;
};

static struct block_params block_params(float *p, int E)
{
    struct block_params b;
    b.ln1_w = p;
    b.ln1_b = b.ln1_w + E;
    b.attn = b.ln1_b + E;
    b.ln2_w = b.attn + attn_param_floats(E, true);
    b.ln2_b = b.ln2_w + E;
    b.w1 = b.ln2_b + E;              /* (4E, E) */
    b.b1 = b.w1 + (size_t)4 * E * E; /* (4E) */
    b.w2 = b.b1 + (size_t)4 * E;     /* (E, 4E) */
    b.b2 = b.w2 + (size_t)4 * E * E; /* (E) */
    return b;
}

static int block_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    int E = n->in[0].d[1];
    t[0] = (struct op_tensor){"ln_1.weight", OP_PARAM, 1, {E}};
    t[1] = (struct op_tensor){"ln_1.bias", OP_PARAM, 1, {E}};
    t[2] = (struct op_tensor){"attn.in_proj_weight", OP_PARAM, 2, {3 * E, E}};
    t[3] = (struct op_tensor){"attn.in_proj_bias", OP_PARAM, 1, {3 * E}};
    t[4] = (struct op_tensor){"attn.out_proj.weight", OP_PARAM, 2, {E, E}};
    t[5] = (struct op_tensor){"attn.out_proj.bias", OP_PARAM, 1, {E}};
    t[6] = (struct op_tensor){"ln_2.weight", OP_PARAM, 1, {E}};
    t[7] = (struct op_tensor){"ln_2.bias", OP_PARAM, 1, {E}};
    t[8] = (struct op_tensor){"mlp.0.weight", OP_PARAM, 2, {4 * E, E}};
    t[9] = (struct op_tensor){"mlp.0.bias", OP_PARAM, 1, {4 * E}};
    t[10] = (struct op_tensor){"mlp.2.weight", OP_PARAM, 2, {E, 4 * E}};
    t[11] = (struct op_tensor){"mlp.2.bias", OP_PARAM, 1, {E}};
    return 12;
}

/* Drawn in the tensors' order, as each torch module's reset_parameters. */
static void block_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    int E = n->in[0].d[1];
    struct block_params p = block_params(param, E);
    ln_init_params(p.ln1_w, p.ln1_b, E);
    attn_init_params(p.attn, E, true, r);
    ln_init_params(p.ln2_w, p.ln2_b, E);
    float b1 = 1.0f / sqrtf((float)E), b2 = 1.0f / sqrtf((float)(4 * E));
    op_uniform(p.w1, (size_t)4 * E * E, b1, r);
    op_uniform(p.b1, (size_t)4 * E, b1, r);
    op_uniform(p.w2, (size_t)4 * E * E, b2, r);
    op_uniform(p.b2, (size_t)E, b2, r);
}

/* What the block keeps, per row (B T of them): h1 (E), mean1, rstd1, x2
 * (E), h2 (E), mean2, rstd2, u (4E) (replaced by gelu'(u) once g is made),
 * g (4E); then the attention's saved. */
struct block_saved {
    float *h1, *m1, *r1, *x2, *h2, *m2, *r2, *u, *g, *attn;
};

static struct block_saved block_saved_views(float *s, int R, int E)
{
    struct block_saved v;
    v.h1 = s;
    v.m1 = v.h1 + (size_t)R * E;
    v.r1 = v.m1 + R;
    v.x2 = v.r1 + R;
    v.h2 = v.x2 + (size_t)R * E;
    v.m2 = v.h2 + (size_t)R * E;
    v.r2 = v.m2 + R;
    v.u = v.r2 + R;
    v.g = v.u + (size_t)R * 4 * E;
    v.attn = v.g + (size_t)R * 4 * E;
    return v;
}

static size_t block_saved(const struct op_node *n, int B)
{
    int T = n->in[0].d[0], E = n->in[0].d[1];
    size_t R = (size_t)B * T;
    return R * (11 * (size_t)E + 4) + (size_t)B * attn_saved_per_sample(T, E, n->a.heads);
}

/* Where the attention core's per-thread scratch starts in the block's:
 * after the attention's dqkv and do, then dg (R, 4E), dh (R, E) and dx2
 * (R, E). */
static size_t block_thread_off(const struct attn_dims *d)
{
    return attn_shared_floats(d) + (size_t)d->B * d->T * 6 * d->E;
}

static size_t block_scratch(const struct op_node *n, int B)
{
    struct attn_dims d = attn_dims_of(n, B);
    return block_thread_off(&d) + attn_thread_floats(&d);
}

static size_t block_partials(const struct op_node *n, int B)
{
    (void)B;
    int E = n->in[0].d[1];
    size_t ln = ln_partials_floats(E), lin = lin_partials_floats(4 * E);
    size_t attn = attn_partials_floats(E), most = ln > lin ? ln : lin;
    return attn > most ? attn : most;
}

static void block_forward(const struct op_call *c)
{
    const struct op_node *n = c->node;
    struct attn_dims d = attn_dims_of(n, c->B);
    int E = d.E, R = d.B * d.T;
    struct block_params p = block_params(c->param, E);
    struct block_saved v = block_saved_views(c->saved, R, E);
    enum act_op act = n->a.approximate ? ACT_OP_GELU_TANH : ACT_OP_GELU;
    const float *x = c->in[0];
    ln_forward(c, v.h1, v.m1, v.r1, x, p.ln1_w, p.ln1_b, R, E, n->a.eps);
    attn_forward(c, &d, v.x2, v.h1, p.attn, v.attn, x,
                 block_thread_off(&d)); /* x2 = attn(h1) + x */
    ln_forward(c, v.h2, v.m2, v.r2, v.x2, p.ln2_w, p.ln2_b, R, E, n->a.eps);
    linear_forward(c, v.u, v.h2, p.w1, p.b1, R, E, 4 * E, NULL, v.g, act);
    linear_forward(c, c->out, v.g, p.w2, p.b2, R, 4 * E, E, v.x2, NULL, act);
}

static void block_backward(const struct op_call *c)
{
    const struct op_node *n = c->node;
    struct attn_dims d = attn_dims_of(n, c->B);
    int E = d.E, R = d.B * d.T;
    struct block_params p = block_params(c->param, E), g = block_params(c->grad, E);
    struct block_saved v = block_saved_views(c->saved, R, E);
    float *dg = c->scratch + attn_shared_floats(&d); /* after dqkv, do */
    size_t thread_off = block_thread_off(&d);
    float *dh = dg + (size_t)R * 4 * E, *dx2 = dh + (size_t)R * E;
    /* out = x2 + mlp(h2): dx2 = dout + ln_2's backward of the mlp's */
    /* b_1's gradient, dg's column sums, made as dg is */
    linear_backward(c, dg, g.w2, g.b2, g.b1, c->dout, v.g, p.w2, R, 4 * E, E, false, v.u);
    linear_backward(c, dh, g.w1, NULL, NULL, dg, v.h2, p.w1, R, E, 4 * E, false, NULL);
    ln_backward(c, dx2, c->dout, g.ln2_w, g.ln2_b, dh, v.x2, v.m2, v.r2, p.ln2_w, R, E,
                c->partials);
    /* x2 = x + attn(h1) */
    attn_backward(c, &d, dh, false, dx2, v.h1, p.attn, g.attn, v.attn, c->scratch, thread_off);
    if (!c->din[0]) {
        /* ln_1's parameters still need their gradients */
        ln_backward(c, NULL, NULL, g.ln1_w, g.ln1_b, dh, c->in[0], v.m1, v.r1, p.ln1_w, R, E, NULL);
        return;
    }
    ln_backward(c, c->din[0], dx2, g.ln1_w, g.ln1_b, dh, c->in[0], v.m1, v.r1, p.ln1_w, R, E,
                c->partials);
}

static int block_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                       size_t errlen)
{
    int rc = attn_check(a, in, err, errlen);
    if (rc) return rc;
    if (!(a->eps > 0)) return op_err(err, errlen, "eps must be positive, got %g", (double)a->eps);
    *out = *in;
    return 0;
}

static const struct op_test block_tests[] = {
    {"causal, 2 heads, (4, 4)",
     {.heads = 2, .causal = true, .eps = 1e-5f},
     {{2, {4, 4}}},
     2,
     false,
     0},
    {"1 head, tanh gelu, (3, 2)",
     {.heads = 1, .approximate = true, .eps = 1e-5f},
     {{2, {3, 2}}},
     2,
     false,
     0},
};

static const char *const block_fields[] = {"heads", "causal", "eps", "approximate", NULL};

const struct op_def op_transformer = {
    .type = "transformer",
    .abbrev = "block",
    .n_inputs = 1,
    .fields = block_fields,
    .infer = block_infer,
    .tensors = block_tensors,
    .init = block_init,
    .saved = block_saved,
    .scratch = block_scratch,
    .partials = block_partials,
    .forward = block_forward,
    .backward = block_backward,
    .tests = block_tests,
    .n_tests = sizeof block_tests / sizeof block_tests[0],
};
