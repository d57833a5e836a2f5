/* Fuzzes codec_base64.c both ways. Invariants: text the decoder accepts re-encodes, in the
 * style it reported, to exactly the same text; any bytes encoded in any of the four styles
 * decode back to themselves, and the style found re-encodes to the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct ap_b64_style styles[4] = {
        {.url = false, .padded = true},
        {.url = false, .padded = false},
        {.url = true, .padded = true},
        {.url = true, .padded = false},
};

/* Reused across inputs like a worker's buffers, so stale capacity is exercised too. */
static struct ap_buf dec, enc, again;

static bool same(const struct ap_buf *b, const void *p, size_t n)
{
	return b->len == n && (n == 0 || memcmp(b->p, p, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ap_b64_style st;
	const char *why = NULL;

	ap_buf_clear(&dec);
	ap_buf_clear(&enc);
	if (ap_base64_decode((const char *)data, size, &dec, &st, &why) == AP_OK) {
		if (ap_base64_encode(dec.p, dec.len, &enc, &st) != AP_OK || !same(&enc, data, size))
			abort();
	} else if (!why || dec.len != 0) {
		abort();
	}

	for (size_t k = 0; k < 4; k++) {
		ap_buf_clear(&enc);
		ap_buf_clear(&dec);
		ap_buf_clear(&again);
		if (ap_base64_encode(data, size, &enc, &styles[k]) != AP_OK)
			abort();
		if (ap_base64_decode(enc.p, enc.len, &dec, &st, &why) != AP_OK)
			abort();
		if (!same(&dec, data, size))
			abort();
		if (ap_base64_encode(dec.p, dec.len, &again, &st) != AP_OK ||
		    !same(&again, enc.p, enc.len))
			abort();
	}
	return 0;
}
