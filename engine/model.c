/* The model: nodes in order over the arenas of model.h.
 *
 * Dimensions: B = samples, K = outputs of the last node, P = parameters. */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "team.h"

static const char *const stack_acts[] = {"relu", "sigmoid", "tanh", "leaky_relu"};
static const enum net_activation stack_act_kind[] = {NET_ACT_RELU, NET_ACT_SIGMOID, NET_ACT_TANH,
                                                     NET_ACT_LEAKY_RELU};

static int default_input(int i, int n_in)
{
    (void)n_in;
    return i == 0 ? MODEL_INPUT : i - 1;
}

/* A stack of dense layers with bias and one hidden activation between each
 * pair, nothing else: struct net runs it. Fills cfg when it is one. */
static bool dense_stack(const struct model_desc *d, struct net_config *cfg)
{
    if (d->input.n != 1 || d->n_layers % 2 == 0 || d->n_layers / 2 + 1 > NET_MAX_LAYERS)
        return false;
    memset(cfg, 0, sizeof *cfg);
    cfg->sizes[0] = d->input.d[0];
    int act = -1;
    for (int i = 0; i < d->n_layers; i++) {
        const struct model_layer *l = &d->layer[i];
        if (l->n_in > 1 || (l->n_in == 1 && l->in[0] != default_input(i, 1))) return false;
        if (l->name[0]) {
            char idx[16];
            snprintf(idx, sizeof idx, "%d", i);
            if (strcmp(idx, l->name) != 0) return false;
        }
        if (i % 2 == 0) {
            if (strcmp(l->type, "dense") != 0 || !l->a.bias || l->a.out < 1) return false;
            cfg->sizes[i / 2 + 1] = l->a.out;
            continue;
        }
        int k = -1;
        for (int j = 0; j < (int)(sizeof stack_acts / sizeof *stack_acts); j++)
            if (strcmp(l->type, stack_acts[j]) == 0) k = j;
        if (k < 0 || (act >= 0 && k != act)) return false;
        if (stack_act_kind[k] == NET_ACT_LEAKY_RELU && act >= 0 &&
            l->a.negative_slope != cfg->leaky_slope)
            return false;
        act = k;
        cfg->leaky_slope = l->a.negative_slope;
    }
    cfg->n_layers = d->n_layers / 2 + 1;
    cfg->activation = act < 0 ? NET_ACT_RELU : stack_act_kind[act];
    if (act < 0) cfg->leaky_slope = 0.01f;
    cfg->loss = d->loss;
    cfg->label_smoothing = d->label_smoothing;
    cfg->output = d->output;
    return true;
}

static void node_name(const struct model_desc *d, int i, char *buf, size_t len)
{
    if (d->layer[i].name[0])
        snprintf(buf, len, "%s", d->layer[i].name);
    else
        snprintf(buf, len, "%d", i);
}

/* Shapes, tensors and per-node sizes of every node; the arenas' offsets are
 * model_reserve's. */
static int plan(const struct model_desc *d, struct model_node *nodes, struct tensor_table *tt,
                char *err, size_t errlen)
{
    char s[SHAPE_STR_MAX];
    if (d->n_layers < 1 || d->n_layers > MODEL_MAX_NODES)
        return op_err(err, errlen, "a model has 1 to %d layers, got %d", MODEL_MAX_NODES,
                      d->n_layers);
    if (d->input.n < 1 || d->input.n > OP_MAX_DIMS)
        return op_err(err, errlen, "the model's input must have 1 to %d dimensions", OP_MAX_DIMS);
    for (int k = 0; k < d->input.n; k++)
        if (d->input.d[k] < 1)
            return op_err(err, errlen, "the model's input shape %s has an empty dimension",
                          shape_str(&d->input, s, sizeof s));
    for (int i = 0; i < d->n_layers; i++) {
        const struct model_layer *l = &d->layer[i];
        struct model_node *n = &nodes[i];
        memset(n, 0, sizeof *n);
        node_name(d, i, n->name, sizeof n->name);
        const char *nm = n->name;
        const struct op_def *op = op_find(l->type);
        if (!op) return op_err(err, errlen, "layer %s: unknown type \"%s\"", nm, l->type);
        n->op.op = op;
        n->op.a = l->a;
        n->op.n_in = l->n_in ? l->n_in : 1;
        if (n->op.n_in != op->n_inputs)
            return op_err(err, errlen, "layer %s (%s): takes %d input%s, got %d", nm, op->type,
                          op->n_inputs, op->n_inputs == 1 ? "" : "s", n->op.n_in);
        for (int j = 0; j < n->op.n_in; j++) {
            int src = l->n_in ? l->in[j] : default_input(i, 1);
            if (src < MODEL_INPUT || src >= i)
                return op_err(err, errlen, "layer %s (%s): input %d is not an earlier layer", nm,
                              op->type, src);
            n->in[j] = src;
            n->op.in[j] = src == MODEL_INPUT ? d->input : nodes[src].op.out;
            if (src != MODEL_INPUT) nodes[src].consumers++;
        }
        char why[256];
        if (op->infer(&n->op.a, n->op.in, &n->op.out, why, sizeof why))
            return op_err(err, errlen, "layer %s (%s): %s", nm, op->type, why);
        if (shape_size(&n->op.out) < 1)
            return op_err(err, errlen, "layer %s (%s): empty output %s", nm, op->type,
                          shape_str(&n->op.out, s, sizeof s));
        n->param_off = tt->n_params;
        n->state_off = tt->n_state;
        if (op->tensors) {
            struct op_tensor t[OP_MAX_TENSORS];
            int nt = op->tensors(&n->op, t);
            for (int k = 0; k < nt; k++) {
                int rc = tensor_table_add(tt, n->name, &t[k], i);
                if (rc == -ENAMETOOLONG)
                    return op_err(err, errlen, "layer %s (%s): tensor name %s.%s is too long", nm,
                                  op->type, nm, t[k].name);
                if (rc) return rc;
            }
        }
        n->n_param = tt->n_params - n->param_off;
        n->n_state = tt->n_state - n->state_off;
    }
    const struct shape *out = &nodes[d->n_layers - 1].op.out;
    if (out->n != 1 && out->n != 2)
        return op_err(err, errlen,
                      "layer %s (%s): the last layer's output must be flat (K) or per step (T, "
                      "K), got %s: add a flatten and a dense layer",
                      nodes[d->n_layers - 1].name, nodes[d->n_layers - 1].op.op->type,
                      shape_str(out, s, sizeof s));
    return 0;
}

/* Arena offsets for B samples; returns the floats of each arena. */
struct arena_sizes {
    size_t acts, dacts, saved, scratch, partials, tmp;
};

/* Output gradients share memory. Node j's gradient is live from the
 * backward of its last consumer (which stores it; the loss, for the last
 * node) to its own backward (which reads it); backward runs nodes in
 * reverse, so at step t = n - 1 - i it runs node i. Two gradients live at
 * the same step get disjoint floats; the rest are placed first fit, the
 * largest first. A chain needs two buffers instead of one per node. */
static size_t layout_grads(struct model_node *nodes, int n_nodes, int B)
{
    int first[MODEL_MAX_NODES], last[MODEL_MAX_NODES], order[MODEL_MAX_NODES];
    size_t size[MODEL_MAX_NODES];
    for (int j = 0; j < n_nodes; j++) {
        /* The last consumer; the node itself when none (the last node,
         * whose gradient the loss stores just before its backward, or a
         * node that does not reach the loss: one step). */
        int k_max = j;
        for (int k = j + 1; k < n_nodes; k++)
            for (int i = 0; i < nodes[k].op.n_in; i++)
                if (nodes[k].in[i] == j) k_max = k;
        first[j] = n_nodes - 1 - k_max;
        last[j] = n_nodes - 1 - j;
        size[j] = (size_t)B * shape_size(&nodes[j].op.out);
        order[j] = j;
    }
    for (int a = 1; a < n_nodes; a++) /* insertion sort, largest first */
        for (int b = a; b > 0 && size[order[b]] > size[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    size_t total = 0;
    for (int a = 0; a < n_nodes; a++) {
        int j = order[a];
        size_t off = 0;
        for (bool moved = true; moved;) {
            moved = false;
            for (int b = 0; b < a; b++) {
                int k = order[b];
                bool overlap_t = first[j] <= last[k] && first[k] <= last[j];
                bool overlap_m =
                    off < nodes[k].grad_off + size[k] && nodes[k].grad_off < off + size[j];
                if (overlap_t && overlap_m) {
                    off = nodes[k].grad_off + size[k];
                    moved = true;
                }
            }
        }
        nodes[j].grad_off = off;
        if (off + size[j] > total) total = off + size[j];
    }
    return total;
}

static struct arena_sizes layout(struct model_node *nodes, int n_nodes, int B)
{
    struct arena_sizes a = {0};
    for (int i = 0; i < n_nodes; i++) {
        struct model_node *n = &nodes[i];
        const struct op_def *op = n->op.op;
        n->out_off = a.acts;
        a.acts += (size_t)B * shape_size(&n->op.out);
        n->saved_off = a.saved;
        if (op->saved) a.saved += op->saved(&n->op, B);
        size_t sc = op->scratch ? op->scratch(&n->op, B) : 0;
        if (sc > a.scratch) a.scratch = sc;
        size_t pa = op->partials ? op->partials(&n->op, B) : 0;
        if (pa > a.partials) a.partials = pa;
        for (int j = 0; j < n->op.n_in; j++) {
            size_t t = (size_t)B * shape_size(&n->op.in[j]);
            if (t > a.tmp) a.tmp = t;
        }
    }
    a.dacts = layout_grads(nodes, n_nodes, B);
    return a;
}

/* A dense stack's layers without its activations: they have no tensors,
 * keep the shape, and struct net runs them, so the table is that of the
 * dense layers alone. */
static void dense_only(const struct model_desc *d, struct model_desc *out)
{
    *out = *d;
    out->n_layers = 0;
    for (int i = 0; i < d->n_layers; i += 2) {
        out->layer[out->n_layers] = d->layer[i];
        out->layer[out->n_layers].n_in = 0;
        if (!out->layer[out->n_layers].name[0])
            snprintf(out->layer[out->n_layers].name, MODEL_NODE_NAME, "%d", i);
        out->n_layers++;
    }
}

static int check_plan(const struct model_desc *d, int B, struct model_sizes *sizes, char *err,
                      size_t errlen);

int model_check(const struct model_desc *d, int B, struct model_sizes *sizes, char *err,
                size_t errlen)
{
    if (B < 1) return op_err(err, errlen, "batch must be at least 1, got %d", B);
    struct net_config cfg;
    if (!dense_stack(d, &cfg)) return check_plan(d, B, sizes, err, errlen);
    struct model_desc *dense = malloc(sizeof *dense);
    if (!dense) return -ENOMEM;
    dense_only(d, dense);
    int rc = check_plan(dense, B, sizes, err, errlen);
    free(dense);
    return rc;
}

static int check_plan(const struct model_desc *d, int B, struct model_sizes *sizes, char *err,
                      size_t errlen)
{
    int n = d->n_layers >= 1 && d->n_layers <= MODEL_MAX_NODES ? d->n_layers : 1;
    struct model_node *nodes = calloc((size_t)n, sizeof *nodes);
    struct tensor_table tt = {0};
    if (!nodes) return -ENOMEM;
    int rc = plan(d, nodes, &tt, err, errlen);
    if (!rc && sizes) {
        struct arena_sizes a = layout(nodes, d->n_layers, B);
        sizes->n_params = tt.n_params;
        sizes->n_state = tt.n_state;
        const struct shape *out = &nodes[d->n_layers - 1].op.out;
        sizes->steps = out->n == 2 ? out->d[0] : 1;
        sizes->outputs = out->d[out->n - 1];
        sizes->inputs = shape_size(&d->input);
        sizes->act_floats = a.acts + a.dacts + a.saved + a.scratch + a.partials + 2 * a.tmp +
                            (size_t)B * (size_t)sizes->steps * (size_t)sizes->outputs;
        sizes->scratch_floats = a.scratch;
    }
    tensor_table_free(&tt);
    free(nodes);
    return rc;
}

int model_create(struct model *m, const struct model_desc *d, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    int rc = -ENOMEM;
    struct net_config cfg;
    bool stack = dense_stack(d, &cfg);
    struct model_desc *dense = NULL;
    if (stack) {
        if (!(dense = malloc(sizeof *dense))) return -ENOMEM;
        dense_only(d, dense);
        d = dense;
    }
    if (!(m->node = calloc(d->n_layers >= 1 && d->n_layers <= MODEL_MAX_NODES ? d->n_layers : 1,
                           sizeof *m->node)))
        goto nomem;
    if ((rc = plan(d, m->node, &m->tensors, err, errlen))) goto fail;
    m->n_nodes = d->n_layers;
    m->input = d->input;
    const struct shape *out = &m->node[m->n_nodes - 1].op.out;
    m->steps = out->n == 2 ? out->d[0] : 1;
    m->K = out->d[out->n - 1];
    m->loss = d->loss;
    m->label_smoothing = d->label_smoothing;
    m->output = d->output;
    m->n_params = m->tensors.n_params;
    m->n_state = m->tensors.n_state;
    free(dense);
    dense = NULL;

    if (stack) {
        if (!(m->net = malloc(sizeof *m->net))) goto nomem;
        if ((rc = net_create(m->net, &cfg))) {
            free(m->net);
            m->net = NULL;
            goto fail;
        }
        /* The same layout: per layer weight (O, I) then bias (O). */
        if (m->net->n_params != m->n_params) {
            rc = op_err(err, errlen, "internal: dense stack of %zu parameters, table of %zu",
                        m->net->n_params, m->n_params);
            goto fail;
        }
        m->params = m->net->params;
        m->grads = m->net->grads;
        return 0;
    }
    m->params = calloc(m->n_params ? m->n_params : 1, sizeof *m->params);
    m->grads = calloc(m->n_params ? m->n_params : 1, sizeof *m->grads);
    m->state = calloc(m->n_state ? m->n_state : 1, sizeof *m->state);
    if (!m->params || !m->grads || !m->state) goto nomem;
    return 0;
nomem:
    rc = -ENOMEM;
fail:
    free(dense);
    model_destroy(m);
    return rc;
}

static void free_arenas(struct model *m)
{
    free(m->acts);
    free(m->dacts);
    free(m->saved);
    free(m->scratch);
    free(m->partials);
    free(m->tmp[0]);
    free(m->tmp[1]);
    if (!m->net) free(m->probs); /* the dense stack's are the net's */
    m->acts = m->dacts = m->saved = m->scratch = m->partials = NULL;
    m->tmp[0] = m->tmp[1] = m->probs = NULL;
}

void model_destroy(struct model *m)
{
    if (!m) return;
    if (m->net) {
        net_destroy(m->net);
        free(m->net);
    } else {
        free(m->params);
        free(m->grads);
    }
    team_destroy(&m->team);
    free(m->state);
    free_arenas(m);
    free(m->node);
    tensor_table_free(&m->tensors);
    memset(m, 0, sizeof *m);
}

int model_reserve(struct model *m, int B)
{
    if (B < 1) return -EINVAL;
    if (B <= m->max_batch) return 0;
    if (m->net) {
        int rc = net_reserve(m->net, B);
        if (rc) return rc;
        m->max_batch = B;
        m->probs = m->net->probs;
        return 0;
    }
    free_arenas(m);
    m->max_batch = 0;
    struct arena_sizes a = layout(m->node, m->n_nodes, B);
    int threads = model_threads(m);
    m->acts = calloc(a.acts, sizeof *m->acts);
    m->dacts = calloc(a.dacts, sizeof *m->dacts);
    m->saved = calloc(a.saved ? a.saved : 1, sizeof *m->saved);
    m->scratch_stride = a.scratch;
    m->scratch = calloc(a.scratch ? a.scratch * (size_t)threads : 1, sizeof *m->scratch);
    m->partials = calloc(a.partials ? a.partials : 1, sizeof *m->partials);
    m->tmp[0] = calloc(a.tmp ? a.tmp : 1, sizeof *m->tmp[0]);
    m->tmp[1] = calloc(a.tmp ? a.tmp : 1, sizeof *m->tmp[1]);
    m->probs = calloc((size_t)B * (size_t)m->steps * (size_t)m->K, sizeof *m->probs);
    if (!m->acts || !m->dacts || !m->saved || !m->scratch || !m->partials || !m->tmp[0] ||
        !m->tmp[1] || !m->probs) {
        free_arenas(m);
        return -ENOMEM;
    }
    m->max_batch = B;
    return 0;
}

int model_threads(const struct model *m)
{
    if (m->net) return m->net->n_threads;
    return m->n_threads > 1 ? m->n_threads : 1;
}

int model_set_threads(struct model *m, int n)
{
    if (n < 1 || n > TEAM_MAX_THREADS) return -EINVAL;
    if (m->net) return n == m->net->n_threads ? 0 : net_set_threads(m->net, n);
    if (n == model_threads(m)) return 0;
    team_destroy(&m->team);
    m->n_threads = 1;
    if (n > 1) {
        int rc = team_create(&m->team, n);
        if (rc) return rc;
        m->n_threads = n;
    }
    if (m->max_batch == 0) return 0;
    /* Each thread its own scratch: the arenas are laid out again. */
    int B = m->max_batch;
    free_arenas(m);
    m->max_batch = 0;
    return model_reserve(m, B);
}

int model_task_start(struct model *m, void (*fn)(void *ctx), void *ctx)
{
    if (m->net) return net_task_start(m->net, fn, ctx);
    return team_task_start(m->team, fn, ctx);
}

void model_task_wait(struct model *m)
{
    if (m->net)
        net_task_wait(m->net);
    else
        team_task_wait(m->team);
}

void model_init(struct model *m, struct rng *r)
{
    if (m->net) {
        net_init(m->net, r);
        return;
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const struct model_node *n = &m->node[i];
        if (n->op.op->init)
            n->op.op->init(&n->op, m->params + n->param_off, m->state + n->state_off, r);
    }
}

static struct op_call node_call(struct model *m, int i, int B, const float *x)
{
    const struct model_node *n = &m->node[i];
    struct op_call c = {
        .node = &n->op,
        .B = B,
        .out = m->acts + n->out_off,
        .param = n->n_param ? m->params + n->param_off : NULL,
        .grad = n->n_param ? m->grads + n->param_off : NULL,
        .state = n->n_state ? m->state + n->state_off : NULL,
        .saved = m->saved + n->saved_off,
        .scratch = m->scratch,
        .scratch_stride = m->scratch_stride,
        .partials = m->partials,
        .team = m->team,
    };
    for (int j = 0; j < n->op.n_in; j++)
        c.in[j] = n->in[j] == MODEL_INPUT ? x : m->acts + m->node[n->in[j]].out_off;
    return c;
}

/* The head's outputs (softmax, sigmoid) row by row: any cut gives the
 * same bits, so runs of rows go over the team. */
struct outputs_job {
    struct model *m;
    int rows, slices;
};

static void outputs_slice(void *ctx, int slice, int thread)
{
    (void)thread;
    const struct outputs_job *j = ctx;
    int lo, hi, K = j->m->K;
    team_split(j->rows, j->slices, 1, slice, &lo, &hi);
    loss_outputs(j->m->probs + (size_t)lo * K, model_logits(j->m) + (size_t)lo * K, hi - lo, K,
                 j->m->loss, j->m->output);
}

void model_forward(struct model *m, const float *x, int B, bool training, struct rng *r)
{
    if (m->net) {
        net_forward(m->net, x, B);
        return;
    }
    m->training = training;
    for (int i = 0; i < m->n_nodes; i++) {
        struct op_call c = node_call(m, i, B, x);
        c.training = training;
        c.rng = r;
        m->node[i].op.op->forward(&c);
    }
    struct outputs_job j = {m, B * m->steps, 1};
    if ((size_t)j.rows * (size_t)m->K >= 32768) /* smaller: not worth a hand-over */
        j.slices = team_slices(j.rows, 2 * team_size(m->team), 1);
    team_for(m->team, j.slices, outputs_slice, &j);
}

const float *model_logits(const struct model *m)
{
    if (m->net) return net_logits(m->net);
    return m->acts + m->node[m->n_nodes - 1].out_off;
}

double model_loss(const struct model *m, const int32_t *y_class, const float *y, int B)
{
    if (m->net) return net_loss(m->net, y_class, y, B);
    return loss_value(model_logits(m), m->probs, y_class, y, B * m->steps, m->K, m->loss,
                      m->label_smoothing);
}

int model_correct(const struct model *m, const int32_t *y_class, int B)
{
    if (m->net) return net_correct(m->net, y_class, B);
    return loss_correct(model_logits(m), y_class, B * m->steps, m->K);
}

void model_zero_grad(struct model *m)
{
    memset(m->grads, 0, m->n_params * sizeof *m->grads);
}

void model_backward(struct model *m, const float *x, const int32_t *y_class, const float *y, int B)
{
    if (m->net) {
        net_backward(m->net, x, y_class, y, B);
        return;
    }
    int last = m->n_nodes - 1;
    /* A node's output gradient is written by its first consumer in reverse
     * order (stored); later consumers write a temporary that is added. */
    bool written[MODEL_MAX_NODES] = {false};
    loss_grad(m->dacts + m->node[last].grad_off, m->probs, y_class, y, B * m->steps, m->K, m->loss,
              m->output, m->label_smoothing);
    written[last] = true;
    for (int i = last; i >= 0; i--) {
        if (!written[i]) continue; /* does not reach the output: no gradient */
        const struct model_node *n = &m->node[i];
        struct op_call c = node_call(m, i, B, x);
        c.training = m->training;
        c.dout = m->dacts + n->grad_off;
        bool pending[OP_MAX_INPUTS] = {false};
        for (int j = 0; j < n->op.n_in; j++) {
            int src = n->in[j];
            if (src == MODEL_INPUT) continue;
            if (!written[src]) {
                c.din[j] = m->dacts + m->node[src].grad_off;
                written[src] = true;
            } else {
                c.din[j] = m->tmp[j];
                pending[j] = true;
            }
        }
        n->op.op->backward(&c);
        for (int j = 0; j < n->op.n_in; j++) {
            if (!pending[j]) continue;
            float *restrict d = m->dacts + m->node[n->in[j]].grad_off;
            const float *restrict t = m->tmp[j];
            size_t cnt = (size_t)B * shape_size(&n->op.in[j]);
            for (size_t k = 0; k < cnt; k++)
                d[k] += t[k];
        }
    }
}

double model_penalty(struct model *m, double l1, double l2)
{
    if (m->net) return net_penalty(m->net, l1, l2);
    if (l1 == 0.0 && l2 == 0.0) return 0.0;
    double sum_abs = 0.0, sum_sq = 0.0;
    for (int i = 0; i < m->tensors.n; i++) {
        const struct tensor *t = &m->tensors.t[i];
        size_t len = strlen(t->name);
        if (t->kind != OP_PARAM || t->ndim < 2 || len < 7 || strcmp(t->name + len - 7, ".weight"))
            continue;
        float *w = m->params + t->offset, *dw = m->grads + t->offset;
        for (size_t k = 0; k < t->size; k++) {
            double v = w[k];
            sum_abs += fabs(v);
            sum_sq += v * v;
            dw[k] += (float)(l1 * (v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0) + l2 * v);
        }
    }
    return l1 * sum_abs + 0.5 * l2 * sum_sq;
}
