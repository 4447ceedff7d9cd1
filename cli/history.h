/* Shared by the history commands (cmd_history.c, cmd_export.c): opening the
 * database the way every history command does. */
#ifndef MLQ_CLI_HISTORY_H
#define MLQ_CLI_HISTORY_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* Resolves the database (--db, else $MLQ_DB or db.path in the config, else
 * store_default_path()) and opens it, read-only unless writable. Returns
 * EXIT_OK, or the exit code after printing why: EXIT_UNAVAILABLE when there
 * is no database (with how to create one), EXIT_FAILURE_GENERIC otherwise. */
int history_open(const char *cmd, const char *db_flag, bool writable, struct store **out);
/* The path the last history_open resolved ("" before any). */
const char *history_path(void);
/* Parses a run id; prints a usage error and returns false if it is not one. */
bool history_parse_id(const char *cmd, const char *text, int64_t *id);

#endif
