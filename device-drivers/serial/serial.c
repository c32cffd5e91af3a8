/* serial.c — raw termios transport: exclusive open, baud from the URI query,
 * poll()-bounded I/O, unplug detection. */
#include "device-drivers/serial/serial.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"

#define DEFAULT_BAUD 115200u

static const struct {
	unsigned baud;
	speed_t speed;
} bauds[] = {
	{ 9600, B9600 }, { 19200, B19200 }, { 38400, B38400 },
	{ 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
	{ 460800, B460800 }, { 921600, B921600 }, { 1000000, B1000000 },
	{ 2000000, B2000000 }, { 3000000, B3000000 }, { 4000000, B4000000 },
};

static int baud_speed(unsigned baud, speed_t *out)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(bauds); i++) {
		if (bauds[i].baud == baud) {
			*out = bauds[i].speed;
			return ST_OK;
		}
	}
	return ST_E_CONFIG;
}

/* Split "path?baud=N" into p->path and p->baud. */
static int parse_spec(serial_port *p, const char *spec, char *err, size_t errlen)
{
	const char *q = strchr(spec, '?');
	size_t plen = q ? (size_t)(q - spec) : strlen(spec);

	p->baud = DEFAULT_BAUD;
	if (plen == 0 || plen >= sizeof(p->path)) {
		snprintf(err, errlen, "bad serial port '%s'", spec);
		return ST_E_CONFIG;
	}
	memcpy(p->path, spec, plen);
	p->path[plen] = '\0';
	if (q) {
		char *end;
		unsigned long v;

		if (strncmp(q + 1, "baud=", 5) != 0) {
			snprintf(err, errlen, "unknown option '%s' for serial port %s "
				 "(only ?baud=N is known)", q + 1, p->path);
			return ST_E_CONFIG;
		}
		errno = 0;
		v = strtoul(q + 6, &end, 10);
		if (errno || end == q + 6 || *end || v > 4000000) {
			snprintf(err, errlen, "bad baud rate '%s' for %s", q + 6,
				 p->path);
			return ST_E_CONFIG;
		}
		p->baud = (unsigned)v;
	}
	return ST_OK;
}

int serial_open(serial_port *p, const char *spec, char *err, size_t errlen)
{
	struct termios tio;
	speed_t speed;
	int rc, fd = -1;

	p->fd = -1;
	rc = parse_spec(p, spec, err, errlen);
	if (rc != ST_OK)
		goto out;
	if (baud_speed(p->baud, &speed) != ST_OK) {
		snprintf(err, errlen, "unsupported baud rate %u for %s", p->baud,
			 p->path);
		rc = ST_E_CONFIG;
		goto out;
	}
	fd = open(p->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == EBUSY)
			snprintf(err, errlen, "%s is in use by another process",
				 p->path);
		else
			snprintf(err, errlen, "cannot open %s: %s%s", p->path,
				 strerror(errno), errno == EACCES ? " (is the user in "
				 "group station? see udev/70-station.rules)" : "");
		rc = errno == ENOENT ? ST_E_NOTFOUND : ST_E_IO;
		goto out;
	}
	if (!isatty(fd)) {
		snprintf(err, errlen, "%s is not a serial port", p->path);
		rc = ST_E_IO;
		goto out;
	}
	/* Two stations on one programmer would interleave frames: refuse.
	 * TIOCEXCL stops other opens; flock also covers root. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(err, errlen, "%s is in use by another process", p->path);
		rc = ST_E_IO;
		goto out;
	}
	if (tcgetattr(fd, &tio) < 0) {
		snprintf(err, errlen, "cannot read settings of %s: %s", p->path,
			 strerror(errno));
		rc = ST_E_IO;
		goto out;
	}
	cfmakeraw(&tio);
	tio.c_cflag |= CLOCAL | CREAD;
	tio.c_cflag &= ~(CSTOPB | CRTSCTS);
	tio.c_cc[VMIN] = 0;
	tio.c_cc[VTIME] = 0;
	cfsetispeed(&tio, speed);
	cfsetospeed(&tio, speed);
	if (tcsetattr(fd, TCSANOW, &tio) < 0) {
		snprintf(err, errlen, "cannot configure %s: %s", p->path,
			 strerror(errno));
		rc = ST_E_IO;
		goto out;
	}
	(void)ioctl(fd, TIOCEXCL); /* best effort: flock already guards us */
	tcflush(fd, TCIOFLUSH);    /* drop whatever a previous user left */
	p->fd = fd;
	fd = -1;
	rc = ST_OK;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

int serial_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms)
{
	serial_port *p = ctx;
	int64_t deadline = st_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

	for (;;) {
		struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
		int64_t left = deadline - st_now_ms();
		ssize_t n;
		int r;

		r = poll(&pfd, 1, left > 0 ? (int)left : 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ST_E_IO;
		if (r == 0)
			return 0;
		n = read(p->fd, buf, cap);
		if (n > 0)
			return (int)n;
		if (n == 0)
			return ST_E_UNPLUGGED;
		if (errno == EINTR || errno == EAGAIN)
			continue;
		return errno == EIO || errno == ENXIO || errno == ENODEV ?
		       ST_E_UNPLUGGED : ST_E_IO;
	}
}

int serial_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms)
{
	serial_port *p = ctx;
	int64_t deadline = st_now_ms() + timeout_ms;
	size_t off = 0;

	while (off < n) {
		struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
		int64_t left = deadline - st_now_ms();
		ssize_t w;
		int r;

		if (left <= 0)
			return ST_E_TIMEOUT;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ST_E_IO;
		if (r == 0)
			return ST_E_TIMEOUT;
		if (pfd.revents & (POLLHUP | POLLERR) && !(pfd.revents & POLLOUT))
			return ST_E_UNPLUGGED;
		w = write(p->fd, buf + off, n - off);
		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		return w < 0 && (errno == EIO || errno == ENXIO || errno == ENODEV) ?
		       ST_E_UNPLUGGED : ST_E_IO;
	}
	return ST_OK;
}

void serial_transport(serial_port *p, proto_transport *t)
{
	t->read = serial_read;
	t->write = serial_write;
	t->ctx = p;
	t->name = p->path;
}

void serial_close(serial_port *p)
{
	if (p->fd >= 0) {
		/* TIOCEXCL outlives us while anyone else holds the tty (a
		 * simulator keeps its pty slave open): clear it explicitly. */
		(void)ioctl(p->fd, TIOCNXCL);
		close(p->fd);
	}
	p->fd = -1;
}
