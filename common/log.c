#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level max_level = LOG_LVL_INFO;
static const char *program = "mlq";

void log_set_level(enum log_level level)
{
    max_level = level;
}

void log_set_program(const char *name)
{
    program = name;
}

int log_parse_level(const char *name, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {{"error", LOG_LVL_ERROR},
                 {"warn", LOG_LVL_WARN},
                 {"warning", LOG_LVL_WARN},
                 {"info", LOG_LVL_INFO},
                 {"debug", LOG_LVL_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

static int to_journal(void)
{
    const char *forced = getenv("MLQ_LOG_JOURNAL");
    if (forced) return strcmp(forced, "1") == 0;
    return getenv("JOURNAL_STREAM") != NULL;
}

static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_LVL_ERROR:
        return "error";
    case LOG_LVL_WARN:
        return "warn";
    case LOG_LVL_INFO:
        return "info";
    case LOG_LVL_DEBUG:
        return "debug";
    }
    return "?";
}

void log_write(enum log_level level, const char *file, int line, int errnum, const char *fmt, ...)
{
    if (level > max_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    /* Only debug lines name the source place: users act on the message. */
    char place[128] = "";
    if (max_level >= LOG_LVL_DEBUG) {
        const char *base = strrchr(file, '/');
        snprintf(place, sizeof place, " (%s:%d)", base ? base + 1 : file, line);
    }
    char err[160] = "";
    if (errnum) snprintf(err, sizeof err, ": %s", strerror(errnum));

    if (to_journal()) {
        fprintf(stderr, "<%d>%s%s%s\n", (int)level, msg, err, place);
    } else {
        char stamp[32];
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ld %s %s: %s%s%s\n", stamp, ts.tv_nsec / 1000000, program,
                level_name(level), msg, err, place);
    }
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Starts a new second if the current one is over; returns the time. */
static double limit_roll(struct log_limit *l)
{
    double now = mono_s();
    if (now - l->window >= 1.0) {
        if (l->suppressed)
            log_write(l->suppressed_level, __FILE__, __LINE__, 0, "%u more %s", l->suppressed,
                      l->what);
        l->window = now;
        l->logged = l->suppressed = 0;
        l->suppressed_level = LOG_LVL_DEBUG;
    }
    return now;
}

void log_limit_flush(struct log_limit *l)
{
    if (l->suppressed) limit_roll(l);
}

void log_limited_write(struct log_limit *l, enum log_level level, const char *file, int line,
                       const char *fmt, ...)
{
    limit_roll(l);
    if (l->logged >= l->per_s) {
        l->suppressed++;
        if (level < l->suppressed_level) l->suppressed_level = level;
        return;
    }
    l->logged++;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write(level, file, line, 0, "%s", msg);
}
