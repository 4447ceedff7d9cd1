/* Sampling text from a language model's checkpoint (generate.h).
 *
 * Dimensions: T the model's window, K its output vocabulary, V its
 * embedding's vocabulary. */
#include "generate.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "errmsg.h"
#include "model.h"
#include "rng.h"
#include "sampling.h"
#include "spec_model.h"

/* Rebuilds the run's model with the checkpoint's weights; *epoch gets the
 * checkpoint's epochs. */
static int load(const struct mlq_spec *spec, const void *blob, size_t len, struct model *m,
                int64_t *epoch, char *err, size_t errlen)
{
    struct checkpoint c;
    struct mlq_spec *train = malloc(sizeof *train);
    char why[512];
    long long run = (long long)spec->run;
    if (!train) return errmsg(err, errlen, -ENOMEM, "out of memory");
    int rc = checkpoint_decode(blob, len, &c, why, sizeof why);
    if (rc) {
        free(train);
        return errmsg(err, errlen, rc, "run %lld: corrupt checkpoint: %s", run, why);
    }
    if ((rc = spec_parse(c.spec_json, train, why, sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: the checkpoint's spec is invalid: %s", run, why);
        goto out;
    }
    if (train->kind != JOB_TRAIN || !train->typed) {
        rc = errmsg(err, errlen, -EINVAL,
                    "run %lld is not a language model: generating text needs typed layers "
                    "starting with an embedding",
                    run);
        goto out;
    }
    if ((rc = spec_model_create(m, train, NULL, why, sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: cannot rebuild the model: %s", run, why);
        goto out;
    }
    if (m->net || !m->node[0].op.op->takes_ids || m->steps != (int)shape_size(&m->input) ||
        m->loss != NET_LOSS_CROSS_ENTROPY) {
        rc = errmsg(err, errlen, -EINVAL,
                    "run %lld is not a language model: generating text needs a model that reads "
                    "token ids (an embedding first) and predicts the next one at every step (a "
                    "last layer of (T, vocabulary), cross_entropy)",
                    run);
        goto out;
    }
    if ((rc = checkpoint_load_tensors(&c, &m->tensors, m->params, NULL, 0, m->state, why,
                                      sizeof why))) {
        errmsg(err, errlen, rc, "run %lld: corrupt checkpoint: %s", run, why);
        goto out;
    }
    for (size_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i])) {
            rc = errmsg(err, errlen, -EINVAL,
                        "run %lld: the checkpoint of epoch %lld holds non-finite weights: use an "
                        "earlier one (--checkpoint EPOCH)",
                        run, (long long)c.epoch);
            goto out;
        }
    if ((rc = model_reserve(m, 1))) {
        errmsg(err, errlen, rc, "cannot allocate the network: %s", strerror(-rc));
        goto out;
    }
    *epoch = c.epoch;
out:
    checkpoint_free(&c);
    free(train);
    return rc;
}

int generate_run(const struct mlq_spec *spec, const void *ckpt_blob, size_t len, json_t **result,
                 char *err, size_t errlen)
{
    *result = NULL;
    if (!spec_generates(spec))
        return errmsg(err, errlen, -EINVAL, "generate_run: not a predict job with a prompt");
    struct model m;
    memset(&m, 0, sizeof m);
    int64_t epoch = 0;
    int rc = load(spec, ckpt_blob, len, &m, &epoch, err, errlen);
    if (rc) return rc;
    int T = m.steps, K = m.K, V = m.node[0].op.a.vocab;
    size_t n_prompt = strlen(spec->prompt), N = (size_t)spec->gen_tokens;
    uint8_t *ids = malloc(n_prompt + N);
    float *x = calloc((size_t)T, sizeof *x);
    struct sampling_rank *rank = malloc((size_t)K * sizeof *rank);
    char *text = malloc(3 * N + 1);
    json_t *list = json_array();
    if (!ids || !x || !rank || !text || !list) {
        rc = errmsg(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    memcpy(ids, spec->prompt, n_prompt);
    for (size_t i = 0; i < n_prompt; i++)
        if (ids[i] >= V) {
            rc = errmsg(err, errlen, -EINVAL,
                        "prompt: byte %u at %zu is outside the model's vocabulary [0, %d)", ids[i],
                        i, V);
            goto out;
        }
    struct rng r;
    rng_seed(&r, spec->seed);
    size_t have = n_prompt;
    for (size_t t = 0; t < N; t++) {
        size_t w = have < (size_t)T ? have : (size_t)T;
        for (size_t i = 0; i < (size_t)T; i++)
            x[i] = i < w ? (float)ids[have - w + i] : 0.0f;
        model_forward(&m, x, 1, false, NULL);
        int next = sampling_next(m.probs + (w - 1) * (size_t)K, K, spec->temperature, spec->top_k,
                                 rank, &r);
        if (next >= V || next > 255) {
            rc = errmsg(err, errlen, -EINVAL,
                        "run %lld predicted token %d, which its embedding (vocabulary %d) or a "
                        "byte cannot hold",
                        (long long)spec->run, next, V);
            goto out;
        }
        ids[have++] = (uint8_t)next;
        json_array_append_new(list, json_integer(next));
    }
    sampling_utf8(text, ids + n_prompt, N);
    *result =
        json_pack("{s:s, s:s, s:i, s:f, s:i, s:I, s:I, s:o}", "text", text, "prompt", spec->prompt,
                  "tokens", (int)N, "temperature", spec->temperature, "top_k", spec->top_k, "seed",
                  (json_int_t)spec->seed, "epoch", (json_int_t)epoch, "ids", list);
    list = NULL;
    if (!*result) rc = errmsg(err, errlen, -ENOMEM, "cannot build the result");
out:
    json_decref(list);
    free(text);
    free(rank);
    free(x);
    free(ids);
    model_destroy(&m);
    return rc;
}
