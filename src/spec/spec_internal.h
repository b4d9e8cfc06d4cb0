/*
 * spec_internal.h: what the files of src/spec/ share and nobody else may use. yaml.c turns
 * libyaml events into a small node tree with 1-based positions (and into jansson values);
 * diag.c owns diagnostics, sets and name helpers; spec.c drives the per-kind field tables;
 * validate.c checks references across resources; units.c parses quantities, durations,
 * cron expressions and timestamps.
 *
 * Allocation failures inside the spec module abort the process with a message (spec_x*
 * helpers): a parser that cannot allocate a few bytes has nothing sensible to report.
 */
#ifndef DBP_SPEC_SPEC_INTERNAL_H
#define DBP_SPEC_SPEC_INTERNAL_H

#include <stdarg.h>

#include "spec/spec.h"

/* Deepest nesting of YAML collections accepted in one document. */
#define SPEC_MAX_DEPTH 64
/* Most keys in one mapping, and most items in one sequence. */
#define SPEC_MAX_MAP_KEYS 10000
#define SPEC_MAX_SEQ_ITEMS 100000
/* Largest spec file read by spec_parse_file, in bytes. */
#define SPEC_MAX_FILE_BYTES (16u * 1024u * 1024u)

/* The three shapes of a YAML node. */
typedef enum spec_node_type {
    SPEC_NODE_SCALAR = 0,
    SPEC_NODE_SEQ,
    SPEC_NODE_MAP,
} spec_node_type_t;

/* One node of a parsed document. Scalars keep their text; a scalar is `quoted` when it was
 * quoted, a block scalar (| or >) or tagged !!str, so it can never be an int, bool or null.
 * Mappings keep alternating key and value nodes in `kids` (n is twice the number of
 * pairs); keys are always scalars and unique (yaml.c drops and reports others). */
typedef struct spec_node spec_node_t;
struct spec_node {
    spec_node_type_t type;
    spec_mark_t at; /* start of the node, 1-based */
    char *s;        /* scalar text, NUL-terminated, owned; NULL for collections */
    bool quoted;
    spec_node_t **kids; /* owned */
    size_t n;
    size_t cap;
};

/* Called once per non-empty document with its root node (borrowed: freed after the call)
 * and the position of the document's start. */
typedef void (*spec_doc_cb_t)(void *ctx, const spec_node_t *root, spec_mark_t doc_at);

/* Parses `len` bytes of YAML (or JSON) and calls `cb` for each non-empty document, in
 * order. Syntax errors, duplicate keys, complex keys, aliases, nesting deeper than
 * SPEC_MAX_DEPTH and oversized collections are added to `diags` as errors; a syntax error
 * ends the stream (documents completed before it were delivered). `file` is borrowed and
 * must outlive the marks (callers pass a name owned by the set). */
void spec_yaml_load(const char *file, const char *buf, size_t len, spec_diags_t *diags,
                    spec_doc_cb_t cb, void *ctx);

/* Converts a node to jansson: mappings → objects, sequences → arrays; plain scalars that
 * are canonical decimal integers → integers, `true`/`false` → booleans, nulls (see
 * spec_node_is_null) → null; everything else, and every quoted scalar, → string. The
 * conversion is chosen so that re-parsing json_dumps() output gives the same resource.
 * Returns an owned reference. */
json_t *spec_node_to_json(const spec_node_t *n);

/* True for a plain scalar that YAML resolves to null: "", "~", "null", "Null", "NULL". */
bool spec_node_is_null(const spec_node_t *n);

/* In a mapping node: the key node named `key` (and its value in *val), or NULL. */
const spec_node_t *spec_node_key(const spec_node_t *map, const char *key, const spec_node_t **val);

/* "a mapping", "a list", "a string" — for type errors. */
const char *spec_node_what(const spec_node_t *n);

/* Appends one diagnostic. `at` gives file/line/col (file may be NULL); `path` and `hint`
 * may be NULL; the message is printf-formatted. Copies everything. */
void spec_diag_add(spec_diags_t *d, spec_severity_t sev, spec_mark_t at, const char *path,
                   const char *hint, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Registers `name` as a source of `set` and returns the set's copy (borrowed by marks). */
const char *spec_set_add_file(spec_set_t *set, const char *name);

/* Appends `res` to `set` (takes ownership). */
void spec_set_push(spec_set_t *set, spec_resource_t *res);

/* Frees one resource and everything it owns (defined in spec.c, table-driven). */
void spec_resource_free(spec_resource_t *res);

/* Among the NULL-terminated `cands`, the name closest to `s` by edit distance (case-
 * insensitive) when close enough to be a likely typo, else NULL. */
const char *spec_closest(const char *s, const char *const *cands);

/* True when s is a DNS label: 1..63 of [a-z0-9-], starting and ending alphanumeric. */
bool spec_is_dns_label(const char *s);

/* Allocation helpers that abort on failure. */
void *spec_xcalloc(size_t n, size_t size);
void *spec_xrealloc(void *p, size_t size);
char *spec_xstrdup(const char *s);
char *spec_xstrndup(const char *s, size_t n);

/* Engine facts used by parsing and validation (spec.c). */
bool spec_engine_version_ok(int engine, const char *version);
const char *spec_engine_versions(int engine); /* "12, 13, ..." for hints */

#endif
