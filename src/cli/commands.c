/*
 * commands.c: argument parsing and the subcommands of `dbplane` (see cli.h). Output is a
 * table for people or JSON (-o json) for scripts; errors go to stderr.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/backup_cmd.h"
#include "cli/client.h"
#include "common/err.h"
#include "common/proc.h"
#include "control/daemon.h"
#include "proxy/runner.h"
#include "spec/spec.h"

#define MAX_FILES 32
#define MAX_POS 8

/* Parsed command line. */
typedef struct cli_args {
    const char *cmd;
    const char *pos[MAX_POS];
    int npos;
    const char *files[MAX_FILES];
    int nfiles;
    const char *data_dir;
    const char *tenant;    /* NULL: "default" */
    bool all_tenants;
    const char *output;    /* NULL or "json" */
    const char *timeout;   /* duration text */
    const char *limit;
    const char *to;        /* --to INSTANCE */
} cli_args_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dbplane COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  up -f FILE...          run the control plane in the foreground: validate, store\n"
            "                         and reconcile the spec; Ctrl-C stops every server\n"
            "  validate -f FILE...    check spec files; errors as file:line:col\n"
            "  apply -f FILE...       send spec files to the running daemon\n"
            "  get KIND [NAME]        list resources of a kind with their status\n"
            "  status [CLUSTER]       clusters, instances, roles, endpoints, lag\n"
            "  wait [--timeout DUR]   exit 0 once everything declared is reconciled\n"
            "  events [--limit N]     the event log\n"
            "  secret get NAME KEY    print one secret value\n"
            "  switchover CLUSTER [--to INSTANCE]\n"
            "                         planned change of primary: no acknowledged write lost\n"
            "  failover CLUSTER --to INSTANCE\n"
            "                         forced: fence the primary and promote INSTANCE now\n"
            "  proxy stats            the proxy's pools, clients, servers and counters\n"
            "  backup CLUSTER [--type logical|physical]\n"
            "                         take a backup now (progress on a terminal)\n"
            "  backups [CLUSTER]      the backup catalog and WAL archive state\n"
            "  restore RUN_ID|--backup NAME|--cluster C [--to DIR] [--point-in-time T]\n"
            "                         restore a run (see `dbplane backup --help`)\n"
            "  version                print the version\n"
            "\n"
            "options:\n"
            "  --data-dir DIR         state directory (env DBPLANE_DATA_DIR; default\n"
            "                         /var/lib/dbplane as root, else ./.dbplane)\n"
            "  --tenant T             tenant (default: default); -A for all tenants\n"
            "  -o json                machine-readable output\n");
}

static int parse_args(int argc, char **argv, cli_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->data_dir = getenv("DBPLANE_DATA_DIR");
    if (!a->data_dir || !*a->data_dir) {
        /* As root, the servers run as the `dbplane` account, which must be able to enter
         * the data dir: a checkout under /root (mode 0700) would not do. */
        a->data_dir = geteuid() == 0 ? "/var/lib/dbplane" : ".dbplane";
    }
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
#define TAKE(flag)                                                                              \
    (strcmp(s, flag) == 0 ? (i + 1 < argc ? (val = argv[++i], 1) : -1)                         \
                          : (strncmp(s, flag "=", strlen(flag) + 1) == 0                       \
                                 ? (val = s + strlen(flag) + 1, 1)                              \
                                 : 0))
        int t;
        if ((t = TAKE("-f")) || (t = TAKE("--file"))) {
            if (t < 0 || a->nfiles == MAX_FILES)
                goto bad;
            a->files[a->nfiles++] = val;
        } else if ((t = TAKE("--data-dir"))) {
            if (t < 0)
                goto bad;
            a->data_dir = val;
        } else if ((t = TAKE("--tenant")) || (t = TAKE("-n"))) {
            if (t < 0)
                goto bad;
            a->tenant = val;
        } else if ((t = TAKE("-o")) || (t = TAKE("--output"))) {
            if (t < 0 || (strcmp(val, "json") != 0 && strcmp(val, "table") != 0))
                goto bad;
            a->output = val;
        } else if ((t = TAKE("--timeout"))) {
            if (t < 0)
                goto bad;
            a->timeout = val;
        } else if ((t = TAKE("--to"))) {
            if (t < 0)
                goto bad;
            a->to = val;
        } else if ((t = TAKE("--limit"))) {
            if (t < 0)
                goto bad;
            a->limit = val;
        } else if (strcmp(s, "-A") == 0 || strcmp(s, "--all-tenants") == 0) {
            a->all_tenants = true;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            a->cmd = "help";
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "dbplane: unknown option %s\n", s);
            return -1;
        } else if (!a->cmd) {
            a->cmd = s;
        } else if (a->npos < MAX_POS) {
            a->pos[a->npos++] = s;
        } else {
            goto bad;
        }
#undef TAKE
        continue;
    bad:
        fprintf(stderr, "dbplane: bad or missing value for %s\n", s);
        return -1;
    }
    return 0;
}

static const char *tenant_of(const cli_args_t *a)
{
    if (a->all_tenants)
        return NULL;
    return a->tenant ? a->tenant : "default";
}

static void print_json(json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
}

/* Calls the API; prints the error and returns non-zero on failure. */
static int call(const cli_args_t *a, const char *method, const char *path, const char *body,
                size_t len, json_t **doc, long *status)
{
    dbp_err_t err;
    long st = 0;
    if (cli_request(a->data_dir, method, path, body, len, &st, doc, &err) != 0) {
        fprintf(stderr, "dbplane: %s\n", err.msg);
        return 1;
    }
    if (status)
        *status = st;
    if (st >= 400 && st != 422) {
        json_t *e = json_object_get(*doc, "error");
        fprintf(stderr, "dbplane: %s\n", e ? json_string_value(e) : "request failed");
        json_decref(*doc);
        *doc = NULL;
        return 1;
    }
    return 0;
}

/* ---- validate / up / apply ---------------------------------------------------------- */

static int cmd_validate(const cli_args_t *a)
{
    if (a->nfiles == 0) {
        fprintf(stderr, "dbplane validate: give at least one -f FILE\n");
        return 2;
    }
    spec_set_t set;
    spec_diags_t d;
    spec_set_init(&set);
    spec_diags_init(&d);
    int bad = 0;
    for (int i = 0; i < a->nfiles; i++)
        if (spec_parse_file(&set, a->files[i], &d) != 0)
            bad = 1;
    if (spec_validate(&set, NULL, &d) != 0)
        bad = 1;
    spec_diags_print(&d, stderr);
    if (!bad)
        printf("%zu resources valid (%zu warning%s)\n", set.n, d.n - d.errors,
               d.n - d.errors == 1 ? "" : "s");
    else
        fprintf(stderr, "%zu error%s\n", d.errors, d.errors == 1 ? "" : "s");
    spec_diags_free(&d);
    spec_set_free(&set);
    return bad ? 1 : 0;
}

static int cmd_up(const cli_args_t *a)
{
    ctl_options_t o = {.data_dir = a->data_dir, .files = a->files, .nfiles = a->nfiles};
    const char *pi = getenv("DBPLANE_PASS_INTERVAL_MS");
    if (pi)
        o.pass_interval_ms = atoi(pi);
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    int rc = ctl_up(&o, &err);
    if (rc) {
        fprintf(stderr, "dbplane up: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_apply(const cli_args_t *a)
{
    if (a->nfiles == 0) {
        fprintf(stderr, "dbplane apply: give at least one -f FILE\n");
        return 2;
    }
    int ret = 0;
    for (int i = 0; i < a->nfiles; i++) {
        char *body = NULL;
        size_t len = 0;
        dbp_err_t err;
        if (dbp_read_file(a->files[i], &body, &len, &err) != 0) {
            fprintf(stderr, "dbplane apply: %s\n", err.msg);
            return 1;
        }
        char path[1024] = "";
        cli_query_add(path, sizeof(path), "file", a->files[i]);
        char full[1100];
        snprintf(full, sizeof(full), "/v1/apply%s", path);
        json_t *doc = NULL;
        long st = 0;
        int rc = call(a, "POST", full, body, len, &doc, &st);
        free(body);
        if (rc)
            return 1;
        if (st == 422) {
            json_t *errs = json_object_get(doc, "errors");
            size_t k;
            json_t *e;
            json_array_foreach(errs, k, e)
            {
                const char *hint = json_string_value(json_object_get(e, "hint"));
                fprintf(stderr, "%s:%lld:%lld: %s: %s: %s%s%s%s\n",
                        json_string_value(json_object_get(e, "file")),
                        (long long)json_integer_value(json_object_get(e, "line")),
                        (long long)json_integer_value(json_object_get(e, "col")),
                        json_string_value(json_object_get(e, "severity")),
                        json_string_value(json_object_get(e, "path")),
                        json_string_value(json_object_get(e, "message")), hint ? " (hint: " : "",
                        hint ? hint : "", hint ? ")" : "");
            }
            fprintf(stderr, "dbplane apply: %s rejected; nothing was changed\n", a->files[i]);
            ret = 1;
        } else if (a->output && strcmp(a->output, "json") == 0) {
            print_json(doc);
        } else {
            size_t k;
            json_t *e;
            json_array_foreach(json_object_get(doc, "applied"), k, e)
            {
                printf("%s/%s %s\n", json_string_value(json_object_get(e, "kind")),
                       json_string_value(json_object_get(e, "name")),
                       json_is_true(json_object_get(e, "changed")) ? "configured" : "unchanged");
            }
        }
        json_decref(doc);
    }
    return ret;
}

/* ---- get / status / events / wait / secret ------------------------------------------ */

static int cmd_get(const cli_args_t *a)
{
    if (a->npos < 1) {
        fprintf(stderr, "dbplane get: give a KIND (cluster, database, user, grant, secret, ...)\n");
        return 2;
    }
    int k = spec_kind_parse(a->pos[0]);
    if (k < 0) {
        fprintf(stderr, "dbplane get: unknown kind '%s'\n", a->pos[0]);
        return 2;
    }
    char q[1024] = "";
    cli_query_add(q, sizeof(q), "kind", spec_kind_str((spec_kind_t)k));
    cli_query_add(q, sizeof(q), "tenant", tenant_of(a));
    cli_query_add(q, sizeof(q), "name", a->npos > 1 ? a->pos[1] : NULL);
    char path[1100];
    snprintf(path, sizeof(path), "/v1/resources%s", q);
    json_t *doc = NULL;
    if (call(a, "GET", path, NULL, 0, &doc, NULL))
        return 1;
    json_t *items = json_object_get(doc, "items");
    int ret = 0;
    if (a->npos > 1 && json_array_size(items) == 0) {
        fprintf(stderr, "dbplane get: %s %s not found in tenant %s\n",
                spec_kind_str((spec_kind_t)k), a->pos[1], tenant_of(a) ? tenant_of(a) : "*");
        ret = 1;
    } else if (a->output && strcmp(a->output, "json") == 0) {
        print_json(a->npos > 1 ? json_array_get(items, 0) : doc);
    } else {
        printf("%-10s %-28s %-10s %-4s %s\n", "TENANT", "NAME", "STATE", "GEN", "MESSAGE");
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            json_t *st = json_object_get(it, "status");
            printf("%-10s %-28s %-10s %-4lld %s\n",
                   json_string_value(json_object_get(it, "tenant")),
                   json_string_value(json_object_get(it, "name")),
                   json_string_value(json_object_get(st, "state")),
                   (long long)json_integer_value(json_object_get(it, "generation")),
                   json_string_value(json_object_get(st, "message")));
        }
    }
    json_decref(doc);
    return ret;
}

static int cmd_status(const cli_args_t *a)
{
    char q[1024] = "";
    cli_query_add(q, sizeof(q), "tenant", tenant_of(a));
    cli_query_add(q, sizeof(q), "cluster", a->npos > 0 ? a->pos[0] : NULL);
    char path[1100];
    snprintf(path, sizeof(path), "/v1/status%s", q);
    json_t *doc = NULL;
    if (call(a, "GET", path, NULL, 0, &doc, NULL))
        return 1;
    json_t *clusters = json_object_get(doc, "clusters");
    int ret = 0;
    if (a->npos > 0 && json_array_size(clusters) == 0) {
        fprintf(stderr, "dbplane status: cluster %s not found\n", a->pos[0]);
        ret = 1;
    } else if (a->output && strcmp(a->output, "json") == 0) {
        print_json(doc);
    } else {
        size_t i;
        json_t *c;
        json_array_foreach(clusters, i, c)
        {
            json_t *ep = json_object_get(c, "endpoints");
            printf("cluster %s/%s  engine=%s  epoch=%lld  state=%s\n",
                   json_string_value(json_object_get(c, "tenant")),
                   json_string_value(json_object_get(c, "name")),
                   json_string_value(json_object_get(c, "engine")),
                   (long long)json_integer_value(json_object_get(c, "epoch")),
                   json_string_value(json_object_get(c, "state")));
            printf("  %s\n", json_string_value(json_object_get(c, "message")));
            printf("  endpoints: rw=%s ro=%s\n", json_string_value(json_object_get(ep, "rw")),
                   json_string_value(json_object_get(ep, "ro")));
            printf("  %-20s %-8s %-22s %-9s %-12s %s\n", "INSTANCE", "ROLE", "ADDRESS", "STATE",
                   "LAG(bytes)", "POSITION");
            size_t j;
            json_t *in;
            json_array_foreach(json_object_get(c, "instances"), j, in)
            {
                char addr[96];
                snprintf(addr, sizeof(addr), "%s:%lld",
                         json_string_value(json_object_get(in, "host")),
                         (long long)json_integer_value(json_object_get(in, "port")));
                long long lag = json_integer_value(json_object_get(in, "lag_bytes"));
                char lags[32];
                if (lag < 0)
                    snprintf(lags, sizeof(lags), "-");
                else
                    snprintf(lags, sizeof(lags), "%lld", lag);
                printf("  %-20s %-8s %-22s %-9s %-12s %s\n",
                       json_string_value(json_object_get(in, "name")),
                       json_string_value(json_object_get(in, "role")), addr,
                       json_string_value(json_object_get(in, "state")), lags,
                       json_string_value(json_object_get(in, "position")));
            }
        }
    }
    json_decref(doc);
    return ret;
}

static int cmd_events(const cli_args_t *a)
{
    char q[1024] = "";
    cli_query_add(q, sizeof(q), "tenant", tenant_of(a));
    cli_query_add(q, sizeof(q), "limit", a->limit ? a->limit : "100");
    char path[1100];
    snprintf(path, sizeof(path), "/v1/events%s", q);
    json_t *doc = NULL;
    if (call(a, "GET", path, NULL, 0, &doc, NULL))
        return 1;
    if (a->output && strcmp(a->output, "json") == 0) {
        print_json(doc);
    } else {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(doc, "events"), i, e)
        {
            time_t ts = (time_t)(json_integer_value(json_object_get(e, "ts_ms")) / 1000);
            struct tm tm;
            gmtime_r(&ts, &tm);
            char tbuf[32];
            strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf("%s %-7s %-18s %s/%s: %s\n", tbuf,
                   json_string_value(json_object_get(e, "type")),
                   json_string_value(json_object_get(e, "reason")),
                   json_string_value(json_object_get(e, "kind")),
                   json_string_value(json_object_get(e, "name")),
                   json_string_value(json_object_get(e, "message")));
        }
    }
    json_decref(doc);
    return 0;
}

static int cmd_wait(const cli_args_t *a)
{
    int64_t timeout_ms = 300000;
    if (a->timeout) {
        char eb[128];
        if (spec_parse_duration(a->timeout, &timeout_ms, eb, sizeof(eb)) != 0) {
            fprintf(stderr, "dbplane wait: --timeout: %s\n", eb);
            return 2;
        }
    }
    char q[256] = "";
    cli_query_add(q, sizeof(q), "tenant", tenant_of(a));
    char path[300];
    snprintf(path, sizeof(path), "/v1/wait%s", q);
    int64_t deadline = dbp_now_ms() + timeout_ms;
    for (;;) {
        json_t *doc = NULL;
        dbp_err_t err;
        long st = 0;
        int rc = cli_request(a->data_dir, "GET", path, NULL, 0, &st, &doc, &err);
        bool ready = false;
        if (rc == 0 && st == 200) {
            json_t *pend = json_object_get(doc, "pending");
            ready = json_is_true(json_object_get(doc, "ready"));
            if (ready) {
                size_t nacc = json_array_size(json_object_get(doc, "accepted"));
                printf("all resources reconciled%s\n",
                       nacc ? " (some kinds are stored without a controller in this build)" : "");
                json_decref(doc);
                return 0;
            }
            if (dbp_now_ms() >= deadline) {
                fprintf(stderr, "dbplane wait: timed out; pending:\n");
                size_t i;
                json_t *p;
                json_array_foreach(pend, i, p)
                {
                    fprintf(stderr, "  %s %s/%s: %s: %s\n",
                            json_string_value(json_object_get(p, "kind")),
                            json_string_value(json_object_get(p, "tenant")),
                            json_string_value(json_object_get(p, "name")),
                            json_string_value(json_object_get(p, "state")),
                            json_string_value(json_object_get(p, "message")));
                }
                json_decref(doc);
                return 1;
            }
        } else if (dbp_now_ms() >= deadline) {
            fprintf(stderr, "dbplane wait: timed out: %s\n",
                    rc ? err.msg : "the daemon answered with an error");
            json_decref(doc);
            return 1;
        }
        json_decref(doc);
        usleep(250 * 1000);
    }
}

/* `dbplane switchover CLUSTER [--to INSTANCE]` / `dbplane failover CLUSTER --to INSTANCE` */
static int cmd_switch(const cli_args_t *a, bool force)
{
    const char *what = force ? "failover" : "switchover";
    if (a->npos != 1 || (force && !a->to)) {
        fprintf(stderr, "usage: dbplane %s CLUSTER %s [--tenant T]\n", what,
                force ? "--to INSTANCE" : "[--to INSTANCE]");
        return 2;
    }
    char q[1024] = "";
    cli_query_add(q, sizeof(q), "tenant", a->tenant ? a->tenant : "default");
    cli_query_add(q, sizeof(q), "cluster", a->pos[0]);
    cli_query_add(q, sizeof(q), "to", a->to);
    char path[1100];
    snprintf(path, sizeof(path), "/v1/%s%s", what, q);
    json_t *doc = NULL;
    if (call(a, "POST", path, "", 0, &doc, NULL))
        return 1;
    if (a->output && strcmp(a->output, "json") == 0) {
        print_json(doc);
    } else {
        printf("%s: %s is now the primary of %s (epoch %lld, %lld ms)\n", what,
               json_string_value(json_object_get(doc, "new_primary")), a->pos[0],
               (long long)json_integer_value(json_object_get(doc, "epoch")),
               (long long)json_integer_value(json_object_get(doc, "total_ms")));
    }
    json_decref(doc);
    return 0;
}

/* `dbplane proxy stats [-o json]` */
static int cmd_proxy(const cli_args_t *a)
{
    if (a->npos != 1 || strcmp(a->pos[0], "stats") != 0) {
        fprintf(stderr, "usage: dbplane proxy stats [-o json]\n");
        return 2;
    }
    json_t *doc = NULL;
    if (call(a, "GET", "/v1/proxy/stats", NULL, 0, &doc, NULL))
        return 1;
    print_json(doc);
    json_decref(doc);
    return 0;
}

static int cmd_secret(const cli_args_t *a)
{
    if (a->npos != 3 || strcmp(a->pos[0], "get") != 0) {
        fprintf(stderr, "usage: dbplane secret get NAME KEY [--tenant T]\n");
        return 2;
    }
    char q[1024] = "";
    cli_query_add(q, sizeof(q), "tenant", a->tenant ? a->tenant : "default");
    cli_query_add(q, sizeof(q), "name", a->pos[1]);
    cli_query_add(q, sizeof(q), "key", a->pos[2]);
    char path[1100];
    snprintf(path, sizeof(path), "/v1/secret%s", q);
    json_t *doc = NULL;
    if (call(a, "GET", path, NULL, 0, &doc, NULL))
        return 1;
    printf("%s\n", json_string_value(json_object_get(doc, "value")));
    json_decref(doc);
    return 0;
}

int cli_main(int argc, char **argv)
{
    cli_args_t a;
    if (argc > 1 && strcmp(argv[1], "proxy-run") == 0) /* own flags: dispatch before parsing */
        return proxy_run_main(argc - 1, argv + 1);
    if (backup_cmd_owns(argc, argv)) /* backup, backups, restore: own flags */
        return backup_cmd_main(argc, argv);
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    if (!a.cmd || strcmp(a.cmd, "help") == 0) {
        usage(a.cmd ? stdout : stderr);
        return a.cmd ? 0 : 2;
    }
    if (strcmp(a.cmd, "version") == 0) {
        printf("dbplane 0.1.0\n");
        return 0;
    }
    if (strcmp(a.cmd, "validate") == 0)
        return cmd_validate(&a);
    if (strcmp(a.cmd, "up") == 0)
        return cmd_up(&a);
    if (strcmp(a.cmd, "apply") == 0)
        return cmd_apply(&a);
    if (strcmp(a.cmd, "get") == 0)
        return cmd_get(&a);
    if (strcmp(a.cmd, "status") == 0)
        return cmd_status(&a);
    if (strcmp(a.cmd, "events") == 0)
        return cmd_events(&a);
    if (strcmp(a.cmd, "wait") == 0)
        return cmd_wait(&a);
    if (strcmp(a.cmd, "secret") == 0)
        return cmd_secret(&a);
    if (strcmp(a.cmd, "proxy") == 0)
        return cmd_proxy(&a);
    if (strcmp(a.cmd, "switchover") == 0)
        return cmd_switch(&a, false);
    if (strcmp(a.cmd, "failover") == 0)
        return cmd_switch(&a, true);
    fprintf(stderr, "dbplane: unknown command '%s'\n\n", a.cmd);
    usage(stderr);
    return 2;
}
