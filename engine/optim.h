/* Optimizers over the whole parameter buffer, one flat loop each, with
 * torch.optim's update rules and defaults. State (moments, step count) lives
 * in contiguous buffers so that a checkpoint saves it in one piece. */
#ifndef MLQ_OPTIM_H
#define MLQ_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum optim_rule { OPTIM_GD, OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW, OPTIM_RMSPROP, OPTIM_ADAGRAD };

/* torch.optim's hyperparameters, named as PyTorch names them. */
struct optim_config {
    enum optim_rule rule;
    double lr;
    double momentum;  /* sgd, rmsprop */
    double dampening; /* sgd */
    bool nesterov;    /* sgd */
    double beta1, beta2, eps;
    bool amsgrad;               /* adam, adamw: the maximum of the second moments */
    bool centered;              /* rmsprop: the square average less the squared mean */
    double weight_decay;        /* added to the gradient; decoupled for adamw */
    double alpha;               /* rmsprop smoothing */
    double lr_decay;            /* adagrad */
    double initial_accumulator; /* adagrad */
};

struct optim {
    struct optim_config cfg;
    size_t n;                /* parameters */
    int64_t step;            /* steps taken, Adam's t */
    float *m;                /* (n) momentum buffer / first moment / square average, or NULL */
    float *v;                /* (n) second moment / accumulator, or NULL */
    float *w;                /* (n) amsgrad: max second moment / centered: mean gradient */
    int has_momentum_buffer; /* sgd: torch creates it lazily on the first step */
};

int optim_create(struct optim *opt, const struct optim_config *cfg, size_t n);
void optim_destroy(struct optim *opt);
/* One step: params -= update(grads). lr is the learning rate in force. */
void optim_step(struct optim *opt, float *params, const float *grads, double lr);
/* How many buffers of n floats (0 to 3) the rule keeps: what a checkpoint
 * of n parameters holds besides them, known before anything is allocated. */
int optim_buffers(const struct optim_config *cfg);
/* Floats of state that a checkpoint must save: m, v and w, each n or 0, in
 * that order (optim_state_buffers). */
size_t optim_state_floats(const struct optim *opt);
/* The state buffers present, in checkpoint order: m, v, w without the NULLs.
 * Returns how many (at most 3). */
int optim_state_buffers(const struct optim *opt, float *bufs[3]);

#endif
