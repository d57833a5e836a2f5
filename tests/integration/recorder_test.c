/* The recording upstream and the harness, tested against each other before the proxy's
 * integration tests lean on them: exact bytes recorded, keep-alive and pipelining, every
 * answer mode, TLS with a test CA, the splitter on its own, and the process helpers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(recorder, .init = ht_setup, .fini = ht_teardown, .timeout = 60);
TestSuite(harness, .init = ht_setup, .fini = ht_teardown, .timeout = 60);

static struct ht_recorder up;

static void start_up(void)
{
	cr_assert(ht_recorder_start(&up, "up", NULL, NULL), "recorder did not start");
}

/* One request on a fresh connection; asserts it got exactly one response. */
static struct ht_msg *ask(const char *req)
{
	struct ht_result *r = ht_exchange_str(up.port, req, 1, 5000);

	cr_assert(r, "connect failed");
	cr_assert_eq(r->nresp, 1, "%zu responses, raw: %.*s", r->nresp, (int)r->raw_len, r->raw);
	return &r->resp[0];
}

static bool no_zombie(pid_t pid)
{
	return waitpid(pid, NULL, WNOHANG) == -1 && errno == ECHILD && kill(pid, 0) == -1 &&
	       errno == ESRCH;
}

/* ---- exact bytes ---- */

Test(recorder, content_length_request_recorded_exactly)
{
	const char *body = "{\"imei\":\"490154203237518\",\"mac\":\"00:1A:2B:3C:4D:5E\"}";
	const char *req = ht_fmt("POST /ingest/v1?app=demo HTTP/1.1\r\nHost: upstream\r\n"
	                         "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	                         "X-Device-Id: abc\r\n\r\n%s",
	                         strlen(body), body);
	struct ht_rec_entry *e;
	size_t len;

	start_up();
	struct ht_msg *m = ask(req);
	cr_assert_eq(m->status, 200);
	cr_assert_str_eq(ht_header(m, "content-type"), "application/json");
	cr_assert_str_eq(m->body, "{\"ok\":true,\"n\":1}");
	cr_assert_str_eq(ht_header(m, "X-Recorder-N"), "1");

	const char *raw = ht_rec_raw(&up, 1, &len);
	cr_assert(raw, "req-0001.http missing");
	cr_assert_eq(len, strlen(req));
	cr_assert_eq(memcmp(raw, req, len), 0, "recorded:\n%s", raw);
	cr_assert_eq(ht_rec_log(&up, &e), 1);
	cr_assert_eq(e[0].n, 1);
	cr_assert_eq(e[0].conn, 1);
	cr_assert_str_eq(e[0].method, "POST");
	cr_assert_str_eq(e[0].target, "/ingest/v1?app=demo");
	cr_assert_eq(e[0].body, strlen(body));

	struct ht_msg *got = ht_rec_req(&up, 1);
	cr_assert(got);
	cr_assert_str_eq(got->target, "/ingest/v1?app=demo");
	cr_assert_str_eq(ht_header(got, "x-device-id"), "abc");
	cr_assert_str_eq(got->body, body);
}

Test(recorder, chunked_request_recorded_exactly_and_decoded)
{
	const char *req = "POST /echo HTTP/1.1\r\nHost: upstream\r\nContent-Type: text/plain\r\n"
	                  "Transfer-Encoding: chunked\r\n\r\n"
	                  "5;ext=1\r\nhello\r\n"
	                  "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
	                  "0\r\nX-Trailer: t\r\n\r\n";
	struct ht_client *c;
	struct ht_rec_entry *e;
	size_t len;

	start_up();
	c = ht_connect(up.port);
	cr_assert(c);
	/* in 7-byte pieces: the recorder's chunked reader must resume anywhere */
	cr_assert(ht_send_pieces(c, req, strlen(req), 7, 2));
	struct ht_result *r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_str_eq(r->resp[0].body, "helloabcdefghijklmnopqrstuvwxyz");
	cr_assert_str_eq(ht_header(&r->resp[0], "content-type"), "text/plain");

	const char *raw = ht_rec_raw(&up, 1, &len);
	cr_assert_eq(len, strlen(req));
	cr_assert_eq(memcmp(raw, req, len), 0);
	cr_assert_eq(ht_rec_log(&up, &e), 1);
	cr_assert_eq(e[0].body, 31);
	struct ht_msg *got = ht_rec_req(&up, 1);
	cr_assert(got && got->chunked);
	cr_assert_eq(got->body_len, 31);
}

Test(recorder, bodyless_requests_and_numbering)
{
	start_up();
	for (int i = 1; i <= 3; i++)
		cr_assert_str_eq(ask("GET / HTTP/1.1\r\nHost: a\r\n\r\n")->body,
		                 ht_fmt("{\"ok\":true,\"n\":%d}", i));
	cr_assert(ht_read(ht_fmt("%s/req-0003.http", up.dir), NULL), "zero-padded file name");
	struct ht_rec_entry *e;
	cr_assert_eq(ht_rec_log(&up, &e), 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(e[i].n, i + 1);
		cr_assert_eq(e[i].conn, (unsigned)i + 1);
		cr_assert_eq(e[i].body, 0);
	}
}

/* ---- connections ---- */

Test(recorder, keep_alive_two_requests_one_connection)
{
	struct ht_rec_entry *e;

	start_up();
	struct ht_client *c = ht_connect(up.port);
	cr_assert(ht_send_str(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"));
	struct ht_result *r1 = ht_recv(c, 1, 5000);
	cr_assert(ht_send_str(c, "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"));
	struct ht_result *r2 = ht_recv(c, 1, 5000);
	cr_assert_eq(r1->nresp, 1);
	cr_assert_eq(r2->nresp, 1);
	cr_assert(!r2->closed);
	cr_assert_str_eq(ht_header(&r1->resp[0], "x-recorder-conn"),
	                 ht_header(&r2->resp[0], "x-recorder-conn"));
	ht_close(c);
	ask("GET /c HTTP/1.1\r\nHost: a\r\n\r\n");

	cr_assert_eq(ht_rec_log(&up, &e), 3);
	cr_assert_eq(e[0].conn, e[1].conn);
	cr_assert_neq(e[1].conn, e[2].conn);
	cr_assert_str_eq(e[1].target, "/b");
	cr_assert_eq(e[1].body, 3);
}

Test(recorder, pipelined_requests_answered_in_order)
{
	const char *reqs = "GET /delay/100 HTTP/1.1\r\nHost: a\r\n\r\n"
	                   "HEAD /head-test HTTP/1.1\r\nHost: a\r\n\r\n"
	                   "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nping"
	                   "GET /status/202 HTTP/1.1\r\nHost: a\r\n\r\n";

	start_up();
	struct ht_result *r = ht_exchange_str(up.port, reqs, 4, 5000);
	cr_assert_eq(r->nresp, 4, "raw: %s", r->raw);
	cr_assert_str_eq(r->resp[0].body, "{\"ok\":true,\"n\":1}");
	cr_assert_str_eq(ht_header(&r->resp[1], "content-length"), "17");
	cr_assert_eq(r->resp[1].body_len, 0);
	cr_assert_str_eq(r->resp[2].body, "ping");
	cr_assert_eq(r->resp[3].status, 202);
	/* all four were recorded when they arrived, before the delayed answer went out */
	cr_assert_eq(ht_rec_log(&up, NULL), 4);
}

Test(recorder, connection_close_and_http10)
{
	start_up();
	struct ht_result *r = ht_exchange_str(
	        up.port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert(r->closed && !r->timed_out && !r->malformed);
	cr_assert_str_eq(ht_header(&r->resp[0], "connection"), "close");

	r = ht_exchange_str(up.port, "GET / HTTP/1.0\r\n\r\n", 0, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert(r->closed && !r->timed_out);

	/* HTTP/1.0 with keep-alive stays open */
	struct ht_client *c = ht_connect(up.port);
	ht_send_str(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	r = ht_recv(c, 1, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_str_eq(ht_header(&r->resp[0], "connection"), "keep-alive");
	ht_send_str(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	r = ht_recv(c, 1, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_str_eq(r->resp[0].body, "{\"ok\":true,\"n\":4}");

	/* whatever follows a Connection: close request is not a request */
	r = ht_exchange_str(up.port,
	                    "GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
	                    0, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(ht_rec_log(&up, NULL), 5);
}

/* ---- answer modes ---- */

Test(recorder, status_codes)
{
	start_up();
	struct ht_msg *m = ask("GET /status/503 HTTP/1.1\r\nHost: a\r\n\r\n");
	cr_assert_eq(m->status, 503);
	cr_assert_str_eq(m->reason, "Service Unavailable");
	cr_assert_str_eq(m->body, "{\"status\":503,\"n\":1}");

	/* 204 and 304 have no body: the next response on the connection follows at once */
	for (int code = 204; code <= 304; code += 100) {
		const char *req = ht_fmt("GET /status/%d HTTP/1.1\r\nHost: a\r\n\r\n"
		                         "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		                         code);
		struct ht_result *r = ht_exchange_str(up.port, req, 2, 5000);
		cr_assert_eq(r->nresp, 2);
		cr_assert_eq(r->resp[0].status, code);
		cr_assert_eq(r->resp[0].body_len, 0);
		cr_assert_null(ht_header(&r->resp[0], "content-length"));
		cr_assert_eq(r->resp[1].status, 200);
	}
	/* a route prefix in front of the mode keeps working */
	cr_assert_eq(ask("GET /ingest/status/429 HTTP/1.1\r\nHost: a\r\n\r\n")->status, 429);
	cr_assert_eq(ask("GET /status/99 HTTP/1.1\r\nHost: a\r\n\r\n")->status, 400);
}

Test(recorder, echo_returns_the_body)
{
	static const char body[] = "a\0b\r\n\xff{}";
	const char *head =
	        ht_fmt("PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-test"
	               "\r\nContent-Length: %zu\r\n\r\n",
	               sizeof(body) - 1);
	size_t hl = strlen(head);
	char *req = ht_alloc(hl + sizeof(body));

	memcpy(req, head, hl);
	memcpy(req + hl, body, sizeof(body) - 1);
	start_up();
	struct ht_result *r = ht_exchange(up.port, req, hl + sizeof(body) - 1, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].body_len, sizeof(body) - 1);
	cr_assert_eq(memcmp(r->resp[0].body, body, sizeof(body) - 1), 0);
	cr_assert_str_eq(ht_header(&r->resp[0], "content-type"), "application/x-test");
}

Test(recorder, delay_uses_a_timer)
{
	start_up();
	struct ht_client *slow = ht_connect(up.port);
	long t0 = ht_now_ms();
	cr_assert(ht_send_str(slow, "GET /delay/300 HTTP/1.1\r\nHost: a\r\n\r\n"));
	/* while that one waits, another connection is answered at once */
	struct ht_result *fast =
	        ht_exchange_str(up.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, 5000);
	cr_assert_eq(fast->nresp, 1);
	cr_assert_lt(fast->ms, 200, "%ld ms", fast->ms);
	struct ht_result *r = ht_recv(slow, 1, 5000);
	long took = ht_now_ms() - t0;
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_geq(took, 300, "%ld ms", took);
	cr_assert_lt(took, 2000, "%ld ms", took);
}

Test(recorder, chunked_response_in_several_chunks)
{
	start_up();
	struct ht_client *c = ht_connect(up.port);
	ht_send_str(c, "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
	struct ht_result *r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	struct ht_msg *m = &r->resp[0];
	cr_assert(m->chunked);
	cr_assert_str_eq(ht_header(m, "transfer-encoding"), "chunked");
	cr_assert_null(ht_header(m, "content-length"));
	cr_assert_str_eq(m->body, "{\"ok\":true,\"n\":1,\"chunked\":true}");
	const char *body_raw = m->raw + m->head_len;
	cr_assert(strstr(body_raw, "b\r\n{\"ok\":true,\r\n6\r\n\"n\":1,\r\n"), "%s", body_raw);
	cr_assert(strstr(body_raw, "\r\n0\r\n\r\n"));
	/* three pauses of 30 ms between the four chunks */
	cr_assert_geq(r->ms, 80, "%ld ms", r->ms);
	/* and the connection goes on */
	ht_send_str(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_str_eq(r->resp[0].body, "{\"ok\":true,\"n\":2}");
}

Test(recorder, close_delimited_response)
{
	start_up();
	struct ht_result *r =
	        ht_exchange_str(up.port, "GET /close HTTP/1.1\r\nHost: a\r\n\r\n", 0, 3000);
	cr_assert_eq(r->nresp, 1, "%s", r->raw);
	cr_assert(r->closed && !r->reset && !r->timed_out && !r->malformed);
	cr_assert(r->resp[0].until_close);
	cr_assert_null(ht_header(&r->resp[0], "content-length"));
	cr_assert_str_eq(r->resp[0].body, "{\"ok\":true,\"n\":1,\"close\":true}");
}

Test(recorder, reset_closes_without_answer)
{
	start_up();
	struct ht_result *r =
	        ht_exchange_str(up.port, "GET /reset HTTP/1.1\r\nHost: a\r\n\r\n", 1, 3000);
	cr_assert_eq(r->nresp, 0);
	cr_assert(r->closed && r->reset, "closed %d reset %d", r->closed, r->reset);
	cr_assert_eq(r->raw_len, 0);
	cr_assert_eq(ht_rec_log(&up, NULL), 1, "the request is still recorded");
}

Test(recorder, stall_never_answers)
{
	start_up();
	struct ht_result *r =
	        ht_exchange_str(up.port, "GET /stall HTTP/1.1\r\nHost: a\r\n\r\n", 1, 300);
	cr_assert(r->timed_out && !r->closed);
	cr_assert_eq(r->nresp, 0);
	cr_assert_geq(r->ms, 300);
	cr_assert_lt(r->ms, 2000);
	cr_assert_eq(ht_rec_log(&up, NULL), 1);
	/* the client closed: the recorder lets the connection go */
	cr_assert(ht_rec_wait(&up, 1, 0) == 1);
	for (int i = 0; i < 200 && !strstr(ht_rec_conns(&up), "close conn=1"); i++)
		ht_sleep_ms(10);
	cr_assert(strstr(ht_rec_conns(&up), "close conn=1 requests=1 unparsed=0"), "%s",
	          ht_rec_conns(&up));
}

Test(recorder, big_bodies)
{
	start_up();
	struct ht_msg *m = ask("GET /big/100000 HTTP/1.1\r\nHost: a\r\n\r\n");
	cr_assert_str_eq(ht_header(m, "content-length"), "100000");
	cr_assert_eq(m->body_len, 100000);
	for (size_t i = 0; i < m->body_len; i++)
		cr_assert_eq(m->body[i], 'a' + (int)(i % 26), "byte %zu", i);
	/* streamed in steps: several of them */
	m = ask("GET /big/3000001 HTTP/1.1\r\nHost: a\r\n\r\n");
	cr_assert_eq(m->body_len, 3000001);
	cr_assert_eq(m->body[3000000], 'a' + 3000000 % 26);
	cr_assert_eq(ask("GET /big/0 HTTP/1.1\r\nHost: a\r\n\r\n")->body_len, 0);
}

Test(recorder, head_has_length_but_no_body)
{
	start_up();
	struct ht_result *r = ht_exchange_str(up.port,
	                                      "HEAD /head-test HTTP/1.1\r\nHost: a\r\n\r\n"
	                                      "HEAD /big/5000 HTTP/1.1\r\nHost: a\r\n\r\n"
	                                      "GET /head-test HTTP/1.1\r\nHost: a\r\n\r\n",
	                                      3, 5000);
	cr_assert_eq(r->nresp, 3, "%s", r->raw);
	cr_assert_str_eq(ht_header(&r->resp[0], "content-length"), "17");
	cr_assert_eq(r->resp[0].raw_len, r->resp[0].head_len);
	cr_assert_str_eq(ht_header(&r->resp[1], "content-length"), "5000");
	cr_assert_eq(r->resp[1].body_len, 0);
	cr_assert_str_eq(r->resp[2].body, "{\"ok\":true,\"n\":3}");
	cr_assert_eq(r->raw_len, r->resp[0].raw_len + r->resp[1].raw_len + r->resp[2].raw_len);
}

Test(recorder, unframeable_request_refused_and_kept)
{
	const char *bad =
	        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";

	start_up();
	struct ht_result *r = ht_exchange_str(up.port, bad, 0, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 400);
	cr_assert(r->closed);
	cr_assert_eq(ht_rec_log(&up, NULL), 0);
	cr_assert(strstr(ht_rec_conns(&up), "bad conn=1"), "%s", ht_rec_conns(&up));
	for (int i = 0; i < 200 && !strstr(ht_rec_conns(&up), "close conn=1"); i++)
		ht_sleep_ms(10);
	cr_assert_str_eq(ht_read(ht_fmt("%s/partial-conn1.http", up.dir), NULL), bad);
}

Test(recorder, incomplete_request_kept_as_partial)
{
	const char *part = "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";

	start_up();
	struct ht_client *c = ht_connect(up.port);
	ht_send_str(c, part);
	ht_shutdown_write(c);
	struct ht_result *r = ht_recv(c, 0, 3000);
	cr_assert(r->closed && r->nresp == 0);
	for (int i = 0; i < 200 && !strstr(ht_rec_conns(&up), "close conn=1"); i++)
		ht_sleep_ms(10);
	cr_assert(strstr(ht_rec_conns(&up), "close conn=1 requests=0 unparsed=43"), "%s",
	          ht_rec_conns(&up));
	cr_assert_str_eq(ht_read(ht_fmt("%s/partial-conn1.http", up.dir), NULL), part);
	cr_assert_eq(ht_rec_log(&up, NULL), 0);
}

Test(recorder, sigterm_exits_zero_with_open_connections)
{
	start_up();
	struct ht_client *idle = ht_connect(up.port);
	ht_send_str(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	cr_assert_eq(ht_recv(idle, 1, 3000)->nresp, 1);
	struct ht_client *stalled = ht_connect(up.port);
	ht_send_str(stalled, "GET /stall HTTP/1.1\r\nHost: a\r\n\r\n");
	cr_assert_eq(ht_rec_wait(&up, 2, 3000), 2);
	long t0 = ht_now_ms();
	int st = ht_recorder_stop(&up);
	cr_assert_eq(st, 0, "%s", ht_status_str(st));
	cr_assert_lt(ht_now_ms() - t0, 2000);
	cr_assert(no_zombie(up.pid));
	cr_assert(strstr(ht_out(up.pid), "2 requests on 2 connections"), "%s", ht_out(up.pid));
}

/* ---- TLS ---- */

Test(recorder, tls_with_a_test_ca)
{
	struct ht_certs pki, other;
	const char *why = NULL;
	const char *req =
	        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\nsecret";
	size_t len;

	cr_assert(ht_make_certs(ht_path("pki"), "anonproxy test CA", &pki));
	cr_assert(ht_make_certs(ht_path("other"), "anonproxy test CA", &other));
	cr_assert(ht_recorder_start(&up, "up", pki.cert, pki.key), "%s",
	          ht_read(ht_path("up.err"), NULL));

	struct ht_client *c = ht_connect_tls(up.port, pki.ca, "127.0.0.1", &why);
	cr_assert(c, "%s", why);
	cr_assert(ht_send_str(c, req));
	struct ht_result *r = ht_recv(c, 1, 5000);
	cr_assert_eq(r->nresp, 1);
	cr_assert_str_eq(r->resp[0].body, "secret");
	cr_assert_str_eq(ht_rec_raw(&up, 1, &len), req);

	/* by name (SNI sent) */
	c = ht_connect_tls(up.port, pki.ca, "localhost", &why);
	cr_assert(c, "%s", why);
	ht_send_str(c, "GET /close HTTP/1.1\r\nHost: localhost\r\n\r\n");
	r = ht_recv(c, 0, 3000);
	cr_assert_eq(r->nresp, 1);
	cr_assert(r->closed && !r->malformed, "%s", r->why ? r->why : "");
	cr_assert_str_eq(r->resp[0].body, "{\"ok\":true,\"n\":2,\"close\":true}");

	/* an unrelated CA, or a name the certificate does not carry: refused */
	why = NULL;
	cr_assert_null(ht_connect_tls(up.port, other.ca, "127.0.0.1", &why));
	cr_assert(why && strstr(why, "verify"), "%s", why);
	why = NULL;
	cr_assert_null(ht_connect_tls(up.port, pki.ca, "example.com", &why));
	cr_assert(why && strstr(why, "verify"), "%s", why);
	cr_assert_eq(ht_rec_log(&up, NULL), 2);

	/* the key is private to its owner */
	struct stat st;
	cr_assert_eq(stat(pki.key, &st), 0);
	cr_assert_eq(st.st_mode & 077, 0);
}

/* ---- the harness on its own ---- */

Test(harness, splitter_at_every_cut)
{
	const char *a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
	const char *b = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
	const char *both = ht_fmt("%s%s", a, b);
	size_t la = strlen(a), n = strlen(both);
	struct ht_msg m;

	for (size_t k = 0; k < n; k++) {
		long r = ht_parse(both, k, true, false, false, &m, NULL);
		cr_assert_eq(r, k < la ? 0 : (long)la, "cut at %zu: %ld", k, r);
	}
	cr_assert_eq(ht_parse(both, n, true, false, false, &m, NULL), (long)la);
	cr_assert_str_eq(m.body, "abc0123456789abcdef");
	cr_assert_eq(ht_parse(both + la, n - la, true, false, false, &m, NULL), (long)(n - la));
	cr_assert_eq(m.status, 404);
	cr_assert_str_eq(m.reason, "Not Found");
	cr_assert_str_eq(m.body, "no");
}

Test(harness, splitter_bodies_and_refusals)
{
	struct ht_msg m;
	const char *why;

	/* close-delimited: complete only at EOF */
	const char *c = "HTTP/1.1 200 OK\r\n\r\nto the end";
	cr_assert_eq(ht_parse(c, strlen(c), true, false, false, &m, NULL), 0);
	cr_assert_eq(ht_parse(c, strlen(c), true, false, true, &m, NULL), (long)strlen(c));
	cr_assert(m.until_close);
	cr_assert_str_eq(m.body, "to the end");
	/* HEAD, 1xx, 204, 304: no body whatever the headers say */
	const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
	cr_assert_eq(ht_parse(h, strlen(h), true, true, false, &m, NULL), (long)strlen(h));
	const char *i = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
	cr_assert_eq(ht_parse(i, strlen(i), true, false, false, &m, NULL), 25);
	const char *nc = "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n";
	cr_assert_eq(ht_parse(nc, strlen(nc), true, false, false, &m, NULL), (long)strlen(nc));
	/* requests: no length, no body */
	const char *q = "GET /x?y=1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET";
	cr_assert_eq(ht_parse(q, strlen(q), false, false, false, &m, NULL), (long)strlen(q) - 3);
	cr_assert_str_eq(m.method, "GET");
	cr_assert_str_eq(m.target, "/x?y=1");
	cr_assert_eq(ht_header_count(&m, "HOST"), 2);
	cr_assert_str_eq(ht_header(&m, "host"), "a");

	const char *bad[] = {
	        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
	        "HTTP/2 200\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		why = NULL;
		cr_assert_eq(ht_parse(bad[k], strlen(bad[k]), true, false, true, &m, &why), -1,
		             "accepted: %s", bad[k]);
		cr_assert(why);
	}
}

Test(harness, processes_by_pid)
{
	/* a clean SIGTERM: exit status 0, reaped, no zombie */
	start_up();
	cr_assert(ht_running(up.pid));
	cr_assert(strstr(ht_out(up.pid), "listening"), "%s", ht_out(up.pid));
	cr_assert_eq(ht_recorder_stop(&up), 0);
	cr_assert(!ht_running(up.pid));
	cr_assert(no_zombie(up.pid));
	cr_assert_eq(ht_stop(up.pid, 100), 0, "stopping again gives the kept status");

	/* SIGTERM ignored: SIGKILL after the timeout */
	const char *ready = ht_path("ready");
	const char *argv[] = {"/bin/sh", "-c",
	                      ht_fmt("trap '' TERM; echo > %s; exec sleep 30", ready), NULL};
	pid_t p = ht_start(argv, "stubborn");
	cr_assert_gt(p, 0);
	for (int i = 0; i < 500 && !ht_read(ready, NULL); i++)
		ht_sleep_ms(10);
	long t0 = ht_now_ms();
	int st = ht_stop(p, 200);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s", ht_status_str(st));
	cr_assert_geq(ht_now_ms() - t0, 200);
	cr_assert(no_zombie(p));

	/* a process that exits by itself: its status and its output */
	const char *argv2[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
	p = ht_start(argv2, "short");
	st = ht_wait(p, 5000);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3, "%s", ht_status_str(st));
	cr_assert_str_eq(ht_status_str(st), "exit 3");
	cr_assert_str_eq(ht_out(p), "out\n");
	cr_assert_str_eq(ht_err(p), "err\n");
	cr_assert(!ht_running(p));
	cr_assert_eq(ht_stop(p, 100), st);

	/* what cannot be executed, and what is not ours */
	const char *argv3[] = {"/nonexistent/anonproxy", NULL};
	cr_assert_eq(ht_start(argv3, "missing"), -1);
	cr_assert_eq(ht_stop(getpid(), 100), -1);
	cr_assert_eq(ht_wait(getpid(), 10), -1);
}

Test(harness, ports_and_files)
{
	int free_port = ht_free_port();
	cr_assert_gt(free_port, 0);
	long t0 = ht_now_ms();
	cr_assert(!ht_wait_port(free_port, 0, 200));
	cr_assert_geq(ht_now_ms() - t0, 200);

	start_up();
	cr_assert(ht_wait_port(up.port, up.pid, 2000));

	/* a port file that never comes, from a process that died: no waiting out the timeout */
	const char *argv[] = {"/bin/sh", "-c", "exit 1", NULL};
	pid_t p = ht_start(argv, "dies");
	t0 = ht_now_ms();
	cr_assert_eq(ht_wait_port_file(ht_path("never.port"), p, 5000), -1);
	cr_assert_lt(ht_now_ms() - t0, 2000);

	const char *f = ht_path("conf.json");
	cr_assert(ht_write(f, "{}\n", 3, 0600));
	size_t len;
	cr_assert_str_eq(ht_read(f, &len), "{}\n");
	cr_assert_eq(len, 3);
	struct stat st;
	cr_assert_eq(stat(f, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_null(ht_read(ht_path("absent"), NULL));
	cr_assert(strstr(ht_dir(), "anonproxy-it."));
	cr_assert(strstr(ht_build("tests/recorder"), "/tests/recorder"));
	cr_assert(strstr(ht_bin("anonproxy"), "/anonproxy"));
}
