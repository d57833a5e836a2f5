/* Counters every worker writes into its own slot of a shared anonymous mapping made by
 * the master before it forks; the master's admin listener sums the slots and renders them
 * in the Prometheus text format. One writer per slot: no locks, relaxed atomics only so a
 * reader never sees a torn 64-bit value. No label ever carries a request's data: labels
 * are route names from the configuration, status codes, classes and reasons. */
#ifndef AP_METRICS_H
#define AP_METRICS_H

#include <stdbool.h>
#include <sys/types.h>

#include "ap.h"
#include "buf.h"

#define AP_WORKERS_MAX    64
#define AP_ROUTE_SLOTS    32 /* route names over the process's life; more share "other" */
#define AP_ROUTE_NAME_MAX 64
#define AP_LAT_BUCKETS    14

/* Why a request was refused by the proxy itself (metric anonproxy_refusals_total). */
enum ap_refusal {
	AP_REF_HTTP = 0,    /* malformed or ambiguous HTTP: 400/405/414/417/431/501/505 */
	AP_REF_TOO_BIG,     /* body or decoded body over a limit: 413 */
	AP_REF_DECODE,      /* body does not decode as its declared type/encoding: 400 */
	AP_REF_UNSUPPORTED, /* content type or encoding the route does not take: 415 */
	AP_REF_SCAN,        /* identifier found in unscrubbable content: 422 */
	AP_REF_NO_ROUTE,    /* 404 */
	AP_REF_TIMEOUT,     /* client too slow: 408 */
	AP_REF_UNAVAILABLE, /* the opt-out table a route needs is not mapped: 503 */
	AP_REF_MAX
};

/* Upstream failures (metric anonproxy_upstream_errors_total). */
enum ap_uerr {
	AP_UERR_CONNECT = 0, /* refused, unreachable, connect timeout: 502 */
	AP_UERR_TLS,         /* handshake or certificate verification: 502 */
	AP_UERR_TIMEOUT,     /* no response in time: 504 */
	AP_UERR_RESET,       /* closed or reset before a whole response: 502 */
	AP_UERR_PROTOCOL,    /* a response that does not parse: 502 */
	AP_UERR_MAX
};

#define AP_STATUS_SLOTS 40

/* One worker's counters. Written only by that worker (ap_metric_add); read by anyone. */
struct ap_wstats {
	pid_t pid;
	uint64_t started_ms;
	uint64_t requests[AP_ROUTE_SLOTS + 1][AP_STATUS_SLOTS]; /* last route: no route */
	uint64_t bytes_in;       /* request bytes read from clients */
	uint64_t bytes_out;      /* response bytes written to clients */
	uint64_t bytes_upstream; /* request bytes written to upstreams, after scrubbing */
	uint64_t fields[AP_CLASS_MAX][AP_ACT_MAX];
	uint64_t refusals[AP_REF_MAX];
	uint64_t upstream_errors[AP_UERR_MAX];
	uint64_t latency[AP_LAT_BUCKETS]; /* cumulative counts of requests at or under bound */
	uint64_t latency_sum_us;
	uint64_t latency_count;
	uint64_t accepted;
	uint64_t open; /* connections open now (gauge, written by its worker) */
	uint64_t upstream_reused, upstream_new;
	uint64_t reloads, reload_failures;
	uint64_t optout_hits[8];
	/* Opaque payloads a route's profile recognised (ap_scrub_stats.opaque), by what the
	 * route's "opaque" policy did: [0] passed as they came, [1] refused. */
	uint64_t opaque[2];
};

struct ap_metrics {
	uint32_t nworkers;
	uint64_t started_ms;
	uint64_t worker_restarts;
	uint64_t reloads, reload_failures;                   /* counted by the master */
	char route_names[AP_ROUTE_SLOTS][AP_ROUTE_NAME_MAX]; /* written by the master only */
	struct ap_wstats w[AP_WORKERS_MAX];
};

/* Maps the shared counters (MAP_SHARED | MAP_ANONYMOUS, so forked workers share them).
 * Returns NULL when the mapping fails. */
struct ap_metrics *ap_metrics_create(unsigned nworkers);

/* The slot of route name <name>: an existing slot with that name, else a new one (master
 * only), else AP_ROUTE_SLOTS - 1 when they ran out (its name is then "other"). */
unsigned ap_metrics_route_slot(struct ap_metrics *m, const char *name, bool create);

/* The status slot of an HTTP status code. */
unsigned ap_metrics_status_slot(int status);

static inline void ap_metric_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void ap_metric_set(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/* Records one request's latency in microseconds. */
void ap_metrics_latency(struct ap_wstats *w, uint64_t us);

/* Appends the whole exposition (sums over workers) to <out>. AP_OK or AP_ERR (memory). */
int ap_metrics_render(const struct ap_metrics *m, struct ap_buf *out);

#endif
