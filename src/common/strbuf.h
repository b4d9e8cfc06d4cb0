/*
 * strbuf.h: a growing, NUL-terminated string for building configuration files and SQL
 * statements. Builders carry a sticky `failed` flag (STYLE.md habit 5): write many parts,
 * check once. Buffers may hold password hashes or verifiers, so they are wiped whenever
 * they are grown or freed.
 */
#ifndef DBP_COMMON_STRBUF_H
#define DBP_COMMON_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

/* A string being built. Zero-initialise ({0}) before use; free with dbp_sb_free. */
typedef struct dbp_sb {
    char *buf;    /* NUL-terminated when len > 0; NULL before the first write */
    size_t len;   /* bytes written, without the NUL */
    size_t cap;   /* bytes allocated */
    bool failed;  /* an allocation failed; everything after it was dropped */
} dbp_sb_t;

/* Appends printf-formatted text. On allocation failure sets sb->failed and leaves the
 * content as it was. */
void dbp_sb_printf(dbp_sb_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wipes and frees the buffer and resets sb to empty. */
void dbp_sb_free(dbp_sb_t *sb);

#endif
