/*
 * redis_sync.c: replication.mode sync for the Redis driver (see docs/redis.md "Sync
 * mode"): min-replicas-to-write / min-replicas-max-lag on a running primary, non-strict.
 */
#include "engines/redis_int.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "common/log.h"

/* repl-timeout in seconds: (failcount - 1) x failover interval, rounded up, 2 .. 60. */
int64_t rd_repl_timeout_s(const spec_cluster_t *c)
{
    const spec_failover_t *fo = &c->failover;
    int64_t fc = fo->failcount.v > 0 ? fo->failcount.v : 3;
    int64_t rt =
        ((fo->interval.ms > 0 ? fo->interval.ms : 1000) * (fc > 1 ? fc - 1 : 1) + 999) / 1000;
    return rt < 2 ? 2 : rt > 60 ? 60 : rt;
}

/* True when spec.config sets `key` (or its legacy min-slaves-* name). */
static bool rd_config_has(const spec_cluster_t *c, const char *key, const char *legacy)
{
    for (size_t i = 0; i < c->config.n; i++)
        if (strcasecmp(c->config.v[i].key, key) == 0 || strcasecmp(c->config.v[i].key, legacy) == 0)
            return true;
    return false;
}

/* Sync mode on a running primary (replication.mode sync or semi-sync, 2+ instances):
 * min-replicas-to-write 1 and min-replicas-max-lag = repl-timeout while at least one
 * replica is online, so a write is refused (NOREPLICAS) unless a replica acknowledged the
 * stream within that many seconds; min-replicas-to-write 0 while none is (non-strict, as
 * PostgreSQL's and MariaDB's sync modes: the primary stays writable after a failover
 * until its replica is back). Set at run time only, never in redis.conf, so a restarted
 * or promoted server starts writable and the next pass decides. Async mode (or a cluster
 * of one) resets it to 0. Left alone when spec.config sets either directive. Best
 * effort: a failure is logged and retried by the next pass. */
void rd_sync_writes(const engine_instance_t *in)
{
    const spec_cluster_t *c = in->spec;
    if (rd_config_has(c, "min-replicas-to-write", "min-slaves-to-write") ||
        rd_config_has(c, "min-replicas-max-lag", "min-slaves-max-lag"))
        return;
    bool sync = (c->replication.mode == SPEC_REPL_SYNC ||
                 c->replication.mode == SPEC_REPL_SEMI_SYNC) &&
                c->instances.v > 1;
    bool refused = false;
    dbp_err_t err;
    redisContext *rc = rd_connect(in, 1000, &refused, &err);
    if (!rc)
        return;
    char *info = rd_info_all(rc, &err);
    if (!info)
        goto out;
    char role[16] = "", line[256], key[24];
    int online = 0;
    (void)rd_info(info, "role", role, sizeof(role));
    int64_t n = rd_info_i64(info, "connected_slaves", 0);
    for (int64_t i = 0; i < n && i < 64; i++) {
        snprintf(key, sizeof(key), "slave%lld", (long long)i);
        if (rd_info(info, key, line, sizeof(line)) && strstr(line, "state=online"))
            online++;
    }
    free(info);
    if (strcmp(role, "master") != 0)
        goto out;
    char want[16], lag[16], cur[16] = "";
    snprintf(want, sizeof(want), "%d", sync && online > 0 ? 1 : 0);
    snprintf(lag, sizeof(lag), "%lld", (long long)rd_repl_timeout_s(c));
    redisReply *r = rd_cmd(rc, &err, "CONFIG", "GET", "min-replicas-to-write", NULL);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->str)
        snprintf(cur, sizeof(cur), "%s", r->element[1]->str);
    if (r)
        freeReplyObject(r);
    if (strcmp(cur, want) == 0)
        goto out;
    redisReply *r1 = sync ? rd_cmd(rc, &err, "CONFIG", "SET", "min-replicas-max-lag", lag, NULL)
                          : NULL;
    redisReply *r2 = !sync || r1
                         ? rd_cmd(rc, &err, "CONFIG", "SET", "min-replicas-to-write", want, NULL)
                         : NULL;
    bool ok = (!sync || r1) && r2;
    if (r1)
        freeReplyObject(r1);
    if (r2)
        freeReplyObject(r2);
    if (ok)
        dbp_info("redis_sync_mode", "instance=%s min_replicas_to_write=%s max_lag_s=%s "
                 "online_replicas=%d", in->name, want, lag, online);
    else
        dbp_warn("redis_sync_mode_failed", "instance=%s error=%s", in->name, dbp_log_q(err.msg));
out:
    redisFree(rc);
}
