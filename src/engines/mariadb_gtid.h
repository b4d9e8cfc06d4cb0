/*
 * mariadb_gtid.h: MariaDB's GTID text — one GTID "D-S-N" (replication domain, server id,
 * sequence number) and lists of them "D-S-N,D-S-N" as @@gtid_binlog_pos,
 * @@gtid_binlog_state, @@gtid_slave_pos, xtrabackup_binlog_info and a binary log's
 * Gtid_list event print them. One parser for the MariaDB driver (engines/mariadb*.c) and
 * the engine-neutral binary log archive (backup/binlog.c), which stores MariaDB's GTIDs;
 * no other module needs it. Pure functions over strings: no allocation, no I/O.
 */
#ifndef DBP_ENGINES_MARIADB_GTID_H
#define DBP_ENGINES_MARIADB_GTID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One GTID. Domain and server id are 32-bit in MariaDB, the sequence number 64-bit. */
typedef struct mdb_gtid {
    uint32_t domain; /* gtid_domain_id */
    uint32_t server; /* server_id of the server that first logged the transaction */
    uint64_t seq;    /* sequence number within the domain */
} mdb_gtid_t;

/* Parses one GTID at the start of s (after any blanks): three decimal numbers joined by
 * '-', no signs, each within its type. Returns the characters consumed (blanks included),
 * with *g filled; 0, *g untouched, when s does not start with a GTID. What follows the
 * GTID is not looked at ("0-1-5 trans" gives 5). Borrows s. */
size_t mdb_gtid_parse(const char *s, mdb_gtid_t *g);

/* Iterator over a GTID list: reads the element at *p, which may be surrounded by blanks
 * and ends at ',' or the end of the string, and moves *p past it and its comma.
 * Returns 1 with *g filled; 0 at the end of the list (*p NULL or at "", or only blanks
 * left: "" is the empty list); -1 when the element is not exactly one GTID (empty,
 * malformed, trailing text), *p still moved past it so a lenient caller can go on.
 * Usage: for (const char *p = list; (rc = mdb_gtid_next(&p, &g)) != 0;) if (rc > 0) ...
 * Borrows the list; *p stays a view into it. */
int mdb_gtid_next(const char **p, mdb_gtid_t *g);

/* True when `list` is a non-empty GTID list every element of which is a GTID. */
bool mdb_gtid_list_ok(const char *list);

/* The highest sequence number of domain `domain` among the GTIDs of `list` into *seq;
 * false (*seq untouched) when the list has none of that domain. Malformed elements are
 * skipped. For a position (gtid_binlog_pos: one GTID a domain) that is the domain's GTID;
 * in a gtid_binlog_state (one a domain and server) the domain's last transaction under
 * gtid_strict_mode. */
bool mdb_gtid_domain_seq(const char *list, uint32_t domain, uint64_t *seq);

/* True when GTID g is in a gtid_binlog_state list ("d-s-m,..."): an entry of the same
 * domain and server id with m >= g's sequence number. Under gtid_strict_mode sequence
 * numbers grow within a domain on every server that has the history, so m >= n means the
 * server holds n too. Malformed elements are skipped. */
bool mdb_gtid_in_state(const char *state, const mdb_gtid_t *g);

/* Whether every GTID of `pos` (a position such as gtid_binlog_pos) is in `state` (a
 * gtid_binlog_state, mdb_gtid_in_state): 0 when all are (an empty pos included), 1 with
 * *missing = the first one that is not, -1 when pos has an element that is not a GTID. */
int mdb_gtid_first_missing(const char *pos, const char *state, mdb_gtid_t *missing);

/* What a primary's binary logs say about serving a replica whose gtid_slave_pos holds
 * GTID `g` (the replica asks for the transactions after g), under gtid_strict_mode:
 * - `before` is the Gtid_list of the primary's oldest binary log (the last GTID of each
 *   domain logged before it; "" for a log that follows nothing). When it names g's
 *   domain at sequence number a, the logs hold everything after a: served when
 *   g.seq >= a (g.seq == a: the logs begin right after g).
 * - Otherwise the domain begins inside the logs and `first` is its first GTID there
 *   (NULL or seq 0: not found): served when first->seq <= g.seq (first->seq == g.seq:
 *   the logs hold g itself, the primary skips it and sends what follows).
 * Returns MDB_LOGS_SERVE, MDB_LOGS_PURGED (the list is past g), MDB_LOGS_BEGIN_AFTER (the
 * first GTID is past g: a primary made from a clone or backup after the run) or
 * MDB_LOGS_SCAN (the list does not name the domain and `first` is unknown: look for it). */
enum { MDB_LOGS_SERVE = 0, MDB_LOGS_PURGED, MDB_LOGS_BEGIN_AFTER, MDB_LOGS_SCAN };
int mdb_gtid_logs_serve(const char *before, const mdb_gtid_t *g, const mdb_gtid_t *first);

#endif
