/*
 * reconcile.h: the level-triggered reconciler. One pass reads the desired resources from
 * the store, observes every server (supervisor state + engine probe), and takes the
 * idempotent actions that close the gap, in dependency order: Secrets, Clusters
 * (initialise, clone replicas, render configuration, start, probe), Users, Databases,
 * Grants. Each resource's status (state, message, observed generation) and every action
 * or failure (as an event) is written to the store. A resource already ready at its
 * current generation is re-checked only every resync period.
 */
#ifndef DBP_CONTROL_RECONCILE_H
#define DBP_CONTROL_RECONCILE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/proc.h"
#include "control/supervisor.h"
#include "secrets/secrets.h"
#include "store/store.h"

/* What the reconciler remembers about a resource between passes. */
typedef struct ctl_memo {
    char key[256];       /* "Kind/tenant/name" */
    int64_t generation;  /* generation last reconciled successfully */
    int64_t checked_ms;  /* monotonic ms of the last successful check */
    char last_error[256];
} ctl_memo_t;

/* The daemon's state, owned by the control loop's thread. */
typedef struct ctl_daemon {
    char data_dir[PATH_MAX]; /* absolute */
    char run_dir[128];       /* short runtime dir for unix sockets */
    dbp_runas_t runas;
    store_t *store;
    secrets_t *secrets;
    ctl_sup_t sup;
    int lock_fd;
    int wake[2];             /* self-pipe: signals and the API wake the loop */
    bool pass_requested;
    int pass_interval_ms;
    int resync_ms;
    ctl_memo_t *memo;
    int nmemo, capmemo;
    bool secrets_changed;    /* a Secret value changed in this pass: re-check Users */
} ctl_daemon_t;

/* Runs one reconcile pass. Errors are recorded in statuses and events, not returned. */
void ctl_reconcile_pass(ctl_daemon_t *d);

/* Stops every server: primaries first (so replicas receive the final WAL), then replicas;
 * each group gets 60 s before SIGKILL. Marks instances stopped in the store. */
void ctl_shutdown(ctl_daemon_t *d);

/* Frees what the daemon owns (store, secrets, supervisor, memo); safe on a partly
 * initialised daemon. */
void ctl_daemon_free(ctl_daemon_t *d);

/* Supervisor callback: records process events in the store's event log. */
void ctl_on_process_event(void *ud, const ctl_proc_t *p, const char *reason, const char *msg);

#endif
