/*
 * test_scheduler.c: the Backup cron scheduler (src/control/scheduler.c) against an
 * in-memory store, with /bin/true standing in for `dbplane backup`: a Backup is not run
 * before its first slot, is run once due, never twice at once for a cluster, not while
 * the catalog shows a live run of the cluster, and gets a status message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control/scheduler.h"

/* 2026-11-22T03:01:00Z */
#define T0 (1795316460LL * 1000)
#define MIN (60LL * 1000)

static void put_backup(store_t *st, const char *name, const char *cluster, const char *cron)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"dbplane/v1\",\"kind\":\"Backup\",\"metadata\":{\"name\":\"%s\"},"
             "\"spec\":{\"cluster\":\"%s\",\"type\":\"logical\",\"store\":\"local\","
             "\"schedule\":\"%s\"}}",
             name, cluster, cron);
    dbp_err_t err;
    assert_int_equal(store_put_resource(st, "default", "Backup", name, json, NULL, NULL, &err), 0);
}

static void tick(ctl_scheduler_t *s, store_t *st, int64_t now)
{
    s->last_tick_ms = 0; /* no rate limit in tests */
    ctl_scheduler_tick(s, st, now);
}

static ctl_sched_entry_t *entry(ctl_scheduler_t *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].backup, name) == 0)
            return &s->e[i];
    return NULL;
}

static void wait_child(ctl_sched_entry_t *e)
{
    /* /bin/true exits at once; give it a moment, then let the tick reap it. */
    for (int i = 0; i < 200 && e->pid > 0; i++) {
        int status;
        if (waitpid(e->pid, &status, WNOHANG) == e->pid)
            e->pid = 0;
        else
            usleep(10000);
    }
}

static int status_cb(const store_resource_t *r, void *ud)
{
    if (strcmp(r->name, "b1") == 0) {
        snprintf((char *)ud, 256, "%s|%s", r->state ? r->state : "", r->message ? r->message : "");
    }
    return 0;
}

static void test_schedule(void **state)
{
    (void)state;
    store_t *st;
    dbp_err_t err;
    assert_int_equal(store_open(&st, ":memory:", &err), 0);
    put_backup(st, "b1", "pg", "*/5 * * * *");
    put_backup(st, "b2", "pg", "*/5 * * * *");
    put_backup(st, "b3", "other", "0 3 * * *");
    ctl_scheduler_t s;
    ctl_scheduler_init(&s, "/tmp");
    snprintf(s.exe, sizeof(s.exe), "/bin/true");
    snprintf(s.log_path, sizeof(s.log_path), "/dev/null");

    tick(&s, st, T0);
    assert_int_equal(s.n, 3);
    assert_int_equal(entry(&s, "b1")->pid, 0); /* first slot is 03:05 */
    assert_int_equal(entry(&s, "b1")->next_ms, T0 + 4 * MIN);
    char status[256] = "";
    assert_int_equal(store_list_resources(st, "default", "Backup", status_cb, status, &err), 0);
    assert_non_null(strstr(status, "ready|scheduled; first run at 2026-11-22T03:05:00Z"));

    tick(&s, st, T0 + 4 * MIN);
    ctl_sched_entry_t *b1 = entry(&s, "b1"), *b2 = entry(&s, "b2"), *b3 = entry(&s, "b3");
    /* one of b1/b2 runs; the other waits for the cluster; b3 is not due */
    assert_true((b1->pid > 0) != (b2->pid > 0));
    assert_int_equal(b3->pid, 0);
    ctl_sched_entry_t *ran = b1->pid > 0 ? b1 : b2;
    wait_child(ran);

    /* A live run of the cluster in the catalog (a manual backup) defers both. */
    store_backup_t row;
    memset(&row, 0, sizeof(row));
    snprintf(row.tenant, sizeof(row.tenant), "default");
    snprintf(row.id, sizeof(row.id), "pg-manual");
    snprintf(row.cluster, sizeof(row.cluster), "pg");
    snprintf(row.status, sizeof(row.status), "running");
    row.pid = getpid();
    row.started_ms = T0 + 4 * MIN;
    assert_int_equal(store_backup_put(st, &row, &err), 0);
    tick(&s, st, T0 + 5 * MIN);
    assert_int_equal(b1->pid, 0);
    assert_int_equal(b2->pid, 0);

    /* Once finished (complete), b1's last run is its catalog row: next slot after it. */
    snprintf(row.status, sizeof(row.status), "complete");
    snprintf(row.backup, sizeof(row.backup), "b1");
    row.pid = 0;
    assert_int_equal(store_backup_put(st, &row, &err), 0);
    tick(&s, st, T0 + 4 * MIN + 30000);
    assert_int_equal(entry(&s, "b1")->next_ms, T0 + 9 * MIN);
    assert_int_equal(entry(&s, "b1")->pid, 0);
    assert_int_equal(store_list_resources(st, "default", "Backup", status_cb, status, &err), 0);
    assert_non_null(strstr(status, "last run pg-manual (complete)"));

    /* A Backup no longer declared is forgotten. */
    assert_int_equal(store_delete_resource(st, "default", "Backup", "b3", &err), 0);
    for (int i = 0; i < s.n; i++)
        wait_child(&s.e[i]);
    tick(&s, st, T0 + 4 * MIN + 40000);
    assert_null(entry(&s, "b3"));

    ctl_scheduler_stop(&s, 1000);
    ctl_scheduler_free(&s);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_schedule)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
