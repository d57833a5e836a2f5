/* A non-blocking byte stream for the data path: an input and an output evbuffer, driven
 * by libevent events. Plain TCP is read up to 64 KB per system call (libevent 2.1's
 * bufferevents read 4 KB at a time, with a FIONREAD ioctl before each read) and written as
 * soon as the current callback returns, with an EV_WRITE event armed only while the socket
 * is full — the way nginx does it. TLS streams are a bufferevent_openssl underneath, with
 * the same interface. One owner: the conn (or the upstream pool) that holds it. */
#ifndef AP_IO_H
#define AP_IO_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "ap.h"

struct ap_io;

/* Events passed to the event callback. */
#define AP_IO_CONNECTED 0x01 /* an outgoing connection (or a TLS handshake) completed */
#define AP_IO_EOF       0x02 /* the peer closed its side */
#define AP_IO_ERROR     0x04 /* reset, refused, TLS failure, ... */

typedef void (*ap_io_cb)(struct ap_io *io, void *arg);
typedef void (*ap_io_event_cb)(struct ap_io *io, int what, void *arg);

/* Wraps the connected socket <fd> (taken over: closed by ap_io_free). With <ssl> (taken
 * over too) the stream speaks TLS, as the server side when <accepting>, else as the
 * client. NULL when out of memory (fd and ssl are then closed and freed). */
struct ap_io *ap_io_new(struct event_base *base, evutil_socket_t fd, SSL *ssl, bool accepting);

/* A new outgoing connection to <sa>: AP_IO_CONNECTED (or AP_IO_ERROR) follows. With <ssl>
 * the TLS handshake is part of connecting. NULL when no socket could be made. */
struct ap_io *ap_io_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len,
                            SSL *ssl);

/* <read_cb>: new input arrived. <write_cb>: output was written and what is left is at or
 * under the low-water mark (ap_io_set_lowat; 0 by default: all written). <event_cb>: see
 * AP_IO_*. Any may be NULL. Callbacks may free the stream. */
void ap_io_setcb(struct ap_io *io, ap_io_cb read_cb, ap_io_cb write_cb, ap_io_event_cb event_cb,
                 void *arg);
void ap_io_set_lowat(struct ap_io *io, size_t lowat);

struct evbuffer *ap_io_in(struct ap_io *io);
struct evbuffer *ap_io_out(struct ap_io *io);

/* Starts or stops reading (reading starts on). */
void ap_io_read(struct ap_io *io, bool on);

/* The TLS library reported an error on this stream (certificate, handshake). */
bool ap_io_tls_failed(struct ap_io *io);

/* Closes and frees the stream; safe from inside its own callbacks (the memory goes when
 * the callback returns). Queued output not yet written is lost. */
void ap_io_free(struct ap_io *io);

#endif
