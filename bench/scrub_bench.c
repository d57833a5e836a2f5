/* scrub_bench: the single-pass scrubber against a jansson load → walk → dump
 * implementation of the same rules, in the same process, on the same payloads: a 1 KB
 * event and a 16 KB batch of 20 events from one device. Both paths hash through the same
 * HMAC code and per-request memo, so the ratio measures the scanning approach. Rounds of
 * the two alternate so machine noise falls on both; the median round is reported. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "detect.h"
#include "scrub.h"

#include "events.h"

static const char *CONF_FMT =
        "{\"keys\": {\"active\": \"b\", \"files\": {\"b\": \"%s\"}},"
        " \"rulesets\": {\"r\": {%s"
        "  \"classes\": {\"imei\": \"hash\", \"imsi\": \"hash\", \"mac\": \"hash\", \"oaid\": "
        "\"hash\","
        "               \"android_id\": \"hash\", \"idfa\": \"hash\"},"
        "  \"fields\": ["
        "   {\"class\": \"imei\", \"keys\": [\"imei\", \"imei2\"]},"
        "   {\"class\": \"imsi\", \"keys\": [\"imsi\"]},"
        "   {\"class\": \"mac\", \"keys\": [\"mac\", \"wifi_mac\"]},"
        "   {\"class\": \"oaid\", \"keys\": [\"oaid\"]},"
        "   {\"class\": \"android_id\", \"keys\": [\"android_id\"]},"
        "   {\"class\": \"idfa\", \"keys\": [\"idfa\"]}]}},"
        " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": \"r\"}]}";

/* ---- the jansson path: the same rules on a DOM ---- */

static void walk(struct ap_scrub *sc, json_t *v, const struct ap_field *rule);

static void scalar(struct ap_scrub *sc, json_t *parent, const char *key, size_t idx, json_t *v,
                   const struct ap_field *rule)
{
	const struct ap_action *act = NULL;
	struct ap_buf *rep = &sc->lv[0].rep;
	const char *s;
	size_t n;
	bool num;
	char tmp[32];

	if (json_is_string(v)) {
		s = json_string_value(v);
		n = json_string_length(v);
	} else if (json_is_integer(v)) {
		n = (size_t)snprintf(tmp, sizeof(tmp), "%lld", (long long)json_integer_value(v));
		s = tmp;
	} else
		return;
	if (rule) {
		act = &rule->act;
	} else if (!(act = ap_scrub_detect(sc, s, n, json_is_integer(v)))) {
		bool ch = false;
		/* words in text, when the ruleset asks (the same function as the scanner's) */
		ap_buf_clear(rep);
		if (json_is_string(v) && ap_scrub_text(sc, s, n, rep, &ch) == AP_OK && ch) {
			json_t *nv = json_stringn(rep->p, rep->len);
			if (key)
				json_object_set_new(parent, key, nv);
			else
				json_array_set_new(parent, idx, nv);
		}
		return;
	}
	if (act->act == AP_ACT_KEEP)
		return;
	ap_buf_clear(rep);
	if (act->act == AP_ACT_DROP)
		return; /* the benchmark's rules hash only */
	ap_scrub_apply(sc, act, s, n, json_is_integer(v), rule == NULL, rep, &num);
	json_t *nv = json_stringn(rep->p, rep->len);
	if (key)
		json_object_set_new(parent, key, nv);
	else
		json_array_set_new(parent, idx, nv);
}

static void walk(struct ap_scrub *sc, json_t *v, const struct ap_field *rule)
{
	if (json_is_object(v)) {
		const char *k;
		json_t *c;
		void *tmp;
		json_object_foreach_safe(v, tmp, k, c)
		{
			const struct ap_field *f = ap_rules_key(sc->rs, k, strlen(k));
			if (!f)
				f = rule;
			if (json_is_object(c) || json_is_array(c))
				walk(sc, c, f);
			else
				scalar(sc, v, k, 0, c, f);
		}
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++) {
			json_t *c = json_array_get(v, i);
			if (json_is_object(c) || json_is_array(c))
				walk(sc, c, rule);
			else
				scalar(sc, v, NULL, i, c, rule);
		}
	}
}

static size_t jansson_scrub(struct ap_scrub *sc, const char *in, size_t n)
{
	json_t *root = json_loadb(in, n, 0, NULL);
	char *out;
	size_t len;

	if (!root) {
		fprintf(stderr, "scrub_bench: jansson refused the payload\n");
		exit(1);
	}
	walk(sc, root, NULL);
	out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	len = strlen(out);
	free(out);
	json_decref(root);
	return len;
}

/* ---- timing ---- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct result {
	double ns_doc; /* median over rounds */
	size_t out_len;
};

#define ROUNDS 15

static void run(struct ap_scrub *sc, const struct ap_ruleset *rs, const char *in, size_t n,
                double round_s, struct result *ours, struct result *jans)
{
	double t_ours[ROUNDS], t_jans[ROUNDS];
	struct ap_buf out = {0};

	for (int r = 0; r < ROUNDS; r++) {
		for (int which = 0; which < 2; which++) {
			unsigned long iters = 0;
			double t0 = now(), t;
			do {
				for (int k = 0; k < 16; k++) {
					bool changed;
					ap_scrub_begin(sc, rs, 64, 8u << 20);
					/* Every request from a device not seen before: the
					 * per-request memo works, the cache across requests
					 * does not (the proxy's figures include it). */
					ap_scrub_cache_flush(sc);
					if (which == 0) {
						ap_buf_clear(&out);
						if (ap_scrub_json(sc, (struct ap_span){in, n}, &out,
						                  &changed) != AP_OK) {
							fprintf(stderr,
							        "scrub_bench: refused: %s\n",
							        sc->why);
							exit(1);
						}
						ours->out_len = changed ? out.len : n;
					} else
						jans->out_len = jansson_scrub(sc, in, n);
				}
				iters += 16;
				t = now() - t0;
			} while (t < round_s);
			(which == 0 ? t_ours : t_jans)[r] = t * 1e9 / (double)iters;
		}
	}
	qsort(t_ours, ROUNDS, sizeof(double), cmp_d);
	qsort(t_jans, ROUNDS, sizeof(double), cmp_d);
	ours->ns_doc = t_ours[ROUNDS / 2];
	jans->ns_doc = t_jans[ROUNDS / 2];
	ap_buf_free(&out);
}

static void report(const char *name, size_t n, unsigned events, const struct result *o,
                   const struct result *j)
{
	printf("| %-28s | %6zu | %9.0f | %8.0f | %9.0f | %8.0f | %6.1fx |\n", name, n,
	       (double)n / o->ns_doc * 1e3, o->ns_doc / events, (double)n / j->ns_doc * 1e3,
	       j->ns_doc / events, j->ns_doc / o->ns_doc);
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/scrub_bench.XXXXXX", key[64], conf_text[4096], err[AP_CONF_ERR_MAX];
	unsigned char secret[32];
	double round_s = argc > 1 ? atof(argv[1]) : 0.05;
	char one[2048];
	size_t one_n, batch_n;
	char *batch;
	FILE *f;

	if (!mkdtemp(dir))
		return 1;
	snprintf(key, sizeof(key), "%s/bench.key", dir);
	for (int i = 0; i < 32; i++)
		secret[i] = (unsigned char)(i * 97 + 5);
	f = fopen(key, "wb");
	if (!f || fwrite(secret, 1, 32, f) != 32)
		return 1;
	fclose(f);
	chmod(key, 0600);

	one_n = (size_t)event(one, sizeof(one), 1, true);
	batch = build_batch(20, &batch_n);
	if (argc > 2 && strcmp(argv[2], "profile") == 0) {
		/* A fixed count of batch scrubs and nothing else, for callgrind and perf:
		 * scrub_bench 0 profile [detect] */
		struct ap_conf *c;
		struct ap_scrub sc;
		struct ap_buf o = {0};
		bool ch;

		snprintf(conf_text, sizeof(conf_text), CONF_FMT, key,
		         argc > 3 ? "\"detect\": [\"imei\", \"imsi\", \"mac\", \"uuid\", \"ip\"],"
		                  : "");
		if (!(c = ap_conf_parse(conf_text, strlen(conf_text), dir, err)) ||
		    ap_scrub_init(&sc, &c->keys.keys[0]) != AP_OK)
			return 1;
		for (int i = 0; i < 1000; i++) {
			ap_scrub_begin(&sc, &c->rulesets[0], 64, 8u << 20);
			ap_scrub_cache_flush(&sc);
			ap_buf_clear(&o);
			if (ap_scrub_json(&sc, (struct ap_span){batch, batch_n}, &o, &ch) != AP_OK)
				return 1;
		}
		printf("profile: 1000 batches scrubbed\n");
		return 0;
	}
	printf("scrub_bench: %zu-byte event, %zu-byte batch of 20 events; rules hash imei, imsi, "
	       "mac, oaid, android_id, idfa (HMAC-SHA256, hex); median of %d alternating rounds "
	       "of %.0f ms\n\n",
	       one_n, batch_n, ROUNDS, round_s * 1e3);
	printf("| %-28s | %6s | %9s | %8s | %9s | %8s | %7s |\n", "payload, rules", "bytes",
	       "ours MB/s", "ns/event", "jansson MB/s", "ns/event", "ratio");
	printf("|%s|%s|%s|%s|%s|%s|%s|\n", "------------------------------", "--------",
	       "-----------", "----------", "-----------", "----------", "---------");
	static const char *const names[3][2] = {
	        {"1 KB event, keys", "16 KB batch, keys"},
	        {"1 KB event, keys+detectors", "16 KB batch, keys+detectors"},
	        {"1 KB event, +detect_in_text", "16 KB batch, +detect_in_text"},
	};
	for (int det = 0; det < 3; det++) {
		struct ap_conf *c;
		struct ap_scrub sc;
		struct result o, j;

		snprintf(conf_text, sizeof(conf_text), CONF_FMT, key,
		         det == 2 ? "\"detect_in_text\": true, \"detect\": [\"imei\", \"imsi\", "
		                    "\"mac\", \"uuid\", \"ip\", \"phone\"],"
		         : det    ? "\"detect\": [\"imei\", \"imsi\", \"mac\", \"uuid\", \"ip\", "
		                    "\"phone\"],"
		                  : "");
		if (!(c = ap_conf_parse(conf_text, strlen(conf_text), dir, err))) {
			fprintf(stderr, "scrub_bench: %s\n", err);
			return 1;
		}
		if (ap_scrub_init(&sc, &c->keys.keys[0]) != AP_OK)
			return 1;
		run(&sc, &c->rulesets[0], one, one_n, round_s, &o, &j);
		report(names[det][0], one_n, 1, &o, &j);
		run(&sc, &c->rulesets[0], batch, batch_n, round_s, &o, &j);
		report(names[det][1], batch_n, 20, &o, &j);
		ap_scrub_free(&sc);
		ap_conf_free(c);
	}
	unlink(key);
	rmdir(dir);
	free(batch);
	return 0;
}
