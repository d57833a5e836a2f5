/* payloads: writes the request bodies bench/run sends into a directory: a 1 KB event, a
 * 16 KB batch of 20 events from one device, the same batch gzip'd, and a form body whose
 * data_list field is base64(gzip(the batch)), as Sensors Analytics SDKs send it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#include "events.h"

static int put(const char *dir, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	printf("%-14s %6zu bytes\n", name, n);
	return 0;
}

int main(int argc, char **argv)
{
	struct ap_zctx z = {0};
	struct ap_buf gz = {0}, b64 = {0}, form = {0};
	struct ap_b64_style st = {false, true};
	const char *why, *dir = argc > 1 ? argv[1] : ".";
	char one[2048];
	size_t one_n = (size_t)event(one, sizeof(one), 1, true), batch_n;
	char *batch = build_batch(20, &batch_n);
	int rc = 0;

	if (ap_z_encode(&z, AP_Z_GZIP, batch, batch_n, &gz, &why) != AP_OK ||
	    ap_base64_encode(gz.p, gz.len, &b64, &st) != AP_OK) {
		fprintf(stderr, "payloads: cannot encode\n");
		return 1;
	}
	ap_buf_add(&form, "crc=0&gzip=1&data_list=", 23);
	for (size_t i = 0; i < b64.len; i++) {
		char c = b64.p[i], e[4];
		if (c == '+' || c == '/' || c == '=') {
			snprintf(e, sizeof(e), "%%%02X", (unsigned char)c);
			ap_buf_add(&form, e, 3);
		} else
			ap_buf_addc(&form, c);
	}
	rc |= put(dir, "event.json", one, one_n);
	rc |= put(dir, "batch.json", batch, batch_n);
	rc |= put(dir, "batch.json.gz", gz.p, gz.len);
	rc |= put(dir, "form.txt", form.p, form.len);
	free(batch);
	ap_buf_free(&gz);
	ap_buf_free(&b64);
	ap_buf_free(&form);
	ap_zctx_free(&z);
	return rc;
}
