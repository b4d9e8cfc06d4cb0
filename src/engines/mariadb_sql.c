/*
 * mariadb_sql.c: the MariaDB driver's SQL side (engine.h): admin connections over the
 * instance's unix socket, the internal accounts, and the declared users, databases and
 * grants, plus SqlJob's run_sql. Shared helpers are declared in mariadb_int.h; the
 * security model (unix_socket admin, passwords only as mysql_native_password hashes) is
 * described at the top of mariadb.c.
 */
#include "engines/mariadb_int.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <mysql.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/strbuf.h"

/* ---- small helpers ------------------------------------------------------------------ */

/* Appends s as a backtick-quoted identifier (embedded backticks doubled). */
static void sb_ident(dbp_sb_t *sb, const char *s)
{
    dbp_sb_printf(sb, "`");
    for (const char *p = s; *p; p++)
        dbp_sb_printf(sb, *p == '`' ? "``" : "%c", *p);
    dbp_sb_printf(sb, "`");
}

/* A database name as a database-level GRANT must spell it, with the LIKE wildcards _ and
 * % escaped: unescaped, `shop_db`.* would also cover `shopXdb`. Owned; free(). */
static char *wild_escape(const char *s)
{
    char *out = malloc(2 * strlen(s) + 1), *o = out;
    for (; out && *s; s++) {
        if (*s == '_' || *s == '%')
            *o++ = '\\';
        *o++ = *s;
    }
    if (out)
        *o = '\0';
    return out;
}

/* Appends the account name 'user'@'host'. */
static void sb_account(dbp_sb_t *sb, MYSQL *m, const char *user, const char *host)
{
    sb_lit(sb, m, user);
    dbp_sb_printf(sb, "@");
    sb_lit(sb, m, host);
}


void mdb_sock(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" MDB_SOCK, in->sock_dir);
}

void mdb_cnf(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" MDB_CNF, in->dir);
}

/* The mysql_native_password hash of pw ('*' + HEX(SHA1(SHA1(pw)))), what PASSWORD(pw)
 * returns on the server; computed here so the plaintext never leaves dbplane. */
static int mdb_native_hash(const char *pw, char out[MDB_HASH_LEN + 1], dbp_err_t *err)
{
    unsigned char d1[EVP_MAX_MD_SIZE], d2[EVP_MAX_MD_SIZE];
    unsigned int n1 = 0, n2 = 0;
    int ok = EVP_Digest(pw, strlen(pw), d1, &n1, EVP_sha1(), NULL) &&
             EVP_Digest(d1, n1, d2, &n2, EVP_sha1(), NULL) && n2 == 20;
    explicit_bzero(d1, sizeof(d1));
    if (!ok)
        return dbp_err_set(err, DBP_ECRYPTO, "SHA1 failed");
    out[0] = '*';
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 1 + 2 * i, 3, "%02X", d2[i]);
    return 0;
}

/* ---- connections and queries -------------------------------------------------------- */

static pthread_once_t mdb_lib_once = PTHREAD_ONCE_INIT;
static int mdb_lib_rc;

static void mdb_lib_init(void)
{
    mdb_lib_rc = mysql_library_init(0, NULL, NULL);
}

/* Opens a connection: over `sock` when given, else TCP to host:port. `pw` may be NULL
 * (unix_socket). The login must complete within `connect_ms`; each later read or write
 * within `rw_s` seconds. Returns NULL with err filled on time-out or refusal. Free with
 * mysql_close. */
MYSQL *mdb_open(const char *what, const char *sock, const char *host, int port,
                const char *user, const char *pw, const char *db, int connect_ms,
                unsigned rw_s, unsigned long flags, dbp_err_t *err)
{
    pthread_once(&mdb_lib_once, mdb_lib_init);
    if (mdb_lib_rc != 0) {
        dbp_err_set(err, DBP_EENGINE, "MariaDB client library failed to initialise");
        return NULL;
    }
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    /* Connector/C counts whole seconds. */
    unsigned int ct = connect_ms > 0 ? (unsigned)(connect_ms + 999) / 1000 : 3, off = 0;
    unsigned int proto = sock ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw_s);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw_s);
    mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &off);
    mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(m, sock ? "localhost" : host, user, pw, db, sock ? 0 : (unsigned)port,
                            sock, flags)) {
        dbp_err_set(err, DBP_EENGINE, "connect %s as %s: %s", what, user, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

/* The probe time-out of an instance in ms (engine_instance_t.probe_timeout_ms). */
int mdb_probe_ms(const engine_instance_t *in)
{
    return in->probe_timeout_ms > 0 ? in->probe_timeout_ms : 3000;
}

/* dbplane's admin connection to an instance: the daemon's OS account over the socket.
 * `quick` (probes) bounds every read by the probe time-out; otherwise a statement may take
 * a minute (a GRANT waiting for a metadata lock). */
MYSQL *mdb_connect(const engine_instance_t *in, bool quick, dbp_err_t *err)
{
    char sock[PATH_MAX];
    mdb_sock(in, sock, sizeof(sock));
    unsigned rw = quick ? (unsigned)(mdb_probe_ms(in) + 999) / 1000 : 60;
    return mdb_open(in->name, sock, NULL, 0, in->runas->daemon_name, NULL, NULL, mdb_probe_ms(in),
                    rw, 0, err);
}

/* Fills err from the connection's last error. A message that quotes `secret` (a syntax
 * error echoes part of the statement) is withheld. */
static int mdb_fail(MYSQL *m, const char *secret, dbp_err_t *err)
{
    const char *msg = mysql_error(m);
    if (secret && *secret && strstr(msg, secret))
        return dbp_err_set(err, DBP_EENGINE,
                           "statement failed (error %u; message withheld: it "
                           "quotes a secret)",
                           mysql_errno(m));
    return dbp_err_set(err, DBP_EENGINE, "%s (error %u)", msg, mysql_errno(m));
}

/* Runs one statement, discarding any result; 0 or DBP_EENGINE. */
int mdb_cmd_secret(MYSQL *m, const char *sql, const char *secret, dbp_err_t *err)
{
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0)
        return mdb_fail(m, secret, err);
    MYSQL_RES *r = mysql_store_result(m);
    if (r)
        mysql_free_result(r);
    return 0;
}

int mdb_cmd(MYSQL *m, const char *sql, dbp_err_t *err)
{
    return mdb_cmd_secret(m, sql, NULL, err);
}

/* Runs a statement that returns rows; the result is owned (mysql_free_result), or NULL
 * with err filled. */
MYSQL_RES *mdb_query(MYSQL *m, const char *sql, dbp_err_t *err)
{
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0) {
        mdb_fail(m, NULL, err);
        return NULL;
    }
    MYSQL_RES *r = mysql_store_result(m);
    if (!r)
        dbp_err_set(err, DBP_EENGINE, "%s returned no rows: %s", sql, mysql_error(m));
    return r;
}

/* Value of column `name` in row, or NULL (SQL NULL, or no such column). */
const char *mdb_col(MYSQL_RES *r, MYSQL_ROW row, const char *name)
{
    unsigned n = mysql_num_fields(r);
    MYSQL_FIELD *f = mysql_fetch_fields(r);
    for (unsigned i = 0; i < n; i++)
        if (strcasecmp(f[i].name, name) == 0)
            return row[i];
    return NULL;
}

static void copy_col(char *dst, size_t len, MYSQL_RES *r, MYSQL_ROW row, const char *name)
{
    const char *v = mdb_col(r, row, name);
    snprintf(dst, len, "%s", v ? v : "");
}

int mdb_slave_status(MYSQL *m, mdb_slave_t *s, dbp_err_t *err)
{
    memset(s, 0, sizeof(*s));
    s->behind_s = -1;
    MYSQL_RES *r = mdb_query(m, "SHOW SLAVE STATUS", err);
    if (!r)
        return DBP_EENGINE;
    MYSQL_ROW row = mysql_fetch_row(r);
    if (row) {
        copy_col(s->host, sizeof(s->host), r, row, "Master_Host");
        s->configured = s->host[0] != '\0';
        const char *v = mdb_col(r, row, "Master_Port");
        s->port = v ? atoi(v) : 0;
        copy_col(s->user, sizeof(s->user), r, row, "Master_User");
        copy_col(s->using_gtid, sizeof(s->using_gtid), r, row, "Using_Gtid");
        copy_col(s->io, sizeof(s->io), r, row, "Slave_IO_Running");
        copy_col(s->sql, sizeof(s->sql), r, row, "Slave_SQL_Running");
        v = mdb_col(r, row, "Seconds_Behind_Master");
        s->behind_s = v ? strtoll(v, NULL, 10) : -1;
        v = mdb_col(r, row, "Last_IO_Errno");
        s->io_errno = v ? (unsigned)strtoul(v, NULL, 10) : 0;
        v = mdb_col(r, row, "Last_SQL_Errno");
        s->sql_errno = v ? (unsigned)strtoul(v, NULL, 10) : 0;
        copy_col(s->io_error, sizeof(s->io_error), r, row, "Last_IO_Error");
        copy_col(s->sql_error, sizeof(s->sql_error), r, row, "Last_SQL_Error");
        copy_col(s->master_file, sizeof(s->master_file), r, row, "Relay_Master_Log_File");
        v = mdb_col(r, row, "Exec_Master_Log_Pos");
        s->exec_pos = v ? strtoull(v, NULL, 10) : 0;
        copy_col(s->read_file, sizeof(s->read_file), r, row, "Master_Log_File");
        v = mdb_col(r, row, "Read_Master_Log_Pos");
        s->read_pos = v ? strtoull(v, NULL, 10) : 0;
    }
    mysql_free_result(r);
    return 0;
}

/* Runs a one-row, one-column query into buf (NULL reads as ""). */
int mdb_scalar(MYSQL *m, const char *sql, char *buf, size_t len, dbp_err_t *err)
{
    MYSQL_RES *r = mdb_query(m, sql, err);
    if (!r)
        return DBP_EENGINE;
    MYSQL_ROW row = mysql_fetch_row(r);
    snprintf(buf, len, "%s", row && row[0] ? row[0] : "");
    mysql_free_result(r);
    return row ? 0 : dbp_err_set(err, DBP_EENGINE, "%s returned no row", sql);
}

/* ---- accounts ----------------------------------------------------------------------- */

/* Makes the account user@host exist as declared: authenticated by the native password
 * hash `hash`, or via unix_socket when hash is NULL; `max_conn` concurrent connections
 * (0: unlimited); holding at least the global privileges `privs` (NULL-terminated list of
 * names as information_schema.USER_PRIVILEGES spells them; may be NULL). Statements are
 * issued only for what differs, so a pass that changes nothing writes no binlog event.
 * Returns 1 changed, 0 already so, or DBP_EENGINE. */
static int mdb_ensure_account(MYSQL *m, const char *user, const char *host, const char *hash,
                              long max_conn, const char *const *privs, dbp_err_t *err)
{
    dbp_sb_t q = {0};
    int rc = 0, changed = 0;
    MYSQL_RES *r = NULL;
    dbp_sb_printf(&q, "SELECT plugin, authentication_string, max_user_connections FROM mysql.user "
                  "WHERE User = ");
    sb_lit(&q, m, user);
    dbp_sb_printf(&q, " AND Host = ");
    sb_lit(&q, m, host);
    if ((rc = sb_check(&q, err)))
        goto out;
    if (!(r = mdb_query(m, q.buf, err))) {
        rc = DBP_EENGINE;
        goto out;
    }
    MYSQL_ROW row = mysql_fetch_row(r);
    bool exists = row != NULL, same = false;
    if (row) {
        const char *plugin = row[0] ? row[0] : "", *auth = row[1] ? row[1] : "";
        long have_max = row[2] ? strtol(row[2], NULL, 10) : 0;
        same = have_max == max_conn &&
               (hash ? strcmp(plugin, "mysql_native_password") == 0 && strcasecmp(auth, hash) == 0
                     : strcmp(plugin, "unix_socket") == 0);
    }
    mysql_free_result(r);
    r = NULL;
    if (!same) {
        dbp_sb_free(&q);
        dbp_sb_printf(&q, "%s USER ", exists ? "ALTER" : "CREATE");
        sb_account(&q, m, user, host);
        if (hash)
            dbp_sb_printf(&q, " IDENTIFIED BY PASSWORD '%s'", hash);
        else
            dbp_sb_printf(&q, " IDENTIFIED VIA unix_socket");
        dbp_sb_printf(&q, " WITH MAX_USER_CONNECTIONS %ld", max_conn);
        if ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, q.buf, err)))
            goto out;
        changed = 1;
    }
    if (privs && privs[0]) {
        dbp_sb_free(&q);
        dbp_sb_printf(&q, "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
                      "WHERE GRANTEE = CONCAT('''', ");
        sb_lit(&q, m, user);
        dbp_sb_printf(&q, ", '''@''', ");
        sb_lit(&q, m, host);
        dbp_sb_printf(&q, ", '''')");
        if ((rc = sb_check(&q, err)))
            goto out;
        if (!(r = mdb_query(m, q.buf, err))) {
            rc = DBP_EENGINE;
            goto out;
        }
        bool missing = false;
        for (int i = 0; privs[i] && !missing; i++) {
            bool found = false;
            mysql_data_seek(r, 0);
            while ((row = mysql_fetch_row(r)) && !found)
                found = row[0] && strcasecmp(row[0], privs[i]) == 0;
            missing = !found;
        }
        mysql_free_result(r);
        r = NULL;
        if (missing) {
            dbp_sb_free(&q);
            dbp_sb_printf(&q, "GRANT ");
            for (int i = 0; privs[i]; i++)
                dbp_sb_printf(&q, "%s%s", i ? ", " : "", privs[i]);
            dbp_sb_printf(&q, " ON *.* TO ");
            sb_account(&q, m, user, host);
            if ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, q.buf, err)))
                goto out;
            changed = 1;
        }
    }
    rc = changed;
out:
    if (r)
        mysql_free_result(r);
    dbp_sb_free(&q);
    return rc;
}

/* Accounts dbplane owns; a User may not take them over. */
bool mdb_reserved_user(const engine_instance_t *in, const char *u)
{
    return strcmp(u, "root") == 0 || strcmp(u, "mariadb.sys") == 0 ||
           strcmp(u, MDB_REPL_USER) == 0 || strcmp(u, MDB_MONITOR_USER) == 0 ||
           strcmp(u, in->runas->name) == 0 || strcmp(u, in->runas->daemon_name) == 0;
}

/* The hosts of every account named `user`. Returns an owned result whose rows are
 * (Host), or NULL with err filled. */
static MYSQL_RES *mdb_user_hosts(MYSQL *m, const char *user, dbp_err_t *err)
{
    dbp_sb_t q = {0};
    dbp_sb_printf(&q, "SELECT Host FROM mysql.user WHERE User = ");
    sb_lit(&q, m, user);
    dbp_sb_printf(&q, " ORDER BY Host");
    MYSQL_RES *r = sb_check(&q, err) ? NULL : mdb_query(m, q.buf, err);
    dbp_sb_free(&q);
    return r;
}

/* ---- internal accounts, users, databases, grants ------------------------------------ */

int mdb_ensure_internal(const engine_instance_t *primary, const engine_instance_t *replicas,
                        int nreplicas, dbp_err_t *err)
{
    (void)replicas;
    (void)nreplicas;
    if (!primary->repl_password || !primary->admin_password)
        return dbp_err_set(err, DBP_EINVAL, "internal credentials of %s are missing",
                           primary->cluster);
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    char hash[MDB_HASH_LEN + 1];
    int changed = 0, rc;
    static const char *const repl_privs[] = {"REPLICATION SLAVE", "BINLOG MONITOR", NULL};
    static const char *const mon_privs[] = {"SLAVE MONITOR", "BINLOG MONITOR", NULL};
    static const char *const backup_privs[] = {"RELOAD",         "PROCESS",       "LOCK TABLES",
                                               "BINLOG MONITOR", "SLAVE MONITOR", NULL};
    if ((rc = mdb_native_hash(primary->repl_password, hash, err)) ||
        (rc = mdb_ensure_account(m, MDB_REPL_USER, "127.0.0.1", hash, 0, repl_privs, err)) < 0)
        goto out;
    changed |= rc;
    if ((rc = mdb_native_hash(primary->admin_password, hash, err)) ||
        (rc = mdb_ensure_account(m, MDB_MONITOR_USER, "127.0.0.1", hash, 0, mon_privs, err)) < 0)
        goto out;
    changed |= rc;
    /* mariadb-backup runs as the service user; when that is not the daemon's own account
     * (dbplane runs as root), give it a socket-authenticated login with backup rights. */
    if (strcmp(primary->runas->name, primary->runas->daemon_name) != 0) {
        rc = mdb_ensure_account(m, primary->runas->name, "localhost", NULL, 0, backup_privs, err);
        if (rc < 0)
            goto out;
        changed |= rc;
    }
    rc = changed;
out:
    explicit_bzero(hash, sizeof(hash));
    mysql_close(m);
    return rc;
}

int mdb_ensure_user(const engine_instance_t *primary, const spec_user_t *user,
                    const char *password, dbp_err_t *err)
{
    const char *u = user->username.v;
    const char *host = user->host.v && *user->host.v ? user->host.v : "%";
    if (mdb_reserved_user(primary, u))
        return dbp_err_set(err, DBP_EINVAL, "user %s is reserved for dbplane and the server", u);
    char hash[MDB_HASH_LEN + 1];
    int rc = mdb_native_hash(password, hash, err);
    if (rc)
        return rc;
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    long max = user->max_user_connections.set && user->max_user_connections.v > 0
                   ? (long)user->max_user_connections.v
                   : 0;
    rc = mdb_ensure_account(m, u, host, hash, max, NULL, err);
    explicit_bzero(hash, sizeof(hash));
    mysql_close(m);
    return rc;
}

/* Character set and collation names: letters, digits, underscore. */
static bool mdb_charset_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

int mdb_ensure_database(const engine_instance_t *primary, const spec_database_t *db,
                        dbp_err_t *err)
{
    const char *cs = db->charset.v && *db->charset.v ? db->charset.v : "utf8mb4";
    const char *co = db->collation.v && *db->collation.v ? db->collation.v : NULL;
    if (!mdb_charset_name_ok(cs) || (co && !mdb_charset_name_ok(co)))
        return dbp_err_set(err, DBP_EINVAL, "invalid character set or collation name");
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    dbp_sb_t q = {0};
    MYSQL_RES *r = NULL;
    int rc;
    dbp_sb_printf(&q, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                  "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ");
    sb_lit(&q, m, db->name.v);
    if ((rc = sb_check(&q, err)))
        goto out;
    if (!(r = mdb_query(m, q.buf, err))) {
        rc = DBP_EENGINE;
        goto out;
    }
    MYSQL_ROW row = mysql_fetch_row(r);
    bool exists = row != NULL;
    bool same = exists && row[0] && strcasecmp(row[0], cs) == 0 &&
                (!co || (row[1] && strcasecmp(row[1], co) == 0));
    mysql_free_result(r);
    rc = 0;
    if (!same) {
        dbp_sb_free(&q);
        dbp_sb_printf(&q, "%s DATABASE ", exists ? "ALTER" : "CREATE");
        sb_ident(&q, db->name.v);
        dbp_sb_printf(&q, " CHARACTER SET %s", cs);
        if (co)
            dbp_sb_printf(&q, " COLLATE %s", co);
        if ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, q.buf, err)))
            goto out;
        rc = 1;
    }
out:
    dbp_sb_free(&q);
    mysql_close(m);
    return rc;
}

/* MariaDB 10.11's privileges at database level (what ALL PRIVILEGES on db.* means), and
 * the subset valid on one table, spelled as information_schema spells them. */
static const char *const mdb_db_privs[] = {
    "SELECT",        "INSERT",     "UPDATE",      "DELETE",         "CREATE",
    "DROP",          "REFERENCES", "INDEX",       "ALTER",          "CREATE TEMPORARY TABLES",
    "LOCK TABLES",   "EXECUTE",    "CREATE VIEW", "SHOW VIEW",      "CREATE ROUTINE",
    "ALTER ROUTINE", "EVENT",      "TRIGGER",     "DELETE HISTORY", NULL};
static const char *const mdb_table_privs[] = {
    "SELECT", "INSERT", "UPDATE",      "DELETE",    "CREATE",  "DROP",           "REFERENCES",
    "INDEX",  "ALTER",  "CREATE VIEW", "SHOW VIEW", "TRIGGER", "DELETE HISTORY", NULL};
/* Server-wide privileges, which a Grant on a database cannot give. */
/* clang-format off */
static const char *const mdb_global_privs[] = {
    "FILE", "PROCESS", "RELOAD", "SHUTDOWN", "SUPER", "CREATE USER", "CREATE TABLESPACE",
    "REPLICATION SLAVE", "REPLICATION CLIENT", "BINLOG MONITOR", "SLAVE MONITOR",
    "REPLICA MONITOR", "BINLOG ADMIN", "BINLOG REPLAY", "CONNECTION ADMIN", "READ_ONLY ADMIN",
    "REPLICATION MASTER ADMIN", "REPLICATION SLAVE ADMIN", "SET USER", "FEDERATED ADMIN",
    "SHOW DATABASES", "GRANT OPTION", "USAGE", "PROXY", NULL};
/* clang-format on */

static int priv_index(const char *const *list, const char *p)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], p) == 0)
            return i;
    return -1;
}

/* Upper-cases a privilege name and collapses runs of blanks to one space. */
static void priv_norm(const char *p, char *buf, size_t len)
{
    size_t o = 0;
    bool space = false;
    for (; *p && o + 1 < len; p++) {
        if (isspace((unsigned char)*p) || *p == '_') {
            space = o > 0;
            continue;
        }
        if (space && o + 2 < len)
            buf[o++] = ' ';
        space = false;
        buf[o++] = (char)toupper((unsigned char)*p);
    }
    buf[o] = '\0';
    if (strcmp(buf, "READ ONLY ADMIN") == 0)
        snprintf(buf, len, "READ_ONLY ADMIN");
}

int mdb_ensure_grant(const engine_instance_t *primary, const spec_grant_t *g, dbp_err_t *err)
{
    const char *const *valid = g->table.set && g->table.v ? mdb_table_privs : mdb_db_privs;
    bool want[32] = {false};
    for (size_t i = 0; i < g->privileges.n; i++) {
        char p[64];
        priv_norm(g->privileges.v[i], p, sizeof(p));
        if (strcmp(p, "ALL") == 0 || strcmp(p, "ALL PRIVILEGES") == 0) {
            for (int k = 0; valid[k]; k++)
                want[k] = true;
            continue;
        }
        int k = priv_index(valid, p);
        if (k >= 0) {
            want[k] = true;
        } else if (priv_index(mdb_global_privs, p) >= 0) {
            return dbp_err_set(err, DBP_EINVAL,
                               "privilege %s is server-wide (or set with "
                               "grantOption); a Grant gives privileges on a %s only",
                               g->privileges.v[i], valid == mdb_db_privs ? "database" : "table");
        } else {
            return dbp_err_set(err, DBP_EINVAL, "privilege %s is not a MariaDB %s privilege",
                               g->privileges.v[i], valid == mdb_db_privs ? "database" : "table");
        }
    }
    bool grant_opt = g->grant_option.set && g->grant_option.v;
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    dbp_sb_t q = {0}, obj = {0};
    MYSQL_RES *hosts = NULL, *r = NULL;
    char *dbname = NULL;
    int rc = 0, changed = 0;
    if (!(hosts = mdb_user_hosts(m, g->username.v, err))) {
        rc = DBP_EENGINE;
        goto out;
    }
    if (mysql_num_rows(hosts) == 0) {
        rc = dbp_err_set(err, DBP_ENOENT, "user %s does not exist on %s", g->username.v,
                         primary->name);
        goto out;
    }
    /* db.* with the wildcards escaped, or db.table. */
    if (!(dbname = wild_escape(g->database.v))) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    if (valid == mdb_db_privs) {
        sb_ident(&obj, dbname);
        dbp_sb_printf(&obj, ".*");
    } else {
        sb_ident(&obj, g->database.v);
        dbp_sb_printf(&obj, ".");
        sb_ident(&obj, g->table.v);
    }
    if ((rc = sb_check(&obj, err)))
        goto out;
    MYSQL_ROW hrow;
    while ((hrow = mysql_fetch_row(hosts))) {
        const char *host = hrow[0] ? hrow[0] : "";
        /* What the account already holds on that object. */
        dbp_sb_free(&q);
        if (valid == mdb_db_privs) {
            dbp_sb_printf(&q, "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM "
                          "information_schema.SCHEMA_PRIVILEGES WHERE TABLE_SCHEMA = ");
            sb_lit(&q, m, dbname);
        } else {
            dbp_sb_printf(&q, "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM "
                          "information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = ");
            sb_lit(&q, m, g->database.v);
            dbp_sb_printf(&q, " AND TABLE_NAME = ");
            sb_lit(&q, m, g->table.v);
        }
        dbp_sb_printf(&q, " AND GRANTEE = CONCAT('''', ");
        sb_lit(&q, m, g->username.v);
        dbp_sb_printf(&q, ", '''@''', ");
        sb_lit(&q, m, host);
        dbp_sb_printf(&q, ", '''')");
        if ((rc = sb_check(&q, err)))
            goto out;
        if (!(r = mdb_query(m, q.buf, err))) {
            rc = DBP_EENGINE;
            goto out;
        }
        bool have[32] = {false}, grantable = false;
        MYSQL_ROW row;
        while ((row = mysql_fetch_row(r))) {
            int k = row[0] ? priv_index(valid, row[0]) : -1;
            if (k >= 0)
                have[k] = true;
            if (row[1] && strcmp(row[1], "YES") == 0)
                grantable = true;
        }
        mysql_free_result(r);
        r = NULL;
        bool missing = grant_opt && !grantable;
        for (int k = 0; valid[k]; k++)
            if (want[k] && !have[k])
                missing = true;
        if (!missing)
            continue;
        dbp_sb_free(&q);
        dbp_sb_printf(&q, "GRANT ");
        int n = 0;
        for (int k = 0; valid[k]; k++)
            if (want[k])
                dbp_sb_printf(&q, "%s%s", n++ ? ", " : "", valid[k]);
        if (n == 0)
            dbp_sb_printf(&q, "USAGE");
        dbp_sb_printf(&q, " ON %s TO ", obj.buf);
        sb_account(&q, m, g->username.v, host);
        if (grant_opt)
            dbp_sb_printf(&q, " WITH GRANT OPTION");
        if ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, q.buf, err)))
            goto out;
        changed = 1;
    }
    rc = changed;
out:
    if (r)
        mysql_free_result(r);
    if (hosts)
        mysql_free_result(hosts);
    free(dbname);
    dbp_sb_free(&q);
    dbp_sb_free(&obj);
    mysql_close(m);
    return rc;
}

int mdb_drop_user(const engine_instance_t *primary, const char *username, dbp_err_t *err)
{
    if (mdb_reserved_user(primary, username))
        return dbp_err_set(err, DBP_EINVAL, "user %s is reserved for dbplane and the server",
                           username);
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    int rc = 0;
    MYSQL_RES *hosts = mdb_user_hosts(m, username, err);
    if (!hosts) {
        rc = DBP_EENGINE;
    } else {
        MYSQL_ROW row;
        while (rc == 0 && (row = mysql_fetch_row(hosts))) {
            dbp_sb_t q = {0};
            dbp_sb_printf(&q, "DROP USER IF EXISTS ");
            sb_account(&q, m, username, row[0] ? row[0] : "");
            if (!(rc = sb_check(&q, err)))
                rc = mdb_cmd(m, q.buf, err);
            dbp_sb_free(&q);
        }
        mysql_free_result(hosts);
    }
    mysql_close(m);
    return rc;
}

/* SqlJob: as a declared user (its own login over the socket; MariaDB has no SET ROLE to
 * an account) or as dbplane's admin. The script runs between START TRANSACTION and
 * COMMIT; DDL commits implicitly as MariaDB always does. */
int mdb_run_sql(const engine_instance_t *primary, const char *database, const char *username,
                const char *password, const char *sql, dbp_err_t *err)
{
    char sock[PATH_MAX];
    mdb_sock(primary, sock, sizeof(sock));
    MYSQL *m =
        mdb_open(primary->name, sock, NULL, 0, username ? username : primary->runas->daemon_name,
                 username ? (password ? password : "") : NULL, database, 3000, 3600,
                 CLIENT_MULTI_STATEMENTS, err);
    if (!m)
        return DBP_EENGINE;
    int rc = mdb_cmd(m, "START TRANSACTION", err);
    if (rc == 0) {
        int nstmt = 1;
        int st = mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0 ? 1 : 0;
        while (st == 0) {
            MYSQL_RES *r = mysql_store_result(m);
            if (r)
                mysql_free_result(r);
            st = mysql_next_result(m); /* 0: another result, -1: done, >0: that one failed */
            if (st >= 0)
                nstmt++;
        }
        if (st > 0)
            rc = dbp_err_set(err, DBP_EENGINE, "statement %d: %s (error %u)", nstmt, mysql_error(m),
                             mysql_errno(m));
    }
    dbp_err_t ignore;
    if (rc == 0)
        rc = mdb_cmd(m, "COMMIT", err);
    else if (mdb_cmd(m, "ROLLBACK", &ignore) != 0)
        dbp_debug("rollback_failed", "instance=%s", primary->name);
    mysql_close(m);
    return rc;
}
