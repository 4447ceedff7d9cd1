/* Sweeps in the broker (docs/sweeps.md): SWEEP expands a space into trial
 * jobs in one commit; ASHA and the median rule judge each trial at epoch
 * boundaries from the METRICS it streams, recording every decision in the
 * same transaction as the metrics it was made from, so a restart neither
 * loses nor repeats one. Also the job metadata of issue 12: experiments,
 * tags, notes and --after dependencies. */
#include "broker_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "space.h"
#include "spec.h"
#include "spec_model.h"

#define DEPS_CHECK_S 0.5 /* how often queued jobs are checked for failed --after jobs */
#define SUBMIT_MAX_AFTER 64
#define SUBMIT_MAX_TAGS 64

static bool may_see_owner(const struct broker *b, const char *owner)
{
    if (!b->who || b->who->role == KEYS_ROLE_ADMIN) return true;
    return owner && strcmp(owner, b->who->name) == 0;
}

bool sweep_is_client_command(const char *c)
{
    return strcmp(c, PROTO_SWEEP) == 0 || strcmp(c, PROTO_TAG) == 0 || strcmp(c, PROTO_NOTE) == 0;
}

/* ---- experiments, tags, --after ------------------------------------------------ */

int sweep_meta_check(struct broker *b, struct proto_msg *m, char *err, size_t errlen,
                     const char **code)
{
    *code = "bad_request";
    json_t *exp = json_object_get(m->body, "experiment");
    if (exp && !json_is_null(exp) &&
        (!json_is_string(exp) || json_string_length(exp) == 0 ||
         json_string_length(exp) >= STORE_NAME_MAX)) {
        snprintf(err, errlen, "\"experiment\" is a name of 1 to %d bytes", STORE_NAME_MAX - 1);
        return -EINVAL;
    }
    json_t *tags = json_object_get(m->body, "tags");
    if (tags && !json_is_null(tags)) {
        if (!json_is_object(tags) || json_object_size(tags) > SUBMIT_MAX_TAGS) {
            snprintf(err, errlen, "\"tags\" is an object of at most %d KEY: \"VALUE\" pairs",
                     SUBMIT_MAX_TAGS);
            return -EINVAL;
        }
        const char *k;
        json_t *v;
        json_object_foreach(tags, k, v)
        {
            if (!json_is_string(v) || !k[0] || strlen(k) > STORE_TAG_MAX ||
                json_string_length(v) > STORE_TAG_MAX) {
                snprintf(err, errlen, "tag %.64s: a key of 1 to %d bytes and a string value", k,
                         STORE_TAG_MAX);
                return -EINVAL;
            }
        }
    }
    json_t *after = json_object_get(m->body, "after");
    if (after && !json_is_null(after)) {
        if (!json_is_array(after) || json_array_size(after) > SUBMIT_MAX_AFTER) {
            snprintf(err, errlen, "\"after\" is a list of at most %d job ids", SUBMIT_MAX_AFTER);
            return -EINVAL;
        }
        size_t i;
        json_t *v;
        json_array_foreach(after, i, v)
        {
            struct store_job j;
            if (!json_is_integer(v) || json_integer_value(v) < 1) {
                snprintf(err, errlen, "\"after\": job ids are positive integers");
                return -EINVAL;
            }
            int rc = store_job_get(b->store, json_integer_value(v), &j);
            if (rc == 0 && !may_see_owner(b, j.owner)) rc = -ENOENT;
            if (rc == 0) store_job_free(&j);
            if (rc == -ENOENT) {
                /* A usage error at the cli (exit 2): nothing was queued. */
                *code = "bad_request";
                snprintf(err, errlen, "--after %lld: no such job",
                         (long long)json_integer_value(v));
                return rc;
            }
            if (rc) {
                *code = "store";
                snprintf(err, errlen, "--after: %s", store_errmsg(b->store));
                return rc;
            }
        }
    }
    return 0;
}

const char *sweep_meta_experiment(const struct proto_msg *m)
{
    return json_string_value(json_object_get(m->body, "experiment"));
}

int sweep_meta_apply(struct broker *b, const struct proto_msg *m, int64_t job)
{
    json_t *tags = json_object_get(m->body, "tags");
    const char *k;
    json_t *v;
    int rc = 0;
    if (json_is_object(tags)) json_object_foreach(tags, k, v)
        {
            if (!rc) rc = store_tag_set(b->store, job, k, json_string_value(v));
        }
    json_t *after = json_object_get(m->body, "after");
    size_t i;
    if (json_is_array(after)) json_array_foreach(after, i, v)
        {
            if (!rc) rc = store_dep_add(b->store, job, json_integer_value(v));
        }
    return rc;
}

/* A run the sender may see (its own, or any for an admin); otherwise the
 * answer is sent (not_found, as for a run that does not exist) and -1. */
static int check_run_visible(struct broker *b, const struct proto_msg *m, int64_t id)
{
    struct store_job j;
    int rc = store_job_get(b->store, id, &j);
    if (rc == 0 && !may_see_owner(b, j.owner)) rc = -ENOENT;
    if (rc == 0) store_job_free(&j);
    if (!rc) return 0;
    broker_reply_error(b, m, rc == -ENOENT ? "not_found" : "store", "run %lld: %s", (long long)id,
                       rc == -ENOENT ? "no such run" : store_errmsg(b->store));
    return -1;
}

static void on_tag(struct broker *b, struct proto_msg *m)
{
    int64_t id;
    char err[256];
    json_t *tags = json_object_get(m->body, "tags");
    if (proto_get_int(m->body, "id", &id, err, sizeof err) != 0 || !json_is_object(tags) ||
        json_object_size(tags) == 0) {
        broker_reply_error(b, m, "bad_request", "TAG needs \"id\" and a \"tags\" object");
        return;
    }
    const char *code;
    if (sweep_meta_check(b, m, err, sizeof err, &code) != 0) {
        broker_reply_error(b, m, code, "%s", err);
        return;
    }
    if (check_run_visible(b, m, id)) return;
    if (broker_write(b)) return;
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(tags, k, v)
    {
        if (!rc) rc = store_tag_set(b->store, id, k, json_string_value(v));
    }
    if (rc) {
        broker_store_failed(b, "tag");
        return;
    }
    broker_reply(b, m->ident, m->ident_len, PROTO_OK,
                 json_pack("{s:I, s:O}", "id", (json_int_t)id, "tags", tags), NULL, 0);
}

static void on_note(struct broker *b, struct proto_msg *m)
{
    int64_t id;
    const char *text;
    char err[256];
    if (proto_get_int(m->body, "id", &id, err, sizeof err) != 0 ||
        proto_get_str(m->body, "text", &text, err, sizeof err) != 0 || !text[0] ||
        strlen(text) > 4096) {
        broker_reply_error(b, m, "bad_request",
                           "NOTE needs \"id\" and a \"text\" of 1 to 4096 bytes");
        return;
    }
    if (check_run_visible(b, m, id)) return;
    if (broker_write(b)) return;
    if (store_note_add(b->store, id, text) != 0) {
        broker_store_failed(b, "note");
        return;
    }
    broker_reply(b, m->ident, m->ident_len, PROTO_OK, json_pack("{s:I}", "id", (json_int_t)id),
                 NULL, 0);
}

/* ---- SWEEP ----------------------------------------------------------------------- */

struct expanded {
    struct store_new_trial *trials;
    char **texts; /* spec and params texts, two per trial */
    char **names;
    size_t n;
    int max_epochs;
};

static void expanded_free(struct expanded *e)
{
    for (size_t i = 0; i < 2 * e->n; i++)
        free(e->texts[i]);
    for (size_t i = 0; i < e->n; i++)
        free(e->names[i]);
    free(e->texts);
    free(e->names);
    free(e->trials);
    memset(e, 0, sizeof *e);
}

/* A trial whose space gave its dataset (or validation) another name means
 * that name's bytes, not the hash the base spec's name resolved to. */
static void forget_renamed_hashes(const json_t *base, json_t *doc)
{
    static const char *const fields[] = {"dataset", "input", "validation"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        json_t *td = json_object_get(doc, fields[i]);
        const char *tn = json_string_value(json_object_get(td, "name"));
        const char *bn =
            json_string_value(json_object_get(json_object_get(base, fields[i]), "name"));
        if (tn && (!bn || strcmp(tn, bn) != 0)) json_object_del(td, "sha256");
    }
}

/* Every trial's spec, validated as a SUBMIT's would be. */
static int expand(struct broker *b, const struct space *sp, const struct sweep_opts *o,
                  const json_t *base, size_t n, struct expanded *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    e->trials = calloc(n, sizeof *e->trials);
    e->texts = calloc(2 * n, sizeof *e->texts);
    e->names = calloc(n, sizeof *e->names);
    if (!e->trials || !e->texts || !e->names) {
        snprintf(err, errlen, "out of memory for %zu trials", n);
        return -ENOMEM;
    }
    e->n = n;
    for (size_t i = 0; i < n; i++) {
        json_t *doc, *params;
        int rc = space_trial(sp, o, base, i, &doc, &params, err, errlen);
        if (rc) return rc;
        struct mlq_spec spec;
        char why[768];
        /* A space may vary dataset.name: each trial's resolved on its own. */
        forget_renamed_hashes(base, doc);
        rc = datasets_resolve_spec(b, doc, why, sizeof why);
        if (rc && rc != -EINVAL) {
            snprintf(err, errlen, "%s", why);
            json_decref(doc);
            json_decref(params);
            return -ENOMEM; /* answered as a store error */
        }
        if (!rc) rc = spec_from_json(doc, &spec, why, sizeof why);
        if (!rc) rc = spec_model_check(&spec, NULL, spec.batch_size, NULL, NULL, why, sizeof why);
        if (!rc) rc = sweep_check_trial(o, &spec, why, sizeof why);
        char *ptext = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(doc);
        json_decref(params);
        if (rc) {
            snprintf(err, errlen, "trial %zu (%.200s): %s", i, ptext ? ptext : "?", why);
            free(ptext);
            return -EINVAL;
        }
        json_t *canon = spec_to_json(&spec);
        e->texts[2 * i] = canon ? json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(canon);
        e->texts[2 * i + 1] = ptext;
        char name[STORE_NAME_MAX];
        snprintf(name, sizeof name, "%.100s%strial %zu", o->name, o->name[0] ? " " : "", i);
        e->names[i] = strdup(name);
        if (!e->texts[2 * i] || !ptext || !e->names[i]) {
            snprintf(err, errlen, "out of memory expanding trial %zu", i);
            return -ENOMEM;
        }
        e->trials[i] = (struct store_new_trial){.spec_json = e->texts[2 * i],
                                                .params_json = ptext,
                                                .priority = spec.priority,
                                                .max_attempts = spec.max_attempts,
                                                .name = e->names[i]};
        if (spec.epochs > e->max_epochs) e->max_epochs = spec.epochs;
    }
    return 0;
}

static void on_sweep(struct broker *b, struct proto_msg *m)
{
    json_t *doc = json_object_get(m->body, "spec");
    json_t *space_doc = json_object_get(m->body, "space");
    json_t *opts_doc = json_object_get(m->body, "sweep");
    if (!json_is_object(doc) || !json_is_object(space_doc)) {
        broker_reply_error(b, m, "bad_request", "SWEEP needs a \"spec\" and a \"space\" object");
        return;
    }
    char err[1024];
    const char *code;
    if (sweep_meta_check(b, m, err, sizeof err, &code) != 0) {
        broker_reply_error(b, m, code, "%s", err);
        return;
    }
    const char *request_id;
    if (broker_request_id(b, m, &request_id)) return;
    struct mlq_spec base;
    struct sweep_opts o;
    struct space sp = {0};
    struct expanded e = {0};
    json_t *canon = NULL;
    char *spec_text = NULL, *space_text = NULL;
    sweep_opts_defaults(&o);
    int drc = datasets_resolve_spec(b, doc, err, sizeof err);
    if (drc) {
        broker_reply_error(b, m, drc == -EINVAL ? "bad_spec" : "store", "%s", err);
        return;
    }
    if (spec_from_json(doc, &base, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_spec", "bad spec: %s", err);
        return;
    }
    if (opts_doc && sweep_opts_from_json(opts_doc, &o, err, sizeof err) != 0) {
        broker_reply_error(b, m, "bad_spec", "%s", err);
        return;
    }
    canon = spec_to_json(&base);
    size_t n = 0;
    uint64_t max_trials =
        b->opts.sweep_max_trials > 0 ? (uint64_t)b->opts.sweep_max_trials : SPACE_MAX_TRIALS;
    int rc = canon ? space_parse(space_doc, canon, &sp, err, sizeof err) : -ENOMEM;
    if (!rc) rc = space_trial_count(&sp, &o, max_trials, &n, err, sizeof err);
    if (!rc) rc = expand(b, &sp, &o, canon, n, &e, err, sizeof err);
    if (rc) {
        broker_reply_error(b, m, rc == -ENOMEM ? "store" : "bad_spec", "%s", err);
        goto out;
    }
    if (b->stopping) {
        broker_reply_error(b, m, "stopping", "the broker is stopping");
        goto out;
    }
    spec_text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
    space_text = json_dumps(space_doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!spec_text || !space_text) {
        broker_reply_error(b, m, "store", "out of memory");
        goto out;
    }
    struct store_sweep sw = {
        .experiment = (char *)sweep_meta_experiment(m),
        .owner = b->who ? (char *)b->who->name : NULL,
        .spec_json = spec_text,
        .space_json = space_text,
        .seed = o.seed,
        .max_parallel = o.max_parallel,
        .scheduler = o.scheduler == SWEEP_ASHA     ? STORE_SCHED_ASHA
                     : o.scheduler == SWEEP_MEDIAN ? STORE_SCHED_MEDIAN
                                                   : STORE_SCHED_NONE,
        .mode_max = o.mode_max,
        .max_t = o.max_t > 0 ? o.max_t : e.max_epochs,
        .grace_period = o.grace_period,
        .reduction_factor = o.reduction_factor,
        .min_samples = o.min_samples,
    };
    snprintf(sw.name, sizeof sw.name, "%s", o.name);
    snprintf(sw.metric, sizeof sw.metric, "%s", o.metric);
    if (broker_write(b)) goto out;
    int64_t id;
    bool existed = false;
    rc = store_sweep_create(b->store, &sw, e.trials, e.n, request_id, &id, &existed);
    if (rc == -EEXIST) {
        broker_reply_error(b, m, "conflict", "%s", store_errmsg(b->store));
        goto out;
    }
    if (rc) {
        broker_reply_error(b, m, "store", "cannot queue the sweep: %s", store_errmsg(b->store));
        goto out;
    }
    if (!existed && json_is_object(json_object_get(m->body, "tags"))) {
        int64_t *ids = NULL;
        size_t nids = 0;
        rc = store_sweep_live_jobs(b->store, id, &ids, &nids);
        for (size_t i = 0; rc == 0 && i < nids; i++)
            rc = sweep_meta_apply(b, m, ids[i]);
        free(ids);
        if (rc) {
            broker_store_failed(b, "sweep tags");
            goto out;
        }
    }
    log_info("sweep %lld %s: %zu trials, scheduler %s on %s (%s)", (long long)id,
             existed ? "repeated" : "queued", e.n, sweep_sched_name(o.scheduler), o.metric,
             o.mode_max ? "max" : "min");
    if (existed)
        broker_reply_textf(b, m->ident, m->ident_len, PROTO_OK, NULL, 0,
                           "{\"id\":%lld,\"trials\":%zu,\"existed\":true}", (long long)id, e.n);
    else
        broker_reply_textf(b, m->ident, m->ident_len, PROTO_OK, NULL, 0,
                           "{\"id\":%lld,\"trials\":%zu}", (long long)id, e.n);
out:
    free(spec_text);
    free(space_text);
    json_decref(canon);
    space_free(&sp);
    expanded_free(&e);
}

/* CANCEL {"sweep": ID}: the sweep and every trial not yet ended. */
static void on_cancel_sweep(struct broker *b, struct proto_msg *m, int64_t id)
{
    struct store_sweep sw;
    int rc = store_sweep_get(b->store, id, &sw);
    if (rc == 0 && !may_see_owner(b, sw.owner)) {
        store_sweep_free(&sw);
        rc = -ENOENT;
    }
    if (rc) {
        broker_reply_error(b, m, rc == -ENOENT ? "not_found" : "store", "sweep %lld: %s",
                           (long long)id, rc == -ENOENT ? "no such sweep" : store_errmsg(b->store));
        return;
    }
    store_sweep_free(&sw);
    if (broker_write(b)) return;
    int64_t *ids = NULL;
    size_t n = 0;
    size_t cancelled = 0, cancelling = 0;
    rc = store_sweep_set_cancelled(b->store, id);
    if (!rc) rc = store_sweep_live_jobs(b->store, id, &ids, &n);
    char why[128];
    snprintf(why, sizeof why, "sweep %lld cancelled", (long long)id);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct store_job j;
        if ((rc = store_job_get(b->store, ids[i], &j)) != 0) break;
        struct trainer *t = j.state == STORE_RUNNING ? trainers_find_job(b, ids[i]) : NULL;
        if (t) {
            rc = store_job_request_cancel(b->store, ids[i]);
            broker_reply(b, t->ident, t->ident_len, PROTO_CANCEL,
                         json_pack("{s:I}", "job", (json_int_t)ids[i]), NULL, 0);
            t->cancel_sent = true;
            t->cancel_at = broker_mono();
            cancelling++;
        } else {
            dispatch_take_orphan(b, ids[i]);
            rc = store_job_set_cancelled(b->store, ids[i], why);
            cancelled++;
        }
        store_job_free(&j);
    }
    free(ids);
    if (rc) {
        broker_store_failed(b, "cancel sweep");
        return;
    }
    log_info("sweep %lld cancelled: %zu trials cancelled, %zu cancelling", (long long)id, cancelled,
             cancelling);
    broker_reply(b, m->ident, m->ident_len, PROTO_OK,
                 json_pack("{s:I, s:s, s:I, s:I}", "sweep", (json_int_t)id, "state", "cancelled",
                           "cancelled", (json_int_t)cancelled, "cancelling",
                           (json_int_t)cancelling),
                 NULL, 0);
}

bool sweep_handle_cancel(struct broker *b, struct proto_msg *m)
{
    json_t *v = json_object_get(m->body, "sweep");
    if (!v) return false;
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        broker_reply_error(b, m, "bad_request", "CANCEL: \"sweep\" is a sweep id");
        return true;
    }
    on_cancel_sweep(b, m, json_integer_value(v));
    return true;
}

bool sweep_dispatch(struct broker *b, struct proto_msg *m)
{
    if (strcmp(m->cmd, PROTO_SWEEP) == 0)
        on_sweep(b, m);
    else if (strcmp(m->cmd, PROTO_TAG) == 0)
        on_tag(b, m);
    else if (strcmp(m->cmd, PROTO_NOTE) == 0)
        on_note(b, m);
    else
        return false;
    return true;
}

#define QUEUE_SWEEPS_MAX 32 /* the newest sweeps QUEUE looks at */

json_t *sweep_queue_json(struct broker *b)
{
    json_t *a = json_array();
    struct store_sweep *v = NULL;
    size_t n = 0;
    if (store_sweeps_list(b->store, QUEUE_SWEEPS_MAX, &v, &n) != 0) return a;
    for (size_t i = 0; i < n; i++) {
        const struct store_sweep *sw = &v[i];
        if (!sw->counts[STORE_QUEUED] && !sw->counts[STORE_RUNNING]) continue;
        if (!may_see_owner(b, sw->owner)) continue;
        json_t *c = json_object();
        for (int k = 0; k < STORE_N_STATES; k++)
            json_object_set_new(c, store_state_name((enum store_state)k),
                                json_integer(sw->counts[k]));
        json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s, s:i, s:o}", "id",
                                           (json_int_t)sw->id, "name", sw->name, "scheduler",
                                           store_sched_name(sw->scheduler), "metric", sw->metric,
                                           "trials", sw->n_trials, "counts", c));
    }
    store_sweeps_free(&v, n);
    return a;
}

/* ---- the schedulers ------------------------------------------------------------------ */

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile's linear interpolation over the finite values (its
 * nanpercentile, as Ray Tune's ASHA uses); NAN when there are none. */
static double percentile(double *v, size_t n, double p)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) v[k++] = v[i];
    if (!k) return NAN;
    qsort(v, k, sizeof *v, dbl_cmp);
    double pos = p / 100.0 * (double)(k - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < k ? lo + 1 : lo;
    return v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
}

/* Whether value is worse than ref for the sweep's mode (NAN is the worst). */
static bool worse(const struct store_sweep *sw, double value, double ref)
{
    if (!isfinite(value)) return true;
    return sw->mode_max ? value < ref : value > ref;
}

/* The decision at this rung: the recorded one when there is one (a replayed
 * epoch, a restart), else a new one made from the other trials' results. */
static int decide(struct broker *b, const struct store_sweep *sw, int trial, int rung,
                  int64_t epoch, double value, struct store_decision *d, char *why, size_t len)
{
    int rc = store_decision_get(b->store, sw->id, rung, trial, d);
    if (rc == 0) {
        snprintf(why, len, "stopped by %s at epoch %lld (decided before)",
                 store_sched_name(sw->scheduler), (long long)d->epoch);
        return 0;
    }
    if (rc != -ENOENT) return rc;
    double *vals = NULL;
    size_t n = 0;
    if ((rc = store_rung_values(b->store, sw->id, rung, trial, &vals, &n)) != 0) return rc;
    *d = (struct store_decision){
        .rung = rung, .epoch = epoch, .trial = trial, .has_value = isfinite(value), .value = value};
    size_t finite = 0;
    for (size_t i = 0; i < n; i++)
        finite += isfinite(vals[i]) != 0;
    if (sw->scheduler == STORE_SCHED_ASHA) {
        /* Ray Tune's _Bracket.on_result: the cutoff is the 1 - 1/rf quantile
           of the rewards recorded so far at this rung, others only; the
           first trial at a rung always goes on. */
        double q = 100.0 / sw->reduction_factor;
        double cutoff = percentile(vals, n, sw->mode_max ? 100.0 - q : q);
        if (finite > 0 && worse(sw, value, cutoff)) {
            d->stop = true;
            snprintf(why, len,
                     "stopped by asha at rung %d (epoch %lld): %s %.6g is not in the top 1/%d of "
                     "the %zu results recorded at this rung (cutoff %.6g)",
                     rung, (long long)epoch, sw->metric, value, sw->reduction_factor, finite,
                     cutoff);
        }
    } else {
        /* The median rule: worse than the median of the others at this
           epoch, once min_samples others have reported it. */
        double median = percentile(vals, n, 50.0);
        if (finite >= (size_t)sw->min_samples && worse(sw, value, median)) {
            d->stop = true;
            snprintf(why, len,
                     "stopped by the median rule at epoch %lld: %s %.6g is worse than the "
                     "median %.6g of %zu other trials",
                     (long long)epoch, sw->metric, value, median, finite);
        }
    }
    free(vals);
    return store_decision_put(b->store, sw->id, d);
}

/* The ASHA rung of an epoch: k when epoch = grace * rf^k below max_t, else -1. */
static int asha_rung(const struct store_sweep *sw, int64_t epoch)
{
    int64_t milestone = sw->grace_period;
    for (int k = 0; milestone < sw->max_t && k < 64; k++) {
        if (milestone == epoch) return k;
        if (milestone > epoch || milestone > INT64_MAX / sw->reduction_factor) break;
        milestone *= sw->reduction_factor;
    }
    return -1;
}

void sweep_on_metrics(struct broker *b, struct trainer *t, int64_t job, int64_t epoch,
                      const json_t *values)
{
    struct store_job j;
    if (store_job_get(b->store, job, &j) != 0) return;
    bool skip = !j.sweep || j.cancel_requested || j.state != STORE_RUNNING;
    int64_t sweep_id = j.sweep;
    store_job_free(&j);
    if (skip) return;
    struct store_sweep sw;
    if (store_sweep_get(b->store, sweep_id, &sw) != 0) return;
    int64_t sweep_of = 0;
    int trial = 0;
    int rung = -1;
    if (sw.scheduler == STORE_SCHED_ASHA)
        rung = asha_rung(&sw, epoch);
    else if (sw.scheduler == STORE_SCHED_MEDIAN && epoch >= sw.grace_period && epoch < sw.max_t)
        rung = (int)epoch;
    if (rung < 0 || sw.cancelled || store_trial_of_job(b->store, job, &sweep_of, &trial) != 0)
        goto out;
    json_t *v = json_object_get(values, sw.metric);
    double value = json_is_number(v) ? json_number_value(v) : NAN;
    struct store_decision d;
    char why[512] = "";
    if (broker_write(b)) goto out;
    int rc = decide(b, &sw, trial, rung, epoch, value, &d, why, sizeof why);
    if (rc) {
        broker_store_failed(b, "sweep decision");
        goto out;
    }
    if (!d.stop) goto out;
    if (store_job_request_stop(b->store, job, why) != 0) {
        broker_store_failed(b, "stop trial");
        goto out;
    }
    log_info("sweep %lld trial %d (job %lld): %s", (long long)sw.id, trial, (long long)job, why);
    broker_reply(b, t->ident, t->ident_len, PROTO_CANCEL,
                 json_pack("{s:I}", "job", (json_int_t)job), NULL, 0);
    t->cancel_sent = true;
    t->cancel_at = broker_mono();
out:
    store_sweep_free(&sw);
}

double sweep_tick(struct broker *b, double now)
{
    if (now < b->deps_next) return b->deps_next;
    b->deps_next = now + DEPS_CHECK_S;
    size_t n = 0;
    /* Inside the pass's transaction (one that writes nothing commits nothing). */
    if (broker_write(b) == 0) {
        if (store_deps_fail_broken(b->store, &n) != 0)
            broker_store_failed(b, "dependencies");
        else if (n)
            log_info("%zu queued job%s failed: a job %s runs --after did not succeed", n,
                     n == 1 ? "" : "s", n == 1 ? "it" : "they");
    }
    return b->deps_next;
}
