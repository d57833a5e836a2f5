/* The shared counters and their Prometheus text exposition. Rendering sums every worker's
 * slot; zero series are left out, except the ones a dashboard needs to exist. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "metrics.h"

static const int status_codes[AP_STATUS_SLOTS - 1] = {
        100, 101, 103, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307,
        308, 400, 401, 403, 404, 405, 408, 409, 410, 411, 413, 414, 415,
        417, 422, 429, 431, 499, 500, 501, 502, 503, 504, 505, 507, 511,
};

/* Upper bounds of the latency buckets, microseconds. */
static const uint64_t lat_bounds[AP_LAT_BUCKETS] = {
        250,   500,    1000,   2500,   5000,    10000,   25000,
        50000, 100000, 250000, 500000, 1000000, 2500000, 10000000,
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct ap_metrics *ap_metrics_create(unsigned nworkers)
{
	struct ap_metrics *m =
	        mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return NULL;
	memset(m, 0, sizeof(*m));
	m->nworkers = nworkers;
	m->started_ms = now_ms();
	return m;
}

unsigned ap_metrics_route_slot(struct ap_metrics *m, const char *name, bool create)
{
	unsigned i;

	for (i = 0; i < AP_ROUTE_SLOTS - 1 && m->route_names[i][0]; i++)
		if (strncmp(m->route_names[i], name, AP_ROUTE_NAME_MAX - 1) == 0)
			return i;
	if (create && i < AP_ROUTE_SLOTS - 1) {
		snprintf(m->route_names[i], AP_ROUTE_NAME_MAX, "%s", name);
		return i;
	}
	if (create && !m->route_names[AP_ROUTE_SLOTS - 1][0])
		snprintf(m->route_names[AP_ROUTE_SLOTS - 1], AP_ROUTE_NAME_MAX, "other");
	return AP_ROUTE_SLOTS - 1;
}

unsigned ap_metrics_status_slot(int status)
{
	for (unsigned i = 0; i < AP_ARRAY_LEN(status_codes); i++)
		if (status_codes[i] == status)
			return i;
	return AP_STATUS_SLOTS - 1;
}

void ap_metrics_latency(struct ap_wstats *w, uint64_t us)
{
	for (unsigned i = 0; i < AP_LAT_BUCKETS; i++)
		if (us <= lat_bounds[i])
			ap_metric_add(&w->latency[i], 1);
	ap_metric_add(&w->latency_sum_us, us);
	ap_metric_add(&w->latency_count, 1);
}

static uint64_t get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Sums one counter over the workers: <off> is its byte offset in struct ap_wstats. */
static uint64_t sum(const struct ap_metrics *m, size_t off)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < m->nworkers && i < AP_WORKERS_MAX; i++)
		s += get((const uint64_t *)((const char *)&m->w[i] + off));
	return s;
}

#define SUM(m, field) sum(m, offsetof(struct ap_wstats, field))

static int emit(struct ap_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int emit(struct ap_buf *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = out->cap - out->len;
		va_start(ap, fmt);
		n = vsnprintf(out->p ? out->p + out->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return AP_ERR;
		if ((size_t)n < room) {
			out->len += (size_t)n;
			return AP_OK;
		}
		if (ap_buf_grow(out, (size_t)n + 1) != AP_OK)
			return AP_ERR;
	}
}

static const char *const refusal_names[AP_REF_MAX] = {
        "http",     "too_big",  "decode",         "unsupported",
        "scan_hit", "no_route", "client_timeout", "optout_unavailable",
};
static const char *const uerr_names[AP_UERR_MAX] = {
        "connect", "tls", "timeout", "reset", "protocol",
};

int ap_metrics_render(const struct ap_metrics *m, struct ap_buf *out)
{
	int rc = AP_OK;

	rc |= emit(out, "# HELP anonproxy_requests_total Requests answered, by route and status.\n"
	                "# TYPE anonproxy_requests_total counter\n");
	for (unsigned r = 0; r <= AP_ROUTE_SLOTS; r++)
		for (unsigned s = 0; s < AP_STATUS_SLOTS; s++) {
			uint64_t v = sum(m, offsetof(struct ap_wstats, requests) +
			                            (r * AP_STATUS_SLOTS + s) * sizeof(uint64_t));
			char code[8];
			if (!v)
				continue;
			if (s < AP_STATUS_SLOTS - 1)
				snprintf(code, sizeof(code), "%d", status_codes[s]);
			else
				snprintf(code, sizeof(code), "other");
			rc |= emit(out,
			           "anonproxy_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
			           r == AP_ROUTE_SLOTS
			                   ? "(none)"
			                   : (m->route_names[r][0] ? m->route_names[r] : "other"),
			           code, (unsigned long long)v);
		}
	rc |= emit(out,
	           "# HELP anonproxy_bytes_total Bytes by direction: in (from clients), out (to "
	           "clients), upstream (to upstreams, after scrubbing).\n"
	           "# TYPE anonproxy_bytes_total counter\n"
	           "anonproxy_bytes_total{direction=\"in\"} %llu\n"
	           "anonproxy_bytes_total{direction=\"out\"} %llu\n"
	           "anonproxy_bytes_total{direction=\"upstream\"} %llu\n",
	           (unsigned long long)SUM(m, bytes_in), (unsigned long long)SUM(m, bytes_out),
	           (unsigned long long)SUM(m, bytes_upstream));
	rc |= emit(out,
	           "# HELP anonproxy_fields_total Identifier values found, by class and action.\n"
	           "# TYPE anonproxy_fields_total counter\n");
	for (unsigned c = 1; c < AP_CLASS_MAX; c++)
		for (unsigned a = 1; a < AP_ACT_MAX; a++) {
			uint64_t v = sum(m, offsetof(struct ap_wstats, fields) +
			                            (c * AP_ACT_MAX + a) * sizeof(uint64_t));
			if (v)
				rc |= emit(
				        out,
				        "anonproxy_fields_total{class=\"%s\",action=\"%s\"} %llu\n",
				        ap_class_name(c), ap_act_name(a), (unsigned long long)v);
		}
	rc |= emit(out, "# HELP anonproxy_refusals_total Requests the proxy refused, by reason.\n"
	                "# TYPE anonproxy_refusals_total counter\n");
	for (unsigned i = 0; i < AP_REF_MAX; i++)
		rc |= emit(out, "anonproxy_refusals_total{reason=\"%s\"} %llu\n", refusal_names[i],
		           (unsigned long long)sum(m, offsetof(struct ap_wstats, refusals) +
		                                              i * sizeof(uint64_t)));
	rc |= emit(out,
	           "# HELP anonproxy_opaque_payloads_total Opaque payloads a route's profile "
	           "recognised, by the route's policy.\n"
	           "# TYPE anonproxy_opaque_payloads_total counter\n"
	           "anonproxy_opaque_payloads_total{policy=\"pass\"} %llu\n"
	           "anonproxy_opaque_payloads_total{policy=\"refuse\"} %llu\n",
	           (unsigned long long)SUM(m, opaque[0]), (unsigned long long)SUM(m, opaque[1]));
	{
		static const char *const scope[6] = {"analytics", "personalization", "push",
		                                     "location",  "minor",           "all"};
		rc |= emit(out,
		           "# HELP anonproxy_optout_hits_total Events whose user's opt-out took "
		           "effect (dropped, or scrubbed more strictly), by scope.\n"
		           "# TYPE anonproxy_optout_hits_total counter\n");
		for (unsigned i = 0; i < 6; i++)
			rc |= emit(
			        out, "anonproxy_optout_hits_total{scope=\"%s\"} %llu\n", scope[i],
			        (unsigned long long)sum(m, offsetof(struct ap_wstats, optout_hits) +
			                                           i * sizeof(uint64_t)));
	}
	rc |= emit(out, "# HELP anonproxy_upstream_errors_total Upstream failures, by kind.\n"
	                "# TYPE anonproxy_upstream_errors_total counter\n");
	for (unsigned i = 0; i < AP_UERR_MAX; i++)
		rc |= emit(out, "anonproxy_upstream_errors_total{kind=\"%s\"} %llu\n",
		           uerr_names[i],
		           (unsigned long long)sum(m, offsetof(struct ap_wstats, upstream_errors) +
		                                              i * sizeof(uint64_t)));
	rc |= emit(out, "# HELP anonproxy_request_duration_seconds Time from a request's first "
	                "byte to its last response byte.\n"
	                "# TYPE anonproxy_request_duration_seconds histogram\n");
	for (unsigned i = 0; i < AP_LAT_BUCKETS; i++)
		rc |= emit(out, "anonproxy_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
		           (double)lat_bounds[i] / 1e6,
		           (unsigned long long)sum(m, offsetof(struct ap_wstats, latency) +
		                                              i * sizeof(uint64_t)));
	rc |= emit(out,
	           "anonproxy_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
	           "anonproxy_request_duration_seconds_sum %.6f\n"
	           "anonproxy_request_duration_seconds_count %llu\n",
	           (unsigned long long)SUM(m, latency_count), (double)SUM(m, latency_sum_us) / 1e6,
	           (unsigned long long)SUM(m, latency_count));
	rc |= emit(out,
	           "# HELP anonproxy_connections_accepted_total Client connections accepted.\n"
	           "# TYPE anonproxy_connections_accepted_total counter\n"
	           "anonproxy_connections_accepted_total %llu\n"
	           "# HELP anonproxy_connections_open Client connections open now.\n"
	           "# TYPE anonproxy_connections_open gauge\n"
	           "anonproxy_connections_open %llu\n"
	           "# HELP anonproxy_upstream_connections_total Upstream connections used, new or "
	           "reused from the keep-alive pool.\n"
	           "# TYPE anonproxy_upstream_connections_total counter\n"
	           "anonproxy_upstream_connections_total{kind=\"new\"} %llu\n"
	           "anonproxy_upstream_connections_total{kind=\"reused\"} %llu\n"
	           "# HELP anonproxy_reloads_total Configuration reloads, by result.\n"
	           "# TYPE anonproxy_reloads_total counter\n"
	           "anonproxy_reloads_total{result=\"ok\"} %llu\n"
	           "anonproxy_reloads_total{result=\"failed\"} %llu\n"
	           "# HELP anonproxy_worker_restarts_total Workers the master restarted.\n"
	           "# TYPE anonproxy_worker_restarts_total counter\n"
	           "anonproxy_worker_restarts_total %llu\n"
	           "# HELP anonproxy_workers Worker processes configured.\n"
	           "# TYPE anonproxy_workers gauge\n"
	           "anonproxy_workers %u\n",
	           (unsigned long long)SUM(m, accepted), (unsigned long long)SUM(m, open),
	           (unsigned long long)SUM(m, upstream_new),
	           (unsigned long long)SUM(m, upstream_reused), (unsigned long long)m->reloads,
	           (unsigned long long)m->reload_failures, (unsigned long long)m->worker_restarts,
	           m->nworkers);
	return rc ? AP_ERR : AP_OK;
}
