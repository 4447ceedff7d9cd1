/* Hostile and unsupported HDF5 files (issue 9, defects 4, 6, 7) through the
 * reader, `mlq dataset info`, the standalone trainer and a trainer daemon
 * under a real broker: each gets a clear message and a non-zero exit or a
 * failed job, fast, and nothing dies; float16, float128 and odd filters are
 * refused by name and h5py's lzf is read. The files are made here with the
 * HDF5 C API (and h5py for what only h5py writes). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <dirent.h>
#include <hdf5.h>
#include <zlib.h>

#include "broker_harness.h"
#include "dataset.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"
#define TRAINER MLQ_BINARY_DIR "/trainer/mlq-trainer"

/* Runs a shell command line, killed after 60 s (a reader that spins must
 * fail the test, not hang it); its exit code, stdout and stderr in out. */
static int run(char *out, size_t outlen, double *seconds, const char *fmt, ...)
{
    char args[2048], cmd[2100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "timeout -s KILL 60 %s 2>&1", args);
    double t0 = h_now();
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    if (seconds) *seconds = h_now() - t0;
    if (!WIFEXITED(st)) fail_msg("'%s' did not exit normally (%d): %s", args, st, out);
    return WEXITSTATUS(st);
}

static void expect_in(const char *out, const char *want)
{
    if (!strstr(out, want)) fail_msg("expected '%s' in:\n%s", want, out);
}

/* ---- the files ---- */

static void put(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

/* X (rows, d) of xtype and y (rows) int32, chunked, declared and never
 * written: a file of a few KiB that claims rows * d elements. */
static void write_sparse(const char *path, hsize_t rows, hsize_t d, hid_t xtype)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t xd[2] = {rows, d}, xc[2] = {1024, d}, yd[1] = {rows}, yc[1] = {65536};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, xc);
    hid_t sp = H5Screate_simple(2, xd, NULL);
    hid_t x = H5Dcreate2(f, "X", xtype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(x >= 0);
    H5Dclose(x);
    H5Sclose(sp);
    H5Pset_chunk(dcpl, 1, yc);
    sp = H5Screate_simple(1, yd, NULL);
    hid_t y = H5Dcreate2(f, "y", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(y >= 0);
    H5Dclose(y);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(f);
}

/* X float32 (64, 4) and y uint8 (64) in compact storage whose layout message
 * then claims 8 bytes instead of 64: libhdf5 1.10.8 reads y's 64 bytes out
 * of an 8-byte buffer of its own (the defect-4 heap overflow). */
static void write_short_compact(const char *path)
{
    float x[64 * 4];
    uint8_t y[64];
    for (int i = 0; i < 64 * 4; i++)
        x[i] = (float)i / 256.0f;
    for (int i = 0; i < 64; i++)
        y[i] = (uint8_t)(i % 10);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[2] = {64, 4}, yd[1] = {64};
    put(f, "X", H5T_IEEE_F32LE, 2, xd, x);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_layout(dcpl, H5D_COMPACT);
    hid_t sp = H5Screate_simple(1, yd, NULL);
    hid_t d = H5Dcreate2(f, "y", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(f);

    /* Layout message v3, compact: version 3, class 0, size (2 bytes LE), data. */
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, fp);
    const uint8_t pat[] = {3, 0, 64, 0, 0, 1, 2, 3, 4, 5, 6, 7};
    size_t at = 0, hits = 0;
    for (size_t i = 0; i + sizeof pat <= n; i++)
        if (memcmp(buf + i, pat, sizeof pat) == 0) {
            at = i;
            hits++;
        }
    assert_int_equal(hits, 1);
    fseek(fp, (long)at + 2, SEEK_SET);
    fputc(8, fp);
    fclose(fp);
}

/* X float32 (4096, 4096) in one deflate chunk whose stream decodes to 64 KiB,
 * not the chunk's 64 MiB: metadata every check accepts, and libhdf5 1.10.8
 * copies 64 MiB out of its small decode buffer and crashes. Only a reader
 * process can contain this one. */
static void write_short_chunk(const char *path)
{
    const int n = 4096, d = 4096;
    const size_t raw = 65536;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)d};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, dims);
    H5Pset_deflate(dcpl, 1);
    hid_t x = H5Dcreate2(f, "X", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(x >= 0);
    uint8_t *zeros = calloc(raw, 1), *z = malloc(raw + 1024);
    uLongf zlen = raw + 1024;
    assert_int_equal(compress2(z, &zlen, zeros, raw, 0), Z_OK); /* stored blocks */
    hsize_t off[2] = {0, 0};
    assert_true(H5Dwrite_chunk(x, H5P_DEFAULT, 0, off, zlen, z) >= 0);
    free(zeros);
    free(z);
    H5Dclose(x);
    H5Sclose(sp);
    H5Pclose(dcpl);
    int32_t *y = calloc((size_t)n, sizeof *y);
    hsize_t yd[1] = {(hsize_t)n};
    put(f, "y", H5T_STD_I32LE, 1, yd, y);
    free(y);
    H5Fclose(f);
}

/* Files only h5py writes (float16, long double, its own lzf filter). Returns
 * false (and the test skips) when h5py is missing. */
static bool write_with_h5py(struct harness *h)
{
    char script[600], out[4096];
    snprintf(script, sizeof script, "%s/make.py", h->dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fprintf(f, "import sys\n"
               "try:\n    import h5py, numpy as np\nexcept ImportError:\n    sys.exit(77)\n"
               "d = sys.argv[1]\n"
               "x = np.arange(40, dtype=np.float32).reshape(10, 4) / 40\n"
               "y = np.arange(10, dtype=np.int32) %% 3\n"
               "for name, dt in (('f16', np.float16), ('f128', np.longdouble)):\n"
               "    with h5py.File(f'{d}/{name}.h5', 'w') as g:\n"
               "        g['X'] = x.astype(dt)\n        g['y'] = y\n"
               "with h5py.File(f'{d}/yf16.h5', 'w') as g:\n"
               "    g['X'] = x\n    g['y'] = x[:, :2].astype(np.float16)\n"
               /* Compressible, or h5py stores the chunk raw. */
               "with h5py.File(f'{d}/lzf.h5', 'w') as g:\n"
               "    lz = np.tile(np.arange(64, dtype=np.float32) / 64, (10, 1))\n"
               "    g.create_dataset('X', data=lz, chunks=(5, 64), compression='lzf')\n"
               "    g['y'] = y\n"
               "    assert g['X'].id.get_storage_size() < lz.nbytes, 'lzf stored it raw'\n");
    fclose(f);
    int rc = run(out, sizeof out, NULL, "/usr/bin/python3 '%s' '%s'", script, h->dir);
    if (rc == 77) return false;
    if (rc != 0) fail_msg("h5py script failed (%d): %s", rc, out);
    return true;
}

static int open_file(const char *path, bool need_y, char *err, size_t errlen)
{
    struct spec_dataset src = {.x = "X", .y = "y", .scale = true};
    snprintf(src.path, sizeof src.path, "%s", path);
    struct dataset *ds = NULL;
    err[0] = '\0';
    int rc = dataset_open(&ds, &src, need_y, 0, err, errlen);
    assert_true(rc < 0 || ds != NULL);
    dataset_close(&ds);
    return rc;
}

static void write_spec(const char *path, const char *data, int d, int classes)
{
    json_t *spec = h_train_spec(data, d, classes, 2, 1);
    assert_int_equal(json_dump_file(spec, path, 0), 0);
    json_decref(spec);
}

/* ---- defect 6: declared extents without data ---- */

static void test_sparse_extents_refused_fast(void **state)
{
    struct harness *h = *state;
    static const struct {
        const char *name;
        hsize_t rows, d;
    } files[] = {{"rows27.h5", (hsize_t)1 << 27, 784},
                 {"rows34.h5", (hsize_t)1 << 34, 4},
                 {"rows50.h5", (hsize_t)1 << 50, 4}};
    char path[600], out[8192], err[1024];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", h->dir, files[i].name);
        write_sparse(path, files[i].rows, files[i].d,
                     files[i].d == 784 ? H5T_STD_U8LE : H5T_IEEE_F32LE);
        double t;
        assert_int_equal(run(out, sizeof out, &t, "'%s' dataset info '%s'", MLQ, path), 1);
        if (t > 1.0) fail_msg("info took %.2f s on %s", t, path);
        expect_in(out, "not scanned");
        expect_in(out, "check: ");
        expect_in(out, path);
        assert_int_equal(run(out, sizeof out, &t, "'%s' dataset info --json '%s'", MLQ, path), 1);
        if (t > 1.0) fail_msg("info --json took %.2f s on %s", t, path);

        double t0 = h_now();
        assert_true(open_file(path, true, err, sizeof err) < 0);
        if (h_now() - t0 > 1.0) fail_msg("dataset_open took %.2f s on %s", h_now() - t0, path);
        expect_in(err, path);
        if (files[i].rows < ((hsize_t)1 << 48)) expect_in(err, "not fill values");
    }
}

static void test_sparse_train_fails_fast(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600], out[8192];
    snprintf(data, sizeof data, "%s/rows27.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/spec.json", h->dir);
    write_sparse(data, (hsize_t)1 << 27, 784, H5T_STD_U8LE);
    write_spec(spec, data, 784, 10);
    double t;
    assert_int_equal(run(out, sizeof out, &t, "'%s' --standalone '%s'", TRAINER, spec), 1);
    if (t > 10.0) fail_msg("the standalone trainer took %.2f s", t);
    expect_in(out, "\"state\":\"failed\"");
    expect_in(out, "not fill values");
}

/* ---- defect 7: dtypes and filters the docs name ---- */

static void test_float16_float128_refused(void **state)
{
    struct harness *h = *state;
    if (!write_with_h5py(h)) skip();
    static const struct {
        const char *file, *want;
    } cases[] = {{"f16.h5", "dataset 'X' holds float16 values"},
                 {"f128.h5", "dataset 'X' holds float128"},
                 {"yf16.h5", "dataset 'y' holds float16 values"}};
    char path[600], out[8192], err[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(path, sizeof path, "%s/%s", h->dir, cases[i].file);
        assert_int_equal(open_file(path, true, err, sizeof err), -EINVAL);
        expect_in(err, cases[i].want);
        expect_in(err, path);
        assert_int_equal(run(out, sizeof out, NULL, "'%s' dataset info '%s'", MLQ, path), 1);
        expect_in(out, cases[i].want);
    }
}

/* h5py's own lzf filter: mlq decodes it (docs/datasets.md). */
static void test_lzf_read(void **state)
{
    struct harness *h = *state;
    if (!write_with_h5py(h)) skip();
    char path[600], out[8192];
    snprintf(path, sizeof path, "%s/lzf.h5", h->dir);
    struct spec_dataset src = {.x = "X", .y = "y", .scale = true};
    snprintf(src.path, sizeof src.path, "%s", path);
    struct dataset *ds = NULL;
    char err[1024] = "";
    if (dataset_open(&ds, &src, true, 0, err, sizeof err) != 0) fail_msg("%s", err);
    const struct dataset_info *in = dataset_get_info(ds);
    assert_int_equal(in->n, 10);
    assert_int_equal(in->d, 64);
    float x[10 * 64];
    int32_t yc[10];
    assert_int_equal(dataset_read_rows(ds, 0, 10, x, yc, NULL, err, sizeof err), 10);
    for (int i = 0; i < 10 * 64; i++)
        assert_true(x[i] == (float)(i % 64) / 64.0f);
    for (int i = 0; i < 10; i++)
        assert_int_equal(yc[i], i % 3);
    dataset_close(&ds);
    assert_int_equal(run(out, sizeof out, NULL, "'%s' dataset info '%s'", MLQ, path), 0);
    expect_in(out, "check: ok");
}

/* A filter nobody here decodes is refused by its number and name. */
static void test_unknown_filter_refused(void **state)
{
    struct harness *h = *state;
    char path[600], out[8192], err[1024];
    snprintf(path, sizeof path, "%s/filter.h5", h->dir);
    float x[16 * 4] = {0};
    int32_t y[16] = {0};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[2] = {16, 4}, yd[1] = {16};
    hid_t sp = H5Screate_simple(2, xd, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, xd);
    /* Optional: written raw here, but a writer that had it would have used it. */
    assert_true(H5Pset_filter(dcpl, 32999, H5Z_FLAG_OPTIONAL, 0, NULL) >= 0);
    hid_t d = H5Dcreate2(f, "X", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    put(f, "y", H5T_STD_I32LE, 1, yd, y);
    H5Fclose(f);
    assert_int_equal(open_file(path, true, err, sizeof err), -ENOTSUP);
    expect_in(err, "dataset 'X' is compressed with HDF5 filter 32999");
    expect_in(err, "cannot decode");
    assert_int_equal(run(out, sizeof out, NULL, "'%s' dataset info '%s'", MLQ, path), 1);
    expect_in(out, "filter 32999");
}

/* ---- defect 4: files that make libhdf5 read out of bounds ---- */

static void test_short_compact_refused(void **state)
{
    struct harness *h = *state;
    char path[600], out[8192], err[1024];
    snprintf(path, sizeof path, "%s/compact.h5", h->dir);
    write_short_compact(path);
    /* In this process: without the check, libhdf5 overflows here. */
    dataset_set_isolated(false);
    int rc = open_file(path, true, err, sizeof err);
    dataset_set_isolated(true);
    assert_int_equal(rc, -EINVAL);
    expect_in(err, "dataset 'y' declares 64 bytes of data but its compact storage holds 8");
    assert_int_equal(run(out, sizeof out, NULL, "'%s' dataset info '%s'", MLQ, path), 1);
    expect_in(out, "compact storage holds 8");
}

static void test_reader_crash_contained(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600], out[8192], err[1024];
    snprintf(data, sizeof data, "%s/short-chunk.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/spec.json", h->dir);
    write_short_chunk(data);
    /* This process lives on; the reader died in its place. */
    assert_int_equal(open_file(data, true, err, sizeof err), -EIO);
    expect_in(err, "dataset reader");
    expect_in(err, data);
    assert_int_equal(run(out, sizeof out, NULL, "'%s' dataset info '%s'", MLQ, data), 1);
    expect_in(out, "dataset reader");
    write_spec(spec, data, 4096, 10);
    assert_int_equal(run(out, sizeof out, NULL, "'%s' --standalone '%s'", TRAINER, spec), 1);
    expect_in(out, "\"state\":\"failed\"");
    expect_in(out, "dataset reader");
}

/* A reader that blocks for good (as on a lock held when it was forked) is
 * killed after the stall limit and the read tried again; one stuck every time
 * fails the open with the reason, and this process goes on. */
static void test_stuck_reader_retried(void **state)
{
    struct harness *h = *state;
    char good[600], err[1024];
    h_dataset(h, "good.h5", 64, 4, 3, 1, good, sizeof good);
    dataset_set_reader_watch(0.5, 2); /* two stuck readers, then good ones */
    assert_int_equal(open_file(good, true, err, sizeof err), 0);
    dataset_set_reader_watch(0.5, 100);
    assert_int_equal(open_file(good, true, err, sizeof err), -ETIMEDOUT);
    expect_in(err, "dataset reader made no progress");
    expect_in(err, good);
    dataset_set_reader_watch(0, 0);
    assert_int_equal(open_file(good, true, err, sizeof err), 0);
}

/* A trainer daemon fails each hostile job with its reason and runs the next. */
static void test_daemon_survives_hostile_files(void **state)
{
    struct harness *h = *state;
    char crash[600], compact[600], sparse[600], good[600], st[32];
    snprintf(crash, sizeof crash, "%s/short-chunk.h5", h->dir);
    snprintf(compact, sizeof compact, "%s/compact.h5", h->dir);
    snprintf(sparse, sizeof sparse, "%s/rows27.h5", h->dir);
    write_short_chunk(crash);
    write_short_compact(compact);
    write_sparse(sparse, (hsize_t)1 << 27, 784, H5T_STD_U8LE);
    h_dataset(h, "good.h5", 64, 4, 3, 1, good, sizeof good);
    h_broker_start(h, NULL);
    /* Under AddressSanitizer the reader's libhdf5 overflow is reported, as
     * it should be: those reports go to files of their own, checked below. */
    char asan[1200], *was = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%slog_path=%s/asan", was ? was : "", was ? ":" : "", h->dir);
    char *saved = was ? strdup(was) : NULL;
    setenv("ASAN_OPTIONS", asan, 1);
    pid_t trainer = h_trainer_start(h, "t1");
    if (saved)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
    h_wait_trainers(h, 1, 10);

    static const struct {
        int d;
        const char *want;
    } jobs[] = {{4096, "dataset reader"}, {4, "compact storage holds 8"}, {784, "not fill values"}};
    const char *paths[] = {crash, compact, sparse};
    for (int i = 0; i < 3; i++) {
        int64_t id = h_submit(h, h_train_spec(paths[i], jobs[i].d, 10, 2, 1));
        h_wait_terminal(h, id, 60, st, sizeof st);
        assert_string_equal(st, "failed");
        json_t *job = h_job(h, id);
        const char *why = json_string_value(json_object_get(job, "error"));
        if (!why || !strstr(why, jobs[i].want) || !strstr(why, paths[i]))
            fail_msg("job %d failed with '%s', expected '%s'", i, why ? why : "(none)",
                     jobs[i].want);
        json_decref(job);
        assert_int_equal(kill(trainer, 0), 0);
        assert_int_equal(waitpid(trainer, NULL, WNOHANG), 0);
    }
    int64_t id = h_submit(h, h_train_spec(good, 4, 3, 2, 1));
    h_wait_terminal(h, id, 60, st, sizeof st);
    assert_string_equal(st, "succeeded");

    /* Sanitizer reports: only from reader processes, only inside libhdf5. */
    DIR *dir = opendir(h->dir);
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strncmp(e->d_name, "asan.", 5) != 0) continue;
        if (atoi(e->d_name + 5) == (int)trainer)
            fail_msg("the trainer itself reported a sanitizer error (%s/%s)", h->dir, e->d_name);
        char report[600], text[8192];
        snprintf(report, sizeof report, "%s/%s", h->dir, e->d_name);
        FILE *f = fopen(report, "r");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
        if (!strstr(text, "libhdf5")) fail_msg("a sanitizer report outside libhdf5: %s", report);
    }
    closedir(dir);
}

static int setup(void **state)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return h_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sparse_extents_refused_fast, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_sparse_train_fails_fast, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_float16_float128_refused, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_lzf_read, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_filter_refused, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_short_compact_refused, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_reader_crash_contained, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_stuck_reader_retried, setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_daemon_survives_hostile_files, setup, h_teardown),
    };
    return cmocka_run_group_tests_name("dataset_hostile", tests, NULL, NULL);
}
