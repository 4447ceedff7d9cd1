/* xoshiro256** (Blackman & Vigna) seeded through splitmix64, so that any
 * 64-bit seed, including 0, gives a well-mixed non-zero state. */
#include "rng.h"

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

void rng_seed_stream(struct rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t h = seed;
    h = splitmix64(&h) ^ a;
    h = splitmix64(&h) ^ b;
    h = splitmix64(&h);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&h);
}

uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(struct rng *r)
{
    /* The top 24 bits are exactly representable in a float's mantissa. */
    return (float)(rng_next(r) >> 40) * 0x1.0p-24f;
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
    /* Reject the top partial copy of [0, n) in [0, 2^64). */
    uint64_t limit = -n % n; /* 2^64 mod n */
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= limit) return x % n;
    }
}

void rng_shuffle(struct rng *r, uint32_t *idx, uint64_t n)
{
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = rng_below(r, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
