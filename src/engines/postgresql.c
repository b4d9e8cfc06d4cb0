/*
 * postgresql.c: the PostgreSQL driver (engine.h) over libpq and the server's own tools.
 *
 * Layout and security model on one machine: every instance listens on 127.0.0.1:<port>
 * and on a unix socket in its short runtime directory. dbplane's own accounts need no
 * password: the daemon's OS user maps to the superuser `dbplane_admin`, and the service
 * OS user (the one servers run as) maps to `dbplane_replicator`, through `peer`
 * authentication on the unix socket (pg_ident.conf map "dbplane"). Application users log
 * in over TCP or the socket with SCRAM-SHA-256; their passwords are sent to the server
 * only as SCRAM verifiers computed by libpq (PQencryptPasswordConn), so no plaintext
 * password ever reaches the server's logs or dbplane's argv.
 *
 * Replicas are cloned with pg_basebackup through a physical replication slot named after
 * the replica, and follow the primary via primary_conninfo + standby.signal. A server is
 * rendered as a replica unless the topology names it primary.
 */
#include "engines/engine.h"
#include "engines/postgresql_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <strings.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <poll.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/tlscert.h"
#include "engines/postgresql_backup.h"
#include "secrets/scram.h"

#define PG_ADMIN_ROLE "dbplane_admin"
#define PG_REPL_ROLE "dbplane_replicator"
#define PG_INIT_MARKER ".initialized"

/* /usr/lib/postgresql/<major>/bin, Debian's layout (postgresql-common). */
static void pg_bindir(const char *version, char *buf, size_t len)
{
    snprintf(buf, len, "/usr/lib/postgresql/%s/bin", version && *version ? version : "15");
}

void engine_pg_tool(const engine_instance_t *in, const char *tool, char *buf, size_t len)
{
    char dir[256];
    pg_bindir(in->spec ? in->spec->version.v : NULL, dir, sizeof(dir));
    snprintf(buf, len, "%s/%s", dir, tool);
}

static int pg_check_install(const char *version, dbp_err_t *err)
{
    char path[300];
    snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin/postgres",
             version && *version ? version : "15");
    if (access(path, X_OK) != 0)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "PostgreSQL %s is not installed (%s missing): apt-get install "
                           "postgresql-%s",
                           version, path, version);
    return 0;
}

static bool pg_is_initialized(const engine_instance_t *in)
{
    char p1[PATH_MAX + 32], p2[PATH_MAX + 32];
    snprintf(p1, sizeof(p1), "%s/PG_VERSION", in->data_dir);
    snprintf(p2, sizeof(p2), "%s/" PG_INIT_MARKER, in->dir);
    return access(p1, F_OK) == 0 && access(p2, F_OK) == 0;
}

static int pg_mark_initialized(const engine_instance_t *in, dbp_err_t *err)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/" PG_INIT_MARKER, in->dir);
    return dbp_write_file(p, "1\n", 2, 0644, NULL, err);
}

static int pg_init_primary(const engine_instance_t *in, dbp_err_t *err)
{
    int rc = dbp_rm_rf(in->data_dir, err);
    if (rc)
        return rc;
    char initdb[PATH_MAX];
    engine_pg_tool(in, "initdb", initdb, sizeof(initdb));
    char *argv[] = {initdb,
                    "-D",
                    (char *)in->data_dir,
                    "-U",
                    PG_ADMIN_ROLE,
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--data-checksums",
                    "--no-instructions",
                    NULL};
    rc = dbp_proc_run(argv, NULL, in->runas, in->tool_log_path, 120000, err);
    if (rc) {
        dbp_err_prefix(err, "initdb: ");
        return rc;
    }
    return pg_mark_initialized(in, err);
}

/* The WAL a replication slot may hold back on the primary unless spec.config sets
 * max_slot_wal_keep_size (pg_render_config). */
#define PG_SLOT_WAL_KEEP "4GB"

/* Replication slot names allow [a-z0-9_] only. */
static void pg_slot_name(const char *instance, char *buf, size_t len)
{
    size_t o = 0;
    for (const char *p = instance; *p && o + 1 < len; p++)
        buf[o++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    buf[o] = '\0';
}

static int pg_init_replica(const engine_instance_t *in, const engine_instance_t *primary,
                           dbp_err_t *err)
{
    int rc = dbp_rm_rf(in->data_dir, err);
    if (rc)
        return rc;
    char tool[PATH_MAX], port[16], slot[96];
    engine_pg_tool(in, "pg_basebackup", tool, sizeof(tool));
    snprintf(port, sizeof(port), "%d", primary->port);
    pg_slot_name(in->name, slot, sizeof(slot));
    char *argv[] = {tool,          "-D", (char *)in->data_dir, "-h", (char *)primary->sock_dir,
                    "-p",          port, "-U", PG_REPL_ROLE,   "-X", "stream",
                    "-S",          slot, "-c", "fast",         "--no-password",
                    NULL};
    dbp_info("pg_basebackup_started", "instance=%s primary=%s", in->name, primary->name);
    rc = dbp_proc_run(argv, NULL, in->runas, in->tool_log_path, 30 * 60 * 1000, err);
    if (rc) {
        dbp_err_prefix(err, "pg_basebackup: ");
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
        return rc;
    }
    return pg_mark_initialized(in, err);
}



/* True when a config key is one dbplane manages itself (the user's value is ignored). */
static bool pg_key_managed(const char *k)
{
    static const char *const managed[] = {"port", "listen_addresses", "unix_socket_directories",
                                          "primary_conninfo", "primary_slot_name",
                                          "hba_file", "ident_file", "data_directory", NULL};
    for (int i = 0; managed[i]; i++)
        if (strcmp(k, managed[i]) == 0)
            return true;
    return false;
}

/* True when the cluster's servers run with TLS (spec.proxy.serverTLS other than disable). */
static bool pg_tls_on(const engine_instance_t *in)
{
    return in->spec->proxy.server_tls != SPEC_SERVER_TLS_DISABLE && in->tls_dir[0];
}

/* Keys dbplane sets itself when the servers run with TLS. */
static bool pg_key_tls(const char *k)
{
    return strcmp(k, "ssl") == 0 || strcmp(k, "ssl_cert_file") == 0 ||
           strcmp(k, "ssl_key_file") == 0 || strcmp(k, "ssl_ca_file") == 0;
}

/* Makes the cluster's self-signed server certificate once (common/tlscert.h), shared by
 * its instances: server.key (0600, the service user: PostgreSQL refuses a key others can
 * read) and server.crt (0644: the proxy reads it as its CA bundle for verify-full), in a
 * 0711 directory owned by the daemon's user. The subjectAltName names the loopback
 * addresses and this instance's host, which the proxy dials and verify-full checks.
 * Returns 1 when generated, 0 when both files were there, or a negative DBP_E* code. */
static int pg_tls_files(const engine_instance_t *in, dbp_err_t *err)
{
    char crt[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(crt, sizeof(crt), "%s/server.crt", in->tls_dir);
    snprintf(key, sizeof(key), "%s/server.key", in->tls_dir);
    if (access(crt, F_OK) == 0 && access(key, F_OK) == 0)
        return 0;
    int rc = dbp_mkdir_p(in->tls_dir, 0711, NULL, err);
    if (rc)
        return rc;
    char sans[160] = "DNS:localhost,IP:127.0.0.1,IP:::1";
    if (in->host[0] && strcmp(in->host, "127.0.0.1") != 0 && strcmp(in->host, "::1") != 0) {
        bool ip = strchr(in->host, ':') || isdigit((unsigned char)in->host[0]);
        size_t o = strlen(sans);
        snprintf(sans + o, sizeof(sans) - o, ",%s:%s", ip ? "IP" : "DNS", in->host);
    }
    dbp_tls_pem_t pem;
    if ((rc = dbp_tls_selfsigned(in->cluster, sans, &pem, err)))
        return rc;
    rc = dbp_write_file(key, pem.key, pem.key_len, 0600, in->runas, err);
    if (!rc)
        rc = dbp_write_file(crt, pem.crt, pem.crt_len, 0644, NULL, err);
    dbp_tls_pem_free(&pem);
    if (rc)
        return rc;
    dbp_info("pg_tls_certificate_generated", "cluster=%s dir=%s", in->cluster,
             dbp_log_q(in->tls_dir));
    return 1;
}

/* Quotes a postgresql.conf value: single quotes, embedded quotes doubled. */
static void sb_conf_value(dbp_sb_t *sb, const char *v)
{
    dbp_sb_printf(sb, "'");
    for (const char *p = v; *p; p++) {
        if (*p == '\'')
            dbp_sb_printf(sb, "''");
        else if (*p == '\n' || *p == '\r')
            dbp_sb_printf(sb, " ");
        else
            dbp_sb_printf(sb, "%c", *p);
    }
    dbp_sb_printf(sb, "'");
}

static int pg_render_config(const engine_instance_t *in, const engine_instance_t *primary,
                            dbp_err_t *err)
{
    const spec_cluster_t *c = in->spec;
    dbp_sb_t conf = {0}, hba = {0}, ident = {0};
    int changed = 0, rc = 0;

    dbp_sb_printf(&conf, "# Written by dbplane for instance %s of cluster %s; edits are replaced.\n"
                     "# Set engine parameters in the Cluster's spec.config instead.\n",
              in->name, in->cluster);
    dbp_sb_printf(&conf, "listen_addresses = '%s'\nport = %d\nunix_socket_directories = '%s'\n",
              in->host, in->port, in->sock_dir);
    dbp_sb_printf(&conf, "hba_file = '%s/pg_hba.conf'\nident_file = '%s/pg_ident.conf'\n",
              in->data_dir, in->data_dir);
    dbp_sb_printf(&conf, "password_encryption = 'scram-sha-256'\n"
                     "wal_level = replica\nmax_wal_senders = 16\nmax_replication_slots = 16\n"
                     "hot_standby = on\nhot_standby_feedback = on\nwal_log_hints = on\n"
                     "logging_collector = off\nlog_destination = 'stderr'\n"
                     "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n"
                     "cluster_name = '%s'\nwal_sender_timeout = '10s'\n",
              in->name);
    /* A replica must notice a hung primary about when the HA monitor's failcount runs out
     * (it pings after half the timeout of silence): failover waits for both; see ha/. */
    int64_t fc = c->failover.failcount.v > 0 ? c->failover.failcount.v : 3;
    int64_t detect_ms = (c->failover.interval.ms > 0 ? c->failover.interval.ms : 1000) *
                        (fc > 1 ? fc - 1 : 1);
    if (detect_ms < 500)
        detect_ms = 500;
    if (detect_ms > 10000)
        detect_ms = 10000;
    dbp_sb_printf(&conf, "wal_receiver_timeout = '%lldms'\n", (long long)detect_ms);
    /* After its receiver timed out, a standby waits wal_retrieve_retry_interval (default
     * 5 s) before it looks for WAL again, and a promote request that arrives while it
     * waits for the rest of a partly received record waits with it (measured: promotion
     * 4.7 s instead of 0.3 s). Half the failover interval, 100 ms .. 1 s. */
    int64_t retry_ms = (c->failover.interval.ms > 0 ? c->failover.interval.ms : 1000) / 2;
    dbp_sb_printf(&conf, "wal_retrieve_retry_interval = '%lldms'\n",
                  (long long)(retry_ms < 100 ? 100 : retry_ms > 1000 ? 1000 : retry_ms));
    /* Defaults derived from spec.memory unless the user set them in spec.config. */
    bool has_sb = false, has_mc = false;
    for (size_t i = 0; i < c->config.n; i++) {
        if (strcmp(c->config.v[i].key, "shared_buffers") == 0)
            has_sb = true;
        if (strcmp(c->config.v[i].key, "max_connections") == 0)
            has_mc = true;
    }
    if (!has_sb && c->memory.set && c->memory.v >= 64ULL << 20) {
        /* A quarter of the memory, the usual starting point, in whole MB. */
        dbp_sb_printf(&conf, "shared_buffers = '%lluMB'\n",
                  (unsigned long long)(c->memory.v / 4 / (1024 * 1024)));
    }
    if (!has_mc)
        dbp_sb_printf(&conf, "max_connections = 100\n");
    bool has_at = false, has_ks = false;
    for (size_t i = 0; i < c->config.n; i++) {
        if (strcmp(c->config.v[i].key, "archive_timeout") == 0)
            has_at = true;
        if (strcmp(c->config.v[i].key, "max_slot_wal_keep_size") == 0)
            has_ks = true;
    }
    /* Each replica has a replication slot on the primary, and a slot keeps WAL for as
     * long as its replica does not read it: a replica that is down for days would fill the
     * primary's disk (PostgreSQL's default, -1, keeps everything). Past this bound the
     * primary drops the slot's WAL instead; that replica then cannot stream ("requested
     * WAL segment ... has already been removed") and is rebuilt by the rule for replicas
     * that run without streaming (docs/reliability.md). */
    if (!has_ks)
        dbp_sb_printf(&conf, "max_slot_wal_keep_size = '" PG_SLOT_WAL_KEEP "'\n");
    /* archive_mode needs a restart, archive_command only a reload: archiving is always on,
     * with a command that lets segments go unless a pitr Backup wants them, so turning
     * PITR on or off never restarts a server. */
    dbp_sb_printf(&conf, "archive_mode = on\narchive_command = ");
    if (in->archive_exe) {
        /* Continuous archiving (a pitr Backup): each finished segment goes to the cluster's
         * spool through `dbplane wal-push`; the daemon ships the spool to the store. A
         * segment is switched at least every minute, which bounds what a lost server can
         * take with it. */
        if (strchr(in->archive_exe, '\'') || strchr(in->archive_spool, '\'')) {
            rc = dbp_err_set(err, DBP_EINVAL, "archive paths must not contain quotes");
            goto out;
        }
        char cmd[2 * PATH_MAX + 96], qmax[48] = "";
        if (in->archive_queue_max)
            snprintf(qmax, sizeof(qmax), " --queue-max %llu",
                     (unsigned long long)in->archive_queue_max);
        snprintf(cmd, sizeof(cmd), "'%s' wal-push --spool '%s'%s %%p %%f", in->archive_exe,
                 in->archive_spool, qmax);
        sb_conf_value(&conf, cmd);
        dbp_sb_printf(&conf, "\n%s", has_at ? "" : "archive_timeout = '60s'\n");
    } else {
        dbp_sb_printf(&conf, "'/bin/true'\n");
    }
    bool tls = pg_tls_on(in);
    if (tls) {
        /* spec.proxy.serverTLS: the proxy reaches the servers over TLS on loopback TCP. */
        rc = pg_tls_files(in, err);
        if (rc < 0)
            goto out;
        changed |= rc;
        rc = 0;
        char path[PATH_MAX + 16];
        dbp_sb_printf(&conf, "ssl = on\nssl_cert_file = ");
        snprintf(path, sizeof(path), "%s/server.crt", in->tls_dir);
        sb_conf_value(&conf, path);
        dbp_sb_printf(&conf, "\nssl_key_file = ");
        snprintf(path, sizeof(path), "%s/server.key", in->tls_dir);
        sb_conf_value(&conf, path);
        dbp_sb_printf(&conf, "\n");
    }
    for (size_t i = 0; i < c->config.n; i++) {
        if (pg_key_managed(c->config.v[i].key) || (tls && pg_key_tls(c->config.v[i].key)))
            continue;
        if (in->archive_exe && (strcmp(c->config.v[i].key, "archive_mode") == 0 ||
                                strcmp(c->config.v[i].key, "archive_command") == 0))
            continue;
        dbp_sb_printf(&conf, "%s = ", c->config.v[i].key);
        sb_conf_value(&conf, c->config.v[i].value);
        dbp_sb_printf(&conf, "\n");
    }
    if (c->replication.mode == SPEC_REPL_SYNC || c->replication.mode == SPEC_REPL_SEMI_SYNC) {
        /* A commit returns once one replica has flushed it: an acknowledged write survives
         * the loss of any single server. Rendered on every instance, so it holds on
         * whichever becomes primary. */
        dbp_sb_printf(&conf, "synchronous_standby_names = 'ANY 1 (*)'\nsynchronous_commit = on\n");
    }
    if (primary) {
        char slot[96];
        pg_slot_name(in->name, slot, sizeof(slot));
        dbp_sb_printf(&conf,
                  "primary_conninfo = 'host=%s port=%d user=" PG_REPL_ROLE
                  " application_name=%s'\nprimary_slot_name = '%s'\n",
                  primary->sock_dir, primary->port, in->name, slot);
    }

    /* With serverTLS require or verify-full, TCP logins must come over TLS (hostssl):
     * the proxy never falls back to plaintext, and neither may anything else. */
    const char *tcp = tls && c->proxy.server_tls != SPEC_SERVER_TLS_PREFER ? "hostssl" : "host   ";
    dbp_sb_printf(&hba,
                  "# Written by dbplane; edits are replaced.\n"
                  "# TYPE  DATABASE     USER                 ADDRESS       METHOD\n"
                  "local   all          " PG_ADMIN_ROLE "                      peer map=dbplane\n"
                  "local   replication  " PG_REPL_ROLE "                 peer map=dbplane\n"
                  "local   all          " PG_REPL_ROLE "                 reject\n"
                  "local   all          all                                scram-sha-256\n"
                  "host    all          " PG_ADMIN_ROLE "  all           reject\n"
                  "host    replication  all                  all           reject\n"
                  "%s all          all                  127.0.0.1/32  scram-sha-256\n"
                  "%s all          all                  ::1/128       scram-sha-256\n",
                  tcp, tcp);
    dbp_sb_printf(&ident, "# Written by dbplane; edits are replaced.\n"
                      "# MAP      OS-USER   ROLE\n"
                      "dbplane    %s    " PG_ADMIN_ROLE "\n"
                      "dbplane    %s    " PG_REPL_ROLE "\n",
              in->runas->daemon_name, in->runas->name);
    if (strcmp(in->runas->daemon_name, in->runas->name) != 0)
        dbp_sb_printf(&ident, "dbplane    %s    " PG_ADMIN_ROLE "\n", in->runas->name);

    if (conf.failed || hba.failed || ident.failed) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory rendering configuration");
        goto out;
    }
    char path[PATH_MAX + 32];
    const char *names[] = {"postgresql.conf", "pg_hba.conf", "pg_ident.conf"};
    dbp_sb_t *bufs[] = {&conf, &hba, &ident};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", in->data_dir, names[i]);
        rc = dbp_write_file_if_changed(path, bufs[i]->buf, bufs[i]->len, 0600, in->runas, err);
        if (rc < 0)
            goto out;
        changed |= rc;
    }
    /* A restored server keeps the restore's settings until its recovery has ended. */
    rc = pg_recovery_cleanup(in, err);
    if (rc < 0)
        goto out;
    changed |= rc;
    /* The role a server starts in follows the topology, never the server's own files. */
    snprintf(path, sizeof(path), "%s/standby.signal", in->data_dir);
    if (primary) {
        if (access(path, F_OK) != 0) {
            rc = dbp_write_file(path, "", 0, 0600, in->runas, err);
            if (rc)
                goto out;
            changed = 1;
        }
    } else if (access(path, F_OK) == 0) {
        if (unlink(path) != 0) {
            rc = dbp_err_set(err, DBP_EIO, "unlink %s: %s", path, strerror(errno));
            goto out;
        }
        changed = 1;
    }
    rc = changed;
out:
    dbp_sb_free(&conf);
    dbp_sb_free(&hba);
    dbp_sb_free(&ident);
    return rc;
}

static int pg_server_argv(const engine_instance_t *in, char **argv, int max, char *buf,
                          size_t buflen, dbp_err_t *err)
{
    if (max < 4)
        return dbp_err_set(err, DBP_EINVAL, "argv too small");
    char bindir[256];
    pg_bindir(in->spec->version.v, bindir, sizeof(bindir));
    if (snprintf(buf, buflen, "%s/postgres", bindir) >= (int)buflen)
        return dbp_err_set(err, DBP_EINVAL, "path too long");
    argv[0] = buf;
    argv[1] = "-D";
    argv[2] = (char *)in->data_dir;
    argv[3] = NULL;
    return 0;
}

/* Waits until the connection's socket is ready for `events` or the deadline passes. */
static bool pg_wait(PGconn *conn, short events, int64_t deadline_ms)
{
    int64_t left = deadline_ms - dbp_now_ms();
    if (left <= 0)
        return false;
    struct pollfd p = {.fd = PQsocket(conn), .events = events};
    int r = poll(&p, 1, (int)left);
    return r > 0;
}

/* Opens an admin connection to `dbname` over the instance's unix socket, giving up after
 * in->probe_timeout_ms (default 3 s) even when the server accepts the socket but never
 * answers (a hung or SIGSTOPped server). Returns NULL with err filled on failure. */
PGconn *engine_pg_connect(const engine_instance_t *in, const char *dbname, dbp_err_t *err)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", in->port);
    /* synchronous_commit=local: dbplane's own statements never wait for a synchronous
     * replica (in sync mode, bootstrapping the first replica needs the replication role
     * that this very connection creates). They are idempotent and re-checked after a
     * failover, so nothing depends on them surviving one. */
    const char *keys[] = {"host", "port", "user", "dbname", "application_name", "options", NULL};
    const char *vals[] = {in->sock_dir, port, PG_ADMIN_ROLE, dbname, "dbplane",
                          "-c synchronous_commit=local", NULL};
    int64_t deadline = dbp_now_ms() + (in->probe_timeout_ms > 0 ? in->probe_timeout_ms : 3000);
    PGconn *conn = PQconnectStartParams(keys, vals, 0);
    const char *why = NULL;
    if (!conn) {
        why = "out of memory";
    } else if (PQstatus(conn) == CONNECTION_BAD) {
        why = PQerrorMessage(conn);
    } else {
        for (;;) {
            PostgresPollingStatusType st = PQconnectPoll(conn);
            if (st == PGRES_POLLING_OK)
                return conn;
            if (st == PGRES_POLLING_FAILED) {
                why = PQerrorMessage(conn);
                break;
            }
            if (!pg_wait(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline)) {
                why = "timed out";
                break;
            }
        }
    }
    char msg[400];
    snprintf(msg, sizeof(msg), "%s", why);
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
        msg[--l] = '\0';
    dbp_err_set(err, DBP_EENGINE, "connect %s: %s", in->name, msg);
    PQfinish(conn);
    return NULL;
}

/* Runs `sql` (no parameters) with a deadline: NULL with err on error or time-out. */
static PGresult *pg_exec_deadline(PGconn *conn, const char *sql, int timeout_ms, dbp_err_t *err)
{
    int64_t deadline = dbp_now_ms() + (timeout_ms > 0 ? timeout_ms : 3000);
    if (!PQsendQuery(conn, sql)) {
        dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
        return NULL;
    }
    PGresult *last = NULL;
    for (;;) {
        while (!PQisBusy(conn)) {
            PGresult *r = PQgetResult(conn);
            if (!r) {
                if (!last)
                    dbp_err_set(err, DBP_EENGINE, "no result");
                return last;
            }
            ExecStatusType st = PQresultStatus(r);
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                dbp_err_set(err, DBP_EENGINE, "%s", PQresultErrorMessage(r));
                PQclear(r);
                PQclear(last);
                return NULL;
            }
            PQclear(last);
            last = r;
        }
        if (!pg_wait(conn, POLLIN, deadline) || !PQconsumeInput(conn)) {
            dbp_err_set(err, DBP_EENGINE, "query timed out or connection lost");
            PQclear(last);
            return NULL;
        }
    }
}

/* Runs one statement with text parameters; returns the result (free with PQclear) or
 * NULL with err filled from the server's error. */
PGresult *engine_pg_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         dbp_err_t *err)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
        msg[--l] = '\0';
    dbp_err_set(err, DBP_EENGINE, "%s", msg);
    PQclear(res);
    return NULL;
}

/* Runs a statement that returns no rows; 0 or DBP_EENGINE. */
static int pg_cmd(PGconn *conn, const char *sql, dbp_err_t *err)
{
    PGresult *r = engine_pg_exec(conn, sql, 0, NULL, err);
    if (!r)
        return DBP_EENGINE;
    PQclear(r);
    return 0;
}

/* "16/B374D848" → 0x16B374D848: an LSN as a byte position in the WAL stream. */
static uint64_t pg_lsn_value(const char *lsn)
{
    unsigned int hi = 0, lo = 0;
    if (sscanf(lsn, "%X/%X", &hi, &lo) != 2)
        return 0;
    return ((uint64_t)hi << 32) | lo;
}

static int pg_probe(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    dbp_err_t cerr;
    PGconn *conn = engine_pg_connect(in, "postgres", &cerr);
    if (!conn)
        return 0;
    PGresult *r = pg_exec_deadline(conn,
                                   "SELECT pg_is_in_recovery(),"
                                   " CASE WHEN pg_is_in_recovery() THEN"
                                   "   COALESCE(pg_last_wal_replay_lsn(), '0/0')::text"
                                   " ELSE pg_current_wal_lsn()::text END,"
                                   " EXISTS (SELECT 1 FROM pg_stat_wal_receiver"
                                   "         WHERE status = 'streaming'),"
                                   " current_setting('server_version'),"
                                   " COALESCE((SELECT 'wal receiver ' || COALESCE(status, '?')"
                                   "                  || COALESCE(' on timeline ' || received_tli, '')"
                                   "           FROM pg_stat_wal_receiver LIMIT 1),"
                                   "          'no wal receiver')",
                                   in->probe_timeout_ms, &cerr);
    if (!r) {
        /* Connected but no answer in time: as unreachable as a refused connection. */
        PQfinish(conn);
        return 0;
    }
    out->reachable = true;
    out->role = strcmp(PQgetvalue(r, 0, 0), "t") == 0 ? ENGINE_ROLE_REPLICA : ENGINE_ROLE_PRIMARY;
    snprintf(out->position, sizeof(out->position), "%s", PQgetvalue(r, 0, 1));
    out->position_value = pg_lsn_value(out->position);
    out->streaming = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    snprintf(out->version, sizeof(out->version), "%s", PQgetvalue(r, 0, 3));
    if (out->role == ENGINE_ROLE_REPLICA)
        snprintf(out->repl_state, sizeof(out->repl_state), "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    if (out->role == ENGINE_ROLE_PRIMARY) {
        r = pg_exec_deadline(conn,
                    "SELECT application_name, state,"
                    " COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), -1)::bigint,"
                    " COALESCE((extract(epoch FROM replay_lag) * 1000)::bigint, 0)"
                    " FROM pg_stat_replication ORDER BY application_name",
                    in->probe_timeout_ms, &cerr);
        if (r) {
            int n = PQntuples(r);
            for (int i = 0; i < n && out->nreplicas < ENGINE_MAX_REPLICAS; i++) {
                engine_replica_stat_t *rs = &out->replicas[out->nreplicas++];
                snprintf(rs->name, sizeof(rs->name), "%s", PQgetvalue(r, i, 0));
                snprintf(rs->state, sizeof(rs->state), "%s", PQgetvalue(r, i, 1));
                rs->lag_bytes = strtoll(PQgetvalue(r, i, 2), NULL, 10);
                rs->lag_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
            }
            PQclear(r);
        }
    }
    PQfinish(conn);
    return 0;
}

/* Sync mode without a synchronous replica (Patroni's non-strict synchronous mode): after
 * a failover in a 2-instance cluster the new primary has no replica until the old one
 * rejoins, and with synchronous_standby_names set every commit would wait for it. While no
 * replica streams, the primary runs with synchronous_standby_names = '' (ALTER SYSTEM, in
 * postgresql.auto.conf, which overrides the rendered file); once one streams again, the
 * override is removed and commits wait for a replica again. The trade-off: a write
 * acknowledged in that window exists on the primary alone until the replica catches up.
 * Runs on the primary (after a promotion, and every pass from ensure_internal). Returns 1 when it
 * changed the setting, 0 when not, or a DBP_E* code. */
static int pg_sync_fallback(PGconn *conn, const engine_instance_t *in, dbp_err_t *err)
{
    const spec_cluster_t *c = in->spec;
    if (c->replication.mode != SPEC_REPL_SYNC && c->replication.mode != SPEC_REPL_SEMI_SYNC)
        return 0;
    PGresult *r = engine_pg_exec(conn,
                                 "SELECT current_setting('synchronous_standby_names') <> '',"
                                 " EXISTS (SELECT 1 FROM pg_stat_replication"
                                 "         WHERE state = 'streaming')",
                                 0, NULL, err);
    if (!r)
        return DBP_EENGINE;
    bool sync_on = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    bool streaming = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    const char *sql = NULL;
    if (sync_on && !streaming)
        sql = "ALTER SYSTEM SET synchronous_standby_names = ''";
    else if (!sync_on && streaming)
        sql = "ALTER SYSTEM RESET synchronous_standby_names";
    if (!sql)
        return 0;
    int rc = pg_cmd(conn, sql, err);
    if (rc == 0)
        rc = pg_cmd(conn, "SELECT pg_reload_conf()", err);
    if (rc)
        return rc;
    dbp_warn("pg_sync_mode", "instance=%s synchronous=%s reason=%s", in->name,
             streaming ? "on" : "off",
             streaming ? "a replica streams again" : "no replica streams (non-strict)");
    return 1;
}

static int pg_ensure_internal(const engine_instance_t *primary, const engine_instance_t *replicas,
                              int nreplicas, dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    int changed = 0, rc = 0;
    PGresult *r = engine_pg_exec(conn, "SELECT 1 FROM pg_roles WHERE rolname = '" PG_REPL_ROLE "'", 0,
                          NULL, err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    bool exists = PQntuples(r) > 0;
    PQclear(r);
    if (!exists) {
        rc = pg_cmd(conn, "CREATE ROLE " PG_REPL_ROLE " WITH LOGIN REPLICATION", err);
        if (rc)
            goto out;
        changed = 1;
    }
    for (int i = 0; i < nreplicas; i++) {
        char slot[96];
        pg_slot_name(replicas[i].name, slot, sizeof(slot));
        const char *params[] = {slot};
        r = engine_pg_exec(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", 1, params,
                    err);
        if (!r) {
            rc = DBP_EENGINE;
            goto out;
        }
        exists = PQntuples(r) > 0;
        PQclear(r);
        if (!exists) {
            r = engine_pg_exec(conn, "SELECT pg_create_physical_replication_slot($1, true)", 1, params,
                        err);
            if (!r) {
                rc = DBP_EENGINE;
                goto out;
            }
            PQclear(r);
            changed = 1;
        }
    }
    /* Sync mode: back to synchronous once a replica streams (see pg_sync_fallback). */
    rc = pg_sync_fallback(conn, primary, err);
    if (rc < 0)
        goto out;
    rc = changed | rc;
out:
    PQfinish(conn);
    return rc;
}

/* Builds `fmt` with %s replaced by quoted identifiers/literals; all escaping via libpq. */
static char *pg_ident(PGconn *conn, const char *s)
{
    return PQescapeIdentifier(conn, s, strlen(s));
}

static int pg_ensure_user(const engine_instance_t *primary, const spec_user_t *user,
                          const char *password, dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    int rc = 0;
    char *ident = NULL, *lit = NULL, *verifier = NULL;
    const char *uname = user->username.v;
    const char *params[] = {uname};
    PGresult *r = engine_pg_exec(conn,
                          "SELECT COALESCE(rolpassword, ''), rolconnlimit, rolcanlogin,"
                          " rolsuper FROM pg_authid WHERE rolname = $1",
                          1, params, err);
    if (!r)
        goto fail;
    bool exists = PQntuples(r) > 0;
    bool pw_ok = false, login_ok = false;
    long connlimit = -1;
    if (exists) {
        pw_ok = secrets_scram_check(PQgetvalue(r, 0, 0), password);
        connlimit = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        login_ok = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
        if (strcmp(PQgetvalue(r, 0, 3), "t") == 0) {
            PQclear(r);
            rc = dbp_err_set(err, DBP_EINVAL, "role %s is a superuser; dbplane will not manage it",
                             uname);
            goto out;
        }
    }
    PQclear(r);
    long want_limit = user->max_user_connections.set ? (long)user->max_user_connections.v : -1;
    if (exists && pw_ok && login_ok && connlimit == want_limit)
        goto out; /* rc = 0: already as declared */

    ident = pg_ident(conn, uname);
    if (!ident)
        goto fail_conn;
    char sql[1024];
    char *sqlbuf = NULL;
    if (!pw_ok) {
        verifier = PQencryptPasswordConn(conn, password, uname, "scram-sha-256");
        if (!verifier)
            goto fail_conn;
        lit = PQescapeLiteral(conn, verifier, strlen(verifier));
        if (!lit)
            goto fail_conn;
    }
    size_t need = strlen(ident) + (lit ? strlen(lit) : 0) + 128;
    sqlbuf = need > sizeof(sql) ? malloc(need) : sql;
    if (!sqlbuf) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(sqlbuf, need, "%s ROLE %s WITH LOGIN CONNECTION LIMIT %ld%s%s",
             exists ? "ALTER" : "CREATE", ident, want_limit, lit ? " PASSWORD " : "",
             lit ? lit : "");
    rc = pg_cmd(conn, sqlbuf, err);
    if (sqlbuf != sql)
        free(sqlbuf);
    if (rc == 0)
        rc = 1;
    goto out;
fail_conn:
    dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
fail:
    rc = DBP_EENGINE;
out:
    if (verifier)
        PQfreemem(verifier);
    if (lit)
        PQfreemem(lit);
    if (ident)
        PQfreemem(ident);
    PQfinish(conn);
    return rc;
}

static int pg_ensure_database(const engine_instance_t *primary, const spec_database_t *db,
                              dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    const char *owner = db->owner.set && db->owner.v ? db->owner.v : PG_ADMIN_ROLE;
    int rc = 0, changed = 0;
    char *dident = pg_ident(conn, db->name.v), *oident = pg_ident(conn, owner);
    char sql[1024];
    const char *params[] = {db->name.v};
    PGresult *r = NULL;
    if (!dident || !oident) {
        rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
        goto out;
    }
    r = engine_pg_exec(conn,
                "SELECT r.rolname,"
                " EXISTS (SELECT 1 FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba)))"
                "         a WHERE a.grantee = 0 AND a.privilege_type IN ('CONNECT', 'TEMPORARY'))"
                " FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
                1, params, err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    bool exists = PQntuples(r) > 0;
    bool owner_ok = exists && strcmp(PQgetvalue(r, 0, 0), owner) == 0;
    bool public_connect = !exists || strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    if (!exists) {
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s OWNER %s", dident, oident);
        if ((rc = pg_cmd(conn, sql, err)))
            goto out;
        changed = 1;
    } else if (!owner_ok) {
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s OWNER TO %s", dident, oident);
        if ((rc = pg_cmd(conn, sql, err)))
            goto out;
        changed = 1;
    }
    if (public_connect) {
        /* Apps sharing a cluster must not reach each other's databases: only the owner
         * and users with a Grant may connect. */
        snprintf(sql, sizeof(sql), "REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC", dident);
        if ((rc = pg_cmd(conn, sql, err)))
            goto out;
        changed = 1;
    }
    rc = changed;
out:
    if (dident)
        PQfreemem(dident);
    if (oident)
        PQfreemem(oident);
    PQfinish(conn);
    return rc;
}

/* Privilege classes for a PostgreSQL Grant on a database. */
static bool pg_is_db_priv(const char *p)
{
    return strcasecmp(p, "CONNECT") == 0 || strcasecmp(p, "CREATE") == 0 ||
           strcasecmp(p, "TEMPORARY") == 0 || strcasecmp(p, "TEMP") == 0;
}

static bool pg_is_all(const char *p)
{
    return strcasecmp(p, "ALL") == 0 || strcasecmp(p, "ALL PRIVILEGES") == 0;
}

static bool pg_is_table_priv(const char *p)
{
    static const char *const t[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE",
                                    "REFERENCES", "TRIGGER", NULL};
    for (int i = 0; t[i]; i++)
        if (strcasecmp(p, t[i]) == 0)
            return true;
    return false;
}

static int pg_ensure_grant(const engine_instance_t *primary, const spec_grant_t *g,
                           dbp_err_t *err)
{
    /* Work out what the declared privileges mean at each level. */
    bool all = false;
    char dbprivs[128] = "CONNECT", tprivs[256] = "";
    for (size_t i = 0; i < g->privileges.n; i++) {
        const char *p = g->privileges.v[i];
        if (pg_is_all(p)) {
            all = true;
        } else if (pg_is_db_priv(p)) {
            if (strcasecmp(p, "CONNECT") != 0) {
                strncat(dbprivs, ", ", sizeof(dbprivs) - strlen(dbprivs) - 1);
                strncat(dbprivs, strcasecmp(p, "TEMP") == 0 ? "TEMPORARY" : p,
                        sizeof(dbprivs) - strlen(dbprivs) - 1);
            }
        } else if (pg_is_table_priv(p)) {
            if (*tprivs)
                strncat(tprivs, ", ", sizeof(tprivs) - strlen(tprivs) - 1);
            strncat(tprivs, p, sizeof(tprivs) - strlen(tprivs) - 1);
        } else {
            return dbp_err_set(err, DBP_EINVAL, "privilege %s is not a PostgreSQL privilege", p);
        }
    }
    for (char *c = dbprivs; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    for (char *c = tprivs; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    if (all) {
        snprintf(dbprivs, sizeof(dbprivs), "ALL PRIVILEGES");
        snprintf(tprivs, sizeof(tprivs), "ALL PRIVILEGES");
    }

    PGconn *conn = engine_pg_connect(primary, g->database.v, err);
    if (!conn)
        return DBP_EENGINE;
    int rc = 0;
    char *u = pg_ident(conn, g->username.v), *d = pg_ident(conn, g->database.v);
    char *owner = NULL;
    PGresult *r = NULL;
    char sql[1024];
    if (!u || !d) {
        rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
        goto out;
    }
    r = engine_pg_exec(conn,
                "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
                " WHERE d.datname = current_database()",
                0, NULL, err);
    if (!r) {
        rc = DBP_EENGINE;
        goto out;
    }
    owner = pg_ident(conn, PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!owner) {
        rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
        goto out;
    }
    /* GRANT is idempotent; run the whole set in one transaction so it is all or nothing. */
    if ((rc = pg_cmd(conn, "BEGIN", err)))
        goto out;
    snprintf(sql, sizeof(sql), "GRANT %s ON DATABASE %s TO %s", dbprivs, d, u);
    rc = pg_cmd(conn, sql, err);
    if (!rc && (*tprivs || all)) {
        snprintf(sql, sizeof(sql), "GRANT %s ON SCHEMA public TO %s", all ? "ALL" : "USAGE", u);
        rc = pg_cmd(conn, sql, err);
    }
    if (!rc && *tprivs) {
        snprintf(sql, sizeof(sql), "GRANT %s ON ALL TABLES IN SCHEMA public TO %s", tprivs, u);
        rc = pg_cmd(conn, sql, err);
        if (!rc) {
            snprintf(sql, sizeof(sql),
                     "ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA public GRANT %s ON TABLES "
                     "TO %s",
                     owner, tprivs, u);
            rc = pg_cmd(conn, sql, err);
        }
        if (!rc && all) {
            snprintf(sql, sizeof(sql),
                     "GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO %s", u);
            rc = pg_cmd(conn, sql, err);
        }
        if (!rc && all) {
            snprintf(sql, sizeof(sql),
                     "ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA public GRANT ALL ON "
                     "SEQUENCES TO %s",
                     owner, u);
            rc = pg_cmd(conn, sql, err);
        }
    }
    if (rc) {
        dbp_err_t ignore;
        (void)pg_cmd(conn, "ROLLBACK", &ignore);
        goto out;
    }
    rc = pg_cmd(conn, "COMMIT", err);
out:
    if (u)
        PQfreemem(u);
    if (d)
        PQfreemem(d);
    if (owner)
        PQfreemem(owner);
    PQfinish(conn);
    return rc;
}

static int pg_drop_user(const engine_instance_t *primary, const char *username, dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    char *u = pg_ident(conn, username);
    int rc;
    if (!u) {
        rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
    } else {
        char sql[512];
        snprintf(sql, sizeof(sql), "DROP ROLE IF EXISTS %s", u);
        rc = pg_cmd(conn, sql, err);
        PQfreemem(u);
    }
    PQfinish(conn);
    return rc;
}

static int pg_run_sql(const engine_instance_t *primary, const char *database, const char *username,
                      const char *password, const char *sql, dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, database, err);
    if (!conn)
        return DBP_EENGINE;
    int rc = 0;
    if (username) {
        /* The admin switches to the declared role, so objects belong to it and its
         * privileges apply; no password is needed for that. */
        char *u = pg_ident(conn, username);
        if (!u) {
            rc = dbp_err_set(err, DBP_EENGINE, "%s", PQerrorMessage(conn));
            goto out;
        }
        char set[256];
        snprintf(set, sizeof(set), "SET ROLE %s", u);
        PQfreemem(u);
        if ((rc = pg_cmd(conn, set, err)))
            goto out;
    }
    /* The simple query protocol runs several statements as one implicit transaction. */
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        size_t l = strlen(msg);
        while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
            msg[--l] = '\0';
        rc = dbp_err_set(err, DBP_EENGINE, "%s", msg);
    }
    PQclear(r);
out:
    PQfinish(conn);
    (void)password;
    return rc;
}

/* Asks the server of `in` to promote the way `pg_ctl promote` does, without a backend:
 * creates <data_dir>/promote and sends SIGUSR1 to the postmaster (pid from the first line
 * of postmaster.pid; https://www.postgresql.org/docs/15/app-pg-ctl.html). Returns 0, or
 * DBP_EIO when the pid file or the signal failed (the caller then uses pg_promote()). */
static int pg_promote_signal(const engine_instance_t *in, dbp_err_t *err)
{
    char path[PATH_MAX + 32], *text = NULL;
    snprintf(path, sizeof(path), "%s/postmaster.pid", in->data_dir);
    int rc = dbp_read_file(path, &text, NULL, err);
    if (rc)
        return DBP_EIO;
    long pid = strtol(text, NULL, 10);
    free(text);
    if (pid <= 1)
        return dbp_err_set(err, DBP_EIO, "%s: no postmaster pid", path);
    snprintf(path, sizeof(path), "%s/promote", in->data_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "create %s: %s", path, strerror(errno));
    if (in->runas && in->runas->drop && fchown(fd, in->runas->uid, in->runas->gid) != 0)
        dbp_warn("chown_failed", "path=%s error=%s", dbp_log_q(path), dbp_log_q(strerror(errno)));
    close(fd);
    if (kill((pid_t)pid, SIGUSR1) != 0) {
        unlink(path);
        return dbp_err_set(err, DBP_EIO, "signal postmaster %ld: %s", pid, strerror(errno));
    }
    return 0;
}

static int pg_promote(const engine_instance_t *in, dbp_err_t *err)
{
    /* Failover latency: the promote signal goes first, so the server promotes while the
     * connection that waits for it is being set up (a backend start takes 50-250 ms on a
     * loaded machine); pg_promote(wait => false) only when the signal could not be sent.
     * Then poll pg_is_in_recovery() every 10 ms for up to 60 s (pg_promote's and pg_ctl
     * promote -w's own waits poll every 100 ms). */
    dbp_err_t serr;
    bool signalled = pg_promote_signal(in, &serr) == 0;
    if (!signalled)
        dbp_info("pg_promote_signal_failed", "instance=%s error=%s", in->name,
                 dbp_log_q(serr.msg));
    PGconn *conn = engine_pg_connect(in, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    int rc = 0;
    if (!signalled) {
        PGresult *r = engine_pg_exec(conn, "SELECT pg_promote(false)", 0, NULL, err);
        rc = r ? 0 : DBP_EENGINE;
        PQclear(r);
    }
    int64_t deadline = dbp_now_ms() + 60000;
    while (rc == 0) {
        PGresult *r = engine_pg_exec(conn, "SELECT pg_is_in_recovery()", 0, NULL, err);
        if (!r) {
            rc = DBP_EENGINE;
            break;
        }
        bool recovering = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        if (!recovering)
            break;
        if (dbp_now_ms() > deadline) {
            rc = dbp_err_set(err, DBP_EENGINE, "%s was still in recovery 60 s after pg_promote",
                             in->name);
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* Sync mode: a new primary with no streaming replica (its old primary is fenced)
     * takes writes at once instead of waiting for the rejoin (pg_sync_fallback). */
    if (rc == 0 && pg_sync_fallback(conn, in, err) < 0)
        dbp_warn("pg_sync_fallback_failed", "instance=%s error=%s", in->name, dbp_log_q(err->msg));
    PQfinish(conn);
    return rc;
}

static int pg_prepare_switchover(const engine_instance_t *primary, dbp_err_t *err)
{
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    PGresult *r = engine_pg_exec(conn, "CHECKPOINT", 0, NULL, err);
    int rc = r ? 0 : DBP_EENGINE;
    PQclear(r);
    PQfinish(conn);
    return rc;
}

static int pg_needs_restart(const engine_instance_t *in, char *names, size_t len,
                            dbp_err_t *err)
{
    /* pending_restart is set by the reload that read a changed postmaster-context value
     * (https://www.postgresql.org/docs/15/view-pg-settings.html); new backends inherit it
     * from the postmaster, so a fresh connection sees the state after the last reload.
     * The recovery_target* settings are excluded: they are read only when archive
     * recovery starts, so resetting them after a point-in-time restore (restore.c) has
     * no effect on the running server and must not trigger a rolling restart (which
     * would end in a switchover away from the restored primary). */
    PGconn *conn = engine_pg_connect(in, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    PGresult *r = engine_pg_exec(conn,
                                 "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') "
                                 "FROM pg_settings WHERE pending_restart "
                                 "AND name NOT LIKE 'recovery\\_target%'",
                                 0, NULL, err);
    int rc = DBP_EENGINE;
    if (r) {
        const char *v = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
        snprintf(names, len, "%s", v);
        rc = v[0] ? 1 : 0;
    }
    PQclear(r);
    PQfinish(conn);
    return rc;
}

static int pg_rejoin(const engine_instance_t *in, const engine_instance_t *primary,
                     dbp_err_t *err)
{
    /* pg_rewind rolls the old timeline back to the fork point, copying what changed from
     * the new primary (needs wal_log_hints or data checksums: both are on). Since
     * PostgreSQL 13 it first runs crash recovery itself when the target was not shut
     * down cleanly (after a kill -9 or a fence). It connects as the admin role over the
     * new primary's socket; the service OS user maps to it through peer auth. */
    /* A just-promoted primary records its new timeline in pg_control only at its next
     * checkpoint; without one pg_rewind sees "the same timeline" and rewinds nothing. */
    PGconn *conn = engine_pg_connect(primary, "postgres", err);
    if (!conn)
        return DBP_EENGINE;
    int crc = pg_cmd(conn, "CHECKPOINT", err);
    PQfinish(conn);
    if (crc)
        return crc;
    char tool[PATH_MAX], src[512];
    engine_pg_tool(in, "pg_rewind", tool, sizeof(tool));
    snprintf(src, sizeof(src), "host=%s port=%d user=" PG_ADMIN_ROLE " dbname=postgres",
             primary->sock_dir, primary->port);
    char *argv[] = {tool, "--target-pgdata", (char *)in->data_dir, "--source-server", src,
                    "--progress", NULL};
    int rc = dbp_proc_run(argv, NULL, in->runas, in->tool_log_path, 30 * 60 * 1000, err);
    if (rc)
        dbp_err_prefix(err, "pg_rewind: ");
    return rc;
}

/* What a standby that cannot follow its primary says in its log: its walreceiver's or
 * startup process's errors, a timeline that forked before its position, an unreadable
 * record (the "incorrect prev-link" loop of docs/reliability.md). */
static const char *const pg_repl_log_marks[] = {
    "FATAL:", "ERROR:", "PANIC:", "forked off", "not in this server's history",
    "prev-link", "invalid record", "invalid magic", "could not", NULL};

const engine_ops_t engine_postgresql = {
    .name = "postgresql",
    .engine = SPEC_ENGINE_POSTGRESQL,
    .check_install = pg_check_install,
    .is_initialized = pg_is_initialized,
    .init_primary = pg_init_primary,
    .init_replica = pg_init_replica,
    .render_config = pg_render_config,
    .server_argv = pg_server_argv,
    .stop_signal = SIGINT,
    .reload_signal = SIGHUP,
    .probe = pg_probe,
    .ensure_internal = pg_ensure_internal,
    .ensure_user = pg_ensure_user,
    .ensure_database = pg_ensure_database,
    .ensure_grant = pg_ensure_grant,
    .drop_user = pg_drop_user,
    .run_sql = pg_run_sql,
    .promote = pg_promote,
    .rejoin = pg_rejoin,
    .rebuild_not_streaming = true,
    .repl_log_marks = pg_repl_log_marks,
    .prepare_switchover = pg_prepare_switchover,
    .needs_restart = pg_needs_restart,
    .backup_physical = pg_backup_physical,
    .backup_logical = pg_backup_logical,
    .logical_zstd_level = 1, /* pg_dump -Fc -Z1 output: compressed already */
    .restore_physical = pg_restore_physical,
    .restore_logical = pg_restore_logical,
    .inventory = pg_inventory,
};
