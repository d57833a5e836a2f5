/* One worker process: its event base, its listeners, the configurations its requests run
 * under (refcounted: a reload swaps the current one, a request keeps the one it started
 * with), its upstream pools and its scrubber. Everything here belongs to one worker and is
 * touched by its single thread only. */
#ifndef AP_WORKER_H
#define AP_WORKER_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "conf.h"
#include "metrics.h"
#include "scrub.h"

struct ap_conn;
struct ap_io;
struct ap_optout;
struct ap_live;

/* An idle keep-alive connection to an upstream, owned by its pool. */
struct ap_idle {
	struct ap_io *io;
	struct event *timer; /* idle timeout */
	struct ap_upstream *ups;
	struct ap_idle *next, *prev;
};

/* An upstream as one worker reaches it: the address resolved when the configuration was
 * loaded, the TLS context for https://, and the pool of idle connections. Owned by its
 * live configuration. */
struct ap_upstream {
	const struct ap_upstream_conf *uc;
	struct ap_live *live;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SSL_CTX *ssl;
	struct ap_idle *idle; /* most recently used first */
	unsigned nidle;
};

/* A configuration as a worker runs it. The worker holds one reference to its current one;
 * each request in flight holds one to the one it started with. Freed (pools closed with
 * it) when the last reference goes. */
struct ap_live {
	struct ap_worker *w;
	struct ap_conf *conf;
	unsigned refs;
	struct ap_upstream *ups;
	size_t nups;
	unsigned *route_slot;     /* metrics slot of each route */
	SSL_CTX *tls_listen;      /* NULL: no TLS listener configured */
	struct ap_optout *optout; /* the opt-out table, mapped read-only; NULL: none, or not
	                             mapped yet (conf->optout_shm says which) */
};

struct ap_worker {
	unsigned id;
	struct event_base *base;
	struct ap_live *live;
	struct evconnlistener *lis[16];
	bool lis_tls[16];
	size_t nlis;
	struct ap_scrub sc;
	const struct ap_key *sc_key; /* the key sc hashes with now */
	struct ap_wstats *stats;
	struct ap_metrics *metrics;
	struct ap_conn *conns; /* every open client connection */
	size_t nconns;
	struct ap_conn *dead; /* closed, to be freed outside their callbacks */
	struct event *reap;
	bool draining;
	struct event *drain_timer;
	int ctl_fd; /* control channel from the master: reloads, drain */
	struct event *ctl_ev;
	struct ap_buf ctl_in;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *optout_timer; /* remaps the opt-out table when a writer replaced it */
	bool optout_failing;
	bool inspect;
	bool inspect_color;
	int access_fd;      /* -1: access log off */
	struct ap_buf line; /* scratch: header values, log lines */
	struct ap_buf ibuf; /* the --inspect block being built */
};

/* Builds a live configuration for <w> from <conf> (ownership passes to it): resolves
 * upstream host names (once, here), makes TLS contexts, maps routes to metrics slots.
 * Returns NULL with err[AP_CONF_ERR_MAX] set; <conf> is freed then. */
struct ap_live *ap_live_new(struct ap_worker *w, struct ap_conf *conf, char *err);
/* Everything ap_live_new would do that can fail — resolving upstreams, loading CA files
 * and the TLS listener's certificate, opening the access log — done once and undone, so
 * the master refuses at start or reload what every worker would refuse. AP_OK or AP_ERR
 * with err[AP_CONF_ERR_MAX]. */
int ap_live_check(const struct ap_conf *conf, char *err);

void ap_live_ref(struct ap_live *l);
void ap_live_unref(struct ap_live *l);

/* The worker process's life: runs until drained after SIGTERM (or the master's word).
 * <fds> are the listening sockets the master made for this worker, <tls> which of them
 * speak TLS. Returns the exit status. */
int ap_worker_main(unsigned id, const char *conf_path, const char *conf_text, size_t conf_len,
                   int *fds, bool *tls, size_t nfds, int ctl_fd, struct ap_metrics *m,
                   bool inspect);

/* Makes sure the worker's scrubber hashes with <key>. AP_OK or AP_ERR (OpenSSL). */
int ap_worker_scrub_key(struct ap_worker *w, const struct ap_key *key);

/* Schedules the end of the worker when it has no connections left (or at the drain
 * deadline). */
void ap_worker_maybe_exit(struct ap_worker *w);

#endif
