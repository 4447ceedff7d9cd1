/* Eval and predict jobs (trainer/evaluate.h): a small network is trained on
 * separable toy data with train_run, its last checkpoint is captured through
 * on_checkpoint, and eval_run / predict_run are checked against what the
 * data must give: high accuracy, a confusion matrix that adds up to the label
 * counts, an HDF5 output whose predictions are the arg max of its
 * probabilities, and clear errors for bad input. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "evaluate.h"
#include "spec.h"
#include "train.h"

#define D 4 /* inputs */
#define K 3 /* classes, or regression targets (2) */
#define N_TRAIN 600
#define N_EVAL 2500 /* more than two chunks of EVALUATE_ROWS */

/* cmocka 1.1 has no assert_double_equal. */
#define assert_near(a, b, tol) check_near((a), (b), (tol), #a, __LINE__)
static void check_near(double a, double b, double tol, const char *what, int line)
{
    if (!(fabs(a - b) <= tol))
        fail_msg("line %d: %s = %.12g, expected %.12g within %g", line, what, a, b, tol);
}

struct fixture {
    char dir[64];
    char train[128], eval[128], out[160];
    void *blob; /* the last checkpoint of the trained run */
    size_t len;
};

/* ---- toy data ---- */

static uint64_t lcg_state;
static double uniform(void)
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg_state >> 11) / 9007199254740992.0;
}

/* Class k sits at 3 on axis k; every axis gets noise in [-0.5, 0.5). */
static void make_blobs(float *x, int32_t *y, int n, uint64_t seed)
{
    lcg_state = seed;
    for (int i = 0; i < n; i++) {
        y[i] = i % K;
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(uniform() - 0.5) + (j == y[i] ? 3.0f : 0.0f);
    }
}

static void write_h5(const char *path, const float *x, int n, int d, const int32_t *yc,
                     const float *yf, int k)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)d};
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(f, "X", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(ds);
    H5Sclose(s);
    if (yc || yf) {
        dims[1] = (hsize_t)k;
        s = H5Screate_simple(yc ? 1 : 2, dims, NULL);
        ds = H5Dcreate2(f, "y", yc ? H5T_STD_I32LE : H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT,
                        H5P_DEFAULT);
        assert_true(H5Dwrite(ds, yc ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                             H5P_DEFAULT, yc ? (const void *)yc : (const void *)yf) >= 0);
        H5Dclose(ds);
        H5Sclose(s);
    }
    H5Fclose(f);
}

static void write_blobs(const char *path, int n, uint64_t seed)
{
    float *x = malloc(sizeof(float) * n * D);
    int32_t *y = malloc(sizeof(int32_t) * n);
    make_blobs(x, y, n, seed);
    write_h5(path, x, n, D, y, NULL, 0);
    free(x);
    free(y);
}

/* ---- training, to get a checkpoint ---- */

static int keep_checkpoint(void *ctx, int64_t epoch, int64_t step, const void *blob, size_t len)
{
    struct fixture *f = ctx;
    free(f->blob);
    f->blob = malloc(len);
    assert_non_null(f->blob);
    memcpy(f->blob, blob, len);
    f->len = len;
    return 0;
}

static void train(struct fixture *f, const char *spec_fmt)
{
    char text[1024], err[512];
    snprintf(text, sizeof text, spec_fmt, f->train);
    struct mlq_spec spec;
    int rc = spec_parse(text, &spec, err, sizeof err);
    if (rc) fail_msg("spec: %s", err);
    struct train_callbacks cb = {.ctx = f, .on_checkpoint = keep_checkpoint};
    struct train_result res;
    rc = train_run(&spec, NULL, 0, &cb, &res, err, sizeof err);
    if (rc) fail_msg("train_run: %s", err);
    assert_non_null(f->blob);
}

static void parse(struct mlq_spec *spec, const char *fmt, ...)
{
    char text[1024], err[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (spec_parse(text, spec, err, sizeof err)) fail_msg("spec %s: %s", text, err);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/mlq-test-evaluate-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->train, sizeof f->train, "%s/train.h5", f->dir);
    snprintf(f->eval, sizeof f->eval, "%s/eval.h5", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out.h5", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(f->dir);
    free(f->blob);
    free(f);
    return 0;
}

static const char *classifier_spec =
    "{\"kind\": \"train\", \"dataset\": {\"path\": \"%s\"},"
    " \"model\": {\"layers\": [4, 16, 3], \"activation\": \"relu\"},"
    " \"loss\": \"cross_entropy\", \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1},"
    " \"batch_size\": 16, \"epochs\": 4, \"seed\": 7, \"checkpoint_every\": 0}";

static int setup_classifier(void **state)
{
    if (setup(state)) return -1;
    struct fixture *f = *state;
    write_blobs(f->train, N_TRAIN, 1);
    write_blobs(f->eval, N_EVAL, 2);
    train(f, classifier_spec);
    return 0;
}

/* Reads a whole dataset of the output file; returns its rank and dims. */
static void *read_all(const char *path, const char *name, hid_t mem_type, size_t elem, int *rank,
                      hsize_t dims[2])
{
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    *rank = H5Sget_simple_extent_ndims(s);
    assert_true(*rank >= 1 && *rank <= 2);
    dims[1] = 1;
    H5Sget_simple_extent_dims(s, dims, NULL);
    void *buf = malloc(elem * dims[0] * dims[1]);
    assert_true(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    H5Fclose(file);
    return buf;
}

static int64_t read_attr_int(const char *path, const char *name)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    assert_true(a >= 0);
    int64_t v = -1;
    assert_true(H5Aread(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Fclose(file);
    return v;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- eval ---- */

static void test_eval_classifier(void **state)
{
    struct fixture *f = *state;
    struct mlq_spec spec;
    parse(&spec, "{\"kind\": \"eval\", \"dataset\": {\"path\": \"%s\"}, \"run\": 3}", f->eval);
    json_t *res;
    char err[512] = "";
    int rc = eval_run(&spec, f->blob, f->len, &res, err, sizeof err);
    if (rc) fail_msg("eval_run: %s", err);

    assert_int_equal(json_integer_value(json_object_get(res, "n")), N_EVAL);
    assert_int_equal(json_integer_value(json_object_get(res, "classes")), K);
    assert_int_equal(json_integer_value(json_object_get(res, "epoch")), 4);
    double acc = json_real_value(json_object_get(res, "accuracy"));
    double loss = json_real_value(json_object_get(res, "loss"));
    assert_true(acc > 0.97);
    assert_true(loss > 0 && loss < 0.3);

    /* Rows are true classes: each row adds up to that label's count, the
     * diagonal over N is the accuracy, and per-class accuracy is the
     * diagonal over the row. */
    json_t *cm = json_object_get(res, "confusion_matrix");
    json_t *pc = json_object_get(res, "per_class_accuracy");
    assert_int_equal(json_array_size(cm), K);
    assert_int_equal(json_array_size(pc), K);
    int64_t total = 0, diag = 0;
    for (int t = 0; t < K; t++) {
        json_t *row = json_array_get(cm, t);
        assert_int_equal(json_array_size(row), K);
        int64_t sum = 0;
        for (int p = 0; p < K; p++)
            sum += json_integer_value(json_array_get(row, p));
        int64_t label_count = N_EVAL / K + (t < N_EVAL % K);
        assert_int_equal(sum, label_count);
        int64_t hit = json_integer_value(json_array_get(row, t));
        assert_near(json_real_value(json_array_get(pc, t)), (double)hit / (double)sum, 1e-12);
        total += sum;
        diag += hit;
    }
    assert_int_equal(total, N_EVAL);
    assert_near(acc, (double)diag / N_EVAL, 1e-12);
    json_decref(res);
}

/* A label the model has no output for, and a width it does not take. */
static void test_eval_bad_data(void **state)
{
    struct fixture *f = *state;
    char path[160], err[512] = "";
    float x[10 * 5] = {0};
    int32_t y[10] = {0, 1, 2, 3, 0, 1, 2, 0, 1, 2};
    struct mlq_spec spec;
    json_t *res;

    snprintf(path, sizeof path, "%s/labels.h5", f->dir);
    write_h5(path, x, 10, D, y, NULL, 0);
    parse(&spec, "{\"kind\": \"eval\", \"dataset\": \"%s\", \"run\": 1}", path);
    assert_int_equal(eval_run(&spec, f->blob, f->len, &res, err, sizeof err), -EINVAL);
    assert_null(res);
    assert_non_null(strstr(err, "labels.h5"));
    assert_non_null(strstr(err, "class ids go up to 3"));

    snprintf(path, sizeof path, "%s/wide.h5", f->dir);
    write_h5(path, x, 10, 5, y, NULL, 0);
    parse(&spec, "{\"kind\": \"eval\", \"dataset\": \"%s\", \"run\": 1}", path);
    assert_int_equal(eval_run(&spec, f->blob, f->len, &res, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "wide.h5"));
    assert_non_null(strstr(err, "5 inputs per row"));

    /* Predict checks only the width: labels are not its business. */
    parse(&spec, "{\"kind\": \"predict\", \"input\": \"%s\", \"run\": 1, \"output\": \"%s\"}", path,
          f->out);
    assert_int_equal(predict_run(&spec, f->blob, f->len, &res, err, sizeof err), -EINVAL);
    assert_null(res);
    assert_non_null(strstr(err, "5 inputs per row"));
    assert_non_null(strstr(err, "takes 4"));
    assert_int_equal(access(f->out, F_OK), -1);

    snprintf(path, sizeof path, "%s/labels.h5", f->dir);
    parse(&spec, "{\"kind\": \"predict\", \"input\": \"%s\", \"run\": 1, \"output\": \"%s\"}", path,
          f->out);
    assert_int_equal(predict_run(&spec, f->blob, f->len, &res, err, sizeof err), 0);
    assert_int_equal(json_integer_value(json_object_get(res, "n")), 10);
    json_decref(res);
}

static void test_corrupt_checkpoint(void **state)
{
    struct fixture *f = *state;
    struct mlq_spec ev, pr;
    char err[512] = "";
    json_t *res;
    parse(&ev, "{\"kind\": \"eval\", \"dataset\": \"%s\", \"run\": 9}", f->eval);
    parse(&pr, "{\"kind\": \"predict\", \"input\": \"%s\", \"run\": 9, \"output\": \"%s\"}",
          f->eval, f->out);

    unsigned char *bad = malloc(f->len);
    memcpy(bad, f->blob, f->len);
    bad[f->len / 2] ^= 0x5a; /* a flipped weight: the checksum catches it */
    assert_true(eval_run(&ev, bad, f->len, &res, err, sizeof err) < 0);
    assert_null(res);
    assert_non_null(strstr(err, "run 9: corrupt checkpoint"));
    err[0] = '\0';
    assert_true(predict_run(&pr, bad, f->len, &res, err, sizeof err) < 0);
    assert_non_null(strstr(err, "corrupt checkpoint"));
    assert_int_equal(access(f->out, F_OK), -1);

    err[0] = '\0';
    assert_true(eval_run(&ev, f->blob, f->len - 9, &res, err, sizeof err) < 0); /* truncated */
    assert_non_null(strstr(err, "corrupt checkpoint"));
    err[0] = '\0';
    assert_true(eval_run(&ev, "garbage", 7, &res, err, sizeof err) < 0);
    assert_non_null(strstr(err, "corrupt checkpoint"));
    free(bad);

    /* The wrong kind of job is refused before anything is read. */
    assert_int_equal(eval_run(&pr, f->blob, f->len, &res, err, sizeof err), -EINVAL);
    assert_int_equal(predict_run(&ev, f->blob, f->len, &res, err, sizeof err), -EINVAL);
    assert_int_equal(count_files(f->dir), 2);
}

/* ---- predict ---- */

static void test_predict_classifier(void **state)
{
    struct fixture *f = *state;
    struct mlq_spec spec;
    char err[512] = "";
    json_t *res, *ev;
    parse(&spec, "{\"kind\": \"eval\", \"dataset\": \"%s\", \"run\": 3}", f->eval);
    assert_int_equal(eval_run(&spec, f->blob, f->len, &ev, err, sizeof err), 0);
    parse(&spec, "{\"kind\": \"predict\", \"input\": \"%s\", \"run\": 3, \"output\": \"%s\"}",
          f->eval, f->out);
    int rc = predict_run(&spec, f->blob, f->len, &res, err, sizeof err);
    if (rc) fail_msg("predict_run: %s", err);
    assert_int_equal(json_integer_value(json_object_get(res, "n")), N_EVAL);
    assert_string_equal(json_string_value(json_object_get(res, "output")), f->out);
    /* train.h5, eval.h5, out.h5: no temporary file left behind. */
    assert_int_equal(count_files(f->dir), 3);

    int rank;
    hsize_t dims[2];
    int32_t *pred = read_all(f->out, "predictions", H5T_NATIVE_INT32, 4, &rank, dims);
    assert_int_equal(rank, 1);
    assert_int_equal(dims[0], N_EVAL);
    float *prob = read_all(f->out, "probabilities", H5T_NATIVE_FLOAT, 4, &rank, dims);
    assert_int_equal(rank, 2);
    assert_int_equal(dims[0], N_EVAL);
    assert_int_equal(dims[1], K);
    assert_int_equal(read_attr_int(f->out, "run"), 3);
    assert_int_equal(read_attr_int(f->out, "checkpoint_epoch"), 4);

    float x[N_EVAL * D];
    int32_t y[N_EVAL];
    make_blobs(x, y, N_EVAL, 2);
    int64_t counts[K] = {0}, correct = 0;
    json_t *jc = json_object_get(res, "class_counts");
    assert_int_equal(json_array_size(jc), K);
    for (int i = 0; i < N_EVAL; i++) {
        const float *p = prob + (size_t)i * K;
        int best = 0;
        double sum = 0;
        for (int k = 0; k < K; k++) {
            sum += p[k];
            best = p[k] > p[best] ? k : best;
        }
        assert_near(sum, 1.0, 1e-5);
        assert_int_equal(pred[i], best);
        counts[pred[i]]++;
        correct += pred[i] == y[i];
    }
    for (int k = 0; k < K; k++)
        assert_int_equal(json_integer_value(json_array_get(jc, k)), counts[k]);
    assert_near((double)correct / N_EVAL, json_real_value(json_object_get(ev, "accuracy")), 1e-12);

    /* A second predict replaces the file whole. */
    json_decref(res);
    assert_int_equal(predict_run(&spec, f->blob, f->len, &res, err, sizeof err), 0);
    assert_int_equal(count_files(f->dir), 3);

    /* An output directory that does not exist: an error naming the path. */
    char missing[200];
    snprintf(missing, sizeof missing, "%s/no/such/dir/out.h5", f->dir);
    snprintf(spec.output_path, sizeof spec.output_path, "%s", missing);
    json_t *none;
    assert_true(predict_run(&spec, f->blob, f->len, &none, err, sizeof err) < 0);
    assert_null(none);
    assert_non_null(strstr(err, missing));

    free(pred);
    free(prob);
    json_decref(res);
    json_decref(ev);
}

/* ---- regression (mse) ---- */

static const char *regression_spec =
    "{\"kind\": \"train\", \"dataset\": {\"path\": \"%s\"},"
    " \"model\": {\"layers\": [4, 8, 2], \"activation\": \"tanh\", \"output\": \"linear\"},"
    " \"loss\": \"mse\", \"optimizer\": {\"name\": \"adam\", \"lr\": 0.01},"
    " \"batch_size\": 16, \"epochs\": 20, \"seed\": 3, \"checkpoint_every\": 0}";

/* Two targets, linear in the inputs. */
static void make_regression(float *x, float *y, int n, uint64_t seed)
{
    lcg_state = seed;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(2 * uniform() - 1);
        y[i * 2] = 0.5f * x[i * D] - x[i * D + 1];
        y[i * 2 + 1] = x[i * D + 2] + 0.25f * x[i * D + 3] + 0.1f;
    }
}

static void test_regression(void **state)
{
    struct fixture *f = *state;
    static float x[N_EVAL * D], y[N_EVAL * 2];
    make_regression(x, y, N_TRAIN, 11);
    write_h5(f->train, x, N_TRAIN, D, NULL, y, 2);
    train(f, regression_spec);
    make_regression(x, y, N_EVAL, 12);
    write_h5(f->eval, x, N_EVAL, D, NULL, y, 2);

    struct mlq_spec spec;
    char err[512] = "";
    json_t *ev, *res;
    parse(&spec, "{\"kind\": \"eval\", \"dataset\": \"%s\", \"run\": 5}", f->eval);
    int rc = eval_run(&spec, f->blob, f->len, &ev, err, sizeof err);
    if (rc) fail_msg("eval_run: %s", err);
    double mse = json_real_value(json_object_get(ev, "loss"));
    double mae = json_real_value(json_object_get(ev, "mae"));
    assert_int_equal(json_integer_value(json_object_get(ev, "n")), N_EVAL);
    assert_null(json_object_get(ev, "confusion_matrix"));
    assert_true(mse < 0.01);
    assert_true(mae > 0 && mae * mae <= mse + 1e-12); /* mean |e| <= sqrt(mean e^2) */

    parse(&spec, "{\"kind\": \"predict\", \"input\": \"%s\", \"run\": 5, \"output\": \"%s\"}",
          f->eval, f->out);
    rc = predict_run(&spec, f->blob, f->len, &res, err, sizeof err);
    if (rc) fail_msg("predict_run: %s", err);
    assert_null(json_object_get(res, "class_counts"));
    int rank;
    hsize_t dims[2];
    float *out = read_all(f->out, "outputs", H5T_NATIVE_FLOAT, 4, &rank, dims);
    assert_int_equal(rank, 2);
    assert_int_equal(dims[0], N_EVAL);
    assert_int_equal(dims[1], 2);
    double se = 0, ae = 0;
    for (int i = 0; i < N_EVAL * 2; i++) {
        se += ((double)out[i] - y[i]) * ((double)out[i] - y[i]);
        ae += fabs((double)out[i] - y[i]);
    }
    assert_near(se / (N_EVAL * 2), mse, 1e-9);
    assert_near(ae / (N_EVAL * 2), mae, 1e-9);
    free(out);
    json_decref(res);
    json_decref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_eval_classifier, setup_classifier, teardown),
        cmocka_unit_test_setup_teardown(test_predict_classifier, setup_classifier, teardown),
        cmocka_unit_test_setup_teardown(test_eval_bad_data, setup_classifier, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_checkpoint, setup_classifier, teardown),
        cmocka_unit_test_setup_teardown(test_regression, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
