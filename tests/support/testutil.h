/* Helpers the unit tests share: a configuration built from JSON text with a fresh key in
 * a temporary directory, a scrubber bound to it, and inputs placed against a guard page
 * so that reading one byte past the end crashes the test. */
#ifndef AP_TESTUTIL_H
#define AP_TESTUTIL_H

#include <stddef.h>

#include "conf.h"
#include "scrub.h"

/* Loads <json> (a whole configuration; "@KEY@" is replaced by the path of a new 32-byte
 * key file) and returns it; aborts the test with the loader's message on failure. */
struct ap_conf *tu_conf(const char *json);

/* A configuration with one ruleset "r" made of <ruleset_json> (the object's members, no
 * braces) and a route "/" to it. */
struct ap_conf *tu_conf_ruleset(const char *ruleset_json);

/* A scrubber for <c>'s active key, begun on ruleset <name>. */
void tu_scrub(struct ap_scrub *sc, const struct ap_conf *c, const char *name);

/* Copies <p, n> so that it ends exactly at an inaccessible page. The pointer stays valid
 * until the next call (one buffer per process). */
const char *tu_guard(const void *p, size_t n);

/* Removes the temporary directory tu_conf made. */
void tu_cleanup(void);

/* The first <len> hex digits (len <= 64, even) of HMAC-SHA256 of <v, n> under <c>'s active
 * key, computed here with OpenSSL's one-shot HMAC, independently of pseudo.c. */
void tu_hmac_hex(const struct ap_conf *c, const char *v, size_t n, char *hex, size_t len);

#endif
