/*
 * client.h: the CLI's side of the API (api/api.h): HTTP requests with libcurl over the
 * daemon's unix socket, found through the data dir.
 */
#ifndef DBP_CLI_CLIENT_H
#define DBP_CLI_CLIENT_H

#include <jansson.h>

#include "common/err.h"

/* Sends `method` `path` (with query string) to the daemon of `data_dir`, with an optional
 * body of `len` bytes. Returns 0 with *status (HTTP code) and owned *doc (json_decref)
 * parsed from the response; DBP_ENOENT when no daemon answers (message says how to start
 * one); DBP_EIO on transport errors. */
int cli_request(const char *data_dir, const char *method, const char *path, const char *body,
                size_t len, long *status, json_t **doc, dbp_err_t *err)
    __attribute__((warn_unused_result));

/* Appends "&k=v" (URL-escaped v) to a query string of capacity cap; the first call should
 * see an empty string and writes "?k=v". NULL v is skipped. */
void cli_query_add(char *q, size_t cap, const char *k, const char *v);

#endif
