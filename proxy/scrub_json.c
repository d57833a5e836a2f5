/* JSON and NDJSON scrubbing in one validating pass: untouched spans are copied (lazily —
 * a document with nothing to change is never copied at all), matched values rewritten,
 * dropped members removed with their commas so the document stays valid. There is no
 * tree: the scan keeps only the current path, the rule inherited from above and, for
 * each container, where its last separator was. */
#include "detect.h"
#include "json.h"
#include "scrub.h"

struct jscan {
	struct ap_scrub *sc;
	const struct ap_ruleset *rs;
	struct ap_level *lv;
	const char *beg, *end; /* the document (an NDJSON body: all of it) */
	const char *copied;    /* input before this is already in out, or needs no copy */
	struct ap_buf *out;
	bool changed;
	bool findings;
	unsigned depth;    /* containers open around the current value */
	unsigned skipping; /* > 0 inside a value being dropped: validate only */
	bool signing;      /* noting the top-level members for the re-signers */
	const char *key;   /* the last member_key's decoded name (valid until the next) */
	size_t keyn;
	const char *vend; /* where the last item()'s value ended */
	/* Per-user opt-outs: <oo> when the ruleset has user rules and there is a table. The
	 * event paths matched so far, handed from a container to value() for the child it
	 * is about to scan (next_*), and the user id a pre-scan found. */
	bool oo;
	uint64_t next_emask;
	bool next_event;
	char ubuf[128];
};

static const char *value(struct jscan *j, const char *p, const struct ap_field *rule,
                         uint64_t pmask, bool *drop);
static const char *object(struct jscan *j, const char *p, const struct ap_field *rule,
                          uint64_t pmask, uint64_t emask);
static const char *event_object(struct jscan *j, const char *p, const struct ap_field *rule,
                                uint64_t pmask, uint64_t emask, bool *drop);

static const char *fail(struct jscan *j, const char *why, const char *at)
{
	ap_scrub_fail(j->sc, why, (size_t)(at - j->beg));
	return NULL;
}

/* Appends the input not yet copied, up to <upto>, and starts the rewrite if it was not
 * started yet. */
static int flush(struct jscan *j, const char *upto)
{
	if (ap_buf_add(j->out, j->copied, (size_t)(upto - j->copied)) != AP_OK)
		return ap_scrub_fail(j->sc, "out of memory", 0);
	j->copied = upto;
	j->changed = true;
	return AP_OK;
}

/* Replaces the input [from, to) by the decoded text <r, n> written as a JSON string, or
 * as it is when <bare> (a number). */
static int replace(struct jscan *j, const char *from, const char *to, const char *r, size_t n,
                   bool bare)
{
	if (flush(j, from) != AP_OK)
		return AP_ERR;
	if (bare) {
		if (ap_buf_add(j->out, r, n) != AP_OK)
			return ap_scrub_fail(j->sc, "out of memory", 0);
	} else if (ap_buf_addc(j->out, '"') != AP_OK || ap_json_escape(r, n, j->out) != AP_OK ||
	           ap_buf_addc(j->out, '"') != AP_OK)
		return ap_scrub_fail(j->sc, "out of memory", 0);
	j->copied = to;
	return AP_OK;
}

/* Removes the member or element [start, vend) of a container. <kept> says whether an
 * earlier one of the same container is still in the output: if so, the separator before
 * this one goes with it; if not, the comma after it is removed when it is reached. */
static int remove_item(struct jscan *j, unsigned kept, const char *sep, const char *start,
                       const char *vend)
{
	if (flush(j, kept ? sep : start) != AP_OK)
		return AP_ERR;
	j->copied = vend;
	return AP_OK;
}

/* A string value no rule names and no detector recognises whole, under detect_in_text:
 * its words go to the detectors. Out of line, off the common path. */
static __attribute__((noinline)) const char *text_value(struct jscan *j, const char *p,
                                                        const char *e, const char *v, size_t n)
{
	struct ap_level *lv = j->lv;
	bool ch = false;

	ap_buf_clear(&lv->rep);
	if (ap_scrub_text(j->sc, v, n, &lv->rep, &ch) != AP_OK)
		return NULL;
	if (ch && replace(j, p, e, lv->rep.p, lv->rep.len, false) != AP_OK)
		return NULL;
	return e;
}

/* A string value. Decodes it only when a rule or a detector needs to look at it. */
static const char *string_value(struct jscan *j, const char *p, const struct ap_field *rule,
                                bool *drop)
{
	unsigned fl;
	const char *e = ap_json_string_short(p, j->end, &fl), *v;
	const struct ap_action *act;
	struct ap_level *lv = j->lv;
	size_t n;
	bool detected = false, numeric_out;

	if (AP_UNLIKELY(!e))
		return fail(j, "invalid JSON string", p);
	if (j->skipping || (!rule && !j->rs->detect))
		return e;
	v = p + 1;
	n = (size_t)(e - p - 2);
	if (fl & AP_JSTR_ESC) {
		ap_buf_clear(&lv->val);
		if (ap_json_unescape(v, n, &lv->val) != AP_OK)
			return fail(j, "out of memory", p);
		v = lv->val.p;
		n = lv->val.len;
	}
	if (rule && rule->ncodec) {
		bool ch = false;
		ap_buf_clear(&lv->rep);
		if (ap_scrub_nested(j->sc, rule, v, n, &lv->rep, &ch) != AP_OK)
			return NULL;
		if (ch && replace(j, p, e, lv->rep.p, lv->rep.len, false) != AP_OK)
			return NULL;
		return e;
	}
	if (rule) {
		act = &rule->act;
	} else if ((act = ap_scrub_detect(j->sc, v, n, false))) {
		detected = true;
	} else {
		return AP_LIKELY(!j->rs->detect_text) ? e : text_value(j, p, e, v, n);
	}
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(j->sc, act, v, n, detected);
		*drop = act->act == AP_ACT_DROP;
		return e;
	}
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(j->sc, act, v, n, false, detected, &lv->rep, &numeric_out) != AP_OK)
		return fail(j, "out of memory", p);
	if (replace(j, p, e, lv->rep.p, lv->rep.len, false) != AP_OK)
		return NULL;
	return e;
}

static const char *number_value(struct jscan *j, const char *p, const struct ap_field *rule,
                                bool *drop)
{
	bool integer, detected = false, numeric_out = false;
	const char *e = ap_json_number(p, j->end, &integer);
	const struct ap_action *act;
	struct ap_level *lv = j->lv;
	size_t n;

	if (AP_UNLIKELY(!e))
		return fail(j, "invalid JSON number", p);
	if (j->skipping || ((!rule || rule->ncodec) && !j->rs->detect))
		return e;
	n = (size_t)(e - p);
	if (rule && !rule->ncodec)
		act = &rule->act;
	else if (!integer || !(act = ap_scrub_detect(j->sc, p, n, true)))
		return e; /* a codec entry on a number is no entry: the detectors decide */
	else {
		detected = true;
		act = &j->rs->class_num[act->cls];
	}
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(j->sc, act, p, n, detected);
		*drop = act->act == AP_ACT_DROP;
		return e;
	}
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(j->sc, act, p, n, true, detected, &lv->rep, &numeric_out) != AP_OK)
		return fail(j, "out of memory", p);
	if (replace(j, p, e, lv->rep.p, lv->rep.len, numeric_out) != AP_OK)
		return NULL;
	return e;
}

static const char *literal(struct jscan *j, const char *p, const char *word, size_t n)
{
	if ((size_t)(j->end - p) < n || memcmp(p, word, n) != 0)
		return fail(j, "invalid JSON literal", p);
	return p + n;
}

/* An object key: returns the member's rule (path first, then key name, then the rule
 * inherited from above) and the child path mask; rewrites a key that is itself an
 * identifier (some SDKs key maps by device id) when the ruleset scans keys. */
static const char *member_key(struct jscan *j, const char *p, const struct ap_field *rule,
                              uint64_t pmask, const struct ap_field **f, uint64_t *cmask,
                              bool *drop, size_t *plen)
{
	unsigned fl;
	const char *e = ap_json_string_short(p, j->end, &fl), *k;
	const struct ap_action *act;
	struct ap_level *lv = j->lv;
	size_t n;

	if (AP_UNLIKELY(!e))
		return fail(j, "invalid JSON key", p);
	*f = NULL;
	*cmask = 0;
	if (j->skipping)
		return e;
	k = p + 1;
	n = (size_t)(e - p - 2);
	if (fl & AP_JSTR_ESC) {
		ap_buf_clear(&lv->val);
		if (ap_json_unescape(k, n, &lv->val) != AP_OK)
			return fail(j, "out of memory", p);
		k = lv->val.p;
		n = lv->val.len;
	}
	j->key = k;
	j->keyn = n;
	if (pmask)
		*cmask = ap_rules_path_step(j->rs, pmask, j->depth - 1, k, n, 0, f);
	if (!*f)
		*f = ap_rules_key(j->rs, k, n);
	/* An enclosing rule reaches the members of an object, except an allow-list entry:
	 * "keep" on a container must not hide an identifier inside it from the detectors. */
	if (!*f && rule && !rule->ncodec && rule->act.act != AP_ACT_KEEP)
		*f = rule;
	act = j->rs->scrub_keys && j->rs->detect ? ap_scrub_detect(j->sc, k, n, false) : NULL;
	if (j->findings)
		*plen = ap_scrub_path_key(j->sc, act ? "(id)" : k, act ? 4 : n);
	if (!act)
		return e;
	if (act->act == AP_ACT_KEEP || act->act == AP_ACT_DROP) {
		ap_scrub_found(j->sc, act, k, n, true);
		*drop = act->act == AP_ACT_DROP;
		return e;
	}
	ap_buf_clear(&lv->rep);
	if (ap_scrub_apply(j->sc, act, k, n, false, true, &lv->rep, &(bool){0}) != AP_OK)
		return fail(j, "out of memory", p);
	if (replace(j, p, e, lv->rep.p, lv->rep.len, false) != AP_OK)
		return NULL;
	return e;
}

/* The state of a container being scanned: where its last separator was and how many of
 * its items are still in the output. */
struct items {
	const char *sep;
	unsigned kept;
};

/* One item of a container — a member's value, or an element — starting at <start> with
 * its value at <p>: scanned under <f> (validated only when it is dropped whole), removed
 * when it must go, then the separator or the closing <close> consumed. Returns where the
 * next item starts (*more set) or the end of the container. */
static inline __attribute__((always_inline)) const char *
item(struct jscan *j, struct items *it, const char *start, const char *p, const struct ap_field *f,
     uint64_t cmask, bool drop, size_t plen, char close, bool *more)
{
	const char *vend, *end = j->end;

	if (!drop && f && f->act.act == AP_ACT_DROP && !j->skipping) {
		ap_scrub_found(j->sc, &f->act, NULL, 0, false);
		drop = true;
	}
	if (drop) {
		j->next_emask = 0;
		j->next_event = false;
		j->skipping++;
		vend = value(j, p, NULL, 0, &(bool){0});
		j->skipping--;
	} else
		vend = value(j, p, f, cmask, &drop);
	if (j->findings)
		ap_scrub_path_pop(j->sc, plen);
	if (!vend)
		return NULL;
	j->vend = vend;
	if (!drop)
		it->kept++;
	else if (remove_item(j, it->kept, it->sep, start, vend) != AP_OK)
		return NULL;
	p = ap_json_ws(vend, end);
	*more = p < end && *p == ',';
	if (*more) {
		/* Nothing before it survived: the comma must not either. */
		if (!it->kept && !j->skipping) {
			if (flush(j, p) != AP_OK)
				return NULL;
			j->copied = p + 1;
		}
		it->sep = p;
		return ap_json_ws(p + 1, end);
	}
	if (p < end && *p == close)
		return p + 1;
	return fail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'", p);
}

/* item() for a scalar member of the body's top-level object while re-signers record: the
 * value's place in the output is noted once it is final. */
static const char *signed_item(struct jscan *j, struct items *it, const char *start, const char *p,
                               const struct ap_field *f, uint64_t cmask, bool drop, size_t plen,
                               bool *more)
{
	char key[AP_KEY_NAME_MAX];
	size_t keyn = j->keyn, out0 = j->out->len, kept = it->kept;
	const char *copied0 = j->copied, *next;

	memcpy(key, j->key, keyn);
	next = item(j, it, start, p, f, cmask, drop, plen, '}', more);
	if (!next || it->kept == kept)
		return next; /* failed, or dropped */
	/* A kept scalar was either left alone (nothing copied past its start) or replaced
	 * whole (copied moved to its end, the replacement written last). */
	if (j->copied > p) {
		size_t pos = out0 + (size_t)(p - copied0);
		ap_sign_note(j->sc, key, keyn, pos, j->out->len - pos, true);
	} else
		ap_sign_note(j->sc, key, keyn, j->out->len + (size_t)(p - j->copied),
		             (size_t)(j->vend - p), false);
	return next;
}

static const char *object(struct jscan *j, const char *p, const struct ap_field *rule,
                          uint64_t pmask, uint64_t emask)
{
	struct items it = {NULL, 0};
	const char *end = j->end;
	bool more = true;

	p = ap_json_ws(p + 1, end);
	if (p < end && *p == '}')
		return p + 1;
	while (p && more) {
		const struct ap_field *f;
		const char *start = p;
		uint64_t cmask;
		size_t plen = j->sc->pathlen;
		bool drop = false;

		if (p >= end || *p != '"')
			return fail(j, "expected a key", p);
		j->key = NULL;
		if (!(p = member_key(j, p, rule, pmask, &f, &cmask, &drop, &plen)))
			return NULL;
		p = ap_json_ws(p, end);
		if (p >= end || *p != ':')
			return fail(j, "expected ':'", p);
		p = ap_json_ws(p + 1, end);
		if (emask && j->key && !j->skipping) {
			uint64_t ended;
			j->next_emask = ap_paths_step(j->rs->user->events, emask, j->depth - 1,
			                              j->key, j->keyn, 0, &ended);
			j->next_event = ended != 0;
		}
		if (j->signing && j->depth == 1 && !j->skipping && j->key &&
		    j->keyn < AP_KEY_NAME_MAX && p < end && *p != '{' && *p != '[')
			p = signed_item(j, &it, start, p, f, cmask, drop, plen, &more);
		else
			p = item(j, &it, start, p, f, cmask, drop, plen, '}', &more);
	}
	return p;
}

static const char *array(struct jscan *j, const char *p, const struct ap_field *rule,
                         uint64_t pmask, uint64_t emask)
{
	struct items it = {NULL, 0};
	bool more = true;

	p = ap_json_ws(p + 1, j->end);
	if (p < j->end && *p == ']')
		return p + 1;
	for (uint32_t idx = 0; p && more; idx++) {
		const struct ap_field *f = NULL;
		uint64_t cmask = 0;
		size_t plen = j->sc->pathlen;

		if (pmask && !j->skipping)
			cmask = ap_rules_path_step(j->rs, pmask, j->depth - 1, NULL, 0, idx, &f);
		if (!f)
			f = rule;
		if (j->findings && !j->skipping)
			plen = ap_scrub_path_idx(j->sc, idx);
		if (emask && !j->skipping) {
			uint64_t ended;
			j->next_emask = ap_paths_step(j->rs->user->events, emask, j->depth - 1,
			                              NULL, 0, idx, &ended);
			j->next_event = ended != 0;
		}
		p = item(j, &it, p, p, f, cmask, false, plen, ']', &more);
	}
	return p;
}

/* ---- per-user opt-outs ---- */

/* Validates the value at <p> (inside an event, <depth> containers below it) and, where
 * one of the user paths still matching (<umask>) ends on a string or a number, takes that
 * value as the event's user (the first found wins). Returns the value's end, or NULL. */
static const char *user_scan(struct jscan *j, const char *p, unsigned depth, uint64_t umask,
                             struct ap_span *user, bool capture)
{
	const struct ap_user_rules *u = j->rs->user;
	const char *end = j->end, *e;
	unsigned fl;
	bool in;

	if (p >= end)
		return fail(j, "unexpected end of JSON", p);
	if (*p == '"') {
		if (!(e = ap_json_string_short(p, end, &fl)))
			return fail(j, "invalid JSON string", p);
		if (capture && !user->p) {
			if (!(fl & AP_JSTR_ESC))
				*user = (struct ap_span){p + 1, (size_t)(e - p - 2)};
			else if ((size_t)(e - p) <= sizeof(j->ubuf)) {
				struct ap_buf b = {j->ubuf, 0, sizeof(j->ubuf)};
				if (ap_json_unescape(p + 1, (size_t)(e - p - 2), &b) == AP_OK &&
				    b.p == j->ubuf)
					*user = (struct ap_span){j->ubuf, b.len};
			}
		}
		return e;
	}
	if (*p == '{' || *p == '[') {
		bool obj = *p == '{';
		uint32_t idx = 0;
		if (j->depth + depth + 1 > j->sc->max_depth)
			return fail(j, "JSON nested too deep", p);
		p = ap_json_ws(p + 1, end);
		if (p < end && *p == (obj ? '}' : ']'))
			return p + 1;
		for (;; idx++) {
			uint64_t child = 0, ended = 0;
			if (obj) {
				const char *k = p + 1, *ke;
				size_t kn;
				char kb[AP_KEY_NAME_MAX];
				if (p >= end || *p != '"' ||
				    !(ke = ap_json_string_short(p, end, &fl)))
					return fail(j, "expected a key", p);
				bool try_key = umask != 0;
				kn = (size_t)(ke - p - 2);
				if (try_key && (fl & AP_JSTR_ESC)) {
					/* "\u0075ser_id" is user_id: decoded, as keys are
					 * everywhere else (longer ones name no rule anyway). */
					struct ap_buf b = {kb, 0, sizeof(kb)};
					if (kn < sizeof(kb) &&
					    ap_json_unescape(k, kn, &b) == AP_OK && b.p == kb) {
						k = kb;
						kn = b.len;
					} else
						try_key = false;
				}
				if (try_key)
					child = ap_paths_step(u->paths, umask, depth, k, kn, 0,
					                      &ended);
				p = ap_json_ws(ke, end);
				if (p >= end || *p != ':')
					return fail(j, "expected ':'", p);
				p = ap_json_ws(p + 1, end);
			} else if (umask)
				child = ap_paths_step(u->paths, umask, depth, NULL, 0, idx, &ended);
			if (!(p = user_scan(j, p, depth + 1, child, user, ended != 0)))
				return NULL;
			p = ap_json_ws(p, end);
			if (p < end && *p == ',') {
				p = ap_json_ws(p + 1, end);
				continue;
			}
			if (p < end && *p == (obj ? '}' : ']'))
				return p + 1;
			return fail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'", p);
		}
	}
	if (*p == 't')
		return literal(j, p, "true", 4);
	if (*p == 'f')
		return literal(j, p, "false", 5);
	if (*p == 'n')
		return literal(j, p, "null", 4);
	if (!(e = ap_json_number(p, end, &in)))
		return fail(j, "invalid JSON number", p);
	if (capture && !user->p)
		*user = (struct ap_span){p, (size_t)(e - p)};
	return e;
}

/* An object that is one event: its user is found first (a validating pre-scan), then the
 * event is removed when that user opted out of what the route carries, or scanned under
 * the ruleset's variant for the user's other opt-outs. */
static const char *event_object(struct jscan *j, const char *p, const struct ap_field *rule,
                                uint64_t pmask, uint64_t emask, bool *drop)
{
	struct ap_scrub *sc = j->sc;
	const struct ap_user_rules *u = j->rs->user;
	struct ap_span user = {NULL, 0};
	const struct ap_ruleset *was;
	unsigned scopes, outer, before;
	const char *e =
	        user_scan(j, p, 0, u->npaths >= 64 ? ~0ull : (1ull << u->npaths) - 1, &user, false);

	if (!e)
		return NULL;
	/* An enclosing event's (or the request's) user covers the events inside it too. */
	scopes = ap_scrub_user(sc, user.p, user.n) | sc->ev_scopes;
	if (ap_scrub_optout_drops(sc, scopes)) {
		sc->events++;
		sc->events_dropped++;
		*drop = true;
		return e;
	}
	before = sc->events;
	outer = sc->ev_scopes;
	was = scopes != outer ? ap_scrub_event_begin(sc, scopes) : sc->rs;
	j->rs = sc->rs;
	e = object(j, p, rule, pmask, emask);
	sc->rs = j->rs = was;
	sc->ev_scopes = outer;
	/* A wrapper around events ({"batch": [...]}) is not an event itself: only the
	 * innermost ones count, so a batch whose events all went is a request with nothing
	 * left. */
	if (sc->events == before)
		sc->events++;
	return e;
}

/* Any value at <p> (whitespace already skipped). <rule> applies to it: named by its key
 * or path, or inherited from an enclosing container a rule named (it then reaches every
 * scalar inside, unless a key inside has a rule of its own). Sets *drop when the
 * container must remove it. */
static const char *value(struct jscan *j, const char *p, const struct ap_field *rule,
                         uint64_t pmask, bool *drop)
{
	uint64_t emask = j->next_emask;
	bool event = j->next_event;
	const char *e;

	j->next_emask = 0;
	j->next_event = false;
	if (AP_UNLIKELY(p >= j->end))
		return fail(j, "unexpected end of JSON", p);
	switch (*p) {
	case '"':
		return string_value(j, p, rule, drop);
	case '{':
	case '[':
		if (AP_UNLIKELY(++j->depth > j->sc->max_depth))
			return fail(j, "JSON nested too deep", p);
		if (*p == '{')
			e = event && !j->skipping ? event_object(j, p, rule, pmask, emask, drop)
			                          : object(j, p, rule, pmask, emask);
		else
			e = array(j, p, rule, pmask, emask);
		j->depth--;
		return e;
	case 't':
		return literal(j, p, "true", 4);
	case 'f':
		return literal(j, p, "false", 5);
	case 'n':
		return literal(j, p, "null", 4);
	default:
		return number_value(j, p, rule, drop);
	}
}

static void jscan_init(struct jscan *j, struct ap_scrub *sc, struct ap_span in, struct ap_buf *out)
{
	j->sc = sc;
	j->rs = sc->rs;
	j->lv = &sc->lv[sc->level];
	j->beg = in.p;
	j->end = in.p + in.n;
	j->copied = in.p;
	j->out = out;
	j->changed = false;
	j->findings = sc->finding_cb != NULL;
	j->depth = 0;
	j->skipping = 0;
	j->signing = false;
	j->key = NULL;
	j->keyn = 0;
	j->vend = NULL;
	j->oo = sc->rs->user && sc->user_scopes;
	j->next_emask = 0;
	j->next_event = false;
}

/* One document spanning [p, e) of j's input. A top-level value that must be dropped
 * becomes null: the document must stay a document — unless <dropped> is given (an NDJSON
 * line, which can go whole): it is then set and the caller removes the line. */
static int document(struct jscan *j, const char *p, const char *e, bool *dropped)
{
	const char *saved_end = j->end, *v;
	size_t plen = j->sc->pathlen;
	bool drop = false;

	j->end = e;
	p = ap_json_ws(p, e);
	if (p >= e)
		return ap_scrub_fail(j->sc, "empty JSON document", (size_t)(p - j->beg));
	if (j->findings)
		ap_scrub_path_key(j->sc, NULL, 0);
	if (j->oo) {
		const struct ap_user_rules *u = j->rs->user;
		j->next_emask = u->nevents >= 64 ? ~0ull : (1ull << u->nevents) - 1;
		j->next_event = u->root_event;
	}
	v = value(j, p, NULL, ap_rules_path_root(j->rs), &drop);
	if (j->findings)
		ap_scrub_path_pop(j->sc, plen);
	if (!v)
		return AP_ERR;
	if (drop && dropped)
		*dropped = true;
	else if (drop && replace(j, p, v, "null", 4, true) != AP_OK)
		return AP_ERR;
	if (ap_json_ws(v, e) != e)
		return ap_scrub_fail(j->sc, "trailing data after JSON document",
		                     (size_t)(v - j->beg));
	j->end = saved_end;
	return AP_OK;
}

int ap_scrub_json(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	struct jscan j;

	jscan_init(&j, sc, in, out);
	j.signing = ap_sign_begin(sc, out);
	if (document(&j, in.p, in.p + in.n, NULL) != AP_OK)
		return AP_ERR;
	if (j.changed && flush(&j, j.end) != AP_OK)
		return AP_ERR;
	if (j.signing && j.changed && ap_sign_finish(sc, out, AP_SIGN_JSON) != AP_OK)
		return AP_ERR;
	if (j.signing)
		sc->sign.on = false;
	*changed = j.changed;
	return AP_OK;
}

int ap_scrub_ndjson(struct ap_scrub *sc, struct ap_span in, struct ap_buf *out, bool *changed)
{
	struct jscan j;
	const char *p = in.p, *end = in.p + in.n;

	jscan_init(&j, sc, in, out);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;

		/* Blank lines (and a final newline) are allowed; \r\n line ends too, since
		 * '\r' is JSON whitespace. */
		bool dropped = false;
		size_t mark = out->len;
		const char *copied = j.copied;
		bool was = j.changed;

		if (ap_json_ws(p, e) != e && document(&j, p, e, &dropped) != AP_OK)
			return AP_ERR;
		if (dropped) {
			/* The line goes whole, its newline too: undo what was written for it. */
			if (j.copied > p) {
				out->len = mark;
				j.copied = copied;
				j.changed = was;
			}
			if (flush(&j, p) != AP_OK)
				return AP_ERR;
			j.copied = nl ? nl + 1 : end;
		}
		p = nl ? nl + 1 : end;
	}
	if (j.changed && flush(&j, end) != AP_OK)
		return AP_ERR;
	*changed = j.changed;
	return AP_OK;
}
