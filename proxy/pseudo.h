/* Keyed pseudonyms: HMAC-SHA256 (OpenSSL) over a class-canonical form of the value,
 * written as hex, base64url, or in the shape of the input ("preserve"). Keys come from
 * files and never leave this module except as their id. */
#ifndef AP_PSEUDO_H
#define AP_PSEUDO_H

#include <stdbool.h>

#include "buf.h"

#define AP_KEY_ID_MAX 16  /* bytes of a key id, [A-Za-z0-9_-] */
#define AP_KEY_MIN    16  /* shortest secret accepted, bytes */
#define AP_KEY_MAX    256 /* longest secret accepted, bytes */
#define AP_KEYS_MAX   8   /* keys in one keyring */

/* A secret read from a file. Owned by the keyring; wiped on ap_keyring_free. */
struct ap_key {
	char id[AP_KEY_ID_MAX + 1];
	unsigned char secret[AP_KEY_MAX];
	size_t len;
};

/* The configured keys; one is active (used for every pseudonym), the others are listed
 * for rotation. Immutable once loaded; shared read-only by a configuration. */
struct ap_keyring {
	struct ap_key keys[AP_KEYS_MAX];
	int nkeys;
	int active;
};

/* Reads the key <id> from <path> into *k. The file must be a regular file, not readable
 * or writable by others (mode & 007 == 0), and hold AP_KEY_MIN..AP_KEY_MAX bytes after
 * trailing whitespace is removed. Returns AP_OK, or AP_ERR with a message in err[errlen]
 * that names the path and the problem, never the key bytes. */
int ap_key_load(struct ap_key *k, const char *id, const char *path, char *err, size_t errlen);

/* Overwrites every secret with zeros. */
void ap_keyring_wipe(struct ap_keyring *kr);

/* Per-worker HMAC state for one key. Not shareable between threads. */
struct ap_pseudo {
	const struct ap_key *key;
	void *mac; /* EVP_MAC * */
	void *ctx; /* EVP_MAC_CTX *, keyed once, re-initialised (not re-keyed) per hash */
};

/* Prepares HMAC-SHA256 under <key> (borrowed: must outlive ps). AP_OK or AP_ERR. */
int ap_pseudo_init(struct ap_pseudo *ps, const struct ap_key *key);
void ap_pseudo_free(struct ap_pseudo *ps);

/* Raw HMAC-SHA256(key, <in, n>) into mac[32]. AP_OK or AP_ERR. */
int ap_pseudo_hmac(struct ap_pseudo *ps, const void *in, size_t n, unsigned char mac[32]);

/* Appends the pseudonym of the decoded value <in, n> under action <act> (act->act must be
 * AP_ACT_HASH) to <out>:
 *   - the value is first canonicalised by act->cls when it has that class's shape
 *     (MAC: 12 lower-case hex digits; IMEI/IMSI/ICCID/MEID-decimal: digits; UUID-shaped
 *     ids: lower case; e-mail: lower case), so "AA-BB-…" and "aa:bb:…" pseudonymise alike;
 *   - AP_HASH_HEX / AP_HASH_B64URL: act->length characters (1..64 hex, 1..43 b64url),
 *     prefixed by "<key id>:" when act->key_id;
 *   - AP_HASH_PRESERVE: as many characters as the input, each digit replaced by a digit,
 *     hex letter by hex letter of the same case, letter by letter of the same case, other
 *     bytes kept; then class fix-ups: a 15-digit IMEI gets a valid Luhn digit, a MAC gets
 *     the locally-administered bit set and the multicast bit cleared, a UUID gets version
 *     4 and the RFC 4122 variant. When <numeric> (a JSON number) the first digit is never
 *     '0', and only the digits change (an 'e' stays an exponent; of the fix-ups only the
 *     IMEI one runs). Keyed and deterministic; output bytes are derived from an HMAC
 *     stream, without modulo bias.
 * The key-id prefix applies to hex and base64url only: it would break a preserved shape.
 * Returns AP_OK or AP_ERR (memory, OpenSSL failure). */
int ap_pseudo_make(struct ap_pseudo *ps, const struct ap_action *act, const char *in, size_t n,
                   bool numeric, struct ap_buf *out);

#endif
