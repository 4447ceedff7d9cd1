/* Datasets in HDF5: inputs X and targets y, read in batches.
 *
 * X is uint8, float32 or float64 (IEEE, either byte order), shaped (N, D) or
 * (N, H, W[, C]) and seen flattened as (N, D). uint8 is scaled to [0, 1]
 * unless the spec says otherwise. y is integer class ids (N), an id per step
 * (N, T) (next-token targets), or float targets (N, K). Other dtypes (float16, float128, ...) are
 * refused by name.
 *
 * A dataset that fits the memory budget is read once and kept in its stored
 * dtype (converted to float per batch); a larger one is read in chunks of
 * rows (hyperslabs), chunk order and order within the buffer shuffled. */
#ifndef MLQ_DATASET_H
#define MLQ_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "rng.h"
#include "spec.h"

enum dataset_dtype { DTYPE_UINT8, DTYPE_FLOAT32, DTYPE_FLOAT64 };

struct dataset_info {
    int64_t n;  /* samples */
    int64_t d;  /* inputs per sample, after flattening */
    int x_rank; /* 2, 3 or 4 */
    int64_t x_dims[4];
    enum dataset_dtype x_dtype;
    bool has_y;        /* predict inputs may have no y */
    bool y_is_class;   /* (N) integer ids; otherwise (N, K) floats */
    int64_t k;         /* 1 for class ids, K for float targets */
    int64_t n_classes; /* max class id + 1 (class ids only) */
    bool in_memory;    /* false: streamed in chunks */
};

struct dataset;

/* Reads are isolated by default: every read of the file (opening included)
 * runs in a short-lived child process that fills shared buffers, so a file
 * that crashes libhdf5 fails with "dataset reader crashed (signal N) on
 * FILE" instead of taking the process down (docs/security.md). false reads
 * in this process, as a fuzzer or a process that is itself a reader wants.
 * Takes effect for datasets opened afterwards. */
void dataset_set_isolated(bool on);

/* A reader process that neither runs nor reads for stall_s seconds (<= 0: the
 * default, 30) is killed and its read tried again, three times in all; then
 * the read fails with "dataset reader made no progress for S s on FILE".
 * hang_next: a test seam, so many of the next readers block before reading. */
void dataset_set_reader_watch(double stall_s, int hang_next);

/* Opens and checks src: file and datasets exist, ranks and lengths agree, N >
 * 0, no NaN or Inf in float X, class ids >= 0. need_y = false for predict
 * inputs. budget_bytes: how much of X and y may stay in memory (0 = 1 GiB).
 * On error returns -errno or -EINVAL with a message that names the file and
 * what is wrong in err. */
int dataset_open(struct dataset **out, const struct spec_dataset *src, bool need_y,
                 int64_t budget_bytes, char *err, size_t errlen);
void dataset_close(struct dataset **ds);

/* What dataset_open would find, from the file's headers alone: no row is
 * read, so it is cheap on any file, whatever it declares (n_classes stays
 * 0). row_bytes: one row of X and y as held in memory. For sizing a job
 * before anything is allocated (trainer/job_memory.h). */
int dataset_probe(const struct spec_dataset *src, bool need_y, struct dataset_info *info,
                  int64_t *row_bytes, char *err, size_t errlen);
/* The bytes dataset_open keeps for n rows of row_bytes at budget_bytes (0 =
 * 1 GiB): every row when they fit (*in_memory true), else one streamed group
 * of chunks; with the orders that shuffle them. */
int64_t dataset_memory_bytes(int64_t n, int64_t row_bytes, int64_t budget_bytes, bool *in_memory);
const struct dataset_info *dataset_get_info(const struct dataset *ds);
/* "uint8", "float32" or "float64", for messages and logs. */
const char *dataset_dtype_name(enum dataset_dtype t);

/* Checks that every element dset declares is stored in its file of
 * file_bytes bytes, before anything is read: compact and contiguous storage
 * of exactly the declared size inside the file, every chunk written, no
 * external or virtual storage, a compression ratio deflate could reach, and
 * every filter decodable here. The work is bounded by the file, not by what
 * it declares. path and name are for the message. Returns 0 or -errno. */
int dataset_check_stored(hid_t dset, const char *path, const char *name, int64_t file_bytes,
                         char *err, size_t errlen);

/* Checks the dataset against a model: D equals inputs, and class ids are in
 * [0, outputs) for cross-entropy, or K equals outputs for mse. */
int dataset_check_model(const struct dataset *ds, const struct mlq_spec *spec, char *err,
                        size_t errlen);
/* The same for any model: `inputs` floats per row (what_inputs names them
 * in the message: "model.layers[0] is 784"), `outputs` values. */
int dataset_check_io(const struct dataset *ds, enum job_kind kind, enum loss_kind loss,
                     int64_t inputs, const char *what_inputs, int outputs, char *err,
                     size_t errlen);

/* The same for a model of per-step outputs (T, K) (steps T; 1 otherwise):
 * integer targets must then be (N, T), an id per step. */
int dataset_check_io_steps(const struct dataset *ds, enum job_kind kind, enum loss_kind loss,
                           int64_t inputs, const char *what_inputs, int outputs, int steps,
                           char *err, size_t errlen);

/* Restricts the dataset to rows [begin, end), for a validation split. The
 * view shares the file and memory of its parent, which must outlive it. */
int dataset_view(struct dataset **out, struct dataset *parent, int64_t begin, int64_t end,
                 char *err, size_t errlen);

/* Starts an epoch. The order is a function of (seed, epoch) alone, so a
 * resumed run can start epoch e at row `skip` and see what an uninterrupted
 * run saw. shuffle = false reads rows in file order. */
int dataset_epoch_begin(struct dataset *ds, uint64_t seed, int64_t epoch, bool shuffle,
                        int64_t skip, char *err, size_t errlen);

/* Fills up to B rows in epoch order: x (B, D) floats; y_class (B) or y (B, K)
 * (either may be NULL). Returns rows filled (0 at the end of the epoch), or a
 * negative errno with err set (a read error, NaN in a streamed chunk). */
int dataset_next_batch(struct dataset *ds, int B, float *x, int32_t *y_class, float *y, char *err,
                       size_t errlen);

/* Reads rows [begin, begin + B) in file order, for eval and predict. */
int dataset_read_rows(struct dataset *ds, int64_t begin, int B, float *x, int32_t *y_class,
                      float *y, char *err, size_t errlen);

#endif
