#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

const struct cli_command cli_commands[] = {
    {"up", "run a broker and trainers in the foreground: the local stack", cmd_up},
    {"submit", "queue a train job (flags or --spec FILE); prints its id", cmd_submit},
    {"wait", "follow a job until it ends; exit 0 succeeded, 3 failed, 4 cancelled", cmd_wait},
    {"cancel", "cancel queued or running jobs (or --sweep sweeps)", cmd_cancel},
    {"queue", "the queued and running jobs", cmd_queue},
    {"workers", "the trainers connected to the broker", cmd_workers},
    {"top", "a live view: the queue, the trainers, the running jobs' progress", cmd_top},
    {"sweep", "a search space over a spec as trials, bad ones stopped early (ASHA, median)",
     cmd_sweep},
    {"tag", "set tags KEY=VALUE on a run", cmd_tag},
    {"note", "add a note to a run", cmd_note},
    {"eval", "evaluate a run's checkpoint on a dataset", cmd_eval},
    {"predict", "predict with a run's checkpoint, writing an HDF5 file", cmd_predict},
    {"generate", "text from a language model (a predict job with a prompt, or a deployment)",
     cmd_generate},
    {"deploy", "serve a run's checkpoint online through the broker (or roll one over)", cmd_deploy},
    {"deployments", "the served models: replicas, requests, latency percentiles", cmd_deployments},
    {"undeploy", "stop serving a deployment", cmd_undeploy},
    {"infer", "answer rows (HDF5 or JSON) with a deployment: classes and probabilities", cmd_infer},
    {"runs", "list runs, newest first, with params and final metrics", cmd_runs},
    {"show", "a run's spec, state, timings, metrics, checkpoints and error", cmd_show},
    {"metrics", "a run's metrics with a chart per metric", cmd_metrics},
    {"logs", "a job's events and per-epoch lines as stored; --follow", cmd_logs},
    {"compare", "params and final metrics of runs side by side", cmd_compare},
    {"report", "write an HTML report of runs: curves, evaluations, parameters", cmd_report},
    {"export", "write a run's network to an HDF5 file", cmd_export},
    {"rm", "delete runs with their metrics and checkpoints", cmd_rm},
    {"gc", "delete old finished runs and reclaim the space", cmd_gc},
    {"dataset", "import IDX, CSV or text files into HDF5, describe a dataset", cmd_dataset},
    {"keygen", "make a CURVE key pair for this user, a trainer or the broker", cmd_keygen},
    {"keys", "list, add and revoke the keys a broker accepts (its key directories)", cmd_keys},
    {"whoami", "the name and role the broker knows this key by", cmd_whoami},
    {"config", "show the effective configuration and where each value came from", cmd_config},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: mlq COMMAND [ARGS...]\n\n"
                 "mlq trains, evaluates and serves neural networks as a service.\n\ncommands:\n");
    for (const struct cli_command *c = cli_commands; c->name; c++)
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
    fprintf(out, "\nRun 'mlq COMMAND --help' for a command's options. Exit codes: docs/cli.md.\n");
}

int main(int argc, char **argv)
{
    log_set_program("mlq");
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("mlq %s\n", MLQ_VERSION);
        return EXIT_OK;
    }
    for (const struct cli_command *c = cli_commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "mlq: unknown command '%s'; run 'mlq --help' for the list\n", argv[1]);
    return EXIT_USAGE;
}
