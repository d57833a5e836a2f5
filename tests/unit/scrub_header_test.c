/* The header scrubber: named header rules (hash, drop, mask, keep, a codec chain), the
 * client-address headers X-Forwarded-For, X-Real-IP and Forwarded (RFC 7239 examples)
 * truncated by default or as an explicit rule says, garbage in them, and headers no rule
 * names left alone. Values are placed against a guard page. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *RULES =
        "\"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"], \"action\": \"hash\", "
        "\"length\": 64}],"
        "\"headers\": ["
        " {\"name\": \"X-Device-Id\", \"class\": \"device_id\", \"action\": \"hash\", "
        "\"length\": 64},"
        " {\"name\": \"X-Drop-Me\", \"class\": \"other\", \"action\": \"drop\"},"
        " {\"name\": \"X-Keep\", \"class\": \"other\", \"action\": \"keep\"},"
        " {\"name\": \"X-Phone\", \"class\": \"phone\", \"action\": \"mask\", \"keep\": 4},"
        " {\"name\": \"X-Payload\", \"codec\": [\"base64\", \"json\"]},"
        " {\"name\": \"X-Client-Ip\", \"class\": \"ip\", \"action\": \"truncate_ip\"}"
        "]";

/* Explicit rules for the address headers override the default truncation. */
static const char *OVERRIDE =
        "\"headers\": ["
        " {\"name\": \"X-Forwarded-For\", \"class\": \"ip\", \"action\": \"hash\", "
        "\"length\": 16},"
        " {\"name\": \"forwarded\", \"class\": \"ip\", \"action\": \"drop\"},"
        " {\"name\": \"X-Real-IP\", \"class\": \"ip\", \"action\": \"truncate_ip\", "
        "\"ipv4_prefix\": 16, \"ipv6_prefix\": 32}"
        "]";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

static void setup_with(const char *rules)
{
	conf = tu_conf_ruleset(rules);
	tu_scrub(&sc, conf, "r");
}

static void setup(void)
{
	setup_with(RULES);
}

static void setup_override(void)
{
	setup_with(OVERRIDE);
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

#define DROPPED   "(dropped)"
#define UNCHANGED "(unchanged)"

/* Scrubs header <name>: <value> (against a guard page). Returns the new value, DROPPED,
 * UNCHANGED, or NULL when refused. Valid until the next call. */
static const char *hdr(const char *name, const char *value)
{
	static char *res;
	size_t n = strlen(value);
	const char *g = tu_guard(value, n);
	bool drop = true, changed = true;

	free(res);
	res = NULL;
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	if (ap_scrub_header(&sc, (struct ap_span){name, strlen(name)}, (struct ap_span){g, n}, &out,
	                    &drop, &changed) != AP_OK) {
		cr_assert_not_null(sc.why);
		return NULL;
	}
	cr_assert(!(drop && changed), "both dropped and changed");
	if (drop)
		return DROPPED;
	if (!changed) {
		cr_assert_eq(out.len, 0, "unchanged but output written");
		return UNCHANGED;
	}
	res = strndup(out.p ? out.p : "", out.len);
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

TestSuite(scrub_header, .init = setup, .fini = teardown);

Test(scrub_header, named_rules)
{
	char hex[65];

	hmac_hex("a1b2c3d4e5f6", hex, 64);
	cr_assert_str_eq(hdr("X-Device-Id", "a1b2c3d4e5f6"), hex);
	cr_assert_str_eq(hdr("x-device-id", "a1b2c3d4e5f6"), hex);
	cr_assert_str_eq(hdr("X-DEVICE-ID", "a1b2c3d4e5f6"), hex);
	cr_assert_eq(sc.st.hits[AP_CLASS_DEVICE_ID][AP_ACT_HASH], 1);
	cr_assert_str_eq(hdr("X-Drop-Me", "anything"), DROPPED);
	cr_assert_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_DROP], 1);
	cr_assert_str_eq(hdr("X-Keep", "356938035643809"), UNCHANGED);
	cr_assert_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_KEEP], 1);
	cr_assert_str_eq(hdr("X-Phone", "+8613800138000"), "**********8000");
	cr_assert_str_eq(hdr("X-Client-Ip", "198.51.100.99"), "198.51.100.0");
}

Test(scrub_header, headers_without_rules_are_untouched)
{
	static const char *names[] = {"User-Agent", "Cookie",      "X-Device",      "X-Device-Idx",
	                              "Host",       "X-Forwarded", "Forwarded-For", "X-Real"};
	for (size_t i = 0; i < AP_ARRAY_LEN(names); i++)
		cr_assert_str_eq(hdr(names[i], "356938035643809, 203.0.113.7"), UNCHANGED, "%s",
		                 names[i]);
	for (int c = 0; c < AP_CLASS_MAX; c++)
		for (int a = 0; a < AP_ACT_MAX; a++)
			cr_assert_eq(sc.st.hits[c][a], 0);
}

Test(scrub_header, codec_chain)
{
	char *b = malloc(256), hex[65];
	const char *in = "{\"imei\":\"356938035643809\",\"a\":1}", *res;
	unsigned char dec[256];
	int n;
	json_t *j;

	EVP_EncodeBlock((unsigned char *)b, (const unsigned char *)in, (int)strlen(in));
	res = hdr("X-Payload", b);
	cr_assert_not_null(res, "%s", sc.why);
	n = EVP_DecodeBlock(dec, (const unsigned char *)res, (int)strlen(res));
	cr_assert(n > 0);
	while (n > 0 && dec[n - 1] == 0)
		n--;
	j = json_loadb((const char *)dec, (size_t)n, 0, NULL);
	cr_assert_not_null(j, "%.*s", n, dec);
	hmac_hex("356938035643809", hex, 64);
	cr_assert_str_eq(json_string_value(json_object_get(j, "imei")), hex);
	cr_assert_eq(json_integer_value(json_object_get(j, "a")), 1);
	json_decref(j);
	/* Nothing inside to change: the header goes on as it came. */
	EVP_EncodeBlock((unsigned char *)b, (const unsigned char *)"{\"a\":1}", 7);
	cr_assert_str_eq(hdr("X-Payload", b), UNCHANGED);
	/* Undecodable: refused. */
	cr_assert_null(hdr("X-Payload", "%%%%"));
	cr_assert_null(hdr("X-Payload", "e25vcGU=")); /* base64 of "{nope" */
	free(b);
}

Test(scrub_header, x_forwarded_for_lists)
{
	cr_assert_str_eq(hdr("X-Forwarded-For", "203.0.113.7, 10.1.2.3"), "203.0.113.0, 10.1.2.0");
	cr_assert_str_eq(hdr("x-forwarded-for", "203.0.113.7"), "203.0.113.0");
	cr_assert_str_eq(hdr("X-Forwarded-For", "  203.0.113.7 ,10.1.2.3,\t192.0.2.1  "),
	                 "203.0.113.0, 10.1.2.0, 192.0.2.0");
	/* IPv6 to /48, and an IPv4-mapped address cut as IPv4. */
	cr_assert_str_eq(hdr("X-Forwarded-For", "2001:db8:cafe:1::17, 203.0.113.7"),
	                 "2001:db8:cafe::, 203.0.113.0");
	cr_assert_str_eq(hdr("X-Forwarded-For", "::ffff:203.0.113.7"), "::ffff:203.0.113.0");
	/* Elements that are not one address are left out; with none left, no header. */
	cr_assert_str_eq(hdr("X-Forwarded-For", "unknown, 203.0.113.7, , garbage ,10.0.0.1x"),
	                 "203.0.113.0");
	cr_assert_str_eq(hdr("X-Forwarded-For", "203.0.113.7:8080, 10.1.2.3"), "10.1.2.0");
	cr_assert_str_eq(hdr("X-Forwarded-For", "[2001:db8::1], 356938035643809"), DROPPED);
	cr_assert_str_eq(hdr("X-Forwarded-For", "unknown"), DROPPED);
	cr_assert_str_eq(hdr("X-Forwarded-For", ""), DROPPED);
	cr_assert_str_eq(hdr("X-Forwarded-For", ",,, ,"), DROPPED);
	cr_assert_eq(sc.st.hits[AP_CLASS_IP][AP_ACT_TRUNCATE_IP], 0, "nothing truncated");
}

Test(scrub_header, x_real_ip)
{
	cr_assert_str_eq(hdr("X-Real-IP", "203.0.113.7"), "203.0.113.0");
	cr_assert_str_eq(hdr("x-real-ip", "2001:db8:cafe:1::17"), "2001:db8:cafe::");
	cr_assert_str_eq(hdr("X-Real-IP", "not-an-ip"), DROPPED);
}

Test(scrub_header, forwarded_rfc7239)
{
	/* The examples of RFC 7239 section 4. */
	cr_assert_str_eq(hdr("Forwarded", "for=\"_gazonk\""), "for=\"_gazonk\"");
	cr_assert_str_eq(hdr("Forwarded", "For=\"[2001:db8:cafe::17]:4711\""),
	                 "For=\"[2001:db8:cafe::]\"");
	cr_assert_str_eq(hdr("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"),
	                 "for=192.0.2.0;proto=http;by=203.0.113.0");
	cr_assert_str_eq(hdr("Forwarded", "for=192.0.2.43, for=198.51.100.17"),
	                 "for=192.0.2.0, for=198.51.100.0");
	/* Section 6: unknown and obfuscated identifiers stay. */
	cr_assert_str_eq(hdr("Forwarded", "for=unknown"), "for=unknown");
	cr_assert_str_eq(hdr("Forwarded", "for=unknown, for=_hidden;by=_SEVKISEK"),
	                 "for=unknown, for=_hidden;by=_SEVKISEK");
	cr_assert_str_eq(hdr("forwarded", "for=\"192.0.2.60:8080\";host=example.com"),
	                 "for=192.0.2.0;host=example.com");
	cr_assert_str_eq(hdr("Forwarded", "for=[2001:db8:cafe::17]"), "for=\"[2001:db8:cafe::]\"");
	cr_assert_str_eq(hdr("Forwarded", "proto=https;host=a.example"),
	                 "proto=https;host=a.example");
	cr_assert_str_eq(hdr("Forwarded", "for=192.0.2.60,for=\"[2001:db8::1]\";proto=https"),
	                 "for=192.0.2.0, for=\"[2001:db8::]\";proto=https");
}

/* A for= or by= node that is not an address, "unknown" or "_name" is not one RFC 7239
 * allows, and it may hold an address in a form not parsed (a list, a space): it never
 * goes on as it came. */
Test(scrub_header, forwarded_garbage_nodes)
{
	static const char *bad[] = {
	        "for=\"192.0.2.60, 198.51.100.17\"",
	        "for=\" 192.0.2.60\"",
	        "for=192.0.2.60x",
	        "for=\"[2001:db8::1]x\"",
	        "by=356938035643809",
	        "for=",
	        "for=192.0.2.600",
	        "for=\"192.0.2.60;by=10.0.0.1\"",
	};
	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		const char *r = hdr("Forwarded", bad[i]);
		cr_assert_not_null(r, "%s refused: %s", bad[i], sc.why);
		cr_assert_str_neq(r, UNCHANGED, "%s", bad[i]);
		cr_assert_null(strstr(r, "192.0.2.6"), "%s -> %s", bad[i], r);
		cr_assert_null(strstr(r, "198.51"), "%s -> %s", bad[i], r);
		cr_assert_null(strstr(r, "10.0.0.1"), "%s -> %s", bad[i], r);
		cr_assert_null(strstr(r, "db8::1"), "%s -> %s", bad[i], r);
		cr_assert_null(strstr(r, "356938035643809"), "%s -> %s", bad[i], r);
	}
	cr_assert_str_eq(hdr("Forwarded", "for=\"192.0.2.60, 198.51.100.17\";proto=http"),
	                 "for=unknown;proto=http");
	/* Unbalanced quotes or brackets: refused, not guessed at. */
	cr_assert_null(hdr("Forwarded", "for=\"192.0.2.60"));
	cr_assert_null(hdr("Forwarded", "for=\"[2001:db8::1\""));
}

/* A hash with a key-id prefix holds a ':', which a Forwarded token cannot: it is quoted. */
Test(scrub_header_keyid, forwarded_hash_is_quoted_when_needed)
{
	const char *r;

	setup_with("\"headers\": [{\"name\": \"Forwarded\", \"class\": \"ip\", \"action\": "
	           "\"hash\", \"length\": 8, \"key_id\": true}]");
	r = hdr("Forwarded", "for=192.0.2.60;by=unknown, for=\"junk, 10.0.0.1\"");
	cr_assert_not_null(r);
	cr_assert_eq(strlen(r), strlen("for=\"t:01234567\";by=unknown, for=\"t:01234567\""), "%s",
	             r);
	cr_assert(strncmp(r, "for=\"t:", 7) == 0, "%s", r);
	cr_assert(strncmp(r + 15, "\";by=unknown, for=\"t:", 21) == 0, "%s", r);
	cr_assert_eq(r[strlen(r) - 1], '"');
	teardown();
}

/* Every prefix of address headers, against a guard page: no crash, and whatever comes
 * out holds no full address of the input. */
Test(scrub_header, every_truncation_point)
{
	static const char *vals[][2] = {
	        {"Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]"
	                      ":4711\", for=unknown;host=\"a,b\""},
	        {"X-Forwarded-For", "203.0.113.77, 2001:db8:cafe:1::17 ,garbage,10.1.2.3"},
	};
	for (size_t v = 0; v < AP_ARRAY_LEN(vals); v++) {
		size_t n = strlen(vals[v][1]);
		for (size_t k = 0; k <= n; k++) {
			char *pre = strndup(vals[v][1], k);
			const char *r = hdr(vals[v][0], pre);
			if (r && strcmp(r, UNCHANGED) != 0 && strcmp(r, DROPPED) != 0) {
				cr_assert_null(strstr(r, "203.0.113.4"), "[%s] -> %s", pre, r);
				cr_assert_null(strstr(r, "203.0.113.7"), "[%s] -> %s", pre, r);
				cr_assert_null(strstr(r, "192.0.2.6"), "[%s] -> %s", pre, r);
				cr_assert_null(strstr(r, "cafe::17"), "[%s] -> %s", pre, r);
				cr_assert_null(strstr(r, "cafe:1:"), "[%s] -> %s", pre, r);
				cr_assert_null(strstr(r, "10.1.2.3"), "[%s] -> %s", pre, r);
			}
			/* An address header never goes on unchanged. */
			cr_assert(!r || strcmp(r, UNCHANGED) != 0, "[%s]", pre);
			free(pre);
		}
	}
}

/* ---- explicit rules for the address headers ---- */

TestSuite(scrub_header_override, .init = setup_override, .fini = teardown);

Test(scrub_header_override, explicit_rules_win)
{
	char h1[17], h2[17], want[64];

	hmac_hex("203.0.113.7", h1, 16);
	hmac_hex("10.1.2.3", h2, 16);
	snprintf(want, sizeof(want), "%s, %s", h1, h2);
	cr_assert_str_eq(hdr("X-Forwarded-For", "203.0.113.7, 10.1.2.3"), want);
	cr_assert_eq(sc.st.hits[AP_CLASS_IP][AP_ACT_HASH], 2);
	cr_assert_str_eq(hdr("Forwarded", "for=192.0.2.60;proto=http"), DROPPED);
	cr_assert_str_eq(hdr("FORWARDED", "for=unknown"), DROPPED);
	cr_assert_eq(sc.st.hits[AP_CLASS_IP][AP_ACT_DROP], 1);
	cr_assert_str_eq(hdr("X-Real-IP", "203.0.113.7"), "203.0.0.0");
	cr_assert_str_eq(hdr("X-Real-IP", "2001:db8:cafe::17"), "2001:db8::");
	/* The rules of the other ruleset are not here. */
	cr_assert_str_eq(hdr("X-Device-Id", "abc"), UNCHANGED);
}
