/* Shared renderings for people. */
#include "render.h"

#include <stdio.h>

/* An eval or predict job's result for people: the figures, per-class accuracy
 * and the confusion matrix as a grid (rows: true class, columns: predicted). */
void render_result(json_t *result)
{
    json_t *v;
    printf("\nresult\n");
    if ((v = json_object_get(result, "loss")) && json_is_number(v))
        printf("  loss       %.4f\n", json_number_value(v));
    if ((v = json_object_get(result, "accuracy")) && json_is_number(v))
        printf("  accuracy   %.4f\n", json_number_value(v));
    if ((v = json_object_get(result, "mae")) && json_is_number(v))
        printf("  mae        %.4f\n", json_number_value(v));
    if ((v = json_object_get(result, "n")) && json_is_integer(v))
        printf("  rows       %lld\n", (long long)json_integer_value(v));
    if ((v = json_object_get(result, "output")) && json_is_string(v)) {
        json_t *sha = json_object_get(result, "output_sha256");
        if (json_is_string(sha)) /* a dataset at the broker (mlq predict --push) */
            printf("  output     dataset %s (sha256 %.12s...)\n", json_string_value(v),
                   json_string_value(sha));
        else
            printf("  output     %s\n", json_string_value(v));
    }
    if ((v = json_object_get(result, "note")) && json_is_string(v)) /* e.g. stopped early */
        printf("  note       %s\n", json_string_value(v));
    size_t i, j;
    json_t *e;
    if ((v = json_object_get(result, "class_counts")) && json_is_array(v)) {
        printf("  predicted  ");
        json_array_foreach(v, i, e)
            printf("%s%zu: %lld", i ? ", " : "", i, (long long)json_integer_value(e));
        printf("\n");
    }
    json_t *per = json_object_get(result, "per_class_accuracy");
    json_t *cm = json_object_get(result, "confusion_matrix");
    if (!json_is_array(per) || !json_is_array(cm)) return;
    printf("\n  %-8s %8s   confusion (rows: true class, columns: predicted)\n  %-8s %8s  ", "CLASS",
           "ACCURACY", "", "");
    for (j = 0; j < json_array_size(cm); j++)
        printf(" %5zu", j);
    printf("\n");
    json_array_foreach(cm, i, e)
    {
        json_t *acc = json_array_get(per, i);
        if (json_is_number(acc))
            printf("  %-8zu %8.4f  ", i, json_number_value(acc));
        else
            printf("  %-8zu %8s  ", i, "-");
        json_t *cell;
        json_array_foreach(e, j, cell) printf(" %5lld", (long long)json_integer_value(cell));
        printf("\n");
    }
}
