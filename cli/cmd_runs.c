/* mlq runs: the runs, newest first, with their main params and final
 * metrics, as a table, --json or --csv (docs/history.md). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "store.h"

static const char *const main_params[] = {
    "name", "optimizer.name", "optimizer.lr", "model.layers", "batch_size", "epochs", "run"};
/* Metrics shown as table columns when present, in this order. */
static const char *const main_metrics[] = {"val_accuracy", "val_loss", "train_accuracy",
                                           "train_loss",   "accuracy", "loss"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *param_find(const struct store_param *p, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i].key, key) == 0) return p[i].value;
    return NULL;
}

static const struct store_metric *metric_find(const struct store_metric *m, size_t n,
                                              const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].key, key) == 0) return &m[i];
    return NULL;
}

/* A param's JSON value: numbers, arrays and booleans parsed back, else a string. */
static json_t *param_json(const char *value)
{
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    if (v && !json_is_string(v) && !json_is_object(v)) return v;
    json_decref(v);
    return json_string(value);
}

static void runs_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq runs [--state S] [--kind K] [--limit N] [--where KEY=VALUE]...\n"
            "                [--experiment NAME] [--tag KEY=VALUE]... [--sweep ID]\n"
            "                [--sort [-]METRIC] [--db FILE] [--json | --csv]\n\n"
            "Lists runs, newest first.\n\n"
            "  --state S    queued, running, succeeded, failed, cancelled or stopped\n"
            "  --kind K     train, eval or predict\n"
            "  --limit N    at most N runs (default 50; 0 = all)\n"
            "  --where K=V  only runs whose param K (e.g. params.optimizer.name) equals V\n"
            "               (numbers as numbers: optimizer.lr=1e-3 finds 0.001);\n"
            "               repeatable, all must hold; also !=, <, <=, >, >= (quote them),\n"
            "               and metrics.KEY for a final metric (metrics.val_loss<0.5)\n"
            "  --experiment NAME, --tag KEY=VALUE, --sweep ID  only those runs\n"
            "  --sort M     by final metric M, ascending; -M descending; runs without it last\n"
            "%s"
            "  --csv        comma-separated values, one line per run: the table's columns\n"
            "               (metrics that read back exactly), then DURATION_S (seconds),\n"
            "               OPTIMIZER_NAME and LR\n",
            history_common_help);
}

/* --state, --kind, --limit, --where and --sort into the filter. */
struct runs_args {
    struct store_run_filter f;
    char where_buf[STORE_WHERE_MAX][512]; /* KEY\0VALUE per --where */
    char tag_buf[STORE_WHERE_MAX][520];   /* KEY\0VALUE per --tag */
};

static int runs_option(void *ctx, int ch, const char *arg)
{
    struct runs_args *a = ctx;
    struct store_run_filter *f = &a->f;
    switch (ch) {
    case 's': {
        enum store_state st;
        if (store_state_parse(arg, &st) != 0) {
            fprintf(stderr, "mlq runs: --state: unknown state '%s'\n", arg);
            return EXIT_USAGE;
        }
        f->state = (int)st;
        break;
    }
    case 'k': {
        enum job_kind k;
        if (store_kind_parse(arg, &k) != 0) {
            fprintf(stderr, "mlq runs: --kind: unknown kind '%s'\n", arg);
            return EXIT_USAGE;
        }
        f->kind = (int)k;
        break;
    }
    case 'n': {
        char *end;
        long long v = strtoll(arg, &end, 10);
        if (*end || end == arg || v < 0) {
            fprintf(stderr, "mlq runs: --limit: not a count: '%s'\n", arg);
            return EXIT_USAGE;
        }
        f->limit = v;
        break;
    }
    case 'w': {
        const char *kv = strncmp(arg, "params.", 7) == 0 ? arg + 7 : arg;
        if (f->n_where == STORE_WHERE_MAX ||
            store_where_parse(kv, a->where_buf[f->n_where], sizeof a->where_buf[0],
                              &f->where_key[f->n_where], &f->where_op[f->n_where],
                              &f->where_value[f->n_where]) != 0) {
            fprintf(stderr,
                    "mlq runs: --where: expected KEY=VALUE (or !=, <, <=, >, >=; KEY a param "
                    "such as params.optimizer.lr or a metric such as metrics.val_loss; at most "
                    "%d)\n",
                    STORE_WHERE_MAX);
            return EXIT_USAGE;
        }
        f->n_where++;
        break;
    }
    case 'e':
        f->experiment = arg;
        break;
    case 'g': {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg || f->n_tags == STORE_WHERE_MAX ||
            strlen(arg) >= sizeof a->tag_buf[0]) {
            fprintf(stderr, "mlq runs: --tag: expected KEY=VALUE (at most %d)\n", STORE_WHERE_MAX);
            return EXIT_USAGE;
        }
        char *b = a->tag_buf[f->n_tags];
        snprintf(b, sizeof a->tag_buf[0], "%s", arg);
        b[eq - arg] = '\0';
        f->tag_key[f->n_tags] = b;
        f->tag_value[f->n_tags] = b + (eq - arg) + 1;
        f->n_tags++;
        break;
    }
    case 'S': {
        char *end;
        long long v = strtoll(arg, &end, 10);
        if (*end || end == arg || v < 1) {
            fprintf(stderr, "mlq runs: --sweep: not a sweep id: '%s'\n", arg);
            return EXIT_USAGE;
        }
        f->sweep = v;
        break;
    }
    case 'o':
        f->sort_desc = arg[0] == '-';
        f->sort_metric = arg + f->sort_desc;
        if (!*f->sort_metric) {
            fprintf(stderr, "mlq runs: --sort: a metric name is needed\n");
            return EXIT_USAGE;
        }
        break;
    }
    return HISTORY_PROCEED;
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"kind", required_argument, NULL, 'k'},
        {"limit", required_argument, NULL, 'n'},
        {"where", required_argument, NULL, 'w'},
        {"sort", required_argument, NULL, 'o'},
        {"experiment", required_argument, NULL, 'e'},
        {"tag", required_argument, NULL, 'g'},
        {"sweep", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    struct runs_args a = {.f = {.state = -1, .kind = -1, .limit = 50}};
    const struct history_cmd cmd = {
        .name = "runs", .opts = opts, .option = runs_option, .ctx = &a, .usage = runs_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    if (co.argi < argc) {
        fprintf(stderr, "mlq runs: unexpected argument '%s'\n", argv[co.argi]);
        return EXIT_USAGE;
    }
    const struct store_run_filter *f = &a.f;
    struct store *s;
    rc = history_open("runs", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job *runs = NULL;
    size_t n = 0;
    rc = store_runs_list(s, f, &runs, &n);
    if (rc != 0) {
        fprintf(stderr, "mlq runs: %s\n", store_errmsg(s));
        store_close(&s);
        return rc == -EINVAL ? EXIT_USAGE : EXIT_FAILURE_GENERIC; /* a bad --where key */
    }
    double now = store_now(s);
    json_t *arr = co.json ? json_array() : NULL;
    struct history_table t;
    /* Columns: fixed ones, then main params, then the metrics any run has. */
    bool metric_used[COUNT(main_metrics)] = {0};
    struct store_param **params = calloc(n ? n : 1, sizeof *params);
    size_t *nparams = calloc(n ? n : 1, sizeof *nparams);
    struct store_metric **mets = calloc(n ? n : 1, sizeof *mets);
    size_t *nmets = calloc(n ? n : 1, sizeof *nmets);
    if (!params || !nparams || !mets || !nmets) {
        fprintf(stderr, "mlq runs: out of memory\n");
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (store_params_list(s, runs[i].id, &params[i], &nparams[i]) != 0 ||
            store_metrics_final(s, runs[i].id, &mets[i], &nmets[i]) != 0) {
            fprintf(stderr, "mlq runs: %s\n", store_errmsg(s));
            rc = EXIT_FAILURE_GENERIC;
            goto out;
        }
        for (size_t k = 0; k < COUNT(main_metrics); k++)
            metric_used[k] |= metric_find(mets[i], nmets[i], main_metrics[k]) != NULL;
    }

    if (co.json) {
        for (size_t i = 0; i < n; i++) {
            const struct store_job *j = &runs[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(j->id));
            json_object_set_new(o, "kind", json_string(spec_kind_name(j->kind)));
            json_object_set_new(o, "state", json_string(store_state_name(j->state)));
            json_object_set_new(o, "name", json_string(j->name));
            json_object_set_new(o, "priority", json_integer(j->priority));
            json_object_set_new(o, "attempts", json_integer(j->attempts));
            json_object_set_new(o, "trainer",
                                j->trainer[0] ? json_string(j->trainer) : json_null());
            json_object_set_new(o, "run", j->run ? json_integer(j->run) : json_null());
            json_object_set_new(o, "submitted", history_json_time(j->submitted));
            json_object_set_new(o, "started", history_json_time(j->started));
            json_object_set_new(o, "finished", history_json_time(j->finished));
            double d = history_job_duration(j, now);
            json_object_set_new(o, "duration", d >= 0 ? json_real(d) : json_null());
            json_object_set_new(o, "error", j->error ? json_string(j->error) : json_null());
            json_object_set_new(o, "experiment",
                                j->experiment ? json_string(j->experiment) : json_null());
            json_object_set_new(o, "sweep", j->sweep ? json_integer(j->sweep) : json_null());
            json_t *p = json_object();
            for (size_t k = 0; k < COUNT(main_params); k++) {
                const char *v = param_find(params[i], nparams[i], main_params[k]);
                if (v) json_object_set_new(p, main_params[k], param_json(v));
            }
            json_object_set_new(o, "params", p);
            const char *lv = param_find(params[i], nparams[i], "model.layers");
            char line[256];
            if (lv && j->kind == JOB_TRAIN)
                json_object_set_new(o, "model",
                                    json_string(history_layers_cell(lv, line, sizeof line)));
            json_t *m = json_object();
            for (size_t k = 0; k < nmets[i]; k++)
                json_object_set_new(m, mets[i][k].key, history_json_num(mets[i][k].value));
            json_object_set_new(o, "metrics", m);
            json_array_append_new(arr, o);
        }
        history_json_print(arr);
        arr = NULL;
        goto out;
    }

    int ncols = 0;
    history_table_init(&t, 0);
    const char *fixed[] = {"ID",        "KIND",     "STATE",     "NAME",
                           "SUBMITTED", "DURATION", "OPTIMIZER", "LAYERS"};
    for (size_t k = 0; k < COUNT(fixed); k++) {
        t.right[ncols] = k == 0 || k == 5;
        t.head[ncols++] = fixed[k];
    }
    for (size_t k = 0; k < COUNT(main_metrics); k++)
        if (metric_used[k]) {
            t.right[ncols] = true;
            t.head[ncols++] = main_metrics[k];
        }
    /* --csv: one value per column, for scripts, after the table's columns. */
    const int csv_from = ncols;
    if (co.csv) {
        t.head[ncols++] = "DURATION_S";
        t.head[ncols++] = "OPTIMIZER_NAME";
        t.head[ncols++] = "LR";
    }
    t.ncols = ncols;
    for (size_t i = 0; i < n; i++) {
        const struct store_job *j = &runs[i];
        char id[24], sub[32], dur[32], opt[96], cells[HISTORY_TABLE_MAX_COLS][48];
        char *row[HISTORY_TABLE_MAX_COLS];
        snprintf(id, sizeof id, "%lld", (long long)j->id);
        if (co.csv)
            history_fmt_time(sub, sizeof sub, j->submitted);
        else
            history_fmt_ago(sub, sizeof sub, j->submitted, now);
        history_fmt_duration(dur, sizeof dur, history_job_duration(j, now));
        const char *on = param_find(params[i], nparams[i], "optimizer.name");
        const char *lr = param_find(params[i], nparams[i], "optimizer.lr");
        if (on)
            snprintf(opt, sizeof opt, "%s%s%s", on, lr ? " lr=" : "", lr ? lr : "");
        else if (j->run)
            snprintf(opt, sizeof opt, "run %lld", (long long)j->run);
        else
            snprintf(opt, sizeof opt, "-");
        const char *layers = param_find(params[i], nparams[i], "model.layers");
        int c = 0;
        row[c++] = id;
        row[c++] = (char *)spec_kind_name(j->kind);
        row[c++] = (char *)store_state_name(j->state);
        row[c++] = j->name[0] ? (char *)j->name : "-";
        row[c++] = sub;
        row[c++] = dur;
        row[c++] = opt;
        char layers_cell[128];
        row[c++] = layers && j->kind == JOB_TRAIN
                       ? (char *)history_layers_cell(layers, layers_cell, sizeof layers_cell)
                       : "-";
        for (size_t k = 0; k < COUNT(main_metrics); k++) {
            if (!metric_used[k]) continue;
            const struct store_metric *m = metric_find(mets[i], nmets[i], main_metrics[k]);
            if (m && co.csv)
                history_fmt_exact(cells[c], sizeof cells[c], m->value);
            else if (m)
                history_fmt_value(cells[c], sizeof cells[c], m->value);
            else
                snprintf(cells[c], sizeof cells[c], "-");
            row[c] = cells[c];
            c++;
        }
        if (co.csv) {
            double d = history_job_duration(j, now);
            if (d >= 0)
                history_fmt_exact(cells[csv_from], sizeof cells[csv_from], d);
            else
                cells[csv_from][0] = '\0';
            row[c++] = cells[csv_from];
            row[c++] = on ? (char *)on : "";
            row[c++] = lr ? (char *)lr : "";
        }
        if (history_table_add(&t, row, false) != 0) {
            fprintf(stderr, "mlq runs: out of memory\n");
            history_table_free(&t);
            rc = EXIT_FAILURE_GENERIC;
            goto out;
        }
    }
    if (co.csv)
        history_table_csv(&t);
    else if (n == 0)
        printf("no runs%s\n",
               f->state >= 0 || f->kind >= 0 || f->n_where || f->n_tags || f->sweep || f->experiment
                   ? " match"
                   : " yet");
    else
        history_table_print(&t);
    history_table_free(&t);

out:
    json_decref(arr);
    for (size_t i = 0; i < n; i++) {
        if (params) store_params_free(params[i], nparams[i]);
        if (mets) store_metrics_free(mets[i], nmets[i]);
    }
    free(params);
    free(nparams);
    free(mets);
    free(nmets);
    store_jobs_free(&runs, n);
    store_close(&s);
    return rc;
}
