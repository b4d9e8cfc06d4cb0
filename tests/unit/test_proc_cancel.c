/*
 * test_proc_cancel.c: cancellation tokens (src/common/proc.c, dbp_cancel_t), which let the
 * daemon stop a worker's clone at shutdown (control/jobs.c): a real child (/bin/sleep 30)
 * started by a thread bound to a token is killed with its process group when another
 * thread cancels the token; the bound thread's dbp_proc_run returns at once with an error,
 * its next spawn fails without starting anything, and an unbound thread is unaffected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/proc.h"

typedef struct worker {
    dbp_cancel_t cancel;
    char log[64];
    int rc1, rc2;
    bool cancelled_seen;
    int64_t ms;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    dbp_cancel_bind(&w->cancel);
    dbp_runas_t ra = {.drop = false};
    char *argv[] = {"/bin/sleep", "30", NULL};
    dbp_err_t err;
    int64_t t0 = dbp_now_ms();
    w->rc1 = dbp_proc_run(argv, NULL, &ra, w->log, 0, &err);
    w->ms = dbp_now_ms() - t0;
    w->cancelled_seen = dbp_cancelled();
    w->rc2 = dbp_proc_run(argv, NULL, &ra, w->log, 0, &err);
    dbp_cancel_bind(NULL);
    return NULL;
}

static void test_cancel_kills_the_running_tool(void **state)
{
    (void)state;
    worker_t w;
    memset(&w, 0, sizeof(w));
    dbp_cancel_init(&w.cancel);
    snprintf(w.log, sizeof(w.log), "/tmp/dbp-cancel-%d.log", (int)getpid());
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, worker_main, &w), 0);
    /* Wait until the child is recorded in the token (at most 5 s). */
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&w.cancel.mu);
        int n = w.cancel.n;
        pthread_mutex_unlock(&w.cancel.mu);
        if (n == 1)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(w.cancel.n, 1);
    assert_false(dbp_cancelled()); /* this thread has no token */
    dbp_cancel_trigger(&w.cancel);
    pthread_join(th, NULL);
    assert_int_not_equal(w.rc1, 0);
    assert_true(w.ms < 10000);
    assert_true(w.cancelled_seen);
    assert_int_not_equal(w.rc2, 0);
    assert_int_equal(w.cancel.n, 0); /* the reaped child was forgotten */
    dbp_cancel_destroy(&w.cancel);
    unlink(w.log);

    /* Unbound: an ordinary run is not affected. */
    dbp_runas_t ra = {.drop = false};
    char *ok[] = {"/bin/true", NULL};
    dbp_err_t err;
    assert_int_equal(dbp_proc_run(ok, NULL, &ra, w.log, 10000, &err), 0);
    unlink(w.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_kills_the_running_tool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
