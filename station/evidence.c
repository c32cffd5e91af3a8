/* evidence.c — `records export --evidence DIR`: the bundle an auditor
 * checks without trusting the station (docs/evidence.md): units, events,
 * certificates and the CRL, firmware digests, SBOMs and attestations, and
 * a manifest signed with the audit key. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "station/checkpoint.h"
#include "station/firmware.h"
#include "station/roles.h"
#include "station/st_int.h"

/* ---- records export --evidence: the bundle ---- */

struct bundle {
	const char *dir;
	FILE *units, *events, *manifest_list;
	char err[4608];
	int certs, issued, revoked_pems;
	char audit_pem[8192];
	long long last_seq;             /* the last event in events.jsonl */
	char last_hash[65];
	json_t *cert_lines;    /* certs.jsonl, one object per issued certificate */
	json_t *idents;        /* uid -> PEM of its newest PASS or UNFUSED unit */
	/* docs/firmware.md: firmware.jsonl (one line per unit and image,
	 * made at the first unit with images) and the SBOMs of the signed
	 * `firmware` events, sbom_sha256 -> text (sboms/<sha256>.cdx.json) */
	FILE *fw;
	json_t *sboms;
	json_t *attest;        /* uid -> attestation of its newest PASS or
				* UNFUSED unit (attestations/<uid>.*) */
};

/* Write text to dir/name (fsynced). */
static int put_file(struct bundle *b, const char *name, const char *text,
		    size_t len)
{
	char path[4096];
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", b->dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
	if (fd < 0) {
		snprintf(b->err, sizeof(b->err), "cannot create %s: %s", path,
			 strerror(errno));
		return -1;
	}
	ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok)
		snprintf(b->err, sizeof(b->err), "cannot write %s", path);
	return ok ? 0 : -1;
}

/* firmware.jsonl: what each unit's images are, as the device measured
 * them after writing, and whether its attestation is on record. */
static int bundle_firmware(struct bundle *b, const rec_unit_row *u)
{
	json_t *imgs = json_loads(u->firmware, 0, NULL), *im;
	size_t i;

	if (!b->fw) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/firmware.jsonl", b->dir);
		if (!(b->fw = fopen(path, "wx"))) {
			snprintf(b->err, sizeof(b->err), "cannot create %s", path);
			json_decref(imgs);
			return -1;
		}
	}
	json_array_foreach(imgs, i, im) {
		json_t *o = json_deep_copy(im);

		json_object_set_new(o, "uid", json_string(u->uid));
		json_object_set_new(o, "unit", json_integer(u->id));
		json_object_set_new(o, "result", json_string(u->state));
		json_object_set_new(o, "attested", json_boolean(u->attestation != NULL));
		json_dumpf(o, b->fw, JSON_COMPACT | JSON_SORT_KEYS);
		fputc('\n', b->fw);
		json_decref(o);
	}
	json_decref(imgs);
	return 0;
}

static int bundle_unit(void *ctx, const rec_unit_row *u)
{
	struct bundle *b = ctx;
	st_unit_row row = st_unit_row_of(u);
	json_t *o = st_unit_json(&row, false);
	st_verdict v;

	if (!o)
		return ST_E_NOMEM;
	json_dumpf(o, b->units, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', b->units);
	json_decref(o);
	if (u->firmware && bundle_firmware(b, u))
		return ST_E_IO;
	if (u->attestation && (!strcmp(u->state, "PASS") || !strcmp(u->state, "UNFUSED")) &&
	    json_object_set_new(b->attest, u->uid, json_loads(u->attestation, 0, NULL)))
		return ST_E_NOMEM;
	/* A device's identity is its newest PASS or UNFUSED unit's (units
	 * come oldest first): an UNFUSED unit finished by an armed run is two
	 * records with one certificate; a re-provisioned one supersedes the
	 * old.  Written once, after the walk (bundle_idents). */
	if (u->cert_pem && st_verdict_parse(u->state, &v) && st_verdict_good(v) &&
	    json_object_set_new(b->idents, u->uid, json_string(u->cert_pem)))
		return ST_E_NOMEM;
	return 0;
}

/* certs/<device-id>.pem: one per device with a PASS or UNFUSED unit. */
static int bundle_idents(struct bundle *b)
{
	const char *uid;
	json_t *pem;
	char name[300];

	json_object_foreach(b->idents, uid, pem) {
		snprintf(name, sizeof(name), "certs/%s.pem", uid);
		if (put_file(b, name, json_string_value(pem),
			     strlen(json_string_value(pem))))
			return ST_E_IO;
		b->certs++;
	}
	return 0;
}

static int bundle_event(void *ctx, const rec_event_row *e)
{
	struct bundle *b = ctx;

	/* "sig" empty: covered by the signature of a later event of its
	 * batch (docs/evidence.md, step 4) */
	fprintf(b->events, "{\"seq\":%lld,\"hash\":\"%s\",\"sig\":\"%s\",\"body\":%s}\n",
		(long long)e->seq, e->hash, e->sig ? e->sig : "", e->body);
	b->last_seq = e->seq;
	snprintf(b->last_hash, sizeof(b->last_hash), "%s", e->hash);
	if (!strcmp(e->kind, "firmware")) {
		json_t *body = json_loads(e->body, 0, NULL);
		json_t *data = json_object_get(body, "data");
		const char *d = json_string_value(json_object_get(data, "sbom_sha256"));
		json_t *text = json_object_get(data, "sbom");

		if (d && json_is_string(text))
			json_object_set(b->sboms, d, text);
		json_decref(body);
	}
	return 0;
}

/* sha256sum's format: hex, two spaces, name. */
static int hash_line(struct bundle *b, const char *name, FILE *m)
{
	char path[4096], hex[65];
	unsigned char buf[65536], dig[SHA256_DIGEST_LENGTH];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	size_t n;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", b->dir, name);
	f = fopen(path, "rb");
	ok = f && h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1;
	while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
		ok = EVP_DigestUpdate(h, buf, n) == 1;
	ok = ok && !ferror(f) && EVP_DigestFinal_ex(h, dig, NULL) == 1;
	if (f)
		fclose(f);
	EVP_MD_CTX_free(h);
	if (!ok) {
		snprintf(b->err, sizeof(b->err), "cannot read %s back", path);
		return -1;
	}
	st_hex(dig, sizeof(dig), hex);
	fprintf(m, "%s  %s\n", hex, name);
	return 0;
}

/* sboms/<sha256>.cdx.json: every SBOM the chain recorded (the file's own
 * bytes: `sha256sum` gives its name); attestations/<uid>.statement.json
 * and .sig: the statement's exact bytes and the DER signature of each
 * device's identity unit, for `openssl dgst -verify`; firmware.jsonl; all
 * into the manifest (docs/evidence.md). */
static int bundle_sboms(struct bundle *b, FILE *m)
{
	const char *d;
	json_t *text;
	char name[300];

	if (b->fw && (fflush(b->fw) || fsync(fileno(b->fw)) ||
		      hash_line(b, "firmware.jsonl", m)))
		return ST_E_IO;
	if (json_object_size(b->attest)) {
		const char *uid;
		json_t *a;

		snprintf(name, sizeof(name), "%s/attestations", b->dir);
		if (mkdir(name, 0755) != 0) {
			snprintf(b->err, sizeof(b->err), "cannot create %s", name);
			return ST_E_IO;
		}
		json_object_foreach(b->attest, uid, a) {
			const char *st = json_string_value(json_object_get(a, "statement"));
			const char *hex = json_string_value(json_object_get(a, "signature"));
			uint8_t sig[128];
			size_t n = hex ? strlen(hex) / 2 : 0;

			if (!st || !hex || n > sizeof(sig) || st_unhex(hex, sig, n)) {
				snprintf(b->err, sizeof(b->err), "the attestation of %s "
					 "on record is malformed", uid);
				return ST_E_IO;
			}
			snprintf(name, sizeof(name), "attestations/%s.statement.json", uid);
			if (put_file(b, name, st, strlen(st)) || hash_line(b, name, m))
				return ST_E_IO;
			snprintf(name, sizeof(name), "attestations/%s.sig", uid);
			if (put_file(b, name, (const char *)sig, n) || hash_line(b, name, m))
				return ST_E_IO;
		}
	}
	if (!json_object_size(b->sboms))
		return 0;
	snprintf(name, sizeof(name), "%s/sboms", b->dir);
	if (mkdir(name, 0755) != 0) {
		snprintf(b->err, sizeof(b->err), "cannot create %s", name);
		return ST_E_IO;
	}
	json_object_foreach(b->sboms, d, text) {
		snprintf(name, sizeof(name), "sboms/%s.cdx.json", d);
		if (put_file(b, name, json_string_value(text),
			     json_string_length(text)) || hash_line(b, name, m))
			return ST_E_IO;
	}
	return 0;
}

static int manifest_idents(struct bundle *b)
{
	const char *uid;
	json_t *pem;
	char name[300];

	json_object_foreach(b->idents, uid, pem) {
		snprintf(name, sizeof(name), "certs/%s.pem", uid);
		if (hash_line(b, name, b->manifest_list))
			return ST_E_IO;
	}
	return 0;
}

/* PEM text of a DER certificate into buf. */
static int der_to_pem(const uint8_t *der, size_t len, char *buf, size_t cap)
{
	X509 *x = d2i_X509(NULL, &der, (long)len);
	BIO *bio = BIO_new(BIO_s_mem());
	char *p;
	long n = 0;

	if (x && bio && PEM_write_bio_X509(bio, x))
		n = BIO_get_mem_data(bio, &p);
	if (n > 0 && (size_t)n < cap)
		snprintf(buf, cap, "%.*s", (int)n, p);
	X509_free(x);
	BIO_free(bio);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* The manifest's signature: the audit key signs SHA-256 of the manifest;
 * stored as DER, the form `openssl dgst -verify -signature` reads. */
static int sign_manifest(struct bundle *b, st_audit *a, const char *text,
			 size_t len)
{
	uint8_t dig[SHA256_DIGEST_LENGTH], sig[REC_SIG_MAX];
	size_t siglen = 0;

	SHA256((const unsigned char *)text, len, dig);
	if (st_audit_sign(a, dig, sig, sizeof(sig), &siglen)) {
		snprintf(b->err, sizeof(b->err), "the audit key could not sign "
			 "the manifest");
		return -1;
	}
	return put_file(b, "manifest.sig", (const char *)sig, siglen);
}

/* The CA certificate, from the token, into the bundle. */
static int ca_pem(const st_config *cfg, struct bundle *b, hsm *h)
{
	hsm_session *s = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	char pem[8192];
	int rc = -1;

	if (hsm_session_open(h, &s) || hsm_cert_load(s, cfg->ca_label, &der, &len)) {
		snprintf(b->err, sizeof(b->err), "no CA certificate '%s' in the token",
			 cfg->ca_label);
		goto cleanup;
	}
	if (der_to_pem(der, len, pem, sizeof(pem)) == 0)
		rc = put_file(b, "ca.pem", pem, strlen(pem));
cleanup:
	free(der);
	hsm_session_close(s);
	return rc;
}

/* Fate of one issued certificate (certs.jsonl): the identity of a PASS
 * unit ("valid"), "revoked" (with the reason), or neither — its unit is
 * still "open" (RUNNING) or ended without a revocation ("not-revoked").
 * The PEM of every certificate that is not a PASS identity goes to
 * certs/revoked/<serial>.pem when the records hold it. */
static int bundle_issued(void *ctx, const st_issued *c)
{
	struct bundle *b = ctx;
	const char *fate = c->revoked ? "revoked" : c->live ? "valid" :
			   !st_verdict_parse(c->state, &(st_verdict){ 0 }) ? "open" :
			   "not-revoked";
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "serial", c->serial,
			      "sha256", c->sha256, "uid", c->uid, "unit",
			      (json_int_t)c->unit_id, "unit_result", c->state,
			      "fate", fate);
	char name[300];

	if (!o)
		return ST_E_NOMEM;
	if (c->revoked)
		json_object_set_new(o, "revoked", json_pack("{s:i, s:s, s:s?, s:s?, s:s?}",
			"crl_reason", c->crl_reason, "crl_reason_name",
			st_crl_reason_name(c->crl_reason), "reason", c->revoke_reason,
			"by", c->revoked_by, "at", c->revoked_at));
	if (!c->live && c->pem) {
		snprintf(name, sizeof(name), "certs/revoked/%s.pem", c->serial);
		if (put_file(b, name, c->pem, strlen(c->pem))) {
			json_decref(o);
			return ST_E_IO;
		}
		json_object_set_new(o, "pem", json_string(name));
		b->revoked_pems++;
	}
	b->issued++;
	return json_array_append_new(b->cert_lines, o) ? ST_E_NOMEM : 0;
}

/* certs.jsonl, the CRL (signed by the CA in the HSM) and their manifest
 * lines, plus the certs/revoked/ files. */
static int bundle_certs(const st_config *cfg, struct bundle *b, rec_store *r, hsm *h,
			const rec_filter *f, FILE *m)
{
	hsm_session *s = NULL;
	char path[4096], err[1024] = "", *text = NULL;
	size_t len = 0;
	long count = 0;
	FILE *t;
	int rc = -1;

	b->cert_lines = json_array();
	if (!b->cert_lines || st_issued_list(r, f, bundle_issued, b, err, sizeof(err))) {
		if (!b->err[0])
			snprintf(b->err, sizeof(b->err), "the issued certificates: %s",
				 err[0] ? err : "out of memory");
		goto cleanup;
	}
	t = open_memstream(&text, &len);
	if (!t)
		goto cleanup;
	for (size_t i = 0; i < json_array_size(b->cert_lines); i++) {
		json_dumpf(json_array_get(b->cert_lines, i), t,
			   JSON_COMPACT | JSON_SORT_KEYS);
		fputc('\n', t);
	}
	fclose(t);
	if (put_file(b, "certs.jsonl", text, len))
		goto cleanup;
	snprintf(path, sizeof(path), "%s/crl.pem", b->dir);
	if (hsm_session_open(h, &s) ||
	    st_crl_export(s, r, cfg->ca_label, 7, path, &count, err, sizeof(err))) {
		snprintf(b->err, sizeof(b->err), "the CRL: %s", err[0] ? err :
			 hsm_errmsg(h));
		goto cleanup;
	}
	if (hash_line(b, "certs.jsonl", m) || hash_line(b, "crl.pem", m))
		goto cleanup;
	for (size_t i = 0; i < json_array_size(b->cert_lines); i++) {
		const char *pem = json_string_value(json_object_get(
					json_array_get(b->cert_lines, i), "pem"));

		if (pem && hash_line(b, pem, m))
			goto cleanup;
	}
	rc = 0;
cleanup:
	free(text);
	hsm_session_close(s);
	return rc;
}

/* records export --evidence DIR: only from a store that verifies; every
 * file listed in manifest.sha256, which the audit key signs. */
int st_records_evidence(st_records *rs, st_station *st, const st_config *cfg,
			st_trust *t, const st_unit_filter *uf, const char *dir,
			st_evidence_result *out, st_rec_step *step, char *err,
			size_t errlen)
{
	struct bundle b = { .dir = dir, .idents = json_object(), .sboms = json_object(),
			    .attest = json_object() };
	st_checkpoint cp = { .body = NULL };
	char path[4096], *mtext = NULL;
	const uint8_t *der;
	size_t mlen = 0, dlen;
	rec_verify_result v;
	rec_store *r = rs->r;
	st_audit *a = NULL;
	hsm *h = st_station_hsm(st);
	rec_filter f = st_rec_filter_of(uf);
	FILE *m = NULL;
	int rc = ST_E_IO;

	memset(b.last_hash, '0', 64);   /* an empty chain's head */
	*step = ST_REC_STEP_OP;
	err[0] = '\0';
	if (rec_verify(r, st_trust_check_audit, t, &v)) {
		*step = ST_REC_STEP_VERIFY;
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	/* the key that signs the manifest is checked (and repaired, on
	 * record) as at any start */
	if (st_audit_attach(h, r, cfg, &a, b.err, sizeof(b.err))) {
		snprintf(err, errlen, "%s", b.err);
		*step = ST_REC_STEP_AUDIT;
		rc = ST_E_HSM;
		goto cleanup;
	}
	if (mkdir(b.dir, 0755) != 0) {
		snprintf(err, errlen, "cannot create %s (%s): give a new "
			 "directory", b.dir, strerror(errno));
		*step = ST_REC_STEP_DIR;
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/certs", b.dir);
	if (mkdir(path, 0755) == 0)
		snprintf(path, sizeof(path), "%s/certs/revoked", b.dir);
	if (mkdir(path, 0755) != 0) {
		snprintf(err, errlen, "cannot create %s", path);
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/units.jsonl", b.dir);
	b.units = fopen(path, "wx");
	snprintf(path, sizeof(path), "%s/events.jsonl", b.dir);
	b.events = fopen(path, "wx");
	m = open_memstream(&mtext, &mlen);
	b.manifest_list = m;
	der = st_audit_cert(a, &dlen);
	if (!b.units || !b.events || !m || !b.idents || !b.sboms || !b.attest) {
		snprintf(err, errlen, "cannot write in %s", b.dir);
		goto cleanup;
	}
	if (rec_list_units(r, &f, bundle_unit, &b) || bundle_idents(&b) ||
	    rec_list_events(r, 0, bundle_event, &b)) {
		snprintf(err, errlen, "%s", b.err[0] ? b.err : rec_errmsg(r));
		goto cleanup;
	}
	if (fflush(b.units) || fsync(fileno(b.units)) || fflush(b.events) ||
	    fsync(fileno(b.events)) || ca_pem(cfg, &b, h) ||
	    der_to_pem(der, dlen, b.audit_pem, sizeof(b.audit_pem)) ||
	    put_file(&b, "audit.pem", b.audit_pem, strlen(b.audit_pem)) ||
	    st_checkpoint_make(r, a, cfg->station_id, b.last_seq, b.last_hash,
			       &cp, b.err, sizeof(b.err)) ||
	    put_file(&b, "checkpoint.json", cp.body, strlen(cp.body)) ||
	    put_file(&b, "checkpoint.sig", (const char *)cp.sig, cp.siglen) ||
	    hash_line(&b, "units.jsonl", m) || hash_line(&b, "events.jsonl", m) ||
	    hash_line(&b, "ca.pem", m) || hash_line(&b, "audit.pem", m) ||
	    hash_line(&b, "checkpoint.json", m) || hash_line(&b, "checkpoint.sig", m) ||
	    manifest_idents(&b) || bundle_sboms(&b, m) ||
	    bundle_certs(cfg, &b, r, h, &f, m)) {
		snprintf(err, errlen, "%s", b.err[0] ? b.err : "cannot write the bundle");
		goto cleanup;
	}
	fclose(m);
	m = NULL;
	if (put_file(&b, "manifest.sha256", mtext, mlen) ||
	    sign_manifest(&b, a, mtext, mlen)) {
		snprintf(err, errlen, "%s", b.err);
		goto cleanup;
	}
	rc = ST_OK;
	*out = (st_evidence_result){ .last_seq = b.last_seq, .certs = b.certs,
		.issued = b.issued, .revoked_pems = b.revoked_pems,
		.cp_seq = cp.cp.seq };
	snprintf(out->cp_head_hash, sizeof(out->cp_head_hash), "%s",
		 cp.cp.head_hash);
cleanup:
	st_checkpoint_free(&cp);
	if (m)
		fclose(m);
	free(mtext);
	if (b.units)
		fclose(b.units);
	if (b.events)
		fclose(b.events);
	json_decref(b.cert_lines);
	json_decref(b.idents);
	json_decref(b.sboms);
	json_decref(b.attest);
	if (b.fw)
		fclose(b.fw);
	st_audit_detach(r, a);
	return rc;
}

