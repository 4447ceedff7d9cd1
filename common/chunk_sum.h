/* The sum that checks one chunk of a pushed dataset on each hop: XXH3-128
 * (libxxhash), 32 lower-case hex digits in CHUNK's "chunk_xxh128".
 *
 * A chunk need only be checked for damage (in transit, on a disk): what makes
 * the bytes true is the whole file's SHA-256, checked at the end against the
 * dataset's address, and a chunk's sum comes from the broker that sends the
 * chunk, so a cryptographic sum would prove nothing more. XXH3 runs at about
 * 10 GB/s where SHA-256 runs at 1.8, and one SHA-256 pass fewer on every side
 * of a transfer is what a push and a fetch waited for (docs/datasets.md, "The
 * store on the broker"). Objects pushed to a broker before it have SHA-256
 * chunk sums ("chunk_sha256"), which are still checked. */
#ifndef MLQ_CHUNK_SUM_H
#define MLQ_CHUNK_SUM_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define CHUNK_SUM_BYTES 16
#define CHUNK_SUM_HEX_LEN 32    /* without the NUL */
#define CHUNK_SUM_NAME "xxh128" /* FETCH's "sum": the fetcher checks these */

/* The sum of buf, in XXH128's canonical (big-endian) bytes. */
void chunk_sum(const void *buf, size_t len, unsigned char out[CHUNK_SUM_BYTES]);
void chunk_sum_hex(const unsigned char sum[CHUNK_SUM_BYTES], char hex[CHUNK_SUM_HEX_LEN + 1]);

/* Whether buf is the chunk a CHUNK's body describes: its "chunk_xxh128", or
 * else its "chunk_sha256"; false when it has neither. */
bool chunk_matches(const json_t *body, const void *buf, size_t len);

#endif
