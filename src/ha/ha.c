/*
 * ha.c: failure detection, candidate choice, failover and switchover (see ha.h).
 */
#include "ha/ha.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/proc.h"

const char *ha_verdict_str(ha_verdict_t v)
{
    switch (v) {
    case HA_HEALTHY: return "healthy";
    case HA_SUSPECT: return "suspect";
    default: return "failed";
    }
}

ha_verdict_t ha_detect(ha_detector_t *det, int failcount, const engine_probe_t *primary,
                       const engine_probe_t *replicas, int nreplicas, int64_t now_ms)
{
    if (failcount < 1)
        failcount = 1;
    if (primary->reachable && primary->role == ENGINE_ROLE_PRIMARY) {
        det->failures = 0;
        det->first_failure_ms = 0;
        det->last_ok_ms = now_ms;
        if (primary->position_value)
            det->last_primary_pos = primary->position_value;
        return HA_HEALTHY;
    }
    if (det->failures == 0)
        det->first_failure_ms = now_ms;
    det->failures++;
    if (det->failures < failcount)
        return HA_SUSPECT;
    /* The monitor may be the one cut off: if a healthy replica still receives WAL from
     * the primary, the primary is alive and failing over would fork the cluster. */
    for (int i = 0; i < nreplicas; i++)
        if (replicas[i].reachable && replicas[i].role == ENGINE_ROLE_REPLICA &&
            replicas[i].streaming)
            return HA_SUSPECT;
    return HA_FAILED;
}

int ha_choose(const engine_probe_t *replicas, int nreplicas, const bool *eligible,
              uint64_t last_primary_pos, uint64_t max_lag)
{
    int best = -1;
    for (int i = 0; i < nreplicas; i++) {
        const engine_probe_t *r = &replicas[i];
        if (eligible && !eligible[i])
            continue;
        if (!r->reachable || r->role != ENGINE_ROLE_REPLICA)
            continue;
        if (max_lag && last_primary_pos && r->position_value &&
            r->position_value < last_primary_pos &&
            last_primary_pos - r->position_value > max_lag)
            continue;
        if (best < 0 || r->position_value > replicas[best].position_value)
            best = i;
    }
    return best;
}

const char *ha_stream_verdict_str(ha_stream_verdict_t v)
{
    switch (v) {
    case HA_STREAM_OK: return "ok";
    case HA_STREAM_WAIT: return "wait";
    case HA_STREAM_REBUILD: return "rebuild";
    default: return "held";
    }
}

ha_stream_verdict_t ha_stream_check(ha_stream_watch_t *w, const ha_stream_obs_t *o,
                                    int64_t bound_ms, int64_t backoff_ms, int64_t now_ms,
                                    int64_t *not_streaming_ms)
{
    const engine_probe_t *p = o->probe;
    if (not_streaming_ms)
        *not_streaming_ms = 0;
    bool judged = o->running && !o->busy && p && !(p->reachable && p->role == ENGINE_ROLE_PRIMARY);
    if (!judged || w->epoch != o->epoch || w->started_ms != o->started_ms ||
        (p->reachable && p->streaming)) {
        w->epoch = o->epoch;
        w->started_ms = o->started_ms;
        w->counted_ms = 0;
        w->counting = false;
        w->position = 0;
        if (!judged || (p->reachable && p->streaming))
            return HA_STREAM_OK;
    }
    if (!o->primary_healthy) {
        w->counting = false; /* paused: the time until the next healthy observation is not counted */
        if (not_streaming_ms)
            *not_streaming_ms = w->counted_ms;
        return HA_STREAM_OK;
    }
    uint64_t pos = p->reachable ? p->position_value : 0;
    if (pos && w->position && pos > w->position) {
        /* Progress: it is catching up, not stuck. Count again from here. */
        w->counted_ms = 0;
        w->last_ms = now_ms;
        w->counting = true;
        w->position = pos;
        return HA_STREAM_WAIT;
    }
    if (pos && !w->position)
        w->position = pos;
    if (w->counting && now_ms > w->last_ms)
        w->counted_ms += now_ms - w->last_ms;
    w->last_ms = now_ms;
    w->counting = true;
    if (not_streaming_ms)
        *not_streaming_ms = w->counted_ms;
    int64_t bound = p->reachable ? bound_ms : bound_ms * HA_STREAM_UNREACHABLE_FACTOR;
    if (w->counted_ms < bound)
        return HA_STREAM_WAIT;
    if (o->rebuilt_ago_ms >= 0 && o->rebuilt_ago_ms < backoff_ms)
        return HA_STREAM_HELD;
    return HA_STREAM_REBUILD;
}

/* Bumps the epoch and promotes; shared tail of failover and switchover. */
static int take_over(const ha_cluster_t *c, int candidate, const ha_hooks_t *h,
                     int64_t *new_epoch, ha_timing_t *t, int64_t t0, dbp_err_t *err)
{
    const engine_instance_t *cand = &c->inst[candidate];
    int rc = h->set_primary(h->ud, c->tenant, c->cluster, c->epoch, cand->name, new_epoch, err);
    if (rc)
        return rc;
    t->epoch_ms = dbp_now_ms() - t0;
    char msg[256];
    snprintf(msg, sizeof(msg), "epoch %lld: primary %s (was %s)", (long long)*new_epoch,
             cand->name, c->inst[c->primary].name);
    if (h->routed)
        h->routed(h->ud, c->tenant, c->cluster, candidate, *new_epoch);
    /* Promote before recording the event: the promotion is on the clients' clock. */
    rc = c->ops->promote(cand, err);
    h->event(h->ud, c->tenant, c->cluster, "Normal", "TopologyChanged", msg);
    if (rc) {
        /* The epoch already names the candidate and the old primary is fenced: nothing
         * can take writes; the reconciler retries the promotion. */
        dbp_err_prefix(err, "promote %s: ", cand->name);
        return rc;
    }
    t->promoted_ms = dbp_now_ms() - t0;
    for (int i = 0; i < c->n; i++) {
        if (i == candidate || i == c->primary)
            continue;
        dbp_err_t e2;
        if (h->repoint(h->ud, &c->inst[i], cand, &e2) != 0)
            h->event(h->ud, c->tenant, c->cluster, "Warning", "RepointFailed", e2.msg);
    }
    t->total_ms = dbp_now_ms() - t0;
    return 0;
}

int ha_failover(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int64_t *new_epoch,
                ha_timing_t *timing, dbp_err_t *err)
{
    ha_timing_t t = {0};
    int64_t t0 = dbp_now_ms();
    if (!c->ops->promote)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "engine %s cannot promote yet", c->ops->name);
    if (candidate < 0 || candidate >= c->n || candidate == c->primary)
        return dbp_err_set(err, DBP_EINVAL, "no valid candidate");
    /* 1. Fence: the old primary must not take another write, whatever state it is in
     * (a SIGSTOPped server is killed just the same). */
    int rc = h->fence(h->ud, &c->inst[c->primary], 0, err);
    if (rc) {
        dbp_err_prefix(err, "fence %s: ", c->inst[c->primary].name);
        return rc;
    }
    t.fenced_ms = dbp_now_ms() - t0;
    rc = take_over(c, candidate, h, new_epoch, &t, t0, err);
    if (timing)
        *timing = t;
    return rc;
}

/* The switchover proper, between pause and resume (see ha_switchover). */
static int switch_paused(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int wait_ms,
                         int64_t *new_epoch, ha_timing_t *timing, int64_t t0, dbp_err_t *err);

int ha_switchover(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int wait_ms,
                  int64_t *new_epoch, ha_timing_t *timing, dbp_err_t *err)
{
    int64_t t0 = dbp_now_ms();
    if (!c->ops->promote)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "engine %s cannot promote yet", c->ops->name);
    if (candidate < 0 || candidate >= c->n || candidate == c->primary)
        return dbp_err_set(err, DBP_EINVAL, "no valid candidate");
    /* 0. While clients still run, the work the clean shutdown would do inside the pause
     * (PostgreSQL: CHECKPOINT). Then hold new transactions in the proxy (clients see a
     * pause, not an error) and let the running ones finish before the primary stops
     * taking writes. */
    if (c->ops->prepare_switchover) {
        dbp_err_t e2;
        int64_t tc = dbp_now_ms();
        if (c->ops->prepare_switchover(&c->inst[c->primary], &e2) != 0)
            dbp_warn("switchover_prepare_failed", "tenant=%s cluster=%s error=%s", c->tenant,
                     c->cluster, dbp_log_q(e2.msg));
        else
            dbp_info("switchover_prepared", "tenant=%s cluster=%s ms=%lld", c->tenant,
                     c->cluster, (long long)(dbp_now_ms() - tc));
    }
    int64_t tp = dbp_now_ms();
    if (h->pause) {
        int rc = h->pause(h->ud, c->tenant, c->cluster, 5000, err);
        if (rc)
            return rc;
    }
    int64_t epoch = 0;
    ha_timing_t t = {0};
    int rc = switch_paused(c, candidate, h, wait_ms, &epoch, &t, t0, err);
    if (h->resume) {
        /* The epoch moved as soon as set_primary succeeded, even if promote failed after
         * it: the proxy must follow it either way. */
        h->resume(h->ud, c->tenant, c->cluster, epoch > 0 ? c->inst[candidate].name : NULL,
                  epoch);
        t.paused_ms = dbp_now_ms() - tp;
    }
    if (new_epoch)
        *new_epoch = epoch;
    if (timing)
        *timing = t;
    return rc;
}

static int switch_paused(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int wait_ms,
                         int64_t *new_epoch, ha_timing_t *timing, int64_t t0, dbp_err_t *err)
{
    ha_timing_t t = {0};
    const engine_instance_t *old = &c->inst[c->primary], *cand = &c->inst[candidate];
    engine_probe_t before;
    if (c->ops->probe(old, &before, err) != 0 || !before.reachable)
        return dbp_err_set(err, DBP_EBUSY, "primary %s does not answer; use failover",
                           old->name);
    /* 1. Stop the old primary cleanly: a fast shutdown sends every WAL record, up to the
     * shutdown checkpoint, to the connected replicas before it exits. */
    int rc = h->fence(h->ud, old, 30000, err);
    if (rc)
        return rc;
    t.fenced_ms = dbp_now_ms() - t0;
    /* 2. The candidate must have replayed everything the old primary wrote. */
    int64_t deadline = dbp_now_ms() + (wait_ms > 0 ? wait_ms : 10000);
    uint64_t last = 0;
    int stable = 0;
    for (;;) {
        engine_probe_t p;
        dbp_err_t e2;
        if (c->ops->probe(cand, &p, &e2) == 0 && p.reachable) {
            /* Caught up: at or past the old primary's last position, and no longer moving
             * (the shutdown checkpoint record arrived after `before`). */
            if (p.position_value >= before.position_value && p.position_value == last)
                stable++;
            else
                stable = 0;
            last = p.position_value;
            if (stable >= 2)
                break;
        }
        if (dbp_now_ms() > deadline) {
            h->event(h->ud, c->tenant, c->cluster, "Warning", "SwitchoverAborted",
                     "candidate did not catch up; the old primary stays primary");
            return dbp_err_set(err, DBP_EBUSY,
                               "%s did not reach %s's final position within %d ms", cand->name,
                               old->name, wait_ms);
        }
        struct timespec ts = {0, 20 * 1000 * 1000}; /* new transactions are held meanwhile */
        nanosleep(&ts, NULL);
    }
    rc = take_over(c, candidate, h, new_epoch, &t, t0, err);
    if (timing)
        *timing = t;
    return rc;
}
