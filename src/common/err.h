/*
 * err.h: the error record every fallible dbplane function fills in.
 *
 * Functions return 0 on success or a negative DBP_E* code; the detail (a human-readable
 * message and, for spec errors, a file:line:col position) goes into a caller-supplied
 * dbp_err_t, never into a global. A NULL dbp_err_t pointer means "caller does not care".
 */
#ifndef DBP_COMMON_ERR_H
#define DBP_COMMON_ERR_H

#include <stdarg.h>

/* Status codes shared by all modules; negative so that 0 means success. */
enum {
    DBP_OK = 0,
    DBP_EINVAL = -1,   /* bad input: spec, argument, request body */
    DBP_ENOENT = -2,   /* a named thing does not exist */
    DBP_EIO = -3,      /* the filesystem or a child process failed */
    DBP_ENOMEM = -4,   /* allocation failed */
    DBP_EENGINE = -5,  /* a database server refused or failed an operation */
    DBP_EBUSY = -6,    /* the resource is locked or not ready yet; retry later */
    DBP_ESTORE = -7,   /* the SQLite store failed */
    DBP_ECRYPTO = -8,  /* encryption, decryption or authentication of a secret failed */
    DBP_EUNSUPPORTED = -9, /* the request names something this build does not implement */
};

/* One error: code (a DBP_E* value) and a message of at most 511 bytes. */
typedef struct dbp_err {
    int code;
    char msg[512];
} dbp_err_t;

/* Fills err (if not NULL) with code and a printf-formatted message; returns code, so a
 * caller can write `return dbp_err_set(err, DBP_EIO, "open %s: %s", p, strerror(errno));`. */
int dbp_err_set(dbp_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with a printf-formatted context ("start pg-0: " + old message). */
void dbp_err_prefix(dbp_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns a static, lowercase name for a DBP_E* code ("invalid", "io", ...). */
const char *dbp_err_str(int code);

#endif
