/*
 * hactl.c: the control plane's side of high availability: the HA monitor thread, the
 * hooks ha/ calls (fence through the supervisor, topology compare-and-set in the store,
 * repointing replicas, events), and switchover/failover on request. The sequences and
 * the detection rules themselves live in ha/.
 *
 * Threads and who owns what (see docs/design.md, "HA monitor thread"):
 * - The monitor thread probes every primary at its cluster's failover.interval, with its
 *   own connections (copies of the instances, its own time-outs), runs ha_detect and
 *   keeps the detector state. It never touches the supervisor, the store or the proxy.
 *   When a verdict is "failed" it posts a request and writes 'h' to the control loop's
 *   self-pipe.
 * - The control loop's thread owns the supervisor, the store handle, the proxy snapshot
 *   and d->ha; it runs the failover sequence (fence, epoch CAS, promote, repoint) for a
 *   request whose epoch and primary still match (ctl_ha_tick).
 * - Shared under ctl_hamon_t.mu: the published view (reference count), the topology
 *   table, and each cluster's suspect/hold/reset flags and pending request.
 */
#include "control/reconcile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/keyed.h"
#include "common/log.h"
#include "control/daemon.h"

void ctl_rejoin_marker(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/.needs-rejoin", in->dir);
}

static ctl_ha_state_t *ha_state(ctl_daemon_t *d, const char *tenant, const char *cluster)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    return DBP_KEYED_GET(d->ha, d->nha, d->capha, key, key, 8);
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
    if (grace_ms == 0) {
        /* A failover: the server is killed before anything else (it is on the clock).
         * Safe before the marker: until the marker is written and the epoch moved, a
         * restart of this server is the restart of the topology's primary. */
        const ctl_proc_t *p0 = ctl_sup_find(&d->sup, id);
        if (p0 && p0->state == CTL_PROC_RUNNING && p0->pid > 0)
            ctl_sup_kill_tree(p0->pid);
    }
    /* The marker before the fence returns: whatever happens next, this data directory
     * must not start again as it is. */
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

/* ---- views shared with the monitor thread -------------------------------------------- */

/* The topology of one cluster as the monitor sees it: written by the control loop under
 * mon->mu (at publication and after every change), read by the monitor under mon->mu. */
typedef struct mon_topo {
    int primary; /* index into the view's cluster instances; -1 unknown */
    int64_t epoch;
    bool ready;                   /* the primary answered as a primary in the last pass */
    pid_t pid;                    /* the primary's server process when published; 0 unknown */
    unsigned long long pid_start; /* its start time (/proc/PID/stat field 22, ticks) */
} mon_topo_t;

/* A failover the monitor asks the control loop to run. */
typedef struct mon_request {
    bool pending;
    int64_t epoch; /* topology the verdict was made on */
    int primary;
    int64_t first_failure_ms; /* monotonic ms */
    int64_t detected_ms;      /* monotonic ms of the verdict */
    int64_t last_ok_ms;       /* monotonic ms of the last good probe; 0 none */
    int failures;
    uint64_t last_primary_pos;
    int nrep;
    int map[CTL_MAX_INSTANCES];            /* rep[k] is instance map[k] */
    engine_probe_t rep[CTL_MAX_INSTANCES]; /* the replicas' probes of the last round */
} mon_request_t;

/* The monitor's state of one cluster. `det`, `next_ms`, `epoch`, `primary` belong to the
 * monitor thread alone; `suspect`, `hold`, `reset` and `req` are shared under mon->mu. */
typedef struct mon_cluster {
    char key[160]; /* tenant/cluster */
    ha_detector_t det;
    int64_t next_ms; /* monotonic ms of the next probe round */
    int64_t epoch;
    int primary;
    bool seen_up;      /* the primary answered as such at this epoch */
    bool early_fenced; /* the monitor killed the hung primary itself (once) */
    bool suspect;      /* det.failures > 0 */
    bool hold;         /* a switchover runs: do not probe */
    bool reset;        /* forget the failures counted so far */
    mon_request_t req;
} mon_cluster_t;

struct ctl_hamon {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* new view or topology, or stop */
    bool stop;
    bool changed;
    int wake_fd;        /* the control loop's self-pipe (write end) */
    ctl_view_t *latest; /* published and not yet taken (holds a reference) */
    mon_topo_t *topo;   /* latest topology per cluster of `latest_view` */
    int ntopo;
    ctl_view_t *topo_view; /* the view `topo` is indexed by (no reference) */
    mon_cluster_t **cl;    /* grows under mu (either thread); entries are allocated
                              one by one and never move or go away before stop */
    int ncl, capcl;
};

static void view_unref_locked(ctl_view_t *v)
{
    if (v && --v->refs == 0) {
        ctl_pass_results_free(v->des, v->crs, v->ncl);
        free(v);
    }
}

static void cluster_key(const cluster_rt_t *cr, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", cr->res->tenant.v, cr->res->name.v);
}

/* Start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22); 0
 * when it does not exist. With the pid it names one process: pids are reused, this pair
 * is not. */
static unsigned long long proc_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    /* After "pid (comm)" each field is preceded by one space: step to the space before
     * field 3 (state), then on to the one before field 22 (starttime). */
    for (int field = 3; p && field <= 22; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void topo_fill(ctl_daemon_t *d, mon_topo_t *t, const cluster_rt_t *cr)
{
    t->primary = cr->primary;
    t->epoch = cr->epoch;
    t->ready = cr->primary_ready;
    t->pid = 0;
    t->pid_start = 0;
    if (cr->primary >= 0) {
        char id[160];
        snprintf(id, sizeof(id), "%s/%s", cr->inst[cr->primary].tenant, cr->inst[cr->primary].name);
        const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
        if (p && p->state == CTL_PROC_RUNNING && p->pid > 0) {
            t->pid = p->pid;
            t->pid_start = proc_start(p->pid);
        }
    }
}

void ctl_ha_view_publish(ctl_daemon_t *d)
{
    ctl_hamon_t *m = d->mon;
    ctl_view_t *v = calloc(1, sizeof(*v));
    mon_topo_t *topo = calloc((size_t)(d->ncl > 0 ? d->ncl : 1), sizeof(*topo));
    if (!v || !topo) {
        /* Out of memory: the loop keeps its results without a view (freed directly by
         * ctl_ha_view_drop); the monitor keeps watching the previous view. */
        free(v);
        free(topo);
        return;
    }
    /* What a crash of a primary needs to know without a view (the callback may come
     * in the middle of a pass). */
    for (int c = 0; c < d->ncl; c++) {
        cluster_rt_t *cr = &d->crs[c];
        ctl_ha_state_t *hs = ha_state(d, cr->res->tenant.v, cr->res->name.v);
        if (!hs || cr->primary < 0)
            continue;
        hs->crash_watch = cr->ops && cr->ops->failover_on_crash && cr->ops->promote && cr->n >= 2;
        snprintf(hs->primary, sizeof(hs->primary), "%s", cr->inst[cr->primary].name);
    }
    v->refs = 1;
    v->des = d->des;
    v->crs = d->crs;
    v->ncl = d->ncl;
    d->view = v;
    for (int c = 0; c < d->ncl; c++)
        topo_fill(d, &topo[c], &d->crs[c]);
    if (!m) {
        free(topo);
        return;
    }
    pthread_mutex_lock(&m->mu);
    view_unref_locked(m->latest);
    m->latest = v;
    v->refs++;
    free(m->topo);
    m->topo = topo;
    m->ntopo = d->ncl;
    m->topo_view = v;
    m->changed = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

ctl_view_t *ctl_ha_view_ref(ctl_daemon_t *d)
{
    ctl_hamon_t *m = d->mon;
    ctl_view_t *v = d->view;
    if (!v)
        return NULL;
    if (m)
        pthread_mutex_lock(&m->mu);
    v->refs++;
    if (m)
        pthread_mutex_unlock(&m->mu);
    return v;
}

void ctl_ha_view_unref(ctl_daemon_t *d, ctl_view_t *v)
{
    ctl_hamon_t *m = d->mon;
    if (m)
        pthread_mutex_lock(&m->mu);
    view_unref_locked(v);
    if (m)
        pthread_mutex_unlock(&m->mu);
}

void ctl_ha_view_drop(ctl_daemon_t *d)
{
    ctl_hamon_t *m = d->mon;
    if (d->view) {
        if (m)
            pthread_mutex_lock(&m->mu);
        view_unref_locked(d->view);
        if (m)
            pthread_mutex_unlock(&m->mu);
    } else if (d->crs || d->des) {
        ctl_pass_results_free(d->des, d->crs, d->ncl);
    }
    d->view = NULL;
    d->des = NULL;
    d->crs = NULL;
    d->ncl = 0;
}

/* Tells the monitor about a topology change made by the control loop (failover,
 * switchover), so it judges the new primary from now on. */
static void mon_topo_update(ctl_daemon_t *d, const cluster_rt_t *cr)
{
    ctl_hamon_t *m = d->mon;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (d->view && m->topo_view == d->view && cr >= d->crs && cr < d->crs + d->ncl)
        topo_fill(d, &m->topo[cr - d->crs], cr);
    m->changed = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* The monitor's entry for `key`, created when `create`; NULL when absent or out of
 * memory. Call with m->mu held. An entry never moves, so the monitor thread keeps using
 * its pointer after unlocking (only the fields documented as shared need the lock). */
static mon_cluster_t *mon_cluster_locked(ctl_hamon_t *m, const char *key, bool create)
{
    for (int i = 0; i < m->ncl; i++)
        if (strcmp(m->cl[i]->key, key) == 0)
            return m->cl[i];
    if (!create)
        return NULL;
    if (m->ncl == m->capcl) {
        int ncap = m->capcl ? m->capcl * 2 : 8;
        mon_cluster_t **n = realloc(m->cl, (size_t)ncap * sizeof(*n));
        if (!n)
            return NULL;
        m->cl = n;
        m->capcl = ncap;
    }
    mon_cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    snprintf(c->key, sizeof(c->key), "%s", key);
    c->primary = -1;
    m->cl[m->ncl++] = c;
    return c;
}

bool ctl_ha_suspect(ctl_daemon_t *d, const char *tenant, const char *cluster)
{
    ctl_hamon_t *m = d->mon;
    if (!m)
        return false;
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    pthread_mutex_lock(&m->mu);
    mon_cluster_t *c = mon_cluster_locked(m, key, false);
    bool s = c && c->suspect;
    pthread_mutex_unlock(&m->mu);
    return s;
}

/* Stops (hold = true) or resumes probing of a cluster while the control loop runs a
 * requested switchover or failover; resuming also forgets the failures counted and any
 * request made meanwhile (the stopped primary was not a failure). */
static void mon_hold(ctl_daemon_t *d, const char *tenant, const char *cluster, bool hold)
{
    ctl_hamon_t *m = d->mon;
    if (!m)
        return;
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    pthread_mutex_lock(&m->mu);
    mon_cluster_t *c = mon_cluster_locked(m, key, true);
    if (c) {
        c->hold = hold;
        c->reset = true;
        c->suspect = false;
        c->req.pending = false;
    }
    m->changed = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- the monitor thread --------------------------------------------------------------- */

/* Probe time-out for an interval: half of it, 250 ms .. 1 s. A hung server costs the
 * last probe its time-out before the verdict. Shorter time-outs were tried and rejected:
 * on a loaded 2-core machine a healthy PostgreSQL took over 150 ms to fork a backend and
 * answer, and three such probes in a row made a false "failed" verdict (see
 * docs/reliability.md). Replicas, probed only when the primary looks unhealthy, get at
 * least 500 ms: a slow replica must not be mistaken for no candidate. */
static int probe_timeout(int64_t interval)
{
    int64_t t = interval / 2;
    return (int)(t < 250 ? 250 : t > 1000 ? 1000 : t);
}

/* One probe round of one cluster, on the monitor thread. `cr` belongs to the view the
 * thread holds (read-only); `t` is the topology copied under the lock. Returns the
 * monotonic ms of this cluster's next round. */
static int64_t mon_round(ctl_hamon_t *m, const cluster_rt_t *cr, const mon_topo_t *t)
{
    const spec_failover_t *pol = &cr->res->u.cluster.failover;
    int64_t interval = pol->interval.set && pol->interval.ms > 0 ? pol->interval.ms : 1000;
    char key[160];
    cluster_key(cr, key, sizeof(key));
    pthread_mutex_lock(&m->mu);
    mon_cluster_t *mc = mon_cluster_locked(m, key, true);
    bool hold = false;
    if (mc) {
        hold = mc->hold;
        /* A new primary (or a switchover that ended) starts with a clean slate. */
        if (mc->reset || mc->epoch != t->epoch || mc->primary != t->primary) {
            mc->det = (ha_detector_t){0};
            mc->epoch = t->epoch;
            mc->primary = t->primary;
            mc->suspect = false;
            mc->reset = false;
            mc->seen_up = false;
            mc->early_fenced = false;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (!mc)
        return dbp_now_ms() + interval;
    /* mc stays valid after unlocking: entries never move (mon_cluster_locked). */
    int64_t now = dbp_now_ms();
    if (hold)
        return now + interval;
    if (now < mc->next_ms)
        return mc->next_ms;
    /* Keep the cadence: the next round is one interval after this one was due, not after
     * it finished (a round that waited on a hung server does not push the next one). */
    mc->next_ms =
        mc->next_ms && now - mc->next_ms < interval ? mc->next_ms + interval : now + interval;
    /* Only a primary that has been up (the monitor or a pass saw it answer as the
     * primary at this epoch): the reconciler handles bootstrap and promotion. While the
     * monitor does not watch, the pass must probe the primary itself. */
    if (t->ready)
        mc->seen_up = true;
    if (!mc->seen_up && mc->det.last_ok_ms == 0) {
        pthread_mutex_lock(&m->mu);
        mc->suspect = false;
        pthread_mutex_unlock(&m->mu);
        return mc->next_ms;
    }
    int timeout = probe_timeout(interval);
    /* Own copies: the view's instances are shared with the control loop. */
    engine_instance_t in = cr->inst[t->primary];
    in.probe_timeout_ms = timeout;
    engine_probe_t pp;
    dbp_err_t err;
    if (cr->ops->probe(&in, &pp, &err) != 0)
        pp.reachable = false;
    mon_request_t *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return mc->next_ms;
    bool healthy = pp.reachable && pp.role == ENGINE_ROLE_PRIMARY;
    int failcount = pol->failcount.set ? (int)pol->failcount.v : 3;
    /* The replicas matter only to the round that can reach the verdict (is one still
     * streaming? which is the candidate?): probing them in the rounds before would push
     * the next round past its interval (a replica probe takes 50-150 ms under load), and
     * detection from failcount x interval towards failcount x (interval + that). */
    if (!healthy && mc->det.failures + 1 >= failcount) {
        for (int i = 0; i < cr->n; i++) {
            if (i == t->primary)
                continue;
            in = cr->inst[i];
            in.probe_timeout_ms = timeout < 500 ? 500 : timeout;
            if (cr->ops->probe(&in, &rq->rep[rq->nrep], &err) != 0)
                rq->rep[rq->nrep].reachable = false;
            rq->map[rq->nrep++] = i;
        }
    }
    ha_verdict_t v = ha_detect(&mc->det, failcount, &pp, rq->rep, rq->nrep, dbp_now_ms());
    if (v != HA_HEALTHY)
        dbp_info("ha_probe", "tenant=%s cluster=%s primary=%s verdict=%s failures=%d",
                 cr->res->tenant.v, cr->res->name.v, cr->inst[t->primary].name, ha_verdict_str(v),
                 mc->det.failures);
    bool auto_on = !pol->auto_.set || pol->auto_.v;
    bool wake = false;
    pthread_mutex_lock(&m->mu);
    mc->suspect = mc->det.failures > 0;
    /* The control loop has not taken the request for a whole interval: it is blocked,
     * most likely on a statement to this very server (a pass that began just before the
     * hang). Kill the hung server now, which also unblocks that statement; the control
     * loop then fences it through the supervisor (before its back-off restart) and
     * promotes. The pid is checked with its start time, so a reused pid is never hit. */
    bool early = v == HA_FAILED && auto_on && mc->req.pending && !mc->hold && !mc->early_fenced &&
                 mc->req.epoch == t->epoch && dbp_now_ms() - mc->req.detected_ms >= interval &&
                 t->pid > 0;
    if (early)
        mc->early_fenced = true;
    if (v == HA_FAILED && auto_on && !mc->req.pending && !mc->hold && !mc->reset &&
        mc->epoch == t->epoch) {
        rq->pending = true;
        rq->epoch = t->epoch;
        rq->primary = t->primary;
        rq->first_failure_ms = mc->det.first_failure_ms;
        rq->detected_ms = dbp_now_ms();
        rq->last_ok_ms = mc->det.last_ok_ms;
        rq->failures = mc->det.failures;
        rq->last_primary_pos = mc->det.last_primary_pos;
        mc->req = *rq;
        wake = true;
    }
    pthread_mutex_unlock(&m->mu);
    free(rq);
    if (early && t->pid_start && proc_start(t->pid) == t->pid_start) {
        dbp_warn("ha_fence_early",
                 "tenant=%s cluster=%s primary=%s pid=%d reason=\"control "
                 "loop busy for an interval after the verdict\"",
                 cr->res->tenant.v, cr->res->name.v, cr->inst[t->primary].name, (int)t->pid);
        ctl_sup_kill_tree(t->pid);
    }
    if (wake) {
        ssize_t w = write(m->wake_fd, "h", 1);
        (void)w; /* a full pipe already wakes the loop */
    }
    return mc->next_ms;
}

static void *mon_main(void *arg)
{
    ctl_hamon_t *m = arg;
    ctl_view_t *cur = NULL;
    mon_topo_t *topo = NULL;
    int ntopo = 0;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (m->latest) {
            view_unref_locked(cur);
            cur = m->latest;
            m->latest = NULL;
        }
        m->changed = false;
        int n = cur && m->topo_view == cur ? m->ntopo : 0;
        if (n > ntopo) {
            mon_topo_t *t = realloc(topo, (size_t)n * sizeof(*t));
            if (t) {
                topo = t;
                ntopo = n;
            } else {
                n = 0;
            }
        }
        if (n)
            memcpy(topo, m->topo, (size_t)n * sizeof(*topo));
        pthread_mutex_unlock(&m->mu);

        int64_t next = dbp_now_ms() + 1000;
        for (int c = 0; c < n; c++) {
            const cluster_rt_t *cr = &cur->crs[c];
            if (!cr->ops || !cr->ops->promote || cr->n < 2 || topo[c].primary < 0 ||
                topo[c].primary >= cr->n)
                continue;
            int64_t due = mon_round(m, cr, &topo[c]);
            if (due < next)
                next = due;
        }

        pthread_mutex_lock(&m->mu);
        while (!m->stop && !m->changed) {
            int64_t wait = next - dbp_now_ms();
            if (wait <= 0)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT)
                break;
        }
    }
    view_unref_locked(cur);
    pthread_mutex_unlock(&m->mu);
    free(topo);
    return NULL;
}

int ctl_ha_start(ctl_daemon_t *d, int wake_fd)
{
    ctl_hamon_t *m = calloc(1, sizeof(*m));
    if (!m)
        return DBP_ENOMEM;
    m->wake_fd = wake_fd;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&m->thread, NULL, mon_main, m) != 0) {
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m);
        return DBP_EIO;
    }
    m->started = true;
    d->mon = m;
    return 0;
}

void ctl_ha_stop(ctl_daemon_t *d)
{
    ctl_hamon_t *m = d->mon;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->started)
        pthread_join(m->thread, NULL);
    view_unref_locked(m->latest);
    free(m->topo);
    for (int i = 0; i < m->ncl; i++)
        free(m->cl[i]);
    free(m->cl);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    d->mon = NULL;
}

/* ---- failover timing, for the status JSON ------------------------------------------- */

/* Written by the control loop after each automatic failover, read by the API thread. */
typedef struct metrics_entry {
    char key[160];
    ctl_ha_metrics_t m;
} metrics_entry_t;

static struct {
    pthread_mutex_t mu;
    metrics_entry_t *v;
    int n, cap;
} g_metrics = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void metrics_put(const char *key, const ctl_ha_metrics_t *m)
{
    pthread_mutex_lock(&g_metrics.mu);
    metrics_entry_t *e = DBP_KEYED_GET(g_metrics.v, g_metrics.n, g_metrics.cap, key, key, 8);
    if (e)
        e->m = *m;
    pthread_mutex_unlock(&g_metrics.mu);
}

bool ctl_ha_metrics_get(const char *tenant, const char *cluster, ctl_ha_metrics_t *out)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    memset(out, 0, sizeof(*out));
    bool found = false;
    pthread_mutex_lock(&g_metrics.mu);
    for (int i = 0; i < g_metrics.n; i++)
        if (strcmp(g_metrics.v[i].key, key) == 0) {
            *out = g_metrics.v[i].m;
            found = true;
        }
    pthread_mutex_unlock(&g_metrics.mu);
    return found;
}

/* ---- failover on the control loop ----------------------------------------------------- */

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
    ctl_ha_state_t *hs = ha_state(d, cr->res->tenant.v, cr->res->name.v);
    if (hs) {
        snprintf(hs->primary, sizeof(hs->primary), "%s", cr->inst[new_primary].name);
        hs->crash_pending = false;
    }
    mon_topo_update(d, cr);
    /* New transactions go to the new primary now, not after the next pass. */
    ctl_proxy_sync(d);
    char msg[160];
    snprintf(msg, sizeof(msg), "topology changed to epoch %lld; reconciling", (long long)epoch);
    ctl_cluster_unready(d, cr->res->tenant.v, cr->res->name.v, msg);
}

/* ha_hooks_t.routed for a failover: the proxy sends new transactions to the candidate
 * while it promotes (it refuses writes until then; the old primary is fenced). */
static void hook_routed(void *ud, const char *tenant, const char *cluster, int primary,
                        int64_t epoch)
{
    ctl_daemon_t *d = ud;
    cluster_rt_t *cr = ctl_cluster_find(d->crs, d->ncl, tenant, cluster);
    if (!cr || primary < 0 || primary >= cr->n)
        return;
    cr->primary = primary;
    cr->epoch = epoch;
    ctl_proxy_sync(d);
}

static void failover_now(ctl_daemon_t *d, cluster_rt_t *cr, ctl_ha_state_t *hs,
                         const mon_request_t *rq)
{
    const spec_failover_t *pol = &cr->res->u.cluster.failover;
    const char *tenant = cr->res->tenant.v, *cluster = cr->res->name.v;
    /* An instance a worker is cloning, rejoining or rebuilding (control/jobs.c) is never
     * a candidate, whatever its last probe said. */
    engine_probe_t rep[CTL_MAX_INSTANCES];
    for (int k = 0; k < rq->nrep; k++) {
        rep[k] = rq->rep[k];
        if (ctl_job_busy(d, tenant, cr->inst[rq->map[k]].name))
            rep[k].reachable = false;
    }
    int pick = ha_choose(rep, rq->nrep, NULL, rq->last_primary_pos,
                         pol->max_lag.set ? pol->max_lag.v : 16ULL << 20);
    if (pick < 0) {
        if (!hs->reported_no_candidate)
            hook_event(d, tenant, cluster, "Warning", "NoFailoverCandidate",
                       "primary failed and no healthy replica is close enough to promote");
        hs->reported_no_candidate = true;
        return;
    }
    int cand = rq->map[pick];
    char msg[256];
    int64_t detect_ms = rq->detected_ms - rq->first_failure_ms;
    snprintf(msg, sizeof(msg),
             "primary %s failed %d probes in a row (%lld ms); promoting %s (%lld ms after the "
             "verdict)",
             cr->inst[cr->primary].name, rq->failures, (long long)detect_ms, cr->inst[cand].name,
             (long long)(dbp_now_ms() - rq->detected_ms));
    hook_event(d, tenant, cluster, "Warning", "FailoverStarted", msg);
    ha_cluster_t view = ha_view(cr);
    ha_hooks_t h = hooks_for(d);
    h.routed = hook_routed;
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
    int64_t now = dbp_now_ms();
    ctl_ha_metrics_t mx = {.failovers = hs->failovers,
                           .last_wall_ms = dbp_wall_ms(),
                           .epoch = epoch,
                           .detection_ms = detect_ms,
                           .promotion_ms = now - rq->detected_ms,
                           .unavailability_ms = rq->last_ok_ms ? now - rq->last_ok_ms : -1};
    char key[160];
    cluster_key(cr, key, sizeof(key));
    metrics_put(key, &mx);
    snprintf(msg, sizeof(msg),
             "primary %s at epoch %lld: detected in %lld ms, fenced +%lld ms, epoch +%lld ms, "
             "promoted +%lld ms",
             cr->inst[cand].name, (long long)epoch, (long long)detect_ms, (long long)t.fenced_ms,
             (long long)t.epoch_ms, (long long)t.promoted_ms);
    hs->reported_no_candidate = false;
    /* The proxy first (after_change): clients wait on it, not on the event. */
    after_change(d, cr, cand, epoch);
    hook_event(d, tenant, cluster, "Normal", "FailoverCompleted", msg);
}

void ctl_ha_on_exit(ctl_daemon_t *d, const char *id)
{
    const char *slash = strchr(id, '/');
    if (!slash)
        return;
    size_t tl = (size_t)(slash - id);
    for (int i = 0; i < d->nha; i++) {
        ctl_ha_state_t *hs = &d->ha[i];
        if (!hs->crash_watch || hs->crash_pending || strcmp(hs->primary, slash + 1) != 0 ||
            strncmp(hs->key, id, tl) != 0 || hs->key[tl] != '/')
            continue;
        /* No restart in place: the process is in back-off, this makes it stopped. */
        const char *ids[] = {id, NULL};
        ctl_sup_stop_ids(&d->sup, ids, 0);
        hs->crash_pending = true;
        hs->crash_ms = dbp_now_ms();
        d->pass_requested = true;
        dbp_warn("ha_primary_crashed", "cluster=%s primary=%s action=failover", hs->key,
                 hs->primary);
    }
}

bool ctl_ha_primary_held(ctl_daemon_t *d, const char *tenant, const char *cluster)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", tenant, cluster);
    for (int i = 0; i < d->nha; i++)
        if (strcmp(d->ha[i].key, key) == 0)
            return d->ha[i].crash_pending;
    return false;
}

/* A crashed primary of a failover_on_crash engine (ctl_ha_on_exit): probe the replicas
 * now and fail over. With no candidate for 10 s the hold is lifted and the primary
 * restarts in place (an empty server beats no server). */
static void crash_failover(ctl_daemon_t *d, cluster_rt_t *cr, ctl_ha_state_t *hs)
{
    if (cr->primary < 0 || strcmp(cr->inst[cr->primary].name, hs->primary) != 0) {
        hs->crash_pending = false;
        return;
    }
    mon_request_t *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return;
    for (int i = 0; i < cr->n; i++) {
        if (i == cr->primary)
            continue;
        engine_instance_t in = cr->inst[i];
        in.probe_timeout_ms = 1000;
        dbp_err_t err;
        if (cr->ops->probe(&in, &rq->rep[rq->nrep], &err) != 0)
            rq->rep[rq->nrep].reachable = false;
        rq->map[rq->nrep++] = i;
    }
    rq->epoch = cr->epoch;
    rq->primary = cr->primary;
    rq->first_failure_ms = hs->crash_ms;
    rq->detected_ms = hs->crash_ms;
    rq->failures = 1;
    /* The process exited: the replicas hold all it sent. */
    rq->last_primary_pos = 0;
    failover_now(d, cr, hs, rq);
    free(rq);
    if (hs->crash_pending && dbp_now_ms() - hs->crash_ms > 10000) {
        hs->crash_pending = false;
        hook_event(d, cr->res->tenant.v, cr->res->name.v, "Warning", "CrashFailoverGaveUp",
                   "no replica could take over within 10 s; restarting the primary in place");
        d->pass_requested = true;
    }
}

void ctl_ha_tick(ctl_daemon_t *d)
{
    ctl_hamon_t *m = d->mon;
    if (!m)
        return;
    for (int c = 0; c < d->ncl; c++) {
        cluster_rt_t *cr = &d->crs[c];
        char key[160];
        cluster_key(cr, key, sizeof(key));
        ctl_ha_state_t *chs = ha_state(d, cr->res->tenant.v, cr->res->name.v);
        if (chs && chs->crash_pending && cr->ops && cr->ops->promote)
            crash_failover(d, cr, chs);
        mon_request_t *rq = NULL;
        pthread_mutex_lock(&m->mu);
        mon_cluster_t *mc = mon_cluster_locked(m, key, false);
        if (mc && mc->req.pending) {
            rq = malloc(sizeof(*rq));
            if (rq)
                *rq = mc->req;
            mc->req.pending = false;
        }
        pthread_mutex_unlock(&m->mu);
        if (!rq)
            continue;
        /* The verdict is about the topology the monitor saw; a change since (a
         * switchover, a pass that re-read the store) makes it stale. */
        ctl_ha_state_t *hs = ha_state(d, cr->res->tenant.v, cr->res->name.v);
        bool auto_on =
            !cr->res->u.cluster.failover.auto_.set || cr->res->u.cluster.failover.auto_.v;
        if (hs && auto_on && cr->ops && cr->ops->promote && rq->epoch == cr->epoch &&
            rq->primary == cr->primary)
            failover_now(d, cr, hs, rq);
        else
            dbp_info("ha_request_stale", "tenant=%s cluster=%s epoch=%lld current_epoch=%lld",
                     cr->res->tenant.v, cr->res->name.v, (long long)rq->epoch,
                     (long long)cr->epoch);
        free(rq);
    }
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
    cluster_rt_t *cr = epoch > 0 && primary ? ctl_cluster_find(d->crs, d->ncl, tenant, cluster)
                                            : NULL;
    if (cr) {
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
        if (ctl_job_busy(d, tenant, to))
            return dbp_err_set(err, DBP_EBUSY,
                               "%s is being cloned, rejoined or rebuilt; it cannot be promoted "
                               "until that ends",
                               to);
    } else {
        engine_probe_t rep[CTL_MAX_INSTANCES];
        int map[CTL_MAX_INSTANCES], nrep = 0;
        for (int i = 0; i < cr->n; i++) {
            if (i == cr->primary)
                continue;
            dbp_err_t e2;
            memset(&rep[nrep], 0, sizeof(rep[nrep]));
            if (!ctl_job_busy(d, tenant, cr->inst[i].name) &&
                cr->ops->probe(&cr->inst[i], &rep[nrep], &e2) != 0)
                rep[nrep].reachable = false;
            map[nrep++] = i;
        }
        int pick = ha_choose(rep, nrep, NULL, 0, 0);
        if (pick < 0)
            return dbp_err_set(err, DBP_EBUSY, "no healthy replica to switch to");
        cand = map[pick];
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
    /* The monitor must not count the primary this sequence stops as a failure. */
    mon_hold(d, tenant, cluster, true);
    int rc = force ? ha_failover(&view, cand, &h, &epoch, &t, err)
                   : ha_switchover(&view, cand, &h, 15000, &epoch, &t, err);
    mon_hold(d, tenant, cluster, false);
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
    if (hs)
        hs->last = t;
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
