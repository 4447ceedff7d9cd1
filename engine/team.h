/* A small thread team: a parallel-for over fixed slices, claimed by whoever
 * is running.
 *
 * The caller cuts a piece of work into n_slices slices that depend only on
 * the problem and the team's size (never on timing), so a given size gives
 * the same bits run after run. Slices are claimed from one atomic counter by
 * the caller and by any worker that happens to be running; a worker that is
 * asleep, busy with the background task or descheduled on a loaded core
 * claims nothing, and team_for waits only for slices already claimed and in
 * progress, never for a thread that has not shown up. Which thread ran a
 * slice must not change its result: a slice writes its own outputs, and any
 * partial sum belongs to a slice (reduced in slice order), not to a thread.
 *
 * Waiting spins briefly (the next layer follows within microseconds while
 * training), then sleeps on a futex, so a worker on a busy core gives it up.
 * A worker descheduled inside a slice it claimed does hold the job up; when
 * such waits cost the caller more than the workers save it, the caller runs
 * the slices alone for a while (same slices, same bits). docs/engine.md,
 * "Threads". */
#ifndef MLQ_TEAM_H
#define MLQ_TEAM_H

#include <stdbool.h>

#define TEAM_MAX_THREADS 16

struct team;

/* Starts a team of n threads, the caller included (n - 1 workers, which
 * sleep until there is work). *out is NULL for n == 1: every function here
 * takes a NULL team and runs the work on the caller. Returns 0, -EINVAL
 * (n outside 1..TEAM_MAX_THREADS), -ENOMEM or -EAGAIN (no thread could
 * start; *out is NULL then). */
int team_create(struct team **out, int n);
/* Waits for the background task, stops the workers, frees the team and
 * nulls *t. Accepts NULL and a NULL *t. */
void team_destroy(struct team **t);
/* Threads of the team, the caller included: 1 for NULL. */
int team_size(const struct team *t);

/* Runs fn(ctx, slice, thread) once for every slice in [0, n_slices) and
 * returns when all have run. thread (0 = the caller, 1..size-1 a worker)
 * only picks per-thread scratch (size team_size(t)); what a slice computes
 * and where it writes must depend on slice alone. With a NULL team, one
 * thread or one slice, the slices run in order on the caller with no
 * synchronisation at all. Not reentrant: fn must not call team_for on the
 * same team; one caller at a time. */
void team_for(struct team *t, int n_slices, void (*fn)(void *ctx, int slice, int thread),
              void *ctx);

/* [*lo, *hi) of slice index of parts over [0, total): equal runs rounded up
 * to a multiple of align (e.g. 16 floats, one cache line), the last ones
 * shorter or empty. */
void team_split(int total, int parts, int align, int index, int *lo, int *hi);
/* The number of non-empty slices team_split makes of total in at most parts
 * runs that are multiples of align: what to pass to team_for. */
int team_slices(int total, int parts, int align);

/* Runs fn(ctx) in the background on a worker (e.g. reading the next batch
 * while the caller computes on this one); a worker takes it when it has no
 * slice to run, and the caller goes on with team_for meanwhile. One task at
 * a time: team_task_wait returns when it is done, running it on the caller
 * if no worker took it. With a NULL team fn runs at once. Returns 0 or
 * -EBUSY (a task is pending). */
int team_task_start(struct team *t, void (*fn)(void *ctx), void *ctx);
void team_task_wait(struct team *t);

/* Test seam: while held, the workers stop before claiming anything, as if
 * descheduled; holding returns once every worker has stopped (after the
 * slice or task it was running). tests/test_team.c shows that the caller
 * then runs every slice and the task alone. */
void team_hold_workers(struct team *t, bool hold);

#endif
