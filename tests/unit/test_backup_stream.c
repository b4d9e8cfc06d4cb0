/*
 * test_backup_stream.c: the artifact pipeline (src/backup/stream.c) over a posix backup
 * store (src/backup/objstore.c): every codec with and without encryption round-trips
 * with several read sizes; an aborted writer leaves no object; a flipped or truncated
 * stored byte makes reading fail (checksum, authentication or frame), never return good
 * data at the end; backup_rstream_check_stored tells intact stored bytes from corrupt
 * ones after a partial or failed decode; keys that could leave the store are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/stream.h"

static const char KEY[] = "a-backup-key-of-32-characters-ok";

typedef struct fixture {
    char dir[64];
    backup_store_t *s;
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
    strcpy(f->dir, "/tmp/dbp-test-stream-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    backup_store_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = BACKUP_STORE_POSIX;
    snprintf(cfg.name, sizeof(cfg.name), "t");
    snprintf(cfg.posix_path, sizeof(cfg.posix_path), "%s/store", f->dir);
    dbp_err_t err;
    assert_int_equal(backup_store_open(&f->s, &cfg, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    backup_store_close(f->s);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Semi-compressible data: text-like runs with a pseudo-random tail. */
static unsigned char *make_data(size_t n)
{
    unsigned char *d = malloc(n + 1);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        d[i] = (i % 1000) < 700 ? (unsigned char)('a' + (i % 26)) : (unsigned char)(x >> 24);
    }
    return d;
}

static void write_obj(backup_store_t *s, const char *key, const unsigned char *d, size_t n,
                      backup_codec_t codec, bool enc, backup_part_stat_t *st)
{
    backup_obj_writer_t *w;
    dbp_err_t err;
    assert_int_equal(backup_obj_create(s, key, &w, &err), 0);
    backup_codec_opts_t co = {.codec = codec, .key = enc ? KEY : NULL,
                              .key_len = enc ? strlen(KEY) : 0};
    backup_wstream_t *ws;
    assert_int_equal(backup_wstream_open(&ws, w, &co, &err), 0);
    for (size_t off = 0; off < n;) {
        size_t k = n - off < 70001 ? n - off : 70001;
        assert_int_equal(backup_wstream_write(ws, d + off, k, &err), 0);
        off += k;
    }
    assert_int_equal(backup_wstream_finish(ws, st, &err), 0);
}

/* Reads key back with read size `cap`; returns 0 and checks the data, or the error. */
static int read_obj(backup_store_t *s, const char *key, const unsigned char *want, size_t n,
                    backup_codec_t codec, bool enc, const char *sha, size_t cap)
{
    backup_obj_reader_t *r;
    dbp_err_t err;
    int rc = backup_obj_open(s, key, &r, NULL, &err);
    if (rc)
        return rc;
    backup_codec_opts_t co = {.codec = codec, .key = enc ? KEY : NULL,
                              .key_len = enc ? strlen(KEY) : 0, .expect_sha256 = sha};
    backup_rstream_t *rs;
    assert_int_equal(backup_rstream_open(&rs, r, &co, &err), 0);
    unsigned char *buf = malloc(cap);
    size_t got = 0;
    for (;;) {
        long k = backup_rstream_read(rs, buf, cap, &err);
        if (k < 0) {
            rc = (int)k;
            break;
        }
        if (k == 0)
            break;
        if (got + (size_t)k > n || memcmp(want + got, buf, (size_t)k) != 0)
            rc = DBP_EIO; /* wrong bytes: must never happen silently */
        got += (size_t)k;
        if (rc)
            break;
    }
    if (rc == 0 && got != n)
        rc = DBP_EIO;
    free(buf);
    backup_rstream_close(rs);
    return rc;
}

static void test_round_trips(void **state)
{
    fixture_t *f = *state;
    size_t n = 3 * 1024 * 1024 + 17;
    unsigned char *d = make_data(n);
    for (int codec = 0; codec < 3; codec++) {
        for (int enc = 0; enc < 2; enc++) {
            char key[64];
            snprintf(key, sizeof(key), "run/part-%d-%d", codec, enc);
            backup_part_stat_t st;
            write_obj(f->s, key, d, n, (backup_codec_t)codec, enc, &st);
            assert_int_equal(st.raw_bytes, (int64_t)n);
            if (codec != BACKUP_CODEC_NONE)
                assert_true(st.bytes < (int64_t)n);
            static const size_t caps[] = {1, 4096, 1 << 20};
            for (size_t c = 0; c < 3; c++) {
                if (caps[c] == 1 && n > 100000 && codec != BACKUP_CODEC_NONE)
                    continue; /* byte-by-byte over MBs is slow; covered with small data */
                assert_int_equal(read_obj(f->s, key, d, n, (backup_codec_t)codec, enc, st.sha256,
                                          caps[c]),
                                 0);
            }
            dbp_err_t err;
            assert_int_equal(backup_verify_object(f->s, key, st.sha256, st.bytes, &err), 0);
        }
    }
    /* tiny data, byte by byte */
    backup_part_stat_t st;
    write_obj(f->s, "run/tiny", d, 1000, BACKUP_CODEC_ZSTD, true, &st);
    assert_int_equal(read_obj(f->s, "run/tiny", d, 1000, BACKUP_CODEC_ZSTD, true, st.sha256, 1), 0);
    free(d);
}

/* Flips one stored byte (or truncates) and expects every read to fail. */
static void test_corruption_is_detected(void **state)
{
    fixture_t *f = *state;
    size_t n = 600000;
    unsigned char *d = make_data(n);
    for (int codec = 0; codec < 3; codec++) {
        for (int enc = 0; enc < 2; enc++) {
            char key[64], path[256];
            snprintf(key, sizeof(key), "c/part-%d-%d", codec, enc);
            snprintf(path, sizeof(path), "%s/store/%s", f->dir, key);
            backup_part_stat_t st;
            write_obj(f->s, key, d, n, (backup_codec_t)codec, enc, &st);
            FILE *fp = fopen(path, "r+b");
            assert_non_null(fp);
            long where = (long)(st.bytes / 2);
            fseek(fp, where, SEEK_SET);
            int c = fgetc(fp);
            fseek(fp, where, SEEK_SET);
            fputc(c ^ 0x20, fp);
            fclose(fp);
            int rc = read_obj(f->s, key, d, n, (backup_codec_t)codec, enc, st.sha256, 65536);
            assert_int_not_equal(rc, 0);
            dbp_err_t err;
            assert_int_equal(backup_verify_object(f->s, key, st.sha256, st.bytes, &err),
                             DBP_ECRYPTO);
            /* truncation: the checksum (and frame/final chunk) catch it */
            assert_int_equal(truncate(path, st.bytes - 10), 0);
            assert_int_not_equal(read_obj(f->s, key, d, n, (backup_codec_t)codec, enc, st.sha256,
                                          65536),
                                 0);
            /* even without an expected hash, encryption and compression detect truncation */
            if (codec != BACKUP_CODEC_NONE || enc)
                assert_int_not_equal(read_obj(f->s, key, d, n, (backup_codec_t)codec, enc, NULL,
                                              65536),
                                     0);
        }
    }
    free(d);
}

/* Reads key until the first error or `stop_after` decoded bytes, then returns what
 * backup_rstream_check_stored says (err filled). */
static int partial_then_check(backup_store_t *s, const char *key, const char *sha,
                              size_t stop_after, dbp_err_t *err)
{
    backup_obj_reader_t *r;
    assert_int_equal(backup_obj_open(s, key, &r, NULL, err), 0);
    backup_codec_opts_t co = {.codec = BACKUP_CODEC_ZSTD, .expect_sha256 = sha};
    backup_rstream_t *rs;
    assert_int_equal(backup_rstream_open(&rs, r, &co, err), 0);
    unsigned char buf[65536];
    size_t got = 0;
    long k;
    while (got < stop_after && (k = backup_rstream_read(rs, buf, sizeof(buf), err)) > 0)
        got += (size_t)k;
    int rc = backup_rstream_check_stored(rs, err);
    backup_rstream_close(rs);
    return rc;
}

/* A restore that extracts while hashing stops at the first decoding error (or its tool
 * stops reading): the rest of the stored bytes must still decide "checksum mismatch". */
static void test_check_stored(void **state)
{
    fixture_t *f = *state;
    size_t n = 2 * 1024 * 1024;
    unsigned char *d = make_data(n);
    backup_part_stat_t st;
    write_obj(f->s, "k/part", d, n, BACKUP_CODEC_ZSTD, false, &st);
    dbp_err_t err;
    assert_int_equal(partial_then_check(f->s, "k/part", st.sha256, 65536, &err), 0);
    assert_int_equal(partial_then_check(f->s, "k/part", st.sha256, n + 1, &err), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/store/k/part", f->dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    long where = (long)(st.bytes - 100); /* past what the partial read below takes */
    fseek(fp, where, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, where, SEEK_SET);
    fputc(c ^ 0x01, fp);
    fclose(fp);
    assert_int_equal(partial_then_check(f->s, "k/part", st.sha256, 65536, &err), DBP_ECRYPTO);
    assert_non_null(strstr(err.msg, "checksum mismatch"));
    assert_int_equal(partial_then_check(f->s, "k/part", st.sha256, n + 1, &err), DBP_ECRYPTO);
    assert_non_null(strstr(err.msg, "checksum mismatch"));
    free(d);
}

static int count_cb(const char *key, int64_t size, void *ud)
{
    (void)key;
    (void)size;
    (*(int *)ud)++;
    return 0;
}

static void test_abort_leaves_nothing(void **state)
{
    fixture_t *f = *state;
    backup_obj_writer_t *w;
    dbp_err_t err;
    assert_int_equal(backup_obj_create(f->s, "a/b/c", &w, &err), 0);
    backup_codec_opts_t co = {.codec = BACKUP_CODEC_ZSTD};
    backup_wstream_t *ws;
    assert_int_equal(backup_wstream_open(&ws, w, &co, &err), 0);
    assert_int_equal(backup_wstream_write(ws, "hello", 5, &err), 0);
    backup_wstream_abort(ws);
    int n = 0;
    assert_int_equal(backup_store_list(f->s, "", count_cb, &n, &err), 0);
    assert_int_equal(n, 0);
    backup_obj_reader_t *r;
    assert_int_equal(backup_obj_open(f->s, "a/b/c", &r, NULL, &err), DBP_ENOENT);
    /* delete_dir removes a whole run */
    assert_int_equal(backup_store_put(f->s, "run1/x", "1", 1, &err), 0);
    assert_int_equal(backup_store_put(f->s, "run1/manifest.json", "{}", 2, &err), 0);
    assert_int_equal(backup_store_put(f->s, "run10/x", "1", 1, &err), 0);
    int deleted = 0;
    assert_int_equal(backup_store_delete_dir(f->s, "run1", &deleted, &err), 0);
    assert_int_equal(deleted, 2);
    n = 0;
    assert_int_equal(backup_store_list(f->s, "", count_cb, &n, &err), 0);
    assert_int_equal(n, 1);
}

static void test_keys(void **state)
{
    (void)state;
    assert_true(backup_key_valid("a/b-c_d.e/f"));
    assert_false(backup_key_valid(""));
    assert_false(backup_key_valid("/abs"));
    assert_false(backup_key_valid("a/../b"));
    assert_false(backup_key_valid("a//b"));
    assert_false(backup_key_valid("a/./b"));
    assert_false(backup_key_valid("a b"));
    assert_false(backup_key_valid("a/"));
    assert_int_equal(backup_codec_parse("zstd"), BACKUP_CODEC_ZSTD);
    assert_int_equal(backup_codec_parse("brotli"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_is_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
