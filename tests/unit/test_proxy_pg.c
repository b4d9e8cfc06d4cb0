/*
 * test_proxy_pg.c: unit tests of the proxy's pure protocol code — src/proxy/pg.c (the
 * PostgreSQL 3.0 parsers and builders) and src/proxy/pgauth.c (SCRAM-SHA-256, MD5). The
 * parser tests are tables of byte strings with the expected result (consumed length,
 * PG_NEED_MORE or an error), including truncated, oversized and malformed messages, and
 * every truncation of the valid ones. SCRAM is checked against RFC 7677's test vector on
 * both sides, and the stmt.c tables against a few thousand inserts and deletes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/pg.h"
#include "proxy/pgauth.h"
#include "proxy/proxy_int.h"

/* A byte string written as a C literal, with explicit length (may contain NULs). */
typedef struct bytes {
    const char *p;
    size_t n;
} bytes_t;
#define B(lit) {lit, sizeof(lit) - 1}

/* ---- start-up packets ---- */

typedef struct startup_case {
    const char *name;
    bytes_t in;
    ssize_t want;            /* consumed, PG_NEED_MORE or PG_E* */
    pg_startup_kind_t kind;
    const char *user, *db;
} startup_case_t;

static const startup_case_t startup_cases[] = {
    {"startup", B("\0\0\0\x22\0\x03\0\0user\0alice\0database\0shop\0\0"), 34, PG_STARTUP_MESSAGE,
     "alice", "shop"},
    {"startup db defaults to user", B("\0\0\0\x12\0\x03\0\0user\0bob\0\0"), 18, PG_STARTUP_MESSAGE,
     "bob", "bob"},
    {"ssl request", B("\0\0\0\x08\x04\xd2\x16\x2f"), 8, PG_STARTUP_SSL, NULL, NULL},
    {"gssenc request", B("\0\0\0\x08\x04\xd2\x16\x30"), 8, PG_STARTUP_GSSENC, NULL, NULL},
    {"cancel request", B("\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\0\0\0\x09"), 16, PG_STARTUP_CANCEL,
     NULL, NULL},
    {"length below 8", B("\0\0\0\x04\0\x03\0\0"), PG_EMALFORMED, 0, NULL, NULL},
    {"length above limit", B("\0\x01\0\0\0\x03\0\0"), PG_ETOOBIG, 0, NULL, NULL},
    {"length 2^31", B("\x80\0\0\0\0\x03\0\0"), PG_ETOOBIG, 0, NULL, NULL},
    {"protocol 2.0", B("\0\0\0\x08\0\x02\0\0"), PG_EUNSUPPORTED, 0, NULL, NULL},
    {"unterminated", B("\0\0\0\x0d\0\x03\0\0user\0"), PG_EMALFORMED, 0, NULL, NULL},
    {"name without value", B("\0\0\0\x0e\0\x03\0\0user\0\0"), PG_EMALFORMED, 0, NULL, NULL},
    {"no user", B("\0\0\0\x0a\0\x03\0\0\0\0"), PG_EMALFORMED, 0, NULL, NULL},
    {"trailing bytes", B("\0\0\0\x13\0\x03\0\0user\0bob\0\0X"), PG_EMALFORMED, 0, NULL, NULL},
    {"ssl request of wrong length", B("\0\0\0\x0c\x04\xd2\x16\x2f\0\0\0\0"), PG_EMALFORMED, 0, NULL,
     NULL},
    {"cancel of wrong length", B("\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\0"), PG_EMALFORMED, 0, NULL, NULL},
    {"only 3 bytes", B("\0\0\0"), PG_NEED_MORE, 0, NULL, NULL},
    {"header only", B("\0\0\0\x14\0\x03\0\0"), PG_NEED_MORE, 0, NULL, NULL},
};

static void test_startup_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(startup_cases) / sizeof(startup_cases[0]); i++) {
        const startup_case_t *tc = &startup_cases[i];
        pg_startup_t st;
        ssize_t r = pg_parse_startup((const uint8_t *)tc->in.p, tc->in.n, &st);
        if (r != tc->want)
            fail_msg("case '%s': got %zd (%s), want %zd", tc->name, r, st.err ? st.err : "", tc->want);
        if (r > 0) {
            assert_int_equal(st.kind, tc->kind);
            if (tc->user) {
                assert_true(pg_view_eq(st.user, tc->user));
                assert_true(pg_view_eq(st.database, tc->db));
            }
            /* Every strict prefix of a valid packet asks for more. */
            for (size_t k = 0; k < tc->in.n; k++) {
                ssize_t rk = pg_parse_startup((const uint8_t *)tc->in.p, k, &st);
                if (rk != PG_NEED_MORE)
                    fail_msg("case '%s' prefix %zu: got %zd", tc->name, k, rk);
            }
        }
    }
}

static void test_startup_cancel_fields(void **state)
{
    (void)state;
    pg_startup_t st;
    const uint8_t p[] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0x01, 0, 0, 0x2a, 0xde, 0xad, 0xbe, 0xef};
    assert_int_equal(pg_parse_startup(p, sizeof(p), &st), 16);
    assert_int_equal(st.cancel_pid, 0x0100002a);
    assert_int_equal(st.cancel_key, 0xdeadbeef);
}

static void test_startup_too_many_params(void **state)
{
    (void)state;
    uint8_t buf[2048];
    pg_wbuf_t w;
    pg_wbuf_init(&w, buf, sizeof(buf));
    pg_w_begin(&w, 0);
    pg_w_u32(&w, PG_PROTO_V3);
    for (int i = 0; i < PG_MAX_STARTUP_PARAMS + 1; i++) {
        char n[16];
        snprintf(n, sizeof(n), "p%d", i);
        pg_w_str(&w, i == 0 ? "user" : n);
        pg_w_str(&w, "v");
    }
    pg_w_u8(&w, 0);
    pg_w_end(&w);
    assert_false(w.failed);
    pg_startup_t st;
    assert_int_equal(pg_parse_startup(buf, w.len, &st), PG_ETOOBIG);
}

/* ---- regular messages ---- */

typedef struct hdr_case {
    const char *name;
    bytes_t in;
    uint32_t max;
    ssize_t want;
    bool whole;
} hdr_case_t;

static const hdr_case_t hdr_cases[] = {
    {"query whole", B("Q\0\0\0\x0dselect 1\0"), PG_MAX_MSG_LEN, 5, true},
    {"query partial body", B("Q\0\0\0\x0dsel"), PG_MAX_MSG_LEN, 5, false},
    {"4 bytes", B("Q\0\0\0"), PG_MAX_MSG_LEN, PG_NEED_MORE, false},
    {"empty", B(""), PG_MAX_MSG_LEN, PG_NEED_MORE, false},
    {"length 3", B("Q\0\0\0\x03"), PG_MAX_MSG_LEN, PG_EMALFORMED, false},
    {"length 0", B("S\0\0\0\0"), PG_MAX_MSG_LEN, PG_EMALFORMED, false},
    {"length 2^31+", B("Q\x80\0\0\0"), PG_MAX_MSG_LEN, PG_ETOOBIG, false},
    {"over caller limit", B("p\0\0\x40\x01"), 16384, PG_ETOOBIG, false},
    {"sync", B("S\0\0\0\x04"), PG_MAX_MSG_LEN, 5, true},
};

static void test_header_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
        const hdr_case_t *tc = &hdr_cases[i];
        pg_msg_t m;
        ssize_t r = pg_msg_header((const uint8_t *)tc->in.p, tc->in.n, tc->max, &m);
        if (r != tc->want)
            fail_msg("case '%s': got %zd want %zd", tc->name, r, tc->want);
        if (r > 0 && ((m.body != NULL) != tc->whole))
            fail_msg("case '%s': body presence wrong", tc->name);
    }
}

static void test_frontend_types(void **state)
{
    (void)state;
    const char *ok = "BCDEFHPQSXcdfp";
    for (int t = 0; t < 256; t++)
        assert_int_equal(pg_frontend_type_valid((char)t), t != 0 && strchr(ok, t) != NULL);
}

static void test_parse_msg(void **state)
{
    (void)state;
    pg_parse_msg_t pm;
    const char ok[] = "s1\0select $1\0\0\x01\0\0\0\x17";
    assert_int_equal(pg_parse_parse((const uint8_t *)ok, sizeof(ok) - 1, &pm), (ssize_t)sizeof(ok) - 1);
    assert_true(pg_view_eq(pm.name, "s1"));
    assert_true(pg_view_eq(pm.query, "select $1"));
    assert_int_equal(pm.nparams, 1);
    assert_int_equal(pm.rest.len, sizeof(ok) - 1 - 3);
    const bytes_t bad[] = {
        B("s1"),                                /* no NUL */
        B("s1\0select 1"),                      /* query unterminated */
        B("s1\0select 1\0\0"),                  /* count truncated */
        B("s1\0select 1\0\0\x02\0\0\0\x17"),    /* 2 params announced, 1 present */
        B("s1\0select 1\0\0\0\0"),              /* trailing */
        B(""),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(pg_parse_parse((const uint8_t *)bad[i].p, bad[i].n, &pm), PG_EMALFORMED);
}

static void test_bind_names(void **state)
{
    (void)state;
    pg_view_t portal, stmt;
    const char b[] = "\0stmt_a\0\0\0\0\0\0\0";
    assert_int_equal(pg_parse_bind_names((const uint8_t *)b, sizeof(b) - 1, 64, &portal, &stmt), 8);
    assert_int_equal(portal.len, 0);
    assert_true(pg_view_eq(stmt, "stmt_a"));
    assert_int_equal(pg_parse_bind_names((const uint8_t *)b, 4, 64, &portal, &stmt), PG_NEED_MORE);
    assert_int_equal(pg_parse_bind_names((const uint8_t *)b, 0, 64, &portal, &stmt), PG_NEED_MORE);
    char longname[200];
    memset(longname, 'x', sizeof(longname));
    assert_int_equal(pg_parse_bind_names((const uint8_t *)longname, sizeof(longname), 64, &portal,
                                         &stmt),
                     PG_EMALFORMED);
}

static void test_small_messages(void **state)
{
    (void)state;
    char kind;
    pg_view_t name, value;
    assert_int_equal(pg_parse_target((const uint8_t *)"Sabc\0", 5, &kind, &name), 5);
    assert_int_equal(kind, 'S');
    assert_true(pg_view_eq(name, "abc"));
    assert_int_equal(pg_parse_target((const uint8_t *)"Xabc\0", 5, &kind, &name), PG_EMALFORMED);
    assert_int_equal(pg_parse_target((const uint8_t *)"Sabc", 4, &kind, &name), PG_EMALFORMED);
    assert_int_equal(pg_parse_target((const uint8_t *)"", 0, &kind, &name), PG_EMALFORMED);
    assert_int_equal(pg_parse_param_status((const uint8_t *)"TimeZone\0UTC\0", 13, &name, &value), 13);
    assert_true(pg_view_eq(value, "UTC"));
    assert_int_equal(pg_parse_param_status((const uint8_t *)"TimeZone\0UTC", 12, &name, &value),
                     PG_EMALFORMED);
    assert_int_equal(pg_parse_param_status((const uint8_t *)"\0x\0", 3, &name, &value), PG_EMALFORMED);
    char st;
    assert_int_equal(pg_parse_ready((const uint8_t *)"T", 1, &st), 1);
    assert_int_equal(st, 'T');
    assert_int_equal(pg_parse_ready((const uint8_t *)"X", 1, &st), PG_EMALFORMED);
    assert_int_equal(pg_parse_ready((const uint8_t *)"II", 2, &st), PG_EMALFORMED);
    uint32_t pid, key;
    assert_int_equal(pg_parse_backend_key((const uint8_t *)"\0\0\0\x01\0\0\0\x02", 8, &pid, &key), 8);
    assert_int_equal(pid, 1);
    assert_int_equal(key, 2);
    assert_int_equal(pg_parse_backend_key((const uint8_t *)"\0\0\0\x01", 4, &pid, &key), PG_EMALFORMED);
}

static void test_auth_messages(void **state)
{
    (void)state;
    pg_auth_t a;
    const char sasl[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
    assert_int_equal(pg_parse_auth((const uint8_t *)sasl, sizeof(sasl) - 1, &a), (ssize_t)sizeof(sasl) - 1);
    assert_int_equal(a.code, PG_AUTH_SASL);
    assert_true(a.scram_offered);
    const char plus_only[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0\0";
    assert_true(pg_parse_auth((const uint8_t *)plus_only, sizeof(plus_only) - 1, &a) > 0);
    assert_false(a.scram_offered);
    assert_int_equal(pg_parse_auth((const uint8_t *)"\0\0\0\x0aSCRAM", 9, &a), PG_EMALFORMED);
    assert_int_equal(pg_parse_auth((const uint8_t *)"\0\0\0\x05\1\2\3", 7, &a), PG_EMALFORMED);
    assert_int_equal(pg_parse_auth((const uint8_t *)"\0\0\0\x05\1\2\3\4", 8, &a), 8);
    assert_int_equal(pg_parse_auth((const uint8_t *)"\0\0", 2, &a), PG_EMALFORMED);
    pg_view_t mech, data;
    const char init[] = "SCRAM-SHA-256\0\0\0\0\x03" "abc";
    assert_int_equal(pg_parse_sasl_initial((const uint8_t *)init, sizeof(init) - 1, &mech, &data),
                     (ssize_t)sizeof(init) - 1);
    assert_true(pg_view_eq(data, "abc"));
    const char lie[] = "SCRAM-SHA-256\0\0\0\0\x09" "abc";
    assert_int_equal(pg_parse_sasl_initial((const uint8_t *)lie, sizeof(lie) - 1, &mech, &data),
                     PG_EMALFORMED);
    const char huge[] = "SCRAM-SHA-256\0\x7f\xff\xff\xff" "abc";
    assert_int_equal(pg_parse_sasl_initial((const uint8_t *)huge, sizeof(huge) - 1, &mech, &data),
                     PG_EMALFORMED);
}

static void test_error_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[256];
    pg_wbuf_t w;
    pg_wbuf_init(&w, buf, sizeof(buf));
    pg_w_error(&w, "FATAL", "08P01", "invalid message");
    assert_false(w.failed);
    pg_msg_t m;
    assert_int_equal(pg_msg_header(buf, w.len, PG_MAX_MSG_LEN, &m), 5);
    assert_int_equal(m.type, 'E');
    assert_int_equal(m.total, w.len);
    pg_error_t e;
    assert_true(pg_parse_error(m.body, m.len - 4, &e) > 0);
    assert_true(pg_view_eq(e.sqlstate, "08P01"));
    assert_true(pg_view_eq(e.message, "invalid message"));
    assert_true(pg_view_eq(e.severity, "FATAL"));
    /* A server ErrorResponse without SQLSTATE parses; the field stays empty. */
    assert_true(pg_parse_error((const uint8_t *)"Mboom\0\0", 7, &e) > 0);
    assert_int_equal(e.sqlstate.len, 0);
    assert_int_equal(pg_parse_error((const uint8_t *)"Mboom\0", 6, &e), PG_EMALFORMED);
    /* Builders fail (sticky) instead of overflowing. */
    pg_wbuf_init(&w, buf, 8);
    pg_w_error(&w, "FATAL", "08P01", "too long for 8 bytes");
    assert_true(w.failed);
    pg_w_u8(&w, 1);
    assert_true(w.failed);
}

static void test_sql_literal(void **state)
{
    (void)state;
    struct { const char *in, *want; } cases[] = {
        {"UTC", "'UTC'"}, {"it's", "'it''s'"}, {"a\\b", "E'a\\\\b'"}, {"", "''"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[64];
        pg_wbuf_t w;
        pg_wbuf_init(&w, buf, sizeof(buf));
        pg_w_sql_literal(&w, cases[i].in, strlen(cases[i].in));
        assert_false(w.failed);
        assert_int_equal(w.len, strlen(cases[i].want));
        assert_memory_equal(buf, cases[i].want, w.len);
    }
}

/* ---- SCRAM: RFC 7677 section 3 ---- */

#define V_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define V_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define V_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define V_SFIRST "r=" V_CNONCE V_SNONCE ",s=" V_SALT ",i=4096"
#define V_CFINAL "c=biws,r=" V_CNONCE V_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define V_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void test_scram_rfc7677_server(void **state)
{
    (void)state;
    uint8_t salt[64];
    int sl = pgauth_b64_decode(V_SALT, strlen(V_SALT), salt, sizeof(salt));
    assert_int_equal(sl, 16);
    pgauth_scram_keys_t keys;
    assert_int_equal(pgauth_scram_make_keys("pencil", 6, salt, (size_t)sl, 4096, &keys), 0);
    pgauth_scram_server_t st;
    char out[PGAUTH_MSG_MAX];
    const char *cfirst = "n,,n=user,r=" V_CNONCE;
    int n = pgauth_scram_server_first(&st, &keys, cfirst, strlen(cfirst), V_SNONCE, out, sizeof(out));
    assert_int_equal(n, (int)strlen(V_SFIRST));
    assert_memory_equal(out, V_SFIRST, (size_t)n);
    n = pgauth_scram_server_final(&st, &keys, V_CFINAL, strlen(V_CFINAL), out, sizeof(out));
    assert_int_equal(n, (int)strlen(V_SFINAL));
    assert_memory_equal(out, V_SFINAL, (size_t)n);
    /* A wrong proof (one flipped base64 digit) is an authentication failure, not a crash. */
    char bad[] = V_CFINAL;
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
    n = pgauth_scram_server_first(&st, &keys, cfirst, strlen(cfirst), V_SNONCE, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal(pgauth_scram_server_final(&st, &keys, bad, strlen(bad), out, sizeof(out)), -2);
    /* Channel binding requested: refused. Nonce mismatch: refused. */
    assert_int_equal(pgauth_scram_server_first(&st, &keys, "p=tls-server-end-point,,n=,r=abc", 32,
                                               V_SNONCE, out, sizeof(out)),
                     -1);
    n = pgauth_scram_server_first(&st, &keys, cfirst, strlen(cfirst), V_SNONCE, out, sizeof(out));
    const char *wrong_nonce = "c=biws,r=xyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_int_equal(pgauth_scram_server_final(&st, &keys, wrong_nonce, strlen(wrong_nonce), out,
                                               sizeof(out)),
                     -1);
}

/* A stored verifier in pg_authid form gives the same keys as the password (RFC 7677's salt,
 * 4096 iterations), and malformed ones are refused. */
static void test_scram_parse_verifier(void **state)
{
    (void)state;
    uint8_t salt[64];
    int sl = pgauth_b64_decode(V_SALT, strlen(V_SALT), salt, sizeof(salt));
    pgauth_scram_keys_t want, got;
    assert_int_equal(pgauth_scram_make_keys("pencil", 6, salt, (size_t)sl, 4096, &want), 0);
    char sk[64], svk[64], v[256];
    assert_true(pgauth_b64_encode(want.stored_key, 32, sk, sizeof(sk)) > 0);
    assert_true(pgauth_b64_encode(want.server_key, 32, svk, sizeof(svk)) > 0);
    snprintf(v, sizeof(v), "SCRAM-SHA-256$4096:%s$%s:%s", V_SALT, sk, svk);
    assert_int_equal(pgauth_scram_parse_verifier(v, strlen(v), &got), 0);
    assert_int_equal(got.iterations, 4096);
    assert_int_equal(got.salt_len, (size_t)sl);
    assert_memory_equal(got.salt, want.salt, (size_t)sl);
    assert_memory_equal(got.stored_key, want.stored_key, 32);
    assert_memory_equal(got.server_key, want.server_key, 32);
    const char *bad[] = {"md5abc", "SCRAM-SHA-256$0:" V_SALT "$a:b", "SCRAM-SHA-256$4096:" V_SALT,
                         "SCRAM-SHA-256$4096:" V_SALT "$AAAA:AAAA", "SCRAM-SHA-256$999999999:x$y:z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(pgauth_scram_parse_verifier(bad[i], strlen(bad[i]), &got), -1);
    /* A verifier cut anywhere is refused, never read past its length. */
    for (size_t n = 0; n < strlen(v); n++)
        assert_int_equal(pgauth_scram_parse_verifier(v, n, &got), -1);
}

static void test_scram_rfc7677_client(void **state)
{
    (void)state;
    pgauth_scram_client_t st;
    char out[PGAUTH_MSG_MAX];
    assert_true(pgauth_scram_client_first(&st, V_CNONCE, out, sizeof(out)) > 0);
    /* The RFC's client sends n=user; PostgreSQL clients send n= (the name is in the
     * start-up packet). Replay the RFC exactly by setting the bare message it used. */
    strcpy(st.client_first_bare, "n=user,r=" V_CNONCE);
    st.cfb_len = strlen(st.client_first_bare);
    uint8_t salt[64];
    size_t sl;
    int iter;
    assert_int_equal(pgauth_scram_parse_server_first(&st, V_SFIRST, strlen(V_SFIRST), salt, &sl, &iter), 0);
    assert_int_equal(iter, 4096);
    uint8_t salted[32];
    assert_int_equal(pgauth_scram_salted("pencil", 6, salt, sl, iter, salted), 0);
    int n = pgauth_scram_client_final(&st, salted, V_SFIRST, strlen(V_SFIRST), out, sizeof(out));
    assert_int_equal(n, (int)strlen(V_CFINAL));
    assert_memory_equal(out, V_CFINAL, (size_t)n);
    assert_true(pgauth_scram_client_check_final(&st, V_SFINAL, strlen(V_SFINAL)));
    assert_false(pgauth_scram_client_check_final(&st, "e=invalid-proof", 15));
    /* Malicious servers: nonce not extending ours, huge iteration count, bad salt. */
    const char *bad[] = {
        "r=someoneelse,s=" V_SALT ",i=4096",
        "r=" V_CNONCE "x,s=" V_SALT ",i=99999999",
        "r=" V_CNONCE "x,s=" V_SALT ",i=0",
        "r=" V_CNONCE "x,s=@@@@,i=4096",
        "r=" V_CNONCE ",s=" V_SALT ",i=4096",
        "garbage",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(pgauth_scram_parse_server_first(&st, bad[i], strlen(bad[i]), salt, &sl, &iter), -1);
}

static void test_md5(void **state)
{
    (void)state;
    /* md5(md5("secret" "alice") hex || salt 01020304) */
    char out[36];
    const uint8_t salt[4] = {1, 2, 3, 4};
    pgauth_md5_response("alice", "secret", salt, out);
    assert_int_equal(strlen(out), 35);
    assert_memory_equal(out, "md5", 3);
    char again[36];
    pgauth_md5_response("alice", "secret", salt, again);
    assert_string_equal(out, again);
    const uint8_t salt2[4] = {1, 2, 3, 5};
    pgauth_md5_response("alice", "secret", salt2, again);
    assert_string_not_equal(out, again);
}

/* ---- stmt.c tables ---- */

static void test_stmt_tables(void **state)
{
    (void)state;
    px_stmt_reg_t reg = {0};
    px_smap_t cmap = {0}, sset = {0};
    char name[32], body[64];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2000; i++) {
            snprintf(name, sizeof(name), "s%d", i);
            int bl = snprintf(body, sizeof(body), "select %d", i % 500) + 1;
            px_stmt_t *st = px_stmt_get(&reg, (const uint8_t *)body, (size_t)bl);
            assert_non_null(st);
            assert_int_equal(px_smap_put_name(&cmap, &reg, name, strlen(name), st), 0);
            assert_int_equal(px_smap_add(&sset, st), 0);
        }
        assert_int_equal(reg.count, 500);
        for (int i = 0; i < 2000; i += 2) {
            snprintf(name, sizeof(name), "s%d", i);
            px_stmt_t *st = px_smap_find_name(&cmap, name, strlen(name));
            assert_non_null(st);
            assert_true(px_smap_has(&sset, st));
            px_smap_del_name(&cmap, &reg, name, strlen(name));
            assert_null(px_smap_find_name(&cmap, name, strlen(name)));
        }
        assert_int_equal(cmap.count, 1000);
        px_smap_clear(&cmap, &reg);
        px_smap_clear(&sset, &reg);
        assert_int_equal(reg.count, 0);
    }
    px_stmt_reg_free(&reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_table),
        cmocka_unit_test(test_startup_cancel_fields),
        cmocka_unit_test(test_startup_too_many_params),
        cmocka_unit_test(test_header_table),
        cmocka_unit_test(test_frontend_types),
        cmocka_unit_test(test_parse_msg),
        cmocka_unit_test(test_bind_names),
        cmocka_unit_test(test_small_messages),
        cmocka_unit_test(test_auth_messages),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_sql_literal),
        cmocka_unit_test(test_scram_rfc7677_server),
        cmocka_unit_test(test_scram_rfc7677_client),
        cmocka_unit_test(test_scram_parse_verifier),
        cmocka_unit_test(test_md5),
        cmocka_unit_test(test_stmt_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
