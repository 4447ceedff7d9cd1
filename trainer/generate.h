/* Text from a language model: a predict job with a prompt (mlq generate).
 *
 * The checkpoint's model must read token ids (its first layer an
 * embedding) and predict every step (a last layer (T, K)); each step sees
 * only itself and earlier steps (an LSTM, GRU or causal attention), so a
 * window shorter than T is read at its last position whatever follows it.
 * Starting from the prompt's bytes, each new token is drawn from the
 * softmax of the last position's logits divided by the temperature (0: the
 * most likely), among the top_k most likely (0: all), from an RNG seeded
 * with the spec's seed (sampling.h: from the model's float32 probabilities
 * at that position, as a deployment answers them, so that mlq generate
 * --deployment gives the same text): the same spec, checkpoint and seed give the same
 * text on any machine. The window is the last T tokens.
 *
 * *result, owned by the caller: {"text" (the new tokens, invalid UTF-8 as
 * U+FFFD), "prompt", "tokens", "temperature", "top_k", "seed", "epoch",
 * "ids": [the new token ids]}. docs/jobs-eval-predict.md. */
#ifndef MLQ_GENERATE_H
#define MLQ_GENERATE_H

#include <stddef.h>

#include <jansson.h>

#include "spec.h"

int generate_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **result,
                 char *err, size_t errlen);

#endif
