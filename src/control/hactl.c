/*
 * hactl.c: the control plane's side of high availability: the HA monitor loop, the
 * hooks ha/ calls (fence through the supervisor, topology compare-and-set in the store,
 * repointing replicas, events), and switchover/failover on request. The sequences and
 * the detection rules themselves live in ha/.
 */
#include "control/reconcile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

void ctl_rejoin_marker(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/.needs-rejoin", in->dir);
}

static ctl_ha_state_t *ha_state(ctl_daemon_t *d, const char *tenant, const char *cluster)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    for (int i = 0; i < d->nha; i++)
        if (strcmp(d->ha[i].key, key) == 0)
            return &d->ha[i];
    if (d->nha == d->capha) {
        int ncap = d->capha ? d->capha * 2 : 8;
        ctl_ha_state_t *n = realloc(d->ha, (size_t)ncap * sizeof(*n));
        if (!n)
            return NULL;
        d->ha = n;
        d->capha = ncap;
    }
    ctl_ha_state_t *s = &d->ha[d->nha++];
    memset(s, 0, sizeof(*s));
    snprintf(s->key, sizeof(s->key), "%s", key);
    return s;
}

/* ---- hooks for ha/ ------------------------------------------------------------------- */

static int hook_fence(void *ud, const engine_instance_t *in, int grace_ms, dbp_err_t *err)
{
    return ctl_fence(ud, in, grace_ms, err);
}

int ctl_fence(ctl_daemon_t *d, const engine_instance_t *in, int grace_ms, dbp_err_t *err)
{
    char id[160], marker[PATH_MAX + 32];
    snprintf(id, sizeof(id), "%s/%s", in->tenant, in->name);
    /* The marker first: whatever happens next, this data directory must not start again
     * as it is. */
    ctl_rejoin_marker(in, marker, sizeof(marker));
    int rc = dbp_write_file(marker, "fenced\n", 7, 0644, NULL, err);
    if (rc)
        return rc;
    ctl_cluster_unready(d, in->tenant, in->cluster, "an instance was fenced; reconciling");
    const char *ids[] = {id, NULL};
    ctl_sup_stop_ids(&d->sup, ids, grace_ms);
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    if (p && p->state != CTL_PROC_STOPPED)
        return dbp_err_set(err, DBP_EBUSY, "%s did not stop", in->name);
    char m[160];
    snprintf(m, sizeof(m), "fenced: process stopped%s", grace_ms == 0 ? " (SIGKILL)" : "");
    if (store_add_event(d->store, in->tenant, "Instance", in->name, "Warning", "Fenced", m,
                        err) != 0)
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(err->msg));
    return 0;
}

static int hook_set_primary(void *ud, const char *tenant, const char *cluster,
                            int64_t expected_epoch, const char *primary, int64_t *new_epoch,
                            dbp_err_t *err)
{
    ctl_daemon_t *d = ud;
    return store_cas_topology(d->store, tenant, cluster, expected_epoch, primary, new_epoch, err);
}

static int hook_repoint(void *ud, const engine_instance_t *replica,
                        const engine_instance_t *primary, dbp_err_t *err)
{
    ctl_daemon_t *d = ud;
    const engine_ops_t *ops = engine_lookup((spec_engine_t)replica->spec->engine);
    if (!ops)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "no engine");
    int rc = ops->render_config(replica, primary, err);
    if (rc < 0)
        return rc;
    char id[160];
    snprintf(id, sizeof(id), "%s/%s", replica->tenant, replica->name);
    if (rc > 0 && ops->reload_signal)
        (void)ctl_sup_signal(&d->sup, id, ops->reload_signal);
    return 0;
}

static void hook_event(void *ud, const char *tenant, const char *cluster, const char *type,
                       const char *reason, const char *msg)
{
    ctl_daemon_t *d = ud;
    dbp_err_t err;
    if (store_add_event(d->store, tenant, "Cluster", cluster, type, reason, msg, &err) != 0)
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(err.msg));
    dbp_log(strcmp(type, "Warning") == 0 ? DBP_LOG_WARN : DBP_LOG_INFO, "ha_event",
            "tenant=%s cluster=%s reason=%s message=%s", tenant, cluster, reason, dbp_log_q(msg));
}

static ha_hooks_t hooks_for(ctl_daemon_t *d)
{
    ha_hooks_t h = {.ud = d,
                    .fence = hook_fence,
                    .set_primary = hook_set_primary,
                    .repoint = hook_repoint,
                    .event = hook_event};
    return h;
}

/* ---- the monitor --------------------------------------------------------------------- */

static ha_cluster_t ha_view(cluster_rt_t *cr)
{
    ha_cluster_t c = {.tenant = cr->res->tenant.v,
                      .cluster = cr->res->name.v,
                      .ops = cr->ops,
                      .inst = cr->inst,
                      .n = cr->n,
                      .primary = cr->primary,
                      .epoch = cr->epoch};
    return c;
}

/* After the topology changed: this pass's view is stale; the next pass re-reads it. */
static void after_change(ctl_daemon_t *d, cluster_rt_t *cr, int new_primary, int64_t epoch)
{
    cr->primary = new_primary;
    cr->epoch = epoch;
    cr->primary_ready = false;
    d->pass_requested = true;
    /* New transactions go to the new primary now, not after the next pass. */
    ctl_proxy_sync(d);
    char msg[160];
    snprintf(msg, sizeof(msg), "topology changed to epoch %lld; reconciling", (long long)epoch);
    ctl_cluster_unready(d, cr->res->tenant.v, cr->res->name.v, msg);
}

static void failover_now(ctl_daemon_t *d, cluster_rt_t *cr, ctl_ha_state_t *hs,
                         const engine_probe_t *rep, const int *map, int nrep)
{
    const spec_failover_t *pol = &cr->res->u.cluster.failover;
    int pick = ha_choose(rep, nrep, NULL, hs->det.last_primary_pos,
                         pol->max_lag.set ? pol->max_lag.v : 16ULL << 20);
    const char *tenant = cr->res->tenant.v, *cluster = cr->res->name.v;
    if (pick < 0) {
        if (!hs->reported_no_candidate)
            hook_event(d, tenant, cluster, "Warning", "NoFailoverCandidate",
                       "primary failed and no healthy replica is close enough to promote");
        hs->reported_no_candidate = true;
        return;
    }
    int cand = map[pick];
    char msg[256];
    int64_t detect_ms = dbp_now_ms() - hs->det.first_failure_ms;
    snprintf(msg, sizeof(msg), "primary %s failed %d probes in a row (%lld ms); promoting %s",
             cr->inst[cr->primary].name, hs->det.failures, (long long)detect_ms,
             cr->inst[cand].name);
    hook_event(d, tenant, cluster, "Warning", "FailoverStarted", msg);
    ha_cluster_t view = ha_view(cr);
    ha_hooks_t h = hooks_for(d);
    int64_t epoch = 0;
    ha_timing_t t;
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    if (ha_failover(&view, cand, &h, &epoch, &t, &err) != 0) {
        hook_event(d, tenant, cluster, "Warning", "FailoverFailed", err.msg);
        return;
    }
    hs->failovers++;
    hs->last = t;
    hs->last_detect_ms = detect_ms;
    snprintf(msg, sizeof(msg),
             "primary %s at epoch %lld: detected in %lld ms, fenced +%lld ms, epoch +%lld ms, "
             "promoted +%lld ms",
             cr->inst[cand].name, (long long)epoch, (long long)detect_ms, (long long)t.fenced_ms,
             (long long)t.epoch_ms, (long long)t.promoted_ms);
    hook_event(d, tenant, cluster, "Normal", "FailoverCompleted", msg);
    hs->det = (ha_detector_t){0};
    hs->reported_no_candidate = false;
    after_change(d, cr, cand, epoch);
}

int ctl_ha_tick(ctl_daemon_t *d)
{
    int64_t now = dbp_now_ms();
    int64_t next = 1000;
    for (int c = 0; c < d->ncl; c++) {
        cluster_rt_t *cr = &d->crs[c];
        if (!cr->ops || !cr->ops->promote || cr->n < 2 || cr->primary < 0)
            continue;
        const spec_failover_t *pol = &cr->res->u.cluster.failover;
        ctl_ha_state_t *hs = ha_state(d, cr->res->tenant.v, cr->res->name.v);
        if (!hs)
            continue;
        int64_t interval = pol->interval.set && pol->interval.ms > 0 ? pol->interval.ms : 1000;
        if (now < hs->next_check_ms) {
            if (hs->next_check_ms - now < next)
                next = hs->next_check_ms - now;
            continue;
        }
        hs->next_check_ms = now + interval;
        if (interval < next)
            next = interval;
        /* Only a cluster that has been up: the reconciler handles bootstrap. */
        if (hs->det.last_ok_ms == 0 && !cr->primary_ready)
            continue;
        /* Half the interval (200 ms .. 1 s): a hung server costs each probe its timeout,
         * so the count of failures keeps pace with the interval. */
        int timeout = (int)(interval / 2);
        if (timeout < 200)
            timeout = 200;
        if (timeout > 1000)
            timeout = 1000;
        engine_instance_t *P = &cr->inst[cr->primary];
        P->probe_timeout_ms = timeout;
        engine_probe_t pp;
        dbp_err_t err;
        if (cr->ops->probe(P, &pp, &err) != 0)
            pp.reachable = false;
        engine_probe_t rep[CTL_MAX_INSTANCES];
        int map[CTL_MAX_INSTANCES], nrep = 0;
        bool healthy = pp.reachable && pp.role == ENGINE_ROLE_PRIMARY;
        if (!healthy) {
            for (int i = 0; i < cr->n; i++) {
                if (i == cr->primary)
                    continue;
                cr->inst[i].probe_timeout_ms = timeout;
                if (cr->ops->probe(&cr->inst[i], &rep[nrep], &err) != 0)
                    rep[nrep].reachable = false;
                map[nrep++] = i;
            }
        }
        ha_verdict_t v = ha_detect(&hs->det, pol->failcount.set ? (int)pol->failcount.v : 3, &pp,
                                   rep, nrep, dbp_now_ms());
        if (v != HA_HEALTHY)
            dbp_info("ha_probe", "tenant=%s cluster=%s primary=%s verdict=%s failures=%d",
                     cr->res->tenant.v, cr->res->name.v, P->name, ha_verdict_str(v),
                     hs->det.failures);
        bool auto_on = !pol->auto_.set || pol->auto_.v;
        if (v == HA_FAILED && auto_on)
            failover_now(d, cr, hs, rep, map, nrep);
    }
    return (int)(next > 0 ? next : 1);
}

/* ---- requested switchover / failover ------------------------------------------------- */

/* Switchover hook: PAUSE the cluster's proxy endpoints (proxy_pause). A cluster without a
 * proxy has nothing to hold. A drain that times out is reported, not fatal: the
 * transactions still running end with the old primary's shutdown. */
static int hook_pause(void *ud, const char *tenant, const char *cluster, int timeout_ms,
                      dbp_err_t *err)
{
    ctl_daemon_t *d = ud;
    (void)err;
    dbp_err_t e2;
    memset(&e2, 0, sizeof(e2));
    if (!d->proxy)
        return 0;
    int rc = proxy_pause(d->proxy, tenant, cluster, timeout_ms, &e2);
    if (rc == DBP_EBUSY)
        hook_event(d, tenant, cluster, "Warning", "SwitchoverPauseTimeout", e2.msg);
    else if (rc && rc != DBP_ENOENT)
        dbp_warn("proxy_pause_failed", "tenant=%s cluster=%s error=%s", tenant, cluster,
                 dbp_log_q(e2.msg));
    return 0;
}

/* Switchover hook: the new topology reaches the proxy first (ctl_proxy_sync: the workers
 * apply it before the resume that follows it in their inbox), then the held transactions
 * go — to the new primary. */
static void hook_resume(void *ud, const char *tenant, const char *cluster, const char *primary,
                        int64_t epoch)
{
    ctl_daemon_t *d = ud;
    if (!d->proxy)
        return;
    for (int i = 0; epoch > 0 && primary && i < d->ncl; i++) {
        cluster_rt_t *cr = &d->crs[i];
        if (strcmp(cr->res->tenant.v, tenant) != 0 || strcmp(cr->res->name.v, cluster) != 0)
            continue;
        for (int j = 0; j < cr->n; j++)
            if (strcmp(cr->inst[j].name, primary) == 0) {
                if (cr->primary >= 0)
                    cr->probe[cr->primary].reachable = false; /* stopped: no reads either */
                cr->primary = j;
                cr->epoch = epoch;
            }
        ctl_proxy_sync(d);
    }
    dbp_err_t e2;
    memset(&e2, 0, sizeof(e2));
    if (proxy_resume(d->proxy, tenant, cluster, &e2) != 0)
        dbp_warn("proxy_resume_failed", "tenant=%s cluster=%s error=%s", tenant, cluster,
                 dbp_log_q(e2.msg));
}

int ctl_ha_switch(ctl_daemon_t *d, const char *tenant, const char *cluster, const char *to,
                  bool force, json_t **result, dbp_err_t *err)
{
    cluster_rt_t *cr = NULL;
    for (int i = 0; i < d->ncl; i++)
        if (strcmp(d->crs[i].res->tenant.v, tenant) == 0 &&
            strcmp(d->crs[i].res->name.v, cluster) == 0)
            cr = &d->crs[i];
    if (!cr)
        return dbp_err_set(err, DBP_ENOENT, "cluster %s/%s not found", tenant, cluster);
    if (!cr->ops || !cr->ops->promote)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "cluster %s: engine has no HA yet", cluster);
    if (cr->primary < 0 || cr->n < 2)
        return dbp_err_set(err, DBP_EINVAL, "cluster %s has no replica to switch to", cluster);
    int cand = -1;
    if (to) {
        for (int i = 0; i < cr->n; i++)
            if (strcmp(cr->inst[i].name, to) == 0)
                cand = i;
        if (cand < 0)
            return dbp_err_set(err, DBP_ENOENT, "instance %s is not part of %s", to, cluster);
        if (cand == cr->primary)
            return dbp_err_set(err, DBP_EINVAL, "%s is already the primary", to);
    } else {
        engine_probe_t rep[CTL_MAX_INSTANCES];
        int map[CTL_MAX_INSTANCES], nrep = 0;
        for (int i = 0; i < cr->n; i++) {
            if (i == cr->primary)
                continue;
            dbp_err_t e2;
            if (cr->ops->probe(&cr->inst[i], &rep[nrep], &e2) != 0)
                rep[nrep].reachable = false;
            map[nrep++] = i;
        }
        int pick = ha_choose(rep, nrep, NULL, 0, 0);
        if (pick < 0)
            return dbp_err_set(err, DBP_EBUSY, "no healthy replica to switch to");
        cand = map[pick];
    }
    if (!force && cr->ops->engine == SPEC_ENGINE_POSTGRESQL && cr->ops->run_sql) {
        /* A CHECKPOINT while clients still run leaves the old primary's shutdown checkpoint
         * (inside the pause) little to write — what Patroni does before a switchover. Best
         * effort. */
        dbp_err_t e2;
        int64_t t0 = dbp_now_ms();
        if (cr->ops->run_sql(&cr->inst[cr->primary], "postgres", NULL, NULL, "CHECKPOINT",
                             &e2) != 0)
            dbp_warn("switchover_checkpoint_failed", "tenant=%s cluster=%s error=%s", tenant,
                     cluster, dbp_log_q(e2.msg));
        else
            dbp_info("switchover_checkpoint", "tenant=%s cluster=%s ms=%lld", tenant, cluster,
                     (long long)(dbp_now_ms() - t0));
    }
    ha_cluster_t view = ha_view(cr);
    ha_hooks_t h = hooks_for(d);
    h.pause = hook_pause;
    h.resume = hook_resume;
    int64_t epoch = 0, epoch0 = cr->epoch;
    int primary0 = cr->primary;
    ha_timing_t t;
    const char *old = cr->inst[cr->primary].name;
    char oldname[96];
    snprintf(oldname, sizeof(oldname), "%s", old);
    int rc = force ? ha_failover(&view, cand, &h, &epoch, &t, err)
                   : ha_switchover(&view, cand, &h, 15000, &epoch, &t, err);
    if (rc) {
        if (!force) {
            /* Aborted before the epoch moved: the old primary is still the primary; lift
             * its fence so the reconciler starts it again as it was. */
            int64_t cur = 0;
            char prim[96] = "";
            dbp_err_t e2;
            if (store_get_topology(d->store, tenant, cluster, &cur, prim, &e2) == 0 &&
                cur == epoch0) {
                char marker[PATH_MAX + 32];
                ctl_rejoin_marker(&cr->inst[primary0], marker, sizeof(marker));
                unlink(marker);
                d->pass_requested = true;
            }
        }
        return rc;
    }
    ctl_ha_state_t *hs = ha_state(d, tenant, cluster);
    if (hs) {
        hs->last = t;
        hs->det = (ha_detector_t){0};
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "%s from %s to %s at epoch %lld in %lld ms",
             force ? "failover" : "switchover", oldname, cr->inst[cand].name, (long long)epoch,
             (long long)t.total_ms);
    hook_event(d, tenant, cluster, "Normal", force ? "FailoverCompleted" : "SwitchoverCompleted",
               msg);
    if (result)
        *result = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "old_primary", oldname,
                            "new_primary", cr->inst[cand].name, "epoch", (json_int_t)epoch,
                            "fenced_ms", (json_int_t)t.fenced_ms, "promoted_ms",
                            (json_int_t)t.promoted_ms, "total_ms", (json_int_t)t.total_ms,
                            "paused_ms", (json_int_t)t.paused_ms);
    after_change(d, cr, cand, epoch);
    return 0;
}
