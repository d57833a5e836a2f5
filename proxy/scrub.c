/* The scrubbing core's dispatcher and the services every format scrubber shares: the
 * per-request pseudonym memo, detector lookups, nested codec chains, findings and their
 * paths. It knows content types and encodings; it does not know any format's syntax. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "conf.h"
#include "detect.h"
#include "scrub.h"

int ap_scrub_init(struct ap_scrub *sc, const struct ap_key *key)
{
	memset(sc, 0, sizeof(*sc));
	sc->max_depth = AP_DEPTH_DEFAULT;
	sc->max_decoded = AP_DECODED_DEFAULT;
	sc->z.level = 1; /* re-compression is on the hot path: speed over ratio */
	return ap_pseudo_init(&sc->ps, key);
}

void ap_scrub_free(struct ap_scrub *sc)
{
	ap_pseudo_free(&sc->ps);
	ap_zctx_free(&sc->z);
	ap_buf_free(&sc->memo.bytes);
	if (sc->pcache.slot) {
		OPENSSL_cleanse(sc->pcache.slot, AP_PCACHE_SLOTS * sizeof(*sc->pcache.slot));
		free(sc->pcache.slot);
		sc->pcache.slot = NULL;
	}
	for (unsigned i = 0; i <= AP_LAYERS_MAX; i++) {
		struct ap_level *lv = &sc->lv[i];
		ap_buf_free(&lv->val);
		ap_buf_free(&lv->rep);
		ap_buf_free(&lv->a);
		ap_buf_free(&lv->b);
		ap_buf_free(&lv->doc);
	}
	ap_buf_free(&sc->body);
	ap_buf_free(&sc->body_out);
	ap_buf_free(&sc->sig);
}

void ap_scrub_begin(struct ap_scrub *sc, const struct ap_ruleset *rs, unsigned max_depth,
                    size_t max_decoded)
{
	sc->rs = rs;
	sc->max_depth = max_depth ? max_depth : AP_DEPTH_DEFAULT;
	sc->max_decoded = max_decoded ? max_decoded : AP_DECODED_DEFAULT;
	sc->decoded = 0;
	sc->level = 0;
	sc->why = NULL;
	sc->err_off = 0;
	sc->pathlen = 0;
	sc->path[0] = 0;
	sc->where = AP_WHERE_BODY;
	sc->opaque_hdr = sc->opaque_fld = 0;
	sc->sign.on = false;
	sc->req_scopes = sc->ev_scopes = 0;
	sc->events = sc->events_dropped = 0;
	memset(sc->optout_hits, 0, sizeof(sc->optout_hits));
	memset(&sc->st, 0, sizeof(sc->st));
	/* A new generation empties every memo slot without touching them. */
	if (++sc->memo.gen == 0) {
		memset(sc->memo.slot, 0, sizeof(sc->memo.slot));
		sc->memo.gen = 1;
	}
	sc->memo.used = 0;
	ap_buf_clear(&sc->memo.bytes);
}

/* ---- per-user opt-outs ---- */

unsigned ap_scrub_user(struct ap_scrub *sc, const char *id, size_t n)
{
	return sc->user_scopes && n ? sc->user_scopes(sc->user_arg, id, n) : 0;
}

static void hit(struct ap_scrub *sc, unsigned bits)
{
	for (unsigned i = 0; i < 8; i++)
		if (bits >> i & 1)
			sc->optout_hits[i]++;
}

bool ap_scrub_optout_drops(struct ap_scrub *sc, unsigned scopes)
{
	unsigned take = scopes & (sc->route_scope | AP_SCOPE_ALL);

	if (take)
		hit(sc, take);
	return take != 0;
}

const struct ap_ruleset *ap_scrub_event_begin(struct ap_scrub *sc, unsigned scopes)
{
	const struct ap_ruleset *was = sc->rs;

	/* Counted once: the scopes an enclosing event (or the request) already brought are
	 * its hits, not this event's. */
	hit(sc, scopes & ~sc->ev_scopes &
	                (AP_SCOPE_PERSONALIZATION | AP_SCOPE_LOCATION | AP_SCOPE_MINOR));
	sc->ev_scopes = scopes;
	sc->rs = ap_ruleset_for(sc->rs, scopes);
	return was;
}

/* ---- findings ---- */

static void masked(const char *v, size_t n, char *out, size_t cap)
{
	size_t stars = n > 2 ? n - 2 : n, i, o = 0;

	if (stars > 12)
		stars = 12;
	for (i = 0; i < stars && o + 1 < cap; i++)
		out[o++] = '*';
	for (i = n > 2 ? n - 2 : n; i < n && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)v[i];
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	out[o] = 0;
}

static void found(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                  bool detected)
{
	struct ap_finding f;
	char m[32];

	sc->st.hits[act->cls][act->act]++;
	if (!sc->finding_cb)
		return;
	masked(v, v ? n : 0, m, sizeof(m));
	f.cls = act->cls;
	f.act = act->act;
	f.where = (uint8_t)sc->where;
	f.detected = detected;
	f.path = sc->path;
	f.masked = m;
	sc->finding_cb(sc->finding_arg, &f);
}

void ap_scrub_found(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                    bool detected)
{
	found(sc, act, v, n, detected);
}

static size_t path_add(struct ap_scrub *sc, const char *s, size_t n)
{
	size_t old = sc->pathlen;

	if (n > sizeof(sc->path) - 1 - sc->pathlen)
		n = sizeof(sc->path) - 1 - sc->pathlen;
	memcpy(sc->path + sc->pathlen, s, n);
	sc->pathlen += n;
	sc->path[sc->pathlen] = 0;
	return old;
}

size_t ap_scrub_path_key(struct ap_scrub *sc, const char *k, size_t n)
{
	char seg[AP_KEY_NAME_MAX + 2];
	size_t o = 0;

	if (!k)
		return path_add(sc, "$", 1);
	if (sc->pathlen && sc->path[sc->pathlen - 1] != ':' && sc->path[sc->pathlen - 1] != '>')
		seg[o++] = '.';
	for (size_t i = 0; i < n && o < sizeof(seg); i++) {
		unsigned char c = (unsigned char)k[i];
		seg[o++] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
	}
	return path_add(sc, seg, o);
}

size_t ap_scrub_path_idx(struct ap_scrub *sc, size_t idx)
{
	char seg[24];
	int n = snprintf(seg, sizeof(seg), "[%zu]", idx);
	return path_add(sc, seg, (size_t)n);
}

/* ---- values ---- */

const struct ap_action *ap_scrub_detect(struct ap_scrub *sc, const char *v, size_t n, bool numeric)
{
	const struct ap_ruleset *rs = sc->rs;
	enum ap_class c;

	if (!rs->detect)
		return NULL;
	c = ap_detect(v, n, rs->detect, numeric);
	if (c == AP_CLASS_NONE || rs->class_act[c].act == AP_ACT_NONE)
		return NULL;
	return &rs->class_act[c];
}

/* ---- identifiers inside text ---- */

/* Bytes an identifier is written with: digits, letters, and ":.-+@_" (MACs, IPs, UUIDs,
 * phone numbers, e-mail addresses). Anything else ends a token. */
static bool text_char[256];

static void text_init(void)
{
	static const char tok[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                          ":.-+@_";
	for (const char *t = tok; *t; t++)
		text_char[(unsigned char)*t] = true;
}

/* The part of token [s, e) a detector recognises: the token without the '.' and ':' that
 * end a sentence or start a label, or, failing that, what follows one of its first four
 * ':' or '=' ("imei:3569…", "mac:aa:bb:…"). Sets *act; NULL when nothing matched. */
static const char *text_match(struct ap_scrub *sc, const char *s, const char *e, size_t *n,
                              const struct ap_action **act)
{
	unsigned seps = 0;

	while (s < e && (*s == '.' || *s == ':'))
		s++;
	while (e > s && (e[-1] == '.' || e[-1] == ':'))
		e--;
	if (e - s < 6) /* the detectors' shortest: "a@b.cc" */
		return NULL;
	if ((*act = ap_scrub_detect(sc, s, (size_t)(e - s), false))) {
		*n = (size_t)(e - s);
		return s;
	}
	for (const char *c = s; c < e && seps < 4; c++) {
		if (*c != ':' && *c != '=')
			continue;
		seps++;
		if (e - c - 1 >= 6 &&
		    (*act = ap_scrub_detect(sc, c + 1, (size_t)(e - c - 1), false))) {
			*n = (size_t)(e - c - 1);
			return c + 1;
		}
	}
	return NULL;
}

int ap_scrub_text(struct ap_scrub *sc, const char *v, size_t n, struct ap_buf *out, bool *changed)
{
	const char *p, *e, *copied;
	size_t before = out->len;

	*changed = false;
	if (!sc->rs->detect_text || !sc->rs->detect || n < 6)
		return AP_OK; /* an empty value may have no buffer: v NULL */
	p = copied = v;
	e = v + n;
	if (ap_buf_reserve(out, n) != AP_OK) /* a buffer even for an empty result */
		goto nomem;
	if (!text_char['0'])
		text_init();
	while (p < e) {
		const char *s, *m;
		const struct ap_action *act;
		size_t mn;
		bool num;

		while (p < e && !text_char[(unsigned char)*p])
			p++;
		s = p;
		while (p < e && text_char[(unsigned char)*p])
			p++;
		if (!(m = text_match(sc, s, p, &mn, &act)))
			continue;
		if (act->act == AP_ACT_KEEP) {
			ap_scrub_found(sc, act, m, mn, true);
			continue;
		}
		if (ap_buf_add(out, copied, (size_t)(m - copied)) != AP_OK)
			goto nomem;
		copied = m + mn;
		*changed = true;
		if (act->act == AP_ACT_DROP)
			ap_scrub_found(sc, act, m, mn, true);
		else if (ap_scrub_apply(sc, act, m, mn, false, true, out, &num) != AP_OK)
			goto nomem;
	}
	if (*changed && ap_buf_add(out, copied, (size_t)(e - copied)) != AP_OK)
		goto nomem;
	if (!*changed)
		out->len = before;
	return AP_OK;
nomem:
	out->len = before;
	*changed = false;
	return ap_scrub_fail(sc, "out of memory", 0);
}

/* ---- the pseudonym cache across requests ---- */

void ap_scrub_cache_flush(struct ap_scrub *sc)
{
	if (++sc->pcache.gen == 0) {
		if (sc->pcache.slot)
			memset(sc->pcache.slot, 0, AP_PCACHE_SLOTS * sizeof(*sc->pcache.slot));
		sc->pcache.gen = 1;
	}
}

static struct ap_pcache_slot *cache_slot(struct ap_scrub *sc, const struct ap_action *act,
                                         const char *v, size_t n, bool numeric, XXH128_hash_t *h)
{
	struct ap_pcache *c = &sc->pcache;

	if (!c->slot) {
		if (!(c->slot = calloc(AP_PCACHE_SLOTS, sizeof(*c->slot))))
			return NULL;
		if (RAND_bytes((unsigned char *)c->seed, sizeof(c->seed)) != 1) {
			free(c->slot);
			c->slot = NULL;
			return NULL;
		}
		if (!c->gen)
			c->gen = 1;
	}
	*h = XXH3_128bits_withSeed(v, n, c->seed[0] ^ (uint64_t)(uintptr_t)act ^ numeric);
	h->high64 ^= c->seed[1];
	return &c->slot[h->low64 % AP_PCACHE_SLOTS];
}

static bool cache_get(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                      bool numeric, struct ap_buf *out, bool *numeric_out)
{
	XXH128_hash_t h;
	struct ap_pcache_slot *s = cache_slot(sc, act, v, n, numeric, &h);

	if (!s || s->gen != sc->pcache.gen || s->act != act || s->numeric != numeric ||
	    s->h1 != h.low64 || s->h2 != h.high64)
		return false;
	*numeric_out = s->numeric_out;
	return ap_buf_add(out, s->out, s->olen) == AP_OK;
}

static void cache_put(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                      bool numeric, const char *o, size_t on, bool numeric_out)
{
	XXH128_hash_t h;
	struct ap_pcache_slot *s;

	if (on > AP_PCACHE_OUT || !(s = cache_slot(sc, act, v, n, numeric, &h)))
		return;
	s->h1 = h.low64;
	s->h2 = h.high64;
	s->act = act;
	s->numeric = numeric;
	s->numeric_out = numeric_out;
	s->olen = (uint8_t)on;
	memcpy(s->out, o, on);
	s->gen = sc->pcache.gen;
}

int ap_scrub_apply(struct ap_scrub *sc, const struct ap_action *act, const char *v, size_t n,
                   bool numeric, bool detected, struct ap_buf *out, bool *numeric_out)
{
	struct ap_memo *m = &sc->memo;
	struct ap_memo_slot *s = NULL;
	uint64_t h;
	size_t before = out->len;

	*numeric_out = false;
	if (act->act != AP_ACT_HASH || n > 256 || m->used >= AP_MEMO_SLOTS * 3 / 4) {
		found(sc, act, v, n, detected);
		return ap_action_apply(&sc->ps, act, v, n, numeric, out, numeric_out);
	}
	h = XXH3_64bits_withSeed(v, n, (uint64_t)(uintptr_t)act ^ numeric);
	for (unsigned i = (unsigned)h;; i++) {
		s = &m->slot[i % AP_MEMO_SLOTS];
		if (s->gen != m->gen)
			break;
		if (s->h == h && s->act == act && s->vlen == n && s->numeric == numeric &&
		    memcmp(m->bytes.p + s->voff, v, n) == 0) {
			sc->st.memo_hits++;
			found(sc, act, v, n, detected);
			*numeric_out = s->numeric_out;
			return ap_buf_add(out, m->bytes.p + s->ooff, s->olen);
		}
	}
	found(sc, act, v, n, detected);
	if (cache_get(sc, act, v, n, numeric, out, numeric_out)) {
		sc->st.cache_hits++;
	} else {
		sc->st.hashed++;
		if (ap_action_apply(&sc->ps, act, v, n, numeric, out, numeric_out) != AP_OK)
			return AP_ERR;
		cache_put(sc, act, v, n, numeric, out->p + before, out->len - before, *numeric_out);
	}
	if (m->bytes.len + n + (out->len - before) > UINT32_MAX)
		return AP_OK;
	s->gen = m->gen;
	s->h = h;
	s->act = act;
	s->numeric = numeric;
	s->numeric_out = *numeric_out;
	s->voff = (uint32_t)m->bytes.len;
	s->vlen = (uint32_t)n;
	if (ap_buf_add(&m->bytes, v, n) != AP_OK)
		goto forget;
	s->ooff = (uint32_t)m->bytes.len;
	s->olen = (uint32_t)(out->len - before);
	if (ap_buf_add(&m->bytes, out->p + before, s->olen) != AP_OK)
		goto forget;
	m->used++;
	return AP_OK;
forget:
	s->gen = 0; /* memory is short: the memo is an optimisation, not a need */
	return AP_OK;
}

/* ---- nested codec chains ---- */

static const char *const codec_names[] = {
        [AP_CODEC_BASE64] = ">base64",
        [AP_CODEC_GZIP] = ">gzip",
        [AP_CODEC_DEFLATE] = ">deflate",
        [AP_CODEC_JSON] = ">",
        [AP_CODEC_NDJSON] = ">",
        [AP_CODEC_FORM] = ">form:",
        [AP_CODEC_URLENCODED] = ">urlencoded",
        [AP_CODEC_PAIRS] = ">pairs:",
        [AP_CODEC_PROTOBUF] = ">pb:",
};

static int scrub_terminal(struct ap_scrub *sc, const struct ap_field *f, struct ap_span in,
                          struct ap_buf *out, bool *changed)
{
	switch (f->codec[f->ncodec - 1]) {
	case AP_CODEC_JSON:
		return ap_scrub_json(sc, in, out, changed);
	case AP_CODEC_NDJSON:
		return ap_scrub_ndjson(sc, in, out, changed);
	case AP_CODEC_FORM:
		return ap_scrub_form(sc, in, out, changed);
	case AP_CODEC_PAIRS:
		return ap_scrub_pairs(sc, f, in, out, changed);
	case AP_CODEC_PROTOBUF:
		if (f->pb_root >= sc->rs->npb)
			return ap_scrub_fail(sc, "protobuf codec without a schema", 0);
		return ap_scrub_protobuf(sc, &sc->rs->pb[f->pb_root], in, out, changed);
	default:
		return ap_scrub_fail(sc, "codec chain does not end in a document format", 0);
	}
}

/* The styles each step found, so re-encoding writes the value back the way it came. */
struct chain_state {
	struct ap_b64_style b64[AP_CODEC_MAX];
	struct ap_pct_style pct[AP_CODEC_MAX];
	enum ap_zfmt zf[AP_CODEC_MAX];
	bool skipped[AP_CODEC_MAX]; /* an optional step the value was not in */
};

/* One decoding step of <f> into <dst>. Sets st->skipped[i] instead of failing when the
 * step is optional and the value is not in its encoding. */
static int decode_step(struct ap_scrub *sc, const struct ap_field *f, unsigned i,
                       struct chain_state *st, struct ap_span cur, struct ap_buf *dst)
{
	const char *why = NULL;
	bool optional = f->optional >> i & 1;
	int rc;

	st->skipped[i] = false;
	switch (f->codec[i]) {
	case AP_CODEC_BASE64:
		rc = ap_base64_decode(cur.p, cur.n, dst, &st->b64[i], &why);
		break;
	case AP_CODEC_URLENCODED:
		rc = ap_pct_decode(cur.p, cur.n, dst, &st->pct[i], &why);
		break;
	default:
		if (optional && f->codec[i] == AP_CODEC_GZIP &&
		    (cur.n < 2 || (unsigned char)cur.p[0] != 0x1f ||
		     (unsigned char)cur.p[1] != 0x8b)) {
			st->skipped[i] = true;
			return AP_OK;
		}
		st->zf[i] = f->codec[i] == AP_CODEC_GZIP ? AP_Z_GZIP : AP_Z_ZLIB;
		rc = ap_z_decode(&sc->z, &st->zf[i], cur.p, cur.n, dst,
		                 sc->max_decoded - sc->decoded, &why);
		break;
	}
	if (rc != AP_OK && optional && f->codec[i] == AP_CODEC_BASE64 &&
	    !(why && strcmp(why, "out of memory") == 0)) {
		st->skipped[i] = true; /* not base64: the next step reads it as it is */
		return AP_OK;
	}
	if (rc != AP_OK)
		return ap_scrub_fail(sc, why ? why : "cannot decode nested value", 0);
	return AP_OK;
}

static int encode_step(struct ap_scrub *sc, const struct ap_field *f, unsigned i,
                       const struct chain_state *st, struct ap_span cur, struct ap_buf *dst)
{
	const char *why = NULL;
	int rc;

	switch (f->codec[i]) {
	case AP_CODEC_BASE64:
		rc = ap_base64_encode(cur.p, cur.n, dst, &st->b64[i]);
		break;
	case AP_CODEC_URLENCODED:
		rc = ap_pct_encode(cur.p, cur.n, dst, &st->pct[i]);
		break;
	default:
		rc = ap_z_encode(&sc->z, st->zf[i], cur.p, cur.n, dst, &why);
		break;
	}
	if (rc != AP_OK)
		return ap_scrub_fail(sc, why ? why : "out of memory", 0);
	return AP_OK;
}

int ap_scrub_nested(struct ap_scrub *sc, const struct ap_field *f, const char *v, size_t n,
                    struct ap_buf *out, bool *changed)
{
	struct chain_state st;
	struct ap_level *lv;
	struct ap_buf *bufs[2];
	struct ap_span cur = {v, n};
	size_t plen = sc->pathlen;
	enum ap_where where = sc->where;
	unsigned last = f->ncodec - 1u, outer = last;
	int held = -1; /* which of bufs holds cur; -1: the value itself */
	int rc;

	*changed = false;
	if (n == 0)
		return AP_OK; /* an empty field holds no document */
	if (sc->level >= AP_LAYERS_MAX)
		return ap_scrub_fail(sc, "codecs nested too deep", 0);
	lv = &sc->lv[sc->level + 1];
	bufs[0] = &lv->a;
	bufs[1] = &lv->b;
	sc->st.layers++;
	for (unsigned i = 0; i < last; i++) {
		/* Each step writes into the buffer that does not hold its input. */
		struct ap_buf *dst = bufs[held == 0];

		ap_buf_clear(dst);
		if (decode_step(sc, f, i, &st, cur, dst) != AP_OK)
			return AP_ERR;
		if (st.skipped[i])
			continue;
		if (outer == last)
			outer = i;
		sc->decoded += dst->len;
		if (sc->decoded > sc->max_decoded)
			return ap_scrub_fail(sc, AP_WHY_TOO_BIG, 0);
		cur = ap_buf_span(dst);
		held = dst == bufs[0] ? 0 : 1;
	}
	if (sc->finding_cb)
		for (unsigned i = 0; i <= last; i++)
			if (i == last || !st.skipped[i])
				path_add(sc, codec_names[f->codec[i]],
				         strlen(codec_names[f->codec[i]]));
	if (f->codec[last] == AP_CODEC_FORM)
		sc->where = AP_WHERE_BODY;
	ap_buf_clear(&lv->doc);
	sc->level++;
	rc = scrub_terminal(sc, f, cur, &lv->doc, changed);
	sc->level--;
	sc->where = where;
	ap_scrub_path_pop(sc, plen);
	if (rc != AP_OK || !*changed)
		return rc;
	cur = ap_buf_span(&lv->doc);
	held = 2;
	for (unsigned i = last; i-- > 0;) {
		struct ap_buf *dst;

		if (st.skipped[i])
			continue;
		dst = i == outer ? out : bufs[held == 0];
		if (dst != out)
			ap_buf_clear(dst);
		if (encode_step(sc, f, i, &st, cur, dst) != AP_OK)
			return AP_ERR;
		cur = ap_buf_span(dst);
		held = dst == bufs[0] ? 0 : 1;
	}
	if (outer == last && ap_buf_add(out, cur.p, cur.n) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	return AP_OK;
}

/* ---- bodies ---- */

enum body_type { BODY_UNKNOWN, BODY_JSON, BODY_NDJSON, BODY_FORM, BODY_CHAIN };

/* The media type of a Content-Type value: no parameters, no surrounding white space. */
static struct ap_span media_type(struct ap_span ctype)
{
	const char *semi = memchr(ctype.p, ';', ctype.n);

	return ap_span_trim((struct ap_span){ctype.p, semi ? (size_t)(semi - ctype.p) : ctype.n});
}

static enum body_type body_type(struct ap_span mt)
{
	if (ap_span_ieq(mt, "application/json") || ap_span_ieq(mt, "text/json"))
		return BODY_JSON;
	if (mt.n > 17 && memchr(mt.p, '/', mt.n) &&
	    ap_span_ieq((struct ap_span){mt.p, 12}, "application/") &&
	    ap_span_ieq((struct ap_span){mt.p + mt.n - 5, 5}, "+json"))
		return BODY_JSON;
	if (ap_span_ieq(mt, "application/x-ndjson") || ap_span_ieq(mt, "application/ndjson") ||
	    ap_span_ieq(mt, "application/jsonl") || ap_span_ieq(mt, "application/x-jsonlines"))
		return BODY_NDJSON;
	if (ap_span_ieq(mt, "application/x-www-form-urlencoded"))
		return BODY_FORM;
	return BODY_UNKNOWN;
}

/* ---- opaque payloads ---- */

static bool in_list(const char (*vals)[AP_KEY_NAME_MAX], unsigned n, const char *v, size_t vn)
{
	for (unsigned i = 0; i < n; i++)
		if (strlen(vals[i]) == vn && memcmp(vals[i], v, vn) == 0)
			return true;
	return false;
}

void ap_scrub_opaque_header(struct ap_scrub *sc, struct ap_span name, struct ap_span value)
{
	const struct ap_ruleset *rs = sc->rs;

	for (unsigned i = 0; i < rs->nopaque; i++) {
		const struct ap_opaque_rule *o = &rs->opaque[i];
		if (!o->header_len || name.n != o->header_len || !ap_span_ieq(name, o->header))
			continue;
		value = ap_span_trim(value);
		if (!o->nhvals || in_list(o->hvals, o->nhvals, value.p, value.n))
			sc->opaque_hdr |= 1u << i;
	}
}

void ap_scrub_opaque_field(struct ap_scrub *sc, const char *k, size_t kn, const char *v, size_t vn)
{
	const struct ap_ruleset *rs = sc->rs;

	for (unsigned i = 0; i < rs->nopaque; i++) {
		const struct ap_opaque_rule *o = &rs->opaque[i];
		if (o->fname_len && kn == o->fname_len && memcmp(k, o->fname, kn) == 0 &&
		    (!o->nfvals || in_list(o->fvals, o->nfvals, v, vn)))
			sc->opaque_fld |= 1u << i;
	}
}

static int hexdigit(char ch)
{
	unsigned char c = (unsigned char)ch;

	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes <p, n> into dst[cap]; -1 when it does not fit or has a bad escape. */
static long pct_small(const char *p, size_t n, char *dst, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++, o++) {
		char c = p[i];
		if (o == cap)
			return -1;
		if (c == '+')
			c = ' ';
		else if (c == '%') {
			int h, l;
			if (n - i < 3 || (h = hexdigit(p[i + 1])) < 0 ||
			    (l = hexdigit(p[i + 2])) < 0)
				return -1;
			c = (char)(h << 4 | l);
			i += 2;
		}
		dst[o] = c;
	}
	return (long)o;
}

/* Marks the opaque rules whose field condition the form body <doc> meets. Only names and
 * values short enough to be configured are decoded; nothing is written. */
static void opaque_form(struct ap_scrub *sc, struct ap_span doc)
{
	const char *p = doc.p, *end = doc.p + doc.n;

	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		char k[AP_KEY_NAME_MAX], v[AP_KEY_NAME_MAX];
		long kn, vn;

		if (eq && (kn = pct_small(p, (size_t)(eq - p), k, sizeof(k))) > 0 &&
		    (vn = pct_small(eq + 1, (size_t)(pe - eq - 1), v, sizeof(v))) >= 0)
			ap_scrub_opaque_field(sc, k, (size_t)kn, v, (size_t)vn);
		p = pe + 1;
	}
}

/* The first opaque rule the request meets, or -1. <form> is the decoded form body, if the
 * body is one and its field conditions are to be checked now. */
static int opaque_match(struct ap_scrub *sc, struct ap_span mt, const struct ap_span *form)
{
	const struct ap_ruleset *rs = sc->rs;

	if (form)
		opaque_form(sc, *form);
	for (unsigned i = 0; i < rs->nopaque; i++) {
		const struct ap_opaque_rule *o = &rs->opaque[i];
		bool ok = !o->nmedia;

		for (unsigned m = 0; m < o->nmedia && !ok; m++)
			ok = ap_rules_media_match(&o->media[m], mt);
		if (!ok)
			continue;
		if (o->header_len && !(sc->opaque_hdr >> i & 1))
			continue;
		if (o->fname_len && !(sc->opaque_fld >> i & 1))
			continue;
		return (int)i;
	}
	return -1;
}

/* An opaque payload: counted, then forwarded as it came or refused, as the route says. */
static int opaque(struct ap_scrub *sc, int rule, int *status)
{
	sc->st.opaque++;
	if (sc->finding_cb) {
		char path[AP_KEY_NAME_MAX + 8];
		struct ap_finding f = {.cls = AP_CLASS_OTHER,
		                       .act = sc->rs->opaque_pass ? AP_ACT_KEEP : AP_ACT_DROP,
		                       .where = AP_WHERE_BODY,
		                       .path = path,
		                       .masked = ""};
		snprintf(path, sizeof(path), "opaque:%s", sc->rs->opaque[rule].name);
		sc->finding_cb(sc->finding_arg, &f);
	}
	if (sc->rs->opaque_pass)
		return AP_OK;
	*status = AP_OPAQUE_STATUS;
	return ap_scrub_fail(sc, AP_WHY_OPAQUE, 0);
}

/* Trims the punctuation that surrounds an identifier in text: "(", ")", ".", ":". */
static struct ap_span trim_punct(const char *p, size_t n)
{
	while (n && (*p == '(' || *p == ')' || *p == '.' || *p == ':')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == '(' || p[n - 1] == ')' || p[n - 1] == '.' || p[n - 1] == ':'))
		n--;
	return (struct ap_span){p, n};
}

static bool detected(const char *p, size_t n)
{
	struct ap_span t = trim_punct(p, n);
	return t.n && ap_detect(t.p, t.n, AP_DET_ALL, false) != AP_CLASS_NONE;
}

/* One token of identifier characters: the whole of it, each part between parentheses,
 * and what follows each ':' of a part ("imei:3569…", "mac:aa:bb:…") go to the detectors. */
static bool token_hits(const char *p, size_t n)
{
	const char *e = p + n;

	if (detected(p, n))
		return true;
	while (p < e) {
		const char *q = p;
		while (q < e && *q != '(' && *q != ')')
			q++;
		if (q > p && detected(p, (size_t)(q - p)))
			return true;
		for (const char *c = p; c < q; c++)
			if (*c == ':' && detected(c + 1, (size_t)(q - c - 1)))
				return true;
		p = q + 1;
	}
	return false;
}

/* The "scan" policy: every run of characters an identifier can be made of is put to the
 * detectors, whole and in its parts. */
static bool scan_hits(struct ap_scrub *sc, struct ap_span in)
{
	static const char tok[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                          ":.-+@_()";
	static bool table[256], ready;
	size_t i = 0;

	AP_UNUSED(sc);
	if (!ready) {
		for (const char *t = tok; *t; t++)
			table[(unsigned char)*t] = true;
		ready = true;
	}
	while (i < in.n) {
		size_t s;
		while (i < in.n && !table[(unsigned char)in.p[i]])
			i++;
		s = i;
		while (i < in.n && table[(unsigned char)in.p[i]])
			i++;
		if (i > s && token_hits(in.p + s, i - s))
			return true;
	}
	return false;
}

int ap_scrub_body(struct ap_scrub *sc, struct ap_span ctype, struct ap_span cenc,
                  enum ap_unknown unknown, struct ap_span in, struct ap_buf *out, bool *changed,
                  int *status)
{
	const struct ap_ruleset *rs = sc->rs;
	struct ap_span mt = media_type(ctype);
	enum body_type t = body_type(mt);
	struct ap_span enc = ap_span_trim(cenc), doc = in;
	const struct ap_field *chain = NULL;
	enum ap_zfmt zf = 0;
	struct ap_buf *dst = out;
	const char *why = NULL;
	int rc, o;

	*changed = false;
	*status = 400;
	sc->where = AP_WHERE_BODY;
	if (in.n == 0)
		return AP_OK;
	/* A payload a profile knows to be opaque is recognised before anything reads it. */
	if (rs->nopaque && (o = opaque_match(sc, mt, NULL)) >= 0)
		return opaque(sc, o, status);
	for (unsigned i = 0; i < rs->nbodies && !chain; i++)
		if (ap_rules_media_match(&rs->bodies[i].media, mt)) {
			chain = &rs->fields[rs->bodies[i].field];
			t = BODY_CHAIN;
		}
	if (t == BODY_UNKNOWN && unknown == AP_UNKNOWN_PASS)
		return AP_OK;
	if (t == BODY_UNKNOWN && unknown == AP_UNKNOWN_REJECT) {
		*status = 415;
		return ap_scrub_fail(sc, "content type not scrubbed on this route", 0);
	}
	if (enc.n == 0 || ap_span_ieq(enc, "identity"))
		zf = 0;
	else if (ap_span_ieq(enc, "gzip") || ap_span_ieq(enc, "x-gzip"))
		zf = AP_Z_GZIP;
	else if (ap_span_ieq(enc, "deflate"))
		zf = AP_Z_ZLIB;
	else {
		*status = 415;
		return ap_scrub_fail(sc, "unsupported Content-Encoding", 0);
	}
	if (zf) {
		ap_buf_clear(&sc->body);
		if (ap_z_decode(&sc->z, &zf, in.p, in.n, &sc->body, sc->max_decoded, &why) !=
		    AP_OK) {
			if (why && strcmp(why, AP_WHY_TOO_BIG) == 0)
				*status = 413;
			return ap_scrub_fail(sc, why ? why : "cannot decode body", 0);
		}
		sc->decoded += sc->body.len;
		doc = ap_buf_span(&sc->body);
		dst = &sc->body_out;
		ap_buf_clear(dst);
	}
	/* A field condition ("gzip=9") is looked up before the form is scrubbed: a field
	 * before it may hold what cannot be decoded precisely because the payload is opaque. */
	if (rs->nopaque && t == BODY_FORM && (o = opaque_match(sc, mt, &doc)) >= 0)
		return opaque(sc, o, status);
	switch (t) {
	case BODY_JSON:
		rc = ap_scrub_json(sc, doc, dst, changed);
		break;
	case BODY_NDJSON:
		rc = ap_scrub_ndjson(sc, doc, dst, changed);
		break;
	case BODY_FORM:
		rc = ap_scrub_form(sc, doc, dst, changed);
		break;
	case BODY_CHAIN: {
		size_t plen = sc->pathlen;
		if (sc->finding_cb)
			path_add(sc, "body", 4);
		rc = ap_scrub_nested(sc, chain, doc.p, doc.n, dst, changed);
		ap_scrub_path_pop(sc, plen);
		break;
	}
	default:
		if (scan_hits(sc, doc)) {
			*status = 422;
			return ap_scrub_fail(sc, "identifier found in a content type not scrubbed",
			                     0);
		}
		return AP_OK;
	}
	if (rc != AP_OK) {
		if (sc->why && strcmp(sc->why, AP_WHY_TOO_BIG) == 0)
			*status = 413;
		return AP_ERR;
	}
	if (zf && *changed && ap_z_encode(&sc->z, zf, dst->p, dst->len, out, &why) != AP_OK)
		return ap_scrub_fail(sc, why ? why : "cannot re-encode body", 0);
	return AP_OK;
}
