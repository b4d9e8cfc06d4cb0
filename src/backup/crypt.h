/*
 * crypt.h: client-side encryption of backup artifacts, AES-256-GCM in independent
 * chunks so a stream of any size is encrypted and decrypted with bounded memory.
 *
 * Format (all integers big-endian):
 *
 *   header  (32 bytes): magic "DBPBKE1\n" | chunk_size u32 | flags u32 (0) | salt[16]
 *   chunk   (n times):  len u32 | nonce[12] | ciphertext[len & 0x7fffffff] | tag[16]
 *
 * The top bit of a chunk's len marks the final chunk; every stream has exactly one, as
 * its last chunk (it may be empty), so truncation is detected. Each chunk has a fresh
 * random 96-bit nonce and is authenticated with the associated data
 * header[32] | chunk index u64 | final u8, so chunks cannot be reordered, dropped,
 * repeated or moved to another file. The key is HKDF-SHA-256(ikm = the Secret's value,
 * salt = header salt, info = "dbplane backup v1"): every file has its own key.
 * OpenSSL EVP does the cryptography.
 */
#ifndef DBP_BACKUP_CRYPT_H
#define DBP_BACKUP_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define BACKUP_CRYPT_HEADER 32
#define BACKUP_CRYPT_CHUNK_OVERHEAD (4 + 12 + 16) /* len + nonce + tag */
#define BACKUP_CRYPT_DEFAULT_CHUNK (1024u * 1024)
#define BACKUP_CRYPT_MAX_CHUNK (16u * 1024 * 1024)
#define BACKUP_CRYPT_FINAL 0x80000000u

typedef struct backup_crypt backup_crypt_t;

/* Starts encrypting: derives a key from `secret` (len bytes, borrowed, at least 16) and
 * a random salt, writes the 32-byte header into `header`. chunk_size 0 = 1 MiB. Returns
 * owned *out (free with backup_crypt_free), DBP_EINVAL (weak secret, bad size) or
 * DBP_ECRYPTO. */
int backup_crypt_enc_init(backup_crypt_t **out, const void *secret, size_t len, size_t chunk_size,
                          uint8_t header[BACKUP_CRYPT_HEADER], dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Encrypts one chunk of n (<= chunk_size) plaintext bytes into out, which must hold
 * n + BACKUP_CRYPT_CHUNK_OVERHEAD bytes; *outlen receives the chunk's length. `final`
 * marks the last chunk (no chunk may follow it). */
int backup_crypt_seal(backup_crypt_t *c, const uint8_t *pt, size_t n, bool final, uint8_t *out,
                      size_t *outlen, dbp_err_t *err) __attribute__((warn_unused_result));

/* Starts decrypting the stream whose header is `header`: checks the magic and chunk size
 * and derives the key. DBP_EINVAL for a header that is not ours, DBP_ECRYPTO on failure. */
int backup_crypt_dec_init(backup_crypt_t **out, const void *secret, size_t len,
                          const uint8_t header[BACKUP_CRYPT_HEADER], dbp_err_t *err)
    __attribute__((warn_unused_result));

/* The total length of the chunk whose first 4 bytes are `lenbuf`, or 0 when its
 * declared size exceeds the stream's chunk size (corrupt). */
size_t backup_crypt_chunk_total(const backup_crypt_t *c, const uint8_t lenbuf[4]);

/* The chunk size of the stream (plaintext bytes per chunk). */
size_t backup_crypt_chunk_size(const backup_crypt_t *c);

/* Decrypts and authenticates one whole chunk (in, inlen bytes as announced by
 * backup_crypt_chunk_total) into out (chunk_size bytes); *outlen and *final receive the
 * plaintext length and the final flag. DBP_ECRYPTO when authentication fails (wrong key,
 * modified, reordered or misplaced chunk) or when a chunk follows the final one. */
int backup_crypt_open(backup_crypt_t *c, const uint8_t *in, size_t inlen, uint8_t *out,
                      size_t *outlen, bool *final, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* True once the final chunk was sealed or opened. */
bool backup_crypt_done(const backup_crypt_t *c);

/* Wipes the key and frees; NULL is a no-op. */
void backup_crypt_free(backup_crypt_t *c);

#endif
