/*
 * err.c: filling and naming dbp_err_t records (see err.h).
 */
#include "common/err.h"

#include <stdio.h>
#include <string.h>

int dbp_err_set(dbp_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void dbp_err_prefix(dbp_err_t *err, const char *fmt, ...)
{
    if (!err)
        return;
    char pre[256], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    size_t pl = strnlen(pre, sizeof(pre) - 1);
    size_t ol = strnlen(old, sizeof(err->msg) - 1 - pl);
    memcpy(err->msg, pre, pl);
    memcpy(err->msg + pl, old, ol);
    err->msg[pl + ol] = '\0';
}

const char *dbp_err_str(int code)
{
    switch (code) {
    case DBP_OK: return "ok";
    case DBP_EINVAL: return "invalid";
    case DBP_ENOENT: return "not_found";
    case DBP_EIO: return "io";
    case DBP_ENOMEM: return "no_memory";
    case DBP_EENGINE: return "engine";
    case DBP_EBUSY: return "busy";
    case DBP_ESTORE: return "store";
    case DBP_ECRYPTO: return "crypto";
    case DBP_EUNSUPPORTED: return "unsupported";
    default: return "unknown";
    }
}
