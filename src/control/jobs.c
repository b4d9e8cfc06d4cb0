/*
 * jobs.c: the reconcile pass's slow steps on worker threads (see reconcile.h, ctl_job_t,
 * and docs/design.md "HA monitor thread: who owns what").
 *
 * A replica clone (pg_basebackup, a streamed mariadb-backup), a bootstrap from a Backup,
 * a rejoin (pg_rewind, the MariaDB GTID check), a rebuild, a primary's first
 * initialisation (initdb, mariadb-install-db) and a Restore's primary (the extraction of
 * a backup, the WAL or binary logs of a point in time) take seconds to minutes. On
 * the control loop's thread they held every failover of every cluster for that long. The
 * pass now queues them as jobs: the worker reads its own copies and writes only the job's
 * result fields; the control loop stays the one writer of the store and the supervisor,
 * and takes the results in a later pass (woken by a 'j' on its wake pipe).
 */
#include "control/reconcile.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "common/log.h"

/* The names of each kind, indexed by ctl_job_kind_t. */
static const struct {
    const char *name;  /* for logs */
    const char *doing; /* for status messages */
} job_names[] = {
    [CTL_JOB_CLONE] = {"clone", "cloning"},        [CTL_JOB_REJOIN] = {"rejoin", "rejoining"},
    [CTL_JOB_REBUILD] = {"rebuild", "rebuilding"}, [CTL_JOB_INIT] = {"init", "initialising"},
    [CTL_JOB_RESTORE] = {"restore", "restoring"},
};

const char *ctl_job_kind_str(ctl_job_kind_t k)
{
    return (size_t)k < sizeof(job_names) / sizeof(job_names[0]) ? job_names[k].name : "?";
}

const char *ctl_job_doing_str(ctl_job_kind_t k)
{
    return (size_t)k < sizeof(job_names) / sizeof(job_names[0]) ? job_names[k].doing : "?";
}

bool ctl_job_makes_primary(ctl_job_kind_t k)
{
    return k == CTL_JOB_INIT || k == CTL_JOB_RESTORE;
}

/* A test-only delay: with the environment variable `ms_var` set to a positive number of
 * milliseconds (and `cluster_var`, when set, naming R's cluster), runs `/bin/sleep` for
 * that long as a real child of the step, so that a shutdown kills it like the step's
 * own tools. 0, or DBP_EIO when the sleep was killed. */
static int failpoint_delay(const char *name, const char *ms_var, const char *cluster_var,
                           const engine_instance_t *R, dbp_err_t *err)
{
    const char *ms = getenv(ms_var);
    const char *only = getenv(cluster_var);
    if (!ms || !*ms || (only && *only && strcmp(only, R->cluster) != 0))
        return 0;
    long v = atol(ms);
    if (v <= 0)
        return 0;
    char secs[32];
    snprintf(secs, sizeof(secs), "%ld.%03ld", v / 1000, v % 1000);
    dbp_warn("failpoint", "name=%s cluster=%s instance=%s ms=%ld", name, R->cluster, R->name, v);
    char *argv[] = {"/bin/sleep", secs, NULL};
    int rc = dbp_proc_run(argv, NULL, R->runas, R->tool_log_path, 0, err);
    if (rc)
        dbp_err_prefix(err, "failpoint %s: ", name);
    return rc;
}

int ctl_failpoint_clone_delay(const engine_instance_t *R, dbp_err_t *err)
{
    return failpoint_delay("clone_delay", "DBPLANE_FAILPOINT_CLONE_DELAY_MS",
                           "DBPLANE_FAILPOINT_CLONE_CLUSTER", R, err);
}

int ctl_failpoint_init_delay(const engine_instance_t *P, dbp_err_t *err)
{
    return failpoint_delay("init_delay", "DBPLANE_FAILPOINT_INIT_DELAY_MS",
                           "DBPLANE_FAILPOINT_INIT_CLUSTER", P, err);
}

bool ctl_failpoint_rejoin_skip(const engine_instance_t *R)
{
    const char *v = getenv("DBPLANE_FAILPOINT_REJOIN_SKIP_REWIND");
    if (!v || strcmp(v, "1") != 0)
        return false;
    dbp_warn("failpoint", "name=rejoin_skip_rewind cluster=%s instance=%s", R->cluster, R->name);
    return true;
}

int64_t ctl_stream_bound_ms(void)
{
    const char *ms = getenv("DBPLANE_FAILPOINT_STREAM_BOUND_MS");
    long long v = ms && *ms ? atoll(ms) : 0;
    return v > 0 ? (int64_t)v : HA_STREAM_BOUND_MS;
}

/* CTL_JOB_CLONE of a cluster with spec.bootstrapFrom: makes R's data directory from the
 * Backup's newest verified physical run plus the archived WAL (PostgreSQL) or from the
 * run's GTID position on, caught up from primary P's binary logs (MariaDB), through
 * backup_bootstrap_replica, which opens its own backup context (store connection) on this
 * thread. A failure leaves nothing in the data directory and the worker clones P instead.
 * The control loop records Bootstrapped or BootstrapFallback from boot_msg. */
static void job_bootstrap(ctl_job_t *j)
{
    backup_ctx_t *ctx = NULL;
    backup_bootstrap_t bi;
    memset(&bi, 0, sizeof(bi));
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    int64_t t0 = dbp_now_ms();
    j->boot_tried = true;
    int rc = backup_ctx_open(&ctx, j->data_dir, &err);
    if (!rc)
        rc = backup_bootstrap_replica(ctx, j->tenant, j->bootstrap, &j->R, &j->P, &bi, &err);
    backup_ctx_close(ctx);
    j->boot_rc = rc;
    if (rc)
        snprintf(j->boot_msg, sizeof(j->boot_msg),
                 "cannot start from Backup %s (%s): cloning primary %s instead", j->bootstrap,
                 err.msg, j->P.name);
    else
        snprintf(j->boot_msg, sizeof(j->boot_msg),
                 "data directory restored from verified run %s of Backup %s in %.1f s, %s",
                 bi.run_id, j->bootstrap, (double)(dbp_now_ms() - t0) / 1000.0, bi.catch_up);
}

/* CTL_JOB_RESTORE: makes primary R's data directory from the Restore's backup
 * (backup_restore_instance, which checks every part's checksum and, for a point in time,
 * fetches the archived WAL or replays the binary logs), through a backup context (store
 * connection) of this thread's own. A failure, a cancelled one included, leaves no data
 * directory (backup_restore_instance removes it). The control loop records Restored or
 * RestoreFailed and the markers (ctl_restore_job). */
static int job_restore(ctl_job_t *j)
{
    backup_ctx_t *ctx = NULL;
    int rc = ctl_failpoint_init_delay(&j->R, &j->err);
    if (!rc)
        rc = backup_ctx_open(&ctx, j->data_dir, &j->err);
    if (!rc)
        rc = backup_restore_instance(ctx, j->tenant, &j->restore->u.restore, &j->R, &j->err);
    backup_ctx_close(ctx);
    return rc;
}

static int job_clone(ctl_job_t *j)
{
    j->cloned = true;
    int rc = ctl_failpoint_clone_delay(&j->R, &j->err);
    return rc ? rc : j->ops->init_replica(&j->R, &j->P, &j->err);
}

static void *job_main(void *arg)
{
    ctl_job_t *j = arg;
    /* Signals are the control loop's (its handler wakes the loop). */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    dbp_cancel_bind(&j->cancel);
    int64_t t0 = dbp_now_ms();
    switch (j->kind) {
    case CTL_JOB_CLONE:
        if (j->bootstrap[0])
            job_bootstrap(j);
        j->rc = j->boot_tried && j->boot_rc == 0 ? 0 : job_clone(j);
        break;
    case CTL_JOB_REJOIN: {
        dbp_err_t e;
        memset(&e, 0, sizeof(e));
        j->rejoin_tried = true;
        if (ctl_failpoint_rejoin_skip(&j->R))
            j->rejoin_rc = 0; /* test-only: a "rewound" server that never was */
        else
            j->rejoin_rc = j->ops->rejoin ? j->ops->rejoin(&j->R, &j->P, &e)
                                          : dbp_err_set(&e, DBP_EUNSUPPORTED, "no rejoin");
        snprintf(j->rejoin_err, sizeof(j->rejoin_err), "%s", e.msg);
        j->rc = j->rejoin_rc == 0 || dbp_cancelled() ? j->rejoin_rc : job_clone(j);
        if (j->rc && !j->err.msg[0])
            j->err = e;
        break;
    }
    case CTL_JOB_REBUILD:
        if (j->bootstrap[0]) {
            /* The rebuild replaces R's data directory whatever happens; the bootstrap
             * restores into an empty one. */
            dbp_err_t e;
            if (dbp_rm_rf(j->R.data_dir, &e) == 0)
                job_bootstrap(j);
            else
                dbp_warn("cleanup_failed", "path=%s error=%s", dbp_log_q(j->R.data_dir),
                         dbp_log_q(e.msg));
        }
        j->rc = j->boot_tried && j->boot_rc == 0 ? 0 : job_clone(j);
        break;
    case CTL_JOB_INIT:
        /* init_primary removes what a killed attempt left and writes the engine's
         * initialised marker last: a cancelled init is done again by the next start. */
        j->rc = ctl_failpoint_init_delay(&j->R, &j->err);
        if (!j->rc)
            j->rc = j->ops->init_primary(&j->R, &j->err);
        break;
    case CTL_JOB_RESTORE:
        j->rc = job_restore(j);
        break;
    }
    j->ms = dbp_now_ms() - t0;
    dbp_cancel_bind(NULL);
    dbp_info("job_finished", "tenant=%s instance=%s kind=%s rc=%d ms=%lld", j->tenant, j->R.name,
             ctl_job_kind_str(j->kind), j->rc, (long long)j->ms);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    if (j->wake_fd >= 0) {
        ssize_t w = write(j->wake_fd, "j", 1);
        (void)w;
    }
    return NULL;
}

ctl_job_t *ctl_job_queue(ctl_daemon_t *d, ctl_job_kind_t kind, const cluster_rt_t *cr,
                         const engine_instance_t *R, const engine_instance_t *P, const char *why,
                         bool from_backup)
{
    if (d->njobs == d->capjobs) {
        int ncap = d->capjobs ? d->capjobs * 2 : 8;
        ctl_job_t **nj = realloc(d->jobs, (size_t)ncap * sizeof(*nj));
        if (!nj)
            return NULL;
        d->jobs = nj;
        d->capjobs = ncap;
    }
    ctl_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->kind = kind;
    snprintf(j->tenant, sizeof(j->tenant), "%s", R->tenant);
    j->epoch = cr->epoch;
    j->ops = cr->ops;
    j->R = *R;
    j->P = *P;
    const char *bb = cr->res->u.cluster.bootstrap_backup.v;
    if ((kind == CTL_JOB_CLONE || (kind == CTL_JOB_REBUILD && from_backup)) && bb)
        snprintf(j->bootstrap, sizeof(j->bootstrap), "%s", bb);
    if (kind == CTL_JOB_RESTORE) {
        j->restore = cr->restore;
        j->restore_gen = cr->restore_gen;
    }
    snprintf(j->data_dir, sizeof(j->data_dir), "%s", d->data_dir);
    snprintf(j->why, sizeof(j->why), "%s", why ? why : "");
    j->wake_fd = d->wake[1];
    dbp_cancel_init(&j->cancel);
    d->jobs[d->njobs++] = j;
    return j;
}

ctl_job_t *ctl_job_find(ctl_daemon_t *d, const char *tenant, const char *instance)
{
    for (int i = 0; i < d->njobs; i++)
        if (strcmp(d->jobs[i]->tenant, tenant) == 0 && strcmp(d->jobs[i]->R.name, instance) == 0)
            return d->jobs[i];
    return NULL;
}

bool ctl_job_busy(ctl_daemon_t *d, const char *tenant, const char *instance)
{
    return ctl_job_find(d, tenant, instance) != NULL;
}

bool ctl_job_done(ctl_job_t *j)
{
    return __atomic_load_n(&j->done, __ATOMIC_ACQUIRE) != 0;
}

static void job_remove(ctl_daemon_t *d, ctl_job_t *j)
{
    for (int i = 0; i < d->njobs; i++) {
        if (d->jobs[i] == j) {
            memmove(&d->jobs[i], &d->jobs[i + 1], (size_t)(d->njobs - i - 1) * sizeof(*d->jobs));
            d->njobs--;
            break;
        }
    }
    if (j->view)
        ctl_ha_view_unref(d, j->view);
    dbp_cancel_destroy(&j->cancel);
    free(j);
}

void ctl_jobs_start(ctl_daemon_t *d)
{
    int running = 0;
    for (int i = 0; i < d->njobs; i++)
        if (d->jobs[i]->started && !ctl_job_done(d->jobs[i]))
            running++;
    for (int i = 0; i < d->njobs;) {
        ctl_job_t *j = d->jobs[i];
        if (j->started) {
            i++;
            continue;
        }
        if (!j->view)
            j->view = ctl_ha_view_ref(d);
        if (!j->view) {
            /* The pass kept no view: R and P point into results that are about to go. */
            dbp_warn("job_dropped", "tenant=%s instance=%s reason=no_view", j->tenant, j->R.name);
            job_remove(d, j);
            continue;
        }
        i++;
        if (running >= CTL_JOBS_RUNNING_MAX)
            continue; /* stays queued, holding the view its copies point into */
        if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
            dbp_warn("job_start_failed", "tenant=%s instance=%s", j->tenant, j->R.name);
            continue; /* tried again after the next pass */
        }
        j->started = true;
        running++;
        dbp_info("job_started", "tenant=%s instance=%s kind=%s primary=%s epoch=%lld", j->tenant,
                 j->R.name, ctl_job_kind_str(j->kind), j->P.name, (long long)j->epoch);
    }
}

void ctl_job_free(ctl_daemon_t *d, ctl_job_t *j)
{
    if (j->started)
        pthread_join(j->thread, NULL);
    job_remove(d, j);
}

void ctl_jobs_stop(ctl_daemon_t *d)
{
    for (int i = 0; i < d->njobs; i++) {
        if (d->jobs[i]->started && !ctl_job_done(d->jobs[i])) {
            dbp_info("job_cancelled", "tenant=%s instance=%s kind=%s", d->jobs[i]->tenant,
                     d->jobs[i]->R.name, ctl_job_kind_str(d->jobs[i]->kind));
            dbp_cancel_trigger(&d->jobs[i]->cancel);
        }
    }
    while (d->njobs > 0)
        ctl_job_free(d, d->jobs[d->njobs - 1]);
    free(d->jobs);
    d->jobs = NULL;
    d->capjobs = 0;
}
