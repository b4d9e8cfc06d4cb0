/*
 * scheduler.h: the daemon's cron scheduler for Backup resources. Each tick reads the
 * declared Backups and the backup catalog from the store, and for every Backup whose
 * cron schedule (spec.schedule) has a slot due since its last run, spawns
 * `dbplane backup CLUSTER --backup NAME --tenant T --data-dir D --retention` as a child
 * process (the binary is /proc/self/exe), exactly what an operator would type. The child
 * takes the backup, verifies it when the Backup says so, and applies the Backup's
 * retention; its output goes to <data dir>/backups.log. At most one scheduled backup
 * runs per cluster at a time, and none starts while any run of that cluster is in the
 * catalog as running (a manual `dbplane backup`, say). A slot missed while the daemon was
 * down runs once when it comes back, not once per missed slot.
 *
 * For a Backup with `pitr: true` it also ships the cluster's WAL spool: whenever the spool
 * holds files and no shipper runs, it spawns `dbplane wal-ship CLUSTER --tenant T
 * --data-dir D` (backup/wal.c), output to the same log.
 *
 * The scheduler never blocks: spawning and reaping are non-blocking, so it can be called
 * from the control loop every pass.
 */
#ifndef DBP_CONTROL_SCHEDULER_H
#define DBP_CONTROL_SCHEDULER_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

/* What the scheduler knows about one Backup between ticks. */
typedef struct ctl_sched_entry {
    char key[130]; /* "tenant/backup" */
    char tenant[64];
    char backup[64];
    char cluster[64];
    int64_t first_seen_ms; /* unix ms the scheduler first saw it (cron base when never run) */
    int64_t next_ms;       /* unix ms of the next due slot, for status; 0 unknown */
    pid_t pid;             /* running child, 0 when none */
    pid_t ship_pid;        /* running `dbplane wal-ship` of a pitr Backup, 0 when none */
    int64_t ship_ms;       /* unix ms the last `wal-ship` was started, 0 never */
    int ship_failures;     /* consecutive failed `wal-ship` runs; drives the back-off */
    int64_t started_ms;    /* unix ms the child was started */
    char status_msg[256];  /* last status message written, to write only on change */
    bool seen;             /* still declared in this tick */
} ctl_sched_entry_t;

/* The scheduler's state, owned by the control loop's thread. */
typedef struct ctl_scheduler {
    char data_dir[PATH_MAX]; /* absolute */
    char exe[PATH_MAX];      /* the dbplane binary */
    char log_path[PATH_MAX]; /* children's output */
    ctl_sched_entry_t *e;
    int n, cap;
    int64_t last_tick_ms;    /* monotonic */
} ctl_scheduler_t;

/* Prepares the scheduler for the data dir `data_dir` (absolute). Resolves /proc/self/exe
 * now, so a binary replaced on disk later does not change what is spawned. */
void ctl_scheduler_init(ctl_scheduler_t *s, const char *data_dir);

/* One tick at wall-clock time now_ms (unix ms): reaps finished children, then starts the
 * due backups as described above and records each Backup's status ("ready", with the
 * last and next run in the message). Ticks closer than 1 s apart return at once. Errors
 * are logged; nothing is returned. `store` is borrowed (the daemon's connection). */
void ctl_scheduler_tick(ctl_scheduler_t *s, store_t *store, int64_t now_ms);

/* Asks running backup children to stop (SIGTERM: each discards its partial run and
 * records it as failed), waits up to `timeout_ms` for them, then SIGKILLs the rest. */
void ctl_scheduler_stop(ctl_scheduler_t *s, int timeout_ms);

/* Frees the scheduler's memory (call after ctl_scheduler_stop). */
void ctl_scheduler_free(ctl_scheduler_t *s);

#endif
