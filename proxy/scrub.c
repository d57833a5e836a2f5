/* The scrubbing core's dispatcher and the services every format scrubber shares: the
 * per-request pseudonym memo, detector lookups, nested codec chains, findings and their
 * paths. It knows content types and encodings; it does not know any format's syntax. */
#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

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
	memset(&sc->st, 0, sizeof(sc->st));
	/* A new generation empties every memo slot without touching them. */
	if (++sc->memo.gen == 0) {
		memset(sc->memo.slot, 0, sizeof(sc->memo.slot));
		sc->memo.gen = 1;
	}
	sc->memo.used = 0;
	ap_buf_clear(&sc->memo.bytes);
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
	sc->st.hashed++;
	if (ap_action_apply(&sc->ps, act, v, n, numeric, out, numeric_out) != AP_OK)
		return AP_ERR;
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
        [AP_CODEC_BASE64] = ">base64", [AP_CODEC_GZIP] = ">gzip", [AP_CODEC_DEFLATE] = ">deflate",
        [AP_CODEC_JSON] = ">",         [AP_CODEC_NDJSON] = ">",   [AP_CODEC_FORM] = ">form:",
};

static int scrub_terminal(struct ap_scrub *sc, uint8_t codec, struct ap_span in, struct ap_buf *out,
                          bool *changed)
{
	switch (codec) {
	case AP_CODEC_JSON:
		return ap_scrub_json(sc, in, out, changed);
	case AP_CODEC_NDJSON:
		return ap_scrub_ndjson(sc, in, out, changed);
	case AP_CODEC_FORM:
		return ap_scrub_form(sc, in, out, changed);
	default:
		return ap_scrub_fail(sc, "codec chain does not end in a document format", 0);
	}
}

int ap_scrub_nested(struct ap_scrub *sc, const struct ap_field *f, const char *v, size_t n,
                    struct ap_buf *out, bool *changed)
{
	struct ap_b64_style b64[AP_CODEC_MAX];
	enum ap_zfmt zf[AP_CODEC_MAX];
	struct ap_level *lv;
	struct ap_buf *bufs[2];
	struct ap_span cur = {v, n};
	size_t plen = sc->pathlen;
	enum ap_where where = sc->where;
	unsigned last = f->ncodec - 1u;
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
		struct ap_buf *dst = bufs[i & 1];
		const char *why = NULL;

		ap_buf_clear(dst);
		if (f->codec[i] == AP_CODEC_BASE64)
			rc = ap_base64_decode(cur.p, cur.n, dst, &b64[i], &why);
		else {
			zf[i] = f->codec[i] == AP_CODEC_GZIP ? AP_Z_GZIP : AP_Z_ZLIB;
			rc = ap_z_decode(&sc->z, &zf[i], cur.p, cur.n, dst,
			                 sc->max_decoded - sc->decoded, &why);
		}
		if (rc != AP_OK)
			return ap_scrub_fail(sc, why ? why : "cannot decode nested value", 0);
		sc->decoded += dst->len;
		if (sc->decoded > sc->max_decoded)
			return ap_scrub_fail(sc, AP_WHY_TOO_BIG, 0);
		cur = ap_buf_span(dst);
	}
	if (sc->finding_cb)
		for (unsigned i = 0; i <= last; i++)
			path_add(sc, codec_names[f->codec[i]], strlen(codec_names[f->codec[i]]));
	if (f->codec[last] == AP_CODEC_FORM)
		sc->where = AP_WHERE_BODY;
	ap_buf_clear(&lv->doc);
	sc->level++;
	rc = scrub_terminal(sc, f->codec[last], cur, &lv->doc, changed);
	sc->level--;
	sc->where = where;
	ap_scrub_path_pop(sc, plen);
	if (rc != AP_OK || !*changed)
		return rc;
	cur = ap_buf_span(&lv->doc);
	for (unsigned i = last; i-- > 0;) {
		struct ap_buf *dst = i == 0 ? out : bufs[i & 1];
		const char *why = NULL;

		if (dst != out)
			ap_buf_clear(dst);
		if (f->codec[i] == AP_CODEC_BASE64)
			rc = ap_base64_encode(cur.p, cur.n, dst, &b64[i]);
		else
			rc = ap_z_encode(&sc->z, zf[i], cur.p, cur.n, dst, &why);
		if (rc != AP_OK)
			return ap_scrub_fail(sc, why ? why : "out of memory", 0);
		cur = ap_buf_span(dst);
	}
	if (last == 0 && ap_buf_add(out, cur.p, cur.n) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	return AP_OK;
}

/* ---- bodies ---- */

enum body_type { BODY_UNKNOWN, BODY_JSON, BODY_NDJSON, BODY_FORM };

static enum body_type body_type(struct ap_span ctype)
{
	const char *semi = memchr(ctype.p, ';', ctype.n);
	struct ap_span mt =
	        ap_span_trim((struct ap_span){ctype.p, semi ? (size_t)(semi - ctype.p) : ctype.n});

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
	enum body_type t = body_type(ctype);
	struct ap_span enc = ap_span_trim(cenc), doc = in;
	enum ap_zfmt zf = 0;
	struct ap_buf *dst = out;
	const char *why = NULL;
	int rc;

	*changed = false;
	*status = 400;
	sc->where = AP_WHERE_BODY;
	if (in.n == 0)
		return AP_OK;
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
