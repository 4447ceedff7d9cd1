#define _GNU_SOURCE /* renameat2 */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "errmsg.h"

struct atomic_file_seams atomic_file_seams = {.write = write, .fsync = fsync, .rename = rename};

/* A name nobody can guess, so that another user cannot squat on it in a
 * shared directory (O_EXCL refuses it, symlinks included, but a retry needs
 * a fresh name). */
static int temp_name(struct atomic_file *af)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        static uint64_t counter;
        r = ((uint64_t)getpid() << 32) ^ ++counter ^ (uint64_t)(uintptr_t)af;
    }
    /* The path, then ".tmp." and 12 hex digits; measured first, so that no
     * copy can be cut (GCC's -O3 truncation warning cannot see a check after). */
    static const size_t suffix = sizeof ".tmp." - 1 + 12;
    size_t len = strlen(af->path);
    if (len + suffix >= sizeof af->tmp) return -ENAMETOOLONG;
    memcpy(af->tmp, af->path, len);
    snprintf(af->tmp + len, sizeof af->tmp - len, ".tmp.%012llx",
             (unsigned long long)(r & 0xffffffffffffULL));
    return 0;
}

int atomic_file_begin(struct atomic_file *af, const char *path, mode_t mode, char *err,
                      size_t errlen)
{
    af->fd = -1;
    af->tmp[0] = '\0';
    af->noreplace = false;
    if (snprintf(af->path, sizeof af->path, "%s", path) >= (int)sizeof af->path || temp_name(af)) {
        af->path[0] = af->tmp[0] = '\0';
        return errmsg(err, errlen, -ENAMETOOLONG, "%.200s...: path too long", path);
    }
    for (int attempt = 0; attempt < 16; attempt++) {
        if (attempt) temp_name(af);
        af->fd = open(af->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (af->fd >= 0) return 0;
        if (errno != EEXIST) break;
    }
    int e = errno;
    af->tmp[0] = '\0';
    return errmsg(err, errlen, -e, "%s: cannot create a temporary file beside it: %s", path,
                  strerror(e));
}

/* Records the failure of step `what`, removes the temporary, returns -e. */
static int fail(struct atomic_file *af, int e, const char *what, char *err, size_t errlen)
{
    errmsg(err, errlen, -e, "%s: cannot %s: %s", af->path, what, strerror(e));
    atomic_file_abort(af);
    return -e;
}

int atomic_file_write(struct atomic_file *af, const void *buf, size_t len, char *err, size_t errlen)
{
    if (af->fd < 0) return errmsg(err, errlen, -EBADF, "%s: not open for writing", af->path);
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = atomic_file_seams.write(af->fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail(af, n < 0 ? errno : ENOSPC, "write", err, errlen);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int atomic_file_commit(struct atomic_file *af, char *err, size_t errlen)
{
    if (af->fd < 0) return errmsg(err, errlen, -EBADF, "%s: not open for writing", af->path);
    if (atomic_file_seams.fsync(af->fd) != 0) return fail(af, errno, "sync", err, errlen);
    int rc = close(af->fd);
    af->fd = -1;
    if (rc != 0) return fail(af, errno, "write (close)", err, errlen);
    if (af->noreplace) {
        if (renameat2(AT_FDCWD, af->tmp, AT_FDCWD, af->path, RENAME_NOREPLACE) != 0) {
            int e = errno;
            if (e != EEXIST) return fail(af, e, "move the new file into place", err, errlen);
            atomic_file_abort(af);
            return errmsg(err, errlen, -EEXIST,
                          "%s exists: this trainer writes only new files; choose another name",
                          af->path);
        }
    } else if (atomic_file_seams.rename(af->tmp, af->path) != 0)
        return fail(af, errno, "move the new file into place", err, errlen);
    af->tmp[0] = '\0';

    /* The rename is durable once the directory entry is. */
    char dir[ATOMIC_FILE_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", af->path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        slash[slash == dir ? 1 : 0] = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || atomic_file_seams.fsync(dfd) != 0) {
        int e = errno;
        if (dfd >= 0) close(dfd);
        return errmsg(err, errlen, -e, "%s: written, but its directory %s cannot be synced: %s",
                      af->path, dir, strerror(e));
    }
    close(dfd);
    return 0;
}

void atomic_file_abort(struct atomic_file *af)
{
    if (af->fd >= 0) close(af->fd);
    af->fd = -1;
    if (af->tmp[0]) unlink(af->tmp);
    af->tmp[0] = '\0';
}

int atomic_file_write_all(const char *path, const void *buf, size_t len, mode_t mode, char *err,
                          size_t errlen)
{
    struct atomic_file af;
    int rc = atomic_file_begin(&af, path, mode, err, errlen);
    if (!rc) rc = atomic_file_write(&af, buf, len, err, errlen);
    if (!rc) rc = atomic_file_commit(&af, err, errlen);
    return rc;
}
