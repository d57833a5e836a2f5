/* Hostile clients against the real anonproxy (one worker) and the recording upstream, on
 * loopback. Each test puts one kind of abuse on the proxy — slowloris heads, thousands of
 * idle connections up to the descriptor limit, pipelined floods read and unread, oversized
 * and unfinished requests, resets in the middle of a body, an upstream that resets or
 * stalls — while a well-behaved client (a forked process) keeps making requests and timing
 * them. Then, checked rather than assumed: the well-behaved client was served at normal
 * latency; the worker never restarted; its resident size stayed bounded during the load;
 * once the load is gone its descriptors are back to the baseline taken after warm-up
 * (client sockets none, upstream sockets only the pooled ones, as many as the recorder
 * still sees open and at most the pool size), its live heap is back to the baseline (exact:
 * glibc's malloc_stats() called in the worker by gdb, where gdb is there), its RSS within
 * what the heap keeps by design; the proxy exits 0 on SIGTERM; and its stderr holds no
 * sanitizer report (with an ASan build, B=build-asan BIN=build-asan/bin, LeakSanitizer
 * checks the master and, once it ends with exit() rather than _exit(), the worker). Figures
 * go to stderr, one line per test.
 *
 * Every load is bounded in count and in time; all traffic is on 127.0.0.1; only the
 * processes this file starts are signalled, by pid. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define POOL                 4 /* the upstream keep-alive pool in every test's configuration */
#define MAX_FDS              4096
#define GOOD_MAX             20000
#define MiB                  1024L /* in KiB, as RSS is read */
/* After a load, the heap may keep up to M_TRIM_THRESHOLD (64 MiB, worker.c) of freed memory,
 * and some more for fragmentation. */
#define RSS_RETAINED         (80 * MiB)
/* Live heap allowed above the warm-up baseline at the end: POOL idle upstream connections
 * (a stream, two buffers, three events and a timer each) with room to spare, and
 * libevent's tables indexed by descriptor (an evmap slot per descriptor number, the epoll
 * event array), which grow to the highest descriptor the worker had and stay: measured
 * about 50 bytes per descriptor. */
#define HEAP_SLACK(peak_fds) ((64L << 10) + 64L * (peak_fds))
#define IMEI                 "356938035643809"
#define SLOW_HEAD            "GET /hostile/slowloris HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\nX-Pad: "

struct env {
	struct ht_recorder up;
	pid_t proxy, worker;
	int port;
	long rss0;     /* the worker's VmRSS after warm-up, KiB */
	int fds0;      /* its descriptors after warm-up, upstream sockets not counted */
	long peak_rss; /* the highest VmRSS sampled during the load */
	long heap0;    /* its live heap after warm-up (heap_in_use), or -1 */
	int peak_fds;  /* the most descriptors it was seen with */
};

static struct env E;
static int tracked[MAX_FDS]; /* raw sockets this test opened, closed at teardown */
static size_t ntracked;

static long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the proxy under test ---- */

/* How many times <what> occurs in <text>. */
static int count_of(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* An ASan build (B=build-asan BIN=build-asan/bin)? Its allocator keeps freed memory in a
 * quarantine (256 MiB) and never gives it back, so RSS says nothing about leaks there:
 * the RSS bounds are checked in normal builds, LeakSanitizer's report at exit in ASan ones. */
static bool asan_build(void)
{
	static int known = -1;
	size_t n;
	const char *bin;

	if (known < 0) {
		bin = ht_read(ht_bin("anonproxy"), &n);
		known = bin && memmem(bin, n, "__asan_init", 11) != NULL;
	}
	return known;
}

/* A time bound, three times as long with ASan. */
#define SLOW(ms) (asan_build() ? 3 * (ms) : (ms))

/* An RSS bound, checked in normal builds only (see asan_build). */
#define expect_rss_leq(rss, bound, ...)                                                            \
	do {                                                                                       \
		if (!asan_build())                                                                 \
			cr_expect_leq(rss, bound, __VA_ARGS__);                                    \
	} while (0)

/* The worker's live heap in bytes: glibc's malloc_stats() "in use bytes" (mmap'd blocks
 * included), called inside the worker by gdb, the report read back from the proxy's
 * stderr. Exact where RSS is not: the worker keeps freed memory (M_TRIM_THRESHOLD is
 * 64 MiB, worker.c), so its RSS after a load says little about leaks. -1 when it cannot be
 * measured: no gdb, ptrace refused, or an ASan build (another allocator). */
static long heap_in_use(void)
{
	const char *err, *last = NULL, *p;
	int before;
	long v = -1;

	if (asan_build())
		return -1;
	before = count_of(ht_err(E.proxy), "Total (incl. mmap):");
	if (system(ht_fmt("gdb -nx -batch -p %d -ex 'call (void)malloc_stats()' >/dev/null 2>&1",
	                  (int)E.worker)) != 0)
		return -1;
	err = ht_err(E.proxy);
	if (count_of(err, "Total (incl. mmap):") != before + 1)
		return -1;
	for (p = err; (p = strstr(p, "Total (incl. mmap):")); p++)
		last = p;
	if (!(p = strstr(last, "in use bytes")) || sscanf(p, "in use bytes = %ld", &v) != 1)
		return -1;
	return v;
}

static void start_proxy(const char *limits, long nofile)
{
	unsigned char key[32];
	const char *conf = ht_path("anonproxy.json");
	const char *argv[4];
	long end;

	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i * 29 + 3);
	cr_assert(ht_write(ht_path("test.key"), key, sizeof(key), 0600));
	E.port = ht_free_port();
	cr_assert(ht_write_str(
	        conf,
	        ht_fmt("{\"listen\": \"127.0.0.1:%d\", \"workers\": 1, \"access_log\": \"off\","
	               " \"keys\": {\"active\": \"k1\", \"files\": {\"k1\": \"test.key\"}},"
	               " \"upstreams\": {\"rec\": {\"url\": \"http://127.0.0.1:%d\", \"pool\": "
	               "%d}},"
	               " \"rulesets\": {\"r\": {\"detect\": [\"imei\"],"
	               "   \"classes\": {\"imei\": {\"action\": \"hash\", \"length\": 16}},"
	               "   \"fields\": [{\"class\": \"imei\", \"keys\": [\"imei\"]}]}},"
	               " \"routes\": [{\"path\": \"/sink\", \"upstream\": \"sink\", \"ruleset\": "
	               "\"r\"},"
	               "            {\"path\": \"/\", \"upstream\": \"rec\", \"ruleset\": \"r\"}],"
	               " \"limits\": {%s}}",
	               E.port, E.up.port, POOL, limits ? limits : "")));
	argv[0] = ht_bin("anonproxy");
	argv[1] = "-c";
	argv[2] = conf;
	argv[3] = NULL;
	E.proxy = nofile ? ht_start_nofile(argv, "proxy", nofile) : ht_start(argv, "proxy");
	cr_assert(E.proxy > 0);
	cr_assert(ht_wait_port(E.port, E.proxy, 10000), "proxy did not start: %s", ht_err(E.proxy));
	for (end = ht_now_ms() + 5000; (E.worker = ht_child_of(E.proxy)) <= 0;) {
		cr_assert(ht_now_ms() < end, "no worker process");
		ht_sleep_ms(10);
	}
	/* Warm-up: every path the tests use once, so lazy set-up is not counted as growth. */
	for (int i = 0; i < 3; i++) {
		struct ht_result *r = ht_exchange_str(
		        E.port,
		        "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n"
		        "POST /warm/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		        "Content-Length: 26\r\n\r\n{\"imei\":\"" IMEI "\"}"
		        "GET /sink/warm HTTP/1.1\r\nHost: x\r\n\r\n",
		        3, 5000);
		cr_assert_eq(r->nresp, 3, "warm-up: %s %s", r->why ? r->why : "", ht_err(E.proxy));
	}
	ht_sleep_ms(100);
	E.rss0 = ht_rss_kb(E.worker);
	E.fds0 = ht_fd_count(E.worker) - ht_tcp_count(E.worker, 0, E.up.port);
	E.peak_rss = E.rss0;
	E.peak_fds = ht_fd_count(E.worker);
	E.heap0 = heap_in_use();
	cr_assert(E.rss0 > 0 && E.fds0 > 0);
}

static void sample_load(void)
{
	long r = ht_rss_kb(E.worker);
	int f = ht_fd_count(E.worker);

	if (r > E.peak_rss)
		E.peak_rss = r;
	if (f > E.peak_fds)
		E.peak_fds = f;
}

static void no_sanitizer_report(const char *err)
{
	cr_expect_null(strstr(err, "Sanitizer"), "a sanitizer reported:\n%s", err);
	cr_expect_null(strstr(err, "runtime error:"), "UBSan reported:\n%s", err);
}

/* Counts the recorder's upstream connections still open, from its connection log. */
static int recorder_open_conns(void)
{
	const char *s = ht_rec_conns(&E.up);
	return count_of(s, "open conn=") - count_of(s, "close conn=");
}

/* The end of every test: the load is gone, so the worker must come back to its baseline —
 * no client socket left, its other descriptors as after warm-up, upstream sockets only the
 * pooled ones (as many as the recorder sees open, at most POOL); its live heap within
 * HEAP_SLACK of what it was after warm-up (exact, when gdb can measure it), its RSS within
 * RSS_RETAINED (what the heap may keep by design) — then it must leave with 0 on SIGTERM,
 * without a sanitizer report. <name> labels the figures printed. */
static void settle(const char *name)
{
	long end = ht_now_ms() + 10000, rss, heap;
	int cl, ups, fds, rec_open, st;
	const char *err;

	for (;;) {
		cl = ht_tcp_count(E.worker, E.port, 0);
		ups = ht_tcp_count(E.worker, 0, E.up.port);
		fds = ht_fd_count(E.worker);
		rec_open = recorder_open_conns();
		if ((cl == 0 && fds - ups == E.fds0 && ups == rec_open) || ht_now_ms() > end)
			break;
		ht_sleep_ms(50);
	}
	sample_load();
	rss = ht_rss_kb(E.worker);
	heap = E.heap0 >= 0 ? heap_in_use() : -1;
	fprintf(stderr,
	        "hostile/%s: worker RSS %ld KiB at baseline, %ld peak, %ld after; live heap %ld "
	        "bytes at baseline, %ld after (-1: not measured); fds %d at baseline, %d peak, %d "
	        "after (%d client, %d upstream, pool %d)\n",
	        name, E.rss0, E.peak_rss, rss, E.heap0, heap, E.fds0, E.peak_fds, fds, cl, ups,
	        POOL);
	cr_assert(ht_running(E.proxy), "the proxy died: %s", ht_err(E.proxy));
	cr_assert_eq(ht_child_of(E.proxy), E.worker, "the worker was replaced: %s",
	             ht_err(E.proxy));
	cr_expect_eq(cl, 0, "%d client connections still open in the worker", cl);
	cr_expect_eq(fds - ups, E.fds0, "worker descriptors: %d (+%d upstream), baseline %d",
	             fds - ups, ups, E.fds0);
	cr_expect_leq(ups, POOL, "%d upstream sockets, more than the pool holds", ups);
	cr_expect_eq(ups, rec_open, "%d upstream sockets in the worker, the recorder has %d open",
	             ups, rec_open);
	if (E.heap0 >= 0 && heap >= 0)
		cr_expect_leq(
		        heap, E.heap0 + HEAP_SLACK(E.peak_fds),
		        "the worker's live heap grew from %ld to %ld bytes (%d descriptors at "
		        "most)",
		        E.heap0, heap, E.peak_fds);
	expect_rss_leq(rss, E.rss0 + RSS_RETAINED,
	               "worker RSS %ld KiB after the load, baseline %ld", rss, E.rss0);
	st = ht_stop(E.proxy, 45000);
	err = ht_err(E.proxy);
	E.proxy = 0;
	cr_expect_eq(st, 0, "proxy exit on SIGTERM: %s\n%s", ht_status_str(st), err);
	no_sanitizer_report(err);
	cr_expect_eq(count_of(err, "restarting"), 0, "%s", err);
}

static void setup(void)
{
	ht_setup();
	memset(&E, 0, sizeof(E));
	ntracked = 0;
	ht_raise_nofile(MAX_FDS + 512);
	cr_assert(ht_recorder_start(&E.up, "up", NULL, NULL));
}

static void teardown(void)
{
	for (size_t i = 0; i < ntracked; i++)
		if (tracked[i] >= 0)
			close(tracked[i]);
	ntracked = 0;
	if (E.proxy > 0) {
		int st = ht_stop(E.proxy, 45000);
		if (st != 0)
			fprintf(stderr, "proxy exit: %s\n", ht_status_str(st));
	}
	ht_recorder_stop(&E.up);
	ht_teardown();
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 90);

/* ---- the well-behaved client: a forked process timing its own requests ---- */

struct good_report {
	int n, ok;
	long p50_us, p99_us, max_us;
	char why[200]; /* the first failure */
};

struct good {
	pid_t pid;
	int fd;
	int ms;
};

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

/* One request of three kinds in turn (through the upstream, scrubbed and echoed, to the
 * sink), each checked; returns NULL or why it failed. */
static const char *good_one(struct ht_client *c, int i)
{
	struct ht_result *r;
	const char *want_body = NULL;
	int want = 200;

	switch (i % 3) {
	case 0:
		ht_send_str(c, ht_fmt("GET /good/%d HTTP/1.1\r\nHost: good\r\n\r\n", i));
		want_body = "\"ok\":true";
		break;
	case 1: {
		const char *body = ht_fmt("{\"imei\":\"" IMEI "\",\"i\":%d}", i);
		ht_send_str(
		        c, ht_fmt("POST /good/echo/%d HTTP/1.1\r\nHost: good\r\n"
		                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		                  i, strlen(body), body));
		want_body = ht_fmt("\"i\":%d}", i);
		break;
	}
	default:
		ht_send_str(c, ht_fmt("GET /sink/good/%d HTTP/1.1\r\nHost: good\r\n\r\n", i));
		want = 204;
	}
	r = ht_recv(c, 1, 5000);
	if (r->nresp != 1)
		return ht_fmt("request %d: no answer (%s%s)", i, r->timed_out ? "timed out" : "",
		              r->closed ? "closed" : "");
	if (r->resp[0].status != want)
		return ht_fmt("request %d: status %d", i, r->resp[0].status);
	if (want_body && !strstr(r->resp[0].body, want_body))
		return ht_fmt("request %d: body %s", i, r->resp[0].body);
	if (strstr(r->resp[0].body, IMEI))
		return ht_fmt("request %d: the IMEI came back", i);
	return NULL;
}

static void good_run(int port, int ms, int gap_ms, bool reconnect, int wfd)
{
	struct good_report rep = {0};
	long *lat = calloc(GOOD_MAX, sizeof(*lat)), end = ht_now_ms() + ms;
	struct ht_client *c = NULL;

	for (int i = 0; lat && ht_now_ms() < end && rep.n < GOOD_MAX; i++) {
		const char *why;
		long t;
		if (!c || (reconnect && i % 10 == 0)) {
			ht_close(c);
			c = ht_connect(port);
		}
		t = now_us();
		why = c ? good_one(c, i) : "connect failed";
		lat[rep.n++] = now_us() - t;
		if (!why) {
			rep.ok++;
		} else {
			if (!rep.why[0])
				snprintf(rep.why, sizeof(rep.why), "%s", why);
			ht_close(c);
			c = NULL;
		}
		if (gap_ms)
			ht_sleep_ms(gap_ms);
	}
	if (rep.n) {
		qsort(lat, (size_t)rep.n, sizeof(*lat), cmp_long);
		rep.p50_us = lat[rep.n / 2];
		rep.p99_us = lat[rep.n * 99 / 100];
		rep.max_us = lat[rep.n - 1];
	}
	if (write(wfd, &rep, sizeof(rep)) != sizeof(rep))
		_exit(1);
	_exit(0);
}

/* Starts the well-behaved client for <ms>, a request every <gap_ms>; <reconnect>: a new
 * connection every ten requests, else one keep-alive connection throughout. */
static void good_start(struct good *g, int ms, int gap_ms, bool reconnect)
{
	int p[2];

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	g->ms = ms;
	g->pid = fork();
	cr_assert(g->pid >= 0);
	if (g->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		good_run(E.port, ms, gap_ms, reconnect, p[1]);
	}
	close(p[1]);
	g->fd = p[0];
}

static struct good_report good_finish(struct good *g)
{
	struct good_report rep = {0};
	struct pollfd pf = {.fd = g->fd, .events = POLLIN};
	int st;

	if (poll(&pf, 1, g->ms + 15000) != 1 || read(g->fd, &rep, sizeof(rep)) != sizeof(rep)) {
		kill(g->pid, SIGKILL);
		snprintf(rep.why, sizeof(rep.why), "the well-behaved client hung");
	}
	close(g->fd);
	waitpid(g->pid, &st, 0);
	return rep;
}

/* The well-behaved client was served throughout, at normal latency: every request
 * answered right, the median under <p50_ms>, none over <max_ms>. */
static void good_check(const char *name, const struct good_report *r, long p50_ms, long max_ms)
{
	fprintf(stderr,
	        "hostile/%s: well-behaved client %d/%d ok, latency p50 %.2f ms, p99 %.2f ms, max "
	        "%.2f ms\n",
	        name, r->ok, r->n, r->p50_us / 1000.0, r->p99_us / 1000.0, r->max_us / 1000.0);
	cr_expect_gt(r->n, 10, "the well-behaved client made only %d requests", r->n);
	cr_expect_eq(r->ok, r->n, "well-behaved client: %d of %d failed, first: %s", r->n - r->ok,
	             r->n, r->why);
	cr_expect_leq(r->p50_us, p50_ms * 1000, "median latency %ld us", r->p50_us);
	cr_expect_leq(r->max_us, max_ms * 1000, "worst latency %ld us", r->max_us);
}

/* ---- raw connections, many at once ---- */

#define RAW_IN 8192

struct raw {
	int fd;
	long t0;     /* when its (first) request began, ms */
	long t_resp; /* when a whole response head had come, or -1 */
	long t_end;  /* when the peer closed (FIN or RST), or -1 */
	bool reset;
	size_t got; /* bytes received in all */
	size_t len; /* of them kept in in[] */
	char in[RAW_IN];
	const char *out; /* to send, from out_off on */
	size_t out_len, out_off;
};

static int track(int fd)
{
	cr_assert_lt(ntracked, (size_t)MAX_FDS);
	tracked[ntracked++] = fd;
	return fd;
}

static void untrack(int fd)
{
	for (size_t i = 0; i < ntracked; i++)
		if (tracked[i] == fd)
			tracked[i] = -1;
}

/* Connects (2 s), returns the connection (arena). */
static struct raw *raw_open(void)
{
	struct raw *r = ht_alloc(sizeof(*r));
	struct pollfd pf;
	int e = 0;
	socklen_t el = sizeof(e);

	r->fd = track(ht_connect_nb(E.port));
	cr_assert(r->fd >= 0, "connect: %s", strerror(errno));
	pf = (struct pollfd){.fd = r->fd, .events = POLLOUT};
	cr_assert_eq(poll(&pf, 1, 2000), 1, "connect timed out");
	cr_assert(getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0, "connect: %s",
	          strerror(e));
	r->t0 = ht_now_ms();
	r->t_resp = r->t_end = -1;
	return r;
}

/* Opens <n> connections into rs[], in batches of 50 each accepted by the worker before the
 * next batch goes (a burst would overflow the accept queue: see listen_backlog_is_1024). */
static void raw_open_many(struct raw **rs, int n)
{
	int base = ht_tcp_count(E.worker, E.port, 0);

	for (int i = 0; i < n; i += 50) {
		int b = n - i < 50 ? n - i : 50;
		long end = ht_now_ms() + 5000;
		for (int k = i; k < i + b; k++)
			rs[k] = raw_open();
		/* (less two: the well-behaved client's connection may come and go meanwhile) */
		while (ht_tcp_count(E.worker, E.port, 0) < base + i + b - 2) {
			cr_assert(ht_now_ms() < end, "the worker accepted %d of %d connections",
			          ht_tcp_count(E.worker, E.port, 0) - base, i + b);
			ht_sleep_ms(2);
		}
	}
}

static void raw_close(struct raw *r, bool reset)
{
	if (r->fd < 0)
		return;
	untrack(r->fd);
	if (reset)
		ht_close_reset(r->fd);
	else
		close(r->fd);
	r->fd = -1;
}

/* Queues <p, n> (not copied) to send, from now on (t0). */
static void raw_queue(struct raw *r, const char *p, size_t n)
{
	r->out = p;
	r->out_len = n;
	r->out_off = 0;
	r->t0 = ht_now_ms();
}

/* Sends and receives what can be without waiting. */
static void raw_pump(struct raw *r)
{
	if (r->fd < 0)
		return;
	while (r->out && r->out_off < r->out_len && r->t_end < 0) {
		ssize_t w = send(r->fd, r->out + r->out_off, r->out_len - r->out_off, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		r->out_off += (size_t)w;
	}
	while (r->t_end < 0) {
		char buf[65536];
		ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r->reset = n < 0 && errno == ECONNRESET;
			r->t_end = ht_now_ms();
			break;
		}
		size_t k = (size_t)n < RAW_IN - 1 - r->len ? (size_t)n : RAW_IN - 1 - r->len;
		memcpy(r->in + r->len, buf, k);
		r->len += k;
		r->in[r->len] = 0;
		r->got += (size_t)n;
		if (r->t_resp < 0 && strstr(r->in, "\r\n\r\n"))
			r->t_resp = ht_now_ms();
	}
}

/* The status of the first response received, or 0. */
static int raw_status(const struct raw *r)
{
	int st = 0;
	if (r->len < 12 || sscanf(r->in, "HTTP/1.1 %d ", &st) != 1)
		return 0;
	return st;
}

static bool raw_says_close(const struct raw *r)
{
	const char *h = strstr(r->in, "\r\nConnection: close\r\n"), *e = strstr(r->in, "\r\n\r\n");
	return h && e && h < e;
}

/* Polls <rs> (sending, receiving) until every one has had a response head and — when
 * <until_end> — been closed by the peer, or until <deadline> (ms). Samples the worker's
 * RSS as it goes. */
static void raw_poll(struct raw **rs, size_t n, bool until_end, long deadline)
{
	struct pollfd *pf = ht_alloc(n * sizeof(*pf));
	long next_sample = 0;

	for (;;) {
		size_t waiting = 0, k = 0;
		for (size_t i = 0; i < n; i++) {
			struct raw *r = rs[i];
			if (r->fd < 0 || r->t_end >= 0)
				continue;
			if (r->t_resp < 0 || until_end)
				waiting++;
			pf[k].fd = r->fd;
			pf[k].events = POLLIN | (r->out && r->out_off < r->out_len ? POLLOUT : 0);
			pf[k].revents = 0;
			k++;
		}
		if (!waiting || ht_now_ms() >= deadline)
			return;
		if (ht_now_ms() >= next_sample) {
			sample_load();
			next_sample = ht_now_ms() + 50;
		}
		poll(pf, k, 20);
		for (size_t i = 0; i < n; i++)
			raw_pump(rs[i]);
	}
}

/* ---- slowloris ---- */

/* 200 connections dribble a request head, a byte every 300 ms. Each must get 408 (and
 * Connection: close, then the close itself) client_header_timeout_ms (1 s) after its first
 * byte — not sooner than the limit, not much later — and nothing of theirs may reach the
 * upstream. Meanwhile the well-behaved client's requests, on new connections too, are
 * answered at normal latency. */
Test(hostile, slowloris_heads_get_408_and_others_are_served)
{
	enum { N = 200, GAP = 300, TIMEOUT = 1000 };
	static const char head[] = SLOW_HEAD "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct raw *rs[N];
	size_t sent[N];
	long next[N], end, worst = 0, soonest = 1L << 30;
	struct good g;
	struct good_report rep;
	struct ht_rec_entry *log;
	size_t nlog;

	start_proxy(ht_fmt("\"client_header_timeout_ms\": %d", TIMEOUT), 0);
	good_start(&g, 2500, 10, true);
	raw_open_many(rs, N);
	for (int i = 0; i < N; i++) {
		sent[i] = 0;
		next[i] = 0;
	}
	/* The dribble: one byte per connection every GAP ms, answers read as they come. */
	end = ht_now_ms() + TIMEOUT + 3000;
	for (;;) {
		int open_ = 0;
		long now = ht_now_ms();
		for (int i = 0; i < N; i++) {
			struct raw *r = rs[i];
			raw_pump(r);
			if (r->t_end >= 0)
				continue;
			open_++;
			if (now >= next[i] && sent[i] < sizeof(head) - 1 && r->t_resp < 0) {
				if (send(r->fd, head + sent[i], 1, MSG_NOSIGNAL) == 1) {
					if (sent[i] == 0)
						r->t0 = now;
					sent[i]++;
				}
				next[i] = now + GAP;
			}
		}
		if (!open_ || now > end)
			break;
		sample_load();
		ht_sleep_ms(10);
	}
	rep = good_finish(&g);
	for (int i = 0; i < N; i++) {
		struct raw *r = rs[i];
		cr_assert_eq(raw_status(r), 408, "connection %d: %s (%zu bytes sent)", i, r->in,
		             sent[i]);
		cr_assert(raw_says_close(r), "connection %d: %s", i, r->in);
		cr_assert_geq(r->t_end, 0, "connection %d was not closed after its 408", i);
		cr_assert_lt(sent[i], sizeof(head) - 1, "connection %d sent its whole head", i);
		if (r->t_resp - r->t0 > worst)
			worst = r->t_resp - r->t0;
		if (r->t_resp - r->t0 < soonest)
			soonest = r->t_resp - r->t0;
		raw_close(r, false);
	}
	fprintf(stderr, "hostile/slowloris: %d heads, 408 after %ld..%ld ms (limit %d ms)\n", N,
	        soonest, worst, TIMEOUT);
	cr_expect_geq(soonest, TIMEOUT - GAP / 2, "a 408 came before the timeout");
	cr_expect_leq(worst, TIMEOUT + 500, "a 408 came %ld ms after the first byte", worst);
	good_check("slowloris", &rep, SLOW(20), SLOW(300));
	nlog = ht_rec_log(&E.up, &log);
	for (size_t i = 0; i < nlog; i++)
		cr_assert_null(strstr(log[i].target, "hostile"), "forwarded: %s", log[i].target);
	settle("slowloris");
}

/* ---- idle connections up to the descriptor limit ---- */

/* Opens <count> connections into pf[from...], and waits until all are established. */
static void open_batch(struct pollfd *pf, long *t_open, long *t_closed, int from, int count)
{
	int ok = 0;
	long end;

	for (int k = from; k < from + count; k++) {
		pf[k].fd = track(ht_connect_nb(E.port));
		cr_assert_geq(pf[k].fd, 0, "connection %d: %s", k, strerror(errno));
		pf[k].events = POLLOUT;
		t_open[k] = ht_now_ms();
		t_closed[k] = -1;
	}
	for (end = ht_now_ms() + 3000; ok < count && ht_now_ms() < end;) {
		poll(pf + from, (nfds_t)count, 20);
		ok = 0;
		for (int k = from; k < from + count; k++)
			ok += (pf[k].revents & POLLOUT) != 0;
	}
	cr_assert_eq(ok, count, "connections %d to %d: %d established", from, from + count - 1, ok);
}

/* The proxy starts with RLIMIT_NOFILE 2048; connections open and stay silent until the
 * worker runs out of descriptors (about 2040 of them), then 100 more wait in the kernel's
 * accept queue. The worker: stays up; says so in its log about once a second rather than
 * in a loop, and uses little CPU meanwhile (a spinning accept would take a whole core);
 * keeps serving a well-behaved client connected before (its upstream connection is a
 * pooled one, and the sink needs none); closes every idle connection after
 * client_idle_timeout_ms (not sooner), the queued ones once there is room and they have
 * idled in turn; then serves new clients again. */
Test(hostile, idle_connections_to_the_fd_limit)
{
	enum {
		NOFILE = 2048,
		MAX = 2800,
		BATCH = 50,
		QUEUED = 100,
		IDLE = 5000,
		CPU_WINDOW = 2000
	};
	struct pollfd *pf = ht_alloc(MAX * sizeof(*pf));
	long *t_open = ht_alloc(MAX * sizeof(long)), *t_closed = ht_alloc(MAX * sizeof(long));
	long t_full, cpu0, cpu1, end, first_close = -1, last_close = -1, soonest = 1L << 30;
	int n = 0, closed = 0, wfds, accepted, logs0, logs1;
	const char *err;
	struct good g;
	struct good_report rep;
	struct ht_result *r;

	cr_assert_geq(ht_raise_nofile(MAX + 512), MAX + 512, "the test needs %d descriptors",
	              MAX + 512);
	start_proxy(ht_fmt("\"client_idle_timeout_ms\": %d", IDLE), NOFILE);
	good_start(&g, 11000, 50, false);
	ht_sleep_ms(100); /* its connection is in before the flood */
	/* Batches of BATCH connections, each established and accepted before the next goes,
	 * until the worker says it cannot accept any more (a burst of thousands of SYNs at once
	 * would overflow the accept queue: see listen_backlog_is_1024 below). */
	while (!strstr(ht_err(E.proxy), "accept: Too many open files")) {
		cr_assert_leq(n + BATCH, MAX - QUEUED,
		              "%d connections accepted, no descriptor error", n);
		open_batch(pf, t_open, t_closed, n, BATCH);
		n += BATCH;
		for (end = ht_now_ms() + 1000; ht_now_ms() < end;) {
			if (ht_fd_count(E.worker) >= E.fds0 + n ||
			    strstr(ht_err(E.proxy), "accept: Too many open files"))
				break;
			ht_sleep_ms(2);
		}
	}
	accepted = ht_tcp_count(E.worker, E.port, 0);
	/* A few more, left waiting in the kernel's accept queue. */
	open_batch(pf, t_open, t_closed, n, QUEUED);
	n += QUEUED;
	t_full = ht_now_ms();
	wfds = ht_fd_count(E.worker);
	cr_expect_geq(wfds, NOFILE - 2, "the worker has %d descriptors open", wfds);
	/* Not spinning: CPU and log lines over a window while it cannot accept. */
	err = ht_err(E.proxy);
	logs0 = count_of(err, "accept:");
	cpu0 = ht_cpu_ms(E.worker);
	ht_sleep_ms(CPU_WINDOW);
	cpu1 = ht_cpu_ms(E.worker);
	logs1 = count_of(ht_err(E.proxy), "accept:");
	sample_load();
	cr_assert(ht_running(E.proxy));
	cr_assert_eq(ht_child_of(E.proxy), E.worker, "the worker died at the descriptor limit");
	cr_assert_lt(t_full - t_open[0] + CPU_WINDOW, IDLE - 200,
	             "the window did not fit before the idle timeout");
	fprintf(stderr,
	        "hostile/idle: %d connections in %ld ms (%d accepted, the rest queued), worker at "
	        "%d fds (limit %d); over %d ms at the limit: %ld ms CPU, %d accept errors "
	        "logged\n",
	        n, t_full - t_open[0], accepted, wfds, NOFILE, CPU_WINDOW, cpu1 - cpu0,
	        logs1 - logs0);
	cr_expect_leq(cpu1 - cpu0, CPU_WINDOW / 5, "the worker used %ld ms of CPU in %d ms",
	              cpu1 - cpu0, CPU_WINDOW);
	cr_expect_leq(logs1 - logs0, CPU_WINDOW / 1000 + 2, "the accept error was logged %d times",
	              logs1 - logs0);
	/* Every idle connection is closed by the proxy: none before the idle timeout, the
	 * accepted ones at it, the queued ones once accepted in turn. */
	for (int i = 0; i < n; i++)
		pf[i].events = POLLIN;
	for (end = ht_now_ms() + 3 * IDLE + 3000; closed < n && ht_now_ms() < end;) {
		poll(pf, (nfds_t)n, 20);
		for (int i = 0; i < n; i++) {
			char b[64];
			if (t_closed[i] >= 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (recv(pf[i].fd, b, sizeof(b), MSG_DONTWAIT) > 0)
				cr_assert_fail("an idle connection received bytes: %.*s", 64, b);
			t_closed[i] = ht_now_ms();
			if (t_closed[i] - t_open[i] < soonest)
				soonest = t_closed[i] - t_open[i];
			if (first_close < 0)
				first_close = t_closed[i];
			last_close = t_closed[i];
			untrack(pf[i].fd);
			close(pf[i].fd);
			pf[i].fd = -1;
			closed++;
		}
		sample_load();
	}
	fprintf(stderr,
	        "hostile/idle: %d of %d closed by the proxy, the first %ld ms after connecting, "
	        "the last %ld ms after the first\n",
	        closed, n, soonest, last_close - first_close);
	cr_assert_eq(closed, n, "%d idle connections were never closed", n - closed);
	cr_expect_geq(soonest, IDLE - 100, "an idle connection was closed after %ld ms", soonest);
	/* And new clients are served again. */
	r = ht_exchange_str(E.port, "GET /after-the-flood HTTP/1.1\r\nHost: x\r\n\r\n", 1, 5000);
	cr_assert_not_null(r);
	cr_assert_eq(r->nresp, 1);
	cr_assert_eq(r->resp[0].status, 200);
	rep = good_finish(&g);
	good_check("idle", &rep, SLOW(20), SLOW(500));
	settle("idle");
}

/* A listen backlog of 1024 is what master.c asks for and docs/operations.md promises: with
 * the worker unable to accept (out of descriptors), 600 connections must still complete
 * their handshakes in the kernel's accept queue at once, rather than have their SYNs
 * dropped and retried a second or more later. */
/* The listen backlog is the master's 1024: workers pass 0 to evconnlistener_new (-1
 * made libevent call listen(128) again, and connections beyond it were dropped). */
Test(hostile, listen_backlog_is_1024)
{
	enum { NOFILE = 64, MAX = 1000, BURST = 600 };
	struct pollfd *pf = ht_alloc(MAX * sizeof(*pf));
	long *t_open = ht_alloc(MAX * sizeof(long)), *t_closed = ht_alloc(MAX * sizeof(long));
	int n = 0, ok = 0;
	long end;

	start_proxy(NULL, NOFILE);
	while (!strstr(ht_err(E.proxy), "accept: Too many open files")) {
		cr_assert_lt(n, 200, "no descriptor error after %d connections", n);
		open_batch(pf, t_open, t_closed, n, 10);
		n += 10;
		ht_sleep_ms(20);
	}
	/* The worker accepts nothing now: a burst, all into the accept queue. */
	for (int k = n; k < n + BURST; k++)
		pf[k] = (struct pollfd){.fd = track(ht_connect_nb(E.port)), .events = POLLOUT};
	for (end = ht_now_ms() + 500; ht_now_ms() < end;) {
		poll(pf + n, BURST, 20);
		ok = 0;
		for (int k = n; k < n + BURST; k++)
			ok += (pf[k].revents & POLLOUT) != 0;
		if (ok == BURST)
			break;
	}
	fprintf(stderr, "hostile/backlog: %d of %d connections queued within 500 ms\n", ok, BURST);
	cr_expect_eq(ok, BURST, "only %d of %d connections got into the accept queue", ok, BURST);
	for (int k = 0; k < n + BURST; k++) {
		untrack(pf[k].fd);
		close(pf[k].fd);
	}
	settle("backlog");
}

/* ---- pipelined floods ---- */

/* One connection's pipelined requests and the responses read back, in order. */
struct stream {
	int fd;
	char *out; /* every request, back to back (arena) */
	size_t out_len, out_off;
	char *in; /* received, not yet split (malloc'd, grows) */
	size_t in_len, in_cap, in_off;
	size_t nresp;
	bool closed;
};

static void stream_open(struct stream *s, char *out, size_t out_len)
{
	struct raw *r = raw_open();
	memset(s, 0, sizeof(*s));
	s->fd = r->fd;
	s->out = out;
	s->out_len = out_len;
}

/* Sends what the socket takes, reads what has come (when <read>). */
static void stream_pump(struct stream *s, bool read)
{
	while (s->out_off < s->out_len && !s->closed) {
		ssize_t w = send(s->fd, s->out + s->out_off, s->out_len - s->out_off, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		s->out_off += (size_t)w;
	}
	while (read && !s->closed) {
		ssize_t n;
		if (s->in_cap - s->in_len < 65536) {
			if (s->in_off) {
				memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
				s->in_len -= s->in_off;
				s->in_off = 0;
			}
			if (s->in_cap - s->in_len < 65536) {
				char *p = realloc(s->in, s->in_cap + (1 << 20));
				cr_assert_not_null(p);
				s->in = p;
				s->in_cap += 1 << 20;
			}
		}
		n = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			s->closed = true;
			break;
		}
		s->in_len += (size_t)n;
	}
}

/* The next whole response, or NULL. */
static struct ht_msg *stream_next(struct stream *s)
{
	struct ht_msg *m = ht_alloc(sizeof(*m));
	const char *why = NULL;
	long n = ht_parse(s->in + s->in_off, s->in_len - s->in_off, true, false, false, m, &why);

	cr_assert_geq(n, 0, "response %zu does not parse: %s", s->nresp, why);
	if (n == 0)
		return NULL;
	s->in_off += (size_t)n;
	s->nresp++;
	return m;
}

/* One connection pipelines 5000 POSTs through the upstream (each body echoed back), another
 * 20000 GETs to the sink, both reading as they go; a second round repeats it. Every answer
 * comes in the order asked, the upstream receives the requests in that order, the worker's
 * RSS stays within 32 MiB of its baseline and does not grow from one round to the next,
 * and the well-behaved client is served meanwhile. */
Test(hostile, pipelined_floods_answered_in_order)
{
	enum { NECHO = 5000, NSINK = 20000, ROUNDS = 2 };
	long rss_round[ROUNDS], ms_round[ROUNDS];
	struct ht_rec_entry *log;
	size_t nlog, seen = 0;
	struct good g;
	struct good_report rep;

	start_proxy(NULL, 0);
	good_start(&g, 4000, 10, true);
	for (int round = 0; round < ROUNDS; round++) {
		char *echo = ht_alloc(NECHO * 160), *sink = ht_alloc(NSINK * 48);
		size_t el = 0, sl = 0, echo_seen = 0, sink_seen = 0;
		struct stream a, b;
		long t0 = ht_now_ms(), end = t0 + 20000, next_sample = 0;

		for (int i = 0; i < NECHO; i++) {
			char body[32];
			int bl = snprintf(body, sizeof(body), "{\"i\":%d}", i);
			el += (size_t)sprintf(
			        echo + el,
			        "POST /flood/echo/%d HTTP/1.1\r\nHost: x\r\n"
			        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			        i, bl, body);
		}
		for (int i = 0; i < NSINK; i++)
			sl += (size_t)sprintf(sink + sl,
			                      "GET /sink/flood/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
		stream_open(&a, echo, el);
		stream_open(&b, sink, sl);
		while ((echo_seen < NECHO || sink_seen < NSINK) && ht_now_ms() < end) {
			struct pollfd pf[2] = {{.fd = a.fd, .events = POLLIN},
			                       {.fd = b.fd, .events = POLLIN}};
			struct ht_msg *m;
			if (a.out_off < a.out_len)
				pf[0].events |= POLLOUT;
			if (b.out_off < b.out_len)
				pf[1].events |= POLLOUT;
			poll(pf, 2, 20);
			stream_pump(&a, true);
			stream_pump(&b, true);
			while ((m = stream_next(&a))) {
				char want[32];
				snprintf(want, sizeof(want), "{\"i\":%zu}", echo_seen);
				cr_assert_eq(m->status, 200, "echo %zu: %d", echo_seen, m->status);
				cr_assert_str_eq(m->body, want, "echo answers out of order");
				echo_seen++;
			}
			while ((m = stream_next(&b))) {
				cr_assert_eq(m->status, 204, "sink %zu: %d", sink_seen, m->status);
				sink_seen++;
			}
			cr_assert(!a.closed || echo_seen == NECHO, "the echo flood was cut at %zu",
			          echo_seen);
			cr_assert(!b.closed || sink_seen == NSINK, "the sink flood was cut at %zu",
			          sink_seen);
			if (ht_now_ms() >= next_sample) {
				sample_load();
				next_sample = ht_now_ms() + 50;
			}
		}
		ms_round[round] = ht_now_ms() - t0;
		cr_assert_eq(echo_seen, NECHO, "%zu of %d echo answers in %ld ms", echo_seen, NECHO,
		             ms_round[round]);
		cr_assert_eq(sink_seen, NSINK, "%zu of %d sink answers", sink_seen, NSINK);
		free(a.in);
		free(b.in);
		untrack(a.fd);
		close(a.fd);
		untrack(b.fd);
		close(b.fd);
		ht_sleep_ms(200);
		rss_round[round] = ht_rss_kb(E.worker);
	}
	rep = good_finish(&g);
	fprintf(stderr,
	        "hostile/pipelined: %d echo + %d sink requests per round, rounds took %ld and %ld "
	        "ms; worker RSS after each round %ld and %ld KiB (baseline %ld, peak %ld)\n",
	        NECHO, NSINK, ms_round[0], ms_round[1], rss_round[0], rss_round[1], E.rss0,
	        E.peak_rss);
	good_check("pipelined", &rep, SLOW(20), SLOW(500));
	/* The upstream got the echo requests in the order sent, round after round. */
	nlog = ht_rec_log(&E.up, &log);
	for (size_t i = 0; i < nlog; i++) {
		if (strncmp(log[i].target, "/flood/echo/", 12) != 0)
			continue;
		cr_assert_eq(atoi(log[i].target + 12), (int)(seen % NECHO),
		             "upstream got %s as #%zu", log[i].target, seen);
		seen++;
	}
	cr_assert_eq(seen, (size_t)NECHO * ROUNDS);
	expect_rss_leq(E.peak_rss, E.rss0 + 32 * MiB, "worker RSS peaked at %ld KiB", E.peak_rss);
	expect_rss_leq(rss_round[1], rss_round[0] + 2 * MiB,
	               "worker RSS grew from %ld to %ld KiB in a second, identical round",
	               rss_round[0], rss_round[1]);
	settle("pipelined");
}

/* Floods that never read: bytes are sent for a bounded time, up to 128 MiB each, and the
 * worker's RSS is sampled all along (the flood stops early if it passes 512 MiB, to keep
 * the machine safe). Returns the bytes the proxy took. */
static size_t unread_flood(const char *first, const char *req, size_t max, int ms, long *took_ms)
{
	size_t rl = strlen(req), fl = first ? strlen(first) : 0, per = (65536 / rl) * rl, sent = 0;
	char *pattern = ht_alloc(per + fl);
	struct raw *r = raw_open();
	long t0 = ht_now_ms(), end = t0 + ms, next_sample = 0;

	for (size_t off = 0; off < per; off += rl)
		memcpy(pattern + off, req, rl);
	if (first) {
		cr_assert(send(r->fd, first, fl, MSG_NOSIGNAL) == (ssize_t)fl);
		sent = fl;
	}
	while (sent < max && ht_now_ms() < end && E.peak_rss < E.rss0 + 512 * MiB) {
		struct pollfd pf = {.fd = r->fd, .events = POLLOUT};
		size_t off = (sent - fl) % per;
		ssize_t w;
		if (ht_now_ms() >= next_sample) {
			sample_load();
			next_sample = ht_now_ms() + 50;
		}
		if (poll(&pf, 1, 20) != 1)
			continue;
		w = send(r->fd, pattern + off, per - off, MSG_NOSIGNAL);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			break;
		if (w > 0)
			sent += (size_t)w;
	}
	*took_ms = ht_now_ms() - t0;
	sample_load();
	raw_close(r, false);
	return sent;
}

/* A client pipelines up to 128 MiB of requests behind one the upstream never answers, for
 * 3 s, and never reads: the proxy must stop reading it (conn.c: no more than header_bytes +
 * body_bytes wait in its input) instead of buffering whatever it sends. The worker's RSS
 * stays within 32 MiB of its baseline; the well-behaved client is served meanwhile; once
 * the stall ends, the requests of the client that left are not sent upstream. */
Test(hostile, pipelined_unread_behind_a_stalled_upstream)
{
	struct good g;
	struct good_report rep;
	size_t sent;
	long ms;

	/* The stall ends in a 504 after 4 s: only then does the proxy read again, see that the
	 * client has gone, and close (it does not read, so cannot see the close, before). */
	start_proxy("\"upstream_response_timeout_ms\": 4000", 0);
	good_start(&g, 3000, 10, true);
	sent = unread_flood(
	        "GET /flood/stall HTTP/1.1\r\nHost: x\r\n\r\n",
	        "POST /flood/w HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	        "Content-Length: 2\r\n\r\n{}",
	        128u << 20, 3000, &ms);
	rep = good_finish(&g);
	fprintf(stderr,
	        "hostile/unread-stalled: the proxy took %zu KiB of pipelined requests in %ld ms; "
	        "worker RSS peak %ld KiB (baseline %ld)\n",
	        sent >> 10, ms, E.peak_rss, E.rss0);
	good_check("unread-stalled", &rep, SLOW(20), SLOW(500));
	cr_expect_lt(sent, 64u << 20, "the proxy read %zu bytes behind a stalled request", sent);
	/* Once the stall ends in a 504 the proxy finds the client gone (its first write fails)
	 * and stops: the requests still in its input are not sent on for a client that left. */
	for (long end = ht_now_ms() + 8000; ht_tcp_count(E.worker, E.port, 0) > 0;) {
		cr_assert_lt(ht_now_ms(), end, "the flood's connection was never closed");
		ht_sleep_ms(50);
	}
	{
		struct ht_rec_entry *log;
		size_t nlog = ht_rec_log(&E.up, &log), after = 0;
		for (size_t i = 0; i < nlog; i++)
			after += strcmp(log[i].target, "/flood/w") == 0;
		fprintf(stderr,
		        "hostile/unread-stalled: %zu pipelined requests reached the upstream "
		        "after the client had gone\n",
		        after);
		cr_expect_leq(after, 3, "%zu requests of a client gone were sent upstream", after);
	}
	expect_rss_leq(E.peak_rss, E.rss0 + 32 * MiB, "worker RSS peaked at %ld KiB", E.peak_rss);
	settle("unread-stalled");
}

/* A client sends up to 128 MiB of pipelined GETs, for 6 s, that the upstream answers at
 * once, and never reads an answer. Requests are served one at a time, so the proxy must
 * stop reading once a request's worth waits in its input (conn.c: header_bytes +
 * body_bytes) and the worker's RSS stay within 64 MiB of its baseline; the well-behaved
 * client is served meanwhile. */
/* A pipelining client that does not read is not read either once its input holds a whole
 * request's worth: finish_request only resumes reading under that bound (it once grew
 * to 128 MiB in 1.8 s). */
Test(hostile, pipelined_unread_answered_by_the_upstream)
{
	struct good g;
	struct good_report rep;
	size_t sent;
	long ms;

	start_proxy(NULL, 0);
	good_start(&g, 6000, 10, true);
	sent = unread_flood(NULL, "GET /flood/x HTTP/1.1\r\nHost: x\r\n\r\n", 128u << 20, 6000,
	                    &ms);
	rep = good_finish(&g);
	fprintf(stderr,
	        "hostile/unread-upstream: the proxy took %zu KiB of pipelined requests in %ld ms "
	        "(the upstream saw %zu); worker RSS peak %ld KiB (baseline %ld)\n",
	        sent >> 10, ms, ht_rec_log(&E.up, NULL), E.peak_rss, E.rss0);
	good_check("unread-upstream", &rep, SLOW(20), SLOW(500));
	expect_rss_leq(E.peak_rss, E.rss0 + 64 * MiB, "worker RSS peaked at %ld KiB after %zu KiB",
	               E.peak_rss, sent >> 10);
	settle("unread-upstream");
}

/* A client sends 128 MiB of pipelined requests the proxy answers itself (the sink: 204
 * each, smaller than the request) and never reads an answer. The proxy must stop reading
 * once its answers pile up for that client, as it does when relaying an upstream's answer
 * (256 KiB), so the worker's RSS stays within 64 MiB of its baseline; the well-behaved
 * client is served meanwhile. */
/* Answers to a client that does not read do not pile up: the next pipelined request
 * waits while the client's output is over RELAY_HIGH (conn_step, client_write_cb). */
Test(hostile, pipelined_unread_answered_by_the_proxy)
{
	struct good g;
	struct good_report rep;
	size_t sent;
	long ms;

	start_proxy(NULL, 0);
	good_start(&g, 6000, 10, true);
	sent = unread_flood(NULL, "GET /sink/u HTTP/1.1\r\nHost: x\r\n\r\n", 128u << 20, 6000, &ms);
	rep = good_finish(&g);
	fprintf(stderr,
	        "hostile/unread-sink: the proxy took %zu KiB of pipelined requests in %ld ms; "
	        "worker RSS peak %ld KiB (baseline %ld)\n",
	        sent >> 10, ms, E.peak_rss, E.rss0);
	good_check("unread-sink", &rep, SLOW(20), SLOW(500));
	expect_rss_leq(E.peak_rss, E.rss0 + 64 * MiB, "worker RSS peaked at %ld KiB after %zu KiB",
	               E.peak_rss, sent >> 10);
	settle("unread-sink");
}

/* ---- oversized, unfinished and reset requests ---- */

/* Forgets the answer received, to read the next one on the same connection. */
static void raw_rearm(struct raw *r)
{
	r->len = 0;
	r->in[0] = 0;
	r->t_resp = -1;
	r->t0 = ht_now_ms();
}

static char *repeat(char c, size_t n)
{
	char *s = ht_alloc(n + 1);
	memset(s, c, n);
	return s;
}

/* Forty connections of each kind at once, in two rounds: a header line over header_bytes
 * (431), more fields than `headers` (431), a target over uri_bytes (414), a Content-Length
 * over body_bytes with the body coming (413 at once), a chunked body growing past body_bytes
 * (413), a body announced and never finished (408 after client_body_timeout_ms); each
 * answered, with Connection: close, then closed. And forty that reset (SO_LINGER 0) in the
 * middle of a body. body_bytes is 64 KiB here, to keep a round's memory small. None of it
 * reaches the upstream, and the well-behaved client is served meanwhile. */
Test(hostile, oversized_unfinished_and_reset_requests)
{
	enum { K = 40, ROUNDS = 2, BODY_TIMEOUT = 1000, KINDS = 6, BODY_MAX = 65536 };
	struct {
		const char *name;
		const char *req;
		size_t len;
		int status;
	} kinds[KINDS];
	const char *chunk = ht_fmt("8000\r\n%s\r\n", repeat('c', 0x8000));
	const char *reset_req;
	long rss_round[ROUNDS];
	struct good g;
	struct good_report rep;
	struct ht_rec_entry *log;
	size_t nlog;

	{
		char *many = ht_alloc(200 * 16 + 64), *o = many;
		o += sprintf(o, "GET /hostile/many HTTP/1.1\r\nHost: x\r\n");
		for (int i = 0; i < 200; i++)
			o += sprintf(o, "X-H%d: v\r\n", i);
		strcpy(o, "\r\n");
		kinds[0].name = "header over header_bytes";
		kinds[0].req =
		        ht_fmt("GET /hostile/big-header HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n",
		               repeat('a', 20000));
		kinds[0].status = 431;
		kinds[1].name = "200 header fields";
		kinds[1].req = many;
		kinds[1].status = 431;
	}
	kinds[2].name = "target over uri_bytes";
	kinds[2].req = ht_fmt("GET /hostile/%s HTTP/1.1\r\nHost: x\r\n\r\n", repeat('u', 10000));
	kinds[2].status = 414;
	kinds[3].name = "Content-Length over body_bytes";
	kinds[3].req = ht_fmt("POST /hostile/cl HTTP/1.1\r\nHost: x\r\nContent-Type: "
	                      "application/json\r\nContent-Length: %d\r\n\r\n%s",
	                      BODY_MAX + 1, repeat('b', BODY_MAX / 2));
	kinds[3].status = 413;
	kinds[4].name = "chunked body over body_bytes";
	kinds[4].req = ht_fmt("POST /hostile/chunked HTTP/1.1\r\nHost: x\r\nContent-Type: "
	                      "application/json\r\nTransfer-Encoding: chunked\r\n\r\n%s%s%s",
	                      chunk, chunk, chunk);
	kinds[4].status = 413;
	kinds[5].name = "body never finished";
	kinds[5].req = "POST /hostile/unfinished HTTP/1.1\r\nHost: x\r\nContent-Type: "
	               "application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":\"0123456789";
	kinds[5].status = 408;
	for (int k = 0; k < KINDS; k++)
		kinds[k].len = strlen(kinds[k].req);
	reset_req = ht_fmt("POST /hostile/reset-mid-body HTTP/1.1\r\nHost: x\r\nContent-Type: "
	                   "application/json\r\nContent-Length: %d\r\n\r\n%s",
	                   BODY_MAX - 10, repeat('r', BODY_MAX / 2));

	start_proxy(ht_fmt("\"client_body_timeout_ms\": %d, \"body_bytes\": %d", BODY_TIMEOUT,
	                   BODY_MAX),
	            0);
	good_start(&g, ROUNDS * (BODY_TIMEOUT + 500), 10, true);
	for (int round = 0; round < ROUNDS; round++) {
		struct raw *rs[KINDS * K], *resets[K];
		long t0 = ht_now_ms(), end;

		raw_open_many(rs, KINDS * K);
		raw_open_many(resets, K);
		for (int i = 0; i < KINDS * K; i++) {
			raw_queue(rs[i], kinds[i % KINDS].req, kinds[i % KINDS].len);
			raw_pump(rs[i]);
		}
		for (int i = 0; i < K; i++)
			raw_queue(resets[i], reset_req, strlen(reset_req));
		/* The resets: the partial body goes, the proxy reads it, then an RST. */
		raw_poll(resets, K, false, ht_now_ms() + 200);
		for (int i = 0; i < K; i++) {
			cr_assert_eq(resets[i]->out_off, resets[i]->out_len, "reset %d: %zu sent",
			             i, resets[i]->out_off);
			cr_assert_lt(resets[i]->got, 1, "reset %d got an answer: %s", i,
			             resets[i]->in);
			raw_close(resets[i], true);
		}
		raw_poll(rs, KINDS * K, true, ht_now_ms() + BODY_TIMEOUT + 3000);
		for (int i = 0; i < KINDS * K; i++) {
			struct raw *r = rs[i];
			const char *name = kinds[i % KINDS].name;
			cr_assert_eq(raw_status(r), kinds[i % KINDS].status, "%s: %s", name, r->in);
			cr_assert(raw_says_close(r), "%s: %s", name, r->in);
			cr_assert_geq(r->t_end, 0, "%s: not closed after its answer", name);
			if (kinds[i % KINDS].status == 408) {
				cr_assert_geq(r->t_resp - r->t0, BODY_TIMEOUT - 50,
				              "%s: after %ld ms", name, r->t_resp - r->t0);
				cr_assert_leq(r->t_resp - r->t0, BODY_TIMEOUT + SLOW(500),
				              "%s: after %ld ms", name, r->t_resp - r->t0);
			} else {
				cr_assert_leq(r->t_resp - r->t0, SLOW(500),
				              "%s: answered after %ld ms", name, r->t_resp - r->t0);
			}
			raw_close(r, false);
		}
		for (end = ht_now_ms() + 3000;
		     ht_tcp_count(E.worker, E.port, 0) > 1 && ht_now_ms() < end;)
			ht_sleep_ms(20);
		sample_load();
		rss_round[round] = ht_rss_kb(E.worker);
		fprintf(stderr,
		        "hostile/oversized: round %d took %ld ms, worker RSS after %ld KiB\n",
		        round + 1, ht_now_ms() - t0, rss_round[round]);
	}
	rep = good_finish(&g);
	good_check("oversized", &rep, SLOW(20), SLOW(500));
	nlog = ht_rec_log(&E.up, &log);
	for (size_t i = 0; i < nlog; i++)
		cr_assert_null(strstr(log[i].target, "hostile"), "forwarded: %s", log[i].target);
	settle("oversized");
}

/* ---- clients that do not read large answers ---- */

/* Eight clients ask for 50 MB each from the upstream and never read. The relay's
 * back-pressure (the upstream is read no further while 256 KiB wait for the client) keeps
 * the worker's RSS within 32 MiB of its baseline; the well-behaved client is served; and
 * the proxy cuts those connections itself, upstream_response_timeout_ms after it last read
 * the upstream plus the 5 s it gives an answer to flush. */
Test(hostile, unread_large_upstream_answers)
{
	enum { K = 8, TIMEOUT = 2000, FLUSH = 5000 };
	struct raw *rs[K];
	struct good g;
	struct good_report rep;
	long t0, end, cut;
	int left;

	start_proxy(ht_fmt("\"upstream_response_timeout_ms\": %d", TIMEOUT), 0);
	good_start(&g, 3000, 10, true);
	t0 = ht_now_ms();
	for (int i = 0; i < K; i++) {
		rs[i] = raw_open();
		cr_assert(send(rs[i]->fd, "GET /hostile/big/50000000 HTTP/1.1\r\nHost: x\r\n\r\n",
		               48, MSG_NOSIGNAL) == 48);
	}
	for (end = t0 + 3000; ht_now_ms() < end;) {
		sample_load();
		ht_sleep_ms(50);
	}
	rep = good_finish(&g);
	good_check("unread-big", &rep, SLOW(20), SLOW(500));
	for (end = t0 + TIMEOUT + FLUSH + 3000;
	     (left = ht_tcp_count(E.worker, E.port, 0)) > 0 && ht_now_ms() < end;) {
		sample_load();
		ht_sleep_ms(50);
	}
	cut = ht_now_ms() - t0;
	fprintf(stderr,
	        "hostile/unread-big: %d x 50 MB unread: worker RSS peak %ld KiB (baseline %ld); "
	        "the proxy cut them after %ld ms\n",
	        K, E.peak_rss, E.rss0, cut);
	cr_expect_eq(left, 0, "%d unread connections still open after %ld ms", left, cut);
	expect_rss_leq(E.peak_rss, E.rss0 + 32 * MiB, "worker RSS peaked at %ld KiB", E.peak_rss);
	for (int i = 0; i < K; i++)
		raw_close(rs[i], false);
	settle("unread-big");
}

/* ---- an upstream that resets or stalls ---- */

/* Sixty requests at once, a third each: GET /reset and POST /reset (the upstream resets the
 * connection: 502 at once) and /stall (no answer: 504 after upstream_response_timeout_ms,
 * 1 s). While they wait, quick requests are answered at once — the worker is not blocked —
 * and the well-behaved client is served. Each connection is kept after its 502/504 and
 * answers a next request. */
Test(hostile, upstream_resets_and_stalls_under_concurrency)
{
	enum { K = 20, TIMEOUT = 1000 };
	struct raw *rs[3 * K];
	struct good g;
	struct good_report rep;
	long worst_quick = 0, reset_max = 0, stall_min = 1L << 30, stall_max = 0;

	start_proxy(ht_fmt("\"upstream_response_timeout_ms\": %d", TIMEOUT), 0);
	good_start(&g, 2500, 10, true);
	raw_open_many(rs, 3 * K);
	for (int i = 0; i < 3 * K; i++) {
		const char *req;
		if (i % 3 == 0)
			req = ht_fmt("GET /hostile/reset/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
		else if (i % 3 == 1)
			req = ht_fmt("POST /hostile/reset/%d HTTP/1.1\r\nHost: x\r\nContent-Type: "
			             "application/json\r\nContent-Length: 26\r\n\r\n"
			             "{\"imei\":\"" IMEI "\"}",
			             i);
		else
			req = ht_fmt("GET /hostile/stall/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
		raw_queue(rs[i], req, strlen(req));
		raw_pump(rs[i]);
	}
	/* The stalled requests are waiting: others go through now. */
	ht_sleep_ms(100);
	for (int i = 0; i < 20; i++) {
		long t = ht_now_ms();
		struct ht_result *r = ht_exchange_str(
		        E.port, ht_fmt("GET /quick/%d HTTP/1.1\r\nHost: x\r\n\r\n", i), 1, 5000);
		cr_assert_not_null(r);
		cr_assert_eq(r->nresp, 1, "a quick request during the stall: %s",
		             r->why ? r->why : "no answer");
		cr_assert_eq(r->resp[0].status, 200);
		if (ht_now_ms() - t > worst_quick)
			worst_quick = ht_now_ms() - t;
	}
	raw_poll(rs, 3 * K, false, ht_now_ms() + TIMEOUT + 3000);
	for (int i = 0; i < 3 * K; i++) {
		struct raw *r = rs[i];
		long t = r->t_resp - r->t0;
		if (i % 3 < 2) {
			cr_assert_eq(raw_status(r), 502, "reset %d: %s", i, r->in);
			if (t > reset_max)
				reset_max = t;
		} else {
			cr_assert_eq(raw_status(r), 504, "stall %d: %s", i, r->in);
			if (t < stall_min)
				stall_min = t;
			if (t > stall_max)
				stall_max = t;
		}
		cr_assert_not(raw_says_close(r), "%d: %s", i, r->in);
		cr_assert_lt(r->t_end, 0, "connection %d closed after its %d", i, raw_status(r));
		/* The same connection goes on. */
		raw_rearm(r);
		raw_queue(r, "GET /hostile/after HTTP/1.1\r\nHost: x\r\n\r\n", 41);
		raw_pump(r);
	}
	raw_poll(rs, 3 * K, false, ht_now_ms() + 3000);
	for (int i = 0; i < 3 * K; i++) {
		cr_assert_eq(raw_status(rs[i]), 200, "%d, the request after: %s", i, rs[i]->in);
		raw_close(rs[i], false);
	}
	rep = good_finish(&g);
	fprintf(stderr,
	        "hostile/upstream: 502 for resets within %ld ms, 504 for stalls after %ld..%ld ms "
	        "(limit %d ms), quick requests meanwhile within %ld ms\n",
	        reset_max, stall_min, stall_max, TIMEOUT, worst_quick);
	cr_expect_leq(reset_max, SLOW(500), "a reset was answered after %ld ms", reset_max);
	cr_expect_geq(stall_min, TIMEOUT - 100, "a stall was answered after %ld ms", stall_min);
	cr_expect_leq(stall_max, TIMEOUT + 700, "a stall was answered after %ld ms", stall_max);
	cr_expect_leq(worst_quick, SLOW(100), "a quick request took %ld ms during the stall",
	              worst_quick);
	good_check("upstream", &rep, SLOW(20), SLOW(500));
	settle("upstream");
}
