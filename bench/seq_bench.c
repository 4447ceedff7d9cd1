/* Sequence-model training benchmark through the engine's model API
 * (model_forward, model_backward, optim_step over a struct model on
 * model_set_threads's team: the path mlq-trainer takes), the two
 * recipes on random data of the right shapes (the speed does not depend on
 * the values):
 *   lstm: Fashion-MNIST read row by row, (28, 28) -> LSTM 128, last step
 *         -> dense 10; Adam lr 1e-3;
 *   gpt:  a character Transformer, context T = 128 bytes: embedding 256 x
 *         128, learned positions, 4 pre-norm blocks of 4 heads (causal),
 *         layer norm, dense 256 at every step; AdamW lr 3e-4.
 * Prints samples/s, the median and best of --repeat timed runs of --steps
 * steps after a warm-up (0.3 s at least), the median samples per CPU second
 * (at one thread, what a shared machine's neighbours do not change), and the
 * peak RSS. bench/seq_bench.sh runs it beside PyTorch.
 *
 * usage: seq_bench [--model lstm|gpt] [--threads N] [--batch B]
 *                  [--steps N] [--repeat R] */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "blas.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

#define WARMUP_S 0.3 /* seconds of warm-up steps at least */

enum { ROWS = 28, HID = 128, CLASSES = 10, T = 128, E = 128, V = 256, BLOCKS = 4, HEADS = 4 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the whole process: on a shared machine, samples per CPU
 * second at one thread measure the code, not the neighbours. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static struct op_attrs *add(struct model_desc *d, const char *type)
{
    struct model_layer *l = &d->layer[d->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->type, sizeof l->type, "%s", type);
    op_attrs_defaults(&l->a);
    return &l->a;
}

static void describe(struct model_desc *d, bool gpt)
{
    memset(d, 0, sizeof *d);
    d->loss = NET_LOSS_CROSS_ENTROPY;
    d->output = NET_OUT_LOGITS;
    if (!gpt) {
        d->input = (struct shape){2, {ROWS, ROWS}};
        struct op_attrs *a = add(d, "lstm");
        a->out = HID;
        a->sequence = false;
        add(d, "dense")->out = CLASSES;
        return;
    }
    d->input = (struct shape){1, {T}};
    struct op_attrs *a = add(d, "embedding");
    a->vocab = V;
    a->out = E;
    add(d, "positional")->vocab = T;
    for (int b = 0; b < BLOCKS; b++) {
        a = add(d, "transformer");
        a->heads = HEADS;
        a->causal = true;
    }
    add(d, "layernorm");
    add(d, "dense")->out = V;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The weights, the data and the RNG of step 0. */
static void start_state(struct model *m, struct rng *r, float *x, int32_t *y, size_t n_x,
                        size_t n_y, bool gpt)
{
    rng_seed(r, 1);
    model_init(m, r);
    for (size_t i = 0; i < n_x; i++)
        x[i] = gpt ? (float)rng_below(r, V) : rng_uniform(r);
    for (size_t i = 0; i < n_y; i++)
        y[i] = (int32_t)rng_below(r, gpt ? V : CLASSES);
}

static void train_step(struct model *m, struct optim *opt, const struct optim_config *cfg,
                       const float *x, const int32_t *y, int B, struct rng *r)
{
    model_zero_grad(m);
    model_forward(m, x, B, true, r);
    model_backward(m, x, y, NULL, B);
    optim_step(opt, m->params, m->grads, cfg->lr);
}

int main(int argc, char **argv)
{
    blas_choose_kernel(argv);
    bool gpt = false;
    int threads = 1, B = -1, steps = 10, repeat = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--model") == 0 && v && (!strcmp(v, "lstm") || !strcmp(v, "gpt")))
            gpt = strcmp(v, "gpt") == 0, i++;
        else if (strcmp(a, "--threads") == 0 && v)
            threads = atoi(v), i++;
        else if (strcmp(a, "--batch") == 0 && v)
            B = atoi(v), i++;
        else if (strcmp(a, "--steps") == 0 && v)
            steps = atoi(v), i++;
        else if (strcmp(a, "--repeat") == 0 && v)
            repeat = atoi(v), i++;
        else
            goto usage;
    }
    if (B < 0) B = gpt ? 32 : 64;
    if (threads < 1 || threads > 16 || B < 1 || steps < 1 || repeat < 1 || repeat > 99) goto usage;
    blas_set_threads(1); /* the model's team splits the work */

    static struct model_desc d;
    describe(&d, gpt);
    struct model m;
    char err[256];
    int rc = model_create(&m, &d, err, sizeof err);
    if (rc) {
        fprintf(stderr, "seq_bench: model: %s\n", err);
        return 1;
    }
    struct optim opt;
    struct optim_config cfg = {.rule = gpt ? OPTIM_ADAMW : OPTIM_ADAM,
                               .lr = gpt ? 3e-4 : 1e-3,
                               .beta1 = 0.9,
                               .beta2 = 0.999,
                               .eps = 1e-8,
                               .weight_decay = gpt ? 0.01 : 0.0};
    size_t D = shape_size(&m.input), Y = gpt ? (size_t)B * T : (size_t)B;
    float *x = malloc(sizeof *x * (size_t)B * D);
    int32_t *y = malloc(sizeof *y * Y);
    if (!x || !y || (rc = model_reserve(&m, B)) || (rc = model_set_threads(&m, threads)) ||
        (rc = optim_create(&opt, &cfg, m.n_params))) {
        fprintf(stderr, "seq_bench: cannot set the model up: %s\n", strerror(rc ? -rc : ENOMEM));
        return 1;
    }
    struct rng r;
    start_state(&m, &r, x, y, B * D, Y, gpt);
    double rate[99], cpu_rate[99];
    /* Warm-up: two steps and WARMUP_S at least. OpenBLAS's idle pool
     * thread spins on sched_yield for about 0.1 s after the library loads
     * (its thread timeout), whatever openblas_set_num_threads says: a timed
     * run inside that window shares a core with it (a quarter of the
     * samples of a 10-step LSTM run at 2 threads, measured). */
    double w0 = now();
    for (int s = 0; s < 2 || now() - w0 < WARMUP_S; s++)
        train_step(&m, &opt, &cfg, x, y, B, &r);
    /* the timed runs start from the same weights whatever the warm-up did,
     * so that params_fnv compares runs */
    optim_destroy(&opt);
    if ((rc = optim_create(&opt, &cfg, m.n_params))) {
        fprintf(stderr, "seq_bench: optimizer: %s\n", strerror(-rc));
        return 1;
    }
    start_state(&m, &r, x, y, B * D, Y, gpt);
    for (int k = 0; k < repeat; k++) {
        double t0 = now(), c0 = cpu_now();
        for (int s = 0; s < steps; s++)
            train_step(&m, &opt, &cfg, x, y, B, &r);
        rate[k] = (double)steps * B / (now() - t0);
        cpu_rate[k] = (double)steps * B / (cpu_now() - c0);
    }
    double best = rate[0];
    for (int k = 1; k < repeat; k++)
        best = rate[k] > best ? rate[k] : best;
    qsort(rate, (size_t)repeat, sizeof *rate, cmp_double);
    qsort(cpu_rate, (size_t)repeat, sizeof *cpu_rate, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t digest = 14695981039346656037u; /* FNV-1a of the parameters' bytes */
    for (size_t i = 0; i < m.n_params * sizeof *m.params; i++)
        digest = (digest ^ ((const unsigned char *)m.params)[i]) * 1099511628211u;
    printf("model %s threads %d batch %d params %zu samples/s median %.1f best %.1f "
           "per_cpu_s %.1f peak_rss_mib %.0f loss %.4f params_fnv %016llx\n",
           gpt ? "gpt" : "lstm", threads, B, m.n_params, rate[repeat / 2], best,
           cpu_rate[repeat / 2], (double)ru.ru_maxrss / 1024.0, model_loss(&m, y, NULL, B),
           (unsigned long long)digest);
    optim_destroy(&opt);
    model_destroy(&m);
    free(x);
    free(y);
    return 0;
usage:
    fprintf(stderr, "usage: seq_bench [--model lstm|gpt] [--threads N] [--batch B] [--steps N] "
                    "[--repeat R]\n");
    return 2;
}
