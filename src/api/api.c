/*
 * api.c: the HTTP API over libmicrohttpd on a unix socket (see api.h). Requests are
 * served one at a time by MHD's internal polling thread, which owns its own store
 * connection and secrets handle.
 */
#include "api/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/log.h"
#include "control/apply.h"
#include "control/daemon.h"
#include "secrets/secrets.h"
#include "spec/spec.h"

#define API_MAX_BODY (8 * 1024 * 1024)

struct api_server {
    struct MHD_Daemon *mhd;
    int listen_fd;
    char sock_path[108];
    store_t *store;
    secrets_t *secrets;
    int wake_fd;
    proxy_t *proxy;
};

/* Per-request state: the accumulated upload body. */
typedef struct api_req {
    char *body;
    size_t len;
    bool too_big;
} api_req_t;

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        text = strdup("{\"error\":\"out of memory\"}");
    size_t len = text ? strlen(text) : 0;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_json(c, status, json_pack("{s:s}", "error", msg));
}

/* ---- status ------------------------------------------------------------------------- */

typedef struct inst_ctx {
    json_t *arr;
    const char *cluster;
    const char *tenant;
    char primary_hostport[96];
    char replica_hostport[96];
} inst_ctx_t;

static int inst_cb(const store_instance_t *in, void *ud)
{
    inst_ctx_t *x = ud;
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:I,s:I,s:s}", "name", in->name, "role",
                          in->role, "host", in->host, "port", in->port, "state", in->state,
                          "lag_bytes", (json_int_t)in->lag_bytes, "lag_ms",
                          (json_int_t)in->lag_ms, "position", in->position);
    if (o)
        json_array_append_new(x->arr, o);
    if (strcmp(in->role, "replica") == 0 && strcmp(in->state, "running") == 0 &&
        !x->replica_hostport[0])
        snprintf(x->replica_hostport, sizeof(x->replica_hostport), "%s:%d", in->host, in->port);
    return 0;
}

typedef struct status_ctx {
    store_t *st;
    json_t *clusters;
    const char *cluster;
    dbp_err_t *err;
} status_ctx_t;

static int cluster_cb(const store_resource_t *r, void *ud)
{
    status_ctx_t *x = ud;
    if (x->cluster && strcmp(x->cluster, r->name) != 0)
        return 0;
    json_t *doc = json_loads(r->json, 0, NULL);
    json_t *spec = doc ? json_object_get(doc, "spec") : NULL;
    const char *engine = spec ? json_string_value(json_object_get(spec, "engine")) : NULL;
    int64_t epoch = 0;
    char primary[96] = "";
    if (store_get_topology(x->st, r->tenant, r->name, &epoch, primary, x->err) != 0) {
        json_decref(doc);
        return -1;
    }
    inst_ctx_t ic = {.arr = json_array(), .cluster = r->name, .tenant = r->tenant};
    if (store_list_instances(x->st, r->tenant, r->name, inst_cb, &ic, x->err) != 0) {
        json_decref(ic.arr);
        json_decref(doc);
        return -1;
    }
    /* Endpoints: until the proxy serves this cluster, the servers themselves. */
    char rw[96] = "", ro[96] = "";
    size_t ni = json_array_size(ic.arr);
    for (size_t i = 0; i < ni; i++) {
        json_t *in = json_array_get(ic.arr, i);
        if (strcmp(json_string_value(json_object_get(in, "name")), primary) == 0)
            snprintf(rw, sizeof(rw), "%s:%lld", json_string_value(json_object_get(in, "host")),
                     (long long)json_integer_value(json_object_get(in, "port")));
    }
    snprintf(ro, sizeof(ro), "%s", ic.replica_hostport[0] ? ic.replica_hostport : rw);
    /* With a proxy (PostgreSQL so far), clients use its endpoints, never a server's. */
    json_t *px = spec ? json_object_get(spec, "proxy") : NULL;
    json_int_t port = px ? json_integer_value(json_object_get(px, "port")) : 0;
    if (port > 0 && engine && strcmp(engine, "postgresql") == 0) {
        const char *addr = json_string_value(json_object_get(px, "address"));
        json_int_t roport = json_integer_value(json_object_get(px, "roPort"));
        snprintf(rw, sizeof(rw), "%s:%lld", addr ? addr : "127.0.0.1", (long long)port);
        snprintf(ro, sizeof(ro), "%s:%lld", addr ? addr : "127.0.0.1",
                 (long long)(roport > 0 ? roport : port + 1));
    }
    json_t *c = json_pack("{s:s,s:s,s:s,s:I,s:s,s:{s:s,s:s},s:o,s:s,s:s}", "name", r->name,
                          "tenant", r->tenant, "engine", engine ? engine : "", "epoch",
                          (json_int_t)epoch, "primary", primary, "endpoints", "rw", rw, "ro", ro,
                          "instances", ic.arr, "state", r->state ? r->state : "pending",
                          "message", r->message ? r->message : "");
    json_decref(doc);
    /* Failover timing from the HA monitor (since the daemon started); null when none. */
    ctl_ha_metrics_t hm;
    if (c && ctl_ha_metrics_get(r->tenant, r->name, &hm))
        json_object_set_new(c, "failover",
                            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "failovers",
                                      (json_int_t)hm.failovers, "last_at_ms",
                                      (json_int_t)hm.last_wall_ms, "epoch", (json_int_t)hm.epoch,
                                      "detection_ms", (json_int_t)hm.detection_ms, "promotion_ms",
                                      (json_int_t)hm.promotion_ms, "unavailability_ms",
                                      (json_int_t)hm.unavailability_ms));
    else if (c)
        json_object_set_new(c, "failover", json_null());
    if (c)
        json_array_append_new(x->clusters, c);
    return 0;
}

json_t *api_status_json(store_t *st, const char *tenant, const char *cluster, dbp_err_t *err)
{
    status_ctx_t x = {.st = st, .clusters = json_array(), .cluster = cluster, .err = err};
    if (store_list_resources(st, tenant, "Cluster", cluster_cb, &x, err) != 0) {
        json_decref(x.clusters);
        return NULL;
    }
    return json_pack("{s:o}", "clusters", x.clusters);
}

/* ---- wait --------------------------------------------------------------------------- */

typedef struct wait_ctx {
    json_t *pending;
    json_t *accepted;
} wait_ctx_t;

static int wait_cb(const store_resource_t *r, void *ud)
{
    wait_ctx_t *x = ud;
    const char *state = r->state ? r->state : "pending";
    if (strcmp(state, "accepted") == 0 && r->observed_generation == r->generation) {
        json_array_append_new(x->accepted, json_pack("{s:s,s:s,s:s}", "kind", r->kind, "tenant",
                                                     r->tenant, "name", r->name));
        return 0;
    }
    if (strcmp(state, "ready") == 0 && r->observed_generation == r->generation)
        return 0;
    json_array_append_new(x->pending,
                          json_pack("{s:s,s:s,s:s,s:s,s:s}", "kind", r->kind, "tenant", r->tenant,
                                    "name", r->name, "state", state, "message",
                                    r->message ? r->message : "not reconciled yet"));
    return 0;
}

json_t *api_wait_json(store_t *st, const char *tenant, dbp_err_t *err)
{
    wait_ctx_t x = {.pending = json_array(), .accepted = json_array()};
    if (store_list_resources(st, tenant, NULL, wait_cb, &x, err) != 0) {
        json_decref(x.pending);
        json_decref(x.accepted);
        return NULL;
    }
    return json_pack("{s:b,s:o,s:o}", "ready", json_array_size(x.pending) == 0, "pending",
                     x.pending, "accepted", x.accepted);
}

/* ---- resources ---------------------------------------------------------------------- */

typedef struct res_ctx {
    json_t *items;
    const char *name;
} res_ctx_t;

static int res_cb(const store_resource_t *r, void *ud)
{
    res_ctx_t *x = ud;
    if (x->name && strcmp(x->name, r->name) != 0)
        return 0;
    json_t *doc = json_loads(r->json, 0, NULL);
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:o,s:{s:s,s:s,s:I}}", "kind", r->kind, "tenant",
                          r->tenant, "name", r->name, "generation", (json_int_t)r->generation,
                          "resource", doc ? doc : json_null(), "status", "state",
                          r->state ? r->state : "pending", "message",
                          r->message ? r->message : "", "observedGeneration",
                          (json_int_t)r->observed_generation);
    if (o)
        json_array_append_new(x->items, o);
    return 0;
}

/* ---- events ------------------------------------------------------------------------- */

static int ev_cb(const store_event_t *e, void *ud)
{
    json_array_append_new((json_t *)ud,
                          json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "id", (json_int_t)e->id,
                                    "ts_ms", (json_int_t)e->ts_ms, "tenant", e->tenant, "kind",
                                    e->kind, "name", e->name, "type", e->type, "reason",
                                    e->reason, "message", e->message));
    return 0;
}

/* ---- apply -------------------------------------------------------------------------- */

static int known_cb(const store_resource_t *r, void *ud)
{
    spec_set_t *known = ud;
    spec_diags_t d;
    spec_diags_init(&d);
    int rc = spec_parse_buffer(known, "<store>", r->json, strlen(r->json), &d);
    (void)rc;
    spec_diags_free(&d);
    return 0;
}

static json_t *diags_json(const spec_diags_t *d)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < d->n; i++) {
        const spec_diag_t *g = &d->v[i];
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:i,s:i,s:s,s:s,s:s?}", "severity",
                           g->severity == SPEC_ERROR ? "error" : "warning", "file",
                           g->file ? g->file : "", "line", g->line, "col", g->col, "path",
                           g->path ? g->path : "", "message", g->msg ? g->msg : "", "hint",
                           g->hint));
    }
    return arr;
}

static enum MHD_Result do_apply(api_server_t *s, struct MHD_Connection *c, const char *body,
                                size_t len)
{
    const char *fname = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "file");
    spec_set_t set, known;
    spec_set_init(&set);
    spec_set_init(&known);
    spec_diags_t d;
    spec_diags_init(&d);
    dbp_err_t err;
    enum MHD_Result ret;
    int bad = spec_parse_buffer(&set, fname ? fname : "<request>", body, len, &d) != 0;
    if (!bad) {
        if (store_list_resources(s->store, NULL, NULL, known_cb, &known, &err) != 0) {
            ret = send_error(c, 500, err.msg);
            goto out;
        }
        bad = spec_validate(&set, &known, &d) != 0;
    }
    if (bad) {
        ret = send_json(c, 422, json_pack("{s:o}", "errors", diags_json(&d)));
        goto out;
    }
    json_t *applied = NULL;
    if (ctl_apply_set(s->store, s->secrets, &set, &applied, &err) != 0) {
        ret = send_error(c, 500, err.msg);
        goto out;
    }
    dbp_info("api_apply", "resources=%zu", set.n);
    if (s->wake_fd >= 0) {
        ssize_t w = write(s->wake_fd, "a", 1);
        (void)w;
    }
    ret = send_json(c, 200, json_pack("{s:o,s:o}", "applied", applied, "warnings",
                                      diags_json(&d)));
out:
    spec_diags_free(&d);
    spec_set_free(&set);
    spec_set_free(&known);
    return ret;
}

/* ---- dispatch ----------------------------------------------------------------------- */

static const char *arg(struct MHD_Connection *c, const char *k)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
    return v && *v ? v : NULL;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    api_server_t *s = cls;
    api_req_t *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        if (req->len + *upload_size > API_MAX_BODY) {
            req->too_big = true;
        } else {
            char *nb = realloc(req->body, req->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            req->body = nb;
            memcpy(req->body + req->len, upload, *upload_size);
            req->len += *upload_size;
            req->body[req->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    const char *tenant = arg(c, "tenant");
    bool get = strcmp(method, "GET") == 0;
    if (get && strcmp(url, "/healthz") == 0)
        return send_json(c, 200, json_pack("{s:s}", "status", "ok"));
    if (get && strcmp(url, "/v1/status") == 0) {
        json_t *doc = api_status_json(s->store, tenant, arg(c, "cluster"), &err);
        return doc ? send_json(c, 200, doc) : send_error(c, 500, err.msg);
    }
    if (get && strcmp(url, "/v1/wait") == 0) {
        json_t *doc = api_wait_json(s->store, tenant, &err);
        return doc ? send_json(c, 200, doc) : send_error(c, 500, err.msg);
    }
    if (get && strcmp(url, "/v1/resources") == 0) {
        const char *kind = arg(c, "kind");
        int k = kind ? spec_kind_parse(kind) : -1;
        if (kind && k < 0)
            return send_error(c, 400, "unknown kind");
        res_ctx_t x = {.items = json_array(), .name = arg(c, "name")};
        if (store_list_resources(s->store, tenant, k >= 0 ? spec_kind_str((spec_kind_t)k) : NULL,
                                 res_cb, &x, &err) != 0) {
            json_decref(x.items);
            return send_error(c, 500, err.msg);
        }
        return send_json(c, 200, json_pack("{s:o}", "items", x.items));
    }
    if (get && strcmp(url, "/v1/events") == 0) {
        const char *since = arg(c, "since"), *limit = arg(c, "limit");
        json_t *arr = json_array();
        if (store_list_events(s->store, tenant, since ? strtoll(since, NULL, 10) : 0,
                              limit ? atoi(limit) : 0, ev_cb, arr, &err) != 0) {
            json_decref(arr);
            return send_error(c, 500, err.msg);
        }
        return send_json(c, 200, json_pack("{s:o}", "events", arr));
    }
    if (get && strcmp(url, "/v1/proxy/stats") == 0) {
        if (!s->proxy)
            return send_error(c, 404, "no proxy is running");
        json_t *doc = proxy_stats_json(s->proxy);
        return doc ? send_json(c, 200, doc) : send_error(c, 500, "out of memory");
    }
    if (get && strcmp(url, "/v1/secret") == 0) {
        const char *name = arg(c, "name"), *key = arg(c, "key");
        if (!name || !key)
            return send_error(c, 400, "name and key are required");
        char *value = NULL;
        int rc = secrets_get(s->secrets, tenant ? tenant : "default", name, key, &value, &err);
        if (rc == DBP_ENOENT)
            return send_error(c, 404, err.msg);
        if (rc)
            return send_error(c, 500, err.msg);
        json_t *doc = json_pack("{s:s}", "value", value);
        secrets_free_value(value);
        return send_json(c, 200, doc);
    }
    if (strcmp(method, "POST") == 0 &&
        (strcmp(url, "/v1/switchover") == 0 || strcmp(url, "/v1/failover") == 0)) {
        const char *cluster = arg(c, "cluster");
        if (!cluster)
            return send_error(c, 400, "cluster is required");
        json_t *result = NULL;
        int rc = ctl_submit_switch(tenant ? tenant : "default", cluster, arg(c, "to"),
                                   strcmp(url, "/v1/failover") == 0, &result, &err);
        if (rc)
            return send_error(c, rc == DBP_ENOENT ? 404 : rc == DBP_EINVAL ? 400 : 409, err.msg);
        return send_json(c, 200, result);
    }
    if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/apply") == 0) {
        if (req->too_big)
            return send_error(c, 413, "request body larger than 8 MiB");
        return do_apply(s, c, req->body ? req->body : "", req->len);
    }
    return send_error(c, 404, "no such endpoint");
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    api_req_t *req = *con_cls;
    if (req) {
        free(req->body);
        free(req);
        *con_cls = NULL;
    }
}

int api_start(api_server_t **out, const api_config_t *cfg, dbp_err_t *err)
{
    api_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    s->listen_fd = -1;
    s->wake_fd = cfg->wake_fd;
    s->proxy = cfg->proxy;
    int rc;
    if (strlen(cfg->sock_path) >= sizeof(s->sock_path)) {
        rc = dbp_err_set(err, DBP_EINVAL, "socket path too long: %s", cfg->sock_path);
        goto fail;
    }
    snprintf(s->sock_path, sizeof(s->sock_path), "%s", cfg->sock_path);
    if ((rc = store_open(&s->store, cfg->store_path, err)))
        goto fail;
    if ((rc = secrets_open(&s->secrets, cfg->key_path, s->store, err)))
        goto fail;
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0) {
        rc = dbp_err_set(err, DBP_EIO, "socket: %s", strerror(errno));
        goto fail;
    }
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->sock_path);
    unlink(s->sock_path); /* a stale socket of a dead daemon: the data dir lock is ours */
    mode_t old = umask(077);
    int b = bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (b != 0 || listen(s->listen_fd, 64) != 0) {
        rc = dbp_err_set(err, DBP_EIO, "listen on %s: %s", s->sock_path, strerror(errno));
        goto fail;
    }
    s->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                              handler, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
                              MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!s->mhd) {
        rc = dbp_err_set(err, DBP_EIO, "cannot start the API server on %s", s->sock_path);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    api_stop(s);
    return rc;
}

void api_stop(api_server_t *s)
{
    if (!s)
        return;
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unlink(s->sock_path);
    }
    secrets_close(s->secrets);
    store_close(s->store);
    free(s);
}
