/*
 * client.c: libcurl requests to the daemon's unix socket (see client.h).
 */
#include "cli/client.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "control/daemon.h"

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t add = size * nmemb;
    char *np = realloc(b->p, b->n + add + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, ptr, add);
    b->p = np;
    b->n += add;
    b->p[b->n] = '\0';
    return add;
}

void cli_query_add(char *q, size_t cap, const char *k, const char *v)
{
    if (!v)
        return;
    CURL *c = curl_easy_init();
    char *esc = c ? curl_easy_escape(c, v, 0) : NULL;
    size_t l = strlen(q);
    snprintf(q + l, cap - l, "%c%s=%s", l == 0 ? '?' : '&', k, esc ? esc : "");
    curl_free(esc);
    curl_easy_cleanup(c);
}

int cli_request(const char *data_dir, const char *method, const char *path, const char *body,
                size_t len, long *status, json_t **doc, dbp_err_t *err)
{
    char sock[PATH_MAX];
    int rc = ctl_paths(data_dir, NULL, sock, err);
    if (rc)
        return dbp_err_set(err, DBP_ENOENT,
                           "no dbplane data dir at %s (start one with `dbplane up -f FILE "
                           "--data-dir %s`)",
                           data_dir, data_dir);
    CURL *c = curl_easy_init();
    if (!c)
        return dbp_err_set(err, DBP_ENOMEM, "curl_easy_init failed");
    char url[4096];
    snprintf(url, sizeof(url), "http://dbplane%s", path);
    buf_t b = {0};
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *hdr = NULL;
    if (strcmp(method, "POST") == 0) {
        hdr = curl_slist_append(hdr, "Content-Type: application/yaml");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        if (cc == CURLE_COULDNT_CONNECT)
            rc = dbp_err_set(err, DBP_ENOENT,
                             "no dbplane daemon is running for data dir %s (start it with "
                             "`dbplane up -f FILE --data-dir %s`)",
                             data_dir, data_dir);
        else
            rc = dbp_err_set(err, DBP_EIO, "request to the daemon failed: %s",
                             curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    json_error_t je;
    *doc = json_loads(b.p ? b.p : "null", JSON_DECODE_ANY, &je);
    if (!*doc)
        rc = dbp_err_set(err, DBP_EIO, "bad response from the daemon: %s", je.text);
out:
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    free(b.p);
    return rc;
}
