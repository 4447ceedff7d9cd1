#include "keys.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "atomic_file.h"

/* A draft option in libzmq 4.3's header (stable since 4.3.0 in the library):
 * without it a missing ZAP handler admits every CURVE client. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define CERT_TEXT_MAX 4096 /* a certificate file is a few hundred bytes */

static const char *const role_names[] = {[KEYS_ROLE_NONE] = "none",
                                         [KEYS_ROLE_USER] = "user",
                                         [KEYS_ROLE_ADMIN] = "admin",
                                         [KEYS_ROLE_TRAINER] = "trainer",
                                         [KEYS_ROLE_BROKER] = "broker"};

const char *keys_role_name(enum keys_role r)
{
    return (unsigned)r <= KEYS_ROLE_BROKER ? role_names[r] : "none";
}

enum keys_role keys_role_parse(const char *text)
{
    for (int r = KEYS_ROLE_USER; r <= KEYS_ROLE_BROKER; r++)
        if (text && strcmp(text, role_names[r]) == 0) return (enum keys_role)r;
    return KEYS_ROLE_NONE;
}

int keys_check_libzmq(char *err, size_t errlen)
{
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    if (major * 10000 + minor * 100 + patch < 40302) {
        snprintf(err, errlen,
                 "libzmq %d.%d.%d is older than 4.3.2 (CVE-2019-13132: a remote overflow in "
                 "the CURVE handshake); install 4.3.2 or later",
                 major, minor, patch);
        return -ENOTSUP;
    }
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "libzmq %d.%d.%d was built without CURVE (libsodium)", major, minor,
                 patch);
        return -ENOTSUP;
    }
    return 0;
}

bool keys_z85_valid(const char *text)
{
    if (!text || strlen(text) != KEYS_Z85_LEN) return false;
    unsigned char raw[32];
    return zmq_z85_decode(raw, text) != NULL;
}

static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= KEYS_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.' && ch != '@') return false;
    }
    return name[0] != '.';
}

int keys_generate(struct keys_cert *c, const char *name, enum keys_role role, char *err,
                  size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (!valid_name(name)) {
        snprintf(err, errlen,
                 "key name '%s': use 1 to %d letters, digits, '-', '_', '.' or '@', not "
                 "starting with '.'",
                 name, KEYS_NAME_MAX - 1);
        return -EINVAL;
    }
    if (zmq_curve_keypair(c->public_z85, c->secret_z85) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot make a key pair: %s", zmq_strerror(e));
        return -e;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->role = role;
    return 0;
}

static int cert_text(const struct keys_cert *c, bool secret, char *buf, size_t len)
{
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    int n = snprintf(buf, len,
                     "#   ****  Generated on %s by mlq keygen  ****\n"
                     "#   ZeroMQ CURVE %s Certificate\n"
                     "%s"
                     "\n"
                     "metadata\n"
                     "    name = \"%s\"\n"
                     "    role = \"%s\"\n"
                     "curve\n"
                     "    public-key = \"%s\"\n",
                     when, secret ? "**Secret**" : "Public",
                     secret ? "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its "
                              "permissions.\n"
                            : "",
                     c->name, keys_role_name(c->role), c->public_z85);
    if (secret && n > 0 && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, "    secret-key = \"%s\"\n", c->secret_z85);
    return n > 0 && (size_t)n < len ? n : -ENAMETOOLONG;
}

static int write_new(const char *path, const char *text, mode_t mode, bool force, char *err,
                     size_t errlen)
{
    size_t len = strlen(text);
    if (force) return atomic_file_write_all(path, text, len, mode, err, errlen);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s%s", path, strerror(e),
                 e == EEXIST ? " (--force replaces it)" : "");
        return -e;
    }
    ssize_t w = write(fd, text, len);
    int e = w == (ssize_t)len ? 0 : w < 0 ? errno : EIO;
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (e) {
        unlink(path);
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

int keys_save_public(const struct keys_cert *c, const char *path, bool force, char *err,
                     size_t errlen)
{
    char text[CERT_TEXT_MAX];
    if (cert_text(c, false, text, sizeof text) < 0) {
        snprintf(err, errlen, "certificate of %s too long", c->name);
        return -ENAMETOOLONG;
    }
    return write_new(path, text, 0644, force, err, errlen);
}

int keys_save(const struct keys_cert *c, const char *prefix, bool force, char *err, size_t errlen)
{
    char path[4200];
    if (c->secret_z85[0]) {
        char text[CERT_TEXT_MAX];
        if (snprintf(path, sizeof path, "%s%s", prefix, KEYS_SECRET_EXT) >= (int)sizeof path ||
            cert_text(c, true, text, sizeof text) < 0) {
            snprintf(err, errlen, "%s: path too long", prefix);
            return -ENAMETOOLONG;
        }
        int rc = write_new(path, text, 0600, force, err, errlen);
        explicit_bzero(text, sizeof text);
        if (rc) return rc;
    }
    if (snprintf(path, sizeof path, "%s%s", prefix, KEYS_PUBLIC_EXT) >= (int)sizeof path) {
        snprintf(err, errlen, "%s: path too long", prefix);
        return -ENAMETOOLONG;
    }
    return keys_save_public(c, path, force, err, errlen);
}

/* `  key = "value"` (or unquoted) into key and value; false for other lines. */
static bool zpl_pair(char *line, char **key, char **value)
{
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || *p == '#') return false;
    char *eq = strchr(p, '=');
    if (!eq) return false;
    char *k_end = eq;
    while (k_end > p && (k_end[-1] == ' ' || k_end[-1] == '\t'))
        k_end--;
    *k_end = '\0';
    char *v = eq + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
        v[--n] = '\0';
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        v[n - 1] = '\0';
        v++;
    }
    *key = p;
    *value = v;
    return true;
}

int keys_load(struct keys_cert *c, const char *path, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot read key %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CERT_TEXT_MAX) {
        close(fd);
        snprintf(err, errlen, "%s: not a key file (a regular file of at most %d bytes)", path,
                 CERT_TEXT_MAX);
        return -EINVAL;
    }
    char text[CERT_TEXT_MAX + 1];
    ssize_t n = read(fd, text, CERT_TEXT_MAX);
    int e = n < 0 ? errno : 0;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read key %s: %s", path, strerror(e));
        return -e;
    }
    text[n] = '\0';
    int rc = 0, lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *k, *v;
        if (!zpl_pair(line, &k, &v)) continue;
        if (strcmp(k, "public-key") == 0 || strcmp(k, "secret-key") == 0) {
            if (!keys_z85_valid(v)) {
                snprintf(err, errlen, "%s:%d: %s is not a key (40 Z85 characters)", path, lineno,
                         k);
                rc = -EINVAL;
            } else {
                memcpy(k[0] == 'p' ? c->public_z85 : c->secret_z85, v, KEYS_Z85_LEN + 1);
            }
        } else if (strcmp(k, "name") == 0) {
            snprintf(c->name, sizeof c->name, "%s", v);
        } else if (strcmp(k, "role") == 0) {
            c->role = keys_role_parse(v);
            if (!c->role) {
                snprintf(err, errlen, "%s:%d: role '%s' is not user, admin, trainer or broker",
                         path, lineno, v);
                rc = -EINVAL;
            }
        }
    }
    explicit_bzero(text, sizeof text);
    if (!rc && !c->public_z85[0]) {
        snprintf(err, errlen, "%s: no public-key in it (a czmq certificate: docs/security.md)",
                 path);
        rc = -EINVAL;
    }
    if (!rc && c->secret_z85[0]) {
        if (st.st_mode & 0007) {
            snprintf(err, errlen,
                     "%s: a secret key must not be readable by others (chmod 600 or 640)", path);
            rc = -EPERM;
        } else {
            /* The public half must belong to the secret one. */
            char derived[KEYS_Z85_LEN + 1];
            if (zmq_curve_public(derived, c->secret_z85) != 0 ||
                strcmp(derived, c->public_z85) != 0) {
                snprintf(err, errlen, "%s: its public-key does not belong to its secret-key", path);
                rc = -EINVAL;
            }
        }
    }
    if (rc) memset(c, 0, sizeof *c);
    return rc;
}

/* A key given as its Z85 text, not as a file. A path can be 40 characters
 * of Z85's alphabet too (/tmp/runs80/.config/mlq/local/broker.key is): a
 * file that exists is a file. */
static bool is_key_text(const char *text_or_path)
{
    return keys_z85_valid(text_or_path) && access(text_or_path, F_OK) != 0;
}

int keys_public_from(const char *text_or_path, char out[KEYS_Z85_LEN + 1], char *err, size_t errlen)
{
    if (is_key_text(text_or_path)) {
        memcpy(out, text_or_path, KEYS_Z85_LEN + 1);
        return 0;
    }
    struct keys_cert c;
    int rc = keys_load(&c, text_or_path, err, errlen);
    if (rc) return rc;
    memcpy(out, c.public_z85, KEYS_Z85_LEN + 1);
    explicit_bzero(&c, sizeof c);
    return 0;
}

static int sockopt(void *sock, int opt, const void *v, size_t len, const char *name, char *err,
                   size_t errlen)
{
    if (zmq_setsockopt(sock, opt, v, len) == 0) return 0;
    int e = errno;
    snprintf(err, errlen, "%s: %s", name, zmq_strerror(e));
    return -e;
}

int keys_server_setup(void *sock, const struct keys_cert *c, char *err, size_t errlen)
{
    int one = 1;
    int rc = sockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one, "ZMQ_CURVE_SERVER", err, errlen);
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_SECRETKEY, c->secret_z85, KEYS_Z85_LEN + 1,
                     "ZMQ_CURVE_SECRETKEY", err, errlen);
    if (!rc)
        rc = sockopt(sock, ZMQ_ZAP_DOMAIN, KEYS_ZAP_DOMAIN, strlen(KEYS_ZAP_DOMAIN),
                     "ZMQ_ZAP_DOMAIN", err, errlen);
    if (!rc)
        rc = sockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one, "ZMQ_ZAP_ENFORCE_DOMAIN", err,
                     errlen);
    return rc;
}

int keys_client_setup(void *sock, const struct keys_cert *own, const char *server_z85, char *err,
                      size_t errlen)
{
    int rc = sockopt(sock, ZMQ_CURVE_SERVERKEY, server_z85, KEYS_Z85_LEN + 1, "ZMQ_CURVE_SERVERKEY",
                     err, errlen);
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_PUBLICKEY, own->public_z85, KEYS_Z85_LEN + 1,
                     "ZMQ_CURVE_PUBLICKEY", err, errlen);
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_SECRETKEY, own->secret_z85, KEYS_Z85_LEN + 1,
                     "ZMQ_CURVE_SECRETKEY", err, errlen);
    return rc;
}

bool keys_endpoint_is_local(const char *e)
{
    if (strncmp(e, "ipc://", 6) == 0 || strncmp(e, "inproc://", 9) == 0) return true;
    if (strncmp(e, "tcp://", 6) != 0) return false;
    const char *h = e + 6;
    /* A "source;destination" form names the source first: look at the bind. */
    if (strchr(h, ';')) return false;
    if (strncmp(h, "localhost:", 10) == 0 || strncmp(h, "[::1]:", 6) == 0) return true;
    if (strncmp(h, "127.", 4) != 0) return false;
    /* 127.a.b.c: digits and dots up to the port. */
    for (h += 4; *h && *h != ':'; h++)
        if (!isdigit((unsigned char)*h) && *h != '.') return false;
    return *h == ':';
}

int keys_user_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/mlq", xdg);
    else if (home && home[0])
        n = snprintf(buf, len, "%s/.config/mlq", home);
    else
        return -ENOENT;
    return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

int keys_client_resolve(struct keys_client *out, const char *secret_key, const char *default_key,
                        const char *broker_public, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *own = secret_key && secret_key[0] ? secret_key : default_key ? default_key : "";
    snprintf(out->own_path, sizeof out->own_path, "%s", own);
    char pinned[4200] = "";
    if (broker_public && broker_public[0]) {
        snprintf(out->broker_from, sizeof out->broker_from, "%s",
                 is_key_text(broker_public) ? "broker.public_key" : broker_public);
        int rc = keys_public_from(broker_public, out->broker_z85, err, errlen);
        if (rc) return rc;
    } else if (own[0]) {
        /* The broker's key pinned next to our own: DIR/broker.key. */
        const char *slash = strrchr(own, '/');
        int dir = slash ? (int)(slash - own) : 1;
        snprintf(pinned, sizeof pinned, "%.*s/broker%s", dir, slash ? own : ".", KEYS_PUBLIC_EXT);
        if (!exists(pinned) && secret_key && secret_key[0]) {
            snprintf(err, errlen,
                     "a key of its own is set (%s) but not the broker's: set broker.public_key "
                     "or put the broker's public key in %s",
                     secret_key, pinned);
            return -ENOENT;
        }
        if (!exists(pinned)) return 0; /* no broker key known: plaintext */
        if ((size_t)snprintf(out->broker_from, sizeof out->broker_from, "%s", pinned) >=
            sizeof out->broker_from) {
            snprintf(err, errlen, "the key directory's path is too long");
            return -ENAMETOOLONG;
        }
        int rc = keys_public_from(pinned, out->broker_z85, err, errlen);
        if (rc) return rc;
    } else {
        return 0;
    }
    if (!own[0]) {
        snprintf(err, errlen,
                 "the broker's public key is set (%s) but this program has no key of its own: "
                 "make one with 'mlq keygen' and have it added to the broker",
                 out->broker_from);
        return -ENOENT;
    }
    int rc = keys_load(&out->own, own, err, errlen);
    if (rc) return rc;
    if (!out->own.secret_z85[0]) {
        snprintf(err, errlen, "%s holds no secret-key: give the %s file", own, KEYS_SECRET_EXT);
        return -EINVAL;
    }
    out->curve = true;
    return 0;
}
