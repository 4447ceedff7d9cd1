/* The trainer registry: who is connected, what each runs, who went silent. */
#include "broker_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct trainer *trainers_find(struct broker *b, const unsigned char *ident, size_t len)
{
    for (size_t i = 0; i < b->n_trainers; i++)
        if (b->trainers[i].ident_len == len && memcmp(b->trainers[i].ident, ident, len) == 0)
            return &b->trainers[i];
    return NULL;
}

struct trainer *trainers_find_name(struct broker *b, const char *name)
{
    for (size_t i = 0; i < b->n_trainers; i++)
        if (strcmp(b->trainers[i].name, name) == 0) return &b->trainers[i];
    return NULL;
}

struct trainer *trainers_find_job(struct broker *b, int64_t job)
{
    for (size_t i = 0; i < b->n_trainers; i++)
        if (b->trainers[i].job == job) return &b->trainers[i];
    return NULL;
}

struct trainer *trainers_add(struct broker *b, const unsigned char *ident, size_t len)
{
    if (b->n_trainers == b->cap_trainers) {
        size_t cap = b->cap_trainers ? 2 * b->cap_trainers : 16;
        struct trainer *t = realloc(b->trainers, cap * sizeof *t);
        if (!t) return NULL;
        b->trainers = t;
        b->cap_trainers = cap;
    }
    struct trainer *t = &b->trainers[b->n_trainers++];
    memset(t, 0, sizeof *t);
    memcpy(t->ident, ident, len);
    t->ident_len = len;
    t->last_seen = t->last_sent = broker_mono();
    return t;
}

/* Pointers into the array are invalidated: callers use none afterwards. */
void trainers_remove(struct broker *b, struct trainer *t)
{
    serve_trainer_removed(b, t);
    free(t->capabilities);
    size_t i = (size_t)(t - b->trainers);
    b->trainers[i] = b->trainers[--b->n_trainers];
}

void trainers_save(struct broker *b, const struct trainer *t, const char *state)
{
    if (broker_write(b)) return;
    struct store_trainer st = {0};
    snprintf(st.name, sizeof st.name, "%s", t->name);
    snprintf(st.host, sizeof st.host, "%s", t->host);
    snprintf(st.state, sizeof st.state, "%s", state);
    snprintf(st.version, sizeof st.version, "%s", t->version);
    st.job = t->job;
    st.last_heartbeat = store_now(b->store);
    st.capabilities = t->capabilities;
    if (store_trainer_upsert(b->store, &st) != 0) broker_store_failed(b, "trainer upsert");
}

double trainers_tick(struct broker *b, double now)
{
    double next = now + b->interval;
    for (size_t i = 0; i < b->n_trainers;) {
        struct trainer *t = &b->trainers[i];
        if (now - t->last_seen > b->expiry) {
            char reason[512];
            snprintf(reason, sizeof reason, "trainer %s went silent (no heartbeat for %.1f s)",
                     t->name, now - t->last_seen);
            log_warn("%s%s", reason, t->job ? "; its job goes back to the queue" : "");
            if (t->job) dispatch_lost(b, t->job, reason);
            t->job = 0;
            trainers_save(b, t, "gone");
            trainers_remove(b, t);
            continue; /* the last one moved into slot i */
        }
        /* A CANCEL the ROUTER dropped (a full or reconnected peer) would
         * leave the job running to its end: repeat it until the DONE. */
        if (t->job && t->cancel_sent && now - t->cancel_at >= b->expiry) {
            broker_reply(b, t->ident, t->ident_len, PROTO_CANCEL,
                         json_pack("{s:I}", "job", (json_int_t)t->job), NULL, 0);
            t->cancel_at = now;
        }
        if (now - t->last_sent >= b->interval)
            broker_reply(b, t->ident, t->ident_len, PROTO_HEARTBEAT, json_object(), NULL, 0);
        double d = t->last_sent + b->interval;
        if (d < next) next = d;
        d = t->last_seen + b->expiry;
        if (d < next) next = d;
        i++;
    }
    return next;
}

void trainers_free(struct broker *b)
{
    for (size_t i = 0; i < b->n_trainers; i++)
        free(b->trainers[i].capabilities);
    free(b->trainers);
    b->trainers = NULL;
    b->n_trainers = b->cap_trainers = 0;
}
