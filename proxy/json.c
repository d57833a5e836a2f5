/* JSON strings and numbers: validating scans, unescape and escape. The string scan is
 * the scrubber's inner loop, so plain ASCII runs are skipped 16 bytes at a time with SSE2
 * where the compiler offers it; everything else takes the byte-by-byte path. */
#include "json.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static const signed char hexval[256] = {
        ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
        ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
        ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
        ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Reads 4 hex digits at p (caller checked p + 4 <= end). Returns the value or -1. */
static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval[(unsigned char)p[i]];
		if (!h)
			return -1;
		v = v << 4 | (h - 1);
	}
	return v;
}

/* Validates one UTF-8 sequence starting with the non-ASCII byte at p. Returns its length,
 * or 0 when invalid or cut by <end>. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if ((size_t)(end - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	return n;
}

const char *ap_json_string(const char *s, const char *e, unsigned *flags)
{
	const unsigned char *p = (const unsigned char *)s + 1, *end = (const unsigned char *)e;
	unsigned f = 0;

	for (;;) {
#if defined(__SSE2__)
		/* Signed compare: bytes >= 0x80 are negative, so "< 0x20" catches both control
		 * characters and the start of every UTF-8 sequence. */
		const __m128i q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'),
		              sp = _mm_set1_epi8(0x20);
		while (end - p >= 16) {
			__m128i v = _mm_loadu_si128((const __m128i *)p);
			int m = _mm_movemask_epi8(_mm_or_si128(
			        _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)),
			        _mm_cmplt_epi8(v, sp)));
			if (m) {
				p += __builtin_ctz((unsigned)m);
				goto special;
			}
			p += 16;
		}
#endif
		while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
			p++;
		if (p >= end)
			return NULL;
#if defined(__SSE2__)
	special:
#endif
		if (*p == '"') {
			*flags = f;
			return (const char *)p + 1;
		}
		if (*p == '\\') {
			f |= AP_JSTR_ESC;
			if (end - p < 2)
				return NULL;
			switch (p[1]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p += 2;
				continue;
			case 'u': {
				int u;
				if (end - p < 6 || (u = hex4((const char *)p + 2)) < 0)
					return NULL;
				p += 6;
				if (u >= 0xDC00 && u <= 0xDFFF)
					return NULL;
				if (u >= 0xD800 && u <= 0xDBFF) {
					int l;
					if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
					    (l = hex4((const char *)p + 2)) < 0xDC00 || l > 0xDFFF)
						return NULL;
					p += 6;
				}
				continue;
			}
			default:
				return NULL;
			}
		}
		if (*p < 0x20)
			return NULL;
		{
			size_t n = utf8_seq(p, end);
			if (!n)
				return NULL;
			p += n;
		}
	}
}

const char *ap_json_number(const char *p, const char *end, bool *integer)
{
	bool in = true;

	if (p < end && *p == '-') {
		in = false;
		p++;
	}
	if (p >= end)
		return NULL;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (p < end && *p == '.') {
		in = false;
		if (++p >= end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		in = false;
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	*integer = in;
	return p;
}

static int put_utf8(struct ap_buf *out, unsigned cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | cp >> 6);
		b[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | cp >> 12);
		b[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (char)(0xF0 | cp >> 18);
		b[1] = (char)(0x80 | (cp >> 12 & 0x3F));
		b[2] = (char)(0x80 | (cp >> 6 & 0x3F));
		b[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return ap_buf_add(out, b, n);
}

int ap_json_unescape(const char *p, size_t n, struct ap_buf *out)
{
	const char *end = p + n;

	if (ap_buf_reserve(out, n) != AP_OK)
		return AP_ERR;
	while (p < end) {
		const char *bs = memchr(p, '\\', (size_t)(end - p));
		char c;

		if (!bs)
			return ap_buf_add(out, p, (size_t)(end - p));
		if (ap_buf_add(out, p, (size_t)(bs - p)) != AP_OK)
			return AP_ERR;
		switch (bs[1]) {
		case 'b':
			c = '\b';
			break;
		case 'f':
			c = '\f';
			break;
		case 'n':
			c = '\n';
			break;
		case 'r':
			c = '\r';
			break;
		case 't':
			c = '\t';
			break;
		case 'u': {
			unsigned cp = (unsigned)hex4(bs + 2);
			p = bs + 6;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				cp = 0x10000 + ((cp - 0xD800) << 10) +
				     ((unsigned)hex4(p + 2) - 0xDC00);
				p += 6;
			}
			if (put_utf8(out, cp) != AP_OK)
				return AP_ERR;
			continue;
		}
		default:
			c = bs[1];
			break;
		}
		if (ap_buf_addc(out, c) != AP_OK)
			return AP_ERR;
		p = bs + 2;
	}
	return AP_OK;
}

/* Bytes that must be escaped inside a JSON string: '"', '\\' and the controls. */
static const unsigned char must_escape[256] = {
        [0 ... 0x1f] = 1,
        ['"'] = 1,
        ['\\'] = 1,
};

int ap_json_escape(const char *p, size_t n, struct ap_buf *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, run;

	if (ap_buf_reserve(out, n + 2) != AP_OK)
		return AP_ERR;
	for (;;) {
		/* Copy the longest run that needs no escape in one go: pseudonyms are all run. */
		run = i;
#if defined(__SSE2__)
		{
			const __m128i q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'),
			              c1f = _mm_set1_epi8(0x1f);
			while (n - i >= 16) {
				__m128i v = _mm_loadu_si128((const __m128i *)(p + i));
				__m128i ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, c1f), c1f);
				int m = _mm_movemask_epi8(
				        _mm_or_si128(ctl, _mm_or_si128(_mm_cmpeq_epi8(v, q),
				                                       _mm_cmpeq_epi8(v, bs))));
				if (m) {
					i += (size_t)__builtin_ctz((unsigned)m);
					break;
				}
				i += 16;
			}
		}
#endif
		while (i < n && !must_escape[(unsigned char)p[i]])
			i++;
		if (ap_buf_add(out, p + run, i - run) != AP_OK)
			return AP_ERR;
		if (i == n)
			return AP_OK;

		unsigned char c = (unsigned char)p[i++];
		char e[6] = {'\\', 0};
		size_t en = 2;

		switch (c) {
		case '"':
			e[1] = '"';
			break;
		case '\\':
			e[1] = '\\';
			break;
		case '\n':
			e[1] = 'n';
			break;
		case '\r':
			e[1] = 'r';
			break;
		case '\t':
			e[1] = 't';
			break;
		case '\b':
			e[1] = 'b';
			break;
		case '\f':
			e[1] = 'f';
			break;
		default:
			e[1] = 'u';
			e[2] = '0';
			e[3] = '0';
			e[4] = hex[c >> 4];
			e[5] = hex[c & 15];
			en = 6;
		}
		if (ap_buf_add(out, e, en) != AP_OK)
			return AP_ERR;
	}
}
