/* pin.c — getting the HSM PIN (or an operator's password) from a file,
 * the environment or a no-echo prompt.  Never from argv; the buffer is the
 * caller's to wipe. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "station/roles.h"

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

/* Read a secret from /dev/tty with echo off, restoring the terminal. */
static int prompt(const st_secret_src *src, char *pin, size_t cap, size_t *len,
		  char *err, size_t errlen)
{
	struct termios old, quiet;
	char buf[256];
	ssize_t n = 0;
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC), rc = ST_E_INVAL;
	bool restore = false;

	if (fd < 0) {
		snprintf(err, errlen, "no %s given: set %s, use %s, or run on a "
			 "terminal to be asked", src->what, src->env, src->file_opt);
		return ST_E_INVAL;
	}
	if (tcgetattr(fd, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= (tcflag_t)~(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		tcsetattr(fd, TCSAFLUSH, &quiet);
		restore = true;
	}
	dprintf(fd, "%s: ", src->prompt);
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &old);
	dprintf(fd, "\n");
	close(fd);
	if (n > 0)
		rc = take_line(buf, (size_t)n, pin, cap, len);
	if (rc)
		snprintf(err, errlen, "no %s entered", src->what);
	st_wipe(buf, sizeof(buf));
	return rc;
}

int st_secret_get(const st_secret_src *src, char *pin, size_t cap, size_t *len,
		  char *err, size_t errlen)
{
	char buf[256];
	const char *env;
	int fd, rc;
	ssize_t n;

	if (src->file) {
		fd = open(src->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			snprintf(err, errlen, "cannot read %s file %s: %s", src->what,
				 src->file, strerror(errno));
			return ST_E_IO;
		}
		n = read(fd, buf, sizeof(buf));
		close(fd);
		rc = n > 0 ? take_line(buf, (size_t)n, pin, cap, len) : ST_E_INVAL;
		st_wipe(buf, sizeof(buf));
		if (rc)
			snprintf(err, errlen, "%s file %s is empty or too long", src->what,
				 src->file);
		return rc;
	}
	env = getenv(src->env);
	if (env) {
		rc = take_line(env, strlen(env), pin, cap, len);
		/* Children (and /proc/self/environ) need not see it any more. */
		st_wipe((char *)env, strlen(env));
		unsetenv(src->env);
		if (rc)
			snprintf(err, errlen, "%s is empty or too long", src->env);
		return rc;
	}
	return prompt(src, pin, cap, len, err, errlen);
}

int st_pin_get(const char *pin_file, const char *token_label, char *pin,
	       size_t cap, size_t *len, char *err, size_t errlen)
{
	char ask[256];
	st_secret_src src = { .file = pin_file, .env = "STATION_PIN",
			      .file_opt = "--pin-file", .what = "PIN", .prompt = ask };

	snprintf(ask, sizeof(ask), "PIN for HSM token '%s'", token_label);
	return st_secret_get(&src, pin, cap, len, err, errlen);
}
