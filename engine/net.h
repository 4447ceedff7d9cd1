/* The network: a stack of dense layers over one contiguous parameter buffer.
 *
 * Dimensions, named once: B = batch rows, I = inputs of a layer, O = outputs
 * of a layer, K = outputs of the network (classes or targets), P = number of
 * parameters. Row-major everywhere.
 *
 * Layout of params (and, identically, of grads): for each layer l in order,
 * weight (O_l, I_l) then bias (O_l), exactly nn.Linear's weight and bias. */
#ifndef MLQ_NET_H
#define MLQ_NET_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define NET_MAX_LAYERS 32 /* dense layers; a net_config holds one more size */

enum net_activation { NET_ACT_RELU, NET_ACT_SIGMOID, NET_ACT_TANH, NET_ACT_LEAKY_RELU };
/* What the last layer emits. LOGITS and SOFTMAX train identically with
 * cross-entropy (the loss is fused); they differ in what a caller reports. */
enum net_output { NET_OUT_LOGITS, NET_OUT_SOFTMAX, NET_OUT_SIGMOID, NET_OUT_LINEAR };
enum net_loss { NET_LOSS_CROSS_ENTROPY, NET_LOSS_MSE };

/* What net_create builds: the engine's own description of a dense stack,
 * filled by the caller (trainer/spec_model.c translates a job spec). */
struct net_config {
    int n_layers;                   /* dense layers, 1..NET_MAX_LAYERS */
    int sizes[NET_MAX_LAYERS + 1];  /* widths, inputs first */
    enum net_activation activation; /* hidden layers */
    float leaky_slope;
    enum net_output output;
    enum net_loss loss;
    float label_smoothing; /* cross-entropy (loss.h) */
};

struct net_layer {
    int in, out;
    float *w;  /* (out, in), view into net.params */
    float *b;  /* (out) */
    float *dw; /* (out, in), view into net.grads */
    float *db; /* (out) */
};

#define NET_MAX_THREADS 16 /* TEAM_MAX_THREADS */
struct team;

struct net {
    int n_layers;
    struct net_layer layer[NET_MAX_LAYERS];
    enum net_activation activation;
    float leaky_slope;
    enum net_output output;
    enum net_loss loss;
    float label_smoothing;
    size_t n_params; /* P */
    float *params;   /* (P) */
    float *grads;    /* (P) */

    /* Activations for up to max_batch rows, allocated by net_reserve. */
    int max_batch;
    float *acts;  /* per layer l: pre-activation z_l (B, O_l), then post a_l (B, O_l) */
    float *dacts; /* scratch for backward: two (B, max O) buffers */
    float *probs; /* (B, K) softmax / output values of the last forward */

    /* Threads that share each layer's work (net_set_threads); 1 by default. */
    int n_threads;
    struct team *team; /* NULL for one thread */
};

/* Allocates the buffers for cfg's layers. Returns 0, -EINVAL (a layer count
 * or width out of range) or -ENOMEM. */
int net_create(struct net *net, const struct net_config *cfg);
void net_destroy(struct net *net); /* also stops the threads */
/* Makes room for batches of up to B rows. Returns 0 or -ENOMEM. */
int net_reserve(struct net *net, int B);

/* nn.Linear's default init: w and b ~ U(-1/sqrt(in), 1/sqrt(in)), drawn
 * from r layer by layer, weight before bias, row-major. */
void net_init(struct net *net, struct rng *r);

/* Forward pass of B rows of x (B, I_0). Output values (softmax probabilities
 * for cross-entropy, else the output activation) land in net->probs. */
void net_forward(struct net *net, const float *x, int B);

/* Mean loss over the B rows of the last forward. Targets: y_class (B) class
 * ids for cross-entropy, y (B, K) floats for mse; the other is NULL.
 * Returns the data loss (without penalties). */
double net_loss(const struct net *net, const int32_t *y_class, const float *y, int B);

/* Backward pass for the last forward: accumulates (+=) d(mean loss)/d params
 * into net->grads. Zeroing is the caller's, with net_zero_grad. */
void net_backward(struct net *net, const float *x, const int32_t *y_class, const float *y, int B);
void net_zero_grad(struct net *net);
/* As net_zero_grad then net_backward, in one pass: stores (=) the gradient. */
void net_backward_set(struct net *net, const float *x, const int32_t *y_class, const float *y,
                      int B);
/* Plain SGD fused into backward: params -= lr * d(mean loss)/d params, the
 * step of net_backward_set then optim_step (sgd, no momentum, no weight
 * decay) without a gradient buffer or a separate pass over the parameters.
 * At B == 1 the result is bit for bit that of the two calls; at B > 1 the
 * weights' step is folded into the gemm (w += -lr dz^T x), which rounds
 * differently in the last bit (biases still match). Deterministic either
 * way. net->grads is scratch and holds no gradient afterwards. */
void net_backward_sgd(struct net *net, const float *x, const int32_t *y_class, const float *y,
                      int B, float lr);

/* Shares the work of each large enough layer among n threads (a team of
 * n - 1 workers, engine/team.h, started here and stopped by the next call
 * or net_destroy), each calling BLAS: set OpenBLAS to one thread while
 * n > 1. Layers are cut into column slices, fixed by the layer, the batch
 * and n, with no reduction across slices; slices are claimed by whichever
 * thread is running, so a descheduled worker does not stall a layer. The
 * same n gives the same bits run after run; another n may round a sum
 * differently (OpenBLAS orders a slice's sums by its size). Returns 0,
 * -EINVAL (n outside 1..NET_MAX_THREADS), -ENOMEM or -EAGAIN (no thread
 * could start; n is 1 then). */
int net_set_threads(struct net *net, int n);

/* Runs fn(ctx) in the background on a worker of the net's threads, e.g. to
 * read the next batch while the caller computes on this one; the worker
 * takes it when it has no layer work, and the caller still splits layers
 * meanwhile (taking the worker's share). One task at a time: net_task_wait
 * returns when it is done (running it on the caller if no worker took it).
 * Without threads fn runs at once. Returns 0 or -EBUSY. */
int net_task_start(struct net *net, void (*fn)(void *ctx), void *ctx);
void net_task_wait(struct net *net);

/* L1 and L2 penalties on weights (biases excluded): returns
 * l1*sum|w| + l2/2*sum w^2 and adds their gradient to net->grads. */
double net_penalty(struct net *net, double l1, double l2);

/* The last layer's z (B, K) of the last forward: the logits. */
const float *net_logits(const struct net *net);

/* Number of rows of the last forward whose arg max equals y_class. */
int net_correct(const struct net *net, const int32_t *y_class, int B);

#endif
