/* Tests for codec_base64.c and codec_gzip.c: known vectors, every class of bad input, round
 * trips both ways on generated data, a slow reference decoder as oracle, inputs against a
 * guard page, streams cut at every byte, and a gzip bomb decoded under a limit. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"

/* ---- helpers ---- */

/* xorshift64*: fixed seeds make every failure reproducible. */
static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
	rng_state = s ? s : 1;
}

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static bool buf_is(const struct ap_buf *b, const void *p, size_t n)
{
	return b->len == n && (n == 0 || memcmp(b->p, p, n) == 0);
}

static const struct ap_b64_style styles[4] = {
        {.url = false, .padded = true},
        {.url = false, .padded = false},
        {.url = true, .padded = true},
        {.url = true, .padded = false},
};

/* An input at the very end of a readable page, the next page PROT_NONE: reading one byte
 * past the end faults. */
struct guard {
	char *page;
	size_t size;
};

static struct guard guard_make(void)
{
	struct guard g;

	g.size = (size_t)sysconf(_SC_PAGESIZE);
	g.page = mmap(NULL, 2 * g.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(g.page != MAP_FAILED);
	cr_assert_eq(mprotect(g.page + g.size, g.size, PROT_NONE), 0);
	return g;
}

static const char *guard_put(const struct guard *g, const void *p, size_t n)
{
	char *at = g->page + g->size - n;

	cr_assert(n <= g->size);
	if (n)
		memcpy(at, p, n);
	return at;
}

static void guard_free(struct guard *g)
{
	munmap(g->page, 2 * g->size);
}

/* ---- base64: a slow reference decoder, written independently, as the oracle ---- */

static int ref_value(unsigned char c, int *kind)
{
	static const char common[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	const char *hit;

	if (c && (hit = strchr(common, c)))
		return (int)(hit - common);
	*kind |= (c == '+' || c == '/') ? 1 : (c == '-' || c == '_') ? 2 : 4;
	return c == '+' || c == '-' ? 62 : c == '/' || c == '_' ? 63 : -1;
}

/* Returns the decoded length, or -1 if <s> is not canonical base64 of one dialect. */
static long ref_decode(const char *s, size_t n, unsigned char *out, struct ap_b64_style *st)
{
	size_t data = n, olen = 0;
	unsigned acc = 0, bits = 0;
	int kind = 0;

	while (data > 0 && s[data - 1] == '=')
		data--;
	if (n - data > 2 || (n != data && n % 4 != 0) || n % 4 == 1)
		return -1;
	for (size_t i = 0; i < data; i++) {
		int v = ref_value((unsigned char)s[i], &kind);
		if (v < 0)
			return -1;
		acc = (acc << 6 | (unsigned)v) & 0xfff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[olen++] = (unsigned char)(acc >> bits);
		}
	}
	if (kind == 3 || (acc & ((1u << bits) - 1)) != 0)
		return -1;
	st->url = kind == 2;
	st->padded = n % 4 == 0;
	return (long)olen;
}

/* ---- base64: known vectors ---- */

struct b64_vec {
	const char *plain;
	size_t plain_n;
	const char *enc[4]; /* in the order of styles[] */
};

#define V(p, a, b, c, d)                                                                           \
	{                                                                                          \
		p, sizeof(p) - 1,                                                                  \
		{                                                                                  \
			a, b, c, d                                                                 \
		}                                                                                  \
	}
static const struct b64_vec vectors[] = {
        /* RFC 4648 section 10 */
        V("", "", "", "", ""),
        V("f", "Zg==", "Zg", "Zg==", "Zg"),
        V("fo", "Zm8=", "Zm8", "Zm8=", "Zm8"),
        V("foo", "Zm9v", "Zm9v", "Zm9v", "Zm9v"),
        V("foob", "Zm9vYg==", "Zm9vYg", "Zm9vYg==", "Zm9vYg"),
        V("fooba", "Zm9vYmE=", "Zm9vYmE", "Zm9vYmE=", "Zm9vYmE"),
        V("foobar", "Zm9vYmFy", "Zm9vYmFy", "Zm9vYmFy", "Zm9vYmFy"),
        /* the two characters the alphabets disagree on */
        V("\xfb\xff", "+/8=", "+/8", "-_8=", "-_8"),
        V("\xfb\xef\xbe", "++++", "++++", "----", "----"),
        V("\xff\xff\xff", "////", "////", "____", "____"),
        V("\x00", "AA==", "AA", "AA==", "AA"),
        V("\x00\x00\x00\x00", "AAAAAA==", "AAAAAA", "AAAAAA==", "AAAAAA"),
};
#undef V

Test(base64, known_vectors_encode)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(vectors); i++) {
		for (size_t k = 0; k < 4; k++) {
			struct ap_buf b = {0};

			cr_assert_eq(ap_base64_encode(vectors[i].plain, vectors[i].plain_n, &b,
			                              &styles[k]),
			             AP_OK);
			cr_assert(buf_is(&b, vectors[i].enc[k], strlen(vectors[i].enc[k])),
			          "vector %zu style %zu: got '%.*s' want '%s'", i, k, (int)b.len,
			          b.p ? b.p : "", vectors[i].enc[k]);
			ap_buf_free(&b);
		}
	}
}

Test(base64, known_vectors_decode)
{
	for (size_t i = 0; i < AP_ARRAY_LEN(vectors); i++) {
		for (size_t k = 0; k < 4; k++) {
			const char *e = vectors[i].enc[k];
			bool specific = strpbrk(e, "+/-_") != NULL;
			struct ap_buf b = {0};
			struct ap_b64_style st;
			const char *why = NULL;

			cr_assert_eq(ap_base64_decode(e, strlen(e), &b, &st, &why), AP_OK,
			             "'%s': %s", e, why);
			cr_assert(buf_is(&b, vectors[i].plain, vectors[i].plain_n), "'%s'", e);
			/* The alphabet is only known when a distinguishing character is present;
			 * padded is reported for any length that is a multiple of 4. */
			cr_assert_eq(st.url, specific && styles[k].url, "'%s'", e);
			cr_assert_eq(st.padded, strlen(e) % 4 == 0, "'%s'", e);
			ap_buf_free(&b);
		}
	}
}

Test(base64, empty_input_appends_nothing)
{
	struct ap_buf b = {0};
	struct ap_b64_style st = {.url = true, .padded = false};
	const char *why = NULL;

	cr_assert_eq(ap_base64_decode("", 0, &b, &st, &why), AP_OK);
	cr_assert_eq(ap_base64_decode(NULL, 0, &b, &st, &why), AP_OK);
	cr_assert_eq(b.len, 0);
	cr_assert(!st.url && st.padded);
	cr_assert_eq(ap_base64_encode(NULL, 0, &b, &styles[3]), AP_OK);
	cr_assert_eq(b.len, 0);
	ap_buf_free(&b);
}

Test(base64, appends_after_existing_content)
{
	struct ap_buf b = {0};
	struct ap_b64_style st;
	const char *why = NULL;

	ap_buf_add(&b, "x:", 2);
	cr_assert_eq(ap_base64_decode("Zm9vYmFy", 8, &b, &st, &why), AP_OK);
	cr_assert(buf_is(&b, "x:foobar", 8));
	cr_assert_eq(ap_base64_encode("foob", 4, &b, &st), AP_OK);
	cr_assert(buf_is(&b, "x:foobarZm9vYg==", 16));
	ap_buf_free(&b);
}

/* ---- base64: every class of bad input ---- */

struct b64_bad {
	const char *in;
	size_t n;
	const char *why; /* a word the reason must contain */
};

#define B(s, w)                                                                                    \
	{                                                                                          \
		s, sizeof(s) - 1, w                                                                \
	}
static const struct b64_bad bad[] = {
        /* a length of 1 mod 4 cannot be produced by any encoder */
        B("Z", "length"),
        B("Zm9vY", "length"),
        B("Zm9vYg===", "length"),
        B("Zm8==", "length"),
        B("=", "length"),
        /* characters outside both alphabets, whitespace included */
        B("Zm 9", "character"),
        B("Zm9\n", "character"),
        B("Zm9v\r\nYg==", "character"),
        B("\tZm9", "character"),
        B("Zm.v", "character"),
        B("Zm9v!A", "character"),
        B("Zm\x80v", "character"),
        B("Zm\xffv", "character"),
        B("Zm\0v", "character"),
        B("Zm9v~~", "character"),
        B("Zm9vYm%3", "character"),
        /* padding: only at the end, only 1 or 2, only on a multiple of 4 */
        B("Z===", "padding"),
        B("====", "padding"),
        B("Zg=A", "padding"),
        B("Zg=", "padding"),
        B("Zm9=Zm9v", "padding"),
        B("=Zm9", "padding"),
        B("Zg==Zg==", "padding"),
        B("Zm8=Zg", "padding"),
        /* one text, one alphabet */
        B("+/-_", "alphabet"),
        B("Zm+vYm-y", "alphabet"),
        B("ab+_", "alphabet"),
        B("__//", "alphabet"),
        /* bits no output byte holds must be zero (canonical form) */
        B("Zh==", "trailing"),
        B("Zh", "trailing"),
        B("Zm9=", "trailing"),
        B("Zm9", "trailing"),
        B("Zm9vYh", "trailing"),
        B("AB==", "trailing"),
        B("AAB=", "trailing"),
        B("__9", "trailing"),
};
#undef B

Test(base64, rejects_every_bad_class)
{
	struct guard g = guard_make();

	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		struct ap_buf b = {0};
		struct ap_b64_style st;
		const char *why = NULL, *in = guard_put(&g, bad[i].in, bad[i].n);

		ap_buf_add(&b, "keep", 4);
		cr_assert_eq(ap_base64_decode(in, bad[i].n, &b, &st, &why), AP_ERR, "case %zu", i);
		cr_assert_not_null(why, "case %zu", i);
		cr_assert(strstr(why, bad[i].why), "case %zu: reason '%s' lacks '%s'", i, why,
		          bad[i].why);
		cr_assert(buf_is(&b, "keep", 4), "case %zu: output changed on error", i);
		ap_buf_free(&b);
	}
	guard_free(&g);
}

/* The table, checked byte by byte against the oracle: each character in the third place of
 * "AA?A" is accepted exactly when the reference accepts it, with the same value. */
Test(base64, every_byte_value)
{
	for (int c = 0; c < 256; c++) {
		char in[4] = {'A', 'A', (char)c, 'A'};
		unsigned char want[3];
		struct ap_b64_style st, rst;
		struct ap_buf b = {0};
		const char *why = NULL;
		long rn = ref_decode(in, 4, want, &rst);
		int r = ap_base64_decode(in, 4, &b, &st, &why);

		cr_assert_eq(r == AP_OK, rn >= 0, "byte 0x%02x", c);
		if (rn >= 0) {
			cr_assert(buf_is(&b, want, (size_t)rn), "byte 0x%02x", c);
			cr_assert_eq(st.url, rst.url, "byte 0x%02x", c);
		}
		ap_buf_free(&b);
	}
}

/* ---- base64: properties on generated data ---- */

Test(base64, decode_of_encode_is_identity)
{
	unsigned char in[300];
	struct ap_buf e = {0}, d = {0};

	rng_seed(1);
	for (int i = 0; i < 5000; i++) {
		size_t n = rng() % sizeof(in);
		const struct ap_b64_style *s = &styles[rng() % 4];
		struct ap_b64_style found;
		const char *why = NULL;

		for (size_t j = 0; j < n; j++)
			in[j] = (unsigned char)rng();
		ap_buf_clear(&e);
		ap_buf_clear(&d);
		cr_assert_eq(ap_base64_encode(in, n, &e, s), AP_OK);
		cr_assert_eq(e.len, s->padded ? (n + 2) / 3 * 4 : (n * 4 + 2) / 3);
		cr_assert_eq(ap_base64_decode(e.p, e.len, &d, &found, &why), AP_OK, "%s", why);
		cr_assert(buf_is(&d, in, n), "iteration %d", i);
		if (memchr(e.p, s->url ? '-' : '+', e.len) ||
		    memchr(e.p, s->url ? '_' : '/', e.len))
			cr_assert_eq(found.url, s->url);
		if (s->padded)
			cr_assert(found.padded);
	}
	ap_buf_free(&e);
	ap_buf_free(&d);
}

/* Random texts over the alphabets and '=', most of them invalid: the decoder must agree
 * with the oracle on every one, and whatever it accepts must re-encode to the same text. */
Test(base64, encode_of_decode_is_identity)
{
	static const char std[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char url[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char in[48];
	unsigned char want[48];
	struct ap_buf d = {0}, e = {0};
	int accepted = 0;

	rng_seed(2);
	for (int i = 0; i < 50000; i++) {
		size_t n = rng() % 41;
		uint64_t mode = rng() % 8;
		struct ap_b64_style st, rst;
		const char *why = NULL;
		long rn;
		int r;

		for (size_t j = 0; j < n; j++) {
			uint64_t x = rng();
			/* Mostly one alphabet; sometimes mixed, or a stray '=' or other byte. */
			in[j] = mode == 0    ? (char)x
			        : mode == 1  ? "+/-_="[x % 5]
			        : (mode & 1) ? std[x % 64]
			                     : url[x % 64];
		}
		if (n >= 2 && mode >= 4 && rng() % 2) {
			in[n - 1] = '=';
			if (rng() % 2)
				in[n - 2] = '=';
		}
		ap_buf_clear(&d);
		ap_buf_clear(&e);
		rn = ref_decode(in, n, want, &rst);
		r = ap_base64_decode(in, n, &d, &st, &why);
		cr_assert_eq(r == AP_OK, rn >= 0, "iteration %d: '%.*s' (%s)", i, (int)n, in,
		             r == AP_OK ? "accepted" : why);
		if (r != AP_OK) {
			cr_assert_eq(d.len, 0);
			continue;
		}
		accepted++;
		cr_assert(buf_is(&d, want, (size_t)rn));
		if (n)
			cr_assert(st.url == rst.url && st.padded == rst.padded);
		cr_assert_eq(ap_base64_encode(d.p, d.len, &e, &st), AP_OK);
		cr_assert(buf_is(&e, in, n), "iteration %d: '%.*s' re-encoded as '%.*s'", i, (int)n,
		          in, (int)e.len, e.p);
	}
	/* The generator must exercise the accepting path a lot, not just the errors. */
	cr_assert_gt(accepted, 5000);
	ap_buf_free(&d);
	ap_buf_free(&e);
}

/* Every prefix and every suffix of texts in each style, at the end of a readable page: no
 * read past the input, and the same verdict as the oracle. */
Test(base64, no_over_read_at_any_length)
{
	struct guard g = guard_make();
	unsigned char plain[100], want[100];
	struct ap_buf e = {0}, d = {0};

	rng_seed(3);
	for (size_t j = 0; j < sizeof(plain); j++)
		plain[j] = (unsigned char)rng();
	for (size_t k = 0; k < 4; k++) {
		ap_buf_clear(&e);
		cr_assert_eq(ap_base64_encode(plain, sizeof(plain), &e, &styles[k]), AP_OK);
		for (size_t cut = 0; cut <= e.len; cut++) {
			for (int side = 0; side < 2; side++) {
				const char *src = side ? e.p + cut : e.p;
				size_t n = side ? e.len - cut : cut;
				const char *in = guard_put(&g, src, n), *why = NULL;
				struct ap_b64_style st, rst;
				long rn = ref_decode(src, n, want, &rst);

				ap_buf_clear(&d);
				cr_assert_eq(ap_base64_decode(in, n, &d, &st, &why) == AP_OK,
				             rn >= 0, "style %zu cut %zu side %d", k, cut, side);
			}
		}
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(vectors); i++) {
		for (size_t k = 0; k < 4; k++) {
			const char *s = vectors[i].enc[k], *why = NULL;
			struct ap_b64_style st;

			ap_buf_clear(&d);
			cr_assert_eq(ap_base64_decode(guard_put(&g, s, strlen(s)), strlen(s), &d,
			                              &st, &why),
			             AP_OK);
		}
	}
	ap_buf_free(&e);
	ap_buf_free(&d);
	guard_free(&g);
}

/* ---- zlib family: fixed vectors made once by the gzip command ---- */

/* printf 'hello, anonproxy\n' | gzip -c -n | xxd -i */
static const unsigned char gz_hello[] = {
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd,
        0xc9, 0xc9, 0xd7, 0x51, 0x48, 0xcc, 0xcb, 0xcf, 0x2b, 0x28, 0xca, 0xaf, 0xa8,
        0xe4, 0x02, 0x00, 0xdf, 0xa6, 0xbc, 0xdb, 0x11, 0x00, 0x00, 0x00,
};
static const char hello[] = "hello, anonproxy\n";

/* gzip -c -9 imei.json | xxd -i (a file name and an mtime in the header) */
static const unsigned char gz_named[] = {
        0x1f, 0x8b, 0x08, 0x08, 0x00, 0xf1, 0x53, 0x65, 0x02, 0x03, 0x69, 0x6d, 0x65, 0x69,
        0x2e, 0x6a, 0x73, 0x6f, 0x6e, 0x00, 0xab, 0x56, 0xca, 0xcc, 0x4d, 0xcd, 0x54, 0xb2,
        0x52, 0x32, 0xb1, 0x34, 0x30, 0x34, 0x35, 0x31, 0x32, 0x30, 0x36, 0x32, 0x36, 0x37,
        0x35, 0xb4, 0x50, 0xaa, 0x05, 0x00, 0x6b, 0x4a, 0xd5, 0x95, 0x1a, 0x00, 0x00, 0x00,
};
static const char named[] = "{\"imei\":\"490154203237518\"}";

/* (printf 'first ' | gzip -c -n; printf 'second' | gzip -c -n) | xxd -i */
static const unsigned char gz_multi[] = {
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0xcb, 0x2c,
        0x2a, 0x2e, 0x51, 0x00, 0x00, 0xfc, 0x7a, 0xf1, 0x1c, 0x06, 0x00, 0x00, 0x00,
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x2b, 0x4e, 0x4d,
        0xce, 0xcf, 0x4b, 0x01, 0x00, 0x69, 0x11, 0x1f, 0xb6, 0x06, 0x00, 0x00, 0x00,
};
#define GZ_MULTI_FIRST 26 /* where the second member starts */

/* A gzip member is a 10-byte header (no optional fields here), raw deflate, 8-byte trailer:
 * the middle of gz_hello is what a client that sends raw deflate as "deflate" sends. */
#define GZ_HELLO_RAW     (gz_hello + 10)
#define GZ_HELLO_RAW_LEN (sizeof(gz_hello) - 18)

#define MIB ((size_t)1 << 20)

/* Decodes and expects success with <want>; returns the format found. */
static enum ap_zfmt z_ok(struct ap_zctx *z, enum ap_zfmt fmt, const void *in, size_t n,
                         const void *want, size_t want_n)
{
	struct ap_buf out = {0};
	const char *why = NULL;

	cr_assert_eq(ap_z_decode(z, &fmt, in, n, &out, MIB, &why), AP_OK, "%s", why);
	cr_assert(buf_is(&out, want, want_n), "decoded %zu bytes, want %zu", out.len, want_n);
	ap_buf_free(&out);
	return fmt;
}

/* Decodes and expects refusal; returns the reason. */
static const char *z_err(struct ap_zctx *z, enum ap_zfmt fmt, const void *in, size_t n)
{
	struct ap_buf out = {0};
	const char *why = NULL;

	ap_buf_add(&out, "keep", 4);
	cr_assert_eq(ap_z_decode(z, &fmt, in, n, &out, MIB, &why), AP_ERR);
	cr_assert_not_null(why);
	cr_assert(buf_is(&out, "keep", 4), "output changed on error");
	ap_buf_free(&out);
	return why;
}

/* An independent compressor (zlib's own API, not ap_z_encode) for test inputs. */
static void deflate_with(int wbits, const void *in, size_t n, struct ap_buf *out)
{
	z_stream s = {0};

	cr_assert_eq(deflateInit2(&s, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
	cr_assert_eq(ap_buf_reserve(out, deflateBound(&s, n)), AP_OK);
	s.next_in = (Bytef *)in;
	s.avail_in = (uInt)n;
	s.next_out = (Bytef *)out->p + out->len;
	s.avail_out = (uInt)(out->cap - out->len);
	cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
	out->len += s.total_out;
	deflateEnd(&s);
}

static void fill_text(unsigned char *p, size_t n, uint64_t seed)
{
	static const char *words[] = {
	        "imei",       "\"gaid\":", "490154203237518",   ", ", "{", "}",
	        "android_id", "wifi_mac",  "02:00:00:00:00:00", "\n"};
	size_t i = 0;

	rng_seed(seed);
	while (i < n) {
		const char *w = words[rng() % AP_ARRAY_LEN(words)];
		for (; *w && i < n; w++)
			p[i++] = (unsigned char)*w;
	}
}

Test(zlib, gzip_command_vectors)
{
	struct ap_zctx z = {0};

	cr_assert_eq(z_ok(&z, AP_Z_GZIP, gz_hello, sizeof(gz_hello), hello, strlen(hello)),
	             AP_Z_GZIP);
	cr_assert_eq(z_ok(&z, AP_Z_GZIP, gz_named, sizeof(gz_named), named, strlen(named)),
	             AP_Z_GZIP);
	ap_zctx_free(&z);
}

Test(zlib, multi_member_gzip)
{
	struct ap_zctx z = {0};
	struct ap_buf two = {0};
	const char *why = NULL;

	z_ok(&z, AP_Z_GZIP, gz_multi, sizeof(gz_multi), "first second", 12);
	/* members made by zlib, one of them empty */
	deflate_with(16 + 15, "abc", 3, &two);
	deflate_with(16 + 15, "", 0, &two);
	deflate_with(16 + 15, "def", 3, &two);
	cr_assert_eq(ap_z_encode(&z, AP_Z_GZIP, "ghi", 3, &two, &why), AP_OK);
	z_ok(&z, AP_Z_GZIP, two.p, two.len, "abcdefghi", 9);
	ap_buf_free(&two);
	ap_zctx_free(&z);
}

Test(zlib, zlib_stream)
{
	struct ap_zctx z = {0};
	unsigned char src[5000];
	unsigned char dst[6000];
	uLongf dn = sizeof(dst);

	fill_text(src, sizeof(src), 4);
	cr_assert_eq(compress2(dst, &dn, src, sizeof(src), 9), Z_OK);
	cr_assert_eq(z_ok(&z, AP_Z_ZLIB, dst, dn, src, sizeof(src)), AP_Z_ZLIB);
	ap_zctx_free(&z);
}

Test(zlib, raw_deflate_sent_as_deflate)
{
	struct ap_zctx z = {0};
	struct ap_buf re = {0}, back = {0};
	enum ap_zfmt fmt;
	const char *why = NULL;

	cr_assert_eq(z_ok(&z, AP_Z_ZLIB, GZ_HELLO_RAW, GZ_HELLO_RAW_LEN, hello, strlen(hello)),
	             AP_Z_RAW);
	/* put back in the format the client used, and readable again as "deflate" */
	cr_assert_eq(ap_z_encode(&z, AP_Z_RAW, hello, strlen(hello), &re, &why), AP_OK);
	fmt = AP_Z_ZLIB;
	cr_assert_eq(ap_z_decode(&z, &fmt, re.p, re.len, &back, MIB, &why), AP_OK);
	cr_assert_eq(fmt, AP_Z_RAW);
	cr_assert(buf_is(&back, hello, strlen(hello)));
	/* and as explicit raw */
	cr_assert_eq(z_ok(&z, AP_Z_RAW, re.p, re.len, hello, strlen(hello)), AP_Z_RAW);
	ap_buf_free(&re);
	ap_buf_free(&back);
	ap_zctx_free(&z);
}

/* A raw stream whose first two bytes pass the zlib check bits, but name a window (CINFO 8)
 * no zlib stream may use: a non-final stored block of 28 bytes (its header's padding bits
 * set), then an empty final stored block. It is raw deflate, and decodes as such. */
Test(zlib, raw_deflate_that_almost_looks_like_zlib)
{
	struct ap_zctx z = {0};
	unsigned char raw[5 + 28 + 5] = {0x88, 28, 0x00, 0xe3, 0xff};
	unsigned char want[28];

	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = raw[5 + i] = (unsigned char)('a' + i % 26);
	memcpy(raw + 5 + 28, "\x01\x00\x00\xff\xff", 5);
	cr_assert_eq(((unsigned)raw[0] << 8 | raw[1]) % 31, 0);
	cr_assert_eq(z_ok(&z, AP_Z_ZLIB, raw, sizeof(raw), want, sizeof(want)), AP_Z_RAW);
	ap_zctx_free(&z);
}

Test(zlib, round_trip_every_format_and_size)
{
	static const size_t sizes[] = {0, 1, 2, 100, 4096, 65536, 300000};
	static const enum ap_zfmt fmts[] = {AP_Z_GZIP, AP_Z_ZLIB, AP_Z_RAW};
	static const int levels[] = {0, 1, 9};
	unsigned char *src = malloc(300000);

	cr_assert_not_null(src);
	for (size_t l = 0; l < AP_ARRAY_LEN(levels); l++) {
		struct ap_zctx z = {.level = levels[l]};

		for (size_t i = 0; i < AP_ARRAY_LEN(sizes); i++) {
			for (int kind = 0; kind < 2; kind++) {
				if (kind) {
					rng_seed(5 + i);
					for (size_t j = 0; j < sizes[i]; j++)
						src[j] = (unsigned char)rng();
				} else {
					fill_text(src, sizes[i], 6 + i);
				}
				for (size_t f = 0; f < 3; f++) {
					struct ap_buf c = {0}, d = {0};
					enum ap_zfmt fmt = fmts[f];
					const char *why = NULL;

					cr_assert_eq(ap_z_encode(&z, fmt, src, sizes[i], &c, &why),
					             AP_OK);
					cr_assert_eq(ap_z_decode(&z, &fmt, c.p, c.len, &d, sizes[i],
					                         &why),
					             AP_OK, "%s", why);
					cr_assert_eq(fmt, fmts[f]);
					cr_assert(buf_is(&d, src, sizes[i]));
					ap_buf_free(&c);
					ap_buf_free(&d);
				}
			}
		}
		ap_zctx_free(&z);
	}
	free(src);
}

Test(zlib, output_appended_and_limit_is_exact)
{
	struct ap_zctx z = {0};
	unsigned char src[100000];
	struct ap_buf c = {0}, d = {0};
	enum ap_zfmt fmt = AP_Z_GZIP;
	const char *why = NULL;

	fill_text(src, sizeof(src), 7);
	cr_assert_eq(ap_z_encode(&z, AP_Z_GZIP, src, sizeof(src), &c, &why), AP_OK);
	ap_buf_add(&d, "pre", 3);
	cr_assert_eq(ap_z_decode(&z, &fmt, c.p, c.len, &d, sizeof(src), &why), AP_OK);
	cr_assert_eq(d.len, 3 + sizeof(src));
	cr_assert(memcmp(d.p, "pre", 3) == 0 && memcmp(d.p + 3, src, sizeof(src)) == 0);
	ap_buf_clear(&d);
	ap_buf_add(&d, "pre", 3);
	cr_assert_eq(ap_z_decode(&z, &fmt, c.p, c.len, &d, sizeof(src) - 1, &why), AP_ERR);
	cr_assert_str_eq(why, "decoded size over limit");
	cr_assert(buf_is(&d, "pre", 3));
	ap_buf_free(&c);
	ap_buf_free(&d);
	ap_zctx_free(&z);
}

Test(zlib, bad_checksums)
{
	struct ap_zctx z = {0};
	unsigned char g[sizeof(gz_hello)];
	unsigned char zl[64];
	uLongf zn = sizeof(zl);

	memcpy(g, gz_hello, sizeof(g));
	g[sizeof(g) - 8] ^= 1; /* CRC-32 */
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(g)), "bad checksum in compressed stream");
	memcpy(g, gz_hello, sizeof(g));
	g[sizeof(g) - 4] ^= 1; /* ISIZE */
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(g)), "bad checksum in compressed stream");
	cr_assert_eq(compress2(zl, &zn, (const Bytef *)hello, strlen(hello), 6), Z_OK);
	zl[zn - 1] ^= 0x80; /* Adler-32 */
	cr_assert_str_eq(z_err(&z, AP_Z_ZLIB, zl, zn), "bad checksum in compressed stream");
	ap_zctx_free(&z);
}

Test(zlib, corrupt_streams)
{
	struct ap_zctx z = {0};
	unsigned char g[sizeof(gz_hello)];

	memcpy(g, gz_hello, sizeof(g));
	g[2] = 7; /* compression method */
	z_err(&z, AP_Z_GZIP, g, sizeof(g));
	memcpy(g, gz_hello, sizeof(g));
	g[0] = 0x1e; /* magic */
	z_err(&z, AP_Z_GZIP, g, sizeof(g));
	memcpy(g, gz_hello, sizeof(g));
	g[10] = 0xff; /* reserved block type */
	z_err(&z, AP_Z_GZIP, g, sizeof(g));
	/* a gzip body labelled "deflate", and a zlib body labelled gzip */
	z_err(&z, AP_Z_ZLIB, gz_hello, sizeof(gz_hello));
	z_err(&z, AP_Z_GZIP, "\x78\x9c\x03\x00\x00\x00\x00\x01", 8);
	/* random bytes, in every format: refused or decoded, never more than the limit */
	rng_seed(8);
	for (int i = 0; i < 2000; i++) {
		unsigned char junk[64];
		struct ap_buf out = {0};
		enum ap_zfmt fmt = (enum ap_zfmt)(1 + i % 3);
		const char *why = NULL;

		for (size_t j = 0; j < sizeof(junk); j++)
			junk[j] = (unsigned char)rng();
		if (ap_z_decode(&z, &fmt, junk, 1 + rng() % sizeof(junk), &out, 4096, &why) !=
		    AP_OK)
			cr_assert(why && out.len == 0);
		cr_assert_leq(out.len, 4096);
		ap_buf_free(&out);
	}
	ap_zctx_free(&z);
}

Test(zlib, empty_and_unknown)
{
	struct ap_zctx z = {0};
	struct ap_buf out = {0};
	enum ap_zfmt fmt = (enum ap_zfmt)7;
	const char *why = NULL;

	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, "", 0), "empty compressed body");
	cr_assert_str_eq(z_err(&z, AP_Z_ZLIB, NULL, 0), "empty compressed body");
	cr_assert_str_eq(z_err(&z, AP_Z_RAW, "", 0), "empty compressed body");
	cr_assert_eq(ap_z_decode(&z, &fmt, gz_hello, sizeof(gz_hello), &out, MIB, &why), AP_ERR);
	cr_assert_eq(ap_z_encode(&z, (enum ap_zfmt)0, "a", 1, &out, &why), AP_ERR);
	cr_assert_eq(out.len, 0);
	ap_buf_free(&out);
	ap_zctx_free(&z);
}

Test(zlib, preset_dictionary_refused)
{
	struct ap_zctx z = {0};
	z_stream s = {0};
	unsigned char c[128];

	cr_assert_eq(deflateInit(&s, 6), Z_OK);
	cr_assert_eq(deflateSetDictionary(&s, (const Bytef *)"hello", 5), Z_OK);
	s.next_in = (Bytef *)hello;
	s.avail_in = (uInt)strlen(hello);
	s.next_out = c;
	s.avail_out = sizeof(c);
	cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
	cr_assert(strstr(z_err(&z, AP_Z_ZLIB, c, s.total_out), "dictionary"));
	deflateEnd(&s);
	ap_zctx_free(&z);
}

/* Cut at every length: refused every time except at full length (and, for the two-member
 * body, at the end of the first member, which is a complete gzip body itself). */
static void every_cut(struct ap_zctx *z, enum ap_zfmt fmt, const unsigned char *in, size_t n,
                      const void *want, size_t want_n, size_t also_ok)
{
	struct guard g = guard_make();

	for (size_t cut = 0; cut <= n; cut++) {
		const char *p = guard_put(&g, in, cut), *why = NULL;
		struct ap_buf out = {0};
		enum ap_zfmt f = fmt;
		int r = ap_z_decode(z, &f, p, cut, &out, MIB, &why);

		if (cut == n) {
			cr_assert_eq(r, AP_OK, "full length: %s", why);
			cr_assert(buf_is(&out, want, want_n));
		} else if (cut == also_ok) {
			cr_assert_eq(r, AP_OK, "cut %zu: %s", cut, why);
		} else {
			cr_assert_eq(r, AP_ERR, "cut %zu of %zu accepted", cut, n);
			cr_assert_eq(out.len, 0);
		}
		ap_buf_free(&out);
	}
	guard_free(&g);
}

Test(zlib, truncated_at_every_byte)
{
	struct ap_zctx z = {0};
	unsigned char src[3000];
	struct ap_buf c[3] = {{0}};
	const char *why = NULL;

	every_cut(&z, AP_Z_GZIP, gz_hello, sizeof(gz_hello), hello, strlen(hello), SIZE_MAX);
	every_cut(&z, AP_Z_GZIP, gz_named, sizeof(gz_named), named, strlen(named), SIZE_MAX);
	every_cut(&z, AP_Z_GZIP, gz_multi, sizeof(gz_multi), "first second", 12, GZ_MULTI_FIRST);
	every_cut(&z, AP_Z_ZLIB, GZ_HELLO_RAW, GZ_HELLO_RAW_LEN, hello, strlen(hello), SIZE_MAX);
	fill_text(src, sizeof(src), 9);
	for (int f = 0; f < 3; f++) {
		cr_assert_eq(ap_z_encode(&z, (enum ap_zfmt)(AP_Z_GZIP + f), src, sizeof(src), &c[f],
		                         &why),
		             AP_OK);
		every_cut(&z, (enum ap_zfmt)(AP_Z_GZIP + f), (unsigned char *)c[f].p, c[f].len, src,
		          sizeof(src), SIZE_MAX);
		/* zlib and raw bodies also arrive labelled "deflate" */
		if (f)
			every_cut(&z, AP_Z_ZLIB, (unsigned char *)c[f].p, c[f].len, src,
			          sizeof(src), SIZE_MAX);
		ap_buf_free(&c[f]);
	}
	ap_zctx_free(&z);
}

Test(zlib, trailing_data)
{
	struct ap_zctx z = {0};
	unsigned char g[sizeof(gz_hello) + 4];
	unsigned char zl[64];
	uLongf zn = sizeof(zl) - 1;

	memcpy(g, gz_hello, sizeof(gz_hello));
	memcpy(g + sizeof(gz_hello), "x", 1);
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(gz_hello) + 1),
	                 "trailing data after gzip stream");
	memcpy(g + sizeof(gz_hello), "\x1f", 1);
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(gz_hello) + 1),
	                 "trailing data after gzip stream");
	memset(g + sizeof(gz_hello), 0, 4);
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(g)), "trailing data after gzip stream");
	/* the magic of a next member, then nothing: a truncated member, not trailing data */
	memcpy(g + sizeof(gz_hello), "\x1f\x8b", 2);
	cr_assert_str_eq(z_err(&z, AP_Z_GZIP, g, sizeof(gz_hello) + 2),
	                 "truncated compressed stream");

	cr_assert_eq(compress2(zl, &zn, (const Bytef *)hello, strlen(hello), 6), Z_OK);
	zl[zn] = 'x';
	cr_assert_str_eq(z_err(&z, AP_Z_ZLIB, zl, zn + 1), "trailing data after deflate stream");
	cr_assert_str_eq(z_err(&z, AP_Z_ZLIB, GZ_HELLO_RAW, GZ_HELLO_RAW_LEN + 1),
	                 "trailing data after deflate stream");
	/* only gzip has members: a zlib stream followed by one is trailing data */
	{
		unsigned char two[64 + sizeof(gz_hello)];

		memcpy(two, zl, zn);
		memcpy(two + zn, gz_hello, sizeof(gz_hello));
		cr_assert_str_eq(z_err(&z, AP_Z_ZLIB, two, zn + sizeof(gz_hello)),
		                 "trailing data after deflate stream");
	}
	ap_zctx_free(&z);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 100 MiB of zeros in about 100 KB: refused after 1 MiB, in a buffer that never grew past
 * the limit rounded up to the buffer's next power of two. */
Test(zlib, gzip_bomb_stops_at_limit)
{
	struct ap_zctx z = {0};
	struct ap_buf bomb = {0}, out = {0};
	static unsigned char zeros[MIB];
	z_stream s = {0};
	enum ap_zfmt fmt = AP_Z_GZIP;
	const char *why = NULL;
	double t0;

	cr_assert_eq(deflateInit2(&s, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	cr_assert_eq(ap_buf_reserve(&bomb, deflateBound(&s, 100 * MIB)), AP_OK);
	s.next_out = (Bytef *)bomb.p;
	s.avail_out = (uInt)bomb.cap;
	for (int i = 0; i < 100; i++) {
		s.next_in = zeros;
		s.avail_in = sizeof(zeros);
		cr_assert_eq(deflate(&s, i == 99 ? Z_FINISH : Z_NO_FLUSH),
		             i == 99 ? Z_STREAM_END : Z_OK);
	}
	bomb.len = s.total_out;
	deflateEnd(&s);
	cr_assert_lt(bomb.len, 200 * 1024);

	t0 = now();
	cr_assert_eq(ap_z_decode(&z, &fmt, bomb.p, bomb.len, &out, MIB, &why), AP_ERR);
	cr_assert_str_eq(why, "decoded size over limit");
	cr_assert_leq(out.cap, 2 * MIB, "buffer grew to %zu", out.cap);
	cr_assert_eq(out.len, 0);
	cr_assert_lt(now() - t0, 1.0);

	/* A reused buffer with more spare room than the limit: still stopped at the limit, and
	 * nothing written past it (the bomb inflates to zeros, the sentinel is not zero). */
	ap_buf_reserve(&out, 10 * MIB);
	memset(out.p, 0xaa, out.cap);
	cr_assert_eq(ap_z_decode(&z, &fmt, bomb.p, bomb.len, &out, MIB, &why), AP_ERR);
	cr_assert_str_eq(why, "decoded size over limit");
	cr_assert_eq(out.len, 0);
	for (size_t i = MIB + 1; i < out.cap; i++)
		cr_assert_eq((unsigned char)out.p[i], 0xaa, "byte %zu written past the limit", i);
	ap_buf_free(&bomb);
	ap_buf_free(&out);
	ap_zctx_free(&z);
}

/* One context, 1000 rounds of every format both ways: same bytes every time (streams are
 * reset, so output does not depend on history), and nothing leaks (see `make asan`). */
Test(zlib, context_reuse)
{
	static const enum ap_zfmt fmts[] = {AP_Z_GZIP, AP_Z_ZLIB, AP_Z_RAW};
	struct ap_zctx z = {0};
	struct ap_buf first[3] = {{0}}, c = {0}, d = {0};
	unsigned char src[2000];
	const char *why = NULL;

	fill_text(src, sizeof(src), 10);
	for (int round = 0; round < 1000; round++) {
		for (size_t f = 0; f < 3; f++) {
			enum ap_zfmt fmt = fmts[f] == AP_Z_RAW ? AP_Z_ZLIB : fmts[f];

			ap_buf_clear(&c);
			ap_buf_clear(&d);
			cr_assert_eq(ap_z_encode(&z, fmts[f], src, sizeof(src), &c, &why), AP_OK);
			if (round == 0)
				ap_buf_add(&first[f], c.p, c.len);
			cr_assert(buf_is(&c, first[f].p, first[f].len), "round %d format %zu",
			          round, f);
			cr_assert_eq(ap_z_decode(&z, &fmt, c.p, c.len, &d, MIB, &why), AP_OK);
			cr_assert_eq(fmt, fmts[f]);
			cr_assert(buf_is(&d, src, sizeof(src)));
		}
		/* a failure in between must not poison the next call */
		z_err(&z, AP_Z_GZIP, gz_hello, sizeof(gz_hello) - 1);
	}
	for (size_t f = 0; f < 3; f++)
		ap_buf_free(&first[f]);
	ap_buf_free(&c);
	ap_buf_free(&d);
	ap_zctx_free(&z);
}

Test(zlib, free_is_safe_and_idempotent)
{
	struct ap_zctx z = {0};

	ap_zctx_free(&z);
	ap_zctx_free(&z);
	z_ok(&z, AP_Z_GZIP, gz_hello, sizeof(gz_hello), hello, strlen(hello));
	ap_zctx_free(&z);
	ap_zctx_free(&z);
	/* usable again after a free */
	z_ok(&z, AP_Z_GZIP, gz_hello, sizeof(gz_hello), hello, strlen(hello));
	ap_zctx_free(&z);
}
