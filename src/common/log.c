/*
 * log.c: key=value log lines on stderr (see log.h).
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static dbp_log_level_t g_level = DBP_LOG_INFO;
static int g_level_init;

void dbp_log_set_level(dbp_log_level_t level)
{
    g_level = level;
    g_level_init = 1;
}

static const char *level_name(dbp_log_level_t l)
{
    switch (l) {
    case DBP_LOG_DEBUG: return "debug";
    case DBP_LOG_INFO: return "info";
    case DBP_LOG_WARN: return "warn";
    default: return "error";
    }
}

void dbp_log(dbp_log_level_t level, const char *msg, const char *kv_fmt, ...)
{
    if (!g_level_init) {
        const char *e = getenv("DBP_LOG_LEVEL");
        if (e && strcasecmp(e, "debug") == 0)
            g_level = DBP_LOG_DEBUG;
        g_level_init = 1;
    }
    if (level < g_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), level_name(level), msg);
    if (kv_fmt && *kv_fmt && n > 0 && (size_t)n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, kv_fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, kv_fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

const char *dbp_log_q(const char *s)
{
    static __thread char bufs[8][512];
    static __thread int next;
    if (!s)
        return "\"\"";
    bool plain = *s != '\0';
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20) {
            plain = false;
            break;
        }
    }
    if (plain)
        return s;
    char *b = bufs[next];
    next = (next + 1) % 8;
    size_t o = 0;
    b[o++] = '"';
    for (const char *p = s; *p && o < 500; p++) {
        if (*p == '"' || *p == '\\') {
            b[o++] = '\\';
            b[o++] = *p;
        } else if (*p == '\n') {
            b[o++] = '\\';
            b[o++] = 'n';
        } else if ((unsigned char)*p < 0x20) {
            b[o++] = ' ';
        } else {
            b[o++] = *p;
        }
    }
    b[o++] = '"';
    b[o] = '\0';
    return b;
}

void dbp_log_tail_line(const char *path, const dbp_log_tail_t *t, char *buf, size_t len)
{
    if (len == 0)
        return;
    buf[0] = '\0';
    enum { TAIL_MAX = 65536 };
    size_t want = t->tail_bytes < TAIL_MAX ? t->tail_bytes : TAIL_MAX;
    char *tail = malloc(want + 1);
    FILE *f = tail ? fopen(path, "r") : NULL;
    if (!f) {
        free(tail);
        return;
    }
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)want ? size - (long)want : 0;
        if (size >= 0 && fseek(f, from, SEEK_SET) == 0)
            n = fread(tail, 1, want, f);
    }
    fclose(f);
    tail[n] = '\0';
    const char *pick = NULL;
    size_t pick_len = 0;
    for (char *line = tail; *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (l && line[l - 1] == '\r')
            l--;
        line[l] = '\0';
        bool ok = l > 0;
        if (ok && t->skip_password && (strstr(line, "password") || strstr(line, "PASSWORD")))
            ok = false;
        if (ok && t->marks) {
            ok = false;
            for (int i = 0; t->marks[i] && !ok; i++)
                ok = strstr(line, t->marks[i]) != NULL;
        }
        if (ok) {
            pick = line;
            pick_len = l;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    if (pick)
        snprintf(buf, len, "%.*s", (int)(pick_len < len ? pick_len : len - 1), pick);
    free(tail);
}
