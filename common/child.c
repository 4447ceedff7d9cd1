#include "child.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK_MS 200 /* how often a running child's activity is looked at */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads /proc/PID/NAME into buf, NUL-terminated; its length or -1. */
static ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, name);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* What a process has done so far: its CPU ticks (user and system) plus the
 * bytes it has read; -1 when /proc does not say. */
static int64_t activity(pid_t pid)
{
    char buf[1024];
    if (read_proc(pid, "stat", buf, sizeof buf) < 0) return -1;
    /* The command name, in parentheses, may hold spaces: count from its end. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2)
        return -1;
    int64_t total = (int64_t)(utime + stime);
    /* Without task I/O accounting a child blocked on a slow read counts as
     * stuck; the CPU ticks alone are what is left. */
    const char *rchar;
    unsigned long long bytes;
    if (read_proc(pid, "io", buf, sizeof buf) > 0 && (rchar = strstr(buf, "rchar:")) &&
        sscanf(rchar, "rchar: %llu", &bytes) == 1)
        total += (int64_t)bytes;
    return total;
}

static void pause_ms(int pidfd, int ms)
{
    if (pidfd >= 0) {
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        poll(&p, 1, ms); /* readable once the child has ended */
        return;
    }
    struct timespec ts = {.tv_nsec = 5 * 1000000L};
    nanosleep(&ts, NULL);
}

int child_wait(pid_t pid, double stall_s, int *status)
{
    if (stall_s <= 0) {
        while (waitpid(pid, status, 0) < 0)
            if (errno != EINTR) return -errno;
        return 0;
    }
    /* A pidfd wakes us the moment the child ends; without one (kernels
     * before 5.3) we look every few milliseconds. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int64_t seen = activity(pid);
    double last_change = now(), last_check = last_change;
    int rc = 0;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        pause_ms(pidfd, CHECK_MS);
        double t = now();
        if (t - last_check < CHECK_MS / 1000.0) continue;
        last_check = t;
        int64_t a = activity(pid);
        if (a < 0 || a != seen) { /* unknown counts as progress: never kill blind */
            seen = a;
            last_change = t;
        } else if (t - last_change >= stall_s) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            rc = -ETIMEDOUT;
            break;
        }
    }
    if (pidfd >= 0) close(pidfd);
    return rc;
}
