/* unit_fw.c — a unit's firmware steps (docs/firmware.md).
 *
 * Before any key or certificate, each image of the profile must fit its
 * slot on this target (firmware-check, read only).  After the certificate
 * is on the device and before any fuse, each image is written through the
 * driver (resumed when the target holds a prefix of it whose digest the
 * target itself reports right), then the target's own SHA-256 of the slot
 * must be the image's (firmware).  After the fuses and the lock, the
 * target signs a statement over a fresh nonce, its uid, what it measures
 * of its images and its lifecycle with the identity key just certified;
 * the station checks the signature under the certificate and every field
 * against the profile (attest).  A profile without a firmware group skips
 * all three. */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "station/firmware.h"

static const st_firmware *fw_of(const struct unit *u)
{
	return st_profile_firmware(u->w->job->prof);
}

static drv_image image_of(const st_fw_image *im)
{
	drv_image d = { .slot = im->slot, .address = im->address,
			.data = im->data, .len = im->len };

	memcpy(d.sha256, im->sha256, sizeof(d.sha256));
	return d;
}

int fw_precheck(struct unit *u)
{
	const st_firmware *fw = fw_of(u);
	char detail[512] = "";
	size_t used = 0;

	if (!fw)
		return 0;
	for (int i = 0; i < fw->n; i++) {
		const st_fw_image *im = &fw->img[i];
		drv_image d = image_of(im);
		drv_slot_info in;
		int rc = drv_image_info(u->dev, &d, &in);

		if (rc)
			return fail(u, ST_STEP_FW_CHECK, rc, "image '%s' %s: the target's "
				    "slot %u cannot be read: %s; no key or certificate "
				    "issued", im->name, im->version, im->slot,
				    drv_errmsg(u->dev));
		if (im->len > in.capacity)
			return fail(u, ST_STEP_FW_CHECK, ST_E_INVAL, "image '%s' %s is %zu "
				    "bytes, but slot %u of this target (model %s) holds "
				    "%u: the image does not fit; no key or certificate "
				    "issued — check that the profile is the one for this "
				    "product", im->name, im->version, im->len, im->slot,
				    u->info.model, (unsigned)in.capacity);
		used += (size_t)snprintf(detail + used, sizeof(detail) - used,
					 "%s'%s' %zu of %u bytes (slot %u)",
					 i ? ", " : "", im->name, im->len,
					 (unsigned)in.capacity, im->slot);
		if (used >= sizeof(detail))
			used = sizeof(detail) - 1;
	}
	return step(u, ST_STEP_FW_CHECK, ST_OUTCOME_OK, "every image fits its slot: %s", detail);
}

/* One image: skipped when the slot already holds it whole (a resumed
 * unit), else written (resumed from a verified prefix); then the target's
 * own digest decides.  Its record entry is appended to list. */
static int write_one(struct unit *u, const st_fw_image *im, json_t *list)
{
	drv_image d = image_of(im);
	drv_slot_info in;
	uint32_t from = 0;
	char got[65];
	bool held;
	int rc;

	if ((rc = drv_image_info(u->dev, &d, &in)))
		return fail(u, ST_STEP_FIRMWARE, rc, "image '%s' %s: reading slot %u "
			    "failed: %s", im->name, im->version, im->slot,
			    drv_errmsg(u->dev));
	held = in.total == im->len && in.stored == in.total &&
	       !memcmp(in.digest, im->sha256, 32);
	if (!held) {
		rc = drv_image_write(u->dev, &d, &from);
		if (rc)
			return fail(u, ST_STEP_FIRMWARE, rc, "image '%s' %s (%zu bytes, slot "
				    "%u) could not be written: %s; no fuse burned",
				    im->name, im->version, im->len, im->slot,
				    drv_errmsg(u->dev));
		if ((rc = drv_image_info(u->dev, &d, &in)))
			return fail(u, ST_STEP_FIRMWARE, rc, "image '%s' %s: reading slot %u "
				    "back failed: %s", im->name, im->version, im->slot,
				    drv_errmsg(u->dev));
	}
	st_hex(in.digest, 32, got);
	if (in.stored != im->len || in.total != im->len ||
	    memcmp(in.digest, im->sha256, 32))
		return fail(u, ST_STEP_FIRMWARE, ST_E_VERIFY, "image '%s' %s: the device "
			    "reports %u of %zu bytes in slot %u with SHA-256 %s, but the "
			    "image is %s: what the flash holds is not what was written "
			    "(a bad flash or programmer); no fuse burned, set the unit "
			    "aside", im->name, im->version, (unsigned)in.stored,
			    im->len, im->slot, got, im->sha256_hex);
	json_array_append_new(list, json_pack("{s:s,s:s,s:i,s:I,s:s,s:s}",
		"name", im->name, "version", im->version, "slot", (int)im->slot,
		"size", (json_int_t)im->len, "sha256", got,
		"sbom_sha256", im->sbom_sha256_hex));
	if (held)
		return step(u, ST_STEP_FIRMWARE, ST_OUTCOME_OK, "image '%s' %s, slot %u: already "
			    "held whole, nothing written; the device's own SHA-256 %s "
			    "is the image's", im->name, im->version, im->slot, got);
	if (from)
		return step(u, ST_STEP_FIRMWARE, ST_OUTCOME_OK, "image '%s' %s, slot %u: %zu bytes "
			    "written, resumed at byte %u (the device's digest of the "
			    "%u bytes it held was right); the device's own SHA-256 %s "
			    "is the image's", im->name, im->version, im->slot, im->len,
			    (unsigned)from, (unsigned)from, got);
	return step(u, ST_STEP_FIRMWARE, ST_OUTCOME_OK, "image '%s' %s, slot %u: %zu bytes "
		    "written; the device's own SHA-256 %s is the image's", im->name,
		    im->version, im->slot, im->len, got);
}

int fw_write(struct unit *u)
{
	const st_firmware *fw = fw_of(u);
	int64_t t0 = unit_us(), rec0 = u->us_rec;
	json_t *list;
	char *text = NULL;
	int rc = 0;

	if (!fw)
		return 0;
	if (!(list = json_array()))
		return fail(u, ST_STEP_FIRMWARE, ST_E_NOMEM, "out of memory");
	for (int i = 0; i < fw->n && !rc; i++)
		rc = write_one(u, &fw->img[i], list);
	if (!rc) {
		text = json_dumps(list, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
		if (!text || strlen(text) >= sizeof(u->firmware))
			rc = fail(u, ST_STEP_FIRMWARE, ST_E_NOMEM, "the firmware record does "
				  "not fit");
		else
			snprintf(u->firmware, sizeof(u->firmware), "%s", text);
	}
	if (!rc)
		rc = measure(u, ST_MEAS_IMAGE_WRITE_MS, ms_since(u, t0, rec0));
	free(text);
	json_decref(list);
	return rc;
}

/* The lifecycle the statement must report: the plan's lock when the run
 * is armed, else what the unit had. */
static int expected_lifecycle(const struct unit *u)
{
	const st_fuse_plan *plan = st_profile_fuse_plan(u->w->job->prof);
	int lc = u->info.lifecycle;

	if (!u->w->job->run->burn_fuses)
		return lc;
	for (int i = 0; i < plan->n; i++)
		if (plan->f[i].kind == ST_FUSE_LIFECYCLE)
			lc = plan->f[i].lifecycle;
	return lc;
}

/* Every field of the statement against what the station knows; why gets
 * the first that differs. */
static int check_statement(struct unit *u, const char *stmt, size_t len,
			   const char *nonce_hex, char *why, size_t wlen)
{
	const st_firmware *fw = fw_of(u);
	json_t *o = json_loadb(stmt, len, 0, NULL), *imgs;
	const char *t, *n, *uid;
	int rc = ST_E_VERIFY;

	if (!json_is_object(o)) {
		snprintf(why, wlen, "the statement is not JSON");
		goto out;
	}
	t = json_string_value(json_object_get(o, "type"));
	n = json_string_value(json_object_get(o, "nonce"));
	uid = json_string_value(json_object_get(o, "uid"));
	imgs = json_object_get(o, "images");
	if (!t || strcmp(t, "station-attestation/1")) {
		snprintf(why, wlen, "the statement's type is %s, not "
			 "station-attestation/1", t ? t : "missing");
		goto out;
	}
	if (!n || strcasecmp(n, nonce_hex)) {
		snprintf(why, wlen, "the statement answers nonce %s, not the fresh "
			 "nonce %s the station sent: a replayed or stale attestation",
			 n ? n : "(none)", nonce_hex);
		goto out;
	}
	if (!uid || strcasecmp(uid, u->info.uid_hex)) {
		snprintf(why, wlen, "the statement names device %s, not %s",
			 uid ? uid : "(none)", u->info.uid_hex);
		goto out;
	}
	if (!json_is_integer(json_object_get(o, "lifecycle")) ||
	    json_integer_value(json_object_get(o, "lifecycle")) != expected_lifecycle(u)) {
		snprintf(why, wlen, "the device reports lifecycle %lld, the run "
			 "left it at %d", (long long)json_integer_value(
			 json_object_get(o, "lifecycle")), expected_lifecycle(u));
		goto out;
	}
	if (!json_is_array(imgs) || json_array_size(imgs) != (size_t)fw->n) {
		snprintf(why, wlen, "the device reports %zu images, the profile has %d",
			 json_array_size(imgs), fw->n);
		goto out;
	}
	for (int i = 0; i < fw->n; i++) {
		const st_fw_image *im = &fw->img[i];
		json_t *e;
		size_t k;
		bool found = false;

		json_array_foreach(imgs, k, e) {
			const char *h = json_string_value(json_object_get(e, "sha256"));

			if (json_integer_value(json_object_get(e, "slot")) != im->slot)
				continue;
			found = h && !strcasecmp(h, im->sha256_hex) &&
				json_integer_value(json_object_get(e, "size")) ==
				(json_int_t)im->len;
			if (!found) {
				snprintf(why, wlen, "the device measures image '%s' (slot "
					 "%u) as SHA-256 %s, the profile's image is %s",
					 im->name, im->slot, h ? h : "(none)",
					 im->sha256_hex);
				goto out;
			}
		}
		if (!found) {
			snprintf(why, wlen, "the device reports no image in slot %u "
				 "('%s')", im->slot, im->name);
			goto out;
		}
	}
	rc = ST_OK;
out:
	json_decref(o);
	return rc;
}

int fw_attest(struct unit *u, X509 *cert)
{
	uint8_t nonce[32], stmt[DRV_MAX_STATEMENT], sig[DRV_MAX_SIG];
	size_t slen = 0, siglen = 0;
	char nonce_hex[65], sig_hex[2 * DRV_MAX_SIG + 1], why[512];
	EVP_MD_CTX *md = NULL;
	json_t *rec = NULL;
	char *text = NULL;
	int rc;

	int64_t t0 = unit_us(), rec0 = u->us_rec;

	if (!fw_of(u))
		return 0;
	if ((rc = hsm_random(u->sess, nonce, sizeof(nonce))))
		return fail(u, ST_STEP_ATTEST, rc, "HSM random failed: %s",
			    hsm_session_errmsg(u->sess));
	st_hex(nonce, sizeof(nonce), nonce_hex);
	rc = drv_attest(u->dev, nonce, sizeof(nonce), stmt, sizeof(stmt), &slen,
			sig, sizeof(sig), &siglen);
	if (rc) {
		rc = fail(u, ST_STEP_ATTEST, rc, "the device gave no attestation: %s; the "
			  "unit is not passed", drv_errmsg(u->dev));
		goto cleanup;
	}
	st_hex(sig, siglen, sig_hex);
	/* What it said goes on record whatever the verdict: a refused
	 * statement is evidence too. */
	rec = json_pack("{s:s,s:s%,s:s}", "nonce", nonce_hex, "statement",
			(const char *)stmt, slen, "signature", sig_hex);
	text = rec ? json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII) :
	       NULL;
	if (text && strlen(text) < sizeof(u->attestation))
		snprintf(u->attestation, sizeof(u->attestation), "%s", text);
	md = EVP_MD_CTX_new();
	if (!md || !cert ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, stmt, slen) != 1) {
		ERR_clear_error();
		rc = fail(u, ST_STEP_ATTEST, ST_E_VERIFY, "the attestation's signature does "
			  "not verify under the unit's certificate %s: the statement was "
			  "not signed by the identity key the station certified (another "
			  "chip or a programmer answering for it); the unit is not "
			  "passed, set it aside for a supervisor", u->serial);
		u->result = ST_VERDICT_QUARANTINE;
		goto cleanup;
	}
	if ((rc = check_statement(u, (const char *)stmt, slen, nonce_hex, why,
				  sizeof(why)))) {
		rc = fail(u, ST_STEP_ATTEST, rc, "the attestation does not match: %s; the "
			  "unit is not passed, set it aside for a supervisor", why);
		u->result = ST_VERDICT_QUARANTINE;
		goto cleanup;
	}
	rc = step(u, ST_STEP_ATTEST, ST_OUTCOME_OK, "nonce %.16s…: the device signed its uid, "
		  "lifecycle %d and the SHA-256 of each image with the certified "
		  "key; every measurement is the profile's", nonce_hex,
		  expected_lifecycle(u));
	if (!rc)
		rc = measure(u, ST_MEAS_ATTEST_MS, ms_since(u, t0, rec0));
cleanup:
	EVP_MD_CTX_free(md);
	json_decref(rec);
	free(text);
	return rc;
}
