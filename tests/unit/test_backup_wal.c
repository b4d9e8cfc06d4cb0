/*
 * test_backup_wal.c: the pure parts of WAL archiving (src/backup/wal.c): which names are
 * archived WAL files, LSN to segment number, the recovery target written for
 * PostgreSQL, and wal-push / wal-fetch on real files (a retried push of the same
 * segment succeeds, a different one with the same name is refused, a fetch of a missing
 * file is DBP_ENOENT).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup_int.h"

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool valid;
    } cases[] = {
        {"000000010000000000000003", true},
        {"00000002.history", true},
        {"000000010000000000000003.partial", true},
        {"000000010000000000000003.00000028.backup", true},
        {"00000001000000000000000g", false},  /* lower case / not hex */
        {"0000000100000000000000030", false}, /* 25 digits */
        {"../00000002.history", false},
        {"RECOVERYHISTORY", false},
        {"", false},
        {".000000010000000000000003.tmp.12", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (backup_wal_name_valid(cases[i].name) != cases[i].valid)
            fail_msg("%s: want %d", cases[i].name, cases[i].valid);
}

static void test_lsn_segno(void **state)
{
    (void)state;
    assert_int_equal(backup_wal_lsn_segno("0/3000028"), 3);
    assert_int_equal(backup_wal_lsn_segno("1/0"), 256); /* 256 segments of 16 MiB per id */
    assert_int_equal(backup_wal_lsn_segno("A/FF000000"), 10 * 256 + 255);
    assert_int_equal(backup_wal_lsn_segno("nonsense"), 0);
    assert_int_equal(backup_wal_lsn_segno(NULL), 0);
}

static void test_pitr_target(void **state)
{
    (void)state;
    char out[64];
    int64_t ms = 0;
    dbp_err_t err;
    assert_int_equal(bk_pitr_target("2026-11-22T05:30:00.123+02:00", out, sizeof(out), &ms, &err),
                     0);
    assert_string_equal(out, "2026-11-22 03:30:00.123+00");
    assert_int_equal(ms % 1000, 123);
    assert_int_equal(bk_pitr_target("2026-11-22T03:30:00Z", out, sizeof(out), &ms, &err), 0);
    assert_string_equal(out, "2026-11-22 03:30:00+00");
    assert_int_equal(ms, 1795318200000LL);
    assert_int_equal(bk_pitr_target("yesterday", out, sizeof(out), &ms, &err), DBP_EINVAL);
    assert_non_null(strstr(err.msg, "point in time"));
    assert_int_equal(bk_pitr_target("2026-11-22T03:30:00", out, sizeof(out), &ms, &err),
                     DBP_EINVAL); /* no zone */
}

static void write_str(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void test_push_fetch(void **state)
{
    (void)state;
    char root[] = "/tmp/dbp-wal-test-XXXXXX";
    assert_non_null(mkdtemp(root));
    char spool[128], src[128], other[128], dest[128], path[192];
    snprintf(spool, sizeof(spool), "%s/spool", root);
    snprintf(src, sizeof(src), "%s/seg", root);
    snprintf(other, sizeof(other), "%s/other", root);
    snprintf(dest, sizeof(dest), "%s/restored", root);
    assert_int_equal(mkdir(spool, 0700), 0);
    write_str(src, "segment bytes");
    write_str(other, "other bytes!!");
    const char *name = "000000010000000000000007";
    dbp_err_t err;
    assert_int_equal(backup_wal_push(spool, src, name, 0, NULL, &err), 0);
    assert_int_equal(backup_wal_push(spool, src, name, 0, NULL, &err), 0); /* a retry */
    assert_int_equal(backup_wal_push(spool, other, name, 0, NULL, &err), DBP_EBUSY);
    assert_int_equal(backup_wal_push(spool, src, "../escape", 0, NULL, &err), DBP_EINVAL);
    snprintf(path, sizeof(path), "%s/%s", spool, name);
    assert_true(dbp_file_equals(path, "segment bytes", 13));
    assert_int_equal(backup_wal_fetch(spool, name, dest, &err), 0);
    assert_true(dbp_file_equals(dest, "segment bytes", 13));
    assert_int_equal(backup_wal_fetch(spool, "000000010000000000000008", dest, &err),
                     DBP_ENOENT);
    assert_int_equal(backup_wal_fetch(spool, "/etc/passwd", dest, &err), DBP_EINVAL);
    assert_int_equal(dbp_rm_rf(root, &err), 0);
}

/* A spool at its bound lets the next file go (recorded in the dropped list) instead of
 * growing; a file that fits is still copied, and a file already there is still a retry. */
static void test_push_queue_bound(void **state)
{
    (void)state;
    char root[] = "/tmp/dbp-wal-test-XXXXXX";
    assert_non_null(mkdtemp(root));
    char spool[128], src[128], path[192];
    snprintf(spool, sizeof(spool), "%s/spool", root);
    snprintf(src, sizeof(src), "%s/seg", root);
    assert_int_equal(mkdir(spool, 0700), 0);
    write_str(src, "0123456789"); /* 10 bytes */
    dbp_err_t err;
    bool dropped = true;
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000001", 25, &dropped, &err),
                     0);
    assert_false(dropped);
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000002", 25, &dropped, &err),
                     0);
    assert_false(dropped);
    /* 20 bytes queued + 10 > 25: dropped, twice, and listed in order. */
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000003", 25, &dropped, &err),
                     0);
    assert_true(dropped);
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000004", 25, &dropped, &err),
                     0);
    assert_true(dropped);
    snprintf(path, sizeof(path), "%s/000000010000000000000003", spool);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/" BACKUP_WAL_DROPPED, spool);
    const char *list = "000000010000000000000003\n000000010000000000000004\n";
    assert_true(dbp_file_equals(path, list, strlen(list)));
    /* A timeline history file is kept whatever the bound. */
    assert_int_equal(backup_wal_push(spool, src, "00000002.history", 25, &dropped, &err), 0);
    assert_false(dropped);
    snprintf(path, sizeof(path), "%s/00000002.history", spool);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(unlink(path), 0);
    /* A retry of a file already queued is success, full or not. */
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000002", 25, &dropped, &err),
                     0);
    assert_false(dropped);
    /* Once the store took one, the next fits again; no bound (0) never drops. */
    snprintf(path, sizeof(path), "%s/000000010000000000000001", spool);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000005", 25, &dropped, &err),
                     0);
    assert_false(dropped);
    assert_int_equal(backup_wal_push(spool, src, "000000010000000000000006", 0, &dropped, &err),
                     0);
    assert_false(dropped);
    assert_int_equal(dbp_rm_rf(root, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_lsn_segno),
        cmocka_unit_test(test_pitr_target),
        cmocka_unit_test(test_push_fetch),
        cmocka_unit_test(test_push_queue_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
