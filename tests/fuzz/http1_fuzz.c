/* Fuzzes the request and response head parsers of http1.c. The first byte picks the
 * parser, the limits and (responses) whether the request was a HEAD; the rest is the head.
 * Invariants: no crash or over-read (each parse sees an exact-size copy under ASan); fed
 * byte by byte with last_len, the answer is the one-shot answer (same head length, same
 * method, target and header count; same status when refused), AP_AGAIN until then; the
 * head alone (data[0, L)) parses to the same L; Content-Length and chunked never both. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ap_http_req req1, req2;
static struct ap_http_resp resp1, resp2;

static const struct ap_http_limits limits[2] = {
        {.head_bytes = 4096, .uri_bytes = 1024, .headers = 64},
        {.head_bytes = 200, .uri_bytes = 40, .headers = 4},
};

static bool span_eq(struct ap_span a, struct ap_span b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* An exact-size heap copy, so that ASan sees a read one past <n>. */
static char *dup_exact(const char *p, size_t n)
{
	char *c = calloc(1, n ? n : 1);

	if (!c)
		abort();
	if (n)
		memcpy(c, p, n);
	return c;
}

static int req_parse(const char *p, size_t n, size_t last, struct ap_http_req *r,
                     const struct ap_http_limits *lim, int *st)
{
	const char *why = NULL;
	int x;

	*st = 0;
	x = ap_http_parse_request(p, n, last, r, lim, st, &why);
	if (x == AP_ERR && (!why || *st < 400 || *st > 599))
		abort();
	if (x > 0) {
		if ((size_t)x > n || r->head_len != (size_t)x)
			abort();
		if (r->content_length >= 0 && r->chunked)
			abort();
		if (r->minor != 0 && r->minor != 1)
			abort();
	}
	return x;
}

static void fuzz_request(const char *d, size_t n, const struct ap_http_limits *lim)
{
	char *whole = dup_exact(d, n);
	int st1, st, r1, r = AP_AGAIN;
	size_t k;

	r1 = req_parse(whole, n, 0, &req1, lim, &st1);

	/* Byte by byte on the same buffer, as a connection would. */
	for (k = 1; k <= n; k++) {
		r = req_parse(whole, k, k - 1, &req2, lim, &st);
		if (r != AP_AGAIN)
			break;
	}
	if (r1 == AP_AGAIN && r != AP_AGAIN)
		abort();
	if (r1 == AP_ERR && (r != AP_ERR || st != st1))
		abort();
	if (r1 > 0) {
		if (r != r1 || k != (size_t)r1)
			abort();
		if (!span_eq(req1.method, req2.method) || !span_eq(req1.target, req2.target) ||
		    !span_eq(req1.host, req2.host) || req1.nheaders != req2.nheaders ||
		    req1.content_length != req2.content_length || req1.chunked != req2.chunked)
			abort();
	}

	/* Two pieces, cut where the input says; and a few prefixes against their end. */
	if (n > 1) {
		size_t cut = 1 + (size_t)(unsigned char)d[n / 2] * (n - 1) / 256;
		char *part = dup_exact(d, cut);

		r = req_parse(part, cut, 0, &req2, lim, &st);
		free(part);
		if (r == AP_AGAIN) {
			r = req_parse(whole, n, cut, &req2, lim, &st);
			if (r != r1 || (r1 == AP_ERR && st != st1))
				abort();
		} else if (r != r1 || (r1 == AP_ERR && st != st1)) {
			abort();
		}
	}
	if (r1 > 0) {
		char *head = dup_exact(d, (size_t)r1);

		if (req_parse(head, (size_t)r1, 0, &req2, lim, &st) != r1)
			abort();
		if (!span_eq(req1.path, req2.path) || !span_eq(req1.query, req2.query))
			abort();
		free(head);
		if (r1 > 1) {
			head = dup_exact(d, (size_t)r1 - 1);
			if (req_parse(head, (size_t)r1 - 1, 0, &req2, lim, &st) != AP_AGAIN)
				abort();
			free(head);
		}
	}
	free(whole);
}

static int resp_parse(const char *p, size_t n, size_t last, bool head, size_t max,
                      struct ap_http_resp *r)
{
	const char *why = NULL;
	int x = ap_http_parse_response(p, n, last, head, r, max, &why);

	if (x == AP_ERR && !why)
		abort();
	if (x > 0) {
		int framings = r->no_body + r->chunked + r->until_close + (r->content_length >= 0);

		if ((size_t)x > n || r->head_len != (size_t)x || framings != 1)
			abort();
		if (r->status < 100 || r->status > 599 || (r->until_close && !r->close))
			abort();
	}
	return x;
}

static void fuzz_response(const char *d, size_t n, bool head, size_t max)
{
	char *whole = dup_exact(d, n);
	int r1, r = AP_AGAIN;
	size_t k;

	r1 = resp_parse(whole, n, 0, head, max, &resp1);
	for (k = 1; k <= n; k++) {
		r = resp_parse(whole, k, k - 1, head, max, &resp2);
		if (r != AP_AGAIN)
			break;
	}
	if (r != r1 || (r1 > 0 && k != (size_t)r1))
		abort();
	if (r1 > 0) {
		char *h = dup_exact(d, (size_t)r1);

		if (resp_parse(h, (size_t)r1, 0, head, max, &resp2) != r1)
			abort();
		if (resp1.status != resp2.status || resp1.nheaders != resp2.nheaders ||
		    resp1.content_length != resp2.content_length || resp1.close != resp2.close)
			abort();
		free(h);
	}
	free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned mode;

	if (size < 1 || size > 8192)
		return 0;
	mode = data[0];
	if (mode & 1)
		fuzz_response((const char *)data + 1, size - 1, mode & 4, mode & 2 ? 200 : 4096);
	else
		fuzz_request((const char *)data + 1, size - 1, &limits[(mode >> 1) & 1]);
	return 0;
}
