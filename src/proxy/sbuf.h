/*
 * sbuf.h: the proxy's stream layer — the only code that touches sockets and TLS, after
 * PgBouncer's sbuf. An sbuf owns one non-blocking fd (client or server side), its optional
 * OpenSSL session, a read buffer and an output queue, both taken from a per-worker pool
 * of I/O buffers only while they hold bytes (an idle connection holds none), and its
 * libevent events. Protocol code sees bytes through one callback per event and writes by
 * queueing bytes and sending once per batch; it never calls recv/send itself.
 *
 * Callback contract: cb(sb, ev) runs on the worker thread that owns the event base.
 *   SBUF_EV_DATA      new bytes are in sbuf_data(); consume them with sbuf_consume.
 *                     Bytes left unconsumed stay buffered (a partial message).
 *   SBUF_EV_EOF       the peer closed or the connection failed (reason in sb->err).
 *   SBUF_EV_CONNECTED an outgoing connect finished.
 *   SBUF_EV_DRAINED   the output queue, which had been full, is empty again.
 * The callback may call sbuf_close (the fd closes and no callback follows) but must not
 * free the memory that holds the sbuf: the owner frees it later (mark closing, reap after
 * the loop iteration).
 */
#ifndef DBP_PROXY_SBUF_H
#define DBP_PROXY_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#define SBUF_IOBUF_SIZE (32 * 1024) /* bytes of one pooled I/O buffer */
#define SBUF_MAX_OUT (64u << 20)    /* output queue cap in bytes: beyond, the peer is too slow */

/* A contiguous byte buffer: data[pos..len) are valid, cap is the allocation. */
typedef struct sbuf_iobuf {
    struct sbuf_iobuf *next; /* freelist link */
    size_t cap, pos, len;
    uint8_t data[];
} sbuf_iobuf_t;

struct sbuf;
struct io_uring;

/* Per-worker context: the event base and the freelist of standard-size buffers. With
 * io_uring (sbuf_ctx_enable_uring), plaintext sends of one event-loop round are queued on
 * `pend` and leave together in one io_uring_enter from sbuf_ctx_flush (see sbuf.c). */
typedef struct sbuf_ctx {
    struct event_base *base;
    sbuf_iobuf_t *free;
    int nfree;
    int max_free;       /* buffers kept on the freelist */
    uint64_t bytes_in;  /* counters of this worker (all sbufs) */
    uint64_t bytes_out;
    struct io_uring *ring;  /* NULL: every send is a sendmsg at once */
    struct sbuf **pend;     /* queued sbufs (NULL slots: closed meanwhile) */
    int npend, cap_pend;
} sbuf_ctx_t;

/* Events delivered to the callback (see the contract above). */
typedef enum sbuf_event {
    SBUF_EV_DATA = 0,
    SBUF_EV_EOF,
    SBUF_EV_CONNECTED,
    SBUF_EV_DRAINED,
} sbuf_event_t;

typedef void (*sbuf_cb_t)(struct sbuf *sb, sbuf_event_t ev);

/* One stream. Embedded in the owner's connection struct. */
typedef struct sbuf {
    int fd;
    sbuf_ctx_t *ctx;
    sbuf_cb_t cb;
    struct event *rev;  /* persistent read event */
    struct event *wev;  /* one-shot write event, created on first need */
    SSL *ssl;           /* NULL for plaintext */
    sbuf_iobuf_t *in;   /* read buffer, NULL when empty */
    sbuf_iobuf_t *out;  /* output queue, NULL when empty */
    bool reading;       /* read event added */
    bool connecting;    /* waiting for an outgoing connect */
    bool handshaking;   /* TLS handshake in progress */
    bool closed;
    bool in_cb;         /* inside the callback (for re-entrancy checks) */
    bool upend;         /* output queued on ctx->pend for this round's io_uring batch */
    const char *err;    /* static reason for EOF */
} sbuf_t;

/* Initialises a freshly zeroed context over base. */
void sbuf_ctx_init(sbuf_ctx_t *ctx, struct event_base *base);
/* Frees the freelist (and the io_uring, if any). */
void sbuf_ctx_free(sbuf_ctx_t *ctx);
/* Sends of one event-loop round on plaintext sockets go out in one io_uring_enter
 * (IORING_OP_SEND, MSG_DONTWAIT) from sbuf_ctx_flush instead of one sendmsg each. Returns
 * 0, or -1 when io_uring is unavailable (not built in, or the kernel refuses): sends stay
 * immediate. Call on the worker thread before the loop runs. */
int sbuf_ctx_enable_uring(sbuf_ctx_t *ctx);
/* Sends everything queued since the last call (one io_uring_enter per 256 sends) and
 * applies the results as a sendmsg return would be applied: short or EAGAIN → queued and
 * the write event armed, an error → SBUF_EV_EOF ("write failed") delivered to the owner.
 * The owner runs it after every event-loop round while ctx->npend > 0. */
void sbuf_ctx_flush(sbuf_ctx_t *ctx);

/* Takes ownership of accepted, connected fd (made non-blocking here) and starts reading.
 * Returns 0 or -1 (the fd is then closed). */
int sbuf_accept(sbuf_t *sb, sbuf_ctx_t *ctx, int fd, sbuf_cb_t cb)
    __attribute__((warn_unused_result));

/* Starts a non-blocking connect to host:port over TCP, or to the Unix socket
 * "<sock_dir>/.s.PGSQL.<port>" when sock_dir is non-empty. SBUF_EV_CONNECTED or
 * SBUF_EV_EOF follows. Returns 0 or -1 (sb->err says why; nothing to close). */
int sbuf_connect(sbuf_t *sb, sbuf_ctx_t *ctx, const char *host, int port, const char *sock_dir,
                 sbuf_cb_t cb) __attribute__((warn_unused_result));

/* Starts a server-side TLS handshake on the connection; data events resume once it is
 * done. Borrows ctx. Returns 0 or -1. */
int sbuf_start_tls(sbuf_t *sb, SSL_CTX *tls) __attribute__((warn_unused_result));

/* Starts a client-side TLS handshake on a connected sbuf (after the peer agreed to TLS).
 * Output queued meanwhile is sent once the handshake is done. With verify_name, the
 * peer certificate must name `host` (DNS name or IP address); the chain check itself is
 * the context's (SSL_VERIFY_PEER). A failed handshake ends in SBUF_EV_EOF. Borrows tls
 * and host. Returns 0 or -1. */
int sbuf_start_tls_client(sbuf_t *sb, SSL_CTX *tls, const char *host, bool verify_name)
    __attribute__((warn_unused_result));

/* View of the buffered input: *len bytes at the returned pointer (NULL when empty). Valid
 * until the next sbuf call on sb. */
static inline uint8_t *sbuf_data(sbuf_t *sb, size_t *len)
{
    if (!sb->in) {
        *len = 0;
        return NULL;
    }
    *len = sb->in->len - sb->in->pos;
    return sb->in->data + sb->in->pos;
}

/* Marks n buffered input bytes consumed. */
void sbuf_consume(sbuf_t *sb, size_t n);

/* Makes room so that the input buffer can hold `total` bytes from its current start
 * (for a message that must be inspected whole). Returns 0 or -1 on allocation failure. */
int sbuf_reserve_in(sbuf_t *sb, size_t total) __attribute__((warn_unused_result));

/* Stops / resumes reading (flow control). Idempotent. Resuming with buffered input
 * delivers it again through SBUF_EV_DATA from the event loop. */
void sbuf_pause(sbuf_t *sb);
void sbuf_resume(sbuf_t *sb);

/* Returns a pointer to n writable bytes at the end of the output queue (growing it), to be
 * committed with sbuf_commit; NULL on allocation failure or when the queue would pass
 * SBUF_MAX_OUT. */
uint8_t *sbuf_out_reserve(sbuf_t *sb, size_t n);
/* Adds n bytes written through sbuf_out_reserve to the queue. */
void sbuf_out_commit(sbuf_t *sb, size_t n);
/* Copies n bytes to the output queue. Returns 0 or -1 (as sbuf_out_reserve). */
int sbuf_append(sbuf_t *sb, const void *p, size_t n) __attribute__((warn_unused_result));

/* Sends the queued output followed by extra[0..n) (may be NULL/0) — one writev for
 * plaintext, so forwarded bytes need no copy. What the socket does not take is queued
 * and a write event is armed. Returns 0, or -1 when the connection is broken (the caller
 * closes it). */
int sbuf_send(sbuf_t *sb, const void *extra, size_t n) __attribute__((warn_unused_result));

/* True while output is queued (the socket was full): the producer should pause. */
static inline bool sbuf_blocked(const sbuf_t *sb)
{
    return sb->out && sb->out->len > sb->out->pos && !sb->upend;
}

/* Closes the fd and frees buffers and events. No callback follows. Idempotent. */
void sbuf_close(sbuf_t *sb);

#endif
