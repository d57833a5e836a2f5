/* The shipped SDK profiles (conf/profiles/sdk.json) under the default configuration, on
 * requests shaped like each SDK's (tests/fixtures/sdk/, written by make_fixtures.py): the
 * output is opened again, layer by layer, by decoders of the test's own (form, base64,
 * gzip, JSON through jansson, protobuf), no planted identifier is left at any layer, the
 * documents keep their shape, and every signature equals what the SDK's own algorithm
 * gives for the new payload (Java hashCode and OpenSSL MD5 written here). Opaque payloads
 * are refused, or passed as they came and counted, as the route says. Run from the
 * repository root, as `make test` does. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "conf.h"
#include "scrub.h"

#define FIX "tests/fixtures/sdk/"

/* What make_fixtures.py plants. */
static const char *const PLANTED[] = {
        "356938035643809",
        "490154203237518",
        "A10000009296F2",
        "A4:5E:60:C2:17:9B",
        "A45E60C2179B",
        "9774d56d682e549c",
        "f3b8c2d1-6e4a-4c55-9a0b-2d7e8f9a1b3c",
        "38400000-8cf0-11bd-b23e-10b96e40000d",
        "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "7e4b8c2a-1f3d-4e5a-9b6c-0d2e4f6a8b1c",
        "dev-7f3a9c21e5b84d06",
        "user-4401982",
        "203.0.113.77",
        "31.230416",
        "121.473701",
        "APA91bHun4MxP5egoKMwt2KZFBaFUH",
        "c2f0e9a3b1d84e7f9a6b5c4d3e2f1a0b",
        "fKq3z9RtQd2v0xYbN7mL1p",
        "+8613800138000",
        "4b0c1e5a-2d3f-4a6b-8c7d-9e0f1a2b3c4d",
};

static char dir[64];
static struct ap_conf *conf, *conf_pass;
static struct ap_scrub sc;
static struct ap_buf out, tmp;

/* ---- files ---- */

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long len;

	cr_assert_not_null(f, "%s: run from the repository root", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	b = malloc((size_t)len + 1);
	cr_assert_not_null(b);
	cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	b[len] = 0;
	*n = (size_t)len;
	return b;
}

static void put(const char *name, const void *p, size_t n, mode_t mode)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(write(fd, p, n), (ssize_t)n);
	close(fd);
}

/* Replaces the first <from> in <s> by <to> (a new string). */
static char *replace(const char *s, const char *from, const char *to)
{
	const char *at = strstr(s, from);
	char *r;

	cr_assert_not_null(at, "\"%s\" not in the default configuration", from);
	cr_assert(asprintf(&r, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) > 0);
	return r;
}

/* conf/anonproxy.json and its profiles copied next to a key of the test's own, with an
 * AppsFlyer route added (the default has none); the second copy passes opaque payloads. */
static void setup(void)
{
	char path[256], err[AP_CONF_ERR_MAX], *text, *t2, *t3;
	unsigned char key[32];
	size_t n;

	strcpy(dir, "/tmp/apsdk.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/profiles", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i * 29 + 3);
	put("dev.key", key, sizeof(key), 0600);
	text = slurp("conf/profiles/sdk.json", &n);
	put("profiles/sdk.json", text, n, 0644);
	free(text);
	text = slurp("conf/anonproxy.json", &n);
	t2 = replace(text, "{ \"path\": \"/\", ",
	             "{ \"host\": \"appsflyer.test\", \"upstream\": \"sink\", \"ruleset\": "
	             "\"analytics\", \"profile\": \"appsflyer\" },\n    { \"path\": \"/\", ");
	put("anonproxy.json", t2, strlen(t2), 0644);
	snprintf(path, sizeof(path), "%s/anonproxy.json", dir);
	conf = ap_conf_load(path, err);
	cr_assert_not_null(conf, "%s", err);
	t3 = t2;
	for (int i = 0; i < 3; i++) {
		char *t = replace(t3, "\"opaque\": \"refuse\"", "\"opaque\": \"pass\"");
		if (t3 != t2)
			free(t3);
		t3 = t;
	}
	put("pass.json", t3, strlen(t3), 0644);
	snprintf(path, sizeof(path), "%s/pass.json", dir);
	conf_pass = ap_conf_load(path, err);
	cr_assert_not_null(conf_pass, "%s", err);
	free(text);
	free(t2);
	free(t3);
	cr_assert_eq(ap_scrub_init(&sc, &conf->keys.keys[conf->keys.active]), AP_OK);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void teardown(void)
{
	ap_scrub_free(&sc);
	ap_buf_free(&out);
	ap_buf_free(&tmp);
	ap_conf_free(conf);
	ap_conf_free(conf_pass);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(sdk, .init = setup, .fini = teardown, .timeout = 60);

/* ---- the request, as the proxy scrubs it ---- */

struct req {
	const char *host, *path, *ctype, *cenc;
	const char *hname, *hval; /* one more header, or NULL */
	bool pass;                /* the configuration that passes opaque payloads */
};

static int status;

/* Scrubs fixture <file> as request <r>. Returns AP_OK or AP_ERR; on AP_OK the body that
 * goes on is in *res (the input itself when unchanged; freed by the next call). */
static int scrub(const struct req *r, const char *file, struct ap_span *res, bool *changed)
{
	static char *in;
	const struct ap_conf *c = r->pass ? conf_pass : conf;
	const struct ap_route *rt;
	char path[256];
	size_t n;
	int rc;

	free(in);
	snprintf(path, sizeof(path), FIX "%s", file);
	in = slurp(path, &n);
	rt = ap_conf_route(c, (struct ap_span){r->host, strlen(r->host)},
	                   (struct ap_span){r->path, strlen(r->path)});
	cr_assert_not_null(rt);
	cr_assert_not_null(rt->profile, "%s%s: no profile on this route", r->host, r->path);
	ap_scrub_begin(&sc, rt->ruleset, 64, 8 << 20);
	if (r->hname) {
		bool drop, ch;
		ap_buf_clear(&tmp);
		cr_assert_eq(ap_scrub_header(&sc, (struct ap_span){r->hname, strlen(r->hname)},
		                             (struct ap_span){r->hval, strlen(r->hval)}, &tmp,
		                             &drop, &ch),
		             AP_OK);
	}
	ap_buf_clear(&out);
	rc = ap_scrub_body(&sc, (struct ap_span){r->ctype, strlen(r->ctype)},
	                   (struct ap_span){r->cenc ? r->cenc : "", r->cenc ? strlen(r->cenc) : 0},
	                   rt->unknown, (struct ap_span){in, n}, &out, changed, &status);
	if (rc == AP_OK)
		*res = *changed ? ap_buf_span(&out) : (struct ap_span){in, n};
	return rc;
}

/* ---- the test's own decoders ---- */

static void no_planted(const char *what, const char *p, size_t n)
{
	for (size_t i = 0; i < sizeof(PLANTED) / sizeof(PLANTED[0]); i++)
		cr_expect_null(memmem(p, n, PLANTED[i], strlen(PLANTED[i])),
		               "%s still holds %s: %.*s", what, PLANTED[i],
		               (int)(n > 600 ? 600 : n), p);
}

struct kv {
	char k[64];
	char *v;
	size_t vn;
};

static int unhex(int c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

/* A form into kv[]; every value percent-decoded ('+' a space). */
static int form(struct ap_span s, struct kv *kv, int max)
{
	int n = 0;
	size_t i = 0;

	while (i < s.n) {
		const char *p = s.p + i, *amp = memchr(p, '&', s.n - i), *e = amp ? amp : s.p + s.n;
		const char *eq = memchr(p, '=', (size_t)(e - p));
		size_t o = 0;
		cr_assert_lt(n, max);
		cr_assert_not_null(eq, "a pair without '='");
		cr_assert_lt((size_t)(eq - p), sizeof(kv[n].k));
		memcpy(kv[n].k, p, (size_t)(eq - p));
		kv[n].k[eq - p] = 0;
		kv[n].v = malloc((size_t)(e - eq) + 1);
		for (const char *q = eq + 1; q < e; q++) {
			if (*q == '%') {
				cr_assert(e - q >= 3 && unhex(q[1]) >= 0 && unhex(q[2]) >= 0);
				kv[n].v[o++] = (char)(unhex(q[1]) * 16 + unhex(q[2]));
				q += 2;
			} else
				kv[n].v[o++] = *q == '+' ? ' ' : *q;
		}
		kv[n].v[o] = 0;
		kv[n++].vn = o;
		i = (size_t)(e - s.p) + 1;
	}
	return n;
}

static const struct kv *get(const struct kv *kv, int n, const char *k)
{
	for (int i = 0; i < n; i++)
		if (strcmp(kv[i].k, k) == 0)
			return &kv[i];
	cr_assert_fail("no field %s", k);
	return NULL;
}

static void form_free(struct kv *kv, int n)
{
	for (int i = 0; i < n; i++)
		free(kv[i].v);
}

static unsigned char *b64(const char *s, size_t n, size_t *on)
{
	unsigned char *d = malloc(n + 4);
	int r;

	cr_assert_eq(n % 4, 0, "base64 of %zu characters", n);
	r = EVP_DecodeBlock(d, (const unsigned char *)s, (int)n);
	cr_assert_geq(r, 0, "not base64");
	*on = (size_t)r - (n && s[n - 1] == '=') - (n > 1 && s[n - 2] == '=');
	return d;
}

static char *gunzip(const void *p, size_t n, size_t *on)
{
	z_stream z = {0};
	size_t cap = 1 << 20;
	char *o = malloc(cap);

	cr_assert_eq(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
	z.next_in = (Bytef *)p;
	z.avail_in = (uInt)n;
	z.next_out = (Bytef *)o;
	z.avail_out = (uInt)cap;
	cr_assert_eq(inflate(&z, Z_FINISH), Z_STREAM_END, "not gzip");
	*on = z.total_out;
	inflateEnd(&z);
	return o;
}

static json_t *json(const char *p, size_t n)
{
	json_error_t e;
	json_t *j = json_loadb(p, n, 0, &e);

	cr_assert_not_null(j, "invalid JSON: %s: %.*s", e.text, (int)(n > 300 ? 300 : n), p);
	return j;
}

static int32_t java_hash(const char *s, size_t n) /* ASCII and 2-byte UTF-8 are enough */
{
	uint32_t h = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		cr_assert_lt(c, 0x80, "the test's hashCode reads ASCII only");
		h = 31 * h + c;
	}
	return (int32_t)h;
}

static void md5_hex(const char *s, size_t n, char hex[33])
{
	unsigned char md[16];
	unsigned int ml;

	cr_assert_eq(EVP_Digest(s, n, md, &ml, EVP_md5(), NULL), 1);
	for (int i = 0; i < 16; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
}

#define FORM "application/x-www-form-urlencoded"

/* ---- Sensors ---- */

Test(sdk, sensors_track)
{
	struct req r = {"", "/sa", FORM, NULL, NULL, NULL, false};
	struct ap_span res;
	struct kv kv[8];
	const struct kv *data;
	unsigned char *bin;
	char *raw, crc[32];
	size_t bn, rn;
	bool changed;
	json_t *j, *ev, *p;
	int n;

	cr_assert_eq(scrub(&r, "sensors_track.form", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the form", res.p, res.n);
	n = form(res, kv, 8);
	cr_assert_eq(n, 3);
	cr_expect_str_eq(kv[0].k, "crc");
	cr_expect_str_eq(get(kv, n, "gzip")->v, "1");
	data = get(kv, n, "data_list");
	no_planted("data_list", data->v, data->vn);
	/* crc = Java String.hashCode of data_list as sent: the base64 text */
	snprintf(crc, sizeof(crc), "%d", java_hash(data->v, data->vn));
	cr_expect_str_eq(get(kv, n, "crc")->v, crc);
	bin = b64(data->v, data->vn, &bn);
	raw = gunzip(bin, bn, &rn);
	no_planted("data_list>base64>gzip", raw, rn);
	j = json(raw, rn);
	cr_assert(json_is_array(j) && json_array_size(j) == 2);
	ev = json_array_get(j, 0);
	cr_expect_str_eq(json_string_value(json_object_get(ev, "event")), "$AppInstall");
	cr_expect_eq(strlen(json_string_value(json_object_get(ev, "distinct_id"))), 32);
	p = json_object_get(ev, "properties");
	{
		/* the "##" pairs: same keys in the same order, values rewritten, empty ones left */
		const char *src = json_string_value(json_object_get(p, "$ios_install_source"));
		static const char *const keys[] = {
		        "android_id=", "imei=", "imei_old=##", "imei_slot1=",     "imei_slot2=",
		        "imei_meid=",  "mac=",  "oaid=",       "oaid_reflection="};
		const char *at = src;
		cr_assert_not_null(src);
		for (size_t k = 0; k < AP_ARRAY_LEN(keys); k++) {
			cr_assert_not_null(at = strstr(at, keys[k]), "%s in %s", keys[k], src);
			cr_expect(at == src || (at[-1] == '#' && at[-2] == '#'), "%s", src);
		}
		cr_expect_eq(strlen(json_string_value(json_object_get(p, "$oaid"))), 36);
	}
	/* integer coordinates (degrees * 10^6) are dropped, not "rounded" */
	p = json_object_get(json_array_get(j, 1), "properties");
	cr_expect_null(json_object_get(p, "$latitude"));
	cr_expect_null(json_object_get(p, "$longitude"));
	cr_expect(json_is_false(json_object_get(p, "$is_first_time")));
	cr_expect_eq(sc.st.resigned, 1);
	json_decref(j);
	free(raw);
	free(bin);
	form_free(kv, n);
}

Test(sdk, sensors_encrypted_refused_or_passed)
{
	static const char *const files[] = {"sensors_encrypted9.form", "sensors_encrypted13.form"};

	for (int i = 0; i < 2; i++) {
		struct req r = {"", "/sa", FORM, NULL, NULL, NULL, false};
		struct ap_span res;
		bool changed;
		size_t n;
		char path[128], *in;

		cr_expect_eq(scrub(&r, files[i], &res, &changed), AP_ERR, "%s", files[i]);
		cr_expect_eq(status, AP_OPAQUE_STATUS);
		cr_expect_str_eq(sc.why, AP_WHY_OPAQUE);
		cr_expect_eq(sc.st.opaque, 1);
		r.pass = true;
		cr_assert_eq(scrub(&r, files[i], &res, &changed), AP_OK, "%s", sc.why);
		cr_expect_not(changed, "an opaque payload goes on as it came");
		cr_expect_eq(sc.st.opaque, 1, "and is counted");
		snprintf(path, sizeof(path), FIX "%s", files[i]);
		in = slurp(path, &n);
		cr_expect(res.n == n && memcmp(res.p, in, n) == 0);
		free(in);
	}
}

/* ---- Amplitude ---- */

Test(sdk, amplitude_legacy_checksum)
{
	struct req r = {"api.amplitude.com", "/", FORM, NULL, NULL, NULL, false};
	struct ap_span res;
	struct kv kv[8];
	char cat[4096], hex[33];
	bool changed;
	json_t *j, *ev;
	int n;

	cr_assert_eq(scrub(&r, "amplitude_legacy.form", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the form", res.p, res.n);
	n = form(res, kv, 8);
	cr_assert_eq(n, 5);
	no_planted("e", get(kv, n, "e")->v, get(kv, n, "e")->vn);
	snprintf(cat, sizeof(cat), "%s%s%s%s", get(kv, n, "v")->v, get(kv, n, "client")->v,
	         get(kv, n, "e")->v, get(kv, n, "upload_time")->v);
	md5_hex(cat, strlen(cat), hex);
	cr_expect_str_eq(get(kv, n, "checksum")->v, hex);
	cr_expect_str_eq(get(kv, n, "client")->v, "0123456789abcdef0123456789abcdef");
	j = json(get(kv, n, "e")->v, get(kv, n, "e")->vn);
	ev = json_array_get(j, 0);
	cr_expect_str_eq(json_string_value(json_object_get(ev, "event_type")), "session_start");
	cr_expect_str_eq(
	        json_string_value(json_object_get(json_object_get(ev, "event_properties"), "ip")),
	        "203.0.113.0");
	json_decref(j);
	form_free(kv, n);
}

Test(sdk, amplitude_http_v2)
{
	struct req r = {
	        "api2.amplitude.com", "/2/httpapi", "application/json", NULL, NULL, NULL, false};
	struct ap_span res;
	bool changed;
	json_t *j, *ev;

	cr_assert_eq(scrub(&r, "amplitude_v2.json", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the body", res.p, res.n);
	j = json(res.p, res.n);
	ev = json_array_get(json_object_get(j, "events"), 0);
	cr_expect_str_eq(json_string_value(json_object_get(j, "api_key")),
	                 "0123456789abcdef0123456789abcdef");
	cr_expect_eq(strlen(json_string_value(json_object_get(ev, "idfa"))), 36);
	cr_expect_str_eq(json_string_value(json_object_get(ev, "ip")), "203.0.113.0");
	cr_expect(json_is_real(json_object_get(ev, "location_lat")));
	cr_expect_eq(json_real_value(json_object_get(ev, "location_lat")), 31.23);
	json_decref(j);
}

/* ---- Mixpanel ---- */

static void mixpanel_check(struct ap_span res)
{
	struct kv kv[4];
	int n = form(res, kv, 4);
	const struct kv *d = get(kv, n, "data");
	unsigned char *bin = NULL;
	size_t bn;
	json_t *j;

	no_planted("the form", res.p, res.n);
	if (d->v[0] == '[')
		j = json(d->v, d->vn);
	else {
		bin = b64(d->v, d->vn, &bn);
		no_planted("data>base64", (char *)bin, bn);
		j = json((char *)bin, bn);
	}
	cr_expect_str_eq(json_string_value(json_object_get(
	                         json_object_get(json_array_get(j, 0), "properties"), "mp_lib")),
	                 "android");
	json_decref(j);
	free(bin);
	form_free(kv, n);
}

Test(sdk, mixpanel_base64_plain_and_gzip)
{
	struct req r = {"api.mixpanel.com", "/track", FORM, NULL, NULL, NULL, false};
	struct ap_span res;
	bool changed;
	char *raw;
	size_t rn;

	cr_assert_eq(scrub(&r, "mixpanel_track.form", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	mixpanel_check(res);
	cr_assert_eq(scrub(&r, "mixpanel_plain.form", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	mixpanel_check(res);
	r.cenc = "gzip";
	cr_assert_eq(scrub(&r, "mixpanel_track.form.gz", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	raw = gunzip(res.p, res.n, &rn);
	mixpanel_check((struct ap_span){raw, rn});
	free(raw);
}

/* ---- Adjust ---- */

Test(sdk, adjust_form_and_params)
{
	struct req r = {"app.adjust.com", "/session", FORM, NULL, NULL, NULL, false};
	struct ap_span res;
	struct kv kv[24];
	bool changed;
	json_t *cb, *pp;
	int n;

	cr_assert_eq(scrub(&r, "adjust_session.form", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the form", res.p, res.n);
	n = form(res, kv, 24);
	cr_expect_eq(n, 16, "no field dropped");
	for (int i = 0; i < n; i++)
		no_planted(kv[i].k, kv[i].v, kv[i].vn);
	cr_expect_str_eq(get(kv, n, "app_token")->v, "abc123def456", "an app token is no MAC");
	cr_expect_str_eq(get(kv, n, "device_name")->v, "Pixel 7");
	cb = json(get(kv, n, "callback_params")->v, get(kv, n, "callback_params")->vn);
	pp = json(get(kv, n, "partner_params")->v, get(kv, n, "partner_params")->vn);
	cr_expect_str_eq(json_string_value(json_object_get(cb, "ref")), "spring");
	cr_expect_eq(strlen(json_string_value(json_object_get(pp, "gaid"))), 36);
	cr_expect_eq(strlen(get(kv, n, "mac_md5")->v), 32);
	json_decref(cb);
	json_decref(pp);
	form_free(kv, n);
}

/* ---- Segment, AppsFlyer ---- */

Test(sdk, segment_batch)
{
	struct req r = {"api.segment.io", "/v1/batch", "application/json", NULL, NULL, NULL, false};
	struct ap_span res;
	bool changed;
	json_t *j, *ctx;

	cr_assert_eq(scrub(&r, "segment_batch.json", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the body", res.p, res.n);
	j = json(res.p, res.n);
	ctx = json_object_get(json_array_get(json_object_get(j, "batch"), 0), "context");
	cr_expect_str_eq(json_string_value(json_object_get(ctx, "ip")), "203.0.113.0");
	cr_expect_str_eq(
	        json_string_value(json_object_get(json_object_get(ctx, "device"), "model")),
	        "Pixel 7");
	json_decref(j);
}

Test(sdk, appsflyer_style)
{
	struct req r = {"appsflyer.test",
	                "/api/v6.3/androidevent",
	                "application/json",
	                NULL,
	                NULL,
	                NULL,
	                false};
	struct ap_span res;
	bool changed;
	json_t *j;

	cr_assert_eq(scrub(&r, "appsflyer_launch.json", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	no_planted("the body", res.p, res.n);
	j = json(res.p, res.n);
	cr_expect_str_eq(
	        json_string_value(json_object_get(json_object_get(j, "deviceData"), "arch")),
	        "arm64");
	json_decref(j);
}

/* ---- Firebase / GA4: gzip'd protobuf ---- */

struct pbf {
	uint32_t num;
	int wt;
	uint64_t v;
	const uint8_t *p;
	size_t n;
};

static int pb_fields(const uint8_t *p, size_t n, struct pbf *f, int max)
{
	size_t i = 0;
	int c = 0;

	while (i < n) {
		uint64_t key = 0, v = 0;
		int s = 0;
		cr_assert_lt(c, max);
		do {
			cr_assert_lt(i, n, "truncated");
			key |= (uint64_t)(p[i] & 0x7F) << s;
			s += 7;
		} while (p[i++] & 0x80);
		f[c].num = (uint32_t)(key >> 3);
		f[c].wt = (int)(key & 7);
		s = 0;
		if (f[c].wt == 0 || f[c].wt == 2)
			do {
				cr_assert_lt(i, n, "truncated");
				v |= (uint64_t)(p[i] & 0x7F) << s;
				s += 7;
			} while (p[i++] & 0x80);
		cr_assert(f[c].wt == 0 || f[c].wt == 2, "wire type %d", f[c].wt);
		f[c].v = v;
		f[c].p = NULL;
		f[c].n = 0;
		if (f[c].wt == 2) {
			cr_assert_leq(v, n - i, "a length past its message");
			f[c].p = p + i;
			f[c].n = (size_t)v;
			i += (size_t)v;
		}
		c++;
	}
	return c;
}

static void firebase_check(const uint8_t *pb, size_t n)
{
	struct pbf batch[4], bundle[32], ev[8], par[4], up[4];
	int nb, ne, k = 0;
	size_t on;
	char *o = slurp(FIX "firebase_batch.pb", &on);
	const uint8_t *orig = (const uint8_t *)o;

	no_planted("the protobuf", (const char *)pb, n);
	cr_assert_eq(pb_fields(pb, n, batch, 4), 1);
	nb = pb_fields(batch[0].p, batch[0].n, bundle, 32);
	{
		struct pbf ob[4], obundle[32];
		int onb;
		cr_assert_eq(pb_fields(orig, on, ob, 4), 1);
		onb = pb_fields(ob[0].p, ob[0].n, obundle, 32);
		cr_assert_eq(nb, onb, "no field added or lost");
		for (int i = 0; i < nb; i++) {
			cr_expect_eq(bundle[i].num, obundle[i].num);
			if (bundle[i].num == 19 || bundle[i].num == 21 || bundle[i].num == 27 ||
			    bundle[i].num == 30 || bundle[i].num == 2 || bundle[i].num == 3)
				continue;
			cr_expect(bundle[i].v == obundle[i].v && bundle[i].n == obundle[i].n &&
			                  (!bundle[i].n ||
			                   memcmp(bundle[i].p, obundle[i].p, bundle[i].n) == 0),
			          "field %u changed", bundle[i].num);
		}
	}
	for (int i = 0; i < nb; i++) {
		if (bundle[i].num == 19)
			cr_expect_eq(bundle[i].n, 36, "the advertising id stays a UUID");
		if (bundle[i].num == 2) {
			/* the event: its param "client_ip" had the address, truncated */
			ne = pb_fields(bundle[i].p, bundle[i].n, ev, 8);
			for (int e = 0; e < ne; e++)
				if (ev[e].num == 1 && pb_fields(ev[e].p, ev[e].n, par, 4) == 2 &&
				    par[0].n == 9 && memcmp(par[0].p, "client_ip", 9) == 0) {
					cr_expect(par[1].n == 11 &&
					          memcmp(par[1].p, "203.0.113.0", 11) == 0);
					k++;
				}
		}
		if (bundle[i].num == 3 && pb_fields(bundle[i].p, bundle[i].n, up, 4) == 3 &&
		    up[1].n == 7 && memcmp(up[1].p, "contact", 7) == 0) {
			cr_expect_eq(up[2].n, 32, "a phone number in a user property, hashed");
			k++;
		}
	}
	cr_expect_eq(k, 2);
	free(o);
}

Test(sdk, firebase_gzip_protobuf)
{
	struct req r = {"app-measurement.com", "/a", FORM, "gzip", NULL, NULL, false};
	struct ap_span res;
	bool changed;
	char *raw;
	size_t rn;

	/* Content-Encoding: gzip, then protobuf */
	cr_assert_eq(scrub(&r, "firebase_batch.pb.gz", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	raw = gunzip(res.p, res.n, &rn);
	firebase_check((uint8_t *)raw, rn);
	free(raw);
	/* gzip bytes without the header: the optional gzip step opens them */
	r.cenc = NULL;
	r.ctype = "application/x-protobuf";
	cr_assert_eq(scrub(&r, "firebase_batch.pb.gz", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	raw = gunzip(res.p, res.n, &rn);
	firebase_check((uint8_t *)raw, rn);
	free(raw);
	/* and plain protobuf */
	cr_assert_eq(scrub(&r, "firebase_batch.pb", &res, &changed), AP_OK, "%s", sc.why);
	cr_assert(changed);
	firebase_check((const uint8_t *)res.p, res.n);
}

/* ---- opaque: Umeng, JPush ---- */

Test(sdk, umeng_and_jpush_opaque)
{
	struct req um = {
	        "ulogs.umeng.com", "/unify_logs", "application/octet-stream", NULL, "Msg-Type",
	        "envelope/json",   false};
	struct req um2 = {
	        "ulogs.umeng.com", "/unify_logs", "envelope/json", NULL, NULL, NULL, false};
	struct req jp = {"stats.jpush.cn",
	                 "/v3/report",
	                 "application/octet-stream",
	                 NULL,
	                 NULL,
	                 NULL,
	                 false};
	struct req *all[] = {&um, &um2, &jp};
	static const char *const files[] = {"umeng_envelope.bin", "umeng_envelope.bin",
	                                    "jpush_report.bin"};
	struct ap_span res;
	bool changed;

	for (int i = 0; i < 3; i++) {
		cr_expect_eq(scrub(all[i], files[i], &res, &changed), AP_ERR, "%d", i);
		cr_expect_eq(status, 415);
		cr_expect_eq(sc.st.opaque, 1);
		all[i]->pass = true;
		cr_expect_eq(scrub(all[i], files[i], &res, &changed), AP_OK, "%d", i);
		cr_expect_not(changed);
		cr_expect_eq(sc.st.opaque, 1);
	}
	/* without the header nor the type, an Umeng body is not opaque: an unknown type,
	 * refused as the route's unknown_content says */
	um.hname = NULL;
	um.pass = false;
	cr_expect_eq(scrub(&um, "umeng_envelope.bin", &res, &changed), AP_ERR);
	cr_expect_eq(status, 415);
	cr_expect_eq(sc.st.opaque, 0);
	cr_expect_str_eq(sc.why, "content type not scrubbed on this route");
}
