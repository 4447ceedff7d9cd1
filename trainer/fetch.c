#define _GNU_SOURCE /* sync_file_range */
#include "fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "chunk_sum.h"
#include "errmsg.h"
#include "log.h"

#define CHUNK ((int64_t)DATASET_CHUNK_BYTES)

static struct fetch_slot *slot_of(struct fetch *f, int64_t index)
{
    return &f->slot[index % DATASET_WINDOW];
}

static void slot_clear(struct fetch_slot *s)
{
    free(s->bin);
    memset(s, 0, sizeof *s);
}

int fetch_open(struct fetch *f, struct dscache *cache, const char *sha, int64_t job, char *err,
               size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->cache = cache;
    f->job = job;
    f->size = -1;
    f->resend_s = FETCH_RESEND_S;
    f->state = FETCH_RUNNING;
    snprintf(f->sha, sizeof f->sha, "%s", sha);
    if (dscache_part_path(cache, sha, f->part))
        return errmsg(err, errlen, -EINVAL, "dataset %.64s: not a SHA-256", sha);
    f->fd = open(f->part, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (f->fd < 0) return errmsg(err, errlen, -errno, "%s: %s", f->part, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return errmsg(err, errlen, -errno, "%s: %s", f->part, strerror(errno));
    /* Chunks are written in order after their hash matched, so the part is
     * a verified prefix; a torn last write is cut off with the last whole
     * chunk, which is asked for first. */
    int64_t keep = (int64_t)st.st_size / CHUNK;
    if (keep > 0) keep--;
    if (ftruncate(f->fd, keep * CHUNK) != 0)
        return errmsg(err, errlen, -errno, "%s: %s", f->part, strerror(errno));
    int rc = sha256_follow(&f->whole, f->fd);
    if (rc) return errmsg(err, errlen, rc, "cannot start hashing: %s", strerror(-rc));
    sha256_follow_to(f->whole, keep * CHUNK); /* the resumed prefix, hashed while the rest comes */
    f->written = f->next = keep;
    f->resumed = keep * CHUNK;
    if (keep)
        log_info("dataset %s: resuming the fetch at %lld MB (%s)", sha,
                 (long long)(keep * CHUNK >> 20), f->part);
    return 0;
}

void fetch_close(struct fetch *f)
{
    for (int i = 0; i < DATASET_WINDOW; i++)
        slot_clear(&f->slot[i]);
    sha256_follow_stop(f->whole);
    f->whole = NULL;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

/* A fetch that cannot finish: its part is useless (or the cause), so it goes. */
static enum fetch_state fail(struct fetch *f)
{
    f->state = FETCH_FAILED;
    sha256_follow_stop(f->whole);
    f->whole = NULL;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (unlink(f->part) != 0 && errno != ENOENT)
        log_warn("dataset cache: cannot remove %s: %s", f->part, strerror(errno));
    for (int i = 0; i < DATASET_WINDOW; i++)
        slot_clear(&f->slot[i]);
    log_warn("%s", f->err);
    return f->state;
}

static int send_fetch(struct fetch *f, void *sock, int64_t index)
{
    json_t *b = json_pack("{s:s, s:I, s:s}", "sha256", f->sha, "index", (json_int_t)index, "sum",
                          CHUNK_SUM_NAME);
    if (f->job > 0) json_object_set_new(b, "job", json_integer(f->job));
    int rc = proto_send(sock, NULL, 0, PROTO_FETCH, b, NULL, 0, ZMQ_DONTWAIT);
    json_decref(b);
    return rc;
}

void fetch_pump(struct fetch *f, void *sock, double now)
{
    if (f->state != FETCH_RUNNING || !sock) return;
    /* Until the first CHUNK says how many there are, one at a time. */
    int64_t end = f->size < 0 ? f->written + 1 : f->written + DATASET_WINDOW;
    if (f->size >= 0 && end > f->chunks) end = f->chunks;
    for (; f->next < end; f->next++)
        slot_clear(slot_of(f, f->next));
    for (int64_t i = f->written; i < f->next; i++) {
        struct fetch_slot *s = slot_of(f, i);
        if (s->bin || (s->sent && now - s->sent_at < f->resend_s)) continue;
        if (send_fetch(f, sock, i) != 0) break; /* the queue is full: later */
        if (s->sent) {
            f->resends++;
            log_debug("dataset %s: chunk %lld unanswered for %.0f s, asked again", f->sha,
                      (long long)i, now - s->sent_at);
        }
        s->sent = true;
        s->sent_at = now;
    }
}

double fetch_deadline(const struct fetch *f)
{
    double t = INFINITY;
    if (f->state != FETCH_RUNNING) return t;
    for (int64_t i = f->written; i < f->next; i++) {
        const struct fetch_slot *s = &f->slot[i % DATASET_WINDOW];
        if (s->bin) continue;
        double due = s->sent ? s->sent_at + f->resend_s : 0;
        if (due < t) t = due;
    }
    return t;
}

void fetch_reset_window(struct fetch *f)
{
    for (int64_t i = f->written; i < f->next; i++)
        slot_of(f, i)->sent = false;
}

bool fetch_wants(const struct fetch *f, const struct proto_msg *m)
{
    if (f->state != FETCH_RUNNING || !m->body) return false;
    const char *sha = json_string_value(json_object_get(m->body, "sha256"));
    if (strcmp(m->cmd, PROTO_CHUNK) == 0) return sha && strcmp(sha, f->sha) == 0;
    if (strcmp(m->cmd, PROTO_ERROR) != 0) return false;
    if (sha) return strcmp(sha, f->sha) == 0;
    /* The broker's errors to a FETCH; a trainer's other messages get only
     * name_in_use or forbidden. */
    const char *code = json_string_value(json_object_get(m->body, "code"));
    return code && (strcmp(code, "not_found") == 0 || strcmp(code, "io") == 0 ||
                    strcmp(code, "bad_request") == 0);
}

/* Writes the chunks whose turn has come; the last one finishes the file. */
static enum fetch_state flush(struct fetch *f)
{
    for (;;) {
        struct fetch_slot *s = slot_of(f, f->written);
        if (f->written >= f->next || !s->bin) break;
        const unsigned char *p = s->bin;
        size_t left = s->len;
        off_t off = (off_t)(f->written * CHUNK);
        while (left > 0) {
            ssize_t n = pwrite(f->fd, p, left, off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                errmsg(f->err, sizeof f->err, 0, "dataset %s: writing the trainer's cache %s: %s%s",
                       f->sha, f->part, strerror(errno),
                       errno == ENOSPC ? " (free space there, or lower "
                                         "trainer.dataset_cache_mb)"
                                       : "");
                return fail(f);
            }
            p += n;
            left -= (size_t)n;
            off += n;
        }
        /* Start writing the chunk back now, without waiting: the fsync at
         * the end (dscache_commit, in this I/O thread) then has a chunk or
         * two left to flush, not the whole file, and heartbeats go on
         * (four trainers' 225 MB fsyncs on one disk outlasted the 3 s
         * liveness). Advisory: an error here is the fsync's to report. */
        (void)sync_file_range(f->fd, (off64_t)(f->written * CHUNK), (off64_t)s->len,
                              SYNC_FILE_RANGE_WRITE);
        f->written++;
        sha256_follow_to(f->whole, f->written == f->chunks ? f->size : f->written * CHUNK);
        slot_clear(s);
    }
    if (f->size < 0 || f->written < f->chunks) return f->state;
    unsigned char d[SHA256_BYTES];
    char hex[SHA256_HEX_LEN + 1];
    int rc = sha256_follow_final(f->whole, f->size, d);
    f->whole = NULL;
    if (rc != 0) {
        errmsg(f->err, sizeof f->err, 0, "dataset %s: hashing %s failed: %s", f->sha, f->part,
               strerror(-rc));
        return fail(f);
    }
    sha256_hex(d, hex);
    if (strcmp(hex, f->sha) != 0) {
        /* Every chunk matched the broker's index, yet the whole does not:
         * the broker's copy or index is wrong; refetching would not help. */
        snprintf(f->err, sizeof f->err,
                 "dataset %s: the fetched file hashes to %s: the broker's copy does not match "
                 "its hash",
                 f->sha, hex);
        return fail(f);
    }
    char err[512];
    if (dscache_commit(f->cache, f->sha, f->fd, err, sizeof err) != 0) {
        errmsg(f->err, sizeof f->err, 0, "dataset %s: %s", f->sha, err);
        return fail(f);
    }
    close(f->fd);
    f->fd = -1;
    f->state = FETCH_DONE;
    return f->state;
}

/* The first CHUNK: the file's size, and room for it in the cache. */
static int learn_size(struct fetch *f, int64_t size, int64_t chunks)
{
    if (size < 1 || chunks != (size + CHUNK - 1) / CHUNK) {
        snprintf(f->err, sizeof f->err,
                 "dataset %s: the broker's CHUNK says %lld bytes in %lld chunks", f->sha,
                 (long long)size, (long long)chunks);
        return -EPROTO;
    }
    if (f->written > chunks) {
        /* A part longer than the file: not this file's; start again. */
        log_warn("dataset %s: %s is longer than the dataset: fetched again", f->sha, f->part);
        sha256_follow_stop(f->whole);
        f->whole = NULL;
        int rc = ftruncate(f->fd, 0) != 0 ? -errno : sha256_follow(&f->whole, f->fd);
        if (rc) {
            errmsg(f->err, sizeof f->err, 0, "dataset %s: %s: %s", f->sha, f->part, strerror(-rc));
            return -EIO;
        }
        for (int i = 0; i < DATASET_WINDOW; i++)
            slot_clear(&f->slot[i]);
        f->written = f->next = f->resumed = 0;
    }
    char err[600];
    int rc = dscache_make_room(f->cache, f->sha, size, f->written * CHUNK, err, sizeof err);
    if (rc) {
        errmsg(f->err, sizeof f->err, 0, "%s", err);
        return rc;
    }
    f->size = size;
    f->chunks = chunks;
    return 0;
}

static enum fetch_state on_chunk(struct fetch *f, struct proto_msg *m)
{
    json_t *b = m->body;
    int64_t index = json_integer_value(json_object_get(b, "index"));
    int64_t offset = json_integer_value(json_object_get(b, "offset"));
    int64_t size = json_integer_value(json_object_get(b, "size"));
    int64_t chunks = json_integer_value(json_object_get(b, "chunks"));
    /* A late reply to a FETCH sent twice, or a chunk already written. */
    if (index < f->written || index >= f->next || slot_of(f, index)->bin) return f->state;
    if (f->size < 0) {
        if (learn_size(f, size, chunks) != 0) return fail(f);
        if (index >= f->next) return f->state; /* the part was reset */
    } else if (size != f->size || chunks != f->chunks) {
        snprintf(f->err, sizeof f->err,
                 "dataset %s: the broker's size changed during the fetch (%lld, then %lld bytes)",
                 f->sha, (long long)f->size, (long long)size);
        return fail(f);
    }
    struct fetch_slot *s = slot_of(f, index);
    int64_t expect = size - index * CHUNK < CHUNK ? size - index * CHUNK : CHUNK;
    if (offset != index * CHUNK || !m->bin || (int64_t)m->bin_len != expect ||
        !chunk_matches(b, m->bin, m->bin_len)) {
        f->rejected++;
        if (++s->bad >= FETCH_MAX_BAD) {
            snprintf(f->err, sizeof f->err,
                     "dataset %s: chunk %lld failed its hash %d times: the transfer keeps "
                     "corrupting it",
                     f->sha, (long long)index, s->bad);
            return fail(f);
        }
        log_warn("dataset %s: chunk %lld (%zu bytes) does not match its hash: asked again", f->sha,
                 (long long)index, m->bin_len);
        s->sent = false; /* the next pump asks again at once */
        return f->state;
    }
    s->bin = m->bin;
    s->len = m->bin_len;
    m->bin = NULL;
    m->bin_len = 0;
    f->fetched += (int64_t)s->len;
    return flush(f);
}

enum fetch_state fetch_on_message(struct fetch *f, struct proto_msg *m, void *sock, double now)
{
    if (f->state != FETCH_RUNNING) return f->state;
    if (strcmp(m->cmd, PROTO_ERROR) == 0) {
        const char *why = json_string_value(json_object_get(m->body, "error"));
        const char *code = json_string_value(json_object_get(m->body, "code"));
        if (code && strcmp(code, "not_found") == 0)
            snprintf(f->err, sizeof f->err,
                     "dataset %s: the broker has no such dataset (mlq dataset ls): %s", f->sha,
                     why ? why : "not_found");
        else
            errmsg(f->err, sizeof f->err, 0, "dataset %s: the broker refused the fetch (%s): %s",
                   f->sha, code ? code : "error", why ? why : "no reason given");
        return fail(f);
    }
    enum fetch_state st = on_chunk(f, m);
    if (st == FETCH_RUNNING) fetch_pump(f, sock, now);
    return st;
}
