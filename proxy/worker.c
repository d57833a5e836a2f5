/* A worker process: the event base, the listeners the master made for it, the control
 * channel the master talks on (reload, drain), the current live configuration, and the
 * end of the process once a drain has closed every connection. */
#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "ctl.h"
#include "log.h"
#include "optout.h"
#include "upstream.h"

#define DRAIN_DEADLINE_S 30

/* ---- live configurations ---- */

static SSL_CTX *tls_listen_ctx(const struct ap_conf *conf, char *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, conf->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, conf->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, AP_CONF_ERR_MAX, "tls: cannot load the certificate %s or its key",
		         conf->tls_cert);
		if (ctx)
			SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	return ctx;
}

int ap_live_check(const struct ap_conf *conf, char *err)
{
	for (size_t i = 0; i < conf->nupstreams; i++) {
		struct ap_upstream u = {.uc = &conf->upstreams[i]};
		int rc = ap_upstream_prepare(&u, err);
		ap_upstream_release(&u);
		if (rc != AP_OK)
			return AP_ERR;
	}
	if (conf->tls_cert) {
		SSL_CTX *ctx = tls_listen_ctx(conf, err);
		if (!ctx)
			return AP_ERR;
		SSL_CTX_free(ctx);
	}
	if (conf->access_log && strcmp(conf->access_log, "off") != 0) {
		int fd = open(conf->access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0) {
			snprintf(err, AP_CONF_ERR_MAX, "access_log: cannot open %s: %s",
			         conf->access_log, strerror(errno));
			return AP_ERR;
		}
		close(fd);
	}
	return AP_OK;
}

struct ap_live *ap_live_new(struct ap_worker *w, struct ap_conf *conf, char *err)
{
	struct ap_live *l = calloc(1, sizeof(*l));

	if (!l) {
		snprintf(err, AP_CONF_ERR_MAX, "out of memory");
		ap_conf_free(conf);
		return NULL;
	}
	l->w = w;
	l->conf = conf;
	l->refs = 1;
	l->ups = calloc(conf->nupstreams + 1, sizeof(*l->ups));
	l->route_slot = calloc(conf->nroutes + 1, sizeof(*l->route_slot));
	if (!l->ups || !l->route_slot) {
		snprintf(err, AP_CONF_ERR_MAX, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < conf->nupstreams; i++) {
		l->ups[i].uc = &conf->upstreams[i];
		l->ups[i].live = l;
		l->nups++;
		if (ap_upstream_prepare(&l->ups[i], err) != AP_OK)
			goto fail;
	}
	for (size_t i = 0; i < conf->nroutes; i++) {
		char name[AP_ROUTE_NAME_MAX];
		l->route_slot[i] =
		        w->metrics ? ap_metrics_route_slot(
		                             w->metrics,
		                             ap_route_name(&conf->routes[i], name, sizeof(name)),
		                             false)
		                   : AP_ROUTE_SLOTS - 1;
	}
	if (conf->tls_cert && !(l->tls_listen = tls_listen_ctx(conf, err)))
		goto fail;
	if (conf->optout_shm) {
		/* A missing table (the master recreates a lost one) is no reason to die: requests
		 * that need it are refused until the timer maps it. */
		char oerr[AP_OPTOUT_ERR_MAX];
		if (!(l->optout = ap_optout_open_reader(conf->optout_shm, oerr)))
			ap_log_msg("worker %u: opt-out table not mapped yet: %s", w->id, oerr);
	}
	return l;
fail:
	l->refs = 1;
	ap_live_unref(l);
	return NULL;
}

void ap_live_ref(struct ap_live *l)
{
	l->refs++;
}

void ap_live_unref(struct ap_live *l)
{
	if (!l || --l->refs)
		return;
	for (size_t i = 0; i < l->nups; i++)
		ap_upstream_release(&l->ups[i]);
	free(l->ups);
	free(l->route_slot);
	if (l->tls_listen)
		SSL_CTX_free(l->tls_listen);
	ap_optout_close(l->optout);
	ap_conf_free(l->conf);
	free(l);
}

int ap_worker_scrub_key(struct ap_worker *w, const struct ap_key *key)
{
	if (w->sc_key == key)
		return AP_OK;
	ap_pseudo_free(&w->sc.ps);
	ap_scrub_cache_flush(&w->sc); /* pseudonyms under the old key */
	w->sc_key = NULL;
	if (ap_pseudo_init(&w->sc.ps, key) != AP_OK)
		return AP_ERR;
	w->sc_key = key;
	return AP_OK;
}

/* ---- listeners ---- */

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
	struct ap_worker *w = arg;
	SSL *ssl = NULL;
	bool tls = false;

	for (size_t i = 0; i < w->nlis; i++)
		if (w->lis[i] == lis)
			tls = w->lis_tls[i];
	if (tls) {
		if (!w->live->tls_listen || !(ssl = SSL_new(w->live->tls_listen))) {
			evutil_closesocket(fd);
			return;
		}
	}
	ap_conn_accept(w, fd, sa, (socklen_t)len, ssl);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_worker *w = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	for (size_t i = 0; i < w->nlis; i++)
		if (w->lis[i] && !w->draining)
			evconnlistener_enable(w->lis[i]);
}

/* Out of file descriptors, mostly: keep serving the connections we have, stop accepting
 * for a second (a level-triggered listener would otherwise spin), and say so once. */
static void accept_error_cb(struct evconnlistener *lis, void *arg)
{
	struct ap_worker *w = arg;
	struct timeval tv = {1, 0};
	int err = EVUTIL_SOCKET_ERROR();

	AP_UNUSED(lis);
	ap_log_msg("worker %u: accept: %s; not accepting for 1 s (%zu connections open)", w->id,
	           evutil_socket_error_to_string(err), w->nconns);
	for (size_t i = 0; i < w->nlis; i++)
		if (w->lis[i])
			evconnlistener_disable(w->lis[i]);
	event_base_once(w->base, -1, EV_TIMEOUT, resume_cb, w, &tv);
}

static void stop_listening(struct ap_worker *w)
{
	for (size_t i = 0; i < w->nlis; i++)
		if (w->lis[i]) {
			evconnlistener_free(w->lis[i]);
			w->lis[i] = NULL;
		}
}

/* ---- draining and the end ---- */

void ap_worker_maybe_exit(struct ap_worker *w)
{
	if (w->draining && w->nconns == 0)
		event_base_loopexit(w->base, NULL);
}

static void drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_worker *w = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	ap_log_msg("worker %u: drain deadline reached with %zu connections open", w->id, w->nconns);
	event_base_loopexit(w->base, NULL);
}

static void drain(struct ap_worker *w)
{
	struct timeval tv = {DRAIN_DEADLINE_S, 0};

	if (w->draining)
		return;
	w->draining = true;
	stop_listening(w);
	ap_conn_drain_all(w);
	w->drain_timer = evtimer_new(w->base, drain_deadline_cb, w);
	if (w->drain_timer)
		evtimer_add(w->drain_timer, &tv);
	ap_worker_maybe_exit(w);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	AP_UNUSED(what);
	if (sig == SIGTERM || sig == SIGINT)
		drain(arg);
}

/* A writer that compacts or rebuilds the table puts a new segment under its name; the
 * mapping follows it here, between requests. */
static void optout_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_worker *w = arg;
	char err[AP_OPTOUT_ERR_MAX];

	AP_UNUSED(fd);
	AP_UNUSED(what);
	struct ap_live *l = w->live;
	int rc;

	if (!l->conf->optout_shm)
		return;
	if (!l->optout) {
		if ((l->optout = ap_optout_open_reader(l->conf->optout_shm, err)))
			ap_log_msg("worker %u: opt-out table mapped", w->id);
		return;
	}
	/* Said once when it starts failing, once when it recovers: not every second. */
	rc = ap_optout_refresh(l->optout, err);
	if (rc < 0 && !w->optout_failing)
		ap_log_msg("worker %u: opt-out table: %s; the mapping in use stays", w->id, err);
	else if (rc >= 0 && w->optout_failing)
		ap_log_msg("worker %u: opt-out table followed again", w->id);
	w->optout_failing = rc < 0;
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
	AP_UNUSED(fd);
	AP_UNUSED(what);
	ap_conn_reap(arg);
}

/* ---- the control channel ---- */

static int open_access_log(const struct ap_conf *c)
{
	if (!c->access_log)
		return 2;
	if (strcmp(c->access_log, "off") == 0)
		return -1;
	return open(c->access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static int reload(struct ap_worker *w, const char *text, size_t len, const char *dir, char *err)
{
	struct ap_conf *conf = ap_conf_parse(text, len, dir, err);
	struct ap_live *l;
	int fd;

	if (!conf)
		return AP_ERR;
	if (!(l = ap_live_new(w, conf, err)))
		return AP_ERR;
	fd = open_access_log(l->conf);
	if (fd == -1 && l->conf->access_log && strcmp(l->conf->access_log, "off") != 0) {
		snprintf(err, AP_CONF_ERR_MAX, "access_log: cannot open %s: %s",
		         l->conf->access_log, strerror(errno));
		ap_live_unref(l);
		return AP_ERR;
	}
	if (w->access_fd > 2)
		close(w->access_fd);
	w->access_fd = fd;
	ap_live_unref(w->live);
	w->live = l;
	/* Cached pseudonyms are keyed by action addresses, which the new configuration's
	 * rulesets may reuse. */
	ap_scrub_cache_flush(&w->sc);
	return AP_OK;
}

static void ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_worker *w = arg;
	char buf[65536], err[AP_CONF_ERR_MAX];
	ssize_t n;
	struct ap_ctl_msg m;

	AP_UNUSED(what);
	n = read(fd, buf, sizeof(buf));
	if (n == 0) {
		/* The master is gone: finish what we have and leave. */
		event_del(w->ctl_ev);
		drain(w);
		return;
	}
	if (n < 0)
		return;
	ap_buf_add(&w->ctl_in, buf, (size_t)n);
	while (ap_ctl_take(&w->ctl_in, &m)) {
		if (m.type == AP_CTL_DRAIN) {
			drain(w);
		} else if (m.type == AP_CTL_RELOAD) {
			int rc = reload(w, m.body, m.len, w->live->conf->dir, err);
			ap_metric_add(rc == AP_OK ? &w->stats->reloads : &w->stats->reload_failures,
			              1);
			if (rc == AP_OK)
				ap_ctl_send(fd, AP_CTL_OK, "", 0);
			else
				ap_ctl_send(fd, AP_CTL_FAIL, err, strlen(err));
		}
		ap_ctl_consume(&w->ctl_in, &m);
	}
}

/* ---- the process ---- */

int ap_worker_main(unsigned id, const char *conf_path, const char *conf_text, size_t conf_len,
                   int *fds, bool *tls, size_t nfds, int ctl_fd, struct ap_metrics *m, bool inspect)
{
	struct ap_worker w = {0};
	char err[AP_CONF_ERR_MAX], *dir, *slash;
	struct ap_conf *conf;
	int rc = 0;

	signal(SIGPIPE, SIG_IGN);
	/* Request bodies come and go in the same sizes: keep freed memory instead of giving
	 * it back to the kernel (brk) after every large request. */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	w.id = id;
	w.metrics = m;
	w.stats = &m->w[id];
	w.ctl_fd = ctl_fd;
	w.inspect = inspect;
	w.inspect_color = inspect && isatty(2);
	ap_metric_set((uint64_t *)&w.stats->pid, (uint64_t)getpid());
	if (!(w.base = event_base_new())) {
		ap_log_msg("worker %u: cannot make an event base", id);
		return 1;
	}
	dir = strdup(conf_path);
	slash = dir ? strrchr(dir, '/') : NULL;
	if (slash)
		*slash = 0;
	conf = ap_conf_parse(conf_text, conf_len, slash ? dir : ".", err);
	free(dir);
	if (!conf || !(w.live = ap_live_new(&w, conf, err))) {
		ap_log_msg("worker %u: %s", id, err);
		return 1;
	}
	w.access_fd = open_access_log(w.live->conf);
	memset(&w.sc, 0, sizeof(w.sc));
	w.sc.z.level = 1;
	for (size_t i = 0; i < nfds && i < AP_ARRAY_LEN(w.lis); i++) {
		/* backlog 0: the master's listen(1024) stands (-1 would make libevent listen(128))
		 */
		w.lis[i] =
		        evconnlistener_new(w.base, accept_cb, &w, LEV_OPT_CLOSE_ON_FREE, 0, fds[i]);
		w.lis_tls[i] = tls[i];
		if (!w.lis[i]) {
			ap_log_msg("worker %u: cannot listen", id);
			return 1;
		}
		evconnlistener_set_error_cb(w.lis[i], accept_error_cb);
		w.nlis++;
	}
	w.reap = event_new(w.base, -1, 0, reap_cb, &w);
	w.sig_term = evsignal_new(w.base, SIGTERM, signal_cb, &w);
	w.sig_int = evsignal_new(w.base, SIGINT, signal_cb, &w);
	w.sig_hup = evsignal_new(w.base, SIGHUP, signal_cb, &w); /* the master reloads us */
	w.ctl_ev = event_new(w.base, ctl_fd, EV_READ | EV_PERSIST, ctl_cb, &w);
	w.optout_timer = event_new(w.base, -1, EV_PERSIST, optout_timer_cb, &w);
	if (!w.reap || !w.sig_term || !w.sig_int || !w.sig_hup || !w.ctl_ev || !w.optout_timer) {
		ap_log_msg("worker %u: cannot set up events", id);
		return 1;
	}
	evsignal_add(w.sig_term, NULL);
	evsignal_add(w.sig_int, NULL);
	evsignal_add(w.sig_hup, NULL);
	event_add(w.ctl_ev, NULL);
	event_add(w.optout_timer, &(struct timeval){1, 0});

	event_base_dispatch(w.base);

	stop_listening(&w);
	ap_conn_close_all(&w); /* past the drain deadline: what is left is cut off */
	ap_conn_reap(&w);
	ap_live_unref(w.live);
	if (w.access_fd > 2)
		close(w.access_fd);
	event_free(w.reap);
	event_free(w.sig_term);
	event_free(w.sig_int);
	event_free(w.sig_hup);
	event_free(w.ctl_ev);
	event_free(w.optout_timer);
	if (w.drain_timer)
		event_free(w.drain_timer);
	ap_scrub_free(&w.sc);
	ap_buf_free(&w.ctl_in);
	ap_buf_free(&w.line);
	ap_buf_free(&w.ibuf);
	event_base_free(w.base);
	return rc;
}
