/*
 * manifest.h: the manifest of a backup run, a JSON document stored as
 * "<run dir>/manifest.json" and written LAST: a run directory without one is not a
 * backup, whatever else it holds. It records what the run is (cluster, engine and
 * version, type, start/end position, times), how its parts are encoded (compression,
 * encryption) and, for every part, its size before and after encoding and the SHA-256 of
 * the stored bytes, which restore and verification check before trusting anything.
 *
 * Format "dbplane-backup/1" (unknown fields are ignored, so later versions can add):
 *   {"format": "dbplane-backup/1", "id", "tenant", "cluster", "backup", "engine",
 *    "engine_version", "type": "logical|physical", "source", "start_position",
 *    "end_position", "timeline", "started_at", "finished_at" (RFC 3339 UTC),
 *    "started_ms", "finished_ms", "compression": "zstd|gzip|none", "encrypted": bool,
 *    "parts": [{"name", "kind": "data|globals|database", "database", "bytes",
 *               "raw_bytes", "sha256"}],
 *    "databases": [{"name", "tables"}]}
 *
 * The parser is strict about what restore relies on (part names are single safe path
 * segments, hashes are 64 hex digits, sizes are non-negative), so a tampered manifest is
 * rejected rather than followed outside the run directory.
 */
#ifndef DBP_BACKUP_MANIFEST_H
#define DBP_BACKUP_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define BACKUP_MANIFEST_FORMAT "dbplane-backup/1"
#define BACKUP_MANIFEST_MAX_PARTS 256
#define BACKUP_MANIFEST_MAX_BYTES (1024 * 1024)

/* One stored artifact of a run. */
typedef struct backup_part {
    char name[128];     /* object name inside the run directory, e.g. "data.tar.zst" */
    char kind[16];      /* "data" (physical), "globals" or "database" (logical) */
    char database[64];  /* kind "database": the database it holds */
    int64_t bytes;      /* stored (encoded) size */
    int64_t raw_bytes;  /* size before compression/encryption */
    char sha256[65];    /* hex SHA-256 of the stored bytes */
} backup_part_t;

/* A database's table count at backup time (for verification). */
typedef struct backup_db_count {
    char name[64];
    int64_t tables;
} backup_db_count_t;

/* A whole manifest. Fixed-size so it can be copied; parts and databases are bounded. */
typedef struct backup_manifest {
    char id[96];
    char tenant[64];
    char cluster[64];
    char backup[64];         /* Backup resource, "" for ad hoc */
    char engine[16];
    char engine_version[64];
    char type[16];           /* "logical" | "physical" */
    char source[96];
    char start_position[128];
    char end_position[128];
    char timeline[48];       /* PG timeline (decimal), Redis replication ID */
    int64_t started_ms, finished_ms;
    char compression[8];     /* "zstd" | "gzip" | "none" */
    bool encrypted;
    int nparts;
    backup_part_t parts[BACKUP_MANIFEST_MAX_PARTS];
    int ndbs;
    backup_db_count_t dbs[64];
} backup_manifest_t;

/* Serialises m as indented JSON: returns owned text (free with free()), NULL when out of
 * memory. */
char *backup_manifest_dump(const backup_manifest_t *m);

/* Parses and validates a manifest of len bytes (borrowed) into *m. Returns 0, or
 * DBP_EINVAL with the first problem in err ("manifest: parts[2].sha256: ..."). */
int backup_manifest_parse(const char *buf, size_t len, backup_manifest_t *m, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* True when `name` is a valid part name: 1..127 bytes of [A-Za-z0-9._-], not "." or "..". */
bool backup_part_name_valid(const char *name);

/* Formats unix ms as RFC 3339 UTC ("2026-11-22T03:30:00Z") into buf (>= 21 bytes). */
void backup_format_time(int64_t ms, char *buf, size_t len);

#endif
