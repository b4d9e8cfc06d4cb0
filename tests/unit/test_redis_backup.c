/*
 * test_redis_backup.c: the reader of a Redis full-resync transfer (rdb_read_transfer in
 * src/engines/redis_backup.c), fed through a pipe by a forked writer in odd-sized pieces:
 * an EOF-marked (diskless) transfer whose payload ends with most of the mark, a
 * length-prefixed one followed by replication traffic that must not be written, an error
 * reply, a transfer cut before its end mark, and a malformed header.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engines/redis_int.h"

#define MARK "0123456789abcdef0123456789abcdef01234567" /* 40 bytes */

typedef struct sink {
    char *buf;
    size_t len, cap;
} sink_t;

static int sink_write(void *ud, const void *buf, size_t len, dbp_err_t *err)
{
    (void)err;
    sink_t *s = ud;
    if (s->len + len > s->cap) {
        s->cap = (s->len + len) * 2;
        s->buf = realloc(s->buf, s->cap);
        assert_non_null(s->buf);
    }
    memcpy(s->buf + s->len, buf, len);
    s->len += len;
    return 0;
}

/* Runs rdb_read_transfer over a pipe whose other end a child writes `wire` into, in
 * pieces of 1, 7, 40, 1000, 65536 bytes in turn, then closes. */
static int transfer(const char *wire, size_t len, engine_backup_info_t *info, sink_t *out,
                    dbp_err_t *err)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        static const size_t pieces[] = {1, 7, 40, 1000, 65536};
        for (size_t off = 0, i = 0; off < len; i++) {
            size_t n = pieces[i % 5] < len - off ? pieces[i % 5] : len - off;
            if (write(fds[1], wire + off, n) != (ssize_t)n)
                _exit(1);
            off += n;
        }
        _exit(0);
    }
    close(fds[1]);
    memset(info, 0, sizeof(*info));
    memset(out, 0, sizeof(*out));
    int rc = rdb_read_transfer(fds[0], info, sink_write, out, err);
    close(fds[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return rc;
}

/* A payload of n pseudo-random bytes (the RDB), owned. */
static char *payload(size_t n)
{
    char *p = malloc(n);
    assert_non_null(p);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)(x >> 16);
    }
    return p;
}

static void test_eof_marked_transfer(void **state)
{
    (void)state;
    size_t n = 600 * 1024;
    char *rdb = payload(n);
    memcpy(rdb + n - 40, MARK, 39); /* almost the mark, then one other byte */
    rdb[n - 1] = 'x';
    const char *head = "\n\n+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 1234\r\n"
                       "\n\n\n$EOF:" MARK "\r\n";
    size_t hl = strlen(head), len = hl + n + 40;
    char *wire = malloc(len);
    memcpy(wire, head, hl);
    memcpy(wire + hl, rdb, n);
    memcpy(wire + hl + n, MARK, 40);
    engine_backup_info_t info;
    sink_t out;
    dbp_err_t err;
    assert_int_equal(transfer(wire, len, &info, &out, &err), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.buf, rdb, n);
    assert_string_equal(info.start_position, "1234");
    assert_string_equal(info.timeline, "8de1787ba490483314a4d30f1c628bc5025eb761");
    free(out.buf);
    free(wire);
    free(rdb);
}

static void test_length_prefixed_transfer_stops_at_its_length(void **state)
{
    (void)state;
    size_t n = 300 * 1024 + 17;
    char *rdb = payload(n);
    char head[128];
    snprintf(head, sizeof(head), "+FULLRESYNC abc 7\r\n\n$%zu\r\n", n);
    const char *tail = "*1\r\n$4\r\nPING\r\n"; /* the command stream after the RDB */
    size_t hl = strlen(head), tl = strlen(tail), len = hl + n + tl;
    char *wire = malloc(len);
    memcpy(wire, head, hl);
    memcpy(wire + hl, rdb, n);
    memcpy(wire + hl + n, tail, tl);
    engine_backup_info_t info;
    sink_t out;
    dbp_err_t err;
    assert_int_equal(transfer(wire, len, &info, &out, &err), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.buf, rdb, n);
    assert_string_equal(info.start_position, "7");
    free(out.buf);
    free(wire);
    free(rdb);
}

static void test_error_reply(void **state)
{
    (void)state;
    const char *wire = "\n-NOMASTERLINK Can't SYNC while not connected with my master\r\n";
    engine_backup_info_t info;
    sink_t out;
    dbp_err_t err;
    assert_int_equal(transfer(wire, strlen(wire), &info, &out, &err), DBP_EENGINE);
    assert_non_null(strstr(err.msg, "NOMASTERLINK"));
    assert_int_equal(out.len, 0);
    free(out.buf);
}

static void test_cut_before_the_end_mark(void **state)
{
    (void)state;
    char *rdb = payload(100000);
    const char *head = "+FULLRESYNC abc 1\r\n$EOF:" MARK "\r\n";
    size_t hl = strlen(head), len = hl + 100000;
    char *wire = malloc(len);
    memcpy(wire, head, hl);
    memcpy(wire + hl, rdb, 100000);
    engine_backup_info_t info;
    sink_t out;
    dbp_err_t err;
    assert_int_equal(transfer(wire, len, &info, &out, &err), DBP_EIO);
    assert_non_null(strstr(err.msg, "closed"));
    free(out.buf);
    free(wire);
    free(rdb);
}

static void test_malformed_headers(void **state)
{
    (void)state;
    static const char *const wires[] = {
        "+CONTINUE\r\n",                         /* not a full resync */
        "+FULLRESYNC abc 1\r\n$EOF:short\r\nxx", /* mark of the wrong length */
        "+FULLRESYNC abc 1\r\n$-5\r\n",          /* negative length */
        "+FULLRESYNC abc 1\r\n*3\r\n",           /* not a bulk transfer */
    };
    for (size_t i = 0; i < sizeof(wires) / sizeof(wires[0]); i++) {
        engine_backup_info_t info;
        sink_t out;
        dbp_err_t err;
        assert_int_equal(transfer(wires[i], strlen(wires[i]), &info, &out, &err), DBP_EIO);
        assert_int_equal(out.len, 0);
        free(out.buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eof_marked_transfer),
        cmocka_unit_test(test_length_prefixed_transfer_stops_at_its_length),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_cut_before_the_end_mark),
        cmocka_unit_test(test_malformed_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
