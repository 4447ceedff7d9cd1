/* mlq submit, wait, cancel, queue, workers, eval, predict: the commands that
 * talk to the broker (docs/jobs.md). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "cli.h"
#include "config.h"
#include "dataset_transfer.h"
#include "dataset.h"
#include "history.h"
#include "job_memory.h"
#include "keys.h"
#include "proto.h"
#include "render.h"
#include "sha256.h"
#include "spec.h"
#include "spec_model.h"
#include "store.h"

#define WAIT_POLL_MS 250
#define WAIT_RETRIES 6 /* unanswered STATUS requests before wait gives up */

static int parse_id(const char *text, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < 1) {
        fprintf(stderr, "mlq: '%s' is not a job id\n", text);
        return -EINVAL;
    }
    *id = v;
    return 0;
}

/* ---- mlq wait ------------------------------------------------------------------------ */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double metric_value(const json_t *metrics, const char *key, int64_t *epoch)
{
    json_t *m = json_object_get(metrics, key);
    if (!m) return NAN;
    if (epoch) *epoch = json_integer_value(json_object_get(m, "epoch"));
    json_t *v = json_object_get(m, "value");
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* mlq wait's plain line (docs/jobs.md); NaN values are left out. */
static void print_epoch_line(int64_t id, int64_t epoch, int64_t epochs, double loss, double vloss,
                             double acc)
{
    printf("job %lld epoch %lld/%lld", (long long)id, (long long)epoch, (long long)epochs);
    if (!isnan(loss)) printf(" train_loss %.6g", loss);
    if (!isnan(vloss)) printf(" val_loss %.6g", vloss);
    if (!isnan(acc)) printf(" accuracy %.6g", acc);
    printf("\n");
}

/* "job 7 queued, 3 jobs ahead": a queued job's place (STATUS queue_ahead). */
static void print_place(FILE *out, int64_t id, int64_t ahead)
{
    if (ahead == 0)
        fprintf(out, "job %lld queued, no job ahead", (long long)id);
    else
        fprintf(out, "job %lld queued, %lld job%s ahead", (long long)id, (long long)ahead,
                ahead == 1 ? "" : "s");
}

static void show_progress(int64_t id, const json_t *job, const json_t *metrics, bool tty,
                          int64_t *last_epoch, double t0, int64_t epoch0)
{
    int64_t epoch = 0;
    double loss = metric_value(metrics, "train_loss", &epoch);
    double vloss = metric_value(metrics, "val_loss", NULL);
    double acc = metric_value(metrics, "val_accuracy", NULL);
    if (isnan(acc)) acc = metric_value(metrics, "train_accuracy", NULL);
    int64_t epochs = json_integer_value(json_object_get(job, "epochs"));
    const char *state = json_string_value(json_object_get(job, "state"));
    if (tty) {
        int width = 30, fill = epochs > 0 ? (int)(width * epoch / epochs) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        char eta[32] = "--:--";
        double dt = mono_s() - t0;
        if (epoch > epoch0 && epochs > epoch) {
            double left = dt / (double)(epoch - epoch0) * (double)(epochs - epoch);
            snprintf(eta, sizeof eta, "%d:%02d", (int)left / 60, (int)left % 60);
        }
        fprintf(stderr, "\r\033[Kjob %lld %-9s [%s] epoch %lld/%lld", (long long)id, state, bar,
                (long long)epoch, (long long)epochs);
        if (!isnan(loss)) fprintf(stderr, " loss %.4f", isnan(vloss) ? loss : vloss);
        if (!isnan(acc)) fprintf(stderr, " acc %.4f", acc);
        fprintf(stderr, " ETA %s", eta);
        fflush(stderr);
    } else if (epoch != *last_epoch) {
        print_epoch_line(id, epoch, epochs, loss, vloss, acc);
        fflush(stdout);
    }
    *last_epoch = epoch;
}

static double epoch_value(const json_t *e, const char *key)
{
    json_t *v = json_object_get(e, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* One line per epoch the broker listed (STATUS with since_epoch), in the
 * form show_progress prints. */
static void print_epochs(int64_t id, const json_t *job, const json_t *epochs, int64_t *last_epoch)
{
    int64_t total = json_integer_value(json_object_get(job, "epochs"));
    size_t i;
    const json_t *e;
    json_array_foreach(epochs, i, e)
    {
        int64_t epoch = json_integer_value(json_object_get(e, "epoch"));
        if (epoch <= *last_epoch) continue;
        double loss = epoch_value(e, "train_loss"), vloss = epoch_value(e, "val_loss");
        double acc = epoch_value(e, "val_accuracy");
        if (isnan(acc)) acc = epoch_value(e, "train_accuracy");
        print_epoch_line(id, epoch, total, loss, vloss, acc);
        *last_epoch = epoch;
    }
    fflush(stdout);
}

/* Ctrl-C ends the wait, not the job: say so, and how to follow it again. */
static int detached(int64_t id, const char *state, bool tty)
{
    if (tty) fputs("\r\033[K", stderr);
    fprintf(stderr,
            "mlq: stopped waiting; job %lld goes on (%s). Follow it again with mlq wait %lld "
            "or mlq logs %lld --follow; stop it with mlq cancel %lld\n",
            (long long)id, state, (long long)id, (long long)id, (long long)id);
    return EXIT_INTERRUPTED;
}

/* Polls STATUS until the job is finished. quiet: no progress output. */
static int wait_job(const char *endpoint, int64_t id, bool json, bool quiet)
{
    bool tty = !quiet && !json && isatty(STDERR_FILENO);
    int64_t last_epoch = -1, epoch0 = -1, last_ahead = -1;
    double t0 = mono_s();
    int unreachable = 0;
    bool lines = !quiet && !json && !tty;
    cli_catch_interrupt();
    const char *last_state = "queued";
    char state_buf[16] = "";
    for (;;) {
        if (cli_interrupted) return detached(id, last_state, tty);
        json_t *reply;
        json_t *req = json_pack("{s:I}", "id", (json_int_t)id);
        if (lines)
            json_object_set_new(req, "since_epoch", json_integer(last_epoch < 0 ? 0 : last_epoch));
        int code = cli_broker_call(endpoint, PROTO_STATUS, req, &reply);
        if (code == EXIT_INTERRUPTED || cli_interrupted) return detached(id, last_state, tty);
        /* A broker restart while we wait is not the end of the job. */
        if (code == EXIT_UNAVAILABLE && ++unreachable < WAIT_RETRIES) continue;
        if (code) return code;
        unreachable = 0;
        json_t *job = json_object_get(reply, "job");
        json_t *metrics = json_object_get(reply, "metrics");
        const char *state = json_string_value(json_object_get(job, "state"));
        if (!state) {
            json_decref(reply);
            fprintf(stderr, "mlq: bad STATUS reply\n");
            return EXIT_FAILURE_GENERIC;
        }
        snprintf(state_buf, sizeof state_buf, "%s", state);
        last_state = state_buf;
        if (epoch0 < 0 && strcmp(state, "running") == 0) {
            metric_value(metrics, "train_loss", &epoch0);
            t0 = mono_s();
        }
        json_t *epochs = json_object_get(reply, "epochs");
        json_t *place = json_object_get(reply, "queue_ahead");
        if (!quiet && !json && json_is_integer(place)) {
            /* Queued: its place instead of a bar; a line when it changes. */
            int64_t ahead = json_integer_value(place);
            if (tty) {
                fputs("\r\033[K", stderr);
                print_place(stderr, id, ahead);
                fflush(stderr);
            } else if (ahead != last_ahead) {
                print_place(stdout, id, ahead);
                fputc('\n', stdout);
                fflush(stdout);
            }
            last_ahead = ahead;
        } else if (lines && json_is_array(epochs))
            print_epochs(id, job, epochs, &last_epoch);
        else if (!quiet && !json)
            show_progress(id, job, metrics, tty, &last_epoch, t0, epoch0 < 0 ? 0 : epoch0);
        bool finished = strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                        strcmp(state, "cancelled") == 0 || strcmp(state, "stopped") == 0;
        if (finished) {
            if (tty) fprintf(stderr, "\n");
            const char *error = json_string_value(json_object_get(job, "error"));
            bool ok = strcmp(state, "succeeded") == 0 || strcmp(state, "stopped") == 0;
            if (json)
                cli_print_json(reply);
            else if (!quiet)
                printf("job %lld %s%s%s\n", (long long)id, state, error ? ": " : "",
                       error ? error : "");
            else if (!ok && error) /* eval, predict, generate: the reason, not only the code */
                fprintf(stderr, "mlq: job %lld %s: %s\n", (long long)id, state, error);
            else if (!ok)
                fprintf(stderr, "mlq: job %lld %s (mlq logs %lld shows its events)\n",
                        (long long)id, state, (long long)id);
            /* A trial its sweep stopped early ran as it should: exit 0. */
            int rc = ok                             ? EXIT_OK
                     : strcmp(state, "failed") == 0 ? EXIT_JOB_FAILED
                                                    : EXIT_JOB_CANCELLED;
            json_decref(reply);
            return rc;
        }
        json_decref(reply);
        usleep(WAIT_POLL_MS * 1000);
    }
}

/* ---- building a spec from flags --------------------------------------------------- */

/* Sets doc[a][b]... = v for a dotted path, creating objects; steals v. */
static void set_path(json_t *doc, const char *path, json_t *v)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *o = doc;
    char *save = NULL;
    char *part = strtok_r(buf, ".", &save);
    for (char *next; (next = strtok_r(NULL, ".", &save)) != NULL; part = next) {
        json_t *child = json_object_get(o, part);
        if (!json_is_object(child)) {
            child = json_object();
            json_object_set_new(o, part, child);
        }
        o = child;
    }
    json_object_set_new(o, part, v);
}

/* A relative path that names a file here is made absolute (the trainer may
 * run elsewhere, in another directory); one that does not is left relative,
 * for the trainer to find under its data.root (docs/jobs.md). */
static int make_absolute(char *path, size_t len, bool must_exist)
{
    if (!path[0] || path[0] == '/') return 0;
    if (must_exist && access(path, F_OK) != 0) return 0;
    char cwd[PATH_MAX], out[PATH_MAX * 2];
    if (!getcwd(cwd, sizeof cwd)) return -errno;
    snprintf(out, sizeof out, "%s/%s", cwd, path);
    if (strlen(out) >= len) return -ENAMETOOLONG;
    snprintf(path, len, "%s", out);
    return 0;
}

/* A train job whose files are readable here is sized as a trainer on this
 * host would size it (trainer.memory_budget_mb of this configuration), so
 * that a job no trainer here could hold is refused before it is queued.
 * Files that are not here, or that a trainer would refuse for another
 * reason, are left to the trainer. Returns 0 or -1 with the reason printed. */
static int check_memory(const struct mlq_spec *spec)
{
    if (spec->kind != JOB_TRAIN || access(spec->dataset.path, R_OK) != 0 ||
        (spec->has_validation && access(spec->validation.path, R_OK) != 0))
        return 0;
    struct config cfg;
    char err[4096];
    if (cli_config_load(&cfg, NULL, err, sizeof err) != 0) return 0; /* said by broker_endpoint */
    struct job_memory_job j = {.spec = spec, .model = spec};
    struct dataset_info info;
    if (dataset_probe(&spec->dataset, true, &info, &j.data.row_bytes, err, sizeof err)) return 0;
    j.data.rows = info.n;
    j.data.x_rank = info.x_rank;
    memcpy(j.data.x_dims, info.x_dims, sizeof j.data.x_dims);
    /* Typed layers without model.input: their shapes on this data, as the
     * trainer will check them. */
    struct shape shape = spec_model_dataset_shape(info.x_rank, info.x_dims);
    if (spec_model_check(spec, &shape, spec->batch_size, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "mlq: bad spec: %s\n", err);
        return -1;
    }
    if (spec->has_validation) {
        if (dataset_probe(&spec->validation, true, &info, &j.val.row_bytes, err, sizeof err))
            return 0;
        j.val.rows = info.n;
    }
    job_memory_set_limit(cfg.trainer_memory_budget_mb);
    struct job_memory m;
    if (job_memory_plan(&j, &m, err, sizeof err) == 0) return 0;
    fprintf(stderr, "mlq: %s\n", err);
    return -1;
}

/* Validates doc (stolen) as a spec, makes its paths absolute, and returns the
 * canonical document, or NULL with the reason printed. */
static json_t *finish_spec(json_t *doc)
{
    struct mlq_spec spec;
    char err[1024];
    int rc = spec_from_json(doc, &spec, err, sizeof err);
    json_decref(doc);
    if (!rc) rc = spec_model_check(&spec, NULL, spec.batch_size, NULL, NULL, err, sizeof err);
    if (rc) {
        fprintf(stderr, "mlq: bad spec: %s\n", err);
        return NULL;
    }
    if (make_absolute(spec.dataset.path, sizeof spec.dataset.path, true) ||
        (spec.has_validation &&
         make_absolute(spec.validation.path, sizeof spec.validation.path, true)) ||
        make_absolute(spec.output_path, sizeof spec.output_path, false)) {
        fprintf(stderr, "mlq: cannot make the dataset paths absolute\n");
        return NULL;
    }
    if (check_memory(&spec)) return NULL;
    return spec_to_json(&spec);
}

static json_t *number_arg(const char *flag, const char *text, bool integer)
{
    char *end;
    errno = 0;
    if (integer) {
        long long v = strtoll(text, &end, 10);
        if (!errno && !*end && end != text) return json_integer(v);
    } else {
        double v = strtod(text, &end);
        if (!errno && !*end && end != text) return json_real(v);
    }
    fprintf(stderr, "mlq: --%s takes %s, got '%s'\n", flag, integer ? "an integer" : "a number",
            text);
    return NULL;
}

static json_t *layers_arg(const char *text)
{
    json_t *a = json_array();
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            fprintf(stderr, "mlq: --layers takes sizes like 784,128,10, got '%s'\n", text);
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, json_integer(v));
        p = *end ? end + 1 : end;
    }
    return a;
}

/* Flags that map onto spec fields: name, path in the spec, type. */
struct spec_flag {
    const char *flag;
    const char *path;
    char type; /* s string, i integer, f number, l layers, d dataset path */
};
static const struct spec_flag spec_flags[] = {
    {"dataset", "dataset.path", 'd'},
    {"validation", "validation.path", 'd'},
    {"dataset-name", "dataset.name", 's'}, /* a pushed dataset (mlq dataset push) */
    {"validation-name", "validation.name", 's'},
    {"validation-split", "validation_split", 'f'},
    {"layers", "model.layers", 'l'},
    {"activation", "model.activation", 's'},
    {"output-activation", "model.output", 's'},
    {"loss", "loss", 's'},
    {"optimizer", "optimizer.name", 's'},
    {"lr", "optimizer.lr", 'f'},
    {"momentum", "optimizer.momentum", 'f'},
    {"weight-decay", "optimizer.weight_decay", 'f'},
    {"batch-size", "batch_size", 'i'},
    {"epochs", "epochs", 'i'},
    {"max-seconds", "max_seconds", 'f'},
    {"seed", "seed", 'i'},
    {"l1", "regularization.l1", 'f'},
    {"l2", "regularization.l2", 'f'},
    {"threads", "threads", 'i'},
    {"checkpoint-every", "checkpoint_every", 'i'},
    {"name", "name", 's'},
    {"priority", "priority", 'i'},
    {"max-attempts", "max_attempts", 'i'},
};
#define N_SPEC_FLAGS (sizeof spec_flags / sizeof spec_flags[0])

enum {
    OPT_SPEC = 1000,
    OPT_WAIT,
    OPT_JSON,
    OPT_BROKER,
    OPT_REQUEST_ID,
    OPT_HELP,
    OPT_EXPERIMENT,
    OPT_TAG,
    OPT_AFTER,
    OPT_PUSH
};

static int apply_flag(json_t *doc, const struct spec_flag *f, const char *arg)
{
    json_t *v = NULL;
    switch (f->type) {
    case 's':
    case 'd':
        v = json_string(arg);
        break;
    case 'i':
        v = number_arg(f->flag, arg, true);
        break;
    case 'f':
        v = number_arg(f->flag, arg, false);
        break;
    case 'l':
        v = layers_arg(arg);
        break;
    }
    if (!v) return -EINVAL;
    set_path(doc, f->path, v);
    return 0;
}

static void submit_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq submit [FILE | --spec FILE] [FLAGS] [--priority N] [--max-attempts N]\n"
            "                  [--experiment NAME] [--tag KEY=VALUE]... [--after ID[,ID...]]\n"
            "                  [--wait] [--json] [--broker ENDPOINT] [--request-id ID] [--push]\n"
            "spec flags:");
    for (size_t i = 0; i < N_SPEC_FLAGS; i++)
        fprintf(out, "%s--%s", i % 6 ? " " : "\n  ", spec_flags[i].flag);
    fprintf(out, "\n--request-id ID: a submission repeated with the same ID (and spec) is the\n"
                 "same job, once (the default is a fresh ID per invocation, kept across its\n"
                 "own resends).\n"
                 "--push: the spec's local dataset files pushed to the broker first (mlq\n"
                 "dataset push), so that trainers on any host fetch them; a predict spec's\n"
                 "output comes back to its path here (with --wait; else mlq dataset get).\n"
                 "Prints the job id. Exit codes: docs/jobs.md.\n");
}

/* A fresh request id: the time first, so that the broker's index of them
 * grows at its end, then 64 random bits. */
static void new_request_id(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r ^= (uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec;
    snprintf(out, len, "%016llx%016llx",
             (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec,
             (unsigned long long)r);
}

/* Whether a file can be made at path (its directory exists and is ours to
 * write); 0, or -1 after saying why. */
static int output_dir_writable(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/'); /* path is absolute */
    const char *why = NULL;
    if (!slash || !slash[1]) {
        why = "not a file name";
    } else {
        slash[slash == dir ? 1 : 0] = '\0';
        if (access(dir, F_OK) != 0)
            why = "its directory does not exist";
        else if (access(dir, W_OK) != 0)
            why = "its directory is not writable";
    }
    if (why) fprintf(stderr, "mlq: output %s: %s\n", path, why);
    return why ? -1 : 0;
}

/* mlq predict --push: the succeeded job's output, a dataset at the broker,
 * fetched into path (each chunk and the whole file verified). */
static int fetch_output(const char *endpoint, int64_t id, const char *path, bool json)
{
    json_t *reply;
    int code =
        cli_broker_call(endpoint, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), &reply);
    if (code) return code;
    json_t *result = json_object_get(json_object_get(reply, "job"), "result");
    const char *name = json_string_value(json_object_get(result, "output"));
    const char *sha = json_string_value(json_object_get(result, "output_sha256"));
    if (!name || !sha || !sha256_hex_valid(sha)) {
        fprintf(stderr, "mlq: job %lld names no output at the broker\n", (long long)id);
        json_decref(reply);
        return EXIT_FAILURE_GENERIC;
    }
    int64_t size = 0;
    code = dataset_fetch_file(endpoint, sha, path, &size);
    if (code == EXIT_OK && !json)
        printf("output: %s (%lld bytes, sha256 %.12s... verified), also kept at the broker as "
               "dataset %s\n",
               path, (long long)size, sha, name);
    else if (code != EXIT_OK)
        fprintf(stderr,
                "mlq: the output stays at the broker: mlq dataset get %s --output "
                "%s\n",
                name, path);
    json_decref(reply);
    return code;
}

/* Sends SUBMIT for spec (stolen) under request_id (NULL: a fresh one), again
 * each second while unanswered: the broker makes one job of them all. */
static int submit_call(const char *endpoint, json_t *spec, const char *request_id,
                       const json_t *extra, json_t **reply)
{
    char fresh[40];
    if (!request_id) {
        new_request_id(fresh, sizeof fresh);
        request_id = fresh;
    }
    json_t *body = json_pack("{s:o, s:s}", "spec", spec, "request_id", request_id);
    if (body && extra) json_object_update(body, (json_t *)extra);
    return cli_broker_call_resend(endpoint, PROTO_SUBMIT, body, reply);
}

/* Submits spec (stolen, canonical) and optionally waits. output_here: a
 * pushed predict output is fetched there once the job succeeds (NULL:
 * none). */
static int submit_spec(const char *endpoint, json_t *spec, const char *request_id, bool wait,
                       bool json, const json_t *extra, const char *output_here)
{
    json_t *reply;
    int code = submit_call(endpoint, spec, request_id, extra, &reply);
    if (code) return code;
    int64_t id = json_integer_value(json_object_get(reply, "id"));
    if (json && !wait)
        cli_print_json(reply);
    else if (!json)
        printf("%lld\n", (long long)id);
    fflush(stdout);
    json_decref(reply);
    if (output_here && !wait)
        fprintf(stderr,
                "mlq submit: its output will be the broker's dataset predict-%lld: mlq dataset "
                "get predict-%lld --output %s (or submit with --wait)\n",
                (long long)id, (long long)id, output_here);
    if (!wait) return EXIT_OK;
    code = wait_job(endpoint, id, json, false);
    if (output_here && code == EXIT_OK) code = fetch_output(endpoint, id, output_here, json);
    return code;
}

/* mlq submit --push of a predict spec: the trainer may not share this
 * host's files, so a path output comes back here through the broker, as
 * with mlq predict --push. Sets output_here (made absolute, its directory
 * checked); "" when the spec has no path output. 0 or -1 after saying why. */
static int push_output(json_t *spec, char output_here[PATH_MAX])
{
    output_here[0] = '\0';
    const char *kind = json_string_value(json_object_get(spec, "kind"));
    const char *out = json_string_value(json_object_get(spec, "output"));
    if (!kind || strcmp(kind, "predict") != 0 || !out) return 0;
    snprintf(output_here, PATH_MAX, "%s", out);
    if (make_absolute(output_here, PATH_MAX, false) != 0) {
        fprintf(stderr, "mlq submit --push: output %s: cannot make the path absolute\n", out);
        return -1;
    }
    if (output_dir_writable(output_here) != 0) return -1;
    json_object_set_new(spec, "output", json_pack("{s:b}", "push", 1));
    return 0;
}

/* mlq submit --push: each local file of the spec's dataset, input and
 * validation pushed to the broker (named after the file) and named by its
 * name and sha256 instead of its path. 0 or -1 after printing why. */
static int push_paths(json_t *spec, const char *broker, const char *cmd)
{
    static const char *const fields[] = {"dataset", "input", "validation"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        json_t *d = json_object_get(spec, fields[i]);
        const char *path = json_string_value(json_object_get(d, "path"));
        if (!path) continue;
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "%s --push: %s.path %s: %s\n", cmd, fields[i], path, strerror(errno));
            return -1;
        }
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t n = strlen(base);
        if (n > 3 && strcmp(base + n - 3, ".h5") == 0) n -= 3;
        char name[129], sha[65];
        snprintf(name, sizeof name, "%.*s", (int)(n < 127 ? n : 127), base);
        struct spec_dataset src = {.scale = true};
        snprintf(src.x, sizeof src.x, "%s", json_string_value(json_object_get(d, "x")));
        snprintf(src.y, sizeof src.y, "%s", json_string_value(json_object_get(d, "y")));
        if (cli_dataset_push(path, name, false, &src, broker, false, sha, true) != EXIT_OK) {
            fprintf(stderr,
                    "%s --push: %s not pushed (mlq dataset push %s --name OTHER gives it "
                    "another name)\n",
                    cmd, path, path);
            return -1;
        }
        fprintf(stderr, "%s: %s pushed as %s (sha256 %.12s...)\n", cmd, path, name, sha);
        json_object_del(d, "path");
        json_object_set_new(d, "name", json_string(name));
        json_object_set_new(d, "sha256", json_string(sha));
    }
    return 0;
}

int cmd_submit(int argc, char **argv)
{
    struct option longopts[N_SPEC_FLAGS + 11];
    for (size_t i = 0; i < N_SPEC_FLAGS; i++)
        longopts[i] = (struct option){spec_flags[i].flag, required_argument, NULL, (int)i};
    longopts[N_SPEC_FLAGS] = (struct option){"spec", required_argument, NULL, OPT_SPEC};
    longopts[N_SPEC_FLAGS + 1] = (struct option){"wait", no_argument, NULL, OPT_WAIT};
    longopts[N_SPEC_FLAGS + 2] = (struct option){"json", no_argument, NULL, OPT_JSON};
    longopts[N_SPEC_FLAGS + 3] = (struct option){"broker", required_argument, NULL, OPT_BROKER};
    longopts[N_SPEC_FLAGS + 4] = (struct option){"help", no_argument, NULL, OPT_HELP};
    longopts[N_SPEC_FLAGS + 5] =
        (struct option){"request-id", required_argument, NULL, OPT_REQUEST_ID};
    longopts[N_SPEC_FLAGS + 6] =
        (struct option){"experiment", required_argument, NULL, OPT_EXPERIMENT};
    longopts[N_SPEC_FLAGS + 7] = (struct option){"tag", required_argument, NULL, OPT_TAG};
    longopts[N_SPEC_FLAGS + 8] = (struct option){"after", required_argument, NULL, OPT_AFTER};
    longopts[N_SPEC_FLAGS + 9] = (struct option){"push", no_argument, NULL, OPT_PUSH};
    longopts[N_SPEC_FLAGS + 10] = (struct option){NULL, 0, NULL, 0};

    const char *spec_file = NULL, *broker = NULL, *request_id = NULL;
    json_t *extra = json_object();
    bool wait = false, json = false, push = false;
    /* Flags are applied after --spec, wherever they stand: collect first. */
    const char *values[N_SPEC_FLAGS] = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c >= 0 && c < (int)N_SPEC_FLAGS) {
            values[c] = optarg;
            continue;
        }
        switch (c) {
        case OPT_SPEC:
            spec_file = optarg;
            break;
        case OPT_WAIT:
            wait = true;
            break;
        case OPT_PUSH:
            push = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_BROKER:
            broker = optarg;
            break;
        case OPT_REQUEST_ID:
            request_id = optarg;
            if (!request_id[0] || strlen(request_id) > PROTO_REQUEST_ID_MAX) {
                fprintf(stderr, "mlq submit: --request-id takes 1 to %d characters\n",
                        PROTO_REQUEST_ID_MAX);
                return EXIT_USAGE;
            }
            break;
        case OPT_EXPERIMENT:
        case OPT_TAG:
        case OPT_AFTER:
            if (cli_meta_option(extra, "mlq submit",
                                c == OPT_EXPERIMENT ? 'e'
                                : c == OPT_TAG      ? 't'
                                                    : 'a',
                                optarg) != 0) {
                json_decref(extra);
                return EXIT_USAGE;
            }
            break;
        case OPT_HELP:
            json_decref(extra);
            submit_usage(stdout);
            return EXIT_OK;
        default:
            json_decref(extra);
            submit_usage(stderr);
            return EXIT_USAGE;
        }
    }
    /* mlq submit job.json: the spec file as the operand, as mlq sweep takes its own. */
    if (optind < argc && (spec_file || optind + 1 < argc)) {
        if (spec_file)
            fprintf(stderr,
                    "mlq submit: the spec twice (--spec %s and %s): give one file, as FILE or "
                    "--spec FILE\n",
                    spec_file, argv[optind]);
        else
            fprintf(stderr, "mlq submit: one spec file, got '%s' and '%s'\n", argv[optind],
                    argv[optind + 1]);
        json_decref(extra);
        return EXIT_USAGE;
    }
    if (optind < argc) spec_file = argv[optind];
    bool any_flag = false;
    for (size_t i = 0; i < N_SPEC_FLAGS; i++)
        any_flag |= values[i] != NULL;
    if (!spec_file && !any_flag) {
        fprintf(stderr, "mlq submit: no job: give a spec file (mlq submit job.json, or --spec "
                        "FILE) or spec flags (--dataset F --layers 784,128,10 ...)\n");
        submit_usage(stderr);
        json_decref(extra);
        return EXIT_USAGE;
    }
    json_t *doc;
    if (spec_file) {
        json_error_t jerr;
        doc = json_load_file(spec_file, JSON_REJECT_DUPLICATES, &jerr);
        if (!doc) {
            fprintf(stderr, "mlq: %s:%d: %s\n", spec_file, jerr.line, jerr.text);
            json_decref(extra);
            return EXIT_USAGE;
        }
        if (!json_is_object(doc)) {
            fprintf(stderr, "mlq: %s: the spec must be a JSON object\n", spec_file);
            json_decref(doc);
            json_decref(extra);
            return EXIT_USAGE;
        }
    } else {
        doc = json_object();
    }
    for (size_t i = 0; i < N_SPEC_FLAGS; i++)
        if (values[i] && apply_flag(doc, &spec_flags[i], values[i]) != 0) {
            json_decref(doc);
            json_decref(extra);
            return EXIT_USAGE;
        }
    json_t *spec = finish_spec(doc);
    if (!spec) {
        json_decref(extra);
        return EXIT_USAGE;
    }
    char output_here[PATH_MAX] = "";
    if (push && (push_paths(spec, broker, "mlq submit") != 0 || push_output(spec, output_here))) {
        json_decref(spec);
        json_decref(extra);
        return EXIT_FAILURE_GENERIC;
    }
    int rc = submit_spec(cli_broker_endpoint(broker), spec, request_id, wait, json, extra,
                         output_here[0] ? output_here : NULL);
    json_decref(extra);
    return rc;
}

/* ---- shared with cmd_sweep.c (cli.h) ---------------------------------------------------- */

int cli_meta_option(json_t *extra, const char *cmd, char which, const char *arg)
{
    if (which == 'e') {
        if (!arg[0] || strlen(arg) >= STORE_NAME_MAX) {
            fprintf(stderr, "%s: --experiment takes a name of 1 to %d bytes\n", cmd,
                    STORE_NAME_MAX - 1);
            return -EINVAL;
        }
        json_object_set_new(extra, "experiment", json_string(arg));
        return 0;
    }
    if (which == 't') {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg || (size_t)(eq - arg) > STORE_TAG_MAX ||
            strlen(eq + 1) > STORE_TAG_MAX) {
            fprintf(stderr, "%s: --tag takes KEY=VALUE, got '%s'\n", cmd, arg);
            return -EINVAL;
        }
        json_t *tags = json_object_get(extra, "tags");
        if (!tags) {
            tags = json_object();
            json_object_set_new(extra, "tags", tags);
        }
        char key[STORE_TAG_MAX + 1];
        snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
        json_object_set_new(tags, key, json_string(eq + 1));
        return 0;
    }
    json_t *after = json_object_get(extra, "after");
    if (!after) {
        after = json_array();
        json_object_set_new(extra, "after", after);
    }
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", arg) >= (int)sizeof buf) {
        fprintf(stderr, "%s: --after: too long\n", cmd);
        return -EINVAL;
    }
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int64_t id;
        if (parse_id(tok, &id) != 0) {
            fprintf(stderr, "%s: --after takes job ids (ID[,ID...]), got '%s'\n", cmd, tok);
            return -EINVAL;
        }
        json_array_append_new(after, json_integer(id));
    }
    if (json_array_size(after) == 0) {
        fprintf(stderr, "%s: --after takes job ids (ID[,ID...])\n", cmd);
        return -EINVAL;
    }
    return 0;
}

void cli_new_request_id(char *out, size_t len)
{
    new_request_id(out, len);
}

json_t *cli_finish_spec(json_t *doc)
{
    return finish_spec(doc);
}

/* ---- wait, cancel ---------------------------------------------------------------------- */

/* Parses [--broker E] [--json] [--quiet] ID for wait. */
static int id_command(int argc, char **argv, const char *usage, int64_t *id, const char **broker,
                      bool *json, bool *quiet)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            *broker = optarg;
            break;
        case 'j':
            *json = true;
            break;
        case 'q':
            *quiet = true;
            break;
        case 'h':
            printf("usage: %s\n", usage);
            return -1;
        default:
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    return parse_id(argv[optind], id) ? EXIT_USAGE : EXIT_OK;
}

int cmd_wait(int argc, char **argv)
{
    int64_t id;
    const char *broker = NULL;
    bool json = false, quiet = false;
    int code = id_command(argc, argv, "mlq wait [--broker E] [--json] [--quiet] ID", &id, &broker,
                          &json, &quiet);
    if (code) return code < 0 ? EXIT_OK : code;
    return wait_job(cli_broker_endpoint(broker), id, json, quiet);
}

/* One CANCEL of job (or sweep) id, said on its own line; a refusal's text
 * on stderr. json: the reply, or {"id"|"sweep", "error", "code"}, appended
 * to arr (or printed, arr NULL). Returns the exit code of the request. */
static int cancel_one(const char *endpoint, int64_t id, bool sweep, bool json, json_t *arr)
{
    const char *key = sweep ? "sweep" : "id";
    json_t *reply, *error;
    int code = cli_broker_call_error(endpoint, PROTO_CANCEL,
                                     json_pack("{s:I}", key, (json_int_t)id), &reply, &error);
    if (error) {
        const char *text = json_string_value(json_object_get(error, "error"));
        fprintf(stderr, "mlq: %s\n", text ? text : "the broker refused the request");
        if (arr)
            json_array_append_new(arr, json_pack("{s:I, s:s, s:O?}", key, (json_int_t)id, "error",
                                                 text ? text : "refused", "code",
                                                 json_object_get(error, "code")));
        json_decref(error);
        return code;
    }
    if (code) return code; /* said by the call */
    if (arr)
        json_array_append(arr, reply);
    else if (json)
        cli_print_json(reply);
    else if (sweep)
        printf("sweep %lld cancelled: %lld trials cancelled, %lld cancelling\n", (long long)id,
               (long long)json_integer_value(json_object_get(reply, "cancelled")),
               (long long)json_integer_value(json_object_get(reply, "cancelling")));
    else
        printf("job %lld %s\n", (long long)id, json_string_value(json_object_get(reply, "state")));
    fflush(stdout);
    json_decref(reply);
    return EXIT_OK;
}

/* mlq cancel ID... | --sweep ID...: each id answered on its own line, in
 * order; with several, --json is an array of the replies. */
int cmd_cancel(int argc, char **argv)
{
    static const char usage[] = "mlq cancel [--broker E] [--json] ID... | --sweep ID...";
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'}, {"json", no_argument, NULL, 'j'},
        {"sweep", no_argument, NULL, 's'},        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *broker = NULL;
    bool json = false, sweep = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            broker = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 's':
            sweep = true;
            break;
        case 'q': /* accepted, as it always was; cancel prints little anyway */
            break;
        case 'h':
            printf("usage: %s\n", usage);
            return EXIT_OK;
        default:
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    int n = argc - optind;
    if (n < 1) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    if (!ids) {
        fprintf(stderr, "mlq cancel: out of memory\n");
        return EXIT_FAILURE_GENERIC;
    }
    /* Every id checked before any is cancelled. */
    for (int i = 0; i < n; i++)
        if (parse_id(argv[optind + i], &ids[i])) {
            free(ids);
            return EXIT_USAGE;
        }
    const char *endpoint = cli_broker_endpoint(broker);
    json_t *arr = json && n > 1 ? json_array() : NULL;
    int rc = EXIT_OK, failed = 0;
    char which[512] = "";
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        int code = cancel_one(endpoint, ids[i], sweep, json, arr);
        if (code == EXIT_OK) continue;
        /* Exit with the failures' code when they share one, else 1. */
        rc = failed == 0 || rc == code ? code : EXIT_FAILURE_GENERIC;
        failed++;
        if (used < sizeof which)
            used += (size_t)snprintf(which + used, sizeof which - used, "%s%lld", used ? ", " : "",
                                     (long long)ids[i]);
        if (code == EXIT_UNAVAILABLE) { /* no broker: the rest would not be answered either */
            for (int k = i + 1; k < n; k++) {
                if (arr)
                    json_array_append_new(arr, json_pack("{s:I, s:s, s:s}", sweep ? "sweep" : "id",
                                                         (json_int_t)ids[k], "error",
                                                         "not sent: the broker did not answer",
                                                         "code", "unavailable"));
                if (used < sizeof which)
                    used += (size_t)snprintf(which + used, sizeof which - used, ", %lld",
                                             (long long)ids[k]);
                failed++;
            }
            break;
        }
    }
    if (arr) cli_print_json(arr);
    json_decref(arr);
    if (failed && n > 1)
        fprintf(stderr, "mlq cancel: %d of %d not cancelled: %s%s %s%s\n", failed, n,
                sweep ? "sweep" : "job", failed > 1 ? "s" : "", which,
                used >= sizeof which ? "..." : "");
    free(ids);
    return rc;
}

/* ---- queue, workers ------------------------------------------------------------------- */

int cmd_queue(int argc, char **argv)
{
    const char *broker = NULL;
    bool json = false;
    int code = cli_list_args(argc, argv, "mlq queue [--broker E] [--json]", CLI_NO_NAME, NULL,
                             &broker, &json);
    if (code) return code < 0 ? EXIT_OK : code;
    json_t *reply;
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_QUEUE, json_object(), &reply)))
        return code;
    if (json) {
        cli_print_json(reply);
    } else {
        printf("%-8s %-8s %-10s %8s %8s  %-20s %s\n", "ID", "KIND", "STATE", "PRIORITY", "ATTEMPTS",
               "TRAINER", "NAME");
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(reply, "jobs"), i, j)
        {
            printf("%-8lld %-8s %-10s %8lld %4lld/%-3lld  %-20s %s\n",
                   (long long)json_integer_value(json_object_get(j, "id")),
                   json_string_value(json_object_get(j, "kind")),
                   json_string_value(json_object_get(j, "state")),
                   (long long)json_integer_value(json_object_get(j, "priority")),
                   (long long)json_integer_value(json_object_get(j, "attempts")),
                   (long long)json_integer_value(json_object_get(j, "max_attempts")),
                   json_string_value(json_object_get(j, "trainer")),
                   json_string_value(json_object_get(j, "name")));
        }
    }
    json_decref(reply);
    return EXIT_OK;
}

int cmd_workers(int argc, char **argv)
{
    const char *broker = NULL;
    bool json = false;
    int code = cli_list_args(argc, argv, "mlq workers [--broker E] [--json]", CLI_NO_NAME, NULL,
                             &broker, &json);
    if (code) return code < 0 ? EXIT_OK : code;
    json_t *reply;
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_WORKERS, json_object(), &reply)))
        return code;
    if (json) {
        cli_print_json(reply);
    } else {
        printf("%-24s %-20s %-6s %8s %-16s %s\n", "NAME", "HOST", "STATE", "JOB", "SERVING",
               "LAST HEARTBEAT");
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(reply, "trainers"), i, t)
        {
            json_t *job = json_object_get(t, "job");
            char jobtext[32] = "-";
            if (json_is_integer(job))
                snprintf(jobtext, sizeof jobtext, "%lld", (long long)json_integer_value(job));
            /* The deployment it is a replica of (docs/serving.md), or "-". */
            const char *serving = json_string_value(json_object_get(t, "serving"));
            printf("%-24s %-20s %-6s %8s %-16s %.1fs ago\n",
                   json_string_value(json_object_get(t, "name")),
                   json_string_value(json_object_get(t, "host")),
                   json_string_value(json_object_get(t, "state")), jobtext, serving ? serving : "-",
                   json_number_value(json_object_get(t, "last_heartbeat_age")));
        }
    }
    json_decref(reply);
    return EXIT_OK;
}

int cmd_whoami(int argc, char **argv)
{
    const char *broker = NULL;
    bool json = false;
    int code = cli_list_args(argc, argv, "mlq whoami [--broker E] [--json]", CLI_NO_NAME, NULL,
                             &broker, &json);
    if (code) return code < 0 ? EXIT_OK : code;
    json_t *reply;
    if ((code = cli_broker_call(cli_broker_endpoint(broker), PROTO_WHOAMI, json_object(), &reply)))
        return code;
    if (json) {
        cli_print_json(reply);
    } else if (json_is_string(json_object_get(reply, "name"))) {
        printf("%s (%s), key %s\n", json_string_value(json_object_get(reply, "name")),
               json_string_value(json_object_get(reply, "role")),
               json_string_value(json_object_get(reply, "key")));
    } else {
        printf("anonymous: the broker uses no keys, so every client may do everything "
               "(plaintext, local endpoint)\n");
    }
    json_decref(reply);
    return EXIT_OK;
}

/* ---- eval, predict ---------------------------------------------------------------------- */

static int run_on_checkpoint(int argc, char **argv, bool predict)
{
    const char *usage = predict ? "mlq predict RUN --input F --output F [--checkpoint last|best|N] "
                                  "[--priority N] [--wait] [--push] [--json] [--broker E]"
                                : "mlq eval RUN --dataset F [--checkpoint last|best|N] "
                                  "[--priority N] [--wait] [--push] [--json] [--broker E]";
    static const struct option longopts[] = {
        {"dataset", required_argument, NULL, 'd'},
        {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"checkpoint", required_argument, NULL, 'c'},
        {"priority", required_argument, NULL, 'p'},
        {"wait", no_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},
        {"broker", required_argument, NULL, 'b'},
        {"push", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *output = NULL, *ckpt = NULL, *prio = NULL, *broker = NULL;
    bool wait = false, json = false, push = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
        case 'i':
            data = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'c':
            ckpt = optarg;
            break;
        case 'p':
            prio = optarg;
            break;
        case 'w':
            wait = true;
            break;
        case 'j':
            json = true;
            break;
        case 'b':
            broker = optarg;
            break;
        case 'P':
            push = true;
            break;
        case 'h':
            printf("usage: %s\n", usage);
            if (predict)
                printf("--push: the input is pushed to the broker and the output comes back to "
                       "this host\n(trainers on any host, no shared directory); implies --wait. "
                       "The output also\nstays at the broker as the dataset predict-ID.\n");
            else
                printf("--push: the dataset is pushed to the broker first, so that trainers on "
                       "any host fetch it\n");
            return EXIT_OK;
        default:
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    int64_t run;
    if (optind != argc - 1 || !data || (predict && !output)) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    if (parse_id(argv[optind], &run)) return EXIT_USAGE;
    json_t *doc = json_pack("{s:s, s:I, s:{s:s}}", "kind", predict ? "predict" : "eval", "run",
                            (json_int_t)run, predict ? "input" : "dataset", "path", data);
    char output_here[PATH_MAX];
    if (predict && push) {
        /* The output is fetched here at the end: its directory must take it. */
        snprintf(output_here, sizeof output_here, "%s", output);
        if (make_absolute(output_here, sizeof output_here, false) != 0) {
            fprintf(stderr, "mlq predict: --output %s: cannot make the path absolute\n", output);
            json_decref(doc);
            return EXIT_USAGE;
        }
        if (output_dir_writable(output_here) != 0) {
            json_decref(doc);
            return EXIT_USAGE;
        }
        json_object_set_new(doc, "output", json_pack("{s:b}", "push", 1));
        wait = true;
    } else if (predict) {
        json_object_set_new(doc, "output", json_string(output));
    }
    if (ckpt) json_object_set_new(doc, "checkpoint", json_string(ckpt));
    if (prio) {
        json_t *p = number_arg("priority", prio, true);
        if (!p) {
            json_decref(doc);
            return EXIT_USAGE;
        }
        json_object_set_new(doc, "priority", p);
    }
    json_t *spec = finish_spec(doc);
    if (!spec) return EXIT_USAGE;
    if (push && push_paths(spec, broker, predict ? "mlq predict" : "mlq eval") != 0) {
        json_decref(spec);
        return EXIT_FAILURE_GENERIC;
    }
    const char *endpoint = cli_broker_endpoint(broker);
    json_t *reply;
    int code = submit_call(endpoint, spec, NULL, NULL, &reply);
    if (code) return code;
    int64_t id = json_integer_value(json_object_get(reply, "id"));
    json_decref(reply);
    if (!wait) {
        if (json)
            printf("{\"id\":%lld}\n", (long long)id);
        else
            printf("%lld\n", (long long)id);
        return EXIT_OK;
    }
    if (!json) printf("%lld\n", (long long)id);
    fflush(stdout);
    code = wait_job(endpoint, id, json, !json);
    if (predict && push && code == EXIT_INTERRUPTED)
        fprintf(stderr,
                "mlq: its output will be the broker's dataset predict-%lld: mlq dataset get "
                "predict-%lld --output %s\n",
                (long long)id, (long long)id, output);
    if (predict && push && code == EXIT_OK) code = fetch_output(endpoint, id, output_here, json);
    if (code == EXIT_OK && !json) {
        /* The result, for a person: eval's loss and accuracy, predict's output. */
        if (cli_broker_call(endpoint, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id),
                            &reply) == EXIT_OK) {
            json_t *result = json_object_get(json_object_get(reply, "job"), "result");
            if (result) render_result(result);
            json_decref(reply);
        }
    }
    return code;
}

/* mlq generate RUN --prompt TEXT: a predict job with a prompt, waited for;
 * prints the prompt and the text that follows it. */
int cmd_generate(int argc, char **argv)
{
    const char *usage = "mlq generate RUN --prompt TEXT [--tokens N] [--temperature T] "
                        "[--top-k K] [--seed S] [--checkpoint last|best|N] [--priority N] "
                        "[--json] [--broker E]\n"
                        "       mlq generate --deployment NAME --prompt TEXT [--tokens N] "
                        "[--temperature T] [--top-k K] [--seed S] [--json] [--timeout-ms MS] "
                        "[--broker E]";
    static const struct option longopts[] = {
        {"prompt", required_argument, NULL, 'p'},
        {"tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"top-k", required_argument, NULL, 'k'},
        {"seed", required_argument, NULL, 's'},
        {"checkpoint", required_argument, NULL, 'c'},
        {"priority", required_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'j'},
        {"broker", required_argument, NULL, 'b'},
        {"deployment", required_argument, NULL, 'd'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prompt = NULL, *ckpt = NULL, *broker = NULL, *deployment = NULL, *timeout = NULL;
    const char *nums[4] = {NULL}; /* tokens, temperature, top_k, seed */
    static const char *const num_keys[4] = {"tokens", "temperature", "top_k", "seed"};
    static const bool num_int[4] = {true, false, true, true};
    const char *prio = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            prompt = optarg;
            break;
        case 'n':
            nums[0] = optarg;
            break;
        case 't':
            nums[1] = optarg;
            break;
        case 'k':
            nums[2] = optarg;
            break;
        case 's':
            nums[3] = optarg;
            break;
        case 'c':
            ckpt = optarg;
            break;
        case 'P':
            prio = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'b':
            broker = optarg;
            break;
        case 'd':
            deployment = optarg;
            break;
        case 'T':
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
    int64_t run = 1; /* with --deployment, a stand-in that validates the rest as the job's */
    if (optind != argc - (deployment ? 0 : 1) || !prompt) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    if (deployment && (ckpt || prio)) {
        fprintf(stderr, "mlq generate: --%s is a job's: a deployment serves its own checkpoint\n",
                ckpt ? "checkpoint" : "priority");
        return EXIT_USAGE;
    }
    if (!deployment && timeout) {
        fprintf(stderr, "mlq generate: --timeout-ms goes with --deployment\n");
        return EXIT_USAGE;
    }
    if (timeout) {
        char *end;
        errno = 0;
        long ms = strtol(timeout, &end, 10);
        if (errno || end == timeout || *end || ms < 1 || ms > 600000) {
            fprintf(stderr, "mlq generate: --timeout-ms takes 1 to 600000, got '%s'\n", timeout);
            return EXIT_USAGE;
        }
    }
    if (!deployment && parse_id(argv[optind], &run)) return EXIT_USAGE;
    json_t *doc =
        json_pack("{s:s, s:I, s:s}", "kind", "predict", "run", (json_int_t)run, "prompt", prompt);
    if (!doc) {
        fprintf(stderr, "mlq generate: --prompt must be UTF-8 text\n");
        return EXIT_USAGE;
    }
    for (int i = 0; i < 4; i++) {
        if (!nums[i]) continue;
        char flag[16];
        snprintf(flag, sizeof flag, "%s", i == 2 ? "top-k" : num_keys[i]);
        json_t *v = number_arg(flag, nums[i], num_int[i]);
        if (!v) {
            json_decref(doc);
            return EXIT_USAGE;
        }
        json_object_set_new(doc, num_keys[i], v);
    }
    if (ckpt) json_object_set_new(doc, "checkpoint", json_string(ckpt));
    if (prio) {
        json_t *p = number_arg("priority", prio, true);
        if (!p) {
            json_decref(doc);
            return EXIT_USAGE;
        }
        json_object_set_new(doc, "priority", p);
    }
    if (deployment) {
        /* The job's validation and defaults (tokens, temperature, seed), so
         * that both ways mean the same by the same flags. */
        struct mlq_spec gen;
        char err[1024];
        int rc = spec_from_json(doc, &gen, err, sizeof err);
        json_decref(doc);
        if (rc) {
            fprintf(stderr, "mlq: bad spec: %s\n", err);
            return EXIT_USAGE;
        }
        return cli_generate_deployed(deployment, &gen, broker, timeout, json);
    }
    json_t *spec = finish_spec(doc);
    if (!spec) return EXIT_USAGE;
    const char *endpoint = cli_broker_endpoint(broker);
    json_t *reply;
    int code = submit_call(endpoint, spec, NULL, NULL, &reply);
    if (code) return code;
    int64_t id = json_integer_value(json_object_get(reply, "id"));
    json_decref(reply);
    code = wait_job(endpoint, id, json, !json);
    if (code != EXIT_OK || json) return code; /* a failure's reason is said by wait_job */
    code =
        cli_broker_call(endpoint, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), &reply);
    if (code) return code;
    json_t *result = json_object_get(json_object_get(reply, "job"), "result");
    const char *text = json_string_value(json_object_get(result, "text"));
    printf("%s%s\n", prompt, text ? text : "");
    json_decref(reply);
    return EXIT_OK;
}

int cmd_eval(int argc, char **argv)
{
    return run_on_checkpoint(argc, argv, false);
}

int cmd_predict(int argc, char **argv)
{
    return run_on_checkpoint(argc, argv, true);
}
