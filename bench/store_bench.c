/* store_bench: builds a database with one run of 1,000,000 metric rows and
 * 100,000 runs, then times the queries behind `mlq metrics ID --key val_loss`
 * (target < 100 ms) and `mlq runs` (target < 200 ms) through the same store
 * functions the cli calls. Usage: store_bench [DB] (default: a temp file,
 * removed after). Not part of ctest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int count_metric(void *ctx, const struct store_metric *m)
{
    (void)m;
    (*(size_t *)ctx)++;
    return 0;
}

#define N_RUNS 100000
#define N_METRICS 1000000
#define KEYS 4

static int die(struct store *s, const char *what)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, store_errmsg(s));
    return 1;
}

int main(int argc, char **argv)
{
    char path[512];
    bool temp = argc < 2;
    if (temp)
        snprintf(path, sizeof path, "/tmp/mlq-store-bench-%ld.db", (long)getpid());
    else
        snprintf(path, sizeof path, "%s", argv[1]);
    char err[512];
    struct store *s;
    if (store_open(&s, path, STORE_CREATE | STORE_SYNC_NORMAL, err, sizeof err) != 0) {
        fprintf(stderr, "store_bench: %s\n", err);
        return 1;
    }
    static const char *const opts[] = {"adam", "sgd", "adamw", "rmsprop"};
    static const char *const keys[KEYS] = {"train_loss", "val_loss", "val_accuracy", "lr"};
    double t0 = now_ms();
    int64_t big = 0;
    if (store_begin(s) != 0) return die(s, "begin");
    for (int i = 0; i < N_RUNS; i++) {
        char spec[256];
        snprintf(spec, sizeof spec,
                 "{\"kind\":\"train\",\"optimizer\":{\"name\":\"%s\",\"lr\":0.00%d},"
                 "\"model\":{\"layers\":[784,128,64,10]},\"epochs\":10}",
                 opts[i % 4], 1 + i % 9);
        struct store_new_job nj = {.kind = JOB_TRAIN, .spec_json = spec, .name = "bench"};
        int64_t id;
        if (store_job_submit(s, &nj, &id) != 0) return die(s, "submit");
        if (i == 0) big = id;
        struct store_metric m[KEYS];
        for (int k = 0; k < KEYS; k++)
            m[k] = (struct store_metric){.key = keys[k],
                                         .step = 10,
                                         .epoch = 10,
                                         .value = (double)(i % 1000) / 1000,
                                         .time = 1.7e9};
        if (store_metrics_put(s, id, m, KEYS) != 0) return die(s, "metrics");
        if (store_job_set_running(s, id, "t") != 0 || store_job_set_succeeded(s, id) != 0)
            return die(s, "state");
        if (i % 10000 == 9999 && (store_commit(s) != 0 || store_begin(s) != 0))
            return die(s, "commit");
    }
    /* One run with 1,000,000 metric rows: 250,000 steps of 4 keys. */
    for (int64_t step = 1; step <= N_METRICS / KEYS; step++) {
        struct store_metric m[KEYS];
        for (int k = 0; k < KEYS; k++)
            m[k] = (struct store_metric){.key = keys[k],
                                         .step = step,
                                         .epoch = step / 1000,
                                         .value = 1.0 / (double)step,
                                         .time = 1.7e9 + step};
        if (store_metrics_put(s, big, m, KEYS) != 0) return die(s, "metrics");
        if (step % 50000 == 0 && (store_commit(s) != 0 || store_begin(s) != 0))
            return die(s, "commit");
    }
    if (store_commit(s) != 0) return die(s, "commit");
    printf("built %s: %d runs, %d metric rows in run %lld, in %.1f s\n", path, N_RUNS, N_METRICS,
           (long long)big, (now_ms() - t0) / 1e3);
    store_close(&s);

    /* The cli's path: a fresh read-only open per query, as `mlq` does. */
    for (int rep = 0; rep < 3; rep++) {
        double a = now_ms();
        if (store_open(&s, path, STORE_READONLY, err, sizeof err) != 0) {
            fprintf(stderr, "store_bench: %s\n", err);
            return 1;
        }
        size_t n = 0;
        if (store_metrics_foreach(s, big, "val_loss", count_metric, &n) != 0)
            return die(s, "metrics query");
        double b = now_ms();
        struct store_run_filter f = {.state = -1, .kind = -1, .limit = 50};
        struct store_job *runs;
        size_t nr;
        if (store_runs_list(s, &f, &runs, &nr) != 0) return die(s, "runs");
        for (size_t i = 0; i < nr; i++) { /* what `mlq runs` reads per row */
            struct store_param *p;
            struct store_metric *m;
            size_t np, nm;
            if (store_params_list(s, runs[i].id, &p, &np) != 0 ||
                store_metrics_final(s, runs[i].id, &m, &nm) != 0)
                return die(s, "runs rows");
            store_params_free(p, np);
            store_metrics_free(m, nm);
        }
        store_jobs_free(&runs, nr);
        double c = now_ms();
        f.limit = 0;
        if (store_runs_list(s, &f, &runs, &nr) != 0) return die(s, "runs all");
        store_jobs_free(&runs, nr);
        double d = now_ms();
        f.limit = 50;
        f.sort_metric = "val_loss";
        f.n_where = 1;
        f.where_key[0] = "optimizer.name";
        f.where_value[0] = "adam";
        if (store_runs_list(s, &f, &runs, &nr) != 0) return die(s, "runs sorted");
        store_jobs_free(&runs, nr);
        double e = now_ms();
        store_close(&s);
        printf("round %d: metrics --key val_loss (%zu rows): %.1f ms (target < 100)\n"
               "         runs (newest 50, params + final metrics): %.1f ms (target < 200)\n"
               "         runs --limit 0 (all %d): %.1f ms\n"
               "         runs --where optimizer.name=adam --sort val_loss: %.1f ms\n",
               rep + 1, n, b - a, c - b, N_RUNS, d - c, e - d);
    }
    if (temp) {
        char side[600];
        unlink(path);
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
    }
    return 0;
}
