/* Inputs the fuzz targets found, replayed in the normal suite (the fuzz
 * targets' seeds keep them too, tests/fuzz/corpus/). */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "checkpoint.h"
#include "dataset.h"
#include "testutil.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"
#define CORPUS MLQ_SOURCE_DIR "/tests/fuzz/corpus"
#define CRASHERS CORPUS "/libhdf5-crashes"

/* A fuzz_dataset input is one flag byte, then the file: writes the file. */
static void write_h5(const char *input, const char *path)
{
    FILE *in = fopen(input, "rb");
    assert_non_null(in);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    assert_true(n > 1 && n < sizeof buf);
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(buf + 1, 1, n - 1, out), n - 1);
    assert_int_equal(fclose(out), 0);
}

/* The files of libhdf5-crashes crash libhdf5 1.10.8 itself (H5F__accum_read
 * copies from NULL while loading metadata): the trainer's reader and `mlq
 * dataset info` must refuse each with a message and go on, the crash
 * confined to a reader process (docs/security.md). */
static void test_libhdf5_crashers_are_refused(void **state)
{
    (void)state;
    char *dir = testutil_tmpdir("mlq-test-fuzz-inputs");
    assert_non_null(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/file.h5", dir);
    DIR *d = opendir(CRASHERS);
    assert_non_null(d);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char input[1200];
        snprintf(input, sizeof input, "%s/%s", CRASHERS, e->d_name);
        write_h5(input, path);
        files++;

        struct spec_dataset src = {.x = "X", .y = "y", .scale = true};
        snprintf(src.path, sizeof src.path, "%s", path);
        for (int need_y = 0; need_y < 2; need_y++) {
            struct dataset *ds = NULL;
            char err[512] = "";
            int rc = dataset_open(&ds, &src, need_y, 0, err, sizeof err);
            if (rc == 0 || !err[0]) fail_msg("%s: dataset_open: rc %d, '%s'", e->d_name, rc, err);
            assert_null(ds);
        }

        char cmd[1400], out[4096];
        snprintf(cmd, sizeof cmd, "timeout -s KILL 60 '%s' dataset info '%s' 2>&1", MLQ, path);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = '\0';
        int st = pclose(p);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 || !strstr(out, "mlq dataset info: "))
            fail_msg("%s: mlq dataset info: status %d: %s", e->d_name, st, out);
    }
    closedir(d);
    assert_true(files >= 1);
    testutil_rmtree(dir);
    free(dir);
}

/* fuzz_checkpoint, within seconds of version 2: a header length reaching
 * past the blob let the tensor table be read past its end (161 bytes, the
 * CRC made to match). Placed against an unreadable page, an over-read
 * faults here in any build, not only under AddressSanitizer. */
static void test_checkpoint_header_past_blob(void **state)
{
    (void)state;
    FILE *f = fopen(CORPUS "/fuzz_checkpoint/found-header-past-blob", "rb");
    assert_non_null(f);
    unsigned char input[4096];
    size_t n = fread(input, 1, sizeof input, f);
    fclose(f);
    assert_true(n > 16 && input[0] == 1); /* flag 1: fuzz_checkpoint rewrote the CRC */
    size_t len = n - 1;
    uLong crc = crc32(0L, input + 1, (uInt)(len - 4));
    for (int i = 0; i < 4; i++)
        input[1 + len - 4 + i] = (unsigned char)(crc >> (8 * i));

    long page = sysconf(_SC_PAGESIZE);
    unsigned char *map =
        mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    unsigned char *blob = map + page - len;
    memcpy(blob, input + 1, len);
    struct checkpoint c;
    char err[256] = "";
    assert_int_equal(checkpoint_decode(blob, len, &c, err, sizeof err), -EINVAL);
    if (!strstr(err, "malformed")) fail_msg("%s", err);
    assert_null(c.tensors);
    munmap(map, 2 * (size_t)page);
}

/* A crafted v2 checkpoint (fuzz_checkpoint's invariant on the tensor table):
 * a (2^32, 2^32) tensor's size wrapped to 0 floats and passed the bounds
 * check against a 27-float buffer. */
static void test_checkpoint_shape_product_wraps(void **state)
{
    (void)state;
    FILE *f = fopen(CORPUS "/fuzz_checkpoint/found-shape-product-wraps", "rb");
    assert_non_null(f);
    unsigned char input[4096];
    size_t n = fread(input, 1, sizeof input, f);
    fclose(f);
    assert_true(n > 16 && input[0] == 0); /* flag 0: the blob as it is, CRC included */
    struct checkpoint c;
    char err[256] = "";
    int rc = checkpoint_decode(input + 1, n - 1, &c, err, sizeof err);
    if (rc != -EINVAL || !strstr(err, "malformed"))
        fail_msg("rc %d: %s", rc, rc ? err : "accepted a (2^32, 2^32) tensor in 27 floats");
    assert_null(c.tensors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libhdf5_crashers_are_refused),
        cmocka_unit_test(test_checkpoint_header_past_blob),
        cmocka_unit_test(test_checkpoint_shape_product_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
