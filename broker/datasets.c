/* The broker's dataset store: paths and names (datasets.h); the push and the
 * client commands over it (DATASET_PUT, DATASET_CHUNK, DATASET_END, DATASETS,
 * DATASET_RM), the fetch (FETCH -> CHUNK) and a trainer's DATASET
 * (docs/protocol.md, "Pushed datasets").
 *
 * A push never touches the database until its END: each chunk is one pwrite
 * into uploads/<sha>.part (its writeback started at once) and the chunk's
 * XXH3-128 sum (the chunk index, common/chunk_sum.h); the whole file's
 * SHA-256 is made on a thread behind the writes (sha256_follow), so the loop
 * itself computes no SHA-256. Its OK is sent at once, not through the outbox, so that a push
 * neither waits for nor forces a commit. END verifies the hash and the HDF5 signature, fsyncs,
 * writes the chunk index, renames the part into objects/ and only then names it in the store; its
 * OK leaves after that commit. FETCH answers from an object mapped read-only while it is being
 * fetched (struct mapping): its CHUNK is sent at once, from the page cache without a copy, so
 * trainers fetching one dataset at once share one read of it from disk. */
#define _GNU_SOURCE
#include "broker_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "atomic_file.h"
#include "chunk_sum.h"
#include "errmsg.h"
#include "sha256.h"
#include "spec.h"

static int store_path(const char *dir, const char *sub, const char *sha, const char *suffix,
                      char buf[DATASETS_PATH_MAX])
{
    buf[0] = '\0';
    if (!sha256_hex_valid(sha)) return -EINVAL;
    int n = snprintf(buf, DATASETS_PATH_MAX, "%s/%s/%s%s", dir, sub, sha, suffix);
    if (n < 0 || n >= DATASETS_PATH_MAX) {
        buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int datasets_object_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "objects", sha, "", buf);
}

int datasets_index_path(const char *dir, const char *sha, enum chunk_index kind,
                        char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "objects", sha, kind == INDEX_XXH128 ? ".xxh128" : ".chunks", buf);
}

/* Bytes per chunk in an index of that kind. */
static size_t index_sum_bytes(enum chunk_index kind)
{
    return kind == INDEX_XXH128 ? CHUNK_SUM_BYTES : SHA256_BYTES;
}

int datasets_upload_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "uploads", sha, ".part", buf);
}

int datasets_dir_resolve(const char *configured, const char *db_path, char buf[DATASETS_PATH_MAX])
{
    int n;
    if (configured && *configured) {
        n = snprintf(buf, DATASETS_PATH_MAX, "%s", configured);
    } else {
        const char *slash = strrchr(db_path, '/');
        if (!slash)
            n = snprintf(buf, DATASETS_PATH_MAX, "datasets");
        else if (slash == db_path)
            n = snprintf(buf, DATASETS_PATH_MAX, "/datasets");
        else
            n = snprintf(buf, DATASETS_PATH_MAX, "%.*s/datasets", (int)(slash - db_path), db_path);
    }
    if (n < 0 || n >= DATASETS_PATH_MAX - 80) { /* room for /objects/<sha>.chunks */
        buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

/* mkdir -p, each new directory 0750. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[DATASETS_PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0') continue;
        char was = *q;
        *q = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST)
            return errmsg(err, errlen, -errno, "%s: %s", p, strerror(errno));
        if (!was) break;
        *q = was;
    }
    struct stat st;
    if (stat(dir, &st) != 0) return errmsg(err, errlen, -errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return errmsg(err, errlen, -ENOTDIR, "%s: not a directory", dir);
    return 0;
}

int datasets_prepare(const char *dir, char *err, size_t errlen)
{
    char sub[DATASETS_PATH_MAX];
    int rc = make_dirs(dir, err, errlen);
    for (int i = 0; rc == 0 && i < 2; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, i ? "uploads" : "objects");
        rc = make_dirs(sub, err, errlen);
    }
    return rc;
}

/* ---- the push and the fetch ------------------------------------------------------ */

#define UPLOADS_MAX 16                        /* pushes open at once */
#define UPLOAD_IDLE_S 60.0                    /* an idle push's fd is closed (its .part stays) */
#define PART_KEEP_S (7 * 86400.0)             /* a .part nobody wrote for this long is removed */
#define PART_SCAN_S 3600.0                    /* how often uploads/ is looked over for those */
#define OBJECTS_OPEN_MAX 16                   /* objects kept open for FETCH */
#define OBJECT_IDLE_S 60.0                    /* an object nobody fetched for this long is closed */
#define DATASETS_MAX_BYTES (INT64_C(1) << 40) /* one dataset at most */
#define CHUNK ((int64_t)DATASET_CHUNK_BYTES)

static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

struct upload {
    char sha[SHA256_HEX_LEN + 1];  /* "" = a free slot */
    int fd;                        /* on uploads/<sha>.part */
    int64_t size;                  /* the whole file's, from DATASET_PUT */
    int64_t end;                   /* bytes written, always a whole number of chunks or size */
    int64_t hashed;                /* bytes in chunks: end, or less while a resumed part is read */
    unsigned char *chunks;         /* (n_chunks, CHUNK_SUM_BYTES): each written chunk's sum */
    struct sha256_follower *whole; /* the whole file's hash over [0, end) */
    double used;
};

/* An object's bytes mapped read-only: FETCH replies are sent from the
 * mapping, not copied (a chunk read from the page cache straight into the
 * socket). Each reply in ZeroMQ's hands holds a reference, released from
 * its I/O thread; the object holds one while open. */
struct mapping {
    void *addr;
    size_t len;
    atomic_int refs;
};

static void mapping_release(void *bin, void *hint)
{
    (void)bin;
    struct mapping *mp = hint;
    if (atomic_fetch_sub(&mp->refs, 1) == 1) {
        munmap(mp->addr, mp->len);
        free(mp);
    }
}

static struct mapping *mapping_open(int fd, size_t len)
{
    struct mapping *mp = malloc(sizeof *mp);
    if (!mp) return NULL;
    mp->addr = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (mp->addr == MAP_FAILED) {
        free(mp);
        return NULL;
    }
    mp->len = len;
    atomic_init(&mp->refs, 1);
    return mp;
}

struct object {
    char sha[SHA256_HEX_LEN + 1]; /* "" = a free slot */
    int fd;
    struct mapping *map; /* NULL: replies are read with pread (mmap failed) */
    int64_t size, n_chunks;
    enum chunk_index kind; /* which index it has */
    unsigned char *chunks; /* (n_chunks, index_sum_bytes(kind)), its index */
    double used;
};

struct datasets {
    struct upload up[UPLOADS_MAX];
    struct object obj[OBJECTS_OPEN_MAX];
    char (*gc)[SHA256_HEX_LEN + 1]; /* objects that may have lost their last name */
    size_t n_gc, cap_gc;
    unsigned char *buf; /* one chunk: FETCH reads, a resumed push's rehash */
    bool scanned;       /* objects/ looked through once for objects with no name */
    double parts_at;    /* when uploads/ is next looked over (expire_parts) */
    struct log_limit log;
};

static int64_t n_chunks_of(int64_t size)
{
    return (size + CHUNK - 1) / CHUNK;
}

int datasets_open(struct broker *b, char *err, size_t errlen)
{
    struct datasets *d = calloc(1, sizeof *d);
    if (d) d->buf = malloc(DATASET_CHUNK_BYTES);
    if (!d || !d->buf) {
        free(d);
        return errmsg(err, errlen, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < UPLOADS_MAX; i++)
        d->up[i].fd = -1;
    for (int i = 0; i < OBJECTS_OPEN_MAX; i++)
        d->obj[i].fd = -1;
    d->log = (struct log_limit)LOG_LIMIT_INIT("lines about datasets not logged", 10);
    b->datasets = d;
    return 0;
}

/* Closes an upload's fd and frees its slot; remove: its .part too. */
static void upload_close(struct broker *b, struct upload *u, bool remove)
{
    if (!u->sha[0]) return;
    if (u->fd >= 0) close(u->fd);
    if (remove) {
        char path[DATASETS_PATH_MAX];
        if (datasets_upload_path(b->datasets_dir, u->sha, path) == 0) unlink(path);
    }
    sha256_follow_stop(u->whole);
    free(u->chunks);
    memset(u, 0, sizeof *u);
    u->fd = -1;
}

static void object_close(struct object *o)
{
    if (!o->sha[0]) return;
    if (o->fd >= 0) close(o->fd);
    if (o->map) mapping_release(NULL, o->map);
    free(o->chunks);
    memset(o, 0, sizeof *o);
    o->fd = -1;
}

void datasets_close(struct broker *b)
{
    struct datasets *d = b->datasets;
    if (!d) return;
    for (int i = 0; i < UPLOADS_MAX; i++)
        upload_close(b, &d->up[i], false);
    for (int i = 0; i < OBJECTS_OPEN_MAX; i++)
        object_close(&d->obj[i]);
    free(d->gc);
    free(d->buf);
    free(d);
    b->datasets = NULL;
}

bool datasets_is_client_command(const char *cmd)
{
    return strcmp(cmd, PROTO_DATASET_PUT) == 0 || strcmp(cmd, PROTO_DATASET_CHUNK) == 0 ||
           strcmp(cmd, PROTO_DATASET_END) == 0 || strcmp(cmd, PROTO_DATASETS) == 0 ||
           strcmp(cmd, PROTO_DATASET_RM) == 0;
}

/* A direct send (not through the outbox): chunk traffic never waits for a
 * commit. A peer that is gone or whose queue is full loses the message; the
 * sender asks again (docs/protocol.md). */
static void after_send(struct broker *b, const struct proto_msg *m, const char *cmd, int rc)
{
    if (rc && rc != -EHOSTUNREACH && rc != -EAGAIN)
        log_limited(&b->datasets->log, LOG_LVL_WARN, "send %s: %s", cmd, zmq_strerror(-rc));
    struct trainer *t = trainers_find(b, m->ident, m->ident_len);
    if (t) t->last_sent = broker_mono();
}

static void send_now(struct broker *b, const struct proto_msg *m, const char *cmd, const char *text,
                     const void *bin, size_t bin_len)
{
    after_send(
        b, m, cmd,
        proto_send_text(b->router, m->ident, m->ident_len, cmd, text, bin, bin_len, ZMQ_DONTWAIT));
}

static void send_error_now(struct broker *b, const struct proto_msg *m, const char *code,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void send_error_now(struct broker *b, const struct proto_msg *m, const char *code,
                           const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    after_send(b, m, PROTO_ERROR,
               proto_send_error(b->router, m->ident, m->ident_len, code, "%s", text));
}

static struct upload *upload_find(struct broker *b, const char *sha)
{
    for (int i = 0; i < UPLOADS_MAX; i++)
        if (strcmp(b->datasets->up[i].sha, sha) == 0) return &b->datasets->up[i];
    return NULL;
}

/* Opens the chunk index of object sha: its kind in *kind. -1 when none. */
static int index_open(struct broker *b, const char *sha, enum chunk_index *kind)
{
    static const enum chunk_index kinds[] = {INDEX_XXH128, INDEX_SHA256};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        char index[DATASETS_PATH_MAX];
        if (datasets_index_path(b->datasets_dir, sha, kinds[i], index) != 0) return -1;
        int fd = open(index, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT) {
            *kind = kinds[i];
            return fd;
        }
    }
    return -1;
}

static bool object_present(struct broker *b, const char *sha, int64_t *size)
{
    char path[DATASETS_PATH_MAX];
    struct stat st;
    enum chunk_index kind;
    if (datasets_object_path(b->datasets_dir, sha, path) != 0 || stat(path, &st) != 0 ||
        !S_ISREG(st.st_mode))
        return false;
    int ifd = index_open(b, sha, &kind);
    if (ifd < 0) return false;
    close(ifd);
    if (size) *size = st.st_size;
    return true;
}

static bool is_no_space(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

/* The next chunk's hash in a resumed push's .part (what an earlier broker
 * wrote, or what arrived before the reading caught up). 0 or -errno. */
static int upload_rehash_step(struct broker *b, struct upload *u)
{
    int64_t off = u->hashed;
    size_t len = (size_t)(u->end - off < CHUNK ? u->end - off : CHUNK);
    ssize_t n = pread(u->fd, b->datasets->buf, len, off);
    if (n != (ssize_t)len) return n < 0 ? -errno : -EIO;
    chunk_sum(b->datasets->buf, len, u->chunks + (off / CHUNK) * CHUNK_SUM_BYTES);
    u->hashed += (int64_t)len;
    return 0;
}

/* The upload of sha (opened from its .part, resumed at its last whole chunk,
 * or new), or NULL after replying why. */
static struct upload *upload_open(struct broker *b, const struct proto_msg *m, const char *sha,
                                  int64_t size)
{
    struct upload *u = upload_find(b, sha);
    if (u && u->size == size) {
        u->used = broker_mono();
        return u;
    }
    if (u) upload_close(b, u, true); /* another size for the same hash: one of them is wrong */
    for (int i = 0; !u && i < UPLOADS_MAX; i++)
        if (!b->datasets->up[i].sha[0]) u = &b->datasets->up[i];
    if (!u) {
        broker_reply_error(b, m, "overloaded",
                           "%d pushes are in progress on this broker: try again in a minute",
                           UPLOADS_MAX);
        return NULL;
    }
    char path[DATASETS_PATH_MAX];
    datasets_upload_path(b->datasets_dir, sha, path);
    u->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    struct stat st;
    if (u->fd < 0 || fstat(u->fd, &st) != 0) {
        int e = errno;
        if (u->fd >= 0) close(u->fd);
        u->fd = -1;
        broker_reply_error(b, m, is_no_space(e) ? "no_space" : "io", "%s: %s", path, strerror(e));
        return NULL;
    }
    snprintf(u->sha, sizeof u->sha, "%s", sha);
    u->size = size;
    u->used = broker_mono();
    /* Resume at the last whole chunk (a torn last write is cut away). */
    u->end = st.st_size > size ? 0 : st.st_size / CHUNK * CHUNK;
    if (st.st_size == size) u->end = size;
    u->chunks = calloc((size_t)n_chunks_of(size), CHUNK_SUM_BYTES);
    int rc = u->chunks ? 0 : -ENOMEM;
    if (!rc && st.st_size != u->end && ftruncate(u->fd, u->end) != 0) rc = -errno;
    if (!rc) rc = sha256_follow(&u->whole, u->fd);
    /* The bytes already there are hashed by the follower and indexed a
     * chunk per pass (datasets_tick), not here: a large part would hold up
     * the whole loop. */
    if (!rc) sha256_follow_to(u->whole, u->end);
    u->hashed = 0;
    if (rc) {
        broker_reply_error(b, m, "io", "%s: %s", path, strerror(-rc));
        upload_close(b, u, false);
        return NULL;
    }
    return u;
}

/* The object sha's files go once the change that took its last name away is
 * committed, if no other name and no queued or running job keeps it
 * (datasets_tick). */
static void gc_add(struct broker *b, const char *sha)
{
    struct datasets *ds = b->datasets;
    if (ds->n_gc == ds->cap_gc) {
        size_t cap = ds->cap_gc ? 2 * ds->cap_gc : 8;
        void *p = realloc(ds->gc, cap * sizeof *ds->gc);
        if (!p) return; /* the object stays: only space is lost */
        ds->gc = p;
        ds->cap_gc = cap;
    }
    snprintf(ds->gc[ds->n_gc++], sizeof *ds->gc, "%.64s", sha);
}

/* Under keys a dataset is its pusher's to remove or move (an admin's too);
 * owner is who would change it: the sender's name, or for a predict output
 * the job's owner. */
static bool may_change(const struct broker *b, const struct store_dataset *d, const char *owner)
{
    return !b->who || b->who->role == KEYS_ROLE_ADMIN || strcmp(d->owner, owner) == 0;
}

static const char *sender_name(const struct broker *b)
{
    return b->who ? b->who->name : "";
}

/* A trainer's push of its predict job's output ("job" in the body; spec
 * "output": {"push": true}): only from the connection that holds the job,
 * only under the name the job's spec gives (predict-<job> by default), and
 * the dataset is the job's owner's. 0 with owner, or -errno (replied). */
static int output_push_check(struct broker *b, const struct proto_msg *m, const char *name,
                             char owner[STORE_NAME_MAX])
{
    int64_t job;
    char err[128];
    if (proto_get_int(m->body, "job", &job, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_request", "%s: %s", m->cmd, err);
        return -EINVAL;
    }
    const struct trainer *t = trainers_find(b, m->ident, m->ident_len);
    if ((b->who && b->who->role != KEYS_ROLE_TRAINER) || !t || t->job != job) {
        broker_reply_error(b, m, "forbidden",
                           "%s for job %lld: only the trainer running a job sends its output",
                           m->cmd, (long long)job);
        return -EPERM;
    }
    struct store_job j;
    if (store_job_get(b->store, job, &j) != 0) {
        broker_reply_error(b, m, "not_found", "%s: no job %lld", m->cmd, (long long)job);
        return -ENOENT;
    }
    json_t *spec = json_loads(j.spec_json ? j.spec_json : "", 0, NULL);
    json_t *out = json_object_get(spec, "output");
    const char *given = json_string_value(json_object_get(out, "name"));
    char want[SPEC_DATASET_NAME_MAX + 1];
    snprintf(want, sizeof want, "%s", given ? given : "");
    if (!given) snprintf(want, sizeof want, "predict-%lld", (long long)job);
    bool push = json_is_true(json_object_get(out, "push"));
    json_decref(spec);
    snprintf(owner, STORE_NAME_MAX, "%s", j.owner ? j.owner : "");
    store_job_free(&j);
    if (!push) {
        broker_reply_error(b, m, "forbidden", "%s: job %lld's spec does not send its output here",
                           m->cmd, (long long)job);
        return -EPERM;
    }
    if (strcmp(name, want) != 0) {
        broker_reply_error(b, m, "bad_request", "%s: job %lld's output is named %s, not %s", m->cmd,
                           (long long)job, want, name);
        return -EINVAL;
    }
    return 0;
}

/* Refuses (replying) a name held by other bytes unless replace; *moved (may
 * be NULL) gets the other bytes' hash when the name moves from them. 1: the
 * name already means these bytes; 0: free or to be moved; or -errno. owner:
 * who the name would be moved for (may_change). */
static int name_check(struct broker *b, const struct proto_msg *m, const char *name,
                      const char *sha, bool replace, const char *owner,
                      char moved[SHA256_HEX_LEN + 1])
{
    if (moved) moved[0] = '\0';
    struct store_dataset d;
    int rc = store_dataset_get(b->store, name, &d);
    if (rc == -ENOENT) return 0;
    if (rc) {
        broker_reply_error(b, m, "store", "dataset %s: %s", name, store_errmsg(b->store));
        return rc;
    }
    if (strcmp(d.sha256, sha) == 0) return 1;
    if (replace && !may_change(b, &d, owner)) {
        broker_reply_error(b, m, "forbidden",
                           "dataset %s was pushed by %s: only they or an admin give the name to "
                           "other bytes",
                           name, d.owner[0] ? d.owner : "nobody with a key");
        return -EPERM;
    }
    if (replace) {
        if (moved) snprintf(moved, SHA256_HEX_LEN + 1, "%s", d.sha256);
        return 0;
    }
    broker_reply_error(b, m, "exists",
                       "dataset name '%s' is taken by other bytes (sha256 %s; this file's is "
                       "%s): push with --replace to give the name to this file, or choose "
                       "another --name",
                       name, d.sha256, sha);
    return -EEXIST;
}

/* The fields every push message shares; replies and returns -EINVAL when bad. */
static int push_fields(struct broker *b, const struct proto_msg *m, bool want_name,
                       const char **sha, const char **name, bool *replace)
{
    char err[128];
    json_t *r = json_object_get(m->body, "replace");
    if (proto_get_str(m->body, "sha256", sha, err, sizeof err) ||
        (want_name && proto_get_str(m->body, "name", name, err, sizeof err))) {
        broker_reply_error(b, m, "bad_request", "%s: %s", m->cmd, err);
        return -EINVAL;
    }
    if (!sha256_hex_valid(*sha)) {
        broker_reply_error(b, m, "bad_request",
                           "%s: sha256 must be 64 lower-case hex digits, not '%.80s'", m->cmd,
                           *sha);
        return -EINVAL;
    }
    if (want_name && !spec_dataset_name_valid(*name)) {
        broker_reply_error(b, m, "bad_request",
                           "%s: dataset name '%.140s': 1 to 128 letters, digits, '.', '_' or "
                           "'-', not starting with '.' or '-'",
                           m->cmd, *name);
        return -EINVAL;
    }
    if (replace) {
        if (r && !json_is_boolean(r)) {
            broker_reply_error(b, m, "bad_request", "%s: replace must be true or false", m->cmd);
            return -EINVAL;
        }
        *replace = json_is_true(r);
    }
    return 0;
}

/* A push of an object whose last name was just removed wants it again: it
 * stays (its removal waits for the commit, and a have=true answered now
 * must still hold at END). */
static void gc_cancel(struct broker *b, const char *sha)
{
    struct datasets *ds = b->datasets;
    for (size_t i = 0; i < ds->n_gc; i++)
        if (strcmp(ds->gc[i], sha) == 0) memmove(ds->gc[i--], ds->gc[--ds->n_gc], sizeof *ds->gc);
}

static void on_put(struct broker *b, struct proto_msg *m)
{
    const char *sha, *name;
    bool replace = false;
    int64_t size;
    char err[128];
    if (push_fields(b, m, true, &sha, &name, &replace)) return;
    if (proto_get_int(m->body, "size", &size, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_request", "%s: %s", m->cmd, err);
        return;
    }
    if (size < 1 || size > DATASETS_MAX_BYTES) {
        broker_reply_error(b, m, "too_large",
                           "a dataset is 1 byte to %lld GiB on this broker, not %lld bytes",
                           (long long)(DATASETS_MAX_BYTES >> 30), (long long)size);
        return;
    }
    /* A job's output replaces what its name held, as a file would. */
    char owner[STORE_NAME_MAX];
    snprintf(owner, sizeof owner, "%s", sender_name(b));
    if (json_object_get(m->body, "job")) {
        if (output_push_check(b, m, name, owner) != 0) return;
        replace = true;
    }
    if (name_check(b, m, name, sha, replace, owner, NULL) < 0) return;
    gc_cancel(b, sha);
    int64_t have_size;
    if (object_present(b, sha, &have_size)) {
        broker_reply(
            b, m->ident, m->ident_len, PROTO_OK,
            json_pack("{s:s, s:I, s:b}", "sha256", sha, "offset", (json_int_t)have_size, "have", 1),
            NULL, 0);
        return;
    }
    /* Space for the bytes still to come, before a byte of them is sent. */
    struct upload *known = upload_find(b, sha);
    int64_t done = known && known->size == size ? known->end : 0;
    struct statvfs vfs;
    if (statvfs(b->datasets_dir, &vfs) == 0) {
        int64_t avail = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
        if (avail < size - done) {
            broker_reply_error(b, m, "no_space",
                               "the broker's dataset store (%s) has %lld MB free; this dataset "
                               "needs %lld MB more: nothing was stored",
                               b->datasets_dir, (long long)(avail >> 20),
                               (long long)((size - done + (1 << 20) - 1) >> 20));
            return;
        }
    }
    struct upload *u = upload_open(b, m, sha, size);
    if (!u) return;
    broker_reply(
        b, m->ident, m->ident_len, PROTO_OK,
        json_pack("{s:s, s:I, s:b}", "sha256", sha, "offset", (json_int_t)u->end, "have", 0), NULL,
        0);
}

static void on_chunk(struct broker *b, struct proto_msg *m)
{
    const char *sha;
    int64_t offset;
    char err[128];
    if (proto_get_str(m->body, "sha256", &sha, err, sizeof err) ||
        proto_get_int(m->body, "offset", &offset, err, sizeof err)) {
        send_error_now(b, m, "bad_request", "%s: %s", m->cmd, err);
        return;
    }
    struct upload *u = sha256_hex_valid(sha) ? upload_find(b, sha) : NULL;
    if (!u) {
        send_error_now(b, m, "not_found",
                       "no push of %.64s is in progress (idle for %.0f s, or the broker "
                       "restarted): send DATASET_PUT again to resume",
                       sha, UPLOAD_IDLE_S);
        return;
    }
    int64_t want = u->size - u->end < CHUNK ? u->size - u->end : CHUNK;
    if (offset != u->end) {
        char text[400];
        snprintf(text, sizeof text,
                 "{\"code\":\"bad_offset\",\"offset\":%lld,\"error\":\"chunk at offset %lld: the "
                 "push of %.12s is at %lld\"}",
                 (long long)u->end, (long long)offset, sha, (long long)u->end);
        send_now(b, m, PROTO_ERROR, text, NULL, 0);
        return;
    }
    if (!m->bin || (int64_t)m->bin_len != want) {
        send_error_now(b, m, "bad_request",
                       "chunk at offset %lld has %zu bytes; a chunk is %lld bytes (the last one "
                       "the rest of the file, here %lld)",
                       (long long)offset, m->bin ? m->bin_len : 0, (long long)CHUNK,
                       (long long)want);
        return;
    }
    size_t done = 0;
    while (done < m->bin_len) {
        ssize_t n = pwrite(u->fd, (char *)m->bin + done, m->bin_len - done, offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            log_limited(&b->datasets->log, LOG_LVL_WARN, "dataset %.12s: write: %s", sha,
                        strerror(e));
            send_error_now(b, m, is_no_space(e) ? "no_space" : "io",
                           "the broker cannot store the dataset: %s%s: the partial upload was "
                           "removed",
                           strerror(e), is_no_space(e) ? " in its dataset store" : "");
            upload_close(b, u, true);
            return;
        }
        done += (size_t)n;
    }
    /* Start the chunk's writeback now: END's fsync, in this loop, then
     * flushes the last chunks, not the whole file, and dispatch does not
     * wait behind it. Advisory: an error here is the fsync's to report. */
    (void)sync_file_range(u->fd, offset, (off_t)m->bin_len, SYNC_FILE_RANGE_WRITE);
    sha256_follow_to(u->whole, offset + (int64_t)m->bin_len);
    /* Behind a resumed part's reading, the tick indexes it from the file. */
    if (u->hashed == offset) {
        chunk_sum(m->bin, m->bin_len, u->chunks + (offset / CHUNK) * CHUNK_SUM_BYTES);
        u->hashed += (int64_t)m->bin_len;
    }
    u->end += (int64_t)m->bin_len;
    u->used = broker_mono();
    b->yield_pass = true;
    char text[160];
    snprintf(text, sizeof text, "{\"sha256\":\"%s\",\"offset\":%lld}", sha, (long long)u->end);
    send_now(b, m, PROTO_OK, text, NULL, 0);
}

static bool has_hdf5_signature(int fd, int64_t size)
{
    /* At 0, or after a user block: 512, 1024, 2048, ... (the HDF5 format). */
    for (int64_t off = 0; off + 8 <= size; off = off ? 2 * off : 512) {
        unsigned char sig[8];
        if (pread(fd, sig, sizeof sig, off) != (ssize_t)sizeof sig) return false;
        if (memcmp(sig, hdf5_signature, sizeof sig) == 0) return true;
    }
    return false;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* The complete upload u made an object: verified, fsynced, indexed,
 * renamed. 0, or -errno after replying why (the part is removed). */
static int upload_finish(struct broker *b, const struct proto_msg *m, struct upload *u)
{
    unsigned char digest[SHA256_BYTES];
    char hex[SHA256_HEX_LEN + 1];
    int rc = 0;
    while (!rc && u->hashed < u->end) /* what the tick has not read yet */
        rc = upload_rehash_step(b, u);
    if (rc) {
        broker_reply_error(b, m, "io", "reading the partial upload: %s: it was removed",
                           strerror(-rc));
        goto fail;
    }
    rc = sha256_follow_final(u->whole, u->size, digest);
    u->whole = NULL;
    if (rc) {
        broker_reply_error(b, m, "io", "hashing failed: the partial upload was removed");
        goto fail;
    }
    sha256_hex(digest, hex);
    if (strcmp(hex, u->sha) != 0) {
        broker_reply_error(b, m, "hash_mismatch",
                           "the %lld bytes received hash to %s, not %s: nothing was stored (did "
                           "the file change during the push?)",
                           (long long)u->size, hex, u->sha);
        rc = -EINVAL;
        goto fail;
    }
    if (!has_hdf5_signature(u->fd, u->size)) {
        broker_reply_error(b, m, "bad_dataset",
                           "the %lld bytes of %.12s are not an HDF5 file (no HDF5 signature): "
                           "nothing was stored",
                           (long long)u->size, u->sha);
        rc = -EINVAL;
        goto fail;
    }
    char part[DATASETS_PATH_MAX], obj[DATASETS_PATH_MAX], index[DATASETS_PATH_MAX], dir[4200];
    char err[2 * DATASETS_PATH_MAX + 200];
    datasets_upload_path(b->datasets_dir, u->sha, part);
    datasets_object_path(b->datasets_dir, u->sha, obj);
    datasets_index_path(b->datasets_dir, u->sha, INDEX_XXH128, index);
    snprintf(dir, sizeof dir, "%s/objects", b->datasets_dir);
    /* The index first: an object is never there without it. */
    if (fsync(u->fd) != 0 || fchmod(u->fd, 0440) != 0) {
        rc = -errno;
        snprintf(err, sizeof err, "%s: %s", part, strerror(errno));
    } else {
        rc = atomic_file_write_all(index, u->chunks, (size_t)n_chunks_of(u->size) * CHUNK_SUM_BYTES,
                                   0440, err, sizeof err);
    }
    if (!rc && rename(part, obj) != 0) {
        rc = -errno;
        snprintf(err, sizeof err, "rename %s: %s", part, strerror(errno));
        unlink(index);
    }
    if (!rc && (rc = fsync_dir(dir)) != 0) snprintf(err, sizeof err, "%s: %s", dir, strerror(-rc));
    if (rc) {
        log_warn("dataset %.12s: %s", u->sha, err);
        broker_reply_error(b, m, is_no_space(-rc) ? "no_space" : "io",
                           "the broker cannot store the dataset: %s: nothing was stored", err);
        goto fail;
    }
    upload_close(b, u, false);
    return 0;
fail:
    upload_close(b, u, true);
    return rc ? rc : -EIO;
}

static void on_end(struct broker *b, struct proto_msg *m)
{
    const char *sha, *name;
    bool replace = false;
    if (push_fields(b, m, true, &sha, &name, &replace)) return;
    char owner[STORE_NAME_MAX];
    snprintf(owner, sizeof owner, "%s", sender_name(b));
    if (json_object_get(m->body, "job")) {
        if (output_push_check(b, m, name, owner) != 0) return;
        replace = true;
    }
    gc_cancel(b, sha);
    int64_t size;
    if (!object_present(b, sha, &size)) {
        struct upload *u = upload_find(b, sha);
        if (!u) {
            broker_reply_error(b, m, "not_found",
                               "no push of %s is in progress: send DATASET_PUT again", sha);
            return;
        }
        if (u->end != u->size) {
            broker_reply_error(b, m, "bad_request",
                               "DATASET_END: the push of %.12s has %lld of its %lld bytes", sha,
                               (long long)u->end, (long long)u->size);
            return;
        }
        size = u->size;
        if (upload_finish(b, m, u) != 0) return;
        log_info("dataset %s stored (%lld bytes)", sha, (long long)size);
    }
    char moved[SHA256_HEX_LEN + 1];
    int named = name_check(b, m, name, sha, replace, owner, moved);
    if (named < 0) return;
    struct store_dataset d = {.size = size};
    snprintf(d.name, sizeof d.name, "%s", name);
    snprintf(d.sha256, sizeof d.sha256, "%s", sha);
    snprintf(d.owner, sizeof d.owner, "%s", owner);
    /* The name already means these bytes: nothing to write (nor an owner to change). */
    if (named == 0 && broker_write(b)) return;
    if (named == 0 && store_dataset_put(b->store, &d) != 0) {
        broker_store_failed(b, "dataset put");
        return;
    }
    if (moved[0]) gc_add(b, moved);
    broker_reply(
        b, m->ident, m->ident_len, PROTO_OK,
        json_pack("{s:s, s:s, s:I}", "name", name, "sha256", sha, "size", (json_int_t)size), NULL,
        0);
}

static void on_list(struct broker *b, struct proto_msg *m)
{
    struct store_dataset *v;
    size_t n;
    if (store_datasets_list(b->store, &v, &n) != 0) {
        broker_reply_error(b, m, "store", "datasets: %s", store_errmsg(b->store));
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:I, s:f, s:o, s:I}", "name", v[i].name,
                                              "sha256", v[i].sha256, "size", (json_int_t)v[i].size,
                                              "pushed", v[i].pushed, "owner",
                                              v[i].owner[0] ? json_string(v[i].owner) : json_null(),
                                              "runs", (json_int_t)v[i].runs));
    free(v);
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, json_pack("{s:o}", "datasets", list), NULL,
                 0);
}

static void on_rm(struct broker *b, struct proto_msg *m)
{
    const char *name;
    char err[128];
    if (proto_get_str(m->body, "name", &name, err, sizeof err)) {
        broker_reply_error(b, m, "bad_request", "%s: %s", m->cmd, err);
        return;
    }
    struct store_dataset d;
    int rc = store_dataset_get(b->store, name, &d);
    if (rc == -ENOENT) {
        broker_reply_error(b, m, "not_found", "dataset %.140s: no such dataset (mlq dataset ls)",
                           name);
        return;
    }
    if (rc) {
        broker_reply_error(b, m, "store", "dataset %s: %s", name, store_errmsg(b->store));
        return;
    }
    if (!may_change(b, &d, sender_name(b))) {
        broker_reply_error(b, m, "forbidden",
                           "dataset %s was pushed by %s: only they or an admin "
                           "remove it",
                           name, d.owner[0] ? d.owner : "nobody with a key");
        return;
    }
    /* Jobs hold the bytes, not the name: another name keeping the object
     * lets this one go whatever is queued. */
    struct store_dataset *all;
    size_t n_all;
    bool kept = false;
    if (store_datasets_list(b->store, &all, &n_all) == 0) {
        for (size_t i = 0; i < n_all; i++)
            kept |= strcmp(all[i].sha256, d.sha256) == 0 && strcmp(all[i].name, name) != 0;
        free(all);
    }
    int64_t *ids = NULL;
    size_t n = 0;
    if (!kept && store_dataset_users(b->store, d.sha256, &ids, &n) != 0) {
        broker_reply_error(b, m, "store", "dataset %s: %s", name, store_errmsg(b->store));
        return;
    }
    if (n) {
        char list[512] = "";
        for (size_t i = 0; i < n && strlen(list) < sizeof list - 40; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%lld", i ? ", " : "",
                     (long long)ids[i]);
        broker_reply_error(b, m, "in_use",
                           "dataset %s is needed by %zu queued or running job%s (%s%s): cancel "
                           "them or wait for them to finish",
                           name, n, n == 1 ? "" : "s", list,
                           strlen(list) >= sizeof list - 40 ? ", ..." : "");
        free(ids);
        return;
    }
    free(ids);
    if (broker_write(b)) return;
    if (store_dataset_delete(b->store, name) != 0) {
        broker_store_failed(b, "dataset delete");
        return;
    }
    gc_add(b, d.sha256);
    broker_reply(b, m->ident, m->ident_len, PROTO_OK,
                 json_pack("{s:s, s:s, s:b}", "name", name, "sha256", d.sha256, "deleted", 1), NULL,
                 0);
}

/* The open object sha (opened now if need be, the least recently used one
 * closed for it), or NULL: no such object, or unreadable (logged). */
static struct object *object_get(struct broker *b, const char *sha)
{
    struct datasets *ds = b->datasets;
    struct object *o = NULL, *lru = &ds->obj[0];
    for (int i = 0; i < OBJECTS_OPEN_MAX; i++) {
        if (strcmp(ds->obj[i].sha, sha) == 0) {
            ds->obj[i].used = broker_mono();
            return &ds->obj[i];
        }
        if (!o && !ds->obj[i].sha[0]) o = &ds->obj[i];
        if (ds->obj[i].used < lru->used) lru = &ds->obj[i];
    }
    char path[DATASETS_PATH_MAX];
    if (datasets_object_path(b->datasets_dir, sha, path) != 0) return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    int64_t n = 0;
    unsigned char *chunks = NULL;
    enum chunk_index kind = INDEX_XXH128;
    int ifd = index_open(b, sha, &kind);
    bool ok = ifd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0;
    if (ok) {
        n = n_chunks_of(st.st_size);
        size_t bytes = (size_t)n * index_sum_bytes(kind);
        chunks = malloc(bytes);
        ok = chunks && pread(ifd, chunks, bytes, 0) == (ssize_t)bytes;
    }
    if (ifd >= 0) close(ifd);
    if (!ok) {
        log_limited(&ds->log, LOG_LVL_WARN, "dataset %.12s: cannot read %s or its index", sha,
                    path);
        free(chunks);
        close(fd);
        return NULL;
    }
    if (!o) { /* only an object that exists takes another's place */
        object_close(lru);
        o = lru;
    }
    snprintf(o->sha, sizeof o->sha, "%s", sha);
    o->fd = fd;
    o->size = st.st_size;
    o->map = mapping_open(fd, (size_t)st.st_size);
    o->n_chunks = n;
    o->kind = kind;
    o->chunks = chunks;
    o->used = broker_mono();
    return o;
}

/* The chunk's bytes: in the mapping, or read into the loop's buffer. NULL
 * after replying why. */
static const void *chunk_bytes(struct broker *b, const struct proto_msg *m, struct object *o,
                               int64_t off, size_t len)
{
    if (o->map) return (const char *)o->map->addr + off;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(o->fd, b->datasets->buf + got, len - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            log_limited(&b->datasets->log, LOG_LVL_WARN, "dataset %.12s: read: %s", o->sha,
                        strerror(e));
            send_error_now(b, m, "io", "dataset %.12s: the broker cannot read it: %s", o->sha,
                           strerror(e));
            object_close(o);
            return NULL;
        }
        got += (size_t)r;
    }
    return b->datasets->buf;
}

static void on_fetch(struct broker *b, struct proto_msg *m)
{
    const char *sha;
    int64_t index;
    char err[128];
    if (proto_get_str(m->body, "sha256", &sha, err, sizeof err) ||
        proto_get_int(m->body, "index", &index, err, sizeof err)) {
        send_error_now(b, m, "bad_request", "FETCH: %s", err);
        return;
    }
    /* A fetcher that says nothing checks SHA-256 sums (one older than them). */
    const char *sum = json_string_value(json_object_get(m->body, "sum"));
    bool takes_xxh = sum && strcmp(sum, CHUNK_SUM_NAME) == 0;
    struct trainer *t = trainers_find(b, m->ident, m->ident_len);
    if (t) t->last_seen = broker_mono(); /* a fetching trainer is alive */
    struct object *o = sha256_hex_valid(sha) ? object_get(b, sha) : NULL;
    if (!o) {
        send_error_now(b, m, "not_found", "dataset %.64s: no such dataset on this broker", sha);
        return;
    }
    if (index < 0 || index >= o->n_chunks) {
        send_error_now(b, m, "not_found", "dataset %.12s has chunks 0 to %lld, not %lld", sha,
                       (long long)o->n_chunks - 1, (long long)index);
        return;
    }
    int64_t off = index * CHUNK;
    size_t len = (size_t)(o->size - off < CHUNK ? o->size - off : CHUNK);
    const void *bytes = chunk_bytes(b, m, o, off, len);
    if (!bytes) return;
    char chex[SHA256_HEX_LEN + 1], text[400];
    const unsigned char *entry = o->chunks + (size_t)index * index_sum_bytes(o->kind);
    bool send_xxh = o->kind == INDEX_XXH128 && takes_xxh;
    if (send_xxh) {
        chunk_sum_hex(entry, chex);
    } else if (o->kind == INDEX_SHA256) {
        sha256_hex(entry, chex);
    } else { /* an older fetcher of a newer object: its SHA-256, now */
        unsigned char d[SHA256_BYTES];
        if (sha256_buf(bytes, len, d) != 0) {
            send_error_now(b, m, "io", "dataset %.12s: hashing a chunk failed", sha);
            return;
        }
        sha256_hex(d, chex);
    }
    snprintf(text, sizeof text,
             "{\"sha256\":\"%s\",\"index\":%lld,\"offset\":%lld,\"size\":%lld,\"chunks\":%lld,"
             "\"%s\":\"%s\"}",
             o->sha, (long long)index, (long long)off, (long long)o->size, (long long)o->n_chunks,
             send_xxh ? "chunk_xxh128" : "chunk_sha256", chex);
    if (o->map) {
        atomic_fetch_add(&o->map->refs, 1);
        after_send(b, m, PROTO_CHUNK,
                   proto_send_text_borrowed(b->router, m->ident, m->ident_len, PROTO_CHUNK, text,
                                            (void *)bytes, len, mapping_release, o->map,
                                            ZMQ_DONTWAIT));
    } else {
        send_now(b, m, PROTO_CHUNK, text, bytes, len);
    }
    b->yield_pass = true;
}

void datasets_client_message(struct broker *b, struct proto_msg *m)
{
    const char *c = m->cmd;
    if (strcmp(c, PROTO_DATASET_CHUNK) == 0)
        on_chunk(b, m);
    else if (strcmp(c, PROTO_FETCH) == 0)
        on_fetch(b, m);
    else if (strcmp(c, PROTO_DATASET_PUT) == 0)
        on_put(b, m);
    else if (strcmp(c, PROTO_DATASET_END) == 0)
        on_end(b, m);
    else if (strcmp(c, PROTO_DATASETS) == 0)
        on_list(b, m);
    else if (strcmp(c, PROTO_DATASET_RM) == 0)
        on_rm(b, m);
}

void datasets_trainer_message(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    int64_t job;
    const char *sha;
    char err[128];
    if (proto_get_int(m->body, "job", &job, err, sizeof err) ||
        proto_get_str(m->body, "sha256", &sha, err, sizeof err)) {
        broker_drop_log(b, "DATASET from %s: %s", t->name, err);
        return;
    }
    if (!sha256_hex_valid(sha)) {
        broker_drop_log(b, "DATASET from %s: sha256 is not 64 lower-case hex digits", t->name);
        return;
    }
    if (t->job != job) {
        broker_drop_log(b, "DATASET from %s for job %lld, which is not its job", t->name,
                        (long long)job);
        return;
    }
    if (broker_write(b)) return;
    int rc = store_set_run_dataset(b->store, job, sha);
    if (rc && rc != -ENOENT) broker_store_failed(b, "run dataset");
}

/* At start-up: objects whose last name went while a broker was stopping or
 * killed (before its removal ran) go now, by the same rule. */
static void scan_objects(struct broker *b)
{
    char dir[DATASETS_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/objects", b->datasets_dir);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (sha256_hex_valid(e->d_name)) gc_add(b, e->d_name);
    closedir(d);
}

/* Pushes abandoned for good: a .part not written for PART_KEEP_S goes,
 * unless its push is open now. A resume is the client's to make within
 * that time; after it the push starts again from its first byte. */
static void expire_parts(struct broker *b)
{
    char dir[DATASETS_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/uploads", b->datasets_dir);
    DIR *d = opendir(dir);
    if (!d) return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sha[SHA256_HEX_LEN + 1];
        struct stat st;
        if (strlen(e->d_name) != SHA256_HEX_LEN + 5 ||
            strcmp(e->d_name + SHA256_HEX_LEN, ".part") != 0)
            continue;
        memcpy(sha, e->d_name, SHA256_HEX_LEN);
        sha[SHA256_HEX_LEN] = '\0';
        if (!sha256_hex_valid(sha) || upload_find(b, sha) ||
            fstatat(dirfd(d), e->d_name, &st, 0) != 0 || difftime(now, st.st_mtime) < PART_KEEP_S)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("dataset %.12s: a push not resumed for %.0f days: its partial upload "
                     "(%lld bytes) was removed",
                     sha, difftime(now, st.st_mtime) / 86400.0, (long long)st.st_size);
    }
    closedir(d);
}

double datasets_tick(struct broker *b, double now)
{
    struct datasets *ds = b->datasets;
    if (!ds->scanned) {
        ds->scanned = true;
        scan_objects(b);
    }
    if (now >= ds->parts_at) {
        expire_parts(b);
        ds->parts_at = now + PART_SCAN_S;
    }
    double next = now + UPLOAD_IDLE_S;
    if (ds->parts_at < next) next = ds->parts_at;
    for (int i = 0; i < UPLOADS_MAX; i++) {
        struct upload *u = &ds->up[i];
        if (!u->sha[0]) continue;
        if (u->hashed < u->end) {
            int rc = upload_rehash_step(b, u);
            if (rc) {
                /* An unreadable part: its push starts again (the next
                 * chunk is told not_found, the client asks again). */
                log_warn("dataset %.12s: cannot read the partial upload: %s; it was removed",
                         u->sha, strerror(-rc));
                upload_close(b, u, true);
                continue;
            }
            if (u->hashed < u->end) next = now; /* the next chunk at the next pass */
        }
        if (now - u->used >= UPLOAD_IDLE_S)
            /* Its .part stays for a resume, unless it holds nothing or another
             * push stored the object. */
            upload_close(b, u, u->end == 0 || object_present(b, u->sha, NULL));
        else if (u->used + UPLOAD_IDLE_S < next)
            next = u->used + UPLOAD_IDLE_S;
    }
    for (int i = 0; i < OBJECTS_OPEN_MAX; i++) {
        struct object *o = &ds->obj[i];
        if (!o->sha[0]) continue;
        if (now - o->used >= OBJECT_IDLE_S)
            object_close(o);
        else if (o->used + OBJECT_IDLE_S < next)
            next = o->used + OBJECT_IDLE_S;
    }
    /* Removed names' objects, once the removal is committed. */
    if (ds->n_gc && !store_in_transaction(b->store)) {
        for (size_t i = 0; i < ds->n_gc; i++) {
            struct store_dataset d;
            char path[DATASETS_PATH_MAX];
            int64_t *ids = NULL;
            size_t n = 0;
            if (store_dataset_by_sha(b->store, ds->gc[i], &d) != -ENOENT ||
                store_dataset_users(b->store, ds->gc[i], &ids, &n) != 0 || n) {
                free(ids);
                continue;
            }
            for (int j = 0; j < OBJECTS_OPEN_MAX; j++)
                if (strcmp(ds->obj[j].sha, ds->gc[i]) == 0) object_close(&ds->obj[j]);
            if (datasets_object_path(b->datasets_dir, ds->gc[i], path) == 0) unlink(path);
            if (datasets_index_path(b->datasets_dir, ds->gc[i], INDEX_XXH128, path) == 0)
                unlink(path);
            if (datasets_index_path(b->datasets_dir, ds->gc[i], INDEX_SHA256, path) == 0)
                unlink(path);
            log_info("dataset %s removed (no name keeps it)", ds->gc[i]);
        }
        ds->n_gc = 0;
    }
    return next;
}

/* One dataset object of a spec (dataset, input or validation). */
static int resolve_one(struct broker *b, json_t *d, const char *field, char *err, size_t errlen)
{
    if (!json_is_object(d)) return 0; /* a path as a string, or bad: the spec's parser says */
    json_t *name = json_object_get(d, "name"), *sha = json_object_get(d, "sha256");
    struct store_dataset ds;
    int rc;
    if (json_is_string(sha)) {
        /* What the spec meant when it was written: a name moved since does not change it. */
        const char *h = json_string_value(sha);
        if (!sha256_hex_valid(h))
            return errmsg(err, errlen, -EINVAL,
                          "%s.sha256: must be 64 lower-case hex digits, not '%.80s'", field, h);
        rc = store_dataset_by_sha(b->store, h, &ds);
        if (rc == -ENOENT)
            return errmsg(err, errlen, -EINVAL,
                          "%s.sha256 %s: no pushed dataset has that hash (mlq dataset ls)", field,
                          h);
        if (rc) return errmsg(err, errlen, rc, "%s: %s", field, store_errmsg(b->store));
        return 0;
    }
    if (!json_is_string(name) || sha) return 0; /* the spec's parser says what is wrong */
    rc = store_dataset_get(b->store, json_string_value(name), &ds);
    if (rc == -ENOENT)
        return errmsg(err, errlen, -EINVAL,
                      "%s.name '%.140s': no dataset of that name (mlq dataset ls)", field,
                      json_string_value(name));
    if (rc) return errmsg(err, errlen, rc, "%s: %s", field, store_errmsg(b->store));
    return json_object_set_new(d, "sha256", json_string(ds.sha256)) == 0
               ? 0
               : errmsg(err, errlen, -ENOMEM, "out of memory");
}

int datasets_resolve_spec(struct broker *b, json_t *spec, char *err, size_t errlen)
{
    static const char *const fields[] = {"dataset", "input", "validation"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        int rc = resolve_one(b, json_object_get(spec, fields[i]), fields[i], err, errlen);
        if (rc) return rc;
    }
    return 0;
}
