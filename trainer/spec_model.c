#include "spec_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "proto.h"

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
    cfg->label_smoothing = (float)spec->label_smoothing;
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

struct shape spec_model_dataset_shape(int x_rank, const int64_t *x_dims)
{
    struct shape sh = {0, {0}};
    if (x_rank == 2) sh = (struct shape){1, {(int)x_dims[1]}};
    if (x_rank == 3) sh = (struct shape){3, {1, (int)x_dims[1], (int)x_dims[2]}};
    if (x_rank == 4) sh = (struct shape){3, {(int)x_dims[1], (int)x_dims[2], (int)x_dims[3]}};
    return sh;
}

static const char *const act_types[] = {"relu", "sigmoid", "tanh", "leaky_relu"};

static int add_layer(struct model_desc *d, const char *type, const char *name, char *err,
                     size_t errlen)
{
    if (d->n_layers >= MODEL_MAX_NODES)
        return errmsg(err, errlen, -EINVAL, "model.layers: more than %d layers", MODEL_MAX_NODES);
    struct model_layer *l = &d->layer[d->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->type, sizeof l->type, "%s", type);
    snprintf(l->name, sizeof l->name, "%s", name);
    op_attrs_defaults(&l->a);
    return 0;
}

/* The spec layers [*at, end) as nodes reading node `input`; names are
 * prefix + the index in this list, as nested nn.Sequential's state_dict
 * keys ("3.branch.0"). *out receives the last node. */
static int emit_list(const struct mlq_spec *s, int *at, int end, int input, const char *prefix,
                     struct model_desc *d, int *out, char *err, size_t errlen)
{
    int rc;
    for (int idx = 0; *at < end; idx++) {
        const struct spec_layer *l = &s->node[(*at)++];
        char name[MODEL_NODE_NAME];
        int n = snprintf(name, sizeof name, "%s%d", prefix, idx);
        if (n < 0 || n >= (int)sizeof name)
            return errmsg(err, errlen, -EINVAL, "model.layers: blocks nested too deeply");
        if (strcmp(l->type, "residual") == 0) {
            char sub[MODEL_NODE_NAME + 16];
            int branch_end = *at + l->branch_span, block_end = *at + l->span;
            int branch_out, shortcut_out = input;
            snprintf(sub, sizeof sub, "%s.branch.", name);
            if ((rc = emit_list(s, at, branch_end, input, sub, d, &branch_out, err, errlen)))
                return rc;
            if (block_end > branch_end) {
                snprintf(sub, sizeof sub, "%s.shortcut.", name);
                if ((rc = emit_list(s, at, block_end, input, sub, d, &shortcut_out, err, errlen)))
                    return rc;
            }
            if ((rc = add_layer(d, "add", name, err, errlen))) return rc;
            struct model_layer *add = &d->layer[d->n_layers - 1];
            add->n_in = 2;
            add->in[0] = branch_out;
            add->in[1] = shortcut_out;
            input = d->n_layers - 1;
            continue;
        }
        const struct op_def *op = op_find(l->type);
        if (!op || op->n_inputs != 1)
            return errmsg(err, errlen, -EINVAL, "layer %s: unknown type \"%s\"", name, l->type);
        for (int f = 0; f < SPEC_N_LAYER_FIELDS; f++) {
            if (!(l->given & (1u << f))) continue;
            bool known = false;
            for (const char *const *k = op->fields; k && *k; k++)
                known = known || strcmp(*k, spec_layer_field_names[f]) == 0;
            if (!known)
                return errmsg(err, errlen, -EINVAL, "layer %s (%s): unknown field %s", name,
                              l->type, spec_layer_field_names[f]);
        }
        if ((rc = add_layer(d, l->type, name, err, errlen))) return rc;
        struct model_layer *m = &d->layer[d->n_layers - 1];
        m->a.out = l->out;
        m->a.kernel = l->kernel;
        m->a.stride = l->stride < 0 ? OP_UNSET : l->stride;
        m->a.padding = l->padding;
        m->a.bias = l->bias;
        m->a.p = (float)l->p;
        m->a.negative_slope = (float)l->negative_slope;
        m->a.momentum = (float)l->momentum;
        m->a.eps = (float)l->eps;
        m->a.approximate = l->approximate;
        m->a.vocab = l->vocab;
        m->a.num_layers = l->num_layers;
        m->a.sequence = l->sequence;
        m->a.heads = l->heads;
        m->a.causal = l->causal;
        if (input != d->n_layers - 2) {
            m->n_in = 1;
            m->in[0] = input;
        }
        input = d->n_layers - 1;
    }
    *out = input;
    return 0;
}

int spec_model_desc(const struct mlq_spec *s, const struct shape *data, struct model_desc *d,
                    char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->loss = s->loss == LOSS_MSE ? NET_LOSS_MSE : NET_LOSS_CROSS_ENTROPY;
    d->label_smoothing = (float)s->label_smoothing;
    d->output = output_of(s->output);
    int rc;
    if (!s->typed) {
        d->input = (struct shape){1, {s->layers[0]}};
        char name[16];
        for (int l = 0; l < s->n_layers; l++) {
            snprintf(name, sizeof name, "%d", 2 * l);
            if ((rc = add_layer(d, "dense", name, err, errlen))) return rc;
            d->layer[d->n_layers - 1].a.out = s->layers[l + 1];
            if (l == s->n_layers - 1) break;
            snprintf(name, sizeof name, "%d", 2 * l + 1);
            if ((rc = add_layer(d, act_types[s->activation], name, err, errlen))) return rc;
            d->layer[d->n_layers - 1].a.negative_slope = (float)s->leaky_slope;
        }
        return 0;
    }
    if (s->input_rank == 1) d->input = (struct shape){1, {s->input[0]}};
    if (s->input_rank == 2) d->input = (struct shape){2, {s->input[0], s->input[1]}};
    if (s->input_rank == 3) d->input = (struct shape){3, {s->input[0], s->input[1], s->input[2]}};
    int at = 0, out;
    if ((rc = emit_list(s, &at, s->n_nodes, MODEL_INPUT, "", d, &out, err, errlen))) return rc;
    if (s->input_rank && data && data->n) {
        char a[SHAPE_STR_MAX], b[SHAPE_STR_MAX];
        /* (N, H, W, 1) and (N, 1, H, W) hold the same floats in the same order. */
        bool same = shape_equal(&d->input, data) ||
                    (data->n == 3 && d->input.n == 3 && data->d[2] == 1 && d->input.d[0] == 1 &&
                     d->input.d[1] == data->d[0] && d->input.d[2] == data->d[1]);
        /* Rows of D floats are read as any shape of D elements, row-major;
         * one-channel images (1, H, W) as sequences (H, W), row by row. */
        bool flat = (d->input.n == 1 || data->n == 1) && shape_size(&d->input) == shape_size(data);
        bool rows = d->input.n == 2 && data->n == 3 && data->d[0] == 1 &&
                    d->input.d[0] == data->d[1] && d->input.d[1] == data->d[2];
        flat = flat || rows;
        if (!same && !flat)
            return errmsg(err, errlen, -EINVAL,
                          "model.input %s does not match the dataset's samples %s (4-D data is "
                          "read as (N, C, H, W))",
                          shape_str(&d->input, a, sizeof a), shape_str(data, b, sizeof b));
    }
    if (!s->input_rank && data) d->input = *data;
    if (!d->input.n) return errmsg(err, errlen, -EINVAL, "input shape unknown");
    return 0;
}

int spec_model_create(struct model *m, const struct mlq_spec *spec, const struct shape *data,
                      char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    struct model_desc *d = malloc(sizeof *d);
    if (!d) return errmsg(err, errlen, -ENOMEM, "out of memory");
    int rc = spec_model_desc(spec, data, d, err, errlen);
    if (!rc) rc = model_create(m, d, err, errlen);
    if (rc == -ENOMEM) errmsg(err, errlen, rc, "out of memory");
    free(d);
    return rc;
}

int64_t spec_model_checkpoint_bytes(const struct mlq_spec *spec, const struct model_sizes *sz)
{
    struct optim_config oc;
    spec_model_optim_config(&spec->optimizer, &oc);
    int64_t floats = (int64_t)sz->n_params * (1 + optim_buffers(&oc)) + (int64_t)sz->n_state;
    /* The header: the spec text (bounded by the JSON frame) and the
     * tensor table (a name and a shape per tensor). */
    return 4 * floats + PROTO_MAX_JSON + 4096;
}

int spec_model_check(const struct mlq_spec *s, const struct shape *data, int batch,
                     struct model_sizes *sizes, bool *checked, char *err, size_t errlen)
{
    if (checked) *checked = false;
    if (s->kind != JOB_TRAIN) return 0;
    struct model_desc *d = malloc(sizeof *d);
    if (!d) return errmsg(err, errlen, -ENOMEM, "out of memory");
    char why[512];
    int rc = spec_model_desc(s, data, d, why, sizeof why);
    if (rc && d->input.n == 0 && strcmp(why, "input shape unknown") == 0) {
        /* Typed layers without model.input: the trainer checks the shapes
         * once it has opened the dataset. */
        free(d);
        return 0;
    }
    if (rc) {
        free(d);
        return errmsg(err, errlen, rc, "model: %s", why);
    }
    if ((s->augment.crop || s->augment.flip) && d->input.n != 3) {
        char sh[SHAPE_STR_MAX];
        shape_str(&d->input, sh, sizeof sh);
        free(d);
        return errmsg(err, errlen, -EINVAL,
                      "augment: crops and flips need image samples (channels, height, width); "
                      "the model's input is %s%s",
                      sh, s->typed ? "" : " (a list of widths is a dense stack on flat samples)");
    }
    struct model_sizes sz;
    rc = model_check(d, batch > 0 ? batch : 1, &sz, why, sizeof why);
    free(d);
    if (rc) return errmsg(err, errlen, rc, "model: %s", why);
    if ((int64_t)sz.n_params > SPEC_MAX_PARAMS)
        return errmsg(err, errlen, -EINVAL,
                      "model: %lld parameters is more than the %lld a trainer accepts",
                      (long long)sz.n_params, (long long)SPEC_MAX_PARAMS);
    if (s->loss == LOSS_CROSS_ENTROPY && sz.outputs < 2)
        return errmsg(err, errlen, -EINVAL,
                      "model: cross_entropy needs at least 2 outputs (classes), the last layer "
                      "gives %d",
                      sz.outputs);
    int64_t bytes = spec_model_checkpoint_bytes(s, &sz);
    if (bytes > PROTO_MAX_MSG)
        return errmsg(err, errlen, -EINVAL,
                      "model: its checkpoint (%lld parameters with %s's state) would take %lld "
                      "MiB, more than the %lld MiB of one protocol message",
                      (long long)sz.n_params, spec_optim_name(s->optimizer.name),
                      (long long)(bytes >> 20), (long long)(PROTO_MAX_MSG >> 20));
    if (sizes) *sizes = sz;
    if (checked) *checked = true;
    return 0;
}

static void put(char *buf, size_t len, size_t *at, const char *fmt, const char *word, int n)
{
    if (*at >= len) return;
    int k = snprintf(buf + *at, len - *at, fmt, word, n);
    if (k > 0) *at += (size_t)k;
}

static void describe_list(const struct mlq_spec *s, int *i, int end, char *buf, size_t len,
                          size_t *at)
{
    while (*i < end) {
        const struct spec_layer *l = &s->node[(*i)++];
        bool first = *at == 0 || buf[*at - 1] == '(' || buf[*at - 1] == '|';
        if (strcmp(l->type, "residual") == 0) {
            put(buf, len, at, first ? "%sres(" : "-%sres(", "", 0);
            describe_list(s, i, *i + l->branch_span, buf, len, at);
            if (l->span > l->branch_span) {
                put(buf, len, at, "%s|", "", 0);
                describe_list(s, i, *i + l->span - l->branch_span, buf, len, at);
            }
            put(buf, len, at, "%s)", "", 0);
            continue;
        }
        const struct op_def *op = op_find(l->type);
        const char *word = op ? op->abbrev : l->type;
        if (!word) continue;
        bool has_out = l->given & (1u << SPEC_F_OUT);
        put(buf, len, at, first ? (has_out ? "%s%d" : "%s") : (has_out ? "-%s%d" : "-%s"), word,
            l->out);
    }
}

const char *spec_model_describe(const struct mlq_spec *s, char *buf, size_t len)
{
    size_t at = 0;
    if (len) buf[0] = '\0';
    if (!s->typed) {
        for (int l = 0; l <= s->n_layers; l++)
            put(buf, len, &at, l ? "%s-%d" : "%s%d", "", s->layers[l]);
        return buf;
    }
    int i = 0;
    describe_list(s, &i, s->n_nodes, buf, len, &at);
    return buf;
}
