/* Helpers shared by tests: temp dirs, small HDF5 datasets, running programs. */
#ifndef MLQ_TESTUTIL_H
#define MLQ_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh directory under $TMPDIR (or /tmp); caller frees the path
 * and removes the tree with testutil_rmtree. */
char *testutil_tmpdir(const char *prefix);
void testutil_rmtree(const char *path);

/* Writes X (n, d) float32 and y (n) int32 to an HDF5 file. Returns 0 or -1. */
int testutil_write_h5(const char *path, const float *x, const int32_t *y, int64_t n, int64_t d);
/* The same with X (n, dims[0..rank)), rank 1 to 3: images are (n, h, w) or
 * (n, c, h, w). */
int testutil_write_h5_shaped(const char *path, const float *x, const int32_t *y, int64_t n,
                             int rank, const int64_t *dims);

/* A separable toy classification set: n rows, d inputs, k classes; class c
 * has its mean at +3 on input c % d. Deterministic in seed. Caller frees. */
void testutil_blobs(int64_t n, int64_t d, int k, uint64_t seed, float **x, int32_t **y);

/* Writes a blobs dataset straight to path. Returns 0 or -1. */
int testutil_write_blobs(const char *path, int64_t n, int64_t d, int k, uint64_t seed);

/* Fills buf with len bytes of the same xorshift noise every time. */
void testutil_noise(unsigned char *buf, size_t len);

/* Writes text to a file. Returns 0 or -1. */
int testutil_write_file(const char *path, const char *text);

#endif
