/*
 * binlog.c: the archive of binary logs behind MariaDB point-in-time recovery, the
 * counterpart of wal.c's PostgreSQL WAL archive. Engine details stay behind engine.h's
 * binlog_list, binlog_index and binlog_replay; this file only orders, ships, checks and
 * deletes files.
 *
 *   shipping (root)  the daemon's scheduler runs `dbplane wal-ship CLUSTER` every
 *                    CTL_ARCHIVE_POLL_MS; for an engine with binlog_list that lands in
 *                    bk_binlog_ship: it closes the primary's current log when it has new
 *                    events and was opened more than BK_BINLOG_ARCHIVE_INTERVAL_S ago
 *                    (that bounds what a lost primary takes with it), then ships every
 *                    closed log not yet archived, read from the data directory (same
 *                    machine), compressed and encrypted like any part, as
 *                    "[prefix/]<tenant>/<cluster>/binlog/<server id>-<file>.zst[.enc]",
 *                    then writes its index "<server id>-<file>.json" (domain, the GTID
 *                    state before the file, first and last GTID, first and last event
 *                    time, sizes, SHA-256 of the stored bytes). The index is written
 *                    last: a log without one is not archived. Nothing is ever purged
 *                    from the server.
 *   restoring (root) bk_binlog_restore: the logs after the run's GTID are chained by
 *                    GTID (not by file name: after a failover another server's logs
 *                    continue the domain): each next log holds the next transaction,
 *                    the one reaching farthest is taken (the promoted replica's first
 *                    log repeats what it replicated from the old primary), a missing
 *                    sequence number is a gap; they are fetched (stored SHA-256 and
 *                    event checksums checked) into <data dir>.binlog-restore, and
 *                    replayed into a temporary server on the restored data directory up
 *                    to the target time; a log that overlaps the one before is replayed
 *                    from after the last GTID already applied.
 *
 * GTID arithmetic uses the sequence numbers of one domain (dbplane's servers write
 * domain 0): the run's GTID and each file's state must be in that domain.
 */
#include "backup/backup_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "engines/mariadb_gtid.h"
#include "control/reconcile.h"

#define BK_BINLOG_MAX_INDEX (64 * 1024) /* bytes of one index object */
#define BK_BINLOG_MAX_FILES 100000
/* The longest a log with new events stays open before it is closed and shipped (s): with
 * CTL_ARCHIVE_POLL_MS, the most a lost primary takes with it. */
#define BK_BINLOG_ARCHIVE_INTERVAL_S 60

/* One archived log, from its index. */
typedef struct bl_entry {
    char base[128];   /* "<server id>-<file>": the key's last segment without suffixes */
    char object[160]; /* the data object's last key segment */
    char sha256[65];  /* of the stored bytes */
    engine_binlog_index_t ix;
} bl_entry_t;

typedef struct bl_list {
    bl_entry_t *v;
    size_t n, cap;
} bl_list_t;

/* "[prefix/]<tenant>/<cluster>/binlog" of Backup b. */
static void bl_prefix(const spec_resource_t *b, char *buf, size_t len)
{
    const char *p = b->u.backup.prefix.v && *b->u.backup.prefix.v ? b->u.backup.prefix.v : NULL;
    snprintf(buf, len, "%s%s%s/%s/binlog", p ? p : "", p ? "/" : "", b->tenant.v,
             b->u.backup.cluster.v);
}

/* The archive next to the run stored at run_path ("[prefix/]t/c/<run id>"). */
static void bl_prefix_of_run(const char *run_path, char *buf, size_t len)
{
    const char *slash = strrchr(run_path, '/');
    snprintf(buf, len, "%.*s/binlog", slash ? (int)(slash - run_path) : 0, run_path);
}

/* Sequence number of `domain` in a GTID position "0-1-5,1-2-3" (one GTID a domain); 0
 * when absent. */
static uint64_t bl_seq_of(const char *list, uint32_t domain, bool *found)
{
    uint64_t q = 0;
    *found = mdb_gtid_domain_seq(list, domain, &q);
    return q;
}

/* The GTID sequence number a file ends at (its last transaction, or its starting state
 * when it has none). */
static uint64_t bl_end(const engine_binlog_index_t *ix)
{
    return ix->last_seq ? ix->last_seq : ix->start_seq;
}

static char *bl_index_json(const bl_entry_t *e, const char *file, int server_id,
                           const backup_part_stat_t *st)
{
    const engine_binlog_index_t *ix = &e->ix;
    json_t *j =
        json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I, "
                  "s:s}",
                  "file", file, "server_id", server_id, "object", e->object, "domain",
                  (json_int_t)ix->domain, "start_seq", (json_int_t)ix->start_seq, "first_seq",
                  (json_int_t)ix->first_seq, "last_seq", (json_int_t)ix->last_seq, "first_gtid",
                  ix->first_gtid, "last_gtid", ix->last_gtid, "first_time",
                  (json_int_t)ix->first_time, "last_time", (json_int_t)ix->last_time, "raw_bytes",
                  (json_int_t)st->raw_bytes, "bytes", (json_int_t)st->bytes, "sha256", st->sha256);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static bool bl_index_parse(const char *text, size_t len, bl_entry_t *e)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    if (!j)
        return false;
    const char *obj = NULL, *sha = NULL, *fg = "", *lg = "";
    json_int_t dom = 0, ss = 0, fs = 0, ls = 0, ft = 0, lt = 0;
    bool ok = json_unpack(j, "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s?s, s?s}", "object", &obj,
                          "sha256", &sha, "domain", &dom, "start_seq", &ss, "first_seq", &fs,
                          "last_seq", &ls, "first_time", &ft, "last_time", &lt, "first_gtid", &fg,
                          "last_gtid", &lg) == 0 &&
              strlen(obj) < sizeof(e->object) && strlen(sha) == 64 && !strchr(obj, '/');
    if (ok) {
        snprintf(e->object, sizeof(e->object), "%s", obj);
        snprintf(e->sha256, sizeof(e->sha256), "%s", sha);
        e->ix.domain = (uint32_t)dom;
        e->ix.start_seq = (uint64_t)ss;
        e->ix.first_seq = (uint64_t)fs;
        e->ix.last_seq = (uint64_t)ls;
        e->ix.first_time = ft;
        e->ix.last_time = lt;
        snprintf(e->ix.first_gtid, sizeof(e->ix.first_gtid), "%s", fg);
        snprintf(e->ix.last_gtid, sizeof(e->ix.last_gtid), "%s", lg);
    }
    json_decref(j);
    return ok;
}

typedef struct bl_names {
    size_t skip;
    char **v;
    size_t n, cap;
} bl_names_t;

/* Collects the index objects ("<base>.json") directly under the prefix. */
static int bl_list_cb(const char *key, int64_t size, void *ud)
{
    (void)size;
    bl_names_t *l = ud;
    const char *base = key + l->skip;
    size_t n = strlen(base);
    if (strchr(base, '/') || n < 6 || n >= 128 || strcmp(base + n - 5, ".json") != 0)
        return 0;
    if (l->n == BK_BINLOG_MAX_FILES)
        return DBP_EINVAL;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, nc * sizeof(*nv));
        if (!nv)
            return DBP_ENOMEM;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strndup(base, n - 5)))
        return DBP_ENOMEM;
    l->n++;
    return 0;
}

static void bl_names_free(bl_names_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Lists the archived logs under prefix; with `load`, reads every index into out (a
 * damaged index is an error: a log whose place in the order is unknown cannot be
 * skipped silently). */
static int bl_load(backup_store_t *bs, const char *prefix, bool load, bl_names_t *names,
                   bl_list_t *out, dbp_err_t *err)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/", prefix);
    names->skip = strlen(p);
    int rc = backup_store_list(bs, p, bl_list_cb, names, err);
    if (rc == DBP_ENOMEM || rc == DBP_EINVAL)
        return dbp_err_set(err, rc,
                           "listing the binlog archive %s: too many objects or out "
                           "of memory",
                           prefix);
    if (rc || !load)
        return rc;
    out->v = names->n ? calloc(names->n, sizeof(*out->v)) : NULL;
    if (names->n && !out->v)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    for (size_t i = 0; i < names->n && !rc; i++) {
        char key[900], *text = NULL;
        size_t len = 0;
        snprintf(key, sizeof(key), "%s/%s.json", prefix, names->v[i]);
        if ((rc = backup_store_get(bs, key, BK_BINLOG_MAX_INDEX, &text, &len, err)))
            break;
        bl_entry_t *e = &out->v[out->n];
        snprintf(e->base, sizeof(e->base), "%s", names->v[i]);
        if (!bl_index_parse(text, len, e))
            rc = dbp_err_set(err, DBP_ECRYPTO, "binlog index %s is damaged", key);
        else
            out->n++;
        free(text);
    }
    return rc;
}

static bool bl_has(const bl_names_t *l, const char *base)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], base) == 0)
            return true;
    return false;
}

/* ---- shipping ------------------------------------------------------------------------ */

/* Flush state next to the cluster's WAL spool: "<unix s> <open log> <its size>". */
typedef struct bl_state {
    int64_t opened_s; /* when the open log was first seen (or flushed) */
    char open_name[64];
    int64_t open_size;
    uint64_t end_seq; /* GTID sequence number the archive ends at; 0 unknown */
} bl_state_t;

static void bl_state_read(const char *path, bl_state_t *st)
{
    memset(st, 0, sizeof(*st));
    char *buf = NULL;
    size_t len = 0;
    dbp_err_t ignore;
    if (dbp_read_file(path, &buf, &len, &ignore) != 0)
        return;
    long long o = 0, sz = 0;
    unsigned long long e = 0;
    if (sscanf(buf, "%lld %63s %lld %llu", &o, st->open_name, &sz, &e) == 4) {
        st->opened_s = o;
        st->open_size = sz;
        st->end_seq = e;
    } else {
        memset(st, 0, sizeof(*st));
    }
    free(buf);
}

static void bl_state_write(const char *path, const bl_state_t *st)
{
    char line[200];
    int n = snprintf(line, sizeof(line), "%lld %s %lld %llu\n", (long long)st->opened_s,
                     st->open_name[0] ? st->open_name : "-", (long long)st->open_size,
                     (unsigned long long)st->end_seq);
    dbp_err_t e;
    if (dbp_write_file(path, line, (size_t)n, 0600, NULL, &e) != 0)
        dbp_warn("binlog_state_write_failed", "error=%s", dbp_log_q(e.msg));
}

void bk_binlog_status(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                      backup_wal_state_t *st)
{
    char spool[PATH_MAX], state[PATH_MAX + 16];
    ctl_wal_spool_path(spool, sizeof(spool), ctx->data_dir, tenant, cluster);
    snprintf(state, sizeof(state), "%s.binlog", spool);
    bl_state_t bl;
    bl_state_read(state, &bl);
    st->binlog_end_seq = bl.end_seq;
    snprintf(st->binlog_open, sizeof(st->binlog_open), "%s",
             strcmp(bl.open_name, "-") == 0 ? "" : bl.open_name);
    st->binlog_open_since_s = bl.opened_s;
}

int bk_binlog_ship(backup_ctx_t *ctx, const spec_resource_t *c, const spec_resource_t *b,
                   int *shipped, dbp_err_t *err)
{
    if (shipped)
        *shipped = 0;
    const engine_ops_t *ops = engine_lookup((spec_engine_t)c->u.cluster.engine);
    const char *tenant = c->tenant.v, *cluster = c->name.v;
    char spool[PATH_MAX], state[PATH_MAX + 16];
    ctl_wal_spool_path(spool, sizeof(spool), ctx->data_dir, tenant, cluster);
    snprintf(state, sizeof(state), "%s.binlog", spool);
    bl_state_t st;
    bl_state_read(state, &st);
    if (access(state, F_OK) != 0)
        bl_state_write(state, &st); /* its presence keeps the scheduler polling */
    engine_instance_t in;
    int rc = bk_primary(ctx, c, &in, err);
    if (rc)
        return rc;
    engine_binlog_t *logs = calloc(ENGINE_MAX_BINLOGS, sizeof(*logs));
    if (!logs)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    int n = 0;
    int64_t now = (int64_t)time(NULL);
    rc = ops->binlog_list(&in, false, logs, ENGINE_MAX_BINLOGS, &n, err);
    if (!rc && n > 0) {
        const engine_binlog_t *open = &logs[n - 1];
        bool changed = strcmp(open->name, st.open_name) != 0 || open->size != st.open_size;
        if (strcmp(open->name, st.open_name) != 0 || !st.opened_s) {
            st.opened_s = now; /* a log we see for the first time */
            snprintf(st.open_name, sizeof(st.open_name), "%s", open->name);
            st.open_size = open->size;
        } else if (changed && now - st.opened_s >= BK_BINLOG_ARCHIVE_INTERVAL_S) {
            /* New events in a log open for longer than the interval: close it. */
            rc = ops->binlog_list(&in, true, logs, ENGINE_MAX_BINLOGS, &n, err);
            if (!rc && n > 0) {
                st.opened_s = now;
                snprintf(st.open_name, sizeof(st.open_name), "%s", logs[n - 1].name);
                st.open_size = logs[n - 1].size;
            }
        }
    }
    backup_store_t *bs = NULL;
    char *key = NULL;
    bl_names_t have = {0};
    char prefix[600];
    bl_prefix(b, prefix, sizeof(prefix));
    if (!rc && n > 1 && !(rc = bk_open_store(ctx, tenant, b->u.backup.store.v, &bs, err)) &&
        !(rc = bk_backup_key(ctx, b, &key, err)))
        rc = bl_load(bs, prefix, false, &have, NULL, err);
    backup_codec_opts_t co = {.codec = (backup_codec_t)b->u.backup.compression,
                              .key = key,
                              .key_len = key ? strlen(key) : 0};
    int server_id = in.ordinal + 1;
    for (int i = 0; !rc && i < n - 1; i++) { /* every log but the open one */
        if (bk_cancelled(ctx)) {
            rc = dbp_err_set(err, DBP_EIO, "interrupted");
            break;
        }
        bl_entry_t e;
        memset(&e, 0, sizeof(e));
        snprintf(e.base, sizeof(e.base), "%d-%s", server_id, logs[i].name);
        if (bl_has(&have, e.base))
            continue;
        if ((rc = ops->binlog_index(&in, logs[i].path, &e.ix, err)))
            break;
        snprintf(e.object, sizeof(e.object), "%s%s%s", e.base, backup_codec_suffix(co.codec),
                 key ? ".enc" : "");
        char okey[800], ikey[800];
        snprintf(okey, sizeof(okey), "%s/%s", prefix, e.object);
        snprintf(ikey, sizeof(ikey), "%s/%s.json", prefix, e.base);
        backup_part_stat_t ps;
        rc = bk_archive_put_file(bs, logs[i].path, okey, &co, &ps, err);
        if (rc == DBP_ENOENT)
            rc = dbp_err_set(err, DBP_ENOENT, "binary log %s vanished before it was archived",
                             logs[i].path);
        char *json = rc ? NULL : bl_index_json(&e, logs[i].name, server_id, &ps);
        if (!rc && !json)
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        if (!rc)
            rc = backup_store_put(bs, ikey, json, strlen(json), err);
        free(json);
        if (rc)
            break;
        if (shipped)
            (*shipped)++;
        /* Logs are shipped in order: a jump in sequence numbers is a lost transaction. */
        if (st.end_seq && e.ix.start_seq > st.end_seq) {
            char msg[400];
            snprintf(msg, sizeof(msg),
                     "binlog archive gap in cluster %s: GTID sequence numbers %llu to %llu of "
                     "domain %u never reached the archive (before %s); a point-in-time "
                     "restore cannot cross the gap (a new physical backup starts a new window)",
                     cluster, (unsigned long long)st.end_seq + 1,
                     (unsigned long long)e.ix.start_seq, e.ix.domain, logs[i].name);
            bk_event(ctx, tenant, "Backup", b->name.v, "Warning", "WalArchiveGap", msg);
        }
        if (bl_end(&e.ix) > st.end_seq)
            st.end_seq = bl_end(&e.ix);
        dbp_info("binlog_shipped", "tenant=%s cluster=%s file=%s first_gtid=%s last_gtid=%s",
                 tenant, cluster, logs[i].name, e.ix.first_gtid[0] ? e.ix.first_gtid : "-",
                 e.ix.last_gtid[0] ? e.ix.last_gtid : "-");
    }
    if (!rc || (shipped && *shipped))
        bl_state_write(state, &st);
    if (rc)
        dbp_err_prefix(err, "archive binary logs of %s: ", cluster);
    bl_names_free(&have);
    secrets_free_value(key);
    backup_store_close(bs);
    free(logs);
    return rc;
}

/* ---- retention --------------------------------------------------------------------- */

int bk_binlog_expire(backup_ctx_t *ctx, const spec_resource_t *b, backup_store_t *bs,
                     const char *anchor_gtid, int *deleted, dbp_err_t *err)
{
    (void)ctx;
    if (deleted)
        *deleted = 0;
    char prefix[600];
    bl_prefix(b, prefix, sizeof(prefix));
    bl_names_t names = {0};
    bl_list_t all = {0};
    int rc = bl_load(bs, prefix, true, &names, &all, err);
    for (size_t i = 0; i < all.n && !rc; i++) {
        const bl_entry_t *e = &all.v[i];
        bool found;
        uint64_t anchor = bl_seq_of(anchor_gtid, e->ix.domain, &found);
        /* Every transaction of the file is in the anchor run: no restore replays it. */
        if (!found || bl_end(&e->ix) > anchor)
            continue;
        char key[900];
        snprintf(key, sizeof(key), "%s/%s.json", prefix, e->base); /* the index first */
        rc = backup_store_delete(bs, key, err);
        snprintf(key, sizeof(key), "%s/%s", prefix, e->object);
        if (!rc)
            rc = backup_store_delete(bs, key, err);
        if (!rc && deleted)
            (*deleted)++;
    }
    free(all.v);
    bl_names_free(&names);
    return rc;
}

/* ---- restoring ----------------------------------------------------------------------- */

static int bl_cmp(const void *a, const void *b)
{
    const bl_entry_t *x = a, *y = b;
    if (x->ix.start_seq != y->ix.start_seq)
        return x->ix.start_seq < y->ix.start_seq ? -1 : 1;
    if (bl_end(&x->ix) != bl_end(&y->ix))
        return bl_end(&x->ix) < bl_end(&y->ix) ? -1 : 1;
    return strcmp(x->base, y->base);
}

/* The replay of a chain, in segments: a segment is a run of logs that continue each
 * other, replayed from its start GTID; a log that overlaps the one before (after a
 * failover the promoted replica's first log repeats the transactions it replicated
 * from the old primary) starts a new segment at the last GTID replayed, so no
 * transaction is applied twice. */
typedef struct bl_replay {
    const char *const *paths;
    const int *seg_first;  /* index into paths of each segment's first log */
    char (*seg_start)[64]; /* each later segment's start GTID (segment 0: `start`) */
    int n, nseg;
    const char *start;
    int64_t stop_s;
} bl_replay_t;

static int bl_replay_cb(const engine_ops_t *ops, const engine_instance_t *in, void *ud,
                        dbp_err_t *err)
{
    const bl_replay_t *r = ud;
    int rc = 0;
    for (int k = 0; k < r->nseg && !rc; k++) {
        int from = r->seg_first[k], to = k + 1 < r->nseg ? r->seg_first[k + 1] : r->n;
        rc = ops->binlog_replay(in, r->paths + from, to - from, k ? r->seg_start[k] : r->start,
                                r->stop_s, err);
    }
    return rc;
}

int bk_binlog_restore(backup_ctx_t *ctx, backup_store_t *bs, const char *run_path,
                      const backup_manifest_t *m, const char *key, const engine_instance_t *in,
                      int64_t target_ms, char *note, size_t note_cap, dbp_err_t *err)
{
    note[0] = '\0';
    const engine_ops_t *ops = engine_lookup((spec_engine_t)in->spec->engine);
    mdb_gtid_t run;
    const char *runpos = m->start_position;
    if (!ops || !ops->binlog_replay || !ops->binlog_index)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "%s has no binary log replay", m->engine);
    if (mdb_gtid_next(&runpos, &run) <= 0)
        return dbp_err_set(err, DBP_EINVAL, "run %s records no GTID position", m->id);
    uint32_t domain = run.domain;
    /* Binlog event times are whole seconds: events of T's own second are replayed
     * (stop at the first event at or after the next whole second). */
    int64_t stop_s = (target_ms + 999) / 1000;
    char prefix[700];
    bl_prefix_of_run(run_path, prefix, sizeof(prefix));
    bl_names_t names = {0};
    bl_list_t all = {0};
    char dir[PATH_MAX + 64];
    /* Next to the data directory, not inside it (the server would take it for a schema). */
    snprintf(dir, sizeof(dir), "%s.binlog-restore", in->data_dir);
    const char **paths = NULL;
    int *seg_first = NULL;
    char(*seg_start)[64] = NULL;
    int npaths = 0, nseg = 0, rc = bl_load(bs, prefix, true, &names, &all, err);
    if (!rc && all.n)
        qsort(all.v, all.n, sizeof(*all.v), bl_cmp);
    if (!rc && (!(paths = calloc(all.n + 1, sizeof(*paths))) ||
                !(seg_first = calloc(all.n + 1, sizeof(*seg_first))) ||
                !(seg_start = calloc(all.n + 1, sizeof(*seg_start)))))
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if (!rc)
        rc = dbp_mkdir_p(dir, 0700, NULL, err);
    /* The chain of logs from the run's GTID to the target. Each next log holds the next
     * transaction (first_seq <= at + 1); of those, the one reaching farthest: after a
     * failover the old primary's last log and the promoted replica's first one cover
     * the same transactions (log_slave_updates), and the replica's goes on past them.
     * Logs without transactions (first_seq 0) add nothing. */
    uint64_t at = run.seq;
    int64_t archive_end = 0;
    const char *last_gtid = NULL;
    while (!rc) {
        const bl_entry_t *e = NULL, *after = NULL;
        for (size_t i = 0; i < all.n; i++) {
            const bl_entry_t *x = &all.v[i];
            if (x->ix.domain != domain || !x->ix.first_seq || x->ix.last_seq <= at)
                continue; /* another domain, no transactions, or all already replayed */
            if (x->ix.first_time >= stop_s)
                continue; /* begins after the target */
            if (x->ix.first_seq > at + 1) {
                if (!after || x->ix.first_seq < after->ix.first_seq)
                    after = x;
                continue;
            }
            if (!e || x->ix.last_seq > e->ix.last_seq)
                e = x;
        }
        if (!e && !after)
            break; /* the archive has nothing more before the target */
        if (!e) {
            char msg[400];
            snprintf(msg, sizeof(msg),
                     "the binlog archive has a gap: GTID sequence numbers %llu to %llu of "
                     "domain %u (before archived log %s) are missing; the point in time "
                     "cannot be reached from run %s",
                     (unsigned long long)at + 1, (unsigned long long)after->ix.first_seq - 1,
                     domain, after->base, m->id);
            bk_event(ctx, m->tenant, "Backup", m->backup[0] ? m->backup : m->cluster, "Warning",
                     "WalArchiveGap", msg);
            rc = dbp_err_set(err, DBP_ENOENT, "%s", msg);
            break;
        }
        bool enc = strlen(e->object) > 4 && strcmp(e->object + strlen(e->object) - 4, ".enc") == 0;
        if (enc && !key) {
            rc = dbp_err_set(err, DBP_ENOENT,
                             "archived binlog %s is encrypted but the Backup's "
                             "key is not available",
                             e->base);
            break;
        }
        backup_codec_t codec = BACKUP_CODEC_NONE;
        if (strstr(e->object, ".zst"))
            codec = BACKUP_CODEC_ZSTD;
        else if (strstr(e->object, ".gz"))
            codec = BACKUP_CODEC_GZIP;
        char okey[900], dest[PATH_MAX + 200];
        snprintf(okey, sizeof(okey), "%s/%s", prefix, e->object);
        snprintf(dest, sizeof(dest), "%s/%s", dir, e->base);
        backup_codec_opts_t co = {.codec = codec,
                                  .key = enc ? key : NULL,
                                  .key_len = enc ? strlen(key) : 0,
                                  .expect_sha256 = e->sha256};
        rc = bk_archive_get_file(bs, okey, &co, dest, NULL, err);
        /* Event checksums, and the file is the one its index describes. */
        engine_binlog_index_t got;
        if (!rc && !(rc = ops->binlog_index(in, dest, &got, err)) &&
            (got.last_seq != e->ix.last_seq || got.start_seq != e->ix.start_seq))
            rc = dbp_err_set(err, DBP_ECRYPTO, "archived binlog %s does not match its index",
                             e->base);
        if (rc)
            break;
        if (!(paths[npaths] = strdup(dest))) {
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
            break;
        }
        /* A log holding transactions already replayed begins a segment that starts
         * after the last of them. */
        if (npaths == 0 || (e->ix.first_seq <= at && last_gtid && *last_gtid)) {
            seg_first[nseg] = npaths;
            snprintf(seg_start[nseg], sizeof(seg_start[0]), "%s", npaths ? last_gtid : "");
            nseg++;
        }
        npaths++;
        at = e->ix.last_seq;
        last_gtid = e->ix.last_gtid;
        archive_end = e->ix.last_time;
    }
    if (!rc && archive_end < stop_s - 1) {
        char end[32] = "the run";
        if (archive_end)
            backup_format_time(archive_end * 1000, end, sizeof(end));
        snprintf(note, note_cap,
                 "the binlog archive after run %s ends at %s, before the point in time: "
                 "transactions after it (in logs not yet archived) are not restored",
                 m->id, end);
    }
    if (!rc && npaths) {
        bl_replay_t r = {.paths = paths,
                         .seg_first = seg_first,
                         .seg_start = seg_start,
                         .n = npaths,
                         .nseg = nseg,
                         .start = m->start_position,
                         .stop_s = stop_s};
        rc = bk_with_server(ctx, m, in->data_dir, bl_replay_cb, &r, err);
    }
    if (!rc)
        dbp_info("binlog_restored", "run=%s files=%d to_seq=%llu stop=%lld", m->id, npaths,
                 (unsigned long long)at, (long long)stop_s);
    for (int i = 0; i < npaths; i++)
        free((char *)paths[i]);
    free(paths);
    free(seg_first);
    free(seg_start);
    free(all.v);
    bl_names_free(&names);
    dbp_err_t ignore;
    if (dbp_rm_rf(dir, &ignore) != 0)
        dbp_warn("binlog_restore_cleanup_failed", "path=%s", dbp_log_q(dir));
    return rc;
}
