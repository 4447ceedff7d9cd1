/* The history commands: runs, show, metrics, compare, rm, gc. They read the
 * database directly (read-only except rm and gc), so they work with the
 * broker down. Output: aligned tables for people, --json (stable keys,
 * docs/history.md) and --csv for scripts. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "config.h"
#include "history.h"
#include "render.h"
#include "store.h"

/* ---- shared: opening, ids, formatting ----------------------------------------------- */

static char resolved_path[4096];

const char *history_path(void)
{
    return resolved_path;
}

/* Where the systemd services keep their database (StateDirectory=mlq). */
#define SERVICE_DB_PATH "/var/lib/mlq/mlq.db"

int history_open(const char *cmd, const char *db_flag, bool writable, struct store **out)
{
    char *path = resolved_path, err[1024];
    const size_t pathlen = sizeof resolved_path;
    *out = NULL;
    if (db_flag && *db_flag) {
        snprintf(path, pathlen, "%s", db_flag);
    } else {
        struct config cfg;
        if (config_load(&cfg, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "mlq %s: %s\n", cmd, err);
            return EXIT_FAILURE_GENERIC;
        }
        /* On a host that runs the services and where this user never ran
         * mlq up, the history people want is the services' database. */
        struct stat st;
        if (cfg.db_path[0]) {
            snprintf(path, pathlen, "%s", cfg.db_path);
        } else if ((store_default_path(path, pathlen) != 0 || stat(path, &st) != 0) &&
                   stat(SERVICE_DB_PATH, &st) == 0) {
            snprintf(path, pathlen, "%s", SERVICE_DB_PATH);
        } else if (!path[0]) {
            fprintf(stderr, "mlq %s: no database path: pass --db FILE or set MLQ_DB\n", cmd);
            return EXIT_UNAVAILABLE;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr,
                "mlq %s: no database at %s\n"
                "  Create one by running a job: start the broker (mlq up, or mlq-broker --db %s)\n"
                "  and mlq submit, or run mlq-trainer --standalone JOB.json --db %s.\n"
                "  Use --db FILE or MLQ_DB to read another database.\n",
                cmd, path, path, path);
        return EXIT_UNAVAILABLE;
    }
    int rc = store_open(out, path, writable ? 0 : STORE_READONLY, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "mlq %s: %s\n", cmd, err);
        return rc == -ENOENT ? EXIT_UNAVAILABLE : EXIT_FAILURE_GENERIC;
    }
    return EXIT_OK;
}

bool history_parse_id(const char *cmd, const char *text, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v <= 0) {
        fprintf(stderr, "mlq %s: '%s' is not a run id (a positive integer)\n", cmd, text);
        return false;
    }
    *id = v;
    return true;
}

static int term_width(void)
{
    const char *c = getenv("COLUMNS");
    if (c && atoi(c) > 20) return atoi(c);
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return isatty(STDOUT_FILENO) ? 80 : 0; /* 0: a pipe, no truncation */
}

static bool use_style(void)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(STDOUT_FILENO) && !(nc && *nc);
}

static void fmt_duration(char *buf, size_t len, double secs)
{
    if (secs < 0 || !isfinite(secs))
        snprintf(buf, len, "-");
    else if (secs < 60)
        snprintf(buf, len, "%.1fs", secs);
    else if (secs < 3600)
        snprintf(buf, len, "%dm%02ds", (int)secs / 60, (int)secs % 60);
    else if (secs < 86400)
        snprintf(buf, len, "%dh%02dm", (int)secs / 3600, ((int)secs % 3600) / 60);
    else
        snprintf(buf, len, "%dd%02dh", (int)(secs / 86400), ((int)secs % 86400) / 3600);
}

static void fmt_ago(char *buf, size_t len, double t, double now)
{
    if (t <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    double d = now - t;
    if (d < 0) d = 0;
    if (d < 10)
        snprintf(buf, len, "just now");
    else if (d < 60)
        snprintf(buf, len, "%d s ago", (int)d);
    else if (d < 3600)
        snprintf(buf, len, "%d min ago", (int)(d / 60));
    else if (d < 86400)
        snprintf(buf, len, "%d h ago", (int)(d / 3600));
    else
        snprintf(buf, len, "%d d ago", (int)(d / 86400));
}

static void fmt_time(char *buf, size_t len, double t)
{
    if (t <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t s = (time_t)t;
    struct tm tm;
    localtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_value(char *buf, size_t len, double v)
{
    if (!isfinite(v))
        snprintf(buf, len, isnan(v) ? "nan" : "inf");
    else if (v != 0 && (fabs(v) < 1e-3 || fabs(v) >= 1e6))
        snprintf(buf, len, "%.4g", v);
    else
        snprintf(buf, len, "%.4f", v);
}

static double job_duration(const struct store_job *j, double now)
{
    if (j->started <= 0) return -1;
    return (j->finished > 0 ? j->finished : now) - j->started;
}

/* JSON numbers for times; null when not yet, and for NaN (JSON has none). */
static json_t *json_time(double t)
{
    return t > 0 ? json_real(t) : json_null();
}
static json_t *json_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void json_print(json_t *doc)
{
    /* 15 digits: what the values hold, without binary noise (0.8326, not
     * 0.83260000000000001). */
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    json_decref(doc);
}

/* ---- tables ---------------------------------------------------------------------------- */

#define TABLE_MAX_COLS 24

struct table {
    int ncols;
    const char *head[TABLE_MAX_COLS];
    bool right[TABLE_MAX_COLS]; /* numbers align right */
    size_t nrows, cap;
    char **cells; /* nrows * ncols, owned */
    bool *mark;   /* per row: highlight (compare) */
};

static void table_init(struct table *t, int ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
}

static int table_add(struct table *t, char **row, bool mark)
{
    if (t->nrows == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 32;
        char **c = realloc(t->cells, ncap * t->ncols * sizeof *c);
        if (!c) return -ENOMEM;
        t->cells = c;
        bool *m = realloc(t->mark, ncap * sizeof *m);
        if (!m) return -ENOMEM;
        t->mark = m;
        t->cap = ncap;
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->nrows * t->ncols + i] = strdup(row[i] ? row[i] : "");
    t->mark[t->nrows] = mark;
    t->nrows++;
    return 0;
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->mark);
}

/* Display width of UTF-8 text: counts code points (the charts' blocks are one cell). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void print_cell(const char *s, size_t width, bool right, bool last)
{
    size_t w = text_width(s);
    if (w > width) { /* truncate to width-1 code points and an ellipsis */
        size_t cps = 0;
        const char *p = s;
        while (*p && cps < width - 1) {
            p++;
            while ((*p & 0xc0) == 0x80)
                p++;
            cps++;
        }
        fwrite(s, 1, (size_t)(p - s), stdout);
        fputs("…", stdout);
        return;
    }
    if (right)
        printf("%*s%s", (int)(width - w), "", s);
    else if (last)
        fputs(s, stdout);
    else
        printf("%s%*s", s, (int)(width - w), "");
}

static void table_print(const struct table *t)
{
    size_t width[TABLE_MAX_COLS];
    size_t total = 0;
    for (int c = 0; c < t->ncols; c++) {
        width[c] = text_width(t->head[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = text_width(t->cells[r * t->ncols + c]);
            if (w > width[c]) width[c] = w;
        }
        total += width[c] + (c ? 2 : 0);
    }
    /* Too wide for the terminal: shrink the widest columns, down to 6. */
    int tw = term_width();
    while (tw > 0 && total > (size_t)tw) {
        int widest = 0;
        for (int c = 1; c < t->ncols; c++)
            if (width[c] > width[widest]) widest = c;
        if (width[widest] <= 6) break;
        width[widest]--;
        total--;
    }
    bool style = use_style();
    if (style) fputs("\033[1m", stdout);
    for (int c = 0; c < t->ncols; c++) {
        if (c) fputs("  ", stdout);
        print_cell(t->head[c], width[c], t->right[c], c == t->ncols - 1);
    }
    fputs(style ? "\033[0m\n" : "\n", stdout);
    for (size_t r = 0; r < t->nrows; r++) {
        if (t->mark[r] && style) fputs("\033[1;33m", stdout);
        for (int c = 0; c < t->ncols; c++) {
            if (c) fputs("  ", stdout);
            print_cell(t->cells[r * t->ncols + c], width[c], t->right[c], c == t->ncols - 1);
        }
        fputs(t->mark[r] && style ? "\033[0m\n" : "\n", stdout);
    }
}

static void csv_field(const char *s, bool last)
{
    if (strpbrk(s, ",\"\n\r")) {
        fputc('"', stdout);
        for (; *s; s++) {
            if (*s == '"') fputc('"', stdout);
            fputc(*s, stdout);
        }
        fputc('"', stdout);
    } else {
        fputs(s, stdout);
    }
    fputc(last ? '\n' : ',', stdout);
}

static void table_csv(const struct table *t)
{
    for (int c = 0; c < t->ncols; c++)
        csv_field(t->head[c], c == t->ncols - 1);
    for (size_t r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++)
            csv_field(t->cells[r * t->ncols + c], c == t->ncols - 1);
}

/* ---- option parsing shared by all ------------------------------------------------------- */

struct common_opts {
    const char *db;
    bool json, csv;
};

enum { OPT_DB = 1000, OPT_JSON, OPT_CSV, OPT_HELP };
#define COMMON_LONG_OPTS                                                                           \
    {"db", required_argument, NULL, OPT_DB}, {"json", no_argument, NULL, OPT_JSON},                \
        {"csv", no_argument, NULL, OPT_CSV},                                                       \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* Returns 1 if ch was a common option (handled), 0 otherwise. */
static int common_opt(struct common_opts *o, int ch)
{
    switch (ch) {
    case OPT_DB:
        o->db = optarg;
        return 1;
    case OPT_JSON:
        o->json = true;
        return 1;
    case OPT_CSV:
        o->csv = true;
        return 1;
    }
    return 0;
}

static const char *const COMMON_HELP =
    "  --db FILE    the database (default: $MLQ_DB, db.path, else\n"
    "               $XDG_DATA_HOME/mlq/mlq.db)\n"
    "  --json       one JSON document (keys: docs/history.md)\n";

/* ---- mlq runs ------------------------------------------------------------------------------ */

/* Params shown in the table and the JSON's "params" object. */
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
            "usage: mlq runs [--state S] [--kind K] [--limit N] [--where params.KEY=VALUE]...\n"
            "                [--sort [-]METRIC] [--db FILE] [--json | --csv]\n\n"
            "Lists runs, newest first.\n\n"
            "  --state S    queued, running, succeeded, failed or cancelled\n"
            "  --kind K     train, eval or predict\n"
            "  --limit N    at most N runs (default 50; 0 = all)\n"
            "  --where K=V  only runs whose param K (e.g. params.optimizer.name) equals V;\n"
            "               repeatable, all must hold\n"
            "  --sort M     by final metric M, ascending; -M descending; runs without it last\n"
            "%s"
            "  --csv        comma-separated values, one line per run\n",
            COMMON_HELP);
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"kind", required_argument, NULL, 'k'},
        {"limit", required_argument, NULL, 'n'},
        {"where", required_argument, NULL, 'w'},
        {"sort", required_argument, NULL, 'o'},
        COMMON_LONG_OPTS,
        {NULL, 0, NULL, 0},
    };
    struct common_opts co = {0};
    struct store_run_filter f = {.state = -1, .kind = -1, .limit = 50};
    char where_buf[STORE_WHERE_MAX][512];
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        switch (ch) {
        case 's': {
            enum store_state st;
            if (store_state_parse(optarg, &st) != 0) {
                fprintf(stderr, "mlq runs: --state: unknown state '%s'\n", optarg);
                return EXIT_USAGE;
            }
            f.state = (int)st;
            break;
        }
        case 'k': {
            enum job_kind k;
            if (store_kind_parse(optarg, &k) != 0) {
                fprintf(stderr, "mlq runs: --kind: unknown kind '%s'\n", optarg);
                return EXIT_USAGE;
            }
            f.kind = (int)k;
            break;
        }
        case 'n': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (*end || end == optarg || v < 0) {
                fprintf(stderr, "mlq runs: --limit: not a count: '%s'\n", optarg);
                return EXIT_USAGE;
            }
            f.limit = v;
            break;
        }
        case 'w': {
            const char *kv = strncmp(optarg, "params.", 7) == 0 ? optarg + 7 : optarg;
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv || f.n_where == STORE_WHERE_MAX ||
                strlen(kv) >= sizeof where_buf[0]) {
                fprintf(stderr, "mlq runs: --where: expected params.KEY=VALUE (at most %d)\n",
                        STORE_WHERE_MAX);
                return EXIT_USAGE;
            }
            char *b = where_buf[f.n_where];
            snprintf(b, sizeof where_buf[0], "%s", kv);
            b[eq - kv] = '\0';
            f.where_key[f.n_where] = b;
            f.where_value[f.n_where] = b + (eq - kv) + 1;
            f.n_where++;
            break;
        }
        case 'o':
            f.sort_desc = optarg[0] == '-';
            f.sort_metric = optarg + f.sort_desc;
            if (!*f.sort_metric) {
                fprintf(stderr, "mlq runs: --sort: a metric name is needed\n");
                return EXIT_USAGE;
            }
            break;
        case 'h':
            runs_usage(stdout);
            return EXIT_OK;
        default:
            runs_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mlq runs: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    struct store *s;
    int rc = history_open("runs", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job *runs = NULL;
    size_t n = 0;
    if (store_runs_list(s, &f, &runs, &n) != 0) {
        fprintf(stderr, "mlq runs: %s\n", store_errmsg(s));
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    double now = store_now(s);
    json_t *arr = co.json ? json_array() : NULL;
    struct table t;
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
            json_object_set_new(o, "submitted", json_time(j->submitted));
            json_object_set_new(o, "started", json_time(j->started));
            json_object_set_new(o, "finished", json_time(j->finished));
            double d = job_duration(j, now);
            json_object_set_new(o, "duration", d >= 0 ? json_real(d) : json_null());
            json_object_set_new(o, "error", j->error ? json_string(j->error) : json_null());
            json_t *p = json_object();
            for (size_t k = 0; k < COUNT(main_params); k++) {
                const char *v = param_find(params[i], nparams[i], main_params[k]);
                if (v) json_object_set_new(p, main_params[k], param_json(v));
            }
            json_object_set_new(o, "params", p);
            json_t *m = json_object();
            for (size_t k = 0; k < nmets[i]; k++)
                json_object_set_new(m, mets[i][k].key, json_num(mets[i][k].value));
            json_object_set_new(o, "metrics", m);
            json_array_append_new(arr, o);
        }
        json_print(arr);
        arr = NULL;
        goto out;
    }

    int ncols = 0;
    table_init(&t, 0);
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
    t.ncols = ncols;
    for (size_t i = 0; i < n; i++) {
        const struct store_job *j = &runs[i];
        char id[24], sub[32], dur[32], opt[96], cells[TABLE_MAX_COLS][48];
        char *row[TABLE_MAX_COLS];
        snprintf(id, sizeof id, "%lld", (long long)j->id);
        if (co.csv)
            fmt_time(sub, sizeof sub, j->submitted);
        else
            fmt_ago(sub, sizeof sub, j->submitted, now);
        fmt_duration(dur, sizeof dur, job_duration(j, now));
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
        row[c++] = layers && j->kind == JOB_TRAIN ? (char *)layers : "-";
        for (size_t k = 0; k < COUNT(main_metrics); k++) {
            if (!metric_used[k]) continue;
            const struct store_metric *m = metric_find(mets[i], nmets[i], main_metrics[k]);
            if (m)
                fmt_value(cells[c], sizeof cells[c], m->value);
            else
                snprintf(cells[c], sizeof cells[c], "-");
            row[c] = cells[c];
            c++;
        }
        if (table_add(&t, row, false) != 0) {
            fprintf(stderr, "mlq runs: out of memory\n");
            table_free(&t);
            rc = EXIT_FAILURE_GENERIC;
            goto out;
        }
    }
    if (co.csv)
        table_csv(&t);
    else if (n == 0)
        printf("no runs%s\n", f.state >= 0 || f.kind >= 0 || f.n_where ? " match" : " yet");
    else
        table_print(&t);
    table_free(&t);

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

/* ---- mlq show ---------------------------------------------------------------------------- */

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
            COMMON_HELP);
}

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_LONG_OPTS, {NULL, 0, NULL, 0}};
    struct common_opts co = {0};
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        if (ch == 'h') {
            show_usage(stdout);
            return EXIT_OK;
        }
        show_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t id;
    if (optind != argc - 1) {
        show_usage(stderr);
        return EXIT_USAGE;
    }
    if (!history_parse_id("show", argv[optind], &id)) return EXIT_USAGE;
    struct store *s;
    int rc = history_open("show", co.db, false, &s);
    if (rc != EXIT_OK) return rc;

    struct store_job j = {0};
    struct store_metric *m = NULL;
    struct store_checkpoint *ck = NULL;
    size_t nm = 0, nck = 0;
    json_t *events = json_array();
    int ret = store_job_get(s, id, &j);
    if (ret == -ENOENT) {
        fprintf(stderr, "mlq show: no run %lld\n", (long long)id);
        rc = EXIT_NOT_FOUND;
        goto out;
    }
    if (ret == 0) ret = store_metrics_final(s, id, &m, &nm);
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
        json_object_set_new(o, "submitted", json_time(j.submitted));
        json_object_set_new(o, "started", json_time(j.started));
        json_object_set_new(o, "finished", json_time(j.finished));
        double d = job_duration(&j, now);
        json_object_set_new(o, "duration", d >= 0 ? json_real(d) : json_null());
        json_object_set_new(o, "error", j.error ? json_string(j.error) : json_null());
        json_object_set_new(o, "spec", spec ? json_incref(spec) : json_null());
        json_t *mo = json_object();
        for (size_t i = 0; i < nm; i++) {
            json_t *x = json_object();
            json_object_set_new(x, "value", json_num(m[i].value));
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
                                ck[i].has_metric ? json_num(ck[i].metric) : json_null());
            json_object_set_new(x, "time", json_real(ck[i].time));
            json_object_set_new(x, "best", json_boolean(ck[i].id == best));
            json_object_set_new(x, "last", json_boolean(i == nck - 1));
            json_array_append_new(ca, x);
        }
        json_object_set_new(o, "checkpoints", ca);
        json_object_set_new(o, "result", result ? json_incref(result) : json_null());
        json_object_set_new(o, "events", json_incref(events));
        json_print(o);
    } else {
        char a[64], b[64];
        printf("run %lld  %s  %s%s%s\n", (long long)j.id, spec_kind_name(j.kind),
               store_state_name(j.state), j.name[0] ? "  " : "", j.name);
        fmt_time(a, sizeof a, j.submitted);
        fmt_ago(b, sizeof b, j.submitted, now);
        printf("  %-10s %s (%s)\n", "submitted", a, b);
        fmt_time(a, sizeof a, j.started);
        printf("  %-10s %s\n", "started", a);
        fmt_time(a, sizeof a, j.finished);
        printf("  %-10s %s\n", "finished", a);
        fmt_duration(a, sizeof a, job_duration(&j, now));
        printf("  %-10s %s\n", "duration", a);
        printf("  %-10s %d of %d\n", "attempts", j.attempts, j.max_attempts);
        printf("  %-10s %s\n", "priority",
               j.priority ? (snprintf(a, sizeof a, "%d", j.priority), a) : "0");
        printf("  %-10s %s\n", "trainer", j.trainer[0] ? j.trainer : "-");
        if (j.run) printf("  %-10s %lld\n", "of run", (long long)j.run);
        if (j.cancel_requested && j.state == STORE_RUNNING) printf("  %-10s requested\n", "cancel");
        if (j.error) printf("  %-10s %s\n", "error", j.error);
        if (nm) {
            printf("\nfinal metrics\n");
            for (size_t i = 0; i < nm; i++) {
                fmt_value(a, sizeof a, m[i].value);
                printf("  %-16s %12s  (epoch %lld, step %lld)\n", m[i].key, a,
                       (long long)m[i].epoch, (long long)m[i].step);
            }
        }
        if (nck) {
            printf("\ncheckpoints\n  %5s %10s %10s %12s  %s\n", "EPOCH", "STEP", "SIZE", "METRIC",
                   "SAVED");
            for (size_t i = 0; i < nck; i++) {
                fmt_ago(a, sizeof a, ck[i].time, now);
                if (ck[i].has_metric)
                    fmt_value(b, sizeof b, ck[i].metric);
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
                fmt_time(a, sizeof a, json_real_value(json_object_get(e, "time")));
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
    store_job_free(&j);
    store_close(&s);
    return rc;
}

/* ---- mlq metrics -------------------------------------------------------------------------- */

/* Per key while walking: values for the chart and summary. */
struct series {
    char key[STORE_KEY_MAX];
    double *v;
    size_t n, cap;
    int64_t last_epoch;
};

struct metrics_walk {
    bool json, csv, rows; /* rows: print each point (csv, or --key on a table) */
    bool first;
    struct series *s;
    size_t ns, cap;
    int err;
};

static int metrics_cb(void *ctx, const struct store_metric *m)
{
    struct metrics_walk *w = ctx;
    if (w->json) {
        json_t *js = json_string(m->key);
        char *key = json_dumps(js, JSON_ENCODE_ANY);
        json_decref(js);
        printf("%s\n  {\"key\": %s, \"step\": %lld, \"epoch\": %lld, \"value\": ",
               w->first ? "" : ",", key ? key : "\"\"", (long long)m->step, (long long)m->epoch);
        free(key);
        if (isfinite(m->value))
            printf("%.15g", m->value);
        else
            fputs("null", stdout);
        printf(", \"time\": %.6f}", m->time);
        w->first = false;
        return 0;
    }
    if (w->csv) {
        csv_field(m->key, false);
        printf("%lld,%lld,%.15g,%.6f\n", (long long)m->step, (long long)m->epoch, m->value,
               m->time);
        return 0;
    }
    if (w->ns == 0 || strcmp(w->s[w->ns - 1].key, m->key) != 0) {
        if (w->ns == w->cap) {
            size_t ncap = w->cap ? w->cap * 2 : 8;
            struct series *p = realloc(w->s, ncap * sizeof *p);
            if (!p) return w->err = -ENOMEM;
            w->s = p;
            w->cap = ncap;
        }
        struct series *ns = &w->s[w->ns++];
        memset(ns, 0, sizeof *ns);
        snprintf(ns->key, sizeof ns->key, "%s", m->key);
    }
    struct series *se = &w->s[w->ns - 1];
    if (se->n == se->cap) {
        size_t ncap = se->cap ? se->cap * 2 : 64;
        double *p = realloc(se->v, ncap * sizeof *p);
        if (!p) return w->err = -ENOMEM;
        se->v = p;
        se->cap = ncap;
    }
    se->v[se->n++] = m->value;
    se->last_epoch = m->epoch;
    if (w->rows) {
        char v[32];
        fmt_value(v, sizeof v, m->value);
        printf("  %-16s %10lld %8lld %12s\n", m->key, (long long)m->step, (long long)m->epoch, v);
    }
    return 0;
}

/* One row of block characters, the series resampled to width cells (mean per cell). */
static void sparkline(char *out, size_t len, const double *v, size_t n, int width)
{
    static const char *const blocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    out[0] = '\0';
    if (n == 0 || width <= 0) return;
    size_t cells = n < (size_t)width ? n : (size_t)width;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
        }
    size_t o = 0;
    for (size_t c = 0; c < cells; c++) {
        size_t a = c * n / cells, b = (c + 1) * n / cells;
        double sum = 0;
        size_t k = 0;
        for (size_t i = a; i < b; i++)
            if (isfinite(v[i])) {
                sum += v[i];
                k++;
            }
        const char *glyph = " ";
        if (k) {
            double x = hi > lo ? (sum / k - lo) / (hi - lo) : 0.5;
            int idx = (int)(x * 7 + 0.5);
            glyph = blocks[idx < 0 ? 0 : idx > 7 ? 7 : idx];
        }
        size_t gl = strlen(glyph);
        if (o + gl + 1 > len) break;
        memcpy(out + o, glyph, gl);
        o += gl;
    }
    out[o] = '\0';
}

static void metrics_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq metrics ID [--key K] [--db FILE] [--json | --csv]\n\n"
            "A run's metrics. A table shows, per metric, its points, first, last, min and\n"
            "max values and a chart over the steps; with --key, every point of K as well.\n\n"
            "  --key K      only metric K (e.g. val_loss)\n%s"
            "  --csv        key,step,epoch,value,time lines\n",
            COMMON_HELP);
}

int cmd_metrics(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'}, COMMON_LONG_OPTS, {NULL, 0, NULL, 0}};
    struct common_opts co = {0};
    const char *key = NULL;
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        if (ch == 'k') {
            key = optarg;
            continue;
        }
        if (ch == 'h') {
            metrics_usage(stdout);
            return EXIT_OK;
        }
        metrics_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t id;
    if (optind != argc - 1) {
        metrics_usage(stderr);
        return EXIT_USAGE;
    }
    if (!history_parse_id("metrics", argv[optind], &id)) return EXIT_USAGE;
    struct store *s;
    int rc = history_open("metrics", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job j;
    int ret = store_job_get(s, id, &j);
    if (ret != 0) {
        if (ret == -ENOENT)
            fprintf(stderr, "mlq metrics: no run %lld\n", (long long)id);
        else
            fprintf(stderr, "mlq metrics: %s\n", store_errmsg(s));
        store_close(&s);
        return ret == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
    }
    store_job_free(&j);

    struct metrics_walk w = {.json = co.json,
                             .csv = co.csv && !co.json,
                             .first = true,
                             .rows = key != NULL && !co.json && !co.csv};
    if (w.json) fputs("[", stdout);
    if (w.csv) puts("key,step,epoch,value,time");
    if (w.rows) printf("  %-16s %10s %8s %12s\n", "KEY", "STEP", "EPOCH", "VALUE");
    ret = store_metrics_foreach(s, id, key, metrics_cb, &w);
    if (w.json) fputs(w.first ? "]\n" : "\n]\n", stdout);
    if (ret != 0) {
        fprintf(stderr, "mlq metrics: %s\n", w.err ? "out of memory" : store_errmsg(s));
        rc = EXIT_FAILURE_GENERIC;
    } else if (!w.json && !w.csv) {
        if (w.ns == 0) {
            printf(key ? "run %lld has no metric %s\n" : "run %lld has no metrics yet\n",
                   (long long)id, key);
        } else {
            if (w.rows) putchar('\n');
            struct table t;
            table_init(&t, 8);
            const char *head[] = {"METRIC", "POINTS", "EPOCHS", "FIRST",
                                  "LAST",   "MIN",    "MAX",    "CHART"};
            for (int c = 0; c < 8; c++) {
                t.head[c] = head[c];
                t.right[c] = c > 0 && c < 7;
            }
            int tw = term_width();
            int chart_w = tw ? tw - 80 : 40;
            chart_w = chart_w < 12 ? 12 : chart_w > 60 ? 60 : chart_w;
            for (size_t i = 0; i < w.ns; i++) {
                struct series *se = &w.s[i];
                double lo = INFINITY, hi = -INFINITY;
                for (size_t k = 0; k < se->n; k++)
                    if (isfinite(se->v[k])) {
                        lo = se->v[k] < lo ? se->v[k] : lo;
                        hi = se->v[k] > hi ? se->v[k] : hi;
                    }
                char pts[24], ep[24], first[32], last[32], mn[32], mx[32], chart[64 * 3 + 1];
                snprintf(pts, sizeof pts, "%zu", se->n);
                snprintf(ep, sizeof ep, "%lld", (long long)se->last_epoch);
                fmt_value(first, sizeof first, se->v[0]);
                fmt_value(last, sizeof last, se->v[se->n - 1]);
                fmt_value(mn, sizeof mn, lo);
                fmt_value(mx, sizeof mx, hi);
                sparkline(chart, sizeof chart, se->v, se->n, chart_w);
                char *row[] = {se->key, pts, ep, first, last, mn, mx, chart};
                table_add(&t, row, false);
            }
            table_print(&t);
            table_free(&t);
        }
    }
    for (size_t i = 0; i < w.ns; i++)
        free(w.s[i].v);
    free(w.s);
    store_close(&s);
    return rc;
}

/* ---- mlq compare -------------------------------------------------------------------------- */

#define COMPARE_MAX 16

static void compare_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq compare ID ID... [--db FILE] [--json | --csv]\n\n"
            "Params and final metrics of up to %d runs side by side; rows that differ are\n"
            "marked '*' (and highlighted on a terminal).\n\n%s"
            "  --csv        section,key,value per run...,differs lines\n",
            COMPARE_MAX, COMMON_HELP);
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
    static const struct option opts[] = {COMMON_LONG_OPTS, {NULL, 0, NULL, 0}};
    struct common_opts co = {0};
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        if (ch == 'h') {
            compare_usage(stdout);
            return EXIT_OK;
        }
        compare_usage(stderr);
        return EXIT_USAGE;
    }
    int nruns = argc - optind;
    if (nruns < 1 || nruns > COMPARE_MAX) {
        compare_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t ids[COMPARE_MAX];
    for (int i = 0; i < nruns; i++)
        if (!history_parse_id("compare", argv[optind + i], &ids[i])) return EXIT_USAGE;
    struct store *s;
    int rc = history_open("compare", co.db, false, &s);
    if (rc != EXIT_OK) return rc;

    struct crow *rows = NULL;
    size_t nrows = 0, cap = 0;
    for (int r = 0; r < nruns && rc == EXIT_OK; r++) {
        struct store_job j;
        int ret = store_job_get(s, ids[r], &j);
        if (ret == -ENOENT) {
            fprintf(stderr, "mlq compare: no run %lld\n", (long long)ids[r]);
            rc = EXIT_NOT_FOUND;
            break;
        }
        struct store_param *p = NULL;
        struct store_metric *m = NULL;
        size_t np = 0, nm = 0;
        if (ret == 0) ret = store_params_list(s, ids[r], &p, &np);
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
        for (size_t i = 0; ret == 0 && i < nm; i++) {
            char v[32];
            snprintf(v, sizeof v, "%.6g", m[i].value);
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
                                                ? json_num(strtod(v, NULL))
                                                : json_string(v));
            }
            json_object_set_new(x, "section", json_string(rows[i].section));
            json_object_set_new(x, "key", json_string(rows[i].key));
            json_object_set_new(x, "values", vals);
            json_object_set_new(x, "differs", json_boolean(differs));
            json_array_append_new(jr, x);
        }
        json_object_set_new(o, "rows", jr);
        json_print(o);
        goto out;
    }
    struct table t;
    table_init(&t, nruns + 2);
    char heads[COMPARE_MAX][32];
    t.head[0] = "";
    t.head[1] = "KEY";
    for (int r = 0; r < nruns; r++) {
        snprintf(heads[r], sizeof heads[r], "run %lld", (long long)ids[r]);
        t.head[r + 2] = heads[r];
    }
    for (size_t i = 0; i < nrows; i++) {
        bool differs = false;
        char *row[COMPARE_MAX + 2];
        for (int r = 0; r < nruns; r++) {
            const char *v = rows[i].val[r];
            differs |= (v == NULL) != (rows[i].val[0] == NULL) ||
                       (v && rows[i].val[0] && strcmp(v, rows[i].val[0]) != 0);
            row[r + 2] = v ? (char *)v : "-";
        }
        char key[300];
        snprintf(key, sizeof key, "%s%s", strcmp(rows[i].section, "metric") == 0 ? "metric " : "",
                 rows[i].key);
        row[0] = differs ? "*" : "";
        row[1] = key;
        if (co.csv) {
            csv_field(rows[i].section, false);
            csv_field(rows[i].key, false);
            for (int r = 0; r < nruns; r++)
                csv_field(rows[i].val[r] ? rows[i].val[r] : "", false);
            csv_field(differs ? "1" : "0", true);
        } else {
            table_add(&t, row, differs);
        }
    }
    if (!co.csv) table_print(&t);
    table_free(&t);

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

/* ---- mlq rm and gc ------------------------------------------------------------------------- */

static void rm_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq rm ID... [--force] [--db FILE] [--json]\n\n"
            "Deletes runs with their params, metrics, checkpoints and events, and gives the\n"
            "space back. Queued and running jobs are refused (cancel them first) unless\n"
            "--force. All ids must exist, or nothing is deleted.\n\n"
            "  --force      delete queued and running jobs too (the broker may still be\n"
            "               working on them)\n%s",
            COMMON_HELP);
}

int cmd_rm(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'}, COMMON_LONG_OPTS, {NULL, 0, NULL, 0}};
    struct common_opts co = {0};
    bool force = false;
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "hf", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        if (ch == 'f') {
            force = true;
            continue;
        }
        if (ch == 'h') {
            rm_usage(stdout);
            return EXIT_OK;
        }
        rm_usage(stderr);
        return EXIT_USAGE;
    }
    int n = argc - optind;
    if (n < 1) {
        rm_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    if (!ids) return EXIT_FAILURE_GENERIC;
    for (int i = 0; i < n; i++)
        if (!history_parse_id("rm", argv[optind + i], &ids[i])) {
            free(ids);
            return EXIT_USAGE;
        }
    struct store *s;
    int rc = history_open("rm", co.db, true, &s);
    if (rc != EXIT_OK) {
        free(ids);
        return rc;
    }
    /* Check every id before deleting any. */
    for (int i = 0; i < n && rc == EXIT_OK; i++) {
        struct store_job j;
        int ret = store_job_get(s, ids[i], &j);
        if (ret == -ENOENT) {
            fprintf(stderr, "mlq rm: no run %lld; nothing deleted\n", (long long)ids[i]);
            rc = EXIT_NOT_FOUND;
        } else if (ret != 0) {
            fprintf(stderr, "mlq rm: %s\n", store_errmsg(s));
            rc = EXIT_FAILURE_GENERIC;
        } else if (!force && !store_state_terminal(j.state)) {
            fprintf(stderr,
                    "mlq rm: run %lld is %s; cancel it first (or --force); nothing "
                    "deleted\n",
                    (long long)ids[i], store_state_name(j.state));
            rc = EXIT_FAILURE_GENERIC;
        }
        if (ret == 0) store_job_free(&j);
    }
    int ret = 0;
    if (rc == EXIT_OK) ret = store_begin(s);
    for (int i = 0; rc == EXIT_OK && ret == 0 && i < n; i++) {
        ret = store_run_delete(s, ids[i]);
        if (ret == -ENOENT) /* the same id twice */
            ret = 0;
    }
    if (rc == EXIT_OK && ret == 0) ret = store_commit(s);
    if (rc == EXIT_OK && ret == 0) ret = store_vacuum(s);
    if (rc == EXIT_OK && ret != 0) {
        store_rollback(s);
        fprintf(stderr, "mlq rm: %s\n", store_errmsg(s));
        rc = EXIT_FAILURE_GENERIC;
    }
    if (rc == EXIT_OK) {
        if (co.json) {
            json_t *a = json_array();
            for (int i = 0; i < n; i++)
                json_array_append_new(a, json_integer(ids[i]));
            json_t *o = json_object();
            json_object_set_new(o, "removed", a);
            json_print(o);
        } else {
            for (int i = 0; i < n; i++)
                printf("removed run %lld\n", (long long)ids[i]);
        }
    }
    free(ids);
    store_close(&s);
    return rc;
}

static void gc_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq gc [--keep N] [--older-than DAYS] [--dry-run] [--db FILE] [--json]\n\n"
            "Deletes finished runs (succeeded, failed, cancelled) beyond the newest N or\n"
            "finished more than DAYS ago, with everything they hold, then gives the space\n"
            "back to the file system. Queued and running jobs are never touched. At least\n"
            "one of --keep and --older-than is required.\n\n"
            "  --keep N           keep the newest N finished runs\n"
            "  --older-than DAYS  delete finished runs older than DAYS (fractions allowed)\n"
            "  --dry-run          count what would be deleted, delete nothing\n%s",
            COMMON_HELP);
}

static long long file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {{"keep", required_argument, NULL, 'k'},
                                         {"older-than", required_argument, NULL, 'o'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         COMMON_LONG_OPTS,
                                         {NULL, 0, NULL, 0}};
    struct common_opts co = {0};
    struct store_gc_opts g = {.keep = -1};
    optind = 0;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (common_opt(&co, ch)) continue;
        switch (ch) {
        case 'k':
            g.keep = strtoll(optarg, &end, 10);
            if (*end || end == optarg || g.keep < 0) {
                fprintf(stderr, "mlq gc: --keep: not a count: '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'o':
            g.older_than = strtod(optarg, &end) * 86400;
            if (*end || end == optarg || !(g.older_than > 0)) {
                fprintf(stderr, "mlq gc: --older-than: not a positive number of days: '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'n':
            g.dry_run = true;
            break;
        case 'h':
            gc_usage(stdout);
            return EXIT_OK;
        default:
            gc_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || (g.keep < 0 && g.older_than <= 0)) {
        gc_usage(stderr);
        return EXIT_USAGE;
    }
    char path[4096] = "";
    struct store *s;
    int rc = history_open("gc", co.db, !g.dry_run, &s);
    if (rc != EXIT_OK) return rc;
    snprintf(path, sizeof path, "%s", history_path());
    long long before = path[0] ? file_bytes(path) : 0;
    int64_t deleted = 0;
    if (store_gc(s, &g, &deleted) != 0) {
        fprintf(stderr, "mlq gc: %s\n", store_errmsg(s));
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    store_close(&s);
    long long after = path[0] ? file_bytes(path) : 0;
    if (co.json) {
        json_t *o = json_object();
        json_object_set_new(o, "removed", json_integer(deleted));
        json_object_set_new(o, "dry_run", json_boolean(g.dry_run));
        json_object_set_new(o, "bytes_freed",
                            path[0] && before > after ? json_integer(before - after)
                                                      : json_integer(0));
        json_print(o);
    } else if (g.dry_run) {
        printf("would remove %lld run%s\n", (long long)deleted, deleted == 1 ? "" : "s");
    } else {
        printf("removed %lld run%s", (long long)deleted, deleted == 1 ? "" : "s");
        if (path[0] && before > after) printf(", freed %.1f MB", (double)(before - after) / 1e6);
        putchar('\n');
    }
    return EXIT_OK;
}
