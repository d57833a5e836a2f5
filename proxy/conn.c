/* The client side of the proxy: one state machine per client connection. A request head
 * is parsed in place from the input buffer; the body is collected (a chunked one decoded);
 * query, headers and body are scrubbed; the rebuilt request goes to a pooled upstream
 * connection; the response is streamed back as it arrives, with the slower side's buffer
 * putting the faster side on hold. One request at a time: pipelined requests wait in the
 * input buffer, so answers keep their order. Connections are freed from the reap event,
 * never inside their own callbacks. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "detect.h"
#include "http1.h"
#include "io.h"
#include "log.h"
#include "optout.h"
#include "upstream.h"

#define RELAY_HIGH (256u << 10) /* client output above this: stop reading the upstream */
#define RELAY_LOW  (64u << 10)

enum cstate {
	C_HEAD,     /* waiting for (the rest of) a request head */
	C_BODY,     /* reading the request body */
	C_UPSTREAM, /* connecting to the upstream, sending, waiting for the response head */
	C_RELAY,    /* streaming the response body */
	C_CLOSING,  /* flushing the last bytes to the client, then close */
};

/* A client connection. Owned by its worker (the list w->conns); the upstream stream
 * in <up> belongs to it while a request uses it, then goes back to the pool. */
struct ap_conn {
	struct ap_worker *w;
	struct ap_conn *next, *prev;
	struct ap_conn *next_dead;
	struct ap_io *cl;
	struct ap_io *up;
	struct ap_upstream *ups;
	struct ap_live *live; /* the configuration the current request started with (a ref) */
	const struct ap_route *route;
	unsigned route_slot;
	enum cstate state;
	bool dead, in_step, close_after, http10;

	struct ap_http_req req;
	size_t last_len;
	const char *head_base; /* where req's slices point */
	size_t body_off;       /* chunked: input bytes after the head decoded so far */
	struct ap_chunked ch;
	struct ap_buf body;
	bool is_head, sent_continue;
	struct evbuffer *fwd; /* the request for the upstream, kept until answered (retries) */
	uint64_t t0_us;
	char method[16];
	char logpath[192];
	size_t req_bytes;
	unsigned findings;
	const char *why; /* static: why the proxy refused or failed this request */

	struct ap_http_resp resp;
	size_t resp_last;
	int64_t resp_left;
	struct ap_chunked rch;
	int status;
	size_t resp_bytes;
	bool reused, retried, resp_started, up_connected;

	struct event *timer;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	char peer_log[48]; /* the client address, truncated, for the access log */
};

static void conn_step(struct ap_conn *c);
static void client_read_cb(struct ap_io *io, void *arg);
static void client_write_cb(struct ap_io *io, void *arg);
static void client_event_cb(struct ap_io *io, int what, void *arg);

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void arm(struct ap_conn *c, size_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static const struct ap_limits *limits(const struct ap_conn *c)
{
	return &(c->live ? c->live : c->w->live)->conf->limits;
}

/* ---- life and death ---- */

static void release_upstream(struct ap_conn *c)
{
	if (c->up) {
		ap_io_free(c->up);
		c->up = NULL;
	}
}

static void end_request_state(struct ap_conn *c)
{
	if (c->live) {
		ap_live_unref(c->live);
		c->live = NULL;
	}
	c->route = NULL;
	c->ups = NULL;
	c->last_len = 0;
	c->body_off = 0;
	c->head_base = NULL;
	memset(&c->ch, 0, sizeof(c->ch));
	memset(&c->rch, 0, sizeof(c->rch));
	ap_buf_clear(&c->body);
	if (c->body.cap > (1u << 20))
		ap_buf_free(&c->body); /* do not keep a huge body's buffer for every idle client */
	evbuffer_drain(c->fwd, evbuffer_get_length(c->fwd));
	c->is_head = c->sent_continue = false;
	c->resp_last = 0;
	c->resp_left = 0;
	c->status = 0;
	c->resp_bytes = c->req_bytes = 0;
	c->findings = 0;
	c->why = NULL;
	c->reused = c->retried = c->resp_started = c->up_connected = false;
	c->t0_us = 0;
	c->method[0] = c->logpath[0] = 0;
}

static void conn_close(struct ap_conn *c)
{
	struct ap_worker *w = c->w;

	if (c->dead)
		return;
	c->dead = true;
	evtimer_del(c->timer);
	release_upstream(c);
	if (c->cl) {
		ap_io_read(c->cl, false);
		ap_io_setcb(c->cl, NULL, NULL, NULL, NULL);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	ap_metric_set(&w->stats->open, w->nconns);
	c->next_dead = w->dead;
	w->dead = c;
	event_active(w->reap, EV_TIMEOUT, 0);
}

void ap_conn_reap(struct ap_worker *w)
{
	while (w->dead) {
		struct ap_conn *c = w->dead;
		w->dead = c->next_dead;
		end_request_state(c);
		ap_io_free(c->cl);
		c->cl = NULL;
		event_free(c->timer);
		evbuffer_free(c->fwd);
		ap_buf_free(&c->body);
		free(c);
	}
	ap_worker_maybe_exit(w);
}

/* Closes once everything queued for the client has been written. */
static void close_when_flushed(struct ap_conn *c)
{
	c->state = C_CLOSING;
	release_upstream(c);
	ap_io_read(c->cl, false);
	arm(c, 5000);
	if (evbuffer_get_length(ap_io_out(c->cl)) == 0)
		conn_close(c);
}

/* ---- answers the proxy gives itself ---- */

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 422:
		return "Unprocessable Content";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

static void finish_request(struct ap_conn *c);

/* The most input a connection may hold: one whole request of the largest size allowed.
 * Beyond it the client is not read until the requests it pipelined have been answered. */
static size_t input_bound(const struct ap_conn *c)
{
	return limits(c)->header_bytes + limits(c)->body_bytes;
}

/* Answers <status> with <why> (a static reason: never a byte of the request) as the body.
 * <keep>: the request was read whole, so the connection can go on. */
static void respond(struct ap_conn *c, int status, const char *why, bool keep)
{
	struct evbuffer *out = ap_io_out(c->cl);
	size_t before = evbuffer_get_length(out);
	size_t wl = why ? strlen(why) + 1 : 0;

	if (!keep || c->w->draining)
		c->close_after = true;
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
	if (wl)
		evbuffer_add_printf(out,
		                    "Content-Type: text/plain; charset=utf-8\r\n"
		                    "Content-Length: %zu\r\n",
		                    wl);
	else if (status != 204 && status != 304)
		evbuffer_add_printf(out, "Content-Length: 0\r\n");
	if (c->close_after)
		evbuffer_add_printf(out, "Connection: close\r\n");
	evbuffer_add(out, "\r\n", 2);
	if (wl && !c->is_head) {
		evbuffer_add(out, why, wl - 1);
		evbuffer_add(out, "\n", 1);
	}
	c->status = status;
	c->resp_bytes += evbuffer_get_length(out) - before;
	finish_request(c);
}

static void refuse(struct ap_conn *c, int status, const char *why, enum ap_refusal kind, bool keep)
{
	ap_metric_add(&c->w->stats->refusals[kind], 1);
	c->why = why;
	respond(c, status, why, keep);
}

/* ---- request head ---- */

/* The head's slices point into the client's input buffer; a pull-up may move those
 * bytes, so every slice is moved along with them. */
static void rebase(struct ap_conn *c, const char *base)
{
	ptrdiff_t d = base - c->head_base;
	struct ap_http_req *r = &c->req;

	if (!d)
		return;
#define MOVE(s)                                                                                    \
	do {                                                                                       \
		if ((s).p)                                                                         \
			(s).p += d;                                                                \
	} while (0)
	MOVE(r->method);
	MOVE(r->target);
	MOVE(r->path);
	MOVE(r->query);
	MOVE(r->host);
	for (size_t i = 0; i < r->nheaders; i++) {
		MOVE(r->headers[i].name);
		MOVE(r->headers[i].value);
	}
#undef MOVE
	c->head_base = base;
}

/* The path for the access log: segments a detector recognises, and segments with escapes
 * (which the detectors would have to decode), become ":id"; the query keeps its keys and
 * loses its values. */
static void log_path(struct ap_conn *c)
{
	const struct ap_http_req *r = &c->req;
	char *o = c->logpath, *end = c->logpath + sizeof(c->logpath) - 1;
	const char *p = r->path.p, *e = r->path.p + r->path.n;

	while (p < e && o < end) {
		const char *s = memchr(p + 1, '/', (size_t)(e - p - 1));
		size_t n = (size_t)((s ? s : e) - p);
		if (n > 1 && (ap_detect(p + 1, n - 1, AP_DET_ALL, false) != AP_CLASS_NONE ||
		              memchr(p + 1, '%', n - 1))) {
			o += snprintf(o, (size_t)(end - o + 1), "/:id");
		} else {
			size_t k = n < (size_t)(end - o) ? n : (size_t)(end - o);
			memcpy(o, p, k);
			o += k;
		}
		p += n;
	}
	if (r->query.n && o < end) {
		const char *q = r->query.p, *qe = r->query.p + r->query.n;
		*o++ = '?';
		while (q < qe && o < end) {
			const char *amp = memchr(q, '&', (size_t)(qe - q)), *pe = amp ? amp : qe;
			const char *eq = memchr(q, '=', (size_t)(pe - q)), *ke = eq ? eq : pe;
			const char *name = q;
			size_t k = (size_t)(ke - q);
			/* A name can be a value too ("?356938035643809"): names the detectors
			 * recognise, and names with escapes, are not written. */
			if (ap_detect(q, k, AP_DET_ALL, false) != AP_CLASS_NONE ||
			    memchr(q, '%', k)) {
				name = ":id";
				k = 3;
			}
			if (k > (size_t)(end - o))
				k = (size_t)(end - o);
			memcpy(o, name, k);
			o += k;
			if (eq && o < end)
				*o++ = '=';
			if (amp && o < end)
				*o++ = '&';
			q = amp ? amp + 1 : qe;
		}
	}
	*o = 0;
}

static bool read_head(struct ap_conn *c)
{
	struct ap_worker *w = c->w;
	struct evbuffer *in = ap_io_in(c->cl);
	size_t len = evbuffer_get_length(in), n;
	const struct ap_limits *lim = &w->live->conf->limits;
	struct ap_http_limits hl = {lim->header_bytes, lim->uri_bytes, lim->headers};
	const char *p, *why = NULL;
	int rc, status = 400;

	if (len == 0) {
		if (w->draining) {
			close_when_flushed(c);
			return false;
		}
		arm(c, lim->client_idle_timeout_ms);
		return false;
	}
	if (c->last_len == 0) {
		c->t0_us = now_us();
		arm(c, lim->client_header_timeout_ms);
	}
	n = len < hl.head_bytes + 1 ? len : hl.head_bytes + 1;
	p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
	rc = ap_http_parse_request(p, n, c->last_len, &c->req, &hl, &status, &why);
	if (rc == AP_AGAIN) {
		c->last_len = n;
		return false;
	}
	if (rc < 0) {
		refuse(c, status, why, AP_REF_HTTP, false);
		return false;
	}
	c->head_base = p;
	c->http10 = c->req.minor == 0;
	if (!c->req.keep_alive)
		c->close_after = true;
	snprintf(c->method, sizeof(c->method), "%.*s",
	         (int)(c->req.method.n < 15 ? c->req.method.n : 15), c->req.method.p);
	c->is_head = ap_span_ieq(c->req.method, "head");
	log_path(c);
	c->live = w->live;
	ap_live_ref(c->live);
	c->route = ap_conf_route(c->live->conf, c->req.host, c->req.path);
	if (!c->route) {
		c->route_slot = AP_ROUTE_SLOTS;
		/* The body, if any, was not read: the connection cannot go on. */
		refuse(c, 404, "no route for this host and path", AP_REF_NO_ROUTE,
		       !c->req.chunked && c->req.content_length <= 0);
		if (!c->dead && c->state != C_CLOSING)
			evbuffer_drain(in, c->req.head_len);
		return false;
	}
	c->route_slot = c->live->route_slot[c->route - c->live->conf->routes];
	if (c->req.content_length > (int64_t)lim->body_bytes) {
		refuse(c, 413, "request body larger than the limit", AP_REF_TOO_BIG, false);
		return false;
	}
	if (c->req.expect_continue && (c->req.chunked || c->req.content_length > 0) &&
	    len == c->req.head_len) {
		evbuffer_add(ap_io_out(c->cl), "HTTP/1.1 100 Continue\r\n\r\n", 25);
		c->sent_continue = true;
	}
	c->state = C_BODY;
	arm(c, lim->client_body_timeout_ms);
	return true;
}

/* ---- request body ---- */

/* Returns true when the whole body is in: <body> then spans it (in the input buffer for
 * a Content-Length body, in c->body for a chunked one). */
static bool read_body(struct ap_conn *c, struct ap_span *body)
{
	struct evbuffer *in = ap_io_in(c->cl);
	const struct ap_limits *lim = limits(c);
	size_t head = c->req.head_len;

	if (!c->req.chunked) {
		size_t cl = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
		const char *p;
		if (evbuffer_get_length(in) < head + cl)
			return false;
		p = (const char *)evbuffer_pullup(in, (ev_ssize_t)(head + cl));
		rebase(c, p);
		*body = (struct ap_span){p + head, cl};
		c->req_bytes = head + cl;
		return true;
	}
	for (;;) {
		struct evbuffer_ptr pos;
		struct evbuffer_iovec v;
		const char *why = NULL;
		bool done = false;
		ssize_t used;

		if (evbuffer_ptr_set(in, &pos, head + c->body_off, EVBUFFER_PTR_SET) != 0 ||
		    evbuffer_peek(in, -1, &pos, &v, 1) < 1 || v.iov_len == 0)
			return false;
		used = ap_chunked_feed(&c->ch, v.iov_base, v.iov_len, &c->body, lim->body_bytes,
		                       &done, &why);
		if (used < 0) {
			if (why && strcmp(why, AP_HTTP_WHY_TOO_BIG) == 0)
				refuse(c, 413, "request body larger than the limit", AP_REF_TOO_BIG,
				       false);
			else
				refuse(c, 400, why ? why : "bad chunked body", AP_REF_HTTP, false);
			return false;
		}
		c->body_off += (size_t)used;
		if (done)
			break;
	}
	rebase(c, (const char *)evbuffer_pullup(in, (ev_ssize_t)head));
	*body = ap_buf_span(&c->body);
	c->req_bytes = head + c->body_off;
	return true;
}

/* ---- scrubbing and forwarding ---- */

static bool hop_by_hop(struct ap_span name, const struct ap_http_req *r)
{
	static const char *const hop[] = {"connection",
	                                  "keep-alive",
	                                  "proxy-connection",
	                                  "te",
	                                  "trailer",
	                                  "transfer-encoding",
	                                  "upgrade",
	                                  "expect",
	                                  "content-length",
	                                  "host",
	                                  "proxy-authorization"};
	int ci;

	for (size_t i = 0; i < AP_ARRAY_LEN(hop); i++)
		if (ap_span_ieq(name, hop[i]))
			return true;
	/* Headers the client named in Connection are hop-by-hop too. */
	ci = ap_http_find(r->headers, r->nheaders, "connection");
	if (ci >= 0) {
		char lc[64];
		if (name.n >= sizeof(lc))
			return false;
		for (size_t i = 0; i < name.n; i++)
			lc[i] = (char)(name.p[i] |
			               ((name.p[i] >= 'A' && name.p[i] <= 'Z') ? 0x20 : 0));
		lc[name.n] = 0;
		return ap_http_list_has(r->headers[ci].value, lc);
	}
	return false;
}

static void finding_cb(void *arg, const struct ap_finding *f)
{
	struct ap_conn *c = arg;
	ap_log_finding(c->w, f);
}

/* The client's address: 4 (in v4) or 6 (in v6), or 0. An IPv4 client of a dual-stack
 * listener (::ffff:a.b.c.d) counts as IPv4. */
static int peer_addr(const struct ap_conn *c, struct in_addr *v4, struct in6_addr *v6)
{
	const struct sockaddr *sa = (const struct sockaddr *)&c->peer;

	if (sa->sa_family == AF_INET) {
		*v4 = ((const struct sockaddr_in *)sa)->sin_addr;
		return 4;
	}
	if (sa->sa_family != AF_INET6)
		return 0;
	*v6 = ((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(v6)) {
		memcpy(&v4->s_addr, v6->s6_addr + 12, 4);
		return 4;
	}
	return 6;
}

static void peer_ip_text(const struct ap_conn *c, char *buf, size_t cap)
{
	struct in_addr v4;
	struct in6_addr v6;

	buf[0] = 0;
	switch (peer_addr(c, &v4, &v6)) {
	case 4:
		inet_ntop(AF_INET, &v4, buf, (socklen_t)cap);
		break;
	case 6:
		inet_ntop(AF_INET6, &v6, buf, (socklen_t)cap);
		break;
	}
}

/* Writes one header line through the ruleset; returns AP_ERR (sc->why set) to refuse. */
static int put_header(struct ap_conn *c, struct evbuffer *out, struct ap_span name,
                      struct ap_span value)
{
	struct ap_scrub *sc = &c->w->sc;
	struct ap_buf *hv = &c->w->line;
	bool drop, changed;

	ap_buf_clear(hv);
	if (ap_scrub_header(sc, name, value, hv, &drop, &changed) != AP_OK)
		return AP_ERR;
	if (drop)
		return AP_OK;
	if (changed)
		value = ap_buf_span(hv);
	evbuffer_add(out, name.p, name.n);
	evbuffer_add(out, ": ", 2);
	evbuffer_add(out, value.p, value.n);
	evbuffer_add(out, "\r\n", 2);
	return AP_OK;
}

static void send_to_upstream(struct ap_conn *c);

static enum ap_refusal refusal_of(int status)
{
	switch (status) {
	case 413:
		return AP_REF_TOO_BIG;
	case 415:
		return AP_REF_UNSUPPORTED;
	case 422:
		return AP_REF_SCAN;
	default:
		return AP_REF_DECODE;
	}
}

/* Adds what the scrubber found in this request to the worker's metrics. */
static void count_scrub(struct ap_conn *c)
{
	struct ap_worker *w = c->w;
	const struct ap_scrub *sc = &w->sc;

	for (int k = 1; k < AP_CLASS_MAX; k++)
		for (int a = 1; a < AP_ACT_MAX; a++)
			if (sc->st.hits[k][a]) {
				ap_metric_add(&w->stats->fields[k][a], sc->st.hits[k][a]);
				c->findings += sc->st.hits[k][a];
			}
	for (int i = 0; i < 8; i++)
		if (sc->optout_hits[i])
			ap_metric_add(&w->stats->optout_hits[i], sc->optout_hits[i]);
}

static unsigned user_scopes(void *arg, const char *user, size_t n)
{
	return ap_optout_lookup(arg, user, n);
}

/* The scopes of the user a header or the query string names, for the whole request. */
static unsigned request_user(struct ap_conn *c)
{
	const struct ap_user_rules *u = c->route->ruleset->user;
	const struct ap_http_req *r = &c->req;
	struct ap_scrub *sc = &c->w->sc;

	for (unsigned i = 0; i < u->nheaders; i++) {
		int h = ap_http_find(r->headers, r->nheaders, u->headers[i]);
		if (h >= 0)
			return ap_scrub_user(sc, r->headers[h].value.p, r->headers[h].value.n);
	}
	if (u->nquery && r->query.n) {
		const char *names[AP_USER_NAMES_MAX];
		char val[256];
		size_t n;
		for (unsigned i = 0; i < u->nquery; i++)
			names[i] = u->query[i];
		if (ap_form_get(r->query, names, u->nquery, val, sizeof(val), &n) == AP_OK)
			return ap_scrub_user(sc, val, n);
	}
	return 0;
}

static void process(struct ap_conn *c, struct ap_span body)
{
	struct ap_worker *w = c->w;
	struct ap_scrub *sc = &w->sc;
	const struct ap_conf *conf = c->live->conf;
	const struct ap_route *rt = c->route;
	const struct ap_upstream_conf *uc = rt->upstream;
	const struct ap_http_req *r = &c->req;
	struct ap_buf *out = &sc->lv[0].doc; /* body scratch: level 0's doc is free here */
	struct ap_span ctype = {"", 0}, cenc = {"", 0}, fbody = body;
	struct ap_buf *xff = &sc->lv[0].val;
	struct evbuffer *fwd = c->fwd;
	bool changed = false, has_body = r->chunked || r->content_length >= 0;
	char ip[INET6_ADDRSTRLEN];
	int status = 400, i, rc;

	if (ap_worker_scrub_key(w, &conf->keys.keys[conf->keys.active]) != AP_OK)
		goto drain;
	ap_scrub_begin(sc, rt->ruleset, (unsigned)conf->limits.json_depth,
	               conf->limits.decoded_bytes);
	/* Findings are only built (paths, masked values) for --inspect; the access log counts
	 * them from the stats. */
	sc->finding_cb = w->inspect ? finding_cb : NULL;
	sc->finding_arg = c;
	if (w->inspect)
		ap_log_inspect_begin(w, c->method, c->logpath, rt);

	/* Per-user opt-outs: a user named by a header or the query string covers the whole
	 * request; one who opted out of what this route carries gets 204, and nothing goes
	 * upstream. */
	sc->user_scopes = c->live->optout ? user_scopes : NULL;
	sc->user_arg = c->live->optout;
	sc->route_scope = rt->scope;
	if (rt->ruleset->user && conf->optout_shm && !c->live->optout) {
		/* Fail closed: without the table an opted-out user's events would go through. */
		evbuffer_drain(fwd, evbuffer_get_length(fwd));
		evbuffer_drain(ap_io_in(c->cl), c->req_bytes);
		c->head_base = NULL;
		sc->finding_cb = NULL;
		refuse(c, 503, "the opt-out table is not available", AP_REF_UNAVAILABLE, true);
		return;
	}
	if (rt->ruleset->user && c->live->optout) {
		unsigned scopes = request_user(c);
		if (ap_scrub_optout_drops(sc, scopes)) {
			sc->events = sc->events_dropped = 1;
			goto optout;
		}
		if (scopes) {
			sc->req_scopes = scopes;
			ap_scrub_event_begin(sc, scopes);
		}
	}

	/* The request line, with the path and the query scrubbed. */
	evbuffer_add(fwd, r->method.p, r->method.n);
	evbuffer_add(fwd, " ", 1);
	ap_buf_clear(out);
	if (ap_scrub_path(sc, r->path, out, &changed) != AP_OK)
		goto refused;
	if (changed)
		evbuffer_add(fwd, out->p, out->len);
	else
		evbuffer_add(fwd, r->path.p, r->path.n);
	if (r->query.n) {
		ap_buf_clear(out);
		if (ap_scrub_query(sc, r->query, out, &changed) != AP_OK)
			goto refused;
		evbuffer_add(fwd, "?", 1);
		if (changed)
			evbuffer_add(fwd, out->p, out->len);
		else
			evbuffer_add(fwd, r->query.p, r->query.n);
	}
	evbuffer_add_printf(fwd, " HTTP/1.%d\r\n", c->http10 ? 0 : 1);
	if (!uc->sink) {
		bool dflt = strcmp(uc->port, uc->tls ? "443" : "80") == 0;
		bool v6 = strchr(uc->host, ':') != NULL;
		evbuffer_add_printf(fwd, "Host: %s%s%s%s%s\r\n", v6 ? "[" : "", uc->host,
		                    v6 ? "]" : "", dflt ? "" : ":", dflt ? "" : uc->port);
	}
	ap_buf_clear(xff); /* level 0's val: header scrubbing does not use it */
	for (size_t h = 0; h < r->nheaders; h++) {
		struct ap_span name = r->headers[h].name, value = r->headers[h].value;
		if (ap_span_ieq(name, "content-type"))
			ctype = value;
		else if (ap_span_ieq(name, "content-encoding"))
			cenc = value;
		if (ap_span_ieq(name, "x-forwarded-for")) {
			/* Several fields are one list (RFC 9110 5.3), joined with the client's
			 * address below. */
			if (xff->len)
				ap_buf_add(xff, ", ", 2);
			ap_buf_add(xff, value.p, value.n);
			continue;
		}
		if (hop_by_hop(name, r))
			continue;
		if (put_header(c, fwd, name, value) != AP_OK)
			goto refused;
	}
	/* The client's address is an identifier too: it goes on in X-Forwarded-For, through
	 * the ruleset's action (truncate_ip unless it says otherwise). */
	peer_ip_text(c, ip, sizeof(ip));
	if (ip[0]) {
		if (xff->len)
			ap_buf_add(xff, ", ", 2);
		ap_buf_add(xff, ip, strlen(ip));
	}
	if (xff->len && put_header(c, fwd, AP_SPAN("X-Forwarded-For"), ap_buf_span(xff)) != AP_OK)
		goto refused;
	if (c->http10 || (!uc->sink && c->close_after))
		evbuffer_add_printf(fwd, "Connection: close\r\n");

	ap_buf_clear(out);
	rc = ap_scrub_body(sc, ctype, cenc, rt->unknown, body, out, &changed, &status);
	if (sc->st.opaque) /* payloads a profile calls opaque: [0] passed, [1] refused */
		ap_metric_add(&w->stats->opaque[rc != AP_OK], sc->st.opaque);
	if (rc != AP_OK)
		goto refused;
	if (sc->events_dropped && sc->events_dropped == sc->events)
		goto optout; /* every event in it belonged to users who opted out */
	if (changed)
		fbody = ap_buf_span(out);
	if (has_body || fbody.n)
		evbuffer_add_printf(fwd, "Content-Length: %zu\r\n", fbody.n);
	evbuffer_add(fwd, "\r\n", 2);
	evbuffer_add(fwd, fbody.p, fbody.n);

	count_scrub(c);
	if (w->inspect)
		ap_log_inspect_end(w, NULL, fbody);
	sc->finding_cb = NULL;

	/* What the client sent for this request is no longer needed. */
	evbuffer_drain(ap_io_in(c->cl), c->req_bytes);
	c->head_base = NULL;
	ap_metric_add(&w->stats->bytes_upstream, evbuffer_get_length(fwd));

	if (uc->sink) {
		if (uc->sink_log)
			ap_log_sink(w, rt, fbody);
		evbuffer_drain(fwd, evbuffer_get_length(fwd));
		respond(c, 204, NULL, true);
		return;
	}
	for (i = 0; i < (int)c->live->nups; i++)
		if (c->live->ups[i].uc == uc)
			c->ups = &c->live->ups[i];
	send_to_upstream(c);
	return;

optout:
	count_scrub(c);
	sc->finding_cb = NULL;
	if (w->inspect)
		ap_log_inspect_end(w,
		                   "every event's user opted out: answered 204, nothing forwarded",
		                   (struct ap_span){NULL, 0});
	evbuffer_drain(fwd, evbuffer_get_length(fwd));
	evbuffer_drain(ap_io_in(c->cl), c->req_bytes);
	c->head_base = NULL;
	c->why = "opted out";
	respond(c, 204, NULL, true);
	return;

refused:
	sc->finding_cb = NULL;
	if (w->inspect)
		ap_log_inspect_end(w, sc->why, (struct ap_span){NULL, 0});
	evbuffer_drain(fwd, evbuffer_get_length(fwd));
	/* The request was read whole: it leaves the input before the answer, so the next
	 * pipelined one is what the connection reads next. */
	evbuffer_drain(ap_io_in(c->cl), c->req_bytes);
	c->head_base = NULL;
	refuse(c, status, sc->why ? sc->why : "cannot scrub this request", refusal_of(status),
	       true);
	return;
drain:
	evbuffer_drain(ap_io_in(c->cl), c->req_bytes);
	c->head_base = NULL;
	respond(c, 500, "cannot initialise hashing", true);
}

/* ---- upstream ---- */

static void upstream_read_cb(struct ap_io *io, void *arg);
static void upstream_event_cb(struct ap_io *io, int what, void *arg);

static void upstream_failed(struct ap_conn *c, enum ap_uerr kind, int status, const char *why)
{
	ap_metric_add(&c->w->stats->upstream_errors[kind], 1);
	c->why = why;
	release_upstream(c);
	if (c->resp_started) {
		/* Part of the response is already with the client: all we can do is stop. */
		c->close_after = true;
		c->status = c->status ? c->status : status;
		finish_request(c);
		return;
	}
	respond(c, status, why, true);
}

static void send_to_upstream(struct ap_conn *c)
{
	const struct ap_limits *lim = limits(c);

	c->state = C_UPSTREAM;
	c->up = ap_upstream_get(c->ups, &c->reused);
	if (!c->up) {
		upstream_failed(c, AP_UERR_CONNECT, 502, "cannot connect to the upstream");
		return;
	}
	ap_metric_add(c->reused ? &c->w->stats->upstream_reused : &c->w->stats->upstream_new, 1);
	ap_io_setcb(c->up, upstream_read_cb, NULL, upstream_event_cb, c);
	ap_io_read(c->up, true);
	/* A reference: the request stays in c->fwd in case a reused connection turns out to
	 * have been closed by the upstream and it must be sent again. */
	evbuffer_add_buffer_reference(ap_io_out(c->up), c->fwd);
	c->up_connected = c->reused;
	arm(c, c->reused ? lim->upstream_response_timeout_ms : lim->upstream_connect_timeout_ms);
}

static void response_done(struct ap_conn *c)
{
	bool reusable = c->up && !c->resp.close && !c->resp.until_close && !c->http10 &&
	                evbuffer_get_length(ap_io_in(c->up)) == 0;

	if (reusable) {
		ap_io_setcb(c->up, NULL, NULL, NULL, NULL);
		ap_upstream_put(c->ups, c->up);
		c->up = NULL;
	} else
		release_upstream(c);
	finish_request(c);
}

static void relay(struct ap_conn *c)
{
	struct evbuffer *in = ap_io_in(c->up), *out = ap_io_out(c->cl);
	size_t avail = evbuffer_get_length(in), before = evbuffer_get_length(out);

	if (c->resp.no_body) {
		response_done(c);
		return;
	}
	if (c->resp.content_length >= 0) {
		size_t n = avail < (size_t)c->resp_left ? avail : (size_t)c->resp_left;
		evbuffer_remove_buffer(in, out, n);
		c->resp_left -= (int64_t)n;
		c->resp_bytes += evbuffer_get_length(out) - before;
		if (c->resp_left == 0)
			response_done(c);
	} else if (c->resp.chunked) {
		while (evbuffer_get_length(in)) {
			struct evbuffer_iovec v;
			const char *why = NULL;
			bool done = false;
			ssize_t used;

			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				break;
			used = ap_chunked_feed(&c->rch, v.iov_base, v.iov_len, NULL, UINT64_MAX,
			                       &done, &why);
			if (used < 0) {
				upstream_failed(c, AP_UERR_PROTOCOL, 502, "bad chunked response");
				return;
			}
			evbuffer_remove_buffer(in, out, (size_t)used);
			if (done) {
				c->resp_bytes += evbuffer_get_length(out) - before;
				response_done(c);
				return;
			}
		}
		c->resp_bytes += evbuffer_get_length(out) - before;
	} else {
		evbuffer_add_buffer(out, in);
		c->resp_bytes += evbuffer_get_length(out) - before;
	}
	if (!c->dead && c->up && evbuffer_get_length(out) > RELAY_HIGH)
		ap_io_read(c->up, false);
}

/* Copies the response head to the client without its hop-by-hop fields, saying close
 * when this connection will not carry another request. */
static void relay_head(struct ap_conn *c, const char *p)
{
	struct evbuffer *out = ap_io_out(c->cl);
	const struct ap_http_resp *rs = &c->resp;
	const char *eol = memchr(p, '\n', rs->head_len);
	size_t before = evbuffer_get_length(out);

	if (rs->until_close || c->w->draining)
		c->close_after = true;
	evbuffer_add(out, p, (size_t)(eol - p + 1));
	for (size_t i = 0; i < rs->nheaders; i++) {
		struct ap_span n = rs->headers[i].name, v = rs->headers[i].value;
		if (ap_span_ieq(n, "connection") || ap_span_ieq(n, "keep-alive") ||
		    ap_span_ieq(n, "proxy-connection"))
			continue;
		evbuffer_add(out, n.p, n.n);
		evbuffer_add(out, ": ", 2);
		evbuffer_add(out, v.p, v.n);
		evbuffer_add(out, "\r\n", 2);
	}
	if (c->close_after)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (c->http10)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add(out, "\r\n", 2);
	c->resp_bytes += evbuffer_get_length(out) - before;
}

static void upstream_read_cb(struct ap_io *io, void *arg)
{
	struct ap_conn *c = arg;
	struct evbuffer *in = ap_io_in(io);

	arm(c, limits(c)->upstream_response_timeout_ms);
	while (c->state == C_UPSTREAM) {
		size_t len = evbuffer_get_length(in), n;
		size_t max_head = limits(c)->header_bytes * 4;
		const char *p, *why = NULL;
		int rc;

		if (len == 0)
			return;
		n = len < max_head + 1 ? len : max_head + 1;
		p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
		rc = ap_http_parse_response(p, n, c->resp_last, c->is_head, &c->resp, max_head,
		                            &why);
		if (rc == AP_AGAIN) {
			c->resp_last = n;
			return;
		}
		if (rc < 0 || c->resp.status == 101) {
			upstream_failed(c, AP_UERR_PROTOCOL, 502,
			                "the upstream's response does not parse");
			return;
		}
		c->resp_last = 0;
		c->resp_started = true;
		if (c->resp.status < 200) {
			/* Interim answers stay here: the client had its own 100 Continue. */
			evbuffer_drain(in, c->resp.head_len);
			continue;
		}
		c->status = c->resp.status;
		relay_head(c, p);
		evbuffer_drain(in, c->resp.head_len);
		c->resp_left = c->resp.content_length;
		c->state = C_RELAY;
	}
	if (c->state == C_RELAY)
		relay(c);
}

static bool idempotent(const char *method)
{
	return !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "PUT") ||
	       !strcmp(method, "DELETE") || !strcmp(method, "OPTIONS");
}

static void upstream_event_cb(struct ap_io *io, int what, void *arg)
{
	struct ap_conn *c = arg;

	AP_UNUSED(io);
	if (what & AP_IO_CONNECTED) {
		c->up_connected = true;
		arm(c, limits(c)->upstream_response_timeout_ms);
		return;
	}
	if (!c->up_connected) {
		upstream_failed(c, ap_io_tls_failed(c->up) ? AP_UERR_TLS : AP_UERR_CONNECT, 502,
		                "cannot connect to the upstream");
		return;
	}
	if (c->state == C_RELAY && c->resp.until_close && (what & AP_IO_EOF)) {
		relay(c);
		c->close_after = true;
		release_upstream(c);
		finish_request(c);
		return;
	}
	/* A pooled connection the upstream had closed: send once more on a new one, as long as
	 * not a byte of an answer came back — and, for a method that is not idempotent, only
	 * when not a byte of the request had left (else the upstream may have it twice). */
	if (c->reused && !c->retried && !c->resp_started && c->state == C_UPSTREAM &&
	    (idempotent(c->method) ||
	     evbuffer_get_length(ap_io_out(c->up)) == evbuffer_get_length(c->fwd))) {
		c->retried = true;
		release_upstream(c);
		send_to_upstream(c);
		return;
	}
	upstream_failed(c, AP_UERR_RESET, 502, "the upstream closed the connection");
}

/* ---- the request cycle ---- */

static void finish_request(struct ap_conn *c)
{
	struct ap_worker *w = c->w;
	uint64_t us = c->t0_us ? now_us() - c->t0_us : 0;

	ap_metric_add(&w->stats->requests[c->route ? c->route_slot : AP_ROUTE_SLOTS]
	                                 [ap_metrics_status_slot(c->status)],
	              1);
	/* bytes in as the access log counts them: refused requests' too */
	ap_metric_add(&w->stats->bytes_in, c->req_bytes);
	ap_metric_add(&w->stats->bytes_out, c->resp_bytes);
	ap_metrics_latency(w->stats, us);
	ap_log_access(w, &(struct ap_access){c->peer_log, c->method, c->logpath, c->status,
	                                     c->req_bytes, c->resp_bytes, us, c->route, c->findings,
	                                     c->why});
	release_upstream(c);
	end_request_state(c);
	if (c->close_after || w->draining) {
		close_when_flushed(c);
		return;
	}
	c->state = C_HEAD;
	ap_io_read(c->cl, evbuffer_get_length(ap_io_in(c->cl)) <= input_bound(c));
	if (!c->in_step)
		conn_step(c);
}

static void conn_step(struct ap_conn *c)
{
	c->in_step = true;
	while (!c->dead) {
		struct ap_span body;

		if (c->state == C_HEAD) {
			/* A client that does not read its answers gets no more of them: the next
			 * pipelined request waits until its output has drained (client_write_cb).
			 */
			if (evbuffer_get_length(ap_io_out(c->cl)) > RELAY_HIGH) {
				ap_io_read(c->cl, false);
				arm(c, limits(c)->client_idle_timeout_ms);
				break;
			}
			if (!read_head(c))
				break;
		} else if (c->state == C_BODY) {
			if (!read_body(c, &body))
				break;
			process(c, body);
		} else
			break;
	}
	c->in_step = false;
}

static void client_read_cb(struct ap_io *io, void *arg)
{
	struct ap_conn *c = arg;

	AP_UNUSED(io);
	if (c->state == C_BODY)
		arm(c, limits(c)->client_body_timeout_ms);
	if (c->state == C_HEAD || c->state == C_BODY) {
		conn_step(c);
		return;
	}
	/* Pipelined requests wait in the input while this one is with the upstream; a client
	 * that sends more than one whole request's worth is not read until it is its turn. */
	if (evbuffer_get_length(ap_io_in(c->cl)) > limits(c)->header_bytes + limits(c)->body_bytes)
		ap_io_read(c->cl, false);
}

static void client_write_cb(struct ap_io *io, void *arg)
{
	struct ap_conn *c = arg;
	size_t left = evbuffer_get_length(ap_io_out(io));

	if (c->state == C_CLOSING && left == 0) {
		conn_close(c);
		return;
	}
	if (c->state == C_RELAY && c->up && left < RELAY_LOW)
		ap_io_read(c->up, true);
	if (c->state == C_HEAD && left < RELAY_LOW && !c->in_step) {
		ap_io_read(c->cl, evbuffer_get_length(ap_io_in(c->cl)) <= input_bound(c));
		conn_step(c);
	}
}

static void client_event_cb(struct ap_io *io, int what, void *arg)
{
	struct ap_conn *c = arg;

	AP_UNUSED(io);
	if (what & AP_IO_CONNECTED)
		return; /* a TLS handshake finished */
	/* EOF or an error from the client: whatever was going on is over. */
	conn_close(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_conn *c = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	switch (c->state) {
	case C_HEAD:
		if (c->last_len == 0 && evbuffer_get_length(ap_io_in(c->cl)) == 0) {
			conn_close(c); /* idle between requests: a quiet close */
			return;
		}
		/* fallthrough */
	case C_BODY:
		refuse(c, 408, "request not received in time", AP_REF_TIMEOUT, false);
		return;
	case C_UPSTREAM:
		if (!c->up_connected)
			upstream_failed(c, AP_UERR_CONNECT, 502, "upstream connect timed out");
		else
			upstream_failed(c, AP_UERR_TIMEOUT, 504,
			                "the upstream did not answer in time");
		return;
	case C_RELAY:
		upstream_failed(c, AP_UERR_TIMEOUT, 504, "the upstream stalled");
		return;
	case C_CLOSING:
		conn_close(c);
		return;
	}
}

static void truncated_peer(struct ap_conn *c)
{
	char buf[INET6_ADDRSTRLEN];
	struct in_addr v4;
	struct in6_addr v6;

	switch (peer_addr(c, &v4, &v6)) {
	case 4:
		v4.s_addr &= htonl(0xffffff00u);
		inet_ntop(AF_INET, &v4, buf, sizeof(buf));
		break;
	case 6:
		memset(v6.s6_addr + 6, 0, 10);
		inet_ntop(AF_INET6, &v6, buf, sizeof(buf));
		break;
	default:
		snprintf(buf, sizeof(buf), "-");
	}
	snprintf(c->peer_log, sizeof(c->peer_log), "%s", buf);
}

void ap_conn_accept(struct ap_worker *w, evutil_socket_t fd, const struct sockaddr *peer,
                    socklen_t peerlen, SSL *ssl)
{
	struct ap_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		if (ssl)
			SSL_free(ssl);
		evutil_closesocket(fd);
		return;
	}
	c->w = w;
	c->cl = ap_io_new(w->base, fd, ssl, true); /* takes fd and ssl over, even on failure */
	c->timer = evtimer_new(w->base, timer_cb, c);
	c->fwd = evbuffer_new();
	if (!c->cl || !c->timer || !c->fwd) {
		ap_io_free(c->cl);
		if (c->timer)
			event_free(c->timer);
		if (c->fwd)
			evbuffer_free(c->fwd);
		free(c);
		return;
	}
	if (peerlen <= sizeof(c->peer)) {
		memcpy(&c->peer, peer, peerlen);
		c->peerlen = peerlen;
	}
	truncated_peer(c);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	ap_metric_add(&w->stats->accepted, 1);
	ap_metric_set(&w->stats->open, w->nconns);
	ap_io_setcb(c->cl, client_read_cb, client_write_cb, client_event_cb, c);
	ap_io_set_lowat(c->cl, RELAY_LOW);
	c->state = C_HEAD;
	arm(c, w->live->conf->limits.client_idle_timeout_ms);
}

void ap_conn_drain_all(struct ap_worker *w)
{
	struct ap_conn *c = w->conns, *next;

	for (; c; c = next) {
		next = c->next;
		if (c->state == C_HEAD && c->last_len == 0 &&
		    evbuffer_get_length(ap_io_in(c->cl)) == 0)
			close_when_flushed(c);
		else
			c->close_after = true;
	}
}

void ap_conn_close_all(struct ap_worker *w)
{
	while (w->conns)
		conn_close(w->conns);
}
