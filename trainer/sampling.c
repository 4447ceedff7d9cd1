/* The sampler of mlq generate (sampling.h). */
#include "sampling.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Larger probabilities first, then smaller ids: torch.topk's order on ties
 * is unspecified; this one is fixed. */
static int by_p(const void *pa, const void *pb)
{
    const struct sampling_rank *a = pa, *b = pb;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return a->id - b->id;
}

int sampling_next(const float *p, int K, double temperature, int top_k, struct sampling_rank *rank,
                  struct rng *r)
{
    for (int k = 0; k < K; k++)
        rank[k] = (struct sampling_rank){p[k], k};
    qsort(rank, (size_t)K, sizeof *rank, by_p);
    if (temperature == 0.0) return rank[0].id;
    int n = top_k > 0 && top_k < K ? top_k : K;
    /* p_i^(1/t) / p_max^(1/t) = exp((log p_i - log p_max) / t): softmax(z / t)
     * up to its sum, without the logits; a p that underflowed to 0 weighs 0. */
    double sum = 0.0, lmax = log((double)rank[0].p);
    for (int i = 0; i < n; i++)
        sum += exp((log((double)rank[i].p) - lmax) / temperature);
    double u = (double)rng_uniform(r) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp((log((double)rank[i].p) - lmax) / temperature);
        if (u < acc) return rank[i].id;
    }
    return rank[n - 1].id;
}

void sampling_utf8(char *out, const uint8_t *in, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b = in[i];
        size_t need = b < 0x80                 ? 0
                      : b >= 0xC2 && b <= 0xDF ? 1
                      : (b & 0xF0) == 0xE0     ? 2
                      : b >= 0xF0 && b <= 0xF4 ? 3
                                               : 4;
        bool ok = b != 0 && need < 4 && i + need < n;
        for (size_t k = 1; ok && k <= need; k++)
            ok = (in[i + k] & 0xC0) == 0x80;
        if (ok && need >= 2) { /* no overlong forms, surrogates or beyond U+10FFFF */
            uint8_t c = in[i + 1];
            ok = !(b == 0xE0 && c < 0xA0) && !(b == 0xED && c >= 0xA0) &&
                 !(b == 0xF0 && c < 0x90) && !(b == 0xF4 && c >= 0x90);
        }
        if (!ok) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, in + i, need + 1);
        o += need + 1;
        i += need + 1;
    }
    out[o] = '\0';
}
