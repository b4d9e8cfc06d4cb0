/*
 * store.c: every SQL statement of dbplane, over one SQLite connection per store_t.
 *
 * The database runs in WAL mode (readers never block the single writer) with
 * synchronous=NORMAL, foreign keys on and a 5 s busy timeout, so several connections —
 * threads of the daemon, or the CLI next to it — can share one file. The schema is an
 * ordered list of migration steps (`migrations[]` below); PRAGMA user_version records how
 * many have run, and store_open applies the pending ones in one BEGIN IMMEDIATE
 * transaction, so two processes opening a fresh file at once cannot both migrate it. A
 * later change adds step 2, 3, ... at the end of the list and bumps STORE_SCHEMA_VERSION;
 * steps are never edited once released.
 *
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT) and cached by
 * id; all values are bound as parameters, no SQL is ever built from strings. When a cached
 * statement is still running (a list callback calling back into the store), a private copy
 * is prepared for the nested call and finalized after it. Multi-step operations (put a
 * resource, compare-and-set a topology) run in BEGIN IMMEDIATE, or in a savepoint when the
 * caller already opened a transaction with store_begin. Every SQLite failure becomes
 * DBP_ESTORE with sqlite3_errmsg() in the error message.
 */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* --- schema ------------------------------------------------------------------------- */

/*
 * Migration step i (0-based) brings the schema from version i to i+1 and must end by
 * setting PRAGMA user_version to i+1 (store_open checks that it did). Append only.
 */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE resources ("
    "  tenant TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  json TEXT NOT NULL,"
    "  generation INTEGER NOT NULL CHECK (generation > 0),"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, kind, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE status ("
    "  tenant TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  observed_generation INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  message TEXT,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, kind, name),"
    "  FOREIGN KEY (tenant, kind, name) REFERENCES resources (tenant, kind, name)"
    "    ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE TABLE instances ("
    "  tenant TEXT NOT NULL,"
    "  cluster TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  ordinal INTEGER NOT NULL,"
    "  host TEXT NOT NULL,"
    "  port INTEGER NOT NULL,"
    "  role TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  position TEXT NOT NULL,"
    "  lag_bytes INTEGER NOT NULL,"
    "  lag_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, cluster, name)"
    ");"
    "CREATE INDEX instances_port ON instances (port);"
    "CREATE TABLE topology ("
    "  tenant TEXT NOT NULL,"
    "  cluster TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL CHECK (epoch > 0),"
    "  primary_name TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, cluster)"
    ") WITHOUT ROWID;"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_ms INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  message TEXT NOT NULL"
    ");"
    "CREATE INDEX events_tenant_id ON events (tenant, id);"
    "CREATE TABLE secret_values ("
    "  tenant TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  blob BLOB NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, secret, key)"
    ") WITHOUT ROWID;"
    "PRAGMA user_version = 1;",
    /* 2: the backup catalog (store/catalog.c): one row per backup run. */
    "CREATE TABLE backups ("
    "  tenant TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  cluster TEXT NOT NULL,"
    "  backup TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  store TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  engine TEXT NOT NULL,"
    "  engine_version TEXT NOT NULL,"
    "  position TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  raw_bytes INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL,"
    "  pid INTEGER NOT NULL,"
    "  verified TEXT NOT NULL,"
    "  verify_message TEXT NOT NULL,"
    "  verified_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX backups_cluster ON backups (tenant, cluster, started_ms);"
    "PRAGMA user_version = 2;",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must equal the number of migration steps");

/* --- statements --------------------------------------------------------------------- */

/* Ids of the cached statements; stmt_sql[] holds their text. */
enum stmt_id {
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_USER_VERSION,
    ST_RES_GET,
    ST_RES_INSERT,
    ST_RES_UPDATE,
    ST_RES_DELETE,
    ST_RES_LIST,
    ST_STATUS_PUT,
    ST_INST_PUT,
    ST_INST_GET,
    ST_INST_LIST,
    ST_INST_DELETE,
    ST_INST_DELETE_CLUSTER,
    ST_INST_PORT,
    ST_TOPO_GET,
    ST_TOPO_PUT,
    ST_EV_ADD,
    ST_EV_LIST,
    ST_EV_LIST_TENANT,
    ST_EV_TRIM,
    ST_SEC_PUT,
    ST_SEC_GET,
    ST_SEC_DELETE_KEY,
    ST_SEC_DELETE_ALL,
    ST_SEC_KEYS,
    ST_COUNT
};

#define INSTANCE_COLUMNS                                                                           \
    "tenant, cluster, name, ordinal, host, port, role, state, position, lag_bytes, lag_ms, "       \
    "updated_ms"

#define EVENT_COLUMNS "id, ts_ms, tenant, kind, name, type, reason, message"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT store_op",
    [ST_RELEASE] = "RELEASE store_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO store_op",
    [ST_USER_VERSION] = "PRAGMA user_version",
    [ST_RES_GET] = "SELECT json, generation FROM resources WHERE tenant = ?1 AND kind = ?2 "
                   "AND name = ?3",
    [ST_RES_INSERT] = "INSERT INTO resources (tenant, kind, name, json, generation, updated_ms) "
                      "VALUES (?1, ?2, ?3, ?4, 1, ?5)",
    [ST_RES_UPDATE] = "UPDATE resources SET json = ?4, generation = generation + 1, "
                      "updated_ms = ?5 WHERE tenant = ?1 AND kind = ?2 AND name = ?3 "
                      "RETURNING generation",
    [ST_RES_DELETE] = "DELETE FROM resources WHERE tenant = ?1 AND kind = ?2 AND name = ?3",
    [ST_RES_LIST] = "SELECT r.tenant, r.kind, r.name, r.json, r.generation, r.updated_ms, "
                    "s.state, s.message, s.observed_generation "
                    "FROM resources r LEFT JOIN status s "
                    "ON s.tenant = r.tenant AND s.kind = r.kind AND s.name = r.name "
                    "WHERE (?1 IS NULL OR r.tenant = ?1) AND (?2 IS NULL OR r.kind = ?2) "
                    "ORDER BY r.tenant, r.kind, r.name",
    [ST_STATUS_PUT] = "INSERT INTO status (tenant, kind, name, observed_generation, state, "
                      "message, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                      "ON CONFLICT (tenant, kind, name) DO UPDATE SET "
                      "observed_generation = excluded.observed_generation, "
                      "state = excluded.state, message = excluded.message, "
                      "updated_ms = excluded.updated_ms",
    [ST_INST_PUT] = "INSERT OR REPLACE INTO instances (" INSTANCE_COLUMNS ") "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_INST_GET] = "SELECT " INSTANCE_COLUMNS " FROM instances "
                    "WHERE tenant = ?1 AND cluster = ?2 AND name = ?3",
    [ST_INST_LIST] = "SELECT " INSTANCE_COLUMNS " FROM instances "
                     "WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR cluster = ?2) "
                     "ORDER BY tenant, cluster, ordinal, name",
    [ST_INST_DELETE] = "DELETE FROM instances WHERE tenant = ?1 AND cluster = ?2 AND name = ?3",
    [ST_INST_DELETE_CLUSTER] = "DELETE FROM instances WHERE tenant = ?1 AND cluster = ?2",
    [ST_INST_PORT] = "SELECT 1 FROM instances WHERE port = ?1 LIMIT 1",
    [ST_TOPO_GET] = "SELECT epoch, primary_name FROM topology WHERE tenant = ?1 AND cluster = ?2",
    [ST_TOPO_PUT] = "INSERT INTO topology (tenant, cluster, epoch, primary_name, updated_ms) "
                    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, cluster) DO UPDATE SET "
                    "epoch = excluded.epoch, primary_name = excluded.primary_name, "
                    "updated_ms = excluded.updated_ms",
    [ST_EV_ADD] = "INSERT INTO events (ts_ms, tenant, kind, name, type, reason, message) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_EV_LIST] = "SELECT " EVENT_COLUMNS " FROM (SELECT " EVENT_COLUMNS " FROM events "
                   "WHERE id > ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
    [ST_EV_LIST_TENANT] = "SELECT " EVENT_COLUMNS " FROM (SELECT " EVENT_COLUMNS " FROM events "
                          "WHERE tenant = ?3 AND id > ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
    [ST_EV_TRIM] = "DELETE FROM events WHERE id <= "
                   "(SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
    [ST_SEC_PUT] = "INSERT INTO secret_values (tenant, secret, key, blob, updated_ms) "
                   "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, secret, key) DO UPDATE "
                   "SET blob = excluded.blob, updated_ms = excluded.updated_ms",
    [ST_SEC_GET] = "SELECT blob FROM secret_values WHERE tenant = ?1 AND secret = ?2 AND key = ?3",
    [ST_SEC_DELETE_KEY] = "DELETE FROM secret_values WHERE tenant = ?1 AND secret = ?2 "
                          "AND key = ?3",
    [ST_SEC_DELETE_ALL] = "DELETE FROM secret_values WHERE tenant = ?1 AND secret = ?2",
    [ST_SEC_KEYS] = "SELECT key, updated_ms FROM secret_values WHERE tenant = ?1 AND secret = ?2 "
                    "ORDER BY key",
};

struct store {
    sqlite3 *db;
    char *path;                    /* owned copy, for log lines */
    sqlite3_stmt *stmts[ST_COUNT]; /* prepared on first use; finalized by store_close */
};

/* --- helpers ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fills err with DBP_ESTORE, `what` and SQLite's last message; returns DBP_ESTORE. */
static int store_fail(store_t *s, dbp_err_t *err, const char *what)
{
    return dbp_err_set(err, DBP_ESTORE, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

/*
 * Returns the statement `id` ready to bind, or NULL with err set. The cached copy is
 * used unless it is still running (a callback re-entered the store), in which case a
 * private copy is prepared; stmt_done releases either kind.
 */
static sqlite3_stmt *stmt_get(store_t *s, enum stmt_id id, dbp_err_t *err)
{
    sqlite3_stmt *st = s->stmts[id];
    if (st && !sqlite3_stmt_busy(st))
        return st;
    unsigned flags = st ? 0 : SQLITE_PREPARE_PERSISTENT;
    sqlite3_stmt *fresh = NULL;
    if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, flags, &fresh, NULL) != SQLITE_OK) {
        store_fail(s, err, "prepare");
        sqlite3_finalize(fresh);
        return NULL;
    }
    if (!st)
        s->stmts[id] = fresh;
    return fresh;
}

/* Resets a statement from stmt_get for its next use (or finalizes a private copy). */
static void stmt_done(store_t *s, enum stmt_id id, sqlite3_stmt *st)
{
    if (!st)
        return;
    if (st == s->stmts[id]) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
}

/* Binds a string, or NULL for a NULL pointer; returns an SQLite result code. */
static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* Binds a fixed-size char array that may lack its NUL (instance records). */
static int bind_fixed(sqlite3_stmt *st, int i, const char *v, size_t cap)
{
    return sqlite3_bind_text(st, i, v, (int)strnlen(v, cap), SQLITE_STATIC);
}

/* Copies a column's text into a fixed-size buffer, truncating and always terminating. */
static void column_fixed(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    size_t n = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(out, v, n);
    out[n] = '\0';
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, ...). */
static int exec_stmt(store_t *s, enum stmt_id id, const char *what, dbp_err_t *err)
{
    sqlite3_stmt *st = stmt_get(s, id, err);
    if (!st)
        return DBP_ESTORE;
    int rc = sqlite3_step(st);
    int ret = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : store_fail(s, err, what);
    stmt_done(s, id, st);
    return ret;
}

/* A transaction scope for a multi-step operation: its own BEGIN IMMEDIATE when none is
 * open, or a savepoint nested inside the caller's store_begin transaction. */
typedef struct txn {
    bool own; /* true: BEGIN IMMEDIATE ... COMMIT; false: SAVEPOINT ... RELEASE */
} txn_t;

static int tx_begin(store_t *s, txn_t *t, dbp_err_t *err)
{
    t->own = sqlite3_get_autocommit(s->db) != 0;
    return exec_stmt(s, t->own ? ST_BEGIN : ST_SAVEPOINT, "begin", err);
}

static void tx_rollback(store_t *s, txn_t *t)
{
    if (t->own) {
        if (!sqlite3_get_autocommit(s->db))
            (void)exec_stmt(s, ST_ROLLBACK, "rollback", NULL);
    } else {
        (void)exec_stmt(s, ST_ROLLBACK_TO, "rollback", NULL);
        (void)exec_stmt(s, ST_RELEASE, "release", NULL);
    }
}

static int tx_commit(store_t *s, txn_t *t, dbp_err_t *err)
{
    int rc = exec_stmt(s, t->own ? ST_COMMIT : ST_RELEASE, "commit", err);
    if (rc != 0)
        tx_rollback(s, t);
    return rc;
}

/* Checks that required string arguments are present. */
static bool args_ok(const char *a, const char *b, const char *c)
{
    return a && b && c && *a && *b && *c;
}

/* --- open / close / migrations ------------------------------------------------------ */

/*
 * Creates the database file with mode 0600 before SQLite opens it (SQLite would use
 * 0644 & ~umask), and tightens an existing file that is open to group or others. SQLite
 * gives the -wal and -shm files the mode of the main file.
 */
static int prepare_file(const char *path, dbp_err_t *err)
{
    /* Never open() an existing database file here: closing any descriptor of a file drops
     * every POSIX lock this process holds on it, including those of a live SQLite
     * connection of another thread, which can then lose its WAL (sqlite.org
     * howtocorrupt.html, 2.2). Only a file that does not exist yet is created. */
    struct stat stbuf;
    if (lstat(path, &stbuf) != 0) {
        if (errno != ENOENT)
            return dbp_err_set(err, DBP_ESTORE, "store: stat %s: %s", path, strerror(errno));
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno != EEXIST)
            return dbp_err_set(err, DBP_ESTORE, "store: create %s: %s", path, strerror(errno));
        if (fd >= 0) {
            int rc = fchmod(fd, 0600);
            close(fd);
            if (rc != 0)
                return dbp_err_set(err, DBP_ESTORE, "store: chmod 0600 %s: %s", path,
                                   strerror(errno));
            return 0;
        }
        if (lstat(path, &stbuf) != 0)
            return dbp_err_set(err, DBP_ESTORE, "store: stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(stbuf.st_mode))
        return dbp_err_set(err, DBP_ESTORE, "store: %s is not a regular file", path);
    if ((stbuf.st_mode & 07777) != 0600) {
        if (stbuf.st_size > 0)
            dbp_warn("store_file_mode_fixed", "path=%s mode=%04o", dbp_log_q(path),
                     (unsigned)(stbuf.st_mode & 07777));
        if (chmod(path, 0600) != 0)
            return dbp_err_set(err, DBP_ESTORE, "store: chmod 0600 %s: %s", path,
                               strerror(errno));
    }
    return 0;
}

/* Reads PRAGMA user_version into *v. */
static int read_user_version(store_t *s, int *v, dbp_err_t *err)
{
    sqlite3_stmt *st = stmt_get(s, ST_USER_VERSION, err);
    if (!st)
        return DBP_ESTORE;
    int ret = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        *v = sqlite3_column_int(st, 0);
    else
        ret = store_fail(s, err, "read schema version");
    stmt_done(s, ST_USER_VERSION, st);
    return ret;
}

/* Applies the pending migration steps in one BEGIN IMMEDIATE transaction. */
static int migrate(store_t *s, dbp_err_t *err)
{
    int v = 0;
    int rc = read_user_version(s, &v, err);
    if (rc != 0)
        return rc;
    if (v == STORE_SCHEMA_VERSION)
        return 0;
    txn_t t;
    rc = tx_begin(s, &t, err);
    if (rc != 0)
        return rc;
    /* Re-read under the write lock: another connection may have migrated meanwhile. */
    int from = 0;
    rc = read_user_version(s, &from, err);
    if (rc == 0 && (from < 0 || from > STORE_SCHEMA_VERSION))
        rc = dbp_err_set(err, DBP_ESTORE,
                         "store: %s has schema version %d but this build knows only up to "
                         "%d; use a newer dbplane",
                         s->path, from, STORE_SCHEMA_VERSION);
    for (int i = from; rc == 0 && i < STORE_SCHEMA_VERSION; i++) {
        if (sqlite3_exec(s->db, migrations[i], NULL, NULL, NULL) != SQLITE_OK) {
            char what[64];
            snprintf(what, sizeof(what), "migration step %d", i + 1);
            rc = store_fail(s, err, what);
            break;
        }
        int now = 0;
        rc = read_user_version(s, &now, err);
        if (rc == 0 && now != i + 1)
            rc = dbp_err_set(err, DBP_ESTORE, "store: migration step %d left user_version at %d",
                             i + 1, now);
    }
    if (rc == 0)
        rc = tx_commit(s, &t, err);
    else
        tx_rollback(s, &t);
    if (rc == 0 && from != STORE_SCHEMA_VERSION)
        dbp_info("store_migrated", "path=%s from=%d to=%d", dbp_log_q(s->path), from,
                 STORE_SCHEMA_VERSION);
    return rc;
}

/* Sets the connection's pragmas; WAL must be granted for a file database. */
static int configure(store_t *s, bool in_memory, dbp_err_t *err)
{
    if (sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK)
        return store_fail(s, err, "busy_timeout");
    if (sqlite3_exec(s->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK)
        return store_fail(s, err, "foreign_keys");
    if (sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
        return store_fail(s, err, "synchronous");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK)
        return store_fail(s, err, "journal_mode");
    int ret = 0;
    if (sqlite3_step(st) != SQLITE_ROW) {
        ret = store_fail(s, err, "journal_mode");
    } else {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || (strcmp(mode, "wal") != 0 && !(in_memory && strcmp(mode, "memory") == 0)))
            ret = dbp_err_set(err, DBP_ESTORE, "store: %s: WAL journal mode refused (got %s)",
                              s->path, mode ? mode : "nothing");
    }
    sqlite3_finalize(st);
    return ret;
}

int store_open(store_t **out, const char *path, dbp_err_t *err)
{
    *out = NULL;
    if (!path || !*path)
        return dbp_err_set(err, DBP_EINVAL, "store: empty database path");
    bool in_memory = strcmp(path, ":memory:") == 0;
    if (!in_memory && strncmp(path, "file:", 5) != 0) {
        int rc = prepare_file(path, err);
        if (rc != 0)
            return rc;
    }
    store_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return dbp_err_set(err, DBP_ENOMEM, "store: out of memory");
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        int rc = dbp_err_set(err, DBP_ESTORE, "store: open %s: %s", path,
                             s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return rc;
    }
    sqlite3_extended_result_codes(s->db, 1);
    int rc = configure(s, in_memory, err);
    if (rc == 0)
        rc = migrate(s, err);
    if (rc != 0) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    if (s->db && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

int store_schema_version(store_t *s)
{
    int v = -1;
    if (read_user_version(s, &v, NULL) != 0)
        return -1;
    return v;
}

bool store_in_transaction(store_t *s)
{
    return sqlite3_get_autocommit(s->db) == 0;
}

int store_begin(store_t *s, dbp_err_t *err)
{
    return exec_stmt(s, ST_BEGIN, "begin", err);
}

int store_commit(store_t *s, dbp_err_t *err)
{
    int rc = exec_stmt(s, ST_COMMIT, "commit", err);
    if (rc != 0)
        store_rollback(s);
    return rc;
}

void store_rollback(store_t *s)
{
    if (!sqlite3_get_autocommit(s->db))
        (void)exec_stmt(s, ST_ROLLBACK, "rollback", NULL);
}

/* --- desired resources -------------------------------------------------------------- */

/* Reads a resource's generation and whether its stored JSON differs from `json`
 * (*exists false and *differs true when absent). */
static int resource_compare(store_t *s, const char *tenant, const char *kind, const char *name,
                            const char *json, bool *exists, bool *differs, int64_t *gen,
                            dbp_err_t *err)
{
    *exists = false;
    *differs = true;
    *gen = 0;
    sqlite3_stmt *st = stmt_get(s, ST_RES_GET, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, kind) || bind_text(st, 3, name)) {
        rc = store_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const char *old = (const char *)sqlite3_column_text(st, 0);
            *exists = true;
            *differs = !old || strcmp(old, json) != 0;
            *gen = sqlite3_column_int64(st, 1);
        } else if (step != SQLITE_DONE) {
            rc = store_fail(s, err, "read resource");
        }
    }
    stmt_done(s, ST_RES_GET, st);
    return rc;
}

/* Inserts a new resource at generation 1, or updates one and bumps its generation;
 * *gen receives the new generation. */
static int resource_write(store_t *s, const char *tenant, const char *kind, const char *name,
                          const char *json, bool exists, int64_t *gen, dbp_err_t *err)
{
    enum stmt_id id = exists ? ST_RES_UPDATE : ST_RES_INSERT;
    sqlite3_stmt *st = stmt_get(s, id, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, kind) || bind_text(st, 3, name) ||
        bind_text(st, 4, json) || sqlite3_bind_int64(st, 5, now_ms())) {
        rc = store_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        *gen = 1;
        if (exists && step == SQLITE_ROW) { /* UPDATE ... RETURNING generation */
            *gen = sqlite3_column_int64(st, 0);
            step = sqlite3_step(st);
        }
        if (step != SQLITE_DONE)
            rc = store_fail(s, err, "write resource");
    }
    stmt_done(s, id, st);
    return rc;
}

int store_put_resource(store_t *s, const char *tenant, const char *kind, const char *name,
                       const char *json, int64_t *generation, bool *changed, dbp_err_t *err)
{
    if (!args_ok(tenant, kind, name) || !json)
        return dbp_err_set(err, DBP_EINVAL, "store: put_resource: missing tenant/kind/name/json");
    txn_t t;
    int rc = tx_begin(s, &t, err);
    if (rc != 0)
        return rc;
    bool exists, differs;
    int64_t gen;
    rc = resource_compare(s, tenant, kind, name, json, &exists, &differs, &gen, err);
    if (rc == 0 && differs)
        rc = resource_write(s, tenant, kind, name, json, exists, &gen, err);
    if (rc != 0) {
        tx_rollback(s, &t);
        return rc;
    }
    rc = tx_commit(s, &t, err);
    if (rc != 0)
        return rc;
    if (generation)
        *generation = gen;
    if (changed)
        *changed = differs;
    return 0;
}

int store_delete_resource(store_t *s, const char *tenant, const char *kind, const char *name,
                          dbp_err_t *err)
{
    if (!args_ok(tenant, kind, name))
        return dbp_err_set(err, DBP_EINVAL, "store: delete_resource: missing tenant/kind/name");
    sqlite3_stmt *st = stmt_get(s, ST_RES_DELETE, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, kind) || bind_text(st, 3, name))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "delete resource");
    else if (sqlite3_changes(s->db) == 0)
        rc = dbp_err_set(err, DBP_ENOENT, "%s %s/%s not found", kind, tenant, name);
    stmt_done(s, ST_RES_DELETE, st);
    return rc;
}

int store_list_resources(store_t *s, const char *tenant, const char *kind, store_resource_cb cb,
                         void *ud, dbp_err_t *err)
{
    sqlite3_stmt *st = stmt_get(s, ST_RES_LIST, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, kind)) {
        rc = store_fail(s, err, "bind");
        goto out;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        store_resource_t r = {
            .tenant = (const char *)sqlite3_column_text(st, 0),
            .kind = (const char *)sqlite3_column_text(st, 1),
            .name = (const char *)sqlite3_column_text(st, 2),
            .json = (const char *)sqlite3_column_text(st, 3),
            .generation = sqlite3_column_int64(st, 4),
            .updated_ms = sqlite3_column_int64(st, 5),
            .state = (const char *)sqlite3_column_text(st, 6),
            .message = (const char *)sqlite3_column_text(st, 7),
            .observed_generation = sqlite3_column_int64(st, 8),
        };
        rc = cb(&r, ud);
        if (rc != 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = store_fail(s, err, "list resources");
out:
    stmt_done(s, ST_RES_LIST, st);
    return rc;
}

int store_set_status(store_t *s, const char *tenant, const char *kind, const char *name,
                     int64_t observed_generation, const char *state, const char *message,
                     dbp_err_t *err)
{
    if (!args_ok(tenant, kind, name) || !state)
        return dbp_err_set(err, DBP_EINVAL, "store: set_status: missing tenant/kind/name/state");
    sqlite3_stmt *st = stmt_get(s, ST_STATUS_PUT, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, kind) || bind_text(st, 3, name) ||
        sqlite3_bind_int64(st, 4, observed_generation) || bind_text(st, 5, state) ||
        bind_text(st, 6, message) || sqlite3_bind_int64(st, 7, now_ms())) {
        rc = store_fail(s, err, "bind");
    } else if (sqlite3_step(st) != SQLITE_DONE) {
        if (sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_FOREIGNKEY)
            rc = dbp_err_set(err, DBP_ENOENT, "%s %s/%s not found", kind, tenant, name);
        else
            rc = store_fail(s, err, "set status");
    }
    stmt_done(s, ST_STATUS_PUT, st);
    return rc;
}

/* --- instances ---------------------------------------------------------------------- */

static void read_instance(sqlite3_stmt *st, store_instance_t *out)
{
    memset(out, 0, sizeof(*out));
    column_fixed(st, 0, out->tenant, sizeof(out->tenant));
    column_fixed(st, 1, out->cluster, sizeof(out->cluster));
    column_fixed(st, 2, out->name, sizeof(out->name));
    out->ordinal = sqlite3_column_int(st, 3);
    column_fixed(st, 4, out->host, sizeof(out->host));
    out->port = sqlite3_column_int(st, 5);
    column_fixed(st, 6, out->role, sizeof(out->role));
    column_fixed(st, 7, out->state, sizeof(out->state));
    column_fixed(st, 8, out->position, sizeof(out->position));
    out->lag_bytes = sqlite3_column_int64(st, 9);
    out->lag_ms = sqlite3_column_int64(st, 10);
    out->updated_ms = sqlite3_column_int64(st, 11);
}

int store_put_instance(store_t *s, const store_instance_t *in, dbp_err_t *err)
{
    if (!in->tenant[0] || !in->cluster[0] || !in->name[0])
        return dbp_err_set(err, DBP_EINVAL, "store: put_instance: missing tenant/cluster/name");
    sqlite3_stmt *st = stmt_get(s, ST_INST_PUT, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    int64_t ts = in->updated_ms ? in->updated_ms : now_ms();
    if (bind_fixed(st, 1, in->tenant, sizeof(in->tenant)) ||
        bind_fixed(st, 2, in->cluster, sizeof(in->cluster)) ||
        bind_fixed(st, 3, in->name, sizeof(in->name)) || sqlite3_bind_int(st, 4, in->ordinal) ||
        bind_fixed(st, 5, in->host, sizeof(in->host)) || sqlite3_bind_int(st, 6, in->port) ||
        bind_fixed(st, 7, in->role, sizeof(in->role)) ||
        bind_fixed(st, 8, in->state, sizeof(in->state)) ||
        bind_fixed(st, 9, in->position, sizeof(in->position)) ||
        sqlite3_bind_int64(st, 10, in->lag_bytes) || sqlite3_bind_int64(st, 11, in->lag_ms) ||
        sqlite3_bind_int64(st, 12, ts))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "put instance");
    stmt_done(s, ST_INST_PUT, st);
    return rc;
}

int store_get_instance(store_t *s, const char *tenant, const char *cluster, const char *name,
                       store_instance_t *out, dbp_err_t *err)
{
    if (!args_ok(tenant, cluster, name))
        return dbp_err_set(err, DBP_EINVAL, "store: get_instance: missing tenant/cluster/name");
    sqlite3_stmt *st = stmt_get(s, ST_INST_GET, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, cluster) || bind_text(st, 3, name)) {
        rc = store_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            read_instance(st, out);
        else if (step == SQLITE_DONE)
            rc = dbp_err_set(err, DBP_ENOENT, "instance %s/%s/%s not found", tenant, cluster, name);
        else
            rc = store_fail(s, err, "get instance");
    }
    stmt_done(s, ST_INST_GET, st);
    return rc;
}

int store_list_instances(store_t *s, const char *tenant, const char *cluster, store_instance_cb cb,
                         void *ud, dbp_err_t *err)
{
    sqlite3_stmt *st = stmt_get(s, ST_INST_LIST, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, cluster)) {
        rc = store_fail(s, err, "bind");
        goto out;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        store_instance_t in;
        read_instance(st, &in);
        rc = cb(&in, ud);
        if (rc != 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = store_fail(s, err, "list instances");
out:
    stmt_done(s, ST_INST_LIST, st);
    return rc;
}

int store_delete_instance(store_t *s, const char *tenant, const char *cluster, const char *name,
                          dbp_err_t *err)
{
    if (!tenant || !cluster || !*tenant || !*cluster)
        return dbp_err_set(err, DBP_EINVAL, "store: delete_instance: missing tenant/cluster");
    enum stmt_id id = name ? ST_INST_DELETE : ST_INST_DELETE_CLUSTER;
    sqlite3_stmt *st = stmt_get(s, id, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, cluster) || (name && bind_text(st, 3, name)))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "delete instance");
    else if (name && sqlite3_changes(s->db) == 0)
        rc = dbp_err_set(err, DBP_ENOENT, "instance %s/%s/%s not found", tenant, cluster, name);
    stmt_done(s, id, st);
    return rc;
}

bool store_port_taken(store_t *s, int port)
{
    dbp_err_t err = {0};
    sqlite3_stmt *st = stmt_get(s, ST_INST_PORT, &err);
    if (!st) {
        dbp_warn("store_port_check_failed", "port=%d error=%s", port, dbp_log_q(err.msg));
        return true;
    }
    bool taken = true;
    int step = SQLITE_ERROR;
    if (sqlite3_bind_int(st, 1, port) == SQLITE_OK)
        step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        taken = true;
    else if (step == SQLITE_DONE)
        taken = false;
    else
        dbp_warn("store_port_check_failed", "port=%d error=%s", port,
                 dbp_log_q(sqlite3_errmsg(s->db)));
    stmt_done(s, ST_INST_PORT, st);
    return taken;
}

/* --- topology ----------------------------------------------------------------------- */

/* Reads epoch and primary; absent row → 0 and "". */
static int topology_read(store_t *s, const char *tenant, const char *cluster, int64_t *epoch,
                         char *primary, dbp_err_t *err)
{
    sqlite3_stmt *st = stmt_get(s, ST_TOPO_GET, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    *epoch = 0;
    if (primary)
        primary[0] = '\0';
    if (bind_text(st, 1, tenant) || bind_text(st, 2, cluster)) {
        rc = store_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            *epoch = sqlite3_column_int64(st, 0);
            if (primary)
                column_fixed(st, 1, primary, 96);
        } else if (step != SQLITE_DONE) {
            rc = store_fail(s, err, "read topology");
        }
    }
    stmt_done(s, ST_TOPO_GET, st);
    return rc;
}

int store_get_topology(store_t *s, const char *tenant, const char *cluster, int64_t *epoch,
                       char primary[96], dbp_err_t *err)
{
    if (!tenant || !cluster || !*tenant || !*cluster)
        return dbp_err_set(err, DBP_EINVAL, "store: get_topology: missing tenant/cluster");
    return topology_read(s, tenant, cluster, epoch, primary, err);
}

int store_cas_topology(store_t *s, const char *tenant, const char *cluster, int64_t expected_epoch,
                       const char *primary, int64_t *new_epoch, dbp_err_t *err)
{
    if (!tenant || !cluster || !*tenant || !*cluster)
        return dbp_err_set(err, DBP_EINVAL, "store: cas_topology: missing tenant/cluster");
    if (!primary)
        primary = "";
    if (strlen(primary) >= 96)
        return dbp_err_set(err, DBP_EINVAL, "store: cas_topology: primary name too long");
    txn_t t;
    int rc = tx_begin(s, &t, err);
    if (rc != 0)
        return rc;
    int64_t cur = 0;
    rc = topology_read(s, tenant, cluster, &cur, NULL, err);
    if (rc == 0 && cur != expected_epoch)
        rc = dbp_err_set(err, DBP_EBUSY,
                         "topology of %s/%s is at epoch %lld, expected %lld: another writer won",
                         tenant, cluster, (long long)cur, (long long)expected_epoch);
    if (rc == 0) {
        sqlite3_stmt *st = stmt_get(s, ST_TOPO_PUT, err);
        if (!st) {
            rc = DBP_ESTORE;
        } else {
            if (bind_text(st, 1, tenant) || bind_text(st, 2, cluster) ||
                sqlite3_bind_int64(st, 3, cur + 1) || bind_text(st, 4, primary) ||
                sqlite3_bind_int64(st, 5, now_ms()))
                rc = store_fail(s, err, "bind");
            else if (sqlite3_step(st) != SQLITE_DONE)
                rc = store_fail(s, err, "write topology");
            stmt_done(s, ST_TOPO_PUT, st);
        }
    }
    if (rc != 0) {
        tx_rollback(s, &t);
        return rc;
    }
    rc = tx_commit(s, &t, err);
    if (rc == 0 && new_epoch)
        *new_epoch = cur + 1;
    return rc;
}

/* --- events ------------------------------------------------------------------------- */

int store_add_event(store_t *s, const char *tenant, const char *kind, const char *name,
                    const char *type, const char *reason, const char *message, dbp_err_t *err)
{
    if (!args_ok(tenant, kind, name) || !type || !reason)
        return dbp_err_set(err, DBP_EINVAL, "store: add_event: missing field");
    sqlite3_stmt *st = stmt_get(s, ST_EV_ADD, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (sqlite3_bind_int64(st, 1, now_ms()) || bind_text(st, 2, tenant) || bind_text(st, 3, kind) ||
        bind_text(st, 4, name) || bind_text(st, 5, type) || bind_text(st, 6, reason) ||
        bind_text(st, 7, message ? message : ""))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "add event");
    stmt_done(s, ST_EV_ADD, st);
    return rc;
}

int store_list_events(store_t *s, const char *tenant, int64_t since_id, int limit,
                      store_event_cb cb, void *ud, dbp_err_t *err)
{
    enum stmt_id id = tenant ? ST_EV_LIST_TENANT : ST_EV_LIST;
    sqlite3_stmt *st = stmt_get(s, id, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (sqlite3_bind_int64(st, 1, since_id) || sqlite3_bind_int(st, 2, limit > 0 ? limit : -1) ||
        (tenant && bind_text(st, 3, tenant))) {
        rc = store_fail(s, err, "bind");
        goto out;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        store_event_t e = {
            .id = sqlite3_column_int64(st, 0),
            .ts_ms = sqlite3_column_int64(st, 1),
            .tenant = (const char *)sqlite3_column_text(st, 2),
            .kind = (const char *)sqlite3_column_text(st, 3),
            .name = (const char *)sqlite3_column_text(st, 4),
            .type = (const char *)sqlite3_column_text(st, 5),
            .reason = (const char *)sqlite3_column_text(st, 6),
            .message = (const char *)sqlite3_column_text(st, 7),
        };
        rc = cb(&e, ud);
        if (rc != 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = store_fail(s, err, "list events");
out:
    stmt_done(s, id, st);
    return rc;
}

int store_trim_events(store_t *s, int64_t keep, int64_t *deleted, dbp_err_t *err)
{
    if (keep < 0)
        return dbp_err_set(err, DBP_EINVAL, "store: trim_events: negative keep");
    sqlite3_stmt *st = stmt_get(s, ST_EV_TRIM, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (sqlite3_bind_int64(st, 1, keep))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "trim events");
    else if (deleted)
        *deleted = sqlite3_changes64(s->db);
    stmt_done(s, ST_EV_TRIM, st);
    return rc;
}

/* --- secret blobs ------------------------------------------------------------------- */

int store_put_secret_blob(store_t *s, const char *tenant, const char *secret, const char *key,
                          const uint8_t *blob, size_t len, dbp_err_t *err)
{
    if (!args_ok(tenant, secret, key) || (!blob && len))
        return dbp_err_set(err, DBP_EINVAL, "store: put_secret_blob: missing tenant/secret/key");
    if (len > 64u * 1024 * 1024)
        return dbp_err_set(err, DBP_EINVAL, "store: put_secret_blob: %zu bytes is too large", len);
    sqlite3_stmt *st = stmt_get(s, ST_SEC_PUT, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    static const uint8_t empty[1];
    if (bind_text(st, 1, tenant) || bind_text(st, 2, secret) || bind_text(st, 3, key) ||
        sqlite3_bind_blob(st, 4, len ? blob : empty, (int)len, SQLITE_STATIC) ||
        sqlite3_bind_int64(st, 5, now_ms()))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "put secret");
    stmt_done(s, ST_SEC_PUT, st);
    return rc;
}

int store_get_secret_blob(store_t *s, const char *tenant, const char *secret, const char *key,
                          uint8_t **blob, size_t *len, dbp_err_t *err)
{
    *blob = NULL;
    *len = 0;
    if (!args_ok(tenant, secret, key))
        return dbp_err_set(err, DBP_EINVAL, "store: get_secret_blob: missing tenant/secret/key");
    sqlite3_stmt *st = stmt_get(s, ST_SEC_GET, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, secret) || bind_text(st, 3, key)) {
        rc = store_fail(s, err, "bind");
    } else {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            const void *p = sqlite3_column_blob(st, 0);
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            uint8_t *copy = malloc(n ? n : 1);
            if (!copy) {
                rc = dbp_err_set(err, DBP_ENOMEM, "store: out of memory");
            } else {
                if (n)
                    memcpy(copy, p, n);
                *blob = copy;
                *len = n;
            }
        } else if (step == SQLITE_DONE) {
            rc = dbp_err_set(err, DBP_ENOENT, "secret %s/%s key %s not found", tenant, secret, key);
        } else {
            rc = store_fail(s, err, "get secret");
        }
    }
    stmt_done(s, ST_SEC_GET, st);
    return rc;
}

int store_delete_secret(store_t *s, const char *tenant, const char *secret, const char *key,
                        dbp_err_t *err)
{
    if (!tenant || !secret || !*tenant || !*secret)
        return dbp_err_set(err, DBP_EINVAL, "store: delete_secret: missing tenant/secret");
    enum stmt_id id = key ? ST_SEC_DELETE_KEY : ST_SEC_DELETE_ALL;
    sqlite3_stmt *st = stmt_get(s, id, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, secret) || (key && bind_text(st, 3, key)))
        rc = store_fail(s, err, "bind");
    else if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_fail(s, err, "delete secret");
    stmt_done(s, id, st);
    return rc;
}

int store_list_secret_keys(store_t *s, const char *tenant, const char *secret,
                           store_secret_key_cb cb, void *ud, dbp_err_t *err)
{
    if (!tenant || !secret || !*tenant || !*secret)
        return dbp_err_set(err, DBP_EINVAL, "store: list_secret_keys: missing tenant/secret");
    sqlite3_stmt *st = stmt_get(s, ST_SEC_KEYS, err);
    if (!st)
        return DBP_ESTORE;
    int rc = 0;
    if (bind_text(st, 1, tenant) || bind_text(st, 2, secret)) {
        rc = store_fail(s, err, "bind");
        goto out;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = cb((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), ud);
        if (rc != 0)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = store_fail(s, err, "list secret keys");
out:
    stmt_done(s, ST_SEC_KEYS, st);
    return rc;
}
