/* mlq rm and mlq gc: deleting runs, by id or by age and count, and giving
 * the space back (docs/history.md). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "history.h"
#include "store.h"

static void rm_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq rm ID... [--force] [--db FILE] [--json]\n\n"
            "Deletes runs with their params, metrics, checkpoints and events, and gives the\n"
            "space back. Queued and running jobs are refused (cancel them first) unless\n"
            "--force. All ids must exist, or nothing is deleted.\n\n"
            "  --force      delete queued and running jobs too (the broker may still be\n"
            "               working on them)\n%s",
            history_common_help);
}

static int rm_option(void *ctx, int ch, const char *arg)
{
    (void)arg;
    if (ch == 'f') *(bool *)ctx = true;
    return HISTORY_PROCEED;
}

int cmd_rm(int argc, char **argv)
{
    static const struct option opts[] = {{"force", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    bool force = false;
    const struct history_cmd cmd = {.name = "rm",
                                    .shortopts = "f",
                                    .opts = opts,
                                    .option = rm_option,
                                    .ctx = &force,
                                    .usage = rm_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    int n = argc - co.argi;
    if (n < 1) {
        rm_usage(stderr);
        return EXIT_USAGE;
    }
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    if (!ids) return EXIT_FAILURE_GENERIC;
    if (!history_parse_ids("rm", argv + co.argi, n, ids)) {
        free(ids);
        return EXIT_USAGE;
    }
    struct store *s;
    rc = history_open("rm", co.db, true, &s);
    if (rc != EXIT_OK) {
        free(ids);
        return rc;
    }
    /* Check every id before deleting any. */
    for (int i = 0; i < n && rc == EXIT_OK; i++) {
        struct store_job j;
        int ret = store_job_get(s, ids[i], &j);
        if (ret == -ENOENT) {
            fprintf(stderr, "mlq rm: no run %lld; nothing deleted\n", (long long)ids[i]);
            rc = EXIT_NOT_FOUND;
        } else if (ret != 0) {
            fprintf(stderr, "mlq rm: %s\n", store_errmsg(s));
            rc = EXIT_FAILURE_GENERIC;
        } else if (!force && !store_state_terminal(j.state)) {
            fprintf(stderr,
                    "mlq rm: run %lld is %s; cancel it first (or --force); nothing "
                    "deleted\n",
                    (long long)ids[i], store_state_name(j.state));
            rc = EXIT_FAILURE_GENERIC;
        }
        if (ret == 0) store_job_free(&j);
    }
    int ret = 0;
    if (rc == EXIT_OK) ret = store_begin(s);
    for (int i = 0; rc == EXIT_OK && ret == 0 && i < n; i++) {
        ret = store_run_delete(s, ids[i]);
        if (ret == -ENOENT) /* the same id twice */
            ret = 0;
    }
    if (rc == EXIT_OK && ret == 0) ret = store_commit(s);
    if (rc == EXIT_OK && ret == 0) ret = store_vacuum(s);
    if (rc == EXIT_OK && ret != 0) {
        store_rollback(s);
        fprintf(stderr, "mlq rm: %s\n", store_errmsg(s));
        rc = EXIT_FAILURE_GENERIC;
    }
    if (rc == EXIT_OK) {
        if (co.json) {
            json_t *a = json_array();
            for (int i = 0; i < n; i++)
                json_array_append_new(a, json_integer(ids[i]));
            json_t *o = json_object();
            json_object_set_new(o, "removed", a);
            history_json_print(o);
        } else {
            for (int i = 0; i < n; i++)
                printf("removed run %lld\n", (long long)ids[i]);
        }
    }
    free(ids);
    store_close(&s);
    return rc;
}

static void gc_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq gc [--keep N] [--older-than DAYS] [--dry-run] [--db FILE] [--json]\n\n"
            "Deletes finished runs (succeeded, failed, cancelled) beyond the newest N or\n"
            "finished more than DAYS ago, with everything they hold, then gives the space\n"
            "back to the file system. Queued and running jobs are never touched. At least\n"
            "one of --keep and --older-than is required.\n\n"
            "  --keep N           keep the newest N finished runs\n"
            "  --older-than DAYS  delete finished runs older than DAYS (fractions allowed)\n"
            "  --dry-run          count what would be deleted, delete nothing\n%s",
            history_common_help);
}

static long long file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

static int gc_option(void *ctx, int ch, const char *arg)
{
    struct store_gc_opts *g = ctx;
    char *end;
    switch (ch) {
    case 'k':
        g->keep = strtoll(arg, &end, 10);
        if (*end || end == arg || g->keep < 0) {
            fprintf(stderr, "mlq gc: --keep: not a count: '%s'\n", arg);
            return EXIT_USAGE;
        }
        break;
    case 'o':
        g->older_than = strtod(arg, &end) * 86400;
        if (*end || end == arg || !(g->older_than > 0)) {
            fprintf(stderr, "mlq gc: --older-than: not a positive number of days: '%s'\n", arg);
            return EXIT_USAGE;
        }
        break;
    case 'n':
        g->dry_run = true;
        break;
    }
    return HISTORY_PROCEED;
}

int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {{"keep", required_argument, NULL, 'k'},
                                         {"older-than", required_argument, NULL, 'o'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    struct store_gc_opts g = {.keep = -1};
    const struct history_cmd cmd = {
        .name = "gc", .opts = opts, .option = gc_option, .ctx = &g, .usage = gc_usage};
    struct history_opts co;
    int rc = history_args(&cmd, argc, argv, &co);
    if (rc != HISTORY_PROCEED) return rc;
    if (co.argi < argc || (g.keep < 0 && g.older_than <= 0)) {
        gc_usage(stderr);
        return EXIT_USAGE;
    }
    char path[4096] = "";
    struct store *s;
    rc = history_open("gc", co.db, !g.dry_run, &s);
    if (rc != EXIT_OK) return rc;
    snprintf(path, sizeof path, "%s", history_path());
    long long before = path[0] ? file_bytes(path) : 0;
    int64_t deleted = 0;
    if (store_gc(s, &g, &deleted) != 0) {
        fprintf(stderr, "mlq gc: %s\n", store_errmsg(s));
        store_close(&s);
        return EXIT_FAILURE_GENERIC;
    }
    store_close(&s);
    long long after = path[0] ? file_bytes(path) : 0;
    if (co.json) {
        json_t *o = json_object();
        json_object_set_new(o, "removed", json_integer(deleted));
        json_object_set_new(o, "dry_run", json_boolean(g.dry_run));
        json_object_set_new(o, "bytes_freed",
                            path[0] && before > after ? json_integer(before - after)
                                                      : json_integer(0));
        history_json_print(o);
    } else if (g.dry_run) {
        printf("would remove %lld run%s\n", (long long)deleted, deleted == 1 ? "" : "s");
    } else {
        printf("removed %lld run%s", (long long)deleted, deleted == 1 ? "" : "s");
        if (path[0] && before > after) printf(", freed %.1f MB", (double)(before - after) / 1e6);
        putchar('\n');
    }
    return EXIT_OK;
}
