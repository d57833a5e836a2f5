/* What the proxy writes for people: the access log (one line per request, with no
 * identifier in it: the client address truncated, path segments that look like
 * identifiers replaced, query values left out), the --inspect blocks, the sink's bodies
 * (scrubbed ones only) and process messages. Each record goes out in one write(2), so
 * workers sharing a file or terminal do not interleave inside a line. */
#ifndef AP_LOG_H
#define AP_LOG_H

#include "worker.h"

/* One request, as the access log records it. */
struct ap_access {
	const char *peer; /* truncated client address */
	const char *method;
	const char *path; /* already cleaned by conn.c */
	int status;
	size_t bytes_in, bytes_out;
	uint64_t us;
	const struct ap_route *route;
	unsigned findings;
	const char *why; /* static reason of a refusal or failure, or NULL */
};

void ap_log_access(struct ap_worker *w, const struct ap_access *a);

/* --inspect: a block per request, values masked, in colour on a terminal. */
void ap_log_inspect_begin(struct ap_worker *w, const char *method, const char *path,
                          const struct ap_route *rt);
void ap_log_finding(struct ap_worker *w, const struct ap_finding *f);
void ap_log_inspect_end(struct ap_worker *w, const char *refused, struct ap_span body);

/* The sink's log of a scrubbed body (log_bodies). */
void ap_log_sink(struct ap_worker *w, const struct ap_route *rt, struct ap_span body);

/* A process message on stderr: "anonproxy[pid]: ...". */
void ap_log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The name routes carry in logs and metrics: "host/path", or "*" + path. */
const char *ap_route_name(const struct ap_route *rt, char *buf, size_t cap);

#endif
