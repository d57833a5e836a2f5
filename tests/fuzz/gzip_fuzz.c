/* Fuzzes codec_gzip.c. Invariants: hostile input decoded as gzip, as "deflate" and as raw
 * never yields more than the limit, and a refusal leaves the output empty; whatever decodes
 * re-encodes in the format found and decodes back the same; any bytes encoded in each format
 * decode back to themselves, under a limit of exactly their length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIMIT ((size_t)1 << 20)

/* One context and a few buffers for the whole run, as a worker keeps them: each call must
 * leave the streams fit for the next. */
static struct ap_zctx z;
static struct ap_buf out, enc, back;

static bool same(const struct ap_buf *b, const void *p, size_t n)
{
	return b->len == n && (n == 0 || memcmp(b->p, p, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum ap_zfmt fmts[] = {AP_Z_GZIP, AP_Z_ZLIB, AP_Z_RAW};
	const char *why = NULL;

	for (size_t i = 0; i < AP_ARRAY_LEN(fmts); i++) {
		enum ap_zfmt fmt = fmts[i], again;

		ap_buf_clear(&out);
		if (ap_z_decode(&z, &fmt, data, size, &out, LIMIT, &why) != AP_OK) {
			if (!why || out.len != 0)
				abort();
			continue;
		}
		if (out.len > LIMIT || (fmts[i] != AP_Z_ZLIB && fmt != fmts[i]) ||
		    (fmts[i] == AP_Z_ZLIB && fmt != AP_Z_ZLIB && fmt != AP_Z_RAW))
			abort();
		ap_buf_clear(&enc);
		ap_buf_clear(&back);
		again = fmt;
		if (ap_z_encode(&z, fmt, out.p, out.len, &enc, &why) != AP_OK ||
		    ap_z_decode(&z, &again, enc.p, enc.len, &back, out.len, &why) != AP_OK ||
		    again != fmt || !same(&back, out.p, out.len))
			abort();
	}

	for (size_t i = 0; i < AP_ARRAY_LEN(fmts); i++) {
		/* Raw deflate is decoded as sent: labelled "deflate", so it must be recognised;
		 * zlib's raw output can never pass for a zlib header. */
		enum ap_zfmt fmt = fmts[i] == AP_Z_RAW ? AP_Z_ZLIB : fmts[i];

		ap_buf_clear(&enc);
		ap_buf_clear(&back);
		if (ap_z_encode(&z, fmts[i], data, size, &enc, &why) != AP_OK)
			abort();
		if (ap_z_decode(&z, &fmt, enc.p, enc.len, &back, size, &why) != AP_OK)
			abort();
		if (fmt != fmts[i] || !same(&back, data, size))
			abort();
	}
	return 0;
}
