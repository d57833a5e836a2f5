/* What the integration tests share: a temporary directory per test, processes started and
 * stopped by pid, waiting for ports, a raw HTTP/1.1 client (plain or TLS) with its own
 * response splitter, the recorder's files, and a test CA made with the OpenSSL API.
 *
 * Memory: whatever a helper returns lives in a per-test arena until ht_teardown(), so a test
 * (which may leave at any cr_assert) never frees anything. Not thread-safe. Independent of
 * proxy/: the splitter here is a second, separate reading of HTTP/1.1 framing.
 *
 * Typical use:
 *   TestSuite(proxy, .init = ht_setup, .fini = ht_teardown);
 *   struct ht_recorder up;  cr_assert(ht_recorder_start(&up, "up", NULL));
 *   int port = ht_free_port();  ... write a config naming up.port and port ...
 *   pid_t px = ht_start((const char *[]){ht_bin("anonproxy"), "-c", conf, NULL}, "proxy");
 *   cr_assert(ht_wait_port(port, px, 5000), "%s", ht_err(px));
 *   struct ht_result *r = ht_exchange_str(port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, 5000);
 *   cr_assert_eq(r->nresp, 1);  cr_assert_eq(r->resp[0].status, 200);
 *   struct ht_msg *got = ht_rec_req(&up, 1);   // what the upstream received
 *   cr_assert_eq(ht_stop(px, 5000), 0);        // exit status 0 after SIGTERM */
#ifndef AP_HARNESS_H
#define AP_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- the test's environment ---- */

/* Makes a fresh temporary directory and empties the harness state; a criterion .init. */
void ht_setup(void);
/* Stops (by pid) every process ht_start started that still runs, closes clients, removes the
 * temporary directory (kept and its path printed when HT_KEEP=1), frees the arena. .fini. */
void ht_teardown(void);
/* The test's temporary directory (absolute path). Calls ht_setup() if nobody did. */
const char *ht_dir(void);
/* "<ht_dir()>/<name>". */
const char *ht_path(const char *name);
/* printf into the arena. */
char *ht_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* <n> zeroed bytes from the arena (never NULL: aborts when out of memory). */
void *ht_alloc(size_t n);
/* "$BIN/<name>" (BIN defaults to "bin"), e.g. ht_bin("anonproxy"). */
const char *ht_bin(const char *name);
/* "$B/<rel>" (B defaults to "build"), e.g. ht_build("tests/recorder"). */
const char *ht_build(const char *rel);
/* Milliseconds on a monotonic clock. */
long ht_now_ms(void);
/* Sleeps <ms> milliseconds (in the test process only). */
void ht_sleep_ms(int ms);

/* ---- files ---- */

/* The whole file, NUL-terminated (arena); *len (if not NULL) gets its size. NULL if unreadable. */
char *ht_read(const char *path, size_t *len);
/* Writes <p, n> to <path> (created with <mode>, truncated). Returns false on failure. */
bool ht_write(const char *path, const void *p, size_t n, mode_t mode);
/* ht_write of a string with mode 0644. */
bool ht_write_str(const char *path, const char *s);

/* ---- processes (only ours, only by pid) ---- */

/* Starts argv[0] (a path; argv ends with NULL) with stdin /dev/null, stdout in
 * <dir>/<name>.out and stderr in <dir>/<name>.err, in the current working directory. The
 * child gets SIGTERM if the test process dies. Returns its pid, or -1 if it could not be
 * executed (the reason is printed and left in <name>.err). */
pid_t ht_start(const char *const argv[], const char *name);
/* Stops <pid>: SIGTERM, then SIGKILL after <timeout_ms>; reaps it. Returns its wait status
 * (0 = exited with 0; see ht_status_str), the status kept if it had already exited, or -1
 * if ht_start did not start it. */
int ht_stop(pid_t pid, int timeout_ms);
/* Waits up to <timeout_ms> for <pid> to exit by itself and reaps it. Returns its wait
 * status, or -1 on timeout (it still runs) or when it is not ours. */
int ht_wait(pid_t pid, int timeout_ms);
/* True while <pid> runs; once it has exited, reaps it (keeping its status) and says false. */
bool ht_running(pid_t pid);
/* A wait status in words: "exit 0", "exit 3", "signal 9"; "-1" for -1 (static string). */
const char *ht_status_str(int status);
/* What <pid> has written to stdout / stderr so far (arena; "" if nothing or not ours). */
const char *ht_out(pid_t pid);
const char *ht_err(pid_t pid);

/* ---- ports ---- */

/* A TCP port that was free on 127.0.0.1 a moment ago (bound to 0, read, closed). */
int ht_free_port(void);
/* Waits for <path> to hold a port number (written whole, as the recorder does). Returns the
 * port, or -1 on timeout or when <pid> (if > 0) exits first. */
int ht_wait_port_file(const char *path, pid_t pid, int timeout_ms);
/* Waits until 127.0.0.1:<port> accepts a connection (then closes it). False on timeout or
 * when <pid> (if > 0) exits first. Note: the server sees one empty connection. */
bool ht_wait_port(int port, pid_t pid, int timeout_ms);

/* ---- HTTP/1.1 messages ---- */

struct ht_header {
	const char *name;  /* as sent */
	const char *value; /* optional white space around it removed */
};

/* One parsed request or response; every pointer is into the arena, strings NUL-terminated. */
struct ht_msg {
	const char *method, *target; /* requests */
	int status;                  /* responses */
	const char *reason;          /* responses; "" when absent */
	int minor;                   /* HTTP/1.<minor> */
	struct ht_header *hdr;
	size_t nhdr;
	const char *body; /* decoded (chunked coding removed), NUL-terminated */
	size_t body_len;
	bool chunked;     /* the body came in the chunked coding */
	bool until_close; /* response body delimited by the connection's close */
	const char *raw;  /* the message exactly as on the wire */
	size_t raw_len;
	size_t head_len; /* raw[0, head_len) is the head, blank line included */
};

/* Splits one message off p[0, n). <response>: a status line, else a request line.
 * <head_req>: the response answers a HEAD (no body). <eof>: the peer closed after p[n-1]
 * (ends a close-delimited body). Returns the bytes it spans (> 0) and fills *m; 0 when more
 * bytes are needed (nothing allocated); -1 when malformed (*why, if given, says why).
 * No body: 1xx, 204, 304 and HEAD responses; requests without Content-Length/chunked. */
long ht_parse(const char *p, size_t n, bool response, bool head_req, bool eof, struct ht_msg *m,
              const char **why);
/* The value of the first header <name> (any case), or NULL. */
const char *ht_header(const struct ht_msg *m, const char *name);
/* How many headers are called <name> (any case). */
size_t ht_header_count(const struct ht_msg *m, const char *name);

/* ---- raw client ---- */

struct ht_client;

/* What one ht_recv read. */
struct ht_result {
	const char *raw; /* every byte from the first one not yet split off, to the last read */
	size_t raw_len;
	struct ht_msg *resp; /* complete responses in order (1xx ones included) */
	size_t nresp;
	bool closed;    /* the peer closed (FIN or RST) */
	bool reset;     /* ... with an RST (ECONNRESET) */
	bool timed_out; /* the deadline came first */
	bool malformed; /* bytes after the last response could not be split; see why */
	const char *why;
	long ms;            /* from the call until it returned */
	long first_byte_ms; /* from the call to the first new byte; -1 if none */
};

/* Connects to 127.0.0.1:<port> (2 s timeout). NULL on failure. Closed at ht_teardown. */
struct ht_client *ht_connect(int port);
/* Connects with TLS, verifying the chain against <ca_file> and the name <host> (an IP
 * address or a DNS name, also sent as SNI if a name). NULL on failure, *why (if given) set. */
struct ht_client *ht_connect_tls(int port, const char *ca_file, const char *host, const char **why);
/* Sends <p, n> whole. The harness frames what it sends to know which responses answer a
 * HEAD; bytes it cannot frame make it assume GET from then on. False if the peer is gone. */
bool ht_send(struct ht_client *c, const void *p, size_t n);
bool ht_send_str(struct ht_client *c, const char *s);
/* Sends <p, n> in pieces of <piece> bytes with <delay_ms> between them. */
bool ht_send_pieces(struct ht_client *c, const void *p, size_t n, size_t piece, int delay_ms);
/* Half-closes: no more bytes from us (shutdown(SHUT_WR); plain connections only). */
void ht_shutdown_write(struct ht_client *c);
/* Reads until <want> responses are complete (0: until the peer closes), the peer closes, or
 * <timeout_ms> passes. Bytes past the last split response stay for the next call. */
struct ht_result *ht_recv(struct ht_client *c, int want, int timeout_ms);
/* Closes the connection now (also done by ht_teardown). */
void ht_close(struct ht_client *c);
/* Connect, send <p, n>, ht_recv(want, timeout_ms), close. NULL if the connect failed. */
struct ht_result *ht_exchange(int port, const void *p, size_t n, int want, int timeout_ms);
struct ht_result *ht_exchange_str(int port, const char *s, int want, int timeout_ms);

/* ---- the recording upstream ($B/tests/recorder, see recorder.c) ---- */

struct ht_recorder {
	pid_t pid;
	int port;
	const char *dir;  /* where it records: <ht_dir()>/<name> */
	const char *name; /* its stdout/stderr are <ht_dir()>/<name>.out/.err */
};

/* One line of the recorder's log. */
struct ht_rec_entry {
	int n;
	unsigned conn; /* upstream connection id: equal ids = one kept-alive connection */
	const char *method, *target;
	size_t body; /* decoded body length */
};

/* Starts a recorder on 127.0.0.1 (an ephemeral port) recording into <ht_dir()>/<name>;
 * with <cert>/<key> (PEM files) it serves TLS. Waits (5 s) for its port. */
bool ht_recorder_start(struct ht_recorder *r, const char *name, const char *cert, const char *key);
/* ht_stop(r->pid, 5000): its wait status (0 after a clean SIGTERM). */
int ht_recorder_stop(struct ht_recorder *r);
/* The requests it has logged so far; *out (arena) gets them in order. Returns how many. */
size_t ht_rec_log(const struct ht_recorder *r, struct ht_rec_entry **out);
/* Waits up to <timeout_ms> for the log to hold at least <count> requests; returns the count. */
size_t ht_rec_wait(const struct ht_recorder *r, size_t count, int timeout_ms);
/* Request <n> exactly as received (arena, NUL-terminated), or NULL. */
const char *ht_rec_raw(const struct ht_recorder *r, int n, size_t *len);
/* Request <n> parsed, or NULL if missing or malformed. */
struct ht_msg *ht_rec_req(const struct ht_recorder *r, int n);
/* The text of its connection log ("open conn=1", "close conn=1 requests=2 unparsed=0"). */
const char *ht_rec_conns(const struct ht_recorder *r);

/* ---- TLS material ---- */

/* PEM files made by ht_make_certs (paths in the arena). */
struct ht_certs {
	const char *ca;     /* the CA certificate: give it to clients as the trust anchor */
	const char *ca_key; /* the CA's key */
	const char *cert;   /* server certificate for 127.0.0.1, ::1 and localhost, by the CA */
	const char *key;    /* its key (mode 0600) */
};

/* Makes, with the OpenSSL API, a fresh CA called <cn> and a server certificate signed by it
 * (EC P-256, valid from an hour ago for a week) in <dir> (ca.pem, ca.key, server.pem,
 * server.key). Two calls give two unrelated CAs. False on failure (reason printed). */
bool ht_make_certs(const char *dir, const char *cn, struct ht_certs *out);

/* The same, with the server certificate's subjectAltName <san> in OpenSSL's syntax
 * ("DNS:other.example"): for name checks that must fail. */
bool ht_make_certs_san(const char *dir, const char *cn, const char *san, struct ht_certs *out);

/* ---- processes seen from outside: limits and /proc (Linux) ---- */

/* ht_start with the child's RLIMIT_NOFILE soft limit set to <nofile> (its hard limit stays):
 * the test process's own soft limit is lowered around the fork and restored after, since
 * limits pass through fork and exec. */
pid_t ht_start_nofile(const char *const argv[], const char *name, long nofile);
/* Raises the test process's own RLIMIT_NOFILE soft limit to <want> (at most the hard limit).
 * Returns the soft limit now in force. */
long ht_raise_nofile(long want);
/* The oldest child of <pid> (the master's worker), or -1. */
pid_t ht_child_of(pid_t pid);
/* VmRSS of <pid> in KiB, or -1. */
long ht_rss_kb(pid_t pid);
/* CPU time of <pid> (user + system, from /proc/<pid>/stat) in ms, or -1. */
long ht_cpu_ms(pid_t pid);
/* How many file descriptors <pid> has open (entries of /proc/<pid>/fd), or -1. */
int ht_fd_count(pid_t pid);
/* How many of <pid>'s descriptors are TCP sockets, not listening, with local port <local>
 * (0: any) and remote port <remote> (0: any), from /proc/<pid>/net/tcp and tcp6; or -1. */
int ht_tcp_count(pid_t pid, int local, int remote);
/* A non-blocking, close-on-exec socket connecting to 127.0.0.1:<port>, the connect maybe
 * still in progress (poll it for POLLOUT); -1 on error. Not tracked: the caller closes it. */
int ht_connect_nb(int port);
/* Closes <fd> with an RST instead of a FIN (SO_LINGER 0). */
void ht_close_reset(int fd);

#endif
