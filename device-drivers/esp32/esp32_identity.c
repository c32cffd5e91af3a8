/* esp32_identity.c — an eFuse key the ESP32-C3's peripherals use unseen
 * (the HMAC key of the esp_secure_cert identity, docs/esp32.md
 * "Identity"): burned through the driver's own eFuse read and burn (the
 * ops table of esp32.c, which keep espefuse's sequence and checks), then
 * read- and write-protected in one BLOCK0 program, as espefuse burn_key
 * leaves a key with a purpose that needs read protection. */
#include "device-drivers/esp32/esp32.h"

#include <stdio.h>
#include <string.h>

#include "base.h"
#include "device-drivers/proto/esp_rom.h"

#define KEY_BLOCKS 6
#define FIRST_KEY_BANK 4       /* BLOCK_KEY0 is eFuse block 4 */

/* Set the len-bit field at (word, pos) of a BLOCK0 image to v. */
static void put_field(uint8_t b0[DRV_FUSE_BANK_LEN], const esp_c3_field *f, uint32_t v)
{
	uint32_t w = esp_le32(b0 + 4 * f->word);
	uint32_t m = (uint32_t)(((1ull << f->len) - 1) << f->pos);

	esp_put_le32(b0 + 4 * f->word, (w & ~m) | ((v << f->pos) & m));
}

static uint32_t get_field(const uint8_t b0[DRV_FUSE_BANK_LEN], const esp_c3_field *f)
{
	return (esp_le32(b0 + 4 * f->word) >> f->pos) & (uint32_t)((1ull << f->len) - 1);
}

static int bit(const uint8_t b0[DRV_FUSE_BANK_LEN], unsigned word, int n)
{
	return n >= 0 && (esp_le32(b0 + 4 * word) >> n) & 1;
}

static void set_bit(uint8_t b0[DRV_FUSE_BANK_LEN], unsigned word, int n)
{
	esp_put_le32(b0 + 4 * word, esp_le32(b0 + 4 * word) | 1u << n);
}

int esp32_efuse_key_burn(drv_dev *d, unsigned key_block, uint8_t purpose,
			 const uint8_t key[DRV_EFUSE_KEY_LEN])
{
	const struct drv_ops *ops = &esp32_ops;
	const esp_c3_block *b;
	const esp_c3_field *kp, *rd;
	uint8_t b0[DRV_FUSE_BANK_LEN], want[DRV_FUSE_BANK_LEN], blk[DRV_FUSE_BANK_LEN];
	uint8_t zero[DRV_FUSE_BANK_LEN] = { 0 }, faulty = 0;
	unsigned bank = FIRST_KEY_BANK + key_block;
	char name[16];
	bool holds_key;
	int rc;

	snprintf(name, sizeof(name), "KEY_PURPOSE_%u", key_block);
	if (key_block >= KEY_BLOCKS || !(b = esp_c3_block_get(bank)) ||
	    !(kp = esp_c3_field_find(name)) || !(rd = esp_c3_field_find("RD_DIS")) ||
	    purpose > 15 || purpose == ESP_C3_KP_USER) {
		drv_set_error(d, "ESP32-C3 on %s: key block %u with purpose %u: the "
			      "chip has BLOCK_KEY0..5 and purposes 1..15", drv_port(d),
			      key_block, purpose);
		return ST_E_INVAL;
	}
	if (!memcmp(key, zero, DRV_EFUSE_KEY_LEN)) {
		drv_set_error(d, "ESP32-C3 on %s: an all-zero key is a blank block, "
			      "not a key: nothing burned", drv_port(d));
		return ST_E_INVAL;
	}
	if ((rc = ops->fuse_read_status(d, 0, b0, &faulty)))
		return rc;
	if (faulty) {
		drv_set_error(d, "ESP32-C3 on %s: BLOCK0 reads with repeat errors "
			      "(words %02x): no key burned; set the unit aside",
			      drv_port(d), faulty);
		return ST_E_FUSE_CONFLICT;
	}
	/* Done before: read-protected, this purpose, both write-protections. */
	if (bit(b0, 1, rd->pos + b->rd_dis_bit) && get_field(b0, kp) == purpose &&
	    bit(b0, 0, b->wr_dis_bit) && bit(b0, 0, kp->wr_dis_bit)) {
		drv_set_error(d, "ESP32-C3 on %s: %s already holds a read-protected key "
			      "with purpose %u: nothing burned", drv_port(d), b->name,
			      purpose);
		return ST_E_EXISTS;
	}
	if (get_field(b0, kp) != ESP_C3_KP_USER || bit(b0, 1, rd->pos + b->rd_dis_bit) ||
	    bit(b0, 0, b->wr_dis_bit) || bit(b0, 0, kp->wr_dis_bit)) {
		drv_set_error(d, "ESP32-C3 on %s: %s is not free (purpose %u, %sread-"
			      "protected, %swrite-protected): no key burned; set the "
			      "unit aside", drv_port(d), b->name, get_field(b0, kp),
			      bit(b0, 1, rd->pos + b->rd_dis_bit) ? "" : "not ",
			      bit(b0, 0, b->wr_dis_bit) ? "" : "not ");
		return ST_E_FUSE_CONFLICT;
	}
	if ((rc = ops->fuse_read_status(d, bank, blk, &faulty)))
		goto out;
	holds_key = !faulty && !memcmp(blk, key, DRV_EFUSE_KEY_LEN);
	if (!holds_key && (faulty || memcmp(blk, zero, sizeof(zero)))) {
		drv_set_error(d, "ESP32-C3 on %s: %s is not blank%s: no key burned; "
			      "set the unit aside", drv_port(d), b->name,
			      faulty ? " (RS errors)" : "");
		rc = ST_E_FUSE_CONFLICT;
		goto out;
	}
	/* The key block, whole (RS-coded), read back before it is hidden. */
	if (!holds_key) {
		memcpy(want, key, DRV_EFUSE_KEY_LEN);
		rc = ops->fuse_burn(d, bank, want, 0, blk);
		st_wipe(want, sizeof(want));
		if (rc)
			goto out;
		if ((rc = ops->fuse_read_status(d, bank, blk, &faulty)))
			goto out;
		if (faulty || memcmp(blk, key, DRV_EFUSE_KEY_LEN)) {
			drv_set_error(d, "ESP32-C3 on %s: %s does not read back the key "
				      "just burned%s: set the unit aside", drv_port(d),
				      b->name, faulty ? " (RS errors)" : "");
			rc = ST_E_VERIFY;
			goto out;
		}
	}
	/* Purpose, read protection, write protection of block and purpose:
	 * one BLOCK0 program, as espefuse burns them together. */
	memcpy(want, b0, sizeof(want));
	put_field(want, kp, purpose);
	set_bit(want, 1, rd->pos + b->rd_dis_bit);
	set_bit(want, 0, b->wr_dis_bit);
	set_bit(want, 0, kp->wr_dis_bit);
	if ((rc = ops->fuse_burn(d, 0, want, 0, b0)))
		goto out;
	if ((rc = ops->fuse_read_status(d, 0, b0, &faulty)) ||
	    (rc = ops->fuse_read_status(d, bank, blk, &faulty)))
		goto out;
	if (get_field(b0, kp) != purpose || !bit(b0, 1, rd->pos + b->rd_dis_bit) ||
	    !bit(b0, 0, b->wr_dis_bit) || !bit(b0, 0, kp->wr_dis_bit) ||
	    memcmp(blk, zero, sizeof(zero))) {
		drv_set_error(d, "ESP32-C3 on %s: after the burn %s is %s, purpose %u: "
			      "the protection did not take; set the unit aside",
			      drv_port(d), b->name, memcmp(blk, zero, sizeof(zero)) ?
			      "still readable" : "hidden", get_field(b0, kp));
		rc = ST_E_VERIFY;
	}
out:
	st_wipe(blk, sizeof(blk));
	st_wipe(want, sizeof(want));
	esp32_forget(d);
	return rc;
}
