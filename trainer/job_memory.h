/* A job's whole memory, estimated from its spec and its data's shape before
 * anything is allocated, and checked against the trainer's limit
 * (trainer.memory_budget_mb): a job over it fails at once, saying what it
 * would need and why, instead of growing until the kernel kills the trainer.
 *
 * The estimate is a sum of named parts (dataset, batch buffers, activations,
 * parameters, gradients, optimizer state, checkpoint...), each computed from
 * the model's layer sizes by the rules the code that allocates it follows;
 * a new kind of layer or buffer is one more part here. test_job_memory
 * holds the parts against what the engine really allocates.
 *
 * Used by the trainer (train_run, eval_run, predict_run) and by mlq submit
 * when the dataset is readable where it runs. */
#ifndef MLQ_JOB_MEMORY_H
#define MLQ_JOB_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* Rows per forward pass where the batch size does not dictate it: eval,
 * predict, validation, and full-batch gd, which sums sub-batches. */
#define JOB_MEMORY_EVAL_ROWS 1024
#define JOB_MEMORY_MAX_PARTS 16

struct job_memory_part {
    const char *name; /* "activations" */
    int64_t bytes;
    char how[112]; /* "batch 60000 x 4106 floats x 2" */
};

/* One file's data as dataset_probe reports it; rows == 0: no such file. */
struct job_memory_data {
    int64_t rows;
    int64_t row_bytes; /* X and y of one row as held in memory */
    int x_rank;        /* X's shape (N first), for a model of typed layers; 0: unknown */
    int64_t x_dims[4];
};

struct job_memory_job {
    const struct mlq_spec *spec;  /* the job */
    const struct mlq_spec *model; /* the train spec of its network: spec itself for a train
                                     job, the checkpoint's for eval and predict */
    struct job_memory_data data;  /* the dataset (train: all rows, a split's too), the input */
    struct job_memory_data val;   /* a separate validation file */
    size_t checkpoint_bytes;      /* the blob resumed from or evaluated; 0: none */
};

struct job_memory {
    int n_parts;
    struct job_memory_part part[JOB_MEMORY_MAX_PARTS];
    int64_t total;
    int rows;            /* B: rows per forward pass, the batch buffers' */
    int64_t data_budget; /* for dataset_open of the dataset */
    int64_t val_budget;  /* of the validation file */
    int64_t limit;       /* bytes, 0 = none */
};

/* The trainer's limit for one job, MiB (trainer.memory_budget_mb); 0 = no
 * limit, the default of a process that never sets it (tests, benches). Set
 * once at start-up, before jobs run. */
void job_memory_set_limit(int64_t mb);
int64_t job_memory_limit_mb(void);

/* Rows per forward pass of eval, predict, validation and gd's sub-batches:
 * JOB_MEMORY_EVAL_ROWS for a list of widths, JOB_MEMORY_LAYER_ROWS for
 * typed layers, whose activations per row are large (a conv net's are some
 * 100,000 floats, 0.4 GiB at 1024 rows). */
#define JOB_MEMORY_LAYER_ROWS 64
int job_memory_eval_rows(const struct mlq_spec *model);
/* Rows per forward pass of a train job on n training rows. */
int job_memory_train_rows(const struct mlq_spec *model, int64_t n, bool has_validation);
/* Rows of a validation split held out of n (0 without one). */
int64_t job_memory_split_rows(const struct mlq_spec *spec, int64_t n);

/* Estimates j into m and checks it against the limit. A spec's own
 * memory_budget_mb (the bytes of data it may keep in memory) above the limit
 * is refused; at 0 the data gets what the other parts leave of the limit
 * (streamed if it does not fit), or 1 GiB without a limit. Returns 0, or
 * -ENOMEM / -EINVAL with the reason in err (every part, largest first). */
int job_memory_plan(const struct job_memory_job *j, struct job_memory *m, char *err, size_t errlen);

/* "~3.3 GiB: activations 1.9 GiB (batch 60000 x 4106 floats x 2), ...". */
void job_memory_describe(const struct job_memory *m, char *buf, size_t len);

#endif
