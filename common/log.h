/* One way to log: level, place and errno text, on stderr.
 *
 * Under journald (JOURNAL_STREAM set, or MLQ_LOG_JOURNAL=1) lines carry a
 * "<N>" syslog priority prefix and no timestamp, since journald adds its own.
 * On a terminal they carry a timestamp and the level name. */
#ifndef MLQ_LOG_H
#define MLQ_LOG_H

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

/* Messages above this level are dropped. Default: LOG_LVL_INFO. */
void log_set_level(enum log_level level);
/* Parses "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int log_parse_level(const char *name, enum log_level *out);
/* Prefix every line with the program's name, e.g. "mlq-broker". */
void log_set_program(const char *name);

void log_write(enum log_level level, const char *file, int line, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define log_error(...) log_write(LOG_LVL_ERROR, __FILE__, __LINE__, 0, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LVL_WARN, __FILE__, __LINE__, 0, __VA_ARGS__)
#define log_info(...) log_write(LOG_LVL_INFO, __FILE__, __LINE__, 0, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LVL_DEBUG, __FILE__, __LINE__, 0, __VA_ARGS__)
/* As log_error, with strerror(errnum) appended. */
#define log_errno(errnum, ...) log_write(LOG_LVL_ERROR, __FILE__, __LINE__, (errnum), __VA_ARGS__)

/* A rate limit for lines a peer can cause at will (malformed messages, a
 * flood of connections): at most per_s lines a second from one limiter; the
 * rest are counted, and the count ("N more WHAT") is logged when the next
 * second begins, by the next line or by log_limit_flush. Zero-initialise the
 * counters: struct log_limit l = LOG_LIMIT_INIT("malformed messages dropped", 10). */
struct log_limit {
    const char *what; /* names the suppressed lines in the count */
    unsigned per_s;
    double window; /* monotonic start of the current second */
    unsigned logged, suppressed;
    enum log_level suppressed_level; /* the most severe suppressed line's */
};
#define LOG_LIMIT_INIT(what, per_s)                                                                \
    {                                                                                              \
        (what), (per_s), 0.0, 0, 0, LOG_LVL_DEBUG                                                  \
    }

void log_limited_write(struct log_limit *l, enum log_level level, const char *file, int line,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define log_limited(l, level, ...) log_limited_write((l), (level), __FILE__, __LINE__, __VA_ARGS__)
/* Logs the count of suppressed lines once their second is over (call it from
 * a loop's housekeeping, so that the end of a flood is reported too). */
void log_limit_flush(struct log_limit *l);

#endif
