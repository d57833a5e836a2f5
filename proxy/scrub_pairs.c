/* "Pairs": a value that is itself a list of key=value elements, such as Sensors'
 * "android_id=…##imei=…##mac=…". The separator and the assignment are configured per codec
 * entry ("##" and "=" by default). Keys match the ruleset's key rules as form keys do
 * (exact bytes, ASCII case-insensitive, no percent-decoding); values get their rule's
 * action or codec chain, or the detectors. Everything not rewritten is copied byte for
 * byte. An element without the assignment is a bare token: the detectors see it whole. */
#include "detect.h"
#include "scrub.h"

struct pscan {
	struct ap_scrub *sc;
	struct ap_level *lv;
	const struct ap_field *f; /* the codec entry: separator and assignment */
	const char *beg, *end, *copied;
	struct ap_buf *out;
	bool changed;
};

static const char *find(const char *p, const char *e, const char *needle, size_t n)
{
	if ((size_t)(e - p) < n)
		return NULL;
	return memmem(p, (size_t)(e - p), needle, n);
}

static int flush(struct pscan *s, const char *upto)
{
	if (ap_buf_add(s->out, s->copied, (size_t)(upto - s->copied)) != AP_OK)
		return ap_scrub_fail(s->sc, "out of memory", 0);
	s->copied = upto;
	s->changed = true;
	return AP_OK;
}

/* Replaces [from, to) of the input by <r, n>, which must not hold the separator (the
 * element would split in two) nor, in a key, the assignment. */
static int replace(struct pscan *s, const char *from, const char *to, const char *r, size_t n,
                   bool key)
{
	const struct ap_field *f = s->f;

	if (n && (find(r, r + n, f->sep, f->sep_len) || (key && find(r, r + n, f->eq, f->eq_len))))
		return ap_scrub_fail(s->sc, "a replacement would break the pairs format",
		                     (size_t)(from - s->beg));
	if (flush(s, from) != AP_OK || ap_buf_add(s->out, r, n) != AP_OK)
		return ap_scrub_fail(s->sc, "out of memory", 0);
	s->copied = to;
	return AP_OK;
}

/* The value [v, ve) under rule <fl> (NULL: the detectors). Sets *drop when the element
 * must go. */
static int value(struct pscan *s, const struct ap_field *fl, const char *v, const char *ve,
                 bool *drop)
{
	struct ap_scrub *sc = s->sc;
	struct ap_level *lv = s->lv;
	const struct ap_action *act;
	size_t n = (size_t)(ve - v);
	bool detected = false, num, ch = false;

	if (fl && fl->act.act == AP_ACT_DROP) {
		ap_scrub_found(sc, &fl->act, NULL, 0, false);
		*drop = true;
		return AP_OK;
	}
	if (fl && fl->ncodec) {
		ap_buf_clear(&lv->rep);
		if (ap_scrub_nested(sc, fl, v, n, &lv->rep, &ch) != AP_OK)
			return AP_ERR;
		return ch ? replace(s, v, ve, lv->rep.p, lv->rep.len, false) : AP_OK;
	}
	if (fl)
		act = &fl->act;
	else if (n && (act = ap_scrub_detect(sc, v, n, false)))
		detected = true;
	else
		return AP_OK;
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(sc, act, v, n, detected);
		*drop = act->act == AP_ACT_DROP;
		return AP_OK;
	}
	if (n == 0)
		return AP_OK; /* an SDK's "imei=" when it has none: nothing to hide */
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(sc, act, v, n, false, detected, &lv->rep, &num) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	return replace(s, v, ve, lv->rep.p, lv->rep.len, false);
}

/* One element [p, pe), not empty. */
static int element(struct pscan *s, const char *p, const char *pe, bool *drop)
{
	struct ap_scrub *sc = s->sc;
	const struct ap_ruleset *rs = sc->rs;
	const char *eq = find(p, pe, s->f->eq, s->f->eq_len);
	const struct ap_field *fl = NULL;
	const struct ap_action *kact = NULL;
	size_t plen = sc->pathlen, kn = eq ? (size_t)(eq - p) : 0;
	int rc;

	if (!eq) {
		if (sc->finding_cb)
			ap_scrub_path_key(sc, "(token)", 7);
		rc = value(s, NULL, p, pe, drop);
		ap_scrub_path_pop(sc, plen);
		return rc;
	}
	if (kn)
		fl = ap_rules_key(rs, p, kn);
	if (!fl && kn && rs->scrub_keys && rs->detect)
		kact = ap_scrub_detect(sc, p, kn, false);
	if (sc->finding_cb)
		ap_scrub_path_key(sc, kact ? "(id)" : p, kact ? 4 : kn);
	rc = AP_OK;
	if (kact) {
		/* A key that is an identifier, as in forms and JSON objects. */
		if (kact->act == AP_ACT_KEEP || kact->act == AP_ACT_DROP) {
			ap_scrub_found(sc, kact, p, kn, true);
			*drop = kact->act == AP_ACT_DROP;
		} else {
			bool num;
			ap_buf_clear(&s->lv->rep);
			if (ap_scrub_apply(sc, kact, p, kn, false, true, &s->lv->rep, &num) !=
			    AP_OK)
				rc = ap_scrub_fail(sc, "out of memory", 0);
			else
				rc = replace(s, p, eq, s->lv->rep.p, s->lv->rep.len, true);
		}
	}
	if (rc == AP_OK && !*drop)
		rc = value(s, fl, eq + s->f->eq_len, pe, drop);
	ap_scrub_path_pop(sc, plen);
	return rc;
}

int ap_scrub_pairs(struct ap_scrub *sc, const struct ap_field *f, struct ap_span in,
                   struct ap_buf *out, bool *changed)
{
	struct pscan s = {sc, &sc->lv[sc->level], f, in.p, in.p + in.n, in.p, out, false};
	const char *p = in.p, *sep = NULL;
	unsigned kept = 0;

	*changed = false;
	if (!f->sep_len || !f->eq_len)
		return ap_scrub_fail(sc, "pairs codec without a separator", 0);
	for (;;) {
		const char *at = find(p, s.end, f->sep, f->sep_len), *pe = at ? at : s.end;

		if (pe > p) {
			const char *copied = s.copied;
			size_t mark = out->len;
			bool drop = false;

			if (element(&s, p, pe, &drop) != AP_OK)
				return AP_ERR;
			if (drop) {
				/* A key rewritten above goes with its element; so does the
				 * separator before it, or (for the first) the one after it. */
				out->len = mark;
				s.copied = copied;
				if (flush(&s, kept ? sep : p) != AP_OK)
					return AP_ERR;
				s.copied = pe;
			} else
				kept++;
		} else
			kept++; /* an empty element ("a=1####b=2") stays as it came */
		if (!at)
			break;
		if (!kept) {
			if (flush(&s, at) != AP_OK)
				return AP_ERR;
			s.copied = at + f->sep_len;
		}
		sep = at;
		p = at + f->sep_len;
	}
	if (s.changed && flush(&s, s.end) != AP_OK)
		return AP_ERR;
	*changed = s.changed;
	return AP_OK;
}
