/*
 * reconcile.c: one reconcile pass over every resource (see reconcile.h).
 */
#include "control/reconcile.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "common/keyed.h"
#include "common/log.h"
#include "common/port.h"
#include "engines/engine.h"
#include "spec/spec.h"

#define CTL_PORT_BASE 25432
#define CTL_PORT_LAST 29999

/* ---- bookkeeping -------------------------------------------------------------------- */

static ctl_memo_t *memo_get(ctl_daemon_t *d, const spec_resource_t *r)
{
    char key[256];
    snprintf(key, sizeof(key), "%s/%s/%s", spec_kind_str(r->kind), r->tenant.v, r->name.v);
    return DBP_KEYED_GET(d->memo, d->nmemo, d->capmemo, key, key, 64);
}

static void event(ctl_daemon_t *d, const char *tenant, const char *kind, const char *name,
                  const char *type, const char *reason, const char *msg)
{
    dbp_err_t err;
    if (store_add_event(d->store, tenant, kind, name, type, reason, msg, &err) != 0)
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(err.msg));
    dbp_log(strcmp(type, "Warning") == 0 ? DBP_LOG_WARN : DBP_LOG_INFO, "event",
            "tenant=%s kind=%s name=%s reason=%s message=%s", tenant, kind, name, reason,
            dbp_log_q(msg));
}

void ctl_event(ctl_daemon_t *d, const char *tenant, const char *kind, const char *name,
               const char *type, const char *reason, const char *msg)
{
    event(d, tenant, kind, name, type, reason, msg);
}

/* Writes the resource's status; on failure records a Warning event once per distinct
 * message (a failure that repeats every pass is one event, not thousands). */
static void set_status(ctl_daemon_t *d, const spec_resource_t *r, int64_t gen, const char *state,
                       const char *msg)
{
    dbp_err_t err;
    if (store_set_status(d->store, r->tenant.v, spec_kind_str(r->kind), r->name.v, gen, state,
                         msg, &err) != 0)
        dbp_warn("status_write_failed", "error=%s", dbp_log_q(err.msg));
    ctl_memo_t *m = memo_get(d, r);
    if (!m)
        return;
    if (strcmp(state, "failed") == 0) {
        if (strncmp(m->last_error, msg ? msg : "", sizeof(m->last_error) - 1) != 0) {
            event(d, r->tenant.v, spec_kind_str(r->kind), r->name.v, "Warning", "ReconcileFailed",
                  msg ? msg : "");
            snprintf(m->last_error, sizeof(m->last_error), "%s", msg ? msg : "");
        }
        m->checked_ms = 0;
    } else if (strcmp(state, "ready") == 0) {
        if (m->last_error[0])
            event(d, r->tenant.v, spec_kind_str(r->kind), r->name.v, "Normal", "Recovered",
                  "reconciled after earlier failure");
        m->last_error[0] = '\0';
        m->generation = gen;
        m->checked_ms = dbp_now_ms();
    }
}

/* True when r is ready at generation gen and was checked within the resync period. */
static bool fresh(ctl_daemon_t *d, const spec_resource_t *r, int64_t gen)
{
    ctl_memo_t *m = memo_get(d, r);
    return m && m->generation == gen && m->checked_ms &&
           dbp_now_ms() - m->checked_ms < d->resync_ms;
}

static int load_cb(const store_resource_t *sr, void *ud)
{
    desired_t *des = ud;
    size_t before = des->set.n;
    spec_diags_t diags;
    spec_diags_init(&diags);
    char name[256];
    snprintf(name, sizeof(name), "<store:%s/%s/%s>", sr->tenant, sr->kind, sr->name);
    int rc = spec_parse_buffer(&des->set, name, sr->json, strlen(sr->json), &diags);
    if (rc != 0 || des->set.n != before + 1) {
        /* Cannot happen for documents the API validated; keep going without it. */
        dbp_error("stored_resource_invalid", "tenant=%s kind=%s name=%s", sr->tenant, sr->kind,
                  sr->name);
        spec_diags_print(&diags, stderr);
    }
    spec_diags_free(&diags);
    size_t n = des->set.n;
    des->generation = realloc(des->generation, n * sizeof(int64_t));
    des->observed = realloc(des->observed, n * sizeof(int64_t));
    des->state = realloc(des->state, n * sizeof(char *));
    if (!des->generation || !des->observed || !des->state)
        return DBP_ENOMEM;
    for (size_t i = before; i < n; i++) {
        des->generation[i] = sr->generation;
        des->observed[i] = sr->observed_generation;
        des->state[i] = sr->state ? strdup(sr->state) : NULL;
    }
    return 0;
}

static void desired_free(desired_t *des)
{
    for (size_t i = 0; i < des->set.n && des->state; i++)
        free(des->state[i]);
    free(des->state);
    free(des->generation);
    free(des->observed);
    spec_set_free(&des->set);
}

/* ---- clusters ----------------------------------------------------------------------- */

/* Picks a port no instance of this data dir holds and nothing on the machine listens on,
 * scanning the whole range once from the data dir's own block (common/port.h), so two
 * daemons on one machine rarely race for a port (a lost race is still repaired: the
 * instance moves, see instance_port_check). */
static int alloc_port(ctl_daemon_t *d, store_instance_t *rec, dbp_err_t *err)
{
    const int n = CTL_PORT_LAST - CTL_PORT_BASE + 1;
    const int start = dbp_port_scan_start(d->data_dir, CTL_PORT_BASE, CTL_PORT_LAST, 16);
    for (int i = 0; i < n; i++) {
        int p = CTL_PORT_BASE + (start - CTL_PORT_BASE + i) % n;
        if (p != rec->port && !store_port_taken(d->store, p) && dbp_port_free(p)) {
            rec->port = p;
            return 0;
        }
    }
    return dbp_err_set(err, DBP_EBUSY, "no free port in %d..%d", CTL_PORT_BASE, CTL_PORT_LAST);
}

/* When an instance that is not running cannot get its port back because another program
 * took it meanwhile, it moves to a new port (a server would otherwise crash-loop on
 * "address already in use"). Returns 1 when it moved. */
static int instance_port_check(ctl_daemon_t *d, store_instance_t *rec, dbp_err_t *err)
{
    char id[160];
    snprintf(id, sizeof(id), "%s/%s", rec->tenant, rec->name);
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    if ((p && (p->state == CTL_PROC_RUNNING || p->state == CTL_PROC_STOPPING)) ||
        dbp_port_free(rec->port))
        return 0;
    int old = rec->port;
    int rc = alloc_port(d, rec, err);
    if (!rc)
        rc = store_put_instance(d->store, rec, err);
    if (rc)
        return rc;
    char m[160];
    snprintf(m, sizeof(m), "port %d is taken by another program; moved to port %d", old,
             rec->port);
    event(d, rec->tenant, "Instance", rec->name, "Warning", "PortMoved", m);
    return 1;
}

/* Loads or creates the store record of instance `ordinal` (allocating its port once). */
static int instance_record(ctl_daemon_t *d, const spec_resource_t *c, int ordinal,
                           store_instance_t *rec, dbp_err_t *err)
{
    char name[96];
    snprintf(name, sizeof(name), "%s-%d", c->name.v, ordinal);
    int rc = store_get_instance(d->store, c->tenant.v, c->name.v, name, rec, err);
    if (rc == 0)
        return 0;
    if (rc != DBP_ENOENT)
        return rc;
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->tenant, sizeof(rec->tenant), "%s", c->tenant.v);
    snprintf(rec->cluster, sizeof(rec->cluster), "%s", c->name.v);
    snprintf(rec->name, sizeof(rec->name), "%s", name);
    rec->ordinal = ordinal;
    snprintf(rec->host, sizeof(rec->host), "127.0.0.1");
    snprintf(rec->state, sizeof(rec->state), "stopped");
    rec->lag_bytes = rec->lag_ms = -1;
    rc = alloc_port(d, rec, err);
    return rc ? rc : store_put_instance(d->store, rec, err);
}

void ctl_instance_layout(engine_instance_t *in, const char *data_dir, const char *run_dir,
                         const spec_resource_t *c, const store_instance_t *rec,
                         const dbp_runas_t *runas)
{
    memset(in, 0, sizeof(*in));
    in->tenant = c->tenant.v;
    in->cluster = c->name.v;
    snprintf(in->name, sizeof(in->name), "%s", rec->name);
    in->ordinal = rec->ordinal;
    snprintf(in->dir, sizeof(in->dir), "%s/clusters/%s/%s/%s", data_dir, c->tenant.v, c->name.v,
             rec->name);
    snprintf(in->data_dir, sizeof(in->data_dir), "%s/data", in->dir);
    snprintf(in->log_path, sizeof(in->log_path), "%s/server.log", in->dir);
    snprintf(in->tool_log_path, sizeof(in->tool_log_path), "%s/tools.log", in->dir);
    snprintf(in->sock_dir, sizeof(in->sock_dir), "%s/s%d", run_dir, rec->port);
    snprintf(in->host, sizeof(in->host), "%s", rec->host);
    in->port = rec->port;
    in->spec = &c->u.cluster;
    in->runas = runas;
    ctl_wal_spool_path(in->archive_spool, sizeof(in->archive_spool), data_dir, c->tenant.v,
                       c->name.v);
    ctl_tls_dir_path(in->tls_dir, sizeof(in->tls_dir), data_dir, c->tenant.v, c->name.v);
}

void ctl_tls_dir_path(char *buf, size_t len, const char *data_dir, const char *tenant,
                      const char *cluster)
{
    snprintf(buf, len, "%s/clusters/%s/%s/tls", data_dir, tenant, cluster);
}

void ctl_wal_spool_path(char *buf, size_t len, const char *data_dir, const char *tenant,
                        const char *cluster)
{
    snprintf(buf, len, "%s/clusters/%s/%s/wal-spool", data_dir, tenant, cluster);
}

bool ctl_cluster_archives(const spec_set_t *set, const char *tenant, const char *cluster,
                          const spec_resource_t **backup)
{
    for (size_t i = 0; i < set->n; i++) {
        const spec_resource_t *r = set->items[i];
        if (r->kind == SPEC_KIND_BACKUP && r->u.backup.pitr.v && r->u.backup.cluster.v &&
            strcmp(r->tenant.v, tenant) == 0 && strcmp(r->u.backup.cluster.v, cluster) == 0) {
            if (backup)
                *backup = r;
            return true;
        }
    }
    return false;
}

static void fill_instance(ctl_daemon_t *d, const spec_resource_t *c, const store_instance_t *rec,
                          engine_instance_t *in)
{
    ctl_instance_layout(in, d->data_dir, d->run_dir, c, rec, &d->runas);
    /* A hung server must not stall the whole pass (and with it the HA monitor). */
    in->probe_timeout_ms = 1000;
}

/* Turns on continuous archiving for the instances of a cluster with a pitr Backup. */
static void fill_archiving(ctl_daemon_t *d, cluster_rt_t *cr, engine_instance_t *in)
{
    in->archive_exe = cr->archives && d->exe[0] ? d->exe : NULL;
    in->archive_queue_max = cr->archive_queue_max;
}

static void proc_id(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", in->tenant, in->name);
}

/* Makes the instance's directories: parents 0711 (traversable by the service user),
 * the instance dir and socket dir 0700 owned by the service user. */
static int instance_dirs(ctl_daemon_t *d, const engine_instance_t *in, dbp_err_t *err)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/clusters/%s/%s", d->data_dir, in->tenant, in->cluster);
    int rc = dbp_mkdir_p(parent, 0711, NULL, err);
    if (!rc)
        rc = dbp_mkdir_p(in->dir, 0700, &d->runas, err);
    if (!rc)
        rc = dbp_mkdir_p(in->sock_dir, 0700, &d->runas, err);
    if (!rc && in->archive_exe)
        rc = dbp_mkdir_p(in->archive_spool, 0700, &d->runas, err);
    return rc;
}

/* Renders config, starts the server if needed, reloads it when its config changed. */
static int instance_run(ctl_daemon_t *d, cluster_rt_t *cr, int i, const engine_instance_t *primary,
                        dbp_err_t *err)
{
    engine_instance_t *in = &cr->inst[i];
    char id[160];
    proc_id(in, id, sizeof(id));
    int changed = cr->ops->render_config(in, primary, err);
    if (changed < 0)
        return changed;
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    bool running = p && p->state == CTL_PROC_RUNNING;
    if (changed > 0 && running) {
        /* Engines without a reload signal (MariaDB, Redis) applied the change to the
         * running server inside render_config; either way rolling.c then asks
         * needs_restart what is left for a restart. */
        if (cr->ops->reload_signal)
            (void)ctl_sup_signal(&d->sup, id, cr->ops->reload_signal);
        cr->reloaded = true;
        event(d, in->tenant, "Instance", in->name, "Normal", "ConfigReloaded",
              cr->ops->reload_signal ? "configuration changed; server reloaded"
                                     : "configuration changed; applied to the running server");
    }
    char *argv[CTL_MAX_ARGS];
    char buf[2 * PATH_MAX];
    int rc = cr->ops->server_argv(in, argv, CTL_MAX_ARGS, buf, sizeof(buf), err);
    if (rc)
        return rc;
    return ctl_sup_ensure(&d->sup, id, argv, in->log_path, &d->runas, cr->ops->stop_signal, err);
}

static void instance_observe(ctl_daemon_t *d, cluster_rt_t *cr, int i)
{
    engine_instance_t *in = &cr->inst[i];
    char id[160];
    proc_id(in, id, sizeof(id));
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    memset(&cr->probe[i], 0, sizeof(cr->probe[i]));
    /* While the HA monitor suspects the primary, the pass does not wait on it too: the
     * monitor's own probes must keep their cadence. */
    if (i == cr->primary && ctl_ha_suspect(d, cr->res->tenant.v, cr->res->name.v))
        return;
    if (p && p->state == CTL_PROC_RUNNING) {
        dbp_err_t err;
        if (cr->ops->probe(in, &cr->probe[i], &err) != 0)
            cr->probe[i].reachable = false;
    }
}

static void instance_store(ctl_daemon_t *d, cluster_rt_t *cr, int i)
{
    engine_instance_t *in = &cr->inst[i];
    engine_probe_t *pr = &cr->probe[i];
    store_instance_t rec;
    dbp_err_t err;
    if (store_get_instance(d->store, in->tenant, in->cluster, in->name, &rec, &err) != 0)
        return;
    char id[160];
    proc_id(in, id, sizeof(id));
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    const char *state = "stopped";
    if (p && p->state == CTL_PROC_RUNNING)
        state = pr->reachable ? "running" : "starting";
    else if (p && p->state == CTL_PROC_BACKOFF)
        state = "failed";
    snprintf(rec.state, sizeof(rec.state), "%s", state);
    const char *role = pr->reachable ? engine_role_str(pr->role)
                                     : (i == cr->primary ? "primary" : "replica");
    snprintf(rec.role, sizeof(rec.role), "%s", role);
    if (pr->reachable)
        snprintf(rec.position, sizeof(rec.position), "%s", pr->position);
    rec.lag_bytes = rec.lag_ms = -1;
    if (i == cr->primary && pr->reachable) {
        rec.lag_bytes = rec.lag_ms = 0;
    } else if (cr->primary >= 0 && cr->probe[cr->primary].reachable) {
        const engine_probe_t *pp = &cr->probe[cr->primary];
        for (int k = 0; k < pp->nreplicas; k++) {
            if (strcmp(pp->replicas[k].name, in->name) == 0) {
                rec.lag_bytes = pp->replicas[k].lag_bytes;
                rec.lag_ms = pp->replicas[k].lag_ms;
            }
        }
    }
    rec.updated_ms = dbp_wall_ms();
    if (store_put_instance(d->store, &rec, &err) != 0)
        dbp_warn("instance_write_failed", "instance=%s error=%s", in->name, dbp_log_q(err.msg));
}

/* A replica whose replication stopped for good is rebuilt at most once in this many
 * seconds: a cause a fresh clone does not cure must not clone on every pass. */
#define CTL_REBUILD_BACKOFF_S 600
#define CTL_REBUILT_MARKER ".rebuilt" /* in the instance dir; its mtime is the last rebuild */

/* Milliseconds since replica R was last rebuilt for broken replication (its marker's
 * mtime), or -1 when it never was. */
static int64_t rebuilt_ago_ms(const engine_instance_t *R)
{
    char mark[PATH_MAX + 32];
    snprintf(mark, sizeof(mark), "%s/" CTL_REBUILT_MARKER, R->dir);
    struct stat st;
    if (stat(mark, &st) != 0)
        return -1;
    int64_t ago = (int64_t)(time(NULL) - st.st_mtime) * 1000;
    return ago < 0 ? 0 : ago;
}

/* Records that replica R is rebuilt now: the marker whose mtime rebuilt_ago_ms reads. */
static void rebuilt_mark(const engine_instance_t *R)
{
    char mark[PATH_MAX + 32];
    snprintf(mark, sizeof(mark), "%s/" CTL_REBUILT_MARKER, R->dir);
    dbp_err_t ignore;
    if (dbp_write_file(mark, "rebuilt\n", 8, 0644, NULL, &ignore) != 0)
        dbp_warn("marker_write_failed", "path=%s error=%s", dbp_log_q(mark),
                 dbp_log_q(ignore.msg));
}

/* True when replica R was rebuilt for broken replication less than CTL_REBUILD_BACKOFF_S
 * ago (its marker's mtime). */
static bool rebuilt_recently(const engine_instance_t *R)
{
    int64_t ago = rebuilt_ago_ms(R);
    return ago >= 0 && ago < CTL_REBUILD_BACKOFF_S * 1000LL;
}

/* Stops replica R's server before a worker replaces or rewinds its data directory (a
 * fenced one already is). 0, or DBP_EBUSY when it did not stop. */
static int replica_stop(ctl_daemon_t *d, const engine_instance_t *R, dbp_err_t *err)
{
    char id[160];
    proc_id(R, id, sizeof(id));
    const char *ids[] = {id, NULL};
    ctl_sup_stop_ids(&d->sup, ids, 60000);
    const ctl_proc_t *p = ctl_sup_find(&d->sup, id);
    if (p && p->state != CTL_PROC_STOPPED)
        return dbp_err_set(err, DBP_EBUSY, "%s did not stop", R->name);
    return 0;
}

/* Queues a slow step for replica R (control/jobs.c); the worker starts after this pass.
 * Writes the pending message. Returns "pending", or "failed" when out of memory. */
static const char *replica_job(ctl_daemon_t *d, cluster_rt_t *cr, ctl_job_kind_t kind,
                               const engine_instance_t *R, const engine_instance_t *P,
                               const char *why, bool from_backup, char *msg, size_t len)
{
    if (!ctl_job_queue(d, kind, cr, R, P, why, from_backup)) {
        snprintf(msg, len, "%s: out of memory", R->name);
        return "failed";
    }
    snprintf(msg, len, "%s %s from %s", ctl_job_doing_str(kind), R->name, P->name);
    return "pending";
}

/* Takes the results of replica R's finished job and does the store work the synchronous
 * step did after it: events (Bootstrapped / BootstrapFallback, Rejoined, Rebuilding,
 * Cloned) and the rejoin marker. A step made from a primary that is no longer the
 * topology's (a failover while it ran) is discarded: its data directory is removed (a
 * rejoin keeps its marker) and the next pass starts it again from the new primary.
 * Frees the job. Returns NULL when R's data directory is ready for the rest of the pass,
 * or the cluster's state ("failed", "pending") with the reason in msg. */
static const char *job_collect(ctl_daemon_t *d, cluster_rt_t *cr, ctl_job_t *j,
                               const engine_instance_t *R, const engine_instance_t *P,
                               char *msg, size_t len)
{
    const char *tenant = R->tenant, *st = NULL;
    char m[1400];
    /* An init or restore made R as a primary, and the topology names another one now. */
    bool stale =
        j->epoch != cr->epoch || strcmp(j->P.name, P->name) != 0 || ctl_job_makes_primary(j->kind);
    if (j->boot_tried)
        event(d, tenant, "Instance", R->name, j->boot_rc ? "Warning" : "Normal",
              j->boot_rc ? "BootstrapFallback" : "Bootstrapped", j->boot_msg);
    if (j->boot_tried && j->cloned) /* the fallback (the worker went on to clone) */
        event(d, tenant, "Instance", R->name, "Normal", "Cloning",
              "cloning the primary into a new replica");
    if (j->rejoin_tried && j->rejoin_rc == 0 && !stale) {
        event(d, tenant, "Instance", R->name, "Normal", "Rejoined",
              "former primary follows the new primary without a rebuild");
    } else if (j->rejoin_tried && j->rejoin_rc != 0 && j->cloned) {
        snprintf(m, sizeof(m), "rejoin failed (%s); rebuilding from the primary %s",
                 j->rejoin_err, j->P.name);
        event(d, tenant, "Instance", R->name, "Warning", "Rebuilding", m);
    }
    if (j->rc != 0) {
        snprintf(msg, len, "%s %s from %s: %s",
                 j->kind != CTL_JOB_REJOIN ? ctl_job_kind_str(j->kind)
                 : j->cloned               ? "rebuild"
                                           : "rejoin",
                 R->name, j->P.name, j->err.msg);
        st = "failed";
    } else if (stale) {
        /* Made from a server that is no longer the primary: it may hold writes the new
         * primary never saw. */
        dbp_err_t e2;
        if (j->cloned || j->boot_tried || ctl_job_makes_primary(j->kind)) {
            if (dbp_rm_rf(R->data_dir, &e2) != 0)
                dbp_warn("cleanup_failed", "path=%s error=%s", dbp_log_q(R->data_dir),
                         dbp_log_q(e2.msg));
        }
        snprintf(m, sizeof(m), "made from %s at epoch %lld, but epoch %lld names %s primary; "
                 "starting again from it",
                 j->P.name, (long long)j->epoch, (long long)cr->epoch, P->name);
        event(d, tenant, "Instance", R->name, "Warning", "StepDiscarded", m);
        snprintf(msg, len, "%s: %s", R->name, m);
        st = "pending";
    } else {
        if (j->cloned)
            event(d, tenant, "Instance", R->name, "Normal", "Cloned",
                  j->kind == CTL_JOB_CLONE ? "replica data directory cloned from the primary"
                                           : "replica data directory rebuilt from the primary");
        if (j->kind == CTL_JOB_REJOIN) {
            char marker[PATH_MAX + 32];
            ctl_rejoin_marker(R, marker, sizeof(marker));
            unlink(marker);
        }
    }
    dbp_info("job_collected", "tenant=%s instance=%s kind=%s rc=%d ms=%lld stale=%d", tenant,
             R->name, ctl_job_kind_str(j->kind), j->rc, (long long)j->ms, (int)stale);
    ctl_job_free(d, j);
    return st;
}

/* Primary P's first initialisation, job j (CTL_JOB_INIT): while it runs, returns
 * "pending" ("initialising P"); once done, records Initialized, or returns "failed" with
 * the reason in msg (the next pass initialises again: init_primary starts from an empty
 * directory), and frees j. NULL when P's data directory is ready. */
static const char *init_collect(ctl_daemon_t *d, ctl_job_t *j, const engine_instance_t *P,
                                char *msg, size_t len)
{
    if (!ctl_job_done(j)) {
        snprintf(msg, len, "initialising %s", P->name);
        return "pending";
    }
    const char *st = NULL;
    if (j->rc) {
        snprintf(msg, len, "initialise %s: %s", P->name, j->err.msg);
        st = "failed";
    } else {
        event(d, P->tenant, "Instance", P->name, "Normal", "Initialized",
              "primary data directory created");
    }
    dbp_info("job_collected", "tenant=%s instance=%s kind=%s rc=%d ms=%lld", P->tenant, P->name,
             ctl_job_kind_str(j->kind), j->rc, (long long)j->ms);
    ctl_job_free(d, j);
    return st;
}

/* The stream watch of instance `name` of `tenant`, created zeroed; NULL when out of memory. */
static ctl_stream_t *stream_get(ctl_daemon_t *d, const char *tenant, const char *name)
{
    char key[200];
    snprintf(key, sizeof(key), "%s/%s", tenant, name);
    return DBP_KEYED_GET(d->streams, d->nstreams, d->capstreams, key, key, 16);
}

/* The rule for a replica that runs but does not stream (engines with
 * rebuild_not_streaming; ha_stream_check decides): once replica cr->inst[i] has not
 * streamed from the healthy primary P for the bound, records a ReplicaNotStreaming
 * Warning event (how long, its replication state, the last line of its server log about
 * replication: ops->repl_log_marks) and
 * a `replica_not_streaming` log line, stops it and queues a rebuild (from the Cluster's
 * bootstrapFrom Backup when set, else a clone of P). At most one rebuild per
 * CTL_REBUILD_BACKOFF_S per instance: within it, one RebuildBackoff Warning event per
 * episode and the cluster failed. Returns NULL when nothing is to be done, else the
 * cluster's state with msg written. */
static const char *stream_watch(ctl_daemon_t *d, cluster_rt_t *cr, int i,
                                const engine_instance_t *P, bool primary_ok, char *msg,
                                size_t len)
{
    engine_instance_t *R = &cr->inst[i];
    const engine_probe_t *pr = &cr->probe[i];
    ctl_stream_t *st = stream_get(d, R->tenant, R->name);
    if (!st)
        return NULL;
    char id[160];
    proc_id(R, id, sizeof(id));
    const ctl_proc_t *proc = ctl_sup_find(&d->sup, id);
    ha_stream_obs_t o = {
        .epoch = cr->epoch,
        .primary_healthy = primary_ok && cr->primary_ready &&
                           !ctl_ha_suspect(d, R->tenant, R->cluster),
        .busy = ctl_job_busy(d, R->tenant, R->name),
        .running = proc && proc->state == CTL_PROC_RUNNING,
        .started_ms = proc ? proc->started_ms : 0,
        .probe = pr,
        .rebuilt_ago_ms = rebuilt_ago_ms(R),
    };
    int64_t bound = ctl_stream_bound_ms(), ran = 0;
    ha_stream_verdict_t v = ha_stream_check(&st->w, &o, bound, CTL_REBUILD_BACKOFF_S * 1000LL,
                                            dbp_now_ms(), &ran);
    if (v != HA_STREAM_HELD)
        st->held_reported = false;
    if (v == HA_STREAM_OK || v == HA_STREAM_WAIT)
        return NULL;
    if (v == HA_STREAM_HELD) {
        /* No duration in the status: a message that changes every pass would record a
         * ReconcileFailed event every pass. */
        snprintf(msg, len, "%s does not stream from %s; it was rebuilt less than %d s ago, "
                 "not again yet", R->name, P->name, CTL_REBUILD_BACKOFF_S);
        if (st->held_reported)
            return "failed"; /* the episode's event is out: no log read every pass */
    }
    char state[160], logerr[256], m[900];
    if (pr->reachable)
        snprintf(state, sizeof(state), "%s, replayed to %s",
                 pr->repl_state[0] ? pr->repl_state : "replication state unknown", pr->position);
    else
        snprintf(state, sizeof(state), "its server runs but refuses connections");
    static const char *const any_error[] = {"FATAL", "ERROR", "PANIC", NULL};
    engine_log_last_match(R->log_path,
                          cr->ops->repl_log_marks ? cr->ops->repl_log_marks : any_error, logerr,
                          sizeof(logerr));
    snprintf(m, sizeof(m), "%s has not streamed for %.1f s from %s, a healthy primary (%s; "
             "server log: %s)",
             R->name, (double)ran / 1000.0, P->name, state,
             logerr[0] ? logerr : "nothing about replication");
    if (v == HA_STREAM_HELD) {
        char hm[1100];
        snprintf(hm, sizeof(hm), "%s; it was rebuilt less than %d s ago, not again yet", m,
                 CTL_REBUILD_BACKOFF_S);
        event(d, R->tenant, "Instance", R->name, "Warning", "RebuildBackoff", hm);
        st->held_reported = true;
        return "failed";
    }
    dbp_warn("replica_not_streaming",
             "tenant=%s cluster=%s instance=%s primary=%s epoch=%lld not_streaming_ms=%lld "
             "bound_ms=%lld reachable=%d repl_state=%s position=%s log=%s action=rebuild",
             R->tenant, R->cluster, R->name, P->name, (long long)cr->epoch, (long long)ran,
             (long long)bound, (int)pr->reachable, dbp_log_q(pr->repl_state),
             dbp_log_q(pr->position), dbp_log_q(logerr));
    char em[1100];
    snprintf(em, sizeof(em), "%s; rebuilding it from %s", m,
             cr->res->u.cluster.bootstrap_backup.v ? "its bootstrapFrom Backup" : "the primary");
    event(d, R->tenant, "Instance", R->name, "Warning", "ReplicaNotStreaming", em);
    dbp_err_t err;
    if (replica_stop(d, R, &err) != 0) {
        snprintf(msg, len, "rebuild %s from %s: %s", R->name, P->name, err.msg);
        return "failed";
    }
    rebuilt_mark(R);
    memset(&cr->probe[i], 0, sizeof(cr->probe[i]));
    char why[600];
    snprintf(why, sizeof(why), "not streaming for %.1f s", (double)ran / 1000.0);
    return replica_job(d, cr, CTL_JOB_REBUILD, R, P, why, true, msg, len);
}

/* Brings one cluster's instances to the declared shape. Returns the status message in
 * msg and a state ("ready", "pending", "failed"). */
static const char *cluster_reconcile(ctl_daemon_t *d, cluster_rt_t *cr, char *msg, size_t len)
{
    const spec_resource_t *c = cr->res;
    const spec_cluster_t *cs = &c->u.cluster;
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    cr->primary = -1;
    cr->ops = engine_lookup((spec_engine_t)cs->engine);
    if (!cr->ops) {
        snprintf(msg, len,
                 "engine %s is not available in this build yet; this cluster is stored but "
                 "not started",
                 spec_engine_str((spec_engine_t)cs->engine));
        return "failed";
    }
    if (cr->ops->check_install(cs->version.v, &err) != 0) {
        snprintf(msg, len, "%s", err.msg);
        return "failed";
    }
    cr->n = (int)cs->instances.v;
    if (cr->n < 1 || cr->n > CTL_MAX_INSTANCES) {
        snprintf(msg, len, "instances must be 1..%d", CTL_MAX_INSTANCES);
        return "failed";
    }
    char internal[128];
    snprintf(internal, sizeof(internal), "dbplane-internal-%s", c->name.v);
    if (secrets_ensure(d->secrets, c->tenant.v, internal, "admin", 32, &cr->admin_password, NULL,
                       &err) != 0 ||
        secrets_ensure(d->secrets, c->tenant.v, internal, "replication", 32, &cr->repl_password,
                       NULL, &err) != 0) {
        snprintf(msg, len, "internal credentials: %s", err.msg);
        return "failed";
    }
    for (int i = 0; i < cr->n; i++) {
        store_instance_t rec;
        if (instance_record(d, c, i, &rec, &err) != 0 ||
            instance_port_check(d, &rec, &err) < 0) {
            snprintf(msg, len, "allocate instance %d: %s", i, err.msg);
            return "failed";
        }
        fill_instance(d, c, &rec, &cr->inst[i]);
        fill_archiving(d, cr, &cr->inst[i]);
        cr->inst[i].admin_password = cr->admin_password;
        cr->inst[i].repl_password = cr->repl_password;
        if (instance_dirs(d, &cr->inst[i], &err) != 0) {
            snprintf(msg, len, "%s", err.msg);
            return "failed";
        }
    }
    /* The topology names the primary; the first one ever is instance 0, at epoch 1. */
    char primary[96];
    if (store_get_topology(d->store, c->tenant.v, c->name.v, &cr->epoch, primary, &err) != 0) {
        snprintf(msg, len, "%s", err.msg);
        return "failed";
    }
    if (cr->epoch == 0) {
        if (store_cas_topology(d->store, c->tenant.v, c->name.v, 0, cr->inst[0].name, &cr->epoch,
                               &err) != 0) {
            snprintf(msg, len, "%s", err.msg);
            return "failed";
        }
        snprintf(primary, sizeof(primary), "%s", cr->inst[0].name);
        char m[160];
        snprintf(m, sizeof(m), "epoch %lld: primary %s", (long long)cr->epoch, primary);
        event(d, c->tenant.v, "Cluster", c->name.v, "Normal", "TopologyChanged", m);
    }
    for (int i = 0; i < cr->n; i++)
        if (strcmp(cr->inst[i].name, primary) == 0)
            cr->primary = i;
    if (cr->primary < 0) {
        snprintf(msg, len, "topology epoch %lld names primary %s, which is not an instance",
                 (long long)cr->epoch, primary);
        return "failed";
    }

    /* The primary first. */
    engine_instance_t *P = &cr->inst[cr->primary];
    ctl_job_t *pj = ctl_job_find(d, c->tenant.v, P->name);
    if (pj && pj->kind == CTL_JOB_RESTORE) {
        /* A worker restores it (below): wait for it, then take the result. */
        const char *st = ctl_restore_job(d, pj, P, msg, len);
        if (st)
            return st;
    } else if (pj && pj->kind == CTL_JOB_INIT) {
        const char *st = init_collect(d, pj, P, msg, len);
        if (st)
            return st;
    } else if (pj) {
        /* Cannot happen through dbplane (no failover or switchover promotes a busy
         * instance); a topology edited by hand could. The step's result is not used. */
        if (!ctl_job_done(pj)) {
            snprintf(msg, len, "primary %s is busy with a clone, rejoin or rebuild", P->name);
            return "pending";
        }
        ctl_job_free(d, pj);
    }
    if (ctl_ha_primary_held(d, c->tenant.v, c->name.v)) {
        snprintf(msg, len, "primary %s crashed; failing over to a replica", P->name);
        return "pending";
    }
    if (!cr->ops->is_initialized(P) && cr->restore && !cr->restore_done) {
        /* A Restore makes this cluster: its primary comes from the backup, restored by a
         * worker (control/jobs.c); a later pass takes the result (above). */
        return ctl_restore_primary(d, cr, P, msg, len);
    } else if (!cr->ops->is_initialized(P)) {
        /* initdb or mariadb-install-db on a worker: the loop (and the other clusters'
         * failovers) does not wait for it; a later pass takes the result (above). */
        event(d, c->tenant.v, "Instance", P->name, "Normal", "Initializing",
              "creating a new primary data directory");
        if (!ctl_job_queue(d, CTL_JOB_INIT, cr, P, P, NULL, false)) {
            snprintf(msg, len, "initialise %s: out of memory", P->name);
            return "failed";
        }
        snprintf(msg, len, "initialising %s", P->name);
        return "pending";
    }
    {
        /* The topology names it primary: any fence on it is stale (an aborted switchover). */
        char marker[PATH_MAX + 32];
        ctl_rejoin_marker(P, marker, sizeof(marker));
        unlink(marker);
    }
    if (instance_run(d, cr, cr->primary, NULL, &err) != 0) {
        snprintf(msg, len, "start %s: %s", P->name, err.msg);
        return "failed";
    }
    instance_observe(d, cr, cr->primary);
    if (ctl_restore_recovering(cr, P) && cr->probe[cr->primary].role != ENGINE_ROLE_PRIMARY) {
        /* Replaying archived WAL to the Restore's point in time: not to be promoted. */
        char id[160];
        proc_id(P, id, sizeof(id));
        const char *st = ctl_restore_check_recovery(d, cr, P, ctl_sup_find(&d->sup, id), msg,
                                                    len);
        instance_store(d, cr, cr->primary);
        return st;
    }
    if (cr->probe[cr->primary].reachable && cr->probe[cr->primary].role == ENGINE_ROLE_REPLICA &&
        cr->ops->promote) {
        /* Named primary by the topology but still in recovery: a promotion that was
         * interrupted. Finish it (the old primary was fenced before the epoch moved). */
        event(d, c->tenant.v, "Instance", P->name, "Normal", "Promoting",
              "topology names it primary; completing the promotion");
        if (cr->ops->promote(P, &err) != 0) {
            snprintf(msg, len, "promote %s: %s", P->name, err.msg);
            return "failed";
        }
        instance_observe(d, cr, cr->primary);
    }
    const engine_probe_t *pp = &cr->probe[cr->primary];
    bool internal_ok = false;
    if (pp->reachable && pp->role == ENGINE_ROLE_PRIMARY) {
        engine_instance_t reps[CTL_MAX_INSTANCES];
        int nr = 0;
        for (int i = 0; i < cr->n; i++)
            if (i != cr->primary)
                reps[nr++] = cr->inst[i];
        int rc = cr->ops->ensure_internal(P, reps, nr, &err);
        internal_ok = rc >= 0;
        if (rc < 0) {
            snprintf(msg, len, "prepare %s for replication: %s", P->name, err.msg);
            instance_store(d, cr, cr->primary);
            return "failed";
        }
        cr->primary_ready = true;
    }

    /* Then the replicas. */
    const char *state = "ready";
    msg[0] = '\0';
    for (int i = 0; i < cr->n; i++) {
        if (i == cr->primary)
            continue;
        engine_instance_t *R = &cr->inst[i];
        /* A worker clones, rejoins or rebuilds it (control/jobs.c): leave it alone until
         * the step ended, then take its results. */
        ctl_job_t *job = ctl_job_find(d, c->tenant.v, R->name);
        if (job && !ctl_job_done(job)) {
            if (job->kind == CTL_JOB_CLONE)
                cr->cloning = true;
            snprintf(msg, len, "%s %s from %s", ctl_job_doing_str(job->kind), R->name, job->P.name);
            state = "pending";
            continue;
        }
        if (job) {
            const char *st = job_collect(d, cr, job, R, P, msg, len);
            if (st) {
                if (strcmp(state, "failed") != 0)
                    state = st;
                continue;
            }
        }
        if (!cr->ops->is_initialized(R)) {
            if (!internal_ok) {
                snprintf(msg, len, "replica %s waits for primary %s", R->name, P->name);
                state = "pending";
                continue;
            }
            if (!c->u.cluster.bootstrap_backup.v)
                event(d, c->tenant.v, "Instance", R->name, "Normal", "Cloning",
                      "cloning the primary into a new replica");
            state = replica_job(d, cr, CTL_JOB_CLONE, R, P, NULL, false, msg, len);
            cr->cloning = true;
            continue;
        }
        char marker[PATH_MAX + 32];
        ctl_rejoin_marker(R, marker, sizeof(marker));
        if (access(marker, F_OK) == 0) {
            /* A fenced former primary: it may hold writes the new primary never saw.
             * Rewind it onto the new timeline, or rebuild it, before it may start. */
            if (!internal_ok) {
                snprintf(msg, len, "%s waits for primary %s to rejoin", R->name, P->name);
                state = "pending";
                continue;
            }
            if (replica_stop(d, R, &err) != 0) {
                snprintf(msg, len, "rejoin %s: %s", R->name, err.msg);
                state = "failed";
                continue;
            }
            state = replica_job(d, cr, CTL_JOB_REJOIN, R, P, NULL, false, msg, len);
            continue;
        }
        int run_rc = instance_run(d, cr, i, P, &err);
        /* A running replica whose replication stopped for good fails that too (MariaDB
         * reports the IO error): the probe tells. */
        instance_observe(d, cr, i);
        bool broken = cr->probe[i].reachable && cr->probe[i].role == ENGINE_ROLE_REPLICA &&
                      cr->probe[i].broken[0] && internal_ok;
        if (run_rc != 0 && !broken) {
            snprintf(msg, len, "start %s: %s", R->name, err.msg);
            state = "failed";
            continue;
        }
        if (broken && rebuilt_recently(R)) {
            snprintf(msg, len, "%s: %s; it was rebuilt less than %d s ago, not again yet", R->name,
                     cr->probe[i].broken, CTL_REBUILD_BACKOFF_S);
            state = "failed";
            continue;
        }
        if (broken) {
            /* Its replication will not resume by itself (MariaDB: error 1236): clone
             * it again from the primary. */
            char why[sizeof(cr->probe[i].broken)];
            snprintf(why, sizeof(why), "%s", cr->probe[i].broken);
            rebuilt_mark(R);
            char m[700];
            snprintf(m, sizeof(m), "%s; rebuilding from the primary %s", why, P->name);
            event(d, R->tenant, "Instance", R->name, "Warning", "Rebuilding", m);
            if (replica_stop(d, R, &err) != 0) {
                snprintf(msg, len, "rebuild %s from %s: %s", R->name, P->name, err.msg);
                state = "failed";
                continue;
            }
            memset(&cr->probe[i], 0, sizeof(cr->probe[i]));
            state = replica_job(d, cr, CTL_JOB_REBUILD, R, P, why, false, msg, len);
            continue;
        }
        if (run_rc == 0 && cr->ops->rebuild_not_streaming) {
            const char *st = stream_watch(d, cr, i, P, internal_ok, msg, len);
            if (st) {
                if (strcmp(state, "failed") != 0)
                    state = st;
                continue;
            }
        }
        if (cr->probe[i].reachable && cr->probe[i].role == ENGINE_ROLE_PRIMARY) {
            /* A writable server the topology does not name primary (promoted by hand,
             * or a stale primary): fence it now; it rejoins as a replica next pass. */
            char m[256];
            snprintf(m, sizeof(m), "%s accepts writes but topology epoch %lld names %s "
                     "primary; fencing it", R->name, (long long)cr->epoch, P->name);
            if (ctl_fence(d, R, 0, &err) != 0) {
                snprintf(msg, len, "fence %s: %s", R->name, err.msg);
                return "failed";
            }
            event(d, c->tenant.v, "Cluster", c->name.v, "Warning", "RoguePrimary", m);
            memset(&cr->probe[i], 0, sizeof(cr->probe[i]));
            snprintf(msg, len, "%s was fenced (it ran as a primary); rejoining", R->name);
            state = "pending";
        }
    }
    /* Re-probe the primary so its view of the replicas is current. */
    if (cr->n > 1 && pp->reachable)
        instance_observe(d, cr, cr->primary);
    for (int i = 0; i < cr->n; i++)
        instance_store(d, cr, i);
    if (strcmp(state, "ready") != 0)
        return state;

    /* Ready only when every server answers in the role the topology gives it. */
    for (int i = 0; i < cr->n; i++) {
        const engine_probe_t *pr = &cr->probe[i];
        engine_role_t want = i == cr->primary ? ENGINE_ROLE_PRIMARY : ENGINE_ROLE_REPLICA;
        if (!pr->reachable) {
            snprintf(msg, len, "%s is starting", cr->inst[i].name);
            return "pending";
        }
        if (pr->role != want) {
            snprintf(msg, len, "%s runs as %s but topology epoch %lld makes it %s",
                     cr->inst[i].name, engine_role_str(pr->role), (long long)cr->epoch,
                     engine_role_str(want));
            return "failed";
        }
        if (want == ENGINE_ROLE_REPLICA && !pr->streaming) {
            snprintf(msg, len, "replica %s is not streaming from %s yet", cr->inst[i].name,
                     P->name);
            return "pending";
        }
    }
    snprintf(msg, len, "%d/%d instances running; primary %s (epoch %lld)", cr->n, cr->n, P->name,
             (long long)cr->epoch);
    return "ready";
}

/* ---- databases, users, grants ------------------------------------------------------- */

cluster_rt_t *ctl_cluster_find(cluster_rt_t *crs, int n, const char *tenant, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(crs[i].res->tenant.v, tenant) == 0 && strcmp(crs[i].res->name.v, name) == 0)
            return &crs[i];
    return NULL;
}

void ctl_user_secret(const spec_resource_t *r, char name[128], char key[128])
{
    const spec_user_t *u = &r->u.user;
    if (u->password_secret_key_ref.set) {
        snprintf(name, 128, "%s", u->password_secret_key_ref.name.v);
        snprintf(key, 128, "%s", u->password_secret_key_ref.key.v);
    } else {
        snprintf(name, 128, "%s-password", r->name.v);
        snprintf(key, 128, "password");
    }
}

/* Gets (or generates) the password of a User. Returns owned *pw. */
static int user_password(ctl_daemon_t *d, const spec_resource_t *r, const spec_set_t *set,
                         char **pw, dbp_err_t *err)
{
    const spec_user_t *u = &r->u.user;
    char sname[128], skey[128];
    ctl_user_secret(r, sname, skey);
    int rc = secrets_get(d->secrets, r->tenant.v, sname, skey, pw, err);
    if (rc != DBP_ENOENT)
        return rc;
    if (spec_set_find(set, SPEC_KIND_SECRET, r->tenant.v, sname))
        return dbp_err_set(err, DBP_ENOENT, "secret %s has no key %s yet", sname, skey);
    bool created = false;
    rc = secrets_ensure(d->secrets, r->tenant.v, sname, skey, 32, pw, &created, err);
    if (rc == 0 && created) {
        char m[300];
        snprintf(m, sizeof(m), "generated %s/%s for user %s (`dbplane secret get %s %s`)", sname,
                 skey, u->username.v, sname, skey);
        event(d, r->tenant.v, "Secret", sname, "Normal", "SecretGenerated", m);
    }
    return rc;
}

static void reconcile_member(ctl_daemon_t *d, desired_t *des, size_t idx, cluster_rt_t *crs,
                             int ncrs)
{
    spec_resource_t *r = des->set.items[idx];
    int64_t gen = des->generation[idx];
    bool is_user = r->kind == SPEC_KIND_USER;
    if (fresh(d, r, gen) && !(is_user && d->secrets_changed))
        return;
    const char *cluster = r->kind == SPEC_KIND_USER       ? r->u.user.cluster.v
                          : r->kind == SPEC_KIND_DATABASE ? r->u.database.cluster.v
                                                          : r->u.grant.cluster.v;
    cluster_rt_t *cr = ctl_cluster_find(crs, ncrs, r->tenant.v, cluster);
    char msg[512];
    if (!cr || !cr->primary_ready || cr->cloning) {
        snprintf(msg, sizeof(msg), "waiting for cluster %s to be ready%s", cluster,
                 cr && cr->cloning ? " (a new replica is being cloned)" : "");
        set_status(d, r, gen, "pending", msg);
        return;
    }
    const engine_instance_t *P = &cr->inst[cr->primary];
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    int rc;
    const char *what;
    if (r->kind == SPEC_KIND_USER) {
        char *pw = NULL;
        rc = user_password(d, r, &des->set, &pw, &err);
        if (rc == 0) {
            rc = cr->ops->ensure_user(P, &r->u.user, pw, &err);
            secrets_free_value(pw);
        }
        what = "login";
    } else if (r->kind == SPEC_KIND_DATABASE) {
        rc = cr->ops->ensure_database
                 ? cr->ops->ensure_database(P, &r->u.database, &err)
                 : dbp_err_set(&err, DBP_EUNSUPPORTED, "%s has no databases", cr->ops->name);
        what = "database";
    } else {
        rc = cr->ops->ensure_grant
                 ? cr->ops->ensure_grant(P, &r->u.grant, &err)
                 : dbp_err_set(&err, DBP_EUNSUPPORTED, "%s has no grants; use User ACLs",
                               cr->ops->name);
        what = "privileges";
    }
    if (rc < 0) {
        set_status(d, r, gen, "failed", err.msg);
        return;
    }
    if (rc > 0) {
        char m[300];
        snprintf(m, sizeof(m), "%s brought to the declared state on %s", what, P->name);
        event(d, r->tenant.v, spec_kind_str(r->kind), r->name.v, "Normal", "Applied", m);
    }
    snprintf(msg, sizeof(msg), "%s matches the spec on %s", what, P->name);
    set_status(d, r, gen, "ready", msg);
}

/* ---- SqlJobs ------------------------------------------------------------------------ */

/* Index of the SqlJob `name` in tenant, or -1. */
static long find_job(const desired_t *des, const char *tenant, const char *name)
{
    for (size_t i = 0; i < des->set.n; i++) {
        const spec_resource_t *r = des->set.items[i];
        if (r->kind == SPEC_KIND_SQL_JOB && strcmp(r->tenant.v, tenant) == 0 &&
            strcmp(r->name.v, name) == 0)
            return (long)i;
    }
    return -1;
}

static bool job_done(const desired_t *des, size_t i)
{
    return des->state[i] && strcmp(des->state[i], "ready") == 0 &&
           des->observed[i] == des->generation[i];
}

/* Runs a SqlJob once per generation: a job that completed is never run again until its
 * spec changes; a failed one is retried every resync period, after its dependencies. */
static void reconcile_sql_job(ctl_daemon_t *d, desired_t *des, size_t idx, cluster_rt_t *crs,
                              int ncrs)
{
    spec_resource_t *r = des->set.items[idx];
    const spec_sql_job_t *j = &r->u.sql_job;
    int64_t gen = des->generation[idx];
    if (job_done(des, idx))
        return;
    ctl_memo_t *m = memo_get(d, r);
    if (m && m->last_error[0] && m->generation == gen &&
        dbp_now_ms() - m->checked_ms < d->resync_ms)
        return;
    char msg[512];
    for (size_t k = 0; k < j->depends_on.n; k++) {
        long dep = find_job(des, r->tenant.v, j->depends_on.v[k]);
        if (dep < 0 || !job_done(des, (size_t)dep)) {
            snprintf(msg, sizeof(msg), "waiting for SqlJob %s", j->depends_on.v[k]);
            set_status(d, r, gen, "pending", msg);
            return;
        }
    }
    cluster_rt_t *cr = ctl_cluster_find(crs, ncrs, r->tenant.v, j->cluster.v);
    if (!cr || !cr->primary_ready || cr->cloning || !cr->ops->run_sql) {
        bool up = cr && cr->primary_ready && !cr->cloning;
        snprintf(msg, sizeof(msg), up ? "engine %s cannot run SQL"
                                      : "waiting for cluster %s to be ready",
                 up ? cr->ops->name : j->cluster.v);
        set_status(d, r, gen, "pending", msg);
        return;
    }
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    char *sql = NULL, *pw = NULL;
    int rc = 0;
    if (j->sql.set) {
        sql = strdup(j->sql.v);
        if (!sql)
            rc = dbp_err_set(&err, DBP_ENOMEM, "out of memory");
    } else {
        rc = dbp_read_file(j->sql_file.v, &sql, NULL, &err);
    }
    const char *user = j->username.set ? j->username.v : NULL;
    if (rc == 0 && user) {
        /* The job runs as a declared User: its password comes from the secret store. */
        const spec_resource_t *ures = NULL;
        for (size_t i = 0; i < des->set.n && !ures; i++) {
            const spec_resource_t *u = des->set.items[i];
            if (u->kind == SPEC_KIND_USER && strcmp(u->tenant.v, r->tenant.v) == 0 &&
                strcmp(u->u.user.cluster.v, j->cluster.v) == 0 &&
                strcmp(u->u.user.username.v, user) == 0)
                ures = u;
        }
        if (!ures)
            rc = dbp_err_set(&err, DBP_ENOENT, "user %s is not declared on cluster %s", user,
                             j->cluster.v);
        else
            rc = user_password(d, ures, &des->set, &pw, &err);
    }
    int64_t t0 = dbp_now_ms();
    if (rc == 0)
        rc = cr->ops->run_sql(&cr->inst[cr->primary], j->database.v, user, pw, sql, &err);
    int64_t ms = dbp_now_ms() - t0;
    secrets_free_value(pw);
    free(sql);
    if (rc) {
        snprintf(msg, sizeof(msg), "failed after %lld ms: %s", (long long)ms, err.msg);
        set_status(d, r, gen, "failed", msg);
        if (m) {
            m->generation = gen;
            m->checked_ms = dbp_now_ms();
        }
        return;
    }
    snprintf(msg, sizeof(msg), "completed in %lld ms on %s", (long long)ms,
             cr->inst[cr->primary].name);
    event(d, r->tenant.v, "SqlJob", r->name.v, "Normal", "Completed", msg);
    set_status(d, r, gen, "ready", msg);
    /* Later jobs of this pass may depend on this one. */
    free(des->state[idx]);
    des->state[idx] = strdup("ready");
    des->observed[idx] = gen;
}

/* ---- the pass ----------------------------------------------------------------------- */

void ctl_pass_results_free(desired_t *des, cluster_rt_t *crs, int ncl)
{
    for (int i = 0; i < ncl; i++) {
        secrets_free_value(crs[i].admin_password);
        secrets_free_value(crs[i].repl_password);
    }
    free(crs);
    if (des) {
        desired_free(des);
        free(des);
    }
}

/* Drops this thread's reference to what the previous pass kept for the HA monitor. */
static void pass_results_free(ctl_daemon_t *d)
{
    ctl_ha_view_drop(d);
}

void ctl_reconcile_pass(ctl_daemon_t *d)
{
    pass_results_free(d);
    desired_t des;
    memset(&des, 0, sizeof(des));
    spec_set_init(&des.set);
    dbp_err_t err;
    if (store_list_resources(d->store, NULL, NULL, load_cb, &des, &err) != 0) {
        dbp_error("reconcile_load_failed", "error=%s", dbp_log_q(err.msg));
        desired_free(&des);
        return;
    }
    d->secrets_changed = false;

    /* Secrets first: Users read their passwords from them. */
    for (size_t i = 0; i < des.set.n; i++) {
        spec_resource_t *r = des.set.items[i];
        if (r->kind != SPEC_KIND_SECRET || fresh(d, r, des.generation[i]))
            continue;
        int changed = 0;
        if (secrets_apply(d->secrets, r, &changed, &err) != 0) {
            set_status(d, r, des.generation[i], "failed", err.msg);
            continue;
        }
        if (changed > 0) {
            d->secrets_changed = true;
            char m[64];
            snprintf(m, sizeof(m), "%d value(s) written", changed);
            event(d, r->tenant.v, "Secret", r->name.v, "Normal", "Applied", m);
        }
        set_status(d, r, des.generation[i], "ready", "values stored encrypted");
    }

    /* Restores declare the clusters they make. */
    ctl_restore_prepare(d, &des);

    /* Clusters. */
    int ncl = 0;
    for (size_t i = 0; i < des.set.n; i++)
        if (des.set.items[i]->kind == SPEC_KIND_CLUSTER)
            ncl++;
    cluster_rt_t *crs = calloc((size_t)(ncl ? ncl : 1), sizeof(*crs));
    if (!crs) {
        desired_free(&des);
        return;
    }
    int k = 0;
    for (size_t i = 0; i < des.set.n; i++) {
        spec_resource_t *r = des.set.items[i];
        if (r->kind != SPEC_KIND_CLUSTER)
            continue;
        cluster_rt_t *cr = &crs[k++];
        cr->res = r;
        cr->generation = des.generation[i];
        const spec_resource_t *pitr = NULL;
        cr->archives = ctl_cluster_archives(&des.set, r->tenant.v, r->name.v, &pitr);
        cr->archive_queue_max = pitr ? pitr->u.backup.archive_queue_max.v : 0;
        ctl_restore_attach(cr, &des);
        char msg[512];
        const char *state = cluster_reconcile(d, cr, msg, sizeof(msg));
        state = ctl_rolling_step(d, cr, state, msg, sizeof(msg));
        set_status(d, r, des.generation[i], state, msg);
    }

    ctl_restore_report(d, crs, ncl);

    /* Users before the Databases they own, then Grants. */
    const spec_kind_t order[] = {SPEC_KIND_USER, SPEC_KIND_DATABASE, SPEC_KIND_GRANT};
    for (int o = 0; o < 3; o++)
        for (size_t i = 0; i < des.set.n; i++)
            if (des.set.items[i]->kind == order[o])
                reconcile_member(d, &des, i, crs, ncl);

    /* SqlJobs after the objects they use; several passes resolve dependency chains. */
    for (size_t i = 0; i < des.set.n; i++)
        if (des.set.items[i]->kind == SPEC_KIND_SQL_JOB)
            reconcile_sql_job(d, &des, i, crs, ncl);

    /* Declarations with nothing to run, and kinds whose controllers are not built yet. */
    for (size_t i = 0; i < des.set.n; i++) {
        spec_resource_t *r = des.set.items[i];
        const char *state = NULL, *msg = NULL;
        switch (r->kind) {
        case SPEC_KIND_TENANT:
        case SPEC_KIND_BACKUP_STORE:
            state = "ready";
            msg = "declared";
            break;
        case SPEC_KIND_BACKUP:
            break; /* the backup scheduler (control/scheduler.c) reports these */
        case SPEC_KIND_RESTORE:
            break; /* control/restorectl.c reports these */
        case SPEC_KIND_CREDENTIAL_ROLE:
            state = "accepted";
            msg = "stored; this build has no controller for this kind yet";
            break;
        default:
            break;
        }
        if (state && (des.observed[i] != des.generation[i] || !des.state[i] ||
                      strcmp(des.state[i], state) != 0))
            set_status(d, r, des.generation[i], state, msg);
    }
    /* Keep this pass's view (instances, probes, the specs they point into) for the HA
     * monitor and the proxy until the next pass. */
    d->des = malloc(sizeof(*d->des));
    if (d->des) {
        *d->des = des;
        d->crs = crs;
        d->ncl = ncl;
        ctl_ha_view_publish(d);
        /* The slow steps this pass queued start now: they hold the view just published. */
        ctl_jobs_start(d);
        ctl_proxy_sync(d);
        ctl_rolling_after_pass(d);
    } else {
        ctl_jobs_start(d); /* no view: drops what this pass queued */
        ctl_pass_results_free(NULL, crs, ncl);
        desired_free(&des);
    }
}

typedef struct unready_ctx {
    ctl_daemon_t *d;
    const char *cluster;
    const char *why;
} unready_ctx_t;

static int unready_cb(const store_resource_t *r, void *ud)
{
    unready_ctx_t *u = ud;
    if (strcmp(r->name, u->cluster) != 0)
        return 0;
    dbp_err_t err;
    if (store_set_status(u->d->store, r->tenant, r->kind, r->name, r->observed_generation,
                         "pending", u->why, &err) != 0)
        dbp_warn("status_write_failed", "error=%s", dbp_log_q(err.msg));
    return 0;
}

void ctl_cluster_unready(ctl_daemon_t *d, const char *tenant, const char *cluster,
                         const char *why)
{
    unready_ctx_t u = {.d = d, .cluster = cluster, .why = why};
    dbp_err_t err;
    if (store_list_resources(d->store, tenant, "Cluster", unready_cb, &u, &err) != 0)
        dbp_warn("status_write_failed", "error=%s", dbp_log_q(err.msg));
}

void ctl_on_process_event(void *ud, const ctl_proc_t *p, const char *reason, const char *msg)
{
    ctl_daemon_t *d = ud;
    /* id is "tenant/instance" */
    char tenant[64];
    const char *slash = strchr(p->id, '/');
    size_t tl = slash ? (size_t)(slash - p->id) : 0;
    if (tl >= sizeof(tenant))
        tl = sizeof(tenant) - 1;
    memcpy(tenant, p->id, tl);
    tenant[tl] = '\0';
    const char *type = strcmp(reason, "InstanceExited") == 0 ||
                               strcmp(reason, "InstanceRestartFailed") == 0
                           ? "Warning"
                           : "Normal";
    dbp_err_t err;
    const char *inst = slash ? slash + 1 : p->id;
    if (store_add_event(d->store, tenant, "Instance", inst, type, reason, msg, &err) != 0)
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(err.msg));
    if (strcmp(reason, "InstanceExited") == 0) {
        ctl_ha_on_exit(d, p->id);
        /* The cluster is not ready until a pass has seen the server back: `dbplane wait`
         * must not return on the status from before the crash. Instances are named
         * "<cluster>-<ordinal>". */
        char cluster[96];
        snprintf(cluster, sizeof(cluster), "%s", inst);
        char *dash = strrchr(cluster, '-');
        if (dash)
            *dash = '\0';
        ctl_cluster_unready(d, tenant, cluster, msg);
    }
}

static int shutdown_cb(const store_instance_t *in, void *ud)
{
    ctl_daemon_t *d = ud;
    store_instance_t rec = *in;
    snprintf(rec.state, sizeof(rec.state), "stopped");
    rec.lag_bytes = rec.lag_ms = -1;
    dbp_err_t err;
    if (store_put_instance(d->store, &rec, &err) != 0)
        dbp_warn("instance_write_failed", "instance=%s error=%s", rec.name, dbp_log_q(err.msg));
    return 0;
}

/* Collects supervisor ids of instances whose role is (or is not) primary. */
typedef struct role_ids {
    const char **ids;
    int n;
    bool primaries;
    ctl_daemon_t *d;
} role_ids_t;

static int role_cb(const store_instance_t *in, void *ud)
{
    role_ids_t *ri = ud;
    int64_t epoch = 0;
    char primary[96] = "";
    dbp_err_t err;
    if (store_get_topology(ri->d->store, in->tenant, in->cluster, &epoch, primary, &err) != 0)
        return 0;
    bool is_primary = strcmp(primary, in->name) == 0;
    if (is_primary != ri->primaries)
        return 0;
    char id[160];
    snprintf(id, sizeof(id), "%s/%s", in->tenant, in->name);
    const ctl_proc_t *p = ctl_sup_find(&ri->d->sup, id);
    if (p)
        ri->ids[ri->n++] = p->id;
    return 0;
}

void ctl_shutdown(ctl_daemon_t *d)
{
    if (!d->store)
        return;
    const char **ids = calloc((size_t)d->sup.n + 1, sizeof(char *));
    if (!ids) {
        ctl_sup_stop_all(&d->sup, 60000);
        return;
    }
    for (int pass = 0; pass < 2; pass++) {
        role_ids_t ri = {.ids = ids, .n = 0, .primaries = pass == 0, .d = d};
        dbp_err_t err;
        memset(ids, 0, ((size_t)d->sup.n + 1) * sizeof(char *));
        if (store_list_instances(d->store, NULL, NULL, role_cb, &ri, &err) == 0 && ri.n > 0) {
            ids[ri.n] = NULL;
            ctl_sup_stop_ids(&d->sup, ids, 60000);
        }
    }
    free(ids);
    ctl_sup_stop_all(&d->sup, 60000); /* anything not in the store */
    dbp_err_t err;
    if (store_list_instances(d->store, NULL, NULL, shutdown_cb, d, &err) != 0)
        dbp_warn("instance_write_failed", "error=%s", dbp_log_q(err.msg));
}

void ctl_daemon_free(ctl_daemon_t *d)
{
    ctl_jobs_stop(d);
    pass_results_free(d);
    ctl_sup_free(&d->sup);
    secrets_close(d->secrets);
    d->secrets = NULL;
    store_close(d->store);
    d->store = NULL;
    free(d->memo);
    d->memo = NULL;
    free(d->ha);
    d->ha = NULL;
    free(d->roll);
    d->roll = NULL;
    d->nroll = d->caproll = 0;
    free(d->streams);
    d->streams = NULL;
    d->nstreams = d->capstreams = 0;
    d->nha = d->capha = 0;
    d->nmemo = d->capmemo = 0;
}
