/* sync_cmds.c — the station's side of the commands of the central copy of
 * the records (station.h, "The central copy of the records"): a sync pass
 * and --follow's loop, --status's figures, verify --pg, and the central
 * side of `records workorder`.  PostgreSQL itself is records/pgsync.c;
 * the sync configuration and its state file are sync.c. */
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base.h"
#include "records/pgsync.h"
#include "station/checkpoint.h"
#include "station/st_int.h"
#include "station/sync.h"

struct st_syncer {
	st_station *st;
	const st_config *cfg;
	st_sync_cfg scfg;
	rec_store *r;           /* the station's */
	pgs *p;                 /* connected by a pass, kept for the next */
	int (*login)(void *ctx);
	void *ctx;
	char audit_err[512];    /* why the audit signer is not attached, "" */
};

int st_syncer_open(st_station *st, st_store_mode mode, int (*login)(void *ctx),
		   void *ctx, st_syncer **out, char *err, size_t errlen)
{
	const char *path = st_station_config_path(st);
	char why[900] = "";
	st_syncer *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	s->st = st;
	s->cfg = st_station_config(st);
	s->login = login;
	s->ctx = ctx;
	if (st_sync_config_load(path, &s->scfg, why, sizeof(why))) {
		snprintf(err, errlen, "configuration: %s", why);
		rc = ST_E_CONFIG;
		goto fail;
	}
	if (!s->scfg.configured) {
		snprintf(err, errlen, "sync: the configuration%s%s has no 'sync' "
			 "group: give sync.conninfo (see docs/sync.md)",
			 path ? " " : "", path ? path : "");
		rc = ST_E_NOTFOUND;
		goto fail;
	}
	rc = st_station_records_for(st, mode, &s->r, err, errlen);
	if (rc)
		goto fail;
	*out = s;
	return ST_OK;
fail:
	st_syncer_close(s);
	return rc;
}

void st_syncer_close(st_syncer *s)
{
	if (!s)
		return;
	pgs_close(s->p);
	st_sync_config_free(&s->scfg);
	free(s);
}

const char *st_syncer_audit_error(const st_syncer *s)
{
	return s->audit_err[0] ? s->audit_err : NULL;
}

/* Before the first local write (an alert): log in and sign with the
 * station's audit key, so the chain stays verifiable. */
static int ready(void *ctx, rec_store *r)
{
	st_syncer *s = ctx;
	int rc;

	(void)r;
	if (!st_station_logged_in(s->st) && s->login(s->ctx))
		return ST_E_HSM;
	rc = st_station_audit_attach(s->st, s->audit_err, sizeof(s->audit_err));
	if (!rc)
		s->audit_err[0] = '\0';
	return rc;
}

/* The checkpoints of this station in its checkpoint directory that the
 * central database does not have yet (above its newest one) go there
 * first, so a chain that lost its tail since is seen by the same pass. */
static int ship_checkpoints(st_syncer *s)
{
	char dir[4096], path[4400], err[512];
	struct dirent *d;
	long long mark = 0;
	DIR *dp;
	int rc;

	st_checkpoint_dir(s->cfg, dir, sizeof(dir));
	dp = opendir(dir);
	if (!dp)
		return ST_OK;   /* none written yet */
	rc = pgs_checkpoint_mark(s->p, &mark);
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
		    strcmp(cp.station, s->cfg->station_id) || cp.seq <= mark ||
		    siglen == 0 || siglen * 2 >= sizeof(hex)) {
			free(body);
			free(sig);
			continue;       /* not this station's, or shipped */
		}
		st_hex(sig, siglen, hex);
		rc = pgs_checkpoint_put(s->p, body, hex);
		free(body);
		free(sig);
	}
	closedir(dp);
	return rc;
}

int st_syncer_pass(st_syncer *s, st_sync_pass *out, char *err, size_t errlen)
{
	pgs_opts o = st_sync_opts(&s->scfg, s->cfg);
	pgs_result res = { 0 };
	int rc = ST_OK;

	s->audit_err[0] = '\0';
	if (!pgs_ok(s->p)) {
		pgs_close(s->p);
		s->p = NULL;
		rc = pgs_connect(&o, &s->p);
	}
	if (!rc)
		rc = ship_checkpoints(s);
	if (!rc)
		rc = pgs_sync(s->p, s->r, ready, s, &res);
	st_sync_note_result(s->cfg, &res, rc ? pgs_errmsg(s->p) : NULL);
	*out = (st_sync_pass){ .shipped = res.shipped, .batches = res.batches,
			       .server_seq = res.server_seq, .local_seq = res.local_seq,
			       .conflicts = res.conflicts,
			       .alerts_recorded = res.alerts_recorded };
	if (rc)
		snprintf(err, errlen, "%s", pgs_errmsg(s->p));
	return rc;
}

int st_syncer_follow(st_syncer *s, st_sync_follow_fn fn, void *ctx, char *err,
		     size_t errlen)
{
	int backoff = 500, wait_ms, rc = ST_OK;
	sigset_t stop, old;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	for (;;) {
		st_sync_pass res;
		struct timespec ts;

		rc = st_syncer_pass(s, &res, err, errlen);
		if (rc == ST_E_HSM || rc == ST_E_VERIFY || rc == ST_E_CONFIG)
			break;          /* retrying does not help */
		if (rc) {
			fn(ctx, rc, &res, err, backoff);
			wait_ms = backoff;
			backoff = backoff * 2 > s->scfg.backoff_max_ms ?
				  s->scfg.backoff_max_ms : backoff * 2;
		} else {
			if (res.shipped || res.alerts_recorded)
				fn(ctx, ST_OK, &res, "", 0);
			backoff = 500;
			wait_ms = s->scfg.interval_ms;
		}
		ts.tv_sec = wait_ms / 1000;
		ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
		if (sigtimedwait(&stop, NULL, &ts) >= 0)
			break;
	}
	pgs_close(s->p);
	s->p = NULL;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc == ST_E_HSM || rc == ST_E_VERIFY || rc == ST_E_CONFIG ? rc : ST_OK;
}

int st_syncer_status(st_syncer *s, st_sync_status *out, char *err,
		     size_t errlen)
{
	json_t *o = st_sync_state_read(s->cfg, "sync");
	pgs_opts po = st_sync_opts(&s->scfg, s->cfg);
	const char *ok = json_string_value(json_object_get(o, "last_ok"));
	const char *bad = json_string_value(json_object_get(o, "last_error"));
	const char *bad_at = json_string_value(json_object_get(o, "last_error_at"));
	char when[32] = "";
	pgs *p = NULL;
	int rc = ST_OK;

	memset(out, 0, sizeof(*out));
	out->server = json_integer_value(json_object_get(o, "server_seq"));
	snprintf(out->last_ok, sizeof(out->last_ok), "%s", ok ? ok : "");
	snprintf(out->last_error, sizeof(out->last_error), "%s", bad ? bad : "");
	snprintf(out->last_error_at, sizeof(out->last_error_at), "%s",
		 bad_at ? bad_at : "");
	/* the server's own mark when it can be reached, else the last known */
	po.connect_timeout_s = po.connect_timeout_s < 3 ? po.connect_timeout_s : 3;
	if (pgs_connect(&po, &p) == ST_OK &&
	    pgs_server_mark(p, &out->server, when) == ST_OK)
		snprintf(out->central, sizeof(out->central), "reachable; last sync %s",
			 when[0] ? when : "never");
	else
		snprintf(out->central, sizeof(out->central), "NOT reachable (%s); "
			 "figures from the last sync", pgs_errmsg(p));
	pgs_close(p);
	if (pgs_local_lag(s->r, out->server, &out->local, &out->events,
			  &out->units)) {
		snprintf(err, errlen, "%s", rec_errmsg(s->r));
		rc = ST_E_DB;
	}
	json_decref(o);
	return rc;
}

int st_syncer_verify_pg(st_syncer *s, st_trust *t, st_pg_verify *out, char *err,
			size_t errlen)
{
	pgs_opts o = st_sync_opts(&s->scfg, s->cfg);
	pgs_verify_result v = { 0 };
	int rc;

	pgs_close(s->p);
	s->p = NULL;
	rc = pgs_connect(&o, &s->p);
	if (!rc)
		rc = pgs_verify(s->p, s->r, st_trust_check_audit, t, &v);
	out->stations = v.stations;
	out->events = v.events;
	snprintf(out->bad_station, sizeof(out->bad_station), "%s", v.bad_station);
	out->bad_seq = v.bad_seq;
	if (rc == ST_E_VERIFY)
		snprintf(err, errlen, "%s", rec_errmsg(s->r));
	else if (rc)
		snprintf(err, errlen, "%s", pgs_errmsg(s->p));
	return rc;
}

struct pg_comp {
	st_records_component_fn fn;
	void *ctx;
};

static int pg_comp_row(void *ctx, const char *const v[10])
{
	struct pg_comp *q = ctx;
	st_unit_row row = { .station = v[0], .id = v[1] ? strtoll(v[1], NULL, 10) : 0,
			    .uid = v[2], .cert_serial = v[3], .work_order = v[4],
			    .finished_at = v[5], .state = v[6] };

	return q->fn(q->ctx, &row, v[7], v[8], v[9] ? v[9] : "");
}

int st_syncer_units_with_component(st_syncer *s, const char *component,
				   st_records_component_fn fn, void *ctx,
				   char *err, size_t errlen)
{
	pgs_opts o = st_sync_opts(&s->scfg, s->cfg);
	struct pg_comp q = { .fn = fn, .ctx = ctx };
	char name[256], *at;
	const char *version = NULL;
	int rc;

	snprintf(name, sizeof(name), "%s", component ? component : "");
	if ((at = strrchr(name, '@')) && at != name) {
		*at = '\0';
		version = at + 1;
	}
	if (!name[0] || (version && !version[0])) {
		snprintf(err, errlen, "--component is NAME or NAME@VERSION (as the "
			 "SBOM names it)");
		return ST_E_INVAL;
	}
	pgs_close(s->p);
	s->p = NULL;
	rc = pgs_connect(&o, &s->p);
	if (!rc)
		rc = pgs_units_with_component(s->p, name, version, pg_comp_row, &q);
	if (rc)
		snprintf(err, errlen, "central database: %s", pgs_errmsg(s->p));
	return rc;
}

/* Connect for a one-off command; ST_OK with *p NULL without a sync group. */
static int connect_for(st_station *st, pgs **p, char *err, size_t errlen)
{
	st_sync_cfg scfg;
	char why[512] = "";
	pgs_opts o;
	int rc = ST_OK;

	*p = NULL;
	if (st_sync_config_load(st_station_config_path(st), &scfg, why,
				sizeof(why))) {
		snprintf(err, errlen, "configuration: %s", why);
		return ST_E_CONFIG;
	}
	if (scfg.configured) {
		o = st_sync_opts(&scfg, st_station_config(st));
		if (pgs_connect(&o, p)) {
			snprintf(err, errlen, "central database: %s", pgs_errmsg(*p));
			pgs_close(*p);
			*p = NULL;
			rc = ST_E_DB;
		}
	}
	st_sync_config_free(&scfg);
	return rc;
}

int st_central_workorder_put(st_station *st, const char *id, long quota,
			     bool *central, char *err, size_t errlen)
{
	pgs *p;
	int rc = connect_for(st, &p, err, errlen);

	*central = p != NULL;
	if (!p)
		return rc;
	rc = pgs_workorder_put(p, id, quota);
	if (rc) {
		snprintf(err, errlen, "workorder: %s", pgs_errmsg(p));
		rc = rc == ST_E_EXISTS ? ST_E_EXISTS : ST_E_DB;
	}
	pgs_close(p);
	return rc;
}

int st_central_workorder_get(st_station *st, const char *id,
			     st_central_workorder *w, bool *central, char *err,
			     size_t errlen)
{
	pgs_workorder pw;
	pgs *p;
	int rc = connect_for(st, &p, err, errlen);

	memset(w, 0, sizeof(*w));
	*central = p != NULL;
	if (!p)
		return rc;
	if (pgs_workorder_get(p, id, &pw) == ST_OK) {
		w->quota = pw.quota;
		w->reserved = pw.reserved;
		w->pass = pw.pass;
		w->allowance = pw.allowance;
	} else {
		snprintf(w->error, sizeof(w->error), "%s", pgs_errmsg(p));
	}
	pgs_close(p);
	return ST_OK;
}
