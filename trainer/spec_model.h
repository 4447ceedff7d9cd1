/* From a job spec to the engine's own descriptions: the one place that knows
 * both struct mlq_spec (common/spec.h) and the engine's types (engine/), so
 * that the engine links without jansson or the spec parser. */
#ifndef MLQ_SPEC_MODEL_H
#define MLQ_SPEC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "net.h"
#include "optim.h"
#include "spec.h"

void spec_model_net_config(const struct mlq_spec *spec, struct net_config *cfg);
void spec_model_optim_config(const struct spec_optimizer *o, struct optim_config *cfg);

/* net_create and optim_create on the translated descriptions; same returns. */
int spec_model_net_create(struct net *net, const struct mlq_spec *spec);
int spec_model_optim_create(struct optim *opt, const struct spec_optimizer *o, size_t n);

/* The input shape per sample of a dataset whose X has x_rank dimensions
 * x_dims (the first is N): (N, D) is (D), (N, H, W) one channel (1, H, W),
 * (N, C, H, W) is (C, H, W). */
struct shape spec_model_dataset_shape(int x_rank, const int64_t *x_dims);

/* The model of a train spec: a list of widths becomes dense layers with the
 * spec's activation between them (named 0, 2, 4, ... as nn.Sequential
 * would); typed layers become one node each, a residual block its branch,
 * its shortcut and an add. The input shape is model.input, else `data`
 * (the dataset's, NULL if unknown), else the widths' first. Returns 0,
 * -EINVAL with err naming the layer (also "input shape unknown": *d is then
 * filled but its input is empty) or -ENOMEM. */
int spec_model_desc(const struct mlq_spec *spec, const struct shape *data, struct model_desc *d,
                    char *err, size_t errlen);

/* spec_model_desc then model_create. Returns 0, -EINVAL (err says why) or
 * -ENOMEM. */
int spec_model_create(struct model *m, const struct mlq_spec *spec, const struct shape *data,
                      char *err, size_t errlen);

/* Everything about a train spec's model that needs the engine: known layer
 * types and their fields, shapes (when the input shape is known: from
 * model.input, the widths, or `data`), the parameter limit, and a
 * checkpoint that fits one protocol message. What cli, broker and trainer
 * call after spec_parse. Returns 0 (also for eval and predict specs) or
 * -EINVAL with err. sizes (may be NULL) receives the model's sizes for
 * `batch` samples when the shapes were checked; *checked says whether they
 * were (NULL allowed). */
int spec_model_check(const struct mlq_spec *spec, const struct shape *data, int batch,
                     struct model_sizes *sizes, bool *checked, char *err, size_t errlen);

/* A model in one line, into buf: a list of widths as "784-128-64-10";
 * typed layers by their ops' abbreviations, with the width of layers that
 * have one, activations, flatten and dropout left out, a residual block
 * as res(...) ("conv32-bn-pool-conv64-bn-pool-fc128-fc10"). Returns buf. */
const char *spec_model_describe(const struct mlq_spec *spec, char *buf, size_t len);

/* The bytes a checkpoint of this model and optimizer takes at most. */
int64_t spec_model_checkpoint_bytes(const struct mlq_spec *spec, const struct model_sizes *sizes);

#endif
