/* cli.c — what the station's commands share (see cli.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "cli/cli.h"

int st_say(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("station: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

int st_cli_trust_open(struct cli *cli, const char *ca_cert, bool login,
		      st_trust **out)
{
	char err[1024] = "";
	int rc = st_trust_open(cli->st, ca_cert, login ? cli_login_station : NULL, cli,
			       out, err, sizeof(err));

	if (!rc)
		return 0;
	if (rc == ST_E_PIN)
		return ST_EXIT_HSM;     /* the login said why */
	if (rc == ST_E_NOMEM)
		return st_say(ST_EXIT_RECORDS, "%s", err);
	return st_say(rc == ST_E_IO ? ST_EXIT_USAGE : ST_EXIT_HSM, "verify: %s", err);
}
