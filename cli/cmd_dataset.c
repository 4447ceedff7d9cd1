/* mlq dataset: import IDX or CSV files into HDF5, and describe a dataset.
 *
 * Imports write X and y into a temporary file next to the output and rename
 * it into place at the end, so a failed import leaves nothing half-written.
 * Layout written (docs/datasets.md): X (N, ...) uint8 or float32 and y (N)
 * uint8/int32 class ids or (N, 1) float32 targets, chunked and compressed;
 * import-text: X and y uint8 (N, T) token windows and their next tokens.
 * Reading the IDX and CSV files is import.c's (shared with tests/fuzz). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>

#include "atomic_file.h"
#include "child.h"
#include "cli.h"
#include "dataset.h"
#include "dataset_transfer.h"
#include "import.h"
#include "proto.h"
#include "sha256.h"

#define CHUNK_BYTES (1 << 20) /* HDF5 chunk, the size of its default cache */
#define SCAN_BYTES (INT64_C(4) << 20)

static const char *sub = "dataset"; /* the subcommand, for messages */
/* info_file as push's check: nothing printed but the reason for a refusal. */
static bool check_only;
#define PUSH_CHECK_BUDGET ((int64_t)16 << 20) /* bytes of X a push's check may load */

static int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "mlq %s: ", sub);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILURE_GENERIC;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "mlq %s: ", sub);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; run 'mlq dataset %s --help'\n", strcmp(sub, "dataset") ? sub + 8 : "");
    return EXIT_USAGE;
}

/* ---- the output file: temp + rename ---- */

struct out_file {
    struct atomic_file af;
    hid_t file;
};

static int out_begin(struct out_file *o, const char *path)
{
    char err[PATH_MAX + 200];
    o->file = H5I_INVALID_HID;
    if (atomic_file_begin(&o->af, path, 0666, err, sizeof err)) return error("%s", err);
    o->file = H5Fcreate(o->af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (o->file < 0) return error("%s: cannot create the HDF5 file", o->af.tmp);
    return 0;
}

static void out_abort(struct out_file *o)
{
    if (o->file >= 0) H5Fclose(o->file);
    o->file = H5I_INVALID_HID;
    atomic_file_abort(&o->af);
}

static int out_commit(struct out_file *o)
{
    char err[PATH_MAX + 200];
    herr_t rc = H5Fclose(o->file);
    o->file = H5I_INVALID_HID;
    if (rc < 0) {
        out_abort(o);
        return error("%s: cannot finish writing the HDF5 file", o->af.path);
    }
    if (atomic_file_commit(&o->af, err, sizeof err)) return error("%s", err);
    return 0;
}

/* Writes one dataset, chunked by rows and deflate-compressed. */
static int write_dset(struct out_file *o, const char *name, hid_t filetype, hid_t memtype, int rank,
                      const hsize_t *dims, const void *data)
{
    hsize_t chunk[4];
    size_t row_bytes = H5Tget_size(filetype);
    for (int i = 1; i < rank; i++) {
        chunk[i] = dims[i];
        row_bytes *= dims[i];
    }
    chunk[0] = CHUNK_BYTES / row_bytes > 0 ? CHUNK_BYTES / row_bytes : 1;
    if (chunk[0] > dims[0]) chunk[0] = dims[0];
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dset = H5I_INVALID_HID;
    int rc = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        (H5Tget_size(filetype) == 1 || H5Pset_shuffle(dcpl) >= 0) && H5Pset_deflate(dcpl, 4) >= 0) {
        dset = H5Dcreate2(o->file, name, filetype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (dset >= 0 && H5Dwrite(dset, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0) rc = 0;
    }
    if (dset >= 0) H5Dclose(dset);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (rc < 0) return error("%s: cannot write dataset '%s'", o->af.path, name);
    return 0;
}

/* ---- import-idx ---- */

static void usage_import_idx(FILE *f)
{
    fprintf(f, "usage: mlq dataset import-idx IMAGES LABELS --output FILE.h5 [--limit N]\n\n"
               "Converts an IDX pair (the format of MNIST and Fashion-MNIST, gzip-compressed or\n"
               "raw) into HDF5: X uint8 (N, H, W) from IMAGES and y uint8 (N) from LABELS.\n"
               "Pixels stay uint8; the trainer scales them to [0, 1].\n\n"
               "options:\n"
               "  -o, --output FILE.h5   the file to write (replaced if it exists)\n"
               "  -n, --limit N          only the first N examples (default: all)\n"
               "  -h, --help             this help\n");
}

static int import_idx(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *output = NULL;
    long long limit = 0; /* 0: all */
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:n:h", opts, NULL)) != -1) {
        if (c == 'o')
            output = optarg;
        else if (c == 'n') {
            char *end;
            errno = 0;
            limit = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || limit < 1)
                return usage_error("--limit takes a positive number of examples, not '%s'", optarg);
        } else if (c == 'h') {
            usage_import_idx(stdout);
            return EXIT_OK;
        } else
            return usage_error("bad option");
    }
    if (argc - optind != 2) return usage_error("expected IMAGES and LABELS");
    if (!output) return usage_error("--output is required");
    const char *images = argv[optind], *labels = argv[optind + 1];

    struct import_idx xi, yi;
    char err[PATH_MAX + 256];
    if (import_idx_read(images, &xi, err, sizeof err) != 0) return error("%s", err);
    if (import_idx_read(labels, &yi, err, sizeof err) != 0) {
        import_idx_free(&xi);
        return error("%s", err);
    }
    int rc = 0;
    if (xi.ndims < 2)
        rc = error("%s: images must have at least 2 dimensions (N, H[, W[, C]]), got 1", images);
    else if (yi.ndims != 1)
        rc = error("%s: labels must have 1 dimension (N), got %d", labels, yi.ndims);
    else if (xi.dims[0] != yi.dims[0])
        rc = error("%s holds %u images but %s holds %u labels", images, xi.dims[0], labels,
                   yi.dims[0]);
    /* The first N examples: rows are contiguous, so the arrays' heads. */
    if (rc == 0 && limit > 0 && limit < (long long)xi.dims[0]) xi.dims[0] = yi.dims[0] = limit;
    if (rc == 0) {
        hsize_t xdims[4], ydims[1] = {yi.dims[0]};
        for (int i = 0; i < xi.ndims; i++)
            xdims[i] = xi.dims[i];
        struct out_file o;
        rc = out_begin(&o, output);
        if (rc == 0)
            rc = write_dset(&o, "X", H5T_STD_U8LE, H5T_NATIVE_UINT8, xi.ndims, xdims, xi.data);
        if (rc == 0) rc = write_dset(&o, "y", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, ydims, yi.data);
        if (rc == 0)
            rc = out_commit(&o);
        else
            out_abort(&o);
    }
    if (rc == 0) {
        printf("%s: X uint8 (", output);
        for (int i = 0; i < xi.ndims; i++)
            printf("%s%u", i ? ", " : "", xi.dims[i]);
        printf("), y uint8 (%u)\n", yi.dims[0]);
    }
    import_idx_free(&xi);
    import_idx_free(&yi);
    return rc;
}

/* ---- import-text ---- */

#define TEXT_MAX_BYTES (INT64_C(1) << 32) /* 4 GiB of text: X and y would be twice that */
#define TEXT_MAX_CONTEXT 65536

static void usage_import_text(FILE *f)
{
    fprintf(f,
            "usage: mlq dataset import-text FILE... --context T --output FILE.h5\n\n"
            "Byte-level tokens (vocabulary 256) for a language model: the files' bytes, one\n"
            "after the other, cut into windows of T. X uint8 (N, T) holds a window, y uint8\n"
            "(N, T) its next-token targets (the same bytes moved on by one). The last\n"
            "--validation fraction of the text is held out as X_val and y_val.\n\n"
            "options:\n"
            "  -c, --context T        tokens per window (1 to %d)\n"
            "  -s, --stride S         bytes from one window to the next (default T)\n"
            "  -v, --validation F     the held-out tail's share of the text, [0, 1)\n"
            "                         (default 0.05)\n"
            "  -o, --output FILE.h5   the file to write (replaced if it exists)\n"
            "  -h, --help             this help\n",
            TEXT_MAX_CONTEXT);
}

/* Appends the whole of path to *buf. */
static int read_text(const char *path, uint8_t **buf, int64_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return error("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return error("%s: not a regular file", path);
    }
    if (*len + (int64_t)st.st_size > TEXT_MAX_BYTES) {
        fclose(f);
        return error("%s: the text would pass %lld bytes", path, (long long)TEXT_MAX_BYTES);
    }
    uint8_t *grown = realloc(*buf, (size_t)(*len + st.st_size + 1));
    if (!grown) {
        fclose(f);
        return error("%s: out of memory for %lld bytes", path, (long long)(*len + st.st_size));
    }
    *buf = grown;
    size_t got = fread(*buf + *len, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)st.st_size) return error("%s: read error", path);
    *len += (int64_t)got;
    return 0;
}

/* Windows of T tokens every S bytes over text[0, len): X and y (n, T). */
static int64_t text_windows(int64_t len, int T, int S)
{
    return len < (int64_t)T + 1 ? 0 : (len - T - 1) / S + 1;
}

static void fill_windows(const uint8_t *text, int64_t n, int T, int S, uint8_t *x, uint8_t *y)
{
    for (int64_t i = 0; i < n; i++) {
        memcpy(x + i * T, text + i * S, (size_t)T);
        memcpy(y + i * T, text + i * S + 1, (size_t)T);
    }
}

static int import_text(int argc, char **argv)
{
    static const struct option opts[] = {{"context", required_argument, NULL, 'c'},
                                         {"stride", required_argument, NULL, 's'},
                                         {"validation", required_argument, NULL, 'v'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *output = NULL;
    long T = 0, S = 0;
    double val = 0.05;
    char *end;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "c:s:v:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            errno = 0;
            T = strtol(optarg, &end, 10);
            if (errno || *end || T < 1 || T > TEXT_MAX_CONTEXT)
                return usage_error("--context: expected 1 to %d tokens, got '%s'", TEXT_MAX_CONTEXT,
                                   optarg);
            break;
        case 's':
            errno = 0;
            S = strtol(optarg, &end, 10);
            if (errno || *end || S < 1 || S > TEXT_MAX_CONTEXT)
                return usage_error("--stride: expected 1 to %d bytes, got '%s'", TEXT_MAX_CONTEXT,
                                   optarg);
            break;
        case 'v':
            errno = 0;
            val = strtod(optarg, &end);
            if (errno || *end || !(val >= 0 && val < 1))
                return usage_error("--validation: expected a fraction in [0, 1), got '%s'", optarg);
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
            usage_import_text(stdout);
            return EXIT_OK;
        default:
            return usage_error("bad option");
        }
    }
    if (argc - optind < 1) return usage_error("expected one or more text files");
    if (!T) return usage_error("--context is required");
    if (!output) return usage_error("--output is required");
    if (!S) S = T;

    uint8_t *text = NULL;
    int64_t len = 0;
    int rc = 0;
    for (int i = optind; i < argc && rc == 0; i++)
        rc = read_text(argv[i], &text, &len);
    int64_t tail = (int64_t)((double)len * val), head = len - tail;
    int64_t n = text_windows(head, (int)T, (int)S), n_val = text_windows(tail, (int)T, (int)S);
    if (rc == 0 && len == 0)
        rc = error("%s%s: no text (0 bytes)", argv[optind], argc - optind > 1 ? " ..." : "");
    else if (rc == 0 && n < 1)
        rc = error("%lld bytes of text%s leave no window of %ld tokens and its next token: give "
                   "more text or a smaller --context",
                   (long long)head, tail ? " before the held-out tail" : "", T);
    else if (rc == 0 && val > 0 && n_val < 1)
        rc = error("the held-out tail (%lld bytes, --validation %g) is shorter than a window of "
                   "%ld tokens and its next token: give more text, a larger --validation or a "
                   "smaller --context",
                   (long long)tail, val, T);
    uint8_t *x = NULL, *y = NULL;
    int64_t most = n > n_val ? n : n_val;
    if (rc == 0 && (!(x = malloc((size_t)(most * T))) || !(y = malloc((size_t)(most * T)))))
        rc = error("out of memory for %lld windows of %ld", (long long)most, T);
    struct out_file o;
    if (rc == 0) rc = out_begin(&o, output);
    if (rc == 0) {
        hsize_t dims[2] = {(hsize_t)n, (hsize_t)T};
        fill_windows(text, n, (int)T, (int)S, x, y);
        rc = write_dset(&o, "X", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, x);
        if (rc == 0) rc = write_dset(&o, "y", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, y);
        if (rc == 0 && n_val > 0) {
            dims[0] = (hsize_t)n_val;
            fill_windows(text + head, n_val, (int)T, (int)S, x, y);
            rc = write_dset(&o, "X_val", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, x);
            if (rc == 0) rc = write_dset(&o, "y_val", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, y);
        }
        if (rc == 0)
            rc = out_commit(&o);
        else
            out_abort(&o);
    }
    if (rc == 0) {
        printf("%s: %lld bytes of text; X, y uint8 (%lld, %ld)", output, (long long)len,
               (long long)n, T);
        if (n_val > 0) printf(", X_val, y_val uint8 (%lld, %ld)", (long long)n_val, T);
        printf("\n");
    }
    free(x);
    free(y);
    free(text);
    return rc;
}

/* ---- import-csv ---- */

static void usage_import_csv(FILE *f)
{
    fprintf(f,
            "usage: mlq dataset import-csv FILE.csv --output FILE.h5 [--label-column N|NAME]\n"
            "                              [--header] [--regression]\n\n"
            "Converts comma-separated numbers into HDF5: X float32 (N, D) from every column but\n"
            "the label column, y int32 (N) class ids, or y float32 (N, 1) with --regression.\n"
            "Blank lines are skipped; quoted fields are not supported.\n\n"
            "options:\n"
            "  -o, --output FILE.h5        the file to write (replaced if it exists)\n"
            "  -l, --label-column N|NAME   the label column: 0-based index, negative counts\n"
            "                              from the end, or a header name (default -1, the last)\n"
            "      --header                the first line holds column names\n"
            "      --regression            labels are float targets, not class ids\n"
            "  -h, --help                  this help\n");
}

static int import_csv(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"label-column", required_argument, NULL, 'l'},
        {"header", no_argument, NULL, 'H'},       {"regression", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},         {0}};
    const char *output = NULL, *label = "-1";
    bool header = false, regression = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            output = optarg;
            break;
        case 'l':
            label = optarg;
            break;
        case 'H':
            header = true;
            break;
        case 'r':
            regression = true;
            break;
        case 'h':
            usage_import_csv(stdout);
            return EXIT_OK;
        default:
            return usage_error("bad option");
        }
    }
    if (argc - optind != 1) return usage_error("expected one CSV file");
    if (!output) return usage_error("--output is required");
    const char *path = argv[optind];
    char *endp;
    long label_index = strtol(label, &endp, 10);
    bool label_by_name = *label == '\0' || *endp != '\0';
    if (label_by_name && !header)
        return usage_error("--label-column '%s' is a name, which needs --header", label);

    struct import_csv_options copt = {.header = header,
                                      .regression = regression,
                                      .label_name = label_by_name ? label : NULL,
                                      .label_index = label_index};
    struct import_csv t;
    char err[PATH_MAX + 512];
    if (import_csv_read(path, &copt, &t, err, sizeof err) != 0) return error("%s", err);
    hsize_t xdims[2] = {(hsize_t)t.n, (hsize_t)(t.ncols - 1)}, ydims[2] = {(hsize_t)t.n, 1};
    struct out_file o;
    int rc = out_begin(&o, output);
    if (rc == 0) rc = write_dset(&o, "X", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xdims, t.x);
    if (rc == 0 && regression)
        rc = write_dset(&o, "y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, ydims, t.y);
    else if (rc == 0)
        rc = write_dset(&o, "y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, ydims, t.y);
    if (rc == 0)
        rc = out_commit(&o);
    else
        out_abort(&o);
    if (rc == 0)
        printf("%s: X float32 (%lld, %d), y %s\n", output, (long long)t.n, t.ncols - 1,
               regression ? "float32 (N, 1) targets" : "int32 (N) class ids");
    import_csv_free(&t);
    return rc;
}

/* ---- info ---- */

static void usage_info(FILE *f)
{
    fprintf(f, "usage: mlq dataset info FILE.h5 [--json] [--x NAME] [--y NAME]\n\n"
               "Prints the shape and dtype of X and y, N and D, class counts (class ids) and\n"
               "whether X holds NaN or Inf, then whether the trainer accepts the file.\n\n"
               "options:\n"
               "      --json     one JSON object instead of text\n"
               "      --x NAME   the inputs dataset (default X)\n"
               "      --y NAME   the targets dataset (default y)\n"
               "  -h, --help     this help\n");
}

static const char *h5_type_name(hid_t t)
{
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (cls == H5T_FLOAT)
        return size == 2 ? "float16" : size == 4 ? "float32" : size == 8 ? "float64" : "float";
    if (cls != H5T_INTEGER) return "non-numeric";
    bool s = H5Tget_sign(t) == H5T_SGN_2;
    switch (size) {
    case 1:
        return s ? "int8" : "uint8";
    case 2:
        return s ? "int16" : "uint16";
    case 4:
        return s ? "int32" : "uint32";
    case 8:
        return s ? "int64" : "uint64";
    }
    return "integer";
}

struct dset_desc {
    bool present;
    char dtype[16];
    H5T_class_t cls;
    int rank;
    hsize_t dims[H5S_MAX_RANK];
    int64_t per_row; /* elements after the first dimension */
    bool unstored;   /* not scanned: the declared data is not all in the file */
    int64_t nonfinite, first_bad_row;
    int64_t min, max, negatives; /* integer datasets */
    int64_t *counts;             /* (max + 1) when 0 <= min and max is modest */
};

/* Describes a dataset and scans it by rows: non-finite floats, integer range
 * and class histogram. A dataset whose declared data is not all stored is
 * described but not scanned: scanning would read fill values for as long as
 * the file cares to declare (the check line then says why). */
static int describe(hid_t file, const char *path, int64_t file_bytes, const char *name,
                    bool scan_ints, struct dset_desc *dd)
{
    memset(dd, 0, sizeof *dd);
    dd->first_bad_row = -1;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return 0;
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return error("%s: '%s' is not a dataset", path, name);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int rc = 0;
    double *buf = NULL;
    dd->present = true;
    snprintf(dd->dtype, sizeof dd->dtype, "%s", h5_type_name(t));
    dd->cls = H5Tget_class(t);
    dd->rank = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dd->dims, NULL);
    H5Tclose(t);
    H5Sclose(sp);
    dd->per_row = 1;
    for (int i = 1; i < dd->rank; i++)
        if (__builtin_mul_overflow(dd->per_row, (int64_t)dd->dims[i], &dd->per_row)) {
            rc = error("%s: '%s' has absurd dimensions", path, name);
            goto out;
        }
    if (dd->rank < 1 || dd->per_row == 0 || dd->dims[0] == 0 ||
        (dd->cls != H5T_FLOAT && (dd->cls != H5T_INTEGER || !scan_ints)))
        goto out; /* nothing to scan */
    char why[512];
    if (dataset_check_stored(d, path, name, file_bytes, why, sizeof why) < 0) {
        dd->unstored = true;
        goto out;
    }
    int64_t rows = SCAN_BYTES / 8 / dd->per_row > 0 ? SCAN_BYTES / 8 / dd->per_row : 1;
    buf = malloc((size_t)(rows * dd->per_row) * 8);
    if (!buf) {
        rc = error("out of memory");
        goto out;
    }
    bool isint = dd->cls == H5T_INTEGER;
    dd->min = INT64_MAX;
    dd->max = INT64_MIN;
    hid_t fs = H5Dget_space(d);
    for (hsize_t r = 0; r < dd->dims[0]; r += (hsize_t)rows) {
        hsize_t m = dd->dims[0] - r < (hsize_t)rows ? dd->dims[0] - r : (hsize_t)rows;
        hsize_t start[H5S_MAX_RANK] = {r}, cnt[H5S_MAX_RANK] = {m};
        for (int i = 1; i < dd->rank; i++)
            cnt[i] = dd->dims[i];
        hsize_t elems = m * (hsize_t)dd->per_row;
        hid_t ms = H5Screate_simple(dd->rank, cnt, NULL); /* same shape: HDF5's fast path */
        herr_t ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
        if (ok >= 0)
            ok = H5Dread(d, isint ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, buf);
        H5Sclose(ms);
        if (ok < 0) {
            H5Sclose(fs);
            rc = error("%s: cannot read '%s'", path, name);
            goto out;
        }
        for (hsize_t i = 0; i < elems; i++) {
            if (isint) {
                int64_t v = ((int64_t *)buf)[i];
                dd->min = v < dd->min ? v : dd->min;
                dd->max = v > dd->max ? v : dd->max;
                dd->negatives += v < 0;
            } else if (!isfinite(buf[i])) {
                if (dd->nonfinite++ == 0)
                    dd->first_bad_row = (int64_t)(r + i / (hsize_t)dd->per_row);
            }
        }
    }
    /* A histogram when the ids look like classes: a second pass over y. */
    if (isint && dd->rank <= 2 && dd->per_row == 1 && dd->min >= 0 && dd->max < 100000) {
        dd->counts = calloc((size_t)dd->max + 1, sizeof *dd->counts);
        for (hsize_t r = 0; dd->counts && r < dd->dims[0]; r += (hsize_t)rows) {
            hsize_t m = dd->dims[0] - r < (hsize_t)rows ? dd->dims[0] - r : (hsize_t)rows;
            hsize_t start[2] = {r, 0}, cnt[2] = {m, 1};
            hid_t ms = H5Screate_simple(dd->rank, cnt, NULL);
            herr_t ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
            if (ok >= 0) ok = H5Dread(d, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, buf);
            H5Sclose(ms);
            for (hsize_t i = 0; ok >= 0 && i < m; i++)
                dd->counts[((int64_t *)buf)[i]]++;
        }
    }
    H5Sclose(fs);
out:
    free(buf);
    H5Dclose(d);
    return rc;
}

static herr_t list_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    size_t *left = data;
    if (*left > strlen(name) + 3) {
        fprintf(stderr, " '%s'", name);
        *left -= strlen(name) + 3;
    }
    return 0;
}

static json_t *dims_json(const struct dset_desc *dd)
{
    json_t *a = json_array();
    for (int i = 0; i < dd->rank; i++)
        json_array_append_new(a, json_integer((json_int_t)dd->dims[i]));
    return a;
}

static void print_dims(const struct dset_desc *dd)
{
    printf("(");
    for (int i = 0; i < dd->rank; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)dd->dims[i]);
    printf(")");
}

static int info_file(const char *path, struct spec_dataset src, bool as_json);

/* mlq dataset info's reading of a file runs in a child process: a file that
 * crashes libhdf5 (docs/security.md) crashes the child, not mlq, and one that
 * hangs it is killed. The child reads in process, being the isolation itself.
 * Started, then waited for, so that mlq dataset push hashes the file
 * meanwhile. */
#define INFO_STALL_S 30.0 /* a reader neither running nor reading this long is stuck */

struct info_child {
    pid_t pid;
    int *done; /* set by the child once it is done: one that ended without it
                * died inside libhdf5 (a signal, or a sanitizer's report) */
    const char *path;
};

static int info_start(struct info_child *c, const char *path, const struct spec_dataset *src,
                      bool as_json)
{
    c->path = path;
    c->done =
        mmap(NULL, sizeof *c->done, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c->done == MAP_FAILED) return error("cannot start the dataset reader: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    c->pid = fork();
    if (c->pid < 0) {
        munmap(c->done, sizeof *c->done);
        return error("cannot start the dataset reader: %s", strerror(errno));
    }
    if (c->pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        dataset_set_isolated(false);
        int rc = info_file(path, *src, as_json);
        fflush(stdout);
        fflush(stderr);
        __atomic_store_n(c->done, 1, __ATOMIC_RELEASE);
        _exit(rc);
    }
    return EXIT_OK;
}

static int info_wait(struct info_child *c)
{
    int status = 0;
    int rc = child_wait(c->pid, INFO_STALL_S, &status);
    bool finished = __atomic_load_n(c->done, __ATOMIC_ACQUIRE);
    munmap(c->done, sizeof *c->done);
    if (rc == -ETIMEDOUT)
        return error("dataset reader made no progress for %.0f s on %s; killed", INFO_STALL_S,
                     c->path);
    if (rc < 0) return error("cannot wait for the dataset reader: %s", strerror(-rc));
    if (finished && WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return error("dataset reader crashed (signal %d) on %s", WTERMSIG(status), c->path);
    return error("dataset reader died (exit status %d) on %s",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, c->path);
}

static int info_isolated(const char *path, const struct spec_dataset *src, bool as_json)
{
    struct info_child c;
    int rc = info_start(&c, path, src, as_json);
    return rc != EXIT_OK ? rc : info_wait(&c);
}

static int info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"x", required_argument, NULL, 'x'},
                                         {"y", required_argument, NULL, 'y'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct spec_dataset src = {.x = "X", .y = "y", .scale = true};
    bool as_json = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            as_json = true;
            break;
        case 'x':
            snprintf(src.x, sizeof src.x, "%s", optarg);
            break;
        case 'y':
            snprintf(src.y, sizeof src.y, "%s", optarg);
            break;
        case 'h':
            usage_info(stdout);
            return EXIT_OK;
        default:
            return usage_error("bad option");
        }
    }
    if (argc - optind != 1) return usage_error("expected one HDF5 file");
    const char *path = argv[optind];
    snprintf(src.path, sizeof src.path, "%s", path);
    return info_isolated(path, &src, as_json);
}

static int info_file(const char *path, struct spec_dataset src, bool as_json)
{
    struct stat st;
    if (stat(path, &st) < 0) return error("%s: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0) return error("%s: not an HDF5 file", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return error("%s: cannot open the HDF5 file", path);
    struct dset_desc xd, yd;
    int rc = describe(file, path, (int64_t)st.st_size, src.x, false, &xd);
    memset(&yd, 0, sizeof yd);
    if (rc == 0) rc = describe(file, path, (int64_t)st.st_size, src.y, true, &yd);
    if (rc == 0 && !xd.present) {
        fprintf(stderr, "mlq dataset info: %s: no dataset named '%s'; the file holds:", path,
                src.x);
        size_t left = 1000;
        H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, NULL, list_name, &left);
        fputc('\n', stderr);
        rc = EXIT_FAILURE_GENERIC;
    }
    H5Fclose(file);
    if (rc) {
        free(xd.counts);
        free(yd.counts);
        return rc;
    }

    /* What the trainer would say about the file. */
    char err[512] = "";
    struct dataset *ds = NULL;
    /* A push checks what the trainer checks on opening the file (headers,
     * storage, every label) without loading all of X (0.3 s of inflating
     * for Fashion-MNIST): a budget below X streams it, and a streamed X is
     * checked as the trainer reads it. */
    int64_t budget = check_only ? PUSH_CHECK_BUDGET : 0;
    bool accepted = dataset_open(&ds, &src, yd.present, budget, err, sizeof err) == 0;
    if (accepted) snprintf(err, sizeof err, "ok");
    dataset_close(&ds);

    bool y_class = yd.present && yd.cls == H5T_INTEGER;
    if (check_only) {
        if (!accepted) error("%s: %s (mlq dataset info %s): nothing was sent", path, err, path);
    } else if (as_json) {
        json_t *doc = json_object(), *x = json_object();
        json_object_set_new(doc, "path", json_string(path));
        json_object_set_new(x, "name", json_string(src.x));
        json_object_set_new(x, "dtype", json_string(xd.dtype));
        json_object_set_new(x, "shape", dims_json(&xd));
        json_object_set_new(x, "nonfinite", xd.unstored ? json_null() : json_integer(xd.nonfinite));
        json_object_set_new(doc, "x", x);
        json_object_set_new(doc, "n", json_integer((json_int_t)xd.dims[0]));
        json_object_set_new(doc, "d", json_integer(xd.per_row));
        if (yd.present) {
            json_t *y = json_object();
            json_object_set_new(y, "name", json_string(src.y));
            json_object_set_new(y, "dtype", json_string(yd.dtype));
            json_object_set_new(y, "shape", dims_json(&yd));
            json_object_set_new(y, "kind", json_string(y_class ? "class" : "target"));
            if (y_class && yd.dims[0] > 0 && !yd.unstored) {
                json_object_set_new(y, "min", json_integer(yd.min));
                json_object_set_new(y, "max", json_integer(yd.max));
            }
            if (yd.counts) {
                json_t *counts = json_array();
                for (int64_t i = 0; i <= yd.max; i++)
                    json_array_append_new(counts, json_integer(yd.counts[i]));
                json_object_set_new(y, "classes", json_integer(yd.max + 1));
                json_object_set_new(y, "counts", counts);
            }
            if (!y_class)
                json_object_set_new(y, "nonfinite",
                                    yd.unstored ? json_null() : json_integer(yd.nonfinite));
            json_object_set_new(doc, "y", y);
        } else {
            json_object_set_new(doc, "y", json_null());
        }
        json_object_set_new(doc, "check", json_string(err));
        char *text = json_dumps(doc, JSON_COMPACT);
        if (text) printf("%s\n", text);
        free(text);
        json_decref(doc);
    } else {
        printf("%s\n  %s: %s ", path, src.x, xd.dtype);
        print_dims(&xd);
        printf(", N %llu, D %lld\n", (unsigned long long)xd.dims[0], (long long)xd.per_row);
        if (xd.unstored)
            printf("  %s: not scanned: its storage does not hold what it declares (see check)\n",
                   src.x);
        else if (xd.cls == H5T_FLOAT && xd.nonfinite)
            printf("  NaN/Inf in %s: %lld values, first at row %lld\n", src.x,
                   (long long)xd.nonfinite, (long long)xd.first_bad_row);
        else if (xd.cls == H5T_FLOAT)
            printf("  NaN/Inf in %s: none\n", src.x);
        if (!yd.present) {
            printf("  %s: none\n", src.y);
        } else {
            printf("  %s: %s ", src.y, yd.dtype);
            print_dims(&yd);
            if (yd.unstored) {
                printf(", not scanned: its storage does not hold what it declares (see check)\n");
            } else if (y_class && yd.counts) {
                printf(", class ids, %lld classes\n  class counts:", (long long)(yd.max + 1));
                for (int64_t i = 0; i <= yd.max; i++)
                    printf(" %lld:%lld", (long long)i, (long long)yd.counts[i]);
                printf("\n");
            } else if (y_class && yd.dims[0] > 0) {
                printf(", integers in [%lld, %lld]\n", (long long)yd.min, (long long)yd.max);
            } else if (y_class) {
                printf("\n");
            } else {
                printf(", float targets%s\n", yd.nonfinite ? ", with NaN/Inf" : "");
            }
        }
        printf("  check: %s\n", err);
    }
    free(xd.counts);
    free(yd.counts);
    return accepted ? EXIT_OK : EXIT_FAILURE_GENERIC; /* scripts test the exit code */
}

/* ---- pushed datasets (the broker's store; docs/datasets.md) ---- */

static void usage_push(FILE *f)
{
    fprintf(f, "usage: mlq dataset push FILE.h5 [--name NAME] [--replace] [--x NAME] [--y NAME]\n"
               "                        [--broker E] [--json]\n\n"
               "Uploads FILE.h5 to the broker's dataset store, checked first as 'mlq dataset\n"
               "info' checks it. NAME defaults to the file's name without .h5; --replace\n"
               "gives a name held by other bytes to this file. An interrupted push resumes\n"
               "where it stopped; bytes the broker holds already are not sent again.\n");
}

static int push(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},   {"replace", no_argument, NULL, 'r'},
        {"x", required_argument, NULL, 'x'},      {"y", required_argument, NULL, 'y'},
        {"broker", required_argument, NULL, 'b'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {0}};
    struct spec_dataset src = {.x = "X", .y = "y", .scale = true};
    const char *name = NULL, *broker = NULL;
    bool replace = false, as_json = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            name = optarg;
            break;
        case 'r':
            replace = true;
            break;
        case 'x':
            snprintf(src.x, sizeof src.x, "%s", optarg);
            break;
        case 'y':
            snprintf(src.y, sizeof src.y, "%s", optarg);
            break;
        case 'b':
            broker = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            usage_push(stdout);
            return EXIT_OK;
        default:
            return usage_error("bad option");
        }
    }
    if (argc - optind != 1) return usage_error("expected one HDF5 file");
    const char *path = argv[optind];
    char def[256];
    if (!name) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t n = strlen(base);
        if (n > 3 && strcmp(base + n - 3, ".h5") == 0) n -= 3;
        snprintf(def, sizeof def, "%.*s", (int)(n < 200 ? n : 200), base);
        name = def;
    }
    int rc = cli_dataset_push(path, name, replace, &src, broker, as_json, NULL, false);
    return rc;
}

static int push_gate(void *arg)
{
    const char *was = sub;
    sub = "dataset push";
    int rc = info_wait(arg);
    sub = was;
    return rc;
}

int cli_dataset_push(const char *path, const char *name, bool replace,
                     const struct spec_dataset *src, const char *broker, bool as_json,
                     char sha256[65], bool quiet)
{
    const char *was = sub;
    sub = "dataset push";
    struct spec_dataset s = *src;
    snprintf(s.path, sizeof s.path, "%s", path);
    check_only = true;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    struct info_child check;
    int rc = info_start(&check, path, &s, false);
    check_only = false;
    sub = was;
    if (rc != EXIT_OK) return rc;
    /* The file is checked (in the child) while it is hashed (here). */
    struct dataset_pushed p;
    rc = dataset_push_file(cli_broker_endpoint(broker), path, name, replace, push_gate, &check, &p);
    if (rc != EXIT_OK) return rc;
    if (sha256) snprintf(sha256, 65, "%s", p.sha256);
    double mb = (double)p.size / 1e6, rate = p.seconds > 0 ? (double)p.sent / 1e6 / p.seconds : 0;
    if (as_json) {
        json_t *o =
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:f}", "name", p.name, "sha256", p.sha256,
                      "size", (json_int_t)p.size, "sent", (json_int_t)p.sent, "resumed_at",
                      (json_int_t)p.resumed_at, "have", p.have, "seconds", p.seconds);
        cli_print_json(o);
        json_decref(o);
    } else if (quiet) {
    } else if (p.have) {
        printf("%s: sha256 %s, %.1f MB, already on the broker (0 bytes sent)\n", p.name, p.sha256,
               mb);
    } else {
        printf("pushed %s: sha256 %s, %.1f MB (%.1f MB sent%s in %.2f s, %.0f MB/s)\n", p.name,
               p.sha256, mb, (double)p.sent / 1e6, p.resumed_at ? ", resumed" : "", p.seconds,
               rate);
        if (p.resumed_at)
            printf("  resumed at %.1f MB: the broker held the rest from an earlier push\n",
                   (double)p.resumed_at / 1e6);
    }
    return EXIT_OK;
}

static int ls(int argc, char **argv)
{
    const char *broker = NULL;
    bool as_json = false;
    int rc = cli_list_args(argc, argv, "mlq dataset ls [--broker E] [--json]", CLI_NO_NAME, NULL,
                           &broker, &as_json);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    json_t *reply;
    rc = cli_broker_call(cli_broker_endpoint(broker), PROTO_DATASETS, json_object(), &reply);
    if (rc) return rc;
    json_t *list = json_object_get(reply, "datasets");
    if (as_json) {
        cli_print_json(list);
    } else if (!json_array_size(list)) {
        printf("no datasets pushed (mlq dataset push FILE.h5)\n");
    } else {
        printf("%-24s %-16s %10s  %-16s %5s  %s\n", "NAME", "SHA256", "SIZE", "PUSHED", "RUNS",
               "OWNER");
        size_t i;
        json_t *d;
        json_array_foreach(list, i, d)
        {
            time_t t = (time_t)json_number_value(json_object_get(d, "pushed"));
            char when[32];
            strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&t));
            const char *owner = json_string_value(json_object_get(d, "owner"));
            printf("%-24s %-16.16s %8.1fMB  %-16s %5lld  %s\n",
                   json_string_value(json_object_get(d, "name")),
                   json_string_value(json_object_get(d, "sha256")),
                   (double)json_integer_value(json_object_get(d, "size")) / 1e6, when,
                   (long long)json_integer_value(json_object_get(d, "runs")), owner ? owner : "-");
        }
    }
    json_decref(reply);
    return EXIT_OK;
}

static int rm(int argc, char **argv)
{
    const char *broker = NULL, *name = NULL;
    bool as_json = false;
    int rc = cli_list_args(argc, argv, "mlq dataset rm [--broker E] [--json] NAME", CLI_NAME, &name,
                           &broker, &as_json);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    json_t *reply;
    rc = cli_broker_call(cli_broker_endpoint(broker), PROTO_DATASET_RM,
                         json_pack("{s:s}", "name", name), &reply);
    if (rc) return rc;
    if (as_json)
        cli_print_json(reply);
    else
        printf("removed dataset %s (sha256 %s)\n", name,
               json_string_value(json_object_get(reply, "sha256")));
    json_decref(reply);
    return EXIT_OK;
}

static int get(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"broker", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *output = NULL, *broker = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (c == 'o')
            output = optarg;
        else if (c == 'b')
            broker = optarg;
        else if (c == 'h') {
            printf("usage: mlq dataset get NAME|SHA256 --output FILE [--broker E]\n");
            return EXIT_OK;
        } else
            return usage_error("bad option");
    }
    if (argc - optind != 1 || !output) return usage_error("expected NAME|SHA256 and --output FILE");
    const char *what = argv[optind], *endpoint = cli_broker_endpoint(broker);
    char sha[SHA256_HEX_LEN + 1];
    if (sha256_hex_valid(what)) {
        snprintf(sha, sizeof sha, "%s", what);
    } else {
        json_t *reply, *d;
        size_t i;
        int rc = cli_broker_call(endpoint, PROTO_DATASETS, json_object(), &reply);
        if (rc) return rc;
        sha[0] = '\0';
        json_array_foreach(json_object_get(reply, "datasets"), i, d)
        {
            if (strcmp(json_string_value(json_object_get(d, "name")), what) == 0)
                snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(d, "sha256")));
        }
        json_decref(reply);
        if (!sha[0]) {
            fprintf(stderr, "mlq dataset get: %s: no dataset of that name (mlq dataset ls)\n",
                    what);
            return EXIT_NOT_FOUND;
        }
    }
    int64_t size;
    int rc = dataset_fetch_file(endpoint, sha, output, &size);
    if (rc == EXIT_OK) printf("%s: %lld bytes, sha256 %s verified\n", output, (long long)size, sha);
    return rc;
}

/* ---- dispatch ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: mlq dataset SUBCOMMAND [ARGS...]\n\n"
               "subcommands:\n"
               "  import-idx IMAGES LABELS --output FILE.h5   IDX (MNIST format) to HDF5\n"
               "  import-csv FILE.csv --output FILE.h5        CSV to HDF5\n"
               "  import-text FILE... --context T --output FILE.h5\n"
               "                                              text to byte-level token windows\n"
               "  info FILE.h5 [--json]                       shapes, dtypes, class counts\n"
               "  push FILE.h5 [--name NAME] [--replace]      upload to the broker's store\n"
               "  ls [--json]                                 the broker's pushed datasets\n"
               "  rm NAME                                     remove a pushed dataset\n"
               "  get NAME|SHA256 --output FILE               download one, verified\n\n"
               "Run 'mlq dataset SUBCOMMAND --help' for its options. Layout: docs/datasets.md.\n");
}

int cmd_dataset(int argc, char **argv)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack */
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(name, "import-idx") == 0) {
        sub = "dataset import-idx";
        return import_idx(argc - 1, argv + 1);
    }
    if (strcmp(name, "import-csv") == 0) {
        sub = "dataset import-csv";
        return import_csv(argc - 1, argv + 1);
    }
    if (strcmp(name, "import-text") == 0) {
        sub = "dataset import-text";
        return import_text(argc - 1, argv + 1);
    }
    if (strcmp(name, "info") == 0) {
        sub = "dataset info";
        return info(argc - 1, argv + 1);
    }
    if (strcmp(name, "push") == 0) {
        sub = "dataset push";
        return push(argc - 1, argv + 1);
    }
    if (strcmp(name, "ls") == 0) {
        sub = "dataset ls";
        return ls(argc - 1, argv + 1);
    }
    if (strcmp(name, "rm") == 0) {
        sub = "dataset rm";
        return rm(argc - 1, argv + 1);
    }
    if (strcmp(name, "get") == 0) {
        sub = "dataset get";
        return get(argc - 1, argv + 1);
    }
    fprintf(stderr, "mlq dataset: unknown subcommand '%s'; run 'mlq dataset --help'\n", name);
    return EXIT_USAGE;
}
