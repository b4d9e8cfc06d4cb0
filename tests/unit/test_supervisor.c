/*
 * test_supervisor.c: ctl_sup_stale (src/control/supervisor.c), which starts a rolling
 * restart when a server runs something other than what is declared: a real child (a copy
 * of /bin/sleep in a temporary directory) is current for its own command line, stale for
 * another one, and stale once its binary is replaced on disk (as a package upgrade does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/supervisor.h"

static void test_stale(void **state)
{
    (void)state;
    char dir[] = "/tmp/dbp-sup-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char exe[PATH_MAX], log[PATH_MAX], cmd[2 * PATH_MAX];
    snprintf(exe, sizeof(exe), "%s/sleep", dir);
    snprintf(log, sizeof(log), "%s/out.log", dir);
    snprintf(cmd, sizeof(cmd), "cp /bin/sleep '%s'", exe);
    assert_int_equal(system(cmd), 0);

    ctl_sup_t sup;
    ctl_sup_init(&sup, NULL, NULL);
    dbp_runas_t ra = {.drop = false};
    char *argv[] = {exe, "30", NULL};
    dbp_err_t err;
    assert_int_equal(ctl_sup_ensure(&sup, "t/s", argv, log, &ra, SIGTERM, &err), 0);
    char why[256] = "";
    assert_false(ctl_sup_stale(&sup, "t/s", argv, why, sizeof(why)));
    assert_false(ctl_sup_stale(&sup, "t/none", argv, why, sizeof(why)));

    char *other[] = {exe, "31", NULL};
    assert_true(ctl_sup_stale(&sup, "t/s", other, why, sizeof(why)));
    assert_non_null(strstr(why, "command line changed"));

    /* Replace the binary the way dpkg does: a new file renamed over the old one. */
    snprintf(cmd, sizeof(cmd), "cp /bin/sleep '%s.new' && mv '%s.new' '%s'", exe, exe, exe);
    assert_int_equal(system(cmd), 0);
    why[0] = '\0';
    assert_true(ctl_sup_stale(&sup, "t/s", argv, why, sizeof(why)));
    assert_non_null(strstr(why, "was replaced"));

    ctl_sup_stop_all(&sup, 5000);
    assert_false(ctl_sup_stale(&sup, "t/s", argv, why, sizeof(why)));
    ctl_sup_free(&sup);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
