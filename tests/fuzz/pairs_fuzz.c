/* Fuzzes scrub_pairs.c ("k=v##k=v"). Invariants, each an abort():
 *   1. under ruleset "keep" (its keys kept, no detectors) every input is accepted (unless
 *      "p" values nest pairs deeper than the layer limit) and left as it is: splitting and
 *      joining again is the identity when nothing matches;
 *   2. under ruleset "act" (hash, drop, mask, detectors, a base64-JSON value, pairs nested
 *      in a "p" value), an input is refused only for a reason the format allows (a "blob"
 *      value that does not decode, nesting too deep, a replacement that would hold the
 *      separator); what it accepts splits into no more
 *      elements than the input had, in the input's order, each the input's element or one
 *      with the same key (or a bare token rewritten whole);
 *   3. every non-empty "imei" value was rewritten (the output element standing for it
 *      holds another value), and the output scrubbed again is accepted;
 *   4. a refusal has a reason; an unchanged result writes nothing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

#include "fuzz_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CONF_TEXT[] =
        "{\"keys\": {\"active\": \"f\", \"files\": {\"f\": \"fuzz.key\"}},"
        " \"rulesets\": {"
        "  \"keep\": {\"fields\": [{\"keys\": [\"p\"], \"codec\": [\"pairs\"]},"
        "   {\"class\": \"imei\", \"keys\": [\"imei\", \"mac\", \"tel\"], \"action\": \"keep\"}]},"
        "  \"act\": {\"detect\": [\"imei\", \"mac\", \"ip\", \"email\"], \"scan_keys\": false,"
        "   \"classes\": {\"mac\": \"drop\", \"ip\": \"truncate_ip\"},"
        "   \"fields\": [{\"keys\": [\"p\"], \"codec\": [\"pairs\"]},"
        "    {\"class\": \"imei\", \"keys\": [\"imei\"], \"action\": \"hash\", \"length\": 20},"
        "    {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        "    {\"class\": \"phone\", \"keys\": [\"tel\"], \"action\": \"mask\", \"keep\": 2},"
        "    {\"keys\": [\"blob\"], \"codec\": [\"base64\", \"json\"]}]}},"
        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"keep\"}]}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out, out2;
static const uint8_t *cur;
static size_t curn;

static void cleanup(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_buf_free(&out2);
}

static void init(void)
{
	conf = fuzz_conf("pairs", CONF_TEXT, &sc);
	atexit(cleanup);
}

static void fail(const char *what)
{
	fprintf(stderr, "pairs_fuzz: %s\ninput (%zu bytes): %.*s\noutput: %.*s\nwhy: %s\n", what,
	        curn, (int)curn, (const char *)cur, (int)out.len, out.p ? out.p : "",
	        sc.why ? sc.why : "-");
	abort();
}

/* ---- the test's own splitter ---- */

struct el {
	const char *p, *v; /* element; value (NULL: a bare token) */
	size_t n, kn, vn;
};

static size_t split(const char *s, size_t n, struct el **els)
{
	size_t cap = 16, c = 0;
	const char *p = s, *e = s + n;
	struct el *a = malloc(cap * sizeof(*a));

	if (!a)
		abort();
	for (;;) {
		const char *sep = NULL;
		for (const char *q = p; q + 1 < e; q++)
			if (q[0] == '#' && q[1] == '#') {
				sep = q;
				break;
			}
		const char *pe = sep ? sep : e, *eq = memchr(p, '=', (size_t)(pe - p));
		if (c == cap && !(a = realloc(a, (cap *= 2) * sizeof(*a))))
			abort();
		a[c].p = p;
		a[c].n = (size_t)(pe - p);
		a[c].kn = eq ? (size_t)(eq - p) : a[c].n;
		a[c].v = eq ? eq + 1 : NULL;
		a[c].vn = eq ? (size_t)(pe - eq - 1) : 0;
		c++;
		if (!sep)
			break;
		p = sep + 2;
	}
	*els = a;
	return c;
}

static bool key_is(const struct el *e, const char *k)
{
	return e->v && e->kn == strlen(k) && strncasecmp(e->p, k, e->kn) == 0;
}

/* <needle> in <h, n>, ASCII case-insensitively. */
static const char *strcasestr_n(const char *h, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(h + i, needle, k) == 0)
			return h + i;
	return NULL;
}

static int scrub(const char *rs, const char *p, size_t n, struct ap_buf *o, bool *changed)
{
	const struct ap_ruleset *r = ap_conf_ruleset(conf, rs);

	ap_scrub_begin(&sc, r, 64, 1 << 20);
	ap_buf_clear(o);
	*changed = false;
	return ap_scrub_pairs(&sc, ap_rules_key(r, "p", 1), (struct ap_span){p, n}, o, changed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct el *ie, *oe;
	size_t ni, no, j = 0;
	bool changed, ch2, blob = false;
	struct ap_span res;
	int rc;

	if (!conf)
		init();
	cur = data;
	curn = size;
	rc = scrub("keep", in, size, &out, &changed);
	/* (pairs nested in "p" values, deeper than the codec layer limit, are refused) */
	if (rc != AP_OK && strcmp(sc.why, "codecs nested too deep") != 0)
		fail("nothing to change, yet refused");
	if (rc == AP_OK && (changed || out.len))
		fail("nothing to change, yet not the identity");

	rc = scrub("act", in, size, &out, &changed);
	if (rc != AP_OK && !sc.why)
		fail("refused without a reason");
	if (rc == AP_OK && !changed && out.len)
		fail("unchanged but output written");
	ni = split(in, size, &ie);
	/* a "blob" value, here or in pairs nested through "p" */
	blob = strcasestr_n(in, size, "blob=") != NULL;
	if (rc != AP_OK) {
		if (!blob && strcmp(sc.why, "a replacement would break the pairs format") != 0 &&
		    strcmp(sc.why, "codecs nested too deep") != 0)
			fail("refused for no reason the format allows");
		free(ie);
		return 0;
	}
	res = changed ? ap_buf_span(&out) : (struct ap_span){in, size};
	no = split(res.p, res.n, &oe);
	if (res.n == 0)
		no = 0; /* "" is no element at all */
	if (no > ni)
		fail("more elements out than in");
	for (size_t i = 0; i < no; i++) {
		/* the next input element it can stand for */
		while (j < ni && !(oe[i].n == ie[j].n && memcmp(oe[i].p, ie[j].p, ie[j].n) == 0) &&
		       !(oe[i].v && ie[j].v && oe[i].kn == ie[j].kn &&
		         memcmp(oe[i].p, ie[j].p, ie[j].kn) == 0) &&
		       !(!oe[i].v && !ie[j].v))
			j++;
		if (j++ == ni)
			fail("an output element no input element stands for, in order");
		/* its own value, not another element's (a hash of one may be planted as another) */
		if (key_is(&oe[i], "imei") && key_is(&ie[j - 1], "imei") && ie[j - 1].vn &&
		    ie[j - 1].vn == oe[i].vn && memcmp(ie[j - 1].v, oe[i].v, oe[i].vn) == 0)
			fail("an imei value survived");
	}
	{
		char *copy = malloc(res.n ? res.n : 1);
		if (!copy)
			abort();
		memcpy(copy, res.p, res.n);
		if (scrub("act", copy, res.n, &out2, &ch2) != AP_OK)
			fail("the scrubbed output is refused");
		free(copy);
	}
	free(ie);
	free(oe);
	return 0;
}
