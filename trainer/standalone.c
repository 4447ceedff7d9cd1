#include "standalone.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "blas.h"
#include "checkpoint.h"
#include "log.h"
#include "spec.h"
#include "train.h"

struct standalone {
    const struct standalone_opts *opts;
};

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
    (void)ctx;
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
    (void)step;
    const char *dir = s->opts->checkpoint_dir;
    if (!dir)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/epoch-%04lld.ckpt", dir, (long long)epoch);
    int rc = checkpoint_write_file(path, blob, len);
    if (!rc) {
        snprintf(path, sizeof path, "%s/last.ckpt", dir);
        rc = checkpoint_write_file(path, blob, len);
    }
    if (rc)
        log_errno(-rc, "cannot write checkpoint %s", path);
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
    if (opts->threads > 0)
        spec.threads = opts->threads;
    int threads = blas_set_threads(spec.threads > 0 ? spec.threads : 1);
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
    json_object_set_new(sum, "seconds", json_real(now_seconds() - t0));
    json_object_set_new(sum, "kernel", json_string(blas_kernel()));
    json_object_set_new(sum, "threads", json_integer(threads));
    if (rc)
        json_object_set_new(sum, "error", json_string(err));
    print_line(sum);
    if (rc) {
        log_error("%s", err);
        return 1;
    }
    return 0;
}
