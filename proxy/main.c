/* anonproxy: arguments, signals, master and workers. Until the proxy lands this binary
 * only validates its arguments and says what it will do; the scrubbing core is usable
 * today through `anonctl scrub`. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: anonproxy [-c CONFIG] [--inspect] [-t]\n"
	           "  -c CONFIG   configuration file (default conf/anonproxy.json)\n"
	           "  --inspect   print each request's findings, values masked\n"
	           "  -t          check the configuration and exit\n"
	           "The proxy itself is not built yet; use `anonctl scrub` to scrub captures.\n");
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
	usage(stderr);
	return 2;
}
