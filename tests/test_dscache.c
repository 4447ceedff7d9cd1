/* The trainer's dataset cache: lookup (verified, touched), LRU eviction
 * that spares datasets in use, the size-limit failure, a full disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dscache.h"
#include "sha256.h"
#include "testutil.h"

#define MB (INT64_C(1) << 20)

struct fixture {
    char *dir;
    struct dscache c;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = testutil_tmpdir("dscache");
    char cache[512], err[256];
    snprintf(cache, sizeof cache, "%s/a/cache", f->dir);
    if (dscache_open(&f->c, cache, 3, err, sizeof err) != 0) fail_msg("open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    testutil_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Writes an object of n bytes (all b) with its hash as name and the given
 * age in seconds; sha receives the name. */
static void put_object(struct fixture *f, int64_t n, int b, int age, char sha[65])
{
    unsigned char *buf = malloc((size_t)n), d[SHA256_BYTES];
    memset(buf, b, (size_t)n);
    sha256_buf(buf, (size_t)n, d);
    sha256_hex(d, sha);
    char path[DSCACHE_PATH_MAX];
    assert_int_equal(dscache_object_path(&f->c, sha, path), 0);
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(buf, 1, (size_t)n, out), (size_t)n);
    fclose(out);
    free(buf);
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= age;
    t[1] = t[0];
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static bool exists(struct fixture *f, const char *sha)
{
    char path[DSCACHE_PATH_MAX];
    dscache_object_path(&f->c, sha, path);
    return access(path, F_OK) == 0;
}

static void test_lookup_verifies_and_touches(void **state)
{
    struct fixture *f = *state;
    char a[65], path[DSCACHE_PATH_MAX], err[512] = "";
    int64_t size = 0;
    put_object(f, 1000, 'a', 100, a);
    struct stat before, after;
    dscache_object_path(&f->c, a, path);
    stat(path, &before);
    assert_int_equal(dscache_lookup(&f->c, a, true, path, &size, err, sizeof err), 1);
    assert_int_equal(size, 1000);
    stat(path, &after);
    assert_true(after.st_mtime > before.st_mtime + 50); /* a use moves it to the front */

    /* Absent: 0. A bad name never becomes a path. */
    char other[65];
    memset(other, 'b', 64);
    other[64] = '\0';
    assert_int_equal(dscache_lookup(&f->c, other, true, path, &size, err, sizeof err), 0);
    assert_int_equal(dscache_lookup(&f->c, "../x", true, path, &size, err, sizeof err), -EINVAL);

    /* A flipped byte: corrupt, removed, reported as absent (to be fetched). */
    dscache_object_path(&f->c, a, path);
    chmod(path, 0644);
    FILE *io = fopen(path, "r+b");
    assert_non_null(io);
    fseek(io, 500, SEEK_SET);
    fputc('x', io);
    fclose(io);
    assert_int_equal(dscache_lookup(&f->c, a, false, path, &size, err, sizeof err), 1);
    assert_int_equal(dscache_lookup(&f->c, a, true, path, &size, err, sizeof err), 0);
    assert_false(exists(f, a));
}

static void test_make_room_evicts_lru_not_in_use(void **state)
{
    struct fixture *f = *state;
    char oldest[65], old[65], newer[65], want[65], err[512] = "";
    put_object(f, MB, 1, 300, oldest);
    put_object(f, MB, 2, 200, old);
    put_object(f, MB, 3, 100, newer);
    memset(want, 'c', 64);
    want[64] = '\0';
    /* The oldest is in use (a job reads it): the next oldest goes instead. */
    assert_int_equal(dscache_use(&f->c, oldest), 0);
    if (dscache_make_room(&f->c, want, MB, 0, err, sizeof err) != 0) fail_msg("%s", err);
    assert_true(exists(f, oldest));
    assert_false(exists(f, old));
    assert_true(exists(f, newer));
    int64_t used = 0;
    assert_int_equal(dscache_usage(&f->c, &used), 0);
    assert_int_equal(used, 2 * MB);

    /* Everything left in use: no room, and the message says why. */
    assert_int_equal(dscache_use(&f->c, newer), 0);
    assert_int_equal(dscache_make_room(&f->c, want, 2 * MB, 0, err, sizeof err), -ENOSPC);
    assert_non_null(strstr(err, "in use"));
    assert_true(exists(f, oldest) && exists(f, newer));
    dscache_release(&f->c, newer);
    dscache_release(&f->c, oldest);
    assert_false(dscache_in_use(&f->c, oldest));
    assert_int_equal(dscache_make_room(&f->c, want, 2 * MB, 0, err, sizeof err), 0);
    assert_false(exists(f, oldest)); /* the older of the two */
    assert_true(exists(f, newer));
}

static void test_larger_than_the_cache(void **state)
{
    struct fixture *f = *state;
    char a[65], want[65], err[512] = "";
    put_object(f, MB, 1, 10, a);
    memset(want, 'd', 64);
    want[64] = '\0';
    assert_int_equal(dscache_make_room(&f->c, want, 3 * MB + 1, 0, err, sizeof err), -EFBIG);
    char expect[300];
    snprintf(expect, sizeof expect,
             "dataset %s is 4 MB, more than this trainer's dataset cache holds "
             "(trainer.dataset_cache_mb = 3)",
             want);
    assert_string_equal(err, expect);
    assert_true(exists(f, a)); /* nothing evicted for a hopeless fetch */
}

static int64_t fake_free;
static int fake_free_bytes(const char *dir, int64_t *out)
{
    (void)dir;
    *out = fake_free;
    return 0;
}

/* The limit allows it but the disk does not: old objects go first, then
 * a clear failure. A part's own bytes count as already there. */
static void test_full_disk(void **state)
{
    struct fixture *f = *state;
    char a[65], want[65], err[512] = "";
    put_object(f, MB, 1, 10, a);
    memset(want, 'e', 64);
    want[64] = '\0';
    f->c.free_bytes = fake_free_bytes;
    fake_free = MB / 2;
    assert_int_equal(dscache_make_room(&f->c, want, MB, MB / 2, err, sizeof err), 0);
    assert_true(exists(f, a));
    assert_int_equal(dscache_make_room(&f->c, want, MB, 0, err, sizeof err), 0);
    assert_false(exists(f, a)); /* evicted: its MiB made the room */
    fake_free = 0;
    assert_int_equal(dscache_make_room(&f->c, want, MB, 0, err, sizeof err), -ENOSPC);
    assert_non_null(strstr(err, "MB free"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lookup_verifies_and_touches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_make_room_evicts_lru_not_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_larger_than_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
