/* mlq up: a broker and N trainers as child processes in the foreground,
 * the local stack for one machine without systemd. Ctrl-C stops them all:
 * trainers first (their jobs go back to the queue), then the broker. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
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
#include "keys.h"
#include "log.h"
#include "store.h"
#include "up_state.h"

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

/* ---- --keys: the local stack with CurveZMQ ------------------------------------------ */

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static int mkdir_p(const char *dir, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -errno;
    return 0;
}

/* A key pair at prefix, made unless its secret is there already. */
static int ensure_key(const char *prefix, const char *name, enum keys_role role,
                      struct keys_cert *out, char *err, size_t errlen)
{
    char secret[PATH_MAX + 16];
    snprintf(secret, sizeof secret, "%s%s", prefix, KEYS_SECRET_EXT);
    if (exists(secret)) return keys_load(out, secret, err, errlen);
    int rc = keys_generate(out, name, role, err, errlen);
    if (!rc) rc = keys_save(out, prefix, false, err, errlen);
    if (!rc) log_info("made the key %s%s", prefix, KEYS_SECRET_EXT);
    return rc;
}

/* The keys of the local stack, made once and kept:
 *   ~/.config/mlq/mlq.key_secret    this user's key (an admin of the local broker)
 *   ~/.config/mlq/broker.key        the local broker's public key, pinned by mlq
 *   ~/.config/mlq/local/            the broker's key, users/ and trainers/, the trainers' key
 * Fills keydir with the local/ directory. */
static int local_keys(char *keydir, size_t len)
{
    char dir[PATH_MAX], local[PATH_MAX + 8], prefix[PATH_MAX + 64], path[PATH_MAX + 256];
    char err[PATH_MAX + 256];
    if (keys_user_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "mlq up: the keys need a home directory ($HOME or $XDG_CONFIG_HOME); "
                        "--no-keys runs the stack in plaintext\n");
        return EXIT_USAGE;
    }
    snprintf(local, sizeof local, "%s/local", dir);
    int rc = mkdir_p(dir, 0700);
    if (!rc) rc = mkdir_p(local, 0700);
    snprintf(path, sizeof path, "%s/users", local);
    if (!rc) rc = mkdir_p(path, 0755);
    snprintf(path, sizeof path, "%s/trainers", local);
    if (!rc) rc = mkdir_p(path, 0755);
    if (rc) {
        fprintf(stderr, "mlq up: cannot create %s: %s\n", local, strerror(-rc));
        return EXIT_FAILURE_GENERIC;
    }
    struct keys_cert broker, trainer, me;
    char login[KEYS_NAME_MAX] = "me";
    struct passwd *pw = getpwuid(getuid());
    const char *u = pw && pw->pw_name ? pw->pw_name : getenv("USER");
    if (u && u[0] && strlen(u) < sizeof login) snprintf(login, sizeof login, "%s", u);
    snprintf(prefix, sizeof prefix, "%s/broker", local);
    rc = ensure_key(prefix, "broker", KEYS_ROLE_BROKER, &broker, err, sizeof err);
    snprintf(prefix, sizeof prefix, "%s/trainer", local);
    if (!rc)
        rc = ensure_key(prefix, "local-trainers", KEYS_ROLE_TRAINER, &trainer, err, sizeof err);
    snprintf(prefix, sizeof prefix, "%s/mlq", dir);
    if (!rc) rc = ensure_key(prefix, login, KEYS_ROLE_ADMIN, &me, err, sizeof err);
    if (rc) {
        fprintf(stderr, "mlq up: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    /* What the local broker accepts: this user (admin) and the trainers. */
    me.role = KEYS_ROLE_ADMIN;
    trainer.role = KEYS_ROLE_TRAINER;
    snprintf(path, sizeof path, "%s/users/%s%s", local, me.name, KEYS_PUBLIC_EXT);
    rc = keys_save_public(&me, path, true, err, sizeof err);
    snprintf(path, sizeof path, "%s/trainers/local-trainers%s", local, KEYS_PUBLIC_EXT);
    if (!rc) rc = keys_save_public(&trainer, path, true, err, sizeof err);
    /* mlq pins the broker's key next to its own; one pinned to another
       broker stays, and this stack is refused. */
    snprintf(path, sizeof path, "%s/broker%s", dir, KEYS_PUBLIC_EXT);
    char pinned[KEYS_Z85_LEN + 1];
    if (!rc && exists(path)) {
        if (keys_public_from(path, pinned, err, sizeof err) == 0 &&
            strcmp(pinned, broker.public_z85) != 0) {
            fprintf(stderr,
                    "mlq up: %s pins another broker's key; mlq would refuse this one. Move it "
                    "away to use the local stack with keys\n",
                    path);
            return EXIT_USAGE;
        }
    } else if (!rc) {
        rc = keys_save_public(&broker, path, false, err, sizeof err);
    }
    explicit_bzero(&broker, sizeof broker);
    explicit_bzero(&trainer, sizeof trainer);
    explicit_bzero(&me, sizeof me);
    if (rc) {
        fprintf(stderr, "mlq up: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    snprintf(keydir, len, "%s", local);
    return EXIT_OK;
}

/* Where to connect to a broker bound at bind: a wildcard host is this host. */
static void connect_endpoint(const char *bind, char *out, size_t len)
{
    const char *host = strncmp(bind, "tcp://", 6) == 0 ? bind + 6 : NULL;
    const char *port = host ? strrchr(host, ':') : NULL;
    if (port && ((port - host == 1 && host[0] == '*') ||
                 (port - host == 7 && strncmp(host, "0.0.0.0", 7) == 0)))
        snprintf(out, len, "tcp://127.0.0.1%s", port);
    else
        snprintf(out, len, "%s", bind);
}

/* What a command run in another directory must be given: a relative path
 * (after the scheme prefix: "ipc://" of an endpoint, "" for a file) made
 * absolute from this one; "" when it does not fit. */
static void absolute_for_others(const char *text, const char *scheme, char *out, size_t len)
{
    size_t k = strlen(scheme);
    char cwd[PATH_MAX];
    int n;
    if (strncmp(text, scheme, k) == 0 && text[k] != '/' && getcwd(cwd, sizeof cwd))
        n = snprintf(out, len, "%s%s/%s", scheme, cwd, text + k);
    else
        n = snprintf(out, len, "%s", text);
    if (n < 0 || (size_t)n >= len) out[0] = '\0';
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
    log_info("jobs: %lld queued, %lld running, %lld succeeded, %lld failed, %lld cancelled, %lld "
             "stopped",
             (long long)counts[STORE_QUEUED], (long long)counts[STORE_RUNNING],
             (long long)counts[STORE_SUCCEEDED], (long long)counts[STORE_FAILED],
             (long long)counts[STORE_CANCELLED], (long long)counts[STORE_STOPPED]);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mlq up [--trainers N] [--threads N] [--db FILE] [--bind ENDPOINT] [--no-keys]\n"
            "\n"
            "Starts a broker and N trainers in the foreground and stops them all on Ctrl-C.\n"
            "\n"
            "  --trainers N      trainer processes (default 1)\n"
            "  --threads N       BLAS threads per trainer (default: trainer.threads, else auto)\n"
            "  --db FILE         the database (default: db.path, else %s)\n"
            "  --bind ENDPOINT   where the broker listens (default: broker.bind)\n"
            "  --no-keys         plaintext: anyone who reaches the endpoint gets in. Without\n"
            "                    it, CurveZMQ: only this user's key and the trainers' get in\n"
            "                    (keys made once in ~/.config/mlq; docs/security.md)\n"
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
    enum { OPT_DB = 256, OPT_BIND, OPT_THREADS, OPT_KEYS, OPT_NO_KEYS };
    bool with_keys = true; /* --keys: the default since keys became it */
    static const struct option longopts[] = {
        {"trainers", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"db", required_argument, NULL, OPT_DB},
        {"bind", required_argument, NULL, OPT_BIND},
        {"keys", no_argument, NULL, OPT_KEYS},
        {"no-keys", no_argument, NULL, OPT_NO_KEYS},
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
        case OPT_KEYS:
            with_keys = true;
            break;
        case OPT_NO_KEYS:
            with_keys = false;
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
    /* broker.bind given (file, environment, --bind) and broker.endpoint
     * left at its default: the trainers, and the commands that read the
     * state file, connect where the broker listens. */
    if (config_source(&cfg, "broker.endpoint") == CONFIG_SRC_DEFAULT ||
        config_source(&cfg, "broker.endpoint") == CONFIG_SRC_FLAG) {
        char ep[CONFIG_STR_MAX];
        connect_endpoint(cfg.broker_bind, ep, sizeof ep);
        if (config_set(&cfg, "broker.endpoint", ep, CONFIG_SRC_FLAG, err, sizeof err) < 0)
            goto bad_flag;
    }
    /* Trainers started together share the cores unless told otherwise: two
     * that each used every core of a 2-core machine trained at 63k samples/s
     * between them where one alone ran at 115k. */
    if (threads <= 0 && trainers > 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > trainers ? (int)(cores / trainers) : 1;
    }
    if (!with_keys && !keys_endpoint_is_local(cfg.broker_bind)) {
        fprintf(stderr,
                "mlq up: --no-keys on %s would let anyone on the network in; the broker "
                "refuses a plaintext bind that is not local (leave out --no-keys)\n",
                cfg.broker_bind);
        return EXIT_USAGE;
    }
    char keydir[PATH_MAX + 8] = "";
    if (with_keys) {
        int code = local_keys(keydir, sizeof keydir);
        if (code) return code;
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
    if (with_keys) {
        char d[PATH_MAX + 80];
        add_arg(&kids[0], "--secret-key");
        snprintf(d, sizeof d, "%s/broker%s", keydir, KEYS_SECRET_EXT);
        add_arg(&kids[0], d);
        add_arg(&kids[0], "--users-dir");
        snprintf(d, sizeof d, "%s/users", keydir);
        add_arg(&kids[0], d);
        add_arg(&kids[0], "--trainers-dir");
        snprintf(d, sizeof d, "%s/trainers", keydir);
        add_arg(&kids[0], d);
    }
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
        if (with_keys) {
            char d[PATH_MAX + 80];
            add_arg(k, "--secret-key");
            snprintf(d, sizeof d, "%s/trainer%s", keydir, KEYS_SECRET_EXT);
            add_arg(k, d);
            add_arg(k, "--broker-key");
            snprintf(d, sizeof d, "%s/broker%s", keydir, KEYS_PUBLIC_EXT);
            add_arg(k, d);
        }
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
    if (rc == EXIT_OK && !with_keys)
        log_warn("--no-keys: plaintext; anyone who reaches %s may submit and cancel jobs",
                 cfg.broker_bind);
    if (rc == EXIT_OK)
        log_info("broker at %s (database %s%s), %d trainer%s; Ctrl-C stops them", cfg.broker_bind,
                 db_path, with_keys ? ", CurveZMQ keys" : "", trainers, trainers == 1 ? "" : "s");
    /* The other mlq commands of this user find this broker and database
     * without flags while it runs (common/up_state.h). */
    struct up_state us = {.keys = with_keys, .started = (double)time(NULL)};
    absolute_for_others(cfg.broker_endpoint, "ipc://", us.endpoint, sizeof us.endpoint);
    absolute_for_others(db_path, "", us.db, sizeof us.db);
    char up_file[PATH_MAX] = "";
    if (rc == EXIT_OK) {
        if (up_state_write(&us, err, sizeof err) != 0)
            log_warn("the other mlq commands will not find this broker by themselves: %s", err);
        else if (up_state_path(up_file, sizeof up_file) == 0)
            log_info("mlq commands of this user use %s and %s while this runs (%s)",
                     cfg.broker_endpoint, db_path, up_file);
    }

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
    if (up_file[0]) up_state_remove((long)getpid());
    for (int i = 0; i < n; i++)
        free_args(&kids[i]);
    return rc;

bad_flag:
    fprintf(stderr, "mlq up: %s\n", err);
    return EXIT_USAGE;
}
