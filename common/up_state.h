/* What a running `mlq up` tells the other mlq commands: the endpoint its
 * broker listens on and the database it writes, in a small JSON file that
 * lives while it runs (docs/configuration.md, "mlq up's endpoint").
 *
 * The file is up.json beside the keys mlq up makes and pins,
 * $XDG_CONFIG_HOME/mlq (~/.config/mlq): whatever keeps those keys apart (a
 * test's XDG_CONFIG_HOME, another user's home) keeps mlq up's endpoint
 * apart too, and a test's mlq up never replaces the file of the user's own.
 * It is written once mlq up has started its programs and removed when it
 * stops; one left by an mlq up that was killed is ignored, as its process
 * is gone (or is another program: the file names the executable too).
 *
 * Precedence: a flag, the environment and the config file all win over it;
 * it wins only over the built-in defaults of broker.endpoint and db.path. */
#ifndef MLQ_UP_STATE_H
#define MLQ_UP_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct up_state {
    long pid;                      /* mlq up's process */
    char exe[CONFIG_STR_MAX];      /* its executable (/proc/PID/exe), "" if unknown */
    char endpoint[CONFIG_STR_MAX]; /* where mlq connects to its broker */
    char db[CONFIG_STR_MAX];       /* the broker's database */
    bool keys;                     /* CurveZMQ (the keys in ~/.config/mlq) */
    double started;                /* seconds since the epoch */
};

/* The file's path into buf. 0, or -ENOENT without $XDG_CONFIG_HOME and $HOME. */
int up_state_path(char *buf, size_t len);

/* Writes s (its pid and exe are this process's) atomically, making the
 * directory (0700) if needed. 0 or -errno with err naming the file. */
int up_state_write(struct up_state *s, char *err, size_t errlen);

/* Removes the file if it is pid's (another mlq up may have written it since). */
void up_state_remove(long pid);

/* Reads the file of a running mlq up. 0; -ENOENT when there is none, or its
 * process is gone; -EINVAL when it does not parse. */
int up_state_read(struct up_state *out);

/* Where broker.endpoint and db.path still have their built-in defaults,
 * the running mlq up's values, with CONFIG_SRC_UP as their origin and the
 * file in c->up_file. Returns the number of values taken (0 without one). */
int up_state_apply(struct config *c);

#endif
