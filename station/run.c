/* run.c — the run handle: the issuing CA and the audit trail opened, one
 * worker per slot started, commands to the slots, the summary at the end. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"
#include "station/firmware.h"

/* Choose the issuing CA (the profile's, the configured one, or the newest
 * valid one in the token), check that the token offers what it signs
 * with, and warn inside the renewal window; nothing is issued from a CA
 * that fails this. */
static int load_ca(struct job *job, char *err, size_t errlen)
{
	const char *label = st_profile_issuer(job->prof) ? st_profile_issuer(job->prof) :
			    job->cfg->ca_label;
	hsm_session *s = NULL;
	hsm_keytype want;
	st_ca_choice ca;
	/* Issuing, and for inject mode making and wrapping device keys. */
	hsm_mech need[] = { 0, HSM_M_EC_KEY_PAIR_GEN, HSM_M_ECDH1_DERIVE,
			    HSM_M_AES_KEY_WRAP_5649 };
	int rc;

	rc = hsm_session_open(job->h, &s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session: %s", hsm_errmsg(job->h));
		return rc;
	}
	rc = st_ca_select(s, label, st_profile_ca_renewal_days(job->prof), &ca,
			  err, errlen);
	hsm_session_close(s);
	if (rc)
		return rc;
	if (st_profile_ca_key(job->prof) &&
	    (hsm_keytype_parse(st_profile_ca_key(job->prof), &want) || want != ca.type)) {
		snprintf(err, errlen, "profile %s requires a %s issuing CA "
			 "(algorithms.ca_key) but CA '%s' is %s: name another with "
			 "certificate.issuer or --ca-key", st_profile_name(job->prof),
			 st_profile_ca_key(job->prof), ca.label, hsm_keytype_name(ca.type));
		X509_free(ca.cert);
		return ST_E_CONFIG;
	}
	need[0] = st_sigmech_need(ca.type);
	rc = hsm_check_mechanisms(job->h, need, st_profile_key_inject(job->prof) ?
				  ST_ARRAY_SIZE(need) : 1);
	if (rc) {
		snprintf(err, errlen, "issuing CA '%s' (%s): %s", ca.label,
			 hsm_keytype_name(ca.type), hsm_errmsg(job->h));
		X509_free(ca.cert);
		return rc;
	}
	/* Key injection: the token's wrap output must be what the device
	 * unwraps (RFC 5649), proved once here rather than by every unit
	 * failing with the device's "bad argument". */
	if (st_profile_key_inject(job->prof) &&
	    (rc = hsm_inject_check(job->h, HSM_WRAP_AUTO))) {
		snprintf(err, errlen, "key injection (profile %s): %s",
			 st_profile_name(job->prof), hsm_errmsg(job->h));
		X509_free(ca.cert);
		return rc;
	}
	job->ca = ca.cert;
	job->ca_type = ca.type;
	snprintf(job->ca_label, sizeof(job->ca_label), "%s", ca.label);
	if (ca.warning[0] && job->cb) {
		st_event ev = { .kind = ST_EV_WARNING, .detail = ca.warning };

		job->cb(&ev, job->cb_ctx);
	}
	return ST_OK;
}

/* Sign every record from here on with the audit key, and record who runs
 * what: nothing is provisioned unless this start is on record. */
static int audit_start(struct job *job, st_audit **out, char *err, size_t errlen)
{
	const st_run *run = job->run;
	char ca_fp[65], *ca_subj = NULL, slots[16];
	rec_workorder wo;
	st_audit *a = NULL;
	int rc;

	rc = st_audit_open(job->h, job->ca_label, ST_AUDIT_LABEL,
			   job->cfg->station_id, &a, err, errlen);
	if (rc)
		return rc;
	rc = st_audit_use(a, job->rec, err, errlen);
	if (!rc && run->work_order &&
	    (rc = rec_workorder_get(job->rec, run->work_order, &wo)) == ST_E_NOTFOUND) {
		snprintf(err, errlen, "work order %s does not exist: create it with "
			 "'station records workorder create %s --quota N'",
			 run->work_order, run->work_order);
		rc = ST_E_CONFIG;
		goto fail;
	}
	st_x509_fingerprint(job->ca, ca_fp);
	ca_subj = X509_NAME_oneline(X509_get_subject_name(job->ca), NULL, 0);
	snprintf(slots, sizeof(slots), "%d", run->nslots);
	if (!rc)
		rc = rec_event(job->rec, "station_start", NULL,
			       "station", job->cfg->station_id,
			       "profile", st_profile_name(job->prof),
			       "profile_digest", st_profile_digest(job->prof),
			       "profile_version", *st_profile_version(job->prof) ?
			       st_profile_version(job->prof) : NULL,
			       "ca_sha256", ca_fp, "ca_subject", ca_subj,
			       "work_order", run->work_order, "slots", slots,
			       "burn_fuses", run->burn_fuses ? "yes" : "no", NULL);
	if (!rc)
		rc = rec_event(job->rec, "operator_login", NULL,
			       "operator", run->operator_name,
			       "authenticated", run->operator_authenticated ? "yes" : "no",
			       "profile_signer", run->profile_signer,
			       "supervisor", run->supervisor_name,
			       "reprovision_reason", run->reprovision_reason,
			       "reprovision_uid", run->reprovision_uid, NULL);
	/* The firmware this run writes: each image's digest and its SBOM,
	 * whole, so the component query and the evidence bundle read the
	 * SBOMs from the signed records, never from files that may change. */
	for (int i = 0; !rc && st_profile_firmware(job->prof) &&
	     i < st_profile_firmware(job->prof)->n; i++) {
		const st_fw_image *im = &st_profile_firmware(job->prof)->img[i];
		char slot[16], size[24];

		snprintf(slot, sizeof(slot), "%u", im->slot);
		snprintf(size, sizeof(size), "%zu", im->len);
		rc = rec_event(job->rec, "firmware", NULL,
			       "profile", st_profile_name(job->prof),
			       "profile_digest", st_profile_digest(job->prof),
			       "name", im->name, "version", im->version,
			       "slot", slot, "size", size, "sha256", im->sha256_hex,
			       "sbom_sha256", im->sbom_sha256_hex, "sbom", im->sbom,
			       NULL);
	}
	OPENSSL_free(ca_subj);
	if (rc) {
		snprintf(err, errlen, "records: cannot record the station start, so "
			 "nothing is provisioned: %s%s", rec_errmsg(job->rec),
			 records_full(rec_errmsg(job->rec)) ? "; the records disk "
			 "is full: free space, then start again" : "");
		rc = ST_E_DB;
		goto fail;
	}
	*out = a;
	return ST_OK;
fail:
	rec_set_signer(job->rec, NULL, NULL, NULL, 0);
	st_audit_close(a);
	return rc;
}

/* Close the run's audit trail (best effort: every unit is already on
 * record) and let go of the key. */
static void audit_stop(struct job *job, st_audit *a, const st_summary *sum)
{
	char n[5][16];

	snprintf(n[0], sizeof(n[0]), "%d", sum->pass);
	snprintf(n[1], sizeof(n[1]), "%d", sum->fail);
	snprintf(n[2], sizeof(n[2]), "%d", sum->quarantine);
	snprintf(n[3], sizeof(n[3]), "%d", sum->skipped);
	snprintf(n[4], sizeof(n[4]), "%d", sum->slot_errors + sum->record_errors);
	rec_event(job->rec, "operator_logout", NULL,
		  "operator", job->run->operator_name, NULL);
	rec_event(job->rec, "station_stop", NULL, "pass", n[0], "fail", n[1],
		  "quarantine", n[2], "skipped", n[3], "slot_errors", n[4], NULL);
	rec_set_signer(job->rec, NULL, NULL, NULL, 0);
	st_audit_close(a);
}

struct st_run_handle {
	struct job job;
	struct worker workers[ST_MAX_SLOTS];
	uint64_t started;     /* bit i: worker i runs */
	st_audit *audit;      /* the run's audit trail, closed by st_run_wait() */
	int lock_fd;          /* the run lock, shared (st_run_lock) */
};

int st_run_start(hsm *h, rec_store *rec, const st_config *cfg,
		 const st_profile *prof, const st_run *run,
		 st_event_fn cb, void *cb_ctx, st_run_handle **out,
		 char *err, size_t errlen)
{
	struct st_run_handle *r;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (run->nslots < 1 || run->nslots > ST_MAX_SLOTS) {
		snprintf(err, errlen, "between 1 and %d slots, please", ST_MAX_SLOTS);
		return ST_E_INVAL;
	}
	if (st_profile_requires_work_order(prof) && !run->interactive &&
	    !run->work_order) {
		snprintf(err, errlen, "profile %s requires a work order "
			 "(quota.require_work_order): give --work-order ID",
			 st_profile_name(prof));
		return ST_E_CONFIG;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	r->job = (struct job){ .h = h, .rec = rec, .cfg = cfg, .prof = prof,
			       .run = run, .cb = cb, .cb_ctx = cb_ctx };
	/* Held while the run lives: `records close-interrupted` closes a
	 * RUNNING record only when no run holds it.  A store whose directory
	 * cannot hold the lock file runs without (nothing can close its
	 * records then either). */
	rc = st_run_lock(cfg->records_path, false, &r->lock_fd, err, errlen);
	if (rc == ST_E_STATE) {
		free(r);
		return rc;
	}
	rc = load_ca(&r->job, err, errlen);
	if (rc) {
		st_run_unlock(r->lock_fd);
		free(r);
		return rc;
	}
	/* Nothing is provisioned unless the start of the run is on record. */
	rc = audit_start(&r->job, &r->audit, err, errlen);
	if (rc) {
		X509_free(r->job.ca);
		st_run_unlock(r->lock_fd);
		free(r);
		return rc;
	}
	pthread_mutex_init(&r->job.lock, NULL);
	pthread_mutex_init(&r->job.rec_order, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->job.cond, &ca);
	pthread_condattr_destroy(&ca);
	for (int i = 0; i < ST_MAX_SLOTS; i++)
		r->job.ctl[i].cmd = -1;
	for (int i = 0; i < run->nslots; i++) {
		struct worker *w = &r->workers[i];

		*w = (struct worker){ .job = &r->job, .slot = i + 1, .port = run->ports[i] };
		if (pthread_create(&w->thread, NULL, run->interactive ?
				   worker_interactive : worker_main, w)) {
			slot_error(w, ST_E_NOMEM, "slot %d: cannot start a worker", i + 1);
			continue;
		}
		r->started |= (uint64_t)1 << i;
	}
	*out = r;
	return ST_OK;
}

int st_run_command(st_run_handle *r, int slot, st_cmd cmd)
{
	struct slot_ctl *c;
	int rc = ST_OK;

	if (!r || slot < 1 || slot > r->job.run->nslots)
		return ST_E_INVAL;
	c = &r->job.ctl[slot - 1];
	pthread_mutex_lock(&r->job.lock);
	switch (cmd) {
	case ST_CMD_START:
	case ST_CMD_STOP:
		/* A held unit is decided first: stopping would leave it to be
		 * run again, the way round a refused retry. */
		if (c->paused == (cmd == ST_CMD_STOP) || (cmd == ST_CMD_STOP && c->held))
			rc = ST_E_STATE;
		else
			c->paused = cmd == ST_CMD_STOP;
		break;
	case ST_CMD_RETRY:
	case ST_CMD_SKIP:
	case ST_CMD_QUARANTINE:
		if (!c->held || c->cmd >= 0 || (cmd == ST_CMD_RETRY && c->held_quarantine))
			rc = ST_E_STATE;
		else
			c->cmd = (int)cmd;
		break;
	default:
		rc = ST_E_INVAL;
	}
	pthread_cond_broadcast(&r->job.cond);
	pthread_mutex_unlock(&r->job.lock);
	return rc;
}

void st_run_stop(st_run_handle *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->job.lock);
	r->job.stopping = true;
	pthread_cond_broadcast(&r->job.cond);
	pthread_mutex_unlock(&r->job.lock);
}

void st_run_wait(st_run_handle *r, st_summary *sum)
{
	st_summary total = { 0 };

	if (!r)
		return;
	for (int i = 0; i < r->job.run->nslots; i++) {
		const st_summary *s = &r->workers[i].sum;

		if (r->started & ((uint64_t)1 << i))
			pthread_join(r->workers[i].thread, NULL);
		total.pass += s->pass;
		total.fail += s->fail;
		total.quarantine += s->quarantine;
		total.unfused += s->unfused;
		total.skipped += s->skipped;
		total.slot_errors += s->slot_errors;
		total.record_errors += s->record_errors;
		total.quota_full += s->quota_full;
		total.hsm_errors += s->hsm_errors;
	}
	audit_stop(&r->job, r->audit, &total);
	if (sum)
		*sum = total;
	X509_free(r->job.ca);
	pthread_cond_destroy(&r->job.cond);
	pthread_mutex_destroy(&r->job.lock);
	pthread_mutex_destroy(&r->job.rec_order);
	st_run_unlock(r->lock_fd);
	free(r);
}

int st_provision(hsm *h, rec_store *rec, const st_config *cfg,
		 const st_profile *prof, const st_run *run,
		 st_event_fn cb, void *cb_ctx, st_summary *sum,
		 char *err, size_t errlen)
{
	st_run_handle *r = NULL;
	int rc;

	memset(sum, 0, sizeof(*sum));
	rc = st_run_start(h, rec, cfg, prof, run, cb, cb_ctx, &r, err, errlen);
	if (rc)
		return rc;
	st_run_wait(r, sum);
	return ST_OK;
}
