/* Fuzzes conf.c with configuration text. Relative file names resolve to a temporary
 * directory holding a valid key, "k.key" (and a world-readable one, "open.key", which must
 * be refused). Invariants, each an abort(): ap_conf_parse never crashes or leaks; a refusal
 * comes with a non-empty, terminated message that never holds the key's bytes; an accepted
 * configuration is whole (an active key, every route with an upstream and a ruleset,
 * limits in range, codec chains ending in a document format) and every ruleset it holds
 * scrubs a fixed JSON document into valid JSON, a form, and the address headers. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SECRET[] = "K3y-Bytes-That-Must-Never-Show-Up";
static char dir[64], keyfile[96], openfile[96];
static struct ap_buf out;

static void cleanup(void)
{
	ap_buf_free(&out);
	unlink(keyfile);
	unlink(openfile);
	rmdir(dir);
}

static void put_key(const char *path, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	if (fd < 0 || write(fd, SECRET, sizeof(SECRET) - 1) != (ssize_t)(sizeof(SECRET) - 1))
		abort();
	fchmod(fd, mode);
	close(fd);
}

static void init(void)
{
	strcpy(dir, "/tmp/conf_fuzz.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(keyfile, sizeof(keyfile), "%s/k.key", dir);
	snprintf(openfile, sizeof(openfile), "%s/open.key", dir);
	put_key(keyfile, 0600);
	put_key(openfile, 0644);
	atexit(cleanup);
}

static void fail(const char *what, const uint8_t *d, size_t n, const char *err)
{
	fprintf(stderr, "conf_fuzz: %s\ninput (%zu bytes): %.*s\nerror: %s\n", what, n, (int)n,
	        (const char *)d, err ? err : "-");
	abort();
}

/* The compiled configuration is whole. */
static void check_conf(const struct ap_conf *c, const uint8_t *d, size_t n)
{
	if (c->keys.nkeys < 1 || c->keys.nkeys > AP_KEYS_MAX || c->keys.active < 0 ||
	    c->keys.active >= c->keys.nkeys)
		fail("no valid active key", d, n, NULL);
	if (c->nrulesets < 1 || c->nroutes < 1 || c->nlisten < 1)
		fail("no ruleset, route or listener", d, n, NULL);
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct ap_route *r = &c->routes[i];
		if (!r->upstream || !r->ruleset || !r->path || r->path[0] != '/' ||
		    r->path_len != strlen(r->path) || r->unknown > AP_UNKNOWN_SCAN)
			fail("an incomplete route", d, n, NULL);
	}
	if (c->limits.json_depth < 2 || c->limits.json_depth > AP_DEPTH_LIMIT ||
	    c->limits.decoded_bytes < 1024)
		fail("a limit out of range", d, n, NULL);
	for (size_t i = 0; i < c->nrulesets; i++) {
		const struct ap_ruleset *rs = &c->rulesets[i];
		if (!rs->name || ap_conf_ruleset(c, rs->name) != rs)
			fail("a ruleset not found by its name", d, n, NULL);
		for (unsigned f = 0; f < rs->nfields; f++) {
			const struct ap_field *fl = &rs->fields[f];
			uint8_t last;
			if (fl->act.act == AP_ACT_NONE && fl->ncodec == 0)
				fail("a field with neither an action nor a codec", d, n, NULL);
			if (fl->act.act >= AP_ACT_MAX || fl->act.cls >= AP_CLASS_MAX ||
			    fl->ncodec > AP_CODEC_MAX)
				fail("a field out of range", d, n, NULL);
			if (!fl->ncodec)
				continue;
			last = fl->codec[fl->ncodec - 1];
			if (!ap_codec_terminal(last))
				fail("a codec chain not ending in a document", d, n, NULL);
			if (last == AP_CODEC_PROTOBUF && fl->pb_root >= rs->npb)
				fail("a protobuf codec without its schema", d, n, NULL);
			if (last == AP_CODEC_PAIRS && (!fl->sep_len || !fl->eq_len))
				fail("a pairs codec without its separators", d, n, NULL);
		}
		for (unsigned p = 0; p < rs->npaths; p++)
			if (rs->paths[p].field >= rs->nfields ||
			    rs->paths[p].nseg > AP_PATH_SEGS_MAX)
				fail("a path rule out of range", d, n, NULL);
		for (unsigned h = 0; h < rs->nheaders; h++)
			if (rs->headers[h].field >= rs->nfields)
				fail("a header rule out of range", d, n, NULL);
	}
}

/* Every ruleset at work on fixed inputs: it may refuse them (a codec on a key the
 * document holds), but what it accepts must be well-formed. */
static void exercise(const struct ap_conf *c, const uint8_t *d, size_t n)
{
	static const char doc[] =
	        "{\"imei\":\"356938035643809\",\"events\":[{\"props\":{\"id\":\"x\",\"mac\":"
	        "\"aa:bb:cc:dd:ee:ff\"}}],\"a\":{\"b\":[1,2.5,\"203.0.113.7\",null]},\"inner\":"
	        "\"{\\\"imei\\\":1}\",\"lat\":48.8566,\"phone\":\"+8613800138000\"}";
	static const char form[] = "imei=356938035643809&mac=aa%3Abb&x=1&&q";
	struct ap_scrub sc;

	if (ap_scrub_init(&sc, &c->keys.keys[c->keys.active]) != AP_OK)
		abort();
	/* the named rulesets, then those compiled for routes with a profile */
	for (size_t i = 0; i < c->nrulesets + c->nextra; i++) {
		const struct ap_ruleset *rs =
		        i < c->nrulesets ? &c->rulesets[i] : c->extra[i - c->nrulesets];
		const struct ap_field *xff;
		bool changed, drop;
		json_t *j;

		ap_scrub_begin(&sc, rs, (unsigned)c->limits.json_depth, c->limits.decoded_bytes);
		ap_buf_clear(&out);
		if (ap_scrub_json(&sc, AP_SPAN(doc), &out, &changed) == AP_OK) {
			struct ap_span r = changed ? ap_buf_span(&out) : AP_SPAN(doc);
			j = json_loadb(r.p, r.n, JSON_DECODE_ANY, NULL);
			if (!j)
				fail("a ruleset wrote invalid JSON", d, n, NULL);
			json_decref(j);
		} else if (!sc.why)
			fail("a refusal without a reason", d, n, NULL);
		ap_buf_clear(&out);
		(void)ap_scrub_form(&sc, AP_SPAN(form), &out, &changed);
		ap_buf_clear(&out);
		(void)ap_scrub_query(&sc, AP_SPAN(form), &out, &changed);
		ap_buf_clear(&out);
		xff = ap_rules_header(rs, "X-Forwarded-For", 15);
		if (ap_scrub_header(&sc, AP_SPAN("X-Forwarded-For"), AP_SPAN("203.0.113.7, ::1"),
		                    &out, &drop, &changed) == AP_OK &&
		    !drop && !changed && (!xff || (xff->act.act != AP_ACT_KEEP && !xff->ncodec)))
			fail("X-Forwarded-For went on as it came", d, n, NULL);
		ap_buf_clear(&out);
		(void)ap_scrub_header(&sc, AP_SPAN("Forwarded"),
		                      AP_SPAN("for=192.0.2.60;by=unknown"), &out, &drop, &changed);
	}
	ap_scrub_free(&sc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[AP_CONF_ERR_MAX + 1];
	char *text = malloc(size ? size : 1);
	struct ap_conf *c;

	if (!dir[0])
		init();
	if (!text)
		abort();
	if (size)
		memcpy(text, data, size);
	memset(err, 'x', sizeof(err));
	err[AP_CONF_ERR_MAX] = 0; /* a canary past the documented size */
	c = ap_conf_parse(text, size, dir, err);
	if (err[AP_CONF_ERR_MAX] != 0)
		fail("the message overran its buffer", data, size, NULL);
	if (!c) {
		if (!memchr(err, 0, AP_CONF_ERR_MAX))
			fail("the message is not terminated", data, size, NULL);
		if (err[0] == 0)
			fail("refused without a message", data, size, err);
		/* (unless the text itself spelled it: messages name the bad key) */
		if ((strstr(err, SECRET) || strstr(err, "K3y-Bytes")) &&
		    !memmem(data, size, "K3y-Bytes", 9))
			fail("the message shows the key", data, size, err);
	} else {
		check_conf(c, data, size);
		exercise(c, data, size);
		ap_conf_free(c);
	}
	free(text);
	return 0;
}
