/*
 * backup.h: taking, listing, verifying, restoring and expiring backups: the backup
 * module's public face, used by the CLI (`dbplane backup|backups|restore`), by the
 * scheduler's child processes and by the reconciler for Restore resources.
 *
 * Backups run in their own process, like pgBackRest's: the caller opens a backup
 * context on the data dir (a second SQLite connection next to the daemon's, WAL mode,
 * and the secret store's key file), which reads the declared resources (Cluster,
 * Backup, BackupStore, Secret values) and the observed instances and topology. A run
 * picks its source instance (Backup.spec.target: PreferReplica takes a running replica
 * and falls back to the primary), streams each artifact from the engine's tool through
 * stream.h into the BackupStore, and writes the manifest last; the catalog row
 * (store.h) says "running" with the run's pid until then, "complete" after. A run killed
 * midway leaves no manifest, its catalog row is reaped to "failed", and retention removes
 * its leftovers. Restore and verification check every part's SHA-256 before replacing
 * or starting anything.
 *
 * Object layout in a store: "[<Backup.spec.prefix>/]<tenant>/<cluster>/<run id>/" holding
 * the parts ("data.tar.zst", "globals.sql.zst", "db-0.dump.zst", ...; ".enc" appended
 * when encrypted) and "manifest.json".
 */
#ifndef DBP_BACKUP_BACKUP_H
#define DBP_BACKUP_BACKUP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engines/engine.h"
#include "spec/spec.h"
#include "store/store.h"

typedef struct backup_ctx backup_ctx_t;

/* Progress of a long operation: `phase` ("backup", "restore", "verify"), raw bytes
 * produced or consumed by the engine so far, bytes stored so far. Called at most a few
 * times per second, and once at the end of each part. */
typedef void (*backup_progress_fn)(void *ud, const char *phase, int64_t raw, int64_t stored);

/* Opens a context on the data dir `data_dir` (must exist, with state.db and secret.key).
 * Returns owned *out (close with backup_ctx_close); DBP_ENOENT when the data dir has no
 * store, DBP_ESTORE / DBP_ECRYPTO from the store and the secret key. */
int backup_ctx_open(backup_ctx_t **out, const char *data_dir, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Closes the context; NULL is a no-op. */
void backup_ctx_close(backup_ctx_t *ctx);

/* The context's store connection (borrowed), for listing the catalog. */
store_t *backup_ctx_store(backup_ctx_t *ctx);

/* Sets a flag that, once non-zero (e.g. from a SIGINT handler), makes running operations
 * stop at their next write, clean up and fail with "interrupted". Borrowed. */
void backup_ctx_set_cancel(backup_ctx_t *ctx, volatile sig_atomic_t *flag);

/* Sets the progress callback of the context's operations (NULL: none). */
void backup_ctx_set_progress(backup_ctx_t *ctx, backup_progress_fn fn, void *ud);

/* What `dbplane backup` asks for. */
typedef struct backup_run_opts {
    const char *tenant;  /* NULL = "default" */
    const char *cluster; /* required */
    const char *backup;  /* a Backup resource (its type, store, prefix, target, compression,
                            encryption, databases, verify, retention); NULL = ad hoc */
    int type;            /* spec_backup_type_t, or -1: the Backup's (ad hoc: logical) */
    const char *store;   /* a BackupStore name; NULL = the Backup's, or the tenant's only one */
    int verify;          /* -1 = Backup.spec.verify (ad hoc: no), 0 = no, 1 = yes */
    bool retention;      /* apply the Backup's retention after a successful run */
} backup_run_opts_t;

/* Takes one backup as described above; *out (may be NULL) receives the final catalog
 * row. Returns 0 for a complete run, or the run's error, which is also recorded in the
 * catalog ("failed" with the message) and as a BackupFailed event. When the run is
 * verified (o->verify, or the Backup's verify) and verification fails, the run stays
 * complete, the catalog says verified=failed, and the call returns verification's error
 * (DBP_ECRYPTO for a corrupt artifact, DBP_EENGINE when the restored server failed). */
int backup_run(backup_ctx_t *ctx, const backup_run_opts_t *o, store_backup_t *out,
               dbp_err_t *err) __attribute__((warn_unused_result));

/* Verifies a complete run: checks every part's size and SHA-256, restores it into a
 * scratch instance under <data dir>/scratch/, starts it, reads every table of every
 * database and compares the table counts with the manifest; records "ok" or "failed"
 * (with the reason) in the catalog and as an event. Returns 0 when it passed, DBP_ECRYPTO
 * (corrupt artifact) or DBP_EENGINE / DBP_EIO (the restored server failed a check). */
int backup_verify(backup_ctx_t *ctx, const char *tenant, const char *id, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* What `dbplane restore` asks for. Exactly one of id, backup, cluster selects the run:
 * the run itself, or the newest complete run of a Backup / of a cluster (of `type` when
 * >= 0). */
typedef struct backup_restore_opts {
    const char *tenant;          /* NULL = "default" */
    const char *id;
    const char *backup;
    const char *cluster;
    int type;                    /* spec_backup_type_t or -1 */
    const char *to_dir;          /* physical: the new data directory (absent or empty) */
    const char *target_cluster;  /* logical: the running cluster to restore into (default:
                                    the run's cluster) */
    const char *database;        /* logical: only this database (default: all of the run) */
    bool force;                  /* logical: replace existing databases, after taking a
                                    safety backup of each */
    const char *point_in_time;   /* physical: RFC 3339 recovery target (needs WAL archive) */
} backup_restore_opts_t;

/* Restores as described. Checks every part's checksum before touching the target; a
 * corrupt artifact is DBP_ECRYPTO and nothing is restored. A logical restore into an
 * existing database without `force` is DBP_EBUSY. */
int backup_restore(backup_ctx_t *ctx, const backup_restore_opts_t *o, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* For the reconciler's Restore resources: makes the data directory of instance `target`
 * (not running, data dir absent or empty) from the newest complete physical run of
 * r->backup (or r->source_store + r->source_path: a run id or a run directory), to
 * r->point_in_time when set. The target's spec and runas are used as given. */
int backup_restore_instance(backup_ctx_t *ctx, const char *tenant, const spec_restore_t *r,
                            const engine_instance_t *target, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* What a replica bootstrap used, for its event. */
typedef struct backup_bootstrap {
    char run_id[128];   /* the run restored */
    char position[128]; /* the run's start position (PG LSN, MariaDB GTID list) */
    char catch_up[200]; /* how the replica catches up, e.g. "replays the WAL archived since" */
} backup_bootstrap_t;

/* For the reconciler's replica bootstrap (Cluster.spec.bootstrapFrom): makes the data
 * directory of replica `replica` (not running, data dir absent or empty) from the newest
 * complete and verified run of physical Backup `backup`, so that it catches up with the
 * running `primary` without a clone:
 * - PostgreSQL: plus the WAL written since (the Backup's archive and the spool not yet
 *   shipped) in the data directory's WAL directory; the replica replays that WAL and then
 *   streams from the primary. DBP_EUNSUPPORTED when the Backup does not archive WAL
 *   (pitr), DBP_EIO for an archive gap.
 * - MariaDB (engine bootstrap_check): the run's GTID position (manifest start_position)
 *   must be in the primary's history and its binary logs must still hold everything
 *   after it (checked before and after the restore); the replica then follows the
 *   primary from that GTID (gtid_slave_pos, MASTER_USE_GTID = slave_pos). DBP_ENOENT
 *   when the binary logs were purged, begin after the run (a primary cloned or
 *   bootstrapped since), or the history differs.
 * - Other engines: DBP_EUNSUPPORTED.
 * DBP_ENOENT when the Backup has no verified run. On any error nothing is left in the
 * data directory and the caller clones the primary. *out is filled as far as known. */
int backup_bootstrap_replica(backup_ctx_t *ctx, const char *tenant, const char *backup,
                             const engine_instance_t *replica, const engine_instance_t *primary,
                             backup_bootstrap_t *out, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Applies the retention of Backup `backup` (spec.retention, spec.retentionCount) to its
 * runs: deletes the selected runs' objects (manifest first) and catalog rows, and the
 * leftovers of failed runs. *deleted (may be NULL) receives the number of runs removed. */
int backup_apply_retention(backup_ctx_t *ctx, const char *tenant, const char *backup,
                           int *deleted, dbp_err_t *err) __attribute__((warn_unused_result));

/* ---- continuous archiving for point-in-time recovery (wal.c) ------------------------ */

/* True when `name` is a file name PostgreSQL archives: a WAL segment (24 hex digits), a
 * timeline history ("0000000N.history"), a ".partial" segment or a ".backup" label. */
bool backup_wal_name_valid(const char *name);

/* The WAL segment number (16 MiB segments) of an LSN "X/Y"; 0 when it does not parse. */
uint64_t backup_wal_lsn_segno(const char *lsn);

/* archive_command (`dbplane wal-push --spool SPOOL [--queue-max BYTES] %p %f`, run by
 * the server as the service user): copies the file at `src` into directory `spool` as
 * `name` (temp file, fsync, rename, fsync of the directory). A file of that name already
 * in the spool is success when identical (the server retries after a crash), DBP_EBUSY
 * otherwise. With queue_max > 0 (bytes, the Backup's archiveQueueMax), a file that would
 * take the spool's WAL files past queue_max is not copied (segments only; a timeline
 * history file is always kept): its name is appended to
 * "<spool>/" BACKUP_WAL_DROPPED (reported by the next wal-ship as a WalArchiveQueueFull
 * event), *dropped is set and 0 is returned, so the server recycles the segment instead
 * of keeping it until the disk is full (pgBackRest's archive-push-queue-max). DBP_EINVAL
 * for a name that is not a WAL file's, DBP_EIO for file errors. Needs no store and no
 * secret. */
#define BACKUP_WAL_DROPPED ".dropped"
int backup_wal_push(const char *spool, const char *src, const char *name, uint64_t queue_max,
                    bool *dropped, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* restore_command (`dbplane wal-fetch --from DIR %f %p`, run by a recovering server):
 * copies DIR/name to `dest`. DBP_ENOENT when the archive has no such file (the server
 * then ends recovery or asks for the next timeline). */
int backup_wal_fetch(const char *from, const char *name, const char *dest, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Ships the spool of `cluster` (see wal.c) into the store of the cluster's pitr Backup
 * under "[prefix/]<tenant>/<cluster>/wal/", compressed and encrypted like its backups,
 * deleting each file from the spool once stored; records a WalArchiveGap event when the
 * segment numbers skip. *shipped (may be NULL) receives the number of files shipped.
 * DBP_EINVAL when no Backup of the cluster has pitr; the store's errors otherwise (the
 * files stay in the spool for the next attempt). */
int backup_wal_ship(backup_ctx_t *ctx, const char *tenant, const char *cluster, int *shipped,
                    dbp_err_t *err) __attribute__((warn_unused_result));

/* The WAL archive of one pitr Backup, as `dbplane backups` shows it. Views valid during
 * the callback. */
typedef struct backup_wal_state {
    const char *tenant;
    const char *cluster;
    const char *backup;
    const char *archive;   /* "wal" (PostgreSQL) or "binlog" (MariaDB) */
    char last_shipped[64]; /* wal: newest segment stored in the archive; "" none yet */
    int spooled;           /* wal: files handed over by the server, not shipped yet */
    unsigned long long binlog_end_seq; /* binlog: GTID sequence number the archive ends
                                        * at (domain 0); 0 none yet */
    char binlog_open[64];  /* binlog: the primary's open log, archived once closed */
    long long binlog_open_since_s; /* binlog: unix s that log was first seen; 0 unknown */
} backup_wal_state_t;
typedef int (*backup_wal_status_fn)(const backup_wal_state_t *st, void *ud);

/* Calls cb for each Backup with pitr of `tenant` (NULL: every tenant). A non-zero return
 * from cb stops the walk and is returned. */
int backup_wal_status(backup_ctx_t *ctx, const char *tenant, backup_wal_status_fn cb, void *ud);

#endif
