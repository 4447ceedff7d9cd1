/* What every op shares: defaults, shapes, the uniform initialiser, and the
 * cuts of an op's work over the team. */
#include "op.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "team.h"

void op_attrs_defaults(struct op_attrs *a)
{
    memset(a, 0, sizeof *a);
    a->stride = OP_UNSET;
    a->bias = true;
    a->p = 0.5f;
    a->negative_slope = 0.01f;
    a->momentum = 0.1f;
    a->eps = 1e-5f;
    a->num_layers = 1;
    a->sequence = true;
}

size_t shape_size(const struct shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->n; i++)
        n *= (size_t)s->d[i];
    return n;
}

bool shape_equal(const struct shape *a, const struct shape *b)
{
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

const char *shape_str(const struct shape *s, char *buf, size_t len)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < s->n && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, i ? ", %d" : "%d", s->d[i]);
    if (at < len) snprintf(buf + at, len - at, ")");
    return buf;
}

void op_uniform(float *x, size_t n, float bound, struct rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
}

void op_normal(float *x, size_t n, float mean, float std, struct rng *r)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - (double)rng_uniform(r); /* (0, 1]: log is finite */
        double u2 = (double)rng_uniform(r);
        double rad = sqrt(-2.0 * log(u1));
        x[i] = mean + std * (float)(rad * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = mean + std * (float)(rad * sin(6.283185307179586 * u2));
    }
}

int op_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* ---- threads ---- */

/* A call touching fewer floats than this runs whole on the caller when it
 * may: handing slices over costs a few microseconds. */
static size_t split_min_floats = 1 << 15;
/* Free cuts make two runs per thread, so that a worker descheduled on a
 * busy core leaves the others most of the work (team.h). */
#define OP_RUNS_PER_THREAD 2

void op_set_split_threshold(size_t floats)
{
    split_min_floats = floats;
}

int op_sample_slices(int B)
{
    return team_slices(B, OP_SAMPLE_SLICES, 1);
}

struct sample_job {
    const struct op_call *c;
    int slices;
    void (*fn)(const struct op_call *sub, int slice, void *ctx);
    void *ctx;
};

static void sample_slice(void *p, int slice, int thread)
{
    const struct sample_job *j = p;
    const struct op_call *c = j->c;
    const struct op_node *n = c->node;
    int lo, hi;
    team_split(c->B, j->slices, 1, slice, &lo, &hi);
    struct op_call sub = *c;
    sub.B = hi - lo;
    sub.b0 = c->b0 + lo;
    sub.scratch = c->scratch ? c->scratch + (size_t)thread * c->scratch_stride : NULL;
    size_t out = (size_t)lo * shape_size(&n->out);
    sub.out = c->out ? c->out + out : NULL;
    sub.dout = c->dout ? c->dout + out : NULL;
    for (int i = 0; i < n->n_in; i++) {
        size_t in = (size_t)lo * shape_size(&n->in[i]);
        sub.in[i] = c->in[i] ? c->in[i] + in : NULL;
        sub.din[i] = c->din[i] ? c->din[i] + in : NULL;
    }
    j->fn(&sub, slice, j->ctx);
}

void op_for_samples(const struct op_call *c, bool per_slice_sums,
                    void (*fn)(const struct op_call *sub, int slice, void *ctx), void *ctx)
{
    struct sample_job j = {c, 1, fn, ctx};
    if (per_slice_sums)
        j.slices = op_sample_slices(c->B);
    else if (c->team && (size_t)c->B * shape_size(&c->node->out) >= split_min_floats)
        j.slices = team_slices(c->B, team_size(c->team) * OP_RUNS_PER_THREAD, 1);
    team_for(c->team, j.slices, sample_slice, &j);
}

struct range_job {
    const struct op_call *c;
    int total, align, slices;
    void (*fn)(const struct op_call *c, int lo, int hi, float *scratch, void *ctx);
    void *ctx;
};

static void range_slice(void *p, int slice, int thread)
{
    const struct range_job *j = p;
    int lo, hi;
    team_split(j->total, j->slices, j->align, slice, &lo, &hi);
    float *scratch = j->c->scratch ? j->c->scratch + (size_t)thread * j->c->scratch_stride : NULL;
    j->fn(j->c, lo, hi, scratch, j->ctx);
}

/* runs of at least min_run, at most OP_RANGE_RUNS, before alignment */
static int range_parts(int total, int min_run)
{
    int runs = min_run > 0 ? total / min_run : total;
    return runs < 1 ? 1 : runs > OP_RANGE_RUNS ? OP_RANGE_RUNS : runs;
}

void op_for_range(const struct op_call *c, int total, int align, int min_run,
                  void (*fn)(const struct op_call *c, int lo, int hi, float *scratch, void *ctx),
                  void *ctx)
{
    if (total < 1) return;
    struct range_job j = {c, total, align, op_range_runs(total, align, min_run), fn, ctx};
    team_for(c->team, j.slices, range_slice, &j);
}

struct ranges_job {
    const struct op_call *c;
    const struct op_range_task *task;
    int first[OP_MAX_RANGE_TASKS + 1]; /* task k's runs are slices [first[k], first[k + 1]) */
};

static void ranges_slice(void *p, int slice, int thread)
{
    const struct ranges_job *j = p;
    int k = 0;
    while (slice >= j->first[k + 1])
        k++;
    const struct op_range_task *t = &j->task[k];
    int lo, hi;
    team_split(t->total, j->first[k + 1] - j->first[k], t->align, slice - j->first[k], &lo, &hi);
    float *scratch = j->c->scratch ? j->c->scratch + (size_t)thread * j->c->scratch_stride : NULL;
    t->fn(j->c, lo, hi, scratch, t->ctx);
}

void op_for_ranges(const struct op_call *c, const struct op_range_task *task, int n)
{
    struct ranges_job j = {c, task, {0}};
    for (int k = 0; k < n; k++)
        j.first[k + 1] =
            j.first[k] +
            (task[k].total > 0 ? op_range_runs(task[k].total, task[k].align, task[k].min_run) : 0);
    team_for(c->team, j.first[n], ranges_slice, &j);
}

int op_range_runs(int total, int align, int min_run)
{
    return team_slices(total, range_parts(total, min_run), align);
}

int op_range_index(int total, int align, int min_run, int lo)
{
    int lo0, per; /* every run but the last is per long */
    team_split(total, range_parts(total, min_run), align, 0, &lo0, &per);
    return per > 0 ? lo / per : 0;
}

struct sum_job {
    float *grad;
    const float *partials;
    int slices;
    size_t n;
};

static void sum_range(const struct op_call *c, int lo, int hi, float *scratch, void *p)
{
    (void)c, (void)scratch;
    const struct sum_job *j = p;
    float *restrict g = j->grad;
    for (int k = 0; k < j->slices; k++) {
        const float *restrict part = j->partials + (size_t)k * j->n;
        for (int i = lo; i < hi; i++)
            g[i] += part[i];
    }
}

void op_sum_partials(const struct op_call *c, float *grad, const float *partials, int slices,
                     size_t n)
{
    struct sum_job j = {grad, partials, slices, n};
    op_for_range(c, (int)n, 16, 4096, sum_range, &j);
}
