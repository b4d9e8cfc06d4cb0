/*
 * postgresql_int.h: helpers shared by the PostgreSQL driver's files (postgresql.c and
 * postgresql_backup.c); not for other modules.
 */
#ifndef DBP_ENGINES_POSTGRESQL_INT_H
#define DBP_ENGINES_POSTGRESQL_INT_H

#include <stddef.h>

#include <libpq-fe.h>

#include "engines/engine.h"

/* "/usr/lib/postgresql/<major>/bin/<tool>" for the instance's version (Debian's layout). */
void engine_pg_tool(const engine_instance_t *in, const char *tool, char *buf, size_t len);

/* An admin connection (dbplane_admin, peer auth) to `dbname` over the instance's unix
 * socket, with synchronous_commit=local; gives up after in->probe_timeout_ms (default
 * 3 s). Returns an owned connection (PQfinish) or NULL with err filled. */
PGconn *engine_pg_connect(const engine_instance_t *in, const char *dbname, dbp_err_t *err);

/* Runs one statement with text parameters; returns the result (PQclear) or NULL with
 * err holding the server's message. */
PGresult *engine_pg_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         dbp_err_t *err);

#endif
