/* mlq deploy, deployments, undeploy, infer: models served online through
 * the broker (docs/serving.md), over libmlq (client/mlq.h). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>

#include "cli.h"
#include "dataset.h"
#include "history.h"
#include "mlq.h"
#include "proto.h"
#include "rng.h"
#include "sampling.h"
#include "spec.h"

#define DEPLOY_WAIT_MS 30000
#define INFER_CHUNK_BYTES (8 << 20) /* inputs per request from a file */

static int exit_of(int rc)
{
    switch (rc) {
    case 0:
        return EXIT_OK;
    case -ENOENT:
        return EXIT_NOT_FOUND;
    case -EINVAL:
    case -EFBIG:
        return EXIT_USAGE;
    case -ETIMEDOUT:
    case -EAGAIN:
        return EXIT_UNAVAILABLE;
    default:
        return EXIT_FAILURE_GENERIC;
    }
}

static int fail(int rc, const char *err)
{
    fprintf(stderr, "mlq: %s\n", err);
    return exit_of(rc);
}

static int open_client(struct mlq_client **c, const char *broker, const char *timeout)
{
    char err[1024];
    int rc = mlq_client_open(c, broker, err, sizeof err);
    if (rc) return fail(rc, err);
    if (timeout) mlq_client_set_timeout(*c, atoi(timeout));
    return EXIT_OK;
}

static bool parse_int(const char *flag, const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "mlq: --%s: %s is not a whole number from %ld to %ld\n", flag, text, lo,
                hi);
        return false;
    }
    *out = v;
    return true;
}

static json_t *deployment_of(json_t *reply)
{
    return json_array_get(json_object_get(reply, "deployments"), 0);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- mlq deploy ----------------------------------------------------------------- */

int cmd_deploy(int argc, char **argv)
{
    const char *usage = "mlq deploy RUN --name NAME [--replicas N] [--max-batch B] "
                        "[--max-delay-us D] [--checkpoint last|best|EPOCH] [--no-wait] [--json] "
                        "[--broker E] [--timeout-ms MS]";
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"replicas", required_argument, NULL, 'r'},
        {"max-batch", required_argument, NULL, 'B'},
        {"max-delay-us", required_argument, NULL, 'D'},
        {"checkpoint", required_argument, NULL, 'c'},
        {"no-wait", no_argument, NULL, 'W'},
        {"json", no_argument, NULL, 'j'},
        {"broker", required_argument, NULL, 'b'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = NULL, *ckpt = NULL, *broker = NULL, *timeout = NULL;
    long replicas = 1, max_batch = 64, max_delay = 0, run = 0;
    bool wait = true, json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            name = optarg;
            break;
        case 'r':
            if (!parse_int("replicas", optarg, 1, 64, &replicas)) return EXIT_USAGE;
            break;
        case 'B':
            if (!parse_int("max-batch", optarg, 1, 65536, &max_batch)) return EXIT_USAGE;
            break;
        case 'D':
            if (!parse_int("max-delay-us", optarg, 0, 1000000, &max_delay)) return EXIT_USAGE;
            break;
        case 'c':
            ckpt = optarg;
            break;
        case 'W':
            wait = false;
            break;
        case 'j':
            json = true;
            break;
        case 'b':
            broker = optarg;
            break;
        case 't':
            timeout = optarg;
            break;
        case 'h':
            printf("usage: %s\n", usage);
            return EXIT_OK;
        default:
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !name || !parse_int("run", argv[optind], 1, INT64_MAX, &run)) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    const char *endpoint = cli_broker_endpoint(broker);
    if (timeout) cli_set_timeout_ms(atoi(timeout));
    int code;
    json_t *body = json_pack("{s:s, s:I, s:s, s:i, s:i, s:i}", "name", name, "run", (json_int_t)run,
                             "checkpoint", ckpt ? ckpt : "last", "replicas", (int)replicas,
                             "max_batch", (int)max_batch, "max_delay_us", (int)max_delay);
    json_t *reply;
    if ((code = cli_broker_call(endpoint, PROTO_DEPLOY, body, &reply)) != EXIT_OK) return code;
    int64_t gen = json_integer_value(json_object_get(reply, "generation"));
    /* Until a replica serves the new generation (or the deployment fails). */
    double waited = 0;
    while (wait) {
        json_t *d = json_object_get(reply, "deployments") ? deployment_of(reply) : reply;
        const char *state = json_string_value(json_object_get(d, "state"));
        bool served = false;
        json_t *r;
        size_t i;
        json_array_foreach(json_object_get(d, "replica_list"), i, r) served |=
            json_integer_value(json_object_get(r, "generation")) == gen &&
            strcmp(json_string_value(json_object_get(r, "state")) ?: "", "ready") == 0;
        if (served || (state && strcmp(state, "failed") == 0) || waited >= DEPLOY_WAIT_MS) break;
        sleep_ms(100);
        waited += 100;
        json_t *next;
        if (cli_broker_call(endpoint, PROTO_DEPLOYMENTS, json_pack("{s:s}", "name", name), &next) !=
            EXIT_OK)
            break;
        json_object_set(next, "rolled_over", json_object_get(reply, "rolled_over"));
        json_decref(reply);
        reply = next;
    }
    json_t *d = json_object_get(reply, "deployments") ? deployment_of(reply) : reply;
    if (json) {
        json_object_set(d, "rolled_over", json_object_get(reply, "rolled_over"));
        cli_print_json(d);
    } else {
        printf("deployment %s: run %lld checkpoint %s (epoch %lld), generation %lld%s; %lld of "
               "%lld replicas ready\n",
               name, (long long)run, ckpt ? ckpt : "last",
               (long long)json_integer_value(json_object_get(d, "epoch")), (long long)gen,
               json_is_true(json_object_get(reply, "rolled_over")) ? " (rolled over)" : "",
               (long long)json_integer_value(json_object_get(d, "ready")),
               (long long)json_integer_value(json_object_get(d, "replicas")));
    }
    const char *state = json_string_value(json_object_get(d, "state"));
    if (state && strcmp(state, "failed") == 0) {
        fprintf(stderr, "mlq: deployment %s cannot be served: %s\n", name,
                json_string_value(json_object_get(d, "error")));
        code = EXIT_FAILURE_GENERIC;
    } else if (wait && json_integer_value(json_object_get(d, "ready")) == 0) {
        fprintf(stderr,
                "mlq: deployment %s is recorded, but no trainer serves it yet: replicas are "
                "taken from idle trainers (mlq workers)\n",
                name);
    }
    json_decref(reply);
    return code;
}

/* ---- mlq deployments, undeploy ---------------------------------------------------- */

static void fmt_us(char *buf, size_t len, const json_t *lat, const char *key)
{
    json_t *v = json_object_get(lat, key);
    if (json_is_number(v))
        snprintf(buf, len, "%.0f", json_number_value(v));
    else
        snprintf(buf, len, "-");
}

int cmd_deployments(int argc, char **argv)
{
    const char *name = NULL, *broker = NULL;
    bool json = false;
    int code = cli_list_args(argc, argv, "mlq deployments [NAME] [--json] [--broker E]",
                             CLI_OPTIONAL_NAME, &name, &broker, &json);
    if (code) return code < 0 ? EXIT_OK : code;
    json_t *reply;
    json_t *body = name ? json_pack("{s:s}", "name", name) : json_object();
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_DEPLOYMENTS, body, &reply)) ==
        EXIT_OK) {
        json_t *list = json_object_get(reply, "deployments");
        if (json) {
            cli_print_json(reply);
        } else if (json_array_size(list) == 0) {
            printf("no deployments\n");
        } else {
            printf("%-16s %5s %-10s %4s %8s %-9s %9s %8s %8s %8s %7s\n", "NAME", "RUN", "CKPT",
                   "GEN", "REPLICAS", "STATE", "REQUESTS", "P50_US", "P99_US", "ERRORS", "ROWS/FW");
            size_t i;
            json_t *d;
            json_array_foreach(list, i, d)
            {
                json_t *lat = json_object_get(d, "latency");
                char p50[32], p99[32], reps[32], rpf[32] = "-";
                fmt_us(p50, sizeof p50, lat, "p50_us");
                fmt_us(p99, sizeof p99, lat, "p99_us");
                snprintf(reps, sizeof reps, "%lld/%lld",
                         (long long)json_integer_value(json_object_get(d, "ready")),
                         (long long)json_integer_value(json_object_get(d, "replicas")));
                if (json_is_number(json_object_get(d, "rows_per_forward")))
                    snprintf(rpf, sizeof rpf, "%.1f",
                             json_number_value(json_object_get(d, "rows_per_forward")));
                printf("%-16s %5lld %-10s %4lld %8s %-9s %9lld %8s %8s %8lld %7s\n",
                       json_string_value(json_object_get(d, "name")),
                       (long long)json_integer_value(json_object_get(d, "run")),
                       json_string_value(json_object_get(d, "checkpoint")),
                       (long long)json_integer_value(json_object_get(d, "generation")), reps,
                       json_string_value(json_object_get(d, "state")),
                       (long long)json_integer_value(json_object_get(d, "requests")), p50, p99,
                       (long long)json_integer_value(json_object_get(d, "errors")), rpf);
                const char *error = json_string_value(json_object_get(d, "error"));
                if (error) printf("  %s\n", error);
            }
        }
        json_decref(reply);
    }
    return code;
}

int cmd_undeploy(int argc, char **argv)
{
    const char *name = NULL, *broker = NULL;
    bool json = false;
    int code = cli_list_args(argc, argv, "mlq undeploy NAME [--json] [--broker E]", CLI_NAME, &name,
                             &broker, &json);
    if (code) return code < 0 ? EXIT_OK : code;
    json_t *reply;
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_UNDEPLOY,
                                json_pack("{s:s}", "name", name), &reply)) == EXIT_OK) {
        if (json)
            cli_print_json(reply);
        else
            printf("deployment %s undeployed\n", name);
        json_decref(reply);
    }
    return code;
}

/* ---- mlq infer ------------------------------------------------------------------ */

/* Rows from JSON on standard input: an array of rows, {"rows": [...]}, or
 * one row (an array of numbers) per line. */
static int read_json_rows(FILE *in, int D, float **x, int64_t *n)
{
    *x = NULL;
    *n = 0;
    json_error_t je;
    json_t *doc = json_loadf(in, JSON_DISABLE_EOF_CHECK, &je);
    json_t *rows = json_array();
    while (doc) {
        json_t *r = json_is_object(doc) ? json_object_get(doc, "rows") : doc;
        bool nested = json_is_array(r) && json_is_array(json_array_get(r, 0));
        if (nested)
            json_array_extend(rows, r);
        else if (json_is_array(r))
            json_array_append(rows, r);
        else {
            fprintf(stderr, "mlq: standard input: a row is an array of %d numbers\n", D);
            json_decref(doc);
            json_decref(rows);
            return EXIT_USAGE;
        }
        json_decref(doc);
        doc = json_loadf(in, JSON_DISABLE_EOF_CHECK, &je);
    }
    if (!feof(in) && je.position > 0 && strstr(je.text, "end of file") == NULL) {
        fprintf(stderr, "mlq: standard input: line %d: %s\n", je.line, je.text);
        json_decref(rows);
        return EXIT_USAGE;
    }
    size_t N = json_array_size(rows);
    if (N == 0) {
        fprintf(stderr, "mlq: standard input holds no rows (JSON arrays of %d numbers)\n", D);
        json_decref(rows);
        return EXIT_USAGE;
    }
    *x = malloc(N * (size_t)D * sizeof(float));
    if (!*x) {
        json_decref(rows);
        return fail(-ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < N; i++) {
        json_t *r = json_array_get(rows, i);
        if (!json_is_array(r) || json_array_size(r) != (size_t)D) {
            fprintf(stderr, "mlq: row %zu has %zu values, the deployment takes %d\n", i,
                    json_is_array(r) ? json_array_size(r) : 0, D);
            free(*x);
            *x = NULL;
            json_decref(rows);
            return EXIT_USAGE;
        }
        for (int k = 0; k < D; k++) {
            json_t *v = json_array_get(r, (size_t)k);
            if (!json_is_number(v)) {
                fprintf(stderr, "mlq: row %zu, value %d is not a number\n", i, k);
                free(*x);
                *x = NULL;
                json_decref(rows);
                return EXIT_USAGE;
            }
            (*x)[i * (size_t)D + (size_t)k] = (float)json_number_value(v);
        }
    }
    *n = (int64_t)N;
    json_decref(rows);
    return EXIT_OK;
}

static hid_t out_dataset(hid_t file, const char *name, hid_t type, int rank, int64_t n, int K)
{
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)K};
    hid_t space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return -1;
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    return d;
}

static int attr_int(hid_t obj, const char *name, int64_t v)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

/* The output file, with predict's datasets (docs/jobs-eval-predict.md). */
static int write_output(const char *path, const char *name, const struct mlq_infer_info *info,
                        int64_t n, int K, const float *out, const int32_t *cls)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "mlq: %s: cannot create the HDF5 file\n", tmp);
        return EXIT_FAILURE_GENERIC;
    }
    herr_t st = 0;
    if (info->classification) {
        hid_t p = out_dataset(f, "predictions", H5T_STD_I32LE, 1, n, 1);
        hid_t q = out_dataset(f, "probabilities", H5T_IEEE_F32LE, 2, n, K);
        st = p < 0 || q < 0 ? -1 : 0;
        if (!st) st = H5Dwrite(p, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, cls);
        if (st >= 0) st = H5Dwrite(q, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
        if (p >= 0) H5Dclose(p);
        if (q >= 0) H5Dclose(q);
    } else {
        hid_t o = out_dataset(f, "outputs", H5T_IEEE_F32LE, 2, n, K);
        st = o < 0 ? -1 : H5Dwrite(o, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
        if (o >= 0) H5Dclose(o);
    }
    if (st >= 0) st = attr_int(f, "run", info->run);
    if (st >= 0) st = attr_int(f, "checkpoint_epoch", info->epoch);
    if (st >= 0) st = attr_int(f, "generation", info->generation);
    (void)name;
    if (H5Fclose(f) < 0) st = -1;
    if (st < 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "mlq: %s: cannot write the HDF5 file\n", path);
        remove(tmp);
        return EXIT_FAILURE_GENERIC;
    }
    return EXIT_OK;
}

int cmd_infer(int argc, char **argv)
{
    const char *usage = "mlq infer NAME [--input FILE.h5 [--x DATASET]] [--output FILE.h5] "
                        "[--json] [--timeout-ms MS] [--broker E]   (no --input: JSON rows on "
                        "standard input)";
    static const struct option longopts[] = {
        {"input", required_argument, NULL, 'i'},  {"x", required_argument, NULL, 'x'},
        {"output", required_argument, NULL, 'o'}, {"json", no_argument, NULL, 'j'},
        {"broker", required_argument, NULL, 'b'}, {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *input = NULL, *xname = "X", *output = NULL, *broker = NULL, *timeout = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            input = optarg;
            break;
        case 'x':
            xname = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'b':
            broker = optarg;
            break;
        case 't':
            timeout = optarg;
            break;
        case 'h':
            printf("usage: %s\n", usage);
            return EXIT_OK;
        default:
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    struct mlq_client *cl;
    int code = open_client(&cl, broker, timeout);
    if (code) return code;
    float *x = NULL, *out = NULL;
    int32_t *cls = NULL;
    int *icls = NULL;
    struct dataset *ds = NULL;
    json_t *reply = NULL;
    if (timeout) cli_set_timeout_ms(atoi(timeout));
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_DEPLOYMENTS,
                                json_pack("{s:s}", "name", name), &reply)))
        goto out;
    json_t *dep = deployment_of(reply);
    int D = (int)json_integer_value(json_object_get(dep, "inputs"));
    int K = (int)json_integer_value(json_object_get(dep, "outputs"));
    bool scale = json_is_true(json_object_get(dep, "scale"));
    int64_t n = 0;
    char err[1024];
    if (input) {
        /* Read as predict reads it: uint8 scaled as in the run's training. */
        struct spec_dataset src = {.scale = scale};
        snprintf(src.path, sizeof src.path, "%s", input);
        snprintf(src.x, sizeof src.x, "%s", xname);
        if (dataset_open(&ds, &src, false, 0, err, sizeof err) != 0) {
            code = fail(-EINVAL, err);
            goto out;
        }
        const struct dataset_info *info = dataset_get_info(ds);
        if (info->d != D) {
            fprintf(stderr, "mlq: %s: %s has %lld inputs per row, deployment %s takes %d\n", input,
                    xname, (long long)info->d, name, D);
            code = EXIT_USAGE;
            goto out;
        }
        n = info->n;
        x = malloc((size_t)(n > 0 ? n : 1) * (size_t)D * sizeof(float));
        if (!x || (n > 0 && dataset_read_rows(ds, 0, (int)n, x, NULL, NULL, err, sizeof err) < 0)) {
            code = fail(-EIO, x ? err : "out of memory");
            goto out;
        }
    } else if ((code = read_json_rows(stdin, D, &x, &n)) != EXIT_OK) {
        goto out;
    }
    out = malloc((size_t)(n > 0 ? n : 1) * (size_t)K * sizeof(float));
    cls = malloc((size_t)(n > 0 ? n : 1) * sizeof *cls);
    icls = malloc((size_t)(n > 0 ? n : 1) * sizeof *icls);
    if (!out || !cls || !icls) {
        code = fail(-ENOMEM, "out of memory");
        goto out;
    }
    int64_t chunk = INFER_CHUNK_BYTES / ((int64_t)D * (int64_t)sizeof(float));
    if (chunk < 1) chunk = 1;
    struct mlq_infer_info info = {0};
    for (int64_t at = 0; at < n; at += chunk) {
        int B = (int)(n - at < chunk ? n - at : chunk);
        int rc = mlq_infer(cl, name, x + at * D, B, D, out + at * K, (size_t)B * (size_t)K,
                           icls + at, &info, err, sizeof err);
        if (rc) {
            code = fail(rc, err);
            goto out;
        }
    }
    for (int64_t i = 0; i < n; i++)
        cls[i] = icls[i];
    if (output) {
        if ((code = write_output(output, name, &info, n, K, out, cls)) == EXIT_OK && !json)
            printf("%lld rows: %s (run %lld, epoch %lld, generation %lld)\n", (long long)n, output,
                   (long long)info.run, (long long)info.epoch, (long long)info.generation);
        if (code == EXIT_OK && json)
            printf(
                "{\"n\":%lld,\"output\":\"%s\",\"run\":%lld,\"epoch\":%lld,\"generation\":%lld}\n",
                (long long)n, output, (long long)info.run, (long long)info.epoch,
                (long long)info.generation);
    } else if (json) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I}", "deployment", name, "run",
                              (json_int_t)info.run, "epoch", (json_int_t)info.epoch, "generation",
                              (json_int_t)info.generation, "n", (json_int_t)n);
        json_t *vals = json_array(), *preds = json_array();
        for (int64_t i = 0; i < n; i++) {
            json_t *row = json_array();
            for (int k = 0; k < K; k++)
                json_array_append_new(row, json_real(out[i * K + k]));
            json_array_append_new(vals, row);
            json_array_append_new(preds, json_integer(cls[i]));
        }
        if (info.classification) {
            json_object_set_new(o, "predictions", preds);
            json_object_set_new(o, "probabilities", vals);
        } else {
            json_decref(preds);
            json_object_set_new(o, "outputs", vals);
        }
        cli_print_json(o);
        json_decref(o);
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (info.classification) {
                printf("%d %.6f\n", cls[i], out[i * K + cls[i]]);
            } else {
                for (int k = 0; k < K; k++)
                    printf("%s%.6g", k ? " " : "", out[i * K + k]);
                putchar('\n');
            }
        }
    }
out:
    json_decref(reply);
    dataset_close(&ds);
    free(x);
    free(out);
    free(cls);
    free(icls);
    mlq_client_close(&cl);
    return code;
}

int cli_generate_deployed(const char *name, const struct mlq_spec *spec, const char *broker,
                          const char *timeout, bool json)
{
    struct mlq_client *cl;
    int code = open_client(&cl, broker, timeout);
    if (code) return code;
    json_t *reply = NULL, *ids_json = NULL;
    float *x = NULL, *p = NULL;
    struct sampling_rank *rank = NULL;
    uint8_t *ids = NULL;
    char *text = NULL, err[1024];
    if (timeout) cli_set_timeout_ms(atoi(timeout));
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_DEPLOYMENTS,
                                json_pack("{s:s}", "name", name), &reply)))
        goto out;
    json_t *dep = deployment_of(reply);
    int T = (int)json_integer_value(json_object_get(dep, "inputs"));
    int K = (int)json_integer_value(json_object_get(dep, "outputs"));
    int steps = (int)json_integer_value(json_object_get(dep, "steps"));
    int V = (int)json_integer_value(json_object_get(dep, "vocab"));
    if (steps < 2 || V < 1 || T != steps || K < 2) {
        fprintf(stderr,
                "mlq: deployment %s does not serve a language model: generating text needs a "
                "model that reads token ids (an embedding first) and predicts the next one at "
                "every step (a broker that says \"steps\" and \"vocab\" in DEPLOYMENTS)\n",
                name);
        code = EXIT_USAGE;
        goto out;
    }
    size_t n_prompt = strlen(spec->prompt), N = (size_t)spec->gen_tokens;
    for (size_t i = 0; i < n_prompt; i++)
        if ((uint8_t)spec->prompt[i] >= V) {
            fprintf(stderr,
                    "mlq: prompt: byte %u at %zu is outside the model's vocabulary [0, %d)\n",
                    (uint8_t)spec->prompt[i], i, V);
            code = EXIT_USAGE;
            goto out;
        }
    x = malloc((size_t)T * sizeof *x);
    p = malloc((size_t)K * sizeof *p);
    rank = malloc((size_t)K * sizeof *rank);
    ids = malloc(n_prompt + N);
    text = malloc(3 * N + 1);
    ids_json = json_array();
    if (!x || !p || !rank || !ids || !text || !ids_json) {
        code = fail(-ENOMEM, "out of memory");
        goto out;
    }
    memcpy(ids, spec->prompt, n_prompt);
    /* A generate job's loop (trainer/generate.c) with the deployment as the
     * model: the window of the last T tokens, its tail -1, is answered with
     * the next token's probabilities, which the same sampler draws from. */
    struct rng r;
    rng_seed(&r, spec->seed);
    struct mlq_infer_info info = {0}, first = {0};
    size_t have = n_prompt;
    for (size_t t = 0; t < N; t++) {
        size_t w = have < (size_t)T ? have : (size_t)T;
        for (size_t i = 0; i < (size_t)T; i++)
            x[i] = i < w ? (float)ids[have - w + i] : -1.0f;
        int cls, rc = mlq_infer(cl, name, x, 1, T, p, (size_t)K, &cls, &info, err, sizeof err);
        if (rc) {
            code = fail(rc, err);
            goto out;
        }
        if (t == 0) first = info;
        if (info.generation != first.generation || info.outputs != K) {
            fprintf(stderr,
                    "mlq: deployment %s rolled over to generation %lld (run %lld) during the "
                    "generation, which began on generation %lld: run it again\n",
                    name, (long long)info.generation, (long long)info.run,
                    (long long)first.generation);
            code = EXIT_FAILURE_GENERIC;
            goto out;
        }
        int next = sampling_next(p, K, spec->temperature, spec->top_k, rank, &r);
        if (next >= V || next > 255) {
            fprintf(stderr,
                    "mlq: deployment %s predicted token %d, which its embedding (vocabulary %d) "
                    "or a byte cannot hold\n",
                    name, next, V);
            code = EXIT_FAILURE_GENERIC;
            goto out;
        }
        ids[have++] = (uint8_t)next;
        json_array_append_new(ids_json, json_integer(next));
    }
    sampling_utf8(text, ids + n_prompt, N);
    if (json) {
        json_t *o =
            json_pack("{s:s, s:s, s:i, s:f, s:i, s:I, s:I, s:O, s:s, s:I, s:I}", "text", text,
                      "prompt", spec->prompt, "tokens", (int)N, "temperature", spec->temperature,
                      "top_k", spec->top_k, "seed", (json_int_t)spec->seed, "epoch",
                      (json_int_t)first.epoch, "ids", ids_json, "deployment", name, "run",
                      (json_int_t)first.run, "generation", (json_int_t)first.generation);
        if (!o) {
            code = fail(-ENOMEM, "out of memory");
            goto out;
        }
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("%s%s\n", spec->prompt, text);
    }
out:
    json_decref(ids_json);
    json_decref(reply);
    free(text);
    free(ids);
    free(rank);
    free(p);
    free(x);
    mlq_client_close(&cl);
    return code;
}
