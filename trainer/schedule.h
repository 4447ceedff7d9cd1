/* Learning-rate schedules with torch.optim.lr_scheduler's arithmetic
 * (PyTorch 1.13): the same recurrences in the same order of operations in
 * double precision, so the sequence of learning rates equals PyTorch's
 * (tests/parity/schedules.json). Pure functions over a small state that a
 * checkpoint carries (docs/checkpoint.md).
 *
 * Use, as a PyTorch loop calls scheduler.step():
 *     schedule_init(&st, &spec->optimizer.schedule, spec->optimizer.lr);
 *     every epoch (or, with interval "step", every optimizer step):
 *         train with st.lr, then schedule_step(&st, sc, metric);
 * metric is read by reduce_on_plateau only (NAN otherwise is fine). */
#ifndef MLQ_SCHEDULE_H
#define MLQ_SCHEDULE_H

#include <stdint.h>

#include "spec.h"

struct schedule_state {
    double lr;           /* the learning rate in effect now */
    double base_lr;      /* optimizer.lr: torch's initial_lr */
    int64_t last_epoch;  /* steps taken (SequentialLR's or the one scheduler's last_epoch) */
    int64_t phase_epoch; /* the active scheduler's own last_epoch */
    /* reduce_on_plateau */
    double best;
    int64_t num_bad_epochs;
    int64_t cooldown_counter;
};

/* The state after construction (torch's initial step): st->lr is the
 * learning rate of the first epoch or step. sc may have no phases (a
 * constant lr). */
void schedule_init(struct schedule_state *st, const struct spec_schedule *sc, double base_lr);

/* One scheduler.step() (scheduler.step(metric) for reduce_on_plateau). */
void schedule_step(struct schedule_state *st, const struct spec_schedule *sc, double metric);

#endif
