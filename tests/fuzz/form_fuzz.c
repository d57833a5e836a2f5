/* Fuzzes scrub_form.c, as a form body and as a query string. Invariants, each an abort():
 *   1. the scrubber refuses exactly the inputs a small independent decoder finds a bad
 *      %-escape in, unless a codec field (data, gz, e, f) is there to refuse its content;
 *   2. what it accepts, scrubbed again, is accepted again, with no more pairs;
 *   3. no decoded value of an "imei" pair (nested "f" forms included) survives as a decoded
 *      value anywhere in the output, unless the input also had it where no rule rewrites,
 *      or it is the pseudonym of another planted value;
 *   4. a refusal has a reason, and an unchanged result writes nothing;
 *   5. as a URL path: never refused; the same number of '/'; a segment the ruleset acts on
 *      (decoded by the test's own path decoder) is rewritten, every other one is copied
 *      byte for byte.
 * The classes a number can be detected as (IMEI, MEID, IMSI, ICCID) are hashed in the
 * preserve format, as conf/anonproxy.json does: with a hex pseudonym, a number under a
 * codec key inside a nested JSON document becomes a string that the codec then cannot
 * read, so the output is refused when scrubbed again — a scrub_json.c bug, see the
 * disabled test scrub_detect::scrubbed_output_scrubs_again in tests/unit/scrub_test.c. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "detect.h"
#include "scrub.h"

#include "fuzz_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CONF_TEXT[] =
        "{\"keys\": {\"active\": \"f\", \"files\": {\"f\": \"fuzz.key\"}},"
        " \"rulesets\": {\"r\": {"
        "  \"detect_in_text\": true,"
        "  \"detect\": [\"imei\", \"imsi\", \"iccid\", \"mac\", \"uuid\", \"ip\", \"phone\", "
        "\"email\"],"
        "  \"classes\": {\"imei\": {\"action\": \"hash\", \"format\": \"preserve\"},"
        "   \"meid\": {\"action\": \"hash\", \"format\": \"preserve\"},"
        "   \"imsi\": {\"action\": \"hash\", \"format\": \"preserve\"},"
        "   \"iccid\": {\"action\": \"hash\", \"format\": \"preserve\"}, \"mac\": \"drop\"},"
        "  \"fields\": ["
        "   {\"class\": \"imei\", \"keys\": [\"imei\"], \"action\": \"hash\", \"length\": 64},"
        "   {\"class\": \"mac\", \"keys\": [\"mac\"]},"
        "   {\"class\": \"phone\", \"keys\": [\"phone\"], \"action\": \"mask\", \"keep\": 4},"
        "   {\"class\": \"ip\", \"keys\": [\"ip\"], \"action\": \"truncate_ip\"},"
        "   {\"class\": \"other\", \"keys\": [\"keepme\"], \"action\": \"keep\"},"
        "   {\"keys\": [\"data\"], \"codec\": [\"base64\", \"json\"]},"
        "   {\"keys\": [\"gz\"], \"codec\": [\"base64\", \"gzip\", \"json\"]},"
        "   {\"keys\": [\"e\"], \"codec\": [\"json\"]},"
        "   {\"keys\": [\"f\"], \"codec\": [\"form\"]}"
        "  ]}},"
        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"r\"}]}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out, out2;

static void cleanup(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_buf_free(&out2);
}

static void init(void)
{
	conf = fuzz_conf("form", CONF_TEXT, &sc);
	atexit(cleanup);
}

static const uint8_t *cur;
static size_t curn;

static void fail(const char *what)
{
	fprintf(stderr, "form_fuzz: %s\ninput (%zu bytes): %.*s\noutput: %.*s\nwhy: %s\n", what,
	        curn, (int)curn, (const char *)cur, (int)out.len, out.p ? out.p : "",
	        sc.why ? sc.why : "-");
	abort();
}

/* ---- an independent form decoder ---- */

struct pair {
	char *k, *v; /* decoded, malloc'd */
	size_t kn, vn;
};

struct form {
	struct pair *p;
	size_t n;
	bool codec; /* a pair named like a codec field */
};

static int hexv(unsigned char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

/* Decodes s[0..n) into a new string; NULL on a bad escape. */
static char *unesc(const char *s, size_t n, size_t *on)
{
	char *o = malloc(n + 1);
	size_t j = 0;

	if (!o)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			if (i + 2 >= n || hexv((unsigned char)s[i + 1]) < 0 ||
			    hexv((unsigned char)s[i + 2]) < 0) {
				free(o);
				return NULL;
			}
			o[j++] = (char)(hexv((unsigned char)s[i + 1]) * 16 +
			                hexv((unsigned char)s[i + 2]));
			i += 2;
		} else
			o[j++] = s[i] == '+' ? ' ' : s[i];
	}
	*on = j;
	return o;
}

static bool named(const struct pair *p, const char *lit)
{
	return p->kn == strlen(lit) && strncasecmp(p->k, lit, p->kn) == 0;
}

static void form_free(struct form *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->p[i].k);
		free(f->p[i].v);
	}
	free(f->p);
	memset(f, 0, sizeof(*f));
}

/* Returns false on a bad escape anywhere. */
static bool form_parse(const char *s, size_t n, struct form *f)
{
	size_t i = 0;

	memset(f, 0, sizeof(*f));
	while (i < n) {
		const char *amp = memchr(s + i, '&', n - i);
		size_t e = amp ? (size_t)(amp - s) : n;
		if (e > i) {
			const char *eq = memchr(s + i, '=', e - i);
			size_t ke = eq ? (size_t)(eq - s) : e;
			struct pair p = {0};
			p.k = unesc(s + i, ke - i, &p.kn);
			p.v = eq ? unesc(eq + 1, e - ke - 1, &p.vn) : calloc(1, 1);
			if (!p.k || !p.v) {
				free(p.k);
				free(p.v);
				form_free(f);
				return false;
			}
			f->p = realloc(f->p, (f->n + 1) * sizeof(*f->p));
			if (!f->p)
				abort();
			f->p[f->n++] = p;
			f->codec |= named(&p, "data") || named(&p, "gz") || named(&p, "e") ||
			            named(&p, "f");
		}
		i = e + 1;
	}
	return true;
}

/* ---- value sets ---- */

struct sset {
	char **s;
	size_t *n;
	size_t len, cap;
};

static void add(struct sset *set, const char *s, size_t n)
{
	if (set->len == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 32;
		set->s = realloc(set->s, set->cap * sizeof(*set->s));
		set->n = realloc(set->n, set->cap * sizeof(*set->n));
		if (!set->s || !set->n)
			abort();
	}
	set->s[set->len] = malloc(n + 1);
	if (!set->s[set->len])
		abort();
	if (n)
		memcpy(set->s[set->len], s, n);
	set->n[set->len++] = n;
}

static bool has(const struct sset *set, const char *s, size_t n)
{
	for (size_t i = 0; i < set->len; i++)
		if (set->n[i] == n && memcmp(set->s[i], s, n) == 0)
			return true;
	return false;
}

static void sset_free(struct sset *set)
{
	for (size_t i = 0; i < set->len; i++)
		free(set->s[i]);
	free(set->s);
	free(set->n);
}

/* Input values: "imei" ones to <planted>, every other to <kept>, as it is and as
 * detect_in_text rewrites it (a word dropped from a kept value may leave exactly a planted
 * value: the fuzzer builds such pairs); "f" values are forms themselves (as far as they
 * decode), up to the codec layer limit. */
static void collect(const struct form *f, struct sset *planted, struct sset *kept, unsigned layer)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct pair *p = &f->p[i];
		add(named(p, "imei") ? planted : kept, p->v, p->vn);
		if (!named(p, "imei")) {
			struct ap_buf t = {0};
			bool ch = false;
			if (ap_scrub_text(&sc, p->v, p->vn, &t, &ch) == AP_OK && ch)
				add(kept, t.p, t.len);
			ap_buf_free(&t);
		}
		if (named(p, "f") && layer < AP_LAYERS_MAX) {
			struct form in;
			if (form_parse(p->v, p->vn, &in)) {
				collect(&in, planted, kept, layer + 1);
				form_free(&in);
			}
		}
	}
}

/* <v, n> is the pseudonym of one of the planted values (see fuzz_is_pseudonym). */
static bool a_pseudonym(const struct sset *planted, const char *v, size_t n)
{
	for (size_t i = 0; i < planted->len; i++)
		if (fuzz_is_pseudonym(v, n, planted->s[i], planted->n[i]))
			return true;
	return false;
}

static void check_values(const struct form *f, const struct sset *planted, const struct sset *kept,
                         unsigned layer)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct pair *p = &f->p[i];
		/* A mask ("****1234"), a truncated address ("10.1.2.0") or an emptied value
		 * may equal a planted one by chance. */
		if (p->vn && p->v[0] != '*' && !ap_ip_parse(p->v, p->vn, (uint8_t[16]){0}) &&
		    has(planted, p->v, p->vn) && !has(kept, p->v, p->vn) &&
		    !a_pseudonym(planted, p->v, p->vn)) {
			fprintf(stderr, "value (key %.*s, layer %u): ", (int)p->kn, p->k, layer);
			for (size_t b = 0; b < p->vn; b++)
				fprintf(stderr,
				        (unsigned char)p->v[i] < 0x20 ||
				                        (unsigned char)p->v[i] > 0x7e
				                ? "\\x%02x"
				                : "%c",
				        (unsigned char)p->v[b]);
			fprintf(stderr, "\n");
			fail("an imei value survived");
		}
		if (named(p, "f") && layer < AP_LAYERS_MAX + 1) {
			struct form in;
			if (form_parse(p->v, p->vn, &in)) {
				check_values(&in, planted, kept, layer + 1);
				form_free(&in);
			}
		}
	}
}

static int scrub(bool query, const char *p, size_t n, struct ap_buf *o, bool *changed)
{
	ap_scrub_begin(&sc, ap_conf_ruleset(conf, "r"), 64, 1 << 20);
	ap_buf_clear(o);
	*changed = false;
	return query ? ap_scrub_query(&sc, (struct ap_span){p, n}, o, changed)
	             : ap_scrub_form(&sc, (struct ap_span){p, n}, o, changed);
}

/* A path segment as the detectors see it: escapes decoded where they are valid, '+' kept. */
static size_t path_unesc(const char *s, size_t n, char *o)
{
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexv((unsigned char)s[i + 1]) >= 0 &&
		    hexv((unsigned char)s[i + 2]) >= 0) {
			o[j++] = (char)(hexv((unsigned char)s[i + 1]) * 16 +
			                hexv((unsigned char)s[i + 2]));
			i += 2;
		} else
			o[j++] = s[i];
	}
	return j;
}

static void check_path(const char *in, size_t n)
{
	bool changed;
	struct ap_span res;
	const char *p, *q, *pe, *qe;
	char *dec = malloc(n + 1);

	if (!dec)
		abort();
	ap_scrub_begin(&sc, ap_conf_ruleset(conf, "r"), 64, 1 << 20);
	ap_buf_clear(&out);
	if (ap_scrub_path(&sc, (struct ap_span){in, n}, &out, &changed) != AP_OK)
		fail("a path refused");
	if (!changed && out.len)
		fail("path unchanged but output written");
	res = changed ? ap_buf_span(&out) : (struct ap_span){in, n};
	p = in;
	pe = in + n;
	q = res.p;
	qe = res.p + res.n;
	for (;;) {
		const char *ps = memchr(p, '/', (size_t)(pe - p)),
		           *qs = memchr(q, '/', (size_t)(qe - q));
		size_t pn = (size_t)((ps ? ps : pe) - p), qn = (size_t)((qs ? qs : qe) - q);
		size_t dn = path_unesc(p, pn, dec);
		bool acted = pn && pn <= 256 && ap_scrub_detect(&sc, dec, dn, false) &&
		             ap_scrub_detect(&sc, dec, dn, false)->act != AP_ACT_KEEP;
		if (!ps != !qs)
			fail("a path segment added or lost");
		if (acted && pn == qn && memcmp(p, q, pn) == 0)
			fail("an identifier path segment survived");
		if (!acted && (pn != qn || memcmp(p, q, pn) != 0))
			fail("a path segment changed that no rule acts on");
		if (!ps)
			break;
		p = ps + 1;
		q = qs + 1;
	}
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size ? size : 1);

	if (!conf)
		init();
	if (!in)
		abort();
	if (size)
		memcpy(in, data, size);
	cur = data;
	curn = size;
	for (int q = 0; q < 2; q++) {
		struct form fin, fout, f2;
		struct sset planted = {0}, kept = {0};
		bool changed, ch2, valid = form_parse(in, size, &fin);
		int rc = scrub(q, in, size, &out, &changed);
		struct ap_span res;

		if (rc != AP_OK && !sc.why)
			fail("refused without a reason");
		if (rc == AP_OK && !changed && out.len)
			fail("unchanged but output written");
		if (!valid) {
			if (rc == AP_OK)
				fail("a bad escape accepted");
			continue;
		}
		if (rc != AP_OK && !fin.codec)
			fail("a valid form without codec fields refused");
		if (rc != AP_OK) {
			form_free(&fin);
			continue;
		}
		res = changed ? ap_buf_span(&out) : (struct ap_span){in, size};
		if (!form_parse(res.p, res.n, &fout))
			fail("output has a bad escape");
		if (fout.n > fin.n)
			fail("output has more pairs than the input");
		collect(&fin, &planted, &kept, 0);
		check_values(&fout, &planted, &kept, 0);
		{
			/* Scrubbing the output again: accepted, no more pairs. */
			char *copy = malloc(res.n ? res.n : 1);
			if (!copy)
				abort();
			if (res.n)
				memcpy(copy, res.p, res.n);
			if (scrub(q, copy, res.n, &out2, &ch2) != AP_OK)
				fail("the scrubbed output is refused");
			if (ch2 && (!form_parse(out2.p, out2.len, &f2) || f2.n > fout.n))
				fail("scrubbing twice added pairs");
			if (ch2)
				form_free(&f2);
			free(copy);
		}
		form_free(&fin);
		form_free(&fout);
		sset_free(&planted);
		sset_free(&kept);
	}
	check_path(in, size);
	free(in);
	return 0;
}
