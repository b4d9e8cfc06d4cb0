/*
 * server.c: pools and server connections of one worker. A pool is the set of server
 * connections for one (cluster, endpoint kind, database, user); it routes new connections
 * to the primary of the newest epoch (read-write) or to the healthy replica with the
 * fewest connections (read-only, falling back to the primary), logs them in with SCRAM
 * (SaltedPassword cached per pool), MD5 or cleartext, and hands idle ones to waiting
 * clients in FIFO order, most recently used server first.
 *
 * Server → client traffic is forwarded here (server_pump): message headers are read, bodies
 * streamed without copying except for the few messages that are inspected (ReadyForQuery,
 * ParameterStatus) or answered by the proxy itself (the responses to injected SET/Parse,
 * synthesized ParseComplete/CloseComplete; see the expected-response queue in
 * proxy_int.h). A ReadyForQuery 'I' with nothing outstanding ends the transaction: in
 * transaction and statement mode the server goes back to the pool.
 */
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/log.h"

/* Login state of a server connection. */
typedef struct sv_login {
    pgauth_scram_client_t scram;
    uint8_t *params; /* collected ParameterStatus messages */
    size_t params_len, params_cap;
    int64_t started_ms;
    bool tls_wait;   /* SSLRequest sent, waiting for the server's 'S' or 'N' */
} sv_login_t;

static void server_cb(sbuf_t *sb, sbuf_event_t ev);
static void server_close(px_server_t *s, const char *reason, bool login_error);
static void pool_launch(px_pool_t *pool);
static void pool_server_idle(px_server_t *s);
static void session_demoted(px_server_t *s);

int px_queue_push(px_queue_t *q, char kind, px_stmt_t *st)
{
    if (q->count == q->cap) {
        uint32_t ncap = q->cap ? q->cap * 2 : 16;
        if (ncap > (1u << 22))
            return -1;
        px_qent_t *ne = malloc(ncap * sizeof(*ne));
        if (!ne)
            return -1;
        for (uint32_t i = 0; i < q->count; i++)
            ne[i] = q->e[(q->head + i) & (q->cap - 1)];
        free(q->e);
        q->e = ne;
        q->cap = ncap;
        q->head = 0;
    }
    q->e[(q->head + q->count) & (q->cap - 1)] = (px_qent_t){kind, st};
    q->count++;
    return 0;
}

/* ---- pools ---- */

static uint64_t pool_hash(const char *tenant, const char *cluster, bool ro, const char *db,
                          const char *user)
{
    uint64_t h = 1469598103934665603ull;
    const char *parts[4] = {tenant, cluster, db, user};
    for (int i = 0; i < 4; i++) {
        for (const char *c = parts[i]; *c; c++)
            h = (h ^ (uint8_t)*c) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    }
    return h ^ (ro ? 0x9e3779b97f4a7c15ull : 0);
}

static void pool_resolve(px_pool_t *pool)
{
    px_cfg_t *cfg = pool->w->cfg;
    pool->cl = NULL;
    pool->u = NULL;
    pool->d = NULL;
    for (int i = 0; cfg && i < cfg->nclusters; i++)
        if (strcmp(cfg->clusters[i].c.name, pool->cluster) == 0 &&
            strcmp(cfg->clusters[i].c.tenant, pool->tenant) == 0) {
            pool->cl = &cfg->clusters[i];
            pool->u = px_cluster_user(pool->cl, pool->user, strlen(pool->user));
            for (int j = 0; j < pool->cl->ndbs; j++)
                if (strcmp(pool->cl->dbs[j].name, pool->db) == 0)
                    pool->d = &pool->cl->dbs[j];
            break;
        }
}

px_pool_t *px_pool_get(px_worker_t *w, const char *tenant, const char *cluster, bool ro,
                       const char *db, const char *user)
{
    if (!w->pool_tab) {
        w->pool_tab_size = 1024;
        w->pool_tab = calloc(w->pool_tab_size, sizeof(*w->pool_tab));
        if (!w->pool_tab)
            return NULL;
    }
    size_t b = pool_hash(tenant, cluster, ro, db, user) & (w->pool_tab_size - 1);
    for (px_pool_t *p = w->pool_tab[b]; p; p = p->hnext)
        if (p->ro == ro && strcmp(p->cluster, cluster) == 0 && strcmp(p->db, db) == 0 &&
            strcmp(p->user, user) == 0 && strcmp(p->tenant, tenant) == 0)
            return p;
    px_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->w = w;
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    snprintf(p->cluster, sizeof(p->cluster), "%s", cluster);
    snprintf(p->db, sizeof(p->db), "%s", db);
    snprintf(p->user, sizeof(p->user), "%s", user);
    p->ro = ro;
    px_list_init(&p->idle_servers);
    px_list_init(&p->active_servers);
    px_list_init(&p->login_servers);
    px_list_init(&p->welcome_clients);
    px_list_init(&p->idle_clients);
    px_list_init(&p->waiting_clients);
    px_list_init(&p->active_clients);
    p->hnext = w->pool_tab[b];
    w->pool_tab[b] = p;
    px_list_add_tail(&w->pools, &p->link);
    pool_resolve(p);
    p->paused = p->cl && px_worker_paused(w, p->cl->c.tenant, p->cluster);
    return p;
}

static void backend_key(const proxy_backend_t *b, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%d:%s", b->host, b->port, b->sock_dir);
}

/* True when server s is connected to backend b (no formatting: this runs per acquire). */
static bool backend_is(const px_server_t *s, const proxy_backend_t *b)
{
    return b->port == s->port && strcmp(b->host, s->host) == 0 &&
           strcmp(b->sock_dir, s->sock_dir) == 0;
}

/* Servers of this pool connected to backend key k (all states but closing). */
static int pool_count_backend(px_pool_t *pool, const char *k)
{
    int n = 0;
    px_link_t *lists[3] = {&pool->idle_servers, &pool->active_servers, &pool->login_servers};
    for (int i = 0; i < 3; i++)
        for (px_link_t *l = lists[i]->next; l != lists[i]; l = l->next)
            if (strcmp(px_container(l, px_server_t, link)->bkey, k) == 0)
                n++;
    return n;
}

/* The backend new server connections of this pool go to, or -1. */
static int pool_route(px_pool_t *pool)
{
    px_cluster_t *cl = pool->cl;
    if (!cl)
        return -1;
    if (!pool->ro)
        return cl->primary;
    int best = -1, best_n = 0;
    for (int i = 0; i < cl->c.nbackends; i++) {
        const proxy_backend_t *b = &cl->c.backends[i];
        if (b->primary || !b->healthy)
            continue;
        char k[200];
        backend_key(b, k, sizeof(k));
        int n = pool_count_backend(pool, k);
        if (best < 0 || n < best_n) {
            best = i;
            best_n = n;
        }
    }
    return best >= 0 ? best : cl->primary;
}

/* Whether server s may keep serving new transactions under the current snapshot:
 * read-write pools only on the primary; read-only pools on a healthy replica, or on the
 * primary while no replica is healthy. */
static bool server_valid(px_server_t *s)
{
    px_pool_t *pool = s->pool;
    px_cluster_t *cl = pool->cl;
    if (!cl || s->close_on_release)
        return false;
    if (!pool->ro)
        return cl->primary >= 0 && backend_is(s, &cl->c.backends[cl->primary]);
    bool any_replica = false;
    for (int i = 0; i < cl->c.nbackends; i++)
        if (!cl->c.backends[i].primary && cl->c.backends[i].healthy)
            any_replica = true;
    for (int i = 0; i < cl->c.nbackends; i++) {
        const proxy_backend_t *b = &cl->c.backends[i];
        if (backend_is(s, b))
            return b->primary ? !any_replica : b->healthy;
    }
    return false;
}

/* True when s (linked) has nothing in flight and no open transaction. */
static bool server_at_boundary(const px_server_t *s)
{
    return s->txstatus == 'I' && s->q.count == 0 && !s->in_batch && !s->pass_left &&
           (!s->client || !s->client->pass_left);
}

/* Per-worker share of the pool size: ceil(pool_size / workers), at least 1. */
static int pool_cap(px_pool_t *pool)
{
    if (!pool->cl)
        return 0;
    int nw = pool->w->p->nworkers;
    int ps = pool->cl->c.pool_size > 0 ? pool->cl->c.pool_size : 20;
    int cap = (ps + nw - 1) / nw;
    if (cap < 1)
        cap = 1;
    int64_t rt = pool->cl->c.query_wait_timeout_ms > 0 ? pool->cl->c.query_wait_timeout_ms / 4 : 5000;
    if (rt > 5000)
        rt = 5000;
    if (pool->cl->c.reserve_pool_size > 0 && !px_list_empty(&pool->waiting_clients)) {
        px_client_t *first = px_container(pool->waiting_clients.next, px_client_t, link);
        if (pool->w->now_ms - first->wait_ms > rt)
            cap += (pool->cl->c.reserve_pool_size + nw - 1) / nw;
    }
    return cap;
}

/* Opens server connections while clients wait for more than are being opened. */
static void pool_fill(px_pool_t *pool);
void px_pool_kick(px_pool_t *pool)
{
    pool_fill(pool);
}

static void pool_fill(px_pool_t *pool)
{
    if (pool->paused)
        return;
    int want = pool->n_waiting + (!pool->welcome && !px_list_empty(&pool->welcome_clients) ? 1 : 0);
    for (int guard = 0; guard < 64 && pool->n_login < want && pool->n_servers < pool_cap(pool);
         guard++) {
        int before = pool->n_servers;
        pool_launch(pool);
        if (pool->n_servers == before)
            break;
    }
}

/* Links s (idle) and c. */
static void link_pair(px_server_t *s, px_client_t *c)
{
    px_pool_t *pool = s->pool;
    px_list_del(&s->link);
    pool->n_idle--;
    s->state = PX_SV_ACTIVE;
    px_list_add_tail(&pool->active_servers, &s->link);
    pool->n_active_sv++;
    if (c->state == PX_CL_WAITING) {
        pool->n_waiting--;
        int64_t waited = pool->w->now_ms - c->wait_ms;
        if (waited > 0) {
            PX_STAT_ADD(pool->w, wait_us, (uint64_t)waited * 1000);
            pool->wait_us += (uint64_t)waited * 1000;
        }
    }
    px_list_del(&c->link);
    c->state = PX_CL_ACTIVE;
    c->active_ms = pool->w->now_ms;
    px_list_add_tail(&pool->active_clients, &c->link);
    s->client = c;
    c->server = s;
    s->used_ms = pool->w->now_ms;
    if (px_server_sync_params(s, c) != 0)
        dbp_warn("proxy_param_sync_failed", "server=%llu", (unsigned long long)s->id);
}

bool px_pool_acquire(px_pool_t *pool, px_client_t *c)
{
    if (c->server)
        return true;
    while (!pool->paused && !px_list_empty(&pool->idle_servers)) {
        px_server_t *s = px_container(pool->idle_servers.next, px_server_t, link);
        if (!server_valid(s)) {
            server_close(s, "stale backend", false);
            continue;
        }
        link_pair(s, c);
        return true;
    }
    if (c->state != PX_CL_WAITING) {
        px_list_del(&c->link);
        c->state = PX_CL_WAITING;
        c->wait_ms = pool->w->now_ms;
        px_list_add_tail(&pool->waiting_clients, &c->link);
        pool->n_waiting++;
        PX_STAT_ADD(pool->w, waits, 1);
    }
    pool_fill(pool);
    return false;
}

/* ---- server connections ---- */

static void server_account_remove(px_server_t *s)
{
    px_pool_t *pool = s->pool;
    switch (s->state) {
    case PX_SV_LOGIN: pool->n_login--; break;
    case PX_SV_IDLE: pool->n_idle--; break;
    case PX_SV_ACTIVE:
    case PX_SV_RESET: pool->n_active_sv--; break;
    case PX_SV_CLOSING: return;
    }
    pool->n_servers--;
    s->w->nservers--;
}

/* Asks the other workers to free a unit of `pool`'s user cap (db NULL) or database cap:
 * each closes its least recently used idle server holding one (px_pools_evict). At most every 100 ms per pool and kind; the freed unit is taken at
 * a later pool_fill (the tick, at the latest). */
static void cap_evict_remote(px_pool_t *pool, bool db)
{
    px_worker_t *w = pool->w;
    int64_t *last = db ? &pool->last_db_evict_ms : &pool->last_evict_ms;
    if (w->now_ms - *last < PX_TICK_MS)
        return;
    *last = w->now_ms;
    for (int i = 0; i < w->p->nworkers; i++) {
        if (i == w->idx)
            continue;
        px_msg_t *m = calloc(1, sizeof(*m));
        if (!m)
            continue;
        m->kind = PX_MSG_EVICT;
        snprintf(m->tenant, sizeof(m->tenant), "%s", pool->cl->c.tenant);
        snprintf(m->cluster, sizeof(m->cluster), "%s", pool->cluster);
        if (db)
            snprintf(m->db, sizeof(m->db), "%s", pool->db);
        else
            snprintf(m->user, sizeof(m->user), "%s", pool->user);
        if (px_worker_post(&w->p->workers[i], m) != 0)
            free(m);
    }
}

/* A cap (the user's max_connections, or with `db` the database's) is reached while
 * clients of `pool` wait (for a server or for their welcome): free a unit held by an idle
 * server of the same user (database) in another pool — another database or user, or the
 * other endpoint — here if this worker has one (true), else by asking the other workers
 * (false). PgBouncer's evict_user_connection / evict_connection. */
static bool cap_evict(px_pool_t *pool, bool db)
{
    if (pool->n_waiting == 0 && px_list_empty(&pool->welcome_clients))
        return false;
    px_worker_t *w = pool->w;
    const char *tenant = pool->cl->c.tenant;
    if (px_pools_evict(w, tenant, pool->cluster, db ? NULL : pool->user, db ? pool->db : NULL,
                       pool))
        return true;
    cap_evict_remote(pool, db);
    return false;
}

/* Takes a unit of a shared server counter capped at `max` (-1: no cap, counted anyway).
 * The cap is exact across workers: the unit is taken before connecting and given back
 * when the taker sees the cap was full. When full, an idle server elsewhere is evicted
 * (cap_evict) and the unit tried once more. True when taken. */
static bool cap_take(px_pool_t *pool, atomic_int *count, int max, bool db)
{
    int n = atomic_fetch_add(count, 1);
    if (max < 0 || n < max)
        return true;
    atomic_fetch_sub(count, 1);
    if (!cap_evict(pool, db))
        return false;
    n = atomic_fetch_add(count, 1);
    if (n < max)
        return true;
    atomic_fetch_sub(count, 1);
    return false;
}

static void pool_launch(px_pool_t *pool)
{
    px_worker_t *w = pool->w;
    int b = pool_route(pool);
    if (b < 0 || !pool->u)
        return;
    if (w->now_ms - pool->last_fail_ms < 1000 && pool->last_fail_ms)
        return;
    px_user_t *u = pool->u;
    px_db_t *d = pool->d;
    /* The database's unit first (PgBouncer's order), then the user's. */
    atomic_int *db_count = NULL;
    if (d) {
        if (!cap_take(pool, d->server_count, d->max_connections, true))
            return;
        db_count = d->server_count;
    }
    /* The user's unit is taken even without a cap (one atomic add per server connection,
     * none per message), so a cap added by a reload counts the servers already open. */
    if (!cap_take(pool, u->server_count, u->max_connections, false)) {
        if (db_count)
            atomic_fetch_sub(db_count, 1);
        return;
    }
    atomic_int *user_count = u->server_count;
    px_server_t *s = calloc(1, sizeof(*s));
    sv_login_t *lg = calloc(1, sizeof(*lg));
    if (!s || !lg) {
        free(s);
        free(lg);
        atomic_fetch_sub(user_count, 1);
        if (db_count)
            atomic_fetch_sub(db_count, 1);
        return;
    }
    const proxy_backend_t *be = &pool->cl->c.backends[b];
    s->w = w;
    s->pool = pool;
    s->id = ++w->next_id;
    s->backend = b;
    s->user_count = user_count;
    s->db_count = db_count;
    backend_key(be, s->bkey, sizeof(s->bkey));
    snprintf(s->host, sizeof(s->host), "%s", be->host);
    s->port = be->port;
    snprintf(s->sock_dir, sizeof(s->sock_dir), "%s", be->sock_dir);
    s->epoch = pool->cl->c.epoch;
    s->txstatus = 'I';
    s->created_ms = s->used_ms = w->now_ms;
    lg->started_ms = w->now_ms;
    s->login = lg;
    s->state = PX_SV_LOGIN;
    px_list_add_tail(&pool->login_servers, &s->link);
    pool->n_login++;
    pool->n_servers++;
    w->nservers++;
    PX_STAT_ADD(w, servers_opened, 1);
    if (sbuf_connect(&s->sb, &w->io, be->host, be->port, be->sock_dir, server_cb) != 0) {
        server_close(s, s->sb.err ? s->sb.err : "connect failed", true);
        return;
    }
}

/* Fails the clients that wait for this pool's first server (no server can be had). */
static void pool_fail_waiters(px_pool_t *pool, const char *sqlstate, const char *msg)
{
    for (int guard = 0; guard < 100000 && !px_list_empty(&pool->welcome_clients); guard++)
        px_client_close(px_container(pool->welcome_clients.next, px_client_t, link),
                        "server_login_failed", sqlstate, msg);
    for (int guard = 0; guard < 100000 && !px_list_empty(&pool->waiting_clients); guard++)
        px_client_close(px_container(pool->waiting_clients.next, px_client_t, link),
                        "server_login_failed", sqlstate, msg);
}

static void login_free(px_server_t *s)
{
    sv_login_t *lg = s->login;
    if (!lg)
        return;
    free(lg->params);
    OPENSSL_cleanse(lg, sizeof(*lg));
    free(lg);
    s->login = NULL;
}

/* Closes s (any state). login_error: the failure happened before the server was ready. */
static void server_close_ex(px_server_t *s, const char *reason, bool login_error,
                            const char *sqlstate, const char *msg)
{
    if (s->state == PX_SV_CLOSING)
        return;
    px_pool_t *pool = s->pool;
    px_worker_t *w = s->w;
    dbp_log(login_error ? DBP_LOG_WARN : DBP_LOG_INFO, "proxy_server_closed",
            "server=%llu cluster=%s db=%s user=%s backend=%s reason=%s",
            (unsigned long long)s->id, pool->cluster, dbp_log_q(pool->db),
            dbp_log_q(pool->user), dbp_log_q(s->bkey), dbp_log_q(reason));
    px_client_t *c = s->client;
    if (c) {
        s->client = NULL;
        c->server = NULL;
        char m[256];
        snprintf(m, sizeof(m), "server connection lost: %s", reason);
        px_client_close(c, "server_closed", "08006", m);
    }
    server_account_remove(s);
    px_list_del(&s->link);
    s->state = PX_SV_CLOSING;
    if (s->user_count)
        atomic_fetch_sub(s->user_count, 1);
    s->user_count = NULL;
    if (s->db_count)
        atomic_fetch_sub(s->db_count, 1);
    s->db_count = NULL;
    login_free(s);
    sbuf_close(&s->sb);
    px_list_add_tail(&w->reap_servers, &s->link);
    px_schedule_reap(w);
    if (login_error) {
        PX_STAT_ADD(w, server_errors, 1);
        pool->last_fail_ms = w->now_ms ? w->now_ms : 1;
        snprintf(pool->last_error, sizeof(pool->last_error), "%s", msg ? msg : reason);
        if (pool->n_servers == 0) {
            char m[256];
            snprintf(m, sizeof(m), "server login failed: %s", msg ? msg : reason);
            pool_fail_waiters(pool, sqlstate ? sqlstate : "08006", m);
        }
    } else if (!w->stopping) {
        pool_fill(pool);
    }
    if (pool->paused)
        px_pause_check(w);
}

static void server_close(px_server_t *s, const char *reason, bool login_error)
{
    server_close_ex(s, reason, login_error, NULL, NULL);
}

void px_server_free(px_server_t *s)
{
    px_smap_clear(&s->stmts, &s->w->stmts);
    for (int i = 0; i < PX_NPARAMS; i++)
        px_istr_set(s->w, &s->params[i], NULL);
    free(s->q.e);
    login_free(s);
    free(s);
}

static int send_startup(px_server_t *s)
{
    px_pool_t *pool = s->pool;
    uint8_t buf[512];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    pg_w_begin(&wb, 0);
    pg_w_u32(&wb, PG_PROTO_V3);
    pg_w_str(&wb, "user");
    pg_w_str(&wb, pool->user);
    pg_w_str(&wb, "database");
    pg_w_str(&wb, pool->db);
    pg_w_u8(&wb, 0);
    pg_w_end(&wb);
    if (wb.failed)
        return -1;
    return sbuf_send(&s->sb, buf, wb.len);
}

/* Sends a 'p' message with raw data (SASL responses, passwords). */
static int send_password_msg(px_server_t *s, const char *mech, const void *data, size_t n,
                             bool initial)
{
    uint8_t buf[PGAUTH_MSG_MAX + 256];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    pg_w_begin(&wb, 'p');
    if (initial) {
        pg_w_str(&wb, mech);
        pg_w_u32(&wb, (uint32_t)n);
    }
    pg_w_bytes(&wb, data, n);
    pg_w_end(&wb);
    int rc = wb.failed ? -1 : sbuf_send(&s->sb, buf, wb.len);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* SaltedPassword for (password, salt, iterations), from the pool's cache or PBKDF2. */
static int pool_salted(px_pool_t *pool, const uint8_t *salt, size_t salt_len, int iter,
                       uint8_t out[32])
{
    px_user_t *u = pool->u;
    uint8_t dig[32];
    SHA256((const unsigned char *)u->password, u->pwlen, dig);
    if (pool->scram_cached && pool->scram_iter == iter && pool->scram_salt_len == salt_len &&
        memcmp(pool->scram_salt, salt, salt_len) == 0 &&
        CRYPTO_memcmp(pool->scram_pw_digest, dig, 32) == 0) {
        memcpy(out, pool->scram_salted, 32);
        return 0;
    }
    if (pgauth_scram_salted(u->password, u->pwlen, salt, salt_len, iter, out) != 0)
        return -1;
    memcpy(pool->scram_pw_digest, dig, 32);
    memcpy(pool->scram_salt, salt, salt_len);
    pool->scram_salt_len = salt_len;
    pool->scram_iter = iter;
    memcpy(pool->scram_salted, out, 32);
    pool->scram_cached = true;
    return 0;
}

static void random_nonce(char *out, size_t cap)
{
    uint8_t r[18];
    if (RAND_bytes(r, sizeof(r)) != 1)
        memset(r, 0x5a, sizeof(r));
    if (pgauth_b64_encode(r, sizeof(r), out, cap) < 0)
        snprintf(out, cap, "dbplanenonce");
}

static int login_add_param(sv_login_t *lg, const uint8_t *msg, size_t n)
{
    if (lg->params_len + n > lg->params_cap) {
        size_t nc = lg->params_cap ? lg->params_cap * 2 : 1024;
        while (nc < lg->params_len + n)
            nc *= 2;
        if (nc > (1u << 20))
            return -1;
        uint8_t *np = realloc(lg->params, nc);
        if (!np)
            return -1;
        lg->params = np;
        lg->params_cap = nc;
    }
    memcpy(lg->params + lg->params_len, msg, n);
    lg->params_len += n;
    return 0;
}

/* Records a ParameterStatus on s (and its client, if linked). */
static void server_param(px_server_t *s, const uint8_t *body, size_t len)
{
    pg_view_t name, value;
    if (pg_parse_param_status(body, len, &name, &value) < 0)
        return;
    int i = px_param_index(name.p, name.len);
    if (i < 0)
        return;
    px_istr_t *v = px_istr_get(s->w, value.p, value.len);
    if (!v)
        return;
    if (s->client) {
        v->refs++;
        px_istr_set(s->w, &s->client->params[i], v);
    }
    px_istr_set(s->w, &s->params[i], v);
}

static void server_ready(px_server_t *s)
{
    px_pool_t *pool = s->pool;
    sv_login_t *lg = s->login;
    if (!pool->welcome && lg) {
        pool->welcome = lg->params;
        pool->welcome_len = lg->params_len;
        lg->params = NULL;
        for (int i = 0; i < PX_NPARAMS; i++)
            if (s->params[i]) {
                s->params[i]->refs++;
                px_istr_set(s->w, &pool->defaults[i], s->params[i]);
            }
    }
    login_free(s);
    dbp_debug("proxy_server_ready", "server=%llu cluster=%s db=%s user=%s backend=%s",
              (unsigned long long)s->id, pool->cluster, dbp_log_q(pool->db),
              dbp_log_q(pool->user), dbp_log_q(s->bkey));
    pool->last_fail_ms = 0;
    px_list_del(&s->link);
    pool->n_login--;
    s->state = PX_SV_IDLE;
    pool->n_idle++;
    px_list_add_head(&pool->idle_servers, &s->link);
    for (int guard = 0; guard < 100000 && !px_list_empty(&pool->welcome_clients); guard++)
        px_client_welcome(px_container(pool->welcome_clients.next, px_client_t, link));
    pool_server_idle(s);
}

static void server_login_data(px_server_t *s)
{
    sv_login_t *lg = s->login;
    for (int guard = 0; guard < 10000; guard++) {
        size_t avail;
        uint8_t *p = sbuf_data(&s->sb, &avail);
        pg_msg_t m;
        ssize_t r = pg_msg_header(p, avail, PX_MAX_SMALL, &m);
        if (r == PG_NEED_MORE)
            return;
        if (r < 0) {
            server_close(s, "malformed message from server during login", true);
            return;
        }
        if (!m.body) {
            if (sbuf_reserve_in(&s->sb, m.total) != 0)
                server_close(s, "out of memory", true);
            return;
        }
        size_t blen = m.len - 4;
        switch (m.type) {
        case 'R': {
            pg_auth_t a;
            if (pg_parse_auth(m.body, blen, &a) < 0) {
                server_close(s, "malformed authentication request", true);
                return;
            }
            px_user_t *u = s->pool->u;
            if (!u) {
                server_close(s, "user removed", true);
                return;
            }
            int rc = 0;
            char out[PGAUTH_MSG_MAX + 64];
            if (a.code == PG_AUTH_OK) {
                break;
            } else if (a.code == PG_AUTH_SASL) {
                if (!a.scram_offered) {
                    server_close(s, "server offers no SCRAM-SHA-256", true);
                    return;
                }
                char nonce[32];
                random_nonce(nonce, sizeof(nonce));
                int n = pgauth_scram_client_first(&lg->scram, nonce, out, sizeof(out));
                rc = n < 0 ? -1 : send_password_msg(s, "SCRAM-SHA-256", out, (size_t)n, true);
            } else if (a.code == PG_AUTH_SASL_CONTINUE) {
                uint8_t salt[PGAUTH_MAX_SALT], salted[32];
                size_t salt_len;
                int iter;
                if (pgauth_scram_parse_server_first(&lg->scram, a.data.p, a.data.len, salt,
                                                    &salt_len, &iter) != 0) {
                    server_close(s, lg->scram.err, true);
                    return;
                }
                if (pool_salted(s->pool, salt, salt_len, iter, salted) != 0) {
                    server_close(s, "PBKDF2 failed", true);
                    return;
                }
                int n = pgauth_scram_client_final(&lg->scram, salted, a.data.p, a.data.len, out,
                                                  sizeof(out));
                OPENSSL_cleanse(salted, sizeof(salted));
                rc = n < 0 ? -1 : send_password_msg(s, NULL, out, (size_t)n, false);
            } else if (a.code == PG_AUTH_SASL_FINAL) {
                if (!pgauth_scram_client_check_final(&lg->scram, a.data.p, a.data.len)) {
                    server_close(s, "server SCRAM signature invalid", true);
                    return;
                }
            } else if (a.code == PG_AUTH_MD5) {
                char md5[36];
                pgauth_md5_response(s->pool->user, u->password, (const uint8_t *)a.data.p, md5);
                rc = send_password_msg(s, NULL, md5, 36, false);
            } else if (a.code == PG_AUTH_CLEARTEXT) {
                if (u->pwlen > PGAUTH_MSG_MAX) {
                    server_close(s, "password too long", true);
                    return;
                }
                char pw[PGAUTH_MSG_MAX + 1];
                memcpy(pw, u->password, u->pwlen);
                pw[u->pwlen] = 0;
                rc = send_password_msg(s, NULL, pw, u->pwlen + 1, false);
                OPENSSL_cleanse(pw, sizeof(pw));
            } else {
                server_close(s, "unsupported authentication method", true);
                return;
            }
            OPENSSL_cleanse(out, sizeof(out));
            if (rc != 0) {
                server_close(s, "write failed", true);
                return;
            }
            break;
        }
        case 'E': {
            pg_error_t e;
            char msg[200] = "server refused the login";
            char st[8] = "08006";
            if (pg_parse_error(m.body, blen, &e) >= 0) {
                if (e.message.len)
                    snprintf(msg, sizeof(msg), "%.*s", (int)e.message.len, e.message.p);
                if (e.sqlstate.len == 5)
                    snprintf(st, sizeof(st), "%.*s", 5, e.sqlstate.p);
            }
            sbuf_consume(&s->sb, m.total);
            server_close_ex(s, msg, true, st, msg);
            return;
        }
        case 'S':
            server_param(s, m.body, blen);
            if (login_add_param(lg, p, m.total) != 0) {
                server_close(s, "too many parameters", true);
                return;
            }
            break;
        case 'K':
            if (pg_parse_backend_key(m.body, blen, &s->be_pid, &s->be_key) < 0) {
                server_close(s, "malformed BackendKeyData", true);
                return;
            }
            break;
        case 'Z':
            if (pg_parse_ready(m.body, blen, &s->txstatus) < 0) {
                server_close(s, "malformed ReadyForQuery", true);
                return;
            }
            sbuf_consume(&s->sb, m.total);
            server_ready(s);
            return;
        case 'N':
        case 'v':
            break;
        default:
            server_close(s, "unexpected message during login", true);
            return;
        }
        sbuf_consume(&s->sb, m.total);
    }
}

/* Appends the 5-byte message `type` (ParseComplete, CloseComplete) to the client. */
static int synth_to_client(px_client_t *c, char type)
{
    uint8_t m[5] = {(uint8_t)type, 0, 0, 0, 4};
    return c ? sbuf_append(&c->sb, m, 5) : 0;
}

/* Emits the synthesized responses at the front of s's queue. Returns 0 or -1. */
int px_server_emit_synth(px_server_t *s)
{
    px_qent_t *f;
    while ((f = px_queue_front(&s->q)) && (f->kind == PX_Q_SYN_PARSE || f->kind == PX_Q_SYN_CLOSE)) {
        if (synth_to_client(s->client, f->kind == PX_Q_SYN_PARSE ? '1' : '3') != 0)
            return -1;
        px_queue_pop(&s->q);
    }
    return 0;
}

/* Drops the queue entries of the extended-protocol batch that failed, up to its Sync. */
static void drop_failed_batch(px_server_t *s)
{
    px_qent_t *f;
    while ((f = px_queue_front(&s->q)) && f->kind != 'S' && f->kind != 'Q' && f->kind != 'F' &&
           f->kind != PX_Q_INJ_QUERY) {
        if ((f->kind == 'P' || f->kind == PX_Q_INJ_PARSE) && f->st)
            px_smap_del(&s->stmts, &s->w->stmts, f->st);
        px_queue_pop(&s->q);
    }
}

/* Server → client forwarding (or swallowing, when unlinked). */
static void server_pump(px_server_t *s)
{
    px_worker_t *w = s->w;
    px_client_t *c = s->client;
    px_pool_t *pool = s->pool;
    size_t avail;
    uint8_t *p = sbuf_data(&s->sb, &avail);
    size_t off = 0, vstart = 0, vlen = 0;
    bool release = false, stmt_violation = false, demoted = false;
#define FLUSH_VERB()                                                        \
    do {                                                                    \
        if (vlen) {                                                         \
            if (c && sbuf_append(&c->sb, p + vstart, vlen) != 0)            \
                goto client_broken;                                         \
            vlen = 0;                                                       \
        }                                                                   \
    } while (0)
#define VERB(n)                \
    do {                       \
        if (vlen == 0)         \
            vstart = off;      \
        vlen += (n);           \
    } while (0)
    while (off < avail) {
        if (s->pass_left) {
            size_t k = avail - off < s->pass_left ? avail - off : s->pass_left;
            if (s->pass_discard || !c)
                FLUSH_VERB();
            else
                VERB(k);
            off += k;
            s->pass_left -= k;
            continue;
        }
        pg_msg_t m;
        ssize_t r = pg_msg_header(p + off, avail - off, PG_MAX_MSG_LEN, &m);
        if (r == PG_NEED_MORE)
            break;
        if (r < 0) {
            sbuf_consume(&s->sb, off);
            server_close(s, "malformed message from server", false);
            return;
        }
        if (px_queue_front(&s->q) && px_queue_front(&s->q)->kind >= 'a') {
            char k0 = px_queue_front(&s->q)->kind;
            if (k0 == PX_Q_SYN_PARSE || k0 == PX_Q_SYN_CLOSE) {
                FLUSH_VERB();
                if (px_server_emit_synth(s) != 0)
                    goto client_broken;
            }
        }
        px_qent_t *f = px_queue_front(&s->q);
        char fk = f ? f->kind : 0;
        bool whole = m.type == 'Z' || m.type == 'S' || (m.type == 'E' && !c);
        if (whole && !m.body) {
            if (m.total > PX_MAX_SMALL) {
                sbuf_consume(&s->sb, off);
                server_close(s, "oversized message from server", false);
                return;
            }
            FLUSH_VERB();
            sbuf_consume(&s->sb, off);
            off = 0;
            if (sbuf_reserve_in(&s->sb, m.total) != 0) {
                server_close(s, "out of memory", false);
                return;
            }
            p = sbuf_data(&s->sb, &avail);
            goto done;
        }
        bool swallow = !c || fk == PX_Q_INJ_QUERY;
        size_t blen = m.len - 4;
        switch (m.type) {
        case '1':
            if (fk == 'P' || fk == PX_Q_INJ_PARSE) {
                if (fk == PX_Q_INJ_PARSE)
                    swallow = true;
                px_queue_pop(&s->q);
            }
            break;
        case '2':
            if (fk == 'B')
                px_queue_pop(&s->q);
            break;
        case '3':
            if (fk == 'C')
                px_queue_pop(&s->q);
            break;
        case 'n':
        case 'T':
            if (fk == 'D')
                px_queue_pop(&s->q);
            break;
        case 'C':
        case 'I':
        case 's':
            if (fk == 'E')
                px_queue_pop(&s->q);
            break;
        case 'E':
            if (fk == PX_Q_INJ_QUERY || !c) {
                pg_error_t e;
                if (m.body && pg_parse_error(m.body, blen, &e) >= 0)
                    dbp_warn("proxy_server_error", "server=%llu sqlstate=%.*s message=%s",
                             (unsigned long long)s->id, (int)e.sqlstate.len,
                             e.sqlstate.p ? e.sqlstate.p : "", dbp_log_q("(see server log)"));
            }
            if (fk && fk != 'S' && fk != 'Q' && fk != 'F' && fk != PX_Q_INJ_QUERY)
                drop_failed_batch(s);
            break;
        case 'S':
            server_param(s, m.body, blen);
            break;
        case 'Z': {
            char st;
            if (pg_parse_ready(m.body, blen, &st) < 0) {
                sbuf_consume(&s->sb, off);
                server_close(s, "malformed ReadyForQuery", false);
                return;
            }
            s->txstatus = st;
            if (fk && fk != PX_Q_INJ_QUERY) {
                PX_STAT_ADD(w, queries, 1);
                pool->queries++;
                if (st == 'I') {
                    PX_STAT_ADD(w, transactions, 1);
                    pool->transactions++;
                }
            }
            drop_failed_batch(s);
            if (px_queue_front(&s->q))
                px_queue_pop(&s->q);
            if (s->q.count == 0 && !s->in_batch) {
                if (!c) {
                    release = st == 'I';
                    if (st != 'I') {
                        sbuf_consume(&s->sb, off + m.total);
                        server_close(s, "reset left a transaction open", false);
                        return;
                    }
                } else if (pool->cl && pool->cl->c.pool_mode != PROXY_POOL_SESSION) {
                    if (st == 'I')
                        release = true;
                    else if (pool->cl->c.pool_mode == PROXY_POOL_STATEMENT && fk != PX_Q_INJ_QUERY)
                        stmt_violation = true;
                } else if (st == 'I') {
                    /* Session mode, between transactions: a session on a server that is
                     * no longer the primary ends here; a paused cluster may be drained. */
                    if (!pool->ro && !server_valid(s))
                        demoted = true;
                    else if (pool->paused)
                        px_pause_check(w);
                }
            }
            break;
        }
        default:
            break;
        }
        if (swallow) {
            FLUSH_VERB();
            if (avail - off >= m.total) {
                off += m.total;
            } else {
                s->pass_left = m.total - (avail - off);
                s->pass_discard = true;
                off = avail;
            }
        } else if (avail - off >= m.total) {
            VERB(m.total);
            off += m.total;
        } else {
            VERB(avail - off);
            s->pass_left = m.total - (avail - off);
            s->pass_discard = false;
            off = avail;
        }
        if (release || stmt_violation || demoted)
            break;
    }
    if (px_queue_front(&s->q)) {
        char k0 = px_queue_front(&s->q)->kind;
        if (k0 == PX_Q_SYN_PARSE || k0 == PX_Q_SYN_CLOSE) {
            FLUSH_VERB();
            if (px_server_emit_synth(s) != 0)
                goto client_broken;
        }
    }
done:
    if (c) {
        int rc = sbuf_send(&c->sb, vlen ? p + vstart : NULL, vlen);
        sbuf_consume(&s->sb, off);
        if (rc != 0) {
            px_client_close(c, "write_failed", NULL, NULL);
            return;
        }
        if (stmt_violation) {
            px_client_close(c, "transaction_in_statement_mode", "08P01",
                            "transaction blocks not allowed in statement pooling mode");
            return;
        }
        if (demoted) {
            session_demoted(s);
            return;
        }
        if (release) {
            pool_server_idle(s);
            if (c->state == PX_CL_IDLE && c->sb.in && c->sb.in->len > c->sb.in->pos)
                px_client_pump(c);
            return;
        }
        if (sbuf_blocked(&c->sb))
            sbuf_pause(&s->sb);
    } else {
        sbuf_consume(&s->sb, off);
        if (release && s->state == PX_SV_RESET)
            pool_server_idle(s);
    }
    return;
client_broken:
    sbuf_consume(&s->sb, off);
    px_client_close(c, "out_of_memory", NULL, NULL);
#undef FLUSH_VERB
#undef VERB
}

/* Puts s back to the pool (from ACTIVE or RESET or a fresh login) or closes it when it may
 * not be reused; hands it to the first waiting client. */
static void pool_server_idle(px_server_t *s)
{
    px_pool_t *pool = s->pool;
    px_worker_t *w = s->w;
    px_client_t *c = s->client;
    if (c) {
        s->client = NULL;
        c->server = NULL;
        px_list_del(&c->link);
        c->state = PX_CL_IDLE;
        px_list_add_tail(&pool->idle_clients, &c->link);
    }
    if (s->state == PX_SV_ACTIVE || s->state == PX_SV_RESET) {
        px_list_del(&s->link);
        pool->n_active_sv--;
        s->state = PX_SV_IDLE;
        pool->n_idle++;
        px_list_add_head(&pool->idle_servers, &s->link);
    }
    s->used_ms = w->now_ms;
    int64_t life = pool->cl ? pool->cl->c.server_lifetime_ms : 0;
    if (!server_valid(s) || (life > 0 && w->now_ms - s->created_ms > life) ||
        (s->sb.in && s->sb.in->len > s->sb.in->pos)) {
        server_close(s, !server_valid(s) ? "stale backend" : "lifetime or stray data", false);
        return;
    }
    if (pool->paused) {
        px_pause_check(w);
        return;
    }
    if (!px_list_empty(&pool->waiting_clients)) {
        px_client_t *wc = px_container(pool->waiting_clients.next, px_client_t, link);
        link_pair(s, wc);
        px_client_pump(wc);
    }
}

/* Ends the session of s's client because s no longer serves its pool's endpoint (the
 * primary changed: switchover or failover). PgBouncer closes a session whose server goes
 * away the same way: the client gets FATAL 57P01 and reconnects — to the new primary —
 * instead of writing to a demoted server. Then the server connection is closed, never
 * reused. */
static void session_demoted(px_server_t *s)
{
    px_client_t *c = s->client;
    if (c)
        px_client_close(c, "primary_changed", "57P01",
                        "terminating connection because the cluster's primary changed "
                        "(switchover or failover); reconnect");
    server_close(s, "primary changed", false);
}

void px_server_client_gone(px_server_t *s)
{
    px_client_t *c = s->client;
    px_pool_t *pool = s->pool;
    bool partial = c && c->pass_left > 0;
    s->client = NULL;
    if (c)
        c->server = NULL;
    if (s->state != PX_SV_ACTIVE)
        return;
    if (partial || s->in_batch || s->pass_left || s->q.count > 0) {
        server_close(s, "client left with a request in flight", false);
        return;
    }
    bool session = pool->cl && pool->cl->c.pool_mode == PROXY_POOL_SESSION;
    if (s->txstatus == 'I' && !session && s->q.count == 0) {
        pool_server_idle(s);
        return;
    }
    /* Reset: ROLLBACK an open transaction; DISCARD ALL after a session. */
    uint8_t buf[64];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    int nq = 0;
    if (s->txstatus != 'I') {
        pg_w_query(&wb, "ROLLBACK", 8);
        nq++;
    }
    if (session) {
        pg_w_query(&wb, "DISCARD ALL", 11);
        nq++;
    }
    for (int i = 0; i < nq; i++)
        if (px_queue_push(&s->q, PX_Q_INJ_QUERY, NULL) != 0)
            wb.failed = true;
    if (session)
        px_smap_clear(&s->stmts, &s->w->stmts);
    s->state = PX_SV_RESET;
    if (wb.failed || sbuf_send(&s->sb, buf, wb.len) != 0) {
        server_close(s, "reset failed", false);
        return;
    }
    sbuf_resume(&s->sb);
}

int px_server_sync_params(px_server_t *s, px_client_t *c)
{
    int diff = 0;
    size_t need = 64;
    for (int i = 0; i < PX_NPARAMS; i++)
        if (c->params[i] != s->params[i]) {
            if (i != PX_P_SEARCH_PATH && !c->params[i])
                continue; /* unknown on the client side: leave the server's */
            diff++;
            need += 48 + (c->params[i] ? 2 * c->params[i]->len : 0);
        }
    if (!diff)
        return 0;
    uint8_t *buf = sbuf_out_reserve(&s->sb, need);
    if (!buf)
        return -1;
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, need);
    pg_w_begin(&wb, 'Q');
    for (int i = 0; i < PX_NPARAMS; i++) {
        if (c->params[i] == s->params[i] || (i != PX_P_SEARCH_PATH && !c->params[i]))
            continue;
        if (c->params[i]) {
            pg_w_bytes(&wb, "SET ", 4);
            pg_w_bytes(&wb, px_param_names[i], strlen(px_param_names[i]));
            pg_w_bytes(&wb, " TO ", 4);
            pg_w_sql_literal(&wb, c->params[i]->s, c->params[i]->len);
            pg_w_bytes(&wb, ";", 1);
            c->params[i]->refs++;
            px_istr_set(s->w, &s->params[i], c->params[i]);
        } else {
            pg_w_bytes(&wb, "RESET ", 6);
            pg_w_bytes(&wb, px_param_names[i], strlen(px_param_names[i]));
            pg_w_bytes(&wb, ";", 1);
            px_istr_set(s->w, &s->params[i], NULL);
        }
    }
    pg_w_u8(&wb, 0);
    pg_w_end(&wb);
    if (wb.failed)
        return -1;
    if (px_queue_push(&s->q, PX_Q_INJ_QUERY, NULL) != 0)
        return -1;
    sbuf_out_commit(&s->sb, wb.len);
    return 0;
}

/* The TLS mode towards s's server: the cluster's server_tls over TCP, never over a Unix
 * socket. */
static proxy_server_tls_t server_tls_mode(const px_server_t *s)
{
    px_cluster_t *cl = s->pool->cl;
    if (!cl || s->sock_dir[0])
        return PROXY_SERVER_TLS_DISABLE;
    return cl->c.server_tls;
}

/* The one-byte answer to our SSLRequest: 'S' starts the TLS handshake (the start-up packet
 * waits in the output queue until it is done), 'N' continues in plaintext unless TLS is
 * required. Bytes after the answer, before the handshake, are refused (they could not have
 * come through TLS: CVE-2021-23222). */
static void server_tls_answer(px_server_t *s)
{
    sv_login_t *lg = s->login;
    size_t avail;
    uint8_t *p = sbuf_data(&s->sb, &avail);
    if (avail == 0)
        return;
    proxy_server_tls_t mode = server_tls_mode(s);
    if (p[0] == 'S' && avail == 1) {
        sbuf_consume(&s->sb, 1);
        lg->tls_wait = false;
        px_worker_t *w = s->w;
        bool verify = mode == PROXY_SERVER_TLS_VERIFY_FULL;
        /* verify-full: the cluster's own CA bundle when it has one, else the proxy's. */
        px_cluster_t *cl = s->pool->cl;
        SSL_CTX *ctx = !verify                ? w->p->tls_client
                       : cl && cl->tls_verify ? cl->tls_verify
                                              : w->p->tls_client_verify;
        if (!ctx || sbuf_start_tls_client(&s->sb, ctx, s->host, verify) != 0 ||
            send_startup(s) != 0)
            server_close(s, "TLS setup failed", true);
        return;
    }
    if (p[0] == 'N' && avail == 1 && mode == PROXY_SERVER_TLS_PREFER) {
        sbuf_consume(&s->sb, 1);
        lg->tls_wait = false;
        if (send_startup(s) != 0)
            server_close(s, "write failed", true);
        return;
    }
    if (p[0] == 'N') {
        server_close(s, "the server does not support TLS (server_tls requires it)", true);
        return;
    }
    server_close(s, p[0] == 'S' ? "unencrypted data after the server's TLS answer"
                                : "unexpected answer to SSLRequest", true);
}

static void server_cb(sbuf_t *sb, sbuf_event_t ev)
{
    px_server_t *s = px_container(sb, px_server_t, sb);
    s->w->now_ms = px_now_ms();
    switch (ev) {
    case SBUF_EV_CONNECTED:
        if (server_tls_mode(s) != PROXY_SERVER_TLS_DISABLE) {
            uint8_t req[8];
            pg_wbuf_t wb;
            pg_wbuf_init(&wb, req, sizeof(req));
            pg_w_u32(&wb, 8);
            pg_w_u32(&wb, PG_CODE_SSL);
            ((sv_login_t *)s->login)->tls_wait = true;
            if (wb.failed || sbuf_send(&s->sb, req, wb.len) != 0)
                server_close(s, "write failed", true);
        } else if (send_startup(s) != 0) {
            server_close(s, "write failed", true);
        }
        break;
    case SBUF_EV_DATA:
        if (s->state == PX_SV_LOGIN && ((sv_login_t *)s->login)->tls_wait)
            server_tls_answer(s);
        else if (s->state == PX_SV_LOGIN)
            server_login_data(s);
        else
            server_pump(s);
        break;
    case SBUF_EV_EOF:
        server_close(s, sb->err && strcmp(sb->err, "client closed the connection") == 0
                            ? "server closed the connection"
                            : (sb->err ? sb->err : "eof"),
                     s->state == PX_SV_LOGIN);
        break;
    case SBUF_EV_DRAINED:
        if (s->client)
            sbuf_resume(&s->client->sb);
        break;
    }
}

void px_pools_refresh(px_worker_t *w)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        pool_resolve(pool);
        for (int guard = 0; guard < 100000; guard++) {
            px_link_t *it = pool->idle_servers.next;
            bool closed = false;
            for (; it != &pool->idle_servers; it = it->next) {
                px_server_t *s = px_container(it, px_server_t, link);
                if (!server_valid(s)) {
                    server_close(s, "topology changed", false);
                    closed = true;
                    break;
                }
            }
            if (!closed)
                break;
        }
        for (px_link_t *it = pool->active_servers.next; it != &pool->active_servers; it = it->next) {
            px_server_t *s = px_container(it, px_server_t, link);
            if (!server_valid(s))
                s->close_on_release = true;
        }
        /* Session mode: sessions on a stale primary that sit between transactions end
         * now; those in a transaction end at its ReadyForQuery (server_pump). */
        if (!pool->ro && pool->cl && pool->cl->c.pool_mode == PROXY_POOL_SESSION) {
            for (int guard = 0; guard < 100000; guard++) {
                px_server_t *victim = NULL;
                for (px_link_t *it = pool->active_servers.next; it != &pool->active_servers;
                     it = it->next) {
                    px_server_t *s = px_container(it, px_server_t, link);
                    if (s->close_on_release && s->state == PX_SV_ACTIVE && s->client &&
                        server_at_boundary(s)) {
                        victim = s;
                        break;
                    }
                }
                if (!victim)
                    break;
                session_demoted(victim);
            }
        }
        pool_fill(pool);
    }
}

static bool pool_of(const px_pool_t *pool, const char *tenant, const char *cluster)
{
    return pool->cl && strcmp(pool->cluster, cluster) == 0 && strcmp(pool->tenant, tenant) == 0;
}

/* True while a server of the pool is in a transaction, a request or a reset. */
static bool pool_busy(px_pool_t *pool)
{
    if (!pool->cl || pool->cl->c.pool_mode != PROXY_POOL_SESSION)
        return pool->n_active_sv > 0; /* linked = a request or a transaction in flight */
    for (px_link_t *it = pool->active_servers.next; it != &pool->active_servers; it = it->next) {
        px_server_t *s = px_container(it, px_server_t, link);
        if (s->state != PX_SV_ACTIVE || !server_at_boundary(s))
            return true;
    }
    return false;
}

bool px_pools_busy(px_worker_t *w, const char *tenant, const char *cluster)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        if (pool_of(pool, tenant, cluster) && pool_busy(pool))
            return true;
    }
    return false;
}

bool px_pools_evict(px_worker_t *w, const char *tenant, const char *cluster, const char *user,
                    const char *db, const px_pool_t *except)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        if (pool == except || pool->paused || !pool_of(pool, tenant, cluster) ||
            strcmp(db ? pool->db : pool->user, db ? db : user) != 0 ||
            px_list_empty(&pool->idle_servers))
            continue;
        /* Idle servers are kept most recently used first: the tail is the oldest. */
        px_server_t *s = px_container(pool->idle_servers.prev, px_server_t, link);
        if (db ? !s->db_count : !s->user_count)
            continue;
        server_close(s,
                     db ? "evicted: the database's max_connections is needed by another pool"
                        : "evicted: the user's max_connections is needed by another pool",
                     false);
        return true;
    }
    return false;
}

void px_pools_set_paused(px_worker_t *w, const char *tenant, const char *cluster, bool on)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        if (!pool_of(pool, tenant, cluster) || pool->paused == on)
            continue;
        pool->paused = on;
        if (on)
            continue;
        /* Held session clients read again (their buffered input is delivered anew). */
        for (px_link_t *it = pool->active_clients.next; it != &pool->active_clients;
             it = it->next)
            sbuf_resume(&px_container(it, px_client_t, link)->sb);
        /* Waiting clients take idle servers in order; the rest get new connections. */
        for (int guard = 0; guard < 100000 && !px_list_empty(&pool->waiting_clients) &&
                            !px_list_empty(&pool->idle_servers);
             guard++) {
            px_client_t *c = px_container(pool->waiting_clients.next, px_client_t, link);
            if (!px_pool_acquire(pool, c))
                break;
            px_client_pump(c);
        }
        pool_fill(pool);
    }
}

void px_pools_tick(px_worker_t *w)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        px_cluster_t *cl = pool->cl;
        int64_t idle_to = cl ? cl->c.server_idle_timeout_ms : 0;
        int64_t life = cl ? cl->c.server_lifetime_ms : 0;
        int minp = cl ? (cl->c.min_pool_size + w->p->nworkers - 1) / w->p->nworkers : 0;
        for (int guard = 0; guard < 10000; guard++) {
            px_server_t *victim = NULL;
            for (px_link_t *it = pool->idle_servers.next; it != &pool->idle_servers; it = it->next) {
                px_server_t *s = px_container(it, px_server_t, link);
                if ((idle_to > 0 && w->now_ms - s->used_ms > idle_to && pool->n_servers > minp) ||
                    (life > 0 && w->now_ms - s->created_ms > life) || !cl) {
                    victim = s;
                    break;
                }
            }
            if (!victim)
                break;
            server_close(victim, "idle timeout or lifetime", false);
        }
        for (px_link_t *it = pool->login_servers.next; it != &pool->login_servers; it = it->next) {
            px_server_t *s = px_container(it, px_server_t, link);
            sv_login_t *lg = s->login;
            if (lg && w->now_ms - lg->started_ms > 15000) {
                server_close(s, "server login timeout", true);
                break;
            }
        }
        int64_t qwt = cl ? cl->c.query_wait_timeout_ms : 0;
        int64_t wto = qwt > 0 ? qwt : 15000;
        for (int guard = 0; guard < 100000 && !px_list_empty(&pool->welcome_clients); guard++) {
            px_client_t *c = px_container(pool->welcome_clients.next, px_client_t, link);
            if (w->now_ms - c->connect_ms <= wto)
                break;
            char m[200];
            snprintf(m, sizeof(m), "no server connection available: %s",
                     pool->last_error[0] ? pool->last_error : "timeout");
            px_client_close(c, "server_unavailable", "08006", m);
        }
        if (qwt > 0 && !pool->paused) {
            for (int guard = 0; guard < 100000 && !px_list_empty(&pool->waiting_clients); guard++) {
                px_client_t *c = px_container(pool->waiting_clients.next, px_client_t, link);
                if (w->now_ms - c->wait_ms <= qwt)
                    break;
                px_client_close(c, "query_wait_timeout", "08P01", "query_wait_timeout");
            }
        }
        if (cl && pool->welcome && pool->n_servers < minp && pool->n_login == 0)
            pool_launch(pool);
        pool_fill(pool);
    }
}

void px_pools_close_all(px_worker_t *w)
{
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        px_link_t *lists[3] = {&pool->active_servers, &pool->idle_servers, &pool->login_servers};
        for (int i = 0; i < 3; i++)
            for (int guard = 0; guard < 1000000 && !px_list_empty(lists[i]); guard++)
                server_close(px_container(lists[i]->next, px_server_t, link), "proxy stopping",
                             false);
        px_link_t *cl[4] = {&pool->welcome_clients, &pool->idle_clients, &pool->waiting_clients,
                            &pool->active_clients};
        for (int i = 0; i < 4; i++)
            for (int guard = 0; guard < 1000000 && !px_list_empty(cl[i]); guard++)
                px_client_close(px_container(cl[i]->next, px_client_t, link), "proxy_stopping",
                                "57P01", "terminating connection: the proxy is shutting down");
    }
}

void px_pools_free(px_worker_t *w)
{
    while (!px_list_empty(&w->pools)) {
        px_pool_t *pool = px_container(w->pools.next, px_pool_t, link);
        px_list_del(&pool->link);
        for (int i = 0; i < PX_NPARAMS; i++)
            px_istr_set(w, &pool->defaults[i], NULL);
        free(pool->welcome);
        free(pool);
    }
    free(w->pool_tab);
    w->pool_tab = NULL;
}
