/* Value detectors: decide from the bytes alone whether a value is shaped like a device or
 * subscriber identifier (IMEI, MEID, IMSI, ICCID, MAC, UUID, IP, phone, e-mail). They read
 * exactly <s, n> and nothing past it, never allocate and keep no state; they do not look
 * at keys and do not decide what is done with a match. */
#include <string.h>

#include "detect.h"

#define EMAIL_MAX 254 /* RFC 5321 path limit; also the longest value any detector takes */
#define LOCAL_MAX 64  /* RFC 5321 local part */
#define LABEL_MAX 63  /* RFC 1035 label */
#define IP6_MAX   45  /* six 4-digit groups, then a 15-byte dotted quad */
#define DETECT_MIN                                                                                 \
	6 /* shorter than "a@b.cn" or "1.2.3.4": nothing that identifies                           \
	     anyone ("::1" is loopback, the shortest IMEI has 14 digits) */
#define PHONE_DMIN 7
#define PHONE_DMAX 15 /* E.164 */

enum {
	C_DIG = 1 << 0,   /* 0-9 */
	C_HEXA = 1 << 1,  /* a-f A-F */
	C_ALPHA = 1 << 2, /* A-Z a-z */
	C_LOCAL = 1 << 3, /* e-mail local part: [A-Za-z0-9._%+-] */
	C_LABEL = 1 << 4, /* domain label: [A-Za-z0-9-] */
};

#define DG (C_DIG | C_LOCAL | C_LABEL)
#define HX (C_HEXA | C_ALPHA | C_LOCAL | C_LABEL)
#define AL (C_ALPHA | C_LOCAL | C_LABEL)

/* One load answers every class question; locale-free by construction. */
static const unsigned char ctab[256] = {
        ['0'] = DG,
        ['1'] = DG,
        ['2'] = DG,
        ['3'] = DG,
        ['4'] = DG,
        ['5'] = DG,
        ['6'] = DG,
        ['7'] = DG,
        ['8'] = DG,
        ['9'] = DG,
        ['a'] = HX,
        ['b'] = HX,
        ['c'] = HX,
        ['d'] = HX,
        ['e'] = HX,
        ['f'] = HX,
        ['A'] = HX,
        ['B'] = HX,
        ['C'] = HX,
        ['D'] = HX,
        ['E'] = HX,
        ['F'] = HX,
        ['g'] = AL,
        ['h'] = AL,
        ['i'] = AL,
        ['j'] = AL,
        ['k'] = AL,
        ['l'] = AL,
        ['m'] = AL,
        ['n'] = AL,
        ['o'] = AL,
        ['p'] = AL,
        ['q'] = AL,
        ['r'] = AL,
        ['s'] = AL,
        ['t'] = AL,
        ['u'] = AL,
        ['v'] = AL,
        ['w'] = AL,
        ['x'] = AL,
        ['y'] = AL,
        ['z'] = AL,
        ['G'] = AL,
        ['H'] = AL,
        ['I'] = AL,
        ['J'] = AL,
        ['K'] = AL,
        ['L'] = AL,
        ['M'] = AL,
        ['N'] = AL,
        ['O'] = AL,
        ['P'] = AL,
        ['Q'] = AL,
        ['R'] = AL,
        ['S'] = AL,
        ['T'] = AL,
        ['U'] = AL,
        ['V'] = AL,
        ['W'] = AL,
        ['X'] = AL,
        ['Y'] = AL,
        ['Z'] = AL,
        ['.'] = C_LOCAL,
        ['_'] = C_LOCAL,
        ['%'] = C_LOCAL,
        ['+'] = C_LOCAL,
        ['-'] = C_LOCAL | C_LABEL,
};

#undef DG
#undef HX
#undef AL

static inline unsigned cflags(char c)
{
	return ctab[(unsigned char)c];
}

static inline bool dig(char c)
{
	return (unsigned)((unsigned char)c - '0') < 10u;
}

/* 0..15, or -1. Only A-F and a-f land in 'a'..'f' after |0x20. */
static inline int hexv(char c)
{
	unsigned d = (unsigned)(unsigned char)c - '0';

	if (d < 10u)
		return (int)d;
	d = ((unsigned)(unsigned char)c | 0x20u) - 'a';
	return d < 6u ? (int)d + 10 : -1;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!dig(s[i]))
			return false;
	return true;
}

/* Reads <k> (even) hex digits into k/2 bytes. */
static bool hex_bytes(const char *s, size_t k, uint8_t *out)
{
	for (size_t i = 0; i < k; i += 2) {
		int h = hexv(s[i]), l = hexv(s[i + 1]);
		if ((h | l) < 0)
			return false;
		*out++ = (uint8_t)(h << 4 | l);
	}
	return true;
}

/* ---- Luhn ---- */

/* Luhn sum mod 10 of <d, n>, doubling the last digit when <dbl>. Non-digits count as 0
 * and set *bad. The sum is kept below 10 as it goes, so any n is exact. */
static unsigned luhn_sum(const char *d, size_t n, unsigned dbl, bool *bad)
{
	static const unsigned char twice[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
	unsigned sum = 0;

	for (size_t i = n; i-- > 0; dbl ^= 1u) {
		unsigned v = (unsigned)(unsigned char)d[i] - '0';
		if (v > 9u) {
			*bad = true;
			continue;
		}
		sum += dbl ? twice[v] : v;
		if (sum >= 10u)
			sum -= 10u;
	}
	return sum;
}

bool ap_luhn_ok(const char *d, size_t n)
{
	bool bad = false;

	return n > 0 && luhn_sum(d, n, 0, &bad) == 0 && !bad;
}

/* Bytes that are not digits count as 0 (the contract asks for digits only). */
char ap_luhn_digit(const char *d, size_t n)
{
	bool bad = false;
	unsigned sum = luhn_sum(d, n, 1, &bad);

	return (char)('0' + (10u - sum) % 10u);
}

/* ---- digit-only identifiers: IMEI, MEID (decimal), IMSI, ICCID ---- */

/* GSMA Reporting Body Identifiers: the first two digits of every IMEI allocated. */
static const unsigned char rbi_tab[100] = {
        [1] = 1,  [10] = 1, [30] = 1, [33] = 1, [35] = 1, [44] = 1, [45] = 1, [49] = 1, [50] = 1,
        [51] = 1, [52] = 1, [53] = 1, [54] = 1, [86] = 1, [91] = 1, [98] = 1, [99] = 1,
};

/* Caller has checked s[0], s[1] are digits. */
static inline bool rbi_ok(const char *s)
{
	return rbi_tab[(s[0] - '0') * 10 + (s[1] - '0')];
}

/* Decimal MEID: 10 digits of manufacturer code (32 bits), 8 of serial (24 bits). */
static bool meid_dec_ok(const char *s)
{
	uint64_t m = 0;
	uint32_t sn = 0;

	for (int i = 0; i < 10; i++)
		m = m * 10 + (uint64_t)(s[i] - '0');
	for (int i = 10; i < 18; i++)
		sn = sn * 10 + (uint32_t)(s[i] - '0');
	return m <= 0xFFFFFFFFu && sn <= 0xFFFFFFu;
}

/* Every digit-only class. Lengths are checked before any byte is scanned, so the common
 * number (a count, a timestamp) costs one switch. */
static enum ap_class digits_class(const char *s, size_t n, unsigned mask)
{
	switch (n) {
	case 14:
	case 16:
	case 18:
		if (!(mask & AP_DET_IMEI))
			return AP_CLASS_NONE;
		break;
	case 15:
		if (!(mask & (AP_DET_IMEI | AP_DET_IMSI)))
			return AP_CLASS_NONE;
		break;
	case 19:
	case 20:
		if (!(mask & AP_DET_ICCID))
			return AP_CLASS_NONE;
		break;
	default:
		return AP_CLASS_NONE;
	}
	if (!all_digits(s, n))
		return AP_CLASS_NONE;
	switch (n) {
	case 14: /* IMEI without its check digit: no Luhn to test */
	case 16: /* IMEISV: the last two digits are a software version, not a check digit */
		return rbi_ok(s) ? AP_CLASS_IMEI : AP_CLASS_NONE;
	case 15:
		/* A valid IMEI is never an IMSI, even when only IMSI detection is on: the
		 * value is then left alone rather than classed wrongly. */
		if (rbi_ok(s) && ap_luhn_ok(s, 15))
			return (mask & AP_DET_IMEI) ? AP_CLASS_IMEI : AP_CLASS_NONE;
		return (mask & AP_DET_IMSI) && s[0] >= '2' && s[0] <= '7' ? AP_CLASS_IMSI
		                                                          : AP_CLASS_NONE;
	case 18:
		return meid_dec_ok(s) ? AP_CLASS_MEID : AP_CLASS_NONE;
	default:
		return s[0] == '8' && s[1] == '9' && ap_luhn_ok(s, n) ? AP_CLASS_ICCID
		                                                      : AP_CLASS_NONE;
	}
}

/* Hex MEID: 14 hex digits, the first two A0..FF (a manufacturer code, which sets it apart
 * from a 14-digit IMEI). That also guarantees the "at least one letter" rule. */
static bool meid_hex_ok(const char *s)
{
	uint8_t b[7];

	return (cflags(s[0]) & C_HEXA) && hex_bytes(s, 14, b);
}

/* ---- MAC, UUID ---- */

/* The six octets of a MAC in any text form: 17 bytes with ':' or '-' (one of them
 * throughout), Cisco's 14-byte "aabb.ccdd.eeff", or 12 bare hex digits. Either case. */
static bool mac_parse(const char *s, size_t n, uint8_t mac[6])
{
	switch (n) {
	case 17:
		if (s[2] != ':' && s[2] != '-')
			return false;
		for (int i = 0; i < 6; i++) {
			if (i > 0 && s[3 * i - 1] != s[2])
				return false;
			if (!hex_bytes(s + 3 * i, 2, mac + i))
				return false;
		}
		return true;
	case 14:
		return s[4] == '.' && s[9] == '.' && hex_bytes(s, 4, mac) &&
		       hex_bytes(s + 5, 4, mac + 2) && hex_bytes(s + 10, 4, mac + 4);
	case 12:
		return hex_bytes(s, 12, mac);
	default:
		return false;
	}
}

/* Bare 12 hex digits are taken as a MAC only with at least one digit and one letter:
 * all-digit 12-byte values are far more often order or account numbers (and 12-digit
 * timestamps), all-letter ones words ("deadbeefcafe"). */
static bool mac_ok(const char *s, size_t n)
{
	uint8_t mac[6];
	unsigned seen = 0;

	if (!mac_parse(s, n, mac))
		return false;
	if (n != 12)
		return true;
	for (size_t i = 0; i < 12; i++)
		seen |= cflags(s[i]);
	return (seen & (C_DIG | C_HEXA)) == (C_DIG | C_HEXA);
}

/* 8-4-4-4-12 hex, any case, any version. Bare 32 hex digits are not taken: they are
 * indistinguishable from an MD5 digest or a random token. */
static bool uuid_ok(const char *s)
{
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (hexv(s[i]) < 0) {
			return false;
		}
	}
	return true;
}

/* ---- IP ---- */

/* Exactly a dotted quad of decimal 0..255; "0" stands alone, any other leading zero is
 * refused (some parsers read it as octal, so its meaning is ambiguous). */
static bool ip4_parse(const char *s, size_t n, uint8_t out[4])
{
	size_t i = 0;

	for (int k = 0; k < 4; k++) {
		unsigned v;

		if (k > 0 && (i == n || s[i++] != '.'))
			return false;
		if (i == n || !dig(s[i]))
			return false;
		v = (unsigned)(s[i++] - '0');
		while (v != 0 && i < n && dig(s[i])) {
			v = v * 10 + (unsigned)(s[i++] - '0');
			if (v > 255)
				return false;
		}
		out[k] = (uint8_t)v;
	}
	return i == n;
}

/* RFC 4291 2.2 text: eight groups of 1-4 hex digits, one "::" standing for one or more
 * zero groups, the last 32 bits optionally as a dotted quad. No zone ("%eth0"), no
 * brackets, no prefix length. This is the language glibc's inet_pton accepts, which the
 * unit tests check byte for byte. */
#define NO_GAP 9 /* no "::" seen */

static bool ip6_parse(const char *s, size_t n, uint8_t out[16])
{
	size_t i = 0, ng = 0, gap = NO_GAP; /* ng: groups written; gap: group index of "::" */

	if (n < 2)
		return false;
	if (s[0] == ':') {
		if (s[1] != ':')
			return false;
		gap = 0;
		i = 2;
	}
	while (i < n) {
		size_t st = i;
		unsigned v = 0;

		for (; i < n && i - st < 4; i++) {
			int h = hexv(s[i]);
			if (h < 0)
				break;
			v = v << 4 | (unsigned)h;
		}
		if (i == st)
			return false;
		if (i < n && s[i] == '.') {
			/* The group just read was the first octet: reread from its start. */
			if (ng > 6 || !ip4_parse(s + st, n - st, out + 2 * ng))
				return false;
			ng += 2;
			break;
		}
		if (ng == 8)
			return false;
		out[2 * ng] = (uint8_t)(v >> 8);
		out[2 * ng + 1] = (uint8_t)v;
		ng++;
		if (i == n)
			break;
		if (s[i] != ':' || ++i == n)
			return false;
		if (s[i] == ':') {
			if (gap != NO_GAP)
				return false;
			gap = ng;
			i++;
		}
	}
	if (gap == NO_GAP)
		return ng == 8;
	if (ng == 8)
		return false; /* "::" must stand for at least one group */
	memmove(out + 16 - 2 * (ng - gap), out + 2 * gap, 2 * (ng - gap));
	memset(out + 2 * gap, 0, 16 - 2 * ng);
	return true;
}

static int ip_parse(const char *s, size_t n, uint8_t out[16])
{
	if (n >= 7 && n <= 15 && dig(s[0]) && ip4_parse(s, n, out))
		return 4;
	if (n <= IP6_MAX && ip6_parse(s, n, out))
		return 6;
	return 0;
}

/* <addr> is written only on success; for 4 the address is in addr[0..3] and addr[4..15]
 * are zeroed. */
int ap_ip_parse(const char *s, size_t n, uint8_t addr[16])
{
	uint8_t tmp[16];
	int v = ip_parse(s, n, tmp);

	if (v == 4) {
		memcpy(addr, tmp, 4);
		memset(addr + 4, 0, 12);
	} else if (v == 6) {
		memcpy(addr, tmp, 16);
	}
	return v;
}

/* ---- phone, e-mail ---- */

static inline bool phone_sep(char c)
{
	return c == ' ' || c == '-' || c == '.';
}

/* A marker ('+', or "tel:" in any case as URI schemes are, then an optional '+'), then
 * 7..15 digits. Between two digits: one separator, or "(" after an optional separator,
 * or ")" before an optional separator; one pair of parentheses at most, closed, holding
 * digits. Anything else, including a trailing separator, is not a phone. */
static bool phone_ok(const char *s, size_t n)
{
	size_t i, digits = 0;
	int paren = 0; /* 0: none yet, 1: open, 2: closed */

	if (s[0] == '+')
		i = 1;
	else if (n >= 4 && (s[0] | 0x20) == 't' && (s[1] | 0x20) == 'e' && (s[2] | 0x20) == 'l' &&
	         s[3] == ':')
		i = n > 4 && s[4] == '+' ? 5 : 4;
	else
		return false;
	for (;;) {
		char c;

		if (i == n || !dig(s[i]))
			return false;
		do {
			if (++digits > PHONE_DMAX)
				return false;
			i++;
		} while (i < n && dig(s[i]));
		if (i == n)
			break;
		c = s[i++];
		if (phone_sep(c) && i < n && s[i] == '(')
			c = s[i++];
		if (c == '(') {
			if (paren != 0)
				return false;
			paren = 1;
		} else if (c == ')') {
			if (paren != 1)
				return false;
			paren = 2;
			if (i < n && phone_sep(s[i]))
				i++;
		} else if (!phone_sep(c)) {
			return false;
		}
	}
	return digits >= PHONE_DMIN && paren != 1;
}

/* local@domain: local is 1..64 of [A-Za-z0-9._%+-] (dots are not policed: this finds
 * addresses, it does not validate them); the domain has two or more labels of
 * [A-Za-z0-9-], 1..63 bytes, not starting or ending with '-', the last one 2+ letters. */
static bool email_ok(const char *s, size_t n)
{
	size_t i = 0, dots = 0;

	if (n > EMAIL_MAX)
		return false;
	while (i < n && i <= LOCAL_MAX && (cflags(s[i]) & C_LOCAL))
		i++;
	if (i == 0 || i > LOCAL_MAX || i == n || s[i] != '@')
		return false;
	i++;
	for (;;) {
		size_t st = i;
		unsigned all = C_ALPHA;

		while (i < n && (cflags(s[i]) & C_LABEL))
			all &= cflags(s[i++]);
		if (i == st || i - st > LABEL_MAX || s[st] == '-' || s[i - 1] == '-')
			return false;
		if (i == n)
			return dots > 0 && all == C_ALPHA && i - st >= 2;
		if (s[i] != '.')
			return false;
		dots++;
		i++;
	}
}

/* ---- entry points ---- */

/* The cheap test before a full parse: an address has a ':' within its first five bytes
 * (a group is at most four hex digits) or, for IPv4, a '.' within its first four — words
 * that merely start with a hex letter ("add", "face") have neither. */
static inline bool ip_maybe(const char *s, size_t n)
{
	size_t lim = n < 5 ? n : 5;

	if (s[0] == ':')
		return true;
	if (hexv(s[0]) < 0)
		return false;
	for (size_t i = 1; i < lim; i++) {
		if (s[i] == ':' || (s[i] == '.' && i < 4 && dig(s[0])))
			return true;
		if (hexv(s[i]) < 0)
			return false;
	}
	return false;
}

/* Out of line so that the hot path of ap_detect carries no array (and no stack canary). */
static __attribute__((noinline)) bool is_ip(const char *s, size_t n)
{
	uint8_t tmp[16];
	return ip_parse(s, n, tmp) != 0;
}

enum ap_class ap_detect(const char *s, size_t n, unsigned mask, bool numeric)
{
	enum ap_class c;
	char c0;

	if (n < DETECT_MIN || n > EMAIL_MAX || !(mask & AP_DET_ALL))
		return AP_CLASS_NONE;
	c0 = s[0];
	if (dig(c0)) {
		/* An all-digit value matches a digit class or nothing: no other shape is
		 * all digits. A number literal never gets further. */
		c = digits_class(s, n, mask);
		if (c != AP_CLASS_NONE || numeric)
			return c;
	} else if (numeric) {
		return AP_CLASS_NONE;
	}
	/* The fixed-length shapes, in precedence order (MEID > MAC > UUID). */
	switch (n) {
	case 12:
	case 17:
		if ((mask & AP_DET_MAC) && mac_ok(s, n))
			return AP_CLASS_MAC;
		break;
	case 14:
		if ((mask & AP_DET_IMEI) && meid_hex_ok(s))
			return AP_CLASS_MEID;
		if ((mask & AP_DET_MAC) && mac_ok(s, n))
			return AP_CLASS_MAC;
		break;
	case 36:
		if ((mask & AP_DET_UUID) && uuid_ok(s))
			return AP_CLASS_ADID;
		break;
	default:
		break;
	}
	if ((mask & AP_DET_IP) && n <= IP6_MAX && ip_maybe(s, n) && is_ip(s, n))
		return AP_CLASS_IP;
	if ((mask & AP_DET_PHONE) && (c0 == '+' || (c0 | 0x20) == 't') && phone_ok(s, n))
		return AP_CLASS_PHONE;
	/* The '@' must come within 65 bytes; memchr finds it, or its absence, faster than
	 * the local-part scan does in long tokens. */
	if ((mask & AP_DET_EMAIL) && n >= 6 && (cflags(c0) & C_LOCAL) &&
	    memchr(s, '@', n < LOCAL_MAX + 1 ? n : LOCAL_MAX + 1) && email_ok(s, n))
		return AP_CLASS_EMAIL;
	return AP_CLASS_NONE;
}

unsigned ap_detect_parse(const char *name)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = {
	        {"imei", AP_DET_IMEI},   {"imsi", AP_DET_IMSI},   {"iccid", AP_DET_ICCID},
	        {"mac", AP_DET_MAC},     {"uuid", AP_DET_UUID},   {"ip", AP_DET_IP},
	        {"phone", AP_DET_PHONE}, {"email", AP_DET_EMAIL},
	};

	if (!name)
		return 0;
	for (size_t i = 0; i < AP_ARRAY_LEN(names); i++)
		if (strcmp(name, names[i].name) == 0)
			return names[i].bit;
	return 0;
}

/* Advertising ids: 16 or more bytes of '0' and '-' with at least one '0' (the all-zero
 * UUID with or without hyphens, and the zeroed forms SDKs send). MACs: 00:00:00:00:00:00
 * and 02:00:00:00:00:00 in any of the forms mac_parse reads. */
bool ap_detect_placeholder(enum ap_class cls, const char *s, size_t n)
{
	uint8_t mac[6];
	size_t zeros = 0;

	switch (cls) {
	case AP_CLASS_ADID:
	case AP_CLASS_IDFA:
	case AP_CLASS_IDFV:
	case AP_CLASS_GAID:
	case AP_CLASS_OAID:
		if (n < 16)
			return false;
		for (size_t i = 0; i < n; i++) {
			if (s[i] == '0')
				zeros++;
			else if (s[i] != '-')
				return false;
		}
		return zeros > 0;
	case AP_CLASS_MAC:
	case AP_CLASS_BSSID:
		if (!mac_parse(s, n, mac))
			return false;
		return (mac[0] == 0 || mac[0] == 2) &&
		       (mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
	default:
		return false;
	}
}
