/* The admin listener (evhttp, in the master): health, Prometheus metrics, reload. Tokens
 * compare in constant time; answers carry no request data. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "optout.h"

#define TOKEN_MAX 256

struct ap_admin {
	struct ap_master *m;
	struct evhttp *http;
	char token[TOKEN_MAX + 1];
	size_t token_len;
	struct ap_buf out;
};

int ap_admin_read_token(const char *path, char *tok, size_t cap, char *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t n;

	if (fd < 0) {
		snprintf(err, AP_CONF_ERR_MAX, "admin.token_file %s: %s", path, strerror(errno));
		return AP_ERR;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 007)) {
		snprintf(err, AP_CONF_ERR_MAX,
		         "admin.token_file %s: must be a regular file others cannot read (chmod "
		         "600)",
		         path);
		close(fd);
		return AP_ERR;
	}
	{
		char raw[1024];
		n = read(fd, raw, sizeof(raw));
		close(fd);
		if (n < 0)
			n = 0;
		while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == '\r' || raw[n - 1] == ' ' ||
		                 raw[n - 1] == '\t'))
			n--;
		if ((size_t)n > cap - 1) {
			OPENSSL_cleanse(raw, sizeof(raw));
			snprintf(err, AP_CONF_ERR_MAX,
			         "admin.token_file %s: the token is longer than %zu bytes", path,
			         cap - 1);
			return AP_ERR;
		}
		memcpy(tok, raw, (size_t)n);
		tok[n] = 0;
		OPENSSL_cleanse(raw, sizeof(raw));
	}
	if (n < 16 || strpbrk(tok, " \t\r\n")) {
		snprintf(err, AP_CONF_ERR_MAX,
		         "admin.token_file %s: the token must be 16 to %zu bytes without white "
		         "space",
		         path, cap - 1);
		return AP_ERR;
	}
	return AP_OK;
}

static bool authorised(struct ap_admin *a, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	size_t n;

	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	n = strlen(h);
	return n == a->token_len && CRYPTO_memcmp(h, a->token, n) == 0;
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  const void *body, size_t n)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add(b, body, n);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	reply(req, code, reason, "text/plain; charset=utf-8", msg, strlen(msg));
}

/* ---- opt-outs ---- */

/* The user id of "/optout/<id>", percent-decoded into buf; 0 when there is none. The id
 * is an account id, not something to log: no answer or log line repeats it. */
static size_t path_user(const char *path, char *buf, size_t cap)
{
	char *d;
	size_t n;

	if (strncmp(path, "/optout/", 8) != 0 || !path[8])
		return 0;
	if (!(d = evhttp_uridecode(path + 8, 0, &n)))
		return 0;
	if (n >= cap) {
		free(d);
		return 0;
	}
	memcpy(buf, d, n);
	free(d);
	return n;
}

static void json_reply(struct evhttp_request *req, int code, const char *reason, json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT);

	if (t) {
		char *nl;
		if (asprintf(&nl, "%s\n", t) >= 0) {
			reply(req, code, reason, "application/json", nl, strlen(nl));
			free(nl);
		} else
			evhttp_send_error(req, 500, NULL);
		free(t);
	} else
		evhttp_send_error(req, 500, NULL);
	json_decref(j);
}

static json_t *scopes_json(unsigned scopes)
{
	static const char *const names[6] = {"analytics", "personalization", "push",
	                                     "location",  "minor",           "all"};
	json_t *a = json_array();

	for (unsigned i = 0; i < 6; i++)
		if (scopes >> i & 1)
			json_array_append_new(a, json_string(names[i]));
	return a;
}

static struct ap_optout *writer(struct ap_admin *a, char *err)
{
	const struct ap_conf *c = a->m->conf;
	struct ap_optout_opts o = {c->optout_shm, c->optout_dir, c->optout_capacity, true};

	return ap_optout_open(&o, err);
}

static void handle_optout(struct ap_admin *a, struct evhttp_request *req, const char *path,
                          enum evhttp_cmd_type cmd)
{
	char user[1024], err[AP_OPTOUT_ERR_MAX];
	size_t n = path_user(path, user, sizeof(user));

	if (strncmp(path, "/optout/", 8) == 0 && path[8] && !n) {
		text(req, 400, "Bad Request", "the user id is empty, too long or badly escaped\n");
		return;
	}
	struct ap_optout *t;
	unsigned scopes = 0;
	int64_t now = (int64_t)time(NULL);

	if (!a->m->conf->optout_shm) {
		text(req, 404, "Not Found", "no opt-out table is configured (\"optout\")\n");
		return;
	}
	if (cmd == EVHTTP_REQ_GET && n) {
		struct ap_optout_key k;
		int64_t when = 0;
		json_t *j;
		if (!(t = ap_optout_open_reader(a->m->conf->optout_shm, err)) &&
		    !(t = writer(a, err))) {
			/* Neither mapped nor openable as writer (which rebuilds a lost segment). */
			ap_log_msg("admin: GET /optout: %s", err);
			text(req, 503, "Unavailable", "the opt-out table cannot be read\n");
			return;
		}
		k = ap_optout_key(t, user, n);
		scopes = ap_optout_lookup_key(t, k, &when);
		ap_optout_close(t);
		j = json_pack("{s:o}", "scopes", scopes_json(scopes));
		if (scopes)
			json_object_set_new(j, "time", json_integer(when));
		json_reply(req, scopes ? 200 : 404, scopes ? "OK" : "Not Found", j);
		return;
	}
	if (cmd == EVHTTP_REQ_DELETE && n) {
		int rc;
		if (!(t = writer(a, err))) {
			ap_log_msg("admin: DELETE /optout: %s", err);
			text(req, 503, "Unavailable", "the opt-out table is busy or unavailable\n");
			return;
		}
		rc = ap_optout_remove(t, user, n, now, err);
		ap_optout_close(t);
		if (rc < 0) {
			ap_log_msg("admin: DELETE /optout: %s", err);
			text(req, 500, "Internal Server Error",
			     "the opt-out could not be removed\n");
		} else
			text(req, rc ? 200 : 404, rc ? "OK" : "Not Found",
			     rc ? "removed\n" : "no opt-out for that user\n");
		return;
	}
	if (cmd == EVHTTP_REQ_POST && strcmp(path, "/optout") == 0) {
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		size_t bl = evbuffer_get_length(b), i;
		json_error_t je;
		json_t *body = json_loadb((const char *)evbuffer_pullup(b, -1), bl, 0, &je), *v;
		const char *u = body ? json_string_value(json_object_get(body, "user")) : NULL;
		json_t *sc = body ? json_object_get(body, "scopes") : NULL;
		int rc;
		if (!u || !*u || !json_is_array(sc) || json_array_size(sc) == 0 ||
		    json_object_size(body) != 2) {
			json_decref(body);
			text(req, 400, "Bad Request",
			     "expected {\"user\": \"...\", \"scopes\": [\"analytics\", ...]}\n");
			return;
		}
		json_array_foreach(sc, i, v)
		{
			unsigned bit = json_is_string(v) ? ap_scope_parse(json_string_value(v)) : 0;
			if (!bit) {
				json_decref(body);
				text(req, 400, "Bad Request",
				     "scopes: analytics, personalization, push, location, minor, "
				     "all\n");
				return;
			}
			scopes |= bit;
		}
		if (!(t = writer(a, err))) {
			ap_log_msg("admin: POST /optout: %s", err);
			json_decref(body);
			text(req, 503, "Unavailable", "the opt-out table is busy or unavailable\n");
			return;
		}
		rc = ap_optout_set(t, u, strlen(u), scopes, now, err);
		ap_optout_close(t);
		json_decref(body);
		if (rc != AP_OK) {
			ap_log_msg("admin: POST /optout: %s", err);
			text(req, 500, "Internal Server Error",
			     "the opt-out could not be recorded\n");
		} else
			json_reply(req, 200, "OK",
			           json_pack("{s:o,s:I}", "scopes", scopes_json(scopes), "time",
			                     (json_int_t)now));
		return;
	}
	text(req, 405, "Method Not Allowed",
	     "POST /optout, GET /optout/<user>, DELETE /optout/<user>\n");
}

static void handle(struct evhttp_request *req, void *arg)
{
	struct ap_admin *a = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char err[AP_CONF_ERR_MAX + 2];

	if (!path)
		path = "/";
	if (strcmp(path, "/healthz") == 0) {
		unsigned alive = 0;
		char msg[64];
		for (unsigned i = 0; i < a->m->nworkers; i++)
			alive += a->m->w[i].pid != 0;
		if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD)
			text(req, 405, "Method Not Allowed", "GET /healthz\n");
		else if (a->m->stopping)
			text(req, 503, "Stopping", "stopping\n");
		else if (alive == 0)
			text(req, 503, "No Workers", "no worker is running\n");
		else {
			snprintf(msg, sizeof(msg), "ok: %u of %u workers running\n", alive,
			         a->m->nworkers);
			text(req, 200, "OK", msg);
		}
		return;
	}
	if (!authorised(a, req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
		                  "Bearer");
		text(req, 401, "Unauthorized", "a bearer token is required\n");
		return;
	}
	if (strcmp(path, "/metrics") == 0 && cmd == EVHTTP_REQ_GET) {
		ap_buf_clear(&a->out);
		if (ap_metrics_render(a->m->metrics, &a->out) != AP_OK) {
			text(req, 500, "Internal Server Error", "out of memory\n");
			return;
		}
		reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", a->out.p,
		      a->out.len);
		return;
	}
	if (strcmp(path, "/optout") == 0 || strncmp(path, "/optout/", 8) == 0) {
		handle_optout(a, req, path, cmd);
		return;
	}
	if (strcmp(path, "/reload") == 0 && cmd == EVHTTP_REQ_POST) {
		if (ap_master_reload(a->m, err) == AP_OK)
			text(req, 200, "OK", "reloaded\n");
		else {
			strcat(err, "\n");
			text(req, 422, "Unprocessable Content", err);
		}
		return;
	}
	text(req, 404, "Not Found",
	     "GET /healthz, GET /metrics, POST /reload, POST /optout, GET|DELETE /optout/<user>\n");
}

struct ap_admin *ap_admin_start(struct ap_master *m, char *err)
{
	struct ap_admin *a = calloc(1, sizeof(*a));
	const char *addr = m->conf->admin_listen, *colon = strrchr(addr, ':');
	char host[256];
	size_t hl;

	if (!a) {
		snprintf(err, AP_CONF_ERR_MAX, "out of memory");
		return NULL;
	}
	a->m = m;
	if (ap_admin_read_token(m->conf->admin_token_file, a->token, sizeof(a->token), err) !=
	    AP_OK)
		goto fail;
	a->token_len = strlen(a->token);
	if (!colon || colon == addr) {
		snprintf(err, AP_CONF_ERR_MAX, "admin.listen: \"%s\" is not address:port", addr);
		goto fail;
	}
	hl = (size_t)(colon - addr);
	if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
		memcpy(host, addr + 1, hl - 2);
		host[hl - 2] = 0;
	} else {
		memcpy(host, addr, hl < sizeof(host) ? hl : sizeof(host) - 1);
		host[hl < sizeof(host) ? hl : sizeof(host) - 1] = 0;
	}
	a->http = evhttp_new(m->base);
	if (!a->http || evhttp_bind_socket(a->http, host, (ev_uint16_t)atoi(colon + 1)) != 0) {
		snprintf(err, AP_CONF_ERR_MAX, "admin.listen: cannot bind %s: %s", addr,
		         strerror(errno));
		goto fail;
	}
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                                            EVHTTP_REQ_DELETE);
	evhttp_set_max_headers_size(a->http, 8192);
	evhttp_set_max_body_size(a->http, 1 << 20);
	evhttp_set_timeout(a->http, 10);
	evhttp_set_gencb(a->http, handle, a);
	return a;
fail:
	ap_admin_free(a);
	return NULL;
}

void ap_admin_reconfigure(struct ap_admin *a, const struct ap_conf *c)
{
	char tok[TOKEN_MAX + 1], err[AP_CONF_ERR_MAX];

	if (!a || !c->admin_token_file)
		return;
	if (ap_admin_read_token(c->admin_token_file, tok, sizeof(tok), err) == AP_OK) {
		memcpy(a->token, tok, sizeof(tok));
		a->token_len = strlen(tok);
	} else
		ap_log_msg("reload: keeping the old admin token: %s", err);
	OPENSSL_cleanse(tok, sizeof(tok));
}

void ap_admin_free(struct ap_admin *a)
{
	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http);
	OPENSSL_cleanse(a->token, sizeof(a->token));
	ap_buf_free(&a->out);
	free(a);
}
