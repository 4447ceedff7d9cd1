/* Shared by the history commands (cmd_runs.c, cmd_show.c, cmd_metrics.c,
 * cmd_compare.c, cmd_rm.c, cmd_export.c; docs/history.md): opening the
 * database, the common options, tables, and how times and numbers read. */
#ifndef MLQ_CLI_HISTORY_H
#define MLQ_CLI_HISTORY_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "store.h"

/* ---- the database and run ids ---- */

/* Resolves the database (--db, else $MLQ_DB or db.path in the config, else
 * store_default_path()) and opens it, read-only unless writable. Returns
 * EXIT_OK, or the exit code after printing why: EXIT_UNAVAILABLE when there
 * is no database (with how to create one), EXIT_FAILURE_GENERIC otherwise. */
int history_open(const char *cmd, const char *db_flag, bool writable, struct store **out);
/* The path the last history_open resolved ("" before any). */
const char *history_path(void);
/* Parses a run id; prints a usage error and returns false if it is not one. */
bool history_parse_id(const char *cmd, const char *text, int64_t *id);
/* Parses n run ids; stops at the first that is not one (history_parse_id). */
bool history_parse_ids(const char *cmd, char **texts, int n, int64_t *ids);
/* Reads run id into *j (store_job_free it). Returns EXIT_OK, or after
 * printing why EXIT_NOT_FOUND ("no run ID") or EXIT_FAILURE_GENERIC. */
int history_job_get(const char *cmd, struct store *s, int64_t id, struct store_job *j);

/* ---- options ---- */

/* history_args' "go on": the arguments were fine, the command runs. */
#define HISTORY_PROCEED (-1)

/* What every history command takes: --db FILE, --json, --csv, --help. */
struct history_opts {
    const char *db;
    bool json, csv;
    int argi; /* argv index of the first operand */
};

/* A command's own options on top of the common ones. */
struct history_cmd {
    const char *name;          /* "runs": for messages */
    const char *shortopts;     /* getopt letters besides "h", e.g. "f"; NULL: none */
    const struct option *opts; /* its long options, {NULL} ended; NULL: none */
    bool no_csv;               /* --csv is not one of its options (export) */
    /* Takes one of opts (getopt's value and optarg); returns HISTORY_PROCEED,
     * or the exit code after printing why. NULL when opts is. */
    int (*option)(void *ctx, int ch, const char *arg);
    void *ctx;
    void (*usage)(FILE *out);
};

/* Parses argv (argv[0]: the command) into o and through cmd->option.
 * Returns HISTORY_PROCEED, EXIT_OK after --help (usage on stdout), or
 * EXIT_USAGE after an unknown option (usage on stderr). */
int history_args(const struct history_cmd *cmd, int argc, char **argv, struct history_opts *o);
/* history_args, then exactly one operand, a run id, into *id: else usage
 * on stderr (wrong count) or the id's error, and EXIT_USAGE. */
int history_args_id(const struct history_cmd *cmd, int argc, char **argv, struct history_opts *o,
                    int64_t *id);

/* The --db and --json lines of every usage text. */
extern const char history_common_help[];

/* ---- formatting ---- */

/* Columns to fit on stdout: $COLUMNS, the terminal's, 80, or 0 for a pipe. */
int history_term_width(void);
/* "4.2s", "3m05s", "2h10m", "1d04h"; "-" when negative or not finite. */
void history_fmt_duration(char *buf, size_t len, double secs);
/* "just now", "12 s ago", "3 min ago", "2 h ago", "5 d ago"; "-" for no time. */
void history_fmt_ago(char *buf, size_t len, double t, double now);
/* Local "YYYY-MM-DD HH:MM:SS"; "-" for no time. */
void history_fmt_time(char *buf, size_t len, double t);
/* A metric: 4 decimals, %.4g when very small or large, nan, inf. */
void history_fmt_value(char *buf, size_t len, double v);
/* For --json and --csv: the shortest text that reads back (strtod) as v
 * exactly, at most 17 significant digits, always with a '.' or an exponent
 * ("0.1", "0.83259999752044678", "3.0", "1e-07"); "nan", "inf", "-inf". */
void history_fmt_exact(char *buf, size_t len, double v);
/* Seconds from start to finish (to now while running); -1 before it starts. */
double history_job_duration(const struct store_job *j, double now);

/* JSON numbers for times: null when there is none yet. */
json_t *history_json_time(double t);
/* JSON numbers: null for NaN and infinities (JSON has none). */
json_t *history_json_num(double v);
/* The one-line form of a train spec's model (trainer/spec_model.h:
 * "conv32-bn-pool-fc128-fc10", "784-128-64-10"), or NULL when spec is not
 * a train spec that parses. */
const char *history_model_line(json_t *spec, char *buf, size_t len);
/* The LAYERS cell of a run from its params' model.layers value: a list of
 * widths as stored ("[784,128,64,10]"), typed layers in their one-line form. */
const char *history_layers_cell(const char *layers_value, char *buf, size_t len);

/* Prints doc indented, keys in insertion order, and releases it. */
void history_json_print(json_t *doc);
/* json_dumps(doc, flags) with every real in history_fmt_exact's form, so
 * that a double read back from the text is the one printed. Free the
 * result with free(); NULL when out of memory. */
char *history_json_dumps(const json_t *doc, size_t flags);

/* ---- tables ---- */

#define HISTORY_TABLE_MAX_COLS 24

/* Aligned columns for people, or CSV. */
struct history_table {
    int ncols;
    const char *head[HISTORY_TABLE_MAX_COLS]; /* not owned */
    bool right[HISTORY_TABLE_MAX_COLS];       /* numbers align right */
    size_t nrows, cap;
    char **cells; /* nrows * ncols, owned */
    bool *mark;   /* per row: highlight (compare) */
};

void history_table_init(struct history_table *t, int ncols);
/* Copies row (ncols cells; NULL reads as ""). 0 or -ENOMEM. */
int history_table_add(struct history_table *t, char **row, bool mark);
void history_table_free(struct history_table *t);
/* Head in bold and marked rows highlighted on a terminal (unless NO_COLOR);
 * the widest columns cut with an ellipsis to fit history_term_width(). */
void history_table_print(const struct history_table *t);
/* The head line, then one line per row. */
void history_table_csv(const struct history_table *t);
/* One CSV field, quoted when it needs to be, then ',' or (last) '\n'. */
void history_csv_field(const char *s, bool last);

#endif
