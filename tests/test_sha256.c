/* common/sha256.h: the FIPS 180-2 test vectors, a hash fed in uneven pieces
 * equals the one-shot hash, and sha256_file agrees with sha256sum on a file
 * of a few chunks, and a follower hashing behind a writer gives the same
 * digest as the one-shot hash. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "sha256.h"
#include "testutil.h"

static void hex_of(const void *buf, size_t len, char hex[SHA256_HEX_LEN + 1])
{
    unsigned char d[SHA256_BYTES];
    assert_int_equal(sha256_buf(buf, len, d), 0);
    sha256_hex(d, hex);
}

static void test_vectors(void **state)
{
    (void)state;
    char hex[SHA256_HEX_LEN + 1];
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_true(sha256_hex_valid(hex));
    hex[5] = 'A';
    assert_false(sha256_hex_valid(hex));
    hex[5] = '0';
    assert_false(sha256_hex_valid("abc"));
    char longer[SHA256_HEX_LEN + 2];
    snprintf(longer, sizeof longer, "%s0", hex);
    assert_false(sha256_hex_valid(longer));
    assert_false(sha256_hex_valid(NULL));
}

static void test_pieces_and_file(void **state)
{
    (void)state;
    enum { N = 3 * 1048576 + 12345 };
    unsigned char *buf = malloc(N);
    assert_non_null(buf);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    char whole[SHA256_HEX_LEN + 1], pieces[SHA256_HEX_LEN + 1];
    hex_of(buf, N, whole);
    struct sha256 h;
    assert_int_equal(sha256_init(&h), 0);
    for (size_t o = 0, step = 1; o < N; o += step, step = step * 3 + 1)
        assert_int_equal(sha256_update(&h, buf + o, o + step > N ? N - o : step), 0);
    unsigned char d[SHA256_BYTES];
    assert_int_equal(sha256_final(&h, d), 0);
    assert_null(h.ctx);
    sha256_hex(d, pieces);
    assert_string_equal(whole, pieces);
    sha256_clear(&h); /* harmless after final */
    assert_int_equal(sha256_init(&h), 0);
    sha256_clear(&h); /* an abandoned hash is released */

    char *dir = testutil_tmpdir("sha256");
    assert_non_null(dir);
    char path[512], cmd[1200], err[512] = "";
    snprintf(path, sizeof path, "%s/data.bin", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, N, f), N);
    assert_int_equal(fclose(f), 0);
    char hex[SHA256_HEX_LEN + 1];
    long long size = 0;
    assert_int_equal(sha256_file(path, hex, &size, err, sizeof err), 0);
    assert_int_equal(size, N);
    assert_string_equal(hex, whole);
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof line, p));
    pclose(p);
    assert_memory_equal(line, hex, SHA256_HEX_LEN);

    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(sha256_file(path, hex, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(sha256_file(dir, hex, NULL, err, sizeof err), -EISDIR);
    testutil_rmtree(dir);
    free(dir);
    free(buf);
}

/* The writer writes in uneven pieces and tells the follower after each;
 * the follower's digest is the whole buffer's. It refuses a size beyond
 * what it was told, fails on bytes that were never written, and stops
 * mid-file without a digest. */
static void test_follower(void **state)
{
    (void)state;
    enum { N = 5 * 1048576 + 777 };
    unsigned char *buf = malloc(N);
    assert_non_null(buf);
    for (size_t i = 0; i < N; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    char whole[SHA256_HEX_LEN + 1], followed[SHA256_HEX_LEN + 1];
    hex_of(buf, N, whole);

    char *dir = testutil_tmpdir("sha256-follow");
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/part", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    struct sha256_follower *f;
    assert_int_equal(sha256_follow(&f, fd), 0);
    for (size_t o = 0, step = 1000; o < N; o += step, step = step * 2 + 333) {
        size_t n = o + step > N ? N - o : step;
        assert_int_equal(pwrite(fd, buf + o, n, (off_t)o), (ssize_t)n);
        sha256_follow_to(f, (int64_t)(o + n));
    }
    close(fd); /* the follower holds its own descriptor */
    unsigned char d[SHA256_BYTES];
    assert_int_equal(sha256_follow_final(f, N, d), 0);
    sha256_hex(d, followed);
    assert_string_equal(followed, whole);

    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(sha256_follow(&f, fd), 0);
    sha256_follow_to(f, 1000);
    assert_int_equal(sha256_follow_final(f, 2000, d), -EINVAL); /* told only 1000 */
    assert_int_equal(sha256_follow(&f, fd), 0);
    sha256_follow_to(f, (int64_t)N + 4096); /* past the end of the file */
    assert_int_equal(sha256_follow_final(f, (int64_t)N + 4096, d), -EIO);
    assert_int_equal(sha256_follow(&f, fd), 0);
    sha256_follow_to(f, N);
    sha256_follow_stop(f); /* mid-way or done: no digest, nothing leaks */
    sha256_follow_stop(NULL);
    close(fd);
    testutil_rmtree(dir);
    free(dir);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_pieces_and_file),
        cmocka_unit_test(test_follower),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
