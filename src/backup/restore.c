/*
 * restore.c: verification and restore of backup runs (see backup.h).
 *
 * Both start the same way: find the run (catalog row or a run directory in a store),
 * load its manifest, and read every part once to compare its size and SHA-256 with the
 * manifest before anything is created, replaced or started. Only then is each part
 * streamed through stream.h (which checks the hash again, plus encryption and
 * compression integrity, while decoding) into the engine's restore operation.
 *
 * Verification restores into a scratch instance under <data dir>/scratch/<run id>/ on a
 * free port in 30000..30999 (outside the reconciler's range; the scan starts in a block
 * chosen by the data dir, and a server whose port another daemon's took meanwhile is
 * started again on another), starts the server with the
 * engine driver's own configuration, reads every table of every database (sequential
 * scans: PostgreSQL verifies each page's checksum) and compares table counts with the
 * manifest. The scratch instance is always stopped and removed afterwards.
 */
#include "backup/backup_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/port.h"
#include "common/pipe.h"

#define SCRATCH_PORT_FIRST 30000
#define SCRATCH_PORT_LAST 30999
#define SCRATCH_START_ATTEMPTS 3 /* starts of a scratch server whose port was taken */
#define SCRATCH_START_TIMEOUT_MS (10 * 60 * 1000)

/* ---- reading parts ------------------------------------------------------------------- */

typedef struct read_job {
    backup_ctx_t *ctx;
    backup_rstream_t *rs;
    const char *phase;
    int64_t raw_base;
} read_job_t;

static long part_read_cb(void *ud, void *buf, size_t cap, dbp_err_t *err)
{
    read_job_t *j = ud;
    if (bk_cancelled(j->ctx))
        return dbp_err_set(err, DBP_EIO, "interrupted");
    long n = backup_rstream_read(j->rs, buf, cap, err);
    if (n > 0) {
        backup_part_stat_t st;
        backup_rstream_stat(j->rs, &st);
        bk_progress(j->ctx, j->phase, j->raw_base + st.raw_bytes, st.bytes, false);
    }
    return n;
}

/* Opens part p of run directory dir for decoding. */
static int open_part(backup_store_t *bs, const char *dir, const backup_manifest_t *m,
                     const backup_part_t *p, const char *key, backup_rstream_t **rs,
                     dbp_err_t *err)
{
    char okey[700];
    snprintf(okey, sizeof(okey), "%s/%s", dir, p->name);
    backup_obj_reader_t *r;
    int rc = backup_obj_open(bs, okey, &r, NULL, err);
    if (rc)
        return rc;
    backup_codec_opts_t co = {.codec = (backup_codec_t)backup_codec_parse(m->compression),
                              .key = m->encrypted ? key : NULL,
                              .key_len = m->encrypted && key ? strlen(key) : 0,
                              .expect_sha256 = p->sha256};
    return backup_rstream_open(rs, r, &co, err);
}

/* Checks every part's size and hash (first pass, before anything is touched). */
static int check_parts(backup_store_t *bs, const char *dir, const backup_manifest_t *m,
                       const char *only_db, dbp_err_t *err)
{
    for (int i = 0; i < m->nparts; i++) {
        const backup_part_t *p = &m->parts[i];
        if (only_db && strcmp(p->kind, "database") == 0 && strcmp(p->database, only_db) != 0)
            continue;
        char okey[700];
        snprintf(okey, sizeof(okey), "%s/%s", dir, p->name);
        int rc = backup_verify_object(bs, okey, p->sha256, p->bytes, err);
        if (rc) {
            if (rc == DBP_ENOENT)
                rc = dbp_err_set(err, DBP_ECRYPTO, "part %s is missing from the store", p->name);
            return rc;
        }
    }
    return 0;
}

/* The encryption secret for a run's manifest (NULL when the run is not encrypted). */
static int run_key(backup_ctx_t *ctx, const backup_manifest_t *m, char **key, dbp_err_t *err)
{
    *key = NULL;
    if (!m->encrypted)
        return 0;
    const spec_resource_t *b = m->backup[0] ? bk_find(ctx, SPEC_KIND_BACKUP, m->tenant, m->backup)
                                            : NULL;
    if (!b || !b->u.backup.encryption_key.set)
        return dbp_err_set(err, DBP_ENOENT, "run %s is encrypted but Backup %s with its "
                                            "encryption key is not declared",
                           m->id, m->backup[0] ? m->backup : "(none)");
    return bk_backup_key(ctx, b, key, err);
}

/* ---- scratch instances --------------------------------------------------------------- */

typedef struct scratch {
    engine_instance_t in;
    spec_cluster_t spec;   /* shallow copy of the cluster's spec, memory unset */
    char version[16];
    char root[PATH_MAX];
    pid_t pid;
    int stop_signal;       /* the engine's clean shutdown signal (engine_ops_t) */
} scratch_t;

/* Picks a free port for scratch instance s in SCRATCH_PORT_FIRST..SCRATCH_PORT_LAST (none
 * held by another scratch instance of this daemon, nothing listening on it), scanning from
 * the data dir's own 16-port block (common/port.h) so that daemons of different data dirs
 * on one machine rarely pick the same one, and skipping the port s had. Sets
 * s->in.port and s->in.sock_dir (created). DBP_EBUSY when every port is taken. */
static int scratch_pick_port(backup_ctx_t *ctx, scratch_t *s, dbp_err_t *err)
{
    const int n = SCRATCH_PORT_LAST - SCRATCH_PORT_FIRST + 1;
    const int start =
        dbp_port_scan_start(ctx->data_dir, SCRATCH_PORT_FIRST, SCRATCH_PORT_LAST, 16) -
        SCRATCH_PORT_FIRST;
    int port = 0;
    for (int i = 0; i < n && !port; i++) {
        int p = SCRATCH_PORT_FIRST + (start + i) % n;
        char sock[160];
        snprintf(sock, sizeof(sock), "%s/v%d", ctx->run_dir, p);
        if (p != s->in.port && access(sock, F_OK) != 0 && dbp_port_free(p))
            port = p;
    }
    if (!port)
        return dbp_err_set(err, DBP_EBUSY, "no free port for a scratch instance");
    s->in.port = port;
    snprintf(s->in.sock_dir, sizeof(s->in.sock_dir), "%s/v%d", ctx->run_dir, port);
    return dbp_mkdir_p(s->in.sock_dir, 0700, &ctx->runas, err);
}

/* Lays out a scratch instance for run `id` with the cluster spec of the run (or, when the
 * Cluster is gone, just the engine's major version from the manifest). */
static int scratch_prepare(backup_ctx_t *ctx, const backup_manifest_t *m, scratch_t *s,
                           dbp_err_t *err)
{
    memset(s, 0, sizeof(*s));
    const spec_resource_t *c = bk_find(ctx, SPEC_KIND_CLUSTER, m->tenant, m->cluster);
    if (c) {
        s->spec = c->u.cluster;
    } else {
        s->spec.engine = SPEC_ENGINE_POSTGRESQL;
        if (strcmp(m->engine, "postgresql") != 0)
            return dbp_err_set(err, DBP_EUNSUPPORTED, "cannot verify %s runs without the Cluster",
                               m->engine);
        snprintf(s->version, sizeof(s->version), "%.*s", (int)strcspn(m->engine_version, "."),
                 m->engine_version);
        s->spec.version.v = s->version;
        s->spec.version.set = true;
    }
    s->spec.memory.set = false; /* a scratch server does not need the production sizing */
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/scratch", ctx->data_dir);
    snprintf(s->root, sizeof(s->root), "%s/%s", parent, m->id);
    int rc = dbp_rm_rf(s->root, err);
    if (!rc)
        rc = dbp_mkdir_p(parent, 0711, NULL, err);
    if (!rc)
        rc = dbp_mkdir_p(s->root, 0700, &ctx->runas, err);
    if (!rc)
        rc = dbp_mkdir_p(ctx->run_dir, 0711, NULL, err);
    if (rc)
        return rc;
    engine_instance_t *in = &s->in;
    in->tenant = m->tenant;
    in->cluster = m->cluster;
    snprintf(in->name, sizeof(in->name), "verify-%.80s", m->id);
    snprintf(in->dir, sizeof(in->dir), "%s", s->root);
    snprintf(in->data_dir, sizeof(in->data_dir), "%s/data", s->root);
    snprintf(in->log_path, sizeof(in->log_path), "%s/server.log", s->root);
    snprintf(in->tool_log_path, sizeof(in->tool_log_path), "%s/tools.log", s->root);
    snprintf(in->host, sizeof(in->host), "127.0.0.1");
    in->spec = &s->spec;
    in->runas = &ctx->runas;
    /* The cluster's internal credentials, for engines whose admin login needs them
     * (Redis renders its dbplane-admin ACL user from them). */
    bk_instance_creds(ctx, m->tenant, m->cluster, in);
    return scratch_pick_port(ctx, s, err);
}


static void scratch_stop(scratch_t *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, s->stop_signal > 0 ? s->stop_signal : SIGINT);
    int64_t deadline = dbp_now_ms() + 60000;
    int status;
    for (;;) {
        pid_t w = waitpid(s->pid, &status, WNOHANG);
        if (w == s->pid || (w < 0 && errno != EINTR))
            break;
        if (dbp_now_ms() > deadline) {
            kill(-s->pid, SIGKILL);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    s->pid = 0;
}

static void scratch_remove(scratch_t *s)
{
    scratch_stop(s);
    dbp_err_t e;
    if (s->root[0] && dbp_rm_rf(s->root, &e) != 0)
        dbp_warn("scratch_cleanup_failed", "path=%s error=%s", dbp_log_q(s->root),
                 dbp_log_q(e.msg));
    if (s->in.sock_dir[0] && dbp_rm_rf(s->in.sock_dir, &e) != 0)
        dbp_warn("scratch_cleanup_failed", "path=%s error=%s", dbp_log_q(s->in.sock_dir),
                 dbp_log_q(e.msg));
}

/* Renders the configuration, starts the server and waits until it accepts writes. */
static int scratch_start(const engine_ops_t *ops, scratch_t *s, dbp_err_t *err)
{
    s->stop_signal = ops->stop_signal;
    int rc = ops->render_config(&s->in, NULL, err);
    if (rc < 0)
        return rc;
    char *argv[16], buf[PATH_MAX];
    if ((rc = ops->server_argv(&s->in, argv, 16, buf, sizeof(buf), err)))
        return rc;
    if ((rc = dbp_proc_spawn(argv, NULL, s->in.runas, s->in.log_path, NULL, &s->pid, err)))
        return rc;
    int64_t deadline = dbp_now_ms() + SCRATCH_START_TIMEOUT_MS;
    dbp_err_t last;
    last.msg[0] = '\0';
    for (;;) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            char line[400];
            dbp_pipe_last_log_line(s->in.log_path, line, sizeof(line));
            if (!dbp_port_free(s->in.port))
                return dbp_err_set(err, DBP_EBUSY,
                                   "the restored server exited: port %d is taken by another "
                                   "program (%s)", s->in.port, line);
            return dbp_err_set(err, DBP_EENGINE, "the restored server exited: %s", line);
        }
        engine_inventory_t inv;
        if (ops->inventory(&s->in, ENGINE_INV_NAMES, &inv, &last) == 0 && !inv.in_recovery)
            return 0;
        if (dbp_now_ms() > deadline)
            return dbp_err_set(err, DBP_EENGINE, "the restored server did not become ready: %s",
                               last.msg);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Test-only failpoint, never for production: with DBPLANE_FAILPOINT_SCRATCH_PORT_TAKEN=1
 * in the environment of the process that verifies or restores (the daemon, or `dbplane
 * backup`), takes scratch instance s's chosen port on 127.0.0.1 with a listening socket,
 * as another daemon's server would in the moment between the pick and the bind. Returns
 * the socket (owned: close it once the start has failed), or -1 when the failpoint is
 * off or the port could not be taken (then logged, and the start goes on as usual). */
static int scratch_failpoint_take_port(const scratch_t *s)
{
    const char *v = getenv("DBPLANE_FAILPOINT_SCRATCH_PORT_TAKEN");
    if (!v || strcmp(v, "1") != 0)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->in.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 1) != 0) {
        dbp_warn("failpoint", "name=scratch_port_taken instance=%s port=%d taken=0 error=%s",
                 s->in.name, s->in.port, dbp_log_q(strerror(errno)));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    dbp_warn("failpoint", "name=scratch_port_taken instance=%s port=%d taken=1", s->in.name,
             s->in.port);
    return fd;
}

/* Renders the configuration, starts the server and waits until it accepts writes; when
 * it exited because another program took its port meanwhile (another daemon's scratch
 * instance on this machine picked the same one), picks another port and starts again,
 * up to SCRATCH_START_ATTEMPTS times. */
static int scratch_start_retry(backup_ctx_t *ctx, const engine_ops_t *ops, scratch_t *s,
                               dbp_err_t *err)
{
    int rc = 0;
    for (int attempt = 1; attempt <= SCRATCH_START_ATTEMPTS; attempt++) {
        int taken = attempt == 1 ? scratch_failpoint_take_port(s) : -1;
        rc = scratch_start(ops, s, err);
        if (taken >= 0)
            close(taken);
        if (rc != DBP_EBUSY || attempt == SCRATCH_START_ATTEMPTS)
            break;
        dbp_warn("scratch_port_taken", "instance=%s port=%d attempt=%d", s->in.name, s->in.port,
                 attempt);
        dbp_err_t e;
        if (s->in.sock_dir[0] && dbp_rm_rf(s->in.sock_dir, &e) != 0)
            dbp_warn("scratch_cleanup_failed", "path=%s error=%s", dbp_log_q(s->in.sock_dir),
                     dbp_log_q(e.msg));
        if ((rc = scratch_pick_port(ctx, s, err)))
            break;
    }
    return rc;
}

int bk_with_server(backup_ctx_t *ctx, const backup_manifest_t *m, const char *data_dir,
                   bk_server_fn fn, void *ud, dbp_err_t *err)
{
    const engine_ops_t *ops = NULL;
    for (int e = SPEC_ENGINE_POSTGRESQL; e <= SPEC_ENGINE_REDIS && !ops; e++)
        if (strcmp(spec_engine_str((spec_engine_t)e), m->engine) == 0)
            ops = engine_lookup((spec_engine_t)e);
    if (!ops)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "engine %s is not available", m->engine);
    scratch_t *s = calloc(1, sizeof(*s));
    if (!s)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    int rc = scratch_prepare(ctx, m, s, err);
    if (!rc) {
        snprintf(s->in.data_dir, sizeof(s->in.data_dir), "%s", data_dir);
        rc = scratch_start_retry(ctx, ops, s, err);
    }
    if (!rc)
        rc = fn(ops, &s->in, ud, err);
    scratch_remove(s); /* stops the server; data_dir is outside the scratch root */
    free(s);
    return rc;
}

/* Compares the restored server's databases with the manifest's table counts. */
static int compare_inventory(const backup_manifest_t *m, const engine_inventory_t *inv,
                             char *summary, size_t cap, dbp_err_t *err)
{
    int64_t tables = 0, rows = 0;
    for (int i = 0; i < m->ndbs; i++) {
        const engine_db_inventory_t *found = NULL;
        for (int k = 0; k < inv->ndb; k++)
            if (strcmp(inv->dbs[k].name, m->dbs[i].name) == 0)
                found = &inv->dbs[k];
        if (!found)
            return dbp_err_set(err, DBP_EENGINE, "database %s is missing after the restore",
                               m->dbs[i].name);
        if (found->tables != m->dbs[i].tables)
            return dbp_err_set(err, DBP_EENGINE,
                               "database %s has %lld tables after the restore, %lld at backup "
                               "time",
                               m->dbs[i].name, (long long)found->tables,
                               (long long)m->dbs[i].tables);
        tables += found->tables;
        rows += found->rows > 0 ? found->rows : 0;
    }
    snprintf(summary, cap, "%d databases, %lld tables, %lld rows read", m->ndbs,
             (long long)tables, (long long)rows);
    return 0;
}

/* Restores the logical parts of m (optionally one database) into the running `in`. */
static int restore_logical_parts(backup_ctx_t *ctx, const engine_ops_t *ops,
                                 const engine_instance_t *in, backup_store_t *bs, const char *dir,
                                 const backup_manifest_t *m, const char *key, const char *only_db,
                                 bool clean, dbp_err_t *err)
{
    int64_t base = 0;
    /* Globals first, so the owners of the databases' objects exist. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < m->nparts; i++) {
            const backup_part_t *p = &m->parts[i];
            bool globals = strcmp(p->kind, "globals") == 0;
            if ((pass == 0) != globals || strcmp(p->kind, "data") == 0)
                continue;
            if (!globals && only_db && strcmp(p->database, only_db) != 0)
                continue;
            backup_rstream_t *rs;
            int rc = open_part(bs, dir, m, p, key, &rs, err);
            if (rc)
                return rc;
            read_job_t j = {.ctx = ctx, .rs = rs, .phase = "restore", .raw_base = base};
            engine_restore_opts_t ro = {.create = true, .clean = clean};
            rc = ops->restore_logical(in, globals ? NULL : p->database, &ro, part_read_cb, &j, err);
            backup_rstream_close(rs);
            if (rc)
                return rc;
            base += p->raw_bytes;
        }
    }
    bk_progress(ctx, "restore", base, 0, true);
    return 0;
}

/* ---- verification -------------------------------------------------------------------- */

static int verify_run(backup_ctx_t *ctx, const store_backup_t *row, char *summary, size_t cap,
                      dbp_err_t *err)
{
    backup_store_t *bs = NULL;
    backup_manifest_t *m = calloc(1, sizeof(*m));
    char *key = NULL;
    scratch_t *s = calloc(1, sizeof(*s));
    int rc = 0;
    if (!m || !s) {
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = bk_open_store(ctx, row->tenant, row->store, &bs, err)))
        goto out;
    if ((rc = bk_load_manifest(bs, row->path, m, err))) {
        if (rc == DBP_ENOENT)
            rc = dbp_err_set(err, DBP_ECRYPTO, "the manifest is missing: the run is incomplete");
        goto out;
    }
    if ((rc = check_parts(bs, row->path, m, NULL, err)))
        goto out;
    const engine_ops_t *ops = engine_lookup(strcmp(m->engine, "postgresql") == 0
                                                ? SPEC_ENGINE_POSTGRESQL
                                            : strcmp(m->engine, "mariadb") == 0 ? SPEC_ENGINE_MARIADB
                                                                                : SPEC_ENGINE_REDIS);
    bool physical = strcmp(m->type, "physical") == 0;
    if (!ops || !ops->inventory || (physical ? !ops->restore_physical : !ops->restore_logical)) {
        rc = dbp_err_set(err, DBP_EUNSUPPORTED, "verification of %s runs is not supported",
                         m->engine);
        goto out;
    }
    if ((rc = run_key(ctx, m, &key, err)) || (rc = scratch_prepare(ctx, m, s, err)))
        goto out;
    if (physical) {
        backup_rstream_t *rs;
        if ((rc = open_part(bs, row->path, m, &m->parts[0], key, &rs, err)))
            goto out;
        read_job_t j = {.ctx = ctx, .rs = rs, .phase = "verify"};
        rc = ops->restore_physical(&s->in, NULL, part_read_cb, &j, err);
        backup_rstream_close(rs);
        if (!rc)
            rc = scratch_start_retry(ctx, ops, s, err);
    } else {
        rc = ops->init_primary(&s->in, err);
        if (!rc)
            rc = scratch_start_retry(ctx, ops, s, err);
        if (!rc)
            rc = restore_logical_parts(ctx, ops, &s->in, bs, row->path, m, key, NULL, false, err);
    }
    engine_inventory_t inv;
    if (!rc)
        rc = ops->inventory(&s->in, ENGINE_INV_FULL_READ, &inv, err);
    if (!rc)
        rc = compare_inventory(m, &inv, summary, cap, err);
out:
    if (s)
        scratch_remove(s);
    free(s);
    secrets_free_value(key);
    free(m);
    backup_store_close(bs);
    return rc;
}

int backup_verify(backup_ctx_t *ctx, const char *tenant, const char *id, dbp_err_t *err)
{
    store_backup_t row;
    int rc = store_backup_get(ctx->store, tenant, id, &row, err);
    if (rc)
        return rc;
    if (strcmp(row.status, "complete") != 0)
        return dbp_err_set(err, DBP_EINVAL, "run %s is %s, not complete", id, row.status);
    dbp_info("verify_started", "tenant=%s id=%s", tenant, id);
    char summary[256] = "";
    int64_t t0 = dbp_now_ms();
    rc = verify_run(ctx, &row, summary, sizeof(summary), err);
    char msg[700];
    const char *name = row.backup[0] ? row.backup : row.cluster;
    dbp_err_t e2;
    if (rc == 0) {
        snprintf(msg, sizeof(msg), "restored, started and read in %.1f s: %s",
                 (double)(dbp_now_ms() - t0) / 1000.0, summary);
        if (store_backup_set_verified(ctx->store, tenant, id, "ok", msg, &e2) != 0)
            dbp_warn("catalog_write_failed", "error=%s", dbp_log_q(e2.msg));
        char ev[900];
        snprintf(ev, sizeof(ev), "run %s verified: %s", id, msg);
        bk_event(ctx, tenant, "Backup", name, "Normal", "BackupVerified", ev);
    } else {
        snprintf(msg, sizeof(msg), "%s", err ? err->msg : "failed");
        if (store_backup_set_verified(ctx->store, tenant, id, "failed", msg, &e2) != 0)
            dbp_warn("catalog_write_failed", "error=%s", dbp_log_q(e2.msg));
        char ev[900];
        snprintf(ev, sizeof(ev), "run %s failed verification: %s", id, msg);
        bk_event(ctx, tenant, "Backup", name, "Warning", "BackupVerificationFailed", ev);
    }
    return rc;
}

/* ---- restore ------------------------------------------------------------------------- */

typedef struct find_run {
    const backup_restore_opts_t *o;
    int64_t before_ms; /* > 0: only runs finished by then (the base of a PITR) */
    bool verified;     /* only runs whose verification passed */
    store_backup_t best;
    bool found;
} find_run_t;

static int find_cb(const store_backup_t *b, void *ud)
{
    find_run_t *f = ud;
    if (strcmp(b->status, "complete") != 0)
        return 0;
    if (f->o->backup && strcmp(b->backup, f->o->backup) != 0)
        return 0;
    if (f->o->type >= 0 &&
        strcmp(b->type, f->o->type == SPEC_BACKUP_PHYSICAL ? "physical" : "logical") != 0)
        return 0;
    if (f->before_ms > 0 && b->finished_ms > f->before_ms)
        return 0;
    if (f->verified && strcmp(b->verified, "ok") != 0)
        return 0;
    if (!f->found || b->started_ms >= f->best.started_ms) {
        f->best = *b;
        f->found = true;
    }
    return 0;
}

/* Resolves the run a restore asks for; with before_ms > 0 (a point in time), the newest
 * run that had finished by then. */
static int find_run(backup_ctx_t *ctx, const backup_restore_opts_t *o, int64_t before_ms,
                    store_backup_t *row, dbp_err_t *err)
{
    const char *tenant = o->tenant ? o->tenant : "default";
    if (o->id)
        return store_backup_get(ctx->store, tenant, o->id, row, err);
    const char *cluster = o->cluster;
    if (o->backup) {
        const spec_resource_t *b = bk_find(ctx, SPEC_KIND_BACKUP, tenant, o->backup);
        if (b)
            cluster = b->u.backup.cluster.v;
    }
    find_run_t f = {.o = o, .before_ms = before_ms};
    int rc = store_backup_list(ctx->store, tenant, cluster, find_cb, &f, err);
    if (rc)
        return rc;
    if (!f.found)
        return dbp_err_set(err, DBP_ENOENT, "no complete %sbackup of %s %s in tenant %s%s",
                           o->type == SPEC_BACKUP_PHYSICAL  ? "physical "
                           : o->type == SPEC_BACKUP_LOGICAL ? "logical "
                                                            : "",
                           o->backup ? "Backup" : "cluster", o->backup ? o->backup : cluster,
                           tenant, before_ms > 0 ? " finished before the point in time" : "");
    *row = f.best;
    return 0;
}

/* Restores a physical run into a fresh data directory described by `in`; with
 * point_in_time (RFC 3339), also fetches the archived WAL and sets the server up to
 * recover to that time and promote. On error nothing is left in in->data_dir.
 *
 * The part's SHA-256 is checked while it is extracted, not in a pass before: the target
 * is always a new, empty directory (the engines' restore_physical refuses anything
 * else), so nothing is replaced before the check, and on a mismatch what was extracted
 * is removed and the run is refused ("checksum mismatch"), the same answer the pass
 * before used to give. A decoding error (a flipped byte usually breaks the zstd frame
 * first) is reported as the checksum mismatch it comes from when the stored bytes do not
 * match the manifest. MariaDB's stream is read to its end before `--prepare` runs, so a
 * corrupt artifact is never prepared. */
static int restore_physical_into(backup_ctx_t *ctx, backup_store_t *bs, const char *dir,
                                 const backup_manifest_t *m, const engine_instance_t *in,
                                 const char *point_in_time, dbp_err_t *err)
{
    if (m->nparts < 1)
        return dbp_err_set(err, DBP_ECRYPTO, "run %s lists no parts", m->id);
    const engine_ops_t *ops = engine_lookup((spec_engine_t)in->spec->engine);
    if (!ops || !ops->restore_physical)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "physical restore of %s is not supported",
                           m->engine);
    char target[64] = "", cmd[3 * PATH_MAX], wdir[PATH_MAX + 64], exe[PATH_MAX];
    int64_t target_ms = 0;
    engine_restore_opts_t ro = {0};
    int rc;
    bool binlog = point_in_time && ops->binlog_replay; /* MariaDB: replay binary logs */
    if (point_in_time) {
        if (strcmp(m->engine, "postgresql") != 0 && !binlog)
            return dbp_err_set(err, DBP_EUNSUPPORTED,
                               "point-in-time restore of %s is not available in this build",
                               m->engine);
        if ((rc = bk_pitr_target(point_in_time, target, sizeof(target), &target_ms, err)))
            return rc;
        if (target_ms < m->finished_ms) {
            char fin[32];
            backup_format_time(m->finished_ms, fin, sizeof(fin));
            return dbp_err_set(err, DBP_EINVAL,
                               "run %s finished at %s, after the point in time %s: restore "
                               "from an earlier base backup",
                               m->id, fin, point_in_time);
        }
    }
    if (point_in_time && !binlog) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
            return dbp_err_set(err, DBP_EIO, "readlink /proc/self/exe: %s", strerror(errno));
        exe[n] = '\0';
        snprintf(wdir, sizeof(wdir), "%s/" ENGINE_WAL_RESTORE_DIR, in->data_dir);
        if (strchr(exe, '\'') || strchr(wdir, '\''))
            return dbp_err_set(err, DBP_EINVAL, "paths with quotes cannot be used for a PITR");
        snprintf(cmd, sizeof(cmd), "'%s' wal-fetch --from '%s' %%f %%p", exe, wdir);
        ro.restore_command = cmd;
        ro.recovery_target_time = target;
    }
    char *key = NULL;
    if ((rc = run_key(ctx, m, &key, err)))
        return rc;
    backup_rstream_t *rs;
    if ((rc = open_part(bs, dir, m, &m->parts[0], key, &rs, err))) {
        secrets_free_value(key);
        if (rc == DBP_ENOENT)
            rc = dbp_err_set(err, DBP_ECRYPTO,
                             "run %s refused: part %s is missing from the "
                             "store",
                             m->id, m->parts[0].name);
        return rc;
    }
    read_job_t j = {.ctx = ctx, .rs = rs, .phase = "restore"};
    rc = ops->restore_physical(in, &ro, part_read_cb, &j, err);
    /* Every stored byte is hashed, whatever the extraction did (see above). */
    dbp_err_t verr;
    int vrc = backup_rstream_check_stored(rs, &verr);
    if (vrc) {
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
        if (vrc == DBP_ECRYPTO || !rc) {
            rc = vrc;
            if (err)
                *err = verr;
            dbp_err_prefix(err, "run %s refused, nothing restored: %s: ", m->id, m->parts[0].name);
        }
    }
    backup_part_stat_t st;
    backup_rstream_stat(rs, &st);
    bk_progress(ctx, "restore", st.raw_bytes, st.bytes, true);
    backup_rstream_close(rs);
    if (!rc && point_in_time) {
        char note[300];
        if (binlog)
            rc = bk_binlog_restore(ctx, bs, dir, m, key, in, target_ms, note, sizeof(note), err);
        else
            rc = dbp_mkdir_p(wdir, 0700, &ctx->runas, err);
        if (!rc && !binlog)
            rc = bk_wal_prefetch(ctx, bs, dir, m, key, wdir, note, sizeof(note), err);
        if (rc) {
            dbp_err_t ignore;
            if (dbp_rm_rf(in->data_dir, &ignore) != 0)
                dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                         dbp_log_q(ignore.msg));
        } else if (note[0]) {
            bk_event(ctx, m->tenant, "Backup", m->backup[0] ? m->backup : m->cluster, "Warning",
                     "WalArchiveGap", note);
        }
    }
    secrets_free_value(key);
    return rc;
}

int backup_restore(backup_ctx_t *ctx, const backup_restore_opts_t *o, dbp_err_t *err)
{
    const char *tenant = o->tenant ? o->tenant : "default";
    store_backup_t row;
    int64_t before_ms = 0;
    char pitr_target[64];
    int rc;
    if (o->point_in_time) {
        if (!o->to_dir)
            return dbp_err_set(err, DBP_EINVAL, "a point-in-time restore makes a new data "
                                                "directory: give --to DIR (or use a Restore "
                                                "resource)");
        if ((rc = bk_pitr_target(o->point_in_time, pitr_target, sizeof(pitr_target), &before_ms,
                                 err)))
            return rc;
        backup_restore_opts_t po = *o;
        po.type = SPEC_BACKUP_PHYSICAL;
        rc = find_run(ctx, &po, o->id ? 0 : before_ms, &row, err);
    } else {
        rc = find_run(ctx, o, 0, &row, err);
    }
    if (rc)
        return rc;
    if (strcmp(row.status, "complete") != 0)
        return dbp_err_set(err, DBP_EINVAL, "run %s is %s, not complete: nothing to restore",
                           row.id, row.status);
    backup_store_t *bs = NULL;
    backup_manifest_t *m = calloc(1, sizeof(*m));
    char *key = NULL;
    if (!m)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if ((rc = bk_open_store(ctx, tenant, row.store, &bs, err)))
        goto out;
    if ((rc = bk_load_manifest(bs, row.path, m, err))) {
        if (rc == DBP_ENOENT)
            rc = dbp_err_set(err, DBP_ECRYPTO, "run %s has no manifest in the store", row.id);
        goto out;
    }
    if (strcmp(m->id, row.id) != 0 || strcmp(m->cluster, row.cluster) != 0) {
        rc = dbp_err_set(err, DBP_ECRYPTO, "the manifest in %s belongs to run %s, not %s",
                         row.path, m->id, row.id);
        goto out;
    }
    /* Logical: every byte is checked before anything is touched (the databases it
     * restores into exist). Physical: checked while extracting into the new directory
     * (restore_physical_into). */
    if (strcmp(m->type, "physical") != 0 && (rc = check_parts(bs, row.path, m, o->database, err))) {
        dbp_err_prefix(err, "run %s refused: ", row.id);
        goto out;
    }
    const char *ev_name = row.backup[0] ? row.backup : row.cluster;
    if (o->point_in_time && strcmp(m->type, "physical") != 0) {
        rc = dbp_err_set(err, DBP_EINVAL, "run %s is logical: a point-in-time restore starts "
                                          "from a physical run",
                         row.id);
        goto out;
    }
    if (strcmp(m->type, "physical") == 0) {
        if (!o->to_dir) {
            rc = dbp_err_set(err, DBP_EINVAL,
                             "a physical run restores into a new data directory: give --to DIR "
                             "(a new cluster is restored by a Restore resource)");
            goto out;
        }
        const spec_resource_t *c = bk_find(ctx, SPEC_KIND_CLUSTER, tenant, row.cluster);
        scratch_t *tmp = calloc(1, sizeof(*tmp)); /* only for the minimal spec */
        if (!tmp) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            goto out;
        }
        engine_instance_t in;
        memset(&in, 0, sizeof(in));
        in.tenant = tenant;
        in.cluster = row.cluster;
        snprintf(in.name, sizeof(in.name), "restore");
        if (o->to_dir[0] == '/') {
            snprintf(in.data_dir, sizeof(in.data_dir), "%s", o->to_dir);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd)))
                cwd[0] = '\0';
            snprintf(in.data_dir, sizeof(in.data_dir), "%s/%s", cwd, o->to_dir);
        }
        snprintf(in.tool_log_path, sizeof(in.tool_log_path), "%s/restore-%s.log", ctx->data_dir,
                 row.id);
        in.runas = &ctx->runas;
        if (c) {
            in.spec = &c->u.cluster;
        } else {
            tmp->spec.engine = SPEC_ENGINE_POSTGRESQL;
            snprintf(tmp->version, sizeof(tmp->version), "%.*s",
                     (int)strcspn(m->engine_version, "."), m->engine_version);
            tmp->spec.version.v = tmp->version;
            in.spec = &tmp->spec;
        }
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", in.data_dir);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        rc = dbp_mkdir_p(parent, 0755, NULL, err);
        if (!rc)
            rc = dbp_check_traversable(parent, &ctx->runas, err);
        if (!rc)
            rc = restore_physical_into(ctx, bs, row.path, m, &in, o->point_in_time, err);
        free(tmp);
        if (!rc) {
            char msg[PATH_MAX + 200];
            snprintf(msg, sizeof(msg), "physical run %s restored into %s", row.id, in.data_dir);
            bk_event(ctx, tenant, "Backup", ev_name, "Normal", "RestoreCompleted", msg);
        }
        goto out;
    }
    /* Logical: into the running primary of the target cluster. */
    const char *target = o->target_cluster ? o->target_cluster : row.cluster;
    const spec_resource_t *tc = bk_find(ctx, SPEC_KIND_CLUSTER, tenant, target);
    if (!tc) {
        rc = dbp_err_set(err, DBP_ENOENT, "cluster %s not found in tenant %s", target, tenant);
        goto out;
    }
    const engine_ops_t *ops = engine_lookup((spec_engine_t)tc->u.cluster.engine);
    if (!ops || !ops->restore_logical || !ops->inventory) {
        rc = dbp_err_set(err, DBP_EUNSUPPORTED, "logical restore is not supported for %s",
                         spec_engine_str((spec_engine_t)tc->u.cluster.engine));
        goto out;
    }
    engine_instance_t in;
    engine_inventory_t inv;
    if ((rc = bk_primary(ctx, tc, &in, err)) ||
        (rc = ops->inventory(&in, ENGINE_INV_NAMES, &inv, err)))
        goto out;
    bool any_exists = false;
    for (int i = 0; i < m->nparts; i++) {
        const backup_part_t *p = &m->parts[i];
        if (strcmp(p->kind, "database") != 0 || (o->database && strcmp(p->database, o->database)))
            continue;
        for (int k = 0; k < inv.ndb; k++)
            if (strcmp(inv.dbs[k].name, p->database) == 0) {
                if (!o->force) {
                    rc = dbp_err_set(err, DBP_EBUSY,
                                     "database %s exists on cluster %s: restoring over it needs "
                                     "--force (a safety backup is taken first)",
                                     p->database, target);
                    goto out;
                }
                any_exists = true;
            }
    }
    if (o->database) {
        bool has = false;
        for (int i = 0; i < m->nparts; i++)
            if (strcmp(m->parts[i].kind, "database") == 0 &&
                strcmp(m->parts[i].database, o->database) == 0)
                has = true;
        if (!has) {
            rc = dbp_err_set(err, DBP_ENOENT, "run %s has no database %s", row.id, o->database);
            goto out;
        }
    }
    if (any_exists) {
        store_backup_t safety;
        if ((rc = bk_safety_backup(ctx, tc, row.backup, row.store, &safety, err))) {
            dbp_err_prefix(err, "safety backup before the in-place restore: ");
            goto out;
        }
        dbp_info("safety_backup_taken", "tenant=%s cluster=%s id=%s", tenant, target, safety.id);
    }
    if ((rc = run_key(ctx, m, &key, err)))
        goto out;
    rc = restore_logical_parts(ctx, ops, &in, bs, row.path, m, key, o->database, o->force, err);
    if (!rc) {
        char msg[400];
        snprintf(msg, sizeof(msg), "logical run %s restored into cluster %s%s%s", row.id, target,
                 o->database ? " database " : "", o->database ? o->database : "");
        bk_event(ctx, tenant, "Backup", ev_name, "Normal", "RestoreCompleted", msg);
    }
out:
    secrets_free_value(key);
    free(m);
    backup_store_close(bs);
    return rc;
}

int backup_restore_instance(backup_ctx_t *ctx, const char *tenant, const spec_restore_t *r,
                            const engine_instance_t *target, dbp_err_t *err)
{
    store_backup_t row;
    memset(&row, 0, sizeof(row));
    int rc;
    const char *store_name;
    if (r->backup.v) {
        backup_restore_opts_t o = {.tenant = tenant, .backup = r->backup.v,
                                   .type = SPEC_BACKUP_PHYSICAL};
        int64_t before_ms = 0;
        char pitr_target[64];
        if (r->point_in_time.set &&
            (rc = bk_pitr_target(r->point_in_time.v, pitr_target, sizeof(pitr_target),
                                 &before_ms, err)))
            return rc;
        if ((rc = find_run(ctx, &o, before_ms, &row, err)))
            return rc;
        store_name = row.store;
    } else {
        store_name = r->source_store.v;
        if (!store_name || !r->source_path.v)
            return dbp_err_set(err, DBP_EINVAL, "Restore needs backup or source.store + path");
        dbp_err_t e;
        if (store_backup_get(ctx->store, tenant, r->source_path.v, &row, &e) == 0)
            store_name = row.store;
        else
            snprintf(row.path, sizeof(row.path), "%s", r->source_path.v);
    }
    backup_store_t *bs = NULL;
    backup_manifest_t *m = calloc(1, sizeof(*m));
    if (!m)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if ((rc = bk_open_store(ctx, tenant, store_name, &bs, err)))
        goto out;
    if ((rc = bk_load_manifest(bs, row.path, m, err)))
        goto out;
    if (strcmp(m->type, "physical") != 0) {
        rc = dbp_err_set(err, DBP_EINVAL, "run %s is logical: a new cluster is made from a "
                                          "physical run",
                         m->id);
        goto out;
    }
    /* The checksums are checked while extracting (restore_physical_into). */
    rc = restore_physical_into(ctx, bs, row.path, m, target,
                               r->point_in_time.set ? r->point_in_time.v : NULL, err);
out:
    free(m);
    backup_store_close(bs);
    return rc;
}

/* Removes a bootstrap's data dir after a failure (logged when that fails too). */
static void bootstrap_cleanup(const engine_instance_t *replica)
{
    dbp_err_t ignore;
    if (dbp_rm_rf(replica->data_dir, &ignore) != 0)
        dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(replica->data_dir),
                 dbp_log_q(ignore.msg));
}

int backup_bootstrap_replica(backup_ctx_t *ctx, const char *tenant, const char *backup,
                             const engine_instance_t *replica, const engine_instance_t *primary,
                             backup_bootstrap_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    const spec_resource_t *b = bk_find(ctx, SPEC_KIND_BACKUP, tenant, backup);
    if (!b)
        return dbp_err_set(err, DBP_ENOENT, "Backup %s not found in tenant %s", backup, tenant);
    const engine_ops_t *ops = engine_lookup((spec_engine_t)replica->spec->engine);
    if (!ops)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "engine not available in this build");
    /* Catch-up from the primary's own logs (engines with bootstrap_check: MariaDB), or
     * else from the Backup's WAL archive (pitr, which validation allows only where the
     * server archives: PostgreSQL). */
    bool from_primary = ops->bootstrap_check != NULL;
    if (!from_primary && !b->u.backup.pitr.v)
        return dbp_err_set(err, DBP_EUNSUPPORTED,
                           "Backup %s does not archive WAL (pitr: false), so the WAL written "
                           "since its runs is not kept",
                           backup);
    backup_restore_opts_t o = {.tenant = tenant, .backup = backup, .type = SPEC_BACKUP_PHYSICAL};
    find_run_t f = {.o = &o, .verified = true};
    int rc = store_backup_list(ctx->store, tenant, b->u.backup.cluster.v, find_cb, &f, err);
    if (rc)
        return rc;
    if (!f.found)
        return dbp_err_set(err, DBP_ENOENT, "Backup %s has no complete, verified physical run",
                           backup);
    store_backup_t *row = &f.best;
    snprintf(out->run_id, sizeof(out->run_id), "%s", row->id);
    backup_store_t *bs = NULL;
    backup_manifest_t *m = calloc(1, sizeof(*m));
    char *key = NULL;
    if (!m)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if ((rc = bk_open_store(ctx, tenant, row->store, &bs, err)) ||
        (rc = bk_load_manifest(bs, row->path, m, err)))
        goto out;
    snprintf(out->position, sizeof(out->position), "%s", m->start_position);
    /* Before anything is extracted: can the primary still serve the catch-up? */
    if (from_primary && (rc = ops->bootstrap_check(primary, NULL, m->start_position, err)))
        goto out;
    /* The checksums are checked while extracting (restore_physical_into). */
    if ((rc = run_key(ctx, m, &key, err)))
        goto out;
    if ((rc = restore_physical_into(ctx, bs, row->path, m, replica, NULL, err)))
        goto out;
    if (from_primary) {
        /* Again after the restore, which took time: the primary may have purged logs. */
        if ((rc = ops->bootstrap_check(primary, replica, m->start_position, err)))
            bootstrap_cleanup(replica);
        else
            snprintf(out->catch_up, sizeof(out->catch_up),
                     "at GTID %s; it replicates the transactions since from %s's binary "
                     "logs (MASTER_USE_GTID = slave_pos)",
                     m->start_position, primary->name);
        goto out;
    }
    /* The run, then the WAL since it (the archive, then the spool not yet shipped) in
     * the server's own WAL directory: the new replica replays it at its first start and
     * streams the rest from the primary. */
    char waldir[PATH_MAX + 16], note[300];
    snprintf(waldir, sizeof(waldir), "%s/pg_wal", replica->data_dir);
    rc = bk_wal_prefetch(ctx, bs, row->path, m, key, waldir, note, sizeof(note), err);
    if (!rc && note[0])
        rc = dbp_err_set(err, DBP_EIO, "%s", note);
    if (!rc)
        rc = bk_wal_copy_spool(ctx, tenant, b->u.backup.cluster.v, m, waldir, err);
    if (rc)
        bootstrap_cleanup(replica);
    else
        snprintf(out->catch_up, sizeof(out->catch_up),
                 "with the WAL archived since; it replays it, then streams from %s",
                 primary->name);
out:
    secrets_free_value(key);
    free(m);
    backup_store_close(bs);
    return rc;
}
