/* Request headers: a header a ruleset names is one value (or a nested document through a
 * codec chain); the client-address headers — X-Forwarded-For, X-Real-IP, Forwarded — are
 * address lists, always rewritten (truncate_ip unless the ruleset says otherwise), since
 * the client's address is an identifier too. Other headers are not looked at here. */
#include "detect.h"
#include "scrub.h"

enum hkind { H_PLAIN, H_ADDR_LIST, H_FORWARDED };

static const struct ap_action default_ip = {
        .act = AP_ACT_TRUNCATE_IP, .cls = AP_CLASS_IP, .v4bits = 24, .v6bits = 48};

static struct ap_span trim(const char *p, const char *e)
{
	return ap_span_trim((struct ap_span){p, (size_t)(e - p)});
}

/* One address through <act>; an element that comes out empty is left out. */
static int one_addr(struct ap_scrub *sc, const struct ap_action *act, struct ap_span a,
                    struct ap_buf *out, bool *wrote)
{
	struct ap_buf *rep = &sc->lv[0].rep;
	bool num;

	ap_buf_clear(rep);
	if (ap_scrub_apply(sc, act, a.p, a.n, false, false, rep, &num) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	*wrote = rep->len > 0;
	return ap_buf_add(out, rep->p, rep->len);
}

static int addr_list(struct ap_scrub *sc, const struct ap_action *act, struct ap_span v,
                     struct ap_buf *out)
{
	const char *p = v.p, *e = v.p + v.n;
	bool any = false;

	while (p <= e) {
		const char *c = memchr(p, ',', (size_t)(e - p)), *ce = c ? c : e;
		struct ap_span a = trim(p, ce);
		size_t mark = out->len;
		bool wrote = false;

		if (a.n) {
			if (any && ap_buf_add(out, ", ", 2) != AP_OK)
				return ap_scrub_fail(sc, "out of memory", 0);
			if (one_addr(sc, act, a, out, &wrote) != AP_OK)
				return AP_ERR;
			if (!wrote)
				out->len = mark;
			any |= wrote;
		}
		if (!c)
			break;
		p = c + 1;
	}
	return AP_OK;
}

static bool obf_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* RFC 7239 section 6: "unknown" or an obfuscated "_name", with an optional port (digits, or
 * an obfuscated "_port"). Nodes like these carry no address and stay as they are. */
static bool node_named(const char *p, const char *e)
{
	const char *colon = memchr(p, ':', (size_t)(e - p)), *ne = colon ? colon : e;
	const char *q;

	if (!ap_span_ieq((struct ap_span){p, (size_t)(ne - p)}, "unknown")) {
		if (ne - p < 2 || *p != '_')
			return false;
		for (q = p + 1; q < ne; q++)
			if (!obf_char((unsigned char)*q))
				return false;
	}
	if (!colon)
		return true;
	if (e - colon < 2)
		return false;
	if (colon[1] == '_') {
		for (q = colon + 2; q < e; q++)
			if (!obf_char((unsigned char)*q))
				return false;
		return e - colon > 2;
	}
	if (e - colon > 6)
		return false;
	for (q = colon + 1; q < e; q++)
		if (*q < '0' || *q > '9')
			return false;
	return true;
}

/* Writes "<name>=<v>", <v> as a token when it is one and as a quoted string otherwise
 * (a key-id prefix holds a ':'); an empty <v> becomes "unknown". */
static int put_node(struct ap_buf *out, struct ap_span name, struct ap_span v)
{
	bool token = true;

	if (v.n == 0)
		v = AP_SPAN("unknown");
	for (size_t i = 0; i < v.n && token; i++) {
		unsigned char c = (unsigned char)v.p[i];
		token = obf_char(c) || (c && strchr("!#$%&'*+^`|~", c));
	}
	if (ap_buf_add(out, name.p, name.n) != AP_OK || ap_buf_addc(out, '=') != AP_OK)
		return AP_ERR;
	if (token)
		return ap_buf_add(out, v.p, v.n);
	if (ap_buf_addc(out, '"') != AP_OK)
		return AP_ERR;
	for (size_t i = 0; i < v.n; i++)
		if (((v.p[i] == '"' || v.p[i] == '\\') && ap_buf_addc(out, '\\') != AP_OK) ||
		    ap_buf_addc(out, v.p[i]) != AP_OK)
			return AP_ERR;
	return ap_buf_addc(out, '"');
}

/* A node's text through <act>, written as for=/by= <name>'s value. */
static int node_apply(struct ap_scrub *sc, const struct ap_action *act, struct ap_span name,
                      struct ap_span node, struct ap_buf *out)
{
	struct ap_buf *rep = &sc->lv[0].rep;
	bool num;

	ap_buf_clear(rep);
	if (ap_scrub_apply(sc, act, node.p, node.n, false, false, rep, &num) != AP_OK ||
	    put_node(out, name, ap_buf_span(rep)) != AP_OK)
		return ap_scrub_fail(sc, "out of memory", 0);
	return AP_OK;
}

/* RFC 7239: elements separated by ',', pairs by ';'; for= and by= hold a node: an IPv4
 * address, a bracketed IPv6 address in quotes, "unknown" or an obfuscated "_name", each
 * with an optional port. Addresses get the action and lose their port; "unknown" and
 * "_name" stay; any other node (a list, a space, a typo) is not one the RFC allows and may
 * hide an address, so the action gets it whole (truncate_ip makes it "unknown"). */
static int forwarded(struct ap_scrub *sc, const struct ap_action *act, struct ap_span v,
                     struct ap_buf *out)
{
	const char *p = v.p, *e = v.p + v.n;
	uint8_t addr[16];

	while (p < e) {
		const char *d = p;
		while (d < e && *d != ';' && *d != ',' && *d != '"')
			d++;
		if (d < e && *d == '"') { /* a quoted string may hold ';' and ',' */
			const char *q = memchr(d + 1, '"', (size_t)(e - d - 1));
			if (!q)
				return ap_scrub_fail(sc, "bad Forwarded header", 0);
			while (q + 1 < e && q[1] != ';' && q[1] != ',')
				q++;
			d = q + 1;
		}
		struct ap_span pair = trim(p, d);
		const char *eq = memchr(pair.p, '=', pair.n);
		struct ap_span name = eq ? trim(pair.p, eq) : pair;

		if (eq && (ap_span_ieq(name, "for") || ap_span_ieq(name, "by"))) {
			struct ap_span node = trim(eq + 1, pair.p + pair.n), raw;
			const char *np = node.p, *ne = node.p + node.n;
			bool wrote;
			int fam;

			if (ne - np >= 2 && *np == '"' && ne[-1] == '"') {
				np++;
				ne--;
			}
			raw = (struct ap_span){np, (size_t)(ne - np)};
			if (np < ne && *np == '[') {
				const char *rb = memchr(np, ']', (size_t)(ne - np));
				if (!rb)
					return ap_scrub_fail(sc, "bad Forwarded header", 0);
				np++;
				ne = rb;
			} else {
				const char *colon = memchr(np, ':', (size_t)(ne - np));
				if (colon && !memchr(colon + 1, ':', (size_t)(ne - colon - 1)))
					ne = colon; /* IPv4 with a port */
			}
			fam = ap_ip_parse(np, (size_t)(ne - np), addr);
			if (fam == 4) {
				if (node_apply(sc, act, name,
				               (struct ap_span){np, (size_t)(ne - np)},
				               out) != AP_OK)
					return AP_ERR;
			} else if (fam == 6) {
				if (ap_buf_add(out, name.p, name.n) != AP_OK ||
				    ap_buf_add(out, "=\"[", 3) != AP_OK)
					return ap_scrub_fail(sc, "out of memory", 0);
				if (one_addr(sc, act, (struct ap_span){np, (size_t)(ne - np)}, out,
				             &wrote) != AP_OK)
					return AP_ERR;
				if (!wrote && ap_buf_add(out, "unknown", 7) != AP_OK)
					return AP_ERR;
				if (ap_buf_add(out, "]\"", 2) != AP_OK)
					return AP_ERR;
			} else if (node_named(raw.p, raw.p + raw.n)) {
				if (ap_buf_add(out, pair.p, pair.n) != AP_OK)
					return ap_scrub_fail(sc, "out of memory", 0);
			} else if (node_apply(sc, act, name, raw, out) != AP_OK)
				return AP_ERR;
		} else if (ap_buf_add(out, pair.p, pair.n) != AP_OK)
			return ap_scrub_fail(sc, "out of memory", 0);
		if (d < e && ap_buf_add(out, *d == ',' ? ", " : ";", *d == ',' ? 2 : 1) != AP_OK)
			return ap_scrub_fail(sc, "out of memory", 0);
		p = d < e ? d + 1 : e;
	}
	return AP_OK;
}

int ap_scrub_header(struct ap_scrub *sc, struct ap_span name, struct ap_span value,
                    struct ap_buf *out, bool *drop, bool *changed)
{
	const struct ap_field *f = ap_rules_header(sc->rs, name.p, name.n);
	const struct ap_action *act = f ? &f->act : &default_ip;
	enum ap_where where = sc->where;
	size_t plen = sc->pathlen, mark = out->len;
	enum hkind kind = H_PLAIN;
	int rc = AP_OK;
	bool num;

	*drop = *changed = false;
	if (sc->rs->nopaque)
		ap_scrub_opaque_header(sc, name, value);
	if (ap_span_ieq(name, "x-forwarded-for") || ap_span_ieq(name, "x-real-ip"))
		kind = H_ADDR_LIST;
	else if (ap_span_ieq(name, "forwarded"))
		kind = H_FORWARDED;
	if (!f && kind == H_PLAIN)
		return AP_OK;
	sc->where = AP_WHERE_HEADER;
	if (sc->finding_cb) {
		ap_scrub_path_key(sc, "header:", 7);
		ap_scrub_path_key(sc, name.p, name.n);
	}
	if (act->act == AP_ACT_DROP) {
		ap_scrub_found(sc, act, value.p, value.n, false);
		*drop = true;
	} else if (act->act == AP_ACT_KEEP) {
		ap_scrub_found(sc, act, value.p, value.n, false);
	} else if (f && f->ncodec) {
		rc = ap_scrub_nested(sc, f, value.p, value.n, out, changed);
	} else {
		if (kind == H_ADDR_LIST)
			rc = addr_list(sc, act, value, out);
		else if (kind == H_FORWARDED)
			rc = forwarded(sc, act, value, out);
		else
			rc = ap_scrub_apply(sc, act, value.p, value.n, false, false, out, &num);
		*changed = rc == AP_OK;
		/* An address list with nothing left is no header at all. */
		if (rc == AP_OK && kind != H_PLAIN && out->len == mark) {
			*drop = true;
			*changed = false;
		}
	}
	if (sc->finding_cb)
		ap_scrub_path_pop(sc, plen);
	sc->where = where;
	return rc;
}
