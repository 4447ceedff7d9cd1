#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#ifdef MLQ_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#else
/* Built without libsystemd: nothing to notify. */
static int sd_notify(int unset, const char *state)
{
    return 0;
}
static int sd_watchdog_enabled(int unset, uint64_t *usec)
{
    return 0;
}
#endif

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t (*notify_clock_usec)(void) = monotonic_usec;

/* When WATCHDOG=1 was last sent; 0 = never. Atomic: the trainer may feed the
 * watchdog from more than one thread. */
static _Atomic uint64_t last_watchdog;

int notify_ready(void)
{
    return sd_notify(0, "READY=1");
}

int notify_stopping(void)
{
    return sd_notify(0, "STOPPING=1");
}

int notify_status(const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "STATUS=");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    return sd_notify(0, msg);
}

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    /* Checks WATCHDOG_PID too: a child does not inherit its parent's watchdog. */
    if (sd_watchdog_enabled(0, &usec) <= 0) return 0;
    return usec;
}

int notify_watchdog(void)
{
    uint64_t usec = notify_watchdog_usec();
    if (!usec) return 0;
    uint64_t now = notify_clock_usec();
    uint64_t last = atomic_load(&last_watchdog);
    if (last && now - last < usec / 2) return 0;
    /* One thread wins the slot; the others have nothing to send. */
    if (!atomic_compare_exchange_strong(&last_watchdog, &last, now)) return 0;
    return sd_notify(0, "WATCHDOG=1");
}
