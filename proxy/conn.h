/* A client connection and the upstream connection it borrows: head and body read from the
 * client, the request scrubbed and forwarded, the response streamed back, one request at
 * a time (pipelined requests wait in the input buffer, so answers keep their order). */
#ifndef AP_CONN_H
#define AP_CONN_H

#include <event2/util.h>
#include <openssl/ssl.h>

#include "worker.h"

/* Takes over the accepted socket <fd> from <peer>. With <ssl> (owned from here on) the
 * connection speaks TLS. On failure the socket is closed. */
void ap_conn_accept(struct ap_worker *w, evutil_socket_t fd, const struct sockaddr *peer,
                    socklen_t peerlen, SSL *ssl);

/* Draining: closes every connection that waits for a request; the others close after
 * the response they are working on. */
void ap_conn_drain_all(struct ap_worker *w);

/* Closes every connection now (the end of a worker). */
void ap_conn_close_all(struct ap_worker *w);

/* Frees connections closed since the last call (run from the worker's reap event). */
void ap_conn_reap(struct ap_worker *w);

#endif
