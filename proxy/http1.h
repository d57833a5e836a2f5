/* Strict HTTP/1.1 message framing: request heads, response heads and the chunked coding.
 * Zero-copy — every slice points into the caller's buffer — and resumable: a partial head
 * is not rescanned from its start. No I/O and no allocation here; conn.c feeds it bytes.
 * Anything ambiguous (the stuff of request smuggling) is refused, never guessed at. */
#ifndef AP_HTTP1_H
#define AP_HTTP1_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"

#define AP_HTTP_HEADERS_MAX 256 /* hard cap; the configured limit is at most this */

struct ap_http_header {
	struct ap_span name;  /* as sent; compare with ap_span_ieq */
	struct ap_span value; /* leading and trailing white space removed */
};

/* Limits a request head is held to (from the configuration). */
struct ap_http_limits {
	size_t head_bytes; /* request line + headers + the blank line: else 431 (414 when the
	                      request line alone is over uri_bytes) */
	size_t uri_bytes;  /* request target: else 414 */
	size_t headers;    /* header count: else 431; at most AP_HTTP_HEADERS_MAX */
};

/* A parsed request head. Slices point into the buffer given to the parser and stay valid
 * as long as it does. */
struct ap_http_req {
	struct ap_span method;
	struct ap_span target; /* as sent: origin-form "/p?q" or absolute-form "http://h/p?q" */
	struct ap_span path;   /* "/p" (for absolute-form, the path part; "/" when empty) */
	struct ap_span query;  /* after '?', without it; empty when none */
	struct ap_span host;   /* the Host header, or the authority of an absolute-form target */
	int minor;             /* HTTP/1.<minor>: 0 or 1 */
	struct ap_http_header headers[AP_HTTP_HEADERS_MAX];
	size_t nheaders;
	int64_t content_length; /* -1: none */
	bool chunked;           /* Transfer-Encoding: chunked */
	bool keep_alive;        /* the client lets the connection stay open after this one */
	bool expect_continue;   /* Expect: 100-continue */
	size_t head_len;        /* bytes of the head, the final CRLF CRLF included */
};

/* Parses the request head at the start of <buf, len>. <last_len> is the <len> of the
 * previous call on the same head (0 the first time): the search for its end resumes
 * there. Returns the head length (> 0) with *req filled; AP_AGAIN when the head is not
 * complete yet (and within the limits); AP_ERR when the head is invalid or over a limit,
 * with *status the answer to give (400; 405 for CONNECT; 414; 417 for an Expect other than
 * 100-continue; 431; 501 for a transfer coding other than chunked; 505 for a version other
 * than HTTP/1.0 or 1.1) and *why a static reason (never a byte of the request).
 * Refused: bare CR or LF line ends, obsolete line folding, white space before a header's
 * colon or at the start of a line, control characters and bytes >= 0x80 in names, NUL
 * anywhere, Content-Length with Transfer-Encoding, several or invalid Content-Length
 * (including "1, 1" and a sign or spaces inside), Transfer-Encoding other than exactly
 * "chunked" (in HTTP/1.0 at all), a missing Host in HTTP/1.1, several Host headers,
 * and targets in authority or asterisk form except OPTIONS *. */
int ap_http_parse_request(const char *buf, size_t len, size_t last_len, struct ap_http_req *req,
                          const struct ap_http_limits *lim, int *status, const char **why);

/* A parsed response head (from an upstream). */
struct ap_http_resp {
	int status;
	int minor;
	int64_t content_length; /* -1: none */
	bool chunked;
	bool close;       /* Connection: close, or HTTP/1.0 without keep-alive */
	bool no_body;     /* 1xx, 204, 304, or the answer to a HEAD */
	bool until_close; /* no length and not chunked: the body ends when the peer closes */
	size_t head_len;
	struct ap_http_header headers[AP_HTTP_HEADERS_MAX];
	size_t nheaders;
};

/* Parses the response head at the start of <buf, len>, same conventions as above
 * (<head_request>: it answers a HEAD). Returns the head length, AP_AGAIN, or AP_ERR with
 * *why (the proxy then answers 502). A 1xx head is returned like any other: the caller
 * relays it and parses the next. Refuses what the request parser refuses where it applies
 * (conflicting or invalid lengths, bare LF, folding), and heads over <max_head> bytes. */
int ap_http_parse_response(const char *buf, size_t len, size_t last_len, bool head_request,
                           struct ap_http_resp *resp, size_t max_head, const char **why);

/* The chunked coding, decoded (request bodies) or only followed (relayed responses).
 * Zero-initialise before the first chunk. */
struct ap_chunked {
	int state;
	uint64_t left;   /* bytes of chunk data still to come */
	size_t line;     /* bytes seen of the current size, extension or trailer line */
	uint64_t total;  /* data bytes so far */
	unsigned digits; /* hex digits of the current size */
};

/* Feeds <in, n> to the decoder. Chunk data is appended to <out> (NULL: only follow the
 * framing). Returns the bytes consumed — fewer than n only when the message ended
 * (*done set; what follows belongs to the next message) — or AP_ERR with *why: a size
 * that is not hex, has more than 16 digits, or overflows; a missing CRLF after data;
 * a size, extension or trailer line over 4096 bytes; bare LF; data beyond <max_body>
 * bytes (then *why is AP_HTTP_WHY_TOO_BIG). Trailer fields are read and discarded. */
ssize_t ap_chunked_feed(struct ap_chunked *c, const char *in, size_t n, struct ap_buf *out,
                        uint64_t max_body, bool *done, const char **why);

#define AP_HTTP_WHY_TOO_BIG "body larger than the limit"

/* Finds header <name> (lower case) in <h, n>; returns its index or -1. */
int ap_http_find(const struct ap_http_header *h, size_t n, const char *name);

/* True when the comma-separated list <v> holds <token> (lower case), ASCII
 * case-insensitively: "keep-alive, Upgrade" holds "upgrade". */
bool ap_http_list_has(struct ap_span v, const char *token);

#endif
