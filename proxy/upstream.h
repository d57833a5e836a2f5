/* Upstream connections: a keep-alive pool per worker and upstream, new connections over
 * TCP or TLS (certificate and host name verified, SNI set), and the built-in sink. The
 * pool only holds idle connections; a connection in use belongs to its client conn. */
#ifndef AP_UPSTREAM_H
#define AP_UPSTREAM_H

#include "worker.h"

/* Resolves <u>'s host (blocking getaddrinfo: only called while loading a configuration)
 * and makes its TLS context. AP_OK, or AP_ERR with err[AP_CONF_ERR_MAX]. */
int ap_upstream_prepare(struct ap_upstream *u, char *err);
void ap_upstream_release(struct ap_upstream *u);

/* An idle pooled connection to <u> (*reused set), or a new one with the connect started
 * (the caller waits for AP_IO_CONNECTED). NULL when no socket could be made. The
 * caller owns the result and sets its callbacks. */
struct ap_io *ap_upstream_get(struct ap_upstream *u, bool *reused);

/* Gives a connection that finished a response cleanly back to <u>'s pool (or closes it
 * when the pool is full). */
void ap_upstream_put(struct ap_upstream *u, struct ap_io *io);

#endif
