/* See testutil.h. Criterion runs each test in its own process, so the static state here
 * is per test. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testutil.h"

static char tmpdir[64];

static void make_key(char *path, size_t cap)
{
	unsigned char k[32];
	int fd;

	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/aptest.XXXXXX");
		cr_assert_not_null(mkdtemp(tmpdir));
	}
	snprintf(path, cap, "%s/test.key", tmpdir);
	for (int i = 0; i < 32; i++)
		k[i] = (unsigned char)(i * 37 + 11);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, k, sizeof(k)), (ssize_t)sizeof(k));
	close(fd);
}

struct ap_conf *tu_conf(const char *json)
{
	char key[128], err[AP_CONF_ERR_MAX], *text;
	const char *at;
	struct ap_conf *c;
	size_t n;

	make_key(key, sizeof(key));
	at = strstr(json, "@KEY@");
	n = strlen(json) + strlen(key) + 1;
	text = malloc(n);
	cr_assert_not_null(text);
	if (at)
		snprintf(text, n, "%.*s%s%s", (int)(at - json), json, key, at + 5);
	else
		snprintf(text, n, "%s", json);
	c = ap_conf_parse(text, strlen(text), tmpdir, err);
	free(text);
	cr_assert_not_null(c, "configuration refused: %s", err);
	return c;
}

struct ap_conf *tu_conf_ruleset(const char *ruleset_json)
{
	char *text;
	struct ap_conf *c;

	cr_assert(asprintf(&text,
	                   "{\"keys\": {\"active\": \"t\", \"files\": {\"t\": \"@KEY@\"}},"
	                   " \"rulesets\": {\"r\": {%s}},"
	                   " \"routes\": [{\"path\": \"/\", \"upstream\": \"sink\", \"ruleset\": "
	                   "\"r\"}]}",
	                   ruleset_json) > 0);
	c = tu_conf(text);
	free(text);
	return c;
}

void tu_scrub(struct ap_scrub *sc, const struct ap_conf *c, const char *name)
{
	const struct ap_ruleset *rs = ap_conf_ruleset(c, name);

	cr_assert_not_null(rs);
	cr_assert_eq(ap_scrub_init(sc, &c->keys.keys[c->keys.active]), AP_OK);
	ap_scrub_begin(sc, rs, (unsigned)c->limits.json_depth, c->limits.decoded_bytes);
}

const char *tu_guard(const void *p, size_t n)
{
	static char *region;
	static size_t region_len;
	long pg = sysconf(_SC_PAGESIZE);
	size_t need = ((n + (size_t)pg - 1) / (size_t)pg + 1) * (size_t)pg;
	char *dst;

	if (region)
		munmap(region, region_len);
	region = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(region != MAP_FAILED);
	region_len = need;
	cr_assert_eq(mprotect(region + need - (size_t)pg, (size_t)pg, PROT_NONE), 0);
	dst = region + need - (size_t)pg - n;
	if (n)
		memcpy(dst, p, n);
	return dst;
}

void tu_cleanup(void)
{
	char path[128];

	if (!tmpdir[0])
		return;
	snprintf(path, sizeof(path), "%s/test.key", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	tmpdir[0] = 0;
}

void tu_hmac_hex(const struct ap_conf *c, const char *v, size_t n, char *hex, size_t len)
{
	unsigned char mac[32];
	unsigned int ml = 32;
	const struct ap_key *k = &c->keys.keys[c->keys.active];

	cr_assert_leq(len, 64);
	cr_assert_not_null(
	        HMAC(EVP_sha256(), k->secret, (int)k->len, (const unsigned char *)v, n, mac, &ml));
	for (size_t i = 0; i < len / 2; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	hex[len] = 0;
}
