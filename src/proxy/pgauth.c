/*
 * pgauth.c: SCRAM-SHA-256 exchanges and the MD5 password hash (see pgauth.h), with
 * OpenSSL's PBKDF2, HMAC and SHA-256. Every parse of peer text is bounded by its length
 * argument; messages are never assumed NUL-terminated.
 */
#include "proxy/pgauth.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

int pgauth_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    size_t need = 4 * ((n + 2) / 3) + 1;
    if (need > cap || n > 4096)
        return -1;
    int k = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return k < 0 ? -1 : k;
}

int pgauth_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0 || len > 1024)
        return -1;
    uint8_t tmp[768];
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (in[len - 1] == '=')
        n--;
    if (in[len - 2] == '=')
        n--;
    if (n < 0 || (size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

/* SHA-256 with an algorithm fetched once: OpenSSL 3's one-shot SHA256() and HMAC() look the
 * algorithm up in the provider at every call (EVP_Q_digest, EVP_Q_mac: about half of the
 * ~100k instructions of a client login measured with callgrind, docs/proxy.md). */
static EVP_MD *g_sha256;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* out = SHA-256(a || b) on ctx (reset here). Returns 0 or -1. */
static int sha256_2(EVP_MD_CTX *ctx, const void *a, size_t al, const void *b, size_t bl,
                    uint8_t out[32])
{
    pthread_once(&g_sha256_once, sha256_fetch);
    unsigned int n = 0;
    if (!ctx || EVP_DigestInit_ex(ctx, g_sha256 ? g_sha256 : EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, a, al) != 1 || (bl && EVP_DigestUpdate(ctx, b, bl) != 1) ||
        EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32)
        return -1;
    return 0;
}

/* out = SHA-256(in). Returns 0 or -1. */
static int sha256_1(const void *in, size_t len, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = sha256_2(ctx, in, len, NULL, 0, out);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* HMAC-SHA-256 (RFC 2104) over the fetched digest. Returns 0 or -1. */
static int hmac256(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32])
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;
    if (!ctx)
        return -1;
    if (klen > sizeof(k)) {
        if (sha256_2(ctx, key, klen, NULL, 0, k) != 0)
            goto out;
    } else {
        memcpy(k, key, klen);
    }
    for (size_t i = 0; i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x36;
    if (sha256_2(ctx, pad, sizeof(pad), msg, mlen, inner) != 0)
        goto out;
    for (size_t i = 0; i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x5c;
    rc = sha256_2(ctx, pad, sizeof(pad), inner, sizeof(inner), out);
out:
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return rc;
}

int pgauth_scram_salted(const char *password, size_t pwlen, const uint8_t *salt,
                        size_t salt_len, int iterations, uint8_t salted[32])
{
    if (iterations < 1 || iterations > PGAUTH_MAX_ITERATIONS || salt_len == 0)
        return -1;
    if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len, iterations, EVP_sha256(),
                          32, salted) != 1)
        return -1;
    return 0;
}

int pgauth_scram_parse_verifier(const char *v, size_t len, pgauth_scram_keys_t *keys)
{
    static const char pfx[] = "SCRAM-SHA-256$";
    const size_t pl = sizeof(pfx) - 1;
    if (len <= pl || len > 512 || memcmp(v, pfx, pl) != 0)
        return -1;
    const char *p = v + pl, *end = v + len;
    long it = 0;
    for (; p < end && *p >= '0' && *p <= '9' && it <= PGAUTH_MAX_ITERATIONS; p++)
        it = it * 10 + (*p - '0');
    if (p == end || *p != ':' || it < 1 || it > PGAUTH_MAX_ITERATIONS)
        return -1;
    const char *salt = ++p;
    const char *d1 = memchr(salt, '$', (size_t)(end - salt));
    if (!d1)
        return -1;
    const char *sk = d1 + 1;
    const char *c2 = memchr(sk, ':', (size_t)(end - sk));
    if (!c2)
        return -1;
    const char *svk = c2 + 1;
    pgauth_scram_keys_t k = {.iterations = (int)it};
    int n = pgauth_b64_decode(salt, (size_t)(d1 - salt), k.salt, sizeof(k.salt));
    if (n <= 0)
        return -1;
    k.salt_len = (size_t)n;
    if (pgauth_b64_decode(sk, (size_t)(c2 - sk), k.stored_key, 32) != 32 ||
        pgauth_b64_decode(svk, (size_t)(end - svk), k.server_key, 32) != 32)
        return -1;
    *keys = k;
    return 0;
}

int pgauth_scram_make_keys(const char *password, size_t pwlen, const uint8_t *salt,
                           size_t salt_len, int iterations, pgauth_scram_keys_t *keys)
{
    uint8_t salted[32], client_key[32];
    int rc = -1;
    if (salt_len > PGAUTH_MAX_SALT)
        return -1;
    if (pgauth_scram_salted(password, pwlen, salt, salt_len, iterations, salted) != 0)
        goto out;
    if (hmac256(salted, 32, "Client Key", 10, client_key) != 0 ||
        hmac256(salted, 32, "Server Key", 10, keys->server_key) != 0 ||
        sha256_1(client_key, 32, keys->stored_key) != 0)
        goto out;
    memcpy(keys->salt, salt, salt_len);
    keys->salt_len = salt_len;
    keys->iterations = iterations;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

/* Finds attribute `a` ("a=value") in a comma-separated list; sets *v to the value view. */
static bool attr_find(const char *s, size_t len, char a, const char **v, size_t *vlen)
{
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        if (j - i >= 2 && s[i] == a && s[i + 1] == '=') {
            *v = s + i + 2;
            *vlen = j - i - 2;
            return true;
        }
        i = j + 1;
    }
    return false;
}

/* A nonce is printable ASCII except ','. */
static bool nonce_ok(const char *n, size_t len)
{
    if (len == 0 || len > PGAUTH_NONCE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (n[i] < 0x21 || n[i] > 0x7e || n[i] == ',')
            return false;
    return true;
}

int pgauth_scram_server_first(pgauth_scram_server_t *st, const pgauth_scram_keys_t *keys,
                              const char *data, size_t len, const char *snonce,
                              char *out, size_t cap)
{
    memset(st, 0, sizeof(*st));
    /* gs2-header: ("n" | "y" | "p=...") "," [authzid] "," */
    if (len < 3 || (data[0] != 'n' && data[0] != 'y')) {
        st->err = data && len && data[0] == 'p' ? "channel binding not supported"
                                               : "malformed SCRAM client-first-message";
        return -1;
    }
    if (data[1] != ',' || data[2] != ',') {
        st->err = "SCRAM authorization identity not supported";
        return -1;
    }
    const char *bare = data + 3;
    size_t bare_len = len - 3;
    if (bare_len >= sizeof(st->client_first_bare)) {
        st->err = "SCRAM client-first-message too long";
        return -1;
    }
    if (bare_len >= 2 && bare[0] == 'm' && bare[1] == '=') {
        st->err = "SCRAM extensions not supported";
        return -1;
    }
    const char *cn;
    size_t cn_len;
    if (bare_len < 2 || bare[0] != 'n' || bare[1] != '=' ||
        !attr_find(bare, bare_len, 'r', &cn, &cn_len) || !nonce_ok(cn, cn_len)) {
        st->err = "malformed SCRAM client-first-message";
        return -1;
    }
    size_t sn_len = strlen(snonce);
    if (sn_len == 0 || sn_len > PGAUTH_NONCE_MAX) {
        st->err = "bad server nonce";
        return -1;
    }
    memcpy(st->client_first_bare, bare, bare_len);
    st->cfb_len = bare_len;
    memcpy(st->nonce, cn, cn_len);
    memcpy(st->nonce + cn_len, snonce, sn_len);
    st->nonce_len = cn_len + sn_len;
    char salt64[4 * ((PGAUTH_MAX_SALT + 2) / 3) + 1];
    if (pgauth_b64_encode(keys->salt, keys->salt_len, salt64, sizeof(salt64)) < 0) {
        st->err = "bad salt";
        return -1;
    }
    int n = snprintf(st->server_first, sizeof(st->server_first), "r=%.*s,s=%s,i=%d",
                     (int)st->nonce_len, st->nonce, salt64, keys->iterations);
    if (n < 0 || (size_t)n >= sizeof(st->server_first) || (size_t)n > cap) {
        st->err = "SCRAM server-first-message too long";
        return -1;
    }
    st->sf_len = (size_t)n;
    memcpy(out, st->server_first, st->sf_len);
    return n;
}

/* HMAC(key, AuthMessage) with AuthMessage = client-first-bare "," server-first ","
 * client-final-without-proof, assembled in a stack buffer (one-shot HMAC). */
static void auth_message_hmac(const uint8_t *key, const char *cfb, size_t cfb_len,
                              const char *sf, size_t sf_len, const char *cfwp, size_t cfwp_len,
                              uint8_t out[32], bool *ok)
{
    char msg[3 * PGAUTH_MSG_MAX + 2 * PGAUTH_NONCE_MAX + 64];
    *ok = false;
    if (cfb_len + sf_len + cfwp_len + 2 > sizeof(msg))
        return;
    memcpy(msg, cfb, cfb_len);
    msg[cfb_len] = ',';
    memcpy(msg + cfb_len + 1, sf, sf_len);
    msg[cfb_len + 1 + sf_len] = ',';
    memcpy(msg + cfb_len + 2 + sf_len, cfwp, cfwp_len);
    *ok = hmac256(key, 32, msg, cfb_len + sf_len + cfwp_len + 2, out) == 0;
}

int pgauth_scram_server_final(pgauth_scram_server_t *st, const pgauth_scram_keys_t *keys,
                              const char *data, size_t len, char *out, size_t cap)
{
    const char *cb, *nonce, *proof64;
    size_t cb_len, nonce_len, proof_len;
    if (!attr_find(data, len, 'c', &cb, &cb_len) || !attr_find(data, len, 'r', &nonce, &nonce_len) ||
        !attr_find(data, len, 'p', &proof64, &proof_len)) {
        st->err = "malformed SCRAM client-final-message";
        return -1;
    }
    if (!((cb_len == 4 && memcmp(cb, "biws", 4) == 0) || (cb_len == 4 && memcmp(cb, "eSws", 4) == 0))) {
        st->err = "SCRAM channel binding check failed";
        return -1;
    }
    if (nonce_len != st->nonce_len || memcmp(nonce, st->nonce, nonce_len) != 0) {
        st->err = "SCRAM nonce mismatch";
        return -1;
    }
    /* The proof must be the last attribute: without-proof is everything before ",p=". */
    if (proof64 < data + 3 || proof64 + proof_len != data + len) {
        st->err = "malformed SCRAM client-final-message";
        return -1;
    }
    size_t cfwp_len = (size_t)(proof64 - 3 - data);
    uint8_t proof[32], sig[32], client_key[32], stored[32];
    if (pgauth_b64_decode(proof64, proof_len, proof, sizeof(proof)) != 32) {
        st->err = "malformed SCRAM proof";
        return -1;
    }
    bool ok;
    auth_message_hmac(keys->stored_key, st->client_first_bare, st->cfb_len, st->server_first,
                      st->sf_len, data, cfwp_len, sig, &ok);
    if (!ok) {
        st->err = "HMAC failed";
        return -1;
    }
    for (int i = 0; i < 32; i++)
        client_key[i] = proof[i] ^ sig[i];
    int hrc = sha256_1(client_key, 32, stored);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (hrc != 0) {
        st->err = "SHA-256 failed";
        return -1;
    }
    if (CRYPTO_memcmp(stored, keys->stored_key, 32) != 0) {
        st->err = "password authentication failed";
        return -2;
    }
    uint8_t server_sig[32];
    auth_message_hmac(keys->server_key, st->client_first_bare, st->cfb_len, st->server_first,
                      st->sf_len, data, cfwp_len, server_sig, &ok);
    char sig64[48];
    if (!ok || pgauth_b64_encode(server_sig, 32, sig64, sizeof(sig64)) < 0 || cap < 2 + 44) {
        st->err = "HMAC failed";
        return -1;
    }
    memcpy(out, "v=", 2);
    memcpy(out + 2, sig64, 44);
    return 46;
}

int pgauth_scram_client_first(pgauth_scram_client_t *st, const char *cnonce, char *out,
                              size_t cap)
{
    memset(st, 0, sizeof(*st));
    size_t n = strlen(cnonce);
    if (!nonce_ok(cnonce, n) || n >= sizeof(st->cnonce)) {
        st->err = "bad client nonce";
        return -1;
    }
    memcpy(st->cnonce, cnonce, n + 1);
    int k = snprintf(st->client_first_bare, sizeof(st->client_first_bare), "n=,r=%s", cnonce);
    if (k < 0 || (size_t)k >= sizeof(st->client_first_bare) || (size_t)k + 3 > cap)
        return -1;
    st->cfb_len = (size_t)k;
    memcpy(out, "n,,", 3);
    memcpy(out + 3, st->client_first_bare, st->cfb_len);
    return k + 3;
}

int pgauth_scram_parse_server_first(pgauth_scram_client_t *st, const char *data, size_t len,
                                    uint8_t *salt, size_t *salt_len, int *iterations)
{
    const char *r, *s, *i;
    size_t rl, sl, il;
    if (len >= PGAUTH_MSG_MAX || !attr_find(data, len, 'r', &r, &rl) ||
        !attr_find(data, len, 's', &s, &sl) || !attr_find(data, len, 'i', &i, &il)) {
        st->err = "malformed SCRAM server-first-message";
        return -1;
    }
    size_t cl = strlen(st->cnonce);
    if (!nonce_ok(r, rl) || rl <= cl || memcmp(r, st->cnonce, cl) != 0) {
        st->err = "SCRAM server nonce invalid";
        return -1;
    }
    int n = pgauth_b64_decode(s, sl, salt, PGAUTH_MAX_SALT);
    if (n <= 0) {
        st->err = "SCRAM salt invalid";
        return -1;
    }
    *salt_len = (size_t)n;
    long it = 0;
    if (il == 0 || il > 7) {
        st->err = "SCRAM iteration count invalid";
        return -1;
    }
    for (size_t k = 0; k < il; k++) {
        if (i[k] < '0' || i[k] > '9') {
            st->err = "SCRAM iteration count invalid";
            return -1;
        }
        it = it * 10 + (i[k] - '0');
    }
    if (it < 1 || it > PGAUTH_MAX_ITERATIONS) {
        st->err = "SCRAM iteration count out of range";
        return -1;
    }
    *iterations = (int)it;
    return 0;
}

int pgauth_scram_client_final(pgauth_scram_client_t *st, const uint8_t salted[32],
                              const char *server_first, size_t sf_len, char *out, size_t cap)
{
    const char *r;
    size_t rl;
    if (!attr_find(server_first, sf_len, 'r', &r, &rl))
        return -1;
    /* client-final-without-proof */
    char cfwp[PGAUTH_NONCE_MAX + 16];
    int wl = snprintf(cfwp, sizeof(cfwp), "c=biws,r=%.*s", (int)rl, r);
    if (wl < 0 || (size_t)wl >= sizeof(cfwp))
        return -1;
    uint8_t client_key[32], stored[32], sig[32], proof[32], server_key[32];
    bool ok;
    if (hmac256(salted, 32, "Client Key", 10, client_key) != 0 ||
        hmac256(salted, 32, "Server Key", 10, server_key) != 0 ||
        sha256_1(client_key, 32, stored) != 0)
        return -1;
    auth_message_hmac(stored, st->client_first_bare, st->cfb_len, server_first, sf_len, cfwp,
                      (size_t)wl, sig, &ok);
    if (!ok)
        return -1;
    for (int k = 0; k < 32; k++)
        proof[k] = client_key[k] ^ sig[k];
    auth_message_hmac(server_key, st->client_first_bare, st->cfb_len, server_first, sf_len,
                      cfwp, (size_t)wl, st->server_signature, &ok);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(server_key, sizeof(server_key));
    if (!ok)
        return -1;
    char proof64[48];
    if (pgauth_b64_encode(proof, 32, proof64, sizeof(proof64)) < 0)
        return -1;
    int n = snprintf(out, cap, "%s,p=%s", cfwp, proof64);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

bool pgauth_scram_client_check_final(pgauth_scram_client_t *st, const char *data, size_t len)
{
    const char *v;
    size_t vl;
    uint8_t sig[32];
    if (!attr_find(data, len, 'v', &v, &vl) || pgauth_b64_decode(v, vl, sig, 32) != 32)
        return false;
    return CRYPTO_memcmp(sig, st->server_signature, 32) == 0;
}

static void md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t d[16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int dl = 0;
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) && EVP_DigestUpdate(ctx, a, alen) &&
              EVP_DigestUpdate(ctx, b, blen) && EVP_DigestFinal_ex(ctx, d, &dl);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(d, 0, sizeof(d));
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[32] = 0;
}

void pgauth_md5_response(const char *user, const char *password, const uint8_t salt[4],
                         char out[36])
{
    char inner[33];
    md5_hex(password, strlen(password), user, strlen(user), inner);
    memcpy(out, "md5", 3);
    md5_hex(inner, 32, salt, 4, out + 3);
    OPENSSL_cleanse(inner, sizeof(inner));
}
