#include "import.h"
#include "errmsg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <zlib.h>

/* ---- IDX ---- */

#define IDX_FIRST_BUFFER (INT64_C(1) << 20)

static const char *idx_type_name(int t)
{
    switch (t) {
    case 0x08:
        return "uint8";
    case 0x09:
        return "int8";
    case 0x0B:
        return "int16";
    case 0x0C:
        return "int32";
    case 0x0D:
        return "float32";
    case 0x0E:
        return "float64";
    }
    return "unknown";
}

/* A short read is a damaged gzip stream when zlib says so (a wrong CRC, a cut
 * trailer): a read error naming it, else 0 (the file itself is short). */
static int gz_failure(gzFile f, const char *path, char *err, size_t errlen)
{
    int errnum;
    const char *msg = gzerror(f, &errnum);
    if (errnum == Z_OK) return 0;
    return errmsg(err, errlen, -EIO, "%s: read error: %s", path,
                  errnum == Z_ERRNO ? strerror(errno) : msg);
}

/* gzopen reads both gzip-compressed and raw files. */
int import_idx_read(const char *path, struct import_idx *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) < 0) return errmsg(err, errlen, -errno, "%s: %s", path, strerror(errno));
    gzFile f = gzopen(path, "rb");
    if (!f) {
        int e = errno ? errno : ENOMEM;
        return errmsg(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    gzbuffer(f, 1 << 18);
    int rc = -EINVAL;
    unsigned char head[4], be[4];
    if (gzread(f, head, 4) != 4) {
        if ((rc = gz_failure(f, path, err, errlen)) == 0)
            rc = errmsg(err, errlen, -EINVAL, "%s: too short for an IDX file", path);
        goto out;
    }
    if (head[0] != 0 || head[1] != 0) {
        errmsg(err, errlen, rc,
               "%s: not an IDX file (magic %02x %02x %02x %02x, expected 00 00 TYPE NDIMS)", path,
               head[0], head[1], head[2], head[3]);
        goto out;
    }
    if (head[2] != 0x08) {
        errmsg(err, errlen, rc,
               "%s: IDX type 0x%02x (%s) is not supported; images and labels must be uint8 "
               "(0x08)",
               path, head[2], idx_type_name(head[2]));
        goto out;
    }
    if (head[3] < 1 || head[3] > 4) {
        errmsg(err, errlen, rc, "%s: IDX file has %d dimensions; expected 1 to 4", path, head[3]);
        goto out;
    }
    out->ndims = head[3];
    out->count = 1;
    for (int i = 0; i < out->ndims; i++) {
        if (gzread(f, be, 4) != 4) {
            if ((rc = gz_failure(f, path, err, errlen)) == 0)
                rc = errmsg(err, errlen, -EINVAL, "%s: truncated IDX header", path);
            goto out;
        }
        out->dims[i] = (uint32_t)be[0] << 24 | (uint32_t)be[1] << 16 | (uint32_t)be[2] << 8 | be[3];
        if (__builtin_mul_overflow(out->count, (int64_t)out->dims[i], &out->count) ||
            out->count > IMPORT_IDX_MAX_BYTES) {
            errmsg(err, errlen, rc, "%s: IDX dimensions are absurdly large (dimension %d is %u)",
                   path, i, out->dims[i]);
            goto out;
        }
    }
    if (out->count == 0) {
        errmsg(err, errlen, rc, "%s: IDX file is empty (a dimension is 0)", path);
        goto out;
    }
    /* The buffer grows with the data that arrives: a 16-byte header can
     * announce 64 GiB, and a gzip file's size says little about its data. */
    int64_t cap = 0;
    for (int64_t done = 0; done < out->count;) {
        if (done == cap) {
            cap = cap ? 2 * cap : IDX_FIRST_BUFFER;
            if (cap > out->count) cap = out->count;
            uint8_t *grown = realloc(out->data, (size_t)cap);
            if (!grown) {
                rc = errmsg(err, errlen, -ENOMEM, "%s: out of memory for %lld bytes", path,
                            (long long)cap);
                goto out;
            }
            out->data = grown;
        }
        int64_t want = cap - done < (1 << 30) ? cap - done : (1 << 30);
        int got = gzread(f, out->data + done, (unsigned)want);
        if (got < 0) {
            if ((rc = gz_failure(f, path, err, errlen)) == 0)
                rc = errmsg(err, errlen, -EIO, "%s: read error", path);
            goto out;
        }
        if (got == 0) {
            errmsg(err, errlen, rc,
                   "%s: truncated: the header announces %lld bytes of data, the file holds %lld",
                   path, (long long)out->count, (long long)done);
            goto out;
        }
        done += got;
    }
    if (gzgetc(f) != -1) {
        errmsg(err, errlen, rc, "%s: more data than the header's dimensions announce", path);
        goto out;
    }
    /* The end of the data is not the end of the stream: the trailer's CRC. */
    if ((rc = gz_failure(f, path, err, errlen)) != 0) goto out;
    rc = 0;
out:
    gzclose(f);
    if (rc) import_idx_free(out);
    return rc;
}

void import_idx_free(struct import_idx *idx)
{
    free(idx->data);
    idx->data = NULL;
}

/* ---- CSV ---- */

/* Splits line in place on commas, trimming blanks. Returns the field count. */
static int split_fields(char *line, char ***fields, int *cap)
{
    int n = 0;
    for (char *p = line;;) {
        if (n == *cap) {
            int ncap = *cap ? *cap * 2 : 16;
            char **nf = realloc(*fields, (size_t)ncap * sizeof *nf);
            if (!nf) return -1;
            *fields = nf;
            *cap = ncap;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        (*fields)[n++] = p;
        char *comma = strchr(p, ',');
        char *end = comma ? comma : p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (!comma) return n;
        p = comma + 1;
    }
}

struct growbuf {
    void *data;
    size_t len, cap; /* bytes */
};

static int grow_push(struct growbuf *g, const void *src, size_t bytes)
{
    if (g->len + bytes > g->cap) {
        size_t ncap = g->cap ? g->cap : 1 << 16;
        while (ncap < g->len + bytes)
            ncap *= 2;
        void *nd = realloc(g->data, ncap);
        if (!nd) return -1;
        g->data = nd;
        g->cap = ncap;
    }
    memcpy((char *)g->data + g->len, src, bytes);
    g->len += bytes;
    return 0;
}

int import_csv_read(const char *path, const struct import_csv_options *opt, struct import_csv *out,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return errmsg(err, errlen, -errno, "%s: %s", path, strerror(errno));
    char *line = NULL, **fields = NULL;
    size_t linecap = 0;
    int fcap = 0, ncols = -1, lcol = -1, rc = -EINVAL;
    struct growbuf xs = {0}, ys = {0};
    float *row = NULL;
    int64_t n = 0, lineno = 0;
    ssize_t len;
    while ((len = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (strspn(line, " \t") == (size_t)len) continue;
        int nf = split_fields(line, &fields, &fcap);
        if (nf < 0) {
            rc = errmsg(err, errlen, -ENOMEM, "out of memory");
            goto out;
        }
        if (ncols < 0) {
            ncols = nf;
            if (ncols < 2) {
                errmsg(err, errlen, rc,
                       "%s: line %lld: %d column; need at least one input and a label", path,
                       (long long)lineno, ncols);
                goto out;
            }
            if (opt->label_name) {
                for (int i = 0; i < nf && lcol < 0; i++)
                    if (strcmp(fields[i], opt->label_name) == 0) lcol = i;
                if (lcol < 0) {
                    errmsg(err, errlen, rc, "%s: no column named '%s' in the header", path,
                           opt->label_name);
                    goto out;
                }
            } else {
                long li = opt->label_index;
                lcol = (int)(li < 0 ? ncols + li : li);
                if (li >= ncols || lcol < 0) {
                    errmsg(err, errlen, rc, "%s: --label-column %ld is outside the %d columns",
                           path, li, ncols);
                    goto out;
                }
            }
            row = malloc((size_t)ncols * sizeof *row);
            if (!row) {
                rc = errmsg(err, errlen, -ENOMEM, "out of memory");
                goto out;
            }
            if (opt->header) continue;
        }
        if (nf != ncols) {
            errmsg(err, errlen, rc, "%s: line %lld: %d fields, expected %d", path,
                   (long long)lineno, nf, ncols);
            goto out;
        }
        int j = 0;
        for (int i = 0; i < nf; i++) {
            char *e;
            errno = 0;
            if (i == lcol && !opt->regression) {
                long long v = strtoll(fields[i], &e, 10);
                if (*fields[i] == '\0' || *e != '\0' || errno || v < 0 || v > INT32_MAX) {
                    errmsg(err, errlen, rc,
                           "%s: line %lld: label '%s' is not a class id (an integer >= 0); use "
                           "--regression for float targets",
                           path, (long long)lineno, fields[i]);
                    goto out;
                }
                int32_t id = (int32_t)v;
                if (grow_push(&ys, &id, sizeof id) < 0) goto nomem;
                continue;
            }
            float v = strtof(fields[i], &e);
            if (*fields[i] == '\0' || *e != '\0') {
                errmsg(err, errlen, rc, "%s: line %lld, column %d: '%s' is not a number", path,
                       (long long)lineno, i, fields[i]);
                goto out;
            }
            if (!isfinite(v)) {
                errmsg(err, errlen, rc, "%s: line %lld, column %d: '%s' is not a finite float32",
                       path, (long long)lineno, i, fields[i]);
                goto out;
            }
            if (i == lcol) {
                if (grow_push(&ys, &v, sizeof v) < 0) goto nomem;
            } else {
                row[j++] = v;
            }
        }
        if (grow_push(&xs, row, (size_t)j * sizeof *row) < 0) goto nomem;
        n++;
    }
    if (ferror(f)) {
        rc = errmsg(err, errlen, -EIO, "%s: read error: %s", path, strerror(errno));
        goto out;
    }
    if (n == 0) {
        errmsg(err, errlen, rc, "%s: no data rows", path);
        goto out;
    }
    out->n = n;
    out->ncols = ncols;
    out->x = xs.data;
    out->y = ys.data;
    xs.data = ys.data = NULL;
    rc = 0;
    goto out;
nomem:
    rc = errmsg(err, errlen, -ENOMEM, "out of memory after %lld rows", (long long)n);
out:
    fclose(f);
    free(line);
    free(fields);
    free(row);
    free(xs.data);
    free(ys.data);
    return rc;
}

void import_csv_free(struct import_csv *csv)
{
    free(csv->x);
    free(csv->y);
    csv->x = csv->y = NULL;
}
