/* Upstream connections: address resolution and TLS contexts at configuration load, new
 * connections (TCP or TLS with verification and SNI), and the idle keep-alive pool. An
 * idle connection that hears anything — data, EOF, an error — or idles too long is closed
 * and leaves the pool: it is no longer safe to send a request on. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "upstream.h"

#define IDLE_TIMEOUT_S 30 /* below the usual 60 s of upstream servers, so we close first */

int ap_upstream_prepare(struct ap_upstream *u, char *err)
{
	const struct ap_upstream_conf *uc = u->uc;
	struct addrinfo hints = {0}, *res = NULL;
	int rc;

	if (uc->sink)
		return AP_OK;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(uc->host, uc->port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, AP_CONF_ERR_MAX, "upstreams.%s: cannot resolve \"%s\": %s", uc->name,
		         uc->host, gai_strerror(rc));
		return AP_ERR;
	}
	memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
	u->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (!uc->tls)
		return AP_OK;
	u->ssl = SSL_CTX_new(TLS_client_method());
	if (!u->ssl) {
		snprintf(err, AP_CONF_ERR_MAX, "upstreams.%s: cannot make a TLS context", uc->name);
		return AP_ERR;
	}
	SSL_CTX_set_min_proto_version(u->ssl, TLS1_2_VERSION);
	if (uc->verify) {
		SSL_CTX_set_verify(u->ssl, SSL_VERIFY_PEER, NULL);
		rc = uc->ca_file ? SSL_CTX_load_verify_locations(u->ssl, uc->ca_file, NULL)
		                 : SSL_CTX_set_default_verify_paths(u->ssl);
		if (rc != 1) {
			snprintf(err, AP_CONF_ERR_MAX,
			         "upstreams.%s: cannot load CA certificates%s%s", uc->name,
			         uc->ca_file ? " from " : "", uc->ca_file ? uc->ca_file : "");
			SSL_CTX_free(u->ssl);
			u->ssl = NULL;
			return AP_ERR;
		}
	}
	return AP_OK;
}

static void idle_close(struct ap_idle *i)
{
	struct ap_upstream *u = i->ups;

	if (i->prev)
		i->prev->next = i->next;
	else
		u->idle = i->next;
	if (i->next)
		i->next->prev = i->prev;
	u->nidle--;
	ap_io_free(i->io);
	event_free(i->timer);
	free(i);
}

void ap_upstream_release(struct ap_upstream *u)
{
	while (u->idle)
		idle_close(u->idle);
	if (u->ssl)
		SSL_CTX_free(u->ssl);
	u->ssl = NULL;
}

/* Anything heard on an idle connection ends it: a server that sends bytes unasked, or
 * closes, has left the conversation. So does idling past IDLE_TIMEOUT_S. */
static void idle_read_cb(struct ap_io *io, void *arg)
{
	AP_UNUSED(io);
	idle_close(arg);
}

static void idle_event_cb(struct ap_io *io, int what, void *arg)
{
	AP_UNUSED(io);
	AP_UNUSED(what);
	idle_close(arg);
}

static void idle_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	AP_UNUSED(fd);
	AP_UNUSED(what);
	idle_close(arg);
}

static bool is_ip_literal(const char *h)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

struct ap_io *ap_upstream_get(struct ap_upstream *u, bool *reused)
{
	struct event_base *base = u->live->w->base;
	struct ap_idle *i = u->idle;
	SSL *ssl = NULL;

	if (i) {
		struct ap_io *io = i->io;
		u->idle = i->next;
		if (u->idle)
			u->idle->prev = NULL;
		u->nidle--;
		event_free(i->timer);
		free(i);
		ap_io_setcb(io, NULL, NULL, NULL, NULL);
		*reused = true;
		return io;
	}
	*reused = false;
	if (u->ssl) {
		if (!(ssl = SSL_new(u->ssl)))
			return NULL;
		if (!is_ip_literal(u->uc->host))
			SSL_set_tlsext_host_name(ssl, u->uc->host);
		if (u->uc->verify) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
			if (is_ip_literal(u->uc->host))
				X509_VERIFY_PARAM_set1_ip_asc(vp, u->uc->host);
			else
				SSL_set1_host(ssl, u->uc->host);
		}
	}
	return ap_io_connect(base, (struct sockaddr *)&u->addr, u->addrlen, ssl);
}

void ap_upstream_put(struct ap_upstream *u, struct ap_io *io)
{
	struct timeval idle = {IDLE_TIMEOUT_S, 0};
	struct ap_idle *i;

	if (u->nidle >= u->uc->pool || evbuffer_get_length(ap_io_in(io)) ||
	    evbuffer_get_length(ap_io_out(io)) || !(i = calloc(1, sizeof(*i)))) {
		ap_io_free(io);
		return;
	}
	if (!(i->timer = evtimer_new(u->live->w->base, idle_timer_cb, i))) {
		free(i);
		ap_io_free(io);
		return;
	}
	i->io = io;
	i->ups = u;
	i->next = u->idle;
	if (u->idle)
		u->idle->prev = i;
	u->idle = i;
	u->nidle++;
	ap_io_setcb(io, idle_read_cb, NULL, idle_event_cb, i);
	ap_io_read(io, true);
	evtimer_add(i->timer, &idle);
}
