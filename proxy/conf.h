/* The configuration: one JSON file, read with jansson, validated whole and compiled into
 * immutable structures (rulesets, routes, keys, limits). A bad file is refused with a
 * message naming the key path and the problem; nothing is half-applied. */
#ifndef AP_CONF_H
#define AP_CONF_H

#include "pseudo.h"
#include "rules.h"
#include "scrub.h"

#define AP_CONF_ERR_MAX 512

/* Size and time limits; the table in conf.c lists each with its bounds and default. */
struct ap_limits {
	size_t header_bytes;  /* request line + headers */
	size_t headers;       /* header count */
	size_t body_bytes;    /* request body as received */
	size_t decoded_bytes; /* everything decoded from one request (gzip, base64…) */
	size_t json_depth;    /* JSON nesting */
	size_t uri_bytes;     /* request target */
	size_t client_header_timeout_ms;
	size_t client_body_timeout_ms;
	size_t client_idle_timeout_ms;
	size_t upstream_connect_timeout_ms;
	size_t upstream_response_timeout_ms;
};

/* Where requests go. A "sink" upstream is built in: it answers 204 and can log the
 * scrubbed bodies, so the default configuration runs with no backend. */
struct ap_upstream_conf {
	char *name;
	bool sink;
	bool sink_log; /* sink: print scrubbed bodies on stderr */
	bool tls;      /* https:// */
	char *host;    /* as in the URL; also the SNI name and the Host sent */
	char *port;
	char *ca_file; /* NULL: the system CAs */
	bool verify;   /* certificate verification (default on) */
	size_t pool;   /* idle keep-alive connections kept per worker */
};

struct ap_route {
	char *host; /* NULL: any */
	char *path; /* prefix, starts with '/' */
	size_t path_len;
	const struct ap_upstream_conf *upstream;
	const struct ap_ruleset *ruleset; /* with a profile: the one compiled for this route */
	char *profile;                    /* the profile's name, or NULL */
	unsigned scope;                   /* opt-out scope bits this route enforces */
	enum ap_unknown unknown;
};

/* Owns everything it points to; immutable once loaded. A reload builds a new one. */
struct ap_conf {
	char *path;
	char *dir; /* relative file names are resolved from here */
	struct ap_keyring keys;
	struct ap_ruleset *rulesets;
	size_t nrulesets;
	struct ap_ruleset **extra; /* rulesets compiled for routes with a profile (conf.c) */
	size_t nextra;
	struct ap_upstream_conf *upstreams;
	size_t nupstreams;
	struct ap_route *routes;
	size_t nroutes;
	struct ap_limits limits;
	char **listen;
	size_t nlisten;
	char **tls_listen; /* addresses of the TLS listener ("tls": {"listen", "cert", "key"}) */
	size_t ntls_listen;
	char *tls_cert, *tls_key; /* its certificate chain and key, PEM */
	size_t workers;           /* 0: one per core */
	char *admin_listen;       /* NULL: no admin listener */
	char *admin_token_file;
	char *access_log;       /* NULL: stderr; "off" disables */
	char *optout_shm;       /* the opt-out table ("optout": {shm, dir, capacity}); NULL: none */
	char *optout_dir;       /* its journal, snapshot and lock */
	size_t optout_capacity; /* 0: the table's own, or the default */
};

/* Loads and validates <path>. Returns the configuration, or NULL with err[AP_CONF_ERR_MAX]
 * set: "<file>: <key path>: <problem>", e.g.
 * "rulesets.analytics.fields[2].action: unknown action \"hsah\"". */
struct ap_conf *ap_conf_load(const char *path, char *err);

/* Same, from text in memory (tests, fuzzing); <dir> resolves relative file names. */
struct ap_conf *ap_conf_parse(const char *text, size_t n, const char *dir, char *err);

void ap_conf_free(struct ap_conf *c);

/* The route for <host, path> (the first that matches, in file order), or NULL. Host
 * compares case-insensitively and without a port. */
const struct ap_route *ap_conf_route(const struct ap_conf *c, struct ap_span host,
                                     struct ap_span path);

const struct ap_ruleset *ap_conf_ruleset(const struct ap_conf *c, const char *name);

/* Opt-out scope names: "analytics", "personalization", "push", "location", "minor", "all". */
enum ap_scope {
	AP_SCOPE_ANALYTICS = 1u << 0,
	AP_SCOPE_PERSONALIZATION = 1u << 1,
	AP_SCOPE_PUSH = 1u << 2,
	AP_SCOPE_LOCATION = 1u << 3,
	AP_SCOPE_MINOR = 1u << 4,
	AP_SCOPE_ALL = 1u << 5,
};
unsigned ap_scope_parse(const char *name);

#endif
