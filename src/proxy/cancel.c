/*
 * cancel.c: outgoing CancelRequests. A client's CancelRequest reaches the worker that owns
 * its key (proxy.c, inbox); this file opens a short connection to the server running that
 * client's query and sends the 16-byte CancelRequest with the server's own BackendKeyData,
 * then waits for the server to close it. One px_cancel_t per request, on worker->cancels,
 * reaped like connections.
 */
#include "proxy/proxy_int.h"

#include <stdlib.h>

static void cancel_cb(sbuf_t *sb, sbuf_event_t ev)
{
    px_cancel_t *k = px_container(sb, px_cancel_t, sb);
    if (ev == SBUF_EV_CONNECTED) {
        if (sbuf_send(sb, k->msg, sizeof(k->msg)) == 0)
            return;
    } else if (ev == SBUF_EV_DATA) {
        size_t n;
        (void)sbuf_data(sb, &n);
        sbuf_consume(sb, n);
        return;
    } else if (ev == SBUF_EV_DRAINED) {
        return;
    }
    sbuf_close(sb);
    px_list_del(&k->link);
    px_list_add_tail(&k->w->reap_cancels, &k->link);
    px_schedule_reap(k->w);
}

void px_server_cancel(px_server_t *s)
{
    px_worker_t *w = s->w;
    px_cancel_t *k = calloc(1, sizeof(*k));
    if (!k)
        return;
    k->w = w;
    pg_wbuf_t wb;
    pg_wbuf_init(&wb, k->msg, sizeof(k->msg));
    pg_w_u32(&wb, 16);
    pg_w_u32(&wb, PG_CODE_CANCEL);
    pg_w_u32(&wb, s->be_pid);
    pg_w_u32(&wb, s->be_key);
    px_list_add_tail(&w->cancels, &k->link);
    PX_STAT_ADD(w, cancels, 1);
    if (sbuf_connect(&k->sb, &w->io, s->host, s->port, s->sock_dir, cancel_cb) != 0) {
        px_list_del(&k->link);
        px_list_add_tail(&w->reap_cancels, &k->link);
        px_schedule_reap(w);
    }
}

void px_cancel_free(px_cancel_t *k)
{
    sbuf_close(&k->sb);
    free(k);
}
