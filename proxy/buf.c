/* Growth policy for struct ap_buf: doubling, never shrinking until freed. */
#include <stdlib.h>

#include "buf.h"

int ap_buf_grow(struct ap_buf *b, size_t extra)
{
	size_t need = b->len + extra, cap = b->cap ? b->cap : 256;
	char *np;

	if (need < b->len)
		return AP_ERR;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return AP_ERR;
		cap *= 2;
	}
	np = realloc(b->p, cap);
	if (!np)
		return AP_ERR;
	b->p = np;
	b->cap = cap;
	return AP_OK;
}

void ap_buf_free(struct ap_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
