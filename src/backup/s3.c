/*
 * s3.c: S3 requests over libcurl with its built-in SigV4 (see s3.h). One request
 * function builds the URL (path style: endpoint/bucket/prefix/key; virtual-host style:
 * bucket.host/prefix/key), sets the method and body, signs with CURLOPT_AWS_SIGV4 and
 * retries; the operations above it only pick the method, query and body and parse the
 * few XML elements they need (UploadId, Key/Size, Code/Message) by plain search: S3's
 * answers are small, flat documents and the values are bounded.
 */
#include "backup/s3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/log.h"
#include "common/proc.h"

#define S3_MAX_BODY (4 * 1024 * 1024) /* largest XML answer we keep */

struct backup_s3 {
    CURL *curl;
    char endpoint[256]; /* without trailing '/' */
    char bucket[128];
    char prefix[256];   /* "" or "a/b/" (with trailing '/') */
    char region[64];
    bool path_style;
    char *userpwd;      /* "AK:SK", owned, wiped on close */
    int max_attempts;
    int retry_base_ms;
};

/* One request's inputs and outputs. */
typedef struct s3_req {
    const char *method;    /* GET PUT POST DELETE HEAD */
    const char *key;       /* relative key, or NULL for the bucket itself */
    const char *query;     /* canonical query ("a=1&b=2", sorted, escaped) or NULL */
    const void *body;      /* request body or NULL */
    size_t body_len;
    const char *content_type;
    const char *range;     /* "bytes=a-b" or NULL */
    bool check_error_body; /* 200 with <Error> is a failure (CompleteMultipartUpload) */
    /* response */
    long status;
    char *resp;            /* XML body (growable, capped), owned by the request */
    size_t resp_len, resp_cap;
    void *sink;            /* GET range: write the body here instead, up to sink_cap */
    size_t sink_cap, sink_len;
    bool sink_overflow;
    char etag[64];
    int64_t content_length;
    size_t body_off;       /* upload cursor */
} s3_req_t;

void backup_s3_xml_unescape(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap;) {
        if (in[i] == '&') {
            static const struct {
                const char *ent;
                char c;
            } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'},
                        {"&apos;", '\''}};
            bool done = false;
            for (size_t k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
                size_t l = strlen(ents[k].ent);
                if (i + l <= n && memcmp(in + i, ents[k].ent, l) == 0) {
                    out[o++] = ents[k].c;
                    i += l;
                    done = true;
                    break;
                }
            }
            if (done)
                continue;
        }
        out[o++] = in[i++];
    }
    out[o] = '\0';
}

/* Finds <tag>value</tag> in [p, end) and unescapes it into out; returns a pointer past
 * the closing tag, or NULL when absent. */
static const char *xml_get(const char *p, const char *end, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    if (!p || p >= end)
        return NULL;
    const char *a = memmem(p, (size_t)(end - p), open, strlen(open));
    if (!a)
        return NULL;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (!b)
        return NULL;
    backup_s3_xml_unescape(a, (size_t)(b - a), out, cap);
    return b + strlen(close);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(data ? data : (const void *)"", len, d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    s3_req_t *r = ud;
    size_t n = size * nmemb;
    if (r->sink && r->status >= 200 && r->status < 300) {
        size_t room = r->sink_cap - r->sink_len;
        if (n > room) {
            r->sink_overflow = true;
            return 0; /* abort: the server sent more than asked for */
        }
        memcpy((char *)r->sink + r->sink_len, ptr, n);
        r->sink_len += n;
        return n;
    }
    if (r->resp_len + n + 1 > r->resp_cap) {
        if (r->resp_len + n + 1 > S3_MAX_BODY)
            return n; /* keep the head of an oversized answer; drop the rest */
        size_t ncap = r->resp_cap ? r->resp_cap : 4096;
        while (ncap < r->resp_len + n + 1)
            ncap *= 2;
        char *nb = realloc(r->resp, ncap);
        if (!nb)
            return 0;
        r->resp = nb;
        r->resp_cap = ncap;
    }
    memcpy(r->resp + r->resp_len, ptr, n);
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    s3_req_t *r = ud;
    size_t n = size * nitems;
    if (n > 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after 100-continue or a redirect): reset what we collected. */
        long st = 0;
        const char *sp = memchr(buf, ' ', n);
        if (sp)
            st = strtol(sp + 1, NULL, 10);
        r->status = st;
        r->etag[0] = '\0';
        return n;
    }
    if (n > 5 && strncasecmp(buf, "ETag:", 5) == 0) {
        const char *v = buf + 5;
        size_t l = n - 5;
        while (l && (*v == ' ' || *v == '\t')) {
            v++;
            l--;
        }
        while (l && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
            l--;
        if (l < sizeof(r->etag)) {
            memcpy(r->etag, v, l);
            r->etag[l] = '\0';
        }
    } else if (n > 15 && strncasecmp(buf, "Content-Length:", 15) == 0) {
        r->content_length = strtoll(buf + 15, NULL, 10);
    }
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    s3_req_t *r = ud;
    size_t room = size * nitems, left = r->body_len - r->body_off;
    size_t n = left < room ? left : room;
    if (n)
        memcpy(buf, (const char *)r->body + r->body_off, n);
    r->body_off += n;
    return n;
}

/* Builds the request URL into buf. */
static void s3_url(const backup_s3_t *s3, const s3_req_t *r, char *buf, size_t len)
{
    const char *scheme_end = strstr(s3->endpoint, "://");
    char host_part[256];
    if (s3->path_style || !scheme_end) {
        snprintf(host_part, sizeof(host_part), "%s/%s", s3->endpoint, s3->bucket);
    } else {
        snprintf(host_part, sizeof(host_part), "%.*s%s.%s", (int)(scheme_end + 3 - s3->endpoint),
                 s3->endpoint, s3->bucket, scheme_end + 3);
    }
    if (r->key)
        snprintf(buf, len, "%s/%s%s%s%s", host_part, s3->prefix, r->key, r->query ? "?" : "",
                 r->query ? r->query : "");
    else
        snprintf(buf, len, "%s/%s%s", host_part, r->query ? "?" : "", r->query ? r->query : "");
}

/* S3's error Code from an XML body ("" when none). */
static void s3_error_code(const s3_req_t *r, char *code, size_t cap, char *msg, size_t mcap)
{
    code[0] = msg[0] = '\0';
    if (!r->resp)
        return;
    const char *end = r->resp + r->resp_len;
    const char *e = strstr(r->resp, "<Error>");
    if (!e)
        return;
    if (!xml_get(e, end, "Code", code, cap))
        code[0] = '\0';
    if (!xml_get(e, end, "Message", msg, mcap))
        msg[0] = '\0';
}

/* Sleeps for attempt n's backoff: base * 2^n, +-50% jitter, capped at 10 s. */
static void s3_backoff(const backup_s3_t *s3, int attempt)
{
    int64_t ms = (int64_t)s3->retry_base_ms << (attempt < 10 ? attempt : 10);
    if (ms > 10000)
        ms = 10000;
    unsigned char rnd = 0;
    if (RAND_bytes(&rnd, 1) != 1)
        rnd = 128;
    ms = ms / 2 + (ms * rnd) / 255;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Performs the request with retries. Returns 0 for a 2xx answer, DBP_ENOENT for 404,
 * DBP_EIO otherwise (after retries for retryable failures). The response fields of r are
 * those of the last attempt; r->resp is freed by the caller. */
static int s3_do(backup_s3_t *s3, s3_req_t *r, dbp_err_t *err)
{
    char url[2048], sigv4[128], sha_hdr[128];
    s3_url(s3, r, url, sizeof(url));
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3", s3->region);
    char sha[65];
    sha256_hex(r->body, r->body_len, sha);
    snprintf(sha_hdr, sizeof(sha_hdr), "x-amz-content-sha256: %s", sha);
    int rc = DBP_EIO;
    for (int attempt = 0; attempt < s3->max_attempts; attempt++) {
        if (attempt > 0)
            s3_backoff(s3, attempt - 1);
        r->status = 0;
        r->resp_len = 0;
        r->sink_len = 0;
        r->sink_overflow = false;
        r->etag[0] = '\0';
        r->content_length = -1;
        r->body_off = 0;
        if (r->resp)
            r->resp[0] = '\0';
        CURL *c = s3->curl;
        curl_easy_reset(c);
        struct curl_slist *h = NULL;
        struct curl_slist *h2 = curl_slist_append(h, sha_hdr);
        if (h2)
            h = h2;
        if ((h2 = curl_slist_append(h, "Expect:")))
            h = h2;
        char ct[128], range[96];
        if (r->content_type) {
            snprintf(ct, sizeof(ct), "Content-Type: %s", r->content_type);
            if ((h2 = curl_slist_append(h, ct)))
                h = h2;
        }
        if (r->range) {
            snprintf(range, sizeof(range), "Range: %s", r->range);
            if ((h2 = curl_slist_append(h, range)))
                h = h2;
        }
        bool ok = curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_USERPWD, s3->userpwd) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_WRITEDATA, r) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_HEADERDATA, r) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
                  curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, attempt > 0 ? 1L : 0L) == CURLE_OK;
        if (ok && strcmp(r->method, "PUT") == 0) {
            ok = curl_easy_setopt(c, CURLOPT_UPLOAD, 1L) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_READDATA, r) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len) ==
                     CURLE_OK;
        } else if (ok && strcmp(r->method, "POST") == 0) {
            ok = curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? r->body : "") == CURLE_OK &&
                 curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len) ==
                     CURLE_OK;
        } else if (ok && strcmp(r->method, "HEAD") == 0) {
            ok = curl_easy_setopt(c, CURLOPT_NOBODY, 1L) == CURLE_OK;
        } else if (ok && strcmp(r->method, "DELETE") == 0) {
            ok = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE") == CURLE_OK;
        }
        if (!ok) {
            curl_slist_free_all(h);
            return dbp_err_set(err, DBP_EIO, "s3: cannot set up the request");
        }
        CURLcode cc = curl_easy_perform(c);
        curl_slist_free_all(h);
        long st = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        r->status = st;
        char code[64], msg[256];
        s3_error_code(r, code, sizeof(code), msg, sizeof(msg));
        if (cc != CURLE_OK) {
            if (r->sink_overflow) {
                rc = dbp_err_set(err, DBP_EIO, "s3: %s %s: the answer is longer than asked for",
                                 r->method, r->key ? r->key : "/");
                break;
            }
            rc = dbp_err_set(err, DBP_EIO, "s3: %s %s: %s", r->method, r->key ? r->key : "/",
                             curl_easy_strerror(cc));
            dbp_warn("s3_retry", "method=%s key=%s attempt=%d error=%s", r->method,
                     dbp_log_q(r->key ? r->key : "/"), attempt + 1,
                     dbp_log_q(curl_easy_strerror(cc)));
            continue;
        }
        if (st >= 200 && st < 300) {
            if (r->check_error_body && code[0]) {
                /* S3 may answer 200 and then report the failure in the body. */
                rc = dbp_err_set(err, DBP_EIO, "s3: %s %s: 200 with error %s: %s", r->method,
                                 r->key ? r->key : "/", code, msg);
                dbp_warn("s3_retry", "method=%s key=%s attempt=%d status=200 code=%s", r->method,
                         dbp_log_q(r->key ? r->key : "/"), attempt + 1, dbp_log_q(code));
                continue;
            }
            return 0;
        }
        if (st == 404 && strcmp(code, "NoSuchUpload") != 0)
            return dbp_err_set(err, DBP_ENOENT, "s3: %s %s: not found", r->method,
                               r->key ? r->key : "/");
        rc = dbp_err_set(err, DBP_EIO, "s3: %s %s: HTTP %ld %s%s%s", r->method,
                         r->key ? r->key : "/", st, code, msg[0] ? ": " : "", msg);
        bool retry = st >= 500 || st == 429 || strcmp(code, "SlowDown") == 0 ||
                     strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0;
        if (!retry)
            return rc;
        dbp_warn("s3_retry", "method=%s key=%s attempt=%d status=%ld code=%s", r->method,
                 dbp_log_q(r->key ? r->key : "/"), attempt + 1, st, dbp_log_q(code));
    }
    dbp_err_prefix(err, "after %d attempts: ", s3->max_attempts);
    return rc;
}

int backup_s3_open(backup_s3_t **out, const backup_store_config_t *cfg, dbp_err_t *err)
{
    *out = NULL;
    if (!cfg->endpoint[0] || !cfg->bucket[0])
        return dbp_err_set(err, DBP_EINVAL, "s3 store %s: endpoint and bucket are required",
                           cfg->name);
    if (!cfg->access_key || !cfg->secret_key || !*cfg->access_key)
        return dbp_err_set(err, DBP_EINVAL, "s3 store %s: credentials are required", cfg->name);
    if (cfg->prefix[0] && !backup_key_valid(cfg->prefix))
        return dbp_err_set(err, DBP_EINVAL, "s3 store %s: bad prefix '%s'", cfg->name,
                           cfg->prefix);
    backup_s3_t *s3 = calloc(1, sizeof(*s3));
    if (!s3)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    s3->curl = curl_easy_init();
    size_t ul = strlen(cfg->access_key) + strlen(cfg->secret_key) + 2;
    s3->userpwd = malloc(ul);
    if (!s3->curl || !s3->userpwd) {
        backup_s3_close(s3);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    snprintf(s3->userpwd, ul, "%s:%s", cfg->access_key, cfg->secret_key);
    snprintf(s3->endpoint, sizeof(s3->endpoint), "%s", cfg->endpoint);
    size_t el = strlen(s3->endpoint);
    while (el && s3->endpoint[el - 1] == '/')
        s3->endpoint[--el] = '\0';
    snprintf(s3->bucket, sizeof(s3->bucket), "%s", cfg->bucket);
    if (cfg->prefix[0])
        snprintf(s3->prefix, sizeof(s3->prefix), "%s/", cfg->prefix);
    snprintf(s3->region, sizeof(s3->region), "%s", cfg->region[0] ? cfg->region : "us-east-1");
    s3->path_style = cfg->path_style;
    s3->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 5;
    s3->retry_base_ms = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : 200;
    *out = s3;
    return 0;
}

void backup_s3_close(backup_s3_t *s3)
{
    if (!s3)
        return;
    if (s3->curl)
        curl_easy_cleanup(s3->curl);
    if (s3->userpwd) {
        OPENSSL_cleanse(s3->userpwd, strlen(s3->userpwd));
        free(s3->userpwd);
    }
    free(s3);
}

int backup_s3_put(backup_s3_t *s3, const char *key, const void *data, size_t len, dbp_err_t *err)
{
    s3_req_t r = {.method = "PUT", .key = key, .body = data, .body_len = len};
    int rc = s3_do(s3, &r, err);
    free(r.resp);
    return rc;
}

int backup_s3_head(backup_s3_t *s3, const char *key, int64_t *size, dbp_err_t *err)
{
    s3_req_t r = {.method = "HEAD", .key = key};
    int rc = s3_do(s3, &r, err);
    if (rc == 0)
        *size = r.content_length;
    free(r.resp);
    return rc;
}

int backup_s3_get_range(backup_s3_t *s3, const char *key, int64_t off, size_t len, void *buf,
                        size_t *got, dbp_err_t *err)
{
    char range[96];
    snprintf(range, sizeof(range), "bytes=%lld-%lld", (long long)off,
             (long long)(off + (int64_t)len - 1));
    s3_req_t r = {.method = "GET", .key = key, .range = range, .sink = buf, .sink_cap = len};
    int rc = s3_do(s3, &r, err);
    if (rc == 0 && r.status != 206 && off != 0)
        rc = dbp_err_set(err, DBP_EIO, "s3: GET %s: the server ignored the byte range", key);
    if (rc == 0)
        *got = r.sink_len;
    free(r.resp);
    return rc;
}

int backup_s3_mpu_start(backup_s3_t *s3, const char *key, char *upload_id, size_t cap,
                        dbp_err_t *err)
{
    s3_req_t r = {.method = "POST", .key = key, .query = "uploads=", .check_error_body = true};
    int rc = s3_do(s3, &r, err);
    if (rc == 0 && (!r.resp || !xml_get(r.resp, r.resp + r.resp_len, "UploadId", upload_id, cap) ||
                    !upload_id[0]))
        rc = dbp_err_set(err, DBP_EIO, "s3: CreateMultipartUpload %s: no UploadId in the answer",
                         key);
    free(r.resp);
    return rc;
}

int backup_s3_mpu_part(backup_s3_t *s3, const char *key, const char *upload_id, int partno,
                       const void *data, size_t len, char etag[64], dbp_err_t *err)
{
    char *idq = curl_easy_escape(s3->curl, upload_id, 0);
    if (!idq)
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    char query[512];
    snprintf(query, sizeof(query), "partNumber=%d&uploadId=%s", partno, idq);
    curl_free(idq);
    s3_req_t r = {.method = "PUT", .key = key, .query = query, .body = data, .body_len = len};
    int rc = s3_do(s3, &r, err);
    if (rc == 0 && !r.etag[0])
        rc = dbp_err_set(err, DBP_EIO, "s3: UploadPart %s #%d: no ETag in the answer", key, partno);
    if (rc == 0)
        snprintf(etag, 64, "%s", r.etag);
    free(r.resp);
    return rc;
}

int backup_s3_mpu_complete(backup_s3_t *s3, const char *key, const char *upload_id,
                           char (*etags)[64], int nparts, dbp_err_t *err)
{
    size_t cap = 128 + (size_t)nparts * 128;
    char *body = malloc(cap);
    char *idq = curl_easy_escape(s3->curl, upload_id, 0);
    if (!body || !idq) {
        free(body);
        curl_free(idq);
        return dbp_err_set(err, DBP_ENOMEM, "out of memory");
    }
    size_t o = (size_t)snprintf(body, cap, "<CompleteMultipartUpload>");
    for (int i = 0; i < nparts; i++)
        o += (size_t)snprintf(body + o, cap - o,
                              "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", i + 1,
                              etags[i]);
    o += (size_t)snprintf(body + o, cap - o, "</CompleteMultipartUpload>");
    char query[512];
    snprintf(query, sizeof(query), "uploadId=%s", idq);
    curl_free(idq);
    s3_req_t r = {.method = "POST", .key = key, .query = query, .body = body, .body_len = o,
                  .content_type = "application/xml", .check_error_body = true};
    int rc = s3_do(s3, &r, err);
    free(body);
    free(r.resp);
    return rc;
}

void backup_s3_mpu_abort(backup_s3_t *s3, const char *key, const char *upload_id)
{
    char *idq = curl_easy_escape(s3->curl, upload_id, 0);
    if (!idq)
        return;
    char query[512];
    snprintf(query, sizeof(query), "uploadId=%s", idq);
    curl_free(idq);
    int saved = s3->max_attempts;
    s3->max_attempts = 1;
    s3_req_t r = {.method = "DELETE", .key = key, .query = query};
    dbp_err_t e;
    if (s3_do(s3, &r, &e) != 0 && e.code != DBP_ENOENT)
        dbp_warn("s3_abort_failed", "key=%s error=%s", dbp_log_q(key), dbp_log_q(e.msg));
    s3->max_attempts = saved;
    free(r.resp);
}

int backup_s3_list(backup_s3_t *s3, const char *prefix, backup_list_cb cb, void *ud,
                   dbp_err_t *err)
{
    char full[700], token[1024] = "";
    snprintf(full, sizeof(full), "%s%s", s3->prefix, prefix ? prefix : "");
    size_t plen = strlen(s3->prefix);
    int rc = 0;
    for (;;) {
        char *pq = curl_easy_escape(s3->curl, full, 0);
        char *tq = token[0] ? curl_easy_escape(s3->curl, token, 0) : NULL;
        if (!pq || (token[0] && !tq)) {
            curl_free(pq);
            curl_free(tq);
            return dbp_err_set(err, DBP_ENOMEM, "out of memory");
        }
        /* Canonical order: parameters sorted by name. */
        char query[2600];
        snprintf(query, sizeof(query), "%s%s%slist-type=2&prefix=%s", tq ? "continuation-token=" : "",
                 tq ? tq : "", tq ? "&" : "", pq);
        curl_free(pq);
        curl_free(tq);
        s3_req_t r = {.method = "GET", .key = NULL, .query = query};
        rc = s3_do(s3, &r, err);
        if (rc) {
            free(r.resp);
            return rc;
        }
        const char *p = r.resp, *end = r.resp ? r.resp + r.resp_len : NULL;
        while (p && rc == 0) {
            const char *c = memmem(p, (size_t)(end - p), "<Contents>", 10);
            if (!c)
                break;
            const char *ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
            if (!ce)
                break;
            char key[1024], size[32];
            if (xml_get(c, ce, "Key", key, sizeof(key)) && xml_get(c, ce, "Size", size, sizeof(size)) &&
                strncmp(key, s3->prefix, plen) == 0)
                rc = cb(key + plen, strtoll(size, NULL, 10), ud);
            p = ce + 11;
        }
        char trunc[16] = "";
        bool more = r.resp && xml_get(r.resp, end, "IsTruncated", trunc, sizeof(trunc)) &&
                    strcmp(trunc, "true") == 0;
        if (more && !xml_get(r.resp, end, "NextContinuationToken", token, sizeof(token)))
            more = false;
        free(r.resp);
        if (rc || !more)
            return rc;
    }
}

int backup_s3_delete(backup_s3_t *s3, const char *key, dbp_err_t *err)
{
    s3_req_t r = {.method = "DELETE", .key = key};
    int rc = s3_do(s3, &r, err);
    free(r.resp);
    return rc == DBP_ENOENT ? 0 : rc;
}
