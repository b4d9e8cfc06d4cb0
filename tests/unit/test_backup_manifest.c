/*
 * test_backup_manifest.c: manifests (src/backup/manifest.c) survive a dump/parse round
 * trip, and the parser rejects what restore must never follow: unsafe part names, bad
 * hashes, negative sizes, unknown types, duplicate keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/manifest.h"

static const char SHA[] = "996b5d08816496730629909bc0d9f657c10e8cc117e5f431a315be5948fec418";

static void fill(backup_manifest_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "pg-20261122T033000Z-logical");
    snprintf(m->tenant, sizeof(m->tenant), "default");
    snprintf(m->cluster, sizeof(m->cluster), "pg");
    snprintf(m->backup, sizeof(m->backup), "pg-nightly");
    snprintf(m->engine, sizeof(m->engine), "postgresql");
    snprintf(m->engine_version, sizeof(m->engine_version), "15.8");
    snprintf(m->type, sizeof(m->type), "logical");
    snprintf(m->source, sizeof(m->source), "pg-1");
    snprintf(m->start_position, sizeof(m->start_position), "0/3000028");
    snprintf(m->compression, sizeof(m->compression), "zstd");
    m->encrypted = true;
    m->started_ms = 1795411610647;
    m->finished_ms = 1795411611000;
    m->nparts = 2;
    snprintf(m->parts[0].name, sizeof(m->parts[0].name), "globals.sql.zst.enc");
    snprintf(m->parts[0].kind, sizeof(m->parts[0].kind), "globals");
    snprintf(m->parts[1].name, sizeof(m->parts[1].name), "db-1.dump.zst.enc");
    snprintf(m->parts[1].kind, sizeof(m->parts[1].kind), "database");
    snprintf(m->parts[1].database, sizeof(m->parts[1].database), "shop");
    for (int i = 0; i < 2; i++) {
        snprintf(m->parts[i].sha256, sizeof(m->parts[i].sha256), "%s", SHA);
        m->parts[i].bytes = 100 + i;
        m->parts[i].raw_bytes = 1000 + i;
    }
    m->ndbs = 1;
    snprintf(m->dbs[0].name, sizeof(m->dbs[0].name), "shop");
    m->dbs[0].tables = 7;
}

static void test_round_trip(void **state)
{
    (void)state;
    backup_manifest_t *m = malloc(sizeof(*m)), *back = malloc(sizeof(*back));
    fill(m);
    char *s = backup_manifest_dump(m);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"format\": \"dbplane-backup/1\""));
    assert_non_null(strstr(s, "\"started_at\": \"2026-11-23T05:26:50Z\""));
    dbp_err_t err;
    assert_int_equal(backup_manifest_parse(s, strlen(s), back, &err), 0);
    assert_string_equal(back->id, m->id);
    assert_string_equal(back->start_position, "0/3000028");
    assert_true(back->encrypted);
    assert_int_equal(back->nparts, 2);
    assert_string_equal(back->parts[1].database, "shop");
    assert_int_equal(back->parts[1].raw_bytes, 1001);
    assert_string_equal(back->parts[0].sha256, SHA);
    assert_int_equal(back->ndbs, 1);
    assert_int_equal(back->dbs[0].tables, 7);
    free(s);
    free(m);
    free(back);
}

/* Replaces the first `from` in the dump of a good manifest by `to` and parses it. */
static int parse_mutated(const char *from, const char *to, char *msg, size_t cap)
{
    backup_manifest_t *m = malloc(sizeof(*m));
    fill(m);
    char *s = backup_manifest_dump(m);
    char *at = strstr(s, from);
    assert_non_null(at);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *t = malloc(n);
    snprintf(t, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    dbp_err_t err = {0};
    int rc = backup_manifest_parse(t, strlen(t), m, &err);
    snprintf(msg, cap, "%s", err.msg);
    free(t);
    free(s);
    free(m);
    return rc;
}

static void test_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to, *msg;
    } bad[] = {
        {"\"globals.sql.zst.enc\"", "\"../../etc/passwd\"", "safe part name"},
        {"\"globals.sql.zst.enc\"", "\"a/b\"", "safe part name"},
        {"\"globals.sql.zst.enc\"", "\"manifest.json\"", "safe part name"},
        {"\"db-1.dump.zst.enc\"", "\"globals.sql.zst.enc\"", "repeats"},
        {"\"sha256\": \"996b", "\"sha256\": \"Z96b", "64 hex"},
        {"\"bytes\": 100", "\"bytes\": -1", "non-negative"},
        {"\"type\": \"logical\"", "\"type\": \"other\"", "logical or physical"},
        {"\"compression\": \"zstd\"", "\"compression\": \"lz4\"", "unknown compression"},
        {"\"format\": \"dbplane-backup/1\"", "\"format\": \"x/2\"", "unknown format"},
        {"\"cluster\": \"pg\"", "\"cluster\": \"pg\", \"cluster\": \"other\"", "not JSON"},
        {"\"kind\": \"database\"", "\"kind\": \"tablespace\"", "unknown"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[512];
        int rc = parse_mutated(bad[i].from, bad[i].to, msg, sizeof(msg));
        if (rc != DBP_EINVAL || !strstr(msg, bad[i].msg))
            fail_msg("mutation %zu (%s): rc %d msg '%s'", i, bad[i].to, rc, msg);
    }
    dbp_err_t err;
    backup_manifest_t *m = malloc(sizeof(*m));
    assert_int_equal(backup_manifest_parse("[]", 2, m, &err), DBP_EINVAL);
    assert_int_equal(backup_manifest_parse("{", 1, m, &err), DBP_EINVAL);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
