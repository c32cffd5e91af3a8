/* admit.c — admission of the unit in a programmer: the device ID claimed
 * (clones refused), its whole history read (the identity that should be on
 * it, burn intents without an outcome), resumed or re-provisioned, an
 * interrupted record closed, and its new record opened. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"

/* Who the station's own revocations name as the decider. */
static void station_by(const struct unit *u, char *by, size_t len)
{
	snprintf(by, len, "station %s", u->w->job->cfg->station_id ?
		 u->w->job->cfg->station_id : "");
}

/* Revoke the certificates the unit's history left behind (issued by an
 * interrupted or failed record, not resumed: u->hist.abandoned), naming
 * this record.  The engine's own revocation; the lead folds it into the
 * shared auto-revocation of certificates whose unit does not PASS.
 * Non-zero after fail() when a revocation cannot be recorded. */
static int revoke_abandoned(struct unit *u, const char *how)
{
	struct history *h = &u->hist;
	char reason[256], by[160], err[512];

	station_by(u, by, sizeof(by));
	for (int i = 0; i < h->nabandoned; i++) {
		int rc;

		snprintf(reason, sizeof(reason), "interrupted, not resumed: %s in "
			 "unit record %lld", how, (long long)u->id);
		rc = st_unit_revoke(u->w->job->rec, h->abandoned[i].unit, NULL,
				    REC_CRL_SUPERSEDED, reason, by, NULL, 0, err,
				    sizeof(err));
		if (rc == ST_E_EXISTS || rc == ST_E_STATE || rc == ST_E_NOTFOUND)
			continue;  /* already revoked / a live identity / issued nothing */
		if (rc) {
			u->stop_slot = true;
			return fail(u, ST_STEP_REVOKE, ST_E_DB, "cannot revoke the certificate "
				    "(serial %s) of unit record %lld: %s",
				    h->abandoned[i].serial, (long long)h->abandoned[i].unit,
				    err);
		}
		if (step(u, ST_STEP_REVOKE, ST_OUTCOME_OK, "certificate serial %s of unit record %lld "
			 "revoked (%s): %s", h->abandoned[i].serial,
			 (long long)h->abandoned[i].unit,
			 st_crl_reason_name(REC_CRL_SUPERSEDED), reason))
			return ST_E_DB;
	}
	h->nabandoned = 0;
	return ST_OK;
}

/* Give up the identity the history expected on the device (it is not
 * there, or not whole): it is revoked with the others left behind, and
 * the unit gets a new one.  Returns 0 (fresh), or non-zero after fail(). */
static int not_resumed(struct unit *u, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int not_resumed(struct unit *u, const char *fmt, ...)
{
	struct history *h = &u->hist;
	char why[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (step(u, ST_STEP_RESUME, ST_OUTCOME_SKIP, "the certificate of unit record %lld (serial "
		 "%s) is not resumed: %s; a new identity", (long long)h->cert_unit,
		 h->cert_serial, why))
		return ST_E_DB;
	if (h->nabandoned < HIST_ABANDONED) {
		h->abandoned[h->nabandoned].unit = h->cert_unit;
		snprintf(h->abandoned[h->nabandoned++].serial,
			 sizeof(h->abandoned[0].serial), "%s", h->cert_serial);
	}
	h->cert_unit = 0;
	return revoke_abandoned(u, "re-provisioned");
}

/* May the unit go on with the identity its history expects on it (an
 * interrupted run's, or an UNFUSED record's)?  The certificate on the
 * device must be the one on record (same SHA-256), verify against the CA
 * and certify the device's own key: then it is resumed (1, *out set) and
 * no second identity is issued.  A locked device can only be resumed
 * (nothing can be written to it any more); an open one without that
 * certificate gets a new identity and the old one is revoked (0).
 * Negative after fail(). */
int resume_identity(struct unit *u, X509 **out)
{
	struct history *h = &u->hist;
	bool locked = u->info.lifecycle == DRV_LC_LOCKED;
	uint8_t der[DRV_MAX_CERT], pub[DRV_P256_POINT_LEN];
	const uint8_t *p = der;
	char fp[65] = "";
	size_t len = 0;
	EVP_PKEY *devkey = NULL;
	X509 *cert = NULL;
	int rc;

	if (!h->cert_unit || h->cert_revoked)
		return revoke_abandoned(u, "re-provisioned");
	if (locked && !u->w->job->run->burn_fuses)
		return fail(u, ST_STEP_CERTIFICATE, ST_E_STATE, "the unit was locked by an "
			    "interrupted run: resuming it verifies its fuse plan, which "
			    "needs --burn-fuses");
	rc = drv_read_cert(u->dev, der, sizeof(der), &len);
	if (!rc)
		rc = drv_get_pubkey(u->dev, pub);
	if (rc && (st_err_is_link(rc) || locked))
		return fail(u, ST_STEP_CERTIFICATE, rc, "resuming unit record %lld: reading "
			    "the device's certificate and key failed: %s",
			    (long long)h->cert_unit, drv_errmsg(u->dev));
	if (rc)
		return not_resumed(u, "the device holds no certificate or key (%s)",
				   drv_errmsg(u->dev));
	cert = d2i_X509(NULL, &p, (long)len);
	devkey = st_p256_pubkey(pub);
	if (cert)
		st_x509_fingerprint(cert, fp);
	if (!cert || !devkey || X509_verify(cert, X509_get0_pubkey(u->ca)) != 1 ||
	    EVP_PKEY_eq(X509_get0_pubkey(cert), devkey) != 1 ||
	    strcasecmp(fp, h->cert_fp)) {
		rc = locked ? fail(u, ST_STEP_CERTIFICATE, ST_E_VERIFY, "resuming a locked "
				   "unit: the certificate on the device is not the one "
				   "unit record %lld issued (serial %s), does not verify "
				   "against the CA or does not certify the device's key: "
				   "set it aside for a supervisor", (long long)h->cert_unit,
				   h->cert_serial) :
		     not_resumed(u, "the device holds %s", !cert ? "no readable "
				 "certificate" : strcasecmp(fp, h->cert_fp) ? "another "
				 "certificate" : "a certificate that does not verify or does "
				 "not certify its key");
		goto cleanup;
	}
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	st_x509_serial_hex(cert, u->serial, sizeof(u->serial));
	snprintf(u->fp, sizeof(u->fp), "%s", fp);
	free(u->cert_pem);
	u->cert_pem = pem_of(cert);
	rc = step(u, ST_STEP_CERTIFICATE, ST_OUTCOME_OK, "resumed: the certificate on the %sdevice "
		  "(serial %s sha256 %s) is the one unit record %lld issued; it "
		  "verifies against the CA and certifies the device's key",
		  locked ? "locked " : "", u->serial, u->fp, (long long)h->cert_unit);
	if (!rc)
		rc = step(u, ST_STEP_RESUME, ST_OUTCOME_OK, "finishes unit record %lld (%s): same "
			  "certificate, serial %s; no second identity", (long long)
			  (h->last_unit ? h->last_unit : h->cert_unit),
			  !st_verdict_parse(h->last_state, &(st_verdict){ 0 }) ?
			  "interrupted" : h->last_state,
			  u->serial);
	if (!rc)
		rc = revoke_abandoned(u, "superseded by the certificate resumed");
	if (!rc) {
		*out = cert;
		cert = NULL;
		rc = 1;
	}
cleanup:
	X509_free(cert);
	EVP_PKEY_free(devkey);
	return rc;
}

/* Mark uid as in work on this slot.  Returns 0, or the (1-based) slot that
 * already works on the same device ID: two units answering with one ID at
 * once are clones or counterfeits: the second is refused an identity. */
static int claim_uid(struct worker *w, const char *uid)
{
	struct job *job = (struct job *)w->job;
	int other = 0;

	pthread_mutex_lock(&job->lock);
	for (int i = 0; i < ST_MAX_SLOTS && !other; i++)
		if (i != w->slot - 1 && !strcmp(job->active[i], uid))
			other = i + 1;
	if (!other)
		snprintf(job->active[w->slot - 1], sizeof(job->active[0]), "%s", uid);
	pthread_mutex_unlock(&job->lock);
	return other;
}

/* Note (id != 0) or clear (0) the unit record this slot has open. */
void set_live(struct worker *w, int64_t id)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	job->live[w->slot - 1] = id;
	pthread_mutex_unlock(&job->lock);
}

/* Is unit record id open in a slot of this run right now?  Then a RUNNING
 * state means "in work" (e.g. a clone refused on another slot), not
 * "interrupted". */
static bool is_live(struct worker *w, int64_t id)
{
	struct job *job = (struct job *)w->job;
	bool live = false;

	pthread_mutex_lock(&job->lock);
	for (int i = 0; i < ST_MAX_SLOTS; i++)
		live |= job->live[i] == id;
	pthread_mutex_unlock(&job->lock);
	return live;
}

/* This slot is done with its unit (clears only its own entry). */
void unclaim_uid(struct worker *w)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	job->active[w->slot - 1][0] = '\0';
	pthread_mutex_unlock(&job->lock);
}

#define HIST_MAX 64

/* The records of one device and its revoked serials, gathered under the
 * store's lock (the callbacks must not call the store). */
struct hist_read {
	struct history *h;
	const char *uid;
	int n;                       /* records seen (the newest HIST_MAX kept) */
	struct { int64_t id; char state[16]; } rec[HIST_MAX];
	int nrevoked;
	char revoked[HIST_MAX][80];
	int64_t unit;                /* the record whose steps are walked */
};

static int hist_unit(void *ctx, const rec_unit_row *row)
{
	struct hist_read *hr = ctx;
	int i = hr->n++ % HIST_MAX;

	hr->rec[i].id = row->id;
	snprintf(hr->rec[i].state, sizeof(hr->rec[i].state), "%s", row->state);
	return 0;
}

static int hist_revoked(void *ctx, const rec_revoked_row *row)
{
	struct hist_read *hr = ctx;

	if (!strcmp(row->uid, hr->uid) && hr->nrevoked < HIST_MAX)
		snprintf(hr->revoked[hr->nrevoked++], sizeof(hr->revoked[0]), "%s",
			 row->cert_serial);
	return 0;
}

static bool hist_is_revoked(const struct hist_read *hr, const char *serial)
{
	for (int i = 0; i < hr->nrevoked; i++)
		if (!strcasecmp(hr->revoked[i], serial))
			return true;
	return false;
}

/* rec_unit_steps callback: one step of the history, oldest first. */
static int hist_step(void *ctx, const char *name, const char *outcome,
		     const char *detail)
{
	struct hist_read *hr = ctx;
	struct history *h = hr->h;

	if (!strcmp(name, st_step_name(ST_STEP_CERTIFICATE)) && !strcmp(outcome, "ok") &&
	    !strncmp(detail, "serial ", 7)) {
		/* a new identity: the one before it is left behind */
		const char *fp = strstr(detail, " sha256 ");

		if (h->cert_unit && h->nabandoned < HIST_ABANDONED) {
			h->abandoned[h->nabandoned].unit = h->cert_unit;
			snprintf(h->abandoned[h->nabandoned++].serial,
				 sizeof(h->abandoned[0].serial), "%s", h->cert_serial);
		}
		h->cert_unit = hr->unit;
		snprintf(h->cert_serial, sizeof(h->cert_serial), "%.*s",
			 (int)strcspn(detail + 7, " "), detail + 7);
		snprintf(h->cert_fp, sizeof(h->cert_fp), "%s", fp ? fp + 8 : "");
		st_fuse_resume_identity(&h->fuses);
	} else {
		st_fuse_resume_step(&h->fuses, name, outcome, detail);
		esp_identity_hist(h, hr->unit, name, outcome, detail);
	}
	return 0;
}

/* Read every record of the unit and its steps, oldest first, into u->hist
 * (see struct history).  ST_OK or a records error. */
static int read_history(struct worker *w, struct unit *u)
{
	struct history *h = &u->hist;
	struct hist_read *hr = calloc(1, sizeof(*hr));
	rec_filter f = { .uid = u->info.uid_hex };
	int rc, first, n;
	st_verdict v;

	if (!hr)
		return ST_E_NOMEM;
	memset(h, 0, sizeof(*h));
	hr->h = h;
	hr->uid = u->info.uid_hex;
	rc = rec_list_units(w->job->rec, &f, hist_unit, hr);
	if (!rc)
		rc = rec_list_revoked(w->job->rec, hist_revoked, hr);
	n = hr->n < HIST_MAX ? hr->n : HIST_MAX;
	first = hr->n < HIST_MAX ? 0 : hr->n % HIST_MAX;
	for (int k = 0; k < n && !rc; k++) {
		int i = (first + k) % HIST_MAX;

		hr->unit = hr->rec[i].id;
		rc = rec_unit_steps(w->job->rec, hr->unit, hist_step, hr);
		if (st_verdict_parse(hr->rec[i].state, &v) && v == ST_VERDICT_PASS)
			st_fuse_resume_passed(&h->fuses);
		h->last_unit = hr->unit;
		snprintf(h->last_state, sizeof(h->last_state), "%s", hr->rec[i].state);
	}
	if (!rc) {
		int k = 0;

		h->cert_revoked = h->cert_unit && hist_is_revoked(hr, h->cert_serial);
		for (int i = 0; i < h->nabandoned; i++)
			if (!hist_is_revoked(hr, h->abandoned[i].serial) &&
			    strcasecmp(h->abandoned[i].serial, h->cert_serial))
				h->abandoned[k++] = h->abandoned[i];
		h->nabandoned = k;
	}
	free(hr);
	return rc;
}

/* Has a supervisor allowed this device a new identity in this run? */
static bool may_reprovision(const st_run *run, const char *uid)
{
	return run->reprovision_reason && run->supervisor_name &&
	       (!run->reprovision_uid || !strcasecmp(run->reprovision_uid, uid));
}

/* Re-provisioning: revoke the PASS identity of unit record id (its serial
 * goes on the revocation list, with the supervisor and the reason) so the
 * device is provisioned like a new one.  ST_E_NOTFOUND when revoked (go
 * on), ST_OK when it cannot be (a locked device: it stays as it is, skipped,
 * nothing revoked), else an error after a slot error. */
static int reprovision(struct worker *w, struct unit *u, int64_t id)
{
	const st_run *run = w->job->run;
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
			.step = ST_STEP_HISTORY, .outcome = ST_OUTCOME_OK, .detail = u->reprovision };
	int rc;

	/* A locked device takes no new key or certificate: revoking its
	 * identity first would leave it with none. */
	if (u->info.lifecycle == DRV_LC_LOCKED) {
		ev.outcome = ST_OUTCOME_SKIP;
		ev.detail = "not re-provisioned: the device is locked (its lifecycle "
			    "forbids a new key and certificate), so its identity is "
			    "kept and nothing is revoked";
		emit(w, &ev);
		return ST_OK;
	}
	rc = rec_revoke(w->job->rec, id, run->reprovision_reason,
			run->supervisor_name);
	if (rc) {
		slot_error(w, ST_E_DB, "slot %d: unit %s: cannot revoke its identity "
			   "(unit record %lld) for re-provisioning: %s; nothing was "
			   "done to the unit", w->slot, u->info.uid_hex, (long long)id,
			   rec_errmsg(w->job->rec));
		record_failed(w, ST_E_DB);
		return ST_E_DB;
	}
	snprintf(u->reprovision, sizeof(u->reprovision), "re-provisioned by "
		 "supervisor %s: %s; the identity of unit record %lld is revoked",
		 run->supervisor_name, run->reprovision_reason, (long long)id);
	emit(w, &ev);
	return ST_E_NOTFOUND;
}

/* Say why the unit is not provisioned (a "history skip" event). */
static int not_admitted(struct worker *w, struct unit *u, st_cause cause,
			const char *why)
{
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
			.step = ST_STEP_HISTORY, .outcome = ST_OUTCOME_SKIP,
			.detail = why, .cause = cause };

	emit(w, &ev);
	return ADMIT_SKIP;
}

/* Identify the next unit and decide what to do with it (enum admit), or a
 * negative st_err to end the slot (ST_E_NO_TARGET: no unit in the
 * programmer, nothing said).  A unit left RUNNING by an interrupted
 * earlier run is closed as FAIL first, so its record says what happened
 * (no other slot can hold it: the ID was claimed, and a clone in another
 * slot keeps its live row: clone_in_work).  The unit's whole history goes
 * to u->hist (read_history): the identity that should be on it, burn
 * intents no record resolved.  A unit last QUARANTINED is not touched
 * again; one last UNFUSED is skipped by an unarmed run. */
int next_unit(struct worker *w, struct unit *u)
{
	rec_unit_result interrupted = { .result = st_verdict_name(ST_VERDICT_FAIL),
		.reason = "interrupted: the station stopped during this unit; "
			  "it was presented again" };
	char last[32], why[1200];
	st_verdict lv = ST_VERDICT_FAIL;
	bool ended = false;   /* the last record has a verdict (lv); else RUNNING */
	bool closed = false;  /* an earlier run's open record was closed here */
	int64_t id;
	int rc;

	drv_link_stats(u->dev, &u->link0); /* this unit's link cost from here */
	rc = drv_identify(u->dev, &u->info);

	if (rc == ST_E_NO_TARGET)
		return ST_E_NO_TARGET;
	if (rc) {
		slot_error(w, rc, "slot %d (%s): identify failed: %s", w->slot, w->port,
			   drv_errmsg(u->dev));
		return rc;
	}
	if (uid_unreadable(&u->info))
		return ADMIT_PROVISION; /* no identity to look up: run_unit refuses it */
	u->dup_slot = claim_uid(w, u->info.uid_hex);
	if (u->dup_slot)
		return ADMIT_CLONE;
	rc = rec_find_pass(w->job->rec, u->info.uid_hex, &id);
	if (rc == ST_OK && may_reprovision(w->job->run, u->info.uid_hex))
		rc = reprovision(w, u, id);
	if (rc == ST_OK) {
		w->sum.skipped++;
		return not_admitted(w, u, ST_CAUSE_ALREADY_PASS, "already provisioned (PASS on record): not "
				    "given a second identity; remove the unit");
	}
	pthread_mutex_lock(&((struct job *)w->job)->rec_order);
	if (rc == ST_E_NOTFOUND)
		rc = rec_last_unit(w->job->rec, u->info.uid_hex, &id, last, sizeof(last));
	if (rc == ST_OK)
		ended = st_verdict_parse(last, &lv);
	if (rc == ST_OK && !(ended && lv == ST_VERDICT_QUARANTINE))
		rc = read_history(w, u);
	if (rc == ST_OK && ended && lv == ST_VERDICT_UNFUSED && !w->job->run->burn_fuses) {
		snprintf(why, sizeof(why), "already provisioned, not locked (UNFUSED on "
			 "record, unit record %lld): it keeps its identity; run with "
			 "--burn-fuses to burn its fuses and lock it", (long long)id);
		pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
		w->sum.skipped++;
		return not_admitted(w, u, ST_CAUSE_ALREADY_UNFUSED, why);
	}
	if (rc == ST_OK && ended && lv == ST_VERDICT_QUARANTINE) {
		snprintf(why, sizeof(why), "QUARANTINED on record (unit record %lld): "
			 "not touched again without a supervisor's recorded decision; "
			 "set the unit aside", (long long)id);
		pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
		w->sum.quarantine++;
		return not_admitted(w, u, ST_CAUSE_QUARANTINED, why);
	}
	if (rc == ST_OK && !ended && !is_live(w, id)) {
		if (u->hist.fuses.pending[0]) {
			snprintf(why, sizeof(why), "interrupted during a burn: the station "
				 "stopped after the intent '%s' without its outcome; the "
				 "next run reads the device to resolve it", u->hist.fuses.pending);
			interrupted.reason = why;
		}
		rc = rec_unit_end(w->job->rec, id, &interrupted);
		closed = rc == ST_OK;
	}
	pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
	if (closed) {
		st_event ev = { .kind = ST_EV_WARNING, .uid = u->info.uid_hex,
				.detail = why };

		/* said, not only logged: the operator was told at the failed
		 * run that this start closes it */
		snprintf(why, sizeof(why), "slot %d: unit %s: unit record %lld was "
			 "left open (RUNNING) "
			 "by an earlier run that stopped during this unit (a crash, a "
			 "lost link or a full records disk): closed as FAIL "
			 "(interrupted); the unit is provisioned again", w->slot,
			 u->info.uid_hex, (long long)id);
		emit(w, &ev);
	}
	if (rc != ST_OK && rc != ST_E_NOTFOUND) {
		slot_error(w, rc, "slot %d: records lookup failed: %s", w->slot,
			   rec_errmsg(w->job->rec));
		record_failed(w, rc);
		return rc;
	}
	return ADMIT_PROVISION;
}

/* What a unit's record starts with (every record of a unit in this run). */
rec_unit_start unit_start_of(const struct worker *w, const struct unit *u)
{
	const struct job *job = w->job;

	return (rec_unit_start){ .uid = u->info.uid_hex, .slot = w->slot,
		.port = w->port, .station = job->cfg->station_id,
		.operator_name = job->run->operator_name,
		.profile = st_profile_name(job->prof),
		.profile_digest = st_profile_digest(job->prof),
		.work_order = job->run->work_order };
}

/* rec_unit_begin_ex callback, under the store's lock: the new row is
 * live in this slot before any other slot can read it. */
static void begun_live(void *ctx, int64_t unit_id)
{
	set_live(ctx, unit_id);
}

/* Open the unit's record (taking it from the work order's quota, first
 * the quota shared with other stations when run->quota is set) and
 * announce it.  0: the unit is on record and live in this slot; 1: the work
 * order's quota is taken, nothing was done to the unit (a normal end of the
 * slot, announced); negative (after a slot error) when the record cannot be
 * opened: nothing was done to the unit. */
int begin_unit(struct worker *w, struct unit *u)
{
	const struct job *job = w->job;
	st_event ev = { .kind = ST_EV_UNIT_START, .uid = u->info.uid_hex };
	rec_unit_start start = unit_start_of(w, u);
	const st_quota_hook *q = job->run->work_order ? job->run->quota : NULL;
	st_quota_note qn = { .step = ST_STEP_NONE };
	int rc = q ? q->reserve(q->ctx, job->run->work_order, u->info.uid_hex,
				&qn) : ST_OK;

	if (rc && rc != ST_E_STATE) {
		/* the shared quota cannot be asked and the policy says stop */
		slot_error(w, ST_E_DB, "slot %d: unit %s: %s; nothing was done "
			   "to the unit", w->slot, u->info.uid_hex, qn.detail);
		record_failed(w, ST_E_DB);
		return ST_E_DB;
	}
	if (!rc) {
		u->us_rec -= unit_us();
		rc = rec_unit_begin_ex(job->rec, &start, &u->id, begun_live, w);
		u->us_rec += unit_us();
		if (rc)
			set_live(w, 0);   /* the row was rolled back */
		if (rc && q)
			q->finish(q->ctx, job->run->work_order, u->info.uid_hex,
				  ST_VERDICT_FAIL);
		if (!rc && qn.step != ST_STEP_NONE &&
		    step_as(u, qn.step, REC_LAZY, ST_OUTCOME_OK, "%s", qn.detail)) {
			char msg[768];

			/* left RUNNING, as after a crash */
			records_stop_msg(msg, sizeof(msg), w, u->info.uid_hex,
					 u->reason, true);
			slot_error(w, ST_E_DB, "%s", msg);
			record_failed(w, ST_E_DB);
			set_live(w, 0);
			return ST_E_DB;
		}
		qn.detail[0] = '\0';
	}
	if (rc == ST_E_STATE && job->run->work_order) {
		/* the work order's quota is taken: a normal end */
		st_event qe = { .kind = ST_EV_SLOT_ERROR, .err = rc,
				.cause = ST_CAUSE_QUOTA_FULL, .uid = u->info.uid_hex,
				.detail = qn.detail[0] ? qn.detail :
					  rec_errmsg(job->rec) };

		w->sum.quota_full++;
		emit(w, &qe);
		return 1;
	}
	if (rc && !hsm_gone(rc) && records_full(rec_errmsg(job->rec))) {
		char msg[768];

		/* the row was rolled back: nothing is left open */
		records_stop_msg(msg, sizeof(msg), w, u->info.uid_hex,
				 rec_errmsg(job->rec), false);
		slot_error(w, ST_E_DB, "%s", msg);
		record_failed(w, rc);
		return ST_E_DB;
	}
	if (rc) {
		slot_error(w, hsm_gone(rc) ? rc : ST_E_DB, "slot %d: %sunit %s: "
			   "cannot open a record (%s); nothing was done to the "
			   "unit", w->slot, hsm_gone(rc) ? "the HSM session or "
			   "token was lost: " : "", u->info.uid_hex,
			   rec_errmsg(job->rec));
		record_failed(w, rc);
		return hsm_gone(rc) ? rc : ST_E_DB;
	}
	if (u->reprovision[0] &&
	    rec_step_ex(job->rec, u->id, st_step_name(ST_STEP_REPROVISION), "ok", u->reprovision,
			REC_LAZY)) {
		char msg[768], why[600];

		snprintf(why, sizeof(why), "cannot record the re-provisioning (%s)",
			 rec_errmsg(job->rec));
		records_stop_msg(msg, sizeof(msg), w, u->info.uid_hex, why, true);
		slot_error(w, ST_E_DB, "%s", msg);
		record_failed(w, ST_E_DB);
		return ST_E_DB;
	}
	emit(w, &ev);
	return 0;
}
