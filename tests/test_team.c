/* The thread team (engine/team.h): every slice runs once; a worker held
 * before it claims (as if descheduled) does not stall the caller, which then
 * runs every slice alone; a slow slice claimed by a worker is waited for,
 * and sends the caller on alone for a while; the background task; and the dense net gives the same
 * bits for a given thread count with its workers held, with another process busy on a core, and run
 * after run. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "net.h"
#include "rng.h"
#include "team.h"

#define MAX_SLICES 70000 /* more than one chunk of the team's state word */

struct record {
    _Atomic int runs[MAX_SLICES];
    _Atomic int thread[MAX_SLICES];
    long sleep_us[TEAM_MAX_THREADS]; /* how long a slice run by each thread takes */
};

static void record_slice(void *ctx, int slice, int thread)
{
    struct record *r = ctx;
    atomic_fetch_add(&r->runs[slice], 1);
    atomic_store(&r->thread[slice], thread);
    if (r->sleep_us[thread]) usleep((useconds_t)r->sleep_us[thread]);
}

static struct record *record_new(void)
{
    struct record *r = calloc(1, sizeof *r);
    assert_non_null(r);
    return r;
}

static void record_reset(struct record *r)
{
    for (int i = 0; i < MAX_SLICES; i++) {
        atomic_store(&r->runs[i], 0);
        atomic_store(&r->thread[i], -1);
    }
}

static void assert_each_ran_once(struct record *r, int n)
{
    for (int i = 0; i < n; i++)
        if (atomic_load(&r->runs[i]) != 1)
            fail_msg("slice %d of %d ran %d times", i, n, atomic_load(&r->runs[i]));
    for (int i = n; i < MAX_SLICES && i < n + 16; i++)
        assert_int_equal(atomic_load(&r->runs[i]), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_every_slice_runs_once(void **state)
{
    (void)state;
    struct record *r = record_new();
    int counts[] = {0, 1, 2, 3, 7, 64, 1000, MAX_SLICES};
    for (int n = 1; n <= 4; n++) {
        struct team *t;
        assert_int_equal(team_create(&t, n), 0);
        assert_int_equal(team_size(t), n);
        assert_true(n == 1 ? t == NULL : t != NULL);
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            for (int rep = 0; rep < 3; rep++) {
                record_reset(r);
                team_for(t, counts[c], record_slice, r);
                assert_each_ran_once(r, counts[c]);
                for (int i = 0; i < counts[c]; i++) {
                    int th = atomic_load(&r->thread[i]);
                    assert_true(th >= 0 && th < n);
                }
            }
        team_destroy(&t);
        assert_null(t);
        team_destroy(&t); /* NULL: nothing */
    }
    struct team *t = (struct team *)1;
    assert_int_equal(team_create(&t, 0), -EINVAL);
    assert_null(t);
    assert_int_equal(team_create(&t, TEAM_MAX_THREADS + 1), -EINVAL);
    free(r);
}

/* Workers held as if descheduled: the caller runs everything and returns. */
static void test_held_workers_do_not_stall(void **state)
{
    (void)state;
    struct record *r = record_new();
    struct team *t;
    assert_int_equal(team_create(&t, 3), 0);
    team_hold_workers(t, true);
    for (int rep = 0; rep < 50; rep++) {
        record_reset(r);
        team_for(t, 64, record_slice, r);
        assert_each_ran_once(r, 64);
        for (int i = 0; i < 64; i++)
            assert_int_equal(atomic_load(&r->thread[i]), 0);
    }
    /* Released, they take slices again: slow slices leave them time to. */
    team_hold_workers(t, false);
    int by_worker = 0;
    double end = now_s() + 10.0;
    while (!by_worker && now_s() < end) {
        record_reset(r);
        r->sleep_us[0] = 2000;
        team_for(t, 16, record_slice, r);
        assert_each_ran_once(r, 16);
        for (int i = 0; i < 16; i++)
            by_worker += atomic_load(&r->thread[i]) != 0;
    }
    assert_true(by_worker > 0);
    team_destroy(&t);
    free(r);
}

/* A worker that is slow inside a slice it claimed holds up the job's end,
 * and only that: team_for returns after every slice, its own included. */
static void test_slow_claimed_slice_is_waited_for(void **state)
{
    (void)state;
    struct record *r = record_new();
    struct team *t;
    assert_int_equal(team_create(&t, 2), 0);
    r->sleep_us[1] = 30000;
    for (int rep = 0; rep < 5; rep++) {
        record_reset(r);
        team_for(t, 8, record_slice, r);
        assert_each_ran_once(r, 8);
    }
    team_destroy(&t);
    free(r);
}

/* A worker stalled inside a slice it claimed costs the caller once: the
 * next jobs run on the caller alone for a while (same slices), then the
 * team is tried again. */
static void test_stall_makes_the_caller_go_alone(void **state)
{
    (void)state;
    struct record *r = record_new();
    struct team *t;
    assert_int_equal(team_create(&t, 2), 0);
    r->sleep_us[0] = 500; /* time for the worker to wake and claim one */
    r->sleep_us[1] = 40000;
    int stalled = 0;
    for (int job = 0; job < 100 && !stalled; job++) {
        record_reset(r);
        team_for(t, 8, record_slice, r);
        assert_each_ran_once(r, 8);
        for (int i = 0; i < 8; i++)
            stalled |= atomic_load(&r->thread[i]) == 1;
    }
    assert_true(stalled);
    /* The caller's slices now take 1 ms each: a worker that is running
     * has all the time it needs to claim one, were it asked to. */
    struct record *q = record_new();
    q->sleep_us[0] = 1000;
    team_for(t, 8, record_slice, q);
    assert_each_ran_once(q, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(atomic_load(&q->thread[i]), 0);
    /* Four times the 40 ms lost, at most 100 ms: later the worker is back. */
    usleep(250000);
    int by_worker = 0;
    double end = now_s() + 10.0;
    while (!by_worker && now_s() < end) {
        record_reset(q);
        team_for(t, 8, record_slice, q);
        assert_each_ran_once(q, 8);
        for (int i = 0; i < 8; i++)
            by_worker += atomic_load(&q->thread[i]) != 0;
    }
    assert_true(by_worker > 0);
    team_destroy(&t);
    free(q);
    free(r);
}

static void bump(void *ctx)
{
    atomic_fetch_add((_Atomic int *)ctx, 1);
}

static void test_task_runs_once_held_or_not(void **state)
{
    (void)state;
    struct team *t;
    assert_int_equal(team_create(&t, 2), 0);
    _Atomic int count = 0;
    for (int held = 0; held < 2; held++) {
        team_hold_workers(t, held);
        for (int i = 0; i < 100; i++) {
            assert_int_equal(team_task_start(t, bump, &count), 0);
            assert_int_equal(team_task_start(t, bump, &count), -EBUSY);
            struct record *r = NULL;
            if (i % 10 == 0) { /* slices meanwhile */
                r = record_new();
                team_for(t, 32, record_slice, r);
                assert_each_ran_once(r, 32);
                free(r);
            }
            team_task_wait(t);
            assert_int_equal(atomic_load(&count), held * 100 + i + 1);
        }
    }
    team_task_wait(t); /* nothing pending */
    team_destroy(&t);
    assert_int_equal(team_task_start(NULL, bump, &count), 0); /* runs at once */
    assert_int_equal(atomic_load(&count), 201);
}

static void test_split_covers_aligned(void **state)
{
    (void)state;
    for (int total = 0; total <= 800; total += 7)
        for (int parts = 1; parts <= 9; parts++)
            for (int align = 1; align <= 32; align *= 2) {
                int n = team_slices(total, parts, align);
                assert_true(n <= parts);
                int at = 0;
                for (int i = 0; i < n; i++) {
                    int lo, hi;
                    team_split(total, parts, align, i, &lo, &hi);
                    assert_int_equal(lo, at);
                    assert_true(hi > lo);
                    if (hi < total) assert_int_equal(lo % align, 0);
                    at = hi;
                }
                assert_int_equal(at, total);
            }
}

/* ---- the net over the team ---- */

#define D 300
#define B 64
#define STEPS 6

static void train_steps(float *params_out, size_t *n_params, int threads, bool held)
{
    struct net_config cfg = {.n_layers = 3,
                             .sizes = {D, 128, 64, 10},
                             .activation = NET_ACT_RELU,
                             .output = NET_OUT_LOGITS,
                             .loss = NET_LOSS_CROSS_ENTROPY};
    static float x[B * D];
    static int32_t y[B];
    struct rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < B * D; i++)
        x[i] = rng_uniform(&r);
    for (int i = 0; i < B; i++)
        y[i] = (int32_t)(rng_uniform(&r) * 10.0f) % 10;
    struct net net;
    assert_int_equal(net_create(&net, &cfg), 0);
    assert_int_equal(net_reserve(&net, B), 0);
    assert_int_equal(net_set_threads(&net, threads), 0);
    net_init(&net, &r);
    if (held) team_hold_workers(net.team, true);
    for (int s = 0; s < STEPS; s++) {
        net_forward(&net, x, B);
        if (s % 2) {
            net_backward_sgd(&net, x, y, NULL, B, 0.05f);
        } else {
            net_backward_set(&net, x, y, NULL, B);
            for (size_t i = 0; i < net.n_params; i++)
                net.params[i] -= 0.05f * net.grads[i];
        }
    }
    memcpy(params_out, net.params, net.n_params * sizeof *params_out);
    *n_params = net.n_params;
    net_destroy(&net);
}

static void assert_bits_equal(const float *a, const float *b, size_t n, const char *what)
{
    if (memcmp(a, b, n * sizeof *a) == 0) return;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a))
            fail_msg("%s: parameter %zu: %.9g != %.9g", what, i, (double)a[i], (double)b[i]);
}

static pid_t start_busy_process(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        volatile uint64_t spin = 0;
        for (;;)
            spin++;
    }
    return pid;
}

static void stop_process(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_net_same_bits_held_busy_and_repeated(void **state)
{
    (void)state;
    size_t P = (size_t)D * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10, n;
    float *ref = malloc(P * sizeof *ref), *got = malloc(P * sizeof *got);
    assert_non_null(ref);
    assert_non_null(got);
    for (int threads = 2; threads <= 3; threads++) {
        train_steps(ref, &n, threads, false);
        assert_int_equal(n, P);
        for (int rep = 0; rep < 5; rep++) {
            train_steps(got, &n, threads, false);
            assert_bits_equal(ref, got, P, "run after run");
        }
        train_steps(got, &n, threads, true);
        assert_bits_equal(ref, got, P, "workers held (the caller ran every slice)");
        pid_t busy = start_busy_process();
        for (int rep = 0; rep < 5; rep++) {
            train_steps(got, &n, threads, false);
            assert_bits_equal(ref, got, P, "with another process busy on a core");
        }
        stop_process(busy);
    }
    free(ref);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_slice_runs_once),
        cmocka_unit_test(test_held_workers_do_not_stall),
        cmocka_unit_test(test_slow_claimed_slice_is_waited_for),
        cmocka_unit_test(test_stall_makes_the_caller_go_alone),
        cmocka_unit_test(test_task_runs_once_held_or_not),
        cmocka_unit_test(test_split_covers_aligned),
        cmocka_unit_test(test_net_same_bits_held_busy_and_repeated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
