/* Augmentation of training images (trainer/augment.c): the spec field and
 * its errors, crop and flip on a tiny image against hand-computed results,
 * draws that depend on (seed, epoch, row) only, and training runs: an
 * augmented conv+BN+dropout run resumed from a mid-run checkpoint ends bit
 * for bit where the uninterrupted one does, augmentation changes training
 * but never validation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "augment.h"
#include "checkpoint.h"
#include "evaluate.h"
#include "spec.h"
#include "spec_model.h"
#include "testutil.h"
#include "train.h"

/* ---- the spec ---- */

static void parse_ok(const char *json, struct mlq_spec *s)
{
    char err[512] = "";
    if (spec_parse(json, s, err, sizeof err)) fail_msg("spec %s: %s", json, err);
}

/* The spec is refused by spec_parse or by spec_model_check, with `want`
 * in the message. */
static void refused(const char *json, const char *want)
{
    struct mlq_spec s;
    char err[512] = "";
    int rc = spec_parse(json, &s, err, sizeof err);
    if (!rc) rc = spec_model_check(&s, NULL, 64, NULL, NULL, err, sizeof err);
    if (!rc) fail_msg("accepted: %s", json);
    if (!strstr(err, want)) fail_msg("%s: the message \"%s\" lacks \"%s\"", json, err, want);
    print_message("refused: %s\n", err);
}

#define TYPED                                                                                      \
    "\"model\": {\"input\": [1, 8, 8], \"layers\": [{\"type\": \"conv2d\", \"out\": 2, "           \
    "\"kernel\": 3}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 3}]}"

static void test_spec_field(void **state)
{
    (void)state;
    struct mlq_spec s;
    parse_ok("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"random_crop\": {\"padding\": 4}, "
             "\"horizontal_flip\": true}}",
             &s);
    assert_true(s.augment.crop);
    assert_int_equal(s.augment.crop_padding, 4);
    assert_true(s.augment.flip);
    assert_true(s.augment.flip_p == 0.5);
    char err[512];
    assert_int_equal(spec_model_check(&s, NULL, 64, NULL, NULL, err, sizeof err), 0);

    /* The canonical form round-trips, and says nothing when off. */
    json_t *doc = spec_to_json(&s);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(strstr(text, "\"augment\":{\"horizontal_flip\":{\"p\":0.5},\"random_crop\":"
                                 "{\"padding\":4}}"));
    struct mlq_spec back;
    parse_ok(text, &back);
    assert_memory_equal(&back.augment, &s.augment, sizeof s.augment);
    free(text);
    json_decref(doc);
    parse_ok("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"horizontal_flip\": {\"p\": 0.3}}}",
             &s);
    assert_false(s.augment.crop);
    assert_true(s.augment.flip_p == 0.3);
    parse_ok("{\"dataset\": \"d.h5\", " TYPED "}", &s);
    doc = spec_to_json(&s);
    assert_null(json_object_get(doc, "augment"));
    json_decref(doc);

    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"random_crop\": {\"padding\": -1}}}",
            "augment.random_crop.padding: must be between 0 and");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"random_crop\": {}}}",
            "augment.random_crop.padding: required");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"random_crop\": 4}}",
            "augment.random_crop: must be an object");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"random_crop\": {\"padding\": 4, "
            "\"size\": 24}}}",
            "augment.random_crop.size: unknown field");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"vertical_flip\": true}}",
            "augment.vertical_flip: unknown field");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": {\"horizontal_flip\": {\"p\": 1.5}}}",
            "augment.horizontal_flip.p: must be in [0, 1]");
    refused("{\"dataset\": \"d.h5\", " TYPED ", \"augment\": true}", "augment: must be an object");
    /* Images only: a dense stack, or typed layers on flat samples. */
    refused("{\"dataset\": \"d.h5\", \"model\": {\"layers\": [784, 10]}, \"augment\": "
            "{\"horizontal_flip\": true}}",
            "augment: crops and flips need image samples (channels, height, width); the model's "
            "input is (784)");
    refused("{\"dataset\": \"d.h5\", \"model\": {\"input\": [64], \"layers\": [{\"type\": "
            "\"dense\", \"out\": 3}]}, \"augment\": {\"random_crop\": {\"padding\": 2}}}",
            "the model's input is (64)");
    refused("{\"kind\": \"eval\", \"run\": 1, \"dataset\": \"d.h5\", \"augment\": "
            "{\"horizontal_flip\": true}}",
            "augment: only train jobs augment their data");
}

/* ---- crop and flip on a tiny image ---- */

/* A (2, 3, 4) image: value 100 c + 10 y + x + 1 (no zeros, so padding shows). */
static void tiny(float *img)
{
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 4; x++)
                img[(c * 3 + y) * 4 + x] = (float)(100 * c + 10 * y + x + 1);
}

static void test_crop_and_flip(void **state)
{
    (void)state;
    struct spec_augment sa = {.crop = true, .crop_padding = 1, .flip = true, .flip_p = 0.5};
    struct augment a;
    assert_true(augment_init(&a, &sa, 1, 2, 3, 4));
    float src[24], dst[24];
    tiny(src);

    /* The centre of the padded image is the image itself. */
    augment_image(&a, &(struct augment_draw){1, 1, false}, src, dst);
    assert_memory_equal(dst, src, sizeof src);

    /* Corner (0, 2) of the image padded by 1: one row of zeros on top, the
     * image shifted left by one with zeros in the last column. */
    augment_image(&a, &(struct augment_draw){0, 2, false}, src, dst);
    static const float want_crop[12] = {0, 0, 0, 0, 2, 3, 4, 0, 12, 13, 14, 0};
    assert_memory_equal(dst, want_crop, sizeof want_crop);
    for (int i = 0; i < 12; i++) /* the second channel takes the same crop */
        assert_true(dst[12 + i] == (want_crop[i] ? want_crop[i] + 100 : 0));

    /* The same crop mirrored (torchvision: crop, then flip the crop). */
    augment_image(&a, &(struct augment_draw){0, 2, true}, src, dst);
    static const float want_flip[12] = {0, 0, 0, 0, 0, 4, 3, 2, 0, 14, 13, 12};
    assert_memory_equal(dst, want_flip, sizeof want_flip);

    /* A flip alone mirrors each row. */
    augment_image(&a, &(struct augment_draw){1, 1, true}, src, dst);
    static const float want_mirror[12] = {4, 3, 2, 1, 14, 13, 12, 11, 24, 23, 22, 21};
    assert_memory_equal(dst, want_mirror, sizeof want_mirror);

    /* Bottom-right corner: rows 1..2 and columns 1..3, zeros below and right. */
    augment_image(&a, &(struct augment_draw){2, 2, false}, src, dst);
    static const float want_br[12] = {12, 13, 14, 0, 22, 23, 24, 0, 0, 0, 0, 0};
    assert_memory_equal(dst, want_br, sizeof want_br);
}

/* ---- draws ---- */

static void test_draws_depend_on_seed_epoch_row(void **state)
{
    (void)state;
    struct spec_augment sa = {.crop = true, .crop_padding = 2, .flip = true, .flip_p = 0.5};
    struct augment a, b;
    augment_init(&a, &sa, 42, 1, 6, 6);
    augment_init(&b, &sa, 43, 1, 6, 6);
    enum { N = 4000 };
    int counts[5][5] = {{0}}, flips = 0, same_epoch = 0, same_seed = 0;
    for (int64_t row = 0; row < N; row++) {
        struct augment_draw d, again, e1, s2;
        augment_draw(&a, 3, row, &d);
        augment_draw(&a, 3, row, &again);
        assert_memory_equal(&d, &again, sizeof d);
        assert_true(d.dy >= 0 && d.dy <= 4 && d.dx >= 0 && d.dx <= 4);
        counts[d.dy][d.dx]++;
        flips += d.flip;
        augment_draw(&a, 4, row, &e1);
        augment_draw(&b, 3, row, &s2);
        same_epoch += !memcmp(&d, &e1, sizeof d);
        same_seed += !memcmp(&d, &s2, sizeof d);
    }
    /* Every offset of the 5x5 grid, about N / 25 = 160 each; flips about half. */
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            if (counts[y][x] < 100 || counts[y][x] > 230)
                fail_msg("offset (%d, %d) drawn %d times of %d", y, x, counts[y][x], N);
    if (flips < N / 2 - 200 || flips > N / 2 + 200) fail_msg("%d flips of %d", flips, N);
    /* Another epoch or seed draws otherwise (1 in 50 agree by chance). */
    if (same_epoch > N / 25 || same_seed > N / 25)
        fail_msg("%d rows drew the same in another epoch, %d with another seed", same_epoch,
                 same_seed);

    /* A batch is the same whichever way the epoch is cut into batches. */
    enum { B = 10, D = 36 };
    float x[B * D], y[B * D], scratch[D];
    for (int i = 0; i < B * D; i++)
        x[i] = y[i] = (float)(i % 37) + 1;
    augment_batch(&a, 7, 100, x, B, scratch);
    augment_batch(&a, 7, 100, y, 3, scratch);
    augment_batch(&a, 7, 103, y + 3 * D, 7, scratch);
    assert_memory_equal(x, y, sizeof x);
    float orig[B * D];
    for (int i = 0; i < B * D; i++)
        orig[i] = (float)(i % 37) + 1;
    assert_memory_not_equal(x, orig, sizeof x);
    /* Each row is its own draw applied to its own image. */
    for (int i = 0; i < B; i++) {
        struct augment_draw d;
        float want[D];
        augment_draw(&a, 7, 100 + i, &d);
        augment_image(&a, &d, orig + i * D, want);
        assert_memory_equal(x + i * D, want, sizeof want);
    }

    /* Nothing asked, nothing done. */
    struct spec_augment none = {0};
    assert_false(augment_init(&a, &none, 1, 1, 6, 6));
}

/* ---- training runs ---- */

struct fixture {
    char *dir;
    char train[512], val[512];
};

/* Blobs as (N, 4, 4) one-channel images. */
static int write_images(const char *path, int64_t n, uint64_t seed)
{
    float *x;
    int32_t *y;
    testutil_blobs(n, 16, 3, seed, &x, &y);
    const int64_t dims[2] = {4, 4};
    int rc = testutil_write_h5_shaped(path, x, y, n, 2, dims);
    free(x);
    free(y);
    return rc;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = testutil_tmpdir("augment");
    snprintf(f->train, sizeof f->train, "%s/train.h5", f->dir);
    snprintf(f->val, sizeof f->val, "%s/val.h5", f->dir);
    if (write_images(f->train, 300, 1) || write_images(f->val, 90, 2)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    testutil_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

struct recorder {
    void *blob[16];
    size_t len[16];
    int n_ckpt;
    struct epoch_metrics epochs[16];
    int n_epochs;
    int stop_after_epochs;
};

static int rec_epoch(void *ctx, const struct epoch_metrics *m)
{
    struct recorder *r = ctx;
    r->epochs[r->n_epochs++] = *m;
    return r->stop_after_epochs && r->n_epochs >= r->stop_after_epochs;
}

static int rec_checkpoint(void *ctx, int64_t epoch, int64_t step, const void *blob, size_t len)
{
    struct recorder *r = ctx;
    (void)epoch;
    (void)step;
    r->blob[r->n_ckpt] = malloc(len);
    memcpy(r->blob[r->n_ckpt], blob, len);
    r->len[r->n_ckpt++] = len;
    return 0;
}

static void rec_free(struct recorder *r)
{
    for (int i = 0; i < r->n_ckpt; i++)
        free(r->blob[i]);
}

static void run_ok(const struct mlq_spec *s, const void *resume, size_t len, struct recorder *r)
{
    struct train_callbacks cb = {.ctx = r, .on_epoch = rec_epoch, .on_checkpoint = rec_checkpoint};
    struct train_result res;
    char err[512] = "";
    if (train_run(s, resume, len, &cb, &res, err, sizeof err)) fail_msg("train_run: %s", err);
}

static void decode_ok(const void *blob, size_t len, struct checkpoint *c)
{
    char err[256];
    if (checkpoint_decode(blob, len, c, err, sizeof err)) fail_msg("decode: %s", err);
}

/* conv+BN+dropout on (1, 4, 4), Adam, 4 epochs; `augment` is the field's
 * JSON or "" for none. */
static void conv_spec(const struct fixture *f, const char *augment, struct mlq_spec *s)
{
    char json[4096];
    snprintf(json, sizeof json,
             "{\"dataset\": \"%s\", \"validation\": \"%s\", \"model\": {\"layers\": ["
             "{\"type\": \"conv2d\", \"out\": 4, \"kernel\": 3, \"padding\": 1}, "
             "{\"type\": \"batchnorm\"}, {\"type\": \"relu\"}, {\"type\": \"maxpool\", "
             "\"kernel\": 2}, {\"type\": \"flatten\"}, {\"type\": \"dropout\", \"p\": 0.25}, "
             "{\"type\": \"dense\", \"out\": 3}]}, \"optimizer\": {\"name\": \"adam\", \"lr\": "
             "0.01}, \"batch_size\": 32, \"epochs\": 4, \"seed\": 5, \"threads\": 1%s%s}",
             f->train, f->val, *augment ? ", \"augment\": " : "", augment);
    parse_ok(json, s);
}

/* Stops after 2 of 4 epochs, resumes from epoch 1's checkpoint and checks
 * weights, Adam's moments, batch norm's running statistics and every
 * epoch's metrics against the uninterrupted run, bit for bit. */
static void check_resume_exact(const struct fixture *f, const char *augment)
{
    struct mlq_spec s;
    conv_spec(f, augment, &s);
    struct recorder full = {0}, first = {0}, second = {0};
    run_ok(&s, NULL, 0, &full);
    assert_int_equal(full.n_ckpt, 4);
    first.stop_after_epochs = 2;
    run_ok(&s, NULL, 0, &first);
    assert_int_equal(first.n_ckpt, 1);
    run_ok(&s, first.blob[0], first.len[0], &second);
    assert_int_equal(second.n_epochs, 3);

    struct checkpoint a, b;
    decode_ok(full.blob[3], full.len[3], &a);
    decode_ok(second.blob[second.n_ckpt - 1], second.len[second.n_ckpt - 1], &b);
    assert_int_equal(a.step, b.step);
    assert_int_equal(a.n_params, b.n_params);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    assert_int_equal(a.n_optim, b.n_optim);
    assert_memory_equal(a.optim_state, b.optim_state, sizeof(float) * a.n_optim);
    assert_true(a.n_state > 0); /* running mean, variance, count */
    assert_int_equal(a.n_state, b.n_state);
    assert_memory_equal(a.state, b.state, sizeof(float) * a.n_state);
    for (int e = 0; e < 3; e++) {
        assert_true(full.epochs[e + 1].train_loss == second.epochs[e].train_loss);
        assert_true(full.epochs[e + 1].val_loss == second.epochs[e].val_loss);
    }
    checkpoint_free(&a);
    checkpoint_free(&b);
    rec_free(&full);
    rec_free(&first);
    rec_free(&second);
}

static void test_conv_bn_dropout_resumes_exactly(void **state)
{
    check_resume_exact(*state, "");
}

static void test_augmented_run_resumes_exactly(void **state)
{
    check_resume_exact(*state, "{\"random_crop\": {\"padding\": 1}, \"horizontal_flip\": true}");
}

/* Augmentation changes what is trained on, the same seed gives the same
 * run, and the validation figures are those of the plain validation rows:
 * an eval job of the final checkpoint on them gets the run's last
 * val_loss. */
static void test_augments_training_only(void **state)
{
    struct fixture *f = *state;
    struct mlq_spec plain, aug;
    conv_spec(f, "", &plain);
    conv_spec(f, "{\"random_crop\": {\"padding\": 3}, \"horizontal_flip\": {\"p\": 0.5}}", &aug);
    struct recorder p = {0}, a = {0}, a2 = {0};
    run_ok(&plain, NULL, 0, &p);
    run_ok(&aug, NULL, 0, &a);
    run_ok(&aug, NULL, 0, &a2);
    struct checkpoint cp, ca, ca2;
    decode_ok(p.blob[3], p.len[3], &cp);
    decode_ok(a.blob[3], a.len[3], &ca);
    decode_ok(a2.blob[3], a2.len[3], &ca2);
    assert_memory_not_equal(cp.params, ca.params, sizeof(float) * cp.n_params);
    assert_memory_equal(ca.params, ca2.params, sizeof(float) * ca.n_params);
    assert_true(p.epochs[0].train_loss != a.epochs[0].train_loss);
    assert_true(a.epochs[0].train_loss == a2.epochs[0].train_loss);
    assert_non_null(strstr(ca.spec_json, "\"augment\":{"));

    char json[1024], err[512] = "";
    snprintf(json, sizeof json, "{\"kind\": \"eval\", \"run\": 1, \"dataset\": \"%s\"}", f->val);
    struct mlq_spec ev;
    parse_ok(json, &ev);
    json_t *result = NULL;
    if (eval_run(&ev, a.blob[3], a.len[3], &result, err, sizeof err)) fail_msg("eval: %s", err);
    double loss = json_number_value(json_object_get(result, "loss"));
    double val_loss = a.epochs[3].val_loss;
    print_message("eval loss %.9g, the run's last val_loss %.9g\n", loss, val_loss);
    assert_true(fabs(loss - val_loss) <= 1e-5 * fabs(val_loss));
    json_decref(result);
    checkpoint_free(&cp);
    checkpoint_free(&ca);
    checkpoint_free(&ca2);
    rec_free(&p);
    rec_free(&a);
    rec_free(&a2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_field),
        cmocka_unit_test(test_crop_and_flip),
        cmocka_unit_test(test_draws_depend_on_seed_epoch_row),
        cmocka_unit_test_setup_teardown(test_conv_bn_dropout_resumes_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_augmented_run_resumes_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_augments_training_only, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
