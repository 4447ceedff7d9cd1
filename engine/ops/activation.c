/* Activations as element-wise kernels, with torch's formulas (CPU, float):
 * relu, leaky_relu, sigmoid 1 / (1 + e^-x), tanh, gelu exact
 * x (1 + erf(x / sqrt 2)) / 2 and gelu with approximate='tanh'. One switch
 * per call, plain loops inside. */
#include "kernels.h"

#include <math.h>

#define GELU_SQRT1_2 0.70710678118654752440f
/* gelu': exp(-x^2 / 2) / sqrt(2 pi) */
#define GELU_PDF_SCALE 0.39894228040143267794f
/* gelu tanh: sqrt(2 / pi) and the cubic's coefficient */
#define GELU_BETA 0.79788456080286535588f
#define GELU_KAPPA 0.044715f

void act_forward(float *out, const float *in, size_t n, enum act_op op, float slope)
{
    switch (op) {
    case ACT_OP_RELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x > 0.0f ? x : 0.0f;
        }
        break;
    case ACT_OP_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x > 0.0f ? x : x * slope;
        }
        break;
    case ACT_OP_SIGMOID:
        for (size_t i = 0; i < n; i++)
            out[i] = 1.0f / (1.0f + expf(-in[i]));
        break;
    case ACT_OP_TANH:
        for (size_t i = 0; i < n; i++)
            out[i] = tanhf(in[i]);
        break;
    case ACT_OP_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            out[i] = x * 0.5f * (1.0f + erff(x * GELU_SQRT1_2));
        }
        break;
    case ACT_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float inner = GELU_BETA * (x + GELU_KAPPA * x * x * x);
            out[i] = 0.5f * x * (1.0f + tanhf(inner));
        }
        break;
    }
}

void act_backward(float *din, const float *dout, const float *in, const float *out, size_t n,
                  enum act_op op, float slope)
{
    switch (op) {
    /* dout is loaded whatever the sign so that the selects become blends:
     * a branch on the sign of noisy activations mispredicts half the time. */
    case ACT_OP_RELU:
        for (size_t i = 0; i < n; i++) {
            float d = dout[i];
            din[i] = in[i] > 0.0f ? d : 0.0f;
        }
        break;
    case ACT_OP_LEAKY_RELU:
        for (size_t i = 0; i < n; i++) {
            float d = dout[i];
            din[i] = in[i] > 0.0f ? d : d * slope;
        }
        break;
    case ACT_OP_SIGMOID:
        for (size_t i = 0; i < n; i++)
            din[i] = dout[i] * (1.0f - out[i]) * out[i];
        break;
    case ACT_OP_TANH:
        for (size_t i = 0; i < n; i++)
            din[i] = dout[i] * (1.0f - out[i] * out[i]);
        break;
    case ACT_OP_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float cdf = 0.5f * (1.0f + erff(x * GELU_SQRT1_2));
            float pdf = expf(-0.5f * x * x) * GELU_PDF_SCALE;
            din[i] = dout[i] * (cdf + x * pdf);
        }
        break;
    case ACT_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = in[i];
            float x_sq = x * x;
            float inner = GELU_BETA * (x + GELU_KAPPA * x_sq * x);
            float t = tanhf(inner);
            float left = 0.5f * x, right = 1.0f + t;
            float left_derivative = 0.5f * right;
            float right_derivative =
                left * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x_sq);
            din[i] = dout[i] * (left_derivative + right_derivative);
        }
        break;
    }
}
