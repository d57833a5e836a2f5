/* ap_scrub_body, the dispatcher: content types against the unknown-content policies,
 * Content-Encoding decoded, scrubbed and re-encoded as it came (checked with zlib
 * directly), unsupported or corrupt encodings, a gzip bomb, the decoded-size budget shared
 * by every nested field of a request, codec chains nested too deep, and findings: their
 * paths and masked values. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "testutil.h"

static const char *RULES =
        "\"fields\": ["
        " {\"class\": \"imei\", \"keys\": [\"imei\"], \"action\": \"hash\", \"length\": 64},"
        " {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        " {\"class\": \"phone\", \"keys\": [\"phone\"], \"action\": \"mask\"},"
        " {\"keys\": [\"data\"], \"codec\": [\"base64\", \"gzip\", \"json\"]},"
        " {\"keys\": [\"b64\"], \"codec\": [\"base64\", \"json\"]},"
        " {\"keys\": [\"lvl\"], \"codec\": [\"json\"]},"
        " {\"keys\": [\"f\"], \"codec\": [\"form\"]}"
        "],"
        "\"headers\": [{\"name\": \"X-Device-Id\", \"class\": \"device_id\", \"action\": "
        "\"hash\", \"length\": 16}]";

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

struct res {
	int rc, status;
	bool changed;
	const char *why;
};

/* ap_scrub_body on <in, n> against a guard page, under a decoded-size limit. */
static struct res body_lim(const char *ctype, const char *cenc, enum ap_unknown unk, const void *in,
                           size_t n, size_t limit)
{
	struct res r = {0};
	const char *g = tu_guard(in, n);

	ap_scrub_begin(&sc, sc.rs, 64, limit);
	ap_buf_clear(&out);
	r.changed = true;
	r.status = 0;
	r.rc = ap_scrub_body(&sc, (struct ap_span){ctype, strlen(ctype)},
	                     (struct ap_span){cenc, strlen(cenc)}, unk, (struct ap_span){g, n},
	                     &out, &r.changed, &r.status);
	r.why = sc.why;
	if (r.rc == AP_OK && !r.changed)
		cr_assert_eq(out.len, 0, "unchanged but output written");
	if (r.rc != AP_OK)
		cr_assert_not_null(r.why);
	return r;
}

static struct res body(const char *ctype, const char *cenc, enum ap_unknown unk, const char *in)
{
	return body_lim(ctype, cenc, unk, in, strlen(in), 1 << 20);
}

static void hmac_hex(const char *v, char *hex, size_t len)
{
	unsigned char mac[32];
	unsigned int ml = 32;
	const struct ap_key *k = &conf->keys.keys[conf->keys.active];

	HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)v, strlen(v), mac, &ml);
	for (size_t i = 0; i < len / 2; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	hex[len] = 0;
}

/* ---- zlib, used directly: window bits 16+15 gzip, 15 zlib, -15 raw ---- */

static unsigned char *zenc(int wbits, const void *p, size_t n, size_t *on)
{
	z_stream z = {0};
	size_t cap;
	unsigned char *o;

	cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
	cap = deflateBound(&z, (uLong)n);
	o = malloc(cap);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = o;
	z.avail_out = (uInt)cap;
	cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*on = z.total_out;
	deflateEnd(&z);
	return o;
}

/* Inflates <p, n> with <wbits>; returns NUL-terminated text, or NULL if it is not exactly
 * one stream of that format. */
static char *zdec(int wbits, const void *p, size_t n)
{
	z_stream z = {0};
	size_t cap = 1 << 20;
	char *o = malloc(cap + 1);
	int rc;

	cr_assert_eq(inflateInit2(&z, wbits), Z_OK);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = (unsigned char *)o;
	z.avail_out = (uInt)cap;
	rc = inflate(&z, Z_FINISH);
	if (rc != Z_STREAM_END || z.avail_in != 0) {
		inflateEnd(&z);
		free(o);
		return NULL;
	}
	o[z.total_out] = 0;
	inflateEnd(&z);
	return o;
}

static char *b64(const void *p, size_t n)
{
	char *s = malloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)s, p, (int)n);
	return s;
}

static const char *IMEI_DOC = "{\"imei\":\"356938035643809\",\"a\":[1,2]}";

static char *imei_want(void)
{
	static char want[256];
	char hex[65];

	hmac_hex("356938035643809", hex, 64);
	snprintf(want, sizeof(want), "{\"imei\":\"%s\",\"a\":[1,2]}", hex);
	return want;
}

TestSuite(scrub, .init = setup, .fini = teardown);

/* ---- content types × unknown-content policy ---- */

Test(scrub, json_types_are_scrubbed_under_every_policy)
{
	static const char *types[] = {
	        "application/json",
	        "application/json; charset=utf-8",
	        "APPLICATION/JSON;charset=UTF-8",
	        "  application/json ; charset=utf-8",
	        "application/vnd.foo+json",
	        "application/vnd.api+json; charset=utf-8",
	        "text/json",
	};
	for (size_t t = 0; t < AP_ARRAY_LEN(types); t++)
		for (int u = AP_UNKNOWN_REJECT; u <= AP_UNKNOWN_SCAN; u++) {
			struct res r = body(types[t], "", (enum ap_unknown)u, IMEI_DOC);
			cr_assert_eq(r.rc, AP_OK, "%s: %s", types[t], r.why);
			cr_assert(r.changed, "%s", types[t]);
			cr_assert_eq(out.len, strlen(imei_want()));
			cr_assert(memcmp(out.p, imei_want(), out.len) == 0, "%s", types[t]);
			/* Not JSON: 400, whatever the policy. */
			r = body(types[t], "", (enum ap_unknown)u, "{\"imei\":");
			cr_assert_eq(r.rc, AP_ERR);
			cr_assert_eq(r.status, 400, "%s", types[t]);
		}
}

Test(scrub, ndjson_types)
{
	static const char *types[] = {"application/x-ndjson", "application/ndjson",
	                              "application/jsonl", "application/x-jsonlines",
	                              "application/x-ndjson; charset=utf-8"};
	char want[512];

	snprintf(want, sizeof(want), "%s\n{\"b\":1}\n", imei_want());
	for (size_t t = 0; t < AP_ARRAY_LEN(types); t++) {
		char in[256];
		struct res r;
		snprintf(in, sizeof(in), "%s\n{\"mac\":\"x\",\"b\":1}\n", IMEI_DOC);
		r = body(types[t], "", AP_UNKNOWN_REJECT, in);
		cr_assert_eq(r.rc, AP_OK, "%s: %s", types[t], r.why);
		cr_assert(r.changed);
		cr_assert_eq(out.len, strlen(want), "%s: %.*s", types[t], (int)out.len, out.p);
		cr_assert(memcmp(out.p, want, out.len) == 0);
		/* One bad line refuses the whole body. */
		r = body(types[t], "", AP_UNKNOWN_PASS, "{\"a\":1}\n{\"a\":\n");
		cr_assert_eq(r.rc, AP_ERR);
		cr_assert_eq(r.status, 400);
	}
}

Test(scrub, form_types)
{
	static const char *types[] = {"application/x-www-form-urlencoded",
	                              "application/x-www-form-urlencoded; charset=UTF-8",
	                              "Application/X-WWW-Form-Urlencoded"};
	char want[256], hex[65];

	hmac_hex("356938035643809", hex, 64);
	snprintf(want, sizeof(want), "imei=%s&a=1", hex);
	for (size_t t = 0; t < AP_ARRAY_LEN(types); t++) {
		struct res r =
		        body(types[t], "", AP_UNKNOWN_SCAN, "imei=356938035643809&mac=1&a=1");
		cr_assert_eq(r.rc, AP_OK, "%s: %s", types[t], r.why);
		cr_assert(r.changed);
		cr_assert_eq(out.len, strlen(want));
		cr_assert(memcmp(out.p, want, out.len) == 0, "%.*s", (int)out.len, out.p);
		r = body(types[t], "", AP_UNKNOWN_SCAN, "a=%zz");
		cr_assert_eq(r.rc, AP_ERR);
		cr_assert_eq(r.status, 400);
	}
}

static const char *unknown_types[] = {
        "text/plain",
        "application/octet-stream",
        "",
        "application/jsonx",
        "application/json-patch",
        "application/+json",
        "multipart/form-data; boundary=x",
        "text/plain; charset=utf-8",
        "json",
        "application/x-www-form-urlencodedx",
        "text/json+xml",
};

Test(scrub, unknown_type_reject)
{
	for (size_t t = 0; t < AP_ARRAY_LEN(unknown_types); t++) {
		struct res r = body(unknown_types[t], "", AP_UNKNOWN_REJECT, "hello");
		cr_assert_eq(r.rc, AP_ERR, "[%s]", unknown_types[t]);
		cr_assert_eq(r.status, 415, "[%s]", unknown_types[t]);
		/* Refused before looking at the encoding. */
		r = body(unknown_types[t], "gzip", AP_UNKNOWN_REJECT, "not gzip");
		cr_assert_eq(r.status, 415);
	}
}

Test(scrub, unknown_type_pass)
{
	for (size_t t = 0; t < AP_ARRAY_LEN(unknown_types); t++) {
		struct res r = body(unknown_types[t], "", AP_UNKNOWN_PASS,
		                    "imei 356938035643809 mac aa:bb:cc:dd:ee:ff");
		cr_assert_eq(r.rc, AP_OK, "[%s]", unknown_types[t]);
		cr_assert_not(r.changed);
		/* Passed as it is: not even decoded. */
		r = body(unknown_types[t], "br", AP_UNKNOWN_PASS, "\x01\x02");
		cr_assert_eq(r.rc, AP_OK);
		cr_assert_not(r.changed);
	}
}

Test(scrub, unknown_type_scan)
{
	static const char *hits[] = {
	        "device 356938035643809 booted", "356938035643809",
	        "mac=aa:bb:cc:dd:ee:ff.",        "wifi AA-BB-CC-DD-EE-FF\n",
	        "<imei>356938035643809</imei>",  "{\"imei\":\"356938035643809\"}",
	        "ip 203.0.113.7 seen",           "ad id 0f8fad5b-d9cb-469f-a165-70867728950e",
	};
	static const char *clean[] = {
	        "hello world",   "count 12345 at 2024-06-01T10:00:00Z",
	        "3569380356438", /* 13 digits: nothing */
	        "version 1.2.3", "",
	};
	for (size_t t = 0; t < AP_ARRAY_LEN(unknown_types); t++) {
		for (size_t i = 0; i < AP_ARRAY_LEN(hits); i++) {
			struct res r = body(unknown_types[t], "", AP_UNKNOWN_SCAN, hits[i]);
			cr_assert_eq(r.rc, AP_ERR, "[%s] %s", unknown_types[t], hits[i]);
			cr_assert_eq(r.status, 422, "%s", hits[i]);
		}
		for (size_t i = 0; i < AP_ARRAY_LEN(clean); i++) {
			struct res r = body(unknown_types[t], "", AP_UNKNOWN_SCAN, clean[i]);
			cr_assert_eq(r.rc, AP_OK, "[%s] %s", unknown_types[t], clean[i]);
			cr_assert_not(r.changed);
		}
	}
	/* A compressed body is scanned decoded. */
	{
		size_t zn;
		unsigned char *z = zenc(16 + 15, hits[0], strlen(hits[0]), &zn);
		struct res r = body_lim("text/plain", "gzip", AP_UNKNOWN_SCAN, z, zn, 1 << 20);
		cr_assert_eq(r.status, 422);
		free(z);
	}
}

/* Punctuation glued to an identifier in text does not hide it from the scan. */
Test(scrub, unknown_type_scan_punctuation)
{
	static const char *hits[] = {"(356938035643809)", "imei:356938035643809",
	                             "mac:aa:bb:cc:dd:ee:ff", "id=(aa:bb:cc:dd:ee:ff)"};
	for (size_t i = 0; i < AP_ARRAY_LEN(hits); i++) {
		struct res r = body("text/plain", "", AP_UNKNOWN_SCAN, hits[i]);
		cr_expect_eq(r.status, 422, "%s passed the scan", hits[i]);
	}
}

/* ---- Content-Encoding ---- */

Test(scrub, encodings_round_trip)
{
	static const struct {
		const char *name;
		int wbits;
	} encs[] = {{"gzip", 16 + 15},   {"x-gzip", 16 + 15}, {"GZIP", 16 + 15},
	            {" gzip ", 16 + 15}, {"deflate", 15},     {"Deflate", 15},
	            {"deflate", -15},    {"identity", 0},     {"", 0}};
	for (size_t i = 0; i < AP_ARRAY_LEN(encs); i++) {
		size_t zn = strlen(IMEI_DOC);
		unsigned char *z = encs[i].wbits ? zenc(encs[i].wbits, IMEI_DOC, zn, &zn)
		                                 : (unsigned char *)strdup(IMEI_DOC);
		struct res r = body_lim("application/json", encs[i].name, AP_UNKNOWN_REJECT, z, zn,
		                        1 << 20);
		char *dec;

		cr_assert_eq(r.rc, AP_OK, "%s/%d: %s", encs[i].name, encs[i].wbits, r.why);
		cr_assert(r.changed);
		/* Re-encoded in the format it came in: only that format's inflater takes it. */
		if (encs[i].wbits) {
			dec = zdec(encs[i].wbits, out.p, out.len);
			cr_assert_not_null(dec, "%s/%d: output not in the same format",
			                   encs[i].name, encs[i].wbits);
			cr_assert_str_eq(dec, imei_want());
			free(dec);
			for (int w = 0; w < 3; w++) {
				int other = (int[]){16 + 15, 15, -15}[w];
				char *d2;
				if (other == encs[i].wbits)
					continue;
				d2 = zdec(other, out.p, out.len);
				cr_assert_null(d2, "%s/%d: also reads as %d", encs[i].name,
				               encs[i].wbits, other);
			}
		} else {
			cr_assert_eq(out.len, strlen(imei_want()));
			cr_assert(memcmp(out.p, imei_want(), out.len) == 0);
		}
		free(z);
	}
}

Test(scrub, encoded_forms_and_ndjson)
{
	size_t zn;
	const char *form = "a=1&imei=356938035643809";
	unsigned char *z = zenc(15, form, strlen(form), &zn);
	struct res r = body_lim("application/x-www-form-urlencoded", "deflate", AP_UNKNOWN_REJECT,
	                        z, zn, 1 << 20);
	char *dec, want[128], hex[65];

	cr_assert_eq(r.rc, AP_OK, "%s", r.why);
	cr_assert(r.changed);
	dec = zdec(15, out.p, out.len);
	cr_assert_not_null(dec);
	hmac_hex("356938035643809", hex, 64);
	snprintf(want, sizeof(want), "a=1&imei=%s", hex);
	cr_assert_str_eq(dec, want);
	free(dec);
	free(z);
}

Test(scrub, unchanged_encoded_body_is_not_rewritten)
{
	static const int wb[] = {16 + 15, 15, -15};
	for (size_t i = 0; i < AP_ARRAY_LEN(wb); i++) {
		size_t zn;
		unsigned char *z = zenc(wb[i], "{\"a\":1}", 7, &zn);
		struct res r = body_lim("application/json", wb[i] > 16 ? "gzip" : "deflate",
		                        AP_UNKNOWN_REJECT, z, zn, 1 << 20);
		cr_assert_eq(r.rc, AP_OK, "%s", r.why);
		cr_assert_not(r.changed);
		cr_assert_eq(out.len, 0);
		free(z);
	}
}

Test(scrub, unsupported_encodings)
{
	static const char *encs[] = {"br",   "gzip, gzip",    "compress",   "gzip,identity",
	                             "zstd", "deflate, gzip", "x-compress", "gzip;q=1",
	                             "*"};
	size_t zn;
	unsigned char *z = zenc(16 + 15, IMEI_DOC, strlen(IMEI_DOC), &zn);

	for (size_t i = 0; i < AP_ARRAY_LEN(encs); i++) {
		struct res r =
		        body_lim("application/json", encs[i], AP_UNKNOWN_PASS, z, zn, 1 << 20);
		cr_assert_eq(r.rc, AP_ERR, "%s", encs[i]);
		cr_assert_eq(r.status, 415, "%s", encs[i]);
	}
	free(z);
}

Test(scrub, corrupt_compressed_bodies)
{
	size_t zn;
	unsigned char *z = zenc(16 + 15, IMEI_DOC, strlen(IMEI_DOC), &zn);
	struct res r;

	/* Not compressed at all. */
	r = body("application/json", "gzip", AP_UNKNOWN_REJECT, IMEI_DOC);
	cr_assert_eq(r.rc, AP_ERR);
	cr_assert_eq(r.status, 400);
	r = body("application/json", "deflate", AP_UNKNOWN_REJECT, IMEI_DOC);
	cr_assert_eq(r.status, 400);
	/* Every truncation of a gzip body, against a guard page. */
	for (size_t k = 1; k < zn; k++) {
		r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, k, 1 << 20);
		cr_assert_eq(r.rc, AP_ERR, "cut at %zu accepted", k);
		cr_assert_eq(r.status, 400);
	}
	/* A flipped CRC byte. */
	z[zn - 6] ^= 1;
	r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, zn, 1 << 20);
	cr_assert_eq(r.status, 400);
	z[zn - 6] ^= 1;
	/* Trailing garbage. */
	z = realloc(z, zn + 3);
	memcpy(z + zn, "xyz", 3);
	r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, zn + 3, 1 << 20);
	cr_assert_eq(r.status, 400);
	/* Decodes, but the JSON inside is bad: 400 as well. */
	free(z);
	z = zenc(16 + 15, "{\"a\":", 5, &zn);
	r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, zn, 1 << 20);
	cr_assert_eq(r.rc, AP_ERR);
	cr_assert_eq(r.status, 400);
	free(z);
}

Test(scrub, gzip_bomb_is_refused_quickly)
{
	size_t n = 100u << 20, zn;
	char *zeros = calloc(1, n);
	unsigned char *z = zenc(16 + 15, zeros, n, &zn);
	struct timespec t0, t1;
	struct res r;
	double ms;

	free(zeros);
	cr_assert(zn < (1u << 20), "the bomb is %zu bytes", zn);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, zn, 64 << 10);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	cr_assert_eq(r.rc, AP_ERR);
	cr_assert_eq(r.status, 413, "%d %s", r.status, r.why);
	cr_assert_str_eq(r.why, AP_WHY_TOO_BIG);
	cr_assert(ms < 200, "took %.1f ms", ms);
	cr_assert(out.len == 0 && sc.body.cap < (1u << 20), "inflated %zu bytes", sc.body.cap);
	/* The same under scan. */
	r = body_lim("text/plain", "gzip", AP_UNKNOWN_SCAN, z, zn, 64 << 10);
	cr_assert_eq(r.status, 413);
	free(z);
}

Test(scrub, empty_body)
{
	for (int u = AP_UNKNOWN_REJECT; u <= AP_UNKNOWN_SCAN; u++) {
		static const char *types[] = {"application/json", "text/plain", ""};
		for (size_t t = 0; t < AP_ARRAY_LEN(types); t++) {
			struct res r = body(types[t], "", (enum ap_unknown)u, "");
			cr_assert_eq(r.rc, AP_OK);
			cr_assert_not(r.changed);
			r = body(types[t], "gzip", (enum ap_unknown)u, "");
			cr_assert_eq(r.rc, AP_OK);
			cr_assert_not(r.changed);
		}
	}
}

/* ---- the decoded-size budget is per request, over every nested field ---- */

static char *nested_field(size_t inner_len)
{
	char *doc = malloc(inner_len + 1), *enc;
	unsigned char *z;
	size_t zn;

	/* {"imei":"1","pad":"aaaa…"} of exactly inner_len bytes */
	strcpy(doc, "{\"imei\":\"1\",\"pad\":\"");
	memset(doc + strlen(doc), 'a', inner_len - strlen(doc) - 2);
	strcpy(doc + inner_len - 2, "\"}");
	z = zenc(16 + 15, doc, inner_len, &zn);
	enc = b64(z, zn);
	free(z);
	free(doc);
	return enc;
}

Test(scrub, nested_decoded_budget)
{
	char *f = nested_field(300000);
	size_t fl = strlen(f);
	char *in = malloc(8 * (fl + 16) + 150016);

	for (int fields = 1; fields <= 5; fields++) {
		char *p = in;
		struct res r;
		p += sprintf(p, "{");
		for (int i = 0; i < fields; i++)
			p += sprintf(p, "%s\"data\":\"%s\"", i ? "," : "", f);
		strcpy(p, "}");
		r = body_lim("application/json", "", AP_UNKNOWN_REJECT, in, strlen(in), 1000000);
		if (fields <= 3) {
			cr_assert_eq(r.rc, AP_OK, "%d fields: %s", fields, r.why);
			cr_assert(r.changed);
			cr_assert_eq(sc.st.layers, (uint32_t)fields);
		} else {
			cr_assert_eq(r.rc, AP_ERR, "%d fields of 300 kB under 1 MB", fields);
			cr_assert_eq(r.status, 413, "%d: %s", r.status, r.why);
		}
	}
	/* The body's own decoding counts too: 150 kB of padding beside three fields passes
	 * as it is, and is over the limit once it had to be gunzipped. */
	{
		char *p = in;
		unsigned char *z;
		size_t zn;
		struct res r;
		p += sprintf(p, "{\"pad\":\"");
		memset(p, 'a', 150000);
		p += 150000;
		sprintf(p, "\",\"data\":\"%s\",\"data\":\"%s\",\"data\":\"%s\"}", f, f, f);
		r = body_lim("application/json", "", AP_UNKNOWN_REJECT, in, strlen(in), 1000000);
		cr_assert_eq(r.rc, AP_OK, "%s", r.why);
		z = zenc(16 + 15, in, strlen(in), &zn);
		r = body_lim("application/json", "gzip", AP_UNKNOWN_REJECT, z, zn, 1000000);
		cr_assert_eq(r.rc, AP_ERR);
		cr_assert_eq(r.status, 413, "%d %s", r.status, r.why);
		free(z);
	}
	free(in);
	free(f);
}

/* ---- codec chains nested too deep ---- */

/* {"lvl": "<JSON text of the level below>"} n times around {"imei":"1"}. */
static char *levels(int n)
{
	json_t *j = json_pack("{s:s}", "imei", "1");
	char *s = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	for (int i = 0; i < n; i++) {
		j = json_pack("{s:s}", "lvl", s);
		free(s);
		s = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	return s;
}

Test(scrub, codec_layers_limit)
{
	char hex[65];

	hmac_hex("1", hex, 64);
	for (int n = 1; n <= 6; n++) {
		char *in = levels(n);
		struct res r = body("application/json", "", AP_UNKNOWN_REJECT, in);
		if (n <= AP_LAYERS_MAX) {
			json_t *j;
			char *cur;
			cr_assert_eq(r.rc, AP_OK, "%d layers: %s", n, r.why);
			cr_assert(r.changed);
			cur = strndup(out.p, out.len);
			/* Peel every layer and find the hashed IMEI at the bottom. */
			for (int i = 0; i < n; i++) {
				j = json_loads(cur, 0, NULL);
				cr_assert_not_null(j, "%s", cur);
				free(cur);
				cur = strdup(json_string_value(json_object_get(j, "lvl")));
				json_decref(j);
			}
			j = json_loads(cur, 0, NULL);
			cr_assert_str_eq(json_string_value(json_object_get(j, "imei")), hex);
			json_decref(j);
			free(cur);
		} else {
			cr_assert_eq(r.rc, AP_ERR, "%d layers accepted", n);
			cr_assert_eq(r.status, 400);
			cr_assert_str_eq(r.why, "codecs nested too deep");
		}
		free(in);
	}
}

/* Layers of different codecs count alike: a JSON field holding JSON (1) holding
 * base64(gzip(JSON)) (2) holding base64(JSON) (3) holding JSON (4) is accepted; one more
 * JSON layer on top is refused. */
static char *wrap_lvl(const char *inner)
{
	json_t *j = json_pack("{s:s}", "lvl", inner);
	char *s = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	return s;
}

Test(scrub, mixed_layers_limit)
{
	char *l4 = levels(1), *b, *l3, *l2, *l1, *l0;
	unsigned char *z;
	size_t zn;
	struct res r;

	b = b64(l4, strlen(l4));
	cr_assert(asprintf(&l3, "{\"b64\":\"%s\"}", b) > 0);
	free(b);
	z = zenc(16 + 15, l3, strlen(l3), &zn);
	b = b64(z, zn);
	free(z);
	cr_assert(asprintf(&l2, "{\"data\":\"%s\"}", b) > 0);
	free(b);
	l1 = wrap_lvl(l2);
	r = body("application/json", "", AP_UNKNOWN_REJECT, l1);
	cr_assert_eq(r.rc, AP_OK, "%s", r.why);
	cr_assert(r.changed);
	cr_assert_eq(sc.st.layers, 4);
	l0 = wrap_lvl(l1);
	r = body("application/json", "", AP_UNKNOWN_REJECT, l0);
	cr_assert_eq(r.rc, AP_ERR);
	cr_assert_str_eq(r.why, "codecs nested too deep");
	free(l0);
	free(l1);
	free(l2);
	free(l3);
	free(l4);
}

/* ---- findings ---- */

struct seen {
	char path[AP_PATH_TEXT_MAX], masked[64];
	int cls, act, where;
	bool detected;
};

static struct seen seen[64];
static int nseen;

static void record_cb(void *arg, const struct ap_finding *f)
{
	AP_UNUSED(arg);
	cr_assert(nseen < 64);
	snprintf(seen[nseen].path, sizeof(seen[nseen].path), "%s", f->path);
	snprintf(seen[nseen].masked, sizeof(seen[nseen].masked), "%s", f->masked);
	seen[nseen].cls = f->cls;
	seen[nseen].act = f->act;
	seen[nseen].where = f->where;
	seen[nseen].detected = f->detected;
	nseen++;
}

static const struct seen *find_path(const char *path)
{
	for (int i = 0; i < nseen; i++)
		if (strcmp(seen[i].path, path) == 0)
			return &seen[i];
	return NULL;
}

static void dump(void)
{
	for (int i = 0; i < nseen; i++)
		fprintf(stderr, "  finding %d: %s [%s]\n", i, seen[i].path, seen[i].masked);
}

Test(scrub, findings_paths_and_masks)
{
	const char *js = "[{\"mac\":\"aa:bb:cc:dd:ee:ff\"},{\"imei\":\"490154203237518\"}]";
	char *doc, *b;
	unsigned char *z;
	size_t zn;
	struct res r;
	const struct seen *s;

	sc.finding_cb = record_cb;
	z = zenc(16 + 15, js, strlen(js), &zn);
	b = b64(z, zn);
	cr_assert(
	        asprintf(
	                &doc,
	                "{\"events\":[{\"imei\":\"356938035643809\",\"phone\":\"+8613800138000\"}],"
	                "\"data\":\"%s\"}",
	                b) > 0);
	nseen = 0;
	r = body("application/json; charset=utf-8", "", AP_UNKNOWN_REJECT, doc);
	cr_assert_eq(r.rc, AP_OK, "%s", r.why);
	s = find_path("$.events[0].imei");
	if (!s)
		dump();
	cr_assert_not_null(s);
	cr_assert_eq(s->cls, AP_CLASS_IMEI);
	cr_assert_eq(s->act, AP_ACT_HASH);
	cr_assert_eq(s->where, AP_WHERE_BODY);
	cr_assert_not(s->detected);
	cr_assert_str_eq(s->masked, "************09");
	cr_assert_not_null(find_path("$.events[0].phone"));
	s = find_path("$.data>base64>gzip>$[0].mac");
	if (!s)
		dump();
	cr_assert_not_null(s);
	cr_assert_eq(s->act, AP_ACT_DROP);
	s = find_path("$.data>base64>gzip>$[1].imei");
	cr_assert_not_null(s);
	cr_assert_str_eq(s->masked, "************18");
	cr_assert_eq(nseen, 4);
	/* No masked value holds a full value, nor any long run of it. */
	for (int i = 0; i < nseen; i++) {
		cr_assert_null(strstr(seen[i].masked, "356938035643809"));
		cr_assert_null(strstr(seen[i].masked, "490154203237518"));
		cr_assert_null(strstr(seen[i].masked, "8613800138000"));
		cr_assert_null(strstr(seen[i].masked, "aa:bb"));
		cr_assert(strlen(seen[i].masked) <= 14, "%s", seen[i].masked);
	}
	free(doc);
	free(b);
	free(z);

	/* Query strings and headers. */
	nseen = 0;
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	{
		bool ch, drop;
		ap_buf_clear(&out);
		cr_assert_eq(ap_scrub_query(&sc, AP_SPAN("v=1&imei=356938035643809"), &out, &ch),
		             AP_OK);
		ap_buf_clear(&out);
		cr_assert_eq(ap_scrub_header(&sc, AP_SPAN("X-Device-Id"), AP_SPAN("dev-1234567"),
		                             &out, &drop, &ch),
		             AP_OK);
		ap_buf_clear(&out);
		cr_assert_eq(ap_scrub_header(&sc, AP_SPAN("X-Forwarded-For"),
		                             AP_SPAN("203.0.113.7"), &out, &drop, &ch),
		             AP_OK);
	}
	s = find_path("query:imei");
	if (!s)
		dump();
	cr_assert_not_null(s);
	cr_assert_eq(s->where, AP_WHERE_QUERY);
	s = find_path("header:X-Device-Id");
	cr_assert_not_null(s);
	cr_assert_eq(s->where, AP_WHERE_HEADER);
	cr_assert_str_eq(s->masked, "*********67");
	s = find_path("header:X-Forwarded-For");
	cr_assert_not_null(s);
	cr_assert_eq(s->act, AP_ACT_TRUNCATE_IP);
	cr_assert_eq(nseen, 3);
	/* The path does not carry over from one call to the next. */
	cr_assert_eq(sc.pathlen, 0);
}

Test(scrub, findings_in_forms_and_short_values)
{
	struct res r;
	const struct seen *s;

	sc.finding_cb = record_cb;
	nseen = 0;
	r = body("application/x-www-form-urlencoded", "", AP_UNKNOWN_REJECT,
	         "imei=12&phone=1&f=mac%3D1%26imei%3D356938035643809");
	cr_assert_eq(r.rc, AP_OK, "%s", r.why);
	s = find_path("imei");
	if (!s)
		dump();
	cr_assert_not_null(s);
	/* Two characters or fewer: nothing of them is shown. */
	cr_assert_str_eq(s->masked, "**");
	s = find_path("phone");
	cr_assert_not_null(s);
	cr_assert_str_eq(s->masked, "*");
	s = find_path("f>form:imei");
	if (!s)
		dump();
	cr_assert_not_null(s);
	cr_assert_not_null(find_path("f>form:mac"));
	/* NDJSON lines each start at "$". */
	nseen = 0;
	r = body("application/x-ndjson", "", AP_UNKNOWN_REJECT,
	         "{\"imei\":\"123\"}\n[{\"mac\":\"1\"}]\n");
	cr_assert_eq(r.rc, AP_OK);
	cr_assert_not_null(find_path("$.imei"));
	cr_assert_not_null(find_path("$[0].mac"));
	cr_assert_eq(nseen, 2);
}

/* A detected value is marked as such, and a key that is an identifier never shows. */
Test(scrub_detect, detected_findings)
{
	struct ap_conf *c = tu_conf_ruleset("\"detect\": [\"imei\", \"mac\"]");
	struct ap_scrub s;
	struct ap_buf o = {0};
	bool ch;
	int st;
	const char *in = "{\"x\":{\"356938035643809\":\"aa:bb:cc:dd:ee:ff\"}}";

	tu_scrub(&s, c, "r");
	s.finding_cb = record_cb;
	nseen = 0;
	cr_assert_eq(ap_scrub_body(&s, AP_SPAN("application/json"), AP_SPAN(""), AP_UNKNOWN_REJECT,
	                           (struct ap_span){in, strlen(in)}, &o, &ch, &st),
	             AP_OK);
	for (int i = 0; i < nseen; i++) {
		cr_assert(seen[i].detected);
		cr_assert_null(strstr(seen[i].path, "356938035643809"), "%s", seen[i].path);
	}
	cr_assert_eq(nseen, 2);
	ap_buf_free(&o);
	ap_scrub_free(&s);
	ap_conf_free(c);
}

/* A detected number stays a number (its hash keeps the number's shape), so a codec
 * entry on its key reads the scrubbed document as it read the original: the proxy's
 * output scrubs again. Found by form_fuzz with e={"e"+:3569380356438092}. */
Test(scrub_detect, scrubbed_output_scrubs_again)
{
	struct ap_conf *c =
	        tu_conf_ruleset("\"detect\": [\"imei\"], \"classes\": {\"imei\": {\"action\": "
	                        "\"hash\", \"length\": "
	                        "16}}, \"fields\": [{\"keys\": [\"lvl\"], \"codec\": [\"json\"]}]");
	struct ap_scrub s;
	struct ap_buf o = {0}, o2 = {0};
	bool ch;
	const char *in = "{\"lvl\":356938035643809}";

	tu_scrub(&s, c, "r");
	cr_assert_eq(ap_scrub_json(&s, (struct ap_span){in, strlen(in)}, &o, &ch), AP_OK);
	cr_assert(ch);
	ap_scrub_begin(&s, s.rs, 64, 1 << 20);
	cr_assert_eq(ap_scrub_json(&s, ap_buf_span(&o), &o2, &ch), AP_OK,
	             "own output %.*s refused: %s", (int)o.len, o.p, s.why);
	ap_buf_free(&o);
	ap_buf_free(&o2);
	ap_scrub_free(&s);
	ap_conf_free(c);
}
