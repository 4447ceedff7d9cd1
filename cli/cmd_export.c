/* mlq export: a run's checkpoint as an HDF5 model file that any HDF5 reader
 * (h5py, numpy) can run without mlq. Layout (docs/history.md):
 *   /layers/K/weight  float32 (out, in)   dense layer K, counted from 0
 *   /layers/K/bias    float32 (out)
 *   attributes on /: activation, output, loss (strings), layers (int64 sizes,
 *   inputs first), spec (canonical JSON text), run, epoch, step (int64). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>

#include "atomic_file.h"
#include "checkpoint.h"
#include "cli.h"
#include "history.h"
#include "model.h"
#include "spec.h"
#include "spec_model.h"
#include "store.h"

static int attr_string(hid_t obj, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return rc < 0 ? -EIO : 0;
}

static int attr_int64s(hid_t obj, const char *name, const int64_t *v, hsize_t n, bool scalar)
{
    hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? -EIO : 0;
}

static int write_floats(hid_t loc, const char *name, const float *v, int rank, const hsize_t *dims)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    return rc < 0 ? -EIO : 0;
}

static int write_int64(hid_t loc, const char *name, int64_t v)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    return rc < 0 ? -EIO : 0;
}

/* state_dict/NAME for every tensor of the model's table, from the model's
 * buffers, named and shaped as PyTorch's state_dict of the equivalent
 * nn.Sequential (a batch norm's num_batches_tracked as an int64 scalar, as
 * torch keeps it); each name is appended to names. */
static int write_state_dict(hid_t f, const struct model *m, json_t *names)
{
    const struct tensor_table *tt = &m->tensors;
    hid_t g = H5Gcreate2(f, "state_dict", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -EIO;
    int ret = 0;
    for (int i = 0; ret == 0 && i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        const float *v = (t->kind == OP_PARAM ? m->params : m->state) + t->offset;
        if (json_array_append_new(names, json_string(t->name))) ret = -ENOMEM;
        if (ret == 0 && tensor_is_batch_count(t)) {
            ret = write_int64(g, t->name, (int64_t)v[0]);
            continue;
        }
        hsize_t dims[4];
        for (int d = 0; d < t->ndim; d++)
            dims[d] = (hsize_t)t->shape[d];
        if (ret == 0) ret = write_floats(g, t->name, v, t->ndim, dims);
    }
    H5Gclose(g);
    return ret;
}

/* Writes the model to path atomically (atomic_file.h): a failed export
 * leaves the old file, if any, and no half file. */
static int export_hdf5(const char *path, int64_t run, const struct checkpoint *c,
                       const struct mlq_spec *spec, json_t *names, char *err, size_t errlen)
{
    struct model m;
    char why[512];
    int ret = spec_model_create(&m, spec, NULL, why, sizeof why);
    if (ret) {
        snprintf(err, errlen, "cannot rebuild the run's model: %s", why);
        return ret;
    }
    /* By name through the checkpoint's table: one of an older mlq, without
     * the batch counts, exports the model of today. */
    ret = checkpoint_load_tensors(c, &m.tensors, m.params, NULL, 0, m.state, why, sizeof why);
    if (ret) {
        snprintf(err, errlen, "the checkpoint does not fit the spec's model: %s", why);
        model_destroy(&m);
        return ret;
    }
    struct atomic_file af;
    ret = atomic_file_begin(&af, path, 0666, err, errlen);
    if (ret) {
        model_destroy(&m);
        return ret;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack dumps */
    hid_t f = H5Fcreate(af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, errlen, "%.900s: cannot create", af.tmp);
        atomic_file_abort(&af);
        model_destroy(&m);
        return -EIO;
    }
    ret = write_state_dict(f, &m, names);
    if (ret == 0 && !spec->typed) {
        /* The layout before the state_dict, kept for readers of it. */
        hid_t layers = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (layers < 0) ret = -EIO;
        const float *p = m.params;
        for (int l = 0; ret == 0 && l < spec->n_layers; l++) {
            char name[16];
            snprintf(name, sizeof name, "%d", l);
            hid_t g = H5Gcreate2(layers, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g < 0) {
                ret = -EIO;
                break;
            }
            hsize_t wdims[2] = {(hsize_t)spec->layers[l + 1], (hsize_t)spec->layers[l]};
            hsize_t bdims[1] = {(hsize_t)spec->layers[l + 1]};
            ret = write_floats(g, "weight", p, 2, wdims); /* (out, in) */
            p += wdims[0] * wdims[1];
            if (ret == 0) ret = write_floats(g, "bias", p, 1, bdims); /* (out) */
            p += bdims[0];
            H5Gclose(g);
        }
        if (layers >= 0) H5Gclose(layers);
        int64_t sizes[SPEC_MAX_LAYERS + 1];
        for (int l = 0; l <= spec->n_layers; l++)
            sizes[l] = spec->layers[l];
        if (ret == 0) ret = attr_string(f, "activation", spec_activation_name(spec->activation));
        if (ret == 0) ret = attr_int64s(f, "layers", sizes, (hsize_t)spec->n_layers + 1, false);
    }
    /* The architecture: the spec's model object (typed layers or widths,
     * the input shape) and its one-line form. */
    json_t *doc = spec_to_json(spec);
    char *arch = doc ? json_dumps(json_object_get(doc, "model"), JSON_COMPACT) : NULL;
    json_decref(doc);
    char line[512];
    if (ret == 0) ret = arch ? attr_string(f, "architecture", arch) : -ENOMEM;
    free(arch);
    if (ret == 0) ret = attr_string(f, "description", spec_model_describe(spec, line, sizeof line));
    if (ret == 0) ret = attr_string(f, "output", spec_output_name(spec->output));
    if (ret == 0) ret = attr_string(f, "loss", spec_loss_name(spec->loss));
    if (ret == 0) ret = attr_string(f, "spec", c->spec_json);
    if (ret == 0) ret = attr_int64s(f, "run", &run, 1, true);
    if (ret == 0) ret = attr_int64s(f, "epoch", &c->epoch, 1, true);
    if (ret == 0) ret = attr_int64s(f, "step", &c->step, 1, true);
    model_destroy(&m);
    if (H5Fclose(f) < 0 && ret == 0) ret = -EIO;
    if (ret != 0) {
        snprintf(err, errlen, "%.900s: HDF5 write failed", af.tmp);
        atomic_file_abort(&af);
        return ret;
    }
    return atomic_file_commit(&af, err, errlen);
}

static void export_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq export ID --output FILE.h5 [--checkpoint last|best|EPOCH] [--db FILE]\n"
            "                 [--json]\n\n"
            "Writes a train run's network as HDF5: state_dict/NAME for every tensor, named\n"
            "and shaped as PyTorch's state_dict of the equivalent nn.Sequential (0.weight,\n"
            "1.running_mean, ...), with attributes architecture (the spec's model, JSON),\n"
            "description (one line), output, loss, spec (JSON), run, epoch and step. A\n"
            "list of widths also gets layers/K/weight (out, in) and layers/K/bias for dense\n"
            "layer K from 0, and attributes activation and layers (sizes).\n\n"
            "  --output FILE      the HDF5 file to write (replaced if it exists)\n"
            "  --checkpoint WHICH last (default), best (lowest validation loss) or an epoch\n"
            "  --db FILE          the database (default: $MLQ_DB, db.path, else\n"
            "                     $XDG_DATA_HOME/mlq/mlq.db)\n"
            "  --json             print {\"run\", \"epoch\", \"step\", \"output\", \"layers\",\n"
            "                     \"description\", \"tensors\"}\n");
}

/* --output and --checkpoint. */
struct export_args {
    const char *output, *which;
};

static int export_option(void *ctx, int ch, const char *arg)
{
    struct export_args *a = ctx;
    if (ch == 'o') a->output = arg;
    if (ch == 'c') a->which = arg;
    return HISTORY_PROCEED;
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"checkpoint", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    struct export_args a = {.which = "last"};
    const struct history_cmd cmd = {.name = "export",
                                    .shortopts = "o:",
                                    .opts = opts,
                                    .no_csv = true,
                                    .option = export_option,
                                    .ctx = &a,
                                    .usage = export_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    int64_t id, epoch;
    enum store_ckpt_which which;
    if (co.argi != argc - 1 || !a.output) {
        export_usage(stderr);
        return EXIT_USAGE;
    }
    if (!history_parse_id("export", argv[co.argi], &id)) return EXIT_USAGE;
    if (store_ckpt_which_parse(a.which, &which, &epoch) != 0) {
        fprintf(stderr, "mlq export: --checkpoint: expected last, best or an epoch, got '%s'\n",
                a.which);
        return EXIT_USAGE;
    }
    struct store *s;
    rc = history_open("export", co.db, false, &s);
    if (rc != EXIT_OK) return rc;
    struct store_job j = {0};
    struct store_checkpoint ck = {0};
    struct checkpoint c = {0};
    struct mlq_spec spec;
    json_t *names = NULL; /* the tensors exported */
    char err[1024];
    rc = history_job_get("export", s, id, &j);
    if (rc != EXIT_OK) goto out;
    if (j.kind != JOB_TRAIN) {
        fprintf(stderr, "mlq export: run %lld is a %s job; export takes a train run\n",
                (long long)id, spec_kind_name(j.kind));
        rc = EXIT_USAGE;
        goto out;
    }
    int ret = store_checkpoint_get(s, id, which, epoch, &ck);
    if (ret == -ENOENT) {
        fprintf(stderr, "mlq export: %s\n", store_errmsg(s));
        rc = EXIT_NOT_FOUND;
        goto out;
    }
    if (ret != 0) {
        fprintf(stderr, "mlq export: %s\n", store_errmsg(s));
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (checkpoint_decode(ck.blob, ck.size, &c, err, sizeof err) != 0) {
        fprintf(stderr, "mlq export: run %lld, checkpoint of epoch %lld: %s\n", (long long)id,
                (long long)ck.epoch, err);
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (spec_parse(c.spec_json ? c.spec_json : j.spec_json, &spec, err, sizeof err) != 0) {
        fprintf(stderr, "mlq export: run %lld: its spec: %s\n", (long long)id, err);
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    names = json_array();
    if (!names) snprintf(err, sizeof err, "out of memory");
    if (!names || export_hdf5(a.output, id, &c, &spec, names, err, sizeof err) != 0) {
        fprintf(stderr, "mlq export: %s\n", err);
        rc = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (co.json) {
        json_t *o = json_object(), *l = json_array();
        if (spec.typed) {
            json_t *doc = spec_to_json(&spec);
            json_decref(l);
            l = json_incref(json_object_get(json_object_get(doc, "model"), "layers"));
            json_decref(doc);
        } else {
            for (int i = 0; i <= spec.n_layers; i++)
                json_array_append_new(l, json_integer(spec.layers[i]));
        }
        char line[512];
        json_object_set_new(o, "description",
                            json_string(spec_model_describe(&spec, line, sizeof line)));
        json_object_set_new(o, "tensors", names);
        names = NULL;
        json_object_set_new(o, "run", json_integer(id));
        json_object_set_new(o, "epoch", json_integer(c.epoch));
        json_object_set_new(o, "step", json_integer(c.step));
        json_object_set_new(o, "output", json_string(a.output));
        json_object_set_new(o, "layers", l);
        history_json_print(o); /* integers and strings only: as exact as before */
    } else {
        printf("exported run %lld (epoch %lld, step %lld) to %s\n", (long long)id,
               (long long)c.epoch, (long long)c.step, a.output);
    }

out:
    json_decref(names);
    checkpoint_free(&c);
    store_checkpoint_free(&ck);
    store_job_free(&j);
    store_close(&s);
    return rc;
}
