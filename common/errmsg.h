/* Error messages for the caller: library functions return 0 or -errno and
 * say why in a buffer the caller owns (char *err, size_t errlen). */
#ifndef MLQ_ERRMSG_H
#define MLQ_ERRMSG_H

#include <stddef.h>

/* Formats the message into err (when err and errlen are set) and returns rc,
 * so that a failure reads `return errmsg(err, errlen, -EINVAL, "...", ...);`. */
int errmsg(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
