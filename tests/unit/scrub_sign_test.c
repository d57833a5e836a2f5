/* Re-signers: Java String.hashCode on known vectors (surrogate pairs, malformed UTF-8),
 * the crc and md5 signers of a profile on forms and JSON bodies, recomputed exactly when
 * the values they cover changed (checked against the test's own Java hashCode and OpenSSL's
 * MD5 over the values as sent), left byte for byte otherwise, a signed field listed twice
 * refused, a missing one read as empty, the SDK's hex case kept. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *SIGN_CONF =
        "{\"keys\": {\"active\": \"t\", \"files\": {\"t\": \"@KEY@\"}},"
        " \"rulesets\": {\"r\": {\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}},"
        "   \"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]},"
        "                {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"}]}},"
        " \"profiles\": {\"p\": {"
        "   \"fields\": [{\"keys\": [\"data\"], \"codec\": [\"base64\", \"json\"]},"
        "                {\"keys\": [\"e\"], \"codec\": [\"json\"]}],"
        "   \"signers\": [{\"field\": \"crc\", \"algorithm\": \"java_hashcode\", \"over\": "
        "\"data\"},"
        "                 {\"field\": \"sum\", \"algorithm\": \"md5_hex\", \"over\": [\"v\", "
        "\"e\", \"t\"]}]}},"
        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"r\", "
        "\"profile\": \"p\"}]}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

static void setup(void)
{
	conf = tu_conf(SIGN_CONF);
	cr_assert_eq(ap_scrub_init(&sc, &conf->keys.keys[conf->keys.active]), AP_OK);
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(scrub_sign, .init = setup, .fini = teardown);

/* ---- the test's own algorithms ---- */

/* Java's String.hashCode over the UTF-16 code units of <s> (valid UTF-8 only). */
static int32_t java_hash(const char *s, size_t n)
{
	uint32_t h = 0;

	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		uint32_t cp;
		if (c < 0x80)
			cp = c, i += 1;
		else if (c < 0xE0)
			cp = (uint32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F), i += 2;
		else if (c < 0xF0)
			cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 |
			     (s[i + 2] & 0x3F),
			i += 3;
		else
			cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
			     (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F),
			i += 4;
		if (cp > 0xFFFF) {
			cp -= 0x10000;
			h = h * 31 + (0xD800 | cp >> 10);
			h = h * 31 + (0xDC00 | (cp & 0x3FF));
		} else
			h = h * 31 + cp;
	}
	return (int32_t)h;
}

static void md5_hex(const char *s, size_t n, char hex[33])
{
	unsigned char md[16];
	unsigned int ml;

	cr_assert_eq(EVP_Digest(s, n, md, &ml, EVP_md5(), NULL), 1);
	for (int i = 0; i < 16; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

static void hmac_hex(const char *v, size_t n, char *hex, size_t len)
{
	unsigned char mac[32];
	unsigned int ml = 32;
	const struct ap_key *k = &conf->keys.keys[conf->keys.active];

	HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)v, n, mac, &ml);
	for (size_t i = 0; i < len / 2; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	hex[len] = 0;
}

/* The decoded value of form field <name> in <form> into v[cap]; false when absent. */
static bool form_get(const char *form, const char *name, char *v, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = form;

	while (p && *p) {
		const char *amp = strchr(p, '&'), *e = amp ? amp : p + strlen(p);
		if ((size_t)(e - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			size_t o = 0;
			for (const char *q = p + nl + 1; q < e && o + 1 < cap; q++) {
				if (*q == '%') {
					unsigned x;
					cr_assert_eq(sscanf(q + 1, "%2x", &x), 1);
					v[o++] = (char)x;
					q += 2;
				} else
					v[o++] = *q == '+' ? ' ' : *q;
			}
			v[o] = 0;
			return true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

static const char *scrub(const char *ctype, const char *body)
{
	static char *last;
	bool changed;
	int status;
	const char *g = tu_guard(body, strlen(body));

	free(last);
	last = NULL;
	ap_scrub_begin(&sc, conf->routes[0].ruleset, 64, 1 << 20);
	ap_buf_clear(&out);
	if (ap_scrub_body(&sc, (struct ap_span){ctype, strlen(ctype)}, AP_SPAN(""),
	                  AP_UNKNOWN_REJECT, (struct ap_span){g, strlen(body)}, &out, &changed,
	                  &status) != AP_OK)
		return NULL;
	last = changed ? strndup(out.p, out.len) : strdup(body);
	return last;
}

#define FORM "application/x-www-form-urlencoded"
#define IMEI "356938035643809"

Test(scrub_sign, java_hashcode_vectors)
{
	static const struct {
		const char *s;
		int32_t h;
	} v[] = {
	        {"", 0},
	        {"a", 97},
	        {"hello", 99162322},
	        {"Hello, World!", 1498789909},
	        {"H4sIAAAAAAAAAIuuVsrMS8tXslJKzs/NTc0rAQDXVBr1EQAAAA==", 0}, /* filled below */
	        {"\xc3\xa9t\xc3\xa9", 227742},                               /* "été" */
	        {"\xf0\x9f\x98\x80x", 54959989},                             /* U+1F600 "x" */
	        {"\xe4\xb8\xad\xe6\x96\x87", 646394},                        /* "中文" */
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(v); i++) {
		int32_t want = v[i].h ? v[i].h : java_hash(v[i].s, strlen(v[i].s));
		cr_expect_eq(ap_sign_java_hashcode(v[i].s, strlen(v[i].s)), want, "%s", v[i].s);
		cr_expect_eq(java_hash(v[i].s, strlen(v[i].s)), want, "%s (the test's own)",
		             v[i].s);
	}
	/* a malformed byte counts as U+FFFD, as Java's UTF-8 decoder makes it */
	cr_expect_eq(ap_sign_java_hashcode("\xff", 1), 65533);
	cr_expect_eq(ap_sign_java_hashcode("a\xc3", 2), 97 * 31 + 65533);
	/* overflow wraps as Java's int arithmetic does */
	cr_expect_eq(ap_sign_java_hashcode("zzzzzzzzzzzzzzzz", 16),
	             java_hash("zzzzzzzzzzzzzzzz", 16));
}

/* crc before and after the field it covers; the value recomputed is the Java hashCode of
 * data_list as sent (the base64 text), as Sensors' SDK computes it. */
Test(scrub_sign, crc_over_a_rewritten_field)
{
	static const char *const shapes[] = {"crc=%d&gzip=1&data=%s", "data=%s&crc=%d",
	                                     "x=1&crc=%d&imei=" IMEI "&data=%s"};
	char json[128], b64[256], enc[512], body[1024], data[512], crc[32], h[17];
	size_t o = 0;

	snprintf(json, sizeof(json), "[{\"imei\":\"%s\",\"n\":1}]", IMEI);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)strlen(json));
	/* '+', '/', '=' of base64 go percent-encoded in a form */
	for (const char *c = b64; *c; c++)
		o += (size_t)(strchr("+/=", *c) ? sprintf(enc + o, "%%%02X", *c)
		                                : sprintf(enc + o, "%c", *c));
	hmac_hex(IMEI, 15, h, 16);
	for (size_t i = 0; i < AP_ARRAY_LEN(shapes); i++) {
		const char *r;
		int32_t want;
		if (i == 1)
			snprintf(body, sizeof(body), shapes[i], enc, java_hash(b64, strlen(b64)));
		else
			snprintf(body, sizeof(body), shapes[i], java_hash(b64, strlen(b64)), enc);
		r = scrub(FORM, body);
		cr_assert_not_null(r, "%s: %s", body, sc.why);
		cr_assert(form_get(r, "data", data, sizeof(data)));
		cr_assert(form_get(r, "crc", crc, sizeof(crc)));
		want = java_hash(data, strlen(data));
		cr_expect_eq(strtol(crc, NULL, 10), want, "%s", r);
		cr_expect_neq(strcmp(data, b64), 0);
		cr_expect_eq(sc.st.resigned, 1);
		if (i == 2) {
			char imei[32];
			cr_assert(form_get(r, "imei", imei, sizeof(imei)));
			cr_expect_str_eq(imei, h);
		}
	}
}

/* Values the signature covers unchanged: the signature stays byte for byte, even when it
 * is not written the way this code would write it, and something else changed. */
Test(scrub_sign, unchanged_cover_unchanged_signature)
{
	const char *r;
	char h[17], want[256];

	hmac_hex(IMEI, 15, h, 16);
	r = scrub(FORM, "crc=%2B00123&data=W10%3D&imei=" IMEI);
	cr_assert_not_null(r, "%s", sc.why);
	snprintf(want, sizeof(want), "crc=%%2B00123&data=W10%%3D&imei=%s", h);
	cr_expect_str_eq(r, want);
	cr_expect_eq(sc.st.resigned, 0);
	r = scrub(FORM, "sum=WHATEVER&v=2&e=[]&t=1");
	cr_expect_str_eq(r, "sum=WHATEVER&v=2&e=[]&t=1");
}

/* Amplitude's checksum: md5 hex of v + client + e + upload_time, the decoded values. */
Test(scrub_sign, md5_over_several_fields_in_order)
{
	char e[256], body[1024], got_e[512], sum[64], cat[1024], hex[33];
	const char *r;

	snprintf(e, sizeof(e), "[{\"imei\":\"%s\",\"event_type\":\"x y\"}]", IMEI);
	snprintf(cat, sizeof(cat), "2%s1700", e);
	md5_hex(cat, strlen(cat), hex);
	/* e percent-encoded the way Amplitude's SDK sends it, '+' for spaces */
	snprintf(body, sizeof(body),
	         "v=2&e=%%5B%%7B%%22imei%%22%%3A%%22%s%%22%%2C%%22event_type%%22%%3A%%22x+y%%22%%"
	         "7D%%5D"
	         "&t=1700&sum=%s",
	         IMEI, hex);
	r = scrub(FORM, body);
	cr_assert_not_null(r, "%s", sc.why);
	cr_assert(form_get(r, "e", got_e, sizeof(got_e)));
	cr_assert(form_get(r, "sum", sum, sizeof(sum)));
	cr_expect(!strstr(got_e, IMEI));
	snprintf(cat, sizeof(cat), "2%s1700", got_e);
	md5_hex(cat, strlen(cat), hex);
	cr_expect_str_eq(sum, hex);
	/* the SDK's upper-case hex stays upper case */
	for (char *c = strstr(body, "&sum=") + 5; *c; c++)
		*c = (char)(*c >= 'a' && *c <= 'f' ? *c - 32 : *c);
	r = scrub(FORM, body);
	cr_assert_not_null(r);
	cr_assert(form_get(r, "sum", sum, sizeof(sum)));
	for (char *c = hex; *c; c++)
		*c = (char)(*c >= 'a' && *c <= 'f' ? *c - 32 : *c);
	cr_expect_str_eq(sum, hex);
}

Test(scrub_sign, missing_cover_field_is_empty)
{
	char body[512], sum[64], cat[512], hex[33], e[256];
	const char *r;

	snprintf(body, sizeof(body), "e=%%7B%%22imei%%22%%3A%%22%s%%22%%7D&sum=x", IMEI);
	r = scrub(FORM, body);
	cr_assert_not_null(r, "%s", sc.why);
	cr_assert(form_get(r, "sum", sum, sizeof(sum)));
	cr_assert(form_get(r, "e", e, sizeof(e)));
	snprintf(cat, sizeof(cat), "%s", e); /* v and t absent: "" */
	md5_hex(cat, strlen(cat), hex);
	cr_expect_str_eq(sum, hex);
}

Test(scrub_sign, signed_field_twice_refused)
{
	char body[512];

	snprintf(body, sizeof(body),
	         "crc=1&crc=2&data=W3siaW1laSI6IjM1NjkzODAzNTY0MzgwOSJ9XQ%%3D%%3D");
	cr_expect_null(scrub(FORM, body));
	cr_expect_str_eq(sc.why, "a signed field appears more than once");
	snprintf(body, sizeof(body),
	         "crc=1&data=W3siaW1laSI6IjM1NjkzODAzNTY0MzgwOSJ9XQ%%3D%%3D&data=W10%%3D");
	cr_expect_null(scrub(FORM, body));
	/* twice, but nothing to recompute: no reason to refuse */
	cr_expect_str_eq(scrub(FORM, "crc=1&crc=2&data=W10%3D"), "crc=1&crc=2&data=W10%3D");
}

/* A JSON body: the signature is a top-level member, a string or a number. */
Test(scrub_sign, json_members)
{
	char doc[512], want[64], cat[512], hex[33];
	const char *r;
	const char *e;

	snprintf(doc, sizeof(doc),
	         "{\"v\":2,\"sum\":\"old\",\"e\":\"[{\\\"imei\\\":\\\"%s\\\"}]\",\"t\":\"17\","
	         "\"crc\":5,\"data\":\"W3siaW1laSI6IjM1NjkzODAzNTY0MzgwOSJ9XQ==\"}",
	         IMEI);
	r = scrub("application/json", doc);
	cr_assert_not_null(r, "%s", sc.why);
	cr_expect_eq(sc.st.resigned, 2);
	/* sum: md5 of "2" + e (its decoded text) + "17" */
	e = strstr(r, "\"e\":\"") + 5;
	{
		char dec[256];
		size_t o = 0;
		for (const char *p = e; *p != '"' || p[-1] == '\\'; p++)
			if (*p != '\\')
				dec[o++] = *p;
		dec[o] = 0;
		snprintf(cat, sizeof(cat), "2%s17", dec);
	}
	md5_hex(cat, strlen(cat), hex);
	snprintf(want, sizeof(want), "\"sum\":\"%s\"", hex);
	cr_expect(strstr(r, want), "%s in %s", want, r);
	/* crc: a bare number stays a number */
	{
		const char *d = strstr(r, "\"data\":\"") + 8;
		size_t dn = (size_t)(strchr(d, '"') - d);
		snprintf(want, sizeof(want), "\"crc\":%" PRId32 ",", java_hash(d, dn));
		cr_expect(strstr(r, want), "%s in %s", want, r);
	}
}
