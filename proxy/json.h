/* The lexical pieces of JSON the scrubber is built from: string and number scanning with
 * full validation (escapes, UTF-8, control characters), unescaping and escaping. No tree
 * and no allocation beyond the caller's buffers. */
#ifndef AP_JSON_H
#define AP_JSON_H

#include <stdbool.h>

#include "buf.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Flags of a scanned string. */
#define AP_JSTR_ESC 1u /* holds at least one backslash escape */

/* Scans the string whose opening quote is at <p> (p < end, *p == '"'). Returns the
 * pointer just past the closing quote and sets *flags, or NULL when the string is
 * unterminated before <end>, holds a control character, invalid UTF-8 (overlong forms,
 * surrogates, > U+10FFFF), or a bad escape (including a lone or reversed surrogate
 * \u pair). Never reads at or beyond <end>. */
const char *ap_json_string(const char *p, const char *end, unsigned *flags);

/* ap_json_string for the common case, inline: a string whose closing quote is among its
 * first 16 bytes, with nothing to escape or validate before it. Anything else goes to
 * ap_json_string. */
static inline const char *ap_json_string_short(const char *s, const char *e, unsigned *flags)
{
#if defined(__SSE2__)
	if (e - s >= 17) {
		__m128i v = _mm_loadu_si128((const __m128i *)(s + 1));
		int m = _mm_movemask_epi8(
		        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
		                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
		                     _mm_cmplt_epi8(v, _mm_set1_epi8(0x20))));
		if (m) {
			unsigned i = (unsigned)__builtin_ctz((unsigned)m);
			if (s[1 + i] == '"') {
				*flags = 0;
				return s + 2 + i;
			}
		}
	}
#endif
	return ap_json_string(s, e, flags);
}

/* Scans the number starting at <p> (JSON grammar, any length). Returns the pointer past
 * it, or NULL when it is not a number. *integer is set when it has no fraction, exponent
 * or sign. */
const char *ap_json_number(const char *p, const char *end, bool *integer);

/* Appends the decoded content of a string already validated by ap_json_string (the
 * bytes between the quotes) to <out>. Returns AP_OK or AP_ERR (memory). */
int ap_json_unescape(const char *p, size_t n, struct ap_buf *out);

/* Appends <p, n> (UTF-8, not checked) to <out> as the content of a JSON string: '"', '\'
 * and control characters escaped, everything else verbatim. No quotes are added. */
int ap_json_escape(const char *p, size_t n, struct ap_buf *out);

/* Skips JSON whitespace. */
static inline const char *ap_json_ws(const char *p, const char *end)
{
	if (AP_LIKELY(p < end && (unsigned char)*p > ' '))
		return p;
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

#endif
