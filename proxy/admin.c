/* The admin listener (evhttp, in the master): health, Prometheus metrics, reload. Tokens
 * compare in constant time; answers carry no request data. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"

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
	if (strcmp(path, "/reload") == 0 && cmd == EVHTTP_REQ_POST) {
		if (ap_master_reload(a->m, err) == AP_OK)
			text(req, 200, "OK", "reloaded\n");
		else {
			strcat(err, "\n");
			text(req, 422, "Unprocessable Content", err);
		}
		return;
	}
	text(req, 404, "Not Found", "GET /healthz, GET /metrics, POST /reload\n");
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
