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
#include <inttypes.h>
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

/* Events of the primary's binary logs read at the most, a page at a time, to find where
 * a domain's history begins in them; past that the check gives up (the caller clones). */
#define MDBB_SCAN_EVENTS 20000
#define MDBB_SCAN_PAGE 500
#define MDBB_MAX_DOMAINS 16 /* GTID domains of a run's position (dbplane writes domain 0) */

/* The Gtid_list event of binary log `name` (the last GTID of each domain logged before
 * it; "" in a log that follows nothing: the first log of a new server, or of one made
 * from a clone or a backup, which starts with an empty binlog state) into buf. */
static int mdbb_gtid_list_event(MYSQL *m, const engine_instance_t *primary, const char *name,
                                char *buf, size_t cap, dbp_err_t *err)
{
    buf[0] = '\0';
    dbp_sb_t q = {0};
    dbp_sb_printf(&q, "SHOW BINLOG EVENTS IN ");
    sb_lit(&q, m, name);
    dbp_sb_printf(&q, " LIMIT 4");
    int rc = sb_check(&q, err);
    MYSQL_RES *r = rc ? NULL : mdb_query(m, q.buf, err);
    dbp_sb_free(&q);
    if (!rc && !r)
        return DBP_EENGINE;
    bool seen = false;
    MYSQL_ROW row;
    while (r && !seen && (row = mysql_fetch_row(r))) {
        const char *type = mdb_col(r, row, "Event_type"), *info = mdb_col(r, row, "Info");
        if (!type || strcmp(type, "Gtid_list") != 0 || !info)
            continue;
        /* Info is "[0-1-42,1-2-7]", "[]" for a log that follows nothing. */
        const char *o = strchr(info, '['), *c = o ? strchr(o, ']') : NULL;
        if (!c || (size_t)(c - o - 1) >= cap)
            break;
        memcpy(buf, o + 1, (size_t)(c - o - 1));
        buf[c - o - 1] = '\0';
        seen = true;
    }
    if (r)
        mysql_free_result(r);
    if (!rc && !seen)
        rc = dbp_err_set(err, DBP_EENGINE, "binary log %s of %s has no readable Gtid_list event",
                         name, primary->name);
    return rc;
}

/* The first GTID in the primary's binary logs (`logs`, a SHOW BINARY LOGS result, oldest
 * first) of each of the `n` domains in `want`, into first[i] (seq 0 when not seen).
 * Reads SHOW BINLOG EVENTS a page at a time from the oldest log until every domain is
 * seen, at most MDBB_SCAN_EVENTS events; *complete is false when that limit stopped the
 * scan. */
static int mdbb_first_gtids(MYSQL *m, MYSQL_RES *logs, const uint32_t *want, int n,
                            mdb_gtid_t *first, bool *complete, dbp_err_t *err)
{
    int rc = 0, left = n;
    long budget = MDBB_SCAN_EVENTS;
    memset(first, 0, (size_t)n * sizeof(*first));
    mysql_data_seek(logs, 0);
    MYSQL_ROW lrow;
    while (!rc && left > 0 && budget > 0 && (lrow = mysql_fetch_row(logs))) {
        const char *name = mdb_col(logs, lrow, "Log_name");
        unsigned long long from = 4; /* the first event after the magic number */
        bool more = name != NULL;
        while (!rc && more && left > 0 && budget > 0) {
            dbp_sb_t q = {0};
            dbp_sb_printf(&q, "SHOW BINLOG EVENTS IN ");
            sb_lit(&q, m, name);
            dbp_sb_printf(&q, " FROM %llu LIMIT %d", from, MDBB_SCAN_PAGE);
            MYSQL_RES *r = (rc = sb_check(&q, err)) ? NULL : mdb_query(m, q.buf, err);
            dbp_sb_free(&q);
            if (!r) {
                rc = rc ? rc : DBP_EENGINE;
                break;
            }
            unsigned long long rows = 0, next = 0;
            MYSQL_ROW row;
            while ((row = mysql_fetch_row(r))) {
                rows++;
                const char *type = mdb_col(r, row, "Event_type"), *info = mdb_col(r, row, "Info");
                const char *end = mdb_col(r, row, "End_log_pos");
                next = end ? strtoull(end, NULL, 10) : 0;
                /* Info is "BEGIN GTID 0-1-43", "GTID 0-1-43" (DDL), "XA START ... GTID ...". */
                const char *gt =
                    type && info && strcmp(type, "Gtid") == 0 ? strstr(info, "GTID ") : NULL;
                mdb_gtid_t g;
                if (!gt || !mdb_gtid_parse(gt + 5, &g))
                    continue;
                for (int i = 0; i < n; i++)
                    if (want[i] == g.domain && first[i].seq == 0) {
                        first[i] = g;
                        left--;
                    }
            }
            mysql_free_result(r);
            budget -= (long)rows;
            /* A short page is the end of this log; a page must move forward. */
            more = rows == MDBB_SCAN_PAGE && next > from;
            from = next;
        }
    }
    *complete = budget > 0;
    return rc;
}

/* Replica bootstrap (engine.h bootstrap_check): a replica restored from the run and set
 * to `position` (gtid_slave_pos, from the restored xtrabackup_binlog_info) follows the
 * primary with CHANGE MASTER ... MASTER_USE_GTID = slave_pos (mdb_follow). Under
 * gtid_strict_mode the primary serves that only when, for every GTID d-s-n of the
 * position:
 * - d-s-n is in its gtid_binlog_state (the same history: a domain's sequence numbers
 *   order it), and
 * - its binary logs hold d-s-n or begin right after it: the oldest log's Gtid_list names
 *   d at a sequence number <= n (nothing after the run was purged); or, when the list
 *   does not name d (the logs of a new server, or of one cloned or bootstrapped after the
 *   run, which begin with what it wrote or replicated since), d's first GTID in the logs
 *   is at most n. Otherwise the primary stops the replica with error 1236 (a purged log,
 *   or ER_GTID_START_FROM_BINLOG_HOLE). That first GTID is found with SHOW BINLOG EVENTS
 *   from the oldest log, at most MDBB_SCAN_EVENTS events; a domain not seen by then is
 *   refused too.
 * DBP_ENOENT (the caller clones instead) with the reason in err. With `replica`, its
 * restored data dir must also be at `position`. */
int mdb_bootstrap_check(const engine_instance_t *primary, const engine_instance_t *replica,
                        const char *position, dbp_err_t *err)
{
    const spec_cluster_t *c = primary->spec;
    if (c->replication.gtid_strict_mode.set && !c->replication.gtid_strict_mode.v)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "gtid_strict_mode is off: the primary's history cannot be checked to "
                           "contain the run's GTID position");
    if (!position || !mdb_gtid_list_ok(position))
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
    char state[2048], oldest[128] = "", before[1024] = "";
    uint32_t want[MDBB_MAX_DOMAINS];
    mdb_gtid_t need[MDBB_MAX_DOMAINS], first[MDBB_MAX_DOMAINS];
    int nwant = 0;
    mdb_gtid_t g;
    MYSQL_RES *logs = NULL;
    int rc = mdb_scalar(m, "SELECT @@gtid_binlog_state", state, sizeof(state), err);
    if (!rc && mdb_gtid_first_missing(position, state, &g) != 0)
        rc = dbp_err_set(err, DBP_ENOENT,
                         "the run's transaction %" PRIu32 "-%" PRIu32 "-%" PRIu64
                         " is not in primary %s's history (gtid_binlog_state '%s'): the "
                         "run is from another history",
                         g.domain, g.server, g.seq, primary->name, state);
    MYSQL_ROW row;
    if (!rc && !(logs = mdb_query(m, "SHOW BINARY LOGS", err)))
        rc = DBP_EENGINE;
    if (!rc && (row = mysql_fetch_row(logs)) && mdb_col(logs, row, "Log_name"))
        snprintf(oldest, sizeof(oldest), "%s", mdb_col(logs, row, "Log_name"));
    if (!rc && !oldest[0])
        rc = dbp_err_set(err, DBP_ENOENT, "primary %s has no binary log", primary->name);
    if (!rc)
        rc = mdbb_gtid_list_event(m, primary, oldest, before, sizeof(before), err);
    /* Domains the logs begin in after a known GTID: the run must be at or past it. */
    for (const char *p = position; !rc && mdb_gtid_next(&p, &g) > 0;) {
        int v = mdb_gtid_logs_serve(before, &g, NULL);
        if (v != MDB_LOGS_SCAN) {
            if (v != MDB_LOGS_SERVE)
                rc = dbp_err_set(err, DBP_ENOENT,
                                 "primary %s no longer has the binary logs after the run's GTID "
                                 "position %s: its oldest binary log %s starts after %s",
                                 primary->name, position, oldest, before);
        } else if (nwant == MDBB_MAX_DOMAINS) {
            rc = dbp_err_set(err, DBP_ENOENT,
                             "the run's GTID position %s has more than %d "
                             "domains",
                             position, MDBB_MAX_DOMAINS);
        } else {
            need[nwant] = g;
            want[nwant++] = g.domain;
        }
    }
    /* The others begin inside the logs: the run's own GTID must be there. */
    bool complete = true;
    if (!rc && nwant)
        rc = mdbb_first_gtids(m, logs, want, nwant, first, &complete, err);
    for (int i = 0; !rc && i < nwant; i++) {
        if (first[i].seq == 0)
            rc = dbp_err_set(err, DBP_ENOENT,
                             "cannot tell where primary %s's binary logs begin in GTID domain "
                             "%" PRIu32 " (no transaction of it in the %s, from %s)",
                             primary->name, want[i], complete ? "binary logs" : "events scanned",
                             oldest);
        else if (mdb_gtid_logs_serve(before, &need[i], &first[i]) != MDB_LOGS_SERVE)
            rc = dbp_err_set(err, DBP_ENOENT,
                             "primary %s does not have the binary logs after the run's GTID "
                             "position %s: they begin at %" PRIu32 "-%" PRIu32 "-%" PRIu64
                             " (oldest binary log %s, Gtid_list [%s]), it was made from a "
                             "clone or backup after the run",
                             primary->name, position, first[i].domain, first[i].server,
                             first[i].seq, oldest, before);
    }
    if (logs)
        mysql_free_result(logs);
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
