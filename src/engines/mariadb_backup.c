/*
 * mariadb_backup.c: backups, restores and inventories of MariaDB servers (engine.h's
 * optional backup operations), with MariaDB's own tools streamed through pipes
 * (common/pipe.h), never through a file holding the whole backup.
 *
 * - Physical: `mariadb-backup --backup --stream=mbstream` of the running instance (the
 *   backup core picks a replica for target PreferReplica), run as the service user,
 *   which logs in over the socket through unix_socket (the account ensure_internal gives
 *   it). The GTID of the backup's consistent point comes from the tool's own log line
 *   ("GTID of the last change '...'"). A restore extracts the stream with `mbstream -x`
 *   into the new, empty data directory and runs `mariadb-backup --prepare` there, both as
 *   the service user, so every file is the service user's and a hostile stream cannot
 *   write where that account cannot.
 * - Logical: one `mariadb-dump --single-transaction --master-data=2 --gtid --routines
 *   --events --triggers --databases DB` per database (the GTID of the snapshot is the
 *   commented `SET GLOBAL gtid_slave_pos` line the dump ends with), and the accounts and
 *   grants as a SQL script built here from SHOW CREATE USER / SHOW GRANTS, leaving out
 *   the accounts dbplane and the server own (root, mariadb.sys, dbplane_repl, ...), so a
 *   restore into another cluster never overwrites that cluster's internal passwords.
 *   Users are created with IF NOT EXISTS: existing accounts are kept. Restores feed the
 *   `mariadb` client.
 * - Inventory: the user databases and their base tables; with ENGINE_INV_FULL_READ every
 *   table is checked with CHECK TABLE (InnoDB verifies every page checksum and B-tree
 *   link of all its indexes) and counted.
 *
 * No password is involved anywhere: dump, client and SQL run as dbplane's own OS account
 * over the socket (unix_socket), mariadb-backup as the service user the same way.
 */
#include "engines/mariadb_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pipe.h"
#include "common/strbuf.h"

#define MDB_DUMP "/usr/bin/mariadb-dump"
#define MDBB_TOOL_TIMEOUT_MS (6 * 3600 * 1000)
#define MDBB_TAIL 4096 /* bytes of a dump's end kept to find its GTID line */

/* The account dbplane itself runs as (unix_socket admin): dump and client run as it. */
static void mdbb_self(const engine_instance_t *in, dbp_runas_t *out)
{
    *out = *in->runas;
    out->drop = false;
}

/* Size of a file, 0 when absent (to find the log lines a tool wrote in this run). */
/* Copies the GTID list that follows `marker` in text (digits, '-' and ',') into buf;
 * the last occurrence wins. False when there is none. */
static bool mdbb_find_gtid(const char *text, size_t len, const char *marker, char *buf, size_t cap)
{
    size_t ml = strlen(marker);
    bool found = false;
    for (const char *p = text; p && (size_t)(p - text) + ml <= len;) {
        p = memmem(p, len - (size_t)(p - text), marker, ml);
        if (!p)
            break;
        p += ml;
        size_t n = 0;
        while ((size_t)(p - text) + n < len && strchr("0123456789-,", p[n]))
            n++;
        if (n && n < cap) {
            memcpy(buf, p, n);
            buf[n] = '\0';
            found = true;
        }
    }
    return found;
}

/* The server's version into info->version, and the other fields cleared. A version the
 * caller already has (run.c passes the inventory's, read a moment before) is kept, which
 * saves a connection before the tool starts. */
static int mdbb_source_info(const engine_instance_t *in, engine_backup_info_t *info, dbp_err_t *err)
{
    char known[sizeof(info->version)];
    snprintf(known, sizeof(known), "%s", info->version);
    memset(info, 0, sizeof(*info));
    if (known[0]) {
        memcpy(info->version, known, sizeof(known));
        return 0;
    }
    MYSQL *m = mdb_connect(in, false, err);
    if (!m)
        return DBP_EENGINE;
    int rc = mdb_scalar(m, "SELECT @@version", info->version, sizeof(info->version), err);
    mysql_close(m);
    return rc;
}

/* ---- physical ----------------------------------------------------------------------- */

int mdb_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                        engine_write_fn write, void *ud, dbp_err_t *err)
{
    int rc = mdbb_source_info(in, info, err);
    if (rc)
        return rc;
    char cnf[PATH_MAX], sock[PATH_MAX], defaults[PATH_MAX + 32], socket[PATH_MAX + 16], user[128];
    mdb_cnf(in, cnf, sizeof(cnf));
    mdb_sock(in, sock, sizeof(sock));
    snprintf(defaults, sizeof(defaults), "--defaults-file=%s", cnf);
    snprintf(socket, sizeof(socket), "--socket=%s", sock);
    snprintf(user, sizeof(user), "--user=%s", in->runas->name);
    char *argv[] = {MDB_BACKUP, defaults, "--backup", "--stream=mbstream", user, socket, NULL};
    long from = dbp_file_size(in->tool_log_path);
    dbp_pipe_t p;
    rc = dbp_pipe_spawn(argv, NULL, in->runas, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &p,
                        err);
    if (rc)
        return rc;
    rc = dbp_pipe_pump_out(&p, write, ud, MDBB_TOOL_TIMEOUT_MS, err);
    if (rc) {
        dbp_err_prefix(err, "mariadb-backup from %s: ", in->name);
        return rc;
    }
    /* "... MySQL binlog position: filename '...', position '...', GTID of the last
     * change '0-1-42'" in the tool's log of this run. */
    char *log = NULL;
    size_t len = 0;
    dbp_err_t ignore;
    if (dbp_read_file(in->tool_log_path, &log, &len, &ignore) == 0) {
        size_t off = (size_t)from <= len ? (size_t)from : 0;
        mdbb_find_gtid(log + off, len - off, "GTID of the last change '", info->start_position,
                       sizeof(info->start_position));
        free(log);
    }
    return 0;
}

int mdb_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                         engine_read_fn read, void *ud, dbp_err_t *err)
{
    if (opts && opts->recovery_target_time)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "MariaDB has no recovery target: a point-in-time restore replays "
                           "archived binary logs after the restore (binlog_replay)");
    int rc = dbp_restore_target(in->data_dir, in->runas, err);
    if (rc)
        return rc;
    char *xargv[] = {MDB_MBSTREAM, "-x", "-C", (char *)in->data_dir, NULL};
    dbp_pipe_t p;
    rc =
        dbp_pipe_spawn(xargv, NULL, in->runas, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &p, err);
    if (!rc && (rc = dbp_pipe_pump_in(&p, read, ud, MDBB_TOOL_TIMEOUT_MS, err)))
        dbp_err_prefix(err, "mbstream -x: ");
    char path[PATH_MAX + 64];
    if (!rc) {
        snprintf(path, sizeof(path), "%s/xtrabackup_checkpoints", in->data_dir);
        if (access(path, F_OK) != 0)
            rc = dbp_err_set(err, DBP_EINVAL, "the stream holds no mariadb-backup backup");
    }
    if (!rc) {
        /* Applies the redo log copied during the backup: the files become consistent as
         * of the backup's end. */
        char target[PATH_MAX + 16];
        snprintf(target, sizeof(target), "--target-dir=%s", in->data_dir);
        char *prepare[] = {MDB_BACKUP, "--prepare", target, NULL};
        rc = dbp_proc_run(prepare, NULL, in->runas, in->tool_log_path, MDBB_TOOL_TIMEOUT_MS, err);
        if (rc)
            dbp_err_prefix(err, "mariadb-backup --prepare: ");
    }
    if (!rc) {
        snprintf(path, sizeof(path), "%s/mysql", in->data_dir);
        if (access(path, F_OK) != 0)
            rc = dbp_err_set(err, DBP_EINVAL, "the backup holds no MariaDB data directory");
        else if (chmod(in->data_dir, 0700) != 0)
            rc = dbp_err_set(err, DBP_EIO, "chmod %s: %s", in->data_dir, strerror(errno));
    }
    /* An instance of the control plane's layout is marked initialised; a data dir
     * restored elsewhere (`dbplane restore --to DIR`) has no instance dir. */
    if (!rc && in->dir[0])
        rc = mdb_mark_initialized(in, err);
    if (rc) {
        dbp_err_prefix(err, "restore into %s: ", in->name);
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
    }
    return rc;
}

/* ---- replica bootstrap from a physical run ------------------------------------------ */

/* Checks that `list` is a GTID list ("d-s-n,d-s-n"): digits, '-' and ',' only, every
 * element three numbers. */
static bool mdbb_gtid_list_ok(const char *list)
{
    if (!list[0] || strspn(list, "0123456789-,") != strlen(list))
        return false;
    for (const char *p = list; p && *p;) {
        unsigned long d, s;
        unsigned long long n;
        if (sscanf(p, "%lu-%lu-%llu", &d, &s, &n) != 3)
            return false;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return true;
}

/* The highest sequence number of domain `d` in GTID list `list`; false when the list has
 * no GTID of that domain. */
static bool mdbb_domain_seq(const char *list, unsigned long d, unsigned long long *seq)
{
    bool found = false;
    for (const char *p = list; p && *p;) {
        unsigned long d2, s2;
        unsigned long long n;
        if (sscanf(p, "%lu-%lu-%llu", &d2, &s2, &n) == 3 && d2 == d && (!found || n > *seq)) {
            *seq = n;
            found = true;
        }
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return found;
}

/* The GTID list at the start of the primary's oldest binary log (its Gtid_list event:
 * what came before the log, "" for the first log ever) into buf, the log's name into
 * `name`. DBP_ENOENT when the primary has no binary log. */
static int mdbb_oldest_binlog_start(MYSQL *m, const engine_instance_t *primary, char *name,
                                    size_t name_cap, char *buf, size_t cap, dbp_err_t *err)
{
    buf[0] = name[0] = '\0';
    MYSQL_RES *r = mdb_query(m, "SHOW BINARY LOGS", err);
    if (!r)
        return DBP_EENGINE;
    MYSQL_ROW row = mysql_fetch_row(r);
    const char *first = row ? mdb_col(r, row, "Log_name") : NULL;
    if (first)
        snprintf(name, name_cap, "%s", first);
    mysql_free_result(r);
    if (!name[0])
        return dbp_err_set(err, DBP_ENOENT, "primary %s has no binary log", primary->name);
    dbp_sb_t q = {0};
    dbp_sb_printf(&q, "SHOW BINLOG EVENTS IN ");
    sb_lit(&q, m, name);
    dbp_sb_printf(&q, " LIMIT 4");
    int rc = sb_check(&q, err);
    r = rc ? NULL : mdb_query(m, q.buf, err);
    dbp_sb_free(&q);
    if (!rc && !r)
        rc = DBP_EENGINE;
    bool seen = false;
    while (r && (row = mysql_fetch_row(r))) {
        const char *type = mdb_col(r, row, "Event_type"), *info = mdb_col(r, row, "Info");
        if (!type || strcmp(type, "Gtid_list") != 0 || !info)
            continue;
        /* Info is "[0-1-42,1-2-7]", "[]" for the first log. */
        const char *o = strchr(info, '['), *c = o ? strchr(o, ']') : NULL;
        if (!c || (size_t)(c - o - 1) >= cap)
            break;
        memcpy(buf, o + 1, (size_t)(c - o - 1));
        buf[c - o - 1] = '\0';
        seen = true;
        break;
    }
    if (r)
        mysql_free_result(r);
    if (!rc && !seen)
        rc = dbp_err_set(err, DBP_EENGINE, "binary log %s of %s has no Gtid_list event", name,
                         primary->name);
    return rc;
}

/* Replica bootstrap (engine.h bootstrap_check): the run's GTID `position` must be in the
 * primary's gtid_binlog_state (the same history: under gtid_strict_mode a domain's sequence
 * numbers order it) and its oldest binary log must not start after it (nothing the
 * replica needs was purged), so that CHANGE MASTER ... MASTER_USE_GTID = slave_pos from
 * `position` (mdb_follow, with the restored xtrabackup_binlog_info) replays exactly the
 * transactions since the run. With `replica`, its restored data dir must be at
 * `position`. */
int mdb_bootstrap_check(const engine_instance_t *primary, const engine_instance_t *replica,
                        const char *position, dbp_err_t *err)
{
    const spec_cluster_t *c = primary->spec;
    if (c->replication.gtid_strict_mode.set && !c->replication.gtid_strict_mode.v)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "gtid_strict_mode is off: the primary's history cannot be checked to "
                           "contain the run's GTID position");
    if (!position || !mdbb_gtid_list_ok(position))
        return dbp_err_set(err, DBP_ENOENT, "the run records no GTID position ('%s')",
                           position ? position : "");
    if (replica) {
        char gtid[256], path[PATH_MAX + 40];
        if (!mdb_backup_gtid(replica, gtid, sizeof(gtid), path, sizeof(path)))
            return dbp_err_set(err, DBP_ENOENT, "the restored data dir has no %s", path);
        if (strcmp(gtid, position) != 0)
            return dbp_err_set(err, DBP_EINVAL,
                               "the restored data dir is at GTID '%s' but the manifest says '%s'",
                               gtid, position);
    }
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    char state[2048], oldest[128], start[1024];
    int rc = mdb_scalar(m, "SELECT @@gtid_binlog_state", state, sizeof(state), err);
    for (const char *p = position; !rc && p && *p;) {
        unsigned long d, s;
        unsigned long long n;
        if (sscanf(p, "%lu-%lu-%llu", &d, &s, &n) == 3 && !mdb_gtid_in_state(state, d, s, n))
            rc = dbp_err_set(err, DBP_ENOENT,
                             "the run's transaction %lu-%lu-%llu is not in primary %s's history "
                             "(gtid_binlog_state '%s'): the run is from another history",
                             d, s, n, primary->name, state);
        p = strchr(p, ',');
        if (p)
            p++;
    }
    if (!rc)
        rc = mdbb_oldest_binlog_start(m, primary, oldest, sizeof(oldest), start, sizeof(start),
                                      err);
    for (const char *p = start; !rc && *p;) {
        unsigned long d, s;
        unsigned long long n, have = 0, need = 0;
        /* The replica asks for the transactions after `have` in domain d; the oldest
         * log holds those after `need` (the highest of d in its Gtid_list). */
        if (sscanf(p, "%lu-%lu-%llu", &d, &s, &n) == 3 && mdbb_domain_seq(start, d, &need) &&
            (!mdbb_domain_seq(position, d, &have) || have < need))
            rc = dbp_err_set(err, DBP_ENOENT,
                             "primary %s no longer has the binary logs after the run's GTID "
                             "position %s: its oldest binary log %s starts after %s",
                             primary->name, position, oldest, start);
        p = strchr(p, ',');
        if (p)
            p++;
    }
    mysql_close(m);
    return rc;
}

/* ---- logical ------------------------------------------------------------------------ */

/* Forwards a dump to the caller's writer and keeps its last MDBB_TAIL bytes. */
typedef struct mdbb_tail {
    engine_write_fn write;
    void *ud;
    char buf[MDBB_TAIL];
    size_t len;
} mdbb_tail_t;

static int mdbb_tail_write(void *ud, const void *buf, size_t len, dbp_err_t *err)
{
    mdbb_tail_t *t = ud;
    int rc = t->write(t->ud, buf, len, err);
    if (rc)
        return rc;
    if (len >= MDBB_TAIL) {
        memcpy(t->buf, (const char *)buf + len - MDBB_TAIL, MDBB_TAIL);
        t->len = MDBB_TAIL;
    } else {
        size_t keep = t->len + len > MDBB_TAIL ? MDBB_TAIL - len : t->len;
        memmove(t->buf, t->buf + t->len - keep, keep);
        memcpy(t->buf + keep, buf, len);
        t->len = keep + len;
    }
    return 0;
}

/* Appends the statements that re-create one account or role: CREATE ... IF NOT EXISTS
 * and its grants, without the authentication clause SHOW GRANTS repeats on the global
 * line (a restore keeps an existing account's password). */
static int mdbb_account_sql(MYSQL *m, const char *user, const char *host, bool role, dbp_sb_t *out,
                            dbp_err_t *err)
{
    dbp_sb_t q = {0};
    MYSQL_RES *r = NULL;
    MYSQL_ROW row;
    int rc = 0;
    if (role) {
        dbp_sb_printf(out, "CREATE ROLE IF NOT EXISTS ");
        sb_lit(out, m, user);
        dbp_sb_printf(out, ";\n");
    } else {
        dbp_sb_printf(&q, "SHOW CREATE USER ");
        sb_lit(&q, m, user);
        dbp_sb_printf(&q, "@");
        sb_lit(&q, m, host);
        if ((rc = sb_check(&q, err)))
            goto out;
        if (!(r = mdb_query(m, q.buf, err))) {
            rc = DBP_EENGINE;
            goto out;
        }
        if ((row = mysql_fetch_row(r)) && row[0] && strncmp(row[0], "CREATE USER ", 12) == 0)
            dbp_sb_printf(out, "CREATE USER IF NOT EXISTS %s;\n", row[0] + 12);
        mysql_free_result(r);
        r = NULL;
    }
    dbp_sb_free(&q);
    dbp_sb_printf(&q, "SHOW GRANTS FOR ");
    sb_lit(&q, m, user);
    if (!role) {
        dbp_sb_printf(&q, "@");
        sb_lit(&q, m, host);
    }
    if ((rc = sb_check(&q, err)))
        goto out;
    if (!(r = mdb_query(m, q.buf, err))) {
        rc = DBP_EENGINE;
        goto out;
    }
    while ((row = mysql_fetch_row(r))) {
        const char *g = row[0] ? row[0] : "";
        if (strncmp(g, "GRANT USAGE ON *.* TO ", 22) == 0)
            continue; /* the account itself: CREATE USER above */
        const char *id = strstr(g, " IDENTIFIED ");
        if (!id) {
            dbp_sb_printf(out, "%s;\n", g);
            continue;
        }
        /* "GRANT X ON *.* TO u@h IDENTIFIED ... [WITH ...]": keep the grant part. */
        const char *with = strstr(id, " WITH GRANT OPTION");
        dbp_sb_printf(out, "%.*s%s;\n", (int)(id - g), g, with ? " WITH GRANT OPTION" : "");
    }
out:
    if (r)
        mysql_free_result(r);
    dbp_sb_free(&q);
    return rc ? rc : sb_check(out, err);
}

/* The accounts, roles and grants of the server (those dbplane and the server own left
 * out) as a SQL script, written through `write`. The script is small (a few hundred
 * bytes per account), so it is built in memory. */
static int mdbb_globals(const engine_instance_t *in, engine_write_fn write, void *ud,
                        dbp_err_t *err)
{
    MYSQL *m = mdb_connect(in, false, err);
    if (!m)
        return DBP_EENGINE;
    dbp_sb_t out = {0};
    int rc = 0;
    MYSQL_RES *r = mdb_query(m,
                             "SELECT User, Host, is_role FROM mysql.user "
                             "WHERE User NOT IN ('', 'PUBLIC') ORDER BY is_role DESC, User, Host",
                             err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    dbp_sb_printf(&out, "-- dbplane: accounts and grants of %s (existing accounts are kept)\n",
                  in->name);
    MYSQL_ROW row;
    while (rc == 0 && (row = mysql_fetch_row(r))) {
        const char *user = row[0] ? row[0] : "", *host = row[1] ? row[1] : "";
        bool role = row[2] && strcmp(row[2], "Y") == 0;
        if (!role && mdb_reserved_user(in, user))
            continue;
        rc = mdbb_account_sql(m, user, host, role, &out, err);
    }
    mysql_free_result(r);
    if (!rc)
        rc = write(ud, out.buf, out.len, err);
out:
    dbp_sb_free(&out);
    mysql_close(m);
    return rc;
}

int mdb_backup_logical(const engine_instance_t *in, const char *database,
                       engine_backup_info_t *info, engine_write_fn write, void *ud, dbp_err_t *err)
{
    int rc = mdbb_source_info(in, info, err);
    if (rc)
        return rc;
    if (!database) {
        rc = mdbb_globals(in, write, ud, err);
        if (rc)
            dbp_err_prefix(err, "accounts of %s: ", in->name);
        return rc;
    }
    char sock[PATH_MAX], socket[PATH_MAX + 16], user[128];
    mdb_sock(in, sock, sizeof(sock));
    snprintf(socket, sizeof(socket), "--socket=%s", sock);
    snprintf(user, sizeof(user), "--user=%s", in->runas->daemon_name);
    /* --master-data=2 with --gtid: the snapshot's GTID as a comment at the end; with
     * --single-transaction InnoDB tables are read in one consistent snapshot. */
    char *argv[] = {
        MDB_DUMP,          "--no-defaults", socket,           user,       "--single-transaction",
        "--master-data=2", "--gtid",        "--routines",     "--events", "--triggers",
        "--hex-blob",      "--databases",   (char *)database, NULL};
    dbp_runas_t self;
    mdbb_self(in, &self);
    mdbb_tail_t *tail = calloc(1, sizeof(*tail));
    if (!tail)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    tail->write = write;
    tail->ud = ud;
    dbp_pipe_t p;
    rc = dbp_pipe_spawn(argv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &p, err);
    if (!rc)
        rc = dbp_pipe_pump_out(&p, mdbb_tail_write, tail, MDBB_TOOL_TIMEOUT_MS, err);
    if (rc)
        dbp_err_prefix(err, "mariadb-dump of %s on %s: ", database, in->name);
    else
        mdbb_find_gtid(tail->buf, tail->len, "gtid_slave_pos='", info->start_position,
                       sizeof(info->start_position));
    free(tail);
    return rc;
}

int mdb_restore_logical(const engine_instance_t *in, const char *database,
                        const engine_restore_opts_t *opts, engine_read_fn read, void *ud,
                        dbp_err_t *err)
{
    if (database) {
        MYSQL *m = mdb_connect(in, false, err);
        if (!m)
            return DBP_EENGINE;
        dbp_sb_t q = {0};
        dbp_sb_printf(&q, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ");
        sb_lit(&q, m, database);
        char n[16] = "";
        int rc = sb_check(&q, err);
        if (!rc)
            rc = mdb_scalar(m, q.buf, n, sizeof(n), err);
        dbp_sb_free(&q);
        mysql_close(m);
        if (rc)
            return rc;
        bool exists = strcmp(n, "0") != 0;
        /* The dump re-creates the database when absent (CREATE DATABASE IF NOT EXISTS)
         * and drops and re-creates each of its tables (DROP TABLE IF EXISTS). */
        if (!exists && !(opts && opts->create))
            return dbp_err_set(err, DBP_ENOENT, "database %s does not exist on %s", database,
                               in->name);
        if (exists && !(opts && opts->clean))
            return dbp_err_set(err, DBP_EBUSY,
                               "database %s exists on %s: a MariaDB dump replaces its tables, "
                               "restore with clean",
                               database, in->name);
    }
    char sock[PATH_MAX], socket[PATH_MAX + 16], user[128];
    mdb_sock(in, sock, sizeof(sock));
    snprintf(socket, sizeof(socket), "--socket=%s", sock);
    snprintf(user, sizeof(user), "--user=%s", in->runas->daemon_name);
    char *argv[] = {MDB_CLIENT, "--no-defaults", socket, user, "--batch", "--binary-mode", NULL};
    dbp_runas_t self;
    mdbb_self(in, &self);
    dbp_pipe_t p;
    int rc = dbp_pipe_spawn(argv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &p, err);
    if (!rc)
        rc = dbp_pipe_pump_in(&p, read, ud, MDBB_TOOL_TIMEOUT_MS, err);
    if (rc)
        dbp_err_prefix(err, "mariadb restore of %s into %s: ", database ? database : "accounts",
                       in->name);
    return rc;
}

/* ---- inventory ---------------------------------------------------------------------- */

/* CHECK TABLE and a row count of every base table of db->name. */
static int mdbb_read_db(MYSQL *m, engine_db_inventory_t *db, dbp_err_t *err)
{
    dbp_sb_t q = {0};
    dbp_sb_printf(&q, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ");
    sb_lit(&q, m, db->name);
    dbp_sb_printf(&q, " AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1");
    int rc = sb_check(&q, err);
    MYSQL_RES *tables = rc ? NULL : mdb_query(m, q.buf, err);
    dbp_sb_free(&q);
    if (!tables)
        return rc ? rc : DBP_EENGINE;
    db->rows = 0;
    MYSQL_ROW t;
    while (rc == 0 && (t = mysql_fetch_row(tables))) {
        dbp_sb_t name = {0};
        dbp_sb_printf(&name, "`");
        for (const char *s = db->name; *s; s++)
            dbp_sb_printf(&name, *s == '`' ? "``" : "%c", *s);
        dbp_sb_printf(&name, "`.`");
        for (const char *s = t[0] ? t[0] : ""; *s; s++)
            dbp_sb_printf(&name, *s == '`' ? "``" : "%c", *s);
        dbp_sb_printf(&name, "`");
        dbp_sb_printf(&q, "CHECK TABLE %s", name.buf ? name.buf : "");
        MYSQL_RES *r = (rc = sb_check(&q, err)) ? NULL : mdb_query(m, q.buf, err);
        if (!r && !rc)
            rc = DBP_EENGINE;
        /* Rows: Table, Op, Msg_type, Msg_text; any "error", or a status other than OK,
         * is a damaged table. */
        MYSQL_ROW row;
        while (r && rc == 0 && (row = mysql_fetch_row(r))) {
            const char *type = row[2] ? row[2] : "", *text = row[3] ? row[3] : "";
            if (strcasecmp(type, "error") == 0 ||
                (strcasecmp(type, "status") == 0 && strcasecmp(text, "OK") != 0 &&
                 strcasecmp(text, "Table is already up to date") != 0))
                rc = dbp_err_set(err, DBP_EENGINE, "CHECK TABLE %s: %s: %s", name.buf, type, text);
        }
        if (r)
            mysql_free_result(r);
        dbp_sb_free(&q);
        if (rc == 0) {
            char n[32];
            dbp_sb_printf(&q, "SELECT COUNT(*) FROM %s", name.buf ? name.buf : "");
            if (!(rc = sb_check(&q, err)) && !(rc = mdb_scalar(m, q.buf, n, sizeof(n), err)))
                db->rows += strtoll(n, NULL, 10);
            dbp_sb_free(&q);
        }
        dbp_sb_free(&name);
    }
    mysql_free_result(tables);
    if (rc)
        dbp_err_prefix(err, "read %s: ", db->name);
    return rc;
}

int mdb_inventory(const engine_instance_t *in, engine_inv_depth_t depth, engine_inventory_t *out,
                  dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    MYSQL *m = mdb_connect(in, false, err);
    if (!m)
        return DBP_EENGINE;
    int rc = 0;
    char ro[8] = "";
    if ((rc = mdb_scalar(m, "SELECT @@version", out->version, sizeof(out->version), err)) ||
        (rc = mdb_scalar(m, "SELECT @@read_only", ro, sizeof(ro), err)))
        goto out;
    out->in_recovery = strcmp(ro, "1") == 0; /* a replica, or a server not yet writable */
    /* The table counts open every table's definition (information_schema.TABLES, the
     * slow part on a busy server); ENGINE_INV_NAMES leaves them out (tables -1). */
    MYSQL_RES *r = mdb_query(m,
                             depth == ENGINE_INV_NAMES
                                 ? "SELECT s.SCHEMA_NAME, NULL"
                                   " FROM information_schema.SCHEMATA s WHERE s.SCHEMA_NAME"
                                   " NOT IN ('mysql', 'information_schema',"
                                   " 'performance_schema', 'sys') ORDER BY 1"
                                 : "SELECT s.SCHEMA_NAME, (SELECT COUNT(*)"
                                   " FROM information_schema.TABLES t"
                                   " WHERE t.TABLE_SCHEMA = s.SCHEMA_NAME AND t.TABLE_TYPE IN"
                                   " ('BASE TABLE', 'SYSTEM VERSIONED'))"
                                   " FROM information_schema.SCHEMATA s WHERE s.SCHEMA_NAME"
                                   " NOT IN ('mysql', 'information_schema',"
                                   " 'performance_schema', 'sys') ORDER BY 1",
                             err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) && out->ndb < ENGINE_MAX_DATABASES) {
        if (!row[0] || strlen(row[0]) >= sizeof(out->dbs[0].name))
            continue;
        engine_db_inventory_t *db = &out->dbs[out->ndb++];
        snprintf(db->name, sizeof(db->name), "%s", row[0]);
        db->tables = depth == ENGINE_INV_NAMES ? -1 : row[1] ? strtoll(row[1], NULL, 10) : 0;
        db->rows = -1;
    }
    mysql_free_result(r);
    for (int i = 0; depth == ENGINE_INV_FULL_READ && rc == 0 && i < out->ndb; i++)
        rc = mdbb_read_db(m, &out->dbs[i], err);
out:
    mysql_close(m);
    return rc;
}
