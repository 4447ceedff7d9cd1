#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "blas.h"
#include "evaluate.h"
#include "generate.h"
#include "job_memory.h"
#include "log.h"
#include "notify.h"
#include "proto.h"
#include "serve.h"
#include "spec.h"
#include "train.h"

#define BACKOFF_MAX_S 8.0
#define HISTORY_MAX 100000 /* METRICS messages kept for a resend */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    (void)sig;
    stop_signal = 1;
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What both threads see. */
struct shared {
    atomic_int stop_job;   /* cancel, drop or shutdown: train_run's should_stop */
    atomic_int interrupt;  /* shutdown: report "interrupted", not "cancelled" */
    atomic_ulong progress; /* bumped by the worker between batches */
    int threads;
    const char *data_root;
    const char *data_roots;  /* more roots, ':'-separated, or NULL */
    const char *outputs_dir; /* where predict outputs go, or NULL: anywhere */
    void *zctx;
    char pair_addr[64];
};

/* ---- the worker thread ---------------------------------------------------------- */

struct job_ctx {
    struct shared *sh;
    void *pair;
    int64_t job;
    int64_t last_epoch;
    double last_metric; /* what "best" ranks of last_epoch (epoch_metrics.ckpt_metric) */
};

static void put_num(json_t *o, const char *key, double v)
{
    if (isfinite(v)) json_object_set_new(o, key, json_real(v));
}

static int job_on_epoch(void *ctx, const struct epoch_metrics *m)
{
    struct job_ctx *jc = ctx;
    atomic_fetch_add(&jc->sh->progress, 1);
    json_t *v = json_object();
    put_num(v, "train_loss", m->train_loss);
    put_num(v, "train_accuracy", m->train_accuracy);
    if (m->has_validation) {
        put_num(v, "val_loss", m->val_loss);
        put_num(v, "val_accuracy", m->val_accuracy);
    }
    if (m->language_model) {
        put_num(v, "train_perplexity", exp(m->train_loss));
        put_num(v, "train_bits_per_byte", m->train_loss / M_LN2);
        if (m->has_validation) {
            put_num(v, "val_perplexity", exp(m->val_loss));
            put_num(v, "val_bits_per_byte", m->val_loss / M_LN2);
        }
    }
    put_num(v, "lr", m->lr);
    put_num(v, "samples_per_s", m->samples_per_s);
    jc->last_epoch = m->epoch;
    jc->last_metric = m->ckpt_metric;
    json_t *body = json_pack("{s:I, s:I, s:I, s:o}", "job", (json_int_t)jc->job, "epoch",
                             (json_int_t)m->epoch, "step", (json_int_t)m->step, "values", v);
    int rc = proto_send(jc->pair, NULL, 0, PROTO_METRICS, body, NULL, 0, 0);
    json_decref(body);
    return rc ? 0 : 0; /* a lost progress line is not worth stopping the run */
}

static int job_on_checkpoint(void *ctx, int64_t epoch, int64_t step, const void *blob, size_t len)
{
    struct job_ctx *jc = ctx;
    atomic_fetch_add(&jc->sh->progress, 1);
    json_t *body = json_pack("{s:I, s:I, s:I}", "job", (json_int_t)jc->job, "epoch",
                             (json_int_t)epoch, "step", (json_int_t)step);
    if (epoch == jc->last_epoch && isfinite(jc->last_metric))
        json_object_set_new(body, "metric", json_real(jc->last_metric));
    proto_send(jc->pair, NULL, 0, PROTO_CHECKPOINT, body, blob, len, 0);
    json_decref(body);
    return 0;
}

static int job_should_stop(void *ctx)
{
    struct job_ctx *jc = ctx;
    atomic_fetch_add(&jc->sh->progress, 1);
    return atomic_load(&jc->sh->stop_job);
}

/* Relative paths in a spec name files under this trainer's data.root: the
 * submitter's directory means nothing on another host. */
static int under_root(char *path, size_t len, const char *root)
{
    if (!path[0] || path[0] == '/' || !root || !root[0] || strcmp(root, ".") == 0) return 0;
    char joined[SPEC_PATH_MAX];
    if (snprintf(joined, sizeof joined, "%s/%s", root, path) >= (int)sizeof joined ||
        strlen(joined) >= len)
        return -ENAMETOOLONG;
    memcpy(path, joined, strlen(joined) + 1);
    return 0;
}

/* Whether files are confined: a data.root other than a person's default
 * ".", or more roots configured. */
static bool confined_inputs(const struct shared *sh)
{
    return (sh->data_root && sh->data_root[0] && strcmp(sh->data_root, ".") != 0) ||
           (sh->data_roots && sh->data_roots[0]);
}

/* realpath(dir) is real, or dir is under it: the whole of real, then '/'. */
static bool path_under(const char *path, const char *root)
{
    char real[PATH_MAX];
    if (!realpath(root, real)) return false;
    size_t n = strlen(real);
    if (n == 1) return true; /* "/" */
    return strncmp(path, real, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* A dataset file must resolve (symbolic links and ".." followed) under one of
 * the trainer's roots; path becomes the resolved one, so that the reader
 * opens what was checked. The message is the same whether the file is
 * outside or missing, so that a job learns nothing about other files. */
static int confine_input(char *path, size_t len, const struct shared *sh, char *err, size_t errlen)
{
    if (!confined_inputs(sh) || !path[0]) return 0;
    char real[PATH_MAX];
    bool ok = realpath(path, real) != NULL && strlen(real) < len;
    if (ok) {
        ok = sh->data_root && path_under(real, sh->data_root);
        const char *r = sh->data_roots;
        while (!ok && r && *r) {
            size_t n = strcspn(r, ":");
            char one[PATH_MAX];
            snprintf(one, sizeof one, "%.*s", (int)n, r);
            ok = one[0] && path_under(real, one);
            r += n + (r[n] == ':');
        }
    }
    if (!ok) {
        snprintf(err, errlen,
                 "%s: no such dataset under this trainer's data roots (%s%s%s); give a path "
                 "under one of them",
                 path, sh->data_root, sh->data_roots && sh->data_roots[0] ? ":" : "",
                 sh->data_roots ? sh->data_roots : "");
        return -EACCES;
    }
    memcpy(path, real, strlen(real) + 1);
    return 0;
}

/* A predict output goes under outputs_dir (a relative path is relative to
 * it), as a new file: never over an existing one, never through a symbolic
 * link. */
static int confine_output(struct mlq_spec *spec, const struct shared *sh, char *err, size_t errlen)
{
    if (!sh->outputs_dir || !sh->outputs_dir[0]) return 0;
    char *path = spec->output_path;
    char joined[PATH_MAX];
    if (path[0] == '/')
        snprintf(joined, sizeof joined, "%s", path);
    else
        snprintf(joined, sizeof joined, "%s/%s", sh->outputs_dir, path);
    char *slash = strrchr(joined, '/');
    const char *base = slash + 1;
    *slash = '\0';
    char real[PATH_MAX];
    bool ok = base[0] && strcmp(base, ".") != 0 && strcmp(base, "..") != 0 &&
              realpath(joined[0] ? joined : "/", real) && path_under(real, sh->outputs_dir) &&
              strlen(real) + 1 + strlen(base) < sizeof spec->output_path;
    if (!ok) {
        snprintf(err, errlen,
                 "output %s: not a new file in this trainer's outputs directory %s; give a "
                 "name under it",
                 path, sh->outputs_dir);
        return -EACCES;
    }
    char full[PATH_MAX + 256];
    snprintf(full, sizeof full, "%s/%s", real, base);
    memcpy(path, full, strlen(full) + 1);
    spec->output_new_only = true;
    return 0;
}

static json_t *run_job(struct shared *sh, void *pair, struct proto_msg *m)
{
    int64_t job = json_integer_value(json_object_get(m->body, "job"));
    json_t *done = json_pack("{s:I}", "job", (json_int_t)job);
    struct mlq_spec spec;
    char err[1024] = "";
    const char *state = "succeeded";
    json_t *result = NULL;
    json_t *doc = json_object_get(m->body, "spec");
    if (!json_is_object(doc) || spec_from_json(doc, &spec, err, sizeof err) != 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "bad spec: %s", err[0] ? err : "missing");
        json_object_set_new(done, "state", json_string("failed"));
        json_object_set_new(done, "error", json_string(msg));
        log_warn("job %lld refused: %s", (long long)job, msg);
        return done;
    }
    bool own_outputs = sh->outputs_dir && sh->outputs_dir[0];
    if (under_root(spec.dataset.path, sizeof spec.dataset.path, sh->data_root) ||
        (spec.has_validation &&
         under_root(spec.validation.path, sizeof spec.validation.path, sh->data_root)) ||
        (spec.kind == JOB_PREDICT && !spec_generates(&spec) && !own_outputs &&
         under_root(spec.output_path, sizeof spec.output_path, sh->data_root))) {
        json_object_set_new(done, "state", json_string("failed"));
        json_object_set_new(done, "error", json_string("a dataset path is too long"));
        return done;
    }
    if (confine_input(spec.dataset.path, sizeof spec.dataset.path, sh, err, sizeof err) ||
        (spec.has_validation &&
         confine_input(spec.validation.path, sizeof spec.validation.path, sh, err, sizeof err)) ||
        (spec.kind == JOB_PREDICT && !spec_generates(&spec) &&
         confine_output(&spec, sh, err, sizeof err))) {
        json_object_set_new(done, "state", json_string("failed"));
        json_object_set_new(done, "error", json_string(err));
        log_warn("job %lld refused: %s", (long long)job, err);
        return done;
    }
    blas_set_threads(spec.threads > 0 ? spec.threads : sh->threads);
    int rc;
    log_info("job %lld: %s%s", (long long)job, spec_kind_name(spec.kind),
             m->bin && spec.kind == JOB_TRAIN ? ", resuming from a checkpoint" : "");
    if (spec.kind == JOB_TRAIN) {
        struct job_ctx jc = {.sh = sh, .pair = pair, .job = job, .last_metric = NAN};
        struct train_callbacks cb = {.ctx = &jc,
                                     .on_epoch = job_on_epoch,
                                     .on_checkpoint = job_on_checkpoint,
                                     .should_stop = job_should_stop};
        struct train_result res = {0};
        rc = train_run(&spec, m->bin, m->bin_len, &cb, &res, err, sizeof err);
        if (!rc && res.cancelled)
            state = atomic_load(&sh->interrupt) ? "interrupted" : "cancelled";
        else if (!rc) {
            result = json_object();
            json_object_set_new(result, "epochs", json_integer(res.epochs_done));
            put_num(result, "train_loss", res.final_train_loss);
            put_num(result, "val_loss", res.final_val_loss);
            put_num(result, "val_accuracy", res.final_val_accuracy);
            train_result_stop_json(&spec, &res, result);
        }
    } else if (!m->bin) {
        rc = -EINVAL;
        snprintf(err, sizeof err, "no checkpoint came with the %s job", spec_kind_name(spec.kind));
    } else if (spec.kind == JOB_EVAL) {
        rc = eval_run(&spec, m->bin, m->bin_len, &result, err, sizeof err);
    } else if (spec_generates(&spec)) {
        rc = generate_run(&spec, m->bin, m->bin_len, &result, err, sizeof err);
    } else {
        rc = predict_run(&spec, m->bin, m->bin_len, &result, err, sizeof err);
    }
    if (rc) {
        state = atomic_load(&sh->interrupt) ? "interrupted" : "failed";
        json_object_set_new(done, "error", json_string(err));
        json_decref(result);
        result = NULL;
    }
    json_object_set_new(done, "state", json_string(state));
    if (result) json_object_set_new(done, "result", result);
    log_info("job %lld %s%s%s", (long long)job, state, rc ? ": " : "", rc ? err : "");
    return done;
}

static void *worker_thread(void *arg)
{
    struct shared *sh = arg;
    void *pair = zmq_socket(sh->zctx, ZMQ_PAIR);
    if (!pair || zmq_connect(pair, sh->pair_addr) != 0) {
        log_errno(errno, "worker: cannot connect %s", sh->pair_addr);
        if (pair) zmq_close(pair);
        return NULL;
    }
    bool have_next = false;
    struct proto_msg next;
    for (;;) {
        struct proto_msg m;
        char err[256];
        int rc = 0;
        if (have_next) {
            m = next;
            have_next = false;
        } else {
            rc = proto_recv(pair, false, &m, 0, err, sizeof err);
        }
        if (rc == -EINTR) continue;
        if (rc) {
            log_error("worker: %s", rc == -EPROTO ? err : zmq_strerror(-rc));
            break;
        }
        if (strcmp(m.cmd, PROTO_SERVE) == 0) {
            /* A replica until UNSERVE, or until a JOB (or the quit) comes. */
            rc = serve_run(pair, &m, &next);
            proto_msg_clear(&m);
            if (rc < 0) break;
            have_next = rc == 1;
            continue;
        }
        if (strcmp(m.cmd, PROTO_UNSERVE) == 0 || strcmp(m.cmd, PROTO_INFER) == 0 ||
            strcmp(m.cmd, PROTO_INFER_BIN) == 0) {
            /* Serving ended before these came: an INFER is answered so that
             * the broker need not wait for its deadline. */
            if (strcmp(m.cmd, PROTO_UNSERVE) != 0)
                serve_refuse(pair, &m, "this trainer serves no deployment");
            proto_msg_clear(&m);
            continue;
        }
        if (strcmp(m.cmd, PROTO_JOB) != 0) { /* DROP {"job": 0}: quit */
            proto_msg_clear(&m);
            break;
        }
        json_t *done = run_job(sh, pair, &m);
        proto_send(pair, NULL, 0, PROTO_DONE, done, NULL, 0, 0);
        json_decref(done);
        proto_msg_clear(&m);
    }
    zmq_close(pair);
    return NULL;
}

/* ---- the I/O thread -------------------------------------------------------------- */

struct held {
    char cmd[PROTO_CMD_MAX];
    json_t *body;
    void *bin;
    size_t bin_len;
};

struct io {
    const struct worker_opts *opts;
    struct shared *sh;
    void *dealer;
    void *pair;
    char name[256];
    char host[256];
    char instance[72];   /* this process, so the broker can tell a reconnect from a namesake */
    double last_refused; /* when the last "name in use" was logged */
    struct log_limit drop_log; /* malformed messages from the broker's endpoint */
    double interval, expiry;
    double last_heard, last_sent, backoff;
    bool welcomed;

    int64_t job;       /* the job the worker runs or ran (until ACK) */
    bool worker_busy;  /* the worker thread has a job */
    bool dropped;      /* the broker told us to drop job: forward nothing more */
    struct held *hist; /* METRICS of job, for a resend */
    size_t n_hist, cap_hist;
    struct held ckpt;         /* latest CHECKPOINT of job */
    struct held done;         /* DONE of job, until ACK */
    struct proto_msg pending; /* a JOB that came while the worker was busy */
    bool has_pending;

    /* The deployment the worker serves (docs/serving.md), announced in HELLO
     * so that a restarted broker finds its replicas; "" if none. */
    char serving[64];
    int64_t serving_gen;
};

static void held_clear(struct held *h)
{
    json_decref(h->body);
    free(h->bin);
    memset(h, 0, sizeof *h);
}

static void forget_job(struct io *io)
{
    for (size_t i = 0; i < io->n_hist; i++)
        held_clear(&io->hist[i]);
    io->n_hist = 0;
    held_clear(&io->ckpt);
    held_clear(&io->done);
    io->job = 0;
    io->dropped = false;
}

static void send_broker(struct io *io, const char *cmd, const json_t *body, const void *bin,
                        size_t len)
{
    int rc = proto_send(io->dealer, NULL, 0, cmd, body, bin, len, ZMQ_DONTWAIT);
    if (rc) log_debug("send %s: %s", cmd, zmq_strerror(-rc));
    /* Also when the send queue is full: the next heartbeat waits an interval
       instead of being tried on every pass of the loop (a spin until the
       liveness window ends). What matters is held and sent again. */
    io->last_sent = mono();
}

static void send_hello(struct io *io)
{
    json_t *caps = json_pack("{s:[ssss], s:i, s:s, s:b}", "kinds", "train", "eval", "predict",
                             "serve", "threads", io->sh->threads > 0 ? io->sh->threads : 1, "blas",
                             blas_kernel(), "infer_bin", 1);
    json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", io->name, "host", io->host,
                          "instance", io->instance, "version", MLQ_VERSION, "capabilities", caps);
    if (io->job && !io->dropped) json_object_set_new(b, "job", json_integer(io->job));
    if (io->serving[0])
        json_object_set_new(b, "serving",
                            json_pack("{s:s, s:I}", "deployment", io->serving, "generation",
                                      (json_int_t)io->serving_gen));
    send_broker(io, PROTO_HELLO, b, NULL, 0);
    json_decref(b);
    io->welcomed = false;
}

static int open_dealer(struct io *io)
{
    io->dealer = zmq_socket(io->sh->zctx, ZMQ_DEALER);
    if (!io->dealer) return -errno;
    int rc = proto_socket_setup(io->dealer, 0);
    const struct keys_client *k = io->opts->keys;
    char err[256];
    if (!rc && k && k->curve &&
        (rc = keys_client_setup(io->dealer, &k->own, k->broker_z85, err, sizeof err)) != 0)
        log_error("%s", err);
    if (!rc && zmq_connect(io->dealer, io->opts->endpoint) != 0) rc = -errno;
    if (rc) {
        zmq_close(io->dealer);
        io->dealer = NULL;
        return rc;
    }
    io->last_heard = mono();
    send_hello(io);
    return 0;
}

static void resend_job_state(struct io *io)
{
    for (size_t i = 0; i < io->n_hist; i++)
        send_broker(io, io->hist[i].cmd, io->hist[i].body, NULL, 0);
    if (io->ckpt.body) send_broker(io, io->ckpt.cmd, io->ckpt.body, io->ckpt.bin, io->ckpt.bin_len);
    if (io->done.body) send_broker(io, io->done.cmd, io->done.body, NULL, 0);
}

static void start_job(struct io *io, struct proto_msg *m)
{
    int64_t job = json_integer_value(json_object_get(m->body, "job"));
    forget_job(io);
    io->serving[0] = '\0'; /* a JOB ends serving (the worker leaves its loop) */
    io->job = job;
    io->worker_busy = true;
    atomic_store(&io->sh->stop_job, 0);
    notify_status("running job %lld", (long long)job);
    proto_send(io->pair, NULL, 0, PROTO_JOB, m->body, m->bin, m->bin_len, 0);
}

static void on_broker_message(struct io *io, struct proto_msg *m)
{
    io->last_heard = mono();
    io->backoff = io->interval;
    int64_t job = json_integer_value(json_object_get(m->body, "job"));
    if (strcmp(m->cmd, PROTO_WELCOME) == 0) {
        /* HELLO repeats until welcomed, so several WELCOMEs may come: only the
         * first resends the job's state, or the resends multiply. */
        bool first = !io->welcomed;
        io->welcomed = true;
        int64_t adopt = json_integer_value(json_object_get(m->body, "adopt"));
        if (first && io->job && adopt == io->job) resend_job_state(io);
    } else if (strcmp(m->cmd, PROTO_WHO) == 0) {
        send_hello(io);
    } else if (strcmp(m->cmd, PROTO_INFER_BIN) == 0) {
        /* Serving runs in the worker thread, between jobs; the worker
         * checks the header. */
        proto_send_bin(io->pair, NULL, 0, m->cmd, m->hdr, m->hdr_len, m->bin, m->bin_len, 0);
    } else if (strcmp(m->cmd, PROTO_INFER) == 0 || strcmp(m->cmd, PROTO_SERVE) == 0 ||
               strcmp(m->cmd, PROTO_UNSERVE) == 0) {
        if (strcmp(m->cmd, PROTO_UNSERVE) == 0) io->serving[0] = '\0';
        proto_send(io->pair, NULL, 0, m->cmd, m->body, m->bin, m->bin_len, 0);
    } else if (strcmp(m->cmd, PROTO_JOB) == 0) {
        if (job <= 0) {
            log_limited(&io->drop_log, LOG_LVL_WARN, "JOB without a job id: dropped");
        } else if (job == io->job && !io->dropped) {
            log_debug("job %lld sent twice: ignored", (long long)job);
        } else if (io->worker_busy) {
            proto_msg_clear(&io->pending);
            io->pending = *m;
            memset(m, 0, sizeof *m); /* moved */
            io->has_pending = true;
        } else {
            start_job(io, m);
        }
    } else if (strcmp(m->cmd, PROTO_CANCEL) == 0) {
        if (job && job == io->job && io->worker_busy) {
            log_info("job %lld: cancel requested", (long long)job);
            atomic_store(&io->sh->stop_job, 1);
        }
    } else if (strcmp(m->cmd, PROTO_DROP) == 0) {
        if (job && job == io->job) {
            const char *why = json_string_value(json_object_get(m->body, "reason"));
            log_warn("job %lld dropped: %s", (long long)job, why ? why : "told by the broker");
            if (io->worker_busy) {
                atomic_store(&io->sh->stop_job, 1);
                io->dropped = true;
            } else {
                forget_job(io);
            }
        }
    } else if (strcmp(m->cmd, PROTO_ERROR) == 0) {
        /* e.g. our name is taken by a live trainer: HELLO repeats until the
         * broker takes us, so say why now and then, not on every try. */
        const char *why = json_string_value(json_object_get(m->body, "error"));
        if (mono() - io->last_refused >= 10) {
            log_warn("the broker refused us: %s", why ? why : "no reason given");
            io->last_refused = mono();
        }
    } else if (strcmp(m->cmd, PROTO_ACK) == 0) {
        if (job && job == io->job && io->done.body) forget_job(io);
    }
}

static void keep(struct held *h, const struct proto_msg *m)
{
    held_clear(h);
    snprintf(h->cmd, sizeof h->cmd, "%s", m->cmd);
    h->body = json_incref(m->body);
    h->bin = m->bin;
    h->bin_len = m->bin_len;
}

static void on_worker_message(struct io *io, struct proto_msg *m)
{
    atomic_fetch_add(&io->sh->progress, 1);
    if (strcmp(m->cmd, PROTO_INFERRED_BIN) == 0) {
        if (io->dealer) {
            int rc = proto_send_bin(io->dealer, NULL, 0, m->cmd, m->hdr, m->hdr_len, m->bin,
                                    m->bin_len, ZMQ_DONTWAIT);
            if (rc) log_debug("send %s: %s", m->cmd, zmq_strerror(-rc));
            io->last_sent = mono();
        }
        return;
    }
    if (strcmp(m->cmd, PROTO_INFERRED) == 0 || strcmp(m->cmd, PROTO_SERVING) == 0) {
        if (strcmp(m->cmd, PROTO_SERVING) == 0 && json_is_true(json_object_get(m->body, "ok"))) {
            const char *name = json_string_value(json_object_get(m->body, "deployment"));
            snprintf(io->serving, sizeof io->serving, "%s", name ? name : "");
            io->serving_gen = json_integer_value(json_object_get(m->body, "generation"));
        }
        if (io->dealer) send_broker(io, m->cmd, m->body, m->bin, m->bin_len);
        return;
    }
    if (strcmp(m->cmd, PROTO_DONE) == 0) {
        io->worker_busy = false;
        if (io->dropped) {
            forget_job(io);
        } else {
            keep(&io->done, m);
            m->bin = NULL;
            if (io->welcomed) send_broker(io, m->cmd, m->body, NULL, 0);
        }
        if (io->has_pending) {
            io->has_pending = false;
            start_job(io, &io->pending);
            proto_msg_clear(&io->pending);
        }
        return;
    }
    if (io->dropped) return;
    if (strcmp(m->cmd, PROTO_CHECKPOINT) == 0) {
        keep(&io->ckpt, m);
        if (io->welcomed) send_broker(io, m->cmd, m->body, m->bin, m->bin_len);
        m->bin = NULL; /* now owned by io->ckpt */
    } else if (strcmp(m->cmd, PROTO_METRICS) == 0) {
        if (io->n_hist == io->cap_hist && io->n_hist < HISTORY_MAX) {
            size_t cap = io->cap_hist ? 2 * io->cap_hist : 64;
            struct held *h = realloc(io->hist, cap * sizeof *h);
            if (h) {
                io->hist = h;
                io->cap_hist = cap;
            }
        }
        if (io->n_hist < io->cap_hist) {
            memset(&io->hist[io->n_hist], 0, sizeof io->hist[0]);
            keep(&io->hist[io->n_hist++], m);
        }
        if (io->welcomed) send_broker(io, m->cmd, m->body, NULL, 0);
    }
}

static void default_name(char *buf, size_t len, const char *host)
{
    snprintf(buf, len, "%.200s-%ld", host, (long)getpid());
}

/* Shutdown with a job running: stop it and tell the broker to requeue it. */
static void interrupt_job(struct io *io)
{
    if (!io->worker_busy) return;
    atomic_store(&io->sh->interrupt, 1);
    atomic_store(&io->sh->stop_job, 1);
    double until = mono() + 5.0;
    while (io->worker_busy && mono() < until) {
        struct proto_msg m;
        char err[128];
        zmq_pollitem_t it = {.socket = io->pair, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        if (proto_recv(io->pair, false, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
            on_worker_message(io, &m);
            proto_msg_clear(&m);
        }
    }
    /* Give the DONE a moment to leave before the socket closes. */
    if (io->done.body && io->welcomed) {
        zmq_pollitem_t it = {.socket = io->dealer, .events = ZMQ_POLLIN};
        double t_end = mono() + 1.0;
        while (io->done.body && mono() < t_end && zmq_poll(&it, 1, 100) >= 0) {
            struct proto_msg m;
            char err[128];
            if (proto_recv(io->dealer, false, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
                on_broker_message(io, &m);
                proto_msg_clear(&m);
            }
        }
    }
}

static void feed_watchdog(struct io *io, unsigned long *seen, double *last_progress)
{
    unsigned long p = atomic_load(&io->sh->progress);
    double now = mono();
    if (p != *seen) {
        *seen = p;
        *last_progress = now;
    }
    double limit = (double)notify_watchdog_usec() / 1e6;
    /* A hung worker starves the watchdog and systemd restarts us. */
    if (!io->worker_busy || limit <= 0 || now - *last_progress < limit) notify_watchdog();
}

int worker_main(const struct worker_opts *opts)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    job_memory_set_limit(opts->memory_budget_mb); /* every job's, before it allocates */

    /* trainer.threads 0 means every core, as in standalone mode. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct shared sh = {.threads = opts->threads > 0 ? opts->threads
                                   : cores > 0       ? (int)cores
                                                     : 1,
                        .data_root = opts->data_root,
                        .data_roots = opts->data_roots,
                        .outputs_dir = opts->outputs_dir};
    struct io io = {.opts = opts, .sh = &sh};
    int exit_code = 1;
    pthread_t thread;
    bool thread_started = false;
    if (gethostname(io.host, sizeof io.host) != 0) snprintf(io.host, sizeof io.host, "localhost");
    io.host[sizeof io.host - 1] = '\0';
    struct timespec boot;
    clock_gettime(CLOCK_REALTIME, &boot);
    snprintf(io.instance, sizeof io.instance, "%.40s-%ld-%lx", io.host, (long)getpid(),
             (unsigned long)(boot.tv_sec ^ boot.tv_nsec));
    io.last_refused = -1e9;
    io.drop_log = (struct log_limit)LOG_LIMIT_INIT("malformed messages dropped", 10);
    if (opts->name && opts->name[0])
        snprintf(io.name, sizeof io.name, "%s", opts->name);
    else
        default_name(io.name, sizeof io.name, io.host);
    io.interval = (opts->heartbeat_ms > 0 ? opts->heartbeat_ms : 1000) / 1000.0;
    io.expiry = io.interval * (opts->liveness > 0 ? opts->liveness : 3);
    io.backoff = io.interval;

    sh.zctx = zmq_ctx_new();
    if (!sh.zctx) {
        log_errno(errno, "zmq_ctx_new");
        return 1;
    }
    snprintf(sh.pair_addr, sizeof sh.pair_addr, "inproc://mlq-worker-%p", (void *)&sh);
    io.pair = zmq_socket(sh.zctx, ZMQ_PAIR);
    if (!io.pair || zmq_bind(io.pair, sh.pair_addr) != 0) {
        log_errno(errno, "inproc pair");
        goto out;
    }
    int linger = 0;
    zmq_setsockopt(io.pair, ZMQ_LINGER, &linger, sizeof linger);
    if (pthread_create(&thread, NULL, worker_thread, &sh) != 0) {
        log_error("cannot start the worker thread");
        goto out;
    }
    thread_started = true;
    int rc = open_dealer(&io);
    if (rc) {
        log_error("cannot connect to %s: %s", opts->endpoint, zmq_strerror(-rc));
        goto out;
    }
    log_info("trainer %s: broker %s, heartbeat %.0f ms, OpenBLAS kernel %s, %d thread%s", io.name,
             opts->endpoint, io.interval * 1000, blas_kernel(), sh.threads,
             sh.threads > 1 ? "s" : "");
    if (opts->keys && opts->keys->curve)
        log_info("CURVE: key %s (%s), the broker's key pinned from %s", opts->keys->own.name,
                 opts->keys->own_path, opts->keys->broker_from);
    notify_ready();
    exit_code = 0;

    unsigned long seen_progress = 0;
    double last_progress = mono();
    double reconnect_at = 0;
    while (!stop_signal) {
        zmq_pollitem_t items[2] = {{.socket = io.pair, .events = ZMQ_POLLIN},
                                   {.socket = io.dealer, .events = ZMQ_POLLIN}};
        int nitems = io.dealer ? 2 : 1;
        double now = mono();
        double next = io.last_sent + io.interval;
        if (io.dealer && io.last_heard + io.expiry < next) next = io.last_heard + io.expiry;
        if (!io.dealer) next = reconnect_at;
        long timeout = next > now ? (long)((next - now) * 1000) + 1 : 0;
        if (timeout > 1000) timeout = 1000;
        int n = zmq_poll(items, nitems, timeout);
        if (n < 0 && errno != EINTR) {
            log_errno(errno, "zmq_poll");
            exit_code = 1;
            break;
        }
        for (int i = 0; n > 0 && i < 64; i++) {
            struct proto_msg m;
            char err[256];
            if (proto_recv(io.pair, false, &m, ZMQ_DONTWAIT, err, sizeof err) != 0) break;
            on_worker_message(&io, &m);
            proto_msg_clear(&m);
        }
        for (int i = 0; n > 0 && io.dealer && i < 64; i++) {
            struct proto_msg m;
            char err[256];
            rc = proto_recv(io.dealer, false, &m, ZMQ_DONTWAIT, err, sizeof err);
            if (rc == -EPROTO) {
                log_limited(&io.drop_log, LOG_LVL_WARN, "dropped a message from the broker: %s",
                            err);
                continue;
            }
            if (rc) break;
            on_broker_message(&io, &m);
            proto_msg_clear(&m);
        }
        log_limit_flush(&io.drop_log);
        now = mono();
        if (io.dealer && now - io.last_heard > io.expiry) {
            log_warn("broker silent for %.1f s: reconnecting in %.1f s", now - io.last_heard,
                     io.backoff);
            zmq_close(io.dealer);
            io.dealer = NULL;
            io.welcomed = false;
            reconnect_at = now + io.backoff;
            /* Capped at one liveness window so that a restarted broker hears
             * from us while it still keeps our job for us. */
            io.backoff = fmin(io.backoff * 2, fmin(BACKOFF_MAX_S, io.expiry));
        }
        if (!io.dealer && now >= reconnect_at) {
            rc = open_dealer(&io);
            if (rc) {
                log_error("cannot reconnect to %s: %s", opts->endpoint, zmq_strerror(-rc));
                reconnect_at = now + io.backoff;
            }
        }
        /* Until welcomed, HELLO is the heartbeat: a lost HELLO must not leave
         * us heartbeating to a broker that thinks we are someone else. */
        if (io.dealer && now - io.last_sent >= io.interval) {
            if (io.welcomed && io.done.body) {
                /* An unacknowledged DONE takes the heartbeat's place: one
                 * lost on the way would else leave the job running at the
                 * broker for ever. The broker acknowledges a repeat again. */
                send_broker(&io, io.done.cmd, io.done.body, NULL, 0);
            } else if (io.welcomed) {
                /* The job we hold, so that a JOB the broker sent and we never
                 * got is noticed and sent again. */
                json_t *hb =
                    json_pack("{s:I}", "job", (json_int_t)(io.job && !io.dropped ? io.job : 0));
                send_broker(&io, PROTO_HEARTBEAT, hb, NULL, 0);
                json_decref(hb);
            } else
                send_hello(&io);
        }
        feed_watchdog(&io, &seen_progress, &last_progress);
    }
    notify_stopping();
    if (io.dealer) interrupt_job(&io);
out:
    if (thread_started) {
        atomic_store(&sh.stop_job, 1);
        json_t *quit = json_pack("{s:i}", "job", 0);
        proto_send(io.pair, NULL, 0, PROTO_DROP, quit, NULL, 0, 0);
        json_decref(quit);
        pthread_join(thread, NULL);
    }
    forget_job(&io);
    free(io.hist);
    proto_msg_clear(&io.pending);
    if (io.dealer) zmq_close(io.dealer);
    if (io.pair) zmq_close(io.pair);
    zmq_ctx_term(sh.zctx);
    return exit_code;
}
