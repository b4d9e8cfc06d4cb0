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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_needs_failcount_consecutive_failures),
        cmocka_unit_test(test_detect_holds_while_a_replica_still_streams),
        cmocka_unit_test(test_detect_primary_in_recovery_counts_as_failure),
        cmocka_unit_test(test_choose_most_advanced_eligible_replica),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
