/* Percent-encoding as a codec step: a JSON string or a pairs value that holds URL-encoded
 * text is decoded, scrubbed, and written back in the style it came in. Form bodies and
 * query strings have their own in-place scanner (scrub_form.c); this is for whole values. */
#include "codec.h"

static inline int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static inline void mark(uint64_t *set, unsigned char c)
{
	set[c >> 6] |= 1ull << (c & 63);
}

static inline bool marked(const uint64_t *set, unsigned char c)
{
	return set[c >> 6] >> (c & 63) & 1;
}

int ap_pct_decode(const char *in, size_t n, struct ap_buf *out, struct ap_pct_style *style,
                  const char **why)
{
	size_t start = out->len;
	bool pct20 = false, upper = false, lower = false;

	memset(style, 0, sizeof(*style));
	if (ap_buf_reserve(out, n) != AP_OK) {
		*why = "out of memory";
		return AP_ERR;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		int h, l;

		if (c == '+') {
			style->plus_space = true;
			c = ' ';
		} else if (c == '%') {
			if (n - i < 3 || (h = hexval((unsigned char)in[i + 1])) < 0 ||
			    (l = hexval((unsigned char)in[i + 2])) < 0) {
				out->len = start;
				*why = "invalid percent-encoding";
				return AP_ERR;
			}
			for (int k = 1; k <= 2; k++) {
				unsigned char d = (unsigned char)in[i + k];
				upper |= d >= 'A' && d <= 'F';
				lower |= d >= 'a' && d <= 'f';
			}
			c = (unsigned char)(h << 4 | l);
			pct20 |= c == ' ';
			i += 2;
		} else
			mark(style->literal, c);
		out->p[out->len++] = (char)c;
	}
	if (pct20)
		style->plus_space = false;
	style->lower_hex = lower && !upper;
	return AP_OK;
}

int ap_pct_encode(const char *in, size_t n, struct ap_buf *out, const struct ap_pct_style *style)
{
	const char *hex = style->lower_hex ? "0123456789abcdef" : "0123456789ABCDEF";

	if (ap_buf_reserve(out, n * 3) != AP_OK)
		return AP_ERR;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		char *d = out->p + out->len;
		bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		                  (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
		                  c == '~';

		if (c == ' ' && style->plus_space) {
			d[0] = '+';
			out->len++;
		} else if (c != '%' && c != '+' && (unreserved || marked(style->literal, c))) {
			d[0] = (char)c;
			out->len++;
		} else {
			d[0] = '%';
			d[1] = hex[c >> 4];
			d[2] = hex[c & 15];
			out->len += 3;
		}
	}
	return AP_OK;
}
