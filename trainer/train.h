/* Running jobs: the training loop, evaluation and prediction, independent of
 * how they were started (standalone, or by the broker through the trainer's
 * worker thread). Progress leaves through callbacks. */
#ifndef MLQ_TRAIN_H
#define MLQ_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"

struct epoch_metrics {
    int64_t epoch;                     /* 1-based: the epoch just finished */
    int64_t step;                      /* optimizer steps so far */
    double train_loss, train_accuracy; /* accuracy: cross-entropy only, else NAN */
    bool has_validation;
    double val_loss, val_accuracy;
    double lr; /* the learning rate of the epoch's last step */
    /* What "best" checkpoints rank, lower is better: early stopping's
     * metric (negated when higher is better), else the validation loss,
     * else the training loss. */
    double ckpt_metric;
    double samples_per_s;
    double seconds; /* wall time of the epoch */
    /* Per-step cross-entropy (next-token prediction): the losses are nats
     * per token, reported also as perplexity exp(loss) and bits per token
     * loss / ln 2 (bits per byte for byte-level tokens). */
    bool language_model;
};

struct train_callbacks {
    void *ctx;
    /* After each epoch. Non-zero return stops the run (reported as cancelled). */
    int (*on_epoch)(void *ctx, const struct epoch_metrics *m);
    /* After each checkpoint; blob is valid during the call only. */
    int (*on_checkpoint)(void *ctx, int64_t epoch, int64_t step, const void *blob, size_t len);
    /* Polled between batches; non-zero stops the run (cancel). May be NULL. */
    int (*should_stop)(void *ctx);
};

struct train_result {
    int64_t epochs_done;
    double final_train_loss, final_val_loss, final_val_accuracy;
    bool cancelled;
    /* early_stopping ended the run (a success): its metric's best value
     * and the epoch that reached it. */
    bool stopped_early;
    int64_t best_epoch;
    double best_value;
    /* max_seconds ended the run before its last epoch's end (a success). */
    bool timed_out;
    int64_t memory_bytes; /* the job's estimated memory (trainer/job_memory.h) */
};

/* Trains spec (a validated train job), from scratch or from a checkpoint blob
 * (resume_blob may be NULL). Returns 0, or a negative errno with a message in
 * err (bad data, NaN loss, ...). */
int train_run(const struct mlq_spec *spec, const void *resume_blob, size_t resume_len,
              const struct train_callbacks *cb, struct train_result *res, char *err, size_t errlen);

/* A run that ended before its epochs, in result (a JSON object): by early
 * stopping "stopped_early": true, "best_epoch", the metric's best value
 * under its name ("best_val_loss") and a "note"; by max_seconds
 * "timed_out": true and a "note". Nothing for other runs. */
void train_result_stop_json(const struct mlq_spec *spec, const struct train_result *res,
                            json_t *result);

#endif
