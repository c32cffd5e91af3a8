/* esp32_unit.c — a unit's identity when the profile says key_mode =
 * "esp_secure_cert" (an ESP32-C3 through its ROM loader; docs/esp32.md,
 * "Identity").  Instead of a key made on the device: the station draws the
 * eFuse HMAC key K and a salt from the HSM, derives the P-256 public key
 * the chip will derive, records what it is about to do (durably, without
 * K), has the driver burn K read-protected and wipes it; after the
 * certificate, it writes the partition table and the esp_secure_cert
 * partition through the driver and lets the chip's own MD5 confirm them.
 * With ROM commands only nothing on the chip can sign: the possession
 * step says so and is skipped, never faked. */
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device-drivers/proto/esp_rom.h"
#include "engine_int.h"
#include "station/esp32.h"
#include "station/firmware.h"

#define HMAC_KEY_BLOCK 1        /* BLOCK_KEY1: the plan's digest is in KEY0 */
#define FLASH_SIZE 0x400000u    /* a 4 MB part, as the driver assumes */

static int hsm_rand(void *ctx, uint8_t *buf, size_t n)
{
	return hsm_random(ctx, buf, n);
}

#define INTENT "identity {"

void esp_identity_hist(struct history *h, int64_t unit, const char *name,
		       const char *outcome, const char *detail)
{
	json_t *j;
	const char *pub, *salt;

	if (strcmp(name, st_step_name(ST_STEP_KEYGEN)) || strcmp(outcome, "ok") ||
	    strncmp(detail, INTENT, strlen(INTENT)))
		return;
	j = json_loadb(detail + strlen(INTENT) - 1, strlen(detail) - strlen(INTENT) + 1,
		       JSON_DISABLE_EOF_CHECK, NULL);
	pub = json_string_value(json_object_get(j, "public_key"));
	salt = json_string_value(json_object_get(j, "salt"));
	if (pub && salt && !st_unhex(pub, h->esp_pub, sizeof(h->esp_pub)) &&
	    !st_unhex(salt, h->esp_salt, sizeof(h->esp_salt)))
		h->esp_unit = unit;
	json_decref(j);
}

/* What BLOCK_KEY1 holds: 1 the key with HMAC_UP, read- and write-protected;
 * 2 a readable key (into k), purpose USER; 0 blank; ST_* on a read error;
 * -100 anything else. */
static int key_block_state(struct unit *u, uint8_t k[DRV_EFUSE_KEY_LEN])
{
	const esp_c3_field *kp = esp_c3_field_find("KEY_PURPOSE_1");
	const esp_c3_field *rd = esp_c3_field_find("RD_DIS");
	const esp_c3_block *b = esp_c3_block_get(4 + HMAC_KEY_BLOCK);
	uint8_t b0[DRV_FUSE_BANK_LEN], blk[DRV_FUSE_BANK_LEN], zero[DRV_FUSE_BANK_LEN] = { 0 };
	uint8_t f0 = 0, f1 = 0;
	uint32_t purpose, rdis;
	int rc;

	if (!kp || !rd || !b)
		return -100;
	if ((rc = drv_fuse_read_status(u->dev, 0, b0, &f0)) ||
	    (rc = drv_fuse_read_status(u->dev, 4 + HMAC_KEY_BLOCK, blk, &f1)))
		goto out;
	purpose = (esp_le32(b0 + 4 * kp->word) >> kp->pos) & 0xF;
	rdis = (esp_le32(b0 + 4 * rd->word) >> (rd->pos + (unsigned)b->rd_dis_bit)) & 1;
	if (f0 || f1)
		rc = -100;
	else if (purpose == ESP_KEY_PURPOSE_HMAC_UP && rdis)
		rc = 1;
	else if (purpose == 0 && !rdis && memcmp(blk, zero, sizeof(zero))) {
		memcpy(k, blk, DRV_EFUSE_KEY_LEN);
		rc = 2;
	} else
		rc = purpose == 0 && !rdis ? 0 : -100;
out:
	st_wipe(blk, sizeof(blk));
	return rc;
}

/* A run after one that recorded an identity and then stopped: the chip
 * holds that key (burned, or stored and not yet protected), so the
 * recorded public key and salt are the unit's; 0 when the chip holds
 * nothing (draw anew), 1 when resumed, else the failure returned. */
static int resume_key(struct unit *u, st_esp_secret *k, uint8_t pub[DRV_P256_POINT_LEN],
		      uint8_t salt[ESP_KDF_SALT_LEN])
{
	struct history *h = &u->hist;
	uint8_t derived[DRV_P256_POINT_LEN];
	char err[256] = "";
	int st, rc;

	if (!h->esp_unit)
		return 0;
	st = key_block_state(u, (uint8_t *)st_esp_secret_key(k));
	if (st == 0)
		return 0;
	if (st == 2) {
		/* stored, not yet hidden: the recorded key only if it derives
		 * the recorded public key, then protected */
		if (st_esp_hmac_ecdsa_pub(k, h->esp_salt, sizeof(h->esp_salt), derived,
					  err, sizeof(err)) ||
		    memcmp(derived, h->esp_pub, sizeof(derived))) {
			st_esp_secret_wipe(k);
			return fail(u, ST_STEP_KEYGEN, ST_E_FUSE_CONFLICT, "BLOCK_KEY%d holds "
				    "a key that is not the one unit record %lld recorded; "
				    "nothing burned, set the unit aside", HMAC_KEY_BLOCK,
				    (long long)h->esp_unit);
		}
		rc = drv_efuse_key_burn(u->dev, HMAC_KEY_BLOCK, ESP_KEY_PURPOSE_HMAC_UP,
					st_esp_secret_key(k));
		st_esp_secret_wipe(k);
		if (rc)
			return fail(u, ST_STEP_KEYGEN, rc, "protecting the HMAC key in "
				    "BLOCK_KEY%d failed: %s", HMAC_KEY_BLOCK,
				    drv_errmsg(u->dev));
	} else if (st != 1) {
		return st < 0 && st != -100 ? fail(u, ST_STEP_KEYGEN, st, "reading "
						   "BLOCK_KEY%d failed: %s",
						   HMAC_KEY_BLOCK, drv_errmsg(u->dev)) :
		       fail(u, ST_STEP_KEYGEN, ST_E_FUSE_CONFLICT, "BLOCK_KEY%d is "
			    "neither blank nor the HMAC key unit record %lld "
			    "recorded; nothing burned, set the unit aside",
			    HMAC_KEY_BLOCK, (long long)h->esp_unit);
	}
	memcpy(pub, h->esp_pub, DRV_P256_POINT_LEN);
	memcpy(salt, h->esp_salt, ESP_KDF_SALT_LEN);
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	if ((rc = step(u, ST_STEP_KEYGEN, ST_OUTCOME_OK, "BLOCK_KEY%d holds the HMAC key "
		       "unit record %lld recorded (%s): its public key %s and salt are "
		       "the unit's", HMAC_KEY_BLOCK, (long long)h->esp_unit,
		       st == 2 ? "stored by an interrupted run, now protected" :
		       "burned and protected", u->pub_hex)))
		return rc;
	if (!esp_factory_app(u) &&
	    (rc = step(u, ST_STEP_POSSESSION, ST_OUTCOME_SKIP, "not provable with the ROM "
		       "loader (docs/esp32.md, Identity)")))
		return rc;
	return 1;
}

bool esp_factory_app(const struct unit *u)
{
	const st_firmware *fw = st_profile_firmware(u->w->job->prof);

	return fw && fw->n > 0;
}

int esp_identity_key(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN],
		     uint8_t salt[ESP_KDF_SALT_LEN])
{
	st_esp_secret *k = NULL;
	char err[512] = "", *rec = NULL;
	int rc;

	if ((rc = st_esp_secret_new(&k, err, sizeof(err))))
		return fail(u, ST_STEP_KEYGEN, rc, "%s; no key burned", err);
	if ((rc = resume_key(u, k, pub, salt))) {
		rc = rc == 1 ? 0 : rc;
		goto out;
	}
	if ((rc = st_esp_hmac_identity_draw(hsm_rand, u->sess, k, salt, pub, err,
					    sizeof(err)))) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "%s: %s; no key burned", err,
			  hsm_session_errmsg(u->sess));
		goto out;
	}
	if (!(rec = st_esp_identity_record(HMAC_KEY_BLOCK, salt, ESP_KDF_SALT_LEN, pub))) {
		rc = fail(u, ST_STEP_KEYGEN, ST_E_NOMEM, "out of memory");
		goto out;
	}
	st_hex(pub, DRV_P256_POINT_LEN, u->pub_hex);
	/* What is about to be burned, before it is: durable, never K. */
	if ((rc = step_as(u, ST_STEP_KEYGEN, REC_DURABLE, ST_OUTCOME_OK,
			  "identity %s: HMAC key drawn from the HSM, burning it into "
			  "BLOCK_KEY%d", rec, HMAC_KEY_BLOCK)))
		goto out;
	rc = drv_efuse_key_burn(u->dev, HMAC_KEY_BLOCK, ESP_KEY_PURPOSE_HMAC_UP,
				st_esp_secret_key(k));
	st_esp_secret_wipe(k);
	if (rc) {
		rc = fail(u, ST_STEP_KEYGEN, rc, "burning the HMAC key into BLOCK_KEY%d "
			  "failed: %s; no certificate issued", HMAC_KEY_BLOCK,
			  drv_errmsg(u->dev));
		goto out;
	}
	if ((rc = step(u, ST_STEP_KEYGEN, ST_OUTCOME_OK, "HMAC key burned into "
		       "BLOCK_KEY%d (HMAC_UP, read- and write-protected) and wiped on "
		       "the host; the chip derives the P-256 key %s from it and the "
		       "salt", HMAC_KEY_BLOCK, u->pub_hex)))
		goto out;
	/* With firmware, the factory app proves possession once it is in
	 * flash (run_unit, after fw_write); without, nothing on the chip can. */
	if (!esp_factory_app(u))
		rc = step(u, ST_STEP_POSSESSION, ST_OUTCOME_SKIP, "not provable with "
			  "the ROM loader and no factory app in the profile: no code "
			  "runs on the chip that could sign with the derived key; the "
			  "certified key is the one the chip derives from the burned "
			  "HMAC key and the salt (docs/esp32.md, Identity)");
out:
	free(rec);
	st_esp_secret_free(k);
	return rc;
}

/* The app's flash address: the profile's first image placed past the
 * esp_secure_cert partition, else 0x10000. */
static uint32_t app_offset(const struct unit *u)
{
	const st_firmware *fw = st_profile_firmware(u->w->job->prof);

	for (int i = 0; fw && i < fw->n; i++)
		if (fw->img[i].address >= 0x10000)
			return fw->img[i].address;
	return 0x10000;
}

int esp_identity_write(struct unit *u, X509 *cert, const uint8_t salt[ESP_KDF_SALT_LEN])
{
	static const char *what[2] = { "partition table", "esp_secure_cert partition" };
	uint8_t table[ESP_PART_TABLE_LEN], part[ESP_SECURE_CERT_LEN];
	st_esp_part parts[3];
	st_esp_cert_tlvs c = { .salt = salt, .salt_len = ESP_KDF_SALT_LEN };
	char err[512] = "", *dev = pem_of(cert), *ca = pem_of(u->ca);
	size_t used = 0;
	int rc;

	c.dev_cert_pem = dev;
	c.ca_chain_pem = ca;
	if (!dev || !ca) {
		rc = fail(u, ST_STEP_WRITE_CERT, ST_E_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = st_esp_default_layout(app_offset(u), FLASH_SIZE, parts, err, sizeof(err))) ||
	    (rc = st_esp_part_table(parts, 3, table, err, sizeof(err))) ||
	    (rc = st_esp_secure_cert(&c, part, &used, err, sizeof(err)))) {
		rc = fail(u, ST_STEP_WRITE_CERT, rc, "the unit's flash layout: %s; "
			  "check the profile's app address", err);
		goto out;
	}
	for (int i = 0; i < 2; i++) {
		drv_image im = { .slot = (unsigned)i,
				 .address = i ? ESP_SECURE_CERT_ADDR : ESP_PART_TABLE_ADDR,
				 .data = i ? part : table,
				 .len = i ? ESP_SECURE_CERT_LEN : ESP_PART_TABLE_LEN };
		drv_slot_info in;

		EVP_Digest(im.data, im.len, im.sha256, NULL, EVP_sha256(), NULL);
		if ((rc = drv_image_write(u->dev, &im, NULL)) ||
		    (rc = drv_image_info(u->dev, &im, &in))) {
			rc = fail(u, ST_STEP_WRITE_CERT, rc, "writing the %s at 0x%x "
				  "failed: %s", what[i], (unsigned)im.address,
				  drv_errmsg(u->dev));
			goto out;
		}
		if (in.stored != im.len || memcmp(in.digest, im.sha256, 32)) {
			rc = fail(u, ST_STEP_WRITE_CERT, ST_E_VERIFY, "the %s at 0x%x "
				  "reads back %u of %zu bytes: the flash does not hold "
				  "what was written; no fuse burned, set the unit aside",
				  what[i], (unsigned)im.address, (unsigned)in.stored,
				  im.len);
			goto out;
		}
	}
	rc = step(u, ST_STEP_WRITE_CERT, ST_OUTCOME_OK, "partition table at 0x%x and "
		  "esp_secure_cert at 0x%x (certificate, CA, salt, derivation flag: "
		  "%zu bytes) written; the chip's MD5 confirms both",
		  (unsigned)ESP_PART_TABLE_ADDR, (unsigned)ESP_SECURE_CERT_ADDR, used);
out:
	free(dev);
	free(ca);
	return rc;
}
