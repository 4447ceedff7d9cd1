/* Charts as inline SVG, drawn here for mlq report (cli/cmd_report.c): a growable
 * text buffer, line charts (axes, ticks, a legend, a log scale, the best point
 * marked, summarised runs as a band), heat maps, parallel coordinates, scatter
 * plots and histograms. No JavaScript: a file reads as written.
 *
 * Every chart carries data- attributes so a test (or a reader's script) can
 * read values back from what the browser drew: a plot area's data-x0/x1/y0/y1
 * (its domain), data-left/top/width/height (its pixels) and data-log; a
 * curve's data-run and data-key; a heat-map cell's data-count. */
#ifndef MLQ_CLI_SVG_H
#define MLQ_CLI_SVG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the buffer ---- */

struct svg_buf {
    char *p; /* NUL-terminated, owned */
    size_t n, cap;
    bool oom; /* an allocation failed: the text is incomplete */
};
void svg_buf_free(struct svg_buf *b);
void svg_printf(struct svg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void svg_puts(struct svg_buf *b, const char *s);
/* s escaped for HTML and XML text and attribute values. */
void svg_text(struct svg_buf *b, const char *s);

/* ---- colours ---- */

#define SVG_PALETTE_N 10
/* A categorical colour ("#1f77b4"...), i modulo SVG_PALETTE_N. */
const char *svg_palette(int i);
/* A sequential colour for t in [0, 1] (dark blue to yellow), as "#rrggbb". */
void svg_ramp(double t, char out[8]);

/* ---- line charts ---- */

struct svg_series {
    const double *x, *y; /* n points, x ascending; y NaN: a gap */
    size_t n;
    int color;         /* svg_palette index */
    bool dashed;       /* validation curves */
    int64_t run;       /* data-run */
    const char *key;   /* data-key */
    const char *label; /* the tooltip */
    long best;         /* index of the point marked best, or -1 */
    bool faint;        /* a run beyond the highlighted: thin, grey, at most 40 points */
};

/* Runs beyond the readable count, summarised per x: the median and the
 * quartile and min-max bands (NaN where none). */
struct svg_band {
    const double *x, *lo, *q1, *med, *q3, *hi;
    size_t n;
    const char *label; /* legend text, e.g. "990 other runs: median, quartiles, range" */
};

struct svg_legend {
    const char *label;
    int color;   /* svg_palette index, or -1: grey */
    bool dashed; /* a line-style entry */
    bool swatch; /* a colour box rather than a line */
};

struct svg_chart {
    const char *id;      /* the svg element's id */
    const char *title;   /* above the plot */
    const char *xlabel;  /* under the x axis, e.g. "epoch" */
    const char *ylabel;  /* beside the y axis, with units where they exist */
    bool logy;           /* log10 y axis (values <= 0 left out) */
    int width, height;   /* pixels; 0: 760 x 360 */
    const double *marks; /* x values marked by a dashed vertical line (a sweep's rungs) */
    size_t nmarks;
    const char *mark_label; /* each mark's label: "rung" gives "rung 0", "rung 1", ... */
};

/* Draws one chart: bands first, then faint series, then the rest in order,
 * the legend at the right. */
void svg_line_chart(struct svg_buf *b, const struct svg_chart *c, const struct svg_series *s,
                    size_t ns, const struct svg_band *bands, size_t nbands,
                    const struct svg_legend *legend, size_t nlegend);

/* ---- heat map ---- */

/* A K x K confusion matrix m (rows: true class, columns: predicted), each
 * cell coloured by its share of its row and labelled with its count. */
void svg_confusion(struct svg_buf *b, const char *id, const int64_t *m, int K, int64_t run);

/* ---- many runs against their parameters ---- */

/* One axis of a parallel-coordinates or scatter plot: a value per run,
 * NaN where the run has none. Categorical axes hold an index into labels. */
struct svg_axis {
    const char *name;
    const double *v;
    bool log;                  /* log10 scale (all values > 0) */
    const char *const *labels; /* categorical: nlabels names; NULL: numeric */
    size_t nlabels;
};

/* Parallel coordinates: one polyline per run across the axes, coloured by
 * colour_by (its axis is drawn last; lower_better flips the ramp so the best
 * is always the bright end). */
void svg_parallel(struct svg_buf *b, const char *id, const struct svg_axis *axes, size_t naxes,
                  const struct svg_axis *colour_by, bool lower_better, const int64_t *runs,
                  size_t n);
/* A small scatter plot of y against x, coloured as svg_parallel. */
void svg_scatter(struct svg_buf *b, const char *id, const struct svg_axis *x,
                 const struct svg_axis *y, bool lower_better, const int64_t *runs, size_t n);
/* Vertical bars: counts[i] runs at value x[i] (e.g. epochs reached). */
void svg_histogram(struct svg_buf *b, const char *id, const char *title, const char *xlabel,
                   const double *x, const int64_t *counts, size_t n);

/* Nice round tick values covering [lo, hi]: at most max ticks, written to
 * out (room for max + 2). Returns the count; *step the spacing. */
size_t svg_ticks(double lo, double hi, size_t max, double *out, double *step);

#endif
