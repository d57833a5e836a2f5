/* Strict HTTP/1.1 framing (RFC 9110/9112): request heads, response heads, the chunked
 * coding. Zero-copy and resumable as http1.h says; no I/O, no allocation. What is not
 * here: routing on the host, rewriting headers, and anything about a body beyond where it
 * ends. Whatever two implementations could read two ways is refused, not repaired. */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "http1.h"

#define METHOD_MAX    32    /* no registered method is longer than 17 bytes */
#define CL_DIGITS_MAX 18    /* any 18-digit number fits an int64_t */
#define CHUNK_LINE    4096  /* a size line with its extensions, or one trailer line */
#define TRAILERS_MAX  16384 /* the whole trailer section */

/* tchar (RFC 9110 5.6.2): the bytes of a method, a header name, a transfer coding. */
static const unsigned char tchar[256] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
        /* 0x80-0xff: none */
};

/* The bytes of a host name we accept: RFC 3986 unreserved. Sub-delims and %-escapes are
 * valid in a reg-name but no DNS name uses them; they would only serve to make a
 * host-based router and the upstream disagree. */
static const unsigned char hostchar[128] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
};

static inline bool is_tchar(char c)
{
	return tchar[(unsigned char)c];
}

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int refuse(int *status, const char **why, int st, const char *reason)
{
	if (status)
		*status = st;
	if (why)
		*why = reason;
	return AP_ERR;
}

/* ---- scanners: the only loops that see every byte of a head ---- */

/* First index in [i, n) holding a control character (0x00-0x1f or 0x7f), or n. Field
 * values, reason phrases and the search for the end of a head stop only there. */
static size_t find_ctl(const char *p, size_t i, size_t n)
{
#if defined(__SSE2__)
	const __m128i space = _mm_set1_epi8(0x20), minus1 = _mm_set1_epi8(-1),
	              del = _mm_set1_epi8(0x7f);

	/* Bytes compare as signed: 0x80-0xff (obs-text) are negative and so are not CTLs. */
	while (n - i >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i c = _mm_and_si128(_mm_cmpgt_epi8(v, minus1), _mm_cmplt_epi8(v, space));
		int m = _mm_movemask_epi8(_mm_or_si128(c, _mm_cmpeq_epi8(v, del)));
		if (m)
			return i + (size_t)__builtin_ctz((unsigned)m);
		i += 16;
	}
#endif
	for (; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c == 0x7f)
			return i;
	}
	return n;
}

/* First index in [i, n) whose byte is not visible ASCII (0x21-0x7e), or n: the end of a
 * request target. */
static size_t find_nonvis(const char *p, size_t i, size_t n)
{
#if defined(__SSE2__)
	const __m128i bang = _mm_set1_epi8(0x21), del = _mm_set1_epi8(0x7f);

	/* Signed again: 0x80-0xff are below 0x21 and end the target, as they must. */
	while (n - i >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i c = _mm_or_si128(_mm_cmplt_epi8(v, bang), _mm_cmpeq_epi8(v, del));
		int m = _mm_movemask_epi8(c);
		if (m)
			return i + (size_t)__builtin_ctz((unsigned)m);
		i += 16;
	}
#endif
	for (; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x21 || c > 0x7e)
			return i;
	}
	return n;
}

/* Looks for the blank line that ends a head in buf[from, len), <from> being at or after
 * the CR that ends the start line. On the way it refuses, wherever they are, the faults
 * no head may hold: control characters other than HTAB, a CR not followed by LF, an LF
 * not preceded by CR, a line that starts with white space (obsolete folding). So a
 * client streaming garbage is refused without waiting for the size limit. Returns
 * AP_OK with *end just after the CRLF CRLF, AP_AGAIN, or AP_ERR with *why. */
static int find_head_end(const char *buf, size_t len, size_t from, size_t *end, const char **why)
{
	size_t i = from;

	for (;;) {
		i = find_ctl(buf, i, len);
		if (i == len)
			return AP_AGAIN;
		if (buf[i] == '\t') {
			i++;
			continue;
		}
		if (buf[i] == '\r') {
			if (i + 1 == len)
				return AP_AGAIN;
			if (buf[i + 1] != '\n')
				return refuse(NULL, why, 400, "bare CR in the head");
			i++;
		} else if (buf[i] != '\n') {
			return refuse(NULL, why, 400, "control character in the head");
		} else if (buf[i - 1] != '\r') {
			/* i > 0: <from> is past the start line. An LF right at <from> closes the CR
			 * the previous call saw last. */
			return refuse(NULL, why, 400, "bare LF in the head");
		}
		/* buf[i] is the LF of a CRLF; what starts the next line? */
		if (i + 1 == len)
			return AP_AGAIN;
		if (is_ows(buf[i + 1]))
			return refuse(NULL, why, 400,
			              "obsolete line folding or white space at line start");
		if (buf[i + 1] == '\r') {
			if (i + 2 == len)
				return AP_AGAIN;
			if (buf[i + 2] != '\n')
				return refuse(NULL, why, 400, "bare CR in the head");
			*end = i + 3;
			return AP_OK;
		}
		i++;
	}
}

/* ---- header fields ---- */

/* What the header loop noted about the fields that frame a message. */
struct fields {
	struct ap_span cl, te, host;
	unsigned ncl, nte, nhost;
	bool conn_close, conn_keep_alive;
	bool expect_100, expect_other;
};

/* Reads the header lines of a complete head, from <pos> (just after the start line) to
 * the first empty line, which find_head_end saw at or before <end>. Fills <h> (at most
 * <maxh> entries: one more is a 431) and <f>. Returns the offset after the empty line or
 * AP_ERR with *status and *why. Every byte is checked here again: this does not rely on
 * what earlier calls scanned, so a wrong last_len can only delay a head, not pass one. */
static ssize_t parse_fields(const char *buf, size_t pos, size_t end, struct ap_http_header *h,
                            size_t maxh, size_t *nh, struct fields *f, int *status,
                            const char **why)
{
	size_t n = 0;

	memset(f, 0, sizeof(*f));
	for (;;) {
		size_t name, vstart, q;
		struct ap_span nm, val;

		if (pos >= end)
			return refuse(status, why, 400, "head ends inside a header line");
		if (buf[pos] == '\r') {
			if (pos + 1 >= end || buf[pos + 1] != '\n')
				return refuse(status, why, 400, "bare CR in the head");
			*nh = n;
			return (ssize_t)(pos + 2);
		}
		if (n == maxh)
			return refuse(status, why, 431, "too many header fields");
		name = pos;
		while (pos < end && is_tchar(buf[pos]))
			pos++;
		if (pos == end)
			return refuse(status, why, 400, "head ends inside a header name");
		if (buf[pos] != ':') {
			if (pos == name && is_ows(buf[pos]))
				return refuse(status, why, 400,
				              "obsolete line folding or white space at line start");
			if (is_ows(buf[pos]))
				return refuse(status, why, 400,
				              "white space before a header's colon");
			return refuse(status, why, 400, "invalid character in a header name");
		}
		if (pos == name)
			return refuse(status, why, 400, "empty header name");
		nm = (struct ap_span){buf + name, pos - name};
		pos++;
		while (pos < end && is_ows(buf[pos]))
			pos++;
		vstart = pos;
		for (;;) {
			pos = find_ctl(buf, pos, end);
			if (pos < end && buf[pos] == '\t') {
				pos++;
				continue;
			}
			break;
		}
		if (pos + 1 >= end || buf[pos] != '\r' || buf[pos + 1] != '\n') {
			if (pos < end && buf[pos] == '\n')
				return refuse(status, why, 400, "bare LF in the head");
			if (pos < end && buf[pos] == '\r')
				return refuse(status, why, 400, "bare CR in the head");
			return refuse(status, why, 400, "control character in a header value");
		}
		q = pos;
		while (q > vstart && is_ows(buf[q - 1]))
			q--;
		val = (struct ap_span){buf + vstart, q - vstart};
		pos += 2;
		h[n].name = nm;
		h[n].value = val;
		n++;

		/* Dispatch on the length first: most fields are none of these. */
		switch (nm.n) {
		case 4:
			if (ap_span_ieq(nm, "host")) {
				f->host = val;
				f->nhost++;
			}
			break;
		case 6:
			if (ap_span_ieq(nm, "expect")) {
				if (ap_span_ieq(val, "100-continue"))
					f->expect_100 = true;
				else
					f->expect_other = true;
			}
			break;
		case 10:
			if (ap_span_ieq(nm, "connection")) {
				if (ap_http_list_has(val, "close"))
					f->conn_close = true;
				if (ap_http_list_has(val, "keep-alive"))
					f->conn_keep_alive = true;
			}
			break;
		case 14:
			if (ap_span_ieq(nm, "content-length")) {
				f->cl = val;
				f->ncl++;
			}
			break;
		case 17:
			if (ap_span_ieq(nm, "transfer-encoding")) {
				f->te = val;
				f->nte++;
			}
			break;
		default:
			break;
		}
	}
}

/* Content-Length = 1*DIGIT, at most 18 of them: no sign, no inner space, no list. */
static int64_t parse_length(struct ap_span v)
{
	int64_t x = 0;

	if (v.n == 0 || v.n > CL_DIGITS_MAX)
		return -1;
	for (size_t i = 0; i < v.n; i++) {
		if (!is_digit(v.p[i]))
			return -1;
		x = x * 10 + (v.p[i] - '0');
	}
	return x;
}

/* host [":" port]: a name of unreserved characters, or an IPv6 literal in brackets, then
 * an optional port of 1-5 digits up to 65535. IPv4 addresses are names here. */
static bool valid_host(struct ap_span h)
{
	size_t i = 0, digits = 0;
	unsigned port = 0;

	if (h.n == 0)
		return false;
	if (h.p[0] == '[') {
		const char *close = memchr(h.p, ']', h.n);
		char a[INET6_ADDRSTRLEN];
		struct in6_addr in6;
		size_t al;

		if (!close)
			return false;
		al = (size_t)(close - h.p) - 1;
		if (al == 0 || al >= sizeof(a))
			return false;
		memcpy(a, h.p + 1, al);
		a[al] = 0;
		if (inet_pton(AF_INET6, a, &in6) != 1)
			return false;
		i = al + 2;
	} else {
		while (i < h.n && (unsigned char)h.p[i] < 128 && hostchar[(unsigned char)h.p[i]])
			i++;
		if (i == 0)
			return false;
	}
	if (i == h.n)
		return true;
	if (h.p[i++] != ':')
		return false;
	for (; i < h.n; i++, digits++) {
		if (!is_digit(h.p[i]) || digits == 5)
			return false;
		port = port * 10 + (unsigned)(h.p[i] - '0');
	}
	return digits > 0 && port <= 65535;
}

/* ---- request heads ---- */

/* Splits the target into path, query and (absolute-form) authority, by its form
 * (RFC 9112 3.2): origin "/p?q"; absolute "http://h/p?q" or "https://…" (the scheme in
 * any case); "*" for OPTIONS only. Authority-form is CONNECT's and CONNECT is refused
 * before this. A fragment is never sent by a client: refused. */
static int parse_target(struct ap_http_req *req, struct ap_span *authority, const char **why)
{
	const char *t = req->target.p;
	size_t n = req->target.n, i, a;
	const char *q;

	*authority = (struct ap_span){NULL, 0};
	if (memchr(t, '#', n))
		return refuse(NULL, why, 400, "fragment in the request target");
	if (t[0] == '/') {
		i = 0;
	} else if (n == 1 && t[0] == '*') {
		if (req->method.n != 7 || memcmp(req->method.p, "OPTIONS", 7) != 0)
			return refuse(NULL, why, 400, "asterisk-form target without OPTIONS");
		req->path = req->target;
		req->query = (struct ap_span){t + n, 0};
		return AP_OK;
	} else {
		if (n > 7 && ap_span_ieq((struct ap_span){t, 7}, "http://"))
			a = 7;
		else if (n > 8 && ap_span_ieq((struct ap_span){t, 8}, "https://"))
			a = 8;
		else
			return refuse(NULL, why, 400, "request target in an unsupported form");
		for (i = a; i < n && t[i] != '/' && t[i] != '?'; i++)
			;
		*authority = (struct ap_span){t + a, i - a};
		if (!valid_host(*authority))
			return refuse(NULL, why, 400, "invalid authority in the request target");
	}
	q = memchr(t + i, '?', n - i);
	if (!q) {
		req->path = (struct ap_span){t + i, n - i};
		req->query = (struct ap_span){t + n, 0};
	} else {
		req->path = (struct ap_span){t + i, (size_t)(q - t) - i};
		req->query = (struct ap_span){q + 1, (size_t)(t + n - q) - 1};
	}
	if (req->path.n == 0)
		req->path = AP_SPAN("/");
	return AP_OK;
}

/* Parses the request line at <p, n>, which may stop anywhere. The checks run in the order
 * of the bytes and each only once its bytes are there, so a prefix is refused only when
 * every longer input would be, with the same status: the early refusal of a garbage
 * stream never differs from the answer to the whole head. Returns the length of the line
 * with its CRLF (method, target, path, query and minor set in *req; *authority for an
 * absolute-form target), AP_AGAIN, or AP_ERR. */
static ssize_t parse_request_line(const char *p, size_t n, const struct ap_http_limits *lim,
                                  struct ap_http_req *req, struct ap_span *authority, int *status,
                                  const char **why)
{
	static const char version[] = "HTTP/";
	size_t i = 0, t, v;

	while (i < n && is_tchar(p[i]) && i <= METHOD_MAX)
		i++;
	if (i > METHOD_MAX)
		return refuse(status, why, 400, "method too long");
	if (i == n)
		return AP_AGAIN;
	if (i == 0)
		return refuse(status, why, 400, "request line does not start with a method");
	if (p[i] != ' ')
		return refuse(status, why, 400, "invalid character in the method");
	req->method = (struct ap_span){p, i};
	if (i == 7 && memcmp(p, "CONNECT", 7) == 0)
		return refuse(status, why, 405, "CONNECT is not supported");

	t = ++i;
	i = find_nonvis(p, t, n);
	if (i - t > lim->uri_bytes)
		return refuse(status, why, 414, "request target too long");
	if (i == n)
		return AP_AGAIN;
	if (i == t)
		return refuse(status, why, 400, "empty request target or extra space");
	if (p[i] != ' ')
		return refuse(status, why, 400, "invalid character in the request target");
	req->target = (struct ap_span){p + t, i - t};

	/* "HTTP/" DIGIT "." DIGIT CRLF, compared as far as it has come. */
	v = ++i;
	for (size_t k = 0; k < 10 && v + k < n; k++) {
		char c = p[v + k];
		bool ok;

		if (k < 5)
			ok = c == version[k];
		else if (k == 5 || k == 7)
			ok = is_digit(c);
		else if (k == 6)
			ok = c == '.';
		else
			ok = c == (k == 8 ? '\r' : '\n');
		if (!ok)
			return refuse(status, why, 400,
			              k == 9 ? "bare CR in the head" : "malformed HTTP version");
	}
	if (n - v < 10)
		return AP_AGAIN;
	if (p[v + 5] != '1' || (p[v + 7] != '0' && p[v + 7] != '1'))
		return refuse(status, why, 505, "HTTP version not supported");
	req->minor = p[v + 7] - '0';
	if (parse_target(req, authority, why) != AP_OK)
		return refuse(status, NULL, 400, NULL);
	return (ssize_t)(v + 10);
}

/* The checks that need the whole head, in this order: length framing (400, then 501 for
 * a coding we cannot decode), Host (400), Expect (417). */
static int check_request(struct ap_http_req *req, const struct fields *f, struct ap_span authority,
                         int *status, const char **why)
{
	bool absolute = authority.p != NULL;

	if (f->ncl > 1)
		return refuse(status, why, 400, "several Content-Length fields");
	if (f->ncl == 1 && (req->content_length = parse_length(f->cl)) < 0)
		return refuse(status, why, 400, "invalid Content-Length");
	if (f->nte > 1)
		return refuse(status, why, 400, "several Transfer-Encoding fields");
	if (f->nte == 1) {
		if (req->minor == 0)
			return refuse(status, why, 400, "Transfer-Encoding in HTTP/1.0");
		if (f->ncl)
			return refuse(status, why, 400,
			              "both Content-Length and Transfer-Encoding");
		if (!ap_span_ieq(f->te, "chunked"))
			return refuse(status, why, 501, "transfer coding other than chunked");
		req->chunked = true;
	}

	if (f->nhost > 1)
		return refuse(status, why, 400, "several Host fields");
	if (f->nhost == 0 && req->minor == 1)
		return refuse(status, why, 400, "no Host field in HTTP/1.1");
	if (f->nhost == 1 && !(absolute && f->host.n == 0) && !valid_host(f->host))
		return refuse(status, why, 400, "invalid Host field");
	if (absolute)
		req->host = authority; /* RFC 9112 3.2.2: the target's authority wins */
	else if (f->nhost)
		req->host = f->host;

	if (f->expect_other)
		return refuse(status, why, 417, "expectation other than 100-continue");
	/* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored. */
	req->expect_continue = f->expect_100 && req->minor == 1;

	if (req->minor == 1)
		req->keep_alive = !f->conn_close;
	else
		req->keep_alive = f->conn_keep_alive && !f->conn_close;
	return AP_OK;
}

/* Early refusals, before the head is complete (so that a garbage stream does not get to
 * send 16 KB first): up to two leading CRLFs, then the request line as far as it has come
 * (a method of tchars, one SP, a visible-ASCII target within uri_bytes, one SP, "HTTP/"
 * DIGIT "." DIGIT CRLF, then the target's form; CONNECT is refused as soon as its SP
 * arrives), then, only over the bytes new since <last_len>, control characters, bare CR
 * or LF and lines starting with white space. Header names and values, and what they
 * mean, are checked once the head is complete.
 * Nothing past head_bytes is ever looked at: a head that has not ended by then is over
 * the limit whatever follows. This also makes the answer independent of how the bytes
 * were cut: a fault past the limit is a 431 whether the head came whole or in pieces. */
int ap_http_parse_request(const char *buf, size_t len, size_t last_len, struct ap_http_req *req,
                          const struct ap_http_limits *lim, int *status, const char **why)
{
	size_t n = len < lim->head_bytes ? len : lim->head_bytes;
	size_t skip = 0, from, end = 0, maxh;
	ssize_t rl, fin;
	struct fields f;
	struct ap_span authority = {NULL, 0};
	int r;

	req->host = (struct ap_span){"", 0};
	req->nheaders = 0;
	req->content_length = -1;
	req->chunked = false;
	req->keep_alive = false;
	req->expect_continue = false;
	req->head_len = 0;

	/* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request
	 * line. We ignore up to two, each a full CRLF (a bare LF is still refused); they
	 * count in head_len so that the caller drains them with the head. */
	while (skip < 4 && n - skip >= 2 && buf[skip] == '\r' && buf[skip + 1] == '\n')
		skip += 2;
	if (n == skip || (skip < 4 && n - skip == 1 && buf[skip] == '\r'))
		goto again;

	rl = parse_request_line(buf + skip, n - skip, lim, req, &authority, status, why);
	if (rl == AP_ERR)
		return AP_ERR;
	if (rl == AP_AGAIN) {
		if (len >= lim->head_bytes && n - skip > 16 && n - skip - 16 > lim->uri_bytes)
			return refuse(status, why, 414, "request line too long");
		goto again;
	}

	/* The end cannot be before the start line's CRLF, nor before where the previous
	 * call stopped looking (its last three bytes may begin the CRLF CRLF). */
	from = skip + (size_t)rl - 2;
	if (last_len > 3 && last_len - 3 > from)
		from = last_len - 3;
	if (from > n)
		from = n;
	r = find_head_end(buf, n, from, &end, why);
	if (r == AP_ERR)
		return refuse(status, NULL, 400, NULL);
	if (r == AP_AGAIN)
		goto again;
	if (end > INT_MAX)
		return refuse(status, why, 431, "request head too large");

	maxh = lim->headers < AP_HTTP_HEADERS_MAX ? lim->headers : AP_HTTP_HEADERS_MAX;
	fin = parse_fields(buf, skip + (size_t)rl, end, req->headers, maxh, &req->nheaders, &f,
	                   status, why);
	if (fin < 0)
		return AP_ERR;
	if (check_request(req, &f, authority, status, why) != AP_OK)
		return AP_ERR;
	req->head_len = (size_t)fin;
	return (int)fin;

again:
	if (len < lim->head_bytes)
		return AP_AGAIN;
	return refuse(status, why, 431, "request head too large");
}

/* ---- response heads ---- */

/* "HTTP/1." DIGIT SP 3DIGIT [SP reason] CRLF at <p, n>, checked as far as it has come.
 * Any HTTP/1.x is taken (RFC 9112 2.3: a higher minor is read as the highest we know);
 * a missing SP after the code ("HTTP/1.1 200\r\n") is accepted since the reason is
 * optional and some servers omit both. The code must be 100-599. Returns the length with
 * the CRLF, AP_AGAIN or AP_ERR. */
static ssize_t parse_status_line(const char *p, size_t n, struct ap_http_resp *resp,
                                 const char **why)
{
	static const char version[] = "HTTP/1.";
	size_t i;

	for (i = 0; i < 13 && i < n; i++) {
		char c = p[i];
		bool ok;

		if (i < 7)
			ok = c == version[i];
		else if (i == 8)
			ok = c == ' ';
		else if (i == 12)
			ok = c == ' ' || c == '\r';
		else
			ok = is_digit(c);
		if (!ok)
			return refuse(NULL, why, 400,
			              i < 8 ? "malformed HTTP version in the response"
			                    : "malformed status line");
	}
	if (n < 13)
		return AP_AGAIN;
	resp->minor = p[7] - '0';
	resp->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	if (resp->status < 100 || resp->status > 599)
		return refuse(NULL, why, 400, "status code out of range");
	for (i = p[12] == ' ' ? 13 : 12;; i++) {
		i = find_ctl(p, i, n);
		if (i == n)
			return AP_AGAIN;
		if (p[i] != '\t')
			break;
	}
	if (p[i] != '\r')
		return refuse(NULL, why, 400, "control character in the reason phrase");
	if (i + 1 == n)
		return AP_AGAIN;
	if (p[i + 1] != '\n')
		return refuse(NULL, why, 400, "bare CR in the head");
	return (ssize_t)(i + 2);
}

/* A response's Transfer-Encoding list: 1 when chunked is the final coding, 0 when it is
 * absent (the body then runs to the close, RFC 9112 6.3), AP_ERR when the list is empty,
 * holds something that is not a coding, or names chunked twice or with parameters. */
static int te_final_chunked(struct ap_span v)
{
	size_t i = 0, codings = 0, chunked = 0;
	bool last = false;

	while (i <= v.n) {
		const char *comma = memchr(v.p + i, ',', v.n - i);
		size_t e = comma ? (size_t)(comma - v.p) : v.n, k = 0;
		struct ap_span el = ap_span_trim((struct ap_span){v.p + i, e - i}), rest;

		i = e + 1;
		if (el.n == 0)
			continue; /* RFC 9110 5.6.1: empty list elements are ignored */
		while (k < el.n && is_tchar(el.p[k]))
			k++;
		rest = ap_span_trim((struct ap_span){el.p + k, el.n - k});
		if (k == 0 || (rest.n && rest.p[0] != ';'))
			return AP_ERR;
		codings++;
		last = ap_span_ieq((struct ap_span){el.p, k}, "chunked");
		if (last && (rest.n || ++chunked > 1))
			return AP_ERR;
	}
	if (codings == 0)
		return AP_ERR;
	return last;
}

/* Early refusals as for requests: the status line as far as it has come, then control
 * characters, bare CR/LF and folding in the new bytes. Duplicate Content-Length fields
 * are refused even when their values agree (RFC 9112 6.3 lets a recipient accept those;
 * an upstream that sends them is broken enough not to be trusted with framing), as are
 * several Transfer-Encoding fields and Transfer-Encoding in an HTTP/1.0 response.
 * As for requests, nothing past <max_head> is looked at. */
int ap_http_parse_response(const char *buf, size_t len, size_t last_len, bool head_request,
                           struct ap_http_resp *resp, size_t max_head, const char **why)
{
	size_t n = len < max_head ? len : max_head, from, end = 0;
	ssize_t sl, fin;
	struct fields f;
	int r, te = 0;

	resp->content_length = -1;
	resp->chunked = resp->close = resp->no_body = resp->until_close = false;
	resp->head_len = 0;
	resp->nheaders = 0;

	if (n == 0)
		goto again;
	sl = parse_status_line(buf, n, resp, why);
	if (sl == AP_ERR)
		return AP_ERR;
	if (sl == AP_AGAIN)
		goto again;
	from = (size_t)sl - 2;
	if (last_len > 3 && last_len - 3 > from)
		from = last_len - 3;
	if (from > n)
		from = n;
	r = find_head_end(buf, n, from, &end, why);
	if (r == AP_ERR)
		return AP_ERR;
	if (r == AP_AGAIN)
		goto again;
	if (end > INT_MAX)
		return refuse(NULL, why, 502, "response head too large");
	fin = parse_fields(buf, (size_t)sl, end, resp->headers, AP_HTTP_HEADERS_MAX,
	                   &resp->nheaders, &f, NULL, why);
	if (fin < 0)
		return AP_ERR;

	if (f.ncl > 1)
		return refuse(NULL, why, 502, "several Content-Length fields");
	if (f.ncl == 1 && (resp->content_length = parse_length(f.cl)) < 0)
		return refuse(NULL, why, 502, "invalid Content-Length");
	if (f.nte > 1)
		return refuse(NULL, why, 502, "several Transfer-Encoding fields");
	if (f.nte == 1) {
		if (resp->minor == 0)
			return refuse(NULL, why, 502, "Transfer-Encoding in HTTP/1.0");
		if (f.ncl)
			return refuse(NULL, why, 502, "both Content-Length and Transfer-Encoding");
		if ((te = te_final_chunked(f.te)) < 0)
			return refuse(NULL, why, 502, "invalid Transfer-Encoding");
	}
	resp->close = f.conn_close || (resp->minor == 0 && !f.conn_keep_alive);

	/* RFC 9112 6.3, in its order. The framing fields describe what follows the head on
	 * the wire: none of them is set when nothing follows. */
	if (head_request || resp->status < 200 || resp->status == 204 || resp->status == 304) {
		resp->no_body = true;
		resp->content_length = -1;
	} else if (te == 1) {
		resp->chunked = true;
	} else if (f.nte || resp->content_length < 0) {
		resp->content_length = -1;
		resp->until_close = true;
		resp->close = true; /* the close is the end of the body: no reuse */
	}
	resp->head_len = (size_t)fin;
	return (int)fin;

again:
	if (len < max_head)
		return AP_AGAIN;
	return refuse(NULL, why, 502, "response head too large");
}

/* ---- the chunked coding ---- */

enum {
	CH_SIZE = 0, /* hex digits of a chunk size (zero-initialised state) */
	CH_EXT,      /* chunk extensions, up to CR */
	CH_SIZE_LF,  /* the LF after a size line */
	CH_DATA,     /* <left> bytes of data */
	CH_DATA_CR,  /* the CRLF after data */
	CH_DATA_LF,
	CH_TR_START, /* the first byte of a trailer line, or the final CRLF */
	CH_TR_NAME,
	CH_TR_VALUE,
	CH_TR_LF,
	CH_FINAL_LF,
	CH_DONE,
	CH_FAILED,
};

static ssize_t chunk_fail(struct ap_chunked *c, const char **why, const char *reason)
{
	c->state = CH_FAILED;
	if (why)
		*why = reason;
	return AP_ERR;
}

/* A state machine over bytes, except for data, which goes to <out> one run at a time. In
 * the trailer section <left> counts its bytes (it has no other use there). Chunk
 * extensions are not parsed, only held to the characters of a header value: they are
 * discarded, and no CR or LF can hide inside one. White space after a size, which
 * RFC 9112 7.1.1 tolerates before a ';' as "BWS", is refused like any other. */
ssize_t ap_chunked_feed(struct ap_chunked *c, const char *in, size_t n, struct ap_buf *out,
                        uint64_t max_body, bool *done, const char **why)
{
	size_t i = 0;

	*done = false;
	if (c->state == CH_DONE) {
		*done = true;
		return 0;
	}
	if (c->state == CH_FAILED)
		return chunk_fail(c, why, "chunked body already refused");
	while (i < n) {
		unsigned char ch = (unsigned char)in[i];
		uint64_t rem;
		int d;

		switch (c->state) {
		case CH_SIZE:
			if ((d = hexval((char)ch)) >= 0) {
				if (c->digits == 16)
					return chunk_fail(c, why, "chunk size over 16 hex digits");
				/* total + left * 16 + d <= max_body, without overflow; checked per
				 * digit so a huge size is refused before its data is awaited. */
				rem = max_body - c->total;
				if ((uint64_t)d > rem || c->left > (rem - (uint64_t)d) / 16)
					return chunk_fail(c, why, AP_HTTP_WHY_TOO_BIG);
				c->left = c->left * 16 + (uint64_t)d;
				c->digits++;
				c->line++;
				i++;
				break;
			}
			if (c->digits == 0)
				return chunk_fail(c, why,
				                  ch == '\n' ? "bare LF in the chunked body"
				                             : "chunk size is not hex");
			if (ch == ';') {
				c->state = CH_EXT;
			} else if (ch == '\r') {
				c->state = CH_SIZE_LF;
			} else {
				return chunk_fail(c, why,
				                  ch == '\n'
				                          ? "bare LF in the chunked body"
				                          : "invalid character after a chunk size");
			}
			c->line++;
			i++;
			break;
		case CH_EXT:
			if (ch == '\r') {
				c->state = CH_SIZE_LF;
			} else if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
				return chunk_fail(
				        c, why,
				        ch == '\n' ? "bare LF in the chunked body"
				                   : "control character in a chunk extension");
			} else if (++c->line > CHUNK_LINE) {
				return chunk_fail(c, why, "chunk size line too long");
			}
			i++;
			break;
		case CH_SIZE_LF:
			if (ch != '\n')
				return chunk_fail(c, why, "bare CR in the chunked body");
			c->line = 0;
			c->digits = 0;
			c->state = c->left ? CH_DATA : CH_TR_START; /* <left> 0: trailer bytes */
			i++;
			break;
		case CH_DATA: {
			size_t take = n - i;

			if ((uint64_t)take > c->left)
				take = (size_t)c->left;
			if (out && ap_buf_add(out, in + i, take) != AP_OK)
				return chunk_fail(c, why, "out of memory");
			c->left -= take;
			c->total += take;
			i += take;
			if (c->left == 0)
				c->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (ch != '\r')
				return chunk_fail(c, why, "no CRLF after chunk data");
			c->state = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (ch != '\n')
				return chunk_fail(c, why, "no CRLF after chunk data");
			c->state = CH_SIZE;
			i++;
			break;
		case CH_TR_START:
		case CH_TR_NAME:
		case CH_TR_VALUE:
		case CH_TR_LF:
			if (++c->left > TRAILERS_MAX)
				return chunk_fail(c, why, "trailer section too large");
			if (++c->line > CHUNK_LINE + 2)
				return chunk_fail(c, why, "trailer line too long");
			if (c->state == CH_TR_START) {
				if (ch == '\r')
					c->state = CH_FINAL_LF;
				else if (is_tchar((char)ch))
					c->state = CH_TR_NAME;
				else
					return chunk_fail(c, why, "invalid trailer line");
			} else if (c->state == CH_TR_NAME) {
				if (ch == ':')
					c->state = CH_TR_VALUE;
				else if (!is_tchar((char)ch))
					return chunk_fail(c, why,
					                  "invalid character in a trailer name");
			} else if (c->state == CH_TR_VALUE) {
				if (ch == '\r')
					c->state = CH_TR_LF;
				else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
					return chunk_fail(
					        c, why,
					        ch == '\n' ? "bare LF in the chunked body"
					                   : "control character in a trailer");
			} else {
				if (ch != '\n')
					return chunk_fail(c, why, "bare CR in the chunked body");
				c->state = CH_TR_START;
				c->line = 0;
			}
			i++;
			break;
		case CH_FINAL_LF:
			if (ch != '\n')
				return chunk_fail(c, why, "bare CR in the chunked body");
			c->state = CH_DONE;
			*done = true;
			return (ssize_t)(i + 1);
		default:
			return chunk_fail(c, why, "chunked decoder in an unknown state");
		}
	}
	return (ssize_t)i;
}

/* ---- lookups ---- */

int ap_http_find(const struct ap_http_header *h, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (ap_span_ieq(h[i].name, name))
			return i > INT_MAX ? -1 : (int)i;
	return -1;
}

bool ap_http_list_has(struct ap_span v, const char *token)
{
	size_t i = 0;

	if (v.n == 0)
		return false;
	while (i <= v.n) {
		const char *comma = v.n > i ? memchr(v.p + i, ',', v.n - i) : NULL;
		size_t e = comma ? (size_t)(comma - v.p) : v.n;

		if (ap_span_ieq(ap_span_trim((struct ap_span){v.p + i, e - i}), token))
			return true;
		i = e + 1;
	}
	return false;
}
