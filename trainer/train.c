#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "augment.h"
#include "blas.h"
#include "checkpoint.h"
#include "dataset.h"
#include "errmsg.h"
#include "job_memory.h"
#include "log.h"
#include "model.h"
#include "net.h"
#include "optim.h"
#include "rng.h"
#include "schedule.h"
#include "spec_model.h"
#include "team.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Everything one run holds; released by run_free in reverse order. */
struct run {
    const struct mlq_spec *spec;
    struct dataset *data;     /* the file behind train (and val, for a split) */
    struct dataset *train;    /* rows trained on (== data, or a view) */
    struct dataset *val_file; /* a separate validation file */
    struct dataset *val;      /* rows validated on, or NULL */
    struct model model;       /* a dense stack runs through model.net */
    struct optim opt;
    struct schedule_state sched; /* sched.lr: the learning rate of the next step */
    double epoch_lr;             /* the lr of the epoch's last step, recorded as its "lr" */
    /* early stopping */
    double es_best;
    int64_t es_wait, es_best_epoch;
    /* max_seconds: training time of earlier attempts (from the checkpoint),
     * and when this attempt's share runs out (0: no limit). */
    double trained_before, started, deadline;
    struct rng rng;
    float *x[2];           /* (B, D): the batch trained on, the batch read meanwhile */
    int32_t *yc[2];        /* (B, T) class ids, cross-entropy only */
    float *y[2];           /* (B, T, K) targets, mse only */
    float *gacc;           /* (P) full-batch gradient sum, gd only */
    struct augment aug;    /* random crops and flips of the training images */
    bool augmenting;       /* aug asks for something */
    float *aug_scratch;    /* (D): one image being transformed */
    struct job_memory mem; /* the estimate, and the data's budgets */
    int rows;              /* B: rows per forward pass */
    bool fused_sgd;        /* plain SGD: the step happens inside backward */
    int blas_threads;      /* the caller's OpenBLAS threads, restored at the end */
    char *spec_json;
};

static void run_free(struct run *r)
{
    if (r->blas_threads > 0) blas_set_threads(r->blas_threads);
    free(r->spec_json);
    free(r->gacc);
    free(r->aug_scratch);
    for (int i = 0; i < 2; i++) {
        free(r->y[i]);
        free(r->yc[i]);
        free(r->x[i]);
    }
    optim_destroy(&r->opt);
    model_destroy(&r->model);
    if (r->val != r->val_file) dataset_close(&r->val);
    dataset_close(&r->val_file);
    if (r->train != r->data) dataset_close(&r->train);
    dataset_close(&r->data);
}

/* The job's memory from its files' shapes, before anything is allocated:
 * a job that would not fit the trainer's limit stops here. */
static int plan_memory(struct run *r, size_t resume_len, char *err, size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    struct job_memory_job j = {.spec = s, .model = s, .checkpoint_bytes = resume_len};
    struct dataset_info info;
    int rc = dataset_probe(&s->dataset, true, &info, &j.data.row_bytes, err, errlen);
    j.data.rows = info.n;
    j.data.x_rank = info.x_rank;
    memcpy(j.data.x_dims, info.x_dims, sizeof j.data.x_dims);
    if (!rc && s->has_validation) {
        rc = dataset_probe(&s->validation, true, &info, &j.val.row_bytes, err, errlen);
        j.val.rows = info.n;
    }
    if (!rc) rc = job_memory_plan(&j, &r->mem, err, errlen);
    if (!rc) {
        char what[2048];
        job_memory_describe(&r->mem, what, sizeof what);
        log_info("memory: %s", what);
    }
    return rc;
}

static int open_data(struct run *r, char *err, size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    int rc = dataset_open(&r->data, &s->dataset, true, r->mem.data_budget, err, errlen);
    if (rc) return rc;
    /* Typed models are checked once built (check_typed_data). */
    if (!s->typed && (rc = dataset_check_model(r->data, s, err, errlen))) return rc;
    r->train = r->data;
    if (s->has_validation) {
        rc = dataset_open(&r->val_file, &s->validation, true, r->mem.val_budget, err, errlen);
        if (!rc && !s->typed) rc = dataset_check_model(r->val_file, s, err, errlen);
        r->val = r->val_file;
        return rc;
    }
    if (s->validation_split > 0) {
        /* The last fraction of the rows, as Keras does: no shuffle, so the
         * split is the same in every epoch and after a resume. */
        int64_t n = dataset_get_info(r->data)->n;
        int64_t n_val = job_memory_split_rows(s, n);
        if (n_val < 1 || n_val >= n)
            return errmsg(err, errlen, -EINVAL,
                          "validation_split %.3g of %lld rows leaves no rows to %s",
                          s->validation_split, (long long)n, n_val < 1 ? "validate" : "train");
        if ((rc = dataset_view(&r->train, r->data, 0, n - n_val, err, errlen))) return rc;
        return dataset_view(&r->val, r->data, n - n_val, n, err, errlen);
    }
    return 0;
}

static int alloc_buffers(struct run *r)
{
    const struct mlq_spec *s = r->spec;
    int B = job_memory_train_rows(s, dataset_get_info(r->train)->n, r->val != NULL);
    r->rows = B;
    size_t D = shape_size(&r->model.input);
    size_t K = (size_t)r->model.K, T = (size_t)r->model.steps;
    bool ce = s->loss == LOSS_CROSS_ENTROPY;
    for (int i = 0; i < 2; i++) {
        r->x[i] = malloc(sizeof(float) * (size_t)B * D);
        if (ce)
            r->yc[i] = malloc(sizeof(int32_t) * (size_t)B * T);
        else
            r->y[i] = malloc(sizeof(float) * (size_t)B * T * K);
        if (!r->x[i] || !(ce ? (void *)r->yc[i] : (void *)r->y[i])) return -ENOMEM;
    }
    const struct shape *in = &r->model.input;
    r->augmenting =
        in->n == 3 && augment_init(&r->aug, &s->augment, s->seed, in->d[0], in->d[1], in->d[2]);
    if (r->augmenting && !(r->aug_scratch = malloc(sizeof(float) * D))) return -ENOMEM;
    if (s->optimizer.name == OPT_GD && !(r->gacc = calloc(r->model.n_params, sizeof(float))))
        return -ENOMEM;
    return model_reserve(&r->model, B);
}

/* Builds the engine model of the spec on the training data's shape, checks
 * typed models against the data, and keeps the spec the checkpoints carry,
 * with the input shape it resolved (so eval, predict and export need no
 * dataset to know it). */
static int build_model(struct run *r, char *err, size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    const struct dataset_info *di = dataset_get_info(r->data);
    struct shape data = spec_model_dataset_shape(di->x_rank, di->x_dims);
    struct mlq_spec *resolved = malloc(sizeof *resolved);
    char why[512] = "out of memory";
    int rc = resolved ? 0 : -ENOMEM;
    if (!rc) rc = spec_model_check(s, &data, s->batch_size, NULL, NULL, why, sizeof why);
    if (!rc) rc = spec_model_create(&r->model, s, &data, why, sizeof why);
    if (!rc && s->typed) {
        char what[96], sh[SHAPE_STR_MAX];
        snprintf(what, sizeof what, "the model's input %s takes %zu",
                 shape_str(&r->model.input, sh, sizeof sh), shape_size(&r->model.input));
        size_t D = shape_size(&r->model.input);
        rc = dataset_check_io_steps(r->data, s->kind, s->loss, (int64_t)D, what, r->model.K,
                                    r->model.steps, err, errlen);
        if (!rc && r->val_file)
            rc = dataset_check_io_steps(r->val_file, s->kind, s->loss, (int64_t)D, what, r->model.K,
                                        r->model.steps, err, errlen);
        if (rc) goto out;
    }
    if (rc) {
        errmsg(err, errlen, rc, "%s%s", strncmp(why, "model", 5) ? "model: " : "", why);
        goto out;
    }
    *resolved = *s;
    if (s->typed && !s->input_rank) {
        resolved->input_rank = r->model.input.n;
        for (int i = 0; i < r->model.input.n; i++)
            resolved->input[i] = r->model.input.d[i];
    }
    json_t *doc = spec_to_json(resolved);
    r->spec_json = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!r->spec_json) rc = errmsg(err, errlen, -ENOMEM, "out of memory");
out:
    free(resolved);
    return rc;
}

/* Rows per batch from which a second thread pays, measured on 2 cores
 * (docs/benchmarks.md): below it the hand-over between threads costs more
 * than the shared work saves, and OpenBLAS's own threads do worse still. */
#define THREADS_MIN_ROWS 16

/* The caller's OpenBLAS thread count is the run's thread budget. The
 * model splits its layers over threads of its own, each calling
 * single-threaded OpenBLAS, which on these small matrices beats OpenBLAS's
 * threading; small batches run on one thread. A dense stack is reproduced
 * bit for bit by the same spec, seed and thread budget; a layered model by
 * the same spec and seed on any number of threads (op.h). */
static int set_threads(struct run *r)
{
    const struct mlq_spec *s = r->spec;
    int budget = blas_threads();
    if (budget <= 1) return 0;
    int B = s->optimizer.name == OPT_GD ? r->rows : s->batch_size;
    int max = r->model.net ? NET_MAX_THREADS : TEAM_MAX_THREADS;
    int n = B < THREADS_MIN_ROWS ? 1 : budget < max ? budget : max;
    r->blas_threads = budget; /* restored by run_free */
    blas_set_threads(1);
    int rc = n > 1 ? model_set_threads(&r->model, n) : 0;
    if (rc == -EAGAIN) {
        log_warn("cannot start %d training threads; going on with one", n);
        rc = 0;
    }
    int got = model_threads(&r->model);
    log_info("training on %d thread%s (batch %d, thread budget %d)", got, got == 1 ? "" : "s", B,
             budget);
    return rc;
}

/* Restores weights, optimizer state, RNG and position from a checkpoint of
 * the same run, and its epoch's metrics into res: the result, should there
 * be nothing left to train. */
static int restore(struct run *r, const void *blob, size_t len, int64_t *epoch, int64_t *step,
                   double *best, struct train_result *res, char *err, size_t errlen)
{
    struct checkpoint c;
    char why[256];
    int rc = checkpoint_decode(blob, len, &c, why, sizeof why);
    if (rc) return errmsg(err, errlen, rc, "cannot resume: %s", why);
    if (c.n_params != r->model.n_params || c.n_optim != optim_state_floats(&r->opt)) {
        rc = errmsg(err, errlen, -EINVAL,
                    "cannot resume: the checkpoint holds %zu parameters, %zu optimizer values and "
                    "%zu state values, this model needs %zu, %zu and %zu",
                    c.n_params, c.n_optim, c.n_state, r->model.n_params,
                    optim_state_floats(&r->opt), r->model.n_state);
        goto out;
    }
    /* By name: an older checkpoint's state arena may be laid out otherwise. */
    float *bufs[3];
    int k = optim_state_buffers(&r->opt, bufs);
    if ((rc = checkpoint_load_tensors(&c, &r->model.tensors, r->model.params, bufs, k,
                                      r->model.state, why, sizeof why))) {
        rc = errmsg(err, errlen, rc, "cannot resume: %s", why);
        goto out;
    }
    r->opt.step = c.optim_step;
    r->opt.has_momentum_buffer = c.optim_step > 0;
    const struct spec_schedule *sc = &r->spec->optimizer.schedule;
    if (c.has_run_state) {
        r->sched.lr = c.sched_lr;
        r->sched.last_epoch = c.sched_last_epoch;
        r->sched.phase_epoch = c.sched_phase_epoch;
        r->sched.best = c.sched_best;
        r->sched.num_bad_epochs = c.sched_bad_epochs;
        r->sched.cooldown_counter = c.sched_cooldown;
        r->es_best = c.es_best;
        r->es_wait = c.es_wait;
        r->es_best_epoch = c.es_best_epoch;
        r->trained_before = c.trained_seconds;
    } else if (sc->n_phases) {
        /* A checkpoint without the schedule's state: a schedule that reads
         * no metric is replayed to where the run was. */
        int64_t n = sc->per_step ? c.step : c.epoch;
        for (int64_t i = 0; i < n; i++)
            schedule_step(&r->sched, sc, NAN);
        if (sc->phase[0].kind == SCHED_PLATEAU || r->spec->early_stopping.on)
            log_warn("the checkpoint has no schedule or early-stopping state: they start afresh");
    }
    r->rng = c.rng;
    *epoch = c.epoch;
    *step = c.step;
    *best = c.best_metric;
    res->epochs_done = c.epoch;
    res->final_train_loss = c.train_loss;
    res->final_val_loss = c.val_loss;
    res->final_val_accuracy = c.val_accuracy;
out:
    checkpoint_free(&c);
    return rc;
}

/* Whether the run keeps schedule, early-stopping and time state in its checkpoints. */
static bool has_run_state(const struct mlq_spec *s)
{
    return s->optimizer.schedule.n_phases > 0 || s->early_stopping.on || s->max_seconds > 0;
}

/* The run's training time so far, this attempt's included. */
static double trained_seconds(const struct run *r)
{
    return r->trained_before + (r->started > 0 ? now_seconds() - r->started : 0);
}

static bool out_of_time(const struct run *r)
{
    return r->deadline > 0 && now_seconds() >= r->deadline;
}

static int save(struct run *r, const struct epoch_metrics *m, double best,
                const struct train_callbacks *cb)
{
    if (!cb || !cb->on_checkpoint) return 0;
    size_t n_optim = optim_state_floats(&r->opt);
    float *state = malloc(sizeof(float) * (n_optim ? n_optim : 1));
    if (!state) return -ENOMEM;
    float *bufs[3];
    int k = optim_state_buffers(&r->opt, bufs);
    for (int i = 0; i < k; i++)
        memcpy(state + (size_t)i * r->opt.n, bufs[i], sizeof(float) * r->opt.n);
    struct checkpoint c = {
        .spec_json = r->spec_json,
        .epoch = m->epoch,
        .step = m->step,
        .epoch_rows = 0,
        .rng = r->rng,
        .optim_step = r->opt.step,
        .best_metric = best,
        .train_loss = m->train_loss,
        .train_accuracy = m->train_accuracy,
        .val_loss = m->has_validation ? m->val_loss : NAN,
        .val_accuracy = m->has_validation ? m->val_accuracy : NAN,
        .n_params = r->model.n_params,
        .params = r->model.params,
        .n_optim = n_optim,
        .optim_state = state,
        .n_state = r->model.n_state,
        .state = r->model.state,
        .has_run_state = has_run_state(r->spec),
        .sched_lr = r->sched.lr,
        .sched_last_epoch = r->sched.last_epoch,
        .sched_phase_epoch = r->sched.phase_epoch,
        .sched_best = r->sched.best,
        .sched_bad_epochs = r->sched.num_bad_epochs,
        .sched_cooldown = r->sched.cooldown_counter,
        .es_best = r->es_best,
        .es_wait = r->es_wait,
        .es_best_epoch = r->es_best_epoch,
        .trained_seconds = trained_seconds(r),
    };
    int rc = checkpoint_set_tensors(&c, &r->model.tensors);
    void *blob;
    size_t len;
    if (!rc) rc = checkpoint_encode(&c, &blob, &len);
    free(c.tensors);
    free(state);
    if (rc) return rc;
    rc = cb->on_checkpoint(cb->ctx, m->epoch, m->step, blob, len);
    free(blob);
    return rc;
}

/* A model whose first node reads token ids (an embedding): every id of a
 * batch must be an integer in [0, vocab), or the run stops naming it. */
static int check_ids(const struct run *r, const char *path, const float *x, int B, int64_t row0,
                     char *err, size_t errlen)
{
    const struct model *m = &r->model;
    if (m->net || !m->node[0].op.op->takes_ids) return 0;
    int V = m->node[0].op.a.vocab;
    size_t T = shape_size(&m->input);
    for (size_t i = 0; i < (size_t)B * T; i++) {
        float v = x[i];
        if (v >= 0.0f && v < (float)V && (float)(int)v == v) continue;
        return errmsg(err, errlen, -EINVAL,
                      "%s: token id %g in X (row %lld of the pass, step %zu) is outside the "
                      "embedding's vocabulary [0, %d)%s",
                      path, (double)v, (long long)(row0 + (int64_t)(i / T)), i % T, V,
                      v >= (float)V ? ": give layer 0 a larger vocab" : "");
    }
    return 0;
}

struct pass_totals {
    double loss_sum; /* sum over rows of the per-row mean loss */
    int64_t correct;
    int64_t rows;
};

/* Loss and accuracy over a whole dataset, in file order, without training. */
static int evaluate(struct run *r, struct dataset *ds, struct pass_totals *t, char *err,
                    size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    bool ce = s->loss == LOSS_CROSS_ENTROPY;
    int64_t n = dataset_get_info(ds)->n;
    memset(t, 0, sizeof *t);
    for (int64_t at = 0; at < n; at += r->rows) {
        int B = (int)(n - at < r->rows ? n - at : r->rows);
        int rc = dataset_read_rows(ds, at, B, r->x[0], ce ? r->yc[0] : NULL, ce ? NULL : r->y[0],
                                   err, errlen);
        if (rc < 0) return rc;
        const char *path = ds == r->val_file ? s->validation.path : s->dataset.path;
        if ((rc = check_ids(r, path, r->x[0], B, at, err, errlen))) return rc;
        model_forward(&r->model, r->x[0], B, false, NULL);
        t->loss_sum += model_loss(&r->model, ce ? r->yc[0] : NULL, ce ? NULL : r->y[0], B) * B;
        if (ce) t->correct += model_correct(&r->model, r->yc[0], B);
        t->rows += B;
    }
    return 0;
}

/* A batch being read: by the caller, or by a worker of the net's threads
 * while the caller trains on the previous one (the dataset is only ever
 * used by one thread at a time, in the same order either way). */
struct batch {
    struct dataset *ds;
    int B;
    float *x;    /* (B, D) */
    int32_t *yc; /* (B) or NULL */
    float *y;    /* (B, K) or NULL */
    int got;     /* rows read, or -errno */
    char err[512];
};

static void batch_read(void *p)
{
    struct batch *b = p;
    b->got = dataset_next_batch(b->ds, b->B, b->x, b->yc, b->y, b->err, sizeof b->err);
}

/* Forward, loss and one step (sgd family) or the gradient sum (gd) on the
 * batch cur, while next is read in the background. */
/* After each optimizer step: a per-step schedule moves on. */
static void stepped(struct run *r)
{
    const struct spec_schedule *sc = &r->spec->optimizer.schedule;
    r->epoch_lr = r->sched.lr;
    if (sc->per_step) schedule_step(&r->sched, sc, NAN);
}

static int train_batch(struct run *r, struct batch *cur, struct batch *next, int64_t epoch,
                       int64_t *step, struct pass_totals *t, char *err, size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    int got = cur->got;
    struct net *net = r->model.net; /* the dense fast paths, or NULL */
    int rc = check_ids(r, s->dataset.path, cur->x, got, t->rows, err, errlen);
    if (rc) return rc;
    model_forward(&r->model, cur->x, got, true, &r->rng);
    rc = model_task_start(&r->model, batch_read, next);
    if (rc) return errmsg(err, errlen, rc, "cannot read the next batch: %s", strerror(-rc));
    double loss = model_loss(&r->model, cur->yc, cur->y, got);
    if (!isfinite(loss))
        return errmsg(err, errlen, -ERANGE,
                      "loss became %s at epoch %lld, step %lld: lower the learning rate "
                      "(optimizer.lr = %g) or check the data",
                      isnan(loss) ? "NaN" : "infinite", (long long)epoch + 1, (long long)*step + 1,
                      r->sched.lr);
    t->loss_sum += loss * got;
    if (cur->yc) t->correct += model_correct(&r->model, cur->yc, got);
    t->rows += got;
    if (r->fused_sgd) {
        net_backward_sgd(net, cur->x, cur->yc, cur->y, got, (float)r->sched.lr);
        r->opt.step++;
        ++*step;
        stepped(r);
        return 0;
    }
    if (net) {
        net_backward_set(net, cur->x, cur->yc, cur->y, got);
    } else {
        model_zero_grad(&r->model);
        model_backward(&r->model, cur->x, cur->yc, cur->y, got);
    }
    if (s->optimizer.name == OPT_GD) {
        int64_t n = dataset_get_info(r->train)->n;
        cblas_saxpy((int)r->model.n_params, (float)got / (float)n, r->model.grads, 1, r->gacc, 1);
        return 0;
    }
    if (s->l1 > 0 || s->l2 > 0) model_penalty(&r->model, s->l1, s->l2);
    optim_step(&r->opt, r->model.params, r->model.grads, r->sched.lr);
    ++*step;
    stepped(r);
    return 0;
}

/* One optimizer step on one batch (sgd family), or on the whole dataset
 * (gd, which sums sub-batch gradients weighted by their share of rows). */
static int train_epoch(struct run *r, int64_t epoch, int64_t *step, struct pass_totals *t,
                       const struct train_callbacks *cb, bool *stopped, bool *timed_out, char *err,
                       size_t errlen)
{
    const struct mlq_spec *s = r->spec;
    bool ce = s->loss == LOSS_CROSS_ENTROPY;
    bool gd = s->optimizer.name == OPT_GD;
    int B = gd || s->batch_size > r->rows ? r->rows : s->batch_size;
    memset(t, 0, sizeof *t);

    int rc = dataset_epoch_begin(r->train, s->seed, epoch, s->shuffle && !gd, 0, err, errlen);
    if (rc) return rc;
    if (gd) memset(r->gacc, 0, sizeof(float) * r->model.n_params);
    struct batch buf[2];
    for (int i = 0; i < 2; i++)
        buf[i] = (struct batch){.ds = r->train,
                                .B = B,
                                .x = r->x[i],
                                .yc = ce ? r->yc[i] : NULL,
                                .y = ce ? NULL : r->y[i]};
    struct batch *cur = &buf[0], *next = &buf[1];
    batch_read(cur);
    int64_t row = 0; /* the batch's first row in the epoch's order */
    for (;;) {
        if (cb && cb->should_stop && cb->should_stop(cb->ctx)) {
            *stopped = true;
            return 0;
        }
        if (cur->got < 0) return errmsg(err, errlen, cur->got, "%s", cur->err);
        if (cur->got == 0) break;
        /* max_seconds ends the run after the step in progress; gd's one
         * step needs the whole pass. */
        if (!gd && t->rows > 0 && out_of_time(r)) {
            *timed_out = true;
            break;
        }
        if (r->augmenting) augment_batch(&r->aug, epoch, row, cur->x, cur->got, r->aug_scratch);
        row += cur->got;
        rc = train_batch(r, cur, next, epoch, step, t, err, errlen);
        model_task_wait(&r->model);
        if (rc) return rc;
        struct batch *tmp = cur;
        cur = next;
        next = tmp;
    }
    if (gd && t->rows > 0) {
        memcpy(r->model.grads, r->gacc, sizeof(float) * r->model.n_params);
        if (s->l1 > 0 || s->l2 > 0) model_penalty(&r->model, s->l1, s->l2);
        optim_step(&r->opt, r->model.params, r->model.grads, r->sched.lr);
        ++*step;
        stepped(r);
    }
    /* Catch a blow-up in the last step before it is checkpointed. */
    for (size_t i = 0; i < r->model.n_params; i++)
        if (!isfinite(r->model.params[i]))
            return errmsg(err, errlen, -ERANGE,
                          "weights became NaN or infinite at epoch %lld: lower the learning rate "
                          "(optimizer.lr = %g)",
                          (long long)epoch + 1, r->epoch_lr);
    return 0;
}

static double metric_value(const struct epoch_metrics *m, enum spec_metric which)
{
    switch (which) {
    case METRIC_VAL_LOSS:
        return m->has_validation ? m->val_loss : NAN;
    case METRIC_VAL_ACCURACY:
        return m->has_validation ? m->val_accuracy : NAN;
    case METRIC_TRAIN_LOSS:
        return m->train_loss;
    case METRIC_TRAIN_ACCURACY:
        return m->train_accuracy;
    }
    return NAN;
}

/* Early stopping after epoch m: true when the run should end here. An
 * improvement is by more than min_delta (as Keras and Lightning count it);
 * a NaN is none. */
static bool early_stop(struct run *r, const struct epoch_metrics *m)
{
    const struct spec_early_stopping *es = &r->spec->early_stopping;
    if (!es->on) return false;
    double v = metric_value(m, es->metric);
    bool better = es->mode_max ? v > r->es_best + es->min_delta : v < r->es_best - es->min_delta;
    if (better) {
        r->es_best = v;
        r->es_wait = 0;
        r->es_best_epoch = m->epoch;
        return false;
    }
    return ++r->es_wait >= es->patience;
}

int train_run(const struct mlq_spec *spec, const void *resume_blob, size_t resume_len,
              const struct train_callbacks *cb, struct train_result *res, char *err, size_t errlen)
{
    struct run r = {.spec = spec};
    memset(res, 0, sizeof *res);
    res->final_val_loss = res->final_val_accuracy = NAN;
    if (spec->kind != JOB_TRAIN) return errmsg(err, errlen, -EINVAL, "train_run: not a train job");

    int rc = plan_memory(&r, resume_blob ? resume_len : 0, err, errlen);
    res->memory_bytes = r.mem.total;
    if (!rc) rc = open_data(&r, err, errlen);
    if (!rc) rc = build_model(&r, err, errlen);
    if (!rc && (rc = spec_model_optim_create(&r.opt, &spec->optimizer, r.model.n_params)))
        errmsg(err, errlen, rc, "cannot allocate the optimizer: %s", strerror(-rc));
    if (!rc && (rc = alloc_buffers(&r)))
        errmsg(err, errlen, rc, "cannot allocate batch buffers: %s", strerror(-rc));
    if (!rc && (rc = set_threads(&r)))
        errmsg(err, errlen, rc, "cannot start the training threads: %s", strerror(-rc));
    const struct spec_optimizer *o = &spec->optimizer;
    r.fused_sgd = r.model.net && o->name == OPT_SGD && o->momentum == 0.0 &&
                  o->weight_decay == 0.0 && !(spec->l1 > 0) && !(spec->l2 > 0);
    if (rc) goto out;

    int64_t epoch = 0, step = 0;
    double best = INFINITY;
    const struct spec_schedule *sc = &spec->optimizer.schedule;
    const struct spec_early_stopping *es = &spec->early_stopping;
    schedule_init(&r.sched, sc, spec->optimizer.lr);
    r.es_best = es->mode_max ? -INFINITY : INFINITY;
    if (resume_blob) {
        if ((rc = restore(&r, resume_blob, resume_len, &epoch, &step, &best, res, err, errlen)))
            goto out;
        if (es->on && r.es_wait >= es->patience)
            log_warn("the checkpoint is at epoch %lld, where the run stopped early: nothing left "
                     "to train; reporting its metrics",
                     (long long)epoch);
        else if (spec->max_seconds > 0 && r.trained_before >= spec->max_seconds)
            log_warn("the checkpoint is at epoch %lld, where the run reached its max_seconds "
                     "(%g s): nothing left to train; reporting its metrics",
                     (long long)epoch, spec->max_seconds);
        else if (epoch >= spec->epochs)
            log_warn("the checkpoint is at epoch %lld of %lld: nothing left to train; reporting "
                     "its metrics",
                     (long long)epoch, (long long)spec->epochs);
        else
            log_info("resuming at epoch %lld, step %lld", (long long)epoch, (long long)step);
    } else {
        rng_seed(&r.rng, spec->seed);
        model_init(&r.model, &r.rng);
    }

    bool ce = spec->loss == LOSS_CROSS_ENTROPY;
    bool stopped_early = es->on && r.es_wait >= es->patience; /* a resume of a stopped run */
    bool timed_out =
        spec->max_seconds > 0 && r.trained_before >= spec->max_seconds && epoch < spec->epochs;
    res->timed_out = timed_out;
    r.started = now_seconds();
    if (spec->max_seconds > 0) r.deadline = r.started + spec->max_seconds - r.trained_before;
    for (; epoch < spec->epochs && !stopped_early && !timed_out; epoch++) {
        r.epoch_lr = r.sched.lr;
        struct pass_totals t;
        bool stopped = false, partial = false;
        double t0 = now_seconds();
        if ((rc = train_epoch(&r, epoch, &step, &t, cb, &stopped, &partial, err, errlen))) goto out;
        struct epoch_metrics m = {.epoch = epoch + 1, .lr = r.epoch_lr};
        if (stopped) {
            res->cancelled = true;
            goto out;
        }
        m.seconds = now_seconds() - t0;
        m.step = step;
        m.train_loss = t.rows ? t.loss_sum / (double)t.rows : NAN;
        /* Per-step models count positions: T per row. */
        double positions = (double)t.rows * (double)r.model.steps;
        m.language_model = ce && r.model.steps > 1;
        m.train_accuracy = ce && t.rows ? (double)t.correct / positions : NAN;
        m.samples_per_s = m.seconds > 0 ? (double)t.rows / m.seconds : 0;
        double metric = m.train_loss;
        if (r.val) {
            if ((rc = evaluate(&r, r.val, &t, err, errlen))) goto out;
            m.has_validation = true;
            m.val_loss = t.loss_sum / (double)t.rows;
            m.val_accuracy = ce ? (double)t.correct / ((double)t.rows * r.model.steps) : NAN;
            metric = m.val_loss;
        }
        m.ckpt_metric = metric;
        if (es->on) {
            double v = metric_value(&m, es->metric);
            m.ckpt_metric = es->mode_max ? -v : v;
        }
        if (m.ckpt_metric < best) best = m.ckpt_metric;
        /* scheduler.step(), after the epoch's validation as in a PyTorch loop */
        if (sc->n_phases && !sc->per_step)
            schedule_step(&r.sched, sc,
                          sc->phase[0].kind == SCHED_PLATEAU ? metric_value(&m, sc->phase[0].metric)
                                                             : NAN);
        int64_t es_best_epoch = r.es_best_epoch;
        stopped_early = early_stop(&r, &m);
        bool improved = r.es_best_epoch != es_best_epoch;
        res->epochs_done = epoch + 1;
        res->final_train_loss = m.train_loss;
        res->final_val_loss = m.has_validation ? m.val_loss : NAN;
        res->final_val_accuracy = m.has_validation ? m.val_accuracy : NAN;
        if (cb && cb->on_epoch && cb->on_epoch(cb->ctx, &m)) {
            res->cancelled = true;
            goto out;
        }
        /* Out of time within the epoch, or by its end with epochs to go:
         * this epoch is the last. */
        timed_out = partial || (epoch + 1 < spec->epochs && out_of_time(&r));
        res->timed_out = timed_out;
        bool last = epoch + 1 == spec->epochs || stopped_early || timed_out;
        /* With early stopping, every improvement is checkpointed: the best is kept. */
        bool due =
            (spec->checkpoint_every > 0 && (epoch + 1) % spec->checkpoint_every == 0) || improved;
        if ((due || last) && (rc = save(&r, &m, best, cb))) {
            errmsg(err, errlen, rc, "cannot save the checkpoint of epoch %lld: %s",
                   (long long)epoch + 1, strerror(-rc));
            goto out;
        }
    }
    if (stopped_early) {
        res->stopped_early = true;
        res->best_epoch = r.es_best_epoch;
        res->best_value = r.es_best;
        log_info("stopped early after epoch %lld: %s did not improve for %d epochs (best %g at "
                 "epoch %lld)",
                 (long long)res->epochs_done, spec_metric_name(es->metric), es->patience, r.es_best,
                 (long long)r.es_best_epoch);
    }
    if (timed_out)
        log_info("reached max_seconds (%g s) in epoch %lld: the run ends there", spec->max_seconds,
                 (long long)res->epochs_done);
out:
    run_free(&r);
    return rc;
}

void train_result_stop_json(const struct mlq_spec *spec, const struct train_result *res,
                            json_t *result)
{
    if (res->timed_out) {
        char note[160];
        snprintf(note, sizeof note, "reached max_seconds (%g s) in epoch %lld of %d",
                 spec->max_seconds, (long long)res->epochs_done, spec->epochs);
        json_object_set_new(result, "timed_out", json_true());
        json_object_set_new(result, "note", json_string(note));
    }
    if (!res->stopped_early) return;
    const struct spec_early_stopping *es = &spec->early_stopping;
    const char *name = spec_metric_name(es->metric);
    char key[64], note[320], by[64] = "";
    snprintf(key, sizeof key, "best_%s", name);
    if (es->min_delta > 0) snprintf(by, sizeof by, " by more than %g", es->min_delta);
    snprintf(note, sizeof note,
             "stopped early after epoch %lld of %d: %s did not improve on %.6g (epoch %lld)%s "
             "for %d epochs",
             (long long)res->epochs_done, spec->epochs, name, res->best_value,
             (long long)res->best_epoch, by, es->patience);
    json_object_set_new(result, "stopped_early", json_true());
    json_object_set_new(result, "best_epoch", json_integer(res->best_epoch));
    if (isfinite(res->best_value)) json_object_set_new(result, key, json_real(res->best_value));
    json_object_set_new(result, "note", json_string(note));
}
