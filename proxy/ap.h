/* Definitions every anonproxy module shares: return codes, byte spans, the identifier
 * classes and the actions a rule can take. No module-specific types live here. */
#ifndef AP_H
#define AP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define AP_OK    0
#define AP_ERR   (-1)
#define AP_AGAIN (-2)

#define AP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define AP_UNUSED(x)    ((void)(x))

#if defined(__GNUC__)
#define AP_LIKELY(x)   __builtin_expect(!!(x), 1)
#define AP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define AP_LIKELY(x)   (x)
#define AP_UNLIKELY(x) (x)
#endif

/* A borrowed run of bytes; never NUL-terminated by contract. */
struct ap_span {
	const char *p;
	size_t n;
};

#define AP_SPAN(s) ((struct ap_span){(s), sizeof(s) - 1})

/* True when <s> equals the lower-case ASCII literal <lit>, ignoring ASCII case. */
static inline bool ap_span_ieq(struct ap_span s, const char *lit)
{
	size_t n = strlen(lit);

	if (s.n != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s.p[i];
		if (c >= 'A' && c <= 'Z')
			c |= 0x20;
		if (c != lit[i])
			return false;
	}
	return true;
}

/* <s> without leading and trailing spaces and tabs (HTTP's optional white space). */
static inline struct ap_span ap_span_trim(struct ap_span s)
{
	while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) {
		s.p++;
		s.n--;
	}
	while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
		s.n--;
	return s;
}

/* Identifier classes. The order is the wire order of metrics and the config names below;
 * append only. */
enum ap_class {
	AP_CLASS_NONE = 0,
	AP_CLASS_IMEI,       /* IMEI, IMEISV */
	AP_CLASS_MEID,       /* CDMA MEID, hex or decimal */
	AP_CLASS_IMSI,       /* subscriber identity */
	AP_CLASS_ICCID,      /* SIM serial */
	AP_CLASS_MAC,        /* Wi-Fi or Bluetooth MAC of the device */
	AP_CLASS_BSSID,      /* MAC of the access point: a location signal */
	AP_CLASS_ADID,       /* an advertising id of unknown vendor (UUID-shaped) */
	AP_CLASS_IDFA,       /* Apple advertising id */
	AP_CLASS_IDFV,       /* Apple vendor id */
	AP_CLASS_GAID,       /* Google advertising id (AAID) */
	AP_CLASS_OAID,       /* MSA open advertising id */
	AP_CLASS_ANDROID_ID, /* Settings.Secure.ANDROID_ID */
	AP_CLASS_DEVICE_ID,  /* an SDK's own device id */
	AP_CLASS_SERIAL,     /* hardware serial number */
	AP_CLASS_PHONE,      /* phone number */
	AP_CLASS_EMAIL,      /* e-mail address */
	AP_CLASS_IP,         /* IPv4 or IPv6 address */
	AP_CLASS_GPS,        /* a latitude or longitude */
	AP_CLASS_CELL_ID,    /* cell tower id (cid, lac, tac…) */
	AP_CLASS_USER_ID,    /* an account id */
	AP_CLASS_PUSH_TOKEN, /* push registration token */
	AP_CLASS_APP_LIST,   /* list of installed applications */
	AP_CLASS_OTHER,      /* anything else a rule names */
	AP_CLASS_MAX
};

/* What is done to a matched value. */
enum ap_act {
	AP_ACT_NONE = 0,
	AP_ACT_KEEP,        /* leave as is (an allow-list entry that stops the detectors) */
	AP_ACT_DROP,        /* remove the key and its value */
	AP_ACT_HASH,        /* keyed pseudonym */
	AP_ACT_MASK,        /* keep the last N characters, '*' for the rest */
	AP_ACT_TRUNCATE_IP, /* zero the host part of an IP address */
	AP_ACT_ROUND,       /* round a coordinate to N decimals */
	AP_ACT_MAX
};

/* Output form of AP_ACT_HASH. */
enum ap_hash_fmt {
	AP_HASH_HEX = 0,
	AP_HASH_B64URL,
	AP_HASH_PRESERVE, /* same shape as the input: an IMEI stays an IMEI */
};

/* One action, with its parameters; compiled from the configuration, immutable. */
struct ap_action {
	uint8_t act;      /* enum ap_act */
	uint8_t cls;      /* enum ap_class, for metrics and the preserve shape */
	uint8_t fmt;      /* enum ap_hash_fmt */
	uint8_t key_id;   /* hash: prefix the output with "<key id>:" */
	uint8_t length;   /* hash: output characters (hex/b64url); mask: characters kept */
	uint8_t decimals; /* round */
	uint8_t v4bits;   /* truncate_ip: prefix kept for IPv4 */
	uint8_t v6bits;   /* truncate_ip: prefix kept for IPv6 */
};

/* Names as they appear in the configuration, metrics and findings. Return NULL/-1 when
 * out of range/unknown. */
const char *ap_class_name(enum ap_class c);
int ap_class_parse(const char *name);
const char *ap_act_name(enum ap_act a);
int ap_act_parse(const char *name);

#endif
