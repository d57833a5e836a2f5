/* The JSON and NDJSON scrubber: rewrites, drops and their commas, paths, escapes,
 * numbers, nested codecs, every truncation point against a guard page, hostile inputs,
 * and an oracle test that checks thousands of generated documents with jansson. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "testutil.h"

static const char *RULES =
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 64}},"
        "\"fields\": ["
        " {\"class\": \"imei\", \"keys\": [\"imei\", \"meid\"]},"
        " {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        " {\"class\": \"phone\", \"keys\": [\"phone\"], \"action\": \"mask\", \"keep\": 4},"
        " {\"class\": \"gps\", \"keys\": [\"lat\"], \"action\": \"round\", \"decimals\": 2},"
        " {\"class\": \"oaid\", \"paths\": [\"$.events[*].props.id\", \"$.d.*.x\"], \"action\": "
        "\"drop\"},"
        " {\"class\": \"ip\", \"keys\": [\"ip\"], \"action\": \"truncate_ip\"},"
        " {\"class\": \"other\", \"keys\": [\"keepme\"], \"action\": \"keep\"},"
        " {\"keys\": [\"inner\"], \"codec\": [\"json\"]},"
        " {\"keys\": [\"blob\"], \"codec\": [\"base64\", \"gzip\", \"json\"]}"
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

/* Scrubs <in> placed against a guard page; returns the result text (the input itself when
 * unchanged) or NULL on refusal. The string is valid until the next call. */
static const char *scrub(const char *in)
{
	static char *res;
	bool changed = false;
	size_t n = strlen(in);
	const char *g = tu_guard(in, n);

	free(res);
	res = NULL;
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	if (ap_scrub_json(&sc, (struct ap_span){g, n}, &out, &changed) != AP_OK)
		return NULL;
	if (!changed)
		cr_assert_eq(out.len, 0, "unchanged but output written");
	res = changed ? strndup(out.p, out.len) : strdup(in);
	return res;
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

TestSuite(scrub_json, .init = setup, .fini = teardown);

Test(scrub_json, untouched_document_is_not_copied)
{
	const char *in = "{\"a\": [1, 2.5e3, true, null, \"x\"], \"b\": {\"c\": \"imei\"}}";
	cr_assert_str_eq(scrub(in), in);
	cr_assert_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 0);
}

Test(scrub_json, hash_by_key_matches_independent_hmac)
{
	char want[256], hex[65];

	hmac_hex("356938035643809", hex, 64);
	snprintf(want, sizeof(want), "{\"imei\":\"%s\",\"x\":1}", hex);
	cr_assert_str_eq(scrub("{\"imei\":\"356938035643809\",\"x\":1}"), want);
	/* Case-insensitive key names, and a key spelled with escapes. */
	snprintf(want, sizeof(want), "{\"IMEI\":\"%s\"}", hex);
	cr_assert_str_eq(scrub("{\"IMEI\":\"356938035643809\"}"), want);
	snprintf(want, sizeof(want), "{\"\\u0069mei\":\"%s\"}", hex);
	cr_assert_str_eq(scrub("{\"\\u0069mei\":\"356938035643809\"}"), want);
	/* A value with escapes is hashed on its decoded bytes. */
	snprintf(want, sizeof(want), "{\"imei\":\"%s\"}", hex);
	cr_assert_str_eq(scrub("{\"imei\":\"3569380356\\u00343809\"}"), want);
}

Test(scrub_json, identifier_as_number)
{
	char want[256], hex[65];

	hmac_hex("356938035643809", hex, 64);
	snprintf(want, sizeof(want), "{\"imei\":\"%s\"}", hex);
	cr_assert_str_eq(scrub("{\"imei\":356938035643809}"), want);
	cr_assert_str_eq(scrub("{\"lat\":48.85837}"), "{\"lat\":48.86}");
	cr_assert_str_eq(scrub("{\"lat\":\"48.85837\"}"), "{\"lat\":\"48.86\"}");
}

Test(scrub_json, drop_keeps_document_valid)
{
	cr_assert_str_eq(scrub("{\"mac\":\"aa:bb:cc:dd:ee:ff\"}"), "{}");
	cr_assert_str_eq(scrub("{\"mac\":\"x\",\"a\":1}"), "{\"a\":1}");
	cr_assert_str_eq(scrub("{\"a\":1,\"mac\":\"x\"}"), "{\"a\":1}");
	cr_assert_str_eq(scrub("{\"a\":1,\"mac\":\"x\",\"b\":2}"), "{\"a\":1,\"b\":2}");
	cr_assert_str_eq(scrub("{\"mac\":1,\"mac\":2,\"a\":3,\"mac\":{\"q\":[1]}}"), "{\"a\":3}");
	cr_assert_str_eq(scrub("{ \"mac\" : [1,2] , \"a\" : 1 }"), "{   \"a\" : 1 }");
	cr_assert_str_eq(scrub("[{\"mac\":1},{\"mac\":2,\"b\":[]}]"), "[{},{\"b\":[]}]");
}

/* Every combination of kept and dropped members, checked with jansson. */
Test(scrub_json, drop_combinations)
{
	for (unsigned n = 1; n <= 6; n++)
		for (unsigned mask = 0; mask < (1u << n); mask++) {
			char in[512] = "{", *p = in + 1;
			const char *res;
			json_t *j;
			json_error_t e;
			unsigned kept = 0;

			for (unsigned i = 0; i < n; i++)
				p += sprintf(p, "%s \"%s%u\" : %u", i ? " ," : "",
				             mask >> i & 1 ? "mac" : "k", i, i);
			/* "mac0" is not "mac": name the dropped ones exactly. */
			p = in + 1;
			in[1] = 0;
			for (unsigned i = 0; i < n; i++) {
				if (mask >> i & 1)
					p += sprintf(p, "%s \"mac\" : %u", i ? " ," : "", i);
				else {
					p += sprintf(p, "%s \"k%u\" : %u", i ? " ," : "", i, i);
					kept++;
				}
			}
			strcpy(p, " }");
			res = scrub(in);
			cr_assert_not_null(res, "%s", in);
			j = json_loads(res, 0, &e);
			cr_assert_not_null(j, "invalid output %s for %s", res, in);
			cr_assert_eq(json_object_size(j), kept, "%s -> %s", in, res);
			for (unsigned i = 0; i < n; i++)
				if (!(mask >> i & 1)) {
					char k[8];
					sprintf(k, "k%u", i);
					cr_assert(json_integer_value(json_object_get(j, k)) == i);
				}
			json_decref(j);
		}
}

Test(scrub_json, mask_truncate_keep)
{
	cr_assert_str_eq(scrub("{\"phone\":\"+8613800138000\"}"), "{\"phone\":\"**********8000\"}");
	cr_assert_str_eq(scrub("{\"ip\":\"203.0.113.77\"}"), "{\"ip\":\"203.0.113.0\"}");
	cr_assert_str_eq(scrub("{\"ip\":\"2001:db8:1234:5678::1\"}"),
	                 "{\"ip\":\"2001:db8:1234::\"}");
	cr_assert_str_eq(scrub("{\"keepme\":\"356938035643809\"}"),
	                 "{\"keepme\":\"356938035643809\"}");
	cr_assert_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_KEEP], 1);
}

Test(scrub_json, rule_reaches_scalars_inside_containers)
{
	char want[512], h1[65], h2[65];

	hmac_hex("1", h1, 64);
	hmac_hex("2", h2, 64);
	snprintf(want, sizeof(want), "{\"imei\":[\"%s\",{\"z\":\"%s\"},null]}", h1, h2);
	cr_assert_str_eq(scrub("{\"imei\":[\"1\",{\"z\":\"2\"},null]}"), want);
	/* A key inside with its own rule follows its own rule. */
	snprintf(want, sizeof(want), "{\"imei\":{}}");
	cr_assert_str_eq(scrub("{\"imei\":{\"mac\":\"1\"}}"), want);
}

Test(scrub_json, paths)
{
	cr_assert_str_eq(
	        scrub("{\"events\":[{\"props\":{\"id\":\"a\",\"k\":1}},{\"props\":{\"id\":2}}]}"),
	        "{\"events\":[{\"props\":{\"k\":1}},{\"props\":{}}]}");
	/* Only at that path: the same key elsewhere is left. */
	cr_assert_str_eq(scrub("{\"props\":{\"id\":\"a\"},\"events\":{\"props\":{\"id\":1}}}"),
	                 "{\"props\":{\"id\":\"a\"},\"events\":{\"props\":{\"id\":1}}}");
	cr_assert_str_eq(scrub("{\"d\":{\"p\":{\"x\":1,\"y\":2},\"q\":{\"x\":3}}}"),
	                 "{\"d\":{\"p\":{\"y\":2},\"q\":{}}}");
	cr_assert_str_eq(scrub("{\"d\":[{\"x\":1}]}"), "{\"d\":[{\"x\":1}]}");
}

Test(scrub_json, json_inside_a_string)
{
	char want[512], hex[65];

	hmac_hex("42", hex, 64);
	snprintf(want, sizeof(want), "{\"inner\":\"{\\\"imei\\\":\\\"%s\\\",\\\"mac\\\":null}\"}",
	         hex);
	/* mac is dropped inside, imei hashed, the string re-escaped. */
	snprintf(want, sizeof(want), "{\"inner\":\"{\\\"imei\\\":\\\"%s\\\"}\"}", hex);
	cr_assert_str_eq(scrub("{\"inner\":\"{\\\"imei\\\":\\\"42\\\",\\\"mac\\\":null}\"}"), want);
	/* Nothing to change inside: the original bytes stay. */
	cr_assert_str_eq(scrub("{\"inner\":\"{\\\"a\\\": 1}\"}"), "{\"inner\":\"{\\\"a\\\": 1}\"}");
	/* Not JSON inside: refused, never passed as is. */
	cr_assert_null(scrub("{\"inner\":\"{not json\"}"));
	cr_assert_str_eq(sc.why, "expected a key");
	/* Empty: nothing inside. */
	cr_assert_str_eq(scrub("{\"inner\":\"\"}"), "{\"inner\":\"\"}");
}

Test(scrub_json, base64_gzip_json_inside_a_string)
{
	struct ap_zctx z = {0};
	struct ap_buf gz = {0}, b64 = {0}, dec = {0}, js = {0};
	struct ap_b64_style st = {false, true};
	enum ap_zfmt f = AP_Z_GZIP;
	const char *inner =
	        "[{\"imei\":\"356938035643809\",\"mac\":\"aa\"},{\"imei\":\"356938035643809\"}]";
	const char *why;
	char doc[4096], hex[65];
	const char *res, *q;
	json_t *j;

	cr_assert_eq(ap_z_encode(&z, AP_Z_GZIP, inner, strlen(inner), &gz, &why), AP_OK);
	cr_assert_eq(ap_base64_encode(gz.p, gz.len, &b64, &st), AP_OK);
	snprintf(doc, sizeof(doc), "{\"blob\":\"%.*s\",\"n\":1}", (int)b64.len, b64.p);
	res = scrub(doc);
	cr_assert_not_null(res, "%s", sc.why);
	j = json_loads(res, 0, NULL);
	cr_assert_not_null(j);
	q = json_string_value(json_object_get(j, "blob"));
	cr_assert_not_null(q);
	cr_assert_eq(ap_base64_decode(q, strlen(q), &dec, &st, &why), AP_OK);
	cr_assert(st.padded && !st.url);
	cr_assert_eq(ap_z_decode(&z, &f, dec.p, dec.len, &js, 1 << 20, &why), AP_OK);
	cr_assert_eq(f, AP_Z_GZIP);
	hmac_hex("356938035643809", hex, 64);
	{
		char want[512];
		snprintf(want, sizeof(want), "[{\"imei\":\"%s\"},{\"imei\":\"%s\"}]", hex, hex);
		cr_assert_eq(js.len, strlen(want));
		cr_assert(memcmp(js.p, want, js.len) == 0, "%.*s", (int)js.len, js.p);
	}
	cr_assert_eq(sc.st.hashed, 1, "the repeated IMEI is hashed once");
	cr_assert_eq(sc.st.memo_hits, 1);
	json_decref(j);
	/* Corrupt base64 or gzip inside: refused. */
	cr_assert_null(scrub("{\"blob\":\"!!!!\"}"));
	cr_assert_null(scrub("{\"blob\":\"H4sIAAAAAAAAA6tWyk\"}"));
	ap_zctx_free(&z);
	ap_buf_free(&gz);
	ap_buf_free(&b64);
	ap_buf_free(&dec);
	ap_buf_free(&js);
}

/* Each document cut at every byte, against a guard page: a strict prefix is refused
 * unless it is itself a whole document, and nothing reads past the end. */
Test(scrub_json, every_truncation_point)
{
	static const char *docs[] = {
	        "{\"imei\":\"356938035643809\",\"a\":[1,-2.5e+3,true,false,null],\"mac\":{\"x\":"
	        "\"\\u00e9\"}}",
	        "[{\"events\":[{\"props\":{\"id\":\"\\ud83d\\ude00\"}}]},"
	        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
	        "{\"inner\":\"{\\\"imei\\\":1}\",\"phone\":\"+86 138\",\"lat\":1.23456}",
	        "  {\"k\" : \"v\\n\\t\\\\\\\"\" , \"lat\" : -0.5 }  ",
	        "12345",
	        "\"str\"",
	};
	for (size_t d = 0; d < AP_ARRAY_LEN(docs); d++) {
		size_t n = strlen(docs[d]);
		for (size_t k = 0; k <= n; k++) {
			char *prefix = strndup(docs[d], k);
			const char *res = scrub(prefix);
			json_t *j = json_loads(prefix, JSON_DECODE_ANY, NULL);
			if (j)
				cr_assert_not_null(res, "valid prefix refused: [%s] %s", prefix,
				                   sc.why);
			else
				cr_assert_null(res, "invalid prefix accepted: [%s]", prefix);
			json_decref(j);
			free(prefix);
		}
	}
}

Test(scrub_json, hostile_inputs)
{
	static const char *bad[] = {
	        "",
	        "   ",
	        "{",
	        "{\"a\"}",
	        "{\"a\":}",
	        "{\"a\":1,}",
	        "[1,]",
	        "[1 2]",
	        "{\"a\":1}}",
	        "{\"a\":1} x",
	        "\xef\xbb\xbf{}",               /* BOM */
	        "{\"a\":\"\x01\"}",             /* control character */
	        "{\"a\":\"\xff\"}",             /* invalid UTF-8 */
	        "{\"a\":\"\xc0\xaf\"}",         /* overlong */
	        "{\"a\":\"\xed\xa0\x80\"}",     /* encoded surrogate */
	        "{\"a\":\"\xf4\x90\x80\x80\"}", /* > U+10FFFF */
	        "{\"a\":\"\\ud800\"}",          /* lone high surrogate */
	        "{\"a\":\"\\udc00\"}",          /* lone low surrogate */
	        "{\"a\":\"\\ud800\\u0041\"}",
	        "{\"a\":\"\\x41\"}",
	        "{\"a\":\"\\u12\"}",
	        "{\"a\":01}",
	        "{\"a\":1.}",
	        "{\"a\":-}",
	        "{\"a\":1e}",
	        "{\"a\":tru}",
	        "{\"a\":nul}",
	        "{'a':1}",
	        "{a:1}",
	        "[\"a\" : 1]",
	        "{\"imei\":\"\\ud800\"}", /* invalid inside a matched value */
	};
	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		cr_assert_null(scrub(bad[i]), "accepted: %s", bad[i]);
		cr_assert_not_null(sc.why);
	}
}

Test(scrub_json, deep_nesting_is_refused_not_crashed)
{
	size_t n = 100000;
	char *d = malloc(2 * n + 1);

	for (size_t i = 0; i < n; i++) {
		d[i] = '[';
		d[2 * n - 1 - i] = ']';
	}
	d[2 * n] = 0;
	cr_assert_null(scrub(d));
	cr_assert_str_eq(sc.why, "JSON nested too deep");
	/* Right at the limit it is accepted. */
	memset(d, '[', 64);
	memset(d + 64, ']', 64);
	d[128] = 0;
	cr_assert_not_null(scrub(d));
	d[0] = '{';
	free(d);
}

Test(scrub_json, huge_numbers_and_strings_pass)
{
	size_t n = 200000;
	char *d = malloc(n + 16);

	strcpy(d, "{\"a\":1");
	memset(d + 6, '7', n);
	strcpy(d + 6 + n, "e99999}");
	cr_assert_str_eq(scrub(d), d);
	strcpy(d, "{\"a\":\"");
	memset(d + 6, 'x', n);
	strcpy(d + 6 + n, "\"}");
	cr_assert_str_eq(scrub(d), d);
	free(d);
	cr_assert_not_null(scrub("{\"lat\":1e400}"));
	cr_assert_not_null(scrub("[-0,0.0e-0,1E+2]"));
}

Test(scrub_json, duplicate_keys_are_all_scrubbed)
{
	const char *res = scrub("{\"imei\":\"1\",\"imei\":\"2\",\"imei\":\"1\"}");
	char h1[65], h2[65], want[512];

	hmac_hex("1", h1, 64);
	hmac_hex("2", h2, 64);
	snprintf(want, sizeof(want), "{\"imei\":\"%s\",\"imei\":\"%s\",\"imei\":\"%s\"}", h1, h2,
	         h1);
	cr_assert_str_eq(res, want);
}

Test(scrub_json, ndjson_lines)
{
	struct ap_span in = AP_SPAN("{\"mac\":1,\"a\":1}\n\n{\"b\":2}\r\n{\"mac\":2}\n");
	bool changed;

	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	cr_assert_eq(ap_scrub_ndjson(&sc, in, &out, &changed), AP_OK);
	cr_assert(changed);
	cr_assert_eq(out.len, strlen("{\"a\":1}\n\n{\"b\":2}\r\n{}\n"));
	cr_assert(memcmp(out.p, "{\"a\":1}\n\n{\"b\":2}\r\n{}\n", out.len) == 0);
	ap_buf_clear(&out);
	cr_assert_eq(ap_scrub_ndjson(&sc, AP_SPAN("{\"a\":1}\n{\"b\":"), &out, &changed), AP_ERR);
	cr_assert_eq(ap_scrub_ndjson(&sc, AP_SPAN("{\"a\":1} {\"b\":2}\n"), &out, &changed),
	             AP_ERR);
}

/* ---- detection ---- */

static struct ap_conf *dconf;

Test(scrub_json_detect, detectors_and_keep)
{
	struct ap_scrub d;
	struct ap_buf o = {0};
	bool ch;
	json_t *j;

	dconf = tu_conf_ruleset("\"detect\": [\"imei\", \"mac\", \"uuid\", \"ip\"],"
	                        "\"classes\": {\"imei\": \"drop\", \"ip\": \"truncate_ip\"},"
	                        "\"fields\": [{\"class\": \"other\", \"keys\": [\"event_id\"], "
	                        "\"action\": \"keep\"}]");
	tu_scrub(&d, dconf, "r");
	const char *in =
	        "{\"x\":\"356938035643809\",\"event_id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
	        "\"y\":[\"1.2.3.4\",\"hello\",356938035643809],"
	        "\"356938035643809\":{\"k\":1},"
	        "\"z\":\"00000000-0000-0000-0000-000000000000\"}";
	cr_assert_eq(ap_scrub_json(&d, (struct ap_span){in, strlen(in)}, &o, &ch), AP_OK, "%s",
	             d.why);
	cr_assert(ch);
	j = json_loadb(o.p, o.len, 0, NULL);
	cr_assert_not_null(j, "%.*s", (int)o.len, o.p);
	cr_assert_null(json_object_get(j, "x"), "detected IMEI dropped");
	cr_assert_str_eq(json_string_value(json_object_get(j, "event_id")),
	                 "0f8fad5b-d9cb-469f-a165-70867728950e");
	cr_assert_eq(json_array_size(json_object_get(j, "y")), 2);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "y"), 0)), "1.2.3.0");
	cr_assert_null(json_object_get(j, "356938035643809"), "a key that is an IMEI goes too");
	cr_assert_str_eq(json_string_value(json_object_get(j, "z")),
	                 "00000000-0000-0000-0000-000000000000");
	json_decref(j);
	ap_buf_free(&o);
	ap_scrub_free(&d);
	ap_conf_free(dconf);
	tu_cleanup();
}

/* ---- oracle ---- */

/* Random documents written as text by hand (random whitespace, random escapes), with
 * identifiers planted under rule keys; jansson parses input and output and the two trees
 * must differ exactly as the rules say. */
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

static void puts_(struct gen *g, const char *s)
{
	put(g, s, strlen(s));
}

static void ws(struct gen *g)
{
	static const char *w[] = {"", "", "", " ", "\n", "\t ", "\r\n  "};
	puts_(g, w[rnd(g, AP_ARRAY_LEN(w))]);
}

/* Writes <s> as a JSON string with random escaping. */
static void str(struct gen *g, const char *s)
{
	char b[16];
	puts_(g, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\' || c < 0x20 || (c < 0x80 && rnd(g, 8) == 0)) {
			snprintf(b, sizeof(b), "\\u%04x", c);
			put(g, b, 6);
		} else
			put(g, s, 1);
	}
	puts_(g, "\"");
}

static const char *neutral_keys[] = {"a",  "event", "props", "time", "name",
                                     "os", "x y",   "é",     "list"};
static const char *rule_keys[] = {"imei", "IMEI", "meid", "mac", "phone", "keepme"};

static void gen_value(struct gen *g, int depth);

static void gen_scalar(struct gen *g)
{
	char b[64];
	switch (rnd(g, 6)) {
	case 0:
		snprintf(b, sizeof(b), "%d", (int)rnd(g, 100000) - 500);
		puts_(g, b);
		break;
	case 1:
		snprintf(b, sizeof(b), "%u.%ue%d", rnd(g, 100), rnd(g, 1000), (int)rnd(g, 20) - 10);
		puts_(g, b);
		break;
	case 2:
		puts_(g, rnd(g, 2) ? "true" : "false");
		break;
	case 3:
		puts_(g, "null");
		break;
	default: {
		static const char *s[] = {"hello", "",  "a\"b\\c", "line\nnext",
		                          "ünï",   "€", "tab\t"};
		str(g, s[rnd(g, AP_ARRAY_LEN(s))]);
	}
	}
}

static void gen_member_value(struct gen *g, const char *key, int depth)
{
	char b[64];
	if (strcasecmp(key, "mac") == 0 && rnd(g, 2)) {
		gen_value(g, depth);
		return;
	}
	if (strcasecmp(key, "imei") == 0 || strcasecmp(key, "meid") == 0 ||
	    strcasecmp(key, "phone") == 0 || strcasecmp(key, "keepme") == 0) {
		snprintf(b, sizeof(b), "%u%u", 35000000 + rnd(g, 999999), rnd(g, 9999999));
		if (rnd(g, 3) == 0)
			puts_(g, b);
		else
			str(g, b);
		g->planted++;
		return;
	}
	gen_value(g, depth);
}

static void gen_value(struct gen *g, int depth)
{
	unsigned k = depth > 5 ? 3 : rnd(g, 4);
	if (k == 0) {
		unsigned n = rnd(g, 6);
		puts_(g, "{");
		for (unsigned i = 0; i < n; i++) {
			const char *key =
			        rnd(g, 3) == 0 ? rule_keys[rnd(g, AP_ARRAY_LEN(rule_keys))]
			                       : neutral_keys[rnd(g, AP_ARRAY_LEN(neutral_keys))];
			if (i)
				puts_(g, ",");
			ws(g);
			str(g, key);
			ws(g);
			puts_(g, ":");
			ws(g);
			gen_member_value(g, key, depth + 1);
			ws(g);
		}
		puts_(g, "}");
	} else if (k == 1) {
		unsigned n = rnd(g, 5);
		puts_(g, "[");
		for (unsigned i = 0; i < n; i++) {
			if (i)
				puts_(g, ",");
			ws(g);
			gen_value(g, depth + 1);
			ws(g);
		}
		puts_(g, "]");
	} else
		gen_scalar(g);
}

/* The value a rule-free subtree must keep, or what a rule makes of it. */
static void check(json_t *in, json_t *got, const char *rule);

static void expect_scalar(json_t *in, json_t *got, const char *rule)
{
	char v[128], want[128];

	if (json_is_string(in))
		snprintf(v, sizeof(v), "%s", json_string_value(in));
	else if (json_is_integer(in))
		snprintf(v, sizeof(v), "%lld", (long long)json_integer_value(in));
	else {
		/* Reals, booleans and null are not identifiers: left alone. (Reals under a hash
		 * rule are hashed on their literal text, which the oracle cannot rebuild from a
		 * parsed double, so the generator plants only integers and strings.) */
		if (json_is_real(in) && rule && strcmp(rule, "keep") != 0) {
			cr_assert(json_is_string(got));
			return;
		}
		cr_assert(json_equal(in, got));
		return;
	}
	if (!rule || strcmp(rule, "keep") == 0) {
		cr_assert(json_equal(in, got), "changed without a rule");
		return;
	}
	cr_assert(json_is_string(got), "a hashed or masked value is a string");
	if (strcmp(rule, "hash") == 0) {
		hmac_hex(v, want, 64);
		cr_assert_str_eq(json_string_value(got), want);
	} else if (strcmp(rule, "mask") == 0) {
		size_t n = strlen(v), i;
		for (i = 0; i + 4 < n; i++)
			want[i] = '*';
		if (n <= 4)
			for (i = 0; i < n; i++)
				want[i] = '*';
		else
			strcpy(want + i, v + i);
		want[n] = 0;
		cr_assert_str_eq(json_string_value(got), want);
	}
}

static const char *rule_of(const char *key, const char *inherited)
{
	if (strcasecmp(key, "imei") == 0 || strcasecmp(key, "meid") == 0)
		return "hash";
	if (strcasecmp(key, "mac") == 0)
		return "drop";
	if (strcasecmp(key, "phone") == 0)
		return "mask";
	if (strcasecmp(key, "keepme") == 0)
		return "keep";
	return inherited;
}

static void check(json_t *in, json_t *got, const char *rule)
{
	cr_assert_not_null(got);
	if (json_is_object(in)) {
		const char *k;
		json_t *v;
		size_t expect = 0;
		cr_assert(json_is_object(got));
		/* jansson keeps the last of duplicate keys; the generator may repeat a key, so
		 * compare by the last value of each. */
		json_object_foreach(in, k, v)
		{
			const char *r = rule_of(k, rule);
			if (r && strcmp(r, "drop") == 0) {
				cr_assert_null(json_object_get(got, k), "dropped key %s present",
				               k);
				continue;
			}
			expect++;
			check(v, json_object_get(got, k), r);
		}
		cr_assert_eq(json_object_size(got), expect);
	} else if (json_is_array(in)) {
		cr_assert(json_is_array(got));
		cr_assert_eq(json_array_size(in), json_array_size(got));
		for (size_t i = 0; i < json_array_size(in); i++)
			check(json_array_get(in, i), json_array_get(got, i), rule);
	} else
		expect_scalar(in, got, rule);
}

Test(scrub_json, oracle_random_documents)
{
	struct gen g = {.s = 20261122};
	unsigned docs = 0, planted = 0;

	for (unsigned round = 0; round < 4000; round++) {
		json_t *jin, *jout;
		json_error_t e;
		const char *res;

		g.len = 0;
		g.planted = 0;
		ws(&g);
		gen_value(&g, 0);
		ws(&g);
		jin = json_loads(g.p, JSON_DECODE_ANY, &e);
		cr_assert_not_null(jin, "generator wrote invalid JSON: %s: %s", e.text, g.p);
		res = scrub(g.p);
		cr_assert_not_null(res, "refused: %s: %s", sc.why, g.p);
		jout = json_loads(res, JSON_DECODE_ANY, &e);
		cr_assert_not_null(jout, "output is not JSON (%s): %s\nfrom %s", e.text, res, g.p);
		check(jin, jout, NULL);
		json_decref(jin);
		json_decref(jout);
		docs++;
		planted += g.planted;
	}
	cr_assert_eq(docs, 4000);
	cr_assert(planted > 2000, "the generator planted too few identifiers (%u)", planted);
	free(g.p);
}

/* The cache across requests: a value hashed in one request is served from it in the
 * next, with the same pseudonym; a flush (a reload) forgets it. */
Test(scrub_json, pseudonym_cache_across_requests)
{
	char first[256];

	snprintf(first, sizeof(first), "%s", scrub("{\"imei\":\"356938035643809\"}"));
	cr_assert_eq(sc.st.hashed, 1);
	cr_assert_eq(sc.st.cache_hits, 0);
	cr_assert_str_eq(scrub("{\"imei\":\"356938035643809\"}"), first);
	cr_assert_eq(sc.st.hashed, 0, "the second request hashes nothing");
	cr_assert_eq(sc.st.cache_hits, 1);
	/* Another value, or the same value under another rule, is not a hit. */
	scrub("{\"imei\":\"356938035643817\",\"meid\":\"356938035643809\"}");
	cr_assert_eq(sc.st.hashed, 1, "meid shares imei's class entry, so it is a hit");
	ap_scrub_cache_flush(&sc);
	cr_assert_str_eq(scrub("{\"imei\":\"356938035643809\"}"), first);
	cr_assert_eq(sc.st.hashed, 1, "flushed: hashed again");
	cr_assert_eq(sc.st.cache_hits, 0);
}
