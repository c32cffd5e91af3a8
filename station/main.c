/* main.c — the station command line: a table of subcommands.
 *
 *   station provision --slot PORT [--slot PORT ...] [--burn-fuses] [--json]
 *   station ca init | ca show
 *   station tui
 *
 * Exit codes (also in README): 0 all units PASS; 1 a unit FAILED or was
 * QUARANTINED; 2 usage, configuration or profile error; 3 HSM error (module,
 * token, PIN, CA); 4 records error; 5 a programmer/link error stopped a
 * slot.  Progress goes to stderr; results to stdout. */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base.h"
#include "hsm/hsm.h"
#include "records/records.h"
#include "station/station.h"
#include "ui/ui.h"

enum {
	EXIT_UNIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_HSM = 3,
	EXIT_RECORDS = 4,
	EXIT_LINK = 5,
};

/* Everything a command needs, parsed from argv and the configuration. */
struct cli {
	st_config cfg;
	const char *config_path;
	const char *pin_file;
	const char *operator_name;
	const char *log_path;
	const char *cn, *org, *out;
	int days;
	bool json, verbose, burn_fuses;
	int max_units;
	st_run run;
	pthread_mutex_t out_lock;
};

struct command {
	const char *name;
	int (*fn)(struct cli *cli, int argc, char **argv);
	const char *usage;
};

static void usage(FILE *f);

/* Print an error for the operator: what failed and what to do. */
static int die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("station: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Open the HSM named in the configuration and log in. */
static int open_hsm(struct cli *cli, hsm **out)
{
	char pin[256], err[512] = "";
	size_t pinlen = 0;
	const char *warn;
	int rc;

	*out = NULL;
	rc = st_pin_get(cli->pin_file, cli->cfg.token_label, pin, sizeof(pin), &pinlen,
			err, sizeof(err));
	if (rc)
		return die(EXIT_HSM, "HSM: %s", err);
	rc = st_hsm_login(&cli->cfg, pin, pinlen, out, err, sizeof(err));
	st_wipe(pin, sizeof(pin));
	if (rc == ST_E_PIN)
		return die(EXIT_HSM, "HSM: %s; not retried — a locked token stops the "
			   "line. Check the PIN and try again", err);
	if (rc)
		return die(EXIT_HSM, "HSM: %s", err);
	warn = hsm_pin_warning(*out);
	if (warn)
		fprintf(stderr, "station: warning: %s\n", warn);
	return 0;
}

/* Print one engine event, human or JSON; called from slot workers. */
static void on_event(const st_event *ev, void *ctx)
{
	struct cli *cli = ctx;
	json_t *o = NULL;

	pthread_mutex_lock(&cli->out_lock);
	switch (ev->kind) {
	case ST_EV_SLOT_READY:
		if (cli->verbose || !cli->json)
			fprintf(stderr, "slot %d %s: programmer ready (%s)\n", ev->slot,
				ev->port, ev->detail);
		break;
	case ST_EV_UNIT_START:
		if (cli->verbose || !cli->json)
			fprintf(stderr, "slot %d: unit %s started\n", ev->slot, ev->uid);
		break;
	case ST_EV_STEP:
		if (cli->verbose || (!cli->json && strcmp(ev->outcome, "ok")))
			fprintf(stderr, "slot %d: unit %s: %-11s %-4s %s\n", ev->slot,
				ev->uid ? ev->uid : "-", ev->step, ev->outcome, ev->detail);
		break;
	case ST_EV_UNIT_DONE:
		if (cli->json) {
			o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:I}",
				      "event", "unit", "slot", ev->slot, "port", ev->port,
				      "uid", ev->uid, "result", ev->result,
				      "cert_serial", ev->cert_serial,
				      "cert_sha256", ev->cert_sha256, "fuses", ev->fuses,
				      "reason", ev->detail, "ms", (json_int_t)ev->elapsed_ms);
		} else if (!strcmp(ev->result, "PASS")) {
			printf("slot %d: unit %s PASS  cert %s  fuses %s  (%lld ms)\n",
			       ev->slot, ev->uid, ev->cert_serial,
			       ev->fuses ? ev->fuses : "-", (long long)ev->elapsed_ms);
		} else {
			printf("slot %d: unit %s %s: %s\n", ev->slot, ev->uid, ev->result,
			       ev->detail ? ev->detail : "");
		}
		break;
	case ST_EV_SLOT_ERROR:
		if (cli->json)
			o = json_pack("{s:s, s:i, s:s, s:s, s:s}", "event", "slot_error",
				      "slot", ev->slot, "port", ev->port, "error",
				      st_strerror(ev->err), "message", ev->detail);
		else
			fprintf(stderr, "station: %s\n", ev->detail);
		break;
	case ST_EV_SLOT_DONE:
		if (cli->verbose)
			fprintf(stderr, "slot %d: done\n", ev->slot);
		break;
	case ST_EV_SLOT_IDLE: /* interactive runs only (the UI) */
	case ST_EV_UNIT_HELD:
		break;
	}
	if (o) {
		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	}
	fflush(stdout);
	pthread_mutex_unlock(&cli->out_lock);
}

/* station provision: run the units in the given slots. */
static int cmd_provision(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	st_profile *prof = NULL;
	rec_store *rec = NULL;
	hsm *h = NULL;
	st_summary sum;
	int rc, code;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return die(EXIT_USAGE, "provision: give each programmer with --slot PORT");
	if (st_profile_load(cli->cfg.profile_path, &prof, err, sizeof(err)))
		return die(EXIT_USAGE, "profile: %s", err);
	rc = rec_open(cli->cfg.records_path, &rec);
	if (rc) {
		code = die(EXIT_RECORDS, "records: cannot open %s: %s",
			   cli->cfg.records_path, rec ? rec_errmsg(rec) : st_strerror(rc));
		goto cleanup;
	}
	code = open_hsm(cli, &h);
	if (code)
		goto cleanup;
	cli->run.max_units = cli->max_units;
	cli->run.burn_fuses = cli->burn_fuses;
	cli->run.operator_name = cli->operator_name;
	rc = st_provision(h, rec, &cli->cfg, prof, &cli->run, on_event, cli, &sum,
			  err, sizeof(err));
	if (rc) {
		code = die(EXIT_HSM, "%s", err);
		goto cleanup;
	}
	if (cli->json) {
		json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:s}",
				      "event", "summary", "pass", sum.pass, "fail", sum.fail,
				      "quarantine", sum.quarantine, "skipped", sum.skipped,
				      "slot_errors", sum.slot_errors + sum.record_errors,
				      "records", cli->cfg.records_path);

		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	} else {
		printf("summary: %d PASS, %d FAIL, %d QUARANTINE, %d skipped (already done)"
		       "%s; records in %s%s%s\n", sum.pass, sum.fail, sum.quarantine,
		       sum.skipped, sum.slot_errors ? "; a slot stopped on an error" : "",
		       cli->cfg.records_path, cli->cfg.cert_dir ? ", certificates in " : "",
		       cli->cfg.cert_dir ? cli->cfg.cert_dir : "");
	}
	code = sum.record_errors ? EXIT_RECORDS : sum.slot_errors ? EXIT_LINK :
	       (sum.fail || sum.quarantine) ? EXIT_UNIT_FAILED : 0;
cleanup:
	hsm_close(h);
	rec_close(rec);
	st_profile_free(prof);
	return code;
}

/* station ca init | ca show */
static int cmd_ca(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	hsm_session *s = NULL;
	hsm *h = NULL;
	int code, rc;

	if (argc != 1 || (strcmp(argv[0], "init") && strcmp(argv[0], "show")))
		return die(EXIT_USAGE, "ca: say 'ca init' or 'ca show'");
	code = open_hsm(cli, &h);
	if (code)
		return code;
	rc = hsm_session_open(h, &s);
	if (rc) {
		code = die(EXIT_HSM, "HSM: %s", hsm_errmsg(h));
		goto cleanup;
	}
	if (!strcmp(argv[0], "init")) {
		rc = st_ca_init(s, cli->cfg.ca_label, cli->cn ? cli->cn : "Station Issuing CA",
				cli->org ? cli->org : "Station Factory", cli->days ? cli->days : 3650,
				cli->out, err, sizeof(err));
		if (!rc)
			printf("CA '%s' created in token '%s'%s%s\n", cli->cfg.ca_label,
			       cli->cfg.token_label, cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
	} else {
		rc = st_ca_show(s, cli->cfg.ca_label, stdout, err, sizeof(err));
	}
	code = rc ? die(EXIT_HSM, "ca %s: %s", argv[0], err) : 0;
cleanup:
	hsm_session_close(s);
	hsm_close(h);
	return code;
}

/* station tui: the technician's terminal UI over the given slots.  The
 * guard process forks first, so it holds nothing the UI opens. */
static int cmd_tui(struct cli *cli, int argc, char **argv)
{
	char err[512] = "", logpath[4096];
	st_profile *prof = NULL;
	rec_store *rec = NULL;
	ui_opts o = { .cfg = &cli->cfg, .ports = cli->run.ports,
		      .nslots = cli->run.nslots, .log_path = cli->log_path };
	int rc, code;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return die(EXIT_USAGE, "tui: give each programmer with --slot PORT");
	if (!isatty(0) || !isatty(1))
		return die(EXIT_USAGE, "tui: needs a terminal; use 'station provision' "
			   "in scripts");
	if (!o.log_path) {
		snprintf(logpath, sizeof(logpath), "%s.tui.log", cli->cfg.records_path);
		o.log_path = logpath;
	}
	if (ui_guard(o.log_path, &code))
		return code < 0 ? die(EXIT_USAGE, "tui: cannot fork") : code;
	if (st_profile_load(cli->cfg.profile_path, &prof, err, sizeof(err)))
		return die(EXIT_USAGE, "profile: %s", err);
	rc = rec_open(cli->cfg.records_path, &rec);
	if (rc) {
		code = die(EXIT_RECORDS, "records: cannot open %s: %s",
			   cli->cfg.records_path, rec ? rec_errmsg(rec) : st_strerror(rc));
		goto cleanup;
	}
	o.prof = prof;
	o.rec = rec;
	code = ui_main(&o);
cleanup:
	rec_close(rec);
	st_profile_free(prof);
	return code;
}

static int cmd_help(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	usage(stdout);
	return 0;
}

static const struct command commands[] = {
	{ "provision", cmd_provision,
	  "provision --slot PORT [--slot PORT...] [--units N] [--burn-fuses] [--json]" },
	{ "ca", cmd_ca, "ca init [--cn NAME] [--org ORG] [--days N] [--out FILE] | ca show" },
	{ "tui", cmd_tui, "tui --slot PORT [--slot PORT...] [--log FILE]   (the technician's "
	  "terminal UI; also 'station --slot PORT...' on a terminal)" },
	{ "help", cmd_help, "help" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: station [--config FILE] [--profile FILE] [--records FILE]\n"
		   "               [--module PATH] [--token LABEL] [--pin-file FILE] COMMAND\n"
		   "commands:\n");
	for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "The HSM PIN comes from --pin-file, the STATION_PIN environment variable,\n"
		   "or a no-echo prompt; never from the command line.\n"
		   "exit codes: 0 all PASS, 1 unit failed/quarantined, 2 usage/config,\n"
		   "            3 HSM, 4 records, 5 programmer/link\n");
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "profile", required_argument, NULL, 'p' },
		{ "records", required_argument, NULL, 'r' },
		{ "cert-dir", required_argument, NULL, 'D' },
		{ "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },
		{ "ca-key", required_argument, NULL, 'k' },
		{ "pin-file", required_argument, NULL, 'P' },
		{ "operator", required_argument, NULL, 'o' },
		{ "slot", required_argument, NULL, 's' },
		{ "units", required_argument, NULL, 'n' },
		{ "timeout-ms", required_argument, NULL, 'T' },
		{ "burn-fuses", no_argument, NULL, 'B' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "cn", required_argument, NULL, 'C' },
		{ "org", required_argument, NULL, 'O' },
		{ "days", required_argument, NULL, 'd' },
		{ "out", required_argument, NULL, 'W' },
		{ "log", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct later { int opt; const char *val; } later[32];
	struct cli cli = { .operator_name = "unknown" };
	char err[512] = "";
	const struct command *cmd = NULL;
	int c, nlater = 0, code, timeout = 0;
	struct rlimit nocore = { 0, 0 };

	/* Secrets must not end up in a core dump. */
	setrlimit(RLIMIT_CORE, &nocore);
	prctl(PR_SET_DUMPABLE, 0);
	pthread_mutex_init(&cli.out_lock, NULL);

	while ((c = getopt_long(argc, argv, "c:p:r:vjh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cli.config_path = optarg; break;
		case 'P': cli.pin_file = optarg; break;
		case 'o': cli.operator_name = optarg; break;
		case 'B': cli.burn_fuses = true; break;
		case 'j': cli.json = true; break;
		case 'v': cli.verbose = true; break;
		case 'C': cli.cn = optarg; break;
		case 'O': cli.org = optarg; break;
		case 'W': cli.out = optarg; break;
		case 'L': cli.log_path = optarg; break;
		case 'd': cli.days = atoi(optarg); break;
		case 'T': timeout = atoi(optarg); break;
		case 'n':
			cli.max_units = atoi(optarg);
			if (cli.max_units < 1)
				return die(EXIT_USAGE, "--units must be a positive number");
			break;
		case 's':
			if (cli.run.nslots >= ST_MAX_SLOTS)
				return die(EXIT_USAGE, "at most %d slots", ST_MAX_SLOTS);
			cli.run.ports[cli.run.nslots++] = optarg;
			break;
		case 'h': usage(stdout); return 0;
		case 'p': case 'r': case 'D': case 'm': case 't': case 'k':
			if (nlater < (int)ST_ARRAY_SIZE(later))
				later[nlater++] = (struct later){ c, optarg };
			break;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	/* getopt_long permutes argv: options may come before or after the
	 * command word; what is left is the command and its arguments. */
	if (optind < argc) {
		for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
			if (!strcmp(argv[optind], commands[i].name))
				cmd = &commands[i];
		if (!cmd)
			return die(EXIT_USAGE, "unknown command '%s' (try 'station help')",
				   argv[optind]);
		optind++;
	}
	/* Plain 'station --slot PORT...' on a terminal: the UI. */
	if (!cmd && cli.run.nslots > 0 && isatty(0) && isatty(1))
		for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
			if (!strcmp(commands[i].name, "tui"))
				cmd = &commands[i];
	if (!cmd) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (st_config_load(cli.config_path, &cli.cfg, err, sizeof(err)))
		return die(EXIT_USAGE, "configuration: %s", err);
	for (int i = 0; i < nlater; i++) {
		char **field = later[i].opt == 'p' ? &cli.cfg.profile_path :
			       later[i].opt == 'r' ? &cli.cfg.records_path :
			       later[i].opt == 'D' ? &cli.cfg.cert_dir :
			       later[i].opt == 'm' ? &cli.cfg.hsm_module :
			       later[i].opt == 't' ? &cli.cfg.token_label : &cli.cfg.ca_label;

		if (override(field, later[i].val)) {
			st_config_free(&cli.cfg);
			return die(EXIT_USAGE, "out of memory");
		}
	}
	if (timeout)
		cli.cfg.timeout_ms = timeout;
	code = cmd->fn(&cli, argc - optind, argv + optind);
	st_config_free(&cli.cfg);
	pthread_mutex_destroy(&cli.out_lock);
	return code;
}
