/* The IDX importer (cli/import.c: import_idx_read), what `mlq dataset
 * import-idx` reads, on a file made of the fuzzer's bytes.
 *
 * Input: one flag byte, then the IDX bytes. Flag bit 0: gzip them first, as
 * MNIST ships; bit 1 with it: cut the gzip stream short by the next byte's
 * value, a truncated download.
 * Invariants: a refused file says why; an accepted one has 1 to 4 dimensions
 * and exactly their product of bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "fuzz_util.h"
#include "import.h"

/* The bytes as a gzip member (deflate with a gzip header). */
static unsigned char *gzip(const uint8_t *src, size_t len, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, (uLong)len) + 32;
    unsigned char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (unsigned char *)src;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t flags = data[0], cut = data[1];
    const uint8_t *body = data + 2;
    size_t len = size - 2;
    unsigned char *gz = NULL;
    if (flags & 1) {
        size_t gz_len;
        gz = gzip(body, len, &gz_len);
        if (!gz) return 0;
        if ((flags & 2) && cut < gz_len) gz_len -= cut + 1;
        body = gz;
        len = gz_len;
    }
    struct import_idx idx;
    char err[512] = "";
    int rc = import_idx_read(fuzz_file(body, len), &idx, err, sizeof err);
    free(gz);
    fuzz_note("%s", rc ? err : "accepted");
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err[0] != '\0', "a file was refused (%d) without a reason", rc);
        FUZZ_CHECK(idx.data == NULL, "a refused file kept its data");
        return 0;
    }
    FUZZ_CHECK(idx.ndims >= 1 && idx.ndims <= 4 && idx.data, "%d dimensions", idx.ndims);
    int64_t count = 1;
    for (int i = 0; i < idx.ndims; i++)
        count *= idx.dims[i];
    FUZZ_CHECK(count == idx.count && count > 0 && count <= IMPORT_IDX_MAX_BYTES,
               "%lld elements for dimensions that make %lld", (long long)idx.count,
               (long long)count);
    FUZZ_CHECK(len >= (size_t)count + 4 + 4 * (size_t)idx.ndims || (flags & 1),
               "%lld elements from a %zu-byte file", (long long)count, len);
    import_idx_free(&idx);
    return 0;
}
