#include "spec_model.h"

#include <string.h>

static enum net_activation activation_of(enum activation a)
{
    switch (a) {
    case ACT_SIGMOID:
        return NET_ACT_SIGMOID;
    case ACT_TANH:
        return NET_ACT_TANH;
    case ACT_LEAKY_RELU:
        return NET_ACT_LEAKY_RELU;
    case ACT_RELU:
        break;
    }
    return NET_ACT_RELU;
}

static enum net_output output_of(enum output_kind o)
{
    switch (o) {
    case OUT_SOFTMAX:
        return NET_OUT_SOFTMAX;
    case OUT_SIGMOID:
        return NET_OUT_SIGMOID;
    case OUT_LINEAR:
        return NET_OUT_LINEAR;
    case OUT_LOGITS:
        break;
    }
    return NET_OUT_LOGITS;
}

static enum optim_rule rule_of(enum optim_kind k)
{
    switch (k) {
    case OPT_GD:
        return OPTIM_GD;
    case OPT_ADAM:
        return OPTIM_ADAM;
    case OPT_ADAMW:
        return OPTIM_ADAMW;
    case OPT_RMSPROP:
        return OPTIM_RMSPROP;
    case OPT_ADAGRAD:
        return OPTIM_ADAGRAD;
    case OPT_SGD:
        break;
    }
    return OPTIM_SGD;
}

void spec_model_net_config(const struct mlq_spec *spec, struct net_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    /* spec_validate keeps n_layers within SPEC_MAX_LAYERS == NET_MAX_LAYERS;
     * a hand-made spec beyond it gets net_create's -EINVAL. */
    _Static_assert(SPEC_MAX_LAYERS <= NET_MAX_LAYERS, "a valid spec fits a net_config");
    cfg->n_layers = spec->n_layers;
    int n = spec->n_layers < 0                ? 0
            : spec->n_layers > NET_MAX_LAYERS ? NET_MAX_LAYERS
                                              : spec->n_layers;
    for (int l = 0; l <= n; l++)
        cfg->sizes[l] = spec->layers[l];
    cfg->activation = activation_of(spec->activation);
    cfg->leaky_slope = (float)spec->leaky_slope;
    cfg->output = output_of(spec->output);
    cfg->loss = spec->loss == LOSS_MSE ? NET_LOSS_MSE : NET_LOSS_CROSS_ENTROPY;
}

void spec_model_optim_config(const struct spec_optimizer *o, struct optim_config *cfg)
{
    *cfg = (struct optim_config){
        .rule = rule_of(o->name),
        .lr = o->lr,
        .momentum = o->momentum,
        .dampening = o->dampening,
        .nesterov = o->nesterov,
        .beta1 = o->beta1,
        .beta2 = o->beta2,
        .eps = o->eps,
        .amsgrad = o->amsgrad,
        .centered = o->centered,
        .weight_decay = o->weight_decay,
        .alpha = o->alpha,
        .lr_decay = o->lr_decay,
        .initial_accumulator = o->initial_accumulator,
    };
}

int spec_model_net_create(struct net *net, const struct mlq_spec *spec)
{
    struct net_config cfg;
    spec_model_net_config(spec, &cfg);
    return net_create(net, &cfg);
}

int spec_model_optim_create(struct optim *opt, const struct spec_optimizer *o, size_t n)
{
    struct optim_config cfg;
    spec_model_optim_config(o, &cfg);
    return optim_create(opt, &cfg, n);
}
