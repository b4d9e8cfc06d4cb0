/*
 * pipe.c: piped one-shot children (see pipe.h). The fork/exec path mirrors proc.c's:
 * between fork and exec only async-signal-safe calls are made, the environment is built
 * before forking, every descriptor above 2 is closed in the child, and the child gets its
 * own process group so a terminal's Ctrl-C reaches dbplane only.
 */
#include "common/pipe.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


/* Runs in the child between fork and exec: the pipe end becomes stdout (reading from the
 * child) or stdin (writing to it); the log file takes the rest. */
#define DBP_PIPE_SIZE (1024 * 1024)     /* bytes the kernel buffers between a tool and us */
#define DBP_PIPE_PUMP_BUF (256 * 1024) /* bytes moved per read or write of a pump */

static void pipe_child(char *const argv[], char *const envp[], const dbp_runas_t *ra, int logfd,
                       const char *cwd, dbp_pipe_dir_t dir, int child_end)
{
    if (dir == DBP_PIPE_FROM_CHILD)
        dbp_proc_child_exec(argv, envp, ra, -1, child_end, logfd, cwd);
    dbp_proc_child_exec(argv, envp, ra, child_end, logfd, logfd, cwd);
}

int dbp_pipe_spawn(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                   const char *log_path, const char *cwd, dbp_pipe_dir_t dir, dbp_pipe_t *p,
                   dbp_err_t *err)
{
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
    const char *base = strrchr(argv[0], '/');
    snprintf(p->what, sizeof(p->what), "%s", base ? base + 1 : argv[0]);
    int logfd = dbp_proc_open_log(argv[0], log_path, ra, err);
    if (logfd < 0)
        return logfd;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        int e = errno;
        close(logfd);
        return dbp_err_set(err, DBP_EIO, "pipe: %s", strerror(e));
    }
    /* A 1 MiB pipe (the default Linux maximum for unprivileged users; 64 KiB otherwise)
     * lets the tool keep producing while dbplane compresses the previous 256 KiB read.
     * Best effort: a smaller pipe is only slower. */
    (void)fcntl(fds[0], F_SETPIPE_SZ, DBP_PIPE_SIZE);
    /* fds[0] is the read end. FROM_CHILD: the child writes fds[1]; TO_CHILD: reads fds[0]. */
    int child_end = dir == DBP_PIPE_FROM_CHILD ? fds[1] : fds[0];
    int our_end = dir == DBP_PIPE_FROM_CHILD ? fds[0] : fds[1];

    char **envp = dbp_proc_child_env(env_extra);
    if (!envp) {
        close(logfd);
        close(fds[0]);
        close(fds[1]);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    if (dbp_cancelled()) {
        free(envp);
        close(logfd);
        close(fds[0]);
        close(fds[1]);
        return dbp_err_set(err, DBP_EIO, "%s not started: cancelled (the daemon stops)",
                           p->what);
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        free(envp);
        close(logfd);
        close(fds[0]);
        close(fds[1]);
        return dbp_err_set(err, DBP_EIO, "fork: %s", strerror(e));
    }
    if (pid == 0)
        pipe_child(argv, envp, ra, logfd, cwd, dir, child_end);
    setpgid(pid, pid);
    dbp_cancel_track(pid);
    free(envp);
    close(logfd);
    close(child_end);
    p->pid = pid;
    p->fd = our_end;
    return 0;
}

long dbp_pipe_read(dbp_pipe_t *p, void *buf, size_t cap, dbp_err_t *err)
{
    for (;;) {
        ssize_t n = read(p->fd, buf, cap);
        if (n >= 0)
            return (long)n;
        if (errno != EINTR)
            return dbp_err_set(err, DBP_EIO, "read from %s: %s", p->what, strerror(errno));
    }
}

int dbp_pipe_write_all(dbp_pipe_t *p, const void *buf, size_t len, dbp_err_t *err)
{
    const char *b = buf;
    while (len) {
        ssize_t n = write(p->fd, b, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return dbp_err_set(err, DBP_EIO, "write to %s: %s", p->what, strerror(errno));
        }
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

void dbp_pipe_last_log_line(const char *path, char *buf, size_t len)
{
    dbp_log_tail_t t = {.tail_bytes = 4096};
    dbp_log_tail_line(path, &t, buf, len);
}

int dbp_pipe_finish(dbp_pipe_t *p, int timeout_ms, dbp_err_t *err)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->pid <= 0)
        return 0;
    int64_t deadline = timeout_ms > 0 ? dbp_now_ms() + timeout_ms : 0;
    int status = 0;
    int pfd = deadline ? dbp_child_pidfd(p->pid) : -1; /* exit seen at once (proc.h) */
    for (;;) {
        pid_t w = waitpid(p->pid, &status, deadline ? WNOHANG : 0);
        if (w == p->pid)
            break;
        if (w < 0 && errno != EINTR) {
            int e = errno;
            dbp_cancel_forget(p->pid);
            p->pid = 0;
            if (pfd >= 0)
                close(pfd);
            return dbp_err_set(err, DBP_EIO, "waitpid %s: %s", p->what, strerror(e));
        }
        if (deadline && dbp_now_ms() > deadline) {
            kill(-p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            dbp_cancel_forget(p->pid);
            p->pid = 0;
            if (pfd >= 0)
                close(pfd);
            return dbp_err_set(err, DBP_EIO, "%s timed out after %d ms (log: %s)", p->what,
                               timeout_ms, p->log_path);
        }
        if (deadline)
            dbp_child_nap(pfd, 10);
    }
    if (pfd >= 0)
        close(pfd);
    dbp_cancel_forget(p->pid);
    p->pid = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char last[400];
    dbp_pipe_last_log_line(p->log_path, last, sizeof(last));
    if (WIFSIGNALED(status))
        return dbp_err_set(err, DBP_EIO, "%s killed by signal %d: %s", p->what, WTERMSIG(status),
                           last);
    return dbp_err_set(err, DBP_EIO, "%s exited with status %d: %s", p->what, WEXITSTATUS(status),
                       last);
}

void dbp_pipe_kill(dbp_pipe_t *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL);
        int status;
        while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
        }
        dbp_cancel_forget(p->pid);
        p->pid = 0;
    }
}


int dbp_pipe_pump_out(dbp_pipe_t *p, dbp_pipe_sink_fn sink, void *ud, int timeout_ms,
                      dbp_err_t *err)
{
    char *buf = malloc(DBP_PIPE_PUMP_BUF);
    if (!buf) {
        dbp_pipe_kill(p);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    int rc = 0;
    for (;;) {
        long n = dbp_pipe_read(p, buf, DBP_PIPE_PUMP_BUF, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        rc = sink(ud, buf, (size_t)n, err);
        if (rc)
            break;
    }
    free(buf);
    if (rc) {
        dbp_pipe_kill(p);
        return rc;
    }
    return dbp_pipe_finish(p, timeout_ms, err);
}

int dbp_pipe_pump_in(dbp_pipe_t *p, dbp_pipe_source_fn source, void *ud, int timeout_ms,
                     dbp_err_t *err)
{
    char *buf = malloc(DBP_PIPE_PUMP_BUF);
    if (!buf) {
        dbp_pipe_kill(p);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    int rc = 0;
    bool child_failed = false;
    for (;;) {
        long n = source(ud, buf, DBP_PIPE_PUMP_BUF, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        if (dbp_pipe_write_all(p, buf, (size_t)n, err) != 0) {
            child_failed = true; /* the child stopped reading: its own message says why */
            break;
        }
    }
    free(buf);
    if (rc) {
        dbp_pipe_kill(p);
        return rc;
    }
    rc = dbp_pipe_finish(p, timeout_ms, err);
    if (rc == 0 && child_failed)
        rc = dbp_err_set(err, DBP_EIO, "%s stopped reading its input", p->what);
    return rc;
}
