/* Names of identifier classes and actions, as the configuration, metrics and findings
 * spell them. The tables follow the enums in ap.h. */
#include <string.h>

#include "ap.h"

static const char *const class_names[AP_CLASS_MAX] = {
        [AP_CLASS_NONE] = "none",
        [AP_CLASS_IMEI] = "imei",
        [AP_CLASS_MEID] = "meid",
        [AP_CLASS_IMSI] = "imsi",
        [AP_CLASS_ICCID] = "iccid",
        [AP_CLASS_MAC] = "mac",
        [AP_CLASS_BSSID] = "bssid",
        [AP_CLASS_ADID] = "adid",
        [AP_CLASS_IDFA] = "idfa",
        [AP_CLASS_IDFV] = "idfv",
        [AP_CLASS_GAID] = "gaid",
        [AP_CLASS_OAID] = "oaid",
        [AP_CLASS_ANDROID_ID] = "android_id",
        [AP_CLASS_DEVICE_ID] = "device_id",
        [AP_CLASS_SERIAL] = "serial",
        [AP_CLASS_PHONE] = "phone",
        [AP_CLASS_EMAIL] = "email",
        [AP_CLASS_IP] = "ip",
        [AP_CLASS_GPS] = "gps",
        [AP_CLASS_CELL_ID] = "cell_id",
        [AP_CLASS_USER_ID] = "user_id",
        [AP_CLASS_PUSH_TOKEN] = "push_token",
        [AP_CLASS_APP_LIST] = "app_list",
        [AP_CLASS_OTHER] = "other",
};

static const char *const act_names[AP_ACT_MAX] = {
        [AP_ACT_NONE] = "none",   [AP_ACT_KEEP] = "keep", [AP_ACT_DROP] = "drop",
        [AP_ACT_HASH] = "hash",   [AP_ACT_MASK] = "mask", [AP_ACT_TRUNCATE_IP] = "truncate_ip",
        [AP_ACT_ROUND] = "round",
};

const char *ap_class_name(enum ap_class c)
{
	return (unsigned)c < AP_CLASS_MAX ? class_names[c] : NULL;
}

int ap_class_parse(const char *name)
{
	for (int i = 1; i < AP_CLASS_MAX; i++)
		if (strcmp(name, class_names[i]) == 0)
			return i;
	return -1;
}

const char *ap_act_name(enum ap_act a)
{
	return (unsigned)a < AP_ACT_MAX ? act_names[a] : NULL;
}

int ap_act_parse(const char *name)
{
	for (int i = 1; i < AP_ACT_MAX; i++)
		if (strcmp(name, act_names[i]) == 0)
			return i;
	return -1;
}
