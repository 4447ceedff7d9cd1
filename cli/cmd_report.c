/* mlq report: one self-contained HTML file of runs, read from the database:
 * their curves overlaid (a log-scale variant for losses, the best epoch
 * marked, runs beyond the readable count summarised), their evaluations
 * (confusion matrix, per-class precision, recall and F1), their parameters
 * with the differences marked, the final metrics ranked, and for a search
 * over parameters the parallel coordinates, the metric against each
 * parameter and how far each run went (docs/history.md, "mlq report").
 *
 * Inline SVG and CSS only (cli/svg.c draws the charts): no script, no
 * network, no other file. Selection: run ids, or the filters of mlq runs;
 * a sweep or experiment (issue 12) is one more way to fill `runs`. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "atomic_file.h"
#include "cli.h"
#include "history.h"
#include "store.h"
#include "svg.h"

#define REPORT_TOP_DEFAULT 10 /* runs drawn in colour */
#define REPORT_TOP_MAX 20
#define REPORT_FAINT_MAX 100   /* beyond this many others, a band instead of faint curves */
#define REPORT_PARAMS_MAX 20   /* runs side by side in the parameters table */
#define REPORT_EVALS_MAX 12    /* evaluations drawn */
#define REPORT_AXES_MAX 12     /* parameters in the parallel coordinates */
#define REPORT_SCATTER_MAX 8   /* parameters drawn against the metric */
#define REPORT_TABLE_PARAMS 8  /* varying parameters as columns of the ranking */
#define REPORT_TABLE_METRICS 8 /* final metrics as columns of the ranking */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the runs -------------------------------------------------------------------------------- */

struct rseries {
    char key[STORE_KEY_MAX];
    double *x, *y; /* epoch, value: one per stored step, in step order */
    size_t n, cap;
};

struct rrun {
    struct store_job j;
    struct store_param *p;
    size_t np;
    struct rseries *s;
    size_t ns, scap;
    double score;   /* the ranking metric's final value; NaN: none */
    int64_t epochs; /* the last epoch recorded */
    int color;      /* palette index when highlighted, else -1 */
};

struct report {
    struct store *st;
    struct rrun *runs;
    size_t n, cap;
    struct store_job *evals; /* with result_json */
    size_t nevals, evals_cap, evals_more;
    /* options */
    const char *output, *metric, *title;
    int mode; /* 0: from the metric's name, 1: min, 2: max */
    int top;
    int64_t ids[256];
    size_t nids;
    struct store_run_filter f;
    char where_buf[STORE_WHERE_MAX][512];
    bool lower_better;
    int err; /* -ENOMEM met while loading */
    /* --sweep ID: the sweep and its trials (best first), the fields its
     * space samples, and its scheduler's rungs (in epochs) */
    int64_t sweep;
    struct store_sweep sw;
    bool have_sweep;
    struct store_trial *trials;
    size_t ntrials;
    char **sampled;
    size_t nsampled;
    double rungs[32];
    size_t nrungs;
    const char *experiment; /* --experiment NAME */
    char title_buf[STORE_NAME_MAX + 64];
};

static struct rseries *series_of(struct rrun *r, const char *key)
{
    for (size_t i = r->ns; i-- > 0;)
        if (strcmp(r->s[i].key, key) == 0) return &r->s[i];
    return NULL;
}

static const double *final_of(const struct rrun *r, const char *key)
{
    for (size_t i = 0; i < r->ns; i++)
        if (strcmp(r->s[i].key, key) == 0 && r->s[i].n) return &r->s[i].y[r->s[i].n - 1];
    return NULL;
}

static const char *param_of(const struct rrun *r, const char *key)
{
    for (size_t i = 0; i < r->np; i++)
        if (strcmp(r->p[i].key, key) == 0) return r->p[i].value;
    return NULL;
}

static int metric_cb(void *ctx, const struct store_metric *m)
{
    struct rrun *r = ctx;
    struct rseries *se = r->ns ? &r->s[r->ns - 1] : NULL;
    if (!se || strcmp(se->key, m->key) != 0) {
        if (r->ns == r->scap) {
            size_t ncap = r->scap ? r->scap * 2 : 8;
            struct rseries *p = realloc(r->s, ncap * sizeof *p);
            if (!p) return -ENOMEM;
            r->s = p;
            r->scap = ncap;
        }
        se = &r->s[r->ns++];
        memset(se, 0, sizeof *se);
        snprintf(se->key, sizeof se->key, "%s", m->key);
    }
    if (se->n == se->cap) {
        size_t ncap = se->cap ? se->cap * 2 : 32;
        double *x = realloc(se->x, ncap * sizeof *x);
        if (x) se->x = x;
        double *y = x ? realloc(se->y, ncap * sizeof *y) : NULL;
        if (!y) return -ENOMEM;
        se->y = y;
        se->cap = ncap;
    }
    se->x[se->n] = (double)m->epoch;
    se->y[se->n++] = m->value;
    if (m->epoch > r->epochs) r->epochs = m->epoch;
    return 0;
}

static int add_run(struct report *R, struct store_job *j)
{
    if (R->n == R->cap) {
        size_t ncap = R->cap ? R->cap * 2 : 64;
        struct rrun *p = realloc(R->runs, ncap * sizeof *p);
        if (!p) return -ENOMEM;
        R->runs = p;
        R->cap = ncap;
    }
    struct rrun *r = &R->runs[R->n++];
    memset(r, 0, sizeof *r);
    r->j = *j;
    memset(j, 0, sizeof *j);
    r->color = -1;
    r->score = NAN;
    int rc = store_params_list(R->st, r->j.id, &r->p, &r->np);
    if (rc == 0) rc = store_metrics_foreach(R->st, r->j.id, NULL, metric_cb, r);
    return rc;
}

static int add_eval(struct report *R, struct store_job *j)
{
    if (R->nevals == REPORT_EVALS_MAX) {
        R->evals_more++;
        store_job_free(j);
        return 0;
    }
    if (R->nevals == R->evals_cap) {
        size_t ncap = R->evals_cap ? R->evals_cap * 2 : 8;
        struct store_job *p = realloc(R->evals, ncap * sizeof *p);
        if (!p) return -ENOMEM;
        R->evals = p;
        R->evals_cap = ncap;
    }
    R->evals[R->nevals++] = *j;
    memset(j, 0, sizeof *j);
    return 0;
}

static void report_free(struct report *R)
{
    for (size_t i = 0; i < R->n; i++) {
        struct rrun *r = &R->runs[i];
        store_job_free(&r->j);
        store_params_free(r->p, r->np);
        for (size_t k = 0; k < r->ns; k++) {
            free(r->s[k].x);
            free(r->s[k].y);
        }
        free(r->s);
    }
    free(R->runs);
    for (size_t i = 0; i < R->nevals; i++)
        store_job_free(&R->evals[i]);
    free(R->evals);
    if (R->have_sweep) store_sweep_free(&R->sw);
    store_trials_free(R->trials, R->ntrials);
    for (size_t i = 0; i < R->nsampled; i++)
        free(R->sampled[i]);
    free(R->sampled);
}

/* The sweep's trials as the runs, its metric and mode as the defaults, the
 * fields its trials drew as the search's axes, ASHA's rungs. */
static int select_sweep(struct report *R)
{
    int rc = store_sweep_get(R->st, R->sweep, &R->sw);
    if (rc == -ENOENT) {
        fprintf(stderr, "mlq report: no sweep %lld\n", (long long)R->sweep);
        return EXIT_NOT_FOUND;
    }
    if (rc == 0) {
        R->have_sweep = true;
        rc = store_sweep_trials(R->st, R->sweep, &R->trials, &R->ntrials);
    }
    if (rc) {
        fprintf(stderr, "mlq report: %s\n", store_errmsg(R->st));
        return EXIT_FAILURE_GENERIC;
    }
    if (!R->metric && R->sw.metric[0]) R->metric = R->sw.metric;
    if (!R->mode) R->mode = R->sw.mode_max ? 2 : 1;
    if (strcmp(R->title, "mlq report") == 0) {
        snprintf(R->title_buf, sizeof R->title_buf, "sweep %lld%s%s", (long long)R->sweep,
                 R->sw.name[0] ? ": " : "", R->sw.name);
        R->title = R->title_buf;
    }
    if (R->sw.scheduler == STORE_SCHED_ASHA && R->sw.grace_period > 0 && R->sw.reduction_factor > 1)
        for (double e = R->sw.grace_period; e < R->sw.max_t && R->nrungs < COUNT(R->rungs);
             e *= R->sw.reduction_factor)
            R->rungs[R->nrungs++] = e;
    R->sampled = calloc(64, sizeof *R->sampled);
    for (size_t t = 0; t < R->ntrials && rc == 0; t++) {
        json_t *p = R->trials[t].params_json ? json_loads(R->trials[t].params_json, 0, NULL) : NULL;
        const char *k;
        json_t *v;
        json_object_foreach(p, k, v)
        {
            bool have = false;
            for (size_t i = 0; i < R->nsampled && !have; i++)
                have = strcmp(R->sampled[i], k) == 0;
            if (!have && R->sampled && R->nsampled < 64) R->sampled[R->nsampled++] = strdup(k);
        }
        json_decref(p);
        if (!R->trials[t].job) continue; /* its run was deleted */
        struct store_job j;
        int got = store_job_get(R->st, R->trials[t].job, &j);
        if (got == -ENOENT) continue;
        rc = got ? got : add_run(R, &j);
    }
    if (rc) {
        fprintf(stderr, "mlq report: %s\n", rc == -ENOMEM ? "out of memory" : store_errmsg(R->st));
        return EXIT_FAILURE_GENERIC;
    }
    return EXIT_OK;
}

static bool is_sampled(const struct report *R, const char *key)
{
    for (size_t i = 0; i < R->nsampled; i++)
        if (R->sampled[i] && strcmp(R->sampled[i], key) == 0) return true;
    return false;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The runs named or matched, then the evaluations of those runs (the named
 * ones too). Returns an exit code after printing why. */
static int select_runs(struct report *R)
{
    int rc = 0;
    if (R->sweep) {
        int code = select_sweep(R);
        if (code != EXIT_OK) return code;
    } else if (R->nids) {
        for (size_t i = 0; i < R->nids; i++) {
            struct store_job j;
            int code = history_job_get("report", R->st, R->ids[i], &j);
            if (code != EXIT_OK) return code;
            if (j.kind == JOB_EVAL) {
                if (j.state == STORE_SUCCEEDED && j.result_json)
                    rc = add_eval(R, &j);
                else
                    store_job_free(&j);
            } else if (j.kind == JOB_TRAIN) {
                rc = add_run(R, &j);
            } else {
                store_job_free(&j);
                fprintf(stderr, "mlq report: run %lld is a predict job: nothing to draw\n",
                        (long long)R->ids[i]);
                return EXIT_USAGE;
            }
            if (rc) break;
        }
    } else {
        struct store_job *list = NULL;
        size_t n = 0;
        if (R->f.kind < 0) R->f.kind = JOB_TRAIN;
        R->f.experiment = R->experiment;
        rc = store_runs_list(R->st, &R->f, &list, &n);
        if (rc == -EINVAL) {
            fprintf(stderr, "mlq report: %s\n", store_errmsg(R->st));
            return EXIT_USAGE;
        }
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = add_run(R, &list[i]);
        store_jobs_free(&list, n);
    }
    if (rc) goto fail;
    /* The evaluations of the chosen train runs, newest first. */
    int64_t *train = malloc((R->n ? R->n : 1) * sizeof *train);
    if (!train) return (rc = -ENOMEM), fprintf(stderr, "mlq report: out of memory\n"), 1;
    for (size_t i = 0; i < R->n; i++)
        train[i] = R->runs[i].j.id;
    qsort(train, R->n, sizeof *train, cmp_id);
    struct store_run_filter ef = {.state = STORE_SUCCEEDED, .kind = JOB_EVAL};
    struct store_job *ev = NULL;
    size_t nev = 0;
    rc = R->n ? store_runs_list(R->st, &ef, &ev, &nev) : 0;
    for (size_t i = 0; rc == 0 && i < nev; i++) {
        if (!ev[i].run || !bsearch(&ev[i].run, train, R->n, sizeof *train, cmp_id)) continue;
        bool named = false;
        for (size_t k = 0; k < R->nevals; k++)
            named |= R->evals[k].id == ev[i].id;
        if (named) continue;
        struct store_job j;
        rc = store_job_get(R->st, ev[i].id, &j);
        if (rc == 0 && j.result_json)
            rc = add_eval(R, &j);
        else if (rc == 0)
            store_job_free(&j);
    }
    store_jobs_free(&ev, nev);
    free(train);
    if (rc == 0) return EXIT_OK;
fail:
    fprintf(stderr, "mlq report: %s\n", rc == -ENOMEM ? "out of memory" : store_errmsg(R->st));
    return EXIT_FAILURE_GENERIC;
}

/* ---- ranking -------------------------------------------------------------------------------- */

static bool higher_is_better(const char *key)
{
    return strstr(key, "accuracy") || strstr(key, "f1") || strstr(key, "auc") ||
           strstr(key, "precision") || strstr(key, "recall") || strstr(key, "samples_per_s");
}

static int rank_cmp_lower_better; /* qsort has no context */

static int rank_cmp(const void *a, const void *b)
{
    const struct rrun *x = a, *y = b;
    bool fx = isfinite(x->score), fy = isfinite(y->score);
    if (fx != fy) return fy - fx;
    if (fx && x->score != y->score) return (x->score < y->score) == rank_cmp_lower_better ? -1 : 1;
    return (x->j.id > y->j.id) - (x->j.id < y->j.id);
}

/* Picks the ranking metric (given, else the first of the usual ones that a
 * run has), scores and sorts the runs, and colours the best. */
static int rank_runs(struct report *R)
{
    static const char *const usual[] = {"val_loss",       "val_accuracy", "train_loss",
                                        "train_accuracy", "loss",         "accuracy"};
    if (R->metric) {
        bool seen = false;
        for (size_t i = 0; i < R->n && !seen; i++)
            seen = series_of(&R->runs[i], R->metric) != NULL;
        if (!seen && R->n) {
            fprintf(stderr, "mlq report: --metric %s: no chosen run records it\n", R->metric);
            return EXIT_USAGE;
        }
    } else {
        for (size_t k = 0; k < COUNT(usual) && !R->metric; k++)
            for (size_t i = 0; i < R->n && !R->metric; i++)
                if (series_of(&R->runs[i], usual[k])) R->metric = usual[k];
    }
    R->lower_better = R->mode ? R->mode == 1 : !(R->metric && higher_is_better(R->metric));
    for (size_t i = 0; i < R->n; i++) {
        const double *v = R->metric ? final_of(&R->runs[i], R->metric) : NULL;
        R->runs[i].score = v ? *v : NAN;
    }
    rank_cmp_lower_better = R->lower_better;
    qsort(R->runs, R->n, sizeof *R->runs, rank_cmp);
    for (size_t i = 0; i < R->n && (int)i < R->top; i++)
        R->runs[i].color = (int)i;
    return EXIT_OK;
}

/* ---- parameters that vary ----------------------------------------------------------------------
 */

struct vparam {
    const char *key; /* points into a run's params */
    bool numeric, log;
    double *v;           /* per run: the number, or the index into labels; NaN: absent */
    const char **labels; /* categorical: distinct values, sorted */
    size_t nlabels;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool parse_number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return end != s && *end == '\0' && isfinite(*v);
}

static size_t vparam_missing(const struct vparam *a, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += !isfinite(a->v[i]);
    return m;
}

/* Keys whose values are not the same in every run (or missing in some). */
static size_t varying_params(const struct report *R, struct vparam **out)
{
    static const char *const skip[] = {"name", "kind", "run"};
    size_t n = 0, cap = 0;
    struct vparam *vp = NULL;
    *out = NULL;
    if (R->n < 2) return 0;
    const char **keys = NULL;
    size_t nkeys = 0, kcap = 0;
    for (size_t i = 0; i < R->n; i++)
        for (size_t k = 0; k < R->runs[i].np; k++) {
            const char *key = R->runs[i].p[k].key;
            bool have = false;
            for (size_t q = 0; q < nkeys && !have; q++)
                have = strcmp(keys[q], key) == 0;
            for (size_t q = 0; q < COUNT(skip) && !have; q++)
                have = strcmp(skip[q], key) == 0;
            if (have) continue;
            if (nkeys == kcap) {
                kcap = kcap ? kcap * 2 : 32;
                const char **p = realloc(keys, kcap * sizeof *p);
                if (!p) goto out;
                keys = p;
            }
            keys[nkeys++] = key;
        }
    for (size_t q = 0; q < nkeys; q++) {
        const char *first = param_of(&R->runs[0], keys[q]);
        bool differs = false, numeric = true;
        double lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < R->n; i++) {
            const char *v = param_of(&R->runs[i], keys[q]);
            differs |= !v != !first || (v && first && strcmp(v, first) != 0);
            double x;
            if (v && parse_number(v, &x)) {
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
            } else if (v) {
                numeric = false;
            }
        }
        if (!differs) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            struct vparam *p = realloc(vp, cap * sizeof *p);
            if (!p) break;
            vp = p;
        }
        struct vparam *a = &vp[n];
        memset(a, 0, sizeof *a);
        a->key = keys[q];
        a->numeric = numeric && hi >= lo;
        a->log = a->numeric && lo > 0 && hi / lo >= 20;
        a->v = malloc(R->n * sizeof *a->v);
        if (!a->v) break;
        if (!a->numeric) {
            a->labels = malloc(R->n * sizeof *a->labels);
            if (!a->labels) {
                free(a->v);
                break;
            }
            for (size_t i = 0; i < R->n; i++) {
                const char *v = param_of(&R->runs[i], keys[q]);
                bool have = false;
                for (size_t k = 0; v && k < a->nlabels && !have; k++)
                    have = strcmp(a->labels[k], v) == 0;
                if (v && !have) a->labels[a->nlabels++] = v;
            }
            qsort(a->labels, a->nlabels, sizeof *a->labels, cmp_str);
        }
        for (size_t i = 0; i < R->n; i++) {
            const char *v = param_of(&R->runs[i], keys[q]);
            a->v[i] = NAN;
            if (v && a->numeric)
                parse_number(v, &a->v[i]);
            else if (v)
                for (size_t k = 0; k < a->nlabels; k++)
                    if (strcmp(a->labels[k], v) == 0) a->v[i] = (double)k;
        }
        n++;
    }
out:
    free(keys);
    /* Parameters every run has first (a search's axes), then those only some
     * have (an optimizer's own settings); stable, so keys stay in order. */
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && vparam_missing(&vp[k], R->n) < vparam_missing(&vp[k - 1], R->n);
             k--) {
            struct vparam t = vp[k];
            vp[k] = vp[k - 1];
            vp[k - 1] = t;
        }
    *out = vp;
    return n;
}

static void vparams_free(struct vparam *vp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(vp[i].v);
        free(vp[i].labels);
    }
    free(vp);
}

/* ---- HTML ---------------------------------------------------------------------------------- */

static const char css[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;"
    "margin:24px auto;max-width:1180px;padding:0 16px}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px "
    "solid #ddd;padding-bottom:4px}h3{font-size:14px;margin:18px 0 6px}"
    ".meta{color:#666;font-size:12px}nav a{margin-right:14px}"
    "table{border-collapse:collapse;font-size:12px;margin:6px 0}"
    "th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}"
    "th{background:#f6f6f6;position:sticky;top:0}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}tr.differs td{background:#fff6d6}"
    "td.mark{color:#b35c00;font-weight:700}.sw{display:inline-block;width:10px;height:10px;"
    "margin-right:5px;border-radius:2px;vertical-align:middle}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px}svg{max-width:100%;height:auto}"
    ".scroll{max-height:560px;overflow:auto;border:1px solid #eee}"
    ".note{color:#666;font-size:12px;margin:4px 0}"
    ".eval{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}";

static void html_cell_num(struct svg_buf *b, double v)
{
    if (isfinite(v))
        svg_printf(b, "<td class=\"n\">%.6g</td>", v);
    else
        svg_puts(b, "<td class=\"n\">-</td>");
}

/* A fraction (precision, recall, F1) with four decimals, as mlq eval prints them. */
static void html_cell_frac(struct svg_buf *b, double v)
{
    if (isfinite(v))
        svg_printf(b, "<td class=\"n\">%.4f</td>", v);
    else
        svg_puts(b, "<td class=\"n\">-</td>");
}

static void run_label(char *buf, size_t len, const struct rrun *r)
{
    snprintf(buf, len, "run %lld%s%s", (long long)r->j.id, r->j.name[0] ? " " : "", r->j.name);
}

/* The curves' groups: train_X and val_X together as X, the rest alone;
 * loss first, then accuracy, then the others by name. */
struct group {
    char base[STORE_KEY_MAX];
    const char *keys[4];
    size_t nkeys;
};

static bool is_loss(const char *base)
{
    size_t n = strlen(base);
    return (n >= 4 && strcmp(base + n - 4, "loss") == 0) || strcmp(base, "mse") == 0 ||
           strcmp(base, "mae") == 0;
}

static int group_rank(const char *base)
{
    return strcmp(base, "loss") == 0 ? 0 : strcmp(base, "accuracy") == 0 ? 1 : 2;
}

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    int d = group_rank(x->base) - group_rank(y->base);
    return d ? d : strcmp(x->base, y->base);
}

static size_t metric_groups(const struct report *R, struct group **out)
{
    struct group *g = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < R->n; i++)
        for (size_t k = 0; k < R->runs[i].ns; k++) {
            const char *key = R->runs[i].s[k].key;
            const char *base = strncmp(key, "train_", 6) == 0 ? key + 6
                               : strncmp(key, "val_", 4) == 0 ? key + 4
                                                              : key;
            struct group *hit = NULL;
            for (size_t q = 0; q < n && !hit; q++)
                if (strcmp(g[q].base, base) == 0) hit = &g[q];
            if (hit) {
                bool have = false;
                for (size_t q = 0; q < hit->nkeys; q++)
                    have |= strcmp(hit->keys[q], key) == 0;
                if (!have && hit->nkeys < COUNT(hit->keys)) hit->keys[hit->nkeys++] = key;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                struct group *p = realloc(g, cap * sizeof *p);
                if (!p) {
                    *out = g;
                    return n;
                }
                g = p;
            }
            memset(&g[n], 0, sizeof g[n]);
            snprintf(g[n].base, sizeof g[n].base, "%s", base);
            g[n].keys[g[n].nkeys++] = key;
            n++;
        }
    /* train_ before val_ before anything else, within a group */
    for (size_t q = 0; q < n; q++)
        for (size_t a = 0; a < g[q].nkeys; a++)
            for (size_t c = a + 1; c < g[q].nkeys; c++)
                if (strcmp(g[q].keys[c], g[q].keys[a]) < 0) {
                    const char *t = g[q].keys[a];
                    g[q].keys[a] = g[q].keys[c];
                    g[q].keys[c] = t;
                }
    qsort(g, n, sizeof *g, group_cmp);
    *out = g;
    return n;
}

static const char *unit_label(const char *base, char *buf, size_t len)
{
    if (strcmp(base, "accuracy") == 0) return "accuracy (fraction correct)";
    if (strcmp(base, "loss") == 0) return "loss (per sample, mean)";
    if (strcmp(base, "lr") == 0) return "learning rate";
    if (strcmp(base, "samples_per_s") == 0) return "samples per second";
    if (strcmp(base, "epoch_seconds") == 0) return "seconds per epoch";
    snprintf(buf, len, "%s", base);
    return buf;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *v, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    double f = pos - (double)i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

/* The band of the runs not highlighted, per epoch of key. */
struct band_data {
    double *x, *lo, *q1, *med, *q3, *hi;
    size_t n;
    char label[96];  /* the band's tooltip */
    char legend[48]; /* short enough for the legend's column */
};

static void band_free(struct band_data *b)
{
    free(b->x);
    free(b->lo);
    free(b->q1);
    free(b->med);
    free(b->q3);
    free(b->hi);
}

static bool band_build(const struct report *R, const char *key, struct band_data *bd)
{
    memset(bd, 0, sizeof *bd);
    int64_t emax = 0;
    size_t others = 0;
    for (size_t i = 0; i < R->n; i++)
        if (R->runs[i].color < 0 && series_of(&R->runs[i], key)) {
            others++;
            if (R->runs[i].epochs > emax) emax = R->runs[i].epochs;
        }
    if (!others || emax > 100000) return false;
    size_t E = (size_t)emax + 1;
    size_t *count = calloc(E, sizeof *count), *at = calloc(E, sizeof *at);
    double **vals = calloc(E, sizeof *vals);
    bool ok = count && at && vals;
    for (size_t i = 0; ok && i < R->n; i++) {
        struct rseries *s = R->runs[i].color < 0 ? series_of(&R->runs[i], key) : NULL;
        for (size_t k = 0; s && k < s->n; k++)
            if (isfinite(s->y[k]) && s->x[k] >= 0) count[(size_t)s->x[k]]++;
    }
    for (size_t e = 0; ok && e < E; e++)
        if (count[e] && !(vals[e] = malloc(count[e] * sizeof **vals))) ok = false;
    for (size_t i = 0; ok && i < R->n; i++) {
        struct rseries *s = R->runs[i].color < 0 ? series_of(&R->runs[i], key) : NULL;
        for (size_t k = 0; s && k < s->n; k++)
            if (isfinite(s->y[k]) && s->x[k] >= 0) {
                size_t e = (size_t)s->x[k];
                vals[e][at[e]++] = s->y[k];
            }
    }
    double **cols[] = {&bd->x, &bd->lo, &bd->q1, &bd->med, &bd->q3, &bd->hi};
    for (size_t c = 0; ok && c < COUNT(cols); c++)
        ok = (*cols[c] = malloc(E * sizeof(double))) != NULL;
    for (size_t e = 0; ok && e < E; e++) {
        if (!count[e]) continue;
        qsort(vals[e], count[e], sizeof(double), cmp_double);
        size_t i = bd->n++;
        bd->x[i] = (double)e;
        bd->lo[i] = vals[e][0];
        bd->q1[i] = quantile(vals[e], count[e], 0.25);
        bd->med[i] = quantile(vals[e], count[e], 0.5);
        bd->q3[i] = quantile(vals[e], count[e], 0.75);
        bd->hi[i] = vals[e][count[e] - 1];
    }
    snprintf(bd->label, sizeof bd->label, "%zu other runs: median, quartiles, range", others);
    snprintf(bd->legend, sizeof bd->legend, "%zu others: median, quartiles", others);
    for (size_t e = 0; vals && e < E; e++)
        free(vals[e]);
    free(vals);
    free(count);
    free(at);
    if (!ok || !bd->n) band_free(bd);
    return ok && bd->n;
}

static long best_index(const struct rseries *s, bool lower_better)
{
    long best = -1;
    for (size_t k = 0; k < s->n; k++)
        if (isfinite(s->y[k]) &&
            (best < 0 || (lower_better ? s->y[k] < s->y[best] : s->y[k] > s->y[best])))
            best = (long)k;
    return best;
}

/* All values positive, the largest at least ratio times the smallest. */
static bool spans_decades(const struct svg_series *s, size_t n, double ratio)
{
    double lo = INFINITY, hi = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < s[i].n; k++) {
            if (!isfinite(s[i].y[k])) continue;
            if (s[i].y[k] <= 0) return false;
            lo = s[i].y[k] < lo ? s[i].y[k] : lo;
            hi = s[i].y[k] > hi ? s[i].y[k] : hi;
        }
    return hi > 0 && hi >= lo * ratio;
}

static void html_curves(struct svg_buf *b, const struct report *R)
{
    struct group *g;
    size_t ng = metric_groups(R, &g);
    size_t others = 0, top = 0;
    for (size_t i = 0; i < R->n; i++)
        R->runs[i].color < 0 ? others++ : top++;
    bool bands = others > REPORT_FAINT_MAX;
    svg_puts(b, "<h2 id=\"curves\">Curves</h2>");
    if (!ng) {
        svg_puts(b, "<p class=\"note\">No metrics recorded yet.</p>");
        free(g);
        return;
    }
    svg_printf(b,
               "<p class=\"note\">Per epoch. The best %zu run%s by %s in colour (solid: training, "
               "dashed: validation; a white dot: the best epoch)",
               top, top == 1 ? "" : "s", R->metric ? R->metric : "id");
    if (others)
        svg_printf(b, "; the other %zu %s.", others,
                   bands ? "as a grey band (median, quartiles, range)" : "faint grey");
    svg_puts(b, "</p><div class=\"charts\">");
    size_t smax = R->n * 4;
    struct svg_series *ser = calloc(smax ? smax : 1, sizeof *ser);
    struct svg_legend leg[REPORT_TOP_MAX + 6];
    char labels[REPORT_TOP_MAX][160];
    char(*tips)[200] = calloc(smax ? smax : 1, sizeof *tips);
    if (!ser || !tips) {
        free(ser);
        free(tips);
        free(g);
        return;
    }
    for (size_t q = 0; q < ng; q++) {
        size_t ns = 0, nl = 0;
        bool has_train = false, has_val = false;
        for (size_t i = 0; i < R->n; i++) {
            const struct rrun *r = &R->runs[i];
            if (bands && r->color < 0) continue;
            for (size_t k = 0; k < g[q].nkeys && ns < smax; k++) {
                struct rseries *s = series_of((struct rrun *)r, g[q].keys[k]);
                if (!s) continue;
                bool val = strncmp(g[q].keys[k], "val_", 4) == 0;
                has_val |= val;
                has_train |= !val;
                bool natural_lower = !higher_is_better(g[q].keys[k]);
                bool rank_key = R->metric && strcmp(g[q].keys[k], R->metric) == 0;
                char lab[160];
                run_label(lab, sizeof lab, r);
                snprintf(tips[ns], sizeof tips[ns], "%s %s", lab, g[q].keys[k]);
                ser[ns] = (struct svg_series){
                    .x = s->x,
                    .y = s->y,
                    .n = s->n,
                    .color = r->color < 0 ? 0 : r->color,
                    .dashed = val,
                    .run = r->j.id,
                    .key = g[q].keys[k],
                    .label = tips[ns],
                    .best = r->color >= 0 && (rank_key || val)
                                ? best_index(s, rank_key ? R->lower_better : natural_lower)
                                : -1,
                    .faint = r->color < 0,
                };
                ns++;
            }
        }
        for (size_t i = 0; i < R->n && R->runs[i].color >= 0 && nl < REPORT_TOP_MAX; i++) {
            run_label(labels[nl], sizeof labels[nl], &R->runs[i]);
            leg[nl] = (struct svg_legend){labels[nl], R->runs[i].color, false, true};
            nl++;
        }
        if (has_train && has_val) {
            leg[nl++] = (struct svg_legend){"training", -1, false, false};
            leg[nl++] = (struct svg_legend){"validation", -1, true, false};
        }
        struct band_data bd[4];
        struct svg_band sb[4];
        size_t nb = 0;
        char other_label[64];
        if (bands) {
            for (size_t k = 0; k < g[q].nkeys; k++)
                if (band_build(R, g[q].keys[k], &bd[nb])) {
                    sb[nb] = (struct svg_band){bd[nb].x,  bd[nb].lo, bd[nb].q1, bd[nb].med,
                                               bd[nb].q3, bd[nb].hi, bd[nb].n,  bd[nb].label};
                    nb++;
                }
            if (nb) leg[nl++] = (struct svg_legend){bd[0].legend, -1, false, true};
        } else if (others) {
            snprintf(other_label, sizeof other_label, "%zu other run%s", others,
                     others == 1 ? "" : "s");
            leg[nl++] = (struct svg_legend){other_label, -1, false, false};
        }
        char unit[STORE_KEY_MAX], title[STORE_KEY_MAX + 32], id[STORE_KEY_MAX + 16];
        const char *ylabel = unit_label(g[q].base, unit, sizeof unit);
        /* Losses twice, linear and log; other values spanning more than two
         * decades (a learning rate per run) on a log scale only. */
        bool loss = is_loss(g[q].base), wide = !loss && spans_decades(ser, ns, 100);
        for (int logy = wide; logy <= (loss || wide ? 1 : 0); logy++) {
            snprintf(title, sizeof title, "%s%s", g[q].base, logy ? " (log scale)" : "");
            snprintf(id, sizeof id, "chart-%s%s", g[q].base, logy && loss ? "-log" : "");
            struct svg_chart c = {.id = id,
                                  .title = title,
                                  .xlabel = "epoch",
                                  .ylabel = ylabel,
                                  .logy = logy,
                                  .marks = R->rungs,
                                  .nmarks = R->nrungs,
                                  .mark_label = "rung"};
            svg_line_chart(b, &c, ser, ns, sb, nb, leg, nl);
        }
        for (size_t k = 0; k < nb; k++)
            band_free(&bd[k]);
    }
    svg_puts(b, "</div>");
    free(tips);
    free(ser);
    free(g);
}

static void html_ranking(struct svg_buf *b, const struct report *R, const struct vparam *vp,
                         size_t nvp)
{
    /* final metric columns: the ranking metric, then the others by name */
    const char *mk[REPORT_TABLE_METRICS];
    size_t nmk = 0;
    if (R->metric) mk[nmk++] = R->metric;
    const char *pref[] = {"val_loss", "val_accuracy", "train_loss", "train_accuracy",
                          "loss",     "accuracy",     "lr"};
    for (size_t p = 0; p < COUNT(pref) && nmk < COUNT(mk); p++) {
        bool have = false, seen = false;
        for (size_t k = 0; k < nmk; k++)
            have |= strcmp(mk[k], pref[p]) == 0;
        for (size_t i = 0; i < R->n && !have && !seen; i++)
            seen = final_of(&R->runs[i], pref[p]) != NULL;
        if (!have && seen) mk[nmk++] = pref[p];
    }
    svg_printf(b,
               "<h2 id=\"runs\">Runs, best first</h2><p class=\"note\">%zu run%s ranked by the "
               "final %s (%s is better); parameters that differ between runs are columns.</p>"
               "<div class=\"scroll\"><table class=\"ranking\"><thead><tr><th>#</th><th>run</th>"
               "<th>name</th><th>state</th><th>trained</th><th>duration</th>",
               R->n, R->n == 1 ? "" : "s", R->metric ? R->metric : "metric",
               R->lower_better ? "lower" : "higher");
    size_t npc = nvp < REPORT_TABLE_PARAMS ? nvp : REPORT_TABLE_PARAMS;
    for (size_t k = 0; k < npc; k++) {
        svg_puts(b, "<th class=\"param\">");
        svg_text(b, vp[k].key);
        svg_puts(b, "</th>");
    }
    for (size_t k = 0; k < nmk; k++) {
        svg_printf(b, "<th class=\"metric%s\">", k == 0 && R->metric ? " rank" : "");
        svg_text(b, mk[k]);
        svg_puts(b, "</th>");
    }
    svg_puts(b, "</tr></thead><tbody>");
    double now = store_now(R->st);
    for (size_t i = 0; i < R->n; i++) {
        const struct rrun *r = &R->runs[i];
        char dur[32];
        history_fmt_duration(dur, sizeof dur, history_job_duration(&r->j, now));
        svg_printf(b, "<tr data-run=\"%lld\"><td class=\"n\">%zu</td><td>", (long long)r->j.id,
                   i + 1);
        if (r->color >= 0)
            svg_printf(b, "<span class=\"sw\" style=\"background:%s\"></span>",
                       svg_palette(r->color));
        svg_printf(b, "%lld</td><td>", (long long)r->j.id);
        svg_text(b, r->j.name[0] ? r->j.name : "-");
        svg_printf(b, "</td><td>%s</td><td class=\"n\">%lld</td><td class=\"n\">%s</td>",
                   store_state_name(r->j.state), (long long)r->epochs, dur);
        for (size_t k = 0; k < npc; k++) {
            const char *v = param_of(r, vp[k].key);
            svg_puts(b, vp[k].numeric ? "<td class=\"n\">" : "<td>");
            svg_text(b, v ? v : "-");
            svg_puts(b, "</td>");
        }
        for (size_t k = 0; k < nmk; k++) {
            const double *v = final_of(r, mk[k]);
            html_cell_num(b, v ? *v : NAN);
        }
        svg_puts(b, "</tr>");
    }
    svg_puts(b, "</tbody></table></div>");
    if (nvp > npc)
        svg_printf(b, "<p class=\"note\">%zu more parameters differ (below).</p>", nvp - npc);
}

/* Every param of up to REPORT_PARAMS_MAX runs side by side; rows that differ marked. */
static void html_params(struct svg_buf *b, const struct report *R, const struct vparam *vp,
                        size_t nvp)
{
    svg_puts(b, "<h2 id=\"params\">Parameters</h2>");
    if (R->n > REPORT_PARAMS_MAX) {
        svg_printf(b, "<p class=\"note\">%zu parameters differ between the %zu runs:", nvp, R->n);
        for (size_t k = 0; k < nvp; k++) {
            svg_puts(b, k ? ", <code>" : " <code>");
            svg_text(b, vp[k].key);
            svg_puts(b, "</code>");
        }
        svg_puts(b, ". Side by side for at most 20 runs (mlq report RUN...).</p>");
        return;
    }
    const char **keys = NULL;
    size_t nkeys = 0, cap = 0;
    for (size_t i = 0; i < R->n; i++)
        for (size_t k = 0; k < R->runs[i].np; k++) {
            bool have = false;
            for (size_t q = 0; q < nkeys && !have; q++)
                have = strcmp(keys[q], R->runs[i].p[k].key) == 0;
            if (have) continue;
            if (nkeys == cap) {
                cap = cap ? cap * 2 : 32;
                const char **p = realloc(keys, cap * sizeof *p);
                if (!p) {
                    free(keys);
                    return;
                }
                keys = p;
            }
            keys[nkeys++] = R->runs[i].p[k].key;
        }
    qsort(keys, nkeys, sizeof *keys, cmp_str);
    svg_puts(b, "<p class=\"note\">Rows that differ are marked &#8800; and shaded.</p><div "
                "class=\"scroll\"><table class=\"params\"><thead><tr><th></th><th>param</th>");
    for (size_t i = 0; i < R->n; i++)
        svg_printf(b, "<th>run %lld</th>", (long long)R->runs[i].j.id);
    svg_puts(b, "</tr></thead><tbody>");
    for (size_t q = 0; q < nkeys; q++) {
        const char *first = param_of(&R->runs[0], keys[q]);
        bool differs = false;
        for (size_t i = 1; i < R->n; i++) {
            const char *v = param_of(&R->runs[i], keys[q]);
            differs |= !v != !first || (v && first && strcmp(v, first) != 0);
        }
        svg_printf(b, "<tr%s><td class=\"mark\">%s</td><td>", differs ? " class=\"differs\"" : "",
                   differs ? "&#8800;" : "");
        svg_text(b, keys[q]);
        svg_puts(b, "</td>");
        for (size_t i = 0; i < R->n; i++) {
            const char *v = param_of(&R->runs[i], keys[q]);
            svg_puts(b, "<td>");
            if (v && strcmp(keys[q], "model.layers") == 0) {
                char line[512];
                svg_text(b, history_layers_cell(v, line, sizeof line));
            } else {
                svg_text(b, v ? v : "-");
            }
            svg_puts(b, "</td>");
        }
        svg_puts(b, "</tr>");
    }
    svg_puts(b, "</tbody></table></div>");
    free(keys);
    (void)vp;
}

static void html_search(struct svg_buf *b, const struct report *R, const struct vparam *vp,
                        size_t nvp)
{
    size_t scored = 0;
    for (size_t i = 0; i < R->n; i++)
        scored += isfinite(R->runs[i].score);
    if (R->n < 3 || nvp == 0 || scored < 2 || !R->metric) return;
    int64_t *ids = malloc(R->n * sizeof *ids);
    double *score = malloc(R->n * sizeof *score);
    struct svg_axis *axes = calloc(nvp, sizeof *axes);
    if (!ids || !score || !axes) goto out;
    for (size_t i = 0; i < R->n; i++) {
        ids[i] = R->runs[i].j.id;
        score[i] = R->runs[i].score;
    }
    /* Axes: the parameters every run has (what a search varies); one only
     * some runs have (adam's betas beside sgd) says nothing about the others. */
    size_t na = 0;
    for (size_t k = 0; k < nvp && na < REPORT_AXES_MAX; k++)
        if (vparam_missing(&vp[k], R->n) == 0 && (!R->nsampled || is_sampled(R, vp[k].key)))
            axes[na++] =
                (struct svg_axis){vp[k].key, vp[k].v, vp[k].log, vp[k].labels, vp[k].nlabels};
    if (!na) goto out;
    struct svg_axis m = {R->metric, score, false, NULL, 0};
    svg_printf(b,
               "<h2 id=\"search\">Parameters against %s</h2><p class=\"note\">One line per run "
               "through the parameters that differ, coloured by its final ",
               R->metric);
    svg_text(b, R->metric);
    svg_puts(b, " (yellow: best).</p>");
    svg_parallel(b, "parallel", axes, na, &m, R->lower_better, ids, R->n);
    size_t nsc = na < REPORT_SCATTER_MAX ? na : REPORT_SCATTER_MAX;
    svg_puts(b, "<div class=\"charts\">");
    for (size_t k = 0; k < nsc; k++) {
        char id[48];
        snprintf(id, sizeof id, "scatter-%zu", k);
        svg_scatter(b, id, &axes[k], &m, R->lower_better, ids, R->n);
    }
    svg_puts(b, "</div>");
    /* How far each run went: runs stopped early (early stopping, a sweep's
     * scheduler, a failure) end before the others. */
    int64_t emin = INT64_MAX, emax = 0;
    for (size_t i = 0; i < R->n; i++) {
        emin = R->runs[i].epochs < emin ? R->runs[i].epochs : emin;
        emax = R->runs[i].epochs > emax ? R->runs[i].epochs : emax;
    }
    if (emax > emin && emax <= 100000) {
        size_t nb = 0;
        double *x = malloc((size_t)(emax - emin + 1) * sizeof *x);
        int64_t *cnt = calloc((size_t)(emax - emin + 1), sizeof *cnt);
        if (x && cnt) {
            for (size_t i = 0; i < R->n; i++)
                cnt[R->runs[i].epochs - emin]++;
            for (int64_t e = emin; e <= emax; e++)
                if (cnt[e - emin]) {
                    x[nb] = (double)e;
                    cnt[nb++] = cnt[e - emin];
                }
            svg_puts(b, R->have_sweep ? "<h3>How far the trials went (stopped at a rung, or "
                                        "to max_t)</h3>"
                                      : "<h3>How far the runs went</h3>");
            svg_histogram(b, "epochs-reached", "epochs trained per run", "epochs trained", x, cnt,
                          nb);
        }
        free(x);
        free(cnt);
    }
out:
    free(ids);
    free(score);
    free(axes);
}

/* A sweep: its scheduler and rungs, and every trial, best first, with the
 * rung it reached, its epochs and why it stopped. */
static void html_sweep(struct svg_buf *b, const struct report *R)
{
    const struct store_sweep *sw = &R->sw;
    svg_printf(b, "<h2 id=\"sweep\">Sweep %lld", (long long)sw->id);
    if (sw->name[0]) {
        svg_puts(b, ": ");
        svg_text(b, sw->name);
    }
    svg_printf(b, "</h2><p class=\"sweepinfo\">%zu trials, %s; scheduler <b>%s</b>", R->ntrials,
               sw->state, store_sched_name(sw->scheduler));
    if (R->nrungs) {
        svg_printf(b, " (grace period %d, reduction factor %d, max_t %d: rungs at epoch",
                   sw->grace_period, sw->reduction_factor, sw->max_t);
        for (size_t i = 0; i < R->nrungs; i++)
            svg_printf(b, "%s %.0f", i ? "," : "", R->rungs[i]);
        svg_puts(b, ")");
    }
    svg_puts(b, "; metric <b>");
    svg_text(b, sw->metric);
    svg_printf(b, "</b> (%s). Trials:", sw->mode_max ? "max" : "min");
    for (int st = 0; st < STORE_N_STATES; st++)
        if (sw->counts[st])
            svg_printf(b, " %lld %s", (long long)sw->counts[st],
                       store_state_name((enum store_state)st));
    svg_puts(b, ".</p><div class=\"scroll\"><table class=\"trials\"><thead><tr><th>trial</th>"
                "<th>run</th><th>state</th><th>rung</th><th>epochs</th><th>best ");
    svg_text(b, sw->metric);
    svg_puts(b, "</th><th>params</th><th>note</th></tr></thead><tbody>");
    for (size_t t = 0; t < R->ntrials; t++) {
        const struct store_trial *tr = &R->trials[t];
        svg_printf(b,
                   "<tr data-run=\"%lld\" data-state=\"%s\"><td class=\"n\">%d</td>"
                   "<td class=\"n\">%lld</td><td>%s</td><td class=\"n\">%d</td>"
                   "<td class=\"n\">%lld</td>",
                   (long long)tr->job, store_state_name(tr->state), tr->trial, (long long)tr->job,
                   store_state_name(tr->state), tr->rung, (long long)tr->epochs);
        html_cell_num(b, tr->has_best ? tr->best : NAN);
        svg_puts(b, "<td>");
        svg_text(b, tr->params_json ? tr->params_json : "");
        svg_puts(b, "</td><td>");
        svg_text(b, tr->error ? tr->error : "");
        svg_puts(b, "</td></tr>");
    }
    svg_puts(b, "</tbody></table></div>");
}

static void html_evals(struct svg_buf *b, const struct report *R)
{
    if (!R->nevals) return;
    svg_puts(b, "<h2 id=\"evals\">Evaluations</h2>");
    for (size_t e = 0; e < R->nevals; e++) {
        const struct store_job *j = &R->evals[e];
        json_t *res = json_loads(j->result_json, 0, NULL);
        json_t *cm = json_object_get(res, "confusion_matrix");
        struct store_param *p = NULL;
        size_t np = 0;
        const char *dataset = NULL;
        if (store_params_list(R->st, j->id, &p, &np) == 0)
            for (size_t k = 0; k < np; k++)
                if (strcmp(p[k].key, "dataset.path") == 0) dataset = p[k].value;
        svg_printf(b, "<h3>Run %lld: run %lld's model", (long long)j->id, (long long)j->run);
        if (dataset) {
            svg_puts(b, " on ");
            svg_text(b, dataset);
        }
        svg_puts(b, "</h3><p>");
        json_t *v;
        if ((v = json_object_get(res, "loss")) && json_is_number(v))
            svg_printf(b, "loss <b>%.6g</b> &nbsp; ", json_number_value(v));
        if ((v = json_object_get(res, "accuracy")) && json_is_number(v))
            svg_printf(b, "accuracy <b>%.4f</b> &nbsp; ", json_number_value(v));
        if ((v = json_object_get(res, "mae")) && json_is_number(v))
            svg_printf(b, "mae <b>%.6g</b> &nbsp; ", json_number_value(v));
        if ((v = json_object_get(res, "n")) && json_is_integer(v))
            svg_printf(b, "<span class=\"rows\" data-rows=\"%lld\">%lld rows</span>",
                       (long long)json_integer_value(v), (long long)json_integer_value(v));
        svg_puts(b, "</p>");
        size_t K = json_is_array(cm) ? json_array_size(cm) : 0;
        int64_t *m = K && K <= 1000 ? calloc(K * K, sizeof *m) : NULL;
        if (m) {
            for (size_t t = 0; t < K; t++)
                for (size_t q = 0; q < K; q++)
                    m[t * K + q] = json_integer_value(json_array_get(json_array_get(cm, t), q));
            char id[48];
            snprintf(id, sizeof id, "confusion-%lld", (long long)j->id);
            svg_puts(b, "<div class=\"eval\">");
            svg_confusion(b, id, m, (int)K, j->id);
            svg_printf(b,
                       "<table class=\"perclass\" data-run=\"%lld\"><thead><tr><th>class</th>"
                       "<th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
                       "</thead><tbody>",
                       (long long)j->id);
            double sp = 0, sr = 0, sf = 0;
            size_t kp = 0, kr = 0, kf = 0;
            for (size_t k = 0; k < K; k++) {
                int64_t row = 0, col = 0;
                for (size_t q = 0; q < K; q++) {
                    row += m[k * K + q];
                    col += m[q * K + k];
                }
                double prec = col ? (double)m[k * K + k] / (double)col : NAN;
                double rec = row ? (double)m[k * K + k] / (double)row : NAN;
                double f1 = isfinite(prec) && isfinite(rec) && prec + rec > 0
                                ? 2 * prec * rec / (prec + rec)
                            : isfinite(prec) && isfinite(rec) ? 0
                                                              : NAN;
                if (isfinite(prec)) sp += prec, kp++;
                if (isfinite(rec)) sr += rec, kr++;
                if (isfinite(f1)) sf += f1, kf++;
                svg_printf(b, "<tr><td>%zu</td>", k);
                html_cell_frac(b, prec);
                html_cell_frac(b, rec);
                html_cell_frac(b, f1);
                svg_printf(b, "<td class=\"n\">%lld</td></tr>", (long long)row);
            }
            svg_puts(b, "<tr><td><b>macro mean</b></td>");
            html_cell_frac(b, kp ? sp / kp : NAN);
            html_cell_frac(b, kr ? sr / kr : NAN);
            html_cell_frac(b, kf ? sf / kf : NAN);
            svg_puts(b, "<td></td></tr></tbody></table></div>");
            free(m);
        }
        store_params_free(p, np);
        json_decref(res);
    }
    if (R->evals_more)
        svg_printf(b, "<p class=\"note\">%zu more evaluations not drawn.</p>", R->evals_more);
}

static void html_report(struct svg_buf *b, const struct report *R)
{
    struct vparam *vp;
    size_t nvp = varying_params(R, &vp);
    char when[32];
    history_fmt_time(when, sizeof when, store_now(R->st));
    svg_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                "<meta name=\"generator\" content=\"mlq " MLQ_VERSION "\"><title>");
    svg_text(b, R->title);
    svg_printf(b, "</title><style>%s</style></head><body><h1>", css);
    svg_text(b, R->title);
    svg_printf(b, "</h1><p class=\"meta\">%zu run%s, %zu evaluation%s, from ", R->n,
               R->n == 1 ? "" : "s", R->nevals, R->nevals == 1 ? "" : "s");
    svg_text(b, history_path());
    svg_printf(b,
               " at %s, by mlq %s.</p><nav><a href=\"#curves\">curves</a><a href=\"#runs\">"
               "runs</a><a href=\"#params\">parameters</a>",
               when, MLQ_VERSION);
    size_t full = 0;
    for (size_t k = 0; k < nvp; k++)
        full += vparam_missing(&vp[k], R->n) == 0;
    if (R->n >= 3 && full && R->metric) svg_puts(b, "<a href=\"#search\">search</a>");
    if (R->nevals) svg_puts(b, "<a href=\"#evals\">evaluations</a>");
    if (R->have_sweep) svg_puts(b, "<a href=\"#sweep\">sweep</a>");
    svg_puts(b, "</nav>");
    if (R->n) {
        html_curves(b, R);
        if (R->have_sweep) html_sweep(b, R);
        html_ranking(b, R, vp, nvp);
        html_search(b, R, vp, nvp);
        html_params(b, R, vp, nvp);
    }
    html_evals(b, R);
    svg_puts(b, "</body></html>\n");
    vparams_free(vp, nvp);
}

/* ---- the command ---------------------------------------------------------------------------- */

static void report_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq report [RUN... | --sweep ID | --experiment NAME] [--where K=V]...\n"
            "                  [--state S] [--limit N]\n"
            "                  [--metric KEY] [--mode min|max] [--top N] [--title TEXT]\n"
            "                  --output FILE.html [--db FILE] [--json]\n\n"
            "Writes one self-contained HTML file (inline SVG, no script, no network) of the\n"
            "named train runs, or of those --where/--state match (default: every train run):\n"
            "curves overlaid with a log-scale variant for losses and the best epoch marked,\n"
            "the runs ranked by their final metric, their parameters with the differences\n"
            "marked, the metric against each parameter that differs, and the confusion\n"
            "matrix and per-class precision, recall and F1 of their evaluations.\n\n"
            "  -o, --output FILE  where to write the report ('-': standard output)\n"
            "  --sweep ID         a sweep's trials: its metric, the fields it samples, its\n"
            "                     rungs and how far each trial went\n"
            "  --experiment NAME  the runs of an experiment\n"
            "  --where K=V        as mlq runs (repeatable, all must hold)\n"
            "  --state S          only runs in state S\n"
            "  --limit N          at most N runs, newest first (default 0: all)\n"
            "  --metric KEY       rank by this final metric (default val_loss, else the\n"
            "                     first of val_accuracy, train_loss, ... a run has)\n"
            "  --mode min|max     lower or higher is better (default: max for accuracy)\n"
            "  --top N            runs drawn in colour, the rest summarised (default %d,\n"
            "                     at most %d)\n"
            "  --title TEXT       the report's heading (default \"mlq report\")\n"
            "%s",
            REPORT_TOP_DEFAULT, REPORT_TOP_MAX, history_common_help);
}

static int report_option(void *ctx, int ch, const char *arg)
{
    struct report *R = ctx;
    char *end;
    switch (ch) {
    case 'o':
        R->output = arg;
        break;
    case 'm':
        R->metric = arg;
        break;
    case 'M':
        if (strcmp(arg, "min") == 0)
            R->mode = 1;
        else if (strcmp(arg, "max") == 0)
            R->mode = 2;
        else {
            fprintf(stderr, "mlq report: --mode: expected min or max, not '%s'\n", arg);
            return EXIT_USAGE;
        }
        break;
    case 't': {
        long v = strtol(arg, &end, 10);
        if (*end || end == arg || v < 1 || v > REPORT_TOP_MAX) {
            fprintf(stderr, "mlq report: --top: a count from 1 to %d, not '%s'\n", REPORT_TOP_MAX,
                    arg);
            return EXIT_USAGE;
        }
        R->top = (int)v;
        break;
    }
    case 'T':
        R->title = arg;
        break;
    case 'S': {
        long long v = strtoll(arg, &end, 10);
        if (*end || end == arg || v < 1) {
            fprintf(stderr, "mlq report: --sweep: not a sweep id: '%s'\n", arg);
            return EXIT_USAGE;
        }
        R->sweep = v;
        break;
    }
    case 'E':
        R->experiment = arg;
        break;
    case 's': {
        enum store_state st;
        if (store_state_parse(arg, &st) != 0) {
            fprintf(stderr, "mlq report: --state: unknown state '%s'\n", arg);
            return EXIT_USAGE;
        }
        R->f.state = (int)st;
        break;
    }
    case 'n': {
        long long v = strtoll(arg, &end, 10);
        if (*end || end == arg || v < 0) {
            fprintf(stderr, "mlq report: --limit: not a count: '%s'\n", arg);
            return EXIT_USAGE;
        }
        R->f.limit = v;
        break;
    }
    case 'w': {
        const char *kv = strncmp(arg, "params.", 7) == 0 ? arg + 7 : arg;
        const char *eq = strchr(kv, '=');
        struct store_run_filter *f = &R->f;
        if (!eq || eq == kv || f->n_where == STORE_WHERE_MAX ||
            strlen(kv) >= sizeof R->where_buf[0]) {
            fprintf(stderr, "mlq report: --where: expected params.KEY=VALUE (at most %d)\n",
                    STORE_WHERE_MAX);
            return EXIT_USAGE;
        }
        char *w = R->where_buf[f->n_where];
        snprintf(w, sizeof R->where_buf[0], "%s", kv);
        w[eq - kv] = '\0';
        f->where_key[f->n_where] = w;
        f->where_value[f->n_where] = w + (eq - kv) + 1;
        f->n_where++;
        break;
    }
    }
    return HISTORY_PROCEED;
}

int cmd_report(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"metric", required_argument, NULL, 'm'},
        {"mode", required_argument, NULL, 'M'},
        {"top", required_argument, NULL, 't'},
        {"title", required_argument, NULL, 'T'},
        {"state", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"where", required_argument, NULL, 'w'},
        {"sweep", required_argument, NULL, 'S'},
        {"experiment", required_argument, NULL, 'E'},
        {NULL, 0, NULL, 0},
    };
    struct report R = {.top = REPORT_TOP_DEFAULT,
                       .title = "mlq report",
                       .f = {.state = -1, .kind = -1, .limit = 0}};
    const struct history_cmd cmd = {.name = "report",
                                    .shortopts = "o:",
                                    .opts = opts,
                                    .no_csv = true,
                                    .option = report_option,
                                    .ctx = &R,
                                    .usage = report_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    if (!R.output) {
        fprintf(stderr, "mlq report: --output FILE.html is needed ('-' for standard output)\n");
        report_usage(stderr);
        return EXIT_USAGE;
    }
    size_t nids = (size_t)(argc - co.argi);
    if (nids > COUNT(R.ids)) {
        fprintf(stderr, "mlq report: at most %zu run ids (use --where for more)\n", COUNT(R.ids));
        return EXIT_USAGE;
    }
    if ((nids > 0) + (R.sweep > 0) + (R.f.n_where || R.f.state >= 0 || R.f.limit || R.experiment) >
        1) {
        fprintf(stderr, "mlq report: give run ids, or --sweep ID, or the filters "
                        "(--experiment, --where, --state, --limit), not two of them\n");
        return EXIT_USAGE;
    }
    if (!history_parse_ids("report", argv + co.argi, (int)nids, R.ids)) return EXIT_USAGE;
    R.nids = nids;
    rc = history_open("report", co.db, false, &R.st);
    if (rc != EXIT_OK) return rc;
    struct svg_buf b = {0};
    rc = select_runs(&R);
    if (rc == EXIT_OK && R.n == 0 && R.nevals == 0) {
        fprintf(stderr, "mlq report: no %sruns to report\n",
                R.f.n_where || R.f.state >= 0 ? "matching train " : "train ");
        rc = EXIT_NOT_FOUND;
    }
    if (rc == EXIT_OK) rc = rank_runs(&R);
    if (rc != EXIT_OK) goto out;
    html_report(&b, &R);
    if (b.oom) {
        fprintf(stderr, "mlq report: out of memory\n");
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    char err[512];
    if (strcmp(R.output, "-") == 0) {
        if (fwrite(b.p, 1, b.n, stdout) != b.n || fflush(stdout) != 0) {
            fprintf(stderr, "mlq report: cannot write to standard output\n");
            rc = EXIT_FAILURE_GENERIC;
        }
        goto out;
    }
    if (atomic_file_write_all(R.output, b.p, b.n, 0644, err, sizeof err) != 0) {
        fprintf(stderr, "mlq report: %s\n", err);
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (co.json) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "output", R.output, "runs", (json_int_t)R.n,
                              "evaluations", (json_int_t)R.nevals, "bytes", (json_int_t)b.n);
        json_object_set_new(o, "metric", R.metric ? json_string(R.metric) : json_null());
        json_object_set_new(o, "best",
                            R.n && isfinite(R.runs[0].score) ? json_integer(R.runs[0].j.id)
                                                             : json_null());
        history_json_print(o);
    } else {
        printf("wrote %s: %zu run%s, %zu evaluation%s, %.0f KB\n", R.output, R.n,
               R.n == 1 ? "" : "s", R.nevals, R.nevals == 1 ? "" : "s", b.n / 1024.0);
    }
out:
    svg_buf_free(&b);
    report_free(&R);
    store_close(&R.st);
    return rc;
}
