/*
 * engine.c: the registry of engine drivers compiled into this build (see engine.h).
 */
#include "engines/engine.h"

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
    if (len == 0)
        return;
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char tail[16384];
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)sizeof(tail) - 1 ? size - (long)sizeof(tail) + 1 : 0;
        if (size >= 0 && fseek(f, from, SEEK_SET) == 0)
            n = fread(tail, 1, sizeof(tail) - 1, f);
    }
    fclose(f);
    tail[n] = '\0';
    const char *pick = NULL;
    size_t pick_len = 0;
    for (char *line = tail; *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (nl)
            *nl = '\0';
        if (!strstr(line, "password") && !strstr(line, "PASSWORD")) {
            for (int i = 0; marks && marks[i]; i++) {
                if (strstr(line, marks[i])) {
                    pick = line;
                    pick_len = l;
                    break;
                }
            }
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    if (pick)
        snprintf(buf, len, "%.*s", (int)(pick_len < len ? pick_len : len - 1), pick);
}
