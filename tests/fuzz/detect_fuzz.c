/* libFuzzer target for detect.c: ap_detect under every single-detector mask and all of
 * them, number and string, plus ap_ip_parse, Luhn and the placeholder test. Aborts when an
 * invariant breaks: inet_pton disagrees, a result is not repeatable, not allowed by its
 * mask, or not the first match in precedence order, or a 15-digit IMEI fails Luhn. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The detector bit each class needs. */
static unsigned class_bit(enum ap_class c)
{
	switch (c) {
	case AP_CLASS_IMEI:
	case AP_CLASS_MEID:
		return AP_DET_IMEI;
	case AP_CLASS_IMSI:
		return AP_DET_IMSI;
	case AP_CLASS_ICCID:
		return AP_DET_ICCID;
	case AP_CLASS_MAC:
		return AP_DET_MAC;
	case AP_CLASS_ADID:
		return AP_DET_UUID;
	case AP_CLASS_IP:
		return AP_DET_IP;
	case AP_CLASS_PHONE:
		return AP_DET_PHONE;
	case AP_CLASS_EMAIL:
		return AP_DET_EMAIL;
	default:
		return 0;
	}
}

static void fail(const char *what, const char *s, size_t n)
{
	fprintf(stderr, "detect_fuzz: %s on \"%.*s\" (%zu bytes)\n", what, (int)n, s, n);
	abort();
}

/* The detectors one bit at a time in precedence order (IMEI covers MEID); with all bits on
 * the answer must be the first of these that matches alone. */
static const unsigned order[] = {AP_DET_IMEI, AP_DET_ICCID, AP_DET_IMSI,  AP_DET_MAC,
                                 AP_DET_UUID, AP_DET_IP,    AP_DET_PHONE, AP_DET_EMAIL};

static void check_detect(const char *s, size_t n, bool numeric)
{
	enum ap_class all = ap_detect(s, n, AP_DET_ALL, numeric), first = AP_CLASS_NONE;

	if (ap_detect(s, n, AP_DET_ALL, numeric) != all)
		fail("ap_detect not repeatable", s, n);
	if (ap_detect(s, n, 0, numeric) != AP_CLASS_NONE)
		fail("a match with no detector on", s, n);
	for (size_t i = 0; i < AP_ARRAY_LEN(order); i++) {
		enum ap_class one = ap_detect(s, n, order[i], numeric);
		enum ap_class rest = ap_detect(s, n, AP_DET_ALL & ~order[i], numeric);
		if (one != AP_CLASS_NONE && class_bit(one) != order[i])
			fail("a class its mask does not allow", s, n);
		if (first == AP_CLASS_NONE)
			first = one;
		/* Turning off a detector that did not win changes nothing. */
		if (class_bit(all) != order[i] && rest != all)
			fail("result depends on a losing detector", s, n);
	}
	if (first != all)
		fail("not the first match in precedence order", s, n);
	if (all == AP_CLASS_NONE)
		return;
	if (numeric && all != AP_CLASS_IMEI && all != AP_CLASS_MEID && all != AP_CLASS_IMSI &&
	    all != AP_CLASS_ICCID)
		fail("a number detected as text", s, n);
	if (all == AP_CLASS_IMEI && n == 15 && !ap_luhn_ok(s, n))
		fail("15-digit IMEI failing Luhn", s, n);
	if (all == AP_CLASS_IMSI && (n != 15 || s[0] < '2' || s[0] > '7'))
		fail("IMSI not 15 digits from 2..7", s, n);
	if (all == AP_CLASS_ICCID &&
	    ((n != 19 && n != 20) || s[0] != '8' || s[1] != '9' || !ap_luhn_ok(s, n)))
		fail("ICCID not 19-20 digits, 89, Luhn", s, n);
	if (all == AP_CLASS_IP && ap_ip_parse(s, n, (uint8_t[16]){0}) == 0)
		fail("IP class without an address", s, n);
}

/* ap_ip_parse and glibc's inet_pton agree on family and bytes. inet_pton reads a C
 * string, so an input holding a NUL is not compared: that is the only byte it treats
 * differently (it has no zone ids or brackets, and neither of us skips spaces). */
static void check_ip(const char *s, size_t n)
{
	char z[64];
	uint8_t a[16], b[16];
	int got = ap_ip_parse(s, n, a), want = 0;

	if (got != 0 && got != 4 && got != 6)
		fail("ap_ip_parse returned a bad family", s, n);
	if (n >= sizeof(z) || memchr(s, '\0', n)) {
		if (got != 0 && n > 45)
			fail("an address longer than 45 bytes", s, n);
		return;
	}
	memcpy(z, s, n);
	z[n] = '\0';
	if (inet_pton(AF_INET, z, b) == 1)
		want = 4;
	else if (inet_pton(AF_INET6, z, b) == 1)
		want = 6;
	if (got != want)
		fail("ap_ip_parse and inet_pton disagree", s, n);
	if (want && memcmp(a, b, want == 4 ? 4 : 16) != 0)
		fail("ap_ip_parse and inet_pton differ in bytes", s, n);
}

/* Appending ap_luhn_digit makes any digit string Luhn-valid. */
static void check_luhn(const char *s, size_t n)
{
	char d[64];

	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return;
	if (n + 1 > sizeof(d))
		return;
	memcpy(d, s, n);
	d[n] = ap_luhn_digit(s, n);
	if (d[n] < '0' || d[n] > '9' || !ap_luhn_ok(d, n + 1))
		fail("ap_luhn_digit does not satisfy ap_luhn_ok", s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so that an over-read is caught by ASan under the seed replay
	 * (its buffer is larger than the input) as under libFuzzer. */
	char *copy = size ? malloc(size) : NULL;
	const char *s = (const char *)data;

	if (size) {
		if (!copy)
			abort();
		memcpy(copy, data, size);
		s = copy;
	}
	check_detect(s, size, false);
	check_detect(s, size, true);
	check_ip(s, size);
	check_luhn(s, size);
	for (int c = 0; c <= AP_CLASS_MAX; c++)
		(void)ap_detect_placeholder((enum ap_class)c, s, size);
	free(copy);
	return 0;
}
