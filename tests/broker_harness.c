#include "broker_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zmq.h>

#include "checkpoint.h"
#include "proto.h"
#include "store.h"

double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct harness *h_new(void)
{
    struct harness *h = calloc(1, sizeof *h);
    assert_non_null(h);
    snprintf(h->dir, sizeof h->dir, "/tmp/mlq-broker-test-XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    snprintf(h->db, sizeof h->db, "%s/mlq.db", h->dir);
    snprintf(h->endpoint, sizeof h->endpoint, "ipc://%s/broker.sock", h->dir);
    snprintf(h->config, sizeof h->config, "%s/mlq.conf", h->dir);
    FILE *f = fopen(h->config, "w");
    assert_non_null(f);
    fclose(f);
    setenv("MLQ_CONFIG", h->config, 1);
    /* mlq looks for its keys in ~/.config/mlq: not the tester's. */
    setenv("XDG_CONFIG_HOME", h->dir, 1);
    unsetenv("MLQ_BROKER");
    unsetenv("MLQ_DB");
    h->zctx = zmq_ctx_new();
    assert_non_null(h->zctx);
    return h;
}

static void reap(pid_t pid, int sig)
{
    if (pid <= 0) return;
    kill(pid, sig);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return;
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

struct term {
    void *ctx;
    _Atomic int done;
};

static void *term_context(void *p)
{
    struct term *t = p;
    zmq_ctx_term(t->ctx);
    t->done = 1;
    return NULL;
}

/* zmq_ctx_term waits for every socket to be closed: a test that failed an
 * assertion between a zmq_socket and its zmq_close would hang there until
 * ctest's timeout, its failure unseen. Ten seconds, then the context is
 * left to the process's exit. */
static void term_or_abandon(void *ctx)
{
    struct term *t = calloc(1, sizeof *t); /* an abandoned thread keeps it */
    pthread_t thread;
    if (t) t->ctx = ctx;
    if (!t || pthread_create(&thread, NULL, term_context, t) != 0) {
        free(t);
        zmq_ctx_term(ctx);
        return;
    }
    for (int i = 0; i < 200 && !t->done; i++)
        sleep_ms(50);
    if (t->done) {
        pthread_join(thread, NULL);
        free(t);
        return;
    }
    fprintf(stderr, "harness: a socket was left open (after a failed assertion?): the ZeroMQ "
                    "context is abandoned\n");
    pthread_detach(thread);
}

void h_free(struct harness **ph)
{
    struct harness *h = *ph;
    if (!h) return;
    for (int i = 0; i < h->n_procs; i++)
        reap(h->procs[i].pid, SIGTERM);
    reap(h->broker, SIGTERM);
    term_or_abandon(h->zctx);
    /* The children's sanitizer reports land in their logs: they fail the test. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "grep -l -e 'Sanitizer' -e 'runtime error:' '%s'/*.log >&2", h->dir);
    bool sanitizer_report = system(cmd) == 0;
    if (!getenv("MLQ_TEST_KEEP") && !sanitizer_report) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", h->dir);
    } else {
        fprintf(stderr, "kept %s\n", h->dir);
    }
    free(h);
    *ph = NULL;
    if (sanitizer_report) fail_msg("a child process reported a sanitizer error (log kept)");
}

void h_dataset(struct harness *h, const char *name, int n, int d, int classes, uint64_t seed,
               char *path, size_t len)
{
    snprintf(path, len, "%s/%s", h->dir, name);
    float *x = malloc((size_t)n * (size_t)d * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (int i = 0; i < n; i++) {
        float acc = 0;
        for (int j = 0; j < d; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            float v = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
            x[(size_t)i * (size_t)d + j] = v;
            acc += v * (float)((j % 3) - 1);
        }
        int c = (int)((acc + 2.0f) * (float)classes / 4.0f);
        y[i] = c < 0 ? 0 : c >= classes ? classes - 1 : c;
    }
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    hsize_t xd[2] = {(hsize_t)n, (hsize_t)d}, yd[1] = {(hsize_t)n};
    hid_t xs = H5Screate_simple(2, xd, NULL), ys = H5Screate_simple(1, yd, NULL);
    hid_t xds = H5Dcreate2(file, "X", H5T_IEEE_F32LE, xs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t yds = H5Dcreate2(file, "y", H5T_STD_I32LE, ys, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(xds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    assert_true(H5Dwrite(yds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(xds);
    H5Dclose(yds);
    H5Sclose(xs);
    H5Sclose(ys);
    H5Fclose(file);
    free(x);
    free(y);
}

static pid_t spawn(struct harness *h, const char *log_name, const char *const *argv)
{
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/%s.log", h->dir, log_name);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

json_t *h_call(struct harness *h, const char *cmd, json_t *body, bool *is_error)
{
    return h_call_as(h, h->has_key ? &h->key : NULL, h->broker_z85, cmd, body, 5000, is_error);
}

json_t *h_call_as(struct harness *h, const struct keys_cert *own, const char *server_z85,
                  const char *cmd, json_t *body, int timeout_ms, bool *is_error)
{
    void *sock = zmq_socket(h->zctx, ZMQ_DEALER);
    assert_non_null(sock);
    assert_int_equal(proto_socket_setup(sock, 0), 0);
    char err[256];
    if (own) assert_int_equal(keys_client_setup(sock, own, server_z85, err, sizeof err), 0);
    assert_int_equal(zmq_connect(sock, h->endpoint), 0);
    assert_int_equal(proto_send(sock, NULL, 0, cmd, body, NULL, 0, 0), 0);
    json_decref(body);
    json_t *out = NULL;
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) == 1) {
        struct proto_msg m;
        if (proto_recv(sock, false, &m, 0, err, sizeof err) == 0) {
            if (is_error) *is_error = strcmp(m.cmd, PROTO_ERROR) == 0;
            out = json_incref(m.body);
            proto_msg_clear(&m);
        }
    }
    zmq_close(sock);
    return out;
}

void h_broker_start(struct harness *h, const char *const *extra)
{
    const char *argv[32] = {MLQ_BINARY_DIR "/broker/mlq-broker",
                            "--db",
                            h->db,
                            "--bind",
                            h->endpoint,
                            "--heartbeat-ms",
                            "100",
                            "--liveness",
                            H_LIVENESS};
    int n = 9;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    h->broker = spawn(h, "broker", argv);
    double until = h_now() + 10;
    while (h_now() < until) {
        json_t *r = h_call(h, PROTO_QUEUE, json_object(), NULL);
        if (r) {
            json_decref(r);
            return;
        }
    }
    fail_msg("mlq-broker did not answer; see %s/broker.log", h->dir);
}

void h_broker_kill(struct harness *h, int sig)
{
    reap(h->broker, sig);
    h->broker = 0;
}

void h_use_key(struct harness *h, const struct keys_cert *own, const char *broker_z85)
{
    h->has_key = own != NULL;
    if (own) {
        h->key = *own;
        snprintf(h->broker_z85, sizeof h->broker_z85, "%s", broker_z85);
    }
}

void h_keys_init(struct harness *h)
{
    if (h->keys_made) return;
    struct h_keys *k = &h->keys;
    char etc[400], prefix[500], err[512];
    snprintf(etc, sizeof etc, "%s/etc", h->dir);
    snprintf(k->users, sizeof k->users, "%s/users", etc);
    snprintf(k->trainers, sizeof k->trainers, "%s/trainers", etc);
    snprintf(prefix, sizeof prefix, "%s/broker", etc);
    snprintf(k->secret, sizeof k->secret, "%s%s", prefix, KEYS_SECRET_EXT);
    assert_int_equal(mkdir(etc, 0755), 0);
    assert_int_equal(mkdir(k->users, 0755), 0);
    assert_int_equal(mkdir(k->trainers, 0755), 0);
    assert_int_equal(keys_generate(&k->broker, "broker", KEYS_ROLE_BROKER, err, sizeof err), 0);
    if (keys_save(&k->broker, prefix, false, err, sizeof err) != 0) fail_msg("%s", err);
    h->keys_made = true;
}

void h_key_accept(struct harness *h, const struct keys_cert *c)
{
    char path[800], err[512];
    snprintf(path, sizeof path, "%s/%s%s",
             c->role == KEYS_ROLE_TRAINER ? h->keys.trainers : h->keys.users, c->name,
             KEYS_PUBLIC_EXT);
    if (keys_save_public(c, path, true, err, sizeof err) != 0) fail_msg("%s", err);
}

void h_key_make(struct harness *h, struct keys_cert *out, const char *name, enum keys_role role,
                bool accept)
{
    char prefix[600], err[512];
    snprintf(prefix, sizeof prefix, "%s/%s", h->dir, name);
    assert_int_equal(keys_generate(out, name, role, err, sizeof err), 0);
    if (keys_save(out, prefix, false, err, sizeof err) != 0) fail_msg("%s", err);
    if (accept) h_key_accept(h, out);
}

void h_broker_start_keys(struct harness *h, const struct keys_cert *as, const char *const *extra)
{
    assert_true(h->keys_made);
    const char *argv[32] = {"--secret-key", h->keys.secret};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    h_use_key(h, as, h->keys.broker.public_z85);
    h_broker_start(h, argv);
}

pid_t h_trainer_start_keys(struct harness *h, const char *name, const char *key_name)
{
    char secret[600];
    snprintf(secret, sizeof secret, "%s/%s%s", h->dir, key_name, KEYS_SECRET_EXT);
    const char *extra[] = {"--secret-key", secret, "--broker-key", h->keys.broker.public_z85, NULL};
    return h_trainer_start_extra(h, name, extra);
}

pid_t h_trainer_start(struct harness *h, const char *name)
{
    return h_trainer_start_extra(h, name, NULL);
}

pid_t h_trainer_start_extra(struct harness *h, const char *name, const char *const *extra)
{
    assert_true(h->n_procs < H_MAX_PROCS);
    const char *argv[32] = {MLQ_BINARY_DIR "/trainer/mlq-trainer",
                            "--broker",
                            h->endpoint,
                            "--name",
                            name,
                            "--heartbeat-ms",
                            "100",
                            "--liveness",
                            H_LIVENESS,
                            "--threads",
                            "1",
                            NULL};
    int n = 11;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = spawn(h, name, argv);
    h->procs[h->n_procs].pid = pid;
    snprintf(h->procs[h->n_procs].name, sizeof h->procs[0].name, "%s", name);
    h->n_procs++;
    return pid;
}

void h_proc_kill(struct harness *h, pid_t pid, int sig)
{
    reap(pid, sig);
    for (int i = 0; i < h->n_procs; i++)
        if (h->procs[i].pid == pid) h->procs[i].pid = 0;
}

int64_t h_submit(struct harness *h, json_t *spec)
{
    bool is_error = false;
    json_t *r = h_call(h, PROTO_SUBMIT, json_pack("{s:o}", "spec", spec), &is_error);
    assert_non_null(r);
    if (is_error) fail_msg("SUBMIT refused: %s", json_string_value(json_object_get(r, "error")));
    int64_t id = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    assert_true(id > 0);
    return id;
}

void h_status(struct harness *h, int64_t id, char *state, size_t len, int64_t *epoch)
{
    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    state[0] = '\0';
    if (epoch) *epoch = 0;
    if (!r) return;
    const char *s = json_string_value(json_object_get(json_object_get(r, "job"), "state"));
    snprintf(state, len, "%s", s ? s : "");
    json_t *m = json_object_get(json_object_get(r, "metrics"), "train_loss");
    if (epoch && m) *epoch = json_integer_value(json_object_get(m, "epoch"));
    json_decref(r);
}

void h_wait_terminal(struct harness *h, int64_t id, double timeout_s, char *state, size_t len)
{
    double until = h_now() + timeout_s;
    while (h_now() < until) {
        h_status(h, id, state, len, NULL);
        if (!strcmp(state, "succeeded") || !strcmp(state, "failed") || !strcmp(state, "cancelled"))
            return;
        sleep_ms(50);
    }
    fail_msg("job %lld still %s after %.0f s (logs in %s)", (long long)id, state, timeout_s,
             h->dir);
}

void h_wait_epoch(struct harness *h, int64_t id, int64_t min_epoch, double timeout_s)
{
    double until = h_now() + timeout_s;
    char state[32];
    int64_t epoch = 0;
    while (h_now() < until) {
        h_status(h, id, state, sizeof state, &epoch);
        if (!strcmp(state, "running") && epoch >= min_epoch) return;
        sleep_ms(20);
    }
    fail_msg("job %lld: %s at epoch %lld, waited for epoch %lld", (long long)id, state,
             (long long)epoch, (long long)min_epoch);
}

void h_wait_trainers(struct harness *h, int n, double timeout_s)
{
    double until = h_now() + timeout_s;
    while (h_now() < until) {
        json_t *r = h_call(h, PROTO_WORKERS, json_object(), NULL);
        size_t have = r ? json_array_size(json_object_get(r, "trainers")) : 0;
        json_decref(r);
        if ((int)have >= n) return;
        sleep_ms(20);
    }
    fail_msg("fewer than %d trainers connected", n);
}

json_t *h_train_spec(const char *path, int d, int classes, int epochs, uint64_t seed)
{
    return json_pack("{s:s, s:{s:s}, s:{s:[i,i,i], s:s}, s:{s:s, s:f}, s:i, s:i, s:I, s:i, s:i}",
                     "kind", "train", "dataset", "path", path, "model", "layers", d, 32, classes,
                     "activation", "relu", "optimizer", "name", "adam", "lr", 0.01, "batch_size",
                     16, "epochs", epochs, "seed", (json_int_t)seed, "threads", 1,
                     "checkpoint_every", 1);
}

static int run_to(const char *const *argv, const char *out_file, bool with_stderr)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (out_file) {
            int fd = open(out_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                if (with_stderr) dup2(fd, 2);
                close(fd);
            }
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int h_run(struct harness *h, const char *const *argv, const char *out_file)
{
    (void)h;
    return run_to(argv, out_file, false);
}

int h_run_all(struct harness *h, const char *const *argv, const char *out_file)
{
    (void)h;
    return run_to(argv, out_file, true);
}

int h_setup(void **state)
{
    *state = h_new();
    return *state ? 0 : -1;
}

int h_teardown(void **state)
{
    struct harness *h = *state;
    h_free(&h);
    return 0;
}

json_t *h_job(struct harness *h, int64_t id)
{
    json_t *r = h_call(h, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)id), NULL);
    assert_non_null(r);
    json_t *job = json_incref(json_object_get(r, "job"));
    json_decref(r);
    return job;
}

float *h_final_params(struct harness *h, int64_t run, size_t *n, int64_t *epoch)
{
    struct store *s;
    char err[256];
    assert_int_equal(store_open(&s, h->db, STORE_READONLY, err, sizeof err), 0);
    struct store_checkpoint c;
    assert_int_equal(store_checkpoint_get(s, run, STORE_CKPT_LAST, 0, &c), 0);
    struct checkpoint ck;
    assert_int_equal(checkpoint_decode(c.blob, c.size, &ck, err, sizeof err), 0);
    store_checkpoint_free(&c);
    store_close(&s);
    float *p = ck.params;
    *n = ck.n_params;
    *epoch = ck.epoch;
    ck.params = NULL;
    checkpoint_free(&ck);
    return p;
}
