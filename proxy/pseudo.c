/* Keyed pseudonyms: loads secrets from files, computes HMAC-SHA256 through OpenSSL's
 * EVP_MAC, and writes the result as hex, base64url, or a same-shape value drawn from an
 * HMAC byte stream. It does not decide which values are identifiers (detect.c, rules.c)
 * and never logs: key bytes and input values stay out of every message. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "detect.h"
#include "pseudo.h"

/* ---- keys ---- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return AP_ERR;
}

static bool key_id_ok(const char *id)
{
	size_t n = 0;

	for (; id[n]; n++) {
		char c = id[n];
		if (n >= AP_KEY_ID_MAX)
			return false;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return n > 0;
}

static bool is_space(unsigned char c)
{
	return c == '\n' || c == '\r' || c == ' ' || c == '\t';
}

/* Symlinks are followed on purpose: Kubernetes and Docker mount secrets as links into a
 * "..data" directory, so O_NOFOLLOW would refuse the normal deployment. What is checked
 * is the file actually opened (fstat on the descriptor, no race with the path): it must be
 * a regular file with no permission bits for others. Group bits are allowed (0640 for a
 * group the proxy runs in is a common way to share a secret). O_NONBLOCK keeps a FIFO at
 * the path from blocking start-up before fstat refuses it. */
int ap_key_load(struct ap_key *k, const char *id, const char *path, char *err, size_t errlen)
{
	unsigned char buf[AP_KEY_MAX + 64 + 1];
	size_t len = 0;
	struct stat st;
	int fd, rc = AP_ERR;

	if (!id || !key_id_ok(id))
		return fail(err, errlen, "key (%s): id must be 1..%d characters of [A-Za-z0-9_-]",
		            path ? path : "?", AP_KEY_ID_MAX);
	if (!path || !*path)
		return fail(err, errlen, "key %s: no file given", id);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return fail(err, errlen, "key %s (%s): cannot open: %s", id, path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		fail(err, errlen, "key %s (%s): cannot stat: %s", id, path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		fail(err, errlen, "key %s (%s): not a regular file", id, path);
		goto out;
	}
	if (st.st_mode & 007) {
		fail(err, errlen, "key %s (%s): %s by others (mode %04o); chmod 600 it", id, path,
		     (st.st_mode & 004) ? "readable" : "accessible",
		     (unsigned)(st.st_mode & 07777));
		goto out;
	}
	/* One byte more than the largest file accepted tells "too long" from "exactly full". */
	while (len < sizeof(buf)) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail(err, errlen, "key %s (%s): cannot read: %s", id, path,
			     strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len == sizeof(buf)) {
		fail(err, errlen, "key %s (%s): too long (more than %d bytes)", id, path,
		     AP_KEY_MAX + 64);
		goto out;
	}
	while (len && is_space(buf[len - 1]))
		len--;
	if (len < AP_KEY_MIN) {
		fail(err, errlen, "key %s (%s): too short (%zu bytes, at least %d)", id, path, len,
		     AP_KEY_MIN);
		goto out;
	}
	if (len > AP_KEY_MAX) {
		fail(err, errlen, "key %s (%s): too long (%zu bytes, at most %d)", id, path, len,
		     AP_KEY_MAX);
		goto out;
	}
	OPENSSL_cleanse(k->secret, sizeof(k->secret));
	memcpy(k->secret, buf, len);
	k->len = len;
	memcpy(k->id, id, strlen(id) + 1);
	rc = AP_OK;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

void ap_keyring_wipe(struct ap_keyring *kr)
{
	for (int i = 0; i < AP_KEYS_MAX; i++) {
		OPENSSL_cleanse(kr->keys[i].secret, sizeof(kr->keys[i].secret));
		kr->keys[i].len = 0;
	}
}

/* ---- HMAC ---- */

/* ctx is keyed once; each hash re-initialises it with a NULL key, which OpenSSL 3.0 turns
 * into a copy of the precomputed inner-pad state (one allocation). EVP_MAC_CTX_dup of a
 * keyed template per hash copies three digest contexts instead: measured on a 15-byte
 * value, about 190 ns against 430 ns, so scratch is left NULL. Re-initialising also
 * discards whatever a failed hash left half done. */
int ap_pseudo_init(struct ap_pseudo *ps, const struct ap_key *key)
{
	OSSL_PARAM params[2];
	EVP_MAC *mac;
	EVP_MAC_CTX *ctx;

	memset(ps, 0, sizeof(*ps));
	if (!key || key->len > AP_KEY_MAX)
		return AP_ERR;
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!mac)
		return AP_ERR;
	ctx = EVP_MAC_CTX_new(mac);
	if (!ctx) {
		EVP_MAC_free(mac);
		return AP_ERR;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, key->secret, key->len, params)) {
		EVP_MAC_CTX_free(ctx);
		EVP_MAC_free(mac);
		return AP_ERR;
	}
	ps->key = key;
	ps->mac = mac;
	ps->ctx = ctx;
	return AP_OK;
}

void ap_pseudo_free(struct ap_pseudo *ps)
{
	EVP_MAC_CTX_free(ps->ctx), ps->ctx = NULL;
	EVP_MAC_free(ps->mac), ps->mac = NULL;
	ps->key = NULL;
}

static int mac_begin(struct ap_pseudo *ps)
{
	return ps->ctx && EVP_MAC_init(ps->ctx, NULL, 0, NULL) ? AP_OK : AP_ERR;
}

static int mac_update(struct ap_pseudo *ps, const void *p, size_t n)
{
	return EVP_MAC_update(ps->ctx, p, n) ? AP_OK : AP_ERR;
}

static int mac_end(struct ap_pseudo *ps, unsigned char mac[32])
{
	size_t outl = 0;

	if (!EVP_MAC_final(ps->ctx, mac, &outl, 32) || outl != 32)
		return AP_ERR;
	return AP_OK;
}

int ap_pseudo_hmac(struct ap_pseudo *ps, const void *in, size_t n, unsigned char mac[32])
{
	if (mac_begin(ps) != AP_OK || mac_update(ps, in, n) != AP_OK)
		return AP_ERR;
	return mac_end(ps, mac);
}

/* ---- shapes and canonical forms ---- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_digit((unsigned char)s[i]))
			return false;
	return n > 0;
}

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (hexval((unsigned char)s[i]) < 0)
			return false;
	return n > 0;
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Six octets as "aa:bb:cc:dd:ee:ff", "aa-bb-…", "aabbccddeeff" or Cisco "aabb.ccdd.eeff",
 * one separator style throughout, two hex digits per octet. Fills hex12 (lower case). */
static bool mac_shape(const char *s, size_t n, char hex12[12])
{
	size_t step, j = 0;
	char sep = 0;

	if (n == 12)
		step = 0;
	else if (n == 17 && (s[2] == ':' || s[2] == '-'))
		step = 3, sep = s[2];
	else if (n == 14 && s[4] == '.')
		step = 5, sep = '.';
	else
		return false;
	for (size_t i = 0; i < n; i++) {
		bool at_sep = step == 3 ? i % 3 == 2 : step == 5 ? i % 5 == 4 : false;
		if (at_sep) {
			if (s[i] != sep)
				return false;
			continue;
		}
		if (hexval((unsigned char)s[i]) < 0)
			return false;
		hex12[j++] = (char)lower((unsigned char)s[i]);
	}
	return j == 12;
}

/* 8-4-4-4-12 hex digits with dashes (advertising ids as the SDKs send them). */
static bool uuid_shape(const char *s, size_t n)
{
	if (n != 36)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (hexval((unsigned char)s[i]) < 0) {
			return false;
		}
	}
	return true;
}

static bool is_uuid_class(int cls)
{
	return cls == AP_CLASS_ADID || cls == AP_CLASS_IDFA || cls == AP_CLASS_IDFV ||
	       cls == AP_CLASS_GAID || cls == AP_CLASS_OAID;
}

static bool is_mac_class(int cls)
{
	return cls == AP_CLASS_MAC || cls == AP_CLASS_BSSID;
}

/* Feeds <s, n> to the MAC with ASCII letters lowered, through a small stack buffer so a
 * long e-mail needs no allocation. */
static int update_lower(struct ap_pseudo *ps, const char *s, size_t n)
{
	char tmp[256];

	while (n) {
		size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
		for (size_t i = 0; i < k; i++)
			tmp[i] = (char)lower((unsigned char)s[i]);
		if (mac_update(ps, tmp, k) != AP_OK)
			return AP_ERR;
		s += k, n -= k;
	}
	return AP_OK;
}

/* HMAC of the canonical form of <in, n> for class <cls>. The class itself is not part of
 * the input: a value gets the same pseudonym whichever key name or detector found it, so
 * "mac" in one SDK and "wifi_mac" in another stay joinable. Canonicalisation only applies
 * when the value has the class's shape; anything else is hashed as its raw bytes. Digit
 * classes (IMEI, IMSI, ICCID, decimal MEID) are canonical as they stand: separators in
 * them are not stripped. */
static int canonical_hmac(struct ap_pseudo *ps, int cls, const char *in, size_t n,
                          unsigned char mac[32])
{
	char hex12[12];
	int rc;

	if (mac_begin(ps) != AP_OK)
		return AP_ERR;
	if (is_mac_class(cls) && mac_shape(in, n, hex12))
		rc = mac_update(ps, hex12, sizeof(hex12));
	else if (is_uuid_class(cls) && uuid_shape(in, n))
		rc = update_lower(ps, in, n);
	else if (cls == AP_CLASS_MEID && n == 14 && all_hex(in, n))
		rc = update_lower(ps, in, n); /* hex MEID: case is not significant */
	else if (cls == AP_CLASS_EMAIL && memchr(in, '@', n))
		rc = update_lower(ps, in, n);
	else
		rc = mac_update(ps, in, n);
	if (rc != AP_OK)
		return AP_ERR;
	return mac_end(ps, mac);
}

/* ---- output forms ---- */

static const char hex_lc[] = "0123456789abcdef";
static const char hex_uc[] = "0123456789ABCDEF";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int add_prefix(struct ap_pseudo *ps, const struct ap_action *act, struct ap_buf *out)
{
	if (!act->key_id)
		return AP_OK;
	if (ap_buf_add(out, ps->key->id, strlen(ps->key->id)) != AP_OK)
		return AP_ERR;
	return ap_buf_addc(out, ':');
}

static int put_hex(const unsigned char mac[32], unsigned len, struct ap_buf *out)
{
	char s[64];

	len = len == 0 ? 32 : len > 64 ? 64 : len;
	for (int i = 0; i < 32; i++) {
		s[2 * i] = hex_lc[mac[i] >> 4];
		s[2 * i + 1] = hex_lc[mac[i] & 15];
	}
	return ap_buf_add(out, s, len);
}

static int put_b64url(const unsigned char mac[32], unsigned len, struct ap_buf *out)
{
	char s[44];
	size_t j = 0;

	len = len == 0 ? 22 : len > 43 ? 43 : len;
	for (int i = 0; i < 30; i += 3) {
		uint32_t v = (uint32_t)mac[i] << 16 | (uint32_t)mac[i + 1] << 8 | mac[i + 2];
		s[j++] = b64url[v >> 18];
		s[j++] = b64url[(v >> 12) & 63];
		s[j++] = b64url[(v >> 6) & 63];
		s[j++] = b64url[v & 63];
	}
	{
		uint32_t v = (uint32_t)mac[30] << 16 | (uint32_t)mac[31] << 8;
		s[j++] = b64url[v >> 18];
		s[j++] = b64url[(v >> 12) & 63];
		s[j++] = b64url[(v >> 6) & 63];
	}
	return ap_buf_add(out, s, len);
}

/* ---- format-preserving output ---- */

/* An endless keyed byte stream: block 0 is the pseudonym's HMAC, block i+1 is
 * HMAC(key, block i). Nibbles are served low half first from their own byte so that hex
 * positions waste nothing; digits and letters take whole bytes and reject the top of the
 * range that would bias the modulo. */
struct stream {
	struct ap_pseudo *ps;
	unsigned char block[32];
	unsigned pos;
	int nib; /* pending high nibble, or -1 */
};

static int next_byte(struct stream *st, unsigned *b)
{
	if (st->pos == sizeof(st->block)) {
		if (ap_pseudo_hmac(st->ps, st->block, sizeof(st->block), st->block) != AP_OK)
			return AP_ERR;
		st->pos = 0;
	}
	*b = st->block[st->pos++];
	return AP_OK;
}

static int draw_below(struct stream *st, unsigned mod, unsigned limit, unsigned *v)
{
	unsigned b;

	do {
		if (next_byte(st, &b) != AP_OK)
			return AP_ERR;
	} while (b >= limit);
	*v = b % mod;
	return AP_OK;
}

static int draw_nibble(struct stream *st, unsigned *v)
{
	unsigned b;

	if (st->nib >= 0) {
		*v = (unsigned)st->nib;
		st->nib = -1;
		return AP_OK;
	}
	if (next_byte(st, &b) != AP_OK)
		return AP_ERR;
	*v = b & 15;
	st->nib = (int)(b >> 4);
	return AP_OK;
}

/* Only hex digits and the separators MACs and UUIDs use, with at least one hex letter:
 * then 'a'-'f' are hex digits and stay hex. In any other value ("deadbeef-user",
 * "Fred") they are ordinary letters and draw from the whole alphabet, so the output does
 * not tell which letters were in a-f. */
static bool hex_shaped(const char *s, size_t n)
{
	bool letter = false;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (hexval(c) >= 0)
			letter |= !is_digit(c);
		else if (c != ':' && c != '-' && c != '.')
			return false;
	}
	return letter;
}

/* The case the hex digits of a pseudonym take: the input's (upper only when the input has
 * upper-case hex letters and no lower-case ones), so "AA:BB:…" stays upper case. <at>
 * past the end asks for the whole value's case. */
static const char *hex_case(const char *in, size_t n, size_t at)
{
	bool up = false, lo = false;
	unsigned char c = at < n ? (unsigned char)in[at] : 0;

	if (c >= 'A' && c <= 'F')
		return hex_uc;
	if (c >= 'a' && c <= 'f')
		return hex_lc;
	for (size_t i = 0; i < n; i++) {
		c = (unsigned char)in[i];
		up |= c >= 'A' && c <= 'F';
		lo |= c >= 'a' && c <= 'f';
	}
	return up && !lo ? hex_uc : hex_lc;
}

/* Class fix-ups on the preserved output <o> of input <in> (same length n), so validators
 * downstream accept the pseudonym: Luhn for a 15-digit IMEI, a locally administered
 * unicast MAC, a version 4 RFC 4122 UUID. A JSON number only gets the Luhn digit: the MAC
 * bits could turn a digit into 'a' and the number into a string. */
static void fix_up(int cls, const char *in, size_t n, bool numeric, char *o)
{
	char hex12[12];
	int v;

	if (cls == AP_CLASS_IMEI && n == 15 && all_digits(in, n)) {
		o[14] = ap_luhn_digit(o, 14);
	} else if (numeric) {
		return;
	} else if (is_mac_class(cls) && mac_shape(in, n, hex12)) {
		v = hexval((unsigned char)o[1]);
		v = (v | 0x2) & ~0x1;
		o[1] = hex_case(in, n, n)[v];
	} else if (is_uuid_class(cls) && uuid_shape(in, n)) {
		o[14] = '4';
		v = hexval((unsigned char)o[19]);
		o[19] = hex_case(in, n, n)[8 | (v & 3)];
	}
}

/* Per input byte: in a hex value (hex-shaped, or a MAC or UUID of its class) every hex
 * digit becomes a hex digit in the value's case; otherwise digits become digits and ASCII
 * letters letters of the same case; everything else (separators,
 * '+', '@', '.', UTF-8 bytes) is kept. A JSON number only has its digits replaced (its 'e'
 * stays an exponent) and its first digit is drawn from 1-9, so it stays a valid number;
 * from 1-8 for a 19-digit integer, so one that fitted a signed 64-bit integer still does
 * (9 223 372 036 854 775 807 has 19 digits: parsers that read integers into int64 would
 * refuse the pseudonym of a 19-digit ICCID otherwise). */
static int preserve(struct ap_pseudo *ps, const struct ap_action *act, const char *in, size_t n,
                    bool numeric, struct ap_buf *out)
{
	struct stream st = {.ps = ps, .pos = 0, .nib = -1};
	char hex12[12];
	bool hex = !numeric &&
	           (hex_shaped(in, n) || (is_mac_class(act->cls) && mac_shape(in, n, hex12)) ||
	            (is_uuid_class(act->cls) && uuid_shape(in, n)));
	bool first_digit = true;
	unsigned first_max = 9; /* choices for a number's first digit: 1..first_max */
	const char *hcase = hex ? hex_case(in, n, n) : hex_lc;
	unsigned v = 0;
	char *o;

	if (n == 0)
		return AP_OK;
	if (numeric) {
		size_t digits = 0, i = in[0] == '-';
		while (i < n && is_digit((unsigned char)in[i]))
			i++, digits++;
		if (i == n && digits == 19)
			first_max = 8;
	}
	if (canonical_hmac(ps, act->cls, in, n, st.block) != AP_OK)
		return AP_ERR;
	if (ap_buf_reserve(out, n) != AP_OK)
		return AP_ERR;
	o = out->p + out->len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		int rc = AP_OK;

		if (hex && hexval(c) >= 0) {
			/* In a hex value every hex digit may become any hex digit: keeping digits
			 * as digits would show where the letters were and cost entropy (a MAC
			 * would keep about 42 of its 48 bits' worth of choices). */
			rc = draw_nibble(&st, &v);
			o[i] = hcase[v];
		} else if (is_digit(c)) {
			/* 252 = 28 * 9 and 250 = 25 * 10: no modulo bias */
			if (numeric && first_digit)
				rc = first_max == 9 ? draw_below(&st, 9, 252, &v)
				                    : draw_below(&st, 8, 248, &v);
			else
				rc = draw_below(&st, 10, 250, &v);
			o[i] = (char)('0' + v + (numeric && first_digit));
			first_digit = false;
		} else if (numeric) {
			o[i] = (char)c;
		} else if (c >= 'a' && c <= 'z') {
			rc = draw_below(&st, 26, 234, &v);
			o[i] = (char)('a' + v);
		} else if (c >= 'A' && c <= 'Z') {
			rc = draw_below(&st, 26, 234, &v);
			o[i] = (char)('A' + v);
		} else {
			o[i] = (char)c;
		}
		if (rc != AP_OK)
			return AP_ERR;
	}
	fix_up(act->cls, in, n, numeric, o);
	out->len += n;
	return AP_OK;
}

int ap_pseudo_make(struct ap_pseudo *ps, const struct ap_action *act, const char *in, size_t n,
                   bool numeric, struct ap_buf *out)
{
	unsigned char mac[32];
	size_t start = out->len;
	int rc;

	if (act->act != AP_ACT_HASH || !ps->ctx)
		return AP_ERR;
	if (act->fmt == AP_HASH_PRESERVE)
		return preserve(ps, act, in, n, numeric, out);
	if (act->fmt != AP_HASH_HEX && act->fmt != AP_HASH_B64URL)
		return AP_ERR;
	if (canonical_hmac(ps, act->cls, in, n, mac) != AP_OK)
		return AP_ERR;
	rc = add_prefix(ps, act, out);
	if (rc == AP_OK)
		rc = act->fmt == AP_HASH_HEX ? put_hex(mac, act->length, out)
		                             : put_b64url(mac, act->length, out);
	if (rc != AP_OK)
		out->len = start; /* no prefix without its pseudonym */
	OPENSSL_cleanse(mac, sizeof(mac));
	return rc;
}
