/* libmlq: the mlq client API for C programs (docs/serving.md).
 *
 *   #include <mlq.h>          cc prog.c $(pkg-config --cflags --libs mlq)
 *
 *   struct mlq_client *c;
 *   char err[512];
 *   if (mlq_client_open(&c, NULL, err, sizeof err)) { fprintf(stderr, "%s\n", err); ... }
 *   int64_t id;
 *   mlq_submit(c, "{\"kind\":\"train\", ...}", &id, err, sizeof err);
 *   char state[16];
 *   mlq_wait(c, id, 0, state, sizeof state, err, sizeof err);    "succeeded", ...
 *   float probs[10]; int cls;
 *   mlq_infer(c, "fmnist", x, 1, 784, probs, 10, &cls, NULL, err, sizeof err);
 *   mlq_client_close(&c);
 *
 * A client connects as `mlq` does: the endpoint (NULL: broker.endpoint of
 * the configuration, MLQ_BROKER), and CurveZMQ with the user's key when the
 * broker's public key is known (client.secret_key, broker.public_key, or
 * ~/.config/mlq/mlq.key_secret with broker.key beside it; docs/security.md).
 *
 * Every call returns 0 or a negative errno with a message in err:
 *   -ENOENT     no such job, run or deployment (the broker's not_found)
 *   -EINVAL     a bad request: a spec that fails validation, rows of the wrong
 *               width, NaN or infinite inputs
 *   -EFBIG      a request larger than the broker takes
 *   -ETIMEDOUT  no answer within the timeout (the broker unreachable, or an
 *               infer request past its deadline)
 *   -EACCES     the broker refused the request (forbidden)
 *   -EAGAIN     the broker is overloaded or stopping: try again
 *   -EIO        any other error the broker reported
 * A client is one ZeroMQ socket: use it from one thread at a time. */
#ifndef MLQ_CLIENT_H
#define MLQ_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLQ_CLIENT_VERSION "0.1.0"

struct mlq_client;

#ifndef MLQ_API
#define MLQ_API
#endif

/* Opens a client of the broker at endpoint (NULL: the configuration's). */
MLQ_API int mlq_client_open(struct mlq_client **out, const char *endpoint, char *err,
                            size_t errlen);
/* Accepts NULL and *c == NULL; sets *c to NULL. */
MLQ_API void mlq_client_close(struct mlq_client **c);
/* Milliseconds to wait for each answer (default 5000, or MLQ_TIMEOUT_MS). */
MLQ_API void mlq_client_set_timeout(struct mlq_client *c, int timeout_ms);

/* Queues a job: spec_json is a job spec (docs/spec.md). *id receives its id. */
MLQ_API int mlq_submit(struct mlq_client *c, const char *spec_json, int64_t *id, char *err,
                       size_t errlen);
/* Waits until job id ends, at most timeout_ms (0: for ever). state
 * receives "succeeded", "failed" or "cancelled" (with -ETIMEDOUT: the
 * state it is in). 0 when the job ended, whatever its state. */
MLQ_API int mlq_wait(struct mlq_client *c, int64_t id, int timeout_ms, char *state,
                     size_t state_len, char *err, size_t errlen);
/* Cancels a queued or running job. */
MLQ_API int mlq_cancel(struct mlq_client *c, int64_t id, char *err, size_t errlen);

/* What an infer answer says besides its outputs. */
struct mlq_infer_info {
    int64_t run, epoch, generation; /* the model that answered */
    int outputs;                    /* K: outputs per row */
    int batch;                      /* rows in the forward pass that served it */
    int classification;             /* 1: outputs are probabilities, classes set */
    double latency_us;              /* at the broker, arrival to answer */
};

/* Runs rows x (rows, cols) float32 through deployment name. out receives
 * (rows, K) outputs (probabilities, or regression outputs) and must hold
 * out_cap floats; classes (may be NULL) the class id of each row (-1 for a
 * regression model); info may be NULL. */
MLQ_API int mlq_infer(struct mlq_client *c, const char *deployment, const float *x, int rows,
                      int cols, float *out, size_t out_cap, int *classes,
                      struct mlq_infer_info *info, char *err, size_t errlen);

/* Any request of the protocol (docs/protocol.md): cmd with a JSON object
 * body and an optional binary frame. On 0, *reply is the OK body as JSON
 * text (free()), and *bin, *bin_len the binary frame (free(); NULL, 0 if
 * none; both may be NULL when not wanted). An ERROR reply is its errno. */
MLQ_API int mlq_request(struct mlq_client *c, const char *cmd, const char *body_json,
                        const void *bin, size_t bin_len, char **reply, void **reply_bin,
                        size_t *reply_bin_len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
