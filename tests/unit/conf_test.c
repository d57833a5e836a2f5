/* The configuration loader's contract: what it accepts and the values it fills in, and
 * that everything else is refused with "<key path>: <problem>" — typos, wrong types,
 * missing keys, bad names, bad bounds, bad files — never with a key's bytes in the text.
 * Also route matching, file names resolved from the configuration's directory, and the
 * default conf/anonproxy.json. Configurations are written with ' for " (see q()). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "action.h"
#include "conf.h"
#include "detect.h"
#include "scrub.h"

/* 32 printable bytes, so that any 8 of them in a row can be looked for in a message. */
#define SECRET "kEyByTeS-must-NEVER-be-printed!!"

static char dir[64];
static char err[AP_CONF_ERR_MAX];

/* Writes <n> bytes to <dir>/<name> with exactly <mode>. */
static void put(const char *name, const void *data, size_t n, mode_t mode)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(write(fd, data, n), (ssize_t)n);
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static void setup(void)
{
	strcpy(dir, "/tmp/apconf.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	put("k.key", SECRET, 32, 0600);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void teardown(void)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(conf, .init = setup, .fini = teardown);

/* <s> with every ' turned into ": JSON without a wall of backslashes. A real ' is written
 * \u0027 in the JSON text. One buffer per call of a ring. */
static const char *q(const char *s)
{
	static char ring[4][16384];
	static int slot;
	char *d = ring[slot++ % 4];
	size_t n = strlen(s);

	cr_assert_lt(n, sizeof(ring[0]));
	for (size_t i = 0; i <= n; i++)
		d[i] = s[i] == '\'' ? '"' : s[i];
	return d;
}

static struct ap_conf *parse(const char *text)
{
	const char *t = q(text);

	return ap_conf_parse(t, strlen(t), dir, err);
}

/* Loads <text> and fails the test with the loader's message if it is refused. */
static struct ap_conf *ok(const char *text)
{
	struct ap_conf *c = parse(text);

	cr_assert_not_null(c, "refused: %s\nconfiguration: %s", err, q(text));
	return c;
}

/* True when no 8 consecutive bytes of SECRET appear in <s>. */
static bool no_secret(const char *s)
{
	for (size_t i = 0; i + 8 <= strlen(SECRET); i++)
		if (memmem(s, strlen(s), SECRET + i, 8))
			return false;
	return true;
}

/* Expects <text> refused with a message containing <want>; goes on with the test either
 * way so a table of cases reports every failure. */
static void refused(const char *text, const char *want)
{
	struct ap_conf *c = parse(text);

	cr_expect_null(c, "accepted, expected \"%s\": %s", want, q(text));
	ap_conf_free(c);
	if (!c) {
		cr_expect(strstr(err, want) != NULL, "message \"%s\" lacks \"%s\"", err, want);
		cr_expect(no_secret(err), "message shows key bytes: %s", err);
	}
}

#define KEYS      "'keys': {'active': 'k', 'files': {'k': 'k.key'}}"
#define ROUTES    "'routes': [{'upstream': 'sink', 'ruleset': 'r'}]"
/* A whole configuration: ruleset "r" holds <rs> (its members, no braces). */
#define RS(rs)    "{" KEYS ", 'rulesets': {'r': {" rs "}}, " ROUTES "}"
/* A whole configuration with more root members <m>. */
#define ROOT(m)   "{" KEYS ", 'rulesets': {'r': {}}, " ROUTES ", " m "}"
/* A whole configuration with the routes <r> (the list's items). */
#define ROUTED(r) "{" KEYS ", 'rulesets': {'r': {}, 's': {}}, 'routes': [" r "]}"
/* A whole configuration with one upstream "u" made of <u> (its members). */
#define UPSTREAM(u)                                                                                \
	"{" KEYS ", 'rulesets': {'r': {}}, 'upstreams': {'u': {" u "}},"                           \
	" 'routes': [{'upstream': 'u', 'ruleset': 'r'}]}"

/* ---- what a valid file gives ---- */

Test(conf, minimal_and_defaults)
{
	struct ap_conf *c = ok(RS(""));
	const struct ap_ruleset *rs = ap_conf_ruleset(c, "r");

	cr_assert_eq(c->nlisten, 1);
	cr_expect_str_eq(c->listen[0], "127.0.0.1:8080");
	cr_expect_eq(c->workers, 0);
	cr_expect_null(c->admin_listen);
	cr_expect_null(c->access_log);
	cr_assert_eq(c->keys.nkeys, 1);
	cr_expect_str_eq(c->keys.keys[c->keys.active].id, "k");
	cr_expect_eq(c->keys.keys[0].len, 32);
	cr_expect_eq(memcmp(c->keys.keys[0].secret, SECRET, 32), 0);
	/* the built-in sink is there without being declared */
	cr_assert_eq(c->nupstreams, 1);
	cr_expect_str_eq(c->upstreams[0].name, "sink");
	cr_expect(c->upstreams[0].sink);
	cr_expect(!c->upstreams[0].sink_log);
	cr_assert_eq(c->nroutes, 1);
	cr_expect_null(c->routes[0].host);
	cr_expect_str_eq(c->routes[0].path, "/");
	cr_expect_eq(c->routes[0].upstream, &c->upstreams[0]);
	cr_expect_eq(c->routes[0].ruleset, rs);
	cr_expect_eq(c->routes[0].unknown, AP_UNKNOWN_REJECT);
	cr_expect_eq(c->routes[0].scope, 0);
	cr_assert_not_null(rs);
	cr_expect(rs->query);
	cr_expect(rs->scrub_keys);
	cr_expect_eq(rs->detect, 0);
	cr_expect_null(rs->strict);
	/* a detected class nobody configured is hashed (hex, full default length) */
	for (int i = 1; i < AP_CLASS_MAX; i++) {
		cr_expect_eq(rs->class_act[i].act, AP_ACT_HASH, "%s", ap_class_name(i));
		cr_expect_eq(rs->class_act[i].fmt, AP_HASH_HEX);
		cr_expect_eq(rs->class_act[i].length, 0);
		cr_expect_eq(rs->class_act[i].cls, i);
	}
	cr_expect_null(ap_conf_ruleset(c, "nope"));
	ap_conf_free(c);
}

/* The limits and their defaults, bounds as documented in docs/configuration.md. */
static const struct {
	const char *name;
	size_t off, min, max, dflt;
} limits[] = {
        {"header_bytes", offsetof(struct ap_limits, header_bytes), 1024, 1 << 20, 16384},
        {"headers", offsetof(struct ap_limits, headers), 8, 256, 100},
        {"uri_bytes", offsetof(struct ap_limits, uri_bytes), 64, 1 << 20, 8192},
        {"body_bytes", offsetof(struct ap_limits, body_bytes), 0, 1u << 30, 1 << 20},
        {"decoded_bytes", offsetof(struct ap_limits, decoded_bytes), 1024, 1u << 30, 8 << 20},
        {"json_depth", offsetof(struct ap_limits, json_depth), 2, 1024, 64},
        {"client_header_timeout_ms", offsetof(struct ap_limits, client_header_timeout_ms), 1,
         3600000, 10000},
        {"client_body_timeout_ms", offsetof(struct ap_limits, client_body_timeout_ms), 1, 3600000,
         30000},
        {"client_idle_timeout_ms", offsetof(struct ap_limits, client_idle_timeout_ms), 1, 3600000,
         60000},
        {"upstream_connect_timeout_ms", offsetof(struct ap_limits, upstream_connect_timeout_ms), 1,
         3600000, 3000},
        {"upstream_response_timeout_ms", offsetof(struct ap_limits, upstream_response_timeout_ms),
         1, 3600000, 30000},
};

static size_t limit_of(const struct ap_conf *c, size_t i)
{
	return *(const size_t *)((const char *)&c->limits + limits[i].off);
}

Test(conf, limits_defaults_and_bounds)
{
	struct ap_conf *c = ok(RS(""));
	char text[1024], want[256];

	cr_expect_eq(sizeof(struct ap_limits), AP_ARRAY_LEN(limits) * sizeof(size_t),
	             "a limit was added: list it here and in docs/configuration.md");
	for (size_t i = 0; i < AP_ARRAY_LEN(limits); i++)
		cr_expect_eq(limit_of(c, i), limits[i].dflt, "default of %s", limits[i].name);
	ap_conf_free(c);
	cr_expect_eq(AP_DEPTH_LIMIT, 1024);
	cr_expect_eq(AP_DEPTH_DEFAULT, 64);

	for (size_t i = 0; i < AP_ARRAY_LEN(limits); i++) {
		const size_t good[] = {limits[i].min, limits[i].max};
		for (int g = 0; g < 2; g++) {
			snprintf(text, sizeof(text), ROOT("'limits': {'%s': %zu}"), limits[i].name,
			         good[g]);
			c = ok(text);
			cr_expect_eq(limit_of(c, i), good[g], "%s", limits[i].name);
			ap_conf_free(c);
		}
		snprintf(want, sizeof(want), "limits.%s: must be an integer from %zu to %zu",
		         limits[i].name, limits[i].min, limits[i].max);
		snprintf(text, sizeof(text), ROOT("'limits': {'%s': %zu}"), limits[i].name,
		         limits[i].max + 1);
		refused(text, want);
		snprintf(text, sizeof(text), ROOT("'limits': {'%s': %lld}"), limits[i].name,
		         (long long)limits[i].min - 1);
		refused(text, want);
		snprintf(text, sizeof(text), ROOT("'limits': {'%s': '100'}"), limits[i].name);
		refused(text, want);
		snprintf(text, sizeof(text), ROOT("'limits': {'%s': 100.5}"), limits[i].name);
		refused(text, want);
	}
	refused(ROOT("'limits': {'body_byte': 10}"), "limits.body_byte: unknown key");
	refused(ROOT("'limits': {'json_depth': 8, 'max_body': 10}"),
	        "limits.max_body: unknown key");
	refused(ROOT("'limits': [1]"), "limits: must be an object");
}

Test(conf, every_key_read)
{
	struct ap_conf *c;
	const struct ap_ruleset *r, *s;
	const struct ap_upstream_conf *u;

	c = ok("{'listen': ['127.0.0.1:8080', '[::1]:8443'], 'workers': 4,"
	       " 'admin': {'listen': '127.0.0.1:9090', 'token_file': 'admin.token'},"
	       " 'access_log': 'off', " KEYS ","
	       " 'limits': {'body_bytes': 1000, 'json_depth': 10},"
	       " 'upstreams': {'api': {'url': 'https://api.example.com:8443', 'ca_file': 'ca.pem',"
	       "   'verify': false, 'pool': 7},"
	       "  'sink': {'sink': true, 'log_bodies': true}},"
	       " 'rulesets': {"
	       "  'r': {'detect': ['imei', 'mac'], 'query': false, 'scan_keys': false,"
	       "   'strict': 's',"
	       "   'classes': {'imei': {'action': 'hash', 'format': 'preserve'}, 'gps': 'drop'},"
	       "   'fields': [{'class': 'imei', 'keys': ['IMEI', 'imei2']},"
	       "    {'class': 'gps', 'keys': ['lat'], 'action': 'round', 'decimals': 3},"
	       "    {'class': 'mac', 'paths': ['$.device.mac', '$.events[*].m'], 'action': 'drop'},"
	       "    {'keys': ['data_list'], 'codec': ['base64', 'gzip', 'json']}],"
	       "   'headers': [{'name': 'X-Device-Id', 'class': 'device_id', 'action': 'mask'},"
	       "    {'name': 'X-Blob', 'codec': ['base64', 'form']}]},"
	       "  's': {}},"
	       " 'routes': [{'host': 'API.example.com', 'path': '/v1/', 'upstream': 'api',"
	       "   'ruleset': 'r', 'scope': ['analytics', 'location'], 'unknown_content': 'scan'},"
	       "  {'host': '*', 'upstream': 'sink', 'ruleset': 's', 'scope': 'all',"
	       "   'unknown_content': 'pass'}]}");
	cr_assert_eq(c->nlisten, 2);
	cr_expect_str_eq(c->listen[1], "[::1]:8443");
	cr_expect_eq(c->workers, 4);
	cr_expect_str_eq(c->admin_listen, "127.0.0.1:9090");
	cr_expect_eq(strncmp(c->admin_token_file, dir, strlen(dir)), 0, "%s", c->admin_token_file);
	cr_expect_str_eq(c->access_log, "off");
	cr_expect_eq(c->limits.body_bytes, 1000);
	cr_expect_eq(c->limits.json_depth, 10);
	cr_expect_eq(c->limits.decoded_bytes, 8 << 20, "unset limits keep their default");

	cr_assert_eq(c->nupstreams, 2, "a declared sink replaces the built-in one");
	u = c->routes[0].upstream;
	cr_expect_str_eq(u->name, "api");
	cr_expect(!u->sink && u->tls && !u->verify);
	cr_expect_str_eq(u->host, "api.example.com");
	cr_expect_str_eq(u->port, "8443");
	cr_expect_eq(u->pool, 7);
	cr_expect_eq(strncmp(u->ca_file, dir, strlen(dir)), 0, "%s", u->ca_file);
	cr_expect(c->routes[1].upstream->sink && c->routes[1].upstream->sink_log);

	r = ap_conf_ruleset(c, "r");
	s = ap_conf_ruleset(c, "s");
	cr_assert(r && s);
	cr_expect_eq(r->strict, s);
	cr_expect_eq(r->detect, AP_DET_IMEI | AP_DET_MAC);
	cr_expect(!r->query && !r->scrub_keys);
	cr_expect_eq(r->class_act[AP_CLASS_IMEI].fmt, AP_HASH_PRESERVE);
	cr_expect_eq(r->class_act[AP_CLASS_GPS].act, AP_ACT_DROP);
	cr_expect_eq(r->class_act[AP_CLASS_MAC].act, AP_ACT_HASH, "unnamed classes are hashed");
	{
		const struct ap_field *f = ap_rules_key(r, "Imei", 4);
		cr_assert_not_null(f, "key names are case-insensitive");
		cr_expect_eq(f->act.act, AP_ACT_HASH);
		cr_expect_eq(f->act.fmt, AP_HASH_PRESERVE, "a field takes its class's action");
		cr_expect_eq(f->act.cls, AP_CLASS_IMEI);
		f = ap_rules_key(r, "lat", 3);
		cr_assert_not_null(f);
		cr_expect_eq(f->act.act, AP_ACT_ROUND, "a field's own action wins");
		cr_expect_eq(f->act.decimals, 3);
		f = ap_rules_key(r, "data_list", 9);
		cr_assert_not_null(f);
		cr_expect_eq(f->act.act, AP_ACT_NONE);
		cr_assert_eq(f->ncodec, 3);
		cr_expect(f->codec[0] == AP_CODEC_BASE64 && f->codec[1] == AP_CODEC_GZIP &&
		          f->codec[2] == AP_CODEC_JSON);
		cr_expect_null(ap_rules_key(r, "mac", 3), "paths are not key names");
		cr_expect_eq(r->npaths, 2);
		cr_expect_eq(r->paths[0].nseg, 2);
		cr_expect_eq(r->fields[r->paths[1].field].act.act, AP_ACT_DROP);
	}
	cr_assert_eq(r->nheaders, 2);
	{
		const struct ap_field *h = ap_rules_header(r, "x-DEVICE-id", 11);
		cr_assert_not_null(h);
		cr_expect_eq(h->act.act, AP_ACT_MASK);
		cr_expect_eq(h->act.length, 4, "mask keeps 4 by default");
		h = ap_rules_header(r, "X-Blob", 6);
		cr_assert_not_null(h);
		cr_expect(h->ncodec == 2 && h->codec[1] == AP_CODEC_FORM);
	}
	cr_expect_str_eq(c->routes[0].host, "API.example.com");
	cr_expect_str_eq(c->routes[0].path, "/v1/");
	cr_expect_eq(c->routes[0].scope, AP_SCOPE_ANALYTICS | AP_SCOPE_LOCATION);
	cr_expect_eq(c->routes[0].unknown, AP_UNKNOWN_SCAN);
	cr_expect_null(c->routes[1].host, "\"*\" is any host");
	cr_expect_eq(c->routes[1].scope, AP_SCOPE_ALL);
	cr_expect_eq(c->routes[1].unknown, AP_UNKNOWN_PASS);
	ap_conf_free(c);
}

Test(conf, action_forms_and_defaults)
{
	struct ap_conf *c =
	        ok(RS("'classes': {'imei': 'hash', 'mac': 'drop', 'ip': 'truncate_ip',"
	              " 'gps': 'round', 'phone': 'mask', 'email': 'keep',"
	              " 'idfa': {'action': 'hash', 'format': 'base64url', 'length': 43,"
	              "  'key_id': true},"
	              " 'gaid': {'action': 'hash', 'format': 'hex', 'length': 4},"
	              " 'oaid': {'action': 'hash', 'format': 'preserve'},"
	              " 'serial': {'action': 'mask', 'keep': 0},"
	              " 'bssid': {'action': 'truncate_ip', 'ipv4_prefix': 8, 'ipv6_prefix': 128},"
	              " 'cell_id': {'action': 'round', 'decimals': 0}}"));
	const struct ap_action *a = ap_conf_ruleset(c, "r")->class_act;

	cr_expect(a[AP_CLASS_IMEI].act == AP_ACT_HASH && a[AP_CLASS_IMEI].fmt == AP_HASH_HEX &&
	          a[AP_CLASS_IMEI].length == 0 && !a[AP_CLASS_IMEI].key_id);
	cr_expect_eq(a[AP_CLASS_MAC].act, AP_ACT_DROP);
	cr_expect(a[AP_CLASS_IP].act == AP_ACT_TRUNCATE_IP && a[AP_CLASS_IP].v4bits == 24 &&
	          a[AP_CLASS_IP].v6bits == 48);
	cr_expect(a[AP_CLASS_GPS].act == AP_ACT_ROUND && a[AP_CLASS_GPS].decimals == 2);
	cr_expect(a[AP_CLASS_PHONE].act == AP_ACT_MASK && a[AP_CLASS_PHONE].length == 4);
	cr_expect_eq(a[AP_CLASS_EMAIL].act, AP_ACT_KEEP);
	cr_expect(a[AP_CLASS_IDFA].fmt == AP_HASH_B64URL && a[AP_CLASS_IDFA].length == 43 &&
	          a[AP_CLASS_IDFA].key_id);
	cr_expect(a[AP_CLASS_GAID].fmt == AP_HASH_HEX && a[AP_CLASS_GAID].length == 4);
	cr_expect_eq(a[AP_CLASS_OAID].fmt, AP_HASH_PRESERVE);
	cr_expect(a[AP_CLASS_SERIAL].act == AP_ACT_MASK && a[AP_CLASS_SERIAL].length == 0);
	cr_expect(a[AP_CLASS_BSSID].v4bits == 8 && a[AP_CLASS_BSSID].v6bits == 128);
	cr_expect(a[AP_CLASS_CELL_ID].act == AP_ACT_ROUND && a[AP_CLASS_CELL_ID].decimals == 0);
	ap_conf_free(c);
}

Test(conf, classes_resolved_before_fields_whatever_the_order)
{
	struct ap_conf *c = ok(RS("'fields': [{'class': 'imei', 'keys': ['imei']}],"
	                          " 'classes': {'imei': 'drop'}"));

	cr_expect_eq(ap_rules_key(ap_conf_ruleset(c, "r"), "imei", 4)->act.act, AP_ACT_DROP);
	ap_conf_free(c);
}

Test(conf, scope_names)
{
	cr_expect_eq(ap_scope_parse("analytics"), AP_SCOPE_ANALYTICS);
	cr_expect_eq(ap_scope_parse("personalization"), AP_SCOPE_PERSONALIZATION);
	cr_expect_eq(ap_scope_parse("push"), AP_SCOPE_PUSH);
	cr_expect_eq(ap_scope_parse("location"), AP_SCOPE_LOCATION);
	cr_expect_eq(ap_scope_parse("minor"), AP_SCOPE_MINOR);
	cr_expect_eq(ap_scope_parse("all"), AP_SCOPE_ALL);
	cr_expect_eq(ap_scope_parse("Analytics"), 0);
	cr_expect_eq(ap_scope_parse(""), 0);
}

/* ---- the exact message ---- */

Test(conf, message_names_key_path_and_problem)
{
	const char *text = "{" KEYS ", 'rulesets': {'analytics': {'fields': ["
	                   " {'class': 'imei', 'keys': ['imei'], 'action': 'hash'},"
	                   " {'class': 'mac', 'keys': ['mac'], 'action': 'drop'},"
	                   " {'class': 'oaid', 'keys': ['oaid'], 'action': 'hsah'}]}},"
	                   " 'routes': [{'upstream': 'sink', 'ruleset': 'analytics'}]}";
	char path[256];
	FILE *f;

	static const char want[] = "rulesets.analytics.fields[2].action: unknown action \"hsah\"";

	cr_assert_null(parse(text));
	cr_expect(strncmp(err, want, strlen(want)) == 0, "%s", err);
	/* ap_conf_load puts the file name in front */
	snprintf(path, sizeof(path), "%s/c.json", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(q(text), f);
	fclose(f);
	cr_assert_null(ap_conf_load(path, err));
	cr_expect(strncmp(err, path, strlen(path)) == 0, "%s", err);
	cr_expect(strstr(err, ": rulesets.analytics.fields[2].action: unknown action \"hsah\"") ==
	                  err + strlen(path),
	          "%s", err);
}

/* ---- refusals ---- */

Test(conf, invalid_json_gives_line_and_column)
{
	refused("{\n 'keys': {},\n 'rulesets': ,\n}", "line 3 column");
	refused("{'keys': {}, }", "line 1 column");
	refused("", "line 1 column 0");
	refused("{'a': 1} x", "end of file expected");
	refused("{'a': tru}", "invalid token");
	refused("[]", "the configuration must be a JSON object");
	refused("42", "line 1");
	refused("'just a string'", "line 1");
}

Test(conf, duplicate_json_keys_refused)
{
	refused("{" KEYS ", " KEYS ", 'rulesets': {'r': {}}, " ROUTES "}", "duplicate object key");
	refused(RS("'query': true, 'query': false"), "duplicate object key");
	refused(RS("'classes': {'imei': 'drop', 'imei': 'hash'}"), "duplicate object key");
	refused("{" KEYS ", 'rulesets': {'r': {}, 'r': {}}, " ROUTES "}", "duplicate object key");
	refused("{'keys': {'active': 'k', 'files': {'k': 'k.key', 'k': 'k.key'}},"
	        " 'rulesets': {'r': {}}, " ROUTES "}",
	        "duplicate object key");
	refused(RS("'fields': [{'class': 'imei', 'class': 'mac', 'keys': ['x'], 'action': "
	           "'drop'}]"),
	        "line 1");
}

/* A misspelt key is an error at every level, never a silent default. */
Test(conf, unknown_keys_at_every_level)
{
	refused(ROOT("'rulset': {}"), "rulset: unknown key");
	refused(ROOT("'Workers': 2"), "Workers: unknown key");
	refused(ROOT("'tls_cert': 'c.pem'"), "tls_cert: unknown key");
	refused("{'keys': {'active': 'k', 'file': {'k': 'k.key'}}, 'rulesets': {'r': {}}, " ROUTES
	        "}",
	        "keys.file: unknown key");
	refused(ROOT("'admin': {'listen': '127.0.0.1:9', 'token_file': 't', 'token': 'x'}"),
	        "admin.token: unknown key");
	refused(ROOT("'limits': {'json_dept': 3}"), "limits.json_dept: unknown key");
	refused(UPSTREAM("'url': 'http://h', 'urll': 'x'"), "upstreams.u.urll: unknown key");
	refused(UPSTREAM("'url': 'http://h', 'timeout': 5"), "upstreams.u.timeout: unknown key");
	refused(RS("'detects': ['imei']"), "rulesets.r.detects: unknown key");
	refused(RS("'scan_key': false"), "rulesets.r.scan_key: unknown key");
	refused(RS("'classes': {'imei': {'action': 'hash', 'formt': 'hex'}}"),
	        "rulesets.r.classes.imei.formt: unknown key");
	refused(RS("'classes': {'imei': {'action': 'hash', 'keys': ['a']}}"),
	        "rulesets.r.classes.imei.keys: unknown key");
	refused(RS("'fields': [{'class': 'imei', 'key': ['imei'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].key: unknown key");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['a'], 'action': 'drop'},"
	           " {'class': 'imei', 'keys': ['b'], 'action': 'drop', 'name': 'x'}]"),
	        "rulesets.r.fields[1].name: unknown key");
	refused(RS("'headers': [{'name': 'X-Id', 'class': 'device_id', 'action': 'drop',"
	           " 'keys': ['x']}]"),
	        "rulesets.r.headers[0].keys: unknown key");
	refused(RS("'headers': [{'name': 'X-Id', 'class': 'device_id', 'action': 'drop',"
	           " 'paths': ['$.x']}]"),
	        "rulesets.r.headers[0].paths: unknown key");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'rulset': 's'}"),
	        "routes[0].rulset: unknown key");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r'},"
	               " {'upstream': 'sink', 'ruleset': 'r', 'prefix': '/x'}"),
	        "routes[1].prefix: unknown key");
}

Test(conf, wrong_types)
{
	refused(ROOT("'workers': '4'"), "workers: must be an integer from 0 to 64");
	refused(ROOT("'workers': -1"), "workers: must be an integer from 0 to 64");
	refused(ROOT("'workers': 257"), "workers: must be an integer from 0 to 64");
	refused(ROOT("'workers': true"), "workers: must be an integer");
	refused(ROOT("'listen': 8080"), "listen: must be \"address:port\" or a list of them");
	refused(ROOT("'listen': []"), "listen: must be \"address:port\" or a list of them");
	refused(ROOT("'listen': ['127.0.0.1:1', 2]"), "listen[1]: must be \"address:port\"");
	refused(ROOT("'access_log': 1"), "access_log: must be a non-empty string");
	refused(ROOT("'access_log': ''"), "access_log: must be a non-empty string");
	refused(ROOT("'admin': 'x'"), "admin: must be an object");
	refused("{'keys': [], 'rulesets': {'r': {}}, " ROUTES "}", "keys: must be an object");
	refused("{'keys': {'active': 1, 'files': {'k': 'k.key'}}, 'rulesets': {'r': {}}, " ROUTES
	        "}",
	        "keys.active: must be a non-empty string");
	refused("{'keys': {'active': 'k', 'files': ['k.key']}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.files: must map key ids to key files");
	refused("{'keys': {'active': 'k', 'files': {}}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.files: must map key ids to key files");
	refused("{'keys': {'active': 'k', 'files': {'k': 5}}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.files.k: must be a file name");
	refused("{" KEYS ", 'upstreams': [], 'rulesets': {'r': {}}, " ROUTES "}",
	        "upstreams: must map names to upstreams");
	refused(UPSTREAM("'url': 5"), "upstreams.u.url: must be a non-empty string");
	refused(UPSTREAM("'url': 'http://h', 'verify': 'no'"),
	        "upstreams.u.verify: must be true or false");
	refused(UPSTREAM("'url': 'http://h', 'pool': 4097"),
	        "upstreams.u.pool: must be an integer from 0 to 4096");
	refused(UPSTREAM("'sink': 1"), "upstreams.u.sink: must be true or false");
	refused("{" KEYS ", 'upstreams': {'u': 'http://h'}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "upstreams.u: must be an object");
	refused("{" KEYS ", 'rulesets': {'r': []}, " ROUTES "}", "rulesets.r: must be an object");
	refused(RS("'query': 'yes'"), "rulesets.r.query: must be true or false");
	refused(RS("'scan_keys': 0"), "rulesets.r.scan_keys: must be true or false");
	refused(RS("'detect': 'imei'"), "rulesets.r.detect: must be a list of detectors");
	refused(RS("'detect': [1]"), "rulesets.r.detect[0]: unknown detector");
	refused(RS("'classes': []"), "rulesets.r.classes: must be an object");
	refused(RS("'classes': {'imei': 5}"),
	        "rulesets.r.classes.imei: must be an action name or an action object");
	refused(RS("'classes': {'imei': {'action': 5}}"),
	        "rulesets.r.classes.imei.action: must be a non-empty string");
	refused(RS("'classes': {'imei': {'action': 'hash', 'key_id': 'yes'}}"),
	        "rulesets.r.classes.imei.key_id: must be true or false");
	refused(RS("'classes': {'imei': {'action': 'hash', 'length': '8'}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 64");
	refused(RS("'fields': {}"), "rulesets.r.fields: must be a list");
	refused(RS("'fields': ['imei']"), "rulesets.r.fields[0]: must be an object");
	refused(RS("'fields': [{'class': 'imei', 'keys': 'imei', 'action': 'drop'}]"),
	        "rulesets.r.fields[0]: \"keys\" and \"paths\" are lists");
	refused(RS("'fields': [{'class': 'imei', 'paths': '$.imei', 'action': 'drop'}]"),
	        "rulesets.r.fields[0]: \"keys\" and \"paths\" are lists");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['a', 1], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].keys[1]: must be a string");
	refused(RS("'fields': [{'class': 'imei', 'paths': [null], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].paths[0]: must be a string");
	refused(RS("'fields': [{'class': 5, 'keys': ['a'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].class: must be a non-empty string");
	refused(RS("'fields': [{'keys': ['a'], 'codec': 'json'}]"),
	        "rulesets.r.fields[0].codec: must be a list of 1 to 6 codecs");
	refused(RS("'fields': [{'keys': ['a'], 'codec': [5]}]"),
	        "rulesets.r.fields[0].codec[0]: unknown codec");
	refused(RS("'headers': {}"), "rulesets.r.headers: must be a list");
	refused(RS("'headers': [{'name': 5, 'class': 'ip', 'action': 'drop'}]"),
	        "rulesets.r.headers[0].name: must be a non-empty string");
	refused(RS("'strict': 5"), "rulesets.r.strict: must be a non-empty string");
	refused("{" KEYS ", 'rulesets': {'r': {}}, 'routes': {}}",
	        "routes: required: at least one route");
	refused(ROUTED("'r'"), "routes[0]: must be an object");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'host': 1}"),
	        "routes[0].host: must be a non-empty string");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'path': ''}"),
	        "routes[0].path: must be a non-empty string");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'scope': 3}"),
	        "routes[0].scope: must be a scope name or a list of them");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'scope': [3]}"),
	        "routes[0].scope: unknown scope");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'unknown_content': true}"),
	        "routes[0].unknown_content: must be a non-empty string");
}

Test(conf, missing_required_keys)
{
	refused("{'rulesets': {'r': {}}, " ROUTES "}", "keys: required");
	refused("{'keys': {'files': {'k': 'k.key'}}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.active: required");
	refused("{'keys': {'active': 'k'}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.files: required");
	refused("{" KEYS ", " ROUTES "}", "rulesets: required: at least one named ruleset");
	refused("{" KEYS ", 'rulesets': {}, " ROUTES "}",
	        "rulesets: required: at least one named ruleset");
	refused("{" KEYS ", 'rulesets': {'r': {}}}", "routes: required: at least one route");
	refused("{" KEYS ", 'rulesets': {'r': {}}, 'routes': []}",
	        "routes: required: at least one route");
	refused(ROUTED("{'ruleset': 'r'}"), "routes[0].upstream: required");
	refused(ROUTED("{'upstream': 'sink'}"), "routes[0].ruleset: required");
	refused(UPSTREAM("'ca_file': 'ca.pem'"), "upstreams.u.url: required");
	refused(UPSTREAM(""), "upstreams.u.url: required");
	refused(ROOT("'admin': {'listen': '127.0.0.1:9090'}"), "admin.token_file: required");
	refused(ROOT("'admin': {'token_file': 't'}"), "admin.listen: required");
	refused(RS("'fields': [{'keys': ['imei'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].class: required (or a codec)");
	refused(RS("'headers': [{'class': 'ip', 'action': 'drop'}]"),
	        "rulesets.r.headers[0].name: required");
	refused(RS("'headers': [{'name': 'X-Id'}]"), "rulesets.r.headers[0].class: required");
	refused(RS("'classes': {'imei': {'format': 'hex'}}"),
	        "rulesets.r.classes.imei.action: required");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['imei'], 'format': 'preserve'}]"),
	        "rulesets.r.fields[0].action: required");
	/* a class with no action here nor in "classes" */
	refused(RS("'fields': [{'class': 'imei', 'keys': ['imei']}]"),
	        "rulesets.r.fields[0]: no action: give one here or in classes.imei");
	refused(RS("'fields': [{'class': 'imei', 'action': 'drop'}]"),
	        "rulesets.r.fields[0]: needs \"keys\" or \"paths\"");
	refused(RS("'classes': {'imei': 'drop'}, 'fields': [{'class': 'imei'}]"),
	        "rulesets.r.fields[0]: needs \"keys\" or \"paths\"");
}

Test(conf, unknown_names)
{
	refused(RS("'classes': {'imie': 'drop'}"),
	        "rulesets.r.classes.imie: unknown identifier class");
	refused(RS("'classes': {'none': 'drop'}"),
	        "rulesets.r.classes.none: unknown identifier class");
	refused(RS("'classes': {'IMEI': 'drop'}"),
	        "rulesets.r.classes.IMEI: unknown identifier class");
	refused(RS("'fields': [{'class': 'wifi', 'keys': ['x'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].class: unknown identifier class \"wifi\"");
	refused(RS("'detect': ['imei', 'oaid']"),
	        "rulesets.r.detect[1]: unknown detector (imei, imsi, iccid, mac, uuid, ip, "
	        "phone, email)");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['base64', 'zip', 'json']}]"),
	        "rulesets.r.fields[0].codec[1]: unknown codec \"zip\"");
	refused(RS("'classes': {'imei': 'hsah'}"),
	        "rulesets.r.classes.imei: unknown action \"hsah\" (drop, hash, mask, "
	        "truncate_ip, round, keep)");
	refused(RS("'classes': {'imei': 'none'}"), "rulesets.r.classes.imei: unknown action");
	refused(RS("'classes': {'imei': {'action': 'hash', 'format': 'base64'}}"),
	        "rulesets.r.classes.imei.format: unknown format \"base64\" (hex, base64url, "
	        "preserve)");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'scope': 'ads'}"),
	        "routes[0].scope: unknown scope (analytics, personalization, push, location, "
	        "minor, all)");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'scope': ['push', 'ads']}"),
	        "routes[0].scope: unknown scope");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'unknown_content': 'drop'}"),
	        "routes[0].unknown_content: must be reject, pass or scan");
}

Test(conf, codec_chains)
{
	struct ap_conf *c;

	refused(RS("'fields': [{'keys': ['x'], 'codec': ['json', 'base64']}]"),
	        "rulesets.r.fields[0].codec[0]: json, ndjson, form, pairs and protobuf can only "
	        "come last");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['base64', 'gzip']}]"),
	        "rulesets.r.fields[0].codec[1]: the last codec must be json, ndjson, form, pairs "
	        "or protobuf");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['json', 'json']}]"),
	        "rulesets.r.fields[0].codec[0]: json, ndjson, form, pairs and protobuf can only "
	        "come last");
	refused(RS("'fields': [{'keys': ['x'], 'codec': []}]"),
	        "rulesets.r.fields[0].codec: must be a list of 1 to 6 codecs");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['base64', 'base64', 'base64', 'gzip',"
	           " 'deflate', 'gzip', 'json']}]"),
	        "rulesets.r.fields[0].codec: must be a list of 1 to 6 codecs");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['json'], 'class': 'imei'}]"),
	        "rulesets.r.fields[0]: an entry has either a codec or a class and action, not "
	        "both");
	refused(RS("'fields': [{'keys': ['x'], 'codec': ['json'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0]: an entry has either a codec or a class and action");
	refused(RS("'headers': [{'name': 'X-A', 'codec': ['json'], 'format': 'hex'}]"),
	        "rulesets.r.headers[0]: an entry has either a codec or a class and action");
	c = ok(RS("'fields': [{'keys': ['a'], 'codec': ['json']},"
	          " {'keys': ['b'], 'codec': ['ndjson']}, {'keys': ['c'], 'codec': ['form']},"
	          " {'keys': ['d'], 'codec': ['deflate', 'base64', 'gzip', 'base64', 'gzip',"
	          "  'json']}]"));
	cr_expect_eq(ap_rules_key(ap_conf_ruleset(c, "r"), "d", 1)->ncodec, 6);
	ap_conf_free(c);
}

Test(conf, parameters_belong_to_one_action)
{
	refused(RS("'classes': {'imei': {'action': 'hash', 'decimals': 2}}"),
	        "rulesets.r.classes.imei.decimals: applies to action \"round\" only");
	refused(RS("'classes': {'imei': {'action': 'drop', 'format': 'hex'}}"),
	        "rulesets.r.classes.imei.format: applies to action \"hash\" only");
	refused(RS("'classes': {'imei': {'action': 'hash', 'keep': 4}}"),
	        "rulesets.r.classes.imei.keep: applies to action \"mask\" only");
	refused(RS("'classes': {'phone': {'action': 'mask', 'length': 4}}"),
	        "rulesets.r.classes.phone.length: applies to action \"hash\" only");
	refused(RS("'classes': {'gps': {'action': 'round', 'ipv4_prefix': 24}}"),
	        "rulesets.r.classes.gps.ipv4_prefix: applies to action \"truncate_ip\" only");
	refused(RS("'classes': {'ip': {'action': 'truncate_ip', 'decimals': 1}}"),
	        "rulesets.r.classes.ip.decimals: applies to action \"round\" only");
	refused(RS("'classes': {'ip': {'action': 'keep', 'ipv6_prefix': 48}}"),
	        "rulesets.r.classes.ip.ipv6_prefix: applies to action \"truncate_ip\" only");
	refused(RS("'classes': {'imei': {'action': 'mask', 'key_id': true}}"),
	        "rulesets.r.classes.imei.key_id: applies to action \"hash\" only");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['a'], 'action': 'hash', 'decimals': 2}]"),
	        "rulesets.r.fields[0].decimals: applies to action \"round\" only");
	refused(RS("'headers': [{'name': 'X-A', 'class': 'ip', 'action': 'drop', 'keep': 2}]"),
	        "rulesets.r.headers[0].keep: applies to action \"mask\" only");
	/* preserve keeps the input's length and cannot carry a prefix */
	refused(RS("'classes': {'imei': {'action': 'hash', 'format': 'preserve', 'length': 16}}"),
	        "rulesets.r.classes.imei.length: a preserve-format hash has the length of its "
	        "input");
	refused(RS("'classes': {'imei': {'action': 'hash', 'format': 'preserve', 'key_id': true}}"),
	        "rulesets.r.classes.imei.key_id: a preserve-format hash cannot carry a key id "
	        "prefix");
}

Test(conf, parameter_bounds)
{
	struct ap_conf *c;

	refused(RS("'classes': {'imei': {'action': 'hash', 'length': 3}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 64");
	refused(RS("'classes': {'imei': {'action': 'hash', 'length': 65}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 64");
	refused(RS("'classes': {'imei': {'action': 'hash', 'format': 'hex', 'length': 0}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 64");
	refused(RS("'classes': {'imei': {'action': 'hash', 'format': 'base64url', 'length': 44}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 43");
	refused(RS("'classes': {'imei': {'action': 'hash', 'length': 16.0}}"),
	        "rulesets.r.classes.imei.length: must be an integer from 4 to 64");
	refused(RS("'classes': {'phone': {'action': 'mask', 'keep': 65}}"),
	        "rulesets.r.classes.phone.keep: must be an integer from 0 to 64");
	refused(RS("'classes': {'phone': {'action': 'mask', 'keep': -1}}"),
	        "rulesets.r.classes.phone.keep: must be an integer from 0 to 64");
	refused(RS("'classes': {'gps': {'action': 'round', 'decimals': 11}}"),
	        "rulesets.r.classes.gps.decimals: must be an integer from 0 to 10");
	refused(RS("'classes': {'ip': {'action': 'truncate_ip', 'ipv4_prefix': 33}}"),
	        "rulesets.r.classes.ip.ipv4_prefix: must be an integer from 0 to 32");
	refused(RS("'classes': {'ip': {'action': 'truncate_ip', 'ipv6_prefix': 129}}"),
	        "rulesets.r.classes.ip.ipv6_prefix: must be an integer from 0 to 128");
	c = ok(RS("'classes': {'imei': {'action': 'hash', 'length': 64},"
	          " 'mac': {'action': 'hash', 'format': 'base64url', 'length': 4},"
	          " 'phone': {'action': 'mask', 'keep': 64}, 'gps': {'action': 'round',"
	          " 'decimals': 10}, 'ip': {'action': 'truncate_ip', 'ipv4_prefix': 32,"
	          " 'ipv6_prefix': 128}}"));
	cr_expect_eq(ap_conf_ruleset(c, "r")->class_act[AP_CLASS_IMEI].length, 64);
	cr_expect_eq(ap_conf_ruleset(c, "r")->class_act[AP_CLASS_MAC].length, 4);
	ap_conf_free(c);
}

Test(conf, key_names)
{
	char text[1024], name[80];
	struct ap_conf *c;

	refused(RS("'fields': [{'class': 'imei', 'keys': ['imei', 'imei'], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].keys[1]: key listed twice in this ruleset");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['imei'], 'action': 'drop'},"
	           " {'class': 'mac', 'keys': ['mac', 'IMEI'], 'action': 'drop'}]"),
	        "rulesets.r.fields[1].keys[1]: key listed twice in this ruleset");
	refused(RS("'fields': [{'class': 'imei', 'keys': ['imei'], 'action': 'drop'},"
	           " {'keys': ['Imei'], 'codec': ['json']}]"),
	        "rulesets.r.fields[1].keys[0]: key listed twice in this ruleset");
	refused(RS("'fields': [{'class': 'imei', 'keys': [''], 'action': 'drop'}]"),
	        "rulesets.r.fields[0].keys[0]: empty key name");
	memset(name, 'k', 64);
	name[64] = 0;
	snprintf(text, sizeof(text),
	         RS("'fields': [{'class': 'imei', 'keys': ['%s'], 'action': 'drop'}]"), name);
	refused(text, "rulesets.r.fields[0].keys[0]: key name longer than 63 bytes");
	name[63] = 0;
	snprintf(text, sizeof(text),
	         RS("'fields': [{'class': 'imei', 'keys': ['%s'], 'action': 'drop'}]"), name);
	c = ok(text);
	cr_expect_not_null(ap_rules_key(ap_conf_ruleset(c, "r"), name, 63));
	ap_conf_free(c);
	/* the same key in two rulesets is fine */
	c = ok("{" KEYS ", 'rulesets': {"
	       " 'r': {'fields': [{'class': 'imei', 'keys': ['imei'], 'action': 'drop'}]},"
	       " 's': {'fields': [{'class': 'imei', 'keys': ['imei'], 'action': 'hash'}]}},"
	       " " ROUTES "}");
	ap_conf_free(c);
}

Test(conf, header_rules)
{
	char text[8192], name[80];
	size_t n;
	struct ap_conf *c;

	refused(RS("'headers': [{'name': 'X-Device-Id', 'class': 'device_id', 'action': 'drop'},"
	           " {'name': 'x-device-id', 'class': 'device_id', 'action': 'hash'}]"),
	        "rulesets.r.headers[1]: header listed twice");
	memset(name, 'h', 64);
	name[64] = 0;
	snprintf(text, sizeof(text),
	         RS("'headers': [{'name': '%s', 'class': 'ip', 'action': 'drop'}]"), name);
	refused(text, "rulesets.r.headers[0]: header name longer than 63 bytes");
	/* 32 headers at most */
	for (int lim = 32; lim <= 33; lim++) {
		n = (size_t)snprintf(text, sizeof(text),
		                     "{" KEYS ", 'rulesets': {'r': {'headers': [");
		for (int i = 0; i < lim; i++)
			n += (size_t)snprintf(
			        text + n, sizeof(text) - n,
			        "%s{'name': 'X-H%d', 'class': 'ip', 'action': 'drop'}",
			        i ? ", " : "", i);
		snprintf(text + n, sizeof(text) - n, "]}}, " ROUTES "}");
		if (lim == 32) {
			c = ok(text);
			cr_expect_eq(ap_conf_ruleset(c, "r")->nheaders, 32);
			ap_conf_free(c);
		} else
			refused(text, "rulesets.r.headers: at most 32 headers");
	}
}

Test(conf, json_paths)
{
	char text[8192];
	size_t n;
	struct ap_conf *c;
	static const struct {
		const char *path, *why;
	} bad[] = {
	        {"a.b", "a path starts with '$'"},
	        {"$.", "empty path segment"},
	        {"$", "a path must name at least one step below '$'"},
	        {"$[x]", "expected .name, .*, [*], [n] or ['name']"},
	        {"$a", "expected .name, .*, [*], [n] or ['name']"},
	        {"$[\\u0027unterminated", "unterminated ['name'] segment"},
	        {"$[\\u0027a\\u0027", "unterminated ['name'] segment"},
	        {"$[\\u0027\\u0027]", "empty path segment"},
	        {"$[1", "bad [index] segment"},
	        {"$[99999999999]", "bad [index] segment"},
	        {"$..a", "empty path segment"},
	        {"$.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q", "path has more than 16 segments"},
	};

	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		char want[256];
		snprintf(text, sizeof(text),
		         RS("'fields': [{'class': 'mac', 'keys': ['m'], 'action': 'drop'},"
		            " {'class': 'imei', 'paths': ['$.ok', '%s'], 'action': 'drop'}]"),
		         bad[i].path);
		snprintf(want, sizeof(want), "rulesets.r.fields[1].paths[1]: %s", bad[i].why);
		refused(text, want);
	}
	c = ok(RS("'fields': [{'class': 'imei', 'paths': ['$.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p',"
	          " '$[0].x', '$.events[*].props.*', '$[\\u0027odd key.with dots\\u0027]',"
	          " '$.a[4294967295]'], 'action': 'drop'}]"));
	cr_expect_eq(ap_conf_ruleset(c, "r")->npaths, 5);
	cr_expect_eq(ap_conf_ruleset(c, "r")->paths[3].seg[0].len, 17);
	ap_conf_free(c);

	/* 64 paths in one ruleset, spread over fields; the 65th is refused */
	for (int lim = 64; lim <= 65; lim++) {
		n = (size_t)snprintf(text, sizeof(text),
		                     "{" KEYS ", 'rulesets': {'r': {'fields': [");
		for (int i = 0; i < lim; i++)
			n += (size_t)snprintf(
			        text + n, sizeof(text) - n,
			        "%s{'class': 'imei', 'paths': ['$.p%d'], 'action': 'drop'}",
			        i ? ", " : "", i);
		snprintf(text + n, sizeof(text) - n, "]}}, " ROUTES "}");
		if (lim == 64) {
			c = ok(text);
			cr_expect_eq(ap_conf_ruleset(c, "r")->npaths, 64);
			cr_expect_eq(ap_rules_path_root(ap_conf_ruleset(c, "r")), ~0ull);
			ap_conf_free(c);
		} else
			refused(text, "rulesets.r.fields: at most 64 paths in one ruleset");
	}
}

Test(conf, references_between_sections)
{
	refused("{" KEYS ", 'rulesets': {'r': {'strict': 'minor'}}, " ROUTES "}",
	        "rulesets.r.strict: no ruleset named \"minor\"");
	refused(ROUTED("{'upstream': 'api', 'ruleset': 'r'}"),
	        "routes[0].upstream: no upstream named \"api\"");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r'}, {'upstream': 'sink', 'ruleset': "
	               "'x'}"),
	        "routes[1].ruleset: no ruleset named \"x\"");
	refused(ROUTED("{'upstream': 'sink', 'ruleset': 'r', 'path': 'v1'}"),
	        "routes[0].path: a path prefix starts with '/'");
	/* a ruleset may name itself or another as its strict variant */
	ap_conf_free(ok("{" KEYS ", 'rulesets': {'r': {'strict': 'r'}}, " ROUTES "}"));
}

Test(conf, upstream_urls)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
	        {"example.com", "must start with http:// or https://"},
	        {"ftp://example.com", "must start with http:// or https://"},
	        {"HTTP://example.com", "must start with http:// or https://"},
	        {"http://", "no host"},
	        {"http://:8080", "no host"},
	        {"http://example.com/ingest", "an upstream URL has no path"},
	        {"http://example.com:8080/v1/", "an upstream URL has no path"},
	        {"http://example.com:", "bad port"},
	        {"http://example.com:0", "bad port"},
	        {"http://example.com:65536", "bad port"},
	        {"http://example.com:123456", "bad port"},
	        {"http://example.com:80x", "bad port"},
	        {"http://example.com:-1", "bad port"},
	        {"http://[::1", "unterminated [IPv6] host"},
	        {"http://[::1]x", "bad host"},
	        {"http://[]:80", "bad host"},
	        {"http://user@example.com", "bad host"},
	        {"http://example.com?x=1", "bad host"},
	        {"http://example.com#f", "bad host"},
	        {"http://exa mple.com", "bad host"},
	};
	static const struct {
		const char *url, *host, *port;
		bool tls;
	} good[] = {
	        {"http://example.com", "example.com", "80", false},
	        {"https://example.com", "example.com", "443", true},
	        {"https://example.com/", "example.com", "443", true},
	        {"http://example.com:8080", "example.com", "8080", false},
	        {"http://10.0.0.1:1", "10.0.0.1", "1", false},
	        {"https://[::1]:8443", "::1", "8443", true},
	        {"http://[2001:db8::1]", "2001:db8::1", "80", false},
	        {"http://h:65535/", "h", "65535", false},
	};
	char text[1024], want[256];
	struct ap_conf *c;

	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		snprintf(text, sizeof(text), UPSTREAM("'url': '%s'"), bad[i].url);
		snprintf(want, sizeof(want), "upstreams.u.url: %s", bad[i].why);
		refused(text, want);
	}
	for (size_t i = 0; i < AP_ARRAY_LEN(good); i++) {
		snprintf(text, sizeof(text), UPSTREAM("'url': '%s'"), good[i].url);
		c = ok(text);
		cr_expect_str_eq(c->upstreams[0].host, good[i].host, "%s", good[i].url);
		cr_expect_str_eq(c->upstreams[0].port, good[i].port, "%s", good[i].url);
		cr_expect_eq(c->upstreams[0].tls, good[i].tls, "%s", good[i].url);
		cr_expect(c->upstreams[0].verify, "verification is on by default");
		cr_expect_eq(c->upstreams[0].pool, 32);
		cr_expect_null(c->upstreams[0].ca_file);
		ap_conf_free(c);
	}
	/* settings that mean nothing where they are */
	refused(UPSTREAM("'sink': true, 'url': 'http://h'"), "upstreams.u.url: a sink has no url");
	refused(UPSTREAM("'sink': true, 'verify': false"), "upstreams.u.verify: a sink has no url");
	refused(UPSTREAM("'sink': true, 'pool': 2"), "upstreams.u.pool: a sink has no url");
	refused(UPSTREAM("'sink': true, 'ca_file': 'ca.pem'"),
	        "upstreams.u.ca_file: a sink has no url");
	refused(UPSTREAM("'url': 'http://h', 'log_bodies': true"),
	        "upstreams.u.log_bodies: applies to a sink only");
	c = ok(UPSTREAM("'sink': false, 'url': 'http://h'"));
	cr_expect(!c->upstreams[0].sink);
	ap_conf_free(c);
}

Test(conf, listen_addresses)
{
	static const char *const bad[] = {
	        "8080",     ":8080",           "127.0.0.1",    "127.0.0.1:",
	        "host:0",   "host:65536",      "host:80a",     "host:0000080808",
	        "::1",      "[::1]",           "[::1]8080",    "[]:8080",
	        "::1:8080", "127.0.0.1: 8080", "127.0.0.1:-1",
	};
	static const char *const good[] = {"127.0.0.1:8080", "0.0.0.0:1", "localhost:65535",
	                                   "[::1]:8080", "[::]:80"};
	char text[1024], want[256];
	struct ap_conf *c;

	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		snprintf(text, sizeof(text), ROOT("'listen': '%s'"), bad[i]);
		snprintf(want, sizeof(want), "listen: \"%s\" is not address:port", bad[i]);
		refused(text, want);
	}
	refused(ROOT("'listen': ['127.0.0.1:1', 'x']"), "listen: \"x\" is not address:port");
	for (size_t i = 0; i < AP_ARRAY_LEN(good); i++) {
		snprintf(text, sizeof(text), ROOT("'listen': '%s'"), good[i]);
		c = ok(text);
		cr_expect_str_eq(c->listen[0], good[i]);
		ap_conf_free(c);
	}
}

Test(conf, route_hosts)
{
	static const char *const bad[] = {
	        "api.example.com:443",    "*.example.com", "api.example.com/v1",
	        "http://api.example.com", "[::1]:80",      "a b"};
	char text[1024];

	for (size_t i = 0; i < AP_ARRAY_LEN(bad); i++) {
		snprintf(text, sizeof(text),
		         ROUTED("{'host': '%s', 'upstream': 'sink', 'ruleset': "
		                "'r'}"),
		         bad[i]);
		refused(text, "routes[0].host: a host name without port, path or wildcard");
	}
	ap_conf_free(ok(ROUTED("{'host': '[::1]', 'upstream': 'sink', 'ruleset': 'r'},"
	                       " {'host': 'Api-1.Example_x.COM', 'upstream': 'sink', 'ruleset': "
	                       "'r'}")));
}

/* ---- key files ---- */

#define KEYFILE(file)                                                                              \
	"{'keys': {'active': 'k', 'files': {'k': '" file "'}}, 'rulesets': {'r': {}}, " ROUTES "}"

Test(conf, key_files)
{
	char want[512];
	struct ap_conf *c;

	put("open.key", SECRET, 32, 0644);
	snprintf(want, sizeof(want),
	         "keys.files.k: key k (%s/open.key): readable by others (mode 0644); chmod 600 it",
	         dir);
	refused(KEYFILE("open.key"), want);
	put("other.key", SECRET, 32, 0602);
	refused(KEYFILE("other.key"), "other.key): accessible by others (mode 0602)");
	/* group bits are allowed: a group the proxy runs in may share the secret */
	put("group.key", SECRET, 32, 0640);
	ap_conf_free(ok(KEYFILE("group.key")));

	snprintf(want, sizeof(want), "keys.files.k: key k (%s/missing.key): cannot open", dir);
	refused(KEYFILE("missing.key"), want);
	put("short.key", SECRET, 15, 0600);
	refused(KEYFILE("short.key"), "short.key): too short (15 bytes, at least 16)");
	put("spaces.key", SECRET "\n\n  \t", 36, 0600);
	c = ok(KEYFILE("spaces.key"));
	cr_expect_eq(c->keys.keys[0].len, 32, "trailing white space is not key material");
	ap_conf_free(c);
	{
		char big[300];
		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = SECRET[i % 32];
		put("long.key", big, sizeof(big), 0600);
		refused(KEYFILE("long.key"), "long.key): too long (300 bytes, at most 256)");
	}
	refused(KEYFILE("."), "not a regular file");

	refused("{'keys': {'active': 'k2', 'files': {'k': 'k.key'}}, 'rulesets': {'r': {}}, " ROUTES
	        "}",
	        "keys.active: \"k2\" is not one of the key ids in keys.files");
	refused("{'keys': {'active': 'a b', 'files': {'a b': 'k.key'}}, 'rulesets': {'r': "
	        "{}}, " ROUTES "}",
	        "keys.files.a b: key (");
	refused("{'keys': {'active': 'a', 'files': {'a': 'k.key', 'b': 'k.key', 'c': 'k.key',"
	        " 'd': 'k.key', 'e': 'k.key', 'f': 'k.key', 'g': 'k.key', 'h': 'k.key',"
	        " 'i': 'k.key'}}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "keys.files: at most 8 keys");
	/* rotation: several keys, one active */
	put("old.key", "0123456789abcdef0123", 20, 0600);
	c = ok("{'keys': {'active': 'new', 'files': {'old': 'old.key', 'new': 'k.key'}},"
	       " 'rulesets': {'r': {}}, " ROUTES "}");
	cr_expect_eq(c->keys.nkeys, 2);
	cr_expect_str_eq(c->keys.keys[c->keys.active].id, "new");
	cr_expect_eq(c->keys.keys[c->keys.active].len, 32);
	ap_conf_free(c);
}

/* Whatever goes wrong, the message never holds key material: not when the key file is
 * refused, not when something after the keys is wrong, and not when the key file itself
 * is given as the configuration (jansson quotes the text near a syntax error). */
Test(conf, messages_never_show_key_bytes)
{
	char path[256];
	struct ap_conf *c;

	put("open.key", SECRET, 32, 0644);
	refused(KEYFILE("open.key"), "readable by others");
	put("short.key", SECRET, 12, 0600);
	refused(KEYFILE("short.key"), "too short");
	refused("{" KEYS ", 'rulesets': {'r': {}}, 'routes': [{'upstream': 'x', 'ruleset': 'r'}]}",
	        "no upstream named");

	snprintf(path, sizeof(path), "%s/k.key", dir);
	c = ap_conf_load(path, err);
	cr_assert_null(c);
	cr_expect(no_secret(err), "%s", err);
	cr_expect(strstr(err, "line 1 column") != NULL, "%s", err);

	/* the same for a binary key: not even one of its bytes in hex */
	put("bin.key", "\x8e\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 16,
	    0600);
	snprintf(path, sizeof(path), "%s/bin.key", dir);
	cr_assert_null(ap_conf_load(path, err));
	/* after the file name, which is random */
	cr_expect(strstr(err + strlen(path), "8e") == NULL, "%s", err);
	cr_expect(strstr(err + strlen(path), "8E") == NULL, "%s", err);
	cr_expect(strstr(err, "not UTF-8") != NULL, "%s", err);
	put("ctl.key", "{\"a\": \"\x01secret\"}", 16, 0600);
	snprintf(path, sizeof(path), "%s/ctl.key", dir);
	cr_assert_null(ap_conf_load(path, err));
	cr_expect(strstr(err + strlen(path), "0x") == NULL, "%s", err);
	cr_expect(strstr(err, "secret") == NULL, "%s", err);
}

/* ---- files resolved from the configuration's directory ---- */

static void write_text(const char *rel, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(q(text), f);
	fclose(f);
}

Test(conf, relative_files_resolved_from_the_config_directory)
{
	char path[256], cwd[512], want[512];
	struct ap_conf *c;

	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	snprintf(path, sizeof(path), "%s/etc", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	put("etc/k.key", SECRET, 32, 0600);
	write_text("etc/c.json",
	           "{'keys': {'active': 'k', 'files': {'k': 'k.key', 'up': '../old.key'}},"
	           " 'admin': {'listen': '127.0.0.1:9', 'token_file': 'admin.token'},"
	           " 'access_log': 'log/access.log',"
	           " 'upstreams': {'u': {'url': 'https://h', 'ca_file': 'ca.pem'}},"
	           " 'rulesets': {'r': {}}, 'routes': [{'upstream': 'u', 'ruleset': 'r'}]}");
	put("old.key", "0123456789abcdef0123", 20, 0600);

	/* from anywhere, by absolute path */
	cr_assert_eq(chdir("/"), 0);
	snprintf(path, sizeof(path), "%s/etc/c.json", dir);
	c = ap_conf_load(path, err);
	cr_assert_not_null(c, "%s", err);
	cr_expect_str_eq(c->path, path);
	cr_expect_eq(memcmp(c->keys.keys[c->keys.active].secret, SECRET, 32), 0);
	cr_expect_eq(c->keys.keys[1].len, 20, "'../old.key' is next to etc/");
	snprintf(want, sizeof(want), "%s/etc/admin.token", dir);
	cr_expect_str_eq(c->admin_token_file, want);
	snprintf(want, sizeof(want), "%s/etc/ca.pem", dir);
	cr_expect_str_eq(c->upstreams[0].ca_file, want);
	snprintf(want, sizeof(want), "%s/etc/log/access.log", dir);
	cr_expect_str_eq(c->access_log, want);
	ap_conf_free(c);

	/* by a relative path, and from its own directory */
	cr_assert_eq(chdir(dir), 0);
	c = ap_conf_load("etc/c.json", err);
	cr_assert_not_null(c, "%s", err);
	cr_expect_eq(memcmp(c->keys.keys[c->keys.active].secret, SECRET, 32), 0);
	ap_conf_free(c);
	snprintf(path, sizeof(path), "%s/etc", dir);
	cr_assert_eq(chdir(path), 0);
	c = ap_conf_load("c.json", err);
	cr_assert_not_null(c, "%s", err);
	ap_conf_free(c);
	cr_assert_eq(chdir(cwd), 0);

	/* absolute key paths are taken as they are */
	{
		char text[1024];
		snprintf(text, sizeof(text), KEYFILE("%s/etc/k.key"), dir);
		ap_conf_free(ok(text));
	}
	/* the load errors: a file that is not there, one that is empty */
	snprintf(path, sizeof(path), "%s/nope.json", dir);
	cr_assert_null(ap_conf_load(path, err));
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	cr_expect_str_eq(err, want);
	write_text("empty.json", "");
	snprintf(path, sizeof(path), "%s/empty.json", dir);
	cr_assert_null(ap_conf_load(path, err));
	cr_expect(strstr(err, "empty.json: line 1 column 0") != NULL, "%s", err);
}

/* ---- routes ---- */

static int route_of(const struct ap_conf *c, const char *host, const char *path)
{
	const struct ap_route *r = ap_conf_route(c, (struct ap_span){host, strlen(host)},
	                                         (struct ap_span){path, strlen(path)});

	return r ? (int)(r - c->routes) : -1;
}

Test(conf, route_matching)
{
	struct ap_conf *c =
	        ok(ROUTED("{'host': 'api.example.com', 'path': '/v1/', 'upstream': 'sink',"
	                  "  'ruleset': 'r'},"
	                  " {'host': 'API.example.com', 'upstream': 'sink', 'ruleset': 's'},"
	                  " {'host': '[::1]', 'path': '/', 'upstream': 'sink', 'ruleset': 's'},"
	                  " {'path': '/track', 'upstream': 'sink', 'ruleset': 'r'},"
	                  " {'host': '*', 'path': '/push', 'upstream': 'sink', 'ruleset': 's'}"));

	/* host: case-insensitive, port ignored */
	cr_expect_eq(route_of(c, "api.example.com", "/v1/events"), 0);
	cr_expect_eq(route_of(c, "API.Example.COM", "/v1/events"), 0);
	cr_expect_eq(route_of(c, "api.example.com:8443", "/v1/events"), 0);
	cr_expect_eq(route_of(c, "Api.Example.Com:80", "/v1/"), 0);
	/* path prefix; the first route that matches wins */
	cr_expect_eq(route_of(c, "api.example.com", "/v1"), 1, "\"/v1\" is short of \"/v1/\"");
	cr_expect_eq(route_of(c, "api.example.com", "/track"), 1, "route 1 comes before 3");
	cr_expect_eq(route_of(c, "api.example.com", "/"), 1);
	cr_expect_eq(route_of(c, "api.example.com.evil.com", "/v1/x"), -1);
	/* IPv6 hosts in brackets, with or without a port */
	cr_expect_eq(route_of(c, "[::1]:8080", "/x"), 2);
	cr_expect_eq(route_of(c, "[::1]", "/x"), 2);
	cr_expect_eq(route_of(c, "[::2]", "/x"), -1);
	/* no host on the route, or "*": any host, even none */
	cr_expect_eq(route_of(c, "other.example", "/track/x"), 3);
	cr_expect_eq(route_of(c, "", "/track"), 3);
	cr_expect_eq(route_of(c, "", "/push/1"), 4);
	cr_expect_eq(route_of(c, "x:1", "/push"), 4);
	/* nothing matches: the proxy answers 404 */
	cr_expect_eq(route_of(c, "other.example", "/v1/events"), -1);
	cr_expect_eq(route_of(c, "other.example", "/trac"), -1);
	cr_expect_eq(route_of(c, "example.com", "/"), -1);
	cr_expect_eq(route_of(c, "api.example.co", "/v1/x"), -1);
	cr_expect_eq(route_of(c, "api.example.comm", "/v1/x"), -1);
	ap_conf_free(c);
}

/* ---- the default configuration ---- */

/* conf/anonproxy.json copied next to a key of its own, so the test neither needs nor
 * touches conf/dev.key. Run from the repository root, as `make test` does. */
Test(conf, default_configuration_loads)
{
	char path[256], buf[65536];
	size_t n;
	struct ap_conf *c;
	const struct ap_ruleset *rs, *minor;
	const struct ap_field *f;
	size_t last;
	FILE *in = fopen("conf/anonproxy.json", "rb");

	cr_assert_not_null(in, "conf/anonproxy.json not found: run from the repository root");
	n = fread(buf, 1, sizeof(buf), in);
	fclose(in);
	cr_assert(n > 0 && n < sizeof(buf));
	put("anonproxy.json", buf, n, 0644);
	put("dev.key", SECRET, 32, 0600);
	/* and the SDK profiles it includes */
	in = fopen("conf/profiles/sdk.json", "rb");
	cr_assert_not_null(in);
	n = fread(buf, 1, sizeof(buf), in);
	fclose(in);
	cr_assert(n > 0 && n < sizeof(buf));
	snprintf(path, sizeof(path), "%s/profiles", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	put("profiles/sdk.json", buf, n, 0644);
	snprintf(path, sizeof(path), "%s/anonproxy.json", dir);
	c = ap_conf_load(path, err);
	cr_assert_not_null(c, "%s", err);

	cr_expect_str_eq(c->listen[0], "127.0.0.1:8080");
	cr_expect_eq(c->keys.nkeys, 1);
	cr_expect_str_eq(c->keys.keys[c->keys.active].id, "dev");
	cr_assert_geq(c->nroutes, 1);
	last = c->nroutes - 1; /* the catch-all, after the SDK routes */
	cr_expect(c->routes[last].upstream->sink && c->routes[last].upstream->sink_log);
	cr_expect_eq(c->routes[last].unknown, AP_UNKNOWN_REJECT);
	cr_expect_eq(c->routes[last].scope, AP_SCOPE_ANALYTICS);
	cr_expect_null(c->routes[last].profile);
	cr_expect_eq(route_of(c, "anything.example:8080", "/any/path"), (int)last);
	cr_expect_eq(route_of(c, "", "/v1/track"), (int)last);
	for (size_t i = 0; i < last; i++) {
		const struct ap_route *r = &c->routes[i];
		cr_expect_not_null(r->profile, "routes[%zu]", i);
		cr_expect(r->upstream->sink);
		cr_expect_neq(r->ruleset, ap_conf_ruleset(c, "analytics"), "a profile's own");
		cr_expect_eq(r->ruleset->strict && r->ruleset->strict->strict == NULL, true,
		             "routes[%zu]: the strict variant has the profile too", i);
	}
	rs = ap_conf_ruleset(c, "analytics");
	minor = ap_conf_ruleset(c, "analytics_minor");
	cr_assert(rs && minor);
	cr_expect_eq(rs->strict, minor);
	cr_expect_eq(rs->detect, AP_DET_ALL);
	cr_expect(rs->query && rs->scrub_keys);
	f = ap_rules_key(rs, "IMEI", 4);
	cr_assert_not_null(f);
	cr_expect(f->act.act == AP_ACT_HASH && f->act.fmt == AP_HASH_PRESERVE &&
	          f->act.cls == AP_CLASS_IMEI);
	f = ap_rules_key(rs, "data_list", 9);
	cr_assert_not_null(f);
	cr_expect_eq(f->ncodec, 3);
	f = ap_rules_header(rs, "x-forwarded-for", 15);
	cr_assert_not_null(f);
	cr_expect(f->act.act == AP_ACT_TRUNCATE_IP && f->act.v4bits == 24);
	cr_expect_eq(ap_rules_key(minor, "imei", 4)->act.act, AP_ACT_DROP);
	cr_expect_eq(c->limits.decoded_bytes, 8u << 20);
	ap_conf_free(c);
}

/* ---- what the documented parameters do (docs/configuration.md) ---- */

/* Applies class <cls>'s action of ruleset "r" in <c> to <in>. */
static const char *apply(const struct ap_conf *c, int cls, const char *in)
{
	static char res[256];
	const struct ap_action *a = &ap_conf_ruleset(c, "r")->class_act[cls];
	struct ap_pseudo ps;
	struct ap_buf b = {0};
	bool num;

	cr_assert_eq(ap_pseudo_init(&ps, &c->keys.keys[c->keys.active]), AP_OK);
	cr_assert_eq(ap_action_apply(&ps, a, in, strlen(in), false, &b, &num), AP_OK);
	cr_assert_lt(b.len, sizeof(res));
	memcpy(res, b.p ? b.p : "", b.len);
	res[b.len] = 0;
	ap_buf_free(&b);
	ap_pseudo_free(&ps);
	return res;
}

Test(conf, hash_parameters_shape_the_output)
{
	struct ap_conf *c = ok(RS("'classes': {'imei': 'hash',"
	                          " 'idfa': {'action': 'hash', 'format': 'base64url'},"
	                          " 'gaid': {'action': 'hash', 'length': 16, 'key_id': true},"
	                          " 'imsi': {'action': 'hash', 'format': 'preserve'},"
	                          " 'phone': 'mask', 'gps': 'round', 'ip': 'truncate_ip'}"));
	const char *s;

	cr_expect_eq(strlen(apply(c, AP_CLASS_IMEI, "490154203237518")), 32);
	cr_expect_eq(strlen(apply(c, AP_CLASS_IDFA, "x")), 22);
	s = apply(c, AP_CLASS_GAID, "x");
	cr_expect(strncmp(s, "k:", 2) == 0 && strlen(s) == 18, "%s", s);
	s = apply(c, AP_CLASS_IMSI, "310150123456789");
	cr_expect(strlen(s) == 15 && strspn(s, "0123456789") == 15, "%s", s);
	cr_expect_str_eq(apply(c, AP_CLASS_PHONE, "+4915112345678"), "**********5678");
	cr_expect_str_eq(apply(c, AP_CLASS_GPS, "48.858844"), "48.86");
	cr_expect_str_eq(apply(c, AP_CLASS_IP, "203.0.113.77"), "203.0.113.0");
	cr_expect_str_eq(apply(c, AP_CLASS_IP, "2001:db8:1:2::5"), "2001:db8:1::");
	ap_conf_free(c);
}

/* "keep": 0 hides every character (the default of 4 comes from the loader). */
Test(conf, mask_keep_zero_hides_everything)
{
	struct ap_conf *c = ok(RS("'classes': {'serial': {'action': 'mask', 'keep': 0}}"));

	cr_expect_str_eq(apply(c, AP_CLASS_SERIAL, "SN12345678"), "**********");
	ap_conf_free(c);
}

/* A prefix of 0 erases the address (the defaults of 24 and 48 come from the loader). */
Test(conf, truncate_ip_prefix_zero_erases_the_address)
{
	struct ap_conf *c = ok(RS("'classes': {'ip': {'action': 'truncate_ip', 'ipv4_prefix': 0,"
	                          " 'ipv6_prefix': 0}}"));

	cr_expect_str_eq(apply(c, AP_CLASS_IP, "203.0.113.77"), "0.0.0.0");
	cr_expect_str_eq(apply(c, AP_CLASS_IP, "2001:db8::1"), "::");
	ap_conf_free(c);
}

/* A codec entry names a key whose value should be an encoded string; a number there is
 * scanned by the detectors like any other value (it once slipped through). */
Test(conf, codec_entry_on_a_number_still_scanned)
{
	struct ap_conf *c = ok(
	        RS("'detect': ['imei'], 'fields': [{'keys': ['data_list'], 'codec': ['json']}]"));
	static const char *const docs[] = {"{\"data_list\": 490154203237518}",
	                                   "{\"data_list\": [490154203237518]}"};
	struct ap_scrub sc;
	struct ap_buf out = {0};

	cr_assert_eq(ap_scrub_init(&sc, &c->keys.keys[c->keys.active]), AP_OK);
	for (size_t i = 0; i < AP_ARRAY_LEN(docs); i++) {
		bool changed = false;
		ap_scrub_begin(&sc, ap_conf_ruleset(c, "r"), 64, 1 << 20);
		ap_buf_clear(&out);
		cr_assert_eq(ap_scrub_json(&sc, (struct ap_span){docs[i], strlen(docs[i])}, &out,
		                           &changed),
		             AP_OK);
		cr_expect(changed, "%s passed unscrubbed", docs[i]);
	}
	ap_buf_free(&out);
	ap_scrub_free(&sc);
	ap_conf_free(c);
}

/* ---- SDK profiles (docs/sdk-profiles.md) ---- */

/* A whole configuration: profile "p" made of <p> (its members), ruleset "r" of <rs>, and
 * the routes <routes>. */
#define PROFILED(rs, p, routes)                                                                    \
	"{" KEYS ", 'rulesets': {'r': {" rs "}, 'minor': {'classes': {'imei': 'drop'}}},"          \
	" 'profiles': {'p': {" p "}}, 'routes': [" routes "]}"
#define PROUTE "{'upstream': 'sink', 'ruleset': 'r', 'profile': 'p'}"

Test(conf, profile_combines_with_the_route_ruleset)
{
	struct ap_conf *c = ok(PROFILED(
	        "'classes': {'imei': {'action': 'hash', 'length': 16}},"
	        " 'fields': [{'class': 'imei', 'keys': ['imei', 'x']}, {'class': 'mac', 'keys': "
	        "['mac'], 'action': 'drop'}], 'headers': [{'name': 'X-A', 'class': 'other', "
	        "'action': 'drop'}], 'strict': 'minor'",
	        "'fields': [{'class': 'imei', 'keys': ['x', 'imei_slot1']},"
	        " {'keys': ['src'], 'codec': ['pairs']}],"
	        " 'headers': [{'name': 'x-a', 'class': 'other', 'action': 'keep'}]",
	        PROUTE ", {'path': '/b', 'upstream': 'sink', 'ruleset': 'minor', 'profile': 'p',"
	               " 'opaque': 'pass'}, " PROUTE));
	const struct ap_ruleset *base = ap_conf_ruleset(c, "r"), *rs = c->routes[0].ruleset;
	const struct ap_field *f;

	cr_assert_neq(rs, base);
	cr_expect_str_eq(rs->name, "r+p");
	cr_expect_str_eq(c->routes[0].profile, "p");
	cr_expect_eq(c->routes[2].ruleset, rs,
	             "one compiled ruleset per (ruleset, profile, policy)");
	cr_expect_not(rs->opaque_pass);
	/* the profile's own keys, the ruleset's class actions */
	f = ap_rules_key(rs, "imei_slot1", 10);
	cr_assert_not_null(f);
	cr_expect(f->act.act == AP_ACT_HASH && f->act.length == 16);
	cr_expect_not_null(ap_rules_key(rs, "imei", 4), "the ruleset's keys stay");
	cr_expect_eq(ap_rules_key(rs, "mac", 3)->act.act, AP_ACT_DROP);
	cr_expect_eq(ap_rules_key(rs, "src", 3)->codec[0], AP_CODEC_PAIRS);
	cr_expect_eq(ap_rules_key(rs, "SRC", 3)->sep_len, 2);
	cr_expect_null(ap_rules_key(base, "imei_slot1", 10), "the base ruleset is untouched");
	/* a header both name is the profile's */
	cr_expect_eq(ap_rules_header(rs, "X-A", 3)->act.act, AP_ACT_KEEP);
	/* the strict variant is combined with the profile as well */
	cr_assert_not_null(rs->strict);
	cr_expect_str_eq(rs->strict->name, "minor+p");
	cr_expect_eq(ap_rules_key(rs->strict, "imei_slot1", 10)->act.act, AP_ACT_DROP);
	/* another ruleset, another policy */
	cr_expect_str_eq(c->routes[1].ruleset->name, "minor+p");
	cr_expect(c->routes[1].ruleset->opaque_pass);
	cr_expect_eq(ap_rules_key(c->routes[1].ruleset, "imei_slot1", 10)->act.act, AP_ACT_DROP);
	ap_conf_free(c);
}

Test(conf, profile_default_ruleset)
{
	struct ap_conf *c =
	        ok(PROFILED("", "'ruleset': 'minor'", "{'upstream': 'sink', 'profile': 'p'}"));

	cr_expect_str_eq(c->routes[0].ruleset->name, "minor+p");
	ap_conf_free(c);
	refused(PROFILED("", "", "{'upstream': 'sink', 'profile': 'p'}"),
	        "routes[0].ruleset: required");
	refused(PROFILED("", "'ruleset': 'nope'", PROUTE),
	        "profiles.p.ruleset: no ruleset named \"nope\"");
}

Test(conf, profile_errors_name_the_key_path)
{
	refused(PROFILED("", "'feilds': []", PROUTE), "profiles.p.feilds: unknown key");
	refused(PROFILED("", "'fields': [{'class': 'imei', 'keys': ['a'], 'action': 'hsah'}]",
	                 PROUTE),
	        "profiles.p.fields[0].action: unknown action \"hsah\"");
	refused(PROFILED("", "'fields': [{'class': 'imei', 'keys': ['a', 'A']}]", PROUTE),
	        "profiles.p.fields[0].keys[1]: key listed twice in this ruleset");
	refused(PROFILED("", "'signers': [{'field': 'crc', 'algorithm': 'crc32', 'over': 'd'}]",
	                 PROUTE),
	        "profiles.p.signers[0].algorithm: unknown algorithm \"crc32\" (java_hashcode, "
	        "md5_hex)");
	refused(PROFILED("", "'signers': [{'field': 'crc', 'algorithm': 'md5_hex'}]", PROUTE),
	        "profiles.p.signers[0].over: required");
	refused(PROFILED("",
	                 "'signers': [{'field': 'c', 'algorithm': 'md5_hex', 'over': ['a', 'c']}]",
	                 PROUTE),
	        "profiles.p.signers[0].over: a signature cannot cover itself");
	refused(PROFILED("", "'opaque': [{'name': 'x'}]", PROUTE),
	        "profiles.p.opaque[0]: needs a condition");
	refused(PROFILED("", "'opaque': [{'name': 'x y', 'content_type': 'a/b'}]", PROUTE),
	        "profiles.p.opaque[0].name: a rule name is made of [A-Za-z0-9_.-]");
	refused(PROFILED("", "'opaque': [{'name': 'x', 'content_type': 'a/b*'}]", PROUTE),
	        "profiles.p.opaque[0].content_type[0]: '*' stands for a whole subtype");
	refused(PROFILED("", "'opaque': [{'name': 'x', 'content_type': 'nope'}]", PROUTE),
	        "profiles.p.opaque[0].content_type[0]: a media type is");
	refused(PROFILED("", "'opaque': [{'name': 'x', 'field': {'name': 'gzip', 'value': '9'}}]",
	                 PROUTE),
	        "profiles.p.opaque[0].field.value: unknown key");
	refused(PROFILED("", "'bodies': [{'content_type': 'a/b'}]", PROUTE),
	        "profiles.p.bodies[0].codec: required");
	refused(PROFILED("", "'bodies': [{'content_type': 'a/b', 'codec': ['base64']}]", PROUTE),
	        "profiles.p.bodies[0].codec[0]: the last codec must be");
	/* an unused profile is checked all the same */
	refused(PROFILED("", "'fields': [{'keys': ['a']}]", "{'upstream': 'sink', 'ruleset': 'r'}"),
	        "profiles.p.fields[0].class: required (or a codec)");
	/* routes */
	refused(PROFILED("", "", "{'upstream': 'sink', 'ruleset': 'r', 'profile': 'q'}"),
	        "routes[0].profile: no profile named \"q\"");
	refused(PROFILED("", "", "{'upstream': 'sink', 'ruleset': 'r', 'opaque': 'pass'}"),
	        "routes[0].opaque: applies to a route with a profile");
	refused(PROFILED("", "",
	                 "{'upstream': 'sink', 'ruleset': 'r', 'profile': 'p', "
	                 "'opaque': 'allow'}"),
	        "routes[0].opaque: must be pass or refuse");
	refused(ROOT("'profiles': []"), "profiles: must map profile names to profiles");
	refused(ROOT("'profiles': {'a+b': {}}"), "profiles.a+b: a profile name is 1-63 bytes");
}

Test(conf, codec_steps_with_parameters)
{
	struct ap_conf *c = ok(RS(
	        "'fields': [{'keys': ['a'], 'codec': [{'name': 'base64', 'optional': true}, "
	        "{'name': 'gzip', 'optional': true}, 'urlencoded', {'name': 'pairs', 'separator': "
	        "';', 'assign': ':'}]}, {'keys': ['b'], 'codec': ['pairs']}]"));
	const struct ap_field *f = ap_rules_key(ap_conf_ruleset(c, "r"), "a", 1);

	cr_assert_not_null(f);
	cr_expect_eq(f->ncodec, 4);
	cr_expect_eq(f->optional, 3);
	cr_expect_eq(f->codec[2], AP_CODEC_URLENCODED);
	cr_expect(f->sep_len == 1 && f->sep[0] == ';' && f->eq_len == 1 && f->eq[0] == ':');
	f = ap_rules_key(ap_conf_ruleset(c, "r"), "b", 1);
	cr_expect(f->sep_len == 2 && memcmp(f->sep, "##", 2) == 0 && f->eq[0] == '=');
	ap_conf_free(c);
	refused(RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'deflate', 'optional': true},"
	           " 'json']}]"),
	        "rulesets.r.fields[0].codec[0].optional: only base64 and gzip steps can be "
	        "optional");
	refused(RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'json', 'separator': ';'}]}]"),
	        "rulesets.r.fields[0].codec[0].separator: applies to the pairs codec only");
	refused(RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'pairs', 'separator': '=='}]}]"),
	        "rulesets.r.fields[0].codec[0]: a pairs separator is 1-8 bytes");
	refused(RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'pairs', 'separ': '#'}]}]"),
	        "rulesets.r.fields[0].codec[0].separ: unknown key");
	refused(RS("'fields': [{'keys': ['a'], 'codec': ['protobuf']}]"),
	        "rulesets.r.fields[0].codec[0]: protobuf needs its schema");
	refused(RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'pairs'}, 'json']}]"),
	        "rulesets.r.fields[0].codec[0]: json, ndjson, form, pairs and protobuf can only");
}

#define PB(fields)                                                                                 \
	RS("'fields': [{'keys': ['a'], 'codec': [{'name': 'protobuf', 'fields': [" fields "]}]}]")

Test(conf, protobuf_schemas)
{
	struct ap_conf *c = ok(PB("{'path': '1.19', 'class': 'gaid', 'action': 'hash'},"
	                          " {'path': '1.2.1.2', 'type': 'string'},"
	                          " {'path': '1.2', 'type': 'message'},"
	                          " {'path': '3', 'type': 'varint', 'class': 'device_id', "
	                          "'action': 'hash', 'format': 'hex'},"
	                          " {'path': '4', 'type': 'fixed32', 'class': 'other', 'action': "
	                          "'drop'}, {'path': '1.5', 'codec': ['json']}"));
	const struct ap_ruleset *rs = ap_conf_ruleset(c, "r");
	const struct ap_field *f = ap_rules_key(rs, "a", 1);
	const struct ap_pb_node *root, *one, *n;

	cr_assert_not_null(f);
	root = &rs->pb[f->pb_root];
	cr_expect_eq(root->nchild, 3);
	one = ap_rules_pb_child(rs, root, 1);
	cr_assert_not_null(one);
	cr_expect(one->type == AP_PB_MESSAGE && one->field == AP_FIELD_NONE);
	cr_expect_eq(one->nchild, 3);
	n = ap_rules_pb_child(rs, one, 19);
	cr_assert_not_null(n);
	cr_expect(n->type == AP_PB_STRING && rs->fields[n->field].act.act == AP_ACT_HASH);
	n = ap_rules_pb_child(rs, ap_rules_pb_child(rs, ap_rules_pb_child(rs, one, 2), 1), 2);
	cr_assert_not_null(n);
	cr_expect(n->type == AP_PB_STRING && n->field == AP_FIELD_NONE);
	n = ap_rules_pb_child(rs, root, 3);
	cr_assert_not_null(n);
	cr_expect_eq(rs->fields[n->field].act.fmt, AP_HASH_PRESERVE, "a varint stays a number");
	cr_expect_eq(rs->fields[ap_rules_pb_child(rs, one, 5)->field].codec[0], AP_CODEC_JSON);
	ap_conf_free(c);

	refused(PB("{'path': '1.x'}"), "codec[0].fields[0].path: a protobuf path is field numbers");
	refused(PB("{'path': '0'}"),
	        "fields[0].path: a protobuf field number is from 1 to 536870911");
	refused(PB("{'path': '536870912'}"), "a protobuf field number is from 1 to 536870911");
	refused(PB("{'path': '1.'}"), "a protobuf path is field numbers joined by '.'");
	refused(PB("{'path': '1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1'}"), "at most 16 steps");
	refused(PB("{'path': '1', 'type': 'int'}"), "fields[0].type: unknown type \"int\"");
	refused(PB("{'path': '1', 'type': 'bytes'}"), "a bytes field needs a class and action");
	refused(PB("{'path': '1', 'type': 'varint', 'class': 'imei', 'action': 'mask'}"),
	        "a varint field can be dropped or kept or hashed, not mask");
	refused(PB("{'path': '1', 'type': 'fixed64', 'class': 'imei', 'action': 'hash'}"),
	        "a fixed64 field can be dropped or kept, not hash");
	refused(PB("{'path': '1', 'type': 'varint', 'codec': ['json']}"),
	        "a codec opens a string or bytes field only");
	refused(PB("{'path': '1.2', 'class': 'imei', 'action': 'drop'}, {'path': '1.2', 'type': "
	           "'string'}"),
	        "fields[1]: path listed twice");
	refused(PB("{'path': '1', 'class': 'imei', 'action': 'drop'}, {'path': '1.2', 'type': "
	           "'string'}"),
	        "fields[0]: a path that other paths go through is a message opened for them");
	refused(PB(""), "codec[0].fields: must be a list of 1 to 256");
	refused(PB("{'path': '1', 'colour': 'red'}"), "fields[0].colour: unknown key");
}

#define INCL(files)                                                                                \
	"{" KEYS ", 'rulesets': {'r': {}}, 'include_profiles': [" files "],"                       \
	" 'routes': [{'upstream': 'sink', 'ruleset': 'r', 'profile': 'q'}]}"

Test(conf, include_profiles)
{
	static const char prof[] = "{\"q\": {\"fields\": [{\"class\": \"imei\", \"keys\": "
	                           "[\"q_imei\"], \"action\": \"drop\"}]}}";
	static const char bad[] = "{\"q\": {\"fields\": [{\"class\": \"imei\", \"keys\": "
	                          "[\"x\"], \"action\": \"hsah\"}]}}";
	struct ap_conf *c;

	put("prof.json", prof, sizeof(prof) - 1, 0644);
	c = ok(INCL("'prof.json'"));
	cr_expect_eq(ap_rules_key(c->routes[0].ruleset, "q_imei", 6)->act.act, AP_ACT_DROP);
	cr_expect_str_eq(c->routes[0].profile, "q");
	ap_conf_free(c);
	put("bad.json", bad, sizeof(bad) - 1, 0644);
	refused(INCL("'bad.json'"),
	        "include_profiles[0] (bad.json): q.fields[0].action: unknown action \"hsah\"");
	refused(INCL("'missing.json'"), "include_profiles[0]: missing.json: unable to open");
	put("notjson.json", "{\"q\": ", 6, 0644);
	refused(INCL("'notjson.json'"), "include_profiles[0]: notjson.json: line 1 column");
	put("arr.json", "[]", 2, 0644);
	refused(INCL("'arr.json'"),
	        "include_profiles[0]: arr.json: must map profile names to profiles");
	refused(INCL("'prof.json', 'prof.json'"),
	        "include_profiles[1] (prof.json): q: profile \"q\" is defined twice");
	refused(INCL("''"), "include_profiles[0]: must be a file name");
	refused(ROOT("'include_profiles': 'prof.json'"),
	        "include_profiles: must be a list of at most 64 file names");
	/* the key's bytes never show, whatever file is given */
	refused(INCL("'k.key'"), "include_profiles[0]: k.key: ");
}

/* Per-user opt-outs: "user" and "events" in a ruleset, "optout" at the root. */
Test(conf, optout_and_user_rules)
{
	struct ap_conf *c = ok(RS("'user': {'paths': ['$.distinct_id', '$.user.id'], "
	                          "'headers': ['X-User-Id'], 'query': ['uid'], 'form': ['UID']}"));
	const struct ap_ruleset *rs = ap_conf_ruleset(c, "r");

	cr_assert_not_null(rs->user);
	cr_expect_eq(rs->user->npaths, 2);
	cr_expect_str_eq(rs->user->headers[0], "x-user-id", "names are kept in lower case");
	cr_expect_str_eq(rs->user->form[0], "uid");
	cr_expect_eq(rs->user->nevents, 4, "default event places: $[*], batch, events, data");
	cr_expect(rs->user->root_event);
	cr_expect_not_null(rs->variant[7], "per-user variants are built");
	cr_expect_eq(ap_ruleset_for(rs, 0), rs);
	ap_conf_free(c);
	c = ok(RS("'user': {'paths': ['$.uid']}, 'events': ['$.list[*]']"));
	rs = ap_conf_ruleset(c, "r");
	cr_expect_eq(rs->user->nevents, 1);
	cr_expect_not(rs->user->root_event, "only what is listed");
	ap_conf_free(c);
	refused(RS("'events': ['$[*]']"), "rulesets.r.events: events without \"user\"");
	refused(RS("'user': {}"), "rulesets.r.user: names no place to find the user");
	refused(RS("'user': {'paths': ['user_id']}"),
	        "rulesets.r.user.paths[0]: a path starts with '$'");
	refused(RS("'user': {'cookie': ['x']}"), "rulesets.r.user.cookie: unknown key");
	refused("{" KEYS
	        ", 'optout': {'shm': 'no-slash', 'dir': 'o'}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "optout.shm: a shared-memory name is \"/name\"");
	refused("{" KEYS ", 'optout': {'shm': '/x'}, 'rulesets': {'r': {}}, " ROUTES "}",
	        "optout.dir: required");
}
