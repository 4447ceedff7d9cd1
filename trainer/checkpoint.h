/* Checkpoints: everything a run needs to go on exactly where it stopped.
 *
 * Binary format, little-endian, version 1 (docs/checkpoint.md):
 *   magic "MLQCKPT\0" (8 bytes), u32 version, u32 header bytes,
 *   header: spec JSON length + text, epoch, step, rows consumed in the epoch,
 *           RNG state, optimizer step, counts of params and optimizer floats,
 *           best metric so far, the last epoch's metrics (appended later: a
 *           reader finds them by the header length),
 *   params (P floats), optimizer state (S floats),
 *   u32 CRC-32 (zlib) of everything before it.
 * A reader rejects a wrong magic, a newer version, truncation or a bad
 * checksum, with a message naming the reason. */
#ifndef MLQ_CHECKPOINT_H
#define MLQ_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define CHECKPOINT_VERSION 1

struct checkpoint {
    char *spec_json;    /* canonical spec of the run (owned) */
    int64_t epoch;      /* epochs completed */
    int64_t step;       /* optimizer steps taken */
    int64_t epoch_rows; /* rows of epoch `epoch` already consumed (0 at a boundary) */
    struct rng rng;
    int64_t optim_step;
    double best_metric; /* best validation loss so far (or train loss), for "best" */
    /* Metrics of epoch `epoch`, so that a resume with nothing left to train
     * reports them; NAN where absent (no validation; checkpoints older than
     * these fields). */
    double train_loss, train_accuracy, val_loss, val_accuracy;
    size_t n_params;
    float *params; /* (n_params), owned */
    size_t n_optim;
    float *optim_state; /* (n_optim), owned: optimizer m then v */
};

/* Serialises c into a new buffer (*blob, owned by the caller, free()). */
int checkpoint_encode(const struct checkpoint *c, void **blob, size_t *len);
/* Parses and verifies a blob into c (owning copies). Returns 0 or -EINVAL
 * with the reason in err. */
int checkpoint_decode(const void *blob, size_t len, struct checkpoint *c, char *err, size_t errlen);
void checkpoint_free(struct checkpoint *c);

/* Reads a checkpoint file whole (written with atomic_file_write_all). */
int checkpoint_read_file(const char *path, void **blob, size_t *len, char *err, size_t errlen);

#endif
