/* cmd-records-sync.c — the commands of the central copy of the records
 * (docs/sync.md): `records sync [--once|--follow|--status]`, `records
 * verify --pg` and the central side of `records workorder`.  The work is
 * the station's (st_syncer, st_central_workorder_*: station/sync_cmds.c);
 * this file parses and prints. */
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"
#include "cli/cmd-records-sync.h"

/* ---- records sync ---- */

/* The login of a sync: the station's, its exit code kept for the end. */
struct sync_login {
	st_rec_cli *c;
	st_syncer *s;
	int hsm_code;           /* exit code when the HSM could not be opened */
};

static int sync_login(void *ctx)
{
	struct sync_login *l = ctx;

	l->hsm_code = l->c->login(l->c->ctx);
	return l->hsm_code;
}

/* The syncer of the station, or an exit code after saying why. */
static int open_syncer(st_rec_cli *c, st_store_mode mode, struct sync_login *l)
{
	char err[1024] = "";
	int rc;

	memset(l, 0, sizeof(*l));
	l->c = c;
	rc = st_syncer_open(c->st, mode, sync_login, l, &l->s, err, sizeof(err));
	if (rc)
		return st_say(rc == ST_E_DB || rc == ST_E_NOMEM ? ST_EXIT_RECORDS :
			      ST_EXIT_USAGE, "%s", err);
	return 0;
}

/* Say why the audit key could not sign, when that stopped a pass. */
static void say_audit_error(const struct sync_login *l)
{
	const char *why = st_syncer_audit_error(l->s);

	if (why)
		st_say(ST_EXIT_HSM, "sync: the audit key: %s", why);
}

static void print_result(const st_rec_cli *c, const st_sync_pass *res)
{
	printf("sync: station %s: %lld events shipped in %lld batch%s; the "
	       "central database holds events 1..%lld of %lld%s",
	       c->cfg->station_id, res->shipped, res->batches,
	       res->batches == 1 ? "" : "es", res->server_seq, res->local_seq,
	       res->server_seq == res->local_seq ? " (up to date)" : "");
	if (res->conflicts)
		printf("; %lld conflict%s raised", res->conflicts,
		       res->conflicts == 1 ? "" : "s");
	if (res->alerts_recorded)
		printf("; %lld alert%s recorded here", res->alerts_recorded,
		       res->alerts_recorded == 1 ? "" : "s");
	printf("\n");
	fflush(stdout);
}

/* --follow's report of one pass. */
static void on_follow(void *ctx, int rc, const st_sync_pass *res,
		      const char *err, int retry_ms)
{
	struct sync_login *l = ctx;

	if (rc) {
		say_audit_error(l);
		fprintf(stderr, "station: sync: %s; retrying in %d ms\n", err,
			retry_ms);
	} else {
		print_result(l->c, res);
	}
}

/* --follow: sync, wait, again, until SIGINT/SIGTERM (st_syncer_follow). */
static int follow(struct sync_login *l)
{
	char err[1024] = "";
	int rc = st_syncer_follow(l->s, on_follow, l, err, sizeof(err));

	if (!rc)
		return 0;
	/* retrying does not help: say it and stop */
	say_audit_error(l);
	st_say(ST_EXIT_RECORDS, "sync: %s", err);
	return rc == ST_E_HSM && l->hsm_code ? l->hsm_code :
	       rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS;
}

static int status(struct sync_login *l)
{
	st_sync_status st;
	char err[1024] = "";

	if (st_syncer_status(l->s, &st, err, sizeof(err)))
		return st_say(ST_EXIT_RECORDS, "sync: %s", err);
	printf("sync status: station %s\n"
	       "  local events:      %lld\n"
	       "  central database:  %lld (%s)\n"
	       "  lag:               %lld events, %lld units not yet shipped\n"
	       "  last success:      %s\n"
	       "  last error:        %s%s%s%s\n",
	       l->c->cfg->station_id, st.local, st.server, st.central, st.events,
	       st.units, st.last_ok[0] ? st.last_ok : "never",
	       st.last_error[0] ? st.last_error : "none",
	       st.last_error_at[0] ? " (" : "", st.last_error_at,
	       st.last_error_at[0] ? ")" : "");
	return 0;
}

int st_cmd_sync(st_rec_cli *c)
{
	struct sync_login l = { .c = c };
	int code;

	if (c->sync_once + c->sync_follow + c->sync_status > 1)
		return st_say(ST_EXIT_USAGE, "records sync: give one of --once, "
			      "--follow, --status");
	/* a station's sync service may start before its first run: a pass
	 * registers the station centrally over a store made for it */
	code = open_syncer(c, c->sync_status ? ST_STORE_READ : ST_STORE_CREATE, &l);
	if (code)
		goto cleanup;
	if (c->sync_status) {
		code = status(&l);
	} else if (c->sync_follow) {
		code = follow(&l);
	} else {
		char err[1024] = "";
		st_sync_pass res;
		int rc = st_syncer_pass(l.s, &res, err, sizeof(err));

		say_audit_error(&l);
		if (rc == ST_OK)
			print_result(c, &res);
		else if (rc == ST_E_HSM && l.hsm_code)
			code = l.hsm_code;
		else
			code = st_say(rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
				      "sync: %s (%lld events shipped before it)",
				      err, res.shipped);
	}
cleanup:
	st_syncer_close(l.s);
	return code;
}

/* ---- records workorder ---- */

int st_sync_workorder_put(st_rec_cli *c, const char *id, long quota)
{
	char err[1024] = "";
	bool central;
	int rc = st_central_workorder_put(c->st, id, quota, &central, err,
					  sizeof(err));

	if (rc)
		return st_say(rc == ST_E_CONFIG || rc == ST_E_EXISTS ? ST_EXIT_USAGE :
			      ST_EXIT_RECORDS, "%s", err);
	if (central)
		printf("work order %s is in the central database: its quota is "
		       "shared by every station\n", id);
	return 0;
}

int st_sync_workorder_show(st_rec_cli *c, const char *id)
{
	st_central_workorder w;
	char err[1024] = "";
	bool central;
	int rc = st_central_workorder_get(c->st, id, &w, &central, err, sizeof(err));

	if (rc)
		return st_say(rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS, "%s",
			      err);
	if (!central)
		return 0;
	if (w.error[0])
		printf("central: %s\n", w.error);
	else if (w.quota >= 0)
		printf("central: quota %ld, %ld reserved by all stations (%ld PASS), "
		       "%ld left; this station holds %ld pre-reserved\n", w.quota,
		       w.reserved, w.pass, w.quota - w.reserved, w.allowance);
	else
		printf("central: no quota, %ld PASS\n", w.pass);
	return 0;
}

/* ---- records units --component --pg ---- */

int st_sync_units_component(st_rec_cli *c, st_records_component_fn fn, void *ctx)
{
	struct sync_login l = { .c = c };
	char err[1024] = "";
	int code, rc;

	code = open_syncer(c, ST_STORE_READ, &l);
	if (code)
		return code;
	rc = st_syncer_units_with_component(l.s, c->component, fn, ctx, err,
					    sizeof(err));
	if (rc == ST_E_INVAL)
		code = st_say(ST_EXIT_USAGE, "records units: %s", err);
	else if (rc)
		code = st_say(ST_EXIT_RECORDS, "records units --pg: %s", err);
	st_syncer_close(l.s);
	return code;
}

/* ---- records verify --pg ---- */

int st_cmd_verify_pg(st_rec_cli *c)
{
	struct sync_login l = { .c = c };
	char err[1024] = "";
	st_pg_verify v;
	st_trust *t = NULL;
	int code, rc;

	/* every station's audit certificates: from the CAs given with
	 * --ca-cert (a fleet's, in one file), or else this token's */
	code = st_cli_trust_open(c->ctx, c->ca_cert, true, &t);
	if (code)
		return code;
	code = open_syncer(c, ST_STORE_READ, &l);
	if (code)
		goto cleanup;
	rc = st_syncer_verify_pg(l.s, t, &v, err, sizeof(err));
	if (rc == ST_OK) {
		printf("central records OK: %d station%s, %lld events; every "
		       "hash, link and signature checked, audit keys certified by "
		       "%s\n", v.stations, v.stations == 1 ? "" : "s", v.events,
		       st_trust_what(t));
	} else if (rc == ST_E_VERIFY) {
		/* the message names the event itself */
		printf("central records TAMPERED: station %s: %s%s\n",
		       v.bad_station, v.bad_seq ? "first bad record: " : "", err);
		code = ST_EXIT_RECORDS;
	} else {
		code = st_say(ST_EXIT_RECORDS, "verify --pg: %s", err);
	}
cleanup:
	st_syncer_close(l.s);
	st_trust_free(t);
	return code;
}
