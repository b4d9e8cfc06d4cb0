/*
 * stream.c: compression, encryption and hashing of one artifact (see stream.h). The
 * write side pushes: raw → compressor → (encryption chunk buffer) → sink (hash + store).
 * The read side pulls: store → hash → (chunk assembly + decryption) → decompressor.
 */
#include "backup/stream.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "backup/crypt.h"

#define ST_IO_BUF (256 * 1024)
#define ST_ZSTD_WINDOW_LOG_MAX 23 /* 8 MiB: enough for levels <= 19 of our own writer */
#define ST_ZSTD_JOB_SIZE (2 << 20) /* bytes per job of the compression worker (memory bound) */
#define ST_ZSTD_WORKERS 2          /* default compression worker threads */

const char *backup_codec_str(backup_codec_t c)
{
    switch (c) {
    case BACKUP_CODEC_ZSTD: return "zstd";
    case BACKUP_CODEC_GZIP: return "gzip";
    default: return "none";
    }
}

const char *backup_codec_suffix(backup_codec_t c)
{
    switch (c) {
    case BACKUP_CODEC_ZSTD: return ".zst";
    case BACKUP_CODEC_GZIP: return ".gz";
    default: return "";
    }
}

int backup_codec_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "zstd") == 0)
        return BACKUP_CODEC_ZSTD;
    if (strcmp(s, "gzip") == 0)
        return BACKUP_CODEC_GZIP;
    if (strcmp(s, "none") == 0)
        return BACKUP_CODEC_NONE;
    return -1;
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ---- write side ---------------------------------------------------------------------- */

struct backup_wstream {
    backup_obj_writer_t *w;
    backup_codec_t codec;
    ZSTD_CCtx *zc;
    z_stream gz;
    bool gz_init;
    unsigned char *cbuf; /* compressor output */
    size_t cbuf_cap;
    backup_crypt_t *crypt;
    unsigned char *pbuf; /* plaintext chunk being filled */
    size_t plen;
    unsigned char *ebuf; /* one sealed chunk */
    EVP_MD_CTX *sha;
    int64_t raw, stored;
};

/* Hashes and stores encoded bytes. */
static int ws_sink(backup_wstream_t *ws, const void *buf, size_t len, dbp_err_t *err)
{
    if (!len)
        return 0;
    if (EVP_DigestUpdate(ws->sha, buf, len) != 1)
        return dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
    ws->stored += (int64_t)len;
    return backup_obj_write(ws->w, buf, len, err);
}

static int ws_seal(backup_wstream_t *ws, bool final, dbp_err_t *err)
{
    size_t outlen = 0;
    int rc = backup_crypt_seal(ws->crypt, ws->pbuf, ws->plen, final, ws->ebuf, &outlen, err);
    if (rc)
        return rc;
    ws->plen = 0;
    return ws_sink(ws, ws->ebuf, outlen, err);
}

/* Passes compressed bytes on: into the encryption chunk, or straight to the sink. */
static int ws_emit(backup_wstream_t *ws, const unsigned char *b, size_t len, dbp_err_t *err)
{
    if (!ws->crypt)
        return ws_sink(ws, b, len, err);
    size_t cs = backup_crypt_chunk_size(ws->crypt);
    while (len) {
        if (ws->plen == cs) {
            int rc = ws_seal(ws, false, err);
            if (rc)
                return rc;
        }
        size_t n = cs - ws->plen < len ? cs - ws->plen : len;
        memcpy(ws->pbuf + ws->plen, b, n);
        ws->plen += n;
        b += n;
        len -= n;
    }
    return 0;
}

static void ws_free(backup_wstream_t *ws)
{
    ZSTD_freeCCtx(ws->zc);
    if (ws->gz_init)
        deflateEnd(&ws->gz);
    free(ws->cbuf);
    if (ws->pbuf)
        OPENSSL_cleanse(ws->pbuf, backup_crypt_chunk_size(ws->crypt));
    free(ws->pbuf);
    free(ws->ebuf);
    backup_crypt_free(ws->crypt);
    EVP_MD_CTX_free(ws->sha);
    free(ws);
}

int backup_wstream_open(backup_wstream_t **out, backup_obj_writer_t *w,
                        const backup_codec_opts_t *o, dbp_err_t *err)
{
    *out = NULL;
    backup_wstream_t *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        backup_obj_abort(w);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    ws->w = w;
    ws->codec = o->codec;
    int rc = 0;
    ws->sha = EVP_MD_CTX_new();
    if (!ws->sha || EVP_DigestInit_ex(ws->sha, EVP_sha256(), NULL) != 1)
        rc = dbp_err_set(err, DBP_ECRYPTO, "sha256 init failed");
    if (!rc && o->codec == BACKUP_CODEC_ZSTD) {
        ws->cbuf_cap = ZSTD_CStreamOutSize();
        ws->zc = ZSTD_createCCtx();
        int level = o->level ? o->level : 3;
        if (level > 19)
            level = 19;
        if (!ws->zc || ZSTD_isError(ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_checksumFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_windowLog, 0)))
            rc = dbp_err_set(err, DBP_ENOMEM, "zstd: cannot create a compression context");
        /* Two compression worker threads by default: the pipe from the engine's tool is
         * read while earlier 2 MiB jobs compress, and when the tool stalls on its own
         * I/O both cores keep compressing (measured on the 2-core bench machine:
         * MariaDB physical 1.3-1.75 s with two workers, 1.9-2.0 s with one, 2.0-2.5 s
         * inline; docs/benchmarks.md). Memory: about two jobs' buffers per worker, still
         * far under the 64 MiB budget. A libzstd built without threads refuses it and
         * compresses inline. */
        int workers = o->workers < 0 ? 0 : o->workers ? o->workers : ST_ZSTD_WORKERS;
        if (!rc && workers &&
            !ZSTD_isError(ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_nbWorkers, workers)))
            (void)ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_jobSize, ST_ZSTD_JOB_SIZE);
        /* Keep the window within what the reader accepts whatever the level. */
        if (!rc && level > 3 &&
            ZSTD_isError(ZSTD_CCtx_setParameter(ws->zc, ZSTD_c_windowLog, ST_ZSTD_WINDOW_LOG_MAX)))
            rc = dbp_err_set(err, DBP_EINVAL, "zstd: cannot bound the window");
    } else if (!rc && o->codec == BACKUP_CODEC_GZIP) {
        ws->cbuf_cap = ST_IO_BUF;
        int level = o->level ? o->level : 6;
        if (level > 9)
            level = 9;
        if (deflateInit2(&ws->gz, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            rc = dbp_err_set(err, DBP_ENOMEM, "zlib: cannot create a compression stream");
        else
            ws->gz_init = true;
    }
    if (!rc && ws->cbuf_cap && !(ws->cbuf = malloc(ws->cbuf_cap)))
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if (!rc && o->key) {
        uint8_t header[BACKUP_CRYPT_HEADER];
        rc = backup_crypt_enc_init(&ws->crypt, o->key, o->key_len, 0, header, err);
        if (!rc) {
            size_t cs = backup_crypt_chunk_size(ws->crypt);
            ws->pbuf = malloc(cs);
            ws->ebuf = malloc(cs + BACKUP_CRYPT_CHUNK_OVERHEAD);
            if (!ws->pbuf || !ws->ebuf)
                rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        }
        if (!rc)
            rc = ws_sink(ws, header, sizeof(header), err);
    }
    if (rc) {
        backup_wstream_abort(ws);
        return rc;
    }
    *out = ws;
    return 0;
}

/* Runs the compressor over in (len bytes) with `flush` semantics, emitting its output. */
static int ws_compress(backup_wstream_t *ws, const void *buf, size_t len, bool end, dbp_err_t *err)
{
    if (ws->codec == BACKUP_CODEC_ZSTD) {
        ZSTD_inBuffer in = {buf, len, 0};
        for (;;) {
            ZSTD_outBuffer out = {ws->cbuf, ws->cbuf_cap, 0};
            size_t r = ZSTD_compressStream2(ws->zc, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(r))
                return dbp_err_set(err, DBP_EIO, "zstd: %s", ZSTD_getErrorName(r));
            int rc = ws_emit(ws, ws->cbuf, out.pos, err);
            if (rc)
                return rc;
            if (end ? r == 0 : in.pos == in.size)
                return 0;
        }
    }
    if (ws->codec == BACKUP_CODEC_GZIP) {
        ws->gz.next_in = (Bytef *)(uintptr_t)buf;
        ws->gz.avail_in = (uInt)len;
        for (;;) {
            ws->gz.next_out = ws->cbuf;
            ws->gz.avail_out = (uInt)ws->cbuf_cap;
            int zr = deflate(&ws->gz, end ? Z_FINISH : Z_NO_FLUSH);
            if (zr == Z_STREAM_ERROR)
                return dbp_err_set(err, DBP_EIO, "zlib: deflate failed");
            int rc = ws_emit(ws, ws->cbuf, ws->cbuf_cap - ws->gz.avail_out, err);
            if (rc)
                return rc;
            if (end ? zr == Z_STREAM_END : (ws->gz.avail_in == 0 && ws->gz.avail_out != 0))
                return 0;
        }
    }
    return ws_emit(ws, buf, len, err);
}

int backup_wstream_write(backup_wstream_t *ws, const void *buf, size_t len, dbp_err_t *err)
{
    ws->raw += (int64_t)len;
    /* zlib counts in uInt: feed it in pieces. */
    const unsigned char *b = buf;
    while (len) {
        size_t n = len > (1u << 30) ? (1u << 30) : len;
        int rc = ws_compress(ws, b, n, false, err);
        if (rc)
            return rc;
        b += n;
        len -= n;
    }
    return 0;
}

void backup_wstream_progress(const backup_wstream_t *ws, int64_t *raw, int64_t *stored)
{
    if (raw)
        *raw = ws->raw;
    if (stored)
        *stored = ws->stored;
}

int backup_wstream_finish(backup_wstream_t *ws, backup_part_stat_t *st, dbp_err_t *err)
{
    int rc = 0;
    if (ws->codec != BACKUP_CODEC_NONE)
        rc = ws_compress(ws, NULL, 0, true, err);
    if (!rc && ws->crypt)
        rc = ws_seal(ws, true, err);
    unsigned char d[32];
    unsigned int dl = 0;
    if (!rc && EVP_DigestFinal_ex(ws->sha, d, &dl) != 1)
        rc = dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
    if (rc) {
        backup_wstream_abort(ws);
        return rc;
    }
    memset(st, 0, sizeof(*st));
    st->raw_bytes = ws->raw;
    st->bytes = ws->stored;
    hex(d, 32, st->sha256);
    backup_obj_writer_t *w = ws->w;
    ws->w = NULL;
    ws_free(ws);
    return backup_obj_commit(w, NULL, err);
}

void backup_wstream_abort(backup_wstream_t *ws)
{
    if (!ws)
        return;
    backup_obj_abort(ws->w);
    ws_free(ws);
}

/* ---- read side ----------------------------------------------------------------------- */

struct backup_rstream {
    backup_obj_reader_t *r;
    backup_codec_t codec;
    char expect[65];
    ZSTD_DCtx *zd;
    size_t zret;          /* last ZSTD_decompressStream result: 0 = frame complete */
    z_stream gz;
    bool gz_init, gz_end;
    unsigned char *sbuf;  /* stored bytes read from the store */
    size_t slen, spos;
    bool src_eof;
    const void *secret;   /* encryption: set until the header has been read */
    size_t secret_len;
    unsigned char *keycopy;
    backup_crypt_t *crypt;
    unsigned char hdr[BACKUP_CRYPT_HEADER];
    size_t hdr_len;
    unsigned char *cbuf;  /* one encrypted chunk being assembled */
    size_t clen, ctotal;
    unsigned char *pbuf;  /* its plaintext */
    size_t plen, ppos;
    EVP_MD_CTX *sha;
    int64_t stored, raw;
    bool finished;        /* end reached and checked */
    bool digested;        /* sha finalised into digest */
    char digest[65];
};

static void rs_wipe_key(backup_rstream_t *rs)
{
    if (rs->keycopy) {
        OPENSSL_cleanse(rs->keycopy, rs->secret_len);
        free(rs->keycopy);
        rs->keycopy = NULL;
    }
}

int backup_rstream_open(backup_rstream_t **out, backup_obj_reader_t *r,
                        const backup_codec_opts_t *o, dbp_err_t *err)
{
    *out = NULL;
    backup_rstream_t *rs = calloc(1, sizeof(*rs));
    if (!rs) {
        backup_obj_close(r);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    rs->r = r;
    rs->codec = o->codec;
    if (o->expect_sha256)
        snprintf(rs->expect, sizeof(rs->expect), "%s", o->expect_sha256);
    int rc = 0;
    rs->sha = EVP_MD_CTX_new();
    rs->sbuf = malloc(ST_IO_BUF);
    if (!rs->sha || !rs->sbuf || EVP_DigestInit_ex(rs->sha, EVP_sha256(), NULL) != 1)
        rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
    if (!rc && o->codec == BACKUP_CODEC_ZSTD) {
        rs->zd = ZSTD_createDCtx();
        if (!rs->zd ||
            ZSTD_isError(ZSTD_DCtx_setParameter(rs->zd, ZSTD_d_windowLogMax, ST_ZSTD_WINDOW_LOG_MAX)))
            rc = dbp_err_set(err, DBP_ENOMEM, "zstd: cannot create a decompression context");
        rs->zret = 1;
    } else if (!rc && o->codec == BACKUP_CODEC_GZIP) {
        if (inflateInit2(&rs->gz, 15 + 16) != Z_OK)
            rc = dbp_err_set(err, DBP_ENOMEM, "zlib: cannot create a decompression stream");
        else
            rs->gz_init = true;
    }
    if (!rc && o->key) {
        /* The key is derived once the header has been read; keep a private copy until. */
        rs->keycopy = malloc(o->key_len ? o->key_len : 1);
        if (!rs->keycopy)
            rc = dbp_err_set(err, DBP_ENOMEM, "out of memory");
        else {
            memcpy(rs->keycopy, o->key, o->key_len);
            rs->secret_len = o->key_len;
        }
    }
    if (rc) {
        backup_rstream_close(rs);
        return rc;
    }
    *out = rs;
    return 0;
}

/* Refills sbuf from the store; sets src_eof at the end. */
static int rs_fill(backup_rstream_t *rs, dbp_err_t *err)
{
    long n = backup_obj_read(rs->r, rs->sbuf, ST_IO_BUF, err);
    if (n < 0)
        return (int)n;
    if (n == 0) {
        rs->src_eof = true;
        rs->slen = rs->spos = 0;
        return 0;
    }
    if (EVP_DigestUpdate(rs->sha, rs->sbuf, (size_t)n) != 1)
        return dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
    rs->stored += n;
    rs->slen = (size_t)n;
    rs->spos = 0;
    return 0;
}

/* Copies up to want stored bytes into dst; returns how many (0 only at the end). */
static long rs_take(backup_rstream_t *rs, unsigned char *dst, size_t want, dbp_err_t *err)
{
    if (rs->spos == rs->slen && !rs->src_eof) {
        int rc = rs_fill(rs, err);
        if (rc)
            return rc;
    }
    size_t n = rs->slen - rs->spos;
    if (n > want)
        n = want;
    memcpy(dst, rs->sbuf + rs->spos, n);
    rs->spos += n;
    return (long)n;
}

/* Provides the next span of compressed (decrypted) bytes in *p / *n; *n == 0 at the end. */
static int rs_next_span(backup_rstream_t *rs, const unsigned char **p, size_t *n, dbp_err_t *err)
{
    *n = 0;
    if (!rs->keycopy && !rs->crypt) {
        if (rs->spos == rs->slen && !rs->src_eof) {
            int rc = rs_fill(rs, err);
            if (rc)
                return rc;
        }
        *p = rs->sbuf + rs->spos;
        *n = rs->slen - rs->spos;
        rs->spos = rs->slen;
        return 0;
    }
    if (rs->ppos < rs->plen) {
        *p = rs->pbuf + rs->ppos;
        *n = rs->plen - rs->ppos;
        rs->ppos = rs->plen;
        return 0;
    }
    if (!rs->crypt) {
        while (rs->hdr_len < BACKUP_CRYPT_HEADER) {
            long got = rs_take(rs, rs->hdr + rs->hdr_len, BACKUP_CRYPT_HEADER - rs->hdr_len, err);
            if (got < 0)
                return (int)got;
            if (got == 0)
                return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: truncated header");
            rs->hdr_len += (size_t)got;
        }
        int rc = backup_crypt_dec_init(&rs->crypt, rs->keycopy, rs->secret_len, rs->hdr, err);
        rs_wipe_key(rs);
        if (rc)
            return rc == DBP_EINVAL ? dbp_err_set(err, DBP_ECRYPTO, "%s", err ? err->msg : "") : rc;
        size_t cs = backup_crypt_chunk_size(rs->crypt);
        rs->cbuf = malloc(cs + BACKUP_CRYPT_CHUNK_OVERHEAD);
        rs->pbuf = malloc(cs);
        if (!rs->cbuf || !rs->pbuf)
            return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    if (backup_crypt_done(rs->crypt)) {
        /* After the final chunk only the end of the object may follow. */
        unsigned char extra;
        long got = rs_take(rs, &extra, 1, err);
        if (got < 0)
            return (int)got;
        if (got > 0)
            return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: data after the final chunk");
        return 0;
    }
    /* Assemble one chunk: its 4-byte length first, then the rest. */
    rs->clen = 0;
    rs->ctotal = 4;
    while (rs->clen < rs->ctotal) {
        long got = rs_take(rs, rs->cbuf + rs->clen, rs->ctotal - rs->clen, err);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: truncated (no final chunk)");
        rs->clen += (size_t)got;
        if (rs->ctotal == 4 && rs->clen == 4) {
            rs->ctotal = backup_crypt_chunk_total(rs->crypt, rs->cbuf);
            if (rs->ctotal == 0)
                return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: corrupt chunk length");
        }
    }
    bool final = false;
    int rc = backup_crypt_open(rs->crypt, rs->cbuf, rs->clen, rs->pbuf, &rs->plen, &final, err);
    if (rc)
        return rc;
    rs->ppos = rs->plen;
    *p = rs->pbuf;
    *n = rs->plen;
    if (*n == 0 && !final)
        return rs_next_span(rs, p, n, err);
    if (*n == 0)
        return rs_next_span(rs, p, n, err); /* final and empty: check for trailing data */
    return 0;
}

/* Finalises the SHA-256 of the stored bytes (once: the source must be at its end) and
 * compares it with the manifest's; DBP_ECRYPTO "checksum mismatch" when they differ. */
static int rs_digest_check(backup_rstream_t *rs, dbp_err_t *err)
{
    if (!rs->digested) {
        unsigned char d[32];
        unsigned int dl = 0;
        if (EVP_DigestFinal_ex(rs->sha, d, &dl) != 1)
            return dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
        hex(d, 32, rs->digest);
        rs->digested = true;
    }
    if (rs->expect[0] && strcmp(rs->expect, rs->digest) != 0)
        return dbp_err_set(err, DBP_ECRYPTO,
                           "checksum mismatch: stored bytes hash to %.16s..., the manifest says "
                           "%.16s...",
                           rs->digest, rs->expect);
    return 0;
}

/* Checks the end of the stream: complete compression frame, final chunk, SHA-256. */
static int rs_check_end(backup_rstream_t *rs, dbp_err_t *err)
{
    if (rs->codec == BACKUP_CODEC_ZSTD && rs->zret != 0)
        return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is truncated (zstd frame incomplete)");
    if (rs->codec == BACKUP_CODEC_GZIP && !rs->gz_end)
        return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is truncated (gzip stream incomplete)");
    if (rs->crypt && !backup_crypt_done(rs->crypt))
        return dbp_err_set(err, DBP_ECRYPTO, "encrypted backup: truncated (no final chunk)");
    int rc = rs_digest_check(rs, err);
    if (rc)
        return rc;
    rs->finished = true;
    return 0;
}

int backup_rstream_check_stored(backup_rstream_t *rs, dbp_err_t *err)
{
    if (rs->finished)
        return 0;
    while (!rs->digested && !rs->src_eof) {
        int rc = rs_fill(rs, err);
        if (rc)
            return rc;
    }
    return rs_digest_check(rs, err);
}

/* Flushes decoded output still buffered in the decompressor; returns the count. */
static long rs_drain(backup_rstream_t *rs, void *buf, size_t cap, dbp_err_t *err)
{
    if (rs->codec == BACKUP_CODEC_ZSTD) {
        /* A finished frame has nothing left; asked again, zstd would answer with the
         * header size of a next frame, not 0. */
        if (rs->zret == 0)
            return 0;
        ZSTD_inBuffer in = {NULL, 0, 0};
        ZSTD_outBuffer out = {buf, cap, 0};
        size_t r = ZSTD_decompressStream(rs->zd, &out, &in);
        if (ZSTD_isError(r))
            return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is corrupt (zstd: %s)",
                               ZSTD_getErrorName(r));
        rs->zret = r;
        rs->raw += (int64_t)out.pos;
        return (long)out.pos;
    }
    if (rs->codec == BACKUP_CODEC_GZIP && !rs->gz_end) {
        rs->gz.next_in = NULL;
        rs->gz.avail_in = 0;
        rs->gz.next_out = buf;
        rs->gz.avail_out = (uInt)(cap > (1u << 30) ? (1u << 30) : cap);
        uInt before = rs->gz.avail_out;
        int zr = inflate(&rs->gz, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is corrupt (gzip: %s)",
                               rs->gz.msg ? rs->gz.msg : "inflate failed");
        if (zr == Z_STREAM_END)
            rs->gz_end = true;
        rs->raw += (int64_t)(before - rs->gz.avail_out);
        return (long)(before - rs->gz.avail_out);
    }
    return 0;
}

long backup_rstream_read(backup_rstream_t *rs, void *buf, size_t cap, dbp_err_t *err)
{
    if (rs->finished || cap == 0)
        return 0;
    for (;;) {
        const unsigned char *p = NULL;
        size_t n = 0;
        if (rs->codec == BACKUP_CODEC_NONE) {
            int rc = rs_next_span(rs, &p, &n, err);
            if (rc)
                return rc;
            if (n == 0) {
                rc = rs_check_end(rs, err);
                return rc ? rc : 0;
            }
            /* A span may be larger than cap: hand back the rest on the next call. */
            if (n > cap) {
                if (rs->crypt || rs->keycopy)
                    rs->ppos -= n - cap;
                else
                    rs->spos -= n - cap;
                n = cap;
            }
            memcpy(buf, p, n);
            rs->raw += (int64_t)n;
            return (long)n;
        }
        int rc = rs_next_span(rs, &p, &n, err);
        if (rc)
            return rc;
        if (n == 0) {
            /* The input is exhausted, but the decoder may still hold output that did not
             * fit into the caller's buffer last time: drain it before checking the end. */
            long drained = rs_drain(rs, buf, cap, err);
            if (drained != 0)
                return drained;
            rc = rs_check_end(rs, err);
            return rc ? rc : 0;
        }
        size_t produced = 0, consumed = 0;
        if (rs->codec == BACKUP_CODEC_ZSTD) {
            ZSTD_inBuffer in = {p, n, 0};
            ZSTD_outBuffer out = {buf, cap, 0};
            /* Decode as much as fits; hand back the unconsumed input. */
            while (in.pos < in.size && out.pos < out.size) {
                size_t r = ZSTD_decompressStream(rs->zd, &out, &in);
                if (ZSTD_isError(r))
                    return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is corrupt (zstd: %s)",
                                       ZSTD_getErrorName(r));
                rs->zret = r;
            }
            consumed = in.pos;
            produced = out.pos;
        } else {
            if (rs->gz_end)
                return dbp_err_set(err, DBP_ECRYPTO, "backup artifact: data after the gzip end");
            rs->gz.next_in = (Bytef *)(uintptr_t)p;
            rs->gz.avail_in = (uInt)n;
            rs->gz.next_out = buf;
            rs->gz.avail_out = (uInt)(cap > (1u << 30) ? (1u << 30) : cap);
            uInt avail_before = rs->gz.avail_out;
            int zr = inflate(&rs->gz, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
                return dbp_err_set(err, DBP_ECRYPTO, "backup artifact is corrupt (gzip: %s)",
                                   rs->gz.msg ? rs->gz.msg : "inflate failed");
            if (zr == Z_STREAM_END)
                rs->gz_end = true;
            consumed = n - rs->gz.avail_in;
            produced = avail_before - rs->gz.avail_out;
        }
        size_t back = n - consumed;
        if (back) {
            if (rs->crypt || rs->keycopy)
                rs->ppos -= back;
            else
                rs->spos -= back;
        }
        rs->raw += (int64_t)produced;
        if (produced)
            return (long)produced;
        /* Nothing out yet (headers, or input exhausted): pull more. */
    }
}

void backup_rstream_stat(const backup_rstream_t *rs, backup_part_stat_t *st)
{
    memset(st, 0, sizeof(*st));
    st->raw_bytes = rs->raw;
    st->bytes = rs->stored;
    snprintf(st->sha256, sizeof(st->sha256), "%s", rs->digest);
}

void backup_rstream_close(backup_rstream_t *rs)
{
    if (!rs)
        return;
    backup_obj_close(rs->r);
    ZSTD_freeDCtx(rs->zd);
    if (rs->gz_init)
        inflateEnd(&rs->gz);
    free(rs->sbuf);
    free(rs->cbuf);
    if (rs->pbuf && rs->crypt)
        OPENSSL_cleanse(rs->pbuf, backup_crypt_chunk_size(rs->crypt));
    free(rs->pbuf);
    rs_wipe_key(rs);
    backup_crypt_free(rs->crypt);
    EVP_MD_CTX_free(rs->sha);
    free(rs);
}

int backup_verify_object(backup_store_t *s, const char *key, const char *sha256, int64_t bytes,
                         dbp_err_t *err)
{
    backup_obj_reader_t *r;
    int64_t size = 0;
    int rc = backup_obj_open(s, key, &r, &size, err);
    if (rc)
        return rc;
    if (bytes >= 0 && size != bytes) {
        backup_obj_close(r);
        return dbp_err_set(err, DBP_ECRYPTO, "%s: size %lld, the manifest says %lld", key,
                           (long long)size, (long long)bytes);
    }
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    unsigned char *buf = malloc(ST_IO_BUF);
    if (!sha || !buf || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(sha);
        free(buf);
        backup_obj_close(r);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    int64_t total = 0;
    for (;;) {
        long n = backup_obj_read(r, buf, ST_IO_BUF, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        total += n;
        if (EVP_DigestUpdate(sha, buf, (size_t)n) != 1) {
            rc = dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
            break;
        }
    }
    unsigned char d[32];
    unsigned int dl = 0;
    char got[65];
    if (!rc && EVP_DigestFinal_ex(sha, d, &dl) != 1)
        rc = dbp_err_set(err, DBP_ECRYPTO, "sha256 failed");
    if (!rc) {
        hex(d, 32, got);
        if (bytes >= 0 && total != bytes)
            rc = dbp_err_set(err, DBP_ECRYPTO, "%s: read %lld bytes, the manifest says %lld", key,
                             (long long)total, (long long)bytes);
        else if (strcmp(got, sha256) != 0)
            rc = dbp_err_set(err, DBP_ECRYPTO,
                             "%s: checksum mismatch (sha256 %.16s..., the manifest says %.16s...)",
                             key, got, sha256);
    }
    EVP_MD_CTX_free(sha);
    free(buf);
    backup_obj_close(r);
    return rc;
}
