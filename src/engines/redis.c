/*
 * redis.c: the Redis driver (engine.h) over hiredis and Debian's redis-server 7.
 *
 * Layout. Each instance runs `redis-server <data_dir>/redis.conf` in the foreground,
 * listening on 127.0.0.1:<port> and on <sock_dir>/redis.sock (mode 0700, so only the
 * service user and root reach it). Its data directory holds redis.conf, users.acl (the
 * ACL file), the RDB/AOF files, and a marker that says dbplane initialised it.
 *
 * Security model: there is no open Redis. The `default` user is off, so a connection
 * that has not authenticated can run nothing. dbplane authenticates as `dbplane-admin`
 * (all commands) with the cluster's generated admin password; replicas authenticate to
 * their primary as `dbplane-repl`, which may only run PING, REPLCONF and PSYNC. Both
 * live in users.acl as SHA-256 hashes (`#<hex>`), never as plaintext. Application users
 * are created with ACL SETUSER from the hash of their password too, then saved to
 * users.acl with ACL SAVE so they survive a restart. A replica copies the application
 * users of its primary's users.acl into its own when its configuration is rendered (ACLs
 * are not replicated by Redis); that works when both run on this machine.
 *
 * The one plaintext a replica needs is `masterauth`. It is never written to a file: the
 * probe of a replica whose link to the primary is down sets it with CONFIG SET (a
 * sensitive setting that Redis redacts from SLOWLOG and MONITOR and that dbplane never
 * persists with CONFIG REWRITE). Until then the replica retries its handshake each second.
 *
 * Classes (spec.redis.class): `cache` is allkeys-lru without RDB or AOF, so it restarts
 * empty and fast; `session` and `queue` (and an unset class) are volatile-lru with AOF
 * (fsync every second) plus RDB save points, so keys without a TTL are never evicted and
 * acknowledged writes survive a crash of the server. spec.redis.maxmemoryPolicy overrides
 * the class's policy; maxmemory is spec.redis.maxmemory or 80% of spec.memory.
 *
 * Configuration changes on a running server: Redis does not reload its file on a signal,
 * so when render_config changes the files of a server that answers, it applies them at
 * once (CONFIG SET, ACL SETUSER/DELUSER, REPLICAOF) and only then writes them; a setting
 * Redis cannot change at run time is logged as needing a restart. spec.config may only
 * name directives redis-server 7.0 accepts (the table below, taken from its CONFIG GET *);
 * an unknown or dbplane-managed directive is an error before anything is written, so a
 * typo never turns into a crash loop.
 */
#include "engines/redis_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/strbuf.h"


/* Application users' permissions: every command except the administrative ones
 * (@admin: CONFIG, ACL, DEBUG, SHUTDOWN, REPLICAOF, MONITOR, CLIENT KILL, ...) and the
 * keyspace-wide dangerous ones (KEYS, SORT, RESTORE, MIGRATE, SWAPDB, FLUSHALL, FLUSHDB),
 * on all keys and channels. This is `+@all -@dangerous` with INFO allowed again, which
 * client libraries use to read the server version (BullMQ, Sidekiq). The order is the
 * one Redis 7.0 prints back in ACL GETUSER/ACL LIST, so the saved file is stable. */
static const char *const rd_app_rules[] = {
    "~*",      "&*",        "+@all",    "-@admin",  "-keys",           "-sort",    "-restore",
    "-swapdb", "-flushall", "-flushdb", "-sort_ro", "-restore-asking", "-migrate", NULL};

/* The directives redis-server 7.0 accepts in its configuration file that CONFIG GET *
 * reports (aliases included), sorted for bsearch with strcmp. Directives that only a file
 * may contain (include, rename-command, user, loadmodule) are deliberately absent: they
 * would bypass dbplane's ACLs. */
/* clang-format off */
static const char *const rd_directives[] = {
    "acl-pubsub-default", "aclfile", "acllog-max-len", "active-defrag-cycle-max",
    "active-defrag-cycle-min", "active-defrag-ignore-bytes",
    "active-defrag-max-scan-fields", "active-defrag-threshold-lower",
    "active-defrag-threshold-upper", "active-expire-effort", "activedefrag",
    "activerehashing", "always-show-logo", "aof-disable-auto-gc", "aof-load-truncated",
    "aof-rewrite-incremental-fsync", "aof-timestamp-enabled", "aof-use-rdb-preamble",
    "aof_rewrite_cpulist", "appenddirname", "appendfilename", "appendfsync", "appendonly",
    "auto-aof-rewrite-min-size", "auto-aof-rewrite-percentage", "bgsave_cpulist", "bind",
    "bind-source-addr", "bio_cpulist", "busy-reply-threshold",
    "client-output-buffer-limit", "client-query-buffer-limit",
    "cluster-allow-pubsubshard-when-down", "cluster-allow-reads-when-down",
    "cluster-allow-replica-migration", "cluster-announce-bus-port",
    "cluster-announce-hostname", "cluster-announce-ip", "cluster-announce-port",
    "cluster-announce-tls-port", "cluster-config-file", "cluster-enabled",
    "cluster-link-sendbuf-limit", "cluster-migration-barrier", "cluster-node-timeout",
    "cluster-port", "cluster-preferred-endpoint-type", "cluster-replica-no-failover",
    "cluster-replica-validity-factor", "cluster-require-full-coverage",
    "cluster-slave-no-failover", "cluster-slave-validity-factor", "crash-log-enabled",
    "crash-memcheck-enabled", "daemonize", "databases", "dbfilename", "dir", "disable-thp",
    "dynamic-hz", "enable-debug-command", "enable-module-command",
    "enable-protected-configs", "hash-max-listpack-entries", "hash-max-listpack-value",
    "hash-max-ziplist-entries", "hash-max-ziplist-value", "hll-sparse-max-bytes", "hz",
    "ignore-warnings", "io-threads", "io-threads-do-reads", "jemalloc-bg-thread",
    "latency-monitor-threshold", "latency-tracking", "latency-tracking-info-percentiles",
    "lazyfree-lazy-eviction", "lazyfree-lazy-expire", "lazyfree-lazy-server-del",
    "lazyfree-lazy-user-del", "lazyfree-lazy-user-flush", "lfu-decay-time",
    "lfu-log-factor", "list-compress-depth", "list-max-listpack-size",
    "list-max-ziplist-size", "logfile", "loglevel", "lua-time-limit", "masterauth",
    "masteruser", "maxclients", "maxmemory", "maxmemory-clients",
    "maxmemory-eviction-tenacity", "maxmemory-policy", "maxmemory-samples",
    "min-replicas-max-lag", "min-replicas-to-write", "min-slaves-max-lag",
    "min-slaves-to-write", "no-appendfsync-on-rewrite", "notify-keyspace-events",
    "oom-score-adj", "oom-score-adj-values", "pidfile", "port", "proc-title-template",
    "propagation-error-behavior", "protected-mode", "proto-max-bulk-len",
    "rdb-del-sync-files", "rdb-save-incremental-fsync", "rdbchecksum", "rdbcompression",
    "repl-backlog-size", "repl-backlog-ttl", "repl-disable-tcp-nodelay",
    "repl-diskless-load", "repl-diskless-sync", "repl-diskless-sync-delay",
    "repl-diskless-sync-max-replicas", "repl-ping-replica-period",
    "repl-ping-slave-period", "repl-timeout", "replica-announce-ip",
    "replica-announce-port", "replica-announced", "replica-ignore-disk-write-errors",
    "replica-ignore-maxmemory", "replica-lazy-flush", "replica-priority",
    "replica-read-only", "replica-serve-stale-data", "replicaof", "requirepass",
    "sanitize-dump-payload", "save", "server_cpulist", "set-max-intset-entries",
    "set-proc-title", "shutdown-on-sigint", "shutdown-on-sigterm", "shutdown-timeout",
    "slave-announce-ip", "slave-announce-port", "slave-ignore-maxmemory",
    "slave-lazy-flush", "slave-priority", "slave-read-only", "slave-serve-stale-data",
    "slaveof", "slowlog-log-slower-than", "slowlog-max-len", "socket-mark-id",
    "stop-writes-on-bgsave-error", "stream-node-max-bytes", "stream-node-max-entries",
    "supervised", "syslog-enabled", "syslog-facility", "syslog-ident", "tcp-backlog",
    "tcp-keepalive", "timeout", "tls-auth-clients", "tls-ca-cert-dir", "tls-ca-cert-file",
    "tls-cert-file", "tls-ciphers", "tls-ciphersuites", "tls-client-cert-file",
    "tls-client-key-file", "tls-client-key-file-pass", "tls-cluster", "tls-dh-params-file",
    "tls-key-file", "tls-key-file-pass", "tls-port", "tls-prefer-server-ciphers",
    "tls-protocols", "tls-replication", "tls-session-cache-size",
    "tls-session-cache-timeout", "tls-session-caching", "tracking-table-max-keys",
    "unixsocket", "unixsocketperm", "zset-max-listpack-entries", "zset-max-listpack-value",
    "zset-max-ziplist-entries", "zset-max-ziplist-value",
};
/* clang-format on */

/* Directives dbplane sets itself or that would undo its security model (a plaintext
 * password in a file, a second ACL source, modules, debug commands, cluster mode, the
 * process layout the supervisor relies on). */
static const char *const rd_managed[] = {"aclfile",
                                         "bind",
                                         "cluster-enabled",
                                         "daemonize",
                                         "dir",
                                         "enable-debug-command",
                                         "enable-module-command",
                                         "enable-protected-configs",
                                         "logfile",
                                         "masterauth",
                                         "masteruser",
                                         "pidfile",
                                         "port",
                                         "protected-mode",
                                         "replicaof",
                                         "requirepass",
                                         "slaveof",
                                         "supervised",
                                         "tls-client-key-file-pass",
                                         "tls-key-file-pass",
                                         "unixsocket",
                                         "unixsocketperm",
                                         NULL};

static const char *const rd_policies[] = {"volatile-lru",   "volatile-lfu", "volatile-random",
                                          "volatile-ttl",   "allkeys-lru",  "allkeys-lfu",
                                          "allkeys-random", "noeviction",   NULL};

/* ---- small helpers ------------------------------------------------------------------ */


/* Lower-case hex SHA-256 of s into hex[65]: the form Redis keeps ACL passwords in. */
static int rd_sha256_hex(const char *s, char hex[65], dbp_err_t *err)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!s || EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static bool rd_in_list(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (strcasecmp(list[i], s) == 0)
            return true;
    return false;
}

static int rd_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* True when redis-server 7.0 accepts `name` (any case) as a configuration directive. */
static bool rd_directive_known(const char *name)
{
    char low[64];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(low))
        return false;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    const char *key = low;
    return bsearch(&key, rd_directives, sizeof(rd_directives) / sizeof(rd_directives[0]),
                   sizeof(rd_directives[0]), rd_cmp_str) != NULL;
}

/* ---- install check ------------------------------------------------------------------ */

/* The major version of the installed redis-server, cached per binary (mtime and size),
 * so a reconcile pass does not spawn `redis-server --version` each second. */
static pthread_mutex_t rd_ver_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    time_t mtime;
    off_t size;
    int major;
    char full[32];
} rd_ver_cache;

/* Runs `redis-server --version` and returns the first line of its output in buf. Reads
 * and waits retrying on EINTR (the daemon catches SIGCHLD without SA_RESTART). */
static int rd_run_version(char *buf, size_t len, dbp_err_t *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return dbp_err_set(err, DBP_EIO, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return dbp_err_set(err, DBP_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        char *const argv[] = {RD_SERVER_BIN, "--version", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    for (;;) {
        char tmp[256];
        ssize_t n = read(fds[0], tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n < len - 1 - got ? (size_t)n : len - 1 - got;
        memcpy(buf + got, tmp, take);
        got += take;
    }
    buf[got] = '\0';
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "%s --version failed", RD_SERVER_BIN);
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static int rd_server_version(int *major, char *full, size_t fulllen, dbp_err_t *err)
{
    struct stat st;
    if (stat(RD_SERVER_BIN, &st) != 0 || access(RD_SERVER_BIN, X_OK) != 0)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "Redis 7 is not installed (" RD_SERVER_BIN " missing): apt-get install "
                           "redis-server");
    pthread_mutex_lock(&rd_ver_lock);
    if (rd_ver_cache.major > 0 && rd_ver_cache.mtime == st.st_mtime &&
        rd_ver_cache.size == st.st_size) {
        *major = rd_ver_cache.major;
        snprintf(full, fulllen, "%s", rd_ver_cache.full);
        pthread_mutex_unlock(&rd_ver_lock);
        return 0;
    }
    pthread_mutex_unlock(&rd_ver_lock);
    char line[256];
    int rc = rd_run_version(line, sizeof(line), err);
    if (rc)
        return rc;
    /* "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=..." */
    const char *v = strstr(line, "v=");
    if (!v || !isdigit((unsigned char)v[2]))
        return dbp_err_set(err, DBP_EUNSUPPORTED, "cannot read the version of %s", RD_SERVER_BIN);
    v += 2;
    size_t n = strcspn(v, " \n");
    char ver[32];
    snprintf(ver, sizeof(ver), "%.*s", (int)(n < sizeof(ver) - 1 ? n : sizeof(ver) - 1), v);
    int maj = atoi(ver);
    pthread_mutex_lock(&rd_ver_lock);
    rd_ver_cache.mtime = st.st_mtime;
    rd_ver_cache.size = st.st_size;
    rd_ver_cache.major = maj;
    snprintf(rd_ver_cache.full, sizeof(rd_ver_cache.full), "%s", ver);
    pthread_mutex_unlock(&rd_ver_lock);
    *major = maj;
    snprintf(full, fulllen, "%s", ver);
    return 0;
}

static int rd_check_install(const char *version, dbp_err_t *err)
{
    int major = 0;
    char full[32];
    int rc = rd_server_version(&major, full, sizeof(full), err);
    if (rc)
        return rc;
    int want = version && *version ? atoi(version) : 7;
    if (major != want)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "the spec asks for Redis %s but the installed redis-server is %s; "
                           "set spec.version: \"%d\" or install Redis %s",
                           version, full, major, version);
    return 0;
}

/* ---- data directory ----------------------------------------------------------------- */

static bool rd_is_initialized(const engine_instance_t *in)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/" RD_INIT_MARKER, in->data_dir);
    return access(p, F_OK) == 0;
}

/* Creates the data directory (0700, the service user's) and the marker. Existing files
 * (an RDB or AOF from an earlier life) are kept: Redis loads or replaces them itself. */
static int rd_init_dir(const engine_instance_t *in, dbp_err_t *err)
{
    int rc = dbp_mkdir_p(in->data_dir, 0700, in->runas, err);
    if (rc)
        return rc;
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/" RD_INIT_MARKER, in->data_dir);
    return dbp_write_file(p, "1\n", 2, 0600, in->runas, err);
}

static int rd_init_primary(const engine_instance_t *in, dbp_err_t *err)
{
    return rd_init_dir(in, err);
}

/* Nothing to clone: a Redis replica receives a full copy when it first connects. */
static int rd_init_replica(const engine_instance_t *in, const engine_instance_t *primary,
                           dbp_err_t *err)
{
    dbp_info("redis_replica_initialized", "instance=%s primary=%s", in->name, primary->name);
    return rd_init_dir(in, err);
}

/* ---- connections -------------------------------------------------------------------- */

static void rd_sock_path(const engine_instance_t *in, char *buf, size_t len)
{
    snprintf(buf, len, "%s/" RD_SOCK, in->sock_dir);
}

/* Runs one command (argv of argc NUL-terminated strings; binary-safe lengths computed
 * here). Returns the reply (free with freeReplyObject) or NULL with err filled, both on
 * a broken connection and on an error reply. Never puts arguments in err. */
static redisReply *rd_cmdv(redisContext *c, dbp_err_t *err, int argc, const char **argv)
{
    size_t lens[32];
    if (argc > 32) {
        dbp_err_set(err, DBP_EINVAL, "too many arguments");
        return NULL;
    }
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    if (!r) {
        dbp_err_set(err, DBP_EENGINE, "%s: %s", argv[0], c->errstr[0] ? c->errstr : "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        dbp_err_set(err, DBP_EENGINE, "%s", r->str ? r->str : "error");
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* As rd_cmdv with the arguments as a NULL-terminated list. */
redisReply *rd_cmd(redisContext *c, dbp_err_t *err, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 32)
        argv[argc++] = a;
    va_end(ap);
    return rd_cmdv(c, err, argc, argv);
}

/* Runs a command whose reply is not needed; 0 or DBP_EENGINE. */
static int rd_do(redisContext *c, dbp_err_t *err, int argc, const char **argv)
{
    redisReply *r = rd_cmdv(c, err, argc, argv);
    if (!r)
        return DBP_EENGINE;
    freeReplyObject(r);
    return 0;
}

/* Connects to the instance's unix socket and authenticates as dbplane-admin. Returns the
 * context (free with redisFree) or NULL with err filled; *refused (may be NULL) tells a
 * server that is not listening apart from one that answered and failed. */
redisContext *rd_connect(const engine_instance_t *in, int timeout_ms, bool *refused,
                         dbp_err_t *err)
{
    if (refused)
        *refused = false;
    char path[160];
    rd_sock_path(in, path, sizeof(path));
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectUnixWithTimeout(path, tv);
    if (!c) {
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    if (c->err) {
        if (refused)
            *refused = true;
        dbp_err_set(err, DBP_EENGINE, "connect %s: %s", in->name, c->errstr);
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        dbp_err_set(err, DBP_EENGINE, "connect %s: cannot set timeout", in->name);
        redisFree(c);
        return NULL;
    }
    if (!in->admin_password) {
        dbp_err_set(err, DBP_EINVAL, "no admin credentials for %s", in->name);
        redisFree(c);
        return NULL;
    }
    redisReply *r = rd_cmd(c, err, "AUTH", RD_ADMIN_USER, in->admin_password, NULL);
    if (!r) {
        dbp_err_prefix(err, "authenticate to %s as " RD_ADMIN_USER ": ", in->name);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/* Copies the value of `key` from INFO text ("key:value\r\n" lines) into buf; false when
 * absent. */
bool rd_info(const char *info, const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = info; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            const char *v = p + kl + 1;
            size_t n = strcspn(v, "\r\n");
            snprintf(buf, len, "%.*s", (int)n, v);
            return true;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

int64_t rd_info_i64(const char *info, const char *key, int64_t dflt)
{
    char v[64];
    return rd_info(info, key, v, sizeof(v)) ? strtoll(v, NULL, 10) : dflt;
}

/* The reply of INFO (all default sections) as an owned string (free with free()). */
char *rd_info_all(redisContext *c, dbp_err_t *err)
{
    redisReply *r = rd_cmd(c, err, "INFO", NULL);
    if (!r)
        return NULL;
    char *s = NULL;
    if (r->type == REDIS_REPLY_STRING)
        s = strndup(r->str, r->len);
    freeReplyObject(r);
    if (!s)
        dbp_err_set(err, DBP_EENGINE, "INFO: unexpected reply");
    return s;
}

/* ---- ACL lines ---------------------------------------------------------------------- */

/* A list of ACL file lines ("user NAME RULES..."), owned strings. */
typedef struct rd_lines {
    char **v;
    size_t n, cap;
} rd_lines_t;

static void rd_lines_free(rd_lines_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int rd_lines_add(rd_lines_t *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, ncap * sizeof(char *));
        if (!nv)
            return DBP_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    char *d = strndup(s, len);
    if (!d)
        return DBP_ENOMEM;
    l->v[l->n++] = d;
    return 0;
}

/* The rules of an ACL line (or a rule string) with their tokens sorted, as an owned
 * string (free with free()); NULL when out of memory. Redis prints single-command rules
 * in an order that changes from one process to the next (it walks a hash table), so two
 * descriptions of a user are compared this way. The rules here are only additions after
 * one +@all or -@all, or removals after +@all, so their order carries no meaning. */
static char *rd_norm(const char *line)
{
    char *copy = strdup(line);
    if (!copy)
        return NULL;
    const char *tok[64];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, " ", &save); t && n < 64; t = strtok_r(NULL, " ", &save))
        tok[n++] = t;
    qsort(tok, (size_t)n, sizeof(tok[0]), rd_cmp_str);
    size_t need = strlen(line) + 2;
    char *out = malloc(need);
    if (out) {
        out[0] = '\0';
        for (int i = 0; i < n; i++)
            snprintf(out + strlen(out), need - strlen(out), "%s%s", i ? " " : "", tok[i]);
    }
    free(copy);
    return out;
}

/* True when both describe the same rules (see rd_norm). */
static bool rd_same_rules(const char *a, const char *b)
{
    char *na = rd_norm(a), *nb = rd_norm(b);
    bool same = na && nb && strcmp(na, nb) == 0;
    free(na);
    free(nb);
    return same;
}

static bool rd_lines_has(const rd_lines_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (rd_same_rules(l->v[i], s))
            return true;
    return false;
}

/* True when both lists hold the same users with the same rules, in any order. */
static bool rd_lines_same(const rd_lines_t *a, const rd_lines_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!rd_lines_has(b, a->v[i]))
            return false;
    return true;
}

/* The user name of an ACL line into buf ("" when the line is not "user NAME ..."). */
static void rd_line_user(const char *line, char *buf, size_t len)
{
    buf[0] = '\0';
    if (strncmp(line, "user ", 5) != 0)
        return;
    const char *n = line + 5;
    size_t k = strcspn(n, " ");
    snprintf(buf, len, "%.*s", (int)k, n);
}

static bool rd_user_internal(const char *name)
{
    return strcmp(name, "default") == 0 || strcmp(name, RD_ADMIN_USER) == 0 ||
           strcmp(name, RD_REPL_USER) == 0;
}

/* Reads the "user ..." lines of an ACL file; when `apps_only`, only those of users that
 * are not dbplane's own. An absent file gives an empty list. */
static int rd_read_acl(const char *path, bool apps_only, rd_lines_t *out, dbp_err_t *err)
{
    char *data = NULL;
    size_t len = 0;
    dbp_err_t rerr;
    int rc = dbp_read_file(path, &data, &len, &rerr);
    if (rc == DBP_ENOENT)
        return 0;
    if (rc) {
        *err = rerr;
        return rc;
    }
    for (char *p = data; *p;) {
        size_t n = strcspn(p, "\r\n");
        char name[256];
        char save = p[n];
        p[n] = '\0';
        rd_line_user(p, name, sizeof(name));
        if (name[0] && !(apps_only && rd_user_internal(name)) && rd_lines_add(out, p, n) != 0) {
            free(data);
            return dbp_err_set(err, DBP_ENOMEM, "out of memory");
        }
        p[n] = save;
        p += n;
        while (*p == '\r' || *p == '\n')
            p++;
    }
    free(data);
    return 0;
}

static int rd_cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The desired users.acl of an instance: dbplane's three users, then the application
 * users: a primary keeps those in its own file (written by ACL SAVE), a replica takes its
 * primary's. Lines are sorted by user, as ACL SAVE writes them, so a file Redis saved
 * compares equal to a rendered one. */
static int rd_render_acl(const engine_instance_t *in, const engine_instance_t *primary,
                         rd_lines_t *out, dbp_err_t *err)
{
    char ah[65], rh[65], line[256];
    int rc;
    if (!in->admin_password || !in->repl_password)
        return dbp_err_set(err, DBP_EINVAL, "no internal credentials for %s", in->name);
    if ((rc = rd_sha256_hex(in->admin_password, ah, err)) ||
        (rc = rd_sha256_hex(in->repl_password, rh, err)))
        return rc;
    /* Canonical forms, as ACL LIST prints them (sanitize-payload, Redis's default after
     * `reset`, makes RESTORE payloads checked deeply). */
    const char *deflt = "user default off sanitize-payload resetchannels -@all";
    rc = rd_lines_add(out, deflt, strlen(deflt));
    snprintf(line, sizeof(line), "user " RD_ADMIN_USER " on sanitize-payload #%s ~* &* +@all", ah);
    rc = rc ? rc : rd_lines_add(out, line, strlen(line));
    snprintf(line, sizeof(line),
             "user " RD_REPL_USER
             " on sanitize-payload #%s resetchannels -@all +ping +psync +replconf",
             rh);
    rc = rc ? rc : rd_lines_add(out, line, strlen(line));
    if (rc)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RD_ACLFILE, primary ? primary->data_dir : in->data_dir);
    rc = rd_read_acl(path, true, out, err);
    if (rc)
        return rc;
    qsort(out->v, out->n, sizeof(char *), rd_cmp_line);
    return 0;
}

/* Splits an ACL line into ACL SETUSER arguments: "ACL" "SETUSER" NAME "reset" RULES...
 * (argv points into `copy`, which the caller frees). Returns argc, or -1. */
static int rd_setuser_argv(const char *line, char **copy, const char **argv, int max)
{
    *copy = strdup(line);
    if (!*copy || max < 5)
        return -1;
    int argc = 0;
    argv[argc++] = "ACL";
    argv[argc++] = "SETUSER";
    char *save = NULL;
    char *tok = strtok_r(*copy, " ", &save); /* "user" */
    tok = tok ? strtok_r(NULL, " ", &save) : NULL;
    if (!tok)
        return -1;
    argv[argc++] = tok;
    argv[argc++] = "reset";
    while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
        if (argc >= max)
            return -1;
        argv[argc++] = tok;
    }
    return argc;
}

/* Makes the server's users match `want`: ACL SETUSER for every wanted line ACL LIST does
 * not print identically; when `exclusive`, ACL DELUSER for listed users not wanted.
 * Returns 1 when something changed, 0, or an error. */
static int rd_acl_converge(redisContext *c, const rd_lines_t *want, bool exclusive, dbp_err_t *err)
{
    redisReply *r = rd_cmd(c, err, "ACL", "LIST", NULL);
    if (!r)
        return DBP_EENGINE;
    rd_lines_t have = {0};
    int rc = 0, changed = 0;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements && rc == 0; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                rc = rd_lines_add(&have, r->element[i]->str, r->element[i]->len);
    }
    freeReplyObject(r);
    if (rc) {
        rd_lines_free(&have);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < want->n && rc == 0; i++) {
        if (rd_lines_has(&have, want->v[i]))
            continue;
        char *copy = NULL;
        const char *argv[32];
        int argc = rd_setuser_argv(want->v[i], &copy, argv, 32);
        if (argc < 0)
            rc = dbp_err_set(err, DBP_EINVAL, "malformed ACL line");
        else
            rc = rd_do(c, err, argc, argv);
        free(copy);
        changed = 1;
    }
    for (size_t i = 0; exclusive && i < have.n && rc == 0; i++) {
        char name[256];
        rd_line_user(have.v[i], name, sizeof(name));
        bool wanted = false;
        for (size_t k = 0; k < want->n && !wanted; k++) {
            char wn[256];
            rd_line_user(want->v[k], wn, sizeof(wn));
            wanted = strcmp(wn, name) == 0;
        }
        if (name[0] && !wanted) {
            const char *argv[] = {"ACL", "DELUSER", name};
            rc = rd_do(c, err, 3, argv);
            changed = 1;
        }
    }
    rd_lines_free(&have);
    return rc ? rc : changed;
}

/* ---- configuration ------------------------------------------------------------------ */

/* A directive and its value as rendered: dbplane's defaults, replaced by spec.config. */
typedef struct rd_kv {
    const char *key; /* borrowed: a literal or a spec key */
    char value[256];
    const spec_kv_t *from; /* the spec.config entry that set it; NULL for a default */
} rd_kv_t;

#define RD_MAX_KV 256

typedef struct rd_conf {
    rd_kv_t kv[RD_MAX_KV]; /* settings CONFIG SET can change at run time (mostly) */
    int n;
} rd_conf_t;

static void rd_conf_set(rd_conf_t *cf, const char *key, const char *value, const spec_kv_t *from)
{
    for (int i = 0; i < cf->n; i++) {
        if (strcasecmp(cf->kv[i].key, key) == 0) {
            snprintf(cf->kv[i].value, sizeof(cf->kv[i].value), "%s", value);
            cf->kv[i].from = from;
            return;
        }
    }
    if (cf->n < RD_MAX_KV) {
        cf->kv[cf->n].key = key;
        snprintf(cf->kv[cf->n].value, sizeof(cf->kv[cf->n].value), "%s", value);
        cf->kv[cf->n].from = from;
        cf->n++;
    }
}

/* "spec.config.KEY (file:line:col)" for error messages; without the position when the
 * spec was re-read from the store ("<store:...>"), where lines mean nothing to a user. */
static void rd_where(const spec_kv_t *kv, char *buf, size_t len)
{
    if (kv->at.file && kv->at.line && kv->at.file[0] != '<')
        snprintf(buf, len, "spec.config.%s (%s:%d:%d)", kv->key, kv->at.file, kv->at.line,
                 kv->at.col);
    else
        snprintf(buf, len, "spec.config.%s", kv->key);
}

/* Works out every tunable setting of the instance from its Cluster spec; DBP_EINVAL for
 * a spec.config entry redis-server would reject by name, a managed directive, a value
 * that does not fit on one line, or an unknown maxmemory policy. */
static int rd_conf_build(const spec_cluster_t *c, rd_conf_t *cf, dbp_err_t *err)
{
    memset(cf, 0, sizeof(*cf));
    char v[64];
    uint64_t maxmem = 0;
    if (c->redis.maxmemory.set)
        maxmem = c->redis.maxmemory.v;
    else if (c->memory.set)
        maxmem = c->memory.v / 5 * 4; /* 80%: the server's own overhead lives in the rest */
    if (maxmem) {
        snprintf(v, sizeof(v), "%llu", (unsigned long long)maxmem);
        rd_conf_set(cf, "maxmemory", v, NULL);
    }
    bool cache = c->redis.class_ == SPEC_REDIS_CLASS_CACHE;
    const char *policy = cache ? "allkeys-lru" : "volatile-lru";
    if (c->redis.maxmemory_policy.set && c->redis.maxmemory_policy.v) {
        policy = c->redis.maxmemory_policy.v;
        if (!rd_in_list(rd_policies, policy))
            return dbp_err_set(err, DBP_EINVAL,
                               "spec.redis.maxmemoryPolicy: '%s' is not a Redis maxmemory "
                               "policy (volatile-lru, allkeys-lru, noeviction, ...)",
                               policy);
    }
    rd_conf_set(cf, "maxmemory-policy", policy, NULL);
    if (cache) {
        /* No persistence at all: fast restarts, and the RDB a replica receives during a
         * full sync is deleted after loading, so a restarted replica starts empty too. */
        rd_conf_set(cf, "appendonly", "no", NULL);
        rd_conf_set(cf, "save", "", NULL);
        rd_conf_set(cf, "rdb-del-sync-files", "yes", NULL);
    } else {
        rd_conf_set(cf, "appendonly", "yes", NULL);
        rd_conf_set(cf, "appendfsync", "everysec", NULL);
        rd_conf_set(cf, "save", "3600 1 300 100 60 10000", NULL);
        rd_conf_set(cf, "rdb-del-sync-files", "no", NULL);
    }
    for (size_t i = 0; i < c->config.n; i++) {
        const spec_kv_t *kv = &c->config.v[i];
        char where[PATH_MAX + 64];
        rd_where(kv, where, sizeof(where));
        if (!rd_directive_known(kv->key))
            return dbp_err_set(err, DBP_EINVAL,
                               "%s: redis-server 7 has no directive '%s' (hint: see "
                               "`redis-cli CONFIG GET *` for the names it accepts)",
                               where, kv->key);
        if (rd_in_list(rd_managed, kv->key))
            return dbp_err_set(err, DBP_EINVAL,
                               "%s: '%s' is managed by dbplane and cannot be set in spec.config",
                               where, kv->key);
        for (const char *p = kv->value; *p; p++)
            if (iscntrl((unsigned char)*p))
                return dbp_err_set(err, DBP_EINVAL, "%s: the value must be one line of text",
                                   where);
        if (strlen(kv->value) >= sizeof(cf->kv[0].value))
            return dbp_err_set(err, DBP_EINVAL, "%s: the value is too long", where);
        if (strcasecmp(kv->key, "maxmemory-policy") == 0 && !rd_in_list(rd_policies, kv->value))
            return dbp_err_set(err, DBP_EINVAL, "%s: '%s' is not a maxmemory policy", where,
                               kv->value);
        if (cf->n >= RD_MAX_KV)
            return dbp_err_set(err, DBP_EINVAL, "spec.config: too many entries");
        rd_conf_set(cf, kv->key, kv->value, kv);
    }
    return 0;
}

/* Writes a directive value so redis-server's line splitter (sdssplitargs) reads it back:
 * bare when it is made of safe characters (a value like "3600 1 300 100" stays several
 * arguments, as for CONFIG SET), else double-quoted with \" and \\ escaped. */
static void sb_quoted(dbp_sb_t *sb, const char *v)
{
    dbp_sb_printf(sb, "\"");
    for (const char *p = v; *p; p++)
        dbp_sb_printf(sb, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    dbp_sb_printf(sb, "\"");
}

static void sb_value(dbp_sb_t *sb, const char *v)
{
    bool bare = *v != '\0';
    for (const char *p = v; *p && bare; p++)
        bare = isalnum((unsigned char)*p) || strchr(" ._:/,+-*@%=", *p) != NULL;
    if (bare)
        dbp_sb_printf(sb, "%s", v);
    else
        sb_quoted(sb, v);
}

/* The text of redis.conf. */
static int rd_render_conf(const engine_instance_t *in, const engine_instance_t *primary,
                          const rd_conf_t *cf, dbp_sb_t *sb, dbp_err_t *err)
{
    char sock[160];
    rd_sock_path(in, sock, sizeof(sock));
    if (strlen(sock) >= 104)
        return dbp_err_set(err, DBP_EINVAL, "socket path %s is too long", sock);
    dbp_sb_printf(sb,
              "# Written by dbplane for instance %s of cluster %s; edits are replaced.\n"
              "# Set engine parameters in the Cluster's spec.config instead.\n",
              in->name, in->cluster);
    dbp_sb_printf(sb, "bind %s\nport %d\nunixsocket ", in->host, in->port);
    sb_quoted(sb, sock);
    dbp_sb_printf(sb, "\nunixsocketperm 700\n");
    dbp_sb_printf(sb, "protected-mode yes\ndaemonize no\nsupervised no\nlogfile \"\"\n");
    dbp_sb_printf(sb, "dir ");
    sb_quoted(sb, in->data_dir);
    dbp_sb_printf(sb, "\naclfile ");
    char acl[PATH_MAX + 32];
    snprintf(acl, sizeof(acl), "%s/" RD_ACLFILE, in->data_dir);
    sb_quoted(sb, acl);
    dbp_sb_printf(sb, "\n");
    if (primary) {
        /* masterauth is set at run time by the probe: it would be a plaintext here. */
        dbp_sb_printf(sb, "replicaof %s %d\nmasteruser " RD_REPL_USER "\nreplica-read-only yes\n",
                  primary->host, primary->port);
    }
    /* A replica must notice a hung primary about when the HA monitor's failcount runs out
     * (the monitor fails over only once no replica sees the primary's stream, see ha/):
     * repl-timeout = (failcount - 1) x interval in whole seconds (Redis's unit), at least
     * 2; the primary pings every second so an idle but healthy link never times out. */
    dbp_sb_printf(sb, "repl-ping-replica-period 1\nrepl-timeout %lld\n",
                  (long long)rd_repl_timeout_s(in->spec));
    for (int i = 0; i < cf->n; i++) {
        dbp_sb_printf(sb, "%s ", cf->kv[i].key);
        sb_value(sb, cf->kv[i].value);
        dbp_sb_printf(sb, "\n");
    }
    if (sb->failed)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory rendering configuration");
    return 0;
}

/* Brings a running server to the rendered state without a restart: its users, its
 * role, then every tunable setting. A setting Redis cannot change at run time is logged
 * (it applies at the next restart); any other refusal is an error naming the spec field,
 * and the caller then leaves the files as they were, so the next pass tries again. */
static int rd_apply_running(redisContext *c, const engine_instance_t *in,
                            const engine_instance_t *primary, const rd_lines_t *acl,
                            const rd_conf_t *cf, dbp_err_t *err)
{
    int rc = rd_acl_converge(c, acl, true, err);
    if (rc < 0)
        return rc;
    char *info = rd_info_all(c, err);
    if (!info)
        return DBP_EENGINE;
    char role[16] = "", mhost[64] = "", mport[16] = "";
    (void)rd_info(info, "role", role, sizeof(role));
    (void)rd_info(info, "master_host", mhost, sizeof(mhost));
    (void)rd_info(info, "master_port", mport, sizeof(mport));
    free(info);
    if (!primary && strcmp(role, "slave") == 0) {
        const char *argv[] = {"REPLICAOF", "NO", "ONE"};
        if ((rc = rd_do(c, err, 3, argv)))
            return rc;
        dbp_info("redis_promoted", "instance=%s", in->name);
    } else if (primary && (strcmp(role, "master") == 0 || strcmp(mhost, primary->host) != 0 ||
                           atoi(mport) != primary->port)) {
        char port[16];
        snprintf(port, sizeof(port), "%d", primary->port);
        const char *a1[] = {"CONFIG", "SET", "masteruser", RD_REPL_USER};
        const char *a2[] = {"CONFIG", "SET", "masterauth", in->repl_password};
        const char *a3[] = {"REPLICAOF", primary->host, port};
        if ((rc = rd_do(c, err, 4, a1)) || (rc = rd_do(c, err, 4, a2)) ||
            (rc = rd_do(c, err, 3, a3)))
            return rc;
        dbp_info("redis_following", "instance=%s primary=%s", in->name, primary->name);
    }
    for (int i = 0; i < cf->n; i++) {
        const char *argv[] = {"CONFIG", "SET", cf->kv[i].key, cf->kv[i].value};
        dbp_err_t serr;
        if (rd_do(c, &serr, 4, argv) == 0)
            continue;
        if (strstr(serr.msg, "immutable")) {
            dbp_warn("redis_restart_required", "instance=%s directive=%s", in->name, cf->kv[i].key);
            continue;
        }
        if (cf->kv[i].from) {
            char where[PATH_MAX + 64];
            rd_where(cf->kv[i].from, where, sizeof(where));
            return dbp_err_set(err, DBP_EINVAL, "%s: redis-server refused '%s': %s", where,
                               cf->kv[i].value, serr.msg);
        }
        *err = serr;
        dbp_err_prefix(err, "CONFIG SET %s: ", cf->kv[i].key);
        return DBP_EENGINE;
    }
    dbp_info("redis_config_applied", "instance=%s", in->name);
    return 0;
}

/* A data dir restored from an RDB (redis_backup.c) starts without AOF: Redis would
 * otherwise start from a new, empty AOF and ignore the RDB. Once the running server has
 * loaded the RDB and rewritten its AOF, the declared appendonly applies again. */
static void rd_restore_first_start(const engine_instance_t *in, rd_conf_t *cf)
{
    for (int i = 0; i < cf->n; i++) {
        if (strcasecmp(cf->kv[i].key, "appendonly") != 0)
            continue;
        rdb_restore_state_t st = rdb_restore_pending(in, strcasecmp(cf->kv[i].value, "yes") == 0);
        if (st == RDB_RESTORE_FIRST_START) {
            rd_conf_set(cf, "appendonly", "no", cf->kv[i].from);
        } else if (st == RDB_RESTORE_TO_AOF) {
            /* AOF was turned on at run time: no CONFIG SET of this pass may undo it. */
            memmove(&cf->kv[i], &cf->kv[i + 1], sizeof(cf->kv[0]) * (size_t)(cf->n - i - 1));
            cf->n--;
        }
        return;
    }
}

static int rd_render_config(const engine_instance_t *in, const engine_instance_t *primary,
                            dbp_err_t *err)
{
    rd_conf_t *cf = malloc(sizeof(*cf));
    dbp_sb_t conf = {0}, aclt = {0};
    rd_lines_t acl = {0};
    int rc;
    if (!cf)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if ((rc = rd_conf_build(in->spec, cf, err)))
        goto out;
    rd_restore_first_start(in, cf);
    if ((rc = rd_render_conf(in, primary, cf, &conf, err)) ||
        (rc = rd_render_acl(in, primary, &acl, err)))
        goto out;
    for (size_t i = 0; i < acl.n; i++)
        dbp_sb_printf(&aclt, "%s\n", acl.v[i]);
    if (aclt.failed) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    char cpath[PATH_MAX + 32], apath[PATH_MAX + 32];
    snprintf(cpath, sizeof(cpath), "%s/" RD_CONF, in->data_dir);
    snprintf(apath, sizeof(apath), "%s/" RD_ACLFILE, in->data_dir);
    /* ACL SAVE creates the file 0644; the directory is 0700, but keep the file private. */
    struct stat st;
    if (stat(apath, &st) == 0 && (st.st_mode & 077) && chmod(apath, 0600) != 0)
        dbp_warn("chmod_failed", "path=%s error=%s", dbp_log_q(apath), dbp_log_q(strerror(errno)));
    /* users.acl as Redis saved it may list rules in another order: compare users. */
    rd_lines_t cur = {0};
    dbp_err_t ignore;
    bool acl_same = rd_read_acl(apath, false, &cur, &ignore) == 0 && rd_lines_same(&cur, &acl);
    rd_lines_free(&cur);
    bool conf_same = dbp_file_equals(cpath, conf.buf, conf.len);
    if (!primary)
        rd_sync_writes(in);
    if (conf_same && acl_same) {
        rc = 0;
        goto out;
    }
    /* Something changed: a running server takes it now, or the files are not written. */
    bool refused = false;
    dbp_err_t cerr;
    redisContext *c = rd_connect(in, 1000, &refused, &cerr);
    if (c) {
        if (!conf_same)
            rd_keep_running_conf(c, in);
        rc = rd_apply_running(c, in, primary, &acl, cf, err);
        redisFree(c);
        if (rc < 0)
            goto out;
    } else if (!refused) {
        *err = cerr;
        rc = cerr.code ? cerr.code : DBP_EENGINE;
        goto out;
    }
    int a = acl_same ? 0
                     : dbp_write_file_if_changed(apath, aclt.buf, aclt.len, 0600, in->runas, err);
    if (a < 0) {
        rc = a;
        goto out;
    }
    int b = dbp_write_file_if_changed(cpath, conf.buf, conf.len, 0600, in->runas, err);
    rc = b < 0 ? b : (a | b);
out:
    free(cf);
    dbp_sb_free(&conf);
    dbp_sb_free(&aclt);
    rd_lines_free(&acl);
    return rc;
}

static int rd_server_argv(const engine_instance_t *in, char **argv, int max, char *buf,
                          size_t buflen, dbp_err_t *err)
{
    if (max < 3)
        return dbp_err_set(err, DBP_EINVAL, "argv too small");
    if (snprintf(buf, buflen, "%s/" RD_CONF, in->data_dir) >= (int)buflen)
        return dbp_err_set(err, DBP_EINVAL, "path too long");
    argv[0] = RD_SERVER_BIN;
    argv[1] = buf;
    argv[2] = NULL;
    return 0;
}

/* ---- probe -------------------------------------------------------------------------- */

/* Seconds without any byte from the primary (master_last_io_seconds_ago) after which a
 * replica no longer counts as streaming; the primary pings every second. */
#define RD_SILENT_S 2

/* The name of the sibling instance (same cluster directory) whose redis.conf says
 * `port <port>`; "127.0.0.1:<port>" style fallback when none does (instances on other
 * machines). Redis reports replicas only by address. */
static void rd_name_by_port(const engine_instance_t *in, const char *ip, int port, char *buf,
                            size_t len)
{
    snprintf(buf, len, "%s:%d", ip, port);
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", in->dir);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        return;
    *slash = '\0';
    DIR *d = opendir(parent);
    if (!d)
        return;
    char want[32];
    snprintf(want, sizeof(want), "\nport %d\n", port);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s/data/" RD_CONF, parent, e->d_name);
        char *data = NULL;
        dbp_err_t ignore;
        if (dbp_read_file(path, &data, NULL, &ignore) != 0)
            continue;
        bool hit = strstr(data, want) != NULL;
        free(data);
        if (hit) {
            snprintf(buf, len, "%s", e->d_name);
            break;
        }
    }
    closedir(d);
}

/* Parses "ip=127.0.0.1,port=25433,state=online,offset=1234,lag=0" (INFO's slaveN). */
static void rd_parse_replica(const engine_instance_t *in, const char *v, int64_t primary_off,
                             engine_replica_stat_t *rs)
{
    char ip[64] = "", state[32] = "";
    int port = 0;
    int64_t off = -1, lag = -1;
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", v);
    char *save = NULL;
    for (char *f = strtok_r(tmp, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(f, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *val = eq + 1;
        if (strcmp(f, "ip") == 0)
            snprintf(ip, sizeof(ip), "%s", val);
        else if (strcmp(f, "port") == 0)
            port = atoi(val);
        else if (strcmp(f, "state") == 0)
            snprintf(state, sizeof(state), "%s", val);
        else if (strcmp(f, "offset") == 0)
            off = strtoll(val, NULL, 10);
        else if (strcmp(f, "lag") == 0)
            lag = strtoll(val, NULL, 10);
    }
    rd_name_by_port(in, ip, port, rs->name, sizeof(rs->name));
    /* Redis states: wait_bgsave and send_bulk are a full sync, online is streaming. */
    snprintf(rs->state, sizeof(rs->state), "%s",
             strcmp(state, "online") == 0                                           ? "streaming"
             : strcmp(state, "wait_bgsave") == 0 || strcmp(state, "send_bulk") == 0 ? "catchup"
                                                                                    : state);
    rs->lag_bytes = off >= 0 && primary_off >= off ? primary_off - off : -1;
    /* `lag` is seconds since the replica's last acknowledgement (sent every second). */
    rs->lag_ms = lag >= 0 ? lag * 1000 : -1;
}

static int rd_probe(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    bool refused = false;
    dbp_err_t cerr;
    redisContext *c =
        rd_connect(in, in->probe_timeout_ms > 0 ? in->probe_timeout_ms : 3000, &refused, &cerr);
    if (!c) {
        if (refused)
            return 0; /* not listening (yet): unreachable, not an error */
        *err = cerr;
        return cerr.code ? cerr.code : DBP_EENGINE;
    }
    char *info = rd_info_all(c, err);
    if (!info) {
        redisFree(c);
        return DBP_EENGINE;
    }
    out->reachable = true;
    char v[128];
    if (rd_info(info, "role", v, sizeof(v)))
        out->role = strcmp(v, "master") == 0  ? ENGINE_ROLE_PRIMARY
                    : strcmp(v, "slave") == 0 ? ENGINE_ROLE_REPLICA
                                              : ENGINE_ROLE_UNKNOWN;
    int64_t off = rd_info_i64(info, "master_repl_offset", 0);
    snprintf(out->position, sizeof(out->position), "%lld", (long long)off);
    out->position_value = off > 0 ? (uint64_t)off : 0;
    (void)rd_info(info, "redis_version", out->version, sizeof(out->version));
    out->mem_used = rd_info_i64(info, "used_memory", 0);
    out->mem_limit = rd_info_i64(info, "maxmemory", 0);
    out->evicted_keys = rd_info_i64(info, "evicted_keys", 0);
    char rdb[16] = "", aof_on[8] = "0", aof[16] = "";
    (void)rd_info(info, "rdb_last_bgsave_status", rdb, sizeof(rdb));
    (void)rd_info(info, "aof_enabled", aof_on, sizeof(aof_on));
    (void)rd_info(info, "aof_last_write_status", aof, sizeof(aof));
    snprintf(out->persistence, sizeof(out->persistence), "rdb:%s aof:%s", rdb[0] ? rdb : "?",
             strcmp(aof_on, "1") == 0 ? (aof[0] ? aof : "?") : "off");
    if (out->role == ENGINE_ROLE_REPLICA) {
        char link[16] = "";
        (void)rd_info(info, "master_link_status", link, sizeof(link));
        /* The link stays "up" until repl-timeout (2 s or more) has passed without a byte
         * from the primary, and Redis checks that once a second: a hung primary would
         * block the failover verdict for up to repl-timeout + 1 s. With dbplane's
         * repl-ping-replica-period of 1 s, RD_SILENT_S seconds without anything from the
         * primary already mean it does not reach this replica (HA: "no healthy replica
         * still sees it streaming"). */
        int64_t silent = rd_info_i64(info, "master_last_io_seconds_ago", 0);
        out->streaming = strcmp(link, "up") == 0 && silent < RD_SILENT_S;
        /* masterauth lives only in the server's memory (see the top of this file): give it
         * to a replica whose link is down, e.g. after a restart by the supervisor. */
        if (strcmp(link, "up") != 0 && in->repl_password) {
            const char *argv[] = {"CONFIG", "SET", "masterauth", in->repl_password};
            dbp_err_t serr;
            if (rd_do(c, &serr, 4, argv) != 0)
                dbp_warn("redis_masterauth_failed", "instance=%s error=%s", in->name,
                         dbp_log_q(serr.msg));
        }
    } else if (out->role == ENGINE_ROLE_PRIMARY) {
        int n = (int)rd_info_i64(info, "connected_slaves", 0);
        for (int i = 0; i < n && out->nreplicas < ENGINE_MAX_REPLICAS; i++) {
            char key[32], line[256];
            snprintf(key, sizeof(key), "slave%d", i);
            if (rd_info(info, key, line, sizeof(line)))
                rd_parse_replica(in, line, off, &out->replicas[out->nreplicas++]);
        }
    }
    free(info);
    redisFree(c);
    return 0;
}

/* ---- accounts ----------------------------------------------------------------------- */

/* On the primary: repairs drift of dbplane's own users (the default user switched on, an
 * admin password changed by hand) from what users.acl says. Replication needs nothing
 * else in Redis. Returns 1 when it repaired something. */
static int rd_ensure_internal(const engine_instance_t *primary, const engine_instance_t *replicas,
                              int nreplicas, dbp_err_t *err)
{
    rd_lines_t all = {0}, mine = {0};
    int rc = rd_render_acl(primary, NULL, &all, err);
    for (size_t i = 0; rc == 0 && i < all.n; i++) {
        char name[256];
        rd_line_user(all.v[i], name, sizeof(name));
        if (rd_user_internal(name) && rd_lines_add(&mine, all.v[i], strlen(all.v[i])) != 0)
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    if (rc == 0) {
        redisContext *c = rd_connect(primary, 3000, NULL, err);
        if (!c) {
            rc = DBP_EENGINE;
        } else {
            rc = rd_acl_converge(c, &mine, false, err);
            redisFree(c);
            if (rc > 0)
                dbp_warn("redis_acl_repaired", "instance=%s", primary->name);
        }
    }
    rd_lines_free(&all);
    rd_lines_free(&mine);
    return rc;
}

/* Names Redis and its ACL file can carry: printable, no spaces, not dbplane's own. */
static int rd_check_username(const char *u, dbp_err_t *err)
{
    if (!u || !*u || strlen(u) > 128)
        return dbp_err_set(err, DBP_EINVAL, "a Redis username must be 1..128 characters");
    for (const char *p = u; *p; p++)
        if (!isgraph((unsigned char)*p))
            return dbp_err_set(err, DBP_EINVAL,
                               "Redis username '%s' may not contain spaces or control "
                               "characters",
                               u);
    if (rd_user_internal(u))
        return dbp_err_set(err, DBP_EINVAL, "Redis username '%s' is reserved for dbplane", u);
    return 0;
}

/* Finds field `key` in the flat key/value array ACL GETUSER returns (RESP2). */
static const redisReply *rd_field(const redisReply *r, const char *key)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, key) == 0)
            return r->element[i + 1];
    return NULL;
}

static bool rd_str_is(const redisReply *r, const char *s)
{
    return r && r->type == REDIS_REPLY_STRING && strcmp(r->str, s) == 0;
}

/* True when ACL GETUSER's reply shows the user enabled, with exactly the password whose
 * hash is `hash`, and with dbplane's default permissions. */
static bool rd_user_matches(const redisReply *r, const char *hash)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return false;
    const redisReply *flags = rd_field(r, "flags"), *pw = rd_field(r, "passwords");
    const redisReply *cmds = rd_field(r, "commands"), *sel = rd_field(r, "selectors");
    bool on = false;
    for (size_t i = 0; flags && flags->type == REDIS_REPLY_ARRAY && i < flags->elements; i++) {
        if (rd_str_is(flags->element[i], "off"))
            return false;
        if (rd_str_is(flags->element[i], "on"))
            on = true;
    }
    if (!on || !pw || pw->type != REDIS_REPLY_ARRAY || pw->elements != 1 ||
        !rd_str_is(pw->element[0], hash))
        return false;
    if (!rd_str_is(rd_field(r, "keys"), "~*") || !rd_str_is(rd_field(r, "channels"), "&*"))
        return false;
    if (sel && sel->type == REDIS_REPLY_ARRAY && sel->elements > 0)
        return false;
    char want[512] = "";
    for (int i = 2; rd_app_rules[i]; i++) /* skip ~* and &*, reported apart */
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i > 2 ? " " : "",
                 rd_app_rules[i]);
    return cmds && cmds->type == REDIS_REPLY_STRING && rd_same_rules(cmds->str, want);
}

/* True when the primary's users.acl has a line for `user`. */
static bool rd_acl_file_has(const engine_instance_t *in, const char *user)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RD_ACLFILE, in->data_dir);
    rd_lines_t l = {0};
    dbp_err_t ignore;
    bool has = false;
    if (rd_read_acl(path, true, &l, &ignore) == 0) {
        for (size_t i = 0; i < l.n && !has; i++) {
            char name[256];
            rd_line_user(l.v[i], name, sizeof(name));
            has = strcmp(name, user) == 0;
        }
    }
    rd_lines_free(&l);
    return has;
}

/*
 * The declared user as an ACL user on the primary: enabled, one password (sent as its
 * SHA-256 `#hash`, so the plaintext never reaches the server), permissions rd_app_rules.
 * maxUserConnections has no Redis equivalent and is ignored. The result is saved to
 * users.acl (ACL SAVE); replicas copy it from there when their config is rendered.
 */
static int rd_ensure_user(const engine_instance_t *primary, const spec_user_t *user,
                          const char *password, dbp_err_t *err)
{
    const char *uname = user->username.v;
    int rc = rd_check_username(uname, err);
    if (rc)
        return rc;
    char hash[65];
    if ((rc = rd_sha256_hex(password, hash, err)))
        return rc;
    redisContext *c = rd_connect(primary, 3000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    redisReply *r = rd_cmd(c, err, "ACL", "GETUSER", uname, NULL);
    if (!r) {
        redisFree(c);
        return DBP_EENGINE;
    }
    bool match = rd_user_matches(r, hash);
    freeReplyObject(r);
    if (match && rd_acl_file_has(primary, uname)) {
        redisFree(c);
        return 0;
    }
    if (!match) {
        char pwrule[67];
        snprintf(pwrule, sizeof(pwrule), "#%s", hash);
        const char *argv[32] = {"ACL", "SETUSER", uname, "reset", "on", pwrule};
        int argc = 6;
        for (int i = 0; rd_app_rules[i] && argc < 32; i++)
            argv[argc++] = rd_app_rules[i];
        if ((rc = rd_do(c, err, argc, argv))) {
            dbp_err_prefix(err, "ACL SETUSER %s: ", uname);
            redisFree(c);
            return rc;
        }
    }
    const char *save[] = {"ACL", "SAVE"};
    rc = rd_do(c, err, 2, save);
    if (rc)
        dbp_err_prefix(err, "ACL SAVE: ");
    redisFree(c);
    return rc ? rc : 1;
}

static int rd_drop_user(const engine_instance_t *primary, const char *username, dbp_err_t *err)
{
    int rc = rd_check_username(username, err);
    if (rc)
        return rc;
    redisContext *c = rd_connect(primary, 3000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    redisReply *r = rd_cmd(c, err, "ACL", "DELUSER", username, NULL);
    if (!r) {
        redisFree(c);
        return DBP_EENGINE;
    }
    bool deleted = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    if (deleted || rd_acl_file_has(primary, username)) {
        const char *save[] = {"ACL", "SAVE"};
        rc = rd_do(c, err, 2, save);
    }
    redisFree(c);
    return rc;
}

/* Turns a running replica into a primary (REPLICAOF NO ONE) and waits up to 10 s until
 * it reports role:master; it then accepts writes (replica-read-only applies to replicas
 * only). The caller has fenced the old primary and bumped the topology epoch; the next
 * render_config drops `replicaof` from the file, so a restart keeps the new role. */
static int rd_promote(const engine_instance_t *in, dbp_err_t *err)
{
    redisContext *c = rd_connect(in, 3000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    const char *argv[] = {"REPLICAOF", "NO", "ONE"};
    int rc = rd_do(c, err, 3, argv);
    for (int i = 0; rc == 0 && i < 100; i++) {
        char *info = rd_info_all(c, err);
        if (!info) {
            rc = DBP_EENGINE;
            break;
        }
        char role[16] = "";
        (void)rd_info(info, "role", role, sizeof(role));
        free(info);
        if (strcmp(role, "master") == 0) {
            dbp_info("redis_promoted", "instance=%s", in->name);
            redisFree(c);
            return 0;
        }
        usleep(100 * 1000);
    }
    redisFree(c);
    return rc ? rc : dbp_err_set(err, DBP_EBUSY, "%s did not become a primary in 10 s", in->name);
}

/* A former primary needs no rewind: started as a replica (render_config with `primary`),
 * Redis resynchronises it from its new primary by itself, with a full copy when their
 * histories differ. */
static int rd_rejoin(const engine_instance_t *in, const engine_instance_t *primary, dbp_err_t *err)
{
    dbp_info("redis_rejoin", "instance=%s primary=%s", in->name, primary->name);
    return 0;
}

/* The Redis driver. stop_signal SIGTERM: Redis saves per its configuration (an RDB when
 * save points are set, a final AOF fsync) and exits. No reload signal: render_config
 * applies changes to a running server itself. */
const engine_ops_t engine_redis = {
    .name = "redis",
    .engine = SPEC_ENGINE_REDIS,
    .check_install = rd_check_install,
    .is_initialized = rd_is_initialized,
    .init_primary = rd_init_primary,
    .init_replica = rd_init_replica,
    .render_config = rd_render_config,
    .server_argv = rd_server_argv,
    .stop_signal = SIGTERM,
    .reload_signal = 0,
    .probe = rd_probe,
    .backup_physical = rdb_backup_physical,
    .backup_logical = NULL, /* Redis has no logical dump: validation refuses type logical */
    .restore_physical = rdb_restore_physical,
    .restore_logical = NULL,
    .inventory = rdb_inventory,
    .physical_part = "dump.rdb",
    .ensure_internal = rd_ensure_internal,
    .ensure_user = rd_ensure_user,
    .ensure_database = NULL,
    .ensure_grant = NULL,
    .drop_user = rd_drop_user,
    .promote = rd_promote,
    .rejoin = rd_rejoin,
    .needs_restart = rd_needs_restart,
    .failover_on_crash = true,
};
