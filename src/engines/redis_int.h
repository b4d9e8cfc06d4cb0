/*
 * redis_int.h: what the Redis driver's files share (redis.c: configuration, ACLs,
 * probe, promote and the ops table; redis_backup.c: RDB backups, restores and
 * inventories); not for other modules, which use the driver through engine.h only.
 */
#ifndef DBP_ENGINES_REDIS_INT_H
#define DBP_ENGINES_REDIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "engines/engine.h"

#define RD_SERVER_BIN "/usr/bin/redis-server"
#define RD_CHECK_RDB_BIN "/usr/bin/redis-check-rdb"
#define RD_ADMIN_USER "dbplane-admin"
#define RD_REPL_USER "dbplane-repl"
#define RD_CONF "redis.conf"
/* A hard link to the redis.conf the running server was started from, kept when a changed
 * file replaces it (redis_restart.c: directives removed from the spec). */
#define RD_CONF_RUNNING "redis.conf.running"
#define RD_ACLFILE "users.acl"
#define RD_SOCK "redis.sock"
#define RD_INIT_MARKER ".dbplane-initialized"

/* ---- connections (redis.c) ---------------------------------------------------------- */

/* Connects to the instance's unix socket and authenticates as dbplane-admin with
 * in->admin_password; every later read or write is bounded by `timeout_ms`. Returns the
 * context (free with redisFree) or NULL with err filled; *refused (may be NULL) tells a
 * server that is not listening apart from one that answered and failed. */
redisContext *rd_connect(const engine_instance_t *in, int timeout_ms, bool *refused,
                         dbp_err_t *err);

/* Runs one command given as a NULL-terminated list of strings. Returns the reply (free
 * with freeReplyObject) or NULL with err filled, both on a broken connection and on an
 * error reply. Never puts arguments in err. */
redisReply *rd_cmd(redisContext *c, dbp_err_t *err, ...) __attribute__((sentinel));

/* Copies the value of `key` from INFO text ("key:value\r\n" lines) into buf; false when
 * absent. */
bool rd_info(const char *info, const char *key, char *buf, size_t len);

/* An INFO value as a number, `dflt` when absent. */
int64_t rd_info_i64(const char *info, const char *key, int64_t dflt);

/* The reply of INFO (all default sections) as an owned string (free with free()), or
 * NULL with err filled. */
char *rd_info_all(redisContext *c, dbp_err_t *err);

/* ---- rolling changes (redis_restart.c) --------------------------------------------- */

/* engine_ops_t.needs_restart: 1 with the names of the directives whose running value is
 * not what redis.conf (written after the server started) says and that CONFIG SET cannot
 * change (immutable), 0 when the server runs its file, DBP_E* when it cannot be asked. */
int rd_needs_restart(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err);

/* Called by render_config on a reachable server just before a changed redis.conf replaces
 * the old one: when the server was started from the old file (it is older than the
 * server's start), keeps it as RD_CONF_RUNNING (a hard link, same mtime) so that
 * needs_restart can see which directives the new file drops. Leaves an existing
 * RD_CONF_RUNNING alone when the server already runs an older file. Failures are logged,
 * never fatal: the only loss is that a removed directive is not detected. */
void rd_keep_running_conf(redisContext *c, const engine_instance_t *in);

/* ---- sync mode (redis_sync.c) ------------------------------------------------------ */

/* repl-timeout in seconds for the Cluster spec: (failcount - 1) x failover interval,
 * rounded up, 2 .. 60; also min-replicas-max-lag in sync mode. */
int64_t rd_repl_timeout_s(const spec_cluster_t *c);

/* On the running primary `in`: min-replicas-to-write 1 (and min-replicas-max-lag =
 * rd_repl_timeout_s) in sync mode while a replica is online, 0 otherwise (non-strict);
 * left alone when spec.config sets either. Best effort: failures are logged. */
void rd_sync_writes(const engine_instance_t *in);

/* ---- backups (redis_backup.c; see engine_ops_t for the contracts) ------------------ */

/* Reads a full-resync reply from `fd` (the raw socket after `PSYNC ? -1` was sent):
 * keepalive newlines, `+FULLRESYNC <replid> <offset>` (into info->timeline and
 * info->start_position), then the RDB announced as `$<length>` or `$EOF:<40-byte mark>`,
 * streamed into `write` 256 KiB at a time (the mark itself is not written). Returns 0,
 * DBP_EENGINE for an error reply (its text in err), DBP_EIO for a protocol violation, a
 * closed connection or 120 s without data, or write's error. Never writes past the RDB. */
int rdb_read_transfer(int fd, engine_backup_info_t *info, engine_write_fn write, void *ud,
                      dbp_err_t *err);

int rdb_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                        engine_write_fn write, void *ud, dbp_err_t *err);
int rdb_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                         engine_read_fn read, void *ud, dbp_err_t *err);
int rdb_inventory(const engine_instance_t *in, engine_inv_depth_t depth,
                  engine_inventory_t *out, dbp_err_t *err);

/* Where the hand-over of a restored RDB stands (rdb_restore_pending). */
typedef enum rdb_restore_state {
    RDB_RESTORE_NONE = 0,    /* no restored RDB pending: render the declared appendonly */
    RDB_RESTORE_FIRST_START, /* not started or still loading: render `appendonly no` */
    RDB_RESTORE_TO_AOF,      /* loaded; dbplane turned AOF on and the rewrite runs: leave
                                appendonly out of the rendered config (no CONFIG SET may
                                turn it off again) */
} rdb_restore_state_t;

/* The hand-over of a data dir restored from an RDB (marker .dbplane-restored-rdb) to
 * the cluster's AOF, moved on by each call (render_config calls it every pass): while the
 * server is not running or still loading, FIRST_START; once it has loaded the RDB and
 * `want_aof` (the class persists with AOF), CONFIG SET appendonly yes (Redis rewrites the
 * AOF from memory) and TO_AOF until that rewrite has succeeded; then the marker is removed
 * and NONE. Without `want_aof` the marker is removed at once. Errors only delay the
 * hand-over (logged). */
rdb_restore_state_t rdb_restore_pending(const engine_instance_t *in, bool want_aof);

#endif
