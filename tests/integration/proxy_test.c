/* The real anonproxy between a raw client and the recording upstream, on loopback. Each
 * test states what the upstream must receive — to the byte where it can — and what the
 * client must get back: scrubbed bodies of every kind, framing, keep-alive on both sides,
 * pipelining, every smuggling and limit case refused with nothing forwarded, upstream
 * failures, reload under load, TLS on both sides, drain on SIGTERM. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <zlib.h>

#include "conf.h"
#include "harness.h"
#include "scrub.h"

static const char IMEI[] = "356938035643809";
static const char MAC[] = "a4:5e:60:c2:17:9b";

struct env {
	struct ht_recorder up;
	pid_t proxy;
	int port, admin;
	const char *conf;  /* path of the configuration file */
	const char *token; /* the admin token */
	bool inspect;      /* start with --inspect */
	bool log_bodies;   /* the /sink route's sink logs the bodies it gets */
};

static struct env E;

/* A configuration: the analytics-like ruleset, one route to the recorder (or <upstream_url>
 * when given), <extra> spliced into the root object. */
static const char *write_conf(const char *upstream_url, const char *extra)
{
	unsigned char key[32];
	const char *path = ht_path("anonproxy.json");

	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i * 13 + 7);
	cr_assert(ht_write(ht_path("test.key"), key, sizeof(key), 0600));
	cr_assert(ht_write_str(ht_path("admin.token"), "0123456789abcdef0123456789abcdef"));
	chmod(ht_path("admin.token"), 0600);
	E.token = "0123456789abcdef0123456789abcdef";
	cr_assert(ht_write_str(
	        path,
	        ht_fmt("{\"listen\": \"127.0.0.1:%d\", \"workers\": 1,"
	               " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token_file\": "
	               "\"admin.token\"},"
	               " \"keys\": {\"active\": \"k1\", \"files\": {\"k1\": \"test.key\"}},"
	               " \"upstreams\": {\"rec\": {\"url\": \"%s\"}%s},"
	               " \"rulesets\": {\"r\": {"
	               "   \"detect\": [\"imei\", \"mac\", \"ip\"],"
	               "   \"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16},"
	               "                 \"mac\": {\"action\": \"hash\", \"length\": 16},"
	               "                 \"ip\": \"truncate_ip\"},"
	               "   \"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]},"
	               "              {\"class\": \"mac\", \"keys\": [\"mac\"]},"
	               "              {\"class\": \"oaid\", \"keys\": [\"oaid\"], \"action\": "
	               "\"drop\"},"
	               "              {\"keys\": [\"data\"], \"codec\": [\"base64\", \"json\"]}],"
	               "   \"headers\": [{\"name\": \"X-Device-Id\", \"class\": \"device_id\","
	               "                  \"action\": \"hash\", \"length\": 16}]}},"
	               " \"routes\": [{\"path\": \"/sink\", \"upstream\": \"%s\", \"ruleset\": "
	               "\"r\"},"
	               "            {\"path\": \"/\", \"upstream\": \"rec\", \"ruleset\": \"r\"}]"
	               " %s}",
	               E.port, E.admin,
	               upstream_url ? upstream_url : ht_fmt("http://127.0.0.1:%d", E.up.port),
	               E.log_bodies ? ", \"logsink\": {\"sink\": true, \"log_bodies\": true}" : "",
	               E.log_bodies ? "logsink" : "sink", extra ? extra : "")));
	return path;
}

static void start_proxy(const char *upstream_url, const char *extra)
{
	E.port = ht_free_port();
	E.admin = ht_free_port();
	E.conf = write_conf(upstream_url, extra);
	E.proxy = ht_start((const char *[]){ht_bin("anonproxy"), "-c", E.conf,
	                                    E.inspect ? "--inspect" : NULL, NULL},
	                   "proxy");
	cr_assert(ht_wait_port(E.port, E.proxy, 5000), "proxy did not start: %s", ht_err(E.proxy));
}

static void setup(void)
{
	ht_setup();
	memset(&E, 0, sizeof(E));
	cr_assert(ht_recorder_start(&E.up, "up", NULL, NULL));
}

static void teardown(void)
{
	if (E.proxy)
		cr_expect_eq(ht_stop(E.proxy, 10000), 0, "proxy exit: %s", ht_err(E.proxy));
	ht_recorder_stop(&E.up);
	ht_teardown();
}

/* What the scrubbing core makes of <body> under this test's ruleset: the bytes the
 * upstream must receive, computed in-process from the same configuration. */
static char *expected_body(const char *ctype, const char *cenc, const char *body, size_t n,
                           size_t *out_len)
{
	char err[AP_CONF_ERR_MAX];
	size_t tl;
	char *text = ht_read(E.conf, &tl);
	struct ap_conf *c = ap_conf_parse(text, tl, ht_dir(), err);
	struct ap_scrub sc;
	struct ap_buf out = {0};
	bool changed;
	int status;
	char *res;

	cr_assert_not_null(c, "%s", err);
	cr_assert_eq(ap_scrub_init(&sc, &c->keys.keys[c->keys.active]), AP_OK);
	ap_scrub_begin(&sc, ap_conf_ruleset(c, "r"), 64, 8 << 20);
	cr_assert_eq(ap_scrub_body(&sc, (struct ap_span){ctype, strlen(ctype)},
	                           (struct ap_span){cenc, strlen(cenc)}, AP_UNKNOWN_REJECT,
	                           (struct ap_span){body, n}, &out, &changed, &status),
	             AP_OK);
	res = ht_alloc(changed ? out.len + 1 : n + 1);
	memcpy(res, changed ? out.p : body, changed ? out.len : n);
	*out_len = changed ? out.len : n;
	ap_buf_free(&out);
	ap_scrub_free(&sc);
	ap_conf_free(c);
	return res;
}

static struct ht_result *post(const char *path, const char *ctype, const char *body)
{
	return ht_exchange_str(E.port,
	                       ht_fmt("POST %s HTTP/1.1\r\nHost: ingest.example\r\n"
	                              "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
	                              path, ctype, strlen(body), body),
	                       1, 5000);
}

TestSuite(proxy, .init = setup, .fini = teardown, .timeout = 60);

Test(proxy, json_body_scrubbed_exact_bytes_upstream)
{
	const char *body = ht_fmt(
	        "{\"imei\":\"%s\",\"device\":{\"mac\":\"%s\",\"oaid\":\"x\"},\"n\":1}", IMEI, MAC);
	struct ht_result *r;
	size_t el, rl;
	const char *want, *raw;

	start_proxy(NULL, NULL);
	r = post("/v1/track?imei=356938035643809&x=1", "application/json", body);
	cr_assert_eq(r->nresp, 1, "%s", r->why ? r->why : "");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_not_null(strstr(r->resp[0].body, "\"ok\":true"), "the upstream's body came back");
	want = expected_body("application/json", "", body, strlen(body), &el);
	raw = ht_rec_raw(&E.up, 1, &rl);
	cr_assert_not_null(raw);
	{
		/* Everything the upstream got, to the byte: the query's IMEI has the pseudonym
		 * the body's has (the same rule), the head is rebuilt as operations.md says. */
		const char *at = strstr(want, "\"imei\":\"");
		cr_assert_not_null(at);
		const char *head = ht_fmt("POST /v1/track?imei=%.16s&x=1 HTTP/1.1\r\n"
		                          "Host: 127.0.0.1:%d\r\n"
		                          "Content-Type: application/json\r\n"
		                          "X-Forwarded-For: 127.0.0.0\r\n"
		                          "Content-Length: %zu\r\n\r\n",
		                          at + 8, E.up.port, el);
		struct ht_msg *m = ht_rec_req(&E.up, 1);
		cr_assert_eq(m->body_len, el);
		cr_assert(memcmp(m->body, want, el) == 0, "body %s\nwant %s", m->body, want);
		cr_assert_null(strstr(raw, IMEI), "the raw IMEI reached the upstream");
		cr_assert_null(strstr(raw, MAC));
		cr_assert_null(strstr(raw, "oaid"), "dropped key reached the upstream");
		/* The query's IMEI is hashed like the body's. */
		cr_assert_eq(rl, strlen(head) + el);
		cr_assert_eq(memcmp(raw, head, strlen(head)), 0, "head:\n%.*s\nwant:\n%s",
		             (int)strlen(head), raw, head);
		cr_assert_eq(memcmp(raw + strlen(head), want, el), 0);
		cr_assert_eq(ht_header_count(m, "X-Forwarded-For"), 1);
		cr_assert_str_eq(ht_header(m, "X-Forwarded-For"), "127.0.0.0");
		cr_assert_str_eq(ht_header(m, "Host"), ht_fmt("127.0.0.1:%d", E.up.port));
		cr_assert_str_eq(ht_header(m, "Content-Length"), ht_fmt("%zu", el));
	}
	/* Nothing identifying in the proxy's own log. */
	cr_assert_null(strstr(ht_err(E.proxy), IMEI));
}

/* An identifier that is a whole path segment is scrubbed too: the upstream gets the
 * segment's pseudonym (the same the body would get), the rest of the path as sent. */
Test(proxy, path_segments_scrubbed)
{
	struct ht_result *r;
	struct ht_msg *m;
	const char *raw, *seg;
	size_t rl, el;
	const char *want;

	start_proxy(NULL, NULL);
	r = post(ht_fmt("/v1/devices/%s/events/a4-5e-60-c2-17-9b?x=1", IMEI), "application/json",
	         ht_fmt("\"%s\"", IMEI));
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	m = ht_rec_req(&E.up, 1);
	raw = ht_rec_raw(&E.up, 1, &rl);
	cr_assert_null(strstr(raw, IMEI), "the IMEI reached the upstream: %s", m->target);
	cr_assert_null(strstr(raw, "a4-5e-60-c2-17-9b"));
	/* the body, a JSON string holding the IMEI, says what its pseudonym is */
	want = expected_body("application/json", "", ht_fmt("\"%s\"", IMEI), 17, &el);
	cr_assert_eq(el, 18, "%.*s", (int)el, want);
	seg = ht_fmt("/v1/devices/%.16s/events/", want + 1);
	cr_assert_eq(strncmp(m->target, seg, strlen(seg)), 0, "%s", m->target);
	cr_assert_str_eq(m->target + strlen(seg) + 16, "?x=1", "%s", m->target);

	/* The access log (stderr here) shows neither: segments a detector recognises are
	 * ":id", query values go, and a query name that is an identifier is ":id" too. */
	r = post(ht_fmt("/q/%s?%s&imei=%s&a%%41=1", MAC, IMEI, IMEI), "application/json", "{}");
	cr_assert_eq(r->resp[0].status, 200);
	{
		const char *log = NULL;
		for (int i = 0; i < 100; i++) {
			log = ht_err(E.proxy);
			if (strstr(log, "/q/"))
				break;
			usleep(20000);
		}
		cr_assert_not_null(strstr(log, "/v1/devices/:id/events/:id?x="), "%s", log);
		cr_assert_not_null(strstr(log, "/q/:id?:id&imei=&:id="), "%s", log);
		{
			/* The access line: the client's address truncated, then the fields in
			 * the order operations.md gives. */
			const char *line = strstr(log, "/q/:id"), *bol = line;
			while (bol > log && bol[-1] != '\n')
				bol--;
			const char *eol = strchr(line, '\n');
			char *l = strndup(bol, eol ? (size_t)(eol - bol) : strlen(bol));
			cr_assert_not_null(
			        strstr(l, "Z 127.0.0.0 \"POST /q/:id?:id&imei=&:id=\" 200 "), "%s",
			        l);
			/* the MAC segment, the IMEI as a name and as a value, X-Forwarded-For */
			cr_assert_not_null(strstr(l, " route=*/ findings=4"), "%s", l);
			cr_assert_null(strstr(l, "127.0.0.1"), "%s", l);
			free(l);
		}
		cr_assert_null(strstr(log, IMEI), "%s", log);
		cr_assert_null(strstr(log, MAC), "%s", log);
		cr_assert_null(strstr(log, "a4-5e-60-c2-17-9b"), "%s", log);
	}
}

Test(proxy, form_and_nested_base64_scrubbed)
{
	const char *json = ht_fmt("{\"imei\":\"%s\"}", IMEI);
	char b64[256];
	size_t el;
	const char *body, *want;
	struct ht_result *r;
	struct ht_msg *m;

	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)json, (int)strlen(json));
	body = ht_fmt("imei=%s&mac=%s&data=%s&keep=1", IMEI, "a4%3A5e%3A60%3Ac2%3A17%3A9b", b64);
	/* '+' and '/' and '=' in base64 are percent-encoded as a form encoder must. */
	{
		char *enc = ht_alloc(strlen(body) * 3 + 1), *o = enc;
		for (const char *p = body; *p; p++) {
			if (*p == '+' || *p == '/' ||
			    (*p == '=' && p > body && strchr(p, '&') == NULL && p[-1] == '='))
				o += sprintf(o, "%%%02X", (unsigned char)*p);
			else
				*o++ = *p;
		}
		*o = 0;
		body = enc;
	}
	start_proxy(NULL, NULL);
	r = post("/f", "application/x-www-form-urlencoded", body);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	want = expected_body("application/x-www-form-urlencoded", "", body, strlen(body), &el);
	m = ht_rec_req(&E.up, 1);
	cr_assert_eq(m->body_len, el);
	cr_assert(memcmp(m->body, want, el) == 0, "got %s\nwant %s", m->body, want);
	cr_assert_null(strstr(m->body, IMEI));
	cr_assert_null(strstr(m->body, "a4%3A5e"));
	cr_assert_null(strstr(m->body, b64), "the base64 document went through unchanged");
}

static unsigned char *gz(const char *s, size_t *n)
{
	z_stream z = {0};
	unsigned char *out = ht_alloc(strlen(s) + 256);

	cr_assert_eq(deflateInit2(&z, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)s;
	z.avail_in = (uInt)strlen(s);
	z.next_out = out;
	z.avail_out = (uInt)strlen(s) + 256;
	cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	*n = z.total_out;
	deflateEnd(&z);
	return out;
}

static char *gunzip(const char *p, size_t n, size_t *out_n)
{
	z_stream z = {0};
	char *out = ht_alloc(1 << 20);

	cr_assert_eq(inflateInit2(&z, 16 + 15), Z_OK);
	z.next_in = (unsigned char *)p;
	z.avail_in = (uInt)n;
	z.next_out = (unsigned char *)out;
	z.avail_out = 1 << 20;
	cr_assert_eq(inflate(&z, Z_FINISH), Z_STREAM_END);
	*out_n = z.total_out;
	inflateEnd(&z);
	return out;
}

Test(proxy, gzip_body_recompressed)
{
	const char *json =
	        ht_fmt("[{\"imei\":\"%s\",\"mac\":\"%s\"},{\"imei\":\"%s\"}]", IMEI, MAC, IMEI);
	size_t zn, el, dn;
	unsigned char *z = gz(json, &zn);
	struct ht_client *c;
	struct ht_result *r;
	struct ht_msg *m;
	char *dec;
	const char *want;

	start_proxy(NULL, NULL);
	c = ht_connect(E.port);
	ht_send_str(c, ht_fmt("POST /g HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	                      "Content-Encoding: gzip\r\nContent-Length: %zu\r\n\r\n",
	                      zn));
	ht_send(c, z, zn);
	r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	ht_close(c);
	m = ht_rec_req(&E.up, 1);
	cr_assert_str_eq(ht_header(m, "Content-Encoding"), "gzip");
	dec = gunzip(m->body, m->body_len, &dn);
	want = expected_body("application/json", "", json, strlen(json), &el);
	cr_assert_eq(dn, el);
	cr_assert(memcmp(dec, want, el) == 0);
	cr_assert_null(strstr(dec, IMEI));
}

Test(proxy, chunked_request_forwarded_with_length)
{
	const char *json = ht_fmt("{\"imei\":\"%s\"}", IMEI);
	size_t half = strlen(json) / 2, el;
	struct ht_client *c;
	struct ht_result *r;
	struct ht_msg *m;
	const char *want;

	start_proxy(NULL, NULL);
	const char *req =
	        ht_fmt("POST /c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	               "Transfer-Encoding: chunked\r\n\r\n%zx;ext=1\r\n%.*s\r\n%zx\r\n%s\r\n"
	               "0\r\nTrailer-Field: t\r\n\r\n",
	               half, (int)half, json, strlen(json) - half, json + half);
	c = ht_connect(E.port);
	ht_send_pieces(c, req, strlen(req), 7, 2);
	r = ht_recv(c, 1, 5000);
	ht_close(c);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	m = ht_rec_req(&E.up, 1);
	want = expected_body("application/json", "", json, strlen(json), &el);
	cr_assert_eq(ht_header_count(m, "Transfer-Encoding"), 0);
	cr_assert_str_eq(ht_header(m, "Content-Length"), ht_fmt("%zu", el));
	cr_assert_eq(m->body_len, el);
	cr_assert(memcmp(m->body, want, el) == 0);
	cr_assert_null(strstr(ht_rec_raw(&E.up, 1, &el), "Trailer-Field"));
}

Test(proxy, pipelined_in_order_and_keepalive_both_sides)
{
	struct ht_client *c;
	struct ht_result *r;
	struct ht_rec_entry *log;
	size_t n;

	start_proxy(NULL, NULL);
	c = ht_connect(E.port);
	ht_send_str(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	               "GET /delay/150 HTTP/1.1\r\nHost: x\r\n\r\n"
	               "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	               "Content-Length: 7\r\n\r\n{\"a\":1}"
	               "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
	r = ht_recv(c, 4, 5000);
	cr_assert_eq(r->nresp, 4, "%s", r->why ? r->why : "");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(r->resp[i].status, 200);
	cr_assert_str_eq(r->resp[2].body, "{\"a\":1}", "answers in the order asked");
	cr_assert_not(r->closed);
	/* Still open: one more on the same client connection. */
	ht_send_str(c, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
	r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	ht_close(c);
	n = ht_rec_log(&E.up, &log);
	cr_assert_eq(n, 5);
	cr_assert_str_eq(log[0].target, "/a");
	cr_assert_str_eq(log[1].target, "/delay/150");
	cr_assert_str_eq(log[3].target, "/b");
	for (size_t i = 1; i < n; i++)
		cr_assert_eq(log[i].conn, log[0].conn, "the upstream connection was kept alive");
}

Test(proxy, response_framings_relayed)
{
	struct ht_result *r;

	start_proxy(NULL, NULL);
	r = ht_exchange_str(E.port, "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert(r->resp[0].chunked);
	cr_assert_not_null(strstr(r->resp[0].body, "\"chunked\":true"));
	r = ht_exchange_str(E.port, "GET /big/300000 HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].body_len, 300000);
	cr_assert_eq(r->resp[0].body[299999], 'a' + 299999 % 26);
	r = ht_exchange_str(E.port, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert(r->resp[0].until_close || ht_header(&r->resp[0], "Connection"));
	cr_assert(r->closed, "a close-delimited answer closes the client connection: %s %s", r->raw,
	          r->why ? r->why : "");
	r = ht_exchange_str(E.port,
	                    "HEAD /head-test HTTP/1.1\r\nHost: x\r\n\r\n"
	                    "GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
	                    "GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
	                    "GET /status/503 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	                    0, 5000); /* read until the proxy closes */
	cr_assert_eq(r->nresp, 4, "%s", r->why ? r->why : "");
	cr_assert_eq(r->resp[0].body_len, 0);
	cr_assert_eq(r->resp[1].status, 204);
	cr_assert_eq(r->resp[2].status, 304);
	cr_assert_eq(r->resp[3].status, 503);
	cr_assert(r->closed);
}

Test(proxy, expect_100_continue)
{
	struct ht_client *c;
	struct ht_result *r;

	start_proxy(NULL, NULL);
	c = ht_connect(E.port);
	ht_send_str(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	               "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n");
	r = ht_recv(c, 1, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 100);
	ht_send_str(c, "{}");
	r = ht_recv(c, 1, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_str_eq(r->resp[0].body, "{}");
	ht_close(c);
	cr_assert_eq(ht_header_count(ht_rec_req(&E.up, 1), "Expect"), 0);
}

/* Every request the proxy cannot parse unambiguously, or that breaks a limit, gets its
 * status and never reaches the upstream. */
Test(proxy, smuggling_and_limits_refused_nothing_forwarded)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: "
	         "chunked\r\n\r\n0\r\n\r\n",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: "
	         "5\r\n\r\nabcde",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: "
	         "4\r\n\r\nabcd",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", 400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4 4\r\n\r\nabcd", 400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "
	         "identity\r\n\r\n0\r\n\r\n",
	         501},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	         501},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
	         "chunked\r\n\r\n0\r\n\r\n",
	         400},
	        {"GET /s HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", 400},
	        {"GET /s HTTP/1.1\nHost: x\n\n", 400},
	        {"GET /s HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400},
	        {"GET /s HTTP/1.1\r\nHost : x\r\n\r\n", 400},
	        {"GET /s HTTP/1.1\r\n\r\n", 400},
	        {"GET /s HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
	        {"GET /s HTTP/2.0\r\nHost: x\r\n\r\n", 505},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	         "chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	         "chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
	         400},
	        /* A chunk size past the body limit is refused before its digits end. */
	        {"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
	         "chunked\r\n\r\n10000000000000000\r\n",
	         413},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
	         "9\r\n\r\n{\"imei\":1",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: "
	         "2\r\n\r\nhi",
	         415},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Type: "
	         "application/json\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}",
	         415},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Type: "
	         "application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
	         400},
	        {"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413},
	        {"GET /s HTTP/1.1\r\nHost: x\r\nExpect: fancy\r\n\r\n", 417},
	        {"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405},
	};

	start_proxy(NULL, NULL);
	for (size_t i = 0; i < AP_ARRAY_LEN(cases); i++) {
		struct ht_result *r = ht_exchange_str(E.port, cases[i].req, 1, 5000);
		cr_assert_eq(r->nresp, 1, "case %zu: no answer (%s)", i, r->why ? r->why : "");
		cr_expect_eq(r->resp[0].status, cases[i].status, "case %zu: %d, want %d: %s", i,
		             r->resp[0].status, cases[i].status, cases[i].req);
		cr_expect_null(strstr(r->raw, "356938"), "a refusal echoes no request data");
	}
	{
		/* Limits: a 20 KB header line, 200 headers, a 10 KB target. */
		char *big = ht_alloc(20000);
		struct ht_result *r;
		memset(big, 'a', 19999);
		big[19999] = 0;
		r = ht_exchange_str(E.port,
		                    ht_fmt("GET /s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big),
		                    1, 5000);
		cr_assert_eq(r->nresp, 1);
		cr_expect_eq(r->resp[0].status, 431);
		big[9000] = 0;
		r = ht_exchange_str(E.port, ht_fmt("GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", big), 1,
		                    5000);
		cr_assert_eq(r->nresp, 1);
		cr_expect_eq(r->resp[0].status, 414);
		{
			char *h = ht_alloc(200 * 16 + 64), *o = h;
			o += sprintf(o, "GET /s HTTP/1.1\r\nHost: x\r\n");
			for (int i = 0; i < 200; i++)
				o += sprintf(o, "X-H%d: v\r\n", i);
			strcpy(o, "\r\n");
			r = ht_exchange_str(E.port, h, 1, 5000);
			cr_assert_eq(r->nresp, 1);
			cr_expect_eq(r->resp[0].status, 431);
		}
	}
	ht_sleep_ms(200);
	cr_assert_eq(ht_rec_wait(&E.up, 1, 100), 0, "a refused request reached the upstream");
}

Test(proxy, client_timeout_408)
{
	struct ht_client *c;
	struct ht_result *r;

	start_proxy(NULL, ",\"limits\": {\"client_header_timeout_ms\": 300, "
	                  "\"client_body_timeout_ms\": 300}");
	c = ht_connect(E.port);
	ht_send_str(c, "POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
	r = ht_recv(c, 1, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 408);
	cr_assert(r->ms < 2000);
	ht_close(c);
	cr_assert_eq(ht_rec_wait(&E.up, 1, 100), 0);
}

Test(proxy, upstream_down_502_slow_504)
{
	int dead = ht_free_port();
	struct ht_result *r;
	long t0;

	start_proxy(ht_fmt("http://127.0.0.1:%d", dead),
	            ",\"limits\": {\"upstream_connect_timeout_ms\": 500, "
	            "\"upstream_response_timeout_ms\": 400}");
	t0 = ht_now_ms();
	r = ht_exchange_str(E.port, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 502);
	cr_assert(ht_now_ms() - t0 < 1500);
	ht_stop(E.proxy, 5000);
	E.proxy = 0;
	start_proxy(NULL, ",\"limits\": {\"upstream_response_timeout_ms\": 400}");
	t0 = ht_now_ms();
	r = ht_exchange_str(E.port, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 504);
	cr_assert(ht_now_ms() - t0 < 2000);
	r = ht_exchange_str(E.port, "GET /reset HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 502);
	/* The proxy keeps serving after its upstream misbehaved. */
	r = ht_exchange_str(E.port, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
}

/* An upstream whose accept queue is full: its kernel drops new SYNs, so a connect neither
 * succeeds nor fails. The proxy gives up after upstream_connect_timeout_ms with 502. */
Test(proxy, upstream_connect_timeout_502)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int ls = socket(AF_INET, SOCK_STREAM, 0), fill[16], nfill = 0;
	struct ht_result *r;
	long t0, ms;

	cr_assert(ls >= 0);
	cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(ls, 0), 0);
	cr_assert_eq(getsockname(ls, (struct sockaddr *)&a, &al), 0);
	/* connect until one hangs: the queue is full */
	for (;;) {
		cr_assert(nfill < 16, "the accept queue never filled");
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		fill[nfill++] = fd;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			continue;
		cr_assert_eq(errno, EINPROGRESS);
		if (poll(&pf, 1, 200) == 0)
			break;
	}
	start_proxy(ht_fmt("http://127.0.0.1:%d", ntohs(a.sin_port)),
	            ",\"limits\": {\"upstream_connect_timeout_ms\": 300}");
	t0 = ht_now_ms();
	r = ht_exchange_str(E.port, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	ms = ht_now_ms() - t0;
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 502);
	cr_assert(ms >= 250 && ms < 2000, "502 after %ld ms, not after the 300 ms timeout", ms);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(ls);
}

Test(proxy, sink_answers_204_without_upstream)
{
	struct ht_result *r;

	start_proxy(NULL, NULL);
	r = post("/sink/x", "application/json", ht_fmt("{\"imei\":\"%s\"}", IMEI));
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 204);
	cr_assert_eq(ht_rec_wait(&E.up, 1, 100), 0);
}

/* Waits until the proxy's stderr holds <what>; returns the text. */
static const char *err_with(const char *what)
{
	const char *t = ht_err(E.proxy);
	for (int i = 0; i < 100 && !strstr(t, what); i++) {
		usleep(20000);
		t = ht_err(E.proxy);
	}
	return t;
}

/* --inspect: one block per request on stderr, the route, each finding with its class,
 * where, action and the value masked, and what was forwarded; a refusal says why. No
 * colour when stderr is not a terminal. With log_bodies the sink prints the scrubbed body. */
Test(proxy, inspect_and_sink_log)
{
	const char *t, *blk;
	struct ht_result *r;

	E.inspect = E.log_bodies = true;
	start_proxy(NULL, NULL);
	r = ht_exchange_str(E.port,
	                    ht_fmt("POST /v1/d/%s?imei=%s HTTP/1.1\r\nHost: x\r\n"
	                           "X-Device-Id: dev-1\r\nContent-Type: application/json\r\n"
	                           "Content-Length: %zu\r\n\r\n{\"mac\":\"%s\",\"n\":1}",
	                           IMEI, IMEI, strlen(MAC) + 16, MAC),
	                    1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	t = err_with("forwarded");
	blk = strstr(t, "POST /v1/d/:id?imei=  route */ -> rec (ruleset r)\n");
	cr_assert_not_null(blk, "%s", t);
	cr_assert_not_null(
	        strstr(blk,
	               "  imei       path   hash        ************09   path:[2]  (detected)\n"),
	        "%s", blk);
	cr_assert_not_null(
	        strstr(blk, "  imei       query  hash        ************09   query:imei\n"), "%s",
	        blk);
	cr_assert_not_null(
	        strstr(blk,
	               "  device_id  header hash        ***-1            header:X-Device-Id\n"),
	        "%s", blk);
	cr_assert_not_null(strstr(blk, "  mac        body   hash        ************9b   $.mac\n"),
	                   "%s", blk);
	cr_assert_not_null(strstr(blk, "  forwarded 32 body bytes\n"), "%s", blk);
	/* a refusal */
	r = post("/bad", "application/json", "{\"imei\":");
	cr_assert_eq(r->resp[0].status, 400);
	t = err_with("REFUSED");
	blk = strstr(t, "POST /bad  route */ -> rec (ruleset r)\n");
	cr_assert_not_null(blk, "%s", t);
	cr_assert_not_null(strstr(blk, "  REFUSED: unexpected end of JSON\n"), "%s", blk);
	/* the sink's log: the body as forwarded, pseudonyms and all */
	r = post("/sink/x", "application/json", ht_fmt("{\"imei\":\"%s\"}", IMEI));
	cr_assert_eq(r->resp[0].status, 204);
	t = err_with("sink: route");
	cr_assert_not_null(strstr(t, "sink: route */sink, 27 scrubbed body bytes\n{\"imei\":\""),
	                   "%s", t);
	cr_assert_null(strstr(t, IMEI), "%s", t);
	cr_assert_null(strstr(t, MAC), "%s", t);
	cr_assert_null(strstr(t, "\033["), "colour on a pipe");
}

Test(proxy, headers_scrubbed)
{
	struct ht_result *r;
	struct ht_msg *m;

	start_proxy(NULL, NULL);
	r = ht_exchange_str(
	        E.port,
	        "GET /h HTTP/1.1\r\nHost: x\r\nX-Device-Id: dev-12345\r\n"
	        "X-Forwarded-For: 203.0.113.77, 10.9.8.7\r\n"
	        "X-Real-IP: 198.51.100.23\r\nForwarded: for=192.0.2.60;proto=http\r\n"
	        "Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: 5\r\n\r\n",
	        1, 5000);
	cr_assert_eq(r->nresp, 1);
	m = ht_rec_req(&E.up, 1);
	cr_assert_str_eq(ht_header(m, "X-Forwarded-For"), "203.0.113.0, 10.9.8.0, 127.0.0.0");
	cr_assert_str_eq(ht_header(m, "X-Real-IP"), "198.51.100.0");
	cr_assert_str_eq(ht_header(m, "Forwarded"), "for=192.0.2.0;proto=http");
	cr_assert_not_null(ht_header(m, "X-Device-Id"));
	cr_assert_str_neq(ht_header(m, "X-Device-Id"), "dev-12345");
	cr_assert_null(ht_header(m, "X-Hop"), "headers named in Connection are hop-by-hop");
	cr_assert_null(ht_header(m, "Keep-Alive"));
}

static struct ht_result *admin_reload(void)
{
	return ht_exchange_str(
	        E.admin,
	        ht_fmt("POST /reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
	               "Content-Length: 0\r\n\r\n",
	               E.token),
	        1, 5000);
}

/* A reload swaps the rulesets whole: requests that begin after it get the new ones, on a
 * new connection and on a kept-alive one, while a request whose head arrived before it
 * finishes under the old ones. */
Test(proxy, reload_swaps_rulesets_request_keeps_its_own)
{
	struct ht_client *ka, *slow;
	struct ht_result *r;
	const char *body = ht_fmt("{\"imei\":\"%s\",\"mac\":\"%s\"}", IMEI, MAC);
	const char *req = ht_fmt("POST /k HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	                         "Content-Length: %zu\r\n\r\n%s",
	                         strlen(body), body);
	size_t n;
	char *text;

	start_proxy(NULL, NULL);
	ka = ht_connect(E.port);
	cr_assert_not_null(ka);
	cr_assert(ht_send_str(ka, req));
	r = ht_recv(ka, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_not_null(strstr(ht_rec_req(&E.up, 1)->body, "\"mac\":\""), "hashed, not dropped");
	/* a request whose head is in but whose body is not */
	slow = ht_connect(E.port);
	cr_assert_not_null(slow);
	cr_assert(ht_send(slow, req, strlen(req) - 5));
	usleep(200000);
	/* the new file: "mac" keys are dropped now */
	text = ht_read(E.conf, &n);
	cr_assert_not_null(strstr(text, "{\"class\": \"mac\", \"keys\": [\"mac\"]}"));
	{
		char *at = strstr(text, "{\"class\": \"mac\", \"keys\": [\"mac\"]}");
		const char *nw = ht_fmt("%.*s{\"class\": \"mac\", \"keys\": [\"mac\"], \"action\": "
		                        "\"drop\"}%s",
		                        (int)(at - text), text,
		                        at + strlen("{\"class\": \"mac\", \"keys\": [\"mac\"]}"));
		cr_assert(ht_write_str(E.conf, nw));
	}
	r = admin_reload();
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200, "%s", r->resp[0].body);
	usleep(300000); /* the workers take the new configuration from the master */
	/* the slow request ends under the old ruleset */
	cr_assert(ht_send_str(slow, req + strlen(req) - 5));
	r = ht_recv(slow, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_not_null(strstr(ht_rec_req(&E.up, 2)->body, "\"mac\":\""), "%s",
	                   ht_rec_req(&E.up, 2)->body);
	/* the kept-alive connection and a new one get the new one */
	cr_assert(ht_send_str(ka, req));
	r = ht_recv(ka, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_null(strstr(ht_rec_req(&E.up, 3)->body, "mac"), "%s", ht_rec_req(&E.up, 3)->body);
	r = post("/k2", "application/json", body);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_null(strstr(ht_rec_req(&E.up, 4)->body, "mac"), "%s", ht_rec_req(&E.up, 4)->body);
	cr_assert_not_null(strstr(ht_rec_req(&E.up, 4)->body, "\"imei\":\""));
	ht_close(ka);
	ht_close(slow);
}

Test(proxy, reload_under_load_no_failed_request)
{
	pid_t loader;
	int failed = 0, done = 0;

	start_proxy(NULL, NULL);
	loader = fork();
	if (loader == 0) {
		/* 300 requests while reloads happen: odd ones on one kept-alive connection,
		 * even ones each on a fresh connection. */
		int bad = 0;
		struct ht_client *ka = ht_connect(E.port);
		for (int i = 0; i < 300; i++) {
			const char *req =
			        ht_fmt("POST /l%d HTTP/1.1\r\nHost: x\r\nContent-Type: "
			               "application/json\r\n"
			               "Content-Length: 26\r\n\r\n{\"imei\":\"356938035643809\"}",
			               i);
			struct ht_result *r;
			if (i % 2 && ka && ht_send_str(ka, req)) {
				r = ht_recv(ka, 1, 5000);
			} else if (i % 2) {
				bad++; /* the kept-alive connection is gone */
				continue;
			} else {
				r = ht_exchange_str(E.port, req, 1, 5000);
			}
			if (!r || r->nresp != 1 || r->resp[0].status != 200 || (i % 2 && r->closed))
				bad++;
		}
		if (ka)
			ht_close(ka);
		_exit(bad > 255 ? 255 : bad);
	}
	for (int i = 0; i < 10; i++) {
		struct ht_result *r = admin_reload();
		cr_assert_eq(r->nresp, 1);
		cr_assert_eq(r->resp[0].status, 200, "reload: %s", r->resp[0].body);
		kill(E.proxy, SIGHUP);
		ht_sleep_ms(30);
	}
	{
		int st;
		cr_assert_eq(waitpid(loader, &st, 0), loader);
		cr_assert(WIFEXITED(st));
		failed = WEXITSTATUS(st);
		done = 300;
	}
	cr_assert_eq(failed, 0, "%d of %d requests failed during reloads", failed, done);
	cr_assert_eq(ht_rec_wait(&E.up, 300, 5000), 300);
}

Test(proxy, bad_reload_keeps_running)
{
	struct ht_result *r;

	start_proxy(NULL, NULL);
	{
		/* The same file with one typo. */
		size_t n;
		char *text = ht_read(E.conf, &n), *at = strstr(text, "\"action\": \"drop\"");
		cr_assert_not_null(at);
		memcpy(at, "\"action\": \"hsah\"", 16);
		cr_assert(ht_write_str(E.conf, text));
	}
	r = admin_reload();
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 422);
	cr_assert_not_null(strstr(r->resp[0].body, "unknown action \"hsah\""), "%s",
	                   r->resp[0].body);
	r = post("/still", "application/json", "{}");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	/* Without a token the admin endpoints say 401; health needs none. */
	r = ht_exchange_str(E.admin, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 1, 5000);
	cr_assert_eq(r->resp[0].status, 401);
	r = ht_exchange_str(E.admin, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 1, 5000);
	cr_assert_eq(r->resp[0].status, 200);
}

Test(proxy, metrics_count_requests_and_fields)
{
	struct ht_result *r;
	const char *body;

	const char *b1 = ht_fmt("{\"imei\":\"%s\",\"mac\":\"%s\"}", IMEI, MAC);
	const char *req[3] = {
	        ht_fmt("POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	               "Content-Length: %zu\r\n\r\n%s",
	               strlen(b1), b1),
	        "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	        "Content-Length: 5\r\n\r\n{\"x\":",
	        "GET /reset HTTP/1.1\r\nHost: x\r\n\r\n",
	};
	const int want[3] = {200, 400, 502};
	size_t in = 0, out = 0, up = 0;

	start_proxy(NULL, NULL);
	for (int i = 0; i < 3; i++) {
		r = ht_exchange_str(E.port, req[i], 1, 5000);
		cr_assert_eq(r->nresp, 1);
		cr_assert_eq(r->resp[0].status, want[i]);
		in += strlen(req[i]);
		out += r->raw_len;
	}
	ht_rec_raw(&E.up, 1, &up);
	{
		size_t n2;
		ht_rec_raw(&E.up, 2, &n2); /* the /reset request reached the upstream too */
		up += n2;
	}
	r = ht_exchange_str(
	        E.admin,
	        ht_fmt("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n",
	               E.token),
	        1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	body = r->resp[0].body;
	cr_assert_not_null(strstr(body, "anonproxy_requests_total{route=\"*/\",status=\"200\"} 1"),
	                   "%s", body);
	cr_assert_not_null(strstr(body, "anonproxy_requests_total{route=\"*/\",status=\"400\"} 1"));
	cr_assert_not_null(
	        strstr(body, "anonproxy_fields_total{class=\"imei\",action=\"hash\"} 1"));
	cr_assert_not_null(strstr(body, "anonproxy_fields_total{class=\"mac\",action=\"hash\"} 1"));
	cr_assert_not_null(strstr(body, "anonproxy_refusals_total{reason=\"decode\"} 1"));
	cr_assert_not_null(strstr(body, "anonproxy_requests_total{route=\"*/\",status=\"502\"} 1"));
	cr_assert_not_null(strstr(body, "anonproxy_upstream_errors_total{kind=\"reset\"} 1"), "%s",
	                   body);
	cr_assert_not_null(strstr(body, "anonproxy_upstream_errors_total{kind=\"connect\"} 0"));
	/* bytes: what the client sent and got, what the upstream got, to the byte */
	cr_assert_not_null(
	        strstr(body, ht_fmt("anonproxy_bytes_total{direction=\"in\"} %zu\n", in)),
	        "in %zu out %zu upstream %zu\n%s", in, out, up, body);
	cr_assert_not_null(
	        strstr(body, ht_fmt("anonproxy_bytes_total{direction=\"out\"} %zu\n", out)));
	cr_assert_not_null(
	        strstr(body, ht_fmt("anonproxy_bytes_total{direction=\"upstream\"} %zu\n", up)),
	        "%s", body);
	/* the histogram: cumulative buckets ending in +Inf = count */
	cr_assert_not_null(strstr(body, "anonproxy_request_duration_seconds_count 3"));
	cr_assert_not_null(
	        strstr(body, "anonproxy_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
	{
		const char *b = body;
		long prev = 0, n = 0;
		while ((b = strstr(b, "anonproxy_request_duration_seconds_bucket{le=\""))) {
			long v = strtol(strchr(b, '}') + 2, NULL, 10);
			cr_assert_geq(v, prev, "buckets are cumulative");
			prev = v;
			n++;
			b++;
		}
		cr_assert_eq(n, 15, "14 buckets and +Inf");
	}
	/* the three requests' connections and ht_wait_port's probe */
	cr_assert_not_null(strstr(body, "anonproxy_connections_accepted_total 4\n"), "%s", body);
	cr_assert_null(strstr(body, IMEI));
}

Test(proxy, sigterm_drains_in_flight)
{
	struct ht_client *c;
	struct ht_result *r;

	start_proxy(NULL, NULL);
	c = ht_connect(E.port);
	ht_send_str(c, "GET /delay/600 HTTP/1.1\r\nHost: x\r\n\r\n");
	ht_sleep_ms(150);
	kill(E.proxy, SIGTERM);
	r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1, "the in-flight request was cut");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_str_eq(ht_header(&r->resp[0], "Connection"), "close");
	ht_close(c);
	cr_assert_eq(ht_stop(E.proxy, 10000), 0);
	E.proxy = 0;
}

Test(proxy, worker_restarted_after_crash)
{
	struct ht_result *r;
	FILE *f;
	char line[256];
	int wpid = 0;

	start_proxy(NULL, NULL);
	/* The worker is the master's only child. */
	f = popen(ht_fmt("pgrep -P %d", (int)E.proxy), "r");
	cr_assert_not_null(f);
	if (fgets(line, sizeof(line), f))
		wpid = atoi(line);
	pclose(f);
	cr_assert(wpid > 0);
	kill(wpid, SIGKILL);
	ht_sleep_ms(1500);
	r = ht_exchange_str(E.port, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
}

/* An https upstream named by host name: the proxy sends that name as SNI and checks it
 * against the certificate; a certificate for another name is refused like an untrusted
 * one (502, nothing sent). */
Test(proxy, https_upstream_sni_and_name_check)
{
	struct ht_certs pki, other;
	struct ht_recorder tup;
	struct ht_result *r;

	cr_assert(ht_make_certs(ht_path("pki"), "anonproxy test CA", &pki));
	cr_assert(ht_recorder_start(&tup, "tup", pki.cert, pki.key));
	start_proxy(ht_fmt("https://localhost:%d\", \"ca_file\": \"%s", tup.port, pki.ca), NULL);
	r = post("/s", "application/json", "{}");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200, "%s", ht_err(E.proxy));
	cr_assert_not_null(ht_rec_req(&tup, 1));
	cr_assert_str_eq(ht_read(ht_path("tup/req-0001.sni"), NULL), "localhost");
	cr_assert_str_eq(ht_header(ht_rec_req(&tup, 1), "Host"), ht_fmt("localhost:%d", tup.port));
	ht_stop(E.proxy, 5000);
	E.proxy = 0;
	ht_recorder_stop(&tup);

	cr_assert(ht_make_certs_san(ht_path("pki2"), "anonproxy test CA 2", "DNS:other.example",
	                            &other));
	cr_assert(ht_recorder_start(&tup, "tup2", other.cert, other.key));
	start_proxy(ht_fmt("https://localhost:%d\", \"ca_file\": \"%s", tup.port, other.ca), NULL);
	r = post("/s", "application/json", "{}");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 502);
	cr_assert_eq(ht_rec_wait(&tup, 1, 300), 0,
	             "a request went to a certificate for another name");
	ht_recorder_stop(&tup);
}

Test(proxy, https_upstream_verified_and_tls_listener)
{
	struct ht_certs pki;
	struct ht_recorder tup;
	struct ht_result *r;
	struct ht_client *c;
	const char *why = NULL;

	cr_assert(ht_make_certs(ht_path("pki"), "anonproxy test CA", &pki));
	cr_assert(ht_recorder_start(&tup, "tup", pki.cert, pki.key));
	{
		int tls_port = ht_free_port();
		E.port = ht_free_port();
		E.admin = ht_free_port();
		/* https upstream with our CA; a TLS listener with the same certificate. */
		E.conf = write_conf(
		        ht_fmt("https://127.0.0.1:%d\", \"ca_file\": \"%s", tup.port, pki.ca),
		        ht_fmt(",\"tls\": {\"listen\": \"127.0.0.1:%d\", \"cert\": \"%s\","
		               " \"key\": \"%s\"}",
		               tls_port, pki.cert, pki.key));
		E.proxy = ht_start((const char *[]){ht_bin("anonproxy"), "-c", E.conf, NULL},
		                   "proxy");
		cr_assert(ht_wait_port(E.port, E.proxy, 5000), "%s", ht_err(E.proxy));
		cr_assert(ht_wait_port(tls_port, E.proxy, 5000));
		r = post("/s", "application/json", ht_fmt("{\"imei\":\"%s\"}", IMEI));
		cr_assert_eq(r->nresp, 1);
		cr_assert_eq(r->resp[0].status, 200, "%s", ht_err(E.proxy));
		cr_assert_null(strstr(ht_rec_req(&tup, 1)->body, IMEI));
		c = ht_connect_tls(tls_port, pki.ca, "127.0.0.1", &why);
		cr_assert_not_null(c, "%s", why);
		ht_send_str(c, "GET /over-tls HTTP/1.1\r\nHost: x\r\n\r\n");
		r = ht_recv(c, 1, 5000);
		cr_assert_eq(r->nresp, 1);
		cr_assert_eq(r->resp[0].status, 200);
		ht_close(c);
	}
	/* An upstream whose certificate the proxy cannot verify: 502, nothing sent. */
	ht_stop(E.proxy, 5000);
	E.port = ht_free_port();
	E.admin = ht_free_port();
	E.conf = write_conf(ht_fmt("https://127.0.0.1:%d", tup.port), NULL);
	E.proxy = ht_start((const char *[]){ht_bin("anonproxy"), "-c", E.conf, NULL}, "proxy2");
	cr_assert(ht_wait_port(E.port, E.proxy, 5000));
	r = ht_exchange_str(E.port, "GET /untrusted HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 502);
	cr_assert_eq(ht_rec_wait(&tup, 3, 300), 2);
	ht_recorder_stop(&tup);
}
