/* The fused heads at the end of every model: softmax cross-entropy
 * (nn.CrossEntropyLoss, mean over the batch) and MSE (nn.MSELoss, mean over
 * all B K values), on the last layer's output z (B, K). */
#ifndef MLQ_LOSS_H
#define MLQ_LOSS_H

#include <stdint.h>

#include "net.h"

/* What a prediction reports, p (B, K): softmax(z) for cross-entropy,
 * sigmoid(z) for an mse model with a sigmoid output, else z (p may be z). */
void loss_outputs(float *p, const float *z, int B, int K, enum net_loss loss,
                  enum net_output output);
/* Mean loss over B rows: y_class (B) ids for cross-entropy, y (B, K) for
 * mse (the other NULL). Computed in double; NAN for a class out of range.
 * smoothing: cross-entropy's label_smoothing (nn.CrossEntropyLoss): the
 * target is (1 - smoothing) onehot(y) + smoothing / K; 0 for mse. */
double loss_value(const float *z, const float *p, const int32_t *y_class, const float *y, int B,
                  int K, enum net_loss loss, float smoothing);
/* d (B, K) = d(mean loss)/dz, stored. */
void loss_grad(float *d, const float *p, const int32_t *y_class, const float *y, int B, int K,
               enum net_loss loss, enum net_output output, float smoothing);
/* Rows whose arg max of z (first maximum wins, as torch.argmax) is y_class. */
int loss_correct(const float *z, const int32_t *y_class, int B, int K);

#endif
