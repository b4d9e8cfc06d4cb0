/*
 * test_secrets.c: unit tests of src/secrets/ over a real store in a fresh temporary
 * directory per test. They check the AES-256-GCM round trip, the master key file (created
 * 0600 whatever the umask, reused, refused when open to others or of the wrong size),
 * authentication failures for tampered and moved blobs, that no plaintext reaches the
 * SQLite files or the log, generated values (length, charset, generated once), and
 * secrets_apply on hand-built Secret resources.
 */
/* _GNU_SOURCE (for nftw, memmem) comes from the build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secrets/secrets.h"

/* One test's directory, store and secrets handle. */
typedef struct fixture {
    char dir[64];
    char db[128];
    char key[128];
    store_t *store;
    secrets_t *sec;
} fixture_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->dir, "/tmp/dbp-test-secrets-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/state.db", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/master.key", f->dir);
    dbp_err_t err = {0};
    assert_int_equal(store_open(&f->store, f->db, &err), 0);
    assert_int_equal(secrets_open(&f->sec, f->key, f->store, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    secrets_close(f->sec);
    store_close(f->store);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Reads a whole file into a malloc'd buffer; *len gets its size. Missing file → NULL. */
static uint8_t *slurp(const char *path, size_t *len)
{
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    *len = n;
    return buf;
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void assert_secret(secrets_t *sec, const char *tenant, const char *secret, const char *key,
                          const char *want)
{
    char *v = NULL;
    dbp_err_t err = {0};
    assert_int_equal(secrets_get(sec, tenant, secret, key, &v, &err), 0);
    assert_non_null(v);
    assert_string_equal(v, want);
    secrets_free_value(v);
}

static void expect_crypto_error(secrets_t *sec, const char *tenant, const char *secret,
                                const char *key)
{
    char *v = NULL;
    dbp_err_t err = {0};
    assert_int_equal(secrets_get(sec, tenant, secret, key, &v, &err), DBP_ECRYPTO);
    assert_null(v);
    assert_int_equal(err.code, DBP_ECRYPTO);
}

static bool is_alnum_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* --- round trip and key file -------------------------------------------------------- */

static void test_round_trip(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    assert_int_equal(secrets_put(f->sec, "t", "db", "password", "hunter2", &err), 0);
    assert_secret(f->sec, "t", "db", "password", "hunter2");
    assert_int_equal(secrets_put(f->sec, "t", "db", "password", "correct horse", &err), 0);
    assert_secret(f->sec, "t", "db", "password", "correct horse");
    assert_int_equal(secrets_put(f->sec, "t", "db", "empty", "", &err), 0);
    assert_secret(f->sec, "t", "db", "empty", "");

    /* Blob layout: version 1 | 12-byte nonce | ciphertext | 16-byte tag. */
    uint8_t *blob = NULL;
    size_t len = 0;
    assert_int_equal(store_get_secret_blob(f->store, "t", "db", "password", &blob, &len, &err), 0);
    assert_int_equal(len, 1 + 12 + strlen("correct horse") + 16);
    assert_int_equal(blob[0], 1);
    free(blob);

    /* Two encryptions of one value differ (fresh nonce each time). */
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    assert_int_equal(secrets_put(f->sec, "t", "db", "k", "same", &err), 0);
    assert_int_equal(store_get_secret_blob(f->store, "t", "db", "k", &b1, &l1, &err), 0);
    assert_int_equal(secrets_put(f->sec, "t", "db", "k", "same", &err), 0);
    assert_int_equal(store_get_secret_blob(f->store, "t", "db", "k", &b2, &l2, &err), 0);
    assert_int_equal(l1, l2);
    assert_memory_not_equal(b1 + 1, b2 + 1, 12);
    free(b1);
    free(b2);

    char *v = (char *)"untouched";
    assert_int_equal(secrets_get(f->sec, "t", "db", "absent", &v, &err), DBP_ENOENT);
    assert_null(v);
    assert_int_equal(secrets_put(f->sec, "t", "", "k", "x", &err), DBP_EINVAL);
    secrets_free_value(NULL);
}

static void test_key_file_created_0600_and_reused(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    char key2[160];
    snprintf(key2, sizeof(key2), "%s/other.key", f->dir);

    /* A umask that would make the file 0400 (or worse) must not change its mode. */
    mode_t old = umask(0277);
    secrets_t *sec = NULL;
    int rc = secrets_open(&sec, key2, f->store, &err);
    umask(old);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(key2, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 32);
    size_t klen = 0;
    uint8_t *k1 = slurp(key2, &klen);
    assert_int_equal(klen, 32);

    assert_int_equal(secrets_put(sec, "t", "app", "token", "v-12345", &err), 0);
    secrets_close(sec);
    store_close(f->store);
    f->store = NULL;

    /* Reopen store and key: same key, old values decrypt. */
    assert_int_equal(store_open(&f->store, f->db, &err), 0);
    assert_int_equal(secrets_open(&sec, key2, f->store, &err), 0);
    assert_secret(sec, "t", "app", "token", "v-12345");
    uint8_t *k2 = slurp(key2, &klen);
    assert_memory_equal(k1, k2, 32);
    free(k1);
    free(k2);

    /* The fixture's handle has a different random key: it cannot read this value. */
    secrets_close(f->sec);
    assert_int_equal(secrets_open(&f->sec, f->key, f->store, &err), 0);
    expect_crypto_error(f->sec, "t", "app", "token");
    secrets_close(sec);

    /* No temporary file is left behind. */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        assert_null(strstr(de->d_name, ".tmp."));
    closedir(d);
}

static void test_key_file_refused(void **state)
{
    fixture_t *f = *state;
    uint8_t bytes[33] = {0};
    static const struct {
        size_t len;
        mode_t mode;
        const char *msg;
    } cases[] = {
        {32, 0644, "mode 0644"}, {32, 0640, "mode 0640"}, {32, 0604, "chmod 600"},
        {31, 0600, "31 bytes"},  {33, 0600, "33 bytes"},  {0, 0600, "0 bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[160];
        snprintf(path, sizeof(path), "%s/bad%zu.key", f->dir, i);
        write_file(path, bytes, cases[i].len, cases[i].mode);
        secrets_t *sec = NULL;
        dbp_err_t err = {0};
        assert_int_equal(secrets_open(&sec, path, f->store, &err), DBP_ECRYPTO);
        assert_null(sec);
        assert_non_null(strstr(err.msg, cases[i].msg));
    }
    /* A directory in place of the key file is refused too. */
    secrets_t *sec = NULL;
    dbp_err_t err = {0};
    assert_int_not_equal(secrets_open(&sec, f->dir, f->store, &err), 0);
    assert_null(sec);
}

/* --- authentication ----------------------------------------------------------------- */

static void test_tampered_blob_fails(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    const char *value = "s3cr3t-value";
    size_t vlen = strlen(value), blen = 1 + 12 + vlen + 16;
    /* Flip one bit in: version, first/last nonce byte, ciphertext, first/last tag byte. */
    const size_t offsets[] = {0, 1, 12, 13, 13 + vlen - 1, 13 + vlen, blen - 1};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        assert_int_equal(secrets_put(f->sec, "t", "db", "pw", value, &err), 0);
        uint8_t *blob = NULL;
        size_t len = 0;
        assert_int_equal(store_get_secret_blob(f->store, "t", "db", "pw", &blob, &len, &err), 0);
        assert_int_equal(len, blen);
        blob[offsets[i]] ^= 0x01;
        assert_int_equal(store_put_secret_blob(f->store, "t", "db", "pw", blob, len, &err), 0);
        free(blob);
        expect_crypto_error(f->sec, "t", "db", "pw");
    }
    /* Truncated and empty blobs. */
    static const uint8_t tiny[] = {1, 2, 3};
    assert_int_equal(store_put_secret_blob(f->store, "t", "db", "pw", tiny, sizeof(tiny), &err), 0);
    expect_crypto_error(f->sec, "t", "db", "pw");
    assert_int_equal(store_put_secret_blob(f->store, "t", "db", "pw", NULL, 0, &err), 0);
    expect_crypto_error(f->sec, "t", "db", "pw");
}

static void test_moved_blob_fails(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    assert_int_equal(secrets_put(f->sec, "t", "db", "password", "p4ss", &err), 0);
    uint8_t *blob = NULL;
    size_t len = 0;
    assert_int_equal(store_get_secret_blob(f->store, "t", "db", "password", &blob, &len, &err), 0);
    static const struct {
        const char *tenant, *secret, *key;
    } targets[] = {
        {"t", "db", "other"},     /* another key of the same Secret */
        {"t", "db2", "password"}, /* same key name in another Secret */
        {"t2", "db", "password"}, /* same names in another tenant */
        {"t", "dbp", "assword"},  /* same concatenation, other split */
        {"t", "db\xff", "password"},
    };
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        assert_int_equal(store_put_secret_blob(f->store, targets[i].tenant, targets[i].secret,
                                               targets[i].key, blob, len, &err),
                         0);
        expect_crypto_error(f->sec, targets[i].tenant, targets[i].secret, targets[i].key);
    }
    free(blob);
    assert_secret(f->sec, "t", "db", "password", "p4ss");
}

/* --- nothing in plaintext ----------------------------------------------------------- */

static void test_no_plaintext_in_sqlite_file(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    const char *marker = "PLAINTEXT-MARKER-7f3a9c1e5b";
    assert_int_equal(secrets_put(f->sec, "t", "visible-secret-name", "pw", marker, &err), 0);
    char *gen = NULL;
    assert_int_equal(
        secrets_ensure(f->sec, "t", "visible-secret-name", "gen", 48, &gen, NULL, &err), 0);

    /* Look at the files both before and after the WAL is checkpointed into the main file. */
    for (int pass = 0; pass < 2; pass++) {
        const char *suffixes[] = {"", "-wal", "-shm"};
        bool seen_name = false;
        for (int i = 0; i < 3; i++) {
            char path[160];
            snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
            size_t len = 0;
            uint8_t *bytes = slurp(path, &len);
            if (!bytes)
                continue;
            assert_null(memmem(bytes, len, marker, strlen(marker)));
            assert_null(memmem(bytes, len, gen, strlen(gen)));
            /* Control: the scan does find what is stored in clear (the names). */
            if (memmem(bytes, len, "visible-secret-name", strlen("visible-secret-name")))
                seen_name = true;
            free(bytes);
        }
        assert_true(seen_name);
        if (pass == 0) {
            store_close(f->store); /* last connection: checkpoints and removes the WAL */
            f->store = NULL;
            assert_int_equal(store_open(&f->store, f->db, &err), 0);
        }
    }
    secrets_free_value(gen);
}

/* Runs fn with stderr redirected to a file, and returns what was logged (owned). */
static char *capture_stderr(const char *dir, void (*fn)(void *), void *arg)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/stderr.log", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t len = 0;
    uint8_t *bytes = slurp(path, &len);
    assert_non_null(bytes);
    char *text = malloc(len + 1);
    memcpy(text, bytes, len);
    text[len] = '\0';
    free(bytes);
    return text;
}

/* --- generated values --------------------------------------------------------------- */

static void test_random_password(void **state)
{
    (void)state;
    char buf[10001];
    assert_int_equal(secrets_random_password(buf, 0), 0);
    assert_string_equal(buf, "");
    assert_int_equal(secrets_random_password(buf, 10000), 0);
    assert_int_equal(strlen(buf), 10000);
    int counts[128] = {0};
    for (size_t i = 0; i < 10000; i++) {
        assert_true(is_alnum_ascii(buf[i]));
        counts[(unsigned char)buf[i]]++;
    }
    /* Every one of the 62 characters shows up (p(miss) ≈ 62·e^-161), none dominates. */
    int seen = 0;
    for (int c = 0; c < 128; c++) {
        if (counts[c]) {
            seen++;
            assert_true(counts[c] < 400); /* expected ≈ 161 */
        }
    }
    assert_int_equal(seen, 62);
}

static void test_ensure_generates_once(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    static const size_t lengths[] = {1, 8, 32, 40, 256};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%zu", lengths[i]);
        char *v1 = NULL, *v2 = NULL;
        bool created = false;
        assert_int_equal(secrets_ensure(f->sec, "t", "gen", key, lengths[i], &v1, &created, &err),
                         0);
        assert_true(created);
        assert_int_equal(strlen(v1), lengths[i]);
        for (size_t j = 0; j < lengths[i]; j++)
            assert_true(is_alnum_ascii(v1[j]));
        /* Second call (even asking for another length) returns the stored value. */
        assert_int_equal(secrets_ensure(f->sec, "t", "gen", key, 12, &v2, &created, &err), 0);
        assert_false(created);
        assert_string_equal(v1, v2);
        assert_secret(f->sec, "t", "gen", key, v1);
        secrets_free_value(v1);
        secrets_free_value(v2);
    }
    /* An existing value set by put is returned, not replaced. */
    assert_int_equal(secrets_put(f->sec, "t", "gen", "given", "mine", &err), 0);
    char *v = NULL;
    assert_int_equal(secrets_ensure(f->sec, "t", "gen", "given", 32, &v, NULL, &err), 0);
    assert_string_equal(v, "mine");
    secrets_free_value(v);
    assert_int_equal(secrets_ensure(f->sec, "t", "gen", "zero", 0, &v, NULL, &err), DBP_EINVAL);
    assert_null(v);
}

/* --- secrets_apply ------------------------------------------------------------------ */

/* A hand-built Secret resource (the spec parser is not used here). */
typedef struct secret_doc {
    spec_resource_t res;
    spec_kv_t kv[2];
    char *gen_keys[2];
} secret_doc_t;

static void make_secret(secret_doc_t *d, const char *user, const char *password)
{
    memset(d, 0, sizeof(*d));
    d->res.kind = SPEC_KIND_SECRET;
    d->res.name.v = (char *)"app-db";
    d->res.name.set = true;
    d->res.tenant.v = (char *)"acme";
    d->kv[0].key = (char *)"username";
    d->kv[0].value = (char *)user;
    d->kv[1].key = (char *)"password";
    d->kv[1].value = (char *)password;
    d->res.u.secret.string_data.v = d->kv;
    d->res.u.secret.string_data.n = 2;
    d->res.u.secret.string_data.set = true;
    d->gen_keys[0] = (char *)"api-token";
    d->gen_keys[1] = (char *)"session-key";
    d->res.u.secret.generate_keys.v = d->gen_keys;
    d->res.u.secret.generate_keys.n = 2;
    d->res.u.secret.generate_keys.set = true;
}

static void test_apply_counts_changes(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    secret_doc_t d;
    make_secret(&d, "app", "Sup3rS3cret");
    int changed = -1;
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), 0);
    assert_int_equal(changed, 4);
    assert_secret(f->sec, "acme", "app-db", "username", "app");
    assert_secret(f->sec, "acme", "app-db", "password", "Sup3rS3cret");
    char *token = NULL;
    assert_int_equal(secrets_get(f->sec, "acme", "app-db", "api-token", &token, &err), 0);
    assert_int_equal(strlen(token), 32); /* default length */

    /* Nothing differs: nothing written, generated values kept. */
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), 0);
    assert_int_equal(changed, 0);
    assert_secret(f->sec, "acme", "app-db", "api-token", token);

    /* One stringData value changes; a new generate key with an explicit length. */
    make_secret(&d, "app", "N3wPassword");
    d.gen_keys[1] = (char *)"extra";
    d.res.u.secret.generate_length.v = 16;
    d.res.u.secret.generate_length.set = true;
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), 0);
    assert_int_equal(changed, 2);
    assert_secret(f->sec, "acme", "app-db", "password", "N3wPassword");
    assert_secret(f->sec, "acme", "app-db", "api-token", token);
    char *extra = NULL;
    assert_int_equal(secrets_get(f->sec, "acme", "app-db", "extra", &extra, &err), 0);
    assert_int_equal(strlen(extra), 16);
    assert_int_equal(secrets_apply(f->sec, &d.res, NULL, &err), 0);
    secrets_free_value(token);
    secrets_free_value(extra);

    /* Only Secrets. */
    d.res.kind = SPEC_KIND_CLUSTER;
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), DBP_EINVAL);
    assert_int_equal(changed, 0);
}

static void test_apply_is_all_or_nothing(void **state)
{
    fixture_t *f = *state;
    dbp_err_t err = {0};
    secret_doc_t d;
    make_secret(&d, "app", "pw");
    /* The stored value of a generate key is corrupted: apply fails, writes nothing. */
    static const uint8_t junk[40] = {1};
    assert_int_equal(
        store_put_secret_blob(f->store, "acme", "app-db", "session-key", junk, sizeof(junk), &err),
        0);
    int changed = -1;
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), DBP_ECRYPTO);
    assert_int_equal(changed, 0);
    assert_non_null(strstr(err.msg, "Secret acme/app-db"));
    char *v = NULL;
    assert_int_equal(secrets_get(f->sec, "acme", "app-db", "username", &v, &err), DBP_ENOENT);
    assert_false(store_in_transaction(f->store));
}

/* Applies a Secret whose values must not be logged. */
static void apply_for_log(void *arg)
{
    fixture_t *f = arg;
    secret_doc_t d;
    make_secret(&d, "log-user-value", "LOG-PASSWORD-VALUE");
    dbp_err_t err = {0};
    int changed = 0;
    assert_int_equal(secrets_apply(f->sec, &d.res, &changed, &err), 0);
    assert_int_equal(changed, 4);
}

static void test_values_never_logged(void **state)
{
    fixture_t *f = *state;
    char *log = capture_stderr(f->dir, apply_for_log, f);
    assert_non_null(strstr(log, "key=password"));
    assert_non_null(strstr(log, "key=api-token"));
    assert_null(strstr(log, "LOG-PASSWORD-VALUE"));
    assert_null(strstr(log, "log-user-value"));
    char *token = NULL;
    dbp_err_t err = {0};
    assert_int_equal(secrets_get(f->sec, "acme", "app-db", "api-token", &token, &err), 0);
    assert_null(strstr(log, token));
    secrets_free_value(token);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_created_0600_and_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_blob_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moved_blob_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_plaintext_in_sqlite_file, setup, teardown),
        cmocka_unit_test(test_random_password),
        cmocka_unit_test_setup_teardown(test_ensure_generates_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_counts_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_is_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_never_logged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
