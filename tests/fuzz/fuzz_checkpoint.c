/* The checkpoint reader (trainer/checkpoint.c: checkpoint_decode), fed any
 * blob: what the trainer resumes from and the broker sends with a job, then
 * the spec inside it, as eval and export read it.
 *
 * Input: one flag byte, then the blob. Flag bit 0: first rewrite the blob's
 * CRC to match, so that mutations reach the header and body checks instead
 * of stopping at the checksum.
 * Invariants: a refused blob says why; an accepted one holds sizes that fit
 * the blob, a tensor table whose every entry lies inside its buffer, and
 * encoded again decodes to the same checkpoint. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "checkpoint.h"
#include "fuzz_util.h"
#include "spec.h"

static void same(const struct checkpoint *a, const struct checkpoint *b)
{
    FUZZ_CHECK(strcmp(a->spec_json, b->spec_json) == 0, "the spec changed");
    FUZZ_CHECK(a->epoch == b->epoch && a->step == b->step && a->epoch_rows == b->epoch_rows &&
                   a->optim_step == b->optim_step && !memcmp(&a->rng, &b->rng, sizeof a->rng) &&
                   !memcmp(&a->best_metric, &b->best_metric, sizeof a->best_metric),
               "a header field changed");
    const double ma[] = {a->train_loss, a->train_accuracy, a->val_loss, a->val_accuracy};
    const double mb[] = {b->train_loss, b->train_accuracy, b->val_loss, b->val_accuracy};
    FUZZ_CHECK(!memcmp(ma, mb, sizeof ma), "the last epoch's metrics changed");
    FUZZ_CHECK(a->n_params == b->n_params && a->n_optim == b->n_optim, "the sizes changed");
    FUZZ_CHECK(!memcmp(a->params, b->params, 4 * a->n_params) &&
                   !memcmp(a->optim_state, b->optim_state, 4 * a->n_optim),
               "the floats changed");
    FUZZ_CHECK(a->n_state == b->n_state &&
                   (!a->n_state || !memcmp(a->state, b->state, 4 * a->n_state)),
               "the state arena changed");
    FUZZ_CHECK(a->n_tensors == b->n_tensors, "the tensor table changed size");
    for (int i = 0; i < a->n_tensors; i++) {
        const struct checkpoint_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        FUZZ_CHECK(!strcmp(x->name, y->name) && x->kind == y->kind && x->ndim == y->ndim &&
                       !memcmp(x->shape, y->shape, sizeof x->shape) && x->offset == y->offset,
                   "tensor %d (%s) changed", i, x->name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t len = size - 1;
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob) return 0;
    memcpy(blob, data + 1, len);
    if ((data[0] & 1) && len >= 4) {
        uint32_t crc = (uint32_t)crc32(0L, blob, (uInt)(len - 4));
        for (int i = 0; i < 4; i++)
            blob[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    }

    struct checkpoint c;
    char err[256] = "";
    int rc = checkpoint_decode(blob, len, &c, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM, "checkpoint_decode returned %d", rc);
    fuzz_note("%s", rc ? err : "accepted");
    if (rc != 0) {
        FUZZ_CHECK(rc == -ENOMEM || err[0] != '\0', "a blob was refused without a reason");
        FUZZ_CHECK(!c.spec_json && !c.params && !c.optim_state && !c.state && !c.tensors,
                   "a refused blob kept memory");
        free(blob);
        return 0;
    }
    FUZZ_CHECK(c.spec_json && c.params && c.optim_state, "an accepted blob lacks a part");
    FUZZ_CHECK(4 * (c.n_params + c.n_optim + c.n_state) + strlen(c.spec_json) < len,
               "%zu params, %zu optimizer and %zu state floats do not fit %zu bytes", c.n_params,
               c.n_optim, c.n_state, len);
    FUZZ_CHECK(c.n_tensors >= 0 && c.n_tensors <= CHECKPOINT_MAX_TENSORS, "%d tensors",
               c.n_tensors);
    for (int i = 0; i < c.n_tensors; i++) {
        const struct checkpoint_tensor *t = &c.tensors[i];
        FUZZ_CHECK(memchr(t->name, '\0', sizeof t->name) && t->ndim >= 0 && t->ndim <= 4,
                   "tensor %d: name not terminated or %d dimensions", i, t->ndim);
        uint64_t floats = 1;
        for (int k = 0; k < t->ndim; k++) {
            FUZZ_CHECK(t->shape[k] >= 0, "tensor %s: dimension %d is %lld", t->name, k,
                       (long long)t->shape[k]);
            floats = __builtin_mul_overflow(floats, (uint64_t)t->shape[k], &floats) ? UINT64_MAX
                                                                                    : floats;
        }
        uint64_t room = t->kind == 0 ? c.n_params : c.n_state;
        FUZZ_CHECK(t->offset <= room && floats <= room - t->offset,
                   "tensor %s (%llu floats at %llu) outside its buffer of %llu", t->name,
                   (unsigned long long)floats, (unsigned long long)t->offset,
                   (unsigned long long)room);
    }

    /* The spec inside, as eval (trainer/evaluate.c) and export read it. */
    struct mlq_spec spec;
    spec_parse(c.spec_json, &spec, err, sizeof err);

    void *again;
    size_t again_len;
    rc = checkpoint_encode(&c, &again, &again_len);
    FUZZ_CHECK(rc == 0, "checkpoint_encode of a decoded checkpoint failed: %d", rc);
    struct checkpoint d;
    rc = checkpoint_decode(again, again_len, &d, err, sizeof err);
    FUZZ_CHECK(rc == 0, "a re-encoded checkpoint is refused: %s", err);
    same(&c, &d);
    checkpoint_free(&d);
    free(again);
    checkpoint_free(&c);
    free(blob);
    return 0;
}
