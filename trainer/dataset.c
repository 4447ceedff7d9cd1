/* Datasets in HDF5: open and check, then hand out batches in a seeded order.
 *
 * Rows live in one buffer in their stored dtype and are converted to float
 * per batch. In memory, the buffer holds every row; streamed, it holds one
 * "group": a few chunks of consecutive rows, read by hyperslab. An epoch
 * visits the chunks in a shuffled order, G chunks per group, and the rows of
 * each group in a shuffled order. Both orders are drawn from (seed, epoch,
 * stream) alone, so any position of any epoch can be reached again.
 *
 * Names: N rows, D inputs per row (X flattened), K targets per row. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>
#include <lzf.h>

#include "child.h"
#include "dataset.h"
#include "errmsg.h"
#include "log.h"

#define DEFAULT_BUDGET (INT64_C(1) << 30)
#define GROUP_MAX_BYTES (INT64_C(64) << 20) /* one streamed group */
#define CHUNK_MAX_BYTES (INT64_C(4) << 20)  /* one hyperslab read */
#define D_MAX (INT64_C(1) << 28)            /* inputs per row: 1 GiB of floats */
#define K_MAX (INT64_C(1) << 20)            /* targets per row */
#define SCAN_ROWS 65536                     /* rows of y per read while scanning */

struct dataset {
    struct dataset_info info;
    char path[SPEC_PATH_MAX];
    char xname[SPEC_NAME_MAX];
    char yname[SPEC_NAME_MAX];
    bool scale;
    bool need_y;
    bool checked; /* the metadata passed every check; a reopening only compares */
    bool shared;  /* reads run in reader processes into shared buffers */

    hid_t file, xset, yset; /* owned by the root; a view borrows its root's */
    struct dataset *root;   /* NULL for an opened file */
    int64_t base;           /* file row of this dataset's row 0 */
    hsize_t x_fdims[4];     /* X's dims in the file */
    hsize_t y_fdims[2];
    int y_rank;
    hid_t x_memtype;
    size_t x_elsize;
    int64_t x_row_bytes; /* D * x_elsize */
    int64_t row_bytes;   /* of X and y together, for the budget */
    int64_t budget;
    int64_t file_bytes; /* bounds what the file can really hold */

    /* Rows in memory: all of them, or the current group. */
    uint8_t *x;       /* (cap_rows, D) stored dtype */
    int32_t *y_class; /* (cap_rows) */
    float *y;         /* (cap_rows, K) */
    bool owns_buf;
    int64_t cap_rows;

    /* Layout: N rows in n_chunks chunks of chunk_rows (the last may be
     * shorter), G = group_chunks chunks per group. In memory: one chunk. */
    int64_t chunk_rows, n_chunks, group_chunks, n_groups;
    uint32_t *chunk_order; /* (n_chunks) this epoch's chunk order */
    uint32_t *row_order;   /* (cap_rows) this group's row order */

    /* Epoch state. */
    bool started;
    uint64_t seed;
    int64_t epoch;
    bool shuffle;
    int64_t group;      /* current group, n_groups at the end */
    int64_t loaded;     /* group whose rows are in the buffer, -1 none */
    int64_t group_rows; /* rows in the current group */
    int64_t pos;        /* next index into row_order */

    /* dataset_read_rows on a streamed dataset. */
    uint8_t *sx;
    int32_t *syc;
    float *sy;
    int64_t s_rows;
};

static bool isolate_reads = true;

void dataset_set_isolated(bool on)
{
    isolate_reads = on;
}

/* A reader that neither runs nor reads for this long is stuck (common/child.h)
 * and is killed; its read is tried again, READER_ATTEMPTS times in all, since
 * a reader forked at a bad moment is stuck by chance. */
#define READER_STALL_S 30.0
#define READER_ATTEMPTS 3
static double reader_stall_s = READER_STALL_S;
static int readers_to_hang; /* test seam: so many readers stop before reading */

void dataset_set_reader_watch(double stall_s, int hang_next)
{
    reader_stall_s = stall_s > 0 ? stall_s : READER_STALL_S;
    readers_to_hang = hang_next;
}

/* ---- buffers a reader fills ---- */

/* Shared mappings when reads are isolated; their length sits in a header. */
#define SHARED_HEAD 64

static void *buf_alloc(const struct dataset *ds, size_t bytes)
{
    if (!ds->shared) return malloc(bytes);
    size_t total = bytes + SHARED_HEAD;
    char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    memcpy(p, &total, sizeof total);
    return p + SHARED_HEAD;
}

static void buf_free(const struct dataset *ds, void *q)
{
    if (!ds->shared || !q) {
        free(q);
        return;
    }
    char *p = (char *)q - SHARED_HEAD;
    size_t total;
    memcpy(&total, p, sizeof total);
    munmap(p, total);
}

/* ---- order: one RNG stream per (seed, epoch, purpose) ---- */

static void perm_fill(uint32_t *idx, int64_t n, bool shuffle, uint64_t seed, int64_t epoch,
                      uint64_t stream)
{
    for (int64_t i = 0; i < n; i++)
        idx[i] = (uint32_t)i;
    if (!shuffle) return;
    struct rng r;
    rng_seed_stream(&r, seed, (uint64_t)epoch, stream);
    rng_shuffle(&r, idx, (uint64_t)n);
}

/* ---- HDF5 reads ---- */

/* Reads rows [row, row + count) of a dataset whose dims are dims[0..rank)
 * into dst, which holds elems elements of memtype: the memory type is always
 * the buffer's own, and the selection must be exactly elems long. */
static int read_slab(hid_t dset, int rank, const hsize_t *dims, int64_t row, int64_t count,
                     hid_t memtype, void *dst, int64_t elems)
{
    hsize_t start[4] = {0}, cnt[4] = {0};
    start[0] = (hsize_t)row;
    cnt[0] = (hsize_t)count;
    for (int i = 1; i < rank; i++)
        cnt[i] = dims[i];
    hid_t fs = H5Dget_space(dset);
    if (fs < 0) return -EIO;
    /* A memory space of the selection's own shape keeps HDF5 on its fast
     * chunk-by-chunk path; a flat one makes it map element by element. */
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    int rc = -EIO;
    if (ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0 &&
        H5Sget_select_npoints(fs) == elems && H5Sget_select_npoints(ms) == elems &&
        H5Dread(dset, memtype, ms, fs, H5P_DEFAULT, dst) >= 0)
        rc = 0;
    if (ms >= 0) H5Sclose(ms);
    H5Sclose(fs);
    return rc;
}

static int read_x(struct dataset *ds, int64_t row, int64_t count, uint8_t *dst, char *err,
                  size_t errlen)
{
    const struct dataset *r = ds->root ? ds->root : ds;
    if (read_slab(r->xset, ds->info.x_rank, ds->x_fdims, ds->base + row, count, r->x_memtype, dst,
                  count * ds->info.d) < 0)
        return errmsg(err, errlen, -EIO, "%s: cannot read rows %lld..%lld of dataset '%s'",
                      ds->path, (long long)(ds->base + row), (long long)(ds->base + row + count),
                      ds->xname);
    return 0;
}

/* Checks stored float rows for NaN, Inf, and float64 values beyond float32. */
static int check_finite(const struct dataset *ds, const uint8_t *x, int64_t rows, int64_t row0,
                        char *err, size_t errlen)
{
    int64_t n = rows * ds->info.d;
    int64_t bad = -1;
    double v = 0;
    if (ds->info.x_dtype == DTYPE_FLOAT32) {
        const float *f = (const float *)x;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(f[i])) {
                bad = i;
                v = f[i];
                break;
            }
    } else if (ds->info.x_dtype == DTYPE_FLOAT64) {
        const double *f = (const double *)x;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(f[i]) || fabs(f[i]) > FLT_MAX) {
                bad = i;
                v = f[i];
                break;
            }
    }
    if (bad < 0) return 0;
    long long file_row = (long long)(ds->base + row0 + bad / ds->info.d);
    if (isfinite(v))
        return errmsg(err, errlen, -EINVAL,
                      "%s: dataset '%s' has %g at row %lld, column %lld, beyond float32's range",
                      ds->path, ds->xname, v, file_row, (long long)(bad % ds->info.d));
    return errmsg(err, errlen, -EINVAL, "%s: dataset '%s' has %s at row %lld, column %lld",
                  ds->path, ds->xname, isnan(v) ? "NaN" : "Inf", file_row,
                  (long long)(bad % ds->info.d));
}

/* Reads y rows into class ids (checked: >= 0, fits int32) or float targets
 * (checked: finite), in pieces so that any integer type converts safely. */
static int read_y(struct dataset *ds, int64_t row, int64_t count, int32_t *yc, float *yf, char *err,
                  size_t errlen)
{
    const struct dataset *r = ds->root ? ds->root : ds;
    int64_t k = ds->info.k;
    if (!ds->info.y_is_class) {
        if (read_slab(r->yset, ds->y_rank, ds->y_fdims, ds->base + row, count, H5T_NATIVE_FLOAT, yf,
                      count * k) < 0)
            goto io;
        for (int64_t i = 0; i < count * k; i++)
            if (!isfinite(yf[i]))
                return errmsg(err, errlen, -EINVAL, "%s: dataset '%s' has %s at row %lld", ds->path,
                              ds->yname, isnan(yf[i]) ? "NaN" : "Inf",
                              (long long)(ds->base + row + i / k));
        return 0;
    }
    /* k ids per row: one class, or a next-token target per step (N, T). */
    int64_t piece = count < SCAN_ROWS ? count : SCAN_ROWS;
    int64_t *tmp = malloc((size_t)(piece * k) * sizeof *tmp);
    if (!tmp) return errmsg(err, errlen, -ENOMEM, "%s: out of memory reading class ids", ds->path);
    for (int64_t done = 0; done < count; done += piece) {
        int64_t m = count - done < piece ? count - done : piece;
        if (read_slab(r->yset, ds->y_rank, ds->y_fdims, ds->base + row + done, m, H5T_NATIVE_INT64,
                      tmp, m * k) < 0) {
            free(tmp);
            goto io;
        }
        for (int64_t i = 0; i < m * k; i++) {
            if (tmp[i] < 0 || tmp[i] > INT32_MAX) {
                long long v = (long long)tmp[i];
                free(tmp);
                return errmsg(err, errlen, -EINVAL,
                              "%s: dataset '%s' has class id %lld at row %lld (%s); class "
                              "ids must be in [0, classes)",
                              ds->path, ds->yname, v, (long long)(ds->base + row + done + i / k),
                              v < 0 ? "negative" : "too large");
            }
            yc[done * k + i] = (int32_t)tmp[i];
        }
    }
    free(tmp);
    return 0;
io:
    return errmsg(err, errlen, -EIO, "%s: cannot read rows %lld..%lld of dataset '%s'", ds->path,
                  (long long)(ds->base + row), (long long)(ds->base + row + count), ds->yname);
}

/* ---- opening ---- */

/* Deflate cannot compress more than 1032:1; a filtered dataset declaring more
 * data than that per stored byte is damaged or built to make us spin. */
#define MAX_COMPRESSION 1100

/* h5py's lzf filter, decode only: h5py registers it in Python processes
 * alone, and no Debian package gives it to C programs. The number and the
 * meaning of cd_values (cd_values[2]: the chunk's size in bytes) are
 * h5py's (h5py/lzf/lzf_filter.c). */
#define LZF_FILTER 32000
#define LZF_MAX_CHUNK (UINT64_C(1) << 32) /* HDF5's largest chunk */

static size_t lzf_filter(unsigned flags, size_t n_cd, const unsigned cd[], size_t nbytes,
                         size_t *buf_size, void **buf)
{
    if (!(flags & H5Z_FLAG_REVERSE)) return 0; /* mlq never writes lzf */
    if (nbytes > UINT32_MAX) return 0;
    /* The chunk's size when h5py recorded it: then the output must be
     * exactly that long, or libhdf5 would read past it (docs/security.md). */
    size_t want = n_cd >= 3 ? cd[2] : 0;
    size_t cap = want ? want : 2 * nbytes + 64;
    for (;;) {
        void *out = malloc(cap);
        if (!out) return 0;
        unsigned got = lzf_decompress(*buf, (unsigned)nbytes, out, (unsigned)cap);
        if (got > 0 && (!want || got == want)) {
            free(*buf);
            *buf = out;
            *buf_size = cap;
            return got;
        }
        int e = errno;
        free(out);
        if (got > 0 || want || e != E2BIG || cap >= LZF_MAX_CHUNK / 2) return 0;
        cap *= 2;
    }
}

static const H5Z_class2_t lzf_class = {
    .version = H5Z_CLASS_T_VERS,
    .id = LZF_FILTER,
    .encoder_present = 0,
    .decoder_present = 1,
    .name = "lzf (h5py), decode only",
    .filter = lzf_filter,
};

/* Makes the filters mlq decodes itself available to libhdf5, once. */
static void register_filters(void)
{
    static bool done;
    if (done) return;
    done = true;
    if (H5Zfilter_avail(LZF_FILTER) <= 0) H5Zregister(&lzf_class);
}

/* Copies a name read from the file (untrusted) keeping printable ASCII only. */
static void safe_name(char *dst, size_t len, const char *src)
{
    size_t j = 0;
    for (size_t i = 0; src[i] && j + 1 < len; i++)
        dst[j++] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[j] = '\0';
}

int dataset_check_stored(hid_t dset, const char *path, const char *name, int64_t file_bytes,
                         char *err, size_t errlen)
{
    register_filters();
    int rc = 0;
    hid_t t = H5Dget_type(dset), sp = H5Dget_space(dset), dcpl = H5Dget_create_plist(dset);
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK], cdims[H5S_MAX_RANK];
    size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (tsize == 0 || rank < 0 || rank > H5S_MAX_RANK || dcpl < 0 ||
        H5Sget_simple_extent_dims(sp, dims, maxdims) < 0) {
        rc = errmsg(err, errlen, -EIO, "%s: cannot read the layout of '%s'", path, name);
        goto out;
    }
    uint64_t elems = 1, bytes;
    bool over = false;
    for (int i = 0; i < rank; i++)
        over |= __builtin_mul_overflow(elems, (uint64_t)dims[i], &elems);
    over |= __builtin_mul_overflow(elems, (uint64_t)tsize, &bytes);
    if (over || bytes > (uint64_t)INT64_MAX) {
        rc = errmsg(err, errlen, -EFBIG, "%s: dataset '%s' declares more data than a file can hold",
                    path, name);
        goto out;
    }
    if (H5Pget_external_count(dcpl) > 0) {
        rc = errmsg(err, errlen, -EINVAL,
                    "%s: dataset '%s' keeps its data in external files; mlq reads only data "
                    "stored inside the HDF5 file",
                    path, name);
        goto out;
    }
    int nfilters = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nfilters; i++) {
        unsigned flags = 0, config = 0;
        size_t n_cd = 0;
        char raw[64] = "", fname[64];
        H5Z_filter_t id =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &n_cd, NULL, sizeof raw, raw, &config);
        if (id < 0) {
            rc = errmsg(err, errlen, -EIO, "%s: cannot read the filters of '%s'", path, name);
            goto out;
        }
        if (H5Zfilter_avail(id) > 0) continue;
        safe_name(fname, sizeof fname, raw);
        rc = errmsg(err, errlen, -ENOTSUP,
                    "%s: dataset '%s' is compressed with HDF5 filter %d%s%s%s, which this HDF5 "
                    "library cannot decode; rewrite it with gzip compression (h5py: "
                    "compression=\"gzip\")",
                    path, name, (int)id, fname[0] ? " (" : "", fname, fname[0] ? ")" : "");
        goto out;
    }
    /* Every declared element must be stored: fill values are not data, and
     * a tiny file declaring 2^50 rows must cost nothing to refuse. */
    uint64_t stored = 0;
    switch (H5Pget_layout(dcpl)) {
    case H5D_COMPACT:
        /* libhdf5 1.10 does not check this itself and then reads past the
         * end of its own buffer (docs/security.md). */
        stored = H5Dget_storage_size(dset);
        if (stored != bytes)
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data but its compact storage "
                        "holds %llu (damaged or hostile file)",
                        path, name, (unsigned long long)bytes, (unsigned long long)stored);
        break;
    case H5D_CONTIGUOUS: {
        haddr_t off = H5Dget_offset(dset);
        stored = H5Dget_storage_size(dset);
        if (bytes == 0) break;
        if (off == HADDR_UNDEF)
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data but none was ever written; "
                        "mlq reads written data, not fill values",
                        path, name, (unsigned long long)bytes);
        else if (stored != bytes || off > (uint64_t)file_bytes ||
                 bytes > (uint64_t)file_bytes - off)
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data but stores %llu at offset "
                        "%llu of a %lld-byte file (damaged or hostile file)",
                        path, name, (unsigned long long)bytes, (unsigned long long)stored,
                        (unsigned long long)off, (long long)file_bytes);
        break;
    }
    case H5D_CHUNKED: {
        if (H5Pget_chunk(dcpl, rank, cdims) != rank) {
            rc = errmsg(err, errlen, -EIO, "%s: cannot read the chunks of '%s'", path, name);
            break;
        }
        /* HDF5 refuses to create a chunk longer than a fixed dimension, and
         * 1.10 reads past its chunk buffer when a file has one anyway. */
        for (int i = 0; i < rank; i++)
            if (cdims[i] == 0 || (maxdims[i] != H5S_UNLIMITED && cdims[i] > maxdims[i])) {
                rc = errmsg(err, errlen, -EINVAL,
                            "%s: dataset '%s' has chunks of %llu along dimension %d, which holds "
                            "at most %llu (damaged or hostile file)",
                            path, name, (unsigned long long)cdims[i], i,
                            (unsigned long long)maxdims[i]);
                goto out;
            }
        uint64_t want = 1;
        for (int i = 0; i < rank && !over; i++)
            over = __builtin_mul_overflow(want, (dims[i] + cdims[i] - 1) / cdims[i], &want);
        /* A stored chunk takes at least a byte, and counting them walks the
         * chunk index: bound the count by the file before walking. */
        if (over || want > (uint64_t)file_bytes) {
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data in more chunks than its "
                        "%lld-byte file can store; mlq reads written data, not fill values",
                        path, name, (unsigned long long)bytes, (long long)file_bytes);
            break;
        }
        hsize_t have = 0;
        if (want > 0 && H5Dget_num_chunks(dset, sp, &have) < 0) {
            rc = errmsg(err, errlen, -EIO, "%s: cannot read the chunk index of '%s'", path, name);
            break;
        }
        if (have != want) {
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data in %llu chunks but %llu are "
                        "stored; mlq reads written data, not fill values",
                        path, name, (unsigned long long)bytes, (unsigned long long)want,
                        (unsigned long long)have);
            break;
        }
        stored = H5Dget_storage_size(dset);
        if (stored > (uint64_t)file_bytes || (nfilters == 0 && stored < bytes))
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data but its chunks claim %llu "
                        "bytes of a %lld-byte file (damaged or hostile file)",
                        path, name, (unsigned long long)bytes, (unsigned long long)stored,
                        (long long)file_bytes);
        else if (nfilters > 0 && bytes / MAX_COMPRESSION > stored)
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' declares %llu bytes of data in %llu compressed bytes, "
                        "beyond any real compression (damaged or hostile file)",
                        path, name, (unsigned long long)bytes, (unsigned long long)stored);
        break;
    }
    default:
        rc = errmsg(err, errlen, -EINVAL,
                    "%s: dataset '%s' is a virtual dataset (its data lives in other files); mlq "
                    "reads only data stored inside the HDF5 file",
                    path, name);
        break;
    }
out:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* IEEE binary32 or binary64, either byte order: 4 or 8, else 0. HDF5 holds
 * floats of any size and layout (float16, float128, ...); mlq reads these two. */
static int ieee_float_bytes(hid_t t)
{
    if (H5Tequal(t, H5T_IEEE_F32LE) > 0 || H5Tequal(t, H5T_IEEE_F32BE) > 0) return 4;
    if (H5Tequal(t, H5T_IEEE_F64LE) > 0 || H5Tequal(t, H5T_IEEE_F64BE) > 0) return 8;
    return 0;
}

/* An integer of 1, 2, 4 or 8 bytes using all its bits, as numpy writes them. */
static bool std_integer(hid_t t)
{
    size_t size = H5Tget_size(t);
    return H5Tget_class(t) == H5T_INTEGER && (size == 1 || size == 2 || size == 4 || size == 8) &&
           H5Tget_precision(t) == 8 * size && H5Tget_offset(t) == 0;
}

/* The stored type in words, for messages: "float16", "signed 2-byte integer". */
static void type_desc(hid_t t, char *buf, size_t len)
{
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (cls == H5T_FLOAT && ieee_float_bytes(t))
        snprintf(buf, len, "float%d", ieee_float_bytes(t) * 8);
    else if (cls == H5T_FLOAT && size == 2)
        snprintf(buf, len, "float16");
    else if (cls == H5T_FLOAT && size == 16)
        snprintf(buf, len, "float128 (16-byte long double)");
    else if (cls == H5T_FLOAT)
        snprintf(buf, len, "%zu-byte non-IEEE float", size);
    else if (cls == H5T_INTEGER && std_integer(t))
        snprintf(buf, len, "%s%zu-byte integer", H5Tget_sign(t) == H5T_SGN_2 ? "signed " : "",
                 size);
    else if (cls == H5T_INTEGER)
        snprintf(buf, len, "%zu-byte integer with %zu bits of precision", size,
                 H5Tget_precision(t));
    else
        snprintf(buf, len, "non-numeric");
}

/* An external link would make libhdf5 open another file, anywhere on the
 * trainer's host (docs/security.md): refused whenever one is traversed. */
static herr_t refuse_external_link(const char *parent_file, const char *parent_group,
                                   const char *child_file, const char *child_object,
                                   unsigned *acc_flags, hid_t fapl, void *op_data)
{
    (void)parent_file, (void)parent_group, (void)child_file, (void)child_object;
    (void)acc_flags, (void)fapl;
    *(bool *)op_data = true;
    return -1;
}

static hid_t open_dset(hid_t file, const char *path, const char *name, int *rc, char *err,
                       size_t errlen)
{
    bool external = false;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0 || H5Pset_elink_cb(dapl, refuse_external_link, &external) < 0) {
        if (dapl >= 0) H5Pclose(dapl);
        *rc = errmsg(err, errlen, -EIO, "%s: cannot set up the dataset access", path);
        return -1;
    }
    H5L_info_t info;
    hid_t d = -1;
    /* H5Lexists fails on a missing intermediate group: both mean "missing". */
    if (name[0] == '\0' || H5Lexists(file, name, dapl) <= 0) {
        if (external)
            *rc = errmsg(err, errlen, -EINVAL,
                         "%s: '%s' goes through an external link to another file; mlq reads "
                         "only data stored in the file itself",
                         path, name);
        else
            *rc = errmsg(err, errlen, -ENOENT, "%s: no dataset named '%s'", path, name);
    } else if (H5Lget_info(file, name, &info, dapl) >= 0 && info.type == H5L_TYPE_EXTERNAL) {
        *rc = errmsg(err, errlen, -EINVAL,
                     "%s: '%s' is an external link to another file; mlq reads only data stored "
                     "in the file itself",
                     path, name);
    } else if ((d = H5Dopen2(file, name, dapl)) < 0) {
        *rc = external ? errmsg(err, errlen, -EINVAL,
                                "%s: '%s' goes through an external link to another file; mlq "
                                "reads only data stored in the file itself",
                                path, name)
                       : errmsg(err, errlen, -EINVAL, "%s: '%s' is not a dataset (a group?)", path,
                                name);
    }
    H5Pclose(dapl);
    return d;
}

/* Reads a dataset's shape; refuses ranks outside [min_rank, max_rank]. */
static int get_dims(hid_t dset, const char *path, const char *name, int min_rank, int max_rank,
                    const char *expect, hsize_t *dims, int *rank, char *err, size_t errlen)
{
    hid_t sp = H5Dget_space(dset);
    if (sp < 0) return errmsg(err, errlen, -EIO, "%s: cannot read the shape of '%s'", path, name);
    int r = H5Sget_simple_extent_ndims(sp);
    if (r >= min_rank && r <= max_rank) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    if (r < 0) return errmsg(err, errlen, -EIO, "%s: cannot read the shape of '%s'", path, name);
    if (r < min_rank || r > max_rank)
        return errmsg(err, errlen, -EINVAL, "%s: dataset '%s' has rank %d; expected %s", path, name,
                      r, expect);
    *rank = r;
    return 0;
}

static void shape_str(char *buf, size_t len, const hsize_t *dims, int rank)
{
    size_t off = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < rank && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%llu", i ? ", " : "",
                                (unsigned long long)dims[i]);
    if (off < len) snprintf(buf + off, len - off, ")");
}

static int open_x(struct dataset *ds, const struct spec_dataset *src, char *err, size_t errlen)
{
    int rc = 0;
    ds->xset = open_dset(ds->file, ds->path, src->x, &rc, err, errlen);
    if (ds->xset < 0) return rc;
    rc = get_dims(ds->xset, ds->path, src->x, 2, 4, "2 (N, D), 3 (N, H, W) or 4 (N, H, W, C)",
                  ds->x_fdims, &ds->info.x_rank, err, errlen);
    if (rc < 0) return rc;

    hid_t t = H5Dget_type(ds->xset);
    if (t < 0)
        return errmsg(err, errlen, -EIO, "%s: cannot read the type of '%s'", ds->path, src->x);
    int fbytes = ieee_float_bytes(t);
    bool u8 = std_integer(t) && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
    char tname[64];
    type_desc(t, tname, sizeof tname);
    H5Tclose(t);
    if (u8) {
        ds->info.x_dtype = DTYPE_UINT8;
        ds->x_memtype = H5T_NATIVE_UINT8;
        ds->x_elsize = 1;
    } else if (fbytes == 4) {
        ds->info.x_dtype = DTYPE_FLOAT32;
        ds->x_memtype = H5T_NATIVE_FLOAT;
        ds->x_elsize = 4;
    } else if (fbytes == 8) {
        ds->info.x_dtype = DTYPE_FLOAT64;
        ds->x_memtype = H5T_NATIVE_DOUBLE;
        ds->x_elsize = 8;
    } else {
        return errmsg(err, errlen, -EINVAL,
                      "%s: dataset '%s' holds %s values; inputs must be uint8, float32 or float64 "
                      "(convert them, e.g. X.astype(\"float32\") with h5py)",
                      ds->path, src->x, tname);
    }

    char shape[128];
    shape_str(shape, sizeof shape, ds->x_fdims, ds->info.x_rank);
    int64_t d = 1;
    for (int i = 0; i < ds->info.x_rank; i++) {
        ds->info.x_dims[i] = (int64_t)ds->x_fdims[i];
        if (ds->x_fdims[i] > (hsize_t)INT64_MAX)
            return errmsg(err, errlen, -EFBIG, "%s: dataset '%s' shape %s is too large", ds->path,
                          src->x, shape);
    }
    ds->info.n = (int64_t)ds->x_fdims[0];
    for (int i = 1; i < ds->info.x_rank; i++) {
        if (ds->x_fdims[i] == 0) {
            d = 0;
            break;
        }
        if (__builtin_mul_overflow(d, (int64_t)ds->x_fdims[i], &d) || d > D_MAX)
            return errmsg(err, errlen, -EFBIG,
                          "%s: dataset '%s' shape %s has more than %lld inputs per row", ds->path,
                          src->x, shape, (long long)D_MAX);
    }
    ds->info.d = d;
    if (ds->info.n == 0 || d == 0)
        return errmsg(err, errlen, -EINVAL, "%s: dataset '%s' is empty, shape %s", ds->path, src->x,
                      shape);
    int64_t total;
    if (__builtin_mul_overflow(ds->info.n, d * (int64_t)ds->x_elsize, &total) ||
        ds->info.n > (INT64_C(1) << 48))
        return errmsg(err, errlen, -EFBIG, "%s: dataset '%s' shape %s is too large", ds->path,
                      src->x, shape);
    ds->x_row_bytes = d * (int64_t)ds->x_elsize;
    if (ds->checked) return 0;
    return dataset_check_stored(ds->xset, ds->path, src->x, ds->file_bytes, err, errlen);
}

static int open_y(struct dataset *ds, const struct spec_dataset *src, bool need_y, char *err,
                  size_t errlen)
{
    if (!need_y && (src->y[0] == '\0' || H5Lexists(ds->file, src->y, H5P_DEFAULT) <= 0)) return 0;
    int rc = 0;
    ds->yset = open_dset(ds->file, ds->path, src->y, &rc, err, errlen);
    if (ds->yset < 0) return rc;
    hid_t t = H5Dget_type(ds->yset);
    if (t < 0)
        return errmsg(err, errlen, -EIO, "%s: cannot read the type of '%s'", ds->path, src->y);
    H5T_class_t cls = H5Tget_class(t);
    bool std_int = std_integer(t), ieee = ieee_float_bytes(t) > 0;
    char tname[64];
    type_desc(t, tname, sizeof tname);
    H5Tclose(t);
    if ((cls == H5T_INTEGER && !std_int) || (cls == H5T_FLOAT && !ieee))
        return errmsg(err, errlen, -EINVAL,
                      "%s: dataset '%s' holds %s values; targets must be integer class ids "
                      "(int8 ... uint64) or float32/float64 (convert them, e.g. "
                      "y.astype(\"float32\") with h5py)",
                      ds->path, src->y, tname);
    if (cls == H5T_INTEGER) {
        rc = get_dims(ds->yset, ds->path, src->y, 1, 2,
                      "1: class ids (N), or 2: an id per step (N, T)", ds->y_fdims, &ds->y_rank,
                      err, errlen);
        if (rc == 0 && ds->y_rank == 2 && (ds->y_fdims[1] == 0 || ds->y_fdims[1] > K_MAX))
            rc = errmsg(err, errlen, -EINVAL,
                        "%s: dataset '%s' holds integers of shape (%llu, %llu); class ids must be "
                        "(N) or (N, 1), or (N, T) an id per step with T at most %d",
                        ds->path, src->y, (unsigned long long)ds->y_fdims[0],
                        (unsigned long long)ds->y_fdims[1], (int)K_MAX);
        ds->info.y_is_class = true;
        ds->info.k = ds->y_rank == 2 ? (int64_t)ds->y_fdims[1] : 1;
    } else if (cls == H5T_FLOAT) {
        rc = get_dims(ds->yset, ds->path, src->y, 1, 2, "1 (N) or 2 (N, K) for float targets",
                      ds->y_fdims, &ds->y_rank, err, errlen);
        ds->info.y_is_class = false;
        ds->info.k = ds->y_rank == 2 ? (int64_t)ds->y_fdims[1] : 1;
        if (rc == 0 && ds->y_rank == 2 && (ds->y_fdims[1] == 0 || ds->y_fdims[1] > K_MAX))
            rc = errmsg(err, errlen, -EINVAL, "%s: dataset '%s' has %llu targets per row", ds->path,
                        src->y, (unsigned long long)ds->y_fdims[1]);
    } else {
        rc = errmsg(err, errlen, -EINVAL,
                    "%s: dataset '%s' is neither integer class ids nor float targets", ds->path,
                    src->y);
    }
    if (rc < 0) return rc;
    if ((int64_t)ds->y_fdims[0] != ds->info.n)
        return errmsg(err, errlen, -EINVAL,
                      "%s: '%s' has %lld rows but '%s' has %llu; they must have the same length",
                      ds->path, src->x, (long long)ds->info.n, src->y,
                      (unsigned long long)ds->y_fdims[0]);
    if (!ds->checked)
        rc = dataset_check_stored(ds->yset, ds->path, src->y, ds->file_bytes, err, errlen);
    if (rc < 0) return rc;
    ds->info.has_y = true;
    return 0;
}

/* Whether all n rows of row_bytes stay in memory under budget. */
static bool fits_budget(int64_t n, int64_t row_bytes, int64_t budget)
{
    int64_t total;
    return !__builtin_mul_overflow(n, row_bytes, &total) && total <= budget && n <= UINT32_MAX;
}

/* The buffer's layout: everything (in memory) or one group of chunks. */
struct layout {
    int64_t chunk_rows, n_chunks, group_chunks, cap_rows;
};

static struct layout layout_plan(int64_t n, int64_t row_bytes, int64_t budget, bool in_memory)
{
    struct layout l = {.chunk_rows = n, .n_chunks = 1, .group_chunks = 1, .cap_rows = n};
    if (in_memory) return l;
    int64_t buf = budget < GROUP_MAX_BYTES ? budget : GROUP_MAX_BYTES;
    int64_t chunk = buf / 4 < CHUNK_MAX_BYTES ? buf / 4 : CHUNK_MAX_BYTES;
    l.chunk_rows = chunk / row_bytes > 1 ? chunk / row_bytes : 1;
    if (l.chunk_rows > n) l.chunk_rows = n;
    l.n_chunks = (n + l.chunk_rows - 1) / l.chunk_rows;
    int64_t g = buf / (l.chunk_rows * row_bytes);
    l.group_chunks = g < 1 ? 1 : g > l.n_chunks ? l.n_chunks : g;
    l.cap_rows = l.chunk_rows * l.group_chunks;
    return l;
}

int64_t dataset_memory_bytes(int64_t n, int64_t row_bytes, int64_t budget_bytes, bool *in_memory)
{
    int64_t budget = budget_bytes > 0 ? budget_bytes : DEFAULT_BUDGET;
    bool fits = fits_budget(n, row_bytes, budget);
    struct layout l = layout_plan(n, row_bytes, budget, fits);
    if (in_memory) *in_memory = fits;
    /* The rows, their order, and the chunks' order (see layout_init). */
    return l.cap_rows * row_bytes + l.cap_rows * 4 + l.n_chunks * 4;
}

/* Sizes the buffer: everything (in memory) or one group of chunks. */
static int layout_init(struct dataset *ds, bool in_memory, bool alloc, char *err, size_t errlen)
{
    int64_t n = ds->info.n;
    ds->info.in_memory = in_memory;
    struct layout l = layout_plan(n, ds->row_bytes, ds->budget, in_memory);
    ds->chunk_rows = l.chunk_rows;
    ds->n_chunks = l.n_chunks;
    ds->group_chunks = l.group_chunks;
    if (ds->n_chunks > UINT32_MAX)
        return errmsg(err, errlen, -EFBIG,
                      "%s: the memory budget (%lld bytes) is too small for %lld rows", ds->path,
                      (long long)ds->budget, (long long)n);
    ds->n_groups = (ds->n_chunks + ds->group_chunks - 1) / ds->group_chunks;
    ds->cap_rows = l.cap_rows;
    ds->chunk_order = malloc((size_t)ds->n_chunks * sizeof *ds->chunk_order);
    ds->row_order = malloc((size_t)ds->cap_rows * sizeof *ds->row_order);
    if (!ds->chunk_order || !ds->row_order) goto nomem;
    if (!alloc) return 0;
    ds->owns_buf = true;
    ds->x = buf_alloc(ds, (size_t)(ds->cap_rows * ds->x_row_bytes));
    if (!ds->x) goto nomem;
    if (ds->info.has_y && ds->info.y_is_class)
        ds->y_class = buf_alloc(ds, (size_t)(ds->cap_rows * ds->info.k) * sizeof *ds->y_class);
    else if (ds->info.has_y)
        ds->y = buf_alloc(ds, (size_t)(ds->cap_rows * ds->info.k) * sizeof *ds->y);
    if (ds->info.has_y && !ds->y_class && !ds->y) goto nomem;
    return 0;
nomem:
    return errmsg(err, errlen, -ENOMEM, "%s: out of memory for %lld rows of %lld bytes", ds->path,
                  (long long)ds->cap_rows, (long long)ds->row_bytes);
}

/* ---- readers: everything that hands the file to libhdf5 ----
 *
 * libhdf5 1.10 reads out of bounds on some damaged files (docs/security.md).
 * With isolated reads (the default) each reader runs in a child process
 * that opens the file itself and writes rows into shared buffers, so such a
 * file fails the job, with the signal in the message, instead of killing the
 * trainer. The parent never opens the file. */

typedef int (*reader_fn)(struct dataset *ds, void *arg, char *err, size_t errlen);

/* Opens the file and its datasets and checks what they declare. */
static int reader_open(struct dataset *ds, void *arg, char *err, size_t errlen)
{
    (void)arg;
    if (H5Fis_hdf5(ds->path) <= 0)
        return errmsg(err, errlen, -EINVAL, "%s: not an HDF5 file", ds->path);
    ds->file = H5Fopen(ds->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ds->file < 0) return errmsg(err, errlen, -EIO, "%s: cannot open the HDF5 file", ds->path);
    struct spec_dataset src = {.scale = ds->scale};
    snprintf(src.path, sizeof src.path, "%s", ds->path);
    snprintf(src.x, sizeof src.x, "%s", ds->xname);
    snprintf(src.y, sizeof src.y, "%s", ds->yname);
    int rc = open_x(ds, &src, err, errlen);
    if (rc == 0) rc = open_y(ds, &src, ds->need_y, err, errlen);
    return rc;
}

/* In a reader process: opens the file again and makes sure it still holds
 * what the parent sized its buffers for. */
static int reader_reopen(struct dataset *root, char *err, size_t errlen)
{
    struct dataset was = *root;
    int rc = reader_open(root, NULL, err, errlen);
    if (rc < 0) return rc;
    const struct dataset_info *a = &was.info, *b = &root->info;
    if (a->n != b->n || a->d != b->d || a->x_dtype != b->x_dtype || a->has_y != b->has_y ||
        a->y_is_class != b->y_is_class || a->k != b->k || was.x_row_bytes != root->x_row_bytes)
        return errmsg(err, errlen, -ESTALE, "%s: the file changed while it was being read",
                      root->path);
    return 0;
}

/* Everything, when it fits the budget; class ids counted. */
static int reader_load_all(struct dataset *ds, void *arg, char *err, size_t errlen)
{
    (void)arg;
    int rc = read_x(ds, 0, ds->info.n, ds->x, err, errlen);
    if (rc == 0) rc = check_finite(ds, ds->x, ds->info.n, 0, err, errlen);
    if (rc == 0 && ds->info.has_y) rc = read_y(ds, 0, ds->info.n, ds->y_class, ds->y, err, errlen);
    for (int64_t i = 0; rc == 0 && ds->y_class && i < ds->info.n * ds->info.k; i++)
        if (ds->y_class[i] >= ds->info.n_classes) ds->info.n_classes = ds->y_class[i] + (int64_t)1;
    return rc;
}

/* Streamed: reads y once, in pieces, to check class ids and count classes. */
static int reader_scan_y(struct dataset *ds, void *arg, char *err, size_t errlen)
{
    (void)arg;
    int64_t piece = SCAN_ROWS;
    int32_t *yc = ds->info.y_is_class ? malloc((size_t)(piece * ds->info.k) * sizeof *yc) : NULL;
    float *yf = ds->info.y_is_class ? NULL : malloc((size_t)(piece * ds->info.k) * sizeof *yf);
    int rc = 0;
    if (!yc && !yf) return errmsg(err, errlen, -ENOMEM, "%s: out of memory", ds->path);
    for (int64_t row = 0; row < ds->info.n && rc == 0; row += piece) {
        int64_t m = ds->info.n - row < piece ? ds->info.n - row : piece;
        rc = read_y(ds, row, m, yc, yf, err, errlen);
        for (int64_t i = 0; yc && rc == 0 && i < m * ds->info.k; i++)
            if (yc[i] >= ds->info.n_classes) ds->info.n_classes = yc[i] + (int64_t)1;
    }
    free(yc);
    free(yf);
    return rc;
}

/* What a reader process hands back besides the rows. */
struct reader_page {
    int done; /* set last: a reader that died before it did crashed */
    int rc;
    char err[1024];
    struct dataset_info info;
    hsize_t x_fdims[4], y_fdims[2];
    int y_rank;
    size_t x_elsize;
    int64_t x_row_bytes;
};

/* Runs fn on ds in one reader process; -ETIMEDOUT when it was stuck (and is
 * gone). */
static int reader_once(struct dataset *ds, reader_fn fn, void *arg, struct reader_page *pg,
                       char *err, size_t errlen)
{
    struct dataset *root = ds->root ? ds->root : ds;
    memset(pg, 0, sizeof *pg);
    bool hang = readers_to_hang > 0;
    if (hang) readers_to_hang--;
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        int e = errno;
        return errmsg(err, errlen, -e, "%s: cannot start the dataset reader: %s", ds->path,
                      strerror(e));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  /* a trainer killed mid-read leaves no reader */
        if (getppid() != parent) _exit(1); /* it died before that took hold */
        while (hang)
            pause();
        /* A crash ends the reader, whatever handler the parent installed. */
        static const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
            signal(fatal[i], SIG_DFL);
        int rc = fn == reader_open ? 0 : reader_reopen(root, pg->err, sizeof pg->err);
        if (rc == 0) rc = fn(ds, arg, pg->err, sizeof pg->err);
        pg->rc = rc;
        pg->info = ds->info;
        memcpy(pg->x_fdims, ds->x_fdims, sizeof pg->x_fdims);
        memcpy(pg->y_fdims, ds->y_fdims, sizeof pg->y_fdims);
        pg->y_rank = ds->y_rank;
        pg->x_elsize = ds->x_elsize;
        pg->x_row_bytes = ds->x_row_bytes;
        __atomic_store_n(&pg->done, 1, __ATOMIC_RELEASE);
        _exit(0); /* no atexit handlers: they belong to the parent */
    }
    int status = 0;
    int rc = child_wait(pid, reader_stall_s, &status);
    if (rc == -ETIMEDOUT)
        return errmsg(err, errlen, rc, "dataset reader made no progress for %.0f s on %s",
                      reader_stall_s, ds->path);
    if (rc < 0)
        return errmsg(err, errlen, rc, "%s: cannot wait for the dataset reader: %s", ds->path,
                      strerror(-rc));
    if (!__atomic_load_n(&pg->done, __ATOMIC_ACQUIRE)) {
        if (WIFSIGNALED(status))
            rc = errmsg(err, errlen, -EIO, "dataset reader crashed (signal %d) on %s",
                        WTERMSIG(status), ds->path);
        else
            rc = errmsg(err, errlen, -EIO, "dataset reader died (exit status %d) on %s",
                        WIFEXITED(status) ? WEXITSTATUS(status) : -1, ds->path);
    } else if (pg->rc < 0) {
        rc = pg->rc;
        snprintf(err, errlen, "%s", pg->err);
    } else {
        rc = 0;
        ds->info = pg->info;
        memcpy(ds->x_fdims, pg->x_fdims, sizeof ds->x_fdims);
        memcpy(ds->y_fdims, pg->y_fdims, sizeof ds->y_fdims);
        ds->y_rank = pg->y_rank;
        ds->x_elsize = pg->x_elsize;
        ds->x_row_bytes = pg->x_row_bytes;
    }
    return rc;
}

/* Runs fn on ds: in this process, or (isolated) in a reader process. */
static int run_reader(struct dataset *ds, reader_fn fn, void *arg, char *err, size_t errlen)
{
    if (!ds->shared) return fn(ds, arg, err, errlen);
    struct reader_page *pg =
        mmap(NULL, sizeof *pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pg == MAP_FAILED)
        return errmsg(err, errlen, -errno, "%s: cannot map memory for the dataset reader: %s",
                      ds->path, strerror(errno));
    int rc = -ETIMEDOUT;
    for (int attempt = 1; attempt <= READER_ATTEMPTS && rc == -ETIMEDOUT; attempt++) {
        rc = reader_once(ds, fn, arg, pg, err, errlen);
        if (rc == -ETIMEDOUT && attempt < READER_ATTEMPTS)
            log_warn("%s; killed, reading again (attempt %d of %d)", err, attempt + 1,
                     READER_ATTEMPTS);
    }
    munmap(pg, sizeof *pg);
    return rc;
}

/* Opens the file and its datasets' headers, no data: a new *out with
 * info and row sizes filled. check_storage: also dataset_check_stored, which
 * sizing a job leaves to dataset_open (a job too large for the trainer is
 * refused on its declared sizes, before anyone asks whether they are
 * stored). */
static int open_headers(struct dataset **out, const struct spec_dataset *src, bool need_y,
                        int64_t budget_bytes, bool check_storage, char *err, size_t errlen)
{
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack */
    register_filters();
    struct dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return errmsg(err, errlen, -ENOMEM, "%s: out of memory", src->path);
    ds->file = ds->xset = ds->yset = H5I_INVALID_HID;
    ds->loaded = -1;
    snprintf(ds->path, sizeof ds->path, "%s", src->path);
    snprintf(ds->xname, sizeof ds->xname, "%s", src->x);
    snprintf(ds->yname, sizeof ds->yname, "%s", src->y);
    ds->scale = src->scale;
    ds->need_y = need_y;
    ds->shared = isolate_reads;
    ds->budget = budget_bytes > 0 ? budget_bytes : DEFAULT_BUDGET;
    ds->checked = !check_storage;

    int rc;
    struct stat st;
    if (stat(src->path, &st) < 0) {
        rc = errmsg(err, errlen, -errno, "%s: %s", src->path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = errmsg(err, errlen, -EINVAL, "%s: not a regular file", src->path);
        goto fail;
    }
    ds->file_bytes = (int64_t)st.st_size;
    rc = run_reader(ds, reader_open, NULL, err, errlen);
    if (rc < 0) goto fail;
    ds->checked = true;

    int64_t y_row = !ds->info.has_y ? 0 : 4 * ds->info.k;
    ds->row_bytes = ds->x_row_bytes + y_row;
    *out = ds;
    return 0;
fail:
    dataset_close(&ds);
    return rc;
}

int dataset_probe(const struct spec_dataset *src, bool need_y, struct dataset_info *info,
                  int64_t *row_bytes, char *err, size_t errlen)
{
    struct dataset *ds;
    int rc = open_headers(&ds, src, need_y, 0, false, err, errlen);
    if (rc) return rc;
    *info = ds->info;
    *row_bytes = ds->row_bytes;
    dataset_close(&ds);
    return 0;
}

int dataset_open(struct dataset **out, const struct spec_dataset *src, bool need_y,
                 int64_t budget_bytes, char *err, size_t errlen)
{
    struct dataset *ds;
    int rc = open_headers(&ds, src, need_y, budget_bytes, true, err, errlen);
    *out = NULL;
    if (rc) return rc;
    bool fits = fits_budget(ds->info.n, ds->row_bytes, ds->budget);
    rc = layout_init(ds, fits, true, err, errlen);
    if (rc < 0) goto fail;
    if (fits) {
        rc = run_reader(ds, reader_load_all, NULL, err, errlen);
        ds->loaded = 0;
    } else if (ds->info.has_y) {
        rc = run_reader(ds, reader_scan_y, NULL, err, errlen);
    }
    if (rc < 0) goto fail;
    *out = ds;
    return 0;
fail:
    dataset_close(&ds);
    return rc;
}

void dataset_close(struct dataset **p)
{
    struct dataset *ds = p ? *p : NULL;
    if (!ds) return;
    if (!ds->root) {
        if (ds->yset >= 0) H5Dclose(ds->yset);
        if (ds->xset >= 0) H5Dclose(ds->xset);
        if (ds->file >= 0) H5Fclose(ds->file);
    }
    if (ds->owns_buf) {
        buf_free(ds, ds->x);
        buf_free(ds, ds->y_class);
        buf_free(ds, ds->y);
    }
    free(ds->chunk_order);
    free(ds->row_order);
    buf_free(ds, ds->sx);
    buf_free(ds, ds->syc);
    buf_free(ds, ds->sy);
    free(ds);
    *p = NULL;
}

const struct dataset_info *dataset_get_info(const struct dataset *ds)
{
    return &ds->info;
}

int dataset_check_model(const struct dataset *ds, const struct mlq_spec *spec, char *err,
                        size_t errlen)
{
    char what[64];
    snprintf(what, sizeof what, "model.layers[0] is %d", spec->layers[0]);
    return dataset_check_io(ds, spec->kind, spec->loss, spec->layers[0], what,
                            spec->layers[spec->n_layers], err, errlen);
}

int dataset_check_io(const struct dataset *ds, enum job_kind kind, enum loss_kind loss,
                     int64_t inputs, const char *what_inputs, int outputs, char *err, size_t errlen)
{
    return dataset_check_io_steps(ds, kind, loss, inputs, what_inputs, outputs, 1, err, errlen);
}

int dataset_check_io_steps(const struct dataset *ds, enum job_kind kind, enum loss_kind loss,
                           int64_t inputs, const char *what_inputs, int outputs, int steps,
                           char *err, size_t errlen)
{
    const struct dataset_info *in = &ds->info;
    if (in->has_y && kind != JOB_PREDICT && in->y_is_class && in->k != steps) {
        if (steps == 1)
            return errmsg(err, errlen, -EINVAL,
                          "%s: '%s' holds an id per step (N, %lld) but the model predicts one "
                          "class per row: give it per-step outputs (a last layer of (T, classes))",
                          ds->path, ds->yname, (long long)in->k);
        return errmsg(err, errlen, -EINVAL,
                      "%s: '%s' holds %lld id%s per row but the model predicts %d steps (T, %d)",
                      ds->path, ds->yname, (long long)in->k, in->k == 1 ? "" : "s", steps, outputs);
    }
    if (in->d != inputs)
        return errmsg(err, errlen, -EINVAL, "%s: '%s' has %lld inputs per row, but %s", ds->path,
                      ds->xname, (long long)in->d, what_inputs);
    if (!in->has_y || kind == JOB_PREDICT) return 0;
    if (loss == LOSS_CROSS_ENTROPY) {
        if (!in->y_is_class)
            return errmsg(err, errlen, -EINVAL,
                          "%s: loss cross_entropy needs integer class ids (N), but the targets "
                          "are floats (N, %lld)",
                          ds->path, (long long)in->k);
        if (in->n_classes > outputs)
            return errmsg(err, errlen, -EINVAL,
                          "%s: class ids go up to %lld, outside [0, %d): the model has %d outputs",
                          ds->path, (long long)(in->n_classes - 1), outputs, outputs);
    } else if (in->y_is_class ? outputs != 1 : in->k != outputs) {
        return errmsg(err, errlen, -EINVAL,
                      "%s: loss mse needs %d targets per row, but the targets are %s (N, %lld)",
                      ds->path, outputs, in->y_is_class ? "class ids" : "floats", (long long)in->k);
    }
    return 0;
}

int dataset_view(struct dataset **out, struct dataset *parent, int64_t begin, int64_t end,
                 char *err, size_t errlen)
{
    *out = NULL;
    if (begin < 0 || end > parent->info.n || begin >= end)
        return errmsg(err, errlen, -EINVAL,
                      "%s: rows [%lld, %lld) are not a non-empty part of its %lld rows",
                      parent->path, (long long)begin, (long long)end, (long long)parent->info.n);
    struct dataset *v = malloc(sizeof *v);
    if (!v) return errmsg(err, errlen, -ENOMEM, "%s: out of memory", parent->path);
    *v = *parent;
    v->root = parent->root ? parent->root : parent;
    v->base = parent->base + begin;
    v->info.n = end - begin;
    v->info.x_dims[0] = v->info.n;
    v->owns_buf = false;
    v->chunk_order = NULL;
    v->row_order = NULL;
    v->sx = NULL;
    v->syc = NULL;
    v->sy = NULL;
    v->s_rows = 0;
    v->started = false;
    v->loaded = -1;
    int rc;
    if (parent->info.in_memory) {
        v->x = parent->x + begin * parent->x_row_bytes;
        v->y_class = parent->y_class ? parent->y_class + begin * parent->info.k : NULL;
        v->y = parent->y ? parent->y + begin * parent->info.k : NULL;
        rc = layout_init(v, true, false, err, errlen);
        v->loaded = 0;
    } else {
        v->x = NULL;
        v->y_class = NULL;
        v->y = NULL;
        rc = layout_init(v, false, true, err, errlen);
    }
    if (rc < 0) {
        dataset_close(&v);
        return rc;
    }
    *out = v;
    return 0;
}

/* ---- epochs and batches ---- */

static int64_t chunk_size(const struct dataset *ds, int64_t c)
{
    int64_t left = ds->info.n - c * ds->chunk_rows;
    return left < ds->chunk_rows ? left : ds->chunk_rows;
}

static int64_t group_size(const struct dataset *ds, int64_t g)
{
    int64_t rows = 0;
    int64_t end = (g + 1) * ds->group_chunks;
    for (int64_t i = g * ds->group_chunks; i < end && i < ds->n_chunks; i++)
        rows += chunk_size(ds, ds->chunk_order[i]);
    return rows;
}

/* Streamed: reads group *(int64_t *)arg's chunks into the buffer. */
static int reader_group(struct dataset *ds, void *arg, char *err, size_t errlen)
{
    int64_t g = *(const int64_t *)arg, rows = 0;
    int64_t end = (g + 1) * ds->group_chunks;
    for (int64_t i = g * ds->group_chunks; i < end && i < ds->n_chunks; i++) {
        int64_t c = ds->chunk_order[i], first = c * ds->chunk_rows, m = chunk_size(ds, c);
        uint8_t *x = ds->x + rows * ds->x_row_bytes;
        int rc = read_x(ds, first, m, x, err, errlen);
        if (rc == 0) rc = check_finite(ds, x, m, first, err, errlen);
        if (rc == 0 && ds->info.has_y)
            rc = read_y(ds, first, m, ds->y_class ? ds->y_class + rows * ds->info.k : NULL,
                        ds->y ? ds->y + rows * ds->info.k : NULL, err, errlen);
        if (rc < 0) return rc;
        rows += m;
    }
    return 0;
}

/* Makes group g current: its rows in the buffer (streamed) and its order. */
static int load_group(struct dataset *ds, int64_t g, char *err, size_t errlen)
{
    int64_t rows = ds->info.n;
    if (!ds->info.in_memory) {
        int rc = run_reader(ds, reader_group, &g, err, errlen);
        if (rc < 0) {
            ds->loaded = -1;
            return rc;
        }
        rows = group_size(ds, g);
        ds->loaded = g;
    }
    /* Stream 0 orders the chunks; stream 1 + g orders group g's rows. */
    perm_fill(ds->row_order, rows, ds->shuffle, ds->seed, ds->epoch, 1 + (uint64_t)g);
    ds->group = g;
    ds->group_rows = rows;
    ds->pos = 0;
    return 0;
}

int dataset_epoch_begin(struct dataset *ds, uint64_t seed, int64_t epoch, bool shuffle,
                        int64_t skip, char *err, size_t errlen)
{
    if (skip < 0 || skip > ds->info.n)
        return errmsg(err, errlen, -EINVAL, "%s: cannot skip %lld of %lld rows", ds->path,
                      (long long)skip, (long long)ds->info.n);
    ds->seed = seed;
    ds->epoch = epoch;
    ds->shuffle = shuffle;
    ds->started = true;
    perm_fill(ds->chunk_order, ds->n_chunks, shuffle, seed, epoch, 0);
    int64_t g = 0, start = 0;
    for (; g < ds->n_groups; g++) {
        int64_t rows = group_size(ds, g);
        if (skip < start + rows) break;
        start += rows;
    }
    ds->group = g;
    ds->group_rows = 0;
    ds->pos = 0;
    if (g == ds->n_groups) return 0;
    int rc = load_group(ds, g, err, errlen);
    if (rc < 0) {
        ds->started = false;
        return rc;
    }
    ds->pos = skip - start;
    return 0;
}

/* dst = src / 255 as float, (float)v / 255.0f exactly: v * (1/255)
 * in double, rounded once to float, equals (float)v / 255.0f for each of the
 * 256 values (test_dataset checks them all), and unlike a division or a
 * table lookup it vectorises; fixed blocks of 16 let GCC do so at -O2. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* An AVX2 clone, picked at load time, converts twice as fast. */
__attribute__((target_clones("avx2", "default")))
#endif
static void
scale_u8(float *restrict dst, const uint8_t *restrict src, int64_t d)
{
    int64_t j = 0;
    for (; j + 16 <= d; j += 16)
        for (int k = 0; k < 16; k++)
            dst[j + k] = (float)((double)src[j + k] * (1.0 / 255.0));
    for (; j < d; j++)
        dst[j] = (float)((double)src[j] * (1.0 / 255.0));
}

/* Starts loading buffer row i: shuffled rows of a dataset larger than the
 * cache would each stall on memory when converted. */
static void prefetch_row(const struct dataset *ds, const uint8_t *xbuf, int64_t i)
{
    const char *p = (const char *)(xbuf + i * ds->x_row_bytes);
    for (int64_t at = 0; at < ds->x_row_bytes; at += 64)
        __builtin_prefetch(p + at);
}

/* Converts buffer row i of (x, yc, yf) into output row `o`. */
static void emit_row(const struct dataset *ds, const uint8_t *xbuf, const int32_t *ycbuf,
                     const float *yfbuf, int64_t i, int64_t o, float *x, int32_t *y_class, float *y)
{
    int64_t d = ds->info.d, k = ds->info.k;
    const uint8_t *src = xbuf + i * ds->x_row_bytes;
    float *dst = x ? x + o * d : NULL;
    if (dst) {
        switch (ds->info.x_dtype) {
        case DTYPE_UINT8:
            if (ds->scale)
                scale_u8(dst, src, d);
            else
                for (int64_t j = 0; j < d; j++)
                    dst[j] = (float)src[j];
            break;
        case DTYPE_FLOAT32:
            memcpy(dst, src, (size_t)d * sizeof *dst);
            break;
        case DTYPE_FLOAT64:
            for (int64_t j = 0; j < d; j++)
                dst[j] = (float)((const double *)src)[j];
            break;
        }
    }
    if (!ds->info.has_y) return;
    if (ycbuf) {
        for (int64_t j = 0; j < k; j++) {
            if (y_class) y_class[o * k + j] = ycbuf[i * k + j];
            if (y) y[o * k + j] = (float)ycbuf[i * k + j];
        }
    } else if (y) {
        memcpy(y + o * k, yfbuf + i * k, (size_t)k * sizeof *y);
    }
}

int dataset_next_batch(struct dataset *ds, int B, float *x, int32_t *y_class, float *y, char *err,
                       size_t errlen)
{
    if (!ds->started)
        return errmsg(err, errlen, -EINVAL, "%s: dataset_epoch_begin was not called", ds->path);
    if (B < 0) return errmsg(err, errlen, -EINVAL, "%s: negative batch size %d", ds->path, B);
    int filled = 0;
    while (filled < B && ds->group < ds->n_groups) {
        if (ds->pos >= ds->group_rows) {
            if (ds->group + 1 >= ds->n_groups) {
                ds->group = ds->n_groups;
                break;
            }
            int rc = load_group(ds, ds->group + 1, err, errlen);
            if (rc < 0) {
                ds->started = false;
                return rc;
            }
            continue;
        }
        if (ds->pos + 2 < ds->group_rows) prefetch_row(ds, ds->x, ds->row_order[ds->pos + 2]);
        int64_t i = ds->row_order[ds->pos++];
        emit_row(ds, ds->x, ds->y_class, ds->y, i, filled, x, y_class, y);
        filled++;
    }
    /* The next batch's rows load while the caller computes on this one. */
    for (int64_t p = ds->pos; p < ds->pos + B && p < ds->group_rows; p++)
        prefetch_row(ds, ds->x, ds->row_order[p]);
    return filled;
}

/* Streamed: rows [range[0], range[0] + range[1]) into the row buffers. */
static int reader_rows(struct dataset *ds, void *arg, char *err, size_t errlen)
{
    const int64_t *range = arg;
    int rc = read_x(ds, range[0], range[1], ds->sx, err, errlen);
    if (rc == 0) rc = check_finite(ds, ds->sx, range[1], range[0], err, errlen);
    if (rc == 0 && ds->info.has_y)
        rc = read_y(ds, range[0], range[1], ds->syc, ds->sy, err, errlen);
    return rc;
}

int dataset_read_rows(struct dataset *ds, int64_t begin, int B, float *x, int32_t *y_class,
                      float *y, char *err, size_t errlen)
{
    if (begin < 0 || begin > ds->info.n || B < 0)
        return errmsg(err, errlen, -EINVAL, "%s: rows %lld + %d are outside its %lld rows",
                      ds->path, (long long)begin, B, (long long)ds->info.n);
    int64_t m = ds->info.n - begin < B ? ds->info.n - begin : B;
    if (m == 0) return 0;
    if (ds->info.in_memory) {
        for (int64_t i = 0; i < m; i++)
            emit_row(ds, ds->x, ds->y_class, ds->y, begin + i, i, x, y_class, y);
        return (int)m;
    }
    if (m > ds->s_rows) {
        buf_free(ds, ds->sx);
        buf_free(ds, ds->syc);
        buf_free(ds, ds->sy);
        ds->syc = NULL;
        ds->sy = NULL;
        ds->s_rows = 0;
        ds->sx = buf_alloc(ds, (size_t)(m * ds->x_row_bytes));
        if (ds->info.has_y && ds->info.y_is_class)
            ds->syc = buf_alloc(ds, (size_t)(m * ds->info.k) * sizeof *ds->syc);
        else if (ds->info.has_y)
            ds->sy = buf_alloc(ds, (size_t)(m * ds->info.k) * sizeof *ds->sy);
        if (!ds->sx || (ds->info.has_y && !ds->syc && !ds->sy))
            return errmsg(err, errlen, -ENOMEM, "%s: out of memory for %lld rows", ds->path,
                          (long long)m);
        ds->s_rows = m;
    }
    int64_t range[2] = {begin, m};
    int rc = run_reader(ds, reader_rows, range, err, errlen);
    if (rc < 0) return rc;
    for (int64_t i = 0; i < m; i++)
        emit_row(ds, ds->sx, ds->syc, ds->sy, i, i, x, y_class, y);
    return (int)m;
}

const char *dataset_dtype_name(enum dataset_dtype t)
{
    switch (t) {
    case DTYPE_UINT8:
        return "uint8";
    case DTYPE_FLOAT32:
        return "float32";
    case DTYPE_FLOAT64:
        return "float64";
    }
    return "?";
}
