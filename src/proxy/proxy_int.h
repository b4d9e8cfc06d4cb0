/*
 * proxy_int.h: the proxy's internal types, shared by proxy.c (workers, configuration
 * snapshots, listeners, stats), client.c (the client-side state machine), server.c (pools
 * and server connections), stmt.c (prepared-statement tracking) and tls.c. Not a public
 * header: the control plane sees only proxy.h.
 *
 * Threading: every connection, pool and buffer belongs to one worker and is touched only
 * by that worker's thread. Workers share nothing on the per-message path; they meet only
 * through immutable, reference-counted configuration snapshots (px_cfg_t), a few atomic
 * counters on the login/connect path (client, per-user and per-database server caps), and
 * each worker's inbox pipe (new snapshot, cancel request, stats request, stop).
 */
#ifndef DBP_PROXY_PROXY_INT_H
#define DBP_PROXY_PROXY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "proxy/pg.h"
#include "proxy/pgauth.h"
#include "proxy/proxy.h"
#include "proxy/sbuf.h"

#define PX_MAX_WORKERS 64
#define PX_MAX_PARSE (16u << 20)   /* a named Parse we must buffer whole */
#define PX_MAX_SMALL (1u << 20)    /* other messages we must inspect whole */
#define PX_MAX_AUTH_MSG 16384      /* SASL messages before login */
#define PX_MAX_NAME 1024           /* statement/portal names we look at */
#define PX_TICK_MS 100             /* maintenance period */

/* ---- intrusive doubly linked list ---- */
typedef struct px_link {
    struct px_link *prev, *next;
} px_link_t;

static inline void px_list_init(px_link_t *h)
{
    h->prev = h->next = h;
}
static inline bool px_list_empty(const px_link_t *h)
{
    return h->next == h;
}
static inline void px_list_add_tail(px_link_t *h, px_link_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
static inline void px_list_add_head(px_link_t *h, px_link_t *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}
static inline void px_list_del(px_link_t *n)
{
    if (n->next) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
    }
    n->prev = n->next = NULL;
}
#define px_container(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ---- tracked session parameters (restored with SET when a client moves) ---- */
enum {
    PX_P_CLIENT_ENCODING = 0,
    PX_P_DATESTYLE,
    PX_P_TIMEZONE,
    PX_P_APPNAME,
    PX_P_SEARCH_PATH,
    PX_P_SCS,
    PX_P_INTERVALSTYLE,
    PX_NPARAMS,
};
extern const char *const px_param_names[PX_NPARAMS];
/* Index of a tracked parameter (case-insensitive name) or -1. */
int px_param_index(const char *name, size_t len);

/* An interned, reference-counted string of one worker: equal values are one pointer. */
typedef struct px_istr {
    struct px_istr *next;
    uint32_t refs, hash, len;
    char s[];
} px_istr_t;

/* ---- configuration snapshot (immutable once published; shared by workers) ---- */

/* A login: password (owned, wiped on free) and the SCRAM verifier derived once. */
typedef struct px_user {
    char name[64];
    char *password;
    size_t pwlen;
    pgauth_scram_keys_t keys;
    int max_connections;      /* server connections of this user in the cluster; -1 none */
    atomic_int *server_count; /* shared counter (proxy-lifetime), for max_connections */
} px_user_t;

/* A database with a server-connection cap (proxy_database_t). Every server connection to
 * a listed database holds a unit of its counter, capped or not, so that a cap added or
 * lowered by a reload is exact from the first new connection on. */
typedef struct px_db {
    char name[64];
    int max_connections;      /* -1 = no cap */
    atomic_int *server_count; /* shared counter (proxy-lifetime) */
} px_db_t;

/* A cluster: the caller's proxy_cluster_t (users/databases pointers cleared) plus derived
 * data. */
typedef struct px_cluster {
    proxy_cluster_t c;
    px_user_t *users;
    int nusers;
    px_db_t *dbs;
    int ndbs;
    SSL_CTX *tls_verify;      /* verify-full context for c.server_tls_ca (a reference), or
                                 NULL: the proxy-wide one */
    int primary;              /* index in c.backends of the primary, -1 if none */
    atomic_int *client_count; /* shared counter (proxy-lifetime) for max_client_connections */
} px_cluster_t;

/* Listening sockets for one address:port, one SO_REUSEPORT socket per worker. */
typedef struct px_lsock {
    char address[64];
    int port;
    int nfds;
    int fds[PX_MAX_WORKERS];
    atomic_int refs;      /* table + each worker listening + clients in login */
} px_lsock_t;

/* An endpoint of the snapshot: a listening socket set bound to a cluster. */
typedef struct px_endpoint {
    px_lsock_t *ls;
    int cluster; /* index in px_cfg_t.clusters */
    bool ro;     /* read-only endpoint */
} px_endpoint_t;

/* One immutable configuration snapshot. */
typedef struct px_cfg {
    atomic_int refs;
    px_cluster_t *clusters;
    int nclusters;
    px_endpoint_t *eps;
    int neps;
} px_cfg_t;

void px_cfg_ref(px_cfg_t *c);
void px_cfg_unref(px_cfg_t *c);
void px_lsock_unref(px_lsock_t *ls);
/* The cluster/endpoint of a listening socket in cfg, or NULL. */
const px_endpoint_t *px_cfg_endpoint(const px_cfg_t *cfg, const px_lsock_t *ls);
/* The user in a cluster, or NULL. */
px_user_t *px_cluster_user(px_cluster_t *cl, const char *name, size_t len);

/* ---- per-worker counters (written by the owner only, read relaxed by stats) ---- */
typedef struct px_stats {
    uint64_t clients_accepted, logins_ok, logins_failed, client_errors, cancels;
    uint64_t queries, transactions, servers_opened, server_errors, wait_us, waits;
} px_stats_t;
#define PX_STAT_ADD(w, field, n) \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field + (n), __ATOMIC_RELAXED)

struct px_worker;
struct px_client;
struct px_server;

/* A prepared statement as a client defined it: the Parse body after the name
 * (query, NUL, parameter count, OIDs). One per distinct body per worker. */
typedef struct px_stmt {
    struct px_stmt *hnext;
    uint64_t hash;
    uint64_t id;        /* server-side name: "_dbp_<id in hex>" */
    uint32_t refs;      /* client map entries + server sets */
    uint32_t len;
    uint8_t body[];
} px_stmt_t;

/* Statement registry of a worker (hash table of px_stmt_t). */
typedef struct px_stmt_reg {
    px_stmt_t **tab;
    size_t size, count;
    uint64_t next_id;
} px_stmt_reg_t;

/* A client's statement names → statements; or a server's set of prepared statements. */
typedef struct px_smap_ent {
    char *name;      /* client map: owned name; server set: NULL */
    uint32_t nlen;
    uint64_t hash;   /* name hash (client) or statement id (server) */
    px_stmt_t *st;
} px_smap_ent_t;
typedef struct px_smap {
    px_smap_ent_t *tab; /* open addressing; st == NULL means empty; tombstones: name == (char*)1 */
    uint32_t size, count, used;
} px_smap_t;

px_stmt_t *px_stmt_get(px_stmt_reg_t *r, const uint8_t *body, size_t len); /* +1 ref; NULL on OOM */
void px_stmt_unref(px_stmt_reg_t *r, px_stmt_t *st);
void px_stmt_reg_free(px_stmt_reg_t *r);
/* Client map: lookup / insert (takes the caller's ref on st; replaces) / delete. */
px_stmt_t *px_smap_find_name(px_smap_t *m, const char *name, size_t len);
int px_smap_put_name(px_smap_t *m, px_stmt_reg_t *r, const char *name, size_t len, px_stmt_t *st)
    __attribute__((warn_unused_result));
void px_smap_del_name(px_smap_t *m, px_stmt_reg_t *r, const char *name, size_t len);
/* Server set: membership by statement; add takes a new ref; del drops it. */
bool px_smap_has(px_smap_t *m, const px_stmt_t *st);
int px_smap_add(px_smap_t *m, px_stmt_t *st) __attribute__((warn_unused_result));
void px_smap_del(px_smap_t *m, px_stmt_reg_t *r, px_stmt_t *st);
/* Drops every entry (and its references). */
void px_smap_clear(px_smap_t *m, px_stmt_reg_t *r);
/* Writes "_dbp_<hex id>" into out (>= 24 bytes); returns its length. */
size_t px_stmt_srvname(const px_stmt_t *st, char *out);

/* ---- expected-response queue of a server connection ---- */
/* Entry kinds: the frontend message type for forwarded requests ('P','B','D','E','C','S',
 * 'Q','F'), or one of these for requests the proxy altered: */
#define PX_Q_INJ_QUERY 'q' /* our own simple query (SET/ROLLBACK/DISCARD): swallow replies */
#define PX_Q_INJ_PARSE 'p' /* our own Parse (re-prepare): swallow its ParseComplete */
#define PX_Q_SYN_PARSE 's' /* client Parse not sent (already prepared): synthesize ParseComplete */
#define PX_Q_SYN_CLOSE 'c' /* client Close not sent: synthesize CloseComplete */
typedef struct px_qent {
    char kind;
    px_stmt_t *st; /* for P/p: the statement (no reference held; cleared on server close) */
} px_qent_t;
typedef struct px_queue {
    px_qent_t *e;
    uint32_t cap, head, count;
} px_queue_t;

/* ---- pools, servers, clients ---- */

/* Server connection states; the comment names the pool list that holds it. */
typedef enum px_sv_state {
    PX_SV_LOGIN = 0, /* connecting / authenticating — pool->login_servers */
    PX_SV_IDLE,      /* ready, unlinked — pool->idle_servers */
    PX_SV_ACTIVE,    /* linked to a client — pool->active_servers */
    PX_SV_RESET,     /* running ROLLBACK/DISCARD ALL without a client — pool->active_servers */
    PX_SV_CLOSING,   /* closed, waiting to be freed — worker->reap */
} px_sv_state_t;

/* Client states; the comment names the list that holds it. */
typedef enum px_cl_state {
    PX_CL_STARTUP = 0, /* reading the start-up packet / TLS handshake — worker->login_clients */
    PX_CL_AUTH,        /* SCRAM exchange — worker->login_clients */
    PX_CL_WELCOME,     /* authenticated, waiting for the pool's server parameters — pool->welcome_clients */
    PX_CL_IDLE,        /* logged in, no server — pool->idle_clients */
    PX_CL_WAITING,     /* has a request, waiting for a server — pool->waiting_clients */
    PX_CL_ACTIVE,      /* linked to a server — pool->active_clients */
    PX_CL_CLOSING,     /* closed, waiting to be freed — worker->reap */
} px_cl_state_t;

/* One (tenant, cluster, endpoint kind, database, user) pool of one worker. */
typedef struct px_pool {
    struct px_pool *hnext;
    px_link_t link;              /* worker->pools */
    struct px_worker *w;
    char tenant[64];
    char cluster[64];
    bool ro;
    char db[64];
    char user[64];
    px_cluster_t *cl;            /* resolved in the worker's current snapshot; NULL if gone */
    px_user_t *u;                /* ditto */
    px_db_t *d;                  /* ditto: the database's cap, or NULL (not listed) */
    px_link_t idle_servers, active_servers, login_servers;
    px_link_t welcome_clients, idle_clients, waiting_clients, active_clients;
    int n_servers;               /* all states but CLOSING */
    int n_login, n_idle, n_active_sv, n_clients, n_waiting;
    /* ParameterStatus messages of the first server login (raw 'S' messages), sent to
     * clients as their welcome; NULL until a server logged in. */
    uint8_t *welcome;
    size_t welcome_len;
    px_istr_t *defaults[PX_NPARAMS]; /* tracked values in `welcome` */
    /* SaltedPassword cache for server SCRAM: valid for (password digest, salt, iterations). */
    bool scram_cached;
    uint8_t scram_pw_digest[32];
    uint8_t scram_salt[PGAUTH_MAX_SALT];
    size_t scram_salt_len;
    int scram_iter;
    uint8_t scram_salted[32];
    int64_t last_fail_ms;        /* last server connect/login failure (monotonic ms) */
    int64_t last_evict_ms;       /* last request to other workers to free a user slot */
    int64_t last_db_evict_ms;    /* ... a database slot */
    char last_error[160];
    uint64_t queries, transactions, wait_us;
    bool paused;                 /* its cluster is paused (proxy_pause): hand out no server */
} px_pool_t;

/* A server connection. */
typedef struct px_server {
    sbuf_t sb;
    px_sv_state_t state;
    px_link_t link;              /* pool list by state, or worker->reap */
    struct px_worker *w;
    px_pool_t *pool;
    struct px_client *client;    /* linked client (ACTIVE) */
    uint64_t id;
    int backend;                 /* index in pool->cl->c.backends at connect time */
    char bkey[200];              /* "host:port:sock_dir" of that backend */
    char host[64];
    int port;
    char sock_dir[108];
    int64_t epoch;
    uint32_t be_pid, be_key;     /* BackendKeyData for cancel */
    char txstatus;               /* last ReadyForQuery status */
    bool in_batch;               /* extended-protocol messages sent since the last Sync */
    bool close_on_release;       /* stale backend or lifetime over */
    atomic_int *user_count;      /* the user's counter it holds a unit of (proxy-lifetime,
                                    taken with or without a cap), or NULL once given back */
    atomic_int *db_count;        /* the database counter it holds a unit of (proxy-lifetime,
                                    so valid after the database left the snapshot), or NULL */
    size_t pass_left;            /* bytes of the current message still to stream */
    bool pass_discard;           /* ...and they are dropped instead of forwarded */
    px_queue_t q;
    px_smap_t stmts;             /* prepared statements on this server */
    px_istr_t *params[PX_NPARAMS];
    int64_t created_ms, used_ms;
    void *login;                 /* login state (server.c), NULL once ready */
} px_server_t;

/* A client connection. */
typedef struct px_client {
    sbuf_t sb;
    px_cl_state_t state;
    px_link_t link;              /* see px_cl_state_t */
    struct px_worker *w;
    px_pool_t *pool;
    px_server_t *server;
    px_lsock_t *ls;              /* the listener it came through (reference held) */
    uint64_t id;
    uint32_t cancel_pid, cancel_key;
    struct px_client *cnext;     /* cancel hash chain */
    bool counted;                /* holds a unit of the cluster's client_count */
    bool tls;
    size_t pass_left;            /* bytes of the current message still to stream to the server */
    px_istr_t *params[PX_NPARAMS];
    px_smap_t *stmts;            /* named prepared statements (transaction/statement mode) */
    int64_t connect_ms, wait_ms, active_ms;
    void *login;                 /* login state (client.c), NULL once logged in */
    char peer[48];
} px_client_t;

/* A pending outgoing CancelRequest. */
typedef struct px_cancel {
    sbuf_t sb;
    px_link_t link; /* worker->cancels, then worker->reap_cancels */
    struct px_worker *w;
    uint8_t msg[16];
} px_cancel_t;

/* Per-worker listener entry. */
typedef struct px_wlistener {
    px_lsock_t *ls;
    struct event *ev;
    struct px_worker *w;
    bool seen; /* scratch for reconciliation */
} px_wlistener_t;

/* A proxy_pause request: each worker signals once the cluster's transactions drained. */
typedef struct px_pause_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int remaining;               /* workers not drained yet */
    int refs;                    /* caller + each worker still holding it */
} px_pause_req_t;

/* A cluster paused on one worker. */
typedef struct px_pause {
    char tenant[64];
    char cluster[64];
    px_pause_req_t *req;         /* pending drain notification (reference held), or NULL */
    int64_t since_ms;            /* monotonic ms of the pause (safety resume) */
} px_pause_t;

/* A worker: one thread, one event base, everything it owns. */
typedef struct px_worker {
    struct proxy *p;
    int idx;
    pthread_t th;
    bool started;
    struct event_base *base;
    sbuf_ctx_t io;
    int inbox[2];
    struct event *inbox_ev, *tick_ev, *reap_ev;
    px_cfg_t *cfg;               /* current snapshot (reference held) */
    px_wlistener_t **ls;         /* listeners of this worker (each malloc'd) */
    int nls;
    px_pool_t **pool_tab;        /* hash of pools */
    size_t pool_tab_size;
    px_link_t pools;
    px_link_t login_clients;
    px_link_t reap_clients, reap_servers, cancels, reap_cancels;
    px_client_t **cancel_tab;    /* cancel pid → client (chained) */
    uint32_t cancel_seq;
    uint64_t next_id;
    px_istr_t **istr_tab;
    px_stmt_reg_t stmts;
    px_stats_t stats;
    int64_t now_ms;
    int nclients, nservers;
    uint8_t rnd[512];            /* RAND_bytes output not handed out yet (px_random) */
    size_t rnd_left;             /* unused bytes at the end of rnd */
    px_pause_t *pauses;          /* paused clusters (usually none) */
    int npauses;
    bool stopping;
} px_worker_t;

/* The proxy. */
struct proxy {
    int nworkers;
    bool sched_batch; /* workers switch themselves to SCHED_BATCH (proxy_config_t.latency_sched) */
    px_worker_t *workers;
    pthread_mutex_t mu;          /* serialises proxy_update/stats/stop and the tables below */
    px_cfg_t *cfg;               /* latest snapshot */
    px_lsock_t **lsocks;
    int nlsocks;
    SSL_CTX *tls;
    SSL_CTX *tls_client;         /* towards servers, no verification (prefer, require) */
    SSL_CTX *tls_client_verify;  /* towards servers, chain verified (verify-full) */
    /* Counters that outlive snapshots, per cluster (clients), per (cluster, user) and per
     * (cluster, database): a list of px_counter_node_t (proxy.c). */
    void *counters;
};

/* Inbox messages (a pointer written to the worker's pipe; the worker frees it). */
typedef enum px_msg_kind {
    PX_MSG_CFG,
    PX_MSG_CANCEL,
    PX_MSG_STATS,
    PX_MSG_STOP,
    PX_MSG_PAUSE,
    PX_MSG_RESUME,
    PX_MSG_EVICT,
} px_msg_kind_t;
typedef struct px_stats_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int remaining;
    int refs;
    json_t *pools;               /* array, each worker appends under mu */
} px_stats_req_t;
typedef struct px_msg {
    px_msg_kind_t kind;
    px_cfg_t *cfg;               /* CFG: a reference for the worker */
    uint32_t pid, key;           /* CANCEL */
    px_stats_req_t *req;         /* STATS */
    px_pause_req_t *pause;       /* PAUSE: a reference for the worker */
    char tenant[64], cluster[64]; /* PAUSE, RESUME, EVICT */
    char user[64];                /* EVICT: free a unit of this user's cap, or (user "") ... */
    char db[64];                  /* EVICT: ... of this database's cap */
} px_msg_t;

/* Sends a message to worker w; takes ownership of m. Returns 0 or -1. */
int px_worker_post(px_worker_t *w, px_msg_t *m) __attribute__((warn_unused_result));
/* Current monotonic time in ms (cached per worker event). */
int64_t px_now_ms(void);

/* Fills out[0..n) (n <= 64) with bytes from OpenSSL's CSPRNG through the worker's buffer:
 * one RAND_bytes per 512 bytes instead of one per nonce or cancel key (each call costs
 * ~6,700 instructions in OpenSSL 3, two per login). Handed-out bytes are wiped from the
 * buffer. Returns 0, or -1 when RAND_bytes fails. */
int px_random(px_worker_t *w, void *out, size_t n);

/* pause (proxy.c): true when (tenant, cluster) is paused on w. */
bool px_worker_paused(px_worker_t *w, const char *tenant, const char *cluster);
/* Signals the pending proxy_pause requests of w whose clusters have drained. Cheap when
 * nothing is paused; called when a server of a paused pool goes idle or closes. */
void px_pause_check(px_worker_t *w);

/* interned strings (proxy.c) */
px_istr_t *px_istr_get(px_worker_t *w, const char *s, size_t len); /* +1 ref; NULL on OOM */
void px_istr_put(px_worker_t *w, px_istr_t *s);
static inline void px_istr_set(px_worker_t *w, px_istr_t **slot, px_istr_t *v)
{
    if (*slot == v) {
        if (v)
            px_istr_put(w, v);
        return;
    }
    if (*slot)
        px_istr_put(w, *slot);
    *slot = v;
}

/* queue (server.c) */
int px_queue_push(px_queue_t *q, char kind, px_stmt_t *st) __attribute__((warn_unused_result));
static inline px_qent_t *px_queue_front(px_queue_t *q)
{
    return q->count ? &q->e[q->head] : NULL;
}
static inline void px_queue_pop(px_queue_t *q)
{
    if (q->count) {
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
    }
}

/* client.c */
void px_client_accept(px_worker_t *w, px_lsock_t *ls, int fd);
/* Closes a client: sends FATAL ErrorResponse (sqlstate, msg) when msg != NULL; logs reason. */
void px_client_close(px_client_t *c, const char *reason, const char *sqlstate, const char *msg);
/* Sends the welcome (ParameterStatus, BackendKeyData, ReadyForQuery) once the pool has one. */
void px_client_welcome(px_client_t *c);
/* Runs the client's buffered input through the linked server (after linking/resume). */
void px_client_pump(px_client_t *c);
px_client_t *px_cancel_lookup(px_worker_t *w, uint32_t pid);
void px_client_tick(px_worker_t *w);
void px_client_free(px_client_t *c);

/* server.c */
px_pool_t *px_pool_get(px_worker_t *w, const char *tenant, const char *cluster, bool ro,
                       const char *db, const char *user);
/* Links an idle server to c or queues c (launching a connection if allowed). True when
 * linked now. */
bool px_pool_acquire(px_pool_t *pool, px_client_t *c);
/* Opens server connections for the pool's waiting clients (within its caps). */
void px_pool_kick(px_pool_t *pool);
/* Writes the synthesized ParseComplete/CloseComplete at the front of s's queue to its
 * client's output queue. Returns 0 or -1. */
int px_server_emit_synth(px_server_t *s) __attribute__((warn_unused_result));
/* Called when the client stops using its server (close, or end of session). */
void px_server_client_gone(px_server_t *s);
/* Re-resolves pools after a new snapshot; closes servers of stale backends. */
void px_pools_refresh(px_worker_t *w);
void px_pools_tick(px_worker_t *w);
void px_pools_free(px_worker_t *w);
/* Closes every server and pooled client of the worker (shutdown). */
void px_pools_close_all(px_worker_t *w);
void px_server_free(px_server_t *s);
/* cancel.c: sends a CancelRequest for the query running on s; frees a reaped request. */
void px_server_cancel(px_server_t *s);
void px_cancel_free(px_cancel_t *k);
/* Writes the SET/RESET statements that make s's tracked parameters equal c's into s's
 * output queue (as an injected query). Returns 0 or -1. */
int px_server_sync_params(px_server_t *s, px_client_t *c) __attribute__((warn_unused_result));
/* proxy.c: one pool's stats as an owned JSON object. */
json_t *px_pool_json(px_pool_t *pool);
/* Marks the pools of (tenant, cluster) paused or not; un-pausing hands servers to the
 * waiting clients and releases held session clients. */
void px_pools_set_paused(px_worker_t *w, const char *tenant, const char *cluster, bool on);
/* Closes the least recently used idle server holding a unit of a cap, in a pool of
 * (tenant, cluster) other than `except` (may be NULL): with `db` NULL, of `user` (a unit of
 * the user's max_connections, PgBouncer's evict_user_connection); else of database `db`,
 * any user or endpoint (the database's max_connections, PgBouncer's evict_connection).
 * True when one was closed. */
bool px_pools_evict(px_worker_t *w, const char *tenant, const char *cluster, const char *user,
                    const char *db, const px_pool_t *except);
/* True while a server of (tenant, cluster) is in a transaction, a request or a reset. */
bool px_pools_busy(px_worker_t *w, const char *tenant, const char *cluster);
void px_schedule_reap(px_worker_t *w);

/* tls.c: the server-side TLS context (certificate from paths, or a self-signed one
 * generated into dir). Returns owned SSL_CTX or NULL with err filled. */
SSL_CTX *px_tls_context(const char *cert, const char *key, const char *dir, dbp_err_t *err);
/* tls.c: a client-side TLS context (TLS 1.2+) for server connections; with `verify` the
 * peer's chain is checked against ca_path (NULL: the system's default paths). Returns
 * owned SSL_CTX or NULL with err filled. */
SSL_CTX *px_tls_client_context(bool verify, const char *ca_path, dbp_err_t *err);

#endif
