/* report_bench: builds a database of 1,000 train runs of 100 epochs each
 * (train and validation loss and accuracy and the learning rate per epoch,
 * a search over optimizer, learning rate, batch size and width; the best run
 * evaluated), then times `mlq report` of all of them from a cold process, as
 * a user runs it: issue 14 asks for at most 2 MB in under one second.
 * Usage: report_bench [DB [MLQ]] (default: a temp file, removed after; the
 * mlq of this build). Not part of ctest. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define N_RUNS 1000
#define EPOCHS 100
#define KEYS 5

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int die(struct store *s, const char *what)
{
    fprintf(stderr, "report_bench: %s: %s\n", what, store_errmsg(s));
    return 1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    char path[512], out[600], cmd[2048];
    bool temp = argc < 2;
    if (temp)
        snprintf(path, sizeof path, "/tmp/mlq-report-bench-%ld.db", (long)getpid());
    else
        snprintf(path, sizeof path, "%s", argv[1]);
    const char *mlq = argc > 2 ? argv[2] : MLQ_CLI;
    snprintf(out, sizeof out, "%s.html", path);
    char err[512];
    struct store *s;
    if (store_open(&s, path, STORE_CREATE | STORE_SYNC_NORMAL, err, sizeof err) != 0) {
        fprintf(stderr, "report_bench: %s\n", err);
        return 1;
    }
    static const char *const opts[] = {"adam", "sgd", "adamw", "rmsprop"};
    static const char *const keys[KEYS] = {"train_loss", "val_loss", "train_accuracy",
                                           "val_accuracy", "lr"};
    double t0 = now_ms();
    srand(14);
    int64_t best = 0;
    double best_loss = INFINITY;
    if (store_begin(s) != 0) return die(s, "begin");
    for (int i = 0; i < N_RUNS; i++) {
        char spec[1024];
        double lr = pow(10, -4 + 3.0 * rand() / RAND_MAX);
        int batch = 32 << (rand() % 4), width = 64 << (rand() % 3);
        const char *opt = opts[rand() % 4];
        snprintf(spec, sizeof spec,
                 "{\"kind\":\"train\",\"name\":\"trial-%d\",\"dataset\":{\"path\":"
                 "\"/srv/data/fashion-mnist-train.h5\",\"x\":\"X\",\"y\":\"y\"},\"validation\":"
                 "{\"path\":\"/srv/data/fashion-mnist-test.h5\"},\"model\":{\"layers\":[784,%d,"
                 "10],\"activation\":\"relu\",\"output\":\"logits\"},\"loss\":\"cross_entropy\","
                 "\"optimizer\":{\"name\":\"%s\",\"lr\":%.6g},\"batch_size\":%d,\"epochs\":%d,"
                 "\"seed\":%d,\"checkpoint_every\":1}",
                 i, width, opt, lr, batch, EPOCHS, i);
        struct store_new_job nj = {.kind = JOB_TRAIN, .spec_json = spec, .name = "trial"};
        int64_t id;
        if (store_job_submit(s, &nj, &id) != 0) return die(s, "submit");
        if (store_job_set_running(s, id, "t") != 0) return die(s, "state");
        /* a curve per run: a rate of its own, a floor, some noise */
        double rate = 0.02 + 0.2 * fabs(log10(lr) + 2.5) / 1.5 * rand() / RAND_MAX;
        double floor_ = 0.25 + 0.2 * rand() / RAND_MAX;
        for (int e = 1; e <= EPOCHS; e++) {
            double noise = 0.01 * ((double)rand() / RAND_MAX - 0.5);
            double tl = floor_ + 2.0 * exp(-rate * e) + noise;
            double vl = tl + 0.02 + 0.0004 * e * (1 - floor_);
            struct store_metric m[KEYS] = {{.key = keys[0], .value = tl},
                                           {.key = keys[1], .value = vl},
                                           {.key = keys[2], .value = 1 - tl / 3},
                                           {.key = keys[3], .value = 1 - vl / 3},
                                           {.key = keys[4], .value = lr}};
            for (int k = 0; k < KEYS; k++) {
                m[k].step = (int64_t)e * 938;
                m[k].epoch = e;
                m[k].time = 1.7e9 + i * 1000 + e;
            }
            if (store_metrics_put(s, id, m, KEYS) != 0) return die(s, "metrics");
            if (e == EPOCHS && vl < best_loss) best_loss = vl, best = id;
        }
        if (store_job_set_succeeded(s, id) != 0) return die(s, "state");
    }
    /* the best run evaluated: a 10-class confusion matrix */
    char espec[256], result[4096];
    snprintf(espec, sizeof espec,
             "{\"kind\":\"eval\",\"run\":%lld,\"dataset\":{\"path\":"
             "\"/srv/data/fashion-mnist-test.h5\"}}",
             (long long)best);
    struct store_new_job ej = {.kind = JOB_EVAL, .spec_json = espec, .run = best};
    int64_t eid;
    if (store_job_submit(s, &ej, &eid) != 0) return die(s, "eval");
    size_t o = (size_t)snprintf(result, sizeof result,
                                "{\"loss\":0.33,\"accuracy\":0.88,\"n\":10000,\"classes\":10,"
                                "\"confusion_matrix\":[");
    for (int t = 0; t < 10; t++)
        for (int p = 0; p < 10; p++)
            o += (size_t)snprintf(result + o, sizeof result - o, "%s%d%s",
                                  p   ? ","
                                  : t ? ",["
                                      : "[",
                                  t == p              ? 880
                                  : p == (t + 1) % 10 ? 84
                                                      : 4,
                                  p == 9 ? "]" : "");
    snprintf(result + o, sizeof result - o, "]}");
    if (store_job_set_running(s, eid, "t") != 0 || store_job_set_result(s, eid, result) != 0 ||
        store_job_set_succeeded(s, eid) != 0)
        return die(s, "eval");
    if (store_commit(s) != 0) return die(s, "commit");
    store_close(&s);
    printf("built %s: %d runs x %d epochs x %d metrics, one evaluation, in %.1f s\n", path, N_RUNS,
           EPOCHS, KEYS, (now_ms() - t0) / 1e3);

    snprintf(cmd, sizeof cmd, "'%s' report --db '%s' --output '%s' >/dev/null", mlq, path, out);
    /* Wall clock and the CPU the report's process used: on a busy machine
     * (other work, nice) the two part ways, and the CPU time is the report's. */
    double t[5], cpu[5];
    for (int rep = 0; rep < 5; rep++) {
        struct rusage r0, r1;
        getrusage(RUSAGE_CHILDREN, &r0);
        double a = now_ms();
        if (system(cmd) != 0) {
            fprintf(stderr, "report_bench: %s failed\n", cmd);
            return 1;
        }
        t[rep] = now_ms() - a;
        getrusage(RUSAGE_CHILDREN, &r1);
        cpu[rep] =
            (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) *
                1e3 +
            (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
             r0.ru_stime.tv_usec) /
                1e3;
    }
    qsort(t, 5, sizeof *t, cmp);
    qsort(cpu, 5, sizeof *cpu, cmp);
    struct stat st;
    long size = stat(out, &st) == 0 ? (long)st.st_size : -1;
    bool ok = t[0] < 1000 && size >= 0 && size <= 2 * 1024 * 1024;
    printf("mlq report of %d runs x %d epochs: median %.0f ms (best %.0f, worst %.0f) of 5, "
           "CPU %.0f ms (median), %.2f MB: %s (at most 1 s and 2 MB)\n",
           N_RUNS, EPOCHS, t[2], t[0], t[4], cpu[2], size / 1048576.0, ok ? "ok" : "OVER");
    if (temp) {
        unlink(path);
        unlink(out);
    }
    return ok ? 0 : 1;
}
