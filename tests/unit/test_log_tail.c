/*
 * test_log_tail.c: the last qualifying line of a log file (src/common/log.c,
 * dbp_log_tail_line), which both a failed tool's error message (dbp_pipe_last_log_line)
 * and a server-log quote in an event (engine_log_last_match) come from. Checked: the last
 * non-empty line wins, CRLF ends are dropped, marks pick the last matching line, password
 * lines are skipped only when asked, only the file's last tail_bytes are searched, a
 * line longer than the buffer is truncated, and a missing file gives "".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pipe.h"
#include "engines/engine.h"

/* Writes `text` to a new temporary file; its path is copied into path (64 bytes). */
static void write_log(char *path, const char *text)
{
    snprintf(path, 64, "/tmp/dbp-test-log-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static void test_last_non_empty_line(void **state)
{
    (void)state;
    char path[64], buf[128];
    write_log(path, "first\nsecond line\r\n\n\n");
    dbp_log_tail_t any = {.tail_bytes = 4096};
    dbp_log_tail_line(path, &any, buf, sizeof(buf));
    assert_string_equal(buf, "second line");
    dbp_pipe_last_log_line(path, buf, sizeof(buf));
    assert_string_equal(buf, "second line");
    unlink(path);
}

static void test_marks_and_passwords(void **state)
{
    (void)state;
    char path[64], buf[128];
    write_log(path, "LOG:  starting\n"
                    "FATAL:  could not receive data: new timeline 2 forked off\n"
                    "LOG:  waiting for WAL\n"
                    "ERROR:  syntax error at ALTER ROLE x PASSWORD 'secret'\n"
                    "LOG:  done\n");
    const char *const marks[] = {"FATAL", "ERROR", NULL};
    dbp_log_tail_t t = {.tail_bytes = 4096, .marks = marks, .skip_password = true};
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_string_equal(buf, "FATAL:  could not receive data: new timeline 2 forked off");
    engine_log_last_match(path, marks, buf, sizeof(buf));
    assert_string_equal(buf, "FATAL:  could not receive data: new timeline 2 forked off");
    t.skip_password = false;
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_non_null(strstr(buf, "PASSWORD"));
    const char *const none[] = {"PANIC", NULL};
    t.marks = none;
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_string_equal(buf, "");
    unlink(path);
}

static void test_window_truncation_and_missing_file(void **state)
{
    (void)state;
    char path[64], buf[16];
    /* The mark sits more than tail_bytes before the end: not found. */
    char text[600];
    snprintf(text, sizeof(text), "FATAL: early\n%0500d\n", 0);
    write_log(path, text);
    const char *const marks[] = {"FATAL", NULL};
    dbp_log_tail_t t = {.tail_bytes = 100, .marks = marks};
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_string_equal(buf, "");
    t.tail_bytes = 4096;
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_string_equal(buf, "FATAL: early");
    /* A line longer than buf is cut to len - 1 bytes. */
    t.marks = NULL;
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_int_equal(strlen(buf), sizeof(buf) - 1);
    unlink(path);
    dbp_log_tail_line(path, &t, buf, sizeof(buf));
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_non_empty_line),
        cmocka_unit_test(test_marks_and_passwords),
        cmocka_unit_test(test_window_truncation_and_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
