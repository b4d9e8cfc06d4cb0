/*
 * test_ha_switchover.c: the order of ha_switchover's steps against fake engine ops and
 * hooks that record a trace — pause before the old primary is stopped, resume only after
 * the epoch moved and the candidate was promoted, resume with epoch 0 when the switchover
 * stops before the epoch changed, and nothing at all when the pause itself fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ha/ha.h"

/* The fake world: a trace of calls and a few knobs. */
static struct {
    char trace[512];
    uint64_t primary_pos;   /* the old primary's position */
    uint64_t cand_pos;      /* what the candidate reports */
    int pause_rc;
    int64_t resumed_epoch;  /* -1: resume not called */
    char resumed_primary[96];
    int resumes;
} W;

static void step(const char *s)
{
    strncat(W.trace, s, sizeof(W.trace) - strlen(W.trace) - 1);
    strncat(W.trace, " ", sizeof(W.trace) - strlen(W.trace) - 1);
}

static int fake_probe(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err)
{
    (void)err;
    memset(out, 0, sizeof(*out));
    out->reachable = true;
    bool old = strcmp(in->name, "c-0") == 0;
    out->role = old ? ENGINE_ROLE_PRIMARY : ENGINE_ROLE_REPLICA;
    out->position_value = old ? W.primary_pos : W.cand_pos;
    return 0;
}

static int fake_promote(const engine_instance_t *in, dbp_err_t *err)
{
    (void)in;
    (void)err;
    step("promote");
    return 0;
}

static int h_fence(void *ud, const engine_instance_t *in, int grace_ms, dbp_err_t *err)
{
    (void)ud;
    (void)grace_ms;
    (void)err;
    step(strcmp(in->name, "c-0") == 0 ? "fence-old" : "fence-other");
    return 0;
}

static int h_set_primary(void *ud, const char *tenant, const char *cluster, int64_t expected,
                         const char *primary, int64_t *new_epoch, dbp_err_t *err)
{
    (void)ud;
    (void)tenant;
    (void)cluster;
    (void)primary;
    (void)err;
    step("epoch");
    *new_epoch = expected + 1;
    return 0;
}

static int h_repoint(void *ud, const engine_instance_t *r, const engine_instance_t *p,
                     dbp_err_t *err)
{
    (void)ud;
    (void)r;
    (void)p;
    (void)err;
    step("repoint");
    return 0;
}

static void h_event(void *ud, const char *tenant, const char *cluster, const char *type,
                    const char *reason, const char *msg)
{
    (void)ud;
    (void)tenant;
    (void)cluster;
    (void)type;
    (void)msg;
    step(reason);
}

static int h_pause(void *ud, const char *tenant, const char *cluster, int timeout_ms,
                   dbp_err_t *err)
{
    (void)ud;
    (void)tenant;
    (void)cluster;
    assert_true(timeout_ms > 0);
    step("pause");
    if (W.pause_rc)
        return dbp_err_set(err, W.pause_rc, "pause refused");
    return 0;
}

static void h_resume(void *ud, const char *tenant, const char *cluster, const char *primary,
                     int64_t epoch)
{
    (void)ud;
    (void)tenant;
    (void)cluster;
    step("resume");
    W.resumes++;
    W.resumed_epoch = epoch;
    snprintf(W.resumed_primary, sizeof(W.resumed_primary), "%s", primary ? primary : "");
}

static engine_ops_t ops = {.name = "fake", .probe = fake_probe, .promote = fake_promote};
static ha_hooks_t hooks = {.fence = h_fence,
                           .set_primary = h_set_primary,
                           .repoint = h_repoint,
                           .event = h_event,
                           .pause = h_pause,
                           .resume = h_resume};

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof(W));
    W.resumed_epoch = -1;
    W.primary_pos = W.cand_pos = 1000;
    return 0;
}

static ha_cluster_t cluster(engine_instance_t inst[3], int n)
{
    memset(inst, 0, 3 * sizeof(*inst));
    for (int i = 0; i < n; i++)
        snprintf(inst[i].name, sizeof(inst[i].name), "c-%d", i);
    ha_cluster_t c = {.tenant = "t", .cluster = "c", .ops = &ops, .inst = inst, .n = n,
                      .primary = 0, .epoch = 7};
    return c;
}

static void test_pause_first_resume_after_epoch_and_promote(void **state)
{
    (void)state;
    engine_instance_t inst[3];
    ha_cluster_t c = cluster(inst, 3);
    int64_t epoch = 0;
    ha_timing_t t;
    dbp_err_t err = {0};
    assert_int_equal(ha_switchover(&c, 1, &hooks, 2000, &epoch, &t, &err), 0);
    assert_string_equal(W.trace, "pause fence-old epoch promote TopologyChanged repoint resume ");
    assert_int_equal(epoch, 8);
    assert_int_equal(W.resumes, 1);
    assert_int_equal(W.resumed_epoch, 8);
    assert_string_equal(W.resumed_primary, "c-1");
    assert_true(t.paused_ms >= 0 && t.paused_ms <= t.total_ms + 1);
}

static void test_aborted_switchover_resumes_on_the_old_topology(void **state)
{
    (void)state;
    engine_instance_t inst[3];
    ha_cluster_t c = cluster(inst, 2);
    W.cand_pos = 10; /* never catches up */
    int64_t epoch = 0;
    ha_timing_t t;
    dbp_err_t err = {0};
    assert_int_equal(ha_switchover(&c, 1, &hooks, 100, &epoch, &t, &err), DBP_EBUSY);
    assert_string_equal(W.trace, "pause fence-old SwitchoverAborted resume ");
    assert_int_equal(W.resumes, 1);
    assert_int_equal(W.resumed_epoch, 0);
    assert_string_equal(W.resumed_primary, "");
}

static void test_failed_pause_changes_nothing(void **state)
{
    (void)state;
    engine_instance_t inst[3];
    ha_cluster_t c = cluster(inst, 2);
    W.pause_rc = DBP_EIO;
    int64_t epoch = 0;
    dbp_err_t err = {0};
    assert_int_equal(ha_switchover(&c, 1, &hooks, 2000, &epoch, NULL, &err), DBP_EIO);
    assert_string_equal(W.trace, "pause ");
    assert_int_equal(W.resumes, 0);
}

static void test_without_pause_hooks_the_sequence_is_unchanged(void **state)
{
    (void)state;
    engine_instance_t inst[3];
    ha_cluster_t c = cluster(inst, 2);
    ha_hooks_t h = hooks;
    h.pause = NULL;
    h.resume = NULL;
    int64_t epoch = 0;
    ha_timing_t t;
    dbp_err_t err = {0};
    assert_int_equal(ha_switchover(&c, 1, &h, 2000, &epoch, &t, &err), 0);
    assert_string_equal(W.trace, "fence-old epoch promote TopologyChanged ");
    assert_int_equal(t.paused_ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_pause_first_resume_after_epoch_and_promote, setup),
        cmocka_unit_test_setup(test_aborted_switchover_resumes_on_the_old_topology, setup),
        cmocka_unit_test_setup(test_failed_pause_changes_nothing, setup),
        cmocka_unit_test_setup(test_without_pause_hooks_the_sequence_is_unchanged, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
