/*
 * api.h: dbplane's HTTP API (libmicrohttpd), served on a unix socket of mode 0600 in the
 * data dir's runtime directory, so only the daemon's OS user can reach it. The CLI uses
 * it for everything that talks to a running daemon. It holds no business logic: it reads
 * the store, and on apply it validates with spec/ and writes desired state to the store,
 * then wakes the reconciler.
 *
 * Endpoints (JSON bodies):
 *   GET  /healthz                         "ok"
 *   GET  /v1/status[?tenant=T&cluster=C]  {"clusters":[...]} (shape in spec-reference/README)
 *   GET  /v1/resources?kind=K[&tenant=T][&name=N]   {"items":[{kind,tenant,name,generation,
 *                                          status:{state,message,observedGeneration},spec}]}
 *   POST /v1/apply[?file=NAME]            body: YAML documents; 200 {"applied":[...]} or
 *                                          422 {"errors":[{file,line,col,path,message,hint}]}
 *   GET  /v1/events[?tenant=T][&since=ID][&limit=N]  {"events":[...]}
 *   GET  /v1/wait[?tenant=T]              {"ready":bool,"pending":[{kind,tenant,name,state,message}]}
 *   GET  /v1/proxy/stats                  pools, clients, servers, counters of the proxy
 *   POST /v1/switchover?cluster=C[&tenant=T][&to=I]   planned change of primary
 *   POST /v1/failover?cluster=C&to=I[&tenant=T]       forced change of primary
 *   GET  /v1/secret?tenant=T&name=N&key=K {"value":"..."} (the only endpoint that returns a
 *                                          secret; never logged)
 */
#ifndef DBP_API_API_H
#define DBP_API_API_H

#include <jansson.h>

#include "common/err.h"
#include "proxy/proxy.h"
#include "store/store.h"

typedef struct api_server api_server_t;

/* Where the API listens and what it serves. Strings are borrowed for the call. */
typedef struct api_config {
    const char *sock_path;  /* unix socket path (at most 107 bytes) */
    const char *store_path; /* SQLite store the API opens its own connection to */
    const char *key_path;   /* secret master key file */
    int wake_fd;            /* write end of the reconciler's wake pipe; -1 for none */
    proxy_t *proxy;         /* for /v1/proxy/stats; may be NULL; must outlive the server */
} api_config_t;

/* Starts serving in a background thread. Returns owned *out (stop with api_stop). */
int api_start(api_server_t **out, const api_config_t *cfg, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Stops serving, removes the socket and frees the server; NULL is a no-op. */
void api_stop(api_server_t *srv);

/* Builds the status document from the store (tenant/cluster may be NULL = all).
 * Returns an owned json_t (json_decref) or NULL with err filled. */
json_t *api_status_json(store_t *st, const char *tenant, const char *cluster, dbp_err_t *err);

/* Builds the wait summary: {"ready":bool,"pending":[...]}. Owned json_t or NULL. */
json_t *api_wait_json(store_t *st, const char *tenant, dbp_err_t *err);

#endif
