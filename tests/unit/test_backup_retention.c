/*
 * test_backup_retention.c: the retention policy of src/backup/retention.c, table-driven:
 * count and age limits, the newest complete run kept whatever the limits, failed runs
 * removed once superseded, running runs never touched, and the PITR anchor.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "backup/retention.h"

#define H (3600 * 1000LL)
#define D (24 * H)
#define NOW (1000 * D)

typedef struct rcase {
    const char *name;
    backup_retention_policy_t p;
    int n;
    struct {
        int64_t age; /* finished this long before NOW (started 1 min before that) */
        char state;  /* 'c' complete, 'f' failed, 'r' running */
    } runs[8];
    const char *want; /* '1' = removed, per run */
} rcase_t;

static const rcase_t cases[] = {
    {"count keeps the newest 2", {0, 2, false}, 4,
     {{4 * D, 'c'}, {3 * D, 'c'}, {2 * D, 'c'}, {1 * D, 'c'}}, "1100"},
    {"age removes old ones", {30 * D, 0, false}, 3, {{40 * D, 'c'}, {31 * D, 'c'}, {1 * D, 'c'}},
     "110"},
    {"the last complete survives any age", {1 * D, 0, false}, 2, {{40 * D, 'c'}, {30 * D, 'c'}},
     "10"},
    {"the last complete survives count 1 and failures", {0, 1, false}, 3,
     {{5 * D, 'c'}, {4 * D, 'f'}, {3 * D, 'f'}}, "000"},
    {"failed runs go once superseded", {0, 0, false}, 3,
     {{5 * D, 'f'}, {4 * D, 'c'}, {3 * D, 'f'}}, "100"},
    {"running runs are never touched", {1 * D, 1, false}, 3,
     {{9 * D, 'r'}, {2 * D, 'c'}, {1 * H, 'c'}}, "010"},
    {"pitr keeps the anchor of the window", {7 * D, 0, true}, 4,
     {{20 * D, 'c'}, {10 * D, 'c'}, {8 * D, 'c'}, {1 * D, 'c'}}, "1100"},
    {"no limits keep everything complete", {0, 0, false}, 2, {{100 * D, 'c'}, {1 * D, 'c'}}, "00"},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const rcase_t *t = &cases[c];
        backup_retention_item_t it[8];
        memset(it, 0, sizeof(it));
        for (int i = 0; i < t->n; i++) {
            it[i].finished_ms = t->runs[i].state == 'r' ? 0 : NOW - t->runs[i].age;
            it[i].started_ms = NOW - t->runs[i].age - 60000;
            it[i].state = t->runs[i].state == 'c'   ? BACKUP_RUN_COMPLETE
                          : t->runs[i].state == 'f' ? BACKUP_RUN_FAILED
                                                    : BACKUP_RUN_RUNNING;
        }
        size_t marked = backup_retention_select(it, (size_t)t->n, &t->p, NOW);
        char got[9] = {0};
        size_t want_n = 0;
        for (int i = 0; i < t->n; i++) {
            got[i] = it[i].remove ? '1' : '0';
            want_n += t->want[i] == '1';
        }
        if (strcmp(got, t->want) != 0)
            fail_msg("case '%s': got %s want %s", t->name, got, t->want);
        assert_int_equal(marked, want_n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_table)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
