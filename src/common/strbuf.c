/*
 * strbuf.c: the growing string of strbuf.h.
 */
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dbp_sb_printf(dbp_sb_t *sb, const char *fmt, ...)
{
    if (sb->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->buf ? sb->buf + sb->len : NULL, sb->buf ? sb->cap - sb->len : 0,
                          fmt, ap);
        va_end(ap);
        if (n < 0) {
            sb->failed = true;
            return;
        }
        if (sb->buf && (size_t)n < sb->cap - sb->len) {
            sb->len += (size_t)n;
            return;
        }
        size_t ncap = sb->cap ? sb->cap * 2 : 1024;
        while (ncap - sb->len <= (size_t)n)
            ncap *= 2;
        /* malloc + copy + wipe rather than realloc: the old block may hold secrets. */
        char *nb = malloc(ncap);
        if (!nb) {
            sb->failed = true;
            return;
        }
        if (sb->buf) {
            memcpy(nb, sb->buf, sb->len + 1);
            explicit_bzero(sb->buf, sb->cap);
            free(sb->buf);
        } else {
            nb[0] = '\0';
        }
        sb->buf = nb;
        sb->cap = ncap;
    }
}

void dbp_sb_free(dbp_sb_t *sb)
{
    if (sb->buf) {
        explicit_bzero(sb->buf, sb->cap);
        free(sb->buf);
    }
    memset(sb, 0, sizeof(*sb));
}
