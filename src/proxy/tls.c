/*
 * tls.c: the proxy's server-side TLS context. With a configured certificate and key they
 * are loaded as they are; otherwise a self-signed P-256 certificate (CN "dbplane-proxy",
 * ten years) is generated once into tls_dir (proxy.crt, and proxy.key with mode 0600) and
 * reused on later starts (the generator is common/tlscert.c, shared with the PostgreSQL
 * servers' certificates). TLS 1.2 is the minimum version. It also builds the client-side
 * contexts for TLS towards the servers (proxy_cluster_t.server_tls).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/proc.h"
#include "common/tlscert.h"

/* Generates a self-signed certificate and key (common/tlscert.h) into crt_path/key_path. */
static int generate(const char *crt_path, const char *key_path, dbp_err_t *err)
{
    dbp_tls_pem_t pem;
    int rc = dbp_tls_selfsigned("dbplane-proxy", NULL, &pem, err);
    if (rc)
        return rc;
    rc = dbp_write_file(key_path, pem.key, pem.key_len, 0600, NULL, err);
    if (!rc)
        rc = dbp_write_file(crt_path, pem.crt, pem.crt_len, 0644, NULL, err);
    dbp_tls_pem_free(&pem);
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
