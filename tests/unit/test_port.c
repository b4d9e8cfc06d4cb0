/*
 * test_port.c: loopback port checks and per-data-dir scan starts (src/common/port.c). A
 * port something listens on is not free, and is free again once closed; a data dir always
 * starts its scan at the same block-aligned port inside the range; different data dirs
 * spread over the blocks; a range smaller than a block starts at its first port.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/port.h"

static void test_listening_port_is_not_free(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    int port = ntohs(a.sin_port);
    assert_false(dbp_port_free(port));
    close(fd);
    assert_true(dbp_port_free(port));
}

static void test_scan_start_is_stable_aligned_and_spread(void **state)
{
    (void)state;
    const int first = 25432, last = 29999;
    int s1 = dbp_port_scan_start("/var/lib/dbplane", first, last, 16);
    assert_int_equal(s1, dbp_port_scan_start("/var/lib/dbplane", first, last, 16));
    assert_true(s1 >= first && s1 + 15 <= last);
    assert_int_equal((s1 - first) % 16, 0);
    /* 64 data dirs land in many different blocks (a fixed start would put all on one). */
    int distinct = 0, seen[64];
    for (int i = 0; i < 64; i++) {
        char dir[64];
        snprintf(dir, sizeof(dir), "/tmp/dbplane-it-%d/data", i);
        int s = dbp_port_scan_start(dir, first, last, 16);
        assert_true(s >= first && s + 15 <= last);
        bool dup = false;
        for (int k = 0; k < distinct; k++)
            dup = dup || seen[k] == s;
        if (!dup)
            seen[distinct++] = s;
    }
    assert_true(distinct > 40);
    /* A range smaller than one block, or no block size: its first port. */
    assert_int_equal(dbp_port_scan_start("/x", 30000, 30007, 16), 30000);
    assert_int_equal(dbp_port_scan_start("/x", 30000, 30999, 0), 30000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listening_port_is_not_free),
        cmocka_unit_test(test_scan_start_is_stable_aligned_and_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
