/* mlq show: one run's spec, state, timings, final metrics, checkpoints,
 * result, events and error, for people or as --json (docs/history.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "render.h"
#include "store.h"

static int event_to_json(void *ctx, const struct store_event *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "time", json_real(e->time));
    json_object_set_new(o, "level", json_string(e->level ? e->level : ""));
    json_object_set_new(o, "message", json_string(e->message ? e->message : ""));
    json_array_append_new(ctx, o);
    return 0;
}

static void show_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq show ID [--db FILE] [--json]\n\n"
            "A run's spec, state, attempts, trainer, timings, final metrics, checkpoints,\n"
            "result (eval, predict), events and error.\n\n%s",
            history_common_help);
}

int cmd_show(int argc, char **argv)
{
    const struct history_cmd cmd = {.name = "show", .usage = show_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    struct store *s;
    rc = history_open("show", co.db, false, &s);
    if (rc != EXIT_OK) return rc;

    struct store_job j = {0};
    struct store_metric *m = NULL;
    struct store_checkpoint *ck = NULL;
    size_t nm = 0, nck = 0;
    json_t *events = json_array();
    struct store_param *tags = NULL;
    size_t ntags = 0;
    int64_t *after = NULL;
    size_t nafter = 0;
    rc = history_job_get("show", s, id, &j);
    if (rc != EXIT_OK) goto out;
    int ret = store_metrics_final(s, id, &m, &nm);
    if (ret == 0) ret = store_checkpoints_list(s, id, &ck, &nck);
    if (ret == 0) ret = store_events_foreach(s, id, event_to_json, events);
    if (ret != 0) {
        fprintf(stderr, "mlq show: %s\n", store_errmsg(s));
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    /* Which checkpoint "best" picks: the lowest metric, latest on ties. */
    int64_t best = 0;
    double best_v = INFINITY;
    for (size_t i = 0; i < nck; i++)
        if (ck[i].has_metric && ck[i].metric <= best_v) {
            best_v = ck[i].metric;
            best = ck[i].id;
        }
    /* Issue 12's grouping: tags and --after jobs (errors read as none). */
    if (store_tags_list(s, id, &tags, &ntags) != 0) ntags = 0;
    if (store_deps_list(s, id, &after, &nafter) != 0) nafter = 0;
    double now = store_now(s);
    json_t *spec = j.spec_json ? json_loads(j.spec_json, 0, NULL) : NULL;
    json_t *result = j.result_json ? json_loads(j.result_json, 0, NULL) : NULL;

    if (co.json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(j.id));
        json_object_set_new(o, "kind", json_string(spec_kind_name(j.kind)));
        json_object_set_new(o, "state", json_string(store_state_name(j.state)));
        json_object_set_new(o, "name", json_string(j.name));
        json_object_set_new(o, "priority", json_integer(j.priority));
        json_object_set_new(o, "attempts", json_integer(j.attempts));
        json_object_set_new(o, "max_attempts", json_integer(j.max_attempts));
        json_object_set_new(o, "trainer", j.trainer[0] ? json_string(j.trainer) : json_null());
        json_object_set_new(o, "run", j.run ? json_integer(j.run) : json_null());
        json_object_set_new(o, "cancel_requested", json_boolean(j.cancel_requested));
        json_object_set_new(o, "submitted", history_json_time(j.submitted));
        json_object_set_new(o, "started", history_json_time(j.started));
        json_object_set_new(o, "finished", history_json_time(j.finished));
        double d = history_job_duration(&j, now);
        json_object_set_new(o, "duration", d >= 0 ? json_real(d) : json_null());
        json_object_set_new(o, "error", j.error ? json_string(j.error) : json_null());
        json_object_set_new(o, "request_id",
                            j.request_id ? json_string(j.request_id) : json_null());
        json_object_set_new(o, "sweep", j.sweep ? json_integer(j.sweep) : json_null());
        json_object_set_new(o, "experiment",
                            j.experiment ? json_string(j.experiment) : json_null());
        json_t *to = json_object();
        for (size_t i = 0; i < ntags; i++)
            json_object_set_new(to, tags[i].key, json_string(tags[i].value));
        json_object_set_new(o, "tags", to);
        json_t *aa = json_array();
        for (size_t i = 0; i < nafter; i++)
            json_array_append_new(aa, json_integer(after[i]));
        json_object_set_new(o, "after", aa);
        /* The bytes the run read (its trainer's DATASET), whatever named them. */
        json_object_set_new(o, "dataset_sha256",
                            j.dataset_sha256 ? json_string(j.dataset_sha256) : json_null());
        json_object_set_new(o, "spec", spec ? json_incref(spec) : json_null());
        char line[512];
        const char *ml = history_model_line(spec, line, sizeof line);
        json_object_set_new(o, "model", ml ? json_string(ml) : json_null());
        json_t *mo = json_object();
        for (size_t i = 0; i < nm; i++) {
            json_t *x = json_object();
            json_object_set_new(x, "value", history_json_num(m[i].value));
            json_object_set_new(x, "step", json_integer(m[i].step));
            json_object_set_new(x, "epoch", json_integer(m[i].epoch));
            json_object_set_new(mo, m[i].key, x);
        }
        json_object_set_new(o, "metrics", mo);
        json_t *ca = json_array();
        for (size_t i = 0; i < nck; i++) {
            json_t *x = json_object();
            json_object_set_new(x, "id", json_integer(ck[i].id));
            json_object_set_new(x, "epoch", json_integer(ck[i].epoch));
            json_object_set_new(x, "step", json_integer(ck[i].step));
            json_object_set_new(x, "size", json_integer((json_int_t)ck[i].size));
            json_object_set_new(x, "crc32", json_integer(ck[i].crc32));
            json_object_set_new(x, "metric",
                                ck[i].has_metric ? history_json_num(ck[i].metric) : json_null());
            json_object_set_new(x, "time", json_real(ck[i].time));
            json_object_set_new(x, "best", json_boolean(ck[i].id == best));
            json_object_set_new(x, "last", json_boolean(i == nck - 1));
            json_array_append_new(ca, x);
        }
        json_object_set_new(o, "checkpoints", ca);
        json_object_set_new(o, "result", result ? json_incref(result) : json_null());
        json_object_set_new(o, "events", json_incref(events));
        history_json_print(o);
    } else {
        char a[64], b[64];
        printf("run %lld  %s  %s%s%s\n", (long long)j.id, spec_kind_name(j.kind),
               store_state_name(j.state), j.name[0] ? "  " : "", j.name);
        history_fmt_time(a, sizeof a, j.submitted);
        history_fmt_ago(b, sizeof b, j.submitted, now);
        printf("  %-10s %s (%s)\n", "submitted", a, b);
        history_fmt_time(a, sizeof a, j.started);
        printf("  %-10s %s\n", "started", a);
        history_fmt_time(a, sizeof a, j.finished);
        printf("  %-10s %s\n", "finished", a);
        history_fmt_duration(a, sizeof a, history_job_duration(&j, now));
        printf("  %-10s %s\n", "duration", a);
        printf("  %-10s %d of %d\n", "attempts", j.attempts, j.max_attempts);
        printf("  %-10s %s\n", "priority",
               j.priority ? (snprintf(a, sizeof a, "%d", j.priority), a) : "0");
        printf("  %-10s %s\n", "trainer", j.trainer[0] ? j.trainer : "-");
        if (j.sweep) printf("  %-10s %lld\n", "sweep", (long long)j.sweep);
        if (j.experiment) printf("  %-10s %s\n", "experiment", j.experiment);
        for (size_t i = 0; i < ntags; i++)
            printf("  %-10s %s=%s\n", i ? "" : "tags", tags[i].key, tags[i].value);
        for (size_t i = 0; i < nafter; i++)
            printf("  %-10s %lld\n", i ? "" : "after", (long long)after[i]);
        char line[512];
        if (history_model_line(spec, line, sizeof line)) printf("  %-10s %s\n", "model", line);
        json_t *ds = json_object_get(spec, "dataset");
        const char *ds_name = json_string_value(json_object_get(ds, "name"));
        const char *ds_sha = json_string_value(json_object_get(ds, "sha256"));
        if (j.dataset_sha256)
            printf("  %-10s sha256 %s%s%s%s\n", "dataset", j.dataset_sha256, ds_name ? " (" : "",
                   ds_name ? ds_name : "", ds_name ? ")" : "");
        else if (ds_sha)
            printf("  %-10s sha256 %s%s%s%s, not read yet\n", "dataset", ds_sha,
                   ds_name ? " (" : "", ds_name ? ds_name : "", ds_name ? ")" : "");
        if (j.run) printf("  %-10s %lld\n", "of run", (long long)j.run);
        if (j.cancel_requested && j.state == STORE_RUNNING) printf("  %-10s requested\n", "cancel");
        if (j.error) printf("  %-10s %s\n", "error", j.error);
        if (nm) {
            printf("\nfinal metrics\n");
            for (size_t i = 0; i < nm; i++) {
                history_fmt_value(a, sizeof a, m[i].value);
                printf("  %-16s %12s  (epoch %lld, step %lld)\n", m[i].key, a,
                       (long long)m[i].epoch, (long long)m[i].step);
            }
        }
        if (nck) {
            printf("\ncheckpoints\n  %5s %10s %10s %12s  %s\n", "EPOCH", "STEP", "SIZE", "METRIC",
                   "SAVED");
            for (size_t i = 0; i < nck; i++) {
                history_fmt_ago(a, sizeof a, ck[i].time, now);
                if (ck[i].has_metric)
                    history_fmt_value(b, sizeof b, ck[i].metric);
                else
                    snprintf(b, sizeof b, "-");
                printf("  %5lld %10lld %10zu %12s  %s%s%s\n", (long long)ck[i].epoch,
                       (long long)ck[i].step, ck[i].size, b, a, ck[i].id == best ? "  best" : "",
                       i == nck - 1 ? "  last" : "");
            }
        }
        if (result) render_result(result);
        if (json_array_size(events)) {
            printf("\nevents\n");
            size_t i;
            json_t *e;
            json_array_foreach(events, i, e)
            {
                history_fmt_time(a, sizeof a, json_real_value(json_object_get(e, "time")));
                printf("  %s  %-5s %s\n", a, json_string_value(json_object_get(e, "level")),
                       json_string_value(json_object_get(e, "message")));
            }
        }
        if (spec) {
            char *text = json_dumps(spec, JSON_INDENT(2) | JSON_SORT_KEYS);
            printf("\nspec\n%s\n", text ? text : "");
            free(text);
        }
    }
    json_decref(spec);
    json_decref(result);

out:
    json_decref(events);
    store_metrics_free(m, nm);
    store_checkpoints_free(ck, nck);
    store_params_free(tags, ntags);
    free(after);
    store_job_free(&j);
    store_close(&s);
    return rc;
}
