#include "spec.h"
#include "errmsg.h"
#include "sha256.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"train", "eval", "predict"};
static const char *const activation_names[] = {"relu", "sigmoid", "tanh", "leaky_relu"};
static const char *const output_names[] = {"logits", "softmax", "sigmoid", "linear"};
static const char *const loss_names[] = {"cross_entropy", "mse"};
static const char *const optim_names[] = {"gd", "sgd", "adam", "adamw", "rmsprop", "adagrad"};
/* Indexed by enum sched_kind; "sequential" is the list form. */
static const char *const sched_names[] = {"none",   "step",   "multistep",        "exponential",
                                          "cosine", "linear", "reduce_on_plateau"};
/* torch.optim.lr_scheduler's class names, accepted as the same types. */
static const char *const sched_class_names[] = {
    "",         "StepLR",           "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
    "LinearLR", "ReduceLROnPlateau"};
static const char *const metric_names[] = {"val_loss", "val_accuracy", "train_loss",
                                           "train_accuracy"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *spec_kind_name(enum job_kind kind)
{
    return kind_names[kind];
}
const char *spec_activation_name(enum activation act)
{
    return activation_names[act];
}
const char *spec_output_name(enum output_kind out)
{
    return output_names[out];
}
const char *spec_loss_name(enum loss_kind loss)
{
    return loss_names[loss];
}
const char *spec_optim_name(enum optim_kind opt)
{
    return optim_names[opt];
}
const char *spec_sched_name(enum sched_kind kind)
{
    return sched_names[kind];
}
const char *spec_metric_name(enum spec_metric metric)
{
    return metric_names[metric];
}

bool spec_dataset_name_valid(const char *name)
{
    if (!name || !name[0] || name[0] == '.' || name[0] == '-') return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n <= SPEC_DATASET_NAME_MAX;
}

bool spec_dataset_pushed(const struct spec_dataset *d)
{
    return d->name[0] || d->sha256[0];
}

static void dataset_defaults(struct spec_dataset *d)
{
    memset(d, 0, sizeof *d);
    strcpy(d->x, "X");
    strcpy(d->y, "y");
    d->scale = true;
}

/* torch.optim's defaults for each optimizer; lr for sgd and gd, which torch
 * requires, is the seed article's 0.01. */
static void optimizer_defaults(struct spec_optimizer *o, enum optim_kind name)
{
    memset(o, 0, sizeof *o);
    o->name = name;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->alpha = 0.99;
    switch (name) {
    case OPT_GD:
    case OPT_SGD:
    case OPT_RMSPROP:
        o->lr = 0.01;
        break;
    case OPT_ADAM:
        o->lr = 0.001;
        break;
    case OPT_ADAMW:
        o->lr = 0.001;
        o->weight_decay = 0.01;
        break;
    case OPT_ADAGRAD:
        o->lr = 0.01;
        o->eps = 1e-10;
        break;
    }
}

void spec_defaults(struct mlq_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->kind = JOB_TRAIN;
    dataset_defaults(&spec->dataset);
    dataset_defaults(&spec->validation);
    static const int seed_mlp[] = {784, 128, 64, 10};
    spec->n_layers = 3;
    memcpy(spec->layers, seed_mlp, sizeof seed_mlp);
    spec->activation = ACT_RELU;
    spec->leaky_slope = 0.01;
    spec->output = OUT_LOGITS;
    spec->loss = LOSS_CROSS_ENTROPY;
    optimizer_defaults(&spec->optimizer, OPT_SGD);
    spec->batch_size = 64;
    spec->epochs = 10;
    spec->seed = 42;
    spec->checkpoint_every = 1;
    spec->shuffle = true;
    strcpy(spec->checkpoint, "last");
    spec->max_attempts = 3;
    spec->gen_tokens = 100;
    spec->temperature = 1.0;
}

/* ---- field readers: each names the field in its message ---- */

static int check_keys(json_t *obj, const char *where, const char *const *allowed, size_t n,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(key, allowed[i]) == 0) break;
        if (i == n)
            return errmsg(err, errlen, -EINVAL, "%s%s%s: unknown field", where, *where ? "." : "",
                          key);
    }
    return 0;
}

static int get_string(json_t *obj, const char *key, const char *where, char *dst, size_t cap,
                      char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_string(v))
        return errmsg(err, errlen, -EINVAL, "%s%s: must be a string", where, key);
    if (json_string_length(v) >= cap)
        return errmsg(err, errlen, -EINVAL, "%s%s: longer than %zu characters", where, key,
                      cap - 1);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return errmsg(err, errlen, -EINVAL, "%s%s: contains a NUL character", where, key);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int get_number(json_t *obj, const char *key, const char *where, double *dst, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_number(v))
        return errmsg(err, errlen, -EINVAL, "%s%s: must be a number", where, key);
    double d = json_number_value(v);
    if (!isfinite(d)) return errmsg(err, errlen, -EINVAL, "%s%s: must be finite", where, key);
    *dst = d;
    return 0;
}

static int get_int(json_t *obj, const char *key, const char *where, int64_t lo, int64_t hi,
                   int64_t *dst, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_integer(v))
        return errmsg(err, errlen, -EINVAL, "%s%s: must be an integer", where, key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return errmsg(err, errlen, -EINVAL, "%s%s: must be between %lld and %lld, got %lld", where,
                      key, (long long)lo, (long long)hi, (long long)i);
    *dst = i;
    return 0;
}

static int get_int32(json_t *obj, const char *key, const char *where, int lo, int hi, int *dst,
                     char *err, size_t errlen)
{
    int64_t v = *dst;
    int rc = get_int(obj, key, where, lo, hi, &v, err, errlen);
    *dst = (int)v;
    return rc;
}

static int get_bool(json_t *obj, const char *key, const char *where, bool *dst, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return errmsg(err, errlen, -EINVAL, "%s%s: must be true or false", where, key);
    *dst = json_is_true(v);
    return 0;
}

static int get_enum(json_t *obj, const char *key, const char *where, const char *const *names,
                    size_t n, int *dst, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (json_is_string(v)) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(json_string_value(v), names[i]) == 0) {
                *dst = (int)i;
                return 0;
            }
        }
    }
    char choices[256] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(choices, names[i], sizeof choices - strlen(choices) - 1);
        if (i + 1 < n) strncat(choices, ", ", sizeof choices - strlen(choices) - 1);
    }
    return errmsg(err, errlen, -EINVAL, "%s%s: must be one of %s", where, key, choices);
}

static int parse_dataset(json_t *v, const char *field, struct spec_dataset *d, char *err,
                         size_t errlen)
{
    static const char *const keys[] = {"path", "name", "sha256", "x", "y", "scale"};
    char where[64];
    snprintf(where, sizeof where, "%s.", field);
    /* A bare string is the path with default dataset names. */
    if (json_is_string(v)) {
        json_t *wrap = json_pack("{sO}", "path", v);
        int rc = parse_dataset(wrap, field, d, err, errlen);
        json_decref(wrap);
        return rc;
    }
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL, "%s: must be an object or a path", field);
    int rc = check_keys(v, field, keys, COUNT(keys), err, errlen);
    if (!rc) rc = get_string(v, "path", where, d->path, sizeof d->path, err, errlen);
    if (!rc) rc = get_string(v, "name", where, d->name, sizeof d->name, err, errlen);
    if (!rc) rc = get_string(v, "sha256", where, d->sha256, sizeof d->sha256, err, errlen);
    if (!rc) rc = get_string(v, "x", where, d->x, sizeof d->x, err, errlen);
    if (!rc) rc = get_string(v, "y", where, d->y, sizeof d->y, err, errlen);
    if (!rc) rc = get_bool(v, "scale", where, &d->scale, err, errlen);
    if (!rc && json_object_get(v, "name") && !spec_dataset_name_valid(d->name))
        rc = errmsg(err, errlen, -EINVAL,
                    "%s.name: 1 to %d letters, digits, '.', '_' or '-', not starting with '.' "
                    "or '-'",
                    field, SPEC_DATASET_NAME_MAX);
    if (!rc && json_object_get(v, "sha256") && !sha256_hex_valid(d->sha256))
        rc = errmsg(err, errlen, -EINVAL, "%s.sha256: must be 64 lower-case hex digits", field);
    if (!rc && d->path[0] && spec_dataset_pushed(d))
        rc = errmsg(err, errlen, -EINVAL,
                    "%s: give either path or a pushed dataset (name, sha256), not both", field);
    if (!rc && !d->path[0] && !spec_dataset_pushed(d))
        rc = errmsg(err, errlen, -EINVAL, "%s.path: required (or name, or sha256)", field);
    if (!rc && (!d->x[0] || !d->y[0]))
        rc = errmsg(err, errlen, -EINVAL, "%s: dataset names must not be empty", field);
    return rc;
}

/* A predict job's "output": the path of the HDF5 file the trainer writes,
 * or {"push": true, "name"?} for a file that goes to the broker's dataset
 * store instead (the client's host fetches it). */
static int parse_output(json_t *doc, struct mlq_spec *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"push", "name"};
    json_t *v = json_object_get(doc, "output");
    if (!v || json_is_string(v))
        return get_string(doc, "output", "", s->output_path, sizeof s->output_path, err, errlen);
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL,
                      "output: must be a path or {\"push\": true} (the file sent back)");
    int rc = check_keys(v, "output", keys, COUNT(keys), err, errlen);
    if (!rc) rc = get_bool(v, "push", "output.", &s->output_push, err, errlen);
    if (!rc && !s->output_push)
        rc = errmsg(err, errlen, -EINVAL,
                    "output.push: must be true (or give output as a path on the trainer)");
    if (!rc)
        rc = get_string(v, "name", "output.", s->output_name, sizeof s->output_name, err, errlen);
    if (!rc && json_object_get(v, "name") && !spec_dataset_name_valid(s->output_name))
        rc = errmsg(err, errlen, -EINVAL,
                    "output.name: 1 to %d letters, digits, '.', '_' or '-', not starting with "
                    "'.' or '-'",
                    SPEC_DATASET_NAME_MAX);
    return rc;
}

const char *const spec_layer_field_names[SPEC_N_LAYER_FIELDS] = {
    "out", "kernel",      "stride", "padding",    "bias",     "p",     "negative_slope", "momentum",
    "eps", "approximate", "vocab",  "num_layers", "sequence", "heads", "causal"};

static void layer_defaults(struct spec_layer *l)
{
    memset(l, 0, sizeof *l);
    l->stride = -1;
    l->bias = true;
    l->p = 0.5;
    l->negative_slope = 0.01;
    l->momentum = 0.1;
    l->eps = 1e-5;
    l->num_layers = 1;
    l->sequence = true;
}

static int parse_layer_list(json_t *list, const char *where, struct mlq_spec *s, char *err,
                            size_t errlen);

#define SPEC_WHERE_MAX 300
/* where + suffix into w, e.g. "model.layers[3]" + ".layers". */
static int where_join(char *w, const char *where, const char *suffix, char *err, size_t errlen)
{
    int n = snprintf(w, SPEC_WHERE_MAX, "%s%s", where, suffix);
    if (n < 0 || n >= SPEC_WHERE_MAX)
        return errmsg(err, errlen, -EINVAL, "%.64s...: layers nested too deeply", where);
    return 0;
}

/* One typed layer at `where` ("model.layers[3]"), appended to s->node
 * with its children after it. Ranges here; shapes and which fields a type
 * reads are checked against the engine's op table (spec_model_check). */
static int parse_layer(json_t *v, const char *where, struct mlq_spec *s, char *err, size_t errlen)
{
    static const char *const keys[] = {
        "type",           "out",      "kernel", "stride",      "padding", "bias",     "p",
        "negative_slope", "momentum", "eps",    "approximate", "layers",  "shortcut", "vocab",
        "num_layers",     "sequence", "heads",  "causal"};
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL, "%s: must be a layer object", where);
    int rc = check_keys(v, where, keys, COUNT(keys), err, errlen);
    if (rc) return rc;
    if (s->n_nodes >= SPEC_MAX_NODES)
        return errmsg(err, errlen, -EINVAL, "%s: a model has at most %d layers", where,
                      SPEC_MAX_NODES);
    int at = s->n_nodes++;
    struct spec_layer *l = &s->node[at];
    layer_defaults(l);
    char w[SPEC_WHERE_MAX];
    if ((rc = where_join(w, where, ".", err, errlen))) return rc;
    json_t *t = json_object_get(v, "type");
    if (!t) return errmsg(err, errlen, -EINVAL, "%s.type: required", where);
    if ((rc = get_string(v, "type", w, l->type, sizeof l->type, err, errlen))) return rc;
    int64_t iv;
    struct {
        const char *key;
        int field, lo, hi;
        int *dst;
    } ints[] = {{"out", SPEC_F_OUT, 1, SPEC_MAX_WIDTH, &l->out},
                {"kernel", SPEC_F_KERNEL, 1, SPEC_MAX_KERNEL, &l->kernel},
                {"stride", SPEC_F_STRIDE, 1, SPEC_MAX_KERNEL, &l->stride},
                {"padding", SPEC_F_PADDING, 0, SPEC_MAX_KERNEL, &l->padding},
                {"vocab", SPEC_F_VOCAB, 1, SPEC_MAX_WIDTH, &l->vocab},
                {"num_layers", SPEC_F_NUM_LAYERS, 1, 4, &l->num_layers},
                {"heads", SPEC_F_HEADS, 1, SPEC_MAX_KERNEL, &l->heads}};
    for (size_t i = 0; i < COUNT(ints); i++) {
        if (!json_object_get(v, ints[i].key)) continue;
        iv = 0;
        if ((rc = get_int(v, ints[i].key, w, ints[i].lo, ints[i].hi, &iv, err, errlen))) return rc;
        *ints[i].dst = (int)iv;
        l->given |= 1u << ints[i].field;
    }
    struct {
        const char *key;
        int field;
        double *dst;
    } nums[] = {{"p", SPEC_F_P, &l->p},
                {"negative_slope", SPEC_F_NEGATIVE_SLOPE, &l->negative_slope},
                {"momentum", SPEC_F_MOMENTUM, &l->momentum},
                {"eps", SPEC_F_EPS, &l->eps}};
    for (size_t i = 0; i < COUNT(nums); i++) {
        if (!json_object_get(v, nums[i].key)) continue;
        if ((rc = get_number(v, nums[i].key, w, nums[i].dst, err, errlen))) return rc;
        l->given |= 1u << nums[i].field;
    }
    if (json_object_get(v, "bias")) {
        if ((rc = get_bool(v, "bias", w, &l->bias, err, errlen))) return rc;
        l->given |= 1u << SPEC_F_BIAS;
    }
    if (json_object_get(v, "approximate")) {
        if ((rc = get_bool(v, "approximate", w, &l->approximate, err, errlen))) return rc;
        l->given |= 1u << SPEC_F_APPROXIMATE;
    }
    if (json_object_get(v, "sequence")) {
        if ((rc = get_bool(v, "sequence", w, &l->sequence, err, errlen))) return rc;
        l->given |= 1u << SPEC_F_SEQUENCE;
    }
    if (json_object_get(v, "causal")) {
        if ((rc = get_bool(v, "causal", w, &l->causal, err, errlen))) return rc;
        l->given |= 1u << SPEC_F_CAUSAL;
    }
    if (!(l->p >= 0 && l->p < 1))
        return errmsg(err, errlen, -EINVAL, "%s.p: must be in [0, 1), got %g", where, l->p);
    if (!(l->momentum >= 0 && l->momentum <= 1))
        return errmsg(err, errlen, -EINVAL, "%s.momentum: must be in [0, 1], got %g", where,
                      l->momentum);
    if (!(l->eps > 0))
        return errmsg(err, errlen, -EINVAL, "%s.eps: must be positive, got %g", where, l->eps);

    bool residual = strcmp(l->type, "residual") == 0;
    json_t *branch = json_object_get(v, "layers"), *shortcut = json_object_get(v, "shortcut");
    if (!residual && (branch || shortcut))
        return errmsg(err, errlen, -EINVAL, "%s.%s: only a residual block has one", where,
                      branch ? "layers" : "shortcut");
    if (!residual) return 0;
    if (l->given)
        return errmsg(err, errlen, -EINVAL,
                      "%s: a residual block takes only layers and shortcut (its branch and "
                      "projection), not %s",
                      where, spec_layer_field_names[__builtin_ctz(l->given)]);
    if (!branch || !json_is_array(branch) || json_array_size(branch) == 0)
        return errmsg(err, errlen, -EINVAL, "%s.layers: a residual block needs a list of layers",
                      where);
    if ((rc = where_join(w, where, ".layers", err, errlen))) return rc;
    if ((rc = parse_layer_list(branch, w, s, err, errlen))) return rc;
    s->node[at].branch_span = s->n_nodes - at - 1;
    if (shortcut) {
        if (!json_is_array(shortcut))
            return errmsg(err, errlen, -EINVAL,
                          "%s.shortcut: must be a list of layers (the projection)", where);
        if ((rc = where_join(w, where, ".shortcut", err, errlen))) return rc;
        if ((rc = parse_layer_list(shortcut, w, s, err, errlen))) return rc;
    }
    s->node[at].span = s->n_nodes - at - 1;
    return 0;
}

static int parse_layer_list(json_t *list, const char *where, struct mlq_spec *s, char *err,
                            size_t errlen)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        char w[SPEC_WHERE_MAX], idx[32];
        snprintf(idx, sizeof idx, "[%zu]", i);
        int rc = where_join(w, where, idx, err, errlen);
        if (!rc) rc = parse_layer(json_array_get(list, i), w, s, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

static int parse_input(json_t *v, struct mlq_spec *s, char *err, size_t errlen)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (n < 1 || n > 3)
        return errmsg(err, errlen, -EINVAL,
                      "model.input: must be [features], [steps, features] or [channels, height, "
                      "width]");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 ||
            json_integer_value(e) > SPEC_MAX_WIDTH)
            return errmsg(err, errlen, -EINVAL,
                          "model.input[%zu]: must be an integer between 1 and %d", i,
                          SPEC_MAX_WIDTH);
        s->input[i] = (int)json_integer_value(e);
    }
    s->input_rank = (int)n;
    return 0;
}

static int parse_model(json_t *v, struct mlq_spec *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"layers", "activation", "output", "leaky_slope", "input"};
    if (!json_is_object(v)) return errmsg(err, errlen, -EINVAL, "model: must be an object");
    int rc = check_keys(v, "model", keys, COUNT(keys), err, errlen);
    if (rc) return rc;
    json_t *layers = json_object_get(v, "layers");
    json_t *first = layers && json_is_array(layers) ? json_array_get(layers, 0) : NULL;
    if (first && json_is_object(first)) {
        /* Typed layers: every entry an object. */
        s->typed = true;
        s->n_layers = 0;
        memset(s->layers, 0, sizeof s->layers);
        s->n_nodes = 0;
        if ((rc = parse_layer_list(layers, "model.layers", s, err, errlen))) return rc;
    } else if (layers) {
        if (!json_is_array(layers))
            return errmsg(err, errlen, -EINVAL,
                          "model.layers: must be an array of layer sizes or of layers");
        size_t n = json_array_size(layers);
        if (n < 2 || n > SPEC_MAX_LAYERS + 1)
            return errmsg(
                err, errlen, -EINVAL,
                "model.layers: needs between 2 and %d sizes (inputs, ..., outputs), got %zu",
                SPEC_MAX_LAYERS + 1, n);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(layers, i);
            if (!json_is_integer(e) || json_integer_value(e) < 1 ||
                json_integer_value(e) > SPEC_MAX_WIDTH)
                return errmsg(err, errlen, -EINVAL,
                              "model.layers[%zu]: must be an integer between 1 and %d", i,
                              SPEC_MAX_WIDTH);
            s->layers[i] = (int)json_integer_value(e);
        }
        s->n_layers = (int)n - 1;
    }
    json_t *input = json_object_get(v, "input");
    if (input && !s->typed)
        return errmsg(err, errlen, -EINVAL,
                      "model.input: only with typed layers (a list of widths starts with its "
                      "inputs)");
    if (input && (rc = parse_input(input, s, err, errlen))) return rc;
    int act = s->activation, out = s->output;
    rc = get_enum(v, "activation", "model.", activation_names, COUNT(activation_names), &act, err,
                  errlen);
    if (!rc)
        rc = get_enum(v, "output", "model.", output_names, COUNT(output_names), &out, err, errlen);
    if (!rc) rc = get_number(v, "leaky_slope", "model.", &s->leaky_slope, err, errlen);
    if (!rc && s->typed && (json_object_get(v, "activation") || json_object_get(v, "leaky_slope")))
        rc = errmsg(err, errlen, -EINVAL,
                    "model.activation: typed layers give their activations as layers "
                    "({\"type\": \"relu\"})");
    s->activation = act;
    s->output = out;
    return rc;
}

/* ---- optimizer.schedule ---- */

/* PyTorch's defaults for a scheduler of this kind. */
static void phase_defaults(struct spec_sched_phase *p, enum sched_kind kind)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->gamma = 0.1;
    p->start_factor = 1.0 / 3;
    p->end_factor = 1.0;
    p->total_iters = 5;
    p->metric = METRIC_VAL_LOSS;
    p->factor = 0.1;
    p->patience = 10;
    p->threshold = 1e-4;
    p->eps = 1e-8;
}

static int get_metric(json_t *obj, const char *key, const char *where, enum spec_metric *dst,
                      char *err, size_t errlen)
{
    int m = *dst;
    int rc = get_enum(obj, key, where, metric_names, COUNT(metric_names), &m, err, errlen);
    *dst = m;
    return rc;
}

/* "min" or "max" into *is_max. */
static int get_mode(json_t *obj, const char *where, bool *is_max, char *err, size_t errlen)
{
    static const char *const modes[] = {"min", "max"};
    int m = *is_max;
    int rc = get_enum(obj, "mode", where, modes, COUNT(modes), &m, err, errlen);
    *is_max = m == 1;
    return rc;
}

/* A field the type needs: "where.key: required for TYPE". */
static int need(json_t *v, const char *key, const char *where, const char *type, const char *eg,
                char *err, size_t errlen)
{
    if (json_object_get(v, key)) return 0;
    return errmsg(err, errlen, -EINVAL, "%s%s: required for a %s schedule (e.g. %s)", where, key,
                  type, eg);
}

/* One scheduler at where ("optimizer.schedule." or
 * "optimizer.schedule.schedules[1]."); top: it may give "interval". */
static int parse_phase(json_t *v, const char *where, bool top, struct spec_sched_phase *p,
                       char *err, size_t errlen)
{
    static const char *const step_keys[] = {"type", "interval", "step_size", "gamma"};
    static const char *const multistep_keys[] = {"type", "interval", "milestones", "gamma"};
    static const char *const exp_keys[] = {"type", "interval", "gamma"};
    static const char *const cos_keys[] = {"type", "interval", "t_max", "eta_min"};
    static const char *const lin_keys[] = {"type", "interval", "start_factor", "end_factor",
                                           "total_iters"};
    static const char *const plateau_keys[] = {
        "type",      "interval",       "metric",   "mode",   "factor", "patience",
        "threshold", "threshold_mode", "cooldown", "min_lr", "eps"};
    static const struct {
        const char *const *keys;
        size_t n;
    } keys[] = {{NULL, 0},
                {step_keys, COUNT(step_keys)},
                {multistep_keys, COUNT(multistep_keys)},
                {exp_keys, COUNT(exp_keys)},
                {cos_keys, COUNT(cos_keys)},
                {lin_keys, COUNT(lin_keys)},
                {plateau_keys, COUNT(plateau_keys)}};
    char field[SPEC_WHERE_MAX];
    snprintf(field, sizeof field, "%.*s", (int)strlen(where) - 1, where);
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL,
                      "%s: must be an object, e.g. {\"type\": \"cosine\", \"t_max\": 10}", field);
    json_t *t = json_object_get(v, "type");
    if (!t)
        return errmsg(err, errlen, -EINVAL,
                      "%stype: required (step, multistep, exponential, cosine, linear, "
                      "reduce_on_plateau%s)",
                      where, top ? " or sequential" : "");
    int kind = 0;
    for (int k = 1; k < (int)COUNT(sched_names) && json_is_string(t); k++)
        if (!strcmp(json_string_value(t), sched_names[k]) ||
            !strcmp(json_string_value(t), sched_class_names[k]))
            kind = k;
    if (!kind)
        return errmsg(err, errlen, -EINVAL,
                      "%stype: must be one of step, multistep, exponential, cosine, linear, "
                      "reduce_on_plateau%s",
                      where, top ? ", sequential" : "");
    phase_defaults(p, kind);
    /* Only a schedule's outermost object says how often it steps. */
    json_t *interval = json_object_get(v, "interval");
    if (!top && interval)
        return errmsg(err, errlen, -EINVAL,
                      "%sinterval: give it on the sequential schedule, not on its parts", where);
    int rc = check_keys(v, field, keys[kind].keys, keys[kind].n, err, errlen);
    if (rc) return rc;
    const char *tn = sched_names[kind];
    int64_t iv;
    switch (p->kind) {
    case SCHED_NONE:
        break;
    case SCHED_STEP:
        if ((rc = need(v, "step_size", where, tn, "\"step_size\": 10", err, errlen))) return rc;
        iv = 0;
        if ((rc = get_int(v, "step_size", where, 1, INT32_MAX, &iv, err, errlen))) return rc;
        p->step_size = (int)iv;
        rc = get_number(v, "gamma", where, &p->gamma, err, errlen);
        break;
    case SCHED_MULTISTEP: {
        if ((rc = need(v, "milestones", where, tn, "\"milestones\": [30, 80]", err, errlen)))
            return rc;
        json_t *ms = json_object_get(v, "milestones");
        size_t n = json_is_array(ms) ? json_array_size(ms) : 0;
        if (!json_is_array(ms) || n > SPEC_SCHED_MAX_MILESTONES)
            return errmsg(err, errlen, -EINVAL,
                          "%smilestones: must be a list of up to %d increasing epochs, e.g. [30, "
                          "80]",
                          where, SPEC_SCHED_MAX_MILESTONES);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(ms, i);
            if (!json_is_integer(e) || json_integer_value(e) < 1 ||
                json_integer_value(e) > INT32_MAX)
                return errmsg(err, errlen, -EINVAL, "%smilestones[%zu]: must be a positive integer",
                              where, i);
            p->milestones[i] = (int)json_integer_value(e);
            if (i > 0 && p->milestones[i] <= p->milestones[i - 1])
                return errmsg(err, errlen, -EINVAL,
                              "%smilestones[%zu]: must be greater than the one before (%d), got %d",
                              where, i, p->milestones[i - 1], p->milestones[i]);
        }
        p->n_milestones = (int)n;
        rc = get_number(v, "gamma", where, &p->gamma, err, errlen);
        break;
    }
    case SCHED_EXPONENTIAL:
        if ((rc = need(v, "gamma", where, tn, "\"gamma\": 0.95", err, errlen))) return rc;
        rc = get_number(v, "gamma", where, &p->gamma, err, errlen);
        break;
    case SCHED_COSINE:
        if ((rc = need(v, "t_max", where, tn, "\"t_max\": 10", err, errlen))) return rc;
        iv = 0;
        if ((rc = get_int(v, "t_max", where, 1, INT32_MAX, &iv, err, errlen))) return rc;
        p->t_max = (int)iv;
        if ((rc = get_number(v, "eta_min", where, &p->eta_min, err, errlen))) return rc;
        if (p->eta_min < 0)
            return errmsg(err, errlen, -EINVAL, "%seta_min: must be >= 0, got %g", where,
                          p->eta_min);
        break;
    case SCHED_LINEAR:
        if ((rc = get_number(v, "start_factor", where, &p->start_factor, err, errlen)) ||
            (rc = get_number(v, "end_factor", where, &p->end_factor, err, errlen)))
            return rc;
        iv = p->total_iters;
        if ((rc = get_int(v, "total_iters", where, 1, INT32_MAX, &iv, err, errlen))) return rc;
        p->total_iters = (int)iv;
        /* torch's own checks */
        if (!(p->start_factor > 0 && p->start_factor <= 1))
            return errmsg(err, errlen, -EINVAL, "%sstart_factor: must be in (0, 1], got %g", where,
                          p->start_factor);
        if (!(p->end_factor >= 0 && p->end_factor <= 1))
            return errmsg(err, errlen, -EINVAL, "%send_factor: must be in [0, 1], got %g", where,
                          p->end_factor);
        break;
    case SCHED_PLATEAU: {
        static const char *const tmodes[] = {"rel", "abs"};
        int tm = 0;
        if ((rc = get_metric(v, "metric", where, &p->metric, err, errlen)) ||
            (rc = get_mode(v, where, &p->mode_max, err, errlen)) ||
            (rc = get_number(v, "factor", where, &p->factor, err, errlen)) ||
            (rc = get_int32(v, "patience", where, 0, INT32_MAX, &p->patience, err, errlen)) ||
            (rc = get_number(v, "threshold", where, &p->threshold, err, errlen)) ||
            (rc = get_enum(v, "threshold_mode", where, tmodes, COUNT(tmodes), &tm, err, errlen)) ||
            (rc = get_int32(v, "cooldown", where, 0, INT32_MAX, &p->cooldown, err, errlen)) ||
            (rc = get_number(v, "min_lr", where, &p->min_lr, err, errlen)) ||
            (rc = get_number(v, "eps", where, &p->eps, err, errlen)))
            return rc;
        p->threshold_abs = tm == 1;
        if (!(p->factor > 0 && p->factor < 1))
            return errmsg(err, errlen, -EINVAL, "%sfactor: must be in (0, 1), got %g", where,
                          p->factor);
        if (p->threshold < 0 || p->min_lr < 0 || p->eps < 0)
            return errmsg(err, errlen, -EINVAL, "%s%s: must be >= 0, got %g", where,
                          p->threshold < 0 ? "threshold"
                          : p->min_lr < 0  ? "min_lr"
                                           : "eps",
                          p->threshold < 0 ? p->threshold
                          : p->min_lr < 0  ? p->min_lr
                                           : p->eps);
        break;
    }
    }
    if (rc) return rc;
    if ((p->kind == SCHED_STEP || p->kind == SCHED_MULTISTEP || p->kind == SCHED_EXPONENTIAL) &&
        !(p->gamma > 0))
        return errmsg(err, errlen, -EINVAL, "%sgamma: must be positive, got %g", where, p->gamma);
    return 0;
}

static int parse_interval(json_t *v, struct spec_schedule *sc, char *err, size_t errlen)
{
    static const char *const intervals[] = {"epoch", "step"};
    int i = 0;
    int rc = get_enum(v, "interval", "optimizer.schedule.", intervals, COUNT(intervals), &i, err,
                      errlen);
    sc->per_step = i == 1;
    return rc;
}

/* optimizer.schedule: one scheduler object, or {"type": "sequential",
 * "schedules": [...], "milestones": [...]} as torch's SequentialLR. */
static int parse_schedule(json_t *v, struct spec_schedule *sc, char *err, size_t errlen)
{
    static const char *const seq_keys[] = {"type", "interval", "schedules", "milestones"};
    const char *w = "optimizer.schedule.";
    memset(sc, 0, sizeof *sc);
    if (json_is_null(v)) return 0;
    json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
    bool seq = json_is_string(t) && (!strcmp(json_string_value(t), "sequential") ||
                                     !strcmp(json_string_value(t), "SequentialLR"));
    int rc;
    if (!seq) {
        if ((rc = parse_phase(v, w, true, &sc->phase[0], err, errlen))) return rc;
        sc->n_phases = 1;
    } else {
        if ((rc = check_keys(v, "optimizer.schedule", seq_keys, COUNT(seq_keys), err, errlen)))
            return rc;
        json_t *list = json_object_get(v, "schedules"), *ms = json_object_get(v, "milestones");
        size_t n = json_is_array(list) ? json_array_size(list) : 0;
        if (n < 2 || n > SPEC_SCHED_MAX_PHASES)
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.schedule.schedules: a sequential schedule needs a list of 2 "
                          "to %d schedules, e.g. [{\"type\": \"linear\", \"total_iters\": 5}, "
                          "{\"type\": \"cosine\", \"t_max\": 45}]",
                          SPEC_SCHED_MAX_PHASES);
        if (!json_is_array(ms) || json_array_size(ms) != n - 1)
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.schedule.milestones: needs %zu increasing epochs (when each "
                          "schedule after the first takes over), e.g. [5]",
                          n - 1);
        for (size_t i = 0; i < n; i++) {
            char pw[SPEC_WHERE_MAX];
            snprintf(pw, sizeof pw, "optimizer.schedule.schedules[%zu].", i);
            if ((rc = parse_phase(json_array_get(list, i), pw, false, &sc->phase[i], err, errlen)))
                return rc;
            if (sc->phase[i].kind == SCHED_PLATEAU)
                return errmsg(err, errlen, -EINVAL,
                              "optimizer.schedule.schedules[%zu].type: reduce_on_plateau cannot "
                              "be part of a sequential schedule (torch's SequentialLR does not "
                              "take it either)",
                              i);
        }
        for (size_t i = 0; i + 1 < n; i++) {
            json_t *e = json_array_get(ms, i);
            if (!json_is_integer(e) || json_integer_value(e) < 1 ||
                json_integer_value(e) > INT32_MAX)
                return errmsg(err, errlen, -EINVAL,
                              "optimizer.schedule.milestones[%zu]: must be a positive integer", i);
            sc->milestones[i] = (int)json_integer_value(e);
            if (i > 0 && sc->milestones[i] <= sc->milestones[i - 1])
                return errmsg(err, errlen, -EINVAL,
                              "optimizer.schedule.milestones[%zu]: must be greater than the one "
                              "before (%d), got %d",
                              i, sc->milestones[i - 1], sc->milestones[i]);
        }
        sc->n_phases = (int)n;
    }
    if ((rc = parse_interval(v, sc, err, errlen))) return rc;
    if (sc->per_step && sc->phase[0].kind == SCHED_PLATEAU)
        return errmsg(err, errlen, -EINVAL,
                      "optimizer.schedule.interval: reduce_on_plateau steps once per epoch, on "
                      "the epoch's %s",
                      spec_metric_name(sc->phase[0].metric));
    return 0;
}

/* early_stopping: {"metric": "val_loss", "mode": "min", "patience": 3,
 * "min_delta": 0}; every field has that default. */
static int parse_early_stopping(json_t *v, struct spec_early_stopping *es, char *err, size_t errlen)
{
    static const char *const keys[] = {"metric", "mode", "patience", "min_delta"};
    const char *w = "early_stopping.";
    memset(es, 0, sizeof *es);
    if (json_is_null(v) || json_is_false(v)) return 0;
    es->patience = 3;
    es->on = true;
    if (json_is_true(v)) return 0;
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL,
                      "early_stopping: must be an object, e.g. {\"metric\": \"val_loss\", "
                      "\"patience\": 3}");
    int rc = check_keys(v, "early_stopping", keys, COUNT(keys), err, errlen);
    if (!rc) rc = get_metric(v, "metric", w, &es->metric, err, errlen);
    if (!rc) {
        /* accuracies improve upwards: their default mode is max */
        es->mode_max = es->metric == METRIC_VAL_ACCURACY || es->metric == METRIC_TRAIN_ACCURACY;
        rc = get_mode(v, w, &es->mode_max, err, errlen);
    }
    if (!rc) rc = get_int32(v, "patience", w, 1, 1000000, &es->patience, err, errlen);
    if (!rc) rc = get_number(v, "min_delta", w, &es->min_delta, err, errlen);
    if (!rc && es->min_delta < 0)
        rc = errmsg(err, errlen, -EINVAL, "early_stopping.min_delta: must be >= 0, got %g",
                    es->min_delta);
    return rc;
}

static int parse_optimizer(json_t *v, struct spec_optimizer *o, char *err, size_t errlen)
{
    static const char *const keys[] = {"name",
                                       "lr",
                                       "momentum",
                                       "dampening",
                                       "nesterov",
                                       "betas",
                                       "eps",
                                       "weight_decay",
                                       "alpha",
                                       "lr_decay",
                                       "initial_accumulator_value",
                                       "amsgrad",
                                       "centered",
                                       "schedule"};
    /* A bare string names the optimizer with its defaults. */
    if (json_is_string(v)) {
        json_t *wrap = json_pack("{sO}", "name", v);
        int rc = parse_optimizer(wrap, o, err, errlen);
        json_decref(wrap);
        return rc;
    }
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL, "optimizer: must be an object or a name");
    int rc = check_keys(v, "optimizer", keys, COUNT(keys), err, errlen);
    if (rc) return rc;
    int name = o->name;
    rc = get_enum(v, "name", "optimizer.", optim_names, COUNT(optim_names), &name, err, errlen);
    if (rc) return rc;
    /* Defaults depend on the optimizer, so they are set before the fields. */
    if (json_object_get(v, "name")) optimizer_defaults(o, name);
    json_t *sched = json_object_get(v, "schedule");
    if (sched && (rc = parse_schedule(sched, &o->schedule, err, errlen))) return rc;
    const char *w = "optimizer.";
    if (!rc) rc = get_number(v, "lr", w, &o->lr, err, errlen);
    if (!rc) rc = get_number(v, "momentum", w, &o->momentum, err, errlen);
    if (!rc) rc = get_number(v, "dampening", w, &o->dampening, err, errlen);
    if (!rc) rc = get_bool(v, "nesterov", w, &o->nesterov, err, errlen);
    if (!rc) rc = get_bool(v, "amsgrad", w, &o->amsgrad, err, errlen);
    if (!rc) rc = get_bool(v, "centered", w, &o->centered, err, errlen);
    if (!rc) rc = get_number(v, "eps", w, &o->eps, err, errlen);
    if (!rc) rc = get_number(v, "weight_decay", w, &o->weight_decay, err, errlen);
    if (!rc) rc = get_number(v, "alpha", w, &o->alpha, err, errlen);
    if (!rc) rc = get_number(v, "lr_decay", w, &o->lr_decay, err, errlen);
    if (!rc)
        rc = get_number(v, "initial_accumulator_value", w, &o->initial_accumulator, err, errlen);
    json_t *betas = json_object_get(v, "betas");
    if (!rc && betas) {
        if (!json_is_array(betas) || json_array_size(betas) != 2 ||
            !json_is_number(json_array_get(betas, 0)) || !json_is_number(json_array_get(betas, 1)))
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.betas: must be two numbers, e.g. [0.9, 0.999]");
        o->beta1 = json_number_value(json_array_get(betas, 0));
        o->beta2 = json_number_value(json_array_get(betas, 1));
    }
    return rc;
}

static int parse_regularization(json_t *v, struct mlq_spec *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"l1", "l2"};
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL, "regularization: must be an object");
    int rc = check_keys(v, "regularization", keys, COUNT(keys), err, errlen);
    if (!rc) rc = get_number(v, "l1", "regularization.", &s->l1, err, errlen);
    if (!rc) rc = get_number(v, "l2", "regularization.", &s->l2, err, errlen);
    return rc;
}

/* augment: {"random_crop": {"padding": 4}, "horizontal_flip": {"p": 0.5}};
 * "horizontal_flip": true is the flip with torchvision's p. */
static int parse_augment(json_t *v, struct spec_augment *a, char *err, size_t errlen)
{
    static const char *const keys[] = {"random_crop", "horizontal_flip"};
    static const char *const crop_keys[] = {"padding"};
    static const char *const flip_keys[] = {"p"};
    if (!json_is_object(v))
        return errmsg(err, errlen, -EINVAL,
                      "augment: must be an object, e.g. {\"random_crop\": {\"padding\": 4}, "
                      "\"horizontal_flip\": true}");
    int rc = check_keys(v, "augment", keys, COUNT(keys), err, errlen);
    if (rc) return rc;
    json_t *crop = json_object_get(v, "random_crop");
    if (crop) {
        if (!json_is_object(crop))
            return errmsg(err, errlen, -EINVAL,
                          "augment.random_crop: must be an object, e.g. {\"padding\": 4}");
        if ((rc =
                 check_keys(crop, "augment.random_crop", crop_keys, COUNT(crop_keys), err, errlen)))
            return rc;
        if (!json_object_get(crop, "padding"))
            return errmsg(err, errlen, -EINVAL,
                          "augment.random_crop.padding: required (zeros added on each side "
                          "before cropping back to the input's size)");
        int64_t pad = 0;
        if ((rc = get_int(crop, "padding", "augment.random_crop.", 0, SPEC_MAX_KERNEL, &pad, err,
                          errlen)))
            return rc;
        a->crop = true;
        a->crop_padding = (int)pad;
    }
    json_t *flip = json_object_get(v, "horizontal_flip");
    if (flip && json_is_boolean(flip)) {
        a->flip = json_is_true(flip);
        a->flip_p = 0.5;
    } else if (flip) {
        if (!json_is_object(flip))
            return errmsg(err, errlen, -EINVAL,
                          "augment.horizontal_flip: must be true, false or {\"p\": 0.5}");
        if ((rc = check_keys(flip, "augment.horizontal_flip", flip_keys, COUNT(flip_keys), err,
                             errlen)))
            return rc;
        a->flip = true;
        a->flip_p = 0.5;
        if ((rc = get_number(flip, "p", "augment.horizontal_flip.", &a->flip_p, err, errlen)))
            return rc;
        if (!(a->flip_p >= 0 && a->flip_p <= 1))
            return errmsg(err, errlen, -EINVAL,
                          "augment.horizontal_flip.p: must be in [0, 1], got %g", a->flip_p);
    }
    return 0;
}

int spec_from_json(json_t *doc, struct mlq_spec *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"kind",
                                       "name",
                                       "dataset",
                                       "validation",
                                       "validation_split",
                                       "model",
                                       "loss",
                                       "label_smoothing",
                                       "optimizer",
                                       "regularization",
                                       "batch_size",
                                       "epochs",
                                       "max_seconds",
                                       "seed",
                                       "threads",
                                       "checkpoint_every",
                                       "shuffle",
                                       "memory_budget_mb",
                                       "augment",
                                       "early_stopping",
                                       "run",
                                       "checkpoint",
                                       "input",
                                       "output",
                                       "priority",
                                       "max_attempts",
                                       "prompt",
                                       "tokens",
                                       "temperature",
                                       "top_k"};
    spec_defaults(s);
    if (!json_is_object(doc)) return errmsg(err, errlen, -EINVAL, "spec: must be a JSON object");
    int rc = check_keys(doc, "", keys, COUNT(keys), err, errlen);
    if (rc) return rc;

    int kind = s->kind, loss = s->loss;
    rc = get_enum(doc, "kind", "", kind_names, COUNT(kind_names), &kind, err, errlen);
    s->kind = kind;
    if (!rc) rc = get_string(doc, "name", "", s->name, sizeof s->name, err, errlen);

    json_t *v;
    if (!rc && (v = json_object_get(doc, "dataset")))
        rc = parse_dataset(v, "dataset", &s->dataset, err, errlen);
    /* predict names its inputs "input"; it is the same kind of object. */
    if (!rc && (v = json_object_get(doc, "input"))) {
        if (json_object_get(doc, "dataset"))
            return errmsg(err, errlen, -EINVAL, "input: give either dataset or input, not both");
        rc = parse_dataset(v, "input", &s->dataset, err, errlen);
    }
    if (!rc && (v = json_object_get(doc, "validation")) && !json_is_null(v)) {
        rc = parse_dataset(v, "validation", &s->validation, err, errlen);
        s->has_validation = true;
    }
    if (!rc) rc = get_number(doc, "validation_split", "", &s->validation_split, err, errlen);
    if (!rc && (v = json_object_get(doc, "model"))) rc = parse_model(v, s, err, errlen);
    /* Token ids are not pixels: a model that starts with an embedding reads
     * uint8 inputs as they are unless the spec says "scale". */
    if (!rc && s->typed && s->n_nodes > 0 && strcmp(s->node[0].type, "embedding") == 0) {
        json_t *d = json_object_get(doc, "dataset"), *val = json_object_get(doc, "validation");
        if (!json_is_object(d) || !json_object_get(d, "scale")) s->dataset.scale = false;
        if (!json_is_object(val) || !json_object_get(val, "scale")) s->validation.scale = false;
    }
    if (!rc) rc = get_enum(doc, "loss", "", loss_names, COUNT(loss_names), &loss, err, errlen);
    s->loss = loss;
    /* The output follows the loss unless given: mse trains a linear output
     * (logits would be read as class scores by predict). */
    v = json_object_get(doc, "model");
    if (!rc && s->loss == LOSS_MSE && !(json_is_object(v) && json_object_get(v, "output")))
        s->output = OUT_LINEAR;
    if (!rc) rc = get_number(doc, "label_smoothing", "", &s->label_smoothing, err, errlen);
    if (!rc && (v = json_object_get(doc, "optimizer")))
        rc = parse_optimizer(v, &s->optimizer, err, errlen);
    if (!rc && (v = json_object_get(doc, "regularization")))
        rc = parse_regularization(v, s, err, errlen);
    if (!rc) rc = get_int32(doc, "batch_size", "", 1, 1 << 24, &s->batch_size, err, errlen);
    if (!rc) rc = get_int32(doc, "epochs", "", 1, 1000000, &s->epochs, err, errlen);
    if (!rc) rc = get_number(doc, "max_seconds", "", &s->max_seconds, err, errlen);
    int64_t seed = (int64_t)s->seed;
    if (!rc) rc = get_int(doc, "seed", "", 0, INT64_MAX, &seed, err, errlen);
    s->seed = (uint64_t)seed;
    if (!rc) rc = get_int32(doc, "threads", "", 0, 256, &s->threads, err, errlen);
    if (!rc)
        rc = get_int32(doc, "checkpoint_every", "", 0, 1000000, &s->checkpoint_every, err, errlen);
    if (!rc) rc = get_bool(doc, "shuffle", "", &s->shuffle, err, errlen);
    if (!rc)
        rc = get_int(doc, "memory_budget_mb", "", 0, INT64_C(1) << 40, &s->memory_budget_mb, err,
                     errlen);
    if (!rc && (v = json_object_get(doc, "augment")))
        rc = parse_augment(v, &s->augment, err, errlen);
    if (!rc && (v = json_object_get(doc, "early_stopping")))
        rc = parse_early_stopping(v, &s->early_stopping, err, errlen);
    if (!rc) rc = get_int(doc, "run", "", 1, INT64_MAX, &s->run, err, errlen);
    if (!rc && (v = json_object_get(doc, "checkpoint"))) {
        if (json_is_integer(v) && json_integer_value(v) >= 0)
            snprintf(s->checkpoint, sizeof s->checkpoint, "%lld", (long long)json_integer_value(v));
        else
            rc =
                get_string(doc, "checkpoint", "", s->checkpoint, sizeof s->checkpoint, err, errlen);
    }
    if (!rc) rc = parse_output(doc, s, err, errlen);
    if (!rc && json_object_get(doc, "prompt")) {
        json_t *p = json_object_get(doc, "prompt");
        if (!json_is_string(p))
            rc = errmsg(err, errlen, -EINVAL, "prompt: must be a string");
        else if (json_string_length(p) >= sizeof s->prompt)
            rc = errmsg(err, errlen, -EINVAL, "prompt: %zu bytes, more than the %d allowed",
                        json_string_length(p), SPEC_PROMPT_MAX - 1);
        else if (json_string_length(p) == 0)
            rc = errmsg(err, errlen, -EINVAL, "prompt: must not be empty (the text to go on from)");
        else if (strlen(json_string_value(p)) != json_string_length(p))
            rc = errmsg(err, errlen, -EINVAL, "prompt: holds a NUL byte");
        else
            snprintf(s->prompt, sizeof s->prompt, "%s", json_string_value(p));
    }
    if (!rc) rc = get_int32(doc, "tokens", "", 1, SPEC_MAX_GENERATE, &s->gen_tokens, err, errlen);
    if (!rc) rc = get_number(doc, "temperature", "", &s->temperature, err, errlen);
    if (!rc) rc = get_int32(doc, "top_k", "", 0, 1 << 24, &s->top_k, err, errlen);
    if (!rc) rc = get_int32(doc, "priority", "", -1000000, 1000000, &s->priority, err, errlen);
    if (!rc) rc = get_int32(doc, "max_attempts", "", 1, 1000, &s->max_attempts, err, errlen);
    if (!rc) rc = spec_validate(s, err, errlen);
    return rc;
}

bool spec_generates(const struct mlq_spec *s)
{
    return s->kind == JOB_PREDICT && s->prompt[0];
}

int spec_validate(const struct mlq_spec *s, char *err, size_t errlen)
{
    if (s->prompt[0] && s->kind != JOB_PREDICT)
        return errmsg(err, errlen, -EINVAL,
                      "prompt: only predict jobs generate text (mlq generate), not %s jobs",
                      spec_kind_name(s->kind));
    if (spec_generates(s)) {
        if (s->dataset.path[0] || spec_dataset_pushed(&s->dataset) || s->output_path[0] ||
            s->output_push)
            return errmsg(err, errlen, -EINVAL,
                          "prompt: a predict job either generates text from a prompt or predicts "
                          "the rows of input into output, not both");
        if (!(s->temperature >= 0 && s->temperature <= 100))
            return errmsg(err, errlen, -EINVAL, "temperature: must be in [0, 100], got %g",
                          s->temperature);
    } else if (!s->dataset.path[0] && !spec_dataset_pushed(&s->dataset))
        return errmsg(err, errlen, -EINVAL,
                      s->kind == JOB_PREDICT ? "input.path: required" : "dataset.path: required");
    if (s->kind == JOB_TRAIN && s->typed && s->n_nodes < 1)
        return errmsg(err, errlen, -EINVAL, "model.layers: needs at least one layer");
    if (s->kind == JOB_TRAIN) {
        int64_t params = 0;
        for (int l = 0; l < s->n_layers; l++)
            params += ((int64_t)s->layers[l] + 1) * s->layers[l + 1];
        if (params > SPEC_MAX_PARAMS)
            return errmsg(err, errlen, -EINVAL,
                          "model.layers: %lld parameters is more than the %lld a trainer accepts",
                          (long long)params, (long long)SPEC_MAX_PARAMS);
        if (!s->typed && s->loss == LOSS_CROSS_ENTROPY && s->layers[s->n_layers] < 2)
            return errmsg(err, errlen, -EINVAL,
                          "model.layers: cross_entropy needs at least 2 outputs (classes)");
        if (s->loss == LOSS_CROSS_ENTROPY && (s->output == OUT_SIGMOID || s->output == OUT_LINEAR))
            return errmsg(err, errlen, -EINVAL,
                          "model.output: cross_entropy takes \"logits\" or \"softmax\" outputs");
        if (s->loss == LOSS_MSE && s->output == OUT_SOFTMAX)
            return errmsg(err, errlen, -EINVAL,
                          "model.output: mse takes \"linear\", \"logits\" or \"sigmoid\"");
        const struct spec_optimizer *o = &s->optimizer;
        if (!(o->lr > 0)) return errmsg(err, errlen, -EINVAL, "optimizer.lr: must be positive");
        if (o->momentum < 0 || o->dampening < 0 || o->weight_decay < 0 || o->eps < 0)
            return errmsg(err, errlen, -EINVAL,
                          "optimizer: momentum, dampening, weight_decay and eps must be >= 0");
        if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.nesterov: needs a positive momentum and zero dampening");
        if (o->beta1 < 0 || o->beta1 >= 1 || o->beta2 < 0 || o->beta2 >= 1)
            return errmsg(err, errlen, -EINVAL, "optimizer.betas: each must be in [0, 1)");
        if (o->alpha < 0 || o->alpha >= 1 + 1e-12)
            return errmsg(err, errlen, -EINVAL, "optimizer.alpha: must be in [0, 1]");
        if (s->l1 < 0 || s->l2 < 0)
            return errmsg(err, errlen, -EINVAL, "regularization: l1 and l2 must be >= 0");
        if (s->validation_split < 0 || s->validation_split >= 1)
            return errmsg(err, errlen, -EINVAL, "validation_split: must be in [0, 1)");
        if (!(s->max_seconds >= 0 && s->max_seconds <= 1e9))
            return errmsg(err, errlen, -EINVAL,
                          "max_seconds: must be between 0 (no limit) and 1e9, got %g",
                          s->max_seconds);
        if (!(s->label_smoothing >= 0 && s->label_smoothing < 1))
            return errmsg(err, errlen, -EINVAL, "label_smoothing: must be in [0, 1)");
        if (s->label_smoothing > 0 && s->loss != LOSS_CROSS_ENTROPY)
            return errmsg(err, errlen, -EINVAL, "label_smoothing: needs loss cross_entropy");
        if (s->has_validation && s->validation_split > 0)
            return errmsg(err, errlen, -EINVAL,
                          "validation_split: give either validation or validation_split");
        if (s->leaky_slope < 0)
            return errmsg(err, errlen, -EINVAL, "model.leaky_slope: must be >= 0");
        bool validates = s->has_validation || s->validation_split > 0;
        const struct spec_schedule *sc = &s->optimizer.schedule;
        if (sc->n_phases == 1 && sc->phase[0].kind == SCHED_PLATEAU && !validates &&
            sc->phase[0].metric <= METRIC_VAL_ACCURACY)
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.schedule.metric: %s needs validation data (validation or "
                          "validation_split), or watch train_loss",
                          spec_metric_name(sc->phase[0].metric));
        bool is_acc[] = {[METRIC_VAL_ACCURACY] = true,
                         [METRIC_TRAIN_ACCURACY] = true,
                         [METRIC_VAL_LOSS] = false,
                         [METRIC_TRAIN_LOSS] = false};
        if (s->loss != LOSS_CROSS_ENTROPY && sc->n_phases == 1 &&
            sc->phase[0].kind == SCHED_PLATEAU && is_acc[sc->phase[0].metric])
            return errmsg(err, errlen, -EINVAL,
                          "optimizer.schedule.metric: %s is measured with cross_entropy only "
                          "(this loss is %s)",
                          spec_metric_name(sc->phase[0].metric), spec_loss_name(s->loss));
        if (s->early_stopping.on && s->loss != LOSS_CROSS_ENTROPY &&
            is_acc[s->early_stopping.metric])
            return errmsg(err, errlen, -EINVAL,
                          "early_stopping.metric: %s is measured with cross_entropy only (this "
                          "loss is %s)",
                          spec_metric_name(s->early_stopping.metric), spec_loss_name(s->loss));
        if (s->early_stopping.on && !validates && s->early_stopping.metric <= METRIC_VAL_ACCURACY)
            return errmsg(err, errlen, -EINVAL,
                          "early_stopping.metric: %s needs validation data (validation or "
                          "validation_split), or watch train_loss",
                          spec_metric_name(s->early_stopping.metric));
    } else {
        if (s->run <= 0)
            return errmsg(err, errlen, -EINVAL, "run: required for %s jobs (the train job to use)",
                          spec_kind_name(s->kind));
        const char *c = s->checkpoint;
        if (strcmp(c, "last") != 0 && strcmp(c, "best") != 0) {
            char *end;
            errno = 0;
            long long n = strtoll(c, &end, 10);
            if (errno || *end || end == c || n < 0)
                return errmsg(err, errlen, -EINVAL,
                              "checkpoint: must be \"last\", \"best\" or an epoch");
        }
    }
    if (s->kind != JOB_TRAIN && (s->augment.crop || s->augment.flip))
        return errmsg(err, errlen, -EINVAL,
                      "augment: only train jobs augment their data (%s jobs read it as it is)",
                      spec_kind_name(s->kind));
    if (s->kind != JOB_TRAIN && s->early_stopping.on)
        return errmsg(err, errlen, -EINVAL, "early_stopping: only train jobs stop early");
    if (s->output_push && s->kind != JOB_PREDICT)
        return errmsg(err, errlen, -EINVAL, "output: only predict jobs write an output");
    if (s->kind == JOB_PREDICT && !spec_generates(s) && !s->output_path[0] && !s->output_push)
        return errmsg(err, errlen, -EINVAL,
                      "output: required for predict jobs (the HDF5 file to write)");
    return 0;
}

int spec_parse(const char *text, struct mlq_spec *spec, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        spec_defaults(spec);
        return errmsg(err, errlen, -EINVAL, "spec: invalid JSON at line %d column %d: %s",
                      jerr.line, jerr.column, jerr.text);
    }
    int rc = spec_from_json(doc, spec, err, errlen);
    json_decref(doc);
    return rc;
}

int spec_load(const char *path, struct mlq_spec *spec, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        spec_defaults(spec);
        return errmsg(err, errlen, -EINVAL, "%s: %s (line %d)", path, jerr.text, jerr.line);
    }
    char inner[512];
    int rc = spec_from_json(doc, spec, inner, sizeof inner);
    json_decref(doc);
    if (rc) errmsg(err, errlen, -EINVAL, "%s: %s", path, inner);
    return rc;
}

/* A pushed dataset is written without path: a trainer's cache path set into
 * the spec is not what the user named, and a spec with both is refused. */
static json_t *dataset_to_json(const struct spec_dataset *d)
{
    json_t *j = json_object();
    if (!spec_dataset_pushed(d)) json_object_set_new(j, "path", json_string(d->path));
    if (d->name[0]) json_object_set_new(j, "name", json_string(d->name));
    if (d->sha256[0]) json_object_set_new(j, "sha256", json_string(d->sha256));
    json_object_set_new(j, "x", json_string(d->x));
    json_object_set_new(j, "y", json_string(d->y));
    json_object_set_new(j, "scale", json_boolean(d->scale));
    return j;
}

static json_t *phase_to_json(const struct spec_sched_phase *p)
{
    json_t *j = json_pack("{ss}", "type", spec_sched_name(p->kind));
    switch (p->kind) {
    case SCHED_NONE:
        break;
    case SCHED_STEP:
        json_object_set_new(j, "step_size", json_integer(p->step_size));
        json_object_set_new(j, "gamma", json_real(p->gamma));
        break;
    case SCHED_MULTISTEP: {
        json_t *ms = json_array();
        for (int i = 0; i < p->n_milestones; i++)
            json_array_append_new(ms, json_integer(p->milestones[i]));
        json_object_set_new(j, "milestones", ms);
        json_object_set_new(j, "gamma", json_real(p->gamma));
        break;
    }
    case SCHED_EXPONENTIAL:
        json_object_set_new(j, "gamma", json_real(p->gamma));
        break;
    case SCHED_COSINE:
        json_object_set_new(j, "t_max", json_integer(p->t_max));
        json_object_set_new(j, "eta_min", json_real(p->eta_min));
        break;
    case SCHED_LINEAR:
        json_object_set_new(j, "start_factor", json_real(p->start_factor));
        json_object_set_new(j, "end_factor", json_real(p->end_factor));
        json_object_set_new(j, "total_iters", json_integer(p->total_iters));
        break;
    case SCHED_PLATEAU:
        json_object_set_new(j, "metric", json_string(spec_metric_name(p->metric)));
        json_object_set_new(j, "mode", json_string(p->mode_max ? "max" : "min"));
        json_object_set_new(j, "factor", json_real(p->factor));
        json_object_set_new(j, "patience", json_integer(p->patience));
        json_object_set_new(j, "threshold", json_real(p->threshold));
        json_object_set_new(j, "threshold_mode", json_string(p->threshold_abs ? "abs" : "rel"));
        json_object_set_new(j, "cooldown", json_integer(p->cooldown));
        json_object_set_new(j, "min_lr", json_real(p->min_lr));
        json_object_set_new(j, "eps", json_real(p->eps));
        break;
    }
    return j;
}

static json_t *schedule_to_json(const struct spec_schedule *sc)
{
    json_t *j;
    if (sc->n_phases == 1) {
        j = phase_to_json(&sc->phase[0]);
    } else {
        json_t *list = json_array(), *ms = json_array();
        for (int i = 0; i < sc->n_phases; i++) {
            json_array_append_new(list, phase_to_json(&sc->phase[i]));
            if (i + 1 < sc->n_phases) json_array_append_new(ms, json_integer(sc->milestones[i]));
        }
        j = json_pack("{ss so so}", "type", "sequential", "schedules", list, "milestones", ms);
    }
    json_object_set_new(j, "interval", json_string(sc->per_step ? "step" : "epoch"));
    return j;
}

/* Only the fields the optimizer uses, so that run lists and comparisons do
 * not show an SGD run's Adam betas. */
static json_t *optimizer_to_json(const struct spec_optimizer *o)
{
    json_t *j = json_pack("{ss sf sf}", "name", spec_optim_name(o->name), "lr", o->lr,
                          "weight_decay", o->weight_decay);
    switch (o->name) {
    case OPT_GD:
        break;
    case OPT_SGD:
        json_object_set_new(j, "momentum", json_real(o->momentum));
        json_object_set_new(j, "dampening", json_real(o->dampening));
        json_object_set_new(j, "nesterov", json_boolean(o->nesterov));
        break;
    case OPT_ADAM:
    case OPT_ADAMW:
        json_object_set_new(j, "betas", json_pack("[ff]", o->beta1, o->beta2));
        json_object_set_new(j, "eps", json_real(o->eps));
        json_object_set_new(j, "amsgrad", json_boolean(o->amsgrad));
        break;
    case OPT_RMSPROP:
        json_object_set_new(j, "alpha", json_real(o->alpha));
        json_object_set_new(j, "eps", json_real(o->eps));
        json_object_set_new(j, "momentum", json_real(o->momentum));
        json_object_set_new(j, "centered", json_boolean(o->centered));
        break;
    case OPT_ADAGRAD:
        json_object_set_new(j, "lr_decay", json_real(o->lr_decay));
        json_object_set_new(j, "eps", json_real(o->eps));
        json_object_set_new(j, "initial_accumulator_value", json_real(o->initial_accumulator));
        break;
    }
    /* Absent without one, so runs from before schedules keep their params. */
    if (o->schedule.n_phases) json_object_set_new(j, "schedule", schedule_to_json(&o->schedule));
    return j;
}

/* The typed layers from *at up to end, as objects with the fields given. */
static json_t *layers_to_json(const struct mlq_spec *s, int *at, int end)
{
    json_t *list = json_array();
    while (*at < end) {
        const struct spec_layer *l = &s->node[(*at)++];
        json_t *o = json_pack("{ss}", "type", l->type);
        const int ints[] = {l->out, l->kernel, l->stride, l->padding};
        const double nums[] = {l->p, l->negative_slope, l->momentum, l->eps};
        for (int f = 0; f < SPEC_N_LAYER_FIELDS; f++) {
            if (!(l->given & (1u << f))) continue;
            json_t *val;
            if (f <= SPEC_F_PADDING)
                val = json_integer(ints[f]);
            else if (f == SPEC_F_BIAS)
                val = json_boolean(l->bias);
            else if (f == SPEC_F_APPROXIMATE)
                val = json_boolean(l->approximate);
            else if (f == SPEC_F_VOCAB)
                val = json_integer(l->vocab);
            else if (f == SPEC_F_NUM_LAYERS)
                val = json_integer(l->num_layers);
            else if (f == SPEC_F_HEADS)
                val = json_integer(l->heads);
            else if (f == SPEC_F_SEQUENCE)
                val = json_boolean(l->sequence);
            else if (f == SPEC_F_CAUSAL)
                val = json_boolean(l->causal);
            else
                val = json_real(nums[f - SPEC_F_P]);
            json_object_set_new(o, spec_layer_field_names[f], val);
        }
        if (strcmp(l->type, "residual") == 0) {
            int branch_end = *at + l->branch_span, block_end = *at + l->span;
            json_object_set_new(o, "layers", layers_to_json(s, at, branch_end));
            if (block_end > branch_end)
                json_object_set_new(o, "shortcut", layers_to_json(s, at, block_end));
        }
        json_array_append_new(list, o);
    }
    return list;
}

json_t *spec_to_json(const struct mlq_spec *s)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "kind", json_string(spec_kind_name(s->kind)));
    if (s->name[0]) json_object_set_new(doc, "name", json_string(s->name));
    json_object_set_new(doc, s->kind == JOB_PREDICT ? "input" : "dataset",
                        dataset_to_json(&s->dataset));
    json_object_set_new(doc, "priority", json_integer(s->priority));
    json_object_set_new(doc, "max_attempts", json_integer(s->max_attempts));
    json_object_set_new(doc, "threads", json_integer(s->threads));
    json_object_set_new(doc, "memory_budget_mb", json_integer(s->memory_budget_mb));
    if (s->kind != JOB_TRAIN) {
        json_object_set_new(doc, "run", json_integer(s->run));
        json_object_set_new(doc, "checkpoint", json_string(s->checkpoint));
        if (s->kind == JOB_PREDICT && !spec_generates(s) && s->output_push) {
            json_t *out = json_pack("{s:b}", "push", 1);
            if (s->output_name[0]) json_object_set_new(out, "name", json_string(s->output_name));
            json_object_set_new(doc, "output", out);
        } else if (s->kind == JOB_PREDICT && !spec_generates(s)) {
            json_object_set_new(doc, "output", json_string(s->output_path));
        }
        if (spec_generates(s)) {
            json_object_del(doc, "input");
            json_object_set_new(doc, "prompt", json_string(s->prompt));
            json_object_set_new(doc, "tokens", json_integer(s->gen_tokens));
            json_object_set_new(doc, "temperature", json_real(s->temperature));
            json_object_set_new(doc, "top_k", json_integer(s->top_k));
            json_object_set_new(doc, "seed", json_integer((json_int_t)s->seed));
        }
        return doc;
    }
    if (s->has_validation)
        json_object_set_new(doc, "validation", dataset_to_json(&s->validation));
    else if (s->validation_split > 0)
        json_object_set_new(doc, "validation_split", json_real(s->validation_split));
    json_t *model;
    if (s->typed) {
        int at = 0;
        model = json_pack("{so ss}", "layers", layers_to_json(s, &at, s->n_nodes), "output",
                          spec_output_name(s->output));
        if (s->input_rank) {
            json_t *in = json_array();
            for (int i = 0; i < s->input_rank; i++)
                json_array_append_new(in, json_integer(s->input[i]));
            json_object_set_new(model, "input", in);
        }
    } else {
        json_t *layers = json_array();
        for (int i = 0; i <= s->n_layers; i++)
            json_array_append_new(layers, json_integer(s->layers[i]));
        model =
            json_pack("{so ss ss}", "layers", layers, "activation",
                      spec_activation_name(s->activation), "output", spec_output_name(s->output));
        if (s->activation == ACT_LEAKY_RELU)
            json_object_set_new(model, "leaky_slope", json_real(s->leaky_slope));
    }
    json_object_set_new(doc, "model", model);
    json_object_set_new(doc, "loss", json_string(spec_loss_name(s->loss)));
    if (s->label_smoothing > 0)
        json_object_set_new(doc, "label_smoothing", json_real(s->label_smoothing));
    json_object_set_new(doc, "optimizer", optimizer_to_json(&s->optimizer));
    json_object_set_new(doc, "regularization", json_pack("{sf sf}", "l1", s->l1, "l2", s->l2));
    json_object_set_new(doc, "batch_size", json_integer(s->batch_size));
    json_object_set_new(doc, "epochs", json_integer(s->epochs));
    if (s->max_seconds > 0) json_object_set_new(doc, "max_seconds", json_real(s->max_seconds));
    json_object_set_new(doc, "seed", json_integer((json_int_t)s->seed));
    json_object_set_new(doc, "checkpoint_every", json_integer(s->checkpoint_every));
    json_object_set_new(doc, "shuffle", json_boolean(s->shuffle));
    /* Absent when off, so runs from before augmentation keep their params. */
    if (s->augment.crop || s->augment.flip) {
        json_t *aug = json_object();
        if (s->augment.crop)
            json_object_set_new(aug, "random_crop",
                                json_pack("{si}", "padding", s->augment.crop_padding));
        if (s->augment.flip)
            json_object_set_new(aug, "horizontal_flip", json_pack("{sf}", "p", s->augment.flip_p));
        json_object_set_new(doc, "augment", aug);
    }
    const struct spec_early_stopping *es = &s->early_stopping;
    if (es->on)
        json_object_set_new(doc, "early_stopping",
                            json_pack("{ss ss si sf}", "metric", spec_metric_name(es->metric),
                                      "mode", es->mode_max ? "max" : "min", "patience",
                                      es->patience, "min_delta", es->min_delta));
    return doc;
}
