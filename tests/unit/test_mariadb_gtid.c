/*
 * test_mariadb_gtid.c: table-driven tests of src/engines/mariadb_gtid.c, the parser of
 * MariaDB's GTID text: one GTID (mdb_gtid_parse), the list iterator (mdb_gtid_next) on
 * empty, malformed, multi-domain and blank-padded lists, and the helpers built on it
 * (mdb_gtid_list_ok, mdb_gtid_domain_seq, mdb_gtid_in_state, mdb_gtid_first_missing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engines/mariadb_gtid.h"

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t used; /* 0: not a GTID */
        uint32_t d, s;
        uint64_t n;
    } cases[] = {
        {"0-1-42", 6, 0, 1, 42},
        {"  3-7-9", 7, 3, 7, 9},
        {"0-1-5 trans", 5, 0, 1, 5}, /* what follows is not looked at */
        {"0-1-5,1-2-3", 5, 0, 1, 5},
        {"4294967295-4294967295-18446744073709551615", 42, UINT32_MAX, UINT32_MAX, UINT64_MAX},
        {"4294967296-1-1", 0, 0, 0, 0},           /* domain past 32 bits */
        {"0-1-18446744073709551616", 0, 0, 0, 0}, /* sequence past 64 bits */
        {"", 0, 0, 0, 0},
        {"0-1", 0, 0, 0, 0},
        {"0-1-", 0, 0, 0, 0},
        {"-1-1-1", 0, 0, 0, 0}, /* no signs: sscanf("%lu") would take it */
        {"0-+1-1", 0, 0, 0, 0},
        {"0- 1-1", 0, 0, 0, 0}, /* no blanks inside */
        {"a-1-1", 0, 0, 0, 0},
        {"[0-1-1]", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mdb_gtid_t g = {7, 7, 7};
        size_t used = mdb_gtid_parse(cases[i].in, &g);
        if (used != cases[i].used)
            fail_msg("parse \"%s\": used %zu, want %zu", cases[i].in, used, cases[i].used);
        if (used && (g.domain != cases[i].d || g.server != cases[i].s || g.seq != cases[i].n))
            fail_msg("parse \"%s\": %u-%u-%llu", cases[i].in, g.domain, g.server,
                     (unsigned long long)g.seq);
        if (!used && (g.domain != 7 || g.server != 7 || g.seq != 7))
            fail_msg("parse \"%s\": wrote a GTID it refused", cases[i].in);
    }
}

/* The list as the iterator sees it: each element "d-s-n", or "!" for a malformed one,
 * joined by '|'. */
static void walk(const char *list, char *out, size_t cap)
{
    out[0] = '\0';
    size_t len = 0;
    mdb_gtid_t g;
    int rc, guard = 0;
    for (const char *p = list; (rc = mdb_gtid_next(&p, &g)) != 0 && guard < 32; guard++) {
        char one[80];
        if (rc > 0)
            snprintf(one, sizeof(one), "%u-%u-%llu", g.domain, g.server, (unsigned long long)g.seq);
        else
            snprintf(one, sizeof(one), "!");
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "|" : "", one);
    }
    assert_true(guard < 32); /* the iterator always moves on */
}

static void test_next(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", ""},
        {"   ", ""},
        {"0-1-42", "0-1-42"},
        {"0-1-42,1-2-7,2-3-1", "0-1-42|1-2-7|2-3-1"},
        {" 0-1-42 , 1-2-7 ", "0-1-42|1-2-7"}, /* blanks around elements */
        {"0-1-42,\n1-2-7", "0-1-42|1-2-7"},
        {"0-1-42,", "0-1-42"}, /* a trailing comma ends the list */
        {"0-1-42,,1-2-7", "0-1-42|!|1-2-7"},
        {",0-1-42", "!|0-1-42"},
        {"0-1-42x,1-2-7", "!|1-2-7"}, /* trailing text in an element */
        {"0-1-42 1-2-7", "!"},
        {"junk", "!"},
        {"0-1,1-2-7", "!|1-2-7"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[512];
        walk(cases[i].in, got, sizeof(got));
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("next \"%s\": \"%s\", want \"%s\"", cases[i].in, got, cases[i].want);
    }
    mdb_gtid_t g;
    const char *p = NULL;
    assert_int_equal(mdb_gtid_next(&p, &g), 0); /* a NULL list is empty */
}

static void test_list_ok(void **state)
{
    (void)state;
    assert_true(mdb_gtid_list_ok("0-1-42"));
    assert_true(mdb_gtid_list_ok("0-1-42,1-2-7"));
    assert_false(mdb_gtid_list_ok(""));
    assert_false(mdb_gtid_list_ok("0-1-42,junk"));
    assert_false(mdb_gtid_list_ok("0-1-42,,1-2-7"));
    assert_false(mdb_gtid_list_ok("-0-1-42"));
}

static void test_domain_seq(void **state)
{
    (void)state;
    uint64_t seq = 99;
    assert_false(mdb_gtid_domain_seq("", 0, &seq));
    assert_int_equal(seq, 99);
    assert_false(mdb_gtid_domain_seq("1-2-7", 0, &seq));
    assert_true(mdb_gtid_domain_seq("0-1-42,1-2-7", 1, &seq));
    assert_int_equal(seq, 7);
    /* A gtid_binlog_state: one per domain and server; the highest of the domain. */
    assert_true(mdb_gtid_domain_seq("0-1-42,0-3-50,0-2-45", 0, &seq));
    assert_int_equal(seq, 50);
    assert_true(mdb_gtid_domain_seq("junk,0-1-5", 0, &seq)); /* malformed skipped */
    assert_int_equal(seq, 5);
}

static void test_in_state(void **state)
{
    (void)state;
    const char *st = "0-1-42,0-3-50,1-2-7";
    assert_true(mdb_gtid_in_state(st, &(mdb_gtid_t){0, 1, 42}));
    assert_true(mdb_gtid_in_state(st, &(mdb_gtid_t){0, 1, 10}));
    assert_false(mdb_gtid_in_state(st, &(mdb_gtid_t){0, 1, 43}));
    assert_false(mdb_gtid_in_state(st, &(mdb_gtid_t){0, 2, 1})); /* no such server */
    assert_true(mdb_gtid_in_state(st, &(mdb_gtid_t){1, 2, 7}));
    assert_false(mdb_gtid_in_state(st, &(mdb_gtid_t){2, 2, 1})); /* no such domain */
    assert_false(mdb_gtid_in_state("", &(mdb_gtid_t){0, 1, 1}));
}

static void test_first_missing(void **state)
{
    (void)state;
    const char *st = "0-1-42,0-3-50,1-2-7";
    mdb_gtid_t g = {0, 0, 0};
    assert_int_equal(mdb_gtid_first_missing("", st, &g), 0);
    assert_int_equal(mdb_gtid_first_missing("0-3-50,1-2-7", st, &g), 0);
    assert_int_equal(mdb_gtid_first_missing("0-3-50,1-2-8,0-1-99", st, &g), 1);
    assert_true(g.domain == 1 && g.server == 2 && g.seq == 8); /* the first one missing */
    assert_int_equal(mdb_gtid_first_missing("0-3-50,bad", st, &g), -1);
}

/* The bootstrap check's decision (mariadb_backup.c): the boundary cases are the ones
 * MariaDB serves — a run whose GTID is the Gtid_list's entry (the logs begin right after
 * it) and a run whose GTID is exactly the first GTID the logs hold (the primary skips it
 * and sends the rest) — and one sequence number earlier is refused. */
static void test_logs_serve(void **state)
{
    (void)state;
    const mdb_gtid_t g = {0, 1, 100};
    const mdb_gtid_t at = {0, 1, 100}, below = {0, 1, 99}, past = {0, 1, 101};
    const mdb_gtid_t other_server = {0, 2, 100};
    /* The oldest log's Gtid_list names the domain. */
    assert_int_equal(mdb_gtid_logs_serve("0-1-100", &g, NULL), MDB_LOGS_SERVE);
    assert_int_equal(mdb_gtid_logs_serve("0-1-99", &g, NULL), MDB_LOGS_SERVE);
    assert_int_equal(mdb_gtid_logs_serve("0-1-101", &g, NULL), MDB_LOGS_PURGED);
    assert_int_equal(mdb_gtid_logs_serve("1-3-500,0-2-100", &g, NULL), MDB_LOGS_SERVE);
    /* The list names the domain: a first GTID found anyway does not override it. */
    assert_int_equal(mdb_gtid_logs_serve("0-1-101", &g, &at), MDB_LOGS_PURGED);
    /* The list does not name it ("" or other domains): the first GTID in the logs. */
    assert_int_equal(mdb_gtid_logs_serve("", &g, NULL), MDB_LOGS_SCAN);
    assert_int_equal(mdb_gtid_logs_serve("1-1-7", &g, NULL), MDB_LOGS_SCAN);
    const mdb_gtid_t none = {0, 0, 0};
    assert_int_equal(mdb_gtid_logs_serve("", &g, &none), MDB_LOGS_SCAN);
    assert_int_equal(mdb_gtid_logs_serve("", &g, &at), MDB_LOGS_SERVE); /* exactly the first */
    assert_int_equal(mdb_gtid_logs_serve("", &g, &other_server), MDB_LOGS_SERVE);
    assert_int_equal(mdb_gtid_logs_serve("", &g, &below), MDB_LOGS_SERVE);
    assert_int_equal(mdb_gtid_logs_serve("1-1-7", &g, &past), MDB_LOGS_BEGIN_AFTER);
    assert_int_equal(mdb_gtid_logs_serve("", &g, &past), MDB_LOGS_BEGIN_AFTER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),      cmocka_unit_test(test_next),
        cmocka_unit_test(test_list_ok),    cmocka_unit_test(test_domain_seq),
        cmocka_unit_test(test_in_state),   cmocka_unit_test(test_first_missing),
        cmocka_unit_test(test_logs_serve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
