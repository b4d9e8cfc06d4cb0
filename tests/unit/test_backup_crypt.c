/*
 * test_backup_crypt.c: the chunked AES-256-GCM format of src/backup/crypt.c: round trips
 * of several sizes, and every way a stream can be tampered with (flipped byte in a
 * chunk, in the header, reordered or dropped chunks, wrong key, data after the final
 * chunk) must fail authentication.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "backup/crypt.h"

static const char KEY[] = "0123456789abcdef-a-test-secret";

/* Encrypts pt (n bytes) in chunks of cs into a fresh buffer; returns its length. */
static size_t seal_all(const uint8_t *pt, size_t n, size_t cs, uint8_t **out)
{
    size_t cap = BACKUP_CRYPT_HEADER + (n / cs + 2) * (cs + BACKUP_CRYPT_CHUNK_OVERHEAD);
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    backup_crypt_t *c;
    dbp_err_t err;
    assert_int_equal(backup_crypt_enc_init(&c, KEY, strlen(KEY), cs, buf, &err), 0);
    size_t o = BACKUP_CRYPT_HEADER, off = 0;
    do {
        size_t k = n - off < cs ? n - off : cs;
        bool final = off + k == n;
        size_t l = 0;
        assert_int_equal(backup_crypt_seal(c, pt + off, k, final, buf + o, &l, &err), 0);
        o += l;
        off += k;
        if (final)
            break;
    } while (1);
    assert_true(backup_crypt_done(c));
    backup_crypt_free(c);
    *out = buf;
    return o;
}

/* Decrypts a whole stream; returns 0 and the plaintext, or the first error. */
static int open_all(const uint8_t *ct, size_t len, const char *key, uint8_t **pt, size_t *ptlen)
{
    backup_crypt_t *c;
    dbp_err_t err;
    if (len < BACKUP_CRYPT_HEADER)
        return DBP_ECRYPTO;
    int rc = backup_crypt_dec_init(&c, key, strlen(key), ct, &err);
    if (rc)
        return rc;
    uint8_t *out = malloc(len + 1);
    size_t o = 0, i = BACKUP_CRYPT_HEADER;
    while (rc == 0 && i < len) {
        if (len - i < 4) {
            rc = DBP_ECRYPTO;
            break;
        }
        size_t total = backup_crypt_chunk_total(c, ct + i);
        if (total == 0 || total > len - i) {
            rc = DBP_ECRYPTO;
            break;
        }
        size_t l = 0;
        bool final = false;
        rc = backup_crypt_open(c, ct + i, total, out + o, &l, &final, &err);
        o += l;
        i += total;
    }
    if (rc == 0 && !backup_crypt_done(c))
        rc = DBP_ECRYPTO; /* truncated */
    backup_crypt_free(c);
    if (rc) {
        free(out);
        return rc;
    }
    *pt = out;
    *ptlen = o;
    return 0;
}

static void test_round_trips(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 4095, 4096, 4097, 3 * 4096, 100000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        uint8_t *pt = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            pt[i] = (uint8_t)(i * 31 + 7);
        uint8_t *ct, *back;
        size_t clen = seal_all(pt, n, 4096, &ct), blen = 0;
        assert_int_equal(open_all(ct, clen, KEY, &back, &blen), 0);
        assert_int_equal(blen, n);
        if (n)
            assert_memory_equal(back, pt, n);
        free(back);
        free(ct);
        free(pt);
    }
}

static void test_tampering_fails(void **state)
{
    (void)state;
    size_t n = 10000;
    uint8_t *pt = malloc(n);
    memset(pt, 'x', n);
    uint8_t *ct, *back;
    size_t blen;
    size_t clen = seal_all(pt, n, 4096, &ct);
    /* a flipped byte anywhere after the magic fails (header, length, nonce, data, tag) */
    for (size_t pos = 16; pos < clen; pos += 97) {
        ct[pos] ^= 0x01;
        assert_int_not_equal(open_all(ct, clen, KEY, &back, &blen), 0);
        ct[pos] ^= 0x01;
    }
    /* wrong key */
    assert_int_not_equal(open_all(ct, clen, "another key, 16+ bytes", &back, &blen), 0);
    /* truncation: drop the final chunk */
    size_t chunk = 4096 + BACKUP_CRYPT_CHUNK_OVERHEAD;
    assert_int_not_equal(open_all(ct, BACKUP_CRYPT_HEADER + 2 * chunk, KEY, &back, &blen), 0);
    /* reorder: swap the first two chunks */
    uint8_t *sw = malloc(clen);
    memcpy(sw, ct, clen);
    memcpy(sw + BACKUP_CRYPT_HEADER, ct + BACKUP_CRYPT_HEADER + chunk, chunk);
    memcpy(sw + BACKUP_CRYPT_HEADER + chunk, ct + BACKUP_CRYPT_HEADER, chunk);
    assert_int_not_equal(open_all(sw, clen, KEY, &back, &blen), 0);
    /* data after the final chunk */
    uint8_t *ext = malloc(clen + chunk);
    memcpy(ext, ct, clen);
    memcpy(ext + clen, ct + BACKUP_CRYPT_HEADER, chunk);
    assert_int_not_equal(open_all(ext, clen + chunk, KEY, &back, &blen), 0);
    /* the untouched stream still opens */
    assert_int_equal(open_all(ct, clen, KEY, &back, &blen), 0);
    assert_int_equal(blen, n);
    free(back);
    free(ext);
    free(sw);
    free(ct);
    free(pt);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    backup_crypt_t *c;
    uint8_t hdr[BACKUP_CRYPT_HEADER];
    dbp_err_t err;
    assert_int_equal(backup_crypt_enc_init(&c, "short", 5, 0, hdr, &err), DBP_EINVAL);
    assert_int_equal(backup_crypt_enc_init(&c, KEY, strlen(KEY), 0, hdr, &err), 0);
    uint8_t pt[8] = {0}, out[64];
    size_t l;
    assert_int_equal(backup_crypt_seal(c, pt, 8, true, out, &l, &err), 0);
    assert_int_equal(backup_crypt_seal(c, pt, 8, false, out, &l, &err), DBP_EINVAL);
    backup_crypt_free(c);
    memset(hdr, 0, sizeof(hdr));
    assert_int_equal(backup_crypt_dec_init(&c, KEY, strlen(KEY), hdr, &err), DBP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_tampering_fails),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
