/* common/atomic_file.h: a failed replacement leaves the old file intact and
 * no temporary behind, whether the failure is a write, an fsync, the rename
 * or a disk that is really full (a small tmpfs, when we may mount one); and
 * the programs that write files through it (mlq dataset import-csv, mlq
 * export, predict outputs) keep that guarantee on a full disk. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "atomic_file.h"
#include "testutil.h"

struct ctx {
    char *dir; /* what the files under test are written in */
    char *aux; /* logs, inputs, databases */
    char log[512];
    char path[512];
    char err[1024];
    bool mounted;
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = testutil_tmpdir("atomic")) || !(c->aux = testutil_tmpdir("atomic-aux")))
        return -1;
    snprintf(c->path, sizeof c->path, "%s/file", c->dir);
    snprintf(c->log, sizeof c->log, "%s/sync.log", c->aux);
    atomic_file_seams =
        (struct atomic_file_seams){.write = write, .fsync = fsync, .rename = rename};
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    atomic_file_seams =
        (struct atomic_file_seams){.write = write, .fsync = fsync, .rename = rename};
    if (c->mounted) umount2(c->dir, MNT_DETACH);
    testutil_rmtree(c->dir);
    testutil_rmtree(c->aux);
    free(c->dir);
    free(c->aux);
    free(c);
    return 0;
}

/* Entries in dir other than . and .., with "file" in *has_file. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void assert_file_is(const char *path, const char *text)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf, text);
}

static void test_replaces_with_mode_and_no_temp(void **state)
{
    struct ctx *c = *state;
    mode_t mask = umask(022);
    assert_int_equal(atomic_file_write_all(c->path, "old", 3, 0640, c->err, sizeof c->err), 0);
    assert_int_equal(atomic_file_write_all(c->path, "new", 3, 0640, c->err, sizeof c->err), 0);
    umask(mask);
    assert_file_is(c->path, "new");
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(count_entries(c->dir), 1);
}

static int fsync_calls;
static int fsync_fail_at; /* the call that fails, counted from 1 */
static int failing_fsync(int fd)
{
    if (++fsync_calls == fsync_fail_at) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static ssize_t full_write(int fd, const void *buf, size_t len)
{
    /* Half of it lands, then the disk is full, as write(2) reports it. */
    static bool wrote_half;
    if (!wrote_half && len > 1) {
        wrote_half = true;
        return write(fd, buf, len / 2);
    }
    wrote_half = false;
    errno = ENOSPC;
    return -1;
}

static int failing_rename(const char *from, const char *to)
{
    (void)from;
    (void)to;
    errno = EXDEV;
    return -1;
}

/* Each fault before the rename: the error names the path, the old content
 * stays, the temporary is gone. */
static void test_fault_keeps_old_file(void **state)
{
    struct ctx *c = *state;
    struct {
        const char *what;
        int expect;
    } faults[] = {{"write", -ENOSPC}, {"fsync", -EIO}, {"rename", -EXDEV}};
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
        assert_int_equal(atomic_file_write_all(c->path, "old", 3, 0644, c->err, sizeof c->err), 0);
        fsync_calls = 0;
        fsync_fail_at = 1;
        if (i == 0) atomic_file_seams.write = full_write;
        if (i == 1) atomic_file_seams.fsync = failing_fsync;
        if (i == 2) atomic_file_seams.rename = failing_rename;
        c->err[0] = '\0';
        int rc = atomic_file_write_all(c->path, "new content", 11, 0644, c->err, sizeof c->err);
        atomic_file_seams =
            (struct atomic_file_seams){.write = write, .fsync = fsync, .rename = rename};
        print_message("%s fault: %s\n", faults[i].what, c->err);
        assert_int_equal(rc, faults[i].expect);
        assert_non_null(strstr(c->err, c->path));
        assert_file_is(c->path, "old");
        assert_int_equal(count_entries(c->dir), 1);
    }
}

/* The directory's fsync comes after the rename: the new file is in place,
 * but the caller hears that it may not survive a power cut. */
static void test_directory_sync_failure_is_reported(void **state)
{
    struct ctx *c = *state;
    fsync_calls = 0;
    fsync_fail_at = 2;
    atomic_file_seams.fsync = failing_fsync;
    int rc = atomic_file_write_all(c->path, "new", 3, 0644, c->err, sizeof c->err);
    assert_int_equal(rc, -EIO);
    assert_non_null(strstr(c->err, "directory"));
    assert_int_equal(fsync_calls, 2);
    assert_file_is(c->path, "new");
    assert_int_equal(count_entries(c->dir), 1);
}

/* libhdf5 writes the temporary by name; commit makes it the file, abort
 * removes it. */
static void test_begin_commit_abort_for_hdf5(void **state)
{
    struct ctx *c = *state;
    assert_int_equal(atomic_file_write_all(c->path, "old", 3, 0644, c->err, sizeof c->err), 0);
    struct atomic_file af;
    assert_int_equal(atomic_file_begin(&af, c->path, 0644, c->err, sizeof c->err), 0);
    hid_t f = H5Fcreate(af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Fclose(f) >= 0);
    atomic_file_abort(&af);
    assert_file_is(c->path, "old");
    assert_int_equal(count_entries(c->dir), 1);
    atomic_file_abort(&af); /* twice is harmless */

    assert_int_equal(atomic_file_begin(&af, c->path, 0644, c->err, sizeof c->err), 0);
    f = H5Fcreate(af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Fclose(f) >= 0);
    assert_int_equal(atomic_file_commit(&af, c->err, sizeof c->err), 0);
    atomic_file_abort(&af); /* after commit: leaves the file */
    assert_true(H5Fis_hdf5(c->path) > 0);
    assert_int_equal(count_entries(c->dir), 1);
}

/* A 64 KiB tmpfs over the test directory, or false when we may not mount. */
static bool mount_small_disk(struct ctx *c)
{
    if (geteuid() != 0 || mount("mlq-test", c->dir, "tmpfs", 0, "size=64k") != 0) return false;
    c->mounted = true;
    return true;
}

static void test_full_disk(void **state)
{
    struct ctx *c = *state;
    if (!mount_small_disk(c)) {
        print_message("not root or cannot mount a tmpfs: skipped\n");
        skip();
    }
    assert_int_equal(atomic_file_write_all(c->path, "old", 3, 0644, c->err, sizeof c->err), 0);
    size_t big = 1 << 20;
    char *buf = calloc(1, big);
    assert_non_null(buf);
    int rc = atomic_file_write_all(c->path, buf, big, 0644, c->err, sizeof c->err);
    free(buf);
    print_message("full disk: %s\n", c->err);
    assert_int_equal(rc, -ENOSPC);
    assert_file_is(c->path, "old");
    assert_int_equal(count_entries(c->dir), 1);
}

/* Runs argv to completion under the sync shim (tests/sync_shim.c), its
 * fsync number fail_at failing (0: none), stdout and stderr into the aux
 * dir. Returns the exit status. */
static int run(struct ctx *c, const char *const *argv, int fail_at)
{
    char out[600], fail[16];
    snprintf(out, sizeof out, "%s/output", c->aux);
    snprintf(fail, sizeof fail, "%d", fail_at);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(out, "a", stdout) || !freopen(out, "a", stderr)) _exit(127);
        setenv("LD_PRELOAD", MLQ_SYNC_SHIM, 1);
        setenv("MLQ_SYNC_LOG", c->log, 1);
        if (fail_at) setenv("MLQ_SYNC_FAIL", fail, 1);
        /* Under ASan the shim comes before the sanitizer's runtime. */
        char asan[512];
        const char *old = getenv("ASAN_OPTIONS");
        snprintf(asan, sizeof asan, "%s%sverify_asan_link_order=0", old ? old : "",
                 old && *old ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The guarantee, read from the shim's log: target was renamed into place
 * from a file beside it that had been fsynced, and its directory was
 * fsynced after the rename. */
static void assert_durably_replaced(struct ctx *c, const char *target)
{
    char want[PATH_MAX], dir[PATH_MAX];
    assert_non_null(realpath(target, want));
    snprintf(dir, sizeof dir, "%s", want);
    *strrchr(dir, '/') = '\0';
    FILE *f = fopen(c->log, "r");
    assert_non_null(f);
    char line[3 * PATH_MAX], tmp_synced[PATH_MAX] = "";
    bool renamed = false, file_synced = false, dir_synced = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *arg = strchr(line, ' ');
        if (!arg) continue;
        *arg++ = '\0';
        if (strcmp(line, "fsync") == 0 && !renamed) {
            if (strncmp(arg, dir, strlen(dir)) == 0 && arg[strlen(dir)] == '/')
                snprintf(tmp_synced, sizeof tmp_synced, "%s", arg + strlen(dir) + 1);
        } else if (strcmp(line, "rename") == 0 && !renamed) {
            char *from = strchr(arg, ' ');
            if (!from) continue;
            *from++ = '\0';
            if (strcmp(arg, want) != 0) continue;
            renamed = true;
            file_synced = strcmp(from, tmp_synced) == 0;
        } else if (strcmp(line, "fsync") == 0 && renamed && strcmp(arg, dir) == 0) {
            dir_synced = true;
        }
    }
    fclose(f);
    if (!renamed || !file_synced || !dir_synced)
        print_message("%s: renamed %d, file synced first %d, directory synced after %d\n", target,
                      renamed, file_synced, dir_synced);
    assert_true(renamed && file_synced && dir_synced);
    unlink(c->log);
}

static void write_csv(const char *path, int rows)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    unsigned x = 1;
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < 8; k++) {
            x = x * 1103515245u + 12345u;
            fprintf(f, "%u.%u,", x % 1000, (x >> 10) % 1000);
        }
        fprintf(f, "%d\n", r % 3);
    }
    fclose(f);
}

/* Every program that replaces a file does it durably: mlq dataset
 * import-csv, mlq-trainer's checkpoint files, mlq export. And a failing
 * fsync leaves the old file (mlq export used to rename without one). */
static void test_every_caller_syncs_file_and_directory(void **state)
{
    struct ctx *c = *state;
    char csv[600], data[600], spec[600], db[600], ckpt[600], model[600], cmd[2048];
    snprintf(csv, sizeof csv, "%s/in.csv", c->aux);
    snprintf(data, sizeof data, "%s/data.h5", c->dir);
    snprintf(spec, sizeof spec, "%s/spec.json", c->aux);
    snprintf(db, sizeof db, "%s/runs.db", c->aux);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", c->dir);
    snprintf(model, sizeof model, "%s/model.h5", c->dir);
    write_csv(csv, 200);
    const char *import[] = {
        MLQ_BINARY_DIR "/cli/mlq", "dataset", "import-csv", csv, "--output", data, NULL};
    assert_int_equal(run(c, import, 0), 0);
    assert_durably_replaced(c, data);

    snprintf(cmd, sizeof cmd,
             "{\"kind\": \"train\", \"dataset\": {\"path\": \"%s\"}, \"model\": {\"layers\": "
             "[8, 4, 3]}, \"optimizer\": {\"name\": \"adam\", \"lr\": 0.01}, \"batch_size\": "
             "32, \"epochs\": 1, \"threads\": 1}",
             data);
    assert_int_equal(testutil_write_file(spec, cmd), 0);
    const char *train[] = {MLQ_BINARY_DIR "/trainer/mlq-trainer",
                           "--standalone",
                           spec,
                           "--db",
                           db,
                           "--checkpoint-dir",
                           ckpt,
                           NULL};
    assert_int_equal(run(c, train, 0), 0);
    snprintf(cmd, sizeof cmd, "%s/last.ckpt", ckpt);
    assert_durably_replaced(c, cmd);

    const char *export[] = {
        MLQ_BINARY_DIR "/cli/mlq", "export", "1", "--db", db, "--output", model, NULL};
    assert_int_equal(run(c, export, 0), 0);
    assert_durably_replaced(c, model);

    /* The first fsync fails: the export fails, the old model stays. */
    struct stat before, after;
    assert_int_equal(stat(model, &before), 0);
    assert_int_not_equal(run(c, export, 1), 0);
    assert_int_equal(stat(model, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(count_entries(c->dir), 3); /* data.h5, ckpt, model.h5 */
    snprintf(cmd, sizeof cmd, "%s/output", c->aux);
    unlink(c->log);
}

/* mlq dataset import-csv onto a full disk: the HDF5 file it replaces stays
 * whole and no temporary is left (the begin/commit path of a real caller). */
static void test_import_on_full_disk_keeps_old_file(void **state)
{
    struct ctx *c = *state;
    char csv[600], out[600];
    snprintf(csv, sizeof csv, "%s/in.csv", c->aux);
    snprintf(out, sizeof out, "%s/data.h5", c->dir);
    if (!mount_small_disk(c)) {
        print_message("not root or cannot mount a tmpfs: skipped\n");
        skip();
    }
    write_csv(csv, 2);
    const char *argv[] = {
        MLQ_BINARY_DIR "/cli/mlq", "dataset", "import-csv", csv, "--output", out, NULL};
    assert_int_equal(run(c, argv, 0), 0);
    struct stat before;
    assert_int_equal(stat(out, &before), 0);
    write_csv(csv, 20000); /* fills 64 KiB many times over, even compressed */
    assert_int_not_equal(run(c, argv, 0), 0);
    struct stat after;
    assert_int_equal(stat(out, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal(count_entries(c->dir), 1);
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replaces_with_mode_and_no_temp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_keeps_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_sync_failure_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_commit_abort_for_hdf5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_on_full_disk_keeps_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_caller_syncs_file_and_directory, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
