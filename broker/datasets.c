/* The broker's dataset store: paths and names (datasets.h); the push and the
 * client commands over it (DATASET_PUT, DATASET_CHUNK, DATASET_END, DATASETS,
 * DATASET_RM; docs/protocol.md). */
#include "datasets.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "errmsg.h"

#include "sha256.h"

static int store_path(const char *dir, const char *sub, const char *sha, const char *suffix,
                      char buf[DATASETS_PATH_MAX])
{
    buf[0] = '\0';
    if (!sha256_hex_valid(sha)) return -EINVAL;
    int n = snprintf(buf, DATASETS_PATH_MAX, "%s/%s/%s%s", dir, sub, sha, suffix);
    if (n < 0 || n >= DATASETS_PATH_MAX) {
        buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int datasets_object_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "objects", sha, "", buf);
}

int datasets_index_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "objects", sha, ".chunks", buf);
}

int datasets_upload_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX])
{
    return store_path(dir, "uploads", sha, ".part", buf);
}

int datasets_dir_resolve(const char *configured, const char *db_path, char buf[DATASETS_PATH_MAX])
{
    int n;
    if (configured && *configured) {
        n = snprintf(buf, DATASETS_PATH_MAX, "%s", configured);
    } else {
        const char *slash = strrchr(db_path, '/');
        if (!slash)
            n = snprintf(buf, DATASETS_PATH_MAX, "datasets");
        else if (slash == db_path)
            n = snprintf(buf, DATASETS_PATH_MAX, "/datasets");
        else
            n = snprintf(buf, DATASETS_PATH_MAX, "%.*s/datasets", (int)(slash - db_path), db_path);
    }
    if (n < 0 || n >= DATASETS_PATH_MAX - 80) { /* room for /objects/<sha>.chunks */
        buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

bool datasets_name_valid(const char *name)
{
    if (!name || !name[0] || name[0] == '.' || name[0] == '-') return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n < 128;
}

/* mkdir -p, each new directory 0750. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[DATASETS_PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0') continue;
        char was = *q;
        *q = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST)
            return errmsg(err, errlen, -errno, "%s: %s", p, strerror(errno));
        if (!was) break;
        *q = was;
    }
    struct stat st;
    if (stat(dir, &st) != 0) return errmsg(err, errlen, -errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return errmsg(err, errlen, -ENOTDIR, "%s: not a directory", dir);
    return 0;
}

int datasets_prepare(const char *dir, char *err, size_t errlen)
{
    char sub[DATASETS_PATH_MAX];
    int rc = make_dirs(dir, err, errlen);
    for (int i = 0; rc == 0 && i < 2; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, i ? "uploads" : "objects");
        rc = make_dirs(sub, err, errlen);
    }
    return rc;
}
