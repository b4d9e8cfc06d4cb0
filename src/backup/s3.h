/*
 * s3.h: the S3 requests backup stores need (private to src/backup/; objstore.c is the
 * only caller). Requests are signed by libcurl's built-in AWS SigV4 (CURLOPT_AWS_SIGV4),
 * with the payload's SHA-256 sent as x-amz-content-sha256 so the body is covered by the
 * signature. Every request is retried with exponential backoff and jitter, on a fresh
 * connection, when the transport fails, the server answers 5xx, 429 or SlowDown, or a
 * CompleteMultipartUpload answers 200 with an <Error> body (S3's documented "200 with an
 * error"); other 4xx answers fail at once with S3's Code and Message.
 *
 * Keys passed in are relative to the store's prefix and already validated
 * (backup_key_valid). One backup_s3_t is one curl handle: use it from one thread.
 */
#ifndef DBP_BACKUP_S3_H
#define DBP_BACKUP_S3_H

#include <stddef.h>
#include <stdint.h>

#include "backup/objstore.h"
#include "common/err.h"

typedef struct backup_s3 backup_s3_t;

/* Creates a client for cfg (kind S3): copies endpoint, bucket, prefix, region and the
 * credentials. Returns owned *out (free with backup_s3_close) or DBP_EINVAL / DBP_ENOMEM. */
int backup_s3_open(backup_s3_t **out, const backup_store_config_t *cfg, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Frees the client, wiping the credentials; NULL is a no-op. */
void backup_s3_close(backup_s3_t *s3);

/* PutObject of len bytes (borrowed). */
int backup_s3_put(backup_s3_t *s3, const char *key, const void *data, size_t len, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* HeadObject: *size receives Content-Length. DBP_ENOENT when absent. */
int backup_s3_head(backup_s3_t *s3, const char *key, int64_t *size, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* GetObject of bytes [off, off+len) into buf (len bytes); *got receives the count. */
int backup_s3_get_range(backup_s3_t *s3, const char *key, int64_t off, size_t len, void *buf,
                        size_t *got, dbp_err_t *err) __attribute__((warn_unused_result));

/* CreateMultipartUpload: writes the UploadId into upload_id (at most cap bytes). */
int backup_s3_mpu_start(backup_s3_t *s3, const char *key, char *upload_id, size_t cap,
                        dbp_err_t *err) __attribute__((warn_unused_result));

/* UploadPart number partno (1-based) of len bytes; the ETag goes into etag (64 bytes). */
int backup_s3_mpu_part(backup_s3_t *s3, const char *key, const char *upload_id, int partno,
                       const void *data, size_t len, char etag[64], dbp_err_t *err)
    __attribute__((warn_unused_result));

/* CompleteMultipartUpload with the parts' ETags in order (nparts entries). */
int backup_s3_mpu_complete(backup_s3_t *s3, const char *key, const char *upload_id,
                           char (*etags)[64], int nparts, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* AbortMultipartUpload, best effort (one attempt, errors logged only). */
void backup_s3_mpu_abort(backup_s3_t *s3, const char *key, const char *upload_id);

/* ListObjectsV2 under the key prefix, following continuation tokens; keys given to cb
 * are relative to the store's prefix. */
int backup_s3_list(backup_s3_t *s3, const char *prefix, backup_list_cb cb, void *ud,
                   dbp_err_t *err) __attribute__((warn_unused_result));

/* DeleteObject; absent is success. */
int backup_s3_delete(backup_s3_t *s3, const char *key, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Decodes the XML entities &amp; &lt; &gt; &quot; &apos; of `in` (n bytes) into out (cap
 * bytes, NUL-terminated, truncated). Exposed for unit tests. */
void backup_s3_xml_unescape(const char *in, size_t n, char *out, size_t cap);

#endif
