/* Per-user opt-outs end to end: the real anonproxy with an opt-out table, users added by
 * anonctl and through the admin API, and the recording upstream. An opted-out user's
 * events never reach the upstream; other users' events in the same batch do; a request
 * with nothing left is answered 204 without contacting the upstream. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

struct env {
	struct ht_recorder up;
	pid_t proxy;
	int port, admin;
	char shm[64];
	const char *dir;
};

static struct env E;
static const char TOKEN[] = "0123456789abcdef0123456789abcdef";

static void setup(void)
{
	unsigned char key[32];

	ht_setup();
	memset(&E, 0, sizeof(E));
	snprintf(E.shm, sizeof(E.shm), "/ap-it-optout-%d", (int)getpid());
	shm_unlink(E.shm);
	E.dir = ht_path("optout");
	cr_assert(ht_recorder_start(&E.up, "up", NULL, NULL));
	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i * 7 + 1);
	cr_assert(ht_write(ht_path("k.key"), key, sizeof(key), 0600));
	cr_assert(ht_write(ht_path("admin.token"), TOKEN, strlen(TOKEN), 0600));
}

static void teardown(void)
{
	if (E.proxy)
		cr_expect_eq(ht_stop(E.proxy, 10000), 0, "%s", ht_err(E.proxy));
	ht_recorder_stop(&E.up);
	shm_unlink(E.shm);
	ht_teardown();
}

TestSuite(optout_proxy, .init = setup, .fini = teardown, .timeout = 60);

static void anonctl(const char *const *args)
{
	const char *argv[16] = {ht_bin("anonctl"), "optout", "--shm", E.shm, "--dir", E.dir};
	int n = 6, st;
	pid_t pid;

	for (; *args; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	pid = ht_start(argv, "anonctl");
	st = ht_wait(pid, 10000);
	cr_assert_eq(st, 0, "anonctl: %s", ht_err(pid));
}

static void start_proxy(void)
{
	const char *conf = ht_path("anonproxy.json");

	E.port = ht_free_port();
	E.admin = ht_free_port();
	cr_assert(ht_write_str(
	        conf,
	        ht_fmt("{\"listen\": \"127.0.0.1:%d\", \"workers\": 1,"
	               " \"admin\": {\"listen\": \"127.0.0.1:%d\", \"token_file\": "
	               "\"admin.token\"},"
	               " \"keys\": {\"active\": \"k\", \"files\": {\"k\": \"k.key\"}},"
	               " \"optout\": {\"shm\": \"%s\", \"dir\": \"optout\", \"capacity\": 1000},"
	               " \"upstreams\": {\"rec\": {\"url\": \"http://127.0.0.1:%d\"}},"
	               " \"rulesets\": {\"r\": {"
	               "   \"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16},"
	               "                 \"idfa\": {\"action\": \"hash\", \"length\": 16}},"
	               "   \"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]},"
	               "              {\"class\": \"idfa\", \"keys\": [\"idfa\"]},"
	               "              {\"keys\": [\"data\"], \"codec\": [\"base64\", \"json\"]}],"
	               "   \"user\": {\"paths\": [\"$.distinct_id\"], \"headers\": [\"X-User-Id\"],"
	               "              \"query\": [\"uid\"], \"form\": [\"uid\"]}}},"
	               " \"routes\": [{\"path\": \"/push\", \"upstream\": \"rec\", \"ruleset\": "
	               "\"r\","
	               "               \"scope\": \"push\"},"
	               "              {\"path\": \"/\", \"upstream\": \"rec\", \"ruleset\": \"r\","
	               "               \"scope\": \"analytics\"}]}",
	               E.port, E.admin, E.shm, E.up.port)));
	E.proxy = ht_start((const char *[]){ht_bin("anonproxy"), "-c", conf, NULL}, "proxy");
	cr_assert(ht_wait_port(E.port, E.proxy, 5000), "proxy did not start: %s", ht_err(E.proxy));
}

static struct ht_result *post(const char *path, const char *ctype, const char *extra,
                              const char *body)
{
	return ht_exchange_str(E.port,
	                       ht_fmt("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s"
	                              "Content-Length: %zu\r\n\r\n%s",
	                              path, ctype, extra, strlen(body), body),
	                       1, 5000);
}

static struct ht_result *admin(const char *method, const char *path, const char *body)
{
	return ht_exchange_str(E.admin,
	                       ht_fmt("%s %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
	                              "Content-Length: %zu\r\n\r\n%s",
	                              method, path, TOKEN, strlen(body), body),
	                       1, 5000);
}

Test(optout_proxy, opted_out_events_never_reach_the_upstream)
{
	struct ht_result *r;
	struct ht_msg *m;

	anonctl((const char *[]){"add", "u-alice", "--scope", "analytics", NULL});
	anonctl((const char *[]){"add", "u-bob", "--scope", "personalization", NULL});
	start_proxy();
	r = post("/batch", "application/json", "",
	         "[{\"distinct_id\":\"u-alice\",\"imei\":\"356938035643809\",\"n\":1},"
	         "{\"distinct_id\":\"u-carol\",\"imei\":\"356938035643809\",\"n\":2},"
	         "{\"distinct_id\":\"u-bob\",\"idfa\":\"f3b8c2d1-6e4a-4c55-9a0b-2d7e8f9a1b3c\","
	         "\"n\":3}]");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	m = ht_rec_req(&E.up, 1);
	cr_assert_not_null(m);
	cr_assert_null(strstr(m->body, "u-alice"), "an opted-out user's event went: %s", m->body);
	cr_assert_not_null(strstr(m->body, "u-carol"), "%s", m->body);
	cr_assert_not_null(strstr(m->body, "u-bob"), "%s", m->body);
	cr_assert_null(strstr(m->body, "idfa"), "personalization: the ad id is dropped: %s",
	               m->body);
	cr_assert_null(strstr(m->body, "356938035643809"));

	/* Nothing left: 204 from the proxy, nothing upstream. */
	r = post("/batch", "application/json", "",
	         "[{\"distinct_id\":\"u-alice\",\"imei\":\"1\"},{\"distinct_id\":\"u-alice\"}]");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 204);
	r = post("/one", "application/json", "", "{\"distinct_id\":\"u-alice\",\"imei\":\"1\"}");
	cr_assert_eq(r->resp[0].status, 204);
	r = post("/h", "application/json", "X-User-Id: u-alice\r\n", "{\"imei\":\"1\"}");
	cr_assert_eq(r->resp[0].status, 204);
	r = post("/q?uid=u-alice", "application/json", "", "{\"imei\":\"1\"}");
	cr_assert_eq(r->resp[0].status, 204);
	r = post("/f", "application/x-www-form-urlencoded", "", "uid=u-alice&imei=1");
	cr_assert_eq(r->resp[0].status, 204);
	/* A wrapper whose batch lost every event carries nothing: Segment-style ... */
	r = post("/wrapped", "application/json", "",
	         "{\"batch\":[{\"distinct_id\":\"u-alice\",\"imei\":\"1\"},"
	         "{\"distinct_id\":\"u-alice\"}],\"sentAt\":\"2026-11-22T18:44:00Z\"}");
	cr_assert_eq(r->resp[0].status, 204);
	/* ... and Mixpanel-style, data=base64(JSON array) in a form. */
	{
		const char *ev = "[{\"distinct_id\":\"u-alice\",\"imei\":\"1\"}]";
		unsigned char b64[128];
		char form[256], *o = form;
		EVP_EncodeBlock(b64, (const unsigned char *)ev, (int)strlen(ev));
		o += sprintf(o, "data=");
		for (const unsigned char *c = b64; *c; c++)
			o += *c == '+' || *c == '/' || *c == '=' ? sprintf(o, "%%%02X", *c)
			                                         : sprintf(o, "%c", *c);
		r = post("/track", "application/x-www-form-urlencoded", "", form);
		cr_assert_eq(r->resp[0].status, 204);
	}
	/* The route's scope decides: alice opted out of analytics, not of push. */
	r = post("/push/send", "application/json", "", "{\"distinct_id\":\"u-alice\",\"t\":1}");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_eq(ht_rec_wait(&E.up, 3, 1000), 2, "only the batch and the push reached it");
	{
		r = ht_exchange_str(E.admin,
		                    ht_fmt("GET /metrics HTTP/1.1\r\nHost: a\r\n"
		                           "Authorization: Bearer %s\r\n\r\n",
		                           TOKEN),
		                    1, 5000);
		cr_assert_not_null(strstr(r->resp[0].body,
		                          "anonproxy_optout_hits_total{scope=\"analytics\"} 10"),
		                   "%s", r->resp[0].body);
		cr_assert_not_null(
		        strstr(r->resp[0].body,
		               "anonproxy_optout_hits_total{scope=\"personalization\"} 1"));
	}
	cr_assert_null(strstr(ht_err(E.proxy), "u-alice"), "a user id in the proxy's log");
}

Test(optout_proxy, admin_api_changes_take_effect)
{
	struct ht_result *r;

	start_proxy();
	r = post("/b", "application/json", "", "[{\"distinct_id\":\"u-dora\",\"n\":1}]");
	cr_assert_eq(r->resp[0].status, 200);
	r = admin("POST", "/optout", "{\"user\": \"u-dora\", \"scopes\": [\"all\"]}");
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200, "%s", r->resp[0].body);
	cr_assert_null(strstr(r->resp[0].body, "u-dora"), "the answer repeats the user id");
	r = admin("GET", "/optout/u-dora", "");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_not_null(strstr(r->resp[0].body, "\"all\""));
	r = post("/b", "application/json", "", "[{\"distinct_id\":\"u-dora\",\"n\":2}]");
	cr_assert_eq(r->resp[0].status, 204, "a change is seen by the next request");
	r = admin("DELETE", "/optout/u-dora", "");
	cr_assert_eq(r->resp[0].status, 200);
	r = admin("GET", "/optout/u-dora", "");
	cr_assert_eq(r->resp[0].status, 404);
	r = post("/b", "application/json", "", "[{\"distinct_id\":\"u-dora\",\"n\":3}]");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_eq(ht_rec_wait(&E.up, 3, 1000), 2);
	r = admin("POST", "/optout", "{\"user\": \"u-x\", \"scopes\": [\"nope\"]}");
	cr_assert_eq(r->resp[0].status, 400);
	r = ht_exchange_str(E.admin, "GET /optout/u-dora HTTP/1.1\r\nHost: a\r\n\r\n", 1, 5000);
	cr_assert_eq(r->resp[0].status, 401);
}

Test(optout_proxy, table_rebuilt_after_loss)
{
	struct ht_result *r;

	anonctl((const char *[]){"add", "u-erin", "--scope", "analytics", NULL});
	shm_unlink(E.shm); /* a reboot empties /dev/shm: the journal is the truth */
	start_proxy();
	r = post("/b", "application/json", "",
	         "[{\"distinct_id\":\"u-erin\"},{\"distinct_id\":\"u-f\"}]");
	cr_assert_eq(r->resp[0].status, 200);
	cr_assert_null(strstr(ht_rec_req(&E.up, 1)->body, "u-erin"));
	cr_assert_not_null(strstr(ht_err(E.proxy), "rebuilt"), "%s", ht_err(E.proxy));
}

/* The worker of pid <master> (one worker): the process whose parent it is, from
 * /proc/<pid>/stat. */
static pid_t the_worker(pid_t master)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t found = 0;

	cr_assert_not_null(d);
	while (!found && (de = readdir(d))) {
		char s[512], *rp;
		int ppid;
		FILE *f;
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		if (!(f = fopen(ht_fmt("/proc/%s/stat", de->d_name), "r")))
			continue;
		/* pid (comm) state ppid: comm may hold spaces, so read after the last ')' */
		if (fgets(s, sizeof(s), f) && (rp = strrchr(s, ')')) &&
		    sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == (int)master)
			found = (pid_t)atoi(de->d_name);
		fclose(f);
	}
	closedir(d);
	return found;
}

/* Fail closed: a worker that cannot map the table (the segment lost, and not rebuilt
 * because the journal directory is gone) answers 503 on routes with user rules and sends
 * nothing; once the master can rebuild it, the worker maps it and the opt-outs in the
 * journal apply again. */
Test(optout_proxy, no_table_503_then_rebuilt)
{
	const char *moved = ht_fmt("%s.moved", E.dir),
	           *batch = "[{\"distinct_id\":\"u-gil\"},{\"distinct_id\":\"u-hal\"}]";
	struct ht_result *r;
	pid_t w;
	int got503 = 0, st = 0;

	anonctl((const char *[]){"add", "u-gil", "--scope", "analytics", NULL});
	start_proxy();
	r = post("/b", "application/json", "", batch);
	cr_assert_eq(r->resp[0].status, 200);
	/* the segment and the journal directory go; the worker restarts without a mapping */
	cr_assert_eq(rename(E.dir, moved), 0);
	cr_assert(ht_write_str(E.dir, "not a directory"));
	shm_unlink(E.shm);
	w = the_worker(E.proxy);
	cr_assert(w > 0);
	cr_assert_eq(kill(w, SIGKILL), 0);
	for (int i = 0; i < 100 && got503 < 3; i++) {
		r = post("/b", "application/json", "", batch);
		cr_assert_eq(r->nresp, 1);
		st = r->resp[0].status;
		cr_assert(st == 503 || st == 200, "status %d", st);
		if (st == 503) {
			got503++;
			cr_assert_not_null(strstr(r->resp[0].body, "opt-out table"), "%s",
			                   r->resp[0].body);
		}
		ht_sleep_ms(100);
	}
	cr_assert_eq(got503, 3, "the new worker never answered 503");
	cr_assert_eq(ht_rec_wait(&E.up, 2, 200), 1, "a request went upstream without the table");
	/* the journal is back: the master rebuilds the segment within its 5 s check */
	cr_assert_eq(unlink(E.dir), 0);
	cr_assert_eq(rename(moved, E.dir), 0);
	for (int i = 0; i < 100 && st != 200; i++) {
		ht_sleep_ms(100);
		r = post("/b", "application/json", "", batch);
		st = r->resp[0].status;
	}
	cr_assert_eq(st, 200, "the table was not rebuilt: %s", ht_err(E.proxy));
	cr_assert_null(strstr(ht_rec_req(&E.up, 2)->body, "u-gil"),
	               "the journal's opt-out is lost");
	cr_assert_not_null(strstr(ht_rec_req(&E.up, 2)->body, "u-hal"));
	r = admin("GET", "/metrics", "");
	cr_assert_not_null(strstr(r->resp[0].body,
	                          "anonproxy_refusals_total{reason=\"optout_unavailable\"} "));
	cr_assert_null(strstr(r->resp[0].body,
	                      "anonproxy_refusals_total{reason=\"optout_unavailable\"} 0\n"));
}
