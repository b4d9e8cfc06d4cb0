/*
 * scram.c: SCRAM-SHA-256 verifier parsing and checking with OpenSSL (see scram.h).
 */
#include "secrets/scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* Decodes standard base64 `in` (len bytes) into out (cap bytes); returns the decoded
 * length or -1. */
static int b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || (len / 4) * 3 > cap + 2)
        return -1;
    uint8_t tmp[128];
    if ((len / 4) * 3 > sizeof(tmp))
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (in[len - 1] == '=')
        n--;
    if (in[len - 2] == '=')
        n--;
    if ((size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

bool secrets_scram_parse(const char *text, secrets_scram_verifier_t *out)
{
    static const char prefix[] = "SCRAM-SHA-256$";
    if (!text || strncmp(text, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *p = text + sizeof(prefix) - 1;
    char *end;
    long it = strtol(p, &end, 10);
    if (end == p || *end != ':' || it < 1 || it > 10000000)
        return false;
    out->iterations = (int)it;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return false;
    int n = b64_decode(salt, (size_t)(dollar - salt), out->salt, sizeof(out->salt));
    if (n <= 0)
        return false;
    out->salt_len = (size_t)n;
    const char *sk = dollar + 1;
    const char *colon = strchr(sk, ':');
    if (!colon)
        return false;
    if (b64_decode(sk, (size_t)(colon - sk), out->stored_key, 32) != 32)
        return false;
    const char *svk = colon + 1;
    if (b64_decode(svk, strlen(svk), out->server_key, 32) != 32)
        return false;
    return true;
}

bool secrets_scram_check(const char *verifier_text, const char *password)
{
    secrets_scram_verifier_t v;
    if (!secrets_scram_parse(verifier_text, &v))
        return false;
    uint8_t salted[32], client_key[32], stored_key[32], server_key[32];
    unsigned int len = 0;
    bool ok = false;
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), v.salt, (int)v.salt_len, v.iterations,
                          EVP_sha256(), sizeof(salted), salted) != 1)
        goto out;
    if (!HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Client Key", 10,
              client_key, &len) ||
        len != 32)
        goto out;
    SHA256(client_key, sizeof(client_key), stored_key);
    if (!HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Server Key", 10,
              server_key, &len) ||
        len != 32)
        goto out;
    ok = CRYPTO_memcmp(stored_key, v.stored_key, 32) == 0 &&
         CRYPTO_memcmp(server_key, v.server_key, 32) == 0;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return ok;
}
