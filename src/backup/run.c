/*
 * run.c: the backup context (resources, stores, secrets and instances read from the data
 * dir's store), taking a backup run, and retention (see backup.h for the contract and
 * the object layout).
 *
 * A run, step by step: resolve the Cluster, the Backup (optional) and its BackupStore;
 * pick the source instance by the Backup's target; insert the catalog row ("running",
 * this pid); stream each part (physical: one tar of the data dir; logical: the globals
 * script and one dump per database) through stream.h into the store; write the manifest;
 * mark the row "complete". Any failure aborts the part being written (nothing left under
 * its key), deletes what the run already stored, and marks the row "failed" with the
 * reason and a BackupFailed event.
 */
#include "backup/backup_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/retention.h"
#include "common/log.h"
#include "control/reconcile.h"

/* ---- context ----------------------------------------------------------------------- */

static int load_cb(const store_resource_t *sr, void *ud)
{
    spec_set_t *set = ud;
    spec_diags_t diags;
    spec_diags_init(&diags);
    char name[300];
    snprintf(name, sizeof(name), "<store:%s/%s/%s>", sr->tenant, sr->kind, sr->name);
    if (spec_parse_buffer(set, name, sr->json, strlen(sr->json), &diags) != 0)
        dbp_warn("stored_resource_invalid", "tenant=%s kind=%s name=%s", sr->tenant, sr->kind,
                 sr->name);
    spec_diags_free(&diags);
    return 0;
}

int backup_ctx_open(backup_ctx_t **out, const char *data_dir, dbp_err_t *err)
{
    *out = NULL;
    backup_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    spec_set_init(&ctx->set);
    int rc = 0;
    char store_path[PATH_MAX + 16], key_path[PATH_MAX + 16];
    if (!realpath(data_dir, ctx->data_dir)) {
        rc = dbp_err_set(err, DBP_ENOENT, "data dir %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    snprintf(store_path, sizeof(store_path), "%s/state.db", ctx->data_dir);
    snprintf(key_path, sizeof(key_path), "%s/secret.key", ctx->data_dir);
    if (access(store_path, F_OK) != 0) {
        rc = dbp_err_set(err, DBP_ENOENT, "%s has no state.db: start the daemon with `dbplane "
                                          "up --data-dir %s` first",
                         ctx->data_dir, data_dir);
        goto fail;
    }
    if ((rc = dbp_runtime_dir(ctx->data_dir, ctx->run_dir, sizeof(ctx->run_dir), err)) ||
        (rc = dbp_runas_resolve(&ctx->runas, err)) ||
        (rc = store_open(&ctx->store, store_path, err)) ||
        (rc = store_catalog_guest(ctx->store, err)) ||
        (rc = secrets_open(&ctx->secrets, key_path, ctx->store, err)))
        goto fail;
    rc = store_list_resources(ctx->store, NULL, NULL, load_cb, &ctx->set, err);
    if (rc)
        goto fail;
    *out = ctx;
    return 0;
fail:
    backup_ctx_close(ctx);
    return rc;
}

void backup_ctx_close(backup_ctx_t *ctx)
{
    if (!ctx)
        return;
    for (int i = 0; i < ctx->ncreds; i++) {
        secrets_free_value(ctx->creds[i].admin);
        secrets_free_value(ctx->creds[i].repl);
    }
    secrets_close(ctx->secrets);
    store_close(ctx->store);
    spec_set_free(&ctx->set);
    free(ctx);
}

store_t *backup_ctx_store(backup_ctx_t *ctx)
{
    return ctx->store;
}

void backup_ctx_set_cancel(backup_ctx_t *ctx, volatile sig_atomic_t *flag)
{
    ctx->cancel = flag;
}

void backup_ctx_set_progress(backup_ctx_t *ctx, backup_progress_fn fn, void *ud)
{
    ctx->progress = fn;
    ctx->progress_ud = ud;
}

bool bk_cancelled(const backup_ctx_t *ctx)
{
    return ctx->cancel && *ctx->cancel;
}

void bk_progress(backup_ctx_t *ctx, const char *phase, int64_t raw, int64_t stored, bool force)
{
    if (!ctx->progress)
        return;
    int64_t now = dbp_now_ms();
    if (!force && now - ctx->progress_ms < 250)
        return;
    ctx->progress_ms = now;
    ctx->progress(ctx->progress_ud, phase, raw, stored);
}

void bk_event(backup_ctx_t *ctx, const char *tenant, const char *kind, const char *name,
              const char *type, const char *reason, const char *msg)
{
    dbp_err_t e;
    if (store_add_event(ctx->store, tenant, kind, name, type, reason, msg, &e) != 0)
        dbp_warn("event_write_failed", "error=%s", dbp_log_q(e.msg));
    dbp_log(strcmp(type, "Warning") == 0 ? DBP_LOG_WARN : DBP_LOG_INFO, "event",
            "tenant=%s kind=%s name=%s reason=%s message=%s", tenant, kind, name, reason,
            dbp_log_q(msg));
}

const spec_resource_t *bk_find(backup_ctx_t *ctx, spec_kind_t kind, const char *tenant,
                               const char *name)
{
    return spec_set_find(&ctx->set, kind, tenant, name);
}

int bk_secret(backup_ctx_t *ctx, const char *tenant, const spec_secret_ref_t *ref, char **value,
              dbp_err_t *err)
{
    int rc = secrets_get(ctx->secrets, tenant, ref->name.v, ref->key.v, value, err);
    if (rc)
        dbp_err_prefix(err, "secret %s key %s: ", ref->name.v ? ref->name.v : "?",
                       ref->key.v ? ref->key.v : "?");
    return rc;
}

int bk_backup_key(backup_ctx_t *ctx, const spec_resource_t *b, char **key, dbp_err_t *err)
{
    *key = NULL;
    if (!b || !b->u.backup.encryption_key.set)
        return 0;
    return bk_secret(ctx, b->tenant.v, &b->u.backup.encryption_key, key, err);
}

/* An integer from the environment within [lo, hi], or 0 when unset (test knobs). */
static long env_long(const char *name, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    long x = strtol(v, NULL, 10);
    return x < lo ? lo : x > hi ? hi : x;
}

int bk_open_store(backup_ctx_t *ctx, const char *tenant, const char *name, backup_store_t **out,
                  dbp_err_t *err)
{
    *out = NULL;
    const spec_resource_t *r = bk_find(ctx, SPEC_KIND_BACKUP_STORE, tenant, name);
    if (!r)
        return dbp_err_set(err, DBP_ENOENT, "BackupStore %s not found in tenant %s", name, tenant);
    const spec_backup_store_t *bs = &r->u.backup_store;
    backup_store_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.name, sizeof(cfg.name), "%s", name);
    char *ak = NULL, *sk = NULL;
    int rc = 0;
    if (!bs->is_s3) {
        cfg.kind = BACKUP_STORE_POSIX;
        const char *p = bs->posix_path.v ? bs->posix_path.v : "";
        if (p[0] == '/')
            snprintf(cfg.posix_path, sizeof(cfg.posix_path), "%s", p);
        else
            snprintf(cfg.posix_path, sizeof(cfg.posix_path), "%s/%s", ctx->data_dir,
                     strncmp(p, "./", 2) == 0 ? p + 2 : p);
    } else {
        cfg.kind = BACKUP_STORE_S3;
        snprintf(cfg.endpoint, sizeof(cfg.endpoint), "%s", bs->s3_endpoint.v ? bs->s3_endpoint.v : "");
        snprintf(cfg.bucket, sizeof(cfg.bucket), "%s", bs->s3_bucket.v ? bs->s3_bucket.v : "");
        snprintf(cfg.prefix, sizeof(cfg.prefix), "%s", bs->s3_prefix.v ? bs->s3_prefix.v : "");
        snprintf(cfg.region, sizeof(cfg.region), "%s", bs->s3_region.v ? bs->s3_region.v : "");
        cfg.path_style = bs->s3_force_path_style.set ? bs->s3_force_path_style.v : true;
        if ((rc = bk_secret(ctx, tenant, &bs->s3_access_key_id, &ak, err)) ||
            (rc = bk_secret(ctx, tenant, &bs->s3_secret_access_key, &sk, err)))
            goto out;
        cfg.access_key = ak;
        cfg.secret_key = sk;
        cfg.max_attempts = (int)env_long("DBPLANE_S3_MAX_ATTEMPTS", 1, 100);
        cfg.retry_base_ms = (int)env_long("DBPLANE_S3_RETRY_BASE_MS", 1, 60000);
        cfg.part_size = (size_t)env_long("DBPLANE_S3_PART_SIZE", 5L << 20, 512L << 20);
    }
    rc = backup_store_open(out, &cfg, err);
out:
    secrets_free_value(ak);
    secrets_free_value(sk);
    if (rc)
        dbp_err_prefix(err, "BackupStore %s: ", name);
    return rc;
}

typedef struct inst_list {
    store_instance_t *recs;
    int n;
} inst_list_t;

static int inst_cb(const store_instance_t *in, void *ud)
{
    inst_list_t *l = ud;
    if (l->n < BK_MAX_INSTANCES)
        l->recs[l->n++] = *in;
    return 0;
}

int bk_instances(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                 store_instance_t *recs, int *n, char primary[96], dbp_err_t *err)
{
    inst_list_t l = {recs, 0};
    int rc = store_list_instances(ctx->store, tenant, cluster, inst_cb, &l, err);
    if (rc)
        return rc;
    *n = l.n;
    int64_t epoch = 0;
    return store_get_topology(ctx->store, tenant, cluster, &epoch, primary, err);
}

void bk_fill_instance(backup_ctx_t *ctx, const spec_resource_t *c, const store_instance_t *rec,
                      engine_instance_t *in)
{
    ctl_instance_layout(in, ctx->data_dir, ctx->run_dir, c, rec, &ctx->runas);
    bk_instance_creds(ctx, c->tenant.v, c->name.v, in);
}

void bk_instance_creds(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                       engine_instance_t *in)
{
    struct bk_creds *cr = NULL;
    for (int i = 0; i < ctx->ncreds && !cr; i++)
        if (strcmp(ctx->creds[i].tenant, tenant) == 0 &&
            strcmp(ctx->creds[i].cluster, cluster) == 0)
            cr = &ctx->creds[i];
    if (!cr && ctx->ncreds < (int)(sizeof(ctx->creds) / sizeof(ctx->creds[0]))) {
        cr = &ctx->creds[ctx->ncreds++];
        snprintf(cr->tenant, sizeof(cr->tenant), "%s", tenant);
        snprintf(cr->cluster, sizeof(cr->cluster), "%s", cluster);
        char secret[128];
        snprintf(secret, sizeof(secret), "dbplane-internal-%s", cluster);
        dbp_err_t e;
        if (secrets_get(ctx->secrets, tenant, secret, "admin", &cr->admin, &e) != 0)
            cr->admin = NULL;
        if (secrets_get(ctx->secrets, tenant, secret, "replication", &cr->repl, &e) != 0)
            cr->repl = NULL;
    }
    in->admin_password = cr ? cr->admin : NULL;
    in->repl_password = cr ? cr->repl : NULL;
}

int bk_primary(backup_ctx_t *ctx, const spec_resource_t *c, engine_instance_t *in,
               dbp_err_t *err)
{
    store_instance_t recs[BK_MAX_INSTANCES];
    int n = 0;
    char primary[96] = "";
    int rc = bk_instances(ctx, c->tenant.v, c->name.v, recs, &n, primary, err);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        if (strcmp(recs[i].name, primary) == 0 && strcmp(recs[i].state, "running") == 0) {
            bk_fill_instance(ctx, c, &recs[i], in);
            return 0;
        }
    }
    return dbp_err_set(err, DBP_EBUSY, "cluster %s has no running primary", c->name.v);
}

int bk_load_manifest(backup_store_t *s, const char *dir, backup_manifest_t *m, dbp_err_t *err)
{
    char key[700];
    snprintf(key, sizeof(key), "%s/manifest.json", dir);
    char *buf = NULL;
    size_t len = 0;
    int rc = backup_store_get(s, key, BACKUP_MANIFEST_MAX_BYTES, &buf, &len, err);
    if (rc)
        return rc;
    rc = backup_manifest_parse(buf, len, m, err);
    free(buf);
    return rc;
}

/* ---- taking a backup --------------------------------------------------------------- */

/* What one part's producer needs. */
typedef struct part_job {
    backup_ctx_t *ctx;
    const engine_ops_t *ops;
    const engine_instance_t *in;
    bool physical;
    const char *database; /* logical: NULL = globals */
    engine_backup_info_t info;
    backup_wstream_t *ws;
    int64_t raw_base, stored_base; /* totals of earlier parts, for progress */
    bool quiet;                    /* no progress reports (a part run in a side thread) */
} part_job_t;

static int part_write_cb(void *ud, const void *buf, size_t len, dbp_err_t *err)
{
    part_job_t *j = ud;
    if (bk_cancelled(j->ctx))
        return dbp_err_set(err, DBP_EIO, "interrupted");
    int rc = backup_wstream_write(j->ws, buf, len, err);
    if (rc)
        return rc;
    if (j->quiet)
        return 0;
    int64_t raw = 0, stored = 0;
    backup_wstream_progress(j->ws, &raw, &stored);
    bk_progress(j->ctx, "backup", j->raw_base + raw, j->stored_base + stored, false);
    return 0;
}

/* Streams one part into `key`; fills *st on success. Nothing stays under key on error. */
static int run_part(part_job_t *j, backup_store_t *bs, const char *key,
                    const backup_codec_opts_t *co, backup_part_stat_t *st, dbp_err_t *err)
{
    backup_obj_writer_t *w;
    int rc = backup_obj_create(bs, key, &w, err);
    if (rc)
        return rc;
    if ((rc = backup_wstream_open(&j->ws, w, co, err)))
        return rc;
    if (j->physical)
        rc = j->ops->backup_physical(j->in, &j->info, part_write_cb, j, err);
    else
        rc = j->ops->backup_logical(j->in, j->database, &j->info, part_write_cb, j, err);
    if (rc) {
        backup_wstream_abort(j->ws);
        j->ws = NULL;
        return rc;
    }
    rc = backup_wstream_finish(j->ws, st, err);
    j->ws = NULL;
    if (!rc && !j->quiet) {
        j->raw_base += st->raw_bytes;
        j->stored_base += st->bytes;
        bk_progress(j->ctx, "backup", j->raw_base, j->stored_base, true);
    }
    return rc;
}

/* The table counts of a run's inventory, read by a side thread while the backup tool
 * runs: the source is picked with an ENGINE_INV_NAMES inventory (one connection, no
 * per-table work), so the tool starts without waiting for the counts, which only the
 * manifest needs (verification compares them). */
typedef struct count_job {
    const engine_ops_t *ops;
    const engine_instance_t *in;
    engine_inventory_t inv; /* out: the ENGINE_INV_COUNT inventory */
    dbp_err_t err;
    int rc;
} count_job_t;

static void *count_main(void *ud)
{
    count_job_t *cj = ud;
    cj->rc = cj->ops->inventory(cj->in, ENGINE_INV_COUNT, &cj->inv, &cj->err);
    if (cj->rc)
        dbp_err_prefix(&cj->err, "inventory of %s: ", cj->in->name);
    return NULL;
}

/* Whether an inventory left table counts out (ENGINE_INV_NAMES). */
static bool inv_needs_counts(const engine_inventory_t *inv)
{
    for (int i = 0; i < inv->ndb; i++)
        if (inv->dbs[i].tables < 0)
            return true;
    return false;
}

/* The counted tables of database `name` (0 when the count did not see it: dropped
 * during the backup). */
static int64_t inv_tables(const engine_inventory_t *inv, const char *name)
{
    for (int i = 0; i < inv->ndb; i++)
        if (strcmp(inv->dbs[i].name, name) == 0)
            return inv->dbs[i].tables < 0 ? 0 : inv->dbs[i].tables;
    return 0;
}

/* A part streamed by a side thread while the main thread streams the others: the
 * logical run's cluster-wide objects (a short tool run, mostly process start-up and
 * connection latency) overlap the first database dump instead of preceding it. The
 * thread has its own store handle (an S3 store's curl handle is not shared) and its own
 * engine info; it touches neither the catalog nor the progress display. */
typedef struct side_part {
    part_job_t job;
    backup_store_t *bs; /* owned by the caller */
    char key[700];
    const backup_codec_opts_t *co;
    backup_part_stat_t st;
    dbp_err_t err;
    int rc;
    count_job_t *count; /* when set, the table counts are read after the part */
} side_part_t;

static void *side_part_main(void *ud)
{
    side_part_t *s = ud;
    s->rc = run_part(&s->job, s->bs, s->key, s->co, &s->st, &s->err);
    if (s->count)
        count_main(s->count);
    return NULL;
}

/* Chooses the source instance by target; fills *in and the inventory. */
static int pick_source(backup_ctx_t *ctx, const spec_resource_t *c, int target,
                       const engine_ops_t *ops, engine_instance_t *in, engine_inventory_t *inv,
                       dbp_err_t *err)
{
    store_instance_t recs[BK_MAX_INSTANCES];
    int n = 0;
    char primary[96] = "";
    int rc = bk_instances(ctx, c->tenant.v, c->name.v, recs, &n, primary, err);
    if (rc)
        return rc;
    /* Candidates in order of preference: replicas first unless the target says primary. */
    int order[BK_MAX_INSTANCES], k = 0;
    if (target != SPEC_BACKUP_TARGET_PRIMARY)
        for (int i = 0; i < n; i++)
            if (strcmp(recs[i].name, primary) != 0 && strcmp(recs[i].state, "running") == 0)
                order[k++] = i;
    if (target != SPEC_BACKUP_TARGET_REPLICA)
        for (int i = 0; i < n; i++)
            if (strcmp(recs[i].name, primary) == 0 && strcmp(recs[i].state, "running") == 0)
                order[k++] = i;
    dbp_err_t last;
    snprintf(last.msg, sizeof(last.msg), "no running instance matches the target");
    for (int i = 0; i < k; i++) {
        bk_fill_instance(ctx, c, &recs[order[i]], in);
        if (ops->inventory(in, ENGINE_INV_NAMES, inv, &last) == 0) {
            if (i > 0 || strcmp(recs[order[i]].name, primary) == 0)
                dbp_info("backup_source", "cluster=%s instance=%s role=%s", c->name.v, in->name,
                         strcmp(recs[order[i]].name, primary) == 0 ? "primary" : "replica");
            return 0;
        }
        dbp_warn("backup_source_unavailable", "cluster=%s instance=%s error=%s", c->name.v,
                 in->name, dbp_log_q(last.msg));
    }
    return dbp_err_set(err, DBP_EBUSY, "cluster %s: no instance to back up from (%s)", c->name.v,
                       last.msg);
}

/* Finds the tenant's only BackupStore (for ad hoc runs without --store). */
static const char *only_store(backup_ctx_t *ctx, const char *tenant)
{
    const char *found = NULL;
    for (size_t i = 0; i < ctx->set.n; i++) {
        const spec_resource_t *r = ctx->set.items[i];
        if (r->kind != SPEC_KIND_BACKUP_STORE || strcmp(r->tenant.v, tenant) != 0)
            continue;
        if (found)
            return NULL;
        found = r->name.v;
    }
    return found;
}

/* A run id unique in the catalog: "<cluster>-<yyyymmddThhmmssZ>-<type>[-N]". */
static int make_run_id(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                       const char *type, int64_t now_ms, char *id, size_t cap, dbp_err_t *err)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    for (int k = 1; k < 100; k++) {
        if (k == 1)
            snprintf(id, cap, "%s-%s-%s", cluster, ts, type);
        else
            snprintf(id, cap, "%s-%s-%s-%d", cluster, ts, type, k);
        store_backup_t existing;
        dbp_err_t e;
        int rc = store_backup_get(ctx->store, tenant, id, &existing, &e);
        if (rc == DBP_ENOENT)
            return 0;
        if (rc)
            return dbp_err_set(err, rc, "%s", e.msg);
    }
    return dbp_err_set(err, DBP_EBUSY, "too many runs of %s in one second", cluster);
}

/* Removes whatever a failed run stored (best effort). */
static void discard_run(backup_store_t *bs, const char *dir)
{
    if (!bs)
        return;
    dbp_err_t e;
    int deleted = 0;
    if (backup_store_delete_dir(bs, dir, &deleted, &e) != 0)
        dbp_warn("backup_cleanup_failed", "dir=%s error=%s", dbp_log_q(dir), dbp_log_q(e.msg));
}

int backup_run(backup_ctx_t *ctx, const backup_run_opts_t *o, store_backup_t *out,
               dbp_err_t *err)
{
    const char *tenant = o->tenant ? o->tenant : "default";
    dbp_err_t ignore;
    if (store_catalog_reap_dead(ctx->store, NULL, &ignore) != 0)
        dbp_warn("catalog_reap_failed", "error=%s", dbp_log_q(ignore.msg));
    const spec_resource_t *c = bk_find(ctx, SPEC_KIND_CLUSTER, tenant, o->cluster);
    if (!c)
        return dbp_err_set(err, DBP_ENOENT, "cluster %s not found in tenant %s", o->cluster,
                           tenant);
    const spec_resource_t *b = NULL;
    if (o->backup) {
        b = bk_find(ctx, SPEC_KIND_BACKUP, tenant, o->backup);
        if (!b)
            return dbp_err_set(err, DBP_ENOENT, "Backup %s not found in tenant %s", o->backup,
                               tenant);
        if (strcmp(b->u.backup.cluster.v, o->cluster) != 0)
            return dbp_err_set(err, DBP_EINVAL, "Backup %s is of cluster %s, not %s", o->backup,
                               b->u.backup.cluster.v, o->cluster);
    }
    const engine_ops_t *ops = engine_lookup((spec_engine_t)c->u.cluster.engine);
    int type = o->type >= 0 ? o->type : b ? b->u.backup.type : SPEC_BACKUP_LOGICAL;
    bool physical = type == SPEC_BACKUP_PHYSICAL;
    if (!ops || !ops->inventory || (physical ? !ops->backup_physical : !ops->backup_logical))
        return dbp_err_set(err, DBP_EUNSUPPORTED, "%s backups of %s clusters are not supported",
                           physical ? "physical" : "logical",
                           spec_engine_str((spec_engine_t)c->u.cluster.engine));
    const char *store_name = o->store ? o->store : b ? b->u.backup.store.v : only_store(ctx, tenant);
    if (!store_name)
        return dbp_err_set(err, DBP_EINVAL, "give --store NAME or --backup NAME: tenant %s has "
                                            "no single BackupStore",
                           tenant);
    backup_codec_opts_t co = {.codec = b ? (backup_codec_t)b->u.backup.compression
                                         : BACKUP_CODEC_ZSTD};
    long lvl = env_long("DBPLANE_BACKUP_ZSTD_LEVEL", 1, 19);
    if (lvl && co.codec == BACKUP_CODEC_ZSTD)
        co.level = (int)lvl;
    else if (!physical && co.codec == BACKUP_CODEC_ZSTD && ops->logical_zstd_level)
        co.level = ops->logical_zstd_level;
    /* zstd worker threads (bench knob): -1 = compress inline; unset = two (stream.c). */
    co.workers = (int)env_long("DBPLANE_BACKUP_ZSTD_WORKERS", -1, 4);
    int verify = o->verify >= 0 ? o->verify : b ? b->u.backup.verify.v : 0;
    int target = b ? b->u.backup.target : SPEC_BACKUP_TARGET_PREFER_REPLICA;

    backup_store_t *bs = NULL;
    char *key = NULL;
    int rc = bk_open_store(ctx, tenant, store_name, &bs, err);
    if (!rc)
        rc = bk_backup_key(ctx, b, &key, err);
    if (rc) {
        backup_store_close(bs);
        return rc;
    }
    co.key = key;
    co.key_len = key ? strlen(key) : 0;

    store_backup_t row;
    memset(&row, 0, sizeof(row));
    int64_t started = dbp_wall_ms();
    snprintf(row.tenant, sizeof(row.tenant), "%s", tenant);
    snprintf(row.cluster, sizeof(row.cluster), "%s", o->cluster);
    snprintf(row.backup, sizeof(row.backup), "%s", b ? b->name.v : "");
    snprintf(row.type, sizeof(row.type), "%s", physical ? "physical" : "logical");
    snprintf(row.store, sizeof(row.store), "%s", store_name);
    snprintf(row.status, sizeof(row.status), "running");
    snprintf(row.engine, sizeof(row.engine), "%s", ops->name);
    row.started_ms = started;
    row.pid = getpid();
    engine_instance_t in;
    engine_inventory_t inv;
    backup_manifest_t *m = calloc(1, sizeof(*m));
    count_job_t *cj = NULL; /* the table counts read while the tool runs */
    char *manifest = NULL;
    const char *ev_name = b ? b->name.v : o->cluster;
    if (!m) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = make_run_id(ctx, tenant, o->cluster, row.type, started, row.id, sizeof(row.id), err)))
        goto done;
    const char *prefix = b && b->u.backup.prefix.v && *b->u.backup.prefix.v ? b->u.backup.prefix.v
                                                                             : NULL;
    snprintf(row.path, sizeof(row.path), "%s%s%s/%s/%s", prefix ? prefix : "", prefix ? "/" : "",
             tenant, o->cluster, row.id);
    if (!backup_key_valid(row.path)) {
        rc = dbp_err_set(err, DBP_EINVAL, "backup path '%s' is not a valid object key", row.path);
        goto done;
    }
    if ((rc = pick_source(ctx, c, target, ops, &in, &inv, err)))
        goto done;
    snprintf(row.source, sizeof(row.source), "%s", in.name);
    if ((rc = store_backup_put(ctx->store, &row, err)))
        goto done;
    dbp_info("backup_started", "tenant=%s cluster=%s id=%s type=%s source=%s store=%s", tenant,
             o->cluster, row.id, row.type, in.name, dbp_log_q(backup_store_describe(bs)));

    snprintf(m->id, sizeof(m->id), "%s", row.id);
    snprintf(m->tenant, sizeof(m->tenant), "%s", tenant);
    snprintf(m->cluster, sizeof(m->cluster), "%s", o->cluster);
    snprintf(m->backup, sizeof(m->backup), "%s", row.backup);
    snprintf(m->engine, sizeof(m->engine), "%s", ops->name);
    snprintf(m->type, sizeof(m->type), "%s", row.type);
    snprintf(m->source, sizeof(m->source), "%s", in.name);
    snprintf(m->compression, sizeof(m->compression), "%s", backup_codec_str(co.codec));
    m->encrypted = key != NULL;
    m->started_ms = started;

    part_job_t job = {.ctx = ctx, .ops = ops, .in = &in, .physical = physical};
    /* The inventory just read the version (and, PG, the current LSN): an engine may
     * skip asking again; the LSN bounds every part of a logical run. */
    snprintf(job.info.version, sizeof(job.info.version), "%s", inv.version);
    if (!physical)
        snprintf(job.info.start_position, sizeof(job.info.start_position), "%s", inv.position);
    /* Table counts the source's inventory left out: read while the tool runs (a thread
     * of their own for a physical run, after the globals part for a logical one). */
    if (inv_needs_counts(&inv)) {
        cj = calloc(1, sizeof(*cj));
        if (!cj) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            goto done;
        }
        cj->ops = ops;
        cj->in = &in;
    }
    const char *enc = key ? ".enc" : "";
    if (physical) {
        backup_part_t *p = &m->parts[m->nparts];
        snprintf(p->name, sizeof(p->name), "%s%s%s",
                 ops->physical_part ? ops->physical_part : "data.tar",
                 backup_codec_suffix(co.codec), enc);
        snprintf(p->kind, sizeof(p->kind), "data");
        char okey[700];
        snprintf(okey, sizeof(okey), "%s/%s", row.path, p->name);
        pthread_t ctid;
        bool counting = cj && pthread_create(&ctid, NULL, count_main, cj) == 0;
        if (cj && !counting)
            count_main(cj); /* no thread: before the tool */
        backup_part_stat_t st;
        rc = run_part(&job, bs, okey, &co, &st, err);
        if (counting)
            pthread_join(ctid, NULL);
        if (!rc && cj && cj->rc) {
            rc = cj->rc;
            if (err)
                *err = cj->err;
        }
        if (rc)
            goto done;
        p->bytes = st.bytes;
        p->raw_bytes = st.raw_bytes;
        snprintf(p->sha256, sizeof(p->sha256), "%s", st.sha256);
        m->nparts++;
        const engine_inventory_t *counted = cj ? &cj->inv : &inv;
        for (int i = 0; i < counted->ndb && m->ndbs < 64; i++) {
            snprintf(m->dbs[m->ndbs].name, sizeof(m->dbs[0].name), "%s", counted->dbs[i].name);
            m->dbs[m->ndbs++].tables = counted->dbs[i].tables;
        }
    } else {
        /* Part 0: the cluster-wide objects, streamed by a side thread (own store handle)
         * while this thread streams each database in turn (parts 1..n); joined before
         * anything else happens, so a failure of either fails the run. */
        const spec_strlist_t *want = b ? &b->u.backup.databases : NULL;
        side_part_t *side = calloc(1, sizeof(*side));
        if (!side) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            goto done;
        }
        backup_part_t *gp = &m->parts[m->nparts++];
        snprintf(gp->name, sizeof(gp->name), "globals.sql%s%s", backup_codec_suffix(co.codec), enc);
        snprintf(gp->kind, sizeof(gp->kind), "globals");
        side->job = (part_job_t){.ctx = ctx, .ops = ops, .in = &in, .quiet = true};
        side->job.info = job.info;
        side->co = &co;
        side->count = cj;
        snprintf(side->key, sizeof(side->key), "%s/%s", row.path, gp->name);
        pthread_t tid;
        bool threaded = false;
        rc = bk_open_store(ctx, tenant, store_name, &side->bs, err);
        if (!rc && pthread_create(&tid, NULL, side_part_main, side) == 0)
            threaded = true;
        else if (!rc)
            side_part_main(side); /* no thread: in turn */
        for (int i = 0; !rc && i < inv.ndb; i++) {
            const char *db = inv.dbs[i].name;
            bool listed = !want || want->n == 0;
            if (listed && strcmp(db, "postgres") == 0)
                continue; /* the maintenance database, unless asked for by name */
            for (size_t k = 0; want && k < want->n; k++)
                if (strcmp(want->v[k], db) == 0)
                    listed = true;
            if (!listed)
                continue;
            if (m->nparts == BACKUP_MANIFEST_MAX_PARTS) {
                rc = dbp_err_set(err, DBP_EINVAL, "too many databases");
                break;
            }
            backup_part_t *p = &m->parts[m->nparts];
            snprintf(p->name, sizeof(p->name), "db-%d%s%s%s", m->nparts - 1,
                     ops->logical_ext ? ops->logical_ext : ".dump",
                     backup_codec_suffix(co.codec), enc);
            snprintf(p->kind, sizeof(p->kind), "database");
            snprintf(p->database, sizeof(p->database), "%s", db);
            char okey[700];
            snprintf(okey, sizeof(okey), "%s/%s", row.path, p->name);
            job.database = db;
            backup_part_stat_t st;
            if ((rc = run_part(&job, bs, okey, &co, &st, err)))
                break;
            p->bytes = st.bytes;
            p->raw_bytes = st.raw_bytes;
            snprintf(p->sha256, sizeof(p->sha256), "%s", st.sha256);
            m->nparts++;
            if (m->ndbs < 64) {
                snprintf(m->dbs[m->ndbs].name, sizeof(m->dbs[0].name), "%s", db);
                m->dbs[m->ndbs++].tables = inv.dbs[i].tables;
            }
        }
        if (threaded)
            pthread_join(tid, NULL);
        backup_store_close(side->bs);
        if (!rc && side->rc) {
            rc = side->rc;
            if (err)
                *err = side->err;
        }
        if (!rc && cj && cj->rc) {
            rc = cj->rc;
            if (err)
                *err = cj->err;
        }
        for (int i = 0; !rc && cj && i < m->ndbs; i++)
            m->dbs[i].tables = inv_tables(&cj->inv, m->dbs[i].name);
        if (!rc) {
            gp->bytes = side->st.bytes;
            gp->raw_bytes = side->st.raw_bytes;
            snprintf(gp->sha256, sizeof(gp->sha256), "%s", side->st.sha256);
            if (!job.info.version[0]) /* no database dumped: the globals' source info */
                job.info = side->job.info;
        }
        free(side);
        if (rc)
            goto done;
    }
    snprintf(m->engine_version, sizeof(m->engine_version), "%s", job.info.version);
    snprintf(m->start_position, sizeof(m->start_position), "%s", job.info.start_position);
    snprintf(m->end_position, sizeof(m->end_position), "%s", job.info.end_position);
    snprintf(m->timeline, sizeof(m->timeline), "%s", job.info.timeline);
    m->finished_ms = dbp_wall_ms();
    if (bk_cancelled(ctx)) {
        rc = dbp_err_set(err, DBP_EIO, "interrupted");
        goto done;
    }
    /* The manifest is written last: only now does the run claim to be complete. */
    manifest = backup_manifest_dump(m);
    if (!manifest) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto done;
    }
    char mkey[700];
    snprintf(mkey, sizeof(mkey), "%s/manifest.json", row.path);
    if ((rc = backup_store_put(bs, mkey, manifest, strlen(manifest), err)))
        goto done;
    snprintf(row.status, sizeof(row.status), "complete");
    snprintf(row.engine_version, sizeof(row.engine_version), "%s", m->engine_version);
    snprintf(row.position, sizeof(row.position), "%s", m->start_position);
    for (int i = 0; i < m->nparts; i++) {
        row.bytes += m->parts[i].bytes;
        row.raw_bytes += m->parts[i].raw_bytes;
    }
    row.finished_ms = m->finished_ms;
    row.pid = 0;
    if ((rc = store_backup_put(ctx->store, &row, err)))
        goto done;
    char msg[300];
    snprintf(msg, sizeof(msg), "%s backup %s of %s complete: %lld bytes stored from %s in %.1f s",
             row.type, row.id, o->cluster, (long long)row.bytes, row.source,
             (double)(row.finished_ms - row.started_ms) / 1000.0);
    bk_event(ctx, tenant, "Backup", ev_name, "Normal", "BackupCompleted", msg);
done:
    if (rc && row.id[0]) {
        discard_run(bs, row.path);
        snprintf(row.status, sizeof(row.status), "failed");
        snprintf(row.message, sizeof(row.message), "%s", err ? err->msg : "failed");
        row.finished_ms = dbp_wall_ms();
        row.pid = 0;
        dbp_err_t e2;
        if (row.source[0] && store_backup_put(ctx->store, &row, &e2) != 0)
            dbp_warn("catalog_write_failed", "error=%s", dbp_log_q(e2.msg));
        char fmsg[700];
        snprintf(fmsg, sizeof(fmsg), "backup %s of %s failed: %s", row.id, o->cluster,
                 row.message);
        bk_event(ctx, tenant, "Backup", ev_name, "Warning", "BackupFailed", fmsg);
    }
    free(manifest);
    free(cj);
    free(m);
    secrets_free_value(key);
    backup_store_close(bs);
    if (out)
        *out = row;
    if (rc)
        return rc;
    if (verify) {
        rc = backup_verify(ctx, tenant, row.id, err);
        if (store_backup_get(ctx->store, tenant, row.id, &row, &ignore) == 0 && out)
            *out = row;
    }
    if (o->retention && b) {
        int deleted = 0;
        if (backup_apply_retention(ctx, tenant, b->name.v, &deleted, &ignore) != 0)
            dbp_warn("retention_failed", "backup=%s error=%s", b->name.v, dbp_log_q(ignore.msg));
    }
    return rc;
}

int bk_safety_backup(backup_ctx_t *ctx, const spec_resource_t *c, const char *backup,
                     const char *store_name, store_backup_t *out, dbp_err_t *err)
{
    /* Under the restored run's Backup when it belongs to this cluster, so its encryption
     * and prefix apply; ad hoc otherwise. */
    const spec_resource_t *b = backup && *backup ? bk_find(ctx, SPEC_KIND_BACKUP, c->tenant.v,
                                                           backup)
                                                 : NULL;
    if (b && strcmp(b->u.backup.cluster.v, c->name.v) != 0)
        b = NULL;
    backup_run_opts_t o = {.tenant = c->tenant.v, .cluster = c->name.v,
                           .backup = b ? b->name.v : NULL, .type = SPEC_BACKUP_LOGICAL,
                           .store = store_name, .verify = 0};
    return backup_run(ctx, &o, out, err);
}

/* ---- retention --------------------------------------------------------------------- */

typedef struct ret_rows {
    const char *backup;
    store_backup_t *rows;
    size_t n, cap;
} ret_rows_t;

static int ret_cb(const store_backup_t *b, void *ud)
{
    ret_rows_t *r = ud;
    if (strcmp(b->backup, r->backup) != 0)
        return 0;
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 32;
        store_backup_t *nr = realloc(r->rows, ncap * sizeof(*nr));
        if (!nr)
            return DBP_ENOMEM;
        r->rows = nr;
        r->cap = ncap;
    }
    r->rows[r->n++] = *b;
    return 0;
}

/* After the runs of pitr Backup b were expired: deletes the archived WAL older than the
 * start of the oldest complete physical run left, the start of the point-in-time window.
 * Nothing when no complete run is left. */
static int expire_wal(backup_ctx_t *ctx, const spec_resource_t *b, const store_backup_t *rows,
                      const backup_retention_item_t *items, size_t n, dbp_err_t *err)
{
    const store_backup_t *anchor = NULL;
    for (size_t i = 0; i < n; i++)
        if (!items[i].remove && strcmp(rows[i].status, "complete") == 0 &&
            strcmp(rows[i].type, "physical") == 0 &&
            (!anchor || rows[i].started_ms < anchor->started_ms))
            anchor = &rows[i];
    if (!anchor)
        return 0;
    backup_store_t *bs = NULL;
    int rc = bk_open_store(ctx, b->tenant.v, b->u.backup.store.v, &bs, err);
    int deleted = 0;
    if (!rc)
        rc = bk_wal_expire(ctx, b, bs, anchor->position, &deleted, err);
    backup_store_close(bs);
    if (!rc && deleted) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%d archived WAL file(s) before run %s (%s) removed by "
                                   "retention",
                 deleted, anchor->id, anchor->position);
        bk_event(ctx, b->tenant.v, "Backup", b->name.v, "Normal", "WalExpired", msg);
    }
    return rc;
}

int backup_apply_retention(backup_ctx_t *ctx, const char *tenant, const char *backup,
                           int *deleted, dbp_err_t *err)
{
    if (deleted)
        *deleted = 0;
    const spec_resource_t *b = bk_find(ctx, SPEC_KIND_BACKUP, tenant, backup);
    if (!b)
        return dbp_err_set(err, DBP_ENOENT, "Backup %s not found in tenant %s", backup, tenant);
    dbp_err_t ignore;
    if (store_catalog_reap_dead(ctx->store, NULL, &ignore) != 0)
        dbp_warn("catalog_reap_failed", "error=%s", dbp_log_q(ignore.msg));
    ret_rows_t rr = {.backup = backup};
    int rc = store_backup_list(ctx->store, tenant, b->u.backup.cluster.v, ret_cb, &rr, err);
    if (rc == DBP_ENOMEM)
        rc = dbp_err_set(err, rc, "out of memory");
    backup_retention_item_t *items = rr.n ? calloc(rr.n, sizeof(*items)) : NULL;
    if (!rc && rr.n && !items)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if (rc || rr.n == 0) {
        free(rr.rows);
        free(items);
        return rc;
    }
    for (size_t i = 0; i < rr.n; i++) {
        items[i].started_ms = rr.rows[i].started_ms;
        items[i].finished_ms = rr.rows[i].finished_ms;
        items[i].state = strcmp(rr.rows[i].status, "complete") == 0 ? BACKUP_RUN_COMPLETE
                         : strcmp(rr.rows[i].status, "failed") == 0 ? BACKUP_RUN_FAILED
                                                                     : BACKUP_RUN_RUNNING;
    }
    backup_retention_policy_t pol = {
        .max_age_ms = b->u.backup.retention.set ? b->u.backup.retention.ms : 0,
        .max_count = b->u.backup.retention_count.set ? b->u.backup.retention_count.v : 0,
        .pitr = b->u.backup.pitr.v,
    };
    backup_retention_select(items, rr.n, &pol, dbp_wall_ms());
    backup_store_t *bs = NULL;
    char bs_name[64] = "";
    for (size_t i = 0; i < rr.n && rc == 0; i++) {
        if (!items[i].remove)
            continue;
        const store_backup_t *row = &rr.rows[i];
        if (!bs || strcmp(bs_name, row->store) != 0) {
            backup_store_close(bs);
            bs = NULL;
            if ((rc = bk_open_store(ctx, tenant, row->store, &bs, err)))
                break;
            snprintf(bs_name, sizeof(bs_name), "%s", row->store);
        }
        int n = 0;
        if ((rc = backup_store_delete_dir(bs, row->path, &n, err)))
            break;
        if ((rc = store_backup_delete(ctx->store, tenant, row->id, err)))
            break;
        if (deleted)
            (*deleted)++;
        char msg[300];
        snprintf(msg, sizeof(msg), "%s run %s removed by retention (%d objects)", row->status,
                 row->id, n);
        bk_event(ctx, tenant, "Backup", backup, "Normal", "BackupExpired", msg);
    }
    if (rc == 0 && b->u.backup.pitr.v)
        rc = expire_wal(ctx, b, rr.rows, items, rr.n, err);
    backup_store_close(bs);
    free(rr.rows);
    free(items);
    return rc;
}
