#include "schedule.h"

#include <math.h>
#include <stdbool.h>

/* torch's get_lr of one chainable scheduler at its last_epoch e, from the
 * current lr: each branch is the Python expression, in its order. */
static double chain_lr(const struct spec_sched_phase *p, int64_t e, double lr, double base)
{
    switch (p->kind) {
    case SCHED_STEP:
        if (e == 0 || e % p->step_size != 0) return lr;
        return lr * p->gamma;
    case SCHED_MULTISTEP:
        for (int i = 0; i < p->n_milestones; i++)
            if (p->milestones[i] == e) return lr * p->gamma; /* gamma ** 1: once each */
        return lr;
    case SCHED_EXPONENTIAL:
        if (e == 0) return lr;
        return lr * p->gamma;
    case SCHED_COSINE: {
        double T = p->t_max, eta = p->eta_min;
        if (e == 0) return lr;
        if ((e - 1 - p->t_max) % (2 * (int64_t)p->t_max) == 0)
            return lr + (base - eta) * (1 - cos(M_PI / T)) / 2;
        return (1 + cos(M_PI * (double)e / T)) / (1 + cos(M_PI * (double)(e - 1) / T)) *
                   (lr - eta) +
               eta;
    }
    case SCHED_LINEAR: {
        double s = p->start_factor, d = p->end_factor - p->start_factor;
        if (e == 0) return lr * s;
        if (e > p->total_iters) return lr;
        return lr * (1. + d / ((double)p->total_iters * s + (double)(e - 1) * d));
    }
    case SCHED_NONE:
    case SCHED_PLATEAU:
        break;
    }
    return lr;
}

/* torch's _get_closed_form_lr at last_epoch 0, what SequentialLR's
 * scheduler.step(0) sets when a scheduler takes over. */
static double closed_form_at_0(const struct spec_sched_phase *p, double base)
{
    switch (p->kind) {
    case SCHED_LINEAR:
        return base * (p->start_factor + (p->end_factor - p->start_factor) * 0 / p->total_iters);
    case SCHED_COSINE:
        return p->eta_min + (base - p->eta_min) * (1 + cos(M_PI * 0 / p->t_max)) / 2;
    case SCHED_STEP:
    case SCHED_MULTISTEP:
    case SCHED_EXPONENTIAL:
        return base * pow(p->gamma, 0);
    case SCHED_NONE:
    case SCHED_PLATEAU:
        break;
    }
    return base;
}

void schedule_init(struct schedule_state *st, const struct spec_schedule *sc, double base_lr)
{
    *st = (struct schedule_state){.lr = base_lr, .base_lr = base_lr};
    if (sc->n_phases == 0) return;
    const struct spec_sched_phase *p = &sc->phase[0];
    if (p->kind == SCHED_PLATEAU) {
        st->best = p->mode_max ? -INFINITY : INFINITY;
        return;
    }
    /* torch's _initial_step: a step to last_epoch 0 */
    st->lr = chain_lr(p, 0, st->lr, base_lr);
}

static bool plateau_better(const struct spec_sched_phase *p, double a, double best)
{
    if (!p->mode_max && !p->threshold_abs) return a < best * (1. - p->threshold);
    if (!p->mode_max) return a < best - p->threshold;
    if (!p->threshold_abs) return a > best * (p->threshold + 1.);
    return a > best + p->threshold;
}

void schedule_step(struct schedule_state *st, const struct spec_schedule *sc, double metric)
{
    if (sc->n_phases == 0) return;
    const struct spec_sched_phase *p = &sc->phase[0];
    st->last_epoch++;
    if (p->kind == SCHED_PLATEAU) {
        /* ReduceLROnPlateau.step(metrics); a NaN metric is never better */
        if (plateau_better(p, metric, st->best)) {
            st->best = metric;
            st->num_bad_epochs = 0;
        } else {
            st->num_bad_epochs++;
        }
        if (st->cooldown_counter > 0) {
            st->cooldown_counter--;
            st->num_bad_epochs = 0;
        }
        if (st->num_bad_epochs > p->patience) {
            double old_lr = st->lr;
            double new_lr = fmax(old_lr * p->factor, p->min_lr);
            if (old_lr - new_lr > p->eps) st->lr = new_lr;
            st->cooldown_counter = p->cooldown;
            st->num_bad_epochs = 0;
        }
        st->phase_epoch = st->last_epoch;
        return;
    }
    /* SequentialLR.step: bisect_right(milestones, last_epoch) */
    int idx = 0;
    while (idx < sc->n_phases - 1 && sc->milestones[idx] <= st->last_epoch)
        idx++;
    if (idx > 0 && sc->milestones[idx - 1] == st->last_epoch) {
        st->phase_epoch = 0;
        st->lr = closed_form_at_0(&sc->phase[idx], st->base_lr);
    } else {
        st->phase_epoch++;
        st->lr = chain_lr(&sc->phase[idx], st->phase_epoch, st->lr, st->base_lr);
    }
}
