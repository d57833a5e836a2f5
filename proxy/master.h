/* The master process's state, shared by main.c (process supervision) and admin.c (the
 * admin listener that runs in the master). */
#ifndef AP_MASTER_H
#define AP_MASTER_H

#include <event2/event.h>
#include <stdbool.h>
#include <time.h>

#include "conf.h"
#include "metrics.h"

struct ap_admin;
struct ap_master;

/* One worker slot: its listening sockets live as long as the master, the process in it
 * may be replaced. */
struct ap_wproc {
	unsigned id;
	struct ap_master *m;
	pid_t pid; /* 0: not running */
	time_t started;
	int fds[16];
	bool tls[16];
	size_t nfds;
	int ctl; /* the master's end of the control channel */
	struct event *ev;
	struct ap_buf in;
};

struct ap_master {
	const char *path;
	char *text; /* the configuration file's text the workers were given */
	size_t len;
	struct ap_conf *conf; /* its parse: what the master itself needs (admin, listen) */
	struct event_base *base;
	struct ap_metrics *metrics;
	struct ap_admin *admin;
	struct event *sigs[4];
	struct event *optout_watch; /* rebuilds a lost opt-out segment */
	struct ap_wproc w[AP_WORKERS_MAX];
	unsigned nworkers;
	bool inspect;
	bool stopping;
};

/* Reads <path> and validates it: the text the workers are given, and its parse. NULL
 * with err[AP_CONF_ERR_MAX] when it cannot be read or does not validate. */
struct ap_conf *ap_master_load(const char *path, char **text, size_t *len, char *err);

/* Runs the master: workers (<workers> of them), admin, signals, until stopped. Returns
 * the exit status. m->path, m->text, m->len, m->conf and m->inspect are set. */
int ap_master_run(struct ap_master *m, long workers);

/* Reloads the configuration file: validated here, then sent to every worker; a file
 * that does not validate leaves everything as it was. AP_OK, or AP_ERR with err[]. */
int ap_master_reload(struct ap_master *m, char *err);

#endif
