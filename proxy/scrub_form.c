/* application/x-www-form-urlencoded bodies and query strings: pairs split on '&', keys
 * and values percent-decoded ('+' is a space) to be matched, a replaced value written
 * back percent-encoded, untouched pairs copied byte for byte; a key that is itself an
 * identifier is scrubbed as JSON object keys are. A '%' not followed by two hex digits
 * makes the whole document undecodable, so it is refused. */
#include "detect.h"
#include "scrub.h"

#define FORM_KEY_MAX (3 * AP_KEY_NAME_MAX) /* raw bytes of a key that could still match */

struct fscan {
	struct ap_scrub *sc;
	struct ap_level *lv;
	const char *beg, *end, *copied;
	struct ap_buf *out;
	bool changed;
	bool rewrote;   /* the last pair_value wrote a new value ... */
	size_t rep_pos; /* ... at this offset of out */
};

static inline int hexdig(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decodes <p, n> into dst[cap] (cap >= n). Returns the decoded length or -1 on a
 * bad escape. */
static long pct_decode(const char *p, size_t n, char *dst)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '+')
			c = ' ';
		else if (c == '%') {
			int h, l;
			if (i + 2 >= n)
				return -1;
			if ((h = hexdig((unsigned char)p[i + 1])) < 0 ||
			    (l = hexdig((unsigned char)p[i + 2])) < 0)
				return -1;
			c = (char)(h << 4 | l);
			i += 2;
		}
		dst[o++] = c;
	}
	return (long)o;
}

/* Validates the escapes of <p, n> without decoding. */
static bool pct_valid(const char *p, size_t n)
{
	const char *e = p + n;

	while ((p = memchr(p, '%', (size_t)(e - p)))) {
		if (e - p < 3 || hexdig((unsigned char)p[1]) < 0 || hexdig((unsigned char)p[2]) < 0)
			return false;
		p += 3;
	}
	return true;
}

/* A replaced form value is written the way a form encoder writes one: unreserved bytes
 * literal, a space as '+', everything else %XX in upper case. */
static int pct_encode(const char *p, size_t n, struct ap_buf *out)
{
	static const struct ap_pct_style form = {.plus_space = true};

	return ap_pct_encode(p, n, out, &form);
}

static int flush(struct fscan *f, const char *upto)
{
	if (ap_buf_add(f->out, f->copied, (size_t)(upto - f->copied)) != AP_OK)
		return ap_scrub_fail(f->sc, "out of memory", 0);
	f->copied = upto;
	f->changed = true;
	return AP_OK;
}

/* The value [v, ve) of one pair whose key matched <fl> (or nothing: NULL). Sets *drop
 * when the pair must go. <has_eq> is false for a key written without '=': its value is
 * empty, and a replacement then needs the '=' the input did not have. */
static int pair_value(struct fscan *f, const struct ap_field *fl, const char *v, const char *ve,
                      bool has_eq, bool *drop)
{
	struct ap_scrub *sc = f->sc;
	struct ap_level *lv = f->lv;
	const struct ap_action *act;
	size_t n = (size_t)(ve - v);
	bool detected = false, num;
	long dn;

	if (!fl && !sc->rs->detect)
		return pct_valid(v, n) ? AP_OK
		                       : ap_scrub_fail(sc, "invalid percent-encoding",
		                                       (size_t)(v - f->beg));
	if (fl && fl->act.act == AP_ACT_DROP) {
		if (!pct_valid(v, n))
			return ap_scrub_fail(sc, "invalid percent-encoding", (size_t)(v - f->beg));
		ap_scrub_found(sc, &fl->act, NULL, 0, false);
		*drop = true;
		return AP_OK;
	}
	ap_buf_clear(&lv->val);
	if (ap_buf_reserve(&lv->val, n) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	if ((dn = pct_decode(v, n, lv->val.p)) < 0)
		return ap_scrub_fail(sc, "invalid percent-encoding", (size_t)(v - f->beg));
	lv->val.len = (size_t)dn;
	ap_buf_clear(&lv->rep);
	if (fl && fl->ncodec) {
		bool ch = false;
		if (ap_scrub_nested(sc, fl, lv->val.p, lv->val.len, &lv->rep, &ch) != AP_OK)
			return AP_ERR;
		if (!ch)
			return AP_OK;
	} else {
		if (fl) {
			act = &fl->act;
		} else if ((act = ap_scrub_detect(sc, lv->val.p, lv->val.len, false))) {
			detected = true;
		} else {
			bool ch = false;
			if (AP_LIKELY(!sc->rs->detect_text))
				return AP_OK;
			if (ap_scrub_text(sc, lv->val.p, lv->val.len, &lv->rep, &ch) != AP_OK)
				return AP_ERR;
			if (!ch)
				return AP_OK;
			goto write;
		}
		if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
			ap_scrub_found(sc, act, lv->val.p, lv->val.len, detected);
			*drop = act->act == AP_ACT_DROP;
			return AP_OK;
		}
		if (ap_scrub_apply(sc, act, lv->val.p, lv->val.len, false, detected, &lv->rep,
		                   &num) != AP_OK)
			return ap_scrub_fail(sc, "out of memory", 0);
	}
write:
	if (flush(f, v) != AP_OK || (!has_eq && lv->rep.len && ap_buf_addc(f->out, '=') != AP_OK))
		return ap_scrub_fail(sc, "out of memory", 0);
	f->rep_pos = f->out->len;
	if (pct_encode(lv->rep.p, lv->rep.len, f->out) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	f->copied = ve;
	f->rewrote = true;
	return AP_OK;
}

/* A key no rule names but a detector recognised as <act> (some SDKs key maps by device
 * id), treated as JSON object keys are when the ruleset scans keys: the key [k, ke) is
 * rewritten in place, or *drop set. <key, n> is its decoded form. */
static int pair_key(struct fscan *f, const char *k, const char *ke, const char *key, size_t n,
                    const struct ap_action *act, bool *drop)
{
	struct ap_scrub *sc = f->sc;
	struct ap_level *lv = f->lv;
	bool num;

	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(sc, act, key, n, true);
		*drop = act->act == AP_ACT_DROP;
		return AP_OK;
	}
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(sc, act, key, n, false, true, &lv->rep, &num) != AP_OK ||
	    flush(f, k) != AP_OK || pct_encode(lv->rep.p, lv->rep.len, f->out) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	f->copied = ke;
	return AP_OK;
}

/* Notes what the re-signers and the opaque-payload rules need of the pair just kept: its
 * decoded name <key, kn> and its value [v, ve) as it now stands in the output. */
static void pair_kept(struct fscan *f, bool signing, const char *key, size_t kn, const char *v,
                      const char *ve)
{
	struct ap_scrub *sc = f->sc;

	if (signing) {
		size_t pos = f->rewrote ? f->rep_pos : f->out->len + (size_t)(v - f->copied);
		size_t len = f->rewrote ? f->out->len - f->rep_pos : (size_t)(ve - v);
		ap_sign_note(sc, key, kn, pos, len, f->rewrote);
	}
	if (sc->where == AP_WHERE_QUERY && sc->rs->nopaque) {
		char val[AP_KEY_NAME_MAX];
		long vn = (size_t)(ve - v) <= sizeof(val) && pct_valid(v, (size_t)(ve - v))
		                  ? pct_decode(v, (size_t)(ve - v), val)
		                  : -1;
		if (vn >= 0)
			ap_scrub_opaque_field(sc, key, kn, val, (size_t)vn);
	}
}

static int form_scan(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	struct fscan f = {sc, &sc->lv[sc->level], in.p, in.p + in.n, in.p, out, false, false, 0};
	const char *p = in.p, *sep = NULL;
	unsigned kept = 0;
	bool signing = ap_sign_begin(sc, out);
	bool notes = signing || (sc->where == AP_WHERE_QUERY && sc->rs->nopaque);

	while (p < f.end) {
		const char *amp = memchr(p, '&', (size_t)(f.end - p)), *pe = amp ? amp : f.end;
		const char *eq = memchr(p, '=', (size_t)(pe - p)), *ke = eq ? eq : pe;
		const char *v = eq ? eq + 1 : pe;
		const struct ap_field *fl = NULL;
		const struct ap_action *kact = NULL;
		const char *copied = f.copied;
		char key[FORM_KEY_MAX];
		size_t plen = sc->pathlen, mark = out->len;
		bool drop = false;
		long kn = -1;

		if (pe == p) {
			/* An empty pair ("a=1&&b=2") carries nothing; it is kept as it came. */
			kept++;
		} else {
			if ((size_t)(ke - p) <= sizeof(key)) {
				if ((kn = pct_decode(p, (size_t)(ke - p), key)) < 0)
					return ap_scrub_fail(sc, "invalid percent-encoding",
					                     (size_t)(p - f.beg));
				fl = ap_rules_key(sc->rs, key, (size_t)kn);
				if (!fl && sc->rs->scrub_keys && sc->rs->detect)
					kact = ap_scrub_detect(sc, key, (size_t)kn, false);
			} else if (!pct_valid(p, (size_t)(ke - p)))
				return ap_scrub_fail(sc, "invalid percent-encoding",
				                     (size_t)(p - f.beg));
			/* A key that is an identifier is not shown in the path either. */
			if (sc->finding_cb && kact)
				ap_scrub_path_key(sc, "(id)", 4);
			else if (sc->finding_cb)
				ap_scrub_path_key(sc, kn >= 0 ? key : "(long)",
				                  kn >= 0 ? (size_t)kn : 6);
			if (kact && pair_key(&f, p, ke, key, (size_t)kn, kact, &drop) != AP_OK)
				return AP_ERR;
			f.rewrote = false;
			if (drop) {
				if (!pct_valid(v, (size_t)(pe - v)))
					return ap_scrub_fail(sc, "invalid percent-encoding",
					                     (size_t)(v - f.beg));
			} else if (pair_value(&f, fl, v, pe, eq != NULL, &drop) != AP_OK)
				return AP_ERR;
			if (!drop && notes && kn >= 0)
				pair_kept(&f, signing, key, (size_t)kn, v, pe);
			if (sc->finding_cb)
				ap_scrub_path_pop(sc, plen);
			if (drop) {
				/* A key rewritten above goes with its pair. */
				out->len = mark;
				f.copied = copied;
				if (flush(&f, kept ? sep : p) != AP_OK)
					return AP_ERR;
				f.copied = pe;
			} else
				kept++;
		}
		if (!amp)
			break;
		if (!kept) {
			if (flush(&f, amp) != AP_OK)
				return AP_ERR;
			f.copied = amp + 1;
		}
		sep = amp;
		p = amp + 1;
	}
	if (f.changed && flush(&f, f.end) != AP_OK)
		return AP_ERR;
	if (signing && f.changed && ap_sign_finish(sc, out, AP_SIGN_FORM) != AP_OK)
		return AP_ERR;
	if (signing)
		sc->sign.on = false;
	*changed = f.changed;
	return AP_OK;
}

int ap_form_get(struct ap_span form, const char *const *names, size_t nnames, char *val, size_t cap,
                size_t *n)
{
	const char *p = form.p, *end = form.p + form.n;

	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		char key[FORM_KEY_MAX];
		long kn;

		if (eq && (size_t)(eq - p) <= sizeof(key) &&
		    (kn = pct_decode(p, (size_t)(eq - p), key)) >= 0)
			for (size_t i = 0; i < nnames; i++)
				if ((size_t)kn == strlen(names[i]) &&
				    strncasecmp(key, names[i], (size_t)kn) == 0 &&
				    (size_t)(pe - eq - 1) <= cap) {
					long vn = pct_decode(eq + 1, (size_t)(pe - eq - 1), val);
					if (vn < 0)
						return AP_ERR;
					*n = (size_t)vn;
					return AP_OK;
				}
		p = amp ? amp + 1 : end;
	}
	return AP_ERR;
}

/* A form body is one event: its user comes from the fields the ruleset names (or the
 * request's header or query), and decides, like a JSON event's, whether it goes or how
 * it is scrubbed. */
int ap_scrub_form(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	const struct ap_user_rules *u = sc->rs->user;
	const struct ap_ruleset *was;
	unsigned scopes, before;
	int rc;

	if (!u || !sc->user_scopes || sc->level > 0)
		return form_scan(sc, in, out, changed);
	scopes = sc->req_scopes;
	if (u->nform) {
		const char *names[AP_USER_NAMES_MAX];
		char val[256];
		size_t n;
		for (unsigned i = 0; i < u->nform; i++)
			names[i] = u->form[i];
		if (ap_form_get(in, names, u->nform, val, sizeof(val), &n) == AP_OK)
			scopes |= ap_scrub_user(sc, val, n);
	}
	if (ap_scrub_optout_drops(sc, scopes)) {
		sc->events++;
		sc->events_dropped++;
		*changed = false;
		return AP_OK;
	}
	before = sc->events;
	was = scopes != sc->ev_scopes ? ap_scrub_event_begin(sc, scopes) : sc->rs;
	rc = form_scan(sc, in, out, changed);
	sc->rs = was;
	sc->ev_scopes = sc->req_scopes;
	/* A form whose fields carry documents of events (Mixpanel's data=) is their wrapper,
	 * not an event itself. */
	if (sc->events == before)
		sc->events++;
	return rc;
}

int ap_scrub_query(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	enum ap_where where = sc->where;
	size_t plen = sc->pathlen;
	int rc;

	*changed = false;
	if (!sc->rs->query || in.n == 0)
		return AP_OK;
	sc->where = AP_WHERE_QUERY;
	if (sc->finding_cb)
		ap_scrub_path_key(sc, "query:", 6);
	rc = form_scan(sc, in, out, changed);
	if (sc->finding_cb)
		ap_scrub_path_pop(sc, plen);
	sc->where = where;
	return rc;
}

/* The path: each segment a detector of the ruleset recognises, whole and percent-decoded,
 * gets its class's action. A pseudonym is written percent-encoded as a path segment;
 * `drop` cannot remove a segment without changing the resource, so the segment becomes
 * "-"; `keep` leaves it. Nothing else is touched: dot segments, empty segments and escapes
 * stay as sent. A segment with a bad escape is matched as it is written. */
int ap_scrub_path(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	struct ap_level *lv = &sc->lv[0];
	enum ap_where where = sc->where;
	size_t plen = sc->pathlen;
	const char *p, *e, *copied;
	int rc = AP_OK;
	size_t idx = 0;

	*changed = false;
	if (!sc->rs->path || !sc->rs->detect || in.n == 0)
		return AP_OK;
	p = copied = in.p;
	e = in.p + in.n;
	sc->where = AP_WHERE_PATH;
	if (sc->finding_cb)
		ap_scrub_path_key(sc, "path:", 5);
	while (p < e) {
		const char *s = p, *se;
		const struct ap_action *act;
		const char *v;
		size_t vn;
		long dn;
		bool num;
		/* a pseudonym is written with the bytes the segment had literally kept literal */
		struct ap_pct_style style = {.plus_space = false};

		while (s < e && *s == '/')
			s++;
		se = memchr(s, '/', (size_t)(e - s));
		se = se ? se : e;
		p = se;
		if (se == s)
			continue;
		idx++;
		if ((size_t)(se - s) > 256) /* no identifier is longer */
			continue;
		v = s;
		vn = (size_t)(se - s);
		if (memchr(s, '%', vn)) {
			ap_buf_clear(&lv->val);
			if (ap_buf_reserve(&lv->val, vn) != AP_OK) {
				rc = ap_scrub_fail(sc, "out of memory", 0);
				break;
			}
			/* in a path '+' is a '+', not a space */
			dn = 0;
			for (const char *q = s; q < se; q++) {
				int h, l;
				if (*q == '%' && se - q >= 3 &&
				    (h = hexdig((unsigned char)q[1])) >= 0 &&
				    (l = hexdig((unsigned char)q[2])) >= 0) {
					lv->val.p[dn++] = (char)(h << 4 | l);
					q += 2;
				} else {
					lv->val.p[dn++] = *q;
					style.literal[(unsigned char)*q >> 6] |= 1ULL << (*q & 63);
				}
			}
			v = lv->val.p;
			vn = (size_t)dn;
		}
		if (!(act = ap_scrub_detect(sc, v, vn, false)))
			continue;
		if (v == s)
			for (const char *q = s; q < se; q++)
				style.literal[(unsigned char)*q >> 6] |= 1ULL << (*q & 63);
		if (sc->finding_cb) {
			ap_scrub_path_pop(sc, plen);
			ap_scrub_path_key(sc, "path:", 5);
			ap_scrub_path_idx(sc, idx - 1);
		}
		if (act->act == AP_ACT_KEEP) {
			ap_scrub_found(sc, act, v, vn, true);
			continue;
		}
		if (ap_buf_add(out, copied, (size_t)(s - copied)) != AP_OK) {
			rc = ap_scrub_fail(sc, "out of memory", 0);
			break;
		}
		copied = se;
		*changed = true;
		if (act->act == AP_ACT_DROP) {
			ap_scrub_found(sc, act, v, vn, true);
			if (ap_buf_addc(out, '-') != AP_OK) {
				rc = ap_scrub_fail(sc, "out of memory", 0);
				break;
			}
			continue;
		}
		ap_buf_clear(&lv->rep);
		if (ap_scrub_apply(sc, act, v, vn, false, true, &lv->rep, &num) != AP_OK ||
		    ap_pct_encode(lv->rep.p, lv->rep.len, out, &style) != AP_OK) {
			rc = ap_scrub_fail(sc, "out of memory", 0);
			break;
		}
	}
	if (rc == AP_OK && *changed && ap_buf_add(out, copied, (size_t)(e - copied)) != AP_OK)
		rc = ap_scrub_fail(sc, "out of memory", 0);
	if (sc->finding_cb)
		ap_scrub_path_pop(sc, plen);
	sc->where = where;
	return rc;
}
