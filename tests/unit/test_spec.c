/*
 * test_spec.c: tests of the spec module (src/spec/) against the user-facing format. Every
 * file in shared/spec-reference/ must parse and validate without a single diagnostic;
 * each fixture in fixtures/spec/ triggers one class of error (or warning) and the test
 * pins its exact file, line, column, field path, message and hint. Further cases cover
 * defaults, typed values of the reference files, the JSON form and its round trip, the
 * `known` set, merging, and the printed format. Runs with tests/unit as working directory;
 * DBP_SPEC_REFERENCE_DIR overrides where the reference files are.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "spec/spec.h"

#define FIXTURES "fixtures/spec/"

static const char *reference_dir(void)
{
    const char *d = getenv("DBP_SPEC_REFERENCE_DIR");
    return d && *d ? d : "../../../shared/spec-reference";
}

/* Parses `path` into *set (initialised here), then validates; returns the diag count. */
static void load(spec_set_t *set, spec_diags_t *d, const char *path, bool validate)
{
    spec_set_init(set);
    spec_diags_init(d);
    int rc = spec_parse_file(set, path, d);
    assert_int_equal(rc, d->errors ? DBP_EINVAL : 0);
    if (validate) {
        size_t before = d->errors;
        rc = spec_validate(set, NULL, d);
        assert_int_equal(rc, d->errors > before ? DBP_EINVAL : 0);
    }
}

static void dump(const spec_diags_t *d)
{
    spec_diags_print(d, stderr);
}

static spec_resource_t *get(const spec_set_t *s, spec_kind_t k, const char *tenant,
                            const char *name)
{
    spec_resource_t *r = spec_set_find(s, k, tenant, name);
    if (!r)
        fail_msg("%s %s/%s not found", spec_kind_str(k), tenant, name);
    return r;
}

/* --- reference files ------------------------------------------------------------------- */

static void test_reference_files_valid(void **state)
{
    (void)state;
    const char *dir = reference_dir();
    DIR *dh = opendir(dir);
    if (!dh)
        fail_msg("cannot open %s (set DBP_SPEC_REFERENCE_DIR)", dir);
    spec_set_t all;
    spec_diags_t d;
    spec_set_init(&all);
    spec_diags_init(&d);
    size_t files = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".yaml") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        /* Each file on its own parses cleanly ... */
        spec_set_t one;
        spec_diags_t od;
        spec_set_init(&one);
        spec_diags_init(&od);
        int rc = spec_parse_file(&one, path, &od);
        if (rc != 0 || od.n != 0) {
            dump(&od);
            fail_msg("%s: %zu diagnostics", path, od.n);
        }
        assert_true(one.n > 0);
        spec_set_free(&one);
        spec_diags_free(&od);
        /* ... and all of them together validate (restore.yaml names homelab's Backup). */
        assert_int_equal(spec_parse_file(&all, path, &d), 0);
        files++;
    }
    closedir(dh);
    assert_true(files >= 3);
    int rc = spec_validate(&all, NULL, &d);
    if (rc != 0 || d.n != 0) {
        dump(&d);
        fail_msg("reference set: %zu diagnostics", d.n);
    }
    spec_set_free(&all);
    spec_diags_free(&d);
}

/* restore.yaml applied on its own against a daemon that already knows homelab.yaml. */
static void test_reference_restore_with_known(void **state)
{
    (void)state;
    char homelab[1024], restore[1024];
    snprintf(homelab, sizeof(homelab), "%s/homelab.yaml", reference_dir());
    snprintf(restore, sizeof(restore), "%s/restore.yaml", reference_dir());
    spec_set_t known, set;
    spec_diags_t d;
    load(&known, &d, homelab, true);
    assert_int_equal(d.n, 0);
    spec_diags_free(&d);
    load(&set, &d, restore, false);
    assert_int_equal(d.n, 0);
    /* Alone and offline: a warning (the Backup may be the daemon's). */
    assert_int_equal(spec_validate(&set, NULL, &d), 0);
    assert_int_equal(d.errors, 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.v[0].severity, SPEC_WARNING);
    assert_non_null(strstr(d.v[0].msg, "Backup 'pg-nightly' is not declared"));
    spec_diags_free(&d);
    /* Against daemon state that lacks it: an error. */
    spec_set_t empty;
    spec_set_init(&empty);
    spec_diags_init(&d);
    assert_int_equal(spec_validate(&set, &empty, &d), DBP_EINVAL);
    assert_int_equal(d.errors, 1);
    spec_set_free(&empty);
    spec_diags_free(&d);
    spec_diags_init(&d);
    assert_int_equal(spec_validate(&set, &known, &d), 0);
    assert_int_equal(d.n, 0);
    spec_set_free(&set);
    spec_set_free(&known);
    spec_diags_free(&d);
}

static void test_reference_values(void **state)
{
    (void)state;
    char path[1024];
    spec_set_t s;
    spec_diags_t d;
    snprintf(path, sizeof(path), "%s/wecare.yaml", reference_dir());
    load(&s, &d, path, true);
    assert_int_equal(d.n, 0);

    spec_resource_t *r = get(&s, SPEC_KIND_CLUSTER, "wecare", "app-db");
    const spec_cluster_t *c = &r->u.cluster;
    assert_string_equal(r->tenant.v, "wecare");
    assert_true(r->tenant.set);
    assert_int_equal(c->engine, SPEC_ENGINE_MARIADB);
    assert_string_equal(c->version.v, "10.11");
    assert_int_equal(c->instances.v, 2);
    assert_true(c->instances.set);
    assert_int_equal(c->memory.v, 1ull << 30);
    assert_int_equal(c->storage.v, 5ull << 30);
    assert_int_equal(c->replication.mode, SPEC_REPL_ASYNC);
    assert_true(c->replication.mode_set);
    assert_true(c->replication.gtid_strict_mode.v);
    assert_int_equal(c->proxy.port.v, 13306);
    assert_int_equal(c->proxy.ro_port.v, 13307); /* default port + 1 */
    assert_false(c->proxy.ro_port.set);
    assert_true(c->proxy.read_write_split.v);
    assert_int_equal(c->proxy.keepalive.ms, 300000);
    assert_true(c->failover.auto_.v);
    assert_int_equal(c->failover.interval.ms, 2000);
    assert_int_equal(c->failover.failcount.v, 3);
    assert_true(c->failover.auto_rejoin.v);
    assert_int_equal(c->update_strategy, SPEC_UPDATE_REPLICAS_FIRST_PRIMARY_LAST);
    assert_int_equal(c->update_strategy_at.line, 57);
    assert_int_equal(c->config.n, 3);
    assert_string_equal(c->config.v[0].key, "innodb_buffer_pool_size");
    assert_string_equal(c->config.v[0].value, "256M");
    assert_string_equal(c->config.v[1].value, "500");
    /* positions are 1-based: `engine: mariadb` is line 36, value at column 11 */
    assert_int_equal(c->engine_at.line, 36);
    assert_int_equal(c->engine_at.col, 11);
    assert_string_equal(c->engine_at.file, path);

    r = get(&s, SPEC_KIND_CLUSTER, "wecare", "redis-cache");
    assert_int_equal(r->u.cluster.redis.class_, SPEC_REDIS_CLASS_CACHE);
    assert_int_equal(r->u.cluster.redis.maxmemory.v, 90ull << 20);
    assert_string_equal(r->u.cluster.redis.maxmemory_policy.v, "allkeys-lru");
    assert_false(r->u.cluster.redis.maxmemory_policy.set);
    r = get(&s, SPEC_KIND_CLUSTER, "wecare", "redis-session");
    assert_string_equal(r->u.cluster.redis.maxmemory_policy.v, "volatile-lru");

    r = get(&s, SPEC_KIND_CLUSTER, "wecare", "keycloak-db");
    assert_int_equal(r->u.cluster.proxy.pool.mode, SPEC_POOL_TRANSACTION);
    assert_true(r->u.cluster.proxy.pool.mode_set);
    assert_int_equal(r->u.cluster.proxy.pool.size.v, 20);
    assert_int_equal(r->u.cluster.proxy.pool.max_client_connections.v, 1000);

    r = get(&s, SPEC_KIND_GRANT, "wecare", "app-user-wecare");
    assert_int_equal(r->u.grant.privileges.n, 8);
    assert_string_equal(r->u.grant.privileges.v[7], "DROP");
    assert_int_equal(r->u.grant.privileges.ats[0].line, 99);

    r = get(&s, SPEC_KIND_SECRET, "wecare", "erp-db-secrets");
    assert_int_equal(r->u.secret.string_data.n, 1);
    assert_string_equal(r->u.secret.string_data.v[0].key, "ERP_DB_PWD");
    r = get(&s, SPEC_KIND_SECRET, "wecare", "keycloak-db");
    assert_int_equal(r->u.secret.generate_keys.n, 1);
    assert_int_equal(r->u.secret.generate_length.v, 32);
    assert_false(r->u.secret.generate_length.set);

    r = get(&s, SPEC_KIND_BACKUP_STORE, "wecare", "ecn-private");
    assert_true(r->u.backup_store.is_s3);
    assert_string_equal(r->u.backup_store.s3_bucket.v, "ecn-private");
    assert_string_equal(r->u.backup_store.s3_access_key_id.key.v, "access-key-id");
    assert_true(r->u.backup_store.s3_force_path_style.v);

    r = get(&s, SPEC_KIND_BACKUP, "wecare", "app-db-physical");
    assert_int_equal(r->u.backup.type, SPEC_BACKUP_PHYSICAL);
    assert_int_equal(r->u.backup.retention.ms, 24LL * 3600 * 1000);
    assert_int_equal(r->u.backup.target, SPEC_BACKUP_TARGET_PREFER_REPLICA);
    assert_int_equal(r->u.backup.compression, SPEC_COMPRESSION_ZSTD);
    assert_true(r->u.backup.verify.v); /* physical backups verify by default */
    assert_int_equal(r->u.backup.cron.minute, 1);
    r = get(&s, SPEC_KIND_BACKUP, "wecare", "app-db-sql");
    assert_int_equal(r->u.backup.compression, SPEC_COMPRESSION_GZIP);
    assert_false(r->u.backup.verify.v);
    assert_string_equal(r->u.backup.databases.v[0], "wecare_production");

    r = get(&s, SPEC_KIND_SQL_JOB, "wecare", "wecare-schema-v1");
    assert_non_null(strstr(r->u.sql_job.sql.v, "CREATE TABLE IF NOT EXISTS customer"));

    r = get(&s, SPEC_KIND_TENANT, "default", "wecare");
    assert_int_equal(r->u.tenant.quota_clusters.v, 8);
    assert_int_equal(r->u.tenant.quota_storage.v, 200ull << 30);

    r = get(&s, SPEC_KIND_USER, "wecare", "app-user");
    assert_int_equal(r->u.user.max_user_connections.v, 200);
    assert_string_equal(r->u.user.host.v, "%");
    spec_set_free(&s);
    spec_diags_free(&d);

    snprintf(path, sizeof(path), "%s/homelab.yaml", reference_dir());
    load(&s, &d, path, true);
    assert_int_equal(d.n, 0);
    r = get(&s, SPEC_KIND_USER, "default", "trading");
    assert_int_equal(r->u.user.rotation_period.ms, 7LL * 86400 * 1000);
    assert_int_equal(r->u.user.max_user_connections.v, -1);
    r = get(&s, SPEC_KIND_CREDENTIAL_ROLE, "default", "postgres-myapp-role");
    assert_int_equal(r->u.credential_role.creation_statements.n, 2);
    assert_int_equal(r->u.credential_role.default_ttl.ms, 24LL * 3600 * 1000);
    assert_int_equal(r->u.credential_role.max_ttl.ms, 7LL * 86400 * 1000);
    r = get(&s, SPEC_KIND_CLUSTER, "default", "redis");
    assert_int_equal(r->u.cluster.redis.class_, SPEC_REDIS_CLASS_QUEUE);
    assert_int_equal(r->u.cluster.redis.maxmemory.v, 640ull << 20);
    r = get(&s, SPEC_KIND_BACKUP_STORE, "default", "local");
    assert_false(r->u.backup_store.is_s3);
    assert_string_equal(r->u.backup_store.posix_path.v, "./backups");
    r = get(&s, SPEC_KIND_SECRET, "default", "app-passwords");
    assert_int_equal(r->u.secret.generate_keys.n, 13);
    assert_int_equal(r->u.secret.generate_length.v, 24);
    spec_set_free(&s);
    spec_diags_free(&d);

    snprintf(path, sizeof(path), "%s/restore.yaml", reference_dir());
    load(&s, &d, path, false);
    r = get(&s, SPEC_KIND_RESTORE, "default", "pg-cluster-yesterday");
    assert_string_equal(r->u.restore.backup.v, "pg-nightly");
    assert_string_equal(r->u.restore.target_cluster.v, "pg-cluster-restored");
    assert_null(r->u.restore.target_spec);
    assert_int_equal(r->u.restore.point_in_time_ts, 1795318200);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* --- one fixture per error class ------------------------------------------------------- */

typedef struct fixture_case {
    const char *file;    /* under fixtures/spec/ */
    spec_severity_t sev; /* of the single expected diagnostic */
    int line, col;
    const char *path; /* substring of diag.path ("" for none) */
    const char *msg;  /* substring of diag.msg */
    const char *hint; /* substring of diag.hint, or NULL for "no hint" check skipped */
} fixture_case_t;

static const fixture_case_t fixture_cases[] = {
    {"unknown_field.yaml", SPEC_ERROR, 9, 3, "Cluster/pg: spec.instnaces",
     "unknown field 'instnaces'", "did you mean 'instances'?"},
    {"wrong_type_int.yaml", SPEC_ERROR, 7, 14, "Cluster/pg: spec.instances",
     "expected an integer, got 'abc'", NULL},
    {"wrong_type_map.yaml", SPEC_ERROR, 8, 5, "Cluster/pg: spec.version",
     "expected a string, got a mapping", NULL},
    {"wrong_type_bool.yaml", SPEC_ERROR, 8, 11, "Cluster/pg: spec.failover.auto",
     "expected a boolean, got 'maybe'", "true or false"},
    {"bad_quantity.yaml", SPEC_ERROR, 8, 11, "Cluster/redis: spec.memory",
     "invalid quantity \"640mb\"", "512Mi"},
    {"bad_duration.yaml", SPEC_ERROR, 8, 15, "Cluster/db: spec.failover.interval",
     "duration \"10\" has no unit", "1h30m"},
    {"bad_cron.yaml", SPEC_ERROR, 18, 13, "Backup/nightly: spec.schedule",
     "minute 61 out of range 0-59", "5 fields"},
    {"bad_enum.yaml", SPEC_ERROR, 8, 11, "Cluster/db: spec.replication.mode",
     "invalid value 'semisync'", "did you mean 'semi-sync'? valid values: async, semi-sync, sync"},
    {"missing_required.yaml", SPEC_ERROR, 5, 1, "Cluster/db: spec.engine",
     "missing required field 'engine'", NULL},
    {"duplicate_name.yaml", SPEC_ERROR, 14, 9, "Database/app: metadata.name",
     "duplicate Database 'app' in tenant 'default'",
     "first declared at fixtures/spec/duplicate_name.yaml:8:18"},
    {"dangling_grant_user.yaml", SPEC_ERROR, 21, 13, "Grant/shop: spec.username",
     "username 'shop' is not a declared User on cluster 'mysql'", "spec.username 'shop_app'"},
    {"dangling_db_owner.yaml", SPEC_ERROR, 12, 10, "Database/app: spec.owner",
     "owner 'app_owner' is not a declared User on cluster 'pg'", "spec.username: app_owner"},
    {"dangling_cluster.yaml", SPEC_ERROR, 10, 12, "Database/app: spec.cluster",
     "Cluster 'pg-clustr' is not declared in tenant 'default'", "did you mean 'pg-cluster'?"},
    {"duplicate_port.yaml", SPEC_ERROR, 16, 11, "Cluster/other: spec.proxy.port",
     "proxy port 16432 is already used by Cluster/pg", "duplicate_port.yaml:6:17"},
    {"redis_logical_backup.yaml", SPEC_ERROR, 16, 9, "Backup/cache-dump: spec.type",
     "logical backups are not supported for redis", "type: physical"},
    {"yaml_syntax.yaml", SPEC_ERROR, 5, 2, "", "YAML syntax error: did not find expected key",
     NULL},
    {"bad_dns_name.yaml", SPEC_ERROR, 4, 9, "Cluster/PG_Cluster: metadata.name",
     "not a valid DNS label", "lowercase letters"},
    {"wrong_api_version.yaml", SPEC_ERROR, 1, 13, "Cluster/pg: apiVersion",
     "unsupported apiVersion 'dbplane/v2'", "dbplane/v1"},
    {"duplicate_key.yaml", SPEC_ERROR, 8, 3, "", "duplicate mapping key 'instances'",
     "line 7, column 3"},
    {"unknown_kind.yaml", SPEC_ERROR, 2, 7, "kind", "unknown kind 'Clustr'",
     "did you mean 'Cluster'? valid kinds: Cluster, Database"},
    {"bad_privilege.yaml", SPEC_ERROR, 23, 24, "Grant/app: spec.privileges[1]",
     "'LOCK TABLES' is not a postgresql privilege", "postgresql privileges: SELECT"},
    {"sqljob_cycle.yaml", SPEC_ERROR, 9, 50, "SqlJob/a: spec.dependsOn",
     "dependsOn cycle: a -> b -> a", NULL},
    {"secret_missing_key.yaml", SPEC_ERROR, 17, 41, "User/app: spec.passwordSecretKeyRef.key",
     "Secret 'pw' has no key 'ap'", "has keys: app"},
    {"pool_on_mariadb.yaml", SPEC_ERROR, 8, 5, "Cluster/db: spec.proxy.pool",
     "applies only to engine postgresql", NULL},
    {"bad_version.yaml", SPEC_ERROR, 6, 12, "Cluster/pg: spec.version",
     "version '9.6' is not supported for engine postgresql", "12, 13, 14, 15, 16, 17"},
    {"tenant_quota.yaml", SPEC_ERROR, 14, 18, "Cluster/b: metadata.tenant",
     "tenant 'small' allows at most 1 clusters", "quotas.clusters"},
    {"ttl_order.yaml", SPEC_ERROR, 12, 15, "CredentialRole/ro: spec.defaultTTL",
     "defaultTTL (2d) is longer than maxTTL (1d)", NULL},
    {"redis_maxmemory.yaml", SPEC_ERROR, 7, 36, "Cluster/cache: spec.redis.maxmemory",
     "maxmemory (209715200 bytes) is larger than memory", NULL},
    {"queue_policy_warning.yaml", SPEC_WARNING, 11, 22, "Cluster/jobs: spec.redis.maxmemoryPolicy",
     "evicts keys without a TTL", "volatile-lru"},
};

static void test_error_fixtures(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fixture_cases) / sizeof(fixture_cases[0]); i++) {
        const fixture_case_t *fc = &fixture_cases[i];
        char path[256];
        snprintf(path, sizeof(path), FIXTURES "%s", fc->file);
        spec_set_t s;
        spec_diags_t d;
        load(&s, &d, path, true);
        if (d.n != 1) {
            dump(&d);
            fail_msg("%s: %zu diagnostics, want exactly 1", fc->file, d.n);
        }
        const spec_diag_t *g = &d.v[0];
        if (g->severity != fc->sev || strcmp(g->file, path) != 0 || g->line != fc->line ||
            g->col != fc->col || !strstr(g->path, fc->path) || !strstr(g->msg, fc->msg) ||
            (fc->hint && (!g->hint || !strstr(g->hint, fc->hint)))) {
            dump(&d);
            fail_msg("%s: got %s:%d:%d %s [%s] %s (hint %s); want %d:%d [%s] %s (hint %s)",
                     fc->file, g->file, g->line, g->col, spec_severity_str(g->severity), g->path,
                     g->msg, g->hint ? g->hint : "-", fc->line, fc->col, fc->path, fc->msg,
                     fc->hint ? fc->hint : "-");
        }
        assert_int_equal(d.errors, fc->sev == SPEC_ERROR ? 1 : 0);
        spec_set_free(&s);
        spec_diags_free(&d);
    }
}

/* A warning is reported but neither counts as an error nor fails parse or validate. */
static void test_warning_is_not_error(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    assert_int_equal(spec_parse_file(&s, FIXTURES "queue_policy_warning.yaml", &d), 0);
    assert_int_equal(spec_validate(&s, NULL, &d), 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.errors, 0);
    assert_int_equal(d.v[0].severity, SPEC_WARNING);
    assert_int_equal(s.n, 1);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* Parsing goes on after errors: every problem of the file is reported, in order. */
static void test_collects_all_errors(void **state)
{
    (void)state;
    static const struct {
        int line, col;
        const char *msg;
    } want[] = {
        {6, 14, "must be between 1 and 9, got 12"},
        {7, 11, "invalid quantity \"1GB\""},
        {8, 17, "must be between 1 and 65535, got 70000"},
        {13, 21, "unknown field 'usrname'"},
        {13, 1, "missing required field 'username'"},
        {15, 1, "a Secret needs stringData or generate"},
    };
    spec_set_t s;
    spec_diags_t d;
    load(&s, &d, FIXTURES "many_errors.yaml", true);
    assert_int_equal(d.n, sizeof(want) / sizeof(want[0]));
    assert_int_equal(d.errors, d.n);
    for (size_t i = 0; i < d.n; i++) {
        assert_int_equal(d.v[i].line, want[i].line);
        assert_int_equal(d.v[i].col, want[i].col);
        assert_non_null(strstr(d.v[i].msg, want[i].msg));
    }
    assert_int_equal(s.n, 3); /* resources with errors are still added */
    spec_set_free(&s);
    spec_diags_free(&d);
}

static void test_empty_documents_skipped(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    load(&s, &d, FIXTURES "empty_documents.yaml", true);
    assert_int_equal(d.n, 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.items[0]->kind, SPEC_KIND_TENANT);
    assert_int_equal(s.items[0]->at.line, 5);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* --- buffers: defaults, structure limits, JSON ------------------------------------------ */

/* Parses a buffer into *s and returns the number of errors added. */
static size_t parse_str(spec_set_t *s, spec_diags_t *d, const char *yaml)
{
    size_t before = d->errors;
    int rc = spec_parse_buffer(s, "<test>", yaml, strlen(yaml), d);
    assert_int_equal(rc, d->errors > before ? DBP_EINVAL : 0);
    return d->errors - before;
}

static void test_defaults(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                               "spec: {engine: postgresql, proxy: {port: 6432}}\n"
                               "---\napiVersion: dbplane/v1\nkind: Cluster\n"
                               "metadata: {name: r}\nspec: {engine: redis, memory: 100Mi, "
                               "redis: {class: queue}}\n"
                               "---\napiVersion: dbplane/v1\nkind: User\nmetadata: {name: u}\n"
                               "spec: {cluster: pg, username: u}\n"
                               "---\napiVersion: dbplane/v1\nkind: Database\n"
                               "metadata: {name: db}\nspec: {cluster: pg, name: db}\n"
                               "---\napiVersion: dbplane/v1\nkind: CredentialRole\n"
                               "metadata: {name: cr}\nspec: {cluster: pg, "
                               "creationStatements: [x]}\n"
                               "---\napiVersion: dbplane/v1\nkind: Secret\n"
                               "metadata: {name: s}\ngenerate: {keys: [k]}\n"),
                     0);
    assert_int_equal(spec_validate(&s, NULL, &d), 0);
    const spec_resource_t *r = get(&s, SPEC_KIND_CLUSTER, "default", "pg");
    const spec_cluster_t *c = &r->u.cluster;
    assert_string_equal(r->tenant.v, "default");
    assert_false(r->tenant.set);
    assert_int_equal(c->instances.v, 1);
    assert_false(c->instances.set);
    assert_null(c->version.v);
    assert_int_equal(c->replication.mode, SPEC_REPL_ASYNC);
    assert_false(c->replication.set);
    assert_true(c->failover.auto_.v);
    assert_false(c->failover.set);
    assert_int_equal(c->failover.interval.ms, 1000);
    assert_int_equal(c->failover.failcount.v, 3);
    assert_int_equal(c->failover.max_lag.v, 16ull << 20);
    assert_true(c->failover.auto_rejoin.v);
    assert_int_equal(c->proxy.ro_port.v, 6433);
    assert_string_equal(c->proxy.address.v, "127.0.0.1");
    assert_false(c->proxy.address.set);
    assert_int_equal(c->proxy.pool.mode, SPEC_POOL_TRANSACTION);
    assert_false(c->proxy.pool.set);
    assert_int_equal(c->proxy.pool.size.v, 20);
    assert_int_equal(c->proxy.pool.min_size.v, 0);
    assert_int_equal(c->proxy.pool.max_client_connections.v, 1000);
    assert_int_equal(c->proxy.pool.query_wait_timeout.ms, 120000);
    assert_int_equal(c->proxy.pool.idle_in_transaction_timeout.ms, 0);
    assert_int_equal(c->proxy.pool.server_idle_timeout.ms, 600000);
    assert_int_equal(c->proxy.pool.server_lifetime.ms, 3600000);
    assert_int_equal(c->proxy.pool.client_login_timeout.ms, 60000);
    assert_int_equal(c->update_strategy, SPEC_UPDATE_REPLICAS_FIRST_PRIMARY_LAST);
    assert_int_equal(c->update_strategy_at.line, 0);
    assert_int_equal(c->engine_at.line, 4);

    r = get(&s, SPEC_KIND_CLUSTER, "default", "r");
    assert_int_equal(r->u.cluster.redis.maxmemory.v, (100ull << 20) / 10 * 8);
    assert_false(r->u.cluster.redis.maxmemory.set);
    assert_string_equal(r->u.cluster.redis.maxmemory_policy.v, "volatile-lru");
    assert_int_equal(r->u.cluster.proxy.ro_port.v, 0); /* no port, no roPort */

    r = get(&s, SPEC_KIND_USER, "default", "u");
    assert_int_equal(r->u.user.max_user_connections.v, -1);
    assert_string_equal(r->u.user.host.v, "%");
    assert_false(r->u.user.password_secret_key_ref.set);
    r = get(&s, SPEC_KIND_DATABASE, "default", "db");
    assert_string_equal(r->u.database.charset.v, "utf8mb4");
    assert_false(r->u.database.charset.set);
    r = get(&s, SPEC_KIND_CREDENTIAL_ROLE, "default", "cr");
    assert_int_equal(r->u.credential_role.default_ttl.ms, 3600000);
    assert_int_equal(r->u.credential_role.max_ttl.ms, 86400000);
    r = get(&s, SPEC_KIND_SECRET, "default", "s");
    assert_int_equal(r->u.secret.generate_length.v, 32);
    spec_set_free(&s);
    spec_diags_free(&d);
}

static void test_structure_limits(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    /* 100 nested lists: deeper than 64 levels is an error, not a stack overflow. */
    char deep[512];
    int o = snprintf(deep, sizeof(deep),
                     "apiVersion: dbplane/v1\nkind: Tenant\nmetadata: {name: t}\nx: ");
    for (int i = 0; i < 100; i++)
        deep[o++] = '[';
    for (int i = 0; i < 100; i++)
        deep[o++] = ']';
    deep[o++] = '\n';
    deep[o] = '\0';
    assert_int_equal(parse_str(&s, &d, deep), 2);
    assert_non_null(strstr(d.v[0].msg, "nesting deeper than 64 levels"));
    assert_non_null(strstr(d.v[1].msg, "unknown field 'x'"));
    spec_diags_free(&d);
    spec_diags_init(&d);
    /* Aliases are refused; a NUL inside a string is refused. */
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Tenant\nmetadata: {name: t2}\n"
                               "spec: {plan: &p gold, x: *p}\n"),
                     2);
    assert_non_null(strstr(d.v[0].msg, "aliases"));
    assert_int_equal(d.v[0].line, 4);
    assert_int_equal(d.v[0].col, 26);
    spec_diags_free(&d);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Tenant\nmetadata: {name: t3}\n"
                               "spec: {plan: \"a\\0b\"}\n"),
                     1);
    assert_non_null(strstr(d.v[0].msg, "NUL"));
    spec_diags_free(&d);
    spec_diags_init(&d);
    /* A document that is not a mapping; a complex key; invalid UTF-8. */
    assert_int_equal(parse_str(&s, &d, "- a\n- b\n"), 1);
    assert_non_null(strstr(d.v[0].msg, "expected a mapping, got a list"));
    assert_int_equal(parse_str(&s, &d, "? [a]\n: b\n"), 3); /* + no apiVersion, no kind */
    assert_int_equal(parse_str(&s, &d, "a: \xc3\x28\n"), 1);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* The json member: types follow YAML's core schema, quoted scalars stay strings. */
static void test_json_types(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                               "spec:\n  engine: postgresql\n  version: \"15\"\n  instances: 2\n"
                               "  memory: 1Gi\n  failover: {auto: true, autoRejoin: no}\n"
                               "  config: {a: 1.5, b: ~, c: 'true', d: -3, e: '7', f: 007, "
                               "g: +5, h: True, i: 0}\n"),
                     0);
    const json_t *j = s.items[0]->json;
    const json_t *sp = json_object_get(j, "spec");
    assert_true(json_is_string(json_object_get(sp, "version")));
    assert_true(json_is_integer(json_object_get(sp, "instances")));
    assert_int_equal(json_integer_value(json_object_get(sp, "instances")), 2);
    assert_string_equal(json_string_value(json_object_get(sp, "memory")), "1Gi");
    const json_t *fo = json_object_get(sp, "failover");
    assert_true(json_is_true(json_object_get(fo, "auto")));
    assert_true(json_is_string(json_object_get(fo, "autoRejoin")));
    const json_t *cf = json_object_get(sp, "config");
    assert_true(json_is_string(json_object_get(cf, "a")));
    assert_true(json_is_null(json_object_get(cf, "b")));
    assert_true(json_is_string(json_object_get(cf, "c")));
    assert_int_equal(json_integer_value(json_object_get(cf, "d")), -3);
    assert_true(json_is_string(json_object_get(cf, "e")));
    /* non-canonical ints and booleans stay text, so the round trip keeps them verbatim */
    assert_string_equal(json_string_value(json_object_get(cf, "f")), "007");
    assert_string_equal(json_string_value(json_object_get(cf, "g")), "+5");
    assert_string_equal(json_string_value(json_object_get(cf, "h")), "True");
    assert_int_equal(json_integer_value(json_object_get(cf, "i")), 0);
    char *text = json_dumps(s.items[0]->json, 0);
    spec_set_t s2;
    spec_set_init(&s2);
    assert_int_equal(parse_str(&s2, &d, text), 0);
    free(text);
    assert_true(json_equal(s.items[0]->json, s2.items[0]->json));
    const spec_map_t *m1 = &s.items[0]->u.cluster.config, *m2 = &s2.items[0]->u.cluster.config;
    assert_int_equal(m1->n, m2->n);
    for (size_t i = 0; i < m1->n; i++)
        assert_string_equal(m1->v[i].value, m2->v[i].value);
    spec_set_free(&s2);
    assert_false(s.items[0]->u.cluster.failover.auto_rejoin.v); /* "no" is a boolean */
    assert_string_equal(s.items[0]->u.cluster.config.v[0].value, "1.5");
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* Re-parsing json_dumps() of each resource yields the same resource. */
static void test_json_round_trip(void **state)
{
    (void)state;
    const char *files[] = {"homelab.yaml", "wecare.yaml", "restore.yaml"};
    for (size_t f = 0; f < 3; f++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", reference_dir(), files[f]);
        spec_set_t a, b;
        spec_diags_t d;
        load(&a, &d, path, false);
        spec_set_init(&b);
        for (size_t i = 0; i < a.n; i++) {
            char *text = json_dumps(a.items[i]->json, i % 2 ? JSON_INDENT(2) : JSON_COMPACT);
            assert_non_null(text);
            assert_int_equal(spec_parse_buffer(&b, "<json>", text, strlen(text), &d), 0);
            free(text);
        }
        assert_int_equal(d.n, 0);
        assert_int_equal(b.n, a.n);
        for (size_t i = 0; i < a.n; i++) {
            const spec_resource_t *x = a.items[i], *y = b.items[i];
            assert_int_equal(x->kind, y->kind);
            assert_string_equal(x->name.v, y->name.v);
            assert_string_equal(x->tenant.v, y->tenant.v);
            assert_true(json_equal(x->json, y->json));
            if (x->kind == SPEC_KIND_CLUSTER) {
                const spec_cluster_t *p = &x->u.cluster, *q = &y->u.cluster;
                assert_int_equal(p->engine, q->engine);
                assert_string_equal(p->version.v, q->version.v);
                assert_int_equal(p->instances.v, q->instances.v);
                assert_int_equal(p->memory.v, q->memory.v);
                assert_int_equal(p->storage.v, q->storage.v);
                assert_int_equal(p->proxy.port.v, q->proxy.port.v);
                assert_int_equal(p->proxy.read_write_split.v, q->proxy.read_write_split.v);
                assert_int_equal(p->failover.interval.ms, q->failover.interval.ms);
                assert_int_equal(p->redis.maxmemory.v, q->redis.maxmemory.v);
                assert_int_equal(p->config.n, q->config.n);
                for (size_t k = 0; k < p->config.n; k++)
                    assert_string_equal(p->config.v[k].value, q->config.v[k].value);
            } else if (x->kind == SPEC_KIND_BACKUP) {
                assert_memory_equal(&x->u.backup.cron, &y->u.backup.cron, sizeof(spec_cron_t));
                assert_int_equal(x->u.backup.retention.ms, y->u.backup.retention.ms);
            } else if (x->kind == SPEC_KIND_RESTORE) {
                assert_int_equal(x->u.restore.point_in_time_ts, y->u.restore.point_in_time_ts);
            } else if (x->kind == SPEC_KIND_GRANT) {
                assert_int_equal(x->u.grant.privileges.n, y->u.grant.privileges.n);
            }
        }
        spec_set_free(&a);
        spec_set_free(&b);
        spec_diags_free(&d);
    }
}

/* --- sets, restore overrides, printing ---------------------------------------------------- */

static void test_known_set_and_merge(void **state)
{
    (void)state;
    spec_set_t known, set;
    spec_diags_t d;
    spec_set_init(&known);
    spec_set_init(&set);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&known, &d,
                               "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                               "spec: {engine: postgresql, proxy: {port: 7000}}\n---\n"
                               "apiVersion: dbplane/v1\nkind: User\nmetadata: {name: app}\n"
                               "spec: {cluster: pg, username: app}\n"),
                     0);
    /* A partial file: its Database resolves against `known`; a new cluster reusing the
     * known port is caught; redeclaring pg in the set shadows the known one. */
    assert_int_equal(parse_str(&set, &d,
                               "apiVersion: dbplane/v1\nkind: Database\nmetadata: {name: app}\n"
                               "spec: {cluster: pg, name: app, owner: app}\n---\n"
                               "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg2}\n"
                               "spec: {engine: postgresql, proxy: {port: 7000}}\n"),
                     0);
    assert_int_equal(spec_validate(&set, &known, &d), DBP_EINVAL);
    assert_int_equal(d.errors, 1);
    assert_non_null(strstr(d.v[0].msg, "proxy port 7000 is already used by Cluster/pg"));
    assert_int_equal(d.v[0].line, 9);
    spec_diags_free(&d);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&set, &d,
                               "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                               "spec: {engine: postgresql, proxy: {port: 7001}}\n"),
                     0);
    assert_int_equal(spec_validate(&set, &known, &d), 0);

    /* Merge: pg replaced, others moved; `set` ends up empty. */
    size_t files = known.nfiles + set.nfiles;
    spec_set_merge(&known, &set);
    assert_int_equal(set.n, 0);
    assert_int_equal(known.n, 4);
    assert_int_equal(known.nfiles, files);
    const spec_resource_t *pg = get(&known, SPEC_KIND_CLUSTER, "default", "pg");
    assert_int_equal(pg->u.cluster.proxy.port.v, 7001);
    assert_non_null(pg->u.cluster.engine_at.file); /* file names moved with the resources */
    assert_string_equal(pg->u.cluster.engine_at.file, "<test>");
    spec_set_free(&known);
    spec_set_free(&set);
    spec_diags_free(&d);
}

/* Backup.spec.pitr and Cluster.spec.bootstrapFrom: a pitr Backup is physical, one per
 * cluster; bootstrapFrom names a physical Backup of the same cluster. */
static void test_pitr_and_bootstrap(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    const char *base = "apiVersion: dbplane/v1\nkind: BackupStore\nmetadata: {name: st}\n"
                       "spec: {posix: {path: /b}}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                       "spec: {engine: postgresql, bootstrapFrom: {backup: phys}}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: other}\n"
                       "spec: {engine: postgresql, bootstrapFrom: {backup: dump}}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: phys}\n"
                       "spec: {cluster: pg, type: physical, store: st, pitr: true}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: phys2}\n"
                       "spec: {cluster: pg, type: physical, store: st, pitr: true}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: dump}\n"
                       "spec: {cluster: pg, type: logical, store: st, pitr: true}\n";
    assert_int_equal(parse_str(&s, &d, base), 0);
    const spec_resource_t *b = get(&s, SPEC_KIND_BACKUP, "default", "phys");
    assert_true(b->u.backup.pitr.v);
    const spec_resource_t *c = get(&s, SPEC_KIND_CLUSTER, "default", "pg");
    assert_string_equal(c->u.cluster.bootstrap_backup.v, "phys");
    assert_int_equal(spec_validate(&s, NULL, &d), DBP_EINVAL);
    assert_int_equal(d.errors, 3);
    bool two = false, logical = false, boot = false;
    for (size_t i = 0; i < d.n; i++) {
        two |= strstr(d.v[i].msg, "already archives through Backup 'phys'") != NULL &&
               strcmp(d.v[i].path, "Backup/phys2: spec.pitr") == 0;
        logical |= strstr(d.v[i].msg, "pitr needs a physical Backup") != NULL;
        boot |= strcmp(d.v[i].path, "Cluster/other: spec.bootstrapFrom.backup") == 0;
    }
    assert_true(two && logical && boot);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* Backup.spec.archiveQueueMax: 4Gi by default; under one 16 MiB segment is an error; set
 * on a Backup without pitr it is a warning (it bounds nothing there). */
static void test_archive_queue_max(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    const char *text = "apiVersion: dbplane/v1\nkind: BackupStore\nmetadata: {name: st}\n"
                       "spec: {posix: {path: /b}}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                       "spec: {engine: postgresql}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg2}\n"
                       "spec: {engine: postgresql}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: deflt}\n"
                       "spec: {cluster: pg, type: physical, store: st, pitr: true}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: small}\n"
                       "spec: {cluster: pg2, type: physical, store: st, pitr: true, "
                       "archiveQueueMax: 8Mi}\n---\n"
                       "apiVersion: dbplane/v1\nkind: Backup\nmetadata: {name: nopitr}\n"
                       "spec: {cluster: pg, type: logical, store: st, archiveQueueMax: 1Gi}\n";
    assert_int_equal(parse_str(&s, &d, text), 0);
    const spec_resource_t *b = get(&s, SPEC_KIND_BACKUP, "default", "deflt");
    assert_true(b->u.backup.archive_queue_max.v == 4ULL << 30);
    assert_false(b->u.backup.archive_queue_max.set);
    assert_int_equal(spec_validate(&s, NULL, &d), DBP_EINVAL);
    assert_int_equal(d.errors, 1);
    bool small = false, nopitr = false;
    for (size_t i = 0; i < d.n; i++) {
        small |= strcmp(d.v[i].path, "Backup/small: spec.archiveQueueMax") == 0 &&
                 d.v[i].severity == SPEC_ERROR;
        nopitr |= strcmp(d.v[i].path, "Backup/nopitr: spec.archiveQueueMax") == 0 &&
                  d.v[i].severity == SPEC_WARNING;
    }
    assert_true(small && nopitr);
    spec_set_free(&s);
    spec_diags_free(&d);
}

/* Cluster.spec.proxy.serverTLS and Database.spec.maxConnections: values, defaults and the
 * PostgreSQL-only rules. */
static void test_server_tls_and_db_cap(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    const char *ok =
        "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
        "spec: {engine: postgresql, proxy: {port: 7000, serverTLS: verify-full}}\n---\n"
        "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg2}\n"
        "spec: {engine: postgresql}\n---\n"
        "apiVersion: dbplane/v1\nkind: Database\nmetadata: {name: a}\n"
        "spec: {cluster: pg, name: a, maxConnections: 5}\n---\n"
        "apiVersion: dbplane/v1\nkind: Database\nmetadata: {name: b}\n"
        "spec: {cluster: pg, name: b}\n";
    assert_int_equal(parse_str(&s, &d, ok), 0);
    assert_int_equal(spec_validate(&s, NULL, &d), 0);
    const spec_resource_t *c = get(&s, SPEC_KIND_CLUSTER, "default", "pg");
    assert_int_equal(c->u.cluster.proxy.server_tls, SPEC_SERVER_TLS_VERIFY_FULL);
    assert_true(c->u.cluster.proxy.server_tls_set);
    c = get(&s, SPEC_KIND_CLUSTER, "default", "pg2");
    assert_int_equal(c->u.cluster.proxy.server_tls, SPEC_SERVER_TLS_DISABLE);
    assert_false(c->u.cluster.proxy.server_tls_set);
    assert_int_equal(get(&s, SPEC_KIND_DATABASE, "default", "a")->u.database.max_connections.v, 5);
    const spec_resource_t *b = get(&s, SPEC_KIND_DATABASE, "default", "b");
    assert_int_equal(b->u.database.max_connections.v, -1);
    assert_false(b->u.database.max_connections.set);
    spec_set_free(&s);
    spec_diags_free(&d);

    spec_set_init(&s);
    spec_diags_init(&d);
    const char *bad = "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: pg}\n"
                      "spec: {engine: postgresql, proxy: {serverTLS: verify-ca}}\n---\n"
                      "apiVersion: dbplane/v1\nkind: Cluster\nmetadata: {name: rd}\n"
                      "spec: {engine: redis, proxy: {serverTLS: require}}\n---\n"
                      "apiVersion: dbplane/v1\nkind: Database\nmetadata: {name: m}\n"
                      "spec: {cluster: rd, name: m, maxConnections: 3}\n---\n"
                      "apiVersion: dbplane/v1\nkind: Database\nmetadata: {name: w}\n"
                      "spec: {cluster: pg, name: w, maxConnections: 3}\n";
    assert_int_equal(parse_str(&s, &d, bad), 2); /* the bad value, redis serverTLS */
    assert_int_equal(spec_validate(&s, NULL, &d), DBP_EINVAL);
    bool mode = false, engine = false, dbengine = false, noproxy = false;
    for (size_t i = 0; i < d.n; i++) {
        mode |= strcmp(d.v[i].path, "Cluster/pg: spec.proxy.serverTLS") == 0 && d.v[i].line == 4 &&
                strstr(d.v[i].msg, "verify-ca") != NULL;
        engine |= strcmp(d.v[i].path, "Cluster/rd: spec.proxy.serverTLS") == 0 &&
                  strstr(d.v[i].msg, "only to engine postgresql") != NULL;
        dbengine |= strcmp(d.v[i].path, "Database/m: spec.maxConnections") == 0 &&
                    d.v[i].severity == SPEC_ERROR;
        noproxy |= strcmp(d.v[i].path, "Database/w: spec.maxConnections") == 0 &&
                   d.v[i].severity == SPEC_WARNING;
    }
    if (!(mode && engine && dbengine && noproxy))
        dump(&d);
    assert_true(mode && engine && dbengine && noproxy);
    spec_set_free(&s);
    spec_diags_free(&d);
}

static void test_restore_target_spec(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    spec_set_init(&s);
    spec_diags_init(&d);
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Restore\nmetadata: {name: r}\n"
                               "spec:\n  source: {store: local, path: run-1}\n"
                               "  target:\n    cluster: pg-copy\n"
                               "    spec: {instances: 1, memory: 256Mi, proxy: {port: 17000}}\n"
                               "  pointInTime: 2026-11-22T05:30:00+02:00\n  inPlace: false\n"),
                     0);
    const spec_restore_t *r = &s.items[0]->u.restore;
    assert_string_equal(r->source_store.v, "local");
    assert_string_equal(r->source_path.v, "run-1");
    assert_non_null(r->target_spec);
    assert_int_equal(r->target_spec->engine, SPEC_ENGINE_NONE); /* overrides: not required */
    assert_true(r->target_spec->instances.set);
    assert_int_equal(r->target_spec->memory.v, 256ull << 20);
    assert_false(r->target_spec->storage.set);
    assert_int_equal(r->target_spec->proxy.ro_port.v, 17001);
    assert_int_equal(r->point_in_time_ts, 1795318200);
    assert_false(r->in_place.v);
    /* Errors inside target.spec carry the nested path. */
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Restore\nmetadata: {name: r2}\n"
                               "spec:\n  backup: b\n  target:\n    cluster: c\n"
                               "    spec: {instances: 0}\n  pointInTime: yesterday\n"),
                     2);
    assert_string_equal(d.v[0].path, "Restore/r2: spec.target.spec.instances");
    assert_int_equal(d.v[0].line, 8);
    assert_int_equal(d.v[0].col, 23);
    assert_string_equal(d.v[1].path, "Restore/r2: spec.pointInTime");
    /* Neither backup nor source; both sql and sqlFile; BackupStore without a kind. */
    assert_int_equal(parse_str(&s, &d,
                               "apiVersion: dbplane/v1\nkind: Restore\nmetadata: {name: r3}\n"
                               "spec: {target: {cluster: c}}\n---\n"
                               "apiVersion: dbplane/v1\nkind: SqlJob\nmetadata: {name: j}\n"
                               "spec: {cluster: c, sql: x, sqlFile: y.sql}\n---\n"
                               "apiVersion: dbplane/v1\nkind: BackupStore\nmetadata: {name: b}\n"
                               "spec: {}\n"),
                     3);
    assert_non_null(strstr(d.v[2].msg, "a Restore needs backup or source"));
    assert_non_null(strstr(d.v[3].msg, "either sql or sqlFile"));
    assert_non_null(strstr(d.v[4].msg, "a BackupStore needs posix or s3"));
    spec_set_free(&s);
    spec_diags_free(&d);
}

static void test_print_format(void **state)
{
    (void)state;
    spec_set_t s;
    spec_diags_t d;
    load(&s, &d, FIXTURES "unknown_field.yaml", true);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    spec_diags_print(&d, out);
    fclose(out);
    assert_string_equal(buf, "fixtures/spec/unknown_field.yaml:9:3: error: Cluster/pg: "
                             "spec.instnaces: unknown field 'instnaces' (hint: did you mean "
                             "'instances'?)\n");
    free(buf);
    spec_set_free(&s);
    spec_diags_free(&d);
    /* An unreadable file is DBP_EIO with a diagnostic but no position. */
    spec_set_init(&s);
    spec_diags_init(&d);
    assert_int_equal(spec_parse_file(&s, FIXTURES "does-not-exist.yaml", &d), DBP_EIO);
    assert_int_equal(d.errors, 1);
    assert_int_equal(d.v[0].line, 0);
    spec_set_free(&s);
    spec_diags_free(&d);
}

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int kind;
    } cases[] = {
        {"Cluster", SPEC_KIND_CLUSTER},
        {"clusters", SPEC_KIND_CLUSTER},
        {"cluster", SPEC_KIND_CLUSTER},
        {"BackupStore", SPEC_KIND_BACKUP_STORE},
        {"backupstores", SPEC_KIND_BACKUP_STORE},
        {"backup-store", SPEC_KIND_BACKUP_STORE},
        {"sqljobs", SPEC_KIND_SQL_JOB},
        {"credential-roles", SPEC_KIND_CREDENTIAL_ROLE},
        {"Tenant", SPEC_KIND_TENANT},
        {"CLUSTER", -1},
        {"Clusters", -1},
        {"clusterss", -1},
        {"", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (spec_kind_parse(cases[i].in) != cases[i].kind)
            fail_msg("spec_kind_parse(\"%s\") = %d, want %d", cases[i].in,
                     spec_kind_parse(cases[i].in), cases[i].kind);
    for (int k = 0; k < SPEC_KIND_COUNT; k++)
        assert_int_equal(spec_kind_parse(spec_kind_str((spec_kind_t)k)), k);
    assert_string_equal(spec_engine_str(SPEC_ENGINE_MARIADB), "mariadb");
    assert_string_equal(spec_engine_str(SPEC_ENGINE_NONE), "none");
    assert_string_equal(spec_severity_str(SPEC_WARNING), "warning");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_files_valid),
        cmocka_unit_test(test_reference_restore_with_known),
        cmocka_unit_test(test_reference_values),
        cmocka_unit_test(test_error_fixtures),
        cmocka_unit_test(test_warning_is_not_error),
        cmocka_unit_test(test_collects_all_errors),
        cmocka_unit_test(test_empty_documents_skipped),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_structure_limits),
        cmocka_unit_test(test_json_types),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_known_set_and_merge),
        cmocka_unit_test(test_restore_target_spec),
        cmocka_unit_test(test_pitr_and_bootstrap),
        cmocka_unit_test(test_archive_queue_max),
        cmocka_unit_test(test_server_tls_and_db_cap),
        cmocka_unit_test(test_print_format),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
