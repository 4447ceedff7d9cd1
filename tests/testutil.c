#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

char *testutil_tmpdir(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    char *path;
    if (asprintf(&path, "%s/mlq-%s-XXXXXX", base && *base ? base : "/tmp", prefix) < 0) return NULL;
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void testutil_rmtree(const char *path)
{
    if (path) nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int write_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                         const void *data)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int testutil_write_h5(const char *path, const float *x, const int32_t *y, int64_t n, int64_t d)
{
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return -1;
    hsize_t xdims[2] = {(hsize_t)n, (hsize_t)d}, ydims[1] = {(hsize_t)n};
    int rc = write_dataset(file, "X", H5T_NATIVE_FLOAT, 2, xdims, x);
    if (!rc && y) rc = write_dataset(file, "y", H5T_NATIVE_INT32, 1, ydims, y);
    H5Fclose(file);
    return rc;
}

int testutil_write_h5_shaped(const char *path, const float *x, const int32_t *y, int64_t n,
                             int rank, const int64_t *dims)
{
    hsize_t xdims[4] = {(hsize_t)n}, ydims[1] = {(hsize_t)n};
    if (rank < 1 || rank > 3) return -1;
    for (int i = 0; i < rank; i++)
        xdims[i + 1] = (hsize_t)dims[i];
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return -1;
    int rc = write_dataset(file, "X", H5T_NATIVE_FLOAT, rank + 1, xdims, x);
    if (!rc && y) rc = write_dataset(file, "y", H5T_NATIVE_INT32, 1, ydims, y);
    H5Fclose(file);
    return rc;
}

/* splitmix64: enough randomness for test data. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static float gauss(uint64_t *s)
{
    double u1 = ((double)(mix(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(mix(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void testutil_blobs(int64_t n, int64_t d, int k, uint64_t seed, float **x, int32_t **y)
{
    *x = malloc(sizeof(float) * (size_t)(n * d));
    *y = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(mix(&s) % (uint64_t)k);
        (*y)[i] = c;
        for (int64_t j = 0; j < d; j++)
            (*x)[i * d + j] = gauss(&s) + (j == c % d ? 3.0f : 0.0f);
    }
}

int testutil_write_blobs(const char *path, int64_t n, int64_t d, int k, uint64_t seed)
{
    float *x;
    int32_t *y;
    testutil_blobs(n, d, k, seed, &x, &y);
    int rc = testutil_write_h5(path, x, y, n, d);
    free(x);
    free(y);
    return rc;
}

int testutil_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

void testutil_noise(unsigned char *buf, size_t len)
{
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}
