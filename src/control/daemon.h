/*
 * daemon.h: `dbplane up`, the control plane of one machine. It validates the spec files,
 * stores them as desired state, serves the API on a unix socket, and runs the
 * level-triggered reconcile loop: every pass compares desired resources with what the
 * servers report and takes idempotent actions (initialise, clone, configure, start,
 * create databases, users and grants). A failed action is recorded as an event and in the
 * resource's status, and retried on a later pass; nothing is half-applied silently.
 * SIGINT/SIGTERM stop every server in order (primaries, then replicas) and exit.
 */
#ifndef DBP_CONTROL_DAEMON_H
#define DBP_CONTROL_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"

/* Options of `dbplane up`. */
typedef struct ctl_options {
    const char *data_dir;     /* state, servers' data and logs; created if missing */
    const char *const *files; /* spec files to apply before starting (may be empty) */
    int nfiles;
    int pass_interval_ms;     /* time between reconcile passes; default 1000 */
    int resync_ms;            /* re-check resources already ready this often; default 30000 */
} ctl_options_t;

/* Runs the daemon in the foreground until SIGINT/SIGTERM. Returns 0 after a clean
 * shutdown; DBP_EINVAL when the spec is invalid (diagnostics printed to stderr, nothing
 * touched); DBP_EBUSY when another daemon holds the data dir; other codes for start-up
 * failures, with detail in err. */
int ctl_up(const ctl_options_t *opts, dbp_err_t *err) __attribute__((warn_unused_result));

/* From the API thread: runs a switchover (force = false) or forced failover of
 * tenant/cluster to instance `to` (NULL or "" = the best replica) on the control loop and
 * waits for it. *result (may be NULL) receives owned JSON with the new primary, epoch and
 * timings. Thread-safe; requests are served one at a time. */
int ctl_submit_switch(const char *tenant, const char *cluster, const char *to, bool force,
                      json_t **result, dbp_err_t *err) __attribute__((warn_unused_result));

/* Failover timing of one cluster, as the HA monitor measured it (control/hactl.c). */
typedef struct ctl_ha_metrics {
    int64_t failovers;         /* automatic failovers completed since the daemon started */
    int64_t last_wall_ms;      /* wall-clock ms (Unix epoch) the last one completed */
    int64_t epoch;             /* topology epoch it created */
    int64_t detection_ms;      /* first failed probe of the old primary to the verdict */
    int64_t promotion_ms;      /* verdict to the new primary accepting writes (waiting for
                                  the control loop, fence, epoch, promote) */
    int64_t unavailability_ms; /* last good probe of the old primary to the new primary
                                  accepting writes: an upper bound of the write outage as
                                  the monitor saw it (clients add their reconnect) */
} ctl_ha_metrics_t;

/* Copies the failover timing of tenant/cluster into *out. Returns false (and zeroes
 * *out) when no failover happened since the daemon started. Thread-safe (the API thread
 * calls it for the status JSON). */
bool ctl_ha_metrics_get(const char *tenant, const char *cluster, ctl_ha_metrics_t *out);

/* Paths derived from a data dir; each buffer holds at least PATH_MAX bytes. */
int ctl_paths(const char *data_dir, char *store_path, char *api_sock, dbp_err_t *err)
    __attribute__((warn_unused_result));

#endif
