/* A model: a list of nodes run in order, each an op (op.h) reading the
 * model's input or earlier nodes' outputs (two for the residual add), then a
 * fused head (loss.h). Parameters live in one buffer described by a tensor
 * table (tensor.h), gradients in the same layout; batch norm's running
 * statistics in a second arena; activations, their gradients, what forward
 * saves for backward and a shared scratch in arenas sized by the largest
 * batch (model_reserve). Optimizers are one loop over params (optim.h).
 *
 * A model that is a plain stack of dense layers with one hidden activation
 * (the spec's list of widths) runs through struct net (net.h) and its
 * threaded fast paths; it has the same tensor table and the same buffers
 * (params, grads are the net's). */
#ifndef MLQ_MODEL_H
#define MLQ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "op.h"
#include "rng.h"
#include "tensor.h"

#define MODEL_MAX_NODES 256
#define MODEL_NODE_NAME 32 /* tensor-name prefix of a node: "3.branch.1" */
#define MODEL_TYPE_MAX 16
#define MODEL_INPUT (-1) /* a node input that is the model's input */

/* One node of the description. n_in 0 means one input: the previous node
 * (the model's input for node 0). */
struct model_layer {
    char type[MODEL_TYPE_MAX];  /* an op's type, op_find */
    char name[MODEL_NODE_NAME]; /* "" = the node's index, as nn.Sequential names it */
    struct op_attrs a;
    int n_in;
    int in[OP_MAX_INPUTS]; /* earlier node indices or MODEL_INPUT */
};

/* What model_create builds: the engine's own description, filled by the
 * caller (trainer/spec_model.c translates a job spec). */
struct model_desc {
    struct shape input; /* per sample */
    int n_layers;
    struct model_layer layer[MODEL_MAX_NODES];
    enum net_loss loss;
    enum net_output output;
    float label_smoothing; /* cross-entropy (loss.h) */
};

struct model_node {
    struct op_node op; /* op, fields, input and output shapes */
    char name[MODEL_NODE_NAME];
    int in[OP_MAX_INPUTS];     /* node indices or MODEL_INPUT */
    size_t param_off, n_param; /* floats in params/grads */
    size_t state_off, n_state; /* floats in state */
    size_t out_off;            /* floats into acts, for max_batch samples */
    size_t grad_off;           /* floats into dacts: shared with gradients not live at once */
    size_t saved_off;          /* floats into saved, for max_batch samples */
    int consumers;             /* nodes that read this output */
};

/* Sizes of a model for B samples, without building it (model_check). */
struct model_sizes {
    size_t n_params;       /* P floats: params, grads, each optimizer moment */
    size_t n_state;        /* floats of saved, not optimized state */
    size_t act_floats;     /* activations and their gradients, saved, one thread's scratch,
                              partials, head */
    size_t scratch_floats; /* one thread's scratch (in act_floats): each more thread adds it */
    int outputs;           /* K: the last node's features (per step) */
    int steps;             /* T of a last node (T, K) (per-step logits), else 1 */
    size_t inputs;         /* D: floats of one sample's input */
};

struct model {
    int n_nodes;
    struct model_node *node; /* (n_nodes), owned */
    struct tensor_table tensors;
    struct shape input;
    int K;     /* outputs per step */
    int steps; /* T of per-step outputs (T, K): the head sees B T rows; else 1 */
    enum net_loss loss;
    enum net_output output;
    float label_smoothing;
    size_t n_params;
    float *params; /* (P) */
    float *grads;  /* (P) */
    size_t n_state;
    float *state; /* (n_state) */

    int max_batch;
    float *acts;               /* node outputs, each (max_batch, out) at out_off */
    float *dacts;              /* their gradients, each at grad_off while it is live */
    float *saved;              /* each node's forward-to-backward buffer */
    float *scratch;            /* shared by all nodes, the largest need, per thread */
    size_t scratch_stride;     /* floats of one thread's scratch */
    float *partials;           /* backward's per-slice sums, shared by all nodes */
    float *tmp[OP_MAX_INPUTS]; /* a second consumer's input gradient, then added */
    float *probs;              /* (B, K) what the last forward predicts (loss_outputs) */
    bool training;             /* the mode of the last forward, which backward repeats */

    struct net *net;   /* the dense fast path, or NULL */
    struct team *team; /* the layer ops' threads (model_set_threads), or NULL */
    int n_threads;
};

/* Infers every node's shapes and sizes for batches of up to B samples
 * without allocating the model (validation, memory estimates). Returns 0
 * or -EINVAL with err naming the layer by index and type and giving the
 * shapes ("layer 3 (maxpool): kernel 3 is larger than the padded input
 * (32, 2, 2)"), or -ENOMEM. sizes may be NULL. */
int model_check(const struct model_desc *d, int B, struct model_sizes *sizes, char *err,
                size_t errlen);

/* Builds the model (params zero; model_init draws them). Returns 0,
 * -EINVAL (err says why) or -ENOMEM. */
int model_create(struct model *m, const struct model_desc *d, char *err, size_t errlen);
void model_destroy(struct model *m);
/* Makes room for batches of up to B samples. Returns 0, -EINVAL or -ENOMEM. */
int model_reserve(struct model *m, int B);

/* Runs the model on n threads, the caller included (1: the caller alone);
 * the ops split their work over them (op.h), each thread calling
 * single-threaded BLAS. Any n gives the same bits. Returns 0, -EINVAL,
 * -ENOMEM or -EAGAIN (no thread started: the model goes on with one). */
int model_set_threads(struct model *m, int n);
int model_threads(const struct model *m);
/* A task in the background on one of the model's threads (reading the
 * next batch) while the caller trains; team_task_start's semantics. */
int model_task_start(struct model *m, void (*fn)(void *ctx), void *ctx);
void model_task_wait(struct model *m);

/* PyTorch's default initialisation of every node, in node order, from r. */
void model_init(struct model *m, struct rng *r);

/* Forward pass of B samples x (B, input). training selects batch norm's
 * batch statistics and dropout (which draws from r; r may be NULL when not
 * training). Predictions land in m->probs. */
void model_forward(struct model *m, const float *x, int B, bool training, struct rng *r);
/* A last node of shape (T, K) (per-step logits, next-token prediction)
 * gives the head B T rows of K: y_class (B, T), y (B, T K), the loss the
 * mean over all B T (nn.CrossEntropyLoss on the flattened logits),
 * model_correct counts positions. */
/* Mean data loss of the last forward (loss_value's conventions). */
double model_loss(const struct model *m, const int32_t *y_class, const float *y, int B);
/* Backward of the last forward: accumulates (+=) d(mean loss)/d params into
 * m->grads; zeroing is model_zero_grad's. */
void model_backward(struct model *m, const float *x, const int32_t *y_class, const float *y, int B);
void model_zero_grad(struct model *m);
/* L1 and L2 penalties on the weights of dense and conv layers (tensors
 * named "weight" with two or more dimensions; biases and batch norm's
 * scale excluded): returns l1 sum|w| + l2/2 sum w^2 and adds their
 * gradient to m->grads (net_penalty for a dense stack). */
double model_penalty(struct model *m, double l1, double l2);
int model_correct(const struct model *m, const int32_t *y_class, int B);
/* The last node's output z (B, K) of the last forward. */
const float *model_logits(const struct model *m);

#endif
