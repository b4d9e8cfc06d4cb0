/*
 * keyed.c: the keyed record arrays of keyed.h.
 */
#include "common/keyed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *dbp_keyed_get(void *arrp, int *n, int *cap, size_t size, size_t key_off, size_t key_len,
                    const char *key, int first_cap)
{
    char *v;
    memcpy(&v, arrp, sizeof(v));
    size_t kl = strnlen(key, key_len - 1); /* the key as stored */
    for (int i = 0; i < *n; i++) {
        char *rec = v + (size_t)i * size;
        if (strncmp(rec + key_off, key, kl) == 0 && rec[key_off + kl] == '\0')
            return rec;
    }
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : first_cap > 0 ? first_cap : 8;
        char *nv = realloc(v, (size_t)ncap * size);
        if (!nv)
            return NULL;
        v = nv;
        memcpy(arrp, &v, sizeof(v));
        *cap = ncap;
    }
    char *rec = v + (size_t)(*n)++ * size;
    memset(rec, 0, size);
    snprintf(rec + key_off, key_len, "%s", key);
    return rec;
}
