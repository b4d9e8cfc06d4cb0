/*
 * test_keyed.c: keyed record arrays (src/common/keyed.c). A key is found again at the
 * same record after the array grew and moved, new records are zeroed with their key set,
 * the first allocation has first_cap records and then doubles, and a key longer than
 * the field shares the record of its truncation instead of adding one per call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/keyed.h"

typedef struct rec {
    int before;
    char key[8];
    int value;
} rec_t;

static void test_get_or_add_across_growth(void **state)
{
    (void)state;
    rec_t *v = NULL;
    int n = 0, cap = 0;
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        rec_t *r = DBP_KEYED_GET(v, n, cap, key, key, 4);
        assert_non_null(r);
        assert_int_equal(r->before, 0);
        assert_int_equal(r->value, 0);
        assert_string_equal(r->key, key);
        r->value = i + 100;
        if (i == 0)
            assert_int_equal(cap, 4);
    }
    assert_int_equal(n, 20);
    assert_int_equal(cap, 32);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        rec_t *r = DBP_KEYED_GET(v, n, cap, key, key, 4);
        assert_ptr_equal(r, &v[i]);
        assert_int_equal(r->value, i + 100);
    }
    assert_int_equal(n, 20);
    free(v);
}

static void test_long_key_shares_its_truncation(void **state)
{
    (void)state;
    rec_t *v = NULL;
    int n = 0, cap = 0;
    rec_t *a = DBP_KEYED_GET(v, n, cap, key, "abcdefghij", 4);
    assert_non_null(a);
    assert_string_equal(a->key, "abcdefg");
    rec_t *b = DBP_KEYED_GET(v, n, cap, key, "abcdefghij", 4);
    assert_ptr_equal(a, b);
    rec_t *c = DBP_KEYED_GET(v, n, cap, key, "abcdef", 4);
    assert_ptr_not_equal(a, c);
    assert_int_equal(n, 2);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_or_add_across_growth),
        cmocka_unit_test(test_long_key_shares_its_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
