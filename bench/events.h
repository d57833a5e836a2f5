/* The payloads every benchmark uses, so the figures are comparable: analytics events as
 * an Android SDK sends them, with a device block full of identifiers. Header-only: each
 * bench program is one file. */
#ifndef AP_BENCH_EVENTS_H
#define AP_BENCH_EVENTS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* One event as an Android analytics SDK sends it: a device block with the identifiers,
 * app and network context, and event properties: about 800 bytes, 1 KB with <long>'s
 * extra properties. */
static int event(char *out, size_t cap, unsigned i, bool long_)
{
	return snprintf(
	        out, cap,
	        "{\"event\":\"page_view\",\"event_id\":\"e%08u-7d1c-4b7e-9b1a-%012u\","
	        "\"time\":%llu,\"session_id\":\"s-20261122-%06u\",\"seq\":%u,"
	        "\"device\":{\"imei\":\"356938035643809\",\"imei2\":\"356938035643817\","
	        "\"imsi\":\"460001234567890\",\"mac\":\"a4:5e:60:c2:17:9b\","
	        "\"wifi_mac\":\"a4:5e:60:c2:17:9c\",\"oaid\":\"f3b8c2d1-6e4a-4c55-9a0b-"
	        "2d7e8f9a1b3c\","
	        "\"android_id\":\"9774d56d682e549c\",\"idfa\":\"00000000-0000-0000-0000-"
	        "000000000000\","
	        "\"model\":\"Pixel 7 Pro\",\"manufacturer\":\"Google\",\"os\":\"Android\","
	        "\"os_version\":\"14\",\"screen\":{\"width\":1440,\"height\":3120,\"density\":3.5},"
	        "\"network\":\"wifi\"},%s"
	        "\"properties\":{\"page\":\"/product/detail\",\"referrer\":\"/home/feed\","
	        "\"product_id\":\"SKU-%06u\",\"category\":\"electronics/phones\",\"price\":4999.0,"
	        "\"currency\":\"CNY\",\"position\":%u,\"experiment\":\"rec_v3_b\","
	        "\"duration_ms\":%u,\"scroll_depth\":0.62,\"is_first_visit\":false,"
	        "\"tags\":[\"sale\",\"new\",\"5g\"],\"search_query\":\"\\u624b\\u673a 5G\"%s}}",
	        i, i * 7919u, 1795000000000ull + i * 1375ull, i, i,
	        long_ ? "\"app\":{\"id\":\"com.example.shop\",\"version\":\"8.12.0\",\"build\":"
	                "81200,"
	                "\"channel\":\"huawei_store\",\"sdk_version\":\"6.4.2\"},"
	              : "",
	        100000u + i, i % 40, 1200u + i * 13u,
	        long_ ? ",\"title\":\"Flagship phone with a long product name\",\"rating\":4.8"
	              : "");
}

/* A JSON array of <n> events from one device; *len gets its length. Caller frees. */
static char *build_batch(unsigned n, size_t *len)
{
	size_t cap = 2048 * n + 16, o = 0;
	char *b = malloc(cap);

	b[o++] = '[';
	for (unsigned i = 0; i < n; i++) {
		if (i)
			b[o++] = ',';
		o += (size_t)event(b + o, cap - o, i, false);
	}
	b[o++] = ']';
	b[o] = 0;
	*len = o;
	return b;
}

#endif
