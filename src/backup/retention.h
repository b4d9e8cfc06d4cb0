/*
 * retention.h: which backup runs to delete, as a pure function over the catalog's rows
 * of one Backup (or one cluster and type), so the policy is unit-tested apart from the
 * stores. The policy:
 *
 *  - The newest complete run is never deleted, whatever the age or count limits say.
 *  - Complete runs beyond the newest `max_count` are deleted (0 = no count limit).
 *  - Complete runs that finished more than `max_age_ms` ago are deleted (0 = no age
 *    limit), except, when `pitr` is set, the newest of them: a point-in-time restore to
 *    the oldest moment of the window [now - max_age, now] starts from that run.
 *  - Failed runs are deleted once a complete run started after them exists, or once
 *    older than the age limit; running runs are never touched.
 */
#ifndef DBP_BACKUP_RETENTION_H
#define DBP_BACKUP_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* State of a run as retention sees it. */
typedef enum backup_run_state {
    BACKUP_RUN_RUNNING = 0,
    BACKUP_RUN_COMPLETE,
    BACKUP_RUN_FAILED,
} backup_run_state_t;

/* One run; `remove` is the output. */
typedef struct backup_retention_item {
    int64_t started_ms;
    int64_t finished_ms; /* 0 when not finished */
    backup_run_state_t state;
    bool remove;         /* set by backup_retention_select */
} backup_retention_item_t;

/* The limits; zero means "no limit". */
typedef struct backup_retention_policy {
    int64_t max_age_ms;
    int64_t max_count;
    bool pitr;
} backup_retention_policy_t;

/* Sets items[i].remove for the n runs (any order) under policy `p` at time now_ms (unix
 * ms). Returns how many are marked. Borrows everything. */
size_t backup_retention_select(backup_retention_item_t *items, size_t n,
                               const backup_retention_policy_t *p, int64_t now_ms);

#endif
