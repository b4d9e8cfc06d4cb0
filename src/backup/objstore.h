/*
 * objstore.h: where backup artifacts live. A backup store is a flat namespace of objects
 * named by '/'-separated keys, with two implementations: a posix directory (objstore.c)
 * and an S3-compatible bucket + prefix reached through libcurl with its built-in AWS
 * SigV4 signing (s3.c). Everything above this interface (stream.c, run.c) is written
 * once for both.
 *
 * Objects are written as streams and become visible atomically on commit, never half:
 * posix writes "<key>.partial.<pid>" and renames it after fsync; S3 uploads parts of a
 * multipart upload (or one PUT for a small object) and completes it on commit. An
 * aborted or killed writer leaves nothing under the final key. Reads are streams too;
 * memory is bounded by one S3 part (part_size) per open writer or reader.
 *
 * Keys are made by dbplane from names it validated ([A-Za-z0-9._-] segments); this layer
 * still refuses empty segments, "." and "..", so a key can never leave the store.
 */
#ifndef DBP_BACKUP_OBJSTORE_H
#define DBP_BACKUP_OBJSTORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct backup_store backup_store_t;
typedef struct backup_obj_writer backup_obj_writer_t;
typedef struct backup_obj_reader backup_obj_reader_t;

typedef enum backup_store_kind {
    BACKUP_STORE_POSIX = 0,
    BACKUP_STORE_S3,
} backup_store_kind_t;

/* How to reach a store. Strings are copied by backup_store_open; the credentials are
 * kept in memory only (wiped on close), never logged and never put in argv. */
typedef struct backup_store_config {
    backup_store_kind_t kind;
    char name[64];            /* the BackupStore's name, for messages */
    char posix_path[PATH_MAX]; /* POSIX: absolute root directory (created 0700 if missing) */
    char endpoint[256];       /* S3: "http://127.0.0.1:9000" or "https://s3.example" */
    char bucket[128];
    char prefix[256];         /* S3: key prefix inside the bucket ("" or "a/b") */
    char region[64];          /* S3: SigV4 region, default "us-east-1" */
    bool path_style;          /* S3: endpoint/bucket/key (true) or bucket.endpoint/key */
    const char *access_key;   /* S3: borrowed until backup_store_open returns */
    const char *secret_key;   /* S3: borrowed until backup_store_open returns */
    size_t part_size;         /* S3: multipart part size in bytes; 0 = 8 MiB (min 5 MiB) */
    int max_attempts;         /* S3: tries per request on 5xx/SlowDown/transport errors; 0 = 5 */
    int retry_base_ms;        /* S3: first backoff in ms (doubles, with jitter); 0 = 200 */
} backup_store_config_t;

/* Opens a store. Returns owned *out (close with backup_store_close); DBP_EINVAL for a bad
 * configuration, DBP_EIO when a posix root cannot be created. Does not contact S3. */
int backup_store_open(backup_store_t **out, const backup_store_config_t *cfg, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Closes a store (wiping credentials); NULL is a no-op. Writers and readers must be
 * finished first. */
void backup_store_close(backup_store_t *s);

/* "posix:/path" or "s3://bucket/prefix" for messages (no credentials). View valid while
 * the store is open. */
const char *backup_store_describe(const backup_store_t *s);

/* True when `key` is acceptable (non-empty, no leading '/', no empty, "." or ".."
 * segment, only [A-Za-z0-9._-/] characters, at most 400 bytes). */
bool backup_key_valid(const char *key);

/* Starts writing object `key`. Returns owned *out: write with backup_obj_write, then
 * exactly one of backup_obj_commit (object visible) or backup_obj_abort (nothing left).
 * DBP_EINVAL for a bad key; DBP_EIO for storage errors. */
int backup_obj_create(backup_store_t *s, const char *key, backup_obj_writer_t **out,
                      dbp_err_t *err) __attribute__((warn_unused_result));

/* Appends len bytes (borrowed). S3: uploads a part each time part_size bytes are
 * buffered, retrying as configured. DBP_EIO on failure (then abort the writer). */
int backup_obj_write(backup_obj_writer_t *w, const void *buf, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Makes the object visible under its key and frees the writer (also on failure, after
 * discarding what was written). *bytes (may be NULL) receives the object's size. */
int backup_obj_commit(backup_obj_writer_t *w, int64_t *bytes, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Discards what was written (posix: unlinks the partial file; S3: aborts the multipart
 * upload) and frees the writer. NULL is a no-op. */
void backup_obj_abort(backup_obj_writer_t *w);

/* Opens object `key` for reading. Returns owned *out (close with backup_obj_close) and
 * *size (may be NULL) its size in bytes. DBP_ENOENT when absent. */
int backup_obj_open(backup_store_t *s, const char *key, backup_obj_reader_t **out, int64_t *size,
                    dbp_err_t *err) __attribute__((warn_unused_result));

/* Reads up to cap bytes; returns the count, 0 at the end, or a negative DBP_E* code. */
long backup_obj_read(backup_obj_reader_t *r, void *buf, size_t cap, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Closes a reader; NULL is a no-op. */
void backup_obj_close(backup_obj_reader_t *r);

/* Writes a small object (a manifest) in one go, atomically. */
int backup_store_put(backup_store_t *s, const char *key, const void *data, size_t len,
                     dbp_err_t *err) __attribute__((warn_unused_result));

/* Reads a whole small object of at most `max` bytes: returns owned *data (NUL-terminated,
 * free with free()) and *len. DBP_ENOENT when absent, DBP_EINVAL when larger than max. */
int backup_store_get(backup_store_t *s, const char *key, size_t max, char **data, size_t *len,
                     dbp_err_t *err) __attribute__((warn_unused_result));

/* Calls cb for each object whose key starts with `prefix` (a key prefix, "" for all),
 * with the key (a view valid during the call) and its size, in key order for S3 and
 * directory order for posix. Posix also reports "<key>.partial.<pid>" leftovers of killed
 * writers. A non-zero return from cb stops the walk and is returned. */
typedef int (*backup_list_cb)(const char *key, int64_t size, void *ud);
int backup_store_list(backup_store_t *s, const char *prefix, backup_list_cb cb, void *ud,
                      dbp_err_t *err) __attribute__((warn_unused_result));

/* Deletes one object; absent is success. */
int backup_store_delete(backup_store_t *s, const char *key, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Deletes every object under the key prefix `dir` + "/" (a backup run's directory);
 * *deleted (may be NULL) receives the count. */
int backup_store_delete_dir(backup_store_t *s, const char *dir, int *deleted, dbp_err_t *err)
    __attribute__((warn_unused_result));

#endif
