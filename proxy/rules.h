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
	AP_CODEC_DEFLATE,    /* zlib, or raw deflate, as found */
	AP_CODEC_JSON,       /* terminal: a JSON document */
	AP_CODEC_NDJSON,     /* terminal: JSON documents, one per line */
	AP_CODEC_FORM,       /* terminal: application/x-www-form-urlencoded */
	AP_CODEC_URLENCODED, /* percent-encoding ('+' is a space), re-encoded in the style found */
	AP_CODEC_PAIRS,      /* terminal: "k=v##k=v" pairs (separator and assignment configured) */
	AP_CODEC_PROTOBUF,   /* terminal: protobuf wire format under a field-number schema */
};

static inline bool ap_codec_terminal(unsigned c)
{
	return c == AP_CODEC_JSON || c == AP_CODEC_NDJSON || c == AP_CODEC_FORM ||
	       c == AP_CODEC_PAIRS || c == AP_CODEC_PROTOBUF;
}

#define AP_PAIR_SEP_MAX 8 /* bytes of a pairs separator ("##") */
#define AP_PAIR_EQ_MAX  4 /* bytes of a pairs assignment ("=") */
#define AP_FIELD_NONE   UINT16_MAX

/* An entry of a ruleset's "fields": either an action for a class of identifier, or a codec
 * chain that opens the value and scrubs what is inside with the same ruleset. */
struct ap_field {
	struct ap_action act; /* act.act == AP_ACT_NONE for a codec entry */
	uint8_t codec[AP_CODEC_MAX];
	uint8_t ncodec;
	uint8_t optional; /* bit i: step i is skipped when the value is not in that encoding
	                     (base64 that does not decode, gzip without its magic bytes) */
	/* The terminal's parameters. pairs: separator and assignment; protobuf: its schema,
	 * the root node in ap_ruleset.pb. */
	uint8_t sep_len, eq_len;
	char sep[AP_PAIR_SEP_MAX];
	char eq[AP_PAIR_EQ_MAX];
	uint16_t pb_root;
};

/* ---- protobuf schemas ---- */

/* What the configuration says a protobuf field holds; the wire type must agree. */
enum ap_pb_type {
	AP_PB_MESSAGE = 1, /* length-delimited, recursed into */
	AP_PB_STRING,      /* length-delimited text: actions, codecs, or the detectors */
	AP_PB_BYTES,       /* length-delimited bytes: actions or codecs only */
	AP_PB_VARINT,
	AP_PB_FIXED64,
	AP_PB_FIXED32,
};

#define AP_PB_NUM_MAX 536870911u /* 2^29 - 1, the largest field number */

/* One node of a protobuf schema: a field number under its parent message. The children of
 * a node are contiguous, so a message is searched in one short run. */
struct ap_pb_node {
	uint32_t num;   /* field number; 0 for a root */
	uint8_t type;   /* enum ap_pb_type */
	uint16_t field; /* its action or codec chain in ap_ruleset.fields, or AP_FIELD_NONE */
	uint16_t child; /* first child in ap_ruleset.pb */
	uint16_t nchild;
};

/* ---- profile pieces: re-signers, opaque payloads, body formats ---- */

#define AP_SIGNERS_MAX   4
#define AP_SIGN_OVER_MAX 8
#define AP_OPAQUE_MAX    16
#define AP_OPAQUE_VALS   8
#define AP_MEDIA_MAX     64 /* bytes of a media type in a rule */
#define AP_BODIES_MAX    16

enum ap_sign_algo {
	AP_SIGN_JAVA_HASHCODE = 1, /* Java String.hashCode of the concatenation, signed decimal */
	AP_SIGN_MD5_HEX,           /* MD5 of the concatenation (UTF-8), 32 hex digits */
};

/* A signature field of the body document recomputed from the scrubbed values of <over>,
 * concatenated in order. Names compare byte for byte (a form's decoded names, a JSON
 * object's top-level member names). */
struct ap_signer {
	uint8_t algo; /* enum ap_sign_algo */
	uint8_t nover;
	uint8_t field_len;
	uint8_t over_len[AP_SIGN_OVER_MAX];
	char field[AP_KEY_NAME_MAX];
	char over[AP_SIGN_OVER_MAX][AP_KEY_NAME_MAX];
};

/* A media type: exact ("application/json") or any subtype of a type ("ut/" then anything); lower
 * case. */
struct ap_media {
	uint8_t len;
	bool any_subtype;
	char name[AP_MEDIA_MAX];
};

/* A payload the proxy recognises and cannot read (encrypted, proprietary envelopes).
 * Every condition given must hold: the media type is one of <media>, the request has
 * header <header> (with one of <hvals>, or any value), the form body or the query string
 * has field <fname> with one of <fvals>. */
struct ap_opaque_rule {
	char name[AP_KEY_NAME_MAX];
	uint8_t nmedia, nhvals, nfvals;
	uint8_t header_len, fname_len;
	struct ap_media media[AP_OPAQUE_VALS];
	char header[AP_KEY_NAME_MAX]; /* lower case */
	char hvals[AP_OPAQUE_VALS][AP_KEY_NAME_MAX];
	char fname[AP_KEY_NAME_MAX];
	char fvals[AP_OPAQUE_VALS][AP_KEY_NAME_MAX];
};

/* A body of media type <media> read through the codec chain of field <field> instead of
 * the built-in dispatch (e.g. gzip'd protobuf). */
struct ap_body_rule {
	struct ap_media media;
	uint16_t field;
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

#define AP_USER_PATHS_MAX  8
#define AP_USER_NAMES_MAX  4
#define AP_EVENT_PATHS_MAX 8

/* Where a ruleset finds the user an opt-out is looked up for ("user": {…}) and where the
 * events of a batch are ("events": […]). Paths in <paths> are relative to an event; the
 * header, query and form names give a user for the whole request. */
struct ap_user_rules {
	struct ap_path paths[AP_USER_PATHS_MAX];
	uint8_t npaths;
	char headers[AP_USER_NAMES_MAX][AP_KEY_NAME_MAX];
	char query[AP_USER_NAMES_MAX][AP_KEY_NAME_MAX];
	char form[AP_USER_NAMES_MAX][AP_KEY_NAME_MAX];
	uint8_t nheaders, nquery, nform;
	struct ap_path events[AP_EVENT_PATHS_MAX]; /* objects that are one event each */
	uint8_t nevents;
	bool root_event; /* "$" is listed: a document's root object is an event */
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
	bool path;                                /* scrub path segments detectors recognise */
	bool detect_text;                         /* run the detectors over words in text */

	const struct ap_ruleset *strict; /* the variant for minors; NULL: this one */
	struct ap_user_rules *user;      /* NULL: no per-user opt-outs on this ruleset */
	/* The same ruleset for an event whose user opted out of personalization (bit 0:
	 * advertising ids dropped), location (bit 1: coordinates, BSSIDs, cell ids dropped)
	 * and/or is a minor (bit 2: every class gets the strict variant's action). Same keys,
	 * paths and field numbering — only actions differ — so a scan can switch between them
	 * at an event's edge. variant[0] is the ruleset itself; NULL without user rules. */
	struct ap_ruleset *variant[8];
	const struct ap_ruleset *base; /* a variant's ruleset: it owns all but fields */

	/* Protobuf schemas of the codec chains above (every chain ending in "protobuf" names
	 * its root node). */
	struct ap_pb_node *pb;
	uint16_t npb;

	/* Profile pieces (conf.c compiles a route's profile into a ruleset of its own). */
	struct ap_signer *signers;
	uint8_t nsigners;
	struct ap_opaque_rule *opaque;
	uint8_t nopaque;
	bool opaque_pass; /* the route's "opaque": "pass" (else refuse) */
	struct ap_body_rule *bodies;
	uint8_t nbodies;

	uint16_t fields_cap, pb_cap; /* building only */
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

/* The same step over any array of (at most 64) paths: returns the child's mask and sets
 * *ended to the paths that end at the child. */
uint64_t ap_paths_step(const struct ap_path *paths, uint64_t mask, unsigned depth, const char *k,
                       size_t n, uint32_t idx, uint64_t *ended);

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

/* The child of schema node <node> for field number <num>, or NULL. */
static inline const struct ap_pb_node *
ap_rules_pb_child(const struct ap_ruleset *rs, const struct ap_pb_node *node, uint32_t num)
{
	const struct ap_pb_node *c = rs->pb + node->child;

	for (unsigned i = 0; i < node->nchild; i++)
		if (c[i].num == num)
			return &c[i];
	return NULL;
}

/* True when media type <mt> (any case, no parameters) matches <m>; the rule written
 * "*" "/" "*" in the configuration matches anything, an empty <mt> included. */
bool ap_rules_media_match(const struct ap_media *m, struct ap_span mt);

/* Fills *m from <text> ("application/x-protobuf", or "ut/" followed by a star). AP_OK or AP_ERR,
 * *why static. */
int ap_rules_media_compile(struct ap_media *m, const char *text, const char **why);

/* Frees what <rs> owns (not rs itself) and zeroes it. */
void ap_ruleset_free(struct ap_ruleset *rs);

/* Builds rs->variant[] (after rs->strict is known). AP_OK or AP_ERR (memory). */
int ap_ruleset_variants(struct ap_ruleset *rs);

/* The variant for a user's opt-out <scopes> (AP_SCOPE_* bits of conf.h). */
const struct ap_ruleset *ap_ruleset_for(const struct ap_ruleset *rs, unsigned scopes);

#endif
