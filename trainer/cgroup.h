/* The limits of the trainer's own cgroup (v2): what systemd's MemoryMax= and
 * CPUQuota= set on mlq-trainer@.service. A trainer sizes its memory budget
 * and its default thread count to fit them, so that a unit's limit is the
 * one place to configure and a job is refused by its estimate rather than
 * killed by the kernel half-way. */
#ifndef MLQ_CGROUP_H
#define MLQ_CGROUP_H

#include <stdint.h>

struct cgroup_limits {
    int64_t memory_max_mb; /* memory.max in MiB, rounded down; 0: no limit */
    int cpus;              /* cpu.max's quota over its period, rounded up; 0: no limit */
};

/* Reads the limits of the cgroup named in self_cgroup (a /proc/PID/cgroup
 * file; NULL: /proc/self/cgroup) under the cgroup2 mount root (NULL:
 * /sys/fs/cgroup). Limits that are absent or "max" are 0; so is everything
 * on a host without cgroup v2. Returns 0, or -errno when self_cgroup cannot
 * be read. */
int cgroup_limits_read(const char *self_cgroup, const char *root, struct cgroup_limits *out);

/* The memory budget that fits memory_max_mb: three quarters of it (the rest
 * for the program, the dataset readers and the estimate's error), never more
 * than budget_mb (0: no budget of its own); budget_mb when there is no limit. */
int64_t cgroup_fit_budget(int64_t budget_mb, int64_t memory_max_mb);

#endif
