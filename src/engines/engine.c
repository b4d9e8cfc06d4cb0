/*
 * engine.c: the registry of engine drivers compiled into this build (see engine.h).
 */
#include "engines/engine.h"

#include "common/log.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const engine_ops_t *engine_lookup(spec_engine_t engine)
{
    switch (engine) {
    case SPEC_ENGINE_POSTGRESQL:
        return &engine_postgresql;
    case SPEC_ENGINE_MARIADB:
        return &engine_mariadb;
    case SPEC_ENGINE_REDIS:
        return &engine_redis;
    default:
        return NULL;
    }
}

const char *engine_role_str(engine_role_t role)
{
    switch (role) {
    case ENGINE_ROLE_PRIMARY: return "primary";
    case ENGINE_ROLE_REPLICA: return "replica";
    default: return "";
    }
}

void engine_names_add(char *names, size_t len, const char *name)
{
    size_t l = strlen(names);
    if (l + 1 < len)
        snprintf(names + l, len - l, "%s%s", l ? "," : "", name);
}

bool engine_conf_current(time_t conf_mtime, int64_t uptime_s)
{
    return conf_mtime < time(NULL) - (time_t)uptime_s - 1;
}

void engine_log_last_match(const char *path, const char *const *marks, char *buf, size_t len)
{
    dbp_log_tail_t t = {.tail_bytes = 16384, .marks = marks, .skip_password = true};
    dbp_log_tail_line(path, &t, buf, len);
}
