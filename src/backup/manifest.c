/*
 * manifest.c: backup manifests as JSON through jansson (see manifest.h).
 */
#include "backup/manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

void backup_format_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool backup_part_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 127 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

char *backup_manifest_dump(const backup_manifest_t *m)
{
    char started[32], finished[32];
    backup_format_time(m->started_ms, started, sizeof(started));
    backup_format_time(m->finished_ms, finished, sizeof(finished));
    json_t *parts = json_array(), *dbs = json_array();
    for (int i = 0; parts && i < m->nparts; i++) {
        const backup_part_t *p = &m->parts[i];
        json_array_append_new(parts, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "name", p->name,
                                               "kind", p->kind, "database", p->database, "bytes",
                                               (json_int_t)p->bytes, "raw_bytes",
                                               (json_int_t)p->raw_bytes, "sha256", p->sha256));
    }
    for (int i = 0; dbs && i < m->ndbs; i++)
        json_array_append_new(dbs, json_pack("{s:s, s:I}", "name", m->dbs[i].name, "tables",
                                             (json_int_t)m->dbs[i].tables));
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, "
        "s:b, s:o, s:o}",
        "format", BACKUP_MANIFEST_FORMAT, "id", m->id, "tenant", m->tenant, "cluster", m->cluster,
        "backup", m->backup, "engine", m->engine, "engine_version", m->engine_version, "type",
        m->type, "source", m->source, "start_position", m->start_position, "end_position",
        m->end_position, "timeline", m->timeline, "started_at", started, "finished_at", finished,
        "started_ms", (json_int_t)m->started_ms, "finished_ms", (json_int_t)m->finished_ms,
        "compression", m->compression, "encrypted", m->encrypted, "parts",
        parts ? parts : json_null(), "databases", dbs ? dbs : json_null());
    if (!doc)
        return NULL;
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return s;
}

/* Copies the string member `key` of obj into out (cap bytes). Absent: "" unless
 * required. */
static int get_str(json_t *obj, const char *key, char *out, size_t cap, bool required,
                   const char *path, dbp_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        out[0] = '\0';
        return required ? dbp_err_set(err, DBP_EINVAL, "manifest: %s%s is missing", path, key) : 0;
    }
    if (!json_is_string(v))
        return dbp_err_set(err, DBP_EINVAL, "manifest: %s%s is not a string", path, key);
    const char *s = json_string_value(v);
    if (strlen(s) >= cap || json_string_length(v) != strlen(s))
        return dbp_err_set(err, DBP_EINVAL, "manifest: %s%s is too long or holds NUL", path, key);
    snprintf(out, cap, "%s", s);
    return 0;
}

static int get_int(json_t *obj, const char *key, int64_t *out, const char *path, dbp_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return dbp_err_set(err, DBP_EINVAL, "manifest: %s%s must be a non-negative integer", path,
                           key);
    *out = json_integer_value(v);
    return 0;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int backup_manifest_parse(const char *buf, size_t len, backup_manifest_t *m, dbp_err_t *err)
{
    memset(m, 0, sizeof(*m));
    if (len > BACKUP_MANIFEST_MAX_BYTES)
        return dbp_err_set(err, DBP_EINVAL, "manifest: larger than %d bytes",
                           BACKUP_MANIFEST_MAX_BYTES);
    json_error_t je;
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return dbp_err_set(err, DBP_EINVAL, "manifest: not JSON: %s (line %d)", je.text, je.line);
    int rc = 0;
    char format[64];
    if (!json_is_object(doc)) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: not a JSON object");
        goto out;
    }
    if ((rc = get_str(doc, "format", format, sizeof(format), true, "", err)))
        goto out;
    if (strcmp(format, BACKUP_MANIFEST_FORMAT) != 0) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: unknown format '%s'", format);
        goto out;
    }
    struct {
        const char *key;
        char *out;
        size_t cap;
        bool req;
    } strs[] = {
        {"id", m->id, sizeof(m->id), true},
        {"tenant", m->tenant, sizeof(m->tenant), true},
        {"cluster", m->cluster, sizeof(m->cluster), true},
        {"backup", m->backup, sizeof(m->backup), false},
        {"engine", m->engine, sizeof(m->engine), true},
        {"engine_version", m->engine_version, sizeof(m->engine_version), false},
        {"type", m->type, sizeof(m->type), true},
        {"source", m->source, sizeof(m->source), false},
        {"start_position", m->start_position, sizeof(m->start_position), false},
        {"end_position", m->end_position, sizeof(m->end_position), false},
        {"timeline", m->timeline, sizeof(m->timeline), false},
        {"compression", m->compression, sizeof(m->compression), true},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if ((rc = get_str(doc, strs[i].key, strs[i].out, strs[i].cap, strs[i].req, "", err)))
            goto out;
    if (strcmp(m->type, "logical") != 0 && strcmp(m->type, "physical") != 0) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: type '%s' is not logical or physical",
                         m->type);
        goto out;
    }
    if (strcmp(m->compression, "zstd") != 0 && strcmp(m->compression, "gzip") != 0 &&
        strcmp(m->compression, "none") != 0) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: unknown compression '%s'", m->compression);
        goto out;
    }
    if ((rc = get_int(doc, "started_ms", &m->started_ms, "", err)) ||
        (rc = get_int(doc, "finished_ms", &m->finished_ms, "", err)))
        goto out;
    json_t *enc = json_object_get(doc, "encrypted");
    if (enc && !json_is_boolean(enc)) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: encrypted must be true or false");
        goto out;
    }
    m->encrypted = json_is_true(enc);
    json_t *parts = json_object_get(doc, "parts");
    if (!json_is_array(parts) || json_array_size(parts) == 0 ||
        json_array_size(parts) > BACKUP_MANIFEST_MAX_PARTS) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: parts must be a list of 1..%d entries",
                         BACKUP_MANIFEST_MAX_PARTS);
        goto out;
    }
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        char path[32];
        snprintf(path, sizeof(path), "parts[%zu].", i);
        backup_part_t *bp = &m->parts[i];
        if (!json_is_object(p)) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %s is not an object", path);
            goto out;
        }
        if ((rc = get_str(p, "name", bp->name, sizeof(bp->name), true, path, err)) ||
            (rc = get_str(p, "kind", bp->kind, sizeof(bp->kind), true, path, err)) ||
            (rc = get_str(p, "database", bp->database, sizeof(bp->database), false, path, err)) ||
            (rc = get_str(p, "sha256", bp->sha256, sizeof(bp->sha256), true, path, err)) ||
            (rc = get_int(p, "bytes", &bp->bytes, path, err)) ||
            (rc = get_int(p, "raw_bytes", &bp->raw_bytes, path, err)))
            goto out;
        if (!backup_part_name_valid(bp->name) || strcmp(bp->name, "manifest.json") == 0) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %sname '%s' is not a safe part name",
                             path, bp->name);
            goto out;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(m->parts[k].name, bp->name) == 0) {
                rc = dbp_err_set(err, DBP_EINVAL, "manifest: %sname '%s' repeats", path, bp->name);
                goto out;
            }
        if (!is_hex64(bp->sha256)) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %ssha256 is not 64 hex digits", path);
            goto out;
        }
        if (strcmp(bp->kind, "data") != 0 && strcmp(bp->kind, "globals") != 0 &&
            strcmp(bp->kind, "database") != 0) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %skind '%s' is unknown", path, bp->kind);
            goto out;
        }
        if (strcmp(bp->kind, "database") == 0 && !bp->database[0]) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %sdatabase is missing", path);
            goto out;
        }
        m->nparts++;
    }
    json_t *dbs = json_object_get(doc, "databases");
    if (dbs && !json_is_array(dbs)) {
        rc = dbp_err_set(err, DBP_EINVAL, "manifest: databases must be a list");
        goto out;
    }
    json_array_foreach(dbs, i, p)
    {
        if (m->ndbs == (int)(sizeof(m->dbs) / sizeof(m->dbs[0])))
            break;
        char path[32];
        snprintf(path, sizeof(path), "databases[%zu].", i);
        backup_db_count_t *d = &m->dbs[m->ndbs];
        if (!json_is_object(p)) {
            rc = dbp_err_set(err, DBP_EINVAL, "manifest: %s is not an object", path);
            goto out;
        }
        if ((rc = get_str(p, "name", d->name, sizeof(d->name), true, path, err)) ||
            (rc = get_int(p, "tables", &d->tables, path, err)))
            goto out;
        m->ndbs++;
    }
out:
    json_decref(doc);
    return rc;
}
