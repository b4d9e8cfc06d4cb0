/*
 * redis_restart.c: the Redis driver's needs_restart (rolling changes, issue 6).
 *
 * Redis never re-reads redis.conf; render_config applies a changed file to the running
 * server with CONFIG SET first, which Redis refuses for its immutable settings
 * (databases, io-threads, tcp-backlog, ...: "can't set immutable config",
 * https://redis.io/docs/latest/commands/config-set/). A restart is pending when
 * redis.conf was written after the server started (INFO uptime_in_seconds) and a
 * directive's running value (CONFIG GET) differs from the file's while CONFIG SET cannot
 * change it. Immutability is asked of the server itself: CONFIG SET of the setting to the
 * value it already has changes nothing and fails only for an immutable setting. Values
 * are compared token by token, case-insensitively, with memory units (1k = 1000,
 * 1kb = 1024, as redis.conf reads them) as numbers. A directive removed from the file is
 * found in the file the server was started from, which render_config keeps as
 * redis.conf.running (rd_keep_running_conf): when the server still runs the removed value
 * and the setting is immutable, a restart is pending (Redis cannot say which settings came
 * from the file, nor their defaults, so a removed value that equals the default also
 * costs one restart).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/proc.h"
#include "engines/redis_int.h"

#define RD_RESTART_MAX_DIRECTIVES 256

/* Directives dbplane renders from the instance layout and role (never a restart's
 * business: the role moves with REPLICAOF, the layout does not move). */
static const char *const rd_restart_skip[] = {
    "bind",       "port",      "unixsocket", "unixsocketperm", "dir",       "aclfile",
    "logfile",    "daemonize", "supervised", "protected-mode", "replicaof", "slaveof",
    "masteruser", NULL};

/* One directive of redis.conf: its name and its value as one string (arguments joined by
 * single spaces, quotes removed). */
typedef struct rd_directive {
    char name[64];
    char value[512];
} rd_directive_t;

/* Splits a redis.conf line the way redis-server does for the subset dbplane writes
 * (bare words, and "..." with \" and \\ escapes). Returns false for blank lines and
 * comments. */
static bool rd_parse_line(const char *line, rd_directive_t *d)
{
    const char *p = line;
    while (isspace((unsigned char)*p))
        p++;
    if (!*p || *p == '#')
        return false;
    size_t k = 0;
    while (*p && !isspace((unsigned char)*p) && k + 1 < sizeof(d->name))
        d->name[k++] = (char)tolower((unsigned char)*p++);
    d->name[k] = '\0';
    size_t o = 0;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        if (o && o + 1 < sizeof(d->value))
            d->value[o++] = ' ';
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (o + 1 < sizeof(d->value))
                    d->value[o++] = *p;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (o + 1 < sizeof(d->value))
                    d->value[o++] = *p;
                p++;
            }
        }
    }
    d->value[o] = '\0';
    return true;
}

/* A token as redis.conf reads a memory or plain number: digits with an optional unit
 * (b, k = 1000, kb = 1024, m, mb, g, gb). False when it is not one. */
static bool rd_number(const char *tok, size_t len, long double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, tok, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long double v = strtold(buf, &end);
    if (end == buf || errno || !(isdigit((unsigned char)buf[0]) || buf[0] == '-'))
        return false;
    static const struct {
        const char *u;
        long double mul;
    } units[] = {{"", 1},    {"b", 1},           {"k", 1e3}, {"kb", 1024.0L},
                 {"m", 1e6}, {"mb", 1048576.0L}, {"g", 1e9}, {"gb", 1073741824.0L}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcasecmp(end, units[i].u) == 0) {
            *out = v * units[i].mul;
            return true;
        }
    return false;
}

/* Whether the running value `cur` (CONFIG GET) equals the file's `want`: the same
 * tokens, case-insensitively, numbers with units compared as numbers. */
static bool rd_value_same(const char *cur, const char *want)
{
    const char *a = cur, *b = want;
    for (;;) {
        while (isspace((unsigned char)*a))
            a++;
        while (isspace((unsigned char)*b))
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        size_t la = strcspn(a, " \t"), lb = strcspn(b, " \t");
        long double na, nb;
        bool same = rd_number(a, la, &na) && rd_number(b, lb, &nb)
                        ? na == nb
                        : la == lb && strncasecmp(a, b, la) == 0;
        if (!same)
            return false;
        a += la;
        b += lb;
    }
}

/* The directives of the redis.conf at `path` that needs_restart compares (those rendered
 * from the layout and role left out): a calloc'ed array (free with free()) in *out, their
 * count in *n. DBP_ENOENT when the file does not exist. */
static int rd_read_directives(const char *path, rd_directive_t **out, int *n, dbp_err_t *err)
{
    *out = NULL;
    *n = 0;
    char *text = NULL;
    int rc = dbp_read_file(path, &text, NULL, err);
    if (rc)
        return rc;
    rd_directive_t *dirs = calloc(RD_RESTART_MAX_DIRECTIVES, sizeof(*dirs));
    if (!dirs) {
        free(text);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    int k = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && k < RD_RESTART_MAX_DIRECTIVES;
         line = strtok_r(NULL, "\n", &save)) {
        if (!rd_parse_line(line, &dirs[k]))
            continue;
        bool skip = false;
        for (int i = 0; rd_restart_skip[i] && !skip; i++)
            skip = strcmp(dirs[k].name, rd_restart_skip[i]) == 0;
        if (!skip)
            k++;
    }
    free(text);
    *out = dirs;
    *n = k;
    return 0;
}

/* Whether directive `d` is pending a restart. `removed` false: d is in the current file
 * and pending when the running value differs from d->value. `removed` true: d was in the
 * file the server started from and is gone from the current one; pending when the server
 * still runs d->value (after a restart it would take Redis's default). Either way only a
 * setting CONFIG SET cannot change (immutable) needs a restart. Adds the name to `names`
 * and returns 1 when pending, 0 when not, DBP_EENGINE when the connection broke. */
static int rd_directive_pending(redisContext *c, const engine_instance_t *in,
                                const rd_directive_t *d, bool removed, char *names, size_t len,
                                dbp_err_t *err)
{
    dbp_err_t gerr;
    redisReply *r = rd_cmd(c, &gerr, "CONFIG", "GET", d->name, NULL);
    if (!r) /* the connection broke, or not a per-directive answer */
        return c->err ? dbp_err_set(err, DBP_EENGINE, "%s", gerr.msg) : 0;
    char cur[512] = "";
    bool have = r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
                r->element[1]->type == REDIS_REPLY_STRING;
    if (have)
        snprintf(cur, sizeof(cur), "%s", r->element[1]->str);
    freeReplyObject(r);
    if (!have || rd_value_same(cur, d->value) != removed)
        return 0;
    /* Setting the value it already has changes nothing and fails only when immutable. */
    dbp_err_t serr;
    r = rd_cmd(c, &serr, "CONFIG", "SET", d->name, cur, NULL);
    if (r) {
        freeReplyObject(r);
        return 0;
    }
    if (c->err)
        return dbp_err_set(err, DBP_EENGINE, "%s", serr.msg);
    if (!strstr(serr.msg, "immutable"))
        return 0;
    /* Values are logged except for anything that may hold a credential. */
    bool secret = strstr(d->name, "pass") || strstr(d->name, "auth") || strstr(d->name, "key");
    dbp_info("redis_restart_pending", "instance=%s directive=%s running=%s declared=%s",
             in->name, d->name, secret ? "(hidden)" : dbp_log_q(cur),
             removed ? "(removed: default)" : secret ? "(hidden)" : dbp_log_q(d->value));
    engine_names_add(names, len, d->name);
    return 1;
}

/* Whether the current file (dirs, n entries) has a directive named `name`. */
static bool rd_has_directive(const rd_directive_t *dirs, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(dirs[i].name, name) == 0)
            return true;
    return false;
}

/* Whether the server (its INFO text) was started from a file last written at `mtime`,
 * i.e. the file is older than the server's start. The start time is read from
 * /proc/<process_id>/stat (clock ticks since boot; the server runs on this machine), a
 * file written in the same tick counting as read by the server: the reconciler writes the
 * file, then starts the server. Falls back to engine_conf_current (whole seconds, a file
 * from the server's first second counting as newer) when /proc cannot say. */
static bool rd_started_from(const char *info, const struct timespec *mtime)
{
    int64_t uptime = rd_info_i64(info, "uptime_in_seconds", -1);
    int64_t pid = rd_info_i64(info, "process_id", -1);
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    size_t got = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[got] = '\0';
    /* Field 22 (starttime) counts from the field after the command's closing ')' (3). */
    const char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    long hz = sysconf(_SC_CLK_TCK);
    struct timespec boot, real;
    if (!p || hz <= 0 || clock_gettime(CLOCK_BOOTTIME, &boot) != 0 ||
        clock_gettime(CLOCK_REALTIME, &real) != 0)
        return uptime >= 0 && engine_conf_current(mtime->tv_sec, uptime);
    unsigned long long ticks = strtoull(p + 1, NULL, 10);
    /* The start as wall-clock nanoseconds: now, less the time since the start. */
    long double boot_ns = (long double)boot.tv_sec * 1e9L + boot.tv_nsec;
    long double start_boot_ns = (long double)ticks * 1e9L / hz;
    long double start_ns = (long double)real.tv_sec * 1e9L + real.tv_nsec - (boot_ns - start_boot_ns);
    long double file_ns = (long double)mtime->tv_sec * 1e9L + mtime->tv_nsec;
    return file_ns < start_ns + 1e9L / hz;
}

void rd_keep_running_conf(redisContext *c, const engine_instance_t *in)
{
    char path[PATH_MAX + 32], keep[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RD_CONF, in->data_dir);
    snprintf(keep, sizeof(keep), "%s/" RD_CONF_RUNNING, in->data_dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return; /* first render: nothing ran from a file yet */
    dbp_err_t err;
    char *info = rd_info_all(c, &err);
    bool running = info && rd_started_from(info, &st.st_mtim);
    free(info);
    if (!running)
        return; /* the server runs an older file, already kept (or it cannot say) */
    if ((unlink(keep) != 0 && errno != ENOENT) || link(path, keep) != 0)
        dbp_warn("redis_conf_keep_failed", "instance=%s path=%s error=%s", in->name,
                 dbp_log_q(keep), dbp_log_q(strerror(errno)));
}

int rd_needs_restart(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err)
{
    names[0] = '\0';
    char path[PATH_MAX + 32], keep[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RD_CONF, in->data_dir);
    snprintf(keep, sizeof(keep), "%s/" RD_CONF_RUNNING, in->data_dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return dbp_err_set(err, DBP_EIO, "stat %s: %s", path, strerror(errno));
    redisContext *c = rd_connect(in, 2000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    int rc = 0;
    rd_directive_t *dirs = NULL, *old = NULL;
    int n = 0, nold = 0;
    char *info = rd_info_all(c, err);
    if (!info) {
        rc = DBP_EENGINE;
        goto out;
    }
    int64_t uptime = rd_info_i64(info, "uptime_in_seconds", -1);
    if (uptime < 0) {
        rc = dbp_err_set(err, DBP_EENGINE, "INFO server has no uptime_in_seconds");
        goto out;
    }
    if (engine_conf_current(st.st_mtime, uptime))
        goto out;
    if ((rc = rd_read_directives(path, &dirs, &n, err)))
        goto out;
    for (int i = 0; i < n; i++) {
        int p = rd_directive_pending(c, in, &dirs[i], false, names, len, err);
        if (p < 0) {
            rc = p;
            goto out;
        }
        rc |= p;
    }
    /* Directives dropped from the file since the server started (its kept file). */
    struct stat kst;
    dbp_err_t kerr;
    if (stat(keep, &kst) != 0 || !rd_started_from(info, &kst.st_mtim) ||
        rd_read_directives(keep, &old, &nold, &kerr) != 0)
        goto out;
    for (int i = 0; i < nold; i++) {
        if (rd_has_directive(dirs, n, old[i].name) ||
            (i > 0 && rd_has_directive(old, i, old[i].name)))
            continue;
        int p = rd_directive_pending(c, in, &old[i], true, names, len, err);
        if (p < 0) {
            rc = p;
            goto out;
        }
        rc |= p;
    }
out:
    free(info);
    free(dirs);
    free(old);
    redisFree(c);
    return rc;
}
