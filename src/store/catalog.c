/*
 * catalog.c: the backup catalog's queries (store.h, "backup catalog"). The table is
 * created by migration step 2 in store.c; every statement binds its values as
 * parameters. These statements are prepared per call rather than cached in store.c's
 * statement table: backup runs write a handful of rows, so the cost does not matter, and
 * keeping them here leaves store.c's tables untouched.
 *
 * The catalog reaches the connection through the first member of `struct store`
 * (store.c declares `sqlite3 *db` first; C11 6.7.2.1p15 makes a pointer to a structure,
 * suitably converted, point to its first member). Should store.c ever reorder that
 * struct, it must grow a `store_sqlite()` accessor and this file use it.
 */
#include "store/store.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BACKUP_COLUMNS                                                                             \
    "tenant, id, cluster, backup, type, store, path, status, message, source, engine, "           \
    "engine_version, position, bytes, raw_bytes, started_ms, finished_ms, pid, verified, "        \
    "verify_message, verified_ms"

/* The connection of a store (see the file comment). */
static sqlite3 *cat_db(store_t *s)
{
    return *(sqlite3 **)(void *)s;
}

static int cat_fail(store_t *s, dbp_err_t *err, const char *what)
{
    return dbp_err_set(err, DBP_ESTORE, "store: catalog %s: %s", what, sqlite3_errmsg(cat_db(s)));
}

static sqlite3_stmt *cat_prepare(store_t *s, const char *sql, dbp_err_t *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(cat_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
        cat_fail(s, err, "prepare");
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static int cat_text(sqlite3_stmt *st, int i, const char *v, size_t cap)
{
    return sqlite3_bind_text(st, i, v, (int)strnlen(v, cap), SQLITE_TRANSIENT);
}

static void cat_col(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    size_t n = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(out, v, n);
    out[n] = '\0';
}

static void cat_row(sqlite3_stmt *st, store_backup_t *b)
{
    memset(b, 0, sizeof(*b));
    cat_col(st, 0, b->tenant, sizeof(b->tenant));
    cat_col(st, 1, b->id, sizeof(b->id));
    cat_col(st, 2, b->cluster, sizeof(b->cluster));
    cat_col(st, 3, b->backup, sizeof(b->backup));
    cat_col(st, 4, b->type, sizeof(b->type));
    cat_col(st, 5, b->store, sizeof(b->store));
    cat_col(st, 6, b->path, sizeof(b->path));
    cat_col(st, 7, b->status, sizeof(b->status));
    cat_col(st, 8, b->message, sizeof(b->message));
    cat_col(st, 9, b->source, sizeof(b->source));
    cat_col(st, 10, b->engine, sizeof(b->engine));
    cat_col(st, 11, b->engine_version, sizeof(b->engine_version));
    cat_col(st, 12, b->position, sizeof(b->position));
    b->bytes = sqlite3_column_int64(st, 13);
    b->raw_bytes = sqlite3_column_int64(st, 14);
    b->started_ms = sqlite3_column_int64(st, 15);
    b->finished_ms = sqlite3_column_int64(st, 16);
    b->pid = sqlite3_column_int64(st, 17);
    cat_col(st, 18, b->verified, sizeof(b->verified));
    cat_col(st, 19, b->verify_message, sizeof(b->verify_message));
    b->verified_ms = sqlite3_column_int64(st, 20);
}

int store_backup_put(store_t *s, const store_backup_t *b, dbp_err_t *err)
{
    if (!b->tenant[0] || !b->id[0] || !b->cluster[0])
        return dbp_err_set(err, DBP_EINVAL, "store: backup run needs tenant, id and cluster");
    sqlite3_stmt *st = cat_prepare(s,
                                   "INSERT OR REPLACE INTO backups (" BACKUP_COLUMNS ") VALUES "
                                   "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
                                   " ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                                   err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (cat_text(st, 1, b->tenant, sizeof(b->tenant)) || cat_text(st, 2, b->id, sizeof(b->id)) ||
        cat_text(st, 3, b->cluster, sizeof(b->cluster)) ||
        cat_text(st, 4, b->backup, sizeof(b->backup)) ||
        cat_text(st, 5, b->type, sizeof(b->type)) || cat_text(st, 6, b->store, sizeof(b->store)) ||
        cat_text(st, 7, b->path, sizeof(b->path)) ||
        cat_text(st, 8, b->status, sizeof(b->status)) ||
        cat_text(st, 9, b->message, sizeof(b->message)) ||
        cat_text(st, 10, b->source, sizeof(b->source)) ||
        cat_text(st, 11, b->engine, sizeof(b->engine)) ||
        cat_text(st, 12, b->engine_version, sizeof(b->engine_version)) ||
        cat_text(st, 13, b->position, sizeof(b->position)) ||
        sqlite3_bind_int64(st, 14, b->bytes) || sqlite3_bind_int64(st, 15, b->raw_bytes) ||
        sqlite3_bind_int64(st, 16, b->started_ms) || sqlite3_bind_int64(st, 17, b->finished_ms) ||
        sqlite3_bind_int64(st, 18, b->pid) || cat_text(st, 19, b->verified, sizeof(b->verified)) ||
        cat_text(st, 20, b->verify_message, sizeof(b->verify_message)) ||
        sqlite3_bind_int64(st, 21, b->verified_ms))
        rc = cat_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = cat_fail(s, err, "put");
    sqlite3_finalize(st);
    return rc;
}

int store_backup_get(store_t *s, const char *tenant, const char *id, store_backup_t *out,
                     dbp_err_t *err)
{
    if (!tenant || !id)
        return dbp_err_set(err, DBP_EINVAL, "store: backup get needs tenant and id");
    sqlite3_stmt *st = cat_prepare(
        s, "SELECT " BACKUP_COLUMNS " FROM backups WHERE tenant = ?1 AND id = ?2", err);
    if (!st)
        return DBP_ESTORE;
    int rc;
    if (sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC) ||
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC)) {
        rc = cat_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            cat_row(st, out);
            rc = 0;
        } else if (step == SQLITE_DONE) {
            rc = dbp_err_set(err, DBP_ENOENT, "backup run %s not found in tenant %s", id, tenant);
        } else {
            rc = cat_fail(s, err, "get");
        }
    }
    sqlite3_finalize(st);
    return rc;
}

int store_backup_list(store_t *s, const char *tenant, const char *cluster, store_backup_cb cb,
                      void *ud, dbp_err_t *err)
{
    sqlite3_stmt *st = cat_prepare(s,
                                   "SELECT " BACKUP_COLUMNS " FROM backups"
                                   " WHERE (?1 IS NULL OR tenant = ?1)"
                                   " AND (?2 IS NULL OR cluster = ?2)"
                                   " ORDER BY started_ms, id",
                                   err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if ((tenant ? sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC) : sqlite3_bind_null(st, 1)) ||
        (cluster ? sqlite3_bind_text(st, 2, cluster, -1, SQLITE_STATIC)
                 : sqlite3_bind_null(st, 2))) {
        rc = cat_fail(s, err, "bind");
    } else {
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            store_backup_t b;
            cat_row(st, &b);
            rc = cb(&b, ud);
            if (rc)
                break;
        }
        if (!rc && step != SQLITE_DONE)
            rc = cat_fail(s, err, "list");
    }
    sqlite3_finalize(st);
    return rc;
}

int store_backup_delete(store_t *s, const char *tenant, const char *id, dbp_err_t *err)
{
    sqlite3_stmt *st = cat_prepare(s, "DELETE FROM backups WHERE tenant = ?1 AND id = ?2", err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC) ||
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC))
        rc = cat_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = cat_fail(s, err, "delete");
    sqlite3_finalize(st);
    return rc;
}

int store_backup_set_verified(store_t *s, const char *tenant, const char *id, const char *result,
                              const char *message, dbp_err_t *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    sqlite3_stmt *st = cat_prepare(s,
                                   "UPDATE backups SET verified = ?3, verify_message = ?4,"
                                   " verified_ms = ?5 WHERE tenant = ?1 AND id = ?2",
                                   err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC) ||
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC) ||
        sqlite3_bind_text(st, 3, result, -1, SQLITE_STATIC) ||
        sqlite3_bind_text(st, 4, message ? message : "", -1, SQLITE_STATIC) ||
        sqlite3_bind_int64(st, 5, now))
        rc = cat_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = cat_fail(s, err, "verify");
    else if (sqlite3_changes(cat_db(s)) == 0)
        rc = dbp_err_set(err, DBP_ENOENT, "backup run %s not found in tenant %s", id, tenant);
    sqlite3_finalize(st);
    return rc;
}

int store_catalog_reap_dead(store_t *s, int *reaped, dbp_err_t *err)
{
    if (reaped)
        *reaped = 0;
    sqlite3_stmt *st =
        cat_prepare(s, "SELECT tenant, id, pid FROM backups WHERE status = 'running'", err);
    if (!st)
        return DBP_ESTORE;
    /* Collect first: updating while the SELECT runs is allowed by SQLite, but simpler
     * reasoning wins here. */
    struct dead {
        char tenant[64];
        char id[96];
        int64_t pid;
    } dead[64];
    int n = 0, step;
    while (n < 64 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(st, 2);
        if (pid > 0 && kill((pid_t)pid, 0) == 0)
            continue;
        if (pid > 0 && errno == EPERM)
            continue; /* exists, owned by someone else */
        cat_col(st, 0, dead[n].tenant, sizeof(dead[n].tenant));
        cat_col(st, 1, dead[n].id, sizeof(dead[n].id));
        dead[n].pid = pid;
        n++;
    }
    sqlite3_finalize(st);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        st = cat_prepare(s,
                         "UPDATE backups SET status = 'failed', message = ?3"
                         " WHERE tenant = ?1 AND id = ?2 AND status = 'running'",
                         err);
        if (!st)
            return DBP_ESTORE;
        char msg[96];
        snprintf(msg, sizeof(msg), "interrupted: process %lld is gone", (long long)dead[i].pid);
        if (sqlite3_bind_text(st, 1, dead[i].tenant, -1, SQLITE_STATIC) ||
            sqlite3_bind_text(st, 2, dead[i].id, -1, SQLITE_STATIC) ||
            sqlite3_bind_text(st, 3, msg, -1, SQLITE_STATIC))
            rc = cat_fail(s, err, "bind");
        else if (sqlite3_step(st) != SQLITE_DONE)
            rc = cat_fail(s, err, "reap");
        else if (reaped)
            *reaped += sqlite3_changes(cat_db(s));
        sqlite3_finalize(st);
    }
    return rc;
}

int store_catalog_guest(store_t *s, dbp_err_t *err)
{
    int off = 0;
    if (sqlite3_db_config(cat_db(s), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &off) != SQLITE_OK)
        return cat_fail(s, err, "no checkpoint on close");
    return 0;
}
