/* The history commands' output: a database filled through the store API,
 * read by the built mlq binary; --json documents checked key by key, exit
 * codes for missing runs and databases, rm and gc, and export read back
 * with HDF5 against the checkpoint's parameters. */
#include "test_store_util.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <hdf5.h>
#include <jansson.h>

#include "checkpoint.h"
#include "spec.h"
#include "store.h"

#define MLQ MLQ_BINARY_DIR "/cli/mlq"

struct fx {
    char dir[512];
    char db[600];
    int64_t adam, sgd, queued;
    struct checkpoint ck; /* what run adam's last checkpoint holds */
};

static int run_mlq(struct fx *f, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs "mlq ARGS --db DB" with stdout captured into *out (malloc'd). Returns the exit code. */
static int run_mlq(struct fx *f, char **out, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "env -u COLUMNS -u MLQ_DB -u MLQ_CONFIG %s %s --db '%s'", MLQ, args,
             f->db);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[len] = '\0';
    int status = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static json_t *run_json(struct fx *f, const char *args)
{
    char *out;
    int rc = run_mlq(f, &out, "%s --json", args);
    if (rc != 0) fail_msg("mlq %s: exit %d", args, rc);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    if (!doc) fail_msg("mlq %s: not JSON (%s): %s", args, jerr.text, out);
    free(out);
    return doc;
}

static const char *SPEC_FMT =
    "{\"kind\":\"train\",\"name\":\"%s\",\"dataset\":{\"path\":\"train.h5\"},"
    "\"model\":{\"layers\":[4,3,2],\"activation\":\"tanh\"},"
    "\"optimizer\":{\"name\":\"%s\",\"lr\":%s},\"epochs\":5}";

static int64_t add_run(struct store *s, const char *name, const char *opt, const char *lr,
                       char *spec_out, size_t speclen)
{
    char text[1024], err[256];
    snprintf(text, sizeof text, SPEC_FMT, name, opt, lr);
    struct mlq_spec spec;
    if (spec_parse(text, &spec, err, sizeof err) != 0) fail_msg("spec: %s", err);
    json_t *canon = spec_to_json(&spec);
    char *ctext = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
    if (spec_out) snprintf(spec_out, speclen, "%s", ctext);
    free(ctext);
    json_decref(canon);
    int64_t id;
    assert_int_equal(store_job_submit_spec(s, &spec, NULL, &id, NULL), 0);
    return id;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    tmpdir_make(f->dir, sizeof f->dir);
    snprintf(f->db, sizeof f->db, "%s/h.db", f->dir);
    char err[512];
    struct store *s;
    if (store_open(&s, f->db, STORE_CREATE, err, sizeof err) != 0) fail_msg("%s", err);
    char spec_text[2048];
    f->adam = add_run(s, "first", "adam", "0.001", spec_text, sizeof spec_text);
    f->sgd = add_run(s, "second", "sgd", "0.1", NULL, 0);
    f->queued = add_run(s, "third", "adam", "0.001", NULL, 0);
    assert_int_equal(store_job_set_running(s, f->adam, "t1"), 0);
    assert_int_equal(store_job_set_running(s, f->sgd, "t2"), 0);
    for (int e = 1; e <= 5; e++) {
        assert_int_equal(store_metric_put(s, f->adam, "val_loss", e * 10, e, 1.0 / e, 0), 0);
        assert_int_equal(store_metric_put(s, f->adam, "train_loss", e * 10, e, 2.0 / e, 0), 0);
        assert_int_equal(store_metric_put(s, f->sgd, "val_loss", e * 10, e, 3.0 / e, 0), 0);
    }
    /* A real checkpoint for export: 4 -> 3 -> 2, params in nn.Linear order. */
    struct checkpoint *c = &f->ck;
    c->spec_json = strdup(spec_text);
    c->epoch = 5;
    c->step = 50;
    c->n_params = 3 * 4 + 3 + 2 * 3 + 2;
    c->params = malloc(c->n_params * sizeof *c->params);
    for (size_t i = 0; i < c->n_params; i++)
        c->params[i] = (float)i * 0.25f - 2.0f;
    rng_seed(&c->rng, 42);
    void *blob;
    size_t len;
    assert_int_equal(checkpoint_encode(c, &blob, &len), 0);
    assert_int_equal(store_checkpoint_put(s, f->adam, 5, 50, blob, len, 0.2, NULL), 0);
    free(blob);
    assert_int_equal(store_job_set_succeeded(s, f->adam), 0);
    assert_int_equal(store_job_set_failed(s, f->sgd, "loss is NaN at epoch 3"), 0);
    store_close(&s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    checkpoint_free(&f->ck);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void test_runs_json(void **state)
{
    struct fx *f = *state;
    json_t *a = run_json(f, "runs");
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 3);
    json_t *newest = json_array_get(a, 0);
    assert_int_equal(json_integer_value(json_object_get(newest, "id")), f->queued);
    json_t *r = json_array_get(a, 2);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), f->adam);
    assert_string_equal(json_string_value(json_object_get(r, "kind")), "train");
    assert_string_equal(json_string_value(json_object_get(r, "state")), "succeeded");
    assert_string_equal(json_string_value(json_object_get(r, "name")), "first");
    assert_true(json_is_number(json_object_get(r, "submitted")));
    json_t *p = json_object_get(r, "params");
    assert_string_equal(json_string_value(json_object_get(p, "optimizer.name")), "adam");
    assert_true(json_real_value(json_object_get(p, "optimizer.lr")) == 0.001);
    assert_int_equal(json_array_size(json_object_get(p, "model.layers")), 3);
    json_t *m = json_object_get(r, "metrics");
    assert_true(fabs(json_real_value(json_object_get(m, "val_loss")) - 0.2) < 1e-12);
    json_decref(a);

    a = run_json(f, "runs --where params.optimizer.name=adam --state succeeded");
    assert_int_equal(json_array_size(a), 1);
    json_decref(a);
    a = run_json(f, "runs --kind train --sort val_loss --limit 2");
    assert_int_equal(json_array_size(a), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "id")), f->adam);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 1), "id")), f->sgd);
    json_decref(a);

    char *out;
    assert_int_equal(run_mlq(f, &out, "runs --csv"), 0);
    assert_true(strncmp(out, "ID,KIND,STATE,NAME", 18) == 0);
    assert_non_null(strstr(out, ",failed,second,"));
    free(out);
    assert_int_equal(run_mlq(f, &out, "runs"), 0);
    assert_non_null(strstr(out, "succeeded"));
    assert_non_null(strstr(out, "val_loss"));
    free(out);
    assert_int_equal(run_mlq(f, NULL, "runs --state bogus"), 2);
    assert_int_equal(run_mlq(f, NULL, "runs --where optimizer..lr=1"), 2);
    /* Numbers compare as numbers: 1e-3 is the run's lr of 0.001. */
    assert_int_equal(run_mlq(f, &out, "runs --csv --where optimizer.lr=1e-3"), 0);
    assert_non_null(strstr(out, ",first,"));
    free(out);
    assert_int_equal(run_mlq(f, &out, "runs --help"), 0);
    assert_non_null(strstr(out, "--where"));
    free(out);
}

static void test_show_json(void **state)
{
    struct fx *f = *state;
    char args[64];
    snprintf(args, sizeof args, "show %lld", (long long)f->sgd);
    json_t *o = run_json(f, args);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), f->sgd);
    assert_string_equal(json_string_value(json_object_get(o, "kind")), "train");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "failed");
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "trainer")), "t2");
    assert_string_equal(json_string_value(json_object_get(o, "error")), "loss is NaN at epoch 3");
    json_t *spec = json_object_get(o, "spec");
    assert_true(json_is_object(spec));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(spec, "optimizer"), "name")), "sgd");
    json_t *vl = json_object_get(json_object_get(o, "metrics"), "val_loss");
    assert_true(fabs(json_real_value(json_object_get(vl, "value")) - 0.6) < 1e-12);
    assert_int_equal(json_integer_value(json_object_get(vl, "epoch")), 5);
    assert_true(json_is_array(json_object_get(o, "checkpoints")));
    json_decref(o);

    snprintf(args, sizeof args, "show %lld", (long long)f->adam);
    o = run_json(f, args);
    json_t *ck = json_object_get(o, "checkpoints");
    assert_int_equal(json_array_size(ck), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ck, 0), "epoch")), 5);
    assert_true(json_is_true(json_object_get(json_array_get(ck, 0), "best")));
    assert_true(json_is_null(json_object_get(o, "error")));
    json_decref(o);

    char *out;
    assert_int_equal(run_mlq(f, &out, "show 999 --json"), 5);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(run_mlq(f, NULL, "show abc"), 2);
}

static void test_metrics_json_and_chart(void **state)
{
    struct fx *f = *state;
    char args[64];
    snprintf(args, sizeof args, "metrics %lld --key val_loss", (long long)f->adam);
    json_t *a = run_json(f, args);
    assert_int_equal(json_array_size(a), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *m = json_array_get(a, i);
        assert_string_equal(json_string_value(json_object_get(m, "key")), "val_loss");
        assert_int_equal(json_integer_value(json_object_get(m, "step")), (json_int_t)(i + 1) * 10);
        assert_int_equal(json_integer_value(json_object_get(m, "epoch")), (json_int_t)i + 1);
        assert_true(fabs(json_number_value(json_object_get(m, "value")) - 1.0 / (i + 1)) < 1e-12);
        assert_true(json_number_value(json_object_get(m, "time")) > 1e9);
    }
    json_decref(a);
    snprintf(args, sizeof args, "metrics %lld", (long long)f->adam);
    a = run_json(f, args);
    assert_int_equal(json_array_size(a), 10);
    json_decref(a);

    char *out;
    assert_int_equal(run_mlq(f, &out, "metrics %lld", (long long)f->adam), 0);
    /* A falling loss: the chart starts high and ends low. */
    assert_non_null(strstr(out, "█"));
    assert_non_null(strstr(out, "▁"));
    assert_non_null(strstr(out, "train_loss"));
    free(out);
    assert_int_equal(run_mlq(f, NULL, "metrics 4242"), 5);
}

static void test_compare_json(void **state)
{
    struct fx *f = *state;
    char args[64];
    snprintf(args, sizeof args, "compare %lld %lld", (long long)f->adam, (long long)f->sgd);
    json_t *o = run_json(f, args);
    assert_int_equal(json_array_size(json_object_get(o, "runs")), 2);
    json_t *rows = json_object_get(o, "rows");
    bool saw_opt = false, saw_epochs = false, saw_metric = false;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        const char *key = json_string_value(json_object_get(r, "key"));
        if (strcmp(key, "optimizer.name") == 0) {
            saw_opt = true;
            assert_true(json_is_true(json_object_get(r, "differs")));
            assert_string_equal(json_string_value(json_array_get(json_object_get(r, "values"), 1)),
                                "sgd");
        } else if (strcmp(key, "epochs") == 0) {
            saw_epochs = true;
            assert_true(json_is_false(json_object_get(r, "differs")));
        } else if (strcmp(key, "val_loss") == 0) {
            saw_metric = true;
            assert_string_equal(json_string_value(json_object_get(r, "section")), "metric");
        }
    }
    assert_true(saw_opt && saw_epochs && saw_metric);
    json_decref(o);
    char *out;
    assert_int_equal(run_mlq(f, &out, "compare %lld %lld", (long long)f->adam, (long long)f->sgd),
                     0);
    assert_non_null(strstr(out, "* "));
    free(out);
    assert_int_equal(run_mlq(f, NULL, "compare %lld 4242", (long long)f->adam), 5);
}

/* --json and --csv carry every digit: a metric of 1/3 (17 significant
 * digits) reads back as the same double from each, and 0.2 still prints
 * as 0.2. */
static void test_exact_numbers(void **state)
{
    struct fx *f = *state;
    const double third = 1.0 / 3; /* run sgd's val_loss at epoch 3; 3/5 is final */
    char *out, args[128];
    snprintf(args, sizeof args, "metrics %lld --key val_loss", (long long)f->sgd);
    json_t *a = run_json(f, args);
    assert_true(json_number_value(json_object_get(json_array_get(a, 2), "value")) == 3.0 / 3);
    assert_true(json_number_value(json_object_get(json_array_get(a, 1), "value")) == 3.0 / 2);
    json_decref(a);
    snprintf(args, sizeof args, "metrics %lld --key val_loss", (long long)f->adam);
    a = run_json(f, args);
    assert_true(json_number_value(json_object_get(json_array_get(a, 2), "value")) == third);
    json_decref(a);
    assert_int_equal(run_mlq(f, &out, "metrics %lld --key val_loss --json", (long long)f->adam), 0);
    assert_non_null(strstr(out, "\"value\": 0.2,"));
    assert_null(strstr(out, "0.2000000"));
    free(out);
    assert_int_equal(run_mlq(f, &out, "metrics %lld --key val_loss --csv", (long long)f->adam), 0);
    char *line = strstr(out, "\nval_loss,30,3,");
    assert_non_null(line);
    assert_true(strtod(line + strlen("\nval_loss,30,3,"), NULL) == third);
    free(out);

    /* compare: the final val_loss of adam is 1/5, of sgd 3/5. */
    snprintf(args, sizeof args, "compare %lld %lld", (long long)f->adam, (long long)f->sgd);
    json_t *o = run_json(f, args);
    size_t i;
    json_t *r;
    bool saw = false;
    json_array_foreach(json_object_get(o, "rows"), i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "key")), "val_loss") != 0) continue;
        saw = true;
        assert_true(json_real_value(json_array_get(json_object_get(r, "values"), 0)) == 1.0 / 5);
        assert_true(json_real_value(json_array_get(json_object_get(r, "values"), 1)) == 3.0 / 5);
    }
    assert_true(saw);
    json_decref(o);
    assert_int_equal(run_mlq(f, &out, "%s --csv", args), 0);
    char head[128];
    snprintf(head, sizeof head, "section,key,run %lld,run %lld,differs\n", (long long)f->adam,
             (long long)f->sgd);
    assert_true(strncmp(out, head, strlen(head)) == 0);
    line = strstr(out, "\nmetric,val_loss,");
    assert_non_null(line);
    char *end;
    assert_true(strtod(line + strlen("\nmetric,val_loss,"), &end) == 1.0 / 5);
    assert_true(*end == ',' && strtod(end + 1, NULL) == 3.0 / 5);
    free(out);
    /* The table stays short. */
    assert_int_equal(run_mlq(f, &out, "%s", args), 0);
    assert_non_null(strstr(out, "0.6"));
    assert_null(strstr(out, "0.59999"));
    free(out);

    /* runs --json and --csv; train_loss of adam ends at 2/5. */
    a = run_json(f, "runs --state succeeded");
    json_t *m = json_object_get(json_array_get(a, 0), "metrics");
    assert_true(json_real_value(json_object_get(m, "train_loss")) == 2.0 / 5);
    json_decref(a);
    assert_int_equal(run_mlq(f, &out, "runs --csv --state succeeded"), 0);
    assert_non_null(strstr(out, ",DURATION_S,OPTIMIZER_NAME,LR\n"));
    assert_non_null(strstr(out, ",adam,0.001\n"));
    free(out);
    snprintf(args, sizeof args, "show %lld", (long long)f->sgd);
    o = run_json(f, args);
    json_t *fm = json_object_get(o, "metrics");
    assert_true(json_is_object(fm));
    assert_true(json_real_value(json_object_get(json_object_get(fm, "val_loss"), "value")) ==
                3.0 / 5);
    json_decref(o);
}

static void test_missing_db(void **state)
{
    struct fx *f = *state;
    char cmd[1200], path[700];
    snprintf(path, sizeof path, "%s/none.db", f->dir);
    snprintf(cmd, sizeof cmd, "%s runs --db '%s' 2>/dev/null", MLQ, path);
    int status = system(cmd);
    assert_int_equal(WEXITSTATUS(status), 6);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(cmd, sizeof cmd, "%s gc --keep 1 --db '%s' 2>/dev/null", MLQ, path);
    status = system(cmd);
    assert_int_equal(WEXITSTATUS(status), 6);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_rm_and_gc(void **state)
{
    struct fx *f = *state;
    /* A queued job is refused; a missing id deletes nothing. */
    assert_int_equal(run_mlq(f, NULL, "rm %lld", (long long)f->queued), 1);
    assert_int_equal(run_mlq(f, NULL, "rm %lld 4242", (long long)f->sgd), 5);
    assert_int_equal(run_mlq(f, NULL, "show %lld", (long long)f->sgd), 0);
    assert_int_equal(run_mlq(f, NULL, "rm %lld", (long long)f->sgd), 0);
    assert_int_equal(run_mlq(f, NULL, "show %lld", (long long)f->sgd), 5);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM metrics"), 10);
    json_t *o = run_json(f, "gc --keep 0");
    assert_int_equal(json_integer_value(json_object_get(o, "removed")), 1);
    json_decref(o);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 1); /* the queued one */
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM checkpoints"), 0);
    assert_int_equal(run_mlq(f, NULL, "gc"), 2);
}

static void test_export_hdf5(void **state)
{
    struct fx *f = *state;
    char out_path[700];
    snprintf(out_path, sizeof out_path, "%s/model.h5", f->dir);
    assert_int_equal(run_mlq(f, NULL, "export %lld --output '%s' --checkpoint best",
                             (long long)f->adam, out_path),
                     0);
    hid_t file = H5Fopen(out_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    const int sizes[] = {4, 3, 2};
    const float *p = f->ck.params;
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers/%d/weight", l);
        hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
        assert_true(d >= 0);
        hid_t sp = H5Dget_space(d);
        hsize_t dims[2];
        assert_int_equal(H5Sget_simple_extent_ndims(sp), 2);
        H5Sget_simple_extent_dims(sp, dims, NULL);
        assert_int_equal(dims[0], sizes[l + 1]); /* (out, in) */
        assert_int_equal(dims[1], sizes[l]);
        float w[16], b[4];
        assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0);
        H5Sclose(sp);
        H5Dclose(d);
        for (hsize_t i = 0; i < dims[0] * dims[1]; i++)
            assert_true(w[i] == *p++);
        snprintf(name, sizeof name, "layers/%d/bias", l);
        d = H5Dopen2(file, name, H5P_DEFAULT);
        assert_true(d >= 0);
        assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
        H5Dclose(d);
        for (int i = 0; i < sizes[l + 1]; i++)
            assert_true(b[i] == *p++);
    }
    hid_t a = H5Aopen(file, "activation", H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t t = H5Aget_type(a);
    char act[32] = "";
    assert_true(H5Tget_size(t) < sizeof act);
    assert_true(H5Aread(a, t, act) >= 0);
    assert_string_equal(act, "tanh");
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(file, "layers", H5P_DEFAULT);
    int64_t ls[3];
    assert_true(H5Aread(a, H5T_NATIVE_INT64, ls) >= 0);
    assert_int_equal(ls[0], 4);
    assert_int_equal(ls[2], 2);
    H5Aclose(a);
    assert_true(H5Aexists(file, "spec") > 0);
    H5Fclose(file);

    assert_int_equal(
        run_mlq(f, NULL, "export %lld --output '%s' --checkpoint 3", (long long)f->adam, out_path),
        5);
    assert_int_equal(run_mlq(f, NULL, "export 4242 --output '%s'", out_path), 5);
    assert_int_equal(run_mlq(f, NULL, "export %lld", (long long)f->adam), 2);
}

static void read_dataset(hid_t file, const char *name, hid_t want_type, void *v)
{
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) fail_msg("no dataset %s", name);
    hid_t t = H5Dget_type(d);
    if (want_type >= 0) assert_true(H5Tequal(t, want_type) > 0);
    assert_true(H5Dread(d, want_type >= 0 ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                        H5P_DEFAULT, v) >= 0);
    H5Tclose(t);
    H5Dclose(d);
}

/* A run whose checkpoint an older mlq wrote, when a batch norm had four
 * tensors (tests/fixtures/bn-four-tensors-v2.ckpt, epoch 2, step 38):
 * mlq export writes today's state_dict, each num_batches_tracked an int64
 * equal to the checkpoint's steps, every other tensor where its name says. */
static void test_export_old_batch_norm(void **state)
{
    struct fx *f = *state;
    void *blob;
    size_t len;
    char err[512];
    struct checkpoint c;
    if (checkpoint_read_file(MLQ_SOURCE_DIR "/tests/fixtures/bn-four-tensors-v2.ckpt", &blob, &len,
                             err, sizeof err) ||
        checkpoint_decode(blob, len, &c, err, sizeof err))
        fail_msg("%s", err);
    struct mlq_spec spec;
    if (spec_parse(c.spec_json, &spec, err, sizeof err)) fail_msg("spec: %s", err);
    struct store *s;
    if (store_open(&s, f->db, 0, err, sizeof err) != 0) fail_msg("%s", err);
    int64_t id;
    assert_int_equal(store_job_submit_spec(s, &spec, NULL, &id, NULL), 0);
    assert_int_equal(store_job_set_running(s, id, "t1"), 0);
    assert_int_equal(store_checkpoint_put(s, id, c.epoch, c.step, blob, len, c.val_loss, NULL), 0);
    assert_int_equal(store_job_set_succeeded(s, id), 0);
    store_close(&s);
    free(blob);

    char out_path[700], args[800];
    snprintf(out_path, sizeof out_path, "%s/old-bn.h5", f->dir);
    snprintf(args, sizeof args, "export %lld --output '%s'", (long long)id, out_path);
    json_t *doc = run_json(f, args);
    json_t *names = json_object_get(doc, "tensors");
    assert_int_equal(json_array_size(names), 23);
    assert_string_equal(json_string_value(json_array_get(names, 6)), "1.num_batches_tracked");
    json_decref(doc);

    hid_t file = H5Fopen(out_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(file >= 0);
    static const char *const counts[] = {"1.num_batches_tracked", "3.branch.1.num_batches_tracked",
                                         "7.num_batches_tracked"};
    for (int i = 0; i < 3; i++) {
        char name[128];
        snprintf(name, sizeof name, "state_dict/%s", counts[i]);
        int64_t n = -1;
        read_dataset(file, name, H5T_STD_I64LE, &n);
        assert_int_equal(n, 38);
    }
    /* The rest by the checkpoint's own table. */
    for (int i = 0; i < c.n_tensors; i++) {
        const struct checkpoint_tensor *t = &c.tensors[i];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= (size_t)t->shape[d];
        float *v = malloc(n * sizeof *v);
        char name[128];
        snprintf(name, sizeof name, "state_dict/%s", t->name);
        read_dataset(file, name, -1, v);
        assert_memory_equal(v, (t->kind == 0 ? c.params : c.state) + t->offset, n * sizeof *v);
        free(v);
    }
    H5Fclose(file);
    checkpoint_free(&c);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_runs_json),    T(test_show_json),     T(test_metrics_json_and_chart),
        T(test_compare_json), T(test_exact_numbers), T(test_missing_db),
        T(test_rm_and_gc),    T(test_export_hdf5),   T(test_export_old_batch_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
