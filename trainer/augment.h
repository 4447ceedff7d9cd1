/* Augmentation of training images: torchvision's RandomCrop(size=(H, W),
 * padding) with zero padding, then RandomHorizontalFlip(p), on each row of
 * a batch of (C, H, W) samples.
 *
 * What a row gets depends only on (seed, epoch, row), the row being its
 * position in the epoch's order, drawn from its own counter-based RNG
 * stream: nothing to save in a checkpoint, and a run resumed at an epoch
 * boundary (or a batch cut differently) draws the same transforms as one
 * that never stopped. */
#ifndef MLQ_AUGMENT_H
#define MLQ_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "spec.h"

struct augment {
    int c, h, w;
    int padding;  /* -1: no crop */
    float flip_p; /* 0: no flip */
    uint64_t seed;
};

/* One row's transform: the crop's top-left corner in the padded image
 * (dy, dx in [0, 2 * padding]) and whether the crop is mirrored. */
struct augment_draw {
    int dy, dx;
    bool flip;
};

/* The augmentation of a spec on samples of shape (c, h, w); false when the
 * spec asks for none. */
bool augment_init(struct augment *a, const struct spec_augment *s, uint64_t seed, int c, int h,
                  int w);

void augment_draw(const struct augment *a, int64_t epoch, int64_t row, struct augment_draw *d);

/* dst = the transform d of the (c, h, w) image src (dst != src). */
void augment_image(const struct augment *a, const struct augment_draw *d, const float *src,
                   float *dst);

/* Transforms rows [row0, row0 + n) of epoch in place; x holds n samples,
 * scratch one. */
void augment_batch(const struct augment *a, int64_t epoch, int64_t row0, float *x, int n,
                   float *scratch);

#endif
