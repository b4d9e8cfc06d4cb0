/*
 * tls.c: the proxy's server-side TLS context. With a configured certificate and key they
 * are loaded as they are; otherwise a self-signed P-256 certificate (CN "dbplane-proxy",
 * ten years) is generated once into tls_dir (proxy.crt, and proxy.key with mode 0600) and
 * reused on later starts. TLS 1.2 is the minimum version. It also builds the client-side
 * contexts for TLS towards the servers (proxy_cluster_t.server_tls).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static int write_pem(const char *path, int mode, EVP_PKEY *key, X509 *crt)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, crt);
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* Generates a self-signed certificate and key into dir. */
static int generate(const char *crt_path, const char *key_path, dbp_err_t *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (!key || !x)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_version(x, 2);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"dbplane-proxy", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, key, EVP_sha256()))
        goto out;
    if (write_pem(key_path, 0600, key, NULL) != 0 || write_pem(crt_path, 0644, NULL, x) != 0) {
        dbp_err_set(err, DBP_EIO, "write %s: %s", key_path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc != 0 && err && !err->msg[0])
        dbp_err_set(err, DBP_ECRYPTO, "could not generate a TLS certificate");
    EVP_PKEY_free(key);
    X509_free(x);
    return rc;
}

SSL_CTX *px_tls_context(const char *cert, const char *key, const char *dir, dbp_err_t *err)
{
    char crt_path[512], key_path[512];
    if (cert && *cert && key && *key) {
        snprintf(crt_path, sizeof(crt_path), "%s", cert);
        snprintf(key_path, sizeof(key_path), "%s", key);
    } else if (dir && *dir) {
        snprintf(crt_path, sizeof(crt_path), "%s/proxy.crt", dir);
        snprintf(key_path, sizeof(key_path), "%s/proxy.key", dir);
        if (access(crt_path, R_OK) != 0 || access(key_path, R_OK) != 0) {
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                dbp_err_set(err, DBP_EIO, "mkdir %s: %s", dir, strerror(errno));
                return NULL;
            }
            if (generate(crt_path, key_path, err) != 0)
                return NULL;
        }
    } else {
        return NULL; /* no TLS: SSLRequest is answered 'N' */
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        dbp_err_set(err, DBP_ECRYPTO, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, crt_path) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        dbp_err_set(err, DBP_ECRYPTO, "load TLS certificate %s / key %s failed", crt_path, key_path);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *px_tls_client_context(bool verify, const char *ca_path, dbp_err_t *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        dbp_err_set(err, DBP_ECRYPTO, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (!verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    int ok = ca_path && *ca_path ? SSL_CTX_load_verify_locations(ctx, ca_path, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        dbp_err_set(err, DBP_ECRYPTO, "load server CA bundle %s failed",
                    ca_path && *ca_path ? ca_path : "(system default)");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}
