/*
 * secrets.c: the encrypted secret store (see secrets.h) on top of store/'s secret_values
 * table, which only ever sees ciphertext.
 *
 * Each value is sealed with AES-256-GCM (OpenSSL EVP) under the 32-byte master key and a
 * fresh 12-byte random nonce, into a blob laid out as
 *
 *     version (1 byte, = 1) | nonce (12) | ciphertext (len(value)) | tag (16)
 *
 * with the associated data "tenant\0secret\0key" (each name followed by its NUL, the last
 * without one), so a blob copied to another row, secret or tenant fails authentication
 * instead of decrypting to a wrong but plausible credential.
 *
 * The master key file is created once, atomically: the 32 random bytes go into a
 * temporary file made with O_CREAT|O_EXCL and mode 0600 (fchmod'ed, so the umask cannot
 * change it), which is fsync'ed and then link()ed to the final name — a concurrent
 * opener either sees no key or the complete key, never a partial one. On open, a key
 * file with any group/other permission bit or of the wrong size is refused.
 *
 * The key and every plaintext buffer are wiped with OPENSSL_cleanse before being freed.
 * Nothing here logs a value; log lines carry tenant, secret and key names only.
 */
#include "secrets/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/log.h"

#define SECRETS_KEY_LEN 32     /* AES-256 */
#define SECRETS_NONCE_LEN 12   /* GCM's native IV size */
#define SECRETS_TAG_LEN 16     /* full-length GCM tag */
#define SECRETS_BLOB_VERSION 1 /* first byte of every blob */
#define SECRETS_OVERHEAD (1 + SECRETS_NONCE_LEN + SECRETS_TAG_LEN)
#define SECRETS_MAX_VALUE (1u << 20) /* 1 MiB: far above any credential */
#define SECRETS_MAX_GENERATED 4096   /* longest value secrets_ensure will generate */
#define SECRETS_DEFAULT_LENGTH 32    /* Secret generate.length when not set */

struct secrets {
    uint8_t key[SECRETS_KEY_LEN]; /* master key; wiped by secrets_close */
    store_t *store;               /* borrowed */
};

/* --- master key file ---------------------------------------------------------------- */

/* Reads the whole key file at `fd` into key after checking its type, mode and size. */
static int key_read(int fd, const char *path, uint8_t key[SECRETS_KEY_LEN], dbp_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return dbp_err_set(err, DBP_EIO, "secrets: stat %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return dbp_err_set(err, DBP_ECRYPTO, "secrets: master key %s is not a regular file", path);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return dbp_err_set(err, DBP_ECRYPTO,
                           "secrets: master key %s has mode %04o: it must not be accessible "
                           "to group or others (run: chmod 600 %s)",
                           path, (unsigned)(st.st_mode & 07777), path);
    if (st.st_size != SECRETS_KEY_LEN)
        return dbp_err_set(err, DBP_ECRYPTO,
                           "secrets: master key %s is %lld bytes, expected exactly %d: wrong or "
                           "damaged key file",
                           path, (long long)st.st_size, SECRETS_KEY_LEN);
    size_t got = 0;
    while (got < SECRETS_KEY_LEN) {
        ssize_t n = read(fd, key + got, SECRETS_KEY_LEN - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            OPENSSL_cleanse(key, SECRETS_KEY_LEN);
            return dbp_err_set(err, DBP_EIO, "secrets: read %s: %s", path,
                               n < 0 ? strerror(errno) : "short file");
        }
        got += (size_t)n;
    }
    return 0;
}

/* Writes all of buf to fd, retrying short writes. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsyncs the directory holding `path` so a new name survives a crash (best effort). */
static void sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(copy);
}

/*
 * Creates the key file with 32 fresh random bytes: temp file (O_EXCL, 0600, fchmod,
 * fsync), then link() to `path`, which fails with EEXIST when another process won the
 * race. Returns 0 with *created, or an error. When another process won, *created is false
 * and the caller reads the winner's key.
 */
static int key_create(const char *path, bool *created, dbp_err_t *err)
{
    *created = false;
    /* A unique temporary name, so concurrent creators (threads too) never collide. */
    uint32_t salt = 0;
    if (RAND_bytes((uint8_t *)&salt, sizeof(salt)) != 1)
        return dbp_err_set(err, DBP_ECRYPTO, "secrets: RAND_bytes failed: %lu", ERR_get_error());
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%08x", path, (long)getpid(), (unsigned)salt);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return dbp_err_set(err, DBP_EINVAL, "secrets: key path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return dbp_err_set(err, DBP_EIO, "secrets: create %s: %s", tmp, strerror(errno));
    uint8_t key[SECRETS_KEY_LEN];
    int rc = 0;
    if (fchmod(fd, 0600) != 0) {
        rc = dbp_err_set(err, DBP_EIO, "secrets: chmod %s: %s", tmp, strerror(errno));
    } else if (RAND_bytes(key, sizeof(key)) != 1) {
        rc = dbp_err_set(err, DBP_ECRYPTO, "secrets: RAND_bytes failed: %lu", ERR_get_error());
    } else if (write_all(fd, key, sizeof(key)) != 0 || fsync(fd) != 0) {
        rc = dbp_err_set(err, DBP_EIO, "secrets: write %s: %s", tmp, strerror(errno));
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (close(fd) != 0 && rc == 0)
        rc = dbp_err_set(err, DBP_EIO, "secrets: close %s: %s", tmp, strerror(errno));
    if (rc == 0) {
        if (link(tmp, path) == 0)
            *created = true;
        else if (errno != EEXIST)
            rc = dbp_err_set(err, DBP_EIO, "secrets: link %s: %s", path, strerror(errno));
    }
    (void)unlink(tmp);
    if (*created)
        sync_parent_dir(path);
    return rc;
}

int secrets_open(secrets_t **out, const char *key_path, store_t *store, dbp_err_t *err)
{
    *out = NULL;
    if (!key_path || !*key_path || !store)
        return dbp_err_set(err, DBP_EINVAL, "secrets: missing key path or store");
    secrets_t *sec = calloc(1, sizeof(*sec));
    if (!sec)
        return dbp_err_set(err, DBP_ENOMEM, "secrets: out of memory");
    sec->store = store;
    bool created = false;
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(key_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            rc = key_read(fd, key_path, sec->key, err);
            close(fd);
            break;
        }
        if (errno != ENOENT || attempt > 0) {
            rc = dbp_err_set(err, DBP_EIO, "secrets: open master key %s: %s", key_path,
                             strerror(errno));
            break;
        }
        rc = key_create(key_path, &created, err);
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        secrets_close(sec);
        return rc;
    }
    if (created)
        dbp_info("secrets_key_created", "path=%s", dbp_log_q(key_path));
    *out = sec;
    return 0;
}

void secrets_close(secrets_t *sec)
{
    if (!sec)
        return;
    OPENSSL_cleanse(sec, sizeof(*sec));
    free(sec);
}

void secrets_free_value(char *value)
{
    if (!value)
        return;
    OPENSSL_cleanse(value, strlen(value));
    free(value);
}

/* --- sealing ------------------------------------------------------------------------ */

/* Feeds the associated data "tenant\0secret\0key" into an initialised GCM context. */
static bool aad_update(EVP_CIPHER_CTX *ctx, bool enc, const char *tenant, const char *secret,
                       const char *key)
{
    const char *parts[3] = {tenant, secret, key};
    for (int i = 0; i < 3; i++) {
        int outl = 0;
        /* tenant and secret include their NUL as separator; key ends the data. */
        int len = (int)strlen(parts[i]) + (i < 2 ? 1 : 0);
        int ok = enc ? EVP_EncryptUpdate(ctx, NULL, &outl, (const uint8_t *)parts[i], len)
                     : EVP_DecryptUpdate(ctx, NULL, &outl, (const uint8_t *)parts[i], len);
        if (ok != 1)
            return false;
    }
    return true;
}

/* Encrypts `value` (len bytes) into a new blob; returns owned *blob (free()) and *blob_len. */
static int seal(const secrets_t *sec, const char *tenant, const char *secret, const char *key,
                const char *value, size_t len, uint8_t **blob, size_t *blob_len, dbp_err_t *err)
{
    *blob = NULL;
    size_t total = SECRETS_OVERHEAD + len;
    uint8_t *b = malloc(total);
    if (!b)
        return dbp_err_set(err, DBP_ENOMEM, "secrets: out of memory");
    uint8_t *nonce = b + 1, *ct = b + 1 + SECRETS_NONCE_LEN, *tag = ct + len;
    b[0] = SECRETS_BLOB_VERSION;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0;
    bool ok = ctx && RAND_bytes(nonce, SECRETS_NONCE_LEN) == 1 &&
              EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SECRETS_NONCE_LEN, NULL) == 1 &&
              EVP_EncryptInit_ex(ctx, NULL, NULL, sec->key, nonce) == 1 &&
              aad_update(ctx, true, tenant, secret, key) &&
              EVP_EncryptUpdate(ctx, ct, &outl, (const uint8_t *)value, (int)len) == 1 &&
              EVP_EncryptFinal_ex(ctx, ct + outl, &finl) == 1 && (size_t)(outl + finl) == len &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SECRETS_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        free(b);
        return dbp_err_set(err, DBP_ECRYPTO, "secrets: encrypting %s/%s key %s failed: %lu", tenant,
                           secret, key, ERR_get_error());
    }
    *blob = b;
    *blob_len = total;
    return 0;
}

/* Decrypts and authenticates a blob; returns owned NUL-terminated *value
 * (secrets_free_value) or DBP_ECRYPTO. */
static int unseal(const secrets_t *sec, const char *tenant, const char *secret, const char *key,
                  const uint8_t *blob, size_t blob_len, char **value, dbp_err_t *err)
{
    *value = NULL;
    if (blob_len < SECRETS_OVERHEAD || blob[0] != SECRETS_BLOB_VERSION ||
        blob_len - SECRETS_OVERHEAD > SECRETS_MAX_VALUE)
        return dbp_err_set(err, DBP_ECRYPTO,
                           "secrets: %s/%s key %s: stored blob is malformed (%zu bytes, "
                           "version %d)",
                           tenant, secret, key, blob_len, blob_len ? blob[0] : -1);
    size_t len = blob_len - SECRETS_OVERHEAD;
    const uint8_t *nonce = blob + 1, *ct = blob + 1 + SECRETS_NONCE_LEN, *tag = ct + len;
    char *pt = malloc(len + 1);
    if (!pt)
        return dbp_err_set(err, DBP_ENOMEM, "secrets: out of memory");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0;
    bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SECRETS_NONCE_LEN, NULL) == 1 &&
              EVP_DecryptInit_ex(ctx, NULL, NULL, sec->key, nonce) == 1 &&
              aad_update(ctx, false, tenant, secret, key) &&
              EVP_DecryptUpdate(ctx, (uint8_t *)pt, &outl, ct, (int)len) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SECRETS_TAG_LEN, (void *)tag) == 1 &&
              EVP_DecryptFinal_ex(ctx, (uint8_t *)pt + outl, &finl) == 1 &&
              (size_t)(outl + finl) == len;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok || memchr(pt, '\0', len)) {
        OPENSSL_cleanse(pt, len + 1);
        free(pt);
        ERR_clear_error();
        return dbp_err_set(err, DBP_ECRYPTO,
                           "secrets: %s/%s key %s failed authentication: the stored value is "
                           "corrupted, was moved from another key, or the master key changed",
                           tenant, secret, key);
    }
    pt[len] = '\0';
    *value = pt;
    return 0;
}

/* --- values ------------------------------------------------------------------------- */

static bool names_ok(const char *tenant, const char *secret, const char *key)
{
    return tenant && secret && key && *tenant && *secret && *key;
}

int secrets_put(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                const char *value, dbp_err_t *err)
{
    if (!names_ok(tenant, secret, key) || !value)
        return dbp_err_set(err, DBP_EINVAL, "secrets: put: missing tenant/secret/key/value");
    size_t len = strlen(value);
    if (len > SECRETS_MAX_VALUE)
        return dbp_err_set(err, DBP_EINVAL, "secrets: %s/%s key %s: value longer than %u bytes",
                           tenant, secret, key, SECRETS_MAX_VALUE);
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    int rc = seal(sec, tenant, secret, key, value, len, &blob, &blob_len, err);
    if (rc != 0)
        return rc;
    rc = store_put_secret_blob(sec->store, tenant, secret, key, blob, blob_len, err);
    free(blob);
    return rc;
}

int secrets_get(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                char **value, dbp_err_t *err)
{
    *value = NULL;
    if (!names_ok(tenant, secret, key))
        return dbp_err_set(err, DBP_EINVAL, "secrets: get: missing tenant/secret/key");
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    int rc = store_get_secret_blob(sec->store, tenant, secret, key, &blob, &blob_len, err);
    if (rc != 0)
        return rc;
    rc = unseal(sec, tenant, secret, key, blob, blob_len, value, err);
    free(blob);
    return rc;
}

int secrets_random_password(char *out, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "abcdefghijklmnopqrstuvwxyz"
                                   "0123456789";
    enum { NCHARS = sizeof(alphabet) - 1, LIMIT = 256 - 256 % NCHARS }; /* 62, 248 */
    uint8_t buf[64];
    size_t filled = 0;
    int rc = 0;
    while (filled < len) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            rc = DBP_ECRYPTO;
            break;
        }
        /* Rejection sampling: bytes >= 248 would favour the first 8 characters. */
        for (size_t i = 0; i < sizeof(buf) && filled < len; i++)
            if (buf[i] < LIMIT)
                out[filled++] = alphabet[buf[i] % NCHARS];
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rc != 0) {
        OPENSSL_cleanse(out, len);
        out[0] = '\0';
        return rc;
    }
    out[len] = '\0';
    return 0;
}

/* Body of secrets_ensure, run inside a store transaction. */
static int ensure_locked(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                         size_t length, char **value, bool *created, dbp_err_t *err)
{
    int rc = secrets_get(sec, tenant, secret, key, value, err);
    if (rc != DBP_ENOENT)
        return rc;
    char *v = malloc(length + 1);
    if (!v)
        return dbp_err_set(err, DBP_ENOMEM, "secrets: out of memory");
    rc = secrets_random_password(v, length);
    if (rc != 0) {
        free(v);
        return dbp_err_set(err, rc, "secrets: RAND_bytes failed");
    }
    rc = secrets_put(sec, tenant, secret, key, v, err);
    if (rc != 0) {
        secrets_free_value(v);
        return rc;
    }
    *created = true;
    *value = v;
    return 0;
}

/* secrets_ensure without the log line (secrets_apply logs after its own commit). */
static int ensure_quiet(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                        size_t length, char **value, bool *created, dbp_err_t *err)
{
    *value = NULL;
    bool made = false;
    if (created)
        *created = false;
    if (!names_ok(tenant, secret, key))
        return dbp_err_set(err, DBP_EINVAL, "secrets: ensure: missing tenant/secret/key");
    if (length == 0 || length > SECRETS_MAX_GENERATED)
        return dbp_err_set(err, DBP_EINVAL, "secrets: ensure: length %zu not in 1..%d", length,
                           SECRETS_MAX_GENERATED);
    /* One transaction, so two processes cannot both generate (and hand out) a value. */
    bool own = !store_in_transaction(sec->store);
    int rc = own ? store_begin(sec->store, err) : 0;
    if (rc != 0)
        return rc;
    rc = ensure_locked(sec, tenant, secret, key, length, value, &made, err);
    if (own) {
        if (rc == 0)
            rc = store_commit(sec->store, err);
        else
            store_rollback(sec->store);
    }
    if (rc != 0) {
        secrets_free_value(*value);
        *value = NULL;
        return rc;
    }
    if (created)
        *created = made;
    return 0;
}

int secrets_ensure(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                   size_t length, char **value, bool *created, dbp_err_t *err)
{
    bool made = false;
    int rc = ensure_quiet(sec, tenant, secret, key, length, value, &made, err);
    if (created)
        *created = made;
    if (rc == 0 && made)
        dbp_info("secret_generated", "tenant=%s secret=%s key=%s length=%zu", dbp_log_q(tenant),
                 dbp_log_q(secret), dbp_log_q(key), length);
    return rc;
}

/* --- declared Secret resources ------------------------------------------------------ */

/* What secrets_apply did to one key, logged once the transaction has committed. */
typedef struct apply_note {
    const char *key; /* borrowed from the resource */
    bool generated;  /* true: a generate key was created; false: a stringData write */
    int64_t length;  /* generated length */
} apply_note_t;

/* Writes one stringData value unless the stored one is equal; sets *wrote. */
static int apply_value(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                       const char *value, bool *wrote, dbp_err_t *err)
{
    *wrote = false;
    char *cur = NULL;
    int rc = secrets_get(sec, tenant, secret, key, &cur, err);
    if (rc != 0 && rc != DBP_ENOENT)
        return rc;
    size_t len = strlen(value);
    bool same = cur && strlen(cur) == len && CRYPTO_memcmp(cur, value, len) == 0;
    secrets_free_value(cur);
    if (same)
        return 0;
    rc = secrets_put(sec, tenant, secret, key, value, err);
    if (rc == 0)
        *wrote = true;
    return rc;
}

/* The body of secrets_apply, run inside a store transaction; notes[*n] records each key
 * written (notes has room for every stringData and generate key). */
bool secrets_is_redacted(const char *value)
{
    return value && strncmp(value, SECRETS_REDACTED_PREFIX, sizeof(SECRETS_REDACTED_PREFIX) - 1) == 0;
}

void secrets_fingerprint(const secrets_t *sec, const char *tenant, const char *secret,
                         const char *key, const char *value, char out[SECRETS_REDACTED_LEN])
{
    /* HMAC under the master key: equal values give equal fingerprints (so re-applying the
     * same Secret changes nothing), but a stolen store cannot be brute-forced offline
     * without the key file. */
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t tl = strlen(tenant), sl = strlen(secret), kl = strlen(key), vl = strlen(value);
    size_t total = tl + sl + kl + vl + 3;
    unsigned char *msg = malloc(total);
    if (!msg) {
        snprintf(out, SECRETS_REDACTED_LEN, "%s", SECRETS_REDACTED_PREFIX "?");
        return;
    }
    size_t o = 0;
    memcpy(msg + o, tenant, tl + 1);
    o += tl + 1;
    memcpy(msg + o, secret, sl + 1);
    o += sl + 1;
    memcpy(msg + o, key, kl + 1);
    o += kl + 1;
    memcpy(msg + o, value, vl);
    HMAC(EVP_sha256(), sec->key, SECRETS_KEY_LEN, msg, total, mac, &maclen);
    OPENSSL_cleanse(msg, total);
    free(msg);
    int n = snprintf(out, SECRETS_REDACTED_LEN, "%s", SECRETS_REDACTED_PREFIX);
    for (unsigned i = 0; i < 16 && n + 2 < SECRETS_REDACTED_LEN; i++)
        n += snprintf(out + n, SECRETS_REDACTED_LEN - (size_t)n, "%02x", mac[i]);
}

json_t *secrets_redact_json(const secrets_t *sec, const spec_resource_t *res)
{
    json_t *copy = json_deep_copy(res->json);
    if (!copy || res->kind != SPEC_KIND_SECRET)
        return copy;
    json_t *sd = json_object_get(copy, "stringData");
    const char *k;
    json_t *v;
    json_object_foreach(sd, k, v)
    {
        const char *val = json_string_value(v);
        char buf[64];
        if (!val) {
            /* Non-string scalars were given as YAML numbers or booleans: use their text. */
            if (json_is_integer(v))
                snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
            else if (json_is_boolean(v))
                snprintf(buf, sizeof(buf), "%s", json_is_true(v) ? "true" : "false");
            else
                continue;
            val = buf;
        }
        if (secrets_is_redacted(val))
            continue;
        char fp[SECRETS_REDACTED_LEN];
        secrets_fingerprint(sec, res->tenant.v, res->name.v, k, val, fp);
        json_object_set_new(sd, k, json_string(fp));
    }
    return copy;
}

static int apply_locked(secrets_t *sec, const spec_resource_t *res, const char *tenant,
                        const char *name, apply_note_t *notes, int *n, dbp_err_t *err)
{
    const spec_secret_t *s = &res->u.secret;
    for (size_t i = 0; i < s->string_data.n; i++) {
        const spec_kv_t *kv = &s->string_data.v[i];
        if (!kv->key || !*kv->key || !kv->value)
            return dbp_err_set(err, DBP_EINVAL, "secrets: Secret %s/%s: empty stringData entry",
                               tenant, name);
        if (secrets_is_redacted(kv->value)) {
            /* A stored resource: its value was written when it was applied; only check that
             * it is still there and is the one the fingerprint names. */
            char *cur = NULL, fp[SECRETS_REDACTED_LEN];
            int rc = secrets_get(sec, tenant, name, kv->key, &cur, err);
            if (rc != 0)
                return rc;
            secrets_fingerprint(sec, tenant, name, kv->key, cur, fp);
            secrets_free_value(cur);
            if (strcmp(fp, kv->value) != 0)
                return dbp_err_set(err, DBP_ECRYPTO,
                                   "secrets: Secret %s/%s key %s: stored value differs from the "
                                   "applied one; apply the Secret again",
                                   tenant, name, kv->key);
            continue;
        }
        bool wrote = false;
        int rc = apply_value(sec, tenant, name, kv->key, kv->value, &wrote, err);
        if (rc != 0)
            return rc;
        if (wrote)
            notes[(*n)++] = (apply_note_t){.key = kv->key};
    }
    int64_t want = s->generate_length.set && s->generate_length.v > 0 ? s->generate_length.v
                                                                      : SECRETS_DEFAULT_LENGTH;
    for (size_t i = 0; i < s->generate_keys.n; i++) {
        const char *key = s->generate_keys.v[i];
        if (!key || !*key)
            return dbp_err_set(err, DBP_EINVAL, "secrets: Secret %s/%s: empty generate key", tenant,
                               name);
        char *v = NULL;
        bool made = false;
        int rc = ensure_quiet(sec, tenant, name, key, (size_t)want, &v, &made, err);
        secrets_free_value(v);
        if (rc != 0)
            return rc;
        if (made)
            notes[(*n)++] = (apply_note_t){.key = key, .generated = true, .length = want};
    }
    return 0;
}

int secrets_apply(secrets_t *sec, const spec_resource_t *res, int *changed, dbp_err_t *err)
{
    if (changed)
        *changed = 0;
    if (!res || res->kind != SPEC_KIND_SECRET)
        return dbp_err_set(err, DBP_EINVAL, "secrets: apply: not a Secret resource");
    const char *tenant = res->tenant.v && *res->tenant.v ? res->tenant.v : "default";
    const char *name = res->name.v;
    if (!name || !*name)
        return dbp_err_set(err, DBP_EINVAL, "secrets: apply: Secret without metadata.name");
    int64_t len = res->u.secret.generate_length.v;
    if (res->u.secret.generate_length.set && (len < 0 || len > SECRETS_MAX_GENERATED))
        return dbp_err_set(err, DBP_EINVAL,
                           "secrets: Secret %s/%s: generate.length %lld out of "
                           "range",
                           tenant, name, (long long)len);
    size_t total = res->u.secret.string_data.n + res->u.secret.generate_keys.n;
    apply_note_t *notes = calloc(total ? total : 1, sizeof(*notes));
    if (!notes)
        return dbp_err_set(err, DBP_ENOMEM, "secrets: out of memory");
    /* All keys or none: a failure half-way leaves the stored Secret as it was. */
    bool own = !store_in_transaction(sec->store);
    int rc = own ? store_begin(sec->store, err) : 0;
    if (rc != 0) {
        free(notes);
        return rc;
    }
    int n = 0;
    rc = apply_locked(sec, res, tenant, name, notes, &n, err);
    if (own) {
        if (rc == 0)
            rc = store_commit(sec->store, err);
        else
            store_rollback(sec->store);
    }
    if (rc != 0) {
        free(notes);
        dbp_err_prefix(err, "Secret %s/%s: ", tenant, name);
        return rc;
    }
    /* Key names only, never values. */
    for (int i = 0; i < n; i++) {
        if (notes[i].generated)
            dbp_info("secret_generated", "tenant=%s secret=%s key=%s length=%lld",
                     dbp_log_q(tenant), dbp_log_q(name), dbp_log_q(notes[i].key),
                     (long long)notes[i].length);
        else
            dbp_info("secret_written", "tenant=%s secret=%s key=%s", dbp_log_q(tenant),
                     dbp_log_q(name), dbp_log_q(notes[i].key));
    }
    free(notes);
    if (changed)
        *changed = n;
    return 0;
}
