/*
 * store.h: dbplane's state in one SQLite database (WAL mode): the desired resources (as
 * JSON documents with a generation), their observed status, the instances of each cluster
 * (ports, roles, state, lag), the topology epoch of each cluster, the event log and the
 * encrypted secret values. Every SQL statement of the project lives in store.c; the
 * schema is versioned and migrated forward on open.
 *
 * A store_t is one SQLite connection and must be used by one thread at a time; threads
 * open their own (busy timeout 5 s). Strings passed in are borrowed; strings handed to
 * callbacks are views valid only during the callback. Callbacks may call back into the same
 * store (reads, or writes to other tables than the one being listed). Every SQLite failure
 * is DBP_ESTORE with SQLite's message in err (including "database is locked" after the busy
 * timeout); missing required arguments are DBP_EINVAL.
 */
#ifndef DBP_STORE_STORE_H
#define DBP_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct store store_t;

/* Current schema version written by store_open's migrations. */
#define STORE_SCHEMA_VERSION 2

/* Opens (creating if needed) the database at `path`, enables WAL and foreign keys, and
 * applies pending migrations in one transaction. Returns owned *out (close with
 * store_close), or DBP_ESTORE. */
int store_open(store_t **out, const char *path, dbp_err_t *err) __attribute__((warn_unused_result));

/* Closes the connection; NULL is a no-op. */
void store_close(store_t *s);

/* The schema version of an open store (PRAGMA user_version); -1 on error. */
int store_schema_version(store_t *s);

/* --- desired resources -------------------------------------------------------------- */

/* Inserts or replaces a resource document. The generation starts at 1 and increases by one
 * whenever `json` differs from the stored text; *changed (may be NULL) tells whether it
 * did. *generation (may be NULL) receives the resulting generation. */
int store_put_resource(store_t *s, const char *tenant, const char *kind, const char *name,
                       const char *json, int64_t *generation, bool *changed, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Deletes a resource and its status row. DBP_ENOENT when absent. */
int store_delete_resource(store_t *s, const char *tenant, const char *kind, const char *name,
                          dbp_err_t *err) __attribute__((warn_unused_result));

/* One stored resource as handed to callbacks (views valid during the callback). */
typedef struct store_resource {
    const char *tenant;
    const char *kind;
    const char *name;
    const char *json;
    int64_t generation;
    int64_t updated_ms; /* unix time, milliseconds */
    /* status, all NULL/0 when never reported */
    const char *state;   /* "pending" | "ready" | "failed" */
    const char *message; /* last reconcile message */
    int64_t observed_generation;
} store_resource_t;

/* Calls cb for each resource matching tenant and kind (NULL = any), ordered by tenant,
 * kind, name. A non-zero return from cb stops the walk and is returned. */
typedef int (*store_resource_cb)(const store_resource_t *r, void *ud);
int store_list_resources(store_t *s, const char *tenant, const char *kind, store_resource_cb cb,
                         void *ud, dbp_err_t *err) __attribute__((warn_unused_result));

/* Records the observed status of a resource: the generation it was reconciled against,
 * a state ("pending", "ready", "failed") and a message (may be NULL). DBP_ENOENT when the
 * resource itself is not stored (the status row is deleted along with the resource). */
int store_set_status(store_t *s, const char *tenant, const char *kind, const char *name,
                     int64_t observed_generation, const char *state, const char *message,
                     dbp_err_t *err) __attribute__((warn_unused_result));

/* --- instances of clusters ---------------------------------------------------------- */

/* One server of a cluster. Strings are fixed-size so records can be copied freely. */
typedef struct store_instance {
    char tenant[64];
    char cluster[64];
    char name[96];      /* "<cluster>-<ordinal>" */
    int ordinal;        /* 0.. */
    char host[64];      /* "127.0.0.1" */
    int port;           /* allocated once, kept across restarts */
    char role[16];      /* "primary" | "replica" | "" (unknown) */
    char state[16];     /* "running" | "starting" | "stopped" | "failed" */
    char position[128]; /* LSN / GTID / offset text from the last probe */
    int64_t lag_bytes;  /* replay lag in bytes; -1 unknown */
    int64_t lag_ms;     /* replay lag in milliseconds; -1 unknown */
    int64_t updated_ms;
} store_instance_t;

/* Inserts or replaces the instance (key: tenant, cluster, name). `in` is borrowed; its
 * updated_ms is stored as given, or as the current time when 0. */
int store_put_instance(store_t *s, const store_instance_t *in, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reads one instance into *out; DBP_ENOENT when absent. */
int store_get_instance(store_t *s, const char *tenant, const char *cluster, const char *name,
                       store_instance_t *out, dbp_err_t *err) __attribute__((warn_unused_result));

/* Calls cb for each instance of tenant/cluster (NULL = any), ordered by tenant, cluster,
 * ordinal. The record is a view valid during the callback. */
typedef int (*store_instance_cb)(const store_instance_t *in, void *ud);
int store_list_instances(store_t *s, const char *tenant, const char *cluster, store_instance_cb cb,
                         void *ud, dbp_err_t *err) __attribute__((warn_unused_result));

/* Deletes one instance (name != NULL; DBP_ENOENT when absent) or every instance of the
 * cluster (name == NULL; none is not an error). The topology row is kept on purpose, so a
 * re-created cluster continues from its last epoch. */
int store_delete_instance(store_t *s, const char *tenant, const char *cluster, const char *name,
                          dbp_err_t *err) __attribute__((warn_unused_result));

/* True when some instance (any cluster) already holds `port`. A store error is logged and
 * answers true, so a port allocator never hands out a port it could not check. */
bool store_port_taken(store_t *s, int port);

/* --- topology ----------------------------------------------------------------------- */

/* Reads the cluster's topology: *epoch (0 when none yet) and primary instance name (empty
 * when none; `primary` holds at least 96 bytes). */
int store_get_topology(store_t *s, const char *tenant, const char *cluster, int64_t *epoch,
                       char primary[96], dbp_err_t *err) __attribute__((warn_unused_result));

/* Compare-and-set: when the stored epoch equals `expected_epoch` (0 = no row yet), writes
 * epoch+1 with `primary` and returns 0 with *new_epoch set; otherwise DBP_EBUSY (another
 * writer won) and nothing changes. */
int store_cas_topology(store_t *s, const char *tenant, const char *cluster, int64_t expected_epoch,
                       const char *primary, int64_t *new_epoch, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* --- events ------------------------------------------------------------------------- */

/* Appends an event. type: "Normal" | "Warning"; reason: CamelCase ("InstanceRestarted");
 * message: free text without secrets. kind/name identify the object. */
int store_add_event(store_t *s, const char *tenant, const char *kind, const char *name,
                    const char *type, const char *reason, const char *message, dbp_err_t *err)
    __attribute__((warn_unused_result));

typedef struct store_event {
    int64_t id;
    int64_t ts_ms;
    const char *tenant, *kind, *name, *type, *reason, *message;
} store_event_t;

/* Calls cb for events with id > since_id of tenant (NULL = any), oldest first, at most
 * `limit` of the newest ones (limit <= 0: all). */
typedef int (*store_event_cb)(const store_event_t *e, void *ud);
int store_list_events(store_t *s, const char *tenant, int64_t since_id, int limit,
                      store_event_cb cb, void *ud, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Deletes all but the newest `keep` events (keep >= 0); *deleted (may be NULL) receives
 * the number removed. For retention of the event log. */
int store_trim_events(store_t *s, int64_t keep, int64_t *deleted, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* --- secret values (ciphertext only; see secrets/) ---------------------------------- */

/* Stores an opaque blob (nonce + ciphertext + tag produced by secrets/) for one key of a
 * Secret. */
int store_put_secret_blob(store_t *s, const char *tenant, const char *secret, const char *key,
                          const uint8_t *blob, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reads a blob: returns owned *blob (free with free()) and *len; DBP_ENOENT when absent. */
int store_get_secret_blob(store_t *s, const char *tenant, const char *secret, const char *key,
                          uint8_t **blob, size_t *len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Deletes one key of a Secret (key != NULL) or all of them; absent is not an error. */
int store_delete_secret(store_t *s, const char *tenant, const char *secret, const char *key,
                        dbp_err_t *err) __attribute__((warn_unused_result));

/* Calls cb with each key name of a Secret (a view valid during the callback) and the time
 * its value was last written (unix ms), ordered by key; values are not read. A non-zero
 * return from cb stops the walk and is returned. */
typedef int (*store_secret_key_cb)(const char *key, int64_t updated_ms, void *ud);
int store_list_secret_keys(store_t *s, const char *tenant, const char *secret,
                           store_secret_key_cb cb, void *ud, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Runs `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` for multi-step updates. Transactions do
 * not nest: store_begin inside one fails (check store_in_transaction first). Single store_*
 * calls made inside the transaction join it (as savepoints). A failed commit rolls back. */
int store_begin(store_t *s, dbp_err_t *err) __attribute__((warn_unused_result));
int store_commit(store_t *s, dbp_err_t *err) __attribute__((warn_unused_result));
void store_rollback(store_t *s);

/* True while a transaction opened by store_begin (or any explicit one) is open. */
bool store_in_transaction(store_t *s);

/* --- backup catalog (store/catalog.c) --------------------------------------------------
 * One row per backup run, written by the process that takes the backup (`dbplane backup`,
 * which holds its own connection next to the daemon's). A run is inserted as "running"
 * with the pid of its process before anything is uploaded, and becomes "complete" only
 * after its manifest is in the backup store; a run whose process died is turned into
 * "failed" by store_catalog_reap_dead. Deleting a row never touches the backup store. */

/* One backup run. Strings are fixed-size so records can be copied freely. */
typedef struct store_backup {
    char tenant[64];
    char id[96];            /* run id, unique per tenant: "<cluster>-<UTC yyyymmddThhmmssZ>-<type>" */
    char cluster[64];
    char backup[64];        /* the Backup resource's name; "" for an ad-hoc run */
    char type[16];          /* "logical" | "physical" */
    char store[64];         /* the BackupStore's name */
    char path[512];         /* run directory inside the backup store (no leading '/') */
    char status[16];        /* "running" | "complete" | "failed" */
    char message[512];      /* why it failed; "" otherwise */
    char source[96];        /* the instance it was taken from */
    char engine[16];        /* "postgresql" | "mariadb" | "redis" */
    char engine_version[64];
    char position[128];     /* LSN / GTID / offset at the start of the backup */
    int64_t bytes;          /* bytes in the backup store (compressed, encrypted) */
    int64_t raw_bytes;      /* bytes the engine produced */
    int64_t started_ms;     /* unix ms */
    int64_t finished_ms;    /* unix ms; 0 while running */
    int64_t pid;            /* process taking it, while running */
    char verified[16];      /* "" (not verified) | "ok" | "failed" */
    char verify_message[512];
    int64_t verified_ms;    /* unix ms of the last verification; 0 never */
} store_backup_t;

/* Inserts or replaces a run (key: tenant, id). `b` is borrowed. */
int store_backup_put(store_t *s, const store_backup_t *b, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reads one run; DBP_ENOENT when absent. */
int store_backup_get(store_t *s, const char *tenant, const char *id, store_backup_t *out,
                     dbp_err_t *err) __attribute__((warn_unused_result));

/* Calls cb for each run of tenant (NULL = any) and cluster (NULL = any), oldest first
 * (started_ms, id). The record is a view valid during the callback. A non-zero return
 * from cb stops the walk and is returned. */
typedef int (*store_backup_cb)(const store_backup_t *b, void *ud);
int store_backup_list(store_t *s, const char *tenant, const char *cluster, store_backup_cb cb,
                      void *ud, dbp_err_t *err) __attribute__((warn_unused_result));

/* Deletes one run's row; absent is not an error. */
int store_backup_delete(store_t *s, const char *tenant, const char *id, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Records a verification result ("ok" | "failed") and its message for a run. DBP_ENOENT
 * when the run is not catalogued. */
int store_backup_set_verified(store_t *s, const char *tenant, const char *id, const char *result,
                              const char *message, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Marks every "running" run whose process no longer exists (kill(pid, 0) fails with
 * ESRCH) as "failed" with the message "interrupted: process <pid> is gone". *reaped (may
 * be NULL) receives the count. For runs killed midway (kill -9, power loss). */
int store_catalog_reap_dead(store_t *s, int *reaped, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Marks a connection as a guest next to the daemon's (the `dbplane backup` process): it
 * never checkpoints the WAL when it closes, so it can never be the one that resets or
 * deletes the WAL while the daemon still writes to it, whatever the state of the
 * daemon's locks. Checkpoints stay the daemon's job. */
int store_catalog_guest(store_t *s, dbp_err_t *err) __attribute__((warn_unused_result));

#endif
