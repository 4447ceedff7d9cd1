/* mlq metrics: a run's metrics, per metric a summary and a chart, every
 * point with --key, or the points as --json or --csv (docs/history.md). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "history.h"
#include "store.h"

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
        history_csv_field(m->key, false);
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
        history_fmt_value(v, sizeof v, m->value);
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
            history_common_help);
}

static int metrics_option(void *ctx, int ch, const char *arg)
{
    if (ch == 'k') *(const char **)ctx = arg;
    return HISTORY_PROCEED;
}

int cmd_metrics(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'}, {NULL, 0, NULL, 0}};
    const char *key = NULL;
    const struct history_cmd cmd = {.name = "metrics",
                                    .opts = opts,
                                    .option = metrics_option,
                                    .ctx = &key,
                                    .usage = metrics_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    struct store *s;
    rc = history_open("metrics", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job j;
    rc = history_job_get("metrics", s, id, &j);
    if (rc != EXIT_OK) {
        store_close(&s);
        return rc;
    }
    store_job_free(&j);

    struct metrics_walk w = {.json = co.json,
                             .csv = co.csv && !co.json,
                             .first = true,
                             .rows = key != NULL && !co.json && !co.csv};
    if (w.json) fputs("[", stdout);
    if (w.csv) puts("key,step,epoch,value,time");
    if (w.rows) printf("  %-16s %10s %8s %12s\n", "KEY", "STEP", "EPOCH", "VALUE");
    int ret = store_metrics_foreach(s, id, key, metrics_cb, &w);
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
            struct history_table t;
            history_table_init(&t, 8);
            const char *head[] = {"METRIC", "POINTS", "EPOCHS", "FIRST",
                                  "LAST",   "MIN",    "MAX",    "CHART"};
            for (int c = 0; c < 8; c++) {
                t.head[c] = head[c];
                t.right[c] = c > 0 && c < 7;
            }
            int tw = history_term_width();
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
                history_fmt_value(first, sizeof first, se->v[0]);
                history_fmt_value(last, sizeof last, se->v[se->n - 1]);
                history_fmt_value(mn, sizeof mn, lo);
                history_fmt_value(mx, sizeof mx, hi);
                sparkline(chart, sizeof chart, se->v, se->n, chart_w);
                char *row[] = {se->key, pts, ep, first, last, mn, mx, chart};
                history_table_add(&t, row, false);
            }
            history_table_print(&t);
            history_table_free(&t);
        }
    }
    for (size_t i = 0; i < w.ns; i++)
        free(w.s[i].v);
    free(w.s);
    store_close(&s);
    return rc;
}
