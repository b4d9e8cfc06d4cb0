/*
 * mariadb_int.h: what the MariaDB driver's files share (mariadb.c: installation,
 * configuration, replication, probe and promote; mariadb_sql.c: connections, accounts,
 * databases, grants and SqlJob; mariadb_backup.c: backups, restores and inventories;
 * mariadb_gtid.h: the GTID parser, which backup/binlog.c shares); not for other modules,
 * which use the driver through engine.h only.
 */
#ifndef DBP_ENGINES_MARIADB_INT_H
#define DBP_ENGINES_MARIADB_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "common/strbuf.h"
#include "engines/engine.h"
#include "engines/mariadb_gtid.h"

/* Debian's mariadb-server, mariadb-client and mariadb-backup packages. */
#define MDB_SERVER "/usr/sbin/mariadbd"
#define MDB_INSTALL_DB "/usr/bin/mariadb-install-db"
#define MDB_BACKUP "/usr/bin/mariadb-backup"
#define MDB_MBSTREAM "/usr/bin/mbstream"
#define MDB_CLIENT "/usr/bin/mariadb"
#define MDB_BINLOG_TOOL "/usr/bin/mariadb-binlog"
#define MDB_BASH "/bin/bash"

#define MDB_REPL_USER "dbplane_repl"
#define MDB_MONITOR_USER "dbplane_monitor"
#define MDB_INIT_MARKER ".initialized"
#define MDB_CNF "my.cnf"
#define MDB_SOCK "mysqld.sock"
#define MDB_HASH_LEN 41 /* '*' + 40 upper-case hex digits */

/* ---- statement building (small enough to inline in each file) ---------------------- */

/* Appends s as a quoted SQL string literal, escaped for the connection's charset. */
static inline void sb_lit(dbp_sb_t *sb, MYSQL *m, const char *s)
{
    size_t n = strlen(s);
    char *tmp = malloc(2 * n + 1);
    if (!tmp) {
        sb->failed = true;
        return;
    }
    mysql_real_escape_string(m, tmp, s, (unsigned long)n);
    dbp_sb_printf(sb, "'%s'", tmp);
    explicit_bzero(tmp, 2 * n + 1);
    free(tmp);
}

/* DBP_ENOMEM (with err filled) when building the statement ran out of memory, else 0. */
static inline int sb_check(const dbp_sb_t *sb, dbp_err_t *err)
{
    return sb->failed ? dbp_err_set(err, DBP_ENOMEM, "out of memory building a statement") : 0;
}

/* ---- paths and connections (mariadb_sql.c) ----------------------------------------- */

/* The instance's unix socket path, <sock_dir>/mysqld.sock, into buf. */
void mdb_sock(const engine_instance_t *in, char *buf, size_t len);

/* The instance's option file path, <instance dir>/my.cnf, into buf. */
void mdb_cnf(const engine_instance_t *in, char *buf, size_t len);

/* Opens a connection: over `sock` when given, else TCP to host:port. `pw` may be NULL
 * (unix_socket). The login must complete within `connect_ms`; each later read or write
 * within `rw_s` seconds. Returns an owned connection (mysql_close), or NULL with err
 * filled on time-out or refusal. */
MYSQL *mdb_open(const char *what, const char *sock, const char *host, int port, const char *user,
                const char *pw, const char *db, int connect_ms, unsigned rw_s, unsigned long flags,
                dbp_err_t *err);

/* The probe time-out of an instance in ms (engine_instance_t.probe_timeout_ms). */
int mdb_probe_ms(const engine_instance_t *in);

/* dbplane's admin connection to an instance: the daemon's OS account over the socket
 * (unix_socket, no password). `quick` (probes) bounds every read by the probe time-out;
 * otherwise a statement may take a minute. Owned (mysql_close), or NULL with err. */
MYSQL *mdb_connect(const engine_instance_t *in, bool quick, dbp_err_t *err);

/* Runs one statement, discarding any result; 0 or DBP_EENGINE. A server message that
 * quotes `secret` (may be NULL) is withheld from err. */
int mdb_cmd_secret(MYSQL *m, const char *sql, const char *secret, dbp_err_t *err);

/* mdb_cmd_secret without a secret. */
int mdb_cmd(MYSQL *m, const char *sql, dbp_err_t *err);

/* Runs a statement that returns rows; the result is owned (mysql_free_result), or NULL
 * with err filled. */
MYSQL_RES *mdb_query(MYSQL *m, const char *sql, dbp_err_t *err);

/* Value of column `name` in row, or NULL (SQL NULL, or no such column); a view into the
 * result, valid until it is freed. */
const char *mdb_col(MYSQL_RES *r, MYSQL_ROW row, const char *name);

/* Runs a one-row, one-column query into buf (NULL reads as ""); DBP_EENGINE when the
 * query fails or returns no row. */
int mdb_scalar(MYSQL *m, const char *sql, char *buf, size_t len, dbp_err_t *err);

/* ---- rolling changes (mariadb_restart.c) ------------------------------------------- */

/* engine_ops_t.needs_restart: 1 with the names of the read-only system variables whose
 * running value is not what my.cnf now sets (written after the server started), 0 when
 * the server runs its option file, DBP_E* when it cannot be asked. */
int mdb_needs_restart(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err);

/* One row of SHOW SLAVE STATUS (the default connection). */
typedef struct mdb_slave {
    bool configured;      /* a master is set */
    char host[64];        /* Master_Host */
    int port;             /* Master_Port */
    char user[96];        /* Master_User */
    char using_gtid[16];  /* "No", "Slave_Pos", "Current_Pos" */
    char io[16], sql[16]; /* Slave_IO_Running ("Yes", "No", "Connecting"), Slave_SQL_Running */
    int64_t behind_s;     /* Seconds_Behind_Master; -1 when NULL */
    unsigned io_errno, sql_errno;
    char io_error[200], sql_error[200];
    char master_file[128]; /* Relay_Master_Log_File: the primary's binlog being applied */
    uint64_t exec_pos;     /* Exec_Master_Log_Pos in it, bytes */
    char read_file[128];   /* Master_Log_File: the primary's binlog being received */
    uint64_t read_pos;     /* Read_Master_Log_Pos in it, bytes */
} mdb_slave_t;

/* Reads SHOW SLAVE STATUS into *s (configured = false when no master is set). */
int mdb_slave_status(MYSQL *m, mdb_slave_t *s, dbp_err_t *err);

/* True for the accounts dbplane and the server own (root, mariadb.sys, dbplane_repl,
 * dbplane_monitor, the service and daemon OS users): a User may not take them over, and
 * logical backups leave them out. */
bool mdb_reserved_user(const engine_instance_t *in, const char *u);

/* The GTID list a mariadb-backup data dir was taken at (its xtrabackup_binlog_info) into
 * buf ("" when the file has none), the file's path into `path`. False when the file is
 * absent (no backup, or its position was already used); mariadb.c. */
bool mdb_backup_gtid(const engine_instance_t *in, char *buf, size_t len, char *path, size_t plen);

/* Writes the marker of an initialised instance (<instance dir>/.initialized); mariadb.c. */
int mdb_mark_initialized(const engine_instance_t *in, dbp_err_t *err);

/* ---- engine operations (see engine_ops_t for their contracts) ----------------------- */

/* mariadb_sql.c */
int mdb_ensure_internal(const engine_instance_t *primary, const engine_instance_t *replicas,
                        int nreplicas, dbp_err_t *err);
int mdb_ensure_user(const engine_instance_t *primary, const spec_user_t *user, const char *password,
                    dbp_err_t *err);
int mdb_ensure_database(const engine_instance_t *primary, const spec_database_t *db,
                        dbp_err_t *err);
int mdb_ensure_grant(const engine_instance_t *primary, const spec_grant_t *g, dbp_err_t *err);
int mdb_drop_user(const engine_instance_t *primary, const char *username, dbp_err_t *err);
int mdb_run_sql(const engine_instance_t *primary, const char *database, const char *username,
                const char *password, const char *sql, dbp_err_t *err);

/* mariadb_backup.c */
int mdb_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                        engine_write_fn write, void *ud, dbp_err_t *err);
int mdb_backup_logical(const engine_instance_t *in, const char *database,
                       engine_backup_info_t *info, engine_write_fn write, void *ud, dbp_err_t *err);
int mdb_bootstrap_check(const engine_instance_t *primary, const engine_instance_t *replica,
                        const char *position, dbp_err_t *err);
int mdb_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                         engine_read_fn read, void *ud, dbp_err_t *err);
int mdb_restore_logical(const engine_instance_t *in, const char *database,
                        const engine_restore_opts_t *opts, engine_read_fn read, void *ud,
                        dbp_err_t *err);
int mdb_binlog_list(const engine_instance_t *primary, bool flush, engine_binlog_t *out, int max,
                    int *n, dbp_err_t *err);
int mdb_binlog_index(const engine_instance_t *in, const char *path, engine_binlog_index_t *out,
                     dbp_err_t *err);
int mdb_binlog_replay(const engine_instance_t *in, const char *const *paths, int n,
                      const char *start, int64_t stop_time, dbp_err_t *err);
int mdb_inventory(const engine_instance_t *in, engine_inv_depth_t depth,
                  engine_inventory_t *out, dbp_err_t *err);

#endif
