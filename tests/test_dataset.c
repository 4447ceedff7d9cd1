/* The HDF5 dataset reader (trainer/dataset.h) and `mlq dataset`: every bad
 * input gives its message, every dtype and rank reads back, batches cover
 * each row once per epoch in a seeded order that `skip` reproduces, in memory
 * and streamed, and the importers write what the reader accepts. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <dirent.h>
#include <hdf5.h>
#include <jansson.h>
#include <zlib.h>

#include "dataset.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"

struct ctx {
    char dir[64];
    char path[256]; /* dir/data.h5 */
    char err[512];
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) return -1;
    snprintf(c->dir, sizeof c->dir, "/tmp/mlq-test-dataset-XXXXXX");
    if (!mkdtemp(c->dir)) return -1;
    snprintf(c->path, sizeof c->path, "%s/data.h5", c->dir);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    int rc = system(cmd);
    free(c);
    return rc == 0 ? 0 : -1;
}

/* ---- writing test files ---- */

static hid_t h5_new(const char *path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

static void h5_put(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                   const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    if (data) assert_true(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

/* X float32 (n, d) with X[i][0] = i, X[i][j] = i + j / 100; y int32 i % 7. */
static void write_indexed(const char *path, int n, int d)
{
    float *x = malloc((size_t)n * d * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < d; j++)
            x[i * d + j] = (float)i + (float)j / 100.0f;
        y[i] = i % 7;
    }
    hid_t f = h5_new(path);
    hsize_t xd[2] = {(hsize_t)n, (hsize_t)d}, yd[1] = {(hsize_t)n};
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, x);
    h5_put(f, "y", H5T_NATIVE_INT32, 1, yd, y);
    H5Fclose(f);
    free(x);
    free(y);
}

static int open_ds(struct ctx *c, const char *path, const char *x, const char *y, bool scale,
                   bool need_y, int64_t budget, struct dataset **ds)
{
    struct spec_dataset src = {.scale = scale};
    snprintf(src.path, sizeof src.path, "%s", path);
    snprintf(src.x, sizeof src.x, "%s", x);
    snprintf(src.y, sizeof src.y, "%s", y);
    c->err[0] = '\0';
    return dataset_open(ds, &src, need_y, budget, c->err, sizeof c->err);
}

/* Opening must fail with a message that names the file and contains want. */
static void expect_open_error(struct ctx *c, const char *path, bool need_y, int64_t budget,
                              const char *want)
{
    struct dataset *ds = NULL;
    int rc = open_ds(c, path, "X", "y", true, need_y, budget, &ds);
    if (rc == 0 || !strstr(c->err, want) || !strstr(c->err, path))
        fail_msg("expected an error with '%s', got rc %d: '%s'", want, rc, c->err);
    assert_null(ds);
}

/* ---- bad inputs ---- */

static void test_missing_and_not_hdf5(void **state)
{
    struct ctx *c = *state;
    expect_open_error(c, c->path, true, 0, "No such file");
    FILE *f = fopen(c->path, "w");
    assert_non_null(f);
    fputs("label,x\n1,2\n", f);
    fclose(f);
    expect_open_error(c, c->path, true, 0, "not an HDF5 file");
}

static void test_missing_dataset(void **state)
{
    struct ctx *c = *state;
    hid_t f = h5_new(c->path);
    uint8_t x[6] = {0};
    hsize_t xd[2] = {3, 2};
    h5_put(f, "inputs", H5T_NATIVE_UINT8, 2, xd, x);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "no dataset named 'X'");

    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "inputs", "y", true, true, 0, &ds), -ENOENT);
    assert_non_null(strstr(c->err, "no dataset named 'y'"));
    /* Predict inputs need no y. */
    assert_int_equal(open_ds(c, c->path, "inputs", "y", true, false, 0, &ds), 0);
    assert_false(dataset_get_info(ds)->has_y);
    assert_int_equal(dataset_get_info(ds)->n, 3);
    dataset_close(&ds);
    assert_null(ds);
    dataset_close(&ds); /* NULL is fine */
    /* A name inside a missing group. */
    assert_true(open_ds(c, c->path, "no/such", "y", true, false, 0, &ds) < 0);
    assert_non_null(strstr(c->err, "no dataset named 'no/such'"));
}

static void test_length_mismatch(void **state)
{
    struct ctx *c = *state;
    hid_t f = h5_new(c->path);
    float x[30] = {0};
    int32_t y[9] = {0};
    hsize_t xd[2] = {10, 3}, yd[1] = {9};
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, x);
    h5_put(f, "y", H5T_NATIVE_INT32, 1, yd, y);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "'X' has 10 rows but 'y' has 9");
}

static void test_wrong_rank(void **state)
{
    struct ctx *c = *state;
    float x[64] = {0};
    int32_t y[64] = {0};
    hsize_t d1[1] = {4}, d5[5] = {2, 2, 2, 2, 2}, d2[2] = {4, 3}, d3[3] = {4, 2, 2};

    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 1, d1, x);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "rank 1");

    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 5, d5, x);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "rank 5");

    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, d2, x);
    h5_put(f, "y", H5T_NATIVE_INT32, 2, d2, y);
    H5Fclose(f);
    /* An id per step (N, T) opens; a model of one class per row refuses it. */
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_int_equal(dataset_get_info(ds)->k, 3);
    assert_true(
        dataset_check_io(ds, JOB_TRAIN, LOSS_CROSS_ENTROPY, 3, "3", 5, c->err, sizeof c->err) < 0);
    assert_non_null(strstr(c->err, "an id per step (N, 3)"));
    assert_int_equal(dataset_check_io_steps(ds, JOB_TRAIN, LOSS_CROSS_ENTROPY, 3, "3", 5, 3, c->err,
                                            sizeof c->err),
                     0);
    assert_true(dataset_check_io_steps(ds, JOB_TRAIN, LOSS_CROSS_ENTROPY, 3, "3", 5, 4, c->err,
                                       sizeof c->err) < 0);
    assert_non_null(strstr(c->err, "predicts 4 steps"));
    dataset_close(&ds);

    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, d2, x);
    h5_put(f, "y", H5T_NATIVE_FLOAT, 3, d3, x);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "rank 3");

    /* Inputs of a dtype we do not read. */
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_INT16, 2, d2, y);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "must be uint8, float32 or float64");
}

static void test_empty(void **state)
{
    struct ctx *c = *state;
    hsize_t n0[2] = {0, 4}, d0[2] = {5, 0};
    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, n0, NULL);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "is empty");
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, d0, NULL);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "is empty");
}

static void test_huge_dims(void **state)
{
    struct ctx *c = *state;
    /* Chunked and never written: the file stays tiny whatever the dims. */
    hsize_t dims[2] = {(hsize_t)1 << 40, (hsize_t)1 << 30}, chunk[2] = {1, 1024};
    hid_t f = h5_new(c->path);
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(f, "X", H5T_NATIVE_UINT8, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    dims[1] = (hsize_t)1 << 20;
    H5Sset_extent_simple(sp, 2, dims, NULL);
    d = H5Dcreate2(f, "wide", H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "inputs per row");
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "wide", "y", true, false, 0, &ds), -EFBIG);
    assert_non_null(strstr(c->err, "too large"));
}

static void test_bad_labels(void **state)
{
    struct ctx *c = *state;
    float x[8] = {0};
    int64_t y[4] = {0, 3, -1, 2};
    hsize_t xd[2] = {4, 2}, yd[1] = {4};
    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, x);
    h5_put(f, "y", H5T_NATIVE_INT64, 1, yd, y);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "class id -1 at row 2 (negative)");
    expect_open_error(c, c->path, true, 8, "class id -1 at row 2 (negative)"); /* streamed */

    y[2] = (int64_t)1 << 40;
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, x);
    h5_put(f, "y", H5T_NATIVE_INT64, 1, yd, y);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "too large");

    /* Ids beyond the model's outputs. */
    y[2] = 10;
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, x);
    h5_put(f, "y", H5T_NATIVE_INT64, 1, yd, y);
    H5Fclose(f);
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_int_equal(dataset_get_info(ds)->n_classes, 11);
    struct mlq_spec spec;
    spec_defaults(&spec);
    spec.n_layers = 2;
    spec.layers[0] = 2;
    spec.layers[1] = 8;
    spec.layers[2] = 10;
    spec.loss = LOSS_CROSS_ENTROPY;
    assert_int_equal(dataset_check_model(ds, &spec, c->err, sizeof c->err), -EINVAL);
    assert_non_null(strstr(c->err, "class ids go up to 10, outside [0, 10)"));
    spec.layers[2] = 11;
    assert_int_equal(dataset_check_model(ds, &spec, c->err, sizeof c->err), 0);
    /* Input width against the first layer. */
    spec.layers[0] = 784;
    assert_int_equal(dataset_check_model(ds, &spec, c->err, sizeof c->err), -EINVAL);
    assert_non_null(strstr(c->err, "has 2 inputs per row, but model.layers[0] is 784"));
    /* mse wants float targets. */
    spec.layers[0] = 2;
    spec.loss = LOSS_MSE;
    assert_int_equal(dataset_check_model(ds, &spec, c->err, sizeof c->err), -EINVAL);
    assert_non_null(strstr(c->err, "loss mse needs 11 targets"));
    dataset_close(&ds);
}

static void test_nonfinite(void **state)
{
    struct ctx *c = *state;
    float xf[12] = {0};
    double xd64[12] = {0};
    int32_t y[6] = {0};
    hsize_t xd[2] = {6, 2}, yd[1] = {6};

    xf[7] = NAN; /* row 3, column 1 */
    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, xf);
    h5_put(f, "y", H5T_NATIVE_INT32, 1, yd, y);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "has NaN at row 3, column 1");

    /* Streamed: found when its chunk is read. */
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 16, &ds), 0);
    assert_false(dataset_get_info(ds)->in_memory);
    float out[12];
    /* The bad chunk may be the first one, read by epoch_begin itself. */
    int rc = dataset_epoch_begin(ds, 1, 0, true, 0, c->err, sizeof c->err);
    while (rc >= 0) {
        rc = dataset_next_batch(ds, 2, out, NULL, NULL, c->err, sizeof c->err);
        if (rc == 0) fail_msg("an epoch over a NaN ended without an error");
    }
    assert_non_null(strstr(c->err, "has NaN at row 3"));
    assert_int_equal(dataset_read_rows(ds, 2, 3, out, NULL, NULL, c->err, sizeof c->err), -EINVAL);
    assert_non_null(strstr(c->err, "NaN"));
    dataset_close(&ds);

    xd64[4] = -INFINITY;
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_DOUBLE, 2, xd, xd64);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "has Inf at row 2, column 0");
    xd64[4] = 1e300;
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_DOUBLE, 2, xd, xd64);
    H5Fclose(f);
    expect_open_error(c, c->path, false, 0, "beyond float32's range");

    /* Float targets are checked too. */
    float t[6] = {0, 1, INFINITY, 0, 0, 0};
    memset(xf, 0, sizeof xf);
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, xd, xf);
    h5_put(f, "y", H5T_NATIVE_FLOAT, 1, yd, t);
    H5Fclose(f);
    expect_open_error(c, c->path, true, 0, "'y' has Inf at row 2");
}

/* ---- dtypes, ranks, scaling ---- */

static void test_uint8_rank3_scaling(void **state)
{
    struct ctx *c = *state;
    uint8_t x[4 * 2 * 3];
    uint16_t y[4] = {3, 0, 2, 1};
    for (int i = 0; i < 24; i++)
        x[i] = (uint8_t)(i * 11);
    hsize_t xd[3] = {4, 2, 3}, yd[1] = {4};
    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_UINT8, 3, xd, x);
    h5_put(f, "y", H5T_NATIVE_UINT16, 1, yd, y);
    H5Fclose(f);

    for (int scale = 0; scale <= 1; scale++) {
        struct dataset *ds = NULL;
        assert_int_equal(open_ds(c, c->path, "X", "y", scale, true, 0, &ds), 0);
        const struct dataset_info *in = dataset_get_info(ds);
        assert_int_equal(in->n, 4);
        assert_int_equal(in->d, 6);
        assert_int_equal(in->x_rank, 3);
        assert_int_equal(in->x_dims[2], 3);
        assert_int_equal(in->x_dtype, DTYPE_UINT8);
        assert_string_equal(dataset_dtype_name(in->x_dtype), "uint8");
        assert_true(in->y_is_class);
        assert_int_equal(in->n_classes, 4);
        assert_true(in->in_memory);
        float out[24];
        int32_t yc[4];
        assert_int_equal(dataset_read_rows(ds, 0, 4, out, yc, NULL, c->err, sizeof c->err), 4);
        for (int i = 0; i < 24; i++)
            assert_true(out[i] == (scale ? (float)x[i] / 255.0f : (float)x[i]));
        assert_memory_equal(yc, ((int32_t[]){3, 0, 2, 1}), sizeof yc);
        /* Past the end: only what is there. */
        assert_int_equal(dataset_read_rows(ds, 3, 4, out, yc, NULL, c->err, sizeof c->err), 1);
        assert_int_equal(yc[0], 1);
        dataset_close(&ds);
    }
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    float out[24];
    dataset_read_rows(ds, 0, 4, out, NULL, NULL, c->err, sizeof c->err);
    assert_true(out[23] <= 1.0f && out[1] == 11.0f / 255.0f);
    dataset_close(&ds);
}

static void test_float_ranks_and_targets(void **state)
{
    struct ctx *c = *state;
    double x[3 * 2 * 2 * 2];
    float x32[3 * 2 * 2 * 2], t[3 * 3];
    int8_t y8[3] = {1, 0, 1};
    for (int i = 0; i < 24; i++)
        x32[i] = (float)(x[i] = i * 0.5 - 3);
    for (int i = 0; i < 9; i++)
        t[i] = (float)i / 4;
    hsize_t xd[4] = {3, 2, 2, 2}, td[2] = {3, 3}, yd[1] = {3};
    hid_t f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_DOUBLE, 4, xd, x);
    h5_put(f, "X32", H5T_NATIVE_FLOAT, 4, xd, x32);
    h5_put(f, "targets", H5T_NATIVE_FLOAT, 2, td, t);
    h5_put(f, "t1", H5T_NATIVE_DOUBLE, 1, yd, x);
    h5_put(f, "y8", H5T_NATIVE_INT8, 1, yd, y8);
    H5Fclose(f);

    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "targets", true, true, 0, &ds), 0);
    const struct dataset_info *in = dataset_get_info(ds);
    assert_int_equal(in->x_dtype, DTYPE_FLOAT64);
    assert_int_equal(in->x_rank, 4);
    assert_int_equal(in->d, 8);
    assert_false(in->y_is_class);
    assert_int_equal(in->k, 3);
    float out[24], y[9];
    assert_int_equal(dataset_read_rows(ds, 0, 3, out, NULL, y, c->err, sizeof c->err), 3);
    for (int i = 0; i < 24; i++)
        assert_true(out[i] == (float)x[i]);
    assert_memory_equal(y, t, sizeof t);
    dataset_close(&ds);

    assert_int_equal(open_ds(c, c->path, "X32", "t1", true, true, 0, &ds), 0);
    assert_int_equal(dataset_get_info(ds)->x_dtype, DTYPE_FLOAT32);
    assert_int_equal(dataset_get_info(ds)->k, 1);
    assert_false(dataset_get_info(ds)->y_is_class);
    assert_int_equal(dataset_read_rows(ds, 1, 1, out, NULL, y, c->err, sizeof c->err), 1);
    assert_true(y[0] == (float)x[1]);
    dataset_close(&ds);

    assert_int_equal(open_ds(c, c->path, "X", "y8", true, true, 0, &ds), 0);
    assert_true(dataset_get_info(ds)->y_is_class);
    assert_int_equal(dataset_get_info(ds)->n_classes, 2);
    int32_t yc[3];
    assert_int_equal(dataset_read_rows(ds, 0, 3, NULL, yc, y, c->err, sizeof c->err), 3);
    assert_memory_equal(yc, ((int32_t[]){1, 0, 1}), sizeof yc);
    assert_true(y[0] == 1.0f && y[1] == 0.0f); /* class ids as float targets too */
    dataset_close(&ds);
}

/* ---- epochs: coverage, determinism, skip, streaming ---- */

/* Reads one epoch from `skip` on; returns rows, order in rows[]. Checks that
 * each row's x and y belong together. */
static int read_epoch(struct dataset *ds, uint64_t seed, int64_t epoch, bool shuffle, int64_t skip,
                      int B, int *rows)
{
    char err[512];
    int d = (int)dataset_get_info(ds)->d, n = 0;
    float *x = malloc((size_t)B * d * sizeof *x);
    int32_t *yc = malloc((size_t)B * sizeof *yc);
    assert_int_equal(dataset_epoch_begin(ds, seed, epoch, shuffle, skip, err, sizeof err), 0);
    int got;
    while ((got = dataset_next_batch(ds, B, x, yc, NULL, err, sizeof err)) > 0) {
        for (int i = 0; i < got; i++) {
            int r = (int)x[i * d];
            assert_int_equal(yc[i], r % 7);
            assert_true(x[i * d + d - 1] == (float)r + (float)(d - 1) / 100.0f);
            rows[n++] = r;
        }
    }
    assert_int_equal(got, 0);
    free(x);
    free(yc);
    return n;
}

static void check_epochs(struct dataset *ds, int n, int base)
{
    int *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    int *seen = calloc((size_t)n, sizeof *seen);

    /* Every row exactly once, in an order that is not file order. */
    assert_int_equal(read_epoch(ds, 42, 0, true, 0, 10, a), n);
    int in_place = 0;
    for (int i = 0; i < n; i++) {
        assert_true(a[i] >= base && a[i] < base + n);
        seen[a[i] - base]++;
        in_place += a[i] == base + i;
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
    assert_true(in_place < n / 2);

    /* Same (seed, epoch): same order, whatever the batch size. */
    assert_int_equal(read_epoch(ds, 42, 0, true, 0, 3, b), n);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    /* Another epoch or seed: another order. */
    read_epoch(ds, 42, 1, true, 0, 10, b);
    assert_memory_not_equal(a, b, (size_t)n * sizeof *a);
    read_epoch(ds, 43, 0, true, 0, 10, b);
    assert_memory_not_equal(a, b, (size_t)n * sizeof *a);

    /* skip s gives the tail of the full epoch. */
    int skips[] = {1, 2, 9, n / 2, n - 1, n};
    for (size_t s = 0; s < sizeof skips / sizeof *skips; s++) {
        int got = read_epoch(ds, 42, 0, true, skips[s], 4, b);
        assert_int_equal(got, n - skips[s]);
        assert_memory_equal(a + skips[s], b, (size_t)got * sizeof *a);
    }

    /* No shuffle: file order. */
    assert_int_equal(read_epoch(ds, 42, 0, false, 0, 7, a), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(a[i], base + i);
    free(a);
    free(b);
    free(seen);
}

static void test_epochs_in_memory(void **state)
{
    struct ctx *c = *state;
    write_indexed(c->path, 103, 4);
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_true(dataset_get_info(ds)->in_memory);
    check_epochs(ds, 103, 0);
    float x[4];
    assert_true(dataset_epoch_begin(ds, 1, 0, true, 104, c->err, sizeof c->err) < 0);
    assert_non_null(strstr(c->err, "cannot skip 104"));
    dataset_close(&ds);

    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_true(dataset_next_batch(ds, 1, x, NULL, NULL, c->err, sizeof c->err) < 0);
    assert_non_null(strstr(c->err, "dataset_epoch_begin"));
    dataset_close(&ds);
}

static void test_epochs_streamed(void **state)
{
    struct ctx *c = *state;
    write_indexed(c->path, 103, 4);
    /* 20 bytes a row (16 of X, 4 of y): chunks of 2 rows, groups of 5 chunks. */
    for (int64_t budget = 200; budget <= 2000; budget *= 10) {
        struct dataset *ds = NULL;
        assert_int_equal(open_ds(c, c->path, "X", "y", true, true, budget, &ds), 0);
        assert_false(dataset_get_info(ds)->in_memory);
        assert_int_equal(dataset_get_info(ds)->n_classes, 7);
        check_epochs(ds, 103, 0);
        float x[20 * 4];
        int32_t yc[20];
        assert_int_equal(dataset_read_rows(ds, 90, 20, x, yc, NULL, c->err, sizeof c->err), 13);
        assert_true(x[0] == 90.0f && yc[12] == 102 % 7);
        dataset_close(&ds);
    }
    /* A budget smaller than one row still streams, a row at a time. */
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 1, &ds), 0);
    check_epochs(ds, 103, 0);
    dataset_close(&ds);
}

static void test_views(void **state)
{
    struct ctx *c = *state;
    write_indexed(c->path, 103, 4);
    int64_t budgets[] = {0, 200};
    for (int b = 0; b < 2; b++) {
        struct dataset *ds = NULL, *v = NULL, *vv = NULL;
        assert_int_equal(open_ds(c, c->path, "X", "y", true, true, budgets[b], &ds), 0);
        assert_int_equal(dataset_view(&v, ds, 10, 40, c->err, sizeof c->err), 0);
        assert_int_equal(dataset_get_info(v)->n, 30);
        assert_int_equal(dataset_get_info(v)->x_dims[0], 30);
        check_epochs(v, 30, 10);
        float x[5 * 4];
        int32_t yc[5];
        assert_int_equal(dataset_read_rows(v, 0, 5, x, yc, NULL, c->err, sizeof c->err), 5);
        assert_true(x[0] == 10.0f && x[16] == 14.0f && yc[4] == 14 % 7);
        /* A view of a view. */
        assert_int_equal(dataset_view(&vv, v, 20, 30, c->err, sizeof c->err), 0);
        check_epochs(vv, 10, 30);
        dataset_close(&vv);
        assert_true(dataset_view(&vv, v, 20, 31, c->err, sizeof c->err) < 0);
        assert_non_null(strstr(c->err, "[20, 31)"));
        assert_null(vv);
        assert_true(dataset_view(&vv, v, 5, 5, c->err, sizeof c->err) < 0);
        /* The parent still reads all its rows. */
        check_epochs(ds, 103, 0);
        dataset_close(&v);
        dataset_close(&ds);
    }
}

/* ---- the mlq command ---- */

/* Runs mlq with args; returns its exit code, output (stdout + stderr) in out. */
static int run_mlq(char *out, size_t outlen, const char *fmt, ...)
{
    char args[2048], cmd[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", MLQ, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Only the given names in dir: a failed import leaves no temp file. */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void write_idx(const char *path, bool gz, const uint8_t *head, size_t hlen,
                      const uint8_t *data, size_t dlen)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, head, (unsigned)hlen), (int)hlen);
        if (dlen) assert_int_equal(gzwrite(f, data, (unsigned)dlen), (int)dlen);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(head, 1, hlen, f);
        fwrite(data, 1, dlen, f);
        fclose(f);
    }
}

static void test_import_idx(void **state)
{
    struct ctx *c = *state;
    uint8_t img_head[16] = {0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 4};
    uint8_t lab_head[8] = {0, 0, 8, 1, 0, 0, 0, 5};
    uint8_t pixels[5 * 12], labels[5] = {4, 0, 9, 1, 1};
    for (int i = 0; i < 60; i++)
        pixels[i] = (uint8_t)(i * 4);
    char img[300], lab[300], out[8192];

    for (int gz = 0; gz <= 1; gz++) {
        snprintf(img, sizeof img, "%s/images-%d", c->dir, gz);
        snprintf(lab, sizeof lab, "%s/labels-%d", c->dir, gz);
        write_idx(img, gz, img_head, 16, pixels, 60);
        write_idx(lab, gz, lab_head, 8, labels, 5);
        snprintf(c->path, sizeof c->path, "%s/out-%d.h5", c->dir, gz);
        int rc = run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' --output '%s'", img, lab,
                         c->path);
        if (rc != 0) fail_msg("import-idx failed (%d): %s", rc, out);
        struct dataset *ds = NULL;
        assert_int_equal(open_ds(c, c->path, "X", "y", false, true, 0, &ds), 0);
        const struct dataset_info *in = dataset_get_info(ds);
        assert_int_equal(in->x_dtype, DTYPE_UINT8);
        assert_int_equal(in->x_rank, 3);
        assert_int_equal(in->x_dims[1], 3);
        assert_int_equal(in->x_dims[2], 4);
        assert_int_equal(in->n_classes, 10);
        float x[60];
        int32_t y[5];
        assert_int_equal(dataset_read_rows(ds, 0, 5, x, y, NULL, c->err, sizeof c->err), 5);
        for (int i = 0; i < 60; i++)
            assert_true(x[i] == (float)pixels[i]);
        for (int i = 0; i < 5; i++)
            assert_int_equal(y[i], labels[i]);
        dataset_close(&ds);
    }
    /* --limit N: the first N examples; more than there are is all of them. */
    for (int lim = 2; lim <= 9; lim += 7) {
        snprintf(c->path, sizeof c->path, "%s/first-%d.h5", c->dir, lim);
        int rc = run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' --output '%s' --limit %d",
                         img, lab, c->path, lim);
        if (rc != 0) fail_msg("import-idx --limit failed (%d): %s", rc, out);
        int n = lim < 5 ? lim : 5;
        struct dataset *ds = NULL;
        assert_int_equal(open_ds(c, c->path, "X", "y", false, true, 0, &ds), 0);
        assert_int_equal(dataset_get_info(ds)->n, n);
        float x[60];
        int32_t y[5];
        assert_int_equal(dataset_read_rows(ds, 0, n, x, y, NULL, c->err, sizeof c->err), n);
        for (int i = 0; i < n * 12; i++)
            assert_true(x[i] == (float)pixels[i]);
        for (int i = 0; i < n; i++)
            assert_int_equal(y[i], labels[i]);
        dataset_close(&ds);
    }
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s/z.h5' --limit 0",
                             img, lab, c->dir),
                     2);
    assert_non_null(strstr(out, "--limit takes a positive number"));
    int files = count_files(c->dir);

    /* Failures: message, exit code 1, nothing written. */
    snprintf(c->path, sizeof c->path, "%s/bad.h5", c->dir);
    uint8_t bad_magic[16] = {0x50, 0x4b, 3, 4}; /* a zip file */
    write_idx(img, false, bad_magic, 16, pixels, 60);
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s'", img, lab, c->path), 1);
    assert_non_null(strstr(out, "not an IDX file"));
    assert_non_null(strstr(out, img));

    write_idx(img, true, img_head, 16, pixels, 59);
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s'", img, lab, c->path), 1);
    assert_non_null(strstr(out, "truncated"));

    uint8_t lab4[8] = {0, 0, 8, 1, 0, 0, 0, 4};
    write_idx(img, true, img_head, 16, pixels, 60);
    write_idx(lab, false, lab4, 8, labels, 4);
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s'", img, lab, c->path), 1);
    assert_non_null(strstr(out, "holds 5 images but"));
    assert_non_null(strstr(out, "holds 4 labels"));

    uint8_t floats[8] = {0, 0, 0x0D, 1, 0, 0, 0, 1};
    write_idx(lab, false, floats, 8, labels, 4);
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s'", img, lab, c->path), 1);
    assert_non_null(strstr(out, "float32"));

    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-idx '%s/none' '%s' -o '%s'", c->dir, lab, c->path),
        1);
    assert_non_null(strstr(out, "No such file"));
    struct stat st;
    assert_int_equal(stat(c->path, &st), -1);
    assert_int_equal(count_files(c->dir), files); /* the inputs, no leftovers */

    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s'", img), 2);
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s' '%s'", img, lab), 2);
    assert_non_null(strstr(out, "--output is required"));
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx --help"), 0);
    assert_non_null(strstr(out, "usage: mlq dataset import-idx"));
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_import_csv(void **state)
{
    struct ctx *c = *state;
    char csv[300], out[8192];
    snprintf(csv, sizeof csv, "%s/data.csv", c->dir);
    snprintf(c->path, sizeof c->path, "%s/csv.h5", c->dir);
    write_text(csv, "a, label ,b\r\n1.5,2,-3\r\n\r\n4,0,5e-1\r\n7,1,8\r\n");
    int rc = run_mlq(out, sizeof out,
                     "dataset import-csv '%s' --header --label-column label -o '%s'", csv, c->path);
    if (rc != 0) fail_msg("import-csv failed (%d): %s", rc, out);
    struct dataset *ds = NULL;
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_int_equal(dataset_get_info(ds)->n, 3);
    assert_int_equal(dataset_get_info(ds)->d, 2);
    assert_int_equal(dataset_get_info(ds)->x_dtype, DTYPE_FLOAT32);
    assert_int_equal(dataset_get_info(ds)->n_classes, 3);
    float x[6];
    int32_t y[3];
    assert_int_equal(dataset_read_rows(ds, 0, 3, x, y, NULL, c->err, sizeof c->err), 3);
    float want[6] = {1.5f, -3, 4, 0.5f, 7, 8};
    assert_memory_equal(x, want, sizeof want);
    assert_memory_equal(y, ((int32_t[]){2, 0, 1}), sizeof y);
    dataset_close(&ds);

    /* Regression: the last column (default) as a float target. */
    write_text(csv, "1,2,0.25\n3,4,-1.5\n");
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-csv '%s' --regression -o '%s'", csv, c->path), 0);
    assert_int_equal(open_ds(c, c->path, "X", "y", true, true, 0, &ds), 0);
    assert_false(dataset_get_info(ds)->y_is_class);
    assert_int_equal(dataset_get_info(ds)->k, 1);
    float t[2];
    assert_int_equal(dataset_read_rows(ds, 0, 2, x, NULL, t, c->err, sizeof c->err), 2);
    assert_true(t[0] == 0.25f && t[1] == -1.5f && x[2] == 3.0f);
    dataset_close(&ds);

    /* Bad lines: their number in the message, exit 1, the old output kept. */
    struct stat before, after;
    assert_int_equal(stat(c->path, &before), 0);
    write_text(csv, "1,2,0\n3,x,1\n");
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-csv '%s' -o '%s'", csv, c->path), 1);
    assert_non_null(strstr(out, "line 2, column 1: 'x' is not a number"));
    write_text(csv, "1,2,0\n3,4,1\n5,6\n");
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-csv '%s' -o '%s'", csv, c->path), 1);
    assert_non_null(strstr(out, "line 3: 2 fields, expected 3"));
    write_text(csv, "1,2,0\n3,4,1.5\n");
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-csv '%s' -o '%s'", csv, c->path), 1);
    assert_non_null(strstr(out, "line 2: label '1.5' is not a class id"));
    write_text(csv, "1,2,0\nnan,4,1\n");
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-csv '%s' -o '%s'", csv, c->path), 1);
    assert_non_null(strstr(out, "line 2, column 0"));
    write_text(csv, "a,b\n");
    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-csv '%s' --header -o '%s'", csv, c->path), 1);
    assert_non_null(strstr(out, "no data rows"));
    assert_int_equal(stat(c->path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(count_files(c->dir), 2);

    assert_int_equal(
        run_mlq(out, sizeof out, "dataset import-csv '%s' --label-column name -o x.h5", csv), 2);
    assert_non_null(strstr(out, "needs --header"));
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-csv --help"), 0);
    assert_non_null(strstr(out, "--regression"));
}

static void test_info(void **state)
{
    struct ctx *c = *state;
    char out[8192];
    hid_t f = h5_new(c->path);
    uint8_t x[6 * 4] = {0};
    uint8_t y[6] = {0, 2, 2, 1, 2, 0};
    hsize_t xd[3] = {6, 2, 2}, yd[1] = {6};
    h5_put(f, "X", H5T_NATIVE_UINT8, 3, xd, x);
    h5_put(f, "y", H5T_NATIVE_UINT8, 1, yd, y);
    H5Fclose(f);
    assert_int_equal(run_mlq(out, sizeof out, "dataset info '%s'", c->path), 0);
    assert_non_null(strstr(out, "X: uint8 (6, 2, 2), N 6, D 4"));
    assert_non_null(strstr(out, "3 classes"));
    assert_non_null(strstr(out, "class counts: 0:2 1:1 2:3"));
    assert_non_null(strstr(out, "check: ok"));

    assert_int_equal(run_mlq(out, sizeof out, "dataset info --json '%s'", c->path), 0);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "n")), 6);
    assert_int_equal(json_integer_value(json_object_get(doc, "d")), 4);
    json_t *jy = json_object_get(doc, "y");
    assert_int_equal(json_integer_value(json_object_get(jy, "classes")), 3);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(jy, "counts"), 2)), 3);
    assert_string_equal(json_string_value(json_object_get(doc, "check")), "ok");
    json_decref(doc);

    /* NaN in X: reported, and the check says why the trainer refuses it. */
    float xf[6] = {0, NAN, 0, 0, INFINITY, 0};
    hsize_t fd[2] = {3, 2};
    f = h5_new(c->path);
    h5_put(f, "X", H5T_NATIVE_FLOAT, 2, fd, xf);
    H5Fclose(f);
    assert_int_equal(run_mlq(out, sizeof out, "dataset info '%s'", c->path), 1);
    assert_non_null(strstr(out, "NaN/Inf in X: 2 values, first at row 0"));
    assert_non_null(strstr(out, "y: none"));
    assert_non_null(strstr(out, "check:"));
    assert_non_null(strstr(out, "has NaN at row 0"));

    assert_int_equal(run_mlq(out, sizeof out, "dataset info '%s' --x inputs", c->path), 1);
    assert_non_null(strstr(out, "no dataset named 'inputs'; the file holds: 'X'"));
    assert_int_equal(run_mlq(out, sizeof out, "dataset info '%s/none.h5'", c->dir), 1);
    assert_non_null(strstr(out, "No such file"));
    assert_int_equal(run_mlq(out, sizeof out, "dataset info"), 2);
    assert_int_equal(run_mlq(out, sizeof out, "dataset frobnicate"), 2);
    assert_int_equal(run_mlq(out, sizeof out, "dataset info --help"), 0);
    assert_non_null(strstr(out, "--json"));
    assert_int_equal(run_mlq(out, sizeof out, "dataset --help"), 0);
    assert_non_null(strstr(out, "import-csv"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_and_not_hdf5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dataset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_rank, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_dims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uint8_rank3_scaling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_float_ranks_and_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epochs_in_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epochs_streamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_csv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info, setup, teardown),
    };
    return cmocka_run_group_tests_name("dataset", tests, NULL, NULL);
}
