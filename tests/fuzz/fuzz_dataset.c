/* The HDF5 dataset reader (trainer/dataset.c) on a file made of the fuzzer's
 * bytes, through the calls a trainer makes: dataset_probe (sizing the job),
 * dataset_open, dataset_check_model, a validation view, an epoch of batches,
 * dataset_read_rows.
 *
 * Two programs from this file. fuzz_dataset reads as the trainer does, in
 * reader processes (dataset_set_isolated, the default): libhdf5 crashing on
 * a file must fail the read with a reason, never this process. It sees no
 * coverage of what runs in the readers. fuzz_dataset_direct reads in this
 * process, so libFuzzer is guided through libhdf5 too, and finds libhdf5
 * 1.10.8's own crashes (docs/security.md): for long runs, not for CI.
 *
 * Input: one flag byte, then the file. Flag bits: 0 need y (train, eval),
 * 1 a budget of a few KiB (streamed in chunks) instead of 64 MiB (in memory),
 * 2 shuffle, 3 scale uint8 inputs.
 * Invariants: a refused file says why; what dataset_probe refuses
 * dataset_open refuses, and what both accept they describe alike; an
 * accepted file has a sane shape, gives each of its rows once per epoch,
 * finite inputs, class ids in [0, n_classes), and leaves no HDF5 object
 * open when closed. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>

#include "dataset.h"
#include "fuzz_util.h"
#include "spec.h"

#define BATCH 16
#define MAX_BATCH_FLOATS (INT64_C(1) << 20) /* the harness's own buffers: 4 MiB */
#define MAX_EPOCH_ROWS 4096                 /* rows read per input, to bound its time */

static void check_rows(const struct dataset_info *in, int got, const float *x, const int32_t *yc,
                       const float *y)
{
    for (int64_t i = 0; i < (int64_t)got * in->d; i++)
        FUZZ_CHECK(isfinite(x[i]), "input %lld is not finite", (long long)i);
    if (!in->has_y) return;
    for (int i = 0; in->y_is_class && i < got; i++)
        FUZZ_CHECK(yc[i] >= 0 && yc[i] < in->n_classes, "class id %d outside [0, %lld)", yc[i],
                   (long long)in->n_classes);
    for (int64_t i = 0; !in->y_is_class && i < (int64_t)got * in->k; i++)
        FUZZ_CHECK(isfinite(y[i]), "target %lld is not finite", (long long)i);
}

/* One epoch, or its first MAX_EPOCH_ROWS rows: every row once. */
static void read_epoch(struct dataset *ds, bool shuffle, float *x, int32_t *yc, float *y)
{
    const struct dataset_info *in = dataset_get_info(ds);
    char err[512];
    int64_t skip = in->n > 2 ? 1 : 0; /* a resumed epoch starts mid-way */
    if (dataset_epoch_begin(ds, 42, 1, shuffle, skip, err, sizeof err) != 0) return;
    int64_t rows = skip;
    int got;
    while (rows < MAX_EPOCH_ROWS &&
           (got = dataset_next_batch(ds, BATCH, x, in->has_y ? yc : NULL, in->has_y ? y : NULL, err,
                                     sizeof err)) > 0) {
        check_rows(in, got, x, yc, y);
        rows += got;
    }
    if (rows < MAX_EPOCH_ROWS && got == 0)
        FUZZ_CHECK(rows == in->n, "an epoch gave %lld rows of %lld", (long long)rows,
                   (long long)in->n);
}

#ifndef FUZZ_DATASET_DIRECT
/* A reader that AddressSanitizer stops is the containment at work, not this
 * target's crash: without libFuzzer's death callback it only exits. */
static void in_reader(void)
{
    __sanitizer_set_death_callback(NULL);
}
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
#ifdef FUZZ_DATASET_DIRECT
    dataset_set_isolated(false);
#else
    pthread_atfork(NULL, NULL, in_reader);
#endif
    return 0;
}

static void same_info(const struct dataset_info *a, const struct dataset_info *b)
{
    FUZZ_CHECK(a->n == b->n && a->d == b->d && a->x_rank == b->x_rank &&
                   !memcmp(a->x_dims, b->x_dims, sizeof a->x_dims) && a->x_dtype == b->x_dtype &&
                   a->has_y == b->has_y && a->y_is_class == b->y_is_class && a->k == b->k,
               "dataset_probe and dataset_open describe the file differently");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    bool need_y = flags & 1, shuffle = flags & 4;
    int64_t budget = (flags & 2) ? 4096 : INT64_C(64) << 20;

    struct spec_dataset src = {.x = "X", .y = "y", .scale = flags & 8};
    snprintf(src.path, sizeof src.path, "%s", fuzz_file(data + 1, size - 1));
    struct dataset_info probed;
    int64_t row_bytes;
    char err[512] = "";
    int probe_rc = dataset_probe(&src, need_y, &probed, &row_bytes, err, sizeof err);
    if (probe_rc != 0)
        FUZZ_CHECK(probe_rc < 0 && err[0] != '\0', "dataset_probe refused (%d) without a reason",
                   probe_rc);
    struct dataset *ds = NULL;
    int rc = dataset_open(&ds, &src, need_y, budget, err, sizeof err);
    fuzz_note("%s", rc ? err : "accepted");
    FUZZ_CHECK(probe_rc == 0 || rc != 0, "dataset_open accepts what dataset_probe refused");
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err[0] != '\0', "a file was refused (%d) without a reason", rc);
        FUZZ_CHECK(ds == NULL, "a refused file left a dataset");
        FUZZ_CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0,
                   "a refused file left HDF5 objects open: %s", err);
        return 0;
    }
    const struct dataset_info *in = dataset_get_info(ds);
    if (probe_rc == 0) same_info(&probed, in);
    FUZZ_CHECK(in->n > 0 && in->d > 0 && in->x_rank >= 2 && in->x_rank <= 4, "shape n %lld d %lld",
               (long long)in->n, (long long)in->d);
    FUZZ_CHECK(!need_y || in->has_y, "y is needed but missing");
    FUZZ_CHECK(!in->has_y || in->k > 0, "k %lld", (long long)in->k);

    struct mlq_spec spec;
    spec_defaults(&spec);
    if (in->d <= SPEC_MAX_WIDTH) spec.layers[0] = (int)in->d;
    dataset_check_model(ds, &spec, err, sizeof err);

    if ((int64_t)BATCH * in->d <= MAX_BATCH_FLOATS && (int64_t)BATCH * in->k <= MAX_BATCH_FLOATS) {
        float *x = malloc(sizeof(float) * (size_t)(BATCH * in->d));
        float *y = malloc(sizeof(float) * (size_t)(BATCH * in->k));
        int32_t *yc = malloc(sizeof(int32_t) * BATCH);
        FUZZ_CHECK(x && y && yc, "out of memory");
        read_epoch(ds, shuffle, x, yc, y);
        int got = dataset_read_rows(ds, in->n / 2, BATCH, x, yc, y, err, sizeof err);
        if (got > 0) check_rows(in, got, x, yc, y);
        if (in->n >= 2) {
            struct dataset *view = NULL;
            if (dataset_view(&view, ds, in->n / 2, in->n, err, sizeof err) == 0) {
                read_epoch(view, shuffle, x, yc, y);
                dataset_close(&view);
            }
        }
        free(x);
        free(y);
        free(yc);
    }
    dataset_close(&ds);
    FUZZ_CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0,
               "a closed dataset left HDF5 objects open");
    return 0;
}
