/*
 * pipe.h: one-shot tools whose standard input or output is a stream dbplane produces or
 * consumes (pg_basebackup -D -, pg_dump, tar -x, pg_restore). It is proc.h's spawn with
 * one difference: one of the child's stdin/stdout is the end of a pipe handed back to the
 * caller, while stderr still goes to a log file. The child runs in its own process group,
 * inherits no other descriptor of dbplane, and drops to the service account when asked
 * (dbp_runas_t.drop), exactly like proc.h's children. Secrets never go in argv.
 */
#ifndef DBP_COMMON_PIPE_H
#define DBP_COMMON_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/proc.h"

/* Which standard stream of the child is connected to the pipe. */
typedef enum dbp_pipe_dir {
    DBP_PIPE_FROM_CHILD = 0, /* the caller reads the child's stdout; child stdin is /dev/null */
    DBP_PIPE_TO_CHILD,       /* the caller writes the child's stdin; child stdout goes to the log */
} dbp_pipe_dir_t;

/* A running piped child. */
typedef struct dbp_pipe {
    pid_t pid;          /* > 0 while the child has not been waited for */
    int fd;             /* the caller's end of the pipe (O_CLOEXEC); -1 once closed */
    char log_path[512]; /* where the child's stderr (and stdout for TO_CHILD) goes */
    char what[64];      /* basename of argv[0], for messages */
} dbp_pipe_t;

/* Starts argv[0] (a full path) with argv, the current environment plus `env_extra`
 * (NULL-terminated "K=V" list, may be NULL), cwd `cwd` (may be NULL), stderr appended to
 * `log_path` (created 0640, owned by the service user when ra->drop), in a new process
 * group, as `ra` (NULL: as dbplane itself). `p` is filled in; read or write p->fd, then
 * call dbp_pipe_finish. SIGPIPE must be ignored by the caller (a child that dies early
 * makes writes fail with EPIPE instead). Returns 0, DBP_EIO (exec target missing, fork or
 * pipe failure). Borrows everything. */
int dbp_pipe_spawn(char *const argv[], char *const env_extra[], const dbp_runas_t *ra,
                   const char *log_path, const char *cwd, dbp_pipe_dir_t dir, dbp_pipe_t *p,
                   dbp_err_t *err) __attribute__((warn_unused_result));

/* Reads up to `cap` bytes from the child's stdout, retrying on EINTR. Returns the count
 * (0 at end of stream) or DBP_EIO. */
long dbp_pipe_read(dbp_pipe_t *p, void *buf, size_t cap, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Writes all `len` bytes to the child's stdin. DBP_EIO when the child stopped reading
 * (EPIPE): the caller should then call dbp_pipe_finish for the child's own message. */
int dbp_pipe_write_all(dbp_pipe_t *p, const void *buf, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Closes the caller's end (the child sees EOF on stdin, or SIGPIPE on stdout) and waits up
 * to `timeout_ms` (<= 0: no limit) for the child; on time-out the process group is
 * killed. Returns 0 when it exited with status 0, else DBP_EIO with the status and the
 * last line of the log. Safe to call twice (the second call returns 0). */
int dbp_pipe_finish(dbp_pipe_t *p, int timeout_ms, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Kills the child's process group with SIGKILL, closes the pipe and reaps the child. For
 * error paths; a no-op on a finished pipe. */
void dbp_pipe_kill(dbp_pipe_t *p);

/* Copies the last non-empty line of the file at `path` (searching its last 4 KiB) into
 * buf (len bytes, truncated); empty when none. For the error message of a failed tool:
 * dbp_log_tail_line (common/log.h) with no marks. */
void dbp_pipe_last_log_line(const char *path, char *buf, size_t len);

/* Receives the next `len` bytes read from a child (a view valid during the call);
 * returns 0, or a negative DBP_E* code (with err filled) that stops the pump. The same
 * shape as engine.h's engine_write_fn. */
typedef int (*dbp_pipe_sink_fn)(void *ud, const void *buf, size_t len, dbp_err_t *err);

/* Supplies up to `cap` bytes for a child's stdin: the count (> 0), 0 at the end, or a
 * negative DBP_E* code (with err filled). The same shape as engine.h's engine_read_fn. */
typedef long (*dbp_pipe_source_fn)(void *ud, void *buf, size_t cap, dbp_err_t *err);

/* Pumps a DBP_PIPE_FROM_CHILD child's stdout into `sink`, 256 KiB at a time, until end
 * of stream, then waits for the child (dbp_pipe_finish with `timeout_ms`). On a sink or
 * read error the child is killed and that error returned. Returns 0, the sink's error,
 * DBP_EIO (the child failed: its status and last log line in err) or DBP_ENOMEM. */
int dbp_pipe_pump_out(dbp_pipe_t *p, dbp_pipe_sink_fn sink, void *ud, int timeout_ms,
                      dbp_err_t *err) __attribute__((warn_unused_result));

/* Pumps `source` into a DBP_PIPE_TO_CHILD child's stdin until the source ends, then
 * closes it and waits for the child. A source error kills the child and is returned; a
 * child that stops reading early gives its own exit message, or DBP_EIO "stopped reading
 * its input" when it exited 0. */
int dbp_pipe_pump_in(dbp_pipe_t *p, dbp_pipe_source_fn source, void *ud, int timeout_ms,
                     dbp_err_t *err) __attribute__((warn_unused_result));

#endif
