/* An LD_PRELOAD library that watches how a program replaces files: it logs
 * every fsync (with the path behind the descriptor) and every rename to
 * $MLQ_SYNC_LOG, and with MLQ_SYNC_FAIL=N makes the N-th fsync fail with EIO.
 * tests/test_atomic_file.c runs mlq and mlq-trainer under it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void log_line(const char *what, const char *a, const char *b)
{
    const char *path = getenv("MLQ_SYNC_LOG");
    if (!path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[3 * PATH_MAX];
    int n = snprintf(line, sizeof line, "%s %s%s%s\n", what, a, b ? " " : "", b ? b : "");
    if (n > 0 && write(fd, line, (size_t)n) < 0) n = 0;
    close(fd);
}

static int fail_now(void)
{
    static int calls;
    const char *at = getenv("MLQ_SYNC_FAIL");
    return at && ++calls == atoi(at);
}

static int watched_sync(int fd, const char *name)
{
    char link[64], target[PATH_MAX] = "?";
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 1] = '\0';
    if (fail_now()) {
        log_line("fsync-failed", target, NULL);
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    int rc = real(fd);
    if (rc == 0) log_line("fsync", target, NULL);
    return rc;
}

int fsync(int fd)
{
    return watched_sync(fd, "fsync");
}

int fdatasync(int fd)
{
    return watched_sync(fd, "fdatasync");
}

int rename(const char *from, const char *to)
{
    int (*real)(const char *, const char *) =
        (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int rc = real(from, to);
    if (rc == 0) { /* the new name, resolved, and the old one's last part */
        char b[PATH_MAX];
        const char *base = strrchr(from, '/');
        log_line("rename", realpath(to, b) ? b : to, base ? base + 1 : from);
    }
    return rc;
}
