/*
 * spec.c: from YAML documents to typed resources. Each kind is described by a declarative
 * table of fields (YAML name, type, offset into the kind's struct, flags such as required,
 * DNS label or upper-case, allowed values, bounds and default); one generic walker uses
 * these tables to parse, to fill defaults, and to free. Every field records whether and
 * where (file:line:col) it was set; objects record the position of their key, scalars the
 * position of their value. A few rules that span fields of one resource ("exactly one of
 * posix or s3", "pool only for postgresql") follow the tables as small per-kind functions.
 *
 * Problems never stop the parse: each becomes a diagnostic with the resource, the field
 * path and, where one helps, a hint ("did you mean 'instances'?"). Checks that need other
 * resources (references, ports, quotas) live in validate.c.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "spec/spec_internal.h"

/* --- field tables ---------------------------------------------------------------------- */

/* How a field's YAML value is read and stored. */
typedef enum ftype {
    FT_END = 0,
    FT_IGNORE,  /* handled elsewhere (apiVersion, kind, metadata) */
    FT_STR,     /* spec_str_t */
    FT_INT,     /* spec_int_t */
    FT_BOOL,    /* spec_bool_t */
    FT_BYTES,   /* spec_bytes_t: a quantity */
    FT_DUR,     /* spec_dur_t: a duration */
    FT_LIST,    /* spec_strlist_t */
    FT_MAP,     /* spec_map_t */
    FT_ENUM,    /* int holding base + index into vals */
    FT_OBJ,     /* a nested mapping parsed with `sub` at base + off */
    FT_CLUSTER, /* spec_cluster_t *: a heap Cluster spec (Restore target.spec) */
} ftype_t;

enum {
    F_REQ = 1 << 0,      /* must be present (unless parsing overrides) */
    F_DNS = 1 << 1,      /* string: a DNS label */
    F_UPPER = 1 << 2,    /* list: upper-case items, collapse blanks (privileges) */
    F_NONEMPTY = 1 << 3, /* string or list: not empty */
    F_CRON = 1 << 4,     /* string: cron expression parsed into the spec_cron_t at aux */
    F_TIME = 1 << 5,     /* string: RFC 3339 parsed into the time_t at aux */
    F_CHOICE = 1 << 6,   /* string: one of vals */
    F_RANGE = 1 << 7,    /* int: min..max */
};

/* One field of a table. Offsets are relative to the base the table is applied to;
 * set_off/at_off/aux_off are stored plus one, so 0 means "none". */
typedef struct sfield {
    const char *name;
    ftype_t type;
    unsigned flags;
    size_t off;
    size_t set_off; /* FT_ENUM/FT_OBJ: bool "set" */
    size_t at_off;  /* FT_ENUM/FT_OBJ: spec_mark_t */
    size_t aux_off; /* F_CRON / F_TIME target */
    const struct sfield *sub;
    const char *const *vals; /* FT_ENUM / F_CHOICE, NULL-terminated */
    int ebase;               /* FT_ENUM: value stored for vals[0] */
    const char *def;         /* default, as YAML text */
    int64_t min, max;
} sfield_t;

#define OFF1(T, m) (offsetof(T, m) + 1)
#define FIELD(nm, ty, T, m, fl, d)                                                                 \
    {                                                                                              \
        .name = nm, .type = ty, .flags = fl, .off = offsetof(T, m), .def = d                       \
    }
#define F_STRF(nm, T, m, fl, d) FIELD(nm, FT_STR, T, m, fl, d)
#define F_INTF(nm, T, m, fl, lo, hi, d)                                                            \
    {                                                                                              \
        .name = nm, .type = FT_INT, .flags = (fl) | F_RANGE, .off = offsetof(T, m), .def = d,      \
        .min = lo, .max = hi                                                                       \
    }
#define F_BOOLF(nm, T, m, fl, d) FIELD(nm, FT_BOOL, T, m, fl, d)
#define F_BYTESF(nm, T, m, fl, d) FIELD(nm, FT_BYTES, T, m, fl, d)
#define F_DURF(nm, T, m, fl, d) FIELD(nm, FT_DUR, T, m, fl, d)
#define F_LISTF(nm, T, m, fl) FIELD(nm, FT_LIST, T, m, fl, NULL)
#define F_MAPF(nm, T, m, fl) FIELD(nm, FT_MAP, T, m, fl, NULL)
#define F_CHOICEF(nm, T, m, fl, v)                                                                 \
    {                                                                                              \
        .name = nm, .type = FT_STR, .flags = (fl) | F_CHOICE, .off = offsetof(T, m), .vals = v     \
    }
#define F_CRONF(nm, T, m, c)                                                                       \
    {                                                                                              \
        .name = nm, .type = FT_STR, .flags = F_CRON, .off = offsetof(T, m), .aux_off = OFF1(T, c)  \
    }
#define F_TIMEF(nm, T, m, t)                                                                       \
    {                                                                                              \
        .name = nm, .type = FT_STR, .flags = F_TIME, .off = offsetof(T, m), .aux_off = OFF1(T, t)  \
    }
/* An enum stored as int at m, with its position at `atm` and, if given, a flag at `setm`. */
#define F_ENUMF(nm, T, m, atm, v, base, fl, d)                                                     \
    {                                                                                              \
        .name = nm, .type = FT_ENUM, .flags = fl, .off = offsetof(T, m), .at_off = OFF1(T, atm),   \
        .vals = v, .ebase = base, .def = d                                                         \
    }
#define F_ENUMSF(nm, T, m, setm, atm, v, base, fl, d)                                              \
    {                                                                                              \
        .name = nm, .type = FT_ENUM, .flags = fl, .off = offsetof(T, m), .set_off = OFF1(T, setm), \
        .at_off = OFF1(T, atm), .vals = v, .ebase = base, .def = d                                 \
    }
/* A nested struct member m (with m.set and m.at), parsed with table s. */
#define F_OBJF(nm, T, m, s, fl)                                                                    \
    {                                                                                              \
        .name = nm, .type = FT_OBJ, .flags = fl, .off = offsetof(T, m), .set_off = OFF1(T, m.set), \
        .at_off = OFF1(T, m.at), .sub = s                                                          \
    }
/* A nested YAML mapping whose fields are stored flat in the same struct. */
#define F_GROUPF(nm, s, fl)                                                                        \
    {                                                                                              \
        .name = nm, .type = FT_OBJ, .flags = fl, .off = 0, .sub = s                                \
    }
#define F_SECREFF(nm, T, m, fl) F_OBJF(nm, T, m, secref_fields, fl)
#define F_IGNOREF(nm)                                                                              \
    {                                                                                              \
        .name = nm, .type = FT_IGNORE                                                              \
    }
#define F_ENDF                                                                                     \
    {                                                                                              \
        .name = NULL, .type = FT_END                                                               \
    }

static const char *const engine_vals[] = {"postgresql", "mariadb", "redis", NULL};
static const char *const repl_vals[] = {"async", "semi-sync", "sync", NULL};
static const char *const pool_vals[] = {"transaction", "session", "statement", NULL};
static const char *const server_tls_vals[] = {"disable", "prefer", "require", "verify-full", NULL};
static const char *const class_vals[] = {"cache", "session", "queue", NULL};
static const char *const update_vals[] = {"ReplicasFirstPrimaryLast", "AllAtOnce", NULL};
static const char *const btype_vals[] = {"logical", "physical", NULL};
static const char *const btarget_vals[] = {"PreferReplica", "Primary", "Replica", NULL};
static const char *const compression_vals[] = {"zstd", "gzip", "none", NULL};
static const char *const policy_vals[] = {"noeviction",      "allkeys-lru",  "allkeys-lfu",
                                          "allkeys-random",  "volatile-lru", "volatile-lfu",
                                          "volatile-random", "volatile-ttl", NULL};

static const sfield_t secref_fields[] = {
    F_STRF("name", spec_secret_ref_t, name, F_REQ | F_NONEMPTY, NULL),
    F_STRF("key", spec_secret_ref_t, key, F_REQ | F_NONEMPTY, NULL),
    F_ENDF,
};

static const sfield_t pool_fields[] = {
    F_ENUMSF("mode", spec_pool_t, mode, mode_set, mode_at, pool_vals, 0, 0, "transaction"),
    F_INTF("size", spec_pool_t, size, 0, 1, 100000, "20"),
    F_INTF("minSize", spec_pool_t, min_size, 0, 0, 100000, "0"),
    F_INTF("reserveSize", spec_pool_t, reserve_size, 0, 0, 100000, "0"),
    F_INTF("maxClientConnections", spec_pool_t, max_client_connections, 0, 1, 1000000, "1000"),
    F_DURF("queryWaitTimeout", spec_pool_t, query_wait_timeout, 0, "120s"),
    F_DURF("idleInTransactionTimeout", spec_pool_t, idle_in_transaction_timeout, 0, "0s"),
    F_DURF("serverIdleTimeout", spec_pool_t, server_idle_timeout, 0, "600s"),
    F_DURF("serverLifetime", spec_pool_t, server_lifetime, 0, "3600s"),
    F_DURF("clientLoginTimeout", spec_pool_t, client_login_timeout, 0, "60s"),
    F_ENDF,
};

static const sfield_t proxy_fields[] = {
    F_INTF("port", spec_proxy_t, port, 0, 1, 65535, NULL),
    F_INTF("roPort", spec_proxy_t, ro_port, 0, 1, 65535, NULL),
    F_STRF("address", spec_proxy_t, address, F_NONEMPTY, "127.0.0.1"),
    F_BOOLF("readWriteSplit", spec_proxy_t, read_write_split, 0, "false"),
    F_DURF("keepalive", spec_proxy_t, keepalive, 0, NULL),
    F_ENUMSF("serverTLS", spec_proxy_t, server_tls, server_tls_set, server_tls_at, server_tls_vals,
             0, 0, "disable"),
    F_OBJF("pool", spec_proxy_t, pool, pool_fields, 0),
    F_ENDF,
};

static const sfield_t replication_fields[] = {
    F_ENUMSF("mode", spec_replication_t, mode, mode_set, mode_at, repl_vals, 0, 0, "async"),
    F_BOOLF("gtidStrictMode", spec_replication_t, gtid_strict_mode, 0, "true"),
    F_ENDF,
};

static const sfield_t failover_fields[] = {
    F_BOOLF("auto", spec_failover_t, auto_, 0, "true"),
    F_DURF("interval", spec_failover_t, interval, 0, "1s"),
    F_INTF("failcount", spec_failover_t, failcount, 0, 1, 1000, "3"),
    F_BYTESF("maxLag", spec_failover_t, max_lag, 0, "16Mi"),
    F_BOOLF("autoRejoin", spec_failover_t, auto_rejoin, 0, "true"),
    F_ENDF,
};

static const sfield_t redis_fields[] = {
    F_ENUMSF("class", spec_redis_t, class_, class_set, class_at, class_vals, 1, 0, NULL),
    F_BYTESF("maxmemory", spec_redis_t, maxmemory, 0, NULL),
    F_CHOICEF("maxmemoryPolicy", spec_redis_t, maxmemory_policy, 0, policy_vals),
    F_ENDF,
};

static const sfield_t cluster_bootstrap_fields[] = {
    F_STRF("backup", spec_cluster_t, bootstrap_backup, F_REQ | F_NONEMPTY, NULL),
    F_ENDF,
};

static const sfield_t cluster_fields[] = {
    F_ENUMF("engine", spec_cluster_t, engine, engine_at, engine_vals, 1, F_REQ, NULL),
    F_STRF("version", spec_cluster_t, version, F_NONEMPTY, NULL),
    F_INTF("instances", spec_cluster_t, instances, 0, 1, 9, "1"),
    F_BYTESF("memory", spec_cluster_t, memory, 0, NULL),
    F_BYTESF("storage", spec_cluster_t, storage, 0, NULL),
    F_MAPF("config", spec_cluster_t, config, 0),
    F_OBJF("replication", spec_cluster_t, replication, replication_fields, 0),
    F_OBJF("proxy", spec_cluster_t, proxy, proxy_fields, 0),
    F_OBJF("failover", spec_cluster_t, failover, failover_fields, 0),
    F_ENUMF("updateStrategy", spec_cluster_t, update_strategy, update_strategy_at, update_vals, 0,
            0, "ReplicasFirstPrimaryLast"),
    F_OBJF("redis", spec_cluster_t, redis, redis_fields, 0),
    F_GROUPF("bootstrapFrom", cluster_bootstrap_fields, 0),
    F_ENDF,
};

static const sfield_t database_fields[] = {
    F_STRF("cluster", spec_database_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_STRF("name", spec_database_t, name, F_REQ | F_NONEMPTY, NULL),
    F_STRF("owner", spec_database_t, owner, F_NONEMPTY, NULL),
    F_STRF("charset", spec_database_t, charset, F_NONEMPTY, "utf8mb4"),
    F_STRF("collation", spec_database_t, collation, F_NONEMPTY, NULL),
    F_INTF("maxConnections", spec_database_t, max_connections, 0, -1, 1000000, "-1"),
    F_ENDF,
};

static const sfield_t user_rotation_fields[] = {
    F_DURF("period", spec_user_t, rotation_period, F_REQ, NULL),
    F_ENDF,
};

static const sfield_t user_fields[] = {
    F_STRF("cluster", spec_user_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_STRF("username", spec_user_t, username, F_REQ | F_NONEMPTY, NULL),
    F_SECREFF("passwordSecretKeyRef", spec_user_t, password_secret_key_ref, 0),
    F_INTF("maxUserConnections", spec_user_t, max_user_connections, 0, -1, 1000000, "-1"),
    F_GROUPF("rotation", user_rotation_fields, 0),
    F_STRF("host", spec_user_t, host, F_NONEMPTY, "%"),
    F_ENDF,
};

static const sfield_t grant_fields[] = {
    F_STRF("cluster", spec_grant_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_STRF("username", spec_grant_t, username, F_REQ | F_NONEMPTY, NULL),
    F_STRF("database", spec_grant_t, database, F_REQ | F_NONEMPTY, NULL),
    F_LISTF("privileges", spec_grant_t, privileges, F_REQ | F_UPPER | F_NONEMPTY),
    F_STRF("table", spec_grant_t, table, F_NONEMPTY, NULL),
    F_BOOLF("grantOption", spec_grant_t, grant_option, 0, "false"),
    F_ENDF,
};

static const sfield_t secret_generate_fields[] = {
    F_LISTF("keys", spec_secret_t, generate_keys, F_REQ | F_NONEMPTY),
    F_INTF("length", spec_secret_t, generate_length, 0, 8, 256, "32"),
    F_ENDF,
};

static const sfield_t bstore_posix_fields[] = {
    F_STRF("path", spec_backup_store_t, posix_path, F_REQ | F_NONEMPTY, NULL),
    F_ENDF,
};

static const sfield_t bstore_s3_fields[] = {
    F_STRF("endpoint", spec_backup_store_t, s3_endpoint, F_NONEMPTY, NULL),
    F_STRF("bucket", spec_backup_store_t, s3_bucket, F_REQ | F_NONEMPTY, NULL),
    F_STRF("prefix", spec_backup_store_t, s3_prefix, 0, NULL),
    F_STRF("region", spec_backup_store_t, s3_region, F_NONEMPTY, NULL),
    F_SECREFF("accessKeyIdSecretKeyRef", spec_backup_store_t, s3_access_key_id, 0),
    F_SECREFF("secretAccessKeySecretKeyRef", spec_backup_store_t, s3_secret_access_key, 0),
    F_BOOLF("forcePathStyle", spec_backup_store_t, s3_force_path_style, 0, "true"),
    F_ENDF,
};

static const sfield_t bstore_fields[] = {
    F_GROUPF("posix", bstore_posix_fields, 0),
    {.name = "s3",
     .type = FT_OBJ,
     .off = 0,
     .set_off = OFF1(spec_backup_store_t, is_s3),
     .sub = bstore_s3_fields},
    F_ENDF,
};

static const sfield_t backup_encryption_fields[] = {
    F_SECREFF("secretKeyRef", spec_backup_t, encryption_key, F_REQ),
    F_ENDF,
};

static const sfield_t backup_fields[] = {
    F_STRF("cluster", spec_backup_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_ENUMF("type", spec_backup_t, type, type_at, btype_vals, 0, F_REQ, NULL),
    F_CRONF("schedule", spec_backup_t, schedule, cron),
    F_DURF("retention", spec_backup_t, retention, 0, NULL),
    F_INTF("retentionCount", spec_backup_t, retention_count, 0, 1, 100000, NULL),
    F_STRF("store", spec_backup_t, store, F_REQ | F_NONEMPTY, NULL),
    F_STRF("prefix", spec_backup_t, prefix, 0, NULL),
    F_ENUMF("target", spec_backup_t, target, target_at, btarget_vals, 0, 0, "PreferReplica"),
    F_ENUMF("compression", spec_backup_t, compression, compression_at, compression_vals, 0, 0,
            "zstd"),
    F_LISTF("databases", spec_backup_t, databases, F_NONEMPTY),
    F_BOOLF("verify", spec_backup_t, verify, 0, NULL),
    F_GROUPF("encryption", backup_encryption_fields, 0),
    F_BOOLF("pitr", spec_backup_t, pitr, 0, "false"),
    F_BYTESF("archiveQueueMax", spec_backup_t, archive_queue_max, 0, "4Gi"),
    F_ENDF,
};

static const sfield_t restore_source_fields[] = {
    F_STRF("store", spec_restore_t, source_store, F_REQ | F_NONEMPTY, NULL),
    F_STRF("path", spec_restore_t, source_path, F_REQ | F_NONEMPTY, NULL),
    F_ENDF,
};

static const sfield_t restore_target_fields[] = {
    F_STRF("cluster", spec_restore_t, target_cluster, F_REQ | F_DNS, NULL),
    {.name = "spec", .type = FT_CLUSTER, .off = offsetof(spec_restore_t, target_spec)},
    F_ENDF,
};

static const sfield_t restore_fields[] = {
    F_STRF("backup", spec_restore_t, backup, F_NONEMPTY, NULL),
    F_GROUPF("source", restore_source_fields, 0),
    F_GROUPF("target", restore_target_fields, F_REQ),
    F_TIMEF("pointInTime", spec_restore_t, point_in_time, point_in_time_ts),
    F_BOOLF("inPlace", spec_restore_t, in_place, 0, "false"),
    F_ENDF,
};

static const sfield_t sql_job_fields[] = {
    F_STRF("cluster", spec_sql_job_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_STRF("database", spec_sql_job_t, database, F_NONEMPTY, NULL),
    F_STRF("username", spec_sql_job_t, username, F_NONEMPTY, NULL),
    F_STRF("sql", spec_sql_job_t, sql, F_NONEMPTY, NULL),
    F_STRF("sqlFile", spec_sql_job_t, sql_file, F_NONEMPTY, NULL),
    F_LISTF("dependsOn", spec_sql_job_t, depends_on, 0),
    F_ENDF,
};

static const sfield_t credential_role_fields[] = {
    F_STRF("cluster", spec_credential_role_t, cluster, F_REQ | F_NONEMPTY, NULL),
    F_LISTF("creationStatements", spec_credential_role_t, creation_statements, F_REQ | F_NONEMPTY),
    F_LISTF("revocationStatements", spec_credential_role_t, revocation_statements, 0),
    F_DURF("defaultTTL", spec_credential_role_t, default_ttl, 0, "1h"),
    F_DURF("maxTTL", spec_credential_role_t, max_ttl, 0, "24h"),
    F_ENDF,
};

static const sfield_t tenant_quota_fields[] = {
    F_INTF("clusters", spec_tenant_t, quota_clusters, 0, 0, 100000, NULL),
    F_INTF("connections", spec_tenant_t, quota_connections, 0, 0, 100000000, NULL),
    F_BYTESF("storage", spec_tenant_t, quota_storage, 0, NULL),
    F_ENDF,
};

static const sfield_t tenant_fields[] = {
    F_GROUPF("quotas", tenant_quota_fields, 0),
    F_STRF("plan", spec_tenant_t, plan, F_NONEMPTY, NULL),
    F_ENDF,
};

/* Document-level tables: apiVersion, kind and metadata are read before the table runs. */
#define ROOT_TABLE(var, sub, fl)                                                                   \
    static const sfield_t var[] = {F_IGNOREF("apiVersion"), F_IGNOREF("kind"),                     \
                                   F_IGNOREF("metadata"), F_GROUPF("spec", sub, fl), F_ENDF}
ROOT_TABLE(root_cluster, cluster_fields, F_REQ);
ROOT_TABLE(root_database, database_fields, F_REQ);
ROOT_TABLE(root_user, user_fields, F_REQ);
ROOT_TABLE(root_grant, grant_fields, F_REQ);
ROOT_TABLE(root_backup_store, bstore_fields, F_REQ);
ROOT_TABLE(root_backup, backup_fields, F_REQ);
ROOT_TABLE(root_restore, restore_fields, F_REQ);
ROOT_TABLE(root_sql_job, sql_job_fields, F_REQ);
ROOT_TABLE(root_credential_role, credential_role_fields, F_REQ);
ROOT_TABLE(root_tenant, tenant_fields, 0);

/* A Secret keeps its data at the top level, as Kubernetes Secrets do. */
static const sfield_t root_secret[] = {
    F_IGNOREF("apiVersion"),
    F_IGNOREF("kind"),
    F_IGNOREF("metadata"),
    F_MAPF("stringData", spec_secret_t, string_data, 0),
    F_GROUPF("generate", secret_generate_fields, 0),
    F_ENDF,
};

static const sfield_t *const root_tables[SPEC_KIND_COUNT] = {
    [SPEC_KIND_CLUSTER] = root_cluster, [SPEC_KIND_DATABASE] = root_database,
    [SPEC_KIND_USER] = root_user,       [SPEC_KIND_GRANT] = root_grant,
    [SPEC_KIND_SECRET] = root_secret,   [SPEC_KIND_BACKUP_STORE] = root_backup_store,
    [SPEC_KIND_BACKUP] = root_backup,   [SPEC_KIND_RESTORE] = root_restore,
    [SPEC_KIND_SQL_JOB] = root_sql_job, [SPEC_KIND_CREDENTIAL_ROLE] = root_credential_role,
    [SPEC_KIND_TENANT] = root_tenant,
};

/* --- engine versions ------------------------------------------------------------------- */

static const char *const pg_versions[] = {"12", "13", "14", "15", "16", "17", NULL};
static const char *const mariadb_versions[] = {"10.5", "10.6", "10.11", "11.0", "11.1",
                                               "11.2", "11.3", "11.4",  "11.5", "11.6",
                                               "11.7", "11.8", NULL};
static const char *const redis_versions[] = {"6", "7", NULL};

static const char *const *engine_versions(int engine)
{
    switch (engine) {
    case SPEC_ENGINE_POSTGRESQL:
        return pg_versions;
    case SPEC_ENGINE_MARIADB:
        return mariadb_versions;
    case SPEC_ENGINE_REDIS:
        return redis_versions;
    default:
        return NULL;
    }
}

bool spec_engine_version_ok(int engine, const char *version)
{
    const char *const *v = engine_versions(engine);
    if (!v || !version)
        return false;
    /* PostgreSQL and Redis are named by their major ("15", "15.4"); MariaDB by its
     * release series ("10.11", "10.11.6"). */
    int parts = engine == SPEC_ENGINE_MARIADB ? 2 : 1;
    size_t n = 0;
    for (int dots = 0; version[n]; n++)
        if (version[n] == '.' && ++dots == parts)
            break;
    for (const char *p = version + n; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            return false;
    for (size_t i = 0; v[i]; i++)
        if (strlen(v[i]) == n && strncmp(v[i], version, n) == 0)
            return true;
    return false;
}

const char *spec_engine_versions(int engine)
{
    switch (engine) {
    case SPEC_ENGINE_POSTGRESQL:
        return "12, 13, 14, 15, 16, 17";
    case SPEC_ENGINE_MARIADB:
        return "10.5, 10.6, 10.11, 11.0 to 11.8";
    case SPEC_ENGINE_REDIS:
        return "6, 7";
    default:
        return "";
    }
}

/* --- parse context and diagnostics ------------------------------------------------------ */

typedef struct pctx {
    spec_set_t *set;
    spec_diags_t *diags;
    const char *file;
    char prefix[192]; /* "Cluster/pg-cluster", "Cluster" or "" */
    char path[512];   /* "spec.proxy.pool" */
    size_t plen;
    bool override; /* parsing Restore target.spec: nothing is required */
} pctx_t;

/* Appends ".seg" (or "seg" at the root, or "[i]" when seg is NULL) to the path; returns
 * the previous length for path_pop. */
static size_t path_push(pctx_t *c, const char *seg, size_t idx)
{
    size_t old = c->plen;
    int n;
    if (seg)
        n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%s", c->plen ? "." : "", seg);
    else
        n = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "[%zu]", idx);
    if (n > 0)
        c->plen += (size_t)n;
    if (c->plen >= sizeof(c->path))
        c->plen = sizeof(c->path) - 1;
    return old;
}

static void path_pop(pctx_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

/* Reports at `at`, with the current path plus `field` (may be NULL). */
__attribute__((format(printf, 6, 7))) static void report(pctx_t *c, spec_severity_t sev,
                                                         spec_mark_t at, const char *field,
                                                         const char *hint, const char *fmt, ...)
{
    char path[768], msg[1024];
    size_t old = c->plen;
    if (field)
        path_push(c, field, 0);
    if (c->prefix[0] && c->plen)
        snprintf(path, sizeof(path), "%s: %s", c->prefix, c->path);
    else
        snprintf(path, sizeof(path), "%s", c->prefix[0] ? c->prefix : c->path);
    path_pop(c, old);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spec_diag_add(c->diags, sev, at, path, hint, "%s", msg);
}

/* "one of: a, b, c" into buf. */
static void join_names(char *buf, size_t len, const char *lead, const char *const *vals)
{
    size_t o = (size_t)snprintf(buf, len, "%s", lead);
    for (size_t i = 0; vals[i] && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", vals[i]);
}

/* A hint for a value that is not one of `vals`: "did you mean 'x'? one of: ...". */
static void choice_hint(char *buf, size_t len, const char *got, const char *const *vals)
{
    const char *close = spec_closest(got, vals);
    char head[160] = "";
    if (close)
        snprintf(head, sizeof(head), "did you mean '%s'? ", close);
    char lead[200];
    snprintf(lead, sizeof(lead), "%svalid values: ", head);
    join_names(buf, len, lead, vals);
}

/* --- scalar readers -------------------------------------------------------------------- */

static bool want_scalar(pctx_t *c, const spec_node_t *v, const char *what)
{
    if (v->type == SPEC_NODE_SCALAR)
        return true;
    report(c, SPEC_ERROR, v->at, NULL, NULL, "expected %s, got %s", what, spec_node_what(v));
    return false;
}

static bool parse_int64(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!*p)
        return false;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes")) {
        *out = true;
        return true;
    }
    if (!strcasecmp(s, "false") || !strcasecmp(s, "no")) {
        *out = false;
        return true;
    }
    return false;
}

static void set_str(spec_str_t *s, const char *v, spec_mark_t at)
{
    free(s->v);
    s->v = spec_xstrdup(v);
    s->set = true;
    s->at = at;
}

/* Upper-cases and collapses runs of blanks ("all  privileges" → "ALL PRIVILEGES"). */
static void normalize_upper(char *s)
{
    char *w = s;
    const char *r = s;
    while (isspace((unsigned char)*r))
        r++;
    for (; *r; r++) {
        if (isspace((unsigned char)*r)) {
            if (w > s && w[-1] != ' ')
                *w++ = ' ';
            continue;
        }
        *w++ = (char)toupper((unsigned char)*r);
    }
    if (w > s && w[-1] == ' ')
        w--;
    *w = '\0';
}

/* --- the table walker ------------------------------------------------------------------ */

static void parse_map(pctx_t *c, const sfield_t *tab, char *base, const spec_node_t *map,
                      spec_mark_t parent_at);
static void fill_default(const sfield_t *f, char *base);
static void cluster_rules(pctx_t *c, spec_cluster_t *cl);
static void free_fields(const sfield_t *tab, char *base);

static void parse_string(pctx_t *c, const sfield_t *f, char *base, const spec_node_t *v)
{
    char err[256], hint[512];
    if (!want_scalar(c, v, "a string"))
        return;
    const char *s = v->s;
    if ((f->flags & F_NONEMPTY) && !*s)
        report(c, SPEC_ERROR, v->at, NULL, NULL, "must not be empty");
    if ((f->flags & F_DNS) && !spec_is_dns_label(s))
        report(c, SPEC_ERROR, v->at, NULL,
               "lowercase letters, digits and '-', 1 to 63 characters, starting and ending "
               "with a letter or digit",
               "'%s' is not a valid DNS label", s);
    if (f->flags & F_CHOICE) {
        bool ok = false;
        for (size_t i = 0; f->vals[i]; i++)
            ok = ok || strcmp(f->vals[i], s) == 0;
        if (!ok) {
            choice_hint(hint, sizeof(hint), s, f->vals);
            report(c, SPEC_ERROR, v->at, NULL, hint, "invalid value '%s'", s);
        }
    }
    if (f->flags & F_CRON) {
        if (spec_cron_parse(s, (spec_cron_t *)(base + f->aux_off - 1), err, sizeof(err)))
            report(c, SPEC_ERROR, v->at, NULL,
                   "5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\", "
                   "or @hourly, @daily, @weekly, @monthly, @yearly",
                   "%s", err);
    }
    if (f->flags & F_TIME) {
        if (spec_parse_rfc3339(s, (time_t *)(base + f->aux_off - 1), err, sizeof(err)))
            report(c, SPEC_ERROR, v->at, NULL,
                   "e.g. 2026-11-22T03:30:00Z or 2026-11-22T05:30:00+02:00", "%s", err);
    }
    set_str((spec_str_t *)(base + f->off), s, v->at);
}

static void parse_list(pctx_t *c, const sfield_t *f, char *base, const spec_node_t *v)
{
    spec_strlist_t *l = (spec_strlist_t *)(base + f->off);
    if (v->type != SPEC_NODE_SEQ) {
        report(c, SPEC_ERROR, v->at, NULL, "write a list, e.g. [a, b]", "expected a list, got %s",
               spec_node_what(v));
        return;
    }
    if ((f->flags & F_NONEMPTY) && v->n == 0)
        report(c, SPEC_ERROR, v->at, NULL, NULL, "must not be empty");
    l->v = spec_xcalloc(v->n, sizeof(*l->v));
    l->ats = spec_xcalloc(v->n, sizeof(*l->ats));
    l->set = true;
    l->at = v->at;
    for (size_t i = 0; i < v->n; i++) {
        const spec_node_t *it = v->kids[i];
        if (it->type != SPEC_NODE_SCALAR || spec_node_is_null(it)) {
            size_t old = path_push(c, NULL, i);
            report(c, SPEC_ERROR, it->at, NULL, NULL, "expected a string, got %s",
                   spec_node_what(it));
            path_pop(c, old);
            continue;
        }
        char *s = spec_xstrdup(it->s);
        if (f->flags & F_UPPER)
            normalize_upper(s);
        l->v[l->n] = s;
        l->ats[l->n++] = it->at;
    }
}

static void parse_strmap(pctx_t *c, const sfield_t *f, char *base, const spec_node_t *v)
{
    spec_map_t *m = (spec_map_t *)(base + f->off);
    if (v->type != SPEC_NODE_MAP) {
        report(c, SPEC_ERROR, v->at, NULL, NULL, "expected a mapping, got %s", spec_node_what(v));
        return;
    }
    m->v = spec_xcalloc(v->n / 2, sizeof(*m->v));
    m->set = true;
    m->at = v->at;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const spec_node_t *k = v->kids[i], *val = v->kids[i + 1];
        if (val->type != SPEC_NODE_SCALAR) {
            /* Never echo values here: stringData holds secrets. */
            report(c, SPEC_ERROR, val->at, k->s, NULL, "expected a string value, got %s",
                   spec_node_what(val));
            continue;
        }
        spec_kv_t *kv = &m->v[m->n++];
        kv->key = spec_xstrdup(k->s);
        kv->value = spec_xstrdup(spec_node_is_null(val) ? "" : val->s);
        kv->at = val->at;
    }
}

static void parse_enum(pctx_t *c, const sfield_t *f, char *base, const spec_node_t *v)
{
    char hint[512];
    if (!want_scalar(c, v, "a string"))
        return;
    for (int i = 0; f->vals[i]; i++) {
        if (strcmp(f->vals[i], v->s) == 0) {
            *(int *)(base + f->off) = f->ebase + i;
            if (f->set_off)
                *(bool *)(base + f->set_off - 1) = true;
            *(spec_mark_t *)(base + f->at_off - 1) = v->at;
            return;
        }
    }
    choice_hint(hint, sizeof(hint), v->s, f->vals);
    report(c, SPEC_ERROR, v->at, NULL, hint, "invalid value '%s'", v->s);
}

/* Parses value node v (not null) of field f whose key is k. */
static void parse_value(pctx_t *c, const sfield_t *f, char *base, const spec_node_t *k,
                        const spec_node_t *v)
{
    char err[256];
    switch (f->type) {
    case FT_STR:
        parse_string(c, f, base, v);
        break;
    case FT_INT: {
        spec_int_t *x = (spec_int_t *)(base + f->off);
        int64_t n;
        if (!want_scalar(c, v, "an integer"))
            break;
        if (!parse_int64(v->s, &n)) {
            report(c, SPEC_ERROR, v->at, NULL, NULL, "expected an integer, got '%s'", v->s);
            break;
        }
        if ((f->flags & F_RANGE) && (n < f->min || n > f->max)) {
            report(c, SPEC_ERROR, v->at, NULL, NULL,
                   "must be between %" PRId64 " and %" PRId64 ", got %" PRId64, f->min, f->max, n);
            break;
        }
        x->v = n;
        x->set = true;
        x->at = v->at;
        break;
    }
    case FT_BOOL: {
        spec_bool_t *x = (spec_bool_t *)(base + f->off);
        bool b;
        if (!want_scalar(c, v, "a boolean"))
            break;
        if (!parse_bool(v->s, &b)) {
            report(c, SPEC_ERROR, v->at, NULL, "use true or false (yes and no are accepted)",
                   "expected a boolean, got '%s'", v->s);
            break;
        }
        x->v = b;
        x->set = true;
        x->at = v->at;
        break;
    }
    case FT_BYTES: {
        spec_bytes_t *x = (spec_bytes_t *)(base + f->off);
        uint64_t n;
        if (!want_scalar(c, v, "a quantity"))
            break;
        if (spec_parse_quantity(v->s, &n, err, sizeof(err))) {
            report(c, SPEC_ERROR, v->at, NULL,
                   "plain bytes or a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T "
                   "(decimal), e.g. 512Mi or 10Gi",
                   "%s", err);
            break;
        }
        x->v = n;
        x->set = true;
        x->at = v->at;
        break;
    }
    case FT_DUR: {
        spec_dur_t *x = (spec_dur_t *)(base + f->off);
        int64_t ms;
        if (!want_scalar(c, v, "a duration"))
            break;
        if (spec_parse_duration(v->s, &ms, err, sizeof(err))) {
            report(c, SPEC_ERROR, v->at, NULL,
                   "a whole number with a unit ms, s, m, h or d, e.g. 500ms, 30s or 1h30m", "%s",
                   err);
            break;
        }
        x->ms = ms;
        x->set = true;
        x->at = v->at;
        break;
    }
    case FT_LIST:
        parse_list(c, f, base, v);
        break;
    case FT_MAP:
        parse_strmap(c, f, base, v);
        break;
    case FT_ENUM:
        parse_enum(c, f, base, v);
        break;
    case FT_OBJ:
        if (v->type != SPEC_NODE_MAP) {
            report(c, SPEC_ERROR, v->at, NULL, NULL, "expected a mapping, got %s",
                   spec_node_what(v));
            fill_default(f, base);
            break;
        }
        if (f->set_off)
            *(bool *)(base + f->set_off - 1) = true;
        if (f->at_off)
            *(spec_mark_t *)(base + f->at_off - 1) = k->at;
        parse_map(c, f->sub, base + f->off, v, k->at);
        break;
    case FT_CLUSTER: {
        spec_cluster_t **pp = (spec_cluster_t **)(base + f->off);
        if (v->type != SPEC_NODE_MAP) {
            report(c, SPEC_ERROR, v->at, NULL, NULL, "expected a mapping, got %s",
                   spec_node_what(v));
            break;
        }
        if (*pp) {
            free_fields(cluster_fields, (char *)*pp);
            free(*pp);
        }
        *pp = spec_xcalloc(1, sizeof(**pp));
        bool old = c->override;
        c->override = true;
        parse_map(c, cluster_fields, (char *)*pp, v, k->at);
        cluster_rules(c, *pp);
        c->override = old;
        break;
    }
    default:
        break;
    }
}

/* The names of a table, for hints. */
static size_t table_names(const sfield_t *tab, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; tab[i].type != FT_END && n + 1 < max; i++)
        names[n++] = tab[i].name;
    names[n] = NULL;
    return n;
}

static void report_unknown(pctx_t *c, const sfield_t *tab, const spec_node_t *k)
{
    const char *names[64];
    char hint[768];
    table_names(tab, names, 64);
    const char *close = spec_closest(k->s, names);
    if (close)
        snprintf(hint, sizeof(hint), "did you mean '%s'?", close);
    else
        join_names(hint, sizeof(hint), "valid fields: ", names);
    report(c, SPEC_ERROR, k->at, k->s, hint, "unknown field '%s'", k->s);
}

/* Parses mapping `map` with table `tab` into base; fills defaults for absent fields and
 * reports missing required ones at parent_at (the position of the mapping's key). Tables
 * have fewer than 64 fields (the size of the seen/nulls arrays). */
static void parse_map(pctx_t *c, const sfield_t *tab, char *base, const spec_node_t *map,
                      spec_mark_t parent_at)
{
    const spec_node_t *seen[64] = {0};
    const spec_node_t *nulls[64] = {0};
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const spec_node_t *k = map->kids[i], *v = map->kids[i + 1];
        size_t idx;
        for (idx = 0; tab[idx].type != FT_END; idx++)
            if (strcmp(tab[idx].name, k->s) == 0)
                break;
        if (tab[idx].type == FT_END) {
            report_unknown(c, tab, k);
            continue;
        }
        if (tab[idx].type == FT_IGNORE)
            continue;
        if (spec_node_is_null(v)) { /* `key:` or `key: null` means "not set" */
            nulls[idx] = k;
            continue;
        }
        seen[idx] = k;
        size_t old = path_push(c, k->s, 0);
        parse_value(c, &tab[idx], base, k, v);
        path_pop(c, old);
    }
    for (size_t idx = 0; tab[idx].type != FT_END; idx++) {
        const sfield_t *f = &tab[idx];
        if (seen[idx] || f->type == FT_IGNORE)
            continue;
        if ((f->flags & F_REQ) && !c->override)
            report(c, SPEC_ERROR, nulls[idx] ? nulls[idx]->at : parent_at, f->name, NULL,
                   "missing required field '%s'", f->name);
        fill_default(f, base);
    }
}

/* Stores the default of an absent field (with set = false) — recursively for objects. */
static void fill_default(const sfield_t *f, char *base)
{
    char *p = base + f->off;
    switch (f->type) {
    case FT_STR:
        if (f->def && !((spec_str_t *)p)->v)
            ((spec_str_t *)p)->v = spec_xstrdup(f->def);
        break;
    case FT_INT:
        if (f->def)
            ((spec_int_t *)p)->v = strtoll(f->def, NULL, 10);
        break;
    case FT_BOOL:
        if (f->def)
            ((spec_bool_t *)p)->v = strcmp(f->def, "true") == 0;
        break;
    case FT_BYTES:
        if (f->def && spec_parse_quantity(f->def, &((spec_bytes_t *)p)->v, NULL, 0))
            ((spec_bytes_t *)p)->v = 0;
        break;
    case FT_DUR:
        if (f->def && spec_parse_duration(f->def, &((spec_dur_t *)p)->ms, NULL, 0))
            ((spec_dur_t *)p)->ms = 0;
        break;
    case FT_ENUM:
        for (int i = 0; f->def && f->vals[i]; i++)
            if (strcmp(f->vals[i], f->def) == 0)
                *(int *)p = f->ebase + i;
        break;
    case FT_OBJ:
        for (size_t i = 0; f->sub[i].type != FT_END; i++)
            fill_default(&f->sub[i], p);
        break;
    default:
        break;
    }
}

static void free_fields(const sfield_t *tab, char *base)
{
    for (size_t i = 0; tab[i].type != FT_END; i++) {
        const sfield_t *f = &tab[i];
        char *p = base + f->off;
        switch (f->type) {
        case FT_STR:
            free(((spec_str_t *)p)->v);
            break;
        case FT_LIST: {
            spec_strlist_t *l = (spec_strlist_t *)p;
            for (size_t j = 0; j < l->n; j++)
                free(l->v[j]);
            free(l->v);
            free(l->ats);
            break;
        }
        case FT_MAP: {
            spec_map_t *m = (spec_map_t *)p;
            for (size_t j = 0; j < m->n; j++) {
                free(m->v[j].key);
                free(m->v[j].value);
            }
            free(m->v);
            break;
        }
        case FT_OBJ:
            free_fields(f->sub, p);
            break;
        case FT_CLUSTER: {
            spec_cluster_t *cl = *(spec_cluster_t **)p;
            if (cl) {
                free_fields(cluster_fields, (char *)cl);
                free(cl);
            }
            break;
        }
        default:
            break;
        }
    }
}

void spec_resource_free(spec_resource_t *res)
{
    if (!res)
        return;
    free(res->name.v);
    free(res->tenant.v);
    json_decref(res->json);
    if ((unsigned)res->kind < SPEC_KIND_COUNT)
        free_fields(root_tables[res->kind], (char *)&res->u);
    free(res);
}

/* --- per-kind rules -------------------------------------------------------------------- */

/* Rules inside one Cluster spec; the path is at "spec" (or "spec.target.spec"). Engine-
 * specific sections are checked only when the engine is known (overrides may omit it). */
static void cluster_rules(pctx_t *c, spec_cluster_t *cl)
{
    int e = cl->engine;
    const char *en = spec_engine_str((spec_engine_t)e);
    if (e && cl->version.set && !spec_engine_version_ok(e, cl->version.v)) {
        char hint[128];
        snprintf(hint, sizeof(hint), "supported %s versions: %s", en, spec_engine_versions(e));
        report(c, SPEC_ERROR, cl->version.at, "version", hint,
               "version '%s' is not supported for engine %s", cl->version.v, en);
    }
    if (e && e != SPEC_ENGINE_REDIS && cl->redis.set)
        report(c, SPEC_ERROR, cl->redis.at, "redis", NULL,
               "the redis section applies only to engine redis, not %s", en);
    if (e && e != SPEC_ENGINE_POSTGRESQL && cl->proxy.pool.set)
        report(c, SPEC_ERROR, cl->proxy.pool.at, "proxy.pool", NULL,
               "connection pooling applies only to engine postgresql, not %s", en);
    if (e && e != SPEC_ENGINE_POSTGRESQL && cl->proxy.server_tls_set)
        report(c, SPEC_ERROR, cl->proxy.server_tls_at, "proxy.serverTLS", NULL,
               "serverTLS applies only to engine postgresql, not %s", en);
    if (e && e != SPEC_ENGINE_MARIADB && cl->replication.gtid_strict_mode.set)
        report(c, SPEC_ERROR, cl->replication.gtid_strict_mode.at, "replication.gtidStrictMode",
               NULL,
               "gtidStrictMode applies only to engine "
               "mariadb, not %s",
               en);
    spec_proxy_t *px = &cl->proxy;
    if (px->port.set && px->ro_port.set && px->port.v == px->ro_port.v)
        report(c, SPEC_ERROR, px->ro_port.at, "proxy.roPort", NULL,
               "roPort must differ from port (%" PRId64 ")", px->port.v);
    if (px->port.set && !px->ro_port.set && px->port.v < 65535)
        px->ro_port.v = px->port.v + 1;
    spec_pool_t *pl = &px->pool;
    if (pl->min_size.set && pl->min_size.v > pl->size.v)
        report(c, SPEC_ERROR, pl->min_size.at, "proxy.pool.minSize", NULL,
               "minSize (%" PRId64 ") is larger than size (%" PRId64 ")", pl->min_size.v,
               pl->size.v);
    spec_redis_t *rd = &cl->redis;
    if (e == SPEC_ENGINE_REDIS || (!e && rd->set)) {
        if (!rd->maxmemory.set && cl->memory.set)
            rd->maxmemory.v = cl->memory.v / 10 * 8;
        if (!rd->maxmemory_policy.v) {
            if (rd->class_ == SPEC_REDIS_CLASS_CACHE)
                rd->maxmemory_policy.v = spec_xstrdup("allkeys-lru");
            else if (rd->class_ == SPEC_REDIS_CLASS_SESSION || rd->class_ == SPEC_REDIS_CLASS_QUEUE)
                rd->maxmemory_policy.v = spec_xstrdup("volatile-lru");
        }
    }
}

static void rules_secret(pctx_t *c, spec_resource_t *r, const spec_node_t *root)
{
    spec_secret_t *s = &r->u.secret;
    const spec_node_t *gen = spec_node_key(root, "generate", NULL);
    if (!s->string_data.set && !gen)
        report(c, SPEC_ERROR, r->at, NULL,
               "add stringData: {KEY: value} or generate: {keys: [KEY]}",
               "a Secret needs stringData or generate");
    spec_strlist_t *g = &s->generate_keys;
    for (size_t i = 0; i < g->n; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcmp(g->v[i], g->v[j]) == 0)
                report(c, SPEC_ERROR, g->ats[i], "generate.keys", NULL, "key '%s' is listed twice",
                       g->v[i]);
        for (size_t j = 0; j < s->string_data.n; j++)
            if (strcmp(g->v[i], s->string_data.v[j].key) == 0)
                report(c, SPEC_ERROR, g->ats[i], "generate.keys", NULL,
                       "key '%s' is also given in stringData", g->v[i]);
    }
}

static void rules_backup_store(pctx_t *c, spec_resource_t *r, const spec_node_t *spec,
                               spec_mark_t spec_at)
{
    spec_backup_store_t *b = &r->u.backup_store;
    const spec_node_t *posix = spec_node_key(spec, "posix", NULL);
    const spec_node_t *s3 = spec_node_key(spec, "s3", NULL);
    if (posix && s3)
        report(c, SPEC_ERROR, s3->at, "s3", NULL, "set exactly one of posix or s3, not both");
    else if (!posix && !s3 && spec)
        report(c, SPEC_ERROR, spec_at, NULL, "e.g. posix: {path: ./backups}",
               "a BackupStore needs posix or s3");
    if (b->s3_access_key_id.set != b->s3_secret_access_key.set) {
        bool has_id = b->s3_access_key_id.set;
        report(c, SPEC_ERROR, has_id ? b->s3_access_key_id.at : b->s3_secret_access_key.at,
               has_id ? "s3.accessKeyIdSecretKeyRef" : "s3.secretAccessKeySecretKeyRef", NULL,
               "accessKeyIdSecretKeyRef and secretAccessKeySecretKeyRef must be given together");
    }
}

static void rules_backup(pctx_t *c, spec_resource_t *r)
{
    spec_backup_t *b = &r->u.backup;
    if (!b->verify.set)
        b->verify.v = b->type == SPEC_BACKUP_PHYSICAL;
    if (b->databases.set && b->type == SPEC_BACKUP_PHYSICAL && b->type_at.line)
        report(c, SPEC_ERROR, b->databases.at, "databases", NULL,
               "databases applies only to logical backups");
}

static void rules_restore(pctx_t *c, spec_resource_t *r, const spec_node_t *spec,
                          spec_mark_t spec_at)
{
    spec_restore_t *rs = &r->u.restore;
    const spec_node_t *src = spec_node_key(spec, "source", NULL);
    if (rs->backup.set && src)
        report(c, SPEC_ERROR, src->at, "source", NULL, "set either backup or source, not both");
    else if (!rs->backup.set && !src && spec)
        report(c, SPEC_ERROR, spec_at, NULL,
               "name a Backup (backup: NAME) or a run (source: {store: STORE, path: RUN})",
               "a Restore needs backup or source");
}

static void rules_sql_job(pctx_t *c, spec_resource_t *r, const spec_node_t *spec,
                          spec_mark_t spec_at)
{
    spec_sql_job_t *j = &r->u.sql_job;
    if (j->sql.set && j->sql_file.set)
        report(c, SPEC_ERROR, j->sql_file.at, "sqlFile", NULL,
               "set either sql or sqlFile, not both");
    else if (!j->sql.set && !j->sql_file.set && spec)
        report(c, SPEC_ERROR, spec_at, NULL, "inline SQL in sql: | ..., or a file in sqlFile",
               "an SqlJob needs sql or sqlFile");
}

/* Runs the rules of r's kind once its table has been applied. */
static void kind_rules(pctx_t *c, spec_resource_t *r, const spec_node_t *root)
{
    const spec_node_t *spec = NULL;
    const spec_node_t *sk = spec_node_key(root, "spec", &spec);
    if (spec && spec->type != SPEC_NODE_MAP)
        spec = NULL;
    spec_mark_t spec_at = sk ? sk->at : r->at;
    size_t old = path_push(c, "spec", 0);
    switch (r->kind) {
    case SPEC_KIND_CLUSTER:
        cluster_rules(c, &r->u.cluster);
        break;
    case SPEC_KIND_BACKUP_STORE:
        rules_backup_store(c, r, spec, spec_at);
        break;
    case SPEC_KIND_BACKUP:
        rules_backup(c, r);
        break;
    case SPEC_KIND_RESTORE:
        rules_restore(c, r, spec, spec_at);
        break;
    case SPEC_KIND_SQL_JOB:
        rules_sql_job(c, r, spec, spec_at);
        break;
    default:
        break;
    }
    path_pop(c, old);
    if (r->kind == SPEC_KIND_SECRET)
        rules_secret(c, r, root);
}

/* --- documents ------------------------------------------------------------------------- */

static const char *const kind_list[] = {"Cluster", "Database",       "User",   "Grant",
                                        "Secret",  "BackupStore",    "Backup", "Restore",
                                        "SqlJob",  "CredentialRole", "Tenant", NULL};

/* Reads metadata.name and metadata.tenant into r; other metadata keys are checked only. */
static void parse_metadata(pctx_t *c, spec_resource_t *r, const spec_node_t *root)
{
    static const char *const meta_names[] = {"name", "tenant", "labels", "annotations", NULL};
    static const char *const dns_hint =
        "lowercase letters, digits and '-', 1 to 63 characters, starting and ending with a "
        "letter or digit";
    const spec_node_t *md = NULL;
    const spec_node_t *mk = spec_node_key(root, "metadata", &md);
    if (!mk || spec_node_is_null(md)) {
        report(c, SPEC_ERROR, mk ? mk->at : root->at, "metadata.name", NULL,
               "missing required field 'metadata.name'");
    } else if (md->type != SPEC_NODE_MAP) {
        report(c, SPEC_ERROR, md->at, "metadata", NULL, "expected a mapping, got %s",
               spec_node_what(md));
    } else {
        const spec_node_t *nv = NULL;
        if (spec_node_key(md, "name", &nv) && nv->type == SPEC_NODE_SCALAR)
            snprintf(c->prefix, sizeof(c->prefix), "%s/%s", spec_kind_str(r->kind), nv->s);
        size_t old = path_push(c, "metadata", 0);
        for (size_t i = 0; i + 1 < md->n; i += 2) {
            const spec_node_t *k = md->kids[i], *v = md->kids[i + 1];
            bool is_name = !strcmp(k->s, "name"), is_tenant = !strcmp(k->s, "tenant");
            if (is_name || is_tenant) {
                size_t o2 = path_push(c, k->s, 0);
                if (want_scalar(c, v, "a string")) {
                    set_str(is_name ? &r->name : &r->tenant, v->s, v->at);
                    if (!spec_is_dns_label(v->s))
                        report(c, SPEC_ERROR, v->at, NULL, dns_hint,
                               "%s '%s' is not a valid DNS label", k->s, v->s);
                }
                path_pop(c, o2);
            } else if (!strcmp(k->s, "labels") || !strcmp(k->s, "annotations")) {
                if (spec_node_is_null(v))
                    continue;
                if (v->type != SPEC_NODE_MAP) {
                    report(c, SPEC_ERROR, v->at, k->s, NULL, "expected a mapping, got %s",
                           spec_node_what(v));
                    continue;
                }
                for (size_t j = 0; j + 1 < v->n; j += 2)
                    if (v->kids[j + 1]->type != SPEC_NODE_SCALAR)
                        report(c, SPEC_ERROR, v->kids[j + 1]->at, k->s, NULL,
                               "expected a string value, got %s", spec_node_what(v->kids[j + 1]));
            } else {
                const char *close = spec_closest(k->s, meta_names);
                char hint[160];
                if (close)
                    snprintf(hint, sizeof(hint), "did you mean '%s'?", close);
                else
                    snprintf(hint, sizeof(hint), "valid fields: name, tenant, labels, annotations");
                report(c, SPEC_ERROR, k->at, k->s, hint, "unknown field '%s'", k->s);
            }
        }
        path_pop(c, old);
        if (!r->name.set)
            report(c, SPEC_ERROR, mk->at, "metadata.name", NULL,
                   "missing required field 'metadata.name'");
    }
    if (!r->tenant.v)
        r->tenant.v = spec_xstrdup("default");
}

/* The spec_doc_cb_t of spec_parse_buffer: one document → one resource in the set. */
static void on_document(void *ctx, const spec_node_t *root, spec_mark_t doc_at)
{
    pctx_t *c = ctx;
    c->prefix[0] = '\0';
    path_pop(c, 0);
    if (root->type != SPEC_NODE_MAP) {
        report(c, SPEC_ERROR, root->at, NULL,
               "each document is a mapping with apiVersion, "
               "kind, metadata and spec",
               "expected a mapping, got %s", spec_node_what(root));
        return;
    }
    char hint[512];
    const spec_node_t *kv = NULL, *av = NULL;
    const spec_node_t *kk = spec_node_key(root, "kind", &kv);
    const spec_node_t *ak = spec_node_key(root, "apiVersion", &av);
    int kind = -1;
    if (kk && kv->type == SPEC_NODE_SCALAR)
        for (int i = 0; i < SPEC_KIND_COUNT; i++)
            if (strcmp(kv->s, kind_list[i]) == 0)
                kind = i;
    spec_resource_t *r = NULL;
    if (kind >= 0) { /* metadata first, so that every message names the resource */
        r = spec_xcalloc(1, sizeof(*r));
        r->kind = (spec_kind_t)kind;
        r->at = root->at;
        snprintf(c->prefix, sizeof(c->prefix), "%s", kind_list[kind]);
        parse_metadata(c, r, root);
    }
    (void)doc_at;
    if (!ak || spec_node_is_null(av))
        report(c, SPEC_ERROR, ak ? ak->at : root->at, "apiVersion", "add apiVersion: dbplane/v1",
               "missing required field 'apiVersion'");
    else if (av->type != SPEC_NODE_SCALAR || strcmp(av->s, "dbplane/v1") != 0)
        report(c, SPEC_ERROR, av->at, "apiVersion", "use apiVersion: dbplane/v1",
               "unsupported apiVersion '%s'", av->type == SPEC_NODE_SCALAR ? av->s : "?");
    if (kind < 0) {
        if (!kk || spec_node_is_null(kv)) {
            join_names(hint, sizeof(hint), "valid kinds: ", kind_list);
            report(c, SPEC_ERROR, kk ? kk->at : root->at, "kind", hint,
                   "missing required field 'kind'");
            return;
        }
        const char *got = kv->type == SPEC_NODE_SCALAR ? kv->s : "?";
        const char *close = spec_closest(got, kind_list);
        char lead[128] = "";
        if (close)
            snprintf(lead, sizeof(lead), "did you mean '%s'? ", close);
        strcat(lead, "valid kinds: ");
        join_names(hint, sizeof(hint), lead, kind_list);
        report(c, SPEC_ERROR, kv->at, "kind", hint, "unknown kind '%s'", got);
        return;
    }
    parse_map(c, root_tables[kind], (char *)&r->u, root, root->at);
    kind_rules(c, r, root);
    r->json = spec_node_to_json(root);

    if (!r->name.v) {
        spec_resource_free(r);
        return;
    }
    spec_resource_t *dup = spec_set_find(c->set, r->kind, r->tenant.v, r->name.v);
    if (dup) {
        snprintf(hint, sizeof(hint), "first declared at %s:%d:%d",
                 dup->name.at.file ? dup->name.at.file : "?", dup->name.at.line, dup->name.at.col);
        path_pop(c, 0);
        report(c, SPEC_ERROR, r->name.at, "metadata.name", hint, "duplicate %s '%s' in tenant '%s'",
               kind_list[kind], r->name.v, r->tenant.v);
        spec_resource_free(r);
        return;
    }
    spec_set_push(c->set, r);
}

int spec_parse_buffer(spec_set_t *set, const char *name, const char *buf, size_t len,
                      spec_diags_t *diags)
{
    size_t before = diags->errors;
    pctx_t c;
    memset(&c, 0, sizeof(c));
    c.set = set;
    c.diags = diags;
    c.file = spec_set_add_file(set, name ? name : "<input>");
    spec_yaml_load(c.file, buf ? buf : "", buf ? len : 0, diags, on_document, &c);
    return diags->errors > before ? DBP_EINVAL : 0;
}

int spec_parse_file(spec_set_t *set, const char *path, spec_diags_t *diags)
{
    spec_mark_t at = {path, 0, 0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        spec_diag_add(diags, SPEC_ERROR, at, NULL, NULL, "cannot open: %s", strerror(errno));
        return DBP_EIO;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = spec_xcalloc(1, cap);
    for (;;) {
        if (len == cap) {
            if (cap >= SPEC_MAX_FILE_BYTES) {
                spec_diag_add(diags, SPEC_ERROR, at, NULL, NULL, "file is larger than %u bytes",
                              SPEC_MAX_FILE_BYTES);
                free(buf);
                fclose(f);
                return DBP_EINVAL;
            }
            cap *= 2;
            buf = spec_xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    bool failed = ferror(f);
    int saved = errno;
    fclose(f);
    if (failed) {
        spec_diag_add(diags, SPEC_ERROR, at, NULL, NULL, "cannot read: %s", strerror(saved));
        free(buf);
        return DBP_EIO;
    }
    int rc = spec_parse_buffer(set, path, buf, len, diags);
    free(buf);
    return rc;
}
