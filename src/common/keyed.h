/*
 * keyed.h: a growable array of fixed-size records looked up by a string key. The control
 * plane keeps several small tables of this kind (per cluster: failover records, rolling
 * changes, HA metrics; per instance: stream watches; per resource: memos; per Backup:
 * schedule entries), each with tens of entries, so a linear search is the whole index.
 */
#ifndef DBP_COMMON_KEYED_H
#define DBP_COMMON_KEYED_H

#include <stddef.h>

/* Returns the record whose key equals `key` in the caller's array: `arrp` is the address
 * of the caller's array pointer (a T **, read and written through memcpy), *n records of
 * `size` bytes are in use and *cap allocated, and each record holds its NUL-terminated key
 * in a char[key_len] field at byte offset key_off. When no record matches, appends a
 * zeroed one with the key copied in, growing the array first when it is full (first_cap
 * records at the first allocation, then doubling). Returns NULL when out of memory, with
 * the table unchanged. The pointer stays valid until the next call that appends (the
 * array may move). A key longer than key_len - 1 bytes is truncated, so keys that agree
 * on their first key_len - 1 bytes share a record. */
void *dbp_keyed_get(void *arrp, int *n, int *cap, size_t size, size_t key_off, size_t key_len,
                    const char *key, int first_cap);

/* dbp_keyed_get for an array `arr` of records with a char[] member `field`: returns a
 * pointer of arr's type. Example: `DBP_KEYED_GET(d->roll, d->nroll, d->caproll, key, k, 8)`. */
#define DBP_KEYED_GET(arr, n, cap, field, key, first_cap)                                          \
    ((__typeof__(arr))dbp_keyed_get(&(arr), &(n), &(cap), sizeof(*(arr)),                          \
                                    offsetof(__typeof__(*(arr)), field), sizeof((arr)->field),     \
                                    (key), (first_cap)))

#endif
