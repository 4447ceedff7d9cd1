/* A job's memory is bounded (issue 9, defect 5): trainer/job_memory.h
 * estimates it from the spec and the data's shape, and a job over the
 * trainer's limit fails before anything is allocated.
 * - the estimate's parts match what the engine really allocates (mallinfo2);
 * - mlq-trainer --standalone and the daemon, with trainer.memory_budget_mb
 *   = 256, refuse the 784,4096,10 job at batch 60000 (which peaked
 *   at 3.3 GB) within a second, their peak RSS small (wait4, VmHWM), the
 *   daemon serving the next job; a spec asking memory_budget_mb 2^40 for a
 *   file that declares 16 GiB of rows is refused the same way;
 * - a job that fits stays within its estimate (peak RSS <= estimate);
 * - mlq submit refuses the job before it is queued when the file is here. */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "broker_harness.h"
#include "job_memory.h"
#include "model.h"
#include "net.h"
#include "optim.h"
#include "spec_model.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1 /* redzones and quarantine: RSS is no measure of the estimate */
size_t __sanitizer_get_current_allocated_bytes(void); /* ASan runtime */
#else
#define SANITIZED 0
#endif
#define SMALL_RSS_KB (200 * 1024) /* a refused job: the program, no buffers */

/* Bytes the program holds from malloc: glibc's count, or ASan's allocator's. */
static int64_t allocated(void)
{
#if SANITIZED
    return (int64_t)__sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return (int64_t)(mi.uordblks + mi.hblkhd);
#endif
}

static int64_t part(const struct job_memory *m, const char *name)
{
    for (int i = 0; i < m->n_parts; i++)
        if (strcmp(m->part[i].name, name) == 0) return m->part[i].bytes;
    return 0;
}

static void parse(const char *json, struct mlq_spec *s)
{
    char err[512];
    if (spec_parse(json, s, err, sizeof err)) fail_msg("%s: %s", json, err);
}

/* Within 1% and a page or so per buffer: malloc's own headers. */
static void assert_near(int64_t estimated, int64_t real, const char *what)
{
    int64_t slack = real / 100 + 4 * 4096;
    if (estimated < real - slack || estimated > real + slack)
        fail_msg("%s: estimated %lld bytes, the engine allocates %lld", what, (long long)estimated,
                 (long long)real);
}

static void test_parts_match_the_engine(void **state)
{
    (void)state;
    const char *specs[] = {
        "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"layers\":[784,256,10]},"
        "\"optimizer\":{\"name\":\"adam\",\"amsgrad\":true},\"batch_size\":512}",
        "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"layers\":[20,64,32,5]},"
        "\"optimizer\":{\"name\":\"rmsprop\",\"momentum\":0.9,\"centered\":true},\"batch_size\":"
        "100}",
        "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"layers\":[100,3000,7]},"
        "\"optimizer\":{\"name\":\"sgd\",\"momentum\":0.9},\"batch_size\":64}",
        "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"layers\":[30,2]},"
        "\"optimizer\":{\"name\":\"sgd\"},\"batch_size\":8}",
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        struct mlq_spec s;
        parse(specs[i], &s);
        struct job_memory_job j = {
            .spec = &s, .model = &s, .data = {.rows = 5000, .row_bytes = 84}};
        struct job_memory m;
        char err[4096];
        assert_int_equal(job_memory_plan(&j, &m, err, sizeof err), 0);
        assert_int_equal(m.rows, s.batch_size);

        struct net net;
        struct optim opt;
        int64_t a0 = allocated();
        assert_int_equal(spec_model_net_create(&net, &s), 0);
        int64_t a1 = allocated();
        assert_int_equal(net_reserve(&net, m.rows), 0);
        int64_t a2 = allocated();
        assert_int_equal(spec_model_optim_create(&opt, &s.optimizer, net.n_params), 0);
        int64_t a3 = allocated();
        assert_near(part(&m, "parameters") + part(&m, "gradients"), a1 - a0, "params + grads");
        assert_near(part(&m, "activations") + part(&m, "backward buffers"), a2 - a1, "net_reserve");
        assert_near(part(&m, "optimizer state"), a3 - a2, "optimizer state");
        optim_destroy(&opt);
        net_destroy(&net);
    }
}

/* A model of typed layers is estimated from the engine's own sizes (the
 * graph's arenas, its parameters and batch norm state), on the data's
 * shape when the spec has no model.input. */
static void test_typed_model_parts_match_the_engine(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse("{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"layers\":["
          "{\"type\":\"conv2d\",\"out\":16,\"kernel\":3,\"padding\":1},{\"type\":\"batchnorm\"},"
          "{\"type\":\"relu\"},{\"type\":\"maxpool\",\"kernel\":2},{\"type\":\"flatten\"},"
          "{\"type\":\"dense\",\"out\":10}]},\"optimizer\":\"adam\",\"batch_size\":128}",
          &s);
    struct job_memory_job j = {
        .spec = &s,
        .model = &s,
        .data = {.rows = 5000, .row_bytes = 785, .x_rank = 3, .x_dims = {5000, 28, 28}}};
    struct job_memory m;
    char err[4096];
    assert_int_equal(job_memory_plan(&j, &m, err, sizeof err), 0);
    struct shape data = {3, {1, 28, 28}};
    struct model model;
    int64_t a0 = allocated();
    assert_int_equal(spec_model_create(&model, &s, &data, err, sizeof err), 0);
    int64_t a1 = allocated();
    assert_int_equal(model_reserve(&model, m.rows), 0);
    int64_t a2 = allocated();
    assert_true(model.n_state > 0);
    int64_t table =
        (int64_t)(model.tensors.cap * sizeof *model.tensors.t + model.n_nodes * sizeof *model.node);
    assert_near(part(&m, "parameters") + part(&m, "gradients") + part(&m, "layer state") + table,
                a1 - a0, "params + grads + state");
    assert_near(part(&m, "activations"), a2 - a1, "model_reserve");
    /* (N, 28, 28) rows are 784 inputs and one class id, twice (train.c). */
    assert_int_equal(part(&m, "batch buffers"), 2 * 128 * (784 + 1) * 4);
    model_destroy(&model);
}

/* A language model has a target per step: its batch buffers hold T class
 * ids per row (train.c allocates B T of them), an mse model on sequences T
 * K targets. */
static void test_language_model_counts_a_target_per_step(void **state)
{
    (void)state;
    const char *layers = "\"layers\":[{\"type\":\"embedding\",\"vocab\":256,\"out\":16},"
                         "{\"type\":\"positional\",\"vocab\":32},{\"type\":\"lstm\",\"out\":16},"
                         "{\"type\":\"dense\",\"out\":%d}]";
    const struct {
        const char *loss;
        int K, per_row; /* outputs per step; targets per row */
    } cases[] = {{"cross_entropy", 256, 32}, {"mse", 3, 32 * 3}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char ls[512], json[1024];
        snprintf(ls, sizeof ls, layers, cases[i].K);
        snprintf(
            json, sizeof json,
            "{\"kind\":\"train\",\"dataset\":{\"path\":\"d.h5\"},\"model\":{\"input\":[32],%s},"
            "\"loss\":\"%s\",\"optimizer\":\"adam\",\"batch_size\":16}",
            ls, cases[i].loss);
        struct mlq_spec s;
        parse(json, &s);
        struct job_memory_job j = {
            .spec = &s,
            .model = &s,
            .data = {.rows = 5000, .row_bytes = 64, .x_rank = 2, .x_dims = {5000, 32}}};
        struct job_memory m;
        char err[4096];
        if (job_memory_plan(&j, &m, err, sizeof err)) fail_msg("%s: %s", cases[i].loss, err);
        assert_int_equal(m.rows, 16);
        assert_int_equal(part(&m, "batch buffers"), 2 * 16 * (32 + cases[i].per_row) * 4);
    }
}

/* X uint8 (n, d) and y uint8 (n), declared and never written: a file of a
 * few KiB that claims n * d bytes, as a hostile or sparse file does. */
static void declared_only(const char *path, hsize_t n, hsize_t d)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t rows = n < 1024 ? n : 1024;
    hsize_t xd[2] = {n, d}, yd[1] = {n}, xc[2] = {rows, d}, yc[1] = {rows};
    hid_t xs = H5Screate_simple(2, xd, NULL), ys = H5Screate_simple(1, yd, NULL);
    hid_t xp = H5Pcreate(H5P_DATASET_CREATE), yp = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(xp, 2, xc);
    H5Pset_chunk(yp, 1, yc);
    hid_t x = H5Dcreate2(f, "X", H5T_STD_U8LE, xs, H5P_DEFAULT, xp, H5P_DEFAULT);
    hid_t y = H5Dcreate2(f, "y", H5T_STD_U8LE, ys, H5P_DEFAULT, yp, H5P_DEFAULT);
    assert_true(x >= 0 && y >= 0);
    H5Dclose(x);
    H5Dclose(y);
    H5Pclose(xp);
    H5Pclose(yp);
    H5Sclose(xs);
    H5Sclose(ys);
    H5Fclose(f);
}

struct child {
    int status;     /* exit status, -1 if killed */
    double seconds; /* until it ended */
    long maxrss_kb; /* its peak RSS */
    char out[8192]; /* the end of its stdout and stderr */
};

/* Runs argv with env (NAME=VALUE, NULL-terminated) added, killed after
 * timeout_s; its peak RSS from wait4. */
static void run_child(struct harness *h, const char *const *argv, const char *const *env,
                      double timeout_s, struct child *c)
{
    char log[600];
    snprintf(log, sizeof log, "%s/child.out", h->dir);
    fflush(NULL);
    double t0 = h_now();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(log, "w", stdout) || !freopen(log, "a", stderr)) _exit(127);
        setvbuf(stdout, NULL, _IONBF, 0);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    struct rusage ru;
    int st = 0;
    bool killed = false;
    for (;;) {
        pid_t got = wait4(pid, &st, WNOHANG, &ru);
        if (got == pid) break;
        if (h_now() - t0 > timeout_s && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    c->seconds = h_now() - t0;
    c->maxrss_kb = ru.ru_maxrss;
    c->status = killed || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(c->out, 1, sizeof c->out - 1, f);
    c->out[n] = '\0';
    fclose(f);
    print_message("exit %d after %.2f s, peak RSS %ld MiB\n", c->status, c->seconds,
                  c->maxrss_kb / 1024);
}

static void write_spec(const char *path, const char *data, const char *layers, int batch,
                       const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"kind\": \"train\", \"dataset\": {\"path\": \"%s\"}, \"model\": {\"layers\": [%s]},"
             " \"optimizer\": {\"name\": \"adam\", \"lr\": 0.001}, \"batch_size\": %d, \"epochs\": "
             "1, \"threads\": 1%s}",
             data, layers, batch, extra);
    assert_int_equal(testutil_write_file(path, text), 0);
}

static void assert_refused_small(const struct child *c, const char *want)
{
    if (!strstr(c->out, want)) fail_msg("expected '%s' in:\n%s", want, c->out);
    assert_int_not_equal(c->status, 0);
    assert_int_not_equal(c->status, -1); /* ended by itself, not by the timeout */
    assert_true(c->seconds < 10);
    assert_true(c->maxrss_kb < SMALL_RSS_KB);
}

/* The case: 784,4096,10 at batch 60000 under trainer.memory_budget_mb
 * = 256 peaked at 3.3 GB. Now the job fails before it allocates. */
static void test_standalone_refuses_before_allocating(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600];
    snprintf(data, sizeof data, "%s/fm-shaped.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/big.json", h->dir);
    declared_only(data, 60000, 784);
    write_spec(spec, data, "784, 4096, 10", 60000, "");
    const char *argv[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer", "--standalone", spec, NULL};
    const char *env[] = {"MLQ_TRAINER_MEMORY_BUDGET_MB=256", NULL};
    struct child c;
    run_child(h, argv, env, 30, &c);
    assert_refused_small(&c, "job needs ~");
    assert_non_null(strstr(c.out, "activations 1.8 GiB (batch 60000 x 4106 floats x 2)"));
    assert_non_null(strstr(c.out, "trainer limit 256 MiB (trainer.memory_budget_mb)"));
    assert_non_null(strstr(c.out, "\"state\":\"failed\""));
}

/* memory_budget_mb 2^40 in the spec let a 1.7 KB file that declares 16 GiB
 * of rows make the trainer allocate them. Now the trainer's limit caps what
 * a spec may ask for. */
static void test_spec_budget_above_the_limit_is_refused(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600];
    snprintf(data, sizeof data, "%s/sparse.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/sparse.json", h->dir);
    declared_only(data, (hsize_t)1 << 24, 1024);
    write_spec(spec, data, "1024, 10", 64, ", \"memory_budget_mb\": 1099511627776");
    const char *argv[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer", "--standalone", spec, NULL};
    const char *env[] = {"MLQ_TRAINER_MEMORY_BUDGET_MB=256", NULL};
    struct child c;
    run_child(h, argv, env, 30, &c);
    assert_refused_small(&c, "above this trainer's limit of 256 MiB");
}

/* A job that fits stays within its estimate (an upper bound: pages that
 * are allocated and never touched do not count in RSS). */
static void test_job_within_its_estimate(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600];
    snprintf(data, sizeof data, "%s/blobs.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/fits.json", h->dir);
    assert_int_equal(testutil_write_blobs(data, 4096, 256, 10, 1), 0);
    write_spec(spec, data, "256, 1024, 10", 4096, "");
    const char *argv[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer", "--standalone", spec, NULL};
    const char *env[] = {"MLQ_TRAINER_MEMORY_BUDGET_MB=256", NULL};
    struct child c;
    run_child(h, argv, env, 120, &c);
    assert_int_equal(c.status, 0);
    const char *at = strstr(c.out, "\"memory_estimate\":");
    assert_non_null(at);
    long long estimate = atoll(at + strlen("\"memory_estimate\":"));
    print_message("estimate %lld MiB, peak RSS %ld MiB\n", estimate >> 20, c.maxrss_kb / 1024);
    assert_true(estimate > 64 << 20); /* the batch's buffers are a real share */
    if (!SANITIZED) assert_true(c.maxrss_kb * 1024 <= estimate);
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static void test_daemon_refuses_and_goes_on(void **state)
{
    struct harness *h = *state;
    char data[600], small[600];
    snprintf(data, sizeof data, "%s/fm-shaped.h5", h->dir);
    declared_only(data, 60000, 784);
    h_dataset(h, "small.h5", 200, 8, 3, 1, small, sizeof small);
    h_broker_start(h, NULL);
    setenv("MLQ_TRAINER_MEMORY_BUDGET_MB", "256", 1);
    pid_t trainer = h_trainer_start(h, "t1");
    unsetenv("MLQ_TRAINER_MEMORY_BUDGET_MB");
    h_wait_trainers(h, 1, 10);

    json_t *big = json_pack("{s:s, s:{s:s}, s:{s:[i,i,i]}, s:{s:s}, s:i, s:i}", "kind", "train",
                            "dataset", "path", data, "model", "layers", 784, 4096, 10, "optimizer",
                            "name", "adam", "batch_size", 60000, "epochs", 1);
    double t0 = h_now();
    int64_t id = h_submit(h, big);
    char st[32];
    h_wait_terminal(h, id, 30, st, sizeof st);
    double took = h_now() - t0;
    json_t *job = h_job(h, id);
    const char *error = json_string_value(json_object_get(job, "error"));
    long hwm = vm_hwm_kb(trainer);
    print_message("%s after %.2f s: %s\ntrainer VmHWM %ld MiB\n", st, took, error ? error : "",
                  hwm / 1024);
    assert_string_equal(st, "failed");
    assert_non_null(error);
    assert_non_null(strstr(error, "job needs ~"));
    assert_non_null(strstr(error, "trainer limit 256 MiB (trainer.memory_budget_mb)"));
    json_decref(job);
    assert_true(took < 10);
    assert_true(hwm > 0 && hwm < SMALL_RSS_KB);

    /* The trainer lives on and takes the next job. */
    id = h_submit(h, h_train_spec(small, 8, 3, 1, 1));
    h_wait_terminal(h, id, 30, st, sizeof st);
    assert_string_equal(st, "succeeded");
}

/* mlq submit sizes a job whose data is here as this host's trainers would,
 * and refuses it before it reaches the broker (none runs here). */
static void test_submit_refuses_here(void **state)
{
    struct harness *h = *state;
    char data[600], spec[600];
    snprintf(data, sizeof data, "%s/fm-shaped.h5", h->dir);
    snprintf(spec, sizeof spec, "%s/big.json", h->dir);
    declared_only(data, 60000, 784);
    write_spec(spec, data, "784, 4096, 10", 60000, "");
    const char *argv[] = {MLQ_BINARY_DIR "/cli/mlq", "submit", "--spec", spec, NULL};
    const char *env[] = {"MLQ_TRAINER_MEMORY_BUDGET_MB=256", "MLQ_TIMEOUT_MS=500", NULL};
    struct child c;
    run_child(h, argv, env, 30, &c);
    print_message("%s", c.out);
    assert_int_equal(c.status, 2);
    assert_non_null(strstr(c.out, "job needs ~"));
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *only = getenv("MLQ_TEST_ONLY"); /* e.g. checking one case on an older build */
    if (only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts_match_the_engine),
        cmocka_unit_test(test_typed_model_parts_match_the_engine),
        cmocka_unit_test(test_language_model_counts_a_target_per_step),
        cmocka_unit_test_setup_teardown(test_standalone_refuses_before_allocating, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_spec_budget_above_the_limit_is_refused, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_job_within_its_estimate, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_daemon_refuses_and_goes_on, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_submit_refuses_here, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
