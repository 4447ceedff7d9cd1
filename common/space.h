/* Sweeps: the search space and the sweep's settings (docs/sweeps.md).
 * Parsed and validated here, by the cli before it sends and by the broker
 * before it queues; the broker expands a space into trials, each a full
 * train spec. Random draws come from the sweep's seed and the trial's
 * number only, so the same sweep yields the same trials anywhere. */
#ifndef MLQ_SPACE_H
#define MLQ_SPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define SPACE_MAX_AXES 32
#define SPACE_MAX_VALUES 4096       /* values of one grid or choice */
#define SPACE_FIELD_MAX 128         /* bytes of a dotted spec field */
#define SPACE_MAX_TRIALS 10000      /* trials of one sweep unless configured */
#define SPACE_MAX_TRIALS_CAP 100000 /* the most a configuration may allow */

enum space_kind { SPACE_GRID, SPACE_CHOICE, SPACE_UNIFORM, SPACE_LOGUNIFORM, SPACE_INT };

struct space_axis {
    char field[SPACE_FIELD_MAX]; /* "optimizer.lr" */
    enum space_kind kind;
    json_t *values; /* grid, choice: a non-empty array (a reference of its own) */
    double lo, hi;  /* uniform, loguniform: [lo, hi); int: [lo, hi] */
};

struct space {
    int n_axes; /* sorted by field, so the expansion does not depend on key order */
    struct space_axis axis[SPACE_MAX_AXES];
    uint64_t grid_size; /* product of the grid axes' sizes (1 without any) */
    bool random;        /* any axis drawn at random */
};

/* Parses a space against the base spec (canonical, with every default,
 * spec_to_json): each key must name a field the spec has, with a list (a
 * grid) or one of {"grid": [...]}, {"choice": [...]}, {"uniform": [lo, hi]},
 * {"loguniform": [lo, hi]} (lo > 0), {"int": [lo, hi]}. 0 or -EINVAL with
 * the field named in err. */
int space_parse(const json_t *doc, const json_t *base, struct space *sp, char *err, size_t errlen);
void space_free(struct space *sp); /* drops the value references; sp may be reused */

enum sweep_sched { SWEEP_NONE, SWEEP_ASHA, SWEEP_MEDIAN };

/* The settings of a sweep (SWEEP's "sweep" object, a spec file's "sweep"
 * section, mlq sweep's flags). */
struct sweep_opts {
    char name[128];
    int samples;      /* "trials": draws per grid point (Ray Tune's num_samples); 0 = 1 */
    int max_parallel; /* 0 = no cap */
    enum sweep_sched scheduler;
    char metric[64]; /* train_loss, train_accuracy, val_loss, val_accuracy */
    bool mode_max;
    int max_t; /* 0 = the trials' epochs */
    int grace_period;
    int reduction_factor;
    int min_samples;
    uint64_t seed;
};
void sweep_opts_defaults(struct sweep_opts *o);
/* Reads the fields o has (unknown ones are an error), validating each. */
int sweep_opts_from_json(const json_t *doc, struct sweep_opts *o, char *err, size_t errlen);
json_t *sweep_opts_to_json(const struct sweep_opts *o);
const char *sweep_sched_name(enum sweep_sched s);

/* Trials of the sweep: grid_size * samples; -EINVAL past max_trials (or
 * on overflow), with the count in err. */
int space_trial_count(const struct space *sp, const struct sweep_opts *o, uint64_t max_trials,
                      size_t *n, char *err, size_t errlen);

/* Trial i's spec (a copy of base with the drawn values set; epochs set to
 * max_t when o->max_t is given) and its values as {"field": value}. Both
 * new references. The spec is not validated here: spec_from_json it. */
int space_trial(const struct space *sp, const struct sweep_opts *o, const json_t *base, size_t i,
                json_t **spec, json_t **params, char *err, size_t errlen);

/* The checks that need a trial's parsed spec: the sweep's metric must be
 * one the trial reports (val_* needs validation data, accuracy needs
 * cross_entropy). 0 or -EINVAL. */
struct mlq_spec;
int sweep_check_trial(const struct sweep_opts *o, const struct mlq_spec *spec, char *err,
                      size_t errlen);

#endif
