/* Inputs the fuzz targets found, replayed in the normal suite. The files of
 * tests/fuzz/corpus/libhdf5-crashes crash libhdf5 1.10.8 itself
 * (H5F__accum_read copies from NULL while loading metadata): the trainer's
 * reader and `mlq dataset info` must refuse each with a message and go on,
 * the crash confined to a reader process (docs/security.md). */
#include <dirent.h>
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

#include "dataset.h"
#include "testutil.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"
#define CRASHERS MLQ_SOURCE_DIR "/tests/fuzz/corpus/libhdf5-crashes"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libhdf5_crashers_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
