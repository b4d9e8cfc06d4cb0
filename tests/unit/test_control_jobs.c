/*
 * test_control_jobs.c: the pure parts of the reconcile pass's worker jobs
 * (src/control/jobs.c): the names each job kind gets in logs and status messages, which
 * kinds make a primary (init, restore) rather than a replica, and the test-only delay
 * failpoints, which fire only for their own variable and cluster (a real /bin/sleep child,
 * as tests/integration/test_ha.py relies on).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/reconcile.h"

static const struct {
    ctl_job_kind_t kind;
    const char *name;  /* ctl_job_kind_str */
    const char *doing; /* ctl_job_doing_str */
    bool primary;      /* ctl_job_makes_primary */
} kinds[] = {
    {CTL_JOB_CLONE, "clone", "cloning", false},
    {CTL_JOB_REJOIN, "rejoin", "rejoining", false},
    {CTL_JOB_REBUILD, "rebuild", "rebuilding", false},
    {CTL_JOB_INIT, "init", "initialising", true},
    {CTL_JOB_RESTORE, "restore", "restoring", true},
};

static void test_kind_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        assert_string_equal(ctl_job_kind_str(kinds[i].kind), kinds[i].name);
        assert_string_equal(ctl_job_doing_str(kinds[i].kind), kinds[i].doing);
        assert_int_equal(ctl_job_makes_primary(kinds[i].kind), kinds[i].primary);
    }
}

typedef struct fp_case {
    const char *ms;      /* DBPLANE_FAILPOINT_INIT_DELAY_MS, NULL unset */
    const char *cluster; /* DBPLANE_FAILPOINT_INIT_CLUSTER, NULL unset */
    bool sleeps;         /* the failpoint runs its sleep for instance "slow-0" of "slow" */
} fp_case_t;

static const fp_case_t fp_cases[] = {
    {NULL, NULL, false},   /* unset: nothing */
    {"", NULL, false},     /* empty: nothing */
    {"0", NULL, false},    /* not positive: nothing */
    {"-5", NULL, false},   /* not positive: nothing */
    {"300", "fo", false},  /* another cluster's */
    {"300", NULL, true},   /* every cluster's */
    {"300", "", true},     /* an empty filter is no filter */
    {"300", "slow", true}, /* this cluster's */
};

static void test_init_failpoint(void **state)
{
    (void)state;
    dbp_runas_t ra = {.drop = false};
    engine_instance_t P;
    memset(&P, 0, sizeof(P));
    P.cluster = "slow";
    snprintf(P.name, sizeof(P.name), "slow-0");
    snprintf(P.tool_log_path, sizeof(P.tool_log_path), "/tmp/dbp-jobs-%d.log", (int)getpid());
    P.runas = &ra;
    for (size_t i = 0; i < sizeof(fp_cases) / sizeof(fp_cases[0]); i++) {
        const fp_case_t *c = &fp_cases[i];
        if (c->ms)
            setenv("DBPLANE_FAILPOINT_INIT_DELAY_MS", c->ms, 1);
        else
            unsetenv("DBPLANE_FAILPOINT_INIT_DELAY_MS");
        if (c->cluster)
            setenv("DBPLANE_FAILPOINT_INIT_CLUSTER", c->cluster, 1);
        else
            unsetenv("DBPLANE_FAILPOINT_INIT_CLUSTER");
        dbp_err_t err;
        memset(&err, 0, sizeof(err));
        int64_t t0 = dbp_now_ms();
        assert_int_equal(ctl_failpoint_init_delay(&P, &err), 0);
        int64_t ms = dbp_now_ms() - t0;
        if (c->sleeps)
            assert_true(ms >= 250);
        else
            assert_true(ms < 250);
        /* The clone failpoint reads its own variables only. */
        t0 = dbp_now_ms();
        assert_int_equal(ctl_failpoint_clone_delay(&P, &err), 0);
        assert_true(dbp_now_ms() - t0 < 250);
    }
    unsetenv("DBPLANE_FAILPOINT_INIT_DELAY_MS");
    unsetenv("DBPLANE_FAILPOINT_INIT_CLUSTER");
    unlink(P.tool_log_path);
}

int main(void)
{
    unsetenv("DBPLANE_FAILPOINT_CLONE_DELAY_MS");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_init_failpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
