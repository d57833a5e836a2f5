/* anonproxy: arguments and wiring. The master process lives in master.c, a worker in
 * worker.c, a connection in conn.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "master.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: anonproxy [-c CONFIG] [-w WORKERS] [--inspect] [-t]\n"
	        "  -c CONFIG   configuration file (default conf/anonproxy.json)\n"
	        "  -w WORKERS  worker processes (default: the configuration's, else one per core)\n"
	        "  --inspect   print each request's findings, values masked, on stderr\n"
	        "  -t          check the configuration and exit\n"
	        "Signals: SIGHUP reloads the configuration, SIGTERM drains and stops.\n");
}

int main(int argc, char **argv)
{
	struct ap_master m = {.path = "conf/anonproxy.json"};
	char err[AP_CONF_ERR_MAX];
	bool check = false;
	long workers = -1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			m.path = argv[++i];
		else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc) {
			char *e;
			workers = strtol(argv[++i], &e, 10);
			if (*e || workers < 1 || workers > AP_WORKERS_MAX) {
				fprintf(stderr, "anonproxy: -w takes 1 to %d\n", AP_WORKERS_MAX);
				return 2;
			}
		} else if (strcmp(argv[i], "--inspect") == 0)
			m.inspect = true;
		else if (strcmp(argv[i], "-t") == 0)
			check = true;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!(m.conf = ap_master_load(m.path, &m.text, &m.len, err))) {
		fprintf(stderr, "anonproxy: %s\n", err);
		return 1;
	}
	if (check) {
		printf("%s: configuration ok\n", m.path);
		ap_conf_free(m.conf);
		free(m.text);
		return 0;
	}
	return ap_master_run(&m, workers);
}
