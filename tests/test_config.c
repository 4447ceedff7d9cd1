/* Configuration: defaults, the file (and its errors, with file:line), the
 * environment over the file, flags over the environment, and origins. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/wait.h>

#include "config.h"
#include "up_state.h"

struct fixture {
    char dir[64];
    char file[128];
};

static const char *all_env[] = {
    "MLQ_CONFIG", "MLQ_BROKER", "MLQ_DB", "STATE_DIRECTORY", "XDG_CONFIG_HOME",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof all_env / sizeof all_env[0]; i++)
        unsetenv(all_env[i]);
    for (int k = 0; k < CONFIG_NKEYS; k++)
        unsetenv(config_key_env(k));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/mlq-test-config-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->file, sizeof f->file, "%s/mlq.conf", f->dir);
    clear_env();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->file);
    rmdir(f->dir);
    free(f);
    clear_env();
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void test_defaults(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    /* An empty file: every value is its default. */
    write_file(f->file, "");
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_true(c.file_found);
    assert_string_equal(c.broker_endpoint, "tcp://127.0.0.1:5555");
    assert_string_equal(c.broker_bind, "tcp://127.0.0.1:5555");
    assert_string_equal(c.db_path, "");
    assert_string_equal(c.db_sync, "full");
    assert_string_equal(c.data_root, ".");
    assert_int_equal(c.log_level, LOG_LVL_INFO);
    assert_int_equal(c.heartbeat_interval_ms, 1000);
    assert_int_equal(c.heartbeat_liveness, 3);
    assert_int_equal(c.trainer_threads, 0);
    assert_int_equal(c.trainer_memory_budget_mb, 1024);
    assert_int_equal(c.checkpoint_keep, 3);
    assert_int_equal(c.trainer_dataset_cache_mb, 10240);
    assert_non_null(strstr(c.trainer_dataset_cache_dir, "mlq/datasets"));
    char want[64];
    snprintf(want, sizeof want, "-%ld", (long)getpid());
    assert_non_null(strstr(c.trainer_name, want));
    for (int k = 0; k < CONFIG_NKEYS; k++)
        assert_int_equal(config_source(&c, config_key_name(k)), CONFIG_SRC_DEFAULT);
}

static void test_state_directory_defaults(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    write_file(f->file, "");
    setenv("STATE_DIRECTORY", "/var/lib/mlq:/var/lib/other", 1);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_string_equal(c.data_root, "/var/lib/mlq/datasets");
    assert_string_equal(c.db_path, "/var/lib/mlq/mlq.db");
    /* Not data.root, nor the broker's datasets/ beside the database. */
    assert_string_equal(c.trainer_dataset_cache_dir, "/var/lib/mlq/dataset-cache");
    assert_int_equal(config_source(&c, "data.root"), CONFIG_SRC_DEFAULT);
}

static void test_file_values(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    write_file(f->file, "# a comment\n"
                        "\n"
                        "broker.endpoint = tcp://broker.example:6000\n"
                        "  db.path=/srv/mlq/x#1.db   # trailing comment\n"
                        "db.sync = normal\n"
                        "log.level = debug\n"
                        "heartbeat.interval_ms = 250\n"
                        "trainer.threads = 8\n");
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_string_equal(c.broker_endpoint, "tcp://broker.example:6000");
    assert_string_equal(c.db_path, "/srv/mlq/x#1.db");
    assert_string_equal(c.db_sync, "normal");
    assert_int_equal(c.log_level, LOG_LVL_DEBUG);
    assert_int_equal(c.heartbeat_interval_ms, 250);
    assert_int_equal(c.trainer_threads, 8);
    assert_int_equal(config_source(&c, "broker.endpoint"), CONFIG_SRC_FILE);
    assert_int_equal(c.origin[CONFIG_BROKER_ENDPOINT].line, 3);
    assert_int_equal(c.origin[CONFIG_TRAINER_THREADS].line, 8);
    assert_int_equal(config_source(&c, "heartbeat.liveness"), CONFIG_SRC_DEFAULT);
    assert_int_equal(config_source(&c, "no.such"), -1);
}

/* Each bad file must fail, naming the file and the line. */
static void test_file_errors(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *text;
        int line;
        const char *words;
    } cases[] = {
        {"log.level = info\nbogus.key = 1\n", 2, "unknown key 'bogus.key'"},
        {"\n\njust some words\n", 3, "expected 'key = value'"},
        {"heartbeat.interval_ms = fast\n", 1, "not an integer"},
        {"heartbeat.liveness = 0\n", 1, "heartbeat.liveness"},
        {"trainer.threads = 3x\n", 1, "not an integer"},
        {"db.sync = sometimes\n", 1, "'full' or 'normal'"},
        {"log.level = loud\n", 1, "log.level"},
        {"# ok\nbroker.endpoint = 127.0.0.1:5555\n", 2, "tcp://HOST:PORT"},
        {"trainer.name =\n", 1, "empty value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config c;
        char err[512] = "", want[256];
        write_file(f->file, cases[i].text);
        assert_int_equal(config_load(&c, f->file, err, sizeof err), -EINVAL);
        snprintf(want, sizeof want, "%s:%d: ", f->file, cases[i].line);
        if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, cases[i].words))
            fail_msg("case %zu: got '%s', want prefix '%s' and '%s'", i, err, want, cases[i].words);
    }
}

static void test_missing_files(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    /* Named explicitly (parameter or MLQ_CONFIG): must exist. */
    assert_int_equal(config_load(&c, f->file, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, f->file));
    setenv("MLQ_CONFIG", f->file, 1);
    err[0] = '\0';
    assert_int_equal(config_load(&c, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, f->file));
    /* MLQ_CONFIG is the file consulted when no parameter is given. */
    write_file(f->file, "checkpoint.keep = 7\n");
    assert_int_equal(config_load(&c, NULL, err, sizeof err), 0);
    assert_int_equal(c.checkpoint_keep, 7);
    assert_string_equal(c.file, f->file);
}

static void test_env_overrides_file(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    write_file(f->file, "broker.endpoint = tcp://file:1\n"
                        "db.path = /file.db\n"
                        "heartbeat.liveness = 5\n"
                        "trainer.memory_budget_mb = 64\n");
    setenv("MLQ_BROKER", "tcp://env:2", 1);
    setenv("MLQ_DB", "/alias.db", 1);
    setenv("MLQ_DB_PATH", "/long.db", 1); /* the long name beats the alias */
    setenv("MLQ_HEARTBEAT_LIVENESS", "9", 1);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_string_equal(c.broker_endpoint, "tcp://env:2");
    assert_string_equal(c.db_path, "/long.db");
    assert_int_equal(c.heartbeat_liveness, 9);
    assert_int_equal(c.trainer_memory_budget_mb, 64);
    assert_int_equal(config_source(&c, "broker.endpoint"), CONFIG_SRC_ENV);
    assert_string_equal(c.origin[CONFIG_BROKER_ENDPOINT].env, "MLQ_BROKER");
    assert_string_equal(c.origin[CONFIG_DB_PATH].env, "MLQ_DB_PATH");
    assert_int_equal(config_source(&c, "trainer.memory_budget_mb"), CONFIG_SRC_FILE);

    setenv("MLQ_TRAINER_THREADS", "many", 1);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "MLQ_TRAINER_THREADS"));
}

static void test_flags_override_env(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "";
    write_file(f->file, "log.level = warn\n");
    setenv("MLQ_LOG_LEVEL", "error", 1);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(c.log_level, LOG_LVL_ERROR);
    assert_int_equal(config_set(&c, "log.level", "debug", CONFIG_SRC_FLAG, err, sizeof err), 0);
    assert_int_equal(c.log_level, LOG_LVL_DEBUG);
    assert_int_equal(config_source(&c, "log.level"), CONFIG_SRC_FLAG);

    /* A bad flag leaves the value and its origin alone. */
    assert_int_equal(config_set(&c, "log.level", "shout", CONFIG_SRC_FLAG, err, sizeof err),
                     -EINVAL);
    assert_int_equal(c.log_level, LOG_LVL_DEBUG);
    assert_int_equal(config_set(&c, "no.such", "1", CONFIG_SRC_FLAG, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "no.such"));

    char buf[64];
    assert_int_equal(config_get(&c, "log.level", buf, sizeof buf), 0);
    assert_string_equal(buf, "debug");
}

static void test_dump(void **state)
{
    struct fixture *f = *state;
    struct config c;
    char err[512] = "", path[160];
    write_file(f->file, "\nheartbeat.interval_ms = 500\n");
    setenv("MLQ_BROKER", "ipc:///run/mlq/broker", 1);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(config_set(&c, "db.sync", "normal", CONFIG_SRC_FLAG, err, sizeof err), 0);

    snprintf(path, sizeof path, "%s/dump", f->dir);
    FILE *out = fopen(path, "w+");
    assert_non_null(out);
    assert_int_equal(config_dump(&c, out, false), 0);
    rewind(out);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, out);
    text[n] = '\0';
    char want[256];
    snprintf(want, sizeof want, "# file %s:2\n", f->file);
    assert_non_null(strstr(text, "heartbeat.interval_ms     = 500"));
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "ipc:///run/mlq/broker    # env MLQ_BROKER\n"));
    assert_non_null(strstr(text, "# flag\n"));
    assert_non_null(strstr(text, "checkpoint.keep           = 3"));

    rewind(out);
    assert_int_equal(ftruncate(fileno(out), 0), 0);
    assert_int_equal(config_dump(&c, out, true), 0);
    rewind(out);
    n = fread(text, 1, sizeof text - 1, out);
    text[n] = '\0';
    fclose(out);
    unlink(path);
    assert_non_null(strstr(text, "\"heartbeat.interval_ms\": {\n      \"value\": 500,"));
    assert_non_null(strstr(text, "\"source\": \"env\""));
    assert_non_null(strstr(text, "\"where\": \"MLQ_BROKER\""));
    assert_non_null(strstr(text, "\"file_found\": true"));
}

/* The shipped systemd/mlq.conf: loads as is, and every commented "#key = value"
 * line, uncommented, names a real key and shows its true service default. */
static const char *slurp_shipped(void)
{
    static char text[16384];
    FILE *f = fopen(MLQ_SOURCE_DIR "/systemd/mlq.conf", "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    return text;
}

static void test_shipped_file(void **state)
{
    struct fixture *f = *state;
    struct config c, want;
    char err[512] = "", line[512];
    setenv("STATE_DIRECTORY", "/var/lib/mlq", 1);
    assert_int_equal(config_load(&c, MLQ_SOURCE_DIR "/systemd/mlq.conf", err, sizeof err), 0);
    for (int k = 0; k < CONFIG_NKEYS; k++)
        assert_int_equal(c.origin[k].src, CONFIG_SRC_DEFAULT);

    FILE *in = fopen(MLQ_SOURCE_DIR "/systemd/mlq.conf", "r");
    FILE *out = fopen(f->file, "w");
    assert_non_null(in);
    assert_non_null(out);
    int uncommented = 0;
    while (fgets(line, sizeof line, in)) {
        char key[64], value[256];
        if (sscanf(line, "#%63[a-z_.] = %255s", key, value) == 2 && strchr(key, '.')) {
            fputs(line + 1, out);
            uncommented++;
        }
    }
    fclose(in);
    fclose(out);
    /* All but trainer.name and the keys, whose default is empty. */
    struct config defaults;
    config_init(&defaults);
    int empty = 0;
    for (int k = 0; k < CONFIG_NKEYS; k++) {
        char v[CONFIG_STR_MAX];
        config_get(&defaults, config_key_name(k), v, sizeof v);
        if (!v[0]) {
            empty++;
            if (!strstr(slurp_shipped(), config_key_name(k)))
                fail_msg("mlq.conf does not mention %s", config_key_name(k));
        }
    }
    assert_int_equal(uncommented, CONFIG_NKEYS - 1 - empty);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    config_init(&want);
    for (int k = 0; k < CONFIG_NKEYS; k++) {
        char got[CONFIG_STR_MAX], exp[CONFIG_STR_MAX];
        config_get(&c, config_key_name(k), got, sizeof got);
        config_get(&want, config_key_name(k), exp, sizeof exp);
        if (strcmp(got, exp) != 0)
            fail_msg("mlq.conf shows %s = %s, the default is %s", config_key_name(k), got, exp);
    }
}

/* A running mlq up's endpoint and database stand in for the defaults only:
 * the file, the environment and flags win; a file whose process is gone, or
 * is another program, is ignored; only its own mlq up removes it. */
static void test_up_state(void **state)
{
    struct fixture *f = *state;
    char err[512] = "", path[256], dir[200];
    setenv("XDG_CONFIG_HOME", f->dir, 1);
    snprintf(dir, sizeof dir, "%s/mlq", f->dir);
    assert_int_equal(up_state_path(path, sizeof path), 0);
    snprintf(err, sizeof err, "%s/up.json", dir);
    assert_string_equal(path, err);
    struct config c;
    write_file(f->file, "");
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(up_state_apply(&c), 0); /* no mlq up */

    struct up_state s = {.keys = true, .started = 1e9};
    snprintf(s.endpoint, sizeof s.endpoint, "ipc:///tmp/up.sock");
    snprintf(s.db, sizeof s.db, "/tmp/up.db");
    assert_int_equal(up_state_write(&s, err, sizeof err), 0);
    assert_int_equal(access(path, R_OK), 0);
    struct up_state r;
    assert_int_equal(up_state_read(&r), 0);
    assert_int_equal(r.pid, (long)getpid());
    assert_true(r.keys);
    assert_string_equal(r.endpoint, "ipc:///tmp/up.sock");

    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(up_state_apply(&c), 2);
    assert_string_equal(c.broker_endpoint, "ipc:///tmp/up.sock");
    assert_string_equal(c.db_path, "/tmp/up.db");
    assert_int_equal(config_source(&c, "broker.endpoint"), CONFIG_SRC_UP);
    assert_string_equal(config_source_name(CONFIG_SRC_UP), "up");
    char dump[8192] = "";
    FILE *mem = fmemopen(dump, sizeof dump - 1, "w");
    assert_int_equal(config_dump(&c, mem, false), 0);
    fclose(mem);
    assert_non_null(strstr(dump, "# up "));
    assert_non_null(strstr(dump, path));

    /* The environment and the file win. */
    setenv("MLQ_BROKER", "tcp://env:1", 1);
    write_file(f->file, "db.path = /file.db\n");
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(up_state_apply(&c), 0);
    assert_string_equal(c.broker_endpoint, "tcp://env:1");
    assert_string_equal(c.db_path, "/file.db");
    unsetenv("MLQ_BROKER");
    write_file(f->file, "");

    /* Another program with this pid by now: ignored. */
    FILE *fp = fopen(path, "w");
    fprintf(fp, "{\"pid\": %ld, \"exe\": \"/nonexistent/mlq\", \"endpoint\": \"ipc:///x\"}\n",
            (long)getpid());
    fclose(fp);
    assert_int_equal(up_state_read(&r), -ENOENT);
    /* A process that is gone: ignored. */
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    fp = fopen(path, "w");
    fprintf(fp, "{\"pid\": %ld, \"endpoint\": \"ipc:///x\"}\n", (long)child);
    fclose(fp);
    assert_int_equal(up_state_read(&r), -ENOENT);
    assert_int_equal(config_load(&c, f->file, err, sizeof err), 0);
    assert_int_equal(up_state_apply(&c), 0);
    assert_string_equal(c.broker_endpoint, "tcp://127.0.0.1:5555");
    /* Not JSON, or without an endpoint: -EINVAL, and nothing applied. */
    write_file(path, "{\"pid\": 1}");
    assert_int_equal(up_state_read(&r), -EINVAL);

    /* Only its own mlq up removes it. */
    assert_int_equal(up_state_write(&s, err, sizeof err), 0);
    up_state_remove((long)getpid() + 1);
    assert_int_equal(access(path, F_OK), 0);
    up_state_remove((long)getpid());
    assert_int_equal(access(path, F_OK), -1);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_up_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_directory_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_override_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shipped_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
