/*
 * client.c: the client side of the PostgreSQL proxy — one state machine per connection
 * (see px_cl_state_t): start-up packet (SSLRequest → TLS, GSSENCRequest → 'N',
 * CancelRequest → forwarded to the worker that owns the key), SCRAM-SHA-256 login against
 * the verifier computed at configuration time, the welcome (the pool's server parameters
 * with the client's own values, our BackendKeyData, ReadyForQuery), then forwarding of
 * client messages to whichever server connection the pool lends it (px_client_pump).
 *
 * Forwarding reads only headers and streams bodies straight from the read buffer to the
 * server socket (one writev per batch). In transaction and statement mode named prepared
 * statements are tracked: Parse/Bind/Describe/Close are rewritten to server-side names,
 * Parse is skipped when the server already has the statement (ParseComplete synthesized),
 * and injected when a Bind lands on a server that lacks it. A protocol violation closes
 * only this client, with an ErrorResponse (SQLSTATE 08P01).
 */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/log.h"

/* Login state of a client (freed once logged in). */
typedef struct cl_login {
    pgauth_scram_server_t scram;
    px_cfg_t *cfg;      /* snapshot the login started under (reference held) */
    px_cluster_t *cl;
    px_user_t *u;
    bool ro;
    int stage;          /* 0: start-up, 1: SASLInitialResponse, 2: SASL response */
    char user[64];
    char db[64];
} cl_login_t;

static void client_cb(sbuf_t *sb, sbuf_event_t ev);

#define CANCEL_TAB 4096

static void cancel_register(px_client_t *c)
{
    px_worker_t *w = c->w;
    if (!w->cancel_tab && !(w->cancel_tab = calloc(CANCEL_TAB, sizeof(*w->cancel_tab))))
        return;
    for (int guard = 0; guard < 64; guard++) {
        uint32_t seq = ++w->cancel_seq & 0xffffff;
        uint32_t pid = ((uint32_t)(w->idx + 1) << 24) | seq;
        if (px_cancel_lookup(w, pid))
            continue;
        c->cancel_pid = pid;
        break;
    }
    if (px_random(w, &c->cancel_key, sizeof(c->cancel_key)) != 0)
        c->cancel_key = (uint32_t)c->id * 2654435761u;
    px_client_t **b = &w->cancel_tab[c->cancel_pid & (CANCEL_TAB - 1)];
    c->cnext = *b;
    *b = c;
}

static void cancel_unregister(px_client_t *c)
{
    px_worker_t *w = c->w;
    if (!c->cancel_pid || !w->cancel_tab)
        return;
    px_client_t **pp = &w->cancel_tab[c->cancel_pid & (CANCEL_TAB - 1)];
    while (*pp && *pp != c)
        pp = &(*pp)->cnext;
    if (*pp)
        *pp = c->cnext;
    c->cancel_pid = 0;
}

px_client_t *px_cancel_lookup(px_worker_t *w, uint32_t pid)
{
    if (!w->cancel_tab)
        return NULL;
    for (px_client_t *c = w->cancel_tab[pid & (CANCEL_TAB - 1)]; c; c = c->cnext)
        if (c->cancel_pid == pid)
            return c;
    return NULL;
}

void px_client_accept(px_worker_t *w, px_lsock_t *ls, int fd)
{
    px_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->id = ++w->next_id;
    c->ls = ls;
    atomic_fetch_add(&ls->refs, 1);
    c->connect_ms = w->now_ms;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    }
    c->state = PX_CL_STARTUP;
    px_list_add_tail(&w->login_clients, &c->link);
    w->nclients++;
    PX_STAT_ADD(w, clients_accepted, 1);
    if (sbuf_accept(&c->sb, &w->io, fd, client_cb) != 0) {
        c->sb.closed = true;
        px_client_close(c, "accept_failed", NULL, NULL);
    }
}

static void login_free(px_client_t *c)
{
    cl_login_t *lg = c->login;
    if (!lg)
        return;
    if (lg->cfg)
        px_cfg_unref(lg->cfg);
    OPENSSL_cleanse(lg, sizeof(*lg));
    free(lg);
    c->login = NULL;
}

/* Sends what is queued for the client; false when the connection broke. */
static bool client_flush(px_client_t *c)
{
    return sbuf_send(&c->sb, NULL, 0) == 0;
}

void px_client_close(px_client_t *c, const char *reason, const char *sqlstate, const char *msg)
{
    if (c->state == PX_CL_CLOSING)
        return;
    px_worker_t *w = c->w;
    if (msg && !c->sb.closed) {
        uint8_t buf[512];
        pg_wbuf_t wb;
        pg_wbuf_init(&wb, buf, sizeof(buf));
        pg_w_error(&wb, "FATAL", sqlstate ? sqlstate : "08P01", msg);
        if (!wb.failed && sbuf_send(&c->sb, buf, wb.len) != 0) {
            /* the client is gone anyway */
        }
    }
    px_pool_t *pool = c->pool;
    dbp_info("proxy_client_disconnect", "client=%llu peer=%s cluster=%s db=%s user=%s reason=%s",
             (unsigned long long)c->id, c->peer, pool ? pool->cluster : "-",
             dbp_log_q(pool ? pool->db : "-"), dbp_log_q(pool ? pool->user : "-"),
             dbp_log_q(reason));
    if (c->server)
        px_server_client_gone(c->server);
    if (c->state == PX_CL_WAITING && pool)
        pool->n_waiting--;
    px_list_del(&c->link);
    c->state = PX_CL_CLOSING;
    cancel_unregister(c);
    if (c->counted && pool && pool->cl) {
        atomic_fetch_sub(pool->cl->client_count, 1);
    } else if (c->counted && c->login && ((cl_login_t *)c->login)->cl) {
        atomic_fetch_sub(((cl_login_t *)c->login)->cl->client_count, 1);
    }
    c->counted = false;
    login_free(c);
    sbuf_close(&c->sb);
    w->nclients--;
    px_list_add_tail(&w->reap_clients, &c->link);
    px_schedule_reap(w);
}

void px_client_free(px_client_t *c)
{
    px_worker_t *w = c->w;
    for (int i = 0; i < PX_NPARAMS; i++)
        px_istr_set(w, &c->params[i], NULL);
    if (c->stmts) {
        px_smap_clear(c->stmts, &w->stmts);
        free(c->stmts);
    }
    if (c->ls)
        px_lsock_unref(c->ls);
    free(c);
}

/* Protocol violation: error to this client only. */
static void client_proto_error(px_client_t *c, const char *msg)
{
    PX_STAT_ADD(c->w, client_errors, 1);
    px_client_close(c, "protocol_violation", "08P01", msg);
}

/* ---- login ---- */

static void send_auth_fail(px_client_t *c, const char *user)
{
    char m[160];
    snprintf(m, sizeof(m), "password authentication failed for user \"%s\"", user);
    PX_STAT_ADD(c->w, logins_failed, 1);
    px_client_close(c, "auth_failed", "28P01", m);
}

void px_client_welcome(px_client_t *c)
{
    px_pool_t *pool = c->pool;
    px_worker_t *w = c->w;
    for (int i = 0; i < PX_NPARAMS; i++)
        if (!c->params[i] && pool->defaults[i]) {
            pool->defaults[i]->refs++;
            c->params[i] = pool->defaults[i];
        }
    size_t need = pool->welcome_len + 64;
    for (int i = 0; i < PX_NPARAMS; i++)
        need += c->params[i] ? c->params[i]->len + 32 : 0;
    uint8_t *buf = sbuf_out_reserve(&c->sb, need);
    if (!buf) {
        px_client_close(c, "out_of_memory", "53200", "out of memory");
        return;
    }
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, need);
    size_t off = 0;
    for (int guard = 0; guard < 10000 && off < pool->welcome_len; guard++) {
        pg_msg_t m;
        if (pg_msg_header(pool->welcome + off, pool->welcome_len - off, PX_MAX_SMALL, &m) <= 0 ||
            !m.body)
            break;
        pg_view_t name, value;
        if (pg_parse_param_status(m.body, m.len - 4, &name, &value) >= 0) {
            int i = px_param_index(name.p, name.len);
            if (i >= 0 && c->params[i])
                pg_w_param_status(&wb, name.p, name.len, c->params[i]->s, c->params[i]->len);
            else
                pg_w_bytes(&wb, pool->welcome + off, m.total);
        }
        off += m.total;
    }
    pg_w_begin(&wb, 'K');
    pg_w_u32(&wb, c->cancel_pid);
    pg_w_u32(&wb, c->cancel_key);
    pg_w_end(&wb);
    pg_w_ready(&wb, 'I');
    if (wb.failed) {
        px_client_close(c, "out_of_memory", "53200", "out of memory");
        return;
    }
    sbuf_out_commit(&c->sb, wb.len);
    px_list_del(&c->link);
    c->state = PX_CL_IDLE;
    px_list_add_tail(&pool->idle_clients, &c->link);
    PX_STAT_ADD(w, logins_ok, 1);
    dbp_info("proxy_client_login", "client=%llu peer=%s cluster=%s db=%s user=%s tls=%s",
             (unsigned long long)c->id, c->peer, pool->cluster, dbp_log_q(pool->db),
             dbp_log_q(pool->user), c->tls ? "yes" : "no");
    if (!client_flush(c)) {
        px_client_close(c, "write_failed", NULL, NULL);
        return;
    }
    if (c->sb.in && c->sb.in->len > c->sb.in->pos)
        px_client_pump(c);
}

/* Authenticated: attach to the pool and welcome (now, or once a server told us its
 * parameters). */
static void login_done(px_client_t *c)
{
    cl_login_t *lg = c->login;
    px_pool_t *pool = px_pool_get(c->w, lg->cl->c.tenant, lg->cl->c.name, lg->ro, lg->db,
                                  lg->user);
    if (!pool) {
        px_client_close(c, "out_of_memory", "53200", "out of memory");
        return;
    }
    if (c->counted)
        atomic_fetch_sub(lg->cl->client_count, 1); /* re-taken below on the pool's cluster */
    c->counted = false;
    c->pool = pool;
    if (pool->cl) {
        atomic_fetch_add(pool->cl->client_count, 1);
        c->counted = true;
    }
    if (pool->cl && pool->cl->c.pool_mode != PROXY_POOL_SESSION) {
        c->stmts = calloc(1, sizeof(*c->stmts));
        if (!c->stmts) {
            px_client_close(c, "out_of_memory", "53200", "out of memory");
            return;
        }
    }
    login_free(c);
    cancel_register(c);
    px_list_del(&c->link);
    if (pool->welcome) {
        px_client_welcome(c);
        return;
    }
    c->state = PX_CL_WELCOME;
    px_list_add_tail(&pool->welcome_clients, &c->link);
    if (!client_flush(c)) {
        px_client_close(c, "write_failed", NULL, NULL);
        return;
    }
    px_pool_kick(pool);
}

static void handle_cancel(px_client_t *c, uint32_t pid, uint32_t key)
{
    px_worker_t *w = c->w;
    int target = (int)(pid >> 24) - 1;
    if (target >= 0 && target < w->p->nworkers) {
        px_msg_t *m = calloc(1, sizeof(*m));
        if (m) {
            m->kind = PX_MSG_CANCEL;
            m->pid = pid;
            m->key = key;
            if (px_worker_post(&w->p->workers[target], m) != 0)
                free(m);
        }
    }
    px_client_close(c, "cancel_request", NULL, NULL);
}

static void handle_startup(px_client_t *c)
{
    px_worker_t *w = c->w;
    size_t avail;
    uint8_t *p = sbuf_data(&c->sb, &avail);
    pg_startup_t st;
    ssize_t r = pg_parse_startup(p, avail, &st);
    if (r == PG_NEED_MORE)
        return;
    if (r < 0) {
        client_proto_error(c, st.err ? st.err : "invalid startup packet");
        return;
    }
    sbuf_consume(&c->sb, (size_t)r);
    bool more = avail > (size_t)r;
    switch (st.kind) {
    case PG_STARTUP_SSL: {
        if (more) {
            client_proto_error(c, "unexpected data after SSLRequest");
            return;
        }
        bool ok = w->p->tls && !c->tls;
        char reply = ok ? 'S' : 'N';
        if (sbuf_send(&c->sb, &reply, 1) != 0) {
            px_client_close(c, "write_failed", NULL, NULL);
            return;
        }
        if (ok) {
            if (sbuf_start_tls(&c->sb, w->p->tls) != 0) {
                px_client_close(c, "tls_failed", NULL, NULL);
                return;
            }
            c->tls = true;
        }
        return;
    }
    case PG_STARTUP_GSSENC: {
        char reply = 'N';
        if (sbuf_send(&c->sb, &reply, 1) != 0)
            px_client_close(c, "write_failed", NULL, NULL);
        return;
    }
    case PG_STARTUP_CANCEL:
        handle_cancel(c, st.cancel_pid, st.cancel_key);
        return;
    case PG_STARTUP_MESSAGE:
        break;
    }
    if (more) {
        client_proto_error(c, "unexpected data after startup packet");
        return;
    }
    const px_endpoint_t *ep = px_cfg_endpoint(w->cfg, c->ls);
    if (!ep) {
        px_client_close(c, "endpoint_removed", "08006", "this endpoint is being removed");
        return;
    }
    px_cluster_t *cl = &w->cfg->clusters[ep->cluster];
    if (st.user.len >= 64 || st.database.len >= 64) {
        client_proto_error(c, "user or database name too long");
        return;
    }
    cl_login_t *lg = calloc(1, sizeof(*lg));
    if (!lg) {
        px_client_close(c, "out_of_memory", "53200", "out of memory");
        return;
    }
    c->login = lg;
    lg->cfg = w->cfg;
    px_cfg_ref(lg->cfg);
    lg->cl = cl;
    lg->ro = ep->ro;
    memcpy(lg->user, st.user.p, st.user.len);
    memcpy(lg->db, st.database.p, st.database.len);
    for (int i = 0; i < st.nparams; i++) {
        if (pg_view_eq(st.names[i], "replication")) {
            px_client_close(c, "replication_refused", "08P01",
                            "replication connections are not supported by the proxy");
            return;
        }
        int k = px_param_index(st.names[i].p, st.names[i].len);
        if (k >= 0 && st.values[i].len > 0 && st.values[i].len < 1024) {
            px_istr_t *v = px_istr_get(w, st.values[i].p, st.values[i].len);
            if (v)
                px_istr_set(w, &c->params[k], v);
        }
    }
    int limit = cl->c.max_client_connections;
    int n = atomic_fetch_add(cl->client_count, 1);
    c->counted = true;
    if (limit > 0 && n >= limit) {
        px_client_close(c, "max_client_connections", "53300",
                        "no more connections allowed (max_client_connections)");
        return;
    }
    lg->u = px_cluster_user(cl, st.user.p, st.user.len);
    if (!lg->u) {
        send_auth_fail(c, lg->user);
        return;
    }
    uint8_t buf[64];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    pg_w_auth(&wb, PG_AUTH_SASL, "SCRAM-SHA-256\0", 15);
    if (wb.failed || sbuf_send(&c->sb, buf, wb.len) != 0) {
        px_client_close(c, "write_failed", NULL, NULL);
        return;
    }
    lg->stage = 1;
    c->state = PX_CL_AUTH;
}

static void handle_auth(px_client_t *c)
{
    cl_login_t *lg = c->login;
    size_t avail;
    uint8_t *p = sbuf_data(&c->sb, &avail);
    pg_msg_t m;
    ssize_t r = pg_msg_header(p, avail, PX_MAX_AUTH_MSG, &m);
    if (r == PG_NEED_MORE)
        return;
    if (r < 0 || m.type != 'p') {
        client_proto_error(c, r < 0 ? m.err : "expected SASL response");
        return;
    }
    if (!m.body)
        return;
    size_t blen = m.len - 4;
    char out[PGAUTH_MSG_MAX + 8];
    uint8_t buf[PGAUTH_MSG_MAX + 64];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    bool done = false;
    if (lg->stage == 1) {
        pg_view_t mech, data;
        if (pg_parse_sasl_initial(m.body, blen, &mech, &data) < 0 || !data.p) {
            client_proto_error(c, "malformed SASLInitialResponse");
            return;
        }
        if (!pg_view_eq(mech, "SCRAM-SHA-256")) {
            px_client_close(c, "auth_failed", "28000", "unsupported SASL mechanism");
            return;
        }
        uint8_t rnd[18];
        char snonce[32];
        if (px_random(c->w, rnd, sizeof(rnd)) != 0 ||
            pgauth_b64_encode(rnd, sizeof(rnd), snonce, sizeof(snonce)) < 0) {
            px_client_close(c, "rand_failed", "58000", "could not generate nonce");
            return;
        }
        int n = pgauth_scram_server_first(&lg->scram, &lg->u->keys, data.p, data.len, snonce, out,
                                          sizeof(out));
        if (n < 0) {
            client_proto_error(c, lg->scram.err);
            return;
        }
        pg_w_auth(&wb, PG_AUTH_SASL_CONTINUE, out, (size_t)n);
        lg->stage = 2;
    } else {
        int n = pgauth_scram_server_final(&lg->scram, &lg->u->keys, (const char *)m.body, blen,
                                          out, sizeof(out));
        if (n == -2) {
            sbuf_consume(&c->sb, m.total);
            send_auth_fail(c, lg->user);
            return;
        }
        if (n < 0) {
            client_proto_error(c, lg->scram.err);
            return;
        }
        pg_w_auth(&wb, PG_AUTH_SASL_FINAL, out, (size_t)n);
        pg_w_auth(&wb, PG_AUTH_OK, NULL, 0);
        done = true;
    }
    sbuf_consume(&c->sb, m.total);
    if (wb.failed || sbuf_append(&c->sb, buf, wb.len) != 0) {
        px_client_close(c, "out_of_memory", NULL, NULL);
        return;
    }
    if (done) {
        login_done(c); /* the welcome goes out in the same write when it can */
        return;
    }
    if (!client_flush(c))
        px_client_close(c, "write_failed", NULL, NULL);
}

/* ---- forwarding ---- */

/* Writes Parse(server name, body) for st to s's output queue. */
static int write_parse(px_server_t *s, px_stmt_t *st)
{
    char name[24];
    size_t nl = px_stmt_srvname(st, name);
    size_t need = 5 + nl + 1 + st->len;
    uint8_t *d = sbuf_out_reserve(&s->sb, need);
    if (!d)
        return -1;
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, d, need);
    pg_w_begin(&wb, 'P');
    pg_w_bytes(&wb, name, nl);
    pg_w_u8(&wb, 0);
    pg_w_bytes(&wb, st->body, st->len);
    pg_w_end(&wb);
    if (wb.failed)
        return -1;
    sbuf_out_commit(&s->sb, wb.len);
    return 0;
}

/* Makes sure s has st prepared (injecting a Parse whose reply is swallowed). */
static int ensure_prepared(px_server_t *s, px_stmt_t *st)
{
    if (px_smap_has(&s->stmts, st))
        return 0;
    if (write_parse(s, st) != 0 || px_queue_push(&s->q, PX_Q_INJ_PARSE, st) != 0 ||
        px_smap_add(&s->stmts, st) != 0)
        return -1;
    return 0;
}

/* Writes a Describe/Close ('D'/'C') of statement st under its server name. */
static int write_target(px_server_t *s, char type, px_stmt_t *st)
{
    char name[24];
    size_t nl = px_stmt_srvname(st, name);
    uint8_t buf[40];
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, buf, sizeof(buf));
    pg_w_begin(&wb, type);
    pg_w_u8(&wb, 'S');
    pg_w_bytes(&wb, name, nl);
    pg_w_u8(&wb, 0);
    pg_w_end(&wb);
    return wb.failed ? -1 : sbuf_append(&s->sb, buf, wb.len);
}

/* An unlinked client in transaction mode that only prepares — named Parse messages then
 * Sync, the way PQprepare does — is answered here (ParseComplete per Parse, ReadyForQuery
 * 'I') without borrowing a server: the statements are prepared on a server at their first
 * Bind or Describe. Besides saving a round trip, this keeps a client that prepares
 * synchronously while its siblings hold every server in a transaction (pgbench -M prepared
 * with more clients than servers) from waiting on them. Returns the bytes consumed, or 0
 * when buf does not start with such a complete sequence. */
static size_t local_prepare(px_client_t *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    int nparse = 0;
    for (int guard = 0; guard < 64; guard++) {
        pg_msg_t m;
        if (pg_msg_header(buf + off, len - off, PX_MAX_PARSE, &m) <= 0 || !m.body)
            return 0;
        if (m.type == 'S') {
            off += m.total;
            break;
        }
        pg_parse_msg_t pm;
        if (m.type != 'P' || pg_parse_parse(m.body, m.len - 4, &pm) < 0 || pm.name.len == 0)
            return 0;
        nparse++;
        off += m.total;
        if (guard == 63)
            return 0;
    }
    if (nparse == 0)
        return 0;
    size_t at = 0;
    for (int i = 0; i < nparse; i++) {
        pg_msg_t m;
        pg_parse_msg_t pm;
        if (pg_msg_header(buf + at, len - at, PX_MAX_PARSE, &m) <= 0 ||
            pg_parse_parse(m.body, m.len - 4, &pm) < 0)
            return 0;
        px_stmt_t *st = px_stmt_get(&c->w->stmts, (const uint8_t *)pm.rest.p, pm.rest.len);
        if (!st)
            return 0;
        if (px_smap_put_name(c->stmts, &c->w->stmts, pm.name.p, pm.name.len, st) != 0) {
            px_stmt_unref(&c->w->stmts, st);
            return 0;
        }
        static const uint8_t parse_complete[5] = {'1', 0, 0, 0, 4};
        if (sbuf_append(&c->sb, parse_complete, 5) != 0)
            return 0;
        at += m.total;
    }
    static const uint8_t ready[6] = {'Z', 0, 0, 0, 5, 'I'};
    if (sbuf_append(&c->sb, ready, 6) != 0)
        return 0;
    return off;
}

void px_client_pump(px_client_t *c)
{
    px_worker_t *w = c->w;
    px_pool_t *pool = c->pool;
    if (c->state < PX_CL_IDLE || c->state == PX_CL_CLOSING || !pool)
        return;
    bool txmode = c->stmts != NULL;
    size_t avail;
    uint8_t *p = sbuf_data(&c->sb, &avail);
    size_t off = 0, vstart = 0, vlen = 0;
    px_server_t *s = c->server;
    const char *perr = NULL;
    c->active_ms = w->now_ms;
    if (s && pool->paused && s->txstatus == 'I' && s->q.count == 0 && !s->in_batch &&
        !s->pass_left && !c->pass_left) {
        /* Session mode, paused cluster, between transactions: hold the next one (the
         * input stays buffered; px_pools_set_paused resumes reading). */
        sbuf_pause(&c->sb);
        return;
    }
#define VERB(n)           \
    do {                  \
        if (vlen == 0)    \
            vstart = off; \
        vlen += (n);      \
    } while (0)
#define FLUSH_VERB()                                                  \
    do {                                                              \
        if (vlen) {                                                   \
            if (sbuf_append(&s->sb, p + vstart, vlen) != 0)           \
                goto oom;                                             \
            vlen = 0;                                                 \
        }                                                             \
    } while (0)
    while (off < avail) {
        if (c->pass_left) {
            size_t k = avail - off < c->pass_left ? avail - off : c->pass_left;
            VERB(k);
            off += k;
            c->pass_left -= k;
            continue;
        }
        pg_msg_t m;
        ssize_t r = pg_msg_header(p + off, avail - off, PG_MAX_MSG_LEN, &m);
        if (r == PG_NEED_MORE)
            break;
        if (r < 0) {
            perr = m.err;
            break;
        }
        if (!pg_frontend_type_valid(m.type) || m.type == 'p') {
            perr = "invalid frontend message type";
            break;
        }
        if (m.type == 'X') {
            if (s) {
                FLUSH_VERB();
                if (sbuf_send(&s->sb, NULL, 0) != 0) {
                    /* the server side is closed by px_client_close below */
                }
            }
            sbuf_consume(&c->sb, off + (avail - off >= m.total ? m.total : avail - off));
            px_client_close(c, "client_terminated", NULL, NULL);
            return;
        }
        if (!s && txmode && m.type == 'P') {
            size_t k = local_prepare(c, p + off, avail - off);
            if (k) {
                off += k;
                if (!client_flush(c)) {
                    sbuf_consume(&c->sb, off);
                    px_client_close(c, "write_failed", NULL, NULL);
                    return;
                }
                continue;
            }
        }
        if (!s) {
            if (!px_pool_acquire(pool, c)) {
                if (c->state == PX_CL_CLOSING)
                    return;
                break; /* waiting: the input stays buffered */
            }
            s = c->server;
        }
        size_t blen = m.len - 4;
        char kind = 0;
        pg_view_t name = {0};
        /* Messages that may carry a named statement in transaction mode. */
        if (txmode && (m.type == 'P' || m.type == 'D' || m.type == 'C')) {
            if (!m.body) {
                size_t cap = m.type == 'P' ? PX_MAX_PARSE : PX_MAX_SMALL;
                if (m.total > cap) {
                    perr = "message too large";
                    break;
                }
                /* Peek at the name first: unnamed ones stream. */
                const uint8_t *b = p + off + 5;
                size_t have = avail - off - 5;
                bool named_unknown = true;
                if (m.type == 'P' && have > 0 && b[0] == 0)
                    named_unknown = false;
                if (m.type != 'P' && have > 1 && b[0] == 'P')
                    named_unknown = false;
                if (m.type != 'P' && have > 1 && b[0] == 'S' && b[1] == 0)
                    named_unknown = false;
                if (named_unknown) {
                    FLUSH_VERB();
                    sbuf_consume(&c->sb, off);
                    off = 0;
                    if (sbuf_reserve_in(&c->sb, m.total) != 0)
                        goto oom;
                    p = sbuf_data(&c->sb, &avail);
                    goto out;
                }
            } else if (m.type == 'P') {
                pg_parse_msg_t pm;
                if (pg_parse_parse(m.body, blen, &pm) < 0) {
                    perr = "invalid Parse message";
                    break;
                }
                name = pm.name;
                if (name.len) {
                    px_stmt_t *st = px_stmt_get(&w->stmts, (const uint8_t *)pm.rest.p, pm.rest.len);
                    if (!st || px_smap_put_name(c->stmts, &w->stmts, name.p, name.len, st) != 0) {
                        px_stmt_unref(&w->stmts, st);
                        goto oom;
                    }
                    FLUSH_VERB();
                    s->in_batch = true;
                    if (px_smap_has(&s->stmts, st)) {
                        if (px_queue_push(&s->q, PX_Q_SYN_PARSE, NULL) != 0)
                            goto oom;
                    } else {
                        if (write_parse(s, st) != 0 || px_queue_push(&s->q, 'P', st) != 0 ||
                            px_smap_add(&s->stmts, st) != 0)
                            goto oom;
                    }
                    off += m.total;
                    continue;
                }
            } else {
                if (pg_parse_target(m.body, blen, &kind, &name) < 0) {
                    perr = "invalid Describe/Close message";
                    break;
                }
                if (kind == 'S' && name.len) {
                    px_stmt_t *st = px_smap_find_name(c->stmts, name.p, name.len);
                    FLUSH_VERB();
                    s->in_batch = true;
                    if (m.type == 'C') {
                        px_smap_del_name(c->stmts, &w->stmts, name.p, name.len);
                        if (px_queue_push(&s->q, PX_Q_SYN_CLOSE, NULL) != 0)
                            goto oom;
                        off += m.total;
                        continue;
                    }
                    if (st) {
                        if (ensure_prepared(s, st) != 0 || write_target(s, 'D', st) != 0 ||
                            px_queue_push(&s->q, 'D', NULL) != 0)
                            goto oom;
                        off += m.total;
                        continue;
                    }
                    /* unknown name: forward as is, the server reports the error */
                }
            }
        }
        if (txmode && m.type == 'B') {
            pg_view_t portal, stmt;
            size_t have = avail - off - 5 < blen ? avail - off - 5 : blen;
            ssize_t nr = pg_parse_bind_names(p + off + 5, have, PX_MAX_NAME, &portal, &stmt);
            if (nr == PG_NEED_MORE && have < blen) {
                FLUSH_VERB();
                sbuf_consume(&c->sb, off);
                off = 0;
                if (sbuf_reserve_in(&c->sb, m.total < 4096 ? m.total : 4096) != 0)
                    goto oom;
                p = sbuf_data(&c->sb, &avail);
                goto out;
            }
            if (nr <= 0) {
                perr = "invalid Bind message";
                break;
            }
            px_stmt_t *st = stmt.len ? px_smap_find_name(c->stmts, stmt.p, stmt.len) : NULL;
            if (st) {
                FLUSH_VERB();
                s->in_batch = true;
                char sname[24];
                size_t nl = px_stmt_srvname(st, sname);
                if (ensure_prepared(s, st) != 0)
                    goto oom;
                uint8_t hdr[5 + PX_MAX_NAME + 1 + 24 + 1];
                pg_wbuf_t wb;
                pg_wbuf_init(&wb, hdr, sizeof(hdr));
                pg_w_u8(&wb, 'B');
                pg_w_u32(&wb, (uint32_t)(m.len - stmt.len + nl));
                pg_w_view(&wb, portal);
                pg_w_bytes(&wb, sname, nl);
                pg_w_u8(&wb, 0);
                if (wb.failed || sbuf_append(&s->sb, hdr, wb.len) != 0 ||
                    px_queue_push(&s->q, 'B', NULL) != 0)
                    goto oom;
                off += 5 + (size_t)nr;
                size_t rest = m.total - 5 - (size_t)nr;
                size_t k = avail - off < rest ? avail - off : rest;
                VERB(k);
                off += k;
                c->pass_left = rest - k;
                continue;
            }
        }
        /* Forward as is (streaming), recording the expected response. */
        char qk = 0;
        switch (m.type) {
        case 'Q': case 'F': case 'S': case 'P': case 'B': case 'D': case 'E': case 'C':
            qk = m.type;
            break;
        default:
            break;
        }
        if (qk && px_queue_push(&s->q, qk, NULL) != 0)
            goto oom;
        if (m.type == 'S')
            s->in_batch = false;
        else if (qk && qk != 'Q' && qk != 'F')
            s->in_batch = true;
        if (avail - off >= m.total) {
            VERB(m.total);
            off += m.total;
        } else {
            VERB(avail - off);
            c->pass_left = m.total - (avail - off);
            off = avail;
        }
    }
out:
    if (s) {
        int rc = sbuf_send(&s->sb, vlen ? p + vstart : NULL, vlen);
        sbuf_consume(&c->sb, off);
        if (rc != 0) {
            px_client_close(c, "server_write_failed", "08006", "server connection lost");
            return;
        }
        if (s->q.count && px_queue_front(&s->q)->kind >= 'a' &&
            px_queue_front(&s->q)->kind != PX_Q_INJ_QUERY &&
            px_queue_front(&s->q)->kind != PX_Q_INJ_PARSE) {
            if (px_server_emit_synth(s) != 0 || !client_flush(c)) {
                px_client_close(c, "write_failed", NULL, NULL);
                return;
            }
        }
        if (sbuf_blocked(&s->sb))
            sbuf_pause(&c->sb);
    } else {
        sbuf_consume(&c->sb, off);
    }
    if (perr)
        client_proto_error(c, perr);
    else if (c->state == PX_CL_WAITING && c->sb.in && c->sb.in->len - c->sb.in->pos > (1u << 20))
        sbuf_pause(&c->sb); /* bounded buffering while waiting */
    return;
oom:
    sbuf_consume(&c->sb, off);
    px_client_close(c, "out_of_memory", "53200", "out of memory or too many pipelined requests");
#undef VERB
#undef FLUSH_VERB
}

static void client_cb(sbuf_t *sb, sbuf_event_t ev)
{
    px_client_t *c = px_container(sb, px_client_t, sb);
    c->w->now_ms = px_now_ms();
    switch (ev) {
    case SBUF_EV_DATA:
        switch (c->state) {
        case PX_CL_STARTUP:
            handle_startup(c);
            break;
        case PX_CL_AUTH:
            handle_auth(c);
            break;
        case PX_CL_WELCOME:
            break; /* keep buffered until the welcome is sent */
        case PX_CL_IDLE:
        case PX_CL_WAITING:
        case PX_CL_ACTIVE:
            px_client_pump(c);
            break;
        case PX_CL_CLOSING:
            break;
        }
        break;
    case SBUF_EV_EOF:
        px_client_close(c, sb->err ? sb->err : "eof", NULL, NULL);
        break;
    case SBUF_EV_DRAINED:
        if (c->server)
            sbuf_resume(&c->server->sb);
        break;
    case SBUF_EV_CONNECTED:
        break;
    }
}

void px_client_tick(px_worker_t *w)
{
    px_cfg_t *cfg = w->cfg;
    int64_t login_to = 0;
    for (int i = 0; cfg && i < cfg->nclusters; i++)
        if (cfg->clusters[i].c.client_login_timeout_ms > login_to)
            login_to = cfg->clusters[i].c.client_login_timeout_ms;
    if (login_to <= 0)
        login_to = 60000;
    for (int guard = 0; guard < 100000 && !px_list_empty(&w->login_clients); guard++) {
        px_client_t *c = px_container(w->login_clients.next, px_client_t, link);
        if (w->now_ms - c->connect_ms <= login_to)
            break;
        px_client_close(c, "client_login_timeout", "08006", "client_login_timeout");
    }
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next) {
        px_pool_t *pool = px_container(l, px_pool_t, link);
        int64_t to = pool->cl ? pool->cl->c.idle_in_transaction_timeout_ms : 0;
        if (to <= 0)
            continue;
        for (int guard = 0; guard < 100000; guard++) {
            px_client_t *victim = NULL;
            for (px_link_t *it = pool->active_clients.next; it != &pool->active_clients; it = it->next) {
                px_client_t *c = px_container(it, px_client_t, link);
                px_server_t *s = c->server;
                if (s && s->txstatus != 'I' && s->q.count == 0 && w->now_ms - c->active_ms > to) {
                    victim = c;
                    break;
                }
            }
            if (!victim)
                break;
            px_client_close(victim, "idle_in_transaction_timeout", "25P03",
                            "terminating connection due to idle-in-transaction timeout");
        }
    }
}
