/*
 * test_store.c: unit tests of src/store/ against real SQLite files, each test in a fresh
 * temporary directory under /tmp that is removed afterwards. They cover the migrations on
 * open, resource generations, listing filters, status, instances, the topology
 * compare-and-set, the event log, secret blobs, file modes, transactions and two
 * connections sharing one file.
 */
/* _GNU_SOURCE (for nftw) comes from the build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

/* One test's directory and open store. */
typedef struct fixture {
    char dir[64];
    char db[128];
    store_t *s;
} fixture_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->dir, "/tmp/dbp-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/state.db", f->dir);
    dbp_err_t err = {0};
    assert_int_equal(store_open(&f->s, f->db, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    store_close(f->s);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Reads an integer PRAGMA or query result through a separate raw SQLite connection. */
static int64_t raw_int(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* --- open and migrations ------------------------------------------------------------ */

static void test_open_applies_migrations_once(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    assert_int_equal(store_put_resource(f->s, "t", "Cluster", "a", "{}", NULL, NULL, &err), 0);
    store_close(f->s);
    f->s = NULL;

    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    int64_t tables = raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'");

    /* Reopening must not re-run step 1 (its CREATE TABLEs would fail) nor lose data. */
    assert_int_equal(store_open(&f->s, f->db, &err), 0);
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"),
                     tables);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM resources"), 1);
}

static void test_open_sets_wal_and_pragmas(void **state)
{
    fixture_t *f = *state;
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(f->db, &h), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(h);
}

static void test_open_refuses_newer_schema(void **state)
{
    fixture_t *f = *state;
    store_close(f->s);
    f->s = NULL;
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(f->db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    dbp_err_t err = {0};
    assert_int_equal(store_open(&f->s, f->db, &err), DBP_ESTORE);
    assert_null(f->s);
    assert_non_null(strstr(err.msg, "schema version 99"));
}

static void test_open_bad_path_is_store_error(void **state)
{
    fixture_t *f = *state;
    char path[160];
    snprintf(path, sizeof(path), "%s/no/such/dir/x.db", f->dir);
    store_t *s = NULL;
    dbp_err_t err = {0};
    assert_int_equal(store_open(&s, path, &err), DBP_ESTORE);
    assert_null(s);
    assert_non_null(strstr(err.msg, "No such file"));
}

static void test_file_mode_0600(void **state)
{
    fixture_t *f = *state;
    store_close(f->s);
    f->s = NULL;
    char path[160], side[176];
    snprintf(path, sizeof(path), "%s/fresh.db", f->dir);
    mode_t old = umask(0); /* SQLite alone would create 0644 under this umask */
    dbp_err_t err = {0};
    int rc = store_open(&f->s, path, &err);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(store_put_resource(f->s, "t", "Secret", "x", "{}", NULL, NULL, &err), 0);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(side, sizeof(side), "%s-wal", path);
    assert_int_equal(stat(side, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(side, sizeof(side), "%s-shm", path);
    assert_int_equal(stat(side, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* An existing file left open to others is tightened on open. */
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(store_open(&f->s, path, &err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

/* --- resources ---------------------------------------------------------------------- */

static void test_put_resource_generation(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    int64_t gen = 0;
    bool changed = false;
    assert_int_equal(
        store_put_resource(f->s, "t", "Cluster", "pg", "{\"a\":1}", &gen, &changed, &err), 0);
    assert_int_equal(gen, 1);
    assert_true(changed);
    assert_int_equal(
        store_put_resource(f->s, "t", "Cluster", "pg", "{\"a\":1}", &gen, &changed, &err), 0);
    assert_int_equal(gen, 1);
    assert_false(changed);
    assert_int_equal(
        store_put_resource(f->s, "t", "Cluster", "pg", "{\"a\":2}", &gen, &changed, &err), 0);
    assert_int_equal(gen, 2);
    assert_true(changed);
    assert_int_equal(store_put_resource(f->s, "t", "Cluster", "pg", "{\"a\":2}", NULL, NULL, &err),
                     0);
    assert_int_equal(store_put_resource(f->s, "t", "Cluster", "pg", "{\"a\":3}", &gen, NULL, &err),
                     0);
    assert_int_equal(gen, 3);
    /* Another name starts at 1 of its own. */
    assert_int_equal(
        store_put_resource(f->s, "t", "Cluster", "my", "{\"a\":3}", &gen, &changed, &err), 0);
    assert_int_equal(gen, 1);
    assert_true(changed);
    assert_int_equal(store_put_resource(f->s, "t", NULL, "my", "{}", &gen, &changed, &err),
                     DBP_EINVAL);
}

/* Collects "tenant/kind/name@generation" lines for list assertions. */
typedef struct collect {
    char buf[1024];
    int n;
    int stop_after; /* 0: never */
    store_t *s;     /* when set, the callback re-enters the store */
} collect_t;

static int collect_resource(const store_resource_t *r, void *ud)
{
    collect_t *c = ud;
    size_t used = strlen(c->buf);
    snprintf(c->buf + used, sizeof(c->buf) - used, "%s/%s/%s@%lld;", r->tenant, r->kind, r->name,
             (long long)r->generation);
    c->n++;
    if (c->s) {
        /* Nested list on the same connection: needs its own statement. */
        collect_t inner = {0};
        dbp_err_t err = {0};
        assert_int_equal(
            store_list_resources(c->s, r->tenant, r->kind, collect_resource, &inner, &err), 0);
        assert_true(inner.n >= 1);
    }
    return c->stop_after && c->n >= c->stop_after ? 42 : 0;
}

static void put(store_t *s, const char *tenant, const char *kind, const char *name)
{
    dbp_err_t err = {0};
    assert_int_equal(store_put_resource(s, tenant, kind, name, "{}", NULL, NULL, &err), 0);
}

static void test_list_resources_filters(void **state)
{
    fixture_t *f = *state;
    put(f->s, "b", "Secret", "s1");
    put(f->s, "a", "Secret", "s1");
    put(f->s, "a", "Cluster", "pg");
    put(f->s, "b", "Cluster", "pg");
    put(f->s, "a", "Cluster", "my");
    dbp_err_t err = {0};
    static const struct {
        const char *tenant, *kind, *want;
    } cases[] = {
        {NULL, NULL, "a/Cluster/my@1;a/Cluster/pg@1;a/Secret/s1@1;b/Cluster/pg@1;b/Secret/s1@1;"},
        {"a", NULL, "a/Cluster/my@1;a/Cluster/pg@1;a/Secret/s1@1;"},
        {NULL, "Cluster", "a/Cluster/my@1;a/Cluster/pg@1;b/Cluster/pg@1;"},
        {"b", "Secret", "b/Secret/s1@1;"},
        {"c", NULL, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        collect_t c = {0};
        assert_int_equal(
            store_list_resources(f->s, cases[i].tenant, cases[i].kind, collect_resource, &c, &err),
            0);
        assert_string_equal(c.buf, cases[i].want);
    }

    /* A non-zero callback result stops the walk and is returned. */
    collect_t c = {.stop_after = 2};
    assert_int_equal(store_list_resources(f->s, NULL, NULL, collect_resource, &c, &err), 42);
    assert_int_equal(c.n, 2);

    /* Callbacks may call back into the store. */
    collect_t nested = {.s = f->s};
    assert_int_equal(store_list_resources(f->s, NULL, NULL, collect_resource, &nested, &err), 0);
    assert_int_equal(nested.n, 5);
}

/* Captures the single resource a list returns. */
typedef struct one_res {
    int n;
    char state[32];
    char message[64];
    int64_t observed;
    int64_t generation;
    bool has_state;
} one_res_t;

static int capture_one(const store_resource_t *r, void *ud)
{
    one_res_t *o = ud;
    o->n++;
    o->generation = r->generation;
    o->observed = r->observed_generation;
    o->has_state = r->state != NULL;
    snprintf(o->state, sizeof(o->state), "%s", r->state ? r->state : "");
    snprintf(o->message, sizeof(o->message), "%s", r->message ? r->message : "(null)");
    return 0;
}

static void test_status(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    put(f->s, "t", "Cluster", "pg");
    one_res_t o = {0};
    assert_int_equal(store_list_resources(f->s, "t", "Cluster", capture_one, &o, &err), 0);
    assert_int_equal(o.n, 1);
    assert_false(o.has_state);
    assert_int_equal(o.observed, 0);

    assert_int_equal(
        store_set_status(f->s, "t", "Cluster", "pg", 1, "pending", "starting pg-0", &err), 0);
    assert_int_equal(store_set_status(f->s, "t", "Cluster", "pg", 1, "ready", NULL, &err), 0);
    memset(&o, 0, sizeof(o));
    assert_int_equal(store_list_resources(f->s, "t", "Cluster", capture_one, &o, &err), 0);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.state, "ready");
    assert_string_equal(o.message, "(null)");
    assert_int_equal(o.observed, 1);

    err.code = 0;
    assert_int_equal(store_set_status(f->s, "t", "Cluster", "nope", 1, "ready", "x", &err),
                     DBP_ENOENT);
    assert_int_equal(err.code, DBP_ENOENT);
}

static void test_delete_resource(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    put(f->s, "t", "Database", "app");
    assert_int_equal(store_set_status(f->s, "t", "Database", "app", 1, "failed", "boom", &err), 0);
    assert_int_equal(store_delete_resource(f->s, "t", "Database", "app", &err), 0);
    assert_int_equal(raw_int(f->db, "SELECT count(*) FROM status"), 0);
    assert_int_equal(store_delete_resource(f->s, "t", "Database", "app", &err), DBP_ENOENT);

    /* Re-created: generation restarts and no stale status shows. */
    put(f->s, "t", "Database", "app");
    one_res_t o = {0};
    assert_int_equal(store_list_resources(f->s, "t", NULL, capture_one, &o, &err), 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.generation, 1);
    assert_false(o.has_state);
}

/* --- instances ---------------------------------------------------------------------- */

static store_instance_t make_instance(const char *cluster, int ordinal, int port)
{
    store_instance_t in;
    memset(&in, 0, sizeof(in));
    snprintf(in.tenant, sizeof(in.tenant), "t");
    snprintf(in.cluster, sizeof(in.cluster), "%s", cluster);
    snprintf(in.name, sizeof(in.name), "%s-%d", cluster, ordinal);
    in.ordinal = ordinal;
    snprintf(in.host, sizeof(in.host), "127.0.0.1");
    in.port = port;
    snprintf(in.role, sizeof(in.role), ordinal == 0 ? "primary" : "replica");
    snprintf(in.state, sizeof(in.state), "running");
    snprintf(in.position, sizeof(in.position), "0/16B3748");
    in.lag_bytes = ordinal * 100;
    in.lag_ms = -1;
    return in;
}

static int collect_instance(const store_instance_t *in, void *ud)
{
    collect_t *c = ud;
    size_t used = strlen(c->buf);
    snprintf(c->buf + used, sizeof(c->buf) - used, "%s:%d;", in->name, in->port);
    c->n++;
    return 0;
}

static void test_instances(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    store_instance_t a2 = make_instance("pg", 2, 15434), a0 = make_instance("pg", 0, 15432),
                     a1 = make_instance("pg", 1, 15433), b0 = make_instance("my", 0, 13306);
    assert_int_equal(store_put_instance(f->s, &a2, &err), 0);
    assert_int_equal(store_put_instance(f->s, &a0, &err), 0);
    assert_int_equal(store_put_instance(f->s, &a1, &err), 0);
    assert_int_equal(store_put_instance(f->s, &b0, &err), 0);

    store_instance_t got;
    assert_int_equal(store_get_instance(f->s, "t", "pg", "pg-1", &got, &err), 0);
    assert_string_equal(got.name, "pg-1");
    assert_string_equal(got.role, "replica");
    assert_string_equal(got.state, "running");
    assert_string_equal(got.host, "127.0.0.1");
    assert_string_equal(got.position, "0/16B3748");
    assert_int_equal(got.port, 15433);
    assert_int_equal(got.ordinal, 1);
    assert_int_equal(got.lag_bytes, 100);
    assert_int_equal(got.lag_ms, -1);
    assert_true(got.updated_ms > 0);
    assert_int_equal(store_get_instance(f->s, "t", "pg", "pg-9", &got, &err), DBP_ENOENT);

    collect_t c = {0};
    assert_int_equal(store_list_instances(f->s, "t", "pg", collect_instance, &c, &err), 0);
    assert_string_equal(c.buf, "pg-0:15432;pg-1:15433;pg-2:15434;");
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_list_instances(f->s, NULL, NULL, collect_instance, &c, &err), 0);
    assert_string_equal(c.buf, "my-0:13306;pg-0:15432;pg-1:15433;pg-2:15434;");

    assert_true(store_port_taken(f->s, 15433));
    assert_true(store_port_taken(f->s, 13306));
    assert_false(store_port_taken(f->s, 15435));

    /* Replace: same key, new role and port. */
    a1.port = 15435;
    snprintf(a1.role, sizeof(a1.role), "primary");
    a1.updated_ms = 1234;
    assert_int_equal(store_put_instance(f->s, &a1, &err), 0);
    assert_int_equal(store_get_instance(f->s, "t", "pg", "pg-1", &got, &err), 0);
    assert_string_equal(got.role, "primary");
    assert_int_equal(got.updated_ms, 1234);
    assert_false(store_port_taken(f->s, 15433));
    assert_true(store_port_taken(f->s, 15435));

    assert_int_equal(store_delete_instance(f->s, "t", "pg", "pg-2", &err), 0);
    assert_int_equal(store_delete_instance(f->s, "t", "pg", "pg-2", &err), DBP_ENOENT);
    assert_int_equal(store_delete_instance(f->s, "t", "pg", NULL, &err), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(store_list_instances(f->s, "t", NULL, collect_instance, &c, &err), 0);
    assert_string_equal(c.buf, "my-0:13306;");
}

/* --- topology ----------------------------------------------------------------------- */

static void test_topology_cas(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    int64_t epoch = -1, next = 0;
    char primary[96] = "junk";
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 0);
    assert_string_equal(primary, "");

    assert_int_equal(store_cas_topology(f->s, "t", "pg", 0, "pg-0", &next, &err), 0);
    assert_int_equal(next, 1);
    assert_int_equal(store_cas_topology(f->s, "t", "pg", 1, "pg-1", &next, &err), 0);
    assert_int_equal(next, 2);

    /* A stale writer loses and changes nothing. */
    next = 0;
    err.code = 0;
    assert_int_equal(store_cas_topology(f->s, "t", "pg", 1, "pg-2", &next, &err), DBP_EBUSY);
    assert_int_equal(err.code, DBP_EBUSY);
    assert_int_equal(next, 0);
    assert_int_equal(store_cas_topology(f->s, "t", "pg", 0, "pg-2", &next, &err), DBP_EBUSY);
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 2);
    assert_string_equal(primary, "pg-1");

    /* Clusters are independent. */
    assert_int_equal(store_get_topology(f->s, "t", "my", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 0);

    /* Inside a caller's transaction the CAS joins it and a rollback undoes it. */
    assert_int_equal(store_begin(f->s, &err), 0);
    assert_true(store_in_transaction(f->s));
    assert_int_equal(store_cas_topology(f->s, "t", "pg", 2, "", &next, &err), 0);
    assert_int_equal(next, 3);
    assert_int_equal(store_cas_topology(f->s, "t", "pg", 2, "pg-0", &next, &err), DBP_EBUSY);
    store_rollback(f->s);
    assert_false(store_in_transaction(f->s));
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 2);
    assert_string_equal(primary, "pg-1");
}

/* --- events ------------------------------------------------------------------------- */

static int collect_event(const store_event_t *e, void *ud)
{
    collect_t *c = ud;
    size_t used = strlen(c->buf);
    snprintf(c->buf + used, sizeof(c->buf) - used, "%lld:%s:%s;", (long long)e->id, e->tenant,
             e->reason);
    assert_true(e->ts_ms > 0);
    c->n++;
    return 0;
}

static void list_events(store_t *s, const char *tenant, int64_t since, int limit, const char *want)
{
    collect_t c = {0};
    dbp_err_t err = {0};
    assert_int_equal(store_list_events(s, tenant, since, limit, collect_event, &c, &err), 0);
    assert_string_equal(c.buf, want);
}

static void test_events(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    const char *reasons[] = {"R1", "R2", "R3", "R4", "R5"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_add_event(f->s, i % 2 ? "t2" : "t1", "Cluster", "pg", "Normal",
                                         reasons[i], "message", &err),
                         0);
    list_events(f->s, NULL, 0, 0, "1:t1:R1;2:t2:R2;3:t1:R3;4:t2:R4;5:t1:R5;");
    list_events(f->s, NULL, 0, 2, "4:t2:R4;5:t1:R5;");
    list_events(f->s, NULL, 3, 0, "4:t2:R4;5:t1:R5;");
    list_events(f->s, NULL, 3, 1, "5:t1:R5;");
    list_events(f->s, NULL, 5, 0, "");
    list_events(f->s, "t1", 0, -1, "1:t1:R1;3:t1:R3;5:t1:R5;");
    list_events(f->s, "t1", 0, 2, "3:t1:R3;5:t1:R5;");
    list_events(f->s, "t2", 2, 10, "4:t2:R4;");
    list_events(f->s, "t3", 0, 0, "");

    assert_int_equal(store_add_event(f->s, "t1", "Cluster", "pg", "Warning", "R6", NULL, &err), 0);
    list_events(f->s, NULL, 5, 0, "6:t1:R6;");

    int64_t deleted = 0;
    assert_int_equal(store_trim_events(f->s, 2, &deleted, &err), 0);
    assert_int_equal(deleted, 4);
    list_events(f->s, NULL, 0, 0, "5:t1:R5;6:t1:R6;");
    assert_int_equal(store_trim_events(f->s, 10, &deleted, &err), 0);
    assert_int_equal(deleted, 0);
    /* Ids are never reused after a trim (AUTOINCREMENT). */
    assert_int_equal(store_trim_events(f->s, 0, &deleted, &err), 0);
    assert_int_equal(store_add_event(f->s, "t1", "Cluster", "pg", "Normal", "R7", "m", &err), 0);
    list_events(f->s, NULL, 0, 0, "7:t1:R7;");
}

/* --- secret blobs ------------------------------------------------------------------- */

static int collect_key(const char *key, int64_t updated_ms, void *ud)
{
    collect_t *c = ud;
    size_t used = strlen(c->buf);
    snprintf(c->buf + used, sizeof(c->buf) - used, "%s;", key);
    assert_true(updated_ms > 0);
    return 0;
}

static void test_secret_blobs(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    const uint8_t b1[] = {1, 0, 2, 0, 3, 255};
    const uint8_t b2[] = {9, 8, 7};
    uint8_t *got = NULL;
    size_t len = 0;
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "password", &got, &len, &err),
                     DBP_ENOENT);
    assert_null(got);

    assert_int_equal(store_put_secret_blob(f->s, "t", "db", "password", b1, sizeof(b1), &err), 0);
    assert_int_equal(store_put_secret_blob(f->s, "t", "db", "user", b2, sizeof(b2), &err), 0);
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "password", &got, &len, &err), 0);
    assert_int_equal(len, sizeof(b1));
    assert_memory_equal(got, b1, sizeof(b1));
    free(got);

    /* Overwrite. */
    assert_int_equal(store_put_secret_blob(f->s, "t", "db", "password", b2, sizeof(b2), &err), 0);
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "password", &got, &len, &err), 0);
    assert_int_equal(len, sizeof(b2));
    assert_memory_equal(got, b2, sizeof(b2));
    free(got);

    collect_t c = {0};
    assert_int_equal(store_list_secret_keys(f->s, "t", "db", collect_key, &c, &err), 0);
    assert_string_equal(c.buf, "password;user;");

    assert_int_equal(store_delete_secret(f->s, "t", "db", "password", &err), 0);
    assert_int_equal(store_delete_secret(f->s, "t", "db", "password", &err), 0);
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "password", &got, &len, &err),
                     DBP_ENOENT);
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "user", &got, &len, &err), 0);
    free(got);
    assert_int_equal(store_delete_secret(f->s, "t", "db", NULL, &err), 0);
    assert_int_equal(store_get_secret_blob(f->s, "t", "db", "user", &got, &len, &err), DBP_ENOENT);
}

/* --- transactions and connections --------------------------------------------------- */

static void test_transactions(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    assert_false(store_in_transaction(f->s));
    assert_int_equal(store_begin(f->s, &err), 0);
    assert_int_equal(store_begin(f->s, &err), DBP_ESTORE); /* no nesting */
    assert_non_null(strstr(err.msg, "within a transaction"));
    put(f->s, "t", "Cluster", "a");
    put(f->s, "t", "Cluster", "b");
    store_rollback(f->s);
    collect_t c = {0};
    assert_int_equal(store_list_resources(f->s, NULL, NULL, collect_resource, &c, &err), 0);
    assert_int_equal(c.n, 0);

    assert_int_equal(store_begin(f->s, &err), 0);
    put(f->s, "t", "Cluster", "a");
    put(f->s, "t", "Cluster", "b");
    assert_int_equal(store_commit(f->s, &err), 0);
    assert_false(store_in_transaction(f->s));
    assert_int_equal(store_list_resources(f->s, NULL, NULL, collect_resource, &c, &err), 0);
    assert_int_equal(c.n, 2);
    store_rollback(f->s); /* without a transaction: a no-op */
}

static void test_two_connections(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    store_t *s2 = NULL;
    assert_int_equal(store_open(&s2, f->db, &err), 0);
    assert_int_equal(store_schema_version(s2), STORE_SCHEMA_VERSION);

    put(f->s, "t", "Cluster", "pg");
    collect_t c = {0};
    assert_int_equal(store_list_resources(s2, NULL, NULL, collect_resource, &c, &err), 0);
    assert_string_equal(c.buf, "t/Cluster/pg@1;");

    int64_t epoch = 0, next = 0;
    char primary[96];
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 0);
    /* s2 wins the race for epoch 0 → 1; s1, still holding epoch 0, must lose. */
    assert_int_equal(store_cas_topology(s2, "t", "pg", 0, "pg-1", &next, &err), 0);
    assert_int_equal(store_cas_topology(f->s, "t", "pg", epoch, "pg-0", &next, &err), DBP_EBUSY);
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_int_equal(epoch, 1);
    assert_string_equal(primary, "pg-1");

    assert_int_equal(store_add_event(s2, "t", "Cluster", "pg", "Normal", "Failover", "x", &err), 0);
    list_events(f->s, "t", 0, 0, "1:t:Failover;");
    store_close(s2);
}

/* One racing HA monitor: its own connection, read the epoch then CAS it, many times. */
typedef struct racer {
    const char *db;
    int id;
    int wins;
    int64_t won[64]; /* epochs this racer created */
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    store_t *s = NULL;
    dbp_err_t err = {0};
    if (store_open(&s, r->db, &err) != 0)
        return NULL;
    char me[16];
    snprintf(me, sizeof(me), "pg-%d", r->id);
    for (int i = 0; i < 40 && r->wins < 64; i++) {
        int64_t epoch = 0, next = 0;
        char primary[96];
        if (store_get_topology(s, "t", "pg", &epoch, primary, &err) != 0)
            break;
        int rc = store_cas_topology(s, "t", "pg", epoch, me, &next, &err);
        if (rc == 0)
            r->won[r->wins++] = next;
        else if (rc != DBP_EBUSY)
            break; /* a store error fails the test through the epoch count below */
    }
    store_close(s);
    return NULL;
}

static void test_topology_cas_concurrent(void **state)
{
    fixture_t *f = *state;
    enum { N = 4 };
    racer_t racers[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        racers[i] = (racer_t){.db = f->db, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, race, &racers[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        total += racers[i].wins;
    }
    /* Every epoch was won by exactly one racer: wins add up to the final epoch, no dups. */
    int64_t epoch = 0;
    char primary[96];
    dbp_err_t err = {0};
    assert_int_equal(store_get_topology(f->s, "t", "pg", &epoch, primary, &err), 0);
    assert_true(total > 0);
    assert_int_equal(epoch, total);
    bool *seen = calloc((size_t)total + 1, sizeof(bool));
    assert_non_null(seen);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < racers[i].wins; j++) {
            int64_t e = racers[i].won[j];
            assert_true(e >= 1 && e <= total);
            assert_false(seen[e]);
            seen[e] = true;
        }
    free(seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_applies_migrations_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_sets_wal_and_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_newer_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_path_is_store_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_resource_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_resources_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_resource, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topology_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topology_cas_concurrent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
