/* mlq up: a broker and N trainers as child processes in the foreground,
 * the local stack for one machine without systemd. Ctrl-C stops them all:
 * trainers first (their jobs go back to the queue), then the broker. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "store.h"

#define MAX_TRAINERS 64
#define STOP_GRACE_SECONDS 10

struct child {
    const char *role; /* "broker" or "trainer" */
    char name[64];
    pid_t pid;
    char *argv[16];
    int argc;
    time_t started;
    int restarts;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Finds a sibling program: next to this binary (installed), in the build
 * tree's layout (build/cli/mlq beside build/broker/mlq-broker), else PATH. */
static void find_program(const char *name, const char *subdir, char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *dir = dirname(self);
        snprintf(out, len, "%s/%s", dir, name);
        if (access(out, X_OK) == 0) return;
        snprintf(out, len, "%s/../%s/%s", dir, subdir, name);
        if (access(out, X_OK) == 0) return;
    }
    snprintf(out, len, "%s", name);
}

static void add_arg(struct child *c, const char *arg)
{
    if (c->argc < (int)(sizeof c->argv / sizeof c->argv[0]) - 1) c->argv[c->argc++] = strdup(arg);
    c->argv[c->argc] = NULL;
}

static void free_args(struct child *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    c->argc = 0;
}

static int spawn(struct child *c)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_errno(errno, "cannot start %s", c->name);
        return -errno;
    }
    if (pid == 0) {
        /* Own process group: Ctrl-C reaches mlq up alone, which then stops
         * the children in order. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(c->argv[0], c->argv);
        fprintf(stderr, "mlq up: cannot run %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started = time(NULL);
    return 0;
}

static void stop_children(struct child *kids, int n)
{
    /* Trainers first, so that the broker sees them leave; the broker last. */
    for (int phase = 0; phase < 2; phase++) {
        for (int i = 0; i < n; i++)
            if (kids[i].pid > 0 && (strcmp(kids[i].role, "broker") == 0) == (phase == 1))
                kill(kids[i].pid, SIGTERM);
        time_t deadline = time(NULL) + STOP_GRACE_SECONDS;
        for (;;) {
            int alive = 0;
            for (int i = 0; i < n; i++) {
                if (kids[i].pid <= 0 || (strcmp(kids[i].role, "broker") == 0) != (phase == 1))
                    continue;
                if (waitpid(kids[i].pid, NULL, WNOHANG) == kids[i].pid)
                    kids[i].pid = 0;
                else
                    alive++;
            }
            if (!alive) break;
            if (time(NULL) >= deadline) {
                for (int i = 0; i < n; i++)
                    if (kids[i].pid > 0 && (strcmp(kids[i].role, "broker") == 0) == (phase == 1)) {
                        log_warn("%s did not stop in %d s; killing it", kids[i].name,
                                 STOP_GRACE_SECONDS);
                        kill(kids[i].pid, SIGKILL);
                        waitpid(kids[i].pid, NULL, 0);
                        kids[i].pid = 0;
                    }
                break;
            }
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Prints the queue when it changes; the store is read-only here. */
static void show_queue(const char *db_path, int64_t last[STORE_N_STATES])
{
    struct store *db = NULL;
    char err[256];
    int64_t counts[STORE_N_STATES] = {0};
    if (store_open(&db, db_path, STORE_READONLY, err, sizeof err) != 0) return;
    int rc = store_job_count_by_state(db, counts);
    store_close(&db);
    if (rc || memcmp(counts, last, sizeof counts) == 0) return;
    memcpy(last, counts, sizeof counts);
    log_info("jobs: %lld queued, %lld running, %lld succeeded, %lld failed, %lld cancelled",
             (long long)counts[STORE_QUEUED], (long long)counts[STORE_RUNNING],
             (long long)counts[STORE_SUCCEEDED], (long long)counts[STORE_FAILED],
             (long long)counts[STORE_CANCELLED]);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mlq up [--trainers N] [--threads N] [--db FILE] [--bind ENDPOINT]\n"
            "\n"
            "Starts a broker and N trainers in the foreground and stops them all on Ctrl-C.\n"
            "\n"
            "  --trainers N      trainer processes (default 1)\n"
            "  --threads N       BLAS threads per trainer (default: trainer.threads, else auto)\n"
            "  --db FILE         the database (default: db.path, else %s)\n"
            "  --bind ENDPOINT   where the broker listens (default: broker.bind)\n"
            "\n"
            "Submit jobs from another shell with 'mlq submit'; see docs/jobs.md.\n",
            "$XDG_DATA_HOME/mlq/mlq.db");
}

int cmd_up(int argc, char **argv)
{
    struct config cfg;
    char err[512];
    if (config_load(&cfg, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "mlq up: %s\n", err);
        return EXIT_USAGE;
    }
    int trainers = 1, threads = cfg.trainer_threads;
    enum { OPT_DB = 256, OPT_BIND, OPT_THREADS };
    static const struct option longopts[] = {
        {"trainers", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"db", required_argument, NULL, OPT_DB},
        {"bind", required_argument, NULL, OPT_BIND},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case 'n':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > MAX_TRAINERS) {
                fprintf(stderr, "mlq up: --trainers takes a number from 1 to %d\n", MAX_TRAINERS);
                return EXIT_USAGE;
            }
            trainers = (int)v;
            break;
        case OPT_THREADS:
            v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 256) {
                fprintf(stderr, "mlq up: --threads takes a number from 0 to 256\n");
                return EXIT_USAGE;
            }
            threads = (int)v;
            break;
        case OPT_DB:
            if (config_set(&cfg, "db.path", optarg, CONFIG_SRC_FLAG, err, sizeof err) < 0)
                goto bad_flag;
            break;
        case OPT_BIND:
            if (config_set(&cfg, "broker.bind", optarg, CONFIG_SRC_FLAG, err, sizeof err) < 0 ||
                config_set(&cfg, "broker.endpoint", optarg, CONFIG_SRC_FLAG, err, sizeof err) < 0)
                goto bad_flag;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mlq up: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }

    char db_path[PATH_MAX];
    if (cfg.db_path[0])
        snprintf(db_path, sizeof db_path, "%s", cfg.db_path);
    else if (store_default_path(db_path, sizeof db_path) != 0) {
        fprintf(stderr, "mlq up: cannot find a place for the database; give --db FILE\n");
        return EXIT_USAGE;
    }
    char broker_bin[PATH_MAX], trainer_bin[PATH_MAX];
    find_program("mlq-broker", "broker", broker_bin, sizeof broker_bin);
    find_program("mlq-trainer", "trainer", trainer_bin, sizeof trainer_bin);

    struct child kids[1 + MAX_TRAINERS];
    memset(kids, 0, sizeof kids);
    int n = 1 + trainers;
    kids[0].role = "broker";
    snprintf(kids[0].name, sizeof kids[0].name, "mlq-broker");
    add_arg(&kids[0], broker_bin);
    add_arg(&kids[0], "--db");
    add_arg(&kids[0], db_path);
    add_arg(&kids[0], "--bind");
    add_arg(&kids[0], cfg.broker_bind);
    char host[64] = "local";
    gethostname(host, sizeof host - 1);
    for (int i = 1; i < n; i++) {
        struct child *k = &kids[i];
        k->role = "trainer";
        snprintf(k->name, sizeof k->name, "%.40s-%d", host, i);
        add_arg(k, trainer_bin);
        add_arg(k, "--broker");
        add_arg(k, cfg.broker_endpoint);
        add_arg(k, "--name");
        add_arg(k, k->name);
        if (threads > 0) {
            char t[16];
            snprintf(t, sizeof t, "%d", threads);
            add_arg(k, "--threads");
            add_arg(k, t);
        }
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    int rc = EXIT_OK;
    for (int i = 0; i < n && rc == EXIT_OK; i++)
        if (spawn(&kids[i]) != 0) rc = EXIT_FAILURE_GENERIC;
    if (rc == EXIT_OK)
        log_info("broker at %s (database %s), %d trainer%s; Ctrl-C stops them", cfg.broker_bind,
                 db_path, trainers, trainers == 1 ? "" : "s");

    int64_t last_counts[STORE_N_STATES];
    memset(last_counts, 0xff, sizeof last_counts);
    time_t next_show = 0;
    while (!stop_requested && rc == EXIT_OK) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        for (int i = 0; pid > 0 && i < n; i++) {
            if (kids[i].pid != pid) continue;
            kids[i].pid = 0;
            if (kids[i].role[0] == 'b' && WIFEXITED(status) &&
                WEXITSTATUS(status) == BROKER_EXIT_DB_HELD) {
                /* Another broker holds the database (its message says
                 * which): restarting this one cannot help. */
                log_error("%s exited: another broker holds %s; not restarting it", kids[i].name,
                          db_path);
                rc = EXIT_UNAVAILABLE;
                break;
            }
            bool quick = time(NULL) - kids[i].started < 2;
            log_warn("%s exited (%s %d)%s", kids[i].name, WIFSIGNALED(status) ? "signal" : "status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                     quick && kids[i].restarts >= 3 ? "; giving up" : "; restarting it");
            /* A program that dies at once, again and again, will not get
             * better by restarting (a port in use, a bad database). */
            if (quick && ++kids[i].restarts > 3) {
                rc = EXIT_FAILURE_GENERIC;
                break;
            }
            if (!quick) kids[i].restarts = 0;
            sleep(1);
            if (spawn(&kids[i]) != 0) rc = EXIT_FAILURE_GENERIC;
        }
        if (time(NULL) >= next_show) {
            show_queue(db_path, last_counts);
            next_show = time(NULL) + 2;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    log_info("stopping %d trainer%s and the broker", trainers, trainers == 1 ? "" : "s");
    stop_children(kids, n);
    for (int i = 0; i < n; i++)
        free_args(&kids[i]);
    return rc;

bad_flag:
    fprintf(stderr, "mlq up: %s\n", err);
    return EXIT_USAGE;
}
