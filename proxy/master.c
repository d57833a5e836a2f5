/* The master process: reads and validates the configuration, makes the listening sockets
 * (one SO_REUSEPORT socket per worker and address, kept open across worker restarts so no
 * accept queue is lost), forks the workers and restarts one that dies, reloads on SIGHUP or
 * POST /reload (validated here first, then sent to every worker whole over its control
 * channel), drains the workers on SIGTERM, and runs the admin listener. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "ctl.h"
#include "log.h"
#include "optout.h"
#include "master.h"
#include "worker.h"

#define LISTEN_MAX      16
#define STOP_DEADLINE_S 40

static char *read_file(const char *path, size_t *len, char *err)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	size_t cap = 0, r;

	*len = 0;
	if (!f) {
		snprintf(err, AP_CONF_ERR_MAX, "%s: %s", path, strerror(errno));
		return NULL;
	}
	do {
		if (*len == cap) {
			char *nt;
			cap = cap ? cap * 2 : 65536;
			if (cap > AP_CTL_MAX || !(nt = realloc(text, cap))) {
				snprintf(err, AP_CONF_ERR_MAX, "%s: too large", path);
				free(text);
				fclose(f);
				return NULL;
			}
			text = nt;
		}
		r = fread(text + *len, 1, cap - *len, f);
		*len += r;
	} while (r > 0);
	fclose(f);
	return text;
}

struct ap_conf *ap_master_load(const char *path, char **text, size_t *len, char *err)
{
	char *dir = strdup(path), *slash, e2[AP_CONF_ERR_MAX];
	struct ap_conf *c;

	*text = read_file(path, len, err);
	if (!*text || !dir) {
		free(dir);
		return NULL;
	}
	slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	c = ap_conf_parse(*text, *len, slash ? dir : ".", e2);
	free(dir);
	if (c && ap_live_check(c, e2) != AP_OK) {
		ap_conf_free(c);
		c = NULL;
	}
	if (c && c->admin_token_file) {
		char tok[257];
		if (ap_admin_read_token(c->admin_token_file, tok, sizeof(tok), e2) != AP_OK) {
			ap_conf_free(c);
			c = NULL;
		}
		OPENSSL_cleanse(tok, sizeof(tok));
	}
	if (!c) {
		snprintf(err, AP_CONF_ERR_MAX, "%.100s: %.400s", path, e2);
		free(*text);
		*text = NULL;
		return NULL;
	}
	return c;
}

/* A listening socket in the SO_REUSEPORT group of <addr>. With <probe> (the first socket
 * made for an address) the address is first bound alone: SO_REUSEPORT would otherwise let
 * a second anonproxy of the same user join the group silently and take half the traffic. */
static int listen_on(const char *addr, bool probe, char *err)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = {0}, *res = NULL;
	int fd, one = 1, rc;
	size_t hl = (size_t)(colon - addr);

	if (addr[0] == '[') {
		hl -= 2;
		memcpy(host, addr + 1, hl);
	} else
		memcpy(host, addr, hl);
	host[hl] = 0;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res)) != 0) {
		snprintf(err, AP_CONF_ERR_MAX, "listen %s: %s", addr, gai_strerror(rc));
		return -1;
	}
	if (probe) {
		fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		                bind(fd, res->ai_addr, res->ai_addrlen) != 0)) {
			snprintf(err, AP_CONF_ERR_MAX, "listen %s: %s%s", addr, strerror(errno),
			         errno == EADDRINUSE ? " (another anonproxy or another server?)"
			                             : "");
			close(fd);
			freeaddrinfo(res);
			return -1;
		}
		if (fd >= 0)
			close(fd);
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		snprintf(err, AP_CONF_ERR_MAX, "listen %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* ---- workers ---- */

static void spawn(struct ap_master *m, unsigned i);

static void ctl_reply_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_wproc *wp = arg;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));
	struct ap_ctl_msg msg;

	AP_UNUSED(what);
	if (n <= 0) {
		event_del(wp->ev);
		return;
	}
	ap_buf_add(&wp->in, buf, (size_t)n);
	while (ap_ctl_take(&wp->in, &msg)) {
		if (msg.type == AP_CTL_FAIL)
			ap_log_msg("worker %u refused the reload: %.*s", wp->id, (int)msg.len,
			           msg.body);
		ap_ctl_consume(&wp->in, &msg);
	}
}

static void respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_wproc *wp = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	if (!wp->m->stopping)
		spawn(wp->m, wp->id);
}

static void spawn(struct ap_master *m, unsigned i)
{
	struct ap_wproc *wp = &m->w[i];
	int sv[2];
	pid_t pid, master = getpid();

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		ap_log_msg("worker %u: socketpair: %s", i, strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		ap_log_msg("worker %u: fork: %s", i, strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return;
	}
	if (pid == 0) {
		int rc;
		/* A worker outlives no master: if it goes, the worker drains and leaves. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)
			_exit(1); /* it went before the death signal was armed */
		close(sv[0]);
		/* The master's event base, signal handlers, admin socket and control channels are
		 * not the worker's: it makes its own. The epoll instance is shared with the
		 * master after fork(), so the base is re-initialised before anything is removed
		 * from it — else the master's events would be deleted too. */
		event_reinit(m->base);
		for (unsigned k = 0; k < m->nworkers; k++) {
			if (m->w[k].ev)
				event_free(m->w[k].ev), m->w[k].ev = NULL;
			if (m->w[k].ctl >= 0)
				close(m->w[k].ctl);
			if (k != i)
				for (size_t a = 0; a < m->w[k].nfds; a++)
					close(m->w[k].fds[a]);
		}
		for (int k = 0; k < 4; k++)
			if (m->sigs[k])
				event_free(m->sigs[k]), m->sigs[k] = NULL;
		if (m->optout_watch)
			event_free(m->optout_watch), m->optout_watch = NULL;
		ap_admin_free(m->admin);
		m->admin = NULL;
		event_base_free(m->base);
		m->base = NULL;
		rc = ap_worker_main(i, m->path, m->text, m->len, wp->fds, wp->tls, wp->nfds, sv[1],
		                    m->metrics, m->inspect);
		exit(rc); /* not _exit: LeakSanitizer checks the worker at exit (make asan) */
	}
	close(sv[1]);
	if (wp->ctl >= 0)
		close(wp->ctl);
	if (wp->ev)
		event_free(wp->ev);
	wp->ctl = sv[0];
	wp->pid = pid;
	wp->started = time(NULL);
	ap_buf_clear(&wp->in);
	wp->ev = event_new(m->base, sv[0], EV_READ | EV_PERSIST, ctl_reply_cb, wp);
	event_add(wp->ev, NULL);
}

static void child_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ap_master *m = arg;
	pid_t pid;
	int st;

	AP_UNUSED(sig);
	AP_UNUSED(what);
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (unsigned i = 0; i < m->nworkers; i++) {
			struct ap_wproc *wp = &m->w[i];
			if (wp->pid != pid)
				continue;
			wp->pid = 0;
			ap_metric_set(&m->metrics->w[i].open, 0); /* its connections died with it */
			if (m->stopping)
				break;
			if (WIFSIGNALED(st))
				ap_log_msg("worker %u (pid %d) killed by signal %d; restarting", i,
				           (int)pid, WTERMSIG(st));
			else
				ap_log_msg("worker %u (pid %d) exited with %d; restarting", i,
				           (int)pid, WEXITSTATUS(st));
			m->metrics->worker_restarts++;
			/* One that dies at once is restarted after a pause, not in a tight loop. */
			if (time(NULL) - wp->started < 2) {
				struct timeval tv = {1, 0};
				event_base_once(m->base, -1, EV_TIMEOUT, respawn_cb, wp, &tv);
			} else
				spawn(m, i);
		}
	}
	if (m->stopping) {
		bool any = false;
		for (unsigned i = 0; i < m->nworkers; i++)
			any |= m->w[i].pid != 0;
		if (!any)
			event_base_loopexit(m->base, NULL);
	}
}

/* ---- reload and stop ---- */

/* The opt-out table must exist before a worker maps it: opening it as its writer creates
 * the segment, or catches it up with the journal, or rebuilds it (a reboot loses /dev/shm).
 * The writer is closed again at once — a handle (and its lock) must not be inherited by
 * workers, and anonctl and the admin API open their own. */
static int prepare_optout(const struct ap_conf *c, bool wait, char *err)
{
	struct ap_optout_opts o = {c->optout_shm, c->optout_dir, c->optout_capacity, true};
	char oerr[AP_OPTOUT_ERR_MAX];
	struct ap_optout *t;

	if (!c->optout_shm)
		return AP_OK;
	if (!(t = ap_optout_open(&o, oerr)) && wait) {
		/* Another writer (anonctl importing, say) holds the lock: say so, then wait. */
		ap_log_msg("opt-out table: %s; waiting for it", oerr);
		o.nowait = false;
		t = ap_optout_open(&o, oerr);
	}
	if (!t) {
		struct ap_optout *r = ap_optout_open_reader(c->optout_shm, err);
		if (r && !wait) {
			/* A reload while a writer works: the segment exists, workers map it. */
			ap_optout_close(r);
			ap_log_msg("opt-out table: %s; the workers keep the segment as it is",
			           oerr);
			return AP_OK;
		}
		ap_optout_close(r);
		snprintf(err, AP_CONF_ERR_MAX, "optout: %s", oerr);
		return AP_ERR;
	}
	if (ap_optout_notice(t) && *ap_optout_notice(t))
		ap_log_msg("opt-out table: %s", ap_optout_notice(t));
	ap_optout_close(t);
	return AP_OK;
}

/* A lost segment (someone unlinked it, /dev/shm was emptied) is rebuilt from the journal
 * here, within a few seconds; workers map the new one on their own. */
static void optout_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_master *m = arg;
	char err[AP_CONF_ERR_MAX];
	struct ap_optout *r;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	if (!m->conf->optout_shm || m->stopping)
		return;
	if ((r = ap_optout_open_reader(m->conf->optout_shm, err))) {
		ap_optout_close(r);
		return;
	}
	ap_log_msg("opt-out table %s is gone; rebuilding it from its journal", m->conf->optout_shm);
	if (prepare_optout(m->conf, false, err) != AP_OK)
		ap_log_msg("%s", err);
}

/* Rules that do nothing are said at start and reload, not discovered in production. */
static void warn_unused(const struct ap_conf *c)
{
	for (size_t i = 0; i < c->nrulesets; i++)
		if (c->rulesets[i].user && !c->optout_shm)
			ap_log_msg("ruleset %s names its users, but there is no \"optout\" table: "
			           "no opt-out is enforced",
			           c->rulesets[i].name);
	for (size_t i = 0; i < c->nroutes; i++)
		if (c->routes[i].scope && !c->routes[i].ruleset->user)
			ap_log_msg("a route with a scope uses ruleset %s, which has no \"user\" "
			           "rules: "
			           "its scope is not enforced",
			           c->routes[i].ruleset->name);
}

int ap_master_reload(struct ap_master *m, char *err)
{
	char *text;
	size_t len;
	struct ap_conf *c = ap_master_load(m->path, &text, &len, err);

	if (c && prepare_optout(c, false, err) != AP_OK) {
		ap_conf_free(c);
		free(text);
		c = NULL;
	}
	if (!c) {
		m->metrics->reload_failures++;
		ap_log_msg("reload refused, the running configuration stays: %s", err);
		return AP_ERR;
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		char name[AP_ROUTE_NAME_MAX];
		ap_metrics_route_slot(m->metrics, ap_route_name(&c->routes[i], name, sizeof(name)),
		                      true);
	}
	if (c->workers != m->conf->workers || c->nlisten != m->conf->nlisten ||
	    c->ntls_listen != m->conf->ntls_listen ||
	    (c->admin_listen == NULL) != (m->conf->admin_listen == NULL) ||
	    (c->admin_listen && strcmp(c->admin_listen, m->conf->admin_listen) != 0))
		ap_log_msg("reload: listen, tls.listen, workers and admin.listen keep their old "
		           "values until a restart");
	else
		for (size_t i = 0; i < c->nlisten; i++)
			if (strcmp(c->listen[i], m->conf->listen[i]) != 0)
				ap_log_msg("reload: listen keeps its old value until a restart");
	ap_admin_reconfigure(m->admin, c);
	ap_conf_free(m->conf);
	free(m->text);
	m->conf = c;
	m->text = text;
	m->len = len;
	for (unsigned i = 0; i < m->nworkers; i++)
		if (m->w[i].pid && m->w[i].ctl >= 0)
			ap_ctl_send(m->w[i].ctl, AP_CTL_RELOAD, text, (uint32_t)len);
	m->metrics->reloads++;
	ap_log_msg("configuration reloaded from %s", m->path);
	warn_unused(c);
	return AP_OK;
}

static void stop_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_master *m = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	for (unsigned i = 0; i < m->nworkers; i++)
		if (m->w[i].pid)
			kill(m->w[i].pid, SIGKILL);
	event_base_loopexit(m->base, NULL);
}

static void stop(struct ap_master *m)
{
	struct timeval tv = {STOP_DEADLINE_S, 0};
	bool any = false;

	if (m->stopping)
		return;
	m->stopping = true;
	ap_log_msg("stopping: draining %u workers", m->nworkers);
	/* With the master's copies closed too, a worker closing its own takes the sockets away:
	 * new connections are refused at once instead of queueing until the drain ends. */
	for (unsigned i = 0; i < m->nworkers; i++) {
		for (size_t a = 0; a < m->w[i].nfds; a++)
			close(m->w[i].fds[a]);
		m->w[i].nfds = 0;
	}
	for (unsigned i = 0; i < m->nworkers; i++)
		if (m->w[i].pid) {
			any = true;
			if (m->w[i].ctl >= 0)
				ap_ctl_send(m->w[i].ctl, AP_CTL_DRAIN, "", 0);
			kill(m->w[i].pid, SIGTERM);
		}
	if (!any) {
		event_base_loopexit(m->base, NULL);
		return;
	}
	event_base_once(m->base, -1, EV_TIMEOUT, stop_deadline_cb, m, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ap_master *m = arg;
	char err[AP_CONF_ERR_MAX];

	AP_UNUSED(what);
	if (sig == SIGHUP)
		ap_master_reload(m, err);
	else
		stop(m);
}

/* ---- main ---- */

int ap_master_run(struct ap_master *m, long workers)
{
	char err[AP_CONF_ERR_MAX];
	const int signums[4] = {SIGHUP, SIGTERM, SIGINT, SIGCHLD};

	signal(SIGPIPE, SIG_IGN);
	if (prepare_optout(m->conf, true, err) != AP_OK) {
		fprintf(stderr, "anonproxy: %s\n", err);
		return 1;
	}
	if (workers < 0)
		workers = m->conf->workers ? (long)m->conf->workers : sysconf(_SC_NPROCESSORS_ONLN);
	if (workers < 1)
		workers = 1;
	if (workers > AP_WORKERS_MAX)
		workers = AP_WORKERS_MAX;
	m->nworkers = (unsigned)workers;
	if (!(m->metrics = ap_metrics_create(m->nworkers))) {
		fprintf(stderr, "anonproxy: cannot map the metrics segment\n");
		return 1;
	}
	for (size_t i = 0; i < m->conf->nroutes; i++) {
		char name[AP_ROUTE_NAME_MAX];
		ap_metrics_route_slot(m->metrics,
		                      ap_route_name(&m->conf->routes[i], name, sizeof(name)), true);
	}
	if (m->conf->nlisten + m->conf->ntls_listen > LISTEN_MAX) {
		fprintf(stderr, "anonproxy: at most %d listen addresses\n", LISTEN_MAX);
		return 1;
	}
	/* The admin listener is bound before the proxy's: once the proxy port accepts a
	 * connection, /healthz and /metrics answer too (a probe or a test may rely on it). */
	if (!(m->base = event_base_new())) {
		fprintf(stderr, "anonproxy: cannot make an event base\n");
		return 1;
	}
	if (m->conf->admin_listen && !(m->admin = ap_admin_start(m, err))) {
		fprintf(stderr, "anonproxy: %s\n", err);
		return 1;
	}
	for (unsigned i = 0; i < m->nworkers; i++) {
		struct ap_wproc *wp = &m->w[i];
		wp->id = i;
		wp->m = m;
		wp->ctl = -1;
		for (size_t a = 0; a < m->conf->nlisten + m->conf->ntls_listen; a++) {
			bool tls = a >= m->conf->nlisten;
			const char *addr = tls ? m->conf->tls_listen[a - m->conf->nlisten]
			                       : m->conf->listen[a];
			int fd = listen_on(addr, i == 0, err);
			if (fd < 0) {
				fprintf(stderr, "anonproxy: %s\n", err);
				return 1;
			}
			wp->fds[wp->nfds] = fd;
			wp->tls[wp->nfds++] = tls;
		}
	}
	for (int i = 0; i < 4; i++) {
		m->sigs[i] = evsignal_new(m->base, signums[i],
		                          signums[i] == SIGCHLD ? child_cb : signal_cb, m);
		evsignal_add(m->sigs[i], NULL);
	}
	for (unsigned i = 0; i < m->nworkers; i++)
		spawn(m, i);
	m->optout_watch = event_new(m->base, -1, EV_PERSIST, optout_watch_cb, m);
	if (m->optout_watch)
		event_add(m->optout_watch, &(struct timeval){5, 0});
	warn_unused(m->conf);
	ap_log_msg("listening on %s%s with %u worker%s, configuration %s", m->conf->listen[0],
	           m->conf->nlisten + m->conf->ntls_listen > 1 ? " (and more)" : "", m->nworkers,
	           m->nworkers == 1 ? "" : "s", m->path);

	event_base_dispatch(m->base);

	ap_admin_free(m->admin);
	if (m->optout_watch)
		event_free(m->optout_watch);
	for (int i = 0; i < 4; i++)
		event_free(m->sigs[i]);
	for (unsigned i = 0; i < m->nworkers; i++) {
		if (m->w[i].ev)
			event_free(m->w[i].ev);
		if (m->w[i].ctl >= 0)
			close(m->w[i].ctl);
		for (size_t a = 0; a < m->w[i].nfds; a++)
			close(m->w[i].fds[a]);
		ap_buf_free(&m->w[i].in);
	}
	event_base_free(m->base);
	ap_conf_free(m->conf);
	free(m->text);
	ap_log_msg("stopped");
	return 0;
}
