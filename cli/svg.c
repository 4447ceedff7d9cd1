/* Charts as inline SVG (svg.h). Pixels are written with one decimal: a
 * tenth of a pixel is below what a screen shows and keeps the files small. */
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the buffer --------------------------------------------------------------------------- */

void svg_buf_free(struct svg_buf *b)
{
    free(b->p);
    *b = (struct svg_buf){0};
}

static bool reserve(struct svg_buf *b, size_t more)
{
    if (b->oom) return false;
    if (b->n + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void svg_printf(struct svg_buf *b, const char *fmt, ...)
{
    va_list ap;
    if (!reserve(b, 256)) return;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k >= b->cap - b->n) {
        if (!reserve(b, (size_t)k)) return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
    }
    b->n += (size_t)k;
}

void svg_puts(struct svg_buf *b, const char *s)
{
    size_t k = strlen(s);
    if (!reserve(b, k)) return;
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

void svg_text(struct svg_buf *b, const char *s)
{
    if (!s) return;
    for (; *s; s++) {
        switch (*s) {
        case '&':
            svg_puts(b, "&amp;");
            break;
        case '<':
            svg_puts(b, "&lt;");
            break;
        case '>':
            svg_puts(b, "&gt;");
            break;
        case '"':
            svg_puts(b, "&quot;");
            break;
        case '\'':
            svg_puts(b, "&#39;");
            break;
        default:
            if (reserve(b, 1)) {
                b->p[b->n++] = *s;
                b->p[b->n] = '\0';
            }
        }
    }
}

/* ---- colours -------------------------------------------------------------------------------- */

const char *svg_palette(int i)
{
    /* Tableau 10: distinct in print and for the common colour-vision deficiencies. */
    static const char *const c[SVG_PALETTE_N] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                 "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                                 "#9c755f", "#bab0ac"};
    return c[((i % SVG_PALETTE_N) + SVG_PALETTE_N) % SVG_PALETTE_N];
}

void svg_ramp(double t, char out[8])
{
    /* viridis at five stops, linearly between them */
    static const unsigned char stop[5][3] = {
        {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!isfinite(t)) t = 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double f = t * 4;
    int k = (int)f;
    if (k > 3) k = 3;
    f -= k;
    int rgb[3];
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)lround(stop[k][c] + (stop[k + 1][c] - stop[k][c]) * f);
    snprintf(out, 8, "#%02x%02x%02x", rgb[0] & 0xff, rgb[1] & 0xff, rgb[2] & 0xff);
}

/* ---- ticks and scales ------------------------------------------------------------------------ */

static double nice_step(double range, size_t max)
{
    double raw = range / (double)(max > 1 ? max - 1 : 1);
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

size_t svg_ticks(double lo, double hi, size_t max, double *out, double *step)
{
    if (!(hi > lo)) {
        out[0] = lo;
        *step = 1;
        return 1;
    }
    double st = nice_step(hi - lo, max);
    size_t n = 0;
    for (double v = ceil(lo / st - 1e-9) * st; v <= hi + st * 1e-9 && n < max + 2; v += st)
        out[n++] = fabs(v) < st * 1e-9 ? 0 : v;
    *step = st;
    return n;
}

/* Decade ticks (1, 2, 5 of each decade when the range is short) within [lo, hi]. */
static size_t log_ticks(double lo, double hi, double *out, size_t max)
{
    static const double mult_few[] = {1, 2, 5}, mult_all[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    double span = log10(hi) - log10(lo);
    for (int pass = 0; pass < 2; pass++) {
        /* decades alone over a wide range, 1-2-5 over a few, 1..9 when that is too few */
        const double *mult = pass == 0 && span > 1 ? mult_few : mult_all;
        size_t nm = pass == 0 && span > 1 ? (span > 3 ? 1 : 3) : 9;
        size_t n = 0;
        for (int d = (int)floor(log10(lo)); d <= (int)ceil(log10(hi)) && n < max; d++)
            for (size_t m = 0; m < nm && n < max; m++) {
                double v = mult[m] * pow(10, d);
                if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out[n++] = v;
            }
        if (n >= 4 || pass == 1) return n;
    }
    return 0;
}

static void fmt_tick(char *buf, size_t len, double v, double step)
{
    double a = fabs(v);
    if (v == 0) {
        snprintf(buf, len, "0");
    } else if (a >= 1e4 && a < 1e12) {
        /* 20k, 1.5M: as many decimals as the step needs in that unit */
        static const char *const unit[] = {"k", "M", "G"};
        int u = a >= 1e9 ? 2 : a >= 1e6 ? 1 : 0;
        double div = pow(1000, u + 1), s = step / div;
        int dec = 0;
        while (dec < 3 && s > 0 && fabs(s * pow(10, dec) - round(s * pow(10, dec))) > 1e-6)
            dec++;
        snprintf(buf, len, "%.*f%s", dec, v / div, unit[u]);
    } else if (a >= 1e12 || a < 1e-4) {
        snprintf(buf, len, "%.3g", v);
    } else {
        /* the fewest decimals that show every tick exactly (0.25, not 0.2) */
        int dec = 0;
        double s = step > 0 ? step : a;
        while (dec < 8 &&
               fabs(s * pow(10, dec) - round(s * pow(10, dec))) > 1e-6 * s * pow(10, dec))
            dec++;
        snprintf(buf, len, "%.*f", dec, v);
    }
}

/* A linear or log10 map of a domain onto pixels [p0, p1]. */
struct scale {
    double d0, d1, p0, p1;
    bool log;
};

static double sc(const struct scale *s, double v)
{
    double a = s->log ? log10(s->d0) : s->d0, b = s->log ? log10(s->d1) : s->d1;
    double x = s->log ? log10(v) : v;
    return b > a ? s->p0 + (x - a) / (b - a) * (s->p1 - s->p0) : (s->p0 + s->p1) / 2;
}

static bool drawable(double v, bool log)
{
    return isfinite(v) && (!log || v > 0);
}

/* ---- line charts ----------------------------------------------------------------------------- */

#define LC_LEFT 64
#define LC_RIGHT 200
#define LC_TOP 34
#define LC_BOTTOM 46
#define FAINT_POINTS 40

static void update_range(double v, bool log, double *lo, double *hi)
{
    if (!drawable(v, log)) return;
    if (v < *lo) *lo = v;
    if (v > *hi) *hi = v;
}

/* Points of one run of finite values, as polyline pairs. */
static void polyline_open(struct svg_buf *b, const char *cls)
{
    svg_printf(b, "<polyline class=\"%s\" points=\"", cls);
}

static void draw_axes(struct svg_buf *b, const struct scale *xs, const struct scale *ys,
                      const struct svg_chart *c)
{
    double xt[16], yt[40], xstep, ystep = 0;
    size_t nx = svg_ticks(xs->d0, xs->d1, 10, xt, &xstep), ny;
    if (ys->log)
        ny = log_ticks(ys->d0, ys->d1, yt, 40);
    else
        ny = svg_ticks(ys->d0, ys->d1, 7, yt, &ystep);
    char lab[32];
    svg_puts(b, "<g class=\"axes\" font-size=\"11\" fill=\"#333\">");
    /* Integer x ticks only when x is a count (epochs): no "2.5" epoch. */
    for (size_t i = 0; i < nx; i++) {
        if (xstep < 1 && fabs(xt[i] - round(xt[i])) > 1e-9 && xs->d1 - xs->d0 >= 1) continue;
        double px = sc(xs, xt[i]);
        fmt_tick(lab, sizeof lab, xt[i], xstep);
        svg_printf(b,
                   "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#eee\"/><text class=\"xtick\" x=\"%.1f\" y=\"%.1f\" "
                   "text-anchor=\"middle\">%s</text>",
                   px, ys->p1, px, ys->p0, px, ys->p0 + 16, lab);
    }
    /* On a log axis, label the decades (and 2 and 5) but keep every grid line. */
    for (size_t i = 0; i < ny; i++) {
        double py = sc(ys, yt[i]);
        double m = ys->log ? yt[i] / pow(10, floor(log10(yt[i]) + 1e-9)) : 0;
        bool label =
            !ys->log || ny <= 12 || fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6;
        svg_printf(b,
                   "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#eee\"/>",
                   xs->p0, py, xs->p1, py);
        if (!label) continue;
        fmt_tick(lab, sizeof lab, yt[i], ys->log ? yt[i] : ystep);
        svg_printf(b,
                   "<text class=\"ytick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                   "dominant-baseline=\"middle\">%s</text>",
                   xs->p0 - 6, py, lab);
    }
    svg_printf(b,
               "<line class=\"xaxis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
               "stroke=\"#333\"/><line class=\"yaxis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
               "y2=\"%.1f\" stroke=\"#333\"/>",
               xs->p0, ys->p0, xs->p1, ys->p0, xs->p0, ys->p0, xs->p0, ys->p1);
    svg_printf(b, "<text class=\"xlabel\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
               (xs->p0 + xs->p1) / 2, ys->p0 + 34);
    svg_text(b, c->xlabel ? c->xlabel : "");
    svg_printf(b,
               "</text><text class=\"ylabel\" transform=\"translate(14 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">",
               (ys->p0 + ys->p1) / 2);
    svg_text(b, c->ylabel ? c->ylabel : "");
    svg_puts(b, c->logy ? " (log scale)</text></g>" : "</text></g>");
}

static void draw_series(struct svg_buf *b, const struct svg_series *s, const struct scale *xs,
                        const struct scale *ys)
{
    const char *colour = s->faint ? "#9a9a9a" : svg_palette(s->color);
    svg_printf(b, "<g class=\"curve%s\" data-run=\"%lld\" data-key=\"", s->faint ? " faint" : "",
               (long long)s->run);
    svg_text(b, s->key);
    svg_printf(b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s%s><title>", colour,
               s->faint ? "1" : "1.8", s->dashed ? " stroke-dasharray=\"5 3\"" : "",
               s->faint ? " stroke-opacity=\"0.45\"" : "");
    svg_text(b, s->label);
    svg_puts(b, "</title>");
    size_t step_n = s->faint && s->n > FAINT_POINTS ? FAINT_POINTS : s->n;
    bool open = false;
    for (size_t k = 0; k < step_n; k++) {
        size_t i = step_n == s->n ? k : (size_t)llround((double)k * (s->n - 1) / (step_n - 1));
        if (!drawable(s->y[i], ys->log)) {
            if (open) svg_puts(b, "\"/>");
            open = false;
            continue;
        }
        if (!open) polyline_open(b, "line");
        svg_printf(b, "%s%.1f,%.1f", open ? " " : "", sc(xs, s->x[i]), sc(ys, s->y[i]));
        open = true;
    }
    if (open) svg_puts(b, "\"/>");
    /* A lone point draws no line: a dot instead. */
    if (s->n == 1 && drawable(s->y[0], ys->log))
        svg_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\"/>", sc(xs, s->x[0]),
                   sc(ys, s->y[0]), colour);
    svg_puts(b, "</g>");
}

static void draw_best(struct svg_buf *b, const struct svg_series *s, const struct scale *xs,
                      const struct scale *ys)
{
    if (s->faint || s->best < 0 || (size_t)s->best >= s->n) return;
    double x = s->x[s->best], y = s->y[s->best];
    if (!drawable(y, ys->log)) return;
    svg_printf(b,
               "<circle class=\"best\" data-run=\"%lld\" data-epoch=\"%.15g\" "
               "data-value=\"%.17g\" cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"#fff\" "
               "stroke=\"%s\" stroke-width=\"2\"><title>",
               (long long)s->run, x, y, sc(xs, x), sc(ys, y), svg_palette(s->color));
    svg_text(b, s->label);
    svg_printf(b, ": best %.6g at epoch %.15g</title></circle>", y, x);
}

static void draw_band(struct svg_buf *b, const struct svg_band *bd, const struct scale *xs,
                      const struct scale *ys)
{
    const double *pairs[2][2] = {{bd->lo, bd->hi}, {bd->q1, bd->q3}};
    const char *opacity[2] = {"0.12", "0.22"};
    svg_puts(b, "<g class=\"band\"><title>");
    svg_text(b, bd->label);
    svg_puts(b, "</title>");
    for (int k = 0; k < 2; k++) {
        svg_printf(b, "<polygon fill=\"#777\" fill-opacity=\"%s\" points=\"", opacity[k]);
        bool first = true;
        for (size_t i = 0; i < bd->n; i++)
            if (drawable(pairs[k][1][i], ys->log)) {
                svg_printf(b, "%s%.1f,%.1f", first ? "" : " ", sc(xs, bd->x[i]),
                           sc(ys, pairs[k][1][i]));
                first = false;
            }
        for (size_t i = bd->n; i-- > 0;)
            if (drawable(pairs[k][0][i], ys->log)) {
                svg_printf(b, "%s%.1f,%.1f", first ? "" : " ", sc(xs, bd->x[i]),
                           sc(ys, pairs[k][0][i]));
                first = false;
            }
        svg_puts(b, "\"/>");
    }
    polyline_open(b, "median");
    bool first = true;
    for (size_t i = 0; i < bd->n; i++)
        if (drawable(bd->med[i], ys->log)) {
            svg_printf(b, "%s%.1f,%.1f", first ? "" : " ", sc(xs, bd->x[i]), sc(ys, bd->med[i]));
            first = false;
        }
    svg_puts(b, "\" fill=\"none\" stroke=\"#666\" stroke-width=\"1.2\"/></g>");
}

static void draw_legend(struct svg_buf *b, const struct svg_legend *l, size_t n, double x, double y,
                        double bottom)
{
    svg_puts(b, "<g class=\"legend\" font-size=\"11\" fill=\"#222\">");
    for (size_t i = 0; i < n && y + 14 <= bottom; i++, y += 17) {
        const char *colour = l[i].color < 0 ? "#999" : svg_palette(l[i].color);
        svg_puts(b, "<g class=\"entry\">");
        if (l[i].swatch)
            svg_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"18\" height=\"9\" fill=\"%s\"/>", x,
                       y - 5, colour);
        else
            svg_printf(b,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                       "stroke-width=\"2\"%s/>",
                       x, y, x + 18, y, colour, l[i].dashed ? " stroke-dasharray=\"5 3\"" : "");
        svg_printf(b, "<text x=\"%.1f\" y=\"%.1f\" dominant-baseline=\"middle\">", x + 24, y);
        svg_text(b, l[i].label);
        svg_puts(b, "</text></g>");
    }
    svg_puts(b, "</g>");
}

void svg_line_chart(struct svg_buf *b, const struct svg_chart *c, const struct svg_series *s,
                    size_t ns, const struct svg_band *bands, size_t nbands,
                    const struct svg_legend *legend, size_t nlegend)
{
    int W = c->width > 0 ? c->width : 760, H = c->height > 0 ? c->height : 360;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < s[i].n; k++)
            if (drawable(s[i].y[k], c->logy)) {
                update_range(s[i].x[k], false, &xlo, &xhi);
                update_range(s[i].y[k], c->logy, &ylo, &yhi);
            }
    for (size_t i = 0; i < nbands; i++)
        for (size_t k = 0; k < bands[i].n; k++) {
            update_range(bands[i].x[k], false, &xlo, &xhi);
            update_range(bands[i].lo[k], c->logy, &ylo, &yhi);
            update_range(bands[i].hi[k], c->logy, &ylo, &yhi);
        }
    svg_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"%s\" "
               "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\"><title>",
               c->id, W, H, W, H);
    svg_text(b, c->title);
    svg_printf(b,
               "</title><text class=\"title\" x=\"%d\" y=\"20\" font-size=\"14\" "
               "font-weight=\"600\">",
               LC_LEFT);
    svg_text(b, c->title);
    svg_puts(b, "</text>");
    if (!(xhi >= xlo) || !(yhi >= ylo)) {
        svg_printf(b,
                   "<text class=\"empty\" x=\"%d\" y=\"%d\" fill=\"#777\">no values to draw"
                   "%s</text></svg>",
                   LC_LEFT, H / 2, c->logy ? " on a log scale" : "");
        return;
    }
    if (xhi == xlo) xlo -= 1, xhi += 1;
    struct scale xs = {xlo, xhi, LC_LEFT, W - LC_RIGHT, false};
    struct scale ys = {ylo, yhi, H - LC_BOTTOM, LC_TOP, c->logy};
    if (c->logy) {
        if (yhi / ylo < 1.5)
            ys.d0 = ylo / 1.2, ys.d1 = yhi * 1.2;
        else
            ys.d0 = ylo / pow(yhi / ylo, 0.04), ys.d1 = yhi * pow(yhi / ylo, 0.04);
    } else {
        if (yhi == ylo) ylo -= ylo ? fabs(ylo) * 0.1 : 1, yhi += yhi ? fabs(yhi) * 0.1 : 1;
        double t[16], st;
        svg_ticks(ylo, yhi, 7, t, &st);
        ys.d0 = floor(ylo / st + 1e-9) * st;
        ys.d1 = ceil(yhi / st - 1e-9) * st;
    }
    svg_printf(b,
               "<g class=\"plot\" data-x0=\"%.17g\" data-x1=\"%.17g\" data-y0=\"%.17g\" "
               "data-y1=\"%.17g\" data-left=\"%.1f\" data-top=\"%.1f\" data-width=\"%.1f\" "
               "data-height=\"%.1f\" data-log=\"%d\">",
               xs.d0, xs.d1, ys.d0, ys.d1, xs.p0, ys.p1, xs.p1 - xs.p0, ys.p0 - ys.p1, c->logy);
    draw_axes(b, &xs, &ys, c);
    for (size_t i = 0; i < c->nmarks; i++) {
        if (!(c->marks[i] >= xs.d0 && c->marks[i] <= xs.d1)) continue;
        double px = sc(&xs, c->marks[i]);
        svg_printf(b,
                   "<g class=\"mark\" data-x=\"%.15g\"><line x1=\"%.1f\" y1=\"%.1f\" "
                   "x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c0392b\" stroke-dasharray=\"3 3\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#c0392b\">",
                   c->marks[i], px, ys.p0, px, ys.p1, px + 3, ys.p1 + 10);
        svg_text(b, c->mark_label ? c->mark_label : "");
        svg_printf(b, " %zu</text></g>", i);
    }
    for (size_t i = 0; i < nbands; i++)
        draw_band(b, &bands[i], &xs, &ys);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < ns; i++)
            if (s[i].faint == (pass == 0)) draw_series(b, &s[i], &xs, &ys);
    for (size_t i = 0; i < ns; i++)
        draw_best(b, &s[i], &xs, &ys);
    svg_puts(b, "</g>");
    draw_legend(b, legend, nlegend, W - LC_RIGHT + 16, LC_TOP + 6, H - 8);
    svg_puts(b, "</svg>\n");
}

/* ---- heat map -------------------------------------------------------------------------------- */

void svg_confusion(struct svg_buf *b, const char *id, const int64_t *m, int K, int64_t run)
{
    double cell = K <= 10 ? 40 : K <= 20 ? 26 : 480.0 / K;
    double left = 64, top = 56, side = cell * K;
    int W = (int)(left + side + 20), H = (int)(top + side + 20);
    int64_t total = 0;
    for (int i = 0; i < K * K; i++)
        total += m[i];
    svg_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"confusion\" id=\"%s\" "
               "data-run=\"%lld\" data-classes=\"%d\" data-total=\"%lld\" width=\"%d\" "
               "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" font-size=\"11\">"
               "<title>confusion matrix of run %lld</title>",
               id, (long long)run, K, (long long)total, W, H, W, H, (long long)run);
    svg_printf(b,
               "<text x=\"%.1f\" y=\"14\" text-anchor=\"middle\" fill=\"#333\">predicted "
               "class</text><text transform=\"translate(14 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\" fill=\"#333\">true class</text>",
               left + side / 2, top + side / 2);
    for (int k = 0; k < K; k++)
        svg_printf(b,
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\">%d</text>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" dominant-baseline=\"middle\" "
                   "fill=\"#555\">%d</text>",
                   left + (k + 0.5) * cell, top - 8, k, left - 6, top + (k + 0.5) * cell, k);
    for (int t = 0; t < K; t++) {
        int64_t row = 0;
        for (int p = 0; p < K; p++)
            row += m[(size_t)t * K + p];
        for (int p = 0; p < K; p++) {
            int64_t v = m[(size_t)t * K + p];
            double share = row ? (double)v / (double)row : 0;
            /* white to a deep blue by the share of its true class */
            int r = (int)lround(255 - share * (255 - 8)), g = (int)lround(255 - share * (255 - 69)),
                bl = (int)lround(255 - share * (255 - 148));
            double x = left + p * cell, y = top + t * cell;
            svg_printf(b,
                       "<rect class=\"cell\" data-true=\"%d\" data-pred=\"%d\" "
                       "data-count=\"%lld\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                       "height=\"%.1f\" fill=\"#%02x%02x%02x\" stroke=\"#fff\"><title>true %d, "
                       "predicted %d: %lld (%.1f%% of class %d)</title></rect>",
                       t, p, (long long)v, x, y, cell, cell, r & 0xff, g & 0xff, bl & 0xff, t, p,
                       (long long)v, share * 100, t);
            if (cell >= 18)
                svg_printf(b,
                           "<text class=\"count\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                           "dominant-baseline=\"middle\" fill=\"%s\" font-size=\"%d\">%lld</text>",
                           x + cell / 2, y + cell / 2, share > 0.5 ? "#fff" : "#222",
                           cell >= 36 ? 11 : 9, (long long)v);
        }
    }
    svg_puts(b, "</svg>\n");
}

/* ---- many runs against their parameters --------------------------------------------------------
 */

/* The domain of an axis: its finite values (positive ones on a log axis). */
static bool axis_domain(const struct svg_axis *a, size_t n, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    if (a->labels) {
        *lo = 0;
        *hi = a->nlabels > 1 ? (double)(a->nlabels - 1) : 1;
        return true;
    }
    for (size_t i = 0; i < n; i++)
        update_range(a->v[i], a->log, lo, hi);
    if (!(*hi >= *lo)) return false;
    if (*hi == *lo) {
        if (a->log)
            *lo /= 2, *hi *= 2;
        else
            *lo -= *lo ? fabs(*lo) * 0.1 : 1, *hi += *hi ? fabs(*hi) * 0.1 : 1;
    }
    return true;
}

/* Position of v on [0, 1] of its axis; NaN when it has none. */
static double axis_pos(const struct svg_axis *a, double v, double lo, double hi)
{
    if (!drawable(v, a->log && !a->labels)) return NAN;
    if (a->labels) return a->nlabels > 1 ? v / (double)(a->nlabels - 1) : 0.5;
    struct scale s = {lo, hi, 0, 1, a->log};
    return sc(&s, v);
}

/* Ticks of an axis drawn vertically from y0 (bottom) to y1, at x, labels to the side. */
static void axis_ticks_v(struct svg_buf *b, const struct svg_axis *a, double lo, double hi,
                         double x, double y0, double y1, const char *anchor, double dx)
{
    double t[48], st = 1;
    size_t nt;
    if (a->labels) {
        nt = a->nlabels < 24 ? a->nlabels : 24;
        for (size_t i = 0; i < nt; i++)
            t[i] = a->nlabels > 24 ? round((double)i * (a->nlabels - 1) / (nt - 1)) : (double)i;
    } else if (a->log)
        nt = log_ticks(lo, hi, t, 40);
    else
        nt = svg_ticks(lo, hi, 6, t, &st);
    if (a->log && nt > 8) { /* decades only */
        size_t k = 0;
        for (size_t i = 0; i < nt; i++)
            if (fabs(t[i] / pow(10, floor(log10(t[i]) + 1e-9)) - 1) < 1e-6) t[k++] = t[i];
        nt = k;
    }
    for (size_t i = 0; i < nt; i++) {
        double p = axis_pos(a, t[i], lo, hi);
        if (!isfinite(p)) continue;
        double y = y0 + (y1 - y0) * p;
        char lab[32];
        if (!a->labels) fmt_tick(lab, sizeof lab, t[i], a->log ? t[i] : st);
        svg_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" dominant-baseline=\"middle\">",
                   x - 3, y, x + 3, y, x + dx, y, anchor);
        if (a->labels) {
            const char *l = a->labels[(size_t)t[i]];
            char cut[24];
            snprintf(cut, sizeof cut, "%s", l);
            if (strlen(l) >= sizeof cut) memcpy(cut + sizeof cut - 4, "...", 4);
            svg_text(b, cut);
        } else {
            svg_puts(b, lab);
        }
        svg_puts(b, "</text>");
    }
}

static void colour_of(const struct svg_axis *c, double v, double lo, double hi, bool lower_better,
                      char out[8])
{
    double t = axis_pos(c, v, lo, hi);
    if (!isfinite(t)) {
        snprintf(out, 8, "#bbbbbb");
        return;
    }
    /* short of the ramp's palest yellow, which vanishes on white */
    svg_ramp((lower_better ? 1 - t : t) * 0.9, out);
}

struct order_ctx {
    double key;
    size_t i;
};

static int order_cmp(const void *a, const void *b)
{
    const struct order_ctx *x = a, *y = b;
    if (!isfinite(x->key) || !isfinite(y->key)) return isfinite(x->key) - isfinite(y->key);
    return (x->key > y->key) - (x->key < y->key);
}

/* Indices ordered worst first, so that the best are drawn on top. */
static size_t *draw_order(const struct svg_axis *c, bool lower_better, size_t n)
{
    struct order_ctx *o = malloc((n ? n : 1) * sizeof *o);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!o || !idx) {
        free(o);
        free(idx);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        o[i] = (struct order_ctx){lower_better ? -c->v[i] : c->v[i], i};
    qsort(o, n, sizeof *o, order_cmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = o[i].i;
    free(o);
    return idx;
}

static void ramp_gradient(struct svg_buf *b, const char *id, bool lower_better)
{
    svg_printf(b, "<defs><linearGradient id=\"%s-ramp\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">", id);
    for (int k = 0; k <= 4; k++) {
        char col[8];
        svg_ramp((lower_better ? 1 - k / 4.0 : k / 4.0) * 0.9, col);
        svg_printf(b, "<stop offset=\"%d%%\" stop-color=\"%s\"/>", k * 25, col);
    }
    svg_puts(b, "</linearGradient></defs>");
}

void svg_parallel(struct svg_buf *b, const char *id, const struct svg_axis *axes, size_t naxes,
                  const struct svg_axis *colour_by, bool lower_better, const int64_t *runs,
                  size_t n)
{
    size_t na = naxes + 1; /* the colour's axis last */
    double W = na < 6 ? 760 : 130.0 * na + 80, H = 340, top = 40, bottom = H - 30;
    double left = 70, gap = (W - left - 90) / (double)(na > 1 ? na - 1 : 1);
    double lo[17], hi[17];
    const struct svg_axis *ax[17];
    if (na > 17) na = 17;
    for (size_t k = 0; k < na; k++) {
        ax[k] = k < na - 1 ? &axes[k] : colour_by;
        if (!axis_domain(ax[k], n, &lo[k], &hi[k])) lo[k] = 0, hi[k] = 1;
    }
    svg_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"parallel\" id=\"%s\" "
               "data-lines=\"%zu\" data-axes=\"%zu\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" role=\"img\" font-size=\"11\"><title>parallel "
               "coordinates</title>",
               id, n, na, W, H, W, H);
    ramp_gradient(b, id, lower_better);
    size_t *order = draw_order(colour_by, lower_better, n);
    svg_puts(b, "<g class=\"lines\" fill=\"none\" stroke-width=\"1.3\" stroke-opacity=\"0.7\">");
    for (size_t r = 0; order && r < n; r++) {
        size_t i = order[r];
        char col[8];
        colour_of(colour_by, colour_by->v[i], lo[na - 1], hi[na - 1], lower_better, col);
        svg_printf(b, "<polyline class=\"trial\" data-run=\"%lld\" stroke=\"%s\" points=\"",
                   (long long)runs[i], col);
        bool first = true;
        for (size_t k = 0; k < na; k++) {
            double p = axis_pos(ax[k], ax[k]->v[i], lo[k], hi[k]);
            if (!isfinite(p)) continue;
            svg_printf(b, "%s%.1f,%.1f", first ? "" : " ", left + gap * k,
                       bottom + (top - bottom) * p);
            first = false;
        }
        svg_printf(b, "\"><title>run %lld</title></polyline>", (long long)runs[i]);
    }
    svg_puts(b, "</g>");
    free(order);
    for (size_t k = 0; k < na; k++) {
        double x = left + gap * k;
        svg_printf(b,
                   "<g class=\"paxis\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#333\"/>",
                   x, top, x, bottom);
        if (k == na - 1)
            svg_printf(b,
                       "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"%.1f\" "
                       "fill=\"url(#%s-ramp)\"/>",
                       x + 2, top, bottom - top, id);
        svg_printf(b,
                   "<text class=\"pname\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                   "font-weight=\"600\">",
                   x, top - 16);
        svg_text(b, ax[k]->name);
        svg_puts(b, ax[k]->log ? " (log)</text>" : "</text>");
        axis_ticks_v(b, ax[k], lo[k], hi[k], x, bottom, top, k == na - 1 ? "start" : "end",
                     k == na - 1 ? 14 : -6);
        svg_puts(b, "</g>");
    }
    svg_puts(b, "</svg>\n");
}

void svg_scatter(struct svg_buf *b, const char *id, const struct svg_axis *x,
                 const struct svg_axis *y, bool lower_better, const int64_t *runs, size_t n)
{
    double W = 300, H = 230, left = 58, right = 12, top = 26, bottom = H - 48;
    double xlo, xhi, ylo, yhi;
    if (!axis_domain(x, n, &xlo, &xhi)) xlo = 0, xhi = 1;
    if (!axis_domain(y, n, &ylo, &yhi)) ylo = 0, yhi = 1;
    svg_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"scatter\" id=\"%s\" "
               "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
               "font-size=\"10\"><title>",
               id, W, H, W, H);
    svg_text(b, y->name);
    svg_puts(b, " against ");
    svg_text(b, x->name);
    svg_printf(b, "</title><text x=\"%.1f\" y=\"14\" font-size=\"12\" font-weight=\"600\">", left);
    svg_text(b, x->name);
    svg_puts(b, "</text>");
    /* The x axis's ticks drawn as a horizontal axis: reuse the vertical one's
     * tick values by drawing them through a rotated group would tilt the text,
     * so draw the few ticks here. */
    double t[48], st = 1;
    size_t nt = 0;
    if (x->labels) {
        nt = x->nlabels < 8 ? x->nlabels : 8;
        for (size_t i = 0; i < nt; i++)
            t[i] = x->nlabels > 8 ? round((double)i * (x->nlabels - 1) / (nt - 1)) : (double)i;
    } else if (x->log) {
        nt = log_ticks(xlo, xhi, t, 40);
        size_t k = 0;
        for (size_t i = 0; i < nt; i++)
            if (nt <= 5 || fabs(t[i] / pow(10, floor(log10(t[i]) + 1e-9)) - 1) < 1e-6)
                t[k++] = t[i];
        nt = k;
    } else {
        nt = svg_ticks(xlo, xhi, 5, t, &st);
    }
    double pw = W - left - right;
    for (size_t i = 0; i < nt; i++) {
        double p = axis_pos(x, t[i], xlo, xhi);
        if (!isfinite(p)) continue;
        double px = left + 6 + (pw - 12) * p;
        svg_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                   px, bottom, px, bottom + 4, px, bottom + 15);
        if (x->labels) {
            char cut[12];
            snprintf(cut, sizeof cut, "%s", x->labels[(size_t)t[i]]);
            svg_text(b, cut);
        } else {
            char lab[32];
            fmt_tick(lab, sizeof lab, t[i], x->log ? t[i] : st);
            svg_puts(b, lab);
        }
        svg_puts(b, "</text>");
    }
    svg_printf(b,
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>",
               left, bottom, W - right, bottom, left, bottom, left, top);
    axis_ticks_v(b, y, ylo, yhi, left, bottom, top, "end", -6);
    svg_printf(b, "<text transform=\"translate(11 %.1f) rotate(-90)\" text-anchor=\"middle\">",
               (top + bottom) / 2);
    svg_text(b, y->name);
    svg_puts(b, "</text>");
    size_t *order = draw_order(y, lower_better, n);
    svg_puts(b, "<g class=\"points\" stroke=\"#333\" stroke-width=\"0.5\">");
    for (size_t r = 0; order && r < n; r++) {
        size_t i = order[r];
        double px = axis_pos(x, x->v[i], xlo, xhi), py = axis_pos(y, y->v[i], ylo, yhi);
        if (!isfinite(px) || !isfinite(py)) continue;
        /* a categorical axis spreads its points a little, the same way each time */
        double jitter =
            x->labels ? ((double)((runs[i] * 2654435761u) % 1000) / 1000 - 0.5) * 10 : 0;
        char col[8];
        colour_of(y, y->v[i], ylo, yhi, lower_better, col);
        svg_printf(b,
                   "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>run %lld: "
                   "%.6g</title></circle>",
                   left + 6 + (pw - 12) * px + jitter, bottom + (top - bottom) * py, col,
                   (long long)runs[i], y->v[i]);
    }
    free(order);
    svg_puts(b, "</g></svg>\n");
}

void svg_histogram(struct svg_buf *b, const char *id, const char *title, const char *xlabel,
                   const double *x, const int64_t *counts, size_t n)
{
    double W = 420, H = 240, left = 50, right = 14, top = 30, bottom = H - 42;
    int64_t cmax = 1;
    for (size_t i = 0; i < n; i++)
        if (counts[i] > cmax) cmax = counts[i];
    svg_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"histogram\" id=\"%s\" "
               "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
               "font-size=\"10\"><title>",
               id, W, H, W, H);
    svg_text(b, title);
    svg_printf(b, "</title><text x=\"%.1f\" y=\"16\" font-size=\"12\" font-weight=\"600\">", left);
    svg_text(b, title);
    svg_puts(b, "</text>");
    double bw = (W - left - right) / (double)(n ? n : 1);
    struct scale ys = {0, (double)cmax, bottom, top, false};
    double t[16], st;
    size_t nt = svg_ticks(0, (double)cmax, 5, t, &st);
    for (size_t i = 0; i < nt; i++) {
        if (st < 1 && fabs(t[i] - round(t[i])) > 1e-9) continue;
        svg_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                   "dominant-baseline=\"middle\">%.0f</text>",
                   left, sc(&ys, t[i]), W - right, sc(&ys, t[i]), left - 5, sc(&ys, t[i]), t[i]);
    }
    size_t every = n > 20 ? (n + 19) / 20 : 1;
    for (size_t i = 0; i < n; i++) {
        double x0 = left + bw * i, y = sc(&ys, (double)counts[i]);
        svg_printf(b,
                   "<rect class=\"bar\" data-x=\"%.15g\" data-count=\"%lld\" x=\"%.1f\" "
                   "y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4e79a7\"><title>%.15g: "
                   "%lld</title></rect>",
                   x[i], (long long)counts[i], x0 + 1, y, bw > 3 ? bw - 2 : bw, bottom - y, x[i],
                   (long long)counts[i]);
        if (i % every == 0)
            svg_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.15g</text>",
                       x0 + bw / 2, bottom + 14, x[i]);
    }
    svg_printf(b,
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
               left, bottom, W - right, bottom, (left + W - right) / 2, H - 8);
    svg_text(b, xlabel);
    svg_printf(b,
               "</text><text transform=\"translate(12 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">runs</text></svg>\n",
               (top + bottom) / 2);
}
