/* mlq's client of the broker (cli.h): one DEALER socket per request, CURVE
 * when the broker's key is known, handshake failures said plainly, broker
 * ERROR codes mapped to exit codes; and the argument parsing the commands
 * that only ask the broker share. Used by cmd_jobs.c, cmd_deploy.c,
 * cmd_sweep.c and cmd_top.c. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "cli.h"
#include "config.h"
#include "history.h"
#include "keys.h"
#include "proto.h"

#define REQUEST_TIMEOUT_MS 5000
#define RESEND_MS 1000 /* cli_broker_call_resend's interval */

/* A broker ERROR code as mlq's exit code (docs/cli.md). */
static int exit_of_code(const char *code)
{
    if (!code) return EXIT_FAILURE_GENERIC;
    if (strcmp(code, "bad_spec") == 0 || strcmp(code, "bad_request") == 0 ||
        strcmp(code, "bad_input") == 0 || strcmp(code, "too_large") == 0)
        return EXIT_USAGE;
    if (strcmp(code, "not_found") == 0) return EXIT_NOT_FOUND;
    if (strcmp(code, "stopping") == 0 || strcmp(code, "timeout") == 0 ||
        strcmp(code, "overloaded") == 0 || strcmp(code, "unavailable") == 0)
        return EXIT_UNAVAILABLE;
    return EXIT_FAILURE_GENERIC;
}

static const char *broker_endpoint(const char *flag)
{
    static struct config cfg;
    char err[512];
    if (flag) return flag;
    if (cli_config_load(&cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "mlq: %s\n", err);
        return getenv("MLQ_BROKER") ? getenv("MLQ_BROKER") : "tcp://127.0.0.1:5555";
    }
    return cfg.broker_endpoint;
}

volatile int cli_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_catch_interrupt(void)
{
    /* No SA_RESTART: the poll and sleep in progress return at once. */
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

static int timeout_override_ms; /* cli_set_timeout_ms */

static int request_timeout_ms(void)
{
    if (timeout_override_ms > 0) return timeout_override_ms;
    const char *v = getenv("MLQ_TIMEOUT_MS");
    int ms = v ? atoi(v) : 0;
    return ms > 0 ? ms : REQUEST_TIMEOUT_MS;
}

void cli_set_timeout_ms(int ms)
{
    timeout_override_ms = ms;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* How mlq speaks to the broker (keys.h): CURVE when the broker's key is known
 * (broker.public_key, or broker.key next to client.secret_key, by default
 * in ~/.config/mlq). NULL after an error, which is printed. */
static const struct keys_client *client_keys(void)
{
    static struct keys_client kc;
    static int state; /* 0 not yet, 1 resolved, -1 failed */
    if (state) return state > 0 ? &kc : NULL;
    struct config cfg;
    char err[1024], dir[4096], def[4200] = "";
    state = -1;
    if (cli_config_load(&cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "mlq: %s\n", err);
        return NULL;
    }
    if (keys_user_dir(dir, sizeof dir) == 0)
        snprintf(def, sizeof def, "%s/mlq%s", dir, KEYS_SECRET_EXT);
    if (keys_client_resolve(&kc, cfg.client_secret_key, def[0] ? def : NULL, cfg.broker_public_key,
                            err, sizeof err) != 0) {
        fprintf(stderr, "mlq: %s\n", err);
        return NULL;
    }
    state = 1;
    return &kc;
}

/* A monitor of sock's handshakes, so that a refusal is said at once and
 * plainly instead of as a timeout. NULL if it cannot be made. */
static void *monitor_open(void *ctx, void *sock)
{
    char addr[64];
    snprintf(addr, sizeof addr, "inproc://mlq-monitor-%p", sock);
    if (zmq_socket_monitor(sock, addr,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0)
        return NULL;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (mon && zmq_connect(mon, addr) != 0) {
        zmq_close(mon);
        mon = NULL;
    }
    return mon;
}

/* Reads one monitor event: 1 with *event and *value, 0 when none waits. */
static int monitor_event(void *mon, uint16_t *event, uint32_t *value)
{
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return 0;
    }
    int got = zmq_msg_size(&f) == 6;
    if (got) {
        memcpy(event, zmq_msg_data(&f), 2);
        memcpy(value, (char *)zmq_msg_data(&f) + 2, 4);
    }
    while (zmq_msg_more(&f) && zmq_msg_recv(&f, mon, 0) >= 0)
        ;
    zmq_msg_close(&f);
    return got;
}

/* Says why a handshake failed; returns true when it is worth no retry. */
static bool handshake_refused(const char *endpoint, const struct keys_client *k, uint16_t event,
                              uint32_t value)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        fprintf(stderr,
                "mlq: the broker at %s refused this key (%s, %s): ask its admin to add the "
                "public key (%.*s%s) to its users' directory\n",
                endpoint, k && k->curve ? k->own.name : "none", k ? k->own_path : "",
                (int)(strlen(k ? k->own_path : "") - strlen(KEYS_SECRET_EXT)), k ? k->own_path : "",
                KEYS_PUBLIC_EXT);
        return true;
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        if (k && k->curve)
            fprintf(stderr,
                    "mlq: the broker at %s does not use keys, but this mlq has the broker's key "
                    "pinned (%s): remove it or give the broker its key\n",
                    endpoint, k->broker_from);
        else
            fprintf(stderr,
                    "mlq: the broker at %s requires keys: run 'mlq keygen', have the public "
                    "key added to the broker, and put the broker's public key in "
                    "~/.config/mlq/broker.key (docs/security.md)\n",
                    endpoint);
        return true;
    }
    return false;
}

int cli_broker_open(struct cli_broker *b, const char *endpoint)
{
    memset(b, 0, sizeof *b);
    b->endpoint = endpoint;
    b->keys = client_keys();
    if (!b->keys) return EXIT_FAILURE_GENERIC;
    char kerr[256];
    b->ctx = zmq_ctx_new();
    b->sock = b->ctx ? zmq_socket(b->ctx, ZMQ_DEALER) : NULL;
    if (b->sock && b->keys->curve &&
        keys_client_setup(b->sock, &b->keys->own, b->keys->broker_z85, kerr, sizeof kerr)) {
        fprintf(stderr, "mlq: %s\n", kerr);
        cli_broker_close(b);
        return EXIT_FAILURE_GENERIC;
    }
    /* Before the connect, so that no handshake goes unseen. */
    b->mon = b->sock ? monitor_open(b->ctx, b->sock) : NULL;
    /* A send that cannot go within the request timeout fails (EAGAIN)
     * rather than blocking for ever (cli_broker_wait says why first). */
    int ms = request_timeout_ms();
    if (!b->sock || proto_socket_setup(b->sock, 0) != 0 ||
        zmq_setsockopt(b->sock, ZMQ_SNDTIMEO, &ms, sizeof ms) != 0 ||
        zmq_connect(b->sock, endpoint) != 0) {
        fprintf(stderr, "mlq: cannot use broker endpoint %s: %s\n", endpoint, zmq_strerror(errno));
        cli_broker_close(b);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

void cli_broker_close(struct cli_broker *b)
{
    if (b->mon) zmq_close(b->mon);
    if (b->sock) zmq_close(b->sock);
    if (b->ctx) zmq_ctx_term(b->ctx);
    b->mon = b->sock = b->ctx = NULL;
}

/* cli_broker_wait, until a time on mono_s(). A handshake the broker refuses
 * ends the wait at once: libzmq drops a connection whose handshake failed
 * on a protocol error and does not try again, so a send would block for ever
 * on a DEALER left without a peer, and no reply would come. */
static int wait_until(struct cli_broker *b, short events, double until)
{
    for (;;) {
        zmq_pollitem_t items[2] = {{.socket = b->sock, .events = events},
                                   {.socket = b->mon, .events = ZMQ_POLLIN}};
        int ms = (int)((until - mono_s()) * 1000.0) + 1;
        int n = zmq_poll(items, b->mon ? 2 : 1, ms > 0 ? ms : 0);
        if (n > 0 && (items[0].revents & events)) return 1;
        uint16_t ev;
        uint32_t val;
        while (b->mon && monitor_event(b->mon, &ev, &val))
            if (handshake_refused(b->endpoint, b->keys, ev, val)) return -EXIT_UNAVAILABLE;
        if ((n < 0 && errno != EINTR) || cli_interrupted || mono_s() >= until) return 0;
    }
}

int cli_broker_wait(struct cli_broker *b, short events, int ms)
{
    return wait_until(b, events, mono_s() + ms / 1000.0);
}

void cli_broker_unreachable(const struct cli_broker *b)
{
    fprintf(stderr,
            "mlq: cannot reach the broker at %s: is mlq-broker running? (mlq up starts one)\n",
            b->endpoint);
    if (b->keys && b->keys->curve)
        fprintf(stderr, "mlq: (with keys: if it runs, its key may not be the one pinned in %s)\n",
                b->keys->broker_from);
}

/* One request and its answer; with resend_ms > 0 the request is sent again
 * each resend_ms until an answer or the timeout (only for requests that are
 * safe to repeat: a SUBMIT with a request id). ZeroMQ reconnects underneath,
 * so a broker that restarted (killed between its commit and its reply) gets
 * the retry. error: NULL prints an ERROR reply's text; else it gets the
 * ERROR body. */
static int broker_call_resend(const char *endpoint, const char *cmd, json_t *body, int resend_ms,
                              json_t **reply, json_t **error)
{
    *reply = NULL;
    if (error) *error = NULL;
    struct cli_broker b;
    int code = cli_broker_open(&b, endpoint);
    if (code != EXIT_OK) goto out;
    double deadline = mono_s() + request_timeout_ms() / 1000.0;
    int w;
    for (;;) {
        double resend_at = resend_ms > 0 ? mono_s() + resend_ms / 1000.0 : deadline;
        double until = resend_at < deadline ? resend_at : deadline;
        w = wait_until(&b, ZMQ_POLLOUT, until);
        if (w > 0 && proto_send(b.sock, NULL, 0, cmd, body, NULL, 0, ZMQ_DONTWAIT) != 0) {
            w = 0; /* it was writable: a send that fails now will not go later */
            break;
        }
        if (w > 0) w = wait_until(&b, ZMQ_POLLIN, until);
        if (w != 0 || cli_interrupted || resend_ms <= 0 || mono_s() >= deadline) break;
    }
    if (w < 0) {
        code = -w;
        goto out;
    }
    if (cli_interrupted) {
        code = EXIT_INTERRUPTED;
        goto out;
    }
    if (w == 0) {
        cli_broker_unreachable(&b);
        code = EXIT_UNAVAILABLE;
        goto out;
    }
    struct proto_msg m;
    char err[256];
    if (proto_recv(b.sock, false, &m, 0, err, sizeof err) != 0) {
        fprintf(stderr, "mlq: bad reply from the broker at %s: %s\n", endpoint, err);
        code = EXIT_FAILURE_GENERIC;
        goto out;
    }
    if (strcmp(m.cmd, PROTO_OK) == 0) {
        *reply = json_incref(m.body);
        code = EXIT_OK;
    } else {
        const char *text = json_string_value(json_object_get(m.body, "error"));
        const char *ecode = json_string_value(json_object_get(m.body, "code"));
        if (error)
            *error = json_incref(m.body);
        else
            fprintf(stderr, "mlq: %s\n", text ? text : "the broker refused the request");
        code = exit_of_code(ecode);
    }
    proto_msg_clear(&m);
out:
    json_decref(body);
    cli_broker_close(&b);
    return code;
}

int cli_broker_exit_code(const char *code)
{
    return exit_of_code(code);
}

int cli_request_timeout_ms(void)
{
    return request_timeout_ms();
}

const char *cli_broker_endpoint(const char *flag)
{
    return broker_endpoint(flag);
}

int cli_broker_call(const char *endpoint, const char *cmd, json_t *body, json_t **reply)
{
    return broker_call_resend(endpoint, cmd, body, 0, reply, NULL);
}

int cli_broker_call_error(const char *endpoint, const char *cmd, json_t *body, json_t **reply,
                          json_t **error)
{
    return broker_call_resend(endpoint, cmd, body, 0, reply, error);
}

int cli_broker_call_resend(const char *endpoint, const char *cmd, json_t *body, json_t **reply)
{
    return broker_call_resend(endpoint, cmd, body, RESEND_MS, reply, NULL);
}

void cli_print_json(const json_t *o)
{
    char *text = history_json_dumps(o, JSON_COMPACT);
    if (text) {
        puts(text);
        free(text);
    }
}

int cli_list_args(int argc, char **argv, const char *usage, enum cli_name name_mode,
                  const char **name, const char **broker, bool *json)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'b')
            *broker = optarg;
        else if (c == 'j')
            *json = true;
        else if (c == 'h') {
            printf("usage: %s\n", usage);
            return -1;
        } else {
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    int names = argc - optind;
    if (names > (name_mode == CLI_NO_NAME ? 0 : 1) || (name_mode == CLI_NAME && names != 1)) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    if (name) *name = names ? argv[optind] : NULL;
    return EXIT_OK;
}
