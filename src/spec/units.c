/*
 * units.c: the small value languages of a spec, as pure functions over strings: quantities
 * ("512Mi", "10Gi", "1G"), durations ("500ms", "30s", "1h30m"), 5-field cron expressions
 * with the next matching time, and RFC 3339 timestamps. The spec parser and the CLI both use
 * them; each returns 0 or DBP_EINVAL with a one-line message in the caller's buffer, never
 * touches global state, and reads its input with bounded cursors.
 */
#include "spec/spec.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"

/* Formats an error message into errbuf (when given) and returns DBP_EINVAL. */
__attribute__((format(printf, 3, 4))) static int fail(char *errbuf, size_t errlen, const char *fmt,
                                                      ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return DBP_EINVAL;
}

/* Reads an unsigned decimal number at *p (advancing it); false on no digit or overflow. */
static bool read_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return false;
    while (isdigit((unsigned char)*s)) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return false;
        s++;
    }
    *p = s;
    *out = v;
    return true;
}

/* --- quantities ------------------------------------------------------------------------ */

static const struct {
    const char *suffix;
    uint64_t mult;
} quantity_units[] = {
    {"Ki", 1ull << 10},   {"Mi", 1ull << 20},      {"Gi", 1ull << 30},
    {"Ti", 1ull << 40},   {"K", 1000ull},          {"M", 1000000ull},
    {"G", 1000000000ull}, {"T", 1000000000000ull}, {"", 1},
};

int spec_parse_quantity(const char *s, uint64_t *bytes, char *errbuf, size_t errlen)
{
    if (!s || !*s)
        return fail(errbuf, errlen, "empty quantity");
    const char *p = s;
    if (*p == '-')
        return fail(errbuf, errlen, "negative quantity \"%s\"", s);
    uint64_t ip = 0, frac = 0, scale = 1;
    if (!read_u64(&p, &ip))
        return fail(errbuf, errlen, "invalid quantity \"%s\": expected a number", s);
    if (*p == '.') {
        p++;
        int digits = 0;
        if (!isdigit((unsigned char)*p))
            return fail(errbuf, errlen, "invalid quantity \"%s\": expected digits after '.'", s);
        while (isdigit((unsigned char)*p)) {
            if (++digits > 6)
                return fail(errbuf, errlen, "invalid quantity \"%s\": too many decimals", s);
            frac = frac * 10 + (uint64_t)(*p - '0');
            scale *= 10;
            p++;
        }
    }
    for (size_t i = 0; i < sizeof(quantity_units) / sizeof(quantity_units[0]); i++) {
        if (strcmp(p, quantity_units[i].suffix) != 0)
            continue;
        uint64_t mult = quantity_units[i].mult, v;
        if (__builtin_mul_overflow(ip, mult, &v))
            return fail(errbuf, errlen, "quantity \"%s\" is too large", s);
        if (frac) {
            uint64_t f = frac * mult; /* frac < 10^6, mult <= 2^40: no overflow */
            if (f % scale)
                return fail(errbuf, errlen, "quantity \"%s\" is not a whole number of bytes", s);
            if (__builtin_add_overflow(v, f / scale, &v))
                return fail(errbuf, errlen, "quantity \"%s\" is too large", s);
        }
        *bytes = v;
        return 0;
    }
    return fail(errbuf, errlen,
                "invalid quantity \"%s\": unknown unit \"%s\" (use Ki, Mi, Gi, Ti or K, M, G, T)",
                s, p);
}

/* --- durations ------------------------------------------------------------------------- */

int spec_parse_duration(const char *s, int64_t *ms, char *errbuf, size_t errlen)
{
    if (!s || !*s)
        return fail(errbuf, errlen, "empty duration");
    if (*s == '-')
        return fail(errbuf, errlen, "negative duration \"%s\"", s);
    const char *p = s;
    uint64_t total = 0;
    while (*p) {
        uint64_t n, mult;
        if (!read_u64(&p, &n))
            return fail(errbuf, errlen, "invalid duration \"%s\": expected a number", s);
        if (*p == '.')
            return fail(errbuf, errlen,
                        "invalid duration \"%s\": use whole numbers (e.g. 1h30m, 1500ms)", s);
        if (strncmp(p, "ms", 2) == 0) {
            mult = 1;
            p += 2;
        } else if (*p == 's') {
            mult = 1000;
            p++;
        } else if (*p == 'm') {
            mult = 60 * 1000;
            p++;
        } else if (*p == 'h') {
            mult = 3600 * 1000;
            p++;
        } else if (*p == 'd') {
            mult = 86400 * 1000;
            p++;
        } else if (*p == '\0') {
            return fail(errbuf, errlen,
                        "duration \"%s\" has no unit (use ms, s, m, h or d, e.g. %" PRIu64 "s)", s,
                        n);
        } else {
            return fail(errbuf, errlen,
                        "invalid duration \"%s\": unknown unit at \"%s\" (use ms, s, m, h, d)", s,
                        p);
        }
        if (__builtin_mul_overflow(n, mult, &n) || __builtin_add_overflow(total, n, &total) ||
            total > (uint64_t)INT64_MAX)
            return fail(errbuf, errlen, "duration \"%s\" is too large", s);
    }
    *ms = (int64_t)total;
    return 0;
}

void spec_format_duration(int64_t ms, char *buf, size_t len)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (!buf || !len)
        return;
    if (ms == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(buf, len, "%" PRId64 "ms", ms);
}

/* --- cron ------------------------------------------------------------------------------ */

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

/* One cron field: its name for messages, its range, and names for months/weekdays
 * (names[i] stands for value lo + i). */
typedef struct cron_field_def {
    const char *what;
    int lo, hi;
    const char *const *names;
} cron_field_def_t;

static const cron_field_def_t cron_fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, dow_names}, /* 7 is Sunday too */
};

/* Reads a number or a name at *p of field `f`. */
static int cron_value(const cron_field_def_t *f, const char **p, int *out, char *errbuf,
                      size_t errlen)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        uint64_t v;
        if (!read_u64(&s, &v) || v > 1000)
            return fail(errbuf, errlen, "%s value too large", f->what);
        if ((int)v < f->lo || (int)v > f->hi)
            return fail(errbuf, errlen, "%s %d out of range %d-%d", f->what, (int)v, f->lo,
                        f->hi == 7 ? 6 : f->hi);
        *out = (int)v;
        *p = s;
        return 0;
    }
    if (f->names && isalpha((unsigned char)s[0]) && isalpha((unsigned char)s[1]) &&
        isalpha((unsigned char)s[2])) {
        for (int i = 0; f->names[i]; i++) {
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->lo + i;
                *p = s + 3;
                return 0;
            }
        }
    }
    int n = 0;
    while (s[n] && s[n] != ',' && s[n] != '-' && s[n] != '/' && n < 16)
        n++;
    return fail(errbuf, errlen, "%s: invalid value \"%.*s\"", f->what, n, s);
}

/* Parses one whitespace-free field into a bitmask of allowed values. */
static int cron_parse_field(const cron_field_def_t *f, const char *s, uint64_t *mask, char *errbuf,
                            size_t errlen)
{
    const char *p = s;
    *mask = 0;
    for (;;) {
        int a, b, step = 1, rc;
        bool range = false;
        if (*p == '*') {
            a = f->lo;
            b = f->hi == 7 ? 6 : f->hi;
            p++;
            range = true;
        } else {
            if ((rc = cron_value(f, &p, &a, errbuf, errlen)) != 0)
                return rc;
            b = a;
            if (*p == '-') {
                p++;
                if ((rc = cron_value(f, &p, &b, errbuf, errlen)) != 0)
                    return rc;
                if (b < a)
                    return fail(errbuf, errlen, "%s range %d-%d is reversed", f->what, a, b);
                range = true;
            }
        }
        if (*p == '/') {
            uint64_t st;
            p++;
            if (!read_u64(&p, &st) || st == 0 || st > 60)
                return fail(errbuf, errlen, "%s: invalid step in \"%s\"", f->what, s);
            step = (int)st;
            if (!range)
                b = f->hi == 7 ? 6 : f->hi; /* "5/15" means 5-max/15 */
        }
        for (int v = a; v <= b; v += step)
            *mask |= 1ull << (f->hi == 7 && v == 7 ? 0 : v);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '\0')
            return fail(errbuf, errlen, "%s: unexpected \"%c\" in \"%s\"", f->what, *p, s);
        return 0;
    }
}

int spec_cron_parse(const char *s, spec_cron_t *out, char *errbuf, size_t errlen)
{
    static const struct {
        const char *name;
        const char *expr;
    } macros[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    if (!s)
        return fail(errbuf, errlen, "empty cron expression");
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '@') {
        for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
            if (strcasecmp(s, macros[i].name) == 0)
                return spec_cron_parse(macros[i].expr, out, errbuf, errlen);
        return fail(errbuf, errlen,
                    "unknown cron macro \"%s\" (use @hourly, @daily, @weekly, @monthly, @yearly)",
                    s);
    }
    char field[5][64];
    int nf = 0;
    const char *p = s;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t n = 0;
        while (p[n] && !isspace((unsigned char)p[n]))
            n++;
        if (nf == 5)
            return fail(errbuf, errlen, "cron expression \"%s\" has more than 5 fields", s);
        if (n >= sizeof(field[0]))
            return fail(errbuf, errlen, "cron field too long in \"%s\"", s);
        memcpy(field[nf], p, n);
        field[nf][n] = '\0';
        nf++;
        p += n;
    }
    if (nf != 5)
        return fail(errbuf, errlen,
                    "cron expression \"%s\" has %d field%s, expected 5 (minute hour "
                    "day-of-month month day-of-week)",
                    s, nf, nf == 1 ? "" : "s");
    uint64_t m[5];
    for (int i = 0; i < 5; i++) {
        int rc = cron_parse_field(&cron_fields[i], field[i], &m[i], errbuf, errlen);
        if (rc)
            return rc;
    }
    memset(out, 0, sizeof(*out));
    out->minute = m[0];
    out->hour = (uint32_t)m[1];
    out->dom = (uint32_t)m[2];
    out->month = (uint16_t)m[3];
    out->dow = (uint8_t)m[4];
    /* Vixie cron: a field starting with '*' (also "*\/2") counts as unrestricted for the
     * day-of-month / day-of-week OR rule. */
    out->dom_star = field[2][0] == '*';
    out->dow_star = field[4][0] == '*';
    return 0;
}

/* Day matching with cron's rule: if either day field is unrestricted both must match,
 * otherwise either may. */
static bool cron_day_ok(const spec_cron_t *c, const struct tm *tm)
{
    bool dom = (c->dom >> tm->tm_mday) & 1u;
    bool dow = (c->dow >> tm->tm_wday) & 1u;
    if (c->dom_star || c->dow_star)
        return dom && dow;
    return dom || dow;
}

time_t spec_cron_next(const spec_cron_t *c, time_t after)
{
    if (!c || !c->minute || !c->hour || !c->dom || !c->month || !c->dow)
        return -1;
    time_t t = after - (((after % 60) + 60) % 60) + 60;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return -1;
    int last_year = tm.tm_year + 5;
    for (;;) {
        if (tm.tm_year > last_year)
            return -1;
        if (!((c->month >> (tm.tm_mon + 1)) & 1u)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!cron_day_ok(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!((c->hour >> tm.tm_hour) & 1u)) {
            tm.tm_hour++;
            tm.tm_min = 0;
        } else if (!((c->minute >> tm.tm_min) & 1ull)) {
            tm.tm_min++;
        } else {
            return timegm(&tm);
        }
        tm.tm_sec = 0;
        t = timegm(&tm); /* normalises overflowing fields */
        if (t == (time_t)-1 || !gmtime_r(&t, &tm))
            return -1;
    }
}

/* --- RFC 3339 -------------------------------------------------------------------------- */

/* Reads exactly n digits at *p. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int spec_parse_rfc3339(const char *s, time_t *out, char *errbuf, size_t errlen)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    if (!s)
        return fail(errbuf, errlen, "empty timestamp");
    if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mo) || *p++ != '-' ||
        !read_digits(&p, 2, &d))
        goto bad;
    if (*p != 'T' && *p != 't' && *p != ' ')
        goto bad;
    p++;
    if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
        !read_digits(&p, 2, &sec))
        goto bad;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            goto bad;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (!read_digits(&p, 2, &oh) || *p++ != ':' || !read_digits(&p, 2, &om))
            goto bad;
        if (oh > 23 || om > 59)
            return fail(errbuf, errlen, "timestamp \"%s\": invalid UTC offset", s);
    } else {
        return fail(errbuf, errlen,
                    "timestamp \"%s\" has no time zone (end it with Z or an offset like +02:00)",
                    s);
    }
    if (*p != '\0')
        goto bad;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && is_leap(y) ? 1 : 0) || h > 23 || mi > 59 || sec > 60)
        return fail(errbuf, errlen, "timestamp \"%s\" is out of range", s);
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return fail(errbuf, errlen, "timestamp \"%s\" is out of range", s);
    *out = t - sign * (time_t)(oh * 3600 + om * 60);
    return 0;
bad:
    return fail(errbuf, errlen,
                "invalid timestamp \"%s\" (expected RFC 3339, e.g. 2026-11-22T03:30:00Z)", s);
}
