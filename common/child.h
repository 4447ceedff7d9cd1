/* Waiting for a child process that may be stuck for good: a dataset reader
 * blocked inside libhdf5 on a hostile file, or forked while another thread
 * held a lock that the child then needs (glibc's malloc is safe across fork,
 * GCC 12's AddressSanitizer allocator is not). */
#ifndef MLQ_CHILD_H
#define MLQ_CHILD_H

#include <sys/types.h>

/* Waits for child pid to end, *status as waitpid's. A child that neither
 * runs on a CPU nor reads a byte for stall_s seconds is stuck: it is killed
 * (SIGKILL), reaped, and -ETIMEDOUT returned. A child that sleeps on purpose
 * looks stuck too, so stall_s must be longer than any such sleep; stall_s <= 0
 * waits without a limit. 0, or -errno when waiting failed. */
int child_wait(pid_t pid, double stall_s, int *status);

#endif
