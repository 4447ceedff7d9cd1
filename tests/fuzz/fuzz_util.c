#define _GNU_SOURCE
#include "fuzz_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* A real file, not a memfd: libhdf5 resolves /proc/self/fd/N to its target
 * ("/memfd:... (deleted)") and cannot open that. */
static int file_fd = -1;
static char file_path[4096];

static void remove_file(void)
{
    unlink(file_path);
}

const char *fuzz_file(const void *data, size_t len)
{
    if (file_fd < 0) {
        const char *dir = getenv("TMPDIR"); /* scripts/fuzz.sh: a directory on tmpfs */
        if (!dir || !*dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(file_path, sizeof file_path, "%s/mlq-fuzz-%ld-XXXXXX", dir, (long)getpid());
        file_fd = mkstemp(file_path);
        if (file_fd < 0) {
            perror("fuzz: creating the input file");
            abort();
        }
        atexit(remove_file);
    }
    /* Readers open the path afresh: each starts at offset 0. */
    if (ftruncate(file_fd, 0) != 0 || (len && pwrite(file_fd, data, len, 0) != (ssize_t)len)) {
        perror("fuzz: writing the input file");
        abort();
    }
    return file_path;
}

void fuzz_note(const char *fmt, ...)
{
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("MLQ_FUZZ_VERBOSE") != NULL;
    if (!verbose) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: invariant broken: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
