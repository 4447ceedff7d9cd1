/* Drawing text from a language model's next-token distribution: the one
 * sampler of `mlq generate`, whether the trainer runs the model (a generate
 * job, generate.c) or a deployment answers each step (the client's loop,
 * cli/cmd_generate.c). Both give it the same float32 probabilities (the
 * model's softmax at the window's last position), so the same seed gives
 * the same text (docs/jobs-eval-predict.md, docs/serving.md).
 *
 * Dimensions: K the vocabulary of the model's outputs. */
#ifndef MLQ_SAMPLING_H
#define MLQ_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* One candidate of a draw: sampling_next's scratch, K of them. */
struct sampling_rank {
    float p;
    int id;
};

/* The next token from probabilities p (K, softmax of the logits): the most
 * likely at temperature 0, else a draw with weights p^(1 / temperature)
 * (softmax(logits / temperature)) over the top_k most likely (0: all),
 * ties ranked by the smaller id. One rng_uniform per draw, none at
 * temperature 0. rank holds K entries. */
int sampling_next(const float *p, int K, double temperature, int top_k, struct sampling_rank *rank,
                  struct rng *r);

/* in (n bytes) as valid UTF-8 into out (3 n + 1 bytes): a byte that does
 * not start a well-formed sequence (and NUL) becomes U+FFFD. */
void sampling_utf8(char *out, const uint8_t *in, size_t n);

#endif
