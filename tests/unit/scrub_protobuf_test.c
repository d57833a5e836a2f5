/* The protobuf terminal codec: identity when nothing matches (random messages, nothing
 * copied), every action on strings, bytes, varints, fixed fields and messages, length
 * prefixes rewritten up the nesting (growing and shrinking across a varint-size boundary),
 * nested codec chains, the detectors on string leaves, every truncation point of a valid
 * message against a guard page, malformed wire data refused with a reason. Outputs are
 * read back by a protobuf decoder of the test's own. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *RULES =
        "\"detect\": [\"imei\", \"mac\"],"
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 32}, \"mac\": \"drop\"},"
        "\"fields\": [{\"keys\": [\"pb\"], \"codec\": [{\"name\": \"protobuf\", \"fields\": ["
        " {\"path\": \"1.2\", \"class\": \"imei\"},"
        " {\"path\": \"1.3\", \"class\": \"other\", \"action\": \"drop\"},"
        " {\"path\": \"1.4.5\", \"class\": \"imei\", \"action\": \"hash\", \"format\": "
        "\"preserve\"},"
        " {\"path\": \"1.6\", \"type\": \"varint\", \"class\": \"device_id\", \"action\": "
        "\"hash\"},"
        " {\"path\": \"1.7\", \"type\": \"string\"},"
        " {\"path\": \"8\", \"type\": \"bytes\", \"class\": \"other\", \"action\": \"hash\", "
        "\"length\": 8},"
        " {\"path\": \"9\", \"type\": \"fixed64\", \"class\": \"other\", \"action\": \"drop\"},"
        " {\"path\": \"1.10\", \"type\": \"message\", \"class\": \"other\", \"action\": "
        "\"drop\"},"
        " {\"path\": \"11\", \"codec\": [\"json\"]},"
        " {\"path\": \"12\", \"type\": \"fixed32\", \"class\": \"other\", \"action\": \"keep\"},"
        " {\"path\": \"13\", \"type\": \"varint\", \"class\": \"other\", \"action\": \"drop\"}"
        "]}]},"
        " {\"class\": \"imei\", \"keys\": [\"imei\"]}]";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;
static const struct ap_pb_node *root;

static void setup(void)
{
	const struct ap_field *f;

	conf = tu_conf_ruleset(RULES);
	tu_scrub(&sc, conf, "r");
	f = ap_rules_key(sc.rs, "pb", 2);
	cr_assert(f && f->ncodec == 1 && f->codec[0] == AP_CODEC_PROTOBUF);
	root = &sc.rs->pb[f->pb_root];
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(scrub_protobuf, .init = setup, .fini = teardown);

/* ---- the test's own protobuf writer ---- */

struct tb {
	uint8_t p[8192];
	size_t n;
};

static void tb_varint(struct tb *b, uint64_t v)
{
	do {
		cr_assert_lt(b->n, sizeof(b->p));
		b->p[b->n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void tb_bytes(struct tb *b, uint32_t num, const void *p, size_t n)
{
	tb_varint(b, (uint64_t)num << 3 | 2);
	tb_varint(b, n);
	cr_assert_leq(b->n + n, sizeof(b->p));
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void tb_str(struct tb *b, uint32_t num, const char *s)
{
	tb_bytes(b, num, s, strlen(s));
}

static void tb_int(struct tb *b, uint32_t num, uint64_t v)
{
	tb_varint(b, (uint64_t)num << 3);
	tb_varint(b, v);
}

static void tb_fixed(struct tb *b, uint32_t num, int wt, uint64_t v)
{
	tb_varint(b, (uint64_t)num << 3 | (unsigned)wt);
	for (int i = 0; i < (wt == 1 ? 8 : 4); i++)
		b->p[b->n++] = (uint8_t)(v >> (8 * i));
}

static void tb_msg(struct tb *b, uint32_t num, const struct tb *m)
{
	tb_bytes(b, num, m->p, m->n);
}

/* ---- the test's own protobuf reader ---- */

struct tf {
	uint32_t num;
	int wt;
	uint64_t v;       /* varint / fixed value */
	const uint8_t *p; /* length-delimited content */
	size_t n;
	size_t start, end; /* the whole field in its message */
};

static int rd_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
	uint64_t r = 0;

	for (int k = 0; k < 10; k++) {
		if (*i >= n)
			return -1;
		r |= (uint64_t)(p[*i] & 0x7F) << (7 * k);
		if (!(p[(*i)++] & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* The fields of message <p, n>; -1 when it does not parse. */
static int fields(const uint8_t *p, size_t n, struct tf *f, int max)
{
	size_t i = 0;
	int c = 0;

	while (i < n) {
		uint64_t key, v;
		cr_assert_lt(c, max);
		f[c].start = i;
		if (rd_varint(p, n, &i, &key) || key >> 3 == 0)
			return -1;
		f[c].num = (uint32_t)(key >> 3);
		f[c].wt = (int)(key & 7);
		switch (f[c].wt) {
		case 0:
			if (rd_varint(p, n, &i, &f[c].v))
				return -1;
			break;
		case 1:
		case 5: {
			size_t w = f[c].wt == 1 ? 8 : 4;
			if (n - i < w)
				return -1;
			f[c].v = 0;
			for (size_t k = 0; k < w; k++)
				f[c].v |= (uint64_t)p[i + k] << (8 * k);
			i += w;
			break;
		}
		case 2:
			if (rd_varint(p, n, &i, &v) || v > n - i)
				return -1;
			f[c].p = p + i;
			f[c].n = (size_t)v;
			i += v;
			break;
		default:
			return -1;
		}
		f[c++].end = i;
	}
	return c;
}

/* ---- running it ---- */

static int run(const void *in, size_t n, bool *changed)
{
	const char *g = tu_guard(in, n);
	int rc;

	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	*changed = false;
	rc = ap_scrub_protobuf(&sc, root, (struct ap_span){g, n}, &out, changed);
	if (rc != AP_OK)
		cr_assert_not_null(sc.why, "refused without a reason");
	else if (!*changed)
		cr_assert_eq(out.len, 0, "unchanged but output written");
	return rc;
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

#define IMEI  "356938035643809"
#define IMEI2 "490154203237518"

Test(scrub_protobuf, nothing_matches_nothing_copied)
{
	struct tb m = {0}, sub = {0};
	bool changed;

	tb_str(&sub, 2, "hello"); /* 20.2 is not configured */
	tb_int(&sub, 6, 77);
	tb_msg(&m, 20, &sub);
	tb_str(&m, 2, IMEI); /* top-level 2: only 1.2 is */
	tb_int(&m, 6, 1234567);
	tb_fixed(&m, 14, 1, 0x1122334455667788ull);
	tb_fixed(&m, 15, 5, 0xdeadbeef);
	tb_fixed(&m, 12, 5, 7); /* configured, kept */
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_expect_not(changed);
	/* a configured message with nothing to change inside is not rewritten either */
	memset(&sub, 0, sizeof(sub));
	tb_str(&sub, 2, ""); /* an empty value carries nothing */
	tb_str(&sub, 9, "unconfigured");
	tb_str(&sub, 7, "plain text");
	m.n = 0;
	tb_msg(&m, 1, &sub);
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_expect_not(changed);
}

/* Random messages over field numbers the schema does not name (or names with keep), with
 * nested messages in fields the schema does not open: accepted, and nothing written. */
Test(scrub_protobuf, random_unmatched_messages_are_identity)
{
	srand(7);
	for (int round = 0; round < 2000; round++) {
		struct tb m = {0};
		int nf = rand() % 12;
		bool changed;

		for (int i = 0; i < nf; i++) {
			uint32_t num = 14 + (uint32_t)(rand() % 100000);
			switch (rand() % 5) {
			case 0:
				tb_int(&m, num, (uint64_t)rand() * (uint64_t)rand());
				break;
			case 1:
				tb_fixed(&m, num, 1, (uint64_t)rand());
				break;
			case 2:
				tb_fixed(&m, num, 5, (uint64_t)rand());
				break;
			case 3: {
				char s[64];
				snprintf(s, sizeof(s), "v%d-%s", rand(), IMEI);
				tb_str(&m, num, s);
				break;
			}
			default: {
				struct tb sub = {0};
				tb_str(&sub, 2, IMEI); /* would match under 1, not here */
				tb_fixed(&sub, 12, 5, 1);
				tb_msg(&m, num, &sub);
			}
			}
		}
		cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "round %d: %s", round, sc.why);
		cr_assert_not(changed, "round %d", round);
	}
}

Test(scrub_protobuf, string_hashed_lengths_fixed_up_the_nesting)
{
	struct tb m = {0}, b1 = {0}, b4 = {0};
	struct tf top[8], one[16], four[4];
	char hex[33], pres[16];
	bool changed;
	int n;

	tb_str(&b4, 5, IMEI2); /* 1.4.5: preserve, same length */
	tb_str(&b4, 9, "untouched");
	tb_str(&b1, 2, IMEI); /* 1.2: hex 32, 15 -> 32 bytes */
	tb_msg(&b1, 4, &b4);
	tb_str(&b1, 11, "other");
	tb_msg(&m, 1, &b1);
	tb_str(&m, 16, "tail");
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(out.len, m.n + 32 - 15);
	n = fields((uint8_t *)out.p, out.len, top, 8);
	cr_assert_eq(n, 2);
	cr_assert_eq(top[0].num, 1);
	cr_assert(top[1].n == 4 && memcmp(top[1].p, "tail", 4) == 0);
	n = fields(top[0].p, top[0].n, one, 16);
	cr_assert_eq(n, 3);
	hmac_hex(IMEI, 15, hex, 32);
	cr_assert_eq(one[0].n, 32);
	cr_expect_eq(memcmp(one[0].p, hex, 32), 0);
	n = fields(one[1].p, one[1].n, four, 4);
	cr_assert_eq(n, 2);
	cr_assert_eq(four[0].n, 15);
	memcpy(pres, four[0].p, 15);
	pres[15] = 0;
	cr_expect_str_neq(pres, IMEI2);
	cr_expect_eq(strspn(pres, "0123456789"), 15, "preserve keeps 15 digits: %s", pres);
	cr_expect_eq(four[1].n, 9);
	cr_expect_eq(memcmp(one[2].p, "other", 5), 0);
}

/* A nested length crosses 127 <-> 128: its varint grows to two bytes, or shrinks to one. */
Test(scrub_protobuf, length_varint_grows_and_shrinks)
{
	char pad[200];
	struct tb m = {0}, b1 = {0};
	struct tf top[4], one[8];
	bool changed;
	size_t padn;

	/* 1 = {2: IMEI (17 bytes), 9: pad} with content length 127 - 17 + ... exactly 120 */
	padn = 120 - 17 - 2;
	memset(pad, 'x', padn);
	tb_str(&b1, 2, IMEI);
	tb_bytes(&b1, 9, pad, padn);
	cr_assert_eq(b1.n, 120);
	tb_msg(&m, 1, &b1);
	cr_assert_eq(m.n, 122); /* tag, one length byte, content */
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(out.len, 1 + 2 + 137);
	cr_assert_eq(fields((uint8_t *)out.p, out.len, top, 4), 1);
	cr_assert_eq(top[0].n, 137);
	cr_assert_eq(fields(top[0].p, top[0].n, one, 8), 2);
	cr_expect_eq(one[1].n, padn);

	/* shrinking: 1 = {3: dropped (40 bytes), 9: pad} from 130 to 90 */
	memset(&m, 0, sizeof(m));
	memset(&b1, 0, sizeof(b1));
	memset(pad, 'y', 40);
	tb_bytes(&b1, 3, pad, 38); /* 40 bytes with tag and length */
	tb_bytes(&b1, 9, pad, 88); /* 90 bytes */
	cr_assert_eq(b1.n, 130);
	tb_msg(&m, 1, &b1);
	tb_int(&m, 14, 5);
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(out.len, 1 + 1 + 90 + 2);
	cr_assert_eq(fields((uint8_t *)out.p, out.len, top, 4), 2);
	cr_assert_eq(top[0].n, 90);
	cr_expect_eq(top[1].num, 14);
	cr_expect_eq(top[1].v, 5);
}

Test(scrub_protobuf, drops_of_every_wire_type)
{
	struct tb m = {0}, b1 = {0}, sub = {0};
	struct tf top[8], one[8];
	bool changed;
	int n;

	tb_str(&sub, 1, "inner");
	tb_str(&b1, 3, "secret"); /* 1.3 string drop */
	tb_msg(&b1, 10, &sub);    /* 1.10 message drop */
	tb_str(&b1, 11, "kept");
	tb_msg(&m, 1, &b1);
	tb_fixed(&m, 9, 1, 42);  /* 9 fixed64 drop */
	tb_int(&m, 13, 300);     /* 13 varint drop */
	tb_fixed(&m, 12, 5, 99); /* 12 fixed32 keep */
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	n = fields((uint8_t *)out.p, out.len, top, 8);
	cr_assert_eq(n, 2);
	cr_expect_eq(top[0].num, 1);
	cr_expect_eq(top[1].num, 12);
	cr_expect_eq(top[1].v, 99);
	n = fields(top[0].p, top[0].n, one, 8);
	cr_assert_eq(n, 1);
	cr_expect_eq(one[0].num, 11);
	cr_expect_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_DROP], 4);
}

Test(scrub_protobuf, varint_hash_keeps_a_varint_of_as_many_digits)
{
	struct tb m = {0}, b1 = {0};
	struct tf top[2], one[2];
	bool changed;
	char d[24];

	tb_int(&b1, 6, 123456789012ull);
	tb_msg(&m, 1, &b1);
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(fields((uint8_t *)out.p, out.len, top, 2), 1);
	cr_assert_eq(fields(top[0].p, top[0].n, one, 2), 1);
	cr_assert_eq(one[0].wt, 0);
	snprintf(d, sizeof(d), "%llu", (unsigned long long)one[0].v);
	cr_expect_eq(strlen(d), 12, "%s", d);
	cr_expect_neq(one[0].v, 123456789012ull);
	/* the same input gives the same pseudonym */
	{
		uint64_t first = one[0].v;
		cr_assert_eq(run(m.p, m.n, &changed), AP_OK);
		fields((uint8_t *)out.p, out.len, top, 2);
		fields(top[0].p, top[0].n, one, 2);
		cr_expect_eq(one[0].v, first);
	}
}

Test(scrub_protobuf, detectors_on_string_leaves_and_bytes_hashed)
{
	struct tb m = {0}, b1 = {0};
	struct tf top[4], one[4];
	bool changed;
	char hex[33];

	tb_str(&b1, 7, IMEI);                /* detected: imei, hex 32 */
	tb_str(&b1, 7, "aa:bb:cc:dd:ee:0f"); /* detected: mac, drop */
	tb_str(&b1, 7, "nothing here");
	tb_msg(&m, 1, &b1);
	tb_bytes(&m, 8, "\x00\x01\x02\xff", 4); /* 8: bytes, hex 8 */
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(fields((uint8_t *)out.p, out.len, top, 4), 2);
	cr_assert_eq(fields(top[0].p, top[0].n, one, 4), 2);
	hmac_hex(IMEI, 15, hex, 32);
	cr_expect(one[0].n == 32 && memcmp(one[0].p, hex, 32) == 0);
	cr_expect(one[1].n == 12 && memcmp(one[1].p, "nothing here", 12) == 0);
	cr_expect_eq(top[1].n, 8);
	hmac_hex("\x00\x01\x02\xff", 4, hex, 8);
	cr_expect_eq(memcmp(top[1].p, hex, 8), 0);
}

Test(scrub_protobuf, codec_chain_in_a_string_field)
{
	struct tb m = {0};
	struct tf top[2];
	bool changed;
	char hex[33], want[64];

	tb_str(&m, 11, "{\"imei\":\"" IMEI "\",\"n\":1}");
	cr_assert_eq(run(m.p, m.n, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	cr_assert_eq(fields((uint8_t *)out.p, out.len, top, 2), 1);
	hmac_hex(IMEI, 15, hex, 32);
	snprintf(want, sizeof(want), "{\"imei\":\"%s\",\"n\":1}", hex);
	cr_assert_eq(top[0].n, strlen(want));
	cr_expect_eq(memcmp(top[0].p, want, top[0].n), 0);
	/* a string that is not JSON, under a json codec: refused */
	m.n = 0;
	tb_str(&m, 11, "not json");
	cr_expect_eq(run(m.p, m.n, &changed), AP_ERR);
}

static void refused(const void *p, size_t n, const char *why)
{
	bool changed;

	cr_assert_eq(run(p, n, &changed), AP_ERR, "accepted (expected: %s)", why);
	cr_expect_str_eq(sc.why, why);
}

Test(scrub_protobuf, malformed_wire_data_refused)
{
	struct tb m = {0};

	refused("\x0b\x01", 2, "protobuf groups are not supported");  /* 1, wire type 3 */
	refused("\x0c", 1, "protobuf groups are not supported");      /* wire type 4 */
	refused("\x0e\x01", 2, "unknown protobuf wire type");         /* wire type 6 */
	refused("\x0f\x01", 2, "unknown protobuf wire type");         /* wire type 7 */
	refused("\x00\x01", 2, "protobuf field number out of range"); /* field 0 */
	refused("\x08\x80", 2, "truncated protobuf");                 /* varint cut */
	refused("\x0a\x05"
	        "abc",
	        5, "truncated protobuf");                 /* length over */
	refused("\x0a", 1, "truncated protobuf");         /* no length */
	refused("\x09\x01\x02", 3, "truncated protobuf"); /* fixed64 cut */
	refused("\x0d\x01", 2, "truncated protobuf");     /* fixed32 cut */
	refused("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11,
	        "protobuf varint longer than 64 bits");
	refused("\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12,
	        "protobuf varint longer than 64 bits");
	refused("\x80\x80\x80\x80\x10\x00", 6, "protobuf field number out of range"); /* 2^29 */
	/* a configured field with another wire type than the schema says */
	tb_int(&m, 8, 5);
	refused(m.p, m.n, "protobuf field has an unexpected wire type");
	m.n = 0;
	tb_str(&m, 9, "12345678");
	refused(m.p, m.n, "protobuf field has an unexpected wire type");
	/* a length-delimited field the schema opens as a message, holding no message */
	m.n = 0;
	tb_bytes(&m, 1, "\x0f\x0f\x0f", 3);
	refused(m.p, m.n, "unknown protobuf wire type");
	/* and a prefix that runs past its parent */
	m.n = 0;
	tb_bytes(&m, 1,
	         "\x12\x10"
	         "abc",
	         5);
	refused(m.p, m.n, "truncated protobuf");
}

/* Every prefix of a valid message: accepted exactly at top-level field boundaries (a
 * protobuf message has no end marker), refused everywhere else, never read past the end. */
Test(scrub_protobuf, every_truncation_point)
{
	struct tb m = {0}, b1 = {0}, b4 = {0};
	struct tf top[16];
	bool boundary[512] = {false}, changed;
	int n;

	tb_str(&b4, 5, IMEI2);
	tb_str(&b1, 2, IMEI);
	tb_msg(&b1, 4, &b4);
	tb_int(&b1, 6, 987654321);
	tb_str(&b1, 3, "gone");
	tb_msg(&m, 1, &b1);
	tb_fixed(&m, 9, 1, 3);
	tb_int(&m, 300, 1);
	tb_fixed(&m, 12, 5, 3);
	tb_str(&m, 11, "{\"imei\":\"" IMEI "\"}");
	n = fields(m.p, m.n, top, 16);
	cr_assert_eq(n, 5);
	boundary[0] = true;
	for (int i = 0; i < n; i++)
		boundary[top[i].end] = true;
	for (size_t k = 0; k <= m.n; k++) {
		int rc = run(m.p, k, &changed);
		if (boundary[k])
			cr_expect_eq(rc, AP_OK, "prefix %zu refused: %s", k, sc.why);
		else
			cr_expect_eq(rc, AP_ERR, "prefix %zu accepted", k);
		if (rc == AP_OK && changed) {
			struct tf f[16];
			cr_expect_geq(fields((uint8_t *)out.p, out.len, f, 16), 0,
			              "prefix %zu: output does not parse", k);
		}
	}
}

/* The whole chain from a JSON body: base64 protobuf in a JSON string (a codec entry on a
 * key), re-encoded in the dialect it came in. */
Test(scrub_protobuf, inside_a_json_document)
{
	struct ap_conf *c2 = tu_conf_ruleset(
	        "\"fields\": [{\"keys\": [\"p\"], \"codec\": [\"base64\", {\"name\": \"protobuf\", "
	        "\"fields\": [{\"path\": \"2\", \"class\": \"imei\", \"action\": \"hash\", "
	        "\"length\": 16}]}]}]");
	struct ap_scrub s2;
	struct ap_buf o2 = {0};
	struct tb m = {0};
	char doc[256], b64[128];
	bool changed;

	tb_str(&m, 2, IMEI);
	tb_int(&m, 3, 9);
	EVP_EncodeBlock((unsigned char *)b64, m.p, (int)m.n);
	snprintf(doc, sizeof(doc), "{\"p\":\"%s\",\"q\":1}", b64);
	tu_scrub(&s2, c2, "r");
	cr_assert_eq(ap_scrub_json(&s2, (struct ap_span){doc, strlen(doc)}, &o2, &changed), AP_OK,
	             "%s", s2.why);
	cr_assert(changed);
	{
		unsigned char bin[128];
		const char *v = strstr(o2.p, "\"p\":\"") + 5;
		size_t vn = (size_t)(strchr(v, '"') - v);
		int bn = EVP_DecodeBlock(bin, (const unsigned char *)v, (int)vn);
		struct tf f[4];
		cr_assert_gt(bn, 0);
		while (vn && v[vn - 1] == '=') {
			vn--;
			bn--;
		}
		cr_assert_eq(fields(bin, (size_t)bn, f, 4), 2);
		cr_expect_eq(f[0].n, 16);
		cr_expect_eq(f[1].v, 9);
	}
	ap_scrub_free(&s2);
	ap_buf_free(&o2);
	ap_conf_free(c2);
}
