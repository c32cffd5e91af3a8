/* unit.c — one unit's steps and its verdict.
 *
 * For each unit: identify (a readable device ID) → history → everything that
 * can refuse the unit, read only (the fuse plan against the device's fuses,
 * the lifecycle, the programming conditions) → device key → proof of
 * possession of that key → certificate (built here, signed in the HSM, on
 * record with its PEM before it leaves) → write + read back → fuses (only
 * when armed, intent recorded first, read back after) → final record.  Every
 * step is recorded before it is announced; a unit's PASS is committed to the
 * records before the PASS event is emitted.  A unit that ends otherwise has
 * the certificate issued for it revoked first (st_unit_revoke).  If a record
 * cannot be written the slot stops: nothing is provisioned unrecorded. */
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"
#include "station/firmware.h"


/* Monotonic microseconds, for the per-step times of a unit. */
int64_t unit_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Record a step outcome, then announce it.  A step that cannot be recorded
 * stops the slot: returns non-zero.  d says whether the step must be on
 * disk before the station goes on (docs/records.md, "Durable and lazy
 * writes"): most steps ride in the records' open batch and become durable
 * with the unit's next durable write at the latest — the certificate
 * before it leaves for the device, a burn intent, the unit's end. */
static int vstep(struct unit *u, rec_durability d, st_step s, st_outcome o,
		 const char *fmt, va_list ap)
	__attribute__((format(printf, 5, 0)));
static int vstep(struct unit *u, rec_durability d, st_step s, st_outcome o,
		 const char *fmt, va_list ap)
{
	char detail[512];
	const char *name = st_step_name(s);
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex, .step = s,
			.outcome = o, .detail = detail };
	int rc;

	vsnprintf(detail, sizeof(detail), fmt, ap);
	u->us_rec -= unit_us();
	rc = rec_step_ex(u->w->job->rec, u->id, name, st_outcome_name(o), detail, d);
	u->us_rec += unit_us();
	if (rc) {
		snprintf(u->reason, sizeof(u->reason),
			 "cannot record step %s: %s", name, rec_errmsg(u->w->job->rec));
		u->err = rc;
		u->cause = hsm_gone(rc) ? ST_CAUSE_HSM : ST_CAUSE_RECORDS;
		u->stop_slot = true;
		return rc;
	}
	emit(u->w, &ev);
	return 0;
}

/* One of the engine's steps; it needs no durability of its own
 * (REC_LAZY). */
int step(struct unit *u, st_step s, st_outcome o, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vstep(u, REC_LAZY, s, o, fmt, ap);
	va_end(ap);
	return rc;
}

/* A step named elsewhere (the fuse run, the quota hook); REC_DURABLE: on
 * disk (with every step before it) when this returns. */
int step_as(struct unit *u, st_step s, rec_durability d, st_outcome o,
	    const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vstep(u, d, s, o, fmt, ap);
	va_end(ap);
	return rc;
}

/* A step failed: record it and set the unit's verdict.  Always returns rc. */
int fail(struct unit *u, st_step s, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(u->reason, sizeof(u->reason), fmt, ap);
	va_end(ap);
	/* A pulled cable leaves the unit half-done, not bad: say so, so the
	 * operator re-plugs and runs it again (it is resumable). */
	if (rc == ST_E_UNPLUGGED) {
		char why[sizeof(u->reason)];

		snprintf(why, sizeof(why), "%s", u->reason);
		snprintf(u->reason, sizeof(u->reason), "interrupted: programmer "
			 "unplugged during %s; re-plug and run the unit again (%.*s)",
			 st_step_name(s), (int)sizeof(u->reason) - 120, why);
	}
	u->err = rc;
	u->cause = cause_of_err(rc);
	u->result = rc == ST_E_FUSE_CONFLICT ? ST_VERDICT_QUARANTINE : ST_VERDICT_FAIL;
	if (st_err_is_link(rc))
		u->stop_slot = true;
	if (hsm_session_lost(u->sess))
		u->hsm_lost = true;
	step(u, s, ST_OUTCOME_FAIL, "%s", u->reason);
	return rc;
}

/* Device key: generated on the chip; only the public point comes back.
 * Under a fresh request id, so a KEYGEN whose reply the line lost is asked
 * again and answered with the same key, never a second one. */
static int do_keygen(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN])
{
	uint32_t id;
	int rc = hsm_random(u->sess, (uint8_t *)&id, sizeof(id));

	if (rc)
		return fail(u, ST_STEP_KEYGEN, rc, "HSM random failed: %s",
			    hsm_session_errmsg(u->sess));
	rc = drv_keygen_req(u->dev, id, pub);
	if (rc)
		return fail(u, ST_STEP_KEYGEN, rc, "device key generation failed: %s",
			    drv_errmsg(u->dev));
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	return step(u, ST_STEP_KEYGEN, ST_OUTCOME_OK, "P-256 key generated on the device "
		    "(request %08x)", id);
}

/* Inject mode: the HSM makes the device key as session objects, wraps it
 * for the target's one-time transport key, and destroys its copy before
 * the blob leaves; the station only ever holds the wrapped blob. */
static int do_inject(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN])
{
	uint8_t tkey[DRV_P256_POINT_LEN], eph[HSM_P256_POINT_LEN];
	uint8_t wrapped[DRV_MAX_WRAPPED], installed[DRV_P256_POINT_LEN];
	hsm_obj priv = 0, pubobj = 0;
	bool have = false;
	size_t wlen = 0;
	int rc;

	rc = drv_get_transport_key(u->dev, tkey);
	if (rc) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "the device did not give a transport key: %s",
			  drv_errmsg(u->dev));
		goto out;
	}
	u->us_hsm -= unit_us();
	rc = hsm_inject_keygen(u->sess, &priv, &pubobj, pub);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "HSM device key generation failed: %s",
			  hsm_session_errmsg(u->sess));
		goto out;
	}
	have = true;
	if (hsm_value_readable(u->sess, priv)) {
		rc = fail(u, ST_STEP_KEYGEN, ST_E_HSM, "the HSM would reveal the device key "
			  "in clear (CKA_VALUE readable): refusing to inject it");
		goto out;
	}
	u->us_hsm -= unit_us();
	rc = hsm_inject_wrap(u->sess, priv, tkey, eph, wrapped, sizeof(wrapped), &wlen);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "wrapping the device key failed: %s",
			  hsm_session_errmsg(u->sess));
		goto out;
	}
	/* The HSM's copy goes before the blob leaves the station. */
	hsm_destroy(u->sess, priv);
	hsm_destroy(u->sess, pubobj);
	have = false;
	rc = drv_inject_key(u->dev, eph, wrapped, wlen, installed);
	if (rc) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "the device did not install the injected key: %s",
			  drv_errmsg(u->dev));
		goto out;
	}
	if (memcmp(installed, pub, DRV_P256_POINT_LEN)) {
		rc = fail(u, ST_STEP_KEYGEN, ST_E_VERIFY, "the device installed another key "
			  "than the one injected");
		goto out;
	}
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	rc = step(u, ST_STEP_KEYGEN, ST_OUTCOME_OK, "P-256 key made in the HSM, injected wrapped "
		  "(%zu bytes), HSM copy destroyed", wlen);
out:
	if (have) {
		hsm_destroy(u->sess, priv);
		hsm_destroy(u->sess, pubobj);
	}
	st_wipe(wrapped, sizeof(wrapped));
	return rc;
}

/* PEM text of cert (malloc'ed), or NULL. */
char *pem_of(X509 *cert)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *pem = NULL;
	long n;

	if (b && PEM_write_bio_X509(b, cert)) {
		n = BIO_get_mem_data(b, &data);
		pem = strndup(data, (size_t)n);
	}
	BIO_free(b);
	return pem;
}

/* The durable certificate step: "serial S sha256 H" and, on a line of its
 * own, the PEM (recorded and signed; only the first line is announced). */
static int cert_step(struct unit *u, X509 *cert)
{
	char line[256], *detail = NULL;
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
			.step = ST_STEP_CERTIFICATE, .outcome = ST_OUTCOME_OK, .detail = line };
	int rc;

	free(u->cert_pem);
	u->cert_pem = pem_of(cert);
	snprintf(line, sizeof(line), "serial %s sha256 %s", u->serial, u->fp);
	if (!u->cert_pem || asprintf(&detail, "%s\n%s", line, u->cert_pem) < 0) {
		snprintf(u->reason, sizeof(u->reason), "out of memory recording "
			 "certificate %s", u->serial);
		u->err = ST_E_NOMEM;
		return ST_E_NOMEM;
	}
	u->us_rec -= unit_us();
	rc = rec_step_ex(u->w->job->rec, u->id, st_step_name(ST_STEP_CERTIFICATE), "ok", detail,
			 REC_DURABLE);
	u->us_rec += unit_us();
	free(detail);
	if (rc) {
		snprintf(u->reason, sizeof(u->reason), "cannot record step "
			 "certificate: %s", rec_errmsg(u->w->job->rec));
		u->err = rc;
		u->stop_slot = true;
		return rc;
	}
	u->issued = true;
	emit(u->w, &ev);
	return 0;
}

/* Build the certificate, have the HSM sign it, check it against the CA.
 * Only after proof of possession of pub (do_pop): the CA never signs for
 * a key the device has not shown it holds. */
static int do_certificate(struct unit *u, const uint8_t pub[DRV_P256_POINT_LEN],
			  X509 **out)
{
	const st_profile *prof = u->w->job->prof;
	uint8_t serial[ST_CERT_SERIAL_LEN];
	char err[256] = "";
	int64_t t0 = unit_us(), rec0 = u->us_rec, hsm0 = u->us_hsm;
	EVP_PKEY *devkey = st_p256_pubkey(pub), *capub = X509_get0_pubkey(u->ca);
	X509 *tmpl = NULL, *cert = NULL;
	int rc = ST_E_CRYPTO;

	if (!devkey) {
		rc = fail(u, ST_STEP_CERTIFICATE, ST_E_VERIFY,
			  "the device returned an invalid P-256 public key");
		goto cleanup;
	}
	u->us_hsm -= unit_us();
	rc = st_x509_random_serial(u->sess, serial);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, ST_STEP_CERTIFICATE, rc, "HSM random failed: %s",
			  hsm_session_errmsg(u->sess));
		goto cleanup;
	}
	{
		st_subject_vars v = { .uid = u->info.uid_hex, .serial = u->info.uid_hex,
				      .product = st_profile_name(prof),
				      .model = u->info.model };

		tmpl = st_x509_device_template(devkey, u->ca, st_profile_cert(prof), &v,
					       u->info.uid, sizeof(u->info.uid), serial,
					       err, sizeof(err));
	}
	u->us_hsm -= unit_us();
	if (tmpl)
		cert = st_x509_hsm_sign(tmpl, u->sess, u->ca_priv, u->w->job->ca_type,
					err, sizeof(err));
	u->us_hsm += unit_us();
	if (!cert) {
		rc = fail(u, ST_STEP_CERTIFICATE, ST_E_CRYPTO, "certificate not issued: %s",
			  err[0] ? err : "template");
		goto cleanup;
	}
	if (X509_verify(cert, capub) != 1) {
		rc = fail(u, ST_STEP_CERTIFICATE, ST_E_VERIFY,
			  "issued certificate does not verify against the CA");
		goto cleanup;
	}
	st_x509_serial_hex(cert, u->serial, sizeof(u->serial));
	st_x509_fingerprint(cert, u->fp);
	/* durable, with the certificate itself: an issued certificate is on
	 * record before it can leave the station on the device, so even a
	 * unit that never ends can have it revoked and listed */
	rc = cert_step(u, cert);
	if (!rc) {
		*out = cert;
		cert = NULL;
	}
cleanup:
	X509_free(tmpl);
	X509_free(cert);
	EVP_PKEY_free(devkey);
	/* building, checking, fingerprinting: the rest of this step */
	u->us_x509 += unit_us() - t0 - (u->us_rec - rec0) - (u->us_hsm - hsm0);
	return rc;
}

/* Write the certificate and read it back byte for byte. */
static int do_write_cert(struct unit *u, X509 *cert)
{
	uint8_t *der = NULL, back[DRV_MAX_CERT];
	size_t backlen = 0;
	int len = i2d_X509(cert, &der), rc;

	if (len <= 0 || (size_t)len > DRV_MAX_CERT) {
		rc = fail(u, ST_STEP_WRITE_CERT, ST_E_INVAL, "certificate too large for the device");
		goto cleanup;
	}
	rc = drv_write_cert(u->dev, der, (size_t)len);
	if (rc) {
		rc = fail(u, ST_STEP_WRITE_CERT, rc, "writing the certificate failed: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	rc = drv_read_cert(u->dev, back, sizeof(back), &backlen);
	if (rc) {
		rc = fail(u, ST_STEP_WRITE_CERT, rc, "reading the certificate back failed: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	if (backlen != (size_t)len || memcmp(back, der, backlen)) {
		rc = fail(u, ST_STEP_WRITE_CERT, ST_E_VERIFY,
			  "the certificate read back differs from the one written");
		goto cleanup;
	}
	rc = step(u, ST_STEP_WRITE_CERT, ST_OUTCOME_OK, "%d bytes written and read back", len);
cleanup:
	OPENSSL_free(der);
	return rc;
}

/* Proof of possession: the device signs a fresh HSM-random challenge; the
 * signature must verify under key — before issuance the public key the
 * device returned (a programmer that reports a key it does not hold gets
 * no certificate), on a resumed locked unit its certificate's key. */
static int do_pop(struct unit *u, EVP_PKEY *key, const char *what)
{
	uint8_t msg[sizeof(DRV_POP_PREFIX) - 1 + 32], sig[DRV_MAX_SIG];
	uint8_t *chal = msg + sizeof(DRV_POP_PREFIX) - 1;
	size_t siglen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc;

	memcpy(msg, DRV_POP_PREFIX, sizeof(DRV_POP_PREFIX) - 1);
	if (!md) {
		rc = fail(u, ST_STEP_POSSESSION, ST_E_NOMEM, "out of memory");
		goto cleanup;
	}
	if ((rc = hsm_random(u->sess, chal, 32))) {
		rc = fail(u, ST_STEP_POSSESSION, rc, "HSM random failed: %s",
			  hsm_session_errmsg(u->sess));
		goto cleanup;
	}
	rc = drv_sign_challenge(u->dev, chal, 32, sig, sizeof(sig), &siglen);
	if (rc) {
		rc = fail(u, ST_STEP_POSSESSION, rc, "the device could not sign the challenge: %s",
			  drv_errmsg(u->dev));
		goto cleanup;
	}
	if (!key || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) != 1) {
		rc = fail(u, ST_STEP_POSSESSION, ST_E_VERIFY,
			  "the device's signature does not verify under %s: it does "
			  "not hold that key (a programmer or chip reporting a key it "
			  "does not hold); no certificate issued, set the unit aside",
			  what);
		goto cleanup;
	}
	rc = step(u, ST_STEP_POSSESSION, ST_OUTCOME_OK, "challenge signed and verified under %s",
		  what);
cleanup:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Fuse-run callbacks: record through step_as() (durable when the fuse run
 * says so: a burn intent; then announced). */
static int fuse_record(void *ctx, st_step s, st_outcome o, const char *detail,
		       bool durable)
{
	return step_as(ctx, s, durable ? REC_DURABLE : REC_LAZY, o, "%s", detail);
}

static int fuse_request_id(void *ctx, uint32_t *id)
{
	struct unit *u = ctx;

	return hsm_random(u->sess, (uint8_t *)id, sizeof(*id));
}

/* The fuse plan (station/fuses.c): only when armed; each field checked,
 * burned only when blank (intent recorded first), verified by a fresh
 * read; anything else quarantines the unit.  Lifecycle last. */
static int do_fuses(struct unit *u)
{
	const struct job *job = u->w->job;
	st_fuse_run run = { .dev = u->dev, .plan = st_profile_fuse_plan(job->prof),
			    .lifecycle = u->info.lifecycle, .banks = u->info.fuse_banks,
			    .bitprog_banks = u->info.bitprog_banks,
			    .resume = &u->hist.fuses,
			    .record = fuse_record, .request_id = fuse_request_id, .ctx = u };
	int rc;

	st_hex(st_profile_rot_hash(job->prof, NULL), 32, u->rot_hex);
	if (!job->run->burn_fuses) {
		u->fuses = ST_FUSES_NOT_ARMED;
		return step(u, ST_STEP_FUSES, ST_OUTCOME_SKIP,
			    "not armed (--burn-fuses not given): no fuse burned");
	}
	rc = st_fuse_run_plan(&run);
	u->fuses = run.summary;
	if (run.readback_hex[0])
		memcpy(u->readback_hex, run.readback_hex, sizeof(u->readback_hex));
	if (!rc)
		return step(u, ST_STEP_FUSES, ST_OUTCOME_OK, "fuse plan complete (%s)",
			    st_fuses_name(run.summary));
	if (u->stop_slot)
		return rc; /* a record could not be written */
	fail(u, ST_STEP_FUSES, rc, "%s", run.reason);
	if (run.quarantine) {
		u->result = ST_VERDICT_QUARANTINE;
		u->cause = ST_CAUSE_FUSE_CONFLICT;
	}
	u->interrupted = run.interrupted;
	if (run.interrupted)
		u->cause = ST_CAUSE_INTERRUPTED;
	return rc;
}

/* Everything that can refuse the unit, read only, before it gets a key or
 * a certificate: every field of the fuse plan against the device's fuses
 * (armed or not: a unit holding another root-of-trust hash never gets an
 * identity), the plan's lifecycle step, and, when armed with something to
 * burn, the programming conditions (fuses.c decides, as the burn would). */
static int do_precheck(struct unit *u)
{
	const struct job *job = u->w->job;
	st_fuse_run run = { .dev = u->dev, .plan = st_profile_fuse_plan(job->prof),
			    .lifecycle = u->info.lifecycle, .banks = u->info.fuse_banks,
			    .bitprog_banks = u->info.bitprog_banks,
			    .ctx = u };
	int rc = st_fuse_check_plan(&run, job->run->burn_fuses);

	if (!rc)
		return step(u, ST_STEP_FUSE_CHECK, ST_OUTCOME_OK, "fuse plan checked against the "
			    "device before any key or certificate: nothing refuses "
			    "it%s", job->run->burn_fuses ? "" : " (not armed: nothing "
			    "will be burned)");
	u->fuses = run.summary;
	if (run.readback_hex[0])
		memcpy(u->readback_hex, run.readback_hex, sizeof(u->readback_hex));
	fail(u, ST_STEP_FUSE_CHECK, rc, "%s; no key or certificate issued", run.reason);
	if (run.quarantine) {
		u->result = ST_VERDICT_QUARANTINE;
		u->cause = ST_CAUSE_FUSE_CONFLICT;
	}
	return rc;
}

/* Keep a PEM copy of a PASS unit's certificate in cert_dir (the record
 * has it already). */
static int keep_cert(struct unit *u, X509 *cert)
{
	const char *dir = u->w->job->cfg->cert_dir;
	char path[4096];
	FILE *f;

	if (!u->cert_pem)
		u->cert_pem = pem_of(cert);
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


/* A device ID of all zero or all FF bits is what a programmer reads from
 * a missing or badly seated chip, not an identity. */
bool uid_unreadable(const drv_info *info)
{
	bool zero = true, ones = true;

	for (size_t i = 0; i < sizeof(info->uid); i++) {
		zero &= info->uid[i] == 0x00;
		ones &= info->uid[i] == 0xff;
	}
	return zero || ones;
}

/* Keygen (or injection) and proof of possession of the new key; pub gets
 * its public point.  Nothing is issued here. */
static int new_key(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN])
{
	int64_t t0 = unit_us(), rec0 = u->us_rec;
	EVP_PKEY *key;
	int rc;

	rc = st_profile_key_inject(u->w->job->prof) ? do_inject(u, pub) :
	     do_keygen(u, pub);
	if (rc || (rc = measure(u, ST_MEAS_KEYGEN_MS, ms_since(u, t0, rec0))))
		return rc;
	key = st_p256_pubkey(pub);
	if (!key)
		return fail(u, ST_STEP_POSSESSION, ST_E_VERIFY, "the device returned an "
			    "invalid P-256 public key; no certificate issued");
	rc = do_pop(u, key, "the public key the device returned");
	EVP_PKEY_free(key);
	return rc;
}

/* Run every step for the identified unit; sets u->result. */
void run_unit(struct unit *u)
{
	uint8_t pub[DRV_P256_POINT_LEN], salt[32];
	bool esp = st_profile_esp_identity(u->w->job->prof);
	X509 *cert = NULL;
	bool fw_first;
	int resumed;

	if (uid_unreadable(&u->info)) {
		fail(u, ST_STEP_IDENTIFY, ST_E_DEVICE, "the device ID could not be read (it "
		     "reads %s): the programmer or the chip did not answer with an "
		     "identity; check the contact (seat the unit again) and run it "
		     "again; no key or certificate was issued", u->info.uid_hex);
		u->cause = ST_CAUSE_NO_ID;
		return;
	}
	if (u->dup_slot) {
		fail(u, ST_STEP_IDENTIFY, ST_E_EXISTS, "slot %d is provisioning a unit with "
		     "the same device ID right now: cloned or counterfeit ID; set both "
		     "units aside for a supervisor", u->dup_slot);
		u->cause = ST_CAUSE_CLONE;
		return;
	}
	if (u->info.lifecycle == DRV_LC_LOCKED &&
	    (!u->hist.cert_unit || u->hist.cert_revoked || !u->hist.fuses.lock_intended)) {
		fail(u, ST_STEP_IDENTIFY, ST_E_LOCKED, "the device is already locked and has "
		     "no PASS record here: set it aside for a supervisor");
		return;
	}
	if (step(u, ST_STEP_IDENTIFY, ST_OUTCOME_OK, "model %s, programmer fw %s, lifecycle %u",
		 u->info.model, u->info.fw_version, u->info.lifecycle))
		return;
	/* The MES may refuse the unit; nothing is done to it before. */
	if (route_check(u) || measure_conditions(u))
		return;
	/* A unit resumed with the identity its history expects is issued
	 * nothing: its fuse run checks every field before it burns.  A unit
	 * that is not resumed is checked whole before a key or certificate
	 * (do_precheck).  The certificate's key is the key the device proved
	 * it holds (the same bytes), and the certificate is read back byte
	 * for byte: a second proof after the write would prove nothing more. */
	/* An ESP32-C3's certificate and key are read back by its factory
	 * app: an open unit cut before the app was written whole gets the
	 * profile's images first, so there is an app to ask (docs/esp32.md,
	 * "End to end"). */
	fw_first = esp && u->info.lifecycle != DRV_LC_LOCKED && u->hist.cert_unit &&
		   !u->hist.cert_revoked;
	if (fw_first && fw_write(u))
		goto cleanup;
	resumed = resume_identity(u, &cert);
	if (resumed < 0)
		goto cleanup;
	if (resumed) {
		if (do_pop(u, X509_get0_pubkey(cert), "its certificate's key") ||
		    (!fw_first && fw_write(u)) || do_fuses(u))
			goto cleanup;
	} else if (esp) {
		/* an ESP32-C3's identity: docs/esp32.md, "Identity" */
		/* the factory app, once written, proves the chip derives the
		 * certified key (docs/esp32.md, "The factory app") */
		if (do_precheck(u) || fw_precheck(u) || esp_identity_key(u, pub, salt) ||
		    do_certificate(u, pub, &cert) || esp_identity_write(u, cert, salt) ||
		    fw_write(u) ||
		    (esp_factory_app(u) && do_pop(u, X509_get0_pubkey(cert), "the key the "
					   "station certified (signed by the factory app)")) ||
		    do_fuses(u))
			goto cleanup;
	} else if (do_precheck(u) || fw_precheck(u) || new_key(u, pub) ||
		   do_certificate(u, pub, &cert) ||
		   do_write_cert(u, cert) || fw_write(u) || do_fuses(u)) {
		goto cleanup;
	}
	/* After the lock: what the device proves it holds, signed with the
	 * key the station just certified (docs/firmware.md). */
	if (fw_attest(u, cert))
		goto cleanup;
	if (keep_cert(u, cert)) {
		fail(u, ST_STEP_CERTIFICATE, ST_E_IO, "cannot keep a copy of the certificate "
		     "in %s", u->w->job->cfg->cert_dir ? u->w->job->cfg->cert_dir : "memory");
		goto cleanup;
	}
	if (measure_link(u))
		goto cleanup;
	/* Unarmed: the identity is issued and proven, the fuses and the
	 * lifecycle are untouched: not a locked PASS but UNFUSED, which a
	 * later armed run finishes (docs/fuses.md).  Every target, a TPM's
	 * write-once NV fields included, takes the same plan. */
	u->result = u->w->job->run->burn_fuses ? ST_VERDICT_PASS : ST_VERDICT_UNFUSED;
cleanup:
	X509_free(cert);
}



/* A unit that does not end PASS keeps no valid identity: the certificate
 * issued for it (or, resumed, the one on the device) is revoked before its
 * record closes, so a crash in between leaves it revoked.  Returns non-zero
 * (after a slot error) when that cannot be recorded. */
static int revoke_unit_cert(struct unit *u, st_verdict result)
{
	struct worker *w = u->w;
	char why[768], by[160], serial[80] = "", err[512] = "";
	int rc;

	/* PASS and UNFUSED keep their identity; an interrupted end is
	 * decided at the unit's next presentation (revoke_abandoned) */
	if (!u->serial[0] || st_verdict_good(result) ||
	    u->interrupted)
		return 0;
	snprintf(why, sizeof(why), "the unit ended %s: %.600s", st_verdict_name(result),
		 u->reason);
	snprintf(by, sizeof(by), "station %s", w->job->cfg->station_id ?
		 w->job->cfg->station_id : "?");
	rc = st_unit_revoke(w->job->rec, u->id, u->issued ? NULL : u->serial,
			    REC_CRL_CESSATION, why, by, serial, sizeof(serial),
			    err, sizeof(err));
	if (rc == ST_OK) {
		step(u, ST_STEP_REVOKE, ST_OUTCOME_OK, "certificate %s revoked (%s): the unit did "
		     "not pass", serial, st_crl_reason_name(REC_CRL_CESSATION));
		return 0;
	}
	if (rc == ST_E_EXISTS || rc == ST_E_NOTFOUND || rc == ST_E_STATE)
		return 0;
	{
		st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
				.err = rc };
		char msg[1024];

		/* the revocation is a signed record: a lost token is the cause
		 * to name, as for any record the unit could not write */
		snprintf(msg, sizeof(msg), "slot %d: %sunit %s: the unit is NOT "
			 "passed and its certificate %s could not be revoked (%s); "
			 "the slot stops: %s, then run 'station records "
			 "close-interrupted'", w->slot, hsm_gone(rc) ? "the HSM "
			 "session or token was lost: " : "", u->info.uid_hex,
			 u->serial, err, hsm_gone(rc) ? "put the token back, restart "
			 "the station" : "fix the records store");
		se.detail = msg;
		emit(w, &se);
	}
	record_failed(w, rc);
	u->stop_slot = true;
	u->stop_said = true;
	return rc;
}

/* Close the unit's record, then announce the verdict (never before). */
/* A PASS unit's label (labels.dir): it is recorded already, so a label
 * that cannot be made is a warning (`station label print UID` remakes it),
 * never a changed verdict. */
static void pass_label(struct worker *w, struct unit *u)
{
	char err[600], msg[900];
	st_event ev = { .kind = ST_EV_WARNING, .uid = u->info.uid_hex };
	st_label_files *files;
	int rc;

	if (!w->job->cfg->labels_dir)
		return;
	files = malloc(sizeof(*files));   /* big: off the slot's stack */
	rc = files ? st_label_write(w->job->cfg, st_profile_label(w->job->prof),
				    u->info.uid_hex, u->serial, u->fp, files, err,
				    sizeof(err)) : ST_E_NOMEM;
	free(files);
	if (rc == ST_OK)
		return;
	if (rc == ST_E_NOMEM)
		snprintf(err, sizeof(err), "out of memory");
	snprintf(msg, sizeof(msg), "slot %d: unit %s passed but its label was not "
		 "made: %s; make it again with `station label print %s`", w->slot,
		 u->info.uid_hex, err, u->info.uid_hex);
	ev.detail = msg;
	emit(w, &ev);
}

void finish_unit(struct unit *u)
{
	struct worker *w = u->w;
	/* An interrupted end (an intent left open) holds no certificate: the
	 * next presentation resumes it (the certificate then sits on that
	 * record) or revokes it (revoke_abandoned); it is not revoked here. */
	bool cert = !u->interrupted;
	bool good = st_verdict_good(u->result);
	rec_unit_result e = {
		.result = st_verdict_name(u->result),
		.reason = good ? NULL : u->reason,
		.cert_serial = cert && u->serial[0] ? u->serial : NULL,
		.cert_sha256 = cert && u->fp[0] ? u->fp : NULL,
		.cert_pem = cert ? u->cert_pem : NULL,
		.pubkey_hex = cert && u->pub_hex[0] ? u->pub_hex : NULL,
		.rot_hash = u->rot_hex[0] ? u->rot_hex : NULL,
		.fuse_readback = u->readback_hex[0] ? u->readback_hex : NULL,
		.firmware = u->firmware[0] ? u->firmware : NULL,
		.attestation = u->attestation[0] ? u->attestation : NULL,
		.measurements = unit_meas_text(u),
		.flags = unit_flags_text(u),
	};
	st_event ev = { .kind = ST_EV_UNIT_DONE, .uid = u->info.uid_hex,
			.result = u->result, .detail = e.reason, .err = u->err,
			.cause = good ? ST_CAUSE_NONE : u->cause ? u->cause :
				 u->err ? cause_of_err(u->err) : ST_CAUSE_DEVICE,
			.fuses = u->fuses, .measurements = e.measurements,
			.flags = e.flags };
	const st_run *run = w->job->run;
	int64_t t = unit_us();
	int rc;

	if (revoke_unit_cert(u, u->result))
		return;         /* left RUNNING, as after a crash */
	rc = rec_unit_end(w->job->rec, u->id, &e);

	u->us_rec += unit_us() - t;
	if (!rc && run->quota && run->work_order)
		run->quota->finish(run->quota->ctx, run->work_order,
				   u->info.uid_hex, u->result);
	if (rc) {
		st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
				.err = rc };
		char msg[768];

		if (!hsm_gone(rc) && records_full(rec_errmsg(w->job->rec)))
			records_stop_msg(msg, sizeof(msg), w, u->info.uid_hex,
					 rec_errmsg(w->job->rec), true);
		else
			snprintf(msg, sizeof(msg), "slot %d: %sunit %s: the record could not be "
				 "written (%s); the unit is NOT passed and the slot stops: %s and "
				 "provision it again", w->slot,
				 hsm_gone(rc) ? "the HSM session or token was lost: " : "",
				 u->info.uid_hex, rec_errmsg(w->job->rec),
				 hsm_gone(rc) ? "put the token back, restart the station" :
				 "fix the records store");
		se.detail = msg;
		record_failed(w, rc);
		u->stop_slot = true;
		u->stop_said = true;
		emit(w, &se);
		return;
	}
	if (good) {
		if (u->result == ST_VERDICT_PASS) {
			w->sum.pass++;
			pass_label(w, u);
		} else
			w->sum.unfused++;
		ev.cert_serial = u->serial;
		ev.cert_sha256 = u->fp;
	} else if (u->result == ST_VERDICT_QUARANTINE) {
		w->sum.quarantine++;
	} else {
		w->sum.fail++;
	}
	ev.elapsed_ms = st_now_ms() - u->t0;
	{
		drv_linkstat now;

		drv_link_stats(u->dev, &now);
		ev.link_commands = (int64_t)(now.commands - u->link0.commands);
		ev.link_retries = (int64_t)(now.retries - u->link0.retries);
		ev.link_garbled = (int64_t)(now.garbled - u->link0.garbled);
		ev.link_silent = (int64_t)(now.silent - u->link0.silent);
	}
	ev.us_records = u->us_rec;
	ev.us_hsm = u->us_hsm;
	ev.us_x509 = u->us_x509;
	ev.us_device = ev.elapsed_ms * 1000 - u->us_rec - u->us_hsm - u->us_x509;
	if (ev.us_device < 0)           /* elapsed_ms is whole milliseconds */
		ev.us_device = 0;
	emit(w, &ev);
}
