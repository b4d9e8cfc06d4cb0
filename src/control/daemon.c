/*
 * daemon.c: `dbplane up`: start-up, the control loop and ordered shutdown (see daemon.h).
 * The reconcile pass itself lives in reconcile.c.
 */
#include "control/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "common/log.h"
#include "control/apply.h"
#include "control/reconcile.h"
#include "control/scheduler.h"
#include "spec/spec.h"

static volatile sig_atomic_t g_stop;
static int g_wake_wr = -1;

static void on_signal(int sig)
{
    if (sig == SIGINT || sig == SIGTERM)
        g_stop = 1;
    if (g_wake_wr >= 0) {
        int saved = errno;
        ssize_t w = write(g_wake_wr, "x", 1);
        (void)w;
        errno = saved;
    }
}

/* One request from the API thread for the control loop (switchover, failover), handed
 * over under a mutex; the API thread waits for the result. One at a time. */
static struct {
    pthread_mutex_t lock;    /* serialises whole requests */
    pthread_mutex_t mu;      /* guards the fields below */
    pthread_cond_t cv;
    bool pending, done;
    char tenant[64], cluster[64], to[96];
    bool force;
    int rc;
    json_t *result;
    dbp_err_t err;
} g_cmd = {.lock = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
           .cv = PTHREAD_COND_INITIALIZER};

int ctl_submit_switch(const char *tenant, const char *cluster, const char *to, bool force,
                      json_t **result, dbp_err_t *err)
{
    pthread_mutex_lock(&g_cmd.lock);
    pthread_mutex_lock(&g_cmd.mu);
    snprintf(g_cmd.tenant, sizeof(g_cmd.tenant), "%s", tenant);
    snprintf(g_cmd.cluster, sizeof(g_cmd.cluster), "%s", cluster);
    snprintf(g_cmd.to, sizeof(g_cmd.to), "%s", to ? to : "");
    g_cmd.force = force;
    g_cmd.result = NULL;
    g_cmd.pending = true;
    g_cmd.done = false;
    pthread_mutex_unlock(&g_cmd.mu);
    if (g_wake_wr >= 0) {
        ssize_t w = write(g_wake_wr, "c", 1);
        (void)w;
    }
    pthread_mutex_lock(&g_cmd.mu);
    while (!g_cmd.done)
        pthread_cond_wait(&g_cmd.cv, &g_cmd.mu);
    int rc = g_cmd.rc;
    if (err)
        *err = g_cmd.err;
    if (result)
        *result = g_cmd.result;
    else
        json_decref(g_cmd.result);
    pthread_mutex_unlock(&g_cmd.mu);
    pthread_mutex_unlock(&g_cmd.lock);
    return rc;
}

/* Runs a pending request on the control loop's thread. */
static void run_command(ctl_daemon_t *d)
{
    pthread_mutex_lock(&g_cmd.mu);
    bool pending = g_cmd.pending;
    g_cmd.pending = false;
    pthread_mutex_unlock(&g_cmd.mu);
    if (!pending)
        return;
    json_t *result = NULL;
    dbp_err_t err;
    memset(&err, 0, sizeof(err));
    int rc = ctl_ha_switch(d, g_cmd.tenant, g_cmd.cluster, g_cmd.to[0] ? g_cmd.to : NULL,
                           g_cmd.force, &result, &err);
    pthread_mutex_lock(&g_cmd.mu);
    g_cmd.rc = rc;
    g_cmd.err = err;
    g_cmd.result = result;
    g_cmd.done = true;
    pthread_cond_broadcast(&g_cmd.cv);
    pthread_mutex_unlock(&g_cmd.mu);
}

int ctl_paths(const char *data_dir, char *store_path, char *api_sock, dbp_err_t *err)
{
    char run[128];
    int rc = dbp_runtime_dir(data_dir, run, sizeof(run), err);
    if (rc)
        return rc;
    if (store_path)
        snprintf(store_path, PATH_MAX, "%s/state.db", data_dir);
    if (api_sock)
        snprintf(api_sock, PATH_MAX, "%s/api.sock", run);
    return 0;
}

/* Takes the data dir's lock file; returns the fd (kept open for the daemon's life) or
 * DBP_EBUSY naming the holder. */
static int take_lock(const char *data_dir, dbp_err_t *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/dbplane.lock", data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = {0};
        ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
        (void)r;
        close(fd);
        return dbp_err_set(err, DBP_EBUSY,
                           "another dbplane daemon (pid %s) is running on data dir %s; use "
                           "`dbplane apply -f FILE` to change it",
                           buf[0] ? strtok(buf, "\n") : "?", data_dir);
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        close(fd);
        return dbp_err_set(err, DBP_EIO, "write %s: %s", path, strerror(errno));
    }
    return fd;
}

/* At start, every ready resource is checked again (pending until a pass says so), except
 * those whose "ready" records something done once: a SqlJob that ran, a Restore that
 * completed (checked again, its cluster's data would read as "already has data of its
 * own"), and Backups (the scheduler reports them). */
static int reset_status_cb(const store_resource_t *r, void *ud)
{
    if (!r->state || strcmp(r->state, "ready") != 0 || strcmp(r->kind, "SqlJob") == 0 ||
        strcmp(r->kind, "Backup") == 0 || strcmp(r->kind, "Restore") == 0)
        return 0;
    dbp_err_t err;
    if (store_set_status(ud, r->tenant, r->kind, r->name, r->observed_generation, "pending",
                         "daemon started; checking again", &err) != 0)
        dbp_warn("status_write_failed", "error=%s", dbp_log_q(err.msg));
    return 0;
}

/* Parses and validates the spec files, with the store's resources as the known set.
 * Prints diagnostics. Returns 0, or DBP_EINVAL. */
static int load_files(const ctl_options_t *o, spec_set_t *set)
{
    spec_diags_t d;
    spec_diags_init(&d);
    int bad = 0;
    for (int i = 0; i < o->nfiles; i++)
        if (spec_parse_file(set, o->files[i], &d) != 0)
            bad = 1;
    if (!bad && spec_validate(set, NULL, &d) != 0)
        bad = 1;
    spec_diags_print(&d, stderr);
    spec_diags_free(&d);
    return bad ? DBP_EINVAL : 0;
}

int ctl_up(const ctl_options_t *o, dbp_err_t *err)
{
    spec_set_t files;
    spec_set_init(&files);
    /* Validate before touching anything: a bad spec changes nothing, running or not. */
    if (load_files(o, &files) != 0) {
        spec_set_free(&files);
        return dbp_err_set(err, DBP_EINVAL, "the spec has errors; nothing was changed");
    }

    ctl_daemon_t d;
    memset(&d, 0, sizeof(d));
    d.lock_fd = -1;
    d.wake[0] = d.wake[1] = -1;
    d.pass_interval_ms = o->pass_interval_ms > 0 ? o->pass_interval_ms : 1000;
    d.resync_ms = o->resync_ms > 0 ? o->resync_ms : 30000;
    api_server_t *api = NULL;
    int rc;

    if ((rc = dbp_runas_resolve(&d.runas, err)))
        goto out;
    if ((rc = dbp_mkdir_p(o->data_dir, 0711, NULL, err)))
        goto out;
    if (!realpath(o->data_dir, d.data_dir)) {
        rc = dbp_err_set(err, DBP_EIO, "realpath %s: %s", o->data_dir, strerror(errno));
        goto out;
    }
    /* Instance paths extend the data dir by a few hundred bytes at most; fixed PATH_MAX
     * buffers below rely on this bound. */
    if (strlen(d.data_dir) > PATH_MAX / 2) {
        rc = dbp_err_set(err, DBP_EINVAL, "data dir path longer than %d bytes", PATH_MAX / 2);
        goto out;
    }
    if ((rc = dbp_check_traversable(d.data_dir, &d.runas, err)))
        goto out;
    if ((rc = take_lock(d.data_dir, err)) < 0)
        goto out;
    d.lock_fd = rc;
    if ((rc = dbp_runtime_dir(d.data_dir, d.run_dir, sizeof(d.run_dir), err)))
        goto out;
    if ((rc = dbp_mkdir_p(d.run_dir, 0711, NULL, err)))
        goto out;
    /* The binary archive_command runs (`dbplane wal-push`), resolved once at start. */
    ssize_t exe_len = readlink("/proc/self/exe", d.exe, sizeof(d.exe) - 1);
    d.exe[exe_len > 0 ? exe_len : 0] = '\0';
    char store_path[PATH_MAX], api_sock[PATH_MAX], key_path[PATH_MAX];
    if ((rc = ctl_paths(d.data_dir, store_path, api_sock, err)))
        goto out;
    snprintf(key_path, sizeof(key_path), "%s/secret.key", d.data_dir);
    if ((rc = store_open(&d.store, store_path, err)))
        goto out;
    if ((rc = secrets_open(&d.secrets, key_path, d.store, err)))
        goto out;

    /* Desired state: the files' resources are written to the store; the store is the
     * truth from here on (`apply` adds to it while running). */
    if ((rc = ctl_apply_set(d.store, d.secrets, &files, NULL, err))) {
        dbp_err_prefix(err, "store the spec: ");
        goto out;
    }
    /* What was ready when the last daemon stopped is not known to be ready now: until the
     * first pass has looked, `dbplane wait` must not return on old statuses. (SqlJobs and
     * Backups keep theirs: a completed job must never run again.) */
    if ((rc = store_list_resources(d.store, NULL, NULL, reset_status_cb, d.store, err)))
        goto out;

    if (pipe2(d.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = dbp_err_set(err, DBP_EIO, "pipe: %s", strerror(errno));
        goto out;
    }
    g_wake_wr = d.wake[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The proxy starts empty; the first pass gives it the clusters. */
    char tls_dir[PATH_MAX];
    snprintf(tls_dir, sizeof(tls_dir), "%s/tls", d.data_dir);
    if ((rc = dbp_mkdir_p(tls_dir, 0700, NULL, err)))
        goto out;
    proxy_config_t pcfg = {.tls_dir = tls_dir};
    if ((rc = proxy_start(&d.proxy, &pcfg, err))) {
        dbp_err_prefix(err, "start the proxy: ");
        goto out;
    }
    api_config_t ac = {.sock_path = api_sock, .store_path = store_path, .key_path = key_path,
                       .wake_fd = d.wake[1], .proxy = d.proxy};
    if ((rc = api_start(&api, &ac, err)))
        goto out;

    ctl_sup_init(&d.sup, ctl_on_process_event, &d);
    ctl_scheduler_t sched;
    ctl_scheduler_init(&sched, d.data_dir);
    dbp_info("daemon_started", "data_dir=%s api=%s pid=%d service_user=%s",
             dbp_log_q(d.data_dir), dbp_log_q(api_sock), (int)getpid(), d.runas.name);
    fprintf(stderr, "dbplane: up (data dir %s); `dbplane status` shows the clusters, Ctrl-C "
                    "stops them\n",
            d.data_dir);

    /* The HA monitor probes on its own thread; failovers it asks for run below. */
    if ((rc = ctl_ha_start(&d, d.wake[1]))) {
        dbp_err_set(err, rc, "start the HA monitor thread");
        goto out;
    }
    int64_t next_pass = 0;
    while (!g_stop) {
        ctl_sup_poll(&d.sup);
        run_command(&d);
        ctl_ha_tick(&d);
        int64_t now = dbp_now_ms();
        if (now >= next_pass || d.pass_requested) {
            d.pass_requested = false;
            ctl_reconcile_pass(&d);
            next_pass = dbp_now_ms() + d.pass_interval_ms;
        }
        /* Due Backups run as `dbplane backup` children; never blocks. */
        ctl_scheduler_tick(&sched, d.store, dbp_wall_ms());
        int64_t wait = next_pass - dbp_now_ms();
        if (wait < 0)
            wait = 0;
        if (wait > 1000)
            wait = 1000;
        struct pollfd pfd = {.fd = d.wake[0], .events = POLLIN};
        int pr = poll(&pfd, 1, (int)wait);
        if (pr > 0) {
            char buf[64];
            ssize_t n;
            while ((n = read(d.wake[0], buf, sizeof(buf))) > 0) {
                for (ssize_t k = 0; k < n; k++)
                    if (buf[k] == 'a' || /* the API applied new desired state */
                        buf[k] == 'j')   /* a worker finished a slow step (jobs.c) */
                        d.pass_requested = true;
            }
        }
    }

    fprintf(stderr, "dbplane: stopping servers...\n");
    dbp_info("daemon_stopping", "reason=signal");
    /* Running clones, rejoins and rebuilds are cancelled (their tools killed) and their
     * results dropped: each step is retried on the next start. */
    ctl_jobs_stop(&d);
    /* Clients first: the proxy closes its connections, then the servers stop. */
    api_stop(api);
    api = NULL;
    ctl_ha_stop(&d);
    proxy_stop(d.proxy);
    d.proxy = NULL;
    ctl_scheduler_stop(&sched, 30000);
    ctl_scheduler_free(&sched);
    ctl_shutdown(&d);
    /* The runtime dir only holds sockets of servers that are now stopped. */
    dbp_err_t rmerr;
    if (dbp_rm_rf(d.run_dir, &rmerr) != 0)
        dbp_warn("cleanup_failed", "path=%s error=%s", d.run_dir, dbp_log_q(rmerr.msg));
    fprintf(stderr, "dbplane: stopped\n");
    rc = 0;
out:
    api_stop(api);
    ctl_ha_stop(&d);
    proxy_stop(d.proxy);
    d.proxy = NULL;
    g_wake_wr = -1;
    ctl_daemon_free(&d);
    if (d.wake[0] >= 0)
        close(d.wake[0]);
    if (d.wake[1] >= 0)
        close(d.wake[1]);
    if (d.lock_fd >= 0)
        close(d.lock_fd);
    spec_set_free(&files);
    return rc;
}
