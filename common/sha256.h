/* SHA-256 over OpenSSL's EVP interface (libcrypto uses the CPU's SHA
 * extensions where it has them). A dataset's address is the SHA-256 of the
 * whole file as 64 lower-case hex digits, what sha256sum prints
 * (docs/datasets.md, "Pushed datasets"). */
#ifndef MLQ_SHA256_H
#define MLQ_SHA256_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX_LEN 64 /* without the NUL */

/* A running hash. init allocates (EVP_MD_CTX); final and clear free it,
 * so an abandoned hash is released with sha256_clear. */
struct sha256 {
    void *ctx; /* EVP_MD_CTX *, NULL when not started */
};

int sha256_init(struct sha256 *h);                                /* 0 or -ENOMEM */
int sha256_update(struct sha256 *h, const void *buf, size_t len); /* 0 or -EIO */
/* Writes the digest to out and releases the context (also on failure). */
int sha256_final(struct sha256 *h, unsigned char out[SHA256_BYTES]);
void sha256_clear(struct sha256 *h); /* accepts a cleared or finished hash */

/* One buffer at once. */
int sha256_buf(const void *buf, size_t len, unsigned char out[SHA256_BYTES]);
/* n bytes as 2n lower-case hex digits and a NUL. */
void bytes_hex(const unsigned char *bytes, size_t n, char *hex);
/* 64 lower-case hex digits and a NUL into hex. */
void sha256_hex(const unsigned char digest[SHA256_BYTES], char hex[SHA256_HEX_LEN + 1]);
/* True for exactly 64 lower-case hex digits (what sha256_hex writes). */
bool sha256_hex_valid(const char *s);
/* The hash of a whole file (read in 1 MiB pieces) into hex; size (may be
 * NULL) receives its length. 0 or -errno with err naming the file. */
int sha256_file(const char *path, char hex[SHA256_HEX_LEN + 1], long long *size, char *err,
                size_t errlen);
/* The same from a thread another may stop: -ECANCELED once *stop is set
 * (checked between pieces). */
int sha256_file_stoppable(const char *path, char hex[SHA256_HEX_LEN + 1], long long *size,
                          atomic_int *stop, char *err, size_t errlen);

/* The SHA-256 of a file's prefix on a thread of its own, behind the file's
 * writer: the writer says how far the file is written, from its start in
 * order, and the thread reads those bytes back (from the page cache) and
 * hashes them. A push or a fetch checks each chunk and the whole file:
 * with the whole file's hash here they run on two cores, not one after
 * the other on the thread that moves the bytes. */
struct sha256_follower;

/* Starts hashing fd (duplicated: the caller may close its own) from byte 0.
 * 0 or -errno (no memory, no thread). */
int sha256_follow(struct sha256_follower **out, int fd);
/* The file's first `written` bytes are written (never less than told before). */
void sha256_follow_to(struct sha256_follower *f, int64_t written);
/* Waits until the first `size` bytes are hashed (sha256_follow_to them
 * first), writes their digest and frees f. 0, -EIO (a read or the hash
 * failed) or -EINVAL (size beyond what was told). */
int sha256_follow_final(struct sha256_follower *f, int64_t size, unsigned char out[SHA256_BYTES]);
/* Stops the thread and frees f without a digest; accepts NULL. */
void sha256_follow_stop(struct sha256_follower *f);

#endif
