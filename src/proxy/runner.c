/*
 * runner.c: `dbplane proxy-run --config FILE.json`, the standalone proxy used by
 * bench/pg-proxy.sh and tests/integration/test_proxy.py. The file is one JSON object:
 *
 *   { "workers": 2, "latency_sched": false, "tls_dir": "/path", "tls_cert": null, "tls_key": null,
 *     "server_tls_ca": null,
 *     "log_level": "info",
 *     "clusters": [ { "tenant": "default", "name": "pg", "address": "127.0.0.1",
 *        "rw_port": 6432, "ro_port": 0, "pool_mode": "transaction", "pool_size": 20,
 *        "min_pool_size": 0, "reserve_pool_size": 0, "max_client_connections": 10000,
 *        "query_wait_timeout_ms": 120000, "idle_in_transaction_timeout_ms": 0,
 *        "server_idle_timeout_ms": 600000, "server_lifetime_ms": 3600000,
 *        "client_login_timeout_ms": 60000, "epoch": 1, "server_tls": "disable",
 *        "server_tls_ca": null,
 *        "backends": [ { "name": "pg-0", "host": "127.0.0.1", "port": 5432,
 *                        "sock_dir": "", "primary": true, "healthy": true } ],
 *        "users": [ { "username": "app", "password": "...", "max_connections": -1,
 *                     "scram_verifier": "SCRAM-SHA-256$4096:...$...:..." (optional) } ],
 *        "databases": [ { "name": "app", "max_connections": -1 } ] } ] }
 *
 * A cluster's "server_tls_ca" overrides the top-level one for its verify-full.
 *
 * SIGHUP reloads the file, SIGUSR1 prints stats, SIGUSR2 toggles PAUSE/RESUME of every
 * cluster (toggle_pause). Signals are taken synchronously with sigwait in the main thread (blocked
 * before the workers start, so they never see them).
 */
#include "proxy/runner.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "common/log.h"

static int64_t jint(json_t *o, const char *k, int64_t def)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static const char *jstr(json_t *o, const char *k, const char *def)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : def;
}

static bool jbool(json_t *o, const char *k, bool def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, dbp_err_t *err)
{
    if (strlen(src) >= cap)
        return dbp_err_set(err, DBP_EINVAL, "%s too long: %s", what, src);
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

void proxy_run_cfg_free(proxy_run_cfg_t *rc)
{
    if (rc->doc) {
        json_t *cls = json_object_get(rc->doc, "clusters");
        size_t i, j;
        json_t *cl, *u;
        json_array_foreach(cls, i, cl) {
            json_array_foreach(json_object_get(cl, "users"), j, u) {
                json_t *pw = json_object_get(u, "password");
                if (json_is_string(pw))
                    OPENSSL_cleanse((void *)json_string_value(pw), json_string_length(pw));
            }
        }
        json_decref(rc->doc);
    }
    free(rc->clusters);
    free(rc->users);
    free(rc->databases);
    memset(rc, 0, sizeof(*rc));
}

int proxy_run_cfg_load(const char *path, proxy_run_cfg_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    struct stat st;
    if (stat(path, &st) != 0)
        return dbp_err_set(err, DBP_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0)
        return dbp_err_set(err, DBP_EINVAL,
                           "%s: must be a regular file of mode 0600 (it holds passwords)", path);
    json_error_t je;
    out->doc = json_load_file(path, 0, &je);
    if (!out->doc)
        return dbp_err_set(err, DBP_EINVAL, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    json_t *cls = json_object_get(out->doc, "clusters");
    if (!json_is_array(cls) || json_array_size(cls) == 0 || json_array_size(cls) > 256) {
        proxy_run_cfg_free(out);
        return dbp_err_set(err, DBP_EINVAL, "%s: \"clusters\" must be a non-empty array", path);
    }
    size_t ncl = json_array_size(cls), nusers = 0, ndbs = 0;
    for (size_t i = 0; i < ncl; i++) {
        nusers += json_array_size(json_object_get(json_array_get(cls, i), "users"));
        ndbs += json_array_size(json_object_get(json_array_get(cls, i), "databases"));
    }
    out->clusters = calloc(ncl, sizeof(*out->clusters));
    out->users = calloc(nusers ? nusers : 1, sizeof(*out->users));
    out->databases = calloc(ndbs ? ndbs : 1, sizeof(*out->databases));
    if (!out->clusters || !out->users || !out->databases) {
        proxy_run_cfg_free(out);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    proxy_config_t *c = &out->cfg;
    c->workers = (int)jint(out->doc, "workers", 0);
    c->latency_sched = jbool(out->doc, "latency_sched", false);
    c->tls_cert_path = jstr(out->doc, "tls_cert", NULL);
    c->tls_key_path = jstr(out->doc, "tls_key", NULL);
    c->tls_dir = jstr(out->doc, "tls_dir", NULL);
    c->server_tls_ca_path = jstr(out->doc, "server_tls_ca", NULL);
    c->clusters = out->clusters;
    c->nclusters = (int)ncl;
    size_t ui = 0, di = 0;
    for (size_t i = 0; i < ncl; i++) {
        json_t *o = json_array_get(cls, i);
        proxy_cluster_t *cl = &out->clusters[i];
        int rc = 0;
        rc |= copy_str(cl->tenant, sizeof(cl->tenant), jstr(o, "tenant", "default"), "tenant", err);
        rc |= copy_str(cl->name, sizeof(cl->name), jstr(o, "name", "pg"), "name", err);
        rc |= copy_str(cl->engine, sizeof(cl->engine), jstr(o, "engine", "postgresql"), "engine", err);
        rc |= copy_str(cl->address, sizeof(cl->address), jstr(o, "address", "127.0.0.1"), "address", err);
        if (rc) {
            proxy_run_cfg_free(out);
            return DBP_EINVAL;
        }
        cl->rw_port = (int)jint(o, "rw_port", 6432);
        cl->ro_port = (int)jint(o, "ro_port", 0);
        const char *mode = jstr(o, "pool_mode", "transaction");
        if (strcmp(mode, "transaction") == 0)
            cl->pool_mode = PROXY_POOL_TRANSACTION;
        else if (strcmp(mode, "session") == 0)
            cl->pool_mode = PROXY_POOL_SESSION;
        else if (strcmp(mode, "statement") == 0)
            cl->pool_mode = PROXY_POOL_STATEMENT;
        else {
            proxy_run_cfg_free(out);
            return dbp_err_set(err, DBP_EINVAL, "cluster %zu: bad pool_mode %s", i, mode);
        }
        static const char *const tls_modes[] = {"disable", "prefer", "require", "verify-full"};
        const char *tm = jstr(o, "server_tls", "disable");
        int ti = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(tm, tls_modes[k]) == 0)
                ti = k;
        if (ti < 0) {
            proxy_run_cfg_free(out);
            return dbp_err_set(err, DBP_EINVAL,
                               "cluster %zu: bad server_tls %s (disable, prefer, require, "
                               "verify-full)", i, tm);
        }
        cl->server_tls = (proxy_server_tls_t)ti;
        if (copy_str(cl->server_tls_ca, sizeof(cl->server_tls_ca), jstr(o, "server_tls_ca", ""),
                     "server_tls_ca", err)) {
            proxy_run_cfg_free(out);
            return DBP_EINVAL;
        }
        cl->pool_size = (int)jint(o, "pool_size", 20);
        cl->min_pool_size = (int)jint(o, "min_pool_size", 0);
        cl->reserve_pool_size = (int)jint(o, "reserve_pool_size", 0);
        cl->max_client_connections = (int)jint(o, "max_client_connections", 10000);
        cl->query_wait_timeout_ms = jint(o, "query_wait_timeout_ms", 120000);
        cl->idle_in_transaction_timeout_ms = jint(o, "idle_in_transaction_timeout_ms", 0);
        cl->server_idle_timeout_ms = jint(o, "server_idle_timeout_ms", 600000);
        cl->server_lifetime_ms = jint(o, "server_lifetime_ms", 3600000);
        cl->client_login_timeout_ms = jint(o, "client_login_timeout_ms", 60000);
        cl->epoch = jint(o, "epoch", 1);
        json_t *bes = json_object_get(o, "backends");
        if (!json_is_array(bes) || json_array_size(bes) > PROXY_MAX_BACKENDS) {
            proxy_run_cfg_free(out);
            return dbp_err_set(err, DBP_EINVAL, "cluster %s: \"backends\" must be an array of at most %d",
                               cl->name, PROXY_MAX_BACKENDS);
        }
        for (size_t b = 0; b < json_array_size(bes); b++) {
            json_t *bo = json_array_get(bes, b);
            proxy_backend_t *be = &cl->backends[b];
            rc = copy_str(be->name, sizeof(be->name), jstr(bo, "name", "pg"), "backend name", err) |
                 copy_str(be->host, sizeof(be->host), jstr(bo, "host", "127.0.0.1"), "host", err) |
                 copy_str(be->sock_dir, sizeof(be->sock_dir), jstr(bo, "sock_dir", ""), "sock_dir", err);
            if (rc) {
                proxy_run_cfg_free(out);
                return DBP_EINVAL;
            }
            be->port = (int)jint(bo, "port", 5432);
            be->primary = jbool(bo, "primary", b == 0);
            be->healthy = jbool(bo, "healthy", true);
            cl->nbackends++;
        }
        json_t *us = json_object_get(o, "users");
        cl->users = &out->users[ui];
        for (size_t k = 0; k < json_array_size(us); k++) {
            json_t *uo = json_array_get(us, k);
            proxy_user_t *u = &out->users[ui++];
            if (copy_str(u->username, sizeof(u->username), jstr(uo, "username", ""), "username", err)) {
                proxy_run_cfg_free(out);
                return DBP_EINVAL;
            }
            u->password = jstr(uo, "password", "");
            u->scram_verifier = jstr(uo, "scram_verifier", NULL);
            u->max_connections = (int)jint(uo, "max_connections", -1);
            cl->nusers++;
        }
        json_t *ds = json_object_get(o, "databases");
        cl->databases = &out->databases[di];
        for (size_t k = 0; k < json_array_size(ds); k++) {
            json_t *dobj = json_array_get(ds, k);
            proxy_database_t *db = &out->databases[di++];
            if (copy_str(db->name, sizeof(db->name), jstr(dobj, "name", ""), "database name",
                         err)) {
                proxy_run_cfg_free(out);
                return DBP_EINVAL;
            }
            db->max_connections = (int)jint(dobj, "max_connections", -1);
            cl->ndatabases++;
        }
    }
    return 0;
}

static void print_stats(proxy_t *p)
{
    json_t *s = proxy_stats_json(p);
    if (!s)
        return;
    char *txt = json_dumps(s, JSON_COMPACT);
    if (txt) {
        printf("%s\n", txt);
        fflush(stdout);
        free(txt);
    }
    json_decref(s);
}

/* SIGUSR2, PgBouncer's PAUSE/RESUME for the standalone proxy: the first signal pauses every
 * cluster of the config file (waiting up to 10 s for running transactions; logged as
 * proxy_run_paused drained=yes|no), the next one reloads the file — a new topology, as a
 * switchover would push — and resumes. Returns the new paused state. */
static bool toggle_pause(proxy_t *p, const char *path, bool paused)
{
    proxy_run_cfg_t rc;
    dbp_err_t err = {0};
    if (proxy_run_cfg_load(path, &rc, &err) != 0) {
        dbp_error("proxy_pause_failed", "reason=%s", dbp_log_q(err.msg));
        return paused;
    }
    if (paused && proxy_update(p, &rc.cfg, &err) != 0)
        dbp_error("proxy_reload_failed", "reason=%s", dbp_log_q(err.msg));
    for (int i = 0; i < rc.cfg.nclusters; i++) {
        const proxy_cluster_t *c = &rc.cfg.clusters[i];
        dbp_err_t e2 = {0};
        if (paused) {
            if (proxy_resume(p, c->tenant, c->name, &e2) != 0)
                dbp_error("proxy_resume_failed", "cluster=%s reason=%s", c->name,
                          dbp_log_q(e2.msg));
            else
                dbp_info("proxy_run_resumed", "cluster=%s", c->name);
        } else {
            int rc2 = proxy_pause(p, c->tenant, c->name, 10000, &e2);
            dbp_info("proxy_run_paused", "cluster=%s drained=%s", c->name,
                     rc2 == 0 ? "yes" : "no");
        }
    }
    proxy_run_cfg_free(&rc);
    return !paused;
}

int proxy_run_main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        else {
            fprintf(stderr, "usage: dbplane proxy-run --config FILE.json\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: dbplane proxy-run --config FILE.json\n");
        return 2;
    }
    dbp_err_t err = {0};
    proxy_run_cfg_t rc;
    if (proxy_run_cfg_load(path, &rc, &err) != 0) {
        fprintf(stderr, "dbplane proxy-run: %s\n", err.msg);
        return 1;
    }
    const char *lvl = jstr(rc.doc, "log_level", NULL);
    if (lvl)
        dbp_log_set_level(strcmp(lvl, "debug") == 0  ? DBP_LOG_DEBUG
                          : strcmp(lvl, "warn") == 0 ? DBP_LOG_WARN
                          : strcmp(lvl, "error") == 0 ? DBP_LOG_ERROR
                                                      : DBP_LOG_INFO);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    bool paused = false;
    proxy_t *p = NULL;
    int st = proxy_start(&p, &rc.cfg, &err);
    proxy_run_cfg_free(&rc);
    if (st != 0) {
        fprintf(stderr, "dbplane proxy-run: %s\n", err.msg);
        return 1;
    }
    dbp_info("proxy_run_ready", "config=%s", dbp_log_q(path));
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) {
            print_stats(p);
        } else if (sig == SIGUSR2) {
            paused = toggle_pause(p, path, paused);
        } else if (sig == SIGHUP) {
            proxy_run_cfg_t nrc;
            dbp_err_t e2 = {0};
            if (proxy_run_cfg_load(path, &nrc, &e2) != 0) {
                dbp_error("proxy_reload_failed", "reason=%s", dbp_log_q(e2.msg));
                continue;
            }
            if (proxy_update(p, &nrc.cfg, &e2) != 0)
                dbp_error("proxy_reload_failed", "reason=%s", dbp_log_q(e2.msg));
            else
                dbp_info("proxy_reloaded", "config=%s", dbp_log_q(path));
            proxy_run_cfg_free(&nrc);
        } else {
            dbp_info("proxy_stopping", "signal=%d", sig);
            break;
        }
    }
    print_stats(p);
    proxy_stop(p);
    return 0;
}
