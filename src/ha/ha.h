/*
 * ha.h: high availability — failure detection, candidate choice, and the failover and
 * switchover sequences, written once against the engine driver interface.
 *
 * The one guarantee: never two writable primaries. The order is always fence the old
 * primary (its process is stopped and kept from restarting), then bump the topology
 * epoch by compare-and-set naming the candidate, then promote the candidate, then repoint
 * the other replicas. A server started later renders its role from the topology, so a
 * returning old primary comes back as a replica (after a rejoin), never as a primary.
 *
 * Detection is pure (ha_detect, ha_choose): unit-testable without servers. The sequences
 * call back into the control plane through ha_hooks_t for what ha/ must not own (the
 * supervisor, the store, the event log, the proxy).
 */
#ifndef DBP_HA_HA_H
#define DBP_HA_HA_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engines/engine.h"
#include "spec/spec.h"

/* What the detector remembers about one cluster between probes. */
typedef struct ha_detector {
    int failures;              /* consecutive failed probes of the primary */
    int64_t first_failure_ms;  /* monotonic ms of the first of them; 0 when healthy */
    uint64_t last_primary_pos; /* primary's position at its last good probe */
    int64_t last_ok_ms;        /* monotonic ms of the last good probe */
} ha_detector_t;

/* The detector's verdict after one probe round. */
typedef enum ha_verdict {
    HA_HEALTHY = 0, /* the primary answered as a primary */
    HA_SUSPECT,     /* it failed, but not `failcount` times yet, or a replica still streams */
    HA_FAILED,      /* failcount consecutive failures and no replica sees it streaming */
} ha_verdict_t;

/* Updates `det` with one probe of the primary and of the replicas (replicas[i] may be
 * unreachable) and returns the verdict. `failcount` comes from the Cluster's failover
 * policy (default 3). A primary that answers but reports itself a replica counts as a
 * failure (it cannot take writes). Pure. */
ha_verdict_t ha_detect(ha_detector_t *det, int failcount, const engine_probe_t *primary,
                       const engine_probe_t *replicas, int nreplicas, int64_t now_ms);

/* Chooses the promotion candidate among replicas: reachable, in the replica role, at the
 * highest position_value; replicas more than `max_lag` bytes behind `last_primary_pos`
 * (when both are known) are skipped. `eligible` (may be NULL) masks out replicas.
 * Returns the index, or -1 when none qualifies. Pure. */
int ha_choose(const engine_probe_t *replicas, int nreplicas, const bool *eligible,
              uint64_t last_primary_pos, uint64_t max_lag);

/* ---- replicas that run but do not stream (ha_stream_check) ------------------------- */

/* A replica that runs but has not streamed from the current primary for this long, while
 * that primary was healthy, is rebuilt (see ha_stream_check). */
#define HA_STREAM_BOUND_MS 30000
/* An unreachable replica (its process runs but refuses connections: PostgreSQL's recovery
 * before a consistent state) shows no progress the probe could see, and a long crash
 * recovery looks just like that: it is given this many bounds. */
#define HA_STREAM_UNREACHABLE_FACTOR 4

/* What the reconciler remembers about one replica's stream between passes. Zero it to
 * start; ha_stream_check keeps it. */
typedef struct ha_stream_watch {
    int64_t epoch;         /* topology epoch the clock counts for */
    int64_t started_ms;    /* the replica process start (monotonic ms) it counts for */
    int64_t counted_ms;    /* time counted so far without streaming (nor progress) under a
                              healthy primary, ms */
    int64_t last_ms;       /* monotonic ms of the last observation that counted */
    bool counting;         /* last_ms is set; false: the next observation starts a new
                              stretch (the first one, or after a pause) */
    uint64_t position;     /* its replay position when the count started (0 unknown) */
} ha_stream_watch_t;

/* One observation of a replica by the reconcile pass. */
typedef struct ha_stream_obs {
    int64_t epoch;           /* the topology's epoch now */
    bool primary_healthy;    /* the topology's primary answers as a primary, the HA monitor
                                does not suspect it, no failover or switchover is running */
    bool busy;               /* a clone, rejoin or rebuild runs on the replica */
    bool running;            /* its server process runs (supervisor), not stopped/backing off */
    int64_t started_ms;      /* when that process started (monotonic ms) */
    const engine_probe_t *probe; /* the replica's probe of this pass (borrowed) */
    int64_t rebuilt_ago_ms;  /* time since its last rebuild for broken replication; < 0 never */
} ha_stream_obs_t;

/* The decision about one replica. */
typedef enum ha_stream_verdict {
    HA_STREAM_OK = 0,   /* streaming, or not judged now (not running, busy: the clock was
                           reset; primary unhealthy: paused) */
    HA_STREAM_WAIT,     /* not streaming, within the bound */
    HA_STREAM_REBUILD,  /* not streaming for longer than the bound: rebuild it */
    HA_STREAM_HELD,     /* would be rebuilt, but was rebuilt less than backoff_ms ago */
} ha_stream_verdict_t;

/* Decides whether a replica that runs but does not stream must be rebuilt (Patroni and
 * CloudNativePG's "a replica that cannot follow is re-created"). The clock counts the
 * time between observations only while the topology's primary is healthy: an unhealthy
 * primary pauses it (a probe missed under load must not restart a 30 s count). It is
 * reset when the replica's process is not running, a job runs on it, or the epoch or the
 * process start differ from the ones it counted for (a failover, switchover or restart
 * gives a full bound again); streaming resets it, and so does progress (a higher replay
 * position than when the count started: a replica catching up from an archive is not
 * stuck). The bound is
 * `bound_ms` for a reachable replica and HA_STREAM_UNREACHABLE_FACTOR times that for one
 * whose server refuses connections. A replica answering as a primary is not judged here
 * (the reconciler fences it). `*not_streaming_ms` (may be NULL) receives how long the
 * clock has run. Pure: updates `w` only. */
ha_stream_verdict_t ha_stream_check(ha_stream_watch_t *w, const ha_stream_obs_t *o,
                                    int64_t bound_ms, int64_t backoff_ms, int64_t now_ms,
                                    int64_t *not_streaming_ms);

/* "ok", "wait", "rebuild", "held". */
const char *ha_stream_verdict_str(ha_stream_verdict_t v);

/* What the sequences need from the control plane. Each returns 0 or a DBP_E* code. */
typedef struct ha_hooks {
    void *ud;
    /* Stops the instance's process now (SIGKILL to its process group if it does not stop
     * within grace_ms) and keeps the supervisor from restarting it; marks it as needing a
     * rejoin before it may start again. */
    int (*fence)(void *ud, const engine_instance_t *in, int grace_ms, dbp_err_t *err);
    /* Compare-and-set of the topology: from `expected_epoch` to a new epoch naming
     * `primary`; DBP_EBUSY when someone else changed it. */
    int (*set_primary)(void *ud, const char *tenant, const char *cluster, int64_t expected_epoch,
                       const char *primary, int64_t *new_epoch, dbp_err_t *err);
    /* Re-renders a replica's configuration to follow `primary` and reloads it. */
    int (*repoint)(void *ud, const engine_instance_t *replica, const engine_instance_t *primary,
                   dbp_err_t *err);
    /* Records an event (type "Normal"/"Warning"). */
    void (*event)(void *ud, const char *tenant, const char *cluster, const char *type,
                  const char *reason, const char *msg);
    /* Optional (NULL: none), switchover only. Holds the cluster's new transactions in its
     * proxy (PAUSE) and waits up to timeout_ms for those in flight to finish. Returns 0 —
     * also when the wait timed out (the hook reports it; the switchover goes on and the
     * shutdown of the old primary ends what still runs) — or an error that aborts the
     * switchover before anything changed. */
    int (*pause)(void *ud, const char *tenant, const char *cluster, int timeout_ms,
                 dbp_err_t *err);
    /* Optional, switchover only; called exactly once after a successful pause, on every
     * path. epoch > 0: the topology moved to `primary` at `epoch` — the hook must have the
     * proxy route there before it lets the held transactions go. epoch == 0: the
     * switchover stopped before the epoch changed (primary is NULL). */
    void (*resume)(void *ud, const char *tenant, const char *cluster, const char *primary,
                   int64_t epoch);
    /* Optional, failover only: the epoch moved to `primary` (index into the cluster's
     * instances) and its promotion starts now. The hook has clients routed there at once:
     * a write that arrives before the promotion ends is refused by the server (read-only),
     * not taken, so the next retry after the promotion succeeds without waiting for the
     * sequence to observe it. */
    void (*routed)(void *ud, const char *tenant, const char *cluster, int primary,
                   int64_t epoch);
} ha_hooks_t;

/* One cluster as the sequences see it. Instances are borrowed. */
typedef struct ha_cluster {
    const char *tenant;
    const char *cluster;
    const engine_ops_t *ops;
    engine_instance_t *inst; /* n instances */
    int n;
    int primary;             /* index of the current primary */
    int64_t epoch;
} ha_cluster_t;

/* Timing of one failover or switchover, in milliseconds from its start. */
typedef struct ha_timing {
    int64_t fenced_ms;
    int64_t epoch_ms;
    int64_t promoted_ms;
    int64_t total_ms;
    int64_t paused_ms; /* switchover: new transactions held from pause to resume (0: no hook) */
} ha_timing_t;

/* Failover to inst[candidate]: fence the old primary, bump the epoch, promote, repoint
 * the other replicas. Returns 0 with *new_epoch; on failure before the epoch changed,
 * nothing else changed either (the old primary stays fenced: that is the safe side). */
int ha_failover(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int64_t *new_epoch,
                ha_timing_t *timing, dbp_err_t *err) __attribute__((warn_unused_result));

/* Planned switchover to inst[candidate]: the old primary is prepared while clients still
 * run (ops->prepare_switchover), new transactions are paused (h->pause), the old
 * primary is shut down cleanly (so every committed transaction is in the WAL it sends),
 * the candidate must reach the old primary's final position (within wait_ms), then the
 * epoch is bumped and the candidate promoted, and only then are the held transactions
 * resumed (h->resume, on the error paths too). The old primary rejoins as a replica later. */
int ha_switchover(const ha_cluster_t *c, int candidate, const ha_hooks_t *h, int wait_ms,
                  int64_t *new_epoch, ha_timing_t *timing, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* "healthy", "suspect", "failed". */
const char *ha_verdict_str(ha_verdict_t v);

#endif
