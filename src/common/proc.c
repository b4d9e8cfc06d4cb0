/*
 * proc.c: child processes, service-account handling and small file helpers (see proc.h).
 */
#include "common/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- cancellation tokens ---------------------------------------------------------------- */

static __thread dbp_cancel_t *tl_cancel;

void dbp_cancel_init(dbp_cancel_t *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
}

void dbp_cancel_destroy(dbp_cancel_t *c)
{
    pthread_mutex_destroy(&c->mu);
}

void dbp_cancel_bind(dbp_cancel_t *c)
{
    tl_cancel = c;
}

bool dbp_cancelled(void)
{
    dbp_cancel_t *c = tl_cancel;
    if (!c)
        return false;
    pthread_mutex_lock(&c->mu);
    bool v = c->cancelled;
    pthread_mutex_unlock(&c->mu);
    return v;
}

void dbp_cancel_trigger(dbp_cancel_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->cancelled = true;
    /* Not yet reaped (dbp_cancel_forget comes after waitpid): each pid still names our
     * child, alive or a zombie, never a reused one. */
    for (int i = 0; i < c->n; i++)
        kill(-c->pgid[i], SIGKILL);
    pthread_mutex_unlock(&c->mu);
}

void dbp_cancel_track(pid_t pid)
{
    dbp_cancel_t *c = tl_cancel;
    if (!c || pid <= 0)
        return;
    pthread_mutex_lock(&c->mu);
    if (c->cancelled)
        kill(-pid, SIGKILL);
    else if (c->n < DBP_CANCEL_MAX)
        c->pgid[c->n++] = pid;
    pthread_mutex_unlock(&c->mu);
}

void dbp_cancel_forget(pid_t pid)
{
    dbp_cancel_t *c = tl_cancel;
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++) {
        if (c->pgid[i] == pid) {
            c->pgid[i] = c->pgid[--c->n];
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

int64_t dbp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dbp_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dbp_runas_resolve(dbp_runas_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) == 0 && res)
        snprintf(out->daemon_name, sizeof(out->daemon_name), "%s", pw.pw_name);
    else
        snprintf(out->daemon_name, sizeof(out->daemon_name), "%u", (unsigned)geteuid());
    if (geteuid() != 0) {
        out->drop = false;
        out->uid = geteuid();
        out->gid = getegid();
        snprintf(out->name, sizeof(out->name), "%s", out->daemon_name);
        return 0;
    }
    const char *name = getenv("DBPLANE_SERVICE_USER");
    if (!name || !*name)
        name = "dbplane";
    res = NULL;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res)
        return dbp_err_set(err, DBP_ENOENT,
                           "service user '%s' does not exist (run scripts/install-deps.sh, or set "
                           "DBPLANE_SERVICE_USER): database servers refuse to run as root",
                           name);
    out->drop = true;
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;
    snprintf(out->name, sizeof(out->name), "%s", pw.pw_name);
    return 0;
}

void dbp_proc_child_exec(char *const argv[], char *const envp[], const dbp_runas_t *ra,
                         int in_fd, int out_fd, int err_fd, const char *cwd)
{
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    if (in_fd < 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            close(devnull);
        }
    } else {
        dup2(in_fd, STDIN_FILENO);
    }
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    /* No descriptor of the daemon (store, sockets, API) may leak into a server. */
    close_range(3, ~0U, 0);
    if (ra && ra->drop) {
        if (setgroups(0, NULL) != 0 || setgid(ra->gid) != 0 || setuid(ra->uid) != 0) {
            static const char m[] = "dbplane: cannot switch to the service user\n";
            ssize_t w = write(STDERR_FILENO, m, sizeof(m) - 1);
            (void)w;
            _exit(126);
        }
    }
    if (cwd && chdir(cwd) != 0)
        _exit(126);
    execve(argv[0], argv, envp);
    static const char m[] = "dbplane: exec failed\n";
    ssize_t w = write(STDERR_FILENO, m, sizeof(m) - 1);
    (void)w;
    _exit(127);
}

int dbp_proc_open_log(const char *exe, const char *log_path, const dbp_runas_t *ra,
                      dbp_err_t *err)
{
    if (access(exe, X_OK) != 0)
        return dbp_err_set(err, DBP_EIO, "%s is not executable: %s", exe, strerror(errno));
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (logfd < 0)
        return dbp_err_set(err, DBP_EIO, "open %s: %s", log_path, strerror(errno));
    if (ra && ra->drop && fchown(logfd, ra->uid, ra->gid) != 0) {
        close(logfd);
        return dbp_err_set(err, DBP_EIO, "chown %s: %s", log_path, strerror(errno));
    }
    return logfd;
}

char **dbp_proc_child_env(char *const env_extra[])
{
    size_t nenv = 0, nextra = 0;
    while (environ[nenv])
        nenv++;
    while (env_extra && env_extra[nextra])
        nextra++;
    char **envp = calloc(nenv + nextra + 1, sizeof(char *));
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        /* Do not hand dbplane's own preload settings to the servers. */
        if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0)
            continue;
        envp[k++] = environ[i];
    }
    for (size_t i = 0; i < nextra; i++)
        envp[k++] = env_extra[i];
    envp[k] = NULL;
    return envp;
}

int dbp_proc_spawn(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                   const char *log_path, const char *cwd, pid_t *pid, dbp_err_t *err)
{
    if (dbp_cancelled())
        return dbp_err_set(err, DBP_EIO, "%s not started: cancelled (the daemon stops)",
                           argv[0]);
    int logfd = dbp_proc_open_log(argv[0], log_path, ra, err);
    if (logfd < 0)
        return logfd;
    /* Build the environment before fork: the child may only call async-signal-safe code. */
    char **envp = dbp_proc_child_env(env_extra);
    if (!envp) {
        close(logfd);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    /* Make the log fd survive exec in the child (dup2 clears CLOEXEC on the copies). */
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        free(envp);
        close(logfd);
        return dbp_err_set(err, DBP_EIO, "fork: %s", strerror(e));
    }
    if (p == 0)
        dbp_proc_child_exec(argv, envp, ra, -1, logfd, logfd, cwd);
    setpgid(p, p); /* also from the parent, to close the race with an early kill */
    dbp_cancel_track(p);
    free(envp);
    close(logfd);
    *pid = p;
    return 0;
}

/* Copies the last non-empty line of the file at path into buf. */
static void last_log_line(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        long start = end > 4096 ? end - 4096 : 0;
        fseek(f, start, SEEK_SET);
    }
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n)
            snprintf(buf, len, "%s", line);
    }
    fclose(f);
}

int dbp_child_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        return (int)fd;
    }
#else
    (void)pid;
#endif
    return -1;
}

void dbp_child_nap(int pidfd, int ms)
{
    if (pidfd >= 0) {
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        if (poll(&pfd, 1, ms) >= 0)
            return;
        if (errno == EINTR)
            return;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int dbp_proc_run(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                 const char *log_path, int timeout_ms, dbp_err_t *err)
{
    pid_t pid;
    int rc = dbp_proc_spawn(argv, env_extra, ra, log_path, NULL, &pid, err);
    if (rc)
        return rc;
    int64_t deadline = timeout_ms > 0 ? dbp_now_ms() + timeout_ms : 0;
    int status = 0;
    /* Waits on a pidfd where the kernel has one: the exit is seen when it happens, not
     * up to a 20 ms poll interval later (a --prepare or a tool run per backup/restore). */
    int pfd = dbp_child_pidfd(pid);
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            int e = errno;
            if (pfd >= 0)
                close(pfd);
            dbp_cancel_forget(pid);
            return dbp_err_set(err, DBP_EIO, "waitpid: %s", strerror(e));
        }
        if (deadline && dbp_now_ms() > deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            if (pfd >= 0)
                close(pfd);
            dbp_cancel_forget(pid);
            return dbp_err_set(err, DBP_EIO, "%s timed out after %d ms (log: %s)", argv[0],
                               timeout_ms, log_path);
        }
        dbp_child_nap(pfd, 20);
    }
    if (pfd >= 0)
        close(pfd);
    dbp_cancel_forget(pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char last[512];
    last_log_line(log_path, last, sizeof(last));
    if (WIFSIGNALED(status))
        return dbp_err_set(err, DBP_EIO, "%s killed by signal %d: %s", argv[0], WTERMSIG(status),
                           last);
    return dbp_err_set(err, DBP_EIO, "%s exited with status %d: %s", argv[0], WEXITSTATUS(status),
                       last);
}

int dbp_mkdir_p(const char *path, unsigned mode, const dbp_runas_t *ra, dbp_err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return dbp_err_set(err, DBP_EINVAL, "path too long: %s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/')
        tmp[--n] = '\0';
    bool created_last = false;
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, mode) == 0) {
                created_last = (c == '\0');
                if (chmod(tmp, mode) != 0)
                    return dbp_err_set(err, DBP_EIO, "chmod %s: %s", tmp, strerror(errno));
            } else if (errno != EEXIST) {
                return dbp_err_set(err, DBP_EIO, "mkdir %s: %s", tmp, strerror(errno));
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    if (created_last && ra && ra->drop && chown(tmp, ra->uid, ra->gid) != 0)
        return dbp_err_set(err, DBP_EIO, "chown %s: %s", tmp, strerror(errno));
    return 0;
}

int dbp_rm_rf(const char *path, dbp_err_t *err)
{
    if (!path || !*path || strcmp(path, "/") == 0)
        return dbp_err_set(err, DBP_EINVAL, "refusing to remove '%s'", path ? path : "");
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : dbp_err_set(err, DBP_EIO, "stat %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return dbp_err_set(err, DBP_EIO, "opendir %s: %s", path, strerror(errno));
        struct dirent *de;
        int rc = 0;
        while (rc == 0 && (de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char child[PATH_MAX];
            if (snprintf(child, sizeof(child), "%s/%s", path, de->d_name) >= (int)sizeof(child)) {
                rc = dbp_err_set(err, DBP_EINVAL, "path too long under %s", path);
                break;
            }
            rc = dbp_rm_rf(child, err);
        }
        closedir(d);
        if (rc)
            return rc;
        if (rmdir(path) != 0)
            return dbp_err_set(err, DBP_EIO, "rmdir %s: %s", path, strerror(errno));
        return 0;
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return dbp_err_set(err, DBP_EIO, "unlink %s: %s", path, strerror(errno));
    return 0;
}

int dbp_check_traversable(const char *path, const dbp_runas_t *ra, dbp_err_t *err)
{
    if (!ra->drop)
        return 0;
    char tmp[PATH_MAX];
    if (!realpath(path, tmp))
        return dbp_err_set(err, DBP_EIO, "realpath %s: %s", path, strerror(errno));
    for (;;) {
        struct stat st;
        if (stat(tmp, &st) != 0)
            return dbp_err_set(err, DBP_EIO, "stat %s: %s", tmp, strerror(errno));
        bool ok = (st.st_mode & S_IXOTH) || (st.st_uid == ra->uid && (st.st_mode & S_IXUSR)) ||
                  (st.st_gid == ra->gid && (st.st_mode & S_IXGRP));
        if (!ok)
            return dbp_err_set(err, DBP_EINVAL,
                               "directory %s (mode %04o) cannot be entered by the service user "
                               "'%s'; choose a data dir outside it or chmod o+x it",
                               tmp, (unsigned)(st.st_mode & 07777), ra->name);
        char *slash = strrchr(tmp, '/');
        if (!slash || slash == tmp)
            break;
        *slash = '\0';
    }
    return 0;
}

int dbp_write_file(const char *path, const char *data, size_t len, unsigned mode,
                   const dbp_runas_t *ra, dbp_err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return dbp_err_set(err, DBP_EINVAL, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "open %s: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return dbp_err_set(err, DBP_EIO, "write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || (ra && ra->drop && fchown(fd, ra->uid, ra->gid) != 0) ||
        fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return dbp_err_set(err, DBP_EIO, "finish %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return dbp_err_set(err, DBP_EIO, "rename %s: %s", path, strerror(e));
    }
    return 0;
}

int dbp_read_file(const char *path, char **data, size_t *len, dbp_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return dbp_err_set(err, errno == ENOENT ? DBP_ENOENT : DBP_EIO, "open %s: %s", path,
                           strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return dbp_err_set(err, DBP_ENOMEM, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return dbp_err_set(err, DBP_EIO, "read %s failed", path);
    }
    buf[n] = '\0';
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

bool dbp_file_equals(const char *path, const char *data, size_t len)
{
    char *old = NULL;
    size_t oldlen = 0;
    dbp_err_t ignore;
    if (dbp_read_file(path, &old, &oldlen, &ignore) != 0)
        return false;
    bool same = oldlen == len && memcmp(old, data, len) == 0;
    free(old);
    return same;
}

int dbp_write_file_if_changed(const char *path, const char *data, size_t len, unsigned mode,
                              const dbp_runas_t *ra, dbp_err_t *err)
{
    if (dbp_file_equals(path, data, len))
        return 0;
    int rc = dbp_write_file(path, data, len, mode, ra, err);
    return rc ? rc : 1;
}

int dbp_runtime_dir(const char *data_dir, char *buf, size_t len, dbp_err_t *err)
{
    char abs[PATH_MAX];
    if (!realpath(data_dir, abs))
        return dbp_err_set(err, DBP_ENOENT, "data dir %s: %s", data_dir, strerror(errno));
    /* FNV-1a, 64 bit: stable across runs and builds, enough to keep data dirs apart. */
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = abs; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    if (snprintf(buf, len, "/tmp/dbplane-%016llx", (unsigned long long)h) >= (int)len)
        return dbp_err_set(err, DBP_EINVAL, "buffer too small");
    return 0;
}

/* True when `dir` does not exist or is an empty directory. */
static bool dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    closedir(d);
    return empty;
}

int dbp_restore_target(const char *dir, const dbp_runas_t *ra, dbp_err_t *err)
{
    if (!dir_is_empty(dir))
        return dbp_err_set(err, DBP_EBUSY,
                           "restore into %s refused: the directory is not empty (a restore "
                           "never replaces an existing data directory)",
                           dir);
    return dbp_mkdir_p(dir, 0700, ra, err);
}

long dbp_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}
