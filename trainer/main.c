/* mlq-trainer: runs jobs, standalone from a spec file or for a broker. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "cgroup.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "standalone.h"
#include "worker.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mlq-trainer --standalone JOB.json [--db FILE] [--checkpoint-dir DIR]\n"
            "                   [--resume FILE] [--threads N] [--memory-budget-mb N]\n"
            "\n"
            "  --standalone JOB.json  run one train job without a broker; prints one JSON\n"
            "                         object per epoch and a summary line on stdout\n"
            "  --db FILE              record the run, its metrics and checkpoints in FILE\n"
            "  --checkpoint-dir DIR   also write checkpoints as files in DIR\n"
            "  --resume FILE          continue from a checkpoint file\n"
            "  --threads N            BLAS threads (default: the spec's, else 1)\n"
            "  --memory-budget-mb N   the job's memory limit (trainer.memory_budget_mb)\n"
            "  --log-level LEVEL      error, warn, info (default) or debug\n"
            "  --version, --help\n"
            "\n"
            "usage: mlq-trainer [--broker ENDPOINT] [--name NAME] [--threads N]\n"
            "                   [--heartbeat-ms N] [--liveness N] [--config FILE]\n"
            "  without --standalone: the daemon, taking jobs from mlq-broker (docs/jobs.md);\n"
            "  each flag overrides its key in /etc/mlq/mlq.conf and MLQ_* (docs/configuration.md)\n"
            "  --broker ENDPOINT      broker.endpoint\n"
            "  --name NAME            trainer.name: how the broker names this trainer (HOST-PID)\n"
            "  --threads N            trainer.threads\n"
            "  --heartbeat-ms N       heartbeat.interval_ms\n"
            "  --liveness N           heartbeat.liveness\n"
            "  --memory-budget-mb N   trainer.memory_budget_mb: one job's memory limit\n"
            "  --dataset-cache-dir DIR  trainer.dataset_cache_dir: fetched pushed datasets\n"
            "  --dataset-cache-mb N   trainer.dataset_cache_mb: that cache's size limit\n"
            "  --log-level LEVEL      log.level\n"
            "  --secret-key FILE      trainer.secret_key: this trainer's key (mlq keygen)\n"
            "  --broker-key KEY       broker.public_key: the broker's key, Z85 or a file\n"
            "                         (default: broker.key next to the secret key)\n"
            "  --config FILE          configuration file (default /etc/mlq/mlq.conf)\n");
}

/* Under a unit's MemoryMax= and CPUQuota= (cgroup.h): a budget that fits the
 * memory limit, and by default no more threads than the quota's CPUs. */
static void fit_cgroup(struct worker_opts *wo)
{
    struct cgroup_limits lim;
    if (cgroup_limits_read(NULL, NULL, &lim) != 0) return;
    int64_t fit = cgroup_fit_budget(wo->memory_budget_mb, lim.memory_max_mb);
    if (lim.memory_max_mb > 0 && (wo->memory_budget_mb <= 0 || fit < wo->memory_budget_mb)) {
        log_warn("memory budget %lld MiB (trainer.memory_budget_mb) lowered to %lld MiB: this "
                 "trainer's cgroup allows %lld MiB (MemoryMax=); raise both together "
                 "(docs/services.md)",
                 (long long)wo->memory_budget_mb, (long long)fit, (long long)lim.memory_max_mb);
        wo->memory_budget_mb = (int)fit;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (wo->threads <= 0 && lim.cpus > 0 && lim.cpus < cores) {
        log_info("%d threads: this trainer's cgroup allows %d CPUs (CPUQuota=)", lim.cpus,
                 lim.cpus);
        wo->threads = lim.cpus;
    }
}

/* The daemon: flags override MLQ_* and the config file, as in mlq-broker. */
static int run_daemon(const char *config_file, const char *const flag[CONFIG_NKEYS])
{
    struct config cfg;
    char err[1024];
    if (config_load_with_flags(&cfg, config_file, flag, err, sizeof err) != 0) {
        fprintf(stderr, "mlq-trainer: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);
    struct keys_client keys;
    if (keys_client_resolve(&keys, cfg.trainer_secret_key, NULL, cfg.broker_public_key, err,
                            sizeof err) != 0) {
        fprintf(stderr, "mlq-trainer: %s\n", err);
        return 2;
    }
    struct worker_opts wo = {
        .endpoint = cfg.broker_endpoint,
        .name = cfg.trainer_name,
        .threads = cfg.trainer_threads,
        .heartbeat_ms = cfg.heartbeat_interval_ms,
        .liveness = cfg.heartbeat_liveness,
        .memory_budget_mb = cfg.trainer_memory_budget_mb,
        .data_root = cfg.data_root,
        .data_roots = cfg.trainer_data_roots,
        .outputs_dir = cfg.trainer_outputs_dir,
        .dataset_cache_dir = cfg.trainer_dataset_cache_dir,
        .dataset_cache_mb = cfg.trainer_dataset_cache_mb,
        .keys = &keys,
    };
    fit_cgroup(&wo);
    int rc = worker_main(&wo);
    explicit_bzero(&keys, sizeof keys);
    return rc;
}

int main(int argc, char **argv)
{
    blas_choose_kernel(argv);
    log_set_program("mlq-trainer");

    struct standalone_opts sa = {0};
    const char *flag[CONFIG_NKEYS] = {0}; /* daemon flags, as config values */
    const char *config_file = NULL;
    enum {
        OPT_DB = 256,
        OPT_CKPT_DIR,
        OPT_RESUME,
        OPT_THREADS,
        OPT_LOG_LEVEL,
        OPT_VERSION,
        OPT_BROKER,
        OPT_NAME,
        OPT_HB,
        OPT_LIVENESS,
        OPT_MEMORY,
        OPT_CONFIG,
        OPT_SECRET,
        OPT_BROKER_KEY,
        OPT_CACHE_DIR,
        OPT_CACHE_MB
    };
    static const struct option longopts[] = {
        {"standalone", required_argument, NULL, 's'},
        {"db", required_argument, NULL, OPT_DB},
        {"checkpoint-dir", required_argument, NULL, OPT_CKPT_DIR},
        {"resume", required_argument, NULL, OPT_RESUME},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"version", no_argument, NULL, OPT_VERSION},
        {"broker", required_argument, NULL, OPT_BROKER},
        {"name", required_argument, NULL, OPT_NAME},
        {"heartbeat-ms", required_argument, NULL, OPT_HB},
        {"liveness", required_argument, NULL, OPT_LIVENESS},
        {"memory-budget-mb", required_argument, NULL, OPT_MEMORY},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"secret-key", required_argument, NULL, OPT_SECRET},
        {"broker-key", required_argument, NULL, OPT_BROKER_KEY},
        {"dataset-cache-dir", required_argument, NULL, OPT_CACHE_DIR},
        {"dataset-cache-mb", required_argument, NULL, OPT_CACHE_MB},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            sa.spec_path = optarg;
            break;
        case OPT_DB:
            sa.db_path = optarg;
            break;
        case OPT_CKPT_DIR:
            sa.checkpoint_dir = optarg;
            break;
        case OPT_RESUME:
            sa.resume_path = optarg;
            break;
        case OPT_THREADS: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "mlq-trainer: --threads takes a number from 1 to 256\n");
                return 2;
            }
            sa.threads = (int)n;
            flag[CONFIG_TRAINER_THREADS] = optarg;
            break;
        }
        case OPT_LOG_LEVEL: {
            enum log_level level;
            if (log_parse_level(optarg, &level) != 0) {
                fprintf(stderr, "mlq-trainer: --log-level takes error, warn, info or debug\n");
                return 2;
            }
            log_set_level(level);
            flag[CONFIG_LOG_LEVEL] = optarg;
            break;
        }
        case OPT_BROKER:
            flag[CONFIG_BROKER_ENDPOINT] = optarg;
            break;
        case OPT_NAME:
            flag[CONFIG_TRAINER_NAME] = optarg;
            break;
        case OPT_HB:
            flag[CONFIG_HEARTBEAT_INTERVAL_MS] = optarg;
            break;
        case OPT_LIVENESS:
            flag[CONFIG_HEARTBEAT_LIVENESS] = optarg;
            break;
        case OPT_MEMORY:
            flag[CONFIG_TRAINER_MEMORY_BUDGET_MB] = optarg;
            break;
        case OPT_CONFIG:
            config_file = optarg;
            break;
        case OPT_SECRET:
            flag[CONFIG_TRAINER_SECRET_KEY] = optarg;
            break;
        case OPT_BROKER_KEY:
            flag[CONFIG_BROKER_PUBLIC_KEY] = optarg;
            break;
        case OPT_CACHE_DIR:
            flag[CONFIG_TRAINER_DATASET_CACHE_DIR] = optarg;
            break;
        case OPT_CACHE_MB:
            flag[CONFIG_TRAINER_DATASET_CACHE_MB] = optarg;
            break;
        case OPT_VERSION:
            printf("mlq-trainer %s\n", MLQ_VERSION);
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
        fprintf(stderr, "mlq-trainer: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (sa.spec_path) {
        /* Standalone jobs are held to the same memory limit as the daemon's. */
        struct config cfg;
        char err[1024];
        if (config_load_with_flags(&cfg, config_file, flag, err, sizeof err) != 0) {
            fprintf(stderr, "mlq-trainer: %s\n", err);
            return 2;
        }
        sa.memory_budget_mb = cfg.trainer_memory_budget_mb;
        return standalone_main(&sa);
    }
    return run_daemon(config_file, flag);
}
