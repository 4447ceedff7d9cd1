/* A trainer's cache of pushed datasets (docs/trainer.md, "Pushed datasets").
 *
 * Under trainer.dataset_cache_dir:
 *   objects/<sha256>         a whole dataset, complete and verified (0444)
 *   partial/<sha256>.part    a fetch in progress (trainer/fetch.h): its
 *                            bytes are a verified prefix, so a fetch after a
 *                            restart resumes from its size
 *   outputs/job-<id>.<pid>.h5  a predict output on its way to the broker
 *                            (trainer/upload.h), removed once it is there;
 *                            one whose process is gone is removed at open
 * An object's mtime is when a job last used it: make_room removes the least
 * recently used objects (and abandoned partial files) that no job is using
 * until a new dataset fits trainer.dataset_cache_mb. Only the I/O thread
 * calls these; the worker thread only reads the files it was given. */
#ifndef MLQ_DSCACHE_H
#define MLQ_DSCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define DSCACHE_PATH_MAX 4096
#define DSCACHE_USERS 8 /* datasets in use at once: a running job's and a held one's */

struct dscache {
    char dir[DSCACHE_PATH_MAX - 128]; /* room for the files below it */
    int64_t limit;                    /* bytes */
    /* Datasets in use (never evicted), with a count of users each. */
    char use_sha[DSCACHE_USERS][SHA256_HEX_LEN + 1];
    int use_count[DSCACHE_USERS];
    /* Seam for tests: the free bytes of the cache's filesystem (statvfs). */
    int (*free_bytes)(const char *dir, int64_t *out);
};

/* Creates dir, dir/objects, dir/partial and dir/outputs where missing
 * (0750), removes the outputs of processes that are gone, and fills *c. limit_mb <= 0: 10240. 0 or
 * -errno with err naming the directory. */
int dscache_open(struct dscache *c, const char *dir, int64_t limit_mb, char *err, size_t errlen);

/* dir/objects/<sha> and dir/partial/<sha>.part into buf. 0, -EINVAL for a
 * sha that is not 64 lower-case hex digits, or -ENAMETOOLONG. */
int dscache_object_path(const struct dscache *c, const char *sha, char buf[DSCACHE_PATH_MAX]);
int dscache_part_path(const struct dscache *c, const char *sha, char buf[DSCACHE_PATH_MAX]);

/* dir/outputs/job-<job>.<pid>.h5 into buf: where this process writes a
 * predict output that goes to the broker. 0 or -ENAMETOOLONG. */
int dscache_output_path(const struct dscache *c, int64_t job, char buf[DSCACHE_PATH_MAX]);

/* Whether objects/<sha> is cached: 1 (path into buf, its size into *size,
 * its mtime touched), 0 when absent, or -errno with err. With verify the
 * whole file is hashed first; a file whose hash is not sha is corrupt: it
 * is removed (logged) and 0 returned, so that it is fetched again. */
int dscache_lookup(struct dscache *c, const char *sha, bool verify, char buf[DSCACHE_PATH_MAX],
                   int64_t *size, char *err, size_t errlen);

/* Makes room for a dataset of size bytes (sha, whose own partial file is
 * not counted nor removed): removes least recently used objects and other
 * partial files not in use until the cache holds at most its limit with
 * it, and the filesystem has room for the have..size bytes still to come.
 * 0; -EFBIG when size alone is more than the limit; -ENOSPC when what is in
 * use leaves no room, or the disk is full; err says which, for the job. */
int dscache_make_room(struct dscache *c, const char *sha, int64_t size, int64_t have, char *err,
                      size_t errlen);

/* A finished fetch: fsyncs fd (open on sha's partial file, whose bytes
 * were verified), renames it to objects/<sha> (0444) and fsyncs the
 * directory, so that a cached object is always whole. 0 or -errno. */
int dscache_commit(struct dscache *c, const char *sha, int fd, char *err, size_t errlen);

/* Counts a user of sha (the job about to read it), so that make_room leaves
 * it alone, and releases one. use: 0 or -ENOSPC (DSCACHE_USERS in use). */
int dscache_use(struct dscache *c, const char *sha);
void dscache_release(struct dscache *c, const char *sha);
bool dscache_in_use(const struct dscache *c, const char *sha);

/* The bytes of the cache's objects and partial files. 0 or -errno. */
int dscache_usage(const struct dscache *c, int64_t *bytes);

#endif
