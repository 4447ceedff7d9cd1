/* CURVE on the broker's socket and its ZAP handler (docs/security.md).
 *
 * The handler runs in the broker's own loop: a REP socket on
 * inproc://zeromq.zap.01 polled next to the ROUTER. It admits a client whose
 * public key is in the users' or the trainers' directory and names the
 * connection after the key (the ZAP User-Id is the key's Z85 text), so that
 * every message is looked up again: a key removed from its directory stops
 * working on connections made before, too. The directories are read again
 * whenever one of them changes (checked on every handshake and every second)
 * and at least every AUTH_RESCAN_S seconds. */
#include "broker_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

#include "log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define AUTH_CHECK_S 1.0   /* stat the directories this often */
#define AUTH_RESCAN_S 30.0 /* and read them again at least this often (edits in place) */
#define AUTH_MAX_KEYS 100000

static void dir_stamp(const char *dir, struct auth_stamp *s)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        *s = (struct auth_stamp){.missing = true};
        return;
    }
    *s = (struct auth_stamp){
        .ino = st.st_ino, .sec = st.st_mtim.tv_sec, .nsec = st.st_mtim.tv_nsec, .missing = false};
}

static bool stamp_equal(const struct auth_stamp *a, const struct auth_stamp *b)
{
    return a->missing == b->missing && a->ino == b->ino && a->sec == b->sec && a->nsec == b->nsec;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int add_key(struct principal **keys, size_t *n, size_t *cap, const struct principal *p)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        struct principal *k = realloc(*keys, c * sizeof *k);
        if (!k) return -ENOMEM;
        *keys = k;
        *cap = c;
    }
    (*keys)[(*n)++] = *p;
    return 0;
}

static const struct principal *find_in(const struct principal *keys, size_t n, const char *z85)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(keys[i].z85, z85, KEYS_Z85_LEN) == 0) return &keys[i];
    return NULL;
}

/* Reads one directory's certificates into keys. Files that cannot be read
 * are skipped, each said once per change (loud: a key that does not load is
 * a user who cannot get in). */
static int scan_dir(const char *dir, bool trainers, struct principal **keys, size_t *n, size_t *cap)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("cannot read the %s' keys in %s: %s: nobody of them gets in",
                 trainers ? "trainers" : "users", dir, strerror(errno));
        return 0;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && !rc) {
        if (e->d_name[0] == '.' || has_suffix(e->d_name, "_secret") || has_suffix(e->d_name, "~"))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        struct keys_cert c;
        char err[600];
        if (keys_load(&c, path, err, sizeof err) != 0) {
            log_warn("key skipped: %s", err);
            continue;
        }
        struct principal p = {.role = trainers ? KEYS_ROLE_TRAINER : c.role};
        if (!trainers && (c.role == KEYS_ROLE_TRAINER || c.role == KEYS_ROLE_BROKER)) {
            log_warn("key skipped: %s has role %s: %s", path, keys_role_name(c.role),
                     c.role == KEYS_ROLE_BROKER ? "a broker's key is nobody's to use"
                                                : "put it in the trainers' directory");
            continue;
        }
        if (!trainers && p.role != KEYS_ROLE_ADMIN) p.role = KEYS_ROLE_USER;
        memcpy(p.z85, c.public_z85, sizeof p.z85);
        if (c.name[0]) {
            snprintf(p.name, sizeof p.name, "%.*s", (int)sizeof p.name - 1, c.name);
        } else {
            /* A longer file name is cut: the name is a label, the key is the identity. */
            snprintf(p.name, sizeof p.name, "%.*s", (int)sizeof p.name - 1, e->d_name);
            if (has_suffix(p.name, KEYS_PUBLIC_EXT))
                p.name[strlen(p.name) - strlen(KEYS_PUBLIC_EXT)] = '\0';
        }
        const struct principal *dup = find_in(*keys, *n, p.z85);
        if (dup) {
            log_warn("key skipped: %s is the key of %s (%s) already", path, dup->name,
                     keys_role_name(dup->role));
            continue;
        }
        if (*n >= AUTH_MAX_KEYS) {
            log_warn("more than %d keys: %s and the rest skipped", AUTH_MAX_KEYS, path);
            break;
        }
        rc = add_key(keys, n, cap, &p);
    }
    closedir(d);
    return rc;
}

/* Reads both directories again and says what changed. */
static void rescan(struct broker *b)
{
    struct auth *a = &b->auth;
    struct principal *keys = NULL;
    size_t n = 0, cap = 0;
    dir_stamp(a->users_dir, &a->users_stamp);
    dir_stamp(a->trainers_dir, &a->trainers_stamp);
    if (scan_dir(a->users_dir, false, &keys, &n, &cap) != 0 ||
        scan_dir(a->trainers_dir, true, &keys, &n, &cap) != 0) {
        log_error("out of memory reading the keys: the old ones stay");
        free(keys);
        return;
    }
    for (size_t i = 0; i < a->n_keys; i++)
        if (!find_in(keys, n, a->keys[i].z85))
            log_info("key of %s (%s) revoked", a->keys[i].name, keys_role_name(a->keys[i].role));
    for (size_t i = 0; i < n; i++)
        if (a->loaded && !find_in(a->keys, a->n_keys, keys[i].z85))
            log_info("key of %s (%s) added", keys[i].name, keys_role_name(keys[i].role));
    free(a->keys);
    a->keys = keys;
    a->n_keys = n;
    a->loaded = true;
    a->last_scan = broker_mono();
}

static void rescan_if_changed(struct broker *b, double now)
{
    struct auth *a = &b->auth;
    struct auth_stamp u, t;
    dir_stamp(a->users_dir, &u);
    dir_stamp(a->trainers_dir, &t);
    if (!stamp_equal(&u, &a->users_stamp) || !stamp_equal(&t, &a->trainers_stamp) ||
        now - a->last_scan >= AUTH_RESCAN_S)
        rescan(b);
}

const struct principal *auth_lookup(struct broker *b, const char *z85)
{
    if (strlen(z85) != KEYS_Z85_LEN) return NULL;
    return find_in(b->auth.keys, b->auth.n_keys, z85);
}

static void dir_default(char *out, size_t len, const char *given, const char *secret_key,
                        const char *sub)
{
    if (given && given[0]) {
        snprintf(out, len, "%s", given);
        return;
    }
    const char *slash = strrchr(secret_key, '/');
    if (slash)
        snprintf(out, len, "%.*s/%s", (int)(slash - secret_key), secret_key, sub);
    else
        snprintf(out, len, "%s", sub);
}

int auth_open(struct broker *b, char *err, size_t errlen)
{
    struct auth *a = &b->auth;
    const struct broker_opts *o = &b->opts;
    int rc = keys_check_libzmq(err, errlen);
    if (rc) return rc;
    if (!o->secret_key || !o->secret_key[0]) {
        if (!keys_endpoint_is_local(o->bind) && !o->insecure) {
            snprintf(err, errlen,
                     "refusing to listen on %s in plaintext: anyone who reaches it could submit, "
                     "cancel and read jobs, or pose as a trainer. Give the broker keys "
                     "(broker.secret_key, docs/security.md), bind a loopback address, or pass "
                     "--insecure if the network is yours alone",
                     o->bind);
            return -EPERM;
        }
        if (!keys_endpoint_is_local(o->bind))
            log_warn("listening on %s in plaintext (--insecure): anyone who reaches it is "
                     "trusted with everything",
                     o->bind);
        return 0;
    }
    struct keys_cert server;
    if ((rc = keys_load(&server, o->secret_key, err, errlen)) != 0) return rc;
    if (!server.secret_z85[0]) {
        snprintf(err, errlen, "broker.secret_key %s holds no secret-key: give the %s file",
                 o->secret_key, KEYS_SECRET_EXT);
        return -EINVAL;
    }
    dir_default(a->users_dir, sizeof a->users_dir, o->users_dir, o->secret_key, "users");
    dir_default(a->trainers_dir, sizeof a->trainers_dir, o->trainers_dir, o->secret_key,
                "trainers");
    const char *dirs[2] = {a->users_dir, a->trainers_dir};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        int st_rc = stat(dirs[i], &st), e = st_rc ? errno : 0;
        if (st_rc || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen,
                     "the %s' keys directory %s: %s; create it and put their public keys in "
                     "it (broker.%s_dir, docs/security.md)",
                     i ? "trainers" : "users", dirs[i], e ? strerror(e) : "not a directory",
                     i ? "trainers" : "users");
            return -ENOENT;
        }
    }
    /* The handler first: a client that connects before it is bound is
       refused (ZAP enforced), never admitted. */
    a->zap = zmq_socket(b->zctx, ZMQ_REP);
    if (!a->zap || zmq_bind(a->zap, ZAP_ENDPOINT) != 0) {
        rc = -errno;
        snprintf(err, errlen, "ZAP handler %s: %s", ZAP_ENDPOINT, zmq_strerror(errno));
        return rc;
    }
    int linger = 0;
    zmq_setsockopt(a->zap, ZMQ_LINGER, &linger, sizeof linger);
    if ((rc = keys_server_setup(b->router, &server, err, errlen)) != 0) return rc;
    memcpy(a->public_z85, server.public_z85, sizeof a->public_z85);
    explicit_bzero(&server, sizeof server);
    a->curve = true;
    a->zap_log = (struct log_limit)LOG_LIMIT_INIT("refused handshakes not logged", 10);
    rescan(b);
    log_info("CURVE on: broker key %.8s..., %zu keys from %s and %s", a->public_z85, a->n_keys,
             a->users_dir, a->trainers_dir);
    return 0;
}

void auth_close(struct broker *b)
{
    if (b->auth.zap) zmq_close(b->auth.zap);
    b->auth.zap = NULL;
    free(b->auth.keys);
    b->auth.keys = NULL;
    b->auth.n_keys = 0;
}

static void send_frame(void *s, const void *data, size_t len, bool more)
{
    zmq_send(s, data, len, more ? ZMQ_SNDMORE : 0);
}

/* One ZAP request (RFC 27): version, request id, domain, address, routing
 * id, mechanism, credentials. Every request gets a reply (a REP socket
 * must answer before it reads the next). */
static int zap_one(struct broker *b)
{
    struct auth *a = &b->auth;
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, a->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(&part);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&f[i]);
            return e == EAGAIN && n == 0 ? -EAGAIN : -e;
        }
        more = zmq_msg_more(&part);
        if (n < 8)
            f[n++] = part;
        else
            zmq_msg_close(&part);
    }
    const char *code = "400", *text = "unknown key";
    char user[KEYS_Z85_LEN + 1] = "";
    bool curve = n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0;
    char address[64] = "";
    if (n >= 4)
        snprintf(address, sizeof address, "%.*s",
                 (int)(zmq_msg_size(&f[3]) < 63 ? zmq_msg_size(&f[3]) : 63),
                 (const char *)zmq_msg_data(&f[3]));
    if (n < 7 || zmq_msg_size(&f[0]) != 3 || memcmp(zmq_msg_data(&f[0]), "1.0", 3) != 0) {
        text = "malformed ZAP request";
    } else if (!curve || zmq_msg_size(&f[6]) != 32) {
        text = "CURVE only";
    } else {
        zmq_z85_encode(user, zmq_msg_data(&f[6]), 32);
        rescan_if_changed(b, broker_mono());
        const struct principal *p = auth_lookup(b, user);
        if (p) {
            code = "200";
            text = "OK";
            log_debug("handshake of %s (%s) from %s", p->name, keys_role_name(p->role), address);
        } else {
            log_limited(&a->zap_log, LOG_LVL_WARN,
                        "refused a connection from %s: key %.8s... is in neither %s nor %s",
                        address[0] ? address : "a local peer", user, a->users_dir, a->trainers_dir);
            user[0] = '\0';
        }
    }
    send_frame(a->zap, "1.0", 3, true);
    if (n >= 2)
        send_frame(a->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), true);
    else
        send_frame(a->zap, "", 0, true);
    send_frame(a->zap, code, 3, true);
    send_frame(a->zap, text, strlen(text), true);
    send_frame(a->zap, user, strlen(user), true);
    send_frame(a->zap, "", 0, false);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
    return 0;
}

void auth_handle_zap(struct broker *b)
{
    if (!b->auth.zap) return;
    for (int i = 0; i < 256; i++)
        if (zap_one(b) != 0) break;
    log_limit_flush(&b->auth.zap_log);
}

void auth_tick(struct broker *b, double now)
{
    if (!b->auth.curve || now < b->auth.next_check) return;
    b->auth.next_check = now + AUTH_CHECK_S;
    rescan_if_changed(b, now);
}
