/*
 * proxy.c: the proxy's public interface (proxy.h) and its workers. proxy_start builds an
 * immutable configuration snapshot (users' SCRAM verifiers derived here, once per
 * password), opens one SO_REUSEPORT listening socket per worker and endpoint in the
 * caller's thread (so a busy port is reported synchronously), and starts the worker
 * threads. Each worker runs its own libevent base: accept, client and server connections,
 * a 100 ms maintenance tick, and an inbox pipe through which proxy_update hands it a new
 * snapshot, other workers forward CancelRequests, and proxy_stats_json asks for numbers.
 * Nothing on the per-message path takes a lock.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"

const char *const px_param_names[PX_NPARAMS] = {
    "client_encoding", "DateStyle", "TimeZone", "application_name",
    "search_path", "standard_conforming_strings", "IntervalStyle",
};

int px_param_index(const char *name, size_t len)
{
    for (int i = 0; i < PX_NPARAMS; i++)
        if (strlen(px_param_names[i]) == len && strncasecmp(px_param_names[i], name, len) == 0)
            return i;
    return -1;
}

int px_random(px_worker_t *w, void *out, size_t n)
{
    if (n > 64)
        return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
    if (w->rnd_left < n) {
        if (RAND_bytes(w->rnd, (int)sizeof(w->rnd)) != 1)
            return -1;
        w->rnd_left = sizeof(w->rnd);
    }
    uint8_t *src = w->rnd + sizeof(w->rnd) - w->rnd_left;
    memcpy(out, src, n);
    OPENSSL_cleanse(src, n);
    w->rnd_left -= n;
    return 0;
}

int64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- interned strings ---- */

#define ISTR_TAB 1024

px_istr_t *px_istr_get(px_worker_t *w, const char *s, size_t len)
{
    if (!w->istr_tab && !(w->istr_tab = calloc(ISTR_TAB, sizeof(*w->istr_tab))))
        return NULL;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    px_istr_t **b = &w->istr_tab[h & (ISTR_TAB - 1)];
    for (px_istr_t *e = *b; e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0) {
            e->refs++;
            return e;
        }
    px_istr_t *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    e->refs = 1;
    e->hash = h;
    e->len = (uint32_t)len;
    memcpy(e->s, s, len);
    e->s[len] = 0;
    e->next = *b;
    *b = e;
    return e;
}

void px_istr_put(px_worker_t *w, px_istr_t *s)
{
    if (!s || --s->refs > 0)
        return;
    px_istr_t **pp = &w->istr_tab[s->hash & (ISTR_TAB - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    free(s);
}

/* ---- snapshots ---- */

void px_cfg_ref(px_cfg_t *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void px_lsock_unref(px_lsock_t *ls)
{
    if (ls && atomic_fetch_sub(&ls->refs, 1) == 1) {
        /* Sockets no worker took (or still holds) are closed here. */
        for (int i = 0; i < ls->nfds; i++)
            if (ls->fds[i] >= 0)
                close(ls->fds[i]);
        free(ls);
    }
}

void px_cfg_unref(px_cfg_t *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    for (int i = 0; i < c->nclusters; i++) {
        px_cluster_t *cl = &c->clusters[i];
        for (int j = 0; j < cl->nusers; j++) {
            if (cl->users[j].password) {
                OPENSSL_cleanse(cl->users[j].password, cl->users[j].pwlen);
                free(cl->users[j].password);
            }
            OPENSSL_cleanse(&cl->users[j].keys, sizeof(cl->users[j].keys));
        }
        free(cl->users);
        free(cl->dbs);
        if (cl->tls_verify)
            SSL_CTX_free(cl->tls_verify);
    }
    for (int i = 0; i < c->neps; i++)
        px_lsock_unref(c->eps[i].ls);
    free(c->eps);
    free(c->clusters);
    free(c);
}

const px_endpoint_t *px_cfg_endpoint(const px_cfg_t *cfg, const px_lsock_t *ls)
{
    for (int i = 0; cfg && i < cfg->neps; i++)
        if (cfg->eps[i].ls == ls)
            return &cfg->eps[i];
    return NULL;
}

px_user_t *px_cluster_user(px_cluster_t *cl, const char *name, size_t len)
{
    for (int i = 0; i < cl->nusers; i++)
        if (strlen(cl->users[i].name) == len && memcmp(cl->users[i].name, name, len) == 0)
            return &cl->users[i];
    return NULL;
}

/* A counter that lives as long as the proxy, by key. */
typedef struct px_counter_node {
    struct px_counter_node *next;
    char key[256];
    atomic_int v;
} px_counter_node_t;

static atomic_int *counter_get(proxy_t *p, const char *key)
{
    px_counter_node_t **head = (px_counter_node_t **)&p->counters;
    for (px_counter_node_t *n = *head; n; n = n->next)
        if (strcmp(n->key, key) == 0)
            return &n->v;
    px_counter_node_t *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    snprintf(n->key, sizeof(n->key), "%s", key);
    atomic_init(&n->v, 0);
    n->next = *head;
    *head = n;
    return &n->v;
}

/* The listening sockets for address:port: existing ones are reused. */
static px_lsock_t *lsock_get(proxy_t *p, const char *address, int port, dbp_err_t *err)
{
    for (int i = 0; i < p->nlsocks; i++)
        if (p->lsocks[i]->port == port && strcmp(p->lsocks[i]->address, address) == 0)
            return p->lsocks[i];
    px_lsock_t *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(ls->address, sizeof(ls->address), "%s", address);
    ls->port = port;
    ls->nfds = p->nworkers;
    atomic_init(&ls->refs, 1);
    for (int i = 0; i < PX_MAX_WORKERS; i++)
        ls->fds[i] = -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    const char *a = strcmp(address, "localhost") == 0 || !*address ? "127.0.0.1" : address;
    if (inet_pton(AF_INET, a, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        sl = sizeof(*in4);
    } else if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*in6);
    } else {
        free(ls);
        dbp_err_set(err, DBP_EINVAL, "listen address %s is not an IP address", address);
        return NULL;
    }
    /* SO_REUSEPORT lets any process of the same user bind the port too, and the kernel
     * would then split new connections between the two silently (seen when a test's proxy
     * and a benchmark's picked the same port). A probe bound without SO_REUSEPORT fails
     * with EADDRINUSE when anything listens there already: refuse the port. */
    {
        int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (probe < 0 || setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            bind(probe, (struct sockaddr *)&ss, sl) != 0) {
            dbp_err_set(err, DBP_EIO, "listen on %s:%d: %s", address, port, strerror(errno));
            if (probe >= 0)
                close(probe);
            free(ls);
            return NULL;
        }
        close(probe);
    }
    for (int i = 0; i < ls->nfds; i++) {
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
            bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
            dbp_err_set(err, DBP_EIO, "listen on %s:%d: %s", address, port, strerror(errno));
            if (fd >= 0)
                close(fd);
            for (int j = 0; j < i; j++)
                close(ls->fds[j]);
            free(ls);
            return NULL;
        }
        ls->fds[i] = fd;
    }
    px_lsock_t **nt = realloc(p->lsocks, (size_t)(p->nlsocks + 1) * sizeof(*nt));
    if (!nt) {
        for (int j = 0; j < ls->nfds; j++)
            close(ls->fds[j]);
        free(ls);
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    p->lsocks = nt;
    p->lsocks[p->nlsocks++] = ls;
    return ls;
}

/* Drops table entries no snapshot references any more (called under p->mu). */
static void lsocks_prune(proxy_t *p, const px_cfg_t *cfg)
{
    for (int i = 0; i < p->nlsocks;) {
        px_lsock_t *ls = p->lsocks[i];
        bool used = false;
        for (int j = 0; j < cfg->neps; j++)
            if (cfg->eps[j].ls == ls)
                used = true;
        if (used) {
            i++;
            continue;
        }
        p->lsocks[i] = p->lsocks[--p->nlsocks];
        px_lsock_unref(ls);
    }
}

/* Builds a snapshot from the caller's config; `prev` (may be NULL) supplies verifiers of
 * unchanged passwords and the topology of clusters whose new epoch is older. */
static px_cfg_t *cfg_build(proxy_t *p, const proxy_config_t *in, const px_cfg_t *prev,
                           dbp_err_t *err)
{
    px_cfg_t *c = calloc(1, sizeof(*c));
    if (!c) {
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&c->refs, 1);
    if (in->nclusters < 0 || in->nclusters > 4096) {
        free(c);
        dbp_err_set(err, DBP_EINVAL, "bad cluster count");
        return NULL;
    }
    c->clusters = calloc((size_t)(in->nclusters ? in->nclusters : 1), sizeof(*c->clusters));
    c->eps = calloc((size_t)(in->nclusters ? in->nclusters : 1) * 2, sizeof(*c->eps));
    if (!c->clusters || !c->eps) {
        px_cfg_unref(c);
        dbp_err_set(err, DBP_ENOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < in->nclusters; i++) {
        const proxy_cluster_t *src = &in->clusters[i];
        px_cluster_t *cl = &c->clusters[i];
        c->nclusters++;
        cl->c = *src;
        cl->c.users = NULL;
        cl->c.nusers = 0;
        cl->c.databases = NULL;
        cl->c.ndatabases = 0;
        if (src->engine[0] && strcmp(src->engine, "postgresql") != 0) {
            dbp_err_set(err, DBP_EUNSUPPORTED, "cluster %s: engine %s is not proxied yet",
                        src->name, src->engine);
            goto fail;
        }
        if (src->nbackends < 0 || src->nbackends > PROXY_MAX_BACKENDS || src->rw_port <= 0 ||
            src->rw_port > 65535 || src->ro_port < 0 || src->ro_port > 65535) {
            dbp_err_set(err, DBP_EINVAL, "cluster %s: bad ports or backend count", src->name);
            goto fail;
        }
        if ((int)src->server_tls < PROXY_SERVER_TLS_DISABLE ||
            src->server_tls > PROXY_SERVER_TLS_VERIFY_FULL ||
            (src->server_tls == PROXY_SERVER_TLS_VERIFY_FULL && !p->tls_client_verify &&
             !src->server_tls_ca[0])) {
            dbp_err_set(err, DBP_EINVAL,
                        "cluster %s: bad server_tls (verify-full needs a CA bundle: the "
                        "cluster's server_tls_ca, or the proxy's at start)",
                        src->name);
            goto fail;
        }
        const px_cluster_t *old = NULL;
        for (int j = 0; prev && j < prev->nclusters; j++)
            if (strcmp(prev->clusters[j].c.name, src->name) == 0 &&
                strcmp(prev->clusters[j].c.tenant, src->tenant) == 0)
                old = &prev->clusters[j];
        if (old && old->c.epoch > src->epoch) {
            /* An older topology never replaces a newer one. */
            memcpy(cl->c.backends, old->c.backends, sizeof(cl->c.backends));
            cl->c.nbackends = old->c.nbackends;
            cl->c.epoch = old->c.epoch;
        }
        if (src->server_tls == PROXY_SERVER_TLS_VERIFY_FULL && src->server_tls_ca[0]) {
            /* The cluster's own CA bundle: the previous snapshot's context is shared when
             * the path is the same (the bundle is read once). */
            if (old && old->tls_verify && strcmp(old->c.server_tls_ca, src->server_tls_ca) == 0 &&
                SSL_CTX_up_ref(old->tls_verify) == 1) {
                cl->tls_verify = old->tls_verify;
            } else {
                cl->tls_verify = px_tls_client_context(true, src->server_tls_ca, err);
                if (!cl->tls_verify)
                    goto fail;
            }
        }
        cl->primary = -1;
        for (int b = 0; b < cl->c.nbackends; b++)
            if (cl->c.backends[b].primary && cl->primary < 0)
                cl->primary = b;
        char key[256];
        snprintf(key, sizeof(key), "%s/%s", src->tenant, src->name);
        cl->client_count = counter_get(p, key);
        if (!cl->client_count)
            goto oom;
        if (src->nusers > 0) {
            cl->users = calloc((size_t)src->nusers, sizeof(*cl->users));
            if (!cl->users)
                goto oom;
        }
        for (int j = 0; j < src->nusers; j++) {
            const proxy_user_t *su = &src->users[j];
            px_user_t *u = &cl->users[j];
            cl->nusers++;
            snprintf(u->name, sizeof(u->name), "%s", su->username);
            u->max_connections = su->max_connections;
            const char *pw = su->password ? su->password : "";
            u->pwlen = strlen(pw);
            u->password = malloc(u->pwlen + 1);
            if (!u->password)
                goto oom;
            memcpy(u->password, pw, u->pwlen + 1);
            snprintf(key, sizeof(key), "%s/%s/%s", src->tenant, src->name, su->username);
            u->server_count = counter_get(p, key);
            if (!u->server_count)
                goto oom;
            px_user_t *ou = old ? px_cluster_user((px_cluster_t *)old, u->name, strlen(u->name)) : NULL;
            if (su->scram_verifier && su->scram_verifier[0]) {
                if (pgauth_scram_parse_verifier(su->scram_verifier, strlen(su->scram_verifier),
                                                &u->keys) != 0) {
                    dbp_err_set(err, DBP_EINVAL, "cluster %s: malformed SCRAM verifier for %s",
                                src->name, u->name);
                    goto fail;
                }
            } else if (ou && ou->pwlen == u->pwlen &&
                       CRYPTO_memcmp(ou->password, u->password, u->pwlen) == 0) {
                u->keys = ou->keys;
            } else {
                uint8_t salt[16];
                if (RAND_bytes(salt, sizeof(salt)) != 1 ||
                    pgauth_scram_make_keys(u->password, u->pwlen, salt, sizeof(salt),
                                           PGAUTH_SCRAM_ITERATIONS, &u->keys) != 0) {
                    dbp_err_set(err, DBP_ECRYPTO, "cluster %s: SCRAM verifier for %s failed",
                                src->name, u->name);
                    goto fail;
                }
            }
        }
        if (src->ndatabases < 0 || (src->ndatabases > 0 && !src->databases)) {
            dbp_err_set(err, DBP_EINVAL, "cluster %s: bad database list", src->name);
            goto fail;
        }
        if (src->ndatabases > 0) {
            cl->dbs = calloc((size_t)src->ndatabases, sizeof(*cl->dbs));
            if (!cl->dbs)
                goto oom;
        }
        for (int j = 0; j < src->ndatabases; j++) {
            const proxy_database_t *sd = &src->databases[j];
            px_db_t *d = &cl->dbs[j];
            cl->ndbs++;
            snprintf(d->name, sizeof(d->name), "%s", sd->name);
            d->max_connections = sd->max_connections < 0 ? -1 : sd->max_connections;
            /* The unit separator (\037) keeps database keys apart from "tenant/cluster/user". */
            snprintf(key, sizeof(key), "%s/%s\037db\037%s", src->tenant, src->name, sd->name);
            d->server_count = counter_get(p, key);
            if (!d->server_count)
                goto oom;
        }
        const char *addr = src->address[0] ? src->address : "127.0.0.1";
        int ports[2] = {src->rw_port, src->ro_port};
        for (int k = 0; k < 2; k++) {
            if (ports[k] <= 0)
                continue;
            for (int e = 0; e < c->neps; e++)
                if (c->eps[e].ls->port == ports[k] && strcmp(c->eps[e].ls->address, addr) == 0) {
                    dbp_err_set(err, DBP_EINVAL, "cluster %s: port %d used twice", src->name,
                                ports[k]);
                    goto fail;
                }
            px_lsock_t *ls = lsock_get(p, addr, ports[k], err);
            if (!ls)
                goto fail;
            atomic_fetch_add(&ls->refs, 1);
            c->eps[c->neps].ls = ls;
            c->eps[c->neps].cluster = i;
            c->eps[c->neps].ro = k == 1;
            c->neps++;
        }
    }
    return c;
oom:
    dbp_err_set(err, DBP_ENOMEM, "out of memory");
fail:
    px_cfg_unref(c);
    return NULL;
}

/* ---- workers ---- */

int px_worker_post(px_worker_t *w, px_msg_t *m)
{
    ssize_t n = write(w->inbox[1], &m, sizeof(m));
    return n == (ssize_t)sizeof(m) ? 0 : -1;
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    px_worker_t *w = arg;
    while (!px_list_empty(&w->reap_clients)) {
        px_client_t *c = px_container(w->reap_clients.next, px_client_t, link);
        px_list_del(&c->link);
        px_client_free(c);
    }
    while (!px_list_empty(&w->reap_servers)) {
        px_server_t *s = px_container(w->reap_servers.next, px_server_t, link);
        px_list_del(&s->link);
        px_server_free(s);
    }
    while (!px_list_empty(&w->reap_cancels)) {
        px_cancel_t *k = px_container(w->reap_cancels.next, px_cancel_t, link);
        px_list_del(&k->link);
        px_cancel_free(k);
    }
}

void px_schedule_reap(px_worker_t *w)
{
    if (w->reap_ev)
        event_active(w->reap_ev, EV_TIMEOUT, 0);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    px_wlistener_t *wl = arg;
    px_worker_t *w = wl->w;
    w->now_ms = px_now_ms();
    for (int i = 0; i < 64; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                dbp_warn("proxy_accept_failed", "port=%d reason=%s", wl->ls->port,
                         dbp_log_q(strerror(errno)));
            return;
        }
        px_client_accept(w, wl->ls, cfd);
    }
}

/* Stops listening on w->ls[i] and closes this worker's socket of it. */
static void listener_remove(px_worker_t *w, int i)
{
    px_wlistener_t *wl = w->ls[i];
    event_free(wl->ev);
    close(wl->ls->fds[w->idx]);
    wl->ls->fds[w->idx] = -1;
    px_lsock_unref(wl->ls);
    free(wl);
    w->ls[i] = w->ls[--w->nls];
}

/* Listens on the endpoints of the worker's snapshot; stops listening on removed ones. */
static void listeners_reconcile(px_worker_t *w)
{
    px_cfg_t *cfg = w->cfg;
    for (int i = 0; i < w->nls; i++)
        w->ls[i]->seen = false;
    for (int e = 0; cfg && e < cfg->neps; e++) {
        px_lsock_t *ls = cfg->eps[e].ls;
        bool have = false;
        for (int i = 0; i < w->nls; i++)
            if (w->ls[i]->ls == ls) {
                w->ls[i]->seen = true;
                have = true;
            }
        if (have || ls->fds[w->idx] < 0)
            continue;
        px_wlistener_t **nl = realloc(w->ls, (size_t)(w->nls + 1) * sizeof(*nl));
        if (!nl)
            continue;
        w->ls = nl;
        px_wlistener_t *wl = calloc(1, sizeof(*wl));
        if (!wl)
            continue;
        wl->ls = ls;
        wl->w = w;
        wl->seen = true;
        wl->ev = event_new(w->base, ls->fds[w->idx], EV_READ | EV_PERSIST, accept_cb, wl);
        if (!wl->ev) {
            free(wl);
            continue;
        }
        atomic_fetch_add(&ls->refs, 1);
        event_add(wl->ev, NULL);
        w->ls[w->nls++] = wl;
    }
    for (int i = 0; i < w->nls;) {
        if (w->ls[i]->seen)
            i++;
        else
            listener_remove(w, i);
    }
}

static void worker_apply_cfg(px_worker_t *w, px_cfg_t *cfg)
{
    px_cfg_t *old = w->cfg;
    w->cfg = cfg;
    listeners_reconcile(w);
    px_pools_refresh(w);
    px_cfg_unref(old);
}

static int list_len(const px_link_t *h)
{
    int n = 0;
    for (const px_link_t *l = h->next; l != h && n < 10000000; l = l->next)
        n++;
    return n;
}

json_t *px_pool_json(px_pool_t *pool)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "tenant", json_string(pool->tenant));
    json_object_set_new(o, "cluster", json_string(pool->cluster));
    json_object_set_new(o, "endpoint", json_string(pool->ro ? "ro" : "rw"));
    json_object_set_new(o, "database", json_string(pool->db));
    json_object_set_new(o, "user", json_string(pool->user));
    json_object_set_new(o, "cl_active", json_integer(list_len(&pool->active_clients)));
    json_object_set_new(o, "cl_waiting", json_integer(pool->n_waiting));
    json_object_set_new(o, "cl_idle", json_integer(list_len(&pool->idle_clients)));
    json_object_set_new(o, "cl_login", json_integer(list_len(&pool->welcome_clients)));
    json_object_set_new(o, "sv_active", json_integer(pool->n_active_sv));
    json_object_set_new(o, "sv_idle", json_integer(pool->n_idle));
    json_object_set_new(o, "sv_login", json_integer(pool->n_login));
    json_object_set_new(o, "queries", json_integer((json_int_t)pool->queries));
    json_object_set_new(o, "transactions", json_integer((json_int_t)pool->transactions));
    json_object_set_new(o, "wait_us", json_integer((json_int_t)pool->wait_us));
    json_object_set_new(o, "paused", json_boolean(pool->paused));
    if (pool->d) {
        /* The database's server connections across pools and workers, and its cap. */
        json_object_set_new(o, "db_servers", json_integer(atomic_load(pool->d->server_count)));
        json_object_set_new(o, "db_max_connections", json_integer(pool->d->max_connections));
    }
    if (pool->last_error[0])
        json_object_set_new(o, "last_error", json_string(pool->last_error));
    return o;
}

static json_t *worker_json(px_worker_t *w)
{
    json_t *o = json_object();
    json_t *pools = json_array();
    for (px_link_t *l = w->pools.next; l != &w->pools; l = l->next)
        json_array_append_new(pools, px_pool_json(px_container(l, px_pool_t, link)));
    json_object_set_new(o, "worker", json_integer(w->idx));
    json_object_set_new(o, "clients", json_integer(w->nclients));
    json_object_set_new(o, "servers", json_integer(w->nservers));
    json_object_set_new(o, "pools", pools);
    return o;
}

static void worker_close_all(px_worker_t *w);

/* ---- pause / resume ---- */

/* Drops one reference of a pause request; `drained` also counts this worker as done. */
static void pause_req_put(px_pause_req_t *r, bool drained)
{
    pthread_mutex_lock(&r->mu);
    if (drained) {
        r->remaining--;
        pthread_cond_signal(&r->cv);
    }
    int refs = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (refs == 0) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
}

static px_pause_t *pause_find(px_worker_t *w, const char *tenant, const char *cluster)
{
    for (int i = 0; i < w->npauses; i++)
        if (strcmp(w->pauses[i].cluster, cluster) == 0 &&
            strcmp(w->pauses[i].tenant, tenant) == 0)
            return &w->pauses[i];
    return NULL;
}

bool px_worker_paused(px_worker_t *w, const char *tenant, const char *cluster)
{
    return w->npauses > 0 && pause_find(w, tenant, cluster) != NULL;
}

void px_pause_check(px_worker_t *w)
{
    for (int i = 0; i < w->npauses; i++) {
        px_pause_t *e = &w->pauses[i];
        if (e->req && !px_pools_busy(w, e->tenant, e->cluster)) {
            pause_req_put(e->req, true);
            e->req = NULL;
        }
    }
}

static void worker_pause(px_worker_t *w, px_msg_t *m)
{
    px_pause_t *e = pause_find(w, m->tenant, m->cluster);
    if (!e) {
        px_pause_t *n = realloc(w->pauses, (size_t)(w->npauses + 1) * sizeof(*n));
        if (!n) {
            pause_req_put(m->pause, true); /* cannot pause here: do not hold the caller */
            return;
        }
        w->pauses = n;
        e = &w->pauses[w->npauses++];
        memset(e, 0, sizeof(*e));
        snprintf(e->tenant, sizeof(e->tenant), "%s", m->tenant);
        snprintf(e->cluster, sizeof(e->cluster), "%s", m->cluster);
    }
    if (e->req)
        pause_req_put(e->req, true); /* superseded by this request */
    e->req = m->pause;
    e->since_ms = w->now_ms;
    dbp_info("proxy_paused", "worker=%d tenant=%s cluster=%s", w->idx, e->tenant, e->cluster);
    px_pools_set_paused(w, e->tenant, e->cluster, true);
    px_pause_check(w);
}

static void worker_resume(px_worker_t *w, const char *tenant, const char *cluster,
                          const char *why)
{
    px_pause_t *e = pause_find(w, tenant, cluster);
    if (!e)
        return;
    char t[64], c[64];
    snprintf(t, sizeof(t), "%s", e->tenant);
    snprintf(c, sizeof(c), "%s", e->cluster);
    int64_t held = w->now_ms - e->since_ms;
    if (e->req)
        pause_req_put(e->req, true);
    *e = w->pauses[--w->npauses];
    dbp_log(strcmp(why, "resume") == 0 ? DBP_LOG_INFO : DBP_LOG_WARN, "proxy_resumed",
            "worker=%d tenant=%s cluster=%s paused_ms=%lld reason=%s", w->idx, t, c,
            (long long)held, why);
    px_pools_set_paused(w, t, c, false);
}

static void inbox_cb(evutil_socket_t fd, short what, void *arg)
{
    px_worker_t *w = arg;
    w->now_ms = px_now_ms();
    for (int i = 0; i < 64; i++) {
        px_msg_t *m;
        ssize_t n = read(fd, &m, sizeof(m));
        if (n != (ssize_t)sizeof(m))
            return;
        switch (m->kind) {
        case PX_MSG_CFG:
            worker_apply_cfg(w, m->cfg);
            break;
        case PX_MSG_CANCEL: {
            px_client_t *c = px_cancel_lookup(w, m->pid);
            if (c && CRYPTO_memcmp(&c->cancel_key, &m->key, 4) == 0 && c->server &&
                c->server->q.count > 0)
                px_server_cancel(c->server);
            break;
        }
        case PX_MSG_STATS: {
            px_stats_req_t *r = m->req;
            json_t *o = worker_json(w);
            pthread_mutex_lock(&r->mu);
            json_array_append_new(r->pools, o);
            r->remaining--;
            int refs = --r->refs;
            pthread_cond_signal(&r->cv);
            pthread_mutex_unlock(&r->mu);
            if (refs == 0) {
                json_decref(r->pools);
                pthread_mutex_destroy(&r->mu);
                pthread_cond_destroy(&r->cv);
                free(r);
            }
            break;
        }
        case PX_MSG_PAUSE:
            worker_pause(w, m);
            break;
        case PX_MSG_RESUME:
            worker_resume(w, m->tenant, m->cluster, "resume");
            break;
        case PX_MSG_EVICT:
            (void)px_pools_evict(w, m->tenant, m->cluster, m->user, m->db[0] ? m->db : NULL,
                                 NULL);
            break;
        case PX_MSG_STOP:
            w->stopping = true;
            worker_close_all(w);
            event_base_loopbreak(w->base);
            break;
        }
        free(m);
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    px_worker_t *w = arg;
    w->now_ms = px_now_ms();
    px_client_tick(w);
    px_pools_tick(w);
    for (int i = 0; i < w->npauses;) {
        if (w->now_ms - w->pauses[i].since_ms > PROXY_PAUSE_MAX_MS) {
            char t[64], c[64];
            snprintf(t, sizeof(t), "%s", w->pauses[i].tenant);
            snprintf(c, sizeof(c), "%s", w->pauses[i].cluster);
            worker_resume(w, t, c, "pause_max_exceeded");
            continue;
        }
        i++;
    }
    if (w->npauses)
        px_pause_check(w);
}

static void worker_close_all(px_worker_t *w)
{
    px_pools_close_all(w);
    for (int guard = 0; guard < 1000000 && !px_list_empty(&w->login_clients); guard++)
        px_client_close(px_container(w->login_clients.next, px_client_t, link), "proxy_stopping",
                        NULL, NULL);
    while (!px_list_empty(&w->cancels)) {
        px_cancel_t *k = px_container(w->cancels.next, px_cancel_t, link);
        px_list_del(&k->link);
        px_cancel_free(k);
    }
}

/*
 * Puts the calling worker thread under SCHED_BATCH (sched(7)): the same CFS/EEVDF share as
 * SCHED_OTHER, but its wake-ups do not preempt the running task, so on a busy machine the
 * worker runs a little later and handles many ready connections per epoll_wait instead of
 * one or two (measured: fewer context switches and less CPU per transaction, see
 * docs/benchmarks.md). Nothing spins. A failure (e.g. a seccomp profile) is logged and the
 * worker keeps the normal policy.
 */
static void worker_sched_batch(px_worker_t *w)
{
    struct sched_param sp = {.sched_priority = 0};
    int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (rc != 0)
        dbp_warn("proxy_sched_batch_failed", "worker=%d err=%s", w->idx, dbp_log_q(strerror(rc)));
}

static void *worker_main(void *arg)
{
    px_worker_t *w = arg;
    if (w->p->sched_batch)
        worker_sched_batch(w);
    /* io_uring send batching (sbuf.c, docs/proxy.md "Scheduling"): on unless
     * DBPLANE_PROXY_URING=0; without liburing or a kernel that allows it, plain sendmsg. */
    const char *ur = getenv("DBPLANE_PROXY_URING");
    if ((!ur || strcmp(ur, "0") != 0) && sbuf_ctx_enable_uring(&w->io) != 0)
        dbp_info("proxy_uring_unavailable", "worker=%d", w->idx);
    w->now_ms = px_now_ms();
    listeners_reconcile(w); /* the initial snapshot (reference taken in worker_init) */
    if (!w->io.ring) {
        event_base_dispatch(w->base);
    } else {
        /* One round at a time: the round's queued sends leave in one io_uring_enter. */
        for (;;) {
            int rc = event_base_loop(w->base, EVLOOP_ONCE);
            if (w->io.npend)
                sbuf_ctx_flush(&w->io);
            if (rc != 0 || event_base_got_break(w->base) || event_base_got_exit(w->base))
                break;
        }
    }
    w->stopping = true;
    worker_close_all(w);
    sbuf_ctx_flush(&w->io);
    reap_cb(-1, 0, w);
    while (w->nls > 0)
        listener_remove(w, w->nls - 1);
    free(w->ls);
    w->ls = NULL;
    w->nls = 0;
    px_pools_free(w);
    return NULL;
}

static void worker_free(px_worker_t *w)
{
    for (int i = 0; i < w->npauses; i++)
        if (w->pauses[i].req)
            pause_req_put(w->pauses[i].req, true);
    free(w->pauses);
    w->pauses = NULL;
    w->npauses = 0;
    px_stmt_reg_free(&w->stmts);
    if (w->istr_tab) {
        for (int i = 0; i < ISTR_TAB; i++)
            while (w->istr_tab[i]) {
                px_istr_t *e = w->istr_tab[i];
                w->istr_tab[i] = e->next;
                free(e);
            }
        free(w->istr_tab);
    }
    free(w->cancel_tab);
    if (w->inbox_ev)
        event_free(w->inbox_ev);
    if (w->tick_ev)
        event_free(w->tick_ev);
    if (w->reap_ev)
        event_free(w->reap_ev);
    sbuf_ctx_free(&w->io);
    if (w->base)
        event_base_free(w->base);
    if (w->inbox[0] >= 0)
        close(w->inbox[0]);
    if (w->inbox[1] >= 0)
        close(w->inbox[1]);
    px_cfg_unref(w->cfg);
    w->cfg = NULL;
}

static int worker_init(proxy_t *p, px_worker_t *w, int idx, px_cfg_t *cfg)
{
    w->p = p;
    w->idx = idx;
    w->inbox[0] = w->inbox[1] = -1;
    px_list_init(&w->pools);
    px_list_init(&w->login_clients);
    px_list_init(&w->reap_clients);
    px_list_init(&w->reap_servers);
    px_list_init(&w->cancels);
    px_list_init(&w->reap_cancels);
    struct event_config *ec = event_config_new();
    if (!ec)
        return -1;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base || pipe2(w->inbox, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    sbuf_ctx_init(&w->io, w->base);
    w->inbox_ev = event_new(w->base, w->inbox[0], EV_READ | EV_PERSIST, inbox_cb, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->reap_ev = event_new(w->base, -1, 0, reap_cb, w);
    if (!w->inbox_ev || !w->tick_ev || !w->reap_ev)
        return -1;
    struct timeval tv = {0, PX_TICK_MS * 1000};
    event_add(w->inbox_ev, NULL);
    event_add(w->tick_ev, &tv);
    px_cfg_ref(cfg);
    w->cfg = cfg;
    return 0;
}

/* ---- public interface ---- */

int proxy_start(proxy_t **out, const proxy_config_t *cfg, dbp_err_t *err)
{
    *out = NULL;
    signal(SIGPIPE, SIG_IGN);
    proxy_t *p = calloc(1, sizeof(*p));
    if (!p)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    /* Default: half the cores. The proxy shares the host with the servers dbplane
     * supervises and with their clients; one worker per core made the workers compete with
     * them for CPU (more preemptions, more CPU per transaction: docs/benchmarks.md). */
    int nw = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN) / 2;
    if (nw < 1)
        nw = 1;
    if (nw > PX_MAX_WORKERS)
        nw = PX_MAX_WORKERS;
    p->nworkers = nw;
    p->sched_batch = !cfg->latency_sched;
    dbp_err_t e2 = {0};
    p->tls = px_tls_context(cfg->tls_cert_path, cfg->tls_key_path, cfg->tls_dir, &e2);
    if (!p->tls && e2.code != 0) {
        proxy_stop(p);
        return dbp_err_set(err, e2.code, "%s", e2.msg);
    }
    p->tls_client = px_tls_client_context(false, NULL, &e2);
    if (!p->tls_client) {
        proxy_stop(p);
        return dbp_err_set(err, e2.code, "%s", e2.msg);
    }
    bool want_verify = false;
    for (int i = 0; i < cfg->nclusters; i++)
        if (cfg->clusters[i].server_tls == PROXY_SERVER_TLS_VERIFY_FULL)
            want_verify = true;
    if (want_verify || cfg->server_tls_ca_path) {
        p->tls_client_verify = px_tls_client_context(true, cfg->server_tls_ca_path, &e2);
        if (!p->tls_client_verify) {
            proxy_stop(p);
            return dbp_err_set(err, e2.code, "%s", e2.msg);
        }
    }
    p->cfg = cfg_build(p, cfg, NULL, err);
    if (!p->cfg) {
        int code = err ? err->code : DBP_EINVAL;
        proxy_stop(p);
        return code ? code : DBP_EINVAL;
    }
    p->workers = calloc((size_t)nw, sizeof(*p->workers));
    if (!p->workers) {
        proxy_stop(p);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nw; i++) {
        if (worker_init(p, &p->workers[i], i, p->cfg) != 0) {
            proxy_stop(p);
            return dbp_err_set(err, DBP_EIO, "worker %d: event base or pipe failed", i);
        }
    }
    for (int i = 0; i < nw; i++) {
        if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]) != 0) {
            proxy_stop(p);
            return dbp_err_set(err, DBP_EIO, "pthread_create failed");
        }
        p->workers[i].started = true;
    }
    dbp_info("proxy_started", "workers=%d clusters=%d endpoints=%d tls=%s", nw,
             p->cfg->nclusters, p->cfg->neps, p->tls ? "yes" : "no");
    *out = p;
    return 0;
}

int proxy_update(proxy_t *p, const proxy_config_t *cfg, dbp_err_t *err)
{
    pthread_mutex_lock(&p->mu);
    px_cfg_t *c = cfg_build(p, cfg, p->cfg, err);
    if (!c) {
        lsocks_prune(p, p->cfg);
        pthread_mutex_unlock(&p->mu);
        return err && err->code ? err->code : DBP_EINVAL;
    }
    px_cfg_t *old = p->cfg;
    p->cfg = c;
    lsocks_prune(p, c);
    for (int i = 0; i < p->nworkers; i++) {
        px_msg_t *m = calloc(1, sizeof(*m));
        if (!m)
            continue;
        m->kind = PX_MSG_CFG;
        m->cfg = c;
        px_cfg_ref(c);
        if (px_worker_post(&p->workers[i], m) != 0) {
            px_cfg_unref(c);
            free(m);
        }
    }
    for (int i = 0; i < c->nclusters; i++)
        dbp_info("proxy_updated", "cluster=%s epoch=%lld primary=%s",
                 c->clusters[i].c.name, (long long)c->clusters[i].c.epoch,
                 c->clusters[i].primary >= 0
                     ? dbp_log_q(c->clusters[i].c.backends[c->clusters[i].primary].name)
                     : "none");
    px_cfg_unref(old);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

json_t *proxy_stats_json(proxy_t *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->mu);
    px_stats_req_t *r = calloc(1, sizeof(*r));
    json_t *out = json_object();
    if (!r || !out) {
        free(r);
        json_decref(out);
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->pools = json_array();
    r->refs = 1;
    for (int i = 0; i < p->nworkers; i++) {
        if (!p->workers[i].started)
            continue;
        px_msg_t *m = calloc(1, sizeof(*m));
        if (!m)
            continue;
        m->kind = PX_MSG_STATS;
        m->req = r;
        pthread_mutex_lock(&r->mu);
        r->remaining++;
        r->refs++;
        pthread_mutex_unlock(&r->mu);
        if (px_worker_post(&p->workers[i], m) != 0) {
            pthread_mutex_lock(&r->mu);
            r->remaining--;
            r->refs--;
            pthread_mutex_unlock(&r->mu);
            free(m);
        }
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 2;
    pthread_mutex_lock(&r->mu);
    while (r->remaining > 0)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0)
            break;
    json_t *workers = json_deep_copy(r->pools);
    int refs = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (refs == 0) {
        json_decref(r->pools);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
    /* Counters: relaxed reads of each worker's own fields. */
    px_stats_t sum = {0};
    uint64_t bin = 0, bout = 0;
    for (int i = 0; i < p->nworkers; i++) {
        px_stats_t *s = &p->workers[i].stats;
#define RD(f) sum.f += __atomic_load_n(&s->f, __ATOMIC_RELAXED)
        RD(clients_accepted); RD(logins_ok); RD(logins_failed); RD(client_errors); RD(cancels);
        RD(queries); RD(transactions); RD(servers_opened); RD(server_errors); RD(wait_us); RD(waits);
#undef RD
        bin += __atomic_load_n(&p->workers[i].io.bytes_in, __ATOMIC_RELAXED);
        bout += __atomic_load_n(&p->workers[i].io.bytes_out, __ATOMIC_RELAXED);
    }
    json_t *ct = json_object();
#define PUT(f) json_object_set_new(ct, #f, json_integer((json_int_t)sum.f))
    PUT(clients_accepted); PUT(logins_ok); PUT(logins_failed); PUT(client_errors); PUT(cancels);
    PUT(queries); PUT(transactions); PUT(servers_opened); PUT(server_errors); PUT(wait_us);
    PUT(waits);
#undef PUT
    json_object_set_new(ct, "bytes_in", json_integer((json_int_t)bin));
    json_object_set_new(ct, "bytes_out", json_integer((json_int_t)bout));
    json_t *clusters = json_array();
    for (int i = 0; p->cfg && i < p->cfg->nclusters; i++) {
        px_cluster_t *cl = &p->cfg->clusters[i];
        json_array_append_new(
            clusters,
            json_pack("{s:s, s:s, s:I, s:s, s:i, s:i, s:i}", "tenant", cl->c.tenant, "name",
                      cl->c.name, "epoch", (json_int_t)cl->c.epoch, "primary",
                      cl->primary >= 0 ? cl->c.backends[cl->primary].name : "", "rw_port",
                      cl->c.rw_port, "ro_port", cl->c.ro_port, "clients",
                      cl->client_count ? atomic_load(cl->client_count) : 0));
    }
    int nclients = 0, nservers = 0;
    size_t idx;
    json_t *wj;
    json_array_foreach(workers, idx, wj) {
        nclients += (int)json_integer_value(json_object_get(wj, "clients"));
        nservers += (int)json_integer_value(json_object_get(wj, "servers"));
    }
    json_object_set_new(out, "workers", json_integer(p->nworkers));
    json_object_set_new(out, "clients", json_integer(nclients));
    json_object_set_new(out, "servers", json_integer(nservers));
    json_object_set_new(out, "counters", ct);
    json_object_set_new(out, "clusters", clusters);
    json_object_set_new(out, "per_worker", workers ? workers : json_array());
    pthread_mutex_unlock(&p->mu);
    return out;
}

/* Whether the current snapshot has (tenant, cluster). Called under p->mu. */
static bool cfg_has_cluster(const px_cfg_t *cfg, const char *tenant, const char *cluster)
{
    for (int i = 0; cfg && i < cfg->nclusters; i++)
        if (strcmp(cfg->clusters[i].c.name, cluster) == 0 &&
            strcmp(cfg->clusters[i].c.tenant, tenant) == 0)
            return true;
    return false;
}

int proxy_pause(proxy_t *p, const char *tenant, const char *cluster, int timeout_ms,
                dbp_err_t *err)
{
    if (!p || !tenant || !cluster || strlen(tenant) >= 64 || strlen(cluster) >= 64)
        return dbp_err_set(err, DBP_EINVAL, "proxy_pause: bad arguments");
    pthread_mutex_lock(&p->mu);
    if (!cfg_has_cluster(p->cfg, tenant, cluster)) {
        pthread_mutex_unlock(&p->mu);
        return dbp_err_set(err, DBP_ENOENT, "the proxy serves no cluster %s/%s", tenant,
                           cluster);
    }
    px_pause_req_t *r = calloc(1, sizeof(*r));
    if (!r) {
        pthread_mutex_unlock(&p->mu);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 1;
    int64_t t0 = px_now_ms();
    for (int i = 0; i < p->nworkers; i++) {
        if (!p->workers[i].started)
            continue;
        px_msg_t *m = calloc(1, sizeof(*m));
        if (!m)
            continue;
        m->kind = PX_MSG_PAUSE;
        m->pause = r;
        snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
        snprintf(m->cluster, sizeof(m->cluster), "%s", cluster);
        pthread_mutex_lock(&r->mu);
        r->remaining++;
        r->refs++;
        pthread_mutex_unlock(&r->mu);
        if (px_worker_post(&p->workers[i], m) != 0) {
            pthread_mutex_lock(&r->mu);
            r->remaining--;
            r->refs--;
            pthread_mutex_unlock(&r->mu);
            free(m);
        }
    }
    pthread_mutex_unlock(&p->mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int64_t ns = dl.tv_nsec + (int64_t)(timeout_ms > 0 ? timeout_ms % 1000 : 0) * 1000000;
    dl.tv_sec += (timeout_ms > 0 ? timeout_ms / 1000 : 0) + ns / 1000000000;
    dl.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&r->mu);
    while (r->remaining > 0)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0)
            break;
    int left = r->remaining;
    pthread_mutex_unlock(&r->mu);
    pause_req_put(r, false);
    dbp_info("proxy_pause", "tenant=%s cluster=%s drained=%s wait_ms=%lld", tenant, cluster,
             left == 0 ? "yes" : "no", (long long)(px_now_ms() - t0));
    if (left > 0)
        return dbp_err_set(err, DBP_EBUSY,
                           "cluster %s/%s: transactions still running after %d ms (paused)",
                           tenant, cluster, timeout_ms);
    return 0;
}

int proxy_resume(proxy_t *p, const char *tenant, const char *cluster, dbp_err_t *err)
{
    if (!p || !tenant || !cluster || strlen(tenant) >= 64 || strlen(cluster) >= 64)
        return dbp_err_set(err, DBP_EINVAL, "proxy_resume: bad arguments");
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nworkers; i++) {
        if (!p->workers[i].started)
            continue;
        px_msg_t *m = calloc(1, sizeof(*m));
        if (!m) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            continue;
        }
        m->kind = PX_MSG_RESUME;
        snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
        snprintf(m->cluster, sizeof(m->cluster), "%s", cluster);
        if (px_worker_post(&p->workers[i], m) != 0) {
            free(m);
            rc = dbp_err_set(err, DBP_EIO, "worker %d: inbox write failed", i);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void proxy_stop(proxy_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; p->workers && i < p->nworkers; i++) {
        px_worker_t *w = &p->workers[i];
        if (!w->started)
            continue;
        px_msg_t *m = calloc(1, sizeof(*m));
        if (m) {
            m->kind = PX_MSG_STOP;
            if (px_worker_post(w, m) != 0)
                free(m);
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; p->workers && i < p->nworkers; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].th, NULL);
    for (int i = 0; p->workers && i < p->nworkers; i++)
        if (p->workers[i].base || p->workers[i].inbox[0] > 0)
            worker_free(&p->workers[i]);
    free(p->workers);
    px_cfg_unref(p->cfg);
    for (int i = 0; i < p->nlsocks; i++)
        px_lsock_unref(p->lsocks[i]);
    free(p->lsocks);
    px_counter_node_t *n = (px_counter_node_t *)p->counters;
    while (n) {
        px_counter_node_t *nx = n->next;
        free(n);
        n = nx;
    }
    if (p->tls)
        SSL_CTX_free(p->tls);
    if (p->tls_client)
        SSL_CTX_free(p->tls_client);
    if (p->tls_client_verify)
        SSL_CTX_free(p->tls_client_verify);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
