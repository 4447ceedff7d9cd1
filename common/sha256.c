#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "errmsg.h"

int sha256_init(struct sha256 *h)
{
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx) return -ENOMEM;
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        sha256_clear(h);
        return -EIO;
    }
    return 0;
}

int sha256_update(struct sha256 *h, const void *buf, size_t len)
{
    if (!h->ctx) return -EINVAL;
    return EVP_DigestUpdate(h->ctx, buf, len) == 1 ? 0 : -EIO;
}

int sha256_final(struct sha256 *h, unsigned char out[SHA256_BYTES])
{
    if (!h->ctx) return -EINVAL;
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, out, &n) == 1 && n == SHA256_BYTES;
    sha256_clear(h);
    return ok ? 0 : -EIO;
}

void sha256_clear(struct sha256 *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
}

int sha256_buf(const void *buf, size_t len, unsigned char out[SHA256_BYTES])
{
    struct sha256 h;
    int rc = sha256_init(&h);
    if (rc == 0 && (rc = sha256_update(&h, buf, len)) != 0) sha256_clear(&h);
    return rc ? rc : sha256_final(&h, out);
}

void sha256_hex(const unsigned char digest[SHA256_BYTES], char hex[SHA256_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_BYTES; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[SHA256_HEX_LEN] = '\0';
}

bool sha256_hex_valid(const char *s)
{
    if (!s) return false;
    for (int i = 0; i < SHA256_HEX_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return s[SHA256_HEX_LEN] == '\0';
}

int sha256_file(const char *path, char hex[SHA256_HEX_LEN + 1], long long *size, char *err,
                size_t errlen)
{
    return sha256_file_stoppable(path, hex, size, NULL, err, errlen);
}

int sha256_file_stoppable(const char *path, char hex[SHA256_HEX_LEN + 1], long long *size,
                          atomic_int *stop, char *err, size_t errlen)
{
    enum { PIECE = 1 << 20 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errmsg(err, errlen, -errno, "%s: %s", path, strerror(errno));
    unsigned char *buf = malloc(PIECE);
    struct sha256 h = {0};
    int rc = buf ? sha256_init(&h) : -ENOMEM;
    long long total = 0;
    bool said = false;
    while (rc == 0) {
        if (stop && atomic_load(stop)) {
            rc = errmsg(err, errlen, -ECANCELED, "%s: hashing stopped", path);
            said = true;
            break;
        }
        ssize_t n = read(fd, buf, PIECE);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = errmsg(err, errlen, -errno, "%s: %s", path, strerror(errno));
            said = true;
            break;
        }
        if (n == 0) break;
        total += n;
        rc = sha256_update(&h, buf, (size_t)n);
    }
    unsigned char digest[SHA256_BYTES];
    if (rc == 0) rc = sha256_final(&h, digest);
    sha256_clear(&h);
    if (rc == 0) {
        sha256_hex(digest, hex);
        if (size) *size = total;
    } else if (!said) {
        errmsg(err, errlen, rc, "%s: hashing failed: %s", path, strerror(-rc));
    }
    free(buf);
    close(fd);
    return rc;
}
