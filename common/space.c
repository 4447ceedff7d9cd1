/* Search spaces and sweep settings (space.h, docs/sweeps.md). */
#include "space.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "spec.h"

static const char *const kind_names[] = {"grid", "choice", "uniform", "loguniform", "int"};
static const char *const sched_names[] = {"none", "asha", "median"};

const char *sweep_sched_name(enum sweep_sched s)
{
    return (unsigned)s < 3 ? sched_names[s] : "unknown";
}

/* The member of base at a dotted path, or NULL. */
static json_t *field_at(const json_t *base, const char *field)
{
    char buf[SPACE_FIELD_MAX];
    snprintf(buf, sizeof buf, "%s", field);
    json_t *cur = (json_t *)base;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok;
         tok = strtok_r(NULL, ".", &save)) {
        if (!json_is_object(cur)) return NULL;
        cur = json_object_get(cur, tok);
        if (!cur) return NULL;
    }
    return cur == base ? NULL : cur;
}

/* Sets a dotted path of doc (whose objects exist: the field was checked). */
static int field_set(json_t *doc, const char *field, json_t *v)
{
    char buf[SPACE_FIELD_MAX];
    snprintf(buf, sizeof buf, "%s", field);
    char *last = strrchr(buf, '.');
    json_t *parent = doc;
    if (last) {
        *last = '\0';
        parent = field_at(doc, buf);
        last++;
    } else {
        last = buf;
    }
    if (!json_is_object(parent)) {
        json_decref(v);
        return -EINVAL;
    }
    return json_object_set_new(parent, last, v) == 0 ? 0 : -ENOMEM;
}

static int range_of(const char *field, const char *kind, const json_t *v, double *lo, double *hi,
                    char *err, size_t errlen)
{
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(json_array_get(v, 0)) ||
        !json_is_number(json_array_get(v, 1)))
        return errmsg(err, errlen, -EINVAL, "space: %s: %s takes [low, high], two numbers", field,
                      kind);
    *lo = json_number_value(json_array_get(v, 0));
    *hi = json_number_value(json_array_get(v, 1));
    if (!isfinite(*lo) || !isfinite(*hi))
        return errmsg(err, errlen, -EINVAL, "space: %s: %s bounds must be finite", field, kind);
    if (*lo > *hi)
        return errmsg(err, errlen, -EINVAL, "space: %s: %s range has low %g > high %g", field, kind,
                      *lo, *hi);
    return 0;
}

static int axis_cmp(const void *a, const void *b)
{
    return strcmp(((const struct space_axis *)a)->field, ((const struct space_axis *)b)->field);
}

int space_parse(const json_t *doc, const json_t *base, struct space *sp, char *err, size_t errlen)
{
    memset(sp, 0, sizeof *sp);
    sp->grid_size = 1;
    if (!json_is_object(doc))
        return errmsg(err, errlen, -EINVAL, "space: must be a JSON object of spec fields");
    if (json_object_size(doc) == 0)
        return errmsg(err, errlen, -EINVAL, "space: empty: name at least one spec field");
    if (json_object_size(doc) > SPACE_MAX_AXES)
        return errmsg(err, errlen, -EINVAL, "space: at most %d fields", SPACE_MAX_AXES);
    const char *field;
    json_t *v;
    int rc = 0;
    json_object_foreach((json_t *)doc, field, v)
    {
        if (strlen(field) >= SPACE_FIELD_MAX || !field[0]) {
            rc = errmsg(err, errlen, -EINVAL, "space: a field name of 1 to %d bytes",
                        SPACE_FIELD_MAX - 1);
            break;
        }
        if (strcmp(field, "kind") == 0 || !field_at(base, field)) {
            rc = errmsg(err, errlen, -EINVAL,
                        "space: %s: the spec has no such field (fields are dotted spec paths, "
                        "e.g. optimizer.lr, batch_size, model.layers)",
                        field);
            break;
        }
        struct space_axis *a = &sp->axis[sp->n_axes];
        memset(a, 0, sizeof *a);
        snprintf(a->field, sizeof a->field, "%s", field);
        const json_t *arg = v;
        if (json_is_array(v)) {
            a->kind = SPACE_GRID;
        } else if (json_is_object(v) && json_object_size(v) == 1) {
            const char *k = json_object_iter_key(json_object_iter((json_t *)v));
            arg = json_object_get(v, k);
            int kind = -1;
            for (int i = 0; i < 5; i++)
                if (strcmp(k, kind_names[i]) == 0) kind = i;
            if (kind < 0) {
                rc = errmsg(err, errlen, -EINVAL,
                            "space: %s: unknown kind \"%s\" (grid, choice, uniform, loguniform "
                            "or int)",
                            field, k);
                break;
            }
            a->kind = (enum space_kind)kind;
        } else {
            rc = errmsg(err, errlen, -EINVAL,
                        "space: %s: a list (grid) or one of {\"grid\": [...]}, {\"choice\": "
                        "[...]}, {\"uniform\": [lo, hi]}, {\"loguniform\": [lo, hi]}, {\"int\": "
                        "[lo, hi]}",
                        field);
            break;
        }
        if (a->kind == SPACE_GRID || a->kind == SPACE_CHOICE) {
            if (!json_is_array(arg) || json_array_size(arg) == 0) {
                rc = errmsg(err, errlen, -EINVAL, "space: %s: %s needs a non-empty list", field,
                            kind_names[a->kind]);
                break;
            }
            if (json_array_size(arg) > SPACE_MAX_VALUES) {
                rc = errmsg(err, errlen, -EINVAL, "space: %s: at most %d values", field,
                            SPACE_MAX_VALUES);
                break;
            }
            a->values = json_incref((json_t *)arg);
            if (a->kind == SPACE_GRID) {
                uint64_t k = json_array_size(arg);
                if (sp->grid_size > UINT64_MAX / k)
                    sp->grid_size = UINT64_MAX;
                else
                    sp->grid_size *= k;
            } else {
                sp->random = true;
            }
        } else {
            rc = range_of(field, kind_names[a->kind], arg, &a->lo, &a->hi, err, errlen);
            if (rc) break;
            if (a->kind == SPACE_LOGUNIFORM && a->lo <= 0) {
                rc = errmsg(err, errlen, -EINVAL,
                            "space: %s: a loguniform range must be above 0, got [%g, %g]", field,
                            a->lo, a->hi);
                break;
            }
            if (a->kind == SPACE_INT && (a->lo != floor(a->lo) || a->hi != floor(a->hi) ||
                                         fabs(a->lo) > 1e15 || fabs(a->hi) > 1e15)) {
                rc = errmsg(err, errlen, -EINVAL, "space: %s: int bounds must be integers", field);
                break;
            }
            sp->random = true;
        }
        sp->n_axes++;
    }
    if (rc) {
        space_free(sp);
        return rc;
    }
    qsort(sp->axis, (size_t)sp->n_axes, sizeof sp->axis[0], axis_cmp);
    return 0;
}

void space_free(struct space *sp)
{
    for (int i = 0; i < sp->n_axes; i++)
        json_decref(sp->axis[i].values);
    memset(sp, 0, sizeof *sp);
}

int space_trial_count(const struct space *sp, const struct sweep_opts *o, uint64_t max_trials,
                      size_t *n, char *err, size_t errlen)
{
    uint64_t samples = o->samples > 0 ? (uint64_t)o->samples : 1;
    uint64_t total = sp->grid_size > UINT64_MAX / samples ? UINT64_MAX : sp->grid_size * samples;
    if (total > max_trials) {
        if (total == UINT64_MAX)
            return errmsg(err, errlen, -EINVAL,
                          "space: the sweep has more trials than can be counted; the limit is "
                          "%llu",
                          (unsigned long long)max_trials);
        return errmsg(err, errlen, -EINVAL,
                      "space: the sweep has %llu trials (a grid of %llu x %llu samples), more "
                      "than the limit of %llu (sweep.max_trials, mlq-broker --sweep-max-trials)",
                      (unsigned long long)total, (unsigned long long)sp->grid_size,
                      (unsigned long long)samples, (unsigned long long)max_trials);
    }
    *n = (size_t)total;
    return 0;
}

/* splitmix64: a stateless draw per (seed, trial, axis). */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double draw(uint64_t seed, size_t trial, int axis)
{
    uint64_t x = mix(mix(mix(seed) ^ (uint64_t)trial) ^ (uint64_t)axis);
    return (double)(x >> 11) * 0x1.0p-53; /* [0, 1) */
}

int space_trial(const struct space *sp, const struct sweep_opts *o, const json_t *base, size_t i,
                json_t **spec, json_t **params, char *err, size_t errlen)
{
    *spec = json_deep_copy(base);
    *params = json_object();
    if (!*spec || !*params) goto nomem;
    uint64_t g = sp->grid_size ? (uint64_t)i % sp->grid_size : 0;
    /* Grid axes in mixed radix, the last field varying fastest. */
    uint64_t rest = g;
    json_t *vals[SPACE_MAX_AXES] = {0};
    for (int a = sp->n_axes - 1; a >= 0; a--) {
        const struct space_axis *x = &sp->axis[a];
        if (x->kind != SPACE_GRID) continue;
        size_t k = json_array_size(x->values);
        vals[a] = json_deep_copy(json_array_get(x->values, (size_t)(rest % k)));
        rest /= k;
    }
    for (int a = 0; a < sp->n_axes; a++) {
        const struct space_axis *x = &sp->axis[a];
        double u = draw(o->seed, i, a);
        switch (x->kind) {
        case SPACE_GRID:
            break;
        case SPACE_CHOICE: {
            size_t k = json_array_size(x->values);
            size_t j = (size_t)(u * (double)k);
            vals[a] = json_deep_copy(json_array_get(x->values, j < k ? j : k - 1));
            break;
        }
        case SPACE_UNIFORM:
            vals[a] = json_real(x->lo + u * (x->hi - x->lo));
            break;
        case SPACE_LOGUNIFORM:
            vals[a] = json_real(exp(log(x->lo) + u * (log(x->hi) - log(x->lo))));
            break;
        case SPACE_INT: {
            double span = x->hi - x->lo + 1;
            double v = x->lo + floor(u * span);
            vals[a] = json_integer((json_int_t)(v > x->hi ? x->hi : v));
            break;
        }
        }
    }
    int rc = 0;
    for (int a = 0; a < sp->n_axes; a++) {
        if (!vals[a]) {
            rc = -ENOMEM;
            continue;
        }
        if (rc == 0) {
            json_object_set(*params, sp->axis[a].field, vals[a]);
            rc = field_set(*spec, sp->axis[a].field, vals[a]);
        } else {
            json_decref(vals[a]);
        }
    }
    if (rc == 0 && o->max_t > 0) rc = field_set(*spec, "epochs", json_integer(o->max_t));
    if (rc == -ENOMEM) goto nomem;
    if (rc) {
        json_decref(*spec);
        json_decref(*params);
        *spec = *params = NULL;
        return errmsg(err, errlen, -EINVAL, "space: trial %zu: a field cannot be set", i);
    }
    return 0;
nomem:
    json_decref(*spec);
    json_decref(*params);
    *spec = *params = NULL;
    return errmsg(err, errlen, -ENOMEM, "out of memory expanding trial %zu", i);
}

/* ---- settings ------------------------------------------------------------------- */

void sweep_opts_defaults(struct sweep_opts *o)
{
    memset(o, 0, sizeof *o);
    o->samples = 1;
    o->scheduler = SWEEP_ASHA;
    snprintf(o->metric, sizeof o->metric, "val_loss");
    /* Ray Tune's AsyncHyperBandScheduler: grace period 1, reduction factor 4;
       MedianStoppingRule: min_samples_required 3. */
    o->grace_period = 1;
    o->reduction_factor = 4;
    o->min_samples = 3;
    o->seed = 0;
}

static int get_int(const json_t *doc, const char *key, int lo, int hi, int *out, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(doc, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return errmsg(err, errlen, -EINVAL, "sweep.%s: must be an integer from %d to %d", key, lo,
                      hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static const char *const metric_names[] = {"val_loss", "val_accuracy", "train_loss",
                                           "train_accuracy"};

int sweep_opts_from_json(const json_t *doc, struct sweep_opts *o, char *err, size_t errlen)
{
    if (!json_is_object(doc)) return errmsg(err, errlen, -EINVAL, "sweep: must be an object");
    static const char *const known[] = {
        "name",  "trials",       "max_parallel",     "scheduler",   "metric", "mode",
        "max_t", "grace_period", "reduction_factor", "min_samples", "seed"};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)doc, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok) return errmsg(err, errlen, -EINVAL, "sweep.%s: unknown field", key);
    }
    int rc = 0;
    json_t *name = json_object_get(doc, "name");
    if (name) {
        if (!json_is_string(name) || json_string_length(name) >= sizeof o->name)
            return errmsg(err, errlen, -EINVAL, "sweep.name: a string of at most %zu bytes",
                          sizeof o->name - 1);
        snprintf(o->name, sizeof o->name, "%s", json_string_value(name));
    }
    if (!rc) rc = get_int(doc, "trials", 1, SPACE_MAX_TRIALS_CAP, &o->samples, err, errlen);
    if (!rc && json_is_integer(json_object_get(doc, "trials")) &&
        json_integer_value(json_object_get(doc, "trials")) < 1)
        rc = errmsg(err, errlen, -EINVAL, "sweep.trials: must be at least 1");
    if (!rc) rc = get_int(doc, "max_parallel", 0, 1 << 20, &o->max_parallel, err, errlen);
    if (!rc) rc = get_int(doc, "max_t", 0, 1 << 20, &o->max_t, err, errlen);
    if (!rc) rc = get_int(doc, "grace_period", 1, 1 << 20, &o->grace_period, err, errlen);
    if (!rc) rc = get_int(doc, "reduction_factor", 2, 1000, &o->reduction_factor, err, errlen);
    if (!rc) rc = get_int(doc, "min_samples", 1, 1 << 20, &o->min_samples, err, errlen);
    if (rc) return rc;
    json_t *sched = json_object_get(doc, "scheduler");
    if (sched) {
        int k = -1;
        for (int i = 0; i < 3 && json_is_string(sched); i++)
            if (strcmp(json_string_value(sched), sched_names[i]) == 0) k = i;
        if (k < 0) return errmsg(err, errlen, -EINVAL, "sweep.scheduler: asha, median or none");
        o->scheduler = (enum sweep_sched)k;
    }
    json_t *metric = json_object_get(doc, "metric");
    if (metric) {
        bool ok = false;
        for (size_t i = 0; json_is_string(metric) && i < 4; i++)
            ok |= strcmp(json_string_value(metric), metric_names[i]) == 0;
        if (!ok)
            return errmsg(err, errlen, -EINVAL,
                          "sweep.metric: no trial reports %s%s%s; one of val_loss, val_accuracy, "
                          "train_loss, train_accuracy",
                          json_is_string(metric) ? "\"" : "",
                          json_is_string(metric) ? json_string_value(metric) : "that",
                          json_is_string(metric) ? "\"" : "");
        snprintf(o->metric, sizeof o->metric, "%s", json_string_value(metric));
        if (!json_object_get(doc, "mode")) o->mode_max = strstr(o->metric, "accuracy") != NULL;
    }
    json_t *mode = json_object_get(doc, "mode");
    if (mode) {
        const char *m = json_string_value(mode);
        if (!m || (strcmp(m, "min") != 0 && strcmp(m, "max") != 0))
            return errmsg(err, errlen, -EINVAL, "sweep.mode: min or max");
        o->mode_max = strcmp(m, "max") == 0;
    }
    json_t *seed = json_object_get(doc, "seed");
    if (seed) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0)
            return errmsg(err, errlen, -EINVAL, "sweep.seed: a non-negative integer");
        o->seed = (uint64_t)json_integer_value(seed);
    }
    return 0;
}

json_t *sweep_opts_to_json(const struct sweep_opts *o)
{
    return json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:I}", "name", o->name,
                     "trials", o->samples, "max_parallel", o->max_parallel, "scheduler",
                     sweep_sched_name(o->scheduler), "metric", o->metric, "mode",
                     o->mode_max ? "max" : "min", "max_t", o->max_t, "grace_period",
                     o->grace_period, "reduction_factor", o->reduction_factor, "min_samples",
                     o->min_samples, "seed", (json_int_t)o->seed);
}

int sweep_check_trial(const struct sweep_opts *o, const struct mlq_spec *spec, char *err,
                      size_t errlen)
{
    if (spec->kind != JOB_TRAIN)
        return errmsg(err, errlen, -EINVAL, "sweep: the spec must be a train job");
    bool val = strncmp(o->metric, "val_", 4) == 0;
    if (val && !spec->has_validation && spec->validation_split <= 0)
        return errmsg(err, errlen, -EINVAL,
                      "sweep.metric: no trial reports %s: the spec has no validation data (give "
                      "validation or validation_split, or use a train_ metric)",
                      o->metric);
    if (strstr(o->metric, "accuracy") && spec->loss != LOSS_CROSS_ENTROPY)
        return errmsg(err, errlen, -EINVAL,
                      "sweep.metric: no trial reports %s: accuracy is measured with "
                      "cross_entropy only",
                      o->metric);
    if (o->scheduler == SWEEP_ASHA && o->grace_period >= spec->epochs && spec->epochs > 0)
        return errmsg(err, errlen, -EINVAL,
                      "sweep.grace_period: %d epochs leaves no rung before a trial's last epoch "
                      "(%d)",
                      o->grace_period, spec->epochs);
    return 0;
}
