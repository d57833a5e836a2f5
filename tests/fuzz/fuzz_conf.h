/* What the scrubbing fuzz targets share: a configuration parsed from text once, with a
 * 32-byte key written to a fresh temporary directory ("fuzz.key" in the text resolves
 * there), and a scrubber bound to it. Everything is released at exit. Header-only: each
 * fuzz target is one translation unit. */
#ifndef AP_FUZZ_CONF_H
#define AP_FUZZ_CONF_H

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "scrub.h"

static struct ap_conf *fuzz_conf_;
static char fuzz_dir_[64], fuzz_key_[96];
static const unsigned char fuzz_secret_[32] = "0123456789abcdef0123456789abcdef";

/* True when <v, n> is the 64-hex-digit HMAC-SHA256 (the "imei" rules' pseudonym) of
 * <p, pn>, computed here with OpenSSL's one-shot HMAC. A planted value that is another
 * planted value's pseudonym (libFuzzer learns pseudonyms from the comparisons it traces)
 * legitimately appears in the output as that pseudonym. */
static __attribute__((unused)) bool fuzz_is_pseudonym(const char *v, size_t n, const char *p,
                                                      size_t pn)
{
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	char hex[65];

	if (n != 64 || !HMAC(EVP_sha256(), fuzz_secret_, sizeof(fuzz_secret_),
	                     (const unsigned char *)p, pn, mac, &ml))
		return false;
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return memcmp(hex, v, 64) == 0;
}

static void fuzz_conf_cleanup(void)
{
	ap_conf_free(fuzz_conf_);
	unlink(fuzz_key_);
	rmdir(fuzz_dir_);
}

/* Parses <text> for the target <name> and readies *sc for its active key; aborts with the
 * loader's message when the text does not load. */
static struct ap_conf *fuzz_conf(const char *name, const char *text, struct ap_scrub *sc)
{
	const unsigned char *key = fuzz_secret_;
	char err[AP_CONF_ERR_MAX];
	int fd;

	snprintf(fuzz_dir_, sizeof(fuzz_dir_), "/tmp/%.20s_fuzz.XXXXXX", name);
	if (!mkdtemp(fuzz_dir_))
		abort();
	snprintf(fuzz_key_, sizeof(fuzz_key_), "%s/fuzz.key", fuzz_dir_);
	fd = open(fuzz_key_, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, key, sizeof(fuzz_secret_)) != (ssize_t)sizeof(fuzz_secret_))
		abort();
	close(fd);
	fuzz_conf_ = ap_conf_parse(text, strlen(text), fuzz_dir_, err);
	if (!fuzz_conf_) {
		fprintf(stderr, "%s_fuzz: %s\n", name, err);
		abort();
	}
	if (ap_scrub_init(sc, &fuzz_conf_->keys.keys[fuzz_conf_->keys.active]) != AP_OK)
		abort();
	atexit(fuzz_conf_cleanup);
	return fuzz_conf_;
}

#endif
