/* Fetching one pushed dataset from the broker into the trainer's cache
 * (docs/protocol.md, "Pushed datasets"; docs/trainer.md).
 *
 * The I/O thread drives it: fetch_pump sends FETCH {"sha256","index","job",
 * "sum"} for at most DATASET_WINDOW chunks not yet answered (credit-based
 * flow control) and sends a FETCH again when its CHUNK has not come after
 * resend_s (a reply can be dropped at a full queue, or lost with a
 * reconnect); fetch_on_message takes each CHUNK, checks it against its sum
 * (chunk_xxh128, or an older broker's chunk_sha256; a bad one is asked for
 * again) and writes the chunks in order with pwrite into partial/<sha>.part,
 * so that the part's size is always a verified prefix: a fetch after a
 * trainer kill resumes from it. At the end the whole file's SHA-256 (hashed
 * on a thread behind the writes, sha256_follow) must be sha; the part is
 * fsynced and renamed into objects/. Per CHUNK the work is a sum of at most
 * 1 MiB and a pwrite, so heartbeats keep flowing.
 *
 * A fetch that cannot finish (not_found, larger than the cache, a full
 * disk, a write error, a chunk bad FETCH_MAX_BAD times, the whole hash
 * wrong) fails with the reason in fetch_error and removes its part; one
 * closed while running (a cancel, a shutdown) keeps it for a resume. */
#ifndef MLQ_FETCH_H
#define MLQ_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dscache.h"
#include "proto.h"
#include "sha256.h"

#define FETCH_RESEND_S 10.0 /* an unanswered FETCH is sent again after this */
#define FETCH_MAX_BAD 5     /* a chunk failing its hash this often fails the fetch */

enum fetch_state { FETCH_RUNNING, FETCH_DONE, FETCH_FAILED };

struct fetch_slot {
    bool sent;      /* a FETCH is out for it */
    double sent_at; /* when (the clock the caller passes) */
    int bad;        /* replies that failed the chunk's hash */
    void *bin;      /* the verified bytes, until their turn to be written */
    size_t len;
};

struct fetch {
    struct dscache *cache;
    char sha[SHA256_HEX_LEN + 1];
    int64_t job;     /* sent in FETCH for the broker's logs; 0: none */
    double resend_s; /* FETCH_RESEND_S; tests shorten it */
    char part[DSCACHE_PATH_MAX];
    int fd;                                 /* on part, -1 when closed */
    int64_t size;                           /* the file's bytes, -1 until the first CHUNK says */
    int64_t chunks;                         /* ceil(size / DATASET_CHUNK_BYTES) */
    int64_t written;                        /* chunks in the part, in order */
    int64_t next;                           /* the next chunk to ask for: [written, next) are out */
    int64_t resumed;                        /* bytes the part held at the start */
    int64_t fetched;                        /* chunk bytes received and kept */
    int64_t resends;                        /* FETCHes sent again after resend_s */
    int64_t rejected;                       /* chunks that failed their hash */
    struct sha256_follower *whole;          /* the whole file's hash, behind the writes */
    struct fetch_slot slot[DATASET_WINDOW]; /* chunk i in slot[i % DATASET_WINDOW] */
    enum fetch_state state;
    char err[768];
};

/* Opens sha's part in cache (created if missing), hashes what it holds and
 * cuts it to whole chunks, less the last (asked for again, so that the
 * first FETCH is always in range). The fetch is then RUNNING: call
 * fetch_pump. 0 or -errno with err. */
int fetch_open(struct fetch *f, struct dscache *cache, const char *sha, int64_t job, char *err,
               size_t errlen);
/* Frees what f holds; the part stays on disk unless the fetch failed. */
void fetch_close(struct fetch *f);

/* Sends the FETCHes the window allows and those overdue, on sock (a DEALER
 * to the broker) with ZMQ_DONTWAIT; what cannot be sent now is sent on a
 * later call. now: seconds on any monotonic clock. */
void fetch_pump(struct fetch *f, void *sock, double now);
/* The earliest time fetch_pump has something to resend, or +inf. */
double fetch_deadline(const struct fetch *f);
/* Resend every unanswered FETCH on the next pump (a new connection). */
void fetch_reset_window(struct fetch *f);

/* Whether m (CHUNK, or ERROR) is an answer for f. An ERROR names its
 * dataset with "sha256" when the broker gives it; one without is taken as
 * f's when its code is one a FETCH gets (not_found, io, bad_request). */
bool fetch_wants(const struct fetch *f, const struct proto_msg *m);
/* Takes a CHUNK or ERROR for f (fetch_wants), sends what it makes
 * possible, and returns the state. A CHUNK's bytes are taken from m. */
enum fetch_state fetch_on_message(struct fetch *f, struct proto_msg *m, void *sock, double now);

#endif
