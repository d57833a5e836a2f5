/* What replaces a matched value: the pseudonym (pseudo.c), a mask, a truncated IP address,
 * a rounded number, or the value itself. Works on decoded bytes only; escaping and
 * re-encoding are the scrubbers' job, and dropping a key is the caller's. */
#include <stdio.h>
#include <string.h>

#include "action.h"
#include "detect.h"

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number(const char *s, size_t n)
{
	size_t i = 0, d;

	if (i < n && s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if (i < n && s[i] >= '1' && s[i] <= '9')
		while (i < n && is_digit((unsigned char)s[i]))
			i++;
	else
		return false;
	if (i < n && s[i] == '.') {
		for (d = ++i; i < n && is_digit((unsigned char)s[i]);)
			i++;
		if (i == d)
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		for (d = i; i < n && is_digit((unsigned char)s[i]);)
			i++;
		if (i == d)
			return false;
	}
	return i == n;
}

/* ---- mask ---- */

/* A code point starts at every byte that is not a UTF-8 continuation byte (and at the
 * first byte, whatever it is), so invalid UTF-8 still masks one '*' per group and the kept
 * tail never starts inside a character. A value no longer than what would be kept is
 * masked whole: showing the "last 4" of a 4-character value would show all of it. */
static int mask(const char *in, size_t n, unsigned keep, struct ap_buf *out)
{
	size_t cps = 0, hide, i;

	for (i = 0; i < n; i++)
		cps += i == 0 || ((unsigned char)in[i] & 0xC0) != 0x80;
	hide = cps <= keep ? cps : cps - keep;
	if (ap_buf_reserve(out, hide + n) != AP_OK)
		return AP_ERR;
	for (i = 0; i < n; i++) {
		if (i == 0 || ((unsigned char)in[i] & 0xC0) != 0x80) {
			if (hide == 0)
				break;
			hide--;
			out->p[out->len++] = '*';
		}
	}
	return ap_buf_add(out, in + i, n - i);
}

/* ---- truncate_ip ---- */

static void zero_host(uint8_t *a, unsigned bytes, unsigned bits)
{
	for (unsigned i = 0; i < bytes; i++) {
		if (bits >= 8 * (i + 1))
			continue;
		a[i] = bits <= 8 * i ? 0 : (uint8_t)(a[i] & (0xFF << (8 - (bits - 8 * i))));
	}
}

/* RFC 5952: lower-case hex without leading zeros; the longest run of two or more zero
 * groups becomes "::", the leftmost on a tie. */
static int print_v6(const uint8_t a[16], struct ap_buf *out)
{
	char s[48], *p = s;
	unsigned g[8];
	int best = -1, blen = 1;

	for (int i = 0; i < 8; i++)
		g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	for (int i = 0; i < 8;) {
		int j = i;
		while (j < 8 && g[j] == 0)
			j++;
		if (j - i > blen)
			best = i, blen = j - i;
		i = j > i ? j : i + 1;
	}
	for (int i = 0; i < 8;) {
		if (i == best) {
			*p++ = ':';
			if (i == 0)
				*p++ = ':';
			i += blen;
			continue;
		}
		p += snprintf(p, (size_t)(s + sizeof(s) - p), "%x", g[i]);
		if (++i < 8)
			*p++ = ':';
	}
	return ap_buf_add(out, s, (size_t)(p - s));
}

static int print_v4(const uint8_t a[4], const char *pre, struct ap_buf *out)
{
	char s[40];
	int k = snprintf(s, sizeof(s), "%s%u.%u.%u.%u", pre, a[0], a[1], a[2], a[3]);

	return ap_buf_add(out, s, (size_t)k);
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 client seen by a dual-stack
 * socket: it is cut at the IPv4 prefix and written in the RFC 5952 mixed form, since a /48
 * would erase it entirely and a /96 would keep it whole. */
static int truncate_ip(const struct ap_action *act, const char *in, size_t n, struct ap_buf *out)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
	unsigned b4 = act->v4bits, b6 = act->v6bits;
	uint8_t a[16];

	b4 = b4 > 32 ? 32 : b4;
	b6 = b6 > 128 ? 128 : b6;
	switch (ap_ip_parse(in, n, a)) {
	case 4:
		zero_host(a, 4, b4);
		return print_v4(a, "", out);
	case 6:
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			zero_host(a + 12, 4, b4);
			return print_v4(a + 12, "::ffff:", out);
		}
		zero_host(a, 16, b6);
		return print_v6(a, out);
	default:
		return AP_OK; /* not one address: the empty string */
	}
}

/* ---- round ---- */

#define ROUND_IN_MAX  64  /* longest text accepted as a number */
#define ROUND_DEC_MAX 10  /* most decimals printed */
#define ROUND_INT_MAX 309 /* most integer digits: a double's range */

/* Rounds the decimal text itself rather than a double: "1.005" is exactly half way as
 * written, and rounds to "1.01" at 2 places (strtod would make it 1.00499999… and give
 * "1.00"). It also keeps the result independent of LC_NUMERIC. Accepted: an optional sign,
 * digits with an optional fraction (".5" and "5." too), an optional exponent; no spaces,
 * hex, inf or nan, at most ROUND_IN_MAX bytes, below 10^309. Half rounds away from zero;
 * a result that is zero is printed without a sign ("-0.0001" at 2 places is "0.00"). */
static int round_number(const char *in, size_t n, unsigned dec, struct ap_buf *out)
{
	char d[ROUND_IN_MAX], r[ROUND_INT_MAX + ROUND_DEC_MAX + 2];
	size_t i = 0, nd = 0, ndig = 0, rl = 0;
	long point = 0, ex = 0, k;
	bool neg = false, zero = true;

	if (n == 0 || n > ROUND_IN_MAX)
		return AP_OK;
	/* The value is kept as 0.d[0..nd) * 10^point with d[0] != '0': leading zeros of the
	 * integer part are dropped, those of a fraction move the point left. */
	if (in[i] == '-' || in[i] == '+')
		neg = in[i++] == '-';
	for (; i < n && is_digit((unsigned char)in[i]); i++, ndig++)
		if (nd || in[i] != '0')
			d[nd++] = in[i], point++;
	if (i < n && in[i] == '.') {
		for (i++; i < n && is_digit((unsigned char)in[i]); i++, ndig++) {
			if (nd || in[i] != '0')
				d[nd++] = in[i];
			else
				point--;
		}
	}
	if (ndig == 0)
		return AP_OK;
	if (i < n && (in[i] == 'e' || in[i] == 'E')) {
		bool eneg = false;
		size_t e0;

		if (++i < n && (in[i] == '+' || in[i] == '-'))
			eneg = in[i++] == '-';
		for (e0 = i; i < n && is_digit((unsigned char)in[i]); i++)
			if (ex < 100000) /* saturate: 1e100000 is refused, 1e-100000 is 0 */
				ex = ex * 10 + (in[i] - '0');
		if (i == e0)
			return AP_OK;
		point += eneg ? -ex : ex;
	}
	if (i != n)
		return AP_OK;
	if (nd && point > ROUND_INT_MAX)
		return AP_OK;
	/* Keep the first k digits; the next one alone decides: >= '5' is at least half way. A
	 * negative k means the value is below a tenth of the last place: zero. */
	k = nd ? point + (long)dec : -1;
	if (k >= 0) {
		for (long j = 0; j < k; j++)
			r[rl++] = j < (long)nd ? d[j] : '0';
		if (k < (long)nd && d[k] >= '5') {
			size_t j = rl;
			while (j > 0 && r[j - 1] == '9')
				r[--j] = '0';
			if (j > 0) {
				r[j - 1]++;
			} else {
				memmove(r + 1, r, rl);
				r[0] = '1';
				rl++;
			}
		}
	}
	for (size_t j = 0; j < rl; j++)
		zero &= r[j] == '0';
	if (zero) {
		if (ap_buf_addc(out, '0') != AP_OK)
			return AP_ERR;
		if (dec && ap_buf_addc(out, '.') != AP_OK)
			return AP_ERR;
		for (unsigned j = 0; j < dec; j++)
			if (ap_buf_addc(out, '0') != AP_OK)
				return AP_ERR;
		return AP_OK;
	}
	if (neg && ap_buf_addc(out, '-') != AP_OK)
		return AP_ERR;
	if (rl > dec) {
		if (ap_buf_add(out, r, rl - dec) != AP_OK)
			return AP_ERR;
	} else if (ap_buf_addc(out, '0') != AP_OK) {
		return AP_ERR;
	}
	if (dec == 0)
		return AP_OK;
	if (ap_buf_addc(out, '.') != AP_OK)
		return AP_ERR;
	for (size_t j = rl; j < dec; j++)
		if (ap_buf_addc(out, '0') != AP_OK)
			return AP_ERR;
	return ap_buf_add(out, r + (rl > dec ? rl - dec : 0), rl > dec ? dec : rl);
}

/* ---- dispatch ---- */

int ap_action_apply(struct ap_pseudo *ps, const struct ap_action *act, const char *in, size_t n,
                    bool numeric, struct ap_buf *out, bool *numeric_out)
{
	size_t start = out->len;
	bool num = false; /* may this action's output be a bare number at all */
	int rc;

	if (numeric_out)
		*numeric_out = false;
	if (act->act != AP_ACT_KEEP && act->act != AP_ACT_DROP && act->act != AP_ACT_NONE &&
	    ap_detect_placeholder((enum ap_class)act->cls, in, n)) {
		rc = ap_buf_add(out, in, n);
		num = true;
		goto done;
	}
	switch (act->act) {
	case AP_ACT_KEEP:
		rc = ap_buf_add(out, in, n);
		num = true;
		break;
	case AP_ACT_HASH:
		/* hex and base64url stay strings even when they happen to be all digits, so a
		 * field's JSON type does not depend on the hash value */
		rc = ap_pseudo_make(ps, act, in, n, numeric, out);
		num = act->fmt == AP_HASH_PRESERVE;
		break;
	case AP_ACT_MASK:
		rc = mask(in, n, act->length, out);
		break;
	case AP_ACT_TRUNCATE_IP:
		rc = truncate_ip(act, in, n, out);
		break;
	case AP_ACT_ROUND:
		rc = round_number(
		        in, n, act->decimals > ROUND_DEC_MAX ? ROUND_DEC_MAX : act->decimals, out);
		num = true;
		break;
	default:
		return AP_ERR; /* DROP is the caller's; NONE is a compile error upstream */
	}
done:
	if (rc != AP_OK) {
		out->len = start; /* no half-written replacement */
		return AP_ERR;
	}
	if (numeric_out)
		*numeric_out = numeric && num && out->len > start &&
		               json_number(out->p + start, out->len - start);
	return AP_OK;
}
