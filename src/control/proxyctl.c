/*
 * proxyctl.c: feeds the proxy (proxy/proxy.h) from the control plane. After every
 * reconcile pass and every topology change, the clusters that declare `spec.proxy.port`
 * are turned into a proxy snapshot — listeners, pool settings, the declared users with
 * their passwords (from the secret store, in memory only), and the servers with the
 * topology's epoch and primary — and pushed to the proxy when it differs from the last
 * one. The proxy never reads the store itself.
 *
 * spec.proxy.serverTLS maps onto proxy_cluster_t.server_tls: the servers are then reached
 * over loopback TCP (Unix sockets carry no TLS), and verify-full checks them against the
 * cluster's own self-signed certificate (engines/postgresql.c makes it). Each declared
 * Database of the cluster is listed with its maxConnections (-1 when unset) so that the
 * proxy counts its server connections from the start and a cap added later is exact.
 */
#include "control/reconcile.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/log.h"

/* Feeds `len` bytes into the running snapshot digest. */
static void digest(EVP_MD_CTX *md, const void *p, size_t len)
{
    EVP_DigestUpdate(md, p, len);
}

/* True when the proxy serves this engine (PostgreSQL only so far). */
static bool proxied(const cluster_rt_t *cr)
{
    const spec_cluster_t *c = &cr->res->u.cluster;
    return cr->ops && c->engine == SPEC_ENGINE_POSTGRESQL && c->proxy.port.set && cr->n > 0 &&
           cr->primary >= 0;
}

void ctl_proxy_sync(ctl_daemon_t *d)
{
    if (!d->proxy || !d->des)
        return;
    int ncl = 0;
    for (int i = 0; i < d->ncl; i++)
        if (proxied(&d->crs[i]))
            ncl++;
    proxy_cluster_t *pcs = calloc((size_t)(ncl ? ncl : 1), sizeof(*pcs));
    size_t nusers_max = d->des->set.n ? d->des->set.n : 1;
    proxy_user_t *users = calloc(nusers_max, sizeof(*users));
    char **pws = calloc(nusers_max, sizeof(char *));
    proxy_database_t *dbs = calloc(nusers_max, sizeof(*dbs));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!pcs || !users || !pws || !dbs || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto out;
    size_t nu = 0, ndb = 0;
    int k = 0;
    for (int i = 0; i < d->ncl; i++) {
        cluster_rt_t *cr = &d->crs[i];
        if (!proxied(cr))
            continue;
        const spec_cluster_t *c = &cr->res->u.cluster;
        const spec_pool_t *pool = &c->proxy.pool;
        proxy_cluster_t *pc = &pcs[k++];
        snprintf(pc->tenant, sizeof(pc->tenant), "%s", cr->res->tenant.v);
        snprintf(pc->name, sizeof(pc->name), "%s", cr->res->name.v);
        snprintf(pc->engine, sizeof(pc->engine), "postgresql");
        snprintf(pc->address, sizeof(pc->address), "%s",
                 c->proxy.address.set && c->proxy.address.v ? c->proxy.address.v : "127.0.0.1");
        pc->rw_port = (int)c->proxy.port.v;
        pc->ro_port = (int)c->proxy.ro_port.v;
        if (!c->proxy.ro_port.set) {
            /* The default read-only port (port + 1) is dropped when another cluster's
             * explicit port already uses it. */
            for (int j = 0; j < d->ncl; j++) {
                const spec_cluster_t *o = &d->crs[j].res->u.cluster;
                if (j != i && o->proxy.port.set && o->proxy.port.v == pc->ro_port)
                    pc->ro_port = 0;
            }
        }
        pc->pool_mode = pool->mode == SPEC_POOL_SESSION     ? PROXY_POOL_SESSION
                        : pool->mode == SPEC_POOL_STATEMENT ? PROXY_POOL_STATEMENT
                                                            : PROXY_POOL_TRANSACTION;
        pc->pool_size = (int)pool->size.v;
        pc->min_pool_size = (int)pool->min_size.v;
        pc->reserve_pool_size = (int)pool->reserve_size.v;
        pc->max_client_connections = (int)pool->max_client_connections.v;
        pc->query_wait_timeout_ms = pool->query_wait_timeout.ms;
        pc->idle_in_transaction_timeout_ms = pool->idle_in_transaction_timeout.ms;
        pc->server_idle_timeout_ms = pool->server_idle_timeout.ms;
        pc->server_lifetime_ms = pool->server_lifetime.ms;
        pc->client_login_timeout_ms = pool->client_login_timeout.ms;
        static const proxy_server_tls_t tls_modes[] = {
            [SPEC_SERVER_TLS_DISABLE] = PROXY_SERVER_TLS_DISABLE,
            [SPEC_SERVER_TLS_PREFER] = PROXY_SERVER_TLS_PREFER,
            [SPEC_SERVER_TLS_REQUIRE] = PROXY_SERVER_TLS_REQUIRE,
            [SPEC_SERVER_TLS_VERIFY_FULL] = PROXY_SERVER_TLS_VERIFY_FULL,
        };
        pc->server_tls =
            c->proxy.server_tls >= 0 && c->proxy.server_tls <= SPEC_SERVER_TLS_VERIFY_FULL
                ? tls_modes[c->proxy.server_tls]
                : PROXY_SERVER_TLS_DISABLE;
        if (pc->server_tls == PROXY_SERVER_TLS_VERIFY_FULL)
            snprintf(pc->server_tls_ca, sizeof(pc->server_tls_ca), "%s/server.crt",
                     cr->inst[0].tls_dir);
        pc->epoch = cr->epoch;
        for (int b = 0; b < cr->n && b < PROXY_MAX_BACKENDS; b++) {
            proxy_backend_t *be = &pc->backends[pc->nbackends++];
            snprintf(be->name, sizeof(be->name), "%s", cr->inst[b].name);
            snprintf(be->host, sizeof(be->host), "%s", cr->inst[b].host);
            be->port = cr->inst[b].port;
            /* TLS needs TCP: an empty sock_dir makes the proxy dial host:port. */
            if (pc->server_tls == PROXY_SERVER_TLS_DISABLE)
                snprintf(be->sock_dir, sizeof(be->sock_dir), "%s", cr->inst[b].sock_dir);
            be->primary = b == cr->primary;
            be->healthy = cr->probe[b].reachable;
        }
        pc->users = &users[nu];
        for (size_t r = 0; r < d->des->set.n && nu < nusers_max; r++) {
            const spec_resource_t *ur = d->des->set.items[r];
            if (ur->kind != SPEC_KIND_USER || strcmp(ur->tenant.v, pc->tenant) != 0 ||
                strcmp(ur->u.user.cluster.v, pc->name) != 0)
                continue;
            const spec_user_t *u = &ur->u.user;
            char sname[128], skey[128];
            ctl_user_secret(ur, sname, skey);
            dbp_err_t err;
            if (secrets_get(d->secrets, ur->tenant.v, sname, skey, &pws[nu], &err) != 0)
                continue; /* not generated yet: the user cannot log in through the proxy yet */
            proxy_user_t *pu = &users[nu];
            snprintf(pu->username, sizeof(pu->username), "%s", u->username.v);
            pu->password = pws[nu];
            pu->max_connections =
                u->max_user_connections.set ? (int)u->max_user_connections.v : -1;
            nu++;
            pc->nusers++;
        }
        pc->databases = &dbs[ndb];
        for (size_t r = 0; r < d->des->set.n && ndb < nusers_max; r++) {
            const spec_resource_t *dr = d->des->set.items[r];
            if (dr->kind != SPEC_KIND_DATABASE || strcmp(dr->tenant.v, pc->tenant) != 0 ||
                strcmp(dr->u.database.cluster.v, pc->name) != 0)
                continue;
            const spec_database_t *sd = &dr->u.database;
            proxy_database_t *pd = &dbs[ndb++];
            snprintf(pd->name, sizeof(pd->name), "%s", sd->name.v);
            pd->max_connections = sd->max_connections.set ? (int)sd->max_connections.v : -1;
            pc->ndatabases++;
        }
        /* Everything above, passwords included, goes into the change digest. */
        digest(md, pc, offsetof(proxy_cluster_t, users));
        for (int u = 0; u < pc->nusers; u++) {
            digest(md, pc->users[u].username, sizeof(pc->users[u].username));
            digest(md, pc->users[u].password, strlen(pc->users[u].password) + 1);
            digest(md, &pc->users[u].max_connections, sizeof(int));
        }
        digest(md, pc->databases, (size_t)pc->ndatabases * sizeof(*pc->databases));
    }
    unsigned char sum[32];
    unsigned int sl = 0;
    if (EVP_DigestFinal_ex(md, sum, &sl) != 1 || sl != 32)
        goto out;
    if (d->proxy_synced && memcmp(sum, d->proxy_digest, 32) == 0)
        goto out;
    proxy_config_t cfg = {.clusters = pcs, .nclusters = ncl};
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    if (proxy_update(d->proxy, &cfg, &err) != 0) {
        dbp_warn("proxy_update_failed", "error=%s", dbp_log_q(err.msg));
        /* Not remembered: retried after the next pass. */
        goto out;
    }
    memcpy(d->proxy_digest, sum, 32);
    d->proxy_synced = true;
    dbp_info("proxy_updated", "clusters=%d users=%zu", ncl, nu);
out:
    EVP_MD_CTX_free(md);
    for (size_t i = 0; pws && i < nusers_max; i++)
        secrets_free_value(pws[i]);
    free(pws);
    free(dbs);
    free(users);
    free(pcs);
}
