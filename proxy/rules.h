/* Compiled rulesets: what to look for in a request and what to do with it. Built once
 * from the configuration (conf.c), immutable afterwards and shared read-only by every
 * scrub; a reload builds new ones and swaps them whole. */
#ifndef AP_RULES_H
#define AP_RULES_H

#include <stdbool.h>

#include "ap.h"

#define AP_KEY_NAME_MAX  64 /* longest key name a rule may list */
#define AP_PATHS_MAX     64 /* path rules per ruleset: one bit each while scanning */
#define AP_PATH_SEGS_MAX 16
#define AP_CODEC_MAX     6 /* steps in one codec chain */
#define AP_HEADERS_MAX   32

/* One step of a nested codec chain, outermost first: a field's value is base64-decoded,
 * then gunzipped, then scrubbed as JSON, and re-encoded in the reverse order. */
enum ap_codec {
	AP_CODEC_NONE = 0,
	AP_CODEC_BASE64, /* standard or URL alphabet, as found */
	AP_CODEC_GZIP,
	AP_CODEC_DEFLATE, /* zlib, or raw deflate, as found */
	AP_CODEC_JSON,    /* terminal: a JSON document */
	AP_CODEC_NDJSON,  /* terminal: JSON documents, one per line */
	AP_CODEC_FORM,    /* terminal: application/x-www-form-urlencoded */
};

/* An entry of a ruleset's "fields": either an action for a class of identifier, or a codec
 * chain that opens the value and scrubs what is inside with the same ruleset. */
struct ap_field {
	struct ap_action act; /* act.act == AP_ACT_NONE for a codec entry */
	uint8_t codec[AP_CODEC_MAX];
	uint8_t ncodec;
};

enum ap_seg_kind {
	AP_SEG_KEY = 1, /* .name or ['name'] */
	AP_SEG_ANY_KEY, /* .* */
	AP_SEG_ANY_IDX, /* [*] */
	AP_SEG_IDX,     /* [n] */
};

struct ap_path_seg {
	uint8_t kind;
	uint8_t len;
	uint32_t idx;
	char name[AP_KEY_NAME_MAX]; /* lower case */
};

/* A JSON path ("$.events[*].device.mac") bound to a field entry. */
struct ap_path {
	uint8_t nseg;
	uint16_t field;
	struct ap_path_seg seg[AP_PATH_SEGS_MAX];
};

/* A named request header scrubbed as one value (or as an address list for
 * X-Forwarded-For, X-Real-IP and Forwarded). */
struct ap_header_rule {
	char name[AP_KEY_NAME_MAX]; /* lower case */
	uint8_t len;
	uint16_t field;
};

/* Open-addressing slot of the key-name table. */
struct ap_key_slot {
	uint32_t hash; /* 0: empty */
	uint8_t len;
	uint16_t field;
	char name[AP_KEY_NAME_MAX]; /* lower case */
};

struct ap_ruleset {
	char *name;
	struct ap_field *fields;
	uint16_t nfields;

	struct ap_key_slot *keys; /* power-of-two table, at most half full */
	uint32_t key_mask;
	uint64_t key_lens;      /* bit n: some key has length n (n < 64), the cheap first test */
	uint64_t key_bloom[16]; /* bit (len, first, last byte folded): the second test */

	struct ap_path *paths;
	uint8_t npaths;

	struct ap_header_rule *headers;
	uint8_t nheaders;

	unsigned detect;                          /* enum ap_det bits */
	struct ap_action class_act[AP_CLASS_MAX]; /* action for a detected value of a class */
	struct ap_action class_num[AP_CLASS_MAX]; /* ... of a JSON number: a hash keeps its
	                                             shape, so a number stays a number */
	bool scrub_keys;                          /* run the detectors over object keys too */
	bool query;                               /* scrub the query string */

	const struct ap_ruleset *strict; /* the variant for minors; NULL: this one */
};

/* Returns the field entry for the object key <k, n> (decoded bytes), or NULL. Key names
 * compare ASCII case-insensitively. Most keys of a document name no rule: their length,
 * first and last byte reject them inline, before any hashing. */
const struct ap_field *ap_rules_key_slow(const struct ap_ruleset *rs, const char *k, size_t n);

static inline unsigned ap_rules_key_bloom(const char *k, size_t n)
{
	return ((unsigned)n * 61u + ((unsigned char)k[0] | 0x20) * 7u +
	        ((unsigned char)k[n - 1] | 0x20) * 131u) &
	       1023u;
}

static inline const struct ap_field *ap_rules_key(const struct ap_ruleset *rs, const char *k,
                                                  size_t n)
{
	unsigned b;

	if (n >= 64 || !(rs->key_lens >> n & 1))
		return NULL;
	b = ap_rules_key_bloom(k, n);
	if (!(rs->key_bloom[b >> 6] >> (b & 63) & 1))
		return NULL;
	return ap_rules_key_slow(rs, k, n);
}

/* Returns the field entry for header <name, n>, or NULL. */
const struct ap_field *ap_rules_header(const struct ap_ruleset *rs, const char *name, size_t n);

/* Path matching, one step down the document. <mask> holds the path rules that matched
 * every step so far at <depth> (the root is depth 0 with every path's bit set). Returns
 * the mask for the child named by key <k, n> (or array index <idx> when k is NULL) and,
 * in *field, the entry of the first path that ends at that child (or NULL). */
uint64_t ap_rules_path_step(const struct ap_ruleset *rs, uint64_t mask, unsigned depth,
                            const char *k, size_t n, uint32_t idx, const struct ap_field **field);

static inline uint64_t ap_rules_path_root(const struct ap_ruleset *rs)
{
	return rs->npaths >= 64 ? ~0ull : ((1ull << rs->npaths) - 1);
}

/* ---- building (conf.c) ---- */

/* Adds key <name> for field <field>. Returns AP_OK, or AP_ERR with *why static (too long,
 * duplicate, empty). The table must have been sized by ap_rules_keys_init. */
int ap_rules_add_key(struct ap_ruleset *rs, const char *name, uint16_t field, const char **why);
int ap_rules_keys_init(struct ap_ruleset *rs, size_t nkeys);

/* Compiles <text> ("$.a.b[*].c", "$[0].x", "$.a['odd key']") into *p. Returns AP_OK or
 * AP_ERR with *why static. */
int ap_rules_path_compile(struct ap_path *p, const char *text, const char **why);

void ap_ruleset_free(struct ap_ruleset *rs);

#endif
