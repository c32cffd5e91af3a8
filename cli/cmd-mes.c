/* cmd-mes.c — `station mes send [--once|--follow|--status]`: the results of
 * the ended units to the plant's MES over HTTP(S), store-and-forward
 * (docs/integration.md); `station mes resend KEY...|all`: rejected units
 * again.  The work is the station's (st_mes_*:
 * station/mes.c); this file parses and prints, as cmd-records-sync.c does
 * for the PostgreSQL copy. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"

static int exec_send(struct cli *cli, int argc, char **argv);
static int exec_resend(struct cli *cli, int argc, char **argv);

static const struct cli_sub mes_subs[] = {
	{ .name = "send", .usage = "mes send [--once|--follow|--status]",
	  .help = "POST every ended unit's result to mes.url (--once: one pass, "
		  "the default; --follow: a service; --status: the lag)",
	  .options = (const enum cli_opt[]){ O_ONCE, O_FOLLOW, O_STATUS, O_NONE },
	  /* reads the records; its cursor is a file beside them */
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_send },
	{ .name = "resend", .usage = "mes resend KEY...|all",
	  .help = "send units the MES rejected for good again, once it is mended "
		  "(KEY: the idempotency key mes send --status lists; all: every "
		  "one); those it takes leave the rejected list",
	  .min_args = 1, .max_args = 64,
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_resend },
	{ NULL },
};

const struct cli_entry cli_cmd_mes = {
	.name = "mes",
	.usage = "mes send [--once|--follow|--status]\n"
		 "       station mes resend KEY...|all",
	.help = "Results to the plant's MES (the mes group of station.conf; "
		"docs/integration.md).",
	.subs = mes_subs,
};

static void print_pass(const struct cli *cli, const st_mes_result *res)
{
	if (res->rejected)
		fprintf(stderr, "station: mes: %lld unit%s rejected for good by the "
			"MES, not sent again (the last: %s); see mes send --status\n",
			res->rejected, res->rejected == 1 ? "" : "s", res->last_rejected);
	printf("mes: station %s: %lld unit%s sent", cli->cfg.station_id, res->sent,
	       res->sent == 1 ? "" : "s");
	if (res->rejected)
		printf(", %lld rejected", res->rejected);
	printf("; %lld waiting%s\n", res->pending, res->pending ? "" : " (up to date)");
	fflush(stdout);
}

static void on_follow(void *ctx, int rc, const st_mes_result *res,
		      const char *err, int retry_ms)
{
	struct cli *cli = ctx;

	if (rc)
		fprintf(stderr, "station: mes: %s; %lld waiting; retrying in %d ms\n",
			err, res->pending, retry_ms);
	else
		print_pass(cli, res);
}

static int status(struct cli *cli, st_mes *m)
{
	char err[1024] = "";
	st_mes_state s;

	if (st_mes_status(m, &s, err, sizeof(err)))
		return st_say(ST_EXIT_RECORDS, "mes: %s", err);
	printf("mes status: station %s -> %s\n"
	       "  acknowledged up to: event %lld (the store's last unit_end: %lld)\n"
	       "  lag:                %lld units not yet acknowledged\n"
	       "  last success:       %s\n"
	       "  last error:         %s%s%s%s\n",
	       cli->cfg.station_id, s.url, s.cursor, s.last, s.pending,
	       s.last_ok[0] ? s.last_ok : "never",
	       s.last_error[0] ? s.last_error : "none",
	       s.last_error_at[0] ? " (" : "", s.last_error_at,
	       s.last_error_at[0] ? ")" : "");
	printf("  rejected:           %lld unit%s refused for good by the MES%s\n",
	       s.rejected, s.rejected == 1 ? "" : "s", s.rejected ?
	       " (not sent again; mend them at the MES)" : "");
	if (s.rejected > s.nshown)
		printf("    (the newest %d)\n", s.nshown);
	for (int i = 0; i < s.nshown; i++) {
		const struct st_mes_rejected *d = &s.rejected_units[i];

		printf("    unit %lld (%s) device %s: HTTP %ld %s (%s)\n", d->unit_id,
		       d->key, d->uid, d->status, d->answer, d->at);
	}
	return 0;
}

/* The store and the connector, for send and resend: 0 and *m, or the
 * exit code (said). */
static int open_mes(struct cli *cli, st_mes **m)
{
	char err[1024] = "";
	int code = cli_store(cli, false), rc;

	if (code)
		return code;
	/* a broker or receiver gone mid-write is an EPIPE to retry, not the
	 * end of the process (libmosquitto writes with write(2)) */
	signal(SIGPIPE, SIG_IGN);
	rc = st_mes_open(cli->st, m, err, sizeof(err));
	if (rc)
		return st_say(rc == ST_E_DB || rc == ST_E_NOMEM ? ST_EXIT_RECORDS :
			      ST_EXIT_USAGE, "%s", err);
	return 0;
}

static int exec_send(struct cli *cli, int argc, char **argv)
{
	const st_rec_cli *o = &cli->rec;
	char err[1024] = "";
	st_mes *m = NULL;
	int rc, code;

	(void)argc;
	(void)argv;
	if (o->sync_once + o->sync_follow + o->sync_status > 1)
		return st_say(ST_EXIT_USAGE, "mes send: give one of --once, "
			      "--follow, --status");
	if ((code = open_mes(cli, &m)))
		return code;
	if (o->sync_status) {
		code = status(cli, m);
	} else if (o->sync_follow) {
		rc = st_mes_follow(m, on_follow, cli, err, sizeof(err));
		if (rc)
			code = st_say(ST_EXIT_RECORDS, "mes: %s", err);
	} else {
		st_mes_result res;

		rc = st_mes_pass(m, &res, err, sizeof(err));
		if (rc == ST_OK)
			print_pass(cli, &res);
		else
			code = st_say(rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
				      "mes: %s (%lld sent before it; %lld waiting, "
				      "kept for the next pass)", err, res.sent,
				      res.pending);
	}
	st_mes_close(m);
	return code;
}

static int exec_resend(struct cli *cli, int argc, char **argv)
{
	char err[1024] = "";
	st_mes *m = NULL;
	long long sent = 0, again = 0;
	int rc = ST_OK, code;

	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "all") && argc > 1)
			return st_say(ST_EXIT_USAGE, "mes resend: 'all' stands alone");
	if ((code = open_mes(cli, &m)))
		return code;
	for (int i = 0; i < argc && !rc; i++) {
		st_mes_result res;
		const char *key = strcmp(argv[i], "all") ? argv[i] : NULL;

		rc = st_mes_resend(m, key, &res, err, sizeof(err));
		sent += res.sent;
		again += res.rejected;
		if (res.rejected)
			fprintf(stderr, "station: mes: rejected again by the MES (the "
				"last: %s)\n", res.last_rejected);
	}
	if (rc == ST_E_NOTFOUND)
		code = st_say(ST_EXIT_USAGE, "mes resend: %s", err);
	else if (rc)
		code = st_say(rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
			      "mes: %s (%lld taken before it; it stays rejected, "
			      "to resend)", err, sent);
	printf("mes: station %s: %lld unit%s taken by the MES, %lld rejected "
	       "again\n", cli->cfg.station_id, sent, sent == 1 ? "" : "s", again);
	st_mes_close(m);
	return code;
}
