/*
 * reconcile.h: the level-triggered reconciler. One pass reads the desired resources from
 * the store, observes every server (supervisor state + engine probe), and takes the
 * idempotent actions that close the gap, in dependency order: Secrets, Clusters
 * (initialise, clone replicas, render configuration, start, probe), Users, Databases,
 * Grants. Each resource's status (state, message, observed generation) and every action
 * or failure (as an event) is written to the store. A resource already ready at its
 * current generation is re-checked only every resync period.
 */
#ifndef DBP_CONTROL_RECONCILE_H
#define DBP_CONTROL_RECONCILE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/proc.h"
#include "control/supervisor.h"
#include "engines/engine.h"
#include "ha/ha.h"
#include "proxy/proxy.h"
#include "spec/spec.h"
#include "secrets/secrets.h"
#include "store/store.h"

/* What the reconciler remembers about a resource between passes. */
typedef struct ctl_memo {
    char key[256];       /* "Kind/tenant/name" */
    int64_t generation;  /* generation last reconciled successfully */
    int64_t checked_ms;  /* monotonic ms of the last successful check */
    char last_error[256];
} ctl_memo_t;

#define CTL_MAX_INSTANCES 9

/* Desired resources of one pass with their store bookkeeping, index-aligned with set. */
typedef struct desired {
    spec_set_t set;
    int64_t *generation;
    int64_t *observed;
    char **state; /* owned copies; NULL when never reported */
} desired_t;

/* What one pass learned about a cluster. */
typedef struct cluster_rt {
    spec_resource_t *res;
    int64_t generation;
    const engine_ops_t *ops;
    engine_instance_t inst[CTL_MAX_INSTANCES];
    engine_probe_t probe[CTL_MAX_INSTANCES];
    int n;
    int primary; /* index into inst, -1 unknown */
    int64_t epoch;
    bool primary_ready; /* the topology's primary answers as a primary */
    char *admin_password; /* owned (secrets_free_value); see engine_instance_t */
    bool archives;        /* a Backup of the cluster asks for continuous archiving (pitr) */
    uint64_t archive_queue_max; /* that Backup's archiveQueueMax (bytes; 0 = no bound) */
    const spec_resource_t *restore; /* the Restore that makes this cluster, or NULL */
    int64_t restore_gen;  /* its generation */
    bool restore_done;    /* it completed (status ready at that generation) */
    char *repl_password;
    bool reloaded;        /* this pass signalled a server to reload a changed config */
    bool cloning;         /* a new replica is being cloned (control/jobs.c): Users,
                             Databases, Grants and SqlJobs wait, as they did when the clone
                             ran inside the pass (a semi-sync replica must receive them) */
} cluster_rt_t;

/* A rolling change of one cluster (control/rolling.c), kept across passes, keyed by
 * tenant/cluster. Owned by the control loop's thread. */
typedef struct ctl_roll {
    char key[160];
    bool active;              /* a rollout runs: RollingUpdateStarted was recorded */
    bool checked_once;        /* needs_restart was asked since the daemon started */
    int64_t started_ms;       /* monotonic ms the rollout started */
    int64_t check_until_ms;   /* ask needs_restart every pass until then (after a reload) */
    int total, done;          /* instances to restart, restarted so far */
    bool restarted[CTL_MAX_INSTANCES]; /* restarted (or switched away from), not yet back */
    int64_t step_deadline_ms; /* the restarted instance must be back by then */
    bool switch_wanted;       /* only the primary is left: switch over after this pass */
    int64_t retry_ms;         /* after a failed step, no new step before this */
    int64_t failed_gen;       /* generation at which a step failed; 0 none */
    char failed[256];         /* why the rollout stopped; "" when it did not */
    char why[200];            /* what needs the restarts */
} ctl_roll_t;

/* What the control loop remembers about one cluster's failovers, kept across passes
 * (keyed by tenant/cluster). Owned by the control loop's thread; detection state lives
 * in the HA monitor thread (control/hactl.c). */
typedef struct ctl_ha_state {
    char key[160];
    bool reported_no_candidate;
    int64_t failovers;       /* completed automatic failovers */
    ha_timing_t last;        /* timing of the last failover/switchover */
    int64_t last_detect_ms;  /* failure detection time of the last failover (ms) */
    /* For engines with failover_on_crash (Redis): the topology's primary by name, and a
     * crash of it that a failover must answer (the supervisor does not restart it). */
    char primary[96];
    bool crash_watch;        /* the cluster's engine fails over on a crash, n >= 2 */
    bool crash_pending;
    int64_t crash_ms;        /* monotonic ms the crash was seen */
} ctl_ha_state_t;

/* What the control loop remembers about one replica's stream (ha_stream_check), kept
 * across passes, keyed by tenant/instance. Owned by the control loop's thread. */
typedef struct ctl_stream {
    char key[200];
    ha_stream_watch_t w;
    bool held_reported;      /* the RebuildBackoff event of this episode was recorded */
} ctl_stream_t;

/* One reconcile pass's results, shared read-only by the control loop and the HA monitor
 * thread: the desired set (the specs instances point into) and the clusters (instances,
 * credentials). Nothing in it changes after ctl_ha_view_publish, except cr->primary,
 * cr->epoch and cr->primary_ready, which only the control loop reads; the monitor reads
 * the topology from its own table instead. Reference-counted under the monitor's mutex;
 * freed by whichever thread drops the last reference. */
typedef struct ctl_view {
    int refs;
    struct desired *des;
    struct cluster_rt *crs;
    int ncl;
} ctl_view_t;

typedef struct ctl_hamon ctl_hamon_t; /* the HA monitor thread (control/hactl.c) */

/* The slow steps of the pass that run on a worker thread (control/jobs.c). */
typedef enum ctl_job_kind {
    CTL_JOB_CLONE,   /* a new replica: bootstrapFrom a Backup when set, else init_replica */
    CTL_JOB_REJOIN,  /* a fenced former primary: ops->rejoin, else a rebuild (init_replica) */
    CTL_JOB_REBUILD, /* a replica whose replication broke for good: init_replica */
    CTL_JOB_INIT,    /* a primary's first initialisation: ops->init_primary (initdb) */
    CTL_JOB_RESTORE, /* a Restore's primary: backup_restore_instance from its backup */
} ctl_job_kind_t;

/* One slow step of one instance, run on its own thread. The control loop creates it
 * (ctl_job_queue), starts it after the pass published its view (ctl_jobs_start), and once
 * ctl_job_done says so, reads the results and frees it (ctl_job_free). The worker reads
 * only its own copies (instances, paths; the strings, specs and credentials they point to
 * belong to `view`, which the job holds a reference on) and writes only the result
 * fields; it never touches the store or the supervisor. */
typedef struct ctl_job {
    ctl_job_kind_t kind;
    char tenant[64];         /* R's tenant (R.name and P.name say the instance and its source) */
    int64_t epoch;           /* the topology epoch when queued */
    const engine_ops_t *ops;
    engine_instance_t R, P;         /* copies: the instance the step makes, and its source (P as
                                       the topology named it primary when queued; INIT and
                                       RESTORE make the primary itself: P is R) */
    const spec_resource_t *restore; /* CTL_JOB_RESTORE: the Restore (in `view`), else NULL */
    int64_t restore_gen;            /* ... and its generation when queued */
    char bootstrap[128];            /* CTL_JOB_CLONE: the bootstrapFrom Backup, "" when none */
    char data_dir[PATH_MAX];        /* the daemon's (a bootstrap opens its own backup context) */
    char why[600];                  /* CTL_JOB_REJOIN/REBUILD: why (for the Rebuilding event) */
    int wake_fd;                    /* the control loop's wake pipe; the worker writes 'j' */
    struct ctl_view *view;          /* reference held while the job exists; NULL while queued */
    dbp_cancel_t cancel;            /* ctl_jobs_stop kills the step's tools through it */
    pthread_t thread;
    bool started;
    int done;                /* set (atomically) by the worker when the results are final */
    /* Results, valid once done. */
    int rc;                  /* 0: R's data directory is ready; else DBP_E* with err */
    dbp_err_t err;
    bool boot_tried;         /* CLONE: a bootstrap from the Backup was attempted */
    int boot_rc;             /* ... and its outcome; boot_msg says what happened */
    char boot_msg[1200];
    bool rejoin_tried;       /* REJOIN: ops->rejoin ran */
    int rejoin_rc;           /* ... its outcome; rejoin_err says why it failed */
    char rejoin_err[512];
    bool cloned;             /* init_replica ran (clone or rebuild) */
    int64_t ms;              /* how long the step took */
} ctl_job_t;

/* The daemon's state, owned by the control loop's thread. */
typedef struct ctl_daemon {
    char data_dir[PATH_MAX]; /* absolute */
    char run_dir[128];       /* short runtime dir for unix sockets */
    dbp_runas_t runas;
    store_t *store;
    secrets_t *secrets;
    ctl_sup_t sup;
    int lock_fd;
    int wake[2];             /* self-pipe: signals and the API wake the loop */
    bool pass_requested;
    int pass_interval_ms;
    int resync_ms;
    ctl_memo_t *memo;
    int nmemo, capmemo;
    bool secrets_changed;    /* a Secret value changed in this pass: re-check Users */
    desired_t *des;          /* the last pass's desired state, kept until the next pass */
    cluster_rt_t *crs;       /* the last pass's clusters (instances, probes) */
    int ncl;
    ctl_ha_state_t *ha;      /* per-cluster failover records */
    int nha, capha;
    ctl_roll_t *roll;        /* per-cluster rolling changes (control/rolling.c) */
    int nroll, caproll;
    ctl_view_t *view;        /* this thread's reference to the last pass's results */
    ctl_hamon_t *mon;        /* the HA monitor thread; NULL before ctl_ha_start */
    proxy_t *proxy;          /* the proxy for clusters with spec.proxy (may be NULL) */
    unsigned char proxy_digest[32]; /* SHA-256 of the last snapshot pushed */
    bool proxy_synced;
    char exe[PATH_MAX];      /* the dbplane binary (archive_command runs `<exe> wal-push`) */
    ctl_job_t **jobs;        /* slow steps queued, running or finished (control/jobs.c) */
    int njobs, capjobs;
    ctl_stream_t *streams;   /* per-replica stream watches (rebuild of a replica that runs
                                but does not stream) */
    int nstreams, capstreams;
} ctl_daemon_t;

/* Lays out instance `rec` of Cluster `c` (see docs/design.md): its directories under
 * data_dir, its socket dir under run_dir, host and port from the store record. The one
 * place that knows the layout; the backup runner uses it too. Borrows c and runas (the
 * instance points into them). */
void ctl_instance_layout(engine_instance_t *in, const char *data_dir, const char *run_dir,
                         const spec_resource_t *c, const store_instance_t *rec,
                         const dbp_runas_t *runas);

/* The WAL / binlog spool directory of a cluster (see engine_instance_t.archive_spool):
 * "<data_dir>/clusters/<tenant>/<cluster>/wal-spool". */
void ctl_wal_spool_path(char *buf, size_t len, const char *data_dir, const char *tenant,
                        const char *cluster);

/* The TLS directory of a cluster (see engine_instance_t.tls_dir):
 * "<data_dir>/clusters/<tenant>/<cluster>/tls"; its server.crt is the proxy's CA bundle
 * for serverTLS verify-full. */
void ctl_tls_dir_path(char *buf, size_t len, const char *data_dir, const char *tenant,
                      const char *cluster);

/* True when a Backup of cluster `cluster` in `tenant` asks for continuous archiving
 * (spec.pitr) in `set`; *backup (may be NULL) receives that Backup. */
bool ctl_cluster_archives(const spec_set_t *set, const char *tenant, const char *cluster,
                          const spec_resource_t **backup);

/* Where a User's password lives: its passwordSecretKeyRef, or "<name>-password"/"password"
 * when it has none (generated on first use). Writes both into the 128-byte buffers. */
void ctl_user_secret(const spec_resource_t *user, char name[128], char key[128]);

/* Marks a Cluster pending (with `why`) at once, without waiting for the next pass: after
 * a crash, a fence or a topology change, `dbplane wait` must not return on the status the
 * cluster had before. */
void ctl_cluster_unready(ctl_daemon_t *d, const char *tenant, const char *cluster,
                         const char *why);

/* ---- Restore resources (control/restorectl.c) ---------------------------------------- */

/* Before the clusters of a pass: stores the Cluster each pending Restore makes when it is
 * not declared (the source cluster's spec merged with target.spec, without the source's
 * proxy), reporting failures in the Restore's status. */
void ctl_restore_prepare(ctl_daemon_t *d, desired_t *des);

/* Sets cr->restore (and its generation and completion) to the Restore whose target is
 * cr's cluster, or NULL. Borrows des until the end of the pass. */
/* The cluster `name` of `tenant` among the n clusters of crs (a pass's runtime view, e.g.
 * d->crs / d->ncl), borrowed; NULL when there is none. */
cluster_rt_t *ctl_cluster_find(cluster_rt_t *crs, int n, const char *tenant, const char *name);

void ctl_restore_attach(cluster_rt_t *cr, const desired_t *des);

/* Starts making the data directory of primary P from the Restore's backup instead of
 * init_primary: records the Restoring event and the Restore's status, and queues a
 * CTL_JOB_RESTORE (backup_restore_instance on a worker thread; ctl_restore_job takes its
 * result). Returns the cluster state with the reason in msg: "pending" ("restoring
 * primary P from ..."), or "failed" within a minute of a failed attempt (retried then)
 * or when out of memory. */
const char *ctl_restore_primary(ctl_daemon_t *d, cluster_rt_t *cr, const engine_instance_t *P,
                                char *msg, size_t len);

/* Primary P's restore job j (CTL_JOB_RESTORE): while it runs, returns "pending" with the
 * message; once done, records what the synchronous restore recorded (Restored and the
 * ".restore-recovering" marker, or RestoreFailed and the ".restore-failed" marker that
 * paces the retries; the Restore's status), frees j and returns NULL when P's data
 * directory is ready (the caller starts the server) or "failed" with the reason in msg.
 * A failed attempt leaves no data directory. */
const char *ctl_restore_job(ctl_daemon_t *d, ctl_job_t *j, const engine_instance_t *P, char *msg,
                            size_t len);

/* True while primary P of a restored cluster replays archived WAL to its point in time
 * (the reconciler must not promote it: the server promotes itself at the target). */
bool ctl_restore_recovering(const cluster_rt_t *cr, const engine_instance_t *P);

/* During that recovery: returns "pending" (msg says so), or "failed" when the server gave
 * up (its process backs off): the server is stopped, its data directory removed and the
 * Restore reported failed, to be retried. NULL when P is not recovering for a Restore. */
const char *ctl_restore_check_recovery(ctl_daemon_t *d, cluster_rt_t *cr,
                                       const engine_instance_t *P, const ctl_proc_t *proc,
                                       char *msg, size_t len);

/* After the clusters of a pass: marks each Restore whose primary accepts writes ready,
 * with a RestoreCompleted event. */
void ctl_restore_report(ctl_daemon_t *d, cluster_rt_t *crs, int ncl);

/* ---- slow steps on worker threads (control/jobs.c) ---------------------------------- */

/* At most this many jobs run at once; more wait queued (busy all the same). */
#define CTL_JOBS_RUNNING_MAX 2

/* "clone", "rejoin", "rebuild", "init" or "restore", for logs. */
const char *ctl_job_kind_str(ctl_job_kind_t k);

/* What an instance with a job of kind k is doing, for status messages: "cloning",
 * "rejoining", "rebuilding", "initialising" or "restoring". */
const char *ctl_job_doing_str(ctl_job_kind_t k);

/* True for the kinds that make a primary's data directory (CTL_JOB_INIT, CTL_JOB_RESTORE)
 * rather than a replica's from a primary. */
bool ctl_job_makes_primary(ctl_job_kind_t k);

/* Creates a queued job of `kind` for replica R of cluster cr, from primary P, `why` (may
 * be NULL) its reason. A CTL_JOB_CLONE, and a CTL_JOB_REBUILD with `from_backup`, start
 * from the Cluster's spec.bootstrapFrom Backup when it has one (the clone of P is the
 * fallback). CTL_JOB_INIT and CTL_JOB_RESTORE make primary P itself (pass it as both R
 * and P); a CTL_JOB_RESTORE restores cr->restore, which must be set. Copies R and P
 * (their pointers stay into this pass's results, which the job holds once started).
 * Returns the job (owned by d) or NULL when out of memory. */
ctl_job_t *ctl_job_queue(ctl_daemon_t *d, ctl_job_kind_t kind, const cluster_rt_t *cr,
                         const engine_instance_t *R, const engine_instance_t *P,
                         const char *why, bool from_backup);

/* The job of instance `instance` of `tenant` (queued, running or finished and not yet
 * taken), or NULL. While one exists the instance is busy: the pass neither starts its
 * server nor queues a second job, and no failover or switchover promotes it. */
ctl_job_t *ctl_job_find(ctl_daemon_t *d, const char *tenant, const char *instance);

/* True when instance `instance` of `tenant` has a job (see ctl_job_find). */
bool ctl_job_busy(ctl_daemon_t *d, const char *tenant, const char *instance);

/* True when the job's worker finished and its results may be read. */
bool ctl_job_done(ctl_job_t *j);

/* After a pass published its view (d->view): queued jobs take a reference on it and start,
 * up to CTL_JOBS_RUNNING_MAX at once. Without a view (out of memory) the queued jobs are
 * dropped (the next pass queues them again). */
void ctl_jobs_start(ctl_daemon_t *d);

/* Joins a finished job's thread, drops its view reference and removes it from d. */
void ctl_job_free(ctl_daemon_t *d, ctl_job_t *j);

/* At shutdown: cancels every job (its tools' process groups are killed), joins the
 * threads and frees them without taking their results: a clone, an init or a restore
 * leaves no initialised data directory, a rejoin its marker, so the next start runs the
 * step again. */
void ctl_jobs_stop(ctl_daemon_t *d);

/* Test-only failpoint (tests/integration/test_ha.py; never set in production): with
 * DBPLANE_FAILPOINT_CLONE_DELAY_MS in the daemon's environment, a clone or rebuild of
 * replica R first runs `/bin/sleep` for that many ms as one of its tools (through
 * dbp_proc_run, so a shutdown kills it like pg_basebackup); DBPLANE_FAILPOINT_CLONE_CLUSTER
 * limits it to the cluster of that name. 0, or DBP_EIO when the sleep was killed. */
int ctl_failpoint_clone_delay(const engine_instance_t *R, dbp_err_t *err);

/* Test-only failpoint (tests/integration/test_ha.py, test_pitr.py; never set in
 * production): with DBPLANE_FAILPOINT_INIT_DELAY_MS in the daemon's environment, the first
 * initialisation of primary P, or its restore for a Restore, first runs `/bin/sleep` for
 * that many ms on the job's thread (a real child: a shutdown kills it like initdb);
 * DBPLANE_FAILPOINT_INIT_CLUSTER limits it to the cluster of that name. 0, or DBP_EIO when
 * the sleep was killed. */
int ctl_failpoint_init_delay(const engine_instance_t *P, dbp_err_t *err);

/* Test-only failpoint (tests/integration/test_ha.py; never set in production): with
 * DBPLANE_FAILPOINT_REJOIN_SKIP_REWIND=1 in the daemon's environment, a rejoin reports
 * success without running ops->rejoin (no pg_rewind): the fenced former primary starts as
 * a replica on its own, possibly forked, history — what a rewind that returned 0 but left
 * a server unable to stream looks like. Logs a `failpoint` warning when it fires. */
bool ctl_failpoint_rejoin_skip(const engine_instance_t *R);

/* How long a replica may run without streaming from a healthy primary before it is
 * rebuilt (ha_stream_check): HA_STREAM_BOUND_MS, or, for tests only,
 * DBPLANE_FAILPOINT_STREAM_BOUND_MS from the daemon's environment. Milliseconds. */
int64_t ctl_stream_bound_ms(void);

/* Takes a reference on the control loop's current view (d->view), or returns NULL. */
struct ctl_view *ctl_ha_view_ref(ctl_daemon_t *d);

/* Drops a reference taken by ctl_ha_view_ref (control loop's thread). */
void ctl_ha_view_unref(ctl_daemon_t *d, struct ctl_view *v);

/* Records an event (type "Normal" or "Warning") in the store and the log. */
void ctl_event(ctl_daemon_t *d, const char *tenant, const char *kind, const char *name,
               const char *type, const char *reason, const char *msg);

/* ---- rolling changes (control/rolling.c) ------------------------------------------- */

/* After cluster_reconcile brought cluster cr to `state` (msg: its status message, `len`
 * bytes): applies changes that need server restarts. When the cluster is ready and an
 * instance runs a replaced binary or other command line (ctl_sup_stale), or still has
 * settings pending a restart after a reload (ops->needs_restart), restarts them per
 * spec.updateStrategy: ReplicasFirstPrimaryLast restarts one replica per pass, each only
 * once the previous one is back and streaming, then asks for a switchover to an
 * up-to-date replica (run by ctl_rolling_after_pass), after which the old primary
 * rejoins as a replica with the new configuration; AllAtOnce, and a single instance,
 * restart in place. Records RollingUpdateStarted, InstanceRestarted,
 * RollingUpdateFailed and RollingUpdateCompleted events on the Cluster. Returns the
 * cluster's state ("pending" while the rollout runs, with its progress in msg; "failed"
 * when a step failed: the cluster still serves on its current primary and the step is
 * retried 30 s later, or at once on a new generation). */
const char *ctl_rolling_step(ctl_daemon_t *d, cluster_rt_t *cr, const char *state, char *msg,
                             size_t len);

/* After a pass (d->crs current): runs the switchovers ctl_rolling_step asked for. */
void ctl_rolling_after_pass(ctl_daemon_t *d);

/* Runs one reconcile pass. Errors are recorded in statuses and events, not returned. */
void ctl_reconcile_pass(ctl_daemon_t *d);

/* Stops every server: primaries first (so replicas receive the final WAL), then replicas;
 * each group gets 60 s before SIGKILL. Marks instances stopped in the store. */
void ctl_shutdown(ctl_daemon_t *d);

/* Frees what the daemon owns (store, secrets, supervisor, memo); safe on a partly
 * initialised daemon. */
void ctl_daemon_free(ctl_daemon_t *d);

/* Frees one pass's results (desired set, clusters and their credentials). */
void ctl_pass_results_free(struct desired *des, struct cluster_rt *crs, int ncl);

/* Starts the HA monitor thread (control/hactl.c): it probes each cluster's primary at its
 * failover.interval with its own connections and time-outs, independently of the
 * reconcile pass, and asks the control loop (a byte 'h' on `wake_fd`) to fail over when
 * ha_detect says so. Returns 0 or DBP_ENOMEM/DBP_EIO. */
int ctl_ha_start(ctl_daemon_t *d, int wake_fd) __attribute__((warn_unused_result));

/* Stops and joins the monitor thread and drops its view; safe when never started. */
void ctl_ha_stop(ctl_daemon_t *d);

/* Hands the pass's results (d->des, d->crs, d->ncl) to the monitor as a new view; the
 * control loop keeps one reference in d->view. Call at the end of a pass. */
void ctl_ha_view_publish(ctl_daemon_t *d);

/* Drops the control loop's reference to the last view and clears d->des, d->crs. */
void ctl_ha_view_drop(ctl_daemon_t *d);

/* True while the monitor counts failures of the cluster's primary (the pass then leaves
 * the primary's probing to the monitor). Thread-safe. */
bool ctl_ha_suspect(ctl_daemon_t *d, const char *tenant, const char *cluster);

/* Supervisor callback path (control loop's thread): `id` ("tenant/instance") exited on
 * its own. When it is the primary of a cluster whose engine fails over on a crash, the
 * supervisor is told not to restart it and ctl_ha_tick fails over. */
void ctl_ha_on_exit(ctl_daemon_t *d, const char *id);

/* True when the pass must not start the cluster's primary: it crashed and a failover is
 * pending (a restart in place would come back without its data). */
bool ctl_ha_primary_held(ctl_daemon_t *d, const char *tenant, const char *cluster);

/* On the control loop's thread: runs the failovers the monitor asked for, after checking
 * that the topology is still the one the monitor judged (same epoch and primary). Returns
 * at once when none is pending. */
void ctl_ha_tick(ctl_daemon_t *d);

/* Planned switchover (`dbplane switchover`) or forced failover (`dbplane failover --to`)
 * of a cluster, run on the control loop's thread. `to` may be NULL (best replica). */
int ctl_ha_switch(ctl_daemon_t *d, const char *tenant, const char *cluster, const char *to,
                  bool force, json_t **result, dbp_err_t *err) __attribute__((warn_unused_result));

/* Stops an instance's server (SIGKILL after grace_ms; 0 = at once), keeps the supervisor
 * from restarting it, and marks it as needing a rejoin before it may start again. */
int ctl_fence(ctl_daemon_t *d, const engine_instance_t *in, int grace_ms, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Pushes the proxy snapshot built from the last pass (see control/proxyctl.c) when it
 * changed. Cheap when nothing changed. */
void ctl_proxy_sync(ctl_daemon_t *d);

/* Path of the marker that keeps a fenced former primary from starting before a rejoin. */
void ctl_rejoin_marker(const engine_instance_t *in, char *buf, size_t len);

/* Supervisor callback: records process events in the store's event log. */
void ctl_on_process_event(void *ud, const ctl_proc_t *p, const char *reason, const char *msg);

#endif
