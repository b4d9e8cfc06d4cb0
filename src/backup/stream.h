/*
 * stream.h: the backup pipeline for one artifact. Writing: raw bytes from an engine
 * tool → compression (zstd, gzip or none) → optional chunked AES-256-GCM (crypt.h) →
 * SHA-256 of the stored bytes → a backup store object (objstore.h). Reading runs the
 * same stages backwards and checks, at the end of the stream, that the stored bytes hash
 * to the manifest's SHA-256, that the encrypted stream reached its final chunk and that
 * the compressed stream ended cleanly; any mismatch is an error, so a flipped byte or a
 * truncated object never reads as a good backup.
 *
 * Memory is bounded whatever the artifact's size: one compression context (zstd's window
 * is capped at 8 MiB on decompression, so a hostile frame cannot demand more), one
 * encryption chunk (1 MiB) in each direction and the store's part buffer.
 */
#ifndef DBP_BACKUP_STREAM_H
#define DBP_BACKUP_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/objstore.h"
#include "common/err.h"

typedef struct backup_wstream backup_wstream_t;
typedef struct backup_rstream backup_rstream_t;

/* Compression of an artifact (the values of spec_compression_t). */
typedef enum backup_codec {
    BACKUP_CODEC_ZSTD = 0,
    BACKUP_CODEC_GZIP,
    BACKUP_CODEC_NONE,
} backup_codec_t;

/* How an artifact is encoded. */
typedef struct backup_codec_opts {
    backup_codec_t codec;
    int level;               /* compression level; 0 = default (zstd 3, gzip 6) */
    int workers;             /* zstd worker threads: 0 = default (2), -1 = none (inline) */
    const void *key;         /* encryption secret (borrowed during open), NULL = plain */
    size_t key_len;
    const char *expect_sha256; /* read side: hex SHA-256 the stored bytes must have, or NULL */
} backup_codec_opts_t;

/* What was written or read. */
typedef struct backup_part_stat {
    int64_t raw_bytes;  /* bytes before compression */
    int64_t bytes;      /* bytes stored */
    char sha256[65];    /* hex SHA-256 of the stored bytes */
} backup_part_stat_t;

/* "zstd" | "gzip" | "none"; and the file suffix ".zst" | ".gz" | "". */
const char *backup_codec_str(backup_codec_t c);
const char *backup_codec_suffix(backup_codec_t c);
/* Parses backup_codec_str's output; -1 when unknown. */
int backup_codec_parse(const char *s);

/* Starts an artifact on writer `w` (takes ownership: finish or abort the stream, never the
 * writer). Returns owned *out, or an error after aborting w. */
int backup_wstream_open(backup_wstream_t **out, backup_obj_writer_t *w,
                        const backup_codec_opts_t *o, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Feeds len raw bytes (borrowed). Errors come from compression, encryption or the store;
 * abort the stream after one. */
int backup_wstream_write(backup_wstream_t *ws, const void *buf, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Raw and stored byte counts so far (for progress). */
void backup_wstream_progress(const backup_wstream_t *ws, int64_t *raw, int64_t *stored);

/* Flushes every stage, commits the object and frees the stream (also on error, after
 * aborting the object). *st receives the sizes and the SHA-256. */
int backup_wstream_finish(backup_wstream_t *ws, backup_part_stat_t *st, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Discards the object and frees the stream; NULL is a no-op. */
void backup_wstream_abort(backup_wstream_t *ws);

/* Starts decoding reader `r` (takes ownership; freed by backup_rstream_close). */
int backup_rstream_open(backup_rstream_t **out, backup_obj_reader_t *r,
                        const backup_codec_opts_t *o, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Reads up to cap decoded bytes. Returns the count, 0 at the end of a stream that passed
 * every check, or a negative code: DBP_ECRYPTO for a checksum, authentication or
 * truncation failure (the artifact is corrupt), DBP_EIO for the store. */
long backup_rstream_read(backup_rstream_t *rs, void *buf, size_t cap, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Whether the stored bytes are intact, whatever the decoding did: hashes the rest of the
 * object (without decoding it) and compares the SHA-256 with the one given at open.
 * Returns 0 when they match (or the stream already ended with every check passed),
 * DBP_ECRYPTO "checksum mismatch: ..." when they differ, or the store's error. For a
 * consumer that extracts while reading (a restore into a new directory): after a
 * decoding error it tells a corrupt artifact from other failures, and after a consumer
 * that stopped reading early it still checks every stored byte. Call at most once,
 * after the last backup_rstream_read. */
int backup_rstream_check_stored(backup_rstream_t *rs, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Sizes and hash of what was read so far. */
void backup_rstream_stat(const backup_rstream_t *rs, backup_part_stat_t *st);

/* Frees the stream and its reader; NULL is a no-op. */
void backup_rstream_close(backup_rstream_t *rs);

/* Reads object `key` once, without decoding, and compares its SHA-256 and size with
 * `sha256` and `bytes` (bytes < 0: not checked). Returns 0, DBP_ECRYPTO with a message
 * naming the object on a mismatch, or the store's error. */
int backup_verify_object(backup_store_t *s, const char *key, const char *sha256, int64_t bytes,
                         dbp_err_t *err) __attribute__((warn_unused_result));

#endif
