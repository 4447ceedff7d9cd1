/* Eval and predict jobs: a train run's checkpoint applied to a dataset.
 *
 * Both take the job spec (kind eval or predict) and the checkpoint blob the
 * broker sends with the job. The checkpoint carries the train run's spec, from
 * which the network is rebuilt; the job spec only names the data (and, for
 * predict, the output file). Rows go through the network in file order, in
 * chunks of EVALUATE_ROWS. BLAS threads are the caller's business.
 *
 * Errors: 0 or a negative errno with a message in err naming the file and the
 * reason (corrupt checkpoint, width or class mismatch, I/O). docs/jobs-eval-predict.md. */
#ifndef MLQ_EVALUATE_H
#define MLQ_EVALUATE_H

#include <stddef.h>

#include <jansson.h>

#include "job_memory.h"
#include "spec.h"

#define EVALUATE_ROWS JOB_MEMORY_EVAL_ROWS

/* Loss and accuracy of the checkpoint on spec->dataset (which needs y).
 * *result, owned by the caller (json_decref), is for cross-entropy:
 *   {"loss", "accuracy", "n", "classes", "per_class_accuracy": [K],
 *    "confusion_matrix": [[K] x K]}   rows = true class, cols = predicted;
 *   per_class_accuracy[k] is null for a class with no rows;
 * and for mse: {"loss" (mean squared error over all N*K values), "n", "mae"}.
 * Both also hold "epoch", the checkpoint's epochs completed. */
int eval_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **result,
             char *err, size_t errlen);

/* Runs the checkpoint on spec->dataset's X (y is not read) and writes the
 * HDF5 file spec->output_path atomically (a temporary file beside it, fsync,
 * rename):
 *   cross-entropy: "predictions" (N) int32 class ids (arg max, first on ties),
 *                  "probabilities" (N, K) float32 softmax;
 *   mse:           "outputs" (N, K) float32;
 *   file attributes: "run" (int64), "checkpoint_epoch" (int64), "loss",
 *                    "train_spec" (the run's spec JSON, string).
 * *summary, owned by the caller: {"n", "output", "class_counts": [K]} for
 * cross-entropy, {"n", "output"} for mse. */
int predict_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **summary,
                char *err, size_t errlen);

#endif
