/* esp32c3_boot.c — what the simulated C3's ROM does when it boots from
 * flash with SECURE_BOOT_EN burned: find the bootloader image at 0x0, its
 * Secure Boot V2 signature sector at the next 4 KiB boundary, and accept
 * it only if a signature block's key digest is one burned with purpose
 * SECURE_BOOT_DIGEST0..2 (not revoked) and its RSA-PSS signature over the
 * image's SHA-256 verifies.  The format is espsecure's
 * (sign_secure_boot_v2, _digest_sbv2_public_key, validate_signature_block
 * in espsecure/__init__.py); docs/esp32.md says what the sim does then. */
#include "devsim/esp32c3.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define IMAGE_MAGIC 0xE9
#define IMAGE_HDR 24              /* common 8 + extended 16 (C3) */
#define SIG_BLOCK 1216
#define SIG_BLOCK_DATA 1196       /* covered by the CRC-32 */
#define SIG_BLOCKS 3
#define KEY_PART_OFF 36           /* n, e, R^-1, M': the digest input */
#define KEY_PART_LEN (384 + 4 + 384 + 4)

/* Length of the ESP image at off (header, segments, checksum, appended
 * SHA-256), or 0 when it is not one. */
uint32_t c3_image_length(const uint8_t *f, uint32_t off)
{
	uint32_t p = off + IMAGE_HDR;
	unsigned nseg;

	if (f[off] != IMAGE_MAGIC)
		return 0;
	nseg = f[off + 1];
	if (nseg == 0 || nseg > 16)
		return 0;
	for (unsigned i = 0; i < nseg; i++) {
		uint32_t len;

		if (p + 8 > C3_FLASH_SIZE)
			return 0;
		len = esp_le32(f + p + 4);
		if (len > C3_FLASH_SIZE - p - 8)
			return 0;
		p += 8 + len;
	}
	p = (p + 16) & ~15u;              /* padding, then the checksum byte */
	if (f[off + 23])                  /* hash_appended */
		p += 32;
	return p <= C3_FLASH_SIZE ? p - off : 0;
}

/* Verify one RSA-3072 signature block over digest.  1 good, 0 not. */
static int rsa_block_ok(const uint8_t *blk, const uint8_t digest[32])
{
	uint8_t n_be[384], sig_be[384];
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL, *vctx = NULL;
	EVP_PKEY *key = NULL;
	BIGNUM *n = NULL, *e = NULL;
	int ok = 0;

	for (unsigned i = 0; i < 384; i++) {
		n_be[i] = blk[KEY_PART_OFF + 383 - i];
		sig_be[i] = blk[KEY_PART_OFF + KEY_PART_LEN + 383 - i];
	}
	n = BN_bin2bn(n_be, sizeof(n_be), NULL);
	e = BN_new();
	bld = OSSL_PARAM_BLD_new();
	if (!n || !e || !bld || !BN_set_word(e, esp_le32(blk + KEY_PART_OFF + 384)) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)))
		goto out;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	vctx = EVP_PKEY_CTX_new(key, NULL);
	if (!vctx || EVP_PKEY_verify_init(vctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(vctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(vctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(vctx, 32) <= 0)
		goto out;
	ok = EVP_PKEY_verify(vctx, sig_be, sizeof(sig_be), digest, 32) == 1;
out:
	EVP_PKEY_CTX_free(vctx);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(key);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return ok;
}

int c3_boot_check(struct c3 *c, char *why, size_t cap)
{
	static const char *const kp[6] = {
		"KEY_PURPOSE_0", "KEY_PURPOSE_1", "KEY_PURPOSE_2",
		"KEY_PURPOSE_3", "KEY_PURPOSE_4", "KEY_PURPOSE_5",
	};
	static const char *const revoke[3] = {
		"SECURE_BOOT_KEY_REVOKE0", "SECURE_BOOT_KEY_REVOKE1",
		"SECURE_BOOT_KEY_REVOKE2",
	};
	uint8_t digests[6][32], image_digest[32];
	unsigned ndig = 0;
	uint32_t len, sector;

	why[0] = '\0';
	/* The digests the ROM trusts: key blocks with a SECURE_BOOT_DIGESTi
	 * purpose whose slot i is not revoked (the hardware reads the array,
	 * read protection or not). */
	for (unsigned k = 0; k < 6; k++) {
		uint32_t p = c3_efuse_field(c, kp[k]);

		if (p < ESP_C3_KP_SECURE_BOOT_DIGEST0 || p > ESP_C3_KP_SECURE_BOOT_DIGEST2 ||
		    c3_efuse_field(c, revoke[p - ESP_C3_KP_SECURE_BOOT_DIGEST0]))
			continue;
		for (unsigned w = 0; w < 8; w++)
			esp_put_le32(digests[ndig] + 4 * w, c->raw[4 + k][w]);
		ndig++;
	}
	if (!ndig) {
		snprintf(why, cap, "no SECURE_BOOT_DIGEST key block burned");
		return 0;
	}
	len = c3_image_length(c->flash, 0);
	if (!len) {
		snprintf(why, cap, "no valid image header at 0x0");
		return 0;
	}
	sector = (len + C3_SECTOR - 1) & ~(C3_SECTOR - 1);
	if (sector > C3_FLASH_SIZE - C3_SECTOR) {
		snprintf(why, cap, "no room for a signature sector");
		return 0;
	}
	SHA256(c->flash, sector, image_digest);
	for (unsigned b = 0; b < SIG_BLOCKS; b++) {
		const uint8_t *blk = c->flash + sector + b * SIG_BLOCK;
		uint8_t keyd[32];

		if (blk[0] != 0xE7 || blk[1] != 0x02 ||
		    (uint32_t)crc32(0, blk, SIG_BLOCK_DATA) != esp_le32(blk + SIG_BLOCK_DATA))
			continue;                /* not an RSA signature block */
		if (memcmp(blk + 4, image_digest, 32)) {
			snprintf(why, cap, "signature block %u: image digest mismatch", b);
			continue;
		}
		SHA256(blk + KEY_PART_OFF, KEY_PART_LEN, keyd);
		for (unsigned d = 0; d < ndig; d++)
			if (!memcmp(keyd, digests[d], 32)) {
				if (rsa_block_ok(blk, image_digest)) {
					snprintf(why, cap, "signature block %u verified", b);
					return 1;
				}
				snprintf(why, cap, "signature block %u: bad signature", b);
			}
		if (!why[0])
			snprintf(why, cap, "signature block %u: key not in eFuse", b);
	}
	if (!why[0])
		snprintf(why, cap, "no valid signature block after the image");
	return 0;
}
