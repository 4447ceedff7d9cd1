/* mlq config: the effective configuration and where each value came from. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "up_state.h"

int cli_config_load(struct config *cfg, const char *file, char *err, size_t errlen)
{
    int rc = config_load(cfg, file, err, errlen);
    if (rc == 0) up_state_apply(cfg);
    return rc;
}

static void config_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq config [--json] [--config FILE] [--broker ENDPOINT] [--db FILE]\n"
            "                  [--set KEY=VALUE]... [KEY]\n\n"
            "Prints every configuration value, or only KEY's, with where it came from:\n"
            "default, the config file (%s or $MLQ_CONFIG), the environment (MLQ_*),\n"
            "a flag, or a running mlq up (its endpoint and database, where nothing else\n"
            "gives them). Keys and variables: docs/configuration.md.\n\n"
            "  --json             one JSON object instead of aligned lines\n"
            "  --config FILE      read FILE instead of the default config file\n"
            "  --broker ENDPOINT  as --set broker.endpoint=ENDPOINT\n"
            "  --db FILE          as --set db.path=FILE\n"
            "  --set KEY=VALUE    override KEY as a flag would (repeatable)\n",
            CONFIG_DEFAULT_FILE);
}

int cmd_config(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"config", required_argument, NULL, 'c'},
        {"broker", required_argument, NULL, 'b'},
        {"db", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* Flags are applied after the file and environment, so collect them first;
     * key NULL means "KEY=VALUE in value". */
    struct {
        const char *key, *value;
    } sets[64];
    int nsets = 0;
    const char *file = NULL;
    bool json = false;
    char err[CONFIG_STR_MAX + 256];
    struct config cfg;

    optind = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j':
            json = true;
            break;
        case 'c':
            file = optarg;
            break;
        case 'b':
        case 'd':
        case 's':
            if (nsets == (int)(sizeof sets / sizeof sets[0])) {
                fprintf(stderr, "mlq config: too many overrides\n");
                return EXIT_USAGE;
            }
            sets[nsets].key = ch == 'b' ? "broker.endpoint" : ch == 'd' ? "db.path" : NULL;
            sets[nsets++].value = optarg;
            break;
        case 'h':
            config_usage(stdout);
            return EXIT_OK;
        default:
            config_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind > 1) {
        config_usage(stderr);
        return EXIT_USAGE;
    }

    if (cli_config_load(&cfg, file, err, sizeof err) < 0) {
        fprintf(stderr, "mlq config: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    for (int i = 0; i < nsets; i++) {
        char key[128];
        const char *value = sets[i].value;
        if (!sets[i].key) {
            const char *eq = strchr(value, '=');
            if (!eq || eq - value >= (int)sizeof key) {
                fprintf(stderr, "mlq config: --set wants KEY=VALUE, got '%s'\n", value);
                return EXIT_USAGE;
            }
            snprintf(key, sizeof key, "%.*s", (int)(eq - value), value);
            value = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", sets[i].key);
        }
        if (config_set(&cfg, key, value, CONFIG_SRC_FLAG, err, sizeof err) < 0) {
            fprintf(stderr, "mlq config: %s\n", err);
            return EXIT_USAGE;
        }
    }

    if (optind < argc) {
        char value[CONFIG_STR_MAX];
        if (config_get(&cfg, argv[optind], value, sizeof value) < 0) {
            fprintf(stderr, "mlq config: unknown key '%s'; run 'mlq config' for the list\n",
                    argv[optind]);
            return EXIT_NOT_FOUND;
        }
        printf("%s\n", value);
        return EXIT_OK;
    }
    if (config_dump(&cfg, stdout, json) < 0) {
        fprintf(stderr, "mlq config: cannot write the output: %s\n", strerror(EIO));
        return EXIT_FAILURE_GENERIC;
    }
    return EXIT_OK;
}
