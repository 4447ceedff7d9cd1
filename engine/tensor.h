/* The tensor table: every named tensor of a model with its shape and its
 * place in one of two flat buffers, the parameters (optimized, gradients in
 * the same layout) and the state arena (saved, not optimized: batch norm's
 * running statistics). The same table names the checkpoint's tensors and
 * the export's (PyTorch state_dict keys), as llm.c's parameter table does. */
#ifndef MLQ_TENSOR_H
#define MLQ_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "op.h"

struct tensor {
    char name[OP_NAME_MAX]; /* "0.weight", "3.branch.1.running_var" */
    enum op_tensor_kind kind;
    int ndim;
    int shape[4];
    size_t offset; /* floats into params (OP_PARAM) or state (OP_STATE) */
    size_t size;   /* floats */
    int node;      /* the model node that owns it */
};

struct tensor_table {
    int n, cap;
    struct tensor *t; /* (n), owned */
    size_t n_params;  /* floats of all OP_PARAM tensors */
    size_t n_state;   /* floats of all OP_STATE tensors */
};

/* Appends prefix.suffix with the next offset of its kind. Returns 0,
 * -ENAMETOOLONG or -ENOMEM. */
int tensor_table_add(struct tensor_table *tt, const char *prefix, const struct op_tensor *ot,
                     int node);
void tensor_table_free(struct tensor_table *tt);
const struct tensor *tensor_find(const struct tensor_table *tt, const char *name);
/* Whether t is a batch norm's num_batches_tracked: a state scalar counting
 * training forward passes (a float here, an int64 in torch's state_dict). */
bool tensor_is_batch_count(const struct tensor *t);

#endif
