/* The form and query-string scrubber: hash, drop and mask by key (keys percent-encoded or
 * with '+'), the '&' around dropped pairs in every combination, empty pairs, keys without
 * '=', the exact bytes of re-encoded values, detectors, nested codecs (Mixpanel- and
 * Amplitude-like fields) decoded back independently, bad escapes anywhere, every
 * truncation point against a guard page, and an oracle over thousands of random forms
 * decoded by a small form decoder of the test's own. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "testutil.h"

static const char *RULES =
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 64}},"
        "\"fields\": ["
        " {\"class\": \"imei\", \"keys\": [\"imei\", \"meid\", \"device id\"]},"
        " {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        " {\"class\": \"phone\", \"keys\": [\"phone\"], \"action\": \"mask\", \"keep\": 4},"
        " {\"class\": \"ip\", \"keys\": [\"ip\"], \"action\": \"truncate_ip\"},"
        " {\"class\": \"push_token\", \"keys\": [\"tok\"], \"action\": \"hash\", \"length\": 8,"
        "  \"key_id\": true},"
        " {\"class\": \"other\", \"keys\": [\"keepme\"], \"action\": \"keep\"},"
        " {\"keys\": [\"data\"], \"codec\": [\"base64\", \"json\"]},"
        " {\"keys\": [\"data_gz\"], \"codec\": [\"base64\", \"gzip\", \"json\"]},"
        " {\"keys\": [\"e\"], \"codec\": [\"json\"]},"
        " {\"keys\": [\"f\"], \"codec\": [\"form\"]}"
        "]";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

static void setup(void)
{
	conf = tu_conf_ruleset(RULES);
	tu_scrub(&sc, conf, "r");
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

/* Scrubs <in, n> as a form (or a query string) placed against a guard page. Returns AP_OK
 * or AP_ERR; on AP_OK *res holds the result (the input itself when unchanged), valid until
 * the next call. */
static int run(const char *in, size_t n, bool query, char **res)
{
	static char *last;
	bool changed = false;
	const char *g = tu_guard(in, n);
	int rc;

	free(last);
	last = NULL;
	*res = NULL;
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	rc = query ? ap_scrub_query(&sc, (struct ap_span){g, n}, &out, &changed)
	           : ap_scrub_form(&sc, (struct ap_span){g, n}, &out, &changed);
	if (rc != AP_OK) {
		cr_assert_not_null(sc.why, "refused without a reason");
		return rc;
	}
	if (!changed)
		cr_assert_eq(out.len, 0, "unchanged but output written");
	last = changed ? strndup(out.p ? out.p : "", out.len) : strndup(in, n);
	cr_assert_not_null(last);
	*res = last;
	return rc;
}

static const char *form(const char *in)
{
	char *r;
	return run(in, strlen(in), false, &r) == AP_OK ? r : NULL;
}

static const char *query(const char *in)
{
	char *r;
	return run(in, strlen(in), true, &r) == AP_OK ? r : NULL;
}

static void hmac_hex(const char *v, size_t n, char *hex, size_t len)
{
	tu_hmac_hex(conf, v, n, hex, len);
}

/* ---- an independent form decoder ---- */

struct tpair {
	char k[512], v[4096];
	size_t kn, vn;
	bool eq;         /* the pair had a '=' */
	const char *raw; /* the pair as it was written */
	size_t rawn;
};

static int unhex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes <s, n> into dst (cap bytes). Returns the length, or -1 on a bad escape. */
static long tdec(const char *s, size_t n, char *dst, size_t cap)
{
	size_t o = 0, i = 0;

	while (i < n) {
		int c = (unsigned char)s[i];
		if (c == '%') {
			if (n - i < 3 || unhex(s[i + 1]) < 0 || unhex(s[i + 2]) < 0)
				return -1;
			c = unhex(s[i + 1]) * 16 + unhex(s[i + 2]);
			i += 3;
		} else {
			if (c == '+')
				c = ' ';
			i++;
		}
		cr_assert(o < cap, "test decoder buffer too small");
		dst[o++] = (char)c;
	}
	return (long)o;
}

/* Splits a form into its non-empty pairs. Returns the count, or -1 on a bad escape. */
static int tparse(const char *s, size_t n, struct tpair *pp, int max)
{
	int np = 0;
	size_t i = 0;

	while (i <= n) {
		size_t j = i;
		while (j < n && s[j] != '&')
			j++;
		if (j > i) {
			const char *eq = memchr(s + i, '=', j - i);
			size_t ke = eq ? (size_t)(eq - s) : j;
			long kn, vn;
			cr_assert(np < max, "test decoder: too many pairs");
			kn = tdec(s + i, ke - i, pp[np].k, sizeof(pp[np].k));
			vn = eq ? tdec(eq + 1, j - ke - 1, pp[np].v, sizeof(pp[np].v)) : 0;
			if (kn < 0 || vn < 0)
				return -1;
			pp[np].kn = (size_t)kn;
			pp[np].vn = (size_t)vn;
			pp[np].eq = eq != NULL;
			pp[np].raw = s + i;
			pp[np].rawn = j - i;
			np++;
		}
		i = j + 1;
	}
	return np;
}

static bool key_is(const struct tpair *p, const char *k)
{
	return p->kn == strlen(k) && strncasecmp(p->k, k, p->kn) == 0;
}

/* Returns the decoded value of the first pair named <k> in form <s> (static), or NULL. */
static const char *tget(const char *s, const char *k, size_t *vn)
{
	static struct tpair pp[64];
	int np = tparse(s, strlen(s), pp, 64);

	cr_assert(np >= 0, "output has a bad escape: %s", s);
	for (int i = 0; i < np; i++)
		if (key_is(&pp[i], k)) {
			pp[i].v[pp[i].vn] = 0;
			if (vn)
				*vn = pp[i].vn;
			return pp[i].v;
		}
	return NULL;
}

/* ---- independent codecs (OpenSSL base64, zlib gzip) ---- */

static char *b64(const void *p, size_t n)
{
	char *s = malloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)s, p, (int)n);
	return s;
}

/* Decodes padded standard base64; returns malloc'd bytes and *n. */
static unsigned char *unb64(const char *s, size_t *n)
{
	size_t sl = strlen(s);
	unsigned char *d = malloc(sl + 1);
	int r = EVP_DecodeBlock(d, (const unsigned char *)s, (int)sl);

	cr_assert(r >= 0 && sl % 4 == 0, "not padded base64: %s", s);
	*n = (size_t)r - (sl && s[sl - 1] == '=') - (sl > 1 && s[sl - 2] == '=');
	return d;
}

static unsigned char *gz(const char *p, size_t n, size_t *on)
{
	z_stream z = {0};
	unsigned char *o = malloc(n + 128);

	cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = o;
	z.avail_out = (uInt)(n + 128);
	cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*on = z.total_out;
	deflateEnd(&z);
	return o;
}

static char *gunzip(const unsigned char *p, size_t n)
{
	z_stream z = {0};
	char *o = malloc(1 << 20);

	cr_assert_eq(inflateInit2(&z, 16 + 15), Z_OK);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = (unsigned char *)o;
	z.avail_out = (1 << 20) - 1;
	cr_assert_eq(inflate(&z, Z_FINISH), Z_STREAM_END);
	o[z.total_out] = 0;
	inflateEnd(&z);
	return o;
}

/* Percent-encodes every byte that is not unreserved (a client's encodeURIComponent). */
static char *pct(const char *s)
{
	char *o = malloc(3 * strlen(s) + 1), *q = o;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c))
			*q++ = (char)c;
		else
			q += sprintf(q, "%%%02X", c);
	}
	*q = 0;
	return o;
}

TestSuite(scrub_form, .init = setup, .fini = teardown);

Test(scrub_form, untouched_form_is_not_copied)
{
	static const char *same[] = {"a=1&b=2",  "a",         "=",
	                             "&",        "&&a=%41&&", "x=imei&imeix=1",
	                             "a=1+2%20", "%69mex=1",  "keepme=356938035643809"};
	for (size_t i = 0; i < AP_ARRAY_LEN(same); i++)
		cr_assert_str_eq(form(same[i]), same[i]);
	cr_assert_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_KEEP], 1);
	cr_assert_str_eq(form(""), "");
}

Test(scrub_form, hash_by_key)
{
	char want[512], hex[65];

	hmac_hex("356938035643809", 15, hex, 64);
	snprintf(want, sizeof(want), "imei=%s&x=1", hex);
	cr_assert_str_eq(form("imei=356938035643809&x=1"), want);
	/* Keys match case-insensitively, and on their decoded bytes: the key keeps its
	 * spelling, only the value changes. */
	snprintf(want, sizeof(want), "x=1&IMEI=%s", hex);
	cr_assert_str_eq(form("x=1&IMEI=356938035643809"), want);
	snprintf(want, sizeof(want), "%%69m%%45i=%s", hex);
	cr_assert_str_eq(form("%69m%45i=356938035643809"), want);
	snprintf(want, sizeof(want), "device+id=%s", hex);
	cr_assert_str_eq(form("device+id=356938035643809"), want);
	snprintf(want, sizeof(want), "device%%20id=%s&a=b", hex);
	cr_assert_str_eq(form("device%20id=356938035643809&a=b"), want);
	/* The value is hashed on its decoded bytes. */
	snprintf(want, sizeof(want), "imei=%s", hex);
	cr_assert_str_eq(form("imei=3569%33803564%33809"), want);
	cr_assert_str_eq(form("imei=%33%35%36%39%33%38%30%33%35%36%34%33%38%30%39"), want);
	/* Not the key: a '+' is a space, so "device+id" differs from "deviceid". */
	cr_assert_str_eq(form("deviceid=1&device_id=2"), "deviceid=1&device_id=2");
	/* Repeated keys are all hashed; the memo makes the second one free (and the cache
	 * across requests, flushed here, would make even the first one free). */
	snprintf(want, sizeof(want), "imei=%s&imei=%s", hex, hex);
	ap_scrub_cache_flush(&sc);
	cr_assert_str_eq(form("imei=356938035643809&imei=356938035643809"), want);
	cr_assert_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 2);
	cr_assert_eq(sc.st.hashed, 1);
	cr_assert_eq(sc.st.memo_hits, 1);
}

Test(scrub_form, hash_of_a_value_with_spaces_and_specials)
{
	char want[512], hex[65];

	hmac_hex("a b&c=d+e%", 10, hex, 64);
	snprintf(want, sizeof(want), "imei=%s", hex);
	cr_assert_str_eq(form("imei=a+b%26c%3Dd%2Be%25"), want);
	cr_assert_str_eq(form("imei=a%20b%26c%3dd%2be%25"), want);
}

Test(scrub_form, replaced_values_are_percent_encoded)
{
	/* mask: '*' is not unreserved, so it is written %2A; the kept tail is plain. */
	cr_assert_str_eq(form("phone=%2B8613800138000&a=1"),
	                 "phone=%2A%2A%2A%2A%2A%2A%2A%2A%2A%2A8000&a=1");
	cr_assert_str_eq(form("phone=+1+555+0100"), "phone=%2A%2A%2A%2A%2A%2A%2A0100");
	/* The kept tail is re-encoded whatever its spelling was. */
	cr_assert_str_eq(form("phone=12345+%2F%26"), "phone=%2A%2A%2A%2A5+%2F%26");
	cr_assert_str_eq(form("phone=%E2%82%AC%E2%82%AC%E2%82%AC%E2%82%AC%E2%82%AC"),
	                 "phone=%2A%E2%82%AC%E2%82%AC%E2%82%AC%E2%82%AC");
	/* truncate_ip: ':' is written %3A. */
	cr_assert_str_eq(form("ip=2001%3Adb8%3A1234%3A5678%3A%3A1"), "ip=2001%3Adb8%3A1234%3A%3A");
	cr_assert_str_eq(form("ip=203.0.113.77"), "ip=203.0.113.0");
	cr_assert_str_eq(form("ip=not+an+ip&b=1"), "ip=&b=1");
	/* A key-id prefix: "<id>:" becomes "<id>%3A". */
	{
		const char *r = form("tok=abcdef&z=");
		cr_assert_not_null(r);
		cr_assert_eq(strlen(r), strlen("tok=t%3A12345678&z="), "%s", r);
		cr_assert(strncmp(r, "tok=t%3A", 8) == 0, "%s", r);
		for (size_t i = 8; i < 16; i++)
			cr_assert(strchr("0123456789abcdef", r[i]), "%s", r);
		cr_assert_str_eq(r + 16, "&z=");
	}
}

/* The replacement bytes, checked against an encoder of the test's own for every byte
 * value: mask with a long kept tail shows the tail re-encoded. */
Test(scrub_form, every_byte_reencoded)
{
	for (int c = 0; c < 256; c++) {
		char in[64], want[64];
		const char *r;

		/* 4 chars masked, the 5th is the byte under test followed by "abc" (kept). */
		snprintf(in, sizeof(in), "phone=wxyz%%%02Xabc", c);
		if (c >= 0x80) {
			/* A lone high byte is its own code point for the mask. */
			if ((c & 0xC0) == 0x80)
				continue; /* a continuation byte joins the 'z' before it */
		}
		r = form(in);
		cr_assert_not_null(r, "%s", in);
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~')
			snprintf(want, sizeof(want), "phone=%%2A%%2A%%2A%%2A%cabc", c);
		else if (c == ' ')
			snprintf(want, sizeof(want), "phone=%%2A%%2A%%2A%%2A+abc");
		else
			snprintf(want, sizeof(want), "phone=%%2A%%2A%%2A%%2A%%%02Xabc", c);
		cr_assert_str_eq(r, want, "byte %02x", c);
	}
}

Test(scrub_form, drop_first_middle_last_only)
{
	cr_assert_str_eq(form("mac=aa%3Abb"), "");
	cr_assert_str_eq(form("mac=1&a=2"), "a=2");
	cr_assert_str_eq(form("a=1&mac=2"), "a=1");
	cr_assert_str_eq(form("a=1&mac=2&b=3"), "a=1&b=3");
	cr_assert_str_eq(form("mac=1&mac=2&a=3&MAC=4"), "a=3");
	cr_assert_str_eq(form("m%61c=1&a=2"), "a=2");
	cr_assert_str_eq(form("mac&a=2"), "a=2");
	cr_assert_str_eq(form("mac="), "");
	cr_assert_eq(sc.st.hits[AP_CLASS_MAC][AP_ACT_DROP], 1);
}

/* Every combination of kept and dropped pairs, up to six: the output is exactly the kept
 * pairs joined by '&'. */
Test(scrub_form, drop_combinations)
{
	for (unsigned n = 1; n <= 6; n++)
		for (unsigned mask = 0; mask < (1u << n); mask++) {
			char in[256] = "", want[256] = "", *p = in, *w = want;
			const char *res;

			for (unsigned i = 0; i < n; i++) {
				if (mask >> i & 1)
					p += sprintf(p, "%smac=%u", i ? "&" : "", i);
				else {
					p += sprintf(p, "%sk%u=%u", i ? "&" : "", i, i);
					w += sprintf(w, "%sk%u=%u", w > want ? "&" : "", i, i);
				}
			}
			res = form(in);
			cr_assert_not_null(res, "%s", in);
			cr_assert_str_eq(res, want, "%s", in);
			res = query(in);
			cr_assert_not_null(res, "%s", in);
			cr_assert_str_eq(res, want, "query %s", in);
		}
}

/* Kept, dropped, empty and '='-less pairs mixed, up to six: no kept pair is lost or
 * altered, every dropped one is gone, and no new empty pair appears. */
Test(scrub_form, drop_combinations_with_empty_pairs)
{
	static const char *kinds[] = {"k%u=%u", "mac=%u", "", "k%u", "mac"};
	for (unsigned n = 1; n <= 6; n++) {
		unsigned total = 1;
		for (unsigned i = 0; i < n; i++)
			total *= 5;
		for (unsigned combo = 0; combo < total; combo++) {
			char in[256] = "", *p = in;
			struct tpair got[8];
			unsigned c = combo, kept = 0, empties = 0, keepi[8];
			int ng;
			const char *res;

			for (unsigned i = 0; i < n; i++, c /= 5) {
				if (i)
					*p++ = '&';
				p += sprintf(p, kinds[c % 5], i, i);
				if (c % 5 == 0 || c % 5 == 3)
					keepi[kept++] = i;
				empties += c % 5 == 2;
			}
			res = form(in);
			cr_assert_not_null(res, "%s", in);
			ng = tparse(res, strlen(res), got, 8);
			cr_assert_eq(ng, (int)kept, "%s -> %s", in, res);
			for (unsigned i = 0; i < kept; i++) {
				char k[16];
				snprintf(k, sizeof(k), "k%u", keepi[i]);
				cr_assert(key_is(&got[i], k), "%s -> %s", in, res);
			}
			/* Separators: no more '&' than the input's minus one per dropped pair,
			 * and never two where the input had one. */
			cr_assert_null(strstr(res, "mac"), "%s -> %s", in, res);
			if (!empties)
				cr_assert_null(strstr(res, "&&"), "%s -> %s", in, res);
			if (kept == n)
				cr_assert_str_eq(res, in);
		}
	}
}

Test(scrub_form, empty_pairs_and_keys_without_value)
{
	char want[512], hex[65];

	cr_assert_str_eq(form("a=1&&b=2"), "a=1&&b=2");
	cr_assert_str_eq(form("a=1&&mac=2&b=3"), "a=1&&b=3");
	cr_assert_str_eq(form("mac=2&&b=3"), "&b=3");
	cr_assert_str_eq(form("&mac=2"), "");
	cr_assert_str_eq(form("a=1&mac=2&"), "a=1&");
	cr_assert_str_eq(form("&&&"), "&&&");
	cr_assert_str_eq(form("flag&a=1&=x&=&b"), "flag&a=1&=x&=&b");
	/* A key with no '=' has the empty value: hashing it must not glue the pseudonym to
	 * the key. */
	hmac_hex("", 0, hex, 64);
	snprintf(want, sizeof(want), "imei=%s", hex);
	cr_assert_str_eq(form("imei="), want);
	snprintf(want, sizeof(want), "a&imei=%s&b", hex);
	cr_assert_str_eq(form("a&imei&b"), want);
	cr_assert_str_eq(form("phone&x"), "phone&x");
	cr_assert_str_eq(form("keepme&x"), "keepme&x");
}

Test(scrub_form, invalid_percent_encoding_refused_anywhere)
{
	static const char *bad[] = {"%zz", "%4", "%", "%g1", "%1g", "%%41", "%4%41"};
	static const char *tmpl[] = {
	        "a=%s",          "%s=1",         "a=1&b=%s",      "a=1&b%s=2",   "a%s",
	        "imei=%s",       "mac=%s",       "mac=1&x=%s",    "imei%s=1",    "phone=1%s",
	        "data=%s",       "e=%s",         "keepme=%s",     "x=1&%s",      "%s&x=1",
	        "a=1&mac=2&c%s", "f=a%%3D1%s&z", "tok=%s&imei=1", "ip=1.2.3.4%s"};
	for (size_t t = 0; t < AP_ARRAY_LEN(tmpl); t++)
		for (size_t b = 0; b < AP_ARRAY_LEN(bad); b++) {
			char in[128];
			snprintf(in, sizeof(in), tmpl[t], bad[b]);
			cr_assert_null(form(in), "accepted: %s", in);
			cr_assert_str_eq(sc.why, "invalid percent-encoding", "%s: %s", in, sc.why);
			cr_assert_null(query(in), "query accepted: %s", in);
		}
	/* A key too long to match any rule is still checked. */
	{
		char in[1024];
		memset(in, 'k', 600);
		strcpy(in + 600, "%z=1");
		cr_assert_null(form(in));
		strcpy(in + 600, "%41=1");
		cr_assert_str_eq(form(in), in);
	}
}

Test(scrub_form, query_strings)
{
	char want[512], hex[65];

	hmac_hex("356938035643809", 15, hex, 64);
	snprintf(want, sizeof(want), "v=2&imei=%s", hex);
	cr_assert_str_eq(query("v=2&imei=356938035643809&mac=x"), want);
	cr_assert_str_eq(query(""), "");
	cr_assert_str_eq(query("a"), "a");
}

Test(scrub_form, query_off_leaves_the_query_alone)
{
	struct ap_conf *c2 =
	        tu_conf_ruleset("\"query\": false, \"fields\": [{\"class\": \"imei\", \"keys\": "
	                        "[\"imei\"], \"action\": \"drop\"}]");
	struct ap_scrub s2;
	struct ap_buf o = {0};
	bool ch = true;

	tu_scrub(&s2, c2, "r");
	cr_assert_eq(ap_scrub_query(&s2, AP_SPAN("imei=1&a=2"), &o, &ch), AP_OK);
	cr_assert_not(ch);
	/* The body form is scrubbed whatever the query setting. */
	cr_assert_eq(ap_scrub_form(&s2, AP_SPAN("imei=1&a=2"), &o, &ch), AP_OK);
	cr_assert(ch);
	cr_assert_eq(o.len, 3);
	cr_assert(memcmp(o.p, "a=2", 3) == 0);
	ap_buf_free(&o);
	ap_scrub_free(&s2);
	ap_conf_free(c2);
}

/* ---- nested codecs ---- */

/* Mixpanel: data=<base64 of a JSON batch>, percent-encoded by the client. */
Test(scrub_form, mixpanel_base64_json)
{
	const char *batch = "[{\"event\":\"open\",\"properties\":{\"imei\":\"356938035643809\","
	                    "\"mac\":\"aa:bb:cc:dd:ee:ff\",\"token\":\"t\"}},"
	                    "{\"event\":\"x\",\"properties\":{\"imei\":\"356938035643809\"}}]";
	char *enc = b64(batch, strlen(batch)), *pe = pct(enc), in[4096], hex[65];
	const char *res, *dv;
	unsigned char *js;
	size_t jn;
	json_t *j;

	snprintf(in, sizeof(in), "ip=1&data=%s&verbose=1", pe);
	res = form(in);
	cr_assert_not_null(res, "%s", sc.why);
	cr_assert(strncmp(res, "ip=&data=", 9) == 0, "%s", res);
	cr_assert(strstr(res, "&verbose=1"));
	dv = tget(res, "data", NULL);
	cr_assert_not_null(dv);
	js = unb64(dv, &jn);
	j = json_loadb((const char *)js, jn, 0, NULL);
	cr_assert_not_null(j, "%.*s", (int)jn, js);
	hmac_hex("356938035643809", 15, hex, 64);
	for (size_t i = 0; i < 2; i++) {
		json_t *pr = json_object_get(json_array_get(j, i), "properties");
		cr_assert_str_eq(json_string_value(json_object_get(pr, "imei")), hex);
		cr_assert_null(json_object_get(pr, "mac"));
	}
	cr_assert_str_eq(json_string_value(json_object_get(
	                         json_object_get(json_array_get(j, 0), "properties"), "token")),
	                 "t");
	cr_assert_eq(sc.st.layers, 1);
	json_decref(j);
	free(js);
	/* Nothing to change inside: the pair is left byte for byte. */
	free(enc);
	free(pe);
	enc = b64("{\"a\":1}", 7);
	pe = pct(enc);
	snprintf(in, sizeof(in), "data=%s&b=2", pe);
	cr_assert_str_eq(form(in), in);
	/* The client forgot to encode base64's '+': it reads as a space, which base64 does
	 * not have, so the body is refused, never forwarded as is. */
	free(enc);
	free(pe);
	enc = b64("{\"imei\":\"~~~\"}", 14);
	cr_assert_str_eq(enc, "eyJpbWVpIjoifn5+In0=");
	snprintf(in, sizeof(in), "data=%s", enc);
	cr_assert_null(form(in));
	/* Encoded as it should be, it is scrubbed. */
	pe = pct(enc);
	snprintf(in, sizeof(in), "data=%s", pe);
	cr_assert_not_null(form(in), "%s", sc.why);
	free(enc);
	free(pe);
	/* Not base64, or not JSON inside: refused. */
	cr_assert_null(form("data=!!!!"));
	enc = b64("{nope", 5);
	snprintf(in, sizeof(in), "data=%s", enc);
	cr_assert_null(form(in));
	free(enc);
	cr_assert_str_eq(form("data=&x=1"), "data=&x=1");
}

/* The same batch base64(gzip(JSON)), as SDKs that compress their payloads send it. */
Test(scrub_form, base64_gzip_json)
{
	const char *batch = "{\"events\":[{\"imei\":\"490154203237518\",\"n\":1},"
	                    "{\"mac\":\"01:23:45:67:89:ab\",\"imei\":\"490154203237518\"}]}";
	size_t zn, bn;
	unsigned char *z = gz(batch, strlen(batch), &zn), *back;
	char *enc = b64(z, zn), *pe = pct(enc), in[4096], hex[65], want[512], *js;
	const char *res, *dv;

	snprintf(in, sizeof(in), "data_gz=%s", pe);
	res = form(in);
	cr_assert_not_null(res, "%s", sc.why);
	dv = tget(res, "data_gz", NULL);
	back = unb64(dv, &bn);
	js = gunzip(back, bn);
	hmac_hex("490154203237518", 15, hex, 64);
	snprintf(want, sizeof(want), "{\"events\":[{\"imei\":\"%s\",\"n\":1},{\"imei\":\"%s\"}]}",
	         hex, hex);
	cr_assert_str_eq(js, want);
	/* A corrupt gzip stream inside is refused. */
	z[zn / 2] ^= 0x55;
	free(enc);
	free(pe);
	enc = b64(z, zn);
	pe = pct(enc);
	snprintf(in, sizeof(in), "data_gz=%s", pe);
	cr_assert_null(form(in));
	free(js);
	free(back);
	free(z);
	free(enc);
	free(pe);
}

/* Amplitude: e=<JSON array of events>, percent-encoded. */
Test(scrub_form, amplitude_json_field)
{
	const char *events =
	        "[{\"device_id\":\"x\",\"imei\":\"356938035643809\",\"user_properties\""
	        ":{\"phone\":\"+8613800138000\",\"mac\":\"a\"}},{\"b\":[1,2]}]";
	char *pe = pct(events), in[4096], hex[65];
	const char *res, *ev;
	json_t *j, *e0;

	snprintf(in, sizeof(in), "client=abc&e=%s&upload_time=1", pe);
	res = form(in);
	cr_assert_not_null(res, "%s", sc.why);
	cr_assert(strncmp(res, "client=abc&e=", 13) == 0);
	cr_assert(strstr(res, "&upload_time=1"));
	ev = tget(res, "e", NULL);
	j = json_loads(ev, 0, NULL);
	cr_assert_not_null(j, "%s", ev);
	e0 = json_array_get(j, 0);
	hmac_hex("356938035643809", 15, hex, 64);
	cr_assert_str_eq(json_string_value(json_object_get(e0, "imei")), hex);
	cr_assert_str_eq(json_string_value(json_object_get(e0, "device_id")), "x");
	cr_assert_str_eq(
	        json_string_value(json_object_get(json_object_get(e0, "user_properties"), "phone")),
	        "**********8000");
	cr_assert_null(json_object_get(json_object_get(e0, "user_properties"), "mac"));
	cr_assert_eq(json_array_size(json_object_get(json_array_get(j, 1), "b")), 2);
	json_decref(j);
	free(pe);
	/* Raw (unencoded) JSON in a form value: '+' would be a space, but JSON holds none
	 * here, so it decodes; the rewritten value comes back percent-encoded. */
	res = form("e={\"mac\":1,\"a\":2}");
	cr_assert_str_eq(res, "e=%7B%22a%22%3A2%7D");
	cr_assert_null(form("e=%7Bbad"));
}

/* A form inside a form field: the inner form is re-encoded as one value. */
Test(scrub_form, form_in_a_form_field)
{
	char want[512], hex[65];

	hmac_hex("7", 1, hex, 64);
	snprintf(want, sizeof(want), "f=imei%%3D%s%%26a%%3D2&g=1", hex);
	cr_assert_str_eq(form("f=imei%3D7%26a%3D2%26mac%3D1&g=1"), want);
	/* The inner form has a bad escape of its own ("%2" decodes to '%', then "zz"). */
	cr_assert_null(form("f=a%3D%25zz"));
}

/* ---- detectors ---- */

Test(scrub_form_detect, percent_encoded_identifiers_are_found)
{
	struct ap_conf *c = tu_conf_ruleset(
	        "\"detect\": [\"imei\", \"mac\", \"ip\"],"
	        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}, \"mac\": \"drop\","
	        " \"ip\": \"truncate_ip\"},"
	        "\"fields\": [{\"class\": \"other\", \"keys\": [\"ok\"], \"action\": \"keep\"}]");
	struct ap_scrub s;
	struct ap_buf o = {0};
	bool ch;
	const char *in = "a=35%36938035643809&m=aa%3Abb%3Acc%3Add%3Aee%3Aff&ip=10.1.2.3&ok="
	                 "356938035643809&t=hello+world&n=12345";
	char exp[512];

	tu_scrub(&s, c, "r");
	cr_assert_eq(ap_scrub_form(&s, (struct ap_span){in, strlen(in)}, &o, &ch), AP_OK, "%s",
	             s.why);
	cr_assert(ch);
	{
		unsigned char mac[32];
		unsigned int ml = 32;
		char hex[17];
		const struct ap_key *k = &c->keys.keys[c->keys.active];
		HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)"356938035643809",
		     15, mac, &ml);
		for (int i = 0; i < 8; i++)
			sprintf(hex + 2 * i, "%02x", mac[i]);
		snprintf(exp, sizeof(exp),
		         "a=%s&ip=10.1.2.0&ok=356938035643809&t=hello+world&n=12345", hex);
	}
	cr_assert_eq(o.len, strlen(exp), "%.*s", (int)o.len, o.p);
	cr_assert(memcmp(o.p, exp, o.len) == 0, "%.*s", (int)o.len, o.p);
	cr_assert_eq(s.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 1);
	cr_assert_eq(s.st.hits[AP_CLASS_MAC][AP_ACT_DROP], 1);
	/* Detectors still refuse bad escapes in values they look at. */
	ap_buf_clear(&o);
	cr_assert_eq(ap_scrub_form(&s, AP_SPAN("q=%ZZ"), &o, &ch), AP_ERR);
	ap_buf_free(&o);
	ap_scrub_free(&s);
	ap_conf_free(c);
}

/* ---- the path of the request target ---- */

/* ap_scrub_path on <in> under ruleset <c>: the new path, or <in> itself when unchanged. */
static const char *path_of(struct ap_conf *c, const char *in)
{
	static char res[1024];
	struct ap_scrub s;
	struct ap_buf o = {0};
	bool ch = true;
	size_t n = strlen(in);
	const char *g = tu_guard(in, n);

	tu_scrub(&s, c, "r");
	cr_assert_eq(ap_scrub_path(&s, (struct ap_span){g, n}, &o, &ch), AP_OK);
	if (!ch)
		cr_assert_eq(o.len, 0, "unchanged but output written");
	snprintf(res, sizeof(res), "%.*s", ch ? (int)o.len : (int)n, ch ? o.p : in);
	ap_buf_free(&o);
	ap_scrub_free(&s);
	return res;
}

static const char *PATH_RULES =
        "\"detect\": [\"imei\", \"mac\", \"ip\", \"uuid\"],"
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}, \"mac\": \"drop\","
        " \"ip\": \"truncate_ip\", \"adid\": \"keep\"}";

Test(scrub_path, segments_detectors_recognise)
{
	struct ap_conf *c = tu_conf_ruleset(PATH_RULES);
	char h[17], exp[256];

	tu_hmac_hex(c, "356938035643809", 15, h, 16);
	snprintf(exp, sizeof(exp), "/v1/devices/%s/events", h);
	cr_assert_str_eq(path_of(c, "/v1/devices/356938035643809/events"), exp);
	/* percent-encoded digits are decoded to be matched */
	cr_assert_str_eq(path_of(c, "/v1/devices/35%36938035643809/events"), exp);
	/* at the end, doubled slashes and a trailing slash kept */
	snprintf(exp, sizeof(exp), "//d//%s/", h);
	cr_assert_str_eq(path_of(c, "//d//356938035643809/"), exp);
	snprintf(exp, sizeof(exp), "/%s", h);
	cr_assert_str_eq(path_of(c, "/356938035643809"), exp);
	/* drop cannot remove a segment: it becomes "-" */
	cr_assert_str_eq(path_of(c, "/m/aa:bb:cc:dd:ee:ff/x"), "/m/-/x");
	cr_assert_str_eq(path_of(c, "/m/aa%3Abb%3Acc%3Add%3Aee%3Aff"), "/m/-");
	/* an address truncated, written back with its literal dots */
	cr_assert_str_eq(path_of(c, "/ip/10.1.2.3/x"), "/ip/10.1.2.0/x");
	/* keep, a part of a segment, a number that is no IMEI: untouched */
	cr_assert_str_eq(path_of(c, "/u/123e4567-e89b-12d3-a456-426614174000"),
	                 "/u/123e4567-e89b-12d3-a456-426614174000");
	cr_assert_str_eq(path_of(c, "/x356938035643809/356938035643809.json"),
	                 "/x356938035643809/356938035643809.json");
	cr_assert_str_eq(path_of(c, "/orders/356938035643808"), "/orders/356938035643808");
	/* a bad escape is matched as written, never refused: the path is not a form */
	cr_assert_str_eq(path_of(c, "/a/%ZZ/%4"), "/a/%ZZ/%4");
	cr_assert_str_eq(path_of(c, "/"), "/");
	cr_assert_str_eq(path_of(c, "*"), "*");
	ap_conf_free(c);
}

Test(scrub_path, off_or_without_detectors)
{
	struct ap_conf *off = tu_conf_ruleset(
	        "\"path\": false, \"detect\": [\"imei\"], \"classes\": {\"imei\": \"drop\"}");
	struct ap_conf *none = tu_conf_ruleset(
	        "\"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"], \"action\": \"drop\"}]");

	cr_assert_str_eq(path_of(off, "/d/356938035643809"), "/d/356938035643809");
	cr_assert_str_eq(path_of(none, "/d/356938035643809"), "/d/356938035643809");
	ap_conf_free(off);
	ap_conf_free(none);
}

/* The IMEI placed at every offset of a path of filler segments, between every pair of
 * separators: found whole each time, and nothing else changed. */
Test(scrub_path, every_position)
{
	struct ap_conf *c = tu_conf_ruleset(PATH_RULES);
	char h[17], in[256], exp[256];

	tu_hmac_hex(c, "356938035643809", 15, h, 16);
	for (int before = 0; before < 6; before++)
		for (int after = 0; after < 6; after++) {
			int n = 0, m = 0;
			for (int i = 0; i < before; i++) {
				n += snprintf(in + n, sizeof(in) - n, "/s%d", i);
				m += snprintf(exp + m, sizeof(exp) - m, "/s%d", i);
			}
			n += snprintf(in + n, sizeof(in) - n, "/356938035643809");
			m += snprintf(exp + m, sizeof(exp) - m, "/%s", h);
			for (int i = 0; i < after; i++) {
				n += snprintf(in + n, sizeof(in) - n, "/t%d", i);
				m += snprintf(exp + m, sizeof(exp) - m, "/t%d", i);
			}
			cr_assert_str_eq(path_of(c, in), exp);
		}
	/* and every prefix of one path: no read past its end, each prefix's own result */
	{
		const char *full = "/v/356938035643809/aa:bb:cc:dd:ee:ff";
		for (size_t n = 0; n <= strlen(full); n++) {
			char *pre = strndup(full, n);
			const char *r = path_of(c, pre);
			/* 14 digits and more are an IMEI or MEID to the detector */
			if (n < 3 + 14) {
				cr_assert_str_eq(r, pre);
			} else {
				char *seg = strndup(pre + 3, n - 3 < 15 ? n - 3 : 15);
				cr_assert_null(strstr(r, seg), "%s", r);
				free(seg);
			}
			free(pre);
		}
	}
	ap_conf_free(c);
}

/* A key that is itself an identifier (some SDKs key maps by device id) is scrubbed like
 * a JSON object key, and never shown in a finding's path. */
static char seen_path[AP_PATH_TEXT_MAX];

static void path_cb(void *arg, const struct ap_finding *f)
{
	AP_UNUSED(arg);
	snprintf(seen_path, sizeof(seen_path), "%s", f->path);
}

Test(scrub_form_detect, identifier_keys)
{
	struct ap_conf *c = tu_conf_ruleset("\"detect\": [\"imei\", \"mac\"],"
	                                    "\"classes\": {\"imei\": {\"action\": \"hash\", "
	                                    "\"length\": 16}, \"mac\": \"drop\"}");
	struct ap_scrub s;
	struct ap_buf o = {0};
	bool ch;

	tu_scrub(&s, c, "r");
	s.finding_cb = path_cb;
	cr_assert_eq(ap_scrub_form(&s, AP_SPAN("356938035643809=1&a=2"), &o, &ch), AP_OK);
	cr_assert(ch);
	cr_assert_eq(o.len, strlen("0123456789abcdef=1&a=2"), "%.*s", (int)o.len, o.p);
	cr_assert(memcmp(o.p + 16, "=1&a=2", 6) == 0, "%.*s", (int)o.len, o.p);
	cr_assert_null(strstr(seen_path, "356938035643809"), "%s", seen_path);
	ap_buf_clear(&o);
	cr_assert_eq(ap_scrub_form(&s, AP_SPAN("a=2&aa%3Abb%3Acc%3Add%3Aee%3Aff=1"), &o, &ch),
	             AP_OK);
	cr_assert(ch);
	cr_assert_eq(o.len, 3, "%.*s", (int)o.len, o.p);
	cr_assert(memcmp(o.p, "a=2", 3) == 0);
	/* A key that is an IMEI with a MAC for a value: the rewritten key goes with the
	 * dropped pair, wherever the pair is. */
	for (int i = 0; i < 3; i++) {
		static const char *in[] = {"356938035643809=aa%3Abb%3Acc%3Add%3Aee%3Aff&a=2",
		                           "a=2&356938035643809=aa:bb:cc:dd:ee:ff",
		                           "a=2&356938035643809=aa:bb:cc:dd:ee:ff&b=3"};
		static const char *want[] = {"a=2", "a=2", "a=2&b=3"};
		ap_buf_clear(&o);
		cr_assert_eq(ap_scrub_form(&s, (struct ap_span){in[i], strlen(in[i])}, &o, &ch),
		             AP_OK);
		cr_assert(ch);
		cr_assert_eq(o.len, strlen(want[i]), "%.*s", (int)o.len, o.p);
		cr_assert(memcmp(o.p, want[i], o.len) == 0, "%.*s", (int)o.len, o.p);
	}
	/* The key's own finding does not show it either. */
	seen_path[0] = 0;
	ap_buf_clear(&o);
	cr_assert_eq(ap_scrub_form(&s, AP_SPAN("356938035643809"), &o, &ch), AP_OK);
	cr_assert_str_eq(seen_path, "(id)");
	ap_buf_free(&o);
	ap_scrub_free(&s);
	ap_conf_free(c);
}

/* ---- truncation ---- */

/* The pairs a scrubbed form must hold, from the input's pairs decoded by the test. */
static void expect_pairs(const char *in, size_t n, const char *res);

/* Each form cut at every byte, against a guard page. Every prefix of a form is a form, so
 * each is accepted, unless the cut splits a %XX escape or a nested document; the result
 * then matches the rules pair by pair. */
Test(scrub_form, every_truncation_point)
{
	static const char *docs[] = {
	        "imei=356938035643809&a=%41%42+c&mac=aa%3Abb&phone=%2B8613800138000&&flag&x=%E2%82%"
	        "AC",
	        "%69MEI=1%32&device+id=9&keepme=%7E&b=&=&mac&z",
	        "a=1&b=2&c=3&imei=4&e=%5B1%5D",
	        "ip=203.0.113.77&tok=x&phone=1234567",
	};
	for (size_t d = 0; d < AP_ARRAY_LEN(docs); d++) {
		size_t n = strlen(docs[d]);
		for (size_t k = 0; k <= n; k++) {
			const char *pc = memrchr(docs[d], '%', k);
			bool split = pc && (size_t)(pc - docs[d]) + 3 > k;
			/* The "e" field holds JSON: a cut inside it leaves a broken document. */
			const char *ef = strstr(docs[d], "&e=");
			bool in_e = ef && k > (size_t)(ef - docs[d]) + 3 && k < n;
			char *r;
			int rc = run(docs[d], k, false, &r);

			if (split || in_e) {
				cr_assert_eq(rc, AP_ERR, "accepted [%.*s]", (int)k, docs[d]);
				continue;
			}
			cr_assert_eq(rc, AP_OK, "refused [%.*s]: %s", (int)k, docs[d], sc.why);
			expect_pairs(docs[d], k, r);
			rc = run(docs[d], k, true, &r);
			cr_assert_eq(rc, AP_OK);
			expect_pairs(docs[d], k, r);
		}
	}
}

/* ---- oracle ---- */

static const char *rule_of(const struct tpair *p)
{
	static const char *hash[] = {"imei", "meid", "device id"};
	for (size_t i = 0; i < AP_ARRAY_LEN(hash); i++)
		if (key_is(p, hash[i]))
			return "hash";
	if (key_is(p, "mac"))
		return "drop";
	if (key_is(p, "phone"))
		return "mask";
	if (key_is(p, "keepme"))
		return "keep";
	if (key_is(p, "ip"))
		return "ip";
	if (key_is(p, "tok"))
		return "tok";
	if (key_is(p, "e"))
		return "json";
	return NULL;
}

/* The value <v, n> after <rule>; returns its length in want. */
static size_t expect_value(const char *rule, const char *v, size_t n, char *want)
{
	if (strcmp(rule, "hash") == 0) {
		hmac_hex(v, n, want, 64);
		return 64;
	}
	if (strcmp(rule, "mask") == 0) {
		/* ASCII only in the generator: one '*' per byte but the last four. */
		size_t i;
		if (n <= 4) {
			memset(want, '*', n);
			return n;
		}
		memset(want, '*', n - 4);
		for (i = n - 4; i < n; i++)
			want[i] = v[i];
		return n;
	}
	if (strcmp(rule, "ip") == 0) {
		unsigned a, b, c, d;
		char z[64];
		int used = 0;
		snprintf(z, sizeof(z), "%.*s", (int)n, v);
		if (n < 16 && sscanf(z, "%3u.%3u.%3u.%3u%n", &a, &b, &c, &d, &used) == 4 &&
		    (size_t)used == n && a < 256 && b < 256 && c < 256 && d < 256 && z[0] != '0')
			return (size_t)sprintf(want, "%u.%u.%u.0", a, b, c);
		return 0;
	}
	memcpy(want, v, n);
	return n;
}

static void expect_pairs(const char *in, size_t n, const char *res)
{
	static struct tpair a[256], b[256];
	int na = tparse(in, n, a, 256), nb = tparse(res, strlen(res), b, 256), j = 0;

	cr_assert(na >= 0 && nb >= 0, "bad escape: [%.*s] -> [%s]", (int)n, in, res);
	for (int i = 0; i < na; i++) {
		const char *rule = rule_of(&a[i]);
		char want[4096];
		size_t wn;

		if (rule && strcmp(rule, "drop") == 0)
			continue;
		cr_assert(j < nb, "pair %d missing: [%.*s] -> [%s]", i, (int)n, in, res);
		cr_assert(a[i].kn == b[j].kn && memcmp(a[i].k, b[j].k, a[i].kn) == 0,
		          "key %d changed: [%.*s] -> [%s]", i, (int)n, in, res);
		if (!rule || strcmp(rule, "keep") == 0 || strcmp(rule, "json") == 0) {
			/* Untouched pairs are copied byte for byte (a "json" pair of the
			 * generator never holds anything to change). */
			cr_assert(a[i].rawn == b[j].rawn &&
			                  memcmp(a[i].raw, b[j].raw, a[i].rawn) == 0,
			          "pair %d altered: [%.*s] -> [%s]", i, (int)n, in, res);
		} else if (strcmp(rule, "tok") == 0) {
			cr_assert(b[j].vn == 10 && memcmp(b[j].v, "t:", 2) == 0,
			          "pair %d: [%.*s] -> [%s]", i, (int)n, in, res);
		} else {
			wn = expect_value(rule, a[i].v, a[i].vn, want);
			cr_assert(wn == b[j].vn && memcmp(want, b[j].v, wn) == 0,
			          "pair %d value: [%.*s] -> [%s] want [%.*s]", i, (int)n, in, res,
			          (int)wn, want);
		}
		j++;
	}
	cr_assert_eq(j, nb, "extra pairs: [%.*s] -> [%s]", (int)n, in, res);
}

struct gen {
	char *p;
	size_t len, cap;
	unsigned long long s;
	unsigned planted;
};

static unsigned rnd(struct gen *g, unsigned n)
{
	g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
	return (unsigned)((g->s >> 33) % n);
}

static void put(struct gen *g, const char *s, size_t n)
{
	if (g->len + n + 1 > g->cap) {
		g->cap = (g->len + n + 1) * 2;
		g->p = realloc(g->p, g->cap);
	}
	memcpy(g->p + g->len, s, n);
	g->len += n;
	g->p[g->len] = 0;
}

/* Writes <s> form-encoded with random choices: unreserved bytes plain or escaped (upper
 * or lower hex), a space as '+' or %20, what must be escaped always escaped. */
static void enc(struct gen *g, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char b[4];
		bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		            (c >= '0' && c <= '9') || strchr("-._~*!'()/:@,;$?", c);
		if (c == ' ' && rnd(g, 2)) {
			put(g, "+", 1);
		} else if (safe && c && rnd(g, 6)) {
			put(g, (const char *)&c, 1);
		} else {
			snprintf(b, sizeof(b), rnd(g, 2) ? "%%%02X" : "%%%02x", c);
			put(g, b, 3);
		}
	}
}

static const char *okeys[] = {"a",      "event", "x y",  "\xc3\xa9",  "list",  "q",   "imei",
                              "IMEI",   "ImEi",  "meid", "device id", "mac",   "Mac", "phone",
                              "keepme", "ip",    "tok",  "e",         "a&b=c", "%",   "+"};

static void gen_form(struct gen *g)
{
	unsigned n = rnd(g, 9);

	for (unsigned i = 0; i < n; i++) {
		const char *k = okeys[rnd(g, AP_ARRAY_LEN(okeys))];
		char v[128];
		size_t vn = 0;

		if (i)
			put(g, "&", 1);
		if (rnd(g, 12) == 0)
			continue; /* an empty pair */
		enc(g, k, strlen(k));
		if (strcasecmp(k, "imei") == 0 || strcasecmp(k, "meid") == 0 ||
		    strcmp(k, "device id") == 0 || strcmp(k, "phone") == 0 ||
		    strcmp(k, "keepme") == 0) {
			vn = (size_t)snprintf(v, sizeof(v), "%u%u", 35000000 + rnd(g, 999999),
			                      rnd(g, 9999999));
			g->planted++;
		} else if (strcmp(k, "ip") == 0) {
			vn = (size_t)snprintf(v, sizeof(v), "%u.%u.%u.%u", 1 + rnd(g, 255),
			                      rnd(g, 256), rnd(g, 256), rnd(g, 256));
		} else if (strcmp(k, "e") == 0) {
			vn = (size_t)snprintf(v, sizeof(v), "{\"n\": [%u, \"x y\"]}", rnd(g, 100));
		} else {
			static const char alpha[] = "abcXYZ019 &=+%#?/:;\x01\x7f\xc3\xa9";
			vn = rnd(g, 12);
			for (size_t j = 0; j < vn; j++)
				v[j] = alpha[rnd(g, sizeof(alpha) - 1)];
		}
		if (rnd(g, 10) == 0 && strcmp(k, "e") != 0) {
			/* no '=': the empty value; for a rule key the rule still applies */
			continue;
		}
		put(g, "=", 1);
		enc(g, v, vn);
	}
}

Test(scrub_form, oracle_random_forms)
{
	struct gen g = {.s = 20240611};
	unsigned planted = 0;

	for (unsigned round = 0; round < 5000; round++) {
		char *r;
		bool q = round & 1;

		g.len = 0;
		g.planted = 0;
		put(&g, "", 0);
		gen_form(&g);
		cr_assert_eq(run(g.p, g.len, q, &r), AP_OK, "refused (%s): %s", sc.why, g.p);
		expect_pairs(g.p, g.len, r);
		/* Scrubbing the output again is accepted too: it is still a valid form. */
		{
			char *copy = strdup(r), *r2;
			cr_assert_eq(run(copy, strlen(copy), q, &r2), AP_OK, "%s", copy);
			free(copy);
		}
		planted += g.planted;
	}
	cr_assert(planted > 5000, "too few identifiers planted (%u)", planted);
	free(g.p);
}
