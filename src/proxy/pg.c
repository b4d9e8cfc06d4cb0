/*
 * pg.c: PostgreSQL protocol 3.0 parsers and builders (see pg.h). Every read goes through a
 * bounded cursor, so a parser can be handed any bytes at all — that is what the fuzz
 * target does. Big-endian integers are assembled byte by byte; nothing is aligned.
 */
#include "proxy/pg.h"

#include <string.h>

const char *pg_status_str(ssize_t rc)
{
    if (rc > 0)
        return "ok";
    switch (rc) {
    case PG_NEED_MORE: return "need_more";
    case PG_EMALFORMED: return "malformed";
    case PG_ETOOBIG: return "too_big";
    case PG_EUNSUPPORTED: return "unsupported";
    default: return "unknown";
    }
}

bool pg_view_eq(pg_view_t v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && (n == 0 || memcmp(v.p, s, n) == 0);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* A bounded cursor over a message body. */
typedef struct cur {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
} cur_t;

/* Reads a NUL-terminated string; marks the cursor bad when there is no NUL. */
static pg_view_t cur_str(cur_t *c)
{
    pg_view_t v = {0};
    if (c->bad)
        return v;
    const uint8_t *start = c->p + c->pos;
    const uint8_t *nul = memchr(start, 0, c->len - c->pos);
    if (!nul) {
        c->bad = true;
        return v;
    }
    v.p = (const char *)start;
    v.len = (size_t)(nul - start);
    c->pos += v.len + 1;
    return v;
}

static uint32_t cur_u32(cur_t *c)
{
    if (c->bad || c->len - c->pos < 4) {
        c->bad = true;
        return 0;
    }
    uint32_t v = rd32(c->p + c->pos);
    c->pos += 4;
    return v;
}

static uint16_t cur_u16(cur_t *c)
{
    if (c->bad || c->len - c->pos < 2) {
        c->bad = true;
        return 0;
    }
    uint16_t v = rd16(c->p + c->pos);
    c->pos += 2;
    return v;
}

static uint8_t cur_u8(cur_t *c)
{
    if (c->bad || c->len - c->pos < 1) {
        c->bad = true;
        return 0;
    }
    return c->p[c->pos++];
}

ssize_t pg_parse_startup(const uint8_t *buf, size_t len, pg_startup_t *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 4)
        return PG_NEED_MORE;
    uint32_t plen = rd32(buf);
    if (plen < 8) {
        out->err = "invalid length of startup packet";
        return PG_EMALFORMED;
    }
    if (plen > PG_MAX_STARTUP_LEN) {
        out->err = "startup packet too large";
        return PG_ETOOBIG;
    }
    if (len < plen)
        return PG_NEED_MORE;
    uint32_t code = rd32(buf + 4);
    if (code == PG_CODE_SSL || code == PG_CODE_GSSENC) {
        if (plen != 8) {
            out->err = "invalid length of SSL/GSSENC request";
            return PG_EMALFORMED;
        }
        out->kind = code == PG_CODE_SSL ? PG_STARTUP_SSL : PG_STARTUP_GSSENC;
        return 8;
    }
    if (code == PG_CODE_CANCEL) {
        if (plen != 16) {
            out->err = "invalid length of cancel request";
            return PG_EMALFORMED;
        }
        out->kind = PG_STARTUP_CANCEL;
        out->cancel_pid = rd32(buf + 8);
        out->cancel_key = rd32(buf + 12);
        return 16;
    }
    if ((code >> 16) != 3) {
        out->err = "unsupported frontend protocol";
        return PG_EUNSUPPORTED;
    }
    out->kind = PG_STARTUP_MESSAGE;
    out->version = code;
    cur_t c = {buf + 8, plen - 8, 0, false};
    for (;;) {
        pg_view_t name = cur_str(&c);
        if (c.bad) {
            out->err = "startup packet not terminated";
            return PG_EMALFORMED;
        }
        if (name.len == 0)
            break;
        pg_view_t value = cur_str(&c);
        if (c.bad) {
            out->err = "startup parameter without value";
            return PG_EMALFORMED;
        }
        if (out->nparams == PG_MAX_STARTUP_PARAMS) {
            out->err = "too many startup parameters";
            return PG_ETOOBIG;
        }
        out->names[out->nparams] = name;
        out->values[out->nparams] = value;
        out->nparams++;
        if (pg_view_eq(name, "user"))
            out->user = value;
        else if (pg_view_eq(name, "database"))
            out->database = value;
    }
    if (c.pos != c.len) {
        out->err = "trailing bytes in startup packet";
        return PG_EMALFORMED;
    }
    if (out->user.len == 0) {
        out->err = "no PostgreSQL user name specified in startup packet";
        return PG_EMALFORMED;
    }
    if (out->database.len == 0)
        out->database = out->user;
    return plen;
}

ssize_t pg_msg_header(const uint8_t *buf, size_t len, uint32_t max_len, pg_msg_t *out)
{
    out->body = NULL;
    out->err = NULL;
    if (len < 5)
        return PG_NEED_MORE;
    out->type = (char)buf[0];
    out->len = rd32(buf + 1);
    out->total = (size_t)out->len + 1;
    if (out->len < 4) {
        out->err = "invalid message length";
        return PG_EMALFORMED;
    }
    if (out->len > max_len) {
        out->err = "message too large";
        return PG_ETOOBIG;
    }
    if (len >= out->total)
        out->body = buf + 5;
    return 5;
}

bool pg_frontend_type_valid(char type)
{
    switch (type) {
    case 'B': case 'C': case 'D': case 'E': case 'F': case 'H': case 'P':
    case 'Q': case 'S': case 'X': case 'c': case 'd': case 'f': case 'p':
        return true;
    default:
        return false;
    }
}

ssize_t pg_parse_parse(const uint8_t *body, size_t len, pg_parse_msg_t *out)
{
    memset(out, 0, sizeof(*out));
    cur_t c = {body, len, 0, false};
    out->name = cur_str(&c);
    size_t rest_at = c.pos;
    out->query = cur_str(&c);
    out->nparams = cur_u16(&c);
    if (c.bad || (size_t)out->nparams * 4 != len - c.pos) {
        out->err = "invalid Parse message";
        return PG_EMALFORMED;
    }
    out->param_types = body + c.pos;
    out->rest.p = (const char *)body + rest_at;
    out->rest.len = len - rest_at;
    return (ssize_t)len;
}

ssize_t pg_parse_bind_names(const uint8_t *body, size_t len, size_t max_name,
                            pg_view_t *portal, pg_view_t *stmt)
{
    const uint8_t *nul1 = memchr(body, 0, len < max_name + 1 ? len : max_name + 1);
    if (!nul1)
        return len > max_name ? PG_EMALFORMED : PG_NEED_MORE;
    size_t off = (size_t)(nul1 - body) + 1;
    size_t left = len - off;
    const uint8_t *nul2 = memchr(body + off, 0, left < max_name + 1 ? left : max_name + 1);
    if (!nul2)
        return left > max_name ? PG_EMALFORMED : PG_NEED_MORE;
    portal->p = (const char *)body;
    portal->len = off - 1;
    stmt->p = (const char *)body + off;
    stmt->len = (size_t)(nul2 - (body + off));
    return (ssize_t)(off + stmt->len + 1);
}

ssize_t pg_parse_target(const uint8_t *body, size_t len, char *kind, pg_view_t *name)
{
    cur_t c = {body, len, 0, false};
    *kind = (char)cur_u8(&c);
    *name = cur_str(&c);
    if (c.bad || c.pos != len || (*kind != 'S' && *kind != 'P'))
        return PG_EMALFORMED;
    return (ssize_t)len;
}

ssize_t pg_parse_param_status(const uint8_t *body, size_t len, pg_view_t *name,
                              pg_view_t *value)
{
    cur_t c = {body, len, 0, false};
    *name = cur_str(&c);
    *value = cur_str(&c);
    if (c.bad || c.pos != len || name->len == 0)
        return PG_EMALFORMED;
    return (ssize_t)len;
}

ssize_t pg_parse_ready(const uint8_t *body, size_t len, char *status)
{
    if (len != 1 || (body[0] != 'I' && body[0] != 'T' && body[0] != 'E'))
        return PG_EMALFORMED;
    *status = (char)body[0];
    return 1;
}

ssize_t pg_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    if (len != 8)
        return PG_EMALFORMED;
    *pid = rd32(body);
    *key = rd32(body + 4);
    return 8;
}

ssize_t pg_parse_auth(const uint8_t *body, size_t len, pg_auth_t *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 4)
        return PG_EMALFORMED;
    out->code = rd32(body);
    out->data.p = (const char *)body + 4;
    out->data.len = len - 4;
    switch (out->code) {
    case PG_AUTH_OK:
    case PG_AUTH_CLEARTEXT:
        if (len != 4)
            return PG_EMALFORMED;
        break;
    case PG_AUTH_MD5:
        if (len != 8)
            return PG_EMALFORMED;
        break;
    case PG_AUTH_SASL: {
        cur_t c = {body + 4, len - 4, 0, false};
        for (;;) {
            pg_view_t m = cur_str(&c);
            if (c.bad)
                return PG_EMALFORMED;
            if (m.len == 0)
                break;
            if (pg_view_eq(m, "SCRAM-SHA-256"))
                out->scram_offered = true;
        }
        if (c.pos != c.len)
            return PG_EMALFORMED;
        break;
    }
    case PG_AUTH_SASL_CONTINUE:
    case PG_AUTH_SASL_FINAL:
        break;
    default:
        break; /* the caller refuses codes it does not implement */
    }
    return (ssize_t)len;
}

ssize_t pg_parse_sasl_initial(const uint8_t *body, size_t len, pg_view_t *mech,
                              pg_view_t *data)
{
    cur_t c = {body, len, 0, false};
    *mech = cur_str(&c);
    uint32_t n = cur_u32(&c);
    if (c.bad)
        return PG_EMALFORMED;
    if (n == 0xffffffffu) {
        data->p = NULL;
        data->len = 0;
        if (c.pos != len)
            return PG_EMALFORMED;
        return (ssize_t)len;
    }
    if (n != len - c.pos)
        return PG_EMALFORMED;
    data->p = (const char *)body + c.pos;
    data->len = n;
    return (ssize_t)len;
}

ssize_t pg_parse_error(const uint8_t *body, size_t len, pg_error_t *out)
{
    memset(out, 0, sizeof(*out));
    cur_t c = {body, len, 0, false};
    for (;;) {
        uint8_t code = cur_u8(&c);
        if (c.bad)
            return PG_EMALFORMED;
        if (code == 0)
            break;
        pg_view_t v = cur_str(&c);
        if (c.bad)
            return PG_EMALFORMED;
        if (code == 'S' && out->severity.len == 0)
            out->severity = v;
        else if (code == 'V')
            out->severity = v;
        else if (code == 'C')
            out->sqlstate = v;
        else if (code == 'M')
            out->message = v;
    }
    if (c.pos != len)
        return PG_EMALFORMED;
    return (ssize_t)len;
}

/* ---- builders ---- */

void pg_wbuf_init(pg_wbuf_t *w, uint8_t *buf, size_t cap)
{
    w->p = buf;
    w->len = 0;
    w->cap = cap;
    w->msg_start = 0;
    w->failed = false;
}

static bool w_room(pg_wbuf_t *w, size_t n)
{
    if (w->failed || w->cap - w->len < n) {
        w->failed = true;
        return false;
    }
    return true;
}

void pg_w_begin(pg_wbuf_t *w, char type)
{
    w->msg_start = w->len;
    if (type)
        pg_w_u8(w, (uint8_t)type);
    pg_w_u32(w, 0);
}

void pg_w_u8(pg_wbuf_t *w, uint8_t v)
{
    if (w_room(w, 1))
        w->p[w->len++] = v;
}

void pg_w_u16(pg_wbuf_t *w, uint16_t v)
{
    if (!w_room(w, 2))
        return;
    w->p[w->len++] = (uint8_t)(v >> 8);
    w->p[w->len++] = (uint8_t)v;
}

void pg_w_u32(pg_wbuf_t *w, uint32_t v)
{
    if (!w_room(w, 4))
        return;
    w->p[w->len++] = (uint8_t)(v >> 24);
    w->p[w->len++] = (uint8_t)(v >> 16);
    w->p[w->len++] = (uint8_t)(v >> 8);
    w->p[w->len++] = (uint8_t)v;
}

void pg_w_bytes(pg_wbuf_t *w, const void *p, size_t n)
{
    if (n && w_room(w, n)) {
        memcpy(w->p + w->len, p, n);
        w->len += n;
    }
}

void pg_w_str(pg_wbuf_t *w, const char *s)
{
    pg_w_bytes(w, s, strlen(s) + 1);
}

void pg_w_view(pg_wbuf_t *w, pg_view_t v)
{
    pg_w_bytes(w, v.p, v.len);
    pg_w_u8(w, 0);
}

void pg_w_end(pg_wbuf_t *w)
{
    if (w->failed)
        return;
    size_t at = w->msg_start;
    /* Typed messages start with a non-zero type byte; start-up packets with the length,
     * whose placeholder's first byte is 0. */
    size_t lenpos = w->p[at] != 0 ? at + 1 : at;
    uint32_t n = (uint32_t)(w->len - lenpos);
    w->p[lenpos] = (uint8_t)(n >> 24);
    w->p[lenpos + 1] = (uint8_t)(n >> 16);
    w->p[lenpos + 2] = (uint8_t)(n >> 8);
    w->p[lenpos + 3] = (uint8_t)n;
}

void pg_w_error(pg_wbuf_t *w, const char *severity, const char *sqlstate, const char *msg)
{
    pg_w_begin(w, 'E');
    pg_w_u8(w, 'S');
    pg_w_str(w, severity);
    pg_w_u8(w, 'V');
    pg_w_str(w, severity);
    pg_w_u8(w, 'C');
    pg_w_str(w, sqlstate);
    pg_w_u8(w, 'M');
    pg_w_str(w, msg);
    pg_w_u8(w, 0);
    pg_w_end(w);
}

void pg_w_param_status(pg_wbuf_t *w, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    pg_w_begin(w, 'S');
    pg_w_bytes(w, name, nlen);
    pg_w_u8(w, 0);
    pg_w_bytes(w, value, vlen);
    pg_w_u8(w, 0);
    pg_w_end(w);
}

void pg_w_ready(pg_wbuf_t *w, char status)
{
    pg_w_begin(w, 'Z');
    pg_w_u8(w, (uint8_t)status);
    pg_w_end(w);
}

void pg_w_auth(pg_wbuf_t *w, uint32_t code, const void *data, size_t n)
{
    pg_w_begin(w, 'R');
    pg_w_u32(w, code);
    pg_w_bytes(w, data, n);
    pg_w_end(w);
}

void pg_w_query(pg_wbuf_t *w, const char *sql, size_t n)
{
    pg_w_begin(w, 'Q');
    pg_w_bytes(w, sql, n);
    pg_w_u8(w, 0);
    pg_w_end(w);
}

void pg_w_sql_literal(pg_wbuf_t *w, const char *s, size_t n)
{
    bool backslash = memchr(s, '\\', n) != NULL;
    if (backslash)
        pg_w_u8(w, 'E');
    pg_w_u8(w, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'' || s[i] == '\\')
            pg_w_u8(w, (uint8_t)s[i]);
        pg_w_u8(w, (uint8_t)s[i]);
    }
    pg_w_u8(w, '\'');
}
