/* mlq compare: the params and final metrics of runs side by side, rows
 * that differ marked (docs/history.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "store.h"

#define COMPARE_MAX 256                            /* runs in --json and --csv */
#define COMPARE_TABLE (HISTORY_TABLE_MAX_COLS - 2) /* runs in the table */

static void compare_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq compare [ID...] [--sweep ID] [--experiment NAME] [--db FILE]\n"
            "                   [--json | --csv]\n\n"
            "Params and final metrics of runs side by side (up to %d; %d in the table),\n"
            "rows that differ marked '*' (and highlighted on a terminal). --sweep adds a\n"
            "sweep's trials, the best first; --experiment an experiment's runs, newest first.\n\n%s"
            "  --csv        a header (section,key,run ID...,differs), then a line per key;\n"
            "               metrics in --json and --csv read back exactly\n",
            COMPARE_MAX, COMPARE_TABLE, history_common_help);
}

struct compare_args {
    int64_t sweep;
    const char *experiment;
};

static int compare_option(void *ctx, int ch, const char *arg)
{
    struct compare_args *a = ctx;
    if (ch == 'e') {
        a->experiment = arg;
        return HISTORY_PROCEED;
    }
    char *end;
    long long v = strtoll(arg, &end, 10);
    if (*end || end == arg || v < 1) {
        fprintf(stderr, "mlq compare: --sweep: not a sweep id: '%s'\n", arg);
        return EXIT_USAGE;
    }
    a->sweep = v;
    return HISTORY_PROCEED;
}

/* The runs of --sweep (best first) and --experiment (newest first) after ids. */
static int add_group_runs(struct store *s, const struct compare_args *a, int64_t *ids, int *n)
{
    if (a->sweep) {
        struct store_trial *t = NULL;
        size_t nt = 0;
        int rc = store_sweep_trials(s, a->sweep, &t, &nt);
        if (rc) {
            fprintf(stderr, "mlq compare: sweep %lld: %s\n", (long long)a->sweep,
                    rc == -ENOENT ? "no such sweep" : store_errmsg(s));
            return rc == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
        }
        for (size_t i = 0; i < nt && *n < COMPARE_MAX; i++)
            if (t[i].job) ids[(*n)++] = t[i].job;
        store_trials_free(t, nt);
    }
    if (a->experiment) {
        struct store_run_filter f = {.state = -1, .kind = -1, .experiment = a->experiment};
        struct store_job *runs = NULL;
        size_t nr = 0;
        if (store_runs_list(s, &f, &runs, &nr) != 0) {
            fprintf(stderr, "mlq compare: %s\n", store_errmsg(s));
            return EXIT_FAILURE_GENERIC;
        }
        if (nr == 0) {
            fprintf(stderr, "mlq compare: experiment %s: no runs\n", a->experiment);
            store_jobs_free(&runs, nr);
            return EXIT_NOT_FOUND;
        }
        for (size_t i = 0; i < nr && *n < COMPARE_MAX; i++)
            ids[(*n)++] = runs[i].id;
        store_jobs_free(&runs, nr);
    }
    return EXIT_OK;
}

struct crow {
    char *section; /* "param" or "metric" */
    char *key;
    char *val[COMPARE_MAX]; /* NULL = absent */
};

static int crow_cmp(const void *a, const void *b)
{
    const struct crow *x = a, *y = b;
    int c = strcmp(y->section, x->section); /* "param" before "metric" */
    return c ? c : strcmp(x->key, y->key);
}

static struct crow *crow_get(struct crow **rows, size_t *n, size_t *cap, const char *section,
                             const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*rows)[i].section, section) == 0 && strcmp((*rows)[i].key, key) == 0)
            return &(*rows)[i];
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        struct crow *p = realloc(*rows, ncap * sizeof *p);
        if (!p) return NULL;
        *rows = p;
        *cap = ncap;
    }
    struct crow *r = &(*rows)[(*n)++];
    memset(r, 0, sizeof *r);
    r->section = strdup(section);
    r->key = strdup(key);
    return r;
}

int cmd_compare(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sweep", required_argument, NULL, 's'},
        {"experiment", required_argument, NULL, 'e'},
        {NULL, 0, NULL, 0},
    };
    struct compare_args ca = {0};
    const struct history_cmd cmd = {.name = "compare",
                                    .opts = opts,
                                    .option = compare_option,
                                    .ctx = &ca,
                                    .usage = compare_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    int nruns = argc - co.argi;
    if ((nruns < 1 && !ca.sweep && !ca.experiment) || nruns > COMPARE_MAX) {
        compare_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t ids[COMPARE_MAX];
    if (!history_parse_ids("compare", argv + co.argi, nruns, ids)) return EXIT_USAGE;
    struct store *s;
    rc = history_open("compare", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    rc = add_group_runs(s, &ca, ids, &nruns);
    if (rc != EXIT_OK) {
        store_close(&s);
        return rc;
    }
    int shown = co.json || co.csv || nruns <= COMPARE_TABLE ? nruns : COMPARE_TABLE;

    struct crow *rows = NULL;
    size_t nrows = 0, cap = 0;
    for (int r = 0; r < nruns && rc == EXIT_OK; r++) {
        struct store_job j;
        rc = history_job_get("compare", s, ids[r], &j);
        if (rc != EXIT_OK) break;
        struct store_param *p = NULL;
        struct store_metric *m = NULL;
        size_t np = 0, nm = 0;
        int ret = store_params_list(s, ids[r], &p, &np);
        if (ret == 0) ret = store_metrics_final(s, ids[r], &m, &nm);
        if (ret != 0) {
            fprintf(stderr, "mlq compare: %s\n", store_errmsg(s));
            rc = EXIT_FAILURE_GENERIC;
        }
        struct crow *c;
        if (ret == 0 && (c = crow_get(&rows, &nrows, &cap, "param", "state")))
            c->val[r] = strdup(store_state_name(j.state));
        for (size_t i = 0; ret == 0 && i < np; i++)
            if ((c = crow_get(&rows, &nrows, &cap, "param", p[i].key)))
                c->val[r] = strdup(p[i].value);
        /* Typed layers side by side in one line each (the layers' JSON is
         * long); the full layers stay in model.layers. */
        json_t *sj = j.spec_json ? json_loads(j.spec_json, 0, NULL) : NULL;
        char line[512];
        if (ret == 0 && history_model_line(sj, line, sizeof line) &&
            (c = crow_get(&rows, &nrows, &cap, "param", "model")))
            c->val[r] = strdup(line);
        json_decref(sj);
        for (size_t i = 0; ret == 0 && i < nm; i++) {
            char v[40];
            history_fmt_exact(v, sizeof v, m[i].value); /* the table shows 6 digits */
            if ((c = crow_get(&rows, &nrows, &cap, "metric", m[i].key))) c->val[r] = strdup(v);
        }
        store_params_free(p, np);
        store_metrics_free(m, nm);
        store_job_free(&j);
    }
    if (rc != EXIT_OK) goto out;
    qsort(rows, nrows, sizeof *rows, crow_cmp);

    if (co.json) {
        json_t *o = json_object(), *ja = json_array(), *jr = json_array();
        for (int r = 0; r < nruns; r++)
            json_array_append_new(ja, json_integer(ids[r]));
        json_object_set_new(o, "runs", ja);
        for (size_t i = 0; i < nrows; i++) {
            json_t *x = json_object(), *vals = json_array();
            bool differs = false;
            for (int r = 0; r < nruns; r++) {
                const char *v = rows[i].val[r];
                differs |= (v == NULL) != (rows[i].val[0] == NULL) ||
                           (v && rows[i].val[0] && strcmp(v, rows[i].val[0]) != 0);
                json_array_append_new(vals, !v ? json_null()
                                            : strcmp(rows[i].section, "metric") == 0
                                                ? history_json_num(strtod(v, NULL))
                                                : json_string(v));
            }
            json_object_set_new(x, "section", json_string(rows[i].section));
            json_object_set_new(x, "key", json_string(rows[i].key));
            json_object_set_new(x, "values", vals);
            json_object_set_new(x, "differs", json_boolean(differs));
            json_array_append_new(jr, x);
        }
        json_object_set_new(o, "rows", jr);
        history_json_print(o);
        goto out;
    }
    struct history_table t;
    history_table_init(&t, (co.csv ? nruns : shown) + 2);
    char heads[COMPARE_MAX][32];
    t.head[0] = "";
    t.head[1] = "KEY";
    for (int r = 0; r < shown && !co.csv; r++) {
        snprintf(heads[r], sizeof heads[r], "run %lld", (long long)ids[r]);
        t.head[r + 2] = heads[r];
    }
    if (co.csv) {
        history_csv_field("section", false);
        history_csv_field("key", false);
        for (int r = 0; r < nruns; r++) {
            char h[32];
            snprintf(h, sizeof h, "run %lld", (long long)ids[r]);
            history_csv_field(h, false);
        }
        history_csv_field("differs", true);
    }
    for (size_t i = 0; i < nrows; i++) {
        bool differs = false, metric = strcmp(rows[i].section, "metric") == 0;
        char *row[COMPARE_MAX + 2], shown_val[COMPARE_TABLE][32];
        for (int r = 0; r < nruns; r++) {
            const char *v = rows[i].val[r];
            differs |= (v == NULL) != (rows[i].val[0] == NULL) ||
                       (v && rows[i].val[0] && strcmp(v, rows[i].val[0]) != 0);
            if (r >= shown || co.csv) continue;
            row[r + 2] = v ? (char *)v : "-";
            if (v && metric) {
                snprintf(shown_val[r], sizeof shown_val[r], "%.6g", strtod(v, NULL));
                row[r + 2] = shown_val[r];
            }
        }
        char key[300];
        snprintf(key, sizeof key, "%s%s", strcmp(rows[i].section, "metric") == 0 ? "metric " : "",
                 rows[i].key);
        row[0] = differs ? "*" : "";
        row[1] = key;
        if (co.csv) {
            history_csv_field(rows[i].section, false);
            history_csv_field(rows[i].key, false);
            for (int r = 0; r < nruns; r++)
                history_csv_field(rows[i].val[r] ? rows[i].val[r] : "", false);
            history_csv_field(differs ? "1" : "0", true);
        } else {
            history_table_add(&t, row, differs);
        }
    }
    if (!co.csv) history_table_print(&t);
    if (!co.csv && shown < nruns)
        printf("(%d more runs: --json or --csv shows all %d)\n", nruns - shown, nruns);
    history_table_free(&t);

out:
    for (size_t i = 0; i < nrows; i++) {
        free(rows[i].section);
        free(rows[i].key);
        for (int r = 0; r < COMPARE_MAX; r++)
            free(rows[i].val[r]);
    }
    free(rows);
    store_close(&s);
    return rc;
}
