/* The recording upstream of the integration tests: a small HTTP/1.1 server on libevent
 * bufferevents that keeps every request's exact bytes and answers according to the path.
 * Its framing is its own, written apart from proxy/http1.c on purpose: a test oracle must
 * not share the bug it is looking for. Not a production server: no timeouts, few limits.
 *
 * recorder -l HOST:PORT -d DIR [--tls CERT KEY] [--port-file FILE]
 *
 * In DIR, per complete request N (1, 2, … in the order requests complete, over all
 * connections): req-NNNN.http holds the head and the body exactly as received (over TLS,
 * req-NNNN.sni the server name the client asked for, "-" for none), and then a
 * line "<N> conn=<id> <method> <target> body=<bytes>" is appended to DIR/log (body = the
 * decoded body's length). The log line is written after the file, so it is the commit mark.
 * DIR/conns gets "open conn=<id>", "bad conn=<id> reason=<why>" and
 * "close conn=<id> requests=<k> unparsed=<bytes>"; unparsed bytes (a request that never
 * completed or could not be framed) are kept in DIR/partial-conn<id>.http.
 *
 * Answers: the first path segment that names a mode selects it, so a route prefix in front
 * (/ingest/echo) works too. Default: 200 JSON {"ok":true,"n":N}. /status/<code>, /echo,
 * /delay/<ms>, /chunked, /close, /reset, /stall, /big/<n>: see mode_of(). Every answer
 * carries X-Recorder-N and X-Recorder-Conn. A HEAD gets the same head and no body.
 * SIGTERM or SIGINT: exit 0. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define HEAD_MAX       (256 * 1024) /* a head without its blank line by then is refused */
#define CHUNK_LINE_MAX 4096
#define BIG_STEP       (256 * 1024) /* /big is streamed this much at a time */
#define CHUNK_GAP_MS   30           /* /chunked: pause between chunks */

enum mode {
	M_DEFAULT,
	M_STATUS,
	M_ECHO,
	M_DELAY,
	M_CHUNKED,
	M_CLOSE,
	M_RESET,
	M_STALL,
	M_BIG,
	M_BAD
};

enum phase { P_HEAD, P_LENGTH, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER };

/* One complete request waiting for (or getting) its answer. Owned by its conn. */
struct req {
	struct req *next;
	unsigned n;
	char *method; /* malloc'd, like target and ctype */
	char *target;
	char *ctype;           /* request Content-Type or NULL (for /echo) */
	struct evbuffer *body; /* decoded body */
	bool head;             /* HEAD: no body in the answer */
	bool close;            /* the client asked for close (or HTTP/1.0 without keep-alive) */
	bool http10;
	enum mode mode;
	long long arg;   /* status code, milliseconds or byte count */
	const char *why; /* M_BAD: static reason */
};

/* One client connection. Owned by the server's list; freed only at the end of one of its
 * own callbacks (dead or close_after with its output flushed), never in the middle. */
struct conn {
	struct conn *prev, *next;
	struct server *srv;
	struct bufferevent *bev;
	unsigned id;
	unsigned nreq;
	bool tls;
	/* framing of the request being received; its bytes stay in the input until done */
	enum phase phase;
	size_t scanned;  /* P_HEAD: bytes already searched for the blank line */
	size_t pos;      /* bytes of the current request framed so far */
	size_t left;     /* body or chunk bytes still to come */
	struct req *cur; /* the request being framed (after its head) */
	bool stop;       /* frame nothing more: after a close, a reset or a bad request */
	/* answering, in order */
	struct req *q_head, *q_tail; /* complete, not started */
	struct req *active;          /* answer under way (delay, chunked, big, stall) */
	struct event *timer;
	int step;           /* /chunked: chunks sent */
	long long big_left; /* /big: bytes still to queue */
	long long big_off;  /* /big: bytes queued */
	bool close_after;   /* close once the output is flushed */
	bool eof;           /* the client half-closed */
	bool dead;          /* free at the end of the current callback */
	bool broken;        /* reset or failed: no TLS close_notify */
};

struct server {
	struct event_base *base;
	struct evconnlistener *lis;
	SSL_CTX *ssl_ctx;
	const char *dir;
	int log_fd, conns_fd;
	unsigned nreq;
	unsigned nconn;
	struct conn *conns;
};

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("recorder: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* Appends one whole line to <fd> with a single write (O_APPEND: never interleaved). */
static void logf_fd(int fd, const char *fmt, ...)
{
	char line[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(fd, line, (size_t)n) != n)
		fprintf(stderr, "recorder: log write: %s\n", strerror(errno));
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *s = p;

	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes the first <n> bytes of <b> (not drained) to DIR/<name>. */
static void save(struct server *s, const char *name, struct evbuffer *b, size_t n)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "recorder: %s: %s\n", path, strerror(errno));
		return;
	}
	if (n && write_all(fd, evbuffer_pullup(b, (ev_ssize_t)n), n) < 0)
		fprintf(stderr, "recorder: %s: %s\n", path, strerror(errno));
	close(fd);
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "Status";
	}
}

static void req_free(struct req *r)
{
	if (!r)
		return;
	free(r->method);
	free(r->target);
	free(r->ctype);
	if (r->body)
		evbuffer_free(r->body);
	free(r);
}

static void conn_free(struct conn *c)
{
	struct server *s = c->srv;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t left = evbuffer_get_length(in);
	struct req *r;

	if (left) {
		char name[64];
		snprintf(name, sizeof(name), "partial-conn%u.http", c->id);
		save(s, name, in, left);
	}
	logf_fd(s->conns_fd, "close conn=%u requests=%u unparsed=%zu", c->id, c->nreq, left);
	if (c->timer)
		event_free(c->timer);
	c->timer = NULL;
	if (c->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		/* a close_notify, so that a close-delimited body ends cleanly for the client */
		if (ssl && !c->broken)
			SSL_shutdown(ssl);
	}
	bufferevent_free(c->bev);
	c->bev = NULL;
	while ((r = c->q_head)) {
		c->q_head = r->next;
		req_free(r);
	}
	req_free(c->active);
	req_free(c->cur);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

/* ---- answers ---- */

/* Queues a response head. <clen> < 0: no Content-Length. */
static void head_out(struct conn *c, struct req *r, int status, const char *ctype, long long clen,
                     bool chunked, bool close)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
	if (ctype)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	if (clen >= 0)
		evbuffer_add_printf(out, "Content-Length: %lld\r\n", clen);
	if (chunked)
		evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n");
	evbuffer_add_printf(out, "X-Recorder-N: %u\r\nX-Recorder-Conn: %u\r\n", r->n, c->id);
	if (close)
		evbuffer_add_printf(out, "Connection: close\r\n");
	else if (r->http10)
		evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	evbuffer_add(out, "\r\n", 2);
}

/* A whole answer with a fixed body. */
static void answer(struct conn *c, struct req *r, int status, const char *ctype, const void *body,
                   size_t len)
{
	bool nobody = status == 204 || status == 304;

	head_out(c, r, status, nobody ? NULL : ctype, nobody ? -1 : (long long)len, false,
	         r->close);
	if (!nobody && !r->head && len)
		evbuffer_add(bufferevent_get_output(c->bev), body, len);
}

static void answer_json(struct conn *c, struct req *r, int status)
{
	char body[128];
	int n;

	if (status == 200)
		n = snprintf(body, sizeof(body), "{\"ok\":true,\"n\":%u}", r->n);
	else
		n = snprintf(body, sizeof(body), "{\"status\":%d,\"n\":%u}", status, r->n);
	answer(c, r, status, "application/json", body, (size_t)n);
}

static const char *const chunk_parts[] = {"{\"ok\":true,", "\"n\":%u,", "\"chunked\":", "true}"};

static void big_fill(struct conn *c)
{
	static char pat[BIG_STEP + 26];
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t n;

	if (!pat[0])
		for (size_t i = 0; i < sizeof(pat); i++)
			pat[i] = (char)('a' + i % 26);
	n = c->big_left < BIG_STEP ? (size_t)c->big_left : BIG_STEP;
	/* byte i of the body is 'a' + i % 26 */
	evbuffer_add(out, pat + c->big_off % 26, n);
	c->big_left -= (long long)n;
	c->big_off += (long long)n;
}

static void pump(struct conn *c);
static void settle(struct conn *c);

/* The active answer is fully queued: close after it if it said so, else go on. */
static void active_done(struct conn *c)
{
	struct req *r = c->active;

	c->active = NULL;
	if (r->close || r->mode == M_CLOSE || r->mode == M_BAD)
		c->close_after = true;
	req_free(r);
	pump(c);
}

static void chunk_step(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct req *r = c->active;
	char part[64];
	int n;

	if (c->step < (int)(sizeof(chunk_parts) / sizeof(chunk_parts[0]))) {
		n = snprintf(part, sizeof(part), chunk_parts[c->step], r->n);
		evbuffer_add_printf(out, "%x\r\n", n);
		evbuffer_add(out, part, (size_t)n);
		evbuffer_add(out, "\r\n", 2);
		c->step++;
		struct timeval tv = {0, CHUNK_GAP_MS * 1000};
		evtimer_add(c->timer, &tv);
		return;
	}
	evbuffer_add(out, "0\r\n\r\n", 5);
	active_done(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (!c->active)
		return;
	if (c->active->mode == M_DELAY) {
		answer_json(c, c->active, 200);
		active_done(c);
	} else if (c->active->mode == M_CHUNKED) {
		chunk_step(c);
	}
	settle(c);
}

/* Starts the answer to <r>; it either completes now or becomes c->active. */
static void start(struct conn *c, struct req *r)
{
	struct timeval tv;

	c->active = r;
	switch (r->mode) {
	case M_DEFAULT:
		answer_json(c, r, 200);
		break;
	case M_STATUS:
		answer_json(c, r, (int)r->arg);
		break;
	case M_BAD:
		r->close = true;
		answer(c, r, 400, "text/plain", r->why, strlen(r->why));
		break;
	case M_ECHO: {
		size_t n = evbuffer_get_length(r->body);
		head_out(c, r, 200, r->ctype ? r->ctype : "application/octet-stream", (long long)n,
		         false, r->close);
		if (!r->head)
			evbuffer_add_buffer(bufferevent_get_output(c->bev), r->body);
		break;
	}
	case M_DELAY:
		tv.tv_sec = r->arg / 1000;
		tv.tv_usec = (r->arg % 1000) * 1000;
		evtimer_add(c->timer, &tv);
		return;
	case M_CHUNKED:
		head_out(c, r, 200, "application/json", -1, true, r->close);
		if (r->head)
			break;
		c->step = 0;
		chunk_step(c);
		return;
	case M_CLOSE: {
		char body[64];
		int n = snprintf(body, sizeof(body), "{\"ok\":true,\"n\":%u,\"close\":true}", r->n);
		head_out(c, r, 200, "application/json", -1, false, true);
		if (!r->head)
			evbuffer_add(bufferevent_get_output(c->bev), body, (size_t)n);
		break;
	}
	case M_RESET: {
		struct linger lg = {1, 0};
		evutil_socket_t fd = bufferevent_getfd(c->bev);
		/* linger 0: close() sends an RST instead of a FIN */
		if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
			fprintf(stderr, "recorder: SO_LINGER: %s\n", strerror(errno));
		c->dead = true;
		c->broken = true;
		c->stop = true;
		return;
	}
	case M_STALL:
		return;
	case M_BIG:
		head_out(c, r, 200, "application/octet-stream", r->arg, false, r->close);
		if (r->head)
			break;
		c->big_left = r->arg;
		c->big_off = 0;
		big_fill(c);
		if (c->big_left)
			return; /* write_cb queues the rest */
		break;
	}
	active_done(c);
}

/* Starts the queued answers in order while none is under way. */
static void pump(struct conn *c)
{
	while (!c->active && !c->dead && !c->close_after && c->q_head) {
		struct req *r = c->q_head;
		c->q_head = r->next;
		if (!c->q_head)
			c->q_tail = NULL;
		r->next = NULL;
		start(c, r);
	}
}

/* ---- request framing ---- */

/* Case-insensitive: does the comma-separated list <v> hold token <tok>? */
static bool has_token(const char *v, const char *tok)
{
	size_t tl = strlen(tok);

	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		const char *e = v;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - v) == tl && !strncasecmp(v, tok, tl))
			return true;
		v = e;
	}
	return false;
}

static bool parse_num(const char *s, size_t n, long long max, long long *out)
{
	long long v = 0;

	if (!n || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

/* The mode the target asks for: the first path segment naming one, and its argument. */
static void mode_of(struct req *r)
{
	const char *p = r->target, *end = p + strcspn(p, "?#");

	r->mode = M_DEFAULT;
	while (p < end) {
		while (p < end && *p == '/')
			p++;
		const char *seg = p;
		while (p < end && *p != '/')
			p++;
		size_t sl = (size_t)(p - seg);
		const char *arg = p < end ? p + 1 : end;
		size_t al = strcspn(arg, "/?#");
		if (arg + al > end)
			al = (size_t)(end - arg);
#define SEG(lit) (sl == sizeof(lit) - 1 && !memcmp(seg, lit, sl))
		if (SEG("status")) {
			if (!parse_num(arg, al, 599, &r->arg) || r->arg < 200) {
				r->mode = M_BAD;
				r->why = "recorder: /status/<200..599>\n";
				return;
			}
			r->mode = M_STATUS;
		} else if (SEG("echo")) {
			r->mode = M_ECHO;
		} else if (SEG("delay")) {
			if (!parse_num(arg, al, 600000, &r->arg)) {
				r->mode = M_BAD;
				r->why = "recorder: /delay/<ms>\n";
				return;
			}
			r->mode = M_DELAY;
		} else if (SEG("chunked")) {
			r->mode = M_CHUNKED;
		} else if (SEG("close")) {
			r->mode = M_CLOSE;
		} else if (SEG("reset")) {
			r->mode = M_RESET;
		} else if (SEG("stall")) {
			r->mode = M_STALL;
		} else if (SEG("big")) {
			if (!parse_num(arg, al, 1LL << 32, &r->arg)) {
				r->mode = M_BAD;
				r->why = "recorder: /big/<bytes>\n";
				return;
			}
			r->mode = M_BIG;
		} else {
			continue;
		}
#undef SEG
		return;
	}
}

/* Parses the head in h[0..n) (ending with CRLFCRLF) into a new c->cur and sets the body
 * phase. Returns a static reason when the head cannot be framed. */
static const char *head_parse(struct conn *c, char *h, size_t n)
{
	struct req *r = calloc(1, sizeof(*r));
	bool chunked = false, have_len = false, keep_alive = false, close = false, expect = false;
	long long len = 0;
	char *line, *next, *end = h + n - 4;

	if (!r)
		return "out of memory";
	c->cur = r;
	r->body = evbuffer_new();
	*end = 0;
	/* request line: method SP target SP HTTP/1.x */
	next = strstr(h, "\r\n");
	if (next)
		*next = 0;
	char *sp1 = strchr(h, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || sp1 == h || sp2 == sp1 + 1 || strchr(sp2 + 1, ' '))
		return "bad request line";
	if (strcmp(sp2 + 1, "HTTP/1.1") && strcmp(sp2 + 1, "HTTP/1.0"))
		return "bad version";
	r->http10 = !strcmp(sp2 + 1, "HTTP/1.0");
	r->method = strndup(h, (size_t)(sp1 - h));
	r->target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
	r->head = !strcmp(r->method, "HEAD");
	for (line = next ? next + 2 : end; line < end; line = next + 2) {
		next = strstr(line, "\r\n");
		if (!next)
			next = end;
		*next = 0;
		char *colon = strchr(line, ':');
		if (!colon || colon == line || line[0] == ' ' || line[0] == '\t')
			return "bad header line";
		*colon = 0;
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			v[--vl] = 0;
		if (!strcasecmp(line, "content-length")) {
			long long l;
			if (!parse_num(v, vl, 1LL << 40, &l) || (have_len && l != len))
				return "bad content-length";
			have_len = true;
			len = l;
		} else if (!strcasecmp(line, "transfer-encoding")) {
			if (!has_token(v, "chunked"))
				return "unsupported transfer-encoding";
			chunked = true;
		} else if (!strcasecmp(line, "connection")) {
			close |= has_token(v, "close");
			keep_alive |= has_token(v, "keep-alive");
		} else if (!strcasecmp(line, "content-type")) {
			free(r->ctype);
			r->ctype = strdup(v);
		} else if (!strcasecmp(line, "expect")) {
			expect = !strcasecmp(v, "100-continue");
		}
	}
	if (chunked && have_len)
		return "content-length with transfer-encoding";
	/* only when nothing is pending, so that it cannot cut into an answer */
	if (expect && !r->http10 && (chunked || len) && !c->active && !c->q_head)
		evbuffer_add_printf(bufferevent_get_output(c->bev),
		                    "HTTP/1.1 100 Continue\r\n\r\n");
	r->close = close || (r->http10 && !keep_alive);
	mode_of(r);
	if (chunked) {
		c->phase = P_CHUNK_SIZE;
	} else if (len) {
		c->phase = P_LENGTH;
		c->left = (size_t)len;
	} else {
		c->phase = P_HEAD; /* no body: complete */
	}
	return NULL;
}

/* Finds the CRLF-ended line at <pos> in <in>; returns its length without the CRLF, or -1
 * when it is not complete yet. */
static long line_at(struct evbuffer *in, size_t pos)
{
	struct evbuffer_ptr p, e;
	size_t eol;

	if (evbuffer_ptr_set(in, &p, pos, EVBUFFER_PTR_SET) < 0)
		return -1;
	e = evbuffer_search_eol(in, &p, &eol, EVBUFFER_EOL_CRLF_STRICT);
	if (e.pos < 0)
		return -1;
	return (long)(e.pos - (ev_ssize_t)pos);
}

/* Frames as much of the current request as has arrived. Returns 1 when it is complete,
 * 0 when more bytes are needed, and a static reason through *why when it is bad. */
static int frame(struct conn *c, struct evbuffer *in, const char **why)
{
	size_t have = evbuffer_get_length(in);
	char line[CHUNK_LINE_MAX + 1];

	*why = NULL;
	if (c->phase == P_HEAD && !c->cur) {
		struct evbuffer_ptr start, f;
		size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
		evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET);
		f = evbuffer_search(in, "\r\n\r\n", 4, &start);
		if (f.pos < 0) {
			c->scanned = have;
			if (have > HEAD_MAX)
				*why = "head too large";
			return 0;
		}
		size_t hl = (size_t)f.pos + 4;
		char *h = malloc(hl + 1);
		if (!h) {
			*why = "out of memory";
			return 0;
		}
		evbuffer_copyout(in, h, hl);
		h[hl] = 0;
		*why = head_parse(c, h, hl);
		free(h);
		if (*why)
			return 0;
		c->pos = hl;
		c->scanned = 0;
	}
	for (;;) {
		long ll;
		size_t n;
		switch (c->phase) {
		case P_HEAD:
			return 1;
		case P_LENGTH:
		case P_CHUNK_DATA:
			n = have - c->pos < c->left ? have - c->pos : c->left;
			if (n) {
				struct evbuffer_ptr p;
				char tmp[16384];
				evbuffer_ptr_set(in, &p, c->pos, EVBUFFER_PTR_SET);
				for (size_t done = 0; done < n;) {
					size_t k = n - done < sizeof(tmp) ? n - done : sizeof(tmp);
					ev_ssize_t got = evbuffer_copyout_from(in, &p, tmp, k);
					if (got <= 0)
						break;
					evbuffer_add(c->cur->body, tmp, (size_t)got);
					evbuffer_ptr_set(in, &p, (size_t)got, EVBUFFER_PTR_ADD);
					done += (size_t)got;
				}
			}
			c->pos += n;
			c->left -= n;
			if (c->left)
				return 0;
			c->phase = c->phase == P_LENGTH ? P_HEAD : P_CHUNK_CRLF;
			break;
		case P_CHUNK_CRLF: {
			struct evbuffer_ptr p;
			char crlf[2];
			if (have - c->pos < 2)
				return 0;
			evbuffer_ptr_set(in, &p, c->pos, EVBUFFER_PTR_SET);
			evbuffer_copyout_from(in, &p, crlf, 2);
			if (crlf[0] != '\r' || crlf[1] != '\n') {
				*why = "chunk data not followed by CRLF";
				return 0;
			}
			c->pos += 2;
			c->phase = P_CHUNK_SIZE;
			break;
		}
		case P_CHUNK_SIZE:
		case P_TRAILER: {
			struct evbuffer_ptr p;
			ll = line_at(in, c->pos);
			if (ll < 0) {
				if (have - c->pos > CHUNK_LINE_MAX)
					*why = "chunk line too long";
				return 0;
			}
			if (ll > CHUNK_LINE_MAX) {
				*why = "chunk line too long";
				return 0;
			}
			evbuffer_ptr_set(in, &p, c->pos, EVBUFFER_PTR_SET);
			evbuffer_copyout_from(in, &p, line, (size_t)ll);
			line[ll] = 0;
			c->pos += (size_t)ll + 2;
			if (c->phase == P_TRAILER) {
				if (ll == 0)
					c->phase = P_HEAD;
				break;
			}
			/* chunk-size = 1*HEXDIG, then optional ";ext" */
			size_t size = 0, i = 0;
			for (; isxdigit((unsigned char)line[i]); i++) {
				if (size >> 56) {
					*why = "chunk size too large";
					return 0;
				}
				int d = line[i] <= '9' ? line[i] - '0'
				                       : (line[i] | 0x20) - 'a' + 10;
				size = size * 16 + (size_t)d;
			}
			if (i == 0 ||
			    (line[i] && line[i] != ';' && line[i] != ' ' && line[i] != '\t')) {
				*why = "bad chunk size";
				return 0;
			}
			if (size == 0) {
				c->phase = P_TRAILER;
			} else {
				c->phase = P_CHUNK_DATA;
				c->left = size;
			}
			break;
		}
		}
	}
}

/* A request is complete: record it, queue its answer. */
static void complete(struct conn *c, struct evbuffer *in)
{
	struct server *s = c->srv;
	struct req *r = c->cur;
	char name[32];

	c->cur = NULL;
	r->n = ++s->nreq;
	c->nreq++;
	snprintf(name, sizeof(name), "req-%04u.http", r->n);
	save(s, name, in, c->pos);
	if (c->tls) {
		/* the server name the client sent (SNI), or "-": req-NNNN.sni */
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
		struct evbuffer *t = evbuffer_new();
		if (t) {
			evbuffer_add_printf(t, "%s", sni ? sni : "-");
			snprintf(name, sizeof(name), "req-%04u.sni", r->n);
			save(s, name, t, evbuffer_get_length(t));
			evbuffer_free(t);
		}
	}
	evbuffer_drain(in, c->pos);
	c->pos = 0;
	c->phase = P_HEAD;
	logf_fd(s->log_fd, "%u conn=%u %s %s body=%zu", r->n, c->id, r->method, r->target,
	        evbuffer_get_length(r->body));
	if (r->close || r->mode == M_CLOSE || r->mode == M_RESET)
		c->stop = true; /* nothing after it is a request */
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
}

static void bad(struct conn *c, const char *why)
{
	struct req *r = c->cur ? c->cur : calloc(1, sizeof(*r));

	c->cur = NULL;
	c->stop = true;
	logf_fd(c->srv->conns_fd, "bad conn=%u reason=%s", c->id, why);
	if (!r) {
		c->dead = true;
		return;
	}
	r->mode = M_BAD;
	r->why = "recorder: cannot frame the request\n";
	r->head = false;
	if (c->q_tail)
		c->q_tail->next = r;
	else
		c->q_head = r;
	c->q_tail = r;
}

/* Ends a callback: frees the connection if it is done. */
static void settle(struct conn *c)
{
	if (!c->dead) {
		if (c->eof && !c->active && !c->q_head)
			c->close_after = true;
		if (c->eof && c->active && c->active->mode == M_STALL)
			c->dead = true;
		if (c->close_after && !evbuffer_get_length(bufferevent_get_output(c->bev)))
			c->dead = true;
	}
	if (c->dead)
		conn_free(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!c->stop && evbuffer_get_length(in)) {
		const char *why;
		int done = frame(c, in, &why);
		if (why) {
			bad(c, why);
			break;
		}
		if (!done)
			break;
		complete(c, in);
	}
	pump(c);
	settle(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (c->active && c->active->mode == M_BIG && c->big_left) {
		big_fill(c);
		if (!c->big_left)
			active_done(c);
	}
	settle(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (what & BEV_EVENT_ERROR) {
		unsigned long e;
		while ((e = bufferevent_get_openssl_error(bev)))
			if (ERR_GET_LIB(e)) /* libevent also queues bare errno values */
				fprintf(stderr, "recorder: conn %u: tls: %s\n", c->id,
				        ERR_error_string(e, NULL));
		c->dead = true;
		c->broken = true;
	} else if (what & BEV_EVENT_EOF) {
		c->eof = true;
		/* frame what is left: a body may end exactly at the EOF */
		read_cb(bev, arg);
		return;
	}
	settle(c);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
                      void *arg)
{
	struct server *s = arg;
	struct conn *c = calloc(1, sizeof(*c));

	(void)l;
	(void)sa;
	(void)slen;
	if (!c) {
		evutil_closesocket(fd);
		return;
	}
	c->srv = s;
	c->id = ++s->nconn;
	if (s->ssl_ctx) {
		SSL *ssl = SSL_new(s->ssl_ctx);
		c->tls = true;
		c->bev = ssl ? bufferevent_openssl_socket_new(s->base, fd, ssl,
		                                              BUFFEREVENT_SSL_ACCEPTING,
		                                              BEV_OPT_CLOSE_ON_FREE)
		             : NULL;
		if (c->bev)
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	c->timer = evtimer_new(s->base, timer_cb, c);
	if (!c->bev || !c->timer) {
		fprintf(stderr, "recorder: out of memory\n");
		if (c->bev)
			bufferevent_free(c->bev);
		else
			evutil_closesocket(fd);
		if (c->timer)
			event_free(c->timer);
		free(c);
		return;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	logf_fd(s->conns_fd, "open conn=%u", c->id);
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: recorder -l HOST:PORT -d DIR [--tls CERT KEY] [--port-file FILE]\n");
	exit(2);
}

static int open_log(const char *dir, const char *name)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	return fd;
}

/* "127.0.0.1:8080", "[::1]:0" → *ss. (evutil_parse_sockaddr_port refuses port 0.) */
static int parse_addr(const char *spec, struct sockaddr_storage *ss, int *len)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	long long port;
	size_t hl;

	if (!colon || !parse_num(colon + 1, strlen(colon + 1), 65535, &port))
		return -1;
	hl = (size_t)(colon - spec);
	if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
		spec++;
		hl -= 2;
	}
	if (!hl || hl >= sizeof(host))
		return -1;
	memcpy(host, spec, hl);
	host[hl] = 0;
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		*len = sizeof(*v4);
	} else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*v6);
	} else {
		return -1;
	}
	return 0;
}

static void write_port_file(const char *path, int port)
{
	char tmp[PATH_MAX], text[16];
	int fd, n;

	/* written aside and renamed, so that a reader never sees a half-written port */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(text, sizeof(text), "%d\n", port);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, text, (size_t)n) < 0 || close(fd) < 0 || rename(tmp, path) < 0)
		die("%s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
	const char *listen_on = "127.0.0.1:0", *port_file = NULL, *cert = NULL, *key = NULL;
	struct server s = {0};
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	socklen_t alen = sizeof(ss);
	struct event *sig_term, *sig_int;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-l") && i + 1 < argc) {
			listen_on = argv[++i];
		} else if (!strcmp(argv[i], "-d") && i + 1 < argc) {
			s.dir = argv[++i];
		} else if (!strcmp(argv[i], "--port-file") && i + 1 < argc) {
			port_file = argv[++i];
		} else if (!strcmp(argv[i], "--tls") && i + 2 < argc) {
			cert = argv[++i];
			key = argv[++i];
		} else {
			usage();
		}
	}
	if (!s.dir)
		usage();
	if (mkdir(s.dir, 0755) < 0 && errno != EEXIST)
		die("%s: %s", s.dir, strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	s.log_fd = open_log(s.dir, "log");
	s.conns_fd = open_log(s.dir, "conns");

	if (cert) {
		s.ssl_ctx = SSL_CTX_new(TLS_server_method());
		if (!s.ssl_ctx || !SSL_CTX_set_min_proto_version(s.ssl_ctx, TLS1_2_VERSION) ||
		    SSL_CTX_use_certificate_chain_file(s.ssl_ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(s.ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(s.ssl_ctx) != 1)
			die("tls: %s / %s: %s", cert, key, ERR_error_string(ERR_get_error(), NULL));
	}

	if (parse_addr(listen_on, &ss, &sslen) < 0)
		die("-l %s: expected HOST:PORT (an IP address, [v6]:port, port 0 for any)",
		    listen_on);
	/* a precise clock: /delay/300 must never answer after 297 ms (the coarse one can) */
	struct event_config *cfg = event_config_new();
	if (cfg)
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	s.base = cfg ? event_base_new_with_config(cfg) : NULL;
	if (cfg)
		event_config_free(cfg);
	if (!s.base)
		die("event_base_new failed");
	s.lis = evconnlistener_new_bind(s.base, accept_cb, &s,
	                                LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE |
	                                        LEV_OPT_CLOSE_ON_EXEC,
	                                -1, (struct sockaddr *)&ss, sslen);
	if (!s.lis)
		die("bind %s: %s", listen_on, strerror(errno));
	if (getsockname(evconnlistener_get_fd(s.lis), (struct sockaddr *)&ss, &alen) < 0)
		die("getsockname: %s", strerror(errno));
	int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                          : ((struct sockaddr_in *)&ss)->sin_port);

	sig_term = evsignal_new(s.base, SIGTERM, signal_cb, s.base);
	sig_int = evsignal_new(s.base, SIGINT, signal_cb, s.base);
	evsignal_add(sig_term, NULL);
	evsignal_add(sig_int, NULL);
	if (port_file)
		write_port_file(port_file, port);
	printf("recorder: listening on port %d%s, recording to %s\n", port, cert ? " (tls)" : "",
	       s.dir);
	fflush(stdout);

	event_base_dispatch(s.base);

	while (s.conns)
		conn_free(s.conns);
	evconnlistener_free(s.lis);
	event_free(sig_term);
	event_free(sig_int);
	event_base_free(s.base);
	if (s.ssl_ctx)
		SSL_CTX_free(s.ssl_ctx);
	close(s.log_fd);
	close(s.conns_fd);
	printf("recorder: %u requests on %u connections, exiting\n", s.nreq, s.nconn);
	return 0;
}
