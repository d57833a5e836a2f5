/* The lexical pieces of JSON the scrubber is built from: string and number scanning with
 * full validation (escapes, UTF-8, control characters), unescaping and escaping. No tree
 * and no allocation beyond the caller's buffers. */
#ifndef AP_JSON_H
#define AP_JSON_H

#include <stdbool.h>

#include "buf.h"

/* Flags of a scanned string. */
#define AP_JSTR_ESC 1u /* holds at least one backslash escape */

/* Scans the string whose opening quote is at <p> (p < end, *p == '"'). Returns the
 * pointer just past the closing quote and sets *flags, or NULL when the string is
 * unterminated before <end>, holds a control character, invalid UTF-8 (overlong forms,
 * surrogates, > U+10FFFF), or a bad escape (including a lone or reversed surrogate
 * \u pair). Never reads at or beyond <end>. */
const char *ap_json_string(const char *p, const char *end, unsigned *flags);

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
