/* mlq-broker: the job queue service. Exit codes (docs/services.md): 0
 * stopped by a signal, 1 a store failure while running, 2 bad usage or
 * configuration, 6 cannot open the database or bind the endpoint, 7 another
 * broker holds the database. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "config.h"
#include "log.h"
#include "store.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mlq-broker [--db FILE] [--bind ENDPOINT] [--heartbeat-ms N] [--liveness N]\n"
            "\n"
            "  --db FILE          the database (default: db.path, else $MLQ_DB, else\n"
            "                     ~/.local/share/mlq/mlq.db; as a service /var/lib/mlq/mlq.db)\n"
            "  --bind ENDPOINT    tcp://HOST:PORT or ipc://PATH (default %s)\n"
            "  --heartbeat-ms N   heartbeat interval (default 1000)\n"
            "  --liveness N       missed heartbeats before a trainer is dead (default 3)\n"
            "  --checkpoint-keep N  checkpoints kept per run besides the best (0 = all)\n"
            "  --max-message BYTES  largest frame accepted (default 256 MiB)\n"
            "  --sweep-max-trials N  sweep.max_trials: trials one sweep may have (default 10000)\n"
            "  --datasets-dir DIR broker.datasets_dir: pushed datasets (default datasets/\n"
            "                     beside the database)\n"
            "  --secret-key FILE  broker.secret_key: CURVE with this key (mlq keygen)\n"
            "  --users-dir DIR    broker.users_dir: the users' public keys\n"
            "  --trainers-dir DIR broker.trainers_dir: the trainers' public keys\n"
            "  --insecure         plaintext on a non-loopback bind (anyone reaching it is\n"
            "                     trusted with everything)\n"
            "  --config FILE      configuration file (default /etc/mlq/mlq.conf)\n"
            "  --log-level LEVEL  error, warn, info (default) or debug\n"
            "  --version, --help\n",
            BROKER_DEFAULT_BIND);
}

int main(int argc, char **argv)
{
    log_set_program("mlq-broker");
    enum {
        OPT_DB = 256,
        OPT_BIND,
        OPT_HB,
        OPT_LIVE,
        OPT_KEEP,
        OPT_CONFIG,
        OPT_LOG,
        OPT_VERSION,
        OPT_MAXMSG,
        OPT_INSECURE,
        OPT_SECRET,
        OPT_USERS,
        OPT_TRAINERS,
        OPT_SWEEP_MAX,
        OPT_DATASETS
    };
    static const struct option longopts[] = {
        {"db", required_argument, NULL, OPT_DB},
        {"bind", required_argument, NULL, OPT_BIND},
        {"heartbeat-ms", required_argument, NULL, OPT_HB},
        {"liveness", required_argument, NULL, OPT_LIVE},
        {"checkpoint-keep", required_argument, NULL, OPT_KEEP},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"max-message", required_argument, NULL, OPT_MAXMSG},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"secret-key", required_argument, NULL, OPT_SECRET},
        {"users-dir", required_argument, NULL, OPT_USERS},
        {"trainers-dir", required_argument, NULL, OPT_TRAINERS},
        {"sweep-max-trials", required_argument, NULL, OPT_SWEEP_MAX},
        {"datasets-dir", required_argument, NULL, OPT_DATASETS},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* Flags are applied over the file and environment, so read them first. */
    const char *flag[CONFIG_NKEYS] = {0};
    const char *config_file = NULL;
    long long max_message = 0;
    bool insecure = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DB:
            flag[CONFIG_DB_PATH] = optarg;
            break;
        case OPT_BIND:
            flag[CONFIG_BROKER_BIND] = optarg;
            break;
        case OPT_HB:
            flag[CONFIG_HEARTBEAT_INTERVAL_MS] = optarg;
            break;
        case OPT_LIVE:
            flag[CONFIG_HEARTBEAT_LIVENESS] = optarg;
            break;
        case OPT_KEEP:
            flag[CONFIG_CHECKPOINT_KEEP] = optarg;
            break;
        case OPT_LOG:
            flag[CONFIG_LOG_LEVEL] = optarg;
            break;
        case OPT_CONFIG:
            config_file = optarg;
            break;
        case OPT_MAXMSG:
            max_message = atoll(optarg);
            if (max_message < 1024) {
                fprintf(stderr, "mlq-broker: --max-message takes bytes, at least 1024\n");
                return 2;
            }
            break;
        case OPT_INSECURE:
            insecure = true;
            break;
        case OPT_SWEEP_MAX:
            flag[CONFIG_SWEEP_MAX_TRIALS] = optarg;
            break;
        case OPT_DATASETS:
            flag[CONFIG_BROKER_DATASETS_DIR] = optarg;
            break;
        case OPT_SECRET:
            flag[CONFIG_BROKER_SECRET_KEY] = optarg;
            break;
        case OPT_USERS:
            flag[CONFIG_BROKER_USERS_DIR] = optarg;
            break;
        case OPT_TRAINERS:
            flag[CONFIG_BROKER_TRAINERS_DIR] = optarg;
            break;
        case OPT_VERSION:
            printf("mlq-broker %s\n", MLQ_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mlq-broker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    struct config cfg;
    char err[1024];
    if (config_load_with_flags(&cfg, config_file, flag, err, sizeof err) != 0) {
        fprintf(stderr, "mlq-broker: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);
    char db[4096];
    if (cfg.db_path[0])
        snprintf(db, sizeof db, "%s", cfg.db_path);
    else if (store_default_path(db, sizeof db) != 0) {
        fprintf(stderr, "mlq-broker: no database path: pass --db FILE\n");
        return 2;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct broker_opts opts = {
        .db_path = db,
        .bind = cfg.broker_bind,
        .heartbeat_ms = cfg.heartbeat_interval_ms,
        .liveness = cfg.heartbeat_liveness,
        .checkpoint_keep = cfg.checkpoint_keep,
        .sync_normal = strcmp(cfg.db_sync, "normal") == 0,
        .max_message = max_message,
        .secret_key = cfg.broker_secret_key,
        .users_dir = cfg.broker_users_dir,
        .trainers_dir = cfg.broker_trainers_dir,
        .insecure = insecure,
        .sweep_max_trials = cfg.sweep_max_trials,
        .serve_deadline_ms = cfg.serve_deadline_ms,
        .datasets_dir = cfg.broker_datasets_dir,
    };
    struct broker *b;
    int rc = broker_open(&b, &opts, err, sizeof err);
    if (rc != 0) {
        log_error("%s", err);
        return rc == -EBUSY ? BROKER_EXIT_DB_HELD : rc == -EPERM ? 2 : 6;
    }
    rc = broker_run(b, &stop_flag);
    broker_close(&b);
    return rc ? 1 : 0;
}
