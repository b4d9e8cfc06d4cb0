/*
 * rolling.c: rolling changes of a cluster's servers (see reconcile.h, ctl_rolling_step).
 * Settings a reload applies are reloaded everywhere at once by the reconciler
 * (instance_run); what needs a restart (a postmaster-context setting, a replaced server
 * binary) is applied here, one server at a time, the primary last through a switchover so
 * clients behind the proxy see a pause instead of errors (docs/design.md, "Rolling
 * changes").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/keyed.h"
#include "common/log.h"
#include "control/reconcile.h"

#define ROLL_STEP_TIMEOUT_MS 120000 /* a restarted server must be back within this */
#define ROLL_RETRY_MS 30000         /* after a failed step */
#define ROLL_CHECK_MS 10000         /* ask needs_restart this long after a reload */
#define ROLL_STOP_GRACE_MS 60000    /* clean shutdown before SIGKILL */

static ctl_roll_t *roll_get(ctl_daemon_t *d, const char *tenant, const char *cluster)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    return DBP_KEYED_GET(d->roll, d->nroll, d->caproll, key, key, 8);
}

static void roll_event(ctl_daemon_t *d, const cluster_rt_t *cr, const char *type,
                       const char *reason, const char *msg)
{
    ctl_event(d, cr->res->tenant.v, "Cluster", cr->res->name.v, type, reason, msg);
}

static void proc_id(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", in->tenant, in->name);
}

/* Whether instance i must restart to run what is declared; the reason into why. */
static bool instance_needs(ctl_daemon_t *d, cluster_rt_t *cr, int i, bool ask_engine, char *why,
                           size_t len)
{
    engine_instance_t *in = &cr->inst[i];
    char id[160];
    proc_id(in, id, sizeof(id));
    char *argv[CTL_MAX_ARGS];
    char buf[2 * PATH_MAX];
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    if (cr->ops->server_argv(in, argv, CTL_MAX_ARGS, buf, sizeof(buf), &err) == 0 &&
        ctl_sup_stale(&d->sup, id, argv, why, len))
        return true;
    if (!ask_engine || !cr->ops->needs_restart)
        return false;
    char names[160];
    int rc = cr->ops->needs_restart(in, names, sizeof(names), &err);
    if (rc < 0) {
        dbp_warn("needs_restart_failed", "instance=%s error=%s", in->name, dbp_log_q(err.msg));
        return false;
    }
    if (rc > 0)
        snprintf(why, len, "pending restart: %s", names);
    return rc > 0;
}

/* Stops instance i cleanly and starts it again with its rendered configuration. */
static int restart_instance(ctl_daemon_t *d, cluster_rt_t *cr, int i, dbp_err_t *err)
{
    engine_instance_t *in = &cr->inst[i];
    char id[160];
    proc_id(in, id, sizeof(id));
    const char *ids[] = {id, NULL};
    ctl_sup_stop_ids(&d->sup, ids, ROLL_STOP_GRACE_MS);
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    if (p && p->state != CTL_PROC_STOPPED)
        return dbp_err_set(err, DBP_EBUSY, "%s did not stop", in->name);
    char *argv[CTL_MAX_ARGS];
    char buf[2 * PATH_MAX];
    int rc = cr->ops->server_argv(in, argv, CTL_MAX_ARGS, buf, sizeof(buf), err);
    if (rc)
        return rc;
    return ctl_sup_ensure(&d->sup, id, argv, in->log_path, &d->runas, cr->ops->stop_signal, err);
}

/* Restarts instance i as a step of the rollout; false (with the rollout stopped) when
 * the restart failed. */
static bool step_restart(ctl_daemon_t *d, cluster_rt_t *cr, ctl_roll_t *r, int i, char *msg,
                         size_t len)
{
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    const char *role = i == cr->primary ? "primary" : "replica";
    if (restart_instance(d, cr, i, &err) != 0) {
        snprintf(r->failed, sizeof(r->failed), "restart of %s %s failed: %s", role,
                 cr->inst[i].name, err.msg);
        r->retry_ms = dbp_now_ms() + ROLL_RETRY_MS;
        r->failed_gen = cr->generation;
        roll_event(d, cr, "Warning", "RollingUpdateFailed", r->failed);
        snprintf(msg, len, "rolling update stopped: %s", r->failed);
        return false;
    }
    r->restarted[i] = true;
    r->done++;
    r->step_deadline_ms = dbp_now_ms() + ROLL_STEP_TIMEOUT_MS;
    char m[256];
    snprintf(m, sizeof(m), "%s %s restarted (%d/%d)", role, cr->inst[i].name, r->done, r->total);
    roll_event(d, cr, "Normal", "InstanceRestarted", m);
    snprintf(msg, len, "rolling update: %s; waiting for it to be back", m);
    return true;
}

/* While the cluster is not ready: a restarted server that is not back in time stops the
 * rollout (the others keep serving; nothing else is restarted). */
static const char *roll_waiting(ctl_daemon_t *d, cluster_rt_t *cr, ctl_roll_t *r, const char *state,
                                char *msg, size_t len)
{
    for (int i = 0; i < cr->n && !r->failed[0]; i++) {
        if (!r->restarted[i])
            continue;
        char id[160];
        proc_id(&cr->inst[i], id, sizeof(id));
        const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
        if (p && p->failures > 0)
            snprintf(r->failed, sizeof(r->failed),
                     "%s exited after its restart (see %s): the new configuration does not "
                     "start",
                     cr->inst[i].name, cr->inst[i].log_path);
        else if (dbp_now_ms() > r->step_deadline_ms)
            snprintf(r->failed, sizeof(r->failed), "%s is not back %d s after its restart (%.120s)",
                     cr->inst[i].name, ROLL_STEP_TIMEOUT_MS / 1000, msg);
        if (r->failed[0]) {
            r->failed_gen = cr->generation;
            roll_event(d, cr, "Warning", "RollingUpdateFailed", r->failed);
        }
    }
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", msg);
    if (r->failed[0]) {
        snprintf(msg, len, "rolling update stopped: %s", r->failed);
        return "failed";
    }
    snprintf(msg, len, "rolling update (%d/%d restarted): %s", r->done, r->total, tmp);
    return state;
}

const char *ctl_rolling_step(ctl_daemon_t *d, cluster_rt_t *cr, const char *state, char *msg,
                             size_t len)
{
    if (!cr->ops || cr->primary < 0 || cr->n < 1)
        return state;
    ctl_roll_t *r = roll_get(d, cr->res->tenant.v, cr->res->name.v);
    if (!r)
        return state;
    int64_t now = dbp_now_ms();
    if (cr->reloaded) {
        /* A newer configuration: a server restarted for the previous one may need
         * another restart, which is not a failed step. */
        r->check_until_ms = now + ROLL_CHECK_MS;
        memset(r->restarted, 0, sizeof(r->restarted));
    }
    if (r->failed_gen && r->failed_gen != cr->generation) {
        /* A new generation (a fixed spec) retries at once, from what the servers run. */
        r->failed[0] = '\0';
        r->retry_ms = 0;
        r->failed_gen = 0;
        memset(r->restarted, 0, sizeof(r->restarted));
    }
    if (strcmp(state, "ready") != 0)
        return r->active ? roll_waiting(d, cr, r, state, msg, len) : state;
    if (cr->reloaded && cr->ops->needs_restart) {
        /* The servers read the new file asynchronously: ask them on the next pass. */
        snprintf(msg, len, "configuration reloaded; checking for settings that need a restart");
        return "pending";
    }

    bool ask = r->active || !r->checked_once || now < r->check_until_ms;
    r->checked_once = true;
    bool need[CTL_MAX_INSTANCES] = {false};
    int nneed = 0;
    char why[200] = "";
    for (int i = 0; i < cr->n; i++) {
        char w[200] = "";
        need[i] = instance_needs(d, cr, i, ask, w, sizeof(w));
        if (need[i] && r->restarted[i]) {
            /* Restarted by this rollout and back, yet still behind: do not loop. */
            if (!r->failed[0]) {
                snprintf(r->failed, sizeof(r->failed), "%s still needs a restart after one (%s)",
                         cr->inst[i].name, w);
                r->failed_gen = cr->generation;
                r->retry_ms = now + ROLL_RETRY_MS;
                roll_event(d, cr, "Warning", "RollingUpdateFailed", r->failed);
            }
            r->restarted[i] = false; /* the retry restarts it again */
            snprintf(msg, len, "rolling update stopped: %s", r->failed);
            return "failed";
        }
        r->restarted[i] = false; /* back, streaming and current */
        if (need[i]) {
            nneed++;
            if (!why[0])
                snprintf(why, sizeof(why), "%s", w);
        }
    }
    if (nneed == 0) {
        if (r->active) {
            char m[256];
            snprintf(m, sizeof(m), "%d instance(s) restarted in %lld ms; primary %s", r->done,
                     (long long)(now - r->started_ms), cr->inst[cr->primary].name);
            roll_event(d, cr, "Normal", "RollingUpdateCompleted", m);
            r->active = false;
            r->failed[0] = '\0';
            r->failed_gen = 0;
        }
        return state;
    }
    if (!r->active) {
        const spec_cluster_t *cs = &cr->res->u.cluster;
        bool rolling = cs->update_strategy == SPEC_UPDATE_REPLICAS_FIRST_PRIMARY_LAST && cr->n > 1;
        r->active = true;
        r->started_ms = now;
        r->total = nneed;
        r->done = 0;
        r->failed[0] = '\0';
        r->retry_ms = 0;
        snprintf(r->why, sizeof(r->why), "%s", why);
        char m[512];
        snprintf(m, sizeof(m), "%s; restarting %d instance(s) %s", why, nneed,
                 rolling     ? "replicas first, then a switchover, then the old primary "
                               "(ReplicasFirstPrimaryLast)"
                 : cr->n > 1 ? "at once (AllAtOnce)"
                             : "in place (a single instance: clients reconnect)");
        roll_event(d, cr, "Normal", "RollingUpdateStarted", m);
    }
    if (r->total < r->done + nneed)
        r->total = r->done + nneed; /* a newer change joined the rollout */
    if (r->failed[0] && now < r->retry_ms) {
        snprintf(msg, len, "rolling update stopped: %s; retrying in %lld s", r->failed,
                 (long long)((r->retry_ms - now) / 1000));
        return "failed";
    }
    r->failed[0] = '\0';
    r->failed_gen = 0;
    const spec_cluster_t *cs = &cr->res->u.cluster;
    if (cr->ops->failover_on_crash && need[cr->primary] && cr->n == 1) {
        /* A restart in place would come back without what the server did not persist
         * (Redis cache class): left to the operator, said in the status. */
        snprintf(msg, len,
                 "a restart is pending (%s) and is not done automatically: this "
                 "single instance's restart would lose unpersisted data",
                 r->why);
        return state;
    }
    if (cs->update_strategy == SPEC_UPDATE_ALL_AT_ONCE || cr->n == 1) {
        int started = 0;
        for (int i = 0; i < cr->n; i++) {
            if (!need[i] || (i == cr->primary && cr->ops->failover_on_crash))
                continue; /* such a primary goes last, through a switchover */
            if (!step_restart(d, cr, r, i, msg, len))
                return "failed";
            started++;
        }
        if (started > 0)
            return "pending";
    }
    /* ReplicasFirstPrimaryLast: one replica per pass; this pass found every server back
     * and streaming. */
    for (int i = 0; i < cr->n; i++)
        if (i != cr->primary && need[i])
            return step_restart(d, cr, r, i, msg, len) ? "pending" : "failed";
    /* Only the primary is left: a switchover to an up-to-date replica (the proxy pauses
     * clients); the old primary then rejoins as a replica with the new configuration. */
    r->switch_wanted = true;
    snprintf(msg, len, "rolling update (%d/%d restarted): switching over from %s", r->done,
             r->total, cr->inst[cr->primary].name);
    return "pending";
}

void ctl_rolling_after_pass(ctl_daemon_t *d)
{
    for (int k = 0; k < d->ncl; k++) {
        cluster_rt_t *cr = &d->crs[k];
        if (!cr->ops || cr->primary < 0)
            continue;
        ctl_roll_t *r = roll_get(d, cr->res->tenant.v, cr->res->name.v);
        if (!r || !r->switch_wanted)
            continue;
        r->switch_wanted = false;
        int old = cr->primary;
        dbp_err_t err;
        memset(&err, 0, sizeof(err));
        json_t *res = NULL;
        int rc = ctl_ha_switch(d, cr->res->tenant.v, cr->res->name.v, NULL, false, &res, &err);
        json_decref(res);
        if (rc != 0) {
            snprintf(r->failed, sizeof(r->failed),
                     "switchover from %s failed (%s); it stays the primary", cr->inst[old].name,
                     err.msg);
            r->retry_ms = dbp_now_ms() + ROLL_RETRY_MS;
            r->failed_gen = cr->generation;
            roll_event(d, cr, "Warning", "RollingUpdateFailed", r->failed);
            continue;
        }
        /* ha_switchover stopped the old primary; the next pass rejoins and starts it as a
         * replica with the new configuration: that is its restart. */
        r->restarted[old] = true;
        r->done++;
        r->step_deadline_ms = dbp_now_ms() + ROLL_STEP_TIMEOUT_MS;
        char m[256];
        snprintf(m, sizeof(m),
                 "old primary %s stopped by the switchover; restarts as a replica with the new "
                 "configuration (%d/%d)",
                 cr->inst[old].name, r->done, r->total);
        roll_event(d, cr, "Normal", "InstanceRestarted", m);
    }
}
