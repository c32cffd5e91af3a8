/* cmd-profile.h — the commands of signed profiles and roles (cmd-profile.c):
 * `station profile ...`, `operator ...`, `crl ...`, `quarantine ...`, and
 * the operator/supervisor check `provision` makes.  The dispatcher parses
 * the options and hands them over in a st_role_cli. */
#ifndef ST_CMD_PROFILE_H
#define ST_CMD_PROFILE_H

#include <stdbool.h>

#include "station/station.h"

typedef struct st_role_cli {
	const st_config *cfg;
	const char *in, *out;           /* --in FILE, --out FILE */
	const char *key_label;          /* --key LABEL (else trust.engineering_key) */
	const char *key_type;           /* --key-type for profile keygen */
	const char *operator_name;      /* --operator NAME (NULL: not given) */
	const char *password_file;      /* --password-file FILE */
	const char *supervisor_name;    /* --supervisor NAME */
	const char *supervisor_password_file; /* --supervisor-password-file FILE */
	const char *reason;             /* --reason TEXT */
	const char *uid;                /* --uid UID */
	const char *before;             /* --before DATE (close-interrupted) */
	const char *roles;              /* --role R[,R...] for operator hash */
	int days;                       /* --days N: CRL next update */
	void *ctx;
	st_station *st;                 /* the station: store and login stay its */
	/* Log the station in to the HSM (the PIN); 0 or an exit code after
	 * printing the reason. */
	int (*login)(void *ctx);
	/* Open the station's records; 0 or an exit code after saying why. */
	int (*store)(void *ctx, bool rw);
} st_role_cli;

/* The subcommands whose work is here, once the dispatcher picked them
 * (cli/cmd.c) and checked their options and words; each returns the exit
 * code.  station profile SUB (keygen|pubkey|sign|verify|install): */
int st_cmd_profile(st_role_cli *c, const char *sub);
/* station operator hash */
int st_cmd_operator(st_role_cli *c);
/* station crl export */
int st_cmd_crl(st_role_cli *c);
/* station quarantine release */
int st_cmd_quarantine(st_role_cli *c);
/* station records close-interrupted */
int st_cmd_close_interrupted(st_role_cli *c);

/* Warn on stderr when issued certificates belong to open units or to
 * units that did not pass and are not revoked (crl export, verify): those
 * of the station's store, or the tally t got with rc (err when rc). */
void st_warn_open_certs(st_station *st);
void st_warn_cert_tally(int rc, const st_cert_tally *t, const char *err);

/* Authenticate name for role against the signed operator list (password
 * from file, else the environment variable env, else a no-echo prompt).
 * A refusal is recorded (event auth_refused, signed with the audit key of
 * the station's token) and printed; returns 0 or the exit code. */
int st_cli_authenticate(st_station *st, const char *name, const char *file,
			const char *env, unsigned role);

#endif
