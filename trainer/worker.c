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
#include "dscache.h"
#include "evaluate.h"
#include "fetch.h"
#include "generate.h"
#include "job_memory.h"
#include "log.h"
#include "notify.h"
#include "proto.h"
#include "serve.h"
#include "sha256.h"
#include "spec.h"
#include "train.h"
#include "upload.h"

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

/* Whether the I/O thread put a cached file's path into the JOB's spec for
 * key ("dataset": the data or input, "validation"). */
static bool job_cached(const json_t *body, const char *key)
{
    const json_t *list = json_object_get(body, "cached");
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v) if (json_is_string(v) &&
                                       strcmp(json_string_value(v), key) == 0) return true;
    return false;
}

/* DATASET for a path dataset: the hash of the bytes the job trains on, so
 * that a run records which data it saw whichever way it was named. A file
 * that cannot be read is train_run's to report. */
static void send_path_dataset(void *pair, int64_t job, const char *path)
{
    char hex[SHA256_HEX_LEN + 1], err[512];
    long long size = 0;
    double t0 = mono();
    if (sha256_file(path, hex, &size, err, sizeof err) != 0) {
        log_debug("job %lld: %s", (long long)job, err);
        return;
    }
    log_info("job %lld: dataset %s is %s (%.0f ms to hash %lld MB)", (long long)job, path, hex,
             (mono() - t0) * 1000, size >> 20);
    json_t *b = json_pack("{s:I, s:s, s:I, s:i}", "job", (json_int_t)job, "sha256", hex, "size",
                          (json_int_t)size, "fetched_bytes", 0);
    proto_send(pair, NULL, 0, PROTO_DATASET, b, NULL, 0, 0);
    json_decref(b);
}

/* A predict output that goes to the broker: hashed here (the I/O thread
 * keeps heartbeats flowing meanwhile), named, and handed to the I/O thread
 * as the DONE's "upload", which it sends before the DONE (trainer/upload.h).
 * The result names the dataset, not this trainer's file. */
static int upload_request(int64_t job, const struct mlq_spec *spec, json_t *result, json_t *done,
                          char *err, size_t errlen)
{
    char name[SPEC_DATASET_NAME_MAX + 1], hex[SHA256_HEX_LEN + 1], why[600];
    long long size;
    if (spec->output_name[0])
        snprintf(name, sizeof name, "%s", spec->output_name);
    else
        snprintf(name, sizeof name, "predict-%lld", (long long)job);
    if (sha256_file(spec->output_path, hex, &size, why, sizeof why) != 0) {
        snprintf(err, errlen, "the output written: %s", why);
        return -EIO;
    }
    json_object_set_new(result, "output", json_string(name));
    json_object_set_new(result, "output_sha256", json_string(hex));
    json_object_set_new(result, "output_size", json_integer(size));
    json_object_set_new(done, "upload",
                        json_pack("{s:s, s:s, s:s, s:I}", "path", spec->output_path, "name", name,
                                  "sha256", hex, "size", (json_int_t)size));
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
    /* An output that goes to the broker is written where the I/O thread
     * said (the cache's outputs/), whatever the confinement. */
    bool push_output = spec.kind == JOB_PREDICT && spec.output_push;
    if (push_output) {
        const char *file = json_string_value(json_object_get(m->body, "output_file"));
        if (!file || strlen(file) >= sizeof spec.output_path) {
            const char *why = json_string_value(json_object_get(m->body, "output_error"));
            snprintf(err, sizeof err,
                     "output.push: this trainer has no place to write the output: %s",
                     why ? why : "its dataset cache path is too long");
            json_object_set_new(done, "state", json_string("failed"));
            json_object_set_new(done, "error", json_string(err));
            return done;
        }
        snprintf(spec.output_path, sizeof spec.output_path, "%s", file);
    }
    bool own_outputs = push_output || (sh->outputs_dir && sh->outputs_dir[0]);
    /* Pushed datasets come as files of this trainer's cache (the I/O thread
     * fetched and verified them): not under the data roots, and not the
     * spec's to choose. */
    bool cached_data = job_cached(m->body, "dataset"),
         cached_val = job_cached(m->body, "validation");
    if ((!cached_data && under_root(spec.dataset.path, sizeof spec.dataset.path, sh->data_root)) ||
        (spec.has_validation && !cached_val &&
         under_root(spec.validation.path, sizeof spec.validation.path, sh->data_root)) ||
        (spec.kind == JOB_PREDICT && !spec_generates(&spec) && !own_outputs &&
         under_root(spec.output_path, sizeof spec.output_path, sh->data_root))) {
        json_object_set_new(done, "state", json_string("failed"));
        json_object_set_new(done, "error", json_string("a dataset path is too long"));
        return done;
    }
    if ((!cached_data &&
         confine_input(spec.dataset.path, sizeof spec.dataset.path, sh, err, sizeof err)) ||
        (spec.has_validation && !cached_val &&
         confine_input(spec.validation.path, sizeof spec.validation.path, sh, err, sizeof err)) ||
        (spec.kind == JOB_PREDICT && !spec_generates(&spec) && !push_output &&
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
        if (!cached_data) send_path_dataset(pair, job, spec.dataset.path);
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
        if (!rc && push_output) rc = upload_request(job, &spec, result, done, err, sizeof err);
        if (rc && push_output) unlink(spec.output_path);
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
    bool ever_welcomed; /* a broker has answered since we started */
    bool said_keys;     /* the hint about keys was logged */

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

    /* Pushed datasets (docs/trainer.md): a JOB naming one by sha256 is held
     * here, not given to the worker, until its files are in the cache. */
    struct dscache cache;
    bool cache_open;
    struct proto_msg held_job;
    bool holding;
    bool held_train; /* a train job: DATASET goes to the broker */
    struct fetch fetch;
    bool fetching;
    double fetch_t0;
    /* The job's pushed datasets: [0] its data or input, [1] its validation
     * set; ready once cached (and counted as in use until the job ends). */
    struct held_data {
        char key[16]; /* "dataset" or "validation" */
        char sha[SHA256_HEX_LEN + 1];
        bool verified; /* the cached file hashed to sha (verify below) */
        bool ready;
        char path[DSCACHE_PATH_MAX];
        int64_t size, fetched;
    } data[2];
    int n_data;
    /* A predict output on its way to the broker (upload.h): the worker's
     * DONE waits in upload_done until the broker has the file. */
    struct upload upload;
    bool uploading;
    json_t *upload_done;
    double upload_t0;
    /* A cached dataset's whole hash, taken by a thread of its own: a large
     * file would stop this thread's heartbeats for seconds. */
    struct verify {
        pthread_t thread;
        bool running;
        atomic_int finished, stop;
        int index; /* data[index] */
        char path[DSCACHE_PATH_MAX];
        char hex[SHA256_HEX_LEN + 1];
        int rc;
        char err[600];
        double t0;
    } verify;
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

/* ---- pushed datasets: a JOB held until its data is cached ---------------------- */

static void hist_add(struct io *io, const char *cmd, json_t *body);
static void advance_held(struct io *io);

static void release_data(struct io *io)
{
    for (int i = 0; i < io->n_data; i++)
        if (io->data[i].ready) dscache_release(&io->cache, io->data[i].sha);
    memset(io->data, 0, sizeof io->data);
    io->n_data = 0;
}

static void *verify_thread(void *arg)
{
    struct verify *v = arg;
    v->rc = sha256_file_stoppable(v->path, v->hex, NULL, &v->stop, v->err, sizeof v->err);
    atomic_store(&v->finished, 1);
    return NULL;
}

/* Hashes data[i]'s cached file in the verify thread; 0, or -errno when no
 * thread could start. */
static int verify_start(struct io *io, int i)
{
    struct verify *v = &io->verify;
    v->index = i;
    snprintf(v->path, sizeof v->path, "%s", io->data[i].path);
    v->hex[0] = '\0';
    v->err[0] = '\0';
    v->rc = 0;
    v->t0 = mono();
    atomic_store(&v->finished, 0);
    atomic_store(&v->stop, 0);
    int rc = pthread_create(&v->thread, NULL, verify_thread, v);
    if (rc) return -rc;
    v->running = true;
    return 0;
}

static void verify_stop(struct io *io)
{
    if (!io->verify.running) return;
    atomic_store(&io->verify.stop, 1);
    pthread_join(io->verify.thread, NULL);
    io->verify.running = false;
}

/* Forgets the held JOB and its fetch (whose part stays for a resume). */
static void drop_held(struct io *io)
{
    verify_stop(io);
    if (io->fetching) fetch_close(&io->fetch);
    io->fetching = false;
    proto_msg_clear(&io->held_job);
    io->holding = false;
    release_data(io);
}

static void start_pending(struct io *io);
static void set_done(struct io *io, json_t *done);
static int open_cache(struct io *io, char *err, size_t errlen);

/* The held job ends here, never reaching the worker: DONE as the worker
 * would send it, kept until acknowledged. */
static void finish_held(struct io *io, const char *state, const char *error)
{
    drop_held(io);
    json_t *done = json_pack("{s:I, s:s}", "job", (json_int_t)io->job, "state", state);
    if (error) json_object_set_new(done, "error", json_string(error));
    log_info("job %lld %s%s%s", (long long)io->job, state, error ? ": " : "", error ? error : "");
    set_done(io, done);
    start_pending(io);
}

/* done (owned) is the job's DONE, kept and sent until acknowledged. */
static void set_done(struct io *io, json_t *done)
{
    held_clear(&io->done);
    snprintf(io->done.cmd, sizeof io->done.cmd, "%s", PROTO_DONE);
    io->done.body = done;
    if (io->welcomed) send_broker(io, PROTO_DONE, done, NULL, 0);
}

/* Whether spec names a pushed dataset for key; -EINVAL with err for a name
 * the broker did not resolve (it writes the sha256 at submit). */
static int pushed(const struct spec_dataset *d, const char *key, char *err, size_t errlen)
{
    if (!spec_dataset_pushed(d)) return 0;
    if (!d->sha256[0]) {
        snprintf(err, errlen,
                 "%s.name '%s': the broker sent no sha256 for it (a broker that does not "
                 "resolve pushed datasets?)",
                 key, d->name);
        return -EINVAL;
    }
    return 1;
}

/* A JOB from the broker: to the worker at once, or held while the pushed
 * datasets it names are fetched. */
static void admit_job(struct io *io, struct proto_msg *m)
{
    struct mlq_spec spec;
    char err[1024] = "";
    json_t *doc = json_object_get(m->body, "spec");
    /* A bad spec is the worker's to report, as before. */
    if (!json_is_object(doc) || spec_from_json(doc, &spec, err, sizeof err) != 0) {
        start_job(io, m);
        return;
    }
    if (spec.kind == JOB_PREDICT && spec.output_push) {
        /* Without it the worker fails the job: it has nowhere to write. */
        int64_t job = json_integer_value(json_object_get(m->body, "job"));
        char output_file[DSCACHE_PATH_MAX];
        if (open_cache(io, err, sizeof err) != 0)
            json_object_set_new(m->body, "output_error", json_string(err));
        else if (dscache_output_path(&io->cache, job, output_file) == 0)
            json_object_set_new(m->body, "output_file", json_string(output_file));
    }
    int a = pushed(&spec.dataset, spec.kind == JOB_PREDICT ? "input" : "dataset", err, sizeof err);
    int b =
        a < 0 || !spec.has_validation ? 0 : pushed(&spec.validation, "validation", err, sizeof err);
    if (a == 0 && b == 0) {
        start_job(io, m);
        return;
    }
    forget_job(io);
    io->serving[0] = '\0';
    io->job = json_integer_value(json_object_get(m->body, "job"));
    io->held_job = *m;
    memset(m, 0, sizeof *m); /* moved */
    io->holding = true;
    io->held_train = spec.kind == JOB_TRAIN;
    if (a < 0 || b < 0) {
        finish_held(io, "failed", err);
        return;
    }
    io->n_data = 0;
    if (a) {
        snprintf(io->data[io->n_data].key, sizeof io->data[0].key, "dataset");
        snprintf(io->data[io->n_data++].sha, SHA256_HEX_LEN + 1, "%s", spec.dataset.sha256);
    }
    if (b) {
        snprintf(io->data[io->n_data].key, sizeof io->data[0].key, "validation");
        snprintf(io->data[io->n_data++].sha, SHA256_HEX_LEN + 1, "%s", spec.validation.sha256);
    }
    notify_status("job %lld: waiting for its dataset", (long long)io->job);
    advance_held(io);
}

/* The held JOB, its specs' datasets now files of the cache, to the worker. */
static void release_held(struct io *io)
{
    struct proto_msg m = io->held_job;
    memset(&io->held_job, 0, sizeof io->held_job);
    io->holding = false;
    json_t *doc = json_object_get(m.body, "spec");
    json_t *cached = json_array();
    for (int i = 0; i < io->n_data; i++) {
        const char *key = io->data[i].key;
        json_t *d = json_object_get(doc, key);
        if (!d && strcmp(key, "dataset") == 0) d = json_object_get(doc, "input");
        json_object_del(d, "name");
        json_object_del(d, "sha256");
        json_object_set_new(d, "path", json_string(io->data[i].path));
        json_array_append_new(cached, json_string(key));
    }
    json_object_set_new(m.body, "cached", cached);
    struct held_data data[2];
    int n = io->n_data;
    memcpy(data, io->data, sizeof data);
    bool train = io->held_train;
    start_job(io, &m); /* forgets the job's history: DATASET goes after */
    memcpy(io->data, data, sizeof data);
    io->n_data = n;
    proto_msg_clear(&m);
    if (train && strcmp(io->data[0].key, "dataset") == 0) {
        json_t *b = json_pack("{s:I, s:s, s:I, s:I}", "job", (json_int_t)io->job, "sha256",
                              io->data[0].sha, "size", (json_int_t)io->data[0].size,
                              "fetched_bytes", (json_int_t)io->data[0].fetched);
        hist_add(io, PROTO_DATASET, b);
        json_decref(b);
    }
}

/* Opened at the first pushed dataset or output, so that a trainer that
 * never sees one makes no directories; tried again until it works. 0, or
 * -errno with the job's reason in err. */
static int open_cache(struct io *io, char *err, size_t errlen)
{
    if (io->cache_open) return 0;
    char why[512];
    int rc = dscache_open(&io->cache, io->opts->dataset_cache_dir, io->opts->dataset_cache_mb, why,
                          sizeof why);
    if (rc)
        snprintf(err, errlen,
                 "this trainer's dataset cache (trainer.dataset_cache_dir) is unusable: %s", why);
    io->cache_open = rc == 0;
    return rc;
}

/* Moves the held job on: each dataset cached (verified), else fetched;
 * when all are there, the job goes to the worker. */
static void advance_held(struct io *io)
{
    char err[1024] = "";
    if (open_cache(io, err, sizeof err) != 0) {
        finish_held(io, "failed", err);
        return;
    }
    for (int i = 0; i < io->n_data; i++) {
        struct held_data *d = &io->data[i];
        if (d->ready) continue;
        int64_t size = 0;
        int rc = dscache_lookup(&io->cache, d->sha, false, d->path, &size, err, sizeof err);
        if (rc < 0) {
            finish_held(io, "failed", err);
            return;
        }
        /* What this job just fetched was verified on the way; what was
         * cached before is hashed again (a corrupt cache is fetched anew). */
        if (rc == 1 && !d->fetched && !d->verified) {
            if (io->verify.running) return;
            if (verify_start(io, i) == 0) return;
            rc = dscache_lookup(&io->cache, d->sha, true, d->path, &size, err, sizeof err);
            if (rc < 0) {
                finish_held(io, "failed", err);
                return;
            }
        }
        if (rc == 1) {
            if (dscache_use(&io->cache, d->sha) != 0) {
                finish_held(io, "failed", "too many datasets in use in this trainer's cache");
                return;
            }
            d->ready = true;
            d->size = size;
            continue;
        }
        /* Another entry of this job may name the same sha: one fetch. */
        if (io->fetching) return;
        if (fetch_open(&io->fetch, &io->cache, d->sha, io->job, err, sizeof err) != 0) {
            fetch_close(&io->fetch);
            finish_held(io, "failed", err);
            return;
        }
        io->fetching = true;
        io->fetch_t0 = mono();
        log_info("job %lld: fetching dataset %s from the broker", (long long)io->job, d->sha);
        if (io->dealer && io->welcomed) fetch_pump(&io->fetch, io->dealer, mono());
        return;
    }
    release_held(io);
}

/* The verify thread is done with data[index]: on, or fetched again. */
static void verify_ended(struct io *io)
{
    struct verify *v = &io->verify;
    pthread_join(v->thread, NULL);
    v->running = false;
    struct held_data *d = &io->data[v->index];
    if (v->rc) {
        finish_held(io, "failed", v->err);
        return;
    }
    if (strcmp(v->hex, d->sha) != 0) {
        /* Bit rot or a hand edit: never train on it. */
        log_warn("dataset cache: %s hashes to %s: corrupt, removed to be fetched again", v->path,
                 v->hex);
        if (unlink(v->path) != 0 && errno != ENOENT) {
            char err[800];
            snprintf(err, sizeof err, "%.600s: corrupt, and cannot remove it: %s", v->path,
                     strerror(errno));
            finish_held(io, "failed", err);
            return;
        }
    } else {
        d->verified = true;
        log_info("job %lld: dataset %s cached (verified in %.0f ms)", (long long)io->job, d->sha,
                 (mono() - v->t0) * 1000);
    }
    advance_held(io);
}

static void fetch_ended(struct io *io)
{
    struct fetch *f = &io->fetch;
    io->fetching = false;
    if (f->state != FETCH_DONE) {
        char err[sizeof f->err];
        snprintf(err, sizeof err, "%s", f->err);
        fetch_close(f);
        finish_held(io, "failed", err);
        return;
    }
    double s = mono() - io->fetch_t0;
    log_info("job %lld: dataset %s fetched: %lld MB in %.3f s (%.0f MB/s), %lld resumed, %lld "
             "chunks rejected, %lld FETCHes resent",
             (long long)io->job, f->sha, (long long)(f->size >> 20), s,
             s > 0 ? (double)f->fetched / 1048576.0 / s : 0.0, (long long)(f->resumed >> 20),
             (long long)f->rejected, (long long)f->resends);
    for (int i = 0; i < io->n_data; i++)
        if (strcmp(io->data[i].sha, f->sha) == 0 && !io->data[i].fetched)
            io->data[i].fetched = f->fetched;
    fetch_close(f);
    advance_held(io);
}

static void start_pending(struct io *io)
{
    if (!io->has_pending) return;
    io->has_pending = false;
    struct proto_msg m = io->pending;
    memset(&io->pending, 0, sizeof io->pending);
    admit_job(io, &m);
    proto_msg_clear(&m);
}

/* ---- a predict output to the broker: the DONE waits for it --------------------- */

static void upload_end(struct io *io, const char *state);

/* The worker's DONE asks for its output to be sent first (its "upload"). */
static void upload_start(struct io *io, json_t *done)
{
    json_t *up = json_object_get(done, "upload");
    const char *path = json_string_value(json_object_get(up, "path"));
    const char *name = json_string_value(json_object_get(up, "name"));
    const char *sha = json_string_value(json_object_get(up, "sha256"));
    int64_t size = json_integer_value(json_object_get(up, "size"));
    io->upload_done = json_incref(done);
    io->upload_t0 = mono();
    io->uploading = true;
    if (upload_open(&io->upload, path, name, sha, size, io->job) != UPLOAD_RUNNING) {
        upload_end(io, NULL);
        return;
    }
    log_info("job %lld: sending its output to the broker as %s (%lld bytes)", (long long)io->job,
             name, (long long)size);
    if (io->dealer && io->welcomed) upload_pump(&io->upload, io->dealer, mono());
}

/* The upload is over: the DONE goes as the worker sent it, or failed with
 * why (state: NULL, else "cancelled" or "interrupted" when it was cut off).
 * The output file goes either way: the broker has it, or the job's next
 * attempt makes it anew. */
static void upload_end(struct io *io, const char *state)
{
    struct upload *u = &io->upload;
    json_t *done = io->upload_done;
    io->upload_done = NULL;
    io->uploading = false;
    json_t *up = json_object_get(done, "upload");
    const char *path = json_string_value(json_object_get(up, "path"));
    if (path && unlink(path) != 0 && errno != ENOENT)
        log_warn("job %lld: cannot remove %s: %s", (long long)io->job, path, strerror(errno));
    json_object_del(done, "upload");
    upload_close(u);
    if (state || u->state != UPLOAD_DONE) {
        char why[900];
        if (!state)
            snprintf(why, sizeof why, "the predictions could not be sent to the broker: %s",
                     u->err);
        json_object_set_new(done, "state", json_string(state ? state : "failed"));
        json_object_del(done, "result");
        if (!state) json_object_set_new(done, "error", json_string(why));
        log_info("job %lld %s%s%s", (long long)io->job, state ? state : "failed", state ? "" : ": ",
                 state ? "" : why);
    } else {
        double s = mono() - io->upload_t0;
        log_info("job %lld: output %s (sha256 %.12s...) at the broker: %lld bytes in %.3f s, "
                 "%lld sent",
                 (long long)io->job, u->name, u->sha, (long long)u->size, s, (long long)u->sent);
    }
    if (io->dropped) {
        json_decref(done);
        forget_job(io);
    } else {
        set_done(io, done);
    }
    start_pending(io);
}

static void on_broker_message(struct io *io, struct proto_msg *m)
{
    io->last_heard = mono();
    io->backoff = io->interval;
    int64_t job = json_integer_value(json_object_get(m->body, "job"));
    if (io->fetching && fetch_wants(&io->fetch, m)) {
        if (fetch_on_message(&io->fetch, m, io->dealer, mono()) != FETCH_RUNNING) fetch_ended(io);
        return;
    }
    if (io->uploading && upload_wants(&io->upload, m)) {
        if (upload_on_message(&io->upload, m, io->dealer, mono()) != UPLOAD_RUNNING)
            upload_end(io, NULL);
        return;
    }
    if (strcmp(m->cmd, PROTO_CHUNK) == 0) return; /* late: a fetch that ended */
    if (strcmp(m->cmd, PROTO_WELCOME) == 0) {
        /* HELLO repeats until welcomed, so several WELCOMEs may come: only the
         * first resends the job's state, or the resends multiply. */
        bool first = !io->welcomed;
        io->welcomed = io->ever_welcomed = true;
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
        } else if (io->worker_busy || io->holding || io->uploading) {
            proto_msg_clear(&io->pending);
            io->pending = *m;
            memset(m, 0, sizeof *m); /* moved */
            io->has_pending = true;
        } else {
            admit_job(io, m);
        }
    } else if (strcmp(m->cmd, PROTO_CANCEL) == 0) {
        if (job && job == io->job && io->worker_busy) {
            log_info("job %lld: cancel requested", (long long)job);
            atomic_store(&io->sh->stop_job, 1);
        } else if (job && job == io->job && io->holding) {
            log_info("job %lld: cancelled while its dataset was fetched", (long long)job);
            finish_held(io, "cancelled", NULL);
        } else if (job && job == io->job && io->uploading) {
            log_info("job %lld: cancelled while its output was sent", (long long)job);
            upload_end(io, "cancelled");
        }
    } else if (strcmp(m->cmd, PROTO_DROP) == 0) {
        if (job && job == io->job) {
            const char *why = json_string_value(json_object_get(m->body, "reason"));
            log_warn("job %lld dropped: %s", (long long)job, why ? why : "told by the broker");
            if (io->worker_busy) {
                atomic_store(&io->sh->stop_job, 1);
                io->dropped = true;
            } else if (io->holding) {
                drop_held(io);
                forget_job(io);
                start_pending(io);
            } else if (io->uploading) {
                io->dropped = true;
                upload_end(io, "cancelled"); /* sends nothing: dropped */
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

/* Keeps a message of the job for a resend after a reconnect, and sends it. */
static void hist_add(struct io *io, const char *cmd, json_t *body)
{
    if (io->n_hist == io->cap_hist && io->n_hist < HISTORY_MAX) {
        size_t cap = io->cap_hist ? 2 * io->cap_hist : 64;
        struct held *h = realloc(io->hist, cap * sizeof *h);
        if (h) {
            io->hist = h;
            io->cap_hist = cap;
        }
    }
    if (io->n_hist < io->cap_hist) {
        struct held *h = &io->hist[io->n_hist++];
        memset(h, 0, sizeof *h);
        snprintf(h->cmd, sizeof h->cmd, "%s", cmd);
        h->body = json_incref(body);
    }
    if (io->welcomed) send_broker(io, cmd, body, NULL, 0);
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
        release_data(io);
        if (io->dropped) {
            forget_job(io);
        } else if (json_object_get(m->body, "upload")) { /* only a success has one */
            upload_start(io, m->body);
            return;
        } else {
            keep(&io->done, m);
            m->bin = NULL;
            if (io->welcomed) send_broker(io, m->cmd, m->body, NULL, 0);
        }
        start_pending(io);
        return;
    }
    if (io->dropped) return;
    if (strcmp(m->cmd, PROTO_CHECKPOINT) == 0) {
        keep(&io->ckpt, m);
        if (io->welcomed) send_broker(io, m->cmd, m->body, m->bin, m->bin_len);
        m->bin = NULL; /* now owned by io->ckpt */
    } else if (strcmp(m->cmd, PROTO_METRICS) == 0 || strcmp(m->cmd, PROTO_DATASET) == 0) {
        hist_add(io, m->cmd, m->body);
    }
}

static void default_name(char *buf, size_t len, const char *host)
{
    snprintf(buf, len, "%.200s-%ld", host, (long)getpid());
}

/* Shutdown with a job running: stop it and tell the broker to requeue it. */
static void wait_done_ack(struct io *io);

static void interrupt_job(struct io *io)
{
    if (io->uploading) {
        upload_end(io, "interrupted"); /* the next attempt predicts again */
        wait_done_ack(io);
    }
    if (io->holding) {
        finish_held(io, "interrupted", NULL); /* its part stays for a resume */
        wait_done_ack(io);
    }
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
    wait_done_ack(io);
}

/* Gives the DONE a moment to leave before the socket closes. */
static void wait_done_ack(struct io *io)
{
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
        if (io.verify.running && timeout > 20) timeout = 20; /* to see it end */
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
            /* A CURVE handshake the broker cannot read is dropped without a
             * word: say what that usually means, once. */
            if (!io.ever_welcomed && !io.said_keys && opts->keys && opts->keys->curve) {
                log_warn("no broker has answered yet: if it runs at %s, its key may not be the "
                         "one pinned from %s, or this trainer's key (%s) is not in its "
                         "trainers' directory (docs/security.md)",
                         opts->endpoint, opts->keys->broker_from, opts->keys->own_path);
                io.said_keys = true;
            }
            zmq_close(io.dealer);
            io.dealer = NULL;
            io.welcomed = false;
            reconnect_at = now + io.backoff;
            if (io.fetching) fetch_reset_window(&io.fetch); /* those FETCHes died with it */
            if (io.uploading) upload_reset(&io.upload);
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
        if (io.verify.running && atomic_load(&io.verify.finished)) verify_ended(&io);
        if (io.fetching && io.dealer && io.welcomed) fetch_pump(&io.fetch, io.dealer, now);
        if (io.uploading && io.dealer && io.welcomed) {
            upload_pump(&io.upload, io.dealer, now);
            if (io.upload.state != UPLOAD_RUNNING) upload_end(&io, NULL);
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
    drop_held(&io);
    if (io.uploading) upload_end(&io, "interrupted");
    forget_job(&io);
    free(io.hist);
    proto_msg_clear(&io.pending);
    if (io.dealer) zmq_close(io.dealer);
    if (io.pair) zmq_close(io.pair);
    zmq_ctx_term(sh.zctx);
    return exit_code;
}
