/*
 * redis_backup.c: RDB backups, restores and inventories of Redis servers (engine.h's
 * optional backup operations; redis_int.h).
 *
 * A physical backup is the RDB snapshot a replica would receive, read over the
 * replication protocol the way `redis-cli --rdb` does: dbplane logs in as dbplane-admin
 * over the instance's socket, announces `REPLCONF capa eof` and `REPLCONF rdb-only 1`,
 * and sends `PSYNC ? -1`. The server answers `+FULLRESYNC <replid> <offset>` (the
 * snapshot's place in the replication stream, recorded in the manifest) and, because the
 * client accepts EOF-marked transfers, streams the RDB straight from a forked child to
 * the socket (diskless: nothing is written to the source's disk, which matters for cache
 * clusters that must restart empty), ending with a 40-byte random mark; a server set to
 * disk-based sync sends `$<length>` first instead, and both are handled. With target
 * PreferReplica the backup core picks a replica, which forks for the snapshot itself, so
 * the primary is not touched. The stream goes to the caller 256 KiB at a time; only the
 * last 40 bytes are held back, to find the end mark.
 *
 * A restore writes the stream as dump.rdb into a new, empty data directory (owned by the
 * service user) and checks it with `redis-check-rdb` (RDB structure and its CRC64) before
 * anything starts from it. Redis ignores the RDB when AOF is on and no AOF exists (it
 * would start empty), so the restored dir carries a marker: render_config writes
 * `appendonly no` for the first start, then, once the server has loaded the RDB,
 * rdb_restore_pending() turns AOF on with CONFIG SET (Redis rewrites the AOF from memory)
 * and removes the marker when the rewrite has succeeded — the procedure Redis's own
 * documentation gives for restoring into AOF-enabled servers.
 *
 * Logical backups do not exist for Redis: validation refuses `type: logical` for a Redis
 * cluster, and the driver has no backup_logical operation.
 */
#include "engines/redis_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define RDB_BUF (256 * 1024)
#define RDB_IDLE_MS (120 * 1000) /* no byte from the source for this long: give up */
#define RDB_MARK_LEN 40
#define RDB_FILE "dump.rdb"
#define RDB_RESTORE_MARKER ".dbplane-restored-rdb"
#define RDB_TOOL_TIMEOUT_MS (3600 * 1000)

/* ---- reading the replication stream ------------------------------------------------- */

/* A buffered reader over the raw socket, once hiredis is done with it. */
typedef struct rdb_reader {
    int fd;
    char *buf; /* RDB_BUF bytes */
    size_t off, len;
} rdb_reader_t;

/* Reads more bytes into the (emptied) buffer: > 0, or a negative code with err. */
static int rdb_fill(rdb_reader_t *r, dbp_err_t *err)
{
    if (r->off == r->len)
        r->off = r->len = 0;
    if (r->len == RDB_BUF)
        return dbp_err_set(err, DBP_EIO, "replication header too long");
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    for (;;) {
        int n = poll(&pfd, 1, RDB_IDLE_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return dbp_err_set(err, DBP_EIO, "poll: %s", strerror(errno));
        if (n == 0)
            return dbp_err_set(err, DBP_EIO, "no data from the server for %d s",
                               RDB_IDLE_MS / 1000);
        ssize_t got = read(r->fd, r->buf + r->len, RDB_BUF - r->len);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got < 0)
            return dbp_err_set(err, DBP_EIO, "read: %s", strerror(errno));
        if (got == 0)
            return dbp_err_set(err, DBP_EIO, "the server closed the connection mid-transfer");
        r->len += (size_t)got;
        return (int)got;
    }
}

/* Reads one protocol line (without "\r\n") into line; empty lines are the keepalive
 * newlines a server sends while it prepares the snapshot. */
static int rdb_line(rdb_reader_t *r, char *line, size_t cap, dbp_err_t *err)
{
    for (;;) {
        char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
        if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->off));
            size_t k = n > 0 && r->buf[r->off + n - 1] == '\r' ? n - 1 : n;
            if (k >= cap)
                return dbp_err_set(err, DBP_EIO, "replication header too long");
            memcpy(line, r->buf + r->off, k);
            line[k] = '\0';
            r->off += n + 1;
            return 0;
        }
        if (r->off > 0) { /* keep the partial line at the start */
            memmove(r->buf, r->buf + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        }
        int rc = rdb_fill(r, err);
        if (rc < 0)
            return rc;
    }
}

/* The next non-empty protocol line. */
static int rdb_header(rdb_reader_t *r, char *line, size_t cap, dbp_err_t *err)
{
    for (int i = 0; i < 100000; i++) {
        int rc = rdb_line(r, line, cap, err);
        if (rc)
            return rc;
        if (line[0])
            return 0;
    }
    return dbp_err_set(err, DBP_EIO, "no reply from the server");
}

/* Bytes of the payload: what is left in the buffer first, then fresh reads. */
static int rdb_chunk(rdb_reader_t *r, const char **p, size_t *n, dbp_err_t *err)
{
    if (r->off == r->len) {
        int rc = rdb_fill(r, err);
        if (rc < 0)
            return rc;
    }
    *p = r->buf + r->off;
    *n = r->len - r->off;
    r->off = r->len;
    return 0;
}

/* Sends all of s on the raw socket. */
static int rdb_send(int fd, const char *s, dbp_err_t *err)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = write(fd, s + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return dbp_err_set(err, DBP_EIO, "write: %s", strerror(errno));
        off += (size_t)n;
    }
    return 0;
}

/* Streams the payload announced by `hdr` ("$<len>" or "$EOF:<mark>") into write. */
static int rdb_payload(rdb_reader_t *r, const char *hdr, engine_write_fn write, void *ud,
                       dbp_err_t *err)
{
    const char *p;
    size_t n;
    int rc;
    if (strncmp(hdr, "$EOF:", 5) == 0) {
        if (strlen(hdr + 5) != RDB_MARK_LEN)
            return dbp_err_set(err, DBP_EIO, "bad end mark in the transfer header");
        char mark[RDB_MARK_LEN], hold[RDB_MARK_LEN];
        memcpy(mark, hdr + 5, RDB_MARK_LEN);
        size_t hlen = 0;
        for (;;) {
            if ((rc = rdb_chunk(r, &p, &n, err)))
                return rc;
            if (hlen + n <= RDB_MARK_LEN) {
                memcpy(hold + hlen, p, n);
                hlen += n;
            } else {
                /* Everything but the last RDB_MARK_LEN bytes seen so far is RDB. */
                size_t emit = hlen + n - RDB_MARK_LEN, from_hold = emit < hlen ? emit : hlen;
                if (from_hold && (rc = write(ud, hold, from_hold, err)))
                    return rc;
                memmove(hold, hold + from_hold, hlen - from_hold);
                hlen -= from_hold;
                size_t from_p = emit - from_hold;
                if (from_p && (rc = write(ud, p, from_p, err)))
                    return rc;
                memcpy(hold + hlen, p + from_p, n - from_p);
                hlen += n - from_p;
            }
            if (hlen == RDB_MARK_LEN && memcmp(hold, mark, RDB_MARK_LEN) == 0)
                return 0;
        }
    }
    char *end;
    long long left = strtoll(hdr + 1, &end, 10);
    if (hdr[0] != '$' || *end || left < 0)
        return dbp_err_set(err, DBP_EIO, "unexpected transfer header from the server");
    while (left > 0) {
        if ((rc = rdb_chunk(r, &p, &n, err)))
            return rc;
        if ((long long)n > left) { /* the replication stream that follows is not ours */
            n = (size_t)left;
        }
        if ((rc = write(ud, p, n, err)))
            return rc;
        left -= (long long)n;
    }
    return 0;
}

int rdb_read_transfer(int fd, engine_backup_info_t *info, engine_write_fn write, void *ud,
                      dbp_err_t *err)
{
    rdb_reader_t r = {.fd = fd, .buf = malloc(RDB_BUF)};
    if (!r.buf)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    char line[256], replid[48] = "";
    long long offset = -1;
    int rc = rdb_header(&r, line, sizeof(line), err);
    if (!rc && line[0] == '-')
        rc = dbp_err_set(err, DBP_EENGINE, "PSYNC refused: %s", line + 1);
    if (!rc && sscanf(line, "+FULLRESYNC %47s %lld", replid, &offset) != 2)
        rc = dbp_err_set(err, DBP_EIO, "unexpected reply to PSYNC");
    if (!rc) {
        snprintf(info->timeline, sizeof(info->timeline), "%s", replid);
        snprintf(info->start_position, sizeof(info->start_position), "%lld", offset);
        rc = rdb_header(&r, line, sizeof(line), err);
    }
    if (!rc && line[0] == '-')
        rc = dbp_err_set(err, DBP_EENGINE, "snapshot failed: %s", line + 1);
    if (!rc)
        rc = rdb_payload(&r, line, write, ud, err);
    free(r.buf);
    return rc;
}

int rdb_backup_physical(const engine_instance_t *in, engine_backup_info_t *info,
                        engine_write_fn write, void *ud, dbp_err_t *err)
{
    memset(info, 0, sizeof(*info));
    redisContext *c = rd_connect(in, 10000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    int rc = 0;
    char *inf = NULL;
    redisReply *rep = NULL;
    if (!(inf = rd_info_all(c, err))) {
        rc = DBP_EENGINE;
        goto out;
    }
    rd_info(inf, "redis_version", info->version, sizeof(info->version));
    /* capa eof: the server may stream a diskless snapshot; rdb-only (7.0+): we want the
     * snapshot, not the command stream after it. */
    if (!(rep = rd_cmd(c, err, "REPLCONF", "capa", "eof", NULL))) {
        rc = DBP_EENGINE;
        goto out;
    }
    freeReplyObject(rep);
    dbp_err_t ignore;
    if ((rep = rd_cmd(c, &ignore, "REPLCONF", "rdb-only", "1", NULL)))
        freeReplyObject(rep);
    /* From here on the socket is read raw: hiredis has no byte of it buffered (every
     * reply above was read whole). */
    if ((rc = rdb_send(c->fd, "PSYNC ? -1\r\n", err)))
        goto out;
    rc = rdb_read_transfer(c->fd, info, write, ud, err);
out:
    if (rc)
        dbp_err_prefix(err, "RDB snapshot of %s: ", in->name);
    free(inf);
    redisFree(c);
    return rc;
}

/* ---- restore ------------------------------------------------------------------------ */

/* Writes the stream into a new file `path` (0600, the service user's), fsynced. */
static int rdb_write_file(const engine_instance_t *in, const char *path, engine_read_fn read,
                          void *ud, dbp_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "create %s: %s", path, strerror(errno));
    int rc = 0;
    if (in->runas->drop && fchown(fd, in->runas->uid, in->runas->gid) != 0)
        rc = dbp_err_set(err, DBP_EIO, "chown %s: %s", path, strerror(errno));
    char *buf = rc ? NULL : malloc(RDB_BUF);
    if (!rc && !buf)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    while (rc == 0) {
        long n = read(ud, buf, RDB_BUF, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n && rc == 0;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                rc = dbp_err_set(err, DBP_EIO, "write %s: %s", path, strerror(errno));
            else
                off += w;
        }
    }
    free(buf);
    if (rc == 0 && fsync(fd) != 0)
        rc = dbp_err_set(err, DBP_EIO, "fsync %s: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = dbp_err_set(err, DBP_EIO, "close %s: %s", path, strerror(errno));
    return rc;
}

int rdb_restore_physical(const engine_instance_t *in, const engine_restore_opts_t *opts,
                         engine_read_fn read, void *ud, dbp_err_t *err)
{
    if (opts && opts->recovery_target_time)
        return dbp_err_set(err, DBP_EUNSUPPORTED, "Redis has no point-in-time restore");
    int rc = dbp_restore_target(in->data_dir, in->runas, err);
    if (rc)
        return rc;
    char path[PATH_MAX + 32], marker[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/" RDB_FILE, in->data_dir);
    rc = rdb_write_file(in, path, read, ud, err);
    if (!rc) {
        /* The structure and CRC64 of the RDB, before any server starts from it. */
        char *argv[] = {RD_CHECK_RDB_BIN, path, NULL};
        if ((rc = dbp_proc_run(argv, NULL, in->runas, in->tool_log_path, RDB_TOOL_TIMEOUT_MS, err)))
            dbp_err_prefix(err, "redis-check-rdb: ");
    }
    if (!rc) {
        snprintf(marker, sizeof(marker), "%s/" RDB_RESTORE_MARKER, in->data_dir);
        rc = dbp_write_file(marker, "1\n", 2, 0600, in->runas, err);
    }
    if (!rc) {
        snprintf(marker, sizeof(marker), "%s/" RD_INIT_MARKER, in->data_dir);
        rc = dbp_write_file(marker, "1\n", 2, 0600, in->runas, err);
    }
    if (rc) {
        dbp_err_prefix(err, "restore into %s: ", in->name);
        dbp_err_t ignore;
        if (dbp_rm_rf(in->data_dir, &ignore) != 0)
            dbp_warn("restore_cleanup_failed", "path=%s error=%s", dbp_log_q(in->data_dir),
                     dbp_log_q(ignore.msg));
    }
    return rc;
}

rdb_restore_state_t rdb_restore_pending(const engine_instance_t *in, bool want_aof)
{
    char marker[PATH_MAX + 32];
    snprintf(marker, sizeof(marker), "%s/" RDB_RESTORE_MARKER, in->data_dir);
    if (access(marker, F_OK) != 0)
        return RDB_RESTORE_NONE;
    if (!want_aof) {
        if (unlink(marker) != 0 && errno != ENOENT)
            dbp_warn("unlink_failed", "path=%s error=%s", dbp_log_q(marker), strerror(errno));
        return RDB_RESTORE_NONE;
    }
    dbp_err_t err;
    redisContext *c = rd_connect(in, 1000, NULL, &err);
    if (!c)
        return RDB_RESTORE_FIRST_START; /* not started yet: the first start is without AOF */
    rdb_restore_state_t st = RDB_RESTORE_FIRST_START;
    char *inf = rd_info_all(c, &err);
    if (inf && rd_info_i64(inf, "loading", 1) == 0) {
        char status[16] = "";
        rd_info(inf, "aof_last_bgrewrite_status", status, sizeof(status));
        if (rd_info_i64(inf, "aof_enabled", 0) == 0) {
            redisReply *r = rd_cmd(c, &err, "CONFIG", "SET", "appendonly", "yes", NULL);
            if (r) {
                freeReplyObject(r);
                st = RDB_RESTORE_TO_AOF;
                dbp_info("redis_restore_aof_rewrite", "instance=%s", in->name);
            } else {
                dbp_warn("redis_restore_aof_failed", "instance=%s error=%s", in->name,
                         dbp_log_q(err.msg));
            }
        } else if (rd_info_i64(inf, "aof_rewrite_in_progress", 1) == 0 &&
                   rd_info_i64(inf, "aof_rewrite_scheduled", 1) == 0 && strcmp(status, "ok") == 0) {
            if (unlink(marker) == 0 || errno == ENOENT) {
                st = RDB_RESTORE_NONE;
                dbp_info("redis_restore_complete", "instance=%s", in->name);
            } else {
                st = RDB_RESTORE_TO_AOF;
            }
        } else {
            st = RDB_RESTORE_TO_AOF;
        }
    }
    free(inf);
    redisFree(c);
    return st;
}

/* ---- inventory ---------------------------------------------------------------------- */

/* Reads every key of the selected database (MEMORY USAGE ... SAMPLES 0 walks each value
 * whole), pipelined per SCAN batch; counts them into db->rows. */
static int rdb_read_db(redisContext *c, engine_db_inventory_t *db, dbp_err_t *err)
{
    char cursor[32] = "0";
    db->rows = 0;
    for (long pass = 0; pass < 100000000; pass++) {
        redisReply *r = rd_cmd(c, err, "SCAN", cursor, "COUNT", "1000", NULL);
        if (!r)
            return DBP_EENGINE;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return dbp_err_set(err, DBP_EENGINE, "SCAN: unexpected reply");
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *k = keys->element[i];
            const char *argv[] = {"MEMORY", "USAGE", k->str, "SAMPLES", "0"};
            size_t lens[] = {6, 5, k->len, 7, 1};
            redisAppendCommandArgv(c, 5, argv, lens);
        }
        int rc = 0;
        for (size_t i = 0; i < keys->elements; i++) {
            void *v = NULL;
            if (redisGetReply(c, &v) != REDIS_OK) {
                rc = dbp_err_set(err, DBP_EENGINE, "read %s: %s", db->name, c->errstr);
                break;
            }
            redisReply *u = v;
            if (u->type == REDIS_REPLY_ERROR && rc == 0)
                rc = dbp_err_set(err, DBP_EENGINE, "read %s: %s", db->name, u->str);
            else if (u->type == REDIS_REPLY_INTEGER)
                db->rows++;
            freeReplyObject(u);
        }
        freeReplyObject(r);
        if (rc)
            return rc;
        if (strcmp(cursor, "0") == 0)
            return 0;
    }
    return dbp_err_set(err, DBP_EENGINE, "SCAN of %s did not finish", db->name);
}

int rdb_inventory(const engine_instance_t *in, engine_inv_depth_t depth,
                  engine_inventory_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    redisContext *c = rd_connect(in, 10000, NULL, err);
    if (!c)
        return DBP_EENGINE;
    int rc = 0;
    char *inf = rd_info_all(c, err), role[16] = "";
    if (!inf) {
        rc = DBP_EENGINE;
        goto out;
    }
    rd_info(inf, "redis_version", out->version, sizeof(out->version));
    rd_info(inf, "role", role, sizeof(role));
    /* Still loading its data, or a replica: not a server to read a restore from. */
    out->in_recovery = rd_info_i64(inf, "loading", 0) != 0 || strcmp(role, "slave") == 0;
    /* Keyspace lines: "db0:keys=12,expires=1,avg_ttl=0". Redis has no tables: a logical
     * database is listed with tables 0, and its keys count as rows. */
    for (int n = 0; n < 256 && out->ndb < ENGINE_MAX_DATABASES; n++) {
        char key[16], v[128];
        snprintf(key, sizeof(key), "db%d", n);
        if (!rd_info(inf, key, v, sizeof(v)) || strncmp(v, "keys=", 5) != 0)
            continue;
        engine_db_inventory_t *db = &out->dbs[out->ndb++];
        snprintf(db->name, sizeof(db->name), "%s", key);
        db->tables = 0;
        db->rows = -1;
    }
    for (int i = 0; depth == ENGINE_INV_FULL_READ && rc == 0 && i < out->ndb; i++) {
        redisReply *r = rd_cmd(c, err, "SELECT", out->dbs[i].name + 2, NULL);
        if (!r) {
            rc = DBP_EENGINE;
            break;
        }
        freeReplyObject(r);
        rc = rdb_read_db(c, &out->dbs[i], err);
    }
out:
    free(inf);
    redisFree(c);
    return rc;
}
