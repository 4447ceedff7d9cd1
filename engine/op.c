/* What every op shares: defaults, shapes, the uniform initialiser. */
#include "op.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void op_attrs_defaults(struct op_attrs *a)
{
    memset(a, 0, sizeof *a);
    a->stride = OP_UNSET;
    a->bias = true;
    a->p = 0.5f;
    a->negative_slope = 0.01f;
    a->momentum = 0.1f;
    a->eps = 1e-5f;
}

size_t shape_size(const struct shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->n; i++)
        n *= (size_t)s->d[i];
    return n;
}

bool shape_equal(const struct shape *a, const struct shape *b)
{
    if (a->n != b->n) return false;
    for (int i = 0; i < a->n; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

const char *shape_str(const struct shape *s, char *buf, size_t len)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < s->n && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, i ? ", %d" : "%d", s->d[i]);
    if (at < len) snprintf(buf + at, len - at, ")");
    return buf;
}

void op_uniform(float *x, size_t n, float bound, struct rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
}

int op_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}
