/* The thread team (team.h): slices claimed from one atomic word, futex
 * waits after a short spin.
 *
 * state packs the job's generation (high 32 bits), its next unclaimed slice
 * (16 bits) and its slice count (low 16 bits), so that a claim is one
 * compare-and-swap that succeeds only for the job it was read from: a worker
 * that wakes late sees a newer generation or no slice left and claims
 * nothing. The job's fields (fn, ctx, base) are read only after a claim
 * succeeded; the job cannot end before that slice is done, so they are
 * stable. done counts the finished slices of the current job; the caller
 * waits for it to reach the count, which only slices already claimed can
 * hold up. Jobs of more than TEAM_CHUNK slices run as several jobs. */
#include "team.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TEAM_CHUNK 0xffff

/* Waiting: pause a few tens of microseconds (the next layer's slices
 * usually arrive within that while training), then sleep on the futex, so
 * that a worker on a busy core gives it up. (A sched_yield stage between
 * the two measured worse on a loaded machine: it hands the core to other
 * processes, not to the caller.) */
#define TEAM_SPIN_PAUSE 2000

/* The caller keeps an account of its workers: each job adds the time their
 * slices would have cost it alone and takes off the time it waited for
 * them (a worker descheduled inside a slice it claimed holds up the job).
 * When the account goes below zero the caller runs every slice alone (same
 * slices, same bits) for four times the deficit, within bounds, then tries
 * the team again: on a busy machine the team falls back to one thread
 * instead of below it, and a caller that is itself descheduled now and
 * then, while the workers go on, keeps the team. */
#define TEAM_CREDIT_MAX_NS INT64_C(20000000)
#define TEAM_SOLO_MIN_NS INT64_C(200000)
#define TEAM_SOLO_MAX_NS INT64_C(100000000)

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

enum { TASK_NONE, TASK_POSTED, TASK_RUNNING, TASK_DONE };

struct team_worker {
    struct team *team;
    int index;
    pthread_t thread;
};

struct team {
    int n; /* threads, the caller's included */
    struct team_worker worker[TEAM_MAX_THREADS];
    _Atomic uint64_t state;
    uint32_t gen; /* the caller's copy of the last generation published */
    /* The caller's account of its workers (team_judge): the time they
     * saved it so far, less what they cost; until solo_until it runs every
     * slice itself. */
    int64_t credit, solo_until; /* ns */
    void (*fn)(void *ctx, int slice, int thread);
    void *ctx;
    int base; /* first slice of this chunk */
    _Atomic uint32_t done;
    _Atomic uint32_t done_waiters;
    /* Bumped on every event a sleeping worker must see: a job, a task, a
     * release of the hold, quit. Workers sleep on it. */
    _Atomic uint32_t wake;
    _Atomic uint32_t sleepers;
    atomic_bool quit;
    atomic_bool hold;
    _Atomic uint32_t parked; /* workers stopped by the hold */
    _Atomic uint32_t parked_waiters;
    _Atomic uint32_t task_state;
    _Atomic uint32_t task_waiters;
    void (*task_fn)(void *ctx);
    void *task_ctx;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t value)
{
    /* EAGAIN (the word moved) and EINTR both mean: look again. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Returns once *word != value (spinning, then sleeping). *waiters
 * counts sleepers, so that whoever changes the word wakes them only when
 * there are some. */
static void wait_change(_Atomic uint32_t *word, uint32_t value, _Atomic uint32_t *waiters)
{
    for (int s = 0; s < TEAM_SPIN_PAUSE; s++) {
        if (atomic_load_explicit(word, memory_order_acquire) != value) return;
        cpu_relax();
    }
    atomic_fetch_add(waiters, 1);
    while (atomic_load(word) == value)
        futex_wait(word, value);
    atomic_fetch_sub(waiters, 1);
}

/* After a change of *word that a sleeper may wait on. */
static void wake_waiters(_Atomic uint32_t *word, _Atomic uint32_t *waiters)
{
    if (atomic_load(waiters)) futex_wake(word);
}

static void notify_workers(struct team *t)
{
    atomic_fetch_add(&t->wake, 1);
    wake_waiters(&t->wake, &t->sleepers);
}

static uint64_t state_pack(uint32_t gen, uint32_t next, uint32_t count)
{
    return (uint64_t)gen << 32 | (uint64_t)next << 16 | count;
}

/* Claims and runs slices of the job that st was read from, until none is
 * left or a newer job has replaced it. Returns how many it ran. */
static uint32_t team_claim(struct team *t, uint64_t st, int thread)
{
    uint32_t ran = 0;
    uint32_t gen = (uint32_t)(st >> 32);
    for (;;) {
        uint32_t next = (uint32_t)(st >> 16) & 0xffff, count = (uint32_t)st & 0xffff;
        if ((uint32_t)(st >> 32) != gen || next >= count) return ran;
        if (!atomic_compare_exchange_weak_explicit(&t->state, &st, st + (1u << 16),
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        t->fn(t->ctx, t->base + (int)next, thread);
        ran++;
        if (atomic_fetch_add_explicit(&t->done, 1, memory_order_acq_rel) + 1 == count)
            wake_waiters(&t->done, &t->done_waiters);
        st = atomic_load_explicit(&t->state, memory_order_acquire);
    }
}

/* Runs the posted background task if nobody has taken it yet. */
static void take_task(struct team *t)
{
    uint32_t posted = TASK_POSTED;
    if (!atomic_compare_exchange_strong(&t->task_state, &posted, TASK_RUNNING)) return;
    t->task_fn(t->task_ctx);
    atomic_store(&t->task_state, TASK_DONE);
    wake_waiters(&t->task_state, &t->task_waiters);
}

static void *team_worker_main(void *p)
{
    struct team_worker *w = p;
    struct team *t = w->team;
    uint32_t seen = 0; /* the generation of the last job this worker looked at */
    for (;;) {
        uint32_t ev = atomic_load(&t->wake);
        if (atomic_load(&t->quit)) return NULL;
        if (atomic_load(&t->hold)) {
            atomic_fetch_add(&t->parked, 1);
            wake_waiters(&t->parked, &t->parked_waiters);
            while (atomic_load(&t->hold)) {
                wait_change(&t->wake, ev, &t->sleepers);
                ev = atomic_load(&t->wake);
            }
            atomic_fetch_sub(&t->parked, 1);
            continue;
        }
        uint64_t st = atomic_load_explicit(&t->state, memory_order_acquire);
        if ((uint32_t)(st >> 32) != seen) {
            seen = (uint32_t)(st >> 32);
            (void)team_claim(t, st, w->index);
            continue;
        }
        if (atomic_load_explicit(&t->task_state, memory_order_acquire) == TASK_POSTED) {
            take_task(t);
            continue;
        }
        wait_change(&t->wake, ev, &t->sleepers);
    }
}

int team_size(const struct team *t)
{
    return t ? t->n : 1;
}

void team_destroy(struct team **tp)
{
    if (!tp || !*tp) return;
    struct team *t = *tp;
    team_task_wait(t);
    atomic_store(&t->hold, false);
    atomic_store(&t->quit, true);
    notify_workers(t);
    for (int i = 1; i < t->n; i++)
        pthread_join(t->worker[i].thread, NULL);
    free(t);
    *tp = NULL;
}

int team_create(struct team **out, int n)
{
    *out = NULL;
    if (n < 1 || n > TEAM_MAX_THREADS) return -EINVAL;
    if (n == 1) return 0;
    struct team *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->n = 1;
    for (int i = 1; i < n; i++) {
        t->worker[i] = (struct team_worker){.team = t, .index = i};
        if (pthread_create(&t->worker[i].thread, NULL, team_worker_main, &t->worker[i]) != 0) {
            team_destroy(&t);
            return -EAGAIN;
        }
        t->n = i + 1;
    }
    *out = t;
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* After a job of count slices, mine of which took busy ns and the rest
 * kept me waiting waited ns more. */
static void team_judge(struct team *t, uint32_t count, uint32_t mine, int64_t busy, int64_t waited,
                       int64_t now)
{
    /* All mine: nobody came, which cost only the hand-over. None mine: the
     * workers were all running. Neither says anything of a stall. */
    if (mine == 0 || mine == count) return;
    /* What the workers' slices would have cost me; when I was descheduled
     * in one of mine, they saved that too. */
    int64_t theirs = busy / mine * (int64_t)(count - mine);
    t->credit += theirs - waited;
    if (t->credit > TEAM_CREDIT_MAX_NS) t->credit = TEAM_CREDIT_MAX_NS;
    if (t->credit >= 0) return;
    int64_t spell = -4 * t->credit;
    spell = spell < TEAM_SOLO_MIN_NS ? TEAM_SOLO_MIN_NS : spell;
    spell = spell > TEAM_SOLO_MAX_NS ? TEAM_SOLO_MAX_NS : spell;
    t->solo_until = now + spell;
    t->credit = 0;
}

static void run_alone(int n_slices, void (*fn)(void *ctx, int slice, int thread), void *ctx)
{
    for (int s = 0; s < n_slices; s++)
        fn(ctx, s, 0);
}

void team_for(struct team *t, int n_slices, void (*fn)(void *ctx, int slice, int thread), void *ctx)
{
    if (!t || n_slices <= 1) {
        run_alone(n_slices, fn, ctx);
        return;
    }
    if (t->solo_until) {
        if (now_ns() < t->solo_until) {
            run_alone(n_slices, fn, ctx);
            return;
        }
        t->solo_until = 0;
    }
    for (int base = 0; base < n_slices; base += TEAM_CHUNK) {
        uint32_t count = (uint32_t)(n_slices - base < TEAM_CHUNK ? n_slices - base : TEAM_CHUNK);
        t->fn = fn;
        t->ctx = ctx;
        t->base = base;
        atomic_store_explicit(&t->done, 0, memory_order_relaxed);
        uint64_t st = state_pack(++t->gen, 0, count);
        atomic_store_explicit(&t->state, st, memory_order_release);
        notify_workers(t);
        int64_t t0 = now_ns();
        uint32_t mine = team_claim(t, st, 0);
        int64_t t1 = now_ns(), t2 = t1;
        /* Only slices claimed by a worker and still running are left. */
        uint32_t d = atomic_load_explicit(&t->done, memory_order_acquire);
        if (d < count) {
            do
                wait_change(&t->done, d, &t->done_waiters);
            while ((d = atomic_load_explicit(&t->done, memory_order_acquire)) < count);
            t2 = now_ns();
        }
        team_judge(t, count, mine, t1 - t0, t2 - t1, t2);
    }
}

void team_split(int total, int parts, int align, int index, int *lo, int *hi)
{
    if (parts < 1) parts = 1;
    if (align < 1) align = 1;
    int per = (total + parts - 1) / parts;
    per = (per + align - 1) / align * align;
    if (per < 1) per = 1;
    long l = (long)index * per, h = l + per;
    *lo = l < total ? (int)l : total;
    *hi = h < total ? (int)h : total;
}

int team_slices(int total, int parts, int align)
{
    if (total <= 0) return 0;
    if (parts < 1) parts = 1;
    if (align < 1) align = 1;
    int per = (total + parts - 1) / parts;
    per = (per + align - 1) / align * align;
    return (total + per - 1) / per;
}

int team_task_start(struct team *t, void (*fn)(void *ctx), void *ctx)
{
    if (!t) {
        fn(ctx);
        return 0;
    }
    if (atomic_load(&t->task_state) != TASK_NONE) return -EBUSY;
    t->task_fn = fn;
    t->task_ctx = ctx;
    atomic_store_explicit(&t->task_state, TASK_POSTED, memory_order_release);
    notify_workers(t);
    return 0;
}

void team_task_wait(struct team *t)
{
    if (!t || atomic_load(&t->task_state) == TASK_NONE) return;
    take_task(t); /* not taken yet: the workers are busy, asleep or descheduled */
    for (uint32_t s; (s = atomic_load_explicit(&t->task_state, memory_order_acquire)) != TASK_DONE;)
        wait_change(&t->task_state, s, &t->task_waiters);
    atomic_store(&t->task_state, TASK_NONE);
}

void team_hold_workers(struct team *t, bool hold)
{
    if (!t) return;
    atomic_store(&t->hold, hold);
    notify_workers(t);
    t->solo_until = 0; /* what was learnt of the held workers is void */
    t->credit = 0;
    for (uint32_t p; hold && (p = atomic_load(&t->parked)) < (uint32_t)(t->n - 1);)
        wait_change(&t->parked, p, &t->parked_waiters);
}
