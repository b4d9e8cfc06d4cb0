/*
 * supervisor.c: process supervision with restart backoff (see supervisor.h).
 */
#include "control/supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define STABLE_AFTER_MS 30000

void ctl_sup_init(ctl_sup_t *sup, ctl_sup_event_cb on_event, void *ud)
{
    memset(sup, 0, sizeof(*sup));
    sup->on_event = on_event;
    sup->ud = ud;
}

void ctl_sup_free(ctl_sup_t *sup)
{
    for (int i = 0; i < sup->n; i++)
        free(sup->procs[i]);
    free(sup->procs);
    memset(sup, 0, sizeof(*sup));
}

const char *ctl_proc_state_str(ctl_proc_state_t s)
{
    switch (s) {
    case CTL_PROC_RUNNING: return "running";
    case CTL_PROC_BACKOFF: return "backoff";
    case CTL_PROC_STOPPING: return "stopping";
    default: return "stopped";
    }
}

static ctl_proc_t *find(const ctl_sup_t *sup, const char *id)
{
    for (int i = 0; i < sup->n; i++)
        if (strcmp(sup->procs[i]->id, id) == 0)
            return sup->procs[i];
    return NULL;
}

const ctl_proc_t *ctl_sup_find(const ctl_sup_t *sup, const char *id)
{
    return find(sup, id);
}

static void emit(ctl_sup_t *sup, const ctl_proc_t *p, const char *reason, const char *msg)
{
    dbp_info("process_event", "id=%s reason=%s pid=%d message=%s", p->id, reason, (int)p->pid,
             dbp_log_q(msg));
    if (sup->on_event)
        sup->on_event(sup->ud, p, reason, msg);
}

static int spawn(ctl_sup_t *sup, ctl_proc_t *p, dbp_err_t *err)
{
    pid_t pid;
    int rc = dbp_proc_spawn(p->argv, NULL, &p->runas, p->log_path, NULL, &pid, err);
    if (rc)
        return rc;
    p->pid = pid;
    p->state = CTL_PROC_RUNNING;
    p->started_ms = dbp_now_ms();
    return 0;
}

int ctl_sup_ensure(ctl_sup_t *sup, const char *id, char *const argv[], const char *log_path,
                   const dbp_runas_t *runas, int stop_signal, dbp_err_t *err)
{
    ctl_proc_t *p = find(sup, id);
    if (p && (p->state == CTL_PROC_RUNNING || p->state == CTL_PROC_BACKOFF ||
              p->state == CTL_PROC_STOPPING))
        return 0;
    if (!p) {
        if (sup->n == sup->cap) {
            int ncap = sup->cap ? sup->cap * 2 : 8;
            ctl_proc_t **np = realloc(sup->procs, (size_t)ncap * sizeof(*np));
            if (!np)
                return dbp_err_set(err, DBP_ENOMEM, "out of memory");
            sup->procs = np;
            sup->cap = ncap;
        }
        p = calloc(1, sizeof(*p));
        if (!p)
            return dbp_err_set(err, DBP_ENOMEM, "out of memory");
        snprintf(p->id, sizeof(p->id), "%s", id);
        sup->procs[sup->n++] = p;
    }
    /* Copy argv into the record's own buffer. */
    size_t off = 0;
    int i = 0;
    for (; argv[i] && i < CTL_MAX_ARGS - 1; i++) {
        size_t l = strlen(argv[i]) + 1;
        if (off + l > sizeof(p->argbuf))
            return dbp_err_set(err, DBP_EINVAL, "command line too long for %s", id);
        memcpy(p->argbuf + off, argv[i], l);
        p->argv[i] = p->argbuf + off;
        off += l;
    }
    p->argv[i] = NULL;
    snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
    p->runas = *runas;
    p->stop_signal = stop_signal;
    p->failures = 0;
    int rc = spawn(sup, p, err);
    if (rc == 0)
        emit(sup, p, "InstanceStarted", "server process started");
    return rc;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "ended (wait status %d)", status);
}

void ctl_sup_poll(ctl_sup_t *sup)
{
    int64_t now = dbp_now_ms();
    for (int i = 0; i < sup->n; i++) {
        ctl_proc_t *p = sup->procs[i];
        if (p->pid > 0) {
            int status;
            pid_t w = waitpid(p->pid, &status, WNOHANG);
            if (w == p->pid) {
                p->last_status = status;
                char what[128];
                describe_status(status, what, sizeof(what));
                if (p->state == CTL_PROC_STOPPING) {
                    p->state = CTL_PROC_STOPPED;
                    emit(sup, p, "InstanceStopped", what);
                    p->pid = 0;
                    continue;
                }
                if (now - p->started_ms >= STABLE_AFTER_MS)
                    p->failures = 0;
                int64_t delay = BACKOFF_MIN_MS;
                for (int k = 0; k < p->failures && delay < BACKOFF_MAX_MS; k++)
                    delay *= 2;
                if (delay > BACKOFF_MAX_MS)
                    delay = BACKOFF_MAX_MS;
                p->failures++;
                p->state = CTL_PROC_BACKOFF;
                p->next_start_ms = now + delay;
                char msg[256];
                snprintf(msg, sizeof(msg), "server process %d %s; restarting in %lld ms",
                         (int)p->pid, what, (long long)delay);
                p->pid = 0;
                emit(sup, p, "InstanceExited", msg);
            }
        }
        if (p->state == CTL_PROC_BACKOFF && now >= p->next_start_ms) {
            dbp_err_t err;
            if (spawn(sup, p, &err) == 0) {
                p->restarts++;
                char msg[128];
                snprintf(msg, sizeof(msg), "server process restarted (restart %d)", p->restarts);
                emit(sup, p, "InstanceRestarted", msg);
            } else {
                p->next_start_ms = now + BACKOFF_MAX_MS;
                emit(sup, p, "InstanceRestartFailed", err.msg);
            }
        }
    }
}

int ctl_sup_signal(ctl_sup_t *sup, const char *id, int sig)
{
    ctl_proc_t *p = find(sup, id);
    if (!p || p->state != CTL_PROC_RUNNING || p->pid <= 0)
        return DBP_ENOENT;
    return kill(p->pid, sig) == 0 ? 0 : DBP_EIO;
}

bool ctl_sup_stale(const ctl_sup_t *sup, const char *id, char *const argv[], char *why,
                   size_t len)
{
    const ctl_proc_t *p = find(sup, id);
    if (!p || p->state != CTL_PROC_RUNNING || p->pid <= 0)
        return false;
    int i = 0;
    for (; argv[i] && p->argv[i]; i++)
        if (strcmp(argv[i], p->argv[i]) != 0)
            break;
    if (argv[i] || p->argv[i]) {
        snprintf(why, len, "command line changed (%s)", argv[0] ? argv[0] : "");
        return true;
    }
    char link[64], exe[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/%d/exe", (int)p->pid);
    ssize_t n = readlink(link, exe, sizeof(exe) - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    static const char deleted[] = " (deleted)";
    size_t dl = sizeof(deleted) - 1;
    if ((size_t)n > dl && strcmp(exe + n - dl, deleted) == 0) {
        snprintf(why, len, "server binary %.*s was replaced", (int)((size_t)n - dl), exe);
        return true;
    }
    return false;
}

/* SIGKILLs pid's process group and every direct child of pid: servers like PostgreSQL
 * put each child in its own session, so the group alone does not reach them. Stopped
 * (SIGSTOPped) processes die too. */
void ctl_sup_kill_tree(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* Fields after the last ')' of "pid (comm) state ppid ...". */
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == pid)
            kill((pid_t)atoi(de->d_name), SIGKILL);
    }
    closedir(d);
}

void ctl_sup_stop_ids(ctl_sup_t *sup, const char *const *ids, int grace_ms)
{
    int pending = 0;
    for (int i = 0; ids[i]; i++) {
        ctl_proc_t *p = find(sup, ids[i]);
        if (!p)
            continue;
        if (p->state == CTL_PROC_BACKOFF)
            p->state = CTL_PROC_STOPPED;
        if (p->state == CTL_PROC_RUNNING && p->pid > 0) {
            kill(p->pid, p->stop_signal);
            p->state = CTL_PROC_STOPPING;
            pending++;
        }
    }
    int64_t deadline = dbp_now_ms() + grace_ms;
    bool killed = false;
    while (pending > 0) {
        pending = 0;
        ctl_sup_poll(sup);
        for (int i = 0; ids[i]; i++) {
            ctl_proc_t *p = find(sup, ids[i]);
            if (p && p->state == CTL_PROC_STOPPING)
                pending++;
        }
        if (pending == 0)
            break;
        if (!killed && dbp_now_ms() > deadline) {
            for (int i = 0; ids[i]; i++) {
                ctl_proc_t *p = find(sup, ids[i]);
                if (p && p->state == CTL_PROC_STOPPING && p->pid > 0) {
                    dbp_warn("process_kill", "id=%s pid=%d grace_ms=%d", p->id, (int)p->pid,
                             grace_ms);
                    ctl_sup_kill_tree(p->pid);
                }
            }
            killed = true;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void ctl_sup_stop_all(ctl_sup_t *sup, int grace_ms)
{
    const char **ids = calloc((size_t)sup->n + 1, sizeof(char *));
    if (!ids)
        return;
    for (int i = 0; i < sup->n; i++)
        ids[i] = sup->procs[i]->id;
    ctl_sup_stop_ids(sup, ids, grace_ms);
    free(ids);
}
