#include "cgroup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first line of path into buf without its newline; 0 or -errno. */
static int read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) return -errno;
    char *got = fgets(buf, (int)len, f);
    fclose(f);
    if (!got) return -EIO;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

int cgroup_limits_read(const char *self_cgroup, const char *root, struct cgroup_limits *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(self_cgroup ? self_cgroup : "/proc/self/cgroup", "r");
    if (!f) return -errno;
    /* cgroup v2's line is "0::/PATH"; v1's hierarchies have other numbers. */
    char line[4096], dir[4096] = "";
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::/", 4) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(dir, sizeof dir, "%s", line + 3);
            break;
        }
    fclose(f);
    if (!dir[0]) return 0;
    char path[8300], v[256];
    const char *r = root ? root : "/sys/fs/cgroup";
    snprintf(path, sizeof path, "%s%s/memory.max", r, strcmp(dir, "/") ? dir : "");
    char *end;
    if (read_line(path, v, sizeof v) == 0 && strcmp(v, "max") != 0) {
        long long bytes = strtoll(v, &end, 10);
        if (end != v && bytes > 0) out->memory_max_mb = bytes / (1024 * 1024);
    }
    snprintf(path, sizeof path, "%s%s/cpu.max", r, strcmp(dir, "/") ? dir : "");
    long long quota, period;
    if (read_line(path, v, sizeof v) == 0 && sscanf(v, "%lld %lld", &quota, &period) == 2 &&
        quota > 0 && period > 0)
        out->cpus = (int)((quota + period - 1) / period);
    return 0;
}

int64_t cgroup_fit_budget(int64_t budget_mb, int64_t memory_max_mb)
{
    if (memory_max_mb <= 0) return budget_mb;
    int64_t fit = memory_max_mb / 4 * 3;
    if (fit < 1) fit = 1;
    return budget_mb > 0 && budget_mb < fit ? budget_mb : fit;
}
