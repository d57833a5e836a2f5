/* The integration-test harness (contracts in harness.h): an arena that lives for one test,
 * processes by pid, ports, a raw HTTP/1.1 client with its own message splitter, the
 * recorder's files and a test CA. It shares no code with proxy/ on purpose: the splitter
 * here is the independent reading the proxy's framing is checked against. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"

#define HEAD_MAX   (1024 * 1024) /* a head not complete by then is malformed */
#define CONNECT_MS 2000
#define SEND_MS    5000
#define MAX_PROCS  64

/* ---- arena ---- */

/* Every block the harness hands out; freed together at ht_teardown. */
struct block {
	struct block *next;
	max_align_t data[];
};

static struct block *arena;
static char tmpdir[PATH_MAX];

void *ht_alloc(size_t n)
{
	struct block *b = calloc(1, sizeof(*b) + n + 1);

	if (!b) {
		fprintf(stderr, "harness: out of memory (%zu bytes)\n", n);
		abort();
	}
	b->next = arena;
	arena = b;
	return b->data;
}

static char *dupn(const char *p, size_t n)
{
	char *s = ht_alloc(n + 1);

	if (n)
		memcpy(s, p, n);
	s[n] = 0;
	return s;
}

char *ht_fmt(const char *fmt, ...)
{
	va_list ap;
	int n;
	char *s;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	s = ht_alloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

long ht_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ht_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- processes ---- */

/* A process ht_start started; the table is the only list of pids we may signal. */
struct proc {
	pid_t pid;
	bool reaped;
	int status;
	const char *out, *err; /* arena */
};

static struct proc procs[MAX_PROCS];
static size_t nprocs;

static struct proc *proc_of(pid_t pid)
{
	for (size_t i = 0; i < nprocs; i++)
		if (procs[i].pid == pid && pid > 0)
			return &procs[i];
	return NULL;
}

/* Reaps <p> if it has exited (or blocks until it does when <block>). */
static bool reap(struct proc *p, bool block)
{
	int st;
	pid_t r;

	if (p->reaped)
		return true;
	do
		r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == p->pid) {
		p->reaped = true;
		p->status = st;
		return true;
	}
	if (r < 0) { /* not our child any more: nothing to wait for */
		p->reaped = true;
		p->status = -1;
		return true;
	}
	return false;
}

pid_t ht_start(const char *const argv[], const char *name)
{
	const char *out = ht_path(ht_fmt("%s.out", name)), *err = ht_path(ht_fmt("%s.err", name));
	pid_t parent = getpid(), pid;
	int pfd[2], e = 0;
	ssize_t got;

	if (nprocs == MAX_PROCS) {
		fprintf(stderr, "harness: more than %d processes\n", MAX_PROCS);
		return -1;
	}
	/* exec failure travels back on a close-on-exec pipe: nothing read = exec worked */
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int er = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		if (in < 0 || o < 0 || er < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 ||
		    dup2(er, 2) < 0)
			_exit(127);
		/* nothing of the test runner's (its pipes, sockets) leaks into the child */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != pfd[1])
				close(fd);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(argv[0], (char *const *)argv);
		e = errno;
		dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(e));
		if (write(pfd[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	close(pfd[1]);
	do
		got = read(pfd[0], &e, sizeof(e));
	while (got < 0 && errno == EINTR);
	close(pfd[0]);
	if (got > 0) {
		int st;
		fprintf(stderr, "harness: cannot start %s: %s\n", argv[0], strerror(e));
		waitpid(pid, &st, 0);
		return -1;
	}
	procs[nprocs++] = (struct proc){.pid = pid, .out = out, .err = err};
	return pid;
}

int ht_wait(pid_t pid, int timeout_ms)
{
	struct proc *p = proc_of(pid);
	long end = ht_now_ms() + timeout_ms;

	if (!p)
		return -1;
	while (!reap(p, false)) {
		if (ht_now_ms() >= end)
			return -1;
		ht_sleep_ms(5);
	}
	return p->status;
}

int ht_stop(pid_t pid, int timeout_ms)
{
	struct proc *p = proc_of(pid);

	if (!p) {
		fprintf(stderr, "harness: ht_stop(%d): not a process the harness started\n",
		        (int)pid);
		return -1;
	}
	if (reap(p, false))
		return p->status;
	kill(p->pid, SIGTERM);
	if (ht_wait(pid, timeout_ms) == -1 && !p->reaped) {
		fprintf(stderr, "harness: pid %d ignored SIGTERM for %d ms: SIGKILL\n", (int)pid,
		        timeout_ms);
		kill(p->pid, SIGKILL);
		reap(p, true);
	}
	return p->status;
}

bool ht_running(pid_t pid)
{
	struct proc *p = proc_of(pid);

	return p && !reap(p, false);
}

const char *ht_status_str(int status)
{
	static char s[32];

	if (status == -1)
		return "-1";
	if (WIFEXITED(status))
		snprintf(s, sizeof(s), "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(s, sizeof(s), "signal %d", WTERMSIG(status));
	else
		snprintf(s, sizeof(s), "status 0x%x", status);
	return s;
}

const char *ht_out(pid_t pid)
{
	struct proc *p = proc_of(pid);
	char *s = p ? ht_read(p->out, NULL) : NULL;

	return s ? s : "";
}

const char *ht_err(pid_t pid)
{
	struct proc *p = proc_of(pid);
	char *s = p ? ht_read(p->err, NULL) : NULL;

	return s ? s : "";
}

/* ---- the test's environment ---- */

static struct ht_client *clients;
static bool exit_hook;

static void stop_all(void)
{
	for (size_t i = 0; i < nprocs; i++)
		if (!procs[i].reaped)
			ht_stop(procs[i].pid, 5000);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void ht_setup(void)
{
	const char *t = getenv("TMPDIR");

	if (!exit_hook) {
		/* a test that leaves by exit() still stops what it started */
		atexit(stop_all);
		exit_hook = true;
	}
	signal(SIGPIPE, SIG_IGN);
	nprocs = 0;
	clients = NULL;
	snprintf(tmpdir, sizeof(tmpdir), "%s/anonproxy-it.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		fprintf(stderr, "harness: mkdtemp %s: %s\n", tmpdir, strerror(errno));
		abort();
	}
}

void ht_teardown(void)
{
	const char *keep = getenv("HT_KEEP");

	while (clients)
		ht_close(clients);
	stop_all();
	nprocs = 0;
	if (tmpdir[0]) {
		if (keep && !strcmp(keep, "1"))
			fprintf(stderr, "harness: kept %s\n", tmpdir);
		else
			nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		tmpdir[0] = 0;
	}
	while (arena) {
		struct block *b = arena;
		arena = b->next;
		free(b);
	}
}

const char *ht_dir(void)
{
	if (!tmpdir[0])
		ht_setup();
	return tmpdir;
}

const char *ht_path(const char *name)
{
	return ht_fmt("%s/%s", ht_dir(), name);
}

const char *ht_bin(const char *name)
{
	const char *b = getenv("BIN");

	return ht_fmt("%s/%s", b && *b ? b : "bin", name);
}

const char *ht_build(const char *rel)
{
	const char *b = getenv("B");

	return ht_fmt("%s/%s", b && *b ? b : "build", rel);
}

/* ---- files ---- */

char *ht_read(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *s;
	size_t got = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	s = ht_alloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, s + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	s[got] = 0;
	if (len)
		*len = got;
	return s;
}

bool ht_write(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	const char *s = p;

	if (fd < 0)
		return false;
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			return false;
		}
		s += w;
		n -= (size_t)w;
	}
	/* the mode asked for, whatever the umask */
	return fchmod(fd, mode) == 0 && close(fd) == 0;
}

bool ht_write_str(const char *path, const char *s)
{
	return ht_write(path, s, strlen(s), 0644);
}

/* ---- ports ---- */

int ht_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

int ht_wait_port_file(const char *path, pid_t pid, int timeout_ms)
{
	long end = ht_now_ms() + timeout_ms;

	for (;;) {
		char *s = ht_read(path, NULL);
		if (s) {
			long port = strtol(s, NULL, 10);
			if (port > 0 && port < 65536)
				return (int)port;
		}
		if ((pid > 0 && !ht_running(pid)) || ht_now_ms() >= end)
			return -1;
		ht_sleep_ms(10);
	}
}

/* A non-blocking socket connected to 127.0.0.1:<port>, or -1 after <timeout_ms>. */
static int connect_to(int port, int timeout_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	int e = 0;
	socklen_t el = sizeof(e);
	struct pollfd pf;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	pf = (struct pollfd){.fd = fd, .events = POLLOUT};
	if (poll(&pf, 1, timeout_ms) != 1)
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

bool ht_wait_port(int port, pid_t pid, int timeout_ms)
{
	long end = ht_now_ms() + timeout_ms;

	for (;;) {
		int fd = connect_to(port, 200);
		if (fd >= 0) {
			close(fd);
			return true;
		}
		if ((pid > 0 && !ht_running(pid)) || ht_now_ms() >= end)
			return false;
		ht_sleep_ms(10);
	}
}

/* ---- HTTP/1.1 message splitter ---- */

/* Where the parts of a message are, found without allocating anything. */
struct frame {
	size_t head_len;
	size_t len;
	bool chunked, until_close;
	size_t body_off, body_len; /* length-delimited or close-delimited body */
};

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Does the comma-separated list p[0, n) end with the token <tok>? (any case) */
static bool last_token_is(const char *p, size_t n, const char *tok)
{
	size_t tl = strlen(tok);

	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n < tl || strncasecmp(p + n - tl, tok, tl))
		return false;
	n -= tl;
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	return n == 0 || p[n - 1] == ',';
}

/* Header field <name> at line l[0, n)? Sets *v, *vn to its trimmed value. */
static bool field_is(const char *l, size_t n, const char *name, const char **v, size_t *vn)
{
	size_t nl = strlen(name);

	if (n <= nl || l[nl] != ':' || strncasecmp(l, name, nl))
		return false;
	l += nl + 1;
	n -= nl + 1;
	while (n && (*l == ' ' || *l == '\t')) {
		l++;
		n--;
	}
	while (n && (l[n - 1] == ' ' || l[n - 1] == '\t'))
		n--;
	*v = l;
	*vn = n;
	return true;
}

/* Walks a chunked body from p[off]; sets *end past its last CRLF. 1 done, 0 more, -1 bad.
 * When <out> is not NULL, copies the chunk data there (it must be large enough). */
static int walk_chunks(const char *p, size_t n, size_t off, size_t *end, char *out, size_t *out_len,
                       const char **why)
{
	size_t o = 0;

	for (;;) {
		const char *lf = memchr(p + off, '\n', n - off);
		size_t size = 0, i = off;
		if (!lf)
			return n - off > 4096 ? (*why = "chunk-size line too long", -1) : 0;
		size_t le = (size_t)(lf - p);
		if (le == off || p[le - 1] != '\r')
			return *why = "chunk-size line not ended by CRLF", -1;
		for (; i < le - 1 && isxdigit((unsigned char)p[i]); i++) {
			if (size >> 56)
				return *why = "chunk size overflows", -1;
			size = size * 16 +
			       (size_t)(p[i] <= '9' ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
		}
		if (i == off || (i < le - 1 && p[i] != ';' && p[i] != ' ' && p[i] != '\t'))
			return *why = "bad chunk size", -1;
		off = le + 1;
		if (size == 0)
			break;
		if (n - off < size + 2)
			return 0;
		if (out)
			memcpy(out + o, p + off, size);
		o += size;
		off += size;
		if (p[off] != '\r' || p[off + 1] != '\n')
			return *why = "chunk data not followed by CRLF", -1;
		off += 2;
	}
	/* trailer section: header lines, then an empty line */
	for (;;) {
		const char *lf = memchr(p + off, '\n', n - off);
		if (!lf)
			return 0;
		size_t le = (size_t)(lf - p);
		if (le == off || p[le - 1] != '\r')
			return *why = "trailer line not ended by CRLF", -1;
		bool empty = le == off + 1;
		off = le + 1;
		if (empty)
			break;
	}
	*end = off;
	if (out_len)
		*out_len = o;
	return 1;
}

/* Finds the framing of one message at p[0, n) (see ht_parse). */
static long frame_msg(const char *p, size_t n, bool response, bool head_req, bool eof,
                      struct frame *f, const char **why)
{
	const char *e = NULL;
	bool have_len = false, te = false, te_chunked = false;
	unsigned long long len = 0;
	int status = 0;
	size_t i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i + 3 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
			e = p + i;
			break;
		}
	if (!e)
		return n > HEAD_MAX ? (*why = "head too large", -1) : 0;
	f->head_len = (size_t)(e - p) + 4;
	for (i = 0; i < f->head_len - 2; i++)
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return *why = "bare LF in the head", -1;
	if (response) {
		if (f->head_len < 14 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1') ||
		    p[8] != ' ' || !isdigit((unsigned char)p[9]) ||
		    !isdigit((unsigned char)p[10]) || !isdigit((unsigned char)p[11]) ||
		    (p[12] != ' ' && p[12] != '\r'))
			return *why = "bad status line", -1;
		status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	}
	/* header lines */
	const char *l = (const char *)memchr(p, '\n', f->head_len) + 1;
	while (l < e + 2) {
		const char *le =
		        (const char *)memchr(l, '\n', (size_t)(e + 4 - l)) - 1; /* at the CR */
		size_t ln = (size_t)(le - l);
		const char *v;
		size_t vn;
		if (ln == 0)
			break;
		if (l[0] == ' ' || l[0] == '\t')
			return *why = "obsolete line folding", -1;
		const char *colon = memchr(l, ':', ln);
		if (!colon || colon == l)
			return *why = "header line without a name", -1;
		for (const char *c = l; c < colon; c++)
			if (!is_tchar(*c))
				return *why = "bad character in a header name", -1;
		if (field_is(l, ln, "content-length", &v, &vn)) {
			unsigned long long x = 0;
			if (!vn || vn > 18)
				return *why = "bad Content-Length", -1;
			for (size_t k = 0; k < vn; k++) {
				if (!isdigit((unsigned char)v[k]))
					return *why = "bad Content-Length", -1;
				x = x * 10 + (unsigned)(v[k] - '0');
			}
			if (have_len && x != len)
				return *why = "conflicting Content-Length", -1;
			have_len = true;
			len = x;
		} else if (field_is(l, ln, "transfer-encoding", &v, &vn)) {
			te = true;
			te_chunked = last_token_is(v, vn, "chunked");
		}
		l = le + 2;
	}
	f->body_off = f->head_len;
	if (response && (head_req || status / 100 == 1 || status == 204 || status == 304)) {
		f->len = f->head_len;
		return (long)f->len;
	}
	if (te && have_len)
		return *why = "Content-Length with Transfer-Encoding", -1;
	if (te_chunked) {
		int r = walk_chunks(p, n, f->head_len, &f->len, NULL, &f->body_len, why);
		f->chunked = true;
		return r < 0 ? -1 : r ? (long)f->len : 0;
	}
	if (te && !response)
		return *why = "request Transfer-Encoding not ending in chunked", -1;
	if (have_len) {
		if (n - f->head_len < len)
			return 0;
		f->body_len = (size_t)len;
		f->len = f->head_len + (size_t)len;
		return (long)f->len;
	}
	if (!response) {
		f->len = f->head_len;
		return (long)f->len;
	}
	/* a response with neither: the body runs to the close */
	if (!eof)
		return 0;
	f->until_close = true;
	f->body_len = n - f->head_len;
	f->len = n;
	return (long)f->len;
}

long ht_parse(const char *p, size_t n, bool response, bool head_req, bool eof, struct ht_msg *m,
              const char **why)
{
	struct frame f;
	const char *w = NULL;
	long r = frame_msg(p, n, response, head_req, eof, &f, &w);

	if (why)
		*why = w;
	if (r <= 0)
		return r;
	memset(m, 0, sizeof(*m));
	m->raw = dupn(p, f.len);
	m->raw_len = f.len;
	m->head_len = f.head_len;
	m->chunked = f.chunked;
	m->until_close = f.until_close;

	/* start line, from the copy */
	const char *s = m->raw, *eol = strstr(s, "\r\n");
	if (response) {
		m->minor = s[7] - '0';
		m->status = atoi(s + 9);
		m->reason = s + 12 < eol ? dupn(s + 13, (size_t)(eol - s - 13)) : "";
	} else {
		const char *sp1 = memchr(s, ' ', (size_t)(eol - s));
		const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
		if (!sp1 || !sp2 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7)) {
			if (why)
				*why = "bad request line";
			return -1;
		}
		m->method = dupn(s, (size_t)(sp1 - s));
		m->target = dupn(sp1 + 1, (size_t)(sp2 - sp1 - 1));
		m->minor = sp2[8] - '0';
	}
	/* headers */
	size_t cap = 0;
	for (const char *l = eol + 2; l < m->raw + f.head_len - 2;) {
		const char *le = strstr(l, "\r\n"), *colon = memchr(l, ':', (size_t)(le - l));
		const char *v = colon + 1, *ve = le;
		if (m->nhdr == cap) {
			struct ht_header *h = ht_alloc((cap = cap ? cap * 2 : 16) * sizeof(*h));
			if (m->nhdr)
				memcpy(h, m->hdr, m->nhdr * sizeof(*h));
			m->hdr = h;
		}
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		m->hdr[m->nhdr].name = dupn(l, (size_t)(colon - l));
		m->hdr[m->nhdr].value = dupn(v, (size_t)(ve - v));
		m->nhdr++;
		l = le + 2;
	}
	/* body */
	if (f.chunked) {
		char *b = ht_alloc(f.body_len + 1);
		size_t end, bl;
		walk_chunks(m->raw, f.len, f.head_len, &end, b, &bl, &w);
		m->body = b;
		m->body_len = bl;
	} else {
		m->body = dupn(m->raw + f.body_off, f.body_len);
		m->body_len = f.body_len;
	}
	return r;
}

const char *ht_header(const struct ht_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nhdr; i++)
		if (!strcasecmp(m->hdr[i].name, name))
			return m->hdr[i].value;
	return NULL;
}

size_t ht_header_count(const struct ht_msg *m, const char *name)
{
	size_t k = 0;

	for (size_t i = 0; i < m->nhdr; i++)
		k += !strcasecmp(m->hdr[i].name, name);
	return k;
}

/* ---- raw client ---- */

/* One connection; on the clients list until ht_close. Its buffers are malloc'd (they
 * grow), what it returns is in the arena. */
struct ht_client {
	struct ht_client *next;
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	char *in; /* received; in[in_off, in_len) not yet split into responses */
	size_t in_len, in_cap, in_off;
	char *out; /* sent, not yet framed as requests */
	size_t out_len, out_cap;
	bool *heads; /* per request sent: was it a HEAD? */
	size_t nheads, heads_cap, head_idx;
	bool out_broken; /* what we sent stopped framing: take every later response as GET's */
	bool closed, reset;
};

static bool grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t c = *cap ? *cap : 4096;
	while (c < need)
		c *= 2;
	char *q = realloc(*p, c);
	if (!q)
		return false;
	*p = q;
	*cap = c;
	return true;
}

static struct ht_client *client_new(int fd)
{
	struct ht_client *c = ht_alloc(sizeof(*c));

	c->fd = fd;
	c->next = clients;
	clients = c;
	return c;
}

void ht_close(struct ht_client *c)
{
	struct ht_client **pp;

	if (!c)
		return;
	for (pp = &clients; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (!*pp)
		return; /* closed already */
	*pp = c->next;
	if (c->ssl) {
		if (!c->closed)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->ctx)
		SSL_CTX_free(c->ctx);
	c->ctx = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->in);
	c->in = NULL;
	free(c->out);
	c->out = NULL;
	free(c->heads);
	c->heads = NULL;
}

struct ht_client *ht_connect(int port)
{
	int fd = connect_to(port, CONNECT_MS);

	return fd < 0 ? NULL : client_new(fd);
}

/* Waits for <fd> to be ready for <events> until <end> (ms). False on timeout. */
static bool wait_fd(int fd, short events, long end)
{
	for (;;) {
		long left = end - ht_now_ms();
		struct pollfd pf = {.fd = fd, .events = events};
		if (left <= 0)
			return false;
		int r = poll(&pf, 1, (int)left);
		if (r > 0)
			return true;
		if (r < 0 && errno != EINTR)
			return false;
	}
}

static const char *ssl_why(const char *what, SSL *ssl)
{
	unsigned long e = ERR_get_error();
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (v != X509_V_OK)
		return ht_fmt("%s: certificate verify failed: %s", what,
		              X509_verify_cert_error_string(v));
	return ht_fmt("%s: %s", what, e ? ERR_error_string(e, NULL) : strerror(errno));
}

struct ht_client *ht_connect_tls(int port, const char *ca_file, const char *host, const char **why)
{
	struct ht_client *c;
	unsigned char ip[16];
	bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	long end = ht_now_ms() + CONNECT_MS;
	const char *w = NULL;

	ERR_clear_error();
	c = ht_connect(port);
	if (!c) {
		if (why)
			*why = "connect failed";
		return NULL;
	}
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx || SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1) {
		w = ssl_why("CA file", NULL);
		goto fail;
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
	/* a peer that closes without close_notify ends the stream like a FIN would */
	SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		w = ssl_why("SSL_new", NULL);
		goto fail;
	}
	if (is_ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1) {
			w = "bad IP address";
			goto fail;
		}
	} else if (SSL_set1_host(c->ssl, host) != 1 ||
	           SSL_set_tlsext_host_name(c->ssl, host) != 1) {
		w = "bad host name";
		goto fail;
	}
	for (;;) {
		int r = SSL_connect(c->ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(c->ssl, r);
		if ((e == SSL_ERROR_WANT_READ && wait_fd(c->fd, POLLIN, end)) ||
		    (e == SSL_ERROR_WANT_WRITE && wait_fd(c->fd, POLLOUT, end)))
			continue;
		w = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE
		            ? "TLS handshake timed out"
		            : ssl_why("TLS handshake", c->ssl);
		goto fail;
	}
	return c;
fail:
	if (why)
		*why = w;
	c->closed = true;
	ht_close(c);
	return NULL;
}

/* Frames the bytes sent so far as requests, to know which responses answer a HEAD. */
static void track_sent(struct ht_client *c, const void *p, size_t n)
{
	size_t off = 0;

	if (c->out_broken || !grow(&c->out, &c->out_cap, c->out_len + n)) {
		c->out_broken = true;
		return;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	for (;;) {
		struct frame f;
		const char *why;
		long r = frame_msg(c->out + off, c->out_len - off, false, false, false, &f, &why);
		if (r < 0)
			c->out_broken = true;
		if (r <= 0)
			break;
		if (c->nheads == c->heads_cap) {
			size_t cap = c->heads_cap ? c->heads_cap * 2 : 16;
			bool *h = realloc(c->heads, cap * sizeof(*h));
			if (!h) {
				c->out_broken = true;
				break;
			}
			c->heads = h;
			c->heads_cap = cap;
		}
		c->heads[c->nheads++] = c->out_len - off >= 5 && !memcmp(c->out + off, "HEAD ", 5);
		off += (size_t)r;
	}
	memmove(c->out, c->out + off, c->out_len - off);
	c->out_len -= off;
}

bool ht_send(struct ht_client *c, const void *p, size_t n)
{
	const char *s = p;
	long end = ht_now_ms() + SEND_MS;

	if (!c || c->fd < 0)
		return false;
	track_sent(c, p, n);
	while (n) {
		ssize_t w;
		if (c->ssl) {
			int r = SSL_write(c->ssl, s, n > INT_MAX ? INT_MAX : (int)n);
			if (r > 0) {
				w = r;
			} else {
				int e = SSL_get_error(c->ssl, r);
				if ((e == SSL_ERROR_WANT_WRITE && wait_fd(c->fd, POLLOUT, end)) ||
				    (e == SSL_ERROR_WANT_READ && wait_fd(c->fd, POLLIN, end)))
					continue;
				return false;
			}
		} else {
			w = send(c->fd, s, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) &&
				                       wait_fd(c->fd, POLLOUT, end)))
					continue;
				return false;
			}
		}
		s += w;
		n -= (size_t)w;
	}
	return true;
}

bool ht_send_str(struct ht_client *c, const char *s)
{
	return ht_send(c, s, strlen(s));
}

bool ht_send_pieces(struct ht_client *c, const void *p, size_t n, size_t piece, int delay_ms)
{
	const char *s = p;

	if (!piece)
		piece = 1;
	for (size_t off = 0; off < n; off += piece) {
		if (off)
			ht_sleep_ms(delay_ms);
		if (!ht_send(c, s + off, n - off < piece ? n - off : piece))
			return false;
	}
	return true;
}

void ht_shutdown_write(struct ht_client *c)
{
	if (c && c->fd >= 0 && !c->ssl)
		shutdown(c->fd, SHUT_WR);
}

/* Reads what is there (waiting until <end>). >0 bytes, 0 closed, -1 timeout. */
static ssize_t read_some(struct ht_client *c, long end)
{
	if (!grow(&c->in, &c->in_cap, c->in_len + 65536))
		return 0;
	for (;;) {
		char *dst = c->in + c->in_len;
		if (c->ssl) {
			int r = SSL_read(c->ssl, dst, 65536);
			if (r > 0)
				return r;
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				if (!wait_fd(c->fd, POLLIN, end))
					return -1;
				continue;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				if (!wait_fd(c->fd, POLLOUT, end))
					return -1;
				continue;
			}
			if (e == SSL_ERROR_SYSCALL && errno == ECONNRESET)
				c->reset = true;
			return 0;
		}
		ssize_t r = recv(c->fd, dst, 65536, 0);
		if (r > 0)
			return r;
		if (r == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (!wait_fd(c->fd, POLLIN, end))
				return -1;
			continue;
		}
		if (errno == ECONNRESET)
			c->reset = true;
		return 0;
	}
}

struct ht_result *ht_recv(struct ht_client *c, int want, int timeout_ms)
{
	struct ht_result *res = ht_alloc(sizeof(*res));
	long start = ht_now_ms(), end = start + timeout_ms;
	size_t from = c ? c->in_off : 0, cap = 0;

	res->first_byte_ms = -1;
	if (!c || c->fd < 0) {
		res->closed = true;
		return res;
	}
	for (;;) {
		/* split off what is complete */
		while (!res->malformed && (want <= 0 || res->nresp < (size_t)want)) {
			bool head =
			        !c->out_broken && c->head_idx < c->nheads && c->heads[c->head_idx];
			struct ht_msg m;
			const char *why;
			long r = ht_parse(c->in + c->in_off, c->in_len - c->in_off, true, head,
			                  c->closed, &m, &why);
			if (r < 0) {
				res->malformed = true;
				res->why = why;
			}
			if (r <= 0)
				break;
			if (res->nresp == cap) {
				struct ht_msg *a = ht_alloc((cap = cap ? cap * 2 : 8) * sizeof(*a));
				if (res->nresp)
					memcpy(a, res->resp, res->nresp * sizeof(*a));
				res->resp = a;
			}
			res->resp[res->nresp++] = m;
			c->in_off += (size_t)r;
			if (m.status / 100 != 1 || m.status == 101)
				c->head_idx++;
		}
		if (res->malformed || (want > 0 && res->nresp >= (size_t)want) || c->closed)
			break;
		ssize_t got = read_some(c, end);
		if (got < 0) {
			res->timed_out = true;
			break;
		}
		if (got == 0) {
			c->closed = true; /* one more pass: it may end a close-delimited body */
			continue;
		}
		if (res->first_byte_ms < 0)
			res->first_byte_ms = ht_now_ms() - start;
		c->in_len += (size_t)got;
	}
	/* bytes after a close that do not make a response */
	if (c->closed && !res->malformed && c->in_off < c->in_len &&
	    (want <= 0 || res->nresp < (size_t)want)) {
		res->malformed = true;
		res->why = "connection closed inside a response";
	}
	res->closed = c->closed;
	res->reset = c->reset;
	res->raw = dupn(c->in + from, c->in_len - from);
	res->raw_len = c->in_len - from;
	res->ms = ht_now_ms() - start;
	return res;
}

struct ht_result *ht_exchange(int port, const void *p, size_t n, int want, int timeout_ms)
{
	struct ht_client *c = ht_connect(port);
	struct ht_result *r;

	if (!c)
		return NULL;
	ht_send(c, p, n);
	r = ht_recv(c, want, timeout_ms);
	ht_close(c);
	return r;
}

struct ht_result *ht_exchange_str(int port, const char *s, int want, int timeout_ms)
{
	return ht_exchange(port, s, strlen(s), want, timeout_ms);
}

/* ---- the recorder ---- */

bool ht_recorder_start(struct ht_recorder *r, const char *name, const char *cert, const char *key)
{
	const char *pf = ht_path(ht_fmt("%s.port", name));
	const char *argv[12];
	int i = 0;

	memset(r, 0, sizeof(*r));
	r->name = name;
	r->dir = ht_path(name);
	argv[i++] = ht_build("tests/recorder");
	argv[i++] = "-l";
	argv[i++] = "127.0.0.1:0";
	argv[i++] = "-d";
	argv[i++] = r->dir;
	argv[i++] = "--port-file";
	argv[i++] = pf;
	if (cert && key) {
		argv[i++] = "--tls";
		argv[i++] = cert;
		argv[i++] = key;
	}
	argv[i] = NULL;
	r->pid = ht_start(argv, name);
	if (r->pid < 0)
		return false;
	r->port = ht_wait_port_file(pf, r->pid, 5000);
	if (r->port < 0) {
		fprintf(stderr, "harness: recorder %s did not start: %s\n", name, ht_err(r->pid));
		ht_stop(r->pid, 1000);
		return false;
	}
	return true;
}

int ht_recorder_stop(struct ht_recorder *r)
{
	return ht_stop(r->pid, 5000);
}

size_t ht_rec_log(const struct ht_recorder *r, struct ht_rec_entry **out)
{
	char *s = ht_read(ht_fmt("%s/log", r->dir), NULL);
	size_t n = 0, cap = 0;
	struct ht_rec_entry *e = NULL;

	if (out)
		*out = NULL;
	if (!s)
		return 0;
	for (char *line = s, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
		char method[64], target[8192];
		unsigned conn;
		int num;
		size_t body;
		*nl = 0;
		if (sscanf(line, "%d conn=%u %63s %8191s body=%zu", &num, &conn, method, target,
		           &body) != 5)
			continue;
		if (n == cap) {
			struct ht_rec_entry *a = ht_alloc((cap = cap ? cap * 2 : 16) * sizeof(*a));
			if (n)
				memcpy(a, e, n * sizeof(*a));
			e = a;
		}
		e[n++] = (struct ht_rec_entry){num, conn, dupn(method, strlen(method)),
		                               dupn(target, strlen(target)), body};
	}
	if (out)
		*out = e;
	return n;
}

size_t ht_rec_wait(const struct ht_recorder *r, size_t count, int timeout_ms)
{
	long end = ht_now_ms() + timeout_ms;

	for (;;) {
		size_t n = ht_rec_log(r, NULL);
		if (n >= count || ht_now_ms() >= end)
			return n;
		ht_sleep_ms(10);
	}
}

const char *ht_rec_raw(const struct ht_recorder *r, int n, size_t *len)
{
	return ht_read(ht_fmt("%s/req-%04d.http", r->dir, n), len);
}

struct ht_msg *ht_rec_req(const struct ht_recorder *r, int n)
{
	size_t len;
	const char *raw = ht_rec_raw(r, n, &len);
	struct ht_msg *m = ht_alloc(sizeof(*m));

	if (!raw || ht_parse(raw, len, false, false, true, m, NULL) <= 0)
		return NULL;
	return m;
}

const char *ht_rec_conns(const struct ht_recorder *r)
{
	const char *s = ht_read(ht_fmt("%s/conns", r->dir), NULL);

	return s ? s : "";
}

/* ---- TLS material ---- */

static bool add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	bool ok = e && X509_add_ext(x, e, -1) == 1;

	X509_EXTENSION_free(e);
	return ok;
}

/* A certificate for <key> named <cn>; self-signed when <issuer> is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san)
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_new();
	X509V3_CTX v3;
	bool ok;

	ok = x && bn && X509_set_version(x, 2) == 1 &&
	     BN_rand(bn, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
	     BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
	     X509_gmtime_adj(X509_getm_notAfter(x), 7L * 24 * 3600) &&
	     X509_set_pubkey(x, key) == 1 &&
	     X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                                (const unsigned char *)cn, -1, -1, 0) == 1 &&
	     X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
	                                    : X509_get_subject_name(x)) == 1;
	BN_free(bn);
	if (ok) {
		X509V3_set_ctx_nodb(&v3);
		X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
		ok = add_ext(x, &v3, NID_subject_key_identifier, "hash");
		if (issuer)
			ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") &&
			     add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") &&
			     add_ext(x, &v3, NID_ext_key_usage, "serverAuth") &&
			     add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") &&
			     add_ext(x, &v3, NID_subject_alt_name, san);
		else
			ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE") &&
			     add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	}
	if (ok)
		ok = X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static bool write_pem(const char *path, X509 *x, EVP_PKEY *key)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key ? 0600 : 0644);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	bool ok;

	if (!f) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	ok = x ? PEM_write_X509(f, x) == 1
	       : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
	return fclose(f) == 0 && ok;
}

bool ht_make_certs(const char *dir, const char *cn, struct ht_certs *out)
{
	return ht_make_certs_san(dir, cn, "IP:127.0.0.1,IP:::1,DNS:localhost", out);
}

bool ht_make_certs_san(const char *dir, const char *cn, const char *san, struct ht_certs *out)
{
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
	X509 *ca = ca_key ? make_cert(ca_key, cn, NULL, NULL, NULL) : NULL;
	X509 *crt = ca && key ? make_cert(key, "127.0.0.1", ca, ca_key, san) : NULL;
	bool ok = false;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "harness: mkdir %s: %s\n", dir, strerror(errno));
		goto done;
	}
	out->ca = ht_fmt("%s/ca.pem", dir);
	out->ca_key = ht_fmt("%s/ca.key", dir);
	out->cert = ht_fmt("%s/server.pem", dir);
	out->key = ht_fmt("%s/server.key", dir);
	ok = crt && write_pem(out->ca, ca, NULL) && write_pem(out->ca_key, NULL, ca_key) &&
	     write_pem(out->cert, crt, NULL) && write_pem(out->key, NULL, key);
	if (!ok)
		fprintf(stderr, "harness: making test certificates in %s failed: %s\n", dir,
		        ERR_error_string(ERR_get_error(), NULL));
done:
	X509_free(crt);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return ok;
}

/* ---- processes seen from outside: limits and /proc ---- */

pid_t ht_start_nofile(const char *const argv[], const char *name, long nofile)
{
	struct rlimit old, lim;
	pid_t pid;

	if (getrlimit(RLIMIT_NOFILE, &old) < 0)
		return -1;
	lim = old;
	lim.rlim_cur = (rlim_t)nofile < old.rlim_max ? (rlim_t)nofile : old.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &lim) < 0) {
		fprintf(stderr, "harness: setrlimit(NOFILE, %ld): %s\n", nofile, strerror(errno));
		return -1;
	}
	pid = ht_start(argv, name);
	if (setrlimit(RLIMIT_NOFILE, &old) < 0)
		fprintf(stderr, "harness: restoring RLIMIT_NOFILE: %s\n", strerror(errno));
	return pid;
}

long ht_raise_nofile(long want)
{
	struct rlimit lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) < 0)
		return -1;
	if ((rlim_t)want > lim.rlim_cur) {
		lim.rlim_cur = (rlim_t)want < lim.rlim_max ? (rlim_t)want : lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
		getrlimit(RLIMIT_NOFILE, &lim);
	}
	return (long)lim.rlim_cur;
}

/* A /proc file whole (arena, NUL-terminated): their size says 0, so read to the end. */
static char *read_proc(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 4096, got = 0;
	char *s;

	if (fd < 0)
		return NULL;
	s = malloc(cap);
	while (s) {
		ssize_t r;
		if (got + 1 == cap) {
			char *t = realloc(s, cap * 2);
			if (!t)
				break;
			s = t;
			cap *= 2;
		}
		r = read(fd, s + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!s)
		return NULL;
	char *a = dupn(s, got);
	free(s);
	return a;
}

/* Fields 3 on of /proc/<pid>/stat (after the command name, which may hold spaces), or NULL. */
static const char *stat_fields(pid_t pid)
{
	char *s = read_proc(ht_fmt("/proc/%d/stat", (int)pid)), *p;

	if (!s || !(p = strrchr(s, ')')) || p[1] != ' ')
		return NULL;
	return p + 2;
}

pid_t ht_child_of(pid_t pid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t best = -1;
	unsigned long long best_start = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		const char *f;
		int ppid;
		unsigned long long start;
		if (!isdigit((unsigned char)e->d_name[0]) || !(f = stat_fields(atoi(e->d_name))))
			continue;
		/* state ppid ... starttime (field 22) */
		if (sscanf(f,
		           "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
		           "%*d %*d %llu",
		           &ppid, &start) != 2 ||
		    ppid != pid)
			continue;
		if (best < 0 || start < best_start) {
			best = atoi(e->d_name);
			best_start = start;
		}
	}
	closedir(d);
	return best;
}

long ht_rss_kb(pid_t pid)
{
	char *s = read_proc(ht_fmt("/proc/%d/status", (int)pid)), *p;

	if (!s || !(p = strstr(s, "\nVmRSS:")))
		return -1;
	return strtol(p + 8, NULL, 10);
}

long ht_cpu_ms(pid_t pid)
{
	const char *f = stat_fields(pid);
	unsigned long ut, st;
	long hz = sysconf(_SC_CLK_TCK);

	if (!f || hz <= 0 ||
	    sscanf(f, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)hz);
}

/* The inodes of <pid>'s sockets (arena), their count in *n; NULL if unreadable. */
static unsigned long *socket_inodes(pid_t pid, size_t *n)
{
	const char *dir = ht_fmt("/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 256;
	unsigned long *v;

	*n = 0;
	if (!d)
		return NULL;
	v = ht_alloc(cap * sizeof(*v));
	while ((e = readdir(d))) {
		char link[64];
		ssize_t l;
		unsigned long ino;
		if (e->d_name[0] == '.')
			continue;
		l = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
		if (l <= 0)
			continue;
		link[l] = 0;
		if (sscanf(link, "socket:[%lu]", &ino) != 1)
			continue;
		if (*n == cap) {
			unsigned long *w = ht_alloc(cap * 2 * sizeof(*w));
			memcpy(w, v, cap * sizeof(*v));
			v = w;
			cap *= 2;
		}
		v[(*n)++] = ino;
	}
	closedir(d);
	return v;
}

int ht_fd_count(pid_t pid)
{
	DIR *d = opendir(ht_fmt("/proc/%d/fd", (int)pid));
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

int ht_tcp_count(pid_t pid, int local, int remote)
{
	size_t ns;
	unsigned long *inodes = socket_inodes(pid, &ns);
	int count = 0;

	if (!inodes)
		return -1;
	for (int v6 = 0; v6 < 2; v6++) {
		char *s = read_proc(ht_fmt("/proc/%d/net/tcp%s", (int)pid, v6 ? "6" : ""));
		for (char *line = s, *nl; line && (nl = strchr(line, '\n')); line = nl + 1) {
			unsigned lp, rp, st;
			unsigned long ino;
			*nl = 0;
			if (sscanf(line,
			           " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %*s %*s %*s %*u %*u "
			           "%lu",
			           &lp, &rp, &st, &ino) != 4 ||
			    st == 0x0A /* LISTEN */ || (local && (int)lp != local) ||
			    (remote && (int)rp != remote))
				continue;
			for (size_t i = 0; i < ns; i++)
				if (inodes[i] == ino) {
					count++;
					break;
				}
		}
	}
	return count;
}

int ht_connect_nb(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EINPROGRESS)
		return fd;
	close(fd);
	return -1;
}

void ht_close_reset(int fd)
{
	struct linger lg = {1, 0};

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}
