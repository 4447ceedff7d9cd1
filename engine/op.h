/* A layer kind of the engine: one struct op_def, one file under engine/ops/,
 * one row in engine/ops/registry.c. The model (model.h) holds a list of
 * nodes, each an op with its fields (struct op_attrs) and its input shapes;
 * it asks the op for its output shape, its tensors and its buffer sizes once,
 * then calls forward in node order and backward in reverse.
 *
 * Dimensions, named once: B = samples in the batch. Shapes are per sample
 * (the batch is never part of a shape): (F) features, or (C, H, W) channels,
 * height and width, or (T, F) a sequence of T steps of F features (a step's
 * features contiguous, as batch_first=True). Buffers are row-major, one
 * sample after the other, so a (B, C, H, W) batch is NCHW as PyTorch's and
 * a (B, T, F) batch is batch_first. Token ids travel as floats (exact below
 * 2^24): an embedding's input is (T) ids.
 *
 * Conventions every op keeps:
 *   - forward writes (=) its output; it may read its parameters and state,
 *     and keep what backward needs in `saved` (per batch: the model sizes it
 *     by the largest batch).
 *   - backward accumulates (+=) its parameter gradients into `grad` (zeroing
 *     is the caller's) and stores (=) the input gradients din[i]; din[i] is
 *     NULL when nobody needs it (the model's input). A node whose output
 *     feeds two nodes gets the sum: the model adds the second gradient.
 *   - backward runs right after the forward of the same batch, with the
 *     same `training` flag, inputs, output and saved buffer.
 *   - nothing allocates: every buffer comes from the model's arenas.
 *   - init draws from the given RNG only (PyTorch's default distributions,
 *     not torch's numbers): same seed, same weights, on every machine. */
#ifndef MLQ_OP_H
#define MLQ_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

struct team;

#define OP_MAX_DIMS 3     /* per-sample dimensions: (C, H, W) */
#define OP_MAX_INPUTS 2   /* the residual add reads two earlier outputs */
#define OP_MAX_TENSORS 16 /* parameter and state tensors of one node (a 4-layer LSTM's 16) */
#define OP_NAME_MAX 48    /* a tensor's name, "3.branch.0.running_mean" */

struct shape {
    int n;              /* dimensions used, 1..OP_MAX_DIMS */
    int d[OP_MAX_DIMS]; /* (F) or (C, H, W) */
};

/* The fields of every layer kind, named as the job spec and PyTorch name
 * them; each op reads its own and ignores the rest. The spec translation
 * fills PyTorch's defaults (op_attrs_defaults), so an op sees final values. */
struct op_attrs {
    int out;              /* dense: out_features; conv2d: out_channels */
    int kernel;           /* conv2d, maxpool, avgpool: square kernel */
    int stride;           /* conv2d (1), pools (kernel); OP_UNSET until infer */
    int padding;          /* conv2d, pools: zeros (pools: -inf for max) */
    bool bias;            /* dense, conv2d: true */
    float p;              /* dropout: zeroing probability, [0, 1) */
    float negative_slope; /* leaky_relu: 0.01 */
    float momentum, eps;  /* batchnorm: 0.1, 1e-5 */
    bool approximate;     /* gelu: the tanh approximation */
    int vocab;            /* embedding: num_embeddings; positional: the table's length */
    int num_layers;       /* lstm, gru: stacked layers (1) */
    bool sequence;        /* lstm, gru: output every step (T, H) (true) or the last (H) */
    int heads;            /* attention, transformer: heads that divide the width */
    bool causal;          /* attention, transformer: a step sees itself and earlier steps */
};

#define OP_UNSET (-1)
/* PyTorch's defaults for the fields an op reads (out and kernel excepted);
 * stride is OP_UNSET: infer sets it (1 for conv2d, the kernel for pools). */
void op_attrs_defaults(struct op_attrs *a);

enum op_tensor_kind {
    OP_PARAM, /* optimized: in the parameter buffer, with a gradient */
    OP_STATE, /* saved, not optimized: in the state arena (running mean, ...) */
};

/* One tensor a node owns: the suffix of its name in PyTorch's state_dict
 * ("weight", "bias", "running_mean", "num_batches_tracked") and its shape. */
struct op_tensor {
    const char *name;
    enum op_tensor_kind kind;
    int ndim;
    int shape[4];
};

/* A node as the op sees it: its fields, input and output shapes, fixed
 * when the model is built. */
struct op_node {
    const struct op_def *op;
    struct op_attrs a;
    int n_in;
    struct shape in[OP_MAX_INPUTS];
    struct shape out;
};

/* What one forward or backward call gets. Parameters and state are the
 * node's own slices, laid out as its tensors() lists them (each kind in its
 * own buffer, in order).
 *
 * Threads: an op cuts its own work over the team with op_for_samples or
 * op_for_range (below); a call is never split behind its back. What a
 * slice computes depends on the problem alone, never on the team's size or
 * on which thread ran it, so any team gives the same bits (tests/
 * test_ops_grad.c checks it for every op). */
struct op_call {
    const struct op_node *node;
    int B;
    int b0;                         /* the first sample of this call in the batch (sub-calls) */
    struct team *team;              /* the threads to split over, or NULL: the caller alone */
    bool training;                  /* batch norm statistics, dropout */
    struct rng *rng;                /* the run's RNG (dropout draws its mask key here) */
    const float *in[OP_MAX_INPUTS]; /* (B, in[i]) */
    float *out;                     /* (B, out) */
    float *param;                   /* the node's parameters, or NULL */
    float *grad;                    /* their gradients, same layout */
    float *state;                   /* the node's state, or NULL */
    float *saved;                   /* saved(node, B) floats, kept from forward to backward */
    float *scratch;                 /* scratch(node, B) floats of the running thread, not kept */
    size_t scratch_stride;          /* floats from one thread's scratch to the next's */
    float *partials;                /* partials(node, B) floats, backward's per-slice sums */
    const float *dout;              /* backward: (B, out) */
    float *din[OP_MAX_INPUTS];      /* backward: (B, in[i]), stored; NULL: not needed */
};

/* One test case of an op for tests/test_ops_grad.c: fields, input shapes,
 * batch and mode. Every registered op lists its own, so a new op is
 * checked against finite differences as soon as it is in the table. */
struct op_test {
    const char *name; /* "3x3 stride 2 pad 1" */
    struct op_attrs a;
    struct shape in[OP_MAX_INPUTS];
    int B;
    bool eval; /* run in evaluation mode (default: training) */
    /* Non-smooth ops (max pool, relu) keep inputs this far from kinks;
     * 0 = the test's default. */
    double tol;
};

struct op_def {
    const char *type;   /* the spec's "type": "conv2d" */
    const char *abbrev; /* one-line descriptions: "conv" gives conv32, "bn", "pool" */
    int n_inputs;       /* 1, or 2 for add */
    /* The struct op_attrs fields this op reads, by their spec names ("out",
     * "kernel", "stride", "padding", "bias", "p", "negative_slope",
     * "momentum", "eps", "approximate", "vocab", "num_layers", "sequence",
     * "heads", "causal"), NULL-terminated; a spec layer
     * giving any other field is refused. NULL: none. */
    const char *const *fields;
    /* The output shape for these inputs, or -EINVAL with the reason in err
     * naming both shapes ("kernel 5 is larger than the padded input 3x3");
     * the model prefixes the layer's index and type. Also rejects bad
     * fields (kernel or stride 0, negative padding, p outside [0, 1)) and
     * fills the defaults that depend on others (OP_UNSET stride). */
    int (*infer)(struct op_attrs *a, const struct shape *in, struct shape *out, char *err,
                 size_t errlen);
    /* The node's tensors, parameters and state in any order (each kind is
     * laid out in the order listed); returns how many (<= OP_MAX_TENSORS). */
    int (*tensors)(const struct op_node *n, struct op_tensor t[OP_MAX_TENSORS]);
    /* PyTorch's default initialisation of param and state, drawn from r. */
    void (*init)(const struct op_node *n, float *param, float *state, struct rng *r);
    /* Floats of call->saved, call->scratch (per thread) and
     * call->partials for B samples; NULL = 0. */
    size_t (*saved)(const struct op_node *n, int B);
    size_t (*scratch)(const struct op_node *n, int B);
    size_t (*partials)(const struct op_node *n, int B);
    void (*forward)(const struct op_call *c);
    void (*backward)(const struct op_call *c);
    const struct op_test *tests;
    int n_tests;
    /* Input 0 holds token ids in [0, a.vocab) (an embedding), which have
     * no gradient: the tests draw integers and check din is zero. */
    bool takes_ids;
};

/* ---- the registry (engine/ops/registry.c) ---- */

/* The op of a spec type ("conv2d"), or NULL. */
const struct op_def *op_find(const char *type);
/* Every registered op, for the table-driven tests; *n receives the count. */
const struct op_def *const *op_all(int *n);

/* ---- threads: an op's work cut over the call's team ---- */

/* Runs of samples a batch of B is cut into when a sum over samples is
 * kept per run (conv2d's weight gradient): a function of B alone, so that
 * the sum is the same on any number of threads. */
#define OP_SAMPLE_SLICES 8
int op_sample_slices(int B);

/* Runs fn on sub-calls of c over runs of its samples, on whichever team
 * threads are running: each sub-call has B = its samples, b0 = its first,
 * in, out, dout and din offset to them, scratch the running thread's, and
 * slice its run's index; param, grad, state, saved and partials are c's.
 * With per_slice_sums the runs are op_sample_slices(c->B) (fn may keep a
 * sum per slice in partials); otherwise the cut is free and a small call
 * runs whole on the caller (slice 0). */
void op_for_samples(const struct op_call *c, bool per_slice_sums,
                    void (*fn)(const struct op_call *sub, int slice, void *ctx), void *ctx);
/* Runs fn(c, lo, hi, scratch, ctx) over runs [lo, hi) of [0, total)
 * (channels, gemm columns, parameters) on the team. The cut depends on
 * total alone: up to OP_RANGE_RUNS runs of at least min_run, multiples of
 * align, the same with or without a team, so that a BLAS call per run
 * gives the same bits on any team (a gemm cut differently may round
 * differently). */
#define OP_RANGE_RUNS 8
void op_for_range(const struct op_call *c, int total, int align, int min_run,
                  void (*fn)(const struct op_call *c, int lo, int hi, float *scratch, void *ctx),
                  void *ctx);
/* How many runs op_for_range(c, total, align, min_run, ...) makes, and the
 * index of the one that starts at lo: for sums kept per run in partials
 * and added in run order (op_sum_partials). */
int op_range_runs(int total, int align, int min_run);
int op_range_index(int total, int align, int min_run, int lo);
/* One task of op_for_ranges: fn over the runs that op_for_range(c, total,
 * align, min_run, fn, ctx) makes. */
struct op_range_task {
    int total, align, min_run;
    void (*fn)(const struct op_call *c, int lo, int hi, float *scratch, void *ctx);
    void *ctx;
};
#define OP_MAX_RANGE_TASKS 4
/* The runs of up to OP_MAX_RANGE_TASKS independent tasks in one team job,
 * task after task (a layer's weight gradient and its input gradient): the
 * threads share them with no wait in between, and each run is the one
 * op_for_range would make, so op_range_index holds. */
void op_for_ranges(const struct op_call *c, const struct op_range_task *task, int n);
/* Test seam: calls touching at least this many floats are split (default
 * 32768); tests/test_ops_grad.c sets 1 to split even its small cases. */
void op_set_split_threshold(size_t floats);
/* Test seam: attention heads through sgemm even on a CPU where
 * ops/attn_head.c's AVX-512 kernel would run them, so that the tests
 * check both paths on one machine. */
void op_set_attention_sgemm(bool on);
/* grad[i] += sum over the slices k of partials[k n + i] (in slice order),
 * for i in [0, n), split over the team. */
void op_sum_partials(const struct op_call *c, float *grad, const float *partials, int slices,
                     size_t n);

/* ---- helpers for ops ---- */

size_t shape_size(const struct shape *s); /* product of the dimensions */
bool shape_equal(const struct shape *a, const struct shape *b);
/* "(32, 7, 7)" into buf; returns buf. */
const char *shape_str(const struct shape *s, char *buf, size_t len);
#define SHAPE_STR_MAX 48
/* Formats the reason into err and returns -EINVAL. */
int op_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* U(-bound, bound) into x[0..n), from r: PyTorch's kaiming_uniform_(a=sqrt 5)
 * with bound 1/sqrt(fan_in) for weights, and the same bound for biases. */
void op_uniform(float *x, size_t n, float bound, struct rng *r);
/* N(mean, std) into x[0..n), from r (Box-Muller, two uniforms per pair):
 * nn.Embedding's normal_() init. */
void op_normal(float *x, size_t n, float mean, float std, struct rng *r);

#endif
