/* Tests for action.c: each action's output and its numeric_out flag, placeholders, mask
 * over UTF-8, truncate_ip in RFC 5952 form, and decimal rounding half away from zero. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "action.h"

static struct ap_key key;
static struct ap_pseudo ps;

static void setup(void)
{
	memset(&key, 0, sizeof(key));
	snprintf(key.id, sizeof(key.id), "k1");
	memcpy(key.secret, "0123456789abcdef0123456789abcdef", 32);
	key.len = 32;
	cr_assert_eq(ap_pseudo_init(&ps, &key), AP_OK);
}

static void teardown(void)
{
	ap_pseudo_free(&ps);
}

TestSuite(action, .init = setup, .fini = teardown);

/* Applies <act> to <in> and returns the output as a string (ring of static buffers);
 * *num gets numeric_out. */
static const char *apply(struct ap_action act, const char *in, bool numeric, bool *num)
{
	static char ring[8][1024];
	static int slot;
	struct ap_buf b = {0};
	char *r = ring[slot++ % 8];
	bool n = true;

	cr_assert_eq(ap_action_apply(&ps, &act, in, strlen(in), numeric, &b, &n), AP_OK, "%s", in);
	cr_assert_lt(b.len, sizeof(ring[0]));
	if (b.len)
		memcpy(r, b.p, b.len);
	r[b.len] = 0;
	ap_buf_free(&b);
	if (num)
		*num = n;
	return r;
}

static struct ap_action act_of(int a, int cls)
{
	return (struct ap_action){.act = (uint8_t)a, .cls = (uint8_t)cls};
}

/* ---- keep, drop, hash ---- */

Test(action, keep)
{
	bool num;

	cr_assert_str_eq(apply(act_of(AP_ACT_KEEP, AP_CLASS_OTHER), "abc", false, &num), "abc");
	cr_assert(!num);
	cr_assert_str_eq(apply(act_of(AP_ACT_KEEP, AP_CLASS_OTHER), "-12.5e3", true, &num),
	                 "-12.5e3");
	cr_assert(num);
	/* a string of digits stays a string */
	apply(act_of(AP_ACT_KEEP, AP_CLASS_OTHER), "123", false, &num);
	cr_assert(!num);
}

Test(action, drop_and_none_refused)
{
	struct ap_action a = act_of(AP_ACT_DROP, AP_CLASS_IMEI);
	struct ap_buf b = {0};
	bool num = true;

	cr_assert_eq(ap_action_apply(&ps, &a, "x", 1, false, &b, &num), AP_ERR);
	cr_assert_eq(b.len, 0);
	cr_assert(!num);
	a.act = AP_ACT_NONE;
	cr_assert_eq(ap_action_apply(&ps, &a, "x", 1, false, &b, NULL), AP_ERR);
	a.act = AP_ACT_MAX;
	cr_assert_eq(ap_action_apply(&ps, &a, "x", 1, false, &b, NULL), AP_ERR);
	cr_assert_eq(b.len, 0);
	ap_buf_free(&b);
}

Test(action, hash_is_pseudo_make)
{
	struct ap_action a = {.act = AP_ACT_HASH,
	                      .cls = AP_CLASS_IMEI,
	                      .fmt = AP_HASH_HEX,
	                      .key_id = 1,
	                      .length = 20};
	struct ap_buf want = {0};
	bool num = true;

	cr_assert_eq(ap_pseudo_make(&ps, &a, "352099001761481", 15, false, &want), AP_OK);
	cr_assert_eq(want.len, 23);
	cr_assert(memcmp(apply(a, "352099001761481", true, &num), want.p, want.len) == 0);
	cr_assert(!num, "hex is a string even for a numeric input");
	ap_buf_free(&want);
}

Test(action, hash_preserve_numeric)
{
	struct ap_action a = {.act = AP_ACT_HASH, .cls = AP_CLASS_IMEI, .fmt = AP_HASH_PRESERVE};
	bool num;
	const char *o = apply(a, "352099001761481", true, &num);

	cr_assert_eq(strlen(o), 15);
	cr_assert(num, "%s", o);
	o = apply(a, "352099001761481", false, &num);
	cr_assert(!num, "a string stays a string");
	a.cls = AP_CLASS_GPS;
	o = apply(a, "-0.000123", true, &num);
	cr_assert(num, "%s", o);
}

Test(action, placeholders_unchanged)
{
	struct ap_action h = {.act = AP_ACT_HASH, .cls = AP_CLASS_IDFA, .fmt = AP_HASH_HEX};
	struct ap_action m = {.act = AP_ACT_MASK, .cls = AP_CLASS_MAC};
	const char *zero = "00000000-0000-0000-0000-000000000000";

	cr_assert_str_eq(apply(h, zero, false, NULL), zero);
	h.cls = AP_CLASS_GAID;
	cr_assert_str_eq(apply(h, zero, false, NULL), zero);
	h.cls = AP_CLASS_MAC;
	cr_assert_str_eq(apply(h, "02:00:00:00:00:00", false, NULL), "02:00:00:00:00:00");
	cr_assert_str_eq(apply(m, "02:00:00:00:00:00", false, NULL), "02:00:00:00:00:00");
	/* not a placeholder for another class: hashed */
	h.cls = AP_CLASS_DEVICE_ID;
	cr_assert_str_neq(apply(h, zero, false, NULL), zero);
	/* a real MAC is hashed */
	h.cls = AP_CLASS_MAC;
	cr_assert_str_neq(apply(h, "02:00:00:00:00:01", false, NULL), "02:00:00:00:00:01");
}

/* ---- mask ---- */

static const char *mask(const char *in, int keep)
{
	struct ap_action a = {.act = AP_ACT_MASK, .cls = AP_CLASS_PHONE, .length = (uint8_t)keep};
	bool num;
	const char *o = apply(a, in, true, &num);

	cr_assert(!num, "a mask is a string");
	return o;
}

Test(action, mask_ascii)
{
	cr_assert_str_eq(mask("13800138000", 4), "*******8000");
	cr_assert_str_eq(mask("13800138000", 0), "***********", "0 keeps nothing");
	cr_assert_str_eq(mask("13800138000", 1), "**********0");
	cr_assert_str_eq(mask("13800138000", 10), "*3800138000");
	cr_assert_str_eq(mask("12345", 4), "*2345");
	/* never the whole of a short value */
	cr_assert_str_eq(mask("1234", 4), "****");
	cr_assert_str_eq(mask("abc", 4), "***");
	cr_assert_str_eq(mask("13800138000", 11), "***********");
	cr_assert_str_eq(mask("13800138000", 255), "***********");
	cr_assert_str_eq(mask("", 4), "");
}

Test(action, mask_utf8)
{
	cr_assert_str_eq(mask("张三丰先生", 2), "***先生");
	cr_assert_str_eq(mask("张三", 2), "**");
	cr_assert_str_eq(mask("Zoë Ångström", 4), "********tröm");
	cr_assert_str_eq(mask("a😀b😀", 2), "**b😀");
	/* invalid UTF-8: a stray continuation byte first still counts, and stays whole */
	cr_assert_str_eq(mask("\x80\x80xyz", 2), "**yz");
	cr_assert_str_eq(mask("ab\xe4\xb8", 1), "**\xe4\xb8");
}

/* ---- truncate_ip ---- */

static const char *trunc_ip(const char *in, int v4, int v6)
{
	struct ap_action a = {.act = AP_ACT_TRUNCATE_IP,
	                      .cls = AP_CLASS_IP,
	                      .v4bits = (uint8_t)v4,
	                      .v6bits = (uint8_t)v6};
	bool num;
	const char *o = apply(a, in, false, &num);

	cr_assert(!num);
	return o;
}

Test(action, truncate_ipv4)
{
	cr_assert_str_eq(trunc_ip("192.168.1.77", 24, 48), "192.168.1.0");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 24, 48), "192.168.1.0");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 16, 48), "192.168.0.0");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 20, 48), "192.168.0.0");
	cr_assert_str_eq(trunc_ip("10.255.255.255", 12, 48), "10.240.0.0");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 1, 48), "128.0.0.0");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 31, 48), "192.168.1.76");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 32, 48), "192.168.1.77");
	cr_assert_str_eq(trunc_ip("192.168.1.77", 200, 48), "192.168.1.77", "clamped to 32");
	cr_assert_str_eq(trunc_ip("8.8.8.8", 24, 48), "8.8.8.0");
	cr_assert_str_eq(trunc_ip("8.8.8.8", 0, 48), "0.0.0.0", "a prefix of 0 erases it");
	cr_assert_str_eq(trunc_ip("2001:db8::1", 24, 0), "::", "a prefix of 0 erases it");
}

Test(action, truncate_ipv6)
{
	cr_assert_str_eq(trunc_ip("2001:db8:1234:5678::1", 24, 48), "2001:db8:1234::");
	cr_assert_str_eq(trunc_ip("2001:db8:1234:5678::1", 24, 64), "2001:db8:1234:5678::");
	cr_assert_str_eq(trunc_ip("2001:db8:1234:5678::1", 24, 56), "2001:db8:1234:5600::");
	cr_assert_str_eq(trunc_ip("2001:0DB8:1234:5678:9ABC:DEF0:1234:5678", 24, 128),
	                 "2001:db8:1234:5678:9abc:def0:1234:5678");
	cr_assert_str_eq(trunc_ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 24, 33),
	                 "2001:db8:8000::");
	cr_assert_str_eq(trunc_ip("2001:db8::1", 24, 1), "::");
	cr_assert_str_eq(trunc_ip("fe80::1", 24, 200), "fe80::1", "clamped to 128");
	/* RFC 5952 4.2: longest run, leftmost on a tie, never a single group */
	cr_assert_str_eq(trunc_ip("2001:db8:0:0:1:0:0:1", 24, 128), "2001:db8::1:0:0:1");
	cr_assert_str_eq(trunc_ip("2001:0:0:1:0:0:0:1", 24, 128), "2001:0:0:1::1");
	cr_assert_str_eq(trunc_ip("2001:db8:0:1:1:1:1:1", 24, 128), "2001:db8:0:1:1:1:1:1");
	cr_assert_str_eq(trunc_ip("0:0:0:0:0:0:0:1", 24, 128), "::1");
	cr_assert_str_eq(trunc_ip("1:0:0:0:0:0:0:0", 24, 128), "1::");
	cr_assert_str_eq(trunc_ip("::", 24, 128), "::");
	cr_assert_str_eq(trunc_ip("1:0:1:0:1:0:1:0", 24, 128), "1:0:1:0:1:0:1:0");
	cr_assert_str_eq(trunc_ip("0:0:1:0:0:1:0:0", 24, 128), "::1:0:0:1:0:0");
}

Test(action, truncate_ipv4_mapped)
{
	cr_assert_str_eq(trunc_ip("::ffff:192.168.1.77", 24, 48), "::ffff:192.168.1.0");
	cr_assert_str_eq(trunc_ip("::FFFF:c0a8:14d", 16, 48), "::ffff:192.168.0.0");
}

Test(action, truncate_not_an_ip)
{
	static const char *bad[] = {"",           "hello",    "1.2.3",          "1.2.3.4.5",
	                            "256.1.1.1",  "1.2.3.4 ", "2001:db8::1::2", "::g",
	                            "1.2.3.4/24", "[::1]"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_str_eq(trunc_ip(bad[i], 0, 0), "", "%s", bad[i]);
}

/* ---- round ---- */

static const char *rnd_to(const char *in, int dec)
{
	struct ap_action a = {.act = AP_ACT_ROUND, .cls = AP_CLASS_GPS, .decimals = (uint8_t)dec};
	bool num;
	const char *o = apply(a, in, true, &num);

	if (*o) {
		json_t *j = json_loads(o, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
		cr_assert(j && json_is_number(j), "%s -> %s", in, o);
		json_decref(j);
		cr_assert(num, "%s -> %s", in, o);
	} else {
		cr_assert(!num);
	}
	return o;
}

Test(action, round_coordinates)
{
	cr_assert_str_eq(rnd_to("39.9042123", 2), "39.90");
	cr_assert_str_eq(rnd_to("116.407396", 3), "116.407");
	cr_assert_str_eq(rnd_to("116.4075", 3), "116.408");
	cr_assert_str_eq(rnd_to("-33.8688197", 1), "-33.9");
	cr_assert_str_eq(rnd_to("12", 2), "12.00");
	cr_assert_str_eq(rnd_to("12.3", 0), "12");
	cr_assert_str_eq(rnd_to("0", 3), "0.000");
	cr_assert_str_eq(rnd_to("0.0", 0), "0");
}

Test(action, round_half_away_from_zero_on_the_text)
{
	/* as written, not as the nearest double (1.00499999…) */
	cr_assert_str_eq(rnd_to("1.005", 2), "1.01");
	cr_assert_str_eq(rnd_to("-1.005", 2), "-1.01");
	cr_assert_str_eq(rnd_to("2.675", 2), "2.68");
	cr_assert_str_eq(rnd_to("1.0049999", 2), "1.00");
	cr_assert_str_eq(rnd_to("0.5", 0), "1");
	cr_assert_str_eq(rnd_to("-0.5", 0), "-1");
	cr_assert_str_eq(rnd_to("2.5", 0), "3");
	cr_assert_str_eq(rnd_to("0.4", 0), "0");
	cr_assert_str_eq(rnd_to("9.995", 2), "10.00");
	cr_assert_str_eq(rnd_to("99.5", 0), "100");
	cr_assert_str_eq(rnd_to("-999.9999", 3), "-1000.000");
	cr_assert_str_eq(rnd_to("0.05", 1), "0.1");
	cr_assert_str_eq(rnd_to("0.0049", 2), "0.00");
	cr_assert_str_eq(rnd_to("0.005", 2), "0.01");
	cr_assert_str_eq(rnd_to("123456789012345678901234567890.5", 0),
	                 "123456789012345678901234567891");
}

/* Against integer arithmetic: value = ±m / 10^s, rounded to d places by hand. */
Test(action, round_matches_integer_oracle)
{
	uint64_t x = 0x2545F4914F6CDD1Dull;
	char in[64], want[64];

	for (int t = 0; t < 20000; t++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t m = x % 1000000000000ull, p10[20] = {1};
		int s = (int)(x >> 40) % 9, d = (int)(x >> 48) % 7;
		bool neg = (x >> 60) & 1;
		for (int i = 1; i < 20; i++)
			p10[i] = p10[i - 1] * 10;
		snprintf(in, sizeof(in), "%s%llu.%0*llu", neg ? "-" : "",
		         (unsigned long long)(m / p10[s]), s, (unsigned long long)(m % p10[s]));
		if (s == 0)
			in[strlen(in) - 1] = 0; /* "12." -> "12" */
		uint64_t q;
		if (d >= s) {
			q = m * p10[d - s];
		} else {
			q = m / p10[s - d];
			if (2 * (m % p10[s - d]) >= p10[s - d])
				q++;
		}
		if (d)
			snprintf(want, sizeof(want), "%s%llu.%0*llu", neg && q ? "-" : "",
			         (unsigned long long)(q / p10[d]), d,
			         (unsigned long long)(q % p10[d]));
		else
			snprintf(want, sizeof(want), "%s%llu", neg && q ? "-" : "",
			         (unsigned long long)q);
		cr_assert_str_eq(rnd_to(in, d), want, "%s at %d", in, d);
	}
}

Test(action, round_no_negative_zero)
{
	cr_assert_str_eq(rnd_to("-0.0001", 2), "0.00");
	cr_assert_str_eq(rnd_to("-0.004", 2), "0.00");
	cr_assert_str_eq(rnd_to("-0.005", 2), "-0.01");
	cr_assert_str_eq(rnd_to("-0", 0), "0");
	cr_assert_str_eq(rnd_to("-0.4", 0), "0");
	cr_assert_str_eq(rnd_to("-0.0", 3), "0.000");
}

Test(action, round_syntax)
{
	cr_assert_str_eq(rnd_to("1e2", 1), "100.0");
	cr_assert_str_eq(rnd_to("1.5e-3", 3), "0.002");
	cr_assert_str_eq(rnd_to("-2.5E+1", 0), "-25");
	cr_assert_str_eq(rnd_to("12345e-4", 2), "1.23");
	cr_assert_str_eq(rnd_to("1e-99999999", 2), "0.00");
	cr_assert_str_eq(rnd_to(".5", 1), "0.5");
	cr_assert_str_eq(rnd_to("5.", 0), "5");
	cr_assert_str_eq(rnd_to("+3.14159", 2), "3.14");
	cr_assert_str_eq(rnd_to("00012.5", 0), "13");
	cr_assert_str_eq(rnd_to("0.123456789012345", 15), "0.1234567890", "at most 10 places");
	cr_assert_str_eq(rnd_to("1.23456789012", 10), "1.2345678901");
}

Test(action, round_not_a_number)
{
	static const char *bad[] = {"",      "abc", "1.2.3", "0x1A",     "inf",   "-inf",
	                            "nan",   "1e",  "1e+",   " 1",       "1 ",    "-",
	                            ".",     "+",   "1,5",   "e5",       "--1",   "1e999",
	                            "1_000", "١٢",  "1.5f",  "infinity", "0x1p3", "12a"};
	char longnum[80];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_str_eq(rnd_to(bad[i], 2), "", "%s", bad[i]);
	memset(longnum, '1', 65);
	longnum[65] = 0;
	cr_assert_str_eq(rnd_to(longnum, 0), "", "over 64 bytes");
	longnum[64] = 0;
	cr_assert_str_eq(rnd_to(longnum, 0), longnum, "64 bytes is fine");
	/* a string that is a number rounds, but is not made a bare number */
	struct ap_action a = {.act = AP_ACT_ROUND, .decimals = 1};
	bool num;
	cr_assert_str_eq(apply(a, "1.25", false, &num), "1.3");
	cr_assert(!num);
}

/* ---- output discipline ---- */

Test(action, appends_and_leaves_prefix_alone)
{
	struct ap_action a = {.act = AP_ACT_MASK, .length = 2};
	struct ap_buf b = {0};
	bool num;

	cr_assert_eq(ap_buf_add(&b, "head|", 5), AP_OK);
	cr_assert_eq(ap_action_apply(&ps, &a, "12345", 5, true, &b, &num), AP_OK);
	cr_assert_eq(b.len, 10);
	cr_assert(memcmp(b.p, "head|***45", 10) == 0);
	ap_buf_free(&b);
}
