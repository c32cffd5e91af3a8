/* cli.h — what the station's commands share: the command entry each
 * cli/cmd-*.c file declares (one each, in the tmux manner), the options
 * they are parsed into, what a command needs from the station, the one way
 * an error reaches the operator, and the --ca-cert check of audit
 * certificates that `records verify` and `records verify --pg` make.
 * cli/cmd.c holds the table of entries and the parsing. */
#ifndef ST_CLI_H
#define ST_CLI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "log.h"
#include "station/station.h"
#include "cli/cmd-profile.h"
#include "cli/cmd-records.h"

/* The exit codes (README "Exit codes"). */
#define ST_EXIT_UNIT_FAILED 1
#define ST_EXIT_USAGE 2
#define ST_EXIT_HSM 3
#define ST_EXIT_RECORDS 4
#define ST_EXIT_LINK 5

/* Every option the station knows, by its long name.  A command accepts
 * the global ones (CLI_GLOBAL_OPTS in cmd.c) and those its entry lists;
 * any other is an error naming the option and the command. */
enum cli_opt {
	O_NONE, /* ends an entry's list */
	/* global */
	O_CONFIG, O_PROFILE, O_RECORDS, O_CERT_DIR, O_MODULE, O_TOKEN, O_CA_KEY,
	O_PIN_FILE, O_JSON, O_VERBOSE, O_HELP, O_VERSION,
	/* per command */
	O_OPERATOR, O_SLOT, O_UNITS, O_TIMEOUT_MS, O_BURN_FUSES, O_DRY_RUN,
	O_CN, O_ORG, O_DAYS, O_OUT, O_WORK_ORDER, O_QUOTA, O_SINCE, O_UNTIL,
	O_RESULT, O_UID, O_FORMAT, O_EVIDENCE, O_CA_CERT, O_ANCHOR, O_ONCE,
	O_FOLLOW, O_STATUS, O_PG, O_CHECKPOINT, O_IN, O_CHAIN, O_KEY_TYPE,
	O_WATCH, O_PLUG_WAIT, O_LOG, O_KEY, O_PASSWORD_FILE, O_SUPERVISOR,
	O_SUPERVISOR_PASSWORD_FILE, O_REASON, O_REPROVISION, O_ROLE, O_BEFORE,
	O_COMPONENT, O_YES,
	O_MAX
};

/* What a command needs from the station, declared in its entry: the
 * dispatcher loads the configuration before exec, and the command opens
 * the store and logs in to the HSM through the station handle (cli_store,
 * cli_login) only as far as its entry allows; the dispatcher closes both
 * after exec.  A command that needs nothing gets no configuration. */
enum cli_need {
	CLI_NEED_CONFIG = 1 << 0,   /* the configuration, with the command line's
				     * overrides */
	CLI_NEED_STORE_RO = 1 << 1, /* the records, read */
	CLI_NEED_STORE_RW = 1 << 2, /* the records, written */
	CLI_NEED_HSM = 1 << 3,      /* a login to the token (the PIN) */
	CLI_NEED_STORE_NEW = 1 << 4, /* with _RW: starts a line, so the records
				     * are created when absent (docs/records.md,
				     * "Who creates the store"); without it a
				     * missing store is an error (exit 2) */
};

struct cli;

/* A subcommand: everything about it that is not its code, as a command
 * has.  The dispatcher picks it by its word, accepts only the global
 * options and its own, checks the count of the words after it, serves its
 * --help, and opens what it needs.  A subcommand with subs of its own
 * (records workorder create|show) is picked further by the next word. */
struct cli_sub {
	const char *name;
	const char *usage;            /* its usage line (after "station ") */
	const char *help;             /* what it does, one line */
	const enum cli_opt *options;  /* its own options, O_NONE-terminated */
	int min_args, max_args;       /* words after the subcommand */
	unsigned needs;               /* enum cli_need */
	/* Run with the parsed options in cli and the words after the
	 * subcommand in argv (argc of them, already counted); returns the
	 * exit code.  NULL with subs. */
	int (*exec)(struct cli *cli, int argc, char **argv);
	const struct cli_sub *subs;   /* its subcommands, {NULL} ended, or NULL */
};

/* One command: everything about it that is not its code.  A command with
 * subcommands declares its options, needs and exec on each of them. */
struct cli_entry {
	const char *name;
	const char *usage;            /* the usage lines (after "station ") */
	const char *help;             /* what it does, a sentence or two */
	const enum cli_opt *options;  /* its own options, O_NONE-terminated */
	const struct cli_sub *subs;   /* its subcommands, {NULL} ended, or NULL */
	unsigned needs;               /* enum cli_need (no subs) */
	/* Run with the parsed options in cli and the words after the command
	 * in argv; returns the exit code.  NULL with subs. */
	int (*exec)(struct cli *cli, int argc, char **argv);
};

/* The entries (cli/cmd-*.c), listed in cmd.c's table. */
extern const struct cli_entry cli_cmd_audit, cli_cmd_ca, cli_cmd_config,
	cli_cmd_crl, cli_cmd_devices, cli_cmd_doctor, cli_cmd_fuses, cli_cmd_init, cli_cmd_operator, cli_cmd_profile,
	cli_cmd_provision, cli_cmd_quarantine, cli_cmd_records, cli_cmd_tui;
extern const struct cli_entry cli_cmd_mes, cli_cmd_label;

/* Everything a command gets: the options it was given, parsed, and the
 * station.  Options not given keep their zero (quota: -1). */
struct cli {
	const struct cli_entry *entry;
	const struct cli_sub *sub;  /* the subcommand run, or NULL */
	char name[64];             /* "records workorder create": for messages */
	unsigned needs;            /* the entry's or the subcommand's */
	st_station *st;            /* over cfg; opened by the dispatcher */
	st_config cfg;             /* loaded when the entry needs it */
	const char *config_path;
	const char *pin_file;
	const char *operator_name; /* "unknown" when not given */
	const char *log_path;
	const char *check_profile; /* config check: --profile as given */
	const char *cn, *org, *out, *in, *chain, *key_type;
	int days;
	int timeout_ms;            /* 0: the configuration's */
	bool json, verbose, burn_fuses, dry_run, watch;
	bool yes;                  /* --yes: an armed run is confirmed (scripts) */
	char dates[3][32];         /* --since, --until, --before as the records
				    * write times (UTC) */
	int max_units;
	st_run run;
	st_rec_cli rec;            /* options of the records/audit commands */
	st_role_cli role;          /* options of profile/operator/crl/quarantine */
	bool reprovision;          /* --reprovision (with --supervisor, --reason) */
	pthread_mutex_t out_lock;
	st_log *log;               /* provision: journal, station.log_file or NULL */
};

/* Log in to the token through the station (the PIN from --pin-file,
 * STATION_PIN or a prompt; the PIN-count warning before and after), once;
 * the dispatcher logs out after exec.  0 or ST_EXIT_HSM after saying why.
 * Only for an entry with CLI_NEED_HSM; the command then asks the station
 * handle. */
int cli_login(struct cli *cli);

/* Open the records named in the configuration through the station, once:
 * read-only unless rw, created only for CLI_NEED_STORE_NEW; closed by the
 * dispatcher after exec.  0, ST_EXIT_USAGE when there is no store, or
 * ST_EXIT_RECORDS, after saying why.  Only for an entry with
 * CLI_NEED_STORE_RO or _RW; the command then asks the station handle. */
int cli_store(struct cli *cli, bool rw);

/* For cmd-records.c and cmd-profile.c: their option structs filled in from
 * cli, with the station and cli_login_station as their login. */
st_rec_cli *cli_rec(struct cli *cli);
st_role_cli *cli_role(struct cli *cli);

/* Where the configuration is when --config is not given: the file the
 * environment variable STATION_CONFIG names, else this one if it exists. */
#ifndef CLI_DEFAULT_CONFIG
#define CLI_DEFAULT_CONFIG "/etc/station/station.conf"
#endif

/* The configuration file to use without --config: STATION_CONFIG's
 * (*from = "STATION_CONFIG"), else CLI_DEFAULT_CONFIG when it exists
 * (*from = NULL), else NULL. */
const char *cli_default_config(const char **from);

/* The dispatcher: parse argv, run the command; the process exit code. */
int cli_main(int argc, char **argv);

/* "station: <message>" on stderr (what failed and what to do); returns
 * code, the exit code the caller passes on. */
int st_say(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The station's st_trust (st_trust_open) for --ca-cert ca_cert, or the
 * token's CAs, logging in (cli_login) when they are visible only then and
 * login says so.  0, or an exit code after saying why (no token reachable:
 * pass --ca-cert). */
int st_cli_trust_open(struct cli *cli, const char *ca_cert, bool login,
		      st_trust **out);

/* cli_login() without the handle, ctx the struct cli: a login callback. */
int cli_login_station(void *ctx);

#endif
