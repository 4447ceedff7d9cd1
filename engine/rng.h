/* A small seeded RNG (xoshiro256** seeded by splitmix64) whose whole state is
 * four words, so a checkpoint can save it and a resumed run draws the same
 * numbers as one that never stopped. */
#ifndef MLQ_RNG_H
#define MLQ_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

void rng_seed(struct rng *r, uint64_t seed);
/* A stream that depends on (seed, a, b) only, e.g. (seed, epoch, purpose):
 * the data order of an epoch, reproducible without replaying earlier ones. */
void rng_seed_stream(struct rng *r, uint64_t seed, uint64_t a, uint64_t b);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, 1) with 24 random bits, as a float. */
float rng_uniform(struct rng *r);
/* Uniform integer in [0, n), without modulo bias. n > 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle(struct rng *r, uint32_t *idx, uint64_t n);

#endif
