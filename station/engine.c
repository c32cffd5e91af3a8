/* engine.c — the per-unit provisioning state machine, one worker per slot.
 *
 * For each unit: identify → history → device key → certificate (built here,
 * signed in the HSM) → write + read back → proof of possession → fuses (only
 * when armed, intent recorded first, read back after) → final record.  Every
 * step is recorded before it is announced; a unit's PASS is committed to the
 * records before the PASS event is emitted.  If a record cannot be written
 * the slot stops: nothing is provisioned unrecorded. */
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "station.h"
#include "x509.h"

/* How often an interactive slot asks an empty programmer for a unit, and
 * looks for a programmer that is not (or no longer) plugged in. */
#define POLL_MS 300
#define PLUG_MS 1000

/* What the operator has told one slot of an interactive run (job.lock). */
struct slot_ctl {
	bool paused;          /* stopped by the operator or by an error */
	bool held;            /* a unit that did not pass waits for a decision */
	bool held_quarantine; /* ... and its verdict is QUARANTINE */
	int cmd;              /* the decision (st_cmd), -1 while none */
};

/* What every worker shares, read-only once the workers run (except what
 * job.lock guards). */
struct job {
	hsm *h;
	rec_store *rec;
	const st_config *cfg;
	const st_profile *prof;
	const st_run *run;
	st_event_fn cb;
	void *cb_ctx;
	X509 *ca;            /* the issuing CA certificate (each worker dups it) */
	pthread_mutex_t lock; /* guards active[], stopping, ctl[] */
	pthread_cond_t cond;  /* signalled when stopping or ctl[] change */
	char active[ST_MAX_SLOTS][2 * DRV_UID_LEN + 1]; /* uid in work per slot */
	bool stopping;        /* st_run_stop(): finish the unit in work, end */
	struct slot_ctl ctl[ST_MAX_SLOTS];
};

struct worker {
	const struct job *job;
	int slot;
	const char *port;
	pthread_t thread;
	st_summary sum;
};

/* One unit in progress. */
struct unit {
	struct worker *w;
	drv_dev *dev;
	hsm_session *sess;
	hsm_obj ca_priv;
	X509 *ca;
	int64_t id;
	drv_info info;
	char reason[512];
	const char *result;
	const char *fuses;
	int err;
	bool stop_slot;       /* the link or the records failed: end this slot */
	int dup_slot;         /* another slot holds the same device ID */
	char serial[80];
	char fp[65];
	char pub_hex[2 * DRV_P256_POINT_LEN + 1];
	char rot_hex[65];
	char readback_hex[65];
	char *cert_pem;
	int64_t t0;
};

/* Hand an event to the front end. */
static void emit(struct worker *w, st_event *ev)
{
	ev->slot = w->slot;
	ev->port = w->port;
	if (w->job->cb)
		w->job->cb(ev, w->job->cb_ctx);
}

/* Record a step outcome, then announce it.  A step that cannot be recorded
 * stops the slot: returns non-zero. */
static int step(struct unit *u, const char *name, const char *outcome,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int step(struct unit *u, const char *name, const char *outcome,
		const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex, .step = name,
			.outcome = outcome, .detail = detail };
	int rc;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	rc = rec_step(u->w->job->rec, u->id, name, outcome, detail);
	if (rc) {
		snprintf(u->reason, sizeof(u->reason),
			 "cannot record step %s: %s", name, rec_errmsg(u->w->job->rec));
		u->err = rc;
		u->stop_slot = true;
		return rc;
	}
	emit(u->w, &ev);
	return 0;
}

/* Is this error the link to the programmer rather than the unit? */
static bool link_error(int rc)
{
	return rc == ST_E_TIMEOUT || rc == ST_E_PROTO || rc == ST_E_UNPLUGGED ||
	       rc == ST_E_IO;
}

/* A step failed: record it and set the unit's verdict.  Always returns rc. */
static int fail(struct unit *u, const char *name, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct unit *u, const char *name, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(u->reason, sizeof(u->reason), fmt, ap);
	va_end(ap);
	u->err = rc;
	u->result = rc == ST_E_FUSE_CONFLICT ? "QUARANTINE" : "FAIL";
	if (link_error(rc))
		u->stop_slot = true;
	step(u, name, "fail", "%s", u->reason);
	return rc;
}

/* Device key: generated on the chip; only the public point comes back. */
static int do_keygen(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = drv_keygen(u->dev, pub);

	if (rc)
		return fail(u, "keygen", rc, "device key generation failed: %s",
			    drv_errmsg(u->dev));
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	return step(u, "keygen", "ok", "P-256 key generated on the device");
}

/* Build the certificate, have the HSM sign it, check it against the CA. */
static int do_certificate(struct unit *u, const uint8_t pub[DRV_P256_POINT_LEN],
			  X509 **out)
{
	const st_profile *prof = u->w->job->prof;
	uint8_t serial[ST_CERT_SERIAL_LEN];
	char err[256] = "";
	EVP_PKEY *devkey = st_p256_pubkey(pub), *capub = X509_get0_pubkey(u->ca);
	X509 *tmpl = NULL, *cert = NULL;
	int rc = ST_E_CRYPTO;

	if (!devkey) {
		rc = fail(u, "certificate", ST_E_VERIFY,
			  "the device returned an invalid P-256 public key");
		goto cleanup;
	}
	if ((rc = st_x509_random_serial(u->sess, serial))) {
		rc = fail(u, "certificate", rc, "HSM random failed: %s",
			  hsm_session_errmsg(u->sess));
		goto cleanup;
	}
	tmpl = st_x509_device_template(devkey, u->ca, u->info.uid_hex,
				       st_profile_org(prof),
				       st_profile_validity_days(prof), serial);
	if (tmpl)
		cert = st_x509_hsm_sign(tmpl, u->sess, u->ca_priv, err, sizeof(err));
	if (!cert) {
		rc = fail(u, "certificate", ST_E_CRYPTO, "certificate not issued: %s",
			  err[0] ? err : "template");
		goto cleanup;
	}
	if (X509_verify(cert, capub) != 1) {
		rc = fail(u, "certificate", ST_E_VERIFY,
			  "issued certificate does not verify against the CA");
		goto cleanup;
	}
	st_x509_serial_hex(cert, u->serial, sizeof(u->serial));
	st_x509_fingerprint(cert, u->fp);
	rc = step(u, "certificate", "ok", "serial %s sha256 %s", u->serial, u->fp);
	if (!rc) {
		*out = cert;
		cert = NULL;
	}
cleanup:
	X509_free(tmpl);
	X509_free(cert);
	EVP_PKEY_free(devkey);
	return rc;
}

/* Write the certificate and read it back byte for byte. */
static int do_write_cert(struct unit *u, X509 *cert)
{
	uint8_t *der = NULL, back[DRV_MAX_CERT];
	size_t backlen = 0;
	int len = i2d_X509(cert, &der), rc;

	if (len <= 0 || (size_t)len > DRV_MAX_CERT) {
		rc = fail(u, "write-cert", ST_E_INVAL, "certificate too large for the device");
		goto cleanup;
	}
	rc = drv_write_cert(u->dev, der, (size_t)len);
	if (rc) {
		rc = fail(u, "write-cert", rc, "writing the certificate failed: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	rc = drv_read_cert(u->dev, back, sizeof(back), &backlen);
	if (rc) {
		rc = fail(u, "write-cert", rc, "reading the certificate back failed: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	if (backlen != (size_t)len || memcmp(back, der, backlen)) {
		rc = fail(u, "write-cert", ST_E_VERIFY,
			  "the certificate read back differs from the one written");
		goto cleanup;
	}
	rc = step(u, "write-cert", "ok", "%d bytes written and read back", len);
cleanup:
	OPENSSL_free(der);
	return rc;
}

/* Proof of possession: the device signs a fresh HSM-random challenge; the
 * signature must verify under the certificate's public key. */
static int do_pop(struct unit *u, X509 *cert)
{
	uint8_t msg[sizeof(DRV_POP_PREFIX) - 1 + 32], sig[DRV_MAX_SIG];
	uint8_t *chal = msg + sizeof(DRV_POP_PREFIX) - 1;
	size_t siglen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc;

	memcpy(msg, DRV_POP_PREFIX, sizeof(DRV_POP_PREFIX) - 1);
	if (!md) {
		rc = fail(u, "possession", ST_E_NOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = hsm_random(u->sess, chal, 32))) {
		rc = fail(u, "possession", rc, "HSM random failed: %s",
			  hsm_session_errmsg(u->sess));
		goto cleanup;
	}
	rc = drv_sign_challenge(u->dev, chal, 32, sig, sizeof(sig), &siglen);
	if (rc) {
		rc = fail(u, "possession", rc, "the device could not sign the challenge: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) != 1) {
		rc = fail(u, "possession", ST_E_VERIFY,
			  "the device's signature does not verify under its certificate: "
			  "it does not hold the certified key");
		goto cleanup;
	}
	rc = step(u, "possession", "ok", "challenge signed and verified");
cleanup:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Root-of-trust fuses: only when armed; blank → intent recorded, burn, read
 * back; same value → skip; anything else → quarantine, never burn. */
static int do_fuses(struct unit *u)
{
	const struct job *job = u->w->job;
	unsigned bank;
	const uint8_t *rot = st_profile_rot_hash(job->prof, &bank);
	uint8_t cur[DRV_FUSE_BANK_LEN], back[DRV_FUSE_BANK_LEN], zero[DRV_FUSE_BANK_LEN] = { 0 };
	char cur_hex[65];
	uint32_t request_id;
	int rc;

	st_hex(rot, 32, u->rot_hex);
	if (!job->run->burn_fuses) {
		u->fuses = "not-armed";
		return step(u, "fuses", "skip",
			    "not armed (--burn-fuses not given): root of trust not burned");
	}
	rc = drv_fuse_read(u->dev, bank, cur);
	if (rc)
		return fail(u, "fuses", rc, "reading fuse bank %u failed: %s", bank,
			    drv_errmsg(u->dev));
	st_hex(cur, sizeof(cur), cur_hex);
	if (!memcmp(cur, rot, 32)) {
		u->fuses = "already";
		memcpy(u->readback_hex, cur_hex, sizeof(cur_hex));
		return step(u, "fuses", "skip", "bank %u already holds the root-of-trust hash",
			    bank);
	}
	if (memcmp(cur, zero, sizeof(zero))) {
		u->fuses = "conflict";
		memcpy(u->readback_hex, cur_hex, sizeof(cur_hex));
		return fail(u, "fuses", ST_E_FUSE_CONFLICT,
			    "fuse bank %u already holds %s, not the profile's root-of-trust "
			    "hash: unit quarantined, do not burn again", bank, cur_hex);
	}
	if ((rc = hsm_random(u->sess, (uint8_t *)&request_id, sizeof(request_id))))
		return fail(u, "fuses", rc, "HSM random failed: %s",
			    hsm_session_errmsg(u->sess));
	/* The intent is durable before anything irreversible happens. */
	if ((rc = step(u, "fuse-intent", "ok", "bank %u <- %s request %08x", bank,
		       u->rot_hex, request_id)))
		return rc;
	rc = drv_fuse_burn(u->dev, bank, rot, request_id, back);
	if (rc) {
		u->fuses = "burn-failed";
		if (rc == ST_E_FUSE_CONFLICT)
			return fail(u, "fuses", rc, "fuse bank %u cannot take the value: %s",
				    bank, drv_errmsg(u->dev));
		return fail(u, "fuses", rc, "fuse burn failed: %s; the unit must be "
			    "checked before any retry", drv_errmsg(u->dev));
	}
	/* Trust only a fresh read, not the burn reply alone. */
	rc = drv_fuse_read(u->dev, bank, cur);
	if (rc)
		return fail(u, "fuses", rc, "reading fuse bank %u back failed: %s", bank,
			    drv_errmsg(u->dev));
	st_hex(cur, sizeof(cur), u->readback_hex);
	if (memcmp(cur, rot, 32) || memcmp(back, rot, 32)) {
		u->fuses = "mismatch";
		return fail(u, "fuses", ST_E_FUSE_CONFLICT,
			    "fuse bank %u reads back %s after the burn: unit quarantined",
			    bank, u->readback_hex);
	}
	u->fuses = "burned";
	return step(u, "fuses", "ok", "bank %u burned and read back", bank);
}

/* Keep a PEM copy of the issued certificate (for the record and cert_dir). */
static int keep_cert(struct unit *u, X509 *cert)
{
	const char *dir = u->w->job->cfg->cert_dir;
	BIO *b = BIO_new(BIO_s_mem());
	char *data, path[4096];
	long n;
	FILE *f;

	if (!b || !PEM_write_bio_X509(b, cert)) {
		BIO_free(b);
		return ST_E_NOMEM;
	}
	n = BIO_get_mem_data(b, &data);
	u->cert_pem = strndup(data, (size_t)n);
	BIO_free(b);
	if (!u->cert_pem)
		return ST_E_NOMEM;
	if (!dir)
		return ST_OK;
	snprintf(path, sizeof(path), "%s/%s.pem", dir, u->info.uid_hex);
	f = fopen(path, "w");
	if (!f || fputs(u->cert_pem, f) < 0) {
		if (f)
			fclose(f);
		return ST_E_IO;
	}
	return fclose(f) ? ST_E_IO : ST_OK;
}

/* Run every step for the identified unit; sets u->result. */
static void run_unit(struct unit *u)
{
	uint8_t pub[DRV_P256_POINT_LEN];
	X509 *cert = NULL;

	if (u->dup_slot) {
		fail(u, "identify", ST_E_EXISTS, "slot %d is provisioning a unit with "
		     "the same device ID right now: cloned or counterfeit ID; set both "
		     "units aside for a supervisor", u->dup_slot);
		return;
	}
	if (u->info.lifecycle == DRV_LC_LOCKED) {
		fail(u, "identify", ST_E_LOCKED, "the device is already locked and has "
		     "no PASS record here: set it aside for a supervisor");
		return;
	}
	if (step(u, "identify", "ok", "model %s, programmer fw %s, lifecycle %u",
		 u->info.model, u->info.fw_version, u->info.lifecycle))
		return;
	if (do_keygen(u, pub) || do_certificate(u, pub, &cert) ||
	    do_write_cert(u, cert) || do_pop(u, cert) || do_fuses(u))
		goto cleanup;
	if (keep_cert(u, cert)) {
		fail(u, "certificate", ST_E_IO, "cannot keep a copy of the certificate "
		     "in %s", u->w->job->cfg->cert_dir ? u->w->job->cfg->cert_dir : "memory");
		goto cleanup;
	}
	u->result = "PASS";
cleanup:
	X509_free(cert);
}

/* Close the unit's record, then announce the verdict (never before). */
static void finish_unit(struct unit *u)
{
	struct worker *w = u->w;
	rec_unit_result e = {
		.result = u->result ? u->result : "FAIL",
		.reason = u->result && !strcmp(u->result, "PASS") ? NULL : u->reason,
		.cert_serial = u->serial[0] ? u->serial : NULL,
		.cert_sha256 = u->fp[0] ? u->fp : NULL,
		.cert_pem = u->cert_pem,
		.pubkey_hex = u->pub_hex[0] ? u->pub_hex : NULL,
		.rot_hash = u->rot_hex[0] ? u->rot_hex : NULL,
		.fuse_readback = u->readback_hex[0] ? u->readback_hex : NULL,
	};
	st_event ev = { .kind = ST_EV_UNIT_DONE, .uid = u->info.uid_hex,
			.result = e.result, .detail = e.reason, .err = u->err,
			.fuses = u->fuses };
	int rc = rec_unit_end(w->job->rec, u->id, &e);

	if (rc) {
		st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
				.err = rc };
		char msg[768];

		snprintf(msg, sizeof(msg), "unit %s: the record could not be written (%s); "
			 "the unit is NOT passed and the slot stops: fix the records store "
			 "and provision it again", u->info.uid_hex, rec_errmsg(w->job->rec));
		se.detail = msg;
		w->sum.record_errors++;
		u->stop_slot = true;
		emit(w, &se);
		return;
	}
	if (!strcmp(e.result, "PASS")) {
		w->sum.pass++;
		ev.cert_serial = u->serial;
		ev.cert_sha256 = u->fp;
	} else if (!strcmp(e.result, "QUARANTINE")) {
		w->sum.quarantine++;
	} else {
		w->sum.fail++;
	}
	ev.elapsed_ms = st_now_ms() - u->t0;
	emit(w, &ev);
}

/* Report that the slot stopped, with the cause. */
static void slot_error(struct worker *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void slot_error(struct worker *w, int rc, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	st_event ev = { .kind = ST_EV_SLOT_ERROR, .err = rc, .detail = msg };

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->sum.slot_errors++;
	emit(w, &ev);
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

/* This slot is done with its unit (clears only its own entry). */
static void unclaim_uid(struct worker *w)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	job->active[w->slot - 1][0] = '\0';
	pthread_mutex_unlock(&job->lock);
}

/* Identify the next unit and decide whether to provision it.  Returns 1 to
 * provision, 2 when another slot holds the same device ID right now, 0 to
 * skip it (already done), negative to end the slot.  A unit left RUNNING by
 * an interrupted earlier run is closed as FAIL first, so its record says
 * what happened (no other slot can hold it: the ID was claimed). */
static int next_unit(struct worker *w, struct unit *u)
{
	rec_unit_result interrupted = { .result = "FAIL",
		.reason = "interrupted: the station stopped during this unit; "
			  "it was presented again" };
	char last[32];
	int64_t id;
	int rc = drv_identify(u->dev, &u->info);

	if (rc == ST_E_NO_TARGET)
		return ST_E_NO_TARGET;
	if (rc) {
		slot_error(w, rc, "slot %d (%s): identify failed: %s", w->slot, w->port,
			   drv_errmsg(u->dev));
		return rc;
	}
	u->dup_slot = claim_uid(w, u->info.uid_hex);
	if (u->dup_slot)
		return 2;
	rc = rec_find_pass(w->job->rec, u->info.uid_hex, &id);
	if (rc == ST_OK) {
		st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
				.step = "history", .outcome = "skip",
				.detail = "already provisioned (PASS on record): not given a "
					  "second identity; remove the unit" };
		w->sum.skipped++;
		emit(w, &ev);
		return 0;
	}
	if (rc == ST_E_NOTFOUND)
		rc = rec_last_unit(w->job->rec, u->info.uid_hex, &id, last, sizeof(last));
	if (rc == ST_OK && !strcmp(last, "RUNNING"))
		rc = rec_unit_end(w->job->rec, id, &interrupted);
	if (rc != ST_OK && rc != ST_E_NOTFOUND) {
		slot_error(w, rc, "slot %d: records lookup failed: %s", w->slot,
			   rec_errmsg(w->job->rec));
		w->sum.record_errors++;
		return rc;
	}
	return 1;
}

/* What a unit's record starts with (every record of a unit in this run). */
static rec_unit_start unit_start_of(const struct worker *w, const struct unit *u)
{
	const struct job *job = w->job;

	return (rec_unit_start){ .uid = u->info.uid_hex, .slot = w->slot,
		.port = w->port, .station = job->cfg->station_id,
		.operator_name = job->run->operator_name,
		.profile = st_profile_name(job->prof),
		.profile_digest = st_profile_digest(job->prof) };
}

/* Open the unit's record and announce it.  Non-zero (after a slot error)
 * when the record cannot be opened: nothing was done to the unit. */
static int begin_unit(struct worker *w, struct unit *u)
{
	const struct job *job = w->job;
	st_event ev = { .kind = ST_EV_UNIT_START, .uid = u->info.uid_hex };
	rec_unit_start start = unit_start_of(w, u);

	if (rec_unit_begin(job->rec, &start, &u->id)) {
		slot_error(w, ST_E_DB, "slot %d: unit %s: cannot open a record (%s); "
			   "nothing was done to the unit", w->slot,
			   u->info.uid_hex, rec_errmsg(job->rec));
		w->sum.record_errors++;
		return ST_E_DB;
	}
	emit(w, &ev);
	return 0;
}

/* Has the run been stopped, or this slot? */
static bool halted(struct worker *w)
{
	struct job *job = (struct job *)w->job;
	bool h;

	pthread_mutex_lock(&job->lock);
	h = job->stopping || job->ctl[w->slot - 1].paused;
	pthread_mutex_unlock(&job->lock);
	return h;
}

/* The slot worker: open programmer and HSM session, then unit after unit. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct job *job = w->job;
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms };
	drv_dev *dev = NULL;
	hsm_session *sess = NULL;
	hsm_obj ca_priv;
	X509 *ca = X509_dup(job->ca);
	int rc, units = 0;

	if (!ca) {
		slot_error(w, ST_E_NOMEM, "slot %d: out of memory", w->slot);
		goto cleanup;
	}
	rc = hsm_session_open(job->h, &sess);
	if (!rc)
		rc = hsm_find_privkey(sess, job->cfg->ca_label, &ca_priv);
	if (rc) {
		slot_error(w, rc, "slot %d: HSM session failed: %s", w->slot,
			   sess ? hsm_session_errmsg(sess) : hsm_errmsg(job->h));
		goto cleanup;
	}
	rc = drv_open(w->port, &opts, &dev);
	if (rc) {
		slot_error(w, rc, "slot %d (%s): programmer not usable: %s", w->slot,
			   w->port, dev ? drv_errmsg(dev) : st_strerror(rc));
		goto cleanup;
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_READY, .detail = drv_driver_name(dev) };

		emit(w, &ev);
	}
	while ((!job->run->max_units || units < job->run->max_units) && !halted(w)) {
		struct unit u = { .w = w, .dev = dev, .sess = sess, .ca = ca,
				  .ca_priv = ca_priv, .t0 = st_now_ms() };
		bool stop;

		rc = next_unit(w, &u);
		if (rc < 0) {
			unclaim_uid(w);
			break;
		}
		if (rc >= 1) {
			if (begin_unit(w, &u))
				break;
			units++;
			run_unit(&u);
			finish_unit(&u);
		}
		unclaim_uid(w);
		stop = u.stop_slot;
		free(u.cert_pem);
		if (stop) {
			if (u.err && link_error(u.err))
				slot_error(w, u.err, "slot %d (%s): %s", w->slot, w->port,
					   u.reason);
			break;
		}
		rc = drv_release(dev);
		if (rc) {
			slot_error(w, rc, "slot %d (%s): releasing the unit failed: %s",
				   w->slot, w->port, drv_errmsg(dev));
			break;
		}
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_DONE };

		emit(w, &ev);
	}
cleanup:
	drv_close(dev);
	hsm_session_close(sess);
	X509_free(ca);
	return NULL;
}

/* Load the issuing CA certificate and check it matches the key and is
 * valid now; nothing is issued from a CA that fails this. */
static int load_ca(hsm *h, const char *label, X509 **out, char *err, size_t errlen)
{
	hsm_session *s = NULL;
	uint8_t *der = NULL, point[HSM_P256_POINT_LEN];
	const uint8_t *p;
	size_t len = 0;
	EVP_PKEY *pub = NULL;
	X509 *ca = NULL;
	int rc;

	rc = hsm_session_open(h, &s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session: %s", hsm_errmsg(h));
		goto cleanup;
	}
	rc = hsm_cert_load(s, label, &der, &len);
	if (!rc)
		rc = hsm_read_pubkey(s, label, point);
	if (rc) {
		snprintf(err, errlen, "no issuing CA '%s' in the token (%s); run "
			 "'station ca init' first", label, hsm_session_errmsg(s));
		goto cleanup;
	}
	p = der;
	ca = d2i_X509(NULL, &p, (long)len);
	pub = st_p256_pubkey(point);
	rc = ST_E_VERIFY;
	if (!ca || !pub || EVP_PKEY_eq(X509_get0_pubkey(ca), pub) != 1) {
		snprintf(err, errlen, "the CA certificate '%s' does not match its key "
			 "in the token", label);
		goto cleanup;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(ca)) <= 0) {
		snprintf(err, errlen, "the CA certificate '%s' has expired: renew the "
			 "issuing CA before provisioning", label);
		goto cleanup;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(ca)) >= 0) {
		snprintf(err, errlen, "the CA certificate '%s' is not valid yet: check "
			 "the station clock", label);
		goto cleanup;
	}
	*out = ca;
	ca = NULL;
	rc = ST_OK;
cleanup:
	X509_free(ca);
	EVP_PKEY_free(pub);
	free(der);
	hsm_session_close(s);
	return rc;
}

/* Wait on job->cond, with job->lock held, for at most ms (0: no limit). */
static void wait_locked(struct job *job, int ms)
{
	struct timespec t;

	if (ms <= 0) {
		pthread_cond_wait(&job->cond, &job->lock);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&job->cond, &job->lock, &t);
}

/* Stop taking units on this slot until the operator starts it again. */
static void pause_slot(struct worker *w)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	job->ctl[w->slot - 1].paused = true;
	pthread_mutex_unlock(&job->lock);
}

/* Tell the front end the slot has no unit in work, and why. */
static void idle(struct worker *w, const char *why)
{
	st_event ev = { .kind = ST_EV_SLOT_IDLE, .detail = why };

	emit(w, &ev);
}

/* Keep a unit that did not pass in its programmer until the operator
 * decides.  Returns the st_cmd, or -1 when the run or the slot stops
 * first (the unit stays where it is). */
static int hold_unit(struct worker *w, struct unit *u)
{
	struct job *job = (struct job *)w->job;
	struct slot_ctl *c = &job->ctl[w->slot - 1];
	bool q = !strcmp(u->result ? u->result : "FAIL", "QUARANTINE");
	st_event ev = { .kind = ST_EV_UNIT_HELD, .uid = u->info.uid_hex,
			.result = q ? "QUARANTINE" : "FAIL", .err = u->err,
			.detail = q ? "set the unit aside for a supervisor; release it "
				      "from the programmer (skip or quarantine)" :
				      "retry it, skip it (its FAIL stands) or quarantine it" };
	int cmd;

	pthread_mutex_lock(&job->lock);
	c->held = true;
	c->held_quarantine = q;
	c->cmd = -1;
	pthread_mutex_unlock(&job->lock);
	emit(w, &ev);
	pthread_mutex_lock(&job->lock);
	while (c->cmd < 0 && !job->stopping && !c->paused)
		wait_locked(job, 0);
	cmd = c->cmd;
	c->cmd = -1;
	c->held = false;
	pthread_mutex_unlock(&job->lock);
	/* A unit the engine quarantined is already recorded as such. */
	if (q && cmd == ST_CMD_QUARANTINE)
		cmd = ST_CMD_SKIP;
	return cmd;
}

/* The operator sets a failed unit aside: a QUARANTINE record of its own
 * (the FAIL record stays), then the verdict is announced. */
static int quarantine_held(struct worker *w, struct unit *u)
{
	const struct job *job = w->job;
	char reason[768];
	rec_unit_start start = unit_start_of(w, u);
	rec_unit_result e = { .result = "QUARANTINE", .reason = reason };
	st_event ev = { .kind = ST_EV_UNIT_DONE, .uid = u->info.uid_hex,
			.result = "QUARANTINE", .detail = reason, .err = ST_E_STATE };
	int64_t id;

	snprintf(reason, sizeof(reason), "set aside by operator %s after FAIL: %s",
		 job->run->operator_name ? job->run->operator_name : "?", u->reason);
	if (rec_unit_begin(job->rec, &start, &id) ||
	    rec_step(job->rec, id, "quarantine", "ok", reason) ||
	    rec_unit_end(job->rec, id, &e)) {
		slot_error(w, ST_E_DB, "slot %d: unit %s: the quarantine could not be "
			   "recorded (%s); keep the unit aside and fix the records store",
			   w->slot, u->info.uid_hex, rec_errmsg(job->rec));
		w->sum.record_errors++;
		return ST_E_DB;
	}
	w->sum.quarantine++;
	emit(w, &ev);
	return 0;
}

/* Sleep up to ms unless the run or the slot is stopped meanwhile. */
static void nap(struct worker *w, int ms)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	if (!job->stopping && !job->ctl[w->slot - 1].paused)
		wait_locked(job, ms);
	pthread_mutex_unlock(&job->lock);
}

/* A failure that ends serve_units(): an unplugged programmer is waited for
 * (returns 1: reopen it when it is back); anything else pauses the slot
 * until the operator starts it again (returns 0). */
static int gone(struct worker *w, int rc)
{
	if (rc == ST_E_UNPLUGGED)
		return 1;
	pause_slot(w);
	return 0;
}

/* Units one after the other on an open programmer, until the run or the
 * slot stops (0) or the programmer is unplugged (1); another link or
 * records error pauses the slot (0). */
static int serve_units(struct worker *w, drv_dev *dev, hsm_session *sess,
		       X509 *ca, hsm_obj ca_priv)
{
	bool waiting = false;

	while (!halted(w)) {
		struct unit u = { .w = w, .dev = dev, .sess = sess, .ca = ca,
				  .ca_priv = ca_priv, .t0 = st_now_ms() };
		int rc = next_unit(w, &u), cmd = ST_CMD_SKIP;

		if (rc == ST_E_NO_TARGET) {
			unclaim_uid(w);
			if (!waiting)
				idle(w, "waiting for a unit");
			waiting = true;
			nap(w, POLL_MS);
			continue;
		}
		waiting = false;
		if (rc < 0 || (rc >= 1 && begin_unit(w, &u))) {
			unclaim_uid(w);
			return gone(w, rc < 0 ? rc : ST_E_DB);
		}
		if (rc >= 1) {
			run_unit(&u);
			finish_unit(&u);
		}
		if (!u.stop_slot && rc >= 1 && strcmp(u.result ? u.result : "FAIL", "PASS"))
			cmd = hold_unit(w, &u);
		if (cmd == ST_CMD_QUARANTINE && quarantine_held(w, &u))
			u.stop_slot = true;
		unclaim_uid(w);
		free(u.cert_pem);
		if (u.stop_slot) {
			if (u.err && link_error(u.err))
				slot_error(w, u.err, "slot %d (%s): %s", w->slot, w->port,
					   u.reason);
			return gone(w, u.err && link_error(u.err) ? u.err : ST_E_DB);
		}
		if (cmd == ST_CMD_RETRY)
			continue;
		if (cmd < 0)
			return 0;
		rc = drv_release(dev);
		if (rc) {
			slot_error(w, rc, "slot %d (%s): releasing the unit failed: %s",
				   w->slot, w->port, drv_errmsg(dev));
			return gone(w, rc);
		}
	}
	return 0;
}

/* The slot worker of an interactive run: (re)open the programmer whenever
 * the slot is started or the programmer is plugged (back) in, serve units,
 * wait while stopped, until the run ends. */
static void *worker_interactive(void *arg)
{
	struct worker *w = arg;
	struct job *job = (struct job *)w->job;
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms };
	hsm_session *sess = NULL;
	hsm_obj ca_priv;
	X509 *ca = X509_dup(job->ca);
	bool absent = false;  /* "waiting for the programmer" was said */
	int rc;

	if (!ca) {
		slot_error(w, ST_E_NOMEM, "slot %d: out of memory", w->slot);
		goto cleanup;
	}
	rc = hsm_session_open(job->h, &sess);
	if (!rc)
		rc = hsm_find_privkey(sess, job->cfg->ca_label, &ca_priv);
	if (rc) {
		slot_error(w, rc, "slot %d: HSM session failed: %s", w->slot,
			   sess ? hsm_session_errmsg(sess) : hsm_errmsg(job->h));
		goto cleanup;
	}
	for (;;) {
		drv_dev *dev = NULL;
		bool paused;

		pthread_mutex_lock(&job->lock);
		paused = job->ctl[w->slot - 1].paused;
		if (job->stopping) {
			pthread_mutex_unlock(&job->lock);
			break;
		}
		pthread_mutex_unlock(&job->lock);
		if (paused) {
			idle(w, "stopped: start the slot to take units");
			pthread_mutex_lock(&job->lock);
			while (job->ctl[w->slot - 1].paused && !job->stopping)
				wait_locked(job, 0);
			pthread_mutex_unlock(&job->lock);
			continue;
		}
		rc = drv_open(w->port, &opts, &dev);
		if (rc == ST_E_NOTFOUND || rc == ST_E_UNPLUGGED) {
			/* Not plugged in (yet): look again, units start by themselves. */
			drv_close(dev);
			if (!absent)
				idle(w, "waiting for the programmer to be plugged in");
			absent = true;
			nap(w, PLUG_MS);
			continue;
		}
		if (rc) {
			slot_error(w, rc, "slot %d (%s): programmer not usable: %s; check "
				   "it and start the slot again", w->slot, w->port,
				   dev ? drv_errmsg(dev) : st_strerror(rc));
			drv_close(dev);
			pause_slot(w);
			continue;
		}
		absent = false;
		{
			st_event ev = { .kind = ST_EV_SLOT_READY, .detail = drv_driver_name(dev) };

			emit(w, &ev);
		}
		if (serve_units(w, dev, sess, ca, ca_priv))
			nap(w, PLUG_MS);
		drv_close(dev);
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_DONE };

		emit(w, &ev);
	}
cleanup:
	hsm_session_close(sess);
	X509_free(ca);
	return NULL;
}

struct st_run_handle {
	struct job job;
	struct worker workers[ST_MAX_SLOTS];
	unsigned started;     /* bit i: worker i runs */
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
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	r->job = (struct job){ .h = h, .rec = rec, .cfg = cfg, .prof = prof,
			       .run = run, .cb = cb, .cb_ctx = cb_ctx };
	rc = load_ca(h, cfg->ca_label, &r->job.ca, err, errlen);
	if (rc) {
		free(r);
		return rc;
	}
	pthread_mutex_init(&r->job.lock, NULL);
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
		r->started |= 1u << i;
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

		if (r->started & (1u << i))
			pthread_join(r->workers[i].thread, NULL);
		total.pass += s->pass;
		total.fail += s->fail;
		total.quarantine += s->quarantine;
		total.skipped += s->skipped;
		total.slot_errors += s->slot_errors;
		total.record_errors += s->record_errors;
	}
	if (sum)
		*sum = total;
	X509_free(r->job.ca);
	pthread_cond_destroy(&r->job.cond);
	pthread_mutex_destroy(&r->job.lock);
	free(r);
}

const char *const *st_steps(int *n)
{
	static const char *const steps[] = {
		"identify", "keygen", "certificate", "write-cert", "possession", "fuses",
	};

	*n = (int)ST_ARRAY_SIZE(steps);
	return steps;
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
