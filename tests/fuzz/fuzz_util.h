/* What the fuzz targets share: the fuzzer's bytes as a file that mlq's
 * readers open by path, and a failed invariant that libFuzzer reports. */
#ifndef MLQ_FUZZ_UTIL_H
#define MLQ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Replaces the contents of one file (under $TMPDIR, else /dev/shm) with data
 * and returns its path, valid until the next call; the file is removed at
 * exit. The readers under test open, stat and read it as any file. */
const char *fuzz_file(const void *data, size_t len);

/* With MLQ_FUZZ_VERBOSE set, says what became of an input (accepted, or
 * refused and why): to check seeds and to read a reproduction's run. */
void fuzz_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A property of mlq's code that must hold whatever the input: prints what
 * broke and aborts, so that libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                            \
    } while (0)
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#endif
