/* One function per command. Client commands get OK or ERROR; trainer
 * commands from a peer the broker does not know get WHO. */
#include "broker_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"
#include "spec.h"
#include "spec_model.h"

static void reply_ok(struct broker *b, const struct proto_msg *m, json_t *body)
{
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, body, NULL, 0);
}

/* Whether the sender may see job j: its owner or an admin (anyone, without
 * keys). Others are told there is no such job, so that ids say nothing about
 * what exists. */
static bool may_see(const struct broker *b, const struct store_job *j)
{
    if (!b->who || b->who->role == KEYS_ROLE_ADMIN) return true;
    return j->owner && strcmp(j->owner, b->who->name) == 0;
}

/* ---- clients ---------------------------------------------------------------- */

/* A request's optional "request_id" (NULL when absent), which makes its
 * resend safe; a bad one is answered and -1 returned. */
int broker_request_id(struct broker *b, const struct proto_msg *m, const char **request_id)
{
    json_t *rid = json_object_get(m->body, "request_id");
    *request_id = NULL;
    if (!rid || json_is_null(rid)) return 0;
    if (!json_is_string(rid) || json_string_length(rid) == 0 ||
        json_string_length(rid) > STORE_REQUEST_ID_MAX) {
        broker_reply_error(b, m, "bad_request", "\"request_id\" is a string of 1 to %d bytes",
                           STORE_REQUEST_ID_MAX);
        return -1;
    }
    *request_id = json_string_value(rid);
    return 0;
}

static void on_submit(struct broker *b, struct proto_msg *m)
{
    json_t *doc = json_object_get(m->body, "spec");
    if (!json_is_object(doc)) {
        broker_reply_error(b, m, "bad_request", "SUBMIT needs a \"spec\" object");
        return;
    }
    struct mlq_spec spec;
    char err[1024];
    int drc = datasets_resolve_spec(b, doc, err, sizeof err);
    if (drc) {
        broker_reply_error(b, m, drc == -EINVAL ? "bad_spec" : "store", "%s", err);
        return;
    }
    if (spec_from_json(doc, &spec, err, sizeof err) != 0 ||
        spec_model_check(&spec, NULL, spec.batch_size, NULL, NULL, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_spec", "bad spec: %s", err);
        return;
    }
    if (spec.kind != JOB_TRAIN) {
        struct store_job run;
        int rc = store_job_get(b->store, spec.run, &run);
        if (rc == 0 && !may_see(b, &run)) {
            store_job_free(&run);
            rc = -ENOENT;
        }
        if (rc == -ENOENT) {
            broker_reply_error(b, m, "not_found", "run %lld: no such run", (long long)spec.run);
            return;
        }
        if (rc) {
            broker_reply_error(b, m, "store", "run %lld: %s", (long long)spec.run,
                               store_errmsg(b->store));
            return;
        }
        bool train = run.kind == JOB_TRAIN;
        store_job_free(&run);
        if (!train) {
            broker_reply_error(b, m, "bad_spec", "run %lld is not a train job",
                               (long long)spec.run);
            return;
        }
    }
    if (b->stopping) {
        broker_reply_error(b, m, "stopping", "the broker is stopping");
        return;
    }
    const char *code;
    if (sweep_meta_check(b, m, err, sizeof err, &code) != 0) {
        broker_reply_error(b, m, code, "%s", err);
        return;
    }
    const char *request_id;
    if (broker_request_id(b, m, &request_id)) return;
    int64_t id;
    bool existed;
    if (broker_write(b)) return;
    struct store_new_job meta = {.owner = b->who ? b->who->name : NULL,
                                 .experiment = sweep_meta_experiment(m)};
    int rc = store_job_submit_meta(b->store, &spec, request_id, &meta, &id, &existed);
    if (rc == 0 && !existed && sweep_meta_apply(b, m, id) != 0) {
        broker_store_failed(b, "submit tags");
        return;
    }
    if (rc == -EEXIST) {
        broker_reply_error(b, m, "conflict", "%s", store_errmsg(b->store));
        return;
    }
    if (rc != 0) {
        broker_reply_error(b, m, "store", "cannot queue the job: %s", store_errmsg(b->store));
        return;
    }
    if (existed) {
        /* A retry of a submission whose OK was lost: the same job, once. */
        log_info("job %lld: submission repeated (request id %s)", (long long)id, request_id);
        broker_reply_textf(b, m->ident, m->ident_len, PROTO_OK, NULL, 0,
                           "{\"id\":%lld,\"existed\":true}", (long long)id);
        return;
    }
    log_debug("job %lld queued (%s, priority %d)", (long long)id, spec_kind_name(spec.kind),
              spec.priority);
    broker_reply_textf(b, m->ident, m->ident_len, PROTO_OK, NULL, 0, "{\"id\":%lld}",
                       (long long)id);
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *job_json(const struct store_job *j)
{
    json_t *o = json_pack(
        "{s:I, s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:b, s:o, s:o, s:o}", "id", (json_int_t)j->id,
        "kind", spec_kind_name(j->kind), "state", store_state_name(j->state), "priority",
        j->priority, "attempts", j->attempts, "max_attempts", j->max_attempts, "name", j->name,
        "trainer", j->trainer, "cancel_requested", j->cancel_requested, "submitted",
        num_or_null(j->submitted), "started", j->started ? json_real(j->started) : json_null(),
        "finished", j->finished ? json_real(j->finished) : json_null());
    if (!o) return NULL;
    if (j->run) json_object_set_new(o, "run", json_integer(j->run));
    json_object_set_new(o, "owner", j->owner ? json_string(j->owner) : json_null());
    if (j->sweep) json_object_set_new(o, "sweep", json_integer(j->sweep));
    if (j->experiment) json_object_set_new(o, "experiment", json_string(j->experiment));
    json_object_set_new(o, "error", j->error ? json_string(j->error) : json_null());
    if (j->result_json) {
        json_t *r = json_loads(j->result_json, 0, NULL);
        json_object_set_new(o, "result", r ? r : json_null());
    }
    if (j->spec_json) {
        json_t *s = json_loads(j->spec_json, 0, NULL);
        json_t *epochs = s ? json_object_get(s, "epochs") : NULL;
        if (json_is_integer(epochs)) json_object_set(o, "epochs", epochs);
        json_decref(s);
    }
    return o;
}

static int job_id_of(struct broker *b, struct proto_msg *m, int64_t *id)
{
    char err[128];
    if (proto_get_int(m->body, "id", id, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_request", "%s: %s", m->cmd, err);
        return -EINVAL;
    }
    return 0;
}

static int get_job_or_reply(struct broker *b, struct proto_msg *m, int64_t id,
                            struct store_job *job)
{
    int rc = store_job_get(b->store, id, job);
    if (rc == 0 && !may_see(b, job)) {
        store_job_free(job);
        rc = -ENOENT;
    }
    if (rc == -ENOENT)
        broker_reply_error(b, m, "not_found", "job %lld: no such job", (long long)id);
    else if (rc)
        broker_reply_error(b, m, "store", "job %lld: %s", (long long)id, store_errmsg(b->store));
    return rc;
}

#define STATUS_MAX_EPOCHS 1000 /* per STATUS reply; the client asks again from the last */

struct epochs_ctx {
    json_t *epochs; /* [{"epoch": e, key: value, ...}] */
    json_t *last;
};

static int add_epoch_metric(void *ctx, const struct store_metric *m)
{
    struct epochs_ctx *c = ctx;
    if (!c->last || json_integer_value(json_object_get(c->last, "epoch")) != m->epoch) {
        if (json_array_size(c->epochs) == STATUS_MAX_EPOCHS) return 1;
        c->last = json_pack("{s:I}", "epoch", (json_int_t)m->epoch);
        if (!c->last || json_array_append_new(c->epochs, c->last) != 0) return -ENOMEM;
    }
    json_object_set_new(c->last, m->key, num_or_null(m->value));
    return 0;
}

static void on_status(struct broker *b, struct proto_msg *m)
{
    int64_t id;
    struct store_job job;
    if (job_id_of(b, m, &id) || get_job_or_reply(b, m, id, &job)) return;
    json_t *metrics = json_object();
    struct store_metric *fm = NULL;
    size_t n = 0;
    if (store_metrics_final(b->store, id, &fm, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            json_object_set_new(metrics, fm[i].key,
                                json_pack("{s:I, s:I, s:o}", "step", (json_int_t)fm[i].step,
                                          "epoch", (json_int_t)fm[i].epoch, "value",
                                          num_or_null(fm[i].value)));
        store_metrics_free(fm, n);
    }
    json_t *reply = json_pack("{s:o, s:o}", "job", job_json(&job), "metrics", metrics);
    /* A queued job's place: the jobs dispatch would give a trainer first (mlq wait). */
    int64_t ahead;
    if (reply && job.state == STORE_QUEUED) {
        if (store_job_queue_ahead(b->store, id, job.priority, &ahead) == 0)
            json_object_set_new(reply, "queue_ahead", json_integer(ahead));
        else
            log_warn("status of job %lld: %s", (long long)id, store_errmsg(b->store));
    }
    json_t *since = json_object_get(m->body, "since_epoch");
    if (reply && json_is_integer(since)) {
        /* Every epoch after the one the client saw, so that it can print a
           line for each however short the epochs (mlq wait). */
        struct epochs_ctx c = {.epochs = json_array()};
        if (c.epochs &&
            store_metrics_since(b->store, id, json_integer_value(since), add_epoch_metric, &c) < 0)
            log_warn("status of job %lld: %s", (long long)id, store_errmsg(b->store));
        json_object_set_new(reply, "epochs", c.epochs ? c.epochs : json_array());
    }
    reply_ok(b, m, reply);
    store_job_free(&job);
}

static void on_cancel(struct broker *b, struct proto_msg *m)
{
    int64_t id;
    struct store_job job;
    if (sweep_handle_cancel(b, m)) return;
    if (job_id_of(b, m, &id) || get_job_or_reply(b, m, id, &job)) return;
    const char *state = store_state_name(job.state);
    if (job.state == STORE_QUEUED) {
        if (broker_write(b)) goto out;
        if (store_job_set_cancelled(b->store, id, "cancelled before it started") != 0) {
            broker_store_failed(b, "cancel");
            goto out;
        }
        state = "cancelled";
    } else if (job.state == STORE_RUNNING) {
        if (broker_write(b)) goto out;
        struct trainer *t = trainers_find_job(b, id);
        int rc = t ? store_job_request_cancel(b->store, id)
                   : store_job_set_cancelled(b->store, id, "cancelled while its trainer was away");
        if (rc) {
            broker_store_failed(b, "cancel");
            goto out;
        }
        if (t) {
            dispatch_take_orphan(b, id);
            broker_reply(b, t->ident, t->ident_len, PROTO_CANCEL,
                         json_pack("{s:I}", "job", (json_int_t)id), NULL, 0);
            t->cancel_sent = true;
            t->cancel_at = broker_mono();
            state = "cancelling";
        } else {
            dispatch_take_orphan(b, id);
            state = "cancelled";
        }
    }
    reply_ok(b, m, json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", state));
out:
    store_job_free(&job);
}

#define QUEUE_LIST_MAX 1000

static void on_queue(struct broker *b, struct proto_msg *m)
{
    int64_t counts[STORE_N_STATES] = {0};
    json_t *jobs = json_array();
    static const enum store_state shown[] = {STORE_RUNNING, STORE_QUEUED};
    for (size_t s = 0; s < 2; s++) {
        int64_t *ids = NULL;
        size_t n = 0;
        if (store_job_ids_by_state(b->store, shown[s], &ids, &n) != 0) continue;
        for (size_t i = 0; i < n && json_array_size(jobs) < QUEUE_LIST_MAX; i++) {
            struct store_job job;
            if (store_job_get(b->store, ids[i], &job) == 0) {
                if (may_see(b, &job)) json_array_append_new(jobs, job_json(&job));
                store_job_free(&job);
            }
        }
        free(ids);
    }
    store_job_count_by_state(b->store, counts);
    json_t *c = json_object();
    for (int s = 0; s < STORE_N_STATES; s++)
        json_object_set_new(c, store_state_name((enum store_state)s), json_integer(counts[s]));
    reply_ok(
        b, m,
        json_pack("{s:o, s:o, s:o}", "jobs", jobs, "counts", c, "sweeps", sweep_queue_json(b)));
}

static void on_workers(struct broker *b, struct proto_msg *m)
{
    json_t *list = json_array();
    double now = broker_mono();
    for (size_t i = 0; i < b->n_trainers; i++) {
        const struct trainer *t = &b->trainers[i];
        if (!t->name[0]) continue;
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f}", "name", t->name, "host", t->host,
                              "version", t->version, "state", t->job ? "busy" : "idle",
                              "last_heartbeat_age", now - t->last_seen, "since", t->since);
        json_t *jobv = json_null();
        struct store_job j;
        if (t->job && (!b->who || b->who->role == KEYS_ROLE_ADMIN))
            jobv = json_integer(t->job);
        else if (t->job && store_job_get(b->store, t->job, &j) == 0) {
            if (may_see(b, &j)) jobv = json_integer(t->job);
            store_job_free(&j);
        }
        json_object_set_new(o, "job", jobv);
        json_object_set_new(o, "serving", serve_replica_of(b, t));
        json_t *caps = t->capabilities ? json_loads(t->capabilities, 0, NULL) : NULL;
        json_object_set_new(o, "capabilities", caps ? caps : json_null());
        json_array_append_new(list, o);
    }
    reply_ok(b, m, json_pack("{s:o}", "trainers", list));
}

/* ---- trainers ----------------------------------------------------------------- */

static void send_drop(struct broker *b, const struct proto_msg *m, int64_t job, const char *why)
{
    broker_peer_log(b, LOG_LVL_INFO, "trainer told to drop job %lld: %s", (long long)job, why);
    broker_reply(b, m->ident, m->ident_len, PROTO_DROP,
                 json_pack("{s:I, s:s}", "job", (json_int_t)job, "reason", why), NULL, 0);
}

static void copy_field(char *dst, size_t len, const json_t *body, const char *key)
{
    const char *v = json_string_value(json_object_get(body, key));
    snprintf(dst, len, "%s", v ? v : "");
}

static void on_hello(struct broker *b, struct proto_msg *m)
{
    const char *name = json_string_value(json_object_get(m->body, "name"));
    if (!name || !name[0] || strlen(name) >= STORE_NAME_MAX) {
        broker_drop_log(b, "HELLO without a valid name");
        return;
    }
    int64_t announced = 0;
    json_t *jv = json_object_get(m->body, "job");
    if (json_is_integer(jv)) announced = json_integer_value(jv);

    /* The same socket saying HELLO again, or the same name on a new socket
     * (the trainer reconnected): the old entry's job follows the announcement. */
    struct trainer *self = trainers_find(b, m->ident, m->ident_len);
    struct trainer *holder = trainers_find_name(b, name);
    if (holder == self) holder = NULL;
    /* A name in use by a live trainer belongs to its connection: a HELLO
     * from another one takes it over only with the same instance (the same
     * process, its I/O thread reconnected). Another process, or any peer
     * that leaves out the instance, is refused until the first goes silent:
     * else it would take the job, and its results, metrics and checkpoints
     * would be recorded as the job's (or its HELLO without the job would
     * make the job lose an attempt). */
    const char *instance = json_string_value(json_object_get(m->body, "instance"));
    bool same_instance =
        holder && instance && instance[0] && strcmp(instance, holder->instance) == 0;
    if (holder && !same_instance && broker_mono() - holder->last_seen < b->expiry) {
        broker_reply_error(b, m, "name_in_use",
                           "trainer name %s is in use by another running trainer (%s); give "
                           "each trainer its own --name",
                           name, holder->host);
        return;
    }
    if (self && holder) {
        /* This connection takes a name whose holder went silent: that one
         * is gone. */
        if (holder->job) dispatch_lost(b, holder->job, "its trainer went away");
        trainers_remove(b, holder);
        self = trainers_find(b, m->ident, m->ident_len); /* moved by the removal */
        holder = NULL;
    }
    struct trainer *old = self ? self : holder;
    /* The same trainer process: the same connection, or a new one with the
     * same instance. */
    bool same_process = self || same_instance;
    bool adopt_from_old = false;
    int64_t undelivered = 0;
    if (old) {
        if (old->job && old->job == announced && same_process)
            adopt_from_old = true;
        else if (old->job && same_process && announced == 0)
            /* The process announces every job it got until its DONE is
             * acknowledged: no job announced means the JOB (or the WELCOME
             * before it) never reached it, not that the job was lost. Send it
             * again, no attempt counted. */
            undelivered = old->job;
        else if (old->job)
            dispatch_lost(b, old->job, "its trainer restarted without it");
        trainers_remove(b, old);
    }
    struct trainer *t = trainers_add(b, m->ident, m->ident_len);
    if (!t) {
        log_error("out of memory registering trainer %s", name);
        return;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    copy_field(t->host, sizeof t->host, m->body, "host");
    copy_field(t->version, sizeof t->version, m->body, "version");
    copy_field(t->instance, sizeof t->instance, m->body, "instance");
    json_t *caps = json_object_get(m->body, "capabilities");
    t->capabilities = caps ? json_dumps(caps, JSON_COMPACT) : NULL;
    t->infer_bin = json_is_true(json_object_get(caps, "infer_bin"));
    t->since = store_now(b->store);

    json_t *welcome =
        json_pack("{s:i, s:i}", "heartbeat_ms", b->opts.heartbeat_ms, "liveness", b->opts.liveness);
    bool cancel = false;
    if (announced) {
        struct store_job job;
        int rc = store_job_get(b->store, announced, &job);
        const char *why = NULL;
        if (rc)
            why = "no such job";
        else if (job.state != STORE_RUNNING)
            why = store_state_terminal(job.state) ? "the job is finished"
                                                  : "the job went back to the queue";
        else if (trainers_find_job(b, announced))
            why = "the job runs elsewhere";
        else if (!adopt_from_old && strcmp(job.trainer, name) != 0)
            /* Also a job waiting after a broker restart for its trainer: only
             * the name it was given to may claim it. */
            why = "the job was given to another trainer";
        if (why) {
            broker_reply(b, m->ident, m->ident_len, PROTO_WELCOME, welcome, NULL, 0);
            send_drop(b, m, announced, why);
            welcome = NULL;
        } else {
            dispatch_take_orphan(b, announced);
            t->job = announced;
            cancel = job.cancel_requested;
            json_object_set_new(welcome, "adopt", json_integer(announced));
            broker_peer_log(b, LOG_LVL_INFO, "trainer %s re-announced job %lld", name,
                            (long long)announced);
        }
        if (!rc) store_job_free(&job);
    }
    if (welcome) broker_reply(b, m->ident, m->ident_len, PROTO_WELCOME, welcome, NULL, 0);
    if (undelivered) {
        t->job = undelivered;
        dispatch_resend(b, t);
    }
    if (cancel) {
        broker_reply(b, m->ident, m->ident_len, PROTO_CANCEL,
                     json_pack("{s:I}", "job", (json_int_t)t->job), NULL, 0);
        t->cancel_sent = true;
        t->cancel_at = broker_mono();
    }
    serve_hello(b, t, json_object_get(m->body, "serving"));
    serve_kick(b);
    broker_peer_log(b, LOG_LVL_INFO, "trainer %s (%s) connected%s", t->name, t->host,
                    t->job ? ", busy" : ", idle");
    trainers_save(b, t, t->job ? "busy" : "idle");
}

/* The job a trainer message is about, if it is that trainer's; else DROP. */
static int owned_job(struct broker *b, struct trainer *t, struct proto_msg *m, int64_t *job)
{
    char err[128];
    if (proto_get_int(m->body, "job", job, err, sizeof err) != 0) {
        broker_drop_log(b, "%s from %s: %s", m->cmd, t->name, err);
        return -EINVAL;
    }
    if (t->job != *job) {
        send_drop(b, m, *job, "the job is not yours");
        return -EPERM;
    }
    return 0;
}

static void on_metrics(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    int64_t job, epoch, step;
    char err[128] = "";
    if (owned_job(b, t, m, &job)) return;
    json_t *values = json_object_get(m->body, "values");
    if (proto_get_int(m->body, "epoch", &epoch, err, sizeof err) ||
        proto_get_int(m->body, "step", &step, err, sizeof err) || !json_is_object(values)) {
        broker_drop_log(b, "METRICS from %s: %s", t->name, err[0] ? err : "no values");
        return;
    }
    struct store_metric ms[32];
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(values, key, v)
    {
        if (n == 32 || !json_is_number(v) || !key[0] || strlen(key) >= STORE_KEY_MAX) continue;
        ms[n++] = (struct store_metric){
            .key = key, .step = step, .epoch = epoch, .value = json_number_value(v)};
    }
    if (broker_write(b)) return;
    if (n && store_metrics_put(b->store, job, ms, n) != 0) {
        broker_store_failed(b, "metrics");
        return;
    }
    sweep_on_metrics(b, t, job, epoch, values);
}

/* A checkpoint is stored only if a trainer can resume from it: its format
 * and checksum hold, and its sizes are those of the job's model (of the
 * model its own spec resolves, when the job's leaves the input shape to the
 * dataset). 0, -EINVAL with the reason in why, or another -errno. */
static int checkpoint_check(struct broker *b, int64_t job, const struct proto_msg *m, char *why,
                            size_t len)
{
    struct checkpoint c;
    int rc = checkpoint_decode(m->bin, m->bin_len, &c, why, len);
    if (rc) return rc == -ENOMEM ? rc : -EINVAL;
    struct store_job j;
    if ((rc = store_job_get(b->store, job, &j)) != 0) {
        checkpoint_free(&c);
        return rc;
    }
    struct mlq_spec spec;
    struct model_sizes sz;
    bool checked = false;
    char err[512];
    if (j.kind != JOB_TRAIN) {
        snprintf(why, len, "a %s job keeps no checkpoints", spec_kind_name(j.kind));
        rc = -EINVAL;
    } else if (spec_parse(j.spec_json, &spec, err, sizeof err) != 0 ||
               spec_model_check(&spec, NULL, 1, &sz, &checked, err, sizeof err) != 0) {
        snprintf(why, len, "the job's model cannot be sized: %.400s", err);
        rc = -EINVAL;
    } else if (!checked && (!c.spec_json || spec_parse(c.spec_json, &spec, err, sizeof err) != 0 ||
                            spec_model_check(&spec, NULL, 1, &sz, &checked, err, sizeof err) != 0 ||
                            !checked)) {
        snprintf(why, len, "its spec gives no model of known size");
        rc = -EINVAL;
    }
    if (!rc) {
        struct optim_config oc;
        spec_model_optim_config(&spec.optimizer, &oc);
        size_t n_optim = sz.n_params * (size_t)optim_buffers(&oc);
        if (c.n_params != sz.n_params || c.n_optim != n_optim || c.n_state != sz.n_state) {
            snprintf(why, len,
                     "it holds %zu parameters, %zu optimizer values and %zu state values, the "
                     "job's model has %zu, %zu and %zu",
                     c.n_params, c.n_optim, c.n_state, sz.n_params, n_optim, sz.n_state);
            rc = -EINVAL;
        }
    }
    store_job_free(&j);
    checkpoint_free(&c);
    return rc;
}

static void on_checkpoint(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    int64_t job, epoch, step;
    char err[128] = "";
    if (owned_job(b, t, m, &job)) return;
    if (proto_get_int(m->body, "epoch", &epoch, err, sizeof err) ||
        proto_get_int(m->body, "step", &step, err, sizeof err) || !m->bin || !m->bin_len) {
        broker_drop_log(b, "CHECKPOINT from %s: %s", t->name, err[0] ? err : "no blob");
        return;
    }
    char why[512] = "";
    int rc = checkpoint_check(b, job, m, why, sizeof why);
    if (rc == -EINVAL) {
        /* Only the trainer holding the job gets here: record why on its run,
           once per checkpoint, and keep the ones before it. */
        char msg[700];
        snprintf(msg, sizeof msg, "checkpoint of epoch %lld from trainer %s refused: %s",
                 (long long)epoch, t->name, why);
        broker_peer_log(b, LOG_LVL_WARN, "job %lld: %s", (long long)job, msg);
        if (broker_write(b) == 0 && store_event_add(b->store, job, "warn", msg) != 0)
            broker_store_failed(b, "event");
        return;
    }
    if (rc == -ENOMEM) {
        log_error("job %lld: out of memory checking a checkpoint of %zu bytes: not stored",
                  (long long)job, m->bin_len);
        return;
    }
    if (rc) {
        broker_store_failed(b, "checkpoint check");
        return;
    }
    json_t *mv = json_object_get(m->body, "metric");
    double metric = json_is_number(mv) ? json_number_value(mv) : NAN;
    if (broker_write(b)) return;
    int64_t id;
    if (store_checkpoint_put(b->store, job, epoch, step, m->bin, m->bin_len, metric, &id) != 0)
        broker_store_failed(b, "checkpoint");
}

/* A predict job whose output went to the dataset store succeeds only if the
 * store holds what its result names (a trainer that says so and did not
 * send it would leave the client nothing to fetch). */
static bool output_missing(struct broker *b, const json_t *result, char *why, size_t len)
{
    const char *sha = json_string_value(json_object_get(result, "output_sha256"));
    if (!sha) return false;
    const char *name = json_string_value(json_object_get(result, "output"));
    struct store_dataset d;
    if (name && store_dataset_get(b->store, name, &d) == 0 && strcmp(d.sha256, sha) == 0)
        return false;
    snprintf(why, len,
             "the trainer said its output is dataset %.140s (sha256 %.12s...), which the broker "
             "does not hold",
             name ? name : "(no name)", sha);
    return true;
}

static void on_done(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    int64_t id;
    const char *state;
    char err[128];
    if (proto_get_int(m->body, "job", &id, err, sizeof err) ||
        proto_get_str(m->body, "state", &state, err, sizeof err)) {
        broker_drop_log(b, "DONE from %s: %s", t->name, err);
        return;
    }
    json_t *ack = json_pack("{s:I}", "job", (json_int_t)id);
    if (t->job != id) {
        /* A DONE resent after a reconnect, already recorded: just let it go. */
        struct store_job job;
        bool recorded = false;
        if (store_job_get(b->store, id, &job) == 0) {
            recorded = store_state_terminal(job.state) && strcmp(job.trainer, t->name) == 0;
            store_job_free(&job);
        }
        if (recorded) {
            broker_reply(b, m->ident, m->ident_len, PROTO_ACK, ack, NULL, 0);
        } else {
            json_decref(ack);
            send_drop(b, m, id, "the job is not yours");
        }
        return;
    }
    if (strcmp(state, "interrupted") == 0) {
        /* The trainer is shutting down: the job goes back to the queue and the
         * trainer gets no new one. */
        char why[300];
        snprintf(why, sizeof why, "trainer %s stopped", t->name);
        dispatch_lost(b, id, why);
        t->job = 0;
        trainers_save(b, t, "gone");
        broker_reply(b, m->ident, m->ident_len, PROTO_ACK, ack, NULL, 0);
        trainers_remove(b, t);
        return;
    }
    if (broker_write(b)) {
        json_decref(ack);
        return;
    }
    const char *error = json_string_value(json_object_get(m->body, "error"));
    json_t *result = json_object_get(m->body, "result");
    char lost[400];
    if (strcmp(state, "succeeded") == 0 && output_missing(b, result, lost, sizeof lost)) {
        state = "failed";
        error = lost;
        result = NULL;
    }
    int rc = 0;
    if (json_is_object(result)) {
        char *text = json_dumps(result, JSON_COMPACT);
        rc = text ? store_job_set_result(b->store, id, text) : -ENOMEM;
        free(text);
    }
    if (rc == 0) {
        if (strcmp(state, "succeeded") == 0)
            rc = store_job_set_succeeded(b->store, id);
        else if (strcmp(state, "cancelled") == 0)
            rc = store_job_set_cancelled(b->store, id, error ? error : "cancelled");
        else
            rc = store_job_set_failed(b->store, id, error ? error : "failed");
    }
    if (rc) {
        json_decref(ack);
        broker_store_failed(b, "done");
        return;
    }
    log_info("job %lld %s on %s%s%s", (long long)id, state, t->name, error ? ": " : "",
             error ? error : "");
    t->job = 0;
    t->cancel_sent = false;
    json_decref(ack);
    broker_reply_textf(b, m->ident, m->ident_len, PROTO_ACK, NULL, 0, "{\"job\":%lld}",
                       (long long)id);
}

static void on_trainer_message(struct broker *b, struct proto_msg *m);

/* A trainer's heartbeat names the job it holds. One that has held none for a
 * whole liveness window since we sent it its job never got the JOB message
 * (a full send queue drops replies): send it again. */
static void on_heartbeat(struct broker *b, struct trainer *t, struct proto_msg *m)
{
    json_t *jv = json_object_get(m->body, "job");
    if (!json_is_integer(jv) || !t->job) return;
    if (json_integer_value(jv) == 0 && broker_mono() - t->dispatched > b->expiry)
        dispatch_resend(b, t);
}

static void on_whoami(struct broker *b, struct proto_msg *m)
{
    if (!b->who) {
        reply_ok(b, m, json_pack("{s:s, s:n, s:s}", "mechanism", "NULL", "name", "role", "admin"));
        return;
    }
    reply_ok(b, m,
             json_pack("{s:s, s:s, s:s, s:s, s:s}", "mechanism", "CURVE", "name", b->who->name,
                       "role", keys_role_name(b->who->role), "key", b->who->z85, "broker_key",
                       b->auth.public_z85));
}

static bool is_client_command(const char *c)
{
    return strcmp(c, PROTO_SUBMIT) == 0 || strcmp(c, PROTO_STATUS) == 0 ||
           strcmp(c, PROTO_CANCEL) == 0 || strcmp(c, PROTO_QUEUE) == 0 ||
           strcmp(c, PROTO_WORKERS) == 0 || serve_is_client_command(c) ||
           sweep_is_client_command(c) || datasets_is_client_command(c);
}

/* Under CURVE every message is checked against the keys as they are now:
 * a revoked key's connection is ignored from its next message on, and each
 * role speaks only its own commands. */
static bool allowed(struct broker *b, struct proto_msg *m)
{
    b->who = NULL;
    if (!b->auth.curve) return true;
    b->who = auth_lookup(b, m->user);
    if (!b->who) {
        broker_drop_log(b, "%s from a key that is no longer accepted (%.8s...)", m->cmd,
                        m->user[0] ? m->user : "none");
        return false;
    }
    const char *c = m->cmd;
    bool trainer = b->who->role == KEYS_ROLE_TRAINER;
    /* A trainer fetches a job's dataset, mlq dataset get fetches one too. */
    if (strcmp(c, PROTO_WHOAMI) == 0 || strcmp(c, PROTO_FETCH) == 0) return true;
    /* A trainer pushes its predict job's output (datasets.c checks the job). */
    bool output_push = (strcmp(c, PROTO_DATASET_PUT) == 0 || strcmp(c, PROTO_DATASET_CHUNK) == 0 ||
                        strcmp(c, PROTO_DATASET_END) == 0) &&
                       json_object_get(m->body, "job");
    if (output_push && trainer) return true;
    if (is_client_command(c) && trainer) {
        broker_reply_error(b, m, "forbidden", "%s: %s is a trainer's key; trainers do not %s", c,
                           b->who->name, c);
        return false;
    }
    if (!is_client_command(c) && !trainer) {
        if (strcmp(c, PROTO_HELLO) == 0)
            broker_reply_error(b, m, "forbidden",
                               "HELLO: %s is a %s's key; only keys in the trainers' directory "
                               "register as trainers",
                               b->who->name, keys_role_name(b->who->role));
        else
            broker_drop_log(b, "%s from %s, who is not a trainer", c, b->who->name);
        return false;
    }
    return true;
}

static void dispatch_command(struct broker *b, struct proto_msg *m);

void handlers_dispatch(struct broker *b, struct proto_msg *m)
{
    if (allowed(b, m)) dispatch_command(b, m);
    b->who = NULL; /* points into the key table, which a rescan replaces */
}

static void dispatch_command(struct broker *b, struct proto_msg *m)
{
    const char *c = m->cmd;
    if (strcmp(c, PROTO_WHOAMI) == 0)
        on_whoami(b, m);
    else if (strcmp(c, PROTO_SUBMIT) == 0)
        on_submit(b, m);
    else if (strcmp(c, PROTO_STATUS) == 0)
        on_status(b, m);
    else if (strcmp(c, PROTO_CANCEL) == 0)
        on_cancel(b, m);
    else if (strcmp(c, PROTO_QUEUE) == 0)
        on_queue(b, m);
    else if (strcmp(c, PROTO_WORKERS) == 0)
        on_workers(b, m);
    else if (strcmp(c, PROTO_HELLO) == 0)
        on_hello(b, m);
    else if (serve_is_client_command(c))
        serve_client_message(b, m);
    else if (datasets_is_client_command(c) || strcmp(c, PROTO_FETCH) == 0)
        datasets_client_message(b, m);
    else if (!sweep_dispatch(b, m))
        on_trainer_message(b, m);
}

static void on_trainer_message(struct broker *b, struct proto_msg *m)
{
    const char *c = m->cmd;
    bool from_trainer = strcmp(c, PROTO_HEARTBEAT) == 0 || strcmp(c, PROTO_METRICS) == 0 ||
                        strcmp(c, PROTO_CHECKPOINT) == 0 || strcmp(c, PROTO_DONE) == 0 ||
                        strcmp(c, PROTO_DATASET) == 0 || serve_is_trainer_command(c);
    if (!from_trainer) {
        broker_drop_log(b, "%s is not a command for the broker", c);
        return;
    }
    struct trainer *t = trainers_find(b, m->ident, m->ident_len);
    if (!t) {
        /* A trainer that outlived a broker restart, or that we gave up on. */
        broker_reply(b, m->ident, m->ident_len, PROTO_WHO, json_object(), NULL, 0);
        return;
    }
    t->last_seen = broker_mono();
    if (strcmp(c, PROTO_HEARTBEAT) == 0)
        on_heartbeat(b, t, m);
    else if (strcmp(c, PROTO_METRICS) == 0)
        on_metrics(b, t, m);
    else if (strcmp(c, PROTO_CHECKPOINT) == 0)
        on_checkpoint(b, t, m);
    else if (strcmp(c, PROTO_DONE) == 0)
        on_done(b, t, m);
    else if (strcmp(c, PROTO_DATASET) == 0)
        datasets_trainer_message(b, t, m);
    else
        serve_trainer_message(b, t, m);
}
