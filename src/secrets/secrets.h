/*
 * secrets.h: the encrypted secret store. Values are sealed with AES-256-GCM (OpenSSL EVP)
 * under a 32-byte master key kept in a file of mode 0600 (created with random bytes on
 * first use), and only the ciphertext reaches SQLite. The associated data binds each
 * value to its (tenant, secret, key) so a blob copied to another row fails to decrypt.
 * Values are never logged, never put in argv, and are wiped from memory when freed.
 */
#ifndef DBP_SECRETS_SECRETS_H
#define DBP_SECRETS_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "spec/spec.h"
#include "store/store.h"

typedef struct secrets secrets_t;

/* Loads the master key from `key_path`, creating it (0600, 32 random bytes) when absent;
 * refuses a key file readable by group or others or of the wrong size. `store` is borrowed
 * and must outlive the handle. Returns owned *out (free with secrets_close); DBP_ECRYPTO
 * for a refused key file (the message says why and how to fix it), DBP_EIO when it cannot
 * be read or created. The file is created atomically (temp file + link), so concurrent
 * first opens agree on one key. */
int secrets_open(secrets_t **out, const char *key_path, store_t *store, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Wipes the key and frees the handle; NULL is a no-op. */
void secrets_close(secrets_t *sec);

/* Encrypts and stores `value` (NUL-terminated, at most 1 MiB) as tenant/secret/key,
 * replacing any value. Blob: version 1 | 12-byte random nonce | ciphertext | 16-byte tag,
 * AAD "tenant\0secret\0key". Borrows every argument. */
int secrets_put(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                const char *value, dbp_err_t *err) __attribute__((warn_unused_result));

/* Reads and decrypts a value: returns owned *value (free with secrets_free_value).
 * DBP_ENOENT when absent, DBP_ECRYPTO when the blob fails authentication. */
int secrets_get(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                char **value, dbp_err_t *err) __attribute__((warn_unused_result));

/* Returns the stored value, or generates one of `length` characters from [A-Za-z0-9]
 * (OpenSSL RAND_bytes, rejection sampling), stores it and returns it; *created (may be
 * NULL) tells which. Returns owned *value (free with secrets_free_value). `length` (1..4096,
 * else DBP_EINVAL) only matters when generating. Read and write happen in one store
 * transaction (joining the caller's if one is open), so concurrent callers get one value.
 * A stored value that fails authentication is DBP_ECRYPTO, never silently replaced. */
int secrets_ensure(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                   size_t length, char **value, bool *created, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Brings a declared Secret resource's values into the store: stringData values are written
 * when they differ from the stored one; generate keys are created once (generate.length
 * characters, 32 when unset or 0) and then kept. *changed (may be NULL) counts the keys
 * written. All keys or none: it runs in one store transaction (or inside the caller's, which
 * the caller then rolls back on error); a stored value failing authentication stops it with
 * DBP_ECRYPTO. Keys no longer declared are left alone. DBP_EINVAL for a non-Secret. Logs
 * key names only. `res` is borrowed. */
int secrets_apply(secrets_t *sec, const spec_resource_t *res, int *changed, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Stored resources never hold Secret values: stringData values are replaced by a keyed
 * fingerprint "hmac-sha256:<32 hex>" (HMAC-SHA-256 under the master key over tenant,
 * secret, key and value, truncated to 128 bits). secrets_apply on such a resource only
 * checks that the stored value still matches its fingerprint. */
#define SECRETS_REDACTED_PREFIX "hmac-sha256:"
#define SECRETS_REDACTED_LEN 48 /* prefix + 32 hex digits + NUL fits */

/* True when `value` is a fingerprint, not a value. */
bool secrets_is_redacted(const char *value);

/* Writes the fingerprint of `value` (borrowed) for tenant/secret/key into out. */
void secrets_fingerprint(const secrets_t *sec, const char *tenant, const char *secret,
                         const char *key, const char *value, char out[SECRETS_REDACTED_LEN]);

/* A deep copy of res->json with every Secret stringData value replaced by its
 * fingerprint (other kinds: a plain copy). Returns owned JSON (json_decref), NULL when out
 * of memory. Apply the values with secrets_apply before storing this. */
json_t *secrets_redact_json(const secrets_t *sec, const spec_resource_t *res);

/* Zeroes and frees a value returned by this module; NULL is a no-op. */
void secrets_free_value(char *value);

/* Fills `out` with `len` random characters from [A-Za-z0-9] and a NUL (out has len+1
 * bytes). Returns 0 or DBP_ECRYPTO. */
int secrets_random_password(char *out, size_t len) __attribute__((warn_unused_result));

#endif
