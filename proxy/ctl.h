/* The control channel between the master and a worker (a socketpair): framed messages
 * of one type byte, a 4-byte length and a body. The master sends a configuration to load
 * or the word to drain; the worker answers a reload with OK or the reason it failed. */
#ifndef AP_CTL_H
#define AP_CTL_H

#include <stdbool.h>

#include "buf.h"

enum ap_ctl_type {
	AP_CTL_RELOAD = 'R', /* body: the configuration file's text */
	AP_CTL_DRAIN = 'D',  /* stop accepting, finish, exit */
	AP_CTL_OK = 'K',     /* reload done */
	AP_CTL_FAIL = 'F',   /* reload refused; body: why */
};

struct ap_ctl_msg {
	char type;
	uint32_t len;
	const char *body; /* borrowed from the buffer it was taken from */
};

#define AP_CTL_MAX (16u << 20)

/* Sends one message on the blocking or non-blocking <fd> (retrying short writes).
 * AP_OK or AP_ERR. */
int ap_ctl_send(int fd, char type, const void *body, uint32_t len);

/* True when <in> starts with a whole message, which *m then describes. A message over
 * AP_CTL_MAX is taken as a DRAIN: the peer is not making sense. */
bool ap_ctl_take(const struct ap_buf *in, struct ap_ctl_msg *m);

/* Removes the message *m (just taken) from the front of <in>. */
void ap_ctl_consume(struct ap_buf *in, const struct ap_ctl_msg *m);

#endif
