/* What the history commands share: opening the database, run ids, the
 * common options, and how tables, times and numbers read (history.h). */
#include "history.h"

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
#include "spec.h"
#include "spec_model.h"
#include "store.h"

/* ---- the database and run ids ----------------------------------------------------------- */

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
        if (cli_config_load(&cfg, NULL, err, sizeof err) != 0) {
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

bool history_parse_ids(const char *cmd, char **texts, int n, int64_t *ids)
{
    for (int i = 0; i < n; i++)
        if (!history_parse_id(cmd, texts[i], &ids[i])) return false;
    return true;
}

int history_job_get(const char *cmd, struct store *s, int64_t id, struct store_job *j)
{
    int ret = store_job_get(s, id, j);
    if (ret == -ENOENT) {
        fprintf(stderr, "mlq %s: no run %lld\n", cmd, (long long)id);
        return EXIT_NOT_FOUND;
    }
    if (ret != 0) {
        fprintf(stderr, "mlq %s: %s\n", cmd, store_errmsg(s));
        return EXIT_FAILURE_GENERIC;
    }
    return EXIT_OK;
}

/* ---- options ----------------------------------------------------------------------------- */

const char history_common_help[] = "  --db FILE    the database (default: $MLQ_DB, db.path, else\n"
                                   "               $XDG_DATA_HOME/mlq/mlq.db)\n"
                                   "  --json       one JSON document (keys: docs/history.md)\n";

enum { OPT_DB = 1000, OPT_JSON, OPT_CSV };
#define HISTORY_MAX_OPTS 16 /* a command's own long options, at most */

int history_args(const struct history_cmd *cmd, int argc, char **argv, struct history_opts *o)
{
    /* The command's own options first: getopt lists ambiguous abbreviations
     * in table order. */
    static const struct option common[] = {
        {"db", required_argument, NULL, OPT_DB},
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"help", no_argument, NULL, 'h'},
    };
    struct option all[HISTORY_MAX_OPTS + sizeof common / sizeof common[0] + 1];
    size_t n = 0;
    for (const struct option *p = cmd->opts; p && p->name && n < HISTORY_MAX_OPTS; p++)
        all[n++] = *p;
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        if (common[i].val != OPT_CSV || !cmd->no_csv) all[n++] = common[i];
    all[n] = (struct option){NULL, 0, NULL, 0};
    char shortopts[32];
    snprintf(shortopts, sizeof shortopts, "h%s", cmd->shortopts ? cmd->shortopts : "");

    *o = (struct history_opts){0};
    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, shortopts, all, NULL)) != -1) {
        switch (ch) {
        case OPT_DB:
            o->db = optarg;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_CSV:
            o->csv = true;
            break;
        case 'h':
            cmd->usage(stdout);
            return EXIT_OK;
        default: {
            /* '?': an unknown option or a missing argument (getopt said which). */
            if (ch == '?' || !cmd->option) {
                cmd->usage(stderr);
                return EXIT_USAGE;
            }
            int rc = cmd->option(cmd->ctx, ch, optarg);
            if (rc != HISTORY_PROCEED) return rc;
        }
        }
    }
    o->argi = optind;
    return HISTORY_PROCEED;
}

int history_args_id(const struct history_cmd *cmd, int argc, char **argv, struct history_opts *o,
                    int64_t *id)
{
    int rc = history_args(cmd, argc, argv, o);
    if (rc != HISTORY_PROCEED) return rc;
    if (o->argi != argc - 1) {
        cmd->usage(stderr);
        return EXIT_USAGE;
    }
    return history_parse_id(cmd->name, argv[o->argi], id) ? HISTORY_PROCEED : EXIT_USAGE;
}

/* ---- formatting ------------------------------------------------------------------------- */

int history_term_width(void)
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

void history_fmt_duration(char *buf, size_t len, double secs)
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

void history_fmt_ago(char *buf, size_t len, double t, double now)
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

void history_fmt_time(char *buf, size_t len, double t)
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

void history_fmt_value(char *buf, size_t len, double v)
{
    if (!isfinite(v))
        snprintf(buf, len, isnan(v) ? "nan" : "inf");
    else if (v != 0 && (fabs(v) < 1e-3 || fabs(v) >= 1e6))
        snprintf(buf, len, "%.4g", v);
    else
        snprintf(buf, len, "%.4f", v);
}

double history_job_duration(const struct store_job *j, double now)
{
    if (j->started <= 0) return -1;
    return (j->finished > 0 ? j->finished : now) - j->started;
}

void history_fmt_exact(char *buf, size_t len, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, len, isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    /* A double of at most 15 significant digits prints as those at %.15g
     * (its error is below half a unit of the 15th digit); 17 always read
     * back. */
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, len, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eE") && strlen(buf) + 3 <= len) strcat(buf, ".0");
}

/* JSON numbers for times; null when not yet, and for NaN (JSON has none). */
json_t *history_json_time(double t)
{
    return t > 0 ? json_real(t) : json_null();
}
json_t *history_json_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* jansson prints every real of a document at one precision: 17 digits read
 * back exactly but print 0.1 as 0.10000000000000001, 15 print 0.1 but lose
 * the last digits of a float's value. So the document is printed at 17 and
 * each real, a number token outside strings with a '.' or an exponent, is
 * printed again in its shortest exact form, which is never longer. */
char *history_json_dumps(const json_t *doc, size_t flags)
{
    char *text =
        json_dumps(doc, (flags & ~(size_t)JSON_REAL_PRECISION(0x1f)) | JSON_REAL_PRECISION(17));
    if (!text) return NULL;
    char *r = text, *w = text;
    while (*r) {
        if (*r == '"') {
            *w++ = *r++;
            while (*r && *r != '"') {
                if (*r == '\\' && r[1]) *w++ = *r++;
                *w++ = *r++;
            }
            if (*r) *w++ = *r++;
        } else if (*r == '-' || (*r >= '0' && *r <= '9')) {
            size_t n = strspn(r, "+-.eE0123456789");
            char num[40];
            bool real = memchr(r, '.', n) || memchr(r, 'e', n) || memchr(r, 'E', n);
            if (real && n < sizeof num) {
                char *end;
                double v = strtod(r, &end);
                history_fmt_exact(num, sizeof num, v);
                size_t m = strlen(num);
                if (end == r + n && m <= n) {
                    memcpy(w, num, m);
                    w += m;
                    r += n;
                    continue;
                }
            }
            memmove(w, r, n);
            w += n;
            r += n;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return text;
}

void history_json_print(json_t *doc)
{
    char *text = history_json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    json_decref(doc);
}

/* ---- tables ---------------------------------------------------------------------------- */

void history_table_init(struct history_table *t, int ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
}

int history_table_add(struct history_table *t, char **row, bool mark)
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

void history_table_free(struct history_table *t)
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

void history_table_print(const struct history_table *t)
{
    size_t width[HISTORY_TABLE_MAX_COLS];
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
    int tw = history_term_width();
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

void history_csv_field(const char *s, bool last)
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

void history_table_csv(const struct history_table *t)
{
    for (int c = 0; c < t->ncols; c++)
        history_csv_field(t->head[c], c == t->ncols - 1);
    for (size_t r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++)
            history_csv_field(t->cells[r * t->ncols + c], c == t->ncols - 1);
}

const char *history_model_line(json_t *spec, char *buf, size_t len)
{
    struct mlq_spec *s = malloc(sizeof *s);
    char err[256];
    const char *line = NULL;
    if (s && spec && spec_from_json(spec, s, err, sizeof err) == 0 && s->kind == JOB_TRAIN)
        line = spec_model_describe(s, buf, len);
    free(s);
    return line;
}

const char *history_layers_cell(const char *value, char *buf, size_t len)
{
    snprintf(buf, len, "%s", value);
    if (value[0] != '[' || !strchr(value, '{')) return buf;
    json_t *layers = json_loads(value, 0, NULL);
    json_t *doc =
        layers ? json_pack("{s:s, s:{s:o}}", "dataset", "-", "model", "layers", layers) : NULL;
    if (!history_model_line(doc, buf, len)) snprintf(buf, len, "%s", value);
    json_decref(doc);
    return buf;
}
