/* serial.h — raw termios serial transport for the programmer protocol.
 *
 * Opens a tty (or pty) exclusively in raw 8N1 mode and moves bytes with
 * poll()-bounded reads and writes.  A vanished device (EOF, EIO, HUP) is
 * reported as ST_E_UNPLUGGED so the engine can tell a pulled cable from a
 * slow programmer.  Plugs into proto_transport via serial_transport(). */
#ifndef ST_SERIAL_H
#define ST_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "device-drivers/proto/proto.h"

typedef struct serial_port {
	int fd;             /* -1 when closed */
	unsigned baud;
	char path[256];     /* the device path, without the "?baud=" query */
} serial_port;

/* Open spec ("/dev/ttyUSB0" or "/dev/ttyUSB0?baud=115200"; default 115200)
 * non-blocking, without becoming its controlling terminal, raw, exclusive
 * (TIOCEXCL and flock, so a second station cannot interleave frames), and
 * with stale input flushed.  On failure err gets an operator message and
 * p->fd stays -1.  Returns ST_OK, ST_E_CONFIG (bad spec/baud), ST_E_NOTFOUND,
 * ST_E_IO (permission, busy, not a tty). */
int serial_open(serial_port *p, const char *spec, char *err, size_t errlen);

/* proto_transport.read for a serial_port ctx. */
int serial_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms);

/* proto_transport.write for a serial_port ctx. */
int serial_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms);

/* Fill t to run the protocol over p (p must outlive t). */
void serial_transport(serial_port *p, proto_transport *t);

/* Close the port; safe on a closed or zeroed-then-failed port. */
void serial_close(serial_port *p);

#endif
