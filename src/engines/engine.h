/*
 * engine.h: the engine driver interface, the spine of dbplane. Reconcile, HA and backup
 * code are written once against these operations; engines/postgresql.c (libpq),
 * engines/mariadb.c (MariaDB Connector/C) and engines/redis.c (hiredis) implement them.
 * Engine details (SQL, config syntax, file layout) never leak above this interface.
 *
 * An instance is one server process of a cluster. The control plane owns its directory
 * layout and port; the driver owns what goes inside the data directory. Drivers are
 * stateless: every call gets the instance description and opens what it needs.
 * Every operation returns 0 or a negative DBP_E* code with detail in `err`; "ensure"
 * operations are idempotent and return 1 when they changed something, 0 when the server
 * already matched.
 */
#ifndef DBP_ENGINES_ENGINE_H
#define DBP_ENGINES_ENGINE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"
#include "common/proc.h"
#include "spec/spec.h"

/* One server of a cluster, as the control plane lays it out. All paths absolute. */
typedef struct engine_instance {
    const char *tenant;         /* borrowed */
    const char *cluster;        /* borrowed */
    char name[96];              /* "<cluster>-<ordinal>" */
    int ordinal;
    char dir[PATH_MAX];         /* instance root, owned by the control plane */
    char data_dir[PATH_MAX];    /* server data directory: <dir>/data */
    char log_path[PATH_MAX];    /* server output: <dir>/server.log */
    char tool_log_path[PATH_MAX]; /* one-shot tools (initdb, basebackup): <dir>/tools.log */
    char sock_dir[108];         /* directory for the server's unix socket (short path) */
    char host[64];              /* TCP listen address, "127.0.0.1" */
    int port;                   /* TCP port */
    const spec_cluster_t *spec; /* borrowed: the Cluster spec */
    const dbp_runas_t *runas;   /* borrowed: the account servers and tools run as */
    /* Internal credentials for engines that cannot use peer authentication (Redis ACL,
     * MariaDB replication): generated once per cluster and kept in the secret store
     * (Secret "dbplane-internal-<cluster>", keys "admin" and "replication"). Borrowed;
     * never log them, never put them in argv or in a plaintext file. */
    const char *admin_password;
    const char *repl_password;
    int probe_timeout_ms;       /* give up on an unresponsive server after this; 0 = 3000 */
    /* Continuous archiving for point-in-time recovery (issue 7; added by the PITR work).
     * archive_spool: the cluster's spool directory (owned by the service user), where the
     * server hands over each finished WAL segment / binlog through `<archive_exe>
     * wal-push`; the daemon ships the spool to the BackupStore as root. archive_exe: the
     * dbplane binary, borrowed; NULL = the cluster does not archive. */
    char archive_spool[PATH_MAX];
    const char *archive_exe;
    uint64_t archive_queue_max; /* spool bound passed to wal-push (bytes); 0 = none */
    /* The cluster's TLS directory (<data>/clusters/<tenant>/<cluster>/tls), shared by its
     * instances: a PostgreSQL cluster with spec.proxy.serverTLS other than disable keeps its
     * self-signed server.crt (also the proxy's CA bundle for verify-full) and server.key
     * (0600, service user) there. Empty: no TLS. */
    char tls_dir[PATH_MAX];
} engine_instance_t;

/* The directory inside a restored data directory that holds the archived WAL fetched for
 * a point-in-time recovery (restore_command reads it through `dbplane wal-fetch`); the
 * driver removes it, and the recovery settings, once recovery has ended. */
#define ENGINE_WAL_RESTORE_DIR "dbplane_wal_restore"

/* The role a server reports about itself. */
typedef enum engine_role {
    ENGINE_ROLE_UNKNOWN = 0,
    ENGINE_ROLE_PRIMARY,
    ENGINE_ROLE_REPLICA,
} engine_role_t;

/* Replication as the primary sees one replica. */
typedef struct engine_replica_stat {
    char name[96];      /* instance name (PG application_name) */
    char state[32];     /* "streaming", "catchup", ... */
    int64_t lag_bytes;  /* primary position minus replica replay position; -1 unknown */
    int64_t lag_ms;     /* replay lag in milliseconds; -1 unknown */
} engine_replica_stat_t;

#define ENGINE_MAX_REPLICAS 16

/* The result of one probe. */
typedef struct engine_probe {
    bool reachable;         /* the server answered a query */
    engine_role_t role;
    char position[128];     /* LSN (PG), GTID (MariaDB), offset (Redis), as text */
    uint64_t position_value; /* the same as a number that grows with the stream (PG LSN as
                                bytes, Redis offset, MariaDB GTID sequence number) for
                                choosing the most advanced replica; 0 = unknown */
    bool streaming;         /* replica: connected to its primary and receiving */
    char broken[256];       /* replica: why its replication stopped for good and will not
                               resume by itself ("" otherwise); the reconciler rebuilds it
                               from the primary (init_replica). MariaDB: the IO thread
                               stopped with error 1236, the primary lacks the binary logs
                               the replica's GTID position needs */
    char repl_state[96];    /* replica: its replication as the server reports it, for
                               messages (PostgreSQL: "wal receiver <status> on timeline N",
                               or "no wal receiver"); "" when the engine does not say */
    int nreplicas;          /* primary: replicas it sees */
    engine_replica_stat_t replicas[ENGINE_MAX_REPLICAS];
    char version[64];       /* server version string */
    /* Memory and persistence, for engines that report them (Redis); 0 / "" otherwise. */
    int64_t mem_used;       /* bytes the server holds for data (Redis used_memory) */
    int64_t mem_limit;      /* bytes; 0 = no limit (Redis maxmemory) */
    int64_t evicted_keys;   /* keys evicted for memory since the server started */
    char persistence[48];   /* last save status, e.g. "rdb:ok aof:ok", "rdb:ok aof:off" */
} engine_probe_t;

/* ---- backup and restore (optional; engines/postgresql_backup.c, mariadb_backup.c,
 *      redis_backup.c) ----------------------------------------------------------- */

/* Receives the next `len` bytes of a backup stream produced by the engine's tool (a tar
 * stream, a dump). `buf` is a view valid during the call. Returns 0, or a negative DBP_E*
 * code (with err filled) that stops the backup: the driver kills its tool and returns it. */
typedef int (*engine_write_fn)(void *ud, const void *buf, size_t len, dbp_err_t *err);

/* Supplies the next bytes of a restore stream into buf (at most cap). Returns the count
 * (> 0), 0 at the end of the stream, or a negative DBP_E* code (with err filled) that
 * stops the restore. */
typedef long (*engine_read_fn)(void *ud, void *buf, size_t cap, dbp_err_t *err);

/* What the driver learned while taking a backup, for the manifest. */
typedef struct engine_backup_info {
    char start_position[128]; /* PG: WAL start LSN of a base backup; current LSN for a dump.
                                 MariaDB: the GTID list of the backup's consistent point
                                 (mariadb-backup's, or mariadb-dump --master-data's).
                                 Redis: the replication offset of the RDB snapshot */
    char end_position[128];   /* PG: WAL end LSN of a base backup; "" when unknown */
    char timeline[48];        /* PG: timeline of the start point, decimal; Redis: the
                                 replication ID the offset belongs to; "" unknown */
    char version[64];         /* server_version of the source */
} engine_backup_info_t;

#define ENGINE_MAX_DATABASES 64

/* One database as seen by an inventory. */
typedef struct engine_db_inventory {
    char name[64];
    int64_t tables; /* user tables (PG: relkind r/p outside pg_catalog, information_schema;
                       MariaDB: base tables outside the system schemas; Redis: 0) */
    int64_t rows;   /* total rows (Redis: keys) counted by a full read; -1 when not counted */
} engine_db_inventory_t;

/* The databases of a server, for logical backups and for verification. */
typedef struct engine_inventory {
    int ndb;
    engine_db_inventory_t dbs[ENGINE_MAX_DATABASES]; /* ordered by name; templates excluded */
    char version[64];
    char position[128]; /* PG: current LSN (replay LSN on a standby) read with the version,
                           the start position of a logical backup taken next; "" when the
                           engine reports none */
    bool in_recovery; /* the server is still a standby / replaying */
} engine_inventory_t;

/* How much an inventory reads (engine_ops_t.inventory). */
typedef enum engine_inv_depth {
    ENGINE_INV_COUNT = 0,     /* databases and their table counts */
    ENGINE_INV_FULL_READ = 1, /* and every row of every table (fills rows) */
    ENGINE_INV_NAMES = 2      /* databases only, as few round trips as the engine allows:
                                 tables is -1 where counting costs a query of its own (a
                                 backup counts them while its tool runs) */
} engine_inv_depth_t;

/* Options of a restore. */
typedef struct engine_restore_opts {
    bool clean;  /* logical: drop the objects of the dump before re-creating them */
    bool create; /* logical: create the database first (absent is created, present kept) */
    const char *restore_command;      /* physical PITR: command fetching WAL (%f %p), or NULL */
    const char *recovery_target_time; /* physical PITR: "YYYY-MM-DD HH:MM:SS+00", or NULL */
} engine_restore_opts_t;

/* One binary log of a primary, as binlog_list reports it (MariaDB PITR, backup/binlog.c). */
typedef struct engine_binlog {
    char name[64];       /* file name, "mariadb-bin.000003" */
    char path[PATH_MAX]; /* absolute path in the data directory (readable by root) */
    int64_t size;        /* bytes, as SHOW BINARY LOGS reports them */
} engine_binlog_t;

/* What an archived binary log holds, for ordering the archive and finding gaps. GTIDs are
 * "domain-server-seq"; seq numbers are those of `domain` (dbplane writes one domain). */
typedef struct engine_binlog_index {
    uint32_t domain;        /* GTID domain of the sequence numbers below */
    uint64_t start_seq;     /* the file's Gtid_list (state before its first event); 0 none */
    uint64_t first_seq;     /* first GTID's sequence number in the file; 0 = no transaction */
    uint64_t last_seq;      /* last GTID's sequence number; 0 = no transaction */
    char first_gtid[64];    /* "" when the file holds no transaction */
    char last_gtid[64];
    int64_t first_time;     /* Unix seconds of the first transaction (0 = none) */
    int64_t last_time;      /* Unix seconds of the last event */
} engine_binlog_index_t;

#define ENGINE_MAX_BINLOGS 1024

/* The operations of one engine. Optional operations may be NULL: ensure_database and
 * ensure_grant on engines without those concepts (Redis), where the control plane
 * reports the resource as not applicable. */
typedef struct engine_ops {
    const char *name;   /* "postgresql" */
    spec_engine_t engine;

    /* Checks the installed server binaries for `version` ("15"); DBP_EUNSUPPORTED when
     * they are missing, with the package to install in err. */
    int (*check_install)(const char *version, dbp_err_t *err);

    /* True when the data directory holds a completely initialised server. */
    bool (*is_initialized)(const engine_instance_t *in);

    /* Creates a new, empty primary data directory (initdb). The directory must not exist
     * or be empty. */
    int (*init_primary)(const engine_instance_t *in, dbp_err_t *err);

    /* Creates a replica data directory by cloning `primary` (pg_basebackup with a slot). */
    int (*init_replica)(const engine_instance_t *in, const engine_instance_t *primary,
                        dbp_err_t *err);

    /* Writes the server configuration for its role: as the primary when `primary` is NULL,
     * else as a replica following `primary`. Returns 1 when a file changed, 0 when the
     * files were already current. */
    int (*render_config)(const engine_instance_t *in, const engine_instance_t *primary,
                         dbp_err_t *err);

    /* Fills argv (at most `max` entries including the NULL terminator; strings written
     * into `buf` of `buflen` bytes) with the command that runs the server in the
     * foreground. */
    int (*server_argv)(const engine_instance_t *in, char **argv, int max, char *buf,
                       size_t buflen, dbp_err_t *err);

    int stop_signal;   /* signal for a clean, fast shutdown (PG: SIGINT) */
    int reload_signal; /* signal to re-read configuration (PG: SIGHUP), 0 if none */

    /* Probes a running server: role, position, replication state. A server that does not
     * answer gives 0 with out->reachable = false. */
    int (*probe)(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err);

    /* On the primary: creates internal accounts and per-replica replication slots for
     * the `nreplicas` replica instances. Idempotent. */
    int (*ensure_internal)(const engine_instance_t *primary, const engine_instance_t *replicas,
                           int nreplicas, dbp_err_t *err);

    /* On the primary: the declared login with `password` (borrowed, never logged). */
    int (*ensure_user)(const engine_instance_t *primary, const spec_user_t *user,
                       const char *password, dbp_err_t *err);

    /* On the primary: the declared database (and owner). */
    int (*ensure_database)(const engine_instance_t *primary, const spec_database_t *db,
                           dbp_err_t *err);

    /* On the primary: the declared privileges. */
    int (*ensure_grant)(const engine_instance_t *primary, const spec_grant_t *grant,
                        dbp_err_t *err);

    /* On the primary: drops a login; absent is success. */
    int (*drop_user)(const engine_instance_t *primary, const char *username, dbp_err_t *err);

    /* On the primary: runs `sql` (one or more statements, the engine's own syntax) in
     * `database` as `username` (NULL: dbplane's admin account; `password` is that user's,
     * borrowed, may be NULL where the engine can switch roles without it). Statements run
     * as one implicit transaction where the engine allows it. Returns 0, or DBP_EENGINE
     * with the server's error message. Used by SqlJob. */
    int (*run_sql)(const engine_instance_t *primary, const char *database, const char *username,
                   const char *password, const char *sql, dbp_err_t *err);

    /* High availability (ha/). promote: turns a running replica into a writable primary
     * and waits until it accepts writes (the caller has fenced the old primary and bumped
     * the topology epoch first). rejoin: makes a stopped former primary's data directory
     * able to follow `primary` (PostgreSQL: pg_rewind); on failure the caller rebuilds it
     * with init_replica. Both optional: NULL means the engine has no HA yet. */
    int (*promote)(const engine_instance_t *in, dbp_err_t *err);
    int (*rejoin)(const engine_instance_t *in, const engine_instance_t *primary, dbp_err_t *err);
    /* Optional, switchover only: on the running primary, before clients are paused, does
     * the work its clean shutdown would otherwise do inside the pause (PostgreSQL: a
     * CHECKPOINT, as Patroni runs before a switchover). Best effort: an error is logged
     * and the switchover goes on. */
    int (*prepare_switchover)(const engine_instance_t *primary, dbp_err_t *err);
    /* A primary whose process died is replaced by a replica (failover) instead of being
     * restarted in place, when the cluster has replicas. For engines whose restart comes
     * back empty or behind its replicas (Redis: no persistence, or AOF fsynced once a
     * second), where a restart in place would make the replicas resync to the loss. */
    bool failover_on_crash;
    /* A replica that runs but has not streamed from a healthy primary for a bound is
     * rebuilt by the reconciler (ha_stream_check, through init_replica or the Cluster's
     * bootstrapFrom). For engines whose replica, once it cannot follow, never recovers by
     * itself and for which "not streaming" is never a normal long phase: PostgreSQL (a
     * timeline fork, a WAL record it cannot read: it retries forever). Not Redis (a full
     * resync shows the link down for as long as the transfer takes, and a replica resyncs
     * by itself); not MariaDB yet (its replication threads are stopped on purpose by some
     * steps, and a primary that cannot serve a replica, error 1236, is reported through
     * engine_probe_t.broken instead). */
    bool rebuild_not_streaming;
    /* Substrings that mark the lines of a server's log worth quoting when it does not
     * replicate (PostgreSQL: "FATAL:", "forked off", "prev-link", ...), NULL-terminated;
     * NULL: "FATAL", "ERROR" and "PANIC". See engine_log_last_match. */
    const char *const *repl_log_marks;

    /* Optional, rolling changes: after a reload, whether the running server `in` still
     * runs with settings its configuration file changes only at a restart (PostgreSQL:
     * postmaster-context parameters, pg_settings.pending_restart). Returns 1 and the
     * names of those settings, comma-separated, in `names` (`len` bytes; truncated), 0
     * when the server runs its whole configuration, or a negative DBP_E* code when it
     * could not ask. NULL: the engine applies every setting it renders with a reload (or
     * cannot tell), and only a replaced server binary triggers a rolling restart. */
    int (*needs_restart)(const engine_instance_t *in, char *names, size_t len, dbp_err_t *err);

    /* --- backup and restore (optional; NULL when the engine has no such backup) ---- */

    /* Streams a physical backup of the running instance `in` (a primary or a replica)
     * through `write`: PG a tar of the data directory with the WAL needed to make it
     * consistent (pg_basebackup -Ft -X fetch). Fills *info. Never buffers the whole
     * backup. Returns 0, DBP_EIO / DBP_EENGINE from the tool, or write's error. */
    int (*backup_physical)(const engine_instance_t *in, engine_backup_info_t *info,
                           engine_write_fn write, void *ud, dbp_err_t *err);

    /* Streams a logical backup of one database of the running instance `in` (PG:
     * pg_dump custom format, zlib level 1 inside, compressed again by the pipeline), or of the
     * cluster-wide objects (roles, tablespaces: a SQL script) when `database` is NULL. */
    int (*backup_logical)(const engine_instance_t *in, const char *database,
                          engine_backup_info_t *info, engine_write_fn write, void *ud,
                          dbp_err_t *err);

    /* Makes in->data_dir (absent or empty; created owned by the service user) from a
     * physical backup stream read through `read`, and marks the instance initialised.
     * The server is not started; render_config must run before it is. With
     * opts->recovery_target_time, the server recovers to that time from WAL fetched by
     * opts->restore_command, then promotes. On error the data dir is removed. */
    int (*restore_physical)(const engine_instance_t *in, const engine_restore_opts_t *opts,
                            engine_read_fn read, void *ud, dbp_err_t *err);

    /* Restores a logical backup stream of `database` into the running instance `in`
     * (opts->create, opts->clean), or the cluster-wide objects when `database` is NULL
     * (objects that already exist are kept). */
    int (*restore_logical)(const engine_instance_t *in, const char *database,
                           const engine_restore_opts_t *opts, engine_read_fn read, void *ud,
                           dbp_err_t *err);

    /* Lists the databases of the running instance with their table counts; with
     * ENGINE_INV_FULL_READ also reads every row of every table (so page checksum failures
     * surface) and fills rows; with ENGINE_INV_NAMES only the names (and version, role,
     * position), tables -1 where counting would cost more. Used for backups (names
     * before the tool starts, counts while it runs) and verification. */
    int (*inventory)(const engine_instance_t *in, engine_inv_depth_t depth,
                     engine_inventory_t *out, dbp_err_t *err);

    /* --- binary log archiving for point-in-time recovery (optional; MariaDB) --------
     * The engine-neutral archive (backup/binlog.c) ships, indexes and replays through
     * these; PostgreSQL archives WAL through archive_command instead (backup/wal.c). */

    /* On the primary: with `flush`, first closes the current binary log (FLUSH BINARY
     * LOGS). Lists the logs (SHOW BINARY LOGS) into out (at most `max`), oldest first;
     * the last one is the open log, still being written. *n is the count. */
    int (*binlog_list)(const engine_instance_t *primary, bool flush, engine_binlog_t *out,
                       int max, int *n, dbp_err_t *err);

    /* Reads the closed binary log at `path` (a local file, event checksums verified) and
     * fills *out. `in` gives the tool log. DBP_EIO when the tool fails (a corrupt file). */
    int (*binlog_index)(const engine_instance_t *in, const char *path,
                        engine_binlog_index_t *out, dbp_err_t *err);

    /* Applies to the running server `in` the transactions of the `n` local binary logs
     * `paths` (in order) that come after GTID list `start` and started before
     * `stop_time` (Unix seconds; events of that second and later are left out), like
     * `mariadb-binlog --start-position=START --stop-datetime=T FILES | mariadb`. Event
     * checksums are verified first. Borrows everything. */
    int (*binlog_replay)(const engine_instance_t *in, const char *const *paths, int n,
                         const char *start, int64_t stop_time, dbp_err_t *err);

    /* Optional, replica bootstrap from a physical run (Cluster.spec.bootstrapFrom) for
     * engines whose new replica catches up from the primary itself (MariaDB: from its
     * binary logs by GTID). On the running `primary`: 0 when a replica restored from a run
     * taken at `position` (the manifest's start_position) can catch up from it, i.e. the
     * position is in the primary's history and its logs still hold everything after it;
     * DBP_ENOENT saying what is missing otherwise. With `replica` not NULL (its data dir
     * just restored, not running) also checks that the data dir starts at `position`.
     * The caller clones the primary when this fails. NULL: the engine catches up another
     * way (PostgreSQL: archived WAL) or cannot bootstrap from a backup. */
    int (*bootstrap_check)(const engine_instance_t *primary, const engine_instance_t *replica,
                           const char *position, dbp_err_t *err);

    /* Object names of backup parts, before the compression and encryption suffixes: the
     * physical stream (PG "data.tar", MariaDB "data.mbstream", Redis "dump.rdb") and the
     * extension of one database's logical dump (PG ".dump", MariaDB ".sql"). NULL means
     * "data.tar" / ".dump". */
    const char *physical_part;
    const char *logical_ext;
    /* zstd level of logical parts when the tool already compresses its dump (PG: zlib
     * level 1 inside pg_dump's archive, which zstd shrinks by ~4 % more on text data): 1
     * spends a third of level 3's CPU for that (docs/benchmarks.md, session 7). 0 = the
     * pipeline's default (3). DBPLANE_BACKUP_ZSTD_LEVEL overrides both. */
    int logical_zstd_level;
} engine_ops_t;

/* The driver for an engine, or NULL when this build has none (the caller reports
 * "engine X is not available in this build"). */
const engine_ops_t *engine_lookup(spec_engine_t engine);

/* The drivers compiled in (engines/<name>.c). */
extern const engine_ops_t engine_postgresql;
extern const engine_ops_t engine_mariadb;
extern const engine_ops_t engine_redis;

/* Writes into buf (len bytes, truncated) the last line of the file at `path` — within its
 * last 16 KiB — that contains one of `marks` (NULL-terminated substrings), or "" when none
 * does or the file cannot be read. Lines that mention a password are never returned (a
 * server log may quote a statement). For event messages about a server's own log:
 * dbp_log_tail_line (common/log.h) with that policy. */
void engine_log_last_match(const char *path, const char *const *marks, char *buf, size_t len);

/* Appends `name` to the comma-separated list in names (a NUL-terminated buffer of len
 * bytes), silently truncating when it is full: needs_restart's output. */
void engine_names_add(char *names, size_t len, const char *name);

/* needs_restart's first question, for engines that never re-read their config file:
 * whether a server up for `uptime_s` seconds started after the file was last written at
 * `conf_mtime` (one second of slack for the uptime's rounding), i.e. runs the current
 * file. Keeps a value the server adjusts at start from reading as pending forever. */
bool engine_conf_current(time_t conf_mtime, int64_t uptime_s);

/* Text of a role for status output: "primary", "replica", "". */
const char *engine_role_str(engine_role_t role);

#endif
