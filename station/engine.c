/* engine.c — the per-unit provisioning state machine, one worker per slot.
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

#include "base.h"
#include "station/st_int.h"
#include "device-drivers/drv.h"
#include "station.h"
#include "station/fuses.h"
#include "station/roles.h"
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
	char ca_label[128];  /* the CA chosen for this run */
	hsm_keytype ca_type;
	pthread_mutex_t lock; /* guards active[], live[], stopping, ctl[] */
	pthread_cond_t cond;  /* signalled when stopping or ctl[] change */
	char active[ST_MAX_SLOTS][2 * DRV_UID_LEN + 1]; /* uid in work per slot */
	int64_t live[ST_MAX_SLOTS]; /* unit record open per slot (0: none) */
	/* Orders the interrupted-run checks of next_unit.  A unit record's
	 * birth is marked live from inside rec_unit_begin_ex (begun_live),
	 * under the store's lock, so no slot can read a new RUNNING row
	 * before it is live (and close a clone's record as "interrupted")
	 * — without holding this across the begin's commit wait. */
	pthread_mutex_t rec_order;
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

#define HIST_ABANDONED 16
#define HIST_INTENTS 16

/* What the whole history of a device says, every record and step oldest
 * first (read_history): the identity that should be on it, the burns
 * whose outcome no record has, and the certificates left behind.  Any
 * sequence of interruptions is resumed from this, never from the newest
 * record alone. */
struct history {
	int64_t cert_unit;      /* record that issued the identity expected on
				 * the device (0: none) */
	char cert_serial[80], cert_fp[65];
	bool cert_revoked;      /* that identity is on the revocation list */
	bool lock_intended;     /* a lifecycle intent was recorded after it */
	int64_t last_unit;      /* newest record, its state */
	char last_state[16];
	struct {                /* issued certificates neither current nor
				 * revoked: revoked when the unit goes on */
		int64_t unit;
		char serial[80];
	} abandoned[HIST_ABANDONED];
	int nabandoned;
	struct {                /* burn intents without an outcome */
		char field[32];
		char detail[160];
	} intent[HIST_INTENTS];
	int nintents;
	char pending[1024];     /* their details, for the fuse run */
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
	bool stop_said;       /* ...and that was already reported (slot error) */
	bool hsm_lost;        /* the HSM session or token went away */
	int dup_slot;         /* another slot holds the same device ID */
	char serial[80];
	char fp[65];
	char pub_hex[2 * DRV_P256_POINT_LEN + 1];
	char rot_hex[65];
	char readback_hex[65];
	char *cert_pem;
	bool issued;          /* the CA signed a certificate for this record */
	int64_t t0;
	int64_t us_rec, us_hsm, us_x509; /* where the time went (unit_us) */
	char reprovision[768]; /* re-provisioned: who, why, the revoked serial */
	bool interrupted;     /* ended with an intent open (link lost): its
			       * record holds no certificate, the next
			       * presentation resumes or revokes it */
	struct history hist;  /* what every earlier record of the unit says */
	drv_linkstat link0;   /* the link's counters when this unit began */
};

/* Monotonic microseconds, for the per-step times of a unit. */
static int64_t unit_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Hand an event to the front end. */
static void emit(struct worker *w, st_event *ev)
{
	ev->slot = w->slot;
	ev->port = w->port;
	if (w->job->cb)
		w->job->cb(ev, w->job->cb_ctx);
}

/* Record a step outcome, then announce it.  A step that cannot be recorded
 * stops the slot: returns non-zero.  d says whether the step must be on
 * disk before the station goes on (docs/records.md, "Durable and lazy
 * writes"): most steps ride in the records' open batch and become durable
 * with the unit's next durable write at the latest — the certificate
 * before it leaves for the device, a burn intent, the unit's end. */
static int vstep(struct unit *u, rec_durability d, const char *name,
		 const char *outcome, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));
static int vstep(struct unit *u, rec_durability d, const char *name,
		 const char *outcome, const char *fmt, va_list ap)
{
	char detail[512];
	st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex, .step = name,
			.outcome = outcome, .detail = detail };
	int rc;

	vsnprintf(detail, sizeof(detail), fmt, ap);
	u->us_rec -= unit_us();
	rc = rec_step_ex(u->w->job->rec, u->id, name, outcome, detail, d);
	u->us_rec += unit_us();
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

/* A step that needs no durability of its own (REC_LAZY). */
static int step(struct unit *u, const char *name, const char *outcome,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int step(struct unit *u, const char *name, const char *outcome,
		const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vstep(u, REC_LAZY, name, outcome, fmt, ap);
	va_end(ap);
	return rc;
}

/* A step that is on disk (with every step before it) when this returns. */
static int step_durable(struct unit *u, const char *name, const char *outcome,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int step_durable(struct unit *u, const char *name, const char *outcome,
			const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vstep(u, REC_DURABLE, name, outcome, fmt, ap);
	va_end(ap);
	return rc;
}

/* Errors that mean the HSM (session, token) went away, not the device. */
static bool hsm_gone(int rc)
{
	return rc == ST_E_HSM || rc == ST_E_NOTOKEN || rc == ST_E_PIN_LOCKED;
}

/* A record could not be written: count it against the right cause.  With
 * signed records, a lost HSM is why the audit key cannot sign: exit 3 (HSM),
 * not 4 (records store). */
static void record_failed(struct worker *w, int rc)
{
	if (hsm_gone(rc)) {
		w->sum.hsm_errors++;
		w->sum.slot_errors++;
	} else {
		w->sum.record_errors++;
	}
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
	/* A pulled cable leaves the unit half-done, not bad: say so, so the
	 * operator re-plugs and runs it again (it is resumable). */
	if (rc == ST_E_UNPLUGGED) {
		char why[sizeof(u->reason)];

		snprintf(why, sizeof(why), "%s", u->reason);
		snprintf(u->reason, sizeof(u->reason), "interrupted: programmer "
			 "unplugged during %s; re-plug and run the unit again (%.*s)",
			 name, (int)sizeof(u->reason) - 120, why);
	}
	u->err = rc;
	u->result = rc == ST_E_FUSE_CONFLICT ? "QUARANTINE" : "FAIL";
	if (st_err_is_link(rc))
		u->stop_slot = true;
	if (hsm_session_lost(u->sess))
		u->hsm_lost = true;
	step(u, name, "fail", "%s", u->reason);
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
		return fail(u, "keygen", rc, "HSM random failed: %s",
			    hsm_session_errmsg(u->sess));
	rc = drv_keygen_req(u->dev, id, pub);
	if (rc)
		return fail(u, "keygen", rc, "device key generation failed: %s",
			    drv_errmsg(u->dev));
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	return step(u, "keygen", "ok", "P-256 key generated on the device "
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
		rc = fail(u, "keygen", rc, "the device did not give a transport key: %s",
			  drv_errmsg(u->dev));
		goto out;
	}
	u->us_hsm -= unit_us();
	rc = hsm_inject_keygen(u->sess, &priv, &pubobj, pub);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, "keygen", rc, "HSM device key generation failed: %s",
			  hsm_session_errmsg(u->sess));
		goto out;
	}
	have = true;
	if (hsm_value_readable(u->sess, priv)) {
		rc = fail(u, "keygen", ST_E_HSM, "the HSM would reveal the device key "
			  "in clear (CKA_VALUE readable): refusing to inject it");
		goto out;
	}
	u->us_hsm -= unit_us();
	rc = hsm_inject_wrap(u->sess, priv, tkey, eph, wrapped, sizeof(wrapped), &wlen);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, "keygen", rc, "wrapping the device key failed: %s",
			  hsm_session_errmsg(u->sess));
		goto out;
	}
	/* The HSM's copy goes before the blob leaves the station. */
	hsm_destroy(u->sess, priv);
	hsm_destroy(u->sess, pubobj);
	have = false;
	rc = drv_inject_key(u->dev, eph, wrapped, wlen, installed);
	if (rc) {
		rc = fail(u, "keygen", rc, "the device did not install the injected key: %s",
			  drv_errmsg(u->dev));
		goto out;
	}
	if (memcmp(installed, pub, DRV_P256_POINT_LEN)) {
		rc = fail(u, "keygen", ST_E_VERIFY, "the device installed another key "
			  "than the one injected");
		goto out;
	}
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	rc = step(u, "keygen", "ok", "P-256 key made in the HSM, injected wrapped "
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
static char *pem_of(X509 *cert)
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
			.step = "certificate", .outcome = "ok", .detail = line };
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
	rc = rec_step_ex(u->w->job->rec, u->id, "certificate", "ok", detail,
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
		rc = fail(u, "certificate", ST_E_VERIFY,
			  "the device returned an invalid P-256 public key");
		goto cleanup;
	}
	u->us_hsm -= unit_us();
	rc = st_x509_random_serial(u->sess, serial);
	u->us_hsm += unit_us();
	if (rc) {
		rc = fail(u, "certificate", rc, "HSM random failed: %s",
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
	if (!key || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) != 1) {
		rc = fail(u, "possession", ST_E_VERIFY,
			  "the device's signature does not verify under %s: it does "
			  "not hold that key (a programmer or chip reporting a key it "
			  "does not hold); no certificate issued, set the unit aside",
			  what);
		goto cleanup;
	}
	rc = step(u, "possession", "ok", "challenge signed and verified under %s",
		  what);
cleanup:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Fuse-run callbacks: record through step() (durable when the fuse run
 * says so: a burn intent; then announced). */
static int fuse_record(void *ctx, const char *name, const char *outcome,
		       const char *detail, bool durable)
{
	return durable ? step_durable(ctx, name, outcome, "%s", detail) :
			 step(ctx, name, outcome, "%s", detail);
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
			    .pending = u->hist.pending[0] ? u->hist.pending : NULL,
			    .record = fuse_record, .request_id = fuse_request_id, .ctx = u };
	int rc;

	st_hex(st_profile_rot_hash(job->prof, NULL), 32, u->rot_hex);
	if (!job->run->burn_fuses) {
		u->fuses = "not-armed";
		return step(u, "fuses", "skip",
			    "not armed (--burn-fuses not given): no fuse burned");
	}
	rc = st_fuse_run_plan(&run);
	u->fuses = run.summary;
	if (run.readback_hex[0])
		memcpy(u->readback_hex, run.readback_hex, sizeof(u->readback_hex));
	if (!rc)
		return step(u, "fuses", "ok", "fuse plan complete (%s)", run.summary);
	if (u->stop_slot)
		return rc; /* a record could not be written */
	fail(u, "fuses", rc, "%s", run.reason);
	if (run.quarantine)
		u->result = "QUARANTINE";
	u->interrupted = run.interrupted;
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
			    .ctx = u };
	int rc = st_fuse_check_plan(&run, job->run->burn_fuses);

	if (!rc)
		return step(u, "fuse-check", "ok", "fuse plan checked against the "
			    "device before any key or certificate: nothing refuses "
			    "it%s", job->run->burn_fuses ? "" : " (not armed: nothing "
			    "will be burned)");
	u->fuses = run.summary;
	if (run.readback_hex[0])
		memcpy(u->readback_hex, run.readback_hex, sizeof(u->readback_hex));
	fail(u, "fuse-check", rc, "%s; no key or certificate issued", run.reason);
	if (run.quarantine)
		u->result = "QUARANTINE";
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
			return fail(u, "revoke", ST_E_DB, "cannot revoke the certificate "
				    "(serial %s) of unit record %lld: %s",
				    h->abandoned[i].serial, (long long)h->abandoned[i].unit,
				    err);
		}
		if (step(u, "revoke", "ok", "certificate serial %s of unit record %lld "
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
	if (step(u, "resume", "skip", "the certificate of unit record %lld (serial "
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
static int resume_identity(struct unit *u, X509 **out)
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
		return fail(u, "certificate", ST_E_STATE, "the unit was locked by an "
			    "interrupted run: resuming it verifies its fuse plan, which "
			    "needs --burn-fuses");
	rc = drv_read_cert(u->dev, der, sizeof(der), &len);
	if (!rc)
		rc = drv_get_pubkey(u->dev, pub);
	if (rc && (st_err_is_link(rc) || locked))
		return fail(u, "certificate", rc, "resuming unit record %lld: reading "
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
		rc = locked ? fail(u, "certificate", ST_E_VERIFY, "resuming a locked "
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
	rc = step(u, "certificate", "ok", "resumed: the certificate on the %sdevice "
		  "(serial %s sha256 %s) is the one unit record %lld issued; it "
		  "verifies against the CA and certifies the device's key",
		  locked ? "locked " : "", u->serial, u->fp, (long long)h->cert_unit);
	if (!rc)
		rc = step(u, "resume", "ok", "finishes unit record %lld (%s): same "
			  "certificate, serial %s; no second identity", (long long)
			  (h->last_unit ? h->last_unit : h->cert_unit),
			  !strcmp(h->last_state, "RUNNING") ? "interrupted" : h->last_state,
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

/* A device ID of all zero or all FF bits is what a programmer reads from
 * a missing or badly seated chip, not an identity. */
static bool uid_unreadable(const drv_info *info)
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
	EVP_PKEY *key;
	int rc;

	rc = st_profile_key_inject(u->w->job->prof) ? do_inject(u, pub) :
	     do_keygen(u, pub);
	if (rc)
		return rc;
	key = st_p256_pubkey(pub);
	if (!key)
		return fail(u, "possession", ST_E_VERIFY, "the device returned an "
			    "invalid P-256 public key; no certificate issued");
	rc = do_pop(u, key, "the public key the device returned");
	EVP_PKEY_free(key);
	return rc;
}

/* Run every step for the identified unit; sets u->result. */
static void run_unit(struct unit *u)
{
	uint8_t pub[DRV_P256_POINT_LEN];
	X509 *cert = NULL;
	int resumed;

	if (uid_unreadable(&u->info)) {
		fail(u, "identify", ST_E_DEVICE, "the device ID could not be read (it "
		     "reads %s): the programmer or the chip did not answer with an "
		     "identity; check the contact (seat the unit again) and run it "
		     "again; no key or certificate was issued", u->info.uid_hex);
		return;
	}
	if (u->dup_slot) {
		fail(u, "identify", ST_E_EXISTS, "slot %d is provisioning a unit with "
		     "the same device ID right now: cloned or counterfeit ID; set both "
		     "units aside for a supervisor", u->dup_slot);
		return;
	}
	if (u->info.lifecycle == DRV_LC_LOCKED &&
	    (!u->hist.cert_unit || u->hist.cert_revoked || !u->hist.lock_intended)) {
		fail(u, "identify", ST_E_LOCKED, "the device is already locked and has "
		     "no PASS record here: set it aside for a supervisor");
		return;
	}
	if (step(u, "identify", "ok", "model %s, programmer fw %s, lifecycle %u",
		 u->info.model, u->info.fw_version, u->info.lifecycle))
		return;
	/* A unit resumed with the identity its history expects is issued
	 * nothing: its fuse run checks every field before it burns.  A unit
	 * that is not resumed is checked whole before a key or certificate
	 * (do_precheck).  The certificate's key is the key the device proved
	 * it holds (the same bytes), and the certificate is read back byte
	 * for byte: a second proof after the write would prove nothing more. */
	resumed = resume_identity(u, &cert);
	if (resumed < 0)
		goto cleanup;
	if (resumed) {
		if (do_pop(u, X509_get0_pubkey(cert), "its certificate's key") ||
		    do_fuses(u))
			goto cleanup;
	} else if (do_precheck(u) || new_key(u, pub) ||
		   do_certificate(u, pub, &cert) ||
		   do_write_cert(u, cert) || do_fuses(u)) {
		goto cleanup;
	}
	if (keep_cert(u, cert)) {
		fail(u, "certificate", ST_E_IO, "cannot keep a copy of the certificate "
		     "in %s", u->w->job->cfg->cert_dir ? u->w->job->cfg->cert_dir : "memory");
		goto cleanup;
	}
	/* Unarmed: the identity is issued and proven, the fuses and the
	 * lifecycle are untouched: not a locked PASS but UNFUSED, which a
	 * later armed run finishes (docs/fuses.md).  Every target, a TPM's
	 * write-once NV fields included, takes the same plan. */
	u->result = u->w->job->run->burn_fuses ? "PASS" : "UNFUSED";
cleanup:
	X509_free(cert);
}

static void slot_error(struct worker *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A unit that does not end PASS keeps no valid identity: the certificate
 * issued for it (or, resumed, the one on the device) is revoked before its
 * record closes, so a crash in between leaves it revoked.  Returns non-zero
 * (after a slot error) when that cannot be recorded. */
static int revoke_unit_cert(struct unit *u, const char *result)
{
	struct worker *w = u->w;
	char why[768], by[160], serial[80] = "", err[512] = "";
	int rc;

	/* PASS and UNFUSED keep their identity; an interrupted end is
	 * decided at the unit's next presentation (revoke_abandoned) */
	if (!u->serial[0] || !strcmp(result, "PASS") || !strcmp(result, "UNFUSED") ||
	    u->interrupted)
		return 0;
	snprintf(why, sizeof(why), "the unit ended %s: %.600s", result, u->reason);
	snprintf(by, sizeof(by), "station %s", w->job->cfg->station_id ?
		 w->job->cfg->station_id : "?");
	rc = st_unit_revoke(w->job->rec, u->id, u->issued ? NULL : u->serial,
			    REC_CRL_CESSATION, why, by, serial, sizeof(serial),
			    err, sizeof(err));
	if (rc == ST_OK) {
		step(u, "revoke", "ok", "certificate %s revoked (%s): the unit did "
		     "not pass", serial, st_crl_reason_name(REC_CRL_CESSATION));
		return 0;
	}
	if (rc == ST_E_EXISTS || rc == ST_E_NOTFOUND || rc == ST_E_STATE)
		return 0;
	slot_error(w, rc, "slot %d: unit %s: the unit is NOT passed and its "
		   "certificate %s could not be revoked (%s); the slot stops: fix "
		   "the records store, then run 'station records "
		   "close-interrupted'", w->slot, u->info.uid_hex, u->serial, err);
	record_failed(w, rc);
	u->stop_slot = true;
	u->stop_said = true;
	return rc;
}

/* Close the unit's record, then announce the verdict (never before). */
static void finish_unit(struct unit *u)
{
	struct worker *w = u->w;
	/* An interrupted end (an intent left open) holds no certificate: the
	 * next presentation resumes it (the certificate then sits on that
	 * record) or revokes it (revoke_abandoned); it is not revoked here. */
	bool cert = !u->interrupted;
	bool good = u->result && (!strcmp(u->result, "PASS") ||
				  !strcmp(u->result, "UNFUSED"));
	rec_unit_result e = {
		.result = u->result ? u->result : "FAIL",
		.reason = good ? NULL : u->reason,
		.cert_serial = cert && u->serial[0] ? u->serial : NULL,
		.cert_sha256 = cert && u->fp[0] ? u->fp : NULL,
		.cert_pem = cert ? u->cert_pem : NULL,
		.pubkey_hex = cert && u->pub_hex[0] ? u->pub_hex : NULL,
		.rot_hash = u->rot_hex[0] ? u->rot_hex : NULL,
		.fuse_readback = u->readback_hex[0] ? u->readback_hex : NULL,
	};
	st_event ev = { .kind = ST_EV_UNIT_DONE, .uid = u->info.uid_hex,
			.result = e.result, .detail = e.reason, .err = u->err,
			.fuses = u->fuses };
	const st_run *run = w->job->run;
	int64_t t = unit_us();
	int rc;

	if (revoke_unit_cert(u, e.result))
		return;         /* left RUNNING, as after a crash */
	rc = rec_unit_end(w->job->rec, u->id, &e);

	u->us_rec += unit_us() - t;
	if (!rc && run->quota && run->work_order)
		run->quota->finish(run->quota->ctx, run->work_order,
				   u->info.uid_hex, e.result);
	if (rc) {
		st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
				.err = rc };
		char msg[768];

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
		if (!strcmp(e.result, "PASS"))
			w->sum.pass++;
		else
			w->sum.unfused++;
		ev.cert_serial = u->serial;
		ev.cert_sha256 = u->fp;
	} else if (!strcmp(e.result, "QUARANTINE")) {
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

/* Report that the slot stopped, with the cause. */
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

/* Note (id != 0) or clear (0) the unit record this slot has open. */
static void set_live(struct worker *w, int64_t id)
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
static void unclaim_uid(struct worker *w)
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

/* The field a fuse step names ("field NAME ..." or "lifecycle step NAME
 * ..."), into out; false when it names none. */
static bool step_field(const char *detail, char out[32])
{
	const char *p = !strncmp(detail, "field ", 6) ? detail + 6 :
			!strncmp(detail, "lifecycle step ", 15) ? detail + 15 : NULL;
	size_t n;

	if (!p)
		return false;
	n = strcspn(p, " ");
	if (!n || n >= 32)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

static void hist_resolve(struct history *h, const char *field)
{
	for (int i = 0; i < h->nintents; i++) {
		if (strcmp(h->intent[i].field, field))
			continue;
		h->intent[i] = h->intent[--h->nintents];
		i--;
	}
}

/* rec_unit_steps callback: one step of the history, oldest first. */
static int hist_step(void *ctx, const char *name, const char *outcome,
		     const char *detail)
{
	struct hist_read *hr = ctx;
	struct history *h = hr->h;
	char field[32];

	if (!strcmp(name, "certificate") && !strcmp(outcome, "ok") &&
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
		h->lock_intended = false;
	} else if ((!strcmp(name, "fuse-intent") || !strcmp(name, "lifecycle-intent")) &&
		   step_field(detail, field)) {
		hist_resolve(h, field);
		if (h->nintents < HIST_INTENTS) {
			snprintf(h->intent[h->nintents].field, sizeof(field), "%s", field);
			snprintf(h->intent[h->nintents++].detail,
				 sizeof(h->intent[0].detail), "%s", detail);
		}
		if (!strcmp(name, "lifecycle-intent"))
			h->lock_intended = true;
	} else if ((!strcmp(name, "fuse") || !strcmp(name, "fuse-resume")) &&
		   step_field(detail, field)) {
		hist_resolve(h, field);
	} else if (!strcmp(name, "lifecycle") && strcmp(outcome, "fail")) {
		/* its detail names no field: it resolves the lifecycle intent */
		for (int i = 0; i < h->nintents; i++)
			if (strstr(h->intent[i].detail, " lifecycle ")) {
				snprintf(field, sizeof(field), "%s", h->intent[i].field);
				hist_resolve(h, field);
				i = -1;
			}
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
	size_t len = 0;

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
		if (!strcmp(hr->rec[i].state, "PASS"))
			h->nintents = 0;   /* a PASS resolved every intent */
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
		for (int i = 0; i < h->nintents && len + 3 < sizeof(h->pending); i++)
			len += (size_t)snprintf(h->pending + len, sizeof(h->pending) - len,
						"%s%s", i ? "; " : "", h->intent[i].detail);
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
			.step = "history", .outcome = "ok", .detail = u->reprovision };
	int rc;

	/* A locked device takes no new key or certificate: revoking its
	 * identity first would leave it with none. */
	if (u->info.lifecycle == DRV_LC_LOCKED) {
		ev.outcome = "skip";
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

/* Identify the next unit and decide whether to provision it.  Returns 1 to
 * provision, 2 when another slot holds the same device ID right now, 0 to
 * skip it (already done), negative to end the slot.  A unit left RUNNING by
 * an interrupted earlier run is closed as FAIL first, so its record says
 * what happened (no other slot can hold it: the ID was claimed, and a clone
 * in another slot keeps its live row: clone_in_work).  The unit's whole
 * history goes to u->hist (read_history): the identity that should be on
 * it, burn intents no record resolved.  A unit last QUARANTINED is not
 * touched again; one last UNFUSED is skipped by an unarmed run. */
static int next_unit(struct worker *w, struct unit *u)
{
	rec_unit_result interrupted = { .result = "FAIL",
		.reason = "interrupted: the station stopped during this unit; "
			  "it was presented again" };
	char last[32], why[1200];
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
		return 1;       /* no identity to look up: run_unit refuses it */
	u->dup_slot = claim_uid(w, u->info.uid_hex);
	if (u->dup_slot)
		return 2;
	rc = rec_find_pass(w->job->rec, u->info.uid_hex, &id);
	if (rc == ST_OK && may_reprovision(w->job->run, u->info.uid_hex))
		rc = reprovision(w, u, id);
	if (rc == ST_OK) {
		st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
				.step = "history", .outcome = "skip",
				.detail = "already provisioned (PASS on record): not given a "
					  "second identity; remove the unit" };
		w->sum.skipped++;
		emit(w, &ev);
		return 0;
	}
	pthread_mutex_lock(&((struct job *)w->job)->rec_order);
	if (rc == ST_E_NOTFOUND)
		rc = rec_last_unit(w->job->rec, u->info.uid_hex, &id, last, sizeof(last));
	if (rc == ST_OK && strcmp(last, "QUARANTINE"))
		rc = read_history(w, u);
	if (rc == ST_OK && !strcmp(last, "UNFUSED") && !w->job->run->burn_fuses) {
		st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
				.step = "history", .outcome = "skip", .detail = why };

		snprintf(why, sizeof(why), "already provisioned, not locked (UNFUSED on "
			 "record, unit record %lld): it keeps its identity; run with "
			 "--burn-fuses to burn its fuses and lock it", (long long)id);
		pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
		w->sum.skipped++;
		emit(w, &ev);
		return 0;
	}
	if (rc == ST_OK && !strcmp(last, "QUARANTINE")) {
		st_event ev = { .kind = ST_EV_STEP, .uid = u->info.uid_hex,
				.step = "history", .outcome = "skip", .detail = why };

		snprintf(why, sizeof(why), "QUARANTINED on record (unit record %lld): "
			 "not touched again without a supervisor's recorded decision; "
			 "set the unit aside", (long long)id);
		pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
		w->sum.quarantine++;
		emit(w, &ev);
		return 0;
	}
	if (rc == ST_OK && !strcmp(last, "RUNNING") && !is_live(w, id)) {
		if (u->hist.pending[0]) {
			snprintf(why, sizeof(why), "interrupted during a burn: the station "
				 "stopped after the intent '%s' without its outcome; the "
				 "next run reads the device to resolve it", u->hist.pending);
			interrupted.reason = why;
		}
		rc = rec_unit_end(w->job->rec, id, &interrupted);
	}
	pthread_mutex_unlock(&((struct job *)w->job)->rec_order);
	if (rc != ST_OK && rc != ST_E_NOTFOUND) {
		slot_error(w, rc, "slot %d: records lookup failed: %s", w->slot,
			   rec_errmsg(w->job->rec));
		record_failed(w, rc);
		return rc;
	}
	return 1;
}

/* fuse-run callback for a dry run: one line per field, to the front end. */
static void plan_line(void *ctx, const char *line)
{
	struct unit *u = ctx;
	st_event ev = { .kind = ST_EV_FUSE_PLAN, .uid = u->info.uid_hex,
			.detail = line };

	emit(u->w, &ev);
}

/* Dry run of one slot: the unit in the programmer is identified and its
 * fuse plan printed (current, target, action per field).  Only reads: no
 * key, no certificate, no burn, no release, no record. */
static void dry_run_slot(struct worker *w, drv_dev *dev)
{
	struct unit u = { .w = w, .dev = dev };
	st_fuse_run run = { .dev = dev, .plan = st_profile_fuse_plan(w->job->prof),
			    .dry_run = true, .plan_line = plan_line, .ctx = &u };
	int rc = drv_identify(dev, &u.info);

	if (rc) {
		slot_error(w, rc, "slot %d (%s): identify failed: %s", w->slot, w->port,
			   drv_errmsg(dev));
		return;
	}
	run.lifecycle = u.info.lifecycle;
	run.banks = u.info.fuse_banks;
	rc = st_fuse_run_plan(&run);
	if (rc && st_err_is_link(rc))
		slot_error(w, rc, "slot %d (%s): %s", w->slot, w->port, run.reason);
	else if (rc)
		plan_line(&u, run.reason);
	w->sum.skipped++;
}

/* Hotplug: wait up to run->plug_wait_ms for this slot's programmer to be
 * plugged, then open it.  ST_OK with *dev open, or the last open error. */
static int wait_plug(struct worker *w, const drv_opts *opts, drv_dev **dev)
{
	int64_t deadline = st_now_ms() + w->job->run->plug_wait_ms;
	st_event ev = { .kind = ST_EV_STEP, .step = "plug", .outcome = "wait",
			.detail = "programmer absent: waiting for it to be plugged" };
	drv_monitor *m = NULL;
	char err[256];
	int rc = ST_E_NOTFOUND;

	emit(w, &ev);
	drv_close(*dev);
	*dev = NULL;
	if (drv_monitor_open(&m, err, sizeof(err)) != ST_OK)
		return rc;
	/* Any arrival may be ours (attached ones arrive first): try to open.
	 * A device still settling may fail to open: keep waiting.  Once a
	 * second without events, try anyway, in case an event was missed. */
	while (st_now_ms() < deadline) {
		drv_hotplug hp;
		int64_t left = deadline - st_now_ms();
		int got = drv_monitor_wait(m, left > 1000 ? 1000 : (int)left, &hp);

		if (got < 0)
			break;
		if (got == 1 && hp.event != DRV_HOTPLUG_ARRIVED)
			continue;
		drv_close(*dev);
		*dev = NULL;
		rc = drv_open(w->port, opts, dev);
		if (rc == ST_OK)
			break;
	}
	drv_monitor_close(m);
	return rc;
}

/* What a unit's record starts with (every record of a unit in this run). */
static rec_unit_start unit_start_of(const struct worker *w, const struct unit *u)
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
static int begin_unit(struct worker *w, struct unit *u)
{
	const struct job *job = w->job;
	st_event ev = { .kind = ST_EV_UNIT_START, .uid = u->info.uid_hex };
	rec_unit_start start = unit_start_of(w, u);
	const st_quota_hook *q = job->run->work_order ? job->run->quota : NULL;
	st_quota_note qn = { .step = "" };
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
				  "FAIL");
		if (!rc && qn.step[0] && step(u, qn.step, "ok", "%s", qn.detail)) {
			/* left RUNNING, as after a crash */
			slot_error(w, ST_E_DB, "slot %d: %s", w->slot, u->reason);
			record_failed(w, ST_E_DB);
			set_live(w, 0);
			return ST_E_DB;
		}
		qn.detail[0] = '\0';
	}
	if (rc == ST_E_STATE && job->run->work_order) {
		/* the work order's quota is taken: a normal end */
		st_event qe = { .kind = ST_EV_SLOT_ERROR, .err = rc,
				.uid = u->info.uid_hex,
				.detail = qn.detail[0] ? qn.detail :
					  rec_errmsg(job->rec) };

		w->sum.quota_full++;
		emit(w, &qe);
		return 1;
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
	    rec_step_ex(job->rec, u->id, "reprovision", "ok", u->reprovision,
			REC_LAZY)) {
		slot_error(w, ST_E_DB, "slot %d: unit %s: cannot record the "
			   "re-provisioning (%s)", w->slot, u->info.uid_hex,
			   rec_errmsg(job->rec));
		record_failed(w, ST_E_DB);
		return ST_E_DB;
	}
	emit(w, &ev);
	return 0;
}

/* After a unit that lost the HSM session or token: re-open the session and
 * find the CA key again.  Non-zero (after a slot error) when that fails:
 * the slot stops rather than failing every following unit the same way. */
static int hsm_recover(struct worker *w, hsm_session *sess, hsm_obj *ca_priv)
{
	const struct job *job = w->job;

	if (!hsm_session_reopen(sess) && !hsm_find_privkey(sess, job->ca_label, ca_priv))
		return 0;
	slot_error(w, ST_E_HSM, "slot %d: the HSM session or token was lost "
		   "(%s) and could not be re-opened: the slot stops; put the "
		   "token back and restart the station", w->slot,
		   hsm_session_errmsg(sess));
	w->sum.hsm_errors++;
	return ST_E_HSM;
}

/* Has the run been stopped, or this slot? */
static bool halted(struct worker *w)
{
	struct job *job = (struct job *)w->job;
	bool h;

	pthread_mutex_lock(&job->lock);
	h = job->stopping || job->ctl[w->slot - 1].paused ||
	    (job->run->stop && atomic_load(job->run->stop));
	pthread_mutex_unlock(&job->lock);
	return h;
}

/* A slot worker's own HSM session and the run's CA key in it (ca is the
 * worker's copy of the CA certificate, NULL when it could not be made).
 * Non-zero after a slot error. */
static int slot_hsm_open(struct worker *w, X509 *ca, hsm_session **sess,
			 hsm_obj *ca_priv)
{
	const struct job *job = w->job;
	int rc;

	if (!ca) {
		slot_error(w, ST_E_NOMEM, "slot %d: out of memory", w->slot);
		return ST_E_NOMEM;
	}
	rc = hsm_session_open(job->h, sess);
	if (!rc)
		rc = hsm_find_privkey(*sess, job->ca_label, ca_priv);
	if (rc)
		slot_error(w, rc, "slot %d: HSM session failed: %s", w->slot,
			   *sess ? hsm_session_errmsg(*sess) : hsm_errmsg(job->h));
	return rc;
}

/* The slot worker: open programmer and HSM session, then unit after unit. */
/* The unit stopped its slot because a record could not be written
 * (anything but a lost link, which the loops report themselves): say so,
 * once, and count it as a records error.  The unit was not passed. */
static void records_stopped(struct worker *w, const struct unit *u)
{
	st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
			.err = u->err ? u->err : ST_E_DB };
	char msg[768];

	if (u->stop_said || (u->err && st_err_is_link(u->err)))
		return;
	snprintf(msg, sizeof(msg), "slot %d: unit %s: %s; the unit is NOT passed "
		 "and the slot stops: fix the records store and provision it "
		 "again", w->slot, u->info.uid_hex, u->reason);
	se.detail = msg;
	record_failed(w, se.err);
	emit(w, &se);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct job *job = w->job;
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms,
			  .retries = job->cfg->retries,
			  .target_opts = st_profile_target_opts(job->prof) };
	drv_dev *dev = NULL;
	hsm_session *sess = NULL;
	hsm_obj ca_priv;
	X509 *ca = X509_dup(job->ca);
	int rc, units = 0;

	if (slot_hsm_open(w, ca, &sess, &ca_priv))
		goto cleanup;
	rc = drv_open(w->port, &opts, &dev);
	if ((rc == ST_E_NOTFOUND || rc == ST_E_UNPLUGGED) && job->run->plug_wait_ms > 0)
		rc = wait_plug(w, &opts, &dev);
	if (rc) {
		slot_error(w, rc, "slot %d (%s): programmer not usable: %s", w->slot,
			   w->port, dev ? drv_errmsg(dev) : st_strerror(rc));
		goto cleanup;
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_READY, .detail = drv_driver_name(dev) };

		emit(w, &ev);
	}
	if (job->run->dry_run) {
		dry_run_slot(w, dev);
		goto done;
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
			rc = begin_unit(w, &u);
			if (rc) {
				unclaim_uid(w);
				break;
			}
			units++;
			run_unit(&u);
			finish_unit(&u);
			set_live(w, 0);
		}
		unclaim_uid(w);
		stop = u.stop_slot;
		free(u.cert_pem);
		/* A dead session or a pulled token: re-open and find the CA key
		 * again; if that fails the slot stops rather than failing every
		 * following unit the same way. */
		if (!stop && u.hsm_lost && hsm_recover(w, sess, &ca_priv))
			break;
		if (stop) {
			if (u.err && st_err_is_link(u.err))
				slot_error(w, u.err, "slot %d (%s): %s", w->slot, w->port,
					   u.reason);
			records_stopped(w, &u);
			/* Unplugged and hotplug on: the slot comes back with its
			 * programmer, and the interrupted unit is done again. */
			if (u.err == ST_E_UNPLUGGED && job->run->plug_wait_ms > 0 &&
			    wait_plug(w, &opts, &dev) == ST_OK)
				continue;
			break;
		}
		rc = drv_release(dev);
		if (rc) {
			slot_error(w, rc, "slot %d (%s): releasing the unit failed: %s",
				   w->slot, w->port, drv_errmsg(dev));
			break;
		}
	}
done:
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
			    HSM_M_AES_KEY_WRAP_PAD };
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
	OPENSSL_free(ca_subj);
	if (rc) {
		snprintf(err, errlen, "records: cannot record the station start, so "
			 "nothing is provisioned: %s", rec_errmsg(job->rec));
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
	int rc;

	snprintf(reason, sizeof(reason), "set aside by operator %s after FAIL: %s",
		 job->run->operator_name ? job->run->operator_name : "?", u->reason);
	rc = rec_unit_begin(job->rec, &start, &id);
	if (rc == ST_E_STATE && start.work_order) {
		/* A QUARANTINE record holds no quota, but its RUNNING row would
		 * need a free one for a moment: with the work order full, it is
		 * recorded without the work order rather than not at all. */
		start.work_order = NULL;
		rc = rec_unit_begin(job->rec, &start, &id);
	}
	if (!rc)
		rc = rec_step(job->rec, id, "quarantine", "ok", reason);
	if (!rc)
		rc = rec_unit_end(job->rec, id, &e);
	if (rc) {
		slot_error(w, hsm_gone(rc) ? rc : ST_E_DB, "slot %d: unit %s: the "
			   "quarantine could not be recorded (%s); keep the unit aside "
			   "and fix the records store", w->slot, u->info.uid_hex,
			   rec_errmsg(job->rec));
		record_failed(w, rc);
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
		       X509 *ca, hsm_obj *ca_priv)
{
	bool waiting = false;

	while (!halted(w)) {
		struct unit u = { .w = w, .dev = dev, .sess = sess, .ca = ca,
				  .ca_priv = *ca_priv, .t0 = st_now_ms() };
		int rc = next_unit(w, &u), cmd = ST_CMD_SKIP, b = 0;

		if (rc == ST_E_NO_TARGET) {
			unclaim_uid(w);
			if (!waiting)
				idle(w, "waiting for a unit");
			waiting = true;
			nap(w, POLL_MS);
			continue;
		}
		waiting = false;
		if (rc < 0 || (rc >= 1 && (b = begin_unit(w, &u)))) {
			/* b == 1: the work order's quota is taken (said): the
			 * slot stops until a new work order or a start */
			unclaim_uid(w);
			return gone(w, rc < 0 ? rc : b == 1 ? ST_E_STATE : ST_E_DB);
		}
		if (rc >= 1) {
			run_unit(&u);
			finish_unit(&u);
			set_live(w, 0);
		}
		/* A dead session or a pulled token: re-open it before the unit
		 * is held (a retry needs it); if that fails the slot stops. */
		if (!u.stop_slot && u.hsm_lost && hsm_recover(w, sess, ca_priv)) {
			unclaim_uid(w);
			free(u.cert_pem);
			pause_slot(w);
			return 0;
		}
		if (!u.stop_slot && rc >= 1 && strcmp(u.result ? u.result : "FAIL", "PASS") &&
		    strcmp(u.result ? u.result : "FAIL", "UNFUSED"))
			cmd = hold_unit(w, &u);
		if (cmd == ST_CMD_QUARANTINE && quarantine_held(w, &u))
			u.stop_slot = u.stop_said = true;
		unclaim_uid(w);
		free(u.cert_pem);
		if (u.stop_slot) {
			if (u.err && st_err_is_link(u.err))
				slot_error(w, u.err, "slot %d (%s): %s", w->slot, w->port,
					   u.reason);
			records_stopped(w, &u);
			return gone(w, u.err && st_err_is_link(u.err) ? u.err : ST_E_DB);
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
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms,
			  .retries = job->cfg->retries,
			  .target_opts = st_profile_target_opts(job->prof) };
	hsm_session *sess = NULL;
	hsm_obj ca_priv;
	X509 *ca = X509_dup(job->ca);
	bool absent = false;  /* "waiting for the programmer" was said */
	int rc;

	if (slot_hsm_open(w, ca, &sess, &ca_priv))
		goto cleanup;
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
		if (serve_units(w, dev, sess, ca, &ca_priv))
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

const char *const *st_steps(int *n)
{
	static const char *const steps[] = {
		"identify", "keygen", "possession", "certificate", "write-cert", "fuses",
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
