/*
 * backup_int.h: what run.c, restore.c and wal.c share inside the backup module: the
 * context's layout and the helpers that resolve resources (clusters, stores, secrets,
 * instances) from the store. Not for use outside src/backup/.
 */
#ifndef DBP_BACKUP_BACKUP_INT_H
#define DBP_BACKUP_BACKUP_INT_H

#include <limits.h>

#include "backup/backup.h"
#include "backup/manifest.h"
#include "backup/objstore.h"
#include "backup/stream.h"
#include "common/proc.h"
#include "secrets/secrets.h"

#define BK_MAX_INSTANCES 16

struct backup_ctx {
    char data_dir[PATH_MAX];  /* absolute */
    char run_dir[128];        /* short runtime dir (unix sockets) */
    dbp_runas_t runas;
    store_t *store;
    secrets_t *secrets;
    spec_set_t set;           /* every stored resource, parsed */
    volatile sig_atomic_t *cancel;
    backup_progress_fn progress;
    void *progress_ud;
    int64_t progress_ms;      /* monotonic ms of the last progress report */
    /* Internal credentials (Secret "dbplane-internal-<cluster>": admin, replication) of
     * the clusters whose instances this context described, for engines that log in with
     * them (Redis). Owned (secrets_free_value on close); instances borrow them. */
    struct bk_creds {
        char tenant[64], cluster[64];
        char *admin, *repl;
    } creds[8];
    int ncreds;
};

/* Finds a resource of the context's set; NULL when absent. */
const spec_resource_t *bk_find(backup_ctx_t *ctx, spec_kind_t kind, const char *tenant,
                               const char *name);

/* Reads a Secret's value: owned *value (secrets_free_value). */
int bk_secret(backup_ctx_t *ctx, const char *tenant, const spec_secret_ref_t *ref, char **value,
              dbp_err_t *err) __attribute__((warn_unused_result));

/* Opens BackupStore `name` of tenant. Relative posix paths are taken relative to the data
 * dir. */
int bk_open_store(backup_ctx_t *ctx, const char *tenant, const char *name, backup_store_t **out,
                  dbp_err_t *err) __attribute__((warn_unused_result));

/* Lists the instances of a cluster (up to BK_MAX_INSTANCES, ordinal order) and the
 * topology's primary name. */
int bk_instances(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                 store_instance_t *recs, int *n, char primary[96], dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Describes instance `rec` of cluster resource `c` the way the reconciler lays it out,
 * with the cluster's internal credentials (borrowed from the context; NULL when the
 * cluster has none stored). */
void bk_fill_instance(backup_ctx_t *ctx, const spec_resource_t *c, const store_instance_t *rec,
                      engine_instance_t *in);

/* Points in->admin_password / in->repl_password at the internal credentials of
 * cluster `cluster` of `tenant` (read once per context; NULL when absent). */
void bk_instance_creds(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                       engine_instance_t *in);

/* The running primary of a cluster as an engine instance. DBP_EBUSY when none runs. */
int bk_primary(backup_ctx_t *ctx, const spec_resource_t *c, engine_instance_t *in,
               dbp_err_t *err) __attribute__((warn_unused_result));

/* Reads and parses "<dir>/manifest.json". DBP_ENOENT when there is none (an incomplete
 * run), DBP_EINVAL for a bad one. */
int bk_load_manifest(backup_store_t *s, const char *dir, backup_manifest_t *m, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reports progress through the context's callback, rate-limited unless `force`. */
void bk_progress(backup_ctx_t *ctx, const char *phase, int64_t raw, int64_t stored, bool force);

/* True when the cancel flag is up. */
bool bk_cancelled(const backup_ctx_t *ctx);

/* Records an event for kind "Backup" (or "Restore") and logs it. */
void bk_event(backup_ctx_t *ctx, const char *tenant, const char *kind, const char *name,
              const char *type, const char *reason, const char *msg);

/* The encryption secret of a Backup (NULL value when it has none). */
int bk_backup_key(backup_ctx_t *ctx, const spec_resource_t *b, char **key, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Takes a logical backup of every database of cluster `c` into store `store_name` (the
 * safety backup before an in-place restore), as a run of Backup `backup` when that is a
 * Backup of `c` (its encryption applies), else ad hoc. */
int bk_safety_backup(backup_ctx_t *ctx, const spec_resource_t *c, const char *backup,
                     const char *store_name, store_backup_t *out, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Deletes the archived WAL of pitr Backup `b` that no point-in-time restore can use any
 * more: segments before the one holding `anchor_lsn`, the start of the oldest complete
 * base backup kept (timeline histories are always kept). *deleted (may be NULL) gets the
 * count. A NULL or unparsable anchor deletes nothing. */
int bk_wal_expire(backup_ctx_t *ctx, const spec_resource_t *b, backup_store_t *bs,
                  const char *anchor_lsn, int *deleted, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Checks an RFC 3339 point in time and writes it as PostgreSQL's recovery_target_time
 * ("YYYY-MM-DD HH:MM:SS[.ffffff]+00") into out; *ms receives it in unix ms. */
int bk_pitr_target(const char *rfc3339, char *out, size_t cap, int64_t *ms, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Decodes the archived WAL a point-in-time recovery from run m (stored at run_path in
 * bs) needs into directory `dir` (made by the caller, owned by the service user): every
 * timeline history and the segments from the run's start on, up to the first gap; `key`
 * is the Backup's encryption secret or NULL. A gap is described in note (else ""). */
int bk_wal_prefetch(backup_ctx_t *ctx, backup_store_t *bs, const char *run_path,
                    const backup_manifest_t *m, const char *key, const char *dir, char *note,
                    size_t note_cap, dbp_err_t *err) __attribute__((warn_unused_result));

/* Copies the WAL segments and timeline histories in the spool of `cluster` (handed over
 * by its server, not yet shipped) from run m's start on into `dir`, owned by the service
 * user. */
int bk_wal_copy_spool(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                      const backup_manifest_t *m, const char *dir, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* ---- the archive's shared pieces (wal.c), and MariaDB binary logs (binlog.c) ---------- */

/* Compresses (and encrypts, per co) the local file at `path` into a new object `key` of
 * bs; *st (may be NULL) gets the sizes and the SHA-256 of the stored bytes. DBP_ENOENT
 * (err untouched) when the file is gone. Borrows everything. */
int bk_archive_put_file(backup_store_t *bs, const char *path, const char *key,
                        const backup_codec_opts_t *co, backup_part_stat_t *st, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Decodes object `okey` of bs (co: codec, key, expected SHA-256 of the stored bytes) into
 * the file `dest`, chowned to ra when ra->drop. On error `dest` is removed. */
int bk_archive_get_file(backup_store_t *bs, const char *okey, const backup_codec_opts_t *co,
                        const char *dest, const dbp_runas_t *ra, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Ships the closed binary logs of the primary of cluster c (an engine with binlog_list)
 * to the store of pitr Backup b, each with its JSON index, closing the current log
 * first when it is older than BK_BINLOG_ARCHIVE_INTERVAL_S. *shipped (may be NULL)
 * counts the logs stored. A jump in GTID sequence numbers raises a WalArchiveGap event. */
/* Reads the binlog archive's shipping state of cluster (tenant) into st's binlog_* fields
 * (left zero when nothing was shipped yet). */
void bk_binlog_status(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                      backup_wal_state_t *st);
int bk_binlog_ship(backup_ctx_t *ctx, const spec_resource_t *c, const spec_resource_t *b,
                   int *shipped, dbp_err_t *err) __attribute__((warn_unused_result));

/* Deletes the archived binary logs of Backup b whose transactions are all in the run at
 * GTID `anchor_gtid` (the oldest complete physical run kept). *deleted (may be NULL). */
int bk_binlog_expire(backup_ctx_t *ctx, const spec_resource_t *b, backup_store_t *bs,
                     const char *anchor_gtid, int *deleted, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Replays into the restored data directory of `in` (run m, stored at run_path of bs) the
 * archived binary logs after the run's GTID up to `target_ms` (unix ms): fetches and
 * checks them, starts a temporary server on the data directory, pipes them through the
 * engine's binlog_replay and stops the server. A gap before the target is an error
 * (DBP_ENOENT, and a WalArchiveGap event); a target past the end of the archive is
 * described in note. `key`: the Backup's secret or NULL. */
int bk_binlog_restore(backup_ctx_t *ctx, backup_store_t *bs, const char *run_path,
                      const backup_manifest_t *m, const char *key, const engine_instance_t *in,
                      int64_t target_ms, char *note, size_t note_cap, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Called by bk_with_server with the engine and the running temporary server. */
typedef int (*bk_server_fn)(const engine_ops_t *ops, const engine_instance_t *in, void *ud,
                            dbp_err_t *err);

/* Starts a temporary server of run m's cluster (a scratch port and socket, the cluster's
 * spec) on the existing data directory `data_dir`, waits until it accepts writes, calls
 * fn, and stops it cleanly (restore.c). The data directory is kept. */
int bk_with_server(backup_ctx_t *ctx, const backup_manifest_t *m, const char *data_dir,
                   bk_server_fn fn, void *ud, dbp_err_t *err) __attribute__((warn_unused_result));

#endif
