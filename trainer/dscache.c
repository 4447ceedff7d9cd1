#include "dscache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "errmsg.h"
#include "log.h"

#define MB (INT64_C(1) << 20)

static int statvfs_free(const char *dir, int64_t *out)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0) return -errno;
    *out = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
    return 0;
}

/* mkdir -p, each new directory 0750. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[DSCACHE_PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return errmsg(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST)
            return errmsg(err, errlen, -errno, "dataset cache %s: %s", p, strerror(errno));
        *s = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
        return errmsg(err, errlen, -ENOTDIR, "dataset cache %s: not a directory", p);
    return 0;
}

/* Outputs a killed trainer left (trainers of one host may share the
 * cache: only those whose process is gone). */
static void remove_orphan_outputs(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long job;
        long pid;
        char tail[4];
        if (sscanf(e->d_name, "job-%lld.%ld.%3s", &job, &pid, tail) != 3 || strcmp(tail, "h5") ||
            pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("dataset cache: removed %s/%s, left by a trainer that is gone", dir,
                     e->d_name);
    }
    closedir(d);
}

int dscache_open(struct dscache *c, const char *dir, int64_t limit_mb, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (!dir || !dir[0])
        return errmsg(err, errlen, -EINVAL, "trainer.dataset_cache_dir: must not be empty");
    if (snprintf(c->dir, sizeof c->dir, "%s", dir) >= (int)sizeof c->dir)
        return errmsg(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
    c->limit = (limit_mb > 0 ? limit_mb : 10240) * MB;
    c->free_bytes = statvfs_free;
    char sub[DSCACHE_PATH_MAX];
    int rc = make_dirs(c->dir, err, errlen);
    snprintf(sub, sizeof sub, "%s/objects", c->dir);
    if (!rc) rc = make_dirs(sub, err, errlen);
    snprintf(sub, sizeof sub, "%s/partial", c->dir);
    if (!rc) rc = make_dirs(sub, err, errlen);
    snprintf(sub, sizeof sub, "%s/outputs", c->dir);
    if (!rc) rc = make_dirs(sub, err, errlen);
    if (!rc) remove_orphan_outputs(sub);
    return rc;
}

int dscache_output_path(const struct dscache *c, int64_t job, char buf[DSCACHE_PATH_MAX])
{
    int n = snprintf(buf, DSCACHE_PATH_MAX, "%s/outputs/job-%lld.%ld.h5", c->dir, (long long)job,
                     (long)getpid());
    return n < 0 || n >= DSCACHE_PATH_MAX ? -ENAMETOOLONG : 0;
}

int dscache_object_path(const struct dscache *c, const char *sha, char buf[DSCACHE_PATH_MAX])
{
    if (!sha256_hex_valid(sha)) return -EINVAL;
    int n = snprintf(buf, DSCACHE_PATH_MAX, "%s/objects/%s", c->dir, sha);
    return n < 0 || n >= DSCACHE_PATH_MAX ? -ENAMETOOLONG : 0;
}

int dscache_part_path(const struct dscache *c, const char *sha, char buf[DSCACHE_PATH_MAX])
{
    if (!sha256_hex_valid(sha)) return -EINVAL;
    int n = snprintf(buf, DSCACHE_PATH_MAX, "%s/partial/%s.part", c->dir, sha);
    return n < 0 || n >= DSCACHE_PATH_MAX ? -ENAMETOOLONG : 0;
}

int dscache_lookup(struct dscache *c, const char *sha, bool verify, char buf[DSCACHE_PATH_MAX],
                   int64_t *size, char *err, size_t errlen)
{
    int rc = dscache_object_path(c, sha, buf);
    if (rc) return errmsg(err, errlen, rc, "dataset %.64s: not a SHA-256", sha);
    struct stat st;
    if (stat(buf, &st) != 0) {
        if (errno == ENOENT) return 0;
        return errmsg(err, errlen, -errno, "%s: %s", buf, strerror(errno));
    }
    if (verify) {
        char hex[SHA256_HEX_LEN + 1];
        long long n = 0;
        rc = sha256_file(buf, hex, &n, err, errlen);
        if (rc) return rc;
        if (strcmp(hex, sha) != 0) {
            /* Bit rot or a hand edit: never train on it; fetch it again. */
            log_warn("dataset cache: %s hashes to %s: corrupt, removed to be fetched again", buf,
                     hex);
            if (unlink(buf) != 0 && errno != ENOENT)
                return errmsg(err, errlen, -errno, "%s: corrupt, and cannot remove it: %s", buf,
                              strerror(errno));
            return 0;
        }
    }
    /* The mtime is the LRU order: this is a use. */
    if (utimensat(AT_FDCWD, buf, NULL, 0) != 0)
        log_debug("dataset cache: touching %s: %s", buf, strerror(errno));
    *size = (int64_t)st.st_size;
    return 1;
}

int dscache_commit(struct dscache *c, const char *sha, int fd, char *err, size_t errlen)
{
    char part[DSCACHE_PATH_MAX], obj[DSCACHE_PATH_MAX], dir[DSCACHE_PATH_MAX];
    if (dscache_part_path(c, sha, part) || dscache_object_path(c, sha, obj))
        return errmsg(err, errlen, -EINVAL, "dataset %.64s: not a SHA-256", sha);
    if (fsync(fd) != 0) return errmsg(err, errlen, -errno, "fsync %s: %s", part, strerror(errno));
    if (fchmod(fd, 0444) != 0)
        return errmsg(err, errlen, -errno, "chmod %s: %s", part, strerror(errno));
    if (rename(part, obj) != 0)
        return errmsg(err, errlen, -errno, "rename %s to %s: %s", part, obj, strerror(errno));
    snprintf(dir, sizeof dir, "%s/objects", c->dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        int e = errno;
        if (dfd >= 0) close(dfd);
        return errmsg(err, errlen, -e, "fsync %s: %s", dir, strerror(e));
    }
    close(dfd);
    return 0;
}

static int use_slot(const struct dscache *c, const char *sha)
{
    for (int i = 0; i < DSCACHE_USERS; i++)
        if (c->use_count[i] > 0 && strcmp(c->use_sha[i], sha) == 0) return i;
    return -1;
}

int dscache_use(struct dscache *c, const char *sha)
{
    int i = use_slot(c, sha);
    if (i < 0)
        for (i = 0; i < DSCACHE_USERS && c->use_count[i] > 0; i++)
            ;
    if (i >= DSCACHE_USERS) return -ENOSPC;
    snprintf(c->use_sha[i], sizeof c->use_sha[i], "%s", sha);
    c->use_count[i]++;
    return 0;
}

void dscache_release(struct dscache *c, const char *sha)
{
    int i = use_slot(c, sha);
    if (i >= 0) c->use_count[i]--;
}

bool dscache_in_use(const struct dscache *c, const char *sha)
{
    return use_slot(c, sha) >= 0;
}

/* One file of the cache: an object or a partial file. */
struct entry {
    char sha[SHA256_HEX_LEN + 1];
    bool part;
    int64_t bytes;
    struct timespec mtime;
};

/* Appends the files of objects/ or partial/ whose names are hashes (a
 * stray file is neither counted nor removed). */
static int list_dir(const struct dscache *c, bool part, struct entry **v, size_t *n, size_t *cap)
{
    char dir[DSCACHE_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", c->dir, part ? "partial" : "objects");
    DIR *d = opendir(dir);
    if (!d) return -errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char sha[SHA256_HEX_LEN + 1];
        size_t len = strlen(e->d_name);
        if (len != SHA256_HEX_LEN + (part ? 5 : 0)) continue;
        if (part && strcmp(e->d_name + SHA256_HEX_LEN, ".part") != 0) continue;
        memcpy(sha, e->d_name, SHA256_HEX_LEN);
        sha[SHA256_HEX_LEN] = '\0';
        if (!sha256_hex_valid(sha)) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (*n == *cap) {
            size_t nc = *cap ? 2 * *cap : 64;
            struct entry *nv = realloc(*v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            *v = nv;
            *cap = nc;
        }
        struct entry *en = &(*v)[(*n)++];
        memcpy(en->sha, sha, sizeof sha);
        en->part = part;
        en->bytes = (int64_t)st.st_size;
        en->mtime = st.st_mtim;
    }
    closedir(d);
    return rc;
}

static int by_age(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec) return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    return strcmp(x->sha, y->sha);
}

static int list_all(const struct dscache *c, struct entry **v, size_t *n)
{
    size_t cap = 0;
    *v = NULL;
    *n = 0;
    int rc = list_dir(c, false, v, n, &cap);
    if (!rc) rc = list_dir(c, true, v, n, &cap);
    if (rc) {
        free(*v);
        *v = NULL;
        *n = 0;
    }
    return rc;
}

int dscache_usage(const struct dscache *c, int64_t *bytes)
{
    struct entry *v;
    size_t n;
    int rc = list_all(c, &v, &n);
    if (rc) return rc;
    *bytes = 0;
    for (size_t i = 0; i < n; i++)
        *bytes += v[i].bytes;
    free(v);
    return 0;
}

static long long mb_up(int64_t bytes)
{
    return (long long)((bytes + MB - 1) / MB);
}

int dscache_make_room(struct dscache *c, const char *sha, int64_t size, int64_t have, char *err,
                      size_t errlen)
{
    if (size > c->limit)
        return errmsg(err, errlen, -EFBIG,
                      "dataset %s is %lld MB, more than this trainer's dataset cache holds "
                      "(trainer.dataset_cache_mb = %lld)",
                      sha, mb_up(size), (long long)(c->limit / MB));
    struct entry *v;
    size_t n;
    int rc = list_all(c, &v, &n);
    if (rc) return errmsg(err, errlen, rc, "dataset cache %s: %s", c->dir, strerror(-rc));
    if (n) qsort(v, n, sizeof *v, by_age); /* v is NULL when the cache is empty */
    int64_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].sha, sha) != 0) used += v[i].bytes;
    int64_t need = size - have, avail = INT64_MAX;
    if (c->free_bytes && c->free_bytes(c->dir, &avail) != 0) avail = INT64_MAX;
    for (size_t i = 0; i < n && (used + size > c->limit || avail < need); i++) {
        struct entry *e = &v[i];
        if (strcmp(e->sha, sha) == 0 || (!e->part && dscache_in_use(c, e->sha))) continue;
        char path[DSCACHE_PATH_MAX];
        if (e->part)
            dscache_part_path(c, e->sha, path);
        else
            dscache_object_path(c, e->sha, path);
        if (unlink(path) != 0) {
            log_warn("dataset cache: cannot remove %s: %s", path, strerror(errno));
            continue;
        }
        log_info("dataset cache: removed %s (%lld MB, least recently used) to make room for %s",
                 path, mb_up(e->bytes), sha);
        used -= e->bytes;
        if (avail != INT64_MAX) avail += e->bytes;
    }
    free(v);
    if (used + size > c->limit)
        return errmsg(err, errlen, -ENOSPC,
                      "dataset %s is %lld MB and this trainer's dataset cache holds %lld MB "
                      "(trainer.dataset_cache_mb), of which %lld MB are datasets in use",
                      sha, mb_up(size), (long long)(c->limit / MB), mb_up(used));
    if (avail < need)
        return errmsg(err, errlen, -ENOSPC,
                      "dataset %s needs %lld MB more and the disk of this trainer's dataset "
                      "cache %s has %lld MB free",
                      sha, mb_up(need), c->dir, (long long)(avail / MB));
    return 0;
}
