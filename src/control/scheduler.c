/*
 * scheduler.c: cron-scheduled Backups (see scheduler.h). The due test is
 * spec_cron_next(schedule, last start) <= now, where "last start" is the newest catalog
 * run of that Backup (any status) or, for a Backup never run, the time this scheduler
 * first saw it; so a new Backup waits for its first slot, and a failed run is retried at
 * the next slot rather than in a loop.
 */
#include "control/scheduler.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/keyed.h"
#include "common/log.h"

/* How often a polled archive (MariaDB binary logs) is checked for closed logs (ms). */
#define CTL_ARCHIVE_POLL_MS 5000
#include "common/proc.h"
#include "control/reconcile.h"
#include "spec/spec.h"

void ctl_scheduler_init(ctl_scheduler_t *s, const char *data_dir)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->data_dir, sizeof(s->data_dir), "%s", data_dir);
    ssize_t n = readlink("/proc/self/exe", s->exe, sizeof(s->exe) - 1);
    if (n > 0)
        s->exe[n] = '\0';
    else
        snprintf(s->exe, sizeof(s->exe), "/proc/self/exe");
    snprintf(s->log_path, sizeof(s->log_path), "%s/backups.log", data_dir);
}

static ctl_sched_entry_t *entry_get(ctl_scheduler_t *s, const char *tenant, const char *backup,
                                    int64_t now_ms)
{
    char key[sizeof(s->e->key)];
    snprintf(key, sizeof(key), "%s/%s", tenant, backup);
    int n = s->n;
    ctl_sched_entry_t *e = DBP_KEYED_GET(s->e, s->n, s->cap, key, key, 16);
    if (e && s->n > n) { /* new */
        snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
        snprintf(e->backup, sizeof(e->backup), "%s", backup);
        e->first_seen_ms = now_ms;
    }
    return e;
}

/* Longest pause between two `wal-ship` runs after consecutive failures, milliseconds. */
#define CTL_SHIP_BACKOFF_MAX_MS 60000

/* Reaps a finished `wal-ship` child without blocking. A failure (the primary is down, the
 * store unreachable) is logged at warn level the 1st, 2nd, 4th, 8th... time in a row only,
 * so an outage does not flood the log; the first success after failures says so. */
static void reap_ship(ctl_sched_entry_t *e)
{
    int status;
    pid_t w = waitpid(e->ship_pid, &status, WNOHANG);
    if (w == e->ship_pid || (w < 0 && errno == ECHILD)) {
        int code = w == e->ship_pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code != 0) {
            int f = ++e->ship_failures;
            dbp_log((f & (f - 1)) == 0 ? DBP_LOG_WARN : DBP_LOG_DEBUG, "wal_ship_exited",
                    "tenant=%s backup=%s pid=%d status=%d failures=%d", e->tenant, e->backup,
                    (int)e->ship_pid, code, f);
        } else if (e->ship_failures > 0) {
            dbp_info("wal_ship_recovered", "tenant=%s backup=%s failures=%d", e->tenant,
                     e->backup, e->ship_failures);
            e->ship_failures = 0;
        }
        e->ship_pid = 0;
    }
}

/* Milliseconds to wait after a failed `wal-ship` before the next run: 1 s doubled per
 * consecutive failure, at most CTL_SHIP_BACKOFF_MAX_MS; 0 when the last run succeeded. */
static int64_t ship_backoff_ms(const ctl_sched_entry_t *e)
{
    if (e->ship_failures <= 0)
        return 0;
    int shift = e->ship_failures - 1 < 6 ? e->ship_failures - 1 : 6;
    int64_t ms = (int64_t)1000 << shift;
    return ms < CTL_SHIP_BACKOFF_MAX_MS ? ms : CTL_SHIP_BACKOFF_MAX_MS;
}

/* Reaps finished children without blocking. */
static void reap(ctl_scheduler_t *s)
{
    for (int i = 0; i < s->n; i++) {
        ctl_sched_entry_t *e = &s->e[i];
        if (e->ship_pid > 0)
            reap_ship(e);
        if (e->pid <= 0)
            continue;
        int status;
        pid_t w = waitpid(e->pid, &status, WNOHANG);
        if (w == e->pid || (w < 0 && errno == ECHILD)) {
            int code = w == e->pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            dbp_log(code == 0 ? DBP_LOG_INFO : DBP_LOG_WARN, "scheduled_backup_exited",
                    "tenant=%s backup=%s pid=%d status=%d log=%s", e->tenant, e->backup,
                    (int)e->pid, code, dbp_log_q(s->log_path));
            e->pid = 0;
        }
    }
}

/* Facts about a Backup's runs gathered from the catalog. */
typedef struct runs_info {
    const char *backup;
    const char *cluster;
    int64_t last_start;      /* newest start of this Backup's runs; 0 none */
    char last_status[16];
    char last_id[96];
    bool cluster_running;    /* some run of the cluster is "running" */
} runs_info_t;

static int runs_cb(const store_backup_t *b, void *ud)
{
    runs_info_t *ri = ud;
    if (strcmp(b->status, "running") == 0)
        ri->cluster_running = true;
    if (strcmp(b->backup, ri->backup) == 0 && b->started_ms >= ri->last_start) {
        ri->last_start = b->started_ms;
        snprintf(ri->last_status, sizeof(ri->last_status), "%s", b->status);
        snprintf(ri->last_id, sizeof(ri->last_id), "%s", b->id);
    }
    return 0;
}

static bool cluster_busy(const ctl_scheduler_t *s, const char *tenant, const char *cluster)
{
    for (int i = 0; i < s->n; i++)
        if (s->e[i].pid > 0 && strcmp(s->e[i].tenant, tenant) == 0 &&
            strcmp(s->e[i].cluster, cluster) == 0)
            return true;
    return false;
}

/* Starts `dbplane backup` for entry e. */
static void spawn(ctl_scheduler_t *s, ctl_sched_entry_t *e, int64_t now_ms)
{
    char *argv[] = {s->exe,       "backup",   e->cluster,       "--backup", e->backup,
                    "--tenant",   e->tenant,  "--data-dir",     s->data_dir,
                    "--retention", NULL};
    dbp_err_t err;
    pid_t pid = 0;
    if (dbp_proc_spawn(argv, NULL, NULL, s->log_path, NULL, &pid, &err) != 0) {
        dbp_error("scheduled_backup_spawn_failed", "tenant=%s backup=%s error=%s", e->tenant,
                  e->backup, dbp_log_q(err.msg));
        return;
    }
    e->pid = pid;
    e->started_ms = now_ms;
    dbp_info("scheduled_backup_started", "tenant=%s backup=%s cluster=%s pid=%d", e->tenant,
             e->backup, e->cluster, (int)pid);
}

/* True when the spool directory holds a file handed over by the server. */
static bool spool_ready(const char *spool)
{
    DIR *d = opendir(spool);
    if (!d)
        return false;
    struct dirent *de;
    bool ready = false;
    while (!ready && (de = readdir(d)))
        ready = de->d_name[0] != '.';
    closedir(d);
    return ready;
}

/* Ships the WAL spool of a pitr Backup's cluster when it holds files. Engines whose
 * server has no archive hook (MariaDB: binary logs, backup/binlog.c) are polled instead:
 * once after start, then every CTL_ARCHIVE_POLL_MS while the last poll left its state
 * file "<spool>.binlog". */
static void ship(ctl_scheduler_t *s, ctl_sched_entry_t *e, const char *cluster, int64_t now_ms)
{
    char spool[PATH_MAX], polled[PATH_MAX + 16];
    ctl_wal_spool_path(spool, sizeof(spool), s->data_dir, e->tenant, cluster);
    snprintf(polled, sizeof(polled), "%s.binlog", spool);
    bool poll = e->ship_ms == 0 ||
                (now_ms - e->ship_ms >= CTL_ARCHIVE_POLL_MS && access(polled, F_OK) == 0);
    if (e->ship_pid > 0 || (!poll && !spool_ready(spool)) ||
        now_ms - e->ship_ms < ship_backoff_ms(e))
        return;
    e->ship_ms = now_ms;
    char *argv[] = {s->exe, "wal-ship", (char *)cluster, "--tenant", e->tenant, "--data-dir",
                    s->data_dir, NULL};
    dbp_err_t err;
    pid_t pid = 0;
    if (dbp_proc_spawn(argv, NULL, NULL, s->log_path, NULL, &pid, &err) != 0) {
        dbp_error("wal_ship_spawn_failed", "tenant=%s cluster=%s error=%s", e->tenant, cluster,
                  dbp_log_q(err.msg));
        return;
    }
    e->ship_pid = pid;
    dbp_debug("wal_ship_started", "tenant=%s cluster=%s pid=%d", e->tenant, cluster, (int)pid);
}

typedef struct tick_ctx {
    ctl_scheduler_t *s;
    store_t *store;
    int64_t now_ms;
} tick_ctx_t;

static void set_status(tick_ctx_t *t, ctl_sched_entry_t *e, int64_t generation, const char *msg)
{
    if (strcmp(e->status_msg, msg) == 0)
        return;
    dbp_err_t err;
    if (store_set_status(t->store, e->tenant, "Backup", e->backup, generation, "ready", msg,
                         &err) != 0) {
        dbp_warn("status_write_failed", "backup=%s error=%s", e->backup, dbp_log_q(err.msg));
        return;
    }
    snprintf(e->status_msg, sizeof(e->status_msg), "%s", msg);
}

static int backup_cb(const store_resource_t *sr, void *ud)
{
    tick_ctx_t *t = ud;
    spec_set_t set;
    spec_diags_t diags;
    spec_set_init(&set);
    spec_diags_init(&diags);
    if (spec_parse_buffer(&set, "<store>", sr->json, strlen(sr->json), &diags) != 0 ||
        set.n != 1 || set.items[0]->kind != SPEC_KIND_BACKUP) {
        spec_diags_free(&diags);
        spec_set_free(&set);
        return 0;
    }
    const spec_backup_t *b = &set.items[0]->u.backup;
    ctl_sched_entry_t *e = entry_get(t->s, sr->tenant, sr->name, t->now_ms);
    if (e && b->pitr.v && b->cluster.v) {
        e->seen = true;
        ship(t->s, e, b->cluster.v, t->now_ms);
    }
    if (e && b->cluster.v && !b->schedule.set) {
        /* Nothing to schedule: runs are taken by hand (`dbplane backup`). */
        e->seen = true;
        set_status(t, e, sr->generation,
                   b->pitr.v ? "no schedule; WAL archiving on" : "no schedule");
    }
    if (!e || !b->schedule.set || !b->cluster.v)
        goto out;
    e->seen = true;
    snprintf(e->cluster, sizeof(e->cluster), "%s", b->cluster.v);
    runs_info_t ri = {.backup = sr->name, .cluster = b->cluster.v};
    dbp_err_t err;
    if (store_backup_list(t->store, sr->tenant, b->cluster.v, runs_cb, &ri, &err) != 0) {
        dbp_warn("scheduler_catalog_failed", "error=%s", dbp_log_q(err.msg));
        goto out;
    }
    int64_t base = ri.last_start ? ri.last_start : e->first_seen_ms;
    time_t next = spec_cron_next(&b->cron, (time_t)(base / 1000));
    e->next_ms = next > 0 ? (int64_t)next * 1000 : 0;
    if (e->pid == 0 && e->next_ms && e->next_ms <= t->now_ms) {
        if (ri.cluster_running || cluster_busy(t->s, sr->tenant, b->cluster.v))
            dbp_debug("scheduled_backup_deferred", "backup=%s reason=cluster_busy", sr->name);
        else
            spawn(t->s, e, t->now_ms);
    }
    char nb[32] = "-", lb[32] = "";
    if (e->next_ms) {
        time_t nt = (time_t)(e->next_ms / 1000);
        struct tm tm;
        gmtime_r(&nt, &tm);
        strftime(nb, sizeof(nb), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    char msg[256];
    const char *arch = b->pitr.v ? "; WAL archiving on" : "";
    if (e->pid > 0)
        snprintf(msg, sizeof(msg), "running (pid %d); next slot after it %s%s", (int)e->pid, nb,
                 arch);
    else if (ri.last_id[0]) {
        time_t lt = (time_t)(ri.last_start / 1000);
        struct tm tm;
        gmtime_r(&lt, &tm);
        strftime(lb, sizeof(lb), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(msg, sizeof(msg), "last run %s (%s) at %s; next at %s%s", ri.last_id,
                 ri.last_status, lb, nb, arch);
    } else
        snprintf(msg, sizeof(msg), "scheduled; first run at %s%s", nb, arch);
    set_status(t, e, sr->generation, msg);
out:
    spec_diags_free(&diags);
    spec_set_free(&set);
    return 0;
}

void ctl_scheduler_tick(ctl_scheduler_t *s, store_t *store, int64_t now_ms)
{
    int64_t mono = dbp_now_ms();
    if (s->last_tick_ms && mono - s->last_tick_ms < 1000)
        return;
    s->last_tick_ms = mono;
    reap(s);
    dbp_err_t err;
    if (store_catalog_reap_dead(store, NULL, &err) != 0)
        dbp_warn("catalog_reap_failed", "error=%s", dbp_log_q(err.msg));
    for (int i = 0; i < s->n; i++)
        s->e[i].seen = false;
    tick_ctx_t t = {.s = s, .store = store, .now_ms = now_ms};
    if (store_list_resources(store, NULL, "Backup", backup_cb, &t, &err) != 0)
        dbp_warn("scheduler_list_failed", "error=%s", dbp_log_q(err.msg));
    /* Forget Backups no longer declared once their child (if any) has finished. */
    for (int i = 0; i < s->n;) {
        if (!s->e[i].seen && s->e[i].pid == 0 && s->e[i].ship_pid == 0) {
            s->e[i] = s->e[s->n - 1];
            s->n--;
        } else {
            i++;
        }
    }
}

void ctl_scheduler_stop(ctl_scheduler_t *s, int timeout_ms)
{
    int running = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->e[i].pid > 0) {
            kill(s->e[i].pid, SIGTERM);
            running++;
        }
        if (s->e[i].ship_pid > 0) {
            kill(s->e[i].ship_pid, SIGTERM);
            running++;
        }
    }
    int64_t deadline = dbp_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    while (running) {
        reap(s);
        running = 0;
        for (int i = 0; i < s->n; i++)
            running += (s->e[i].pid > 0) + (s->e[i].ship_pid > 0);
        if (!running || dbp_now_ms() >= deadline)
            break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < s->n; i++) {
        if (s->e[i].ship_pid > 0) {
            kill(s->e[i].ship_pid, SIGKILL);
            int status;
            waitpid(s->e[i].ship_pid, &status, 0);
            s->e[i].ship_pid = 0;
        }
        if (s->e[i].pid > 0) {
            kill(-s->e[i].pid, SIGKILL);
            kill(s->e[i].pid, SIGKILL);
            int status;
            waitpid(s->e[i].pid, &status, 0);
            s->e[i].pid = 0;
        }
    }
}

void ctl_scheduler_free(ctl_scheduler_t *s)
{
    free(s->e);
    s->e = NULL;
    s->n = s->cap = 0;
}
