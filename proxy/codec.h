/* Byte codecs the scrubbers peel off and put back: base64 (codec_base64.c) and the
 * zlib family — gzip, zlib "deflate", raw deflate (codec_gzip.c). Each decoder remembers
 * the style it found so the encoder can write the same one back. */
#ifndef AP_CODEC_H
#define AP_CODEC_H

#include <stdbool.h>
#include <zlib.h>

#include "buf.h"

/* ---- base64 ---- */

/* The dialect a base64 text was written in. */
struct ap_b64_style {
	bool url;    /* '-' '_' instead of '+' '/' */
	bool padded; /* '=' padding present (or required: input length was a multiple of 4) */
};

/* Decodes <in, n> (standard or URL alphabet, padded or not, no whitespace, no mixing of
 * alphabets) and appends the bytes to <out>. Fills *style with what it saw. Returns AP_OK,
 * or AP_ERR with *why set to a static reason (bad character, bad length, bad padding,
 * non-zero trailing bits, out of memory); <out> is then left as it was. An empty input
 * gives AP_OK and the style {url = false, padded = true}. */
int ap_base64_decode(const char *in, size_t n, struct ap_buf *out, struct ap_b64_style *style,
                     const char **why);

/* Appends the base64 of <in, n> in <style> to <out>. Returns AP_OK or AP_ERR (memory). */
int ap_base64_encode(const void *in, size_t n, struct ap_buf *out,
                     const struct ap_b64_style *style);

/* ---- percent-encoding (codec_pct.c) ---- */

/* How a percent-encoded text was written, so a re-encoded one reads the same: which bytes
 * appeared literally, how a space was written, the case of the hex digits. */
struct ap_pct_style {
	uint64_t literal[4]; /* bit c: byte c appeared unescaped */
	bool plus_space;     /* a '+' stood for a space (no "%20" seen) */
	bool lower_hex;      /* escapes used lower-case hex digits */
};

/* Decodes <in, n> ('%XX' escapes, '+' as a space) and appends the bytes to <out>; fills
 * *style. Returns AP_OK, or AP_ERR with *why static (a '%' without two hex digits, memory);
 * <out> is then left as it was. */
int ap_pct_decode(const char *in, size_t n, struct ap_buf *out, struct ap_pct_style *style,
                  const char **why);

/* Appends <in, n> percent-encoded to <out>: bytes the original wrote literally (and the
 * RFC 3986 unreserved ones) stay literal, a space is written as it was, everything else
 * is escaped with the original's hex case. '%' and '+' are always escaped, so the result
 * decodes back to <in, n>. AP_OK or AP_ERR (memory). */
int ap_pct_encode(const char *in, size_t n, struct ap_buf *out, const struct ap_pct_style *style);

/* ---- zlib family ---- */

enum ap_zfmt {
	AP_Z_GZIP = 1, /* RFC 1952, possibly several members */
	AP_Z_ZLIB,     /* RFC 1950, what HTTP calls "deflate" */
	AP_Z_RAW,      /* RFC 1951, what some clients wrongly send as "deflate" */
};

/* Reusable zlib state, one per worker: streams are reset, not re-allocated, per call.
 * Zero-initialise, then ap_zctx_free at the end. Not shareable between threads. */
struct ap_zctx {
	z_stream inf;
	z_stream def[3]; /* one deflater per format, made on first use */
	bool inf_ready;
	bool def_ready[3];
	int level; /* compression level for re-encoding, read when a format's deflater is first
	              made; 0 means zlib's default (6) */
};

void ap_zctx_free(struct ap_zctx *z);

/* Decodes <in, n> and appends the result to <out>. *fmt is AP_Z_GZIP for a gzip body, or
 * AP_Z_ZLIB for "deflate" (a zlib stream; raw deflate is accepted too and *fmt then set to
 * AP_Z_RAW). Refuses (AP_ERR, *why static) a corrupt stream, a bad checksum, a truncated
 * stream, trailing garbage, and output beyond <max_out> bytes — which is checked as it
 * inflates: at most max_out + 1 bytes are inflated (the buffer may grow to the next power
 * of two), so a bomb costs little. AP_Z_RAW is accepted as input too. On AP_ERR <out> is
 * left as it was, though *fmt may already say AP_Z_RAW. */
int ap_z_decode(struct ap_zctx *z, enum ap_zfmt *fmt, const void *in, size_t n, struct ap_buf *out,
                size_t max_out, const char **why);

/* Appends <in, n> compressed as <fmt> to <out>. Returns AP_OK or AP_ERR (*why static). */
int ap_z_encode(struct ap_zctx *z, enum ap_zfmt fmt, const void *in, size_t n, struct ap_buf *out,
                const char **why);

#endif
