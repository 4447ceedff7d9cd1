/* From a job spec to the engine's own descriptions: the one place that knows
 * both struct mlq_spec (common/spec.h) and the engine's types (engine/), so
 * that the engine links without jansson or the spec parser. */
#ifndef MLQ_SPEC_MODEL_H
#define MLQ_SPEC_MODEL_H

#include <stddef.h>

#include "net.h"
#include "optim.h"
#include "spec.h"

void spec_model_net_config(const struct mlq_spec *spec, struct net_config *cfg);
void spec_model_optim_config(const struct spec_optimizer *o, struct optim_config *cfg);

/* net_create and optim_create on the translated descriptions; same returns. */
int spec_model_net_create(struct net *net, const struct mlq_spec *spec);
int spec_model_optim_create(struct optim *opt, const struct spec_optimizer *o, size_t n);

#endif
