/* Checkpoints: everything a run needs to go on exactly where it stopped.
 *
 * Binary format, little-endian, version 2 (docs/checkpoint.md; version 1,
 * without the tensor table and the state arena, still reads):
 *   magic "MLQCKPT\0" (8 bytes), u32 version, u32 header bytes,
 *   header: spec JSON length + text, epoch, step, rows consumed in the epoch,
 *           RNG state, optimizer step, counts of params and optimizer floats,
 *           best metric so far, the last epoch's metrics (appended later: a
 *           reader finds them by the header length), the number of state
 *           floats and the tensor table (v2), then optionally the schedule's
 *           and early stopping's state (a u32 length and its fields),
 *   params (P floats), optimizer state (M floats), state arena (v2),
 *   u32 CRC-32 (zlib) of everything before it.
 * A reader rejects a wrong magic, a newer version, truncation or a bad
 * checksum, with a message naming the reason. */
#ifndef MLQ_CHECKPOINT_H
#define MLQ_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define CHECKPOINT_VERSION 2
#define CHECKPOINT_NAME_MAX 64
#define CHECKPOINT_MAX_TENSORS 4096

/* One entry of the tensor table: where a named tensor sits in params
 * (kind 0) or in the state arena (kind 1). */
struct checkpoint_tensor {
    char name[CHECKPOINT_NAME_MAX];
    int kind; /* 0 parameter, 1 state (engine/op.h's OP_PARAM, OP_STATE) */
    int ndim; /* 0..4 */
    int64_t shape[4];
    uint64_t offset; /* floats into its buffer */
};

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
    /* Version 2; a version-1 checkpoint has neither (0, NULL). */
    size_t n_state;
    float *state; /* (n_state), owned: batch norm running statistics, ... */
    int n_tensors;
    struct checkpoint_tensor *tensors; /* (n_tensors), owned */
    /* The learning-rate schedule's and early stopping's state, appended
     * within version 2 after the tensor table; written only by runs with a
     * schedule, early stopping or max_seconds (has_run_state false otherwise, and in
     * older checkpoints). */
    bool has_run_state;
    double sched_lr;
    int64_t sched_last_epoch, sched_phase_epoch;
    double sched_best; /* reduce_on_plateau */
    int64_t sched_bad_epochs, sched_cooldown;
    double es_best; /* early stopping's best value of its metric */
    int64_t es_wait, es_best_epoch;
    double trained_seconds; /* max_seconds: the run's training time so far */
};

/* Serialises c into a new buffer (*blob, owned by the caller, free()). */
int checkpoint_encode(const struct checkpoint *c, void **blob, size_t *len);
/* Parses and verifies a blob into c (owning copies). Returns 0 or -EINVAL
 * with the reason in err. */
int checkpoint_decode(const void *blob, size_t len, struct checkpoint *c, char *err, size_t errlen);
void checkpoint_free(struct checkpoint *c);

struct tensor_table;
/* Fills c->tensors (owned by the caller: free(c->tensors)) from a model's
 * table. Returns 0 or -ENOMEM (-ENAMETOOLONG for a name too long). */
int checkpoint_set_tensors(struct checkpoint *c, const struct tensor_table *tt);
/* Loads c into a model whose tensor table is tt: its parameters into params
 * (tt->n_params floats), the first n_optim optimizer buffers it holds (each
 * c->n_params floats of c->optim_state, in the parameters' layout) into
 * optim[0..n_optim), and its state arena into state (tt->n_state floats;
 * NULL when tt has none). This is the one place a checkpoint meets a model
 * (resume, eval, predict, export).
 *
 * A version-2 checkpoint's tensors are found by name through its own table,
 * wherever its offsets put them, so that a checkpoint laid out by an older
 * mlq loads into today's model. A batch norm's num_batches_tracked that the
 * checkpoint lacks (written before the count joined the table, when a batch
 * norm had four tensors) is filled with c->step, the optimizer steps taken:
 * the count a run that trains one batch a step has (docs/checkpoint.md).
 * Any other difference (a tensor missing or left over, another kind or
 * shape, another number of parameters) is -EINVAL with the first one in
 * err ("... (another model)"). A version-1 checkpoint (no table) must have
 * tt's sizes; its parameters are in the table's layout by construction. */
int checkpoint_load_tensors(const struct checkpoint *c, const struct tensor_table *tt,
                            float *params, float *const *optim, int n_optim, float *state,
                            char *err, size_t errlen);

/* Reads a checkpoint file whole (written with atomic_file_write_all). */
int checkpoint_read_file(const char *path, void **blob, size_t *len, char *err, size_t errlen);

#endif
