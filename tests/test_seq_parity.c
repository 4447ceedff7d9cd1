/* The sequence ops through their op_def (engine/ops/embedding.c,
 * recurrent.c, ...) against PyTorch 1.13: tests/parity/seq_fixtures.json,
 * written by tests/parity/gen_seq_fixtures.py (this test needs no torch).
 * Each case loads torch's parameters by their state_dict names into the
 * node's tensors (op.h's tensors()), runs forward, compares the output,
 * runs backward of sum(out * dout) and compares the input gradient and
 * every parameter gradient: |ours - torch| <= TORCH_ABS + TORCH_REL |torch|
 * (float32 both sides, different summation orders). The worst error of
 * each case is printed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "op.h"

#define TORCH_ABS 2e-5
#define TORCH_REL 1e-4
#define FIXTURES MLQ_SOURCE_DIR "/tests/parity/seq_fixtures.json"
#define MIN_CASES 21

static json_t *fixtures;

static float *alloc_floats(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void load_floats(json_t *c, const char *key, float *out, size_t n)
{
    json_t *arr = json_object_get(c, key);
    if (!json_is_array(arr)) fail_msg("fixture: no array %s", key);
    if (json_array_size(arr) != n)
        fail_msg("fixture: %s has %zu values, want %zu", key, json_array_size(arr), n);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)json_number_value(json_array_get(arr, i));
}

static int int_of(json_t *c, const char *key)
{
    json_t *v = json_object_get(c, key);
    if (!json_is_integer(v)) fail_msg("fixture: no integer %s", key);
    return (int)json_integer_value(v);
}

static double compare(const char *name, const char *what, json_t *c, const char *key,
                      const float *ours, size_t n)
{
    float *ref = alloc_floats(n);
    load_floats(c, key, ref, n);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)ours[i] - ref[i]);
        if (!(err <= TORCH_ABS + TORCH_REL * fabs(ref[i])))
            fail_msg("%s: %s[%zu]: ours %.9g, torch %.9g", name, what, i, ours[i], ref[i]);
        if (err > worst) worst = err;
    }
    free(ref);
    return worst;
}

/* The node of a case: its op, fields and input shape as the fixture says. */
static void case_node(json_t *c, struct op_node *n, int *B)
{
    const char *op = json_string_value(json_object_get(c, "op"));
    memset(n, 0, sizeof *n);
    n->op = op_find(op);
    if (!n->op) fail_msg("fixture: unknown op %s", op);
    op_attrs_defaults(&n->a);
    n->n_in = 1;
    *B = int_of(c, "B");
    int T = int_of(c, "T");
    if (strcmp(op, "embedding") == 0) {
        n->a.vocab = int_of(c, "vocab");
        n->a.out = int_of(c, "E");
        n->in[0] = (struct shape){1, {T}};
    } else if (strcmp(op, "layernorm") == 0) {
        n->a.eps = (float)json_number_value(json_object_get(c, "eps"));
        int E = int_of(c, "E");
        n->in[0] = T ? (struct shape){2, {T, E}} : (struct shape){1, {E}};
    } else if (strcmp(op, "attention") == 0 || strcmp(op, "transformer") == 0) {
        n->a.heads = int_of(c, "heads");
        n->a.causal = json_is_true(json_object_get(c, "causal"));
        if (json_object_get(c, "bias")) n->a.bias = json_is_true(json_object_get(c, "bias"));
        n->a.approximate = json_is_true(json_object_get(c, "approximate"));
        n->in[0] = (struct shape){2, {T, int_of(c, "E")}};
    } else {
        n->a.out = int_of(c, "H");
        n->a.num_layers = int_of(c, "num_layers");
        n->a.bias = json_is_true(json_object_get(c, "bias"));
        n->a.sequence = json_is_true(json_object_get(c, "sequence"));
        n->in[0] = (struct shape){2, {T, int_of(c, "I")}};
    }
    char err[256];
    if (n->op->infer(&n->a, n->in, &n->out, err, sizeof err)) fail_msg("%s: infer: %s", op, err);
}

static void test_case(void **state)
{
    json_t *c = *state;
    const char *name = json_string_value(json_object_get(c, "name"));
    struct op_node n;
    int B;
    case_node(c, &n, &B);
    const struct op_def *op = n.op;
    struct op_tensor ts[OP_MAX_TENSORS];
    int nt = op->tensors(&n, ts);
    size_t off[OP_MAX_TENSORS], n_param = 0;
    for (int k = 0; k < nt; k++) {
        assert_int_equal(ts[k].kind, OP_PARAM);
        size_t sz = 1;
        for (int d = 0; d < ts[k].ndim; d++)
            sz *= (size_t)ts[k].shape[d];
        off[k] = n_param;
        n_param += sz;
    }
    /* Every torch parameter has a tensor of ours and the reverse. */
    size_t torch_params = 0;
    const char *key;
    json_t *v;
    json_object_foreach(c, key, v)
    {
        if (key[0] == 'd' || !json_is_array(v)) continue;
        if (strcmp(key, "in") == 0 || strcmp(key, "out") == 0 || strstr(key, "_shape")) continue;
        torch_params++;
    }
    assert_int_equal(torch_params, (size_t)nt);

    size_t n_in = (size_t)B * shape_size(&n.in[0]), n_out = (size_t)B * shape_size(&n.out);
    float *in = alloc_floats(n_in), *din = alloc_floats(n_in), *out = alloc_floats(n_out);
    float *dout = alloc_floats(n_out), *param = alloc_floats(n_param);
    float *grad = alloc_floats(n_param);
    float *saved = alloc_floats(op->saved ? op->saved(&n, B) : 0);
    float *scratch = alloc_floats(op->scratch ? op->scratch(&n, B) : 0);
    float *partials = alloc_floats(op->partials ? op->partials(&n, B) : 0);
    load_floats(c, "in", in, n_in);
    load_floats(c, "dout", dout, n_out);
    for (int k = 0; k < nt; k++) {
        size_t sz = (k + 1 < nt ? off[k + 1] : n_param) - off[k];
        load_floats(c, ts[k].name, param + off[k], sz);
    }
    struct op_call call = {.node = &n,
                           .B = B,
                           .training = true,
                           .in = {in},
                           .out = out,
                           .param = param,
                           .grad = grad,
                           .saved = saved,
                           .scratch = scratch,
                           .scratch_stride = op->scratch ? op->scratch(&n, B) : 0,
                           .partials = partials,
                           .dout = dout,
                           .din = {din}};
    op->forward(&call);
    double worst = compare(name, "out", c, "out", out, n_out);
    op->backward(&call);
    if (!op->takes_ids) {
        double w = compare(name, "din", c, "din", din, n_in);
        worst = w > worst ? w : worst;
    }
    for (int k = 0; k < nt; k++) {
        char dkey[OP_NAME_MAX + 1];
        snprintf(dkey, sizeof dkey, "d%s", ts[k].name);
        size_t sz = (k + 1 < nt ? off[k + 1] : n_param) - off[k];
        double w = compare(name, dkey, c, dkey, grad + off[k], sz);
        worst = w > worst ? w : worst;
    }
    printf("  torch %-34s max |ours - torch| %.2e\n", name, worst);
    free(in), free(din), free(out), free(dout), free(param), free(grad);
    free(saved), free(scratch), free(partials);
}

int main(void)
{
    json_error_t jerr;
    fixtures = json_load_file(FIXTURES, 0, &jerr);
    if (!fixtures) {
        fprintf(stderr, "%s:%d: %s\n", FIXTURES, jerr.line, jerr.text);
        return 1;
    }
    json_t *cases = json_object_get(fixtures, "cases");
    size_t n_cases = json_array_size(cases);
    if (n_cases < MIN_CASES) {
        fprintf(stderr, "%s: %zu cases, expected at least %d\n", FIXTURES, n_cases, MIN_CASES);
        json_decref(fixtures);
        return 1;
    }
    struct CMUnitTest *tests = calloc(n_cases, sizeof *tests);
    assert_non_null(tests);
    for (size_t i = 0; i < n_cases; i++) {
        json_t *c = json_array_get(cases, i);
        tests[i] = (struct CMUnitTest){json_string_value(json_object_get(c, "name")), test_case,
                                       NULL, NULL, c};
    }
    int rc = _cmocka_run_group_tests("seq_parity", tests, n_cases, NULL, NULL);
    free(tests);
    json_decref(fixtures);
    return rc;
}
