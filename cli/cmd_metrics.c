/* mlq metrics: a run's metrics, per metric a summary and a chart, every
 * point with --key, or the points as --json or --csv (docs/history.md). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
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
    int64_t *epoch; /* each point's */
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
        char v[40], t[40];
        history_fmt_exact(v, sizeof v, m->value);
        history_fmt_exact(t, sizeof t, m->time);
        printf("%s, \"time\": %s}", isfinite(m->value) ? v : "null", t);
        w->first = false;
        return 0;
    }
    if (w->csv) {
        history_csv_field(m->key, false);
        char v[40], t[40];
        history_fmt_exact(v, sizeof v, m->value);
        history_fmt_exact(t, sizeof t, m->time);
        printf("%lld,%lld,%s,%s\n", (long long)m->step, (long long)m->epoch, v, t);
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
        int64_t *e = realloc(se->epoch, ncap * sizeof *e);
        if (!e) return w->err = -ENOMEM;
        se->epoch = e;
        se->cap = ncap;
    }
    se->epoch[se->n] = m->epoch;
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

/* ---- --plot: a line chart in Braille dots ---------------------------------------------- */

#define PLOT_ROWS 10
#define PLOT_LABEL 10 /* the y labels' columns */

static void dot(uint8_t *cells, int cols, int rows, int dx, int dy)
{
    static const uint8_t bit[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};
    if (dx < 0 || dy < 0 || dx >= cols * 2 || dy >= rows * 4) return;
    cells[(dy / 4) * cols + dx / 2] |= bit[dy % 4][dx % 2];
}

static void put_braille(uint8_t bits)
{
    /* U+2800 + bits, in UTF-8; an empty cell as a space */
    if (!bits) {
        putchar(' ');
        return;
    }
    unsigned cp = 0x2800u + bits;
    putchar((char)(0xe0 | (cp >> 12)));
    putchar((char)(0x80 | ((cp >> 6) & 0x3f)));
    putchar((char)(0x80 | (cp & 0x3f)));
}

/* One series over its epochs, in width columns: every point kept (the x axis
 * spans the first to the last epoch, however many), lines between them, the
 * y axis labelled at its top, middle and bottom, epochs under the x axis
 * with the last one always shown. */
static void plot_series(const struct series *se, int width)
{
    int cols = width - PLOT_LABEL - 2, rows = PLOT_ROWS;
    if (cols < 10) cols = 10;
    double lo = INFINITY, hi = -INFINITY;
    int64_t e0 = se->epoch[0], e1 = se->epoch[se->n - 1];
    size_t best = 0;
    bool lower = !strstr(se->key, "accuracy");
    for (size_t i = 0; i < se->n; i++) {
        if (!isfinite(se->v[i])) continue;
        lo = se->v[i] < lo ? se->v[i] : lo;
        hi = se->v[i] > hi ? se->v[i] : hi;
        if (!isfinite(se->v[best]) || (lower ? se->v[i] < se->v[best] : se->v[i] > se->v[best]))
            best = i;
    }
    char last[32], bestv[32];
    history_fmt_value(last, sizeof last, se->v[se->n - 1]);
    history_fmt_value(bestv, sizeof bestv, se->v[best]);
    printf("%s by epoch (%zu points): last %s, %s %s at epoch %lld\n", se->key, se->n, last,
           lower ? "min" : "max", bestv, (long long)se->epoch[best]);
    if (!(hi >= lo)) {
        printf("  (no finite values)\n\n");
        return;
    }
    if (hi == lo) lo -= lo ? fabs(lo) * 0.05 : 1, hi += hi ? fabs(hi) * 0.05 : 1;
    uint8_t *cells = calloc((size_t)rows * cols, 1);
    if (!cells) return;
    int dw = cols * 2, dh = rows * 4, px = -1, py = -1;
    for (size_t i = 0; i < se->n; i++) {
        if (!isfinite(se->v[i])) {
            px = -1;
            continue;
        }
        int x = e1 > e0 ? (int)lround((double)(se->epoch[i] - e0) / (double)(e1 - e0) * (dw - 1))
                        : dw / 2;
        int y = (int)lround((hi - se->v[i]) / (hi - lo) * (dh - 1));
        if (px < 0) {
            dot(cells, cols, rows, x, y);
        } else { /* a line from the last point (Bresenham) */
            int dx = abs(x - px), sx = px < x ? 1 : -1, dy = -abs(y - py), sy = py < y ? 1 : -1;
            int err = dx + dy, cx = px, cy = py;
            for (;;) {
                dot(cells, cols, rows, cx, cy);
                if (cx == x && cy == y) break;
                int e2 = 2 * err;
                if (e2 >= dy) err += dy, cx += sx;
                if (e2 <= dx) err += dx, cy += sy;
            }
        }
        px = x;
        py = y;
    }
    for (int r = 0; r < rows; r++) {
        char lab[32] = "";
        bool labelled = r == 0 || r == rows - 1 || r == rows / 2;
        if (labelled) {
            double v = hi - (hi - lo) * ((double)r * 4 + 1.5) / (dh - 1);
            if (r == 0) v = hi;
            if (r == rows - 1) v = lo;
            snprintf(lab, sizeof lab, "%.4g", v);
        }
        printf("%*s %s", PLOT_LABEL - 1, lab, labelled ? "┤" : "│");
        int end = cols;
        while (end > 0 && !cells[r * cols + end - 1])
            end--;
        for (int c = 0; c < end; c++)
            put_braille(cells[r * cols + c]);
        putchar('\n');
    }
    /* the x axis: round epochs where they fit, the first and the last always */
    char *under = malloc((size_t)cols + 1);
    bool *tick = calloc((size_t)cols, sizeof *tick);
    if (under && tick) {
        memset(under, ' ', (size_t)cols);
        under[cols] = '\0';
        int64_t span = e1 - e0, step = 1;
        for (int k = 1; span / step > cols / 8; k++)
            step = (int64_t)((k % 3 == 0 ? 1 : k % 3 == 1 ? 2 : 5) * pow(10, k / 3));
        char num[24];
        int lastlen = snprintf(num, sizeof num, "%lld", (long long)e1), next_free = 0;
        for (int64_t e = e0; e < e1; e = e == e0 ? (e0 / step + 1) * step : e + step) {
            int c = (int)lround((double)(e - e0) / (double)span * (dw - 1)) / 2;
            int len = snprintf(num, sizeof num, "%lld", (long long)e);
            int start = c - len / 2 < 0 ? 0 : c - len / 2;
            if (start < next_free || start + len + 1 > cols - lastlen) continue;
            memcpy(under + start, num, (size_t)len);
            tick[c] = true;
            next_free = start + len + 1;
        }
        int lc = span > 0 ? cols - 1 : cols / 2;
        int start = span > 0 ? cols - lastlen : lc - lastlen / 2;
        snprintf(num, sizeof num, "%lld", (long long)e1);
        if (start >= next_free && start >= 0) {
            memcpy(under + start, num, (size_t)lastlen);
            tick[lc] = true;
        }
        printf("%*s └", PLOT_LABEL - 1, "");
        for (int c = 0; c < cols; c++)
            fputs(tick[c] ? "┬" : "─", stdout);
        int end = cols;
        while (end > 0 && under[end - 1] == ' ')
            end--;
        under[end] = '\0';
        printf("\n%*s  %s\n\n", PLOT_LABEL - 1, "", under);
    }
    free(under);
    free(tick);
    free(cells);
}

static void metrics_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq metrics ID [--key K] [--plot] [--db FILE] [--json | --csv]\n\n"
            "A run's metrics. A table shows, per metric, its points, first, last, min and\n"
            "max values and a chart over the steps; with --key, every point of K as well.\n\n"
            "  --key K      only metric K (e.g. val_loss)\n"
            "  --plot       a line chart per metric, as wide as the terminal, with axes\n%s"
            "  --csv        key,step,epoch,value,time lines\n",
            history_common_help);
}

struct metrics_args {
    const char *key;
    bool plot;
};

static int metrics_option(void *ctx, int ch, const char *arg)
{
    struct metrics_args *a = ctx;
    if (ch == 'k') a->key = arg;
    if (ch == 'p') a->plot = true;
    return HISTORY_PROCEED;
}

int cmd_metrics(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                         {"plot", no_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    struct metrics_args a = {0};
    const struct history_cmd cmd = {.name = "metrics",
                                    .opts = opts,
                                    .option = metrics_option,
                                    .ctx = &a,
                                    .usage = metrics_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    const char *key = a.key;
    if (a.plot && (co.json || co.csv)) {
        fprintf(stderr, "mlq metrics: --plot draws for people; --json and --csv are for scripts\n");
        return EXIT_USAGE;
    }
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
                             .rows = key != NULL && !co.json && !co.csv && !a.plot};
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
        } else if (a.plot) {
            int tw = history_term_width();
            for (size_t i = 0; i < w.ns; i++)
                plot_series(&w.s[i], tw ? tw : 80);
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
    for (size_t i = 0; i < w.ns; i++) {
        free(w.s[i].v);
        free(w.s[i].epoch);
    }
    free(w.s);
    store_close(&s);
    return rc;
}
