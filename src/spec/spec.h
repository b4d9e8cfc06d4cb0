/*
 * spec.h: the user's declarative model. YAML documents (libyaml) become typed resources of
 * every kind in ARCHITECTURE.md; each field remembers whether and where (file:line:col) it
 * was set, so validation and later errors can point at the exact spot. Several documents
 * per file are separated by `---`. The format is fixed by shared/spec-reference/.
 *
 * Parsing never stops at the first problem: every error and warning is collected into a
 * spec_diags_t with its position, field path ("spec.proxy.pool.size") and a hint.
 * This module does not touch the network or the store.
 */
#ifndef DBP_SPEC_SPEC_H
#define DBP_SPEC_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

/* A position in a source file; 1-based line and column. `file` is borrowed from the
 * spec_set_t that parsed it (valid while the set lives). line == 0 means "unknown". */
typedef struct spec_mark {
    const char *file;
    int line;
    int col;
} spec_mark_t;

/* Typed field wrappers: value, whether the document set it, and where. */
typedef struct spec_str {
    char *v; /* owned by the set; NULL when not set (defaults are filled in as values) */
    bool set;
    spec_mark_t at;
} spec_str_t;

typedef struct spec_int {
    int64_t v;
    bool set;
    spec_mark_t at;
} spec_int_t;

typedef struct spec_bool {
    bool v;
    bool set;
    spec_mark_t at;
} spec_bool_t;

/* A quantity ("512Mi", "10Gi", "640mb" is rejected, plain "1048576" is bytes), in bytes. */
typedef struct spec_bytes {
    uint64_t v;
    bool set;
    spec_mark_t at;
} spec_bytes_t;

/* A duration ("500ms", "30s", "5m", "24h", "30d"), in milliseconds. */
typedef struct spec_dur {
    int64_t ms;
    bool set;
    spec_mark_t at;
} spec_dur_t;

/* A list of strings (a YAML sequence of scalars). */
typedef struct spec_strlist {
    char **v; /* n strings, owned by the set */
    spec_mark_t *ats; /* n positions, one per item (added: exact errors per item); owned */
    size_t n;
    bool set;
    spec_mark_t at;
} spec_strlist_t;

/* A string-to-scalar map (Secret.stringData, Cluster.spec.config). Scalar values of any
 * YAML type are kept as their text ("500", "true", "256M"). */
typedef struct spec_kv {
    char *key;
    char *value;
    spec_mark_t at; /* position of the value */
} spec_kv_t;

typedef struct spec_map {
    spec_kv_t *v;
    size_t n;
    bool set;
    spec_mark_t at;
} spec_map_t;

/* `{name: SECRET, key: KEY}`: a value of a Secret in the same tenant. */
typedef struct spec_secret_ref {
    spec_str_t name;
    spec_str_t key;
    bool set;
    spec_mark_t at;
} spec_secret_ref_t;

/* A parsed 5-field cron expression (minute hour day-of-month month day-of-week), each a
 * bitmask of allowed values. Supports `*`, lists, ranges, steps (`*\/15`, `1-5/2`), and
 * names (jan..dec, sun..sat); day-of-week 7 is Sunday. */
typedef struct spec_cron {
    uint64_t minute; /* bits 0..59 */
    uint32_t hour;   /* bits 0..23 */
    uint32_t dom;    /* bits 1..31 */
    uint16_t month;  /* bits 1..12 */
    uint8_t dow;     /* bits 0..6, 0 = Sunday */
    bool dom_star;   /* day-of-month was `*` (cron's OR rule between dom and dow) */
    bool dow_star;
} spec_cron_t;

/* The resource kinds of ARCHITECTURE.md. */
typedef enum spec_kind {
    SPEC_KIND_CLUSTER = 0,
    SPEC_KIND_DATABASE,
    SPEC_KIND_USER,
    SPEC_KIND_GRANT,
    SPEC_KIND_SECRET,
    SPEC_KIND_BACKUP_STORE,
    SPEC_KIND_BACKUP,
    SPEC_KIND_RESTORE,
    SPEC_KIND_SQL_JOB,
    SPEC_KIND_CREDENTIAL_ROLE,
    SPEC_KIND_TENANT,
    SPEC_KIND_COUNT
} spec_kind_t;

typedef enum spec_engine {
    SPEC_ENGINE_NONE = 0,
    SPEC_ENGINE_POSTGRESQL,
    SPEC_ENGINE_MARIADB,
    SPEC_ENGINE_REDIS,
} spec_engine_t;

typedef enum spec_repl_mode {
    SPEC_REPL_ASYNC = 0, /* default */
    SPEC_REPL_SEMI_SYNC,
    SPEC_REPL_SYNC,
} spec_repl_mode_t;

typedef enum spec_pool_mode {
    SPEC_POOL_TRANSACTION = 0, /* default, as for PgBouncer deployments in front of many apps */
    SPEC_POOL_SESSION,
    SPEC_POOL_STATEMENT,
} spec_pool_mode_t;

/* Cluster.spec.proxy.serverTLS: TLS from the proxy to the cluster's servers, as libpq's
 * sslmode names. Anything but disable also turns TLS on in dbplane's PostgreSQL servers
 * (a self-signed certificate per cluster); PostgreSQL clusters only. */
typedef enum spec_server_tls {
    SPEC_SERVER_TLS_DISABLE = 0, /* default */
    SPEC_SERVER_TLS_PREFER,
    SPEC_SERVER_TLS_REQUIRE,
    SPEC_SERVER_TLS_VERIFY_FULL,
} spec_server_tls_t;

typedef enum spec_redis_class {
    SPEC_REDIS_CLASS_NONE = 0,
    SPEC_REDIS_CLASS_CACHE,   /* allkeys-lru, no RDB, no AOF */
    SPEC_REDIS_CLASS_SESSION, /* volatile-lru, AOF everysec + RDB */
    SPEC_REDIS_CLASS_QUEUE,   /* volatile-lru, AOF everysec + RDB */
} spec_redis_class_t;

typedef enum spec_update_strategy {
    SPEC_UPDATE_REPLICAS_FIRST_PRIMARY_LAST = 0, /* default */
    SPEC_UPDATE_ALL_AT_ONCE,
} spec_update_strategy_t;

typedef enum spec_backup_type {
    SPEC_BACKUP_LOGICAL = 0,
    SPEC_BACKUP_PHYSICAL,
} spec_backup_type_t;

typedef enum spec_backup_target {
    SPEC_BACKUP_TARGET_PREFER_REPLICA = 0, /* default */
    SPEC_BACKUP_TARGET_PRIMARY,
    SPEC_BACKUP_TARGET_REPLICA,
} spec_backup_target_t;

typedef enum spec_compression {
    SPEC_COMPRESSION_ZSTD = 0, /* default */
    SPEC_COMPRESSION_GZIP,
    SPEC_COMPRESSION_NONE,
} spec_compression_t;

/* Cluster.spec.proxy.pool */
typedef struct spec_pool {
    int mode;                          /* spec_pool_mode_t; `mode` field */
    spec_mark_t mode_at;
    bool mode_set;
    spec_int_t size;                   /* server connections per (database, user); default 20 */
    spec_int_t min_size;               /* `minSize`, default 0 */
    spec_int_t reserve_size;           /* `reserveSize`, default 0 */
    spec_int_t max_client_connections; /* `maxClientConnections`, default 1000 */
    spec_dur_t query_wait_timeout;     /* `queryWaitTimeout`, default 120s */
    spec_dur_t idle_in_transaction_timeout; /* `idleInTransactionTimeout`, default 0 = off */
    spec_dur_t server_idle_timeout;    /* `serverIdleTimeout`, default 600s */
    spec_dur_t server_lifetime;        /* `serverLifetime`, default 3600s */
    spec_dur_t client_login_timeout;   /* `clientLoginTimeout`, default 60s */
    bool set;
    spec_mark_t at;
} spec_pool_t;

/* Cluster.spec.proxy */
typedef struct spec_proxy {
    spec_int_t port;              /* read-write endpoint port (1..65535) */
    spec_int_t ro_port;           /* `roPort`: read-only endpoint; default port + 1 */
    spec_str_t address;           /* listen address, default 127.0.0.1 */
    spec_bool_t read_write_split; /* `readWriteSplit` (MariaDB/MySQL protocol) */
    spec_dur_t keepalive;         /* ping idle backend connections at this period */
    int server_tls;               /* spec_server_tls_t; `serverTLS` (added), default disable */
    bool server_tls_set;
    spec_mark_t server_tls_at;
    spec_pool_t pool;
    bool set;
    spec_mark_t at;
} spec_proxy_t;

/* Cluster.spec.replication */
typedef struct spec_replication {
    int mode; /* spec_repl_mode_t: async | semi-sync | sync */
    bool mode_set;
    spec_mark_t mode_at;
    spec_bool_t gtid_strict_mode; /* `gtidStrictMode`, MariaDB only; default true */
    bool set;
    spec_mark_t at;
} spec_replication_t;

/* Cluster.spec.failover */
typedef struct spec_failover {
    spec_bool_t auto_;       /* `auto`, default true */
    spec_dur_t interval;     /* probe period, default 1s */
    spec_int_t failcount;    /* consecutive failed probes before failover, default 3 */
    spec_bytes_t max_lag;    /* `maxLag`: skip candidates further behind (bytes), default 16Mi */
    spec_bool_t auto_rejoin; /* `autoRejoin`, default true */
    bool set;
    spec_mark_t at;
} spec_failover_t;

/* Cluster.spec.redis */
typedef struct spec_redis {
    int class_; /* spec_redis_class_t; `class` */
    bool class_set;
    spec_mark_t class_at;
    spec_bytes_t maxmemory;      /* default 80% of Cluster.spec.memory */
    spec_str_t maxmemory_policy; /* `maxmemoryPolicy`: overrides the class */
    bool set;
    spec_mark_t at;
} spec_redis_t;

/* kind: Cluster */
typedef struct spec_cluster {
    int engine; /* spec_engine_t, required */
    spec_mark_t engine_at;
    spec_str_t version;   /* major version: "15" (postgresql), "10.11" (mariadb), "7" (redis) */
    spec_int_t instances; /* 1 primary + (n-1) replicas; 1..9, default 1 */
    spec_bytes_t memory;
    spec_bytes_t storage;
    spec_map_t config;    /* engine settings in the engine's own syntax */
    spec_replication_t replication;
    spec_proxy_t proxy;
    spec_failover_t failover;
    int update_strategy; /* spec_update_strategy_t; `updateStrategy` */
    spec_mark_t update_strategy_at;
    spec_redis_t redis;
    spec_str_t bootstrap_backup; /* `bootstrapFrom.backup`: new and rebuilt replicas start from
                                    the newest verified run of this physical Backup plus the
                                    WAL archive (PG) or the primary's binary logs (MariaDB),
                                    instead of a clone of the primary; not for Redis */
} spec_cluster_t;

/* kind: Database */
typedef struct spec_database {
    spec_str_t cluster;   /* Cluster name, required */
    spec_str_t name;      /* engine-level database name, required */
    spec_str_t owner;     /* engine-level username of a declared User (PostgreSQL) */
    spec_str_t charset;   /* MariaDB character set, default utf8mb4 */
    spec_str_t collation; /* MariaDB collation */
    spec_int_t max_connections; /* `maxConnections` (added): server connections the proxy
                                   opens to this database across users, endpoints and
                                   workers (PgBouncer's max_db_connections); default -1 =
                                   no cap. PostgreSQL clusters only. */
} spec_database_t;

/* kind: User */
typedef struct spec_user {
    spec_str_t cluster;
    spec_str_t username;                     /* engine-level login name, required */
    spec_secret_ref_t password_secret_key_ref; /* `passwordSecretKeyRef`; generated if absent */
    spec_int_t max_user_connections;         /* `maxUserConnections`; default -1 = unlimited */
    spec_dur_t rotation_period;              /* `rotation.period` */
    spec_str_t host;                         /* MariaDB host part, default '%' */
} spec_user_t;

/* kind: Grant */
typedef struct spec_grant {
    spec_str_t cluster;
    spec_str_t username;      /* a declared User's spec.username on the same cluster */
    spec_str_t database;      /* a declared Database's spec.name on the same cluster */
    spec_strlist_t privileges; /* upper-case engine privilege names, "ALL PRIVILEGES" */
    spec_str_t table;         /* optional: restrict to one table; default all */
    spec_bool_t grant_option; /* `grantOption` */
} spec_grant_t;

/* kind: Secret. Data is at the document's top level (as Kubernetes Secrets). */
typedef struct spec_secret {
    spec_map_t string_data;    /* `stringData`: values given in the spec */
    spec_strlist_t generate_keys; /* `generate.keys`: values dbplane creates once and keeps */
    spec_int_t generate_length;   /* `generate.length`, 8..256, default 32 */
} spec_secret_t;

/* kind: BackupStore: exactly one of posix or s3. */
typedef struct spec_backup_store {
    spec_str_t posix_path; /* `posix.path`; relative paths are relative to the spec file */
    bool is_s3;
    spec_str_t s3_endpoint;
    spec_str_t s3_bucket;
    spec_str_t s3_prefix;
    spec_str_t s3_region;
    spec_secret_ref_t s3_access_key_id;     /* `accessKeyIdSecretKeyRef` */
    spec_secret_ref_t s3_secret_access_key; /* `secretAccessKeySecretKeyRef` */
    spec_bool_t s3_force_path_style;        /* `forcePathStyle`, default true */
} spec_backup_store_t;

/* kind: Backup */
typedef struct spec_backup {
    spec_str_t cluster;
    int type; /* spec_backup_type_t, required */
    spec_mark_t type_at;
    spec_str_t schedule;   /* cron expression, validated */
    spec_cron_t cron;      /* parsed schedule when set */
    spec_dur_t retention;  /* by age */
    spec_int_t retention_count; /* `retentionCount`: keep at most N complete runs */
    spec_str_t store;      /* BackupStore name */
    spec_str_t prefix;     /* path prefix inside the store */
    int target;            /* spec_backup_target_t */
    spec_mark_t target_at;
    int compression;       /* spec_compression_t */
    spec_mark_t compression_at;
    spec_strlist_t databases; /* logical: only these databases */
    spec_bool_t verify;    /* restore-test each run; default true for physical */
    spec_secret_ref_t encryption_key; /* `encryption.secretKeyRef`: AES-256-GCM key */
    spec_bool_t pitr;      /* continuous archiving (PostgreSQL WAL, MariaDB binary logs)
                              to the Backup's store for point-in-time restores; physical
                              Backups only, one per cluster; default false */
    spec_bytes_t archive_queue_max; /* `archiveQueueMax`: PostgreSQL WAL waiting in the
                              spool for the store, at most (bytes); past it the server's
                              segments are dropped, not queued, so a store that cannot take
                              them never fills the disk (a WalArchiveQueueFull event, then a
                              gap in the archive). Default 4Gi; 0 = no bound */
} spec_backup_t;

/* kind: Restore */
typedef struct spec_restore {
    spec_str_t backup;        /* a Backup name, or ... */
    spec_str_t source_store;  /* ... `source.store` + `source.path` */
    spec_str_t source_path;
    spec_str_t target_cluster; /* `target.cluster`: the new cluster's name, required */
    spec_cluster_t *target_spec; /* `target.spec`: overrides; NULL when absent */
    spec_str_t point_in_time; /* `pointInTime`, RFC 3339 */
    time_t point_in_time_ts;  /* parsed, UTC seconds */
    spec_bool_t in_place;     /* `inPlace`: restore over target.cluster (needs force) */
} spec_restore_t;

/* kind: SqlJob */
typedef struct spec_sql_job {
    spec_str_t cluster;
    spec_str_t database;
    spec_str_t username;        /* run as this declared user; default the admin */
    spec_str_t sql;             /* inline SQL, or ... */
    spec_str_t sql_file;        /* `sqlFile`, relative to the spec file */
    spec_strlist_t depends_on;  /* `dependsOn`: SqlJob names in the same tenant */
} spec_sql_job_t;

/* kind: CredentialRole */
typedef struct spec_credential_role {
    spec_str_t cluster;
    spec_strlist_t creation_statements;   /* with {{name}}, {{password}}, {{expiration}} */
    spec_strlist_t revocation_statements; /* default: drop the user */
    spec_dur_t default_ttl;               /* `defaultTTL`, default 1h */
    spec_dur_t max_ttl;                   /* `maxTTL`, default 24h */
} spec_credential_role_t;

/* kind: Tenant */
typedef struct spec_tenant {
    spec_int_t quota_clusters;    /* `quotas.clusters` */
    spec_int_t quota_connections; /* `quotas.connections` */
    spec_bytes_t quota_storage;   /* `quotas.storage` */
    spec_str_t plan;
} spec_tenant_t;

/* One document. */
typedef struct spec_resource {
    spec_kind_t kind;
    spec_str_t name;   /* metadata.name: DNS label, required */
    spec_str_t tenant; /* metadata.tenant, default "default" (v always set) */
    spec_mark_t at;    /* start of the document */
    json_t *json;      /* the whole document as JSON, owned (for the store and `get -o json`) */
    union {
        spec_cluster_t cluster;
        spec_database_t database;
        spec_user_t user;
        spec_grant_t grant;
        spec_secret_t secret;
        spec_backup_store_t backup_store;
        spec_backup_t backup;
        spec_restore_t restore;
        spec_sql_job_t sql_job;
        spec_credential_role_t credential_role;
        spec_tenant_t tenant;
    } u;
} spec_resource_t;

/* A set of resources from one or more sources. Owns every resource, string and file name. */
typedef struct spec_set {
    spec_resource_t **items;
    size_t n;
    size_t cap;
    char **files; /* source names, referenced by spec_mark_t.file */
    size_t nfiles;
} spec_set_t;

typedef enum spec_severity {
    SPEC_ERROR = 0,
    SPEC_WARNING,
} spec_severity_t;

/* One problem found in a spec. */
typedef struct spec_diag {
    spec_severity_t severity;
    char *file;  /* owned copy */
    int line;    /* 1-based; 0 when unknown */
    int col;
    char *path;  /* field path, e.g. "Cluster/pg-cluster: spec.proxy.pool.size"; owned */
    char *msg;   /* owned */
    char *hint;  /* owned; may be NULL */
} spec_diag_t;

typedef struct spec_diags {
    spec_diag_t *v;
    size_t n;
    size_t cap;
    size_t errors; /* count of SPEC_ERROR entries */
} spec_diags_t;

/* Initialises an empty set / diagnostics list. */
void spec_set_init(spec_set_t *set);
void spec_diags_init(spec_diags_t *d);

/* Frees everything the set owns (the set struct itself is the caller's). */
void spec_set_free(spec_set_t *set);
void spec_diags_free(spec_diags_t *d);

/* Parses a file of YAML documents into `set`, appending resources and collecting problems
 * (syntax, unknown kind or field, wrong type, bad quantity/duration/cron/enum, missing
 * required field, duplicates) into `diags`. Returns 0 when no error was added (warnings
 * allowed), DBP_EINVAL when diags gained errors, DBP_EIO when the file cannot be read (also
 * reported as a diag). Resources with errors are still added when their kind and name are
 * known, so cross-reference checks can run; callers must not act on a set with errors. */
int spec_parse_file(spec_set_t *set, const char *path, spec_diags_t *diags)
    __attribute__((warn_unused_result));

/* As spec_parse_file for a buffer of `len` bytes; `name` is used as the file name in
 * positions (e.g. "<stdin>", "<store>"). The buffer is borrowed. JSON is accepted too. */
int spec_parse_buffer(spec_set_t *set, const char *name, const char *buf, size_t len,
                      spec_diags_t *diags) __attribute__((warn_unused_result));

/* Cross-resource validation of `set`: dangling references (a Grant to an undeclared User,
 * a Backup to an undeclared BackupStore, ...), duplicate proxy ports, engine-specific
 * rules (Redis logical backups, privilege names per engine, class/policy warnings), tenant
 * quotas. References may also resolve to resources in `known` (e.g. the daemon's current
 * resources when applying a partial file); `known` may be NULL. Returns 0 or DBP_EINVAL. */
int spec_validate(const spec_set_t *set, const spec_set_t *known, spec_diags_t *diags)
    __attribute__((warn_unused_result));

/* Prints each diagnostic as "file:line:col: error: PATH: MSG (hint: HINT)" to `out`. */
void spec_diags_print(const spec_diags_t *d, FILE *out);

/* Finds a resource by kind, tenant and metadata.name; NULL when absent. Borrowed. */
spec_resource_t *spec_set_find(const spec_set_t *set, spec_kind_t kind, const char *tenant,
                               const char *name);

/* Moves every resource of `from` into `into`, replacing resources with the same kind,
 * tenant and name. `from` is left empty (its file names move too). */
void spec_set_merge(spec_set_t *into, spec_set_t *from);

/* "Cluster", "Database", ... ; and the reverse (case-sensitive, also accepts lower-case
 * plural or singular CLI spellings like "clusters", "cluster"). Returns -1 if unknown. */
const char *spec_kind_str(spec_kind_t kind);
int spec_kind_parse(const char *s);

/* "postgresql" / "mariadb" / "redis" / "none". */
const char *spec_engine_str(spec_engine_t e);

/* Unit parsers used by the spec and the CLI. Each returns 0, or DBP_EINVAL with a message
 * of at most `errlen` bytes in `errbuf` (may be NULL). */
/* Quantity: plain bytes or Ki Mi Gi Ti (binary) suffix; also K M G T (decimal, 10^3). */
int spec_parse_quantity(const char *s, uint64_t *bytes, char *errbuf, size_t errlen);
/* Duration: integer followed by ms, s, m, h or d; a sequence like "1h30m" is accepted. */
int spec_parse_duration(const char *s, int64_t *ms, char *errbuf, size_t errlen);
/* Cron: 5 fields, or @hourly @daily @weekly @monthly @yearly. */
int spec_cron_parse(const char *s, spec_cron_t *out, char *errbuf, size_t errlen);
/* The first time strictly after `after` (UTC, whole minutes) matching `c`; -1 if none
 * within 5 years. */
time_t spec_cron_next(const spec_cron_t *c, time_t after);
/* Formats a duration in ms as "500ms", "30s", "5m", "24h", "30d" (largest exact unit);
 * 0 is "0s". */
void spec_format_duration(int64_t ms, char *buf, size_t len);
/* (added) RFC 3339 timestamp ("2026-11-22T03:30:00Z", "2026-11-22T05:30:00+02:00",
 * optional fractional seconds, which are dropped) to UTC seconds since the epoch. A time
 * zone is required. Returns 0 or DBP_EINVAL with a message in errbuf. */
int spec_parse_rfc3339(const char *s, time_t *out, char *errbuf, size_t errlen);

/* (added) "error" / "warning". */
const char *spec_severity_str(spec_severity_t sev);

#endif
