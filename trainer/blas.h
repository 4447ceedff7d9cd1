/* OpenBLAS set-up: the right kernel and the thread count.
 *
 * Debian's OpenBLAS 0.3.21 does not know recent processors and falls back to
 * its generic Prescott kernel, several times slower than the one the CPU can
 * run. OpenBLAS picks its kernel once, when the library loads, from
 * OPENBLAS_CORETYPE; so when it chose a generic kernel on a CPU with AVX2 or
 * AVX-512 and the user did not choose one, we set the variable and re-exec. */
#ifndef MLQ_BLAS_H
#define MLQ_BLAS_H

/* Call first thing in main. Returns only when no re-exec was needed (or it
 * failed, in which case the generic kernel is kept and a warning logged). */
void blas_choose_kernel(char **argv);

/* The kernel OpenBLAS runs, e.g. "Haswell". */
const char *blas_kernel(void);

/* Sets the BLAS thread count; 0 means all online CPUs. Returns the count. */
int blas_set_threads(int threads);
int blas_threads(void);

#endif
