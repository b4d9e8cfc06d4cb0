/*
 * backup_cmd.c: `dbplane backup`, `dbplane backups`, `dbplane restore` and the WAL
 * archiving commands `wal-push`, `wal-fetch` (run by PostgreSQL servers as
 * archive_command / restore_command) and `wal-ship` (run by the daemon's scheduler) (see
 * backup_cmd.h). Each opens a backup context on the data dir (backup/backup.h) and calls
 * one operation. On a terminal, long operations show a progress line on stderr (bytes,
 * rate, elapsed); otherwise progress is logged as key=value lines every 10 s, so the
 * scheduler's log of a run stays readable. Ctrl-C (or SIGTERM) stops the operation at its
 * next write: the part being written is discarded and the run is recorded as failed.
 */
#include "cli/backup_cmd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "backup/backup.h"
#include "backup/manifest.h"
#include "common/log.h"
#include "common/proc.h"

static volatile sig_atomic_t g_cancel;

static void on_cancel(int sig)
{
    (void)sig;
    g_cancel = 1;
}

/* Parsed command line of the backup commands. */
typedef struct bargs {
    const char *cmd;
    const char *pos[4];
    int npos;
    const char *data_dir;
    const char *tenant;
    bool all_tenants;
    bool json;
    int type;          /* -1 unset */
    const char *backup;
    const char *store;
    int verify;        /* -1 unset */
    bool retention;
    const char *to;
    const char *target_cluster;
    const char *cluster;
    const char *database;
    const char *pitr;
    const char *spool;     /* wal-push --spool */
    const char *queue_max; /* wal-push --queue-max BYTES */
    const char *from;      /* wal-fetch --from */
    bool force;
} bargs_t;

static const char *const OWNED[] = {"backup",   "backups",   "restore",
                                    "wal-push", "wal-fetch", "wal-ship", NULL};

/* Options that take a value, for finding the subcommand and for parsing. */
static bool takes_value(const char *s)
{
    static const char *const v[] = {"--data-dir", "--tenant", "-n", "-o", "--output", "--type",
                                    "--backup", "--store", "--to", "--target-cluster",
                                    "--cluster", "--database", "--point-in-time", "-f", "--file",
                                    "--timeout", "--limit", "--spool", "--queue-max",
                                    "--from", NULL};
    for (int i = 0; v[i]; i++)
        if (strcmp(s, v[i]) == 0)
            return true;
    return false;
}

bool backup_cmd_owns(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            if (takes_value(argv[i]))
                i++;
            continue;
        }
        for (int k = 0; OWNED[k]; k++)
            if (strcmp(argv[i], OWNED[k]) == 0)
                return true;
        return false;
    }
    return false;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  dbplane backup CLUSTER [--type logical|physical] [--backup NAME] [--store NAME]\n"
            "                 [--verify|--no-verify] [--retention] [-o json]\n"
            "      take a backup now, in this process; --backup uses a Backup resource's\n"
            "      settings (type, store, target, compression, encryption, verify)\n"
            "  dbplane backups [CLUSTER] [-o json] [-A]      list the catalog\n"
            "  dbplane backups verify RUN_ID                 restore RUN_ID into a scratch\n"
            "                                                instance and check it\n"
            "  dbplane backups prune BACKUP                  apply BACKUP's retention now\n"
            "  dbplane restore (RUN_ID | --backup NAME | --cluster C [--type T])\n"
            "                 [--to DIR]                     physical: a new data directory\n"
            "                 [--target-cluster C] [--database DB] [--force]\n"
            "                                                logical: into a running cluster;\n"
            "                                                --force replaces existing databases\n"
            "                                                after a safety backup\n"
            "                 [--point-in-time RFC3339]      physical, with --to: recover the\n"
            "                                                archived WAL up to that time\n"
            "  dbplane wal-ship CLUSTER                      ship the cluster's WAL spool to\n"
            "                                                its pitr Backup's store now\n"
            "  dbplane wal-push --spool DIR PATH NAME        archive_command (run by the server)\n"
            "  dbplane wal-fetch --from DIR NAME DEST        restore_command (run by the server)\n"
            "common options: --data-dir DIR (env DBPLANE_DATA_DIR), --tenant T\n");
}

static int parse(int argc, char **argv, bargs_t *a)
{
    memset(a, 0, sizeof(*a));
    a->type = -1;
    a->verify = -1;
    a->data_dir = getenv("DBPLANE_DATA_DIR");
    if (!a->data_dir || !*a->data_dir)
        a->data_dir = ".dbplane";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
        char opt[64];
        const char *eq = strchr(s, '=');
        if (s[0] == '-' && eq && (size_t)(eq - s) < sizeof(opt)) {
            snprintf(opt, sizeof(opt), "%.*s", (int)(eq - s), s);
            val = eq + 1;
            s = opt;
        } else if (s[0] == '-' && takes_value(s)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "dbplane: %s needs a value\n", s);
                return -1;
            }
            val = argv[++i];
        }
        if (strcmp(s, "--data-dir") == 0)
            a->data_dir = val;
        else if (strcmp(s, "--tenant") == 0 || strcmp(s, "-n") == 0)
            a->tenant = val;
        else if (strcmp(s, "-o") == 0 || strcmp(s, "--output") == 0)
            a->json = val && strcmp(val, "json") == 0;
        else if (strcmp(s, "--type") == 0) {
            if (!val || (strcmp(val, "logical") != 0 && strcmp(val, "physical") != 0)) {
                fprintf(stderr, "dbplane: --type is logical or physical\n");
                return -1;
            }
            a->type = strcmp(val, "physical") == 0 ? SPEC_BACKUP_PHYSICAL : SPEC_BACKUP_LOGICAL;
        } else if (strcmp(s, "--backup") == 0)
            a->backup = val;
        else if (strcmp(s, "--store") == 0)
            a->store = val;
        else if (strcmp(s, "--to") == 0)
            a->to = val;
        else if (strcmp(s, "--target-cluster") == 0)
            a->target_cluster = val;
        else if (strcmp(s, "--cluster") == 0)
            a->cluster = val;
        else if (strcmp(s, "--database") == 0)
            a->database = val;
        else if (strcmp(s, "--point-in-time") == 0)
            a->pitr = val;
        else if (strcmp(s, "--spool") == 0)
            a->spool = val;
        else if (strcmp(s, "--queue-max") == 0)
            a->queue_max = val;
        else if (strcmp(s, "--from") == 0)
            a->from = val;
        else if (strcmp(s, "--verify") == 0)
            a->verify = 1;
        else if (strcmp(s, "--no-verify") == 0)
            a->verify = 0;
        else if (strcmp(s, "--retention") == 0)
            a->retention = true;
        else if (strcmp(s, "--force") == 0)
            a->force = true;
        else if (strcmp(s, "-A") == 0 || strcmp(s, "--all-tenants") == 0)
            a->all_tenants = true;
        else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
            a->cmd = "help";
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "dbplane: unknown option %s\n", s);
            return -1;
        } else if (!a->cmd)
            a->cmd = s;
        else if (a->npos < 4)
            a->pos[a->npos++] = s;
        else {
            fprintf(stderr, "dbplane: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

/* ---- progress ------------------------------------------------------------------------ */

typedef struct progress {
    bool tty;
    int64_t t0;
    int64_t last_log;
    bool drawn;
} progress_t;

static void human(int64_t b, char *buf, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void on_progress(void *ud, const char *phase, int64_t raw, int64_t stored)
{
    progress_t *p = ud;
    int64_t now = dbp_now_ms();
    double secs = (double)(now - p->t0) / 1000.0;
    char r[32], s[32], rate[32];
    human(raw, r, sizeof(r));
    human(stored, s, sizeof(s));
    human(secs > 0 ? (int64_t)((double)raw / secs) : 0, rate, sizeof(rate));
    if (p->tty) {
        fprintf(stderr, "\r%-8s %11s raw  %11s stored  %11s/s  %3d:%02d elapsed ", phase, r, s,
                rate, (int)secs / 60, (int)secs % 60);
        p->drawn = true;
    } else if (now - p->last_log >= 10000) {
        p->last_log = now;
        dbp_info("progress", "phase=%s raw_bytes=%lld stored_bytes=%lld elapsed_s=%.1f", phase,
                 (long long)raw, (long long)stored, secs);
    }
}

static void progress_end(progress_t *p)
{
    if (p->tty && p->drawn)
        fputc('\n', stderr);
    p->drawn = false;
}

/* ---- output ---------------------------------------------------------------------------- */

static json_t *row_json(const store_backup_t *b)
{
    char started[32] = "", finished[32] = "";
    backup_format_time(b->started_ms, started, sizeof(started));
    if (b->finished_ms)
        backup_format_time(b->finished_ms, finished, sizeof(finished));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, "
                     "s:s, s:s, s:I, s:I, s:s, s:s}",
                     "id", b->id, "tenant", b->tenant, "cluster", b->cluster, "backup", b->backup,
                     "type", b->type, "store", b->store, "path", b->path, "status", b->status,
                     "message", b->message, "source", b->source, "engine", b->engine,
                     "engine_version", b->engine_version, "bytes", (json_int_t)b->bytes,
                     "raw_bytes", (json_int_t)b->raw_bytes, "started_at", started,
                     "finished_at", finished, "duration_ms",
                     (json_int_t)(b->finished_ms ? b->finished_ms - b->started_ms : 0),
                     "started_ms", (json_int_t)b->started_ms, "verified", b->verified,
                     "verify_message", b->verify_message);
}

static void print_json(json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
}

typedef struct list_ctx {
    json_t *items;
    bool table;
} list_ctx_t;

static int list_cb(const store_backup_t *b, void *ud)
{
    list_ctx_t *l = ud;
    if (l->table) {
        char started[32] = "", size[32], dur[32] = "-";
        backup_format_time(b->started_ms, started, sizeof(started));
        human(b->bytes, size, sizeof(size));
        if (b->finished_ms)
            snprintf(dur, sizeof(dur), "%.1fs", (double)(b->finished_ms - b->started_ms) / 1000.0);
        printf("%-44s %-10s %-9s %-9s %-21s %9s %10s %s\n", b->id, b->cluster, b->type, b->status,
               started, dur, size, b->verified[0] ? b->verified : "-");
        if (strcmp(b->status, "failed") == 0 && b->message[0])
            printf("    %s\n", b->message);
        else if (strcmp(b->verified, "failed") == 0)
            printf("    verification: %s\n", b->verify_message);
        return 0;
    }
    json_t *j = row_json(b);
    return j && json_array_append_new(l->items, j) == 0 ? 0 : DBP_ENOMEM;
}

typedef struct wal_list {
    json_t *items;
    bool table;
    const char *cluster; /* NULL: all */
} wal_list_t;

static int wal_cb(const backup_wal_state_t *st, void *ud)
{
    wal_list_t *l = ud;
    if (l->cluster && strcmp(l->cluster, st->cluster) != 0)
        return 0;
    bool binlog = strcmp(st->archive, "binlog") == 0;
    if (l->table && binlog) {
        char since[32] = "";
        if (st->binlog_open_since_s > 0) {
            time_t t = (time_t)st->binlog_open_since_s;
            struct tm tm;
            strftime(since, sizeof(since), " (since %Y-%m-%dT%H:%M:%SZ)", gmtime_r(&t, &tm));
        }
        if (st->binlog_end_seq)
            printf("Binlog archive of %s (Backup %s): archived up to GTID sequence %llu of "
                   "domain 0; open log %s%s is archived once closed\n",
                   st->cluster, st->backup, st->binlog_end_seq,
                   st->binlog_open[0] ? st->binlog_open : "unknown", since);
        else
            printf("Binlog archive of %s (Backup %s): no binary log archived yet; open log "
                   "%s%s\n", st->cluster, st->backup,
                   st->binlog_open[0] ? st->binlog_open : "unknown", since);
        return 0;
    }
    if (binlog) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I}", "tenant", st->tenant,
                              "cluster", st->cluster, "backup", st->backup, "archive", "binlog",
                              "gtid_seq_end", (json_int_t)st->binlog_end_seq, "open_binlog",
                              st->binlog_open, "open_binlog_since_s",
                              (json_int_t)st->binlog_open_since_s);
        return j && json_array_append_new(l->items, j) == 0 ? 0 : DBP_ENOMEM;
    }
    if (l->table) {
        printf("WAL archive of %s (Backup %s): last shipped %s, %d file%s waiting in the spool\n",
               st->cluster, st->backup, st->last_shipped[0] ? st->last_shipped : "none yet",
               st->spooled, st->spooled == 1 ? "" : "s");
        return 0;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "tenant", st->tenant, "cluster",
                          st->cluster, "backup", st->backup, "archive", "wal", "last_shipped",
                          st->last_shipped, "spooled", st->spooled);
    return j && json_array_append_new(l->items, j) == 0 ? 0 : DBP_ENOMEM;
}

/* ---- commands ------------------------------------------------------------------------ */

static int open_ctx(const bargs_t *a, backup_ctx_t **ctx, progress_t *p)
{
    dbp_err_t err;
    if (backup_ctx_open(ctx, a->data_dir, &err) != 0) {
        fprintf(stderr, "dbplane: %s\n", err.msg);
        return 1;
    }
    backup_ctx_set_cancel(*ctx, &g_cancel);
    if (p) {
        memset(p, 0, sizeof(*p));
        p->tty = isatty(STDERR_FILENO);
        p->t0 = dbp_now_ms();
        backup_ctx_set_progress(*ctx, on_progress, p);
    }
    return 0;
}

static int cmd_backup(const bargs_t *a)
{
    if (a->npos != 1) {
        usage(stderr);
        return 2;
    }
    backup_ctx_t *ctx;
    progress_t p;
    if (open_ctx(a, &ctx, &p))
        return 1;
    backup_run_opts_t o = {.tenant = a->tenant, .cluster = a->pos[0], .backup = a->backup,
                           .type = a->type, .store = a->store, .verify = a->verify,
                           .retention = a->retention};
    store_backup_t row;
    memset(&row, 0, sizeof(row));
    dbp_err_t err;
    int rc = backup_run(ctx, &o, &row, &err);
    progress_end(&p);
    if (a->json && row.id[0]) {
        json_t *j = row_json(&row);
        if (j)
            print_json(j);
        json_decref(j);
    } else if (row.id[0] && strcmp(row.status, "complete") == 0) {
        char size[32], raw[32];
        human(row.bytes, size, sizeof(size));
        human(row.raw_bytes, raw, sizeof(raw));
        printf("backup %s complete: %s stored (%s raw) from %s in %.1f s%s%s\n", row.id, size, raw,
               row.source, (double)(row.finished_ms - row.started_ms) / 1000.0,
               row.verified[0] ? ", verified " : "", row.verified);
    }
    if (rc)
        fprintf(stderr, "dbplane backup: %s\n", err.msg);
    backup_ctx_close(ctx);
    return rc ? 1 : 0;
}

static int cmd_backups(const bargs_t *a)
{
    backup_ctx_t *ctx;
    dbp_err_t err;
    if (a->npos >= 1 && strcmp(a->pos[0], "verify") == 0 && a->npos == 2) {
        progress_t p;
        if (open_ctx(a, &ctx, &p))
            return 1;
        int rc = backup_verify(ctx, a->tenant ? a->tenant : "default", a->pos[1], &err);
        progress_end(&p);
        if (rc)
            fprintf(stderr, "dbplane backups verify: %s: %s\n", a->pos[1], err.msg);
        else
            printf("run %s verified\n", a->pos[1]);
        backup_ctx_close(ctx);
        return rc ? 1 : 0;
    }
    if (a->npos >= 1 && strcmp(a->pos[0], "prune") == 0 && a->npos == 2) {
        if (open_ctx(a, &ctx, NULL))
            return 1;
        int deleted = 0;
        int rc = backup_apply_retention(ctx, a->tenant ? a->tenant : "default", a->pos[1],
                                        &deleted, &err);
        if (rc)
            fprintf(stderr, "dbplane backups prune: %s\n", err.msg);
        else
            printf("%d run%s removed\n", deleted, deleted == 1 ? "" : "s");
        backup_ctx_close(ctx);
        return rc ? 1 : 0;
    }
    if (a->npos > 1) {
        usage(stderr);
        return 2;
    }
    if (open_ctx(a, &ctx, NULL))
        return 1;
    store_t *st = backup_ctx_store(ctx);
    int reaped = 0;
    if (store_catalog_reap_dead(st, &reaped, &err) != 0)
        dbp_warn("catalog_reap_failed", "error=%s", dbp_log_q(err.msg));
    list_ctx_t l = {.items = json_array(), .table = !a->json};
    if (l.table)
        printf("%-44s %-10s %-9s %-9s %-21s %9s %10s %s\n", "ID", "CLUSTER", "TYPE", "STATUS",
               "STARTED", "DURATION", "SIZE", "VERIFIED");
    const char *tenant = a->all_tenants ? NULL : a->tenant ? a->tenant : "default";
    int rc = store_backup_list(st, tenant, a->npos ? a->pos[0] : NULL, list_cb, &l, &err);
    wal_list_t wl = {.items = json_array(), .table = !a->json,
                     .cluster = a->npos ? a->pos[0] : NULL};
    if (!rc)
        rc = backup_wal_status(ctx, tenant, wal_cb, &wl);
    if (rc)
        fprintf(stderr, "dbplane backups: %s\n", rc == DBP_ENOMEM ? "out of memory" : err.msg);
    else if (a->json) {
        json_t *doc = json_pack("{s:O, s:O}", "backups", l.items, "wal", wl.items);
        if (doc)
            print_json(doc);
        json_decref(doc);
    }
    json_decref(l.items);
    json_decref(wl.items);
    backup_ctx_close(ctx);
    return rc ? 1 : 0;
}

static int cmd_restore(const bargs_t *a)
{
    if (a->npos > 1 || (a->npos == 0 && !a->backup && !a->cluster)) {
        usage(stderr);
        return 2;
    }
    backup_ctx_t *ctx;
    progress_t p;
    if (open_ctx(a, &ctx, &p))
        return 1;
    backup_restore_opts_t o = {.tenant = a->tenant, .id = a->npos ? a->pos[0] : NULL,
                               .backup = a->backup, .cluster = a->cluster, .type = a->type,
                               .to_dir = a->to, .target_cluster = a->target_cluster,
                               .database = a->database, .force = a->force,
                               .point_in_time = a->pitr};
    dbp_err_t err;
    int rc = backup_restore(ctx, &o, &err);
    progress_end(&p);
    if (rc)
        fprintf(stderr, "dbplane restore: %s\n", err.msg);
    else
        printf("restore complete%s%s\n", a->to ? ": " : "", a->to ? a->to : "");
    backup_ctx_close(ctx);
    return rc ? 1 : 0;
}

/* archive_command: runs as the service user, touches only the spool. */
static int cmd_wal_push(const bargs_t *a)
{
    if (a->npos != 2 || !a->spool) {
        usage(stderr);
        return 2;
    }
    uint64_t qmax = 0;
    if (a->queue_max) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(a->queue_max, &end, 10);
        if (errno || !end || *end || !a->queue_max[0] || a->queue_max[0] == '-') {
            fprintf(stderr, "dbplane wal-push: --queue-max: '%s' is not a number of bytes\n",
                    a->queue_max);
            return 2;
        }
        qmax = v;
    }
    dbp_err_t err;
    bool dropped = false;
    if (backup_wal_push(a->spool, a->pos[0], a->pos[1], qmax, &dropped, &err) != 0) {
        fprintf(stderr, "dbplane wal-push: %s: %s\n", a->pos[1], err.msg);
        return 1;
    }
    /* The server's log gets this line (archive_command's stderr). */
    if (dropped)
        fprintf(stderr,
                "dbplane wal-push: %s not archived: the spool holds more than --queue-max %llu "
                "bytes the store has not taken; a point-in-time restore cannot cross it\n",
                a->pos[1], (unsigned long long)qmax);
    return 0;
}

/* restore_command: a missing file is the normal end of the archive, reported quietly. */
static int cmd_wal_fetch(const bargs_t *a)
{
    if (a->npos != 2 || !a->from) {
        usage(stderr);
        return 2;
    }
    dbp_err_t err;
    int rc = backup_wal_fetch(a->from, a->pos[0], a->pos[1], &err);
    if (rc && rc != DBP_ENOENT)
        fprintf(stderr, "dbplane wal-fetch: %s: %s\n", a->pos[0], err.msg);
    return rc ? 1 : 0;
}

static int cmd_wal_ship(const bargs_t *a)
{
    if (a->npos != 1) {
        usage(stderr);
        return 2;
    }
    backup_ctx_t *ctx;
    if (open_ctx(a, &ctx, NULL))
        return 1;
    dbp_err_t err;
    int shipped = 0;
    int rc = backup_wal_ship(ctx, a->tenant ? a->tenant : "default", a->pos[0], &shipped, &err);
    if (rc)
        fprintf(stderr, "dbplane wal-ship: %s\n", err.msg);
    else if (a->json)
        printf("{\"shipped\": %d}\n", shipped);
    else
        printf("%d file%s shipped\n", shipped, shipped == 1 ? "" : "s");
    backup_ctx_close(ctx);
    return rc ? 1 : 0;
}

int backup_cmd_main(int argc, char **argv)
{
    bargs_t a;
    if (parse(argc, argv, &a) != 0)
        return 2;
    if (!a.cmd || strcmp(a.cmd, "help") == 0) {
        usage(a.cmd ? stdout : stderr);
        return a.cmd ? 0 : 2;
    }
    /* Tools are fed through pipes: a tool that dies must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_cancel;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (strcmp(a.cmd, "backup") == 0)
        return cmd_backup(&a);
    if (strcmp(a.cmd, "backups") == 0)
        return cmd_backups(&a);
    if (strcmp(a.cmd, "restore") == 0)
        return cmd_restore(&a);
    if (strcmp(a.cmd, "wal-push") == 0)
        return cmd_wal_push(&a);
    if (strcmp(a.cmd, "wal-fetch") == 0)
        return cmd_wal_fetch(&a);
    if (strcmp(a.cmd, "wal-ship") == 0)
        return cmd_wal_ship(&a);
    usage(stderr);
    return 2;
}
