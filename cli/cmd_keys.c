/* mlq keygen, mlq keys list|add|revoke: CurveZMQ keys as files
 * (docs/security.md). The broker reads its key directories again when they
 * change, so adding or revoking a key here needs no restart. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "config.h"
#include "keys.h"

static void login_name(char *buf, size_t len)
{
    const char *u = getenv("USER");
    struct passwd *pw = getpwuid(getuid());
    snprintf(buf, len, "%s", pw && pw->pw_name ? pw->pw_name : u && u[0] ? u : "user");
}

/* Creates dir (and its parent) with mode when missing. */
static int make_dir(const char *dir, mode_t mode)
{
    char tmp[4096];
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

static void keygen_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq keygen [--name NAME] [--role user|admin|trainer|broker] [--out PREFIX]\n"
            "                  [--force] [--json]\n"
            "\n"
            "Makes a CURVE key pair: PREFIX.key_secret (yours, mode 0600) and PREFIX.key\n"
            "(public: give it to the broker's admin, 'mlq keys add').\n"
            "  --name NAME   the name the broker will know the key by (default: your login)\n"
            "  --role ROLE   the role written in the public key (default user)\n"
            "  --out PREFIX  default ~/.config/mlq/mlq, where mlq looks for its key\n"
            "  --force       replace existing files\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"role", required_argument, NULL, 'r'},
        {"out", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char name[KEYS_NAME_MAX], prefix[4096] = "";
    login_name(name, sizeof name);
    enum keys_role role = KEYS_ROLE_USER;
    bool force = false, json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            snprintf(name, sizeof name, "%s", optarg);
            break;
        case 'r':
            role = keys_role_parse(optarg);
            if (!role) {
                fprintf(stderr, "mlq keygen: --role takes user, admin, trainer or broker\n");
                return EXIT_USAGE;
            }
            break;
        case 'o':
            snprintf(prefix, sizeof prefix, "%s", optarg);
            break;
        case 'f':
            force = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            keygen_usage(stdout);
            return EXIT_OK;
        default:
            keygen_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        keygen_usage(stderr);
        return EXIT_USAGE;
    }
    char err[4400];
    if (!prefix[0]) {
        char dir[4000];
        if (keys_user_dir(dir, sizeof dir) != 0) {
            fprintf(stderr, "mlq keygen: no home directory: pass --out PREFIX\n");
            return EXIT_USAGE;
        }
        int rc = make_dir(dir, 0700);
        if (rc) {
            fprintf(stderr, "mlq keygen: cannot create %s: %s\n", dir, strerror(-rc));
            return EXIT_FAILURE_GENERIC;
        }
        snprintf(prefix, sizeof prefix, "%s/mlq", dir);
    }
    struct keys_cert cert;
    if (keys_generate(&cert, name, role, err, sizeof err) != 0) {
        fprintf(stderr, "mlq keygen: %s\n", err);
        return EXIT_USAGE;
    }
    int rc = keys_save(&cert, prefix, force, err, sizeof err);
    explicit_bzero(cert.secret_z85, sizeof cert.secret_z85);
    if (rc) {
        fprintf(stderr, "mlq keygen: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s+, s:s+}", "name", cert.name, "role",
                              keys_role_name(role), "public_key", cert.public_z85, "public_file",
                              prefix, KEYS_PUBLIC_EXT, "secret_file", prefix, KEYS_SECRET_EXT);
        char *t = json_dumps(o, JSON_COMPACT);
        printf("%s\n", t ? t : "{}");
        free(t);
        json_decref(o);
    } else {
        printf("key of %s (%s): %s\n  secret %s%s (keep it: mode 0600)\n  public %s%s (give it "
               "to the broker's admin: mlq keys add)\n",
               cert.name, keys_role_name(role), cert.public_z85, prefix, KEYS_SECRET_EXT, prefix,
               KEYS_PUBLIC_EXT);
    }
    return EXIT_OK;
}

/* ---- mlq keys: the broker's directories ---------------------------------------- */

struct key_dirs {
    char users[4096], trainers[4096];
};

static int broker_dirs(struct key_dirs *d, const char *users, const char *trainers)
{
    struct config cfg;
    char err[1024];
    if (config_load(&cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "mlq keys: %s\n", err);
        return EXIT_FAILURE_GENERIC;
    }
    const char *secret = cfg.broker_secret_key;
    const char *slash = strrchr(secret, '/');
    const char *given[2] = {users ? users : cfg.broker_users_dir,
                            trainers ? trainers : cfg.broker_trainers_dir};
    char *out[2] = {d->users, d->trainers};
    const char *sub[2] = {"users", "trainers"};
    for (int i = 0; i < 2; i++) {
        if (given[i][0])
            snprintf(out[i], 4096, "%s", given[i]);
        else if (slash)
            snprintf(out[i], 4096, "%.*s/%s", (int)(slash - secret), secret, sub[i]);
        else {
            fprintf(stderr, "mlq keys: no key directories: set broker.secret_key (the users' and "
                            "trainers' directories are next to it), or broker.users_dir and "
                            "broker.trainers_dir, or pass --users-dir and --trainers-dir\n");
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

static int list_dir(const char *dir, bool trainers, json_t *arr, bool json)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "mlq keys: cannot read %s: %s\n", dir, strerror(errno));
        return EXIT_FAILURE_GENERIC;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 7 && strcmp(e->d_name + n - 7, "_secret") == 0)) continue;
        char path[8300], err[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct keys_cert c;
        if (keys_load(&c, path, err, sizeof err) != 0) {
            fprintf(stderr, "mlq keys: skipped: %s\n", err);
            continue;
        }
        const char *role = trainers ? "trainer" : c.role == KEYS_ROLE_ADMIN ? "admin" : "user";
        if (json)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "name", c.name, "role",
                                                 role, "key", c.public_z85, "file", path));
        else
            printf("%-20s %-8s %s  %s\n", c.name, role, c.public_z85, path);
    }
    closedir(d);
    return EXIT_OK;
}

static void keys_usage(FILE *out)
{
    fprintf(out,
            "usage: mlq keys list [--json]\n"
            "       mlq keys add FILE.key [--role user|admin|trainer] [--name NAME]\n"
            "       mlq keys revoke NAME [--trainer]\n"
            "  (each takes --users-dir DIR and --trainers-dir DIR; by default the directories\n"
            "  'users' and 'trainers' next to broker.secret_key). The broker notices at once.\n");
}

int cmd_keys(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"role", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},
        {"trainer", no_argument, NULL, 't'},
        {"users-dir", required_argument, NULL, 'u'},
        {"trainers-dir", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        keys_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    bool json = false, trainer = false;
    const char *users = NULL, *trainers = NULL, *name = NULL;
    enum keys_role role = KEYS_ROLE_NONE;
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'r':
            role = keys_role_parse(optarg);
            if (!role || role == KEYS_ROLE_BROKER) {
                fprintf(stderr, "mlq keys: --role takes user, admin or trainer\n");
                return EXIT_USAGE;
            }
            break;
        case 'n':
            name = optarg;
            break;
        case 't':
            trainer = true;
            break;
        case 'u':
            users = optarg;
            break;
        case 'T':
            trainers = optarg;
            break;
        case 'h':
            keys_usage(stdout);
            return EXIT_OK;
        default:
            keys_usage(stderr);
            return EXIT_USAGE;
        }
    }
    struct key_dirs d;
    int code = broker_dirs(&d, users, trainers);
    if (code) return code;
    if (strcmp(sub, "list") == 0) {
        if (optind != argc) {
            keys_usage(stderr);
            return EXIT_USAGE;
        }
        json_t *arr = json ? json_array() : NULL;
        if (!json) printf("%-20s %-8s %-40s  %s\n", "NAME", "ROLE", "KEY", "FILE");
        code = list_dir(d.users, false, arr, json);
        if (!code) code = list_dir(d.trainers, true, arr, json);
        if (json) {
            char *t = json_dumps(arr, JSON_COMPACT);
            printf("{\"keys\":%s}\n", t ? t : "[]");
            free(t);
            json_decref(arr);
        }
        return code;
    }
    if (strcmp(sub, "add") == 0) {
        if (optind + 1 != argc) {
            keys_usage(stderr);
            return EXIT_USAGE;
        }
        struct keys_cert cert;
        char err[4400];
        if (keys_load(&cert, argv[optind], err, sizeof err) != 0) {
            fprintf(stderr, "mlq keys add: %s\n", err);
            return EXIT_USAGE;
        }
        if (cert.secret_z85[0]) {
            fprintf(stderr,
                    "mlq keys add: %s holds a secret key: add its public half (.key), and "
                    "keep the secret where it is\n",
                    argv[optind]);
            return EXIT_USAGE;
        }
        if (role) cert.role = role;
        if (!cert.role || cert.role == KEYS_ROLE_BROKER) cert.role = KEYS_ROLE_USER;
        if (name) snprintf(cert.name, sizeof cert.name, "%s", name);
        struct keys_cert check;
        if (keys_generate(&check, cert.name, cert.role, err, sizeof err) != 0) {
            fprintf(stderr, "mlq keys add: %s\n", err); /* the name is not a file name */
            return EXIT_USAGE;
        }
        explicit_bzero(&check, sizeof check);
        char path[8300];
        snprintf(path, sizeof path, "%s/%s%s",
                 cert.role == KEYS_ROLE_TRAINER ? d.trainers : d.users, cert.name, KEYS_PUBLIC_EXT);
        if (keys_save_public(&cert, path, false, err, sizeof err) != 0) {
            fprintf(stderr, "mlq keys add: %s\n", err);
            return EXIT_FAILURE_GENERIC;
        }
        printf("added %s (%s): %s\n", cert.name, keys_role_name(cert.role), path);
        return EXIT_OK;
    }
    if (strcmp(sub, "revoke") == 0) {
        if (optind + 1 != argc) {
            keys_usage(stderr);
            return EXIT_USAGE;
        }
        const char *who = argv[optind];
        const char *dir = trainer ? d.trainers : d.users;
        /* By the name in the certificates, not only the file name. */
        DIR *dd = opendir(dir);
        if (!dd) {
            fprintf(stderr, "mlq keys revoke: cannot read %s: %s\n", dir, strerror(errno));
            return EXIT_FAILURE_GENERIC;
        }
        int removed = 0;
        struct dirent *e;
        while ((e = readdir(dd)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char path[8300], err[600];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct keys_cert cc;
            if (keys_load(&cc, path, err, sizeof err) != 0 || strcmp(cc.name, who) != 0) continue;
            if (unlink(path) != 0) {
                fprintf(stderr, "mlq keys revoke: cannot remove %s: %s\n", path, strerror(errno));
                closedir(dd);
                return EXIT_FAILURE_GENERIC;
            }
            printf("revoked %s: removed %s\n", who, path);
            removed++;
        }
        closedir(dd);
        if (!removed) {
            fprintf(stderr, "mlq keys revoke: no key of %s in %s%s\n", who, dir,
                    trainer ? "" : " (a trainer's: --trainer)");
            return EXIT_NOT_FOUND;
        }
        return EXIT_OK;
    }
    fprintf(stderr, "mlq keys: unknown subcommand '%s'\n", sub);
    keys_usage(stderr);
    return EXIT_USAGE;
}
