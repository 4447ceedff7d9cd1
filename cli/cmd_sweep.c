/* mlq sweep: a search space over a spec, run as trials by the broker with
 * ASHA or the median rule (docs/sweeps.md); mlq sweep show/list/wait/rm
 * read (rm: write) the database; mlq tag and mlq note go through the broker. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "proto.h"
#include "space.h"
#include "spec.h"
#include "store.h"

static void sweep_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq sweep SPEC.json --space SPACE.json [--trials N] [--max-parallel K]\n"
            "                 [--scheduler asha|median|none] [--metric M] [--mode min|max]\n"
            "                 [--name NAME] [--seed N] [--max-t N] [--grace-period N]\n"
            "                 [--reduction-factor N] [--min-samples N] [--experiment NAME]\n"
            "                 [--tag KEY=VALUE]... [--request-id ID] [--wait] [--json]\n"
            "                 [--broker ENDPOINT] [--db FILE]\n"
            "       mlq sweep show ID [--db FILE] [--json | --csv]\n"
            "       mlq sweep list [--db FILE] [--json | --csv]\n"
            "       mlq sweep wait ID [--db FILE] [--json]\n"
            "       mlq sweep rm ID [--keep-runs] [--force] [--db FILE] [--json]\n\n"
            "Queues one train job per trial of SPACE (spec fields mapped to a list, or to\n"
            "{\"grid\"|\"choice\": [...]}, {\"uniform\"|\"loguniform\"|\"int\": [lo, hi]}); the\n"
            "broker stops bad trials early (ASHA: reduction factor 4, grace period 1; median:\n"
            "after the grace period, with 3 other trials). The spec file may hold \"space\" and\n"
            "\"sweep\" sections instead of the flags. --trials N draws N samples per grid point.\n"
            "Prints the sweep id. docs/sweeps.md.\n");
}

enum {
    O_SPACE = 1000,
    O_TRIALS,
    O_PAR,
    O_SCHED,
    O_METRIC,
    O_MODE,
    O_NAME,
    O_SEED,
    O_MAXT,
    O_GRACE,
    O_RF,
    O_MINS,
    O_EXP,
    O_TAG,
    O_RID,
    O_WAIT,
    O_JSON,
    O_BROKER,
    O_DB,
    O_HELP
};

static json_t *load_json(const char *path, const char *what)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        fprintf(stderr, "mlq sweep: %s %s:%d: %s\n", what, path, jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        fprintf(stderr, "mlq sweep: %s %s: must be a JSON object\n", what, path);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* An integer flag into the settings object. */
static int int_flag(json_t *opts, const char *key, const char *flag, const char *arg)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || *end || end == arg) {
        fprintf(stderr, "mlq sweep: --%s takes an integer, got '%s'\n", flag, arg);
        return -EINVAL;
    }
    json_object_set_new(opts, key, json_integer(v));
    return 0;
}

/* Everything the broker checks, checked here first: a bad space or trial is
 * exit 2 with nothing sent. */
static int check_locally(json_t *spec, json_t *space, json_t *opts_doc)
{
    char err[1024];
    struct sweep_opts o;
    sweep_opts_defaults(&o);
    if (sweep_opts_from_json(opts_doc, &o, err, sizeof err) != 0) {
        fprintf(stderr, "mlq sweep: %s\n", err);
        return EXIT_USAGE;
    }
    struct space sp;
    if (space_parse(space, spec, &sp, err, sizeof err) != 0) {
        fprintf(stderr, "mlq sweep: %s\n", err);
        return EXIT_USAGE;
    }
    size_t n = 0;
    int rc = space_trial_count(&sp, &o, SPACE_MAX_TRIALS_CAP, &n, err, sizeof err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *doc, *params;
        rc = space_trial(&sp, &o, spec, i, &doc, &params, err, sizeof err);
        if (rc) break;
        struct mlq_spec s;
        char why[768];
        rc = spec_from_json(doc, &s, why, sizeof why);
        if (!rc) rc = sweep_check_trial(&o, &s, why, sizeof why);
        if (rc) {
            char *p = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
            snprintf(err, sizeof err, "trial %zu (%.200s): %s", i, p ? p : "?", why);
            free(p);
        }
        json_decref(doc);
        json_decref(params);
    }
    space_free(&sp);
    if (rc) {
        fprintf(stderr, "mlq sweep: %s\n", err);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int sweep_wait(const char *db, int64_t id, bool json);

static int sweep_submit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"space", required_argument, NULL, O_SPACE},
        {"trials", required_argument, NULL, O_TRIALS},
        {"max-parallel", required_argument, NULL, O_PAR},
        {"scheduler", required_argument, NULL, O_SCHED},
        {"metric", required_argument, NULL, O_METRIC},
        {"mode", required_argument, NULL, O_MODE},
        {"name", required_argument, NULL, O_NAME},
        {"seed", required_argument, NULL, O_SEED},
        {"max-t", required_argument, NULL, O_MAXT},
        {"grace-period", required_argument, NULL, O_GRACE},
        {"reduction-factor", required_argument, NULL, O_RF},
        {"min-samples", required_argument, NULL, O_MINS},
        {"experiment", required_argument, NULL, O_EXP},
        {"tag", required_argument, NULL, O_TAG},
        {"request-id", required_argument, NULL, O_RID},
        {"wait", no_argument, NULL, O_WAIT},
        {"json", no_argument, NULL, O_JSON},
        {"broker", required_argument, NULL, O_BROKER},
        {"db", required_argument, NULL, O_DB},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *space_file = NULL, *broker = NULL, *request_id = NULL, *db = NULL;
    bool wait = false, json = false;
    json_t *flags = json_object(), *extra = json_object();
    int rc = EXIT_OK, c;
    optind = 1;
    while (rc == EXIT_OK && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_SPACE:
            space_file = optarg;
            break;
        case O_TRIALS:
            rc = int_flag(flags, "trials", "trials", optarg);
            break;
        case O_PAR:
            rc = int_flag(flags, "max_parallel", "max-parallel", optarg);
            break;
        case O_SEED:
            rc = int_flag(flags, "seed", "seed", optarg);
            break;
        case O_MAXT:
            rc = int_flag(flags, "max_t", "max-t", optarg);
            break;
        case O_GRACE:
            rc = int_flag(flags, "grace_period", "grace-period", optarg);
            break;
        case O_RF:
            rc = int_flag(flags, "reduction_factor", "reduction-factor", optarg);
            break;
        case O_MINS:
            rc = int_flag(flags, "min_samples", "min-samples", optarg);
            break;
        case O_SCHED:
            json_object_set_new(flags, "scheduler", json_string(optarg));
            break;
        case O_METRIC:
            json_object_set_new(flags, "metric", json_string(optarg));
            break;
        case O_MODE:
            json_object_set_new(flags, "mode", json_string(optarg));
            break;
        case O_NAME:
            json_object_set_new(flags, "name", json_string(optarg));
            break;
        case O_EXP:
            rc = cli_meta_option(extra, "mlq sweep", 'e', optarg);
            break;
        case O_TAG:
            rc = cli_meta_option(extra, "mlq sweep", 't', optarg);
            break;
        case O_RID:
            request_id = optarg;
            if (!request_id[0] || strlen(request_id) > PROTO_REQUEST_ID_MAX) {
                fprintf(stderr, "mlq sweep: --request-id takes 1 to %d characters\n",
                        PROTO_REQUEST_ID_MAX);
                rc = EXIT_USAGE;
            }
            break;
        case O_WAIT:
            wait = true;
            break;
        case O_JSON:
            json = true;
            break;
        case O_BROKER:
            broker = optarg;
            break;
        case O_DB:
            db = optarg;
            break;
        case O_HELP:
            sweep_usage(stdout);
            json_decref(flags);
            json_decref(extra);
            return EXIT_OK;
        default:
            rc = EXIT_USAGE;
        }
    }
    if (rc != EXIT_OK) {
        json_decref(flags);
        json_decref(extra);
        return EXIT_USAGE;
    }
    if (optind != argc - 1) {
        sweep_usage(stderr);
        json_decref(flags);
        json_decref(extra);
        return EXIT_USAGE;
    }
    json_t *doc = load_json(argv[optind], "spec");
    json_t *space = NULL, *opts = NULL;
    if (!doc) goto usage;
    /* A spec file's own "space" and "sweep" sections; flags and --space win. */
    space = json_incref(json_object_get(doc, "space"));
    opts = json_incref(json_object_get(doc, "sweep"));
    json_object_del(doc, "space");
    json_object_del(doc, "sweep");
    if (opts && !json_is_object(opts)) {
        fprintf(stderr, "mlq sweep: %s: \"sweep\" must be an object\n", argv[optind]);
        goto usage;
    }
    if (!opts) opts = json_object();
    json_object_update(opts, flags);
    if (space_file) {
        json_decref(space);
        space = load_json(space_file, "space");
        if (!space) goto usage;
    }
    if (!space) {
        fprintf(stderr, "mlq sweep: no search space: give --space FILE or a \"space\" section\n");
        goto usage;
    }
    json_t *spec = cli_finish_spec(doc);
    doc = NULL;
    if (!spec) goto usage;
    rc = check_locally(spec, space, opts);
    if (rc != EXIT_OK) {
        json_decref(spec);
        goto out;
    }
    char fresh[40];
    if (!request_id) {
        cli_new_request_id(fresh, sizeof fresh);
        request_id = fresh;
    }
    json_t *body = json_pack("{s:o, s:O, s:O, s:s}", "spec", spec, "space", space, "sweep", opts,
                             "request_id", request_id);
    json_object_update(body, extra);
    json_t *reply = NULL;
    const char *endpoint = cli_broker_endpoint(broker);
    rc = cli_broker_call_resend(endpoint, PROTO_SWEEP, body, &reply);
    if (rc != EXIT_OK) goto out;
    int64_t id = json_integer_value(json_object_get(reply, "id"));
    if (json && !wait)
        cli_print_json(reply);
    else if (!json) {
        printf("%lld\n", (long long)id);
        fprintf(stderr, "sweep %lld: %lld trials queued\n", (long long)id,
                (long long)json_integer_value(json_object_get(reply, "trials")));
    }
    fflush(stdout);
    json_decref(reply);
    if (wait) rc = sweep_wait(db, id, json);
    goto out;
usage:
    rc = EXIT_USAGE;
out:
    json_decref(doc);
    json_decref(space);
    json_decref(opts);
    json_decref(flags);
    json_decref(extra);
    return rc;
}

/* ---- show, list, wait -------------------------------------------------------------------- */

static json_t *sweep_json(const struct store_sweep *sw)
{
    json_t *counts = json_object();
    for (int i = 0; i < STORE_N_STATES; i++)
        json_object_set_new(counts, store_state_name((enum store_state)i),
                            json_integer(sw->counts[i]));
    json_t *space = sw->space_json ? json_loads(sw->space_json, 0, NULL) : NULL;
    return json_pack(
        "{s:I, s:s, s:s, s:o, s:o, s:o, s:I, s:i, s:i, s:s, s:s, s:s, s:i, s:i, "
        "s:i, s:i, s:o, s:o, s:o}",
        "id", (json_int_t)sw->id, "name", sw->name, "state", sw->state, "experiment",
        sw->experiment ? json_string(sw->experiment) : json_null(), "owner",
        sw->owner ? json_string(sw->owner) : json_null(), "space", space ? space : json_null(),
        "seed", (json_int_t)sw->seed, "trials", sw->n_trials, "max_parallel", sw->max_parallel,
        "scheduler", store_sched_name(sw->scheduler), "metric", sw->metric, "mode",
        sw->mode_max ? "max" : "min", "max_t", sw->max_t, "grace_period", sw->grace_period,
        "reduction_factor", sw->reduction_factor, "min_samples", sw->min_samples, "counts", counts,
        "submitted", history_json_time(sw->submitted), "finished", history_json_time(sw->finished));
}

/* "lr=0.001 name=adam": reals to 4 digits for people, exactly for --csv. */
static void params_cell(const char *params_json, bool exact, char *buf, size_t len)
{
    json_t *p = params_json ? json_loads(params_json, 0, NULL) : NULL;
    size_t o = 0;
    buf[0] = '\0';
    const char *k;
    json_t *v;
    if (json_is_object(p)) json_object_foreach(p, k, v)
        {
            char val[128];
            if (json_is_real(v) && exact)
                history_fmt_exact(val, sizeof val, json_real_value(v));
            else if (json_is_real(v))
                snprintf(val, sizeof val, "%.4g", json_real_value(v));
            else if (json_is_string(v))
                snprintf(val, sizeof val, "%s", json_string_value(v));
            else {
                char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                snprintf(val, sizeof val, "%s", t ? t : "?");
                free(t);
            }
            const char *dot = strrchr(k, '.');
            int n = snprintf(buf + o, len - o, "%s%s=%s", o ? " " : "", dot ? dot + 1 : k, val);
            if (n < 0 || (size_t)n >= len - o) break;
            o += (size_t)n;
        }
    json_decref(p);
}

static int sweep_show(int argc, char **argv)
{
    const struct history_cmd cmd = {.name = "sweep show", .usage = sweep_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    struct store *s;
    rc = history_open("sweep show", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_sweep sw;
    int err = store_sweep_get(s, id, &sw);
    if (err) {
        fprintf(stderr, "mlq sweep show: %s\n", err == -ENOENT ? "no such sweep" : store_errmsg(s));
        store_close(&s);
        return err == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
    }
    struct store_trial *t = NULL;
    size_t n = 0;
    if (store_sweep_trials(s, id, &t, &n) != 0) {
        fprintf(stderr, "mlq sweep show: %s\n", store_errmsg(s));
        store_sweep_free(&sw);
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    if (co.json) {
        json_t *o = sweep_json(&sw);
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *p = t[i].params_json ? json_loads(t[i].params_json, 0, NULL) : NULL;
            json_array_append_new(
                arr, json_pack("{s:i, s:o, s:s, s:o, s:I, s:o, s:o, s:o}", "trial", t[i].trial,
                               "run", t[i].job ? json_integer(t[i].job) : json_null(), "state",
                               store_state_name(t[i].state), "params", p ? p : json_object(),
                               "epochs", (json_int_t)t[i].epochs, "rung",
                               t[i].rung >= 0 ? json_integer(t[i].rung) : json_null(), "best",
                               t[i].has_best ? history_json_num(t[i].best) : json_null(), "error",
                               t[i].error ? json_string(t[i].error) : json_null()));
        }
        json_object_set_new(o, "trial_list", arr);
        history_json_print(o);
    } else {
        if (!co.csv) {
            char when[64];
            history_fmt_time(when, sizeof when, sw.submitted);
            printf("sweep %lld%s%s: %s, %d trials, scheduler %s on %s (%s), max_t %d%s%s\n",
                   (long long)sw.id, sw.name[0] ? " " : "", sw.name, sw.state, sw.n_trials,
                   store_sched_name(sw.scheduler), sw.metric, sw.mode_max ? "max" : "min", sw.max_t,
                   sw.experiment ? ", experiment " : "", sw.experiment ? sw.experiment : "");
            printf("trials:");
            for (int i = 0; i < STORE_N_STATES; i++)
                if (sw.counts[i])
                    printf(" %lld %s", (long long)sw.counts[i],
                           store_state_name((enum store_state)i));
            printf("; submitted %s\n\n", when);
        }
        struct history_table tab;
        history_table_init(&tab, 7);
        const char *head[] = {"TRIAL", "RUN", "STATE", "EPOCHS", "RUNG", "BEST", "PARAMS"};
        for (int i = 0; i < 7; i++) {
            tab.head[i] = i == 5 ? sw.metric : head[i];
            tab.right[i] = i != 2 && i != 6;
        }
        for (size_t i = 0; i < n; i++) {
            char trial[16], run[24], epochs[24], rung[16], best[32], params[512];
            snprintf(trial, sizeof trial, "%d", t[i].trial);
            snprintf(run, sizeof run, "%lld", (long long)t[i].job);
            snprintf(epochs, sizeof epochs, "%lld", (long long)t[i].epochs);
            if (t[i].rung >= 0)
                snprintf(rung, sizeof rung, "%d", t[i].rung);
            else
                snprintf(rung, sizeof rung, "-");
            if (t[i].has_best && co.csv)
                history_fmt_exact(best, sizeof best, t[i].best);
            else if (t[i].has_best)
                history_fmt_value(best, sizeof best, t[i].best);
            else
                snprintf(best, sizeof best, "-");
            params_cell(t[i].params_json, co.csv, params, sizeof params);
            char *row[] = {trial, run,   (char *)store_state_name(t[i].state), epochs, rung,
                           best,  params};
            history_table_add(&tab, row, i == 0 && t[i].has_best);
        }
        if (co.csv)
            history_table_csv(&tab);
        else
            history_table_print(&tab);
        history_table_free(&tab);
    }
    store_trials_free(t, n);
    store_sweep_free(&sw);
    store_close(&s);
    return EXIT_OK;
}

static int sweep_list(int argc, char **argv)
{
    const struct history_cmd cmd = {.name = "sweep list", .usage = sweep_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    if (co.argi < argc) {
        fprintf(stderr, "mlq sweep list: unexpected argument '%s'\n", argv[co.argi]);
        return EXIT_USAGE;
    }
    struct store *s;
    rc = history_open("sweep list", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_sweep *v = NULL;
    size_t n = 0;
    if (store_sweeps_list(s, 0, &v, &n) != 0) {
        fprintf(stderr, "mlq sweep list: %s\n", store_errmsg(s));
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    if (co.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, sweep_json(&v[i]));
        history_json_print(json_pack("{s:o}", "sweeps", arr));
    } else if (n == 0 && !co.csv) {
        printf("no sweeps yet\n");
    } else {
        struct history_table tab;
        history_table_init(&tab, 8);
        const char *head[] = {"ID",   "NAME",      "STATE",  "TRIALS",
                              "DONE", "SCHEDULER", "METRIC", "SUBMITTED"};
        for (int i = 0; i < 8; i++) {
            tab.head[i] = head[i];
            tab.right[i] = i == 0 || i == 3 || i == 4;
        }
        double now = store_now(s);
        for (size_t i = 0; i < n; i++) {
            char id[24], trials[16], done[24], metric[160], ago[64];
            snprintf(id, sizeof id, "%lld", (long long)v[i].id);
            snprintf(trials, sizeof trials, "%d", v[i].n_trials);
            int64_t d = 0;
            for (int k = 0; k < STORE_N_STATES; k++)
                if (store_state_terminal((enum store_state)k)) d += v[i].counts[k];
            snprintf(done, sizeof done, "%lld", (long long)d);
            snprintf(metric, sizeof metric, "%s (%s)", v[i].metric, v[i].mode_max ? "max" : "min");
            history_fmt_ago(ago, sizeof ago, v[i].submitted, now);
            char *row[] = {id,     v[i].name, v[i].state,
                           trials, done,      (char *)store_sched_name(v[i].scheduler),
                           metric, ago};
            history_table_add(&tab, row, false);
        }
        if (co.csv)
            history_table_csv(&tab);
        else
            history_table_print(&tab);
        history_table_free(&tab);
    }
    store_sweeps_free(&v, n);
    store_close(&s);
    return EXIT_OK;
}

/* Polls the database until no trial is left to run. */
static int sweep_wait(const char *db, int64_t id, bool json)
{
    for (;;) {
        struct store *s;
        int rc = history_open("sweep wait", db, false, &s);
        if (rc != EXIT_OK) return rc;
        struct store_sweep sw;
        int err = store_sweep_get(s, id, &sw);
        store_close(&s);
        if (err) {
            fprintf(stderr, "mlq sweep wait: %s\n", err == -ENOENT ? "no such sweep" : "store");
            return err == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
        }
        bool done = strcmp(sw.state, "running") != 0 &&
                    sw.counts[STORE_QUEUED] + sw.counts[STORE_RUNNING] == 0;
        if (done) {
            if (json)
                history_json_print(sweep_json(&sw));
            else
                printf("sweep %lld %s: %lld succeeded, %lld stopped, %lld failed, %lld "
                       "cancelled\n",
                       (long long)id, sw.state, (long long)sw.counts[STORE_SUCCEEDED],
                       (long long)sw.counts[STORE_STOPPED], (long long)sw.counts[STORE_FAILED],
                       (long long)sw.counts[STORE_CANCELLED]);
            bool cancelled = sw.cancelled;
            store_sweep_free(&sw);
            return cancelled ? EXIT_JOB_CANCELLED : EXIT_OK;
        }
        store_sweep_free(&sw);
        usleep(500 * 1000);
    }
}

static int sweep_wait_cmd(int argc, char **argv)
{
    const struct history_cmd cmd = {.name = "sweep wait", .usage = sweep_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    return sweep_wait(co.db, id, co.json);
}

static int rm_option(void *ctx, int ch, const char *arg)
{
    (void)arg;
    bool *flags = ctx; /* [0] --force, [1] --keep-runs */
    flags[ch == 'k'] = true;
    return HISTORY_PROCEED;
}

/* mlq sweep rm: the sweep, its trials and decisions, and its trial runs
 * unless --keep-runs; refused while a trial is queued or running. */
static int sweep_rm(int argc, char **argv)
{
    static const struct option opts[] = {{"force", no_argument, NULL, 'f'},
                                         {"keep-runs", no_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    bool flags[2] = {false, false};
    const struct history_cmd cmd = {.name = "sweep rm",
                                    .shortopts = "f",
                                    .opts = opts,
                                    .option = rm_option,
                                    .ctx = flags,
                                    .usage = sweep_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    struct store *s;
    rc = history_open("sweep rm", co.db, true, &s);
    if (rc != EXIT_OK) return rc;
    struct store_sweep sw;
    int err = store_sweep_get(s, id, &sw);
    if (err) {
        fprintf(stderr, "mlq sweep rm: %s\n", err == -ENOENT ? "no such sweep" : store_errmsg(s));
        store_close(&s);
        return err == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
    }
    int64_t live = sw.counts[STORE_QUEUED] + sw.counts[STORE_RUNNING];
    store_sweep_free(&sw);
    if (live && !flags[0]) {
        fprintf(stderr,
                "mlq sweep rm: sweep %lld has %lld trial%s queued or running; cancel it first "
                "(mlq cancel --sweep %lld) or --force; nothing deleted\n",
                (long long)id, (long long)live, live == 1 ? "" : "s", (long long)id);
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    int64_t *runs = NULL;
    size_t n = 0;
    bool keep = flags[1];
    err = store_sweep_delete(s, id, keep, &runs, &n);
    if (err == 0 && !keep && n) err = store_vacuum(s);
    if (err) {
        fprintf(stderr, "mlq sweep rm: %s\n", store_errmsg(s));
        free(runs);
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    if (co.json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, json_integer(runs[i]));
        history_json_print(
            json_pack("{s:I, s:o, s:b}", "removed", (json_int_t)id, "runs", a, "runs_kept", keep));
    } else {
        printf("removed sweep %lld and %s its %zu trial run%s\n", (long long)id,
               keep ? "kept" : "removed", n, n == 1 ? "" : "s");
    }
    free(runs);
    store_close(&s);
    return EXIT_OK;
}

int cmd_sweep(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "show") == 0) return sweep_show(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "list") == 0) return sweep_list(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "wait") == 0) return sweep_wait_cmd(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "rm") == 0) return sweep_rm(argc - 1, argv + 1);
    return sweep_submit(argc, argv);
}

/* ---- tag, note ------------------------------------------------------------------------------ */

static int run_args(int argc, char **argv, const char *usage, const char **broker, int64_t *id,
                    int *first)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        if (c == 'b') {
            *broker = optarg;
        } else if (c == 'h') {
            printf("usage: %s\n", usage);
            return -1;
        } else {
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    if (argc - optind < 2 || !history_parse_id(argv[0], argv[optind], id)) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    *first = optind + 1;
    return EXIT_OK;
}

int cmd_tag(int argc, char **argv)
{
    const char *broker = NULL;
    int64_t id;
    int first;
    int rc = run_args(argc, argv, "mlq tag [--broker E] RUN KEY=VALUE...", &broker, &id, &first);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    json_t *extra = json_object();
    for (int i = first; i < argc; i++)
        if (cli_meta_option(extra, "mlq tag", 't', argv[i]) != 0) {
            json_decref(extra);
            return EXIT_USAGE;
        }
    json_t *reply = NULL;
    rc = cli_broker_call(
        cli_broker_endpoint(broker), PROTO_TAG,
        json_pack("{s:I, s:O}", "id", (json_int_t)id, "tags", json_object_get(extra, "tags")),
        &reply);
    json_decref(extra);
    if (rc == EXIT_OK) printf("run %lld tagged\n", (long long)id);
    json_decref(reply);
    return rc;
}

int cmd_note(int argc, char **argv)
{
    const char *broker = NULL;
    int64_t id;
    int first;
    int rc = run_args(argc, argv, "mlq note [--broker E] RUN TEXT...", &broker, &id, &first);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    char text[4097];
    size_t o = 0;
    for (int i = first; i < argc; i++) {
        int n = snprintf(text + o, sizeof text - o, "%s%s", i > first ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof text - o) {
            fprintf(stderr, "mlq note: at most 4096 bytes\n");
            return EXIT_USAGE;
        }
        o += (size_t)n;
    }
    json_t *reply = NULL;
    rc = cli_broker_call(cli_broker_endpoint(broker), PROTO_NOTE,
                         json_pack("{s:I, s:s}", "id", (json_int_t)id, "text", text), &reply);
    if (rc == EXIT_OK) printf("note added to run %lld\n", (long long)id);
    json_decref(reply);
    return rc;
}
