#include "job_memory.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "errmsg.h"
#include "optim.h"
#include "spec_model.h"
#include "team.h"

/* The program itself: code, libraries, OpenBLAS's and HDF5's buffers, the
 * ZeroMQ threads. Measured at about 20 MiB for mlq-trainer on a small job;
 * rounded up for a few BLAS threads. */
#define PROCESS_BYTES (INT64_C(32) << 20)

/* The least the data gets when the spec leaves it to the trainer. */
#define MIN_DATA_BYTES (INT64_C(64) << 20)

static int64_t limit_mb;

void job_memory_set_limit(int64_t mb)
{
    limit_mb = mb > 0 ? mb : 0;
}

int64_t job_memory_limit_mb(void)
{
    return limit_mb;
}

int job_memory_eval_rows(const struct mlq_spec *model)
{
    return model->typed ? JOB_MEMORY_LAYER_ROWS : JOB_MEMORY_EVAL_ROWS;
}

int job_memory_train_rows(const struct mlq_spec *model, int64_t n, bool has_validation)
{
    int64_t eval = job_memory_eval_rows(model);
    int64_t B = model->optimizer.name == OPT_GD ? eval : model->batch_size;
    if (B > n) B = n;                         /* a batch never holds more than the data */
    if (B < eval && has_validation) B = eval; /* validation reuses the same buffers */
    return B < 1 ? 1 : (int)B;
}

int64_t job_memory_split_rows(const struct mlq_spec *spec, int64_t n)
{
    if (spec->has_validation || !(spec->validation_split > 0)) return 0;
    /* The last fraction of the rows, as Keras does (train.c). */
    return (int64_t)((double)n * spec->validation_split);
}

static void add(struct job_memory *m, const char *name, int64_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(struct job_memory *m, const char *name, int64_t bytes, const char *fmt, ...)
{
    if (bytes <= 0 || m->n_parts == JOB_MEMORY_MAX_PARTS) return;
    struct job_memory_part *p = &m->part[m->n_parts++];
    p->name = name;
    p->bytes = bytes;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->how, sizeof p->how, fmt, ap);
    va_end(ap);
    m->total = __builtin_add_overflow(m->total, bytes, &m->total) ? INT64_MAX : m->total;
}

/* a * b * c, saturating: a hostile shape must not wrap into a small number. */
static int64_t mul3(int64_t a, int64_t b, int64_t c)
{
    int64_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) return INT64_MAX;
    return abc;
}

/* The network's buffers for batches of B rows, by engine/net.c's rules:
 * net_create allocates params and grads (P floats each), net_reserve z and
 * a for every layer (B x sum O x 2) and two backward buffers (B x max O). */
static void add_network(struct job_memory *m, const struct mlq_spec *model, int B, int64_t *P)
{
    int64_t params = 0, sum_o = 0, max_o = 1;
    for (int l = 0; l < model->n_layers; l++) {
        int64_t I = model->layers[l], O = model->layers[l + 1];
        params += O * I + O;
        sum_o += O;
        if (O > max_o) max_o = O;
    }
    *P = params;
    add(m, "activations", mul3(B, sum_o, 2 * 4), "batch %d x %lld floats x 2", B, (long long)sum_o);
    add(m, "backward buffers", mul3(B, max_o, 2 * 4), "batch %d x %lld floats x 2", B,
        (long long)max_o);
    add(m, "parameters", params * 4, "%lld floats", (long long)params);
    add(m, "gradients", params * 4, "%lld floats", (long long)params);
}

/* A model of typed layers: the engine's own sizes (model_check) for B
 * rows, on the data's shape when the spec has no model.input. Returns
 * false when the shape is unknown (the trainer refuses such a model). */
static bool add_typed_model(struct job_memory *m, const struct mlq_spec *model,
                            const struct job_memory_data *data, int B, int64_t *P, int64_t *D,
                            int64_t *K, int64_t *T, int64_t *S)
{
    struct shape shape = spec_model_dataset_shape(data->x_rank, data->x_dims);
    struct model_sizes sz;
    bool checked = false;
    char err[256];
    if (spec_model_check(model, shape.n ? &shape : NULL, B, &sz, &checked, err, sizeof err) ||
        !checked)
        return false;
    *P = (int64_t)sz.n_params;
    *D = (int64_t)sz.inputs;
    *K = sz.outputs;
    *T = sz.steps;
    *S = (int64_t)sz.n_state;
    add(m, "activations", mul3(1, (int64_t)sz.act_floats, 4),
        "batch %d: outputs, their gradients, saved and scratch, %zu floats", B, sz.act_floats);
    /* Each more training thread has a scratch of its own (the trainer's
     * budget: the spec's threads, else up to one per CPU). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = model->threads > 0 ? model->threads : cpus > 0 ? (int)cpus : 1;
    if (threads > TEAM_MAX_THREADS) threads = TEAM_MAX_THREADS;
    if (threads > 1 && sz.scratch_floats)
        add(m, "thread scratch", mul3(threads - 1, (int64_t)sz.scratch_floats, 4),
            "%d more threads, %zu floats each", threads - 1, sz.scratch_floats);
    add(m, "parameters", *P * 4, "%lld floats", (long long)*P);
    add(m, "gradients", *P * 4, "%lld floats", (long long)*P);
    if (*S) add(m, "layer state", *S * 4, "%lld floats (batch norm statistics)", (long long)*S);
    return true;
}

/* Optimizer state buffers of P floats: the engine's own count (optim_create
 * allocates them; with n = 0 it costs nothing). */
static int optimizer_buffers(const struct spec_optimizer *o)
{
    struct optim opt;
    if (spec_model_optim_create(&opt, o, 0)) return 3; /* the most any optimizer keeps */
    float *bufs[3];
    int k = optim_state_buffers(&opt, bufs);
    optim_destroy(&opt);
    return k;
}

static const char *mib(int64_t bytes, char *buf, size_t len)
{
    if (bytes >= INT64_C(1) << 30)
        snprintf(buf, len, "%.1f GiB", (double)bytes / (double)(INT64_C(1) << 30));
    else if (bytes >= INT64_C(1) << 20)
        snprintf(buf, len, "%.0f MiB", (double)bytes / (double)(INT64_C(1) << 20));
    else
        snprintf(buf, len, "%.0f KiB", (double)bytes / 1024.0 + 0.5);
    return buf;
}

/* A file's share under budget: every row, or one streamed group, plus the
 * rows that dataset_read_rows of a streamed file copies out (read_rows). */
static int64_t add_data(struct job_memory *m, const char *name, const struct job_memory_data *d,
                        int64_t budget, int read_rows)
{
    bool in_memory;
    int64_t bytes = dataset_memory_bytes(d->rows, d->row_bytes, budget, &in_memory);
    if (!in_memory && read_rows > 0) bytes += (int64_t)read_rows * d->row_bytes;
    if (in_memory)
        add(m, name, bytes, "%lld rows x %lld bytes, in memory", (long long)d->rows,
            (long long)d->row_bytes);
    else
        add(m, name, bytes, "%lld rows x %lld bytes, streamed", (long long)d->rows,
            (long long)d->row_bytes);
    return bytes;
}

int job_memory_plan(const struct job_memory_job *j, struct job_memory *m, char *err, size_t errlen)
{
    const struct mlq_spec *spec = j->spec, *model = j->model;
    memset(m, 0, sizeof *m);
    m->limit = limit_mb << 20;
    int64_t asked = spec->memory_budget_mb;
    if (m->limit && asked > limit_mb)
        return errmsg(err, errlen, -EINVAL,
                      "the spec's memory_budget_mb (%lld) is above this trainer's limit of %lld "
                      "MiB (trainer.memory_budget_mb); ask for at most that, or 0 to let the "
                      "trainer choose",
                      (long long)asked, (long long)limit_mb);

    int64_t D = model->layers[0], K = model->layers[model->n_layers], T = 1, P = 0, S = 0;
    bool train = spec->kind == JOB_TRAIN;
    int64_t n_val = train ? job_memory_split_rows(spec, j->data.rows) : 0;
    bool has_val = train && (j->val.rows > 0 || n_val > 0);
    int B = train ? job_memory_train_rows(model, j->data.rows - n_val, has_val)
                  : job_memory_eval_rows(model);
    m->rows = B;

    add(m, "program", PROCESS_BYTES, "code, libraries, BLAS and HDF5 buffers");
    if (!model->typed || !add_typed_model(m, model, &j->data, B, &P, &D, &K, &T, &S))
        add_network(m, model, B, &P);
    /* train.c: x (B, D) and, per row, T class ids (cross-entropy; a
     * language model has one per step) or T K targets (mse), twice (one
     * is read while the other trains); eval and predict: once. */
    int copies = train ? 2 : 1;
    int64_t Y = model->loss == LOSS_CROSS_ENTROPY ? T : mul3(T, K, 1);
    add(m, "batch buffers", mul3(copies * B, D + Y, 4), "%s%d rows x (%lld + %lld) values",
        copies == 2 ? "2 x " : "", B, (long long)D, (long long)Y);
    if (train) {
        int k = optimizer_buffers(&model->optimizer);
        add(m, "optimizer state", mul3(k, P, 4), "%d x %lld floats", k, (long long)P);
        if (model->optimizer.name == OPT_GD)
            add(m, "gradient sum", P * 4, "%lld floats, full-batch gd", (long long)P);
        /* save(): a copy of the state, then the blob of both; the daemon's
         * I/O thread holds the last one for a resend. */
        add(m, "checkpoint", mul3(2 + 3 * k, P, 4) + mul3(3, S, 4) + 8192,
            "state copy, blob and the copy held for a resend, of %lld + %d x %lld floats",
            (long long)P, k, (long long)P);
    }
    /* The blob as received, and its decoded copy (restore, load_model). */
    if (j->checkpoint_bytes)
        add(m, train ? "resumed checkpoint" : "checkpoint", 2 * (int64_t)j->checkpoint_bytes,
            "%zu bytes, received and decoded", j->checkpoint_bytes);
    if (!train && model->loss == LOSS_CROSS_ENTROPY)
        add(m, "results", K * K * 8 + B * 4, "%lld x %lld confusion matrix", (long long)K,
            (long long)K);

    /* What is left is the data's: all of it in memory if it fits, else it
     * is streamed; a spec's own memory_budget_mb decides instead. */
    int64_t rest = m->limit ? m->limit - m->total : 0;
    /* Not below one streamed group: a job too large for the limit is
     * refused below with its data counted as it would be held. */
    if (m->limit && rest < MIN_DATA_BYTES) rest = MIN_DATA_BYTES;
    int64_t budget = asked > 0 ? asked << 20 : rest;
    m->data_budget = budget;
    /* Training reads batches from the buffer; validation (a split's view
     * too), eval and predict copy rows out of a streamed file. */
    int64_t used = add_data(m, "dataset", &j->data, budget, !train || n_val > 0 ? B : 0);
    if (j->val.rows > 0) {
        m->val_budget = asked > 0 || !m->limit         ? budget
                        : rest - used > MIN_DATA_BYTES ? rest - used
                                                       : MIN_DATA_BYTES;
        add_data(m, "validation data", &j->val, m->val_budget, B);
    }
    if (!m->limit || m->total <= m->limit) return 0;

    char need[2048], lim[32];
    job_memory_describe(m, need, sizeof need);
    return errmsg(err, errlen, -ENOMEM,
                  "job needs %s; trainer limit %s (trainer.memory_budget_mb): lower batch_size "
                  "or the layer sizes, or raise the limit",
                  need, mib(m->limit, lim, sizeof lim));
}

void job_memory_describe(const struct job_memory *m, char *buf, size_t len)
{
    int order[JOB_MEMORY_MAX_PARTS];
    for (int i = 0; i < m->n_parts; i++)
        order[i] = i;
    for (int i = 1; i < m->n_parts; i++) /* largest first */
        for (int k = i; k > 0 && m->part[order[k]].bytes > m->part[order[k - 1]].bytes; k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    char size[32];
    size_t at = (size_t)snprintf(buf, len, "~%s:", mib(m->total, size, sizeof size));
    for (int i = 0; i < m->n_parts && at < len; i++) {
        const struct job_memory_part *p = &m->part[order[i]];
        at += (size_t)snprintf(buf + at, len - at, "%s %s %s (%s)", i ? "," : "", p->name,
                               mib(p->bytes, size, sizeof size), p->how);
    }
}
