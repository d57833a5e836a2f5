/* Fuzzes scrub_protobuf.c with raw wire data under two schemas over the same field paths.
 * Invariants, each an abort():
 *   1. under schema "keep" (every configured field kept, messages opened), the scrubber
 *      accepts exactly what a small independent validator accepts, and what it accepts it
 *      leaves as it is: decode and re-encode are the identity when nothing matches;
 *   2. under schema "act" (hash, drop, detectors), what it accepts parses again under the
 *      validator (every length prefix, up the nesting, is right), has no more fields at
 *      any level than the input, is accepted again when scrubbed a second time, and holds
 *      no string value of field 1.2 that was in the input (they are all hashed);
 *   3. a refusal has a reason; an unchanged result writes nothing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

#include "fuzz_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The same paths in both: 1 and 1.7 messages, 1.2 string, 1.6 bytes, 3 varint, 4 fixed64,
 * 5 fixed32, 1.7.9 string. */
#define SCHEMA(S, B, V, F, D)                                                                      \
	"[{\"path\": \"1.2\", \"class\": \"imei\", \"action\": \"" S "\"},"                        \
	" {\"path\": \"1.6\", \"type\": \"bytes\", \"class\": \"other\", \"action\": \"" B "\"},"  \
	" {\"path\": \"3\", \"type\": \"varint\", \"class\": \"device_id\", \"action\": \"" V      \
	"\"},"                                                                                     \
	" {\"path\": \"4\", \"type\": \"fixed64\", \"class\": \"other\", \"action\": \"" F "\"},"  \
	" {\"path\": \"5\", \"type\": \"fixed32\", \"class\": \"other\", \"action\": \"keep\"},"   \
	" {\"path\": \"1.7.9\", \"type\": \"string\"" D "}, {\"path\": \"1.7\", \"type\": "        \
	"\"message\"}]"

static const char CONF_TEXT[] =
        "{\"keys\": {\"active\": \"f\", \"files\": {\"f\": \"fuzz.key\"}},"
        " \"rulesets\": {"
        "  \"keep\": {\"fields\": [{\"keys\": [\"pb\"], \"codec\": [{\"name\": \"protobuf\", "
        "\"fields\": " SCHEMA(
                "keep", "keep", "keep", "keep",
                ", \"class\": \"other\", \"action\": \"keep\"") "}]}]},"
                                                                "  \"act\": {\"detect\": "
                                                                "[\"imei\", \"mac\", \"ip\"], "
                                                                "\"classes\": {\"mac\": \"drop\"},"
                                                                "   \"fields\": [{\"keys\": "
                                                                "[\"pb\"], \"codec\": [{\"name\": "
                                                                "\"protobuf\", \"fields\": " SCHEMA(
                                                                        "hash", "hash", "hash",
                                                                        "drop",
                                                                        "") "}]}]}},"
                                                                            " \"routes\": "
                                                                            "[{\"path\": \"/\", "
                                                                            "\"upstream\": "
                                                                            "\"sink\", "
                                                                            "\"ruleset\": "
                                                                            "\"keep\"}]}";

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
	conf = fuzz_conf("protobuf", CONF_TEXT, &sc);
	atexit(cleanup);
}

static void fail(const char *what)
{
	fprintf(stderr, "protobuf_fuzz: %s (input %zu bytes, why: %s)\n", what, curn,
	        sc.why ? sc.why : "-");
	for (size_t i = 0; i < curn; i++)
		fprintf(stderr, "%02x", cur[i]);
	fprintf(stderr, "\n");
	abort();
}

/* ---- an independent validator of the wire format under the schema's shape ---- */

/* 0: not configured; else the type the schema gives path <p[0..d]>. */
enum { T_NONE, T_MSG, T_STR, T_VARINT, T_I64, T_I32 };

static int type_of(const uint32_t *p, int d)
{
	if (d == 1)
		return p[0] == 1   ? T_MSG
		       : p[0] == 3 ? T_VARINT
		       : p[0] == 4 ? T_I64
		       : p[0] == 5 ? T_I32
		                   : T_NONE;
	if (d == 2 && p[0] == 1)
		return p[1] == 2 || p[1] == 6 ? T_STR : p[1] == 7 ? T_MSG : T_NONE;
	if (d == 3 && p[0] == 1 && p[1] == 7 && p[2] == 9)
		return T_STR;
	return T_NONE;
}

static bool varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
	uint64_t r = 0;

	for (int k = 0; k < 10; k++) {
		if (*i >= n || (k == 9 && p[*i] > 1))
			return false;
		r |= (uint64_t)(p[*i] & 0x7F) << (7 * k);
		if (!(p[(*i)++] & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

struct stats {
	unsigned fields[4]; /* per depth */
};

/* Validates message <p, n> at path[0..d); counts fields per depth; collects the 1.2 string
 * values when <seen> is given (NUL-separated into seen, up to its size). */
static bool valid(const uint8_t *p, size_t n, uint32_t *path, int d, struct stats *st)
{
	size_t i = 0;

	while (i < n) {
		uint64_t key, v;
		int t, wt;

		if (!varint(p, n, &i, &key) || key >> 3 == 0 || key >> 3 > 536870911u)
			return false;
		wt = (int)(key & 7);
		path[d] = (uint32_t)(key >> 3);
		t = type_of(path, d + 1);
		if (st && d < 4)
			st->fields[d]++;
		switch (wt) {
		case 0:
			if (!varint(p, n, &i, &v))
				return false;
			if (t && t != T_VARINT)
				return false;
			break;
		case 1:
		case 5:
			if (n - i < (wt == 1 ? 8u : 4u))
				return false;
			i += wt == 1 ? 8 : 4;
			if (t && t != (wt == 1 ? T_I64 : T_I32))
				return false;
			break;
		case 2:
			if (!varint(p, n, &i, &v) || v > n - i)
				return false;
			if (t == T_VARINT || t == T_I64 || t == T_I32)
				return false;
			if (t == T_MSG && !valid(p + i, (size_t)v, path, d + 1, st))
				return false;
			i += (size_t)v;
			break;
		default:
			return false;
		}
	}
	return true;
}

/* The 1.2 values of valid message <p, n>, in order, into v[max] (pointers and lengths). */
struct val {
	const uint8_t *p;
	size_t n;
};

static size_t values(const uint8_t *p, size_t n, int d, struct val *v, size_t c, size_t max)
{
	size_t i = 0;

	while (i < n) {
		uint64_t key, len = 0;
		varint(p, n, &i, &key);
		switch (key & 7) {
		case 0:
			varint(p, n, &i, &len);
			break;
		case 1:
			i += 8;
			break;
		case 5:
			i += 4;
			break;
		default:
			varint(p, n, &i, &len);
			if (d == 0 && key >> 3 == 1)
				c = values(p + i, (size_t)len, 1, v, c, max);
			else if (d == 1 && key >> 3 == 2 && c < max)
				v[c++] = (struct val){p + i, (size_t)len};
			i += (size_t)len;
		}
	}
	return c;
}

static const struct ap_pb_node *root_of(const char *rs)
{
	const struct ap_ruleset *r = ap_conf_ruleset(conf, rs);
	const struct ap_field *f = ap_rules_key(r, "pb", 2);

	if (!f)
		abort();
	return &r->pb[f->pb_root];
}

static int scrub(const char *rs, const uint8_t *p, size_t n, struct ap_buf *o, bool *changed)
{
	ap_scrub_begin(&sc, ap_conf_ruleset(conf, rs), 64, 1 << 20);
	ap_buf_clear(o);
	*changed = false;
	return ap_scrub_protobuf(&sc, root_of(rs), (struct ap_span){(const char *)p, n}, o,
	                         changed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t path[32];
	struct stats si = {{0}}, so = {{0}};
	bool ok, changed, ch2;
	int rc;

	if (!conf)
		init();
	cur = data;
	curn = size;
	ok = valid(data, size, path, 0, &si);

	rc = scrub("keep", data, size, &out, &changed);
	if (rc != AP_OK && !sc.why)
		fail("refused without a reason");
	if ((rc == AP_OK) != ok)
		fail(ok ? "valid wire data refused" : "invalid wire data accepted");
	if (rc == AP_OK && (changed || out.len))
		fail("nothing to change, yet the output differs");

	rc = scrub("act", data, size, &out, &changed);
	if (rc != AP_OK && !sc.why)
		fail("refused without a reason");
	if (rc == AP_OK && !changed && out.len)
		fail("unchanged but output written");
	if (rc == AP_OK && !ok)
		fail("invalid wire data accepted by the acting schema");
	if (rc == AP_OK && changed) {
		if (!valid((const uint8_t *)out.p, out.len, path, 0, &so))
			fail("the output does not parse");
		for (int d = 0; d < 4; d++)
			if (so.fields[d] > si.fields[d])
				fail("the output has more fields than the input");
		{
			/* each non-empty 1.2 value rewritten: the one in its place differs (a
			 * hash of one may be planted as another, so positions are compared) */
			static struct val vi[4096], vo[4096];
			size_t ci = values(data, size, 0, vi, 0, 4096);
			size_t co = values((const uint8_t *)out.p, out.len, 0, vo, 0, 4096);
			if (ci != co)
				fail("1.2 values lost or added");
			for (size_t k = 0; k < ci; k++)
				if (vi[k].n && vi[k].n == vo[k].n &&
				    memcmp(vi[k].p, vo[k].p, vi[k].n) == 0)
					fail("a 1.2 value survived");
		}
		{
			char *copy = malloc(out.len ? out.len : 1);
			if (!copy)
				abort();
			memcpy(copy, out.p, out.len);
			if (scrub("act", (const uint8_t *)copy, out.len, &out2, &ch2) != AP_OK)
				fail("the scrubbed output is refused");
			free(copy);
		}
	}
	return 0;
}
