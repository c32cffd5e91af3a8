/* station.c — the station handle (station.h): the one place a front end's
 * HSM login, store, sync state and operator authentication live. */
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station/checkpoint.h"
#include "station/roles.h"
#include "station/st_int.h"
#include "station/sync.h"

struct st_station {
	const st_config *cfg;
	const char *config_path;
	hsm *h;                 /* the token, logged in when logged_in */
	bool logged_in;
	rec_store *rec;
	st_audit *audit;        /* st_station_audit_attach() */
	st_sync_quota *quota;   /* the running run's shared quota */
	bool quota_ready;       /* st_station_run_quota() done for the next run */
	bool running;           /* between run start and run wait */
	st_route *route;        /* the running run's MES route check */
};

int st_station_new(const st_config *cfg, const char *config_path,
		   st_station **out)
{
	st_station *st = calloc(1, sizeof(*st));

	*out = NULL;
	if (!st)
		return ST_E_NOMEM;
	st->cfg = cfg;
	st->config_path = config_path;
	*out = st;
	return ST_OK;
}

void st_station_close(st_station *st)
{
	if (!st)
		return;
	st_sync_quota_close(st->quota);
	st_route_close(st->route);
	st_station_audit_detach(st);
	rec_close(st->rec);
	hsm_close(st->h);
	free(st);
}

const st_config *st_station_config(const st_station *st)
{
	return st->cfg;
}

const char *st_station_config_path(const st_station *st)
{
	return st->config_path;
}

int st_store_open_as(st_station *st, st_store_mode mode, rec_store **out,
		     char *err, size_t errlen)
{
	static const rec_mode modes[] = {
		[ST_STORE_READ] = REC_OPEN_READ,
		[ST_STORE_WRITE] = REC_OPEN_WRITE,
		[ST_STORE_CREATE] = REC_OPEN_CREATE,
	};
	const char *path = st->cfg->records_path;
	int rc = rec_open_mode(path, modes[mode], out);

	if (rc == ST_E_NOTFOUND)
		snprintf(err, errlen, "no records store at %s (records.path in %s): "
			 "this command does not create one; the first provisioning "
			 "run (provision, tui), 'records workorder create', 'audit "
			 "init', 'profile install' or 'records sync' does",
			 path ? path : "(none)", st->config_path ? st->config_path : "the built-in defaults");
	else if (rc)
		snprintf(err, errlen, "cannot open %s: %s", path ? path : "(none)",
			 *out ? rec_errmsg(*out) : st_strerror(rc));
	return rc;
}

int st_station_store_open(st_station *st, st_store_mode mode, char *err,
			  size_t errlen)
{
	int rc;

	if (st->rec && (mode == ST_STORE_READ || !rec_readonly(st->rec)))
		return ST_OK;
	rec_close(st->rec);
	st->rec = NULL;
	rc = st_store_open_as(st, mode, &st->rec, err, errlen);
	if (rc) {
		rec_close(st->rec);
		st->rec = NULL;
	}
	return rc;
}

int st_station_records_for(st_station *st, st_store_mode mode, rec_store **r,
			   char *err, size_t errlen)
{
	char why[900] = "";
	int rc = st_station_store_open(st, mode, why, sizeof(why));

	if (rc) {
		snprintf(err, errlen, "records: %s", why);
		return rc == ST_E_NOTFOUND ? rc : ST_E_DB;
	}
	*r = st->rec;
	return ST_OK;
}

int st_station_hsm_open(st_station *st, char *err, size_t errlen)
{
	if (st->h)
		return ST_OK;
	st->logged_in = false;
	return st_hsm_open(st->cfg, &st->h, err, errlen);
}

int st_station_hsm_auth(st_station *st, const char *pin, size_t pinlen,
			char *err, size_t errlen)
{
	int rc;

	if (!st->h)
		return ST_E_STATE;
	rc = st_hsm_auth(st->cfg, st->h, pin, pinlen, err, errlen);
	st->logged_in = rc == ST_OK;
	return rc;
}

int st_station_login(st_station *st, const char *pin, size_t pinlen,
		     char *err, size_t errlen)
{
	int rc = st_station_hsm_open(st, err, errlen);

	if (!rc)
		rc = st_station_hsm_auth(st, pin, pinlen, err, errlen);
	if (rc)
		st_station_logout(st);
	return rc;
}

const char *st_station_pin_warning(const st_station *st)
{
	return st->h ? hsm_pin_warning(st->h) : NULL;
}

st_pin_state st_station_pin_state(const st_station *st)
{
	switch (st->h ? hsm_pin_state_get(st->h) : HSM_PIN_UNKNOWN) {
	case HSM_PIN_OK: return ST_PIN_OK;
	case HSM_PIN_COUNT_LOW: return ST_PIN_COUNT_LOW;
	case HSM_PIN_FINAL_TRY: return ST_PIN_FINAL_TRY;
	case HSM_PIN_LOCKED: return ST_PIN_LOCKED;
	case HSM_PIN_UNKNOWN: break;
	}
	return ST_PIN_UNKNOWN;
}

bool st_station_logged_in(const st_station *st)
{
	return st->h && st->logged_in;
}

void st_station_logout(st_station *st)
{
	st_station_audit_detach(st);
	hsm_close(st->h);
	st->h = NULL;
	st->logged_in = false;
}

int st_station_roster_check(st_station *st, char *err, size_t errlen)
{
	st_roster *r = NULL;
	int rc = st_roster_load(st->cfg, &r, err, errlen);

	st_roster_free(r);
	return rc;
}

int st_authenticate(const st_config *cfg, hsm *h, rec_store *rec,
		    const char *name, const char *pw, size_t pwlen, unsigned role,
		    bool signed_, char *why, size_t whylen, char *recerr,
		    size_t recerrlen)
{
	char err[512] = "";
	st_roster *r = NULL;
	st_audit *a = NULL;
	int rc;

	recerr[0] = '\0';
	if (!pw) {
		/* no password to check: why already says why; record it */
		rc = ST_E_PIN;
	} else {
		rc = st_roster_load(cfg, &r, err, sizeof(err));
		if (!rc)
			rc = st_roster_auth(r, name, pw, pwlen, role, err, sizeof(err));
		st_roster_free(r);
		if (!rc)
			return ST_OK;
		snprintf(why, whylen, "%s", err);
	}
	err[0] = '\0';
	/* On record: who tried, for which role, and why it was refused (never
	 * the password). */
	if (!rec)
		snprintf(recerr, recerrlen, "the records are not open");
	else if ((!signed_ && st_audit_attach(h, rec, cfg, &a, err, sizeof(err))) ||
		 rec_event(rec, "auth_refused", NULL, "name", name, "role",
			   st_role_name(role), "why", why, NULL))
		snprintf(recerr, recerrlen, "%s", err[0] ? err : rec_errmsg(rec));
	st_audit_detach(rec, a);
	return rc;
}

int st_station_authenticate(st_station *st, const char *name, const char *pw,
			    size_t pwlen, unsigned role, bool signed_,
			    char *why, size_t whylen, char *recerr,
			    size_t recerrlen)
{
	return st_authenticate(st->cfg, st->h, st->rec, name, pw, pwlen, role,
			       signed_, why, whylen, recerr, recerrlen);
}

int st_station_audit_attach(st_station *st, char *err, size_t errlen)
{
	if (st->audit)
		return ST_OK;
	if (!st->rec || !st->h) {
		snprintf(err, errlen, "%s", !st->rec ? "the records are not open" :
			 "not logged in to the token");
		return ST_E_STATE;
	}
	return st_audit_attach(st->h, st->rec, st->cfg, &st->audit, err, errlen);
}

void st_station_audit_detach(st_station *st)
{
	if (!st->audit)
		return;
	st_audit_detach(st->rec, st->audit);
	st->audit = NULL;
}

void st_station_sync_lag(st_station *st, char *buf, size_t len)
{
	if (!st->rec) {
		buf[0] = '\0';
		return;
	}
	st_sync_lag(st->cfg, st->rec, buf, len);
}

int st_station_ca_info(st_station *st, const char *label, char *subject,
		       size_t sublen, int *days_left, char *err, size_t errlen)
{
	if (!st->h) {
		snprintf(err, errlen, "not logged in to the token");
		return ST_E_STATE;
	}
	return st_ca_info(st->h, label, subject, sublen, days_left, err, errlen);
}

int st_station_quarantine_release(st_station *st, const char *uid,
				  const char *supervisor, const char *reason,
				  int64_t *new_id, char *err, size_t errlen)
{
	if (!st->rec) {
		snprintf(err, errlen, "the records are not open");
		return ST_E_STATE;
	}
	return st_quarantine_release(st->rec, st->cfg, uid, supervisor, reason,
				     new_id, err, errlen);
}

int st_station_run_quota(st_station *st, const char *work_order, char *err,
			 size_t errlen)
{
	int rc;

	if (st->running || st->quota_ready) {
		snprintf(err, errlen, "a run is in progress");
		return ST_E_STATE;
	}
	if (!st->rec) {
		snprintf(err, errlen, "the records are not open");
		return ST_E_STATE;
	}
	rc = st_sync_quota_open(st->config_path, st->cfg, st->rec, work_order,
				&st->quota, err, errlen);
	st->quota_ready = !rc;
	return rc;
}

/* Give back the shared quota of a run that ended or did not start. */
static void run_quota_release(st_station *st)
{
	st_sync_quota_close(st->quota);
	st->quota = NULL;
	st->quota_ready = false;
}

int st_station_run_start(st_station *st, const st_profile *prof, st_run *run,
			 st_event_fn cb, void *cb_ctx, st_run_handle **out,
			 char *err, size_t errlen)
{
	int rc = ST_OK;

	*out = NULL;
	if (st->running || !st->h || !st->rec) {
		snprintf(err, errlen, "%s", st->running ? "a run is in progress" :
			 !st->h ? "not logged in to the token" : "the records are not open");
		return ST_E_STATE;
	}
	if (!st->quota_ready && !run->dry_run)
		rc = st_station_run_quota(st, run->work_order && run->work_order[0] ?
					  run->work_order : NULL, err, errlen);
	run->quota = st_sync_quota_hook(st->quota);
	/* the profile's route check (docs/integration.md) */
	if (!rc && !run->dry_run)
		rc = st_route_open(st->config_path, st->cfg, prof, &st->route, err, errlen);
	run->route = st_route_hook_of(st->route);
	if (!rc)
		rc = st_run_start(st->h, st->rec, st->cfg, prof, run, cb, cb_ctx, out,
				  err, errlen);
	if (rc) {
		run_quota_release(st);
		run->quota = NULL;
		st_route_close(st->route);
		st->route = NULL;
		run->route = NULL;
		return rc;
	}
	st->running = true;
	return ST_OK;
}

void st_station_run_wait(st_station *st, st_run_handle *r, st_summary *sum)
{
	st_run_wait(r, sum);
	run_quota_release(st);
	st_route_close(st->route);
	st->route = NULL;
	st->running = false;
}

void st_station_record_stats(st_station *st, long long *writes,
			     long long *commits)
{
	rec_stats rs = { 0 };

	if (st->rec)
		rec_get_stats(st->rec, &rs);
	*writes = rs.writes;
	*commits = rs.commits;
}

int st_station_checkpoint(st_station *st, st_checkpoint_note *out, char *err,
			  size_t errlen)
{
	const st_config *cfg = st->cfg;
	st_checkpoint cp = { .body = NULL };
	char dir[4096];
	st_audit *a = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!st->h || !st->logged_in || !st->rec) {
		snprintf(err, errlen, "%s", !st->rec ? "the records are not open" :
			 "not logged in to the token");
		return ST_E_STATE;
	}
	rc = st_audit_open(st->h, cfg->ca_label ? cfg->ca_label : "issuing-ca",
			   ST_AUDIT_LABEL, cfg->station_id, &a, err, errlen);
	if (!rc)
		rc = st_checkpoint_make(st->rec, a, cfg->station_id, -1, NULL, &cp,
					err, errlen);
	st_checkpoint_dir(cfg, dir, sizeof(dir));
	if (!rc)
		rc = st_checkpoint_write(&cp, a, dir, NULL, err, errlen);
	st_audit_close(a);
	if (!rc) {
		snprintf(out->station, sizeof(out->station), "%s", cp.cp.station);
		out->seq = cp.cp.seq;
		snprintf(out->head_hash, sizeof(out->head_hash), "%s", cp.cp.head_hash);
		snprintf(out->at, sizeof(out->at), "%s", cp.cp.at);
		snprintf(out->audit_sha256, sizeof(out->audit_sha256), "%s",
			 cp.cp.audit_sha256);
		snprintf(out->path, sizeof(out->path), "%s", cp.path);
	}
	st_checkpoint_free(&cp);
	return rc;
}

hsm *st_station_hsm(st_station *st)
{
	return st->logged_in ? st->h : NULL;
}

rec_store *st_station_store(st_station *st)
{
	return st->rec;
}
