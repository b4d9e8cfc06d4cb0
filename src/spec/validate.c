/*
 * validate.c: checks that need more than one resource. References are resolved by kind,
 * tenant and name within the set being validated or, failing that, in the caller's `known`
 * set (the daemon's current resources when a partial file is applied); a resource in `set`
 * shadows one of the same kind, tenant and name in `known`. Problems are reported only for
 * resources of `set` — what is already known was validated when it was applied.
 *
 * The checks: dangling references (clusters, users, databases, stores, backups, secrets and
 * their keys, SqlJob dependencies and their cycles), privilege names per engine, engine
 * rules that involve two resources (logical backups of Redis), unique proxy ports across
 * all tenants, tenant quotas, TTL order, and Redis memory sizing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "spec/spec_internal.h"

/* Privilege names a Grant may use, per engine (compared case-insensitively; the parser
 * upper-cases them and collapses blanks). */
static const char *const pg_privileges[] = {
    "SELECT",  "INSERT", "UPDATE",         "DELETE",    "TRUNCATE", "REFERENCES",
    "TRIGGER", "CREATE", "CONNECT",        "TEMPORARY", "TEMP",     "EXECUTE",
    "USAGE",   "ALL",    "ALL PRIVILEGES", NULL,
};
static const char *const mariadb_privileges[] = {
    "ALL PRIVILEGES",
    "ALL",
    "ALTER",
    "ALTER ROUTINE",
    "CREATE",
    "CREATE ROUTINE",
    "CREATE TEMPORARY TABLES",
    "CREATE VIEW",
    "DELETE",
    "DELETE HISTORY",
    "DROP",
    "EVENT",
    "EXECUTE",
    "INDEX",
    "INSERT",
    "LOCK TABLES",
    "REFERENCES",
    "SELECT",
    "SHOW VIEW",
    "TRIGGER",
    "UPDATE",
    "USAGE",
    NULL,
};

typedef struct vctx {
    const spec_set_t *set;
    const spec_set_t *known;
    spec_diags_t *d;
    const spec_resource_t **all; /* unshadowed `known` resources, then `set`'s */
    size_t nall;
    size_t first_set; /* index in `all` of the first resource of `set` */
} vctx_t;

__attribute__((format(printf, 6, 7))) static void vreport(vctx_t *v, const spec_resource_t *r,
                                                          spec_severity_t sev, spec_mark_t at,
                                                          const char *field, const char *fmt, ...);

/* Like vreport with a hint. */
__attribute__((format(printf, 7, 8))) static void vreporth(vctx_t *v, const spec_resource_t *r,
                                                           spec_severity_t sev, spec_mark_t at,
                                                           const char *field, const char *hint,
                                                           const char *fmt, ...)
{
    char path[512], msg[1024];
    if (field)
        snprintf(path, sizeof(path), "%s/%s: %s", spec_kind_str(r->kind), r->name.v, field);
    else
        snprintf(path, sizeof(path), "%s/%s", spec_kind_str(r->kind), r->name.v);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!at.line) /* fall back to the document's start */
        at = r->at;
    spec_diag_add(v->d, sev, at, path, hint, "%s", msg);
}

static void vreport(vctx_t *v, const spec_resource_t *r, spec_severity_t sev, spec_mark_t at,
                    const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vreporth(v, r, sev, at, field, NULL, "%s", msg);
}

static const spec_resource_t *find(const vctx_t *v, spec_kind_t kind, const char *tenant,
                                   const char *name)
{
    const spec_resource_t *r = spec_set_find(v->set, kind, tenant, name);
    return r ? r : spec_set_find(v->known, kind, tenant, name);
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* "did you mean 'x'?" among resources of `kind` in `tenant`, or a generic suggestion. */
static void name_hint(const vctx_t *v, spec_kind_t kind, const char *tenant, const char *got,
                      char *buf, size_t len)
{
    const char *names[257];
    size_t n = 0;
    for (size_t i = 0; i < v->nall && n < 256; i++)
        if (v->all[i]->kind == kind && same(v->all[i]->tenant.v, tenant))
            names[n++] = v->all[i]->name.v;
    names[n] = NULL;
    const char *close = got ? spec_closest(got, names) : NULL;
    if (close)
        snprintf(buf, len, "did you mean '%s'?", close);
    else
        snprintf(buf, len, "declare a %s named '%s' in tenant '%s'", spec_kind_str(kind),
                 got ? got : "", tenant);
}

/* Resolves a reference to a resource of `kind` named ref->v in r's tenant; reports when
 * it is set but undeclared. Returns the resource or NULL. */
static const spec_resource_t *resolve(vctx_t *v, const spec_resource_t *r, spec_kind_t kind,
                                      const spec_str_t *ref, const char *field)
{
    if (!ref->set || !ref->v || !*ref->v)
        return NULL;
    const spec_resource_t *t = find(v, kind, r->tenant.v, ref->v);
    if (!t) {
        char hint[256];
        name_hint(v, kind, r->tenant.v, ref->v, hint, sizeof(hint));
        vreporth(v, r, SPEC_ERROR, ref->at, field, hint, "%s '%s' is not declared in tenant '%s'",
                 spec_kind_str(kind), ref->v, r->tenant.v);
    }
    return t;
}

static const spec_resource_t *find_user(const vctx_t *v, const char *tenant, const char *cluster,
                                        const char *username)
{
    for (size_t i = 0; i < v->nall; i++) {
        const spec_resource_t *u = v->all[i];
        if (u->kind == SPEC_KIND_USER && same(u->tenant.v, tenant) &&
            same(u->u.user.cluster.v, cluster) && same(u->u.user.username.v, username))
            return u;
    }
    return NULL;
}

static const spec_resource_t *find_database(const vctx_t *v, const char *tenant,
                                            const char *cluster, const char *dbname)
{
    for (size_t i = 0; i < v->nall; i++) {
        const spec_resource_t *d = v->all[i];
        if (d->kind == SPEC_KIND_DATABASE && same(d->tenant.v, tenant) &&
            same(d->u.database.cluster.v, cluster) && same(d->u.database.name.v, dbname))
            return d;
    }
    return NULL;
}

/* Reports a username that no User of `cluster` declares. */
static void check_username(vctx_t *v, const spec_resource_t *r, const spec_resource_t *cl,
                           const spec_str_t *username, const char *field, const char *what)
{
    if (!cl || !username->set || !username->v)
        return;
    if (find_user(v, r->tenant.v, cl->name.v, username->v))
        return;
    char hint[256];
    const spec_resource_t *byname = find(v, SPEC_KIND_USER, r->tenant.v, username->v);
    if (byname && byname->u.user.username.v && same(byname->u.user.cluster.v, cl->name.v))
        snprintf(hint, sizeof(hint),
                 "User/%s has spec.username '%s'; %s names the engine-level "
                 "username",
                 username->v, byname->u.user.username.v, field);
    else
        snprintf(hint, sizeof(hint), "declare a User with spec.username: %s and spec.cluster: %s",
                 username->v, cl->name.v);
    vreporth(v, r, SPEC_ERROR, username->at, field, hint,
             "%s '%s' is not a declared User on cluster '%s'", what, username->v, cl->name.v);
}

static bool secret_has_key(const spec_resource_t *s, const char *key)
{
    const spec_secret_t *x = &s->u.secret;
    for (size_t i = 0; i < x->string_data.n; i++)
        if (same(x->string_data.v[i].key, key))
            return true;
    for (size_t i = 0; i < x->generate_keys.n; i++)
        if (same(x->generate_keys.v[i], key))
            return true;
    return false;
}

/* A *SecretKeyRef: its Secret must be declared when `must_exist` (otherwise an undeclared
 * Secret is generated later), and a declared Secret must have the key. */
static void check_secret_ref(vctx_t *v, const spec_resource_t *r, const spec_secret_ref_t *ref,
                             const char *field, bool must_exist)
{
    char path[128], hint[512];
    if (!ref->set || !ref->name.v)
        return;
    const spec_resource_t *s = find(v, SPEC_KIND_SECRET, r->tenant.v, ref->name.v);
    if (!s) {
        if (must_exist) {
            snprintf(path, sizeof(path), "%s.name", field);
            name_hint(v, SPEC_KIND_SECRET, r->tenant.v, ref->name.v, hint, sizeof(hint));
            vreporth(v, r, SPEC_ERROR, ref->name.at, path, hint,
                     "Secret '%s' is not declared in tenant '%s'", ref->name.v, r->tenant.v);
        }
        return;
    }
    if (!ref->key.v || secret_has_key(s, ref->key.v))
        return;
    const spec_secret_t *x = &s->u.secret;
    size_t o = (size_t)snprintf(hint, sizeof(hint), "Secret '%s' has keys: ", ref->name.v);
    size_t k = 0;
    for (size_t i = 0; i < x->string_data.n && o < sizeof(hint); i++, k++)
        o += (size_t)snprintf(hint + o, sizeof(hint) - o, "%s%s", k ? ", " : "",
                              x->string_data.v[i].key);
    for (size_t i = 0; i < x->generate_keys.n && o < sizeof(hint); i++, k++)
        o += (size_t)snprintf(hint + o, sizeof(hint) - o, "%s%s", k ? ", " : "",
                              x->generate_keys.v[i]);
    snprintf(path, sizeof(path), "%s.key", field);
    vreporth(v, r, SPEC_ERROR, ref->key.at, path, hint, "Secret '%s' has no key '%s'", ref->name.v,
             ref->key.v);
}

/* --- per-kind checks ------------------------------------------------------------------- */

static void check_database(vctx_t *v, const spec_resource_t *r)
{
    const spec_database_t *db = &r->u.database;
    const spec_resource_t *cl = resolve(v, r, SPEC_KIND_CLUSTER, &db->cluster, "spec.cluster");
    check_username(v, r, cl, &db->owner, "spec.owner", "owner");
    if (!cl || !db->max_connections.set || db->max_connections.v < 0)
        return;
    /* The cap is kept by dbplane's PostgreSQL proxy (docs/proxy.md). */
    const spec_cluster_t *c = &cl->u.cluster;
    if (c->engine && c->engine != SPEC_ENGINE_POSTGRESQL)
        vreporth(v, r, SPEC_ERROR, db->max_connections.at, "spec.maxConnections",
                 "cap the engine's connections with the Cluster's spec.config instead",
                 "maxConnections is enforced by the PostgreSQL proxy; cluster '%s' is %s",
                 cl->name.v, spec_engine_str((spec_engine_t)c->engine));
    else if (c->engine && !c->proxy.port.set)
        vreporth(v, r, SPEC_WARNING, db->max_connections.at, "spec.maxConnections",
                 "set spec.proxy.port on the Cluster",
                 "maxConnections has no effect: cluster '%s' has no proxy endpoint", cl->name.v);
}

static void check_user(vctx_t *v, const spec_resource_t *r)
{
    const spec_user_t *u = &r->u.user;
    resolve(v, r, SPEC_KIND_CLUSTER, &u->cluster, "spec.cluster");
    check_secret_ref(v, r, &u->password_secret_key_ref, "spec.passwordSecretKeyRef", false);
}

static void check_grant(vctx_t *v, const spec_resource_t *r)
{
    const spec_grant_t *g = &r->u.grant;
    const spec_resource_t *cl = resolve(v, r, SPEC_KIND_CLUSTER, &g->cluster, "spec.cluster");
    if (!cl)
        return;
    int engine = cl->u.cluster.engine;
    if (engine == SPEC_ENGINE_REDIS) {
        vreporth(v, r, SPEC_ERROR, g->cluster.at, "spec.cluster",
                 "Redis has no database privileges; control access with User ACLs",
                 "Grants are not supported on redis cluster '%s'", cl->name.v);
        return;
    }
    check_username(v, r, cl, &g->username, "spec.username", "username");
    if (g->database.set && g->database.v &&
        !find_database(v, r->tenant.v, cl->name.v, g->database.v)) {
        char hint[256];
        snprintf(hint, sizeof(hint), "declare a Database with spec.name: %s and spec.cluster: %s",
                 g->database.v, cl->name.v);
        vreporth(v, r, SPEC_ERROR, g->database.at, "spec.database", hint,
                 "database '%s' is not a declared Database on cluster '%s'", g->database.v,
                 cl->name.v);
    }
    const char *const *privs = engine == SPEC_ENGINE_POSTGRESQL ? pg_privileges
                               : engine == SPEC_ENGINE_MARIADB  ? mariadb_privileges
                                                                : NULL;
    for (size_t i = 0; privs && i < g->privileges.n; i++) {
        bool ok = false;
        for (size_t j = 0; privs[j] && !ok; j++)
            ok = strcasecmp(privs[j], g->privileges.v[i]) == 0;
        if (ok)
            continue;
        char field[64], hint[768];
        snprintf(field, sizeof(field), "spec.privileges[%zu]", i);
        const char *close = spec_closest(g->privileges.v[i], privs);
        size_t o = close ? (size_t)snprintf(hint, sizeof(hint), "did you mean '%s'? ", close) : 0;
        o += (size_t)snprintf(hint + o, sizeof(hint) - o,
                              "%s privileges: ", spec_engine_str((spec_engine_t)engine));
        for (size_t j = 0; privs[j] && o < sizeof(hint); j++)
            o += (size_t)snprintf(hint + o, sizeof(hint) - o, "%s%s", j ? ", " : "", privs[j]);
        vreporth(v, r, SPEC_ERROR, g->privileges.ats[i], field, hint, "'%s' is not a %s privilege",
                 g->privileges.v[i], spec_engine_str((spec_engine_t)engine));
    }
}

static void check_backup_store(vctx_t *v, const spec_resource_t *r)
{
    const spec_backup_store_t *b = &r->u.backup_store;
    check_secret_ref(v, r, &b->s3_access_key_id, "spec.s3.accessKeyIdSecretKeyRef", true);
    check_secret_ref(v, r, &b->s3_secret_access_key, "spec.s3.secretAccessKeySecretKeyRef", true);
}

static void check_backup(vctx_t *v, const spec_resource_t *r)
{
    const spec_backup_t *b = &r->u.backup;
    const spec_resource_t *cl = resolve(v, r, SPEC_KIND_CLUSTER, &b->cluster, "spec.cluster");
    if (cl && cl->u.cluster.engine == SPEC_ENGINE_REDIS && b->type == SPEC_BACKUP_LOGICAL &&
        b->type_at.line)
        vreporth(v, r, SPEC_ERROR, b->type_at, "spec.type", "use type: physical (an RDB snapshot)",
                 "logical backups are not supported for redis cluster '%s'", cl->name.v);
    resolve(v, r, SPEC_KIND_BACKUP_STORE, &b->store, "spec.store");
    check_secret_ref(v, r, &b->encryption_key, "spec.encryption.secretKeyRef", true);
    if (b->archive_queue_max.set &&
        (!b->pitr.v || (cl && cl->u.cluster.engine != SPEC_ENGINE_POSTGRESQL)))
        vreporth(v, r, SPEC_WARNING, b->archive_queue_max.at, "spec.archiveQueueMax",
                 "remove it, or set pitr: true on a postgresql cluster's Backup",
                 "archiveQueueMax bounds the PostgreSQL WAL spool of a pitr Backup; it has no "
                 "effect here");
    if (b->pitr.v) {
        /* Point-in-time recovery replays the archive onto a base backup: a physical one. */
        if (b->type != SPEC_BACKUP_PHYSICAL)
            vreporth(v, r, SPEC_ERROR, b->pitr.at, "spec.pitr", "use type: physical",
                     "pitr needs a physical Backup (the base backups of the archive)");
        else if (cl && cl->u.cluster.engine == SPEC_ENGINE_REDIS)
            vreport(v, r, SPEC_ERROR, b->pitr.at, "spec.pitr",
                    "pitr is available for postgresql (WAL) and mariadb (binary logs) "
                    "clusters only");
        /* The spool holds whole 16 MiB segments: a smaller bound would drop every one. */
        if (b->archive_queue_max.set && b->archive_queue_max.v > 0 &&
            b->archive_queue_max.v < 16ULL * 1024 * 1024)
            vreporth(v, r, SPEC_ERROR, b->archive_queue_max.at, "spec.archiveQueueMax",
                     "use at least 16Mi, or 0 for no bound",
                     "archiveQueueMax must hold at least one 16 MiB WAL segment");
        /* One archive per cluster: the server hands each WAL segment over once. */
        for (size_t i = 0; b->type == SPEC_BACKUP_PHYSICAL && i < v->nall; i++) {
            const spec_resource_t *o = v->all[i];
            if (o == r || o->kind != SPEC_KIND_BACKUP || !o->u.backup.pitr.v ||
                o->u.backup.type != SPEC_BACKUP_PHYSICAL ||
                !same(o->tenant.v, r->tenant.v) || !same(o->u.backup.cluster.v, b->cluster.v))
                continue;
            if (strcmp(o->name.v, r->name.v) < 0)
                vreport(v, r, SPEC_ERROR, b->pitr.at, "spec.pitr",
                        "cluster '%s' already archives through Backup '%s' (one pitr Backup "
                        "per cluster)",
                        b->cluster.v, o->name.v);
        }
    }
}

static void check_restore(vctx_t *v, const spec_resource_t *r)
{
    const spec_restore_t *rs = &r->u.restore;
    /* Offline (no daemon state to check against), a Restore may name a Backup declared
     * elsewhere: backups outlive the file that scheduled them, and the catalog is the
     * daemon's. That is a warning there; against the daemon's resources it is an error. */
    if (!v->known && rs->backup.set && rs->backup.v &&
        !find(v, SPEC_KIND_BACKUP, r->tenant.v, rs->backup.v)) {
        vreporth(v, r, SPEC_WARNING, rs->backup.at, "spec.backup",
                 "the daemon must know it when this Restore is applied",
                 "Backup '%s' is not declared in these files", rs->backup.v);
    } else {
        resolve(v, r, SPEC_KIND_BACKUP, &rs->backup, "spec.backup");
    }
    resolve(v, r, SPEC_KIND_BACKUP_STORE, &rs->source_store, "spec.source.store");
}

static void check_sql_job(vctx_t *v, const spec_resource_t *r)
{
    const spec_sql_job_t *j = &r->u.sql_job;
    const spec_resource_t *cl = resolve(v, r, SPEC_KIND_CLUSTER, &j->cluster, "spec.cluster");
    check_username(v, r, cl, &j->username, "spec.username", "username");
    for (size_t i = 0; i < j->depends_on.n; i++) {
        spec_str_t ref = {j->depends_on.v[i], true, j->depends_on.ats[i]};
        char field[64];
        snprintf(field, sizeof(field), "spec.dependsOn[%zu]", i);
        resolve(v, r, SPEC_KIND_SQL_JOB, &ref, field);
    }
}

static void check_credential_role(vctx_t *v, const spec_resource_t *r)
{
    const spec_credential_role_t *c = &r->u.credential_role;
    resolve(v, r, SPEC_KIND_CLUSTER, &c->cluster, "spec.cluster");
    if (c->default_ttl.ms > c->max_ttl.ms) {
        char d[32], m[32];
        spec_format_duration(c->default_ttl.ms, d, sizeof(d));
        spec_format_duration(c->max_ttl.ms, m, sizeof(m));
        bool at_default = c->default_ttl.set;
        vreport(v, r, SPEC_ERROR, at_default ? c->default_ttl.at : c->max_ttl.at,
                at_default ? "spec.defaultTTL" : "spec.maxTTL",
                "defaultTTL (%s) is longer than maxTTL (%s)", d, m);
    }
}

static void check_cluster(vctx_t *v, const spec_resource_t *r)
{
    const spec_cluster_t *c = &r->u.cluster;
    const spec_resource_t *bb = resolve(v, r, SPEC_KIND_BACKUP, &c->bootstrap_backup,
                                        "spec.bootstrapFrom.backup");
    if (bb && (bb->u.backup.type != SPEC_BACKUP_PHYSICAL ||
               !same(bb->u.backup.cluster.v, r->name.v)))
        vreporth(v, r, SPEC_ERROR, c->bootstrap_backup.at, "spec.bootstrapFrom.backup",
                 "name a Backup with type: physical and cluster: this cluster",
                 "Backup '%s' is not a physical Backup of cluster '%s'", bb->name.v, r->name.v);
    /* A Redis replica loaded from an RDB run still does a full resync (a fresh RDB from
     * the primary) unless the run's replication offset is inside the primary's backlog,
     * so a run would only add a restore in front of the usual sync (docs/backup.md). */
    if (c->engine == SPEC_ENGINE_REDIS && c->bootstrap_backup.v)
        vreporth(v, r, SPEC_ERROR, c->bootstrap_backup.at, "spec.bootstrapFrom",
                 "remove bootstrapFrom: Redis replicas always sync from the primary",
                 "bootstrapFrom is not supported for Redis: a replica loaded from an RDB backup "
                 "still needs a full resync from the primary unless the writes since the "
                 "backup fit in the primary's replication backlog");
    if (c->engine != SPEC_ENGINE_REDIS)
        return;
    const spec_redis_t *rd = &c->redis;
    if ((rd->class_ == SPEC_REDIS_CLASS_QUEUE || rd->class_ == SPEC_REDIS_CLASS_SESSION) &&
        rd->maxmemory_policy.set && rd->maxmemory_policy.v &&
        strncmp(rd->maxmemory_policy.v, "allkeys-", 8) == 0)
        vreporth(v, r, SPEC_WARNING, rd->maxmemory_policy.at, "spec.redis.maxmemoryPolicy",
                 "use volatile-lru (the class default) or noeviction",
                 "maxmemoryPolicy %s on a %s-class cluster evicts keys without a TTL, such as "
                 "queued jobs",
                 rd->maxmemory_policy.v,
                 rd->class_ == SPEC_REDIS_CLASS_QUEUE ? "queue" : "session");
    if (rd->maxmemory.set && c->memory.set && rd->maxmemory.v > c->memory.v)
        vreporth(v, r, SPEC_ERROR, rd->maxmemory.at, "spec.redis.maxmemory",
                 "keep maxmemory below memory to leave room for buffers and forks",
                 "maxmemory (%" PRIu64 " bytes) is larger than memory (%" PRIu64 " bytes)",
                 rd->maxmemory.v, c->memory.v);
}

/* --- checks across all resources ------------------------------------------------------- */

typedef struct port_use {
    int64_t port;
    spec_mark_t at;
    const spec_resource_t *r;
    const char *field;
    bool in_set;
} port_use_t;

/* Explicit proxy ports (port, roPort) must be unique across clusters of all tenants. A
 * defaulted roPort (port + 1) is not checked here: the proxy skips it when taken. */
static void check_ports(vctx_t *v)
{
    port_use_t *u = spec_xcalloc(2 * v->nall + 1, sizeof(*u));
    size_t n = 0;
    for (size_t i = 0; i < v->nall; i++) {
        const spec_resource_t *r = v->all[i];
        if (r->kind != SPEC_KIND_CLUSTER)
            continue;
        const spec_proxy_t *p = &r->u.cluster.proxy;
        bool in_set = i >= v->first_set;
        if (p->port.set)
            u[n++] = (port_use_t){p->port.v, p->port.at, r, "spec.proxy.port", in_set};
        if (p->ro_port.set)
            u[n++] = (port_use_t){p->ro_port.v, p->ro_port.at, r, "spec.proxy.roPort", in_set};
    }
    for (size_t j = 0; j < n; j++) {
        if (!u[j].in_set)
            continue;
        for (size_t i = 0; i < j; i++) {
            if (u[i].port != u[j].port || u[i].r == u[j].r)
                continue;
            char hint[256];
            snprintf(hint, sizeof(hint), "Cluster/%s (tenant %s) uses it at %s:%d:%d",
                     u[i].r->name.v, u[i].r->tenant.v, u[i].at.file ? u[i].at.file : "?",
                     u[i].at.line, u[i].at.col);
            vreporth(v, u[j].r, SPEC_ERROR, u[j].at, u[j].field, hint,
                     "proxy port %" PRId64 " is already used by Cluster/%s", u[j].port,
                     u[i].r->name.v);
            break;
        }
    }
    free(u);
}

/* One tenant's quotas on cluster count and storage (storage × instances). */
static void check_tenant(vctx_t *v, const spec_resource_t *t, bool t_in_set)
{
    const spec_tenant_t *q = &t->u.tenant;
    int64_t count = 0;
    uint64_t storage = 0;
    bool count_done = !q->quota_clusters.set, storage_done = !q->quota_storage.set;
    for (size_t i = 0; i < v->nall; i++) {
        const spec_resource_t *c = v->all[i];
        if (c->kind != SPEC_KIND_CLUSTER || !same(c->tenant.v, t->name.v))
            continue;
        bool in_set = i >= v->first_set;
        char hint[256];
        count++;
        if (!count_done && count > q->quota_clusters.v && in_set) {
            snprintf(hint, sizeof(hint), "raise quotas.clusters of Tenant/%s (%s:%d:%d)", t->name.v,
                     q->quota_clusters.at.file ? q->quota_clusters.at.file : "?",
                     q->quota_clusters.at.line, q->quota_clusters.at.col);
            vreporth(v, c, SPEC_ERROR, c->name.at, "metadata.tenant", hint,
                     "tenant '%s' allows at most %" PRId64 " clusters; this is cluster %" PRId64,
                     t->name.v, q->quota_clusters.v, count);
            count_done = true;
        }
        uint64_t add = c->u.cluster.storage.v *
                       (uint64_t)(c->u.cluster.instances.v > 0 ? c->u.cluster.instances.v : 1);
        storage += add;
        if (!storage_done && storage > q->quota_storage.v && in_set) {
            snprintf(hint, sizeof(hint), "raise quotas.storage of Tenant/%s (%s:%d:%d)", t->name.v,
                     q->quota_storage.at.file ? q->quota_storage.at.file : "?",
                     q->quota_storage.at.line, q->quota_storage.at.col);
            vreporth(v, c, SPEC_ERROR, c->u.cluster.storage.at, "spec.storage", hint,
                     "tenant '%s' storage quota of %" PRIu64 " bytes is exceeded (%" PRIu64
                     " bytes over all instances)",
                     t->name.v, q->quota_storage.v, storage);
            storage_done = true;
        }
    }
    if (!count_done && count > q->quota_clusters.v && t_in_set)
        vreport(v, t, SPEC_ERROR, q->quota_clusters.at, "spec.quotas.clusters",
                "tenant has %" PRId64 " clusters, more than quotas.clusters (%" PRId64 ")", count,
                q->quota_clusters.v);
    if (!storage_done && storage > q->quota_storage.v && t_in_set)
        vreport(v, t, SPEC_ERROR, q->quota_storage.at, "spec.quotas.storage",
                "clusters use %" PRIu64 " bytes of storage, more than quotas.storage (%" PRIu64 ")",
                storage, q->quota_storage.v);
}

/* SqlJob.dependsOn cycles among the SqlJobs of `set`: for each job not yet on a reported
 * cycle, a breadth-first search for the shortest way back to it; each cycle found is
 * reported once, at the dependsOn entry of its first job. */
static void check_job_cycles(vctx_t *v)
{
    size_t n = 0;
    for (size_t i = v->first_set; i < v->nall; i++)
        if (v->all[i]->kind == SPEC_KIND_SQL_JOB)
            n++;
    if (n == 0)
        return;
    const spec_resource_t **job = spec_xcalloc(n, sizeof(*job));
    n = 0;
    for (size_t i = v->first_set; i < v->nall; i++)
        if (v->all[i]->kind == SPEC_KIND_SQL_JOB)
            job[n++] = v->all[i];
    /* Edges grouped by source: those of job i are first[i] .. first[i + 1] - 1. */
    size_t ne = 0, cape = 16;
    size_t *first = spec_xcalloc(n + 1, sizeof(*first)), *to = spec_xcalloc(cape, sizeof(*to));
    spec_mark_t *eat = spec_xcalloc(cape, sizeof(*eat));
    for (size_t i = 0; i < n; i++) {
        first[i] = ne;
        const spec_strlist_t *d = &job[i]->u.sql_job.depends_on;
        for (size_t k = 0; k < d->n; k++) {
            for (size_t j = 0; j < n; j++) {
                if (!same(job[j]->name.v, d->v[k]) || !same(job[j]->tenant.v, job[i]->tenant.v))
                    continue;
                if (ne == cape) {
                    cape *= 2;
                    to = spec_xrealloc(to, cape * sizeof(*to));
                    eat = spec_xrealloc(eat, cape * sizeof(*eat));
                }
                to[ne] = j;
                eat[ne++] = d->ats[k];
            }
        }
    }
    first[n] = ne;
    bool *reported = spec_xcalloc(n, sizeof(*reported)), *seen = spec_xcalloc(n, sizeof(*seen));
    size_t *parent = spec_xcalloc(n, sizeof(*parent)), *queue = spec_xcalloc(n, sizeof(*queue));
    size_t *cycle = spec_xcalloc(n + 1, sizeof(*cycle));
    for (size_t s = 0; s < n; s++) {
        if (reported[s])
            continue;
        memset(seen, 0, n * sizeof(*seen));
        size_t qh = 0, qt = 0, last = SIZE_MAX;
        queue[qt++] = s;
        seen[s] = true;
        while (qh < qt && last == SIZE_MAX) {
            size_t u = queue[qh++];
            for (size_t e = first[u]; e < first[u + 1]; e++) {
                if (to[e] == s) {
                    last = u;
                    break;
                }
                if (!seen[to[e]]) {
                    seen[to[e]] = true;
                    parent[to[e]] = u;
                    queue[qt++] = to[e];
                }
            }
        }
        if (last == SIZE_MAX)
            continue;
        size_t len = 0;
        for (size_t u = last; u != s; u = parent[u])
            cycle[len++] = u;
        cycle[len++] = s;
        char text[512];
        size_t o = 0;
        for (size_t k = len; k-- > 0 && o < sizeof(text);) {
            o += (size_t)snprintf(text + o, sizeof(text) - o, "%s -> ", job[cycle[k]]->name.v);
            reported[cycle[k]] = true;
        }
        if (o < sizeof(text))
            snprintf(text + o, sizeof(text) - o, "%s", job[s]->name.v);
        size_t next = len >= 2 ? cycle[len - 2] : s;
        spec_mark_t at = job[s]->u.sql_job.depends_on.at;
        for (size_t e = first[s]; e < first[s + 1]; e++)
            if (to[e] == next) {
                at = eat[e];
                break;
            }
        vreport(v, job[s], SPEC_ERROR, at, "spec.dependsOn", "dependsOn cycle: %s", text);
    }
    free(job);
    free(first);
    free(to);
    free(eat);
    free(reported);
    free(seen);
    free(parent);
    free(queue);
    free(cycle);
}

int spec_validate(const spec_set_t *set, const spec_set_t *known, spec_diags_t *diags)
{
    size_t before = diags->errors;
    vctx_t v = {.set = set, .known = known, .d = diags};
    size_t nk = known ? known->n : 0;
    v.all = spec_xcalloc(nk + set->n + 1, sizeof(*v.all));
    for (size_t i = 0; i < nk; i++) {
        const spec_resource_t *k = known->items[i];
        if (!spec_set_find(set, k->kind, k->tenant.v, k->name.v))
            v.all[v.nall++] = k;
    }
    v.first_set = v.nall;
    for (size_t i = 0; i < set->n; i++)
        v.all[v.nall++] = set->items[i];

    for (size_t i = v.first_set; i < v.nall; i++) {
        const spec_resource_t *r = v.all[i];
        switch (r->kind) {
        case SPEC_KIND_CLUSTER:
            check_cluster(&v, r);
            break;
        case SPEC_KIND_DATABASE:
            check_database(&v, r);
            break;
        case SPEC_KIND_USER:
            check_user(&v, r);
            break;
        case SPEC_KIND_GRANT:
            check_grant(&v, r);
            break;
        case SPEC_KIND_BACKUP_STORE:
            check_backup_store(&v, r);
            break;
        case SPEC_KIND_BACKUP:
            check_backup(&v, r);
            break;
        case SPEC_KIND_RESTORE:
            check_restore(&v, r);
            break;
        case SPEC_KIND_SQL_JOB:
            check_sql_job(&v, r);
            break;
        case SPEC_KIND_CREDENTIAL_ROLE:
            check_credential_role(&v, r);
            break;
        default:
            break;
        }
    }
    check_ports(&v);
    for (size_t i = 0; i < v.nall; i++)
        if (v.all[i]->kind == SPEC_KIND_TENANT)
            check_tenant(&v, v.all[i], i >= v.first_set);
    check_job_cycles(&v);
    free(v.all);
    return diags->errors > before ? DBP_EINVAL : 0;
}
