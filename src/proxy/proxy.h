/*
 * proxy.h: dbplane's protocol-aware proxy — the interface the control plane uses. The
 * proxy runs its own worker threads (libevent, one event base each) and never calls the
 * store: the control plane pushes an immutable configuration snapshot (listeners, pool
 * settings, users with their passwords, and each cluster's topology: epoch, primary,
 * replicas) with proxy_update whenever something changes. Writes go only to the
 * primary of the newest epoch seen; a snapshot with an older epoch for a cluster is
 * ignored.
 */
#ifndef DBP_PROXY_PROXY_H
#define DBP_PROXY_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"

#define PROXY_MAX_BACKENDS 16

/* One server of a cluster as the proxy sees it. */
typedef struct proxy_backend {
    char name[96];  /* instance name */
    char host[64];  /* TCP address, e.g. "127.0.0.1" */
    int port;
    char sock_dir[108]; /* unix socket directory if the server has one ("" = TCP only) */
    bool primary;   /* the topology's primary at `epoch` */
    bool healthy;   /* last probe answered */
} proxy_backend_t;

/* One login the proxy accepts and uses towards the servers. */
typedef struct proxy_user {
    char username[64];
    const char *password; /* borrowed for the call; the proxy keeps what it needs (e.g. a
                             SCRAM verifier and keys), wiped on removal. Never logged. */
    const char *scram_verifier; /* optional, borrowed for the call: a stored SCRAM verifier
                                   (pg_authid form, "SCRAM-SHA-256$iter:salt$stored:server")
                                   that clients are checked against instead of one derived
                                   from the password; the password still logs in to servers */
    int max_connections;  /* server connections for this user across pools; -1 = no cap */
} proxy_user_t;

/* A cap on one database's server connections (PgBouncer's max_db_connections). */
typedef struct proxy_database {
    char name[64];       /* database name as clients send it */
    int max_connections; /* server connections to this database across its users, both
                            endpoints and all workers; -1 = no cap */
} proxy_database_t;

/* Pool modes (Cluster spec proxy.pool.mode). */
typedef enum proxy_pool_mode {
    PROXY_POOL_TRANSACTION = 0,
    PROXY_POOL_SESSION,
    PROXY_POOL_STATEMENT,
} proxy_pool_mode_t;

/* TLS from the proxy to the servers (libpq's sslmode names). Unix-socket connections never
 * use TLS (PostgreSQL offers it only over TCP), whatever the mode. */
typedef enum proxy_server_tls {
    PROXY_SERVER_TLS_DISABLE = 0, /* plaintext (default) */
    PROXY_SERVER_TLS_PREFER,      /* TLS when the server offers it, else plaintext */
    PROXY_SERVER_TLS_REQUIRE,     /* TLS or no connection; the certificate is not checked */
    PROXY_SERVER_TLS_VERIFY_FULL, /* TLS, certificate chain checked against the CA bundle
                                     and its name/IP against the backend's host */
} proxy_server_tls_t;

/* One cluster's endpoints, pools and topology. */
typedef struct proxy_cluster {
    char tenant[64];
    char name[64];
    char engine[16];          /* "postgresql" (others later) */
    char address[64];         /* listen address, default "127.0.0.1" */
    int rw_port;              /* read-write endpoint → primary */
    int ro_port;              /* read-only endpoint → replicas (least connections), else primary; 0 = none */
    proxy_pool_mode_t pool_mode;
    int pool_size;            /* server connections per (database, user) */
    int min_pool_size;
    int reserve_pool_size;
    int max_client_connections;
    int64_t query_wait_timeout_ms;
    int64_t idle_in_transaction_timeout_ms; /* 0 = off */
    int64_t server_idle_timeout_ms;
    int64_t server_lifetime_ms;
    int64_t client_login_timeout_ms;
    proxy_server_tls_t server_tls; /* TLS towards this cluster's servers */
    char server_tls_ca[512];       /* PEM CA bundle for this cluster's verify-full; "" = the
                                      proxy-wide one (proxy_config_t.server_tls_ca_path) */
    int64_t epoch;            /* topology epoch of `backends` */
    proxy_backend_t backends[PROXY_MAX_BACKENDS];
    int nbackends;
    proxy_user_t *users;      /* borrowed for the call */
    int nusers;
    proxy_database_t *databases; /* per-database caps, borrowed for the call; databases not
                                    listed have none */
    int ndatabases;
} proxy_cluster_t;

/* A whole configuration snapshot. Borrowed for the call; the proxy copies it. */
typedef struct proxy_config {
    proxy_cluster_t *clusters;
    int nclusters;
    int workers;              /* worker threads; 0 = half the online cores, at least 1 (the
                                 pooler shares the host with its database servers) */
    bool latency_sched;       /* false (default): workers run under SCHED_BATCH (no wake-up
                                 preemption: more events per epoll_wait, fewer context
                                 switches, see docs/proxy.md "Scheduling"); true: they keep
                                 the normal SCHED_OTHER policy. Read by proxy_start only. */
    const char *tls_cert_path; /* PEM; NULL = generate a self-signed one in tls_dir */
    const char *tls_key_path;
    const char *tls_dir;      /* where a generated certificate is kept */
    const char *server_tls_ca_path; /* PEM CA bundle for server_tls verify-full; NULL = the
                                       system's default paths. Read by proxy_start only. */
} proxy_config_t;

typedef struct proxy proxy_t;

/* Starts the workers and the listeners of `cfg`. Returns owned *out (proxy_stop). */
int proxy_start(proxy_t **out, const proxy_config_t *cfg, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Applies a new snapshot without dropping client connections: new listeners open,
 * removed ones close, users/passwords/pool sizes change for new logins and new server
 * connections, a newer epoch moves new transactions to the new primary. Thread-safe. */
int proxy_update(proxy_t *p, const proxy_config_t *cfg, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Pauses a cluster's endpoints for a switchover, with PgBouncer's PAUSE semantics: from
 * now on no new transaction of the cluster's pools (read-write and read-only) gets a server
 * connection — clients that send one wait in the pool's queue, with no error and no
 * query_wait_timeout — and session-pooled clients are held at their next transaction
 * boundary. Returns 0 once no server connection of the cluster is in a transaction (or a
 * session reset) any more, or DBP_EBUSY when timeout_ms (ms) passed first: the cluster
 * stays paused either way. DBP_ENOENT when the proxy has no such cluster (nothing is
 * paused). Blocks the caller up to timeout_ms; thread-safe. A pause that is never
 * resumed is lifted after PROXY_PAUSE_MAX_MS as a safety net (logged). */
int proxy_pause(proxy_t *p, const char *tenant, const char *cluster, int timeout_ms,
                dbp_err_t *err) __attribute__((warn_unused_result));

#define PROXY_PAUSE_MAX_MS 60000

/* Lifts proxy_pause: the queued clients proceed, in order. Push the new topology with
 * proxy_update first: the workers apply messages in order, so held transactions then go
 * to the new primary, and server connections to the old one are closed, not reused.
 * Idempotent (a cluster that is not paused is left alone). Returns 0, or DBP_ENOMEM/DBP_EIO
 * when a worker could not be told (it then resumes after PROXY_PAUSE_MAX_MS). Thread-safe;
 * does not block. */
int proxy_resume(proxy_t *p, const char *tenant, const char *cluster, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Pools, clients, servers and counters (queries, transactions, bytes, wait time) as an
 * owned JSON document (json_decref). Thread-safe. */
json_t *proxy_stats_json(proxy_t *p);

/* Closes listeners and connections, joins the workers, frees everything. NULL is a no-op. */
void proxy_stop(proxy_t *p);

#endif
