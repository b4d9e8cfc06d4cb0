/*
 * tlscert.c: self-signed certificates (tlscert.h). The certificate is X.509 v3 with the
 * key's own subject as issuer, a serial number from the clock, and the optional
 * subjectAltName built by OpenSSL's X509V3 configuration parser.
 */
#include "common/tlscert.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Copies a memory BIO's contents into an owned NUL-terminated string. */
static char *bio_text(BIO *b, size_t *len)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    if (n < 0 || !p)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    *len = (size_t)n;
    return s;
}

int dbp_tls_selfsigned(const char *cn, const char *sans, dbp_tls_pem_t *out, dbp_err_t *err)
{
    memset(out, 0, sizeof(*out));
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    int rc = DBP_ECRYPTO;
    if (!key || !x || !bc || !bk)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_version(x, 2);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    if (sans && *sans) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, sans);
        if (!ext || !X509_add_ext(x, ext, -1)) {
            X509_EXTENSION_free(ext);
            dbp_err_set(err, DBP_ECRYPTO, "bad subjectAltName '%s'", sans);
            goto out;
        }
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(x, key, EVP_sha256()) || !PEM_write_bio_X509(bc, x) ||
        !PEM_write_bio_PrivateKey(bk, key, NULL, NULL, 0, NULL, NULL))
        goto out;
    out->crt = bio_text(bc, &out->crt_len);
    out->key = bio_text(bk, &out->key_len);
    if (!out->crt || !out->key) {
        dbp_tls_pem_free(out);
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        goto out;
    }
    rc = 0;
out:
    if (rc == DBP_ECRYPTO && err && !err->msg[0])
        dbp_err_set(err, DBP_ECRYPTO, "could not generate a TLS certificate");
    if (bk) {
        /* The memory BIO held the private key. */
        char *p = NULL;
        long n = BIO_get_mem_data(bk, &p);
        if (n > 0 && p)
            OPENSSL_cleanse(p, (size_t)n);
    }
    BIO_free(bc);
    BIO_free(bk);
    EVP_PKEY_free(key);
    X509_free(x);
    return rc;
}

void dbp_tls_pem_free(dbp_tls_pem_t *pem)
{
    if (!pem)
        return;
    if (pem->key)
        OPENSSL_cleanse(pem->key, pem->key_len);
    free(pem->key);
    free(pem->crt);
    memset(pem, 0, sizeof(*pem));
}
