/* Fuzzes the chunked decoder of http1.c. The first byte picks a body limit and a cut; the
 * rest is the body. Invariants: decoding into a buffer and only following the framing
 * (out = NULL) agree on the bytes consumed, done and refusal; so do one feed, two feeds
 * cut anywhere, and byte by byte; fewer bytes than given are consumed only when done; a
 * decoded body, re-encoded as one chunk, decodes to itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reused across inputs like a worker's buffers. */
static struct ap_buf out1, out2, enc;

struct result {
	ssize_t consumed; /* or AP_ERR */
	bool done;
	bool too_big;
};

/* Feeds <p, n> in pieces of <step> bytes (0: one piece), each an exact-size copy. */
static struct result feed(const char *p, size_t n, size_t step, struct ap_buf *out, uint64_t max)
{
	struct ap_chunked c = {0};
	struct result res = {0, false, false};
	size_t pos = 0;

	do {
		size_t len = step && n - pos > step ? step : n - pos;
		char *piece = malloc(len ? len : 1);
		const char *why = NULL;
		ssize_t r;

		if (!piece)
			abort();
		memcpy(piece, p + pos, len);
		r = ap_chunked_feed(&c, piece, len, out, max, &res.done, &why);
		free(piece);
		if (r < 0) {
			if (r != AP_ERR || !why || res.done)
				abort();
			res.consumed = AP_ERR;
			res.too_big = strcmp(why, AP_HTTP_WHY_TOO_BIG) == 0;
			return res;
		}
		if ((size_t)r > len || ((size_t)r < len && !res.done))
			abort();
		pos += (size_t)r;
		if (c.total > max)
			abort();
	} while (!res.done && pos < n);
	res.consumed = (ssize_t)pos;
	return res;
}

static bool same(struct result a, struct result b)
{
	return a.consumed == b.consumed && a.done == b.done && a.too_big == b.too_big;
}

/* Two feeds, cut at <cut>, must agree with <want> (one feed), output included. */
static void check_cut(const char *p, size_t n, size_t cut, uint64_t max, struct result want)
{
	struct ap_chunked c = {0};
	bool done = false;
	const char *why = NULL;
	ssize_t r, r2;

	ap_buf_clear(&out2);
	r = ap_chunked_feed(&c, p, cut, &out2, max, &done, &why);
	if (r < 0) {
		if (want.consumed != AP_ERR)
			abort();
		return;
	}
	if (done) {
		if (!want.done || want.consumed != r)
			abort();
		return;
	}
	r2 = ap_chunked_feed(&c, p + cut, n - cut, &out2, max, &done, &why);
	if (r2 < 0) {
		if (want.consumed != AP_ERR)
			abort();
		return;
	}
	if (want.consumed != r + r2 || want.done != done)
		abort();
	if (out2.len != out1.len || (out1.len && memcmp(out1.p, out2.p, out1.len)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t maxes[4] = {UINT64_MAX, 1 << 20, 100, 0};
	const char *p = (const char *)data + 1;
	size_t n = size ? size - 1 : 0;
	uint64_t max;
	struct result a, b, c;

	if (size < 1)
		return 0;
	max = maxes[data[0] & 3];

	ap_buf_clear(&out1);
	a = feed(p, n, 0, &out1, max);
	b = feed(p, n, 0, NULL, max);
	if (!same(a, b))
		abort();
	c = feed(p, n, 1, NULL, max);
	if (!same(a, c))
		abort();
	if (n)
		check_cut(p, n, (size_t)(data[0] >> 2) * n / 64, max, a);
	ap_buf_clear(&out2);
	c = feed(p, n, 1 + (data[0] >> 5), &out2, max);
	if (!same(a, c) || (a.consumed >= 0 && (out2.len != out1.len ||
	                                        (out1.len && memcmp(out1.p, out2.p, out1.len)))))
		abort();

	if (a.done) {
		char hdr[32];
		int h = snprintf(hdr, sizeof(hdr), "%zx\r\n", out1.len);

		ap_buf_clear(&enc);
		if (out1.len) {
			if (ap_buf_add(&enc, hdr, (size_t)h) ||
			    ap_buf_add(&enc, out1.p, out1.len) || ap_buf_add(&enc, "\r\n", 2))
				abort();
		}
		if (ap_buf_add(&enc, "0\r\n\r\n", 5))
			abort();
		ap_buf_clear(&out2);
		c = feed(enc.p, enc.len, 0, &out2, max);
		if (!c.done || c.consumed != (ssize_t)enc.len || out2.len != out1.len ||
		    (out1.len && memcmp(out1.p, out2.p, out1.len)))
			abort();
	}
	return 0;
}
