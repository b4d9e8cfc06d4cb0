/*
 * log.h: structured logging. Every line is `ts=... level=... msg=... key=value ...` on
 * stderr (or a file set with dbp_log_open). Callers pass the key=value part as a printf
 * format; values containing spaces must be quoted by the caller (use %s with dbp_log_q).
 * Never pass a secret: nothing here can tell one apart.
 */
#ifndef DBP_COMMON_LOG_H
#define DBP_COMMON_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* Severity of a log line; lines below the current level are dropped. */
typedef enum dbp_log_level {
    DBP_LOG_DEBUG = 0,
    DBP_LOG_INFO,
    DBP_LOG_WARN,
    DBP_LOG_ERROR,
} dbp_log_level_t;

/* Sets the minimum level written (default INFO; DBP_LOG_LEVEL=debug in the env lowers it). */
void dbp_log_set_level(dbp_log_level_t level);

/* Writes one line: ts, level, msg (an identifier-like event name, e.g. "instance_started"),
 * then the formatted key=value pairs. Thread-safe (one write(2) per line). */
void dbp_log(dbp_log_level_t level, const char *msg, const char *kv_fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define dbp_debug(msg, ...) dbp_log(DBP_LOG_DEBUG, msg, __VA_ARGS__)
#define dbp_info(msg, ...) dbp_log(DBP_LOG_INFO, msg, __VA_ARGS__)
#define dbp_warn(msg, ...) dbp_log(DBP_LOG_WARN, msg, __VA_ARGS__)
#define dbp_error(msg, ...) dbp_log(DBP_LOG_ERROR, msg, __VA_ARGS__)

/* Quotes s for use as a log value: returns s itself when it has no space, quote, '=' or
 * control character, otherwise a "..."-quoted, escaped copy in one of 8 rotating
 * thread-local buffers of 512 bytes (truncated beyond that). View valid for the next 7
 * calls on the same thread. */
const char *dbp_log_q(const char *s);

/* Which lines of a log file dbp_log_tail_line may return. */
typedef struct dbp_log_tail {
    size_t tail_bytes;        /* how much of the file's end is searched (bytes, <= 64 KiB) */
    const char *const *marks; /* NULL-terminated substrings, one of which the line must
                               * contain; NULL = any non-empty line */
    bool skip_password;       /* never return a line that mentions a password (a server log
                               * may quote a statement that sets one) */
} dbp_log_tail_t;

/* Copies into buf (len bytes, truncated) the last line of the file at `path`, within its
 * last t->tail_bytes, that t allows; line ends (\n, \r\n) are not copied. buf is "" when
 * no line qualifies or the file cannot be read (no error: it feeds messages about a
 * failure that is already being reported). The first line of the searched window may be
 * the end of a longer line. */
void dbp_log_tail_line(const char *path, const dbp_log_tail_t *t, char *buf, size_t len);

#endif
