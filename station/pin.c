/* pin.c — getting the HSM PIN from a file, the environment or a no-echo
 * prompt.  Never from argv; the buffer is the caller's to wipe. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"
#include "station.h"

/* Copy one line (without CR/LF) into pin; ST_E_INVAL if empty or too long. */
static int take_line(const char *src, size_t n, char *pin, size_t cap, size_t *len)
{
	while (n && (src[n - 1] == '\n' || src[n - 1] == '\r'))
		n--;
	for (size_t i = 0; i < n; i++)
		if (src[i] == '\n' || src[i] == '\r')
			n = i;
	if (!n || n > cap)
		return ST_E_INVAL;
	memcpy(pin, src, n);
	*len = n;
	return ST_OK;
}

/* Read the PIN from /dev/tty with echo off, restoring the terminal. */
static int prompt(const char *token_label, char *pin, size_t cap, size_t *len,
		  char *err, size_t errlen)
{
	struct termios old, quiet;
	char buf[256];
	ssize_t n = 0;
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC), rc = ST_E_INVAL;

	if (fd < 0) {
		snprintf(err, errlen, "no PIN given: set STATION_PIN, use --pin-file, "
			 "or run on a terminal to be asked");
		return ST_E_INVAL;
	}
	if (tcgetattr(fd, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= (tcflag_t)~(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	dprintf(fd, "PIN for HSM token '%s': ", token_label);
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	tcsetattr(fd, TCSAFLUSH, &old);
	dprintf(fd, "\n");
	close(fd);
	if (n > 0)
		rc = take_line(buf, (size_t)n, pin, cap, len);
	if (rc)
		snprintf(err, errlen, "no PIN entered");
	st_wipe(buf, sizeof(buf));
	return rc;
}

int st_pin_get(const char *pin_file, const char *token_label, char *pin,
	       size_t cap, size_t *len, char *err, size_t errlen)
{
	char buf[256];
	const char *env;
	int fd, rc;
	ssize_t n;

	if (pin_file) {
		fd = open(pin_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			snprintf(err, errlen, "cannot read PIN file %s: %s", pin_file,
				 strerror(errno));
			return ST_E_IO;
		}
		n = read(fd, buf, sizeof(buf));
		close(fd);
		rc = n > 0 ? take_line(buf, (size_t)n, pin, cap, len) : ST_E_INVAL;
		st_wipe(buf, sizeof(buf));
		if (rc)
			snprintf(err, errlen, "PIN file %s is empty or too long", pin_file);
		return rc;
	}
	env = getenv("STATION_PIN");
	if (env) {
		rc = take_line(env, strlen(env), pin, cap, len);
		/* Children (and /proc/self/environ) need not see it any more. */
		st_wipe((char *)env, strlen(env));
		unsetenv("STATION_PIN");
		if (rc)
			snprintf(err, errlen, "STATION_PIN is empty or too long");
		return rc;
	}
	return prompt(token_label, pin, cap, len, err, errlen);
}
