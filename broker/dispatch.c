/* From the queue to the trainers, and back when a trainer is lost. */
#include "broker_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "spec.h"

int dispatch_recover(struct broker *b)
{
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = store_job_ids_by_state(b->store, STORE_RUNNING, &ids, &n);
    if (rc) return rc;
    if (n) {
        b->orphans = calloc(n, sizeof *b->orphans);
        if (!b->orphans) {
            free(ids);
            return -ENOMEM;
        }
    }
    /* Trainers notice the restart only after a liveness window of silence and
     * then reconnect with backoff (capped at one window): give them three. */
    double deadline = broker_mono() + 3 * b->expiry;
    for (size_t i = 0; i < n; i++)
        b->orphans[i] = (struct orphan){.job = ids[i], .deadline = deadline};
    b->n_orphans = n;
    if (n)
        log_info("%zu running job%s wait up to %.1f s for their trainers", n, n == 1 ? "" : "s",
                 3 * b->expiry);
    free(ids);
    return 0;
}

bool dispatch_take_orphan(struct broker *b, int64_t job)
{
    for (size_t i = 0; i < b->n_orphans; i++)
        if (b->orphans[i].job == job) {
            b->orphans[i] = b->orphans[--b->n_orphans];
            return true;
        }
    return false;
}

double dispatch_tick(struct broker *b, double now)
{
    double next = INFINITY;
    for (size_t i = 0; i < b->n_orphans;) {
        if (now >= b->orphans[i].deadline) {
            int64_t job = b->orphans[i].job;
            b->orphans[i] = b->orphans[--b->n_orphans];
            dispatch_lost(b, job, "its trainer did not re-announce it after a broker restart");
            continue;
        }
        if (b->orphans[i].deadline < next) next = b->orphans[i].deadline;
        i++;
    }
    return next;
}

void dispatch_lost(struct broker *b, int64_t id, const char *reason)
{
    struct store_job job;
    if (store_job_get(b->store, id, &job) != 0) return;
    if (job.state != STORE_RUNNING || broker_write(b)) goto out;
    int rc;
    if (job.cancel_requested) {
        rc = store_job_set_cancelled(b->store, id, reason);
    } else if (job.attempts >= job.max_attempts) {
        char why[1024];
        snprintf(why, sizeof why, "%s; gave up after %d attempt%s", reason, job.attempts,
                 job.attempts == 1 ? "" : "s");
        log_warn("job %lld failed: %s", (long long)id, why);
        rc = store_job_set_failed(b->store, id, why);
    } else {
        log_info("job %lld requeued (attempt %d of %d): %s", (long long)id, job.attempts,
                 job.max_attempts, reason);
        rc = store_job_requeue(b->store, id, reason);
    }
    if (rc) broker_store_failed(b, "lost job");
out:
    store_job_free(&job);
}

static struct trainer *idle_trainer(struct broker *b)
{
    struct trainer *best = NULL;
    for (size_t i = 0; i < b->n_trainers; i++) {
        struct trainer *t = &b->trainers[i];
        if (!t->job && !t->serve_dep && t->name[0] && (!best || t->last_seen < best->last_seen))
            best = t;
    }
    return best;
}

/* A train job's latest checkpoint whose stored bytes are still good. A
 * damaged blob (-EBADMSG) is bad data, not a failed store: the job goes back
 * to the newest good checkpoint before it, or starts over if there is none,
 * and says so in its events. -ENOENT: start from scratch. */
static int resume_checkpoint(struct broker *b, const struct store_job *job,
                             struct store_checkpoint *c)
{
    int rc = store_checkpoint_get(b->store, job->id, STORE_CKPT_LAST, 0, c);
    if (rc != -EBADMSG) return rc;
    char damaged[512];
    snprintf(damaged, sizeof damaged, "%s", store_errmsg(b->store));
    struct store_checkpoint *list = NULL;
    size_t n = 0;
    if ((rc = store_checkpoints_list(b->store, job->id, &list, &n)) != 0) return rc;
    rc = -ENOENT;
    for (size_t i = n; i-- > 0;) {
        rc = store_checkpoint_get(b->store, job->id, STORE_CKPT_EPOCH, list[i].epoch, c);
        if (rc != -EBADMSG) break;
        rc = -ENOENT; /* damaged too: try the one before */
    }
    store_checkpoints_free(list, n);
    if (rc && rc != -ENOENT) return rc;
    char msg[1024];
    if (rc == 0)
        snprintf(msg, sizeof msg, "damaged checkpoint skipped (%s): resuming from epoch %lld",
                 damaged, (long long)c->epoch);
    else
        snprintf(msg, sizeof msg,
                 "damaged checkpoint skipped (%s): no good one left, starting over", damaged);
    log_warn("job %lld: %s", (long long)job->id, msg);
    if (store_event_add(b->store, job->id, "warn", msg) != 0) return -EIO;
    return rc;
}

/* The checkpoint a job starts from: a train job's latest good one (resume),
 * an eval or predict job's chosen one of its run. -ENOENT: none (a fresh
 * train job). -EINVAL: the job cannot run (reason in err); any other error
 * is the store's. */
static int job_checkpoint(struct broker *b, const struct store_job *job, void **blob, size_t *len,
                          char *err, size_t errlen)
{
    struct store_checkpoint c = {0};
    int rc;
    if (job->kind == JOB_TRAIN) {
        if (job->attempts == 0) return -ENOENT; /* never ran: nothing to resume from */
        rc = resume_checkpoint(b, job, &c);
        if (rc && rc != -ENOENT)
            snprintf(err, errlen, "job %lld: %s", (long long)job->id, store_errmsg(b->store));
    } else {
        struct mlq_spec spec;
        if ((rc = spec_parse(job->spec_json, &spec, err, errlen)) != 0) return rc;
        enum store_ckpt_which which;
        int64_t epoch;
        if (store_ckpt_which_parse(spec.checkpoint, &which, &epoch) != 0) {
            snprintf(err, errlen, "checkpoint: \"%s\" is not last, best or an epoch",
                     spec.checkpoint);
            return -EINVAL;
        }
        rc = store_checkpoint_get(b->store, spec.run, which, epoch, &c);
        if (rc == -ENOENT)
            snprintf(err, errlen, "run %lld has no checkpoint %s", (long long)spec.run,
                     spec.checkpoint);
        else if (rc == -EBADMSG)
            snprintf(err, errlen,
                     "run %lld: checkpoint %s is damaged (%s); choose another with "
                     "\"checkpoint\"",
                     (long long)spec.run, spec.checkpoint, store_errmsg(b->store));
        else if (rc)
            snprintf(err, errlen, "run %lld: %s", (long long)spec.run, store_errmsg(b->store));
        if (rc == -ENOENT || rc == -EBADMSG) return -EINVAL; /* the job cannot run at all */
    }
    if (rc) return rc;
    *blob = c.blob;
    *len = c.size;
    c.blob = NULL;
    store_checkpoint_free(&c);
    return 0;
}

/* The JOB message: spec and the checkpoint to start from (blob, owned and
 * freed here). Every write of jobs.spec goes through the store, which keeps it
 * one compact JSON object, so it goes out as it is instead of through a parse
 * and a dump per job. */
static void send_job(struct broker *b, struct trainer *t, const struct store_job *job, int attempt,
                     void *blob, size_t len)
{
    if (job->spec_json && job->spec_json[0] == '{')
        broker_reply_textf(b, t->ident, t->ident_len, PROTO_JOB, blob, len,
                           "{\"job\":%lld,\"attempt\":%d,\"spec\":%s}", (long long)job->id, attempt,
                           job->spec_json);
    else
        broker_reply(b, t->ident, t->ident_len, PROTO_JOB,
                     json_pack("{s:I, s:i, s:o}", "job", (json_int_t)job->id, "attempt", attempt,
                               "spec", json_object()),
                     blob, len);
    t->dispatched = broker_mono();
}

/* How long a look that found nothing holds while the store does not change. */
#define DISPATCH_IDLE_S 1.0

void dispatch_run(struct broker *b)
{
    /* A queued job becomes startable only through a write of this broker
     * (a submit, a requeue, a dependency that succeeds, a sweep trial that
     * ends): with no write since a look that found nothing, the next look
     * finds nothing either. Serving makes thousands of passes a second
     * while a trainer stands idle; each would pay for the query. */
    double now = broker_mono();
    if (b->queue_idle && store_changes(b->store) == b->idle_changes && now < b->idle_until) return;
    b->queue_idle = false;
    struct trainer *t;
    while ((t = idle_trainer(b)) != NULL) {
        struct store_job job = {0};
        int rc = store_job_next_queued(b->store, &job);
        if (rc == -ENOENT) {
            b->queue_idle = true;
            b->idle_changes = store_changes(b->store);
            b->idle_until = now + DISPATCH_IDLE_S;
            return;
        }
        if (rc) {
            broker_store_failed(b, "next queued");
            return;
        }
        if (broker_write(b)) {
            store_job_free(&job);
            return;
        }
        void *blob = NULL;
        size_t len = 0;
        char err[1024] = "";
        rc = job_checkpoint(b, &job, &blob, &len, err, sizeof err);
        if (rc == -EINVAL) {
            log_warn("job %lld failed: %s", (long long)job.id, err);
            if (store_job_set_failed(b->store, job.id, err) != 0)
                broker_store_failed(b, "fail job");
            store_job_free(&job);
            if (b->store_error) return;
            continue;
        }
        if (rc && rc != -ENOENT) {
            log_error("%s", err);
            store_job_free(&job);
            broker_store_failed(b, "checkpoint get");
            return;
        }
        if (store_job_set_running(b->store, job.id, t->name) != 0) {
            free(blob);
            store_job_free(&job);
            broker_store_failed(b, "set running");
            return;
        }
        t->job = job.id;
        t->cancel_sent = false;
        log_info("job %lld (%s, attempt %d) to trainer %s%s", (long long)job.id,
                 spec_kind_name(job.kind), job.attempts + 1, t->name,
                 blob && job.kind == JOB_TRAIN ? ", resuming from its checkpoint" : "");
        send_job(b, t, &job, job.attempts + 1, blob, len);
        store_job_free(&job);
    }
}

void dispatch_resend(struct broker *b, struct trainer *t)
{
    struct store_job job = {0};
    if (store_job_get(b->store, t->job, &job) != 0) return;
    if (job.state != STORE_RUNNING) {
        store_job_free(&job);
        return;
    }
    if (job.cancel_requested) {
        /* Cancelled before the trainer ever had it: nothing to stop. */
        if (broker_write(b) == 0 &&
            store_job_set_cancelled(b->store, job.id, "cancelled before its trainer got it") != 0)
            broker_store_failed(b, "cancel");
        log_info("job %lld cancelled before trainer %s got it", (long long)job.id, t->name);
        t->job = 0;
        t->cancel_sent = false;
        store_job_free(&job);
        return;
    }
    void *blob = NULL;
    size_t len = 0;
    char err[1024] = "";
    if (broker_write(b)) goto out; /* a damaged checkpoint is recorded in the job's events */
    int rc = job_checkpoint(b, &job, &blob, &len, err, sizeof err);
    if (rc == 0 || rc == -ENOENT) {
        log_warn("trainer %s does not have job %lld: sending it again", t->name, (long long)job.id);
        send_job(b, t, &job, job.attempts, blob, len);
    } else if (rc == -EINVAL) {
        log_warn("job %lld failed: %s", (long long)job.id, err);
        if (store_job_set_failed(b->store, job.id, err) != 0) broker_store_failed(b, "fail job");
        t->job = 0;
    } else {
        log_error("%s", err);
        broker_store_failed(b, "checkpoint get");
    }
out:
    store_job_free(&job);
}
