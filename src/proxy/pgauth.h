/*
 * pgauth.h: SCRAM-SHA-256 (RFC 5802, RFC 7677) for both sides of the proxy, plus
 * PostgreSQL's MD5 password hash. Pure functions over caller-owned state: no sockets, no
 * allocation, randomness passed in (so RFC 7677's test vector can be replayed).
 *
 * Client side of the proxy (we are the SCRAM server): the verifier (salt, iterations,
 * StoredKey, ServerKey) is computed once per user and password at configuration time
 * (pgauth_scram_make_keys) or parsed from a stored one (pgauth_scram_parse_verifier), so a
 * login costs two HMACs and one SHA-256. Server side (we are
 * the SCRAM client towards PostgreSQL): the caller caches SaltedPassword per (user, salt,
 * iterations) and hands it in, so PBKDF2 runs once per pool, not once per connection.
 * No channel binding is offered (we never advertise SCRAM-SHA-256-PLUS); the GS2 header
 * "y,," is accepted as RFC 5802 requires of a server that does not offer it.
 */
#ifndef DBP_PROXY_PGAUTH_H
#define DBP_PROXY_PGAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGAUTH_SCRAM_ITERATIONS 4096 /* for verifiers we generate (PostgreSQL's default) */
#define PGAUTH_MAX_ITERATIONS 100000 /* refuse servers asking for more (CPU exhaustion) */
#define PGAUTH_MAX_SALT 64           /* decoded salt bytes */
#define PGAUTH_NONCE_MAX 256         /* nonce characters accepted from a peer */
#define PGAUTH_MSG_MAX 640           /* client-first-bare / server-first text we keep */

/* A SCRAM verifier: what a server keeps instead of the password. */
typedef struct pgauth_scram_keys {
    int iterations;
    uint8_t salt[PGAUTH_MAX_SALT];
    size_t salt_len;
    uint8_t stored_key[32]; /* H(ClientKey) */
    uint8_t server_key[32]; /* HMAC(SaltedPassword, "Server Key") */
} pgauth_scram_keys_t;

/* SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations) into salted[32]. The
 * password is used as given (no SASLprep, like PostgreSQL when SASLprep fails). Returns 0
 * or -1 when OpenSSL fails or iterations is out of 1..PGAUTH_MAX_ITERATIONS. */
int pgauth_scram_salted(const char *password, size_t pwlen, const uint8_t *salt,
                        size_t salt_len, int iterations, uint8_t salted[32])
    __attribute__((warn_unused_result));

/* Fills keys from a password, salt and iteration count (one PBKDF2). Returns 0 or -1. */
int pgauth_scram_make_keys(const char *password, size_t pwlen, const uint8_t *salt,
                           size_t salt_len, int iterations, pgauth_scram_keys_t *keys)
    __attribute__((warn_unused_result));

/* Fills keys from a stored verifier in PostgreSQL's pg_authid form,
 * "SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>" (len
 * bytes, not NUL-terminated). No PBKDF2 runs. Returns 0, or -1 when the text is malformed, a
 * key is not 32 bytes, the salt is empty or longer than PGAUTH_MAX_SALT, or iterations is
 * outside 1..PGAUTH_MAX_ITERATIONS. */
int pgauth_scram_parse_verifier(const char *v, size_t len, pgauth_scram_keys_t *keys)
    __attribute__((warn_unused_result));

/* State of one SCRAM exchange where the proxy is the server (authenticating a client). */
typedef struct pgauth_scram_server {
    char client_first_bare[PGAUTH_MSG_MAX];
    size_t cfb_len;
    char server_first[PGAUTH_MSG_MAX];
    size_t sf_len;
    char nonce[2 * PGAUTH_NONCE_MAX + 2]; /* client nonce + server nonce */
    size_t nonce_len;
    const char *err; /* static description of the last failure */
} pgauth_scram_server_t;

/* Step 1: parses client-first-message (`data`, from SASLInitialResponse) and writes the
 * server-first-message "r=<cnonce><snonce>,s=<salt>,i=<n>" into out (cap bytes, no NUL).
 * `snonce` is the server's printable nonce (caller-generated, e.g. 24 base64 chars).
 * Returns the length written, or -1 (st->err says why: channel binding requested,
 * malformed message, oversized nonce). */
int pgauth_scram_server_first(pgauth_scram_server_t *st, const pgauth_scram_keys_t *keys,
                              const char *data, size_t len, const char *snonce,
                              char *out, size_t cap) __attribute__((warn_unused_result));

/* Step 2: parses client-final-message, checks channel binding "biws"/"eSws", the nonce and
 * the proof against keys->stored_key (constant time), and writes the server-final-message
 * "v=<ServerSignature>" into out. Returns its length, or -1 for a malformed message
 * (st->err), or -2 when the proof is wrong (authentication failed). */
int pgauth_scram_server_final(pgauth_scram_server_t *st, const pgauth_scram_keys_t *keys,
                              const char *data, size_t len, char *out, size_t cap)
    __attribute__((warn_unused_result));

/* State of one SCRAM exchange where the proxy is the client (logging in to a server). */
typedef struct pgauth_scram_client {
    char client_first_bare[PGAUTH_MSG_MAX];
    size_t cfb_len;
    char cnonce[64];
    uint8_t server_signature[32];
    const char *err;
} pgauth_scram_client_t;

/* Step 1: writes client-first-message "n,,n=,r=<cnonce>" (the user name is taken from the
 * start-up packet by PostgreSQL, so it is left empty as libpq does). Returns its length or -1. */
int pgauth_scram_client_first(pgauth_scram_client_t *st, const char *cnonce, char *out,
                              size_t cap) __attribute__((warn_unused_result));

/* Parses server-first-message: the combined nonce must extend ours; salt is base64 of at
 * most PGAUTH_MAX_SALT bytes; iterations 1..PGAUTH_MAX_ITERATIONS. Returns 0 or -1 (st->err). */
int pgauth_scram_parse_server_first(pgauth_scram_client_t *st, const char *data, size_t len,
                                    uint8_t *salt, size_t *salt_len, int *iterations)
    __attribute__((warn_unused_result));

/* Step 2: with SaltedPassword for the server's salt and iterations, writes
 * client-final-message "c=biws,r=<nonce>,p=<proof>" and remembers the expected server
 * signature. `server_first` is the server's step-1 text. Returns its length or -1. */
int pgauth_scram_client_final(pgauth_scram_client_t *st, const uint8_t salted[32],
                              const char *server_first, size_t sf_len, char *out, size_t cap)
    __attribute__((warn_unused_result));

/* Step 3: checks server-final-message "v=<signature>" (constant time). False on "e=..."
 * or a wrong signature. */
bool pgauth_scram_client_check_final(pgauth_scram_client_t *st, const char *data, size_t len);

/* PostgreSQL MD5 response: "md5" + hex(md5(hex(md5(password || user)) || salt)), 35 chars
 * plus NUL into out[36]. */
void pgauth_md5_response(const char *user, const char *password, const uint8_t salt[4],
                         char out[36]);

/* Standard base64 of n bytes into out (cap bytes incl. NUL). Returns the length or -1. */
int pgauth_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/* Decodes standard base64 (with padding) into out. Returns the byte count or -1. */
int pgauth_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
