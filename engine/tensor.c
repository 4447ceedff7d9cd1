#include "tensor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tensor_table_add(struct tensor_table *tt, const char *prefix, const struct op_tensor *ot,
                     int node)
{
    if (tt->n == tt->cap) {
        int cap = tt->cap ? 2 * tt->cap : 16;
        struct tensor *t = realloc(tt->t, (size_t)cap * sizeof *t);
        if (!t) return -ENOMEM;
        tt->t = t;
        tt->cap = cap;
    }
    struct tensor *t = &tt->t[tt->n];
    memset(t, 0, sizeof *t);
    int len = snprintf(t->name, sizeof t->name, "%s.%s", prefix, ot->name);
    if (len < 0 || (size_t)len >= sizeof t->name) return -ENAMETOOLONG;
    t->kind = ot->kind;
    t->ndim = ot->ndim;
    t->size = 1;
    for (int i = 0; i < ot->ndim; i++) {
        t->shape[i] = ot->shape[i];
        t->size *= (size_t)ot->shape[i];
    }
    size_t *total = ot->kind == OP_PARAM ? &tt->n_params : &tt->n_state;
    t->offset = *total;
    *total += t->size;
    t->node = node;
    tt->n++;
    return 0;
}

void tensor_table_free(struct tensor_table *tt)
{
    if (!tt) return;
    free(tt->t);
    memset(tt, 0, sizeof *tt);
}

const struct tensor *tensor_find(const struct tensor_table *tt, const char *name)
{
    for (int i = 0; i < tt->n; i++)
        if (strcmp(tt->t[i].name, name) == 0) return &tt->t[i];
    return NULL;
}

bool tensor_is_batch_count(const struct tensor *t)
{
    static const char suffix[] = ".num_batches_tracked";
    size_t len = strlen(t->name), n = sizeof suffix - 1;
    return t->kind == OP_STATE && t->ndim == 0 && len > n && strcmp(t->name + len - n, suffix) == 0;
}
