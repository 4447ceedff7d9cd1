/* A program over libmlq (docs/serving.md): trains a run, deploys it, asks
 * it about a few rows, cancels a job. Built against the installed header and
 * mlq.pc by tests/test_client_install.sh:
 *   cc example.c $(pkg-config --cflags --libs mlq) -o example
 *   ./example TRAIN.h5 D K        (the broker: MLQ_BROKER or the configuration) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mlq.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: example TRAIN.h5 INPUTS CLASSES\n");
        return 2;
    }
    int D = atoi(argv[2]), K = atoi(argv[3]);
    char err[1024], spec[2048], state[32];
    struct mlq_client *c;
    if (mlq_client_open(&c, NULL, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    snprintf(spec, sizeof spec,
             "{\"kind\":\"train\",\"dataset\":{\"path\":\"%s\"},\"model\":{\"layers\":[%d,16,%d]},"
             "\"epochs\":2,\"batch_size\":16,\"threads\":1}",
             argv[1], D, K);
    int64_t run, other;
    if (mlq_submit(c, spec, &run, err, sizeof err) ||
        mlq_wait(c, run, 60000, state, sizeof state, err, sizeof err) ||
        strcmp(state, "succeeded") != 0) {
        fprintf(stderr, "train: %s %s\n", state, err);
        return 1;
    }
    printf("run %lld %s\n", (long long)run, state);
    char body[256], *reply = NULL;
    snprintf(body, sizeof body, "{\"name\":\"example\",\"run\":%lld}", (long long)run);
    if (mlq_request(c, "DEPLOY", body, NULL, 0, &reply, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "deploy: %s\n", err);
        return 1;
    }
    free(reply);
    float *x = calloc((size_t)D * 4, sizeof *x), *out = calloc((size_t)K * 4, sizeof *out);
    int cls[4];
    struct mlq_infer_info info;
    for (int r = 0; r < 4; r++)
        x[r * D + r % D] = 3;
    int rc = -EAGAIN;
    for (int tries = 0; tries < 100 && rc; tries++) /* until its replica is placed */
        rc = mlq_infer(c, "example", x, 4, D, out, (size_t)K * 4, cls, &info, err, sizeof err);
    if (rc) {
        fprintf(stderr, "infer: %s\n", err);
        return 1;
    }
    for (int r = 0; r < 4; r++)
        printf("row %d: class %d p %.4f\n", r, cls[r], out[r * K + cls[r]]);
    if (mlq_infer(c, "example", x, 1, D + 1, out, (size_t)K, NULL, NULL, err, sizeof err) !=
        -EINVAL) {
        fprintf(stderr, "a row of the wrong width was not refused\n");
        return 1;
    }
    snprintf(spec, sizeof spec,
             "{\"kind\":\"train\",\"dataset\":{\"path\":\"%s\"},\"model\":{\"layers\":[%d,16,%d]},"
             "\"epochs\":100000,\"threads\":1}",
             argv[1], D, K);
    if (mlq_submit(c, spec, &other, err, sizeof err) || mlq_cancel(c, other, err, sizeof err) ||
        mlq_wait(c, other, 30000, state, sizeof state, err, sizeof err) ||
        strcmp(state, "cancelled") != 0) {
        fprintf(stderr, "cancel: %s %s\n", state, err);
        return 1;
    }
    printf("job %lld %s\n", (long long)other, state);
    mlq_client_close(&c);
    free(x);
    free(out);
    return 0;
}
