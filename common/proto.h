/* The wire protocol between mlq, mlq-broker and mlq-trainer (docs/protocol.md).
 *
 * Every message is multipart:
 *   [identity]   only as seen by a ROUTER socket (added by ZeroMQ)
 *   "MLQ1"       protocol name and version, exactly these 4 bytes
 *   COMMAND      one of the words below, 1..15 upper-case letters/underscores
 *   JSON         a JSON object (UTF-8), at most PROTO_MAX_JSON bytes
 *   [BINARY]     optional: a checkpoint blob
 * Anything else is malformed: proto_recv drains it, returns -EPROTO and says
 * why, and the caller drops it. Every socket gets ZMQ_MAXMSGSIZE, so an
 * oversized frame disconnects its sender instead of filling memory. */
#ifndef MLQ_PROTO_H
#define MLQ_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define PROTO_HEADER "MLQ1"
#define PROTO_MAX_MSG (INT64_C(256) << 20) /* bytes in one frame (ZMQ_MAXMSGSIZE) */
#define PROTO_MAX_JSON (16 << 20)          /* bytes of the JSON frame */
#define PROTO_MAX_IDENT 256
#define PROTO_CMD_MAX 16

/* Commands. Clients (mlq) -> broker, answered by OK or ERROR. */
#define PROTO_SUBMIT "SUBMIT"    /* {"spec": {...}, "request_id"?} -> OK {"id", "existed"?} */
#define PROTO_REQUEST_ID_MAX 128 /* bytes of a SUBMIT's request_id */
#define PROTO_CANCEL "CANCEL"    /* {"id"} -> OK {"id", "state"}; broker -> trainer: {"job"} */
#define PROTO_STATUS "STATUS"    /* {"id"} -> OK {"job": {...}, "metrics": {...}} */
#define PROTO_QUEUE "QUEUE"      /* {} -> OK {"jobs": [...], "counts": {...}} */
#define PROTO_WORKERS "WORKERS"  /* {} -> OK {"trainers": [...]} */
#define PROTO_WHOAMI "WHOAMI"    /* {} -> OK {"name", "role", "mechanism", "key"?} */
#define PROTO_SWEEP                                                                                \
    "SWEEP"               /* {"spec","space","sweep"?,...} -> OK {"id","trials"} (docs/sweeps.md) */
#define PROTO_TAG "TAG"   /* {"id","tags":{k:v}} -> OK {"id","tags"} */
#define PROTO_NOTE "NOTE" /* {"id","text"} -> OK {"id"} */
#define PROTO_OK "OK"
#define PROTO_ERROR "ERROR" /* {"error": "text", "code": "bad_spec"|"not_found"|...} */
/* Pushed datasets (docs/datasets.md, "Pushed datasets"; docs/protocol.md).
 * Clients -> broker. */
#define PROTO_DATASET_PUT "DATASET_PUT"     /* {"name","size","sha256","replace"?} -> OK */
#define PROTO_DATASET_CHUNK "DATASET_CHUNK" /* {"sha256","offset"} + bytes -> OK {"offset"} */
#define PROTO_DATASET_END "DATASET_END"     /* {"sha256","name"} -> OK {"name","sha256","size"} */
#define PROTO_DATASETS "DATASETS"           /* {} -> OK {"datasets": [...]} */
#define PROTO_DATASET_RM "DATASET_RM"       /* {"name"} -> OK {"name","deleted"} */
/* Trainers (and mlq dataset get) -> broker: FETCH {"job"?,"sha256","offset"|"index"}
 * -> CHUNK {"sha256","offset","bytes","size"} + bytes. Trainer -> broker:
 * DATASET {"job","sha256","size","fetched_bytes"}, the hash of what a job read. */
#define PROTO_FETCH "FETCH"
#define PROTO_CHUNK "CHUNK"
#define PROTO_DATASET "DATASET"
#define DATASET_CHUNK_BYTES 1048576 /* bytes of a dataset chunk; the last one shorter */
#define DATASET_WINDOW 8            /* chunks a client or trainer keeps in flight */
/* Trainer -> broker. */
#define PROTO_HELLO "HELLO"           /* {"name","host","version","capabilities","job"?, "done"?} */
#define PROTO_HEARTBEAT "HEARTBEAT"   /* {} both ways */
#define PROTO_METRICS "METRICS"       /* {"job","epoch","step","values":{key: number}} */
#define PROTO_CHECKPOINT "CHECKPOINT" /* {"job","epoch","step","metric"?} + blob */
#define PROTO_DONE "DONE" /* {"job","state":"succeeded|failed|cancelled","error"?,"result"?} */
/* Broker -> trainer. */
#define PROTO_WELCOME "WELCOME" /* {"heartbeat_ms","liveness","adopt"?: job} */
#define PROTO_JOB "JOB"   /* {"job","attempt","spec"} + checkpoint blob (resume/eval/predict) */
#define PROTO_ACK "ACK"   /* {"job"}: DONE recorded, the trainer is idle */
#define PROTO_DROP "DROP" /* {"job","reason"}: stop it, it is not yours */
#define PROTO_WHO "WHO"   /* {}: unknown peer, send HELLO again */
/* Serving (docs/serving.md). Clients -> broker. */
#define PROTO_DEPLOY "DEPLOY"           /* {"name","run","checkpoint"?,"replicas"?,...} -> OK */
#define PROTO_UNDEPLOY "UNDEPLOY"       /* {"name"} -> OK {"name"} */
#define PROTO_DEPLOYMENTS "DEPLOYMENTS" /* {"name"?} -> OK {"deployments": [...]} */
#define PROTO_INFER                                                                                \
    "INFER" /* client: {"deployment","rows","id"?,"deadline_ms"?} + float32 rows                   \
             */
/* Broker -> trainer: SERVE {"deployment","generation",...} + checkpoint, UNSERVE {},
 * INFER {"reqs": [[seq, rows]...]} + rows. Trainer -> broker: SERVING {"deployment",
 * "generation","ok","error"?}, INFERRED {"reqs","generation","forwards",...} + outputs. */
#define PROTO_SERVE "SERVE"
#define PROTO_UNSERVE "UNSERVE"
#define PROTO_SERVING "SERVING"
#define PROTO_INFERRED "INFERRED"
/* Binary infer (docs/protocol.md, "Binary infer"): the same requests and
 * answers with a fixed little-endian header in frame 3 instead of JSON.
 * INFER_BIN client -> broker and broker -> trainer (a trainer whose HELLO
 * capabilities say "infer_bin"), INFERRED_BIN trainer -> broker,
 * ANSWER_BIN broker -> client. Errors stay ERROR {...} (JSON). */
#define PROTO_INFER_BIN "INFER_BIN"
#define PROTO_INFERRED_BIN "INFERRED_BIN"
#define PROTO_ANSWER_BIN "ANSWER_BIN"

/* One received message. Owned pieces are freed by proto_msg_clear. */
struct proto_msg {
    unsigned char ident[PROTO_MAX_IDENT]; /* ROUTER peers only */
    size_t ident_len;
    char user[48]; /* ROUTER peers under CURVE: the ZAP User-Id (the key's Z85), else "" */
    char cmd[PROTO_CMD_MAX];
    json_t *body; /* a JSON object, owned; NULL for a binary-header command */
    void *hdr;    /* a binary-header command's frame 3 (proto_is_binary), malloc'd */
    size_t hdr_len;
    void *bin; /* malloc'd, or NULL */
    size_t bin_len;
};
void proto_msg_clear(struct proto_msg *m);

/* Sets ZMQ_MAXMSGSIZE, ZMQ_LINGER (linger_ms) on a new socket. 0 or -errno. */
int proto_socket_setup(void *sock, int linger_ms);

/* Sends one message; ident (ROUTER peers) may be NULL. body NULL sends {}.
 * bin NULL: no binary frame. flags: 0 or ZMQ_DONTWAIT. Returns 0 or -errno;
 * -EINTR (a signal) only when nothing of the message was queued. */
int proto_send(void *sock, const void *ident, size_t ident_len, const char *cmd, const json_t *body,
               const void *bin, size_t bin_len, int flags);
/* The same with the body already encoded: text must be one JSON object. */
/* The same with the binary frame borrowed, not copied: ZeroMQ sends from
 * bin and calls release(bin, hint) when done with it, from its I/O thread,
 * whether the send succeeded or not (so release must be thread-safe). */
int proto_send_text_borrowed(void *sock, const void *ident, size_t ident_len, const char *cmd,
                             const char *text, void *bin, size_t bin_len,
                             void (*release)(void *bin, void *hint), void *hint, int flags);
int proto_send_text(void *sock, const void *ident, size_t ident_len, const char *cmd,
                    const char *text, const void *bin, size_t bin_len, int flags);

/* The same with a binary header frame (the commands of proto_is_binary). */
int proto_send_bin(void *sock, const void *ident, size_t ident_len, const char *cmd,
                   const void *hdr, size_t hdr_len, const void *bin, size_t bin_len, int flags);

/* Receives one message (with identity when router). Returns 0; -EAGAIN when
 * nothing is waiting (flags ZMQ_DONTWAIT); -EPROTO for a malformed message
 * (fully drained, reason in err); other -errno from ZeroMQ, -EINTR only
 * before the first frame (a signal never splits a message). */
int proto_recv(void *sock, bool router, struct proto_msg *m, int flags, char *err, size_t errlen);

/* Body field helpers: 0 when present with the right type, else -EINVAL with a
 * message naming the field. */
int proto_get_int(const json_t *body, const char *key, int64_t *out, char *err, size_t errlen);
int proto_get_str(const json_t *body, const char *key, const char **out, char *err, size_t errlen);

/* Error reply helper: ERROR {"error": text, "code": code}. */
int proto_send_error(void *sock, const void *ident, size_t ident_len, const char *code,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* True if cmd is one of the commands above. */
bool proto_known_command(const char *cmd);
/* True for the commands whose frame 3 is a binary header, not JSON. */
bool proto_is_binary(const char *cmd);

/* ---- binary infer headers (docs/protocol.md) ----------------------------------------
 * Every header starts with version (u16, PROTO_BIN_VERSION) and flags (u16);
 * integers are little-endian, floats IEEE-754 binary32 little-endian. The
 * decoders check every length against the frame and return 0 or -EPROTO
 * with the reason in err; what they point at lies inside hdr. */
#define PROTO_BIN_VERSION 1
#define PROTO_BIN_HAS_ID 0x1  /* INFER_BIN, ANSWER_BIN: id is set */
#define PROTO_BIN_CLASSES 0x2 /* ANSWER_BIN, INFERRED_BIN: class ids follow */
#define PROTO_BIN_ERROR 0x4   /* INFERRED_BIN: an error text follows, no outputs */
#define PROTO_BIN_NAME_MAX 63
#define PROTO_INFER_REQ_FIXED 24 /* INFER_BIN from a client, before the name */
#define PROTO_ANSWER_FIXED 56    /* ANSWER_BIN, before the class ids */
#define PROTO_BATCH_FIXED 8      /* INFER_BIN to a trainer, before its records */
#define PROTO_INFERRED_FIXED 40  /* INFERRED_BIN, before its records */
#define PROTO_BIN_REC 16         /* one request of a batch: seq u64, rows u32, 0 u32 */

/* INFER_BIN, client -> broker; the rows (rows x D float32) are frame 4. */
struct proto_infer_req {
    bool has_id;
    int64_t id;
    uint32_t rows;
    uint32_t deadline_ms; /* 0: the broker's default */
    char deployment[PROTO_BIN_NAME_MAX + 1];
};
/* Writes the header into buf (PROTO_INFER_REQ_FIXED + name bytes); returns
 * its length, or -EINVAL for a name of 0 or more than PROTO_BIN_NAME_MAX bytes. */
int proto_infer_req_encode(void *buf, size_t cap, const struct proto_infer_req *r);
int proto_infer_req_decode(const void *hdr, size_t len, struct proto_infer_req *r, char *err,
                           size_t errlen);

/* ANSWER_BIN, broker -> client; the outputs (rows x outputs float32) are frame 4. */
struct proto_answer {
    bool has_id, classes;
    int64_t id, run, epoch, generation;
    uint32_t rows, outputs, batch;
    float latency_us;
    const void *class_ids; /* decode: rows int32 when classes, inside hdr */
};
/* The fixed part into buf (PROTO_ANSWER_FIXED bytes); the class ids, as
 * int32 little-endian, follow it in the same frame. */
void proto_answer_encode(void *buf, const struct proto_answer *a);
int proto_answer_decode(const void *hdr, size_t len, struct proto_answer *a, char *err,
                        size_t errlen);

/* INFER_BIN broker -> trainer (head then n records) and INFERRED_BIN trainer
 * -> broker (head, n records, the class ids of every row when classes, the
 * error text when error). */
struct proto_batch {
    uint16_t flags;
    uint32_t n;
    int64_t generation, run, epoch; /* INFERRED_BIN */
    uint32_t outputs, forwards;     /* INFERRED_BIN */
    /* decode: */
    const unsigned char *recs; /* n records */
    uint64_t rows;             /* their rows together */
    const void *class_ids;     /* rows int32, or NULL */
    const char *error;         /* not NUL-terminated, error_len bytes, or NULL */
    size_t error_len;
};
/* The fixed part (PROTO_BATCH_FIXED or, inferred, PROTO_INFERRED_FIXED bytes). */
void proto_batch_encode(void *buf, const struct proto_batch *b, bool inferred);
int proto_batch_decode(const void *hdr, size_t len, bool inferred, struct proto_batch *b, char *err,
                       size_t errlen);
void proto_rec_put(void *p, uint64_t seq, uint32_t rows);
void proto_rec_get(const void *p, uint64_t *seq, uint32_t *rows);
void proto_put_i32(void *p, int32_t v);
int32_t proto_get_i32(const void *p);

#endif
