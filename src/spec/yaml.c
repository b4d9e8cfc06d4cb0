/*
 * yaml.c: from bytes to a tree of spec_node_t, one document at a time, using libyaml's
 * event parser. The tree keeps 1-based positions (libyaml marks are 0-based) and the
 * distinction between plain and quoted scalars, which the JSON conversion and the typed
 * field parsers need. Building is iterative over an explicit stack capped at
 * SPEC_MAX_DEPTH; deeper collections are skipped and reported, so neither this file nor the
 * (recursive) converters below ever go deeper than that.
 *
 * Problems found here — syntax errors, duplicate or complex mapping keys, aliases, NUL
 * bytes, oversized collections — are collected as diagnostics; only a syntax error ends the
 * stream, since libyaml cannot resume after one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "spec/spec_internal.h"

/* One open collection on the builder's stack. */
typedef struct level {
    spec_node_t *node;
    spec_node_t *key; /* mapping: key waiting for its value; owned until attached */
    bool drop_value;  /* mapping: the pending value belongs to a rejected key */
    bool overflow;    /* reported "too many items" already */
} level_t;

typedef struct builder {
    const char *file;
    spec_diags_t *diags;
    level_t stack[SPEC_MAX_DEPTH];
    int depth;
    int skip; /* nesting of collections being skipped (too deep) */
    spec_mark_t skip_at;
    spec_node_t *root; /* completed root of the current document */
} builder_t;

static spec_mark_t mark_of(const builder_t *b, yaml_mark_t m)
{
    spec_mark_t at = {b->file, (int)m.line + 1, (int)m.column + 1};
    return at;
}

static void node_free(spec_node_t *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        node_free(n->kids[i]); /* bounded by SPEC_MAX_DEPTH */
    free(n->kids);
    free(n->s);
    free(n);
}

static spec_node_t *node_new(spec_node_type_t type, spec_mark_t at)
{
    spec_node_t *n = spec_xcalloc(1, sizeof(*n));
    n->type = type;
    n->at = at;
    return n;
}

static void node_push(spec_node_t *parent, spec_node_t *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kids = spec_xrealloc(parent->kids, parent->cap * sizeof(*parent->kids));
    }
    parent->kids[parent->n++] = kid;
}

/* Places a completed node into its parent (or as the document root). Takes ownership. */
static void attach(builder_t *b, spec_node_t *n)
{
    if (b->depth == 0) {
        if (b->root)
            node_free(b->root);
        b->root = n;
        return;
    }
    level_t *lv = &b->stack[b->depth - 1];
    spec_node_t *p = lv->node;
    if (p->type == SPEC_NODE_SEQ) {
        if (p->n >= SPEC_MAX_SEQ_ITEMS) {
            if (!lv->overflow)
                spec_diag_add(b->diags, SPEC_ERROR, n->at, NULL, NULL,
                              "list has more than %d items", SPEC_MAX_SEQ_ITEMS);
            lv->overflow = true;
            node_free(n);
            return;
        }
        node_push(p, n);
        return;
    }
    if (lv->key == NULL && !lv->drop_value) { /* n is a key */
        if (n->type != SPEC_NODE_SCALAR) {
            spec_diag_add(b->diags, SPEC_ERROR, n->at, NULL, NULL,
                          "mapping keys must be plain strings, not %s", spec_node_what(n));
            node_free(n);
            lv->drop_value = true;
            return;
        }
        for (size_t i = 0; i < p->n; i += 2) {
            if (strcmp(p->kids[i]->s, n->s) == 0) {
                const spec_mark_t *f = &p->kids[i]->at;
                char hint[128];
                snprintf(hint, sizeof(hint), "first set at line %d, column %d", f->line, f->col);
                spec_diag_add(b->diags, SPEC_ERROR, n->at, NULL, hint, "duplicate mapping key '%s'",
                              n->s);
                node_free(n);
                lv->drop_value = true;
                return;
            }
        }
        if (p->n / 2 >= SPEC_MAX_MAP_KEYS) {
            if (!lv->overflow)
                spec_diag_add(b->diags, SPEC_ERROR, n->at, NULL, NULL,
                              "mapping has more than %d keys", SPEC_MAX_MAP_KEYS);
            lv->overflow = true;
            node_free(n);
            lv->drop_value = true;
            return;
        }
        lv->key = n;
        return;
    }
    if (lv->drop_value) {
        node_free(n);
        lv->drop_value = false;
        return;
    }
    node_push(p, lv->key);
    node_push(p, n);
    lv->key = NULL;
}

/* Frees the stack and the root after an error or at the end of a document. */
static void builder_reset(builder_t *b)
{
    while (b->depth > 0) {
        level_t *lv = &b->stack[--b->depth];
        node_free(lv->key);
        node_free(lv->node);
    }
    node_free(b->root);
    b->root = NULL;
    b->skip = 0;
}

/* A null placeholder standing for a rejected node, so mapping pairs stay aligned. */
static spec_node_t *null_node(spec_mark_t at)
{
    spec_node_t *n = node_new(SPEC_NODE_SCALAR, at);
    n->s = spec_xstrdup("");
    return n;
}

/* Line and column (1-based) of byte `off` in buf, for reader errors that carry no mark. */
static spec_mark_t offset_mark(const char *file, const char *buf, size_t len, size_t off)
{
    spec_mark_t at = {file, 1, 1};
    for (size_t i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            at.line++;
            at.col = 1;
        } else if (((unsigned char)buf[i] & 0xC0) != 0x80) {
            at.col++;
        }
    }
    return at;
}

static void report_parser_error(builder_t *b, yaml_parser_t *p, const char *buf, size_t len)
{
    spec_mark_t at;
    if (p->error == YAML_READER_ERROR)
        at = offset_mark(b->file, buf, len, p->problem_offset);
    else
        at = mark_of(b, p->problem_mark);
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->context) {
        spec_mark_t cm = mark_of(b, p->context_mark);
        spec_diag_add(b->diags, SPEC_ERROR, at, NULL, NULL,
                      "YAML syntax error: %s (%s at line %d, column %d)", problem, p->context,
                      cm.line, cm.col);
    } else {
        spec_diag_add(b->diags, SPEC_ERROR, at, NULL, NULL, "YAML syntax error: %s", problem);
    }
}

static bool is_str_tag(const yaml_char_t *tag)
{
    return tag &&
           (strcmp((const char *)tag, YAML_STR_TAG) == 0 || strcmp((const char *)tag, "!") == 0);
}

/* Handles one event; returns false at the end of the stream. */
static bool on_event(builder_t *b, const yaml_event_t *ev, spec_doc_cb_t cb, void *ctx,
                     spec_mark_t *doc_at)
{
    spec_mark_t at = mark_of(b, ev->start_mark);
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return false;
    case YAML_DOCUMENT_START_EVENT:
        builder_reset(b);
        *doc_at = at;
        break;
    case YAML_DOCUMENT_END_EVENT: {
        spec_node_t *r = b->root;
        bool empty = !r || (r->type == SPEC_NODE_SCALAR && !r->quoted && r->s[0] == '\0');
        if (!empty)
            cb(ctx, r, *doc_at);
        builder_reset(b);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (b->skip) {
            b->skip++;
        } else if (b->depth == SPEC_MAX_DEPTH) {
            spec_diag_add(b->diags, SPEC_ERROR, at, NULL, NULL, "nesting deeper than %d levels",
                          SPEC_MAX_DEPTH);
            b->skip = 1;
            b->skip_at = at;
        } else {
            level_t *lv = &b->stack[b->depth++];
            memset(lv, 0, sizeof(*lv));
            lv->node =
                node_new(ev->type == YAML_MAPPING_START_EVENT ? SPEC_NODE_MAP : SPEC_NODE_SEQ, at);
        }
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->skip) {
            if (--b->skip == 0)
                attach(b, null_node(b->skip_at));
        } else if (b->depth > 0) {
            level_t *lv = &b->stack[--b->depth];
            spec_node_t *n = lv->node;
            node_free(lv->key); /* only set if libyaml ended a mapping after a key */
            attach(b, n);
        }
        break;
    case YAML_SCALAR_EVENT: {
        if (b->skip)
            break;
        spec_node_t *n = node_new(SPEC_NODE_SCALAR, at);
        n->s = spec_xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->quoted = !ev->data.scalar.plain_implicit || is_str_tag(ev->data.scalar.tag);
        if (strlen(n->s) != ev->data.scalar.length)
            spec_diag_add(b->diags, SPEC_ERROR, at, NULL, NULL, "string contains a NUL character");
        attach(b, n);
        break;
    }
    case YAML_ALIAS_EVENT:
        if (b->skip)
            break;
        spec_diag_add(b->diags, SPEC_ERROR, at, NULL, "write the value out in full",
                      "YAML aliases (*%s) are not supported", (const char *)ev->data.alias.anchor);
        attach(b, null_node(at));
        break;
    default:
        break;
    }
    return true;
}

void spec_yaml_load(const char *file, const char *buf, size_t len, spec_diags_t *diags,
                    spec_doc_cb_t cb, void *ctx)
{
    yaml_parser_t parser;
    builder_t b;
    memset(&b, 0, sizeof(b));
    b.file = file;
    b.diags = diags;
    spec_mark_t doc_at = {file, 1, 1};
    if (!yaml_parser_initialize(&parser)) {
        spec_diag_add(diags, SPEC_ERROR, doc_at, NULL, NULL, "cannot initialise YAML parser");
        return;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            report_parser_error(&b, &parser, buf, len);
            break;
        }
        bool more = on_event(&b, &ev, cb, ctx, &doc_at);
        yaml_event_delete(&ev);
        if (!more)
            break;
    }
    builder_reset(&b);
    yaml_parser_delete(&parser);
}

/* --- node helpers ---------------------------------------------------------------------- */

bool spec_node_is_null(const spec_node_t *n)
{
    if (!n || n->type != SPEC_NODE_SCALAR || n->quoted)
        return false;
    const char *s = n->s;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

const spec_node_t *spec_node_key(const spec_node_t *map, const char *key, const spec_node_t **val)
{
    if (!map || map->type != SPEC_NODE_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        if (strcmp(map->kids[i]->s, key) == 0) {
            if (val)
                *val = map->kids[i + 1];
            return map->kids[i];
        }
    }
    return NULL;
}

const char *spec_node_what(const spec_node_t *n)
{
    if (!n)
        return "nothing";
    switch (n->type) {
    case SPEC_NODE_MAP:
        return "a mapping";
    case SPEC_NODE_SEQ:
        return "a list";
    default:
        return spec_node_is_null(n) ? "null" : "a string";
    }
}

/* A decimal integer in canonical form ("0", "42", "-7"; not "+7", "007" or "-0") that fits
 * in int64. Only canonical text becomes a JSON integer, so that converting back to text
 * (json_dumps, then re-parsing) reproduces the original scalar exactly. */
static bool plain_int(const char *s, json_int_t *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p || (p[0] == '0' && (p[1] || p != s)))
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = (json_int_t)v;
    return true;
}

json_t *spec_node_to_json(const spec_node_t *n)
{
    switch (n->type) {
    case SPEC_NODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i + 1 < n->n; i += 2)
            json_object_set_new(o, n->kids[i]->s, spec_node_to_json(n->kids[i + 1]));
        return o;
    }
    case SPEC_NODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++)
            json_array_append_new(a, spec_node_to_json(n->kids[i]));
        return a;
    }
    default:
        break;
    }
    if (!n->quoted) {
        const char *s = n->s;
        json_int_t iv;
        if (spec_node_is_null(n))
            return json_null();
        if (!strcmp(s, "true"))
            return json_true();
        if (!strcmp(s, "false"))
            return json_false();
        if (plain_int(s, &iv))
            return json_integer(iv);
    }
    json_t *str = json_string(n->s);
    return str ? str : json_string(""); /* libyaml only yields valid UTF-8 */
}
