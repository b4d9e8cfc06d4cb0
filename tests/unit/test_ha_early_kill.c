/*
 * test_ha_early_kill.c: the HA monitor thread's early kill (src/control/hactl.c,
 * mon_round). When the monitor has asked the control loop for a failover and the loop has
 * not taken the request within one interval (it is blocked, typically on a statement to
 * the hung server), the monitor kills the primary's server process itself. Here the
 * monitor runs for real against fake engine ops (the primary never answers, the replica
 * answers and does not stream) and a real child process started through the supervisor as
 * the "primary server"; the control loop never calls ctl_ha_tick, as if it were hung. The
 * child must die of SIGKILL. With failover.auto off nothing may kill it (the control).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control/reconcile.h"

static int fake_probe(const engine_instance_t *in, engine_probe_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (strcmp(in->name, "c-0") == 0) {
        /* The hung primary: the probe times out. */
        return dbp_err_set(err, DBP_EENGINE, "probe of %s timed out", in->name);
    }
    out->reachable = true;
    out->role = ENGINE_ROLE_REPLICA;
    out->streaming = false; /* its link to the primary timed out too */
    out->position_value = 100;
    return 0;
}

static int fake_promote(const engine_instance_t *in, dbp_err_t *err)
{
    (void)in;
    (void)err;
    fail_msg("the monitor thread must never promote: only the control loop does");
    return 0;
}

static const engine_ops_t fake_ops = {
    .name = "fake",
    .probe = fake_probe,
    .promote = fake_promote,
};

/* Milliseconds on the monotonic clock. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the monitor on a two-instance cluster whose primary is `sleep 30` for up to
 * `watch_ms`, the control loop never taking a request. Returns the child's wait status,
 * or -1 when it was still alive at the end (then it is killed here). *woke tells whether
 * the monitor asked the control loop for a failover (a byte on the wake pipe). */
static int run_monitor(bool auto_failover, int watch_ms, bool *woke)
{
    static ctl_daemon_t d; /* large: not on the stack */
    memset(&d, 0, sizeof(d));
    ctl_sup_init(&d.sup, NULL, NULL);
    dbp_runas_t ra = {.drop = false};
    char *argv[] = {"/bin/sleep", "30", NULL};
    dbp_err_t err;
    assert_int_equal(ctl_sup_ensure(&d.sup, "t/c-0", argv, "/dev/null", &ra, SIGTERM, &err), 0);
    const ctl_proc_t *p = ctl_sup_find(&d.sup, "t/c-0");
    assert_non_null(p);
    pid_t pid = p->pid;
    assert_true(pid > 0);

    spec_resource_t res;
    memset(&res, 0, sizeof(res));
    res.kind = SPEC_KIND_CLUSTER;
    res.name.v = "c";
    res.tenant.v = "t";
    spec_failover_t *pol = &res.u.cluster.failover;
    pol->auto_ = (spec_bool_t){.v = auto_failover, .set = true};
    pol->interval = (spec_dur_t){.ms = 100, .set = true};
    pol->failcount = (spec_int_t){.v = 2, .set = true};

    cluster_rt_t *cr = calloc(1, sizeof(*cr));
    assert_non_null(cr);
    cr->res = &res;
    cr->ops = &fake_ops;
    cr->n = 2;
    cr->primary = 0;
    cr->epoch = 1;
    cr->primary_ready = true; /* the last pass saw it answer as the primary */
    for (int i = 0; i < 2; i++) {
        snprintf(cr->inst[i].name, sizeof(cr->inst[i].name), "c-%d", i);
        cr->inst[i].tenant = "t";
        cr->inst[i].cluster = "c";
    }
    d.crs = cr;
    d.ncl = 1;

    int wake[2];
    assert_int_equal(pipe2(wake, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(ctl_ha_start(&d, wake[1]), 0);
    ctl_ha_view_publish(&d);

    int status = -1;
    int64_t end = now_ms() + watch_ms;
    while (now_ms() < end) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            status = st;
            break;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char b;
    *woke = read(wake[0], &b, 1) == 1 && b == 'h';
    ctl_ha_stop(&d);
    if (status == -1) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
    }
    /* The view is the test's: free only what ctl_ha_view_publish allocated. */
    free(d.view);
    free(d.ha);
    ctl_sup_free(&d.sup);
    free(cr);
    close(wake[0]);
    close(wake[1]);
    return status;
}

static void test_early_kill_of_hung_primary(void **state)
{
    (void)state;
    bool woke = false;
    int64_t t0 = now_ms();
    int st = run_monitor(true, 5000, &woke);
    int64_t took = now_ms() - t0;
    assert_true(woke); /* the failover was asked for first */
    assert_int_not_equal(st, -1);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
    /* failcount 2 x 100 ms to the verdict, one interval for the loop to take it: well
     * under 5 s even on a loaded machine. */
    assert_true(took < 4000);
}

static void test_no_kill_without_auto_failover(void **state)
{
    (void)state;
    bool woke = true;
    int st = run_monitor(false, 1500, &woke);
    assert_int_equal(st, -1); /* still alive after many intervals */
    assert_false(woke);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_early_kill_of_hung_primary),
        cmocka_unit_test(test_no_kill_without_auto_failover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
