/* How the cli shows things to people, where more than one command does. */
#ifndef MLQ_CLI_RENDER_H
#define MLQ_CLI_RENDER_H

#include <jansson.h>

/* An eval or predict job's result on stdout: the figures, per-class accuracy
 * and the confusion matrix as a grid (rows: true class, columns: predicted).
 * Starts with a blank line and a "result" heading. */
void render_result(json_t *result);

#endif
