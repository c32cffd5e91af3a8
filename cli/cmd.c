/* cmd.c — the table of commands and the one parser they share.
 *
 * Each command is one const entry in its own cli/cmd-*.c (name, usage,
 * help, its own options, its subcommands, what it needs from the station,
 * exec).  Options may come before or after the command word, as they
 * always could; once the command is known, an option that is neither
 * global nor the command's own is an error naming both.  Numbers and dates
 * are checked whole here, so a command gets only values it can use. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

#ifndef ST_VERSION
#define ST_VERSION "unknown"
#endif

/* The commands, in the order `station help` lists them. */
static const struct cli_entry *const cmd_table[] = {
	&cli_cmd_provision,
	&cli_cmd_ca,
	&cli_cmd_devices,
	&cli_cmd_doctor,
	&cli_cmd_fuses,
	&cli_cmd_audit,
	&cli_cmd_records,
	&cli_cmd_tui,
	&cli_cmd_config,
	&cli_cmd_init,
	&cli_cmd_profile,
	&cli_cmd_operator,
	&cli_cmd_crl,
	&cli_cmd_quarantine,
	&cli_cmd_mes,
	&cli_cmd_label,
};

/* Every option: its long name, whether it takes a value (and what to call
 * it in help), and one line of help. */
static const struct cli_optdef {
	const char *name;
	const char *arg;       /* NULL: a flag */
	const char *help;
} optdefs[O_MAX] = {
	[O_CONFIG] = { "config", "FILE", "the station configuration (station.conf)" },
	[O_PROFILE] = { "profile", "FILE", "the product profile (instead of the configured one)" },
	[O_RECORDS] = { "records", "FILE", "the records database (instead of records.path)" },
	[O_CERT_DIR] = { "cert-dir", "DIR", "PEM copies of issued certificates" },
	[O_MODULE] = { "module", "PATH", "the PKCS#11 module" },
	[O_TOKEN] = { "token", "LABEL", "the token" },
	[O_CA_KEY] = { "ca-key", "LABEL", "the issuing CA's label in the token" },
	[O_PIN_FILE] = { "pin-file", "FILE", "the HSM user PIN (else STATION_PIN, else a prompt)" },
	[O_JSON] = { "json", NULL, "JSON lines on stdout" },
	[O_VERBOSE] = { "verbose", NULL, "every step on stderr" },
	[O_HELP] = { "help", NULL, "this help" },
	[O_VERSION] = { "version", NULL, "the station's version" },
	[O_OPERATOR] = { "operator", "NAME", "who runs it (authenticated with an operator list)" },
	[O_SLOT] = { "slot", "PORT", "a programmer (driver:port), once per slot" },
	[O_UNITS] = { "units", "N", "at most N units per slot" },
	[O_TIMEOUT_MS] = { "timeout-ms", "MS", "programmer timeout (else programmer.timeout_ms)" },
	[O_BURN_FUSES] = { "burn-fuses", NULL, "arm: burn the profile's fuses and lock the units" },
	[O_DRY_RUN] = { "dry-run", NULL, "only print each unit's fuse plan" },
	[O_CN] = { "cn", "NAME", "the CA's common name" },
	[O_ORG] = { "org", "ORG", "the CA's organisation" },
	[O_DAYS] = { "days", "N", "validity in days" },
	[O_OUT] = { "out", "FILE", "where the output goes" },
	[O_WORK_ORDER] = { "work-order", "ID", "the work order (its quota)" },
	[O_QUOTA] = { "quota", "N", "units the work order allows" },
	[O_SINCE] = { "since", "DATE", "from DATE (YYYY-MM-DD[THH:MM[:SS][Z|+HH:MM]], "
		      "today, yesterday, '2d ago', -3h)" },
	[O_UNTIL] = { "until", "DATE", "up to DATE (as --since)" },
	[O_RESULT] = { "result", "R", "only units with this result (PASS, FAIL, ...)" },
	[O_UID] = { "uid", "UID", "the device" },
	[O_FORMAT] = { "format", "F", "table, jsonl or csv" },
	[O_EVIDENCE] = { "evidence", "DIR", "write the evidence pack to DIR" },
	[O_CA_CERT] = { "ca-cert", "FILE", "the CA certificate(s) audit certificates chain to" },
	[O_ANCHOR] = { "anchor", "HASH", "a head hash the chain must still hold" },
	[O_CHECKPOINT] = { "checkpoint", "FILE", "a signed checkpoint the chain must still hold" },
	[O_ONCE] = { "once", NULL, "sync once and end" },
	[O_FOLLOW] = { "follow", NULL, "keep syncing" },
	[O_STATUS] = { "status", NULL, "what the last sync did, and the lag" },
	[O_PG] = { "pg", NULL, "the central PostgreSQL copy" },
	[O_IN] = { "in", "FILE", "the input file" },
	[O_CHAIN] = { "chain", "FILE", "the CA certificate's chain" },
	[O_KEY_TYPE] = { "key-type", "T", "p256, p384, rsa3072 or ed25519" },
	[O_WATCH] = { "watch", NULL, "one line per programmer arriving or leaving" },
	[O_PLUG_WAIT] = { "plug-wait", "SECONDS", "wait this long for an absent programmer (USB)" },
	[O_LOG] = { "log", "FILE", "the UI's log file" },
	[O_KEY] = { "key", "LABEL", "the engineering key (else trust.engineering_key)" },
	[O_PASSWORD_FILE] = { "password-file", "FILE", "the password (else STATION_PASSWORD, else a prompt)" },
	[O_SUPERVISOR] = { "supervisor", "NAME", "the supervisor who decides it" },
	[O_SUPERVISOR_PASSWORD_FILE] = { "supervisor-password-file", "FILE",
		"the supervisor's password (else STATION_SUPERVISOR_PASSWORD, else a prompt)" },
	[O_REASON] = { "reason", "TEXT", "why (recorded)" },
	[O_REPROVISION] = { "reprovision", NULL, "provision a device again (a supervisor decides)" },
	[O_ROLE] = { "role", "R[,R...]", "operator, supervisor, engineer" },
	[O_BEFORE] = { "before", "DATE", "only units started before DATE" },
	[O_COMPONENT] = { "component", "NAME[@VERSION]", "a component of the images' SBOMs" },
	[O_YES] = { "yes", NULL, "an armed run is confirmed (scripts; else asked on the terminal)" },
};

/* Accepted by every command (before or after the command word). */
static const enum cli_opt global_opts[] = {
	O_CONFIG, O_PROFILE, O_RECORDS, O_CERT_DIR, O_MODULE, O_TOKEN, O_CA_KEY,
	O_PIN_FILE, O_JSON, O_VERBOSE, O_HELP, O_VERSION, O_NONE,
};

static bool listed(const enum cli_opt *list, enum cli_opt o)
{
	for (; list && *list != O_NONE; list++)
		if (*list == o)
			return true;
	return false;
}

static const struct cli_entry *find_command(const char *name)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(cmd_table); i++)
		if (!strcmp(cmd_table[i]->name, name))
			return cmd_table[i];
	return NULL;
}

/* The options of list, one a line, for a command's help. */
static void print_options(FILE *f, const enum cli_opt *list)
{
	for (; list && *list != O_NONE; list++) {
		const struct cli_optdef *d = &optdefs[*list];
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", d->name, d->arg ? " " : "",
			 d->arg ? d->arg : "");
		fprintf(f, "  %-32s %s\n", left, d->help);
	}
}

static void global_help(FILE *f)
{
	fprintf(f, "\nglobal options (any command): --config FILE, --pin-file FILE, "
		   "--json, --verbose,\n  --profile, --records, --cert-dir, --module, "
		   "--token, --ca-key; 'station --help' says more\n");
}

/* The words of subs, "a, b, c", for a message. */
static void sub_names(const struct cli_sub *subs, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (const struct cli_sub *s = subs; s->name && n < len; s++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", s->name);
}

/* `station COMMAND --help`, `station help COMMAND`: that command only; with
 * subcommands, each one's usage and what it does. */
static void command_help(FILE *f, const struct cli_entry *e)
{
	fprintf(f, "usage: station %s\n\n%s\n", e->usage, e->help);
	if (e->subs) {
		fprintf(f, "\nsubcommands ('station %s SUBCOMMAND --help' says more):\n",
			e->name);
		for (const struct cli_sub *s = e->subs; s->name; s++)
			fprintf(f, "  %-20s %s\n", s->name, s->help);
	}
	if (e->options && e->options[0] != O_NONE) {
		fprintf(f, "\noptions of %s:\n", e->name);
		print_options(f, e->options);
	}
	global_help(f);
}

/* `station CMD SUB --help`, `station help CMD SUB`: that subcommand only,
 * named name ("records list"). */
static void sub_help(FILE *f, const char *name, const struct cli_sub *s)
{
	fprintf(f, "usage: station %s\n\n%s\n", s->usage, s->help);
	if (s->subs) {
		fprintf(f, "\nsubcommands ('station %s SUBCOMMAND --help' says more):\n",
			name);
		for (const struct cli_sub *c = s->subs; c->name; c++)
			fprintf(f, "  %-20s %s\n", c->name, c->help);
	}
	if (s->options && s->options[0] != O_NONE) {
		fprintf(f, "\noptions of %s:\n", name);
		print_options(f, s->options);
	}
	global_help(f);
}

/* Pick the subcommand of e that the words at argv[*i..argc) name, as deep
 * as its tables go, into *out (NULL: e has none), its name ("records
 * workorder create") into cli->name.  With help, stop at the last word
 * that names one (help of that level).  0, or ST_EXIT_USAGE after saying
 * what is missing or unknown and which subcommands there are. */
static int pick_sub(struct cli *cli, const struct cli_entry *e, int argc,
		    char **argv, int *i, bool help, const struct cli_sub **out)
{
	const struct cli_sub *subs = e->subs, *s = NULL;
	char names[256];

	snprintf(cli->name, sizeof(cli->name), "%s", e->name);
	while (subs) {
		const struct cli_sub *found = NULL;

		if (*i >= argc && help)
			break;
		sub_names(subs, names, sizeof(names));
		if (*i >= argc)
			return st_say(ST_EXIT_USAGE, "%s: say which: %s (see 'station "
				      "help %s')", cli->name, names, cli->name);
		for (const struct cli_sub *c = subs; c->name; c++)
			if (!strcmp(c->name, argv[*i]))
				found = c;
		if (!found)
			return st_say(ST_EXIT_USAGE, "%s: unknown subcommand '%s'; %s "
				      "has: %s (see 'station help %s')", cli->name,
				      argv[*i], cli->name, names, cli->name);
		s = found;
		(*i)++;
		snprintf(cli->name + strlen(cli->name), sizeof(cli->name) -
			 strlen(cli->name), " %s", s->name);
		subs = s->subs;
	}
	*out = s;
	return 0;
}

/* Help for the command e and, when named, its subcommand s. */
static void help_of(FILE *f, const struct cli *cli, const struct cli_entry *e,
		    const struct cli_sub *s)
{
	if (s)
		sub_help(f, cli->name, s);
	else
		command_help(f, e);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: station [--config FILE] [--profile FILE] [--records FILE]\n"
		   "               [--module PATH] [--token LABEL] [--pin-file FILE] COMMAND\n"
		   "commands:\n");
	for (size_t i = 0; i < ST_ARRAY_SIZE(cmd_table); i++)
		fprintf(f, "  %s\n", cmd_table[i]->usage);
	fprintf(f, "  help [COMMAND [SUBCOMMAND]]   (its usage and options; also COMMAND [SUB] --help)\n"
		   "The HSM PIN comes from --pin-file, the STATION_PIN environment variable,\n"
		   "or a no-echo prompt; never from the command line.  Passwords likewise:\n"
		   "--password-file / STATION_PASSWORD, --supervisor-password-file /\n"
		   "STATION_SUPERVISOR_PASSWORD, or a prompt.\n"
		   "exit codes: 0 all PASS (unarmed: PASS or UNFUSED), 1 unit\n"
		   "            failed/quarantined, 2 usage/config,\n"
		   "            3 HSM, 4 records, 5 programmer/link\n");
}

/* A whole decimal number in [lo, hi] from v; -1 when v is anything else. */
static int parse_num(const char *v, long lo, long hi, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (!*v || *end || errno || n < lo || n > hi)
		return -1;
	*out = n;
	return 0;
}

/* n digits at s. */
static bool digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static int num2(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* An ISO 8601 date (YYYY-MM-DD) or date-time (…THH:MM[:SS[.frac]] with
 * an optional Z or ±HH:MM), a day that exists, as seconds since 1970 (a
 * time without a zone is UTC, as the records show their times) and the
 * milliseconds; *date_only when it was a day alone. */
static bool iso_date(const char *s, time_t *t, int *ms, bool *date_only)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	struct tm tm = { 0 };
	int y, mo, d, off = 0;
	const char *p;

	*ms = 0;
	*date_only = false;
	if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
	    !digits(s + 8, 2))
		return false;
	y = atoi(s);
	mo = num2(s + 5);
	d = num2(s + 8);
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
		return false;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return false;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	p = s + 10;
	if (!*p) {
		*date_only = true;
		goto done;
	}
	if ((*p != 'T' && *p != ' ') || !digits(p + 1, 2) || p[3] != ':' ||
	    !digits(p + 4, 2) || num2(p + 1) > 23 || num2(p + 4) > 59)
		return false;
	tm.tm_hour = num2(p + 1);
	tm.tm_min = num2(p + 4);
	p += 6;
	if (*p == ':') {
		if (!digits(p + 1, 2) || num2(p + 1) > 60)
			return false;
		tm.tm_sec = num2(p + 1);
		p += 3;
		if (*p == '.') {
			int scale = 100;

			if (!digits(++p, 1))
				return false;
			for (; digits(p, 1); p++, scale /= 10)
				*ms += (*p - '0') * scale;
		}
	}
	if (*p == 'Z') {
		if (p[1])
			return false;
	} else if (*p == '+' || *p == '-') {
		if (!digits(p + 1, 2) || p[3] != ':' || !digits(p + 4, 2) || p[6] ||
		    num2(p + 1) > 23 || num2(p + 4) > 59)
			return false;
		off = (num2(p + 1) * 60 + num2(p + 4)) * 60 * (*p == '-' ? -1 : 1);
	} else if (*p) {
		return false;
	}
done:
	*t = timegm(&tm) - off;
	return true;
}

/* A time a person types: an ISO 8601 date or date-time (iso_date), or
 * relative to now — "now", "today" and "yesterday" (their start, UTC, as
 * the records keep time), "N{m,h,d,w} ago", "N {minutes,hours,days,weeks}
 * ago" or "-N{m,h,d,w}".  out (32 bytes) gets it as the records write
 * times (YYYY-MM-DDTHH:MM:SS.mmmZ, UTC), so that comparing strings is
 * comparing times.  false for anything else. */
static bool parse_when(const char *v, struct timespec ts, char out[32])
{
	static const struct { const char *word; long secs; } units[] = {
		{ "m", 60 }, { "min", 60 }, { "minute", 60 }, { "minutes", 60 },
		{ "h", 3600 }, { "hour", 3600 }, { "hours", 3600 },
		{ "d", 86400 }, { "day", 86400 }, { "days", 86400 },
		{ "w", 604800 }, { "week", 604800 }, { "weeks", 604800 },
	};
	bool date_only, minus = v[0] == '-';
	char unit[16] = "", ago[8] = "", extra, day[24];
	time_t now = ts.tv_sec, t = now;
	struct tm tm;
	long n = -1;
	int ms = 0;

	if (iso_date(v, &t, &ms, &date_only)) {
		(void)date_only;
	} else if (!strcmp(v, "now")) {
		t = now;
		ms = (int)(ts.tv_nsec / 1000000);  /* "now" is now, not its second */
	} else if (!strcmp(v, "today") || !strcmp(v, "yesterday")) {
		t = now - now % 86400 - (v[0] == 'y' ? 86400 : 0);
	} else {
		const char *p = minus ? v + 1 : v;
		int used = 0;
		size_t i;

		if (!digits(p, 1) ||
		    sscanf(p, "%ld%n", &n, &used) != 1 || n < 0 || n > 100000)
			return false;
		p += used;
		if (*p == ' ')
			p++;
		if (sscanf(p, "%15[a-z]%n", unit, &used) != 1)
			return false;
		p += used;
		if (minus ? *p != '\0' :
		    sscanf(p, " %7s %c", ago, &extra) != 1 || strcmp(ago, "ago"))
			return false;
		for (i = 0; i < ST_ARRAY_SIZE(units); i++)
			if (!strcmp(unit, units[i].word))
				break;
		if (i == ST_ARRAY_SIZE(units))
			return false;
		t = now - (time_t)(n * units[i].secs);
		ms = (int)(ts.tv_nsec / 1000000);
	}
	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
		return false;
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 32, "%.19s.%03uZ", day, (unsigned)ms % 1000u);
	return true;
}

/* A date option's value, parsed strictly into buf (32 bytes); 0, or
 * ST_EXIT_USAGE naming the option and saying what it takes. */
static int date_opt(const char *opt, const char *v, char *buf, const char **to)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	if (!parse_when(v, now, buf))
		return st_say(ST_EXIT_USAGE, "--%s: '%s' is not a date or time: give "
			      "YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM] (UTC without "
			      "a zone), today, yesterday, now, '2d ago', '3 hours ago' or "
			      "-2d", opt, v);
	*to = buf;
	return 0;
}

/* Replace a configuration string with a command-line value. */
static int override(char **field, const char *value)
{
	char *v = strdup(value);

	if (!v)
		return -1;
	free(*field);
	*field = v;
	return 0;
}

/* One option's value into cli, checked.  0, or ST_EXIT_USAGE after saying
 * why (naming the option). */
static int apply(struct cli *cli, enum cli_opt o, const char *v)
{
	long n;

	switch (o) {
	case O_CONFIG: cli->config_path = v; break;
	case O_PIN_FILE: cli->pin_file = v; break;
	case O_OPERATOR: cli->operator_name = cli->role.operator_name = v; break;
	case O_KEY: cli->role.key_label = v; break;
	case O_PASSWORD_FILE: cli->role.password_file = v; break;
	case O_SUPERVISOR: cli->role.supervisor_name = v; break;
	case O_SUPERVISOR_PASSWORD_FILE: cli->role.supervisor_password_file = v; break;
	case O_REASON: cli->role.reason = v; break;
	case O_REPROVISION: cli->reprovision = true; break;
	case O_COMPONENT: cli->rec.component = v; break;
	case O_ROLE: cli->role.roles = v; break;
	case O_BEFORE:
		return date_opt("before", v, cli->dates[2], &cli->role.before);
	case O_BURN_FUSES: cli->burn_fuses = true; break;
	case O_DRY_RUN: cli->dry_run = true; break;
	case O_YES: cli->yes = true; break;
	case O_JSON: cli->json = true; break;
	case O_VERBOSE: cli->verbose = true; break;
	case O_WATCH: cli->watch = true; break;
	case O_PLUG_WAIT:
		if (parse_num(v, 1, INT_MAX / 1000, &n))
			return st_say(ST_EXIT_USAGE, "--plug-wait needs a number of "
				      "seconds > 0");
		cli->run.plug_wait_ms = (int)n * 1000;
		break;
	case O_CN: cli->cn = v; break;
	case O_ORG: cli->org = v; break;
	case O_OUT: cli->out = v; break;
	case O_IN: cli->in = v; break;
	case O_CHAIN: cli->chain = v; break;
	case O_KEY_TYPE: cli->key_type = v; break;
	case O_LOG: cli->log_path = v; break;
	case O_DAYS:
		if (parse_num(v, 1, 36500, &n))
			return st_say(ST_EXIT_USAGE, "--days needs a number of days "
				      "1..36500, not '%s'", v);
		cli->days = (int)n;
		break;
	case O_TIMEOUT_MS:
		if (parse_num(v, 1, 3600000, &n))
			return st_say(ST_EXIT_USAGE, "--timeout-ms needs a number of "
				      "milliseconds 1..3600000, not '%s'", v);
		cli->timeout_ms = (int)n;
		break;
	case O_UNITS:
		if (parse_num(v, 1, INT_MAX, &n))
			return st_say(ST_EXIT_USAGE, "--units must be a positive number");
		cli->max_units = (int)n;
		break;
	case O_SLOT:
		if (cli->run.nslots >= ST_MAX_SLOTS)
			return st_say(ST_EXIT_USAGE, "at most %d slots", ST_MAX_SLOTS);
		cli->run.ports[cli->run.nslots++] = v;
		break;
	case O_WORK_ORDER: cli->rec.work_order = v; break;
	case O_QUOTA:
		if (parse_num(v, 0, LONG_MAX, &n))
			return st_say(ST_EXIT_USAGE, "--quota must be a number >= 0");
		cli->rec.quota = n;
		break;
	case O_SINCE:
		return date_opt("since", v, cli->dates[0], &cli->rec.since);
	case O_UNTIL:
		return date_opt("until", v, cli->dates[1], &cli->rec.until);
	case O_RESULT: cli->rec.result = v; break;
	case O_UID: cli->rec.uid = v; break;
	case O_FORMAT: cli->rec.format = v; break;
	case O_EVIDENCE: cli->rec.evidence = v; break;
	case O_CA_CERT: cli->rec.ca_cert = v; break;
	case O_ANCHOR: cli->rec.anchor = v; break;
	case O_ONCE: cli->rec.sync_once = true; break;
	case O_FOLLOW: cli->rec.sync_follow = true; break;
	case O_STATUS: cli->rec.sync_status = true; break;
	case O_PG: cli->rec.pg = true; break;
	case O_CHECKPOINT: cli->rec.checkpoint = v; break;
	/* applied to the configuration once it is loaded */
	case O_PROFILE: case O_RECORDS: case O_CERT_DIR: case O_MODULE:
	case O_TOKEN: case O_CA_KEY:
	case O_HELP: case O_VERSION: case O_NONE: case O_MAX:
		break;
	}
	return 0;
}

int cli_login(struct cli *cli)
{
	char pin[256], err[512] = "";
	size_t pinlen = 0;
	const char *warn;
	int rc;

	if (st_station_logged_in(cli->st))
		return 0;
	if (!(cli->needs & CLI_NEED_HSM))
		return st_say(ST_EXIT_HSM, "%s does not use the HSM", cli->name);
	rc = st_station_hsm_open(cli->st, err, sizeof(err));
	if (rc)
		return st_say(ST_EXIT_HSM, "HSM: %s", err);
	/* Before the attempt too: on a final try the operator should know that
	 * a wrong PIN now locks the token and stops the line. */
	warn = st_station_pin_warning(cli->st);
	if (warn)
		fprintf(stderr, "station: warning: token '%s': %s\n", cli->cfg.token_label,
			warn);
	rc = st_pin_get(cli->pin_file, cli->cfg.token_label, pin, sizeof(pin), &pinlen,
			err, sizeof(err));
	if (rc) {
		st_say(ST_EXIT_HSM, "HSM: %s", err);
		goto fail;
	}
	rc = st_station_hsm_auth(cli->st, pin, pinlen, err, sizeof(err));
	st_wipe(pin, sizeof(pin));
	if (rc == ST_E_PIN) {
		st_say(ST_EXIT_HSM, "HSM: %s; not retried — a locked token stops the "
		       "line. Check the PIN and try again", err);
		goto fail;
	}
	if (rc) {
		st_say(ST_EXIT_HSM, "HSM: %s", err);
		goto fail;
	}
	warn = st_station_pin_warning(cli->st);
	if (warn)
		fprintf(stderr, "station: warning: %s\n", warn);
	return 0;
fail:
	st_station_logout(cli->st);
	return ST_EXIT_HSM;
}

int cli_store(struct cli *cli, bool rw)
{
	char err[1200] = "";
	int rc;

	if (!(cli->needs & (rw ? CLI_NEED_STORE_RW :
			    CLI_NEED_STORE_RO | CLI_NEED_STORE_RW)))
		return st_say(ST_EXIT_RECORDS, "%s does not use the records",
			      cli->name);
	rc = st_station_store_open(cli->st, !rw ? ST_STORE_READ :
				   cli->needs & CLI_NEED_STORE_NEW ? ST_STORE_CREATE :
				   ST_STORE_WRITE, err, sizeof(err));
	if (rc == ST_E_NOTFOUND)
		return st_say(ST_EXIT_USAGE, "%s", err);
	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: %s", err);
	return 0;
}

st_rec_cli *cli_rec(struct cli *cli)
{
	cli->rec.cfg = &cli->cfg;
	cli->rec.ctx = cli;
	cli->rec.st = cli->st;
	cli->rec.login = cli_login_station;
	cli->rec.out = cli->out;
	cli->rec.config_path = cli->config_path;
	return &cli->rec;
}

int cli_login_station(void *ctx)
{
	return cli_login(ctx);
}

/* The store of st_role_cli: the station's, kept by it. */
static int role_store(void *ctx, bool rw)
{
	return cli_store(ctx, rw);
}

st_role_cli *cli_role(struct cli *cli)
{
	cli->role.cfg = &cli->cfg;
	cli->role.ctx = cli;
	cli->role.st = cli->st;
	cli->role.login = cli_login_station;
	cli->role.store = role_store;
	cli->role.out = cli->out;
	cli->role.in = cli->in;
	cli->role.key_type = cli->key_type;
	cli->role.uid = cli->rec.uid;
	cli->role.days = cli->days;
	return &cli->role;
}

const char *cli_default_config(const char **from)
{
	const char *env = getenv("STATION_CONFIG");

	if (env && *env) {
		*from = "STATION_CONFIG";
		return env;
	}
	*from = NULL;
	return access(CLI_DEFAULT_CONFIG, F_OK) == 0 ? CLI_DEFAULT_CONFIG : NULL;
}

/* Load the configuration for an entry that needs it, with the command
 * line's overrides and the run defaults.  Without --config: the file
 * STATION_CONFIG names, else CLI_DEFAULT_CONFIG; with neither there is no
 * station to speak of, and the command says where it looked rather than
 * running on built-in defaults (a records store in the working directory,
 * a separate one per directory, defeats the one-identity check).  0 or an
 * exit code. */
static int load_config(struct cli *cli, const enum cli_opt *given_o,
		       char *const *given_v, int ngiven)
{
	const char *from = "--config";
	char err[512] = "";

	if (!cli->config_path) {
		cli->config_path = cli_default_config(&from);
		if (!cli->config_path)
			return st_say(ST_EXIT_USAGE, _("no configuration: STATION_CONFIG is not "
				      "set and %s does not exist; give --config FILE, set "
				      "STATION_CONFIG, or write one with 'station init'"),
				      CLI_DEFAULT_CONFIG);
		if (!from)
			from = "the default";
	}
	if (st_config_load(cli->config_path, &cli->cfg, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "configuration (%s): %s", from, err);
	for (int i = 0; i < ngiven; i++) {
		enum cli_opt o = given_o[i];
		char **field = o == O_PROFILE ? &cli->cfg.profile_path :
			       o == O_RECORDS ? &cli->cfg.records_path :
			       o == O_CERT_DIR ? &cli->cfg.cert_dir :
			       o == O_MODULE ? &cli->cfg.hsm_module :
			       o == O_TOKEN ? &cli->cfg.token_label :
			       o == O_CA_KEY ? &cli->cfg.ca_label : NULL;

		if (field && override(field, given_v[i]))
			return st_say(ST_EXIT_USAGE, "out of memory");
		if (o == O_CA_KEY &&
		    st_config_key_label(&cli->cfg.ca_label, err, sizeof(err)))
			return st_say(ST_EXIT_USAGE, "--ca-key: %s", err);
	}
	if (cli->timeout_ms)
		cli->cfg.timeout_ms = cli->timeout_ms;
	/* The configuration's slots and run defaults, unless the command line
	 * says otherwise. */
	if (!cli->run.nslots)
		for (int i = 0; i < cli->cfg.nslots; i++)
			cli->run.ports[cli->run.nslots++] = cli->cfg.slots[i].uri;
	cli->burn_fuses = cli->burn_fuses || cli->cfg.burn_fuses;
	if (!cli->max_units)
		cli->max_units = cli->cfg.units;
	if (!cli->run.plug_wait_ms)
		cli->run.plug_wait_ms = cli->cfg.plug_wait_ms;
	return 0;
}

int cli_main(int argc, char **argv)
{
	struct option longopts[O_MAX + 1];
	enum cli_opt given_o[128];
	char *given_v[128];
	struct cli cli = { .operator_name = "unknown", .rec = { .quota = -1 } };
	const struct cli_entry *cmd = NULL;
	const struct cli_sub *sub = NULL;
	int (*exec)(struct cli *, int, char **);
	struct rlimit nocore = { 0, 0 };
	bool help = false, version = false;
	int c, nlong = 0, ngiven = 0, code;

	/* Secrets must not end up in a core dump. */
	setrlimit(RLIMIT_CORE, &nocore);
	st_i18n_init();
	prctl(PR_SET_DUMPABLE, 0);

	for (int o = 1; o < O_MAX; o++)
		longopts[nlong++] = (struct option){ optdefs[o].name,
			optdefs[o].arg ? required_argument : no_argument, NULL, 0x100 + o };
	longopts[nlong] = (struct option){ NULL, 0, NULL, 0 };
	/* getopt_long permutes argv: options may come before or after the
	 * command word; what is left is the command and its arguments. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:p:r:vjh", longopts, NULL)) != -1) {
		enum cli_opt o;

		switch (c) {
		case 'c': o = O_CONFIG; break;
		case 'p': o = O_PROFILE; break;
		case 'r': o = O_RECORDS; break;
		case 'v': o = O_VERBOSE; break;
		case 'j': o = O_JSON; break;
		case 'h': o = O_HELP; break;
		case ':':
			return st_say(ST_EXIT_USAGE, _("option '%s' needs a value"),
				      argv[optind - 1]);
		case '?':
			if (optopt)
				return st_say(ST_EXIT_USAGE, _("unknown option '-%c' (try "
					      "'station help')"), optopt);
			return st_say(ST_EXIT_USAGE, _("unknown option '%s' (try 'station "
				      "help')"), argv[optind - 1]);
		default:
			o = (enum cli_opt)(c - 0x100);
			break;
		}
		if (o == O_HELP)
			help = true;
		else if (o == O_VERSION)
			version = true;
		if (ngiven >= (int)ST_ARRAY_SIZE(given_o))
			return st_say(ST_EXIT_USAGE, "too many options");
		given_o[ngiven] = o;
		given_v[ngiven++] = optarg;
	}
	if (version) {
		printf("station %s\n", ST_VERSION);
		return 0;
	}
	if (optind < argc && !strcmp(argv[optind], "help")) {
		int i = optind + 2;

		if (optind + 1 >= argc) {
			usage(stdout);
			return 0;
		}
		cmd = find_command(argv[optind + 1]);
		if (!cmd)
			return st_say(ST_EXIT_USAGE, "unknown command '%s' (try 'station "
				      "help')", argv[optind + 1]);
		code = pick_sub(&cli, cmd, argc, argv, &i, true, &sub);
		if (code)
			return code;
		if (i < argc)
			return st_say(ST_EXIT_USAGE, "help %s: '%s' is not a subcommand",
				      cli.name, argv[i]);
		help_of(stdout, &cli, cmd, sub);
		return 0;
	}
	if (optind < argc) {
		cmd = find_command(argv[optind]);
		if (!cmd)
			return st_say(ST_EXIT_USAGE, _("unknown command '%s' (try 'station help')"),
				      argv[optind]);
		optind++;
		code = pick_sub(&cli, cmd, argc, argv, &optind, help, &sub);
		if (code)
			return code;
	}
	if (help) {
		if (cmd)
			help_of(stdout, &cli, cmd, sub);
		else
			usage(stdout);
		return 0;
	}
	/* Plain 'station --slot PORT...' on a terminal: the UI. */
	for (int i = 0; !cmd && i < ngiven; i++)
		if (given_o[i] == O_SLOT && isatty(0) && isatty(1))
			cmd = &cli_cmd_tui;
	if (!cmd) {
		usage(stderr);
		return ST_EXIT_USAGE;
	}
	if (!sub)
		snprintf(cli.name, sizeof(cli.name), "%s", cmd->name);
	/* A command (a subcommand) sees only the global options and its own. */
	for (int i = 0; i < ngiven; i++)
		if (!listed(global_opts, given_o[i]) &&
		    !listed(sub ? sub->options : cmd->options, given_o[i]))
			return st_say(ST_EXIT_USAGE, "--%s is not an option of '%s' (see "
				      "'station %s --help')", optdefs[given_o[i]].name,
				      cli.name, cli.name);
	if (sub && (argc - optind < sub->min_args || argc - optind > sub->max_args))
		return st_say(ST_EXIT_USAGE, "%s: %s (usage: station %s)", cli.name,
			      argc - optind < sub->min_args ? "missing argument" :
			      "too many arguments", sub->usage);
	for (int i = 0; i < ngiven; i++) {
		code = apply(&cli, given_o[i], given_v[i]);
		if (code)
			return code;
	}
	cli.entry = cmd;
	cli.sub = sub;
	cli.needs = sub ? sub->needs : cmd->needs;
	exec = sub ? sub->exec : cmd->exec;
	if (!(cli.needs & CLI_NEED_CONFIG)) {
		/* config check lists a bad configuration instead of refusing it. */
		for (int i = 0; i < ngiven; i++)
			if (given_o[i] == O_PROFILE)
				cli.check_profile = given_v[i];
		return exec(&cli, argc - optind, argv + optind);
	}
	code = load_config(&cli, given_o, given_v, ngiven);
	if (!code && st_station_new(&cli.cfg, cli.config_path, &cli.st))
		code = st_say(ST_EXIT_USAGE, "out of memory");
	if (!code) {
		pthread_mutex_init(&cli.out_lock, NULL);
		code = exec(&cli, argc - optind, argv + optind);
		pthread_mutex_destroy(&cli.out_lock);
	}
	/* what the command opened through the station: the HSM, the store */
	st_station_close(cli.st);
	st_config_free(&cli.cfg);
	return code;
}
