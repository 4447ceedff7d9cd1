/* The job spec parser and validator (common/spec.c) and the engine's check of
 * its model (trainer/spec_model.c: spec_model_check), fed any text: what
 * `mlq submit --spec`, the broker's SUBMIT and the trainer's JOB go through.
 *
 * Invariants: a refused spec says why; an accepted one, written out by
 * spec_to_json (what the store keeps and the trainer gets), is accepted again,
 * means the same job and gets the same verdict on its model. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_util.h"
#include "spec.h"
#include "spec_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    struct mlq_spec spec;
    char err[512] = "";
    int rc = spec_parse(text, &spec, err, sizeof err);
    free(text);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL, "spec_parse returned %d", rc);
    fuzz_note("%s", rc ? err : "accepted");
    if (rc != 0) {
        FUZZ_CHECK(err[0] != '\0', "a spec was refused without a reason");
        return 0;
    }
    FUZZ_CHECK(spec_validate(&spec, err, sizeof err) == 0, "parsed, then invalid: %s", err);
    char model_err[512] = "";
    int model_rc =
        spec_model_check(&spec, NULL, spec.batch_size, NULL, NULL, model_err, sizeof model_err);
    FUZZ_CHECK(model_rc == 0 || (model_rc < 0 && model_err[0]),
               "spec_model_check refused (%d) without a reason", model_rc);
    fuzz_note("model: %s", model_rc ? model_err : "accepted");

    json_t *doc = spec_to_json(&spec);
    FUZZ_CHECK(doc != NULL, "spec_to_json failed");
    char *canon = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(canon != NULL, "json_dumps failed");
    struct mlq_spec again;
    rc = spec_parse(canon, &again, err, sizeof err);
    FUZZ_CHECK(rc == 0, "the canonical form is refused: %s\n%s", err, canon);
    json_t *doc2 = spec_to_json(&again);
    FUZZ_CHECK(json_equal(doc, doc2), "the canonical form means another job:\n%s", canon);
    int again_rc = spec_model_check(&again, NULL, again.batch_size, NULL, NULL, err, sizeof err);
    FUZZ_CHECK((again_rc == 0) == (model_rc == 0),
               "the model check says %d on the spec, %d on its canonical form:\n%s", model_rc,
               again_rc, canon);
    json_decref(doc2);
    json_decref(doc);
    free(canon);
    return 0;
}
