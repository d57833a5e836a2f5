/* Tests for pseudo.c: HMAC-SHA256 against RFC 4231, key files (permissions, sizes,
 * whitespace), hex/base64url output, canonical forms, and the shape guarantees of the
 * "preserve" format checked with oracles written here (Luhn, MAC bits, UUID v4, jansson). */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pseudo.h"

static struct ap_key key_a, key_b;
static struct ap_pseudo ps_a, ps_b;

static void set_key(struct ap_key *k, const char *id, const void *secret, size_t n)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->id, sizeof(k->id), "%s", id);
	memcpy(k->secret, secret, n);
	k->len = n;
}

static void setup(void)
{
	set_key(&key_a, "k1", "0123456789abcdef0123456789abcdef", 32);
	set_key(&key_b, "k2", "fedcba9876543210fedcba9876543210", 32);
	cr_assert_eq(ap_pseudo_init(&ps_a, &key_a), AP_OK);
	cr_assert_eq(ap_pseudo_init(&ps_b, &key_b), AP_OK);
}

static void teardown(void)
{
	ap_pseudo_free(&ps_a);
	ap_pseudo_free(&ps_b);
}

TestSuite(pseudo, .init = setup, .fini = teardown);

/* A pseudonym as a NUL-terminated string, in one of a ring of static buffers so a test can
 * hold a few at once without freeing. */
static const char *make(struct ap_pseudo *ps, int cls, int fmt, int len, int key_id, const char *in,
                        bool numeric)
{
	static char ring[8][2048];
	static int slot;
	struct ap_action act = {.act = AP_ACT_HASH,
	                        .cls = (uint8_t)cls,
	                        .fmt = (uint8_t)fmt,
	                        .length = (uint8_t)len,
	                        .key_id = (uint8_t)key_id};
	struct ap_buf b = {0};
	char *r = ring[slot++ % 8];

	cr_assert_eq(ap_pseudo_make(ps, &act, in, strlen(in), numeric, &b), AP_OK);
	cr_assert_lt(b.len, sizeof(ring[0]));
	if (b.len)
		memcpy(r, b.p, b.len);
	r[b.len] = 0;
	ap_buf_free(&b);
	return r;
}

static const char *preserve(struct ap_pseudo *ps, int cls, const char *in)
{
	return make(ps, cls, AP_HASH_PRESERVE, 0, 0, in, false);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void hex_of(const unsigned char *p, size_t n, char *s)
{
	for (size_t i = 0; i < n; i++)
		sprintf(s + 2 * i, "%02x", p[i]);
}

/* ---- HMAC: RFC 4231 ---- */

static void rfc4231(const void *key, size_t kn, const void *data, size_t dn, const char *want)
{
	struct ap_key k;
	struct ap_pseudo ps;
	unsigned char mac[32];
	char hex[65];

	set_key(&k, "t", key, kn);
	cr_assert_eq(ap_pseudo_init(&ps, &k), AP_OK);
	/* twice: the context must be reusable */
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(ap_pseudo_hmac(&ps, data, dn, mac), AP_OK);
		hex_of(mac, 32, hex);
		cr_assert_str_eq(hex, want);
	}
	ap_pseudo_free(&ps);
	cr_assert_null(ps.ctx);
}

Test(pseudo, rfc4231_case1)
{
	unsigned char key[20];
	memset(key, 0x0b, sizeof(key));
	rfc4231(key, sizeof(key), "Hi There", 8,
	        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

Test(pseudo, rfc4231_case2)
{
	rfc4231("Jefe", 4, "what do ya want for nothing?", 28,
	        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

Test(pseudo, rfc4231_case3)
{
	unsigned char key[20], data[50];
	memset(key, 0xaa, sizeof(key));
	memset(data, 0xdd, sizeof(data));
	rfc4231(key, sizeof(key), data, sizeof(data),
	        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
}

Test(pseudo, rfc4231_case4)
{
	unsigned char key[25], data[50];
	for (int i = 0; i < 25; i++)
		key[i] = (unsigned char)(i + 1);
	memset(data, 0xcd, sizeof(data));
	rfc4231(key, sizeof(key), data, sizeof(data),
	        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
}

Test(pseudo, rfc4231_case6)
{
	unsigned char key[131];
	const char *d = "Test Using Larger Than Block-Size Key - Hash Key First";
	memset(key, 0xaa, sizeof(key));
	rfc4231(key, sizeof(key), d, strlen(d),
	        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

Test(pseudo, rfc4231_case7)
{
	unsigned char key[131];
	const char *d = "This is a test using a larger than block-size key and a larger than "
	                "block-size data. The key needs to be hashed before being used by the "
	                "HMAC algorithm.";
	memset(key, 0xaa, sizeof(key));
	rfc4231(key, sizeof(key), d, strlen(d),
	        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

Test(pseudo, hmac_empty_input)
{
	unsigned char mac[32];
	cr_assert_eq(ap_pseudo_hmac(&ps_a, "", 0, mac), AP_OK);
}

Test(pseudo, freed_state_refuses)
{
	struct ap_pseudo ps;
	struct ap_action act = {.act = AP_ACT_HASH};
	struct ap_buf b = {0};
	unsigned char mac[32];

	cr_assert_eq(ap_pseudo_init(&ps, &key_a), AP_OK);
	ap_pseudo_free(&ps);
	ap_pseudo_free(&ps); /* idempotent */
	cr_assert_eq(ap_pseudo_hmac(&ps, "x", 1, mac), AP_ERR);
	cr_assert_eq(ap_pseudo_make(&ps, &act, "x", 1, false, &b), AP_ERR);
	cr_assert_eq(ap_pseudo_init(&ps, NULL), AP_ERR);
}

/* ---- hex / base64url ---- */

Test(pseudo, hex_is_hmac_of_raw_value)
{
	unsigned char mac[32];
	char hex[65];

	cr_assert_eq(ap_pseudo_hmac(&ps_a, "user-42", 7, mac), AP_OK);
	hex_of(mac, 32, hex);
	cr_assert_str_eq(make(&ps_a, AP_CLASS_USER_ID, AP_HASH_HEX, 64, 0, "user-42", false), hex);
}

Test(pseudo, hex_lengths)
{
	const char *full = make(&ps_a, AP_CLASS_OTHER, AP_HASH_HEX, 64, 0, "v", false);
	static const int lens[][2] = {{0, 32},  {1, 1},   {16, 16}, {63, 63},
	                              {64, 64}, {65, 64}, {255, 64}};

	cr_assert_eq(strlen(full), 64);
	cr_assert_eq(strspn(full, "0123456789abcdef"), 64);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		const char *s = make(&ps_a, AP_CLASS_OTHER, AP_HASH_HEX, lens[i][0], 0, "v", false);
		cr_assert_eq(strlen(s), (size_t)lens[i][1], "length %d", lens[i][0]);
		cr_assert(strncmp(s, full, strlen(s)) == 0, "a prefix of the full MAC");
	}
}

Test(pseudo, b64url_lengths_and_alphabet)
{
	unsigned char mac[32], std[48];
	char want[48];
	const char *full = make(&ps_a, AP_CLASS_OTHER, AP_HASH_B64URL, 43, 0, "v", false);
	static const int lens[][2] = {{0, 22}, {1, 1}, {42, 42}, {43, 43}, {44, 43}, {200, 43}};

	/* oracle: OpenSSL's standard base64, translated to the URL alphabet, unpadded */
	cr_assert_eq(ap_pseudo_hmac(&ps_a, "v", 1, mac), AP_OK);
	cr_assert_eq(EVP_EncodeBlock(std, mac, 32), 44);
	for (int i = 0; i < 43; i++)
		want[i] = std[i] == '+' ? '-' : std[i] == '/' ? '_' : (char)std[i];
	want[43] = 0;
	cr_assert_str_eq(full, want);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		const char *s =
		        make(&ps_a, AP_CLASS_OTHER, AP_HASH_B64URL, lens[i][0], 0, "v", false);
		cr_assert_eq(strlen(s), (size_t)lens[i][1], "length %d", lens[i][0]);
		cr_assert(strncmp(s, full, strlen(s)) == 0);
	}
}

Test(pseudo, key_id_prefix)
{
	const char *h = make(&ps_a, AP_CLASS_IMEI, AP_HASH_HEX, 0, 1, "352099001761481", false);
	const char *plain = make(&ps_a, AP_CLASS_IMEI, AP_HASH_HEX, 0, 0, "352099001761481", false);
	const char *b = make(&ps_b, AP_CLASS_IMEI, AP_HASH_B64URL, 10, 1, "352099001761481", false);

	cr_assert_eq(strlen(h), 3 + 32);
	cr_assert(strncmp(h, "k1:", 3) == 0);
	cr_assert_str_eq(h + 3, plain);
	cr_assert(strncmp(b, "k2:", 3) == 0);
	cr_assert_eq(strlen(b), 3 + 10);
}

Test(pseudo, appends_to_existing_output)
{
	struct ap_action act = {.act = AP_ACT_HASH, .fmt = AP_HASH_HEX, .length = 8};
	struct ap_buf b = {0};

	cr_assert_eq(ap_buf_add(&b, "pre:", 4), AP_OK);
	cr_assert_eq(ap_pseudo_make(&ps_a, &act, "x", 1, false, &b), AP_OK);
	cr_assert_eq(b.len, 12);
	cr_assert(memcmp(b.p, "pre:", 4) == 0);
	ap_buf_free(&b);
}

Test(pseudo, refuses_other_actions_and_formats)
{
	struct ap_action act = {.act = AP_ACT_MASK};
	struct ap_buf b = {0};

	cr_assert_eq(ap_pseudo_make(&ps_a, &act, "x", 1, false, &b), AP_ERR);
	act.act = AP_ACT_HASH;
	act.fmt = 9;
	cr_assert_eq(ap_pseudo_make(&ps_a, &act, "x", 1, false, &b), AP_ERR);
	cr_assert_eq(b.len, 0);
	ap_buf_free(&b);
}

/* ---- determinism, keys ---- */

Test(pseudo, deterministic_across_instances)
{
	struct ap_pseudo again;
	static const int fmts[] = {AP_HASH_HEX, AP_HASH_B64URL, AP_HASH_PRESERVE};

	cr_assert_eq(ap_pseudo_init(&again, &key_a), AP_OK);
	for (size_t f = 0; f < 3; f++) {
		const char *x =
		        make(&ps_a, AP_CLASS_MAC, fmts[f], 0, 0, "a4:5e:60:c2:11:9b", false);
		const char *y =
		        make(&again, AP_CLASS_MAC, fmts[f], 0, 0, "a4:5e:60:c2:11:9b", false);
		const char *z =
		        make(&ps_b, AP_CLASS_MAC, fmts[f], 0, 0, "a4:5e:60:c2:11:9b", false);
		cr_assert_str_eq(x, y);
		cr_assert_str_neq(x, z, "another key, another pseudonym");
	}
	ap_pseudo_free(&again);
}

Test(pseudo, different_inputs_differ)
{
	cr_assert_str_neq(preserve(&ps_a, AP_CLASS_IMEI, "352099001761481"),
	                  preserve(&ps_a, AP_CLASS_IMEI, "352099001761499"));
	cr_assert_str_neq(make(&ps_a, AP_CLASS_OTHER, AP_HASH_HEX, 0, 0, "a", false),
	                  make(&ps_a, AP_CLASS_OTHER, AP_HASH_HEX, 0, 0, "b", false));
}

/* ---- canonical forms ---- */

Test(pseudo, mac_styles_hash_alike)
{
	static const char *styles[] = {"AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff", "aabbccddeeff",
	                               "aa-bb-cc-dd-ee-ff", "AABB.CCDD.EEFF",    "AaBbCcDdEeFf"};
	const char *want = make(&ps_a, AP_CLASS_MAC, AP_HASH_HEX, 0, 0, "aabbccddeeff", false);

	for (size_t i = 0; i < sizeof(styles) / sizeof(styles[0]); i++) {
		cr_assert_str_eq(make(&ps_a, AP_CLASS_MAC, AP_HASH_HEX, 0, 0, styles[i], false),
		                 want, "%s", styles[i]);
		cr_assert_str_eq(make(&ps_a, AP_CLASS_BSSID, AP_HASH_HEX, 0, 0, styles[i], false),
		                 want, "the class is not hashed: %s", styles[i]);
	}
	/* outside the MAC classes the bytes are hashed as they are */
	cr_assert_str_neq(
	        make(&ps_a, AP_CLASS_DEVICE_ID, AP_HASH_HEX, 0, 0, "AA:BB:CC:DD:EE:FF", false),
	        want);
	/* mixed separators are not a MAC: raw bytes */
	cr_assert_str_neq(make(&ps_a, AP_CLASS_MAC, AP_HASH_HEX, 0, 0, "aa:bb-cc:dd:ee:ff", false),
	                  want);
}

Test(pseudo, uuid_email_meid_lowercased)
{
	cr_assert_str_eq(make(&ps_a, AP_CLASS_IDFA, AP_HASH_HEX, 0, 0,
	                      "6D92078A-8246-4BA4-AE5B-76104861E7DC", false),
	                 make(&ps_a, AP_CLASS_IDFA, AP_HASH_HEX, 0, 0,
	                      "6d92078a-8246-4ba4-ae5b-76104861e7dc", false));
	cr_assert_str_eq(make(&ps_a, AP_CLASS_GAID, AP_HASH_HEX, 0, 0,
	                      "6D92078A-8246-4BA4-AE5B-76104861E7DC", false),
	                 make(&ps_a, AP_CLASS_OAID, AP_HASH_HEX, 0, 0,
	                      "6d92078a-8246-4ba4-ae5b-76104861e7dc", false));
	cr_assert_str_eq(
	        make(&ps_a, AP_CLASS_EMAIL, AP_HASH_HEX, 0, 0, "Li.Lei@Example.COM", false),
	        make(&ps_a, AP_CLASS_EMAIL, AP_HASH_HEX, 0, 0, "li.lei@example.com", false));
	cr_assert_str_eq(make(&ps_a, AP_CLASS_MEID, AP_HASH_HEX, 0, 0, "A10000009296F2", false),
	                 make(&ps_a, AP_CLASS_MEID, AP_HASH_HEX, 0, 0, "a10000009296f2", false));
	/* a user id keeps its case */
	cr_assert_str_neq(make(&ps_a, AP_CLASS_USER_ID, AP_HASH_HEX, 0, 0, "Bob", false),
	                  make(&ps_a, AP_CLASS_USER_ID, AP_HASH_HEX, 0, 0, "bob", false));
	/* the same value under another digit class gives the same pseudonym */
	cr_assert_str_eq(make(&ps_a, AP_CLASS_IMEI, AP_HASH_HEX, 0, 0, "460001234567890", false),
	                 make(&ps_a, AP_CLASS_IMSI, AP_HASH_HEX, 0, 0, "460001234567890", false));
}

/* ---- preserve ---- */

static bool luhn_valid(const char *s, size_t n)
{
	int sum = 0;

	for (size_t i = 0; i < n; i++) {
		int d = s[n - 1 - i] - '0';
		if (i & 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

Test(pseudo, preserve_imei_luhn)
{
	char in[16];

	for (int t = 0; t < 10000; t++) {
		for (int i = 0; i < 15; i++)
			in[i] = (char)('0' + rnd() % 10);
		in[15] = 0;
		bool numeric = t & 1;
		if (numeric && in[0] == '0')
			in[0] = '3';
		const char *o = make(&ps_a, AP_CLASS_IMEI, AP_HASH_PRESERVE, 0, 0, in, numeric);
		cr_assert_eq(strlen(o), 15);
		cr_assert_eq(strspn(o, "0123456789"), 15, "%s", o);
		cr_assert(luhn_valid(o, 15), "%s", o);
		if (numeric)
			cr_assert_neq(o[0], '0');
	}
	/* 14 and 16 digits (no check digit, IMEISV): only digits, no fix-up asked */
	cr_assert_eq(strspn(preserve(&ps_a, AP_CLASS_IMEI, "35209900176148"), "0123456789"), 14);
	cr_assert_eq(strspn(preserve(&ps_a, AP_CLASS_IMEI, "3520990017614801"), "0123456789"), 16);
}

static void check_mac(const char *in, const char *o)
{
	char hex[3] = {o[0], o[1], 0};
	bool up = strpbrk(in, "ABCDEF") != NULL, lo = strpbrk(in, "abcdef") != NULL;
	unsigned v = (unsigned)strtoul(hex, NULL, 16);

	cr_assert_eq(strlen(o), strlen(in));
	for (size_t i = 0; in[i]; i++) {
		bool sep = in[i] == ':' || in[i] == '-' || in[i] == '.';
		if (sep) {
			cr_assert_eq(o[i], in[i], "separator kept: %s -> %s", in, o);
			continue;
		}
		cr_assert(isxdigit((unsigned char)o[i]), "%s -> %s", in, o);
		if (!up)
			cr_assert(!(o[i] >= 'A' && o[i] <= 'F'), "lower-case input stays: %s -> %s",
			          in, o);
		if (up && !lo)
			cr_assert(!(o[i] >= 'a' && o[i] <= 'f'), "upper-case input stays: %s -> %s",
			          in, o);
	}
	cr_assert_eq(v & 0x02, 0x02, "locally administered: %s -> %s", in, o);
	cr_assert_eq(v & 0x01, 0x00, "unicast: %s -> %s", in, o);
}

static void strip_lower(const char *s, char *d)
{
	for (; *s; s++)
		if (isxdigit((unsigned char)*s))
			*d++ = (char)tolower((unsigned char)*s);
	*d = 0;
}

Test(pseudo, preserve_mac_all_styles)
{
	for (int t = 0; t < 2000; t++) {
		unsigned char m[6];
		char s[4][20], o[4][20], ref[13], got[13];
		const char *hx = t & 1 ? "0123456789ABCDEF" : "0123456789abcdef";
		for (int i = 0; i < 6; i++)
			m[i] = (unsigned char)rnd();
		if (t % 7 == 0)
			m[0] = 0x01; /* multicast input */
#define H(i) hx[m[i] >> 4], hx[m[i] & 15]
		snprintf(s[0], 20, "%c%c:%c%c:%c%c:%c%c:%c%c:%c%c", H(0), H(1), H(2), H(3), H(4),
		         H(5));
		snprintf(s[1], 20, "%c%c-%c%c-%c%c-%c%c-%c%c-%c%c", H(0), H(1), H(2), H(3), H(4),
		         H(5));
		snprintf(s[2], 20, "%c%c%c%c%c%c%c%c%c%c%c%c", H(0), H(1), H(2), H(3), H(4), H(5));
		snprintf(s[3], 20, "%c%c%c%c.%c%c%c%c.%c%c%c%c", H(0), H(1), H(2), H(3), H(4),
		         H(5));
#undef H
		for (int k = 0; k < 4; k++) {
			snprintf(o[k], 20, "%s",
			         preserve(&ps_a, t & 2 ? AP_CLASS_BSSID : AP_CLASS_MAC, s[k]));
			check_mac(s[k], o[k]);
		}
		/* one device, one pseudonym: the styles differ only in separators and case */
		strip_lower(o[0], ref);
		for (int k = 1; k < 4; k++) {
			strip_lower(o[k], got);
			cr_assert_str_eq(got, ref, "%s vs %s", o[0], o[k]);
		}
	}
}

static void check_uuid4(const char *in, const char *o)
{
	bool up = strpbrk(in, "ABCDEF") != NULL;

	cr_assert_eq(strlen(o), 36);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			cr_assert_eq(o[i], '-');
		else
			cr_assert(isxdigit((unsigned char)o[i]), "%s", o);
	}
	cr_assert_eq(o[14], '4', "version 4: %s", o);
	cr_assert(strchr(up ? "89AB" : "89ab", o[19]) != NULL, "RFC 4122 variant: %s", o);
}

Test(pseudo, preserve_uuid_v4)
{
	static const int cls[] = {AP_CLASS_ADID, AP_CLASS_IDFA, AP_CLASS_IDFV, AP_CLASS_GAID,
	                          AP_CLASS_OAID};
	char in[37];

	for (int t = 0; t < 2000; t++) {
		const char *hx = t & 1 ? "0123456789ABCDEF" : "0123456789abcdef";
		for (int i = 0; i < 36; i++)
			in[i] = (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hx[rnd() % 16];
		in[36] = 0;
		check_uuid4(in, preserve(&ps_a, cls[t % 5], in));
	}
	/* same id, other case: same pseudonym up to case */
	const char *a = preserve(&ps_a, AP_CLASS_IDFA, "6D92078A-8246-4BA4-AE5B-76104861E7DC");
	const char *b = preserve(&ps_a, AP_CLASS_IDFA, "6d92078a-8246-4ba4-ae5b-76104861e7dc");
	cr_assert_eq(strcasecmp(a, b), 0, "%s %s", a, b);
}

Test(pseudo, preserve_phone_keeps_punctuation)
{
	const char *in = "+86 138-0013-8000";
	const char *o = preserve(&ps_a, AP_CLASS_PHONE, in);

	cr_assert_eq(strlen(o), strlen(in));
	for (size_t i = 0; in[i]; i++) {
		if (isdigit((unsigned char)in[i]))
			cr_assert(isdigit((unsigned char)o[i]), "%s", o);
		else
			cr_assert_eq(o[i], in[i], "%s", o);
	}
	cr_assert_str_neq(o, in);
}

Test(pseudo, preserve_letters_keep_case)
{
	const char *in = "Li.Lei+tag@Example.com";
	const char *o = preserve(&ps_a, AP_CLASS_EMAIL, in);

	cr_assert_eq(strlen(o), strlen(in));
	for (size_t i = 0; in[i]; i++) {
		if (islower((unsigned char)in[i]))
			cr_assert(islower((unsigned char)o[i]), "%s", o);
		else if (isupper((unsigned char)in[i]))
			cr_assert(isupper((unsigned char)o[i]), "%s", o);
		else
			cr_assert_eq(o[i], in[i], "%s", o);
	}
	/* not hex-shaped ('_' is no MAC or UUID separator): a-f are letters, and over many
	 * values some leave a-f */
	int outside = 0;
	for (int t = 0; t < 200; t++) {
		char v[24];
		snprintf(v, sizeof(v), "cafe_%d", t);
		const char *p = preserve(&ps_a, AP_CLASS_USER_ID, v);
		for (int i = 0; i < 4; i++)
			outside += p[i] > 'f';
	}
	cr_assert_gt(outside, 0);
}

Test(pseudo, preserve_hex_shaped)
{
	/* a hex value of no MAC or UUID class: every hex digit may become any hex digit
	 * (digits do not stay digits: that would show where the letters were), separators
	 * stay, no fix-up */
	const char *in = "3f2a-9bc1:07ed.44";
	const char *o = preserve(&ps_a, AP_CLASS_DEVICE_ID, in);
	int letters_at_digits = 0;

	cr_assert_eq(strlen(o), strlen(in));
	for (size_t i = 0; in[i]; i++) {
		if (isxdigit((unsigned char)in[i]))
			cr_assert(strchr("0123456789abcdef", o[i]), "%s", o);
		else
			cr_assert_eq(o[i], in[i], "%s", o);
	}
	for (int t = 0; t < 50; t++) {
		char v[32];
		snprintf(v, sizeof(v), "a%07d", t);
		o = preserve(&ps_a, AP_CLASS_DEVICE_ID, v);
		for (int i = 1; i < 8; i++)
			letters_at_digits += o[i] >= 'a';
	}
	cr_assert_gt(letters_at_digits, 0);
	o = preserve(&ps_a, AP_CLASS_DEVICE_ID, "DEADBEEF");
	cr_assert_eq(strspn(o, "0123456789ABCDEF"), 8, "%s", o);
}

Test(pseudo, preserve_keeps_utf8_bytes)
{
	const char *in = "José-7";
	const char *o = preserve(&ps_a, AP_CLASS_USER_ID, in);

	cr_assert_eq(strlen(o), strlen(in));
	cr_assert(memcmp(o + 3, "é-", 3) == 0, "%s", o);
	cr_assert(isupper((unsigned char)o[0]) && islower((unsigned char)o[1]));
	cr_assert(isdigit((unsigned char)o[6]));
}

Test(pseudo, preserve_numeric_stays_a_json_number)
{
	static const char *fixed[] = {"0", "0.5", "-0", "-0.25", "10", "1e5", "-1.5E+10", "0e0"};
	char in[32];

	for (int t = 0; t < 5000; t++) {
		const char *v = in;
		if (t < (int)(sizeof(fixed) / sizeof(fixed[0])))
			v = fixed[t];
		else
			snprintf(in, sizeof(in), "%llu", (unsigned long long)(rnd() % 100000000));
		const char *o = make(&ps_a, AP_CLASS_CELL_ID, AP_HASH_PRESERVE, 0, 0, v, true);
		json_t *j = json_loads(o, JSON_DECODE_ANY, NULL);
		cr_assert(j && json_is_number(j), "%s -> %s", v, o);
		json_decref(j);
		cr_assert_eq(strlen(o), strlen(v));
		const char *d = strpbrk(o, "0123456789");
		cr_assert(d && *d != '0', "first digit: %s -> %s", v, o);
	}
}

/* A 19-digit integer that fits a signed 64-bit integer keeps fitting (jansson and most
 * parsers read integers into int64): its first digit is drawn from 1-8. Found by
 * json_fuzz with a JSON-number ICCID. Shorter and longer numbers keep 1-9. */
Test(pseudo, preserve_numeric_19_digits_fits_int64)
{
	int saw9 = 0;

	for (int t = 0; t < 2000; t++) {
		char in[32];
		snprintf(in, sizeof(in), "%s89%017llu", t % 2 ? "-" : "",
		         (unsigned long long)(rnd() % 100000000000000000ull));
		const char *o = make(&ps_a, AP_CLASS_ICCID, AP_HASH_PRESERVE, 0, 0, in, true);
		json_t *j = json_loads(o, JSON_DECODE_ANY, NULL);
		cr_assert(j && json_is_integer(j), "%s -> %s does not fit int64", in, o);
		json_decref(j);
		cr_assert_eq(strlen(o), strlen(in));
		cr_assert(o[t % 2] >= '1' && o[t % 2] <= '8', "%s -> %s", in, o);
		/* 18 digits: the first may be 9 */
		o = make(&ps_a, AP_CLASS_ICCID, AP_HASH_PRESERVE, 0, 0, in + (t % 2) + 1, true);
		saw9 += o[0] == '9';
	}
	cr_assert_gt(saw9, 0, "18-digit numbers lost their 9s");
}

Test(pseudo, preserve_numeric_mac_stays_digits)
{
	/* a MAC class value sent as a JSON number: no MAC bit fix-up that could add a letter */
	for (int t = 0; t < 200; t++) {
		char in[16];
		snprintf(in, sizeof(in), "%012llu",
		         (unsigned long long)(100000000000ull + rnd() % 800000000000ull));
		const char *o = make(&ps_a, AP_CLASS_MAC, AP_HASH_PRESERVE, 0, 0, in, true);
		cr_assert_eq(strspn(o, "0123456789"), 12, "%s -> %s", in, o);
	}
}

Test(pseudo, preserve_digits_unbiased)
{
	long count[10] = {0};
	char in[32];
	const int runs = 20000;

	for (int t = 0; t < runs; t++) {
		snprintf(in, sizeof(in), "%016d", t);
		const char *o = preserve(&ps_a, AP_CLASS_SERIAL, in);
		for (int i = 0; i < 16; i++)
			count[o[i] - '0']++;
	}
	/* 32000 expected per digit; sigma is about 170 */
	for (int d = 0; d < 10; d++)
		cr_assert(count[d] > 31000 && count[d] < 33000, "digit %d: %ld", d, count[d]);
}

Test(pseudo, preserve_long_input)
{
	char in[1001], o1[1001];
	static const char alpha[] = "abcXYZ0123456789-+@. ";

	for (int i = 0; i < 1000; i++)
		in[i] = alpha[rnd() % (sizeof(alpha) - 1)];
	in[1000] = 0;
	snprintf(o1, sizeof(o1), "%s", preserve(&ps_a, AP_CLASS_APP_LIST, in));
	cr_assert_eq(strlen(o1), 1000);
	for (int i = 0; i < 1000; i++) {
		if (isdigit((unsigned char)in[i]))
			cr_assert(isdigit((unsigned char)o1[i]));
		else if (islower((unsigned char)in[i]))
			cr_assert(islower((unsigned char)o1[i]));
		else if (isupper((unsigned char)in[i]))
			cr_assert(isupper((unsigned char)o1[i]));
		else
			cr_assert_eq(o1[i], in[i]);
	}
	cr_assert_str_eq(preserve(&ps_a, AP_CLASS_APP_LIST, in), o1);
	cr_assert_str_neq(preserve(&ps_b, AP_CLASS_APP_LIST, in), o1);
}

Test(pseudo, preserve_empty)
{
	cr_assert_str_eq(preserve(&ps_a, AP_CLASS_OTHER, ""), "");
}

/* ---- key files ---- */

static void key_file(char path[64], const void *data, size_t n, mode_t mode)
{
	snprintf(path, 64, "/tmp/ap_pseudo_test_XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, n), (ssize_t)n);
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static const char secret32[] = "S3cr3t-Key-Bytes-For-Tests-0001!";

Test(pseudo, key_load_ok_and_whitespace)
{
	char path[64], err[256];
	char data[64];
	struct ap_key k;

	snprintf(data, sizeof(data), "%s \t\r\n\n", secret32);
	key_file(path, data, strlen(data), 0600);
	cr_assert_eq(ap_key_load(&k, "k1", path, err, sizeof(err)), AP_OK, "%s", err);
	cr_assert_eq(k.len, 32);
	cr_assert(memcmp(k.secret, secret32, 32) == 0);
	cr_assert_str_eq(k.id, "k1");
	unlink(path);
}

Test(pseudo, key_load_modes)
{
	static const struct {
		mode_t mode;
		int rc;
	} cases[] = {{0600, AP_OK},  {0400, AP_OK},  {0640, AP_OK},  {0660, AP_OK},
	             {0604, AP_ERR}, {0644, AP_ERR}, {0602, AP_ERR}, {0601, AP_ERR}};
	char path[64], err[256];
	struct ap_key k;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		key_file(path, secret32, 32, cases[i].mode);
		err[0] = 0;
		cr_assert_eq(ap_key_load(&k, "k1", path, err, sizeof(err)), cases[i].rc,
		             "mode %o: %s", (unsigned)cases[i].mode, err);
		if (cases[i].rc == AP_ERR) {
			char mode[8];
			snprintf(mode, sizeof(mode), "%04o", (unsigned)cases[i].mode);
			cr_assert(strstr(err, path) && strstr(err, mode) &&
			                  strstr(err, "chmod 600"),
			          "%s", err);
			cr_assert(strstr(err, "k1"), "%s", err);
			cr_assert_null(strstr(err, "S3cr3t"), "no key bytes in: %s", err);
		}
		unlink(path);
	}
	key_file(path, secret32, 32, 0644);
	ap_key_load(&k, "k1", path, err, sizeof(err));
	cr_assert(strstr(err, "readable by others (mode 0644)"), "%s", err);
	unlink(path);
}

Test(pseudo, key_load_sizes)
{
	char path[64], err[256], data[400];
	struct ap_key k;
	static const struct {
		size_t n;
		int rc;
		const char *what;
	} cases[] = {{0, AP_ERR, "too short"},  {15, AP_ERR, "too short"},
	             {16, AP_OK, NULL},         {256, AP_OK, NULL},
	             {257, AP_ERR, "too long"}, {320, AP_ERR, "too long"},
	             {321, AP_ERR, "too long"}, {400, AP_ERR, "too long"}};

	memset(data, 'x', sizeof(data));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		key_file(path, data, cases[i].n, 0600);
		err[0] = 0;
		cr_assert_eq(ap_key_load(&k, "k1", path, err, sizeof(err)), cases[i].rc, "%zu: %s",
		             cases[i].n, err);
		if (cases[i].what)
			cr_assert(strstr(err, cases[i].what), "%zu: %s", cases[i].n, err);
		else
			cr_assert_eq(k.len, cases[i].n);
		unlink(path);
	}
	/* whitespace does not count toward the minimum */
	memcpy(data, "0123456789abcde\n\n\n", 18);
	key_file(path, data, 18, 0600);
	cr_assert_eq(ap_key_load(&k, "k1", path, err, sizeof(err)), AP_ERR);
	unlink(path);
	/* binary keys: inner whitespace and NUL bytes are part of the secret */
	unsigned char bin[20] = {0, 1, ' ', '\n', 4,  5,  6,  7,  8,  9,
	                         0, 0, 0,   13,   14, 15, 16, 17, 18, 19};
	key_file(path, bin, sizeof(bin), 0600);
	cr_assert_eq(ap_key_load(&k, "k1", path, err, sizeof(err)), AP_OK, "%s", err);
	cr_assert_eq(k.len, 20);
	cr_assert(memcmp(k.secret, bin, 20) == 0);
	unlink(path);
}

Test(pseudo, key_load_not_a_file)
{
	char dir[] = "/tmp/ap_pseudo_dir_XXXXXX", fifo[80], err[256];
	struct ap_key k;

	cr_assert_eq(ap_key_load(&k, "k1", "/nonexistent/ap.key", err, sizeof(err)), AP_ERR);
	cr_assert(strstr(err, "/nonexistent/ap.key") && strstr(err, "cannot open"), "%s", err);

	cr_assert_not_null(mkdtemp(dir));
	chmod(dir, 0700);
	cr_assert_eq(ap_key_load(&k, "k1", dir, err, sizeof(err)), AP_ERR);
	cr_assert(strstr(err, "not a regular file"), "%s", err);

	/* a FIFO must be refused, not waited on */
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	cr_assert_eq(ap_key_load(&k, "k1", fifo, err, sizeof(err)), AP_ERR);
	cr_assert(strstr(err, "not a regular file"), "%s", err);
	unlink(fifo);
	rmdir(dir);
}

Test(pseudo, key_load_follows_symlinks_and_checks_target)
{
	char path[64], link[80], err[256];
	struct ap_key k;

	key_file(path, secret32, 32, 0600);
	snprintf(link, sizeof(link), "%s.lnk", path);
	cr_assert_eq(symlink(path, link), 0);
	cr_assert_eq(ap_key_load(&k, "k1", link, err, sizeof(err)), AP_OK, "%s", err);
	chmod(path, 0644);
	cr_assert_eq(ap_key_load(&k, "k1", link, err, sizeof(err)), AP_ERR);
	unlink(link);
	unlink(path);
}

Test(pseudo, key_load_ids)
{
	char path[64], err[256];
	struct ap_key k;
	static const char *bad[] = {"", "a b", "k/1", "0123456789abcdefX", "k:1", "ключ"};

	key_file(path, secret32, 32, 0600);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(ap_key_load(&k, bad[i], path, err, sizeof(err)), AP_ERR, "%s", bad[i]);
		cr_assert(strstr(err, "id must be"), "%s", err);
	}
	cr_assert_eq(ap_key_load(&k, "0123456789abcdef", path, err, sizeof(err)), AP_OK);
	cr_assert_eq(ap_key_load(&k, "Key_2024-01", path, err, sizeof(err)), AP_OK);
	cr_assert_str_eq(k.id, "Key_2024-01");
	/* no room for the message is not a crash */
	cr_assert_eq(ap_key_load(&k, "k1", "/nonexistent", NULL, 0), AP_ERR);
	unlink(path);
}

Test(pseudo, keyring_wipe)
{
	struct ap_keyring kr = {.nkeys = 2};

	set_key(&kr.keys[0], "a", secret32, 32);
	set_key(&kr.keys[1], "b", secret32, 20);
	ap_keyring_wipe(&kr);
	for (int i = 0; i < AP_KEYS_MAX; i++) {
		cr_assert_eq(kr.keys[i].len, 0);
		for (size_t j = 0; j < AP_KEY_MAX; j++)
			cr_assert_eq(kr.keys[i].secret[j], 0);
	}
}
