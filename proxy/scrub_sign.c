/* Re-signers: SDKs that sign their payload (Sensors' crc, a Java hashCode of data_list;
 * Amplitude's checksum, an MD5 of v + client + e + upload_time) have it recomputed over
 * the scrubbed values, or the ingest server drops the batch. The scanners note where the
 * fields are in their output as they pass; this writes the new signature over the old one
 * afterwards. No second parse: the output is only sliced at the offsets noted. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>

#include "json.h"
#include "scrub.h"

bool ap_sign_begin(struct ap_scrub *sc, const struct ap_buf *out)
{
	struct ap_sign_rec *r = &sc->sign;

	/* Documents nested in the body leave the body's record alone. */
	if (sc->level != 0 || sc->where != AP_WHERE_BODY || !sc->rs->nsigners)
		return false;
	r->on = true;
	r->base = out->len;
	memset(r->sig, 0, sizeof(r->sig));
	memset(r->over, 0, sizeof(r->over));
	return true;
}

static void note(struct ap_sign_span *s, size_t pos, size_t len, bool changed)
{
	if (s->seen) {
		s->dup = true;
		return;
	}
	s->seen = true;
	s->pos = (uint32_t)pos;
	s->len = (uint32_t)len;
	s->changed = changed;
}

void ap_sign_note(struct ap_scrub *sc, const char *key, size_t kn, size_t pos, size_t len,
                  bool changed)
{
	struct ap_sign_rec *r = &sc->sign;
	const struct ap_ruleset *rs = sc->rs;

	if (!r->on || pos < r->base || pos - r->base > UINT32_MAX || len > UINT32_MAX)
		return;
	pos -= r->base;
	for (unsigned i = 0; i < rs->nsigners; i++) {
		const struct ap_signer *s = &rs->signers[i];
		if (kn == s->field_len && memcmp(key, s->field, kn) == 0)
			note(&r->sig[i], pos, len, changed);
		for (unsigned k = 0; k < s->nover; k++)
			if (kn == s->over_len[k] && memcmp(key, s->over[k], kn) == 0)
				note(&r->over[i][k], pos, len, changed);
	}
}

/* ---- the algorithms ---- */

/* One code point of UTF-8 at <p> (n > 0 bytes): returns the bytes it takes; a malformed or
 * truncated sequence is one byte standing for U+FFFD. */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
	unsigned char c = p[0];
	size_t len;
	uint32_t v, min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF)
		len = 2, v = c & 0x1F, min = 0x80;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3, v = c & 0x0F, min = 0x800;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4, v = c & 0x07, min = 0x10000;
	else
		goto bad;
	if (n < len)
		goto bad;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			goto bad;
		v = v << 6 | (p[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		goto bad;
	*cp = v;
	return len;
bad:
	*cp = 0xFFFD;
	return 1;
}

int32_t ap_sign_java_hashcode(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	uint32_t h = 0; /* Java's int arithmetic: wraps modulo 2^32 */
	size_t i = 0;

	while (i < n) {
		uint32_t cp;
		i += utf8_next(u + i, n - i, &cp);
		if (cp >= 0x10000) { /* a surrogate pair: two UTF-16 code units */
			cp -= 0x10000;
			h = 31 * h + (0xD800 + (cp >> 10));
			h = 31 * h + (0xDC00 + (cp & 0x3FF));
		} else
			h = 31 * h + cp;
	}
	return (int32_t)h;
}

/* The signature text of <algo> over <p, n> into t[48]; <upper> for upper-case hex. */
static int compute(uint8_t algo, const char *p, size_t n, bool upper, char *t, size_t *tl)
{
	if (algo == AP_SIGN_JAVA_HASHCODE) {
		*tl = (size_t)snprintf(t, 48, "%" PRId32, ap_sign_java_hashcode(p, n));
		return AP_OK;
	}
	{
		static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";
		const char *hex = upper ? up : lo;
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int ml = 0;

		if (EVP_Digest(p, n, md, &ml, EVP_md5(), NULL) != 1 || ml != 16)
			return AP_ERR;
		for (unsigned i = 0; i < 16; i++) {
			t[2 * i] = hex[md[i] >> 4];
			t[2 * i + 1] = hex[md[i] & 15];
		}
		*tl = 32;
		return AP_OK;
	}
}

/* Appends the decoded value of the output slice <p, n> to sc->sig. */
static int value_of(struct ap_scrub *sc, enum ap_sign_fmt fmt, const char *p, size_t n)
{
	const char *why;
	struct ap_pct_style st;

	if (fmt == AP_SIGN_FORM)
		return ap_pct_decode(p, n, &sc->sig, &st, &why);
	if (n >= 2 && p[0] == '"')
		return ap_json_unescape(p + 1, n - 2, &sc->sig);
	return ap_buf_add(&sc->sig, p, n);
}

/* Replaces out[pos, pos + len) by <t, tl>. */
static int splice(struct ap_buf *out, size_t pos, size_t len, const char *t, size_t tl)
{
	if (tl > len && ap_buf_reserve(out, tl - len) != AP_OK)
		return AP_ERR;
	memmove(out->p + pos + tl, out->p + pos + len, out->len - pos - len);
	memcpy(out->p + pos, t, tl);
	out->len = out->len - len + tl;
	return AP_OK;
}

int ap_sign_finish(struct ap_scrub *sc, struct ap_buf *out, enum ap_sign_fmt fmt)
{
	struct ap_sign_rec *r = &sc->sign;
	const struct ap_ruleset *rs = sc->rs;
	char text[AP_SIGNERS_MAX][52];
	size_t tlen[AP_SIGNERS_MAX];
	bool pending[AP_SIGNERS_MAX] = {false};

	if (!r->on)
		return AP_OK;
	r->on = false;
	for (unsigned i = 0; i < rs->nsigners; i++) {
		const struct ap_signer *s = &rs->signers[i];
		const struct ap_sign_span *sig = &r->sig[i];
		const char *old = out->p + r->base + sig->pos;
		bool changed = false, dup = sig->dup, upper = false, quoted;
		size_t tl = 0;
		char *t = text[i];

		if (!sig->seen)
			continue; /* the SDK did not sign this one */
		for (unsigned k = 0; k < s->nover; k++) {
			changed |= r->over[i][k].changed;
			dup |= r->over[i][k].dup;
		}
		if (!changed)
			continue;
		if (dup)
			return ap_scrub_fail(sc, "a signed field appears more than once", 0);
		ap_buf_clear(&sc->sig);
		for (unsigned k = 0; k < s->nover; k++) {
			const struct ap_sign_span *o = &r->over[i][k];
			if (o->seen &&
			    value_of(sc, fmt, out->p + r->base + o->pos, o->len) != AP_OK)
				return ap_scrub_fail(sc, "cannot read a signed field", 0);
		}
		/* Hex is written in the case the SDK wrote it. */
		for (size_t b = 0; b < sig->len; b++)
			upper |= old[b] >= 'A' && old[b] <= 'F';
		quoted = fmt == AP_SIGN_JSON && sig->len && old[0] == '"';
		if (quoted || (fmt == AP_SIGN_JSON && s->algo != AP_SIGN_JAVA_HASHCODE))
			t[tl++] = '"';
		if (compute(s->algo, sc->sig.p, sc->sig.len, upper, t + tl, &tlen[i]) != AP_OK)
			return ap_scrub_fail(sc, "cannot compute a signature", 0);
		tl += tlen[i];
		if (t[0] == '"')
			t[tl++] = '"';
		tlen[i] = tl;
		pending[i] = true;
	}
	/* Last in the output first, so the offsets of the others still hold. */
	for (;;) {
		int best = -1;
		for (unsigned i = 0; i < rs->nsigners; i++)
			if (pending[i] && (best < 0 || r->sig[i].pos > r->sig[best].pos))
				best = (int)i;
		if (best < 0)
			break;
		pending[best] = false;
		if (splice(out, r->base + r->sig[best].pos, r->sig[best].len, text[best],
		           tlen[best]) != AP_OK)
			return ap_scrub_fail(sc, "out of memory", 0);
		sc->st.resigned++;
	}
	return AP_OK;
}
