/* The percent-encoding codec step (codec_pct.c) and the optional chain steps: decoding
 * refuses a bad escape, re-encoding reads the same and keeps the original's style (literal
 * bytes, '+' or %20 for a space, hex case), and a value that is not in an optional step's
 * encoding skips the step — inside codec chains run by the scrubber. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "testutil.h"

static int dec(const char *in, struct ap_buf *o, struct ap_pct_style *st)
{
	const char *why = NULL;
	int rc;

	ap_buf_clear(o);
	rc = ap_pct_decode(in, strlen(in), o, st, &why);
	if (rc != AP_OK)
		cr_expect_str_eq(why, "invalid percent-encoding");
	return rc;
}

Test(codec_pct, decode_encode_round_trip_in_style)
{
	static const char *const same[] = {"a%20b%2Cc",       "a+b%2cc",       "%7B%22k%22%3A1%7D",
	                                   "%7b%22k%22:1%7d", "plain-text_.~", "%25%2B+",
	                                   "caf%C3%A9",       "%E4%B8%AD"};
	struct ap_buf d = {0}, e = {0};
	struct ap_pct_style st;

	for (size_t i = 0; i < AP_ARRAY_LEN(same); i++) {
		cr_assert_eq(dec(same[i], &d, &st), AP_OK, "%s", same[i]);
		ap_buf_clear(&e);
		cr_assert_eq(ap_pct_encode(d.p, d.len, &e, &st), AP_OK);
		cr_expect(e.len == strlen(same[i]) && memcmp(e.p, same[i], e.len) == 0,
		          "%s re-encoded as %.*s", same[i], (int)e.len, e.p);
	}
	cr_assert_eq(dec("a+b", &d, &st), AP_OK);
	cr_expect(d.len == 3 && memcmp(d.p, "a b", 3) == 0);
	for (const char *bad[] = {"%", "%4", "%4g", "a%zz", "%%41", NULL}, **b = bad; *b; b++)
		cr_expect_eq(dec(*b, &d, &st), AP_ERR, "%s", *b);
	/* every byte decodes back to itself after encoding */
	{
		char all[256];
		for (int i = 0; i < 256; i++)
			all[i] = (char)i;
		memset(&st, 0, sizeof(st));
		ap_buf_clear(&e);
		cr_assert_eq(ap_pct_encode(all, 256, &e, &st), AP_OK);
		cr_assert_eq(ap_buf_add(&e, "", 1), AP_OK);
		cr_assert_eq(dec(e.p, &d, &st), AP_OK);
		cr_expect(d.len == 256 && memcmp(d.p, all, 256) == 0);
	}
	ap_buf_free(&d);
	ap_buf_free(&e);
}

static const char *RULES =
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}},"
        "\"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]},"
        " {\"keys\": [\"u\"], \"codec\": [\"urlencoded\", \"json\"]},"
        " {\"keys\": [\"o\"], \"codec\": [{\"name\": \"base64\", \"optional\": true},"
        "  {\"name\": \"gzip\", \"optional\": true}, \"json\"]}]";

static void hmac_hex(const struct ap_conf *c, const char *v, char *hex, size_t len)
{
	tu_hmac_hex(c, v, strlen(v), hex, len);
}

#define IMEI "356938035643809"

Test(codec_pct, urlencoded_json_in_a_json_string)
{
	struct ap_conf *c = tu_conf_ruleset(RULES);
	struct ap_scrub sc;
	struct ap_buf o = {0};
	char h[17], want[256];
	static const char doc[] =
	        "{\"u\":\"%7B%22imei%22%3A%22" IMEI "%22%2C%22a%22%3A%22x y%22%7D\"}";
	bool changed;

	tu_scrub(&sc, c, "r");
	hmac_hex(c, IMEI, h, 16);
	cr_assert_eq(ap_scrub_json(&sc, AP_SPAN(doc), &o, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	/* the space came literally, and goes back literally */
	snprintf(want, sizeof(want),
	         "{\"u\":\"%%7B%%22imei%%22%%3A%%22%s%%22%%2C%%22a%%22%%3A%%22x y%%22%%7D\"}", h);
	cr_expect(o.len == strlen(want) && memcmp(o.p, want, o.len) == 0, "%.*s", (int)o.len, o.p);
	ap_buf_clear(&o);
	cr_expect_eq(ap_scrub_json(&sc, AP_SPAN("{\"u\":\"%7B%zz\"}"), &o, &changed), AP_ERR);
	ap_scrub_free(&sc);
	ap_buf_free(&o);
	ap_conf_free(c);
	tu_cleanup();
}

Test(codec_pct, optional_steps)
{
	struct ap_conf *c = tu_conf_ruleset(RULES);
	struct ap_scrub sc;
	struct ap_buf o = {0};
	char h[17], json[64], b64[256], doc[512];
	unsigned char gz[256], d[256];
	uLongf gzn = sizeof(gz);
	bool changed;
	int n;

	tu_scrub(&sc, c, "r");
	hmac_hex(c, IMEI, h, 16);
	snprintf(json, sizeof(json), "{\"imei\":\"%s\"}", IMEI);

	/* plain JSON: both steps skipped, the JSON written back as JSON */
	snprintf(doc, sizeof(doc), "{\"o\":\"{\\\"imei\\\":\\\"%s\\\"}\"}", IMEI);
	cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){doc, strlen(doc)}, &o, &changed), AP_OK,
	             "%s", sc.why);
	cr_assert(changed);
	cr_expect(memmem(o.p, o.len, h, 16) && !memmem(o.p, o.len, "\"o\":\"ey", 7));

	/* base64 of JSON: gzip skipped, base64 kept */
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)strlen(json));
	snprintf(doc, sizeof(doc), "{\"o\":\"%s\"}", b64);
	ap_buf_clear(&o);
	cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){doc, strlen(doc)}, &o, &changed), AP_OK,
	             "%s", sc.why);
	cr_assert(changed);
	cr_assert(o.len > 7 && memcmp(o.p, "{\"o\":\"", 6) == 0);
	n = EVP_DecodeBlock(d, (const unsigned char *)o.p + 6, (int)(o.len - 8));
	cr_assert_gt(n, 0);
	cr_expect(memmem(d, (size_t)n, h, 16), "%.*s", n, d);

	/* base64 of gzip of JSON: both steps, re-compressed */
	{
		z_stream z = {0};
		cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
		             Z_OK);
		z.next_in = (Bytef *)json;
		z.avail_in = (uInt)strlen(json);
		z.next_out = gz;
		z.avail_out = (uInt)gzn;
		cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
		gzn = z.total_out;
		deflateEnd(&z);
	}
	EVP_EncodeBlock((unsigned char *)b64, gz, (int)gzn);
	snprintf(doc, sizeof(doc), "{\"o\":\"%s\"}", b64);
	ap_buf_clear(&o);
	cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){doc, strlen(doc)}, &o, &changed), AP_OK,
	             "%s", sc.why);
	cr_assert(changed);
	n = EVP_DecodeBlock(d, (const unsigned char *)o.p + 6, (int)(o.len - 8));
	cr_assert_gt(n, 2);
	cr_expect(d[0] == 0x1f && d[1] == 0x8b, "still gzip");

	/* neither base64 nor JSON: refused by the last step, fail closed */
	ap_buf_clear(&o);
	cr_expect_eq(ap_scrub_json(&sc, AP_SPAN("{\"o\":\"!!not it\"}"), &o, &changed), AP_ERR);
	ap_scrub_free(&sc);
	ap_buf_free(&o);
	ap_conf_free(c);
	tu_cleanup();
}
