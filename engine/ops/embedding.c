/* embedding: nn.Embedding(vocab, out). (T) token ids -> (T, E) rows of the
 * table w (V, E); an id that is not an integer in [0, V) gives a zero row
 * (the trainer refuses such data before it gets here: datasets.md).
 * positional: a learned positional embedding, GPT-2's wpe as an
 * nn.Embedding(vocab, E) indexed by position: (T, E) -> (T, E) + w[0:T],
 * refused when T is beyond its table.
 *
 * Dimensions: B samples, T steps, V the table's rows, E its width. */
#include <math.h>
#include <string.h>

#include "op.h"

static int embedding_infer(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                           size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 1)
        return op_err(err, errlen, "needs a sequence of token ids (T), got %s",
                      shape_str(in, s, sizeof s));
    if (a->vocab < 1) return op_err(err, errlen, "vocab must be at least 1, got %d", a->vocab);
    if (a->out < 1) return op_err(err, errlen, "out must be at least 1, got %d", a->out);
    *out = (struct shape){2, {in->d[0], a->out}};
    return 0;
}

static int embedding_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    t[0] = (struct op_tensor){"weight", OP_PARAM, 2, {n->a.vocab, n->a.out}};
    return 1;
}

/* nn.Embedding.reset_parameters: normal_(0, 1). */
static void embedding_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    op_normal(param, (size_t)n->a.vocab * n->a.out, 0.0f, 1.0f, r);
}

/* The row of id x, or -1. */
static int embedding_row(float x, int V)
{
    if (!(x >= 0.0f && x < (float)V)) return -1; /* NaN too */
    int id = (int)x;
    return (float)id == x ? id : -1;
}

static void embedding_forward(const struct op_call *c)
{
    int V = c->node->a.vocab, E = c->node->a.out;
    size_t rows = (size_t)c->B * c->node->in[0].d[0];
    for (size_t i = 0; i < rows; i++) {
        int id = embedding_row(c->in[0][i], V);
        if (id < 0)
            memset(c->out + i * E, 0, (size_t)E * sizeof *c->out);
        else
            memcpy(c->out + i * E, c->param + (size_t)id * E, (size_t)E * sizeof *c->out);
    }
}

/* dw[id, e0:e1] += dout rows, in row order: each run owns its columns. */
static void embedding_backward_range(const struct op_call *c, int e0, int e1, float *scratch,
                                     void *ctx)
{
    (void)scratch, (void)ctx;
    int V = c->node->a.vocab, E = c->node->a.out;
    size_t rows = (size_t)c->B * c->node->in[0].d[0];
    for (size_t i = 0; i < rows; i++) {
        int id = embedding_row(c->in[0][i], V);
        if (id < 0) continue;
        float *restrict g = c->grad + (size_t)id * E;
        const float *restrict d = c->dout + i * E;
        for (int e = e0; e < e1; e++)
            g[e] += d[e];
    }
}

static void embedding_backward(const struct op_call *c)
{
    op_for_range(c, c->node->a.out, 16, 64, embedding_backward_range, NULL);
    if (c->din[0]) /* ids have no gradient */
        memset(c->din[0], 0, (size_t)c->B * c->node->in[0].d[0] * sizeof *c->din[0]);
}

static const struct op_test embedding_tests[] = {
    {"vocab 7, width 5", {.vocab = 7, .out = 5}, {{1, {4}}}, 3, false, 0},
    {"one step, wide", {.vocab = 3, .out = 70}, {{1, {1}}}, 2, false, 0},
};

static const char *const embedding_fields[] = {"vocab", "out", NULL};

const struct op_def op_embedding = {
    .type = "embedding",
    .abbrev = "emb",
    .n_inputs = 1,
    .fields = embedding_fields,
    .infer = embedding_infer,
    .tensors = embedding_tensors,
    .init = embedding_init,
    .forward = embedding_forward,
    .backward = embedding_backward,
    .tests = embedding_tests,
    .n_tests = sizeof embedding_tests / sizeof embedding_tests[0],
    .takes_ids = true,
};

/* ---- positional ---- */

static int positional_infer(struct op_attrs *a, const struct shape *in, struct shape *out,
                            char *err, size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (in->n != 2)
        return op_err(err, errlen, "needs a sequence (T, features), got %s",
                      shape_str(in, s, sizeof s));
    if (a->vocab < 1) return op_err(err, errlen, "vocab must be at least 1, got %d", a->vocab);
    if (in->d[0] > a->vocab)
        return op_err(err, errlen,
                      "the sequence's %d steps are beyond the positional table's %d (vocab)",
                      in->d[0], a->vocab);
    *out = *in;
    return 0;
}

static int positional_tensors(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS])
{
    t[0] = (struct op_tensor){"weight", OP_PARAM, 2, {n->a.vocab, n->in[0].d[1]}};
    return 1;
}

static void positional_init(const struct op_node *n, float *param, float *state, struct rng *r)
{
    (void)state;
    op_normal(param, (size_t)n->a.vocab * n->in[0].d[1], 0.0f, 1.0f, r);
}

static void positional_forward(const struct op_call *c)
{
    size_t TE = shape_size(&c->node->in[0]);
    for (int b = 0; b < c->B; b++) {
        const float *restrict x = c->in[0] + (size_t)b * TE;
        float *restrict y = c->out + (size_t)b * TE;
        for (size_t i = 0; i < TE; i++)
            y[i] = x[i] + c->param[i];
    }
}

static void positional_backward_range(const struct op_call *c, int lo, int hi, float *scratch,
                                      void *ctx)
{
    (void)scratch, (void)ctx;
    size_t TE = shape_size(&c->node->in[0]);
    for (int b = 0; b < c->B; b++) {
        const float *restrict d = c->dout + (size_t)b * TE;
        for (int i = lo; i < hi; i++)
            c->grad[i] += d[i];
    }
}

static void positional_backward(const struct op_call *c)
{
    size_t TE = shape_size(&c->node->in[0]);
    op_for_range(c, (int)TE, 16, 4096, positional_backward_range, NULL);
    if (c->din[0]) memcpy(c->din[0], c->dout, (size_t)c->B * TE * sizeof *c->din[0]);
}

static const struct op_test positional_tests[] = {
    {"table 6, 4 steps", {.vocab = 6}, {{2, {4, 3}}}, 3, false, 0},
    {"full table", {.vocab = 2}, {{2, {2, 5}}}, 2, false, 0},
};

static const char *const positional_fields[] = {"vocab", NULL};

const struct op_def op_positional = {
    .type = "positional",
    .abbrev = "pos",
    .n_inputs = 1,
    .fields = positional_fields,
    .infer = positional_infer,
    .tensors = positional_tensors,
    .init = positional_init,
    .forward = positional_forward,
    .backward = positional_backward,
    .tests = positional_tests,
    .n_tests = sizeof positional_tests / sizeof positional_tests[0],
};
