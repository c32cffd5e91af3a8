/* pin.c — getting the HSM PIN (or an operator's password) from a file,
 * the environment or a no-echo prompt.  Never from argv; the buffer is the
 * caller's to wipe. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "station/st_int.h"
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

/* The kernel's bounds of the environment block it shows as
 * /proc/self/environ (fields 50 and 51 of /proc/self/stat, after the
 * command name, which may itself hold spaces and parentheses). */
static int env_block(uintptr_t *start, uintptr_t *end)
{
	char buf[4096], *p;
	unsigned long long a = 0, b = 0;
	ssize_t n;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field = 2;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	while (*p && field < 50)
		if (*p++ == ' ')
			field++;
	if (field != 50 || sscanf(p, "%llu %llu", &a, &b) != 2 || a >= b)
		return -1;
	*start = (uintptr_t)a;
	*end = (uintptr_t)b;
	return 0;
}

/* Remove the secret variable name from the environment so that neither
 * children nor /proc/PID/environ show it.  Wiping the value alone leaves
 * "NAME=" and a run of NULs as long as the secret in the block the kernel
 * reads /proc/PID/environ from (its bounds are fixed at exec; moving them
 * needs CAP_SYS_RESOURCE), so the variables after it are moved down over
 * the whole entry (environ's pointers follow them) and only the block's
 * very end is left as NULs: where the entry was, and its name, are gone. */
static void env_scrub(const char *name)
{
	extern char **environ;
	size_t nlen = strlen(name), elen, tail;
	uintptr_t bs, be;
	char *v = getenv(name), *e, *next;

	if (!v)
		return;
	e = v - nlen - 1;
	elen = nlen + 1 + strlen(v) + 1;       /* NAME=value and its NUL */
	st_wipe(v, strlen(v));
	unsetenv(name);
	if (env_block(&bs, &be) || (uintptr_t)e < bs || (uintptr_t)e + elen > be ||
	    strncmp(e, name, nlen) || e[nlen] != '=') {
		/* set at run time (not in the exec block): the wipe was all */
		return;
	}
	next = e + elen;
	tail = (size_t)((char *)be - next);
	memmove(e, next, tail);
	for (char **p = environ; p && *p; p++)
		if ((uintptr_t)*p >= (uintptr_t)next && (uintptr_t)*p < be)
			*p -= elen;
	st_wipe(e + tail, elen);
}

int st_secret_get(const st_secret_src *src, char *pin, size_t cap, size_t *len,
		  char *err, size_t errlen)
{
	char buf[256];
	const char *env;
	int fd, rc;
	ssize_t n;

	if (src->file) {
		/* a secret left in the environment as well goes unread */
		env_scrub(src->env);
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
		/* Children and /proc/PID/environ need not see it any more. */
		env_scrub(src->env);
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
