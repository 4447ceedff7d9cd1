/* Sending a predict job's output to the broker's dataset store over the
 * trainer's own connection (spec "output": {"push": true}; docs/protocol.md,
 * "Pushed datasets"), so that the client's host fetches it.
 *
 * The I/O thread drives it, as it drives a fetch: DATASET_PUT {"job",
 * "name", "sha256", "size"} asks where to start, then at most
 * DATASET_WINDOW DATASET_CHUNKs are unanswered, then DATASET_END, whose OK
 * means the file is durable, verified and named. Every message carries the
 * job: the broker takes a trainer's push only for the job its connection
 * holds, under the name the job's spec gives. An answer that does not come
 * within resend_s (a reply dropped at a full queue, a reconnect, a broker
 * restart) is met with a new DATASET_PUT, which says where to go on from. */
#ifndef MLQ_UPLOAD_H
#define MLQ_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "sha256.h"
#include "spec.h"

#define UPLOAD_RESEND_S 10.0 /* an unanswered PUT or chunk: ask where the push stands */
#define UPLOAD_RESYNC_MAX 8  /* new DATASET_PUTs of one upload before it fails */

enum upload_state { UPLOAD_RUNNING, UPLOAD_DONE, UPLOAD_FAILED };
enum upload_phase { UPLOAD_PUT, UPLOAD_CHUNKS, UPLOAD_END };

struct upload {
    char path[4096];
    char name[SPEC_DATASET_NAME_MAX + 1];
    char sha[SHA256_HEX_LEN + 1];
    int64_t job;
    int64_t size;
    int fd;
    unsigned char *buf; /* one chunk */
    double resend_s;    /* UPLOAD_RESEND_S; tests shorten it */
    enum upload_phase phase;
    bool asked;      /* the phase's PUT or END is out, unanswered */
    double asked_at; /* when it went, or the last answer came */
    int64_t acked;   /* bytes the broker holds, in order */
    int64_t next;    /* the next chunk's offset: [acked, next) are out */
    int64_t sent;    /* chunk bytes sent, resends included */
    int resyncs;
    enum upload_state state;
    char err[768];
};

/* Opens the file at path, of size bytes hashing to sha (the worker thread
 * hashed it), for job's output under name: RUNNING (call upload_pump), or
 * FAILED with why in u->err (a missing argument, the file unreadable). */
enum upload_state upload_open(struct upload *u, const char *path, const char *name, const char *sha,
                              int64_t size, int64_t job);
/* Closes the file and frees the buffer; the file stays (the caller owns it). */
void upload_close(struct upload *u);

/* Sends what the phase allows, on sock (a DEALER to the broker) with
 * ZMQ_DONTWAIT, and asks again when an answer is overdue. now: seconds on
 * any monotonic clock. */
void upload_pump(struct upload *u, void *sock, double now);
/* A new connection: what was out died with the old one; ask where it stands. */
void upload_reset(struct upload *u);

/* Whether m is an answer for u: an OK naming u's sha256, or an ERROR (a
 * trainer's connection gets no other ERROR while it uploads but HELLO's
 * name_in_use, which is not u's). */
bool upload_wants(const struct upload *u, const struct proto_msg *m);
/* Takes an answer for u (upload_wants), sends what it makes possible, and
 * returns the state. */
enum upload_state upload_on_message(struct upload *u, const struct proto_msg *m, void *sock,
                                    double now);

#endif
