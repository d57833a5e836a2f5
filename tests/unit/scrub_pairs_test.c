/* The pairs terminal codec ("k=v##k=v"): byte-exact copies of what is not rewritten, key
 * rules case-insensitive, drops at every position, empty elements and values, bare tokens
 * through the detectors, other separators and assignments, a nested chain in a value, a
 * replacement that would break the format refused, every truncation point against a guard
 * page, and random strings checked against a splitter of the test's own. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *RULES =
        "\"detect\": [\"imei\", \"mac\"],"
        "\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}, \"mac\": \"drop\"},"
        "\"fields\": ["
        " {\"keys\": [\"src\"], \"codec\": [\"pairs\"]},"
        " {\"keys\": [\"semi\"], \"codec\": [{\"name\": \"pairs\", \"separator\": \";\", "
        "\"assign\": \":\"}]},"
        " {\"keys\": [\"stars\"], \"codec\": [{\"name\": \"pairs\", \"separator\": \"**\"}]},"
        " {\"class\": \"imei\", \"keys\": [\"imei\", \"imei_slot1\"]},"
        " {\"class\": \"android_id\", \"keys\": [\"android_id\"], \"action\": \"hash\", "
        "\"length\": 8},"
        " {\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": \"drop\"},"
        " {\"class\": \"phone\", \"keys\": [\"tel\"], \"action\": \"mask\", \"keep\": 2},"
        " {\"class\": \"other\", \"keys\": [\"note\"], \"action\": \"keep\"},"
        " {\"keys\": [\"blob\"], \"codec\": [\"base64\", \"json\"]}"
        "]";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

static void setup(void)
{
	conf = tu_conf_ruleset(RULES);
	tu_scrub(&sc, conf, "r");
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(scrub_pairs, .init = setup, .fini = teardown);

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

/* Scrubs <in, n> as the pairs of codec entry <key>, against a guard page. On AP_OK *res is
 * the result (the input itself when unchanged), valid until the next call. */
static int run_n(const char *key, const char *in, size_t n, const char **res)
{
	static char *last;
	const struct ap_field *f = ap_rules_key(sc.rs, key, strlen(key));
	const char *g = tu_guard(in, n);
	bool changed = false;
	int rc;

	cr_assert_not_null(f);
	free(last);
	last = NULL;
	ap_scrub_begin(&sc, sc.rs, 64, 1 << 20);
	ap_buf_clear(&out);
	rc = ap_scrub_pairs(&sc, f, (struct ap_span){g, n}, &out, &changed);
	if (rc != AP_OK) {
		cr_assert_not_null(sc.why, "refused without a reason");
		return rc;
	}
	if (!changed)
		cr_assert_eq(out.len, 0, "unchanged but output written");
	last = changed ? strndup(out.p ? out.p : "", out.len) : strndup(in, n);
	*res = last;
	return rc;
}

static const char *pairs(const char *in)
{
	const char *r;
	return run_n("src", in, strlen(in), &r) == AP_OK ? r : NULL;
}

#define IMEI "356938035643809"
#define MAC  "A4:5E:60:C2:17:9B"

Test(scrub_pairs, sensors_install_source)
{
	char h_imei[17], h_aid[9], want[512];
	const char *r;

	hmac_hex(IMEI, 15, h_imei, 16);
	hmac_hex("9774d56d682e549c", 16, h_aid, 8);
	r = pairs("android_id=9774d56d682e549c##imei=" IMEI "##imei_old=##imei_slot1=" IMEI
	          "##mac=" MAC "##oaid=##note=" IMEI);
	cr_assert_not_null(r, "%s", sc.why);
	snprintf(want, sizeof(want),
	         "android_id=%s##imei=%s##imei_old=##imei_slot1=%s##oaid=##note=" IMEI, h_aid,
	         h_imei, h_imei);
	cr_expect_str_eq(r, want);
	cr_expect_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 2);
	cr_expect_eq(sc.st.hits[AP_CLASS_MAC][AP_ACT_DROP], 1);
	cr_expect_eq(sc.st.hits[AP_CLASS_OTHER][AP_ACT_KEEP], 1);
}

Test(scrub_pairs, untouched_is_not_copied)
{
	static const char *const same[] = {"",
	                                   "##",
	                                   "a=1",
	                                   "a=1##b=2",
	                                   "a=##b=",
	                                   "=x",
	                                   "a==b",
	                                   "####",
	                                   "a=1####b=2",
	                                   "note=" IMEI,
	                                   "imei=##imei_slot1=",
	                                   "plain",
	                                   "a=1##",
	                                   "##a=1",
	                                   "x=y=z##",
	                                   "IMEI=",
	                                   "tel="};
	for (size_t i = 0; i < AP_ARRAY_LEN(same); i++) {
		const char *r = pairs(same[i]);
		cr_assert_not_null(r, "%s: %s", same[i], sc.why);
		cr_expect_str_eq(r, same[i]);
	}
}

Test(scrub_pairs, keys_are_case_insensitive_values_exact)
{
	char h[17], want[128];

	hmac_hex(IMEI, 15, h, 16);
	snprintf(want, sizeof(want), "IMEI=%s##Imei_Slot1=%s", h, h);
	cr_expect_str_eq(pairs("IMEI=" IMEI "##Imei_Slot1=" IMEI), want);
}

Test(scrub_pairs, drops_at_every_position)
{
	cr_expect_str_eq(pairs("mac=x##a=1##b=2"), "a=1##b=2");
	cr_expect_str_eq(pairs("a=1##mac=x##b=2"), "a=1##b=2");
	cr_expect_str_eq(pairs("a=1##b=2##mac=x"), "a=1##b=2");
	cr_expect_str_eq(pairs("mac=x##mac=y##a=1"), "a=1");
	cr_expect_str_eq(pairs("a=1##mac=x##mac=y"), "a=1");
	cr_expect_str_eq(pairs("mac=x##mac=y"), "");
	cr_expect_str_eq(pairs("mac=x"), "");
	cr_expect_str_eq(pairs("mac="), "");
	cr_expect_str_eq(pairs("a=1####mac=x"), "a=1##");
	cr_expect_str_eq(pairs("mac=x####a=1"), "##a=1");
	/* found by a detector, with a drop action */
	cr_expect_str_eq(pairs("a=1##wifi=" MAC "##b=2"), "a=1##b=2");
	cr_expect_str_eq(pairs(MAC "##b=2"), "b=2");
}

Test(scrub_pairs, tokens_and_detectors)
{
	char h[17], want[128];

	hmac_hex(IMEI, 15, h, 16);
	snprintf(want, sizeof(want), "x=%s##%s##y=plain", h, h);
	cr_expect_str_eq(pairs("x=" IMEI "##" IMEI "##y=plain"), want);
	cr_expect_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_HASH], 2);
}

Test(scrub_pairs, other_separators)
{
	const char *r;
	char h[17], want[128];

	hmac_hex(IMEI, 15, h, 16);
	cr_assert_eq(run_n("semi", "imei:" IMEI ";mac:" MAC ";n:1",
	                   strlen("imei:" IMEI ";mac:" MAC ";n:1"), &r),
	             AP_OK, "%s", sc.why);
	snprintf(want, sizeof(want), "imei:%s;n:1", h);
	cr_expect_str_eq(r, want);
	/* "=" is not the assignment here: the whole element is a token */
	cr_assert_eq(run_n("semi", "imei=" IMEI ";n:1", 24, &r), AP_OK);
	snprintf(want, sizeof(want), "imei=" IMEI ";n:1");
	cr_expect_str_eq(r, want, "a token 'imei=…' is not an IMEI, nor a key");
}

Test(scrub_pairs, replacement_breaking_the_format_refused)
{
	const char *r;

	/* a mask writes '*': with "**" as the separator, it would split the element */
	cr_expect_eq(run_n("stars", "tel=12345678**a=1", 17, &r), AP_ERR);
	cr_expect_str_eq(sc.why, "a replacement would break the pairs format");
	cr_assert_eq(run_n("src", "tel=12345678##a=1", 17, &r), AP_OK);
	cr_expect_str_eq(r, "tel=******78##a=1");
}

Test(scrub_pairs, nested_chain_in_a_value)
{
	char h[17], json[128], b64[256], in[300], want_json[128];
	const char *r;
	unsigned char dec[256];
	int n;

	hmac_hex(IMEI, 15, h, 16);
	snprintf(json, sizeof(json), "{\"imei\":\"%s\"}", IMEI);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)strlen(json));
	snprintf(in, sizeof(in), "a=1##blob=%s##z=2", b64);
	r = pairs(in);
	cr_assert_not_null(r, "%s", sc.why);
	cr_assert(strncmp(r, "a=1##blob=", 10) == 0);
	cr_assert(strstr(r, "##z=2"));
	n = EVP_DecodeBlock(dec, (const unsigned char *)r + 10,
	                    (int)(strstr(r, "##z=2") - (r + 10)));
	cr_assert_gt(n, 0);
	snprintf(want_json, sizeof(want_json), "{\"imei\":\"%s\"}", h);
	cr_expect_eq(memcmp(dec, want_json, strlen(want_json)), 0);
	/* a value that does not decode under its chain refuses the whole request */
	cr_expect_null(pairs("a=1##blob=!!!##z=2"));
}

/* Every prefix of a string, against a guard page: never read past, always a result made of
 * whole elements of the prefix (or a refusal with a reason). */
Test(scrub_pairs, every_truncation_point)
{
	static const char in[] = "android_id=9774d56d682e549c##imei=" IMEI "##mac=" MAC
	                         "####note=x##tel=123456##" IMEI;
	for (size_t k = 0; k <= sizeof(in) - 1; k++) {
		const char *r;
		int rc = run_n("src", in, k, &r);
		cr_expect_eq(rc, AP_OK, "prefix %zu: %s", k, sc.why);
		if (rc == AP_OK)
			cr_expect(!strstr(r, IMEI) || strstr(r, "note") || k < 34 + 15,
			          "prefix %zu kept the IMEI: %s", k, r);
	}
}

/* ---- random strings against a model of the test's own ---- */

/* What one element becomes under RULES: appended to <o>, or false when it is dropped. */
static bool model(const char *e, size_t n, char *o)
{
	const char *eq = memchr(e, '=', n);
	char k[64] = "", v[256], h[17];
	size_t vn;

	if (n == 0)
		return true;
	if (!eq) {
		memcpy(v, e, n);
		v[n] = 0;
		if (strcmp(v, MAC) == 0)
			return false;
		if (strcmp(v, IMEI) == 0) {
			hmac_hex(IMEI, 15, h, 16);
			strcat(o, h);
		} else
			strncat(o, e, n);
		return true;
	}
	memcpy(k, e, (size_t)(eq - e));
	vn = n - (size_t)(eq - e) - 1;
	memcpy(v, eq + 1, vn);
	v[vn] = 0;
	if (strcasecmp(k, "mac") == 0)
		return false;
	strncat(o, e, (size_t)(eq - e) + 1);
	if (strcasecmp(k, "note") == 0 || vn == 0)
		strcat(o, v);
	else if (strcasecmp(k, "imei") == 0) {
		hmac_hex(v, vn, h, 16);
		strcat(o, h);
	} else if (strcasecmp(k, "android_id") == 0) {
		hmac_hex(v, vn, h, 8);
		strcat(o, h);
	} else if (strcmp(v, MAC) == 0) {
		o[strlen(o) - (size_t)(eq - e) - 1] = 0;
		return false;
	} else if (strcmp(v, IMEI) == 0) {
		hmac_hex(v, vn, h, 16);
		strcat(o, h);
	} else
		strcat(o, v);
	return true;
}

Test(scrub_pairs, random_strings_against_a_model)
{
	static const char *const keys[] = {"a", "imei",       "mac", "note",
	                                   "x", "Android_ID", "",    "MAC"};
	static const char *const vals[] = {"", "1", IMEI, MAC, "hello", "9774d56d682e549c", "=="};

	srand(11);
	for (int round = 0; round < 5000; round++) {
		char in[1024] = "", want[2048] = "";
		const char *r, *p;
		int ne = 1 + rand() % 8;
		bool any = false;

		for (int i = 0; i < ne; i++) {
			if (i)
				strcat(in, "##");
			if (rand() % 7 == 0)
				continue; /* an empty element */
			strcat(in, keys[rand() % AP_ARRAY_LEN(keys)]);
			if (rand() % 5)
				strcat(in, "=");
			strcat(in, vals[rand() % AP_ARRAY_LEN(vals)]);
		}
		for (p = in;;) {
			const char *e = strstr(p, "##");
			size_t n = e ? (size_t)(e - p) : strlen(p), mark = strlen(want);
			if (any)
				strcat(want, "##");
			if (model(p, n, want))
				any = true;
			else
				want[mark] = 0;
			if (!e)
				break;
			p = e + 2;
		}
		r = pairs(in);
		cr_assert_not_null(r, "%s: %s", in, sc.why);
		cr_assert_str_eq(r, want, "input %s", in);
	}
}
