/* The job spec: one JSON document that describes a train, eval or predict
 * job. Parsed and validated here and nowhere else; the cli validates before it
 * sends, the broker before it queues, the trainer before it runs.
 * The format is documented in docs/spec.md. */
#ifndef MLQ_SPEC_H
#define MLQ_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define SPEC_MAX_LAYERS 32      /* dense layers, so layer sizes hold one more */
#define SPEC_MAX_WIDTH 65536    /* units in one layer */
#define SPEC_PROMPT_MAX 4096    /* a generate job's prompt, bytes with its NUL */
#define SPEC_MAX_GENERATE 65536 /* tokens one generate job samples */
/* Parameters of one model: 2^28 floats is 1 GiB each for weights, gradients
 * and up to two optimizer buffers, already more than a dense net here needs. */
#define SPEC_MAX_PARAMS (INT64_C(1) << 28)
#define SPEC_PATH_MAX 1024
#define SPEC_NAME_MAX 128

/* Typed layers (model.layers as objects), counting a residual block and
 * every layer inside it. */
#define SPEC_MAX_NODES 128
#define SPEC_TYPE_MAX 16
#define SPEC_MAX_KERNEL 1024

enum job_kind { JOB_TRAIN, JOB_EVAL, JOB_PREDICT };
enum activation { ACT_RELU, ACT_SIGMOID, ACT_TANH, ACT_LEAKY_RELU };
/* What the last layer emits. LOGITS and SOFTMAX train identically with
 * cross-entropy (the loss is fused); they differ in what predict reports. */
enum output_kind { OUT_LOGITS, OUT_SOFTMAX, OUT_SIGMOID, OUT_LINEAR };
enum loss_kind { LOSS_CROSS_ENTROPY, LOSS_MSE };
enum optim_kind { OPT_GD, OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_RMSPROP, OPT_ADAGRAD };

/* The data is named by exactly one of: path (a file on the trainer's host),
 * or a pushed dataset (docs/datasets.md, "Pushed datasets") by name and/or
 * sha256. The broker adds the sha256 of a name at submit, so a stored spec
 * says which bytes it meant; a trainer fetches by sha256 into its cache and
 * sets path to the cached file. */
#define SPEC_DATASET_NAME_MAX 128
struct spec_dataset {
    char path[SPEC_PATH_MAX];
    char name[SPEC_DATASET_NAME_MAX + 1]; /* a pushed dataset's name, or "" */
    char sha256[65];                      /* 64 lower-case hex digits, or "" */
    char x[SPEC_NAME_MAX];                /* HDF5 dataset of inputs, default "X" */
    char y[SPEC_NAME_MAX];                /* HDF5 dataset of targets, default "y" */
    bool scale;                           /* uint8 inputs divided by 255, default true */
};

/* Learning-rate schedules: torch.optim.lr_scheduler's classes, names and
 * defaults (PyTorch 1.13), see docs/spec.md. The arithmetic is in
 * trainer/schedule.c. */
enum sched_kind {
    SCHED_NONE,
    SCHED_STEP,        /* StepLR */
    SCHED_MULTISTEP,   /* MultiStepLR */
    SCHED_EXPONENTIAL, /* ExponentialLR */
    SCHED_COSINE,      /* CosineAnnealingLR */
    SCHED_LINEAR,      /* LinearLR (warm-up) */
    SCHED_PLATEAU,     /* ReduceLROnPlateau */
};
#define SPEC_SCHED_MAX_PHASES 4      /* schedules in one sequential */
#define SPEC_SCHED_MAX_MILESTONES 64 /* multistep milestones */

/* The epoch metrics a schedule or early stopping can watch. */
enum spec_metric { METRIC_VAL_LOSS, METRIC_VAL_ACCURACY, METRIC_TRAIN_LOSS, METRIC_TRAIN_ACCURACY };

/* One scheduler with its fields; only its kind's fields are read. */
struct spec_sched_phase {
    enum sched_kind kind;
    int step_size;                             /* step */
    double gamma;                              /* step, multistep, exponential */
    int n_milestones;                          /* multistep */
    int milestones[SPEC_SCHED_MAX_MILESTONES]; /* multistep: increasing */
    int t_max;                                 /* cosine */
    double eta_min;                            /* cosine */
    double start_factor, end_factor;           /* linear */
    int total_iters;                           /* linear */
    /* plateau */
    enum spec_metric metric;
    bool mode_max;      /* mode "max" */
    double factor;      /* lr *= factor on a plateau */
    int patience;       /* epochs without improvement tolerated */
    double threshold;   /* what counts as an improvement */
    bool threshold_abs; /* threshold_mode "abs" (else "rel") */
    int cooldown;       /* epochs after a reduction before counting again */
    double min_lr;
    double eps; /* smaller reductions are skipped */
};

/* optimizer.schedule: none (n_phases 0), one scheduler, or several in
 * sequence (SequentialLR) switching at milestones. */
struct spec_schedule {
    int n_phases;
    struct spec_sched_phase phase[SPEC_SCHED_MAX_PHASES];
    int milestones[SPEC_SCHED_MAX_PHASES - 1]; /* n_phases - 1, increasing, >= 1 */
    bool per_step; /* "interval": "step": stepped after every optimizer step */
};

/* early_stopping: ends a run when metric has not improved by more than
 * min_delta for patience epochs. */
struct spec_early_stopping {
    bool on;
    enum spec_metric metric;
    bool mode_max;
    int patience;
    double min_delta;
};

/* PyTorch's names and defaults (torch.optim), see docs/spec.md. */
struct spec_optimizer {
    enum optim_kind name;
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
    struct spec_schedule schedule;
};

/* The fields a typed layer may give, in the bit order of spec_layer.given
 * (spec_layer_field_names). Which fields a type reads is the engine's
 * business (trainer/spec_model.c checks them against the op table). */
enum spec_layer_field {
    SPEC_F_OUT,
    SPEC_F_KERNEL,
    SPEC_F_STRIDE,
    SPEC_F_PADDING,
    SPEC_F_BIAS,
    SPEC_F_P,
    SPEC_F_NEGATIVE_SLOPE,
    SPEC_F_MOMENTUM,
    SPEC_F_EPS,
    SPEC_F_APPROXIMATE,
    SPEC_F_VOCAB,
    SPEC_F_NUM_LAYERS,
    SPEC_F_SEQUENCE,
    SPEC_F_HEADS,
    SPEC_F_CAUSAL,
    SPEC_N_LAYER_FIELDS
};
extern const char *const spec_layer_field_names[SPEC_N_LAYER_FIELDS];

/* One typed layer. PyTorch's defaults where a field is not given; stride
 * -1 means "not given" (conv2d: 1, pools: the kernel). A "residual" block
 * is followed by its branch (branch_span entries, nested blocks included)
 * and then its shortcut (span - branch_span entries; none: identity). */
struct spec_layer {
    char type[SPEC_TYPE_MAX];
    unsigned given; /* 1 << SPEC_F_* for each field the spec gave */
    int out, kernel, stride, padding;
    bool bias, approximate;
    int vocab, num_layers, heads; /* embedding, positional; lstm, gru; attention */
    bool sequence, causal;        /* lstm, gru (true); attention (false) */
    double p, negative_slope, momentum, eps;
    int span, branch_span; /* residual only */
};

/* Random transforms of training images (torchvision's RandomCrop(size,
 * padding) with zeros and RandomHorizontalFlip(p)), drawn per row from
 * (seed, epoch, row): never applied to validation, eval or predict. */
struct spec_augment {
    bool crop;        /* augment.random_crop */
    int crop_padding; /* zeros around each side; the crop is the input's size */
    bool flip;        /* augment.horizontal_flip */
    double flip_p;    /* probability of a mirrored image, default 0.5 */
};

struct mlq_spec {
    enum job_kind kind;
    char name[SPEC_NAME_MAX]; /* optional label shown in run lists */

    /* train and eval: the data; predict: the inputs (y unused). */
    struct spec_dataset dataset;
    bool has_validation;
    struct spec_dataset validation;
    double validation_split; /* fraction held out of dataset when no validation set */

    /* train */
    int n_layers;                    /* dense layers */
    int layers[SPEC_MAX_LAYERS + 1]; /* layer sizes, inputs first */
    /* model.layers as typed layers instead of widths: n_layers is 0 and
     * layers[] unused; the input shape is model.input or the dataset's. */
    bool typed;
    int n_nodes;
    struct spec_layer node[SPEC_MAX_NODES];
    int input_rank; /* model.input: 0 (absent), 1 (F), 2 (T, F) or 3 (C, H, W) */
    int input[3];
    enum activation activation; /* hidden layers */
    double leaky_slope;         /* leaky_relu negative slope, default 0.01 */
    enum output_kind output;
    enum loss_kind loss;
    double label_smoothing; /* cross-entropy's target mix with uniform, in [0, 1) */
    struct spec_optimizer optimizer;
    double l1, l2;  /* penalties on weights (not biases): l1*sum|w| + l2/2*sum w^2 */
    int batch_size; /* ignored by gd, which steps once per epoch on all data */
    int epochs;
    double max_seconds; /* train: a limit on the run's training time, 0: none */
    uint64_t seed;
    int threads;          /* BLAS threads; 0 = the trainer's default */
    int checkpoint_every; /* epochs between checkpoints; 0 = only the last */
    bool shuffle;
    int64_t memory_budget_mb; /* dataset bytes held in memory; 0 = default */
    struct spec_augment augment;
    struct spec_early_stopping early_stopping;

    /* eval and predict */
    int64_t run; /* the train job whose checkpoint is used */
    /* predict with a prompt (mlq generate): text from a language model's
     * checkpoint instead of rows of a file (docs/jobs-eval-predict.md) */
    char prompt[SPEC_PROMPT_MAX];    /* bytes, the first tokens */
    int gen_tokens;                  /* "tokens": how many to sample, default 100 */
    double temperature;              /* logits / temperature; 0 = the most likely */
    int top_k;                       /* sample among the k most likely; 0 = all */
    char checkpoint[32];             /* "last", "best" or an epoch number */
    char output_path[SPEC_PATH_MAX]; /* predict: HDF5 file written */
    /* predict with "output": {"push": true, "name"?}: the trainer pushes the
     * file to the broker's dataset store under output_name (default
     * predict-<job>), and the client fetches it (mlq predict --push) */
    bool output_push;
    char output_name[SPEC_DATASET_NAME_MAX + 1];
    bool output_new_only; /* not in the JSON: a confined trainer never writes over a file */

    /* queue */
    int priority;     /* higher first */
    int max_attempts; /* dispatches before the job fails, default 3 */
};

const char *spec_kind_name(enum job_kind kind);
const char *spec_activation_name(enum activation act);
const char *spec_output_name(enum output_kind out);
const char *spec_loss_name(enum loss_kind loss);
const char *spec_optim_name(enum optim_kind opt);
const char *spec_sched_name(enum sched_kind kind);
const char *spec_metric_name(enum spec_metric metric);

/* A pushed dataset's name: 1 to 128 bytes of letters, digits and . _ -, not
 * starting with . or - (never a path). */
bool spec_dataset_name_valid(const char *name);
/* True when d names a pushed dataset (name or sha256), not a path. */
bool spec_dataset_pushed(const struct spec_dataset *d);

/* Fills *spec with every default (a train job with the seed article's MLP). */
void spec_defaults(struct mlq_spec *spec);

/* Parses and validates a JSON document. Returns 0, or -EINVAL with a message
 * naming the offending field in err (e.g. "model.layers[2]: must be between 1
 * and 65536, got 0"). Unknown keys are errors, so typos do not pass silently. */
int spec_parse(const char *json_text, struct mlq_spec *spec, char *err, size_t errlen);
int spec_from_json(json_t *doc, struct mlq_spec *spec, char *err, size_t errlen);
/* Reads and parses a file; the message names the file. */
int spec_load(const char *path, struct mlq_spec *spec, char *err, size_t errlen);

/* Checks cross-field rules (kind-specific requirements, ranges). Called by
 * spec_parse; call it again after changing fields by hand. */
/* A predict job with a prompt: it generates text (mlq generate). */
bool spec_generates(const struct mlq_spec *s);
int spec_validate(const struct mlq_spec *spec, char *err, size_t errlen);

/* The canonical document with every default filled in; caller owns it
 * (json_decref). Round-trips through spec_from_json. */
json_t *spec_to_json(const struct mlq_spec *spec);

#endif
