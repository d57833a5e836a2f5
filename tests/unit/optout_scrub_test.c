/* Per-user opt-outs in the scrubbers, with a table stand-in: events of opted-out users
 * leave a batch (JSON array, "batch"/"events" arrays, NDJSON lines, a whole form), other
 * users' events stay; personalization, location and minor change how an event is
 * scrubbed; a request-level user covers every event. Checked with jansson. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "testutil.h"

static struct ap_conf *conf;
static struct ap_scrub sc;
static struct ap_buf out;

/* alice: analytics, bob: personalization, lou: location, kid: minor, eve: all. */
static unsigned lookup(void *arg, const char *u, size_t n)
{
	static const struct {
		const char *user;
		unsigned scopes;
	} t[] = {{"alice", AP_SCOPE_ANALYTICS}, {"bob", AP_SCOPE_PERSONALIZATION},
	         {"lou", AP_SCOPE_LOCATION},    {"kid", AP_SCOPE_MINOR},
	         {"eve", AP_SCOPE_ALL},         {"4711", AP_SCOPE_ANALYTICS}};
	AP_UNUSED(arg);
	for (size_t i = 0; i < AP_ARRAY_LEN(t); i++)
		if (strlen(t[i].user) == n && memcmp(t[i].user, u, n) == 0)
			return t[i].scopes;
	return 0;
}

static void setup(void)
{
	conf = tu_conf(
	        "{\"keys\": {\"active\": \"t\", \"files\": {\"t\": \"@KEY@\"}},"
	        " \"rulesets\": {"
	        "  \"r\": {\"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 8},"
	        "          \"idfa\": {\"action\": \"hash\", \"length\": 8},"
	        "          \"gps\": {\"action\": \"round\", \"decimals\": 1}},"
	        "   \"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]},"
	        "              {\"class\": \"idfa\", \"keys\": [\"idfa\"]},"
	        "              {\"class\": \"gps\", \"keys\": [\"lat\"]},"
	        "              {\"keys\": [\"blob\"], \"codec\": [\"json\"]}],"
	        "   \"user\": {\"paths\": [\"$.user_id\", \"$.user.id\"], \"form\": [\"uid\"]},"
	        "   \"strict\": \"strict\"},"
	        "  \"strict\": {\"classes\": {\"imei\": \"drop\", \"gps\": \"drop\"}}},"
	        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"r\"}]}");
	tu_scrub(&sc, conf, "r");
	sc.user_scopes = lookup;
	sc.route_scope = AP_SCOPE_ANALYTICS;
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_conf_free(conf);
	tu_cleanup();
}

TestSuite(optout_scrub, .init = setup, .fini = teardown);

/* Scrubs <in> as JSON (or NDJSON/form) and returns the result (the input when unchanged). */
static const char *run(int kind, const char *in)
{
	static char *res;
	bool changed = false;
	int rc;

	free(res);
	ap_scrub_begin(&sc, ap_conf_ruleset(conf, "r"), 64, 1 << 20);
	ap_buf_clear(&out);
	rc = kind == 0   ? ap_scrub_json(&sc, (struct ap_span){in, strlen(in)}, &out, &changed)
	     : kind == 1 ? ap_scrub_ndjson(&sc, (struct ap_span){in, strlen(in)}, &out, &changed)
	                 : ap_scrub_form(&sc, (struct ap_span){in, strlen(in)}, &out, &changed);
	cr_assert_eq(rc, AP_OK, "%s", sc.why);
	res = changed ? strndup(out.p, out.len) : strdup(in);
	return res;
}

static json_t *parse(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);
	cr_assert_not_null(j, "not JSON (%s): %s", e.text, s);
	return j;
}

Test(optout_scrub, batch_drops_only_opted_out_users)
{
	const char *r = run(0, "[{\"user_id\":\"alice\",\"imei\":\"356938035643809\"},"
	                       "{\"user_id\":\"dave\",\"imei\":\"1\"},"
	                       "{\"imei\":\"2\",\"user_id\":\"eve\"},"
	                       "{\"user\":{\"id\":4711},\"imei\":\"3\"},"
	                       "{\"user_id\":\"zed\",\"imei\":\"4\"}]");
	json_t *j = parse(r);

	cr_assert_eq(json_array_size(j), 2, "%s", r);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "user_id")),
	                 "dave");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 1), "user_id")),
	                 "zed");
	cr_assert_null(strstr(r, "alice"));
	cr_assert_eq(sc.events, 5);
	cr_assert_eq(sc.events_dropped, 3);
	cr_assert_eq(sc.optout_hits[0], 2, "analytics: alice and the numeric id");
	cr_assert_eq(sc.optout_hits[5], 1, "all: eve");
	json_decref(j);
}

Test(optout_scrub, every_event_dropped_is_counted)
{
	run(0, "{\"batch\":[{\"user_id\":\"alice\"},{\"user_id\":\"eve\"}],\"sentAt\":1}");
	cr_assert_eq(sc.events, 2, "a wrapper around events is not an event itself (%u)",
	             sc.events);
	cr_assert_eq(sc.events_dropped, 2, "so the request has nothing left");
	run(0, "{\"batch\":[{\"user_id\":\"alice\"},{\"user_id\":\"bob\"}],\"sentAt\":1}");
	cr_assert_eq(sc.events, 2);
	cr_assert_eq(sc.events_dropped, 1);
	run(0, "{\"user_id\":\"alice\",\"imei\":\"1\"}");
	cr_assert_eq(sc.events, 1);
	cr_assert_eq(sc.events_dropped, 1, "a single event is the whole request");
}

Test(optout_scrub, batch_and_events_arrays)
{
	const char *r =
	        run(0, "{\"context\":{\"imei\":\"9\"},\"events\":[{\"user_id\":\"alice\"},"
	               "{\"user_id\":\"x\",\"lat\":31.2345}],\"batch\":[{\"user_id\":\"eve\"}]}");
	json_t *j = parse(r);

	cr_assert_eq(json_array_size(json_object_get(j, "events")), 1, "%s", r);
	cr_assert_eq(json_array_size(json_object_get(j, "batch")), 0, "%s", r);
	cr_assert_str_neq(json_string_value(json_object_get(json_object_get(j, "context"), "imei")),
	                  "9");
	json_decref(j);
}

Test(optout_scrub, personalization_location_minor)
{
	const char *r =
	        run(0, "[{\"user_id\":\"bob\",\"idfa\":\"f3b8c2d1-6e4a-4c55-9a0b-2d7e8f9a1b3c\","
	               "\"imei\":\"1\",\"lat\":31.2345},"
	               "{\"user_id\":\"lou\",\"idfa\":\"f3b8c2d1-6e4a-4c55-9a0b-2d7e8f9a1b3c\","
	               "\"lat\":31.2345},"
	               "{\"user_id\":\"kid\",\"imei\":\"1\",\"lat\":31.2345,\"idfa\":\"x\"},"
	               "{\"user_id\":\"ann\",\"idfa\":\"y\",\"imei\":\"1\",\"lat\":31.2345}]");
	json_t *j = parse(r), *bob = json_array_get(j, 0), *lou = json_array_get(j, 1),
	       *kid = json_array_get(j, 2), *ann = json_array_get(j, 3);

	cr_assert_null(json_object_get(bob, "idfa"), "personalization drops advertising ids: %s",
	               r);
	cr_assert_not_null(json_object_get(bob, "imei"));
	cr_assert_eq(json_real_value(json_object_get(bob, "lat")), 31.2);
	cr_assert_null(json_object_get(lou, "lat"), "location drops coordinates");
	cr_assert_not_null(json_object_get(lou, "idfa"));
	cr_assert_null(json_object_get(kid, "imei"), "minor: the strict variant drops the IMEI");
	cr_assert_null(json_object_get(kid, "lat"));
	cr_assert_not_null(json_object_get(kid, "idfa"), "strict hashes what it does not name");
	cr_assert_str_neq(json_string_value(json_object_get(kid, "idfa")), "x");
	cr_assert_not_null(json_object_get(ann, "idfa"));
	cr_assert_not_null(json_object_get(ann, "imei"));
	cr_assert_eq(sc.events_dropped, 0);
	json_decref(j);
}

Test(optout_scrub, request_level_user)
{
	const char *r;

	ap_scrub_begin(&sc, ap_conf_ruleset(conf, "r"), 64, 1 << 20);
	sc.req_scopes = AP_SCOPE_PERSONALIZATION;
	ap_scrub_event_begin(&sc, sc.req_scopes);
	{
		bool ch;
		const char *in =
		        "[{\"idfa\":\"a\",\"imei\":\"1\"},{\"user_id\":\"lou\",\"idfa\":\"b\"}]";
		ap_buf_clear(&out);
		cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){in, strlen(in)}, &out, &ch),
		             AP_OK);
		r = strndup(out.p, out.len);
	}
	cr_assert_null(strstr(r, "idfa"), "a request's user covers every event: %s", r);
	free((char *)r);
}

Test(optout_scrub, ndjson_lines)
{
	const char *r = run(1, "{\"user_id\":\"alice\",\"imei\":\"1\"}\n{\"user_id\":\"dave\"}\r\n"
	                       "{\"user_id\":\"eve\"}\n{\"user_id\":\"zed\",\"imei\":\"2\"}\n");

	cr_assert_null(strstr(r, "alice"), "%s", r);
	cr_assert_null(strstr(r, "eve"), "%s", r);
	cr_assert_eq(strncmp(r, "{\"user_id\":\"dave\"}\r\n{\"user_id\":\"zed\",", 37), 0, "%s", r);
	cr_assert_eq(sc.events_dropped, 2);
}

Test(optout_scrub, form_is_one_event)
{
	const char *r = run(2, "uid=alice&imei=1");
	cr_assert_eq(sc.events_dropped, 1);
	cr_assert_eq(sc.events, 1);
	r = run(2, "uid=dave&imei=356938035643809");
	cr_assert_eq(sc.events_dropped, 0);
	cr_assert_null(strstr(r, "356938035643809"));
	r = run(2, "uid=kid&imei=356938035643809&x=1");
	cr_assert_str_eq(r, "uid=kid&x=1", "minor: the strict variant drops the IMEI");
}

Test(optout_scrub, nested_documents_have_events_too)
{
	const char *r = run(
	        0, "{\"blob\":\"[{\\\"user_id\\\":\\\"alice\\\"},{\\\"user_id\\\":\\\"x\\\"}]\"}");
	cr_assert_null(strstr(r, "alice"), "%s", r);
	cr_assert_not_null(strstr(r, "\\\"x\\\""), "%s", r);
}

Test(optout_scrub, no_table_no_change)
{
	const char *r;

	sc.user_scopes = NULL;
	r = run(0, "[{\"user_id\":\"alice\",\"lat\":1}]");
	cr_assert_not_null(strstr(r, "alice"));
	cr_assert_eq(sc.events, 0);
}
