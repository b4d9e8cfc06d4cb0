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
 * not noticed (Redis cannot say which settings came from the file).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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

int rd_needs_restart(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err)
{
    names[0] = '\0';
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RD_CONF, in->data_dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return dbp_err_set(err, DBP_EIO, "stat %s: %s", path, strerror(errno));
    redisContext *c = rd_connect(in, 2000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    int rc = 0;
    char *text = NULL;
    rd_directive_t *dirs = NULL;
    redisReply *r = NULL;
    char *info = rd_info_all(c, err);
    if (!info) {
        rc = DBP_EENGINE;
        goto out;
    }
    int64_t uptime = rd_info_i64(info, "uptime_in_seconds", -1);
    free(info);
    if (uptime < 0) {
        rc = dbp_err_set(err, DBP_EENGINE, "INFO server has no uptime_in_seconds");
        goto out;
    }
    if (engine_conf_current(st.st_mtime, uptime))
        goto out;
    if ((rc = dbp_read_file(path, &text, NULL, err)))
        goto out;
    dirs = calloc(RD_RESTART_MAX_DIRECTIVES, sizeof(*dirs));
    if (!dirs) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && n < RD_RESTART_MAX_DIRECTIVES;
         line = strtok_r(NULL, "\n", &save)) {
        if (!rd_parse_line(line, &dirs[n]))
            continue;
        bool skip = false;
        for (int i = 0; rd_restart_skip[i] && !skip; i++)
            skip = strcmp(dirs[n].name, rd_restart_skip[i]) == 0;
        if (!skip)
            n++;
    }
    for (int i = 0; i < n; i++) {
        dbp_err_t gerr;
        r = rd_cmd(c, &gerr, "CONFIG", "GET", dirs[i].name, NULL);
        if (!r) {
            if (c->err) { /* the connection broke: not a per-directive answer */
                rc = dbp_err_set(err, DBP_EENGINE, "%s", gerr.msg);
                goto out;
            }
            continue;
        }
        const char *cur = NULL;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_STRING)
            cur = r->element[1]->str;
        if (!cur || rd_value_same(cur, dirs[i].value)) {
            freeReplyObject(r);
            r = NULL;
            continue;
        }
        /* Differs: a restart is the only way when CONFIG SET cannot change it. */
        char curv[512];
        snprintf(curv, sizeof(curv), "%s", cur);
        freeReplyObject(r);
        dbp_err_t serr;
        r = rd_cmd(c, &serr, "CONFIG", "SET", dirs[i].name, curv, NULL);
        if (r) {
            freeReplyObject(r);
            r = NULL;
            continue;
        }
        if (c->err) {
            rc = dbp_err_set(err, DBP_EENGINE, "%s", serr.msg);
            goto out;
        }
        if (strstr(serr.msg, "immutable")) {
            /* Values are logged except for anything that may hold a credential. */
            bool secret = strstr(dirs[i].name, "pass") || strstr(dirs[i].name, "auth") ||
                          strstr(dirs[i].name, "key");
            dbp_info("redis_restart_pending", "instance=%s directive=%s running=%s declared=%s",
                     in->name, dirs[i].name, secret ? "(hidden)" : dbp_log_q(curv),
                     secret ? "(hidden)" : dbp_log_q(dirs[i].value));
            engine_names_add(names, len, dirs[i].name);
            rc = 1;
        }
    }
out:
    if (r)
        freeReplyObject(r);
    free(dirs);
    free(text);
    redisFree(c);
    return rc;
}
