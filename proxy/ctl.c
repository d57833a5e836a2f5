/* Framing for the master-worker control channel. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

static int put_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = {fd, POLLOUT, 0};
			poll(&pfd, 1, 1000);
			continue;
		}
		if (w <= 0)
			return AP_ERR;
		p += w;
		n -= (size_t)w;
	}
	return AP_OK;
}

int ap_ctl_send(int fd, char type, const void *body, uint32_t len)
{
	char h[5];

	h[0] = type;
	memcpy(h + 1, &len, 4);
	if (put_all(fd, h, 5) != AP_OK)
		return AP_ERR;
	return put_all(fd, body, len);
}

bool ap_ctl_take(const struct ap_buf *in, struct ap_ctl_msg *m)
{
	uint32_t len;

	if (in->len < 5)
		return false;
	memcpy(&len, in->p + 1, 4);
	if (len > AP_CTL_MAX) {
		m->type = AP_CTL_DRAIN;
		m->len = 0;
		m->body = NULL;
		return true;
	}
	if (in->len < 5 + (size_t)len)
		return false;
	m->type = in->p[0];
	m->len = len;
	m->body = in->p + 5;
	return true;
}

void ap_ctl_consume(struct ap_buf *in, const struct ap_ctl_msg *m)
{
	size_t n = 5 + (size_t)m->len;

	if (n > in->len || (m->len == 0 && m->type == AP_CTL_DRAIN && !m->body && in->len >= 5 &&
	                    in->p[0] != AP_CTL_DRAIN))
		n = in->len; /* the oversized message: drop everything */
	memmove(in->p, in->p + n, in->len - n);
	in->len -= n;
}
