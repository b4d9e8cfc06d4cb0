/*
 * supervisor.h: keeps database server processes running. Each supervised process has an
 * id (the instance's "tenant/name"), a command line and a log file; it is started in its
 * own process group as the service user, restarted with exponential backoff (0.5 s
 * doubling to 30 s, reset after 30 s of uptime) when it exits unexpectedly, and stopped
 * with its engine's clean-shutdown signal, escalating to SIGKILL after a grace period.
 * Single-threaded: call ctl_sup_poll from the control loop; it never blocks.
 */
#ifndef DBP_CONTROL_SUPERVISOR_H
#define DBP_CONTROL_SUPERVISOR_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/proc.h"

/* State of a supervised process. */
typedef enum ctl_proc_state {
    CTL_PROC_STOPPED = 0, /* not running and not wanted */
    CTL_PROC_RUNNING,     /* child alive */
    CTL_PROC_BACKOFF,     /* exited unexpectedly; restart due at next_start_ms */
    CTL_PROC_STOPPING,    /* stop signal sent; waiting for exit */
} ctl_proc_state_t;

#define CTL_MAX_ARGS 16

/* One supervised process. */
typedef struct ctl_proc {
    char id[160];
    char *argv[CTL_MAX_ARGS];
    char argbuf[2 * PATH_MAX];
    char log_path[PATH_MAX];
    dbp_runas_t runas;
    int stop_signal;
    pid_t pid;               /* process (and process-group) id while running; 0 otherwise */
    ctl_proc_state_t state;
    int failures;            /* consecutive unexpected exits */
    int restarts;            /* total restarts */
    int64_t started_ms;      /* monotonic ms of the last start */
    int64_t next_start_ms;   /* monotonic ms at which a BACKOFF process restarts */
    int last_status;         /* wait status of the last exit */
} ctl_proc_t;

/* Called on process events: reason is "InstanceStarted", "InstanceExited",
 * "InstanceRestarted" or "InstanceStopped"; message is human text. */
typedef void (*ctl_sup_event_cb)(void *ud, const ctl_proc_t *p, const char *reason,
                                 const char *message);

/* The set of supervised processes. */
typedef struct ctl_sup {
    ctl_proc_t **procs;
    int n, cap;
    ctl_sup_event_cb on_event;
    void *ud;
} ctl_sup_t;

/* Initialises an empty supervisor; `on_event` may be NULL. */
void ctl_sup_init(ctl_sup_t *sup, ctl_sup_event_cb on_event, void *ud);

/* Frees the bookkeeping (does not stop processes; call ctl_sup_stop_all first). */
void ctl_sup_free(ctl_sup_t *sup);

/* Makes sure process `id` runs with `argv` (NULL-terminated, copied): starts it when it
 * is not running or backing off. A process already running is left alone. */
int ctl_sup_ensure(ctl_sup_t *sup, const char *id, char *const argv[], const char *log_path,
                   const dbp_runas_t *runas, int stop_signal, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reaps exited children and restarts those whose backoff expired. Never blocks. */
void ctl_sup_poll(ctl_sup_t *sup);

/* The process record for `id`, or NULL. Borrowed. */
const ctl_proc_t *ctl_sup_find(const ctl_sup_t *sup, const char *id);

/* Sends `sig` to a running process; DBP_ENOENT when it is not running. */
int ctl_sup_signal(ctl_sup_t *sup, const char *id, int sig);

/* True when running process `id` no longer runs what `argv` (NULL-terminated) asks for:
 * its command line differs (another server binary or version directory), or its binary
 * file was replaced on disk since it started (a package upgrade: /proc/<pid>/exe reads
 * "... (deleted)"). The reason goes into `why` (`len` bytes). False when not running. */
bool ctl_sup_stale(const ctl_sup_t *sup, const char *id, char *const argv[], char *why,
                   size_t len);

/* Stops the processes whose ids are listed (NULL-terminated), all at once: the stop
 * signal, then SIGKILL to the process group after `grace_ms`. Waits for them to exit. */
void ctl_sup_stop_ids(ctl_sup_t *sup, const char *const *ids, int grace_ms);

/* Stops every process (see ctl_sup_stop_ids). */
void ctl_sup_stop_all(ctl_sup_t *sup, int grace_ms);

/* "stopped", "running", "backoff", "stopping". */
const char *ctl_proc_state_str(ctl_proc_state_t s);

/* SIGKILLs process `pid`, its process group and its direct children (PostgreSQL's
 * backends, each in its own session). Touches no supervisor state: safe from any thread;
 * the supervisor notices the exit at its next poll. */
void ctl_sup_kill_tree(pid_t pid);

#endif
