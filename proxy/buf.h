/* A growable byte buffer that is reused across requests: it keeps its capacity when
 * cleared, so a worker stops allocating once it has seen its largest request. */
#ifndef AP_BUF_H
#define AP_BUF_H

#include <string.h>

#include "ap.h"

/* Owns p. len bytes are valid; cap is the allocation. Zero-initialised is empty. */
struct ap_buf {
	char *p;
	size_t len;
	size_t cap;
};

/* Makes room for <extra> more bytes. Returns AP_OK, or AP_ERR when out of memory or the
 * size would overflow (the buffer is then unchanged). */
int ap_buf_grow(struct ap_buf *b, size_t extra);

/* Frees the storage; the buffer is empty and reusable afterwards. */
void ap_buf_free(struct ap_buf *b);

static inline void ap_buf_clear(struct ap_buf *b)
{
	b->len = 0;
}

static inline int ap_buf_reserve(struct ap_buf *b, size_t extra)
{
	if (AP_LIKELY(b->cap - b->len >= extra))
		return AP_OK;
	return ap_buf_grow(b, extra);
}

/* Appends n bytes. Returns AP_OK or AP_ERR (out of memory). */
static inline int ap_buf_add(struct ap_buf *b, const void *p, size_t n)
{
	if (ap_buf_reserve(b, n) != AP_OK)
		return AP_ERR;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	return AP_OK;
}

static inline int ap_buf_addc(struct ap_buf *b, char c)
{
	if (ap_buf_reserve(b, 1) != AP_OK)
		return AP_ERR;
	b->p[b->len++] = c;
	return AP_OK;
}

static inline struct ap_span ap_buf_span(const struct ap_buf *b)
{
	return (struct ap_span){b->p, b->len};
}

#endif
