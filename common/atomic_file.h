/* Replacing a file atomically and durably: after a crash or a failed write
 * the path holds either the old file, untouched, or the whole new one.
 *
 * The new content goes to a temporary file in the same directory (created
 * with O_EXCL, so two writers never share one), then commit fsyncs it,
 * renames it over the path and fsyncs the directory so that the rename
 * itself survives a power cut. Every failure removes the temporary file.
 *
 * Bytes in memory: atomic_file_write_all. A file that a library writes by
 * name (libhdf5): atomic_file_begin, let it create and write af.tmp
 * (truncating it in place keeps the inode open here), then
 * atomic_file_commit, or atomic_file_abort on the caller's own failure.
 *
 * Errors are -errno with a message in err that names the path. */
#ifndef MLQ_ATOMIC_FILE_H
#define MLQ_ATOMIC_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ATOMIC_FILE_PATH_MAX 4096

struct atomic_file {
    char path[ATOMIC_FILE_PATH_MAX]; /* the file being replaced */
    char tmp[ATOMIC_FILE_PATH_MAX];  /* the temporary beside it; "" once committed or removed */
    int fd;                          /* open on tmp until commit or abort, else -1 */
    /* Set after begin: commit refuses (-EEXIST) to replace an existing path
     * (renameat2 RENAME_NOREPLACE; a symbolic link there counts as a file). */
    bool noreplace;
};

/* Creates the temporary file with mode (less the umask). */
int atomic_file_begin(struct atomic_file *af, const char *path, mode_t mode, char *err,
                      size_t errlen);
/* Appends len bytes to the temporary file (all of them, or an error). On an
 * error the temporary file is removed: the caller need not abort. */
int atomic_file_write(struct atomic_file *af, const void *buf, size_t len, char *err,
                      size_t errlen);
/* fsync, rename into place, fsync the directory. On an error before the
 * rename the old file is intact and the temporary removed. */
int atomic_file_commit(struct atomic_file *af, char *err, size_t errlen);
/* Closes and removes the temporary file; harmless after commit or twice. */
void atomic_file_abort(struct atomic_file *af);

/* begin + write + commit. */
int atomic_file_write_all(const char *path, const void *buf, size_t len, mode_t mode, char *err,
                          size_t errlen);

/* The system calls behind the guarantee, replaceable by tests to inject
 * faults (a short write, a failing fsync, a full disk). */
struct atomic_file_seams {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
};
extern struct atomic_file_seams atomic_file_seams;

#endif
