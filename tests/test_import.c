/* The importers on hostile files: inputs found by the fuzz targets
 * (tests/fuzz/fuzz_import_idx.c, fuzz_import_csv.c), replayed through
 * cli/import.c and through the real `mlq dataset` command. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <zlib.h>

#include "import.h"
#include "testutil.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"

struct ctx {
    char *dir;
    char path[512];
    char err[1024];
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    c->dir = testutil_tmpdir("mlq-test-import");
    snprintf(c->path, sizeof c->path, "%s/in", c->dir);
    *state = c;
    return c->dir ? 0 : -1;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    testutil_rmtree(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

/* The process's peak of address space, in bytes (VmPeak). */
static int64_t vm_peak(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmPeak: %lld kB", &kb) == 1) break;
    fclose(f);
    assert_true(kb > 0);
    return (int64_t)kb << 10;
}

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

/* fuzz_import_idx: a 16-byte header announcing 8 x 65536 x 65536 bytes (32
 * GiB) made the importer allocate all of it before reading the first byte.
 * The buffer now grows with the data that arrives, raw or gzip. */
static void test_idx_header_larger_than_file(void **state)
{
    struct ctx *c = *state;
    static const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 8, 0, 1, 0, 0, 0, 1, 0, 0};
    for (int gz = 0; gz < 2; gz++) {
        if (gz)
            write_gz(c->path, head, sizeof head);
        else
            write_bytes(c->path, head, sizeof head);
        int64_t before = vm_peak();
        struct import_idx idx;
        int rc = import_idx_read(c->path, &idx, c->err, sizeof c->err);
        int64_t grew = vm_peak() - before;
        assert_int_equal(rc, -EINVAL);
        assert_null(idx.data);
        if (!strstr(c->err, "the header announces 34359738368 bytes of data, the file holds 0"))
            fail_msg("%s: %s", gz ? "gzip" : "raw", c->err);
        if (grew > (INT64_C(256) << 20))
            fail_msg("%s: reading a 16-byte header took %lld MiB of address space",
                     gz ? "gzip" : "raw", (long long)(grew >> 20));
    }
    char out[2048], labels[600];
    snprintf(labels, sizeof labels, "%s/labels", c->dir);
    static const unsigned char lab[] = {0, 0, 8, 1, 0, 0, 0, 1, 7};
    write_bytes(labels, lab, sizeof lab);
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s/out.h5'",
                             c->path, labels, c->dir),
                     1);
    if (!strstr(out, "truncated: the header announces 34359738368 bytes")) fail_msg("%s", out);
}

/* A complete file still reads whole, past the first growth steps. */
static void test_idx_grows_to_the_data(void **state)
{
    struct ctx *c = *state;
    size_t n = 3u << 20; /* 3 MiB: three doublings from the first 1 MiB */
    unsigned char *buf = malloc(16 + n);
    assert_non_null(buf);
    const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 4, 0, 0, 0, 4, 0};
    memcpy(buf, head, sizeof head);
    for (size_t i = 0; i < n; i++)
        buf[16 + i] = (unsigned char)(i * 7);
    for (int gz = 0; gz < 2; gz++) {
        if (gz)
            write_gz(c->path, buf, 16 + n);
        else
            write_bytes(c->path, buf, 16 + n);
        struct import_idx idx;
        int rc = import_idx_read(c->path, &idx, c->err, sizeof c->err);
        if (rc) fail_msg("%s", c->err);
        assert_int_equal(idx.count, n);
        assert_memory_equal(idx.data, buf + 16, n);
        import_idx_free(&idx);
    }
    free(buf);
}

/* The gzip bytes of a small valid IDX file (2 images of 2 x 3). */
static unsigned char *small_idx_gz(size_t *len)
{
    static const unsigned char idx[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2,  0,  0,
                                        0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uLong cap = compressBound(sizeof idx) + 64;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (unsigned char *)idx;
    z.avail_in = sizeof idx;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* fuzz_import_idx's seed miss-gzip-cut: a gzip file cut inside its 8-byte
 * trailer (CRC-32, length) was accepted with its checksum unchecked, and a
 * small one with a wrong CRC was "too short for an IDX file". Both are read
 * errors that say what zlib found. */
static void test_idx_gzip_damaged_trailer(void **state)
{
    struct ctx *c = *state;
    size_t len;
    unsigned char *gz = small_idx_gz(&len);
    struct import_idx idx;

    write_bytes(c->path, gz, len - 5); /* the CRC's last byte and the length gone */
    int rc = import_idx_read(c->path, &idx, c->err, sizeof c->err);
    if (rc != -EIO || !strstr(c->err, "read error") || !strstr(c->err, "unexpected end of file"))
        fail_msg("a cut gzip trailer: rc %d, %s", rc, rc ? c->err : "accepted");
    assert_null(idx.data);

    gz[len - 8] ^= 0x5a; /* the CRC-32 */
    write_bytes(c->path, gz, len);
    rc = import_idx_read(c->path, &idx, c->err, sizeof c->err);
    if (rc != -EIO || !strstr(c->err, "incorrect data check"))
        fail_msg("a wrong gzip CRC: rc %d, %s", rc, rc ? c->err : "accepted");
    assert_null(idx.data);

    char out[2048], labels[600];
    snprintf(labels, sizeof labels, "%s/labels", c->dir);
    static const unsigned char lab[] = {0, 0, 8, 1, 0, 0, 0, 2, 7, 1};
    write_bytes(labels, lab, sizeof lab);
    gz[len - 8] ^= 0x5a;
    write_bytes(c->path, gz, len - 5);
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s/out.h5'",
                             c->path, labels, c->dir),
                     1);
    if (!strstr(out, "unexpected end of file")) fail_msg("%s", out);
    gz[len - 8] ^= 0x5a;
    write_bytes(c->path, gz, len);
    assert_int_equal(run_mlq(out, sizeof out, "dataset import-idx '%s' '%s' -o '%s/out.h5'",
                             c->path, labels, c->dir),
                     1);
    if (!strstr(out, "incorrect data check")) fail_msg("%s", out);
    free(gz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idx_header_larger_than_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idx_grows_to_the_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idx_gzip_damaged_trailer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
