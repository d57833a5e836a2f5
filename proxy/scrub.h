/* The scrubbing core's entry points: one request's body, query string and headers in,
 * their scrubbed forms out, or a refusal with a reason. scrub.c dispatches on content
 * type and encoding; scrub_json.c, scrub_form.c and scrub_header.c do the formats.
 * Everything here works on whole buffers; the proxy collects a body before calling. */
#ifndef AP_SCRUB_H
#define AP_SCRUB_H

#include <stdbool.h>

#include "action.h"
#include "codec.h"
#include "rules.h"

#define AP_LAYERS_MAX      4    /* nested codec documents inside one request */
#define AP_DEPTH_DEFAULT   64   /* JSON nesting */
#define AP_DEPTH_LIMIT     1024 /* the most a configuration may allow (recursion) */
#define AP_DECODED_DEFAULT (8u << 20)
#define AP_PATH_TEXT_MAX   256 /* bytes of a finding's path shown */

/* The reason given when decoding would exceed the request's decoded-size budget (the
 * codecs use the same words); the proxy answers 413 to it. */
#define AP_WHY_TOO_BIG "decoded size over limit"

/* The reason given when a route's profile recognises an opaque payload and the route's
 * "opaque" policy is "refuse"; the status is AP_OPAQUE_STATUS. */
#define AP_WHY_OPAQUE    "opaque payload refused on this route"
#define AP_OPAQUE_STATUS 415

/* What a route does with a body whose content type no scrubber handles. */
enum ap_unknown {
	AP_UNKNOWN_REJECT = 0, /* refuse: 415 */
	AP_UNKNOWN_PASS,       /* forward as is (counted) */
	AP_UNKNOWN_SCAN,       /* run the detectors over the raw bytes; refuse on a hit */
};

/* Where a finding was. */
enum ap_where {
	AP_WHERE_BODY = 0,
	AP_WHERE_QUERY,
	AP_WHERE_HEADER,
	AP_WHERE_PATH,
};

/* One identifier found and what was done to it, for anonctl and --inspect. Every
 * pointer is borrowed for the duration of the callback only. */
struct ap_finding {
	uint8_t cls;        /* enum ap_class */
	uint8_t act;        /* enum ap_act */
	uint8_t where;      /* enum ap_where */
	bool detected;      /* found by a value detector, not named by a rule */
	const char *path;   /* "$.events[3].device.imei", "data_list>base64>gzip>$[0].mac", a
	                       query or header name; keys that look like identifiers are masked */
	const char *masked; /* the value with all but its last two characters hidden */
};

typedef void (*ap_finding_cb)(void *arg, const struct ap_finding *f);

/* Counts for one request; the proxy adds them into its metrics. */
struct ap_scrub_stats {
	uint32_t hits[AP_CLASS_MAX][AP_ACT_MAX];
	uint32_t hashed;     /* HMACs computed (memo misses) */
	uint32_t memo_hits;  /* pseudonyms served from the per-request memo */
	uint32_t cache_hits; /* ... from the cache across requests */
	uint32_t layers;     /* nested documents opened */
	uint32_t opaque;     /* opaque payloads recognised (passed or refused, as the route says) */
	uint32_t resigned;   /* signature fields recomputed */
};

/* Per-request memo of pseudonyms: a device's IMEI repeated in 20 events is hashed once. */
struct ap_memo_slot {
	uint64_t h;
	uint32_t gen;
	uint32_t voff, vlen; /* value bytes in memo.bytes */
	uint32_t ooff, olen; /* pseudonym bytes in memo.bytes */
	const struct ap_action *act;
	bool numeric, numeric_out;
};

#define AP_MEMO_SLOTS 256

/* Pseudonyms across requests, per worker: the same devices send request after request,
 * and an HMAC costs more than scanning a kilobyte. Direct-mapped; an entry is found by a
 * 128-bit hash of the value under a secret seed chosen at start — the value itself is
 * not kept, only its pseudonym, so the cache holds nothing the HMAC key in the same
 * memory would not give anyway. Emptied (by generation) at every reload. */
#define AP_PCACHE_SLOTS 4096
#define AP_PCACHE_OUT   80 /* pseudonyms longer than this are not cached */

struct ap_pcache_slot {
	uint64_t h1, h2;
	const struct ap_action *act;
	uint32_t gen;
	uint8_t olen;
	bool numeric, numeric_out;
	char out[AP_PCACHE_OUT];
};

struct ap_pcache {
	struct ap_pcache_slot *slot; /* AP_PCACHE_SLOTS, allocated on first use */
	uint64_t seed[2];
	uint32_t gen;
};

struct ap_memo {
	struct ap_memo_slot slot[AP_MEMO_SLOTS];
	struct ap_buf bytes;
	uint32_t gen, used;
};

/* Scratch buffers of one nesting level; level 0 is the request itself, level L+1 a
 * document opened by a codec chain inside level L. Each level has its own so a nested
 * scrub never overwrites the value its parent is working on. */
struct ap_level {
	struct ap_buf val;  /* a decoded value (unescaped, percent-decoded) */
	struct ap_buf rep;  /* its replacement, decoded */
	struct ap_buf a, b; /* codec layers, decoded and re-encoded in turn */
	struct ap_buf doc;  /* the nested document, scrubbed */
};

/* Where the signature fields of the body document and the fields they cover are in its
 * output, recorded while it is scanned (scrub_sign.c). Offsets are from <base>. */
struct ap_sign_span {
	uint32_t pos, len;
	bool seen, dup, changed;
};

struct ap_sign_rec {
	bool on;     /* this document's signers are being recorded */
	size_t base; /* out->len when the document's output began */
	struct ap_sign_span sig[AP_SIGNERS_MAX];
	struct ap_sign_span over[AP_SIGNERS_MAX][AP_SIGN_OVER_MAX];
};

/* The scrubber's working state: one per worker (or per anonctl run), reused for every
 * request so the hot path does not allocate once the buffers have grown. The ruleset
 * and keys are borrowed and must outlive the request being scrubbed. Not thread-safe. */
struct ap_scrub {
	const struct ap_ruleset *rs;
	struct ap_pseudo ps;
	struct ap_zctx z;
	struct ap_memo memo;
	struct ap_pcache pcache;
	struct ap_level lv[AP_LAYERS_MAX + 1];
	struct ap_buf body, body_out; /* a compressed body decoded, and its scrubbed form */
	unsigned level;
	unsigned max_depth;
	size_t max_decoded, decoded;
	struct ap_scrub_stats st;
	ap_finding_cb finding_cb;
	void *finding_arg;
	char path[AP_PATH_TEXT_MAX];
	size_t pathlen;
	enum ap_where where;
	const char *why;     /* static reason of the last refusal */
	size_t err_off;      /* byte offset of the refusal in the innermost document */
	uint32_t opaque_hdr; /* bit i: the header condition of opaque rule i held */
	uint32_t opaque_fld; /* bit i: its field condition held (query string or form body) */
	struct ap_sign_rec sign;
	struct ap_buf sig; /* signers' scratch: the covered values, decoded and joined */

	/* Per-user opt-outs (the ruleset's "user" rules). Set by the caller, kept across
	 * requests: how to look a user up (NULL: no table) and the scopes the route
	 * enforces. Per request: the request-level user's scopes (header, query), the
	 * current event's, and what happened. */
	unsigned (*user_scopes)(void *arg, const char *user, size_t n);
	void *user_arg;
	unsigned route_scope;
	unsigned req_scopes;
	unsigned ev_scopes;
	uint32_t events, events_dropped;
	uint32_t optout_hits[8]; /* by scope bit: events dropped, or scrubbed more strictly */
};

/* ---- per-user opt-outs (scrub.c) ---- */

/* Finds the first field of the form (or query string) <form> named one of <names>
 * (ASCII case-insensitively) and writes its percent-decoded value to val[cap], its length
 * to *n. AP_OK, or AP_ERR when there is none (or it does not fit or decode). */
int ap_form_get(struct ap_span form, const char *const *names, size_t nnames, char *val, size_t cap,
                size_t *n);

/* The scopes of user <id, n> (0: none, or no table). */
unsigned ap_scrub_user(struct ap_scrub *sc, const char *id, size_t n);

/* True when a user with <scopes> has opted out of what this route carries ("all", or a
 * scope the route enforces): the event goes, or the request when it is the whole of it.
 * Counts the hit. */
bool ap_scrub_optout_drops(struct ap_scrub *sc, unsigned scopes);

/* The start of an event (or request) whose user has <scopes>: sc->rs becomes the ruleset's
 * variant for them — personalization drops advertising ids, location drops coordinates,
 * BSSIDs and cell ids, minor applies the strict variant's action to every class — and the
 * hits are counted. Returns the ruleset to put back in sc->rs when the event ends. */
const struct ap_ruleset *ap_scrub_event_begin(struct ap_scrub *sc, unsigned scopes);

/* Prepares *sc for hashing under <key> (borrowed). AP_OK, or AP_ERR (OpenSSL). */
int ap_scrub_init(struct ap_scrub *sc, const struct ap_key *key);
void ap_scrub_free(struct ap_scrub *sc);

/* Forgets every pseudonym cached across requests: the configuration (and with it the
 * actions and the key) changed. */
void ap_scrub_cache_flush(struct ap_scrub *sc);

/* Starts a request under ruleset <rs>: clears stats, the memo and the decoded budget. */
void ap_scrub_begin(struct ap_scrub *sc, const struct ap_ruleset *rs, unsigned max_depth,
                    size_t max_decoded);

/* Scrubs the body <in> of type <ctype> ("application/json; charset=utf-8") and
 * Content-Encoding <cenc> (empty, "gzip", "deflate", "identity"). On AP_OK, *changed says
 * whether <out> holds a new body (re-encoded as it came); when false, <in> goes on as it
 * is and <out> is untouched. On AP_ERR the request must be refused: sc->why holds a static
 * reason and *status the HTTP status (400 undecodable, 413 decoded size over the limit,
 * 415 unknown content refused, 422 scan found an identifier in an unknown content type).
 * Under a ruleset compiled with a profile: a media type its "bodies" name is read through
 * that codec chain; a payload its opaque rules recognise (with the header and query
 * conditions noted by ap_scrub_header and ap_scrub_query before) is counted in
 * sc->st.opaque and either goes on unread (the route's "opaque": "pass": AP_OK, unchanged)
 * or is refused (AP_ERR, AP_OPAQUE_STATUS, AP_WHY_OPAQUE); signature fields of the body are
 * recomputed over the scrubbed values. <in> is only read. */
int ap_scrub_body(struct ap_scrub *sc, struct ap_span ctype, struct ap_span cenc,
                  enum ap_unknown unknown, struct ap_span in, struct ap_buf *out, bool *changed,
                  int *status);

/* The formats, on a decoded document. Same contract as above for *changed, <out>, and
 * AP_ERR with sc->why. */
int ap_scrub_json(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed);
int ap_scrub_ndjson(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed);
int ap_scrub_form(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed);

/* Terminal formats of codec chains (scrub_pairs.c, scrub_protobuf.c). <f> is the chain's
 * field entry (its separator and assignment); <root> the protobuf schema's root node. */
int ap_scrub_pairs(struct ap_scrub *sc, const struct ap_field *f, struct ap_span in,
                   struct ap_buf *out, bool *changed);
int ap_scrub_protobuf(struct ap_scrub *sc, const struct ap_pb_node *root, struct ap_span in,
                      struct ap_buf *out, bool *changed);

/* The query string (without '?'): form rules, percent-decoding, '+' as space. */
int ap_scrub_query(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed);

/* The path of the request target (without the query): a segment the ruleset's detectors
 * recognise, whole and percent-decoded, is replaced by its class's action (a pseudonym,
 * percent-encoded; "-" for drop). Sets *changed when <out> holds the new path. Only
 * memory fails it. */
int ap_scrub_path(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed);

/* One header value under the ruleset's header rules. Sets *drop when the header must be
 * removed, else *changed when <out> holds the new value. X-Forwarded-For and X-Real-IP
 * are lists of addresses, Forwarded (RFC 7239) a list of elements whose for= and by=
 * parameters are addresses: each address gets the rule's action. */
int ap_scrub_header(struct ap_scrub *sc, struct ap_span name, struct ap_span value,
                    struct ap_buf *out, bool *drop, bool *changed);

/* ---- shared by the format scrubbers (scrub.c) ---- */

/* Identifiers inside a decoded text value no rule named and no detector recognised whole
 * (ruleset "detect_in_text"): each run of identifier characters ("device 3569… failed",
 * "imei:3569…", "(aa:bb:cc:dd:ee:ff)") that a detector recognises is replaced by its
 * class's action, removed for drop. When anything was, appends the new text to <out> and
 * sets *changed; otherwise <out> is left as it was. AP_ERR only for memory. */
int ap_scrub_text(struct ap_scrub *sc, const char *v, size_t n, struct ap_buf *out, bool *changed);

/* Applies field <f> (an action) to the decoded scalar <v, n>, through the memo. Appends
 * the decoded replacement to <out> (and sets *numeric_out, see ap_action_apply) and
 * records the finding. <detected> marks a value found by a detector. Returns AP_OK or
 * AP_ERR (memory, OpenSSL). */
int ap_scrub_apply(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                   bool numeric, bool detected, struct ap_buf *out, bool *numeric_out);

/* The action for a value no rule named: the ruleset's action for the detected class, or
 * NULL (nothing detected, or the class's action is none/keep). */
const struct ap_action *ap_scrub_detect(struct ap_scrub *sc, const char *v, size_t n, bool numeric);

/* Opens the value <v, n> with the codec chain of <f>, scrubs the terminal document, and
 * when anything changed appends the re-encoded value to <out> and sets *changed. Returns
 * AP_OK or AP_ERR (sc->why set). */
int ap_scrub_nested(struct ap_scrub *sc, const struct ap_field *f, const char *v, size_t n,
                    struct ap_buf *out, bool *changed);

/* ---- re-signers (scrub_sign.c) ---- */

enum ap_sign_fmt {
	AP_SIGN_FORM = 1, /* values are percent-encoded form values */
	AP_SIGN_JSON,     /* values are JSON scalars: strings with their quotes, or numbers */
};

/* Starts recording for a document whose output goes to <out>, and returns true, when it
 * is the body itself (level 0) under a ruleset with signers; the scanner then notes its
 * top-level fields and calls ap_sign_finish. Other documents return false and leave the
 * record alone. */
bool ap_sign_begin(struct ap_scrub *sc, const struct ap_buf *out);

/* Notes that the member or pair named <key, kn> has its value at output offset <pos>
 * (absolute in out), <len> bytes, rewritten or not. */
void ap_sign_note(struct ap_scrub *sc, const char *key, size_t kn, size_t pos, size_t len,
                  bool changed);

/* After the document's output is complete: recomputes each signature whose covered values
 * changed and writes it over the old one in <out>. A signature over unchanged values is
 * left byte for byte. Returns AP_OK, or AP_ERR with sc->why (a signed field listed twice,
 * memory). */
int ap_sign_finish(struct ap_scrub *sc, struct ap_buf *out, enum ap_sign_fmt fmt);

/* Java String.hashCode of the UTF-8 text <p, n> (as UTF-16 code units; a malformed byte
 * counts as U+FFFD, as Java's decoder makes it). */
int32_t ap_sign_java_hashcode(const char *p, size_t n);

/* Conditions of opaque-payload rules met outside the body, noted as the request is
 * scrubbed: a request header (ap_scrub_header calls it), a query-string or form field. */
void ap_scrub_opaque_header(struct ap_scrub *sc, struct ap_span name, struct ap_span value);
void ap_scrub_opaque_field(struct ap_scrub *sc, const char *k, size_t kn, const char *v, size_t vn);

/* Records a finding without a replacement (drop/keep) */
void ap_scrub_found(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                    bool detected);

/* Path text for findings: push appends a step, pop restores the previous length. */
size_t ap_scrub_path_key(struct ap_scrub *sc, const char *k, size_t n);
size_t ap_scrub_path_idx(struct ap_scrub *sc, size_t idx);
static inline void ap_scrub_path_pop(struct ap_scrub *sc, size_t len)
{
	sc->pathlen = len;
	sc->path[len] = 0;
}

static inline int ap_scrub_fail(struct ap_scrub *sc, const char *why, size_t off)
{
	sc->why = why;
	sc->err_off = off;
	return AP_ERR;
}

#endif
