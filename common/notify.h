/* Telling systemd the truth about a service's state (sd_notify(3)).
 *
 * Every call is a no-op returning 0 when NOTIFY_SOCKET is unset, so programs
 * call them unconditionally. Results: 1 sent, 0 nothing to send, -errno on
 * a socket error (worth a log line, never worth dying for). */
#ifndef MLQ_NOTIFY_H
#define MLQ_NOTIFY_H

#include <stdint.h>

/* READY=1: start-up is complete (database open, sockets bound). */
int notify_ready(void);
/* STATUS=...: one line for `systemctl status`, e.g. "3 queued, 2 trainers". */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* WATCHDOG=1, at most once per half watchdog interval: call it from every
 * pass of the event loop. Sends nothing when the watchdog is off. */
int notify_watchdog(void);
/* STOPPING=1: shutdown has begun. */
int notify_stopping(void);
/* The watchdog interval systemd expects (WatchdogSec=) in microseconds, 0 when
 * the watchdog is off for this process. Loops cap their poll timeout at half. */
uint64_t notify_watchdog_usec(void);

/* Seam for tests: the monotonic clock in microseconds used for rate limiting. */
extern uint64_t (*notify_clock_usec)(void);

#endif
