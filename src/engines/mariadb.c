/*
 * mariadb.c: the MariaDB driver (engine.h) over MariaDB Connector/C and the server's own
 * tools (mariadb-install-db, mariadb-backup, mbstream), for Debian's MariaDB 10.11.
 *
 * Layout and security model on one machine: every instance has its option file at
 * <instance dir>/my.cnf, listens on 127.0.0.1:<port> and on <sock_dir>/mysqld.sock, and
 * runs as the service user. dbplane's admin connection needs no password: the data
 * directory is created with `--auth-root-authentication-method=socket`, so the account
 * named after the daemon's OS user ('root'@'localhost' when dbplane runs as root) logs in
 * through the unix_socket plugin over the socket only. Internal accounts are created on
 * the primary and reach the replicas through replication:
 *   - 'dbplane_repl'@'127.0.0.1' (REPLICATION SLAVE, BINLOG MONITOR) with the cluster's
 *     generated replication password;
 *   - 'dbplane_monitor'@'127.0.0.1' (SLAVE MONITOR, BINLOG MONITOR) with the cluster's
 *     generated admin password, which the primary's probe uses to read each replica's
 *     lag over TCP;
 *   - '<service user>'@'localhost' via unix_socket with the privileges mariadb-backup
 *     needs, so the clone tool, running as the service user, needs no password either.
 * Passwords are sent to the server only as mysql_native_password hashes computed here
 * (SHA1(SHA1(pw)), the value PASSWORD() returns), so no plaintext reaches the binary log,
 * the replicas or a processlist; drift is found by comparing those hashes.
 *
 * The one plaintext secret the server keeps is the replication password in the replica's
 * master.info (0660 in the 0700 data directory of the service user): MariaDB 10.11 has no
 * other place for it (no credential store, no encrypted master.info), so it is scoped to
 * an account that can only read the binary log, from 127.0.0.1.
 *
 * Replicas are cloned with `mariadb-backup --backup --stream=xbstream | mbstream -x`
 * from the running primary and prepared; the GTID of the backup (xtrabackup_binlog_info)
 * becomes @@gtid_slave_pos and the replica follows with MASTER_USE_GTID=slave_pos. The
 * engine interface has no `follow` operation yet, so render_config does it for replicas
 * whose server answers: it runs on every reconcile pass and is idempotent. promote lets a
 * replica apply what it received, forgets its primary and leaves read_only. rejoin starts
 * a fenced former primary privately and lets it follow the new primary when its GTIDs are
 * all there (else the caller clones it again); in sync mode every instance runs
 * semi-synchronous replication (AFTER_SYNC, non-strict: see docs/mariadb.md). A server
 * starts read-only unless the topology names it primary; in 10.11 read_only also binds
 * SUPER (only READ_ONLY ADMIN, held by dbplane's admin alone, bypasses it), which is what
 * MySQL's super_read_only gives and MariaDB has no separate switch for.
 *
 * The driver is three files around mariadb_int.h: this one (installation, configuration,
 * replication, probe, promote and the ops table), mariadb_sql.c (connections, accounts,
 * databases, grants, SqlJob) and mariadb_backup.c (backups, restores, inventories).
 */
#include "engines/mariadb_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mysql.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/strbuf.h"

/* ---- installation ------------------------------------------------------------------- */

static pthread_mutex_t mdb_version_lock = PTHREAD_MUTEX_INITIALIZER;
static char mdb_version_cache[64];
static struct timespec mdb_version_mtime;

/* The installed server's version ("10.11.19"), cached until the binary changes. */
static int mdb_installed_version(char *buf, size_t len, dbp_err_t *err)
{
    struct stat st;
    if (stat(MDB_SERVER, &st) != 0)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "%s: %s", MDB_SERVER, strerror(errno));
    pthread_mutex_lock(&mdb_version_lock);
    if (mdb_version_cache[0] && st.st_mtim.tv_sec == mdb_version_mtime.tv_sec &&
        st.st_mtim.tv_nsec == mdb_version_mtime.tv_nsec) {
        snprintf(buf, len, "%s", mdb_version_cache);
        pthread_mutex_unlock(&mdb_version_lock);
        return 0;
    }
    int rc = 0;
    char line[256] = "";
    FILE *f = popen(MDB_SERVER " --version 2>/dev/null", "r");
    if (!f) {
        rc = dbp_err_set(err, DBP_EIO, "run %s --version: %s", MDB_SERVER, strerror(errno));
        goto out;
    }
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    int st_exit = pclose(f);
    /* "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu ..." */
    const char *v = strstr(line, "Ver ");
    if (st_exit != 0 || !v) {
        rc = dbp_err_set(err, DBP_EUNSUPPORTED, "%s --version gave no version", MDB_SERVER);
        goto out;
    }
    v += 4;
    size_t n = 0;
    while (v[n] && (isdigit((unsigned char)v[n]) || v[n] == '.') &&
           n + 1 < sizeof(mdb_version_cache))
        n++;
    memcpy(mdb_version_cache, v, n);
    mdb_version_cache[n] = '\0';
    mdb_version_mtime = st.st_mtim;
    snprintf(buf, len, "%s", mdb_version_cache);
out:
    pthread_mutex_unlock(&mdb_version_lock);
    return rc;
}

static int mdb_check_install(const char *version, dbp_err_t *err)
{
    const char *bins[] = {MDB_SERVER, MDB_INSTALL_DB, MDB_BACKUP, MDB_MBSTREAM, MDB_BASH};
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++)
        if (access(bins[i], X_OK) != 0)
            return dbp_err_set(err, DBP_EUNSUPPORTED,
                               "MariaDB is not installed (%s missing): apt-get install "
                               "mariadb-server mariadb-backup",
                               bins[i]);
    char have[64];
    int rc = mdb_installed_version(have, sizeof(have), err);
    if (rc)
        return rc;
    size_t vl = version ? strlen(version) : 0;
    if (vl && (strncmp(have, version, vl) != 0 || (have[vl] != '\0' && have[vl] != '.'))) {
        /* The "major.minor" a spec should name for this server. */
        char mm[64];
        snprintf(mm, sizeof(mm), "%s", have);
        char *dot = strchr(mm, '.');
        if (dot && (dot = strchr(dot + 1, '.')))
            *dot = '\0';
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "MariaDB %s requested but the installed server is %s; set "
                           "spec.version to \"%s\"",
                           version, have, mm);
    }
    return 0;
}

static bool mdb_is_initialized(const engine_instance_t *in)
{
    char p1[PATH_MAX + 32], p2[PATH_MAX + 32];
    snprintf(p1, sizeof(p1), "%s/mysql", in->data_dir);
    snprintf(p2, sizeof(p2), "%s/" MDB_INIT_MARKER, in->dir);
    return access(p1, F_OK) == 0 && access(p2, F_OK) == 0;
}

int mdb_mark_initialized(const engine_instance_t *in, dbp_err_t *err)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/" MDB_INIT_MARKER, in->dir);
    return dbp_write_file(p, "1\n", 2, 0644, NULL, err);
}

/* mariadb-install-db runs as the service user (never as root, where it would need
 * --user): --no-defaults keeps /etc/mysql out, and the socket-authenticated superuser is
 * the daemon's own OS account, so dbplane administers the server without a password. */
static int mdb_init_primary(const engine_instance_t *in, dbp_err_t *err)
{
    int rc = dbp_rm_rf(in->data_dir, err);
    if (rc)
        return rc;
    char datadir[PATH_MAX + 16], sockuser[96];
    snprintf(datadir, sizeof(datadir), "--datadir=%s", in->data_dir);
    snprintf(sockuser, sizeof(sockuser), "--auth-root-socket-user=%s", in->runas->daemon_name);
    char *argv[] = {MDB_INSTALL_DB,
                    "--no-defaults",
                    datadir,
                    "--auth-root-authentication-method=socket",
                    sockuser,
                    "--skip-test-db",
                    "--skip-name-resolve",
                    NULL};
    rc = dbp_proc_run(argv, NULL, in->runas, in->tool_log_path, 300000, err);
    if (rc) {
        dbp_err_prefix(err, "mariadb-install-db: ");
        return rc;
    }
    return mdb_mark_initialized(in, err);
}

/* Clones the running primary: a streamed mariadb-backup (the same pipe works across
 * hosts), then --prepare. The tools run as the service user, which owns the primary's
 * files and logs in over its socket through unix_socket (see ensure_internal). */
/* CHANGE MASTER TO on connection `m` of replica `in`: follow `primary` by GTID
 * (slave_pos) as dbplane's replication account. The statement carries the replication
 * password, so it runs through mdb_cmd_secret (never logged). */
static int mdb_change_master(MYSQL *m, const engine_instance_t *in,
                             const engine_instance_t *primary, dbp_err_t *err)
{
    dbp_sb_t q = {0};
    dbp_sb_printf(&q, "CHANGE MASTER TO MASTER_HOST = ");
    sb_lit(&q, m, primary->host);
    dbp_sb_printf(&q, ", MASTER_PORT = %d, MASTER_USER = '" MDB_REPL_USER "', MASTER_PASSWORD = ",
                  primary->port);
    sb_lit(&q, m, in->repl_password);
    dbp_sb_printf(&q, ", MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1");
    int rc = sb_check(&q, err);
    if (!rc)
        rc = mdb_cmd_secret(m, q.buf, in->repl_password, err);
    dbp_sb_free(&q);
    return rc;
}

static int mdb_init_replica(const engine_instance_t *in, const engine_instance_t *primary,
                            dbp_err_t *err)
{
    int rc = dbp_rm_rf(in->data_dir, err);
    if (!rc)
        rc = dbp_mkdir_p(in->data_dir, 0700, in->runas, err);
    if (rc)
        return rc;
    char pcnf[PATH_MAX + 16], psock[PATH_MAX], target[PATH_MAX + 16];
    mdb_cnf(primary, pcnf, sizeof(pcnf));
    mdb_sock(primary, psock, sizeof(psock));
    /* Paths travel as positional parameters, never spliced into the script. */
    char *clone[] = {MDB_BASH,
                     "-c",
                     "set -o pipefail; \"$1\" --defaults-file=\"$2\" --backup --stream=xbstream "
                     "--user=\"$3\" --socket=\"$4\" | \"$5\" -x -C \"$6\"",
                     "dbplane-clone",
                     MDB_BACKUP,
                     pcnf,
                     (char *)in->runas->name,
                     psock,
                     MDB_MBSTREAM,
                     (char *)in->data_dir,
                     NULL};
    dbp_info("mariadb_clone_started", "instance=%s primary=%s", in->name, primary->name);
    rc = dbp_proc_run(clone, NULL, in->runas, in->tool_log_path, 30 * 60 * 1000, err);
    if (rc) {
        dbp_err_prefix(err, "mariadb-backup --backup: ");
    } else {
        snprintf(target, sizeof(target), "--target-dir=%s", in->data_dir);
        char *prepare[] = {MDB_BACKUP, "--prepare", target, NULL};
        rc = dbp_proc_run(prepare, NULL, in->runas, in->tool_log_path, 30 * 60 * 1000, err);
        if (rc)
            dbp_err_prefix(err, "mariadb-backup --prepare: ");
    }
    if (rc) {
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
        return rc;
    }
    return mdb_mark_initialized(in, err);
}

/* ---- configuration ------------------------------------------------------------------ */

/* Normalises an option name the way mariadbd reads it: lower case, '-' as '_'. */
static void opt_norm(const char *k, char *buf, size_t len)
{
    size_t o = 0;
    for (const char *p = k; *p && o + 1 < len; p++)
        buf[o++] = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
    buf[o] = '\0';
}

/* True when spec.config may not set `key`: dbplane sets it from the instance layout, the
 * role or another spec field. Prefixes such as loose_/skip_/enable_ are seen through. */
static bool mdb_key_managed(const char *key, const char **hint)
{
    /* clang-format off */
    static const char *const managed[] = {
        "port", "bind_address", "socket", "datadir", "pid_file", "server_id", "log_bin",
        "log_basename", "relay_log", "binlog_format", "log_slave_updates", "read_only",
        "report_host", "report_port", "networking", "skip_networking", "grant_tables",
        "skip_grant_tables", "user", "slave_start", "skip_slave_start", "basedir",
        "rpl_semi_sync_master_enabled", "rpl_semi_sync_slave_enabled",
        "rpl_semi_sync_master_wait_point", NULL};
    /* clang-format on */
    char k[128];
    opt_norm(key, k, sizeof(k));
    const char *base = k;
    const char *prefixes[] = {"loose_", "enable_", "disable_", "skip_", "maximum_"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(base, prefixes[i], strlen(prefixes[i])) == 0) {
            base += strlen(prefixes[i]);
            break;
        }
    *hint = "dbplane sets it from the cluster's layout and topology";
    if (strncmp(base, "rpl_semi_sync_", 14) == 0 && strcmp(base, "rpl_semi_sync_master_timeout")) {
        *hint = "use spec.replication.mode (sync: semi-synchronous replication)";
        for (int i = 0; managed[i]; i++)
            if (strcmp(base, managed[i]) == 0)
                return true;
    }
    if (strcmp(base, "gtid_strict_mode") == 0) {
        *hint = "use spec.replication.gtidStrictMode";
        return true;
    }
    for (int i = 0; managed[i]; i++)
        if (strcmp(k, managed[i]) == 0 || strcmp(base, managed[i]) == 0)
            return true;
    return false;
}

/* Seconds of binary logs a server keeps unless spec.config says otherwise (7 days). */
#define MDB_BINLOG_EXPIRE_S (7 * 24 * 3600)

/* True when a config value was set in spec.config (normalised name comparison). */
static bool mdb_key_set(const spec_cluster_t *c, const char *name)
{
    for (size_t i = 0; i < c->config.n; i++) {
        char k[128];
        opt_norm(c->config.v[i].key, k, sizeof(k));
        if (strcmp(k, name) == 0)
            return true;
    }
    return false;
}

/* Appends one option line; values with spaces, quotes or '#' are double-quoted. */
static int sb_option(dbp_sb_t *sb, const char *key, const char *value, dbp_err_t *err)
{
    for (const char *p = key; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return dbp_err_set(err, DBP_EINVAL, "spec.config.%s: not a MariaDB option name", key);
    if (strpbrk(value, "\n\r"))
        return dbp_err_set(err, DBP_EINVAL, "spec.config.%s: value has a line break", key);
    bool quote = *value == '\0' || strpbrk(value, " \t#;\"'\\") != NULL;
    dbp_sb_printf(sb, "%s = ", key);
    if (!quote) {
        dbp_sb_printf(sb, "%s\n", value);
        return 0;
    }
    dbp_sb_printf(sb, "\"");
    for (const char *p = value; *p; p++)
        dbp_sb_printf(sb, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    dbp_sb_printf(sb, "\"\n");
    return 0;
}

/* Lets the installed server judge an option file: `mariadbd --defaults-file=F --help`
 * parses every option exactly as a start would and fails on unknown names and bad
 * values, so a mistake becomes an error status instead of a crash loop. The data dir is
 * pointed elsewhere so the running server's files are not opened. */
static int mdb_check_config(const engine_instance_t *in, const char *path, dbp_err_t *err)
{
    char defaults[PATH_MAX + 32], datadir[PATH_MAX + 32], log[PATH_MAX + 32];
    snprintf(defaults, sizeof(defaults), "--defaults-file=%s", path);
    snprintf(datadir, sizeof(datadir), "--datadir=%s/.config-check", in->dir);
    snprintf(log, sizeof(log), "%s/config-check.log", in->dir);
    unlink(log);
    char *argv[] = {MDB_SERVER, defaults, datadir, "--verbose", "--help", NULL};
    dbp_err_t perr;
    int rc = dbp_proc_run(argv, NULL, in->runas, log, 60000, &perr);
    if (rc == 0) {
        unlink(log); /* the full help text: only a failure's log is worth keeping */
        return 0;
    }
    /* Collect the server's own [ERROR] lines as the message. */
    char *text = NULL, msg[400] = "";
    if (dbp_read_file(log, &text, NULL, &perr) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            char *e = strstr(line, "[ERROR] ");
            if (!e)
                continue;
            e += 8;
            if (strncmp(e, "Buffered error: ", 16) == 0)
                e += 16;
            if (strncmp(e, MDB_SERVER ": ", strlen(MDB_SERVER) + 2) == 0)
                e += strlen(MDB_SERVER) + 2;
            if (strncmp(e, "Aborting", 8) == 0)
                continue;
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof(msg) - l, "%s%s", l ? "; " : "", e);
        }
        free(text);
    }
    return dbp_err_set(err, DBP_EINVAL, "mariadbd rejects the configuration: %s",
                       msg[0] ? msg : perr.msg);
}

/* Appends an option-file value as a SQL value: sizes with a K/M/G suffix as bytes, numbers
 * as they are, anything else (ON, enum names, paths) as a string literal. */
static void sb_sql_value(dbp_sb_t *sb, MYSQL *m, const char *v)
{
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (isdigit((unsigned char)v[0])) {
        int shift = toupper((unsigned char)*end) == 'K'   ? 10
                    : toupper((unsigned char)*end) == 'M' ? 20
                    : toupper((unsigned char)*end) == 'G' ? 30
                                                          : -1;
        if (shift > 0 && end[1] == '\0') {
            dbp_sb_printf(sb, "%llu", n << shift);
            return;
        }
    }
    if (*v && strspn(v, "0123456789.-") == strlen(v))
        dbp_sb_printf(sb, "%s", v);
    else
        sb_lit(sb, m, v);
}

static void mdb_apply_semi_sync(const engine_instance_t *in, MYSQL *m);

/* After my.cnf changed under a running server: SET GLOBAL for every spec.config option,
 * so dynamic ones apply at once; the others take effect at the next restart (logged). */
static void mdb_apply_running(const engine_instance_t *in)
{
    char sock[PATH_MAX];
    mdb_sock(in, sock, sizeof(sock));
    dbp_err_t err;
    MYSQL *m = access(sock, F_OK) == 0 ? mdb_connect(in, false, &err) : NULL;
    if (!m)
        return;
    mdb_apply_semi_sync(in, m);
    const spec_map_t *cfg = &in->spec->config;
    for (size_t i = 0; i < cfg->n; i++) {
        char k[128];
        opt_norm(cfg->v[i].key, k, sizeof(k));
        const char *name = strncmp(k, "loose_", 6) == 0 ? k + 6 : k;
        if (strchr(name, '.') || strncmp(name, "skip_", 5) == 0 ||
            strncmp(name, "enable_", 7) == 0 || strncmp(name, "disable_", 8) == 0)
            continue;
        dbp_sb_t q = {0};
        dbp_sb_printf(&q, "SET GLOBAL %s = ", name);
        sb_sql_value(&q, m, cfg->v[i].value);
        if (sb_check(&q, &err) == 0 && mdb_cmd(m, q.buf, &err) == 0)
            dbp_info("mariadb_option_applied", "instance=%s option=%s", in->name, name);
        else
            dbp_warn("mariadb_restart_required", "instance=%s option=%s reason=%s", in->name, name,
                     dbp_log_q(err.msg));
        dbp_sb_free(&q);
    }
    mysql_close(m);
}

static int mdb_follow(const engine_instance_t *in, const engine_instance_t *primary,
                      dbp_err_t *err);

/* slave_net_timeout in seconds: a replica must notice a hung primary about when the HA
 * monitor's failcount runs out (the monitor fails over only once no replica still sees the
 * primary, see ha/): (failcount - 1) x interval, 2 .. 10 s. The primary's heartbeat
 * (MASTER_HEARTBEAT_PERIOD) defaults to half of it, so an idle link stays up. */
static int64_t mdb_net_timeout_s(const spec_cluster_t *c)
{
    int64_t fc = c->failover.failcount.v > 0 ? c->failover.failcount.v : 3;
    int64_t s = ((c->failover.interval.ms > 0 ? c->failover.interval.ms : 1000) *
                     (fc > 1 ? fc - 1 : 1) + 999) / 1000;
    return s < 2 ? 2 : s > 10 ? 10 : s;
}

/* True when the Cluster spec asks for synchronous replication (`sync`, or `semi-sync`,
 * which MariaDB implements the same way). */
static bool mdb_sync_mode(const spec_cluster_t *c)
{
    return c->replication.mode == SPEC_REPL_SYNC || c->replication.mode == SPEC_REPL_SEMI_SYNC;
}

/* rpl_semi_sync_master_timeout in ms: how long a commit waits for a replica's ack before
 * the primary falls back to asynchronous replication (non-strict, as PostgreSQL's sync
 * mode, see docs/reliability.md): one failover interval, 500 .. 10000 ms. */
static int64_t mdb_semi_sync_timeout_ms(const spec_cluster_t *c)
{
    int64_t ms = c->failover.interval.ms > 0 ? c->failover.interval.ms : 1000;
    return ms < 500 ? 500 : ms > 10000 ? 10000 : ms;
}

/* The semi-synchronous replication settings of the spec's replication mode, as
 * (variable, value) pairs for my.cnf and SET GLOBAL; both roles get the same ones, so a
 * promoted replica waits for acks and a rejoined primary sends them. Returns the count
 * (0 in async mode: the server's defaults, semi-sync off). */
static int mdb_semi_sync_vars(const spec_cluster_t *c, const char *names[4], char values[4][24])
{
    if (!mdb_sync_mode(c))
        return 0;
    names[0] = "rpl_semi_sync_master_enabled";
    names[1] = "rpl_semi_sync_slave_enabled";
    names[2] = "rpl_semi_sync_master_wait_point";
    names[3] = "rpl_semi_sync_master_timeout";
    snprintf(values[0], sizeof(values[0]), "ON");
    snprintf(values[1], sizeof(values[1]), "ON");
    snprintf(values[2], sizeof(values[2]), "AFTER_SYNC");
    if (mdb_key_set(c, "rpl_semi_sync_master_timeout"))
        return 3; /* spec.config sets it */
    snprintf(values[3], sizeof(values[3]), "%lld", (long long)mdb_semi_sync_timeout_ms(c));
    return 4;
}

/* Brings a running server's semi-sync globals to the spec's mode (ON in sync mode, OFF
 * otherwise); a replica whose slave side changed restarts its IO thread, which only
 * reads rpl_semi_sync_slave_enabled when it connects. Best effort: logged. */
static void mdb_apply_semi_sync(const engine_instance_t *in, MYSQL *m)
{
    const char *names[4];
    char values[4][24];
    int n = mdb_semi_sync_vars(in->spec, names, values);
    dbp_err_t err;
    char cur[32];
    if (n == 0) {
        names[0] = "rpl_semi_sync_master_enabled";
        names[1] = "rpl_semi_sync_slave_enabled";
        snprintf(values[0], sizeof(values[0]), "OFF");
        snprintf(values[1], sizeof(values[1]), "OFF");
        n = 2;
    }
    for (int i = 0; i < n; i++) {
        char q[160];
        snprintf(q, sizeof(q), "SELECT @@%s", names[i]);
        if (mdb_scalar(m, q, cur, sizeof(cur), &err) != 0)
            continue;
        bool on = strcmp(values[i], "ON") == 0, off = strcmp(values[i], "OFF") == 0;
        if ((on && strcmp(cur, "1") == 0) || (off && strcmp(cur, "0") == 0) ||
            strcasecmp(cur, values[i]) == 0)
            continue;
        bool num = strspn(values[i], "0123456789") == strlen(values[i]);
        snprintf(q, sizeof(q), num || on || off ? "SET GLOBAL %s = %s" : "SET GLOBAL %s = '%s'",
                 names[i], values[i]);
        if (mdb_cmd(m, q, &err) != 0) {
            dbp_warn("mariadb_semi_sync_failed", "instance=%s option=%s error=%s", in->name,
                     names[i], dbp_log_q(err.msg));
            continue;
        }
        dbp_info("mariadb_option_applied", "instance=%s option=%s value=%s", in->name, names[i],
                 values[i]);
        mdb_slave_t s;
        if (strcmp(names[i], "rpl_semi_sync_slave_enabled") == 0 &&
            mdb_slave_status(m, &s, &err) == 0 && s.configured && strcmp(s.io, "No") != 0 &&
            (mdb_cmd(m, "STOP SLAVE IO_THREAD", &err) != 0 ||
             mdb_cmd(m, "START SLAVE IO_THREAD", &err) != 0))
            dbp_warn("mariadb_semi_sync_failed", "instance=%s error=%s", in->name,
                     dbp_log_q(err.msg));
    }
}

static int mdb_render_config(const engine_instance_t *in, const engine_instance_t *primary,
                             dbp_err_t *err)
{
    const spec_cluster_t *c = in->spec;
    dbp_sb_t cnf = {0};
    int rc = 0;
    char sock[PATH_MAX], path[PATH_MAX + 32], cand[PATH_MAX + 32], rej[PATH_MAX + 32],
        rejmsg[PATH_MAX + 32];
    mdb_sock(in, sock, sizeof(sock));
    mdb_cnf(in, path, sizeof(path));
    snprintf(cand, sizeof(cand), "%s.new", path);
    snprintf(rej, sizeof(rej), "%s.rejected", path);
    snprintf(rejmsg, sizeof(rejmsg), "%s.rejected.msg", path);
    bool strict = !c->replication.gtid_strict_mode.set || c->replication.gtid_strict_mode.v;

    dbp_sb_printf(&cnf,
              "# Written by dbplane for instance %s of cluster %s; edits are replaced.\n"
              "# Set server options in the Cluster's spec.config instead.\n"
              "[mariadbd]\n",
              in->name, in->cluster);
    dbp_sb_printf(&cnf,
              "server_id = %d\nport = %d\nbind_address = %s\nsocket = %s\n"
              "datadir = %s\npid_file = %s/mariadbd.pid\nskip_name_resolve = ON\n",
              in->ordinal + 1, in->port, in->host, sock, in->data_dir, in->data_dir);
    dbp_sb_printf(&cnf,
              "log_bin = mariadb-bin\nrelay_log = relay-bin\nrelay_log_recovery = ON\n"
              "binlog_format = ROW\nlog_slave_updates = ON\ngtid_strict_mode = %s\n"
              "sync_binlog = 1\nslave_net_timeout = %lld\n"
              "report_host = %s\nreport_port = %d\n"
              "character_set_server = utf8mb4\n",
              strict ? "ON" : "OFF", (long long)mdb_net_timeout_s(c), in->name, in->port);
    if (primary)
        dbp_sb_printf(&cnf,
                  "# A replica of %s: writable by dbplane's admin account only.\n"
                  "read_only = ON\n",
                  primary->name);
    else
        dbp_sb_printf(&cnf, "read_only = OFF\n");
    const char *ssn[4];
    char ssv[4][24];
    int nss = mdb_semi_sync_vars(c, ssn, ssv);
    if (nss)
        dbp_sb_printf(&cnf, "# replication.mode %s: semi-synchronous, non-strict (a commit waits "
                      "for one replica's ack, at most rpl_semi_sync_master_timeout ms)\n",
                      c->replication.mode == SPEC_REPL_SYNC ? "sync" : "semi-sync");
    for (int i = 0; i < nss; i++)
        dbp_sb_printf(&cnf, "%s = %s\n", ssn[i], ssv[i]);
    /* MariaDB keeps binary logs forever by default: on a server that runs for months they
     * fill the disk. A week of them serves a replica that was away that long (one away
     * longer gets error 1236 and is rebuilt, docs/mariadb.md) and gives the PITR archiver
     * a week to ship them; spec.config may set another expiry. */
    if (!mdb_key_set(c, "binlog_expire_logs_seconds") && !mdb_key_set(c, "expire_logs_days"))
        dbp_sb_printf(&cnf, "binlog_expire_logs_seconds = %d\n", MDB_BINLOG_EXPIRE_S);
    if (!mdb_key_set(c, "innodb_buffer_pool_size") && c->memory.set && c->memory.v >= 64ULL << 20) {
        /* Half of the declared memory, in whole MiB: the rest is for connections,
         * sort buffers and the OS page cache of the binary logs. */
        dbp_sb_printf(&cnf, "innodb_buffer_pool_size = %lluM\n",
                  (unsigned long long)(c->memory.v / 2 / (1024 * 1024)));
    }
    if (c->config.n)
        dbp_sb_printf(&cnf, "# spec.config\n");
    for (size_t i = 0; i < c->config.n; i++) {
        const char *hint;
        if (mdb_key_managed(c->config.v[i].key, &hint)) {
            rc = dbp_err_set(err, DBP_EINVAL, "spec.config.%s cannot be set: %s",
                             c->config.v[i].key, hint);
            goto out;
        }
        if ((rc = sb_option(&cnf, c->config.v[i].key, c->config.v[i].value, err)))
            goto out;
    }
    if ((rc = sb_check(&cnf, err)))
        goto out;

    if (!dbp_file_equals(path, cnf.buf, cnf.len)) {
        /* A candidate the server already rejected is not checked again every pass. */
        if (dbp_file_equals(rej, cnf.buf, cnf.len)) {
            char *m = NULL;
            dbp_err_t ignore;
            if (dbp_read_file(rejmsg, &m, NULL, &ignore) == 0) {
                rc = dbp_err_set(err, DBP_EINVAL, "%s", m);
                free(m);
                goto out;
            }
        }
        if ((rc = dbp_write_file(cand, cnf.buf, cnf.len, 0600, in->runas, err)))
            goto out;
        rc = mdb_check_config(in, cand, err);
        if (rc) {
            dbp_err_t ignore;
            if (rename(cand, rej) != 0 ||
                dbp_write_file(rejmsg, err->msg, strlen(err->msg), 0600, NULL, &ignore) != 0)
                unlink(rej);
            goto out;
        }
        if (rename(cand, path) != 0) {
            rc = dbp_err_set(err, DBP_EIO, "rename %s: %s", cand, strerror(errno));
            goto out;
        }
        unlink(rej);
        unlink(rejmsg);
        mdb_apply_running(in);
        rc = 1;
    }
    /* No `follow` operation in engine.h yet: keep the replica following from here. */
    if (primary) {
        int frc = mdb_follow(in, primary, err);
        if (frc < 0)
            rc = frc;
    }
out:
    dbp_sb_free(&cnf);
    return rc;
}

static int mdb_server_argv(const engine_instance_t *in, char **argv, int max, char *buf,
                           size_t buflen, dbp_err_t *err)
{
    if (max < 3)
        return dbp_err_set(err, DBP_EINVAL, "argv too small");
    size_t n0 = strlen(MDB_SERVER) + 1;
    int n1 =
        snprintf(buf + n0, buflen > n0 ? buflen - n0 : 0, "--defaults-file=%s/" MDB_CNF, in->dir);
    if (buflen <= n0 || n1 < 0 || (size_t)n1 >= buflen - n0)
        return dbp_err_set(err, DBP_EINVAL, "path too long");
    memcpy(buf, MDB_SERVER, n0);
    /* The supervisor already runs the server as the service user: no --user. */
    argv[0] = buf;
    argv[1] = buf + n0;
    argv[2] = NULL;
    return 0;
}

/* ---- replication -------------------------------------------------------------------- */

/* The GTID position a clone was taken at, from mariadb-backup's xtrabackup_binlog_info
 * ("<binlog file>\t<offset>\t<gtid list>") in the data dir, path into `path`. False when
 * the file is absent (no clone, or its position was already used). */
bool mdb_backup_gtid(const engine_instance_t *in, char *buf, size_t len, char *path, size_t plen)
{
    char *text = NULL;
    dbp_err_t ignore;
    buf[0] = '\0';
    snprintf(path, plen, "%s/xtrabackup_binlog_info", in->data_dir);
    if (dbp_read_file(path, &text, NULL, &ignore) != 0)
        return false;
    char *f = strchr(text, '\t');
    f = f ? strchr(f + 1, '\t') : NULL;
    size_t n = f ? strspn(++f, "0123456789-,") : 0;
    if (f && n < len) {
        memcpy(buf, f, n);
        buf[n] = '\0';
    }
    free(text);
    return true;
}

/* Makes a running replica follow `primary` over GTID: configures it the first time (the
 * clone's GTID as @@gtid_slave_pos), repoints it when the primary moved, re-sends the
 * password after "access denied" (rotation), and restarts stopped threads. A replica
 * whose server does not answer yet is left to the next pass (0). An SQL thread stopped
 * by an error is reported, not restarted: re-applying would repeat the error. */
static int mdb_follow(const engine_instance_t *in, const engine_instance_t *primary, dbp_err_t *err)
{
    char sock[PATH_MAX];
    mdb_sock(in, sock, sizeof(sock));
    if (access(sock, F_OK) != 0 || !in->repl_password)
        return 0;
    dbp_err_t cerr;
    MYSQL *m = mdb_connect(in, false, &cerr);
    if (!m)
        return 0;
    dbp_sb_t q = {0};
    mdb_slave_t s;
    char val[256];
    int rc = mdb_slave_status(m, &s, err), changed = 0;
    if (rc)
        goto out;
    /* Never writable while it follows, whatever happened to the global since start. */
    if ((rc = mdb_scalar(m, "SELECT @@read_only", val, sizeof(val), err)))
        goto out;
    if (strcmp(val, "0") == 0) {
        if ((rc = mdb_cmd(m, "SET GLOBAL read_only = ON", err)))
            goto out;
        changed = 1;
    }
    bool same = s.configured && strcmp(s.host, primary->host) == 0 && s.port == primary->port &&
                strcmp(s.user, MDB_REPL_USER) == 0 && strcasecmp(s.using_gtid, "Slave_Pos") == 0 &&
                s.io_errno != 1045 /* ER_ACCESS_DENIED_ERROR: the password changed */;
    if (!same) {
        if (s.configured && (rc = mdb_cmd(m, "STOP SLAVE", err)))
            goto out;
        if ((rc = mdb_scalar(m, "SELECT @@gtid_slave_pos", val, sizeof(val), err)))
            goto out;
        /* Where to start. A fresh clone: at the backup's position, whatever the copied
         * mysql.gtid_slave_pos says (a source that once was a replica has an old one). A
         * server that was never a replica but has a binlog: at the end of that binlog.
         * Otherwise (repointing): where it is. */
        char gtid[256], info[PATH_MAX + 40];
        bool clone = !s.configured && mdb_backup_gtid(in, gtid, sizeof(gtid), info, sizeof(info));
        if (clone)
            dbp_sb_printf(&q, "SET GLOBAL gtid_slave_pos = '%s'", gtid);
        else if (val[0] == '\0')
            dbp_sb_printf(&q, "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos");
        if (q.len && ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, q.buf, err))))
            goto out;
        if ((rc = mdb_change_master(m, in, primary, err)))
            goto out;
        if ((rc = mdb_cmd(m, "START SLAVE", err)))
            goto out;
        /* The clone's position is used once: later repoints keep the replica's own. */
        if (clone) {
            char used[PATH_MAX + 48];
            snprintf(used, sizeof(used), "%s.applied", info);
            if (rename(info, used) != 0)
                dbp_warn("rename_failed", "path=%s error=%s", dbp_log_q(info), strerror(errno));
        }
        dbp_err_t ignore;
        if (mdb_scalar(m, "SELECT @@gtid_slave_pos", val, sizeof(val), &ignore) != 0)
            val[0] = '\0';
        dbp_info("replication_configured", "instance=%s primary=%s gtid_slave_pos=%s", in->name,
                 primary->name, val[0] ? val : "(start)");
        changed = 1;
    } else if (s.sql_errno && strcmp(s.sql, "Yes") != 0) {
        rc = dbp_err_set(err, DBP_EENGINE, "replication on %s stopped: %s (error %u)", in->name,
                         s.sql_error, s.sql_errno);
        goto out;
    } else if (s.io_errno && strcmp(s.io, "No") == 0) {
        rc = dbp_err_set(err, DBP_EENGINE, "replication on %s cannot read from %s: %s (error %u)",
                         in->name, primary->name, s.io_error, s.io_errno);
        goto out;
    } else if (strcmp(s.io, "No") == 0 || strcmp(s.sql, "No") == 0) {
        if ((rc = mdb_cmd(m, "START SLAVE", err)))
            goto out;
        changed = 1;
    }
    rc = changed;
out:
    dbp_sb_free(&q);
    mysql_close(m);
    return rc;
}

/* ---- probe -------------------------------------------------------------------------- */

/* A binary log of the primary and its size (SHOW BINARY LOGS). */
typedef struct mdb_binlog {
    char name[128];
    uint64_t size;
} mdb_binlog_t;

/* Bytes of binary log from (file, pos) to the end of the primary's logs; -1 unknown. */
static int64_t mdb_lag_bytes(const mdb_binlog_t *logs, int n, const char *file, uint64_t pos)
{
    int64_t total = 0;
    bool found = false;
    for (int i = 0; i < n; i++) {
        if (!found && strcmp(logs[i].name, file) == 0)
            found = true;
        if (found)
            total += (int64_t)logs[i].size;
    }
    if (!found || (uint64_t)total < pos)
        return -1;
    return total - (int64_t)pos;
}

/* Fills out->replicas from the primary's view (SHOW SLAVE HOSTS: report_host is the
 * instance name, report_port its port), and each replica's own SHOW SLAVE STATUS read
 * over TCP as dbplane_monitor: the byte lag against the primary's binlogs and
 * Seconds_Behind_Master. A replica that cannot be asked keeps lag -1. */
static void mdb_probe_replicas(const engine_instance_t *in, MYSQL *m, engine_probe_t *out)
{
    dbp_err_t err;
    mdb_binlog_t logs[64];
    int nlogs = 0;
    MYSQL_RES *r = mdb_query(m, "SHOW BINARY LOGS", &err);
    if (r) {
        MYSQL_ROW row;
        while ((row = mysql_fetch_row(r))) {
            if (nlogs == 64) { /* keep the newest */
                memmove(logs, logs + 1, sizeof(logs[0]) * 63);
                nlogs--;
            }
            snprintf(logs[nlogs].name, sizeof(logs[nlogs].name), "%s", row[0] ? row[0] : "");
            logs[nlogs++].size = row[1] ? strtoull(row[1], NULL, 10) : 0;
        }
        mysql_free_result(r);
    }
    r = mdb_query(m, "SHOW SLAVE HOSTS", &err);
    if (!r)
        return;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) && out->nreplicas < ENGINE_MAX_REPLICAS) {
        const char *host = mdb_col(r, row, "Host"), *port = mdb_col(r, row, "Port");
        engine_replica_stat_t *rs = &out->replicas[out->nreplicas++];
        snprintf(rs->name, sizeof(rs->name), "%s", host ? host : "");
        snprintf(rs->state, sizeof(rs->state), "connected");
        rs->lag_bytes = rs->lag_ms = -1;
        if (!port || !in->admin_password)
            continue;
        MYSQL *rm = mdb_open(rs->name, NULL, "127.0.0.1", atoi(port), MDB_MONITOR_USER,
                             in->admin_password, NULL, 2000, 2, 0, &err);
        if (!rm)
            continue;
        mdb_slave_t s;
        if (mdb_slave_status(rm, &s, &err) == 0 && s.configured) {
            bool io = strcmp(s.io, "Yes") == 0, sql = strcmp(s.sql, "Yes") == 0;
            snprintf(rs->state, sizeof(rs->state), "%s",
                     io && sql                   ? "streaming"
                     : s.sql_errno || s.io_errno ? "error"
                                                 : "catchup");
            rs->lag_ms = s.behind_s >= 0 ? s.behind_s * 1000 : -1;
            rs->lag_bytes = mdb_lag_bytes(logs, nlogs, s.master_file, s.exec_pos);
        }
        mysql_close(rm);
    }
    mysql_free_result(r);
}

/* Last_IO_Errno of a replica whose primary cannot send what it asks for
 * (ER_MASTER_FATAL_ERROR_READING_BINLOG). */
#define MDB_ER_FATAL_READING_BINLOG 1236

/* The sum of the sequence numbers of a GTID list ("0-1-12,1-2-5" gives 17): it grows with
 * every transaction in any domain, so it orders servers of one cluster. 0 for "". */
static uint64_t mdb_gtid_value(const char *pos)
{
    uint64_t sum = 0;
    mdb_gtid_t g;
    int rc;
    for (const char *p = pos; (rc = mdb_gtid_next(&p, &g)) != 0;)
        if (rc > 0)
            sum += g.seq;
    return sum;
}

static int mdb_probe(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    dbp_err_t cerr;
    MYSQL *m = mdb_connect(in, true, &cerr);
    if (!m)
        return 0;
    int rc = 0;
    MYSQL_RES *r = mdb_query(m,
                             "SELECT @@read_only, @@gtid_current_pos, @@gtid_slave_pos, "
                             "@@version",
                             err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    MYSQL_ROW row = mysql_fetch_row(r);
    if (!row) {
        mysql_free_result(r);
        rc = dbp_err_set(err, DBP_EENGINE, "no row from %s", in->name);
        goto out;
    }
    bool read_only = row[0] && strcmp(row[0], "1") == 0;
    char current[128], slave[128];
    snprintf(current, sizeof(current), "%s", row[1] ? row[1] : "");
    snprintf(slave, sizeof(slave), "%s", row[2] ? row[2] : "");
    snprintf(out->version, sizeof(out->version), "%s", row[3] ? row[3] : "");
    mysql_free_result(r);
    mdb_slave_t s;
    if ((rc = mdb_slave_status(m, &s, err)))
        goto out;
    out->reachable = true;
    bool following = s.configured && (strcmp(s.io, "No") != 0 || strcmp(s.sql, "No") != 0);
    out->role = read_only || following ? ENGINE_ROLE_REPLICA : ENGINE_ROLE_PRIMARY;
    snprintf(out->position, sizeof(out->position), "%s",
             out->role == ENGINE_ROLE_REPLICA ? slave : current);
    out->position_value = mdb_gtid_value(out->position);
    out->streaming = strcmp(s.io, "Yes") == 0 && strcmp(s.sql, "Yes") == 0;
    /* ER_MASTER_FATAL_ERROR_READING_BINLOG: the primary refused the replica's position
     * (purged logs, a GTID not in its logs, a hole, a diverged replica); the IO thread
     * stopped and START SLAVE would only fail the same way. */
    if (out->role == ENGINE_ROLE_REPLICA && s.io_errno == MDB_ER_FATAL_READING_BINLOG &&
        strcmp(s.io, "No") == 0)
        snprintf(out->broken, sizeof(out->broken),
                 "replication stopped with error %u from the primary: %s", s.io_errno,
                 s.io_error);
    if (out->role == ENGINE_ROLE_REPLICA && (s.sql_errno || s.io_errno))
        dbp_debug("replication_error", "instance=%s io=%s sql=%s error=%s", in->name, s.io, s.sql,
                  dbp_log_q(s.sql_errno ? s.sql_error : s.io_error));
    if (out->role == ENGINE_ROLE_PRIMARY)
        mdb_probe_replicas(in, m, out);
out:
    mysql_close(m);
    return rc;
}

/* Turns a running replica into a writable primary (the caller fenced the old one): it
 * first applies what it already received, for at most 60 s, then forgets its primary
 * (RESET SLAVE ALL also deletes master.info and the password in it) and leaves
 * read_only. The next render_config writes its my.cnf as a primary's. */
static int mdb_promote(const engine_instance_t *in, dbp_err_t *err)
{
    MYSQL *m = mdb_connect(in, false, err);
    if (!m)
        return DBP_EENGINE;
    mdb_slave_t s;
    char v[16];
    int rc = mdb_slave_status(m, &s, err);
    if (rc == 0 && s.configured) {
        rc = mdb_cmd(m, "STOP SLAVE IO_THREAD", err);
        for (int i = 0; rc == 0 && i < 600; i++) {
            if ((rc = mdb_slave_status(m, &s, err)) || strcmp(s.sql, "Yes") != 0 ||
                (strcmp(s.read_file, s.master_file) == 0 && s.read_pos == s.exec_pos))
                break;
            usleep(100 * 1000);
        }
        if (rc == 0 && (strcmp(s.read_file, s.master_file) != 0 || s.read_pos != s.exec_pos))
            dbp_warn("promote_unapplied", "instance=%s sql_thread=%s error=%s", in->name, s.sql,
                     dbp_log_q(s.sql_error));
        if (rc == 0 && (rc = mdb_cmd(m, "STOP SLAVE", err)) == 0)
            rc = mdb_cmd(m, "RESET SLAVE ALL", err);
    }
    if (rc == 0 && (rc = mdb_cmd(m, "SET GLOBAL read_only = OFF", err)) == 0 &&
        (rc = mdb_scalar(m, "SELECT @@read_only", v, sizeof(v), err)) == 0 && strcmp(v, "0") != 0)
        rc = dbp_err_set(err, DBP_EENGINE, "%s is still read-only", in->name);
    mysql_close(m);
    return rc;
}

/* ---- rejoin ------------------------------------------------------------------------ */

/* Checks that every last-per-domain GTID of `old_pos` (a former primary's
 * gtid_binlog_pos) is in `new_state` (the new primary's gtid_binlog_state). 0, or
 * DBP_EENGINE with the first GTID the new primary does not have. */
static int mdb_gtid_contained(const char *old_pos, const char *new_state, dbp_err_t *err)
{
    mdb_gtid_t g;
    int rc = mdb_gtid_first_missing(old_pos, new_state, &g);
    if (rc < 0)
        return dbp_err_set(err, DBP_EENGINE, "unreadable gtid_binlog_pos '%s'", old_pos);
    if (rc > 0)
        return dbp_err_set(err, DBP_EENGINE,
                           "diverged: its transaction %" PRIu32 "-%" PRIu32 "-%" PRIu64
                           " is not on the new primary (gtid_binlog_state '%s')",
                           g.domain, g.server, g.seq, new_state);
    return 0;
}

/* The private socket of a rejoin check, <sock_dir>/rejoin.sock, into buf. */
static void mdb_rejoin_sock(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/rejoin.sock", in->sock_dir);
}

/* Stops the private server `pid` (SHUTDOWN over `m`, which is closed), waiting at most
 * 120 s before SIGKILL. */
static void mdb_private_stop(const engine_instance_t *in, MYSQL *m, pid_t pid)
{
    dbp_err_t err;
    if (m) {
        if (mdb_cmd(m, "SHUTDOWN", &err) != 0)
            kill(pid, SIGTERM);
        mysql_close(m);
    } else {
        kill(pid, SIGTERM);
    }
    int status;
    for (int i = 0; i < 1200; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) {
            dbp_cancel_forget(pid);
            return;
        }
        usleep(100 * 1000);
    }
    dbp_warn("mariadb_rejoin_kill", "instance=%s pid=%d", in->name, (int)pid);
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    dbp_cancel_forget(pid);
}

/* Makes a stopped, fenced former primary follow `primary` without a clone when its
 * history is a prefix of the new primary's. The server is started privately (no TCP, a
 * private socket, read-only, no replication threads) so its own crash recovery runs and
 * nothing can write to it or be served by it; its gtid_binlog_pos is compared with the
 * new primary's gtid_binlog_state. Contained: gtid_slave_pos is set to it, CHANGE MASTER
 * points at `primary` with MASTER_USE_GTID=slave_pos, and the server is shut down (the
 * supervisor starts it as a replica). Otherwise DBP_EENGINE saying why (diverged, strict
 * mode off, no history, primary unreachable): the caller re-clones. */
static int mdb_rejoin(const engine_instance_t *in, const engine_instance_t *primary,
                      dbp_err_t *err)
{
    const spec_cluster_t *c = in->spec;
    if (c->replication.gtid_strict_mode.set && !c->replication.gtid_strict_mode.v)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "gtid_strict_mode is off: GTID sequence numbers do not order the "
                           "history, divergence cannot be ruled out");
    if (!in->repl_password)
        return dbp_err_set(err, DBP_EINVAL, "no replication password");
    char new_state[1024], old_pos[512];
    MYSQL *pm = mdb_connect(primary, false, err);
    if (!pm)
        return DBP_EENGINE;
    int rc = mdb_scalar(pm, "SELECT @@gtid_binlog_state", new_state, sizeof(new_state), err);
    mysql_close(pm);
    if (rc)
        return rc;

    char cnf[PATH_MAX + 32], defaults[PATH_MAX + 48], sock[PATH_MAX], sockopt[PATH_MAX + 16];
    mdb_cnf(in, cnf, sizeof(cnf));
    snprintf(defaults, sizeof(defaults), "--defaults-file=%s", cnf);
    mdb_rejoin_sock(in, sock, sizeof(sock));
    snprintf(sockopt, sizeof(sockopt), "--socket=%s", sock);
    unlink(sock);
    char *argv[] = {MDB_SERVER,         defaults,      "--skip-networking", sockopt,
                    "--skip-slave-start", "--read-only", NULL};
    pid_t pid;
    if ((rc = dbp_proc_spawn(argv, NULL, in->runas, in->tool_log_path, NULL, &pid, err)))
        return rc;
    dbp_info("mariadb_rejoin_check", "instance=%s primary=%s pid=%d", in->name, primary->name,
             (int)pid);
    MYSQL *m = NULL;
    int64_t deadline = dbp_now_ms() + 180000; /* crash recovery of a large buffer pool */
    while (!m) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            dbp_cancel_forget(pid);
            return dbp_err_set(err, DBP_EENGINE,
                               "mariadbd exited during the rejoin check (status %d, see %s)",
                               status, in->tool_log_path);
        }
        if (dbp_now_ms() > deadline) {
            mdb_private_stop(in, NULL, pid);
            return dbp_err_set(err, DBP_EBUSY, "mariadbd did not start for the rejoin check");
        }
        dbp_err_t cerr;
        if (access(sock, F_OK) == 0)
            m = mdb_open(in->name, sock, NULL, 0, in->runas->daemon_name, NULL, NULL, 1000, 60, 0,
                         &cerr);
        if (!m)
            usleep(200 * 1000);
    }
    dbp_sb_t q = {0};
    if ((rc = mdb_scalar(m, "SELECT @@gtid_binlog_pos", old_pos, sizeof(old_pos), err)))
        goto out;
    if (old_pos[0] == '\0') {
        rc = dbp_err_set(err, DBP_EENGINE, "its binary log has no GTID: history unknown");
        goto out;
    }
    if ((rc = mdb_gtid_contained(old_pos, new_state, err)))
        goto out;
    dbp_sb_printf(&q, "SET GLOBAL gtid_slave_pos = ");
    sb_lit(&q, m, old_pos);
    if ((rc = sb_check(&q, err)) || (rc = mdb_cmd(m, "RESET SLAVE ALL", err)) ||
        (rc = mdb_cmd(m, q.buf, err)))
        goto out;
    if ((rc = mdb_change_master(m, in, primary, err)))
        goto out;
    dbp_info("mariadb_rejoined", "instance=%s primary=%s gtid_slave_pos=%s", in->name,
             primary->name, old_pos);
out:
    dbp_sb_free(&q);
    mdb_private_stop(in, m, pid);
    unlink(sock);
    if (rc)
        dbp_err_prefix(err, "GTID rejoin of %s: ", in->name);
    return rc;
}

/* The MariaDB driver. */
const engine_ops_t engine_mariadb = {
    .name = "mariadb",
    .engine = SPEC_ENGINE_MARIADB,
    .check_install = mdb_check_install,
    .is_initialized = mdb_is_initialized,
    .init_primary = mdb_init_primary,
    .init_replica = mdb_init_replica,
    .render_config = mdb_render_config,
    .server_argv = mdb_server_argv,
    .stop_signal = SIGTERM,
    .reload_signal = 0, /* SIGHUP flushes logs but does not re-read my.cnf */
    .probe = mdb_probe,
    .backup_physical = mdb_backup_physical,
    .backup_logical = mdb_backup_logical,
    .restore_physical = mdb_restore_physical,
    .restore_logical = mdb_restore_logical,
    .inventory = mdb_inventory,
    .binlog_list = mdb_binlog_list,
    .binlog_index = mdb_binlog_index,
    .binlog_replay = mdb_binlog_replay,
    .physical_part = "data.mbstream",
    .logical_ext = ".sql",
    .ensure_internal = mdb_ensure_internal,
    .ensure_user = mdb_ensure_user,
    .ensure_database = mdb_ensure_database,
    .ensure_grant = mdb_ensure_grant,
    .drop_user = mdb_drop_user,
    .run_sql = mdb_run_sql,
    .promote = mdb_promote,
    .rejoin = mdb_rejoin,
    .needs_restart = mdb_needs_restart,
    .bootstrap_check = mdb_bootstrap_check,
};
