/* CNN training benchmark over the layer kernels (engine/ops/kernels.h).
 *
 * Trains the two recipes on Fashion-MNIST-shaped data (random
 * pixels in [0, 1], random labels: the speed does not depend on them) at
 * batch B, Adam lr 1e-3:
 *   lenet: conv 1->32 3x3 pad 1, relu, maxpool 2, conv 32->64 3x3 pad 1,
 *          relu, maxpool 2, dense 3136->128, relu, dense 128->10;
 *   bn:    the same with BatchNorm2d after each conv and Dropout(0.25)
 *          before the first dense layer.
 * and prints samples/s (median and best of --repeat timed runs of --steps
 * steps), the peak RSS, and with --kernels each conv kernel's GFLOP/s at one
 * thread next to a large sgemm's.
 *
 * Threads: each of the n threads runs the whole network on its share of the
 * batch (the conv, pool, activation, dropout and dense kernels all split by
 * samples), with its own gradient buffer; batch norm switches to a split by
 * channels between two barriers, since its statistics span the batch. After
 * backward the threads add the gradient buffers slice by slice, in thread
 * order (the same bits run after run for a given n), and Adam steps once.
 *
 * usage: cnn_bench [--model lenet|bn] [--threads N] [--batch B] [--steps N]
 *                  [--repeat R] [--kernels] [--engine]
 *
 * --engine runs the same recipe through the engine's model API instead
 * (model_forward, model_backward, optim_step over a struct model built from
 * a model_desc, on model_set_threads's team: the path mlq-trainer takes). */
#include <cblas.h>
/* cblas.h pulls in complex.h; I is an input width here, not sqrt(-1). */
#undef I
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "blas.h"
#include "model.h"
#include "ops/kernels.h"
#include "optim.h"
#include "rng.h"

#define MAX_THREADS 16

/* Shapes: input (1, 28, 28); conv1 out (C1, 28, 28); pool1 (C1, 14, 14);
 * conv2 (C2, 14, 14); pool2 (C2, 7, 7) = F features; dense F->HID->K. */
enum { IH = 28, C1 = 32, C2 = 64, H1 = 28, H2 = 14, H3 = 7, F = C2 * H3 * H3, HID = 128, K = 10 };

struct bench {
    int bn; /* the conv+BN+dropout recipe */
    int B, n_threads;
    size_t P;
    float *params;             /* (P) */
    float *grads;              /* (P) reduced */
    float *tgrad[MAX_THREADS]; /* (P) per thread, accumulated by the kernels */
    /* views into params (offsets shared by the gradient buffers) */
    size_t o_w1, o_b1, o_g1, o_be1, o_w2, o_b2, o_g2, o_be2, o_w3, o_b3, o_w4, o_b4;
    /* activations (B, ...) and their gradients */
    float *x;                 /* (B, 1, 28, 28) */
    int32_t *y;               /* (B) */
    float *c1, *n1, *r1, *q1; /* conv1, bn1, relu1 (B, C1, 28, 28); pool1 (B, C1, 14, 14) */
    float *c2, *n2, *r2, *q2; /* (B, C2, 14, 14), pool2 (B, C2, 7, 7) */
    float *dq;                /* dropout out (B, F) */
    float *h, *hr, *z;        /* (B, HID), (B, HID), (B, K) */
    float *g_big1, *g_big2;   /* gradient scratch (B, C1, 28, 28) each */
    float *g_mid1, *g_mid2;   /* (B, C2, 14, 14) each */
    float *g_f, *g_h, *g_z;   /* (B, F), (B, HID), (B, K) */
    float *mean1, *is1, *rm1, *rv1, *mean2, *is2, *rm2, *rv2; /* (C1) / (C2) */
    float *col[MAX_THREADS];
    uint64_t key; /* this step's dropout key */
    struct optim opt;
    pthread_barrier_t bar;
    pthread_t thread[MAX_THREADS];
    struct worker_arg {
        struct bench *b;
        int t;
    } arg[MAX_THREADS];
    int quit;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *falloc(size_t n)
{
    float *p = calloc(n, sizeof *p);
    if (!p) {
        fprintf(stderr, "cnn_bench: out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

static void bench_sync(struct bench *b)
{
    if (b->n_threads > 1) pthread_barrier_wait(&b->bar);
}

static void slice(int n, int parts, int t, int *lo, int *hi)
{
    *lo = (int)((long)n * t / parts);
    *hi = (int)((long)n * (t + 1) / parts);
}

/* rows [r0, r1) of z (.., O) = x (.., I) w^T + b */
static void dense_fwd(float *z, const float *x, const float *w, const float *b, int r0, int r1,
                      int I, int O)
{
    for (int r = r0; r < r1; r++)
        memcpy(z + (size_t)r * O, b, (size_t)O * sizeof *z);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, O, I, 1.0f, x + (size_t)r0 * I, I,
                w, I, 1.0f, z + (size_t)r0 * O, O);
}

static void dense_bwd(float *dx, float *dw, float *db, const float *dz, const float *x,
                      const float *w, int r0, int r1, int I, int O)
{
    int n = r1 - r0;
    const float *dzr = dz + (size_t)r0 * O;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, n, 1.0f, dzr, O, x + (size_t)r0 * I,
                I, 1.0f, dw, I);
    for (int r = 0; r < n; r++)
        for (int o = 0; o < O; o++)
            db[o] += dzr[(size_t)r * O + o];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, I, O, 1.0f, dzr, O, w, I, 0.0f,
                    dx + (size_t)r0 * I, I);
}

/* dz = (softmax(z) - onehot(y)) / B over rows [r0, r1). */
static void softmax_ce_grad(float *dz, const float *z, const int32_t *y, int r0, int r1, int B)
{
    for (int r = r0; r < r1; r++) {
        const float *zr = z + (size_t)r * K;
        float *d = dz + (size_t)r * K, mx = zr[0], sum = 0.0f;
        for (int k = 1; k < K; k++)
            mx = zr[k] > mx ? zr[k] : mx;
        for (int k = 0; k < K; k++)
            sum += d[k] = expf(zr[k] - mx);
        for (int k = 0; k < K; k++)
            d[k] = d[k] / sum / (float)B;
        d[y[r]] -= 1.0f / (float)B;
    }
}

static void bn_channels(struct bench *b, int t, int C, float *out, float *mean, float *is,
                        float *rm, float *rv, const float *in, size_t o_g, size_t o_be, int S)
{
    int c0, c1;
    slice(C, b->n_threads, t, &c0, &c1);
    batchnorm_forward(out, mean, is, rm, rv, in, b->params + o_g, b->params + o_be, b->B, C, S, c0,
                      c1, 1, BATCHNORM_MOMENTUM, BATCHNORM_EPS);
}

static void bn_channels_back(struct bench *b, int t, int C, float *din, const float *dout,
                             const float *in, const float *mean, const float *is, size_t o_g,
                             size_t o_be, int S)
{
    int c0, c1;
    slice(C, b->n_threads, t, &c0, &c1);
    float *g = b->tgrad[t];
    batchnorm_backward(din, g + o_g, g + o_be, dout, in, mean, is, b->params + o_g, b->B, C, S, c0,
                       c1, 1);
}

/* One training step's share of thread t. */
static void step_part(struct bench *b, int t)
{
    int B = b->B, s0, s1;
    slice(B, b->n_threads, t, &s0, &s1);
    int n = s1 - s0;
    const float *p = b->params;
    float *g = b->tgrad[t], *col = b->col[t];
    size_t A1 = (size_t)C1 * H1 * H1, Q1 = (size_t)C1 * H2 * H2, A2 = (size_t)C2 * H2 * H2;
#define S1(buf, per) ((buf) + (size_t)s0 * (per))

    /* forward */
    conv2d_forward(S1(b->c1, A1), S1(b->x, IH * IH), p + b->o_w1, p + b->o_b1, col, n, 1, IH, IH,
                   C1, 3, 3, 1, 1);
    const float *pre1 = b->c1;
    if (b->bn) {
        bench_sync(b);
        bn_channels(b, t, C1, b->n1, b->mean1, b->is1, b->rm1, b->rv1, b->c1, b->o_g1, b->o_be1,
                    H1 * H1);
        bench_sync(b);
        pre1 = b->n1;
    }
    act_forward(S1(b->r1, A1), S1(pre1, A1), (size_t)n * A1, ACT_OP_RELU, 0.0f);
    maxpool2d_forward(S1(b->q1, Q1), S1(b->r1, A1), n, C1, H1, H1, 2, 2, 2, 0);
    conv2d_forward(S1(b->c2, A2), S1(b->q1, Q1), p + b->o_w2, p + b->o_b2, col, n, C1, H2, H2, C2,
                   3, 3, 1, 1);
    const float *pre2 = b->c2;
    if (b->bn) {
        bench_sync(b);
        bn_channels(b, t, C2, b->n2, b->mean2, b->is2, b->rm2, b->rv2, b->c2, b->o_g2, b->o_be2,
                    H2 * H2);
        bench_sync(b);
        pre2 = b->n2;
    }
    act_forward(S1(b->r2, A2), S1(pre2, A2), (size_t)n * A2, ACT_OP_RELU, 0.0f);
    maxpool2d_forward(S1(b->q2, F), S1(b->r2, A2), n, C2, H2, H2, 2, 2, 2, 0);
    const float *feat = b->q2;
    if (b->bn) {
        dropout_forward(S1(b->dq, F), S1(b->q2, F), (size_t)n * F, 0.25f, b->key, (size_t)s0 * F);
        feat = b->dq;
    }
    dense_fwd(b->h, feat, p + b->o_w3, p + b->o_b3, s0, s1, F, HID);
    act_forward(S1(b->hr, HID), S1(b->h, HID), (size_t)n * HID, ACT_OP_RELU, 0.0f);
    dense_fwd(b->z, b->hr, p + b->o_w4, p + b->o_b4, s0, s1, HID, K);

    /* backward */
    softmax_ce_grad(b->g_z, b->z, b->y, s0, s1, B);
    dense_bwd(b->g_h, g + b->o_w4, g + b->o_b4, b->g_z, b->hr, p + b->o_w4, s0, s1, HID, K);
    act_backward(S1(b->g_h, HID), S1(b->g_h, HID), S1(b->h, HID), NULL, (size_t)n * HID,
                 ACT_OP_RELU, 0.0f);
    dense_bwd(b->g_f, g + b->o_w3, g + b->o_b3, b->g_h, feat, p + b->o_w3, s0, s1, F, HID);
    if (b->bn)
        dropout_backward(S1(b->g_f, F), S1(b->g_f, F), (size_t)n * F, 0.25f, b->key,
                         (size_t)s0 * F);
    maxpool2d_backward(S1(b->g_mid1, A2), S1(b->g_f, F), S1(b->r2, A2), n, C2, H2, H2, 2, 2, 2, 0);
    act_backward(S1(b->g_mid1, A2), S1(b->g_mid1, A2), S1(pre2, A2), NULL, (size_t)n * A2,
                 ACT_OP_RELU, 0.0f);
    const float *dc2 = b->g_mid1;
    if (b->bn) {
        bench_sync(b);
        bn_channels_back(b, t, C2, b->g_mid2, b->g_mid1, b->c2, b->mean2, b->is2, b->o_g2, b->o_be2,
                         H2 * H2);
        bench_sync(b);
        dc2 = b->g_mid2;
    }
    conv2d_backward(S1(b->g_f, Q1), g + b->o_w2, g + b->o_b2, S1(dc2, A2), S1(b->q1, Q1),
                    p + b->o_w2, col, n, C1, H2, H2, C2, 3, 3, 1, 1);
    maxpool2d_backward(S1(b->g_big1, A1), S1(b->g_f, Q1), S1(b->r1, A1), n, C1, H1, H1, 2, 2, 2, 0);
    act_backward(S1(b->g_big1, A1), S1(b->g_big1, A1), S1(pre1, A1), NULL, (size_t)n * A1,
                 ACT_OP_RELU, 0.0f);
    const float *dc1 = b->g_big1;
    if (b->bn) {
        bench_sync(b);
        bn_channels_back(b, t, C1, b->g_big2, b->g_big1, b->c1, b->mean1, b->is1, b->o_g1, b->o_be1,
                         H1 * H1);
        bench_sync(b);
        dc1 = b->g_big2;
    }
    conv2d_backward(NULL, g + b->o_w1, g + b->o_b1, S1(dc1, A1), S1(b->x, IH * IH), p + b->o_w1,
                    col, n, 1, IH, IH, C1, 3, 3, 1, 1);
#undef S1

    /* Sum the threads' gradients, slice by slice, and clear them for the
     * next step; then one Adam step over the whole buffer. */
    bench_sync(b);
    int p0, p1;
    slice((int)b->P, b->n_threads, t, &p0, &p1);
    memcpy(b->grads + p0, b->tgrad[0] + p0, (size_t)(p1 - p0) * sizeof *b->grads);
    memset(b->tgrad[0] + p0, 0, (size_t)(p1 - p0) * sizeof *b->grads);
    for (int u = 1; u < b->n_threads; u++) {
        float *gu = b->tgrad[u];
        for (int i = p0; i < p1; i++) {
            b->grads[i] += gu[i];
            gu[i] = 0.0f;
        }
    }
    bench_sync(b);
}

static void *worker(void *arg)
{
    struct bench *b = ((struct worker_arg *)arg)->b;
    int t = ((struct worker_arg *)arg)->t;
    for (;;) {
        bench_sync(b);
        if (b->quit) return NULL;
        step_part(b, t);
    }
}

static void bench_step(struct bench *b, struct rng *r)
{
    b->key = rng_next(r);
    bench_sync(b);
    step_part(b, 0);
    optim_step(&b->opt, b->params, b->grads, 1e-3);
}

static void bench_data(struct bench *b, struct rng *r)
{
    for (size_t i = 0; i < (size_t)b->B * IH * IH; i++)
        b->x[i] = (float)(rng_below(r, 256)) / 255.0f;
    for (int i = 0; i < b->B; i++)
        b->y[i] = (int32_t)rng_below(r, K);
}

static void bench_create(struct bench *b, int bn, int B, int n_threads, struct rng *r)
{
    memset(b, 0, sizeof *b);
    b->bn = bn;
    b->B = B;
    b->n_threads = n_threads;
    size_t o = 0;
#define TAKE(field, count) (b->field = o, o += (count))
    TAKE(o_w1, (size_t)C1 * 9);
    TAKE(o_b1, C1);
    TAKE(o_g1, bn ? C1 : 0);
    TAKE(o_be1, bn ? C1 : 0);
    TAKE(o_w2, (size_t)C2 * C1 * 9);
    TAKE(o_b2, C2);
    TAKE(o_g2, bn ? C2 : 0);
    TAKE(o_be2, bn ? C2 : 0);
    TAKE(o_w3, (size_t)HID * F);
    TAKE(o_b3, HID);
    TAKE(o_w4, (size_t)K * HID);
    TAKE(o_b4, K);
#undef TAKE
    b->P = o;
    b->params = falloc(o);
    b->grads = falloc(o);
    for (int t = 0; t < n_threads; t++) {
        b->tgrad[t] = falloc(o);
        b->col[t] = falloc(conv2d_col_floats(C1, H2, H2, 3, 3, 1, 1));
    }
    conv2d_init(b->params + b->o_w1, b->params + b->o_b1, 1, C1, 3, 3, r);
    conv2d_init(b->params + b->o_w2, b->params + b->o_b2, C1, C2, 3, 3, r);
    /* dense: nn.Linear's bound is conv2d's with a 1x1 kernel */
    conv2d_init(b->params + b->o_w3, b->params + b->o_b3, F, HID, 1, 1, r);
    conv2d_init(b->params + b->o_w4, b->params + b->o_b4, HID, K, 1, 1, r);
    size_t A1 = (size_t)B * C1 * H1 * H1, A2 = (size_t)B * C2 * H2 * H2;
    b->x = falloc((size_t)B * IH * IH);
    b->y = calloc((size_t)B, sizeof *b->y);
    b->c1 = falloc(A1);
    b->r1 = falloc(A1);
    b->q1 = falloc(A1 / 4);
    b->c2 = falloc(A2);
    b->r2 = falloc(A2);
    b->q2 = falloc(A2 / 4);
    b->h = falloc((size_t)B * HID);
    b->hr = falloc((size_t)B * HID);
    b->z = falloc((size_t)B * K);
    b->g_big1 = falloc(A1);
    b->g_mid1 = falloc(A2);
    b->g_f = falloc(A1 / 4 > (size_t)B * F ? A1 / 4 : (size_t)B * F);
    b->g_h = falloc((size_t)B * HID);
    b->g_z = falloc((size_t)B * K);
    if (bn) {
        b->n1 = falloc(A1);
        b->n2 = falloc(A2);
        b->dq = falloc((size_t)B * F);
        b->g_big2 = falloc(A1);
        b->g_mid2 = falloc(A2);
        b->mean1 = falloc(C1);
        b->is1 = falloc(C1);
        b->rm1 = falloc(C1);
        b->rv1 = falloc(C1);
        b->mean2 = falloc(C2);
        b->is2 = falloc(C2);
        b->rm2 = falloc(C2);
        b->rv2 = falloc(C2);
        batchnorm_init(b->params + b->o_g1, b->params + b->o_be1, b->rm1, b->rv1, C1);
        batchnorm_init(b->params + b->o_g2, b->params + b->o_be2, b->rm2, b->rv2, C2);
    }
    struct optim_config cfg = {
        .rule = OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    if (optim_create(&b->opt, &cfg, b->P) != 0) {
        fprintf(stderr, "cnn_bench: optimizer: out of memory\n");
        exit(1);
    }
    bench_data(b, r);
    if (n_threads > 1) {
        pthread_barrier_init(&b->bar, NULL, (unsigned)n_threads);
        for (int t = 1; t < n_threads; t++) {
            b->arg[t] = (struct worker_arg){b, t};
            if (pthread_create(&b->thread[t], NULL, worker, &b->arg[t]) != 0) {
                fprintf(stderr, "cnn_bench: cannot start a thread\n");
                exit(1);
            }
        }
    }
}

static void bench_destroy(struct bench *b)
{
    if (b->n_threads > 1) {
        b->quit = 1;
        pthread_barrier_wait(&b->bar);
        for (int t = 1; t < b->n_threads; t++)
            pthread_join(b->thread[t], NULL);
        pthread_barrier_destroy(&b->bar);
    }
    float *bufs[] = {b->params, b->grads,  b->x,      b->c1,  b->n1,  b->r1,  b->q1,    b->c2,
                     b->n2,     b->r2,     b->q2,     b->dq,  b->h,   b->hr,  b->z,     b->g_big1,
                     b->g_big2, b->g_mid1, b->g_mid2, b->g_f, b->g_h, b->g_z, b->mean1, b->is1,
                     b->rm1,    b->rv1,    b->mean2,  b->is2, b->rm2, b->rv2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    for (int t = 0; t < b->n_threads; t++) {
        free(b->tgrad[t]);
        free(b->col[t]);
    }
    free(b->y);
    optim_destroy(&b->opt);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- --kernels: each conv kernel alone, one thread ---- */

static double best_time(void (*fn)(void *), void *ctx, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn(ctx);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

struct conv_ctx {
    int B, C, H, O, backward, din;
    float *in, *w, *b, *out, *dout, *din_buf, *dw, *db, *col;
};

static void conv_run(void *p)
{
    struct conv_ctx *c = p;
    if (c->backward)
        conv2d_backward(c->din ? c->din_buf : NULL, c->dw, c->db, c->dout, c->in, c->w, c->col,
                        c->B, c->C, c->H, c->H, c->O, 3, 3, 1, 1);
    else
        conv2d_forward(c->out, c->in, c->w, c->b, c->col, c->B, c->C, c->H, c->H, c->O, 3, 3, 1, 1);
}

struct gemm_ctx {
    int n;
    float *a, *b, *c;
};

static void gemm_run(void *p)
{
    struct gemm_ctx *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b,
                g->n, 0.0f, g->c, g->n);
}

/* The sgemm peak: the best of square sizes, since on a busy machine the
 * largest loses most to shared caches. */
static double sgemm_peak(int reps)
{
    double peak = 0.0;
    const int sizes[] = {256, 512, 1024};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct gemm_ctx g = {.n = sizes[k]};
        size_t nn = (size_t)g.n * g.n;
        g.a = falloc(nn);
        g.b = falloc(nn);
        g.c = falloc(nn);
        for (size_t i = 0; i < nn; i++)
            g.a[i] = g.b[i] = (float)(i % 17) * 0.01f;
        double f = 2.0 * g.n * g.n * g.n / best_time(gemm_run, &g, reps) * 1e-9;
        printf("sgemm %d^3, one thread: %.1f GFLOP/s\n", g.n, f);
        if (f > peak) peak = f;
        free(g.a);
        free(g.b);
        free(g.c);
    }
    return peak;
}

static void kernels_report(int B, int reps)
{
    double peak = sgemm_peak(reps);
    const struct {
        const char *name;
        int C, H, O;
    } layers[] = {{"conv1 1->32 28x28", 1, 28, C1}, {"conv2 32->64 14x14", C1, 14, C2}};
    for (size_t l = 0; l < 2; l++) {
        struct conv_ctx c = {.B = B, .C = layers[l].C, .H = layers[l].H, .O = layers[l].O};
        size_t n_in = (size_t)B * c.C * c.H * c.H, n_out = (size_t)B * c.O * c.H * c.H;
        size_t nw = (size_t)c.O * c.C * 9;
        c.in = falloc(n_in);
        c.din_buf = falloc(n_in);
        c.out = falloc(n_out);
        c.dout = falloc(n_out);
        c.w = falloc(nw);
        c.dw = falloc(nw);
        c.b = falloc((size_t)c.O);
        c.db = falloc((size_t)c.O);
        c.col = falloc(conv2d_col_floats(c.C, c.H, c.H, 3, 3, 1, 1));
        for (size_t i = 0; i < n_in; i++)
            c.in[i] = (float)(i % 13) * 0.1f;
        for (size_t i = 0; i < n_out; i++)
            c.dout[i] = (float)(i % 7) * 0.1f;
        double gemm_flops = 2.0 * B * c.O * c.H * c.H * c.C * 9; /* one of the three products */
        double tf = best_time(conv_run, &c, reps);
        c.backward = 1;
        double tb = best_time(conv_run, &c, reps);
        c.din = 1;
        double tbd = best_time(conv_run, &c, reps);
        printf("%-20s batch %d: forward %.1f GFLOP/s (%.0f us/sample), backward dw %.1f, dw+din "
               "%.1f GFLOP/s (%.0f us/sample); %.0f%% of the sgemm peak overall\n",
               layers[l].name, B, gemm_flops / tf * 1e-9, tf / B * 1e6, gemm_flops / tb * 1e-9,
               2 * gemm_flops / tbd * 1e-9, tbd / B * 1e6,
               100.0 * 3 * gemm_flops / (tf + tbd) * 1e-9 / peak);
        float *bufs[] = {c.in, c.din_buf, c.out, c.dout, c.w, c.dw, c.b, c.db, c.col};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            free(bufs[i]);
    }
}

/* ---- --engine: the recipe as a struct model ---- */

static void add_layer(struct model_desc *d, const char *type, struct op_attrs a)
{
    struct model_layer *l = &d->layer[d->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->type, sizeof l->type, "%s", type);
    l->a = a;
}

static struct op_attrs attrs(int out, int kernel, int padding, float p)
{
    struct op_attrs a;
    op_attrs_defaults(&a);
    a.out = out;
    a.kernel = kernel;
    a.padding = padding;
    a.p = p;
    return a;
}

static int engine_run(int bn, int B, int threads, int steps, int repeat, double *rate)
{
    static struct model_desc d;
    memset(&d, 0, sizeof d);
    d.input = (struct shape){3, {1, IH, IH}};
    d.loss = NET_LOSS_CROSS_ENTROPY;
    d.output = NET_OUT_LOGITS;
    struct op_attrs none = attrs(0, 0, 0, 0.5f);
    for (int c = 0; c < 2; c++) {
        add_layer(&d, "conv2d", attrs(c ? C2 : C1, 3, 1, 0.5f));
        if (bn) add_layer(&d, "batchnorm", none);
        add_layer(&d, "relu", none);
        add_layer(&d, "maxpool", attrs(0, 2, 0, 0.5f));
    }
    add_layer(&d, "flatten", none);
    if (bn) add_layer(&d, "dropout", attrs(0, 0, 0, 0.25f));
    add_layer(&d, "dense", attrs(HID, 0, 0, 0.5f));
    add_layer(&d, "relu", none);
    add_layer(&d, "dense", attrs(K, 0, 0, 0.5f));

    char err[256];
    struct model m;
    int rc = model_create(&m, &d, err, sizeof err);
    if (rc) {
        fprintf(stderr, "cnn_bench: model: %s\n", err);
        return rc;
    }
    struct rng r;
    rng_seed(&r, 1);
    struct optim opt;
    struct optim_config cfg = {
        .rule = OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    float *x = falloc((size_t)B * IH * IH);
    int32_t *y = calloc((size_t)B, sizeof *y);
    if ((rc = model_reserve(&m, B)) || (rc = model_set_threads(&m, threads)) ||
        (rc = optim_create(&opt, &cfg, m.n_params)) || !y) {
        fprintf(stderr, "cnn_bench: cannot set the model up: %s\n", strerror(rc ? -rc : ENOMEM));
        model_destroy(&m);
        free(x);
        free(y);
        return rc ? rc : -ENOMEM;
    }
    model_init(&m, &r);
    for (size_t i = 0; i < (size_t)B * IH * IH; i++)
        x[i] = (float)(rng_below(&r, 256)) / 255.0f;
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)rng_below(&r, K);
    for (int k = -1; k < repeat; k++) {
        double t0 = now();
        for (int s = 0; s < (k < 0 ? 5 : steps); s++) { /* k -1: warm-up */
            model_zero_grad(&m);
            model_forward(&m, x, B, true, &r);
            model_backward(&m, x, y, NULL, B);
            optim_step(&opt, m.params, m.grads, 1e-3);
        }
        if (k >= 0) rate[k] = (double)steps * B / (now() - t0);
    }
    optim_destroy(&opt);
    model_destroy(&m);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv)
{
    blas_choose_kernel(argv);
    int bn = 0, threads = 1, B = 64, steps = 40, repeat = 5, kernels = 0, engine = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--model") == 0 && v) {
            if (strcmp(v, "lenet") != 0 && strcmp(v, "bn") != 0) goto usage;
            bn = strcmp(v, "bn") == 0;
            i++;
        } else if (strcmp(a, "--threads") == 0 && v) {
            threads = atoi(v), i++;
        } else if (strcmp(a, "--batch") == 0 && v) {
            B = atoi(v), i++;
        } else if (strcmp(a, "--steps") == 0 && v) {
            steps = atoi(v), i++;
        } else if (strcmp(a, "--repeat") == 0 && v) {
            repeat = atoi(v), i++;
        } else if (strcmp(a, "--kernels") == 0) {
            kernels = 1;
        } else if (strcmp(a, "--engine") == 0) {
            engine = 1;
        } else {
            goto usage;
        }
    }
    if (threads < 1 || threads > MAX_THREADS || B < threads || steps < 1 || repeat < 1 ||
        repeat > 99)
        goto usage;
    blas_set_threads(1); /* the bench's own threads share the work */
    if (kernels) kernels_report(B, 20);

    double rate[99];
    if (engine) {
        if (engine_run(bn, B, threads, steps, repeat, rate)) return 1;
    } else {
        struct rng r;
        rng_seed(&r, 1);
        struct bench b;
        bench_create(&b, bn, B, threads, &r);
        for (int s = 0; s < 5; s++) /* warm-up: pages, caches, OpenBLAS buffers */
            bench_step(&b, &r);
        for (int k = 0; k < repeat; k++) {
            double t0 = now();
            for (int s = 0; s < steps; s++)
                bench_step(&b, &r);
            rate[k] = (double)steps * B / (now() - t0);
        }
        bench_destroy(&b);
    }
    qsort(rate, (size_t)repeat, sizeof rate[0], cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"side\":\"mlq\",\"path\":\"%s\",\"model\":\"%s\",\"threads\":%d,\"batch\":%d,"
           "\"samples_per_s\":%.0f,\"best_samples_per_s\":%.0f,\"peak_rss_mb\":%.1f,"
           "\"blas\":\"%s\"}\n",
           engine ? "engine" : "kernels", bn ? "bn" : "lenet", threads, B, rate[repeat / 2],
           rate[repeat - 1], (double)ru.ru_maxrss / 1024.0, blas_kernel());
    return 0;
usage:
    fprintf(stderr, "usage: cnn_bench [--model lenet|bn] [--threads N] [--batch B] [--steps N] "
                    "[--repeat R] [--kernels] [--engine]\n");
    return 2;
}
