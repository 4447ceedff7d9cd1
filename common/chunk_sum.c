#include "chunk_sum.h"

#include <string.h>

#include <xxhash.h>

#include "sha256.h"

void chunk_sum(const void *buf, size_t len, unsigned char out[CHUNK_SUM_BYTES])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
    memcpy(out, c.digest, CHUNK_SUM_BYTES);
}

void chunk_sum_hex(const unsigned char sum[CHUNK_SUM_BYTES], char hex[CHUNK_SUM_HEX_LEN + 1])
{
    bytes_hex(sum, CHUNK_SUM_BYTES, hex);
}

bool chunk_matches(const json_t *body, const void *buf, size_t len)
{
    const char *want = json_string_value(json_object_get(body, "chunk_xxh128"));
    if (want) {
        unsigned char sum[CHUNK_SUM_BYTES];
        char hex[CHUNK_SUM_HEX_LEN + 1];
        chunk_sum(buf, len, sum);
        chunk_sum_hex(sum, hex);
        return strcmp(hex, want) == 0;
    }
    want = json_string_value(json_object_get(body, "chunk_sha256"));
    unsigned char d[SHA256_BYTES];
    char hex[SHA256_HEX_LEN + 1];
    if (!want || sha256_buf(buf, len, d) != 0) return false;
    sha256_hex(d, hex);
    return strcmp(hex, want) == 0;
}
