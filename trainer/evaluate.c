#include "evaluate.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "atomic_file.h"
#include "checkpoint.h"
#include "dataset.h"
#include "errmsg.h"
#include "job_memory.h"
#include "model.h"
#include "spec_model.h"

/* The train run's network, rebuilt from its checkpoint, and the buffers of
 * one chunk of rows. Released by job_free in reverse order. */
struct job {
    const struct mlq_spec *spec; /* the eval or predict job */
    struct mlq_spec train;       /* the run's spec, from the checkpoint */
    char *train_json;
    int64_t epoch; /* epochs completed at the checkpoint */
    struct job_memory mem;
    struct model model;
    struct dataset *ds;
    float *x;    /* (R, D) */
    int32_t *yc; /* (R) class ids */
    float *y;    /* (R, K) targets */
    int D, K;
    int rows; /* per forward pass: job_memory_eval_rows */
};

static void job_free(struct job *j)
{
    free(j->y);
    free(j->yc);
    free(j->x);
    dataset_close(&j->ds);
    model_destroy(&j->model);
    free(j->train_json);
}

/* The job's memory from the input's shape and the checkpoint's model,
 * before the network or the data is allocated. */
static int plan_memory(struct job *j, size_t blob_len, char *err, size_t errlen)
{
    struct job_memory_job mj = {.spec = j->spec, .model = &j->train, .checkpoint_bytes = blob_len};
    struct dataset_info info;
    int rc = dataset_probe(&j->spec->dataset, j->spec->kind == JOB_EVAL, &info, &mj.data.row_bytes,
                           err, errlen);
    mj.data.rows = info.n;
    mj.data.x_rank = info.x_rank;
    memcpy(mj.data.x_dims, info.x_dims, sizeof mj.data.x_dims);
    if (!rc) rc = job_memory_plan(&mj, &j->mem, err, errlen);
    return rc;
}

/* Decodes the checkpoint and rebuilds the run's network with its weights. */
static int load_model(struct job *j, const void *blob, size_t len, char *err, size_t errlen)
{
    struct checkpoint c;
    char why[512];
    int rc = checkpoint_decode(blob, len, &c, why, sizeof why);
    if (rc)
        return errmsg(err, errlen, rc, "run %lld: corrupt checkpoint: %s", (long long)j->spec->run,
                      why);
    if ((rc = spec_parse(c.spec_json, &j->train, why, sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: the checkpoint's spec is invalid: %s",
               (long long)j->spec->run, why);
        goto out;
    }
    if (j->train.kind != JOB_TRAIN) {
        rc = errmsg(err, errlen, -EINVAL, "run %lld: the checkpoint's spec is a %s job, not train",
                    (long long)j->spec->run, spec_kind_name(j->train.kind));
        goto out;
    }
    if ((rc = plan_memory(j, len, err, errlen))) goto out;
    /* The trainer stores the input shape it resolved in the checkpoint's
     * spec (model.input), so no dataset is needed to rebuild the model. */
    if ((rc = spec_model_create(&j->model, &j->train, NULL, why, sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: cannot rebuild the model: %s", (long long)j->spec->run,
               why);
        goto out;
    }
    if ((rc = checkpoint_load_tensors(&c, &j->model.tensors, j->model.params, NULL, 0,
                                      j->model.state, why, sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: corrupt checkpoint: %s", (long long)j->spec->run, why);
        goto out;
    }
    /* A checkpoint is checked before it is stored, but a NaN is a valid
     * float: say so here rather than produce NaN metrics. */
    size_t bad = 0, first_bad = 0;
    for (size_t i = c.n_params; i-- > 0;)
        if (!isfinite(c.params[i])) {
            bad++;
            first_bad = i;
        }
    if (bad) {
        rc = errmsg(err, errlen, -EINVAL,
                    "run %lld: the checkpoint of epoch %lld holds non-finite weights (%zu of %zu "
                    "parameters are NaN or infinite, the first at index %zu): the run diverged "
                    "before this checkpoint; use an earlier one (--checkpoint EPOCH)",
                    (long long)j->spec->run, (long long)c.epoch, bad, c.n_params, first_bad);
        goto out;
    }
    j->rows = job_memory_eval_rows(&j->train);
    if ((rc = model_reserve(&j->model, j->rows))) {
        errmsg(err, errlen, rc, "cannot allocate the network: %s", strerror(-rc));
        goto out;
    }
    if (!(j->train_json = strdup(c.spec_json))) {
        rc = errmsg(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    j->epoch = c.epoch;
    j->D = (int)shape_size(&j->model.input);
    j->K = j->model.K;
out:
    checkpoint_free(&c);
    return rc;
}

/* Opens the job's data. uint8 inputs are scaled as they were in training,
 * whatever the job's spec says: the weights expect that preprocessing. */
static int open_data(struct job *j, bool need_y, char *err, size_t errlen)
{
    struct spec_dataset src = j->spec->dataset;
    src.scale = j->train.dataset.scale;
    int rc = dataset_open(&j->ds, &src, need_y, j->mem.data_budget, err, errlen);
    if (rc) return rc;
    const struct dataset_info *info = dataset_get_info(j->ds);
    if (need_y && !j->train.typed) {
        if ((rc = dataset_check_model(j->ds, &j->train, err, errlen))) return rc;
    } else if (need_y) {
        char what[64];
        snprintf(what, sizeof what, "the model of run %lld takes %d", (long long)j->spec->run,
                 j->D);
        if ((rc = dataset_check_io_steps(j->ds, JOB_EVAL, j->train.loss, j->D, what, j->K,
                                         j->model.steps, err, errlen)))
            return rc;
    } else if (info->d != j->D) {
        return errmsg(err, errlen, -EINVAL,
                      "%s: %s has %lld inputs per row, the model of run %lld takes %d", src.path,
                      src.x, (long long)info->d, (long long)j->spec->run, j->D);
    }
    j->x = malloc(sizeof(float) * (size_t)j->rows * (size_t)j->D);
    size_t T = (size_t)j->model.steps;
    bool ce = j->train.loss == LOSS_CROSS_ENTROPY; /* class ids, or mse's targets */
    if (ce)
        j->yc = malloc(sizeof(int32_t) * (size_t)j->rows * T);
    else
        j->y = malloc(sizeof(float) * (size_t)j->rows * T * (size_t)j->K);
    if (!j->x || !(ce ? (void *)j->yc : (void *)j->y))
        return errmsg(err, errlen, -ENOMEM, "cannot allocate batch buffers");
    return 0;
}

/* Reads the chunk of rows [at, at + B) and runs the network on it. */
static int forward_rows(struct job *j, int64_t at, int B, bool with_y, char *err, size_t errlen)
{
    bool ce = j->train.loss == LOSS_CROSS_ENTROPY;
    int32_t *yc = with_y && ce ? j->yc : NULL;
    float *y = with_y && !ce ? j->y : NULL;
    int rc = dataset_read_rows(j->ds, at, B, j->x, yc, y, err, errlen);
    if (rc < 0) return rc;
    model_forward(&j->model, j->x, B, false, NULL);
    return 0;
}

static int argmax(const float *p, int K)
{
    int best = 0;
    for (int k = 1; k < K; k++)
        if (p[k] > p[best]) best = k;
    return best;
}

static json_t *eval_classes(struct job *j, const int64_t *confusion, double loss_sum, int64_t n)
{
    int K = j->K;
    int64_t correct = 0;
    json_t *per_class = json_array(), *matrix = json_array();
    for (int t = 0; t < K; t++) {
        const int64_t *row = confusion + (size_t)t * K;
        int64_t total = 0;
        json_t *jrow = json_array();
        for (int p = 0; p < K; p++) {
            total += row[p];
            json_array_append_new(jrow, json_integer(row[p]));
        }
        correct += row[t];
        json_array_append_new(matrix, jrow);
        json_array_append_new(per_class,
                              total ? json_real((double)row[t] / (double)total) : json_null());
    }
    return json_pack("{sf sf sI sI si so so}", "loss", loss_sum / (double)n, "accuracy",
                     (double)correct / (double)n, "n", (json_int_t)n, "epoch", (json_int_t)j->epoch,
                     "classes", K, "per_class_accuracy", per_class, "confusion_matrix", matrix);
}

int eval_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **result,
             char *err, size_t errlen)
{
    struct job j = {.spec = spec};
    int64_t *confusion = NULL;
    *result = NULL;
    if (spec->kind != JOB_EVAL)
        return errmsg(err, errlen, -EINVAL, "eval_run: not an eval job (kind %s)",
                      spec_kind_name(spec->kind));
    int rc = load_model(&j, ckpt_blob, len, err, errlen);
    if (!rc) rc = open_data(&j, true, err, errlen);
    if (rc) goto out;

    bool ce = j.train.loss == LOSS_CROSS_ENTROPY;
    int K = j.K;
    int64_t n = dataset_get_info(j.ds)->n;
    if (ce && !(confusion = calloc((size_t)K * K, sizeof *confusion))) {
        rc = errmsg(err, errlen, -ENOMEM, "cannot allocate the confusion matrix");
        goto out;
    }
    double loss_sum = 0, abs_sum = 0; /* ce: per-row losses; mse: per-value errors */
    for (int64_t at = 0; at < n; at += j.rows) {
        int B = (int)(n - at < j.rows ? n - at : j.rows);
        if ((rc = forward_rows(&j, at, B, true, err, errlen))) goto out;
        if (!ce) {
            size_t m = (size_t)B * (size_t)K;
            loss_sum += model_loss(&j.model, NULL, j.y, B) * (double)m;
            for (size_t i = 0; i < m; i++)
                abs_sum += fabs((double)j.model.probs[i] - (double)j.y[i]);
            continue;
        }
        int steps = j.model.steps; /* per-step models: a label per position */
        for (int r = 0; r < B * steps; r++) {
            int32_t t = j.yc[r];
            if (t < 0 || t >= K) {
                rc = errmsg(err, errlen, -EINVAL,
                            "%s: label %d of row %lld is out of range: the model of run %lld has "
                            "%d classes",
                            spec->dataset.path, (int)t, (long long)(at + r / steps),
                            (long long)spec->run, K);
                goto out;
            }
            confusion[(size_t)t * K + argmax(j.model.probs + (size_t)r * K, K)]++;
        }
        loss_sum += model_loss(&j.model, j.yc, NULL, B) * B;
    }
    if (!isfinite(loss_sum) || !isfinite(abs_sum)) {
        /* Finite weights whose outputs overflow on this data. */
        rc = errmsg(err, errlen, -ERANGE,
                    "run %lld: the network's outputs on %s are not finite (the loss is %s): the "
                    "weights of epoch %lld overflow on this data",
                    (long long)spec->run, spec->dataset.path, isnan(loss_sum) ? "NaN" : "infinite",
                    (long long)j.epoch);
        goto out;
    }
    if (ce && j.model.steps > 1) {
        /* A language model: per-token loss, accuracy over positions. */
        int64_t correct = 0;
        for (int k = 0; k < K; k++)
            correct += confusion[(size_t)k * K + k];
        double loss = loss_sum / (double)n;
        *result = json_pack("{sf sf sf sf sI sI sI}", "loss", loss, "accuracy",
                            (double)correct / ((double)n * j.model.steps), "perplexity", exp(loss),
                            "bits_per_byte", loss / M_LN2, "n", (json_int_t)n, "steps",
                            (json_int_t)j.model.steps, "epoch", (json_int_t)j.epoch);
    } else if (ce) {
        *result = eval_classes(&j, confusion, loss_sum, n);
    } else {
        double values = (double)n * K;
        *result = json_pack("{sf sI sI sf}", "loss", loss_sum / values, "n", (json_int_t)n, "epoch",
                            (json_int_t)j.epoch, "mae", abs_sum / values);
    }
    if (!*result) rc = errmsg(err, errlen, -ENOMEM, "cannot build the eval result");
out:
    free(confusion);
    job_free(&j);
    return rc;
}

/* ---- predict: the HDF5 output ---- */

struct out_file {
    hid_t file;
    hid_t data[2]; /* ce: predictions, probabilities; mse: outputs */
    struct atomic_file af;
};

static hid_t out_dataset(hid_t file, const char *name, hid_t type, int rank, int64_t n, int K)
{
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)K};
    hid_t space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return -1;
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    return d;
}

/* Writes rows [at, at + B) of a (n) or (n, K) dataset. */
static int out_write(hid_t d, hid_t mem_type, int rank, int64_t at, int B, int K, const void *buf)
{
    hsize_t start[2] = {(hsize_t)at, 0}, count[2] = {(hsize_t)B, (hsize_t)K};
    hid_t fspace = H5Dget_space(d);
    hid_t mspace = H5Screate_simple(rank, count, NULL);
    herr_t st = fspace < 0 || mspace < 0 ? -1 : 0;
    if (!st) st = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    if (st >= 0) st = H5Dwrite(d, mem_type, mspace, fspace, H5P_DEFAULT, buf);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return st < 0 ? -EIO : 0;
}

static int attr_int(hid_t obj, const char *name, int64_t v)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st < 0 ? -EIO : 0;
}

static int attr_string(hid_t obj, const char *name, const char *s)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(s) + 1);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a < 0 ? -1 : H5Awrite(a, type, s);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return st < 0 ? -EIO : 0;
}

static int out_open(struct out_file *o, const struct job *j, int64_t n, char *err, size_t errlen)
{
    const char *path = j->spec->output_path;
    bool ce = j->train.loss == LOSS_CROSS_ENTROPY;
    int rc = atomic_file_begin(&o->af, path, 0666, err, errlen);
    if (rc) return rc;
    o->af.noreplace = j->spec->output_new_only;
    o->file = H5Fcreate(o->af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (o->file < 0) return errmsg(err, errlen, -EIO, "%s: cannot create HDF5 file", o->af.tmp);
    if (ce) {
        o->data[0] = out_dataset(o->file, "predictions", H5T_STD_I32LE, 1, n, 1);
        o->data[1] = out_dataset(o->file, "probabilities", H5T_IEEE_F32LE, 2, n, j->K);
    } else {
        o->data[0] = out_dataset(o->file, "outputs", H5T_IEEE_F32LE, 2, n, j->K);
    }
    rc = o->data[0] < 0 || (ce && o->data[1] < 0) ? -EIO : 0;
    if (!rc) rc = attr_int(o->file, "run", j->spec->run);
    if (!rc) rc = attr_int(o->file, "checkpoint_epoch", j->epoch);
    if (!rc) rc = attr_string(o->file, "loss", spec_loss_name(j->train.loss));
    if (!rc) rc = attr_string(o->file, "train_spec", j->train_json);
    if (rc) return errmsg(err, errlen, rc, "%s: cannot create datasets and attributes", o->af.tmp);
    return 0;
}

static int out_close_file(struct out_file *o)
{
    herr_t st = 0;
    for (int i = 0; i < 2; i++)
        if (o->data[i] >= 0 && H5Dclose(o->data[i]) < 0) st = -1;
    o->data[0] = o->data[1] = -1;
    if (o->file >= 0 && H5Fclose(o->file) < 0) st = -1;
    o->file = -1;
    return st < 0 ? -EIO : 0;
}

/* Closes the file, makes it durable and moves it into place. */
static int out_commit(struct out_file *o, char *err, size_t errlen)
{
    if (out_close_file(o))
        return errmsg(err, errlen, -EIO, "%s: cannot write HDF5 file", o->af.tmp);
    return atomic_file_commit(&o->af, err, errlen);
}

static void out_abort(struct out_file *o)
{
    out_close_file(o);
    atomic_file_abort(&o->af);
}

int predict_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **summary,
                char *err, size_t errlen)
{
    struct job j = {.spec = spec};
    struct out_file o = {.file = -1, .data = {-1, -1}, .af = {.fd = -1}};
    int32_t *pred = NULL;
    int64_t *counts = NULL;
    *summary = NULL;
    if (spec->kind != JOB_PREDICT)
        return errmsg(err, errlen, -EINVAL, "predict_run: not a predict job (kind %s)",
                      spec_kind_name(spec->kind));
    /* HDF5 would print its error stack on stderr; our messages say it. */
    H5E_auto2_t old_func;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    int rc = load_model(&j, ckpt_blob, len, err, errlen);
    if (!rc && j.model.steps > 1)
        rc = errmsg(err, errlen, -EINVAL,
                    "run %lld predicts every step (a language model): predict writes one row of "
                    "outputs per sample; use mlq generate %lld, or eval",
                    (long long)spec->run, (long long)spec->run);
    if (!rc) rc = open_data(&j, false, err, errlen);
    if (rc) goto out;
    bool ce = j.train.loss == LOSS_CROSS_ENTROPY;
    int K = j.K;
    int64_t n = dataset_get_info(j.ds)->n;
    if (ce && (!(pred = malloc(sizeof *pred * (size_t)j.rows)) ||
               !(counts = calloc((size_t)K, sizeof *counts)))) {
        rc = errmsg(err, errlen, -ENOMEM, "cannot allocate prediction buffers");
        goto out;
    }
    if ((rc = out_open(&o, &j, n, err, errlen))) goto out;
    for (int64_t at = 0; at < n; at += j.rows) {
        int B = (int)(n - at < j.rows ? n - at : j.rows);
        if ((rc = forward_rows(&j, at, B, false, err, errlen))) goto out;
        if (ce) {
            for (int r = 0; r < B; r++) {
                pred[r] = argmax(j.model.probs + (size_t)r * K, K);
                counts[pred[r]]++;
            }
            rc = out_write(o.data[0], H5T_NATIVE_INT32, 1, at, B, 1, pred);
            if (!rc) rc = out_write(o.data[1], H5T_NATIVE_FLOAT, 2, at, B, K, j.model.probs);
        } else {
            rc = out_write(o.data[0], H5T_NATIVE_FLOAT, 2, at, B, K, j.model.probs);
        }
        if (rc) {
            errmsg(err, errlen, rc, "%s: cannot write rows %lld to %lld", o.af.tmp, (long long)at,
                   (long long)(at + B));
            goto out;
        }
    }
    if ((rc = out_commit(&o, err, errlen))) goto out;

    *summary = json_pack("{sI ss sI}", "n", (json_int_t)n, "output", spec->output_path, "epoch",
                         (json_int_t)j.epoch);
    if (*summary && ce) {
        json_t *jc = json_array();
        for (int k = 0; k < K; k++)
            json_array_append_new(jc, json_integer(counts[k]));
        json_object_set_new(*summary, "class_counts", jc);
    }
    if (!*summary) rc = errmsg(err, errlen, -ENOMEM, "cannot build the predict summary");
out:
    out_abort(&o);
    free(counts);
    free(pred);
    job_free(&j);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return rc;
}
