/* Value detectors: recognise identifier-shaped values when no key names them. Pure
 * functions over decoded bytes; they never allocate and never look at keys. */
#ifndef AP_DETECT_H
#define AP_DETECT_H

#include <stdbool.h>

#include "ap.h"

/* Detector bits, enabled per ruleset ("detect": ["imei", "mac", …]). */
enum ap_det {
	AP_DET_IMEI = 1u << 0,  /* IMEI/IMEISV (RBI-checked, Luhn on 15 digits), MEID */
	AP_DET_IMSI = 1u << 1,  /* 15 digits, valid MCC range, failing Luhn (else IMEI) */
	AP_DET_ICCID = 1u << 2, /* 19-20 digits starting 89, Luhn */
	AP_DET_MAC = 1u << 3,   /* six hex octets: ':' '-' or no separator; aabb.ccdd.eeff */
	AP_DET_UUID = 1u << 4,  /* 8-4-4-4-12 hex (advertising ids) */
	AP_DET_IP = 1u << 5,    /* IPv4 dotted quad, IPv6 (RFC 4291 text forms) */
	AP_DET_PHONE = 1u << 6, /* only with a phone marker: leading '+' or "tel:" */
	AP_DET_EMAIL = 1u << 7, /* local@domain.tld */
	AP_DET_ALL = (1u << 8) - 1
};

/* Returns the class of <s, n> under the enabled detectors <mask>, or AP_CLASS_NONE.
 * <numeric> says the value was a JSON number (only digit detectors apply then).
 * Classes returned: IMEI, MEID, IMSI, ICCID, MAC, ADID, IP, PHONE, EMAIL. A value longer
 * than 254 bytes is never matched. */
enum ap_class ap_detect(const char *s, size_t n, unsigned mask, bool numeric);

/* Parses a detector name ("imei", "imsi", "iccid", "mac", "uuid", "ip", "phone",
 * "email"); returns its bit or 0 when unknown. */
unsigned ap_detect_parse(const char *name);

/* True for the well-known "no identifier" values that are left as they are: an all-zero
 * advertising id (limit ad tracking), the 02:00:00:00:00:00 MAC Android reports without
 * permission, and all-zero MACs. */
bool ap_detect_placeholder(enum ap_class cls, const char *s, size_t n);

/* Luhn: ap_luhn_ok checks the last digit of <d, n> (ASCII digits only); ap_luhn_digit
 * returns the check digit ('0'..'9') to append to <d, n>. A byte that is not a digit makes
 * ap_luhn_ok false and counts as 0 in ap_luhn_digit. */
bool ap_luhn_ok(const char *d, size_t n);
char ap_luhn_digit(const char *d, size_t n);

/* IP text parsing shared with truncate_ip and the header scrubber. Returns 4 or 6 and
 * fills <addr> (network order), or 0 if <s, n> is not exactly one address. <addr> is
 * written only on success; for IPv4, addr[0..3] hold it and the rest is zero. Accepts
 * what glibc's inet_pton accepts (no leading zeros in a dotted quad, no zone id). */
int ap_ip_parse(const char *s, size_t n, uint8_t addr[16]);

#endif
