/* The training fast paths against the plain ones they replace: gradients
 * stored instead of accumulated, plain SGD fused into backward, layers split
 * over the net's threads, the background task, and the uint8 scaling of the
 * batch reader (every value, through the vectorised loop). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hdf5.h>

#include "dataset.h"
#include "net.h"
#include "optim.h"
#include "rng.h"
#include "spec_model.h"
#include "testutil.h"

/* Big enough that layers 1 and 2 are split over threads (B*I*O >= 2^18). */
#define D 300
#define B_MAX 32

struct setup {
    struct mlq_spec spec;
    float x[B_MAX * D];
    int32_t y[B_MAX];
};

static void make_setup(struct setup *s)
{
    spec_defaults(&s->spec);
    s->spec.n_layers = 3;
    int layers[] = {D, 128, 64, 10};
    memcpy(s->spec.layers, layers, sizeof layers);
    s->spec.activation = ACT_RELU;
    s->spec.loss = LOSS_CROSS_ENTROPY;
    struct rng r;
    rng_seed(&r, 99);
    for (int i = 0; i < B_MAX * D; i++)
        s->x[i] = rng_uniform(&r);
    for (int i = 0; i < B_MAX; i++)
        s->y[i] = (int32_t)(rng_uniform(&r) * 10.0f) % 10;
}

static void make_net(struct net *net, const struct setup *s, int threads)
{
    assert_int_equal(spec_model_net_create(net, &s->spec), 0);
    assert_int_equal(net_reserve(net, B_MAX), 0);
    assert_int_equal(net_set_threads(net, threads), 0);
    assert_int_equal(net->n_threads, threads);
    struct rng r;
    rng_seed(&r, 7);
    net_init(net, &r);
}

static void assert_floats_equal(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) fail_msg("element %zu: %.9g != %.9g", i, (double)a[i], (double)b[i]);
}

static void test_backward_set_equals_zero_then_add(void **state)
{
    (void)state;
    static struct setup s;
    make_setup(&s);
    for (int B = 1; B <= B_MAX; B += B_MAX - 1) {
        struct net a, b;
        make_net(&a, &s, 1);
        make_net(&b, &s, 1);
        /* Stale gradients that an accumulating pass would add to. */
        for (size_t i = 0; i < b.n_params; i++)
            b.grads[i] = 1.0f;
        net_forward(&a, s.x, B);
        net_zero_grad(&a);
        net_backward(&a, s.x, s.y, NULL, B);
        net_forward(&b, s.x, B);
        net_backward_set(&b, s.x, s.y, NULL, B);
        assert_floats_equal(a.grads, b.grads, a.n_params);
        net_destroy(&a);
        net_destroy(&b);
    }
}

static void test_fused_sgd(void **state)
{
    (void)state;
    static struct setup s;
    make_setup(&s);
    struct spec_optimizer cfg = s.spec.optimizer;
    cfg.name = OPT_SGD;
    cfg.momentum = 0.0;
    cfg.weight_decay = 0.0;
    const float lr = 0.05f;
    for (int B = 1; B <= B_MAX; B += B_MAX - 1) {
        struct net ref, fused;
        struct optim opt;
        make_net(&ref, &s, 1);
        make_net(&fused, &s, 1);
        assert_int_equal(spec_model_optim_create(&opt, &cfg, ref.n_params), 0);
        for (int step = 0; step < 3; step++) {
            net_forward(&ref, s.x, B);
            net_backward_set(&ref, s.x, s.y, NULL, B);
            optim_step(&opt, ref.params, ref.grads, lr);
            net_forward(&fused, s.x, B);
            net_backward_sgd(&fused, s.x, s.y, NULL, B, lr);
        }
        if (B == 1) {
            assert_floats_equal(ref.params, fused.params, ref.n_params);
        } else {
            /* The weights' step is folded into the gemm: last-bit rounding. */
            double worst = 0.0;
            for (size_t i = 0; i < ref.n_params; i++) {
                double d = fabs((double)ref.params[i] - (double)fused.params[i]);
                double tol = 1e-6 * fabs((double)ref.params[i]) + 1e-7;
                if (d / tol > worst) worst = d / tol;
            }
            assert_true(worst <= 1.0);
            /* ... and the step was taken at all. */
            struct net init;
            make_net(&init, &s, 1);
            assert_true(memcmp(init.params, fused.params, sizeof(float) * init.n_params) != 0);
            net_destroy(&init);
        }
        optim_destroy(&opt);
        net_destroy(&ref);
        net_destroy(&fused);
    }
}

static void assert_floats_close(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > 1e-5f * fabsf(a[i]) + 1e-7f)
            fail_msg("element %zu: %.9g vs %.9g", i, (double)a[i], (double)b[i]);
}

/* Two threads give the same numbers as one, up to gemm rounding (OpenBLAS
 * may order a column slice's sums differently), and the same bits run after
 * run. */
static void test_threads_same_numbers(void **state)
{
    (void)state;
    static struct setup s;
    make_setup(&s);
    struct net one, two, again;
    make_net(&one, &s, 1);
    make_net(&two, &s, 2);
    make_net(&again, &s, 2);
    struct net *nets[] = {&one, &two, &again};
    for (int i = 0; i < 3; i++) {
        net_forward(nets[i], s.x, B_MAX);
        net_backward_set(nets[i], s.x, s.y, NULL, B_MAX);
    }
    assert_floats_close(one.probs, two.probs, (size_t)B_MAX * 10);
    assert_floats_close(one.grads, two.grads, one.n_params);
    assert_floats_equal(two.probs, again.probs, (size_t)B_MAX * 10);
    assert_floats_equal(two.grads, again.grads, two.n_params);
    /* Accumulating on zeroed gradients, split over threads: the same bits. */
    net_zero_grad(&again);
    net_backward(&again, s.x, s.y, NULL, B_MAX);
    assert_floats_equal(two.grads, again.grads, two.n_params);
    for (int i = 0; i < 3; i++)
        net_destroy(nets[i]);
}

static void test_threads_deterministic_sgd(void **state)
{
    (void)state;
    static struct setup s;
    make_setup(&s);
    struct net a, b;
    make_net(&a, &s, 2);
    make_net(&b, &s, 2);
    for (int step = 0; step < 5; step++) {
        net_forward(&a, s.x, B_MAX);
        net_backward_sgd(&a, s.x, s.y, NULL, B_MAX, 0.1f);
        net_forward(&b, s.x, B_MAX);
        net_backward_sgd(&b, s.x, s.y, NULL, B_MAX, 0.1f);
    }
    assert_floats_equal(a.params, b.params, a.n_params);
    /* Back to one thread and on: the workers stop cleanly. */
    assert_int_equal(net_set_threads(&a, 1), 0);
    assert_null(a.team);
    assert_int_equal(net_set_threads(&a, 0), -EINVAL);
    net_destroy(&a);
    net_destroy(&b);
}

static void bump(void *p)
{
    ++*(int *)p;
}

static void test_task(void **state)
{
    (void)state;
    static struct setup s;
    make_setup(&s);
    for (int threads = 1; threads <= 2; threads++) {
        struct net net;
        make_net(&net, &s, threads);
        int count = 0;
        for (int i = 0; i < 100; i++) {
            assert_int_equal(net_task_start(&net, bump, &count), 0);
            if (i % 2) /* layer work while the task may run */
                net_forward(&net, s.x, B_MAX);
            net_task_wait(&net);
            assert_int_equal(count, i + 1);
        }
        net_task_wait(&net); /* nothing pending: returns */
        net_destroy(&net);
    }
}

static void test_uint8_scaling_every_value(void **state)
{
    (void)state;
    char *dir = testutil_tmpdir("mlq-netpaths");
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/u8.h5", dir);
    /* Two rows of 260 values (the 16-wide blocks and the tail): v, 255 - v. */
    enum { N = 2, W = 260 };
    uint8_t x[N * W];
    int32_t y[N] = {0, 1};
    for (int i = 0; i < W; i++) {
        x[i] = (uint8_t)(i % 256);
        x[W + i] = (uint8_t)(255 - i % 256);
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[2] = {N, W}, yd[1] = {N};
    hid_t sp = H5Screate_simple(2, xd, NULL);
    hid_t ds = H5Dcreate2(f, "X", H5T_NATIVE_UINT8, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(1, yd, NULL);
    ds = H5Dcreate2(f, "y", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);

    for (int scale = 0; scale <= 1; scale++) {
        struct spec_dataset src = {.scale = scale};
        snprintf(src.path, sizeof src.path, "%s", path);
        snprintf(src.x, sizeof src.x, "X");
        snprintf(src.y, sizeof src.y, "y");
        struct dataset *d = NULL;
        char err[256];
        assert_int_equal(dataset_open(&d, &src, true, 0, err, sizeof err), 0);
        static float out[N * W];
        int32_t yc[N];
        assert_int_equal(dataset_read_rows(d, 0, N, out, yc, NULL, err, sizeof err), N);
        for (int i = 0; i < N * W; i++) {
            float want = scale ? (float)x[i] / 255.0f : (float)x[i];
            if (out[i] != want)
                fail_msg("scale %d, value %u: %.9g != %.9g", scale, x[i], (double)out[i],
                         (double)want);
        }
        /* The shuffled batch path converts the same way. */
        assert_int_equal(dataset_epoch_begin(d, 1, 0, true, 0, err, sizeof err), 0);
        assert_int_equal(dataset_next_batch(d, N, out, yc, NULL, err, sizeof err), N);
        for (int r = 0; r < N; r++) {
            const uint8_t *row = x + (size_t)yc[r] * W; /* y is the row number */
            for (int i = 0; i < W; i++)
                assert_true(out[r * W + i] == (scale ? (float)row[i] / 255.0f : (float)row[i]));
        }
        dataset_close(&d);
    }
    testutil_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_set_equals_zero_then_add),
        cmocka_unit_test(test_fused_sgd),
        cmocka_unit_test(test_threads_same_numbers),
        cmocka_unit_test(test_threads_deterministic_sgd),
        cmocka_unit_test(test_task),
        cmocka_unit_test(test_uint8_scaling_every_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
