/* The admin listener, in the master process (evhttp): GET /healthz, GET /metrics,
 * POST /reload, and the opt-out endpoints POST /optout, GET and DELETE /optout/<user>.
 * Every endpoint but /healthz
 * wants "Authorization: Bearer <token>", the token read from a file that others may not
 * read. Loopback by default; nothing it answers carries an identifier. */
#ifndef AP_ADMIN_H
#define AP_ADMIN_H

#include "master.h"

/* Starts listening on m->conf->admin_listen. NULL with err[AP_CONF_ERR_MAX] set when
 * the address cannot be bound or the token file is missing, empty or readable by
 * others. */
struct ap_admin *ap_admin_start(struct ap_master *m, char *err);

/* Takes a reloaded configuration's token (a changed admin address needs a restart). */
void ap_admin_reconfigure(struct ap_admin *a, const struct ap_conf *c);

void ap_admin_free(struct ap_admin *a);

/* Reads a bearer token from <path> (trailing white space removed) into tok[cap]. Refuses
 * a file others can read or write. AP_OK, or AP_ERR with err[]. */
int ap_admin_read_token(const char *path, char *tok, size_t cap, char *err);

#endif
