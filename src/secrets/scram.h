/*
 * scram.h: SCRAM-SHA-256 stored verifiers (RFC 5802, RFC 7677), in PostgreSQL's text form
 * "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" (base64 fields). Used to
 * check whether a server's stored verifier matches a password without ever sending the
 * password again, and by the proxy to authenticate clients from stored verifiers.
 * Passwords are taken as-is (no SASLprep): dbplane generates ASCII passwords, and
 * PostgreSQL also uses the raw bytes when SASLprep fails.
 */
#ifndef DBP_SECRETS_SCRAM_H
#define DBP_SECRETS_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The parts of a parsed verifier (binary keys, 32 bytes each). */
typedef struct secrets_scram_verifier {
    int iterations;
    uint8_t salt[64];
    size_t salt_len;
    uint8_t stored_key[32];
    uint8_t server_key[32];
} secrets_scram_verifier_t;

/* Parses the text form; false when malformed. */
bool secrets_scram_parse(const char *text, secrets_scram_verifier_t *out);

/* True when `password` derives the verifier's StoredKey and ServerKey
 * (SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)). Constant-time
 * comparison. False for a malformed verifier. */
bool secrets_scram_check(const char *verifier_text, const char *password);

#endif
