#include "blas.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "log.h"

/* Declared by OpenBLAS, not by every cblas.h. */
char *openblas_get_corename(void);
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static int is_generic(const char *core)
{
    static const char *const generic[] = {
        "Prescott",   "Core2",     "Penryn", "Dunnington", "Nehalem",      "Atom",     "Katmai",
        "Coppermine", "Northwood", "Banias", "Opteron",    "Opteron_SSE3", "Barcelona"};
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (strcasecmp(core, generic[i]) == 0) return 1;
    return 0;
}

void blas_choose_kernel(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("MLQ_BLAS_REEXEC")) return;
    const char *core = openblas_get_corename();
    if (!core || !is_generic(core)) return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;
    /* MLQ_BLAS_REEXEC guards against a loop if the variable has no effect. */
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0 || setenv("MLQ_BLAS_REEXEC", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
    log_warn("OpenBLAS runs its generic %s kernel; re-exec with OPENBLAS_CORETYPE=%s failed: %s",
             core, want, strerror(errno));
    unsetenv("OPENBLAS_CORETYPE");
}

const char *blas_kernel(void)
{
    const char *core = openblas_get_corename();
    return core ? core : "unknown";
}

int blas_set_threads(int threads)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    openblas_set_num_threads(threads);
    return threads;
}

int blas_threads(void)
{
    return openblas_get_num_threads();
}
