#include "augment.h"

#include <string.h>

#include "rng.h"

/* The high half tags the stream apart from the data order's (dataset.c's
 * streams are small integers), the low half is the row. */
#define AUGMENT_STREAM (UINT64_C(0x6175676d) << 32) /* "augm" */

bool augment_init(struct augment *a, const struct spec_augment *s, uint64_t seed, int c, int h,
                  int w)
{
    memset(a, 0, sizeof *a);
    a->c = c;
    a->h = h;
    a->w = w;
    a->seed = seed;
    a->padding = s->crop ? s->crop_padding : -1;
    a->flip_p = s->flip ? (float)s->flip_p : 0.0f;
    return a->padding > 0 || a->flip_p > 0;
}

void augment_draw(const struct augment *a, int64_t epoch, int64_t row, struct augment_draw *d)
{
    struct rng r;
    rng_seed_stream(&r, a->seed, (uint64_t)epoch, AUGMENT_STREAM ^ (uint64_t)row);
    d->dy = d->dx = a->padding > 0 ? a->padding : 0;
    if (a->padding > 0) {
        uint64_t span = 2 * (uint64_t)a->padding + 1;
        d->dy = (int)rng_below(&r, span);
        d->dx = (int)rng_below(&r, span);
    }
    d->flip = a->flip_p > 0 && rng_uniform(&r) < a->flip_p;
}

void augment_image(const struct augment *a, const struct augment_draw *d, const float *src,
                   float *dst)
{
    int p = a->padding > 0 ? a->padding : 0, H = a->h, W = a->w;
    /* Output (y, x) is the padded image's (y + dy, x + dx), i.e. the
     * source's (y + oy, x + ox); mirrored, x reads column W - 1 - x. */
    int oy = d->dy - p, ox = d->dx - p;
    for (int c = 0; c < a->c; c++) {
        const float *s = src + (size_t)c * H * W;
        float *o = dst + (size_t)c * H * W;
        for (int y = 0; y < H; y++, o += W) {
            int sy = y + oy;
            if (sy < 0 || sy >= H) {
                memset(o, 0, sizeof(float) * (size_t)W);
                continue;
            }
            const float *srow = s + (size_t)sy * W;
            for (int x = 0; x < W; x++) {
                int sx = (d->flip ? W - 1 - x : x) + ox;
                o[x] = sx >= 0 && sx < W ? srow[sx] : 0.0f;
            }
        }
    }
}

void augment_batch(const struct augment *a, int64_t epoch, int64_t row0, float *x, int n,
                   float *scratch)
{
    size_t D = (size_t)a->c * a->h * a->w;
    for (int i = 0; i < n; i++) {
        struct augment_draw d;
        augment_draw(a, epoch, row0 + i, &d);
        if (d.dy == (a->padding > 0 ? a->padding : 0) && d.dx == d.dy && !d.flip) continue;
        float *img = x + (size_t)i * D;
        augment_image(a, &d, img, scratch);
        memcpy(img, scratch, sizeof(float) * D);
    }
}
