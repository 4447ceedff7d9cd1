#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

void bytes_hex(const unsigned char *bytes, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    hex[2 * n] = '\0';
}

void sha256_hex(const unsigned char digest[SHA256_BYTES], char hex[SHA256_HEX_LEN + 1])
{
    bytes_hex(digest, SHA256_BYTES, hex);
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

struct sha256_follower {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* written grew, hashed grew, or stop */
    int fd;
    int64_t written; /* bytes the writer has written: the thread's goal */
    int64_t hashed;  /* bytes in hash */
    bool stop;
    int rc; /* 0, or the first read's or hash's failure (the thread then idles) */
    struct sha256 hash;
    unsigned char *buf;
};

static void *follow_main(void *arg)
{
    enum { PIECE = 1 << 20 };
    struct sha256_follower *f = arg;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->stop && (f->rc || f->hashed >= f->written))
            pthread_cond_wait(&f->moved, &f->lock);
        if (f->stop) break;
        int64_t off = f->hashed, left = f->written - off;
        size_t n = (size_t)(left < PIECE ? left : PIECE);
        pthread_mutex_unlock(&f->lock);
        ssize_t got = pread(f->fd, f->buf, n, off);
        bool again = got < 0 && errno == EINTR;
        int rc = got == (ssize_t)n ? sha256_update(&f->hash, f->buf, n) : -EIO;
        pthread_mutex_lock(&f->lock);
        if (again) continue;
        if (rc)
            f->rc = rc;
        else
            f->hashed += (int64_t)n;
        pthread_cond_broadcast(&f->moved);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static void follower_free(struct sha256_follower *f)
{
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->moved);
    sha256_clear(&f->hash);
    if (f->fd >= 0) close(f->fd);
    free(f->buf);
    free(f);
}

int sha256_follow(struct sha256_follower **out, int fd)
{
    *out = NULL;
    struct sha256_follower *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->fd = -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->moved, NULL);
    int rc = (f->buf = malloc(1 << 20)) ? sha256_init(&f->hash) : -ENOMEM;
    if (rc == 0 && (f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) rc = -errno;
    if (rc == 0) rc = -pthread_create(&f->thread, NULL, follow_main, f);
    if (rc) {
        follower_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void sha256_follow_to(struct sha256_follower *f, int64_t written)
{
    pthread_mutex_lock(&f->lock);
    if (written > f->written) {
        f->written = written;
        pthread_cond_broadcast(&f->moved);
    }
    pthread_mutex_unlock(&f->lock);
}

static void follower_join(struct sha256_follower *f)
{
    pthread_mutex_lock(&f->lock);
    f->stop = true;
    pthread_cond_broadcast(&f->moved);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
}

int sha256_follow_final(struct sha256_follower *f, int64_t size, unsigned char out[SHA256_BYTES])
{
    pthread_mutex_lock(&f->lock);
    int rc = size > f->written ? -EINVAL : 0;
    while (!rc && !f->rc && f->hashed < size)
        pthread_cond_wait(&f->moved, &f->lock);
    if (!rc) rc = f->rc;
    if (!rc && f->hashed != size) rc = -EINVAL; /* hashed past size: told more than size */
    pthread_mutex_unlock(&f->lock);
    follower_join(f);
    if (!rc) rc = sha256_final(&f->hash, out);
    follower_free(f);
    return rc;
}

void sha256_follow_stop(struct sha256_follower *f)
{
    if (!f) return;
    follower_join(f);
    follower_free(f);
}
