/* Non-blocking streams over evbuffers (see io.h). Plain TCP: a persistent read event,
 * readv into up to 64 KB of reserved space per call; output written from a "kick" event
 * that runs right after the callback that queued it, with the write event armed only
 * while the kernel's send buffer is full. TLS: bufferevent_openssl underneath. A stream
 * freed from inside one of its own callbacks is released when that callback returns. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"

#define READ_CHUNK      (64u << 10)
#define READS_PER_EVENT 4 /* then let other connections have a turn */

struct ap_io {
	struct event_base *base;
	evutil_socket_t fd;
	struct bufferevent *bev; /* TLS streams only */
	struct evbuffer *in, *out;
	struct event *rev, *wev, *kick;
	ap_io_cb read_cb, write_cb;
	ap_io_event_cb event_cb;
	void *arg;
	size_t lowat;
	int depth; /* callbacks running on the stack */
	bool connecting, reading, dead, tls_failed, kicking;
};

static void release(struct ap_io *io)
{
	if (io->bev)
		bufferevent_free(io->bev);
	if (io->rev)
		event_free(io->rev);
	if (io->wev)
		event_free(io->wev);
	if (io->kick)
		event_free(io->kick);
	if (!io->bev) {
		if (io->in)
			evbuffer_free(io->in);
		if (io->out)
			evbuffer_free(io->out);
		if (io->fd >= 0)
			evutil_closesocket(io->fd);
	}
	free(io);
}

/* Every entry from libevent holds the stream: a free inside a user callback is carried
 * out when the entry point returns. */
static void enter(struct ap_io *io)
{
	io->depth++;
}

static void leave(struct ap_io *io)
{
	if (--io->depth == 0 && io->dead)
		release(io);
}

static void emit(struct ap_io *io, int what)
{
	if (io->event_cb && !io->dead)
		io->event_cb(io, what, io->arg);
}

/* ---- plain TCP ---- */

static void flush(struct ap_io *io)
{
	size_t before = evbuffer_get_length(io->out), left;
	bool progress = false;

	if (io->connecting || io->dead)
		return;
	while ((left = evbuffer_get_length(io->out)) > 0) {
		int n = evbuffer_write(io->out, io->fd);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			event_del(io->wev);
			emit(io, AP_IO_ERROR);
			return;
		}
		if (n == 0)
			break;
		progress = true;
	}
	left = evbuffer_get_length(io->out);
	if (left)
		event_add(io->wev, NULL);
	else
		event_del(io->wev);
	if ((progress || before == 0) && left <= io->lowat && io->write_cb && !io->dead)
		io->write_cb(io, io->arg);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_io *io = arg;

	AP_UNUSED(fd);
	AP_UNUSED(what);
	io->kicking = false;
	enter(io);
	flush(io);
	leave(io);
}

/* Output was queued: write it once the callback that queued it has returned. */
static void out_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
	struct ap_io *io = arg;

	AP_UNUSED(b);
	if (info->n_added && !io->kicking && !io->dead) {
		io->kicking = true;
		event_active(io->kick, EV_TIMEOUT, 0);
	}
}

static void rd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_io *io = arg;
	size_t total = 0;
	bool eof = false, err = false;

	AP_UNUSED(what);
	enter(io);
	for (int i = 0; i < READS_PER_EVENT; i++) {
		struct evbuffer_iovec v[2];
		struct iovec iov[2];
		int nv = evbuffer_reserve_space(io->in, READ_CHUNK, v, 2);
		size_t want = 0, got;
		ssize_t n;

		if (nv <= 0) {
			err = true;
			break;
		}
		for (int k = 0; k < nv; k++) {
			iov[k].iov_base = v[k].iov_base;
			iov[k].iov_len = v[k].iov_len;
			want += v[k].iov_len;
		}
		n = readv(fd, iov, nv);
		if (n <= 0) {
			evbuffer_commit_space(io->in, v, 0);
			if (n == 0)
				eof = true;
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				err = true;
			break;
		}
		got = (size_t)n;
		total += got;
		for (int k = 0; k < nv; k++) {
			size_t take = got < v[k].iov_len ? got : v[k].iov_len;
			v[k].iov_len = take;
			got -= take;
		}
		evbuffer_commit_space(io->in, v, nv);
		if ((size_t)n < want)
			break; /* a short read: the socket is empty for now */
	}
	if (total && io->read_cb && !io->dead)
		io->read_cb(io, io->arg);
	if ((eof || err) && !io->dead) {
		event_del(io->rev);
		emit(io, err ? AP_IO_ERROR : AP_IO_EOF);
	}
	leave(io);
}

static void wr_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ap_io *io = arg;

	AP_UNUSED(what);
	enter(io);
	if (io->connecting) {
		int e = 0;
		socklen_t el = sizeof(e);
		event_del(io->wev);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0) {
			emit(io, AP_IO_ERROR);
			leave(io);
			return;
		}
		io->connecting = false;
		if (io->reading)
			event_add(io->rev, NULL);
		emit(io, AP_IO_CONNECTED);
	}
	flush(io);
	leave(io);
}

/* Requests and answers are written whole: Nagle's algorithm would only delay them. */
static void nodelay(evutil_socket_t fd)
{
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct ap_io *plain(struct event_base *base, evutil_socket_t fd)
{
	struct ap_io *io = calloc(1, sizeof(*io));

	if (!io) {
		evutil_closesocket(fd);
		return NULL;
	}
	io->base = base;
	io->fd = fd;
	io->reading = true;
	nodelay(fd);
	io->in = evbuffer_new();
	io->out = evbuffer_new();
	io->rev = event_new(base, fd, EV_READ | EV_PERSIST, rd_cb, io);
	io->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, wr_cb, io);
	io->kick = event_new(base, -1, 0, kick_cb, io);
	if (!io->in || !io->out || !io->rev || !io->wev || !io->kick ||
	    !evbuffer_add_cb(io->out, out_cb, io)) {
		release(io);
		return NULL;
	}
	return io;
}

/* ---- TLS ---- */

static void bev_read(struct bufferevent *bev, void *arg)
{
	struct ap_io *io = arg;

	AP_UNUSED(bev);
	enter(io);
	if (io->read_cb && !io->dead)
		io->read_cb(io, io->arg);
	leave(io);
}

static void bev_write(struct bufferevent *bev, void *arg)
{
	struct ap_io *io = arg;

	AP_UNUSED(bev);
	enter(io);
	if (io->write_cb && !io->dead)
		io->write_cb(io, io->arg);
	leave(io);
}

static void bev_event(struct bufferevent *bev, short what, void *arg)
{
	struct ap_io *io = arg;

	if (bufferevent_get_openssl_error(bev))
		io->tls_failed = true;
	enter(io);
	if (what & BEV_EVENT_CONNECTED) {
		nodelay(bufferevent_getfd(bev));
		emit(io, AP_IO_CONNECTED);
	} else if (what & BEV_EVENT_EOF)
		emit(io, AP_IO_EOF);
	else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		emit(io, AP_IO_ERROR);
	leave(io);
}

static struct ap_io *tls(struct event_base *base, evutil_socket_t fd, SSL *ssl, bool accepting)
{
	struct ap_io *io = calloc(1, sizeof(*io));

	if (!io) {
		SSL_free(ssl);
		if (fd >= 0)
			evutil_closesocket(fd);
		return NULL;
	}
	io->base = base;
	io->fd = fd;
	io->reading = true;
	io->bev = bufferevent_openssl_socket_new(
	        base, fd, ssl, accepting ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
	        BEV_OPT_CLOSE_ON_FREE);
	if (!io->bev) {
		SSL_free(ssl);
		if (fd >= 0)
			evutil_closesocket(fd);
		free(io);
		return NULL;
	}
	io->in = bufferevent_get_input(io->bev);
	io->out = bufferevent_get_output(io->bev);
	bufferevent_setcb(io->bev, bev_read, bev_write, bev_event, io);
	bufferevent_enable(io->bev, EV_READ | EV_WRITE);
	return io;
}

/* ---- the interface ---- */

struct ap_io *ap_io_new(struct event_base *base, evutil_socket_t fd, SSL *ssl, bool accepting)
{
	struct ap_io *io;

	evutil_make_socket_nonblocking(fd);
	if (ssl)
		return tls(base, fd, ssl, accepting);
	if ((io = plain(base, fd)))
		event_add(io->rev, NULL);
	return io;
}

struct ap_io *ap_io_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len,
                            SSL *ssl)
{
	struct ap_io *io;
	evutil_socket_t fd;

	if (ssl) {
		io = tls(base, -1, ssl, false);
		if (io && bufferevent_socket_connect(io->bev, sa, (int)len) != 0) {
			ap_io_free(io);
			return NULL;
		}
		return io;
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
		close(fd);
		return NULL;
	}
	if (!(io = plain(base, fd)))
		return NULL;
	io->connecting = true;
	event_add(io->wev, NULL);
	return io;
}

void ap_io_setcb(struct ap_io *io, ap_io_cb read_cb, ap_io_cb write_cb, ap_io_event_cb event_cb,
                 void *arg)
{
	io->read_cb = read_cb;
	io->write_cb = write_cb;
	io->event_cb = event_cb;
	io->arg = arg;
}

void ap_io_set_lowat(struct ap_io *io, size_t lowat)
{
	io->lowat = lowat;
	if (io->bev)
		bufferevent_setwatermark(io->bev, EV_WRITE, lowat, 0);
}

struct evbuffer *ap_io_in(struct ap_io *io)
{
	return io->in;
}

struct evbuffer *ap_io_out(struct ap_io *io)
{
	return io->out;
}

void ap_io_read(struct ap_io *io, bool on)
{
	if (io->reading == on || io->dead)
		return;
	io->reading = on;
	if (io->bev) {
		if (on)
			bufferevent_enable(io->bev, EV_READ);
		else
			bufferevent_disable(io->bev, EV_READ);
	} else if (!io->connecting) {
		if (on)
			event_add(io->rev, NULL);
		else
			event_del(io->rev);
	}
}

bool ap_io_tls_failed(struct ap_io *io)
{
	return io->tls_failed;
}

void ap_io_free(struct ap_io *io)
{
	if (!io || io->dead)
		return;
	io->dead = true;
	if (io->bev)
		bufferevent_disable(io->bev, EV_READ | EV_WRITE);
	else {
		event_del(io->rev);
		event_del(io->wev);
		event_del(io->kick);
	}
	if (io->depth == 0)
		release(io);
}
