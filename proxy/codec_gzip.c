/* gzip, zlib and raw deflate bodies in and out, on zlib streams kept per worker and reset per
 * call. Decoding is strict (checksums, no truncation, no trailing bytes) and bounded: output
 * is capped while it inflates, so a bomb is refused after max_out bytes, not after it has
 * filled memory. It does not stream: a body arrives and leaves whole. */
#include <limits.h>

#include "codec.h"

/* zlib counts in uInt; bodies over 4 GiB are fed to it in slices of this size. */
#define Z_SLICE ((size_t)UINT_MAX)

/* First output reservation when the buffer has no spare room: a guess at the ratio, so a
 * typical body inflates with one or two reallocations; later ones double. */
#define Z_FIRST_GUESS(n) ((n) < 4096 / 4 ? 4096 : (n) < SIZE_MAX / 8 ? (n)*4 : (n))

static int window_bits(enum ap_zfmt fmt)
{
	switch (fmt) {
	case AP_Z_GZIP:
		return 16 + MAX_WBITS;
	case AP_Z_ZLIB:
		return MAX_WBITS;
	case AP_Z_RAW:
		return -MAX_WBITS;
	}
	return 0;
}

/* RFC 1950 header: method 8, a window zlib can use, and the check bits. zlib's own raw
 * output can never look like this (CM=8 would mean a non-final stored block with a set
 * padding bit, and zlib pads with zeros), so the test is safe for what clients send. */
static bool zlib_header(const unsigned char *p, size_t n)
{
	return n >= 2 && (p[0] & 0x0f) == Z_DEFLATED && (p[0] >> 4) <= 7 &&
	       ((unsigned)p[0] << 8 | p[1]) % 31 == 0;
}

static const char *inflate_reason(int ret, const z_stream *s)
{
	if (ret == Z_NEED_DICT)
		return "compressed stream needs a preset dictionary";
	if (ret == Z_MEM_ERROR)
		return "out of memory";
	/* zlib's messages are static, but we keep our own vocabulary and only borrow its
	 * distinction between a failed checksum and a malformed stream. */
	if (s->msg && (strcmp(s->msg, "incorrect data check") == 0 ||
	               strcmp(s->msg, "incorrect length check") == 0))
		return "bad checksum in compressed stream";
	if (s->msg && strcmp(s->msg, "incorrect header check") == 0)
		return "bad compressed stream header";
	return "corrupt compressed stream";
}

void ap_zctx_free(struct ap_zctx *z)
{
	if (z->inf_ready)
		inflateEnd(&z->inf);
	z->inf_ready = false;
	for (size_t i = 0; i < AP_ARRAY_LEN(z->def); i++) {
		if (z->def_ready[i])
			deflateEnd(&z->def[i]);
		z->def_ready[i] = false;
	}
}

/* Makes room for the next inflate call: doubles what has been produced so far, but never
 * past <room> (the bytes still allowed, the extra one included). Returns the spare bytes
 * available, 0 when out of memory. */
static size_t make_room(struct ap_buf *out, size_t produced, size_t n, size_t room)
{
	size_t spare = out->cap - out->len, want;

	if (spare == 0) {
		want = produced ? produced : Z_FIRST_GUESS(n);
		if (want > room)
			want = room;
		if (ap_buf_reserve(out, want) != AP_OK)
			return 0;
		spare = out->cap - out->len;
	}
	if (spare > room)
		spare = room;
	return spare > Z_SLICE ? Z_SLICE : spare;
}

int ap_z_decode(struct ap_zctx *z, enum ap_zfmt *fmt, const void *in, size_t n, struct ap_buf *out,
                size_t max_out, const char **why)
{
	z_stream *s = &z->inf;
	const unsigned char *p = in;
	size_t left = n, start = out->len;
	/* One byte past the limit is let through, so reaching it proves the body is too big. */
	size_t limit = max_out < SIZE_MAX ? max_out + 1 : SIZE_MAX;
	int wbits, ret;

	if (n == 0) {
		*why = "empty compressed body";
		return AP_ERR;
	}
	if (*fmt == AP_Z_ZLIB && !zlib_header(p, n))
		*fmt = AP_Z_RAW;
	if (!(wbits = window_bits(*fmt))) {
		*why = "unknown compression format";
		return AP_ERR;
	}
	if (!z->inf_ready) {
		memset(s, 0, sizeof(*s));
		ret = inflateInit2(s, wbits);
		z->inf_ready = ret == Z_OK;
	} else {
		ret = inflateReset2(s, wbits);
	}
	if (ret != Z_OK) {
		*why = ret == Z_MEM_ERROR ? "out of memory" : "cannot set up inflate";
		return AP_ERR;
	}

	for (;;) {
		size_t produced = out->len - start, slice = left < Z_SLICE ? left : Z_SLICE, spare;

		if (produced >= limit) {
			*why = "decoded size over limit";
			goto fail;
		}
		if (!(spare = make_room(out, produced, n, limit - produced))) {
			*why = "out of memory";
			goto fail;
		}
		s->next_in = (Bytef *)p;
		s->avail_in = (uInt)slice;
		s->next_out = (Bytef *)out->p + out->len;
		s->avail_out = (uInt)spare;
		ret = inflate(s, Z_NO_FLUSH);
		out->len += spare - s->avail_out;
		p += slice - s->avail_in;
		left -= slice - s->avail_in;

		if (ret == Z_OK)
			continue;
		if (ret == Z_BUF_ERROR) {
			/* No progress with output room to spare: zlib wants input. More of it may
			 * only be waiting in the next slice; otherwise the body was cut short. */
			if (s->avail_in == 0 && left > 0)
				continue;
			*why = "truncated compressed stream";
			goto fail;
		}
		if (ret != Z_STREAM_END) {
			*why = inflate_reason(ret, s);
			goto fail;
		}
		if (out->len - start >= limit) {
			*why = "decoded size over limit";
			goto fail;
		}
		if (left == 0)
			return AP_OK;
		/* Concatenated gzip members make one body (RFC 1952 2.2); anything else after
		 * the end is refused rather than forwarded unscrubbed or silently dropped. */
		if (*fmt != AP_Z_GZIP || left < 2 || p[0] != 0x1f || p[1] != 0x8b) {
			*why = *fmt == AP_Z_GZIP ? "trailing data after gzip stream"
			                         : "trailing data after deflate stream";
			goto fail;
		}
		if (inflateReset(s) != Z_OK) {
			*why = "cannot set up inflate";
			goto fail;
		}
	}
fail:
	out->len = start;
	return AP_ERR;
}

/* The compression level is read when a format's deflater is first made: set z->level
 * before the first encode. */
int ap_z_encode(struct ap_zctx *z, enum ap_zfmt fmt, const void *in, size_t n, struct ap_buf *out,
                const char **why)
{
	static const unsigned char nothing[1];
	int wbits = window_bits(fmt), ret;
	/* An empty body may come as NULL; zlib takes any pointer with a zero count, but
	 * stepping a null pointer, even by zero, is undefined. */
	const unsigned char *p = n ? in : nothing;
	size_t left = n, start = out->len;
	z_stream *d;

	if (!wbits) {
		*why = "unknown compression format";
		return AP_ERR;
	}
	d = &z->def[fmt - 1];
	if (!z->def_ready[fmt - 1]) {
		memset(d, 0, sizeof(*d));
		ret = deflateInit2(d, z->level ? z->level : Z_DEFAULT_COMPRESSION, Z_DEFLATED,
		                   wbits, 8, Z_DEFAULT_STRATEGY);
		z->def_ready[fmt - 1] = ret == Z_OK;
	} else {
		ret = deflateReset(d);
	}
	if (ret != Z_OK) {
		*why = ret == Z_MEM_ERROR ? "out of memory" : "cannot set up deflate";
		return AP_ERR;
	}
	if (ap_buf_reserve(out, deflateBound(d, n)) != AP_OK) {
		*why = "out of memory";
		return AP_ERR;
	}

	for (;;) {
		size_t slice = left < Z_SLICE ? left : Z_SLICE, spare, used, took;

		/* deflateBound covers the whole output; this only guards against it being
		 * wrong, so a short bound costs a reallocation, never a loop. */
		if (out->cap == out->len && ap_buf_reserve(out, 4096) != AP_OK) {
			*why = "out of memory";
			goto fail;
		}
		spare = out->cap - out->len;
		if (spare > Z_SLICE)
			spare = Z_SLICE;
		d->next_in = (Bytef *)p;
		d->avail_in = (uInt)slice;
		d->next_out = (Bytef *)out->p + out->len;
		d->avail_out = (uInt)spare;
		ret = deflate(d, slice == left ? Z_FINISH : Z_NO_FLUSH);
		used = spare - d->avail_out;
		took = slice - d->avail_in;
		out->len += used;
		p += took;
		left -= took;
		if (ret == Z_STREAM_END)
			return AP_OK;
		if ((ret != Z_OK && ret != Z_BUF_ERROR) || (used == 0 && took == 0)) {
			*why = "compression failed";
			goto fail;
		}
	}
fail:
	out->len = start;
	return AP_ERR;
}
