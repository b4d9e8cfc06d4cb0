/*
 * postgresql_backup.c: backups and restores of PostgreSQL servers (postgresql_backup.h).
 *
 * Every operation is a stream through a pipe, never a file: a physical backup is the tar
 * stream of `pg_basebackup -D - -Ft -X fetch` (the data directory plus the WAL needed to
 * make it consistent, and pg_basebackup's own backup_manifest), read from the tool's
 * stdout and handed to the caller's write callback; a logical backup is `pg_dump -Fc`
 * with zlib level 1 inside the archive and a 1 MiB stdout buffer (the backup pipeline
 * compresses the archive again with its codec; see pgb_dump_level and pgb_stdbuf), or
 * `pg_dumpall --globals-only`
 * for roles. Restores run the reverse: GNU tar extracting a physical stream into a new
 * data directory as the unprivileged service user (so a hostile archive cannot write
 * where that user cannot), or pg_restore / psql fed through stdin.
 *
 * A physical restore leaves a data directory that PostgreSQL brings to consistency by
 * crash recovery from backup_label and the fetched WAL; for point-in-time recovery a
 * recovery.signal and the recovery settings (restore_command, recovery_target_time,
 * recovery_target_action=promote) are written to postgresql.auto.conf, which
 * render_config does not touch.
 */
#include "engines/postgresql_backup.h"
#include "engines/postgresql_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "common/pipe.h"

#define PGB_ADMIN_ROLE "dbplane_admin"
#define PGB_REPL_ROLE "dbplane_replicator"
#define PGB_INIT_MARKER ".initialized"
#define PGB_TAR "/usr/bin/tar"
#define PGB_TOOL_TIMEOUT_MS (6 * 3600 * 1000)


/* The account dbplane itself runs as: tools that log in as dbplane_admin run as it. */
static void pgb_self(const engine_instance_t *in, dbp_runas_t *out)
{
    *out = *in->runas;
    out->drop = false;
}



/* Fills info->version and info->start_position (current LSN, or replay LSN on a standby). */
static int pgb_source_info(const engine_instance_t *in, engine_backup_info_t *info,
                           dbp_err_t *err)
{
    PGconn *c = engine_pg_connect(in, "postgres", err);
    if (!c)
        return DBP_EENGINE;
    PGresult *r = engine_pg_exec(c,
                            "SELECT current_setting('server_version'),"
                            " CASE WHEN pg_is_in_recovery()"
                            "  THEN COALESCE(pg_last_wal_replay_lsn(), '0/0')::text"
                            "  ELSE pg_current_wal_lsn()::text END",
                            0, NULL, err);
    if (!r) {
        PQfinish(c);
        return DBP_EENGINE;
    }
    snprintf(info->version, sizeof(info->version), "%s", PQgetvalue(r, 0, 0));
    snprintf(info->start_position, sizeof(info->start_position), "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    PQfinish(c);
    return 0;
}

/* Size of a file, 0 when absent (to find the log lines a tool wrote in this run). */
/* Scans the tool log from byte `from` for pg_basebackup -v's start/end point lines. */
static void pgb_parse_points(const char *log, long from, engine_backup_info_t *info)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    if (fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        const char *p;
        char lsn[64], tli[16];
        if ((p = strstr(line, "write-ahead log start point: ")) &&
            sscanf(p + 29, "%63s on timeline %15s", lsn, tli) == 2) {
            snprintf(info->start_position, sizeof(info->start_position), "%s", lsn);
            snprintf(info->timeline, sizeof(info->timeline), "%s", tli);
        } else if ((p = strstr(line, "write-ahead log end point: ")) &&
                   sscanf(p + 27, "%63s", lsn) == 1) {
            snprintf(info->end_position, sizeof(info->end_position), "%s", lsn);
        }
    }
    fclose(f);
}

int pg_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                       engine_write_fn write, void *ud, dbp_err_t *err)
{
    memset(info, 0, sizeof(*info));
    int rc = pgb_source_info(in, info, err);
    if (rc)
        return rc;
    char tool[PATH_MAX], port[16];
    engine_pg_tool(in, "pg_basebackup", tool, sizeof(tool));
    snprintf(port, sizeof(port), "%d", in->port);
    /* -X stream cannot write to stdout; -X fetch adds the WAL of the backup window to the
     * tar, which the source keeps for the duration of the backup. */
    char *argv[] = {tool,   "-D",   "-",          "-F",           "t",
                    "-X",   "fetch", "-h",        (char *)in->sock_dir,
                    "-p",   port,   "-U",         PGB_REPL_ROLE,  "-c",
                    "fast", "-v",   "--no-password", NULL};
    long from = dbp_file_size(in->tool_log_path);
    dbp_pipe_t p;
    rc = dbp_pipe_spawn(argv, NULL, in->runas, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &p,
                        err);
    if (rc)
        return rc;
    rc = dbp_pipe_pump_out(&p, write, ud, PGB_TOOL_TIMEOUT_MS, err);
    if (rc) {
        dbp_err_prefix(err, "pg_basebackup from %s: ", in->name);
        return rc;
    }
    pgb_parse_points(in->tool_log_path, from, info);
    return 0;
}

/* The compression level pg_dump applies inside its custom-format archive (zlib; the
 * archive stays readable by pg_restore whatever the level): 1 by default, so the table
 * data leaves pg_dump compressed and the pipe to dbplane carries a fraction of the
 * bytes. Level 0 (raw archive, zstd in dbplane only) was measured again with pgb_stdbuf
 * (2026-11-23, docs/benchmarks.md): zstd saves pg_dump's zlib CPU, but moving the 1 GB
 * raw archive of pgbench -s 100 through the pipe costs as much system time in pg_dump
 * and dbplane, so the total client CPU was the same (~3.5 s) and the wall time no
 * better on 2 cores. The backup pipeline still compresses the archive with its own
 * codec on top. The environment variable DBPLANE_PG_DUMP_LEVEL (0-9) overrides it:
 * 0 = raw table data, compressed by the pipeline alone (smallest artifact with zstd). */
static const char *pgb_dump_level(void)
{
    const char *v = getenv("DBPLANE_PG_DUMP_LEVEL");
    if (v && v[0] >= '0' && v[0] <= '9' && v[1] == '\0')
        return v;
    return "1";
}

/* coreutils' stdbuf, which runs a command with the stdio buffer of its stdout set to a
 * given size (an LD_PRELOAD'ed setvbuf before main). pg_dump writes its archive through
 * stdio, whose buffer for a pipe is st_blksize = 4 KiB: at -Z0 (a custom-format chunk
 * per row) that is ~250,000 write(2)s per GB into the pipe, each waking dbplane's
 * reader; with 1 MiB, ~1,000 (at the default level 1, ~7,000 per 28 MB archive
 * against ~30). NULL when not installed (pg_dump then runs as is, only
 * slower). */
#define PGB_STDBUF "/usr/bin/stdbuf"
static const char *pgb_stdbuf(void)
{
    return access(PGB_STDBUF, X_OK) == 0 ? PGB_STDBUF : NULL;
}

int pg_backup_logical(const engine_instance_t *in, const char *database,
                      engine_backup_info_t *info, engine_write_fn write, void *ud,
                      dbp_err_t *err)
{
    /* The source's version and LSN once per run: the parts of a run share `info`
     * (run.c), and the position taken before the first part bounds them all. */
    int rc = 0;
    if (!info->start_position[0]) {
        memset(info, 0, sizeof(*info));
        rc = pgb_source_info(in, info, err);
    }
    if (rc)
        return rc;
    char tool[PATH_MAX], port[16];
    snprintf(port, sizeof(port), "%d", in->port);
    dbp_runas_t self;
    pgb_self(in, &self);
    dbp_pipe_t p;
    if (database) {
        engine_pg_tool(in, "pg_dump", tool, sizeof(tool));
        const char *sb = pgb_stdbuf();
        char *argv[] = {(char *)sb, "-o", "1M", tool, "-F", "c", "-Z", (char *)pgb_dump_level(),
                        "-h", (char *)in->sock_dir, "-p", port, "-U", PGB_ADMIN_ROLE,
                        "-d", (char *)database, "--no-password", NULL};
        rc = dbp_pipe_spawn(sb ? argv : argv + 3, NULL, &self, in->tool_log_path, NULL,
                            DBP_PIPE_FROM_CHILD, &p, err);
    } else {
        engine_pg_tool(in, "pg_dumpall", tool, sizeof(tool));
        char *argv[] = {tool, "--globals-only", "-h", (char *)in->sock_dir, "-p", port,
                        "-U", PGB_ADMIN_ROLE, "-l", "postgres", "--no-password", NULL};
        rc = dbp_pipe_spawn(argv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &p,
                            err);
    }
    if (rc)
        return rc;
    rc = dbp_pipe_pump_out(&p, write, ud, PGB_TOOL_TIMEOUT_MS, err);
    if (rc)
        dbp_err_prefix(err, "%s of %s on %s: ", database ? "pg_dump" : "pg_dumpall",
                       database ? database : "globals", in->name);
    return rc;
}

/* Quotes a postgresql.conf value (single quotes doubled, newlines dropped) into buf. */
static void pgb_conf_quote(const char *v, char *buf, size_t len)
{
    size_t o = 0;
    if (len < 3) {
        buf[0] = '\0';
        return;
    }
    buf[o++] = '\'';
    for (const char *s = v; *s && o + 3 < len; s++) {
        if (*s == '\n' || *s == '\r')
            continue;
        if (*s == '\'')
            buf[o++] = '\'';
        buf[o++] = *s;
    }
    buf[o++] = '\'';
    buf[o] = '\0';
}

/* The first line of the block a restore appends to postgresql.auto.conf; everything from
 * it to the end of the file is removed by pg_recovery_cleanup once recovery has ended. */
#define PGB_RESTORE_MARK "# dbplane restore: settings for recovery; removed once it has ended.\n"

/* Appends the restore block to a restored data dir's postgresql.auto.conf: archiving
 * paused (archive_command = '': the source's command must never ship this server's WAL
 * into the source's archive), and for point-in-time recovery restore_command,
 * recovery_target_time, recovery_target_action = 'promote' and recovery.signal. */
static int pgb_write_recovery(const engine_instance_t *in, const engine_restore_opts_t *opts,
                              dbp_err_t *err)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/postgresql.auto.conf", in->data_dir);
    char *old = NULL;
    size_t oldlen = 0;
    dbp_err_t ignore;
    if (dbp_read_file(path, &old, &oldlen, &ignore) != 0) {
        old = NULL;
        oldlen = 0;
    }
    bool pitr = opts && opts->recovery_target_time && opts->restore_command;
    char cmd[2048] = "", target[256] = "";
    if (pitr) {
        pgb_conf_quote(opts->restore_command, cmd, sizeof(cmd));
        pgb_conf_quote(opts->recovery_target_time, target, sizeof(target));
    }
    size_t cap = oldlen + sizeof(cmd) + sizeof(target) + 512;
    char *buf = malloc(cap);
    if (!buf) {
        free(old);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    int n = snprintf(buf, cap, "%s%s" PGB_RESTORE_MARK "archive_command = ''\n", old ? old : "",
                     oldlen && old[oldlen - 1] != '\n' ? "\n" : "");
    if (pitr)
        n += snprintf(buf + n, cap - (size_t)n,
                      "restore_command = %s\nrecovery_target_time = %s\n"
                      "recovery_target_action = 'promote'\nrecovery_target_inclusive = off\n",
                      cmd, target);
    free(old);
    int rc = dbp_write_file(path, buf, (size_t)n, 0600, in->runas, err);
    free(buf);
    if (rc || !pitr)
        return rc;
    snprintf(path, sizeof(path), "%s/recovery.signal", in->data_dir);
    return dbp_write_file(path, "", 0, 0600, in->runas, err);
}

int pg_recovery_cleanup(const engine_instance_t *in, dbp_err_t *err)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/recovery.signal", in->data_dir);
    if (access(path, F_OK) == 0)
        return 0; /* still recovering (or about to): the settings are needed */
    int changed = 0;
    snprintf(path, sizeof(path), "%s/" ENGINE_WAL_RESTORE_DIR, in->data_dir);
    if (access(path, F_OK) == 0) {
        int rc = dbp_rm_rf(path, err);
        if (rc)
            return rc;
        changed = 1;
    }
    snprintf(path, sizeof(path), "%s/postgresql.auto.conf", in->data_dir);
    char *conf = NULL;
    size_t len = 0;
    dbp_err_t ignore;
    if (dbp_read_file(path, &conf, &len, &ignore) != 0)
        return changed;
    char *mark = strstr(conf, PGB_RESTORE_MARK);
    int rc = changed;
    if (mark) {
        rc = dbp_write_file(path, conf, (size_t)(mark - conf), 0600, in->runas, err);
        if (rc == 0)
            rc = 1;
    }
    free(conf);
    return rc;
}

int pg_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                        engine_read_fn read, void *ud, dbp_err_t *err)
{
    int rc = dbp_restore_target(in->data_dir, in->runas, err);
    if (rc)
        return rc;
    /* GNU tar as the service user: members named with "..", absolute names and links
     * leading outside are refused or neutralised by tar, and the account cannot write
     * anywhere dbplane's own files live. */
    char *argv[] = {PGB_TAR, "-x", "-f", "-", "-C", (char *)in->data_dir, "--no-same-owner",
                    "--delay-directory-restore", NULL};
    dbp_pipe_t p;
    rc = dbp_pipe_spawn(argv, NULL, in->runas, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &p,
                        err);
    if (!rc)
        rc = dbp_pipe_pump_in(&p, read, ud, PGB_TOOL_TIMEOUT_MS, err);
    if (!rc) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/PG_VERSION", in->data_dir);
        if (access(path, F_OK) != 0)
            rc = dbp_err_set(err, DBP_EINVAL, "the archive holds no PostgreSQL data directory");
    }
    if (!rc) {
        /* The data dir must be 0700 for the server; standby.signal never survives a
         * restore (the topology decides the role). */
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/standby.signal", in->data_dir);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = dbp_err_set(err, DBP_EIO, "unlink %s: %s", path, strerror(errno));
        if (!rc && chmod(in->data_dir, 0700) != 0)
            rc = dbp_err_set(err, DBP_EIO, "chmod %s: %s", in->data_dir, strerror(errno));
    }
    if (!rc)
        rc = pgb_write_recovery(in, opts, err);
    if (!rc && in->dir[0]) {
        /* An instance of the control plane's layout: mark it initialised (a data dir
         * restored elsewhere, `dbplane restore --to DIR`, has no instance dir). */
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/" PGB_INIT_MARKER, in->dir);
        rc = dbp_write_file(path, "1\n", 2, 0644, NULL, err);
    }
    if (rc) {
        dbp_err_prefix(err, "restore into %s: ", in->name);
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
    }
    return rc;
}

int pg_restore_logical(const engine_instance_t *in, const char *database,
                       const engine_restore_opts_t *opts, engine_read_fn read, void *ud,
                       dbp_err_t *err)
{
    char tool[PATH_MAX], port[16];
    snprintf(port, sizeof(port), "%d", in->port);
    dbp_runas_t self;
    pgb_self(in, &self);
    dbp_pipe_t p;
    int rc;
    if (!database) {
        /* Globals: CREATE ROLE of roles that exist fails harmlessly; keep going. */
        engine_pg_tool(in, "psql", tool, sizeof(tool));
        char *argv[] = {tool, "-X", "-q", "-h", (char *)in->sock_dir, "-p", port, "-U",
                        PGB_ADMIN_ROLE, "-d", "postgres", "-f", "-", "--no-password", NULL};
        rc = dbp_pipe_spawn(argv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &p,
                            err);
    } else {
        bool exists = false;
        PGconn *c = engine_pg_connect(in, "postgres", err);
        if (!c)
            return DBP_EENGINE;
        const char *params[] = {database};
        PGresult *r = engine_pg_exec(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params, err);
        if (r) {
            exists = PQntuples(r) > 0;
            PQclear(r);
        }
        PQfinish(c);
        if (!r)
            return DBP_EENGINE;
        if (!exists && !(opts && opts->create))
            return dbp_err_set(err, DBP_ENOENT, "database %s does not exist on %s", database,
                               in->name);
        engine_pg_tool(in, "pg_restore", tool, sizeof(tool));
        /* Absent: --create re-creates it with its owner and privileges from the dump.
         * Present: restore into it, dropping the dump's objects first when asked. */
        char *argv[20];
        int k = 0;
        argv[k++] = tool;
        argv[k++] = "-h";
        argv[k++] = (char *)in->sock_dir;
        argv[k++] = "-p";
        argv[k++] = port;
        argv[k++] = "-U";
        argv[k++] = PGB_ADMIN_ROLE;
        argv[k++] = "--no-password";
        argv[k++] = "--exit-on-error";
        argv[k++] = "-d";
        if (!exists) {
            argv[k++] = "postgres";
            argv[k++] = "--create";
        } else {
            argv[k++] = (char *)database;
            if (opts && opts->clean) {
                argv[k++] = "--clean";
                argv[k++] = "--if-exists";
            }
        }
        argv[k] = NULL;
        rc = dbp_pipe_spawn(argv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &p,
                            err);
    }
    if (rc)
        return rc;
    rc = dbp_pipe_pump_in(&p, read, ud, PGB_TOOL_TIMEOUT_MS, err);
    if (rc)
        dbp_err_prefix(err, "%s of %s into %s: ", database ? "pg_restore" : "psql",
                       database ? database : "globals", in->name);
    return rc;
}

/* Counts (and with full_read, reads) the user tables of one database, over `conn` when
 * given (a connection to that database, borrowed), else over a new one. */
static int pgb_inventory_db(const engine_instance_t *in, PGconn *conn, bool full_read,
                            engine_db_inventory_t *db, dbp_err_t *err)
{
    PGconn *c = conn ? conn : engine_pg_connect(in, db->name, err);
    if (!c)
        return DBP_EENGINE;
    int rc = 0;
    PGresult *r = engine_pg_exec(c,
                            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
                            " c.relkind::text FROM pg_class c"
                            " JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE c.relkind IN ('r', 'p')"
                            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                            " AND n.nspname NOT LIKE 'pg_toast%'"
                            " ORDER BY 1",
                            0, NULL, err);
    if (!r) {
        if (!conn)
            PQfinish(c);
        return DBP_EENGINE;
    }
    int n = PQntuples(r);
    db->tables = n;
    db->rows = -1;
    if (full_read) {
        /* Sequential scans only: every heap page is read and its checksum verified
         * (initdb --data-checksums), instead of answering from an index. */
        PGresult *s = PQexec(c, "SET enable_indexscan = off; SET enable_indexonlyscan = off;"
                                " SET enable_bitmapscan = off");
        if (PQresultStatus(s) != PGRES_COMMAND_OK)
            rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(c));
        PQclear(s);
        db->rows = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            if (strcmp(PQgetvalue(r, i, 1), "p") == 0)
                continue; /* a partitioned parent has no rows of its own */
            char sql[512];
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM ONLY %s", PQgetvalue(r, i, 0));
            PGresult *cnt = engine_pg_exec(c, sql, 0, NULL, err);
            if (!cnt) {
                dbp_err_prefix(err, "read %s.%s: ", db->name, PQgetvalue(r, i, 0));
                rc = DBP_EENGINE;
                break;
            }
            db->rows += strtoll(PQgetvalue(cnt, 0, 0), NULL, 10);
            PQclear(cnt);
        }
    }
    PQclear(r);
    if (!conn)
        PQfinish(c);
    return rc;
}

int pg_inventory(const engine_instance_t *in, engine_inv_depth_t depth,
                 engine_inventory_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    PGconn *c = engine_pg_connect(in, "postgres", err);
    if (!c)
        return DBP_EENGINE;
    /* The position with the version (pgb_source_info's query): a logical backup that
     * starts next needs no connection of its own for it. */
    PGresult *r = engine_pg_exec(c,
                            "SELECT current_setting('server_version'), pg_is_in_recovery()::text,"
                            " CASE WHEN pg_is_in_recovery()"
                            "  THEN COALESCE(pg_last_wal_replay_lsn(), '0/0')::text"
                            "  ELSE pg_current_wal_lsn()::text END",
                            0, NULL, err);
    if (!r) {
        PQfinish(c);
        return DBP_EENGINE;
    }
    snprintf(out->version, sizeof(out->version), "%s", PQgetvalue(r, 0, 0));
    out->in_recovery = strcmp(PQgetvalue(r, 0, 1), "true") == 0;
    snprintf(out->position, sizeof(out->position), "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    r = engine_pg_exec(c,
                  "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
                  " ORDER BY datname",
                  0, NULL, err);
    if (!r) {
        PQfinish(c);
        return DBP_EENGINE;
    }
    int n = PQntuples(r);
    for (int i = 0; i < n && out->ndb < ENGINE_MAX_DATABASES; i++) {
        const char *name = PQgetvalue(r, i, 0);
        if (strlen(name) >= sizeof(out->dbs[0].name))
            continue;
        snprintf(out->dbs[out->ndb++].name, sizeof(out->dbs[0].name), "%s", name);
    }
    PQclear(r);
    /* The connection to `postgres` serves that database's count too; the others need
     * their own, which ENGINE_INV_NAMES skips (tables -1: a backup counts them while its
     * tool runs, run.c). */
    int rc = 0;
    for (int i = 0; i < out->ndb && rc == 0; i++) {
        bool here = strcmp(out->dbs[i].name, "postgres") == 0;
        if (depth == ENGINE_INV_NAMES && !here) {
            out->dbs[i].tables = -1;
            out->dbs[i].rows = -1;
            continue;
        }
        rc = pgb_inventory_db(in, here ? c : NULL, depth == ENGINE_INV_FULL_READ, &out->dbs[i],
                              err);
    }
    PQfinish(c);
    return rc;
}
