/* The mlq command: one handler per subcommand, each in a cmd_*.c file.
 * A handler gets argv starting at the subcommand's name and returns the exit
 * code (docs/cli.md lists them). */
#ifndef MLQ_CLI_H
#define MLQ_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* Exit codes, a public interface (docs/cli.md). */
enum cli_exit {
    EXIT_OK = 0,
    EXIT_FAILURE_GENERIC = 1, /* an error; the message says which */
    EXIT_USAGE = 2,           /* bad flags or arguments */
    EXIT_JOB_FAILED = 3,      /* wait: the job failed */
    EXIT_JOB_CANCELLED = 4,   /* wait: the job was cancelled */
    EXIT_NOT_FOUND = 5,       /* no such run or job */
    EXIT_UNAVAILABLE = 6,     /* broker unreachable, database missing */
    EXIT_INTERRUPTED = 130,   /* wait: Ctrl-C detached it; the job goes on */
};

struct cli_command {
    const char *name;
    const char *summary; /* one line for `mlq --help` */
    int (*run)(int argc, char **argv);
};

/* The table, defined in main.c. */
extern const struct cli_command cli_commands[];

/* Command handlers (each defined in its cmd_*.c). */
int cmd_config(int argc, char **argv);
int cmd_dataset(int argc, char **argv);
/* mlq dataset push (cmd_dataset.c), for mlq submit --push too: checks the
 * file as mlq dataset info does, pushes it as name and prints the result
 * (as JSON, or nothing when quiet); sha256 (may be NULL) gets its hash.
 * Returns the exit code. */
struct spec_dataset;
int cli_dataset_push(const char *path, const char *name, bool replace,
                     const struct spec_dataset *src, const char *broker, bool as_json,
                     char sha256[65], bool quiet);
int cmd_up(int argc, char **argv);
/* History (cmd_runs.c, cmd_show.c, cmd_metrics.c, cmd_compare.c, cmd_export.c,
 * cmd_rm.c; history.c; docs/history.md). */
int cmd_runs(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_report(int argc, char **argv); /* cmd_report.c, svg.c */
int cmd_logs(int argc, char **argv);   /* cmd_logs.c */
int cmd_export(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_submit(int argc, char **argv); /* cmd_jobs.c */
int cmd_wait(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_whoami(int argc, char **argv);
int cmd_deploy(int argc, char **argv); /* cmd_deploy.c, docs/serving.md */
int cmd_deployments(int argc, char **argv);
int cmd_undeploy(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_keygen(int argc, char **argv); /* cmd_keys.c */
int cmd_top(int argc, char **argv);    /* cmd_top.c */

/* Talking to the broker, for commands outside cmd_jobs.c (mlq top): the
 * endpoint from --broker (flag, may be NULL), $MLQ_BROKER or the
 * configuration; and one request (body stolen) answered by OK, whose body
 * goes to *reply (json_decref it). Returns EXIT_OK or the exit code after
 * printing why on standard error (EXIT_UNAVAILABLE: no answer). */
struct json_t;
const char *cli_broker_endpoint(const char *flag);
/* config_load, then a running mlq up's broker.endpoint and db.path where
 * neither a flag, the environment nor the file gave one (common/up_state.h):
 * what every command but mlq up itself reads. */
struct config;
int cli_config_load(struct config *cfg, const char *file, char *err, size_t errlen);
int cli_broker_call(const char *endpoint, const char *cmd, struct json_t *body,
                    struct json_t **reply);
/* Makes SIGINT set cli_interrupted instead of killing mlq: a call it
 * interrupts returns EXIT_INTERRUPTED without a message, so the caller can
 * say what Ctrl-C left behind (mlq wait: the job goes on). */
extern volatile int cli_interrupted;
void cli_catch_interrupt(void);
/* A DEALER connected to the broker with this mlq's keys, for an exchange of
 * many messages (dataset transfers, cli/dataset_transfer.c), and a monitor of
 * its handshakes. */
struct keys_client;
struct cli_broker {
    void *ctx, *sock, *mon;
    const char *endpoint;
    const struct keys_client *keys;
};
/* EXIT_OK, or the exit code after printing why (b is then closed). */
int cli_broker_open(struct cli_broker *b, const char *endpoint);
/* Waits at most ms for the socket to be ready for events (ZMQ_POLLIN: a
 * message waits; ZMQ_POLLOUT: one can be sent): 1 when it is, 0 when not
 * (timeout or Ctrl-C), or -EXIT_UNAVAILABLE after saying why the broker
 * refused the handshake. Wait for ZMQ_POLLOUT before a send: a DEALER
 * whose handshake was refused has no peer, and a send would block. */
int cli_broker_wait(struct cli_broker *b, short events, int ms);
/* "cannot reach the broker", with a hint about keys when they are used. */
void cli_broker_unreachable(const struct cli_broker *b);
void cli_broker_close(struct cli_broker *b);
int cli_broker_exit_code(const char *code); /* an ERROR's code as an exit code */
int cli_request_timeout_ms(void);           /* --timeout-ms, MLQ_TIMEOUT_MS or 5000 */
int cmd_keys(int argc, char **argv);
int cmd_sweep(int argc, char **argv); /* cmd_sweep.c (docs/sweeps.md) */
int cmd_tag(int argc, char **argv);
int cmd_note(int argc, char **argv);

/* The broker client of cmd_jobs.c, shared with cmd_sweep.c. Calls return
 * an exit code (broker ERROR codes mapped as docs/jobs.md says); body is
 * stolen, *reply the OK body (json_decref). */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
/* cli_broker_endpoint and cli_broker_call: above. */
/* The same, but an ERROR reply is not printed: its body ({"error", "code"})
 * goes to *error (json_decref; NULL otherwise) and the exit code its code
 * maps to is returned. Other failures (no answer) are printed as above. */
int cli_broker_call_error(const char *endpoint, const char *cmd, json_t *body, json_t **reply,
                          json_t **error);
/* The same, sent again each second while unanswered (idempotent requests). */
int cli_broker_call_resend(const char *endpoint, const char *cmd, json_t *body, json_t **reply);
void cli_new_request_id(char *out, size_t len);
/* Validates a train spec (doc stolen), makes its paths absolute and checks
 * its memory: the canonical spec, or NULL after printing why. */
json_t *cli_finish_spec(json_t *doc);
void cli_print_json(const json_t *o);
/* mlq generate --deployment NAME (cmd_deploy.c): spec's prompt, tokens,
 * temperature, top_k and seed (a validated generate spec) drawn one token
 * per INFER from the deployment's language model; prints as mlq generate
 * RUN does. Returns an exit code. */
struct mlq_spec;
int cli_generate_deployed(const char *name, const struct mlq_spec *spec, const char *broker,
                          const char *timeout, bool json);
/* The wait of every later request, ms (a command's --timeout-ms; 0: MLQ_TIMEOUT_MS or 5000). */
void cli_set_timeout_ms(int ms);
/* [--broker E] [--json] and, as name_mode says, a NAME operand: parses
 * argv into *name (may be NULL with CLI_NO_NAME), *broker and *json.
 * Returns EXIT_OK, -1 after --help (printed; exit 0), or EXIT_USAGE after
 * printing the usage. */
enum cli_name { CLI_NO_NAME, CLI_OPTIONAL_NAME, CLI_NAME };
int cli_list_args(int argc, char **argv, const char *usage, enum cli_name name_mode,
                  const char **name, const char **broker, bool *json);
/* --experiment ('e'), --tag ('t'), --after ('a') into a SUBMIT/SWEEP body
 * object; prints the error (prefixed with cmd) and returns -EINVAL. */
int cli_meta_option(json_t *extra, const char *cmd, char which, const char *arg);

#endif
