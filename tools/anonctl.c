/* anonctl: the operator's tool. `anonctl scrub` runs the scrubbing core on one captured
 * request offline — the same code the proxy runs — so rules can be tried on real
 * captures before they guard real traffic. Findings go to stderr with values masked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

#define MAX_HEADERS 64

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: anonctl scrub -c CONFIG --route PATH[?QUERY] [--host HOST]\n"
	        "                     [-H 'Header: value']... < body > scrubbed-body\n"
	        "       anonctl check -c CONFIG\n"
	        "\n"
	        "scrub   scrubs one captured request as the proxy would: the route is chosen by\n"
	        "        HOST and PATH, the body's format by the Content-Type and\n"
	        "        Content-Encoding headers (application/json when none is given).\n"
	        "        stdout: the scrubbed body. stderr: one line per finding (class, where,\n"
	        "        action, value masked), the scrubbed query and headers, a summary.\n"
	        "        Exit 0 when scrubbed, 1 when the request would be refused (the reason\n"
	        "        and the HTTP status are printed), 2 on a usage or configuration error.\n"
	        "check   validates a configuration file and exits 0, or prints what is wrong.\n");
}

struct tally {
	unsigned n;
	bool color;
};

static void finding_cb(void *arg, const struct ap_finding *f)
{
	static const char *const where[] = {"body", "query", "header"};
	struct tally *t = arg;

	t->n++;
	fprintf(stderr, "%s%-10s%s %-6s %-10s %-12s %s%s\n", t->color ? "\033[1;33m" : "",
	        ap_class_name(f->cls), t->color ? "\033[0m" : "", where[f->where],
	        ap_act_name(f->act), f->masked, f->path, f->detected ? "  (detected)" : "");
}

static int read_all(FILE *f, struct ap_buf *b)
{
	size_t r;

	do {
		if (ap_buf_reserve(b, 65536) != AP_OK)
			return AP_ERR;
		r = fread(b->p + b->len, 1, b->cap - b->len, f);
		b->len += r;
	} while (r > 0);
	return ferror(f) ? AP_ERR : AP_OK;
}

static struct ap_span header_value(char **headers, size_t n, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (strncasecmp(headers[i], name, nl) == 0 && headers[i][nl] == ':') {
			const char *v = headers[i] + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			return (struct ap_span){v, strlen(v)};
		}
	return (struct ap_span){"", 0};
}

static int cmd_scrub(int argc, char **argv)
{
	const char *conf_path = NULL, *route_arg = NULL, *host = "";
	char *headers[MAX_HEADERS], err[AP_CONF_ERR_MAX];
	size_t nh = 0;
	struct ap_conf *conf;
	const struct ap_route *route;
	struct ap_scrub sc;
	struct ap_buf body = {0}, out = {0}, hv = {0};
	struct tally t = {0, isatty(2)};
	struct ap_span ctype, cenc, path, query = {"", 0};
	const char *q;
	bool changed;
	int status, rc = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && v)
			conf_path = argv[++i];
		else if (strcmp(a, "--route") == 0 && v)
			route_arg = argv[++i];
		else if (strcmp(a, "--host") == 0 && v)
			host = argv[++i];
		else if (strcmp(a, "-H") == 0 && v) {
			if (nh == MAX_HEADERS || !strchr(v, ':')) {
				fprintf(stderr, "anonctl: -H takes 'Name: value' (at most %d)\n",
				        MAX_HEADERS);
				return 2;
			}
			headers[nh++] = argv[++i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!conf_path || !route_arg || route_arg[0] != '/') {
		usage(stderr);
		return 2;
	}
	if (!(conf = ap_conf_load(conf_path, err))) {
		fprintf(stderr, "anonctl: %s\n", err);
		return 2;
	}
	q = strchr(route_arg, '?');
	path = (struct ap_span){route_arg, q ? (size_t)(q - route_arg) : strlen(route_arg)};
	if (q)
		query = (struct ap_span){q + 1, strlen(q + 1)};
	route = ap_conf_route(conf, (struct ap_span){host, strlen(host)}, path);
	if (!route) {
		fprintf(stderr,
		        "anonctl: no route for host \"%s\" path \"%.*s\" (the proxy answers 404)\n",
		        host, (int)path.n, path.p);
		ap_conf_free(conf);
		return 1;
	}
	if (read_all(stdin, &body) != AP_OK) {
		fprintf(stderr, "anonctl: cannot read the body from stdin\n");
		ap_conf_free(conf);
		return 2;
	}
	if (ap_scrub_init(&sc, &conf->keys.keys[conf->keys.active]) != AP_OK) {
		fprintf(stderr, "anonctl: cannot initialise HMAC-SHA256 (OpenSSL)\n");
		ap_conf_free(conf);
		return 2;
	}
	sc.finding_cb = finding_cb;
	sc.finding_arg = &t;
	ap_scrub_begin(&sc, route->ruleset, (unsigned)conf->limits.json_depth,
	               conf->limits.decoded_bytes);
	fprintf(stderr, "route: %s%s -> upstream %s, ruleset %s\n", route->host ? route->host : "*",
	        route->path, route->upstream->name, route->ruleset->name);

	/* The query and the headers first, as the proxy does, then the body. */
	if (ap_scrub_query(&sc, query, &out, &changed) != AP_OK)
		goto refused_400;
	if (changed)
		fprintf(stderr, "query: %.*s\n", (int)out.len, out.p);
	for (size_t i = 0; i < nh; i++) {
		const char *colon = strchr(headers[i], ':');
		struct ap_span name = {headers[i], (size_t)(colon - headers[i])};
		struct ap_span value = {colon + 1, strlen(colon + 1)};
		bool drop;

		while (value.n && (*value.p == ' ' || *value.p == '\t')) {
			value.p++;
			value.n--;
		}
		ap_buf_clear(&hv);
		if (ap_scrub_header(&sc, name, value, &hv, &drop, &changed) != AP_OK)
			goto refused_400;
		if (drop)
			fprintf(stderr, "header: %.*s: (removed)\n", (int)name.n, name.p);
		else if (changed)
			fprintf(stderr, "header: %.*s: %.*s\n", (int)name.n, name.p, (int)hv.len,
			        hv.p);
	}
	ctype = header_value(headers, nh, "content-type");
	if (ctype.n == 0)
		ctype = AP_SPAN("application/json");
	cenc = header_value(headers, nh, "content-encoding");
	ap_buf_clear(&out);
	if (ap_scrub_body(&sc, ctype, cenc, route->unknown, ap_buf_span(&body), &out, &changed,
	                  &status) != AP_OK) {
		fprintf(stderr, "anonctl: refused (%d): %s at byte %zu\n", status, sc.why,
		        sc.err_off);
		rc = 1;
		goto done;
	}
	if (changed)
		fwrite(out.p, 1, out.len, stdout);
	else
		fwrite(body.p, 1, body.len, stdout);
	fprintf(stderr,
	        "anonctl: %u finding%s, body %s (%zu -> %zu bytes), %u hashed, %u from memo\n", t.n,
	        t.n == 1 ? "" : "s", changed ? "rewritten" : "unchanged", body.len,
	        changed ? out.len : body.len, sc.st.hashed, sc.st.memo_hits);
	goto done;
refused_400:
	fprintf(stderr, "anonctl: refused (400): %s\n", sc.why);
	rc = 1;
done:
	ap_scrub_free(&sc);
	ap_buf_free(&body);
	ap_buf_free(&out);
	ap_buf_free(&hv);
	ap_conf_free(conf);
	return rc;
}

static int cmd_check(int argc, char **argv)
{
	char err[AP_CONF_ERR_MAX];
	struct ap_conf *c;

	if (argc != 3 || strcmp(argv[1], "-c") != 0) {
		usage(stderr);
		return 2;
	}
	if (!(c = ap_conf_load(argv[2], err))) {
		fprintf(stderr, "anonctl: %s\n", err);
		return 1;
	}
	printf("%s: ok (%zu rulesets, %zu routes, %zu upstreams, %d keys)\n", argv[2], c->nrulesets,
	       c->nroutes, c->nupstreams, c->keys.nkeys);
	ap_conf_free(c);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "scrub") == 0)
		return cmd_scrub(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 1, argv + 1);
	usage(stderr);
	return 2;
}
