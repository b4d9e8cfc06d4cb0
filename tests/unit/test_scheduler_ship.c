/*
 * test_scheduler_ship.c: the back-off of the scheduler's `dbplane wal-ship` runs
 * (src/control/scheduler.c) on a simulated clock, the real tick against an in-memory
 * store, with /bin/false standing in for a failing wal-ship (the primary down, the store
 * unwritable) and then /bin/true for a working one. After failures the next run waits
 * 1 s, doubled per failure in a row, at most 60 s; a failure is logged at warn level
 * the 1st, 2nd, 4th, 8th... time only; the first success logs wal_ship_recovered and
 * ends the back-off.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "control/scheduler.h"

/* 2026-11-22T03:01:00Z */
#define T0 (1795316460LL * 1000)
#define STEP 100 /* ms of simulated time per tick */

static void tick(ctl_scheduler_t *s, store_t *st, int64_t now)
{
    s->last_tick_ms = 0; /* no rate limit in tests */
    ctl_scheduler_tick(s, st, now);
}

/* Waits until the running wal-ship child has exited, leaving it for the tick to reap. */
static void wait_exit(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
}

/* Counts the lines of file `path` that contain both a and b. */
static int count_lines(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, a) && strstr(line, b);
    fclose(f);
    return n;
}

static void test_ship_backoff(void **state)
{
    (void)state;
    char dir[] = "/tmp/dbplane-ship-XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* A WAL spool holding a file: the scheduler ships whenever the back-off allows. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/clusters", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/clusters/default", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/clusters/default/db", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/clusters/default/db/wal-spool", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/clusters/default/db/wal-spool/000000010000000000000001", dir);
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);

    store_t *st;
    dbp_err_t err;
    assert_int_equal(store_open(&st, ":memory:", &err), 0);
    const char *json = "{\"apiVersion\":\"dbplane/v1\",\"kind\":\"Backup\",\"metadata\":"
                       "{\"name\":\"arch\"},\"spec\":{\"cluster\":\"db\",\"type\":\"physical\","
                       "\"store\":\"local\",\"pitr\":true}}";
    assert_int_equal(store_put_resource(st, "default", "Backup", "arch", json, NULL, NULL, &err),
                     0);
    ctl_scheduler_t s;
    ctl_scheduler_init(&s, dir);
    snprintf(s.exe, sizeof(s.exe), "/bin/false");
    snprintf(s.log_path, sizeof(s.log_path), "/dev/null");

    /* The scheduler's log lines go to stderr: into a file for the duration. */
    char logp[PATH_MAX + 16];
    snprintf(logp, sizeof(logp), "%s/log", dir);
    int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(logfd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(logfd, STDERR_FILENO), STDERR_FILENO);
    close(logfd);
    dbp_log_set_level(DBP_LOG_INFO);

    /* 130 s of simulated failures: runs start at 0, 1, 3, 7, 15, 31, 63 and 123 s (the
     * pause doubles from 1 s and stops growing at 60 s). */
    int64_t starts[16];
    int nstarts = 0;
    int64_t last_ship = -1;
    for (int64_t t = T0; t < T0 + 130000; t += STEP) {
        tick(&s, st, t);
        assert_int_equal(s.n, 1);
        ctl_sched_entry_t *e = &s.e[0];
        if (e->ship_ms != last_ship && e->ship_pid > 0) {
            assert_true(nstarts < 16);
            starts[nstarts++] = e->ship_ms - T0;
            last_ship = e->ship_ms;
            wait_exit(e->ship_pid);
        }
    }
    const int64_t want[] = {0, 1000, 3000, 7000, 15000, 31000, 63000, 123000};
    int nwant = (int)(sizeof(want) / sizeof(want[0]));
    tick(&s, st, T0 + 130000); /* reaps the 8th run */
    ctl_sched_entry_t *e = &s.e[0];
    assert_int_equal(e->ship_failures, nwant);

    /* The store is writable again: the next run, a full 60 s after the last, succeeds. */
    snprintf(s.exe, sizeof(s.exe), "/bin/true");
    int64_t t = T0 + 130000;
    for (; t < T0 + 200000 && e->ship_ms == T0 + 123000; t += STEP)
        tick(&s, st, t);
    assert_int_equal(e->ship_ms, T0 + 183000);
    wait_exit(e->ship_pid);
    tick(&s, st, t);
    assert_int_equal(e->ship_failures, 0);
    /* No back-off any more: the next tick starts the next run. */
    assert_true(e->ship_pid > 0);
    assert_int_equal(e->ship_ms, t);
    wait_exit(e->ship_pid);

    ctl_scheduler_stop(&s, 1000);
    ctl_scheduler_free(&s);
    store_close(st);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);

    assert_int_equal(nstarts, nwant);
    for (int i = 0; i < nwant; i++)
        assert_int_equal(starts[i], want[i]);
    /* Warnings for failures 1, 2, 4 and 8 only; one recovery line with the count. */
    assert_int_equal(count_lines(logp, "level=warn", "msg=wal_ship_exited"), 4);
    assert_int_equal(count_lines(logp, "msg=wal_ship_exited", "failures=8"), 1);
    assert_int_equal(count_lines(logp, "msg=wal_ship_exited", "failures=3"), 0);
    assert_int_equal(count_lines(logp, "msg=wal_ship_recovered", "failures=8"), 1);

    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ship_backoff)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
