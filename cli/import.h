/* Parsing the files `mlq dataset` imports (IDX and CSV), apart from writing
 * HDF5, so that the fuzz targets (tests/fuzz) read them as the command does.
 * Each reader returns 0, or -errno / -EINVAL with a message naming the file
 * and the reason in err (the command prints it as it is). */
#ifndef MLQ_IMPORT_H
#define MLQ_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMPORT_IDX_MAX_BYTES (INT64_C(1) << 36) /* 64 GiB: larger is a corrupt header */

/* One IDX file: uint8 elements, row-major, dims as in the header. */
struct import_idx {
    int ndims;
    uint32_t dims[4];
    int64_t count; /* elements */
    uint8_t *data; /* (count), owned: import_idx_free */
};

/* Reads an IDX file, gzip-compressed or raw. */
int import_idx_read(const char *path, struct import_idx *out, char *err, size_t errlen);
void import_idx_free(struct import_idx *idx);

struct import_csv_options {
    bool header;            /* the first line holds column names */
    bool regression;        /* labels are float targets, not class ids */
    const char *label_name; /* the label column by header name, or NULL */
    long label_index;       /* else by index; negative counts from the end */
};

/* A CSV file's rows: every column but the label column as inputs. */
struct import_csv {
    int64_t n; /* data rows */
    int ncols; /* columns, the label's included */
    float *x;  /* (n, ncols - 1), owned */
    void *y;   /* int32 (n) class ids, or float (n) with regression; owned */
};

/* Reads comma-separated numbers; blank lines are skipped. */
int import_csv_read(const char *path, const struct import_csv_options *opt, struct import_csv *out,
                    char *err, size_t errlen);
void import_csv_free(struct import_csv *csv);

#endif
