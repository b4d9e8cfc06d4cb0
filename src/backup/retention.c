/*
 * retention.c: the retention policy (see retention.h). O(n^2) over the runs of one
 * Backup, which number in the hundreds at most.
 */
#include "backup/retention.h"

/* Rank of item i among complete runs by start time, newest first (0 = newest). */
static size_t newer_complete(const backup_retention_item_t *it, size_t n, size_t i)
{
    size_t rank = 0;
    for (size_t k = 0; k < n; k++) {
        if (k == i || it[k].state != BACKUP_RUN_COMPLETE)
            continue;
        if (it[k].started_ms > it[i].started_ms ||
            (it[k].started_ms == it[i].started_ms && k > i))
            rank++;
    }
    return rank;
}

size_t backup_retention_select(backup_retention_item_t *items, size_t n,
                               const backup_retention_policy_t *p, int64_t now_ms)
{
    int64_t cutoff = p->max_age_ms > 0 ? now_ms - p->max_age_ms : INT64_MIN;
    /* The newest complete run older than the cutoff anchors a PITR window. */
    long anchor = -1;
    for (size_t i = 0; i < n; i++) {
        items[i].remove = false;
        if (items[i].state != BACKUP_RUN_COMPLETE || items[i].finished_ms >= cutoff)
            continue;
        if (anchor < 0 || items[i].started_ms > items[anchor].started_ms)
            anchor = (long)i;
    }
    int64_t newest_complete_start = INT64_MIN;
    for (size_t i = 0; i < n; i++)
        if (items[i].state == BACKUP_RUN_COMPLETE && items[i].started_ms > newest_complete_start)
            newest_complete_start = items[i].started_ms;
    size_t marked = 0;
    for (size_t i = 0; i < n; i++) {
        backup_retention_item_t *it = &items[i];
        bool rm = false;
        if (it->state == BACKUP_RUN_COMPLETE) {
            size_t rank = newer_complete(items, n, i);
            if (rank == 0)
                continue; /* the newest complete run is kept, always */
            if (p->max_count > 0 && rank >= (size_t)p->max_count)
                rm = true;
            if (p->max_age_ms > 0 && it->finished_ms < cutoff &&
                !(p->pitr && (long)i == anchor))
                rm = true;
        } else if (it->state == BACKUP_RUN_FAILED) {
            if (newest_complete_start > it->started_ms)
                rm = true;
            int64_t t = it->finished_ms ? it->finished_ms : it->started_ms;
            if (p->max_age_ms > 0 && t < cutoff)
                rm = true;
        }
        it->remove = rm;
        marked += rm;
    }
    return marked;
}
