/*
 * crypt.c: chunked AES-256-GCM for backup streams (see crypt.h for the format).
 */
#include "backup/crypt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

static const uint8_t MAGIC[8] = {'D', 'B', 'P', 'B', 'K', 'E', '1', '\n'};
static const char HKDF_INFO[] = "dbplane backup v1";

struct backup_crypt {
    uint8_t key[32];
    uint8_t header[BACKUP_CRYPT_HEADER];
    size_t chunk_size;
    uint64_t index; /* next chunk */
    bool done;      /* the final chunk has been sealed/opened */
    EVP_CIPHER_CTX *ctx;
};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* HKDF-SHA-256 of the secret with the header's salt into c->key. */
static int derive(backup_crypt_t *c, const void *secret, size_t len, dbp_err_t *err)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t klen = sizeof(c->key);
    bool ok = pctx && EVP_PKEY_derive_init(pctx) > 0 &&
              EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) > 0 &&
              EVP_PKEY_CTX_set1_hkdf_salt(pctx, c->header + 16, 16) > 0 &&
              EVP_PKEY_CTX_set1_hkdf_key(pctx, secret, (int)len) > 0 &&
              EVP_PKEY_CTX_add1_hkdf_info(pctx, (const unsigned char *)HKDF_INFO,
                                          (int)(sizeof(HKDF_INFO) - 1)) > 0 &&
              EVP_PKEY_derive(pctx, c->key, &klen) > 0 && klen == sizeof(c->key);
    EVP_PKEY_CTX_free(pctx);
    return ok ? 0 : dbp_err_set(err, DBP_ECRYPTO, "backup encryption: key derivation failed");
}

static int crypt_new(backup_crypt_t **out, dbp_err_t *err)
{
    backup_crypt_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->ctx = EVP_CIPHER_CTX_new())) {
        free(c);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    *out = c;
    return 0;
}

int backup_crypt_enc_init(backup_crypt_t **out, const void *secret, size_t len, size_t chunk_size,
                          uint8_t header[BACKUP_CRYPT_HEADER], dbp_err_t *err)
{
    *out = NULL;
    if (len < 16)
        return dbp_err_set(err, DBP_EINVAL,
                           "backup encryption key is too short (%zu bytes; at least 16)", len);
    if (chunk_size == 0)
        chunk_size = BACKUP_CRYPT_DEFAULT_CHUNK;
    if (chunk_size > BACKUP_CRYPT_MAX_CHUNK)
        return dbp_err_set(err, DBP_EINVAL, "chunk size %zu too large", chunk_size);
    backup_crypt_t *c;
    int rc = crypt_new(&c, err);
    if (rc)
        return rc;
    memcpy(c->header, MAGIC, 8);
    put32(c->header + 8, (uint32_t)chunk_size);
    put32(c->header + 12, 0);
    if (RAND_bytes(c->header + 16, 16) != 1) {
        backup_crypt_free(c);
        return dbp_err_set(err, DBP_ECRYPTO, "backup encryption: no randomness");
    }
    c->chunk_size = chunk_size;
    if ((rc = derive(c, secret, len, err))) {
        backup_crypt_free(c);
        return rc;
    }
    memcpy(header, c->header, BACKUP_CRYPT_HEADER);
    *out = c;
    return 0;
}

int backup_crypt_dec_init(backup_crypt_t **out, const void *secret, size_t len,
                          const uint8_t header[BACKUP_CRYPT_HEADER], dbp_err_t *err)
{
    *out = NULL;
    if (memcmp(header, MAGIC, 8) != 0)
        return dbp_err_set(err, DBP_EINVAL, "not an encrypted dbplane backup (bad magic)");
    uint32_t cs = get32(header + 8);
    if (cs == 0 || cs > BACKUP_CRYPT_MAX_CHUNK || get32(header + 12) != 0)
        return dbp_err_set(err, DBP_EINVAL, "encrypted backup header is corrupt");
    backup_crypt_t *c;
    int rc = crypt_new(&c, err);
    if (rc)
        return rc;
    memcpy(c->header, header, BACKUP_CRYPT_HEADER);
    c->chunk_size = cs;
    if ((rc = derive(c, secret, len, err))) {
        backup_crypt_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The associated data of chunk `index`. */
static void chunk_aad(const backup_crypt_t *c, uint64_t index, bool final, uint8_t aad[41])
{
    memcpy(aad, c->header, BACKUP_CRYPT_HEADER);
    for (int i = 0; i < 8; i++)
        aad[32 + i] = (uint8_t)(index >> (56 - 8 * i));
    aad[40] = final ? 1 : 0;
}

int backup_crypt_seal(backup_crypt_t *c, const uint8_t *pt, size_t n, bool final, uint8_t *out,
                      size_t *outlen, dbp_err_t *err)
{
    if (c->done)
        return dbp_err_set(err, DBP_EINVAL, "backup encryption: chunk after the final one");
    if (n > c->chunk_size)
        return dbp_err_set(err, DBP_EINVAL, "backup encryption: chunk of %zu bytes too large", n);
    uint8_t *nonce = out + 4, *ct = out + 16, *tag = out + 16 + n;
    if (RAND_bytes(nonce, 12) != 1)
        return dbp_err_set(err, DBP_ECRYPTO, "backup encryption: no randomness");
    put32(out, (uint32_t)n | (final ? BACKUP_CRYPT_FINAL : 0));
    uint8_t aad[41];
    chunk_aad(c, c->index, final, aad);
    int l = 0;
    bool ok = EVP_EncryptInit_ex(c->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
              EVP_EncryptInit_ex(c->ctx, NULL, NULL, c->key, nonce) == 1 &&
              EVP_EncryptUpdate(c->ctx, NULL, &l, aad, (int)sizeof(aad)) == 1 &&
              (n == 0 || EVP_EncryptUpdate(c->ctx, ct, &l, pt, (int)n) == 1) &&
              EVP_EncryptFinal_ex(c->ctx, ct + (n ? (size_t)l : 0), &l) == 1 &&
              EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    if (!ok)
        return dbp_err_set(err, DBP_ECRYPTO, "backup encryption failed");
    c->index++;
    c->done = final;
    *outlen = n + BACKUP_CRYPT_CHUNK_OVERHEAD;
    return 0;
}

size_t backup_crypt_chunk_total(const backup_crypt_t *c, const uint8_t lenbuf[4])
{
    uint32_t n = get32(lenbuf) & ~BACKUP_CRYPT_FINAL;
    if (n > c->chunk_size)
        return 0;
    return (size_t)n + BACKUP_CRYPT_CHUNK_OVERHEAD;
}

size_t backup_crypt_chunk_size(const backup_crypt_t *c)
{
    return c->chunk_size;
}

int backup_crypt_open(backup_crypt_t *c, const uint8_t *in, size_t inlen, uint8_t *out,
                      size_t *outlen, bool *final, dbp_err_t *err)
{
    if (c->done)
        return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: data after the final chunk");
    if (inlen < BACKUP_CRYPT_CHUNK_OVERHEAD || backup_crypt_chunk_total(c, in) != inlen)
        return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: chunk %llu is corrupt",
                           (unsigned long long)c->index);
    uint32_t raw = get32(in);
    bool fin = (raw & BACKUP_CRYPT_FINAL) != 0;
    size_t n = raw & ~BACKUP_CRYPT_FINAL;
    const uint8_t *nonce = in + 4, *ct = in + 16;
    uint8_t tag[16];
    memcpy(tag, in + 16 + n, 16);
    uint8_t aad[41];
    chunk_aad(c, c->index, fin, aad);
    int l = 0;
    bool ok = EVP_DecryptInit_ex(c->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
              EVP_DecryptInit_ex(c->ctx, NULL, NULL, c->key, nonce) == 1 &&
              EVP_DecryptUpdate(c->ctx, NULL, &l, aad, (int)sizeof(aad)) == 1 &&
              (n == 0 || EVP_DecryptUpdate(c->ctx, out, &l, ct, (int)n) == 1) &&
              EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
              EVP_DecryptFinal_ex(c->ctx, out + (n ? (size_t)l : 0), &l) == 1;
    if (!ok) {
        OPENSSL_cleanse(out, n);
        return dbp_err_set(err, DBP_ECRYPTO,
                           "encrypted backup: chunk %llu failed authentication (wrong key or "
                           "modified data)",
                           (unsigned long long)c->index);
    }
    c->index++;
    c->done = fin;
    *outlen = n;
    *final = fin;
    return 0;
}

bool backup_crypt_done(const backup_crypt_t *c)
{
    return c->done;
}

void backup_crypt_free(backup_crypt_t *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->ctx);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c);
}
