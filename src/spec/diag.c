/*
 * diag.c: the bookkeeping around parsed specs — the diagnostics list and its printer, the
 * resource set (ownership, lookup, merge), the names of kinds and engines, and two small
 * helpers every check uses: the DNS-label rule and the "did you mean" edit-distance match.
 * Nothing here knows about individual fields; that is spec.c's table.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "spec/spec_internal.h"

/* --- allocation ------------------------------------------------------------------------ */

static void oom(void)
{
    fputs("dbplane: out of memory in spec parser\n", stderr);
    abort();
}

void *spec_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *spec_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q)
        oom();
    return q;
}

char *spec_xstrdup(const char *s)
{
    return spec_xstrndup(s, strlen(s));
}

char *spec_xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        oom();
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* --- diagnostics ----------------------------------------------------------------------- */

void spec_diags_init(spec_diags_t *d)
{
    memset(d, 0, sizeof(*d));
}

void spec_diags_free(spec_diags_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].path);
        free(d->v[i].msg);
        free(d->v[i].hint);
    }
    free(d->v);
    memset(d, 0, sizeof(*d));
}

void spec_diag_add(spec_diags_t *d, spec_severity_t sev, spec_mark_t at, const char *path,
                   const char *hint, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->v = spec_xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    spec_diag_t *g = &d->v[d->n++];
    g->severity = sev;
    g->file = spec_xstrdup(at.file ? at.file : "<input>");
    g->line = at.line;
    g->col = at.col;
    g->path = spec_xstrdup(path ? path : "");
    g->msg = spec_xstrdup(msg);
    g->hint = hint ? spec_xstrdup(hint) : NULL;
    if (sev == SPEC_ERROR)
        d->errors++;
}

const char *spec_severity_str(spec_severity_t sev)
{
    return sev == SPEC_WARNING ? "warning" : "error";
}

void spec_diags_print(const spec_diags_t *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const spec_diag_t *g = &d->v[i];
        if (g->line > 0)
            fprintf(out, "%s:%d:%d: ", g->file, g->line, g->col);
        else
            fprintf(out, "%s: ", g->file);
        fprintf(out, "%s: ", spec_severity_str(g->severity));
        if (g->path && *g->path)
            fprintf(out, "%s: ", g->path);
        fputs(g->msg, out);
        if (g->hint)
            fprintf(out, " (hint: %s)", g->hint);
        fputc('\n', out);
    }
}

/* --- sets ------------------------------------------------------------------------------ */

void spec_set_init(spec_set_t *set)
{
    memset(set, 0, sizeof(*set));
}

void spec_set_free(spec_set_t *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        spec_resource_free(set->items[i]);
    free(set->items);
    for (size_t i = 0; i < set->nfiles; i++)
        free(set->files[i]);
    free(set->files);
    memset(set, 0, sizeof(*set));
}

const char *spec_set_add_file(spec_set_t *set, const char *name)
{
    set->files = spec_xrealloc(set->files, (set->nfiles + 1) * sizeof(*set->files));
    set->files[set->nfiles] = spec_xstrdup(name);
    return set->files[set->nfiles++];
}

void spec_set_push(spec_set_t *set, spec_resource_t *res)
{
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 16;
        set->items = spec_xrealloc(set->items, set->cap * sizeof(*set->items));
    }
    set->items[set->n++] = res;
}

spec_resource_t *spec_set_find(const spec_set_t *set, spec_kind_t kind, const char *tenant,
                               const char *name)
{
    if (!set || !name)
        return NULL;
    if (!tenant)
        tenant = "default";
    for (size_t i = 0; i < set->n; i++) {
        spec_resource_t *r = set->items[i];
        if (r->kind == kind && r->name.v && r->tenant.v && strcmp(r->name.v, name) == 0 &&
            strcmp(r->tenant.v, tenant) == 0)
            return r;
    }
    return NULL;
}

void spec_set_merge(spec_set_t *into, spec_set_t *from)
{
    for (size_t i = 0; i < from->n; i++) {
        spec_resource_t *r = from->items[i];
        bool replaced = false;
        for (size_t j = 0; j < into->n && !replaced; j++) {
            spec_resource_t *o = into->items[j];
            if (o->kind == r->kind && strcmp(o->name.v, r->name.v) == 0 &&
                strcmp(o->tenant.v, r->tenant.v) == 0) {
                spec_resource_free(o);
                into->items[j] = r;
                replaced = true;
            }
        }
        if (!replaced)
            spec_set_push(into, r);
    }
    into->files =
        spec_xrealloc(into->files, (into->nfiles + from->nfiles + 1) * sizeof(*into->files));
    for (size_t i = 0; i < from->nfiles; i++)
        into->files[into->nfiles++] = from->files[i];
    free(from->items);
    free(from->files);
    memset(from, 0, sizeof(*from));
}

/* --- names ----------------------------------------------------------------------------- */

static const char *const kind_names[SPEC_KIND_COUNT] = {
    "Cluster", "Database", "User",   "Grant",          "Secret", "BackupStore",
    "Backup",  "Restore",  "SqlJob", "CredentialRole", "Tenant",
};

/* CLI spellings with a hyphen between words ("backup-store"), indexed like kind_names. */
static const char *const kind_hyphenated[SPEC_KIND_COUNT] = {
    "cluster", "database", "user",    "grant",           "secret", "backup-store",
    "backup",  "restore",  "sql-job", "credential-role", "tenant",
};

const char *spec_kind_str(spec_kind_t kind)
{
    return (unsigned)kind < SPEC_KIND_COUNT ? kind_names[kind] : "Unknown";
}

int spec_kind_parse(const char *s)
{
    if (!s)
        return -1;
    for (int k = 0; k < SPEC_KIND_COUNT; k++)
        if (strcmp(s, kind_names[k]) == 0)
            return k;
    size_t n = strlen(s);
    for (int k = 0; k < SPEC_KIND_COUNT; k++) {
        const char *forms[2] = {kind_names[k], kind_hyphenated[k]};
        for (int f = 0; f < 2; f++) {
            size_t m = strlen(forms[f]);
            bool lower = true;
            for (size_t i = 0; i < n; i++)
                if (isupper((unsigned char)s[i]))
                    lower = false;
            if (!lower)
                continue;
            if ((n == m || (n == m + 1 && s[m] == 's')) && strncasecmp(s, forms[f], m) == 0)
                return k;
        }
    }
    return -1;
}

const char *spec_engine_str(spec_engine_t e)
{
    switch (e) {
    case SPEC_ENGINE_POSTGRESQL:
        return "postgresql";
    case SPEC_ENGINE_MARIADB:
        return "mariadb";
    case SPEC_ENGINE_REDIS:
        return "redis";
    default:
        return "none";
    }
}

bool spec_is_dns_label(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return s[0] != '-' && s[n - 1] != '-';
}

/* Case-insensitive Levenshtein distance, for strings up to 63 bytes (longer: large). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 1000;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = diag + cost;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (up + 1 < best)
                best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *spec_closest(const char *s, const char *const *cands)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1;
    for (size_t i = 0; cands && cands[i]; i++) {
        size_t d = edit_distance(s, cands[i]);
        if (d < bestd) {
            bestd = d;
            best = cands[i];
        }
    }
    size_t n = strlen(s);
    size_t limit = n <= 3 ? 1 : n <= 6 ? 2 : 3;
    return best && bestd <= limit ? best : NULL;
}
