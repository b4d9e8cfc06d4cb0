/*
 * pg.h: PostgreSQL frontend/backend protocol 3.0 as pure functions over buffers. Nothing
 * here touches a socket, allocates, or keeps state between calls: each parser takes
 * (buf, len, &out) and returns the bytes it consumed (> 0), PG_NEED_MORE (0) when the
 * buffer does not yet hold a whole item, or a negative PG_E* code with a description in
 * out->err. Parsed fields are views (pointer + length) into the caller's buffer, valid as
 * long as that buffer is. The builders write into a caller-owned pg_wbuf_t that carries a
 * sticky `failed` flag, so a caller writes many fields and checks once.
 *
 * This is what the proxy's connection code (client.c, server.c) is written against, and
 * what tests/unit/test_proxy_pg.c and tests/fuzz/fuzz_pg.c exercise alone.
 * Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
 */
#ifndef DBP_PROXY_PG_H
#define DBP_PROXY_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Parser results besides "bytes consumed" (> 0). */
enum {
    PG_NEED_MORE = 0,      /* the buffer holds only part of the item; read more */
    PG_EMALFORMED = -1,    /* the bytes violate the protocol */
    PG_ETOOBIG = -2,       /* a length field exceeds the caller's limit */
    PG_EUNSUPPORTED = -3,  /* well-formed but not supported (e.g. protocol 2.0) */
};

/* Request codes of the length-prefixed packets a client may send first. */
#define PG_PROTO_V3 196608u           /* 3.0 */
#define PG_CODE_CANCEL 80877102u      /* CancelRequest */
#define PG_CODE_SSL 80877103u         /* SSLRequest */
#define PG_CODE_GSSENC 80877104u      /* GSSENCRequest */
#define PG_MAX_STARTUP_LEN 10000u     /* as PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PG_MAX_STARTUP_PARAMS 32
#define PG_MAX_MSG_LEN 0x3fffffffu    /* PostgreSQL's PQ_LARGE_MESSAGE_LIMIT */

/* Returns a static name for a PG_E* code or "ok"/"need_more". */
const char *pg_status_str(ssize_t rc);

/* A view into a caller's buffer. */
typedef struct pg_view {
    const char *p;
    size_t len;
} pg_view_t;

/* True when the view equals the NUL-terminated string s (exact bytes). */
bool pg_view_eq(pg_view_t v, const char *s);

/* What the first packet of a connection asks for. */
typedef enum pg_startup_kind {
    PG_STARTUP_MESSAGE = 0, /* StartupMessage, protocol 3.x */
    PG_STARTUP_SSL,         /* SSLRequest */
    PG_STARTUP_GSSENC,      /* GSSENCRequest */
    PG_STARTUP_CANCEL,      /* CancelRequest */
} pg_startup_kind_t;

/* A parsed first packet (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest). */
typedef struct pg_startup {
    pg_startup_kind_t kind;
    uint32_t version;                      /* StartupMessage protocol version */
    int nparams;
    pg_view_t names[PG_MAX_STARTUP_PARAMS]; /* parameter names, NUL excluded */
    pg_view_t values[PG_MAX_STARTUP_PARAMS];
    pg_view_t user, database;              /* views of the "user"/"database" values ({0} if absent) */
    uint32_t cancel_pid, cancel_key;       /* CancelRequest fields */
    const char *err;                       /* static description on error */
} pg_startup_t;

/* Parses the first packet of a client connection (PostgreSQL protocol 3.0, "Start-up":
 * Int32 length, Int32 code, then for StartupMessage NUL-terminated name/value pairs ending
 * with an empty name). Lengths below 8 or above PG_MAX_STARTUP_LEN are errors before any
 * byte of the body is needed. Protocol versions other than 3.x return PG_EUNSUPPORTED.
 * "database" defaults to "user" as PostgreSQL does. */
ssize_t pg_parse_startup(const uint8_t *buf, size_t len, pg_startup_t *out);

/* The header of a regular message: Byte1 type, Int32 length (including itself). */
typedef struct pg_msg {
    char type;
    uint32_t len;      /* the length field: body length + 4 */
    size_t total;      /* whole message size in bytes: len + 1 */
    const uint8_t *body; /* body view (len - 4 bytes) when the whole message was present */
    const char *err;
} pg_msg_t;

/* Reads a message header. Returns 5 when the header is present (out->type, out->len,
 * out->total filled; out->body set only if the whole message is in buf, else NULL),
 * PG_NEED_MORE for fewer than 5 bytes, PG_EMALFORMED for a length below 4, PG_ETOOBIG for
 * a length above max_len. */
ssize_t pg_msg_header(const uint8_t *buf, size_t len, uint32_t max_len, pg_msg_t *out);

/* True for the message types a frontend may send after start-up (B C D E F H P Q S X c d f p). */
bool pg_frontend_type_valid(char type);

/* Parse ('P'): statement name, query text, parameter type OIDs. */
typedef struct pg_parse_msg {
    pg_view_t name;
    pg_view_t query;
    uint16_t nparams;
    const uint8_t *param_types; /* nparams big-endian Int32 OIDs */
    pg_view_t rest;             /* everything after the name: query\0 + Int16 + OIDs */
    const char *err;
} pg_parse_msg_t;

/* Parses the body of a Parse message. Returns body length or PG_EMALFORMED. */
ssize_t pg_parse_parse(const uint8_t *body, size_t len, pg_parse_msg_t *out);

/* Reads the two names at the start of a Bind body: destination portal and source
 * statement. Returns the bytes they take (both NULs included) — a prefix of the body — or
 * PG_NEED_MORE when `len` (possibly only a prefix of the body) ends inside them, or
 * PG_EMALFORMED when a name exceeds max_name bytes. */
ssize_t pg_parse_bind_names(const uint8_t *body, size_t len, size_t max_name,
                            pg_view_t *portal, pg_view_t *stmt);

/* Describe ('D') or Close ('C') body: Byte1 'S' or 'P', then a name. Returns body length
 * or PG_EMALFORMED. */
ssize_t pg_parse_target(const uint8_t *body, size_t len, char *kind, pg_view_t *name);

/* ParameterStatus ('S' from the server): name and value. Returns body length or error. */
ssize_t pg_parse_param_status(const uint8_t *body, size_t len, pg_view_t *name,
                              pg_view_t *value);

/* ReadyForQuery ('Z'): transaction status 'I', 'T' or 'E'. Returns 1 or PG_EMALFORMED. */
ssize_t pg_parse_ready(const uint8_t *body, size_t len, char *status);

/* BackendKeyData ('K'): process id and secret key. Returns 8 or PG_EMALFORMED. */
ssize_t pg_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key);

/* Authentication request codes ('R' messages). */
enum {
    PG_AUTH_OK = 0,
    PG_AUTH_CLEARTEXT = 3,
    PG_AUTH_MD5 = 5,
    PG_AUTH_SASL = 10,
    PG_AUTH_SASL_CONTINUE = 11,
    PG_AUTH_SASL_FINAL = 12,
};

/* An authentication request: code and the data that follows it. */
typedef struct pg_auth {
    uint32_t code;
    pg_view_t data;      /* MD5: 4-byte salt; SASL: mechanism list; SASL_*: SCRAM text */
    bool scram_offered;  /* SASL: "SCRAM-SHA-256" is in the list */
} pg_auth_t;

/* Parses an Authentication* body. Returns body length or PG_EMALFORMED. */
ssize_t pg_parse_auth(const uint8_t *body, size_t len, pg_auth_t *out);

/* SASLInitialResponse ('p' after AuthenticationSASL): mechanism and initial data. */
ssize_t pg_parse_sasl_initial(const uint8_t *body, size_t len, pg_view_t *mech,
                              pg_view_t *data);

/* ErrorResponse/NoticeResponse fields we use (views; {0} when absent). */
typedef struct pg_error {
    pg_view_t severity, sqlstate, message;
} pg_error_t;

/* Parses an ErrorResponse or NoticeResponse body. Returns body length or PG_EMALFORMED. */
ssize_t pg_parse_error(const uint8_t *body, size_t len, pg_error_t *out);

/* A message builder over caller-owned memory. `failed` becomes true (and stays) when a
 * write does not fit; the content is then unusable. */
typedef struct pg_wbuf {
    uint8_t *p;
    size_t len, cap;
    size_t msg_start; /* where the current message's type byte is */
    bool failed;
} pg_wbuf_t;

/* Starts a builder over buf[0..cap). Borrows buf. */
void pg_wbuf_init(pg_wbuf_t *w, uint8_t *buf, size_t cap);
/* Starts a message: type byte (0 for the untyped start-up packets) and a length placeholder. */
void pg_w_begin(pg_wbuf_t *w, char type);
void pg_w_u8(pg_wbuf_t *w, uint8_t v);
void pg_w_u16(pg_wbuf_t *w, uint16_t v);
void pg_w_u32(pg_wbuf_t *w, uint32_t v);
void pg_w_bytes(pg_wbuf_t *w, const void *p, size_t n);
/* Writes s and its terminating NUL. */
void pg_w_str(pg_wbuf_t *w, const char *s);
/* Writes the view's bytes and a NUL. */
void pg_w_view(pg_wbuf_t *w, pg_view_t v);
/* Patches the current message's length field. */
void pg_w_end(pg_wbuf_t *w);

/* Appends a whole ErrorResponse ('E'): severity ("FATAL", "ERROR"), SQLSTATE, message. */
void pg_w_error(pg_wbuf_t *w, const char *severity, const char *sqlstate, const char *msg);
/* Appends ParameterStatus ('S'). */
void pg_w_param_status(pg_wbuf_t *w, const char *name, size_t nlen, const char *value,
                       size_t vlen);
/* Appends ReadyForQuery ('Z') with the status byte. */
void pg_w_ready(pg_wbuf_t *w, char status);
/* Appends Authentication* ('R') with code and data bytes (may be NULL/0). */
void pg_w_auth(pg_wbuf_t *w, uint32_t code, const void *data, size_t n);
/* Appends a simple Query ('Q'). */
void pg_w_query(pg_wbuf_t *w, const char *sql, size_t n);

/* Appends `s` as a SQL string literal ('...' with quotes doubled; E'' form when it holds a
 * backslash) without a NUL. Used to restore parameters with SET. */
void pg_w_sql_literal(pg_wbuf_t *w, const char *s, size_t n);

#endif
