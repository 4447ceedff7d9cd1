/* mlq logs: a job's events and one line per epoch (every metric of that
 * epoch), in time order, as stored; --follow keeps reading the database
 * until the job ends (docs/history.md, "mlq logs"). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "store.h"

#define LOGS_POLL_MS 500

/* One line to print: an event, or an epoch's metrics. */
struct logline {
    double time;
    bool epoch_line;
    int64_t epoch;
    char *level, *message; /* event */
    json_t *metrics;       /* epoch: {key: value} in key order */
};

struct logs {
    struct logline *l;
    size_t n, cap;
    size_t events_seen; /* events already collected */
    size_t events_now;  /* counted during a walk */
    int64_t epoch_seen; /* epochs already collected (store_metrics_since's after) */
    bool json;
    int err;
};

static struct logline *logline_new(struct logs *g)
{
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 64;
        struct logline *p = realloc(g->l, ncap * sizeof *p);
        if (!p) return NULL;
        g->l = p;
        g->cap = ncap;
    }
    struct logline *x = &g->l[g->n++];
    memset(x, 0, sizeof *x);
    return x;
}

static int event_cb(void *ctx, const struct store_event *e)
{
    struct logs *g = ctx;
    if (g->events_now++ < g->events_seen) return 0;
    struct logline *x = logline_new(g);
    if (!x) return g->err = -ENOMEM;
    x->time = e->time;
    x->level = strdup(e->level ? e->level : "");
    x->message = strdup(e->message ? e->message : "");
    return x->level && x->message ? 0 : (g->err = -ENOMEM);
}

static int epoch_cb(void *ctx, const struct store_metric *m)
{
    struct logs *g = ctx;
    struct logline *x = g->n ? &g->l[g->n - 1] : NULL;
    if (!x || !x->epoch_line || x->epoch != m->epoch) {
        x = logline_new(g);
        if (!x) return g->err = -ENOMEM;
        x->epoch_line = true;
        x->epoch = m->epoch;
        x->metrics = json_object();
    }
    json_object_set_new(x->metrics, m->key, history_json_num(m->value));
    if (m->time > x->time) x->time = m->time;
    if (m->epoch > g->epoch_seen) g->epoch_seen = m->epoch;
    return 0;
}

static int cmp_line(const void *a, const void *b)
{
    const struct logline *x = a, *y = b;
    if (x->time != y->time) return x->time < y->time ? -1 : 1;
    return (int)x->epoch_line - (int)y->epoch_line; /* an event first: it says why */
}

static void print_line(const struct logline *x, int64_t epochs, bool json)
{
    if (json) {
        json_t *o =
            json_pack("{s:f, s:s}", "time", x->time, "type", x->epoch_line ? "epoch" : "event");
        if (x->epoch_line) {
            json_object_set_new(o, "epoch", json_integer(x->epoch));
            json_object_set(o, "metrics", x->metrics);
        } else {
            json_object_set_new(o, "level", json_string(x->level));
            json_object_set_new(o, "message", json_string(x->message));
        }
        char *text = history_json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text) puts(text);
        free(text);
        json_decref(o);
        return;
    }
    char when[32];
    history_fmt_time(when, sizeof when, x->time);
    if (!x->epoch_line) {
        printf("%s  %-5s  %s\n", when, x->level, x->message);
        return;
    }
    printf("%s  epoch  %lld", when, (long long)x->epoch);
    if (epochs > 0) printf("/%lld", (long long)epochs);
    const char *k;
    json_t *v;
    json_object_foreach(x->metrics, k, v)
    {
        if (json_is_number(v))
            printf("  %s %.6g", k, json_number_value(v));
        else
            printf("  %s nan", k);
    }
    putchar('\n');
}

static void lines_free(struct logs *g, size_t from)
{
    for (size_t i = from; i < g->n; i++) {
        free(g->l[i].level);
        free(g->l[i].message);
        json_decref(g->l[i].metrics);
    }
    g->n = from;
}

/* Collects what is new since the last call, sorts it and prints it. */
static int logs_pass(struct store *s, int64_t id, struct logs *g, int64_t epochs)
{
    g->events_now = 0;
    int rc = store_events_foreach(s, id, event_cb, g);
    if (rc == 0) g->events_seen = g->events_now;
    if (rc == 0) rc = store_metrics_since(s, id, g->epoch_seen, epoch_cb, g);
    if (rc == 0) {
        qsort(g->l, g->n, sizeof *g->l, cmp_line);
        for (size_t i = 0; i < g->n; i++)
            print_line(&g->l[i], epochs, g->json);
        fflush(stdout);
    }
    lines_free(g, 0);
    return rc;
}

static volatile sig_atomic_t logs_interrupted;

static void on_int(int sig)
{
    (void)sig;
    logs_interrupted = 1;
}

static void logs_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq logs ID [--follow] [--db FILE] [--json]\n\n"
            "A job's events and a line per epoch with every metric of it, in time order, as\n"
            "stored in the database. --follow keeps printing until the job ends (exit 0\n"
            "succeeded, 3 failed, 4 cancelled, as mlq wait).\n\n"
            "  -f, --follow  wait for more until the job ends\n%s",
            history_common_help);
}

static int logs_option(void *ctx, int ch, const char *arg)
{
    (void)arg;
    if (ch == 'f') *(bool *)ctx = true;
    return HISTORY_PROCEED;
}

static int64_t spec_epochs(const char *spec_json)
{
    json_t *spec = spec_json ? json_loads(spec_json, 0, NULL) : NULL;
    int64_t e = json_integer_value(json_object_get(spec, "epochs"));
    json_decref(spec);
    return e;
}

int cmd_logs(int argc, char **argv)
{
    static const struct option opts[] = {{"follow", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    bool follow = false;
    const struct history_cmd cmd = {.name = "logs",
                                    .shortopts = "f",
                                    .opts = opts,
                                    .no_csv = true,
                                    .option = logs_option,
                                    .ctx = &follow,
                                    .usage = logs_usage};
    struct history_opts co;
    int64_t id;
    int rc = history_args_id(&cmd, argc, argv, &co, &id);
    if (rc != HISTORY_PROCEED) return rc;
    struct store *s;
    rc = history_open("logs", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job j;
    rc = history_job_get("logs", s, id, &j);
    if (rc != EXIT_OK) {
        store_close(&s);
        return rc;
    }
    int64_t epochs = j.kind == JOB_TRAIN ? spec_epochs(j.spec_json) : 0;
    struct logs g = {.json = co.json};
    if (follow) {
        struct sigaction sa = {.sa_handler = on_int};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    for (;;) {
        bool ended = store_state_terminal(j.state);
        if (logs_pass(s, id, &g, epochs) != 0) {
            fprintf(stderr, "mlq logs: %s\n", g.err ? "out of memory" : store_errmsg(s));
            rc = EXIT_FAILURE_GENERIC;
            break;
        }
        /* The state was read before this pass: what it printed is all there is. */
        if (!follow || ended) {
            rc = !follow || j.state == STORE_SUCCEEDED ? EXIT_OK
                 : j.state == STORE_CANCELLED          ? EXIT_JOB_CANCELLED
                                                       : EXIT_JOB_FAILED;
            if (follow && !co.json)
                printf("job %lld %s\n", (long long)id, store_state_name(j.state));
            break;
        }
        for (int k = 0; k < LOGS_POLL_MS / 50 && !logs_interrupted; k++)
            usleep(50 * 1000);
        if (logs_interrupted) {
            fprintf(stderr,
                    "mlq logs: stopped following; job %lld goes on (mlq logs %lld --follow "
                    "to follow it again)\n",
                    (long long)id, (long long)id);
            rc = EXIT_OK;
            break;
        }
        store_job_free(&j);
        int got = store_job_get(s, id, &j);
        if (got != 0) {
            memset(&j, 0, sizeof j);
            fprintf(stderr, "mlq logs: %s\n",
                    got == -ENOENT ? "the job was removed" : store_errmsg(s));
            rc = got == -ENOENT ? EXIT_NOT_FOUND : EXIT_FAILURE_GENERIC;
            break;
        }
    }
    free(g.l);
    store_job_free(&j);
    store_close(&s);
    return rc;
}
