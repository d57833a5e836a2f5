/* The access log, --inspect blocks, the sink's bodies and process messages. Records are
 * formatted into a buffer and written with one write(2). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static void put(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return; /* a log that cannot be written must not stop the proxy */
		p += w;
		n -= (size_t)w;
	}
}

static int addf(struct ap_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int addf(struct ap_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (int tries = 0; tries < 2; tries++) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return AP_ERR;
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return AP_OK;
		}
		if (ap_buf_grow(b, (size_t)n + 1) != AP_OK)
			return AP_ERR;
	}
	return AP_ERR;
}

static void stamp(char *buf, size_t cap)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

const char *ap_route_name(const struct ap_route *rt, char *buf, size_t cap)
{
	if (!rt)
		return "-";
	snprintf(buf, cap, "%s%s", rt->host ? rt->host : "*", rt->path);
	return buf;
}

void ap_log_access(struct ap_worker *w, const struct ap_access *a)
{
	struct ap_buf *b = &w->line;
	char ts[64], rn[AP_ROUTE_NAME_MAX];

	if (w->access_fd < 0)
		return;
	stamp(ts, sizeof(ts));
	ap_buf_clear(b);
	addf(b, "%s %s \"%s %s\" %d %zu %zu %.3fms route=%s findings=%u", ts, a->peer,
	     a->method[0] ? a->method : "-", a->path[0] ? a->path : "-", a->status, a->bytes_in,
	     a->bytes_out, (double)a->us / 1000.0, ap_route_name(a->route, rn, sizeof(rn)),
	     a->findings);
	if (a->why)
		addf(b, " why=\"%s\"", a->why);
	addf(b, "\n");
	put(w->access_fd, b->p, b->len);
}

void ap_log_inspect_begin(struct ap_worker *w, const char *method, const char *path,
                          const struct ap_route *rt)
{
	char rn[AP_ROUTE_NAME_MAX];
	bool c = w->inspect_color;

	ap_buf_clear(&w->ibuf);
	addf(&w->ibuf, "%s%s %s%s  route %s -> %s (ruleset %s)\n", c ? "\033[1m" : "", method, path,
	     c ? "\033[0m" : "", ap_route_name(rt, rn, sizeof(rn)), rt->upstream->name,
	     rt->ruleset->name);
}

void ap_log_finding(struct ap_worker *w, const struct ap_finding *f)
{
	static const char *const where[] = {"body", "query", "header", "path"};
	static const char *const colour[AP_ACT_MAX] = {
	        [AP_ACT_KEEP] = "\033[36m",        [AP_ACT_DROP] = "\033[31m",
	        [AP_ACT_HASH] = "\033[32m",        [AP_ACT_MASK] = "\033[33m",
	        [AP_ACT_TRUNCATE_IP] = "\033[33m", [AP_ACT_ROUND] = "\033[33m",
	};
	bool c = w->inspect_color;

	addf(&w->ibuf, "  %-10s %-6s %s%-11s%s %-16s %s%s\n", ap_class_name(f->cls),
	     where[f->where], c && colour[f->act] ? colour[f->act] : "", ap_act_name(f->act),
	     c ? "\033[0m" : "", f->masked, f->path, f->detected ? "  (detected)" : "");
}

void ap_log_inspect_end(struct ap_worker *w, const char *refused, struct ap_span body)
{
	bool c = w->inspect_color;

	if (refused)
		addf(&w->ibuf, "  %sREFUSED%s: %s\n", c ? "\033[1;31m" : "", c ? "\033[0m" : "",
		     refused);
	else
		addf(&w->ibuf, "  forwarded %zu body bytes\n", body.n);
	put(2, w->ibuf.p, w->ibuf.len);
}

void ap_log_sink(struct ap_worker *w, const struct ap_route *rt, struct ap_span body)
{
	struct ap_buf *b = &w->ibuf;
	char rn[AP_ROUTE_NAME_MAX];
	bool binary = false;

	for (size_t i = 0; i < body.n && !binary; i++)
		binary = (unsigned char)body.p[i] < 0x09;
	ap_buf_clear(b);
	addf(b, "sink: route %s, %zu scrubbed body bytes%s\n", ap_route_name(rt, rn, sizeof(rn)),
	     body.n, binary ? " (binary, not shown)" : "");
	if (!binary && body.n) {
		ap_buf_add(b, body.p, body.n);
		if (body.p[body.n - 1] != '\n')
			ap_buf_addc(b, '\n');
	}
	put(2, b->p, b->len);
}

void ap_log_msg(const char *fmt, ...)
{
	char buf[1024], ts[64];
	va_list ap;
	int n;

	stamp(ts, sizeof(ts));
	n = snprintf(buf, sizeof(buf), "%s anonproxy[%d]: ", ts, (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	put(2, buf, (size_t)n);
}
