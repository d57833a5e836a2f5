/* Strict base64 (RFC 4648, standard or URL alphabet, padded or not) for the scrubbers that
 * peel base64 off form fields and put it back. Only canonical text is accepted, so what is
 * decoded re-encodes byte for byte; no whitespace, no line breaks, no lenient repairs. */
#include "codec.h"

/* Table entries: the 6-bit value, plus a mark for the characters only one alphabet has.
 * An invalid character carries both marks, so a single OR over the input tells whether
 * anything is wrong (invalid, or the two alphabets mixed) and the slow path says what. */
#define B64_STD 0x40
#define B64_URL 0x80
#define B64_BAD (B64_STD | B64_URL)

/* clang-format off */
#define XX   B64_BAD
#define S(v) ((v) | B64_STD)
#define U(v) ((v) | B64_URL)
static const unsigned char dec[256] = {
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 00 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 10 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, S(62), XX, U(62), XX, S(63), /* 20 */
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, XX, XX, XX, XX, XX, XX, /* 30 */
	XX,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, /* 40 */
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, XX, XX, XX, XX, U(63), /* 50 */
	XX, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 60 */
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, XX, XX, XX, XX, XX, /* 70 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 80 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 90 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* a0 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* b0 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* c0 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* d0 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* e0 */
	XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* f0 */
};
#undef XX
#undef S
#undef U
/* clang-format on */

static const char enc_std[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char enc_url[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Only reached once the fast loop has seen something wrong: finds the first culprit so the
 * reason names the class of error, never the bytes. */
static const char *why_bad(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (dec[s[i]] == B64_BAD)
			return s[i] == '=' ? "misplaced base64 padding" : "bad base64 character";
	}
	return "mixed standard and URL base64 alphabets";
}

/* Padded is reported whenever the length is a multiple of 4: either '=' was there, or the
 * data needed none, and in both cases the padded encoder writes exactly this text back.
 * An empty input decodes to nothing and reports the standard, padded style. */
int ap_base64_decode(const char *in, size_t n, struct ap_buf *out, struct ap_b64_style *style,
                     const char **why)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t pad = 0, body, quads, rem, outlen;
	unsigned flags = 0, a, b, c, d;
	unsigned char *o;

	style->url = false;
	style->padded = true;
	if (n == 0)
		return AP_OK;
	if (n % 4 == 1) {
		*why = "bad base64 length";
		return AP_ERR;
	}
	if (n % 4 == 0 && s[n - 1] == '=')
		pad = s[n - 2] == '=' ? 2 : 1;
	body = n - pad;
	quads = body / 4;
	rem = body % 4; /* 0, 2 or 3: a length of 1 mod 4 was refused above */
	outlen = quads * 3 + (rem ? rem - 1 : 0);
	if (ap_buf_reserve(out, outlen) != AP_OK) {
		*why = "out of memory";
		return AP_ERR;
	}

	/* Written into spare capacity and committed only on success, so a refused input leaves
	 * <out> as it was. */
	o = (unsigned char *)out->p + out->len;
	for (size_t i = 0; i < quads; i++, s += 4, o += 3) {
		uint32_t v;

		a = dec[s[0]];
		b = dec[s[1]];
		c = dec[s[2]];
		d = dec[s[3]];
		flags |= a | b | c | d;
		v = (a & 63) << 18 | (b & 63) << 12 | (c & 63) << 6 | (d & 63);
		o[0] = (unsigned char)(v >> 16);
		o[1] = (unsigned char)(v >> 8);
		o[2] = (unsigned char)v;
	}
	a = b = c = 0;
	if (rem >= 2) {
		a = dec[s[0]];
		b = dec[s[1]];
		flags |= a | b;
		o[0] = (unsigned char)((a & 63) << 2 | (b & 63) >> 4);
	}
	if (rem == 3) {
		c = dec[s[2]];
		flags |= c;
		o[1] = (unsigned char)((b & 63) << 4 | (c & 63) >> 2);
	}
	if (AP_UNLIKELY((flags & B64_BAD) == B64_BAD)) {
		*why = why_bad((const unsigned char *)in, body);
		return AP_ERR;
	}
	/* Bits that no output byte holds must be zero, else two texts would decode alike and the
	 * re-encoded body would differ from what the client sent. */
	if ((rem == 2 && (b & 15)) || (rem == 3 && (c & 3))) {
		*why = "non-zero trailing bits in base64";
		return AP_ERR;
	}
	style->url = flags & B64_URL;
	style->padded = n % 4 == 0;
	out->len += outlen;
	return AP_OK;
}

int ap_base64_encode(const void *in, size_t n, struct ap_buf *out, const struct ap_b64_style *style)
{
	const unsigned char *s = in;
	const char *t = style->url ? enc_url : enc_std;
	size_t triples = n / 3, rem = n % 3, outlen;
	char *o;

	if (n == 0)
		return AP_OK;
	if (triples > (SIZE_MAX - 4) / 4)
		return AP_ERR;
	outlen = triples * 4 + (rem == 0 ? 0 : style->padded ? 4 : rem + 1);
	if (ap_buf_reserve(out, outlen) != AP_OK)
		return AP_ERR;
	o = out->p + out->len;
	for (size_t i = 0; i < triples; i++, s += 3, o += 4) {
		uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];

		o[0] = t[v >> 18];
		o[1] = t[(v >> 12) & 63];
		o[2] = t[(v >> 6) & 63];
		o[3] = t[v & 63];
	}
	if (rem) {
		uint32_t v = (uint32_t)s[0] << 16 | (rem == 2 ? (uint32_t)s[1] << 8 : 0);

		*o++ = t[v >> 18];
		*o++ = t[(v >> 12) & 63];
		if (rem == 2)
			*o++ = t[(v >> 6) & 63];
		else if (style->padded)
			*o++ = '=';
		if (style->padded)
			*o++ = '=';
	}
	out->len += outlen;
	return AP_OK;
}
