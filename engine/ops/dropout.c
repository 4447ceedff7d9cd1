/* Dropout: nn.Dropout's training behaviour with a counter-based mask.
 *
 * The mask is not drawn from a stream but hashed from (key, index): the op
 * takes one key per forward from the run's RNG, so the RNG's saved state is
 * all a checkpoint needs to redraw the masks after a resume, backward
 * recomputes the mask instead of storing B n bits, and threads that split
 * the elements draw exactly what one thread would. */
#include "kernels.h"

#include <string.h>

#include "op.h"

/* splitmix64's finaliser: a bijection of 64-bit words whose output bits
 * pass as independent for consecutive inputs. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Kept when a 24-bit uniform u (as rng_uniform's) is >= p: probability
 * 1 - p, up to p's rounding to a multiple of 2^-24. */
static uint32_t drop_threshold(float p)
{
    double t = (double)p * 16777216.0;
    return t >= 16777216.0 ? 16777216u : (uint32_t)(t + 0.5);
}

/* One hash serves two elements, 24 bits each: element 2j takes bits 40..63
 * of the hash of j, element 2j + 1 bits 16..39. */
static uint64_t pair_hash(uint64_t key, size_t pair)
{
    return mix64(key + (uint64_t)(pair + 1) * UINT64_C(0x9e3779b97f4a7c15));
}

static uint32_t pair_bits(uint64_t h, size_t index)
{
    return (uint32_t)(index % 2 ? (h >> 16) & 0xffffff : h >> 40);
}

static int keeps(uint64_t key, size_t index, uint32_t threshold)
{
    return pair_bits(pair_hash(key, index / 2), index) >= threshold;
}

int dropout_keeps(float p, uint64_t key, size_t index)
{
    return keeps(key, index, drop_threshold(p));
}

/* y = x scale where kept, 0 elsewhere; the same for forward and backward. */
static void apply_mask(float *y, const float *x, size_t n, float p, uint64_t key, size_t first)
{
    if (p <= 0.0f) {
        for (size_t i = 0; i < n; i++)
            y[i] = x[i];
        return;
    }
    /* torch: noise.bernoulli_(1 - p).div_(1 - p); out = in * noise. */
    float scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
    uint32_t threshold = drop_threshold(p);
    size_t i = 0;
    while (i < n) {
        size_t index = first + i;
        uint64_t h = pair_hash(key, index / 2);
        y[i] = pair_bits(h, index) >= threshold ? x[i] * scale : 0.0f;
        if (++i == n || index % 2) continue;
        y[i] = pair_bits(h, index + 1) >= threshold ? x[i] * scale : 0.0f;
        i++;
    }
}

void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t key, size_t first)
{
    apply_mask(out, in, n, p, key, first);
}

void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t key, size_t first)
{
    apply_mask(din, dout, n, p, key, first);
}

/* ---- the op: nn.Dropout(p). Training draws one key per forward from the
 * run's RNG and saves it (two floats' worth of bits) for backward;
 * evaluation is the identity. ---- */

static int dropout_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                         size_t errlen)
{
    if (!(a->p >= 0.0f && a->p < 1.0f))
        return op_err(err, errlen, "p must be in [0, 1), got %g", (double)a->p);
    *out = *in;
    return 0;
}

static size_t dropout_saved(const struct op_node *n, int B)
{
    (void)n, (void)B;
    return sizeof(uint64_t) / sizeof(float);
}

/* The mask of an element depends on the key and its index in the batch
 * alone, so runs of samples draw the same mask as the whole batch. */
static void dropout_forward_part(const struct op_call *c, int slice, void *key)
{
    (void)slice;
    size_t per = shape_size(&c->node->out);
    dropout_forward(c->out, c->in[0], (size_t)c->B * per, c->node->a.p, *(const uint64_t *)key,
                    (size_t)c->b0 * per);
}

static void dropout_backward_part(const struct op_call *c, int slice, void *key)
{
    (void)slice;
    size_t per = shape_size(&c->node->out);
    dropout_backward(c->din[0], c->dout, (size_t)c->B * per, c->node->a.p, *(const uint64_t *)key,
                     (size_t)c->b0 * per);
}

static void dropout_op_forward(const struct op_call *c)
{
    size_t n = (size_t)c->B * shape_size(&c->node->out);
    if (!c->training) {
        memcpy(c->out, c->in[0], n * sizeof *c->out);
        return;
    }
    /* model_forward gives an RNG whenever it trains; without one the mask
     * is still a fixed, valid one. */
    uint64_t key = c->rng ? rng_next(c->rng) : 0;
    memcpy(c->saved, &key, sizeof key);
    op_for_samples(c, false, dropout_forward_part, &key);
}

static void dropout_op_backward(const struct op_call *c)
{
    if (!c->din[0]) return;
    size_t n = (size_t)c->B * shape_size(&c->node->out);
    if (!c->training) {
        memcpy(c->din[0], c->dout, n * sizeof *c->dout);
        return;
    }
    uint64_t key;
    memcpy(&key, c->saved, sizeof key);
    op_for_samples(c, false, dropout_backward_part, &key);
}

static const char *const dropout_fields[] = {"p", NULL};

static const struct op_test dropout_tests[] = {
    {"p 0.25, training", {.p = 0.25f}, {{3, {2, 3, 4}}}, 2, false, 0},
    {"p 0.5 on features, training", {.p = 0.5f}, {{1, {16}}}, 3, false, 0},
    {"p 0.25, evaluation", {.p = 0.25f}, {{1, {8}}}, 2, true, 0},
    {"p 0, training", {.p = 0.0f}, {{1, {8}}}, 2, false, 0},
};

const struct op_def op_dropout = {
    .type = "dropout",
    .abbrev = NULL, /* absent from the one-line description, as torch's repr omits no layer */
    .n_inputs = 1,
    .fields = dropout_fields,
    .infer = dropout_infer,
    .saved = dropout_saved,
    .forward = dropout_op_forward,
    .backward = dropout_op_backward,
    .tests = dropout_tests,
    .n_tests = sizeof dropout_tests / sizeof dropout_tests[0],
};
