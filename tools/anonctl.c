/* anonctl: the operator's tool. `anonctl scrub` runs the scrubbing core on one captured
 * request offline. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: anonctl scrub -c CONFIG --route PATH [-H 'Header: value']... < body\n");
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
