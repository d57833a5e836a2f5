/* Tests for detect.c: positives and near misses for every detector, the precedence between
 * them, every input at the end of a guard page and cut at every length, Luhn against a
 * reference, and ap_ip_parse against glibc's inet_pton on generated addresses. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "detect.h"

/* ---- helpers ---- */

/* xorshift64*: a fixed seed makes every failure reproducible. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static unsigned below(unsigned n)
{
	return (unsigned)(rng() % n);
}

/* The end of a readable page whose successor is PROT_NONE, made once per test process:
 * an input copied so that it ends here faults on a one-byte over-read. */
static char *guard_end;

static const char *at_guard(const char *s, size_t n)
{
	if (!guard_end) {
		size_t pg = (size_t)sysconf(_SC_PAGESIZE);
		char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		cr_assert(m != MAP_FAILED);
		cr_assert_eq(mprotect(m + pg, pg, PROT_NONE), 0);
		guard_end = m + pg;
	}
	cr_assert(n <= 4096);
	if (n)
		memmove(guard_end - n, s, n);
	return guard_end - n;
}

static const char *cname(enum ap_class c)
{
	const char *s = ap_class_name(c);
	return s ? s : "?";
}

/* ap_detect on <s, n> where it lies, and against the guard page: both must agree. */
static enum ap_class det_n(const char *s, size_t n, unsigned mask, bool numeric)
{
	enum ap_class a = ap_detect(s, n, mask, numeric);
	enum ap_class b = ap_detect(at_guard(s, n), n, mask, numeric);

	cr_assert_eq(a, b, "\"%.*s\": %s in place, %s at the guard page", (int)n, s, cname(a),
	             cname(b));
	return a;
}

/* Every prefix of <s>, at the guard page, and in place where the rest of <s> follows it:
 * the answer may depend only on the prefix. */
static void prefixes(const char *s, unsigned mask, bool numeric)
{
	size_t n = strlen(s);

	for (size_t k = 0; k <= n; k++)
		det_n(s, k, mask, numeric);
}

static void expect(const char *s, unsigned mask, bool numeric, enum ap_class want)
{
	enum ap_class got = det_n(s, strlen(s), mask, numeric);

	cr_expect_eq(got, want, "ap_detect(\"%s\", %#x, %s) = %s, want %s", s, mask,
	             numeric ? "number" : "string", cname(got), cname(want));
	if (want != AP_CLASS_NONE)
		prefixes(s, mask, numeric);
}

#define YES(s, c)     expect((s), AP_DET_ALL, false, (c))
#define NO(s)         expect((s), AP_DET_ALL, false, AP_CLASS_NONE)
#define NUM(s, c)     expect((s), AP_DET_ALL, true, (c))
#define MASK(s, m, c) expect((s), (m), false, (c))

/* An independent Luhn: the check digit that makes <body> valid. */
static char ref_luhn(const char *body)
{
	size_t n = strlen(body);
	unsigned sum = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned v = (unsigned)(body[n - 1 - i] - '0');
		if (i % 2 == 0) {
			v *= 2;
			if (v > 9)
				v -= 9;
		}
		sum += v;
	}
	return (char)('0' + (10 - sum % 10) % 10);
}

/* <body> with its Luhn digit appended, in buf. */
static const char *with_luhn(char *buf, const char *body)
{
	size_t n = strlen(body);

	memcpy(buf, body, n);
	buf[n] = ref_luhn(body);
	buf[n + 1] = '\0';
	return buf;
}

/* The same with the check digit made wrong. */
static const char *bad_luhn(char *buf, const char *body)
{
	with_luhn(buf, body);
	buf[strlen(body)] = (char)('0' + (buf[strlen(body)] - '0' + 1) % 10);
	return buf;
}

/* ---- Luhn ---- */

Test(luhn, known)
{
	cr_expect(ap_luhn_ok("490154203237518", 15));
	cr_expect(!ap_luhn_ok("490154203237519", 15));
	cr_expect(ap_luhn_ok("79927398713", 11));
	cr_expect(!ap_luhn_ok("79927398710", 11));
	cr_expect(ap_luhn_ok("0", 1));
	cr_expect(!ap_luhn_ok("1", 1));
	cr_expect(!ap_luhn_ok("", 0));
	cr_expect(!ap_luhn_ok("4901542032375a8", 15));
	cr_expect(!ap_luhn_ok("0 0", 3));
	cr_expect_eq(ap_luhn_digit("49015420323751", 14), '8');
	cr_expect_eq(ap_luhn_digit("7992739871", 10), '3');
	cr_expect_eq(ap_luhn_digit("", 0), '0');
	/* Only the first n bytes count. */
	cr_expect(ap_luhn_ok("79927398713999", 11));
	cr_expect(!ap_luhn_ok(at_guard("79927398713", 11), 10));
	cr_expect_eq(ap_luhn_digit(at_guard("7992739871", 10), 10), '3');
}

Test(luhn, against_reference)
{
	char body[40], full[41];

	for (int t = 0; t < 20000; t++) {
		size_t n = 1 + below(30);
		for (size_t i = 0; i < n; i++)
			body[i] = (char)('0' + below(10));
		body[n] = '\0';
		with_luhn(full, body);
		cr_assert_eq(ap_luhn_digit(at_guard(body, n), n), full[n], "%s", body);
		cr_assert(ap_luhn_ok(at_guard(full, n + 1), n + 1), "%s", full);
		full[n] = (char)('0' + (full[n] - '0' + 1 + below(9)) % 10);
		cr_assert(!ap_luhn_ok(at_guard(full, n + 1), n + 1), "%s", full);
	}
}

/* ---- IMEI, MEID ---- */

Test(imei, fifteen_digits)
{
	char b[32];

	YES("490154203237518", AP_CLASS_IMEI); /* the textbook example, RBI 49 */
	YES(with_luhn(b, "35209900176148"), AP_CLASS_IMEI);
	YES(with_luhn(b, "01234500000000"), AP_CLASS_IMEI);
	YES(with_luhn(b, "86012345678901"), AP_CLASS_IMEI);
	YES(with_luhn(b, "99000123456789"), AP_CLASS_IMEI);
	NUM("490154203237518", AP_CLASS_IMEI);
	/* Bad check digit: not an IMEI; 3 and 4 are MCC-range first digits, so IMSI. */
	YES(bad_luhn(b, "35209900176148"), AP_CLASS_IMSI);
	MASK(bad_luhn(b, "35209900176148"), AP_DET_IMEI, AP_CLASS_NONE);
	/* Luhn-valid but not an RBI: 12, 20, 02 are not allocated. */
	NO(with_luhn(b, "12345678901234"));
	NO(with_luhn(b, "02345678901234"));
	NO(with_luhn(b, "86a12345678901"));
	NUM("4.90154203237518e14", AP_CLASS_NONE);
	NUM("-490154203237518", AP_CLASS_NONE);
	NO("490154203237518 ");
	NO(" 490154203237518");
}

Test(imei, fourteen_and_sixteen)
{
	YES("35209900176148", AP_CLASS_IMEI);   /* no check digit */
	YES("3520990017614823", AP_CLASS_IMEI); /* IMEISV */
	YES("4901542032375101", AP_CLASS_IMEI);
	NUM("35209900176148", AP_CLASS_IMEI);
	NUM("3520990017614823", AP_CLASS_IMEI);
	NO("12345678901234");
	NO("1234567890123456");
	NO("2520990017614823");
	MASK("3520990017614823", AP_DET_ALL & ~AP_DET_IMEI, AP_CLASS_NONE);
}

Test(meid, hex)
{
	YES("A10000009296F2", AP_CLASS_MEID);
	YES("a10000009296f2", AP_CLASS_MEID);
	YES("FFFFFFFFFFFFFF", AP_CLASS_MEID);
	YES("A0000000000000", AP_CLASS_MEID);
	NO("9F000000000000"); /* manufacturer code below A0 */
	NO("A10000009296G2");
	NO("A10000009296F");
	NO("A10000009296F2A");
	NUM("A10000009296F2", AP_CLASS_NONE);
	MASK("A10000009296F2", AP_DET_ALL & ~AP_DET_IMEI, AP_CLASS_NONE);
}

Test(meid, decimal)
{
	YES("270113177609606898", AP_CLASS_MEID); /* A10000009296F2 in decimal */
	YES("429496729516777215", AP_CLASS_MEID);
	YES("000000000000000000", AP_CLASS_MEID);
	NUM("270113177609606898", AP_CLASS_MEID);
	NO("429496729616777215"); /* manufacturer code 2^32 */
	NO("429496729516777216"); /* serial 2^24 */
	NO("999999999999999999");
	MASK("270113177609606898", AP_DET_ALL & ~AP_DET_IMEI, AP_CLASS_NONE);
}

/* ---- IMSI, ICCID ---- */

Test(imsi, detect)
{
	YES("310150123456789", AP_CLASS_IMSI);
	YES("460001234567890", AP_CLASS_IMSI);
	YES("234150999999999", AP_CLASS_IMSI);
	YES("722070000000000", AP_CLASS_IMSI);
	NUM("310150123456789", AP_CLASS_IMSI);
	NO("110150123456789"); /* MCC cannot start with 1 */
	NO("810150123456789");
	NO("010150123456789");
	NO("31015012345678");
	NO("3101501234567890");
	NO("31015012345678x");
	MASK("310150123456789", AP_DET_ALL & ~AP_DET_IMSI, AP_CLASS_NONE);
	MASK("310150123456789", AP_DET_IMSI, AP_CLASS_IMSI);
}

Test(imsi, never_a_valid_imei)
{
	char b[32];

	/* A Luhn-valid IMEI with an MCC-range first digit stays an IMEI, and is not
	 * taken as an IMSI when only IMSI detection is on. */
	YES(with_luhn(b, "35209900176148"), AP_CLASS_IMEI);
	MASK(with_luhn(b, "35209900176148"), AP_DET_IMSI, AP_CLASS_NONE);
	MASK("490154203237518", AP_DET_IMSI, AP_CLASS_NONE);
	MASK("490154203237518", AP_DET_IMEI, AP_CLASS_IMEI);
	/* Luhn-valid, MCC-range, not an RBI: an IMSI. */
	YES(with_luhn(b, "31015012345678"), AP_CLASS_IMSI);
}

Test(iccid, detect)
{
	char b[32];

	YES(with_luhn(b, "891004234814455936"), AP_CLASS_ICCID);  /* 19 */
	YES(with_luhn(b, "8944100000000000000"), AP_CLASS_ICCID); /* 20 */
	NUM(with_luhn(b, "8901260123456789012"), AP_CLASS_ICCID);
	NO(bad_luhn(b, "891004234814455936"));
	NO(bad_luhn(b, "8944100000000000000"));
	NO(with_luhn(b, "881004234814455936"));
	NO(with_luhn(b, "89100423481445593"));     /* 18 digits: decimal MEID range fails */
	NO(with_luhn(b, "894410000000000000000")); /* 21 */
	MASK(with_luhn(b, "891004234814455936"), AP_DET_ALL & ~AP_DET_ICCID, AP_CLASS_NONE);
}

/* ---- numbers that are not identifiers ---- */

Test(numbers, timestamps_and_ids)
{
	static const char *const no[] = {
	        "1700000000",
	        "1700000000000",
	        "1699999999999",
	        "1700000000000000",
	        "1700000000000000000",
	        "1700000000.123",
	        "4155552671",
	        "14155552671",
	        "123456789012",
	        "1234567890123",
	        "0",
	        "42",
	        "3.14159",
	        "-1700000000000",
	        "1e15",
	        "100000000000000",
	        "17000000000000",
	        "1700000000123456",
	        "20240101123045",
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++) {
		NO(no[i]);
		NUM(no[i], AP_CLASS_NONE);
	}
}

/* ---- MAC ---- */

Test(mac, forms)
{
	static const char *const yes[] = {
	        "00:1a:2b:3c:4d:5e", "00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "AC-DE-48-00-11-22",
	        "Ac:dE:48:00:11:22", "001a2b3c4d5e",      "001A2B3C4D5E",      "001a.2b3c.4d5e",
	        "ACDE.4800.1122",    "f0:18:98:aa:bb:cc", "02:00:00:00:00:00", "a1b2c3d4e5f6",
	};
	static const char *const no[] = {
	        "00:1a-2b:3c:4d:5e",    "00:1a:2b:3c:4d:5g",  "00:1a:2b:3c:4d",
	        "00:1a:2b:3c:4d:5e:6f", "001a2b3c4d5",        "001a2b3c4d5e0",
	        "123456789012",         "abcdefabcdef",       "001a.2b3c-4d5e",
	        "001a:2b3c:4d5e",       "0:1a:2b:3c:4d:5e:f", "00:1a:2b:3c:4d:5e ",
	        "00.1a.2b.3c.4d.5e",    "00 1a 2b 3c 4d 5e",  "001a2b3c4d5g",
	        "001a.2b3c.4d5",        "00:1a:2b:3c:4d:5e:", "001a2b.3c4d.5e",
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++) {
		YES(yes[i], AP_CLASS_MAC);
		MASK(yes[i], AP_DET_MAC, AP_CLASS_MAC);
		MASK(yes[i], AP_DET_ALL & ~AP_DET_MAC, AP_CLASS_NONE);
		NUM(yes[i], AP_CLASS_NONE);
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		NO(no[i]);
}

/* ---- UUID ---- */

Test(uuid, forms)
{
	YES("123e4567-e89b-12d3-a456-426614174000", AP_CLASS_ADID);
	YES("6F9619FF-8B86-D011-B42D-00C04FC964FF", AP_CLASS_ADID);
	YES("38400000-8cf0-11bd-b23e-10b96e40000d", AP_CLASS_ADID);
	YES("00000000-0000-0000-0000-000000000000", AP_CLASS_ADID);
	MASK("123e4567-e89b-12d3-a456-426614174000", AP_DET_UUID, AP_CLASS_ADID);
	MASK("123e4567-e89b-12d3-a456-426614174000", AP_DET_ALL & ~AP_DET_UUID, AP_CLASS_NONE);
	NUM("123e4567-e89b-12d3-a456-426614174000", AP_CLASS_NONE);
	/* Bare 32 hex is an MD5 as often as an id. */
	NO("123e4567e89b12d3a456426614174000");
	NO("d41d8cd98f00b204e9800998ecf8427e");
	NO("123e4567-e89b-12d3-a456-42661417400g");
	NO("123e4567-e89b-12d3-a456-4266141740000");
	NO("123e4567-e89b-12d3-a456-42661417400");
	NO("123e4567e-89b-12d3-a456-426614174000");
	NO("123e4567-e89b-12d3-a456_426614174000");
	NO("{123e4567-e89b-12d3-a456-426614174000}");
	NO("urn:uuid:123e4567-e89b-12d3-a456-426614174000");
}

/* ---- IP ---- */

static void ip_is(const char *s, int want, const uint8_t *bytes)
{
	size_t n = strlen(s);
	uint8_t a[16];
	int got;

	memset(a, 0xAA, sizeof(a));
	got = ap_ip_parse(at_guard(s, n), n, a);
	cr_expect_eq(got, want, "ap_ip_parse(\"%s\") = %d, want %d", s, got, want);
	if (got == 0) {
		for (int i = 0; i < 16; i++)
			cr_expect_eq(a[i], 0xAA, "\"%s\": addr written on failure", s);
	} else if (bytes) {
		cr_expect(memcmp(a, bytes, want == 4 ? 4 : 16) == 0, "\"%s\": wrong bytes", s);
	}
	/* ap_detect leaves values under 6 bytes alone ("::1" identifies nobody). */
	expect(s, AP_DET_ALL, false, want && n >= 6 ? AP_CLASS_IP : AP_CLASS_NONE);
	if (want && n >= 6) {
		MASK(s, AP_DET_IP, AP_CLASS_IP);
		MASK(s, AP_DET_ALL & ~AP_DET_IP, AP_CLASS_NONE);
		NUM(s, AP_CLASS_NONE);
	}
}

Test(ip, v4)
{
	static const uint8_t b[] = {192, 168, 1, 254};
	static const uint8_t z[16] = {0};
	static const uint8_t f[] = {255, 255, 255, 255};
	static const char *const no[] = {
	        "256.1.1.1",  "01.2.3.4",  "1.2.3.04",   "1.2.3",      "1.2.3.4.5", "1.2.3.",
	        ".1.2.3.4",   "1..2.3",    "1.2.3.4 ",   " 1.2.3.4",   "1.2.3.-4",  "1.2.3.4a",
	        "1.2.3.256",  "1.2.3.999", "1.2.3.1000", "00.0.0.0",   "0x1.2.3.4", "1.2.3.4/24",
	        "1.2.3.4:80", "1,2,3,4",   "1.2.3.+4",   "4294967295",
	};

	ip_is("192.168.1.254", 4, b);
	ip_is("0.0.0.0", 4, z);
	ip_is("255.255.255.255", 4, f);
	ip_is("8.8.8.8", 4, NULL);
	ip_is("10.0.0.1", 4, NULL);
	ip_is("100.64.0.0", 4, NULL);
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		ip_is(no[i], 0, NULL);
}

Test(ip, v6)
{
	static const uint8_t any[16] = {0};
	static const uint8_t lo[16] = {[15] = 1};
	static const uint8_t one[16] = {[1] = 1};
	static const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1};
	static const uint8_t doc[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
	static const uint8_t full[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0,    0,    0,
	                                 0,    0,    0xff, 0,    0, 0x42, 0x83, 0x29};
	static const char *const yes[] = {
	        "FE80::1",
	        "fe80::0202:b3ff:fe1e:8329",
	        "64:ff9b::192.0.2.33",
	        "1:2:3:4:5:6:7::",
	        "::2:3:4:5:6:7:8",
	        "1:2:3:4:5:6:1.2.3.4",
	        "1::2:3:4:5:6:7",
	        "1:2:3:4:5:6:7:8",
	        "::1.2.3.4",
	        "1::1.2.3.4",
	        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
	        "0000:0000:0000:0000:0000:0000:0000:0000",
	        "a:B:c:D:e:F:0:0",
	};
	static const char *const no[] = {
	        "1:::2",
	        "12345::",
	        ":1::2",
	        "1::2:",
	        ":",
	        ":::",
	        "1:2:3:4:5:6:7:8:9",
	        "1:2:3:4:5:6:7",
	        "1::2::3",
	        "fe80::1%eth0",
	        "[::1]",
	        "::1.2.3.04",
	        "1:2:3:4:5:6:7:1.2.3.4",
	        "::g",
	        "1:2:3:4:5:6:7:8::",
	        "1:2:3:4:5:6:7::8",
	        "::1:2:3:4:5:6:7:8",
	        "::1.2.3",
	        "::1.2.3.4.5",
	        "::1.2.3.4:1",
	        "::ffff:256.1.1.1",
	        "2001:db8::/32",
	        "::12345",
	        "1:",
	        "1.2.3.4::",
	        "::a.b.c.d",
	        "::1.2.3.4x",
	        "::1 ",
	        "1:2:3:4:5:6:7:8:",
	        ":1:2:3:4:5:6:7:8",
	        "::ffff:1.2.3.4.",
	};

	ip_is("::", 6, any);
	ip_is("::1", 6, lo);
	ip_is("1::", 6, one);
	ip_is("::ffff:192.0.2.1", 6, mapped);
	ip_is("::FFFF:192.0.2.1", 6, mapped);
	ip_is("2001:db8::1", 6, doc);
	ip_is("2001:DB8:0:0:0:0:0:1", 6, doc);
	ip_is("2001:0db8:0000:0000:0000:ff00:0042:8329", 6, full);
	ip_is("2001:db8::ff00:42:8329", 6, full);
	for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++)
		ip_is(yes[i], 6, NULL);
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		ip_is(no[i], 0, NULL);
}

/* ---- IP oracle: glibc's inet_pton on generated text ---- */

static int oracle_runs, oracle_valid;

/* ap_ip_parse and inet_pton must agree on <s, n> (no NUL inside): family and bytes. */
static void oracle(const char *s, size_t n)
{
	char z[128];
	uint8_t a[16], b[16];
	int got, want = 0;

	cr_assert(n < sizeof(z));
	memcpy(z, s, n);
	z[n] = '\0';
	if (inet_pton(AF_INET, z, b) == 1)
		want = 4;
	else if (inet_pton(AF_INET6, z, b) == 1)
		want = 6;
	got = ap_ip_parse(at_guard(s, n), n, a);
	oracle_runs++;
	cr_assert_eq(got, want, "\"%s\": ap_ip_parse %d, inet_pton %d", z, got, want);
	if (want) {
		oracle_valid++;
		cr_assert(memcmp(a, b, want == 4 ? 4 : 16) == 0, "\"%s\": bytes differ", z);
	}
}

static int gen_octet(void)
{
	switch (below(4)) {
	case 0:
		return (int)below(10);
	case 1:
		return below(2) ? 0 : 255;
	default:
		return (int)below(256);
	}
}

static size_t gen_v4(char *out, size_t cap)
{
	return (size_t)snprintf(out, cap, "%d.%d.%d.%d", gen_octet(), gen_octet(), gen_octet(),
	                        gen_octet());
}

/* An IPv6 address as some program might print it: zero-heavy groups, random case and
 * leading zeros, "::" over a random zero run (or none), sometimes a dotted quad tail. */
static size_t gen_v6(char *out, size_t cap)
{
	unsigned g[8];
	int ng, cs = -1, ce = -1, quad = below(4) == 0;
	size_t len = 0;

	for (int i = 0; i < 8; i++) {
		switch (below(5)) {
		case 0:
		case 1:
			g[i] = 0;
			break;
		case 2:
			g[i] = below(16);
			break;
		default:
			g[i] = below(65536);
		}
	}
	ng = quad ? 6 : 8;
	if (below(4) != 0) {
		/* Collect the zero runs, pick one, compress all or part of it. */
		int starts[8], ends[8], nr = 0;
		for (int i = 0; i < ng;) {
			if (g[i] != 0) {
				i++;
				continue;
			}
			int j = i;
			while (j < ng && g[j] == 0)
				j++;
			starts[nr] = i;
			ends[nr++] = j;
			i = j;
		}
		if (nr > 0) {
			int r = (int)below((unsigned)nr);
			cs = starts[r] + (int)below((unsigned)(ends[r] - starts[r]));
			ce = cs + 1 + (int)below((unsigned)(ends[r] - cs));
		}
	}
	for (int i = 0; i < ng; i++) {
		if (i == cs) {
			len += (size_t)snprintf(out + len, cap - len, "::");
			i = ce - 1;
			continue;
		}
		if (i > 0 && i != ce)
			out[len++] = ':';
		int w = 1 + (int)below(4);
		len += (size_t)snprintf(out + len, cap - len, below(2) ? "%0*x" : "%0*X", w, g[i]);
	}
	if (quad) {
		if (ce != ng)
			out[len++] = ':';
		len += (size_t)snprintf(out + len, cap - len, "%u.%u.%u.%u", g[6] >> 8, g[6] & 255,
		                        g[7] >> 8, g[7] & 255);
	}
	out[len] = '\0';
	return len;
}

/* One to three random edits with bytes an address is made of, and a few it is not. */
static size_t mutate(char *s, size_t n, size_t cap)
{
	static const char alpha[] = "0123456789abcdefABCDEF:::...%g []/x";
	int edits = 1 + (int)below(3);

	for (int e = 0; e < edits; e++) {
		size_t at = n ? below((unsigned)n + 1) : 0;
		char c = alpha[below(sizeof(alpha) - 1)];
		switch (below(3)) {
		case 0:
			if (n + 1 < cap) {
				memmove(s + at + 1, s + at, n - at);
				s[at] = c;
				n++;
			}
			break;
		case 1:
			if (at < n) {
				memmove(s + at, s + at + 1, n - at - 1);
				n--;
			}
			break;
		default:
			if (at < n)
				s[at] = c;
		}
	}
	return n;
}

Test(ip, oracle_inet_pton)
{
	char s[128];
	size_t n;

	rng_state = 0x1234567887654321ULL;
	for (int t = 0; t < 20000; t++) {
		n = gen_v4(s, sizeof(s));
		oracle(s, n);
		cr_assert_eq(ap_ip_parse(s, n, (uint8_t[16]){0}), 4, "%s", s);
		n = mutate(s, n, 40);
		oracle(s, n);
	}
	for (int t = 0; t < 50000; t++) {
		n = gen_v6(s, sizeof(s));
		oracle(s, n);
		cr_assert_eq(ap_ip_parse(s, n, (uint8_t[16]){0}), 6, "%s", s);
		n = mutate(s, n, 60);
		oracle(s, n);
	}
	/* Short strings over the address alphabet: mostly invalid, in every arrangement. */
	for (int t = 0; t < 100000; t++) {
		static const char alpha[] = "0:.1f:2";
		n = below(12);
		for (size_t i = 0; i < n; i++)
			s[i] = alpha[below(sizeof(alpha) - 1)];
		oracle(s, n);
	}
	cr_log_info("ip oracle: %d inputs, %d valid", oracle_runs, oracle_valid);
	cr_expect_gt(oracle_valid, 70000);
}

/* ---- phone ---- */

Test(phone, with_marker)
{
	static const char *const yes[] = {
	        "+14155552671",      "+1 415 555 2671",     "+1-415-555-2671",
	        "+1 (415) 555-2671", "+1(415)555-2671",     "+44 (0)20 7946 0958",
	        "+44 20 7946 0958",  "tel:+1-201-555-0123", "tel:2015550123",
	        "TEL:+12015550123",  "Tel:+12015550123",    "+49.30.1234567",
	        "+1234567",          "+123456789012345",    "+33 1 23 45 67 89",
	        "+86 138 0013 8000", "+7 (495) 123-45-67",  "+1 415.555.2671",
	};
	static const char *const no[] = {
	        "14155552671",
	        "4155552671",
	        "+123456",
	        "+1234567890123456",
	        "+1  415 555 2671",
	        "+1 (415) (555) 2671",
	        "+1 (415 555 2671",
	        "+1 415) 555-2671",
	        "+1 415 555 2671 ",
	        "+1-415-555-2671x12",
	        "+(1) 415 555 2671",
	        "tel:",
	        "tel:+",
	        "+1--415-555-2671",
	        "+1 -415-555-2671",
	        "+",
	        "++14155552671",
	        "tel:++14155552671",
	        "+1 () 4155552671",
	        "+1 (415)) 555 2671",
	        "+1_415_555_2671",
	        "tel: +14155552671",
	        "te:+14155552671",
	        "+1/415/555/2671",
	        "+1 415 555 2671,",
	        "+-14155552671",
	        "+1 ( 415) 5552671",
	        "+1 (415 ) 5552671",
	        "+1 415 555 267a",
	        "+1 415\t555 2671",
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++) {
		YES(yes[i], AP_CLASS_PHONE);
		MASK(yes[i], AP_DET_PHONE, AP_CLASS_PHONE);
		MASK(yes[i], AP_DET_ALL & ~AP_DET_PHONE, AP_CLASS_NONE);
		NUM(yes[i], AP_CLASS_NONE);
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		NO(no[i]);
	NUM("14155552671", AP_CLASS_NONE);
}

/* ---- e-mail ---- */

Test(email, detect)
{
	static const char *const yes[] = {
	        "john.doe@example.com",
	        "a@b.cc",
	        "x_y%z+tag@mail.example.co.uk",
	        "USER@EXAMPLE.ORG",
	        "a-b@sub-domain.example.io",
	        "1234567@qq.com",
	        "+tag@example.com",
	        "first.last@123.example.museum",
	};
	static const char *const no[] = {
	        "john@localhost",
	        "john@example.c",
	        "john@-example.com",
	        "john@example-.com",
	        "john@exa_mple.com",
	        "@example.com",
	        "john@@example.com",
	        "john@example..com",
	        "john@example.com.",
	        "john@example.c0m",
	        "john doe@example.com",
	        "john@example.123",
	        "john@.example.com",
	        "john@",
	        "john",
	        "john@example.com ",
	        "<john@example.com>",
	        "mailto:john@example.com",
	        "john@ex ample.com",
	        "john@example.com/x",
	        "jo\"hn@example.com",
	};
	char b[300];

	for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++) {
		YES(yes[i], AP_CLASS_EMAIL);
		MASK(yes[i], AP_DET_EMAIL, AP_CLASS_EMAIL);
		MASK(yes[i], AP_DET_ALL & ~AP_DET_EMAIL, AP_CLASS_NONE);
		NUM(yes[i], AP_CLASS_NONE);
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		NO(no[i]);

	/* Local part 64 yes, 65 no. */
	memset(b, 'l', 64);
	strcpy(b + 64, "@example.com");
	YES(b, AP_CLASS_EMAIL);
	memset(b, 'l', 65);
	strcpy(b + 65, "@example.com");
	NO(b);
	/* Label 63 yes, 64 no. */
	strcpy(b, "a@");
	memset(b + 2, 'd', 63);
	strcpy(b + 65, ".com");
	YES(b, AP_CLASS_EMAIL);
	memset(b + 2, 'd', 64);
	strcpy(b + 66, ".com");
	NO(b);
	/* Total 254 yes, 255 no: labels of 60 and a 2-letter TLD. */
	memset(b, 'l', 64);
	b[64] = '@';
	size_t n = 65;
	while (n + 61 <= 251) {
		memset(b + n, 'd', 60);
		b[n + 60] = '.';
		n += 61;
	}
	memset(b + n, 'd', 251 - n);
	n = 251;
	strcpy(b + n, ".io");
	cr_assert_eq(strlen(b), 254);
	YES(b, AP_CLASS_EMAIL);
	b[254] = b[253];
	b[253] = 'x';
	b[255] = '\0';
	NO(b);
}

/* ---- precedence, masks, hostile bytes ---- */

Test(detect, precedence)
{
	char b[32];

	/* IMEI > IMSI on the same 15 digits. */
	YES(with_luhn(b, "35209900176148"), AP_CLASS_IMEI);
	/* IMEI > MEID: 14 digits with an RBI are an IMEI; 14 hex with a letter a MEID. */
	YES("35209900176148", AP_CLASS_IMEI);
	YES("A5209900176148", AP_CLASS_MEID);
	/* MEID > MAC: 14 hex without dots is never Cisco MAC form. */
	MASK("A10000009296F2", AP_DET_MAC, AP_CLASS_NONE);
	/* The 12-hex MAC without separator against nothing else. */
	YES("a1b2c3d4e5f6", AP_CLASS_MAC);
	MASK("a1b2c3d4e5f6", AP_DET_ALL & ~AP_DET_MAC, AP_CLASS_NONE);
	/* Disabled detectors fall through to the next in order or to none. */
	expect("490154203237518", 0, false, AP_CLASS_NONE);
	expect("490154203237518", 0, true, AP_CLASS_NONE);
	expect("10.1.2.3", AP_DET_ALL & ~AP_DET_IP, false, AP_CLASS_NONE);
	/* Bits outside AP_DET_ALL mean nothing. */
	expect("10.1.2.3", ~0u, false, AP_CLASS_IP);
	expect("10.1.2.3", ~0u & ~AP_DET_IP, false, AP_CLASS_NONE);
	/* Too short to identify anyone: not detected, though ap_ip_parse reads them. */
	expect("::1", ~0u, false, AP_CLASS_NONE);
	expect("1::", ~0u, false, AP_CLASS_NONE);
}

Test(detect, words_text_and_hostile_bytes)
{
	static const char *const no[] = {
	        "",
	        "a",
	        "::x",
	        "true",
	        "false",
	        "null",
	        "hello",
	        "default",
	        "beef",
	        "cafe",
	        "deadbeef",
	        "en_US",
	        "Mozilla/5.0 (X11; Linux)",
	        "The quick brown fox jumps over the lazy dog, and again, and again and again.",
	        ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
	         "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
	        "\xff\xfe\x00\x01",
	        "caf\xc3\xa9@example.com",
	        "2024-01-01T12:00:00Z",
	        "1.0.0",
	        "v1.2.3.4",
	        "12:34:56",
	        "12:34",
	};
	char b[400];

	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++)
		NO(no[i]);
	/* NUL bytes inside a span are bytes like any other. */
	det_n("::1\0", 4, AP_DET_ALL, false);
	cr_expect_eq(det_n("1.2.3.4\0", 8, AP_DET_ALL, false), AP_CLASS_NONE);
	cr_expect_eq(det_n("490154203237518\0", 16, AP_DET_ALL, false), AP_CLASS_NONE);
	/* Every length of runs of each interesting byte, at the guard page. */
	static const char fill[] = "0:.-@+9aF ";
	for (size_t f = 0; f < sizeof(fill) - 1; f++) {
		memset(b, fill[f], sizeof(b));
		for (size_t n = 0; n <= sizeof(b); n++) {
			det_n(b, n, AP_DET_ALL, false);
			det_n(b, n, AP_DET_ALL, true);
		}
	}
	/* Random bytes over a detector-heavy alphabet, every length up to 300. */
	static const char alpha[] = "0123456789abcdefABCDEF:.-@+() tel%_x";
	rng_state = 42;
	for (int t = 0; t < 20000; t++) {
		size_t n = below(300);
		for (size_t i = 0; i < n; i++)
			b[i] = alpha[below(sizeof(alpha) - 1)];
		det_n(b, n, AP_DET_ALL, below(2));
	}
}

/* ---- placeholders, names ---- */

Test(placeholder, adid)
{
	static const enum ap_class ad[] = {AP_CLASS_ADID, AP_CLASS_IDFA, AP_CLASS_IDFV,
	                                   AP_CLASS_GAID, AP_CLASS_OAID};
	static const char *const yes[] = {
	        "00000000-0000-0000-0000-000000000000",
	        "00000000000000000000000000000000",
	        "0000000000000000",
	        "0000-0000-0000-0000",
	};
	static const char *const no[] = {
	        "00000000-0000-0000-0000-000000000001",
	        "000000000000000",
	        "----------------",
	        "00000000 0000 0000 0000 000000000000",
	        "",
	        "123e4567-e89b-12d3-a456-426614174000",
	};

	for (size_t c = 0; c < AP_ARRAY_LEN(ad); c++) {
		for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++) {
			size_t n = strlen(yes[i]);
			cr_expect(ap_detect_placeholder(ad[c], at_guard(yes[i], n), n), "%s %s",
			          cname(ad[c]), yes[i]);
		}
		for (size_t i = 0; i < AP_ARRAY_LEN(no); i++) {
			size_t n = strlen(no[i]);
			cr_expect(!ap_detect_placeholder(ad[c], at_guard(no[i], n), n), "%s %s",
			          cname(ad[c]), no[i]);
		}
	}
	/* A prefix of a placeholder is judged on the prefix. */
	cr_expect(!ap_detect_placeholder(AP_CLASS_IDFA, "0000000000000000", 15));
}

Test(placeholder, mac)
{
	static const char *const yes[] = {
	        "02:00:00:00:00:00", "00:00:00:00:00:00", "02-00-00-00-00-00", "000000000000",
	        "020000000000",      "0200.0000.0000",    "0000.0000.0000",    "00-00-00-00-00-00",
	};
	static const char *const no[] = {
	        "02:00:00:00:00:01", "01:00:00:00:00:00", "20:00:00:00:00:00", "02:00:00:00:00",
	        "02:00-00:00:00:00", "0200000000001",     "ff:ff:ff:ff:ff:ff", "",
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(yes); i++) {
		size_t n = strlen(yes[i]);
		cr_expect(ap_detect_placeholder(AP_CLASS_MAC, at_guard(yes[i], n), n), "%s",
		          yes[i]);
		cr_expect(ap_detect_placeholder(AP_CLASS_BSSID, at_guard(yes[i], n), n), "%s",
		          yes[i]);
		cr_expect(!ap_detect_placeholder(AP_CLASS_IMEI, yes[i], n), "%s", yes[i]);
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(no); i++) {
		size_t n = strlen(no[i]);
		cr_expect(!ap_detect_placeholder(AP_CLASS_MAC, at_guard(no[i], n), n), "%s", no[i]);
	}
}

Test(placeholder, other_classes)
{
	for (int c = 0; c < AP_CLASS_MAX; c++) {
		bool ad = c == AP_CLASS_ADID || c == AP_CLASS_IDFA || c == AP_CLASS_IDFV ||
		          c == AP_CLASS_GAID || c == AP_CLASS_OAID;
		bool mac = c == AP_CLASS_MAC || c == AP_CLASS_BSSID;
		const char *z = "00000000-0000-0000-0000-000000000000";
		cr_expect_eq(ap_detect_placeholder(c, z, strlen(z)), ad, "%s", cname(c));
		cr_expect_eq(ap_detect_placeholder(c, "02:00:00:00:00:00", 17), mac, "%s",
		             cname(c));
	}
	cr_expect(!ap_detect_placeholder(AP_CLASS_MAX, "000000000000", 12));
}

Test(parse, names)
{
	cr_expect_eq(ap_detect_parse("imei"), AP_DET_IMEI);
	cr_expect_eq(ap_detect_parse("imsi"), AP_DET_IMSI);
	cr_expect_eq(ap_detect_parse("iccid"), AP_DET_ICCID);
	cr_expect_eq(ap_detect_parse("mac"), AP_DET_MAC);
	cr_expect_eq(ap_detect_parse("uuid"), AP_DET_UUID);
	cr_expect_eq(ap_detect_parse("ip"), AP_DET_IP);
	cr_expect_eq(ap_detect_parse("phone"), AP_DET_PHONE);
	cr_expect_eq(ap_detect_parse("email"), AP_DET_EMAIL);
	cr_expect_eq(ap_detect_parse("meid"), 0);
	cr_expect_eq(ap_detect_parse("IMEI"), 0);
	cr_expect_eq(ap_detect_parse("imei "), 0);
	cr_expect_eq(ap_detect_parse(""), 0);
	cr_expect_eq(ap_detect_parse("all"), 0);
	/* "imei" covers MEID. */
	expect("A10000009296F2", ap_detect_parse("imei"), false, AP_CLASS_MEID);
	expect("270113177609606898", ap_detect_parse("imei"), true, AP_CLASS_MEID);
}
