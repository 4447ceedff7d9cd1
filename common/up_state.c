#include "up_state.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "atomic_file.h"
#include "keys.h"

int up_state_path(char *buf, size_t len)
{
    char dir[PATH_MAX];
    int rc = keys_user_dir(dir, sizeof dir);
    if (rc) return rc;
    static const char name[] = "/up.json";
    size_t n = strlen(dir);
    if (n + sizeof name > len) return -ENAMETOOLONG;
    memcpy(buf, dir, n);
    memcpy(buf + n, name, sizeof name);
    return 0;
}

/* The directories of path, made as needed: the last one private. */
static int make_parents(const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
    char *last = strrchr(tmp, '/');
    if (!last || last == tmp) return 0;
    *last = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -errno;
    return 0;
}

static void exe_of(long pid, char *buf, size_t len)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/%ld/exe", pid);
    ssize_t n = readlink(link, buf, len - 1);
    buf[n > 0 ? n : 0] = '\0';
    /* A binary rebuilt while it runs is still the same program. */
    static const char deleted[] = " (deleted)";
    size_t l = strlen(buf), d = sizeof deleted - 1;
    if (l > d && strcmp(buf + l - d, deleted) == 0) buf[l - d] = '\0';
}

int up_state_write(struct up_state *s, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = up_state_path(path, sizeof path);
    if (rc) {
        snprintf(err, errlen, "no place for mlq up's state: neither $XDG_CONFIG_HOME nor $HOME");
        return rc;
    }
    if ((rc = make_parents(path)) != 0) {
        snprintf(err, errlen, "%s: cannot make its directory: %s", path, strerror(-rc));
        return rc;
    }
    s->pid = (long)getpid();
    exe_of(s->pid, s->exe, sizeof s->exe);
    json_t *o =
        json_pack("{s:I, s:s, s:s, s:s, s:b, s:f}", "pid", (json_int_t)s->pid, "exe", s->exe,
                  "endpoint", s->endpoint, "db", s->db, "keys", s->keys, "started", s->started);
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!text) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room: its NUL */
    rc = atomic_file_write_all(path, text, n + 1, 0600, err, errlen);
    free(text);
    return rc;
}

int up_state_read(struct up_state *out)
{
    char path[PATH_MAX];
    memset(out, 0, sizeof *out);
    if (up_state_path(path, sizeof path) != 0) return -ENOENT;
    json_error_t jerr;
    json_t *o = json_load_file(path, 0, &jerr);
    if (!o) return access(path, F_OK) == 0 ? -EINVAL : -ENOENT;
    json_int_t pid = 0;
    const char *exe = "", *endpoint = NULL, *db = "";
    int keys = 0;
    double started = 0;
    int rc = json_unpack(o, "{s:I, s?s, s:s, s?s, s?b, s?F}", "pid", &pid, "exe", &exe, "endpoint",
                         &endpoint, "db", &db, "keys", &keys, "started", &started);
    if (rc != 0 || pid <= 0 || !strstr(endpoint, "://") ||
        strlen(endpoint) >= sizeof out->endpoint || strlen(db) >= sizeof out->db ||
        strlen(exe) >= sizeof out->exe) {
        json_decref(o);
        return -EINVAL;
    }
    out->pid = (long)pid;
    snprintf(out->exe, sizeof out->exe, "%s", exe);
    snprintf(out->endpoint, sizeof out->endpoint, "%s", endpoint);
    snprintf(out->db, sizeof out->db, "%s", db);
    out->keys = keys;
    out->started = started;
    json_decref(o);
    /* Its mlq up is gone (killed, or the machine restarted): the pid may be
     * another program's by now, which its executable tells. */
    if (kill((pid_t)out->pid, 0) != 0 && errno == ESRCH) return -ENOENT;
    char now[CONFIG_STR_MAX];
    exe_of(out->pid, now, sizeof now);
    if (out->exe[0] && now[0] && strcmp(now, out->exe) != 0) return -ENOENT;
    return 0;
}

void up_state_remove(long pid)
{
    char path[PATH_MAX];
    if (up_state_path(path, sizeof path) != 0) return;
    /* Only our own: read it without the liveness check (we are alive). */
    json_t *o = json_load_file(path, 0, NULL);
    json_int_t p = o ? json_integer_value(json_object_get(o, "pid")) : 0;
    json_decref(o);
    if (p == pid) unlink(path);
}

int up_state_apply(struct config *c)
{
    struct up_state s;
    if (up_state_read(&s) != 0) return 0;
    int n = 0;
    char err[256];
    if (c->origin[CONFIG_BROKER_ENDPOINT].src == CONFIG_SRC_DEFAULT &&
        config_set(c, "broker.endpoint", s.endpoint, CONFIG_SRC_UP, err, sizeof err) == 0)
        n++;
    if (s.db[0] && c->origin[CONFIG_DB_PATH].src == CONFIG_SRC_DEFAULT &&
        config_set(c, "db.path", s.db, CONFIG_SRC_UP, err, sizeof err) == 0)
        n++;
    if (n) {
        up_state_path(c->up_file, sizeof c->up_file);
        c->up_pid = s.pid;
    }
    return n;
}
