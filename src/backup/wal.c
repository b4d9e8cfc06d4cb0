/*
 * wal.c: continuous archiving of PostgreSQL WAL for point-in-time recovery (PITR), in
 * three places with three privileges:
 *
 *   server (service user)   archive_command = `dbplane wal-push --spool SPOOL %p %f`
 *                           copies each finished segment into the cluster's spool
 *                           directory (temp file, fsync, rename, fsync of the directory).
 *                           It needs neither state.db nor secret.key, which that account
 *                           cannot read: that is the point of the split.
 *   daemon (root)           the scheduler spawns `dbplane wal-ship CLUSTER` whenever the
 *                           spool holds segments; it compresses (and encrypts) each one
 *                           like any backup part into "[prefix/]<tenant>/<cluster>/wal/"
 *                           of the pitr Backup's store, then deletes it from the spool.
 *   restore (root)          a point-in-time restore decodes the archived segments the
 *                           base backup needs into <data dir>/dbplane_wal_restore, where
 *                           restore_command = `dbplane wal-fetch --from DIR %f %p` reads
 *                           them as the service user.
 *
 * Archive objects are named after the WAL file ("000000010000000000000003.zst[.enc]",
 * "00000002.history.zst"); integrity on the way back comes from the codec (zstd frame
 * checksum, AES-GCM tags) and PostgreSQL's own CRC of every WAL record. Gaps (a segment
 * that never reached the archive, e.g. a spool lost with its server) are detected when
 * shipping (segment numbers must follow each other; a WalArchiveGap event says which are
 * missing) and when restoring (recovery only gets the WAL before the first gap).
 * Segment arithmetic assumes PostgreSQL's default 16 MiB segments (dbplane's initdb).
 */
#include "backup/backup_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "control/reconcile.h"

#define WAL_SEG_SIZE (16ULL * 1024 * 1024)
#define WAL_SEGS_PER_ID (0x100000000ULL / WAL_SEG_SIZE)
#define WAL_BUF (256 * 1024)
#define WAL_MAX_FILES 100000

/* ---- names ------------------------------------------------------------------------- */

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

/* Kinds of files PostgreSQL archives. */
typedef enum wal_kind {
    WAL_NONE = 0,
    WAL_SEGMENT, /* 24 hex digits */
    WAL_HISTORY, /* 8 hex digits + ".history" */
    WAL_OTHER,   /* "<segment>.partial", "<segment>.<offset>.backup" */
} wal_kind_t;

static wal_kind_t wal_name_kind(const char *name)
{
    size_t n = strlen(name);
    if (n == 24 && all_hex(name, 24))
        return WAL_SEGMENT;
    if (n == 16 && all_hex(name, 8) && strcmp(name + 8, ".history") == 0)
        return WAL_HISTORY;
    if (n == 32 && all_hex(name, 24) && strcmp(name + 24, ".partial") == 0)
        return WAL_OTHER;
    if (n == 40 && all_hex(name, 24) && name[24] == '.' && all_hex(name + 25, 8) &&
        strcmp(name + 33, ".backup") == 0)
        return WAL_OTHER;
    return WAL_NONE;
}

bool backup_wal_name_valid(const char *name)
{
    return wal_name_kind(name) != WAL_NONE;
}

/* Segment number of a segment-like name (its last 16 hex digits), timeline in *tli. */
static uint64_t wal_segno(const char *name, unsigned *tli)
{
    char t[9], log[9], seg[9];
    memcpy(t, name, 8);
    memcpy(log, name + 8, 8);
    memcpy(seg, name + 16, 8);
    t[8] = log[8] = seg[8] = '\0';
    if (tli)
        *tli = (unsigned)strtoul(t, NULL, 16);
    return strtoull(log, NULL, 16) * WAL_SEGS_PER_ID + strtoull(seg, NULL, 16);
}

uint64_t backup_wal_lsn_segno(const char *lsn)
{
    unsigned long long hi = 0, lo = 0;
    if (!lsn || sscanf(lsn, "%llX/%llX", &hi, &lo) != 2)
        return 0;
    return ((hi << 32) | lo) / WAL_SEG_SIZE;
}

/* ---- the server side: wal-push and wal-fetch ------------------------------------------ */

/* Copies fd `in` to fd `out` (both borrowed). */
static int copy_fd(int in, int out, const char *what, dbp_err_t *err)
{
    char *buf = malloc(WAL_BUF);
    if (!buf)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, WAL_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = dbp_err_set(err, DBP_EIO, "read %s: %s", what, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = dbp_err_set(err, DBP_EIO, "write %s: %s", what, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc)
            break;
    }
    free(buf);
    return rc;
}

/* True when the files at a and b have the same bytes. */
static bool same_file(const char *a, const char *b)
{
    int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
    bool same = fa >= 0 && fb >= 0;
    char *ba = same ? malloc(WAL_BUF) : NULL, *bb = same ? malloc(WAL_BUF) : NULL;
    same = same && ba && bb;
    while (same) {
        ssize_t na = read(fa, ba, WAL_BUF), nb = 0;
        while (na > 0 && nb < na) { /* regular files: short reads only at the end */
            ssize_t k = read(fb, bb + nb, (size_t)(na - nb));
            if (k <= 0)
                break;
            nb += k;
        }
        if (na <= 0) {
            same = na == 0 && read(fb, bb, 1) == 0;
            break;
        }
        same = nb == na && memcmp(ba, bb, (size_t)na) == 0;
    }
    free(ba);
    free(bb);
    if (fa >= 0)
        close(fa);
    if (fb >= 0)
        close(fb);
    return same;
}

static int fsync_dir(const char *dir, dbp_err_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "open %s: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : dbp_err_set(err, DBP_EIO, "fsync %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* Bytes of the WAL files waiting in `spool` (its dot files, temporaries included, are not
 * counted); -1 when it cannot be read. */
static int64_t spool_bytes(const char *spool)
{
    DIR *d = opendir(spool);
    if (!d)
        return -1;
    int64_t sum = 0;
    struct dirent *de;
    struct stat st;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && backup_wal_name_valid(de->d_name) &&
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            sum += st.st_size;
    closedir(d);
    return sum;
}

int backup_wal_push(const char *spool, const char *src, const char *name, uint64_t queue_max,
                    bool *dropped, dbp_err_t *err)
{
    if (dropped)
        *dropped = false;
    if (!backup_wal_name_valid(name))
        return dbp_err_set(err, DBP_EINVAL, "'%s' is not a WAL file name", name);
    char final[PATH_MAX], tmp[PATH_MAX + 32];
    snprintf(final, sizeof(final), "%s/%s", spool, name);
    if (access(final, F_OK) == 0) {
        /* Handed over before (the server retries after a crash): fine when identical. */
        if (same_file(final, src))
            return 0;
        return dbp_err_set(err, DBP_EBUSY, "%s is already in the spool with other contents",
                           name);
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return dbp_err_set(err, DBP_EIO, "open %s: %s", src, strerror(errno));
    /* Only segments are let go: a timeline history file (a few bytes) is what lets a
     * point-in-time restore follow a failover, and costs nothing to keep. */
    bool bounded = queue_max && wal_name_kind(name) == WAL_SEGMENT;
    struct stat sst;
    int64_t used = bounded ? spool_bytes(spool) : 0;
    if (bounded && used >= 0 && fstat(in, &sst) == 0 &&
        (uint64_t)used + (uint64_t)sst.st_size > queue_max) {
        /* The store has not taken what is queued: let this one go rather than keep it
         * until the disk is full. The gap it leaves is reported (wal-ship). */
        close(in);
        char mark[PATH_MAX + 16], line[128];
        snprintf(mark, sizeof(mark), "%s/" BACKUP_WAL_DROPPED, spool);
        int n = snprintf(line, sizeof(line), "%s\n", name);
        int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, line, (size_t)n) != n) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            /* Unrecorded, a drop would go unreported until shipping resumes: keep it. */
            return dbp_err_set(err, DBP_EIO, "record the dropped segment in %s: %s", mark,
                               strerror(e));
        }
        close(fd);
        if (dropped)
            *dropped = true;
        return 0;
    }
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", spool, name, (int)getpid());
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        int e = errno;
        close(in);
        return dbp_err_set(err, DBP_EIO, "create %s: %s", tmp, strerror(e));
    }
    int rc = copy_fd(in, out, tmp, err);
    if (!rc && fsync(out) != 0)
        rc = dbp_err_set(err, DBP_EIO, "fsync %s: %s", tmp, strerror(errno));
    close(in);
    if (close(out) != 0 && !rc)
        rc = dbp_err_set(err, DBP_EIO, "close %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, final) != 0)
        rc = dbp_err_set(err, DBP_EIO, "rename %s: %s", tmp, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return fsync_dir(spool, err);
}

int backup_wal_fetch(const char *from, const char *name, const char *dest, dbp_err_t *err)
{
    if (!backup_wal_name_valid(name) && strcmp(name, "RECOVERYHISTORY") != 0)
        return dbp_err_set(err, DBP_EINVAL, "'%s' is not a WAL file name", name);
    char src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/%s", from, name);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        if (errno == ENOENT)
            return dbp_err_set(err, DBP_ENOENT, "%s is not in the archive", name);
        return dbp_err_set(err, DBP_EIO, "open %s: %s", src, strerror(errno));
    }
    int out = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        int e = errno;
        close(in);
        return dbp_err_set(err, DBP_EIO, "create %s: %s", dest, strerror(e));
    }
    int rc = copy_fd(in, out, dest, err);
    close(in);
    if (close(out) != 0 && !rc)
        rc = dbp_err_set(err, DBP_EIO, "close %s: %s", dest, strerror(errno));
    if (rc)
        unlink(dest);
    return rc;
}

/* ---- names in a directory or a store ------------------------------------------------ */

typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list_t;

static int names_add(name_list_t *l, const char *s)
{
    if (l->n == WAL_MAX_FILES)
        return DBP_EINVAL;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv)
            return DBP_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return DBP_ENOMEM;
    l->n++;
    return 0;
}

static void names_free(name_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The archive's key prefix for the runs under `run_path` ("[prefix/]t/c/<run id>"):
 * "[prefix/]t/c/wal". */
static void wal_prefix_of_run(const char *run_path, char *buf, size_t len)
{
    const char *slash = strrchr(run_path, '/');
    snprintf(buf, len, "%.*s/wal", slash ? (int)(slash - run_path) : 0, run_path);
}

/* The archive's key prefix of Backup b of cluster c. */
static void wal_prefix_of_backup(const spec_resource_t *b, char *buf, size_t len)
{
    const char *prefix = b->u.backup.prefix.v && *b->u.backup.prefix.v ? b->u.backup.prefix.v
                                                                       : NULL;
    snprintf(buf, len, "%s%s%s/%s/wal", prefix ? prefix : "", prefix ? "/" : "", b->tenant.v,
             b->u.backup.cluster.v);
}

/* Splits an archive key's last segment into the WAL name, codec and encryption flag.
 * False when it is not an archived WAL file (a writer's leftover, say). */
static bool parse_archived(const char *base, char *name, size_t cap, backup_codec_t *codec,
                           bool *enc)
{
    snprintf(name, cap, "%s", base);
    size_t n = strlen(name);
    *enc = n > 4 && strcmp(name + n - 4, ".enc") == 0;
    if (*enc)
        name[n -= 4] = '\0';
    *codec = BACKUP_CODEC_NONE;
    if (n > 4 && strcmp(name + n - 4, ".zst") == 0) {
        *codec = BACKUP_CODEC_ZSTD;
        name[n - 4] = '\0';
    } else if (n > 3 && strcmp(name + n - 3, ".gz") == 0) {
        *codec = BACKUP_CODEC_GZIP;
        name[n - 3] = '\0';
    }
    return backup_wal_name_valid(name);
}

typedef struct list_ud {
    size_t skip; /* length of "<prefix>/" */
    name_list_t *keys;
} list_ud_t;

static int list_cb(const char *key, int64_t size, void *ud)
{
    (void)size;
    list_ud_t *l = ud;
    const char *base = key + l->skip;
    if (strchr(base, '/'))
        return 0;
    char name[128];
    backup_codec_t codec;
    bool enc;
    if (strlen(base) >= sizeof(name) || !parse_archived(base, name, sizeof(name), &codec, &enc))
        return 0;
    return names_add(l->keys, base);
}

/* Lists the archived WAL objects under `prefix` (their last key segment), sorted. */
static int list_archive(backup_store_t *bs, const char *prefix, name_list_t *out, dbp_err_t *err)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/", prefix);
    list_ud_t l = {.skip = strlen(p), .keys = out};
    int rc = backup_store_list(bs, p, list_cb, &l, err);
    if (rc == DBP_ENOMEM || rc == DBP_EINVAL)
        return dbp_err_set(err, rc, "listing the WAL archive %s: too many objects or out of "
                                    "memory",
                           prefix);
    if (!rc && out->n)
        qsort(out->v, out->n, sizeof(*out->v), cmp_str);
    return rc;
}

/* ---- the daemon side: shipping the spool ------------------------------------------- */

int bk_archive_put_file(backup_store_t *bs, const char *path, const char *key,
                        const backup_codec_opts_t *co, backup_part_stat_t *st, dbp_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? DBP_ENOENT
                               : dbp_err_set(err, DBP_EIO, "open %s: %s", path, strerror(errno));
    backup_obj_writer_t *w;
    backup_wstream_t *ws = NULL;
    int rc = backup_obj_create(bs, key, &w, err);
    if (!rc)
        rc = backup_wstream_open(&ws, w, co, err);
    char *buf = rc ? NULL : malloc(WAL_BUF);
    if (!rc && !buf)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    while (!rc) {
        ssize_t n = read(fd, buf, WAL_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = dbp_err_set(err, DBP_EIO, "read %s: %s", path, strerror(errno));
        else if (n == 0)
            break;
        else
            rc = backup_wstream_write(ws, buf, (size_t)n, err);
    }
    free(buf);
    close(fd);
    if (rc) {
        backup_wstream_abort(ws);
        return rc;
    }
    backup_part_stat_t ignore;
    return backup_wstream_finish(ws, st ? st : &ignore, err);
}

/* Reads the name of the last segment shipped (state file next to the spool). */
static void last_shipped(const char *state, char *name, size_t cap)
{
    name[0] = '\0';
    char *buf = NULL;
    size_t len = 0;
    dbp_err_t ignore;
    if (dbp_read_file(state, &buf, &len, &ignore) != 0)
        return;
    snprintf(name, cap, "%.*s", (int)strcspn(buf, "\n"), buf);
    free(buf);
    if (wal_name_kind(name) != WAL_SEGMENT)
        name[0] = '\0';
}

/* Reports the segments wal-push dropped because the spool was full (the
 * BACKUP_WAL_DROPPED list, one name per line) as one WalArchiveQueueFull Warning event of
 * Backup b, before anything is shipped, so a store that still refuses everything does not
 * delay it. The list is renamed first: a segment dropped meanwhile starts a new list for
 * the next run. */
static void wal_report_dropped(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                               const spec_resource_t *b, const char *spool)
{
    char mark[PATH_MAX + 16], taken[PATH_MAX + 32];
    snprintf(mark, sizeof(mark), "%s/" BACKUP_WAL_DROPPED, spool);
    snprintf(taken, sizeof(taken), "%s.reporting", mark);
    if (rename(mark, taken) != 0)
        return; /* none (ENOENT), or unreadable: the next run tries again */
    char *buf = NULL;
    size_t len = 0;
    dbp_err_t e;
    if (dbp_read_file(taken, &buf, &len, &e) != 0) {
        /* Left as it is: the hole is still reported as a WalArchiveGap when shipping
         * resumes. */
        dbp_warn("wal_dropped_read_failed", "path=%s error=%s", dbp_log_q(taken), dbp_log_q(e.msg));
        return;
    }
    char first[64] = "", last[64] = "";
    int n = 0;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (l > 0 && l < sizeof(first)) {
            if (!first[0])
                snprintf(first, sizeof(first), "%.*s", (int)l, line);
            snprintf(last, sizeof(last), "%.*s", (int)l, line);
            n++;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    if (n > 0) {
        char qmax[32], msg[600];
        snprintf(qmax, sizeof(qmax), "%llu bytes",
                 (unsigned long long)b->u.backup.archive_queue_max.v);
        snprintf(msg, sizeof(msg),
                 "%d WAL file%s of cluster %s (%s%s%s) not archived: the spool reached "
                 "archiveQueueMax (%s) while the store did not take it; the server keeps "
                 "running, and a point-in-time restore cannot cross the gap (a new physical "
                 "backup starts a new window)",
                 n, n == 1 ? "" : "s", cluster, first, n > 1 ? " to " : "", n > 1 ? last : "",
                 qmax);
        bk_event(ctx, tenant, "Backup", b->name.v, "Warning", "WalArchiveQueueFull", msg);
        dbp_warn("wal_archive_queue_full", "tenant=%s cluster=%s dropped=%d first=%s last=%s",
                 tenant, cluster, n, first, last);
    }
    unlink(taken);
}

int backup_wal_ship(backup_ctx_t *ctx, const char *tenant, const char *cluster, int *shipped,
                    dbp_err_t *err)
{
    if (shipped)
        *shipped = 0;
    const spec_resource_t *b = NULL;
    if (!bk_find(ctx, SPEC_KIND_CLUSTER, tenant, cluster))
        return dbp_err_set(err, DBP_ENOENT, "cluster %s not found in tenant %s", cluster, tenant);
    if (!ctl_cluster_archives(&ctx->set, tenant, cluster, &b))
        return dbp_err_set(err, DBP_EINVAL, "cluster %s has no Backup with pitr: true", cluster);
    /* Engines without archive_command (MariaDB) are polled for closed binary logs. */
    const spec_resource_t *c = bk_find(ctx, SPEC_KIND_CLUSTER, tenant, cluster);
    const engine_ops_t *ops = engine_lookup((spec_engine_t)c->u.cluster.engine);
    if (ops && ops->binlog_list)
        return bk_binlog_ship(ctx, c, b, shipped, err);
    char spool[PATH_MAX], state[PATH_MAX + 8];
    ctl_wal_spool_path(spool, sizeof(spool), ctx->data_dir, tenant, cluster);
    snprintf(state, sizeof(state), "%s.last", spool);
    wal_report_dropped(ctx, tenant, cluster, b, spool);
    name_list_t names = {0};
    DIR *d = opendir(spool);
    if (!d)
        return errno == ENOENT ? 0 : dbp_err_set(err, DBP_EIO, "open %s: %s", spool,
                                                 strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d)))
        if (de->d_name[0] != '.' && backup_wal_name_valid(de->d_name))
            rc = names_add(&names, de->d_name);
    closedir(d);
    if (rc) {
        names_free(&names);
        return dbp_err_set(err, rc, "listing %s: too many files or out of memory", spool);
    }
    if (names.n == 0)
        return 0;
    qsort(names.v, names.n, sizeof(*names.v), cmp_str);

    backup_store_t *bs = NULL;
    char *key = NULL;
    if ((rc = bk_open_store(ctx, tenant, b->u.backup.store.v, &bs, err)) ||
        (rc = bk_backup_key(ctx, b, &key, err))) {
        backup_store_close(bs);
        names_free(&names);
        return rc;
    }
    backup_codec_opts_t co = {.codec = (backup_codec_t)b->u.backup.compression,
                              .key = key, .key_len = key ? strlen(key) : 0};
    char prefix[600], last[64];
    wal_prefix_of_backup(b, prefix, sizeof(prefix));
    last_shipped(state, last, sizeof(last));
    for (size_t i = 0; i < names.n && !rc; i++) {
        if (bk_cancelled(ctx)) {
            rc = dbp_err_set(err, DBP_EIO, "interrupted");
            break;
        }
        const char *name = names.v[i];
        char path[PATH_MAX + 64], okey[800];
        snprintf(path, sizeof(path), "%s/%s", spool, name);
        snprintf(okey, sizeof(okey), "%s/%s%s%s", prefix, name, backup_codec_suffix(co.codec),
                 key ? ".enc" : "");
        rc = bk_archive_put_file(bs, path, okey, &co, NULL, err);
        if (rc == DBP_ENOENT) { /* shipped meanwhile by another wal-ship */
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (unlink(path) != 0 && errno != ENOENT)
            dbp_warn("wal_spool_unlink_failed", "path=%s error=%s", dbp_log_q(path),
                     dbp_log_q(strerror(errno)));
        if (shipped)
            (*shipped)++;
        if (wal_name_kind(name) != WAL_SEGMENT)
            continue;
        /* Segments are archived in order; a jump means some never reached the spool. */
        if (last[0] && wal_segno(name, NULL) > wal_segno(last, NULL) + 1) {
            char msg[400];
            snprintf(msg, sizeof(msg),
                     "WAL archive gap in cluster %s: the segments after %s and before %s never "
                     "reached the archive; a point-in-time restore cannot cross the gap (a new "
                     "physical backup starts a new window)",
                     cluster, last, name);
            bk_event(ctx, tenant, "Backup", b->name.v, "Warning", "WalArchiveGap", msg);
        }
        if (!last[0] || wal_segno(name, NULL) > wal_segno(last, NULL)) {
            snprintf(last, sizeof(last), "%s", name);
            char line[64];
            int n = snprintf(line, sizeof(line), "%s\n", last);
            dbp_err_t e2;
            if (dbp_write_file(state, line, (size_t)n, 0600, NULL, &e2) != 0)
                dbp_warn("wal_state_write_failed", "error=%s", dbp_log_q(e2.msg));
        }
    }
    if (!rc && fsync_dir(spool, err) != 0)
        rc = DBP_EIO;
    if (rc)
        dbp_err_prefix(err, "archive WAL of %s into %s: ", cluster, backup_store_describe(bs));
    else
        dbp_info("wal_shipped", "tenant=%s cluster=%s files=%d last=%s store=%s", tenant, cluster,
                 shipped ? *shipped : 0, last[0] ? last : "-",
                 dbp_log_q(backup_store_describe(bs)));
    secrets_free_value(key);
    backup_store_close(bs);
    names_free(&names);
    return rc;
}

/* ---- retention --------------------------------------------------------------------- */

int bk_wal_expire(backup_ctx_t *ctx, const spec_resource_t *b, backup_store_t *bs,
                  const char *anchor_lsn, int *deleted, dbp_err_t *err)
{
    if (deleted)
        *deleted = 0;
    if (anchor_lsn && strchr(anchor_lsn, '-') && !strchr(anchor_lsn, '/'))
        return bk_binlog_expire(ctx, b, bs, anchor_lsn, deleted, err); /* a GTID: MariaDB */
    uint64_t anchor = backup_wal_lsn_segno(anchor_lsn);
    if (anchor == 0)
        return 0; /* no base backup to anchor the window: keep everything */
    char prefix[600];
    wal_prefix_of_backup(b, prefix, sizeof(prefix));
    name_list_t keys = {0};
    int rc = list_archive(bs, prefix, &keys, err);
    for (size_t i = 0; i < keys.n && !rc; i++) {
        char name[128];
        backup_codec_t codec;
        bool enc;
        parse_archived(keys.v[i], name, sizeof(name), &codec, &enc);
        wal_kind_t k = wal_name_kind(name);
        if (k == WAL_HISTORY || wal_segno(name, NULL) >= anchor)
            continue; /* timeline histories are tiny and needed to follow any timeline */
        char okey[800];
        snprintf(okey, sizeof(okey), "%s/%s", prefix, keys.v[i]);
        rc = backup_store_delete(bs, okey, err);
        if (!rc && deleted)
            (*deleted)++;
    }
    names_free(&keys);
    return rc;
}

/* ---- the restore side ---------------------------------------------------------------- */

int bk_pitr_target(const char *rfc3339, char *out, size_t cap, int64_t *ms, dbp_err_t *err)
{
    time_t t;
    char e[256];
    if (spec_parse_rfc3339(rfc3339, &t, e, sizeof(e)) != 0)
        return dbp_err_set(err, DBP_EINVAL, "point in time: %s", e);
    /* Keep the fraction of a second: recovery stops between two commits that close. */
    const char *dot = strchr(rfc3339, '.');
    char frac[16] = "";
    if (dot) {
        size_t n = strspn(dot + 1, "0123456789");
        snprintf(frac, sizeof(frac), ".%.*s", (int)(n > 6 ? 6 : n), dot + 1);
    }
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, cap, "%s%s+00", base, frac);
    *ms = (int64_t)t * 1000 + (dot ? (int64_t)(strtod(frac, NULL) * 1000.0) : 0);
    return 0;
}

int bk_archive_get_file(backup_store_t *bs, const char *okey, const backup_codec_opts_t *co,
                        const char *dest, const dbp_runas_t *ra, dbp_err_t *err)
{
    backup_obj_reader_t *r;
    int rc = backup_obj_open(bs, okey, &r, NULL, err);
    if (rc)
        return rc;
    backup_rstream_t *rs;
    if ((rc = backup_rstream_open(&rs, r, co, err)))
        return rc;
    int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        backup_rstream_close(rs);
        return dbp_err_set(err, DBP_EIO, "create %s: %s", dest, strerror(errno));
    }
    char *buf = malloc(WAL_BUF);
    if (!buf)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    while (!rc) {
        long n = backup_rstream_read(rs, buf, WAL_BUF, err);
        if (n < 0)
            rc = (int)n;
        if (n <= 0)
            break;
        for (long off = 0; off < n && !rc;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR)
                rc = dbp_err_set(err, DBP_EIO, "write %s: %s", dest, strerror(errno));
            off += w > 0 ? w : 0;
        }
    }
    free(buf);
    backup_rstream_close(rs);
    if (!rc && ra && ra->drop && fchown(fd, ra->uid, ra->gid) != 0)
        rc = dbp_err_set(err, DBP_EIO, "chown %s: %s", dest, strerror(errno));
    close(fd);
    if (rc) {
        dbp_err_prefix(err, "archived %s: ", okey);
        unlink(dest);
    }
    return rc;
}

int bk_wal_prefetch(backup_ctx_t *ctx, backup_store_t *bs, const char *run_path,
                    const backup_manifest_t *m, const char *key, const char *dir,
                    char *note, size_t note_cap, dbp_err_t *err)
{
    note[0] = '\0';
    uint64_t start = backup_wal_lsn_segno(m->start_position);
    unsigned base_tli = (unsigned)strtoul(m->timeline[0] ? m->timeline : "1", NULL, 10);
    if (!start)
        return dbp_err_set(err, DBP_EINVAL, "run %s records no WAL start position", m->id);
    char prefix[700];
    wal_prefix_of_run(run_path, prefix, sizeof(prefix));
    name_list_t keys = {0};
    int rc = list_archive(bs, prefix, &keys, err);
    if (rc)
        return rc;
    /* Which segment numbers the archive has from the base backup's start on: recovery
     * can use the WAL up to the first one missing. */
    uint64_t *segs = keys.n ? malloc(keys.n * sizeof(*segs)) : NULL;
    size_t nsegs = 0;
    if (keys.n && !segs) {
        names_free(&keys);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < keys.n; i++) {
        char name[128];
        backup_codec_t codec;
        bool enc;
        parse_archived(keys.v[i], name, sizeof(name), &codec, &enc);
        unsigned tli;
        if (wal_name_kind(name) == WAL_SEGMENT && wal_segno(name, &tli) >= start &&
            tli >= base_tli)
            segs[nsegs++] = wal_segno(name, NULL);
    }
    if (nsegs)
        qsort(segs, nsegs, sizeof(*segs), cmp_u64);
    uint64_t next = start, last_seen = nsegs ? segs[nsegs - 1] : 0;
    for (size_t i = 0; i < nsegs && segs[i] <= next; i++)
        if (segs[i] == next)
            next++;
    free(segs);
    if (next <= last_seen)
        snprintf(note, note_cap,
                 "the WAL archive has a gap: segment number %llu is missing (archived up to "
                 "%llu); recovery can reach only the times before the gap",
                 (unsigned long long)next, (unsigned long long)last_seen);
    int fetched = 0;
    for (size_t i = 0; i < keys.n && !rc; i++) {
        char name[128];
        backup_codec_t codec;
        bool enc;
        parse_archived(keys.v[i], name, sizeof(name), &codec, &enc);
        wal_kind_t k = wal_name_kind(name);
        unsigned tli = 0;
        if (k == WAL_OTHER)
            continue;
        if (k == WAL_SEGMENT) {
            uint64_t seg = wal_segno(name, &tli);
            if (seg < start || seg >= next || tli < base_tli)
                continue;
        }
        if (enc && !key) {
            rc = dbp_err_set(err, DBP_ENOENT, "archived WAL %s is encrypted but the Backup's "
                                              "key is not available",
                             name);
            break;
        }
        char okey[800], dest[PATH_MAX + 64];
        snprintf(okey, sizeof(okey), "%s/%s", prefix, keys.v[i]);
        snprintf(dest, sizeof(dest), "%s/%s", dir, name);
        backup_codec_opts_t co = {.codec = codec, .key = enc ? key : NULL,
                                  .key_len = enc ? strlen(key) : 0};
        rc = bk_archive_get_file(bs, okey, &co, dest, &ctx->runas, err);
        if (!rc)
            fetched++;
    }
    names_free(&keys);
    if (!rc)
        dbp_info("wal_prefetched", "run=%s files=%d from_segment=%llu to_segment=%llu", m->id,
                 fetched, (unsigned long long)start, (unsigned long long)(next - 1));
    return rc;
}

int bk_wal_copy_spool(backup_ctx_t *ctx, const char *tenant, const char *cluster,
                      const backup_manifest_t *m, const char *dir, dbp_err_t *err)
{
    uint64_t start = backup_wal_lsn_segno(m->start_position);
    char spool[PATH_MAX];
    ctl_wal_spool_path(spool, sizeof(spool), ctx->data_dir, tenant, cluster);
    DIR *d = opendir(spool);
    if (!d)
        return 0;
    struct dirent *de;
    int rc = 0, copied = 0;
    while (!rc && (de = readdir(d))) {
        wal_kind_t k = de->d_name[0] == '.' ? WAL_NONE : wal_name_kind(de->d_name);
        if (k != WAL_SEGMENT && k != WAL_HISTORY)
            continue;
        if (k == WAL_SEGMENT && wal_segno(de->d_name, NULL) < start)
            continue;
        char src[PATH_MAX + 64], dest[PATH_MAX + 64];
        snprintf(src, sizeof(src), "%s/%s", spool, de->d_name);
        snprintf(dest, sizeof(dest), "%s/%s", dir, de->d_name);
        int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0)
            continue; /* shipped (and so fetched from the archive) meanwhile */
        int out = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
            rc = dbp_err_set(err, DBP_EIO, "create %s: %s", dest, strerror(errno));
        } else {
            rc = copy_fd(in, out, dest, err);
            if (!rc && ctx->runas.drop && fchown(out, ctx->runas.uid, ctx->runas.gid) != 0)
                rc = dbp_err_set(err, DBP_EIO, "chown %s: %s", dest, strerror(errno));
            close(out);
            copied += rc == 0;
        }
        close(in);
    }
    closedir(d);
    if (!rc)
        dbp_debug("wal_spool_copied", "cluster=%s files=%d", cluster, copied);
    return rc;
}

int backup_wal_status(backup_ctx_t *ctx, const char *tenant, backup_wal_status_fn cb, void *ud)
{
    for (size_t i = 0; i < ctx->set.n; i++) {
        const spec_resource_t *b = ctx->set.items[i];
        if (b->kind != SPEC_KIND_BACKUP || !b->u.backup.pitr.v || !b->u.backup.cluster.v ||
            (tenant && strcmp(b->tenant.v, tenant) != 0))
            continue;
        backup_wal_state_t st;
        memset(&st, 0, sizeof(st));
        st.tenant = b->tenant.v;
        st.cluster = b->u.backup.cluster.v;
        st.backup = b->name.v;
        st.archive = "wal";
        const spec_resource_t *c = bk_find(ctx, SPEC_KIND_CLUSTER, st.tenant, st.cluster);
        const engine_ops_t *ops = c ? engine_lookup((spec_engine_t)c->u.cluster.engine) : NULL;
        if (ops && ops->binlog_list) { /* MariaDB: binary logs, polled (binlog.c) */
            st.archive = "binlog";
            bk_binlog_status(ctx, st.tenant, st.cluster, &st);
            int rc = cb(&st, ud);
            if (rc)
                return rc;
            continue;
        }
        char spool[PATH_MAX], state[PATH_MAX + 8];
        ctl_wal_spool_path(spool, sizeof(spool), ctx->data_dir, st.tenant, st.cluster);
        snprintf(state, sizeof(state), "%s.last", spool);
        last_shipped(state, st.last_shipped, sizeof(st.last_shipped));
        DIR *d = opendir(spool);
        struct dirent *de;
        while (d && (de = readdir(d)))
            st.spooled += de->d_name[0] != '.' && backup_wal_name_valid(de->d_name);
        if (d)
            closedir(d);
        int rc = cb(&st, ud);
        if (rc)
            return rc;
    }
    return 0;
}
