/* mlq's side of a dataset's transfer to and from the broker (docs/protocol.md,
 * "Pushed datasets"): one DEALER, at most DATASET_WINDOW chunks in flight. */
#ifndef MLQ_CLI_DATASET_TRANSFER_H
#define MLQ_CLI_DATASET_TRANSFER_H

#include <stdbool.h>
#include <stdint.h>

struct dataset_pushed {
    char name[129];
    char sha256[65];
    int64_t size;
    int64_t resumed_at; /* where the push started (a .part on the broker), bytes */
    int64_t sent;       /* bytes sent by this push (0: the broker had them) */
    bool have;          /* the broker already held these bytes */
    double seconds;     /* of the transfer, hashing the file not counted */
};

/* Pushes the file at path under name (replace: the name may move from other
 * bytes). Returns EXIT_OK with *out, or the exit code after printing why.
 * gate, if not NULL, is called once the file is hashed and before a byte
 * goes out: an exit code other than EXIT_OK ends the push with it (the
 * caller's check of the file runs while the file is hashed). */
int dataset_push_file(const char *endpoint, const char *path, const char *name, bool replace,
                      int (*gate)(void *), void *gate_arg, struct dataset_pushed *out);

/* Fetches the object sha256 into output (atomically), each chunk and the
 * whole file verified. *size gets its bytes. EXIT_OK or the exit code after
 * printing why. */
int dataset_fetch_file(const char *endpoint, const char *sha256, const char *output, int64_t *size);

#endif
