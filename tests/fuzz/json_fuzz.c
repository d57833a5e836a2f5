/* Fuzzes scrub_json.c against jansson, the independent oracle. Invariants, each an abort():
 *   1. jansson accepts the input  =>  the scrubber accepts it (unless one of the scrubber's
 *      documented limits applies: nesting deeper than json_depth, codec layers beyond
 *      AP_LAYERS_MAX, a string under "inner" that is not itself a JSON document);
 *   2. the scrubber accepts  =>  jansson accepts the input, and the output parses;
 *   3. when the input parses, no string that was the value of an "imei" member (or of the
 *      path rule "$.events[*].props.id"), at any depth and inside nested "inner" documents,
 *      survives as a string value anywhere in the output — unless the input also held it
 *      somewhere no rule rewrites, or it is the pseudonym of another planted value.
 * Documented differences, found by this target: jansson refuses
 * integers beyond int64 and reals beyond a double's range ("too big integer", "real number
 * overflow") and a \u0000 inside an object key; the scrubber accepts all of them, as it
 * never converts numbers and treats keys as bytes. Those inputs skip invariant 2's first
 * half, and their output may fail the same way (and no other). The other way round,
 * jansson 2.14 accepts one raw NUL byte right after a number ("0\0", "[1\0,2]": its number
 * lexer swallows it); a raw NUL is never JSON and the scrubber refuses it, so inputs (and
 * nested documents) holding one skip invariant 1. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

#include "fuzz_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEPTH 64

static const char CONF_TEXT[] =
        "{\"keys\": {\"active\": \"f\", \"files\": {\"f\": \"fuzz.key\"}},"
        " \"limits\": {\"json_depth\": 64},"
        " \"rulesets\": {\"r\": {"
        "  \"detect_in_text\": true,"
        "  \"detect\": [\"imei\", \"imsi\", \"iccid\", \"mac\", \"uuid\", \"ip\", \"phone\", "
        "\"email\"],"
        "  \"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 64}},"
        "  \"fields\": ["
        "   {\"class\": \"imei\", \"keys\": [\"imei\"]},"
        "   {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        "   {\"class\": \"phone\", \"keys\": [\"phone\"], \"action\": \"mask\", \"keep\": 4},"
        "   {\"class\": \"device_id\", \"paths\": [\"$.events[*].props.id\"], \"action\": "
        "\"hash\","
        "    \"length\": 32},"
        "   {\"keys\": [\"inner\"], \"codec\": [\"json\"]}"
        "  ]}},"
        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"r\"}]}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

static void cleanup(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
}

/* The configuration is built once: a 32-byte key in a fresh temporary directory, then the
 * text above with "fuzz.key" resolved from there. */
static void init(void)
{
	conf = fuzz_conf("json", CONF_TEXT, &sc);
	atexit(cleanup);
}

static void fail(const char *what, const uint8_t *d, size_t n)
{
	fprintf(stderr, "json_fuzz: %s\ninput (%zu bytes): %.*s\noutput: %.*s\nwhy: %s\n", what, n,
	        (int)n, (const char *)d, (int)out.len, out.p ? out.p : "", sc.why ? sc.why : "-");
	abort();
}

static bool key_is(const char *k, size_t n, const char *lit)
{
	return n == strlen(lit) && strncasecmp(k, lit, n) == 0;
}

/* The documented differences: what jansson refuses and the scrubber does not. */
static bool documented(const json_error_t *e)
{
	enum json_error_code c = json_error_code(e);
	return c == json_error_numeric_overflow || c == json_error_null_byte_in_key;
}

static json_t *parse(const char *p, size_t n, json_error_t *e)
{
	return json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, e);
}

/* ---- string sets ---- */

struct sset {
	const char **s;
	size_t *n;
	size_t len, cap;
};

static void add(struct sset *set, const char *s, size_t n)
{
	if (set->len == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 64;
		set->s = realloc(set->s, set->cap * sizeof(*set->s));
		set->n = realloc(set->n, set->cap * sizeof(*set->n));
		if (!set->s || !set->n)
			abort();
	}
	set->s[set->len] = s;
	set->n[set->len++] = n;
}

static bool has(const struct sset *set, const char *s, size_t n)
{
	for (size_t i = 0; i < set->len; i++)
		if (set->n[i] == n && memcmp(set->s[i], s, n) == 0)
			return true;
	return false;
}

/* <s, n> is the pseudonym of one of the planted values (see fuzz_is_pseudonym). */
static bool a_pseudonym(const struct sset *planted, const char *s, size_t n)
{
	for (size_t i = 0; i < planted->len; i++)
		if (fuzz_is_pseudonym(s, n, planted->s[i], planted->n[i]))
			return true;
	return false;
}

/* ---- walking jansson trees ---- */

/* How the scrubber treats a value, as far as the invariants care. */
enum mode {
	M_NONE,  /* no rule */
	M_HASH,  /* a hash rule names it (or an array under one): its strings must change */
	M_INNER, /* the codec rule: its strings are JSON documents */
	M_SKIP,  /* inside a dropped member: only validated */
};

struct walk {
	struct sset planted, kept; /* input strings that must go / may stay */
	json_t *trees[64];         /* nested documents parsed, freed at the end */
	size_t ntrees;
	struct ap_buf text; /* kept strings as detect_in_text rewrites them, one after
	                       another (kept's pointers into it are set at the end) */
	size_t *text_off;   /* where each starts, and its length */
	size_t *text_len, ntext;
	bool must_accept; /* false once a documented limit of the scrubber applies */
};

static void walk_doc(struct walk *w, json_t *v, unsigned layer);

static unsigned depth_of(json_t *v)
{
	unsigned d = 0, c;
	size_t i;
	const char *k;
	json_t *x;

	if (json_is_array(v))
		json_array_foreach(v, i, x)
		{
			if ((c = depth_of(x)) > d)
				d = c;
		}
	else if (json_is_object(v))
		json_object_foreach(v, k, x)
		{
			if ((c = depth_of(x)) > d)
				d = c;
		}
	else
		return 0;
	return d + 1;
}

/* Inputs with duplicate keys hide members from jansson's tree (the last one wins), and a
 * hidden member may hold what the scrubber refuses by design: a bad nested document or
 * deep nesting. The must-accept invariant then holds only when neither can be there. */
static bool may_hide_limits(const char *d, size_t n)
{
	unsigned depth = 0, max = 0;
	bool str = false;

	for (size_t i = 0; i < n; i++) {
		char c = (char)d[i];
		if (str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				str = false;
			continue;
		}
		if (c == '"')
			str = true;
		else if (c == '[' || c == '{')
			max = ++depth > max ? depth : max;
		else if ((c == ']' || c == '}') && depth)
			depth--;
	}
	if (max > DEPTH)
		return true;
	for (size_t i = 0; i + 1 < n; i++)
		if ((d[i] == '\\' && d[i + 1] == 'u') ||
		    (i + 5 <= n && strncasecmp(d + i, "inner", 5) == 0))
			return true;
	return false;
}

static bool dups_may_hide_limits(const char *d, size_t n)
{
	json_error_t e;
	json_t *t = json_loadb(d, n, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &e);

	json_decref(t);
	return !t && json_error_code(&e) == json_error_duplicate_key && may_hide_limits(d, n);
}

/* A string the scrubber opens as a nested document, at codec layer <layer>. */
static void nested(struct walk *w, json_t *s, unsigned layer)
{
	json_error_t e;
	json_t *t;

	if (json_string_length(s) == 0)
		return; /* an empty field holds no document */
	if (layer > AP_LAYERS_MAX) {
		w->must_accept = false;
		return;
	}
	t = parse(json_string_value(s), json_string_length(s), &e);
	if (!t) {
		w->must_accept = false; /* refused by design: not a document */
		return;
	}
	if (w->ntrees == AP_ARRAY_LEN(w->trees)) {
		json_decref(t);
		w->must_accept = false;
		return;
	}
	w->trees[w->ntrees++] = t;
	if (dups_may_hide_limits(json_string_value(s), json_string_length(s)) ||
	    memchr(json_string_value(s), 0, json_string_length(s)))
		w->must_accept = false;
	walk_doc(w, t, layer);
}

/* <v> under <mode>; <ps> is the state of the path rule $.events[*].props.id (0 root,
 * 1 events, 2 an element, 3 props, -1 off the path). */
static void walk(struct walk *w, json_t *v, enum mode mode, int ps, unsigned layer)
{
	const char *k;
	size_t kn, i;
	json_t *x;

	if (json_is_string(v)) {
		if (mode == M_HASH)
			add(&w->planted, json_string_value(v), json_string_length(v));
		else
			add(&w->kept, json_string_value(v), json_string_length(v));
		if (mode == M_NONE) {
			/* a word dropped from a kept string may leave exactly a planted value (the
			 * fuzzer builds such documents): that rewrite is kept too */
			size_t at = w->text.len;
			bool ch = false;
			if (ap_scrub_text(&sc, json_string_value(v), json_string_length(v),
			                  &w->text, &ch) == AP_OK &&
			    ch) {
				w->text_off = realloc(w->text_off, (w->ntext + 1) * sizeof(size_t));
				w->text_len = realloc(w->text_len, (w->ntext + 1) * sizeof(size_t));
				if (!w->text_off || !w->text_len)
					abort();
				w->text_off[w->ntext] = at;
				w->text_len[w->ntext++] = w->text.len - at;
			}
		}
		if (mode == M_INNER)
			nested(w, v, layer + 1);
	} else if (json_is_array(v)) {
		/* Elements inherit the rule of their array. */
		json_array_foreach(v, i, x) walk(w, x, mode, ps == 1 ? 2 : -1, layer);
	} else if (json_is_object(v)) {
		json_object_keylen_foreach(v, k, kn, x)
		{
			enum mode m = M_NONE;
			int cps = -1;

			if (ps == 0 && key_is(k, kn, "events"))
				cps = 1;
			else if (ps == 2 && key_is(k, kn, "props"))
				cps = 3;
			if (mode == M_SKIP)
				m = M_SKIP;
			else if (ps == 3 && key_is(k, kn, "id"))
				m = M_HASH;
			else if (key_is(k, kn, "imei"))
				m = M_HASH;
			else if (key_is(k, kn, "mac"))
				m = M_SKIP;
			else if (key_is(k, kn, "inner"))
				m = M_INNER;
			/* (A member with no rule of its own inherits a hash from above; its
			 * strings are left out of "planted", which only weakens the check.) */
			walk(w, x, m, cps, layer);
		}
	}
}

static void walk_doc(struct walk *w, json_t *v, unsigned layer)
{
	if (depth_of(v) > DEPTH)
		w->must_accept = false;
	walk(w, v, M_NONE, 0, layer);
}

/* Every string value in the output, nested "inner" documents included. */
static void check_out(struct walk *w, json_t *v, bool inner, const uint8_t *d, size_t n,
                      unsigned layer)
{
	const char *k;
	size_t kn, i;
	json_t *x;

	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t sn = json_string_length(v);
		if (has(&w->planted, s, sn) && !has(&w->kept, s, sn) && sn > 0 && s[0] != '*' &&
		    !a_pseudonym(&w->planted, s, sn))
			fail("an imei value survived", d, n);
		if (inner && layer < 8) {
			json_t *t = parse(s, sn, NULL);
			if (t) {
				check_out(w, t, false, d, n, layer + 1);
				json_decref(t);
			}
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) check_out(w, x, inner, d, n, layer);
	} else if (json_is_object(v)) {
		json_object_keylen_foreach(v, k, kn, x)
		        check_out(w, x, key_is(k, kn, "inner"), d, n, layer);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy so an over-read is caught under the seed replay too. */
	char *in = malloc(size ? size : 1);
	struct walk w = {.must_accept = true};
	json_error_t e, e2;
	json_t *jin, *jout;
	bool changed = false, ok;
	struct ap_span res;

	if (!conf)
		init();
	if (!in)
		abort();
	if (size)
		memcpy(in, data, size);
	ap_scrub_begin(&sc, ap_conf_ruleset(conf, "r"), DEPTH, 1 << 20);
	ap_buf_clear(&out);
	ok = ap_scrub_json(&sc, (struct ap_span){in, size}, &out, &changed) == AP_OK;
	if (ok && !changed && out.len)
		fail("unchanged but output written", data, size);
	if (!ok && !sc.why)
		fail("refused without a reason", data, size);
	res = changed ? ap_buf_span(&out) : (struct ap_span){in, size};

	jin = parse(in, size, &e);
	if (jin) {
		walk_doc(&w, jin, 0);
		for (size_t t = 0; t < w.ntext; t++)
			add(&w.kept, w.text.p + w.text_off[t], w.text_len[t]);
		if (dups_may_hide_limits(in, size) || memchr(in, 0, size))
			w.must_accept = false;
		if (w.must_accept && !ok)
			fail("jansson accepts, the scrubber refuses", data, size);
	} else if (ok && !documented(&e)) {
		fprintf(stderr, "jansson: %s (code %d)\n", e.text, (int)json_error_code(&e));
		fail("the scrubber accepts what jansson refuses", data, size);
	}
	if (ok) {
		jout = parse(res.p, res.n, &e2);
		if (!jout && (jin || !documented(&e2))) {
			fprintf(stderr, "jansson on output: %s\n", e2.text);
			fail("output is not JSON", data, size);
		}
		if (jout && jin)
			check_out(&w, jout, false, data, size, 0);
		json_decref(jout);
	}
	json_decref(jin);
	for (size_t i = 0; i < w.ntrees; i++)
		json_decref(w.trees[i]);
	free(w.planted.s);
	free(w.planted.n);
	free(w.kept.s);
	free(w.kept.n);
	ap_buf_free(&w.text);
	free(w.text_off);
	free(w.text_len);
	free(in);
	return 0;
}
