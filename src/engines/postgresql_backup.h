/*
 * postgresql_backup.h: the backup and restore operations of the PostgreSQL driver
 * (engine.h's optional backup_* / restore_* / inventory operations), implemented in
 * postgresql_backup.c with the server's own tools (pg_basebackup, pg_dump, pg_dumpall,
 * pg_restore, psql) and GNU tar, streamed through pipes (common/pipe.h). postgresql.c
 * sets them in engine_postgresql; nothing else should call them directly.
 *
 * Accounts: physical backups run as the service OS user, which peer authentication maps
 * to dbplane_replicator (a REPLICATION role); logical backups, restores and inventories
 * run as dbplane's own OS user, mapped to dbplane_admin. No password is involved.
 */
#ifndef DBP_ENGINES_POSTGRESQL_BACKUP_H
#define DBP_ENGINES_POSTGRESQL_BACKUP_H

#include "engines/engine.h"

/* See engine_ops_t.backup_physical: pg_basebackup -D - -Ft -X fetch -c fast. */
int pg_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                       engine_write_fn write, void *ud, dbp_err_t *err);

/* See engine_ops_t.backup_logical: pg_dump -Fc -Z0 DATABASE, or pg_dumpall --globals-only. */
int pg_backup_logical(const engine_instance_t *in, const char *database,
                      engine_backup_info_t *info, engine_write_fn write, void *ud,
                      dbp_err_t *err);

/* See engine_ops_t.restore_physical: tar -x into a new data dir, run as the service user. */
int pg_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                        engine_read_fn read, void *ud, dbp_err_t *err);

/* See engine_ops_t.restore_logical: pg_restore (--create / --clean --if-exists), or psql
 * for the globals script. */
int pg_restore_logical(const engine_instance_t *in, const char *database,
                       const engine_restore_opts_t *opts, engine_read_fn read, void *ud,
                       dbp_err_t *err);

/* Once a restored server has ended recovery (no recovery.signal), removes what the
 * restore added for it: the fetched WAL (ENGINE_WAL_RESTORE_DIR) and the restore block of
 * postgresql.auto.conf (recovery target, restore_command, paused archiving). Called by
 * render_config before every start and reload. Returns 1 when it changed something, 0
 * when there was nothing to remove, or a negative DBP_E* code. */
int pg_recovery_cleanup(const engine_instance_t *in, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* See engine_ops_t.inventory. */
int pg_inventory(const engine_instance_t *in, engine_inv_depth_t depth,
                 engine_inventory_t *out, dbp_err_t *err);

#endif
