/* Broker throughput and dispatch latency (docs/benchmarks.md).
 *
 * A real broker (mlq_broker_lib in a child process, durable store in a temp
 * dir) and K simulated trainers speaking the real protocol that finish each
 * job at once; one producer submits M tiny jobs, each acknowledged only once
 * committed. Prints jobs/s end to end and submit-to-dispatch latency p50/p99;
 * then, when beanstalkd is installed, the same shape against beanstalkd with
 * its binlog synced on every write (-b DIR -f0), and the ratio. Each shape
 * runs in plaintext and with CurveZMQ keys (the broker's ZAP handler, a
 * user's key for the producer, a trainer's for the trainers), and the cost of
 * a CURVE handshake is measured against a plaintext connection's; then the
 * broker's CPU with 200 idle trainers and (--full) its RSS with 100,000
 * queued jobs. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "broker.h"
#include "keys.h"
#include "log.h"
#include "proto.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "broker_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- the broker in a child process --------------------------------------------------- */

static volatile sig_atomic_t child_stop;
static int sync_normal; /* --sync-normal: db.sync = normal, not durable on power loss */

/* CurveZMQ (--curve): the broker's key and directories, one user key for the
 * producer and one trainer key shared by the simulated trainers. */
static struct {
    bool on; /* the runs being made now speak CURVE */
    struct keys_cert broker, user, trainer;
    char secret[700], users[600], trainers[600];
} bk;

static void keys_make(const char *dir)
{
    char err[512], prefix[600], path[700];
    snprintf(bk.users, sizeof bk.users, "%s/users", dir);
    snprintf(bk.trainers, sizeof bk.trainers, "%s/trainers", dir);
    snprintf(prefix, sizeof prefix, "%s/broker", dir);
    snprintf(bk.secret, sizeof bk.secret, "%s%s", prefix, KEYS_SECRET_EXT);
    if (mkdir(bk.users, 0755) || mkdir(bk.trainers, 0755)) die("mkdir");
    if (keys_generate(&bk.broker, "broker", KEYS_ROLE_BROKER, err, sizeof err) ||
        keys_save(&bk.broker, prefix, false, err, sizeof err) ||
        keys_generate(&bk.user, "bench", KEYS_ROLE_USER, err, sizeof err) ||
        keys_generate(&bk.trainer, "bench-trainers", KEYS_ROLE_TRAINER, err, sizeof err)) {
        fprintf(stderr, "broker_bench: %s\n", err);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/bench.key", bk.users);
    if (keys_save_public(&bk.user, path, false, err, sizeof err)) goto fail;
    snprintf(path, sizeof path, "%s/bench-trainers.key", bk.trainers);
    if (keys_save_public(&bk.trainer, path, false, err, sizeof err)) goto fail;
    return;
fail:
    fprintf(stderr, "broker_bench: %s\n", err);
    exit(1);
}

/* A DEALER to the broker, with the user's or the trainers' key when bk.on. */
static void *bench_socket(void *zctx, const char *endpoint, bool trainer)
{
    void *d = zmq_socket(zctx, ZMQ_DEALER);
    char err[256];
    if (!d) die("zmq_socket");
    proto_socket_setup(d, 0);
    if (bk.on && keys_client_setup(d, trainer ? &bk.trainer : &bk.user, bk.broker.public_z85, err,
                                   sizeof err) != 0) {
        fprintf(stderr, "broker_bench: %s\n", err);
        exit(1);
    }
    if (zmq_connect(d, endpoint) != 0) die("connect");
    return d;
}
static void on_term(int sig)
{
    (void)sig;
    child_stop = 1;
}

static pid_t start_broker(const char *dir, const char *endpoint, int heartbeat_ms)
{
    /* A fresh database each time: job ids from 1 (the latency run relies
       on them) and no WAL left over from the run before. */
    char db[600], side[620];
    snprintf(db, sizeof db, "%s/mlq.db", dir);
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) return pid;
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    log_set_level(LOG_LVL_WARN); /* a line per job would be what we measure */
    struct broker_opts o = {.db_path = db,
                            .bind = endpoint,
                            .heartbeat_ms = heartbeat_ms,
                            .liveness = 3,
                            .checkpoint_keep = -1,
                            .sync_normal = sync_normal,
                            .secret_key = bk.on ? bk.secret : NULL,
                            .users_dir = bk.users,
                            .trainers_dir = bk.trainers};
    struct broker *b;
    char err[512];
    if (broker_open(&b, &o, err, sizeof err) != 0) {
        fprintf(stderr, "broker_bench: %s\n", err);
        _exit(1);
    }
    int rc = broker_run(b, &child_stop);
    broker_close(&b);
    _exit(rc ? 1 : 0);
}

static void stop_broker(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* ---- simulated trainers --------------------------------------------------------------------- */

struct sim {
    void *zctx;
    const char *endpoint;
    int k;
    int64_t m;          /* jobs expected */
    int64_t base;       /* first job id of the phase */
    double *t_dispatch; /* (m) JOB arrival */
    atomic_llong done;  /* ACKs received */
    atomic_int ready;   /* trainers welcomed */
    atomic_int stop;
    int heartbeat_ms;
};

static void *sim_thread(void *arg)
{
    struct sim *s = arg;
    void **socks = calloc((size_t)s->k, sizeof *socks);
    zmq_pollitem_t *items = calloc((size_t)s->k, sizeof *items);
    double *last_sent = calloc((size_t)s->k, sizeof *last_sent);
    if (!socks || !items || !last_sent) die("calloc");
    for (int i = 0; i < s->k; i++) {
        socks[i] = bench_socket(s->zctx, s->endpoint, true);
        char name[32];
        snprintf(name, sizeof name, "sim-%d", i);
        json_t *hello =
            json_pack("{s:s, s:s, s:s}", "name", name, "host", "bench", "version", "bench");
        proto_send(socks[i], NULL, 0, PROTO_HELLO, hello, NULL, 0, 0);
        json_decref(hello);
        last_sent[i] = now_s();
        items[i] = (zmq_pollitem_t){.socket = socks[i], .events = ZMQ_POLLIN};
    }
    double hb = s->heartbeat_ms / 1000.0;
    while (!atomic_load(&s->stop)) {
        int n = zmq_poll(items, s->k, 50);
        double t = now_s();
        for (int i = 0; n > 0 && i < s->k; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            struct proto_msg m;
            char err[128];
            while (proto_recv(socks[i], false, &m, ZMQ_DONTWAIT, err, sizeof err) == 0) {
                if (!strcmp(m.cmd, PROTO_WELCOME)) {
                    atomic_fetch_add(&s->ready, 1);
                } else if (!strcmp(m.cmd, PROTO_JOB)) {
                    int64_t id = json_integer_value(json_object_get(m.body, "job"));
                    int64_t idx = id - s->base;
                    if (idx >= 0 && idx < s->m && s->t_dispatch) s->t_dispatch[idx] = now_s();
                    json_t *done =
                        json_pack("{s:I, s:s}", "job", (json_int_t)id, "state", "succeeded");
                    proto_send(socks[i], NULL, 0, PROTO_DONE, done, NULL, 0, 0);
                    json_decref(done);
                    last_sent[i] = t;
                } else if (!strcmp(m.cmd, PROTO_ACK)) {
                    atomic_fetch_add(&s->done, 1);
                }
                proto_msg_clear(&m);
            }
        }
        for (int i = 0; i < s->k; i++)
            if (t - last_sent[i] >= hb) {
                proto_send(socks[i], NULL, 0, PROTO_HEARTBEAT, NULL, NULL, 0, ZMQ_DONTWAIT);
                last_sent[i] = t;
            }
    }
    for (int i = 0; i < s->k; i++)
        zmq_close(socks[i]);
    free(socks);
    free(items);
    free(last_sent);
    return NULL;
}

/* ---- the producer -------------------------------------------------------------------------------
 */

static json_t *tiny_spec(void)
{
    return json_pack("{s:{s:s, s:{s:s}, s:{s:[i,i]}, s:i}}", "spec", "kind", "train", "dataset",
                     "path", "/nonexistent/bench.h5", "model", "layers", 2, 2, "epochs", 1);
}

/* Submits m jobs keeping up to window requests in flight; t_submit[i] is when
 * job base+i was sent (ids are assigned in order on a fresh queue). */
static int64_t produce(void *zctx, const char *endpoint, int64_t m, int window, double *t_submit)
{
    void *d = bench_socket(zctx, endpoint, false);
    json_t *spec = tiny_spec();
    int64_t sent = 0, acked = 0, first_id = 0;
    while (acked < m) {
        while (sent < m && sent - acked < window) {
            if (t_submit) t_submit[sent] = now_s();
            proto_send(d, NULL, 0, PROTO_SUBMIT, spec, NULL, 0, 0);
            sent++;
        }
        struct proto_msg r;
        char err[128];
        if (proto_recv(d, false, &r, 0, err, sizeof err) != 0) die("recv");
        if (strcmp(r.cmd, PROTO_OK) != 0) {
            fprintf(stderr, "broker_bench: submit refused: %s\n",
                    json_string_value(json_object_get(r.body, "error")));
            exit(1);
        }
        if (!first_id) first_id = json_integer_value(json_object_get(r.body, "id"));
        acked++;
        proto_msg_clear(&r);
    }
    json_decref(spec);
    zmq_close(d);
    return first_id;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --during CMD: a shell command run while latency is measured, with
 * MLQ_BROKER set to the broker's endpoint (a dataset transfer, say:
 * dispatch latency while the broker moves bytes for someone else). */
static const char *during_cmd;

static pid_t during_start(const char *endpoint)
{
    if (!during_cmd) return 0;
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) return pid;
    setpgid(0, 0); /* its own group: stopped with everything it started */
    setenv("MLQ_BROKER", endpoint, 1);
    execl("/bin/sh", "sh", "-c", during_cmd, (char *)NULL);
    _exit(127);
}

static void during_stop(pid_t pid)
{
    if (pid <= 0) return;
    kill(-pid, SIGTERM);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

struct mlq_result {
    double jobs_per_s;
    double cpu_share; /* the broker's CPU time over the throughput run's wall time */
    double p50_ms, p99_ms;
};

static void run_mlq(const char *dir, int k, int64_t m, int window, struct mlq_result *res)
{
    char endpoint[600];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/broker.sock", dir);
    pid_t broker = start_broker(dir, endpoint, 1000);
    void *zctx = zmq_ctx_new();
    double *t_submit = calloc((size_t)m, sizeof *t_submit);
    double *t_dispatch = calloc((size_t)m, sizeof *t_dispatch);
    struct sim s = {.zctx = zctx,
                    .endpoint = endpoint,
                    .k = k,
                    .m = m,
                    .base = 1,
                    .t_dispatch = t_dispatch,
                    .heartbeat_ms = 1000};
    pthread_t th;
    pthread_create(&th, NULL, sim_thread, &s);
    while (atomic_load(&s.ready) < k)
        usleep(1000);

    /* Throughput: a window of submissions in flight, end to end to the last ACK. */
    double t0 = now_s(), c0 = proc_cpu_s(broker);
    produce(zctx, endpoint, m, window, NULL);
    while (atomic_load(&s.done) < m)
        usleep(200);
    double wall = now_s() - t0;
    res->jobs_per_s = (double)m / wall;
    res->cpu_share = (proc_cpu_s(broker) - c0) / wall;

    /* Latency: one submission at a time, each once the one before is done
       (its DONE acknowledged): every trainer idle, waiting. */
    const int64_t ml = m < 2000 ? m : 2000; /* m >= 10 (main) */
    s.base = m + 1;
    memset(t_dispatch, 0, (size_t)m * sizeof *t_dispatch);
    void *d = bench_socket(zctx, endpoint, false);
    json_t *spec = tiny_spec();
    pid_t during = during_start(endpoint);
    if (during) sleep(1); /* its transfer under way */
    for (int64_t i = 0; i < ml; i++) {
        t_submit[i] = now_s();
        proto_send(d, NULL, 0, PROTO_SUBMIT, spec, NULL, 0, 0);
        struct proto_msg r;
        char err[128];
        if (proto_recv(d, false, &r, 0, err, sizeof err) != 0) die("recv");
        proto_msg_clear(&r);
        while (atomic_load(&s.done) < m + i + 1)
            usleep(20);
    }
    during_stop(during);
    json_decref(spec);
    zmq_close(d);
    double *lat = calloc(2000, sizeof *lat);
    for (int64_t i = 0; i < ml; i++)
        lat[i] = (t_dispatch[i] - t_submit[i]) * 1e3;
    qsort(lat, (size_t)ml, sizeof *lat, cmp_double);
    res->p50_ms = lat[ml / 2];
    res->p99_ms = lat[(ml * 99) / 100];
    free(lat);

    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    stop_broker(broker);
    zmq_ctx_term(zctx);
    free(t_submit);
    free(t_dispatch);
}

/* A new connection's first request until its reply (WHOAMI), n times, to
 * a broker with keys when bk.on: median and p99 in ms. The difference
 * between CURVE and plaintext is what the handshake costs (its four
 * commands, the ZAP request to the broker's handler, the key's look-up). */
static void run_connects(const char *dir, int n, double *p50, double *p99)
{
    char endpoint[600];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/connect.sock", dir);
    pid_t broker = start_broker(dir, endpoint, 1000);
    void *zctx = zmq_ctx_new();
    double *t = calloc((size_t)n, sizeof *t);
    if (!t) die("calloc");
    for (int i = -1; i < n; i++) { /* -1: until the broker answers at all */
        double t0 = now_s();
        void *d = bench_socket(zctx, endpoint, false);
        proto_send(d, NULL, 0, PROTO_WHOAMI, NULL, NULL, 0, 0);
        zmq_pollitem_t it = {.socket = d, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 10000) != 1) {
            fprintf(stderr, "broker_bench: no reply to a new connection%s\n",
                    bk.on ? " with keys" : "");
            exit(1);
        }
        struct proto_msg r;
        char err[128];
        if (proto_recv(d, false, &r, 0, err, sizeof err) != 0 || strcmp(r.cmd, PROTO_OK) != 0)
            die("WHOAMI");
        proto_msg_clear(&r);
        if (i >= 0) t[i] = (now_s() - t0) * 1e3;
        int linger = 0;
        zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(d);
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *p50 = t[n / 2];
    *p99 = t[(n * 99) / 100];
    free(t);
    stop_broker(broker);
    zmq_ctx_term(zctx);
}

static void run_handshakes(const char *dir, int n)
{
    double p50[2], p99[2];
    for (int c = 0; c < 2; c++) {
        bk.on = c;
        run_connects(dir, n, &p50[c], &p99[c]);
    }
    bk.on = false;
    printf("connect to first reply, %d new connections each: plaintext p50 %.3f ms p99 %.3f ms; "
           "CURVE p50 %.3f ms p99 %.3f ms; the CURVE handshake costs %.3f ms (p50; target <= 2 "
           "ms)\n",
           n, p50[0], p99[0], p50[1], p99[1], p50[1] - p50[0]);
    fflush(stdout);
}

static void run_idle(const char *dir, int k, double seconds)
{
    char endpoint[600];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/idle.sock", dir);
    pid_t broker = start_broker(dir, endpoint, 1000);
    void *zctx = zmq_ctx_new();
    struct sim s = {.zctx = zctx, .endpoint = endpoint, .k = k, .heartbeat_ms = 1000};
    pthread_t th;
    pthread_create(&th, NULL, sim_thread, &s);
    while (atomic_load(&s.ready) < k)
        usleep(1000);
    double c0 = proc_cpu_s(broker), t0 = now_s();
    usleep((useconds_t)(seconds * 1e6));
    double cpu = (proc_cpu_s(broker) - c0) / (now_s() - t0) * 100.0;
    printf("idle: broker CPU with %d idle trainers: %.2f%% of a core (target < 2%%)\n", k, cpu);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    stop_broker(broker);
    zmq_ctx_term(zctx);
}

static void run_rss(const char *dir, int64_t n)
{
    char endpoint[600], db[600];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/rss.sock", dir);
    snprintf(db, sizeof db, "%s/mlq.db", dir);
    unlink(db);
    pid_t broker = start_broker(dir, endpoint, 1000);
    void *zctx = zmq_ctx_new();
    double t0 = now_s();
    produce(zctx, endpoint, n, 256, NULL);
    printf("rss: %lld jobs queued in %.1f s; broker RSS %.1f MB (target < 50 MB)\n", (long long)n,
           now_s() - t0, (double)proc_rss_kb(broker) / 1024.0);
    stop_broker(broker);
    zmq_ctx_term(zctx);
}

/* ---- beanstalkd -------------------------------------------------------------------------------
 */

struct conn {
    int fd;
    char buf[65536];
    size_t len;
};

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 200; i++) {
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        usleep(10000);
    }
    die("connect to beanstalkd");
    return -1;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one "\r\n"-terminated line into out. */
static void read_line(struct conn *c, char *out, size_t outlen)
{
    for (;;) {
        char *e = memmem(c->buf, c->len, "\r\n", 2);
        if (e) {
            size_t l = (size_t)(e - c->buf);
            snprintf(out, outlen, "%.*s", (int)l, c->buf);
            memmove(c->buf, e + 2, c->len - l - 2);
            c->len -= l + 2;
            return;
        }
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r <= 0) die("read");
        c->len += (size_t)r;
    }
}

struct bs_args {
    int port;
    int64_t m;
    atomic_llong *done; /* jobs deleted, over all workers */
};

/* One worker: reserve and delete until the m jobs are done between them
 * (reserve-with-timeout, so that none waits for a job that never comes). */
static void *bs_worker(void *arg)
{
    struct bs_args *a = arg;
    struct conn *c = calloc(1, sizeof *c);
    c->fd = tcp_connect(a->port);
    char line[256];
    while (atomic_load(a->done) < a->m) {
        send_all(c->fd, "reserve-with-timeout 1\r\n", 24);
        read_line(c, line, sizeof line);
        if (strcmp(line, "TIMED_OUT") == 0) continue;
        unsigned long long id;
        if (sscanf(line, "RESERVED %llu", &id) != 1) {
            fprintf(stderr, "beanstalkd: %s\n", line);
            exit(1);
        }
        read_line(c, line, sizeof line); /* body */
        char cmd[64];
        int n = snprintf(cmd, sizeof cmd, "delete %llu\r\n", id);
        send_all(c->fd, cmd, (size_t)n);
        read_line(c, line, sizeof line);
        atomic_fetch_add(a->done, 1);
    }
    close(c->fd);
    free(c);
    return NULL;
}

static double run_beanstalkd(const char *dir, int64_t m, int window, int workers)
{
    /* A free port: bind 0, read it, close; beanstalkd takes it right after. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) || getsockname(s, (struct sockaddr *)&a, &al))
        die("bind");
    int port = ntohs(a.sin_port);
    close(s);
    char bdir[600], pstr[16];
    snprintf(bdir, sizeof bdir, "%s/binlog", dir);
    mkdir(bdir, 0755);
    snprintf(pstr, sizeof pstr, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("beanstalkd", "beanstalkd", "-l", "127.0.0.1", "-p", pstr, "-b", bdir, "-f0",
               (char *)NULL);
        _exit(127);
    }
    atomic_llong done = 0;
    struct bs_args args = {.port = port, .m = m, .done = &done};
    struct conn *c = calloc(1, sizeof *c);
    c->fd = tcp_connect(port);
    pthread_t *th = calloc((size_t)workers, sizeof *th);
    double t0 = now_s();
    for (int i = 0; i < workers; i++)
        pthread_create(&th[i], NULL, bs_worker, &args);
    const char *body = "{\"kind\":\"train\"}";
    char put[128];
    int plen = snprintf(put, sizeof put, "put 0 0 60 %zu\r\n%s\r\n", strlen(body), body);
    int64_t sent = 0, acked = 0;
    char line[256];
    while (acked < m) {
        while (sent < m && sent - acked < window) {
            send_all(c->fd, put, (size_t)plen);
            sent++;
        }
        read_line(c, line, sizeof line);
        if (strncmp(line, "INSERTED", 8) != 0) {
            fprintf(stderr, "beanstalkd: %s\n", line);
            exit(1);
        }
        acked++;
    }
    while (atomic_load(&done) < m)
        usleep(100);
    double rate = (double)m / (now_s() - t0); /* not the workers' last reserve time-outs */
    for (int i = 0; i < workers; i++)
        pthread_join(th[i], NULL);
    free(th);
    close(c->fd);
    free(c);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return rate;
}

static bool have_beanstalkd(void)
{
    return system("command -v beanstalkd >/dev/null 2>&1") == 0;
}

/* --curve: which of plaintext (bit 0) and CURVE (bit 1) each shape runs. */
enum { CURVE_OFF = 1, CURVE_ON = 2, CURVE_BOTH = 3 };
static int curve_runs = CURVE_BOTH;

/* One shape: mlq in plaintext and with CURVE, then beanstalkd (same jobs,
 * trainers = workers, window). */
static void run_shape(const char *dir, int k, int64_t m, int window, bool beanstalkd)
{
    struct mlq_result r, rc[2];
    memset(rc, 0, sizeof rc);
    r = rc[0];
    for (int c = 0; c < 2; c++) {
        if (!(curve_runs & (1 << c))) continue;
        bk.on = c;
        run_mlq(dir, k, m, window, &rc[c]);
        r = rc[c];
        printf(
            "mlq%s%s: %lld jobs, %d trainers, window %d: %.0f jobs/s end to end (broker at "
            "%.0f%% of a core); submit-to-dispatch p50 %.3f ms, p99 %.3f ms (target < 1 ms)%s%s\n",
            c ? " CURVE" : "", sync_normal ? " (sync=normal)" : "", (long long)m, k, window,
            r.jobs_per_s, 100 * r.cpu_share, r.p50_ms, r.p99_ms,
            during_cmd ? ", latency measured while running: " : "", during_cmd ? during_cmd : "");
        fflush(stdout);
    }
    bk.on = false;
    if (curve_runs == CURVE_BOTH)
        printf("CURVE/plaintext, %d trainers, window %d: %.2f of the jobs/s, CURVE costs %.1f%% "
               "(target <= 20%%)\n",
               k, window, rc[1].jobs_per_s / rc[0].jobs_per_s,
               100 * (1 - rc[1].jobs_per_s / rc[0].jobs_per_s));
    if (!beanstalkd) return;
    if (curve_runs & CURVE_OFF) r = rc[0];
    double bs = run_beanstalkd(dir, m, window, k);
    printf("beanstalkd -f0: %lld jobs, %d workers, window %d: %.0f jobs/s end to end\n",
           (long long)m, k, window, bs);
    printf("ratio mlq/beanstalkd, %d trainers, window %d: %.2fx (target >= 2x)\n", k, window,
           r.jobs_per_s / bs);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int k = 0, window = 0, idle = 200, handshakes = 200;
    int64_t m = 10000;
    bool full = false;
    static const struct option longopts[] = {
        {"jobs", required_argument, NULL, 'm'},
        {"trainers", required_argument, NULL, 'k'},
        {"window", required_argument, NULL, 'w'},
        {"idle", required_argument, NULL, 'i'},
        {"full", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {"sync-normal", no_argument, NULL, 's'},
        {"curve", required_argument, NULL, 'c'},
        {"handshakes", required_argument, NULL, 'H'},
        {"during", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            m = atoll(optarg);
            break;
        case 'k':
            k = atoi(optarg);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'i':
            idle = atoi(optarg);
            break;
        case 'f':
            full = true;
            break;
        case 's':
            sync_normal = 1;
            break;
        case 'c':
            curve_runs = !strcmp(optarg, "on")     ? CURVE_ON
                         : !strcmp(optarg, "off")  ? CURVE_OFF
                         : !strcmp(optarg, "both") ? CURVE_BOTH
                                                   : 0;
            if (!curve_runs) {
                fprintf(stderr, "broker_bench: --curve takes on, off or both\n");
                return 2;
            }
            break;
        case 'H':
            handshakes = atoi(optarg);
            break;
        case 'D':
            during_cmd = optarg;
            break;
        default:
            printf("usage: broker_bench [--jobs M] [--trainers K] [--window W] [--idle N] "
                   "[--full] [--sync-normal] [--curve on|off|both] [--handshakes N]\n"
                   "       [--during CMD]\n"
                   "Without --trainers and --window: the shapes 1/1, 4/32 and 16/64, each in\n"
                   "plaintext and with CURVE (--curve both, the default); then N new\n"
                   "connections of each kind (default 200, 0: none) for the handshake's cost.\n"
                   "--during CMD: sh -c CMD (MLQ_BROKER set) runs while latency is measured.\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (m < 10 || k < 0 || window < 0 || handshakes < 0) {
        fprintf(stderr, "broker_bench: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/mlq-broker-bench-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");

    keys_make(dir);
    bool bs = have_beanstalkd();
    if (!bs) printf("beanstalkd: not installed (apt-get install beanstalkd), comparison skipped\n");
    if (k || window) {
        run_shape(dir, k ? k : 4, m, window ? window : 1, bs);
    } else {
        /* One submission at a time to one trainer; a producer with 32 in
           flight to 4 trainers; 64 in flight to 16 (the broker's capacity:
           a trainer that finishes at once still waits a commit per job). */
        static const int shapes[][2] = {{1, 1}, {4, 32}, {16, 64}};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            run_shape(dir, shapes[i][0], m, shapes[i][1], bs);
    }
    if (handshakes > 0) run_handshakes(dir, handshakes);
    if (idle > 0) run_idle(dir, idle, 5.0);
    if (full) run_rss(dir, 100000);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "broker_bench: cannot remove %s\n", dir);
    return 0;
}
