/*
 * restorectl.c: the controller of `kind: Restore` (spec-reference/restore.yaml): a new
 * cluster made from a physical backup run, optionally recovered to a point in time.
 *
 * How a pass handles a Restore:
 *   1. ctl_restore_prepare (before the clusters): the target cluster is declared by the
 *      Restore itself: when no Cluster of that name exists, one is stored, with the source
 *      cluster's spec (the cluster of the Backup, or of the run named by source.path)
 *      merged with target.spec, minus the source's proxy (its ports are the source's).
 *   2. cluster_reconcile (reconcile.c) creates the new cluster's primary with
 *      ctl_restore_primary and ctl_restore_job instead of init_primary: a worker thread
 *      runs backup_restore_instance() (see below), which checks every part's checksum,
 *      extracts the run and, for a point in time, fetches the archived WAL and sets
 *      recovery up. A failure leaves no data directory, records a
 *      RestoreFailed event and the reason in the Restore's status, and is retried after
 *      CTL_RESTORE_RETRY_MS.
 *   3. While the restored primary replays WAL up to the point in time it runs in
 *      recovery; the reconciler does not promote it (PostgreSQL promotes itself at the
 *      target) and the Restore says "recovering". If the server gives up (the target is
 *      beyond the archive, a gap), the data directory is removed and the Restore fails as
 *      in 2. Replicas wait for the primary, then clone from it as usual.
 *   4. ctl_restore_report (after the clusters): once the primary accepts writes, the
 *      Restore is "ready" and a RestoreCompleted event says from what.
 * Progress survives a daemon restart through two markers in the primary's instance dir:
 * ".restore-recovering" (restored, not yet accepting writes) and ".restore-failed" (the
 * last failure, whose age paces the retries). A Restore aimed at a cluster that already
 * has data of its own fails: it never replaces data.
 *
 * The restore of step 2 runs on a worker thread (a CTL_JOB_RESTORE, control/jobs.c), as
 * a replica clone does: a large backup takes minutes, and on the control loop's thread it
 * held every other cluster's passes and failovers for that long. The pass records
 * Restoring and queues the job; a later pass takes its result (ctl_restore_job) and
 * records Restored or RestoreFailed as the synchronous restore did. A shutdown cancels it:
 * the data directory is removed, no marker is written, the next start restores again.
 */
#include "control/reconcile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "common/log.h"
#include "common/pipe.h"

#define CTL_RESTORE_RETRY_MS (60 * 1000)
#define MARK_RECOVERING ".restore-recovering"
#define MARK_FAILED ".restore-failed"

static void marker(const engine_instance_t *in, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", in->dir, name);
}

static void revent(ctl_daemon_t *d, const spec_resource_t *r, const char *type,
                   const char *reason, const char *msg)
{
    dbp_err_t err;
    if (store_add_event(d->store, r->tenant.v, "Restore", r->name.v, type, reason, msg, &err))
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(err.msg));
    dbp_log(strcmp(type, "Warning") == 0 ? DBP_LOG_WARN : DBP_LOG_INFO, "event",
            "tenant=%s kind=Restore name=%s reason=%s message=%s", r->tenant.v, r->name.v,
            reason, dbp_log_q(msg));
}

static void rstatus(ctl_daemon_t *d, const spec_resource_t *r, int64_t gen, const char *state,
                    const char *msg)
{
    dbp_err_t err;
    if (store_set_status(d->store, r->tenant.v, "Restore", r->name.v, gen, state, msg, &err))
        dbp_warn("status_write_failed", "restore=%s error=%s", r->name.v, dbp_log_q(err.msg));
}

/* What the Restore restores from, for messages. */
static void describe_source(const spec_restore_t *rs, char *buf, size_t len)
{
    if (rs->backup.v)
        snprintf(buf, len, "Backup %s", rs->backup.v);
    else
        snprintf(buf, len, "%s in BackupStore %s", rs->source_path.v ? rs->source_path.v : "?",
                 rs->source_store.v ? rs->source_store.v : "?");
    if (rs->point_in_time.set) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, " to %s", rs->point_in_time.v);
    }
}

/* ---- 1. the target cluster ------------------------------------------------------------ */

/* The cluster a Restore's source belongs to: the Backup's, or the catalog run's. */
static const char *source_cluster(ctl_daemon_t *d, const spec_set_t *set,
                                  const spec_resource_t *r, char *buf, size_t len)
{
    const spec_restore_t *rs = &r->u.restore;
    if (rs->backup.v) {
        const spec_resource_t *b = spec_set_find(set, SPEC_KIND_BACKUP, r->tenant.v,
                                                 rs->backup.v);
        return b ? b->u.backup.cluster.v : NULL;
    }
    store_backup_t row;
    dbp_err_t err;
    if (rs->source_path.v &&
        store_backup_get(d->store, r->tenant.v, rs->source_path.v, &row, &err) == 0) {
        snprintf(buf, len, "%s", row.cluster);
        return buf;
    }
    return NULL;
}

/* Stores the Cluster a Restore makes (see the file comment). */
static int make_cluster(ctl_daemon_t *d, const spec_set_t *set, const spec_resource_t *r,
                        dbp_err_t *err)
{
    const spec_restore_t *rs = &r->u.restore;
    char buf[96];
    const char *src_name = source_cluster(d, set, r, buf, sizeof(buf));
    const spec_resource_t *src = src_name ? spec_set_find(set, SPEC_KIND_CLUSTER, r->tenant.v,
                                                          src_name)
                                          : NULL;
    json_t *tspec = json_object_get(json_object_get(json_object_get(r->json, "spec"), "target"),
                                    "spec");
    json_t *doc;
    if (src) {
        doc = json_deep_copy(src->json);
        json_t *spec = doc ? json_object_get(doc, "spec") : NULL;
        if (spec)
            json_object_del(spec, "proxy"); /* the source's ports */
    } else if (tspec) {
        doc = json_pack("{s:s, s:s, s:{}, s:{}}", "apiVersion", "dbplane/v1", "kind", "Cluster",
                        "metadata", "spec");
    } else {
        return dbp_err_set(err, DBP_ENOENT,
                           "the source cluster%s%s is not declared: give target.spec (engine, "
                           "version, instances)",
                           src_name ? " " : "", src_name ? src_name : "");
    }
    if (!doc)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    json_t *meta = json_object_get(doc, "metadata");
    json_t *spec = json_object_get(doc, "spec");
    int rc = 0;
    if (!json_is_object(meta) || !json_is_object(spec) ||
        json_object_set_new(meta, "name", json_string(rs->target_cluster.v)) ||
        json_object_set_new(meta, "tenant", json_string(r->tenant.v)) ||
        (tspec && json_object_update(spec, tspec)))
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    char *text = rc ? NULL : json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!rc && !text)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if (!rc) {
        /* Parse it first: a bad merge is the Restore's error, never a stored Cluster. */
        spec_set_t tmp;
        spec_diags_t diags;
        spec_set_init(&tmp);
        spec_diags_init(&diags);
        if (spec_parse_buffer(&tmp, "<restore>", text, strlen(text), &diags) != 0 || tmp.n != 1)
            rc = dbp_err_set(err, DBP_EINVAL, "the cluster made from the source and target.spec "
                                              "is not valid: %s",
                             diags.n ? diags.v[0].msg : "parse error");
        spec_diags_free(&diags);
        spec_set_free(&tmp);
    }
    if (!rc)
        rc = store_put_resource(d->store, r->tenant.v, "Cluster", rs->target_cluster.v, text,
                                NULL, NULL, err);
    free(text);
    return rc;
}

/* True when the Restore at des index i has completed at its generation. */
static bool restore_done(const desired_t *des, size_t i)
{
    return des->state[i] && strcmp(des->state[i], "ready") == 0 &&
           des->observed[i] == des->generation[i];
}

void ctl_restore_prepare(ctl_daemon_t *d, desired_t *des)
{
    for (size_t i = 0; i < des->set.n; i++) {
        const spec_resource_t *r = des->set.items[i];
        if (r->kind != SPEC_KIND_RESTORE || restore_done(des, i))
            continue;
        const spec_restore_t *rs = &r->u.restore;
        bool failed = des->state[i] && strcmp(des->state[i], "failed") == 0 &&
                      des->observed[i] == des->generation[i];
        if (rs->in_place.v) {
            if (failed)
                continue; /* reported at this generation already */
            rstatus(d, r, des->generation[i], "failed",
                    "inPlace restores are not done by the controller: use `dbplane restore "
                    "--force` (it takes a safety backup first)");
            continue;
        }
        if (spec_set_find(&des->set, SPEC_KIND_CLUSTER, r->tenant.v, rs->target_cluster.v))
            continue;
        dbp_err_t err;
        char msg[700];
        if (make_cluster(d, &des->set, r, &err) != 0) {
            snprintf(msg, sizeof(msg), "cannot make cluster %s: %s", rs->target_cluster.v,
                     err.msg);
            if (!failed) {
                revent(d, r, "Warning", "RestoreFailed", msg);
                rstatus(d, r, des->generation[i], "failed", msg);
            }
            continue;
        }
        snprintf(msg, sizeof(msg), "cluster %s declared from the source cluster's spec",
                 rs->target_cluster.v);
        revent(d, r, "Normal", "ClusterCreated", msg);
        rstatus(d, r, des->generation[i], "pending", msg);
        d->pass_requested = true; /* the next pass sees the new Cluster */
    }
}

void ctl_restore_attach(cluster_rt_t *cr, const desired_t *des)
{
    cr->restore = NULL;
    for (size_t i = 0; i < des->set.n; i++) {
        const spec_resource_t *r = des->set.items[i];
        if (r->kind == SPEC_KIND_RESTORE && !r->u.restore.in_place.v &&
            strcmp(r->tenant.v, cr->res->tenant.v) == 0 &&
            strcmp(r->u.restore.target_cluster.v, cr->res->name.v) == 0) {
            cr->restore = r;
            cr->restore_gen = des->generation[i];
            cr->restore_done = restore_done(des, i);
            return;
        }
    }
}

/* ---- 2. the primary ------------------------------------------------------------------ */

const char *ctl_restore_primary(ctl_daemon_t *d, cluster_rt_t *cr, const engine_instance_t *P,
                                char *msg, size_t len)
{
    const spec_resource_t *r = cr->restore;
    char failed[PATH_MAX + 32], src[400];
    marker(P, MARK_FAILED, failed, sizeof(failed));
    describe_source(&r->u.restore, src, sizeof(src));
    struct stat st;
    if (stat(failed, &st) == 0) {
        int64_t age = dbp_wall_ms() - (int64_t)st.st_mtime * 1000;
        if (age >= 0 && age < CTL_RESTORE_RETRY_MS) {
            char *why = NULL;
            size_t n = 0;
            dbp_err_t ignore;
            if (dbp_read_file(failed, &why, &n, &ignore) != 0)
                why = NULL;
            snprintf(msg, len, "restore from %s failed: %s; retrying in %lld s", src,
                     why ? why : "?", (long long)((CTL_RESTORE_RETRY_MS - age) / 1000));
            free(why);
            return "failed";
        }
    }
    if (!ctl_job_queue(d, CTL_JOB_RESTORE, cr, P, P, NULL, false)) {
        snprintf(msg, len, "restore %s: out of memory", P->name);
        return "failed";
    }
    char m[600];
    snprintf(m, sizeof(m), "restoring primary %s from %s", P->name, src);
    revent(d, r, "Normal", "Restoring", m);
    rstatus(d, r, cr->restore_gen, "restoring", m);
    snprintf(msg, len, "%s", m);
    return "pending";
}

const char *ctl_restore_job(ctl_daemon_t *d, ctl_job_t *j, const engine_instance_t *P, char *msg,
                            size_t len)
{
    /* The job's Restore (the view it holds keeps it alive): cr->restore may have gone or
     * changed generation while the job ran. */
    const spec_resource_t *r = j->restore;
    char src[400];
    describe_source(&r->u.restore, src, sizeof(src));
    if (!ctl_job_done(j)) {
        snprintf(msg, len, "restoring primary %s from %s", P->name, src);
        return "pending";
    }
    char failed[PATH_MAX + 32], recovering[PATH_MAX + 32], m[600];
    marker(P, MARK_FAILED, failed, sizeof(failed));
    marker(P, MARK_RECOVERING, recovering, sizeof(recovering));
    const char *st = NULL;
    dbp_err_t ignore;
    if (j->rc) {
        /* backup_restore_instance leaves no data directory behind on failure. */
        if (dbp_write_file(failed, j->err.msg, strlen(j->err.msg), 0600, NULL, &ignore) != 0)
            dbp_warn("restore_marker_failed", "path=%s", dbp_log_q(failed));
        snprintf(msg, len, "restore from %s failed: %s", src, j->err.msg);
        revent(d, r, "Warning", "RestoreFailed", msg);
        rstatus(d, r, j->restore_gen, "failed", msg);
        st = "failed";
    } else {
        unlink(failed);
        if (dbp_write_file(recovering, "1\n", 2, 0600, NULL, &ignore) != 0)
            dbp_warn("restore_marker_failed", "path=%s", dbp_log_q(recovering));
        snprintf(m, sizeof(m), "primary %s restored from %s in %.1f s%s", P->name, src,
                 (double)j->ms / 1000.0,
                 r->u.restore.point_in_time.set ? "; replaying archived WAL" : "");
        revent(d, r, "Normal", "Restored", m);
        rstatus(d, r, j->restore_gen, r->u.restore.point_in_time.set ? "recovering" : "restoring",
                m);
    }
    dbp_info("job_collected", "tenant=%s instance=%s kind=%s rc=%d ms=%lld", P->tenant, P->name,
             ctl_job_kind_str(j->kind), j->rc, (long long)j->ms);
    ctl_job_free(d, j);
    return st;
}

bool ctl_restore_recovering(const cluster_rt_t *cr, const engine_instance_t *P)
{
    char recovering[PATH_MAX + 32];
    marker(P, MARK_RECOVERING, recovering, sizeof(recovering));
    return cr->restore && access(recovering, F_OK) == 0;
}

const char *ctl_restore_check_recovery(ctl_daemon_t *d, cluster_rt_t *cr,
                                       const engine_instance_t *P, const ctl_proc_t *proc,
                                       char *msg, size_t len)
{
    if (!ctl_restore_recovering(cr, P))
        return NULL;
    const spec_resource_t *r = cr->restore;
    char src[400];
    describe_source(&r->u.restore, src, sizeof(src));
    if (proc && proc->state == CTL_PROC_BACKOFF) {
        /* The server gave up recovering (target beyond the archive, a gap, bad WAL):
         * nothing half-made stays; the restore is retried later. */
        char line[400] = "", id[160];
        dbp_pipe_last_log_line(P->log_path, line, sizeof(line));
        snprintf(id, sizeof(id), "%s/%s", P->tenant, P->name);
        const char *ids[] = {id, NULL};
        ctl_sup_stop_ids(&d->sup, ids, 10000);
        dbp_err_t err;
        if (dbp_rm_rf(P->data_dir, &err) != 0)
            dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(P->data_dir),
                     dbp_log_q(err.msg));
        char recovering[PATH_MAX + 32], failed[PATH_MAX + 32];
        marker(P, MARK_RECOVERING, recovering, sizeof(recovering));
        marker(P, MARK_FAILED, failed, sizeof(failed));
        unlink(recovering);
        char why[500];
        snprintf(why, sizeof(why), "the restored server stopped during recovery: %s", line);
        if (dbp_write_file(failed, why, strlen(why), 0600, NULL, &err) != 0)
            dbp_warn("restore_marker_failed", "path=%s", dbp_log_q(failed));
        snprintf(msg, len, "restore from %s failed: %s", src, why);
        revent(d, r, "Warning", "RestoreFailed", msg);
        rstatus(d, r, cr->restore_gen, "failed", msg);
        return "failed";
    }
    snprintf(msg, len, "%s is recovering from %s", P->name, src);
    rstatus(d, r, cr->restore_gen, "recovering", msg);
    return "pending";
}

/* ---- 4. completion ------------------------------------------------------------------- */

void ctl_restore_report(ctl_daemon_t *d, cluster_rt_t *crs, int ncl)
{
    for (int i = 0; i < ncl; i++) {
        cluster_rt_t *cr = &crs[i];
        if (!cr->restore || cr->restore_done || cr->primary < 0)
            continue;
        const engine_instance_t *P = &cr->inst[cr->primary];
        if (ctl_job_busy(d, P->tenant, P->name))
            continue; /* restoring: the data directory is not finished yet */
        char recovering[PATH_MAX + 32], failed[PATH_MAX + 32], src[400], m[600];
        marker(P, MARK_RECOVERING, recovering, sizeof(recovering));
        marker(P, MARK_FAILED, failed, sizeof(failed));
        if (access(recovering, F_OK) != 0) {
            /* Not restored by this controller: the cluster had data of its own. */
            if (access(failed, F_OK) != 0 && cr->ops && cr->ops->is_initialized(P)) {
                snprintf(m, sizeof(m), "cluster %s already has data: a Restore makes a new "
                                       "cluster (restore in place with `dbplane restore "
                                       "--force`)",
                         cr->res->name.v);
                rstatus(d, cr->restore, cr->restore_gen, "failed", m);
            }
            continue;
        }
        if (!cr->primary_ready)
            continue;
        unlink(recovering);
        describe_source(&cr->restore->u.restore, src, sizeof(src));
        snprintf(m, sizeof(m), "cluster %s restored from %s; primary %s accepts writes",
                 cr->res->name.v, src, P->name);
        revent(d, cr->restore, "Normal", "RestoreCompleted", m);
        rstatus(d, cr->restore, cr->restore_gen, "ready", m);
        cr->restore_done = true;
    }
}
