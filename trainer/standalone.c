#include "standalone.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "atomic_file.h"
#include "blas.h"
#include "checkpoint.h"
#include "job_memory.h"
#include "log.h"
#include "spec.h"
#include "store.h"
#include "train.h"

struct standalone {
    const struct standalone_opts *opts;
    struct store *db; /* with --db, else NULL */
    int64_t run;
    double last_metric; /* the epoch's validation loss, else training loss: for "best" */
};

/* Records an epoch's metrics under the run, keyed by optimizer step so that
 * a metric written twice is stored once. */
static int record_epoch(struct standalone *s, const struct epoch_metrics *m)
{
    struct store_metric rows[12];
    size_t n = 0;
#define ROW(k, v)                                                                                  \
    do {                                                                                           \
        if (isfinite(v))                                                                           \
            rows[n++] = (struct store_metric){                                                     \
                .key = (k), .step = m->step, .epoch = m->epoch, .value = (v)};                     \
    } while (0)
    ROW("train_loss", m->train_loss);
    ROW("train_accuracy", m->train_accuracy);
    if (m->has_validation) {
        ROW("val_loss", m->val_loss);
        ROW("val_accuracy", m->val_accuracy);
    }
    if (m->language_model) {
        ROW("train_perplexity", exp(m->train_loss));
        ROW("train_bits_per_byte", m->train_loss / M_LN2);
        if (m->has_validation) {
            ROW("val_perplexity", exp(m->val_loss));
            ROW("val_bits_per_byte", m->val_loss / M_LN2);
        }
    }
    ROW("lr", m->lr);
    ROW("samples_per_s", m->samples_per_s);
    ROW("epoch_seconds", m->seconds);
#undef ROW
    int rc = store_metrics_put(s->db, s->run, rows, n);
    if (rc) log_error("%s: cannot record metrics: %s", s->opts->db_path, store_errmsg(s->db));
    return rc;
}

/* JSON has no NaN: absent values are written as null. */
static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void print_line(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (text) {
        puts(text);
        fflush(stdout);
        free(text);
    }
    json_decref(obj);
}

static int on_epoch(void *ctx, const struct epoch_metrics *m)
{
    struct standalone *s = ctx;
    s->last_metric = m->ckpt_metric;
    if (s->db && record_epoch(s, m)) return -EIO;
    json_t *o = json_object();
    json_object_set_new(o, "epoch", json_integer(m->epoch));
    json_object_set_new(o, "step", json_integer(m->step));
    json_object_set_new(o, "train_loss", number_or_null(m->train_loss));
    json_object_set_new(o, "train_accuracy", number_or_null(m->train_accuracy));
    if (m->has_validation) {
        json_object_set_new(o, "val_loss", number_or_null(m->val_loss));
        json_object_set_new(o, "val_accuracy", number_or_null(m->val_accuracy));
    }
    json_object_set_new(o, "lr", json_real(m->lr));
    json_object_set_new(o, "samples_per_s", json_real(round(m->samples_per_s)));
    json_object_set_new(o, "seconds", json_real(m->seconds));
    print_line(o);
    return 0;
}

static int on_checkpoint(void *ctx, int64_t epoch, int64_t step, const void *blob, size_t len)
{
    struct standalone *s = ctx;
    if (s->db &&
        store_checkpoint_put(s->db, s->run, epoch, step, blob, len, s->last_metric, NULL)) {
        log_error("%s: cannot record checkpoint: %s", s->opts->db_path, store_errmsg(s->db));
        return -EIO;
    }
    const char *dir = s->opts->checkpoint_dir;
    if (!dir) return 0;
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/epoch-%04lld.ckpt", dir, (long long)epoch);
    int rc = atomic_file_write_all(path, blob, len, 0644, err, sizeof err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/last.ckpt", dir);
        rc = atomic_file_write_all(path, blob, len, 0644, err, sizeof err);
    }
    if (rc) log_error("cannot write the checkpoint: %s", err);
    return rc;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int standalone_main(const struct standalone_opts *opts)
{
    struct mlq_spec spec;
    char err[1024];
    if (spec_load(opts->spec_path, &spec, err, sizeof err) != 0) {
        log_error("%s", err);
        return 2;
    }
    if (spec.kind != JOB_TRAIN) {
        log_error("%s: --standalone runs train jobs; submit %s jobs to a broker", opts->spec_path,
                  spec_kind_name(spec.kind));
        return 2;
    }
    if (spec_dataset_pushed(&spec.dataset) ||
        (spec.has_validation && spec_dataset_pushed(&spec.validation))) {
        /* Only a broker has pushed datasets (mlq dataset get fetches one). */
        log_error("%s: --standalone reads files: give the dataset's path, not a pushed dataset's "
                  "name or sha256 (mlq dataset get NAME --output FILE fetches one)",
                  opts->spec_path);
        return 2;
    }
    if (opts->threads > 0) spec.threads = opts->threads;
    /* The thread budget: the spec's, or every core (0). train_run splits
     * the layers over it, or runs small batches on one thread. */
    int threads = blas_set_threads(spec.threads);
    log_info("OpenBLAS kernel %s, %d thread%s", blas_kernel(), threads, threads == 1 ? "" : "s");
    if (opts->checkpoint_dir && mkdir(opts->checkpoint_dir, 0755) != 0 && errno != EEXIST) {
        log_errno(errno, "cannot create checkpoint directory %s", opts->checkpoint_dir);
        return 1;
    }

    void *resume = NULL;
    size_t resume_len = 0;
    if (opts->resume_path &&
        checkpoint_read_file(opts->resume_path, &resume, &resume_len, err, sizeof err) != 0) {
        log_error("cannot resume: %s", err);
        return 1;
    }

    struct standalone s = {.opts = opts};
    if (opts->db_path) {
        char host[64] = "localhost", name[128];
        gethostname(host, sizeof host - 1);
        snprintf(name, sizeof name, "standalone@%s", host);
        if (store_open(&s.db, opts->db_path, STORE_CREATE, err, sizeof err) != 0 ||
            store_job_submit_spec(s.db, &spec, NULL, &s.run, NULL) != 0 ||
            store_job_set_running(s.db, s.run, name) != 0) {
            log_error("%s", s.db ? store_errmsg(s.db) : err);
            store_close(&s.db);
            free(resume);
            return 1;
        }
        log_info("recording run %lld in %s", (long long)s.run, opts->db_path);
    }
    job_memory_set_limit(opts->memory_budget_mb);
    struct train_callbacks cb = {.ctx = &s, .on_epoch = on_epoch, .on_checkpoint = on_checkpoint};
    struct train_result res;
    double t0 = now_seconds();
    int rc = train_run(&spec, resume, resume_len, &cb, &res, err, sizeof err);
    free(resume);

    json_t *sum = json_object();
    json_object_set_new(sum, "summary", json_true());
    json_object_set_new(sum, "state", json_string(rc ? "failed" : "succeeded"));
    json_object_set_new(sum, "epochs", json_integer(res.epochs_done));
    json_object_set_new(sum, "train_loss", number_or_null(res.final_train_loss));
    json_object_set_new(sum, "val_loss", number_or_null(res.final_val_loss));
    json_object_set_new(sum, "val_accuracy", number_or_null(res.final_val_accuracy));
    if (!rc) train_result_stop_json(&spec, &res, sum);
    json_object_set_new(sum, "seconds", json_real(now_seconds() - t0));
    if (res.memory_bytes > 0)
        json_object_set_new(sum, "memory_estimate", json_integer(res.memory_bytes));
    json_object_set_new(sum, "kernel", json_string(blas_kernel()));
    json_object_set_new(sum, "threads", json_integer(threads));
    if (rc) json_object_set_new(sum, "error", json_string(err));
    if (s.db) {
        json_object_set_new(sum, "run", json_integer(s.run));
        if (!rc && res.stopped_early) {
            json_t *result = json_object();
            train_result_stop_json(&spec, &res, result);
            char *text = json_dumps(result, JSON_COMPACT);
            if (!text || store_job_set_result(s.db, s.run, text))
                log_error("%s: cannot record the result of run %lld", opts->db_path,
                          (long long)s.run);
            free(text);
            json_decref(result);
        }
        int db_rc =
            rc ? store_job_set_failed(s.db, s.run, err) : store_job_set_succeeded(s.db, s.run);
        if (db_rc)
            log_error("%s: cannot record the end of run %lld: %s", opts->db_path, (long long)s.run,
                      store_errmsg(s.db));
        store_close(&s.db);
    }
    print_line(sum);
    if (rc) {
        log_error("%s", err);
        return 1;
    }
    return 0;
}
