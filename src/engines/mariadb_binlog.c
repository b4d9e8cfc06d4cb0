/*
 * mariadb_binlog.c: the MariaDB side of binary log archiving for point-in-time recovery
 * (engine.h's binlog_list, binlog_index and binlog_replay; the engine-neutral archive is
 * backup/binlog.c).
 *
 * - binlog_list: FLUSH BINARY LOGS (when asked) and SHOW BINARY LOGS on the primary, over
 *   the socket as dbplane's own account (unix_socket).
 * - binlog_index: `mariadb-binlog --verify-binlog-checksum --base64-output=never FILE`
 *   (TZ=UTC), reading only the event header comments ("#231123  9:00:01 server id 1
 *   end_log_pos ... GTID 0-1-5 trans", "... Gtid list [0-1-4]"): the state before the
 *   file, its first and last GTID and event times. A bad event checksum fails the tool.
 * - binlog_replay: `mariadb-binlog --verify-binlog-checksum --start-position=GTIDS
 *   --stop-datetime=T FILES` piped into the `mariadb` client, as in the MariaDB manual's
 *   point-in-time recovery; both run as dbplane's own account. GTID start positions need
 *   MariaDB 10.8 or later (Debian's 10.11 has them). Binlog event times are whole
 *   seconds, so the stop time is too.
 */
#include "engines/mariadb_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/pipe.h"

#define MDBL_TOOL_TIMEOUT_MS (6 * 3600 * 1000)
#define MDBL_LINE 1024 /* event header lines are short; longer lines are cut */

int mdb_binlog_list(const engine_instance_t *primary, bool flush, engine_binlog_t *out, int max,
                    int *n, dbp_err_t *err)
{
    *n = 0;
    MYSQL *m = mdb_connect(primary, false, err);
    if (!m)
        return DBP_EENGINE;
    int rc = flush ? mdb_cmd(m, "FLUSH BINARY LOGS", err) : 0;
    MYSQL_RES *r = rc ? NULL : mdb_query(m, "SHOW BINARY LOGS", err);
    if (!rc && !r)
        rc = DBP_EENGINE;
    MYSQL_ROW row;
    while (r && (row = mysql_fetch_row(r))) {
        const char *name = mdb_col(r, row, "Log_name"), *size = mdb_col(r, row, "File_size");
        if (!name || strchr(name, '/') || strlen(name) >= sizeof(out->name))
            continue;
        if (*n == max) {
            rc =
                dbp_err_set(err, DBP_EINVAL, "%s has more than %d binary logs", primary->name, max);
            break;
        }
        engine_binlog_t *b = &out[(*n)++];
        snprintf(b->name, sizeof(b->name), "%s", name);
        snprintf(b->path, sizeof(b->path), "%s/%s", primary->data_dir, name);
        b->size = size ? strtoll(size, NULL, 10) : 0;
    }
    if (r)
        mysql_free_result(r);
    mysql_close(m);
    return rc;
}

/* The line parser behind binlog_index: fed mariadb-binlog's output in pieces. */
typedef struct mdbl_scan {
    engine_binlog_index_t *out;
    char line[MDBL_LINE];
    size_t len;
    char gtid_list[256]; /* the text inside "Gtid list [...]" */
    bool have_list;
} mdbl_scan_t;

/* Unix seconds of an event header comment "#YYMMDD HH:MM:SS server id ..." (UTC), 0 if not
 * one. */
static int64_t mdbl_header_time(const char *l)
{
    int y, mo, d, h, mi, s;
    if (l[0] != '#' || !strstr(l, " server id ") ||
        sscanf(l, "#%2d%2d%2d %d:%d:%d", &y, &mo, &d, &h, &mi, &s) != 6)
        return 0;
    struct tm tm = {.tm_year = y + 100,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static void mdbl_line(mdbl_scan_t *sc)
{
    sc->line[sc->len] = '\0';
    int64_t t = mdbl_header_time(sc->line);
    if (!t)
        return;
    engine_binlog_index_t *o = sc->out;
    o->last_time = t;
    const char *g = strstr(sc->line, "\tGTID ");
    if (!g)
        g = strstr(sc->line, " GTID ");
    const char *gl = strstr(sc->line, "Gtid list [");
    if (gl && !sc->have_list) {
        gl += strlen("Gtid list [");
        size_t k = strcspn(gl, "]");
        snprintf(sc->gtid_list, sizeof(sc->gtid_list), "%.*s", (int)k, gl);
        sc->have_list = true;
    } else if (g) {
        g += strlen(" GTID ");
        mdb_gtid_t gt;
        if (!mdb_gtid_parse(g, &gt))
            return;
        uint32_t dom = gt.domain;
        uint64_t seq = gt.seq;
        size_t k = strcspn(g, " \t");
        if (!o->first_gtid[0]) {
            snprintf(o->first_gtid, sizeof(o->first_gtid), "%.*s", (int)k, g);
            o->domain = dom;
            o->first_seq = seq;
            o->first_time = t;
        }
        if (dom == o->domain) {
            snprintf(o->last_gtid, sizeof(o->last_gtid), "%.*s", (int)k, g);
            o->last_seq = seq;
        }
    }
}

static int mdbl_sink(void *ud, const void *buf, size_t len, dbp_err_t *err)
{
    (void)err;
    mdbl_scan_t *sc = ud;
    const char *p = buf;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            mdbl_line(sc);
            sc->len = 0;
        } else if (sc->len < sizeof(sc->line) - 1) {
            sc->line[sc->len++] = p[i];
        }
    }
    return 0;
}

int mdb_binlog_index(const engine_instance_t *in, const char *path, engine_binlog_index_t *out,
                     dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    char *argv[] = {MDB_BINLOG_TOOL,         "--no-defaults", "--verify-binlog-checksum",
                    "--base64-output=never", (char *)path,    NULL};
    char *env[] = {"TZ=UTC", NULL};
    dbp_runas_t self = *in->runas;
    self.drop = false;
    mdbl_scan_t *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    sc->out = out;
    dbp_pipe_t p;
    int rc =
        dbp_pipe_spawn(argv, env, &self, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &p, err);
    if (!rc)
        rc = dbp_pipe_pump_out(&p, mdbl_sink, sc, MDBL_TOOL_TIMEOUT_MS, err);
    if (!rc && sc->len)
        mdbl_line(sc);
    if (!rc && sc->have_list) {
        /* The state before the file, in the domain of its transactions (or the first
         * domain listed when it has none). */
        mdb_gtid_t g;
        int n;
        for (const char *l = sc->gtid_list; (n = mdb_gtid_next(&l, &g)) != 0;)
            if (n > 0 && (g.domain == out->domain || !out->first_gtid[0])) {
                out->domain = g.domain;
                out->start_seq = g.seq;
                break;
            }
    }
    free(sc);
    if (rc)
        dbp_err_prefix(err, "mariadb-binlog %s: ", path);
    return rc;
}

/* Forwards what mariadb-binlog prints to the client's stdin. */
static int mdbl_forward(void *ud, const void *buf, size_t len, dbp_err_t *err)
{
    return dbp_pipe_write_all(ud, buf, len, err);
}

int mdb_binlog_replay(const engine_instance_t *in, const char *const *paths, int n,
                      const char *start, int64_t stop_time, dbp_err_t *err)
{
    if (n <= 0)
        return 0;
    char startarg[300], stoparg[64], sock[PATH_MAX], socket[PATH_MAX + 16], user[128];
    snprintf(startarg, sizeof(startarg), "--start-position=%s", start);
    time_t st = (time_t)stop_time;
    struct tm tm;
    gmtime_r(&st, &tm);
    strftime(stoparg, sizeof(stoparg), "--stop-datetime=%Y-%m-%d %H:%M:%S", &tm);
    char **argv = calloc((size_t)n + 8, sizeof(*argv));
    if (!argv)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    int k = 0;
    argv[k++] = MDB_BINLOG_TOOL;
    argv[k++] = "--no-defaults";
    argv[k++] = "--verify-binlog-checksum";
    argv[k++] = startarg;
    argv[k++] = stoparg;
    for (int i = 0; i < n; i++)
        argv[k++] = (char *)paths[i];
    argv[k] = NULL;
    mdb_sock(in, sock, sizeof(sock));
    snprintf(socket, sizeof(socket), "--socket=%s", sock);
    snprintf(user, sizeof(user), "--user=%s", in->runas->daemon_name);
    char *cargv[] = {MDB_CLIENT, "--no-defaults", socket, user, "--batch", "--binary-mode", NULL};
    char *env[] = {"TZ=UTC", NULL};
    dbp_runas_t self = *in->runas;
    self.drop = false;
    dbp_pipe_t client, tool;
    int rc = dbp_pipe_spawn(cargv, NULL, &self, in->tool_log_path, NULL, DBP_PIPE_TO_CHILD, &client,
                            err);
    if (!rc) {
        rc = dbp_pipe_spawn(argv, env, &self, in->tool_log_path, NULL, DBP_PIPE_FROM_CHILD, &tool,
                            err);
        if (!rc)
            rc = dbp_pipe_pump_out(&tool, mdbl_forward, &client, MDBL_TOOL_TIMEOUT_MS, err);
        if (rc)
            dbp_pipe_kill(&client);
        else
            rc = dbp_pipe_finish(&client, MDBL_TOOL_TIMEOUT_MS, err);
    }
    free(argv);
    if (rc)
        dbp_err_prefix(err, "binlog replay into %s: ", in->name);
    else
        dbp_info("binlog_replayed", "instance=%s files=%d start=%s stop=%s", in->name, n, start,
                 stoparg + strlen("--stop-datetime="));
    return rc;
}
