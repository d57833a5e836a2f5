/* anonctl: the operator's tool. `anonctl scrub` runs the scrubbing core on one captured
 * request offline — the same code the proxy runs — so rules can be tried on real
 * captures before they guard real traffic. Findings go to stderr with values masked.
 * `anonctl optout …` is a writer of the opt-out table (optout.h); it never prints a user
 * id, only the key the table stores. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "optout.h"
#include "scrub.h"

#define MAX_HEADERS 64

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: anonctl scrub -c CONFIG --route PATH[?QUERY] [--host HOST]\n"
	        "                     [-H 'Header: value']... < body > scrubbed-body\n"
	        "       anonctl check -c CONFIG\n"
	        "       anonctl optout [--shm NAME] [--dir DIR] [--capacity N] COMMAND\n"
	        "               (COMMAND: add, remove, check, import, export, stats, compact,\n"
	        "                unlink; `anonctl optout --help` for details)\n"
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
	static const char *const where[] = {"body", "query", "header", "path"};
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

	/* The path, the query and the headers first, as the proxy does, then the body. */
	if (ap_scrub_path(&sc, path, &out, &changed) != AP_OK)
		goto refused_400;
	if (changed)
		fprintf(stderr, "path: %.*s\n", (int)out.len, out.p);
	ap_buf_clear(&out);
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

/* ---- anonctl optout ---- */

static void optout_usage(FILE *f)
{
	fprintf(f,
	        "usage: anonctl optout [--shm NAME] [--dir DIR] [--capacity N] COMMAND\n"
	        "\n"
	        "  add USER --scope S[,S...]     opt the user out of these scopes (added to the\n"
	        "                                ones the user has)\n"
	        "  remove USER [--scope S,...]   withdraw the opt-out (only these scopes if "
	        "given)\n"
	        "  check USER                    print the user's scopes; exit 0 if opted out, 1 "
	        "if\n"
	        "                                not\n"
	        "  import FILE.csv [--skip-bad]  set many users at once (FILE - reads stdin)\n"
	        "  export [FILE]                 write key,scopes,time CSV (stdout by default)\n"
	        "  stats                         entries, tombstones, capacity, load, journal\n"
	        "  compact                       snapshot the journal and drop tombstones\n"
	        "  unlink                        remove the shared memory (the next writer\n"
	        "                                rebuilds it from --dir)\n"
	        "  --read-only                   (check, export, stats) read the shared memory\n"
	        "                                only: no lock, no journal\n"
	        "\n"
	        "Scopes: analytics, personalization, push, location, minor, all.\n"
	        "USER - reads the id from the first line of stdin (keeps it out of ps and the\n"
	        "shell history). Ids are hashed (XXH3-128, the table's seed); the tool prints\n"
	        "only that key.\n"
	        "Import lines are \"user,scope1|scope2\" (split at the last comma; a header line\n"
	        "\"user,scopes\" is skipped) — or an export (\"# seed\" line, then a\n"
	        "\"key,scopes,time\" header), which restores keys and times as they were (into a\n"
	        "table with the same seed, or an empty one, which takes it). Bad lines are\n"
	        "reported by number; nothing is imported unless --skip-bad.\n"
	        "\n"
	        "--shm NAME      shared-memory segment (default %s)\n"
	        "--dir DIR       journal, snapshot and lock (default %s;\n"
	        "                for development: --dir ./optout)\n"
	        "--capacity N    most users; 0 or absent keeps the table's (new tables: %u)\n"
	        "Exit: 0 done (check: opted out), 1 not found / bad lines, 2 error.\n",
	        AP_OPTOUT_DEFAULT_SHM, AP_OPTOUT_DEFAULT_DIR, AP_OPTOUT_DEFAULT_CAPACITY);
}

/* The user id argument: itself, or the first line of stdin for "-". Into *b. */
static int user_arg(const char *arg, struct ap_buf *b)
{
	ap_buf_clear(b);
	if (strcmp(arg, "-") != 0)
		return ap_buf_add(b, arg, strlen(arg));
	for (int c; (c = getchar()) != EOF && c != '\n';)
		if (ap_buf_addc(b, (char)c) != AP_OK)
			return AP_ERR;
	if (b->len && b->p[b->len - 1] == '\r')
		b->len--;
	return b->len ? AP_OK : AP_ERR;
}

static void time_str(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, n, "%lld", (long long)t);
}

struct import_stats {
	size_t lines, users, bad;
	bool keys;     /* an export: keys, not user ids */
	bool has_seed; /* its "# seed" line */
	uint64_t seed;
};

/* One import line, split: the user (or key) and its scopes and time. Returns NULL when
 * good, else a reason that never quotes the line. */
static const char *import_line(struct ap_span line, bool keys, struct ap_optout_key *k,
                               struct ap_span *user, unsigned *scopes, int64_t *when)
{
	const char *c1, *c2;

	if (keys) {
		char num[24], *end;
		struct ap_span ts;

		if (!(c1 = memchr(line.p, ',', line.n)) ||
		    !(c2 = memchr(c1 + 1, ',', line.n - (size_t)(c1 + 1 - line.p))))
			return "expected key,scopes,time";
		if (ap_optout_key_parse(
		            ap_span_trim((struct ap_span){line.p, (size_t)(c1 - line.p)}), k) !=
		    AP_OK)
			return "bad key (32 hex digits)";
		if (ap_optout_scopes_parse((struct ap_span){c1 + 1, (size_t)(c2 - c1 - 1)}, '|',
		                           scopes) != AP_OK)
			return "unknown or empty scope";
		ts = ap_span_trim((struct ap_span){c2 + 1, line.n - (size_t)(c2 + 1 - line.p)});
		if (ts.n == 0 || ts.n >= sizeof(num))
			return "bad time";
		memcpy(num, ts.p, ts.n);
		num[ts.n] = 0;
		errno = 0;
		*when = strtoll(num, &end, 10);
		if (errno || *end || *when < 0)
			return "bad time";
		return NULL;
	}
	for (c1 = line.p + line.n; c1 > line.p && c1[-1] != ',';)
		c1--;
	if (c1 == line.p)
		return "expected user,scope1|scope2";
	*user = (struct ap_span){line.p, (size_t)(c1 - 1 - line.p)};
	if (user->n == 0)
		return "empty user id";
	if (ap_optout_scopes_parse((struct ap_span){c1, line.n - (size_t)(c1 - line.p)}, '|',
	                           scopes) != AP_OK)
		return "unknown or empty scope";
	return NULL;
}

/* Runs over the lines of <in>: checks them all (apply false) or stages them (apply true). */
static int import_pass(struct ap_optout *t, struct ap_span in, bool apply, struct import_stats *s,
                       char *err)
{
	const char *p = in.p, *end = in.p + in.n;
	bool first = true;
	int64_t now = (int64_t)time(NULL);

	memset(s, 0, sizeof(*s));
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		struct ap_span line = {p, nl ? (size_t)(nl - p) : (size_t)(end - p)};
		struct ap_optout_key k;
		struct ap_span user = {NULL, 0};
		unsigned scopes;
		int64_t when = now;
		const char *why;

		p = nl ? nl + 1 : end;
		s->lines++;
		if (line.n && line.p[line.n - 1] == '\r')
			line.n--;
		if (ap_span_trim(line).n == 0)
			continue;
		if (first && !s->has_seed && line.n == 7 + 16 &&
		    memcmp(line.p, "# seed ", 7) == 0) {
			struct ap_optout_key sk;
			char hex[32];
			memset(hex, '0', 16);
			memcpy(hex + 16, line.p + 7, 16);
			if (ap_optout_key_parse((struct ap_span){hex, 32}, &sk) == AP_OK) {
				s->has_seed = true;
				s->seed = sk.lo;
				continue;
			}
		}
		if (first) {
			struct ap_span h = ap_span_trim(line);
			first = false;
			if (ap_span_ieq(h, "key,scopes,time")) {
				s->keys = true;
				continue;
			}
			if (ap_span_ieq(h, "user,scopes") || ap_span_ieq(h, "user,scope"))
				continue;
		}
		why = import_line(line, s->keys, &k, &user, &scopes, &when);
		if (why) {
			s->bad++;
			if (!apply && s->bad <= 20)
				fprintf(stderr, "anonctl: line %zu: %s\n", s->lines, why);
			continue;
		}
		s->users++;
		if (!apply)
			continue;
		if ((s->keys ? ap_optout_stage_key(t, k, scopes, when, err)
		             : ap_optout_stage(t, user.p, user.n, scopes, when, err)) != AP_OK)
			return AP_ERR;
	}
	if (!apply && s->bad > 20)
		fprintf(stderr, "anonctl: … and %zu more bad lines\n", s->bad - 20);
	return apply ? ap_optout_commit(t, err) : AP_OK;
}

static int optout_import(struct ap_optout *t, const char *file, bool skip_bad)
{
	char err[AP_OPTOUT_ERR_MAX];
	struct ap_buf in = {0};
	struct import_stats s;
	struct timespec t0, t1;
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
	int rc;

	if (!f) {
		fprintf(stderr, "anonctl: cannot open %s: %s\n", file, strerror(errno));
		return 2;
	}
	rc = read_all(f, &in);
	if (f != stdin)
		fclose(f);
	if (rc != AP_OK) {
		fprintf(stderr, "anonctl: cannot read %s\n", file);
		ap_buf_free(&in);
		return 2;
	}
	import_pass(t, ap_buf_span(&in), false, &s, err);
	if (s.bad && !skip_bad) {
		fprintf(stderr,
		        "anonctl: %zu bad line%s in %s: nothing imported (fix them, or use "
		        "--skip-bad)\n",
		        s.bad, s.bad == 1 ? "" : "s", file);
		ap_buf_free(&in);
		return 1;
	}
	if (s.keys && !s.has_seed) {
		fprintf(stderr,
		        "anonctl: %s has keys but no \"# seed\" line: keys mean users only "
		        "under the seed they were made with\n",
		        file);
		ap_buf_free(&in);
		return 2;
	}
	if (s.keys && s.seed != ap_optout_seed(t) &&
	    ap_optout_adopt_seed(t, s.seed, err) != AP_OK) {
		fprintf(stderr,
		        "anonctl: %s was exported from a table with another seed, so its keys "
		        "would "
		        "match no user here, and this table cannot take that seed: %s\n",
		        file, err);
		ap_buf_free(&in);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = import_pass(t, ap_buf_span(&in), true, &s, err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ap_buf_free(&in);
	if (rc != AP_OK) {
		fprintf(stderr,
		        "anonctl: %s\n"
		        "anonctl: batches of %u before the failing one were imported\n",
		        err, AP_OPTOUT_BATCH);
		return 2;
	}
	printf("imported %zu users from %zu lines in %.2f s%s\n", s.users, s.lines,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	       s.bad ? " (bad lines skipped)" : "");
	return s.bad ? 1 : 0;
}

static int export_cb(void *arg, const struct ap_optout_entry *e)
{
	char hex[33], sc[96];

	ap_optout_key_hex(e->key, hex);
	ap_optout_scopes_format(e->scopes, '|', sc, sizeof(sc));
	return fprintf(arg, "%s,%s,%lld\n", hex, sc, (long long)e->time) < 0;
}

static int optout_export(struct ap_optout *t, const char *file)
{
	FILE *f = file ? fopen(file, "w") : stdout;
	static char buf[1 << 16];

	if (!f) {
		fprintf(stderr, "anonctl: cannot create %s: %s\n", file, strerror(errno));
		return 2;
	}
	setvbuf(f, buf, _IOFBF, sizeof(buf));
	fprintf(f, "# seed %016llx\nkey,scopes,time\n", (unsigned long long)ap_optout_seed(t));
	if (ap_optout_iterate(t, export_cb, f) != 0 || fflush(f) != 0 || ferror(f)) {
		fprintf(stderr, "anonctl: cannot write the export: %s\n", strerror(errno));
		if (file)
			fclose(f);
		return 2;
	}
	if (file && fclose(f) != 0) {
		fprintf(stderr, "anonctl: cannot write %s: %s\n", file, strerror(errno));
		return 2;
	}
	return 0;
}

static void optout_stats(struct ap_optout *t, const struct ap_optout_opts *o, bool ro)
{
	struct ap_optout_stats s;

	ap_optout_stats(t, &s);
	printf("segment      %s (%.1f MiB, %zu slots of 32 bytes)\n", o->shm,
	       (double)s.bytes / 1048576.0, s.slots);
	printf("entries      %zu of capacity %zu\n", s.entries, s.capacity);
	printf("tombstones   %zu\n", s.tombstones);
	printf("load         %.3f (entries / slots)\n", s.load);
	printf("generation   %llu\n", (unsigned long long)s.gen);
	if (ro)
		printf("journal      not read (--read-only)\n");
	else
		printf("journal      %s/optout.journal: %llu records after the snapshot at seq "
		       "%llu\n",
		       o->dir, (unsigned long long)s.journal_records,
		       (unsigned long long)s.snapshot_seq);
}

static int cmd_optout(int argc, char **argv)
{
	struct ap_optout_opts o = {AP_OPTOUT_DEFAULT_SHM, AP_OPTOUT_DEFAULT_DIR, 0, false};
	const char *pos[3] = {NULL, NULL, NULL}, *scope_arg = NULL;
	char err[AP_OPTOUT_ERR_MAX], hex[33], sc[96], when[40];
	struct ap_buf user = {0};
	struct ap_optout *t;
	struct ap_optout_key k = {0, 0};
	unsigned scopes = 0, have = 0;
	bool skip_bad = false, ro = false;
	int npos = 0, rc = 0;
	size_t noticed;
	int64_t tm = 0, now = (int64_t)time(NULL);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			optout_usage(stdout);
			return 0;
		} else if (strcmp(a, "--shm") == 0 && v) {
			o.shm = argv[++i];
		} else if (strcmp(a, "--dir") == 0 && v) {
			o.dir = argv[++i];
		} else if (strcmp(a, "--capacity") == 0 && v) {
			char *end;
			errno = 0;
			unsigned long long c = strtoull(v, &end, 10);
			if (errno || *end || !*v || v[0] == '-' || c > AP_OPTOUT_MAX_CAPACITY) {
				fprintf(stderr, "anonctl: --capacity takes 0..%u\n",
				        AP_OPTOUT_MAX_CAPACITY);
				return 2;
			}
			o.capacity = (size_t)c;
			i++;
		} else if (strcmp(a, "--scope") == 0 && v) {
			scope_arg = argv[++i];
			if (ap_optout_scopes_parse((struct ap_span){v, strlen(v)}, ',', &have) !=
			    AP_OK) {
				fprintf(stderr, "anonctl: --scope takes names separated by commas: "
				                "analytics, "
				                "personalization, push, location, minor, all\n");
				return 2;
			}
			scopes |= have;
		} else if (strcmp(a, "--skip-bad") == 0) {
			skip_bad = true;
		} else if (strcmp(a, "--read-only") == 0) {
			ro = true;
		} else if (a[0] == '-' && a[1] == '-') {
			optout_usage(stderr);
			return 2;
		} else if (npos < 3) {
			pos[npos++] = a;
		} else {
			optout_usage(stderr);
			return 2;
		}
	}
	const char *cmd = pos[0];
	bool one_user = cmd && (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0 ||
	                        strcmp(cmd, "check") == 0);
	if (!cmd || (one_user && npos != 2) || (strcmp(cmd, "add") == 0 && !scope_arg) ||
	    (strcmp(cmd, "import") == 0 && npos != 2) || (strcmp(cmd, "export") == 0 && npos > 2) ||
	    ((strcmp(cmd, "stats") == 0 || strcmp(cmd, "compact") == 0 ||
	      strcmp(cmd, "unlink") == 0) &&
	     npos != 1) ||
	    (!one_user && strcmp(cmd, "import") && strcmp(cmd, "export") && strcmp(cmd, "stats") &&
	     strcmp(cmd, "compact") && strcmp(cmd, "unlink"))) {
		optout_usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "unlink") == 0) {
		if (ap_optout_unlink(o.shm, err) != AP_OK) {
			fprintf(stderr, "anonctl: %s\n", err);
			return 2;
		}
		printf("removed shared memory %s (mappings stay valid until unmapped)\n", o.shm);
		return 0;
	}
	if (ro && strcmp(cmd, "check") && strcmp(cmd, "export") && strcmp(cmd, "stats")) {
		fprintf(stderr, "anonctl: --read-only is for check, export and stats\n");
		return 2;
	}
	if (one_user && user_arg(pos[1], &user) != AP_OK) {
		fprintf(stderr, "anonctl: no user id (an empty line on stdin?)\n");
		return 2;
	}
	if (!(t = ro ? ap_optout_open_reader(o.shm, err) : ap_optout_open(&o, err))) {
		fprintf(stderr, "anonctl: %s\n", err);
		if (strstr(err, AP_OPTOUT_DEFAULT_DIR))
			fprintf(stderr, "anonctl: for development, add --dir ./optout\n");
		ap_buf_free(&user);
		return 2;
	}
	if ((noticed = strlen(ap_optout_notice(t))))
		fprintf(stderr, "anonctl: note: %s\n", ap_optout_notice(t));
	if (one_user) {
		k = ap_optout_key(t, user.p, user.len);
		ap_optout_key_hex(k, hex);
		have = ap_optout_lookup_key(t, k, &tm);
	}
	if (strcmp(cmd, "add") == 0) {
		if (ap_optout_set_key(t, k, have | scopes, now, err) != AP_OK) {
			fprintf(stderr, "anonctl: %s\n", err);
			rc = 2;
		} else {
			ap_optout_scopes_format(have | scopes, ',', sc, sizeof(sc));
			printf("opted out of %s (key %s)\n", sc, hex);
		}
	} else if (strcmp(cmd, "remove") == 0) {
		unsigned left = scope_arg ? have & ~scopes : 0;
		if (!have) {
			printf("not opted out (key %s)\n", hex);
			rc = 1;
		} else if (ap_optout_set_key(t, k, left, now, err) != AP_OK) {
			fprintf(stderr, "anonctl: %s\n", err);
			rc = 2;
		} else if (left) {
			ap_optout_scopes_format(left, ',', sc, sizeof(sc));
			printf("still opted out of %s (key %s)\n", sc, hex);
		} else {
			printf("removed (key %s)\n", hex);
		}
	} else if (strcmp(cmd, "check") == 0) {
		if (!have) {
			printf("not opted out (key %s)\n", hex);
			rc = 1;
		} else {
			ap_optout_scopes_format(have, ',', sc, sizeof(sc));
			time_str(tm, when, sizeof(when));
			printf("%s (since %s, key %s)\n", sc, when, hex);
		}
	} else if (strcmp(cmd, "import") == 0) {
		rc = optout_import(t, pos[1], skip_bad);
	} else if (strcmp(cmd, "export") == 0) {
		rc = optout_export(t, pos[1]);
	} else if (strcmp(cmd, "stats") == 0) {
		optout_stats(t, &o, ro);
	} else if (ap_optout_snapshot(t, err) != AP_OK || ap_optout_compact(t, err) != AP_OK) {
		fprintf(stderr, "anonctl: %s\n", err);
		rc = 2;
	} else {
		optout_stats(t, &o, false);
	}
	/* a commit may add a notice (a snapshot after it failed) */
	if (strlen(ap_optout_notice(t)) > noticed)
		fprintf(stderr, "anonctl: note: %s\n", ap_optout_notice(t) + noticed);
	ap_optout_close(t);
	ap_buf_free(&user);
	return rc;
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
	if (argc > 1 && strcmp(argv[1], "optout") == 0)
		return cmd_optout(argc - 1, argv + 1);
	usage(stderr);
	return 2;
}
