/* The chunk loops of mlq dataset push / get (dataset_transfer.h). A push
 * hashes the file, asks DATASET_PUT where to start (the broker may hold it
 * already, or part of it), keeps DATASET_WINDOW chunks in flight and ends
 * with DATASET_END, whose OK means durable and verified. A lost reply, a
 * broker restart or an upload the broker closed for idleness is met by a
 * new DATASET_PUT, which says where to go on from. A fetch keeps
 * DATASET_WINDOW FETCHes unanswered at most, sends one again after
 * FETCH_RESEND_S, verifies each chunk against its sum and the whole file
 * against the address before the file appears. */
#include "dataset_transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "atomic_file.h"
#include "chunk_sum.h"
#include "cli.h"
#include "proto.h"
#include "sha256.h"

#define CHUNK ((int64_t)DATASET_CHUNK_BYTES)
#define REPLY_WAIT_MS 10000 /* a chunk's answer, before the push asks where it stands */
#define RESYNC_MAX 8        /* new DATASET_PUTs of one push before it gives up */
#define FETCH_RESEND_S 10.0 /* an unanswered FETCH is sent again */
#define BAD_CHUNKS_MAX 16   /* chunks that fail their hash before a fetch gives up */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The next message within ms: 1 with *m, 0 on timeout, or an exit code (< 0
 * negated) after printing why. */
static int recv_within(struct cli_broker *conn, int ms, struct proto_msg *m)
{
    int w = cli_broker_wait(conn, ZMQ_POLLIN, ms);
    if (w <= 0) return w;
    char err[256];
    if (proto_recv(conn->sock, false, m, 0, err, sizeof err) != 0) {
        fprintf(stderr, "mlq: bad reply from the broker: %s\n", err);
        return -EXIT_FAILURE_GENERIC;
    }
    return 1;
}

static const char *code_of(const struct proto_msg *m)
{
    return json_string_value(json_object_get(m->body, "code"));
}

/* Prints an ERROR's text and returns its exit code. */
static int print_error(const struct proto_msg *m)
{
    const char *text = json_string_value(json_object_get(m->body, "error"));
    fprintf(stderr, "mlq: %s\n", text ? text : "the broker refused the request");
    return cli_broker_exit_code(code_of(m));
}

static int unreachable(const struct cli_broker *conn)
{
    cli_broker_unreachable(conn);
    return EXIT_UNAVAILABLE;
}

/* EXIT_OK when a message can be sent, or the exit code after saying why not
 * (a send on a socket whose handshake was refused would block). */
static int ready_to_send(struct cli_broker *conn)
{
    int w = cli_broker_wait(conn, ZMQ_POLLOUT, cli_request_timeout_ms());
    return w > 0 ? EXIT_OK : w < 0 ? -w : unreachable(conn);
}

/* A stale answer to a chunk sent before a DATASET_PUT (its OK has no "have",
 * its ERROR is about the chunk's place). */
static bool stale_chunk_reply(const struct proto_msg *m)
{
    if (strcmp(m->cmd, PROTO_OK) == 0) return !json_object_get(m->body, "have");
    const char *code = code_of(m);
    return strcmp(m->cmd, PROTO_ERROR) == 0 && code &&
           (strcmp(code, "bad_offset") == 0 || strcmp(code, "not_found") == 0);
}

/* DATASET_PUT: where the push starts. EXIT_OK or the exit code (printed). */
static int put(struct cli_broker *conn, const char *name, const char *sha, int64_t size,
               bool replace, int64_t *offset, bool *have)
{
    int ready = ready_to_send(conn);
    if (ready != EXIT_OK) return ready;
    json_t *body = json_pack("{s:s, s:s, s:I, s:b}", "name", name, "sha256", sha, "size",
                             (json_int_t)size, "replace", replace);
    int rc = body ? proto_send(conn->sock, NULL, 0, PROTO_DATASET_PUT, body, NULL, 0, 0) : -ENOMEM;
    json_decref(body);
    if (rc) return unreachable(conn);
    double until = mono_s() + cli_request_timeout_ms() / 1000.0;
    for (;;) {
        int ms = (int)((until - mono_s()) * 1000.0);
        struct proto_msg m;
        int got = ms > 0 ? recv_within(conn, ms, &m) : 0;
        if (got < 0) return -got;
        if (got == 0) return unreachable(conn);
        if (stale_chunk_reply(&m)) {
            proto_msg_clear(&m);
            continue;
        }
        int code = EXIT_OK;
        json_t *off = json_object_get(m.body, "offset");
        if (strcmp(m.cmd, PROTO_OK) != 0)
            code = print_error(&m);
        else if (!json_is_integer(off) || json_integer_value(off) < 0 ||
                 json_integer_value(off) > size) {
            fprintf(stderr, "mlq: bad DATASET_PUT answer from the broker\n");
            code = EXIT_FAILURE_GENERIC;
        } else {
            *offset = json_integer_value(off);
            *have = json_is_true(json_object_get(m.body, "have"));
        }
        proto_msg_clear(&m);
        return code;
    }
}

static int send_chunk(struct cli_broker *conn, int fd, unsigned char *buf, const char *sha,
                      int64_t off, int64_t size, const char *path)
{
    size_t len = (size_t)(size - off < CHUNK ? size - off : CHUNK);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "mlq: %s: %s\n", path, n < 0 ? strerror(errno) : "shorter than it was");
            return EXIT_FAILURE_GENERIC;
        }
        got += (size_t)n;
    }
    char text[160];
    snprintf(text, sizeof text, "{\"sha256\":\"%s\",\"offset\":%lld}", sha, (long long)off);
    int ready = ready_to_send(conn);
    if (ready != EXIT_OK) return ready;
    return proto_send_text(conn->sock, NULL, 0, PROTO_DATASET_CHUNK, text, buf, len, 0) == 0
               ? EXIT_OK
               : unreachable(conn);
}

/* The chunks from *acked to size, DATASET_WINDOW in flight. */
static int send_chunks(struct cli_broker *conn, int fd, const char *path, const char *name,
                       const char *sha, int64_t size, bool replace, int64_t *acked, int64_t *sent)
{
    unsigned char *buf = malloc(DATASET_CHUNK_BYTES);
    if (!buf) {
        fprintf(stderr, "mlq: out of memory\n");
        return EXIT_FAILURE_GENERIC;
    }
    int64_t next = *acked;
    int inflight = 0, resyncs = 0, code = EXIT_OK;
    while (*acked < size) {
        while (inflight < DATASET_WINDOW && next < size) {
            if ((code = send_chunk(conn, fd, buf, sha, next, size, path)) != EXIT_OK) goto out;
            *sent += (size - next < CHUNK ? size - next : CHUNK);
            next += CHUNK;
            inflight++;
        }
        struct proto_msg m;
        int got = recv_within(conn, REPLY_WAIT_MS, &m);
        if (got < 0) {
            code = -got;
            goto out;
        }
        if (got > 0) {
            json_t *off = json_object_get(m.body, "offset");
            bool ok = strcmp(m.cmd, PROTO_OK) == 0 && json_is_integer(off);
            bool lost = !ok && stale_chunk_reply(&m);
            if (ok) {
                if (json_integer_value(off) > *acked) *acked = json_integer_value(off);
                inflight--;
            } else if (!lost) {
                code = print_error(&m);
            }
            proto_msg_clear(&m);
            if (code != EXIT_OK) goto out;
            if (ok) continue;
        }
        /* No answer, or the broker lost the push's place: ask where it stands. */
        if (++resyncs > RESYNC_MAX) {
            code = unreachable(conn);
            goto out;
        }
        bool have = false;
        if ((code = put(conn, name, sha, size, replace, acked, &have)) != EXIT_OK) goto out;
        if (have) *acked = size;
        next = *acked;
        inflight = 0;
    }
out:
    free(buf);
    return code;
}

int dataset_push_file(const char *endpoint, const char *path, const char *name, bool replace,
                      int (*gate)(void *), void *gate_arg, struct dataset_pushed *out)
{
    memset(out, 0, sizeof *out);
    char err[1024];
    long long size;
    int hashed = sha256_file(path, out->sha256, &size, err, sizeof err);
    int gated = gate ? gate(gate_arg) : EXIT_OK;
    if (gated != EXIT_OK) return gated; /* the gate's reason first: it says more */
    if (hashed != 0) {
        fprintf(stderr, "mlq: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    out->size = size;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "mlq: %s: %s\n", path, strerror(errno));
        return EXIT_FAILURE_GENERIC;
    }
    struct cli_broker conn;
    int code = cli_broker_open(&conn, endpoint);
    if (code != EXIT_OK) {
        close(fd);
        return code;
    }
    int64_t offset = 0;
    double t0 = mono_s();
    code = put(&conn, name, out->sha256, size, replace, &offset, &out->have);
    out->resumed_at = out->have ? 0 : offset;
    if (code == EXIT_OK && !out->have && offset < size)
        code = send_chunks(&conn, fd, path, name, out->sha256, size, replace, &offset, &out->sent);
    if (code == EXIT_OK) {
        /* END fsyncs the whole file on the broker: give it time for that. */
        json_t *body =
            json_pack("{s:s, s:s, s:b}", "sha256", out->sha256, "name", name, "replace", replace);
        code = ready_to_send(&conn);
        if (code == EXIT_OK &&
            (!body || proto_send(conn.sock, NULL, 0, PROTO_DATASET_END, body, NULL, 0, 0) != 0))
            code = unreachable(&conn);
        json_decref(body);
        int ms = cli_request_timeout_ms() + 60000 + (int)(size / (20 << 20)) * 1000;
        double until = mono_s() + ms / 1000.0;
        for (bool waiting = code == EXIT_OK; waiting;) {
            struct proto_msg m;
            int left = (int)((until - mono_s()) * 1000.0);
            int got = left > 0 ? recv_within(&conn, left, &m) : 0;
            if (got <= 0) {
                code = got < 0 ? -got : unreachable(&conn);
                break;
            }
            const char *ecode = code_of(&m);
            bool stale = strcmp(m.cmd, PROTO_OK) == 0 ? !json_object_get(m.body, "size")
                                                      : ecode && strcmp(ecode, "bad_offset") == 0;
            if (!stale) code = strcmp(m.cmd, PROTO_OK) == 0 ? EXIT_OK : print_error(&m);
            proto_msg_clear(&m);
            waiting = stale;
        }
    }
    out->seconds = mono_s() - t0;
    cli_broker_close(&conn);
    close(fd);
    return code;
}

/* ---- fetch ------------------------------------------------------------------------- */

struct inflight {
    int64_t index;
    double sent;
};

/* Does not wait: a FETCH sent again may go later, the first ones wait
 * for ready_to_send. */
static int send_fetch(struct cli_broker *conn, const char *sha, int64_t index)
{
    char text[192];
    snprintf(text, sizeof text, "{\"sha256\":\"%s\",\"index\":%lld,\"sum\":\"%s\"}", sha,
             (long long)index, CHUNK_SUM_NAME);
    return proto_send_text(conn->sock, NULL, 0, PROTO_FETCH, text, NULL, 0, ZMQ_DONTWAIT);
}

int dataset_fetch_file(const char *endpoint, const char *sha, const char *output, int64_t *size)
{
    struct cli_broker conn;
    int code = cli_broker_open(&conn, endpoint);
    if (code != EXIT_OK) return code;
    struct atomic_file af = {.fd = -1};
    struct inflight fl[DATASET_WINDOW];
    int n_fl = 0, bad = 0;
    int64_t n_chunks = -1, next = 0, done = 0;
    unsigned char *got = NULL;
    double progress = mono_s();
    char err[8400];
    struct sha256_follower *whole = NULL; /* the whole file's hash, behind the writes */
    int64_t in_order = 0;                 /* chunks written from the start without a gap */
    *size = -1;
    for (;;) {
        /* The first chunk alone: its answer says how many there are. */
        while (n_fl < DATASET_WINDOW && next < (n_chunks < 0 ? 1 : n_chunks)) {
            while (next < n_chunks && got[next])
                next++;
            if (next >= (n_chunks < 0 ? 1 : n_chunks)) break;
            if ((code = ready_to_send(&conn)) != EXIT_OK) goto out;
            if (send_fetch(&conn, sha, next) != 0) {
                code = unreachable(&conn);
                goto out;
            }
            fl[n_fl++] = (struct inflight){next++, mono_s()};
        }
        if (n_chunks >= 0 && done == n_chunks) break;
        struct proto_msg m;
        int r = recv_within(&conn, 1000, &m);
        if (r < 0) {
            code = -r;
            goto out;
        }
        double now = mono_s();
        if (r == 0) {
            if (now - progress > cli_request_timeout_ms() / 1000.0 + 2 * FETCH_RESEND_S) {
                code = unreachable(&conn);
                goto out;
            }
            for (int i = 0; i < n_fl; i++)
                if (now - fl[i].sent > FETCH_RESEND_S) {
                    send_fetch(&conn, sha, fl[i].index);
                    fl[i].sent = now;
                }
            continue;
        }
        if (strcmp(m.cmd, PROTO_CHUNK) != 0) {
            code = strcmp(m.cmd, PROTO_ERROR) == 0 ? print_error(&m) : EXIT_FAILURE_GENERIC;
            if (strcmp(m.cmd, PROTO_ERROR) != 0)
                fprintf(stderr, "mlq: unexpected %s from the broker\n", m.cmd);
            proto_msg_clear(&m);
            goto out;
        }
        json_t *b = m.body;
        int64_t idx = json_integer_value(json_object_get(b, "index"));
        int64_t sz = json_integer_value(json_object_get(b, "size"));
        int64_t nc = json_integer_value(json_object_get(b, "chunks"));
        if (n_chunks < 0) {
            if (sz < 1 || nc != (sz + CHUNK - 1) / CHUNK || !(got = calloc((size_t)nc, 1)) ||
                atomic_file_begin(&af, output, 0644, err, sizeof err) != 0 ||
                sha256_follow(&whole, af.fd) != 0) {
                fprintf(stderr, "mlq: %s\n",
                        !got        ? "bad CHUNK answer from the broker"
                        : af.fd < 0 ? err
                                    : "cannot start hashing: out of memory");
                proto_msg_clear(&m);
                code = EXIT_FAILURE_GENERIC;
                goto out;
            }
            n_chunks = nc;
            *size = sz;
        }
        int slot = -1;
        for (int i = 0; i < n_fl; i++)
            if (fl[i].index == idx) slot = i;
        size_t want = idx >= 0 && idx < n_chunks
                          ? (size_t)(sz - idx * CHUNK < CHUNK ? sz - idx * CHUNK : CHUNK)
                          : 0;
        if (slot < 0 || got[idx]) {
            /* A late answer to a FETCH sent again: already written. */
        } else if (!m.bin || m.bin_len != want || !chunk_matches(b, m.bin, want)) {
            if (++bad > BAD_CHUNKS_MAX) {
                fprintf(stderr, "mlq: chunks of %.12s keep failing their hash\n", sha);
                proto_msg_clear(&m);
                code = EXIT_FAILURE_GENERIC;
                goto out;
            }
            send_fetch(&conn, sha, idx); /* corrupt in transit: again */
            fl[slot].sent = now;
        } else {
            size_t off = 0;
            while (off < want) {
                ssize_t w = pwrite(af.fd, (char *)m.bin + off, want - off,
                                   (off_t)(idx * CHUNK) + (off_t)off);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) {
                    fprintf(stderr, "mlq: %s: %s\n", output, strerror(w < 0 ? errno : EIO));
                    proto_msg_clear(&m);
                    code = EXIT_FAILURE_GENERIC;
                    goto out;
                }
                off += (size_t)w;
            }
            got[idx] = 1;
            done++;
            progress = now;
            fl[slot] = fl[--n_fl];
            while (in_order < n_chunks && got[in_order])
                in_order++;
            sha256_follow_to(whole, in_order == n_chunks ? sz : in_order * CHUNK);
        }
        proto_msg_clear(&m);
    }
    char hex[SHA256_HEX_LEN + 1];
    unsigned char digest[SHA256_BYTES];
    int rc = sha256_follow_final(whole, *size, digest);
    whole = NULL;
    if (rc != 0) {
        fprintf(stderr, "mlq: cannot hash what was fetched: %s\n", strerror(-rc));
        code = EXIT_FAILURE_GENERIC;
        goto out;
    }
    sha256_hex(digest, hex);
    if (strcmp(hex, sha) != 0) {
        fprintf(stderr, "mlq: the bytes fetched hash to %s, not %s: %s not written\n", hex, sha,
                output);
        code = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (atomic_file_commit(&af, err, sizeof err) != 0) {
        fprintf(stderr, "mlq: %s\n", err);
        code = EXIT_FAILURE_GENERIC;
        goto out;
    }
    code = EXIT_OK;
out:
    sha256_follow_stop(whole);
    if (code != EXIT_OK) atomic_file_abort(&af);
    free(got);
    cli_broker_close(&conn);
    return code;
}
