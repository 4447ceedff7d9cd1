/* CurveZMQ keys (docs/security.md, "Keys and encryption").
 *
 * A key pair is two files in czmq's certificate format (ZPL text, so that
 * czmq's tools read them too): PREFIX.key holds the public key and the
 * metadata (name, role), mode 0644; PREFIX.key_secret holds both keys, mode
 * 0600. The broker accepts the public keys it finds in two directories, one
 * for users (role user or admin) and one for trainers, and names each
 * connection after its key (the ZAP User-Id).
 *
 * Clients (mlq, mlq-trainer) speak CURVE when they know the broker's public
 * key (broker.public_key, or broker.key next to their own key): they pin it,
 * so a broker with another key is never talked to. Without one they speak
 * plaintext, which the broker allows only on local endpoints. */
#ifndef MLQ_KEYS_H
#define MLQ_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define KEYS_Z85_LEN 40 /* a 32-byte key in Z85 text */
#define KEYS_NAME_MAX 128
#define KEYS_PUBLIC_EXT ".key"
#define KEYS_SECRET_EXT ".key_secret"
#define KEYS_ZAP_DOMAIN "mlq"

enum keys_role {
    KEYS_ROLE_NONE = 0,
    KEYS_ROLE_USER,
    KEYS_ROLE_ADMIN,
    KEYS_ROLE_TRAINER,
    KEYS_ROLE_BROKER, /* the broker's own key: never accepted from a peer */
};

struct keys_cert {
    char name[KEYS_NAME_MAX];
    enum keys_role role;
    char public_z85[KEYS_Z85_LEN + 1];
    char secret_z85[KEYS_Z85_LEN + 1]; /* "" for a public certificate */
};

const char *keys_role_name(enum keys_role r); /* "user", "admin", "trainer", "broker", "none" */
/* KEYS_ROLE_NONE for anything else. */
enum keys_role keys_role_parse(const char *text);

/* The libzmq here can do what the broker needs: CURVE, and 4.3.2 or later
 * (older ones have CVE-2019-13132, a remote overflow in the CURVE handshake).
 * 0, or -ENOTSUP with the reason in err. */
int keys_check_libzmq(char *err, size_t errlen);

/* A fresh key pair named name with role. 0 or -errno. */
int keys_generate(struct keys_cert *c, const char *name, enum keys_role role, char *err,
                  size_t errlen);
/* Writes PREFIX.key and PREFIX.key_secret (when c has a secret), each made
 * new (O_EXCL, O_NOFOLLOW: an existing file is never overwritten unless
 * force, and then it is replaced, not written through). 0 or -errno with err
 * naming the file. */
int keys_save(const struct keys_cert *c, const char *prefix, bool force, char *err, size_t errlen);
/* Writes only the public certificate of c to path (O_EXCL unless force). */
int keys_save_public(const struct keys_cert *c, const char *path, bool force, char *err,
                     size_t errlen);
/* Reads a certificate file, public or secret. A secret file must not be
 * readable by others (like ssh's keys). 0 or -errno with err naming the file
 * and line. */
int keys_load(struct keys_cert *c, const char *path, char *err, size_t errlen);
/* A public key given as 40 Z85 characters, or as the path of a certificate
 * file, into out. 0 or -errno. */
int keys_public_from(const char *text_or_path, char out[KEYS_Z85_LEN + 1], char *err,
                     size_t errlen);
/* True when text is a valid Z85 key. */
bool keys_z85_valid(const char *text);

/* The broker's ROUTER: CURVE server with c's keys, ZAP domain "mlq" and the
 * domain enforced, so that without a ZAP handler every client is refused
 * (libzmq would accept any CURVE client when no handler runs). */
int keys_server_setup(void *sock, const struct keys_cert *c, char *err, size_t errlen);
/* A client socket: CURVE client with own's keys, pinned to server_z85. */
int keys_client_setup(void *sock, const struct keys_cert *own, const char *server_z85, char *err,
                      size_t errlen);

/* A local endpoint: ipc://, inproc://, or tcp:// on a loopback address
 * (127.0.0.0/8, localhost, [::1]). The broker binds anything else only with
 * keys or --insecure. */
bool keys_endpoint_is_local(const char *endpoint);

/* What a client speaks to the broker. */
struct keys_client {
    bool curve; /* false: plaintext (NULL mechanism) */
    struct keys_cert own;
    char broker_z85[KEYS_Z85_LEN + 1];
    char own_path[4096];    /* where own came from */
    char broker_from[4096]; /* "broker.public_key" or the pinned file */
};

/* Decides how a client connects: with secret_key (a path, "" = default_key)
 * and broker_public (Z85 or a path, "" = broker.key next to the own key).
 * CURVE when the broker's key is known; then the own key must load. 0 or
 * -errno with err saying which file or key to fix. default_key may be NULL. */
int keys_client_resolve(struct keys_client *out, const char *secret_key, const char *default_key,
                        const char *broker_public, char *err, size_t errlen);

/* $XDG_CONFIG_HOME/mlq (or ~/.config/mlq) into buf. 0 or -ENOENT. */
int keys_user_dir(char *buf, size_t len);

#endif
