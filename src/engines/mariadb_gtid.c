/*
 * mariadb_gtid.c: the parser of MariaDB's GTID text (mariadb_gtid.h). Numbers are read
 * digit by digit rather than with sscanf("%lu"), which would take a sign ("-1" wraps) and
 * blanks between the numbers.
 */
#include "engines/mariadb_gtid.h"

#include <string.h>

/* Reads decimal digits at s into *v (at most `max`); the digits consumed, 0 when there
 * are none or the number exceeds max. */
static size_t mdbg_num(const char *s, uint64_t max, uint64_t *v)
{
    size_t i = 0;
    uint64_t n = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned dgt = (unsigned)(s[i] - '0');
        if (n > (max - dgt) / 10)
            return 0;
        n = n * 10 + dgt;
    }
    if (i)
        *v = n;
    return i;
}

size_t mdb_gtid_parse(const char *s, mdb_gtid_t *g)
{
    size_t i = strspn(s, " \t\r\n"), k;
    uint64_t d, srv, n;
    if (!(k = mdbg_num(s + i, UINT32_MAX, &d)) || s[i + k] != '-')
        return 0;
    i += k + 1;
    if (!(k = mdbg_num(s + i, UINT32_MAX, &srv)) || s[i + k] != '-')
        return 0;
    i += k + 1;
    if (!(k = mdbg_num(s + i, UINT64_MAX, &n)))
        return 0;
    *g = (mdb_gtid_t){.domain = (uint32_t)d, .server = (uint32_t)srv, .seq = n};
    return i + k;
}

int mdb_gtid_next(const char **p, mdb_gtid_t *g)
{
    const char *s = *p;
    if (!s || !s[strspn(s, " \t\r\n")])
        return 0;
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    *p = comma ? comma + 1 : s + len;
    mdb_gtid_t tmp;
    size_t used = mdb_gtid_parse(s, &tmp);
    /* The element must be the GTID alone (blanks around it allowed). */
    if (!used || used > len || strspn(s + used, " \t\r\n") < len - used)
        return -1;
    *g = tmp;
    return 1;
}

bool mdb_gtid_list_ok(const char *list)
{
    mdb_gtid_t g;
    int rc, n = 0;
    for (const char *p = list; (rc = mdb_gtid_next(&p, &g)) != 0; n++)
        if (rc < 0)
            return false;
    return n > 0;
}

bool mdb_gtid_domain_seq(const char *list, uint32_t domain, uint64_t *seq)
{
    bool found = false;
    mdb_gtid_t g;
    int rc;
    for (const char *p = list; (rc = mdb_gtid_next(&p, &g)) != 0;)
        if (rc > 0 && g.domain == domain && (!found || g.seq > *seq)) {
            *seq = g.seq;
            found = true;
        }
    return found;
}

bool mdb_gtid_in_state(const char *state, const mdb_gtid_t *g)
{
    mdb_gtid_t e;
    int rc;
    for (const char *p = state; (rc = mdb_gtid_next(&p, &e)) != 0;)
        if (rc > 0 && e.domain == g->domain && e.server == g->server && e.seq >= g->seq)
            return true;
    return false;
}

int mdb_gtid_first_missing(const char *pos, const char *state, mdb_gtid_t *missing)
{
    mdb_gtid_t g;
    int rc;
    for (const char *p = pos; (rc = mdb_gtid_next(&p, &g)) != 0;) {
        if (rc < 0)
            return -1;
        if (!mdb_gtid_in_state(state, &g)) {
            *missing = g;
            return 1;
        }
    }
    return 0;
}

int mdb_gtid_logs_serve(const char *before, const mdb_gtid_t *g, const mdb_gtid_t *first)
{
    uint64_t after;
    if (mdb_gtid_domain_seq(before, g->domain, &after))
        return g->seq >= after ? MDB_LOGS_SERVE : MDB_LOGS_PURGED;
    if (!first || first->seq == 0)
        return MDB_LOGS_SCAN;
    return first->seq <= g->seq ? MDB_LOGS_SERVE : MDB_LOGS_BEGIN_AFTER;
}
