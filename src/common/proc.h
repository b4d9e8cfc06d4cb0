/*
 * proc.h: starting child processes for database servers and their one-shot tools
 * (initdb, pg_basebackup, ...). A child runs in its own process group (so a Ctrl-C at the
 * terminal reaches only dbplane, which then stops servers in order), with stdin from
 * /dev/null and stdout+stderr appended to a log file, and — when dbplane runs as root —
 * as the unprivileged service user. Secrets never go in argv: pass them in files of
 * mode 0600 or through the engine's own protocol instead.
 */
#ifndef DBP_COMMON_PROC_H
#define DBP_COMMON_PROC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

/* Which OS account children run as. */
typedef struct dbp_runas {
    bool drop;      /* true: setgid/setuid to uid/gid before exec (dbplane runs as root) */
    uid_t uid;
    gid_t gid;
    char name[64];  /* account name of the children ("dbplane", or the invoking user) */
    char daemon_name[64]; /* account name dbplane itself runs as */
} dbp_runas_t;

/* Resolves the service account: when running as root, the user named by the environment
 * variable DBPLANE_SERVICE_USER or "dbplane" (created by scripts/install-deps.sh);
 * otherwise the current user with drop = false. DBP_ENOENT with a hint when the account
 * is missing. */
int dbp_runas_resolve(dbp_runas_t *out, dbp_err_t *err) __attribute__((warn_unused_result));

/* Starts argv[0] (a full path) with argv, the current environment plus `env_extra`
 * (NULL-terminated "K=V" list, may be NULL), cwd `cwd` (may be NULL), output appended to
 * `log_path` (created 0640, owned by the service user), in a new process group, as `ra`.
 * Returns 0 with *pid set, or DBP_EIO. Borrows everything. */
int dbp_proc_spawn(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                   const char *log_path, const char *cwd, pid_t *pid, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Checks that `exe` is executable and opens `log_path` for a child's output (append,
 * created 0640, owned by the service user when ra->drop). Returns the fd (O_CLOEXEC; the
 * caller closes it) or a negative DBP_E* code with err filled. */
int dbp_proc_open_log(const char *exe, const char *log_path, const dbp_runas_t *ra,
                      dbp_err_t *err) __attribute__((warn_unused_result));

/* The environment for a child: this process's, minus LD_PRELOAD, plus `env_extra`
 * (NULL-terminated "K=V" list, may be NULL). Returns an owned array (free() it; the
 * strings are borrowed) or NULL when out of memory. Call before fork. */
char **dbp_proc_child_env(char *const env_extra[]);

/* In a forked child: puts it in its own process group, resets signals, connects stdin to
 * in_fd (-1: /dev/null), stdout to out_fd and stderr to err_fd, closes every other
 * descriptor, switches to the service user (ra->drop) and execs argv with envp. Never
 * returns (exit status 126/127 when it cannot). Only async-signal-safe calls: the parent
 * may be multi-threaded. */
void dbp_proc_child_exec(char *const argv[], char *const envp[], const dbp_runas_t *ra,
                         int in_fd, int out_fd, int err_fd, const char *cwd)
    __attribute__((noreturn));

/* Spawns as dbp_proc_spawn and waits up to `timeout_ms` (<= 0: no limit). Returns 0 when
 * the command exited with status 0; otherwise DBP_EIO with the exit status and the last
 * line of the log in err (the child is killed with SIGKILL on time-out). */
int dbp_proc_run(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                 const char *log_path, int timeout_ms, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* mkdir -p with `mode` for the created directories, then (when ra->drop) chown of the
 * last component to the service user. Existing directories are left as they are. */
int dbp_mkdir_p(const char *path, unsigned mode, const dbp_runas_t *ra, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Removes a directory tree (like rm -rf); absent is success. Refuses "/" and "". */
int dbp_rm_rf(const char *path, dbp_err_t *err) __attribute__((warn_unused_result));

/* Prepares the data directory a restore writes into: refuses (DBP_EBUSY, naming it) a
 * directory that exists and is not empty — a restore never replaces data — else creates
 * it 0700, owned by the service user when ra->drop. Shared by every engine's
 * restore_physical. */
int dbp_restore_target(const char *dir, const dbp_runas_t *ra, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Size of the file at `path` in bytes, 0 when it does not exist (e.g. the offset of a tool
 * log before a run appends to it). */
long dbp_file_size(const char *path);

/* Checks that every parent of `path` can be traversed by the service user (mode o+x, or
 * owned by it): a data dir under a 0700 home or /tmp/pytest-of-root would make the
 * servers fail with a confusing "permission denied". DBP_EINVAL naming the directory. */
int dbp_check_traversable(const char *path, const dbp_runas_t *ra, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Writes `len` bytes to `path` atomically (temp file + fsync + rename) with `mode`,
 * owned by the service user when ra is not NULL and ra->drop. */
int dbp_write_file(const char *path, const char *data, size_t len, unsigned mode,
                   const dbp_runas_t *ra, dbp_err_t *err) __attribute__((warn_unused_result));

/* True when the file at path exists and holds exactly data[0..len). */
bool dbp_file_equals(const char *path, const char *data, size_t len);

/* dbp_write_file, skipped when the file already holds exactly `data`: returns 1 when it
 * wrote, 0 when the content was already there, or a negative DBP_E* code. Rendered
 * configuration uses it so that "changed" means a reload is due. */
int dbp_write_file_if_changed(const char *path, const char *data, size_t len, unsigned mode,
                              const dbp_runas_t *ra, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reads a whole file: returns owned *data (NUL-terminated, free with free()) and *len
 * (may be NULL). DBP_ENOENT when absent. */
int dbp_read_file(const char *path, char **data, size_t *len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* ---- cancellation of a worker thread's tools (control/jobs.c) -------------------------- */

#define DBP_CANCEL_MAX 16

/* A cancellation token for the children one thread starts. A thread binds a token
 * (dbp_cancel_bind); from then on every child it starts through dbp_proc_spawn or
 * dbp_pipe_spawn is recorded in it until reaped, and once another thread cancels the
 * token (dbp_cancel_trigger) each recorded child's process group is killed with SIGKILL,
 * later spawns of the bound thread fail with DBP_EIO at once, and dbp_cancelled() turns
 * true (for the bound thread's own waits). Initialise with dbp_cancel_init; the owner
 * frees it with dbp_cancel_destroy after the bound thread ended. */
typedef struct dbp_cancel {
    pthread_mutex_t mu;
    bool cancelled;
    pid_t pgid[DBP_CANCEL_MAX]; /* leaders of the live children's process groups */
    int n;
} dbp_cancel_t;

void dbp_cancel_init(dbp_cancel_t *c);
void dbp_cancel_destroy(dbp_cancel_t *c);

/* Binds `c` to the calling thread (NULL unbinds). The token must outlive the binding. */
void dbp_cancel_bind(dbp_cancel_t *c);

/* True when the calling thread's token was cancelled; false without a token. */
bool dbp_cancelled(void);

/* From any thread: marks `c` cancelled and kills the process groups of its live children. */
void dbp_cancel_trigger(dbp_cancel_t *c);

/* Records child `pid` (a process-group leader) in the calling thread's token, killing it at
 * once when the token is already cancelled; no-op without a token or when full. Called by
 * the spawn functions. */
void dbp_cancel_track(pid_t pid);

/* Forgets child `pid` (after it was reaped: its pid may be reused). No-op without a token. */
void dbp_cancel_forget(pid_t pid);

/* Sleeps until child `pid` exits or `pidfd` (>= 0, from dbp_child_pidfd) reports it,
 * at most `ms` milliseconds; with pidfd < 0 a plain sleep of `ms`. For the polling wait
 * loops: the caller then reaps with waitpid(WNOHANG), so a child's exit is noticed at
 * once instead of up to one poll interval later. Never fails. */
void dbp_child_nap(int pidfd, int ms);

/* A pidfd for child `pid` (pidfd_open(2), Linux 5.3+; close it when done), or -1 when
 * the kernel has none: dbp_child_nap then sleeps. */
int dbp_child_pidfd(pid_t pid);

/* Milliseconds of CLOCK_MONOTONIC, and of the real-time clock since the Unix epoch. */
int64_t dbp_now_ms(void);
int64_t dbp_wall_ms(void);

/* The short runtime directory for the data dir `data_dir` (unix sockets must fit in 107
 * bytes): "/tmp/dbplane-<16 hex digits of a hash of the absolute data dir path>". Writes
 * at most `len` bytes into buf. Does not create it. */
int dbp_runtime_dir(const char *data_dir, char *buf, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

#endif
