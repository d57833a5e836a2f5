/* Tests for http1.c: a corpus of real-world heads checked field by field and cut at every
 * byte against a guard page; a table of hostile heads (every smuggling shape http1.h
 * names) with the status each must get, at every cut too; the response framing table;
 * the chunked decoder at every split, on hostile sizes, and against a random encoder. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http1.h"

/* ---- helpers ---- */

/* xorshift64*: fixed seeds make every failure reproducible. */
static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
	rng_state = s ? s : 1;
}

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rnd(size_t n)
{
	return n ? (size_t)(rng() % n) : 0;
}

/* One region per test process whose last readable byte is followed by a PROT_NONE page:
 * at() copies an input so that it ends there, and reading one byte past it faults. */
#define GUARD_CAP (256 * 1024)
static char *guard_base;
static size_t guard_size;

static const char *at(const void *p, size_t n)
{
	char *dst;

	if (!guard_base) {
		size_t pg = (size_t)sysconf(_SC_PAGESIZE);

		guard_size = (GUARD_CAP + pg - 1) / pg * pg;
		guard_base = mmap(NULL, guard_size + pg, PROT_READ | PROT_WRITE,
		                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert(guard_base != MAP_FAILED);
		cr_assert_eq(mprotect(guard_base + guard_size, pg, PROT_NONE), 0);
	}
	cr_assert(n <= guard_size);
	dst = guard_base + guard_size - n;
	if (n)
		memmove(dst, p, n);
	return dst;
}

static const struct ap_http_limits lim_std = {
        .head_bytes = 16384,
        .uri_bytes = 8192,
        .headers = 100,
};

static void add_str(struct ap_buf *b, const char *s)
{
	cr_assert_eq(ap_buf_add(b, s, strlen(s)), AP_OK);
}

static void add_span(struct ap_buf *b, const char *tag, struct ap_span s)
{
	add_str(b, tag);
	add_str(b, "=[");
	cr_assert_eq(ap_buf_add(b, s.p, s.n), AP_OK);
	add_str(b, "] ");
}

static void add_headers(struct ap_buf *b, const struct ap_http_header *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		add_span(b, "n", h[i].name);
		add_span(b, "v", h[i].value);
	}
}

/* A request as text, every field, so that two parses compare with one strcmp and a
 * failure shows both. Spans are copied out: the guard buffer is reused. Caller frees. */
static char *req_text(const struct ap_http_req *r)
{
	struct ap_buf b = {0};
	char num[160];

	add_span(&b, "method", r->method);
	add_span(&b, "target", r->target);
	add_span(&b, "path", r->path);
	add_span(&b, "query", r->query);
	add_span(&b, "host", r->host);
	snprintf(num, sizeof(num), "minor=%d cl=%lld chunked=%d ka=%d ec=%d len=%zu n=%zu ",
	         r->minor, (long long)r->content_length, r->chunked, r->keep_alive,
	         r->expect_continue, r->head_len, r->nheaders);
	add_str(&b, num);
	add_headers(&b, r->headers, r->nheaders);
	cr_assert_eq(ap_buf_addc(&b, 0), AP_OK);
	return b.p;
}

static char *resp_text(const struct ap_http_resp *r)
{
	struct ap_buf b = {0};
	char num[160];

	snprintf(num, sizeof(num),
	         "st=%d minor=%d cl=%lld ch=%d close=%d nob=%d uc=%d len=%zu n=%zu ", r->status,
	         r->minor, (long long)r->content_length, r->chunked, r->close, r->no_body,
	         r->until_close, r->head_len, r->nheaders);
	add_str(&b, num);
	add_headers(&b, r->headers, r->nheaders);
	cr_assert_eq(ap_buf_addc(&b, 0), AP_OK);
	return b.p;
}

static struct ap_http_req req;   /* 6 KB: not on the stack */
static struct ap_http_resp resp; /* idem */

/* One call with the input placed against the guard page. */
static int preq(const char *s, size_t n, size_t last, const struct ap_http_limits *lim, int *status,
                const char **why)
{
	*status = 0;
	*why = NULL;
	return ap_http_parse_request(at(s, n), n, last, &req, lim, status, why);
}

static int presp(const char *s, size_t n, size_t last, bool head, size_t max, const char **why)
{
	*why = NULL;
	return ap_http_parse_response(at(s, n), n, last, head, &resp, max, why);
}

#define S(lit) lit, sizeof(lit) - 1

static bool span_is(struct ap_span s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static void assert_span(struct ap_span s, const char *lit, const char *what)
{
	cr_assert(span_is(s, lit), "%s: got [%.*s], want [%s]", what, (int)s.n, s.p, lit);
}

/* ---- request heads: the valid corpus ---- */

static const char *const good_heads[] = {
        /* curl */
        "GET /v1/items?id=7&x=%20y HTTP/1.1\r\nHost: api.example.com\r\n"
        "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        /* wrk */
        "GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
        /* Android okhttp */
        "POST /api/v2/events HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n"
        "Content-Length: 123\r\nHost: events.example.net\r\nConnection: Keep-Alive\r\n"
        "Accept-Encoding: gzip\r\nUser-Agent: okhttp/4.12.0\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: u.example\r\nTransfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\n\r\n",
        "PUT /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \t\r\n\r\n",
        "GET http://Example.COM:8080/a/b?x=1&y=2 HTTP/1.1\r\nHost: other.example\r\n\r\n",
        "GET HTTPS://example.com?q HTTP/1.1\r\nHost:\r\n\r\n",
        "GET http://[2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: [::1]:443\r\nX-Empty:\r\nX-Tab:\t a\tb \t\r\n"
        "X-Utf8: caf\xc3\xa9 \xff\r\nContent-Length: 0000\r\nConnection: TE, close\r\n\r\n",
        "DELETE /a/b/c?d HTTP/1.1\r\nHost: 10.0.0.1\r\nContent-Length:  42 \r\n"
        "Cookie: a=b; c=d\r\n!#$%&'*+-.^_`|~09azAZ: token name\r\n\r\n",
        "M-SEARCH /x?? HTTP/1.1\r\nHost: h.example.\r\nExpect: 100-Continue\r\n\r\n",
};

/* Every cut: byte by byte with last_len, then in two pieces at each k; AP_AGAIN before the
 * end, and at the end the same request as one call. With trailing bytes after the head,
 * the same request too. */
static void every_split(const char *s, size_t n, const struct ap_http_limits *lim)
{
	int st, r;
	const char *why;
	char *whole, *got;
	char *more;

	r = preq(s, n, 0, lim, &st, &why);
	cr_assert_eq(r, (int)n, "one call: %d (%d %s) for %.*s", r, st, why ? why : "", (int)n, s);
	whole = req_text(&req);

	for (size_t k = 1; k < n; k++) {
		r = preq(s, k, k - 1, lim, &st, &why);
		cr_assert_eq(r, AP_AGAIN, "byte by byte at %zu/%zu: %d (%s)", k, n, r,
		             why ? why : "");
	}
	r = preq(s, n, n - 1, lim, &st, &why);
	cr_assert_eq(r, (int)n);
	got = req_text(&req);
	cr_assert_str_eq(got, whole);
	free(got);

	for (size_t k = 1; k < n; k++) {
		cr_assert_eq(preq(s, k, 0, lim, &st, &why), AP_AGAIN, "at %zu", k);
		r = preq(s, n, k, lim, &st, &why);
		cr_assert_eq(r, (int)n, "resumed at %zu: %d", k, r);
		got = req_text(&req);
		cr_assert_str_eq(got, whole, "resumed at %zu", k);
		free(got);
	}

	more = malloc(n + 8);
	memcpy(more, s, n);
	memcpy(more + n, "\r\n\r\nBODY", 8);
	r = preq(more, n + 8, 0, lim, &st, &why);
	cr_assert_eq(r, (int)n);
	got = req_text(&req);
	cr_assert_str_eq(got, whole);
	free(got);
	free(more);
	free(whole);
}

Test(request, corpus_every_split)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(good_heads); i++)
		every_split(good_heads[i], strlen(good_heads[i]), &lim_std);
}

Test(request, curl_fields)
{
	const char *s = good_heads[0];
	int st;
	const char *why;

	cr_assert_eq(preq(s, strlen(s), 0, &lim_std, &st, &why), (int)strlen(s));
	assert_span(req.method, "GET", "method");
	assert_span(req.target, "/v1/items?id=7&x=%20y", "target");
	assert_span(req.path, "/v1/items", "path");
	assert_span(req.query, "id=7&x=%20y", "query");
	assert_span(req.host, "api.example.com", "host");
	cr_assert_eq(req.minor, 1);
	cr_assert_eq(req.nheaders, 3);
	assert_span(req.headers[1].name, "User-Agent", "name");
	assert_span(req.headers[1].value, "curl/7.88.1", "value");
	assert_span(req.headers[2].value, "*/*", "value");
	cr_assert_eq(req.content_length, -1);
	cr_assert(!req.chunked);
	cr_assert(req.keep_alive);
	cr_assert(!req.expect_continue);
	cr_assert_eq(req.head_len, strlen(s));
}

Test(request, okhttp_post_fields)
{
	const char *s = good_heads[2];
	int st;
	const char *why;

	cr_assert_eq(preq(s, strlen(s), 0, &lim_std, &st, &why), (int)strlen(s));
	assert_span(req.method, "POST", "method");
	assert_span(req.path, "/api/v2/events", "path");
	assert_span(req.query, "", "query");
	assert_span(req.host, "events.example.net", "host");
	cr_assert_eq(req.content_length, 123);
	cr_assert(req.keep_alive);
	cr_assert_eq(req.nheaders, 6);
	assert_span(req.headers[0].value, "application/json; charset=utf-8", "ct");
	cr_assert_eq(ap_http_find(req.headers, req.nheaders, "user-agent"), 5);
	cr_assert_eq(ap_http_find(req.headers, req.nheaders, "cookie"), -1);
}

Test(request, chunked_expect_fields)
{
	int st;
	const char *why;

	cr_assert_gt(preq(good_heads[3], strlen(good_heads[3]), 0, &lim_std, &st, &why), 0);
	cr_assert(req.chunked);
	cr_assert_eq(req.content_length, -1);
	cr_assert(req.expect_continue);
	cr_assert_gt(preq(good_heads[4], strlen(good_heads[4]), 0, &lim_std, &st, &why), 0);
	cr_assert(req.chunked, "TE value is OWS-trimmed and case-insensitive");
	assert_span(req.headers[1].value, "Chunked", "trimmed value");
	cr_assert_gt(preq(good_heads[15], strlen(good_heads[15]), 0, &lim_std, &st, &why), 0);
	cr_assert(req.expect_continue);
	assert_span(req.method, "M-SEARCH", "method");
	assert_span(req.path, "/x", "path");
	assert_span(req.query, "?", "query");
}

Test(request, absolute_form_fields)
{
	int st;
	const char *why;

	cr_assert_gt(preq(good_heads[5], strlen(good_heads[5]), 0, &lim_std, &st, &why), 0);
	assert_span(req.target, "http://Example.COM:8080/a/b?x=1&y=2", "target");
	assert_span(req.host, "Example.COM:8080", "host from the authority, Host ignored");
	assert_span(req.path, "/a/b", "path");
	assert_span(req.query, "x=1&y=2", "query");

	cr_assert_gt(preq(good_heads[6], strlen(good_heads[6]), 0, &lim_std, &st, &why), 0);
	assert_span(req.host, "example.com", "host");
	assert_span(req.path, "/", "empty path");
	assert_span(req.query, "q", "query");

	cr_assert_gt(preq(good_heads[7], strlen(good_heads[7]), 0, &lim_std, &st, &why), 0);
	assert_span(req.host, "[2001:db8::1]:443", "host");
	assert_span(req.path, "/", "path");
	assert_span(req.query, "", "query");
}

Test(request, http10_and_keep_alive)
{
	int st;
	const char *why;
	const char *close11 = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n";
	const char *ka10close =
	        "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
	const char *expect10 = "GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n";

	cr_assert_gt(preq(good_heads[8], strlen(good_heads[8]), 0, &lim_std, &st, &why), 0);
	cr_assert_eq(req.minor, 0);
	cr_assert(req.keep_alive);
	assert_span(req.host, "", "no host in 1.0");
	cr_assert_gt(preq(good_heads[9], strlen(good_heads[9]), 0, &lim_std, &st, &why), 0);
	cr_assert(!req.keep_alive);
	cr_assert_eq(req.nheaders, 0);
	cr_assert_gt(preq(close11, strlen(close11), 0, &lim_std, &st, &why), 0);
	cr_assert(!req.keep_alive);
	cr_assert_gt(preq(ka10close, strlen(ka10close), 0, &lim_std, &st, &why), 0);
	cr_assert(!req.keep_alive);
	cr_assert_gt(preq(expect10, strlen(expect10), 0, &lim_std, &st, &why), 0);
	cr_assert(!req.expect_continue, "100-continue is ignored in HTTP/1.0");
}

Test(request, odd_but_valid_fields)
{
	int st;
	const char *why;
	const char *s = good_heads[13];

	cr_assert_gt(preq(S("OPTIONS * HTTP/1.1\r\nHost: e\r\n\r\n"), 0, &lim_std, &st, &why), 0);
	assert_span(req.path, "*", "asterisk");
	cr_assert_eq(preq(good_heads[12], strlen(good_heads[12]), 0, &lim_std, &st, &why),
	             (int)strlen(good_heads[12]), "leading CRLFs are part of head_len");
	assert_span(req.method, "GET", "method after CRLFs");

	cr_assert_eq(preq(s, strlen(s), 0, &lim_std, &st, &why), (int)strlen(s));
	assert_span(req.host, "[::1]:443", "host");
	assert_span(req.headers[1].value, "", "empty value");
	assert_span(req.headers[2].value, "a\tb", "tabs kept inside, trimmed outside");
	assert_span(req.headers[3].value, "caf\xc3\xa9 \xff", "obs-text in a value");
	cr_assert_eq(req.content_length, 0);
	cr_assert(!req.keep_alive);

	s = good_heads[14];
	cr_assert_eq(preq(s, strlen(s), 0, &lim_std, &st, &why), (int)strlen(s));
	cr_assert_eq(req.content_length, 42);
	assert_span(req.headers[3].name, "!#$%&'*+-.^_`|~09azAZ", "every tchar");
}

/* 100 headers (the limit), then one more. */
static size_t many_headers(char *o, size_t cap, size_t count)
{
	size_t w = (size_t)snprintf(o, cap, "GET /many HTTP/1.1\r\nHost: m\r\n");

	for (size_t i = 1; i < count; i++)
		w += (size_t)snprintf(o + w, cap - w, "X-H%zu: value-%zu\r\n", i, i);
	w += (size_t)snprintf(o + w, cap - w, "\r\n");
	return w;
}

Test(request, many_headers)
{
	static char s[8192];
	size_t n = many_headers(s, sizeof(s), 100);
	int st;
	const char *why;

	every_split(s, n, &lim_std);
	cr_assert_eq(req.nheaders, 100);
	assert_span(req.headers[99].name, "X-H99", "last name");
	assert_span(req.headers[99].value, "value-99", "last value");

	n = many_headers(s, sizeof(s), 101);
	cr_assert_eq(preq(s, n, 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(st, 431);

	/* The configured limit is capped at AP_HTTP_HEADERS_MAX. */
	{
		struct ap_http_limits big = {
		        .head_bytes = 65536, .uri_bytes = 100, .headers = 9999};
		static char s2[65536];

		n = many_headers(s2, sizeof(s2), AP_HTTP_HEADERS_MAX);
		cr_assert_eq(preq(s2, n, 0, &big, &st, &why), (int)n);
		n = many_headers(s2, sizeof(s2), AP_HTTP_HEADERS_MAX + 1);
		cr_assert_eq(preq(s2, n, 0, &big, &st, &why), AP_ERR);
		cr_assert_eq(st, 431);
	}
}

Test(request, target_at_the_uri_limit)
{
	struct ap_http_limits lim = {.head_bytes = 4096, .uri_bytes = 64, .headers = 10};
	char s[512];
	int n, st;
	const char *why;

	n = snprintf(s, sizeof(s), "GET /%063d HTTP/1.1\r\nHost: a\r\n\r\n", 7);
	every_split(s, (size_t)n, &lim);
	n = snprintf(s, sizeof(s), "GET /%064d HTTP/1.1\r\nHost: a\r\n\r\n", 7);
	cr_assert_eq(preq(s, (size_t)n, 0, &lim, &st, &why), AP_ERR);
	cr_assert_eq(st, 414);
}

/* ---- request heads: hostile ---- */

struct bad {
	const char *head;
	size_t n; /* 0: strlen */
	int status;
};

#define B(lit, st)                                                                                 \
	{                                                                                          \
		lit, sizeof(lit) - 1, st                                                           \
	}
#define H11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define P11 "POST / HTTP/1.1\r\nHost: a\r\n"

static const struct bad bad_heads[] = {
        /* framing: the smuggling shapes */
        B(P11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        B(P11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        B(P11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
        B(P11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        B(P11 "Content-Length: +5\r\n\r\n", 400),
        B(P11 "Content-Length: -1\r\n\r\n", 400),
        B(P11 "Content-Length: 5 5\r\n\r\n", 400),
        B(P11 "Content-Length: 0x5\r\n\r\n", 400),
        B(P11 "Content-Length: 1,1\r\n\r\n", 400),
        B(P11 "Content-Length: 1, 1\r\n\r\n", 400),
        B(P11 "Content-Length: 5.0\r\n\r\n", 400),
        B(P11 "Content-Length:\r\n\r\n", 400),
        B(P11 "Content-Length: 1234567890123456789\r\n\r\n", 400),
        B(P11 "Content-Length: \"5\"\r\n\r\n", 400),
        B(P11 "Transfer-Encoding: xchunked\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: chunked, identity\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: chunked,\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: identity\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: \"chunked\"\r\n\r\n", 501),
        B(P11 "Transfer-Encoding:\r\n\r\n", 501),
        B(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        B("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        B(P11 "Transfer-Encoding : chunked\r\n\r\n", 400),
        B(P11 " Transfer-Encoding: chunked\r\n\r\n", 400),
        B(P11 "Transfer-Encoding:\x0b"
              "chunked\r\n\r\n",
          400),
        B(P11 "Content-Length\t: 5\r\n\r\n", 400),
        /* line structure */
        B(H11 "X: a\r\n b\r\n\r\n", 400),
        B(H11 "X: a\r\n\tb\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        B("GET / HTTP/1.1\nHost: a\n\n", 400),
        B("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
        B(H11 "X: b\n\r\n", 400),
        B(H11 "X: b\r\n\n", 400),
        B("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
        B(H11 "X: b\r\r\n\r\n", 400),
        B(H11 "\r\r\n", 400),
        B("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
        B(H11 "X: a\0b\r\n\r\n", 400),
        B(H11 "X: a\x01\r\n\r\n", 400),
        B(H11 "X: a\x7f\r\n\r\n", 400),
        B(H11 "X\0: a\r\n\r\n", 400),
        B(H11 "X : a\r\n\r\n", 400),
        B(H11 "X\t: a\r\n\r\n", 400),
        B(H11 "X@Y: a\r\n\r\n", 400),
        B(H11 "X\x80: a\r\n\r\n", 400),
        B(H11 "\xc3\xa9: a\r\n\r\n", 400),
        B(H11 ": x\r\n\r\n", 400),
        B(H11 "X(Y): a\r\n\r\n", 400),
        B(H11 "NoColon\r\n\r\n", 400),
        B(H11 "X:y\r\nZ\r\n\r\n", 400),
        /* Host */
        B("GET / HTTP/1.1\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
        B("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400),
        B("GET / HTTP/1.1\r\nHost: a%2eb\r\n\r\n", 400),
        B("GET http://a/ HTTP/1.1\r\n\r\n", 400),
        B("GET http://a/ HTTP/1.1\r\nHost: b b\r\n\r\n", 400),
        /* request line */
        B("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        B("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        B("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        B("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        B("GET / HTTP/2\r\nHost: a\r\n\r\n", 400),
        B("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        B("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        B("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        B("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        /* targets */
        B("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET http://a/#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("options * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET http://a:b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        B("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        /* methods and expectations */
        B("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        B(H11 "Expect: foo\r\n\r\n", 417),
        B(H11 "Expect: 100-continue, foo\r\n\r\n", 417),
        B(H11 "Expect: 100-continue\r\nExpect: foo\r\n\r\n", 417),
        B(H11 "Expect:\r\n\r\n", 417),
};

/* One call, then byte by byte and in two pieces: refused with the same status at the
 * first refusal and AP_AGAIN before it, never accepted. */
static void check_bad(const struct bad *b, const struct ap_http_limits *lim)
{
	int st, r;
	const char *why;
	size_t n = b->n;

	r = preq(b->head, n, 0, lim, &st, &why);
	cr_assert_eq(r, AP_ERR, "[%.*s] accepted (%d)", (int)n, b->head, r);
	cr_assert_eq(st, b->status, "[%.*s]: %d (%s), want %d", (int)n, b->head, st, why,
	             b->status);
	cr_assert(why && *why);
	for (size_t k = 1; k <= n; k++) {
		r = preq(b->head, k, k - 1, lim, &st, &why);
		if (r == AP_ERR) {
			cr_assert_eq(st, b->status, "[%.*s] at %zu: %d (%s)", (int)n, b->head, k,
			             st, why);
			break;
		}
		cr_assert_eq(r, AP_AGAIN, "[%.*s] at %zu: %d", (int)n, b->head, k, r);
		cr_assert(k < n, "[%.*s] byte by byte never refused", (int)n, b->head);
	}
	for (size_t k = 1; k < n; k++) {
		r = preq(b->head, k, 0, lim, &st, &why);
		if (r == AP_ERR) {
			cr_assert_eq(st, b->status);
			continue;
		}
		cr_assert_eq(r, AP_AGAIN);
		r = preq(b->head, n, k, lim, &st, &why);
		cr_assert_eq(r, AP_ERR, "[%.*s] resumed at %zu: %d", (int)n, b->head, k, r);
		cr_assert_eq(st, b->status);
	}
}

Test(request, hostile_table)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(bad_heads); i++)
		check_bad(&bad_heads[i], &lim_std);
}

Test(request, trailing_ows_in_te_is_not_a_coding)
{
	int st;
	const char *why;

	cr_assert_gt(preq(S(P11 "Transfer-Encoding: chunked   \r\n\r\n"), 0, &lim_std, &st, &why),
	             0);
	cr_assert(req.chunked);
	cr_assert_gt(preq(S(P11 "Transfer-Encoding: chunked\t\r\n\r\n"), 0, &lim_std, &st, &why),
	             0);
	cr_assert(req.chunked);
	cr_assert_gt(preq(S(P11 "Content-Length: \t7\t \r\n\r\n"), 0, &lim_std, &st, &why), 0);
	cr_assert_eq(req.content_length, 7, "OWS around a value is not part of it");
	cr_assert_gt(
	        preq(S(P11 "Content-Length: 123456789012345678\r\n\r\n"), 0, &lim_std, &st, &why),
	        0);
	cr_assert_eq(req.content_length, 123456789012345678LL);
}

/* Garbage is refused at once, not after head_bytes. */
Test(request, early_refusal)
{
	int st;
	const char *why;
	char big[20000];

	cr_assert_eq(preq(S("\x16"), 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(st, 400);
	cr_assert_eq(preq(S("GET /x HTTP/1.1\r\nHost: a\r\nX: \x01"), 0, &lim_std, &st, &why),
	             AP_ERR);
	cr_assert_eq(preq(S("GET /x HTTP/1.1\r\nHost: a\r\n X"), 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(preq(S("GET /x HTTP/1.1\r\nHost: a\nX"), 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(preq(S("GET /x HTTP/1.3\r\n"), 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(st, 505);
	cr_assert_eq(preq(S("CONNECT "), 0, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(st, 405);
	cr_assert_eq(preq(S("GET /#"), 0, &lim_std, &st, &why), AP_AGAIN,
	             "the form is judged when the line is whole");
	cr_assert_eq(preq(S("GET /# HTTP/1.1\r\n"), 0, &lim_std, &st, &why), AP_ERR);

	/* A target growing past uri_bytes: 414 as soon as it is, long before head_bytes. */
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', sizeof(big) - 5);
	cr_assert_eq(preq(big, 8196, 0, &lim_std, &st, &why), AP_AGAIN);
	cr_assert_eq(preq(big, 8197, 8196, &lim_std, &st, &why), AP_ERR);
	cr_assert_eq(st, 414);
}

Test(request, head_over_the_limit)
{
	struct ap_http_limits lim = {.head_bytes = 1024, .uri_bytes = 256, .headers = 100};
	static char s[4096];
	size_t n;
	int st, r;
	const char *why;

	/* A complete head one byte over: 431; exactly at the limit: accepted. */
	n = (size_t)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
	                     1024 - 31, 0);
	cr_assert_eq(n, 1025);
	cr_assert_eq(preq(s, n, 0, &lim, &st, &why), AP_ERR);
	cr_assert_eq(st, 431);
	n = (size_t)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
	                     1024 - 32, 0);
	cr_assert_eq(n, 1024);
	cr_assert_eq(preq(s, n, 0, &lim, &st, &why), 1024);
	every_split(s, n, &lim);

	/* A head that never ends: AP_AGAIN up to the limit, 431 there. */
	n = (size_t)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\n");
	while (n < 2000)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "X-Filler: 0123456789\r\n");
	for (size_t k = 1; k <= n; k++) {
		r = preq(s, k, k - 1, &lim, &st, &why);
		if (k < 1024) {
			cr_assert_eq(r, AP_AGAIN, "at %zu", k);
		} else {
			cr_assert_eq(r, AP_ERR, "at %zu", k);
			cr_assert_eq(st, 431);
			break;
		}
	}
	/* A fault past the limit is a 431 however the bytes come. */
	s[1500] = '\n';
	cr_assert_eq(preq(s, n, 0, &lim, &st, &why), AP_ERR);
	cr_assert_eq(st, 431);
}

Test(request, request_line_over_the_limit)
{
	struct ap_http_limits lim = {.head_bytes = 128, .uri_bytes = 100, .headers = 10};
	struct ap_http_limits lim2 = {.head_bytes = 64, .uri_bytes = 100, .headers = 10};
	char s[512];
	int st;
	const char *why;

	memcpy(s, "GET /", 5);
	memset(s + 5, 'a', sizeof(s) - 5);
	/* The target is over uri_bytes: 414 at its 101st byte. */
	cr_assert_eq(preq(s, 104, 0, &lim, &st, &why), AP_AGAIN);
	cr_assert_eq(preq(s, 105, 0, &lim, &st, &why), AP_ERR);
	cr_assert_eq(st, 414);
	/* head_bytes reached before the line ended and within uri_bytes + 16: 431. */
	cr_assert_eq(preq(s, 64, 0, &lim2, &st, &why), AP_ERR);
	cr_assert_eq(st, 431);
	/* head_bytes reached in a request line longer than uri_bytes + 16 whose target is
	 * still within uri_bytes (a long method): 414 too. */
	{
		struct ap_http_limits lim3 = {.head_bytes = 40, .uri_bytes = 20, .headers = 10};
		const char l[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ /aaaaaaaaaaaaaaaaaa";

		cr_assert_eq(preq(l, 39, 0, &lim3, &st, &why), AP_AGAIN);
		cr_assert_eq(preq(l, 40, 0, &lim3, &st, &why), AP_ERR);
		cr_assert_eq(st, 414);
	}
	/* A method too long to be one. */
	memset(s, 'A', 40);
	cr_assert_eq(preq(s, 32, 0, &lim, &st, &why), AP_AGAIN);
	cr_assert_eq(preq(s, 33, 0, &lim, &st, &why), AP_ERR);
	cr_assert_eq(st, 400);
}

/* A caller that passes a last_len past the real end gets a late answer, never a head that
 * includes what follows it: the fields are walked from the start. */
Test(request, wrong_last_len_cannot_merge_heads)
{
	const char two[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n";
	int st;
	const char *why;
	int r = preq(two, sizeof(two) - 1, 30, &lim_std, &st, &why);

	cr_assert(r == 28 || r == AP_AGAIN, "%d", r);
	if (r == 28)
		assert_span(req.host, "a", "first head");
}

/* ---- response heads ---- */

struct resp_case {
	const char *head;
	bool head_request;
	int status;
	int64_t cl;
	bool chunked, close, no_body, until_close;
};

static const struct resp_case resp_cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, 200, 5, 0, 0, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 200, 0, 0, 0, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 200, -1, 1, 0, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, 200, -1, 1, 0, 0, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,, Chunked \r\n\r\n", false, 200, -1, 1, 0, 0,
         0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 200, -1, 0, 1, 0, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, 200, -1, 0, 1, 0, 1},
        {"HTTP/1.1 200 OK\r\n\r\n", false, 200, -1, 0, 1, 0, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true, 200, -1, 0, 0, 1, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 200, -1, 0, 0, 1, 0},
        {"HTTP/1.1 204 No Content\r\n\r\n", false, 204, -1, 0, 0, 1, 0},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", false, 304, -1, 0, 0, 1, 0},
        {"HTTP/1.1 100 Continue\r\n\r\n", false, 100, -1, 0, 0, 1, 0},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", false, 101, -1, 0, 0, 1, 0},
        {"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", false, 103, -1, 0, 0, 1, 0},
        {"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n", false, 200, 2, 0, 0, 0, 0},
        {"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n", false, 200, 2, 0, 0, 0, 0},
        {"HTTP/1.1 599 Caf\xc3\xa9\tok\r\nContent-Length: 2\r\n\r\n", false, 599, 2, 0, 0, 0, 0},
        {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false, 200, 3, 0, 1, 0, 0},
        {"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\n", false, 200, 3, 0,
         0, 0, 0},
        {"HTTP/1.0 200 OK\r\n\r\n", false, 200, -1, 0, 1, 0, 1},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n", false, 200, 3, 0, 1,
         0, 0},
        {"HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nTransfer-Encoding: chunked\r\n\r\n",
         false, 200, -1, 1, 1, 0, 0},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Empty:\r\n\r\n", false, 404, 9, 0, 0, 0,
         0},
        {"HTTP/1.2 200 OK\r\nContent-Length: 1\r\n\r\n", false, 200, 1, 0, 0, 0, 0},
};

Test(response, framing_table_every_split)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(resp_cases); i++) {
		const struct resp_case *c = &resp_cases[i];
		size_t n = strlen(c->head);
		const char *why;
		char *whole, *got;
		int r = presp(c->head, n, 0, c->head_request, 16384, &why);

		cr_assert_eq(r, (int)n, "[%s]: %d (%s)", c->head, r, why ? why : "");
		cr_assert_eq(resp.status, c->status, "[%s]", c->head);
		cr_assert_eq(resp.content_length, c->cl, "[%s] cl %lld", c->head,
		             (long long)resp.content_length);
		cr_assert_eq(resp.chunked, c->chunked, "[%s] chunked", c->head);
		cr_assert_eq(resp.close, c->close, "[%s] close", c->head);
		cr_assert_eq(resp.no_body, c->no_body, "[%s] no_body", c->head);
		cr_assert_eq(resp.until_close, c->until_close, "[%s] until_close", c->head);
		cr_assert_eq(resp.head_len, n);
		whole = resp_text(&resp);
		for (size_t k = 1; k < n; k++) {
			r = presp(c->head, k, k - 1, c->head_request, 16384, &why);
			cr_assert_eq(r, AP_AGAIN, "[%s] at %zu: %d", c->head, k, r);
		}
		cr_assert_eq(presp(c->head, n, n - 1, c->head_request, 16384, &why), (int)n);
		got = resp_text(&resp);
		cr_assert_str_eq(got, whole);
		free(got);
		for (size_t k = 1; k < n; k++) {
			cr_assert_eq(presp(c->head, k, 0, c->head_request, 16384, &why), AP_AGAIN);
			cr_assert_eq(presp(c->head, n, k, c->head_request, 16384, &why), (int)n);
			got = resp_text(&resp);
			cr_assert_str_eq(got, whole);
			free(got);
		}
		free(whole);
	}
}

Test(response, fields)
{
	const char *why;
	const char s[] = "HTTP/1.1 201 Created\r\nLocation: /x/1\r\nSet-Cookie: a=b \r\n\r\nBODY";

	cr_assert_eq(presp(s, sizeof(s) - 1, 0, false, 4096, &why), (int)sizeof(s) - 5);
	cr_assert_eq(resp.minor, 1);
	cr_assert_eq(resp.nheaders, 2);
	assert_span(resp.headers[0].name, "Location", "name");
	assert_span(resp.headers[1].value, "a=b", "value");
}

/* A 1xx head is returned alone; the final head is parsed from where it ended. */
Test(response, interim_then_final)
{
	const char s[] =
	        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	const char *why;
	int r = presp(s, sizeof(s) - 1, 0, false, 4096, &why);

	cr_assert_eq(r, 25);
	cr_assert(resp.no_body);
	cr_assert_eq(presp(s + r, sizeof(s) - 1 - (size_t)r, 0, false, 4096, &why),
	             (int)sizeof(s) - 1 - r - 2);
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.content_length, 2);
}

static const char *const bad_resps[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 099 X\r\n\r\n",
        "HTTP/1.1 600 X\r\n\r\n",
        "HTTP/1.1 2000 X\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\x80: x\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
};

Test(response, hostile)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(bad_resps); i++) {
		const char *s = bad_resps[i];
		size_t n = strlen(s);
		const char *why;
		int r = presp(s, n, 0, false, 16384, &why);

		cr_assert_eq(r, AP_ERR, "[%s] accepted: %d", s, r);
		cr_assert(why && *why);
		for (size_t k = 1; k <= n; k++) {
			r = presp(s, k, k - 1, false, 16384, &why);
			if (r == AP_ERR)
				break;
			cr_assert_eq(r, AP_AGAIN, "[%s] at %zu", s, k);
			cr_assert(k < n, "[%s] never refused byte by byte", s);
		}
	}
}

Test(response, max_head)
{
	static char s[4096];
	size_t n = (size_t)snprintf(s, sizeof(s), "HTTP/1.1 200 OK\r\nX: %0500d\r\n\r\n", 0);
	const char *why;

	cr_assert_eq(presp(s, n, 0, false, n, &why), (int)n);
	cr_assert_eq(presp(s, n, 0, false, n - 1, &why), AP_ERR);
	cr_assert_eq(presp(s, 100, 0, false, 100, &why), AP_ERR, "incomplete at the limit");
	cr_assert_eq(presp(s, 99, 0, false, 100, &why), AP_AGAIN);
}

/* ---- lookups ---- */

Test(lookup, list_has)
{
	cr_assert(ap_http_list_has(AP_SPAN("keep-alive, Upgrade"), "upgrade"));
	cr_assert(ap_http_list_has(AP_SPAN("close"), "close"));
	cr_assert(ap_http_list_has(AP_SPAN(" ,\tCLOSE\t, "), "close"));
	cr_assert(ap_http_list_has(AP_SPAN("a,close"), "close"));
	cr_assert(!ap_http_list_has(AP_SPAN("closed"), "close"));
	cr_assert(!ap_http_list_has(AP_SPAN("clo se"), "close"));
	cr_assert(!ap_http_list_has(AP_SPAN(""), "close"));
	cr_assert(!ap_http_list_has(AP_SPAN("keep-alive;close"), "close"));
}

Test(lookup, find)
{
	struct ap_http_header h[3] = {
	        {AP_SPAN("Host"), AP_SPAN("a")},
	        {AP_SPAN("X-Y"), AP_SPAN("b")},
	        {AP_SPAN("x-y"), AP_SPAN("c")},
	};

	cr_assert_eq(ap_http_find(h, 3, "x-y"), 1);
	cr_assert_eq(ap_http_find(h, 3, "host"), 0);
	cr_assert_eq(ap_http_find(h, 3, "hos"), -1);
	cr_assert_eq(ap_http_find(h, 0, "host"), -1);
}

/* ---- chunked ---- */

struct dec {
	ssize_t consumed; /* total, or AP_ERR */
	bool done;
	const char *why;
	struct ap_buf out;
};

/* Feeds <s, n> cut at the offsets in <cuts> (ascending, < n), each piece against the
 * guard page. Stops at the first error or at done. */
static void decode_cuts(const char *s, size_t n, const size_t *cuts, size_t ncuts, uint64_t max,
                        bool with_out, struct dec *d)
{
	struct ap_chunked c = {0};
	size_t pos = 0;

	ap_buf_clear(&d->out);
	d->done = false;
	d->why = NULL;
	d->consumed = 0;
	for (size_t i = 0; i <= ncuts; i++) {
		size_t stop = i < ncuts ? cuts[i] : n;
		ssize_t r;

		if (stop < pos)
			continue;
		r = ap_chunked_feed(&c, at(s + pos, stop - pos), stop - pos,
		                    with_out ? &d->out : NULL, max, &d->done, &d->why);
		if (r < 0) {
			d->consumed = r;
			return;
		}
		cr_assert((size_t)r == stop - pos || d->done, "short without done");
		d->consumed += r;
		pos += (size_t)r;
		if (d->done)
			return;
	}
}

static void decode(const char *s, size_t n, uint64_t max, struct dec *d)
{
	decode_cuts(s, n, NULL, 0, max, true, d);
}

static void dec_free(struct dec *d)
{
	ap_buf_free(&d->out);
}

/* Every one- and two-cut split (two-cut for short inputs), and byte by byte: the same
 * consumed, done, error and output as one feed. */
static void chunked_every_split(const char *s, size_t n, uint64_t max)
{
	struct dec whole = {0}, d = {0};
	size_t cuts[2];

	decode(s, n, max, &whole);
	for (size_t k = 0; k <= n; k++) {
		cuts[0] = k;
		decode_cuts(s, n, cuts, 1, max, true, &d);
		cr_assert_eq(d.consumed, whole.consumed, "cut at %zu", k);
		cr_assert_eq(d.done, whole.done);
		if (whole.consumed >= 0) {
			cr_assert_eq(d.out.len, whole.out.len);
			cr_assert(d.out.len == 0 || memcmp(d.out.p, whole.out.p, d.out.len) == 0);
		}
		if (n < 120)
			for (size_t j = k; j <= n; j++) {
				cuts[1] = j;
				decode_cuts(s, n, cuts, 2, max, true, &d);
				cr_assert_eq(d.consumed, whole.consumed, "cuts at %zu %zu", k, j);
				if (whole.consumed >= 0)
					cr_assert(d.out.len == whole.out.len &&
					          (d.out.len == 0 ||
					           memcmp(d.out.p, whole.out.p, d.out.len) == 0));
			}
	}
	{
		size_t *all = malloc((n + 1) * sizeof(*all));

		for (size_t k = 0; k < n; k++)
			all[k] = k + 1;
		decode_cuts(s, n, all, n ? n - 1 : 0, max, true, &d);
		cr_assert_eq(d.consumed, whole.consumed, "byte by byte");
		decode_cuts(s, n, all, n ? n - 1 : 0, max, false, &d);
		cr_assert_eq(d.consumed, whole.consumed, "byte by byte, no output");
		cr_assert_eq(d.out.len, 0);
		free(all);
	}
	dec_free(&d);
	dec_free(&whole);
}

struct chunk_ok {
	const char *in;
	size_t n;
	const char *data;
	size_t data_n;
};

#define C(in, data)                                                                                \
	{                                                                                          \
		in, sizeof(in) - 1, data, sizeof(data) - 1                                         \
	}

static const struct chunk_ok chunk_oks[] = {
        C("0\r\n\r\n", ""),
        C("5\r\nhello\r\n0\r\n\r\n", "hello"),
        C("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
        C("A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        C("a\r\n0123456789\r\n00\r\n\r\n", "0123456789"),
        C("000000000000000a\r\n0123456789\r\n0000000000000000\r\n\r\n", "0123456789"),
        C("3;name=val\r\nabc\r\n0;x;y=\"q s\"\r\n\r\n", "abc"),
        C("3;\t e \r\nabc\r\n0\r\n\r\n", "abc"),
        C("3;x=\xff\r\nabc\r\n0\r\n\r\n", "abc"),
        C("3\r\n\r\n\r\r\n0\r\n\r\n", "\r\n\r"),
        C("2\r\n\0\n\r\n0\r\nExpires: never\r\nX-Sum:\t 12 \r\n\r\n", "\0\n"),
        C("1\r\nz\r\n0\r\nA:\r\n\r\n", "z"),
};

Test(chunked, valid_every_split)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(chunk_oks); i++) {
		const struct chunk_ok *c = &chunk_oks[i];
		struct dec d = {0};
		size_t want = c->data_n;

		decode(c->in, c->n, 1 << 20, &d);
		cr_assert_eq(d.consumed, (ssize_t)c->n, "[%s]: %zd (%s)", c->in, d.consumed,
		             d.why ? d.why : "");
		cr_assert(d.done);
		cr_assert_eq(d.out.len, want, "[%s]", c->in);
		cr_assert(want == 0 || memcmp(d.out.p, c->data, want) == 0);
		dec_free(&d);
		chunked_every_split(c->in, c->n, 1 << 20);
	}
}

Test(chunked, stops_at_the_end_of_the_message)
{
	const char s[] = "4\r\nabcd\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
	struct dec d = {0};
	struct ap_chunked c = {0};
	bool done;
	const char *why;

	decode(s, sizeof(s) - 1, 100, &d);
	cr_assert(d.done);
	cr_assert_eq(d.consumed, 14);
	cr_assert_eq(d.out.len, 4);
	chunked_every_split(s, sizeof(s) - 1, 100);
	dec_free(&d);

	/* Once done, it stays done and takes nothing more. */
	cr_assert_eq(ap_chunked_feed(&c, S("0\r\n\r\n"), NULL, 10, &done, &why), 5);
	cr_assert(done);
	cr_assert_eq(ap_chunked_feed(&c, S("0\r\n\r\n"), NULL, 10, &done, &why), 0);
	cr_assert(done);
}

Test(chunked, incomplete_is_not_done)
{
	const char *parts[] = {"",
	                       "5",
	                       "5\r",
	                       "5\r\n",
	                       "5\r\nhel",
	                       "5\r\nhello",
	                       "5\r\nhello\r",
	                       "5\r\nhello\r\n",
	                       "5\r\nhello\r\n0",
	                       "5\r\nhello\r\n0\r\n",
	                       "5\r\nhello\r\n0\r\nX: y\r\n",
	                       "5\r\nhello\r\n0\r\n\r"};

	for (size_t i = 0; i < AP_ARRAY_LEN(parts); i++) {
		struct dec d = {0};

		decode(parts[i], strlen(parts[i]), 100, &d);
		cr_assert_eq(d.consumed, (ssize_t)strlen(parts[i]), "[%s]", parts[i]);
		cr_assert(!d.done, "[%s]", parts[i]);
		dec_free(&d);
	}
}

struct lit {
	const char *s;
	size_t n;
};

#define L(lit)                                                                                     \
	{                                                                                          \
		lit, sizeof(lit) - 1                                                               \
	}

static const struct lit chunk_bads[] = {
        L("\r\n"),                                /* empty size line */
        L(";x\r\n"),                              /* no size */
        L("12345678901234567\r\n"),               /* 17 hex digits */
        L("00000000000000001\r\nx\r\n0\r\n\r\n"), /* 17 digits even when small */
        L("-1\r\n"),
        L(" 5\r\nhello\r\n0\r\n\r\n"),
        L("5 \r\nhello\r\n0\r\n\r\n"),
        L("5 ;x\r\nhello\r\n0\r\n\r\n"),
        L("0x5\r\nhello\r\n0\r\n\r\n"),
        L("+5\r\nhello\r\n0\r\n\r\n"),
        L("g\r\n"),
        L("5\nhello\r\n0\r\n\r\n"),
        L("5\r\nhello\n0\r\n\r\n"),
        L("5\r\nhello\r\n0\n\r\n"),
        L("5\r\nhello\r\n0\r\n\n"),
        L("5\r\nhello\r\n0\r\n\r\r"),
        L("5\r\nhelloX\r\n0\r\n\r\n"), /* missing CRLF after data */
        L("5\r\nhelloX\n0\r\n\r\n"),
        L("5\r\nhello\n\n0\r\n\r\n"),
        L("5\r\nhello\rX0\r\n\r\n"),
        L("5\r\nhello0\r\n\r\n"),
        L("5\r\r\nhello\r\n0\r\n\r\n"),
        L("5;a\nb\r\nhello\r\n0\r\n\r\n"), /* LF inside an extension */
        L("5;a\0\r\nhello\r\n0\r\n\r\n"),
        L("5;a\x7f\r\nhello\r\n0\r\n\r\n"),
        L("0\r\nX : y\r\n\r\n"), /* trailer: space before colon */
        L("0\r\n y\r\n\r\n"),    /* trailer: folding */
        L("0\r\nNoColon\r\n\r\n"),
        L("0\r\nX: a\0\r\n\r\n"),
        L("0\r\nX: a\nb\r\n\r\n"),
        L("0\r\nX: a\rYY: b\r\n\r\n"), /* bare CR ending a trailer line */
        L("0\r\nX: a\r\n\rYY: b\r\n\r\n"),
        L("0\r\n:a\r\n\r\n"),
        L("0\r\nX@: a\r\n\r\n"),
};

Test(chunked, hostile)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(chunk_bads); i++) {
		const char *s = chunk_bads[i].s;
		size_t n = chunk_bads[i].n;
		struct dec d = {0};
		decode(s, n, (uint64_t)1 << 62, &d);
		cr_assert_eq(d.consumed, AP_ERR, "[%s] accepted: %zd", s, d.consumed);
		cr_assert(d.why && *d.why);
		cr_assert_neq(strcmp(d.why, AP_HTTP_WHY_TOO_BIG), 0, "[%s]", s);
		chunked_every_split(s, n, (uint64_t)1 << 62);
		dec_free(&d);
	}
}

Test(chunked, errors_are_sticky)
{
	struct ap_chunked c = {0};
	bool done;
	const char *why = NULL;

	cr_assert_eq(ap_chunked_feed(&c, S("z"), NULL, 10, &done, &why), AP_ERR);
	why = NULL;
	cr_assert_eq(ap_chunked_feed(&c, S("0\r\n\r\n"), NULL, 10, &done, &why), AP_ERR);
	cr_assert(why);
	cr_assert(!done);
}

Test(chunked, lines_are_bounded)
{
	static char s[20000];
	size_t n;
	struct dec d = {0};

	/* An extension line of exactly 4096 bytes is fine; one more is not. */
	n = (size_t)snprintf(s, sizeof(s), "1;%s", "");
	memset(s + n, 'e', 4094 - n + 2);
	n = 4096;
	memcpy(s + n, "\r\nz\r\n0\r\n\r\n", 10);
	decode(s, n + 10, 100, &d);
	cr_assert_eq(d.consumed, (ssize_t)n + 10, "%zd %s", d.consumed, d.why ? d.why : "");
	s[n] = 'e';
	memcpy(s + n + 1, "\r\nz\r\n0\r\n\r\n", 10);
	decode(s, n + 11, 100, &d);
	cr_assert_eq(d.consumed, AP_ERR);

	/* A trailer line over 4096 bytes. */
	memcpy(s, "0\r\nX: ", 6);
	memset(s + 6, 'v', 5000);
	memcpy(s + 5006, "\r\n\r\n", 4);
	decode(s, 5010, 100, &d);
	cr_assert_eq(d.consumed, AP_ERR);

	/* Many short trailer lines: the section is bounded too. */
	n = (size_t)snprintf(s, sizeof(s), "0\r\n");
	while (n < 18000)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "X-T: 0123456789abcdef\r\n");
	memcpy(s + n, "\r\n", 2);
	decode(s, n + 2, 100, &d);
	cr_assert_eq(d.consumed, AP_ERR);
	dec_free(&d);
}

Test(chunked, max_body)
{
	struct dec d = {0};

	decode(S("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"), 10, &d);
	cr_assert(d.done, "exactly at the limit");
	decode(S("5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"), 10, &d);
	cr_assert_eq(d.consumed, AP_ERR);
	cr_assert_str_eq(d.why, AP_HTTP_WHY_TOO_BIG);
	cr_assert_eq(d.out.len, 5, "refused at the size, before its data");
	decode(S("ffffffffffffffff\r\n"), UINT64_MAX, &d);
	cr_assert_eq(d.consumed, 18, "16 f's fit when there is no limit");
	decode(S("1\r\na\r\nffffffffffffffff\r\n"), UINT64_MAX, &d);
	cr_assert_eq(d.consumed, AP_ERR, "total would overflow");
	cr_assert_str_eq(d.why, AP_HTTP_WHY_TOO_BIG);
	decode(S("0\r\n\r\n"), 0, &d);
	cr_assert(d.done);
	decode(S("1\r\n"), 0, &d);
	cr_assert_str_eq(d.why, AP_HTTP_WHY_TOO_BIG);
	chunked_every_split(S("5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n"), 10);
	dec_free(&d);
}

/* The oracle: random bodies in random chunkings (sizes, case, leading zeros, extensions,
 * trailers), decoded at random cuts, give the body back, and stop at the message end. */
static size_t encode_random(const unsigned char *body, size_t n, char *o)
{
	static const char *const exts[] = {"", ";a", ";a=b", ";x=\"q s\"", "; k = v", ";e;f=1"};
	static const char *const trailers[] = {"", "X-Sum: 1\r\n", "A:\r\nB-C: d e\r\n"};
	size_t w = 0, pos = 0;

	while (pos < n) {
		size_t k = 1 + rnd(rng() & 1 ? 40 : 3000);
		int zeros = (int)rnd(3);

		if (k > n - pos)
			k = n - pos;
		w += (size_t)sprintf(o + w, rng() & 1 ? "%0*zx%s\r\n" : "%0*zX%s\r\n", zeros + 1, k,
		                     exts[rnd(AP_ARRAY_LEN(exts))]);
		memcpy(o + w, body + pos, k);
		w += k;
		o[w++] = '\r';
		o[w++] = '\n';
		pos += k;
	}
	w += (size_t)sprintf(o + w, "0%s\r\n%s\r\n", exts[rnd(AP_ARRAY_LEN(exts))],
	                     trailers[rnd(AP_ARRAY_LEN(trailers))]);
	return w;
}

Test(chunked, oracle_random)
{
	static unsigned char body[20000];
	static char enc[40000];
	struct dec d = {0};

	rng_seed(0x1234abcd);
	for (int iter = 0; iter < 2000; iter++) {
		size_t n = rnd(iter < 1000 ? 64 : sizeof(body)), w, cuts[8], ncuts = rnd(9);

		for (size_t i = 0; i < n; i++)
			body[i] = (unsigned char)rng();
		w = encode_random(body, n, enc);
		memcpy(enc + w, "NEXT", 4);
		for (size_t i = 0; i < ncuts; i++)
			cuts[i] = rnd(w + 5);
		for (size_t i = 1; i < ncuts; i++) /* insertion sort */
			for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
				size_t t = cuts[j];
				cuts[j] = cuts[j - 1];
				cuts[j - 1] = t;
			}
		decode_cuts(enc, w + 4, cuts, ncuts, sizeof(body), true, &d);
		cr_assert_eq(d.consumed, (ssize_t)w, "iter %d: %zd (%s)", iter, d.consumed,
		             d.why ? d.why : "");
		cr_assert(d.done);
		cr_assert_eq(d.out.len, n);
		cr_assert(n == 0 || memcmp(d.out.p, body, n) == 0, "iter %d", iter);
		if (n) {
			decode_cuts(enc, w, cuts, ncuts, n - 1, true, &d);
			cr_assert_eq(d.consumed, AP_ERR, "one byte under the limit");
			cr_assert_str_eq(d.why, AP_HTTP_WHY_TOO_BIG);
		}
	}
	dec_free(&d);
}

/* A long run of data in one feed. */
Test(chunked, data_goes_out_in_runs)
{
	static char s[70000];
	struct ap_chunked c = {0};
	struct ap_buf out = {0};
	bool done;
	const char *why;
	size_t n = (size_t)sprintf(s, "10000\r\n");
	ssize_t r;

	memset(s + n, 'x', 65536);
	r = ap_chunked_feed(&c, s, n + 65536, &out, 1 << 20, &done, &why);
	cr_assert_eq(r, (ssize_t)(n + 65536));
	cr_assert_eq(out.len, 65536);
	cr_assert(memchr(out.p, 'x', out.len) == out.p && out.p[65535] == 'x');
	ap_buf_free(&out);
}
