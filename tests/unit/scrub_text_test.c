/* Identifiers inside text (ruleset "detect_in_text"): words of a JSON string or a form
 * value that a detector recognises are rewritten by their class's action, the rest of the
 * text is kept byte for byte. Exact outputs against HMACs computed here; the identifier
 * at every offset of a sentence, between every pair of separators; labels ("imei:…");
 * escaped text; hostile tokens; the option off by default; and an oracle over random
 * sentences with planted identifiers, checked with jansson. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define IMEI "356938035643809"
#define MAC  "aa:bb:cc:dd:ee:ff"

static const char *RULES = "\"detect_in_text\": true,"
                           "\"detect\": [\"imei\", \"mac\", \"ip\", \"uuid\", \"email\"],"
                           "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16},"
                           " \"mac\": \"drop\", \"ip\": \"truncate_ip\", \"adid\": \"keep\","
                           " \"email\": {\"action\": \"hash\", \"length\": 8}}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;
static char H[17]; /* the IMEI's pseudonym */

static void setup(void)
{
	conf = tu_conf_ruleset(RULES);
	tu_scrub(&sc, conf, "r");
	tu_hmac_hex(conf, IMEI, 15, H, 16);
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(scrub_text, .init = setup, .fini = teardown);

/* The JSON document {"m":"<text>"} scrubbed; returns the new text of "m" (unescaped by
 * jansson), "(dropped)" when the member went (a value that is a MAC and nothing else), or
 * NULL when the document was refused. */
static const char *json_text(const char *text)
{
	static char res[4096];
	json_t *doc = json_pack("{ss}", "m", text), *got, *m;
	char *in = json_dumps(doc, JSON_COMPACT);
	size_t n = strlen(in);
	const char *g = tu_guard(in, n);
	bool changed = false;
	json_error_t err;

	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	if (ap_scrub_json(&sc, (struct ap_span){g, n}, &out, &changed) != AP_OK) {
		free(in);
		json_decref(doc);
		return NULL;
	}
	got = changed ? json_loadb(out.p, out.len, 0, &err) : json_loads(in, 0, &err);
	cr_assert_not_null(got, "output is not JSON: %s", err.text);
	m = json_object_get(got, "m");
	cr_assert(!m || json_is_string(m));
	snprintf(res, sizeof(res), "%s", m ? json_string_value(m) : "(dropped)");
	json_decref(got);
	json_decref(doc);
	free(in);
	return res;
}

static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
	static char b[8][1024];
	static int i;
	va_list ap;

	i = (i + 1) % 8;
	va_start(ap, f);
	vsnprintf(b[i], sizeof(b[i]), f, ap);
	va_end(ap);
	return b[i];
}

Test(scrub_text, words_in_a_sentence)
{
	char e8[9];

	tu_hmac_hex(conf, "jo@example.com", 14, e8, 8);
	cr_assert_str_eq(json_text("crash on device " IMEI ", retrying"),
	                 fmt("crash on device %s, retrying", H));
	/* a label before it, a sentence's full stop after it */
	cr_assert_str_eq(json_text("imei:" IMEI "."), fmt("imei:%s.", H));
	cr_assert_str_eq(json_text("imei=" IMEI " ok"), fmt("imei=%s ok", H));
	/* drop removes the word, the label stays */
	cr_assert_str_eq(json_text("wifi (" MAC ") lost"), "wifi () lost");
	cr_assert_str_eq(json_text("mac:" MAC), "mac:");
	/* truncate_ip, keep, hash of an e-mail */
	cr_assert_str_eq(json_text("from 203.0.113.7."), "from 203.0.113.0.");
	cr_assert_str_eq(json_text("ad 123e4567-e89b-12d3-a456-426614174000 kept"),
	                 "ad 123e4567-e89b-12d3-a456-426614174000 kept");
	cr_assert_str_eq(json_text("mail jo@example.com now"), fmt("mail %s now", e8));
	/* several, and the same twice */
	cr_assert_str_eq(json_text(IMEI "/" IMEI " " MAC), fmt("%s/%s ", H, H));
	cr_assert_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 2);
	cr_assert_eq(sc.st.hits[AP_CLASS_MAC][AP_ACT_DROP], 1);
}

Test(scrub_text, what_is_left_alone)
{
	const char *keep[] = {
	        "order 12345678 shipped",         /* a number that is no identifier */
	        "x" IMEI,                         /* part of a longer word */
	        IMEI "x",                         /* idem */
	        "356938035643808 has a bad Luhn", /* not an IMEI */
	        "version 1.2.3 build 4",          /* too short for an address */
	        "",
	        "......::::::",
	        "ü €  \t\n",
	};
	for (size_t i = 0; i < sizeof(keep) / sizeof(*keep); i++)
		cr_assert_str_eq(json_text(keep[i]), keep[i]);
	cr_assert_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 0);
}

/* An escaped text is unescaped to be matched, and written back escaped. */
Test(scrub_text, escaped_text)
{
	const char *in = "{\"m\":\"line1\\nimei \\u0033"
	                 "56938035643809\\t\\\"q\\\"\"}";
	const char *want = fmt("{\"m\":\"line1\\nimei %s\\t\\\"q\\\"\"}", H);
	bool changed;

	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){in, strlen(in)}, &out, &changed), AP_OK);
	cr_assert(changed);
	cr_assert_eq(out.len, strlen(want), "%.*s", (int)out.len, out.p);
	cr_assert(memcmp(out.p, want, out.len) == 0, "%.*s", (int)out.len, out.p);
}

/* The IMEI at every offset of a sentence, with every separator on each side. */
Test(scrub_text, every_position_and_separator)
{
	const char *filler = "the quick brown fox jumps over the lazy dog";
	const char seps[] = " ,;/()[]{}<>|!?\"'*#\t";

	for (size_t at = 0; at <= strlen(filler); at++)
		for (size_t s = 0; s < sizeof(seps) - 1; s++) {
			char in[256], want[256];
			/* the separator on both sides, unless at an end of the text */
			snprintf(in, sizeof(in), "%.*s%s" IMEI "%s%s", (int)at, filler,
			         at ? (char[]){seps[s], 0} : "",
			         at < strlen(filler) ? (char[]){seps[s], 0} : "", filler + at);
			snprintf(want, sizeof(want), "%.*s%s%s%s%s", (int)at, filler,
			         at ? (char[]){seps[s], 0} : "", H,
			         at < strlen(filler) ? (char[]){seps[s], 0} : "", filler + at);
			cr_assert_str_eq(json_text(in), want, "in: %s", in);
		}
}

/* Form values get the same treatment, written back percent-encoded. */
Test(scrub_text, form_values)
{
	const char *in = "m=device+" IMEI "+failed&n=ok&mac=wifi+%28"
	                 "aa%3Abb%3Acc%3Add%3Aee%3Aff%29";
	const char *want = fmt("m=device+%s+failed&n=ok&mac=wifi+%%28%%29", H);
	bool changed;

	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	cr_assert_eq(ap_scrub_form(&sc, (struct ap_span){in, strlen(in)}, &out, &changed), AP_OK);
	cr_assert(changed);
	cr_assert_eq(out.len, strlen(want), "%.*s", (int)out.len, out.p);
	cr_assert(memcmp(out.p, want, out.len) == 0, "%.*s", (int)out.len, out.p);
	/* empty values (no buffer behind them: found by form_fuzz under UBSan) */
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_free(&out);
	cr_assert_eq(ap_scrub_form(&sc, AP_SPAN("e=&f&g=%41"), &out, &changed), AP_OK);
	cr_assert(!changed);
	cr_assert_str_eq(json_text(""), "");
}

Test(scrub_text, off_by_default)
{
	struct ap_conf *c =
	        tu_conf_ruleset("\"detect\": [\"imei\"], \"classes\": {\"imei\": \"drop\"}");
	struct ap_scrub s;
	const char *in = "{\"m\":\"device " IMEI "\",\"i\":\"" IMEI "\"}";
	bool changed;

	tu_scrub(&s, c, "r");
	ap_buf_clear(&out);
	cr_assert_eq(ap_scrub_json(&s, (struct ap_span){in, strlen(in)}, &out, &changed), AP_OK);
	cr_assert(changed); /* the whole value is dropped, the word in text is not */
	cr_assert_eq(out.len, strlen("{\"m\":\"device " IMEI "\"}"), "%.*s", (int)out.len, out.p);
	ap_scrub_free(&s);
	ap_conf_free(c);
}

/* Hostile text: a word of 100 k colons and digits, a word just over the detectors' 254
 * bytes, many short words. The result is exact, and nothing is read past the value. */
Test(scrub_text, hostile_words)
{
	size_t n = 100000;
	char *w = malloc(n + 1), *r;

	for (size_t i = 0; i < n; i++)
		w[i] = i % 2 ? ':' : '7';
	w[n] = 0;
	r = strdup(json_text(w) ? json_text(w) : "(refused)");
	cr_assert_eq(strlen(r) <= 4095, true);
	cr_assert_eq(strncmp(r, w, strlen(r)), 0);
	free(r);
	memset(w, '1', 300);
	memcpy(w + 300 - 15, IMEI, 15);
	w[300] = 0;
	cr_assert_str_eq(json_text(w), w, "a 300-byte word is no identifier");
	for (size_t i = 0; i < 2000; i++)
		memcpy(w + i * 2, "a ", 2);
	w[4000] = 0;
	cr_assert_str_eq(json_text(w), w);
	free(w);
}

/* Oracle: random sentences of random words with identifiers planted among them; jansson
 * reads the output, every planted IMEI and MAC is gone (the IMEI as its pseudonym, the MAC
 * removed), every other word is where it was. */
Test(scrub_text, oracle_random_sentences)
{
	static const char *words[] = {"error",      "12345", "v1.2", "ok",    "a-b",
	                              "x_y",        "@",     "::",   "ünï",   "3.14",
	                              "0xdeadbeef", "retry", "#42",  "user@", "10.0"};
	static const char seps[] = " ,;()/|\t";
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	for (int round = 0; round < 2000; round++) {
		char in[1024] = "", want[1024] = "";
		size_t ni = 0, nw = 0;
		int nwords = 1 + (int)(seed % 12);
		for (int k = 0; k < nwords; k++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			const char *w = words[seed % (sizeof(words) / sizeof(*words))];
			const char *ww = w;
			if (seed % 5 == 0) {
				w = IMEI;
				ww = H;
			} else if (seed % 7 == 0) {
				w = MAC;
				ww = "";
			}
			char sep[2] = {seps[(seed >> 8) % (sizeof(seps) - 1)], 0};
			if (k) {
				ni += (size_t)snprintf(in + ni, sizeof(in) - ni, "%s", sep);
				nw += (size_t)snprintf(want + nw, sizeof(want) - nw, "%s", sep);
			}
			ni += (size_t)snprintf(in + ni, sizeof(in) - ni, "%s", w);
			nw += (size_t)snprintf(want + nw, sizeof(want) - nw, "%s", ww);
		}
		if (strcmp(in, MAC) == 0)
			snprintf(want, sizeof(want), "(dropped)");
		const char *got = json_text(in);
		cr_assert_not_null(got);
		cr_assert_str_eq(got, want, "in: %s", in);
		cr_assert_null(strstr(got, IMEI));
		cr_assert_null(strstr(got, MAC));
	}
}
