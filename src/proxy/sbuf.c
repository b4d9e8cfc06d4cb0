/*
 * sbuf.c: the stream layer (see sbuf.h). One recv per readable event into a pooled 32 KiB
 * buffer, one sendmsg (writev) per batch of output, an EPOLL interest change only when a
 * socket is full or a reader must be paused. Buffers go back to the worker's freelist as
 * soon as they are empty, so idle connections cost no buffer memory.
 */
#include "proxy/sbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#ifdef DBP_HAVE_URING
#include <liburing.h>
#endif

#define SBUF_URING_ENTRIES 256 /* SQ size; a longer round is submitted in chunks */

static int flush_out(sbuf_t *sb, const void *extra, size_t n);
static void arm_write(sbuf_t *sb);
static void fail(sbuf_t *sb, const char *why);

void sbuf_ctx_init(sbuf_ctx_t *ctx, struct event_base *base)
{
    ctx->base = base;
    ctx->free = NULL;
    ctx->nfree = 0;
    ctx->max_free = 512;
}

void sbuf_ctx_free(sbuf_ctx_t *ctx)
{
#ifdef DBP_HAVE_URING
    if (ctx->ring) {
        io_uring_queue_exit(ctx->ring);
        free(ctx->ring);
        ctx->ring = NULL;
    }
#endif
    free(ctx->pend);
    ctx->pend = NULL;
    ctx->npend = ctx->cap_pend = 0;
    while (ctx->free) {
        sbuf_iobuf_t *b = ctx->free;
        ctx->free = b->next;
        free(b);
    }
    ctx->nfree = 0;
}

/* A buffer of at least min_cap bytes: pooled when standard-size, else malloc'd. */
static sbuf_iobuf_t *buf_get(sbuf_ctx_t *ctx, size_t min_cap)
{
    sbuf_iobuf_t *b;
    if (min_cap <= SBUF_IOBUF_SIZE && ctx->free) {
        b = ctx->free;
        ctx->free = b->next;
        ctx->nfree--;
    } else {
        size_t cap = min_cap < SBUF_IOBUF_SIZE ? SBUF_IOBUF_SIZE : min_cap;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = cap;
    }
    b->next = NULL;
    b->pos = b->len = 0;
    return b;
}

static void buf_put(sbuf_ctx_t *ctx, sbuf_iobuf_t *b)
{
    if (!b)
        return;
    if (b->cap == SBUF_IOBUF_SIZE && ctx->nfree < ctx->max_free) {
        b->next = ctx->free;
        ctx->free = b;
        ctx->nfree++;
    } else {
        free(b);
    }
}

/*
 * io_uring send batching. sbuf_send on a plaintext socket with nothing queued copies the
 * bytes to the output queue and puts the sbuf on ctx->pend; after each event-loop round
 * the worker calls sbuf_ctx_flush, which submits one IORING_OP_SEND per queued sbuf in one
 * io_uring_enter. MSG_DONTWAIT makes io_uring
 * complete a full socket with -EAGAIN instead of arming its own poll, so every send has
 * completed when io_uring_submit_and_wait returns; what a socket did not take stays queued
 * and the write event is armed, as after a short sendmsg. The point (docs/benchmarks.md):
 * the wake-ups of all peers of a round happen in one system call, so the worker can be
 * preempted by a woken peer once per round instead of once per send.
 */
static void pend_remove(sbuf_t *sb)
{
    if (!sb->upend)
        return;
    sb->upend = false;
    for (int i = 0; i < sb->ctx->npend; i++)
        if (sb->ctx->pend[i] == sb)
            sb->ctx->pend[i] = NULL;
}

#ifdef DBP_HAVE_URING
/* Applies the result of one batched send (bytes or -errno) to sb. */
static void uring_result(sbuf_t *sb, int res)
{
    if (res < 0 && res != -EAGAIN && res != -EINTR) {
        fail(sb, "write failed");
        return;
    }
    if (res > 0) {
        sb->out->pos += (size_t)res;
        sb->ctx->bytes_out += (uint64_t)res;
    }
    if (sb->out->len > sb->out->pos) {
        arm_write(sb);
    } else {
        buf_put(sb->ctx, sb->out);
        sb->out = NULL;
    }
}

/* Marks slot i of the batch done and applies res to its sbuf (if still open). */
static void batch_done(sbuf_ctx_t *ctx, int i, int res)
{
    sbuf_t *sb = ctx->pend[i];
    if (!sb)
        return;
    ctx->pend[i] = NULL;
    sb->upend = false;
    uring_result(sb, res);
}

void sbuf_ctx_flush(sbuf_ctx_t *ctx)
{
    int done = 0;
    while (done < ctx->npend) {
        int base = done, nsub = 0;
        for (; done < ctx->npend && nsub < SBUF_URING_ENTRIES; done++) {
            sbuf_t *sb = ctx->pend[done];
            if (!sb)
                continue;
            struct io_uring_sqe *sqe = io_uring_get_sqe(ctx->ring);
            if (!sqe)
                break;
            io_uring_prep_send(sqe, sb->fd, sb->out->data + sb->out->pos,
                               sb->out->len - sb->out->pos, MSG_NOSIGNAL | MSG_DONTWAIT);
            sqe->user_data = (uint64_t)done;
            nsub++;
        }
        int got = 0;
        if (nsub && io_uring_submit_and_wait(ctx->ring, (unsigned)nsub) >= 0) {
            /* MSG_DONTWAIT: every send completed inside the submit; collect them all
             * before any callback runs (a callback may queue more sends). */
            while (got < nsub) {
                struct io_uring_cqe *cqe;
                unsigned head, k = 0;
                int res[SBUF_URING_ENTRIES];
                int idx[SBUF_URING_ENTRIES];
                io_uring_for_each_cqe(ctx->ring, head, cqe)
                {
                    idx[k] = (int)cqe->user_data;
                    res[k++] = cqe->res;
                }
                io_uring_cq_advance(ctx->ring, k);
                for (unsigned j = 0; j < k; j++)
                    batch_done(ctx, idx[j], res[j]);
                got += (int)k;
                if (got < nsub && io_uring_wait_cqe(ctx->ring, &cqe) != 0)
                    break;
            }
        }
        if (got < nsub) {
            /* A failed submit: what did not complete goes the plain way. */
            for (int i = base; i < done; i++) {
                sbuf_t *sb = ctx->pend[i];
                if (!sb)
                    continue;
                ctx->pend[i] = NULL;
                sb->upend = false;
                if (flush_out(sb, NULL, 0) != 0)
                    fail(sb, "write failed");
            }
        }
    }
    ctx->npend = 0;
}
#else
void sbuf_ctx_flush(sbuf_ctx_t *ctx)
{
    ctx->npend = 0; /* nothing is ever queued without io_uring */
}
#endif

int sbuf_ctx_enable_uring(sbuf_ctx_t *ctx)
{
#ifdef DBP_HAVE_URING
    struct io_uring *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    struct io_uring_params pr;
    memset(&pr, 0, sizeof(pr));
    pr.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    if (io_uring_queue_init_params(SBUF_URING_ENTRIES, r, &pr) != 0) {
        free(r);
        return -1;
    }
    ctx->ring = r;
    return 0;
#else
    (void)ctx;
    return -1;
#endif
}

/* Queues sb's output plus extra[0..n) for the round's batch; 0, or -1 (out of memory). */
static int pend_add(sbuf_t *sb, const void *extra, size_t n)
{
    sbuf_ctx_t *ctx = sb->ctx;
    if (ctx->npend == ctx->cap_pend) {
        int cap = ctx->cap_pend ? ctx->cap_pend * 2 : 64;
        sbuf_t **np = realloc(ctx->pend, (size_t)cap * sizeof(*np));
        if (!np)
            return -1;
        ctx->pend = np;
        ctx->cap_pend = cap;
    }
    if (n && sbuf_append(sb, extra, n) != 0)
        return -1;
    if (!sb->out || sb->out->len == sb->out->pos)
        return 0;
    ctx->pend[ctx->npend++] = sb;
    sb->upend = true;
    return 0;
}

/* Sends output queued for the batch at once (before a close or a TLS start). */
static void pend_flush_now(sbuf_t *sb)
{
    if (!sb->upend)
        return;
    pend_remove(sb);
    (void)flush_out(sb, NULL, 0);
}

static void deliver(sbuf_t *sb, sbuf_event_t ev)
{
    sb->in_cb = true;
    sb->cb(sb, ev);
    sb->in_cb = false;
}

static void fail(sbuf_t *sb, const char *why)
{
    if (sb->closed)
        return;
    sb->err = why;
    deliver(sb, SBUF_EV_EOF);
}

static void arm_write(sbuf_t *sb)
{
    if (!sb->wev)
        return;
    if (!event_pending(sb->wev, EV_WRITE, NULL))
        event_add(sb->wev, NULL);
}

static void on_write(evutil_socket_t fd, short what, void *arg);
static void on_read(evutil_socket_t fd, short what, void *arg);

static int setup_events(sbuf_t *sb)
{
    sb->rev = event_new(sb->ctx->base, sb->fd, EV_READ | EV_PERSIST, on_read, sb);
    sb->wev = event_new(sb->ctx->base, sb->fd, EV_WRITE, on_write, sb);
    return sb->rev && sb->wev ? 0 : -1;
}

static void set_sockopts(int fd)
{
    int one = 1;
    int rc = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)rc; /* fails harmlessly on Unix sockets */
    rc = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    (void)rc;
}

int sbuf_accept(sbuf_t *sb, sbuf_ctx_t *ctx, int fd, sbuf_cb_t cb)
{
    memset(sb, 0, sizeof(*sb));
    sb->fd = fd;
    sb->ctx = ctx;
    sb->cb = cb;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || setup_events(sb) != 0) {
        sbuf_close(sb);
        return -1;
    }
    set_sockopts(fd);
    event_add(sb->rev, NULL);
    sb->reading = true;
    return 0;
}

int sbuf_connect(sbuf_t *sb, sbuf_ctx_t *ctx, const char *host, int port, const char *sock_dir,
                 sbuf_cb_t cb)
{
    memset(sb, 0, sizeof(*sb));
    sb->fd = -1;
    sb->ctx = ctx;
    sb->cb = cb;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    int family;
    if (sock_dir && *sock_dir) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", sock_dir, port);
        if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
            sb->err = "unix socket path too long";
            sb->closed = true;
            return -1;
        }
        family = AF_UNIX;
        sl = sizeof(*un);
    } else {
        const char *h = strcmp(host, "localhost") == 0 || !*host ? "127.0.0.1" : host;
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            in4->sin_port = htons((uint16_t)port);
            family = AF_INET;
            sl = sizeof(*in4);
        } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)port);
            family = AF_INET6;
            sl = sizeof(*in6);
        } else {
            sb->err = "backend host is not an IP address";
            sb->closed = true;
            return -1;
        }
    }
    sb->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sb->fd < 0) {
        sb->err = "socket() failed";
        sb->closed = true;
        return -1;
    }
    if (setup_events(sb) != 0) {
        sb->err = "out of memory";
        sbuf_close(sb);
        return -1;
    }
    if (family != AF_UNIX)
        set_sockopts(sb->fd);
    if (connect(sb->fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        sb->err = errno == ECONNREFUSED ? "connection refused"
                  : errno == ENOENT    ? "no such socket"
                  : errno == EAGAIN    ? "unix socket backlog full"
                                       : "connect failed";
        sbuf_close(sb);
        return -1;
    }
    sb->connecting = true;
    event_add(sb->wev, NULL);
    return 0;
}

int sbuf_start_tls(sbuf_t *sb, SSL_CTX *tls)
{
    pend_flush_now(sb); /* e.g. the 'S' answer to SSLRequest goes out in plaintext first */
    sb->ssl = SSL_new(tls);
    if (!sb->ssl || SSL_set_fd(sb->ssl, sb->fd) != 1)
        return -1;
    SSL_set_accept_state(sb->ssl);
    SSL_set_mode(sb->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    sb->handshaking = true;
    return 0;
}

int sbuf_start_tls_client(sbuf_t *sb, SSL_CTX *tls, const char *host, bool verify_name)
{
    pend_flush_now(sb);
    sb->ssl = SSL_new(tls);
    if (!sb->ssl || SSL_set_fd(sb->ssl, sb->fd) != 1)
        return -1;
    SSL_set_connect_state(sb->ssl);
    SSL_set_mode(sb->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    unsigned char addr[16];
    bool ip = host && (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1);
    if (host && *host && !ip && SSL_set_tlsext_host_name(sb->ssl, host) != 1)
        return -1;
    if (verify_name && host && *host) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(sb->ssl);
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 : SSL_set1_host(sb->ssl, host) != 1)
            return -1;
    }
    sb->handshaking = true;
    arm_write(sb); /* the ClientHello goes out from on_write, outside the caller's callback */
    return 0;
}

/* Drives the TLS handshake; true when it finished now. */
static bool do_handshake(sbuf_t *sb)
{
    ERR_clear_error();
    int r = SSL_do_handshake(sb->ssl);
    if (r == 1) {
        sb->handshaking = false;
        return true;
    }
    int e = SSL_get_error(sb->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return false;
    if (e == SSL_ERROR_WANT_WRITE) {
        arm_write(sb);
        return false;
    }
    if (!SSL_is_server(sb->ssl) && SSL_get_verify_result(sb->ssl) != X509_V_OK)
        fail(sb, "TLS handshake failed: server certificate verification failed");
    else
        fail(sb, "TLS handshake failed");
    return false;
}

void sbuf_consume(sbuf_t *sb, size_t n)
{
    if (!sb->in)
        return;
    sb->in->pos += n;
    if (sb->in->pos >= sb->in->len)
        sb->in->pos = sb->in->len = 0;
}

int sbuf_reserve_in(sbuf_t *sb, size_t total)
{
    if (!sb->in) {
        sb->in = buf_get(sb->ctx, total);
        return sb->in ? 0 : -1;
    }
    sbuf_iobuf_t *b = sb->in;
    size_t have = b->len - b->pos;
    if (b->cap - b->pos >= total)
        return 0;
    if (b->cap >= total) {
        memmove(b->data, b->data + b->pos, have);
        b->pos = 0;
        b->len = have;
        return 0;
    }
    sbuf_iobuf_t *nb = buf_get(sb->ctx, total);
    if (!nb)
        return -1;
    memcpy(nb->data, b->data + b->pos, have);
    nb->len = have;
    buf_put(sb->ctx, b);
    sb->in = nb;
    return 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    sbuf_t *sb = arg;
    if (sb->closed)
        return;
    if (sb->handshaking) {
        if (!do_handshake(sb))
            return;
        if (sb->out && sbuf_send(sb, NULL, 0) != 0) {
            fail(sb, "write failed");
            return;
        }
    }
    for (int round = 0; round < 8; round++) {
        if (!sb->in && !(sb->in = buf_get(sb->ctx, 0))) {
            fail(sb, "out of memory");
            return;
        }
        sbuf_iobuf_t *b = sb->in;
        if (b->pos == b->len)
            b->pos = b->len = 0;
        if (b->cap - b->len < 1024 && b->pos > 0) {
            memmove(b->data, b->data + b->pos, b->len - b->pos);
            b->len -= b->pos;
            b->pos = 0;
        }
        bool got = false;
        if (b->len < b->cap && sb->reading) {
            ssize_t n;
            if (sb->ssl) {
                ERR_clear_error();
                int r = SSL_read(sb->ssl, b->data + b->len, (int)(b->cap - b->len));
                if (r > 0) {
                    n = r;
                } else {
                    int e = SSL_get_error(sb->ssl, r);
                    if (e == SSL_ERROR_WANT_READ)
                        n = -2;
                    else if (e == SSL_ERROR_WANT_WRITE) {
                        arm_write(sb);
                        n = -2;
                    } else if (e == SSL_ERROR_ZERO_RETURN)
                        n = 0;
                    else
                        n = -1;
                }
            } else {
                n = recv(sb->fd, b->data + b->len, b->cap - b->len, 0);
                if (n < 0)
                    n = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -2 : -1;
            }
            if (n == 0) {
                fail(sb, "client closed the connection");
                return;
            }
            if (n == -1) {
                fail(sb, "read error");
                return;
            }
            if (n > 0) {
                b->len += (size_t)n;
                sb->ctx->bytes_in += (uint64_t)n;
                got = true;
            }
        } else if (b->len == b->cap && sb->reading) {
            /* Full and not consumed: the owner must reserve more or drain; stop reading. */
            sbuf_pause(sb);
        }
        if (b->len > b->pos)
            deliver(sb, SBUF_EV_DATA);
        if (sb->closed)
            return;
        if (!got || !sb->ssl || SSL_pending(sb->ssl) <= 0)
            break;
    }
    if (sb->in && sb->in->pos == sb->in->len) {
        buf_put(sb->ctx, sb->in);
        sb->in = NULL;
    }
}

/* Writes queued output; returns 0, or -1 on a broken connection. */
static int flush_out(sbuf_t *sb, const void *extra, size_t n)
{
    pend_remove(sb); /* sending now: the batch has nothing left to do for sb */
    if (sb->ssl) {
        if (n && sbuf_append(sb, extra, n) != 0)
            return -1;
        while (sb->out && sb->out->len > sb->out->pos) {
            ERR_clear_error();
            int r = SSL_write(sb->ssl, sb->out->data + sb->out->pos,
                              (int)(sb->out->len - sb->out->pos));
            if (r <= 0) {
                int e = SSL_get_error(sb->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    arm_write(sb);
                    return 0;
                }
                return -1;
            }
            sb->out->pos += (size_t)r;
            sb->ctx->bytes_out += (uint64_t)r;
        }
        buf_put(sb->ctx, sb->out);
        sb->out = NULL;
        return 0;
    }
    struct iovec iov[2];
    int cnt = 0;
    size_t qlen = sb->out ? sb->out->len - sb->out->pos : 0;
    if (qlen) {
        iov[cnt].iov_base = sb->out->data + sb->out->pos;
        iov[cnt++].iov_len = qlen;
    }
    if (n) {
        iov[cnt].iov_base = (void *)extra;
        iov[cnt++].iov_len = n;
    }
    if (cnt == 0)
        return 0;
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)cnt;
    ssize_t w = sendmsg(sb->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        w = 0;
    }
    sb->ctx->bytes_out += (uint64_t)w;
    size_t sent = (size_t)w;
    if (qlen) {
        size_t k = sent < qlen ? sent : qlen;
        sb->out->pos += k;
        sent -= k;
    }
    if (n > sent && sbuf_append(sb, (const uint8_t *)extra + sent, n - sent) != 0)
        return -1;
    if (sb->out && sb->out->len > sb->out->pos) {
        arm_write(sb);
    } else if (sb->out) {
        buf_put(sb->ctx, sb->out);
        sb->out = NULL;
    }
    return 0;
}

int sbuf_send(sbuf_t *sb, const void *extra, size_t n)
{
    if (sb->closed)
        return -1;
    if (sb->connecting || sb->handshaking)
        return n ? sbuf_append(sb, extra, n) : 0;
    if (sb->upend)
        return n ? sbuf_append(sb, extra, n) : 0;
    if (sb->ctx->ring && !sb->ssl && !sbuf_blocked(sb))
        return pend_add(sb, extra, n);
    return flush_out(sb, extra, n);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    sbuf_t *sb = arg;
    if (sb->closed)
        return;
    if (sb->connecting) {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(sb->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0) {
            fail(sb, e == ECONNREFUSED ? "connection refused" : "connect failed");
            return;
        }
        sb->connecting = false;
        event_add(sb->rev, NULL);
        sb->reading = true;
        deliver(sb, SBUF_EV_CONNECTED);
        if (sb->closed)
            return;
        if (sb->out && flush_out(sb, NULL, 0) != 0)
            fail(sb, "write failed");
        return;
    }
    if (sb->handshaking) {
        if (do_handshake(sb) && !sb->closed) {
            /* Output queued during the handshake (a client's start-up packet) goes now:
             * on_read flushes it only when it finishes the handshake itself. */
            if (sb->out && flush_out(sb, NULL, 0) != 0) {
                fail(sb, "write failed");
                return;
            }
            event_active(sb->rev, EV_READ, 0);
        }
        return;
    }
    bool had = sbuf_blocked(sb);
    if (flush_out(sb, NULL, 0) != 0) {
        fail(sb, "write failed");
        return;
    }
    if (had && !sbuf_blocked(sb))
        deliver(sb, SBUF_EV_DRAINED);
}

void sbuf_pause(sbuf_t *sb)
{
    if (sb->reading && !sb->closed) {
        event_del(sb->rev);
        sb->reading = false;
    }
}

void sbuf_resume(sbuf_t *sb)
{
    if (sb->closed || sb->connecting)
        return;
    if (!sb->reading) {
        event_add(sb->rev, NULL);
        sb->reading = true;
    }
    if (sb->in && sb->in->len > sb->in->pos)
        event_active(sb->rev, EV_READ, 0);
}

uint8_t *sbuf_out_reserve(sbuf_t *sb, size_t n)
{
    if (!sb->out) {
        sb->out = buf_get(sb->ctx, n);
        if (!sb->out)
            return NULL;
    }
    sbuf_iobuf_t *b = sb->out;
    if (b->cap - b->len >= n)
        return b->data + b->len;
    if (b->pos > 0) {
        memmove(b->data, b->data + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
        if (b->cap - b->len >= n)
            return b->data + b->len;
    }
    size_t want = b->len + n;
    if (want > SBUF_MAX_OUT)
        return NULL;
    size_t cap = b->cap * 2 > want ? b->cap * 2 : want;
    if (cap > SBUF_MAX_OUT)
        cap = SBUF_MAX_OUT;
    sbuf_iobuf_t *nb = realloc(b, sizeof(*nb) + cap);
    if (!nb)
        return NULL;
    nb->cap = cap;
    sb->out = nb;
    return nb->data + nb->len;
}

void sbuf_out_commit(sbuf_t *sb, size_t n)
{
    if (sb->out)
        sb->out->len += n;
}

int sbuf_append(sbuf_t *sb, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *d = sbuf_out_reserve(sb, n);
    if (!d)
        return -1;
    memcpy(d, p, n);
    sb->out->len += n;
    return 0;
}

void sbuf_close(sbuf_t *sb)
{
    if (sb->closed && sb->fd < 0)
        return;
    pend_flush_now(sb); /* a last message (an ErrorResponse) still goes out */
    sb->closed = true;
    if (sb->rev) {
        event_free(sb->rev);
        sb->rev = NULL;
    }
    if (sb->wev) {
        event_free(sb->wev);
        sb->wev = NULL;
    }
    if (sb->ssl) {
        SSL_free(sb->ssl);
        sb->ssl = NULL;
    }
    if (sb->fd >= 0) {
        close(sb->fd);
        sb->fd = -1;
    }
    if (sb->ctx) {
        buf_put(sb->ctx, sb->in);
        buf_put(sb->ctx, sb->out);
    }
    sb->in = sb->out = NULL;
    sb->reading = false;
}
