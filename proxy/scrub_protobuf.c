/* The protobuf wire format, read generically (varint, 64-bit, length-delimited, 32-bit)
 * under a schema of field-number paths ("1.19": field 19 of the message in field 1). Only
 * the length-delimited fields the schema names are opened; every other field is copied as
 * it came. Configured fields get their action (string, bytes, varint), a codec chain, or
 * the detectors. When a value changes length, every enclosing length prefix is rewritten,
 * and only those: the output is built lazily in one pass, a nested message's prefix is
 * fixed when the message ends. Groups, unknown wire types, field number 0, overlong
 * varints and anything truncated are refused: the payload is not what it claims. */
#include <stdio.h>

#include "detect.h"
#include "scrub.h"

#define PB_DEPTH_MAX (AP_PATH_SEGS_MAX + 1)

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* An enclosing message whose length prefix may need rewriting. */
struct pblevel {
	const char *len_at;  /* its length varint in the input */
	const char *content; /* its first content byte */
	size_t len;          /* its content length in the input */
	size_t out_len_at;   /* once started: where its length varint is in the output */
	bool started;        /* its prefix is in the output (something inside changed) */
};

struct pbscan {
	struct ap_scrub *sc;
	const struct ap_ruleset *rs;
	struct ap_level *lv;
	const char *beg, *end, *copied;
	struct ap_buf *out;
	bool changed;
	unsigned depth;
	struct pblevel lvl[PB_DEPTH_MAX];
	char num[24]; /* a varint's decimal text */
};

static int fail(struct pbscan *s, const char *why, const char *at)
{
	return ap_scrub_fail(s->sc, why, (size_t)(at - s->beg));
}

/* Reads a varint at *p (before <e>): at most 10 bytes, the 10th at most 1. */
static int varint(struct pbscan *s, const char **p, const char *e, uint64_t *v)
{
	const char *q = *p;
	uint64_t r = 0;

	for (unsigned i = 0; i < 10; i++) {
		unsigned char b;
		if (q >= e)
			return fail(s, "truncated protobuf", q);
		b = (unsigned char)*q++;
		if (i == 9 && b > 1)
			return fail(s, "protobuf varint longer than 64 bits", *p);
		r |= (uint64_t)(b & 0x7F) << (7 * i);
		if (!(b & 0x80)) {
			*v = r;
			*p = q;
			return AP_OK;
		}
	}
	return fail(s, "protobuf varint longer than 10 bytes", *p);
}

static size_t varint_put(uint64_t v, char *b)
{
	size_t n = 0;

	do {
		b[n++] = (char)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

/* Starts the output up to <upto>: every enclosing message whose prefix is not out yet gets
 * it (as it came: it is fixed when the message ends), outermost first. */
static int flush(struct pbscan *s, const char *upto)
{
	for (unsigned d = 0; d < s->depth; d++) {
		struct pblevel *l = &s->lvl[d];
		if (l->started)
			continue;
		if (ap_buf_add(s->out, s->copied, (size_t)(l->len_at - s->copied)) != AP_OK)
			return ap_scrub_fail(s->sc, "out of memory", 0);
		l->out_len_at = s->out->len;
		if (ap_buf_add(s->out, l->len_at, (size_t)(l->content - l->len_at)) != AP_OK)
			return ap_scrub_fail(s->sc, "out of memory", 0);
		s->copied = l->content;
		l->started = true;
	}
	if (ap_buf_add(s->out, s->copied, (size_t)(upto - s->copied)) != AP_OK)
		return ap_scrub_fail(s->sc, "out of memory", 0);
	s->copied = upto;
	s->changed = true;
	return AP_OK;
}

/* The innermost message ends at <e>: if its output started, its length is what was
 * written, and the prefix is re-encoded when that differs from what came. */
static int level_end(struct pbscan *s, const char *e)
{
	struct pblevel *l = &s->lvl[s->depth - 1];
	size_t old_vlen = (size_t)(l->content - l->len_at), new_len, k;
	char v[10];

	if (!l->started)
		return AP_OK;
	if (flush(s, e) != AP_OK)
		return AP_ERR;
	new_len = s->out->len - l->out_len_at - old_vlen;
	if (new_len == l->len)
		return AP_OK; /* the prefix that came, byte for byte */
	k = varint_put(new_len, v);
	if (k > old_vlen && ap_buf_reserve(s->out, k - old_vlen) != AP_OK)
		return ap_scrub_fail(s->sc, "out of memory", 0);
	if (k != old_vlen)
		memmove(s->out->p + l->out_len_at + k, s->out->p + l->out_len_at + old_vlen,
		        new_len);
	memcpy(s->out->p + l->out_len_at, v, k);
	s->out->len = l->out_len_at + k + new_len;
	return AP_OK;
}

/* Writes the length-delimited field whose length varint starts at <len_at> with the new
 * content <r, n>, in place of what the input had up to <fe>. */
static int replace_len(struct pbscan *s, const char *len_at, const char *fe, const char *r,
                       size_t n)
{
	char v[10];
	size_t k = varint_put(n, v);

	if (flush(s, len_at) != AP_OK || ap_buf_add(s->out, v, k) != AP_OK ||
	    ap_buf_add(s->out, r, n) != AP_OK)
		return ap_scrub_fail(s->sc, "out of memory", 0);
	s->copied = fe;
	return AP_OK;
}

/* Removes the whole field [fs, fe). */
static int remove_field(struct pbscan *s, const char *fs, const char *fe)
{
	if (flush(s, fs) != AP_OK)
		return AP_ERR;
	s->copied = fe;
	return AP_OK;
}

static bool wire_fits(uint8_t type, unsigned wt)
{
	switch (type) {
	case AP_PB_VARINT:
		return wt == WT_VARINT;
	case AP_PB_FIXED64:
		return wt == WT_I64;
	case AP_PB_FIXED32:
		return wt == WT_I32;
	default:
		return wt == WT_LEN;
	}
}

/* A length-delimited value [v, v + n) under <node> (a string or bytes leaf). */
static int len_value(struct pbscan *s, const struct ap_pb_node *node, const char *fs,
                     const char *len_at, const char *v, size_t n, const char *fe)
{
	struct ap_scrub *sc = s->sc;
	struct ap_level *lv = s->lv;
	const struct ap_field *fl =
	        node->field != AP_FIELD_NONE ? &s->rs->fields[node->field] : NULL;
	const struct ap_action *act;
	bool detected = false, num, ch = false;

	if (fl && fl->ncodec) {
		ap_buf_clear(&lv->rep);
		if (ap_scrub_nested(sc, fl, v, n, &lv->rep, &ch) != AP_OK)
			return AP_ERR;
		return ch ? replace_len(s, len_at, fe, lv->rep.p, lv->rep.len) : AP_OK;
	}
	if (fl)
		act = &fl->act;
	else if (node->type == AP_PB_STRING && (act = ap_scrub_detect(sc, v, n, false)))
		detected = true;
	else
		return AP_OK;
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(sc, act, v, n, detected);
		return act->act == AP_ACT_DROP ? remove_field(s, fs, fe) : AP_OK;
	}
	if (n == 0)
		return AP_OK;
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(sc, act, v, n, false, detected, &lv->rep, &num) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	return replace_len(s, len_at, fe, lv->rep.p, lv->rep.len);
}

/* A varint value at [v, fe) under <node>. A hash keeps it a number: its decimal digits are
 * replaced by as many others (the configuration makes the hash "preserve"), read back
 * modulo 2^64. */
static int varint_value(struct pbscan *s, const struct ap_pb_node *node, const char *fs,
                        const char *v, const char *fe, uint64_t x)
{
	struct ap_scrub *sc = s->sc;
	struct ap_level *lv = s->lv;
	const struct ap_action *act;
	int n = snprintf(s->num, sizeof(s->num), "%llu", (unsigned long long)x);
	uint64_t y = 0;
	bool num;
	char b[10];
	size_t k;

	if (node->field == AP_FIELD_NONE)
		return AP_OK;
	act = &s->rs->fields[node->field].act;
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(sc, act, s->num, (size_t)n, false);
		return act->act == AP_ACT_DROP ? remove_field(s, fs, fe) : AP_OK;
	}
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(sc, act, s->num, (size_t)n, true, false, &lv->rep, &num) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	for (size_t i = 0; i < lv->rep.len; i++) {
		char c = lv->rep.p[i];
		if (c < '0' || c > '9')
			return ap_scrub_fail(sc, "a protobuf varint can only be hashed into digits",
			                     (size_t)(v - s->beg));
		y = y * 10 + (uint64_t)(c - '0'); /* wraps: modulo 2^64 */
	}
	if (y == x)
		return AP_OK;
	k = varint_put(y, b);
	if (flush(s, v) != AP_OK || ap_buf_add(s->out, b, k) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	s->copied = fe;
	return AP_OK;
}

static size_t path_num(struct ap_scrub *sc, uint64_t num)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%s%llu",
	                 sc->pathlen && sc->path[sc->pathlen - 1] != ':' ? "." : "",
	                 (unsigned long long)num);
	size_t old = sc->pathlen;

	if ((size_t)n > sizeof(sc->path) - 1 - sc->pathlen)
		n = (int)(sizeof(sc->path) - 1 - sc->pathlen);
	memcpy(sc->path + sc->pathlen, b, (size_t)n);
	sc->pathlen += (size_t)n;
	sc->path[sc->pathlen] = 0;
	return old;
}

/* The fields of one message [p, e) under schema node <node>. */
static int message(struct pbscan *s, const struct ap_pb_node *node, const char *p, const char *e)
{
	struct ap_scrub *sc = s->sc;

	while (p < e) {
		const char *fs = p, *v, *len_at = NULL;
		const struct ap_pb_node *c;
		uint64_t key, x = 0, n = 0;
		unsigned wt;
		int rc = AP_OK;
		size_t plen = sc->pathlen;

		if (varint(s, &p, e, &key) != AP_OK)
			return AP_ERR;
		wt = (unsigned)(key & 7);
		if (key >> 3 == 0 || key >> 3 > AP_PB_NUM_MAX)
			return fail(s, "protobuf field number out of range", fs);
		v = p;
		switch (wt) {
		case WT_VARINT:
			if (varint(s, &p, e, &x) != AP_OK)
				return AP_ERR;
			break;
		case WT_I64:
		case WT_I32:
			if ((size_t)(e - p) < (wt == WT_I64 ? 8u : 4u))
				return fail(s, "truncated protobuf", p);
			p += wt == WT_I64 ? 8 : 4;
			break;
		case WT_LEN:
			len_at = p;
			if (varint(s, &p, e, &n) != AP_OK)
				return AP_ERR;
			if (n > (uint64_t)(e - p))
				return fail(s, "truncated protobuf", len_at);
			v = p;
			p += n;
			break;
		default:
			return fail(s,
			            wt == WT_SGROUP || wt == WT_EGROUP
			                    ? "protobuf groups are not supported"
			                    : "unknown protobuf wire type",
			            fs);
		}
		if (!(c = ap_rules_pb_child(s->rs, node, (uint32_t)(key >> 3))))
			continue;
		if (!wire_fits(c->type, wt))
			return fail(s, "protobuf field has an unexpected wire type", fs);
		if (sc->finding_cb)
			path_num(sc, key >> 3);
		if (c->type == AP_PB_MESSAGE && c->field == AP_FIELD_NONE) {
			struct pblevel *l;
			if (s->depth == PB_DEPTH_MAX)
				return fail(s, "protobuf nested too deep", fs);
			l = &s->lvl[s->depth++];
			*l = (struct pblevel){len_at, v, (size_t)n, 0, false};
			rc = message(s, c, v, p);
			if (rc == AP_OK)
				rc = level_end(s, p);
			s->depth--;
		} else if (c->type == AP_PB_MESSAGE || c->type == AP_PB_FIXED64 ||
		           c->type == AP_PB_FIXED32) {
			const struct ap_action *act = &s->rs->fields[c->field].act;
			ap_scrub_found(sc, act, NULL, 0, false);
			if (act->act == AP_ACT_DROP)
				rc = remove_field(s, fs, p);
		} else if (c->type == AP_PB_VARINT)
			rc = varint_value(s, c, fs, v, p, x);
		else
			rc = len_value(s, c, fs, len_at, v, (size_t)n, p);
		ap_scrub_path_pop(sc, plen);
		if (rc != AP_OK)
			return AP_ERR;
	}
	return AP_OK;
}

int ap_scrub_protobuf(struct ap_scrub *sc, const struct ap_pb_node *root, struct ap_span in,
                      struct ap_buf *out, bool *changed)
{
	struct pbscan s;

	s.sc = sc;
	s.rs = sc->rs;
	s.lv = &sc->lv[sc->level];
	s.beg = s.copied = in.p;
	s.end = in.p + in.n;
	s.out = out;
	s.changed = false;
	s.depth = 0;
	*changed = false;
	if (message(&s, root, in.p, s.end) != AP_OK)
		return AP_ERR;
	if (s.changed && flush(&s, s.end) != AP_OK)
		return AP_ERR;
	*changed = s.changed;
	return AP_OK;
}
