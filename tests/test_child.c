/* common/child.h: a child stuck for good (asleep on nothing) is killed after
 * the stall limit and reaped; one that computes, or reads slowly, for longer
 * than the limit is left to finish; one that ends is reported at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"

#define STALL_S 0.6

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void test_stuck_child_killed(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pause(); /* blocked as on a lock nobody will release */
        _exit(0);
    }
    double t0 = now();
    int status = 0;
    assert_int_equal(child_wait(pid, STALL_S, &status), -ETIMEDOUT);
    double took = now() - t0;
    assert_true(took >= STALL_S && took < STALL_S + 2);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1); /* reaped */
}

static void test_busy_child_finishes(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        double end = now() + 3 * STALL_S;
        volatile unsigned long spin = 0;
        while (now() < end)
            spin++;
        _exit(3);
    }
    int status = 0;
    assert_int_equal(child_wait(pid, STALL_S, &status), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
}

/* Little CPU, but bytes read every so often: a slow disk, not a hang. */
static void test_slow_reader_finishes(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/zero", O_RDONLY);
        char buf[4096];
        for (int i = 0; i < 12; i++) {
            if (fd < 0 || read(fd, buf, sizeof buf) <= 0) _exit(1);
            sleep_s(STALL_S / 4);
        }
        _exit(4);
    }
    int status = 0;
    assert_int_equal(child_wait(pid, STALL_S, &status), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 4);
}

static void test_quick_child_at_once(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(5);
    double t0 = now();
    int status = 0;
    assert_int_equal(child_wait(pid, 30, &status), 0);
    assert_true(now() - t0 < 0.15); /* woken by the exit, not by the next look */
    assert_int_equal(WEXITSTATUS(status), 5);
    /* No limit: a plain wait. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(6);
    assert_int_equal(child_wait(pid, 0, &status), 0);
    assert_int_equal(WEXITSTATUS(status), 6);
    assert_int_equal(child_wait(pid, 1, &status), -ECHILD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stuck_child_killed),
        cmocka_unit_test(test_busy_child_finishes),
        cmocka_unit_test(test_slow_reader_finishes),
        cmocka_unit_test(test_quick_child_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
