/*
 * stmt.c: prepared-statement tracking for transaction and statement pooling, as PgBouncer
 * >= 1.21 does it. A worker keeps one registry of distinct statement bodies (query text
 * and parameter types); each gets a server-side name "_dbp_<id>". A client maps its own
 * statement names to registry entries; a server connection keeps the set of entries it has
 * prepared. client.c rewrites names in Parse/Bind/Describe/Close and re-prepares a
 * statement on whichever server connection the client lands on. All tables are open
 * addressing with linear probing, grown at 50% load; nothing here is allocated per message.
 */
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 64-bit FNV-1a. */
static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

px_stmt_t *px_stmt_get(px_stmt_reg_t *r, const uint8_t *body, size_t len)
{
    uint64_t h = hash_bytes(body, len);
    if (r->size) {
        for (px_stmt_t *s = r->tab[h & (r->size - 1)]; s; s = s->hnext)
            if (s->hash == h && s->len == len && memcmp(s->body, body, len) == 0) {
                s->refs++;
                return s;
            }
    }
    if (r->count + 1 > r->size) {
        size_t nsize = r->size ? r->size * 2 : 256;
        px_stmt_t **nt = calloc(nsize, sizeof(*nt));
        if (!nt)
            return NULL;
        for (size_t i = 0; i < r->size; i++) {
            px_stmt_t *s = r->tab[i];
            while (s) {
                px_stmt_t *nx = s->hnext;
                s->hnext = nt[s->hash & (nsize - 1)];
                nt[s->hash & (nsize - 1)] = s;
                s = nx;
            }
        }
        free(r->tab);
        r->tab = nt;
        r->size = nsize;
    }
    px_stmt_t *s = malloc(sizeof(*s) + len);
    if (!s)
        return NULL;
    s->hash = h;
    s->id = ++r->next_id;
    s->refs = 1;
    s->len = (uint32_t)len;
    memcpy(s->body, body, len);
    s->hnext = r->tab[h & (r->size - 1)];
    r->tab[h & (r->size - 1)] = s;
    r->count++;
    return s;
}

void px_stmt_unref(px_stmt_reg_t *r, px_stmt_t *st)
{
    if (!st || --st->refs > 0)
        return;
    px_stmt_t **pp = &r->tab[st->hash & (r->size - 1)];
    while (*pp && *pp != st)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = st->hnext;
    r->count--;
    free(st);
}

void px_stmt_reg_free(px_stmt_reg_t *r)
{
    for (size_t i = 0; i < r->size; i++) {
        px_stmt_t *s = r->tab[i];
        while (s) {
            px_stmt_t *nx = s->hnext;
            free(s);
            s = nx;
        }
    }
    free(r->tab);
    memset(r, 0, sizeof(*r));
}

size_t px_stmt_srvname(const px_stmt_t *st, char *out)
{
    return (size_t)snprintf(out, 24, "_dbp_%llx", (unsigned long long)st->id);
}

#define TOMB ((char *)1)

static int smap_grow(px_smap_t *m)
{
    uint32_t nsize = m->size ? m->size * 2 : 16;
    if (m->count * 4 < m->size)
        nsize = m->size; /* mostly tombstones: rehash in place size */
    px_smap_ent_t *nt = calloc(nsize, sizeof(*nt));
    if (!nt)
        return -1;
    for (uint32_t i = 0; i < m->size; i++) {
        px_smap_ent_t *e = &m->tab[i];
        if (!e->st)
            continue;
        uint32_t j = (uint32_t)e->hash & (nsize - 1);
        while (nt[j].st)
            j = (j + 1) & (nsize - 1);
        nt[j] = *e;
    }
    free(m->tab);
    m->tab = nt;
    m->size = nsize;
    m->used = m->count;
    return 0;
}

/* Finds the slot of name (client map); returns it or NULL. */
static px_smap_ent_t *find_name(px_smap_t *m, const char *name, size_t len, uint64_t h)
{
    if (!m->size)
        return NULL;
    uint32_t j = (uint32_t)h & (m->size - 1);
    for (uint32_t k = 0; k < m->size; k++, j = (j + 1) & (m->size - 1)) {
        px_smap_ent_t *e = &m->tab[j];
        if (!e->st && e->name != TOMB)
            return NULL;
        if (e->st && e->hash == h && e->nlen == len && memcmp(e->name, name, len) == 0)
            return e;
    }
    return NULL;
}

px_stmt_t *px_smap_find_name(px_smap_t *m, const char *name, size_t len)
{
    px_smap_ent_t *e = find_name(m, name, len, hash_bytes(name, len));
    return e ? e->st : NULL;
}

int px_smap_put_name(px_smap_t *m, px_stmt_reg_t *r, const char *name, size_t len, px_stmt_t *st)
{
    uint64_t h = hash_bytes(name, len);
    px_smap_ent_t *e = find_name(m, name, len, h);
    if (e) {
        px_stmt_unref(r, e->st);
        e->st = st;
        return 0;
    }
    if ((m->used + 1) * 2 > m->size && smap_grow(m) != 0)
        return -1;
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, name, len);
    copy[len] = 0;
    uint32_t j = (uint32_t)h & (m->size - 1);
    while (m->tab[j].st)
        j = (j + 1) & (m->size - 1);
    if (m->tab[j].name != TOMB)
        m->used++;
    m->tab[j] = (px_smap_ent_t){copy, (uint32_t)len, h, st};
    m->count++;
    return 0;
}

void px_smap_del_name(px_smap_t *m, px_stmt_reg_t *r, const char *name, size_t len)
{
    px_smap_ent_t *e = find_name(m, name, len, hash_bytes(name, len));
    if (!e)
        return;
    px_stmt_unref(r, e->st);
    free(e->name);
    e->name = TOMB;
    e->st = NULL;
    m->count--;
}

static px_smap_ent_t *find_st(px_smap_t *m, const px_stmt_t *st)
{
    if (!m->size)
        return NULL;
    uint32_t j = (uint32_t)st->id & (m->size - 1);
    for (uint32_t k = 0; k < m->size; k++, j = (j + 1) & (m->size - 1)) {
        px_smap_ent_t *e = &m->tab[j];
        if (!e->st && e->name != TOMB)
            return NULL;
        if (e->st == st)
            return e;
    }
    return NULL;
}

bool px_smap_has(px_smap_t *m, const px_stmt_t *st)
{
    return find_st(m, st) != NULL;
}

int px_smap_add(px_smap_t *m, px_stmt_t *st)
{
    if (find_st(m, st))
        return 0;
    if ((m->used + 1) * 2 > m->size && smap_grow(m) != 0)
        return -1;
    uint32_t j = (uint32_t)st->id & (m->size - 1);
    while (m->tab[j].st)
        j = (j + 1) & (m->size - 1);
    if (m->tab[j].name != TOMB)
        m->used++;
    m->tab[j] = (px_smap_ent_t){NULL, 0, st->id, st};
    st->refs++;
    m->count++;
    return 0;
}

void px_smap_del(px_smap_t *m, px_stmt_reg_t *r, px_stmt_t *st)
{
    px_smap_ent_t *e = find_st(m, st);
    if (!e)
        return;
    px_stmt_unref(r, e->st);
    e->name = TOMB;
    e->st = NULL;
    m->count--;
}

void px_smap_clear(px_smap_t *m, px_stmt_reg_t *r)
{
    for (uint32_t i = 0; i < m->size; i++) {
        px_smap_ent_t *e = &m->tab[i];
        if (e->st)
            px_stmt_unref(r, e->st);
        if (e->name && e->name != TOMB)
            free(e->name);
    }
    free(m->tab);
    memset(m, 0, sizeof(*m));
}
