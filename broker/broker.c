#define _GNU_SOURCE /* vasprintf */
#include "broker_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "log.h"
#include "notify.h"

#define RECV_BATCH 4096            /* messages handled per pass before housekeeping */
#define DROP_LOG_PER_S 10          /* malformed-message warnings per second */
#define PEER_LOG_PER_S 10          /* lines per second about trainers connecting */
#define COMMIT_DELAY_S 0.001       /* longest an ACK waits for a pass with an urgent reply */
#define WAL_CHECKPOINT_PAGES 1000  /* checkpoint when nothing waits and the WAL is this big */
#define WAL_CHECKPOINT_FORCE 20000 /* or at once, however busy (~80 MB of WAL) */

double broker_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int broker_write(struct broker *b)
{
    if (store_in_transaction(b->store)) return 0;
    int rc = store_begin(b->store);
    if (rc) broker_store_failed(b, "begin");
    return rc;
}

void broker_store_failed(struct broker *b, const char *what)
{
    log_error("store: %s: %s", what, store_errmsg(b->store));
    if (!b->store_error) b->store_error = -EIO;
}

/* The next outbox slot, or NULL when out of memory. */
static struct outmsg *outbox_slot(struct broker *b, const unsigned char *ident, size_t ident_len,
                                  const char *cmd)
{
    if (b->n_out == b->cap_out) {
        size_t cap = b->cap_out ? 2 * b->cap_out : 64;
        struct outmsg *o = realloc(b->out, cap * sizeof *o);
        if (!o) {
            log_error("out of memory queueing %s", cmd);
            return NULL;
        }
        b->out = o;
        b->cap_out = cap;
    }
    struct outmsg *o = &b->out[b->n_out++];
    memcpy(o->ident, ident, ident_len);
    o->ident_len = ident_len;
    snprintf(o->cmd, sizeof o->cmd, "%s", cmd);
    o->body = NULL;
    o->text = NULL;
    o->bin = NULL;
    o->bin_len = 0;
    if (strcmp(cmd, PROTO_ACK) != 0 && strcmp(cmd, PROTO_HEARTBEAT) != 0) b->urgent = true;
    struct trainer *t = trainers_find(b, ident, ident_len);
    if (t) t->last_sent = broker_mono();
    return o;
}

void broker_reply(struct broker *b, const unsigned char *ident, size_t ident_len, const char *cmd,
                  json_t *body, void *bin, size_t bin_len)
{
    struct outmsg *o = outbox_slot(b, ident, ident_len, cmd);
    if (!o) {
        json_decref(body);
        free(bin);
        return;
    }
    o->body = body;
    o->bin = bin;
    o->bin_len = bin_len;
}

void broker_reply_textf(struct broker *b, const unsigned char *ident, size_t ident_len,
                        const char *cmd, void *bin, size_t bin_len, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    struct outmsg *o = n < 0 ? NULL : outbox_slot(b, ident, ident_len, cmd);
    if (!o) {
        if (n >= 0) free(text);
        free(bin);
        return;
    }
    o->text = text;
    o->bin = bin;
    o->bin_len = bin_len;
}

void broker_reply_error(struct broker *b, const struct proto_msg *m, const char *code,
                        const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    broker_reply(b, m->ident, m->ident_len, PROTO_ERROR,
                 json_pack("{s:s, s:s}", "error", text, "code", code), NULL, 0);
}

void broker_drop_log(struct broker *b, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_limited(&b->drop_log, LOG_LVL_WARN, "dropped a message: %s", text);
}

static void flush_outbox(struct broker *b)
{
    for (size_t i = 0; i < b->n_out; i++) {
        struct outmsg *o = &b->out[i];
        int rc = o->text ? proto_send_text(b->router, o->ident, o->ident_len, o->cmd, o->text,
                                           o->bin, o->bin_len, ZMQ_DONTWAIT)
                         : proto_send(b->router, o->ident, o->ident_len, o->cmd, o->body, o->bin,
                                      o->bin_len, ZMQ_DONTWAIT);
        if (rc && rc != -EHOSTUNREACH && rc != -EAGAIN)
            log_warn("send %s: %s", o->cmd, zmq_strerror(-rc));
        json_decref(o->body);
        free(o->text);
        free(o->bin);
    }
    b->n_out = 0;
}

static void discard_outbox(struct broker *b)
{
    for (size_t i = 0; i < b->n_out; i++) {
        json_decref(b->out[i].body);
        free(b->out[i].text);
        free(b->out[i].bin);
    }
    b->n_out = 0;
}

/* Who holds the database, for a second broker's refusal: rewritten once the
 * endpoint is bound (port 0 becomes the real port). */
static void lock_record(struct broker *b, const char *bind)
{
    char text[1200];
    int n = snprintf(text, sizeof text, "pid %ld\nbind %s\n", (long)getpid(), bind);
    if (n < 0 || (size_t)n >= sizeof text || ftruncate(b->lock_fd, 0) != 0 ||
        pwrite(b->lock_fd, text, (size_t)n, 0) != n)
        log_warn("cannot record the broker in %s.lock: %s", b->opts.db_path, strerror(errno));
}

/* One broker per database: a second one's start-up recovery would requeue
 * the first one's running jobs and dispatch them again, one job on two
 * trainers. An exclusive flock on DB.lock, taken before the store is opened
 * and held for the broker's life, keeps the second one out; the kernel
 * releases it however the holder ends (kill -9 too), so a restart never
 * finds a stale lock. The file stays: removing it would race a starting
 * broker. */
static int lock_database(struct broker *b, char *err, size_t errlen)
{
    char path[4200];
    if (snprintf(path, sizeof path, "%s.lock", b->opts.db_path) >= (int)sizeof path) {
        snprintf(err, errlen, "%s: path too long", b->opts.db_path);
        return -ENAMETOOLONG;
    }
    /* A first start in a fresh home (~/.local/share/mlq not there yet). */
    int rc = store_make_parent(b->opts.db_path);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the directory of %s: %s", b->opts.db_path,
                 strerror(-rc));
        return rc;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char text[1200] = "";
            ssize_t n = pread(fd, text, sizeof text - 1, 0);
            text[n > 0 ? n : 0] = '\0';
            long pid = 0;
            char bind[1024] = "";
            if (sscanf(text, "pid %ld\nbind %1023[^\n]", &pid, bind) >= 1 && pid > 0)
                snprintf(err, errlen,
                         "database %s is held by mlq-broker pid %ld (bind %s); one broker per "
                         "database: stop that one, or give this one another --db",
                         b->opts.db_path, pid, bind[0] ? bind : "unknown");
            else
                snprintf(err, errlen,
                         "database %s is held by another mlq-broker (it is starting); one "
                         "broker per database",
                         b->opts.db_path);
            e = EBUSY;
        } else {
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        return -e;
    }
    b->lock_fd = fd;
    lock_record(b, b->opts.bind);
    return 0;
}

int broker_open(struct broker **out, const struct broker_opts *opts, char *err, size_t errlen)
{
    *out = NULL;
    struct broker *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    b->opts = *opts;
    if (!b->opts.bind) b->opts.bind = BROKER_DEFAULT_BIND;
    if (b->opts.heartbeat_ms <= 0) b->opts.heartbeat_ms = BROKER_HEARTBEAT_MS;
    if (b->opts.liveness <= 0) b->opts.liveness = BROKER_LIVENESS;
    b->interval = b->opts.heartbeat_ms / 1000.0;
    b->expiry = b->interval * b->opts.liveness;
    b->lock_fd = -1;
    b->drop_log = (struct log_limit)LOG_LIMIT_INIT("malformed messages dropped", DROP_LOG_PER_S);
    b->peer_log = (struct log_limit)LOG_LIMIT_INIT("lines about trainers connecting not logged",
                                                   PEER_LOG_PER_S);

    int rc = lock_database(b, err, errlen);
    if (rc) goto fail;
    if ((rc = datasets_dir_resolve(opts->datasets_dir, opts->db_path, b->datasets_dir)) != 0) {
        snprintf(err, errlen, "broker.datasets_dir: path too long");
        goto fail;
    }
    if ((rc = datasets_prepare(b->datasets_dir, err, errlen)) != 0 ||
        (rc = datasets_open(b, err, errlen)) != 0)
        goto fail;
    rc = store_open(&b->store, opts->db_path,
                    STORE_CREATE | (opts->sync_normal ? STORE_SYNC_NORMAL : 0), err, errlen);
    if (rc) goto fail;
    if (opts->checkpoint_keep >= 0) store_set_retention(b->store, opts->checkpoint_keep);
    store_wal_manual(b->store); /* see wal_checkpoint */

    b->zctx = zmq_ctx_new();
    if (!b->zctx) {
        rc = -errno;
        snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    b->router = zmq_socket(b->zctx, ZMQ_ROUTER);
    if (!b->router || (rc = proto_socket_setup(b->router, 0)) != 0) {
        rc = rc ? rc : -errno;
        snprintf(err, errlen, "ROUTER socket: %s", zmq_strerror(-rc));
        goto fail;
    }
    int64_t max = b->opts.max_message;
    if (max > 0 && zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0) {
        rc = -errno;
        snprintf(err, errlen, "ZMQ_MAXMSGSIZE %lld: %s", (long long)max, zmq_strerror(errno));
        goto fail;
    }
    if ((rc = auth_open(b, err, errlen)) != 0) {
        rc = -EPERM; /* a configuration to fix, not a failure to retry */
        goto fail;
    }
    if (zmq_bind(b->router, b->opts.bind) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot bind %s: %s", b->opts.bind, zmq_strerror(errno));
        goto fail;
    }
    size_t len = sizeof b->endpoint;
    if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->endpoint, &len) != 0)
        snprintf(b->endpoint, sizeof b->endpoint, "%s", b->opts.bind);
    lock_record(b, b->endpoint);

    if ((rc = serve_open(b, err, errlen)) != 0) goto fail;
    if ((rc = dispatch_recover(b)) != 0) {
        snprintf(err, errlen, "%s: recovery: %s", opts->db_path, store_errmsg(b->store));
        goto fail;
    }
    *out = b;
    return 0;
fail:
    if (rc == -EBUSY && b->lock_fd >= 0) rc = -EIO; /* -EBUSY tells of the lock only */
    broker_close(&b);
    return rc;
}

void broker_close(struct broker **pb)
{
    if (!pb || !*pb) return;
    struct broker *b = *pb;
    discard_outbox(b);
    free(b->out);
    trainers_free(b);
    serve_close(b);
    datasets_close(b);
    free(b->orphans);
    auth_close(b);
    if (b->router) zmq_close(b->router);
    if (b->zctx) zmq_ctx_term(b->zctx);
    store_close(&b->store);
    if (b->lock_fd >= 0) close(b->lock_fd); /* last: the store is closed */
    free(b);
    *pb = NULL;
}

const char *broker_endpoint(const struct broker *b)
{
    return b->endpoint;
}

/* WAL checkpoints after the replies are out, when no message waits (or the
 * WAL grows past WAL_CHECKPOINT_FORCE): inside a commit, SQLite's automatic
 * one delayed every reply of that pass by two fsyncs and a page copy. */
static void wal_checkpoint(struct broker *b, bool idle)
{
    int pages = store_wal_pages(b->store);
    if (pages < (idle ? 1 : WAL_CHECKPOINT_PAGES) || store_in_transaction(b->store)) return;
    if (pages < WAL_CHECKPOINT_FORCE && !idle) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(b->router, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN))
            return;
    }
    if (store_wal_checkpoint(b->store) != 0)
        log_warn("store: checkpoint: %s", store_errmsg(b->store));
}

static void report_status(struct broker *b)
{
    if (!getenv("NOTIFY_SOCKET")) return; /* not under systemd: spare the count over every job */
    int64_t counts[STORE_N_STATES] = {0};
    if (store_job_count_by_state(b->store, counts) == 0)
        notify_status("%lld queued, %lld running, %zu trainers", (long long)counts[STORE_QUEUED],
                      (long long)counts[STORE_RUNNING], b->n_trainers);
}

int broker_run(struct broker *b, volatile sig_atomic_t *stop)
{
    log_info("listening on %s, database %s", b->endpoint, b->opts.db_path);
    notify_ready();
    report_status(b);
    double next_status = broker_mono() + 5.0;
    double deadline = broker_mono();
    while (!*stop && !b->store_error) {
        double now = broker_mono();
        double until = b->commit_by && b->commit_by < deadline ? b->commit_by : deadline;
        long timeout_ms = until > now ? (long)((until - now) * 1000.0) + 1 : 0;
        uint64_t wd = notify_watchdog_usec();
        if (wd && timeout_ms > (long)(wd / 2000)) timeout_ms = (long)(wd / 2000);
        zmq_pollitem_t items[2] = {{.socket = b->router, .events = ZMQ_POLLIN},
                                   {.socket = b->auth.zap, .events = ZMQ_POLLIN}};
        int n = zmq_poll(items, b->auth.zap ? 2 : 1, timeout_ms);
        if (n < 0 && errno != EINTR) {
            log_errno(errno, "zmq_poll");
            break;
        }
        if (*stop) break;
        if (n > 0 && b->auth.zap && (items[1].revents & ZMQ_POLLIN)) {
            auth_handle_zap(b);
            if (!(items[0].revents & ZMQ_POLLIN)) n = 0;
        }
        for (int i = 0; n > 0 && i < RECV_BATCH; i++) {
            struct proto_msg m;
            char err[256];
            int rc = proto_recv(b->router, true, &m, ZMQ_DONTWAIT, err, sizeof err);
            if (rc == -EAGAIN) break;
            if (rc == -EPROTO) {
                broker_drop_log(b, "%s", err);
                continue;
            }
            if (rc) {
                log_warn("recv: %s", zmq_strerror(-rc));
                break;
            }
            handlers_dispatch(b, &m);
            proto_msg_clear(&m);
            if (b->yield_pass) break;
        }
        b->yield_pass = false;
        now = broker_mono();
        deadline = now + b->interval;
        /* First: its removals wait for a pass that has written nothing yet. */
        double d = datasets_tick(b, now);
        if (d < deadline) deadline = d;
        auth_tick(b, now);
        d = trainers_tick(b, now);
        if (d < deadline) deadline = d;
        d = dispatch_tick(b, now);
        if (d < deadline) deadline = d;
        d = serve_tick(b, now);
        if (d < deadline) deadline = d;
        serve_flush(b); /* infer traffic waits for no commit */
        d = sweep_tick(b, now);
        if (d < deadline) deadline = d;
        if (!b->stopping) dispatch_run(b);
        if (store_in_transaction(b->store)) {
            now = broker_mono();
            if (!b->commit_by) b->commit_by = now + COMMIT_DELAY_S;
            if ((b->urgent || now >= b->commit_by) && store_commit(b->store) != 0)
                broker_store_failed(b, "commit");
        }
        if (b->store_error) {
            /* Nothing of this pass was committed: acknowledge none of it. */
            store_rollback(b->store);
            discard_outbox(b);
            break;
        }
        if (!store_in_transaction(b->store)) {
            /* Committed (or nothing written): every reply may go. */
            flush_outbox(b);
            b->urgent = false;
            b->commit_by = 0;
            wal_checkpoint(b, n == 0);
        }
        notify_watchdog();
        log_limit_flush(&b->drop_log);
        log_limit_flush(&b->peer_log);
        if (now >= next_status) {
            report_status(b);
            next_status = now + 5.0;
        }
    }
    notify_stopping();
    b->stopping = true;
    if (store_in_transaction(b->store) && store_commit(b->store) != 0)
        broker_store_failed(b, "commit");
    if (b->store_error) {
        /* The held pass was not committed: acknowledge none of it. */
        store_rollback(b->store);
        discard_outbox(b);
    } else {
        /* The last pass's OKs and ACKs are committed: give them a moment to
         * leave (linger 0 would discard them at close and a client would
         * think its acknowledged submission failed). */
        int linger = 1000;
        zmq_setsockopt(b->router, ZMQ_LINGER, &linger, sizeof linger);
        flush_outbox(b);
    }
    log_info("stopped%s", b->store_error ? " after a store failure" : "");
    return b->store_error;
}
