/*
 * port.h: picking loopback TCP ports for the servers dbplane starts (instances in the
 * reconciler's range, scratch instances of backup verification in theirs). Several
 * daemons may run on one machine (a homelab's staging and production data dirs, the test
 * suite's parallel workers): each data dir starts its scan in its own block of the range,
 * so two of them rarely pick the same free port in the moment before their servers bind.
 */
#ifndef DBP_COMMON_PORT_H
#define DBP_COMMON_PORT_H

#include <stdbool.h>

/* True when nothing holds 127.0.0.1:`port` now, bound as the servers bind (SO_REUSEADDR:
 * connections of a stopped server left in TIME_WAIT do not count). A check, not a
 * reservation: another program may take the port right after. */
bool dbp_port_free(int port);

/* Where a scan of first..last (inclusive) starts for data dir `key`: the first port of a
 * `block`-port block chosen by an FNV-1a hash of key, the same for the same key. Returns
 * `first` when the range holds less than one block. */
int dbp_port_scan_start(const char *key, int first, int last, int block);

#endif
