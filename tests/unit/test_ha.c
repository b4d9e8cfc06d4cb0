/*
 * test_ha.c: the failure detector and candidate choice of ha/ha.c, table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ha/ha.h"

static engine_probe_t up_primary(uint64_t pos)
{
    engine_probe_t p;
    memset(&p, 0, sizeof(p));
    p.reachable = true;
    p.role = ENGINE_ROLE_PRIMARY;
    p.position_value = pos;
    return p;
}

static engine_probe_t replica(bool reachable, bool streaming, uint64_t pos)
{
    engine_probe_t p;
    memset(&p, 0, sizeof(p));
    p.reachable = reachable;
    p.role = ENGINE_ROLE_REPLICA;
    p.streaming = streaming;
    p.position_value = pos;
    return p;
}

static void test_detect_needs_failcount_consecutive_failures(void **state)
{
    (void)state;
    ha_detector_t det = {0};
    engine_probe_t down;
    memset(&down, 0, sizeof(down));
    engine_probe_t reps[1] = {replica(true, false, 100)};
    engine_probe_t ok = up_primary(120);
    assert_int_equal(ha_detect(&det, 3, &ok, reps, 1, 1000), HA_HEALTHY);
    assert_int_equal(det.last_primary_pos, 120);
    assert_int_equal(ha_detect(&det, 3, &down, reps, 1, 2000), HA_SUSPECT);
    assert_int_equal(ha_detect(&det, 3, &down, reps, 1, 3000), HA_SUSPECT);
    /* A good probe in between resets the count. */
    assert_int_equal(ha_detect(&det, 3, &ok, reps, 1, 4000), HA_HEALTHY);
    assert_int_equal(det.failures, 0);
    assert_int_equal(ha_detect(&det, 3, &down, reps, 1, 5000), HA_SUSPECT);
    assert_int_equal(ha_detect(&det, 3, &down, reps, 1, 6000), HA_SUSPECT);
    assert_int_equal(ha_detect(&det, 3, &down, reps, 1, 7000), HA_FAILED);
    assert_int_equal(det.first_failure_ms, 5000);
}

static void test_detect_holds_while_a_replica_still_streams(void **state)
{
    (void)state;
    ha_detector_t det = {0};
    engine_probe_t down;
    memset(&down, 0, sizeof(down));
    /* The monitor cannot reach the primary, but a replica still receives its WAL: the
     * monitor is the one cut off, and failing over would fork the cluster. */
    engine_probe_t reps[2] = {replica(true, true, 100), replica(false, false, 0)};
    for (int i = 0; i < 10; i++)
        assert_int_equal(ha_detect(&det, 3, &down, reps, 2, i * 1000), HA_SUSPECT);
    reps[0].streaming = false;
    assert_int_equal(ha_detect(&det, 3, &down, reps, 2, 11000), HA_FAILED);
}

static void test_detect_primary_in_recovery_counts_as_failure(void **state)
{
    (void)state;
    ha_detector_t det = {0};
    engine_probe_t wrong = up_primary(1);
    wrong.role = ENGINE_ROLE_REPLICA;
    assert_int_equal(ha_detect(&det, 1, &wrong, NULL, 0, 0), HA_FAILED);
}

static void test_choose_most_advanced_eligible_replica(void **state)
{
    (void)state;
    struct {
        const char *what;
        engine_probe_t reps[3];
        int n;
        uint64_t last, max_lag;
        int want;
    } cases[] = {
        {"highest position wins", {replica(true, false, 10), replica(true, false, 30),
                                   replica(true, false, 20)}, 3, 0, 0, 1},
        {"unreachable skipped", {replica(false, false, 99), replica(true, false, 5)}, 2, 0, 0,
         1},
        {"too far behind skipped", {replica(true, false, 1000), replica(true, false, 10)}, 2,
         1200, 500, 0},
        {"all too far behind", {replica(true, false, 10), replica(true, false, 20)}, 2, 5000,
         100, -1},
        {"none", {replica(false, false, 0)}, 1, 0, 0, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = ha_choose(cases[i].reps, cases[i].n, NULL, cases[i].last, cases[i].max_lag);
        if (got != cases[i].want)
            fail_msg("%s: got %d want %d", cases[i].what, got, cases[i].want);
    }
    engine_probe_t reps[2] = {replica(true, false, 50), replica(true, false, 40)};
    bool eligible[2] = {false, true};
    assert_int_equal(ha_choose(reps, 2, eligible, 0, 0), 1);
    /* A server that says it is a primary is never a candidate. */
    reps[1].role = ENGINE_ROLE_PRIMARY;
    assert_int_equal(ha_choose(reps, 2, eligible, 0, 0), -1);
}

/* ---- ha_stream_check: a replica that runs but does not stream ---------------------- */

#define BOUND 30000
#define BACKOFF 600000

static ha_stream_obs_t watched(const engine_probe_t *p)
{
    ha_stream_obs_t o = {.epoch = 2, .primary_healthy = true, .busy = false, .running = true,
                         .started_ms = 500, .probe = p, .rebuilt_ago_ms = -1};
    return o;
}

static void test_stream_rebuilds_after_the_bound(void **state)
{
    (void)state;
    ha_stream_watch_t w = {0};
    engine_probe_t stuck = replica(true, false, 0x3000108);
    ha_stream_obs_t o = watched(&stuck);
    int64_t ran = -1;
    /* The first pass that sees it not streaming starts the clock. */
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 2000, &ran), HA_STREAM_WAIT);
    assert_int_equal(ran, 0);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 31999, &ran), HA_STREAM_WAIT);
    assert_int_equal(ran, 29999);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 32000, &ran), HA_STREAM_REBUILD);
    assert_int_equal(ran, 30000);
    /* Without a probe result the replica is not judged. */
    o.probe = NULL;
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 33000, &ran), HA_STREAM_OK);
    assert_int_equal(ran, 0);
}

static void test_stream_clock_resets(void **state)
{
    (void)state;
    engine_probe_t stuck = replica(true, false, 100), ok = replica(true, true, 100);
    /* Each interruption at t=20 s resets the clock (case 1, an unhealthy primary, pauses
     * it instead, and the 1 s counted before stays): at t=45 s it still waits. */
    for (int k = 0; k < 7; k++) {
        ha_stream_watch_t w = {0};
        engine_probe_t p = stuck;
        ha_stream_obs_t o = watched(&p);
        assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 0, NULL), HA_STREAM_WAIT);
        assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 1000, NULL), HA_STREAM_WAIT);
        ha_stream_obs_t x = o;
        engine_probe_t xp = p;
        x.probe = &xp;
        switch (k) {
        case 0: xp = ok; break;                  /* it streamed for a while */
        case 1: x.primary_healthy = false; break; /* the primary was suspect: a pause */
        case 2: x.busy = true; break;            /* a job ran on it */
        case 3: x.running = false; break;        /* its process stopped */
        case 4: x.epoch = 3; o.epoch = 3; break; /* a switchover: new epoch */
        case 5: x.started_ms = 9000; o.started_ms = 9000; break; /* restarted */
        case 6: xp.position_value = 200; p.position_value = 200; break; /* progress */
        }
        ha_stream_verdict_t v = ha_stream_check(&w, &x, BOUND, BACKOFF, 20000, NULL);
        /* A new epoch or process start, or progress, counts again from now; the others
         * are not judged at all. */
        assert_int_equal(v, k >= 4 ? HA_STREAM_WAIT : HA_STREAM_OK);
        ha_stream_check(&w, &o, BOUND, BACKOFF, 20500, NULL);
        v = ha_stream_check(&w, &o, BOUND, BACKOFF, 45000, NULL);
        if (v != HA_STREAM_WAIT)
            fail_msg("case %d: got %s want wait", k, ha_stream_verdict_str(v));
        assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 52000, NULL),
                         HA_STREAM_REBUILD);
    }
    /* A server answering as a primary is the fence's business, not a rebuild. */
    ha_stream_watch_t w = {0};
    engine_probe_t rogue = up_primary(5);
    ha_stream_obs_t o = watched(&rogue);
    for (int t = 0; t <= 100000; t += 10000)
        assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, t, NULL), HA_STREAM_OK);
}

static void test_stream_unhealthy_primary_pauses_the_clock(void **state)
{
    (void)state;
    /* 20 s counted, a 5 s blip of the primary (a probe missed under load, a suspect
     * round), then 10 s more: 30 s counted, rebuilt; the blip's 5 s are not counted. */
    ha_stream_watch_t w = {0};
    engine_probe_t stuck = replica(true, false, 9);
    ha_stream_obs_t o = watched(&stuck);
    int64_t ran = 0;
    for (int t = 0; t <= 20000; t += 1000)
        assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, t, NULL), HA_STREAM_WAIT);
    o.primary_healthy = false;
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 21000, &ran), HA_STREAM_OK);
    assert_int_equal(ran, 20000);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 25000, NULL), HA_STREAM_OK);
    o.primary_healthy = true;
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 26000, &ran), HA_STREAM_WAIT);
    assert_int_equal(ran, 20000);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 35000, &ran), HA_STREAM_WAIT);
    assert_int_equal(ran, 29000);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 36000, &ran), HA_STREAM_REBUILD);
    assert_int_equal(ran, 30000);
}

static void test_stream_unreachable_gets_longer_and_backoff_holds(void **state)
{
    (void)state;
    /* Running but refusing connections (recovery before consistency): 4 bounds. */
    ha_stream_watch_t w = {0};
    engine_probe_t down = replica(false, false, 0);
    ha_stream_obs_t o = watched(&down);
    ha_stream_check(&w, &o, BOUND, BACKOFF, 1000, NULL);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 100000, NULL), HA_STREAM_WAIT);
    assert_int_equal(ha_stream_check(&w, &o, BOUND, BACKOFF, 121000, NULL), HA_STREAM_REBUILD);
    /* Rebuilt 5 minutes ago: held, not rebuilt again, until the back-off has passed. */
    ha_stream_watch_t w2 = {0};
    engine_probe_t stuck = replica(true, false, 7);
    o = watched(&stuck);
    o.rebuilt_ago_ms = 300000;
    ha_stream_check(&w2, &o, BOUND, BACKOFF, 1000, NULL);
    assert_int_equal(ha_stream_check(&w2, &o, BOUND, BACKOFF, 40000, NULL), HA_STREAM_HELD);
    o.rebuilt_ago_ms = 600001;
    assert_int_equal(ha_stream_check(&w2, &o, BOUND, BACKOFF, 41000, NULL), HA_STREAM_REBUILD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_needs_failcount_consecutive_failures),
        cmocka_unit_test(test_detect_holds_while_a_replica_still_streams),
        cmocka_unit_test(test_detect_primary_in_recovery_counts_as_failure),
        cmocka_unit_test(test_choose_most_advanced_eligible_replica),
        cmocka_unit_test(test_stream_rebuilds_after_the_bound),
        cmocka_unit_test(test_stream_clock_resets),
        cmocka_unit_test(test_stream_unhealthy_primary_pauses_the_clock),
        cmocka_unit_test(test_stream_unreachable_gets_longer_and_backoff_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
