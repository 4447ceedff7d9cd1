/* mlq top: a live view of the broker, redrawn every second in the terminal
 * (plain ANSI: the alternate screen, no curses): the queue by state, every
 * trainer with its job, epoch, samples/s and last metric, the running jobs
 * with progress bars, the next queued jobs. q (or Ctrl-C) quits and leaves
 * the terminal as it was. Without a terminal, or with --once, one frame on
 * standard output (docs/jobs.md, "mlq top"). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <jansson.h>

#include "cli.h"
#include "proto.h"

#define TOP_RUNNING_MAX 64 /* running jobs asked for their metrics each refresh */

static volatile sig_atomic_t top_stop;

static void on_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* ---- a frame, as lines cut to the width ---- */

struct frame {
    char *p;
    size_t n, cap;
    int width, lines, max_lines;
    bool plain; /* lines for a pipe: no erase-to-end, no carriage return */
    bool oom;
};

static void frame_line(struct frame *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void frame_line(struct frame *f, const char *fmt, ...)
{
    if (f->oom || f->lines >= f->max_lines) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* cut to the width in code points (the frame is ASCII but for names) */
    size_t cut = 0, cps = 0;
    while (line[cut] && cps < (size_t)f->width) {
        cut++;
        while ((line[cut] & 0xc0) == 0x80)
            cut++;
        cps++;
    }
    line[cut] = '\0';
    size_t need = cut + 8;
    if (f->n + need + 1 > f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8192;
        while (cap < f->n + need + 1)
            cap *= 2;
        char *p = realloc(f->p, cap);
        if (!p) {
            f->oom = true;
            return;
        }
        f->p = p;
        f->cap = cap;
    }
    f->n +=
        (size_t)snprintf(f->p + f->n, f->cap - f->n, "%s%s", line, f->plain ? "\n" : "\033[K\r\n");
    f->lines++;
}

/* ---- what the broker says ---- */

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long jint(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* A metric's last value from a STATUS reply; NaN if none. */
static double metric(const json_t *metrics, const char *key, long long *epoch)
{
    json_t *m = json_object_get(metrics, key);
    json_t *v = json_object_get(m, "value");
    if (epoch && m) {
        long long e = (long long)json_integer_value(json_object_get(m, "epoch"));
        if (e > *epoch) *epoch = e;
    }
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* What a running job has reported: its epoch, speed and last metric. */
struct progress {
    long long id, epoch, epochs;
    double samples_per_s;
    char last[64]; /* "val_loss 0.4211" */
};

static void progress_of(const json_t *status, struct progress *p)
{
    json_t *m = json_object_get(status, "metrics");
    static const char *const keys[] = {"val_loss", "train_loss", "val_accuracy", "loss"};
    p->epoch = 0;
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) metric(m, k, &p->epoch);
    p->samples_per_s = metric(m, "samples_per_s", NULL);
    p->last[0] = '\0';
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !p->last[0]; i++) {
        double x = metric(m, keys[i], NULL);
        if (!isnan(x)) snprintf(p->last, sizeof p->last, "%s %.4f", keys[i], x);
    }
}

static void fmt_rate(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (v >= 1e6)
        snprintf(buf, len, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%.1fk", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
}

static void bar(char *buf, int width, long long done, long long total)
{
    int fill = total > 0 ? (int)((double)width * (double)done / (double)total + 1e-9) : 0;
    if (fill > width) fill = width;
    for (int i = 0; i < width; i++)
        buf[i] = i < fill ? '#' : '-';
    buf[width] = '\0';
}

/* One frame from the broker's QUEUE, WORKERS and each running job's STATUS.
 * Returns EXIT_OK, or the broker call's exit code (the frame then says so). */
static int build_frame(struct frame *f, const char *endpoint)
{
    char clock[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    frame_line(f, "mlq top  %s  %s  (q quits)", endpoint, clock);
    json_t *queue = NULL, *workers = NULL;
    int rc = cli_broker_call(endpoint, PROTO_QUEUE, json_object(), &queue);
    if (rc == EXIT_OK) rc = cli_broker_call(endpoint, PROTO_WORKERS, json_object(), &workers);
    if (rc != EXIT_OK) {
        frame_line(f, "%s", "");
        frame_line(f, "cannot reach the broker at %s%s", endpoint,
                   rc == EXIT_UNAVAILABLE ? ": is mlq-broker running? (mlq up starts one)" : "");
        frame_line(f, "(trying again every second)");
        json_decref(queue);
        return rc;
    }
    json_t *counts = json_object_get(queue, "counts");
    frame_line(f,
               "queue: %lld queued, %lld running, %lld succeeded, %lld failed, %lld cancelled, "
               "%lld stopped",
               jint(counts, "queued"), jint(counts, "running"), jint(counts, "succeeded"),
               jint(counts, "failed"), jint(counts, "cancelled"), jint(counts, "stopped"));

    /* the running jobs' progress, asked once each */
    struct progress prog[TOP_RUNNING_MAX];
    size_t nprog = 0, i;
    json_t *j;
    json_array_foreach(json_object_get(queue, "jobs"), i, j)
    {
        if (strcmp(jstr(j, "state"), "running") != 0 || nprog == TOP_RUNNING_MAX) continue;
        struct progress *p = &prog[nprog];
        memset(p, 0, sizeof *p);
        p->id = jint(j, "id");
        p->epochs = jint(j, "epochs");
        p->samples_per_s = NAN;
        json_t *st = NULL;
        if (cli_broker_call(endpoint, PROTO_STATUS, json_pack("{s:I}", "id", (json_int_t)p->id),
                            &st) == EXIT_OK)
            progress_of(st, p);
        json_decref(st);
        nprog++;
    }

    frame_line(f, "%s", "");
    frame_line(f, "%-16s %-6s %6s %11s %10s  %s", "TRAINER", "STATE", "JOB", "EPOCH", "SAMPLES/S",
               "LAST METRIC");
    json_t *t;
    size_t ntrainers = json_array_size(json_object_get(workers, "trainers"));
    json_array_foreach(json_object_get(workers, "trainers"), i, t)
    {
        long long job = jint(t, "job");
        const struct progress *p = NULL;
        for (size_t k = 0; k < nprog && job; k++)
            if (prog[k].id == job) p = &prog[k];
        char jobs[24] = "-", ep[32] = "-", rate[24] = "-";
        if (job) snprintf(jobs, sizeof jobs, "%lld", job);
        if (p && p->epochs) snprintf(ep, sizeof ep, "%lld/%lld", p->epoch, p->epochs);
        if (p) fmt_rate(rate, sizeof rate, p->samples_per_s);
        frame_line(f, "%-16s %-6s %6s %11s %10s  %s", jstr(t, "name"), jstr(t, "state"), jobs, ep,
                   rate, p ? p->last : "");
    }
    if (!ntrainers) frame_line(f, "(no trainers connected)");

    /* sweeps with trials left: how many their scheduler stopped so far */
    json_t *sweeps = json_object_get(queue, "sweeps");
    if (json_array_size(sweeps)) {
        frame_line(f, "%s", "");
        frame_line(f, "SWEEPS");
        json_array_foreach(sweeps, i, j)
        {
            json_t *c = json_object_get(j, "counts");
            const char *name = jstr(j, "name");
            frame_line(f,
                       "sweep %-4lld %-14.14s %-6s %lld trials: %lld running, %lld queued, %lld "
                       "stopped, %lld succeeded, %lld failed, %lld cancelled",
                       jint(j, "id"), *name ? name : "-", jstr(j, "scheduler"), jint(j, "trials"),
                       jint(c, "running"), jint(c, "queued"), jint(c, "stopped"),
                       jint(c, "succeeded"), jint(c, "failed"), jint(c, "cancelled"));
        }
    }

    frame_line(f, "%s", "");
    frame_line(f, "RUNNING");
    int bw = f->width - 64;
    bw = bw < 10 ? 10 : bw > 40 ? 40 : bw;
    size_t shown = 0;
    json_array_foreach(json_object_get(queue, "jobs"), i, j)
    {
        if (strcmp(jstr(j, "state"), "running") != 0) continue;
        const struct progress *p = NULL;
        for (size_t k = 0; k < nprog; k++)
            if (prog[k].id == jint(j, "id")) p = &prog[k];
        char b[64];
        long long epoch = p ? p->epoch : 0, epochs = jint(j, "epochs");
        bar(b, bw, epoch, epochs);
        const char *name = jstr(j, "name");
        frame_line(f, "job %-5lld %-14.14s [%s] %3lld%% %lld/%lld  %s  %s", jint(j, "id"),
                   *name ? name : jstr(j, "kind"), b, epochs > 0 ? epoch * 100 / epochs : 0LL,
                   epoch, epochs, jstr(j, "trainer"), p ? p->last : "");
        shown++;
    }
    if (!shown) frame_line(f, "(none)");

    frame_line(f, "%s", "");
    frame_line(f, "QUEUED (next first)");
    shown = 0;
    json_array_foreach(json_object_get(queue, "jobs"), i, j)
    {
        if (strcmp(jstr(j, "state"), "queued") != 0) continue;
        const char *name = jstr(j, "name");
        frame_line(f, "job %-5lld %-8s priority %-4lld attempts %lld/%lld  %s", jint(j, "id"),
                   jstr(j, "kind"), jint(j, "priority"), jint(j, "attempts"),
                   jint(j, "max_attempts"), name);
        shown++;
    }
    if (!shown) frame_line(f, "(none)");
    json_decref(queue);
    json_decref(workers);
    return EXIT_OK;
}

static void term_size(int *w, int *h)
{
    struct winsize ws;
    *w = 80;
    *h = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        *w = ws.ws_col;
        *h = ws.ws_row;
    }
}

static void top_usage(FILE *out)
{
    fprintf(out, "usage: mlq top [--broker ENDPOINT] [--interval SECONDS] [--once]\n\n"
                 "A live view of the broker, redrawn every second: the queue by state, every\n"
                 "trainer with its job, epoch, samples/s and last metric, the running jobs'\n"
                 "progress and the next queued jobs. q or Ctrl-C quits.\n\n"
                 "  --broker E     the broker (default: $MLQ_BROKER, broker.endpoint)\n"
                 "  --interval S   seconds between frames (default 1)\n"
                 "  --once         print one frame and exit (also without a terminal)\n");
}

int cmd_top(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"interval", required_argument, NULL, 'i'},
        {"once", no_argument, NULL, '1'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *broker = NULL;
    double interval = 1;
    bool once = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'b':
            broker = optarg;
            break;
        case 'i':
            interval = strtod(optarg, &end);
            if (*end || end == optarg || !(interval >= 0.1 && interval <= 3600)) {
                fprintf(stderr, "mlq top: --interval: seconds from 0.1 to 3600, not '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case '1':
            once = true;
            break;
        case 'h':
            top_usage(stdout);
            return EXIT_OK;
        default:
            top_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        top_usage(stderr);
        return EXIT_USAGE;
    }
    const char *endpoint = cli_broker_endpoint(broker);
    /* a frame a second: a broker that does not answer must not freeze the view long */
    setenv("MLQ_TIMEOUT_MS", getenv("MLQ_TIMEOUT_MS") ? getenv("MLQ_TIMEOUT_MS") : "2000", 1);
    bool live = !once && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    struct frame f = {0};
    if (!live) {
        int w, h;
        term_size(&w, &h);
        f.width = isatty(STDOUT_FILENO) ? w : 200;
        f.max_lines = 1 << 20;
        f.plain = true;
        int rc = build_frame(&f, endpoint);
        if (f.p) fwrite(f.p, 1, f.n, stdout);
        free(f.p);
        return rc;
    }

    struct termios saved, raw;
    if (tcgetattr(STDIN_FILENO, &saved) != 0) {
        fprintf(stderr, "mlq top: cannot set up the terminal: %s\n", strerror(errno));
        return EXIT_FAILURE_GENERIC;
    }
    raw = saved;
    raw.c_lflag &= ~(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* The broker calls' complaints would scribble over the frame: the frame
     * says what failed instead. */
    int saved_err = dup(STDERR_FILENO), devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout); /* alternate screen, cursor hidden */
    fflush(stdout);
    while (!top_stop) {
        int w, h;
        term_size(&w, &h);
        f.n = 0;
        f.lines = 0;
        f.width = w;
        f.max_lines = h;
        build_frame(&f, endpoint);
        fputs("\033[H", stdout);
        if (f.p) fwrite(f.p, 1, f.n, stdout);
        fputs("\033[J", stdout);
        fflush(stdout);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double left = interval - ((double)(t1.tv_sec - t0.tv_sec) +
                                      (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
            if (left <= 0 || top_stop) break;
            struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
            int n = poll(&pfd, 1, (int)(left * 1000) + 1);
            if (n > 0) {
                char ch;
                ssize_t k = read(STDIN_FILENO, &ch, 1);
                if (k == 1 && (ch == 'q' || ch == 'Q')) top_stop = 1;
                if (k == 0) top_stop = 1; /* the terminal went away */
            }
        }
    }
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (saved_err >= 0) {
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
    }
    if (devnull >= 0) close(devnull);
    free(f.p);
    return EXIT_OK;
}
