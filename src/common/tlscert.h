/*
 * tlscert.h: self-signed TLS certificates for dbplane's own endpoints — the proxy's
 * listener when no certificate is configured (proxy/tls.c) and the PostgreSQL servers of a
 * cluster whose spec.proxy.serverTLS is not `disable` (engines/postgresql.c). One key
 * type (EC P-256), SHA-256 signature, valid from an hour ago for ten years. OpenSSL.
 */
#ifndef DBP_COMMON_TLSCERT_H
#define DBP_COMMON_TLSCERT_H

#include <stddef.h>

#include "common/err.h"

/* A generated certificate and its private key, both PEM, NUL-terminated, owned by the
 * caller (dbp_tls_pem_free wipes the key). */
typedef struct dbp_tls_pem {
    char *crt;
    size_t crt_len;
    char *key; /* PKCS#8 "PRIVATE KEY"; a secret: never log it */
    size_t key_len;
} dbp_tls_pem_t;

/* Generates a self-signed certificate with subject and issuer CN=`cn` and, when `sans` is
 * not NULL, a subjectAltName in OpenSSL's configuration syntax ("DNS:localhost,
 * IP:127.0.0.1": RFC 5280 §4.2.1.6; a verify-full client matches the host it dialled
 * against these). Returns 0 with *out filled, or DBP_ECRYPTO / DBP_ENOMEM with err set. */
int dbp_tls_selfsigned(const char *cn, const char *sans, dbp_tls_pem_t *out, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Frees both PEM texts (the key is cleansed first) and zeroes *pem. NULL is a no-op. */
void dbp_tls_pem_free(dbp_tls_pem_t *pem);

#endif
