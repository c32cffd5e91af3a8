/* cmd_sync.c — the commands of the central copy of the records
 * (docs/sync.md): `records sync [--once|--follow|--status]`, `records
 * verify --pg` and the central side of `records workorder`.  The sync
 * configuration, its state file and the shared quota are the engine's
 * (station/sync.c); PostgreSQL itself is records/pgsync.c. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "records/pgsync.h"
#include "station/checkpoint.h"
#include "cli/cli.h"
#include "cli/cmd-records-sync.h"
#include "station/sync.h"

/* ---- records sync ---- */

struct syncer {
	st_rec_cli *c;
	st_sync_cfg scfg;
	rec_store *r;
	hsm *h;
	st_audit *a;
	int hsm_code;           /* exit code when the HSM could not be opened */
};

/* Before the first local write (an alert): log in and sign with the
 * station's audit key, so the chain stays verifiable. */
static int ready(void *ctx, rec_store *r)
{
	struct syncer *s = ctx;
	char err[512] = "";
	int rc;

	if (s->a)
		return ST_OK;
	if (!s->h && (s->hsm_code = s->c->login(s->c->ctx)))
		return ST_E_HSM;
	s->h = st_station_hsm(s->c->st);
	rc = st_audit_attach(s->h, r, s->c->cfg, &s->a, err, sizeof(err));
	if (rc)
		st_say(ST_EXIT_HSM, "sync: the audit key: %s", err);
	return rc;
}

static void syncer_close(struct syncer *s)
{
	st_audit_detach(s->r, s->a);
	rec_close(s->r);          /* s->h is the station's: it closes it */
	st_sync_config_free(&s->scfg);
}

static int open_syncer(st_rec_cli *c, struct syncer *s)
{
	char err[512] = "";
	int rc;

	memset(s, 0, sizeof(*s));
	s->c = c;
	if (st_sync_config_load(c->config_path, &s->scfg, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "configuration: %s", err);
	if (!s->scfg.configured)
		return st_say(ST_EXIT_USAGE, "sync: the configuration%s%s has no 'sync' "
			      "group: give sync.conninfo (see docs/sync.md)",
			      c->config_path ? " " : "", c->config_path ?
			      c->config_path : "");
	rc = rec_open(c->cfg->records_path, &s->r);
	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: cannot open %s: %s",
			      c->cfg->records_path, s->r ? rec_errmsg(s->r) :
			      st_strerror(rc));
	return 0;
}

/* The checkpoints of this station in its checkpoint directory that the
 * central database does not have yet (above its newest one) go there
 * first, so a chain that lost its tail since is seen by the same pass. */
static int ship_checkpoints(struct syncer *s, pgs *p)
{
	char dir[4096], path[4400], err[512];
	struct dirent *d;
	long long mark = 0;
	DIR *dp;
	int rc;

	st_checkpoint_dir(s->c->cfg, dir, sizeof(dir));
	dp = opendir(dir);
	if (!dp)
		return ST_OK;   /* none written yet */
	rc = pgs_checkpoint_mark(p, &mark);
	while (!rc && (d = readdir(dp))) {
		size_t n = strlen(d->d_name), siglen = 0;
		rec_checkpoint cp;
		uint8_t *sig = NULL;
		char *body = NULL, hex[200];

		if (n < 6 || strcmp(d->d_name + n - 5, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		if (st_checkpoint_read(path, &body, &sig, &siglen, err, sizeof(err)) ||
		    rec_checkpoint_parse(body, &cp) ||
		    strcmp(cp.station, s->c->cfg->station_id) || cp.seq <= mark ||
		    siglen == 0 || siglen * 2 >= sizeof(hex)) {
			free(body);
			free(sig);
			continue;       /* not this station's, or shipped */
		}
		st_hex(sig, siglen, hex);
		rc = pgs_checkpoint_put(p, body, hex);
		free(body);
		free(sig);
	}
	closedir(dp);
	return rc;
}

/* One connection and one pass; the outcome goes to the state file. */
static int sync_once(struct syncer *s, pgs **p, pgs_result *res)
{
	pgs_opts o = st_sync_opts(&s->scfg, s->c->cfg);
	int rc = ST_OK;

	if (!pgs_ok(*p)) {
		pgs_close(*p);
		*p = NULL;
		rc = pgs_connect(&o, p);
	}
	if (!rc)
		rc = ship_checkpoints(s, *p);
	if (!rc)
		rc = pgs_sync(*p, s->r, ready, s, res);
	st_sync_note_result(s->c->cfg, res, rc ? pgs_errmsg(*p) : NULL);
	return rc;
}

static void print_result(const st_rec_cli *c, const pgs_result *res)
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

/* --follow: sync, wait, again; after a failure wait twice as long each
 * time (from 0.5 s up to sync.backoff_max_ms); SIGINT/SIGTERM end it. */
static int follow(struct syncer *s)
{
	int backoff = 500, wait_ms;
	sigset_t stop, old;
	pgs *p = NULL;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	for (;;) {
		pgs_result res = { 0 };
		struct timespec ts;
		int rc = sync_once(s, &p, &res);

		if (rc == ST_E_HSM || rc == ST_E_VERIFY || rc == ST_E_CONFIG) {
			/* retrying does not help: say it and stop */
			st_say(ST_EXIT_RECORDS, "sync: %s", pgs_errmsg(p));
			pgs_close(p);
			sigprocmask(SIG_SETMASK, &old, NULL);
			return rc == ST_E_HSM && s->hsm_code ? s->hsm_code :
			       rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS;
		}
		if (rc) {
			fprintf(stderr, "station: sync: %s; retrying in %d ms\n",
				pgs_errmsg(p), backoff);
			wait_ms = backoff;
			backoff = backoff * 2 > s->scfg.backoff_max_ms ?
				  s->scfg.backoff_max_ms : backoff * 2;
		} else {
			if (res.shipped || res.alerts_recorded)
				print_result(s->c, &res);
			backoff = 500;
			wait_ms = s->scfg.interval_ms;
		}
		ts.tv_sec = wait_ms / 1000;
		ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
		if (sigtimedwait(&stop, NULL, &ts) >= 0)
			break;
	}
	pgs_close(p);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return 0;
}

static int status(struct syncer *s)
{
	json_t *o = st_sync_state_read(s->c->cfg, "sync");
	pgs_opts po = st_sync_opts(&s->scfg, s->c->cfg);
	long long server = json_integer_value(json_object_get(o, "server_seq"));
	long long local = 0, events = 0, units = 0;
	const char *ok = json_string_value(json_object_get(o, "last_ok"));
	const char *bad = json_string_value(json_object_get(o, "last_error"));
	const char *bad_at = json_string_value(json_object_get(o, "last_error_at"));
	char when[32] = "", central[600];
	pgs *p = NULL;
	int code = 0;

	/* the server's own mark when it can be reached, else the last known */
	po.connect_timeout_s = po.connect_timeout_s < 3 ? po.connect_timeout_s : 3;
	if (pgs_connect(&po, &p) == ST_OK && pgs_server_mark(p, &server, when) == ST_OK)
		snprintf(central, sizeof(central), "reachable; last sync %s",
			 when[0] ? when : "never");
	else
		snprintf(central, sizeof(central), "NOT reachable (%s); figures "
			 "from the last sync", pgs_errmsg(p));
	pgs_close(p);
	if (pgs_local_lag(s->r, server, &local, &events, &units)) {
		code = st_say(ST_EXIT_RECORDS, "sync: %s", rec_errmsg(s->r));
		goto cleanup;
	}
	printf("sync status: station %s\n"
	       "  local events:      %lld\n"
	       "  central database:  %lld (%s)\n"
	       "  lag:               %lld events, %lld units not yet shipped\n"
	       "  last success:      %s\n"
	       "  last error:        %s%s%s%s\n",
	       s->c->cfg->station_id, local, server, central, events, units,
	       ok ? ok : "never", bad ? bad : "none", bad_at ? " (" : "",
	       bad_at ? bad_at : "", bad_at ? ")" : "");
cleanup:
	json_decref(o);
	return code;
}

int st_cmd_sync(st_rec_cli *c)
{
	struct syncer s;
	int code;

	if (c->sync_once + c->sync_follow + c->sync_status > 1)
		return st_say(ST_EXIT_USAGE, "records sync: give one of --once, "
			      "--follow, --status");
	code = open_syncer(c, &s);
	if (code)
		goto cleanup;
	if (c->sync_status) {
		code = status(&s);
	} else if (c->sync_follow) {
		code = follow(&s);
	} else {
		pgs_result res = { 0 };
		pgs *p = NULL;
		int rc = sync_once(&s, &p, &res);

		if (rc == ST_OK)
			print_result(c, &res);
		else if (rc == ST_E_HSM && s.hsm_code)
			code = s.hsm_code;
		else
			code = st_say(rc == ST_E_CONFIG ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
				      "sync: %s (%lld events shipped before it)",
				      pgs_errmsg(p), res.shipped);
		pgs_close(p);
	}
cleanup:
	syncer_close(&s);
	return code;
}

/* ---- records workorder ---- */

/* Connect for a one-off command; NULL (with *code 0) without a sync group. */
static pgs *connect_for(st_rec_cli *c, int *code)
{
	st_sync_cfg scfg;
	char err[512] = "";
	pgs_opts o;
	pgs *p = NULL;

	*code = 0;
	if (st_sync_config_load(c->config_path, &scfg, err, sizeof(err))) {
		*code = st_say(ST_EXIT_USAGE, "configuration: %s", err);
		return NULL;
	}
	if (scfg.configured) {
		o = st_sync_opts(&scfg, c->cfg);
		if (pgs_connect(&o, &p)) {
			*code = st_say(ST_EXIT_RECORDS, "central database: %s",
				    pgs_errmsg(p));
			pgs_close(p);
			p = NULL;
		}
	}
	st_sync_config_free(&scfg);
	return p;
}

int st_sync_workorder_put(st_rec_cli *c, const char *id, long quota)
{
	int code, rc;
	pgs *p = connect_for(c, &code);

	if (!p)
		return code;
	rc = pgs_workorder_put(p, id, quota);
	if (rc)
		code = st_say(rc == ST_E_EXISTS ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
			      "workorder: %s", pgs_errmsg(p));
	else
		printf("work order %s is in the central database: its quota is "
		       "shared by every station\n", id);
	pgs_close(p);
	return code;
}

int st_sync_workorder_show(st_rec_cli *c, const char *id)
{
	pgs_workorder w;
	int code, rc;
	pgs *p = connect_for(c, &code);

	if (!p)
		return code;
	rc = pgs_workorder_get(p, id, &w);
	if (rc == ST_OK && w.quota >= 0)
		printf("central: quota %ld, %ld reserved by all stations (%ld PASS), "
		       "%ld left; this station holds %ld pre-reserved\n", w.quota,
		       w.reserved, w.pass, w.quota - w.reserved, w.allowance);
	else if (rc == ST_OK)
		printf("central: no quota, %ld PASS\n", w.pass);
	else
		printf("central: %s\n", pgs_errmsg(p));
	pgs_close(p);
	return 0;
}

/* ---- records verify --pg ---- */

int st_cmd_verify_pg(st_rec_cli *c)
{
	pgs_verify_result v;
	struct syncer s;
	pgs_opts o;
	st_trust *t = NULL;
	pgs *p = NULL;
	int code, rc;

	/* every station's audit certificates: from the CAs given with
	 * --ca-cert (a fleet's, in one file), or else this token's */
	code = st_cli_trust_open(c->ctx, c->ca_cert, true, &t);
	if (code)
		return code;
	code = open_syncer(c, &s);
	if (code)
		goto cleanup;
	o = st_sync_opts(&s.scfg, c->cfg);
	rc = pgs_connect(&o, &p);
	if (!rc)
		rc = pgs_verify(p, s.r, st_trust_check_audit, t, &v);
	if (rc == ST_OK) {
		printf("central records OK: %d station%s, %lld events; every "
		       "hash, link and signature checked, audit keys certified by "
		       "%s\n", v.stations, v.stations == 1 ? "" : "s", v.events,
		       st_trust_what(t));
	} else if (rc == ST_E_VERIFY) {
		/* the message names the event itself */
		printf("central records TAMPERED: station %s: %s%s\n",
		       v.bad_station, v.bad_seq ? "first bad record: " : "",
		       rec_errmsg(s.r));
		code = ST_EXIT_RECORDS;
	} else {
		code = st_say(ST_EXIT_RECORDS, "verify --pg: %s", pgs_errmsg(p));
	}
cleanup:
	pgs_close(p);
	syncer_close(&s);
	st_trust_free(t);
	return code;
}
