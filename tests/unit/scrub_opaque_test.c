/* Opaque-payload rules and body formats of a profile: every condition (media type exact,
 * a whole type, anything; a header with or without values; a form or query field) and their
 * conjunction, the pass and refuse policies (status, reason, count, the body untouched),
 * a field condition looked up before a form field that could not be decoded, and a body
 * format chosen by media type ahead of the built-in dispatch. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *CONF_TEXT =
        "{\"keys\": {\"active\": \"t\", \"files\": {\"t\": \"@KEY@\"}},"
        " \"rulesets\": {\"r\": {\"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"], "
        "\"action\": \"drop\"}, {\"keys\": [\"d\"], \"codec\": [\"base64\", \"json\"]}]}},"
        " \"profiles\": {\"p\": {"
        "   \"bodies\": [{\"content_type\": [\"application/x-thing\", \"text/*\"], "
        "\"codec\": [\"base64\", \"json\"]}],"
        "   \"opaque\": ["
        "    {\"name\": \"by-type\", \"content_type\": [\"application/x-secret\", \"ut/*\"]},"
        "    {\"name\": \"by-header\", \"header\": {\"name\": \"X-Enc\"}},"
        "    {\"name\": \"by-header-value\", \"header\": {\"name\": \"Msg-Type\", \"values\": "
        "[\"envelope/json\", \"e2\"]}},"
        "    {\"name\": \"by-field\", \"content_type\": "
        "\"application/x-www-form-urlencoded\", \"field\": {\"name\": \"enc\", \"values\": "
        "[\"9\", \"13\"]}},"
        "    {\"name\": \"both\", \"header\": {\"name\": \"X-B\"}, \"field\": {\"name\": "
        "\"b\"}}]}},"
        " \"routes\": [{\"path\": \"/r\", \"upstream\": \"sink\", \"ruleset\": \"r\", "
        "\"profile\": \"p\"}, {\"path\": \"/p\", \"upstream\": \"sink\", \"ruleset\": \"r\", "
        "\"profile\": \"p\", \"opaque\": \"pass\"}]}";

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out, hv;

static void setup(void)
{
	conf = tu_conf(CONF_TEXT);
	cr_assert_eq(ap_scrub_init(&sc, &conf->keys.keys[conf->keys.active]), AP_OK);
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_buf_free(&hv);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(scrub_opaque, .init = setup, .fini = teardown);

static int status;
static bool changed;

/* Scrubs a request on route <route> ("/r": refuse, "/p": pass) with the query <query>,
 * one header <h: v> (NULL for none), type <ctype> and body <body>. */
static int req(const char *route, const char *query, const char *h, const char *v,
               const char *ctype, const char *body)
{
	const struct ap_route *rt =
	        ap_conf_route(conf, AP_SPAN(""), (struct ap_span){route, strlen(route)});
	bool drop, ch;

	cr_assert_not_null(rt);
	ap_scrub_begin(&sc, rt->ruleset, 64, 1 << 20);
	ap_buf_clear(&hv);
	if (query)
		cr_assert_eq(ap_scrub_query(&sc, (struct ap_span){query, strlen(query)}, &hv, &ch),
		             AP_OK);
	ap_buf_clear(&hv);
	if (h)
		cr_assert_eq(ap_scrub_header(&sc, (struct ap_span){h, strlen(h)},
		                             (struct ap_span){v, strlen(v)}, &hv, &drop, &ch),
		             AP_OK);
	ap_buf_clear(&out);
	return ap_scrub_body(&sc, (struct ap_span){ctype, strlen(ctype)}, AP_SPAN(""), rt->unknown,
	                     (struct ap_span){body, strlen(body)}, &out, &changed, &status);
}

static void opaque_refused(int rc)
{
	cr_expect_eq(rc, AP_ERR);
	cr_expect_eq(status, 415);
	cr_expect_str_eq(sc.why, AP_WHY_OPAQUE);
	cr_expect_eq(sc.st.opaque, 1);
}

#define FORM "application/x-www-form-urlencoded"

Test(scrub_opaque, each_condition)
{
	opaque_refused(req("/r", NULL, NULL, NULL, "application/x-secret", "\x01\x02"));
	opaque_refused(req("/r", NULL, NULL, NULL, "Application/X-Secret; v=1", "\x01\x02"));
	opaque_refused(req("/r", NULL, NULL, NULL, "ut/53fd4119fd98c567", "\x01\x02"));
	opaque_refused(req("/r", NULL, "x-enc", "anything", "application/json", "{\"imei\":1}"));
	opaque_refused(req("/r", NULL, "Msg-Type", " e2 ", "application/octet-stream", "x"));
	opaque_refused(req("/r", NULL, NULL, NULL, FORM, "a=1&enc=13&d=%%%"));
	opaque_refused(req("/r", "enc=9", NULL, NULL, FORM, "a=1"));
	opaque_refused(req("/r", "b=", "X-B", "1", "application/json", "{}"));
}

Test(scrub_opaque, conditions_that_do_not_hold)
{
	/* not the media type, the value, nor both halves of a conjunction */
	cr_expect_eq(req("/r", NULL, NULL, NULL, "application/x-secretive", "x"), AP_ERR);
	cr_expect_eq(status, 415);
	cr_expect_str_eq(sc.why, "content type not scrubbed on this route");
	cr_expect_eq(sc.st.opaque, 0);
	cr_expect_eq(req("/r", NULL, "Msg-Type", "envelope/xml", "application/json", "{}"), AP_OK);
	cr_expect_eq(req("/r", NULL, NULL, NULL, FORM, "enc=1&imei=5"), AP_OK);
	cr_expect(changed && out.len == 5 && memcmp(out.p, "enc=1", 5) == 0);
	cr_expect_eq(req("/r", "enc=10", NULL, NULL, "application/json", "{}"), AP_OK);
	cr_expect_eq(req("/r", NULL, "X-B", "1", "application/json", "{}"), AP_OK);
	cr_expect_eq(req("/r", "b=2", NULL, NULL, "application/json", "{}"), AP_OK);
	/* a field condition of a form rule is not met by a JSON body's member */
	cr_expect_eq(req("/r", NULL, NULL, NULL, "application/json", "{\"enc\":\"9\"}"), AP_OK);
	cr_expect_eq(sc.st.opaque, 0);
}

Test(scrub_opaque, pass_forwards_unchanged_and_counts)
{
	cr_expect_eq(req("/p", NULL, NULL, NULL, FORM, "enc=9&imei=356938035643809&d=!!"), AP_OK);
	cr_expect_not(changed);
	cr_expect_eq(out.len, 0);
	cr_expect_eq(sc.st.opaque, 1);
	cr_expect_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_DROP], 0, "an opaque body is not read");
	/* while the query string and headers are still scrubbed */
	cr_expect_eq(req("/p", "imei=1", "X-Enc", "y", "application/json", "{\"imei\":2}"), AP_OK);
	cr_expect_eq(sc.st.hits[AP_CLASS_IMEI][AP_ACT_DROP], 1);
	cr_expect_eq(sc.st.opaque, 1);
}

Test(scrub_opaque, body_formats_by_media_type)
{
	/* base64 of {"imei":"1","n":2} */
	cr_expect_eq(req("/r", NULL, NULL, NULL, "application/x-thing", "eyJpbWVpIjoiMSIsIm4iOjJ9"),
	             AP_OK, "%s", sc.why);
	cr_expect(changed);
	cr_expect(out.len == 12 && memcmp(out.p, "eyJuIjoyfQ==", 12) == 0, "%.*s", (int)out.len,
	          out.p); /* {"n":2} */
	cr_expect_eq(req("/r", NULL, NULL, NULL, "text/plain", "eyJpbWVpIjoiMSIsIm4iOjJ9"), AP_OK);
	cr_expect(changed);
	cr_expect_eq(req("/r", NULL, NULL, NULL, "application/x-thing", "not base64!"), AP_ERR);
	cr_expect_eq(status, 400);
}
