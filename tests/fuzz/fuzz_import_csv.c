/* The CSV importer (cli/import.c: import_csv_read), what `mlq dataset
 * import-csv` reads, on a file made of the fuzzer's bytes.
 *
 * Input: one flag byte, then the file. Flag bits: 0 --header, 1 --regression,
 * 2 with 0: the label column by the name "label"; else by index, bits 3-5
 * giving -1 (the default, the last column) to 6.
 * Invariants: a refused file says why; an accepted one has at least one row,
 * an input and a label per row, finite inputs, and class ids >= 0. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>

#include "fuzz_util.h"
#include "import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    struct import_csv_options opt = {
        .header = flags & 1,
        .regression = flags & 2,
        .label_name = (flags & 5) == 5 ? "label" : NULL,
        .label_index = (long)((flags >> 3) & 7) - 1,
    };
    struct import_csv t;
    char err[512] = "";
    int rc = import_csv_read(fuzz_file(data + 1, size - 1), &opt, &t, err, sizeof err);
    fuzz_note("%s", rc ? err : "accepted");
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err[0] != '\0', "a file was refused (%d) without a reason", rc);
        FUZZ_CHECK(!t.x && !t.y, "a refused file kept rows");
        return 0;
    }
    FUZZ_CHECK(t.n > 0 && t.ncols >= 2 && t.x && t.y, "%lld rows of %d columns", (long long)t.n,
               t.ncols);
    for (int64_t i = 0; i < t.n * (t.ncols - 1); i++)
        FUZZ_CHECK(isfinite(t.x[i]), "input %lld is not finite", (long long)i);
    for (int64_t i = 0; i < t.n; i++) {
        if (opt.regression)
            FUZZ_CHECK(isfinite(((const float *)t.y)[i]), "target %lld", (long long)i);
        else
            FUZZ_CHECK(((const int32_t *)t.y)[i] >= 0, "class id %lld", (long long)i);
    }
    import_csv_free(&t);
    return 0;
}
