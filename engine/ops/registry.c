/* Every layer kind, one row each: adding a layer is its file under
 * engine/ops/ and a row here (tests/test_ops_grad.c then checks it). */
#include <string.h>

#include "op.h"

extern const struct op_def op_dense, op_flatten, op_add;
extern const struct op_def op_conv2d, op_maxpool, op_avgpool, op_global_avgpool, op_batchnorm,
    op_dropout, op_relu, op_leaky_relu, op_sigmoid, op_tanh, op_gelu;
extern const struct op_def op_embedding, op_positional, op_lstm, op_gru, op_layernorm, op_attention,
    op_transformer, op_to_sequence, op_seq_mean;

static const struct op_def *const ops[] = {
    &op_dense,       &op_flatten,        &op_add,       &op_conv2d,    &op_maxpool,
    &op_avgpool,     &op_global_avgpool, &op_batchnorm, &op_dropout,   &op_relu,
    &op_leaky_relu,  &op_sigmoid,        &op_tanh,      &op_gelu,      &op_embedding,
    &op_positional,  &op_lstm,           &op_gru,       &op_layernorm, &op_attention,
    &op_transformer, &op_to_sequence,    &op_seq_mean,
};

const struct op_def *op_find(const char *type)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i]->type, type) == 0) return ops[i];
    return NULL;
}

const struct op_def *const *op_all(int *n)
{
    *n = (int)(sizeof ops / sizeof ops[0]);
    return ops;
}
