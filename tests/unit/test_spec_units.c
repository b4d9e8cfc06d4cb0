/*
 * test_spec_units.c: table-driven tests of src/spec/units.c — quantities, durations and
 * their formatting, cron expressions and spec_cron_next (including cron's day-of-month /
 * day-of-week OR rule), and RFC 3339 timestamps. Each table row is one input and the
 * expected value or the expected error text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "spec/spec.h"

/* UTC seconds of an RFC 3339 timestamp that the test knows to be valid. */
static time_t ts(const char *s)
{
    time_t t = 0;
    assert_int_equal(spec_parse_rfc3339(s, &t, NULL, 0), 0);
    return t;
}

static void test_quantity(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        uint64_t bytes;
        const char *err; /* substring of the message when rc != 0 */
    } cases[] = {
        {"512Mi", 0, 512ull << 20, NULL},
        {"10Gi", 0, 10ull << 30, NULL},
        {"1Ki", 0, 1024, NULL},
        {"2Ti", 0, 2ull << 40, NULL},
        {"1G", 0, 1000000000ull, NULL},
        {"1K", 0, 1000, NULL},
        {"3M", 0, 3000000, NULL},
        {"1T", 0, 1000000000000ull, NULL},
        {"1048576", 0, 1048576, NULL},
        {"0", 0, 0, NULL},
        {"1.5Gi", 0, 3ull << 29, NULL},
        {"18446744073709551615", 0, UINT64_MAX, NULL},
        {"640mb", DBP_EINVAL, 0, "unknown unit \"mb\""},
        {"1GB", DBP_EINVAL, 0, "unknown unit"},
        {"1gi", DBP_EINVAL, 0, "unknown unit"},
        {"Mi", DBP_EINVAL, 0, "expected a number"},
        {"", DBP_EINVAL, 0, "empty"},
        {"-1Mi", DBP_EINVAL, 0, "negative"},
        {"1.1", DBP_EINVAL, 0, "whole number of bytes"},
        {"1.", DBP_EINVAL, 0, "digits after"},
        {"20000000Ti", DBP_EINVAL, 0, "too large"},
        {"18446744073709551616", DBP_EINVAL, 0, "expected a number"},
        {" 1Mi", DBP_EINVAL, 0, "expected a number"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t b = 12345;
        char err[256] = "";
        int rc = spec_parse_quantity(cases[i].in, &b, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("quantity \"%s\": rc %d, want %d (%s)", cases[i].in, rc, cases[i].rc, err);
        if (rc == 0 && b != cases[i].bytes)
            fail_msg("quantity \"%s\": %llu, want %llu", cases[i].in, (unsigned long long)b,
                     (unsigned long long)cases[i].bytes);
        if (rc != 0 && !strstr(err, cases[i].err))
            fail_msg("quantity \"%s\": message \"%s\" lacks \"%s\"", cases[i].in, err,
                     cases[i].err);
    }
}

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        int64_t ms;
        const char *err;
    } cases[] = {
        {"500ms", 0, 500, NULL},
        {"30s", 0, 30000, NULL},
        {"5m", 0, 300000, NULL},
        {"24h", 0, 86400000, NULL},
        {"30d", 0, 30LL * 86400000, NULL},
        {"1h30m", 0, 5400000, NULL},
        {"1m500ms", 0, 60500, NULL},
        {"0s", 0, 0, NULL},
        {"10", DBP_EINVAL, 0, "no unit"},
        {"0", DBP_EINVAL, 0, "no unit"},
        {"-1s", DBP_EINVAL, 0, "negative"},
        {"1.5h", DBP_EINVAL, 0, "whole numbers"},
        {"5x", DBP_EINVAL, 0, "unknown unit"},
        {"5 s", DBP_EINVAL, 0, "unknown unit"},
        {"s", DBP_EINVAL, 0, "expected a number"},
        {"", DBP_EINVAL, 0, "empty"},
        {"1h30", DBP_EINVAL, 0, "no unit"},
        {"999999999999999999d", DBP_EINVAL, 0, "too large"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -7;
        char err[256] = "";
        int rc = spec_parse_duration(cases[i].in, &ms, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("duration \"%s\": rc %d, want %d (%s)", cases[i].in, rc, cases[i].rc, err);
        if (rc == 0 && ms != cases[i].ms)
            fail_msg("duration \"%s\": %lld ms, want %lld", cases[i].in, (long long)ms,
                     (long long)cases[i].ms);
        if (rc != 0 && !strstr(err, cases[i].err))
            fail_msg("duration \"%s\": message \"%s\" lacks \"%s\"", cases[i].in, err,
                     cases[i].err);
    }
}

static void test_format_duration(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *out;
    } cases[] = {
        {0, "0s"},        {500, "500ms"},           {1500, "1500ms"},
        {30000, "30s"},   {300000, "5m"},           {5400000, "90m"},
        {86400000, "1d"}, {30LL * 86400000, "30d"}, {7200000, "2h"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        spec_format_duration(cases[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].out);
        int64_t back = -1;
        assert_int_equal(spec_parse_duration(buf, &back, NULL, 0), 0);
        assert_int_equal(back, cases[i].ms);
    }
}

static void test_cron_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        const char *err;
    } cases[] = {
        {"0 3 * * *", 0, NULL},
        {"*/15 * * * *", 0, NULL},
        {"0 3 * * 0", 0, NULL},
        {"0 3 * * 7", 0, NULL},
        {"0 9-17/2 * * mon-fri", 0, NULL},
        {"0 0 1,15 jan,JUL *", 0, NULL},
        {"5/20 * * * *", 0, NULL},
        {"@daily", 0, NULL},
        {"@hourly", 0, NULL},
        {"@weekly", 0, NULL},
        {"@monthly", 0, NULL},
        {"@yearly", 0, NULL},
        {"61 3 * * *", DBP_EINVAL, "minute 61 out of range 0-59"},
        {"0 24 * * *", DBP_EINVAL, "hour 24 out of range"},
        {"0 0 0 * *", DBP_EINVAL, "day-of-month 0 out of range"},
        {"0 0 32 * *", DBP_EINVAL, "day-of-month 32"},
        {"0 0 * 13 *", DBP_EINVAL, "month 13"},
        {"0 0 * * 8", DBP_EINVAL, "day-of-week 8"},
        {"* * * *", DBP_EINVAL, "has 4 fields, expected 5"},
        {"* * * * * *", DBP_EINVAL, "more than 5 fields"},
        {"", DBP_EINVAL, "has 0 fields"},
        {"*/0 * * * *", DBP_EINVAL, "invalid step"},
        {"5-1 * * * *", DBP_EINVAL, "reversed"},
        {"x * * * *", DBP_EINVAL, "minute: invalid value \"x\""},
        {"0 0 * foo *", DBP_EINVAL, "month: invalid value"},
        {"0 0 ? * *", DBP_EINVAL, "invalid value"},
        {"1,,2 * * * *", DBP_EINVAL, "invalid value"},
        {"@reboot", DBP_EINVAL, "unknown cron macro"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spec_cron_t c;
        char err[256] = "";
        int rc = spec_cron_parse(cases[i].in, &c, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("cron \"%s\": rc %d, want %d (%s)", cases[i].in, rc, cases[i].rc, err);
        if (rc != 0 && !strstr(err, cases[i].err))
            fail_msg("cron \"%s\": message \"%s\" lacks \"%s\"", cases[i].in, err, cases[i].err);
    }
    spec_cron_t c;
    assert_int_equal(spec_cron_parse("*/15 1-3 * * 7", &c, NULL, 0), 0);
    assert_int_equal(c.minute, (1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45));
    assert_int_equal(c.hour, 0xEu);
    assert_int_equal(c.dow, 1u); /* 7 folds onto Sunday (0) */
    assert_true(c.dom_star);
    assert_false(c.dow_star);
}

static void test_cron_next(void **state)
{
    (void)state;
    static const struct {
        const char *expr;
        const char *after;
        const char *want; /* NULL: no match within 5 years */
    } cases[] = {
        {"0 3 * * *", "2026-11-22T04:00:00Z", "2026-11-23T03:00:00Z"},
        {"0 3 * * *", "2026-11-22T02:59:59Z", "2026-11-22T03:00:00Z"},
        {"0 3 * * *", "2026-11-22T03:00:00Z", "2026-11-23T03:00:00Z"}, /* strictly after */
        {"0 3 * * *", "2026-12-31T23:59:00Z", "2027-01-01T03:00:00Z"},
        {"*/15 * * * *", "2026-11-22T10:07:00Z", "2026-11-22T10:15:00Z"},
        {"*/15 * * * *", "2026-11-22T10:45:00Z", "2026-11-22T11:00:00Z"},
        {"*/15 * * * *", "2026-11-22T23:59:30Z", "2026-11-23T00:00:00Z"},
        /* 2026-11-22 is a Sunday */
        {"0 3 * * 0", "2026-11-22T04:00:00Z", "2026-11-29T03:00:00Z"},
        {"0 3 * * 0", "2026-11-22T02:00:00Z", "2026-11-22T03:00:00Z"},
        {"0 3 * * 7", "2026-11-23T00:00:00Z", "2026-11-29T03:00:00Z"},
        {"0 3 * * sun", "2026-11-23T00:00:00Z", "2026-11-29T03:00:00Z"},
        /* OR rule: the 13th or any Friday (2026-11-20 is a Friday, 2026-12-13 a Sunday) */
        {"0 0 13 * 5", "2026-11-14T00:00:00Z", "2026-11-20T00:00:00Z"},
        {"0 0 13 * 5", "2026-12-11T00:00:00Z", "2026-12-13T00:00:00Z"},
        {"0 0 13 * *", "2026-11-14T00:00:00Z", "2026-12-13T00:00:00Z"},
        {"0 0 * * 5", "2026-12-11T00:00:00Z", "2026-12-18T00:00:00Z"},
        /* a '*'-led day field makes the rule AND (Vixie cron): odd days that are Fridays */
        {"0 0 */2 * 5", "2026-11-14T00:00:00Z", "2026-11-27T00:00:00Z"},
        {"0 * * * *", "2026-11-22T10:30:00Z", "2026-11-22T11:00:00Z"},
        {"@monthly", "2026-11-22T10:30:00Z", "2026-12-01T00:00:00Z"},
        {"0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
        {"0 0 31 2 *", "2026-03-01T00:00:00Z", NULL},
        {"30 4 1 jan *", "2026-11-22T00:00:00Z", "2027-01-01T04:30:00Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spec_cron_t c;
        assert_int_equal(spec_cron_parse(cases[i].expr, &c, NULL, 0), 0);
        time_t got = spec_cron_next(&c, ts(cases[i].after));
        time_t want = cases[i].want ? ts(cases[i].want) : (time_t)-1;
        if (got != want)
            fail_msg("cron \"%s\" after %s: got %lld, want %lld (%s)", cases[i].expr,
                     cases[i].after, (long long)got, (long long)want,
                     cases[i].want ? cases[i].want : "none");
    }
}

static void test_rfc3339(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        time_t t;
    } cases[] = {
        {"2026-11-22T03:30:00Z", 0, 1795318200},
        {"2026-11-22t03:30:00z", 0, 1795318200},
        {"2026-11-22T05:30:00+02:00", 0, 1795318200},
        {"2026-11-21T22:30:00-05:00", 0, 1795318200},
        {"2026-11-22T03:30:00.123456Z", 0, 1795318200},
        {"1970-01-01T00:00:00Z", 0, 0},
        {"2028-02-29T00:00:00Z", 0, 1835395200},
        {"2026-11-22T03:30:00", DBP_EINVAL, 0},
        {"2026-11-22", DBP_EINVAL, 0},
        {"2026-13-01T00:00:00Z", DBP_EINVAL, 0},
        {"2026-02-29T00:00:00Z", DBP_EINVAL, 0},
        {"2026-11-22T24:00:00Z", DBP_EINVAL, 0},
        {"2026-11-22T03:30:00+25:00", DBP_EINVAL, 0},
        {"2026-11-22T03:30:00Zjunk", DBP_EINVAL, 0},
        {"yesterday", DBP_EINVAL, 0},
        {"", DBP_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        time_t t = 42;
        char err[256] = "";
        int rc = spec_parse_rfc3339(cases[i].in, &t, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("rfc3339 \"%s\": rc %d, want %d (%s)", cases[i].in, rc, cases[i].rc, err);
        if (rc == 0 && t != cases[i].t)
            fail_msg("rfc3339 \"%s\": %lld, want %lld", cases[i].in, (long long)t,
                     (long long)cases[i].t);
        if (rc != 0 && !*err)
            fail_msg("rfc3339 \"%s\": no message", cases[i].in);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantity),        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_format_duration), cmocka_unit_test(test_cron_parse),
        cmocka_unit_test(test_cron_next),       cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
