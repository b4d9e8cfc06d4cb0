/*
 * fuzz_pg.c: libFuzzer target for the proxy's PostgreSQL protocol parsers (src/proxy/pg.c)
 * and SCRAM message parsing (src/proxy/pgauth.c) — everything that reads bytes from a
 * client or a server before either is trusted. The input is read three ways: as a
 * start-up packet, as a stream of regular messages (each whole one handed to the parser
 * of its type, both frontend and backend meanings), and as SCRAM client/server text. Any
 * crash, leak or sanitizer report is a bug; errors are the expected outcome.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxy/pg.h"
#include "proxy/pgauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_message(const pg_msg_t *m)
{
    const uint8_t *b = m->body;
    size_t n = m->len - 4;
    pg_parse_msg_t pm;
    pg_view_t v1, v2;
    pg_auth_t a;
    pg_error_t e;
    char c;
    uint32_t x, y;
    switch (m->type) {
    case 'P': (void)pg_parse_parse(b, n, &pm); break;
    case 'B': (void)pg_parse_bind_names(b, n, 1024, &v1, &v2); break;
    case 'D': case 'C': (void)pg_parse_target(b, n, &c, &v1); break;
    case 'S': (void)pg_parse_param_status(b, n, &v1, &v2); break;
    case 'Z': (void)pg_parse_ready(b, n, &c); break;
    case 'K': (void)pg_parse_backend_key(b, n, &x, &y); break;
    case 'R':
        if (pg_parse_auth(b, n, &a) > 0 && (a.code == PG_AUTH_SASL_CONTINUE)) {
            pgauth_scram_client_t st;
            char out[PGAUTH_MSG_MAX];
            uint8_t salt[PGAUTH_MAX_SALT];
            size_t sl;
            int it;
            if (pgauth_scram_client_first(&st, "fuzznonce", out, sizeof(out)) > 0 &&
                pgauth_scram_parse_server_first(&st, a.data.p, a.data.len, salt, &sl, &it) == 0) {
                uint8_t salted[32] = {0};
                (void)pgauth_scram_client_final(&st, salted, a.data.p, a.data.len, out, sizeof(out));
            }
        }
        break;
    case 'p': (void)pg_parse_sasl_initial(b, n, &v1, &v2); break;
    case 'E': case 'N': (void)pg_parse_error(b, n, &e); break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pg_startup_t st;
    ssize_t r = pg_parse_startup(data, size, &st);
    size_t off = r > 0 ? (size_t)r : 0;
    for (int guard = 0; guard < 100000 && off < size; guard++) {
        pg_msg_t m;
        ssize_t h = pg_msg_header(data + off, size - off, PG_MAX_MSG_LEN, &m);
        if (h <= 0 || !m.body)
            break;
        one_message(&m);
        off += m.total;
    }
    /* SCRAM server side over the raw input split at the first newline. */
    static const uint8_t salt[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static pgauth_scram_keys_t keys;
    static int have_keys;
    if (!have_keys)
        have_keys = pgauth_scram_make_keys("pw", 2, salt, sizeof(salt), 16, &keys) == 0;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t first = nl ? (size_t)(nl - data) : size;
    pgauth_scram_server_t ss;
    char out[PGAUTH_MSG_MAX];
    if (have_keys && pgauth_scram_server_first(&ss, &keys, (const char *)data, first, "snonce", out,
                                               sizeof(out)) > 0 && nl)
        (void)pgauth_scram_server_final(&ss, &keys, (const char *)nl + 1, size - first - 1, out,
                                        sizeof(out));
    /* Stored verifier text (configuration input), bounded by its length. */
    pgauth_scram_keys_t vk;
    (void)!pgauth_scram_parse_verifier((const char *)data, size, &vk);
    return 0;
}
